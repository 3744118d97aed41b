//! Process pools from sync code.

use super::bridge::{self, Bridge};
use crate::pool::{PoolOptions, Progress, TaskError};
use crate::remote::Remote;
use crate::{Error, Result};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

/// A [process pool](crate::pool) used from sync code (the body of
/// [`Runtime::open_pool`](super::Runtime::open_pool)). Cheap to clone.
///
/// ```no_run
/// #[furrow::remote]
/// async fn square(x: u64) -> u64 { x * x }
///
/// # fn demo(rt: &furrow::blocking::Runtime) -> furrow::Result<()> {
/// rt.open_pool(furrow::pool::PoolOptions::new(2), |pool| {
///     assert_eq!(pool.size(), 2);
///     // The outer `?`: the call itself (scope over, wrong thread); the
///     // inner one: the task's `TaskError`, as in the async pool.
///     let one = pool.submit(square, (7,))??;
///     assert_eq!(one, 49);
///     // As they complete, with their index.
///     for (i, r) in pool.map_unordered(square, (0..4).map(|x| (x,)))? {
///         assert_eq!(r?, (i * i) as u64);
///     }
///     println!("{:?}, workers {:?}", pool.progress(), pool.workers()?);
///     Ok(())
/// })
/// # }
/// ```
#[derive(Clone)]
pub struct Pool {
    inner: crate::pool::Pool,
    bridge: Bridge,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "blocking::{:?}", self.inner)
    }
}

/// `Runtime::open_pool`: the async pool runs on the runtime, its body
/// waiting for the sync body; the sync body runs here.
pub(super) fn open<R, E, B>(rt: &Bridge, opts: PoolOptions, body: B) -> std::result::Result<R, E>
where
    B: FnOnce(&Pool) -> std::result::Result<R, E>,
    E: From<Error> + std::fmt::Display,
{
    let open = move |child: Bridge, handle: oneshot::Sender<Pool>, done: oneshot::Receiver<()>| {
        Box::pin(crate::pool::open_pool(opts, async move |p: &crate::pool::Pool| {
            let _over = child.scope.clone().drop_guard();
            let _ = handle.send(Pool { inner: p.clone(), bridge: child });
            let _ = done.await;
            Ok(())
        })) as futures::future::BoxFuture<'static, Result<()>>
    };
    bridge::scoped(rt, "pool", open, body)
}

impl Pool {
    /// Run `f` on every input in the workers; the results come **in input
    /// order** from the returned iterator as they become available (the
    /// rules of [`crate::pool`]: the first error is yielded at once and
    /// ends the iterator unless the pool keeps going).
    ///
    /// Dropping the iterator early cancels the tasks still running. If the
    /// pool itself is cancelled meanwhile (Ctrl-C), the iterator ends early
    /// and `open_pool` returns the cancellation.
    ///
    /// ```no_run
    /// #[furrow::remote]
    /// async fn square(x: u64) -> u64 { x * x }
    ///
    /// # fn demo(rt: &furrow::blocking::Runtime) -> furrow::Result<()> {
    /// let squares = rt.open_pool(furrow::pool::PoolOptions::new(2), |pool| {
    ///     furrow::Ok(pool.map(square, (0..100).map(|x| (x,)))?.collect::<Result<Vec<u64>, _>>()?)
    /// })?;
    /// assert_eq!(squares[9], 81);
    /// # Ok(()) }
    /// ```
    ///
    /// Errors: [`Error::Usage`] on the runtime's own threads.
    pub fn map<F, I>(
        &self,
        f: F,
        inputs: I,
    ) -> Result<impl Iterator<Item = std::result::Result<F::Output, TaskError<F::Args>>> + use<F, I>>
    where
        F: Remote,
        I: IntoIterator<Item = F::Args>,
        I::IntoIter: Send + 'static,
    {
        let inputs = inputs.into_iter();
        self.drive(move |p| p.map(f, inputs))
    }

    /// [`map`](Self::map), yielding `(index, result)` as tasks complete, in
    /// any order.
    // The item type spelled out (an alias would hide it from the docs).
    #[allow(clippy::type_complexity)]
    pub fn map_unordered<F, I>(
        &self,
        f: F,
        inputs: I,
    ) -> Result<impl Iterator<Item = (usize, std::result::Result<F::Output, TaskError<F::Args>>)> + use<F, I>>
    where
        F: Remote,
        I: IntoIterator<Item = F::Args>,
        I::IntoIter: Send + 'static,
    {
        let inputs = inputs.into_iter();
        self.drive(move |p| p.map_unordered(f, inputs).indexed())
    }

