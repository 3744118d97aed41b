//! Process pools: N worker actors and a queue of inputs.
//!
//! What a user of a hand-rolled worker pool or Python's
//! `multiprocessing.Pool` reaches for first. [`open_pool`] starts the
//! workers (child actors of this binary), runs the body with a [`Pool`],
//! and ends them when the body returns, like a nursery.
//!
//! ```no_run
//! /// CPU-bound work, run in the workers.
//! #[furrow::remote]
//! async fn collatz_len(n: u64) -> u32 {
//!     let (mut n, mut steps) = (n, 0);
//!     while n != 1 {
//!         n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
//!         steps += 1;
//!     }
//!     steps
//! }
//!
//! # async fn demo() -> furrow::Result<()> {
//! use futures::TryStreamExt;
//! let lengths: Vec<u32> = furrow::pool::open_pool(furrow::pool::PoolOptions::new(4), async |pool| {
//!     // Results in input order, streamed as they become available.
//!     furrow::Ok(pool.map(collatz_len, (1..=1000).map(|n| (n,))).try_collect().await?)
//! })
//! .await?;
//! assert_eq!(lengths[26], 111); // collatz_len(27)
//! # Ok(()) }
//! ```
//!
//! ## The rules
//!
//! - **Order.** [`Pool::map`] yields results in input order: item *i* after
//!   items *0..i*, each as soon as it and those before it are done.
//!   [`Pool::map_unordered`] yields them as they complete, with their
//!   index. Inputs are taken from the iterator only as workers free up
//!   (about two per worker are queued ahead), so an endless iterator works.
//! - **A failed task names its input.** Its error is a [`TaskError`]
//!   carrying the input's index, the input itself, the worker, and the
//!   error (a remote error, or the worker's death).
//! - **First error cancels the rest** (the default, [`OnError::CancelRest`]):
//!   the failure is yielded at once, even before results of earlier
//!   inputs still running, those tasks are cancelled (their remote calls
//!   too), no further input is taken, and the stream ends. With
//!   [`OnError::KeepGoing`] every input yields a result or an error.
//! - **A dead worker is replaced.** A worker that dies (crash, SIGKILL,
//!   OOM) is replaced by a fresh actor of the same name; the task it was
//!   running is retried on a live worker up to
//!   [`retries_on_worker_death`](PoolOptions::retries_on_worker_death)
//!   times (default 0: at most once, no hidden re-execution) and then fails
//!   with the death ([`Error::ActorExited`], with the exit status). A dead
//!   worker does not fail the pool's nursery.
//! - **Progress**: an optional callback sees the pool's counters after
//!   every task (see [`PoolOptions::progress`]).
//! - **Scope.** Dropping a `map` stream cancels its tasks; when the body
//!   returns, the workers are ended (the teardown ladder) and reaped. An
//!   error of the body, or one of its own children failing, ends the pool
//!   as a nursery would.

mod run;
mod workers;

pub use run::{MapStream, TaskError};

use crate::Error;
use crate::remote::Remote;
use crate::spawn::SpawnOptions;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use workers::Workers;

/// What the first failed task does to the rest of its `map`.
///
/// ```no_run
/// use furrow::pool::{OnError, PoolOptions};
/// #[furrow::remote]
/// async fn parse(line: String) -> Result<u64, String> { line.trim().parse().map_err(|e| format!("{e}")) }
///
/// # async fn demo(lines: Vec<String>) -> furrow::Result<()> {
/// use futures::StreamExt;
/// let (good, bad) = furrow::pool::open_pool(PoolOptions::new(2).on_error(OnError::KeepGoing), async |pool| {
///     let all: Vec<_> = pool.map(parse, lines.into_iter().map(|l| (l,))).collect().await;
///     furrow::Ok(all.into_iter().partition::<Vec<_>, _>(|r| r.is_ok()))
/// })
/// .await?;
/// println!("{} parsed, {} refused", good.len(), bad.len());
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnError {
    /// Yield the failure at once, cancel the tasks still running, take no
    /// further input, end the stream.
    #[default]
    CancelRest,
    /// Carry on: every input yields its result or its error.
    KeepGoing,
}

/// The pool's counters, as the progress callback sees them.
///
/// ```
/// let opts = furrow::pool::PoolOptions::new(4).progress(|p: furrow::pool::Progress| {
///     eprint!("\r{} done, {} failed, {} retried", p.completed, p.failed, p.retried);
/// });
/// # let _ = opts;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Tasks started (taken from an input iterator or submitted).
    pub started: u64,
    /// Tasks that returned a value.
    pub completed: u64,
    /// Tasks that failed (after any retries).
    pub failed: u64,
    /// Tasks retried after their worker died.
    pub retried: u64,
    /// Workers replaced after they died.
    pub replaced: u64,
}

