//! furrow from synchronous code: the same trees, without `async`.
//!
//! A [`Runtime`] starts furrow's tokio runtime on background threads it
//! owns, with this process as the root actor, and shuts both down when it is
//! dropped (or [`shut down`](Runtime::shutdown) explicitly). Its scoped API
//! mirrors the async one: [`Runtime::open_nursery`] runs a closure with a
//! [`ActorNursery`], whose [`Portal`]s call remote functions and open
//! [`Context`]s, whose [`MsgStream`]s are iterated like any iterator.
//!
//! ```no_run
//! #[furrow::remote]
//! async fn square(x: u64) -> u64 { x * x }
//!
//! fn main() -> furrow::Result<()> {
//!     furrow::enter_child_if_spawned(); // first: children are this binary
//!     let rt = furrow::blocking::Runtime::new(furrow::Config::new("sync-root"))?;
//!     let total = rt.open_nursery(|n| {
//!         let p = n.start_actor("squarer")?;
//!         (1..=3).map(|x| p.run(square, (x,))).sum::<furrow::Result<u64>>()
//!     })?;
//!     assert_eq!(total, 14);
//!     rt.shutdown()
//! }
//! ```
//!
//! The remote functions themselves stay `async fn`s: they run in the child
//! actors, which are ordinary furrow actors.
//!
//! ## The rules, as seen from sync code
//!
//! Everything the async API guarantees holds: one-cancels-all (a failing
//! child ends the nursery; calls in flight in its body fail at once with
//! [`Error::ActorCancelled`] and the body's later calls fail too, so the
//! body returns quickly), errors carry their remote origin, no child
//! outlives its nursery, and Ctrl-C (SIGINT or SIGTERM) cancels the whole
//! tree ([`Runtime::new`] installs the handlers; a second Ctrl-C kills the
//! children and exits). A closure that panics ends its scope like an error
//! (children ended, callee cancelled), then the panic continues.
//!
//! ## Re-entrancy and threads
//!
//! Every handle is `Send + Sync`; calls from several threads run
//! concurrently and never wait for each other. A call made re-entrantly —
//! from a `Drop` or `Serialize` impl that runs during another call on the
//! same thread, or from a thread handling a signal — cannot deadlock: no
//! lock of furrow's is held while user code runs (see the bridge's notes in
//! the source). From inside a real signal handler (`sigaction`), where only
//! async-signal-safe functions may run, use a [`Canceller`].
//!
//! Blocking calls are refused with [`Error::Usage`] on the runtime's own
//! threads (async code, a pool's progress callback): there they could only
//! deadlock.

mod bridge;
mod context;
mod nursery;
mod pool;
mod portal;
mod supervisor;

pub use context::{Context, MsgStream};
pub use nursery::{ActorNursery, RunHandle};
pub use pool::Pool;
pub use portal::Portal;
pub use supervisor::{Supervised, Supervisor};

use crate::config::Config;
use crate::{Error, Result};
use bridge::Bridge;
use furrow_proto::Aid;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// The root of a furrow tree driven from synchronous code: a tokio runtime
/// on background threads that this handle owns, running this process's
/// root actor.
///
/// Dropping it shuts the tree down (children ended and reaped, socket files
/// removed) and then the runtime; [`shutdown`](Self::shutdown) does the
/// same and reports errors. Create it on a plain thread (usually `main`),
/// after [`enter_child_if_spawned`](crate::enter_child_if_spawned).
///
/// ```no_run
/// fn main() -> furrow::Result<()> {
///     furrow::enter_child_if_spawned();
///     let rt = furrow::blocking::Runtime::new(furrow::Config::new("tool"))?;
///     println!("root actor {}", rt.aid());
///     let canceller = rt.canceller(); // e.g. for a signal handler
///     # let _ = canceller;
///     rt.open_nursery(|n| n.start_actor("helper").map(drop))?;
///     if let Some(sig) = rt.interrupted() {
///         std::process::exit(128 + sig); // Ctrl-C cancelled the tree
///     }
///     rt.shutdown()
/// }
/// ```
pub struct Runtime {
    rt: Option<tokio::runtime::Runtime>,
    bridge: Bridge,
    stop: Option<oneshot::Sender<()>>,
    root: Option<oneshot::Receiver<Result<()>>>,
    aid: Aid,
    canceller: Canceller,
    interrupted: Arc<AtomicI32>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "blocking::Runtime({})", self.aid)
    }
}

