//! Nurseries: scopes that own child actors (see [`ActorNursery`]).

mod teardown;

use crate::portal::Portal;
use crate::remote::{Args, RemoteFn};
use crate::runtime::Actor;
use crate::spawn::{self, ChildProc, Lifecycle, LifecycleLog, SpawnOptions, describe};
use crate::sync::lock;
use crate::{Error, Result};
use furrow_proto::Aid;
use serde::de::DeserializeOwned;
use std::panic::Location;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
pub use teardown::Ending;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One child of a nursery.
#[derive(Clone)]
struct ChildEntry {
    aid: Aid,
    portal: Portal,
    proc: ChildProc,
    /// Set before anyone asks the child to end (its nursery, or a
    /// `cancel_actor` through its portal): its exit is then expected.
    expected: Arc<AtomicBool>,
}

/// State shared by the nursery, its body, and its background tasks
/// (`run_in_actor` calls and exit monitors).
struct Shared {
    actor: Arc<Actor>,
    children: Mutex<Vec<ChildEntry>>,
    endings: Mutex<Vec<(Aid, Ending)>>,
    /// Child errors, in the order they happened.
    errors: Mutex<Vec<Error>>,
    /// One-cancels-all: cancelled at the first child error.
    failed: CancellationToken,
    /// Set once the nursery started ending its children: exits and
    /// cancellations from then on are its own doing, not errors.
    tearing_down: AtomicBool,
    /// `run_in_actor` tasks and exit monitors.
    tasks: TaskTracker,
    /// Every child this nursery tried to start, with its lifecycle.
    lifecycles: Mutex<Vec<(String, LifecycleLog)>>,
    created_at: &'static Location<'static>,
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
///   running gets SIGTERM at once (a child handles it as a cancel request),
///   and the actor's shutdown reaps them, escalating to SIGKILL for any
///   that has not exited within `term_timeout`.
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
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ActorNursery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActorNursery(opened at {}, {} children)", self.shared.created_at, lock(&self.shared.children).len())
    }
}

