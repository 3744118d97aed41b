//! Supervisors that restart: services that stay up.
//!
//! A nursery is for a computation: one child failing fails the whole
//! (one cancels all). A *supervisor* is for a service: a child that ends
//! is restarted as its [`Restart`] policy says, by the supervisor's
//! [`Strategy`], at most [`SupervisorOptions::intensity`] times within a
//! window; beyond that the supervisor ends every child and fails with
//! [`Error::GaveUp`](crate::Error::GaveUp), so a supervisor inside a supervised actor escalates
//! as OTP trees do.
//!
//! ```no_run
//! use furrow::supervise::{ChildSpec, Restart, Strategy, SupervisorOptions};
//!
//! #[furrow::remote]
//! async fn get(key: String) -> Option<String> { None }
//!
//! # async fn demo() -> furrow::Result<()> {
//! let opts = SupervisorOptions::new(Strategy::OneForOne).intensity(3, std::time::Duration::from_secs(10));
//! furrow::supervise::open_supervisor(opts, async |sup| {
//!     let db = sup.start(ChildSpec::new("db").restart(Restart::Permanent)).await?;
//!     // A call goes to the instance running now; if `db` crashes, the
//!     // call in flight fails with its ending, and the next call waits
//!     // (bounded) for the restarted instance.
//!     let v = db.run(get, ("answer".to_owned(),)).await?;
//!     # let _ = v;
//!     Ok(())
//! })
//! .await
//! # }
//! ```
//!
//! # The rules (docs/design.md, "Supervisors")
//!
//! - **Which endings are abnormal.** A child that exits when nobody asked
//!   it to is abnormal unless it exited with status 0: an error, a signal
//!   (SIGKILL from outside, a panic's abort), a non-zero exit, or a
//!   keepalive that gave it up. [`Restart::Transient`] restarts only
//!   those; [`Restart::Permanent`] restarts every ending;
//!   [`Restart::Temporary`] none.
//! - **Order.** Children are kept in start order. One-for-all and
//!   rest-for-one end the children concerned through the teardown ladder
//!   in *reverse* start order, then start them again in start order, each
//!   serving before the next starts.
//! - **Intensity.** Every restart counts, at its instant; when one more
//!   would make more than `max_restarts` within `within`, the supervisor
//!   gives up instead: it ends every child (reverse order) and fails with
//!   [`Error::GaveUp`](crate::Error::GaveUp) holding the endings that exhausted it.
//! - **A first start that fails** is the caller's error
//!   ([`Supervisor::start`] returns it) and is not retried: a service that
//!   cannot start at all is a configuration error, not a crash.
//! - **The end of the scope.** When the body returns, every child is ended
//!   through the ladder in reverse start order, and its result returned. A
//!   supervisor whose future is dropped (cancelled, in the middle of a
//!   restart too) drops each child's nursery: children being started are
//!   killed, running ones are sent SIGTERM, and the actor reaps them (as
//!   for a dropped nursery).
//! - **Calls are never retried.** A call in flight when its instance died
//!   fails with that instance's ending; a later call waits, at most
//!   [`SupervisorOptions::restart_wait`], for the next instance.

mod handle;
mod run;

/// The children this process supervises now, for its stats
/// (`ActorStats::supervised`): one process, one actor, so one table.
static SUPERVISED: std::sync::Mutex<Vec<std::sync::Weak<ChildCount>>> = std::sync::Mutex::new(Vec::new());