impl Runtime {
    /// Start the runtime and the root actor configured by `config`, with
    /// Ctrl-C handling like `#[furrow::main]`: the first SIGINT or SIGTERM
    /// cancels the tree (the calls in flight fail with
    /// [`Error::ActorCancelled`] naming the signal, see
    /// [`interrupted`](Self::interrupted)); a second one kills every child
    /// and exits the process.
    ///
    /// Errors: [`Error::Usage`] when this process already runs a furrow
    /// actor or when called inside a tokio runtime (async code has the
    /// async API); the root's start errors (its socket directory, its
    /// registry).
    ///
    /// ```no_run
    /// # fn main() -> furrow::Result<()> {
    /// furrow::enter_child_if_spawned();
    /// let rt = furrow::blocking::Runtime::new(furrow::Config::new("tool"))?;
    /// println!("root actor: {}", rt.aid());
    /// # Ok(()) }
    /// ```
    pub fn new(config: Config) -> Result<Runtime> {
        Runtime::start(config, true)
    }

    /// [`new`](Self::new) without installing SIGINT/SIGTERM handlers, for
    /// programs that handle signals themselves (call
    /// [`cancel`](Self::cancel), or a [`Canceller`] from a signal handler).
    ///
    /// ```no_run
    /// # fn main() -> furrow::Result<()> {
    /// let rt = furrow::blocking::Runtime::without_signal_handling(furrow::Config::new("embedded"))?;
    /// // The program's own Ctrl-C handling calls `rt.cancel()` (or a Canceller).
    /// rt.cancel();
    /// # Ok(()) }
    /// ```
    pub fn without_signal_handling(config: Config) -> Result<Runtime> {
        Runtime::start(config, false)
    }