/// Open a nursery, run `body` with it, then end every child still running
/// and return `body`'s result.
///
/// **One cancels all.** If a child fails while the body runs (a
/// `run_in_actor` call returns an error, or a child process exits when
/// nobody asked it to), the body is cancelled (its future dropped, which
/// cancels its calls in flight), every other child is ended, and the
/// nursery returns the child's error. Errors of several children are
/// collected in [`Error::Multiple`]; the cancellations they cause are not
/// errors and mask none of them. If the actor itself is asked to cancel
/// (Ctrl-C at the root, a `cancel_actor` from the parent), the body is
/// cancelled the same way and the nursery returns
/// [`Error::ActorCancelled`].
///
/// The body's error type is yours (`furrow::Error`, `anyhow::Error`, …) as
/// long as a `furrow::Error` converts into it. When nothing else fixes it
/// (a body ending in `Ok(x)` whose result is used with `?`), name it:
/// `Ok::<_, furrow::Error>(x)`. When children failed *and* the body
/// returned an error of its own, the children's errors are returned (the
/// body's error is usually their consequence) and the body's is logged.
///
/// ```no_run
/// #[furrow::remote]
/// async fn count_words(text: String) -> usize { text.split_whitespace().count() }
///
/// # async fn demo(chapters: Vec<String>) -> anyhow::Result<()> {
/// // The body's error type is anyhow's here; furrow's errors convert.
/// let total = furrow::open_nursery(async |n| {
///     let mut counters = Vec::new();
///     for i in 0..chapters.len() {
///         counters.push(n.start_actor(format!("counter-{i}")).await?);
///     }
///     let mut total = 0;
///     for (p, text) in counters.iter().zip(&chapters) {
///         total += p.run(count_words, (text.clone(),)).await?;
///     }
///     anyhow::Ok(total)
/// })
/// .await?; // every counter has been ended and reaped here
/// println!("{total} words");
/// # Ok(()) }
/// ```
///
/// Errors: as above, or [`Error::Usage`] (converted) when called outside a
/// furrow runtime (`#[furrow::main]` or [`run_root`](crate::run_root)).
///
/// # Cancel safety
/// Not cancel safe: there is no graceful teardown from `Drop`. Dropping the
/// returned future drops the body (cancelling its calls in flight), kills
/// any child whose start was under way, and sends SIGTERM to every child
/// still running (a child handles it as a cancel request and ends its own
/// children in turn); the actor's shutdown reaps them and escalates to
/// SIGKILL for any that do not exit within `term_timeout`. `run_in_actor`
/// calls are background tasks and are not aborted: each ends when its
/// child does.
#[track_caller]
pub fn open_nursery<R, E, B>(body: B) -> impl Future<Output = std::result::Result<R, E>>
where
    B: AsyncFnOnce(&ActorNursery) -> std::result::Result<R, E>,
    E: From<Error> + std::fmt::Display,
{
    let created_at = Location::caller();
    async move {
        let actor = Actor::ready().await.map_err(E::from)?;
        let shared = Arc::new(Shared {
            actor: actor.clone(),
            children: Mutex::new(Vec::new()),
            endings: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            failed: CancellationToken::new(),
            tearing_down: AtomicBool::new(false),
            tasks: TaskTracker::new(),
            lifecycles: Mutex::new(Vec::new()),
            created_at,
        });
        let n = ActorNursery { shared: shared.clone() };
        let mut floor = Floor { shared: shared.clone(), armed: true };
        // `biased`: a child failure or a cancel of the actor wins over a
        // body that happens to be ready in the same poll, so the failure is
        // never lost. Dropping the body cancels what it was doing.
        let out = tokio::select! {
            biased;
            () = shared.failed.cancelled() => None,
            () = actor.cancel.cancelled() => {
                let (canceller, reason) = actor.cancel_reason();
                shared.record(Error::ActorCancelled { canceller, reason });
                None
            }
            out = body(&n) => Some(out),
        };
        shared.tearing_down.store(true, Ordering::Release);
        shared.end_all().await;
        // `run_in_actor` tasks end once their actor is gone; monitors once
        // their child is reaped: all of them are by now.
        shared.tasks.close();
        // Bounded, and loud if the bound is hit: every child is reaped by
        // now, so these tasks end at once unless something was missed.
        if tokio::time::timeout(std::time::Duration::from_secs(10), shared.tasks.wait()).await.is_err() {
            tracing::error!(
                "bug: nursery opened at {}: {} background task(s) still running 10 s after its children ended",
                shared.created_at,
                shared.tasks.len()
            );
        }
        floor.armed = false;
        let errors = std::mem::take(&mut *lock(&shared.errors));
        match (errors.len(), out) {
            (0, Some(out)) => out,
            (0, None) => Err(E::from(Error::ActorCancelled { canceller: None, reason: "nursery cancelled".into() })),
            (_, out) => {
                if let Some(Err(own)) = out {
                    tracing::warn!("nursery body failed too (after its children did): {own}");
                }
                let mut errors = errors;
                Err(E::from(if errors.len() == 1 { errors.remove(0) } else { Error::Multiple(errors) }))
            }
        }
    }
}

/// Ends the children of a nursery whose future was dropped mid-way.
struct Floor {
    shared: Arc<Shared>,
    armed: bool,
}

impl Drop for Floor {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.shared.tearing_down.store(true, Ordering::Release);
        let children = lock(&self.shared.children).clone();
        let alive: Vec<&ChildEntry> = children.iter().filter(|c| c.proc.exited().is_none()).collect();
        if !alive.is_empty() {
            tracing::warn!(
                "nursery opened at {} dropped before its end: sending SIGTERM to {} child actor(s)",
                self.shared.created_at,
                alive.len()
            );
        }
        for c in alive {
            c.expected.store(true, Ordering::Release);
            // Non-blocking: the reaper task delivers it; the actor's
            // shutdown reaps and escalates.
            c.proc.signal(libc::SIGTERM);
        }
    }
}

impl Shared {
    /// Record a child error and trigger one-cancels-all. Once the nursery
    /// is tearing down, cancellations and lost connections are its own
    /// doing and are not recorded.
    fn record(&self, e: Error) {
        if self.tearing_down.load(Ordering::Acquire)
            && matches!(
                e,
                Error::ContextCancelled { .. }
                    | Error::TransportClosed { .. }
                    | Error::Closed(_)
                    | Error::ActorCancelled { .. }
                    | Error::ActorExited { .. }
            )
        {
            return;
        }
        lock(&self.errors).push(e);
        self.failed.cancel();
    }

