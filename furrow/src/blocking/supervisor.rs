//! The blocking supervisor: `Runtime::open_supervisor`'s scope.

use super::Portal;
use super::bridge::{self, Bridge};
use crate::remote::Remote;
use crate::supervise::{ChildSpec, Event, SupervisorOptions};
use crate::{Error, Result};
use tokio::sync::{broadcast, oneshot};

/// A supervisor used from sync code (see
/// [`Runtime::open_supervisor`](super::Runtime::open_supervisor) and
/// [`crate::supervise`]).
///
/// ```no_run
/// use furrow::supervise::{ChildSpec, Strategy, SupervisorOptions};
///
/// #[furrow::remote]
/// async fn ping() -> u32 { 1 }
///
/// # fn demo(rt: &furrow::blocking::Runtime) -> furrow::Result<()> {
/// rt.open_supervisor(SupervisorOptions::new(Strategy::OneForOne), |sup| {
///     let db = sup.start(ChildSpec::new("db"))?;
///     assert_eq!(db.run(ping, ())?, 1);
///     Ok(())
/// })
/// # }
/// ```
#[derive(Debug)]
pub struct Supervisor {
    inner: crate::supervise::Supervisor,
    bridge: Bridge,
}

/// A supervised child used from sync code (see
/// [`crate::supervise::Supervised`]): calls go to the instance serving
/// now.
#[derive(Clone, Debug)]
pub struct Supervised {
    inner: crate::supervise::Supervised,
    bridge: Bridge,
}

/// `Runtime::open_supervisor`: the async supervisor runs on the runtime,
/// its body waiting for the sync body to finish; the sync body runs here.
pub(super) fn open<R, E, B>(rt: &Bridge, opts: SupervisorOptions, body: B) -> std::result::Result<R, E>
where
    B: FnOnce(&Supervisor) -> std::result::Result<R, E>,
    E: From<Error> + std::fmt::Display,
{
    let open = move |child: Bridge, handle: oneshot::Sender<Supervisor>, done: oneshot::Receiver<()>| {
        Box::pin(crate::supervise::open_supervisor(opts, async move |s: &crate::supervise::Supervisor| {
            // However this body ends (the sync body finished, or the
            // supervisor gave up and dropped it), the sync side's calls
            // stop at once.
            let _over = child.scope.clone().drop_guard();
            let _ = handle.send(Supervisor { inner: s.clone(), bridge: child });
            let _ = done.await;
            Ok(())
        })) as futures::future::BoxFuture<'static, Result<()>>
    };
    bridge::scoped(rt, "supervisor", open, body)
}

impl Supervisor {
    /// Start a supervised child; returns once its first instance serves
    /// (see [`crate::supervise::Supervisor::start`]).
    pub fn start(&self, spec: ChildSpec) -> Result<Supervised> {
        let s = self.inner.clone();
        let h = self.bridge.call("start", async move { s.start(spec).await })?;
        Ok(Supervised { inner: h, bridge: self.bridge.clone() })
    }

    /// Every event from now on; read it with `blocking_recv` (see
    /// [`crate::supervise::Supervisor::events`]).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events()
    }
}

impl Supervised {
    /// The child's name.
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// How many times it was restarted.
    pub fn restarts(&self) -> u32 {
        self.inner.restarts()
    }

    /// A portal to the instance serving now, waiting (bounded) for one
    /// being restarted (see [`crate::supervise::Supervised::portal`]).
    pub fn portal(&self) -> Result<Portal> {
        let s = self.inner.clone();
        let p = self.bridge.call("portal", async move { s.portal().await })?;
        Ok(Portal::new(p, self.bridge.clone()))
    }

    /// Call `f` in the instance serving now.
    pub fn run<F: Remote>(&self, f: F, args: F::Args) -> Result<F::Output> {
        let s = self.inner.clone();
        self.bridge.call("run", async move { s.run(f, args).await })
    }
}
