//! [`Supervised`]: a handle that follows a child across its restarts.

use crate::remote::Remote;
use crate::{Error, Portal, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// Where a supervised child is, as its handle sees it.
#[derive(Clone, Debug)]
pub(crate) enum Slot {
    /// An instance is being started (first start or restart).
    Starting,
    /// This instance serves.
    Up(Portal),
    /// Its first start failed: not supervised.
    FailedStart(Error),
    /// It ended and is not restarted, or the supervisor ended: why.
    Gone(String),
}

/// A supervised child, by name: calls go to the instance running now.
///
/// A call in flight when its instance dies fails with that instance's
/// ending (never retried: the callee may have done part of the work); a
/// call made while the child is restarted (or after its instance's
/// channel closed, before the supervisor has replaced it) waits for the
/// new instance, at most
/// [`SupervisorOptions::restart_wait`](super::SupervisorOptions::restart_wait).
/// Clones share the child.
///
/// ```no_run
/// #[furrow::remote]
/// async fn ping() -> u32 { 1 }
///
/// # async fn demo(db: furrow::supervise::Supervised) -> furrow::Result<()> {
/// match db.run(ping, ()).await {
///     Ok(n) => println!("{n} from {}", db.name()),
///     // The instance died under the call: the next call reaches the new one.
///     Err(e) => eprintln!("{} failed ({e}); restarts so far: {}", db.name(), db.restarts()),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Supervised {
    pub(crate) name: String,
    pub(crate) slot: watch::Receiver<Slot>,
    pub(crate) restarts: Arc<AtomicU32>,
    pub(crate) wait: Duration,
}

impl Supervised {
    /// The child's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many times it was restarted: the instances of it started after
    /// the first, including those started again because a sibling ended
    /// (one-for-all, rest-for-one). The supervisor's intensity counts
    /// differently: one per ending that caused a restart.
    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// A portal to the instance serving now, waiting (bounded) for one
    /// being restarted.
    ///
    /// An instance whose channel is already closed (it died, and its
    /// supervisor has not yet replaced it) does not count as serving: this
    /// waits for what the supervisor does next (a new instance, or the
    /// child's end) instead of handing out a portal whose every call fails
    /// at once. That wait is also what lets a client that retries in a
    /// loop reach the new instance: the supervisor runs in the task of its
    /// body, and a body spinning on calls that fail without awaiting would
    /// starve it.
    ///
    /// Errors: [`Error::Timeout`] when no instance serves within the
    /// restart wait; [`Error::Closed`] once the child is not supervised
    /// any more (its policy let it end, or the supervisor ended).
    ///
    /// # Cancel safety
    /// Cancel safe: it only watches.
    pub async fn portal(&self) -> Result<Portal> {
        let mut rx = self.slot.clone();
        // The slot changes (to `Starting`, then `Up` with the new portal,
        // or `Gone`) once the supervisor has seen the ending, so a closed
        // portal in it is always followed by a change that wakes this.
        let settled = |s: &Slot| match s {
            Slot::Starting => false,
            Slot::Up(p) => !p.is_closed(),
            Slot::FailedStart(_) | Slot::Gone(_) => true,
        };
        let slot = match tokio::time::timeout(self.wait, rx.wait_for(settled)).await {
            Ok(Ok(s)) => s.clone(),
            Ok(Err(_)) => Slot::Gone("the supervisor ended".into()),
            Err(_) => {
                return Err(Error::Timeout {
                    what: format!("supervised actor `{}` to be restarted", self.name),
                    after: self.wait,
                });
            }
        };
        match slot {
            Slot::Up(p) => Ok(p),
            Slot::FailedStart(e) => Err(e),
            Slot::Gone(why) => Err(Error::Closed(format!("`{}` is not supervised any more: {why}", self.name))),
            Slot::Starting => Err(Error::Closed(format!("`{}`: no instance", self.name))),
        }
    }

    /// Call `f` in the instance serving now (see [`Portal::run`]).
    ///
    /// # Cancel safety
    /// As [`Portal::run`]: dropping the future cancels the remote call.
    pub async fn run<F, A, O>(&self, f: F, args: A) -> Result<O>
    where
        F: Remote<Args = A, Output = O>,
        A: crate::Args,
        O: serde::de::DeserializeOwned,
    {
        self.portal().await?.run(f, args).await
    }

    /// Wait for the first start's outcome, unbounded (the spawn has its
    /// own timeout).
    pub(crate) async fn first_start(&self) -> Result<()> {
        let mut rx = self.slot.clone();
        let s = rx.wait_for(|s| !matches!(s, Slot::Starting)).await.map(|s| s.clone());
        match s {
            Ok(Slot::Up(_)) => Ok(()),
            Ok(Slot::FailedStart(e)) => Err(e),
            Ok(Slot::Gone(why)) => Err(Error::Closed(format!("`{}` ended at once: {why}", self.name))),
            Ok(Slot::Starting) | Err(_) => Err(Error::Closed("the supervisor is ending".into())),
        }
    }
}