type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// How to run a pool: how many workers, what they are called, and what
/// happens on errors and deaths.
///
/// ```
/// let opts = furrow::pool::PoolOptions::new(8)
///     .name("resize")
///     .on_error(furrow::pool::OnError::KeepGoing)
///     .retries_on_worker_death(1)
///     .progress(|p| eprint!("\r{} done", p.completed));
/// # let _ = opts;
/// ```
#[derive(Clone)]
pub struct PoolOptions {
    pub(crate) workers: usize,
    pub(crate) name: String,
    pub(crate) on_error: OnError,
    pub(crate) retries: u32,
    pub(crate) in_flight_per_worker: usize,
    pub(crate) progress: Option<ProgressFn>,
    pub(crate) spawn: SpawnOptions,
}

impl std::fmt::Debug for PoolOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolOptions")
            .field("workers", &self.workers)
            .field("name", &self.name)
            .field("on_error", &self.on_error)
            .field("retries", &self.retries)
            .field("in_flight_per_worker", &self.in_flight_per_worker)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl PoolOptions {
    /// `workers` worker actors (at least 1), named `pool-0`, `pool-1`, …;
    /// first error cancels the rest; no retry after a worker's death; one
    /// task at a time per worker.
    pub fn new(workers: usize) -> PoolOptions {
        PoolOptions {
            workers: workers.max(1),
            name: "pool".into(),
            on_error: OnError::CancelRest,
            retries: 0,
            in_flight_per_worker: 1,
            progress: None,
            spawn: SpawnOptions::default(),
        }
    }

    /// As many workers as this machine has CPUs.
    ///
    /// ```
    /// let opts = furrow::pool::PoolOptions::per_cpu().name("crunch");
    /// # let _ = opts;
    /// ```
    pub fn per_cpu() -> PoolOptions {
        PoolOptions::new(std::thread::available_parallelism().map(usize::from).unwrap_or(1))
    }

    /// Name the workers `NAME-0`, `NAME-1`, … (what `furrow tree` shows).
    /// Each worker's name follows the rules of actor names (at most
    /// [`MAX_ACTOR_NAME_LEN`](crate::MAX_ACTOR_NAME_LEN) bytes with its
    /// suffix, no control characters), or the pool fails to start.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// What the first failed task does to the rest (default
    /// [`OnError::CancelRest`]).
    pub fn on_error(mut self, on: OnError) -> Self {
        self.on_error = on;
        self
    }

    /// Retry a task whose worker died up to `n` times on another (or the
    /// replaced) worker before failing it (default 0). Only for tasks that
    /// are safe to run twice.
    pub fn retries_on_worker_death(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// Let each worker run up to `k` tasks at once (default 1). More than
    /// one hides the round trip for tiny tasks; for CPU-bound ones, 1 keeps
    /// one task per process.
    ///
    /// ```
    /// // Tiny tasks: keep 8 in flight per worker to hide the round trip.
    /// let opts = furrow::pool::PoolOptions::new(2).in_flight_per_worker(8);
    /// # let _ = opts;
    /// ```
    pub fn in_flight_per_worker(mut self, k: usize) -> Self {
        self.in_flight_per_worker = k.max(1);
        self
    }

    /// Call `f` with the pool's counters after every task ends (completed,
    /// failed, or retried). It runs on the runtime's threads: keep it quick,
    /// and do not make blocking furrow calls from it (they are refused).
    pub fn progress(mut self, f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    /// Options for starting each worker (another executable, restricted
    /// modules).
    ///
    /// ```
    /// let opts = furrow::pool::PoolOptions::new(2)
    ///     .spawn_options(furrow::SpawnOptions::new().enable_modules(["my_app::jobs"]));
    /// # let _ = opts;
    /// ```
    pub fn spawn_options(mut self, opts: SpawnOptions) -> Self {
        self.spawn = opts;
        self
    }
}

/// Start a pool of worker actors, run `body` with it, then end the workers
/// and return `body`'s value. The pool is a nursery of its own: the same
/// rules hold for the body (its error ends the workers; a cancel of this
/// actor cancels it), except that a worker's death is handled by the pool
/// (see the module docs) instead of failing the nursery.
///
/// Errors: `body`'s; [`Error::Spawn`] if a worker cannot start.
///
/// # Cancel safety
/// As [`open_nursery`](crate::open_nursery): dropping the future drops the
/// body (cancelling its tasks) and the workers are killed and reaped.
///
/// ```no_run
/// #[furrow::remote]
/// async fn square(x: u64) -> u64 { x * x }
///
/// # async fn demo() -> furrow::Result<()> {
/// let total = furrow::pool::open_pool(furrow::pool::PoolOptions::new(2), async |pool| {
///     let r = pool.submit(square, (3,)).await.map_err(furrow::Error::from)?;
///     furrow::Ok(r)
/// })
/// .await?; // the workers are ended and reaped here
/// assert_eq!(total, 9);
/// # Ok(()) }
/// ```
pub async fn open_pool<R, E, B>(opts: PoolOptions, body: B) -> std::result::Result<R, E>
where
    B: AsyncFnOnce(&Pool) -> std::result::Result<R, E>,
    E: From<Error> + std::fmt::Display,
{
    crate::open_nursery(async |n| {
        let workers = Workers::start(n, &opts).await.map_err(E::from)?;
        let pool = Pool { inner: Arc::new(Inner { workers, opts, counters: Counters::default() }) };
        body(&pool).await
    })
    .await
}

/// A running pool (see [`open_pool`]). Cheap to clone; clones share the
/// workers.
///
/// ```no_run
/// #[furrow::remote]
/// async fn square(x: u64) -> u64 { x * x }
///
/// # async fn demo(pool: &furrow::pool::Pool) -> furrow::Result<()> {
/// use futures::StreamExt;
/// // Several submissions at once (clones share the workers).
/// let other = pool.clone();
/// let (a, b) = tokio::join!(pool.submit(square, (2,)), other.submit(square, (3,)));
/// assert_eq!((a?, b?), (4, 9));
/// let mut done = pool.map_unordered(square, (0..10).map(|x| (x,))).indexed();
/// while let Some((i, r)) = done.next().await {
///     println!("#{i}: {}", r?);
/// }
/// println!("{} workers: {:?}; {:?}", pool.size(), pool.workers(), pool.progress());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} × {:?})", self.inner.opts.workers, self.inner.opts.name)
    }
}