    /// Record a child error that cannot be a consequence of the teardown
    /// (see the exit monitor), even during it.
    fn record_cause(&self, e: Error) {
        lock(&self.errors).push(e);
        self.failed.cancel();
    }

    /// Start a child. Its unexpected death fails the nursery (rule 3),
    /// unless `on_death` is given: then the death is reported there instead
    /// (a pool replaces its dead workers) and the nursery carries on.
    async fn start_child(
        self: &Arc<Self>,
        name: &str,
        opts: SpawnOptions,
        on_death: Option<mpsc::UnboundedSender<Error>>,
    ) -> Result<Portal> {
        if self.tearing_down.load(Ordering::Acquire) {
            return Err(Error::ActorCancelled { canceller: None, reason: "the nursery is ending".into() });
        }
        let log = LifecycleLog::default();
        lock(&self.lifecycles).push((name.to_owned(), log.clone()));
        let started = spawn::spawn(&self.actor, name, &opts, &log).await?;
        let expected = Arc::new(AtomicBool::new(false));
        let portal = Portal {
            chan: started.chan,
            addrs: started.addrs.into(),
            cancel_ack_timeout: self.actor.config.cancel_ack_timeout,
            exit_timeout: self.actor.config.exit_timeout,
            stream_window: self.actor.config.stream_window,
            expected_exit: Some(expected.clone()),
        };
        let entry = ChildEntry { aid: started.aid, portal: portal.clone(), proc: started.proc, expected };
        lock(&self.children).push(entry.clone());
        // Exit monitor: a child that dies when nobody asked it to is an
        // error of the nursery (a clean exit, status 0, means somebody
        // asked it politely: not an error).
        let shared = self.clone();
        // It is also the only writer of the lifecycle after `Ready` (the
        // start sequence wrote the steps before), so `Exited` comes last.
        self.tasks.spawn(async move {
            if let Some(exit) = entry.proc.wait_exit(std::time::Duration::MAX).await {
                let status = describe(&exit.status);
                spawn::log_step(&log, Lifecycle::Exited { status: status.clone() });
                // A child that lost its channel to us exits with its own
                // status (5) only if that happened before any request to
                // end reached it (a cancel over a working channel comes
                // before the channel's end, and ends it with 0): never our
                // doing, so a failure even during the teardown. (A body
                // interrupted by that lost link fails first, with
                // `TransportClosed`; this is its cause.)
                let lost_us = exit.status.code() == Some(crate::runtime::entry::EXIT_PARENT_LOST);
                if !exit.status.success() && (lost_us || !entry.expected.load(Ordering::Acquire)) {
                    let lifecycle = crate::sync::lock(&log).clone();
                    let death = Error::ActorExited { actor: entry.aid.clone(), status, lifecycle };
                    match &on_death {
                        Some(tx) => {
                            let _ = tx.send(death);
                        }
                        None if lost_us => shared.record_cause(death),
                        None => shared.record(death),
                    }
                }
            }
        });
        Ok(portal)
    }

    async fn end_one(&self, aid: &Aid) {
        let entry = {
            let mut kids = lock(&self.children);
            let pos = kids.iter().position(|c| &c.aid == aid);
            pos.map(|i| kids.remove(i))
        };
        if let Some(e) = entry {
            self.end_entries(vec![e]).await;
        }
    }

    async fn end_all(&self) {
        let all: Vec<ChildEntry> = std::mem::take(&mut *lock(&self.children));
        self.end_entries(all).await;
        // Children whose start the cancelled body abandoned were killed
        // when their start was dropped; they are part of this scope too.
        self.actor.reap_abandoned().await;
    }

    /// The ladder for several children, all in parallel (never one after
    /// another: the whole tree ends in the time of its slowest child).
    async fn end_entries(&self, entries: Vec<ChildEntry>) {
        let cfg = &self.actor.config;
        for c in &entries {
            c.expected.store(true, Ordering::Release);
        }
        let endings =
            futures::future::join_all(entries.iter().map(|c| teardown::end_child(&c.portal, &c.proc, cfg))).await;
        let mut log = lock(&self.endings);
        for (c, ending) in entries.iter().zip(endings) {
            self.actor.release_child(c.proc.pid());
            log.push((c.aid.clone(), ending));
        }
    }
}

