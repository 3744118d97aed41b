//! The blocking nursery: `Runtime::open_nursery`'s scope.

use super::Portal;
use super::bridge::{self, Bridge};
use crate::remote::Remote;
use crate::spawn::SpawnOptions;
use crate::{Error, Result};
use tokio::sync::oneshot;

/// A nursery used from sync code (see [`Runtime::open_nursery`](super::Runtime::open_nursery)).
/// Its children are ended when the `open_nursery` call returns.
///
/// ```no_run
/// #[furrow::remote]
/// async fn double(x: u64) -> u64 { 2 * x }
///
/// # fn demo(rt: &furrow::blocking::Runtime) -> furrow::Result<()> {
/// rt.open_nursery(|n| {
///     let worker = n.start_actor("worker")?;
///     let background = n.run_in_actor(double, (21,)); // starts now, in its own actor
///     assert_eq!(worker.run(double, (2,))?, 4);
///     assert_eq!(background.join()?, 42);
///     assert_eq!(n.children()?.len(), 1); // run_in_actor's actor has ended
///     n.cancel() // end the children now (the nursery's end would too)
/// })
/// # }
/// ```
pub struct ActorNursery {
    inner: crate::ActorNursery,
    bridge: Bridge,
}

impl std::fmt::Debug for ActorNursery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "blocking::ActorNursery({:?})", self.inner)
    }
}

/// `Runtime::open_nursery`: the async nursery runs on the runtime, its body
/// waiting for the sync body to finish; the sync body runs here.
pub(super) fn open<R, E, B>(rt: &Bridge, body: B) -> std::result::Result<R, E>
where
    B: FnOnce(&ActorNursery) -> std::result::Result<R, E>,
    E: From<Error> + std::fmt::Display,
{
    let open = |child: Bridge, handle: oneshot::Sender<ActorNursery>, done: oneshot::Receiver<()>| {
        Box::pin(crate::open_nursery(async move |n: &crate::ActorNursery| {
            // However this body ends (the sync body finished, or the
            // nursery dropped it: a child failed, the actor was
            // cancelled), the sync side's calls stop at once.
            let _over = child.scope.clone().drop_guard();
            let _ = handle.send(ActorNursery { inner: n.share(), bridge: child });
            let _ = done.await;
            Ok(())
        })) as futures::future::BoxFuture<'static, Result<()>>
    };
    bridge::scoped(rt, "nursery", open, body)
}

impl ActorNursery {
    /// Start a child actor called `name` and return a portal to it once it
    /// is serving (see [`furrow::ActorNursery::start_actor`](crate::ActorNursery::start_actor)).
    ///
    /// ```no_run
    /// # fn demo(rt: &furrow::blocking::Runtime) -> furrow::Result<()> {
    /// rt.open_nursery(|n| {
    ///     let workers = (0..4).map(|i| n.start_actor(format!("worker-{i}"))).collect::<furrow::Result<Vec<_>>>()?;
    ///     assert_eq!(workers.len(), 4);
    ///     Ok(())
    /// })
    /// # }
    /// ```
    ///
    /// Errors: [`Error::Spawn`]; [`Error::ActorCancelled`] once the nursery
    /// is ending.
    pub fn start_actor(&self, name: impl Into<String>) -> Result<Portal> {
        self.start_actor_with(name, SpawnOptions::default())
    }

    /// [`start_actor`](Self::start_actor) with options.
    ///
    /// ```no_run
    /// # fn demo(n: &furrow::blocking::ActorNursery) -> furrow::Result<()> {
    /// let opts = furrow::SpawnOptions::new().enable_modules(["my_app::jobs"]);
    /// let restricted = n.start_actor_with("jobs", opts)?;
    /// # let _ = restricted;
    /// # Ok(()) }
    /// ```
    pub fn start_actor_with(&self, name: impl Into<String>, opts: SpawnOptions) -> Result<Portal> {
        let n = self.inner.share();
        let name = name.into();
        let p = self.bridge.call("start_actor", async move { n.start_actor_with(name, opts).await })?;
        Ok(Portal::new(p, self.bridge.clone()))
    }

    /// Run `f(args)` in a fresh actor named after the function, then end
    /// that actor; the work starts at once (see
    /// [`furrow::ActorNursery::run_in_actor`](crate::ActorNursery::run_in_actor)): a failure of the call fails the
    /// nursery whether or not the handle is joined.
    pub fn run_in_actor<F: Remote>(&self, f: F, args: F::Args) -> RunHandle<F::Output> {
        let (_, func) = crate::remote::ns_func(&f);
        self.run_in_actor_with(func, SpawnOptions::default(), f, args)
    }