pub(crate) struct Inner {
    workers: Workers,
    opts: PoolOptions,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    started: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    replaced: AtomicU64,
    submitted: AtomicU64,
}

impl Inner {
    fn progress(&self) -> Progress {
        let c = &self.counters;
        Progress {
            started: c.started.load(Ordering::Relaxed),
            completed: c.completed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            replaced: c.replaced.load(Ordering::Relaxed),
        }
    }

    fn count(&self, which: &AtomicU64) {
        which.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = &self.opts.progress {
            f(self.progress());
        }
    }
}

impl Pool {
    /// Run `f` on every input, in the workers, and yield the results **in
    /// input order** as they become available (see the module's rules for
    /// errors and deaths).
    ///
    /// ```no_run
    /// #[furrow::remote]
    /// async fn square(x: u64) -> u64 { x * x }
    ///
    /// # async fn demo(pool: &furrow::pool::Pool) -> furrow::Result<()> {
    /// use futures::StreamExt;
    /// let mut results = pool.map(square, (0..10).map(|x| (x,)));
    /// while let Some(r) = results.next().await {
    ///     println!("{}", r?);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the stream cancels the tasks still running (their remote
    /// calls included) and takes no further input.
    pub fn map<'a, F, I>(&self, f: F, inputs: I) -> MapStream<'a, F::Args, F::Output>
    where
        F: Remote,
        I: IntoIterator<Item = F::Args>,
        I::IntoIter: Send + 'a,
    {
        MapStream::new(self.inner.clone(), f, Box::new(inputs.into_iter()), true)
    }

    /// [`map`](Self::map), yielding `(index, result)` as tasks complete,
    /// in any order.
    ///
    /// # Cancel safety
    /// As [`map`](Self::map).
    pub fn map_unordered<'a, F, I>(&self, f: F, inputs: I) -> MapStream<'a, F::Args, F::Output>
    where
        F: Remote,
        I: IntoIterator<Item = F::Args>,
        I::IntoIter: Send + 'a,
    {
        MapStream::new(self.inner.clone(), f, Box::new(inputs.into_iter()), false)
    }

    /// Run one task on the next free worker and return its result. Its
    /// index in a [`TaskError`] is its submission number in this pool.
    /// Several `submit`s may run at once (e.g. under `join_all`).
    ///
    /// # Cancel safety
    /// Dropping the future cancels the task (and its remote call).
    pub async fn submit<F, A, O>(&self, f: F, args: A) -> std::result::Result<O, TaskError<A>>
    where
        F: Remote<Args = A, Output = O>,
        A: crate::Args,
        O: serde::de::DeserializeOwned,
    {
        let index = self.inner.counters.submitted.fetch_add(1, Ordering::Relaxed) as usize;
        run::task(&self.inner, f, index, args).await.1
    }

    /// The pool's counters now.
    pub fn progress(&self) -> Progress {
        self.inner.progress()
    }

    /// Portals to the current workers (after a replacement, the new one).
    pub fn workers(&self) -> Vec<crate::Portal> {
        self.inner.workers.portals()
    }

    /// The number of worker slots.
    pub fn size(&self) -> usize {
        self.inner.opts.workers
    }
}