/// A supervised child's name and restarts, shared with its supervisor.
#[derive(Debug)]
pub(crate) struct ChildCount {
    pub(crate) name: String,
    pub(crate) restarts: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

/// Record a supervised child for the stats (dropped with its supervisor).
pub(crate) fn count(c: &std::sync::Arc<ChildCount>) {
    let mut all = crate::sync::lock(&SUPERVISED);
    all.retain(|w| w.strong_count() > 0);
    all.push(std::sync::Arc::downgrade(c));
}

/// Each supervised child of this process with its restarts, in start order.
pub(crate) fn counts() -> Vec<crate::stats::SupervisedStats> {
    crate::sync::lock(&SUPERVISED)
        .iter()
        .filter_map(std::sync::Weak::upgrade)
        .map(|c| crate::stats::SupervisedStats {
            name: c.name.clone(),
            restarts: c.restarts.load(std::sync::atomic::Ordering::Relaxed),
        })
        .collect()
}

pub use handle::Supervised;
pub use run::open_supervisor;

use crate::SpawnOptions;
use furrow_proto::Aid;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Which children a supervisor restarts when one ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Only the child that ended (OTP's `one_for_one`).
    #[default]
    OneForOne,
    /// Every child: the others are ended, then all start again in order.
    OneForAll,
    /// The child that ended and every child started after it.
    RestForOne,
}

/// When a child is restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Restart {
    /// After any ending.
    #[default]
    Permanent,
    /// After an abnormal ending only (an error, a signal, a non-zero exit,
    /// unresponsiveness); a child that exits 0 stays ended.
    Transient,
    /// Never: its ending is reported, and it is gone.
    Temporary,
}

/// How a supervisor behaves: [`open_supervisor`].
///
/// ```
/// use furrow::supervise::{Strategy, SupervisorOptions};
/// use std::time::Duration;
/// let opts = SupervisorOptions::new(Strategy::RestForOne)
///     .intensity(5, Duration::from_secs(30))
///     .backoff(Duration::from_millis(100));
/// # let _ = opts;
/// ```
#[derive(Clone, Debug)]
pub struct SupervisorOptions {
    pub(crate) strategy: Strategy,
    pub(crate) max_restarts: u32,
    pub(crate) within: Duration,
    pub(crate) backoff: Duration,
    pub(crate) restart_wait: Duration,
}

impl SupervisorOptions {
    /// `strategy`, with OTP's default intensity (1 restart in 5 s), no
    /// backoff, and calls waiting up to 10 s for a restarted instance.
    pub fn new(strategy: Strategy) -> Self {
        SupervisorOptions {
            strategy,
            max_restarts: 1,
            within: Duration::from_secs(5),
            backoff: Duration::ZERO,
            restart_wait: Duration::from_secs(10),
        }
    }

    /// At most `max_restarts` restarts within `within`; one more and the
    /// supervisor gives up ([`Error::GaveUp`](crate::Error::GaveUp)).
    pub fn intensity(mut self, max_restarts: u32, within: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.within = within;
        self
    }

    /// Wait this long before each restart (default: none).
    pub fn backoff(mut self, d: Duration) -> Self {
        self.backoff = d;
        self
    }

    /// How long a call through a [`Supervised`] handle waits for an
    /// instance that is being restarted (default: 10 s).
    pub fn restart_wait(mut self, d: Duration) -> Self {
        self.restart_wait = d;
        self
    }
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        SupervisorOptions::new(Strategy::OneForOne)
    }
}

/// How to start one supervised child, and when to restart it.
///
/// ```
/// use furrow::supervise::{ChildSpec, Restart};
/// let spec = ChildSpec::new("cache")
///     .spawn_options(furrow::SpawnOptions::new().threads(2))
///     .restart(Restart::Transient);
/// # let _ = spec;
/// ```
#[derive(Clone)]
pub struct ChildSpec {
    pub(crate) name: String,
    pub(crate) opts: SpawnOptions,
    pub(crate) restart: Restart,
    pub(crate) init: Option<Init>,
}

/// What runs in each instance after it starts (see [`ChildSpec::init`]).
pub(crate) type Init =
    std::sync::Arc<dyn Fn(crate::Portal) -> futures::future::BoxFuture<'static, crate::Result<()>> + Send + Sync>;

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("opts", &self.opts)
            .field("restart", &self.restart)
            .field("init", &self.init.as_ref().map(|_| "…"))
            .finish()
    }
}

impl ChildSpec {
    /// A permanent child named `name`, started with default options. The
    /// name is the actor's (each instance registers under it, so
    /// `find_actor` finds the one running now) and the handle's.
    pub fn new(name: impl Into<String>) -> Self {
        ChildSpec { name: name.into(), opts: SpawnOptions::new(), restart: Restart::Permanent, init: None }
    }

