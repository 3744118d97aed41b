//! The blocking portal.

use super::Context;
use super::bridge::{self, Bridge};
use crate::context::{BodyEnd, Target};
use crate::remote::{Args, ContextFn, Remote};
use crate::{Error, Result};
use furrow_proto::{Aid, Payload};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::panic::AssertUnwindSafe;
use tokio::sync::oneshot;

/// A handle on a peer actor, used from sync code (see [`crate::Portal`]).
/// Cheap to clone, `Send + Sync`: calls from several threads run at once.
///
/// ```no_run
/// #[furrow::remote]
/// async fn add(a: i64, b: i64) -> i64 { a + b }
///
/// # fn demo(rt: &furrow::blocking::Runtime) -> furrow::Result<()> {
/// rt.open_nursery(|n| {
///     let p = n.start_actor("adder")?;
///     println!("{} listens on {:?}", p.aid(), p.addrs());
///     let p2 = p.clone(); // calls from another thread run at the same time
///     let other = std::thread::spawn(move || p2.run(add, (1, 1)));
///     assert_eq!(p.run(add, (2, 2))?, 4);
///     assert_eq!(other.join().expect("thread")?, 2);
///     p.cancel_actor()
/// })
/// # }
/// ```
#[derive(Clone)]
pub struct Portal {
    inner: crate::Portal,
    bridge: Bridge,
}

impl std::fmt::Debug for Portal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "blocking::Portal({})", self.inner.aid())
    }
}

impl Portal {
    pub(super) fn new(inner: crate::Portal, bridge: Bridge) -> Portal {
        Portal { inner, bridge }
    }

    /// The actor at the other end.
    pub fn aid(&self) -> &Aid {
        self.inner.aid()
    }

    /// The addresses the peer listens on (see [`crate::Portal::addrs`]).
    ///
    /// ```no_run
    /// # fn demo(p: &furrow::blocking::Portal) {
    /// println!("{} listens on {:?}", p.aid(), p.addrs());
    /// # }
    /// ```
    pub fn addrs(&self) -> &[furrow_proto::Addr] {
        self.inner.addrs()
    }

    /// Whether the channel to the peer is closed: every call on this
    /// portal would fail (see [`crate::Portal::is_closed`]).
    ///
    /// ```no_run
    /// # fn demo(cached: Option<furrow::blocking::Portal>) {
    /// // Drop a portal kept from an earlier lookup once its peer is gone.
    /// let live = cached.filter(|p| !p.is_closed());
    /// # let _ = live;
    /// # }
    /// ```
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// The async portal behind this one.
    pub fn as_async(&self) -> &crate::Portal {
        &self.inner
    }

    /// Call remote function `f` with `args` in the peer and wait for its
    /// result (see [`crate::Portal::run`] for the errors).
    ///
    /// `args` are encoded on this thread, and dropped once the call is
    /// queued, before waiting: a `Drop` of theirs may itself call furrow.
    ///
    /// ```no_run
    /// #[furrow::remote]
    /// async fn add(a: i64, b: i64) -> i64 { a + b }
    ///
    /// # fn demo(p: &furrow::blocking::Portal) -> furrow::Result<()> {
    /// assert_eq!(p.run(add, (1, 2))?, 3);
    /// # Ok(()) }
    /// ```
    pub fn run<F: Remote>(&self, f: F, args: F::Args) -> Result<F::Output> {
        let kwargs = args.to_kwargs_parts(f.params())?;
        let (ns, func) = crate::remote::ns_func(&f);
        let pending = self.call_raw(ns, func, kwargs, f.name())?;
        // The request is queued: the arguments' own `Drop` runs now, while
        // this call is in flight, holding nothing (see the bridge's notes).
        drop(args);
        Ok(pending.wait()?.decode()?)
    }

    /// Call a function by wire name with arguments given as a map or struct
    /// (see [`crate::Portal::run_by_name`]).
    ///
    /// ```no_run
    /// # fn demo(p: &furrow::blocking::Portal) -> furrow::Result<()> {
    /// #[derive(serde::Serialize)]
    /// struct AddArgs { a: i64, b: i64 }
    /// let sum: i64 = p.run_by_name("my_app::math::add", &AddArgs { a: 1, b: 2 })?;
    /// # let _ = sum;
    /// # Ok(()) }
    /// ```
    pub fn run_by_name<K: Serialize, O: DeserializeOwned>(&self, name: &str, kwargs: &K) -> Result<O> {
        let kwargs = Payload::encode(kwargs)?;
        let (ns, func) = crate::remote::split_name(name);
        Ok(self.call_raw(ns, func, kwargs.into(), name)?.wait()?.decode()?)
    }

    fn call_raw(
        &self,
        ns: &str,
        func: &str,
        kwargs: furrow_proto::PayloadParts,
        name: &str,
    ) -> Result<bridge::Pending<Payload>> {
        let p = self.inner.clone();
        let (ns, func, name) = (ns.to_owned(), func.to_owned(), name.to_owned());
        self.bridge.submit("Portal::run", async move { p.call_raw(&ns, &func, kwargs, &name).await })
    }