impl ActorNursery {
    /// Another handle on this nursery, for the blocking API's bridge (which
    /// must hold it outside the body's borrow). Not public: a handle that
    /// outlives the body could only see a nursery that is ending.
    pub(crate) fn share(&self) -> ActorNursery {
        ActorNursery { shared: self.shared.clone() }
    }

    /// Start a child actor called `name` (a fresh process of this binary)
    /// and return a portal to it once it is serving. The name is owned
    /// (`"literal"` or a `String`), so `n.start_actor(format!("worker-{i}"))`
    /// works inside a closure.
    ///
    /// The child is supervised: if its process exits while nobody asked it
    /// to, the nursery fails (one cancels all).
    ///
    /// Errors: [`Error::Spawn`] naming the child when the binary cannot be
    /// executed or the child exits or stalls before it is ready; nothing
    /// is left behind in that case.
    ///
    /// ```no_run
    /// # async fn demo() -> furrow::Result<()> {
    /// furrow::open_nursery(async |n| {
    ///     let mut workers = Vec::new();
    ///     for i in 0..4 {
    ///         workers.push(n.start_actor(format!("worker-{i}")).await?);
    ///     }
    ///     // … use them; they are ended when the body returns.
    ///     # let _ = workers;
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the future mid-start kills the half-started process
    /// (SIGKILL); the nursery's end, and the actor's shutdown, wait
    /// (bounded) for it to be reaped. Nothing is left behind.
    pub fn start_actor(&self, name: impl Into<String> + 'static) -> impl Future<Output = Result<Portal>> + Send + '_ {
        self.start_actor_with(name, SpawnOptions::default())
    }

    /// Start a child whose unexpected death is sent to `on_death` instead
    /// of failing the nursery (for supervisors that replace children: the
    /// pool). Everything else is as for a child of
    /// [`start_actor`](Self::start_actor): it is ended with the nursery.
    pub(crate) async fn start_replaceable(
        &self,
        name: String,
        opts: SpawnOptions,
        on_death: mpsc::UnboundedSender<Error>,
    ) -> Result<Portal> {
        self.shared.start_child(&name, opts, Some(on_death)).await
    }

    /// [`start_actor`](Self::start_actor) with options (another
    /// executable, restricted modules, listen addresses).
    ///
    /// ```no_run
    /// use furrow::SpawnOptions;
    /// # async fn demo() -> furrow::Result<()> {
    /// furrow::open_nursery(async |n| {
    ///     // A child that serves only the functions of `my_app::public`.
    ///     let opts = SpawnOptions::new().enable_modules(["my_app::public"]);
    ///     let _p = n.start_actor_with("frontend", opts).await?;
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// As [`start_actor`](Self::start_actor).
    pub fn start_actor_with(
        &self,
        name: impl Into<String> + 'static,
        opts: SpawnOptions,
    ) -> impl Future<Output = Result<Portal>> + Send + '_ {
        let name = name.into();
        async move { self.shared.start_child(&name, opts, None).await }
    }