    /// Run `init` with a portal to each instance once it serves (its first
    /// start and every restart), for as long as the instance lives: warm a
    /// cache with a call, or keep a context open in it (a supervisor of its
    /// own, say). An error from `init` is the instance's failure: it is
    /// ended and the policy decides, so a supervisor run in a context
    /// opened here that gives up escalates to this one. `init` returning
    /// `Ok` leaves the instance serving. [`Supervisor::start`] returns once
    /// the instance serves, not when `init` is done.
    ///
    /// ```no_run
    /// use furrow::supervise::ChildSpec;
    ///
    /// #[furrow::remote]
    /// async fn load_index() -> Result<(), String> { Ok(()) }
    ///
    /// // Its error (a remote error here) fails the instance.
    /// let spec = ChildSpec::new("search").init(|p| async move { p.run(load_index, ()).await });
    /// # let _ = spec;
    /// ```
    pub fn init<F, Fut>(mut self, init: F) -> Self
    where
        F: Fn(crate::Portal) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = crate::Result<()>> + Send + 'static,
    {
        self.init = Some(std::sync::Arc::new(move |p| Box::pin(init(p))));
        self
    }

    /// How each instance is spawned.
    pub fn spawn_options(mut self, opts: SpawnOptions) -> Self {
        self.opts = opts;
        self
    }

    /// When it is restarted.
    pub fn restart(mut self, r: Restart) -> Self {
        self.restart = r;
        self
    }
}

/// What happened to a supervised child: [`Supervisor::events`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An instance started and serves (`restarts`: how many came before
    /// it).
    Started {
        /// The child's name.
        name: String,
        /// The instance.
        aid: Aid,
        /// Restarts of this child so far.
        restarts: u32,
    },
    /// An instance ended without being asked to.
    Ended {
        /// The child's name.
        name: String,
        /// How (the error's text: `actor … exited unexpectedly with signal 9 (SIGKILL)` …).
        how: String,
        /// Whether the ending counts as abnormal (see the module docs).
        abnormal: bool,
    },
    /// An instance was ended by the supervisor, to restart it with one that
    /// ended (one-for-all, rest-for-one).
    Stopped {
        /// The child's name.
        name: String,
    },
    /// A child is restarted (its `restarts`-th restart).
    Restarting {
        /// The child's name.
        name: String,
        /// Its restarts, this one included.
        restarts: u32,
    },
    /// A child that ended is not restarted (its policy says so).
    Gone {
        /// The child's name.
        name: String,
    },
    /// The intensity was exceeded: every child is ended and the supervisor
    /// fails with [`Error::GaveUp`](crate::Error::GaveUp).
    GaveUp {
        /// Restarts within the window.
        restarts: u32,
    },
}

/// The supervisor, inside its scope: start children, watch what happens.
/// Clones share the supervisor.
#[derive(Debug, Clone)]
pub struct Supervisor {
    pub(crate) cmd: mpsc::UnboundedSender<run::Cmd>,
    pub(crate) events: broadcast::Sender<Event>,
}

impl Supervisor {
    /// Start a supervised child; returns once its first instance serves.
    ///
    /// Errors: the first start's error (not retried; the child is not
    /// supervised), or [`Error::Closed`](crate::Error::Closed) once the
    /// supervisor is ending.
    ///
    /// # Cancel safety
    /// If the future is dropped, the child is supervised all the same
    /// (the supervisor started it); only the handle is lost.
    pub async fn start(&self, spec: ChildSpec) -> crate::Result<Supervised> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.cmd
            .send(run::Cmd::Start { spec, reply: tx })
            .map_err(|_| crate::Error::Closed("the supervisor is ending".into()))?;
        let handle = rx.await.map_err(|_| crate::Error::Closed("the supervisor is ending".into()))?;
        handle.first_start().await?;
        Ok(handle)
    }

    /// Every event from now on (a bounded buffer of 1024: a receiver that
    /// falls behind misses the oldest, and is told so by `recv`).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}