    /// [`run_in_actor`](Self::run_in_actor) in an actor called `name`,
    /// started with `opts` (see [`furrow::ActorNursery::run_in_actor_with`](crate::ActorNursery::run_in_actor_with)).
    ///
    /// ```no_run
    /// #[furrow::remote]
    /// async fn crunch(shard: u32) -> u64 { u64::from(shard) * 2 }
    ///
    /// # fn demo(rt: &furrow::blocking::Runtime) -> furrow::Result<()> {
    /// rt.open_nursery(|n| {
    ///     let h = n.run_in_actor_with("shard-7", furrow::SpawnOptions::new(), crunch, (7,));
    ///     assert_eq!(h.join()?, 14);
    ///     Ok(())
    /// })
    /// # }
    /// ```
    pub fn run_in_actor_with<F: Remote>(
        &self,
        name: impl Into<String>,
        opts: SpawnOptions,
        f: F,
        args: F::Args,
    ) -> RunHandle<F::Output> {
        let n = self.inner.share();
        let name = name.into();
        let pending = self.bridge.submit("run_in_actor", async move { n.run_in_actor_with(name, opts, f, args).await });
        RunHandle { pending }
    }

    /// End every child now (the nursery stays usable).
    pub fn cancel(&self) -> Result<()> {
        let n = self.inner.share();
        self.bridge.call("ActorNursery::cancel", async move { n.cancel().await })
    }

    /// Portals to the children currently running. (Read on the runtime, so
    /// this thread never waits for a lock the runtime's threads hold.)
    pub fn children(&self) -> Result<Vec<Portal>> {
        let n = self.inner.share();
        let kids = self.bridge.call("ActorNursery::children", async move { Ok(n.children()) })?;
        Ok(kids.into_iter().map(|p| Portal::new(p, self.bridge.clone())).collect())
    }

    /// The lifecycle of every child this nursery tried to start, in order
    /// of starting (see [`furrow::ActorNursery::lifecycles`](crate::ActorNursery::lifecycles)). Read on the
    /// runtime, as [`children`](Self::children) is.
    ///
    /// ```no_run
    /// # fn demo(n: &furrow::blocking::ActorNursery) -> furrow::Result<()> {
    /// for (name, steps) in n.lifecycles()? {
    ///     let steps: Vec<String> = steps.iter().map(ToString::to_string).collect();
    ///     println!("{name}: {}", steps.join(" → "));
    /// }
    /// # Ok(()) }
    /// ```
    pub fn lifecycles(&self) -> Result<Vec<(String, Vec<crate::Lifecycle>)>> {
        let n = self.inner.share();
        self.bridge.call("ActorNursery::lifecycles", async move { Ok(n.lifecycles()) })
    }

    /// How each child that has ended so far was ended, in order of ending
    /// (see [`furrow::ActorNursery::endings`](crate::ActorNursery::endings)).
    ///
    /// ```no_run
    /// # fn demo(n: &furrow::blocking::ActorNursery) -> furrow::Result<()> {
    /// n.cancel()?;
    /// for (aid, ending) in n.endings()? {
    ///     if !ending.is_graceful() {
    ///         eprintln!("{aid} had to be {ending}");
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn endings(&self) -> Result<Vec<(furrow_proto::Aid, crate::Ending)>> {
        let n = self.inner.share();
        self.bridge.call("ActorNursery::endings", async move { Ok(n.endings()) })
    }

    /// The async nursery behind this one (for [`Runtime::block_on`](super::Runtime::block_on)
    /// code that needs it).
    pub fn as_async(&self) -> &crate::ActorNursery {
        &self.inner
    }
}

/// The result of [`ActorNursery::run_in_actor`].
///
/// ```no_run
/// #[furrow::remote]
/// async fn fetch(url: String) -> usize { url.len() }
///
/// # fn demo(n: &furrow::blocking::ActorNursery) -> furrow::Result<()> {
/// let handles: Vec<_> = ["a", "bb"].iter().map(|u| n.run_in_actor(fetch, (u.to_string(),))).collect();
/// let sizes = handles.into_iter().map(|h| h.join()).collect::<furrow::Result<Vec<usize>>>()?;
/// assert_eq!(sizes, [1, 2]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "the call runs anyway; join the handle to get its result"]
pub struct RunHandle<O> {
    pending: Result<bridge::Pending<O>>,
}

impl<O> RunHandle<O> {
    /// Wait for the call's result.
    pub fn join(self) -> Result<O> {
        self.pending?.wait()
    }
}