    fn start(config: Config, signals: bool) -> Result<Runtime> {
        crate::runtime::entry::refuse_unentered_child();
        bridge::check_thread("Runtime::new")?;
        if tokio::runtime::Handle::try_current().is_ok() {
            // It could not be shut down from there (tokio refuses to drop a
            // runtime inside another), and async code has the async API.
            return Err(Error::usage(
                "furrow::blocking::Runtime::new called inside a tokio runtime: use the async API there \
                 (#[furrow::main] or furrow::run_root)",
            ));
        }
        crate::log::init(None, true);
        // Multi-thread even with one worker: the runtime must run in the
        // background while the caller's thread runs sync code, and this
        // flavour brings its own threads (`Config::threads` of them).
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads)
            .enable_all()
            .thread_name("furrow-runtime")
            .on_thread_start(bridge::mark_runtime_thread)
            .build()
            .map_err(|e| Error::io("cannot start the tokio runtime", e))?;
        let (wake_tx, wake_rx) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| Error::io("cannot create the canceller's socket pair", e))?;
        for s in [&wake_tx, &wake_rx] {
            s.set_nonblocking(true).map_err(|e| Error::io("cannot make the canceller's socket non-blocking", e))?;
        }
        let canceller = Canceller { fd: Arc::new(OwnedFd::from(wake_tx)) };
        let interrupted = Arc::new(AtomicI32::new(0));
        let (ready_tx, ready_rx) = oneshot::channel::<Aid>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (root_tx, root_rx) = oneshot::channel::<Result<()>>();
        let scope = CancellationToken::new();
        let root_scope = scope.clone();
        let interrupted_by = interrupted.clone();
        rt.spawn(async move {
            let out = crate::run_root(config, async move {
                let signals = signals.then(|| tokio::spawn(crate::runtime::entry::watch_signals(interrupted_by)));
                let wake = tokio::spawn(watch_canceller(wake_rx));
                if let Ok(actor) = crate::runtime::Actor::current() {
                    let _ = ready_tx.send(actor.aid.clone());
                }
                // Until the handle shuts down (or is dropped).
                let _ = stop_rx.await;
                root_scope.cancel();
                wake.abort();
                if let Some(s) = signals {
                    s.abort();
                }
            })
            .await;
            let _ = root_tx.send(out);
        });
        let Some(aid) = bridge::wait_reply(ready_rx) else {
            // The root did not start: its error is the answer.
            let err = bridge::wait_reply(root_rx)
                .unwrap_or_else(|| Err(Error::usage("the furrow root actor ended before it started")))
                .err()
                .unwrap_or_else(|| Error::usage("the furrow root actor ended before it started"));
            rt.shutdown_timeout(Duration::from_secs(1));
            return Err(err);
        };
        let bridge = Bridge { rt: rt.handle().clone(), scope, what: "runtime" };
        Ok(Runtime { rt: Some(rt), bridge, stop: Some(stop_tx), root: Some(root_rx), aid, canceller, interrupted })
    }

    /// The root actor's identity.
    pub fn aid(&self) -> &Aid {
        &self.aid
    }

    /// A handle that cancels this tree from anywhere, including a real
    /// signal handler (see [`Canceller`]).
    pub fn canceller(&self) -> Canceller {
        self.canceller.clone()
    }

    /// Cancel the whole tree now, as Ctrl-C would (from any thread; never
    /// blocks). Open nurseries end with [`Error::ActorCancelled`].
    pub fn cancel(&self) {
        self.canceller.cancel();
    }

    /// The signal (`libc::SIGINT` or `libc::SIGTERM`) that cancelled the
    /// tree, if one did. A program usually exits with `128 + signal` then.
    pub fn interrupted(&self) -> Option<i32> {
        Some(self.interrupted.load(Ordering::Acquire)).filter(|s| *s != 0)
    }

    /// Run an async furrow future on this runtime and wait for its output:
    /// the way to reach any async API from sync code (discovery, for
    /// instance). Wrap a portal it returns with [`portal`](Self::portal).
    ///
    /// ```no_run
    /// # fn demo(rt: &furrow::blocking::Runtime) -> furrow::Result<()> {
    /// let names = rt.block_on(async {
    ///     Ok(furrow::list_actors().await?.into_iter().map(|a| a.aid.name).collect::<Vec<_>>())
    /// })?;
    /// # Ok(()) }
    /// ```
    ///
    /// Errors: `fut`'s, or [`Error::Usage`] on a runtime thread.
    pub fn block_on<T, F>(&self, fut: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        self.bridge.call("Runtime::block_on", fut)
    }

    /// A blocking handle on an async [`Portal`](crate::Portal) (one found
    /// through discovery, or [`connect`](crate::connect)ed), valid as long
    /// as this runtime runs.
    ///
    /// ```no_run
    /// #[furrow::remote]
    /// async fn ping() -> String { "pong".into() }
    ///
    /// # fn demo(rt: &furrow::blocking::Runtime, addr: furrow::Addr) -> furrow::Result<()> {
    /// // An async portal made on the runtime, used from sync code.
    /// let answer = rt.block_on(async move {
    ///     furrow::connect(&addr, async |p| p.run(ping, ()).await).await
    /// })?;
    /// assert_eq!(answer, "pong");
    /// # Ok(()) }
    /// ```
    pub fn portal(&self, portal: crate::Portal) -> Portal {
        Portal::new(portal, self.bridge.clone())
    }

    /// Open a nursery, run `body` with it on this thread, then end every
    /// child still running (the teardown ladder) and return `body`'s value.
    /// The same rules as [`open_nursery`](crate::open_nursery): a child
    /// that fails cancels the body's calls and the nursery returns the
    /// child's error (several are collected in [`Error::Multiple`]); the
    /// body's own error is returned when no child failed.
    ///
    /// ```no_run
    /// #[furrow::remote]
    /// async fn add(a: i64, b: i64) -> i64 { a + b }
    ///
    /// # fn demo(rt: &furrow::blocking::Runtime) -> furrow::Result<()> {
    /// let three = rt.open_nursery(|n| n.start_actor("adder")?.run(add, (1, 2)))?;
    /// assert_eq!(three, 3);
    /// # Ok(()) }
    /// ```
    ///
    /// A panic in `body` ends the nursery's children first, then continues.
    pub fn open_nursery<R, E, B>(&self, body: B) -> std::result::Result<R, E>
    where
        B: FnOnce(&ActorNursery) -> std::result::Result<R, E>,
        E: From<Error> + std::fmt::Display,
    {
        nursery::open(&self.bridge, body)
    }

    /// Open a [supervisor](crate::supervise), run `body` with it on this
    /// thread, then end every child and return `body`'s result; if the
    /// supervisor gives up, the sync body's calls fail at once and this
    /// returns [`Error::GaveUp`].
    ///
    /// ```no_run
    /// use furrow::supervise::{ChildSpec, Restart, Strategy, SupervisorOptions};
    ///
    /// # fn demo(rt: &furrow::blocking::Runtime) -> furrow::Result<()> {
    /// rt.open_supervisor(SupervisorOptions::new(Strategy::OneForAll), |sup| {
    ///     let db = sup.start(ChildSpec::new("db").restart(Restart::Transient))?;
    ///     let _p = db.portal()?;
    ///     Ok(())
    /// })
    /// # }
    /// ```
    pub fn open_supervisor<R, E, B>(
        &self,
        opts: crate::supervise::SupervisorOptions,
        body: B,
    ) -> std::result::Result<R, E>
    where
        B: FnOnce(&Supervisor) -> std::result::Result<R, E>,
        E: From<Error> + std::fmt::Display,
    {
        supervisor::open(&self.bridge, opts, body)
    }

    /// Look `who` up in the registry, connect to the newest match and run
    /// `body` with a portal to it (`None` if nothing matches), then close
    /// the connection (see [`crate::find_actor`]).
    ///
    /// ```no_run
    /// #[furrow::remote]
    /// async fn add(a: i64, b: i64) -> i64 { a + b }
    ///
    /// # fn demo(rt: &furrow::blocking::Runtime) -> furrow::Result<()> {
    /// let sum = rt.find_actor("adder", |p| match p {
    ///     Some(p) => p.run(add, (1, 2)).map(Some),
    ///     None => Ok(None),
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn find_actor<R, E, B>(&self, who: impl Into<crate::Lookup>, body: B) -> std::result::Result<R, E>
    where
        B: FnOnce(Option<&Portal>) -> std::result::Result<R, E>,
        E: From<Error> + std::fmt::Display,
    {
        let who = who.into();
        let open = move |child: Bridge, handle: oneshot::Sender<Option<Portal>>, done: oneshot::Receiver<()>| {
            Box::pin(crate::find_actor(who, async move |p: Option<&crate::Portal>| {
                let _over = child.scope.clone().drop_guard();
                let _ = handle.send(p.map(|p| Portal::new(p.clone(), child)));
                let _ = done.await;
                Ok(())
            })) as futures::future::BoxFuture<'static, Result<()>>
        };
        bridge::scoped(&self.bridge, "lookup", open, |p: &Option<Portal>| body(p.as_ref()))
    }

    /// Wait until an actor matching `who` is registered, connect to it and
    /// run `body` with a portal to it, then close the connection (see
    /// [`crate::wait_for_actor`]). Bound the wait yourself if you must:
    /// [`cancel`](Self::cancel) from another thread ends it.
    pub fn wait_for_actor<R, E, B>(&self, who: impl Into<crate::Lookup>, body: B) -> std::result::Result<R, E>
    where
        B: FnOnce(&Portal) -> std::result::Result<R, E>,
        E: From<Error> + std::fmt::Display,
    {
        let who = who.into();
        let open = move |child: Bridge, handle: oneshot::Sender<Portal>, done: oneshot::Receiver<()>| {
            Box::pin(crate::wait_for_actor(who, async move |p: &crate::Portal| {
                let _over = child.scope.clone().drop_guard();
                let _ = handle.send(Portal::new(p.clone(), child));
                let _ = done.await;
                Ok(())
            })) as futures::future::BoxFuture<'static, Result<()>>
        };
        bridge::scoped(&self.bridge, "lookup", open, body)
    }

    /// Start a [process pool](crate::pool), run `body` with it on this
    /// thread, then end the workers and return `body`'s value (the rules of
    /// [`open_pool`](crate::pool::open_pool)).
    ///
    /// ```no_run
    /// #[furrow::remote]
    /// async fn is_prime(n: u64) -> bool { n > 1 && (2..n).take_while(|d| d * d <= n).all(|d| n % d != 0) }
    ///
    /// # fn demo(rt: &furrow::blocking::Runtime) -> furrow::Result<()> {
    /// let opts = furrow::pool::PoolOptions::new(2).progress(|p| eprint!("\r{} done", p.completed));
    /// let primes = rt.open_pool(opts, |pool| {
    ///     let flags = pool.map(is_prime, (0..10_000u64).map(|n| (n,)))?;
    ///     flags.filter(|r| matches!(r, Ok(true))).count();
    ///     furrow::Ok(())
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn open_pool<R, E, B>(&self, opts: crate::pool::PoolOptions, body: B) -> std::result::Result<R, E>
    where
        B: FnOnce(&Pool) -> std::result::Result<R, E>,
        E: From<Error> + std::fmt::Display,
    {
        pool::open(&self.bridge, opts, body)
    }

    /// Shut the tree down: end every child, close every channel, remove the
    /// socket files, then stop the runtime's threads. Returns the root's
    /// error if its teardown failed.
    ///
    /// ```no_run
    /// # fn main() -> furrow::Result<()> {
    /// let rt = furrow::blocking::Runtime::new(furrow::Config::new("tool"))?;
    /// // ... work ...
    /// rt.shutdown()?; // or just drop it (errors are then logged)
    /// # Ok(()) }
    /// ```
    pub fn shutdown(mut self) -> Result<()> {
        self.stop_now()
    }

    fn stop_now(&mut self) -> Result<()> {
        let Some(rt) = self.rt.take() else { return Ok(()) };
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if bridge::check_thread("Runtime drop").is_err() {
            // Dropped on one of its own threads: waiting would deadlock,
            // and a runtime cannot be shut down from inside itself.
            tracing::error!("a furrow::blocking::Runtime was dropped inside its own runtime; its tree is not reaped");
            rt.shutdown_background();
            return Ok(());
        }
        let out = self.root.take().and_then(bridge::wait_reply).unwrap_or(Ok(()));
        rt.shutdown_timeout(Duration::from_secs(1));
        out
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Err(e) = self.stop_now() {
            tracing::warn!("furrow root shutdown: {e}");
        }
    }
}

