//! Nurseries: scopes that own child actors (see [`ActorNursery`]).

mod teardown;

use crate::portal::Portal;
use crate::remote::{Args, RemoteFn};
use crate::runtime::Actor;
use crate::spawn::{self, ChildProc, SpawnOptions};
use crate::{Error, Result};
use furrow_proto::Aid;
use serde::de::DeserializeOwned;
use std::panic::Location;
use std::sync::{Arc, Mutex};
pub use teardown::Ending;

/// One child of a nursery.
#[derive(Clone)]
struct ChildEntry {
    aid: Aid,
    portal: Portal,
    proc: ChildProc,
}

/// Nurseries: scopes that own child actors.
///
/// [`open_nursery`] runs a body with an [`ActorNursery`]; actors started in
/// it are real processes. The nursery cannot end before every one of them
/// is reaped:
///
/// - when the body returns (with a value or an error), every child still
///   running is ended through the teardown ladder, all children in
///   parallel: cancel request → bounded wait for the ack and the exit →
///   SIGTERM → bounded wait → SIGKILL → reap;
/// - when the nursery's future is *dropped* instead (a lost `select!`, a
///   timeout), there is no way to wait in `Drop`: every child still
///   running gets SIGKILL at once, and the actor's shutdown reaps them.
///
/// Children started with [`ActorNursery::start_actor`] are services that
/// live as long as the body (or until cancelled); [`ActorNursery::run_in_actor`]
/// runs one function in a fresh actor and ends that actor when it returns.
///
/// ```no_run
/// #[furrow::remote]
/// async fn square(x: u64) -> u64 { x * x }
///
/// # async fn demo() -> furrow::Result<()> {
/// let total = furrow::open_nursery(async |n| {
///     let a = n.run_in_actor(square, (3,));
///     let b = n.run_in_actor(square, (4,));
///     let (a, b) = futures::try_join!(a, b)?;
///     Ok::<_, furrow::Error>(a + b) // names the body's error type for the `?` below
/// })
/// .await?;
/// assert_eq!(total, 25);
/// # Ok(()) }
/// ```
pub struct ActorNursery {
    actor: Arc<Actor>,
    children: Mutex<Vec<ChildEntry>>,
    endings: Mutex<Vec<(Aid, Ending)>>,
    created_at: &'static Location<'static>,
}

impl std::fmt::Debug for ActorNursery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActorNursery(opened at {}, {} children)", self.created_at, self.lock_children().len())
    }
}

/// Open a nursery, run `body` with it, then end every child still running
/// and return `body`'s result.
///
/// The body's error type is yours (`furrow::Error`, `anyhow::Error`, …) as
/// long as a `furrow::Error` converts into it. When nothing else fixes it
/// (a body ending in `Ok(x)` whose result is used with `?`), name it:
/// `Ok::<_, furrow::Error>(x)`.
///
/// Errors: `body`'s error, or [`Error::Usage`] (converted) when called
/// outside a furrow runtime (`#[furrow::main]` or
/// [`run_root`](crate::run_root)).
///
/// # Cancel safety
/// Dropping the returned future kills every child of the nursery with
/// SIGKILL (no graceful teardown is possible from `Drop`); the actor's
/// shutdown reaps them.
#[track_caller]
pub fn open_nursery<R, E, B>(body: B) -> impl Future<Output = Result<R, E>>
where
    B: AsyncFnOnce(&ActorNursery) -> Result<R, E>,
    E: From<Error>,
{
    let created_at = Location::caller();
    async move {
        let actor = Actor::current().map_err(E::from)?;
        let n = ActorNursery { actor, children: Mutex::new(Vec::new()), endings: Mutex::new(Vec::new()), created_at };
        let floor = Floor(&n, true);
        let out = body(&n).await;
        n.end_all().await;
        let mut floor = floor;
        floor.1 = false;
        out
    }
}

/// Kills the children of a nursery whose future was dropped mid-way.
struct Floor<'a>(&'a ActorNursery, bool);