    /// Ask the peer actor to cancel itself (see
    /// [`crate::Portal::cancel_actor`]).
    pub fn cancel_actor(&self) -> Result<()> {
        let p = self.inner.clone();
        self.bridge.call("cancel_actor", async move { p.cancel_actor().await })
    }

    /// Open a context with `f(args)` in the peer, run `body(&ctx, first)`
    /// on this thread, then wait for the callee's outcome and return the
    /// body's value: the rules of [`crate::Portal::open_context`] (a body
    /// that fails or panics cancels the callee; a callee error, or a
    /// cancel not asked for by this context, is returned as the error).
    ///
    /// A sync body cannot be dropped mid-way. When the context fails while
    /// it runs (callee error, cancellation raised, lost link), every
    /// blocking call it makes *on this thread* — through the context, its
    /// stream, or any other portal — fails from then on (calls in flight
    /// included: they are cancelled remotely) with
    /// `Error::ActorCancelled`; calls from other threads it started are
    /// not affected. When the body returns, `open_context` returns the
    /// context's error, not the body's (which is usually its
    /// consequence). A body that makes no call runs to its end first.
    ///
    /// ```no_run
    /// #[furrow::context]
    /// async fn counter(ctx: furrow::Context, upto: u64) -> furrow::Result<u64> {
    ///     ctx.started(&"ready").await?;
    ///     ctx.open_stream(async |s| {
    ///         for i in 0..upto { s.send(&i).await?; }
    ///         Ok(upto)
    ///     }).await
    /// }
    ///
    /// # fn demo(p: &furrow::blocking::Portal) -> furrow::Result<()> {
    /// let sum = p.open_context(counter, (10,), |ctx, first: String| {
    ///     assert_eq!(first, "ready");
    ///     ctx.open_stream(|s| s.iter::<u64>().sum::<furrow::Result<u64>>())
    /// })?;
    /// assert_eq!(sum, 45);
    /// # Ok(()) }
    /// ```
    #[track_caller]
    pub fn open_context<A, O, F, R, E, B>(&self, f: ContextFn<A, O>, args: A, body: B) -> std::result::Result<R, E>
    where
        A: Args,
        F: DeserializeOwned + Send + 'static,
        B: FnOnce(&Context, F) -> std::result::Result<R, E>,
        E: From<Error>,
    {
        let opened_at = std::panic::Location::caller();
        bridge::check_thread("open_context").map_err(E::from)?;
        let target = Target::of(f, &args).map_err(E::from)?;
        drop(args);
        let (ctx_tx, ctx_rx) = oneshot::channel::<(Context, F)>();
        let (done_tx, done_rx) = oneshot::channel::<bool>();
        let child = self.bridge.nested("context");
        let p = self.inner.clone();
        let end_rx = self
            .bridge
            .submit("open_context", async move {
                let ended = p
                    .run_context_ended(
                        target,
                        async move |ctx: &crate::Context<crate::role::Opener>, first: F| {
                            // Dropped with this body, also when the context's
                            // failure interrupts it: the sync body's calls then
                            // fail at once.
                            let _over = child.scope.clone().drop_guard();
                            let _ = ctx_tx.send((Context::new(ctx.clone(), child), first));
                            match done_rx.await {
                                Ok(true) => Ok(()),
                                // The sync body failed or panicked: an error here
                                // cancels the callee; the body's own error is what
                                // the caller gets.
                                _ => Err(Error::Closed("the context's body failed".into())),
                            }
                        },
                        opened_at,
                    )
                    .await;
                match ended {
                    BodyEnd::Ran(r) => r.map(|()| None),
                    BodyEnd::Interrupted(e) => Ok(Some(e)),
                }
            })
            .map_err(E::from)?;
        let Some((ctx, first)) = bridge::wait_reply(ctx_rx) else {
            // Never opened: the open's error.
            return Err(E::from(end_rx.wait().err().unwrap_or_else(|| bridge::runtime_gone("context"))));
        };
        let scope = ctx.bridge.scope.clone();
        let out = {
            // Calls the body makes on this thread, through any handle, end
            // with the context (see `bridge::enclose`).
            let _inside = bridge::enclose(scope, "context");
            std::panic::catch_unwind(AssertUnwindSafe(|| body(&ctx, first)))
        };
        drop(ctx);
        let _ = done_tx.send(matches!(out, Ok(Ok(_))));
        let end = end_rx.wait();
        match (out, end) {
            (Err(panic), _) => std::panic::resume_unwind(panic),
            // The context failed while the body ran: its calls failed from
            // then on, so the body's own error is (almost always) their
            // consequence, and a body that returned `Ok` does not make the
            // callee's failure go away (rule 1). The cause is returned.
            (Ok(_), Ok(Some(cause))) => Err(E::from(cause)),
            (Ok(Err(own)), _) => Err(own),
            (Ok(Ok(r)), Ok(None)) => Ok(r),
            (Ok(Ok(_)), Err(e)) => Err(E::from(e)),
        }
    }
}
