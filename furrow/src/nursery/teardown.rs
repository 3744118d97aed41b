//! The teardown ladder for one child (docs/guide.md, rule 6).

use crate::config::Config;
use crate::portal::Portal;
use crate::spawn::{ChildProc, describe};
use std::fmt;

/// How a child actor ended (see [`ActorNursery::endings`](crate::ActorNursery::endings)).
///
/// ```no_run
/// use furrow::Ending;
/// # fn demo(n: &furrow::ActorNursery) {
/// for (aid, ending) in n.endings() {
///     match ending {
///         Ending::Terminated(status) | Ending::Killed(status) => {
///             eprintln!("{aid} ignored its cancel request: {status}");
///         }
///         _ => {}
///     }
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It had already exited when its teardown began.
    AlreadyExited(String),
    /// It acknowledged the cancel request and exited by itself.
    Cancelled(String),
    /// It needed SIGTERM.
    Terminated(String),
    /// It needed SIGKILL.
    Killed(String),
    /// It could not be confirmed reaped (should never happen; logged).
    Unknown,
}

impl Ending {
    /// True when no signal had to be sent.
    ///
    /// ```
    /// use furrow::Ending;
    /// assert!(Ending::Cancelled("exit code 0".into()).is_graceful());
    /// assert!(!Ending::Killed("signal 9 (SIGKILL)".into()).is_graceful());
    /// ```
    pub fn is_graceful(&self) -> bool {
        matches!(self, Ending::AlreadyExited(_) | Ending::Cancelled(_))
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::AlreadyExited(s) => write!(f, "had already exited ({s})"),
            Ending::Cancelled(s) => write!(f, "cancelled by request ({s})"),
            Ending::Terminated(s) => write!(f, "ended by SIGTERM ({s})"),
            Ending::Killed(s) => write!(f, "ended by SIGKILL ({s})"),
            Ending::Unknown => f.write_str("not confirmed reaped"),
        }
    }
}

/// cancel request → wait for ack and exit → SIGTERM → wait → SIGKILL → reap,
/// then the channel to the child is closed and its socket released.
pub(crate) async fn end_child(portal: &Portal, proc: &ChildProc, cfg: &Config) -> Ending {
    let ending = ladder(portal, proc, cfg).await;
    // The child is reaped: nobody will read what is still queued, so there
    // is nothing to flush. (A flush "cannot block" once the peer's socket
    // is closed, yet twice in ~300 suite runs under load a flushing close
    // here waited its whole 2 s bound after the child was reaped; not
    // explained. Not flushing ends the writer at once, whatever it waits
    // on.)
    // A call still waiting on the channel (from a task outside the body)
    // is told the peer went away when it did, whichever of the reader and
    // this close gets there first; "closed locally" only if it may live.
    let reason = match proc.exited() {
        Some(_) => format!("{} (its process exited)", crate::ipc::PEER_CLOSED),
        None => "closed locally (its process was not confirmed reaped)".to_owned(),
    };
    portal.chan.close_discarding(&reason).await;
    ending
}

async fn ladder(portal: &Portal, proc: &ChildProc, cfg: &Config) -> Ending {
    if let Some(e) = proc.exited() {
        return Ending::AlreadyExited(describe(&e.status));
    }
    // Bounded by cancel_ack_timeout (ack) + exit_timeout (channel close).
    if let Err(e) = portal.cancel_actor().await {
        tracing::debug!(child = %portal.aid(), "cancel request: {e}");
    }
    if let Some(e) = proc.wait_exit(cfg.exit_timeout).await {
        return Ending::Cancelled(describe(&e.status));
    }
    tracing::warn!(child = %portal.aid(), "did not exit after a cancel request: SIGTERM");
    proc.signal(libc::SIGTERM);
    if let Some(e) = proc.wait_exit(cfg.term_timeout).await {
        return Ending::Terminated(describe(&e.status));
    }
    tracing::warn!(child = %portal.aid(), "did not exit after SIGTERM: SIGKILL");
    proc.signal(libc::SIGKILL);
    match proc.wait_exit(std::time::Duration::from_secs(5)).await {
        Some(e) => Ending::Killed(describe(&e.status)),
        None => {
            tracing::error!(child = %portal.aid(), "not reaped 5 s after SIGKILL");
            Ending::Unknown
        }
    }
}