    /// Run a stream made from the async pool on the runtime, handing its
    /// items over through a small bounded channel (so a slow consumer
    /// holds the pool back instead of buffering every result).
    fn drive<T, S>(&self, make: impl FnOnce(&crate::pool::Pool) -> S + Send + 'static) -> Result<Iter<T>>
    where
        T: Send + 'static,
        S: futures::Stream<Item = T> + Send + 'static,
    {
        bridge::check_thread("Pool::map")?;
        let (tx, rx) = mpsc::channel::<T>(16);
        let pool = self.inner.clone();
        let scope = self.bridge.scope.clone();
        drop(self.bridge.rt.spawn(async move {
            let mut s = std::pin::pin!(make(&pool));
            loop {
                // `biased`: the scope's end, or the iterator's drop, stops
                // the stream (dropping it cancels its tasks) before another
                // item is taken. Cancel safe: `next` on a stream loses no
                // item when dropped (the stream keeps it), and `closed` /
                // `cancelled` only observe.
                let item = tokio::select! {
                    biased;
                    () = scope.cancelled() => return,
                    () = tx.closed() => return,
                    item = s.next() => item,
                };
                match item {
                    Some(item) => {
                        if tx.send(item).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                }
            }
        }));
        Ok(Iter { rx })
    }

    /// Run one task on the next free worker and wait for its result, as
    /// the async [`submit`](crate::pool::Pool::submit) does: a failed task
    /// is a [`TaskError`] (its submission number, the input given back,
    /// the worker, the error). Several threads may submit at once.
    ///
    /// The outer `Result` is the blocking call's own: [`Error::Usage`] on
    /// the runtime's own threads, [`Error::ActorCancelled`] once the pool's
    /// scope is over (the task, if it had started, is cancelled; its input
    /// is dropped with it). So `??` in a body returning
    /// `furrow::Result` gives either, the task's failure as
    /// [`Error::Task`].
    ///
    /// ```no_run
    /// #[furrow::remote]
    /// async fn parse(line: String) -> Result<u64, String> {
    ///     line.trim().parse().map_err(|e| format!("{e}"))
    /// }
    ///
    /// # fn demo(rt: &furrow::blocking::Runtime) -> furrow::Result<()> {
    /// rt.open_pool(furrow::pool::PoolOptions::new(2), |pool| {
    ///     match pool.submit(parse, ("forty-two".to_owned(),))? {
    ///         Ok(n) => println!("parsed {n}"),
    ///         // The input comes back, with where and why it failed.
    ///         Err(e) => eprintln!("{:?} failed in {:?}: {}", e.input.0, e.worker, e.error),
    ///     }
    ///     Ok(())
    /// })
    /// # }
    /// ```
    pub fn submit<F: Remote>(&self, f: F, args: F::Args) -> Result<std::result::Result<F::Output, TaskError<F::Args>>> {
        let p = self.inner.clone();
        self.bridge.call("Pool::submit", async move { Ok(p.submit(f, args).await) })
    }

    /// The number of worker slots.
    pub fn size(&self) -> usize {
        self.inner.size()
    }

    /// The pool's counters now.
    pub fn progress(&self) -> Progress {
        self.inner.progress()
    }

    /// Portals to the current workers (after a replacement, the new one),
    /// for calls made outside the pool's task queue: a
    /// [`blocking::Portal`](super::Portal) belonging to the pool's scope
    /// (its calls end with the pool's body). Read on the runtime, so this
    /// thread never waits for a lock the runtime's threads hold.
    ///
    /// ```no_run
    /// #[furrow::remote]
    /// async fn warm_up() {}
    ///
    /// # fn demo(rt: &furrow::blocking::Runtime) -> furrow::Result<()> {
    /// rt.open_pool(furrow::pool::PoolOptions::new(4), |pool| {
    ///     // Every worker, not just the next free one.
    ///     for w in pool.workers()? {
    ///         w.run(warm_up, ())?;
    ///     }
    ///     Ok(())
    /// })
    /// # }
    /// ```
    pub fn workers(&self) -> Result<Vec<super::Portal>> {
        let p = self.inner.clone();
        let portals = self.bridge.call("Pool::workers", async move { Ok(p.workers()) })?;
        Ok(portals.into_iter().map(|w| super::Portal::new(w, self.bridge.clone())).collect())
    }

    /// The async pool behind this one.
    pub fn as_async(&self) -> &crate::pool::Pool {
        &self.inner
    }
}

/// The items of a pool stream, received on the caller's thread.
struct Iter<T> {
    rx: mpsc::Receiver<T>,
}

impl<T> Iterator for Iter<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if bridge::check_thread("a pool iterator").is_err() {
            // Creation was checked; a consumer moved onto a runtime thread
            // would deadlock waiting: end instead, loudly.
            tracing::error!("a furrow::blocking pool iterator was used on a furrow runtime thread; ending it");
            return None;
        }
        futures::executor::block_on(self.rx.recv())
    }
}