impl Drop for Floor<'_> {
    fn drop(&mut self) {
        if !self.1 {
            return;
        }
        let children = self.0.lock_children().clone();
        let alive: Vec<&ChildEntry> = children.iter().filter(|c| c.proc.exited().is_none()).collect();
        if !alive.is_empty() {
            tracing::warn!(
                "nursery opened at {} dropped before its end: killing {} child actor(s)",
                self.0.created_at,
                alive.len()
            );
        }
        for c in alive {
            // Non-blocking: the reaper task delivers it and reaps.
            c.proc.signal(libc::SIGKILL);
        }
    }
}

impl ActorNursery {
    fn lock_children(&self) -> std::sync::MutexGuard<'_, Vec<ChildEntry>> {
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start a child actor called `name` (a fresh process of this binary)
    /// and return a portal to it once it is serving.
    ///
    /// Errors: [`Error::Spawn`] naming the child when the binary cannot be
    /// executed or the child exits or stalls before it is ready; nothing
    /// is left behind in that case.
    ///
    /// # Cancel safety
    /// Dropping the future mid-start kills the half-started process.
    pub async fn start_actor(&self, name: &str) -> Result<Portal> {
        self.start_actor_with(name, SpawnOptions::default()).await
    }

    /// [`start_actor`](Self::start_actor) with options (another
    /// executable, restricted modules, listen addresses).
    ///
    /// # Cancel safety
    /// As [`start_actor`](Self::start_actor).
    pub async fn start_actor_with(&self, name: &str, opts: SpawnOptions) -> Result<Portal> {
        let started = spawn::spawn(&self.actor, name, &opts).await?;
        let portal = Portal {
            chan: started.chan,
            addrs: started.addrs.into(),
            cancel_ack_timeout: self.actor.config.cancel_ack_timeout,
            exit_timeout: self.actor.config.exit_timeout,
            stream_window: self.actor.config.stream_window,
        };
        self.lock_children().push(ChildEntry { aid: started.aid, portal: portal.clone(), proc: started.proc });
        Ok(portal)
    }

    /// Run `f(args)` in a fresh actor named after the function, end that
    /// actor, and return the result.
    ///
    /// # Cancel safety
    /// Dropping the future cancels the call (see [`Portal::run`]); the
    /// actor is ended with the nursery.
    pub async fn run_in_actor<A: Args, O: DeserializeOwned, L>(&self, f: RemoteFn<A, O, L>, args: A) -> Result<O> {
        let (_, func) = f.ns_func();
        let portal = self.start_actor(func).await?;
        let out = portal.run(f, args).await;
        self.end_one(portal.aid()).await;
        out
    }

    /// End every child now (the same ladder as at the end of the body).
    /// The nursery stays usable.
    ///
    /// # Cancel safety
    /// Cancel safe in the sense that nothing is leaked: children whose
    /// teardown did not finish are still owned by the nursery and ended at
    /// its end (or killed if the nursery itself is dropped).
    pub async fn cancel(&self) -> Result<()> {
        self.end_all().await;
        Ok(())
    }

    /// Portals to the children currently running.
    pub fn children(&self) -> Vec<Portal> {
        self.lock_children().iter().filter(|c| c.proc.exited().is_none()).map(|c| c.portal.clone()).collect()
    }

    /// How each child that has ended so far was ended, in order of ending.
    pub fn endings(&self) -> Vec<(Aid, Ending)> {
        self.endings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn end_one(&self, aid: &Aid) {
        let entry = {
            let mut kids = self.lock_children();
            let pos = kids.iter().position(|c| &c.aid == aid);
            pos.map(|i| kids.remove(i))
        };
        if let Some(e) = entry {
            self.end_entries(vec![e]).await;
        }
    }

    async fn end_all(&self) {
        let all: Vec<ChildEntry> = std::mem::take(&mut *self.lock_children());
        self.end_entries(all).await;
    }

    async fn end_entries(&self, entries: Vec<ChildEntry>) {
        let cfg = &self.actor.config;
        let endings =
            futures::future::join_all(entries.iter().map(|c| teardown::end_child(&c.portal, &c.proc, cfg))).await;
        let mut log = self.endings.lock().unwrap_or_else(|p| p.into_inner());
        for (c, ending) in entries.iter().zip(endings) {
            self.actor.release_child(c.proc.pid());
            log.push((c.aid.clone(), ending));
        }
    }
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>(_: T) {}
    is_send(open_nursery(async |_n| Ok::<(), Error>(())));
}