/// Cancels a [`Runtime`]'s tree from anywhere, **including a real signal
/// handler**: [`cancel`](Self::cancel) is one non-blocking `send(2)` of one
/// byte on a socket the runtime watches (the self-pipe trick), with no
/// allocation and no lock, so it is async-signal-safe, cannot deadlock
/// against the thread it interrupts, and never blocks (if the socket is
/// full, a cancel is already pending).
///
/// ```no_run
/// use std::sync::OnceLock;
/// static CANCEL: OnceLock<furrow::blocking::Canceller> = OnceLock::new();
///
/// extern "C" fn on_usr1(_: libc::c_int) {
///     if let Some(c) = CANCEL.get() {
///         c.cancel(); // async-signal-safe
///     }
/// }
/// # fn demo(rt: &furrow::blocking::Runtime) {
/// let _ = CANCEL.set(rt.canceller());
/// unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
/// # }
/// ```
///
/// Cancelling a runtime that has shut down does nothing. A canceller holds
/// one file descriptor for as long as it (or a clone) lives.
#[derive(Clone, Debug)]
pub struct Canceller {
    fd: Arc<OwnedFd>,
}

impl Canceller {
    /// Ask the tree to cancel (like Ctrl-C). Async-signal-safe.
    pub fn cancel(&self) {
        // One send(2) syscall (rustix makes it directly, no allocation:
        // still async-signal-safe). DONTWAIT: never block; NOSIGNAL: a
        // runtime that is gone (peer closed) gives EPIPE instead of
        // raising SIGPIPE. The result is ignored on purpose: EAGAIN means
        // a cancel is already pending.
        let flags = rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
        let _ = rustix::net::send(&*self.fd, b"c", flags);
    }
}

/// The runtime's end of the canceller socket: the first byte cancels the
/// root actor (and so the tree).
async fn watch_canceller(rx: std::os::unix::net::UnixStream) {
    let Ok(rx) = tokio::net::UnixStream::from_std(rx) else {
        tracing::warn!("cannot watch the blocking runtime's canceller");
        return;
    };
    loop {
        if rx.readable().await.is_err() {
            return;
        }
        let mut buf = [0u8; 64];
        match rx.try_read(&mut buf) {
            Ok(0) => return,
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
    }
    if let Ok(actor) = crate::runtime::Actor::current() {
        let aid = actor.aid.clone();
        actor.request_cancel_because(Some(aid), "cancelled through furrow::blocking::Canceller");
    }
}