    /// Run `f(args)` in a fresh actor named after the function, then end
    /// that actor. The work starts at once, in the background; the
    /// returned handle resolves to the result.
    ///
    /// A failure of the call (an error or panic in `f`, a crash of the
    /// actor) is a failure of the nursery: every sibling is cancelled and
    /// the nursery returns the error (with the errors of any other child
    /// that failed too), whether or not the handle is awaited.
    ///
    /// # Cancel safety
    /// Dropping the handle does not cancel the call: it belongs to the
    /// nursery, which ends it at its own end.
    pub fn run_in_actor<A, O, L>(&self, f: RemoteFn<A, O, L>, args: A) -> RunHandle<O>
    where
        A: Args + 'static,
        O: DeserializeOwned + Send + 'static,
        L: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let shared = self.shared.clone();
        self.shared.tasks.spawn(async move {
            let (_, func) = f.ns_func();
            let result = async {
                let portal = shared.start_child(func, SpawnOptions::default(), None).await?;
                let out = portal.run(f, args).await;
                shared.end_one(portal.aid()).await;
                out
            }
            .await;
            if let Err(e) = &result {
                // A crashed actor is reported once, by its exit monitor,
                // with its exit status; not also as a lost connection.
                if !matches!(e, Error::TransportClosed { .. }) {
                    shared.record(e.clone());
                }
            }
            let _ = tx.send(result);
        });
        RunHandle { rx }
    }

    /// End every child now (the same ladder as at the end of the body).
    /// The nursery stays usable; this is not a failure.
    ///
    /// ```no_run
    /// # async fn demo() -> furrow::Result<()> {
    /// furrow::open_nursery(async |n| {
    ///     for round in 0..3 {
    ///         let _p = n.start_actor(format!("round-{round}")).await?;
    ///         // … one round of work …
    ///         n.cancel().await?; // a fresh set of children for the next round
    ///         assert!(n.children().is_empty());
    ///     }
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// Not cancel safe. On its first poll it takes every child out of the
    /// nursery and sends each a cancel request. If the future is dropped
    /// before they have all ended, the nursery does not escalate for the
    /// ones still running: a child that honours the request exits (not a
    /// failure); one that does not is neither signalled by the nursery nor
    /// waited for by its end beyond a bounded 10 s (which logs an error),
    /// and is ended (SIGTERM, then SIGKILL) by the actor's shutdown.
    pub async fn cancel(&self) -> Result<()> {
        self.shared.end_all().await;
        Ok(())
    }

    /// Portals to the children currently running.
    ///
    /// ```no_run
    /// #[furrow::remote]
    /// async fn reload() {}
    ///
    /// # async fn demo(n: &furrow::ActorNursery) -> furrow::Result<()> {
    /// // Broadcast to every live child.
    /// for p in n.children() {
    ///     p.run(reload, ()).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn children(&self) -> Vec<Portal> {
        lock(&self.shared.children).iter().filter(|c| c.proc.exited().is_none()).map(|c| c.portal.clone()).collect()
    }

    /// The lifecycle of every child this nursery tried to start (failed
    /// starts included), in order of starting: for each, the steps it
    /// reached, in order, ending with its exit once it is reaped.
    ///
    /// ```no_run
    /// # fn demo(n: &furrow::ActorNursery) {
    /// for (name, steps) in n.lifecycles() {
    ///     let steps: Vec<String> = steps.iter().map(ToString::to_string).collect();
    ///     println!("{name}: {}", steps.join(" → "));
    /// }
    /// # }
    /// ```
    pub fn lifecycles(&self) -> Vec<(String, Vec<Lifecycle>)> {
        lock(&self.shared.lifecycles).iter().map(|(name, log)| (name.clone(), crate::sync::lock(log).clone())).collect()
    }

    /// How each child that has ended so far was ended, in order of ending.
    ///
    /// ```no_run
    /// # async fn demo(n: &furrow::ActorNursery) -> furrow::Result<()> {
    /// n.cancel().await?;
    /// for (aid, ending) in n.endings() {
    ///     if !ending.is_graceful() {
    ///         eprintln!("{aid} had to be {ending}");
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn endings(&self) -> Vec<(Aid, Ending)> {
        lock(&self.shared.endings).clone()
    }
}

/// The result of [`ActorNursery::run_in_actor`]: a future of the call's
/// result. If the nursery ends before the call finished, it resolves to
/// [`Error::ActorCancelled`].
///
/// ```no_run
/// #[furrow::remote]
/// async fn render(page: u32) -> Vec<u8> { vec![page as u8] }
///
/// # async fn demo() -> furrow::Result<()> {
/// let pages = furrow::open_nursery(async |n| {
///     // All start at once, in parallel; each handle resolves to its page.
///     let handles: Vec<_> = (1..=8).map(|p| n.run_in_actor(render, (p,))).collect();
///     futures::future::try_join_all(handles).await
/// })
/// .await?;
/// assert_eq!(pages.len(), 8);
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "the call runs anyway; await the handle to get its result"]
pub struct RunHandle<O> {
    rx: oneshot::Receiver<Result<O>>,
}

impl<O> Future for RunHandle<O> {
    type Output = Result<O>;

    /// # Cancel safety
    /// Cancel safe: the result stays in the handle until it is taken.
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<O>> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(r)) => Poll::Ready(r),
            Poll::Ready(Err(_)) => Poll::Ready(Err(Error::ActorCancelled {
                canceller: None,
                reason: "the nursery ended before the call finished".into(),
            })),
            Poll::Pending => Poll::Pending,
        }
    }
}
