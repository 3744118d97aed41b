//! Running tasks: one task's life, and the `map` streams.

use super::{Inner, OnError};
use crate::Error;
use crate::remote::{Args, Remote};
use furrow_proto::Aid;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A task that failed: which input, where, and why.
///
/// `?` turns it into [`Error::Task`] (the input printed with `Debug`).
///
/// ```no_run
/// #[furrow::remote]
/// async fn load(path: String) -> Result<usize, String> {
///     std::fs::read(&path).map(|b| b.len()).map_err(|e| e.to_string())
/// }
///
/// # async fn demo(pool: &furrow::pool::Pool) -> furrow::Result<()> {
/// match pool.submit(load, ("/etc/hostname".into(),)).await {
///     Ok(n) => println!("{n} bytes"),
///     Err(e) => {
///         // The input comes back, with where and why.
///         eprintln!("{} failed on {:?}: {}", e.input.0, e.worker, e.error);
///         return Err(e.into()); // furrow::Error::Task, naming the input
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskError<A> {
    /// The input's position in its `map` (or its submission number).
    pub index: usize,
    /// The input itself, given back.
    pub input: A,
    /// The worker it ran on last, if it reached one.
    pub worker: Option<Aid>,
    /// Why it failed: [`Error::Remote`] for an error or panic in the
    /// function, [`Error::ActorExited`] when its worker died (after any
    /// retries), or another furrow error.
    pub error: Error,
}

impl<A: std::fmt::Debug> std::fmt::Display for TaskError<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "task #{} (input {:?}) failed", self.index, self.input)?;
        if let Some(w) = &self.worker {
            write!(f, " in {w}")?;
        }
        write!(f, ": {}", self.error)
    }
}

impl<A: std::fmt::Debug> std::error::Error for TaskError<A> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<A: std::fmt::Debug> From<TaskError<A>> for Error {
    fn from(e: TaskError<A>) -> Error {
        Error::Task { index: e.index, input: format!("{:?}", e.input), source: Box::new(e.error) }
    }
}

/// Whether `e`, from a call to `portal`, means the worker is gone.
fn worker_gone(e: &Error, portal: &crate::Portal) -> bool {
    matches!(e, Error::TransportClosed { .. }) || portal.chan.is_closed()
}

/// One task: encode the input, take a free worker, call, and on a worker's
/// death replace it and retry (as configured).
///
/// # Cancel safety
/// Dropping the future cancels the remote call (rule 5a) and gives the
/// worker back.
pub(super) async fn task<F, A, O>(
    inner: &Inner,
    f: F,
    index: usize,
    input: A,
) -> (usize, std::result::Result<O, TaskError<A>>)
where
    // `A` and `O` named, not `F::Args`: see `Portal::run`.
    F: Remote<Args = A, Output = O>,
    A: Args,
    O: DeserializeOwned,
{
    let c = &inner.counters;
    c.started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let fail = |input: A, worker: Option<Aid>, error: Error| {
        inner.count(&c.failed);
        (index, Err(TaskError { index, input, worker, error }))
    };
    let kwargs = match input.to_kwargs_parts(f.params()) {
        Ok(k) => k,
        Err(e) => return fail(input, None, e.into()),
    };
    let (ns, func) = crate::remote::ns_func(&f);
    let mut deaths = 0;
    loop {
        let token = match inner.workers.take().await {
            Ok(t) => t,
            Err(e) => return fail(input, None, e),
        };
        let worker = token.portal.aid().clone();
        if token.portal.chan.is_closed() {
            // Its death was seen by another task, which is replacing it:
            // this task never reached it, so this is no attempt of its own.
            let gone = Error::TransportClosed { peer: worker.to_string(), reason: "worker died".into() };
            let (_, replaced) = inner.workers.replace(&token, gone).await;
            if replaced {
                c.replaced.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            continue;
        }
        match token.portal.call_raw(ns, func, kwargs.clone(), f.name()).await {
            Ok(p) => {
                drop(token);
                return match p.decode::<O>() {
                    Ok(o) => {
                        inner.count(&c.completed);
                        (index, Ok(o))
                    }
                    Err(e) => fail(input, Some(worker), e.into()),
                };
            }
            Err(e) if worker_gone(&e, &token.portal) => {
                let (death, replaced) = inner.workers.replace(&token, e).await;
                if replaced {
                    c.replaced.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                drop(token);
                deaths += 1;
                if deaths <= inner.opts.retries {
                    tracing::info!(
                        "pool task #{index}: its worker {worker} died; retrying ({deaths} of {})",
                        inner.opts.retries
                    );
                    inner.count(&c.retried);
                    continue;
                }
                return fail(input, Some(worker), death);
            }
            Err(e) => return fail(input, Some(worker), e),
        }
    }
}

/// A task's input index and result.
type Done<A, O> = (usize, std::result::Result<O, TaskError<A>>);

type TaskFuture<'a, A, O> = BoxFuture<'a, Done<A, O>>;

/// What the two streams share: taking inputs as workers free up, and the
/// tasks in flight.
struct Core<'a, A, O> {
    inner: Arc<Inner>,
    start: Box<dyn FnMut(usize, A) -> TaskFuture<'a, A, O> + Send + 'a>,
    inputs: Box<dyn Iterator<Item = A> + Send + 'a>,
    next_index: usize,
    exhausted: bool,
    ended: bool,
    inflight: FuturesUnordered<TaskFuture<'a, A, O>>,
    /// Tasks started ahead: every token busy plus one queued per worker,
    /// so a freed worker never waits for the next input to be encoded.
    ahead: usize,
}

impl<'a, A: Args + 'a, O: DeserializeOwned + Send + 'a> Core<'a, A, O> {
    /// The next task to end, starting tasks while fewer than `ahead` run
    /// and fewer than `limit` results (`held` of them already waiting in
    /// the caller) are outstanding.
    fn poll_done(&mut self, cx: &mut Context<'_>, held: usize, limit: usize) -> Poll<Option<Done<A, O>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        while !self.exhausted && self.inflight.len() < self.ahead && self.inflight.len() + held < limit {
            match self.inputs.next() {
                Some(a) => {
                    let i = self.next_index;
                    self.next_index += 1;
                    self.inflight.push((self.start)(i, a));
                }
                None => self.exhausted = true,
            }
        }
        match self.inflight.poll_next_unpin(cx) {
            Poll::Ready(Some((i, r))) => {
                if r.is_err() && self.inner.opts.on_error == OnError::CancelRest {
                    // Dropping the futures cancels their remote calls and
                    // gives their workers back; no further input is taken.
                    self.ended = true;
                    self.inflight = FuturesUnordered::new();
                }
                Poll::Ready(Some((i, r)))
            }
            Poll::Ready(None) => {
                // Nothing in flight: either every input is done, or the
                // caller holds `limit` results (it then has one to yield).
                if self.exhausted {
                    self.ended = true;
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The results of [`Pool::map`](super::Pool::map) (in input order) or
/// [`Pool::map_unordered`](super::Pool::map_unordered) (as they complete):
/// a `futures::Stream` of `Result<O, TaskError<A>>`; the unordered one can
/// tell the index of a success through [`indexed`](Self::indexed).
///
/// # Cancel safety
/// Dropping it cancels the tasks still running and takes no further input.
///
/// ```no_run
/// #[furrow::remote]
/// async fn square(x: u64) -> u64 { x * x }
///
/// # async fn demo(pool: &furrow::pool::Pool) -> furrow::Result<()> {
/// use futures::TryStreamExt;
/// let squares: Vec<u64> = pool.map(square, (0..100).map(|x| (x,))).try_collect().await?;
/// assert_eq!(squares[10], 100);
/// # Ok(()) }
/// ```
#[must_use = "streams do nothing unless polled"]
pub struct MapStream<'a, A, O> {
    core: Core<'a, A, O>,
    ordered: bool,
    /// Ordered: results that came before their turn.
    ready: BTreeMap<usize, std::result::Result<O, TaskError<A>>>,
    next_out: usize,
    /// The index of the last item yielded.
    last_index: usize,
}

impl<A, O> std::fmt::Debug for MapStream<'_, A, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapStream")
            .field("ordered", &self.ordered)
            .field("in_flight", &self.core.inflight.len())
            .field("next_index", &self.core.next_index)
            .finish()
    }
}

impl<'a, A: Args + 'a, O: DeserializeOwned + Send + 'a> MapStream<'a, A, O> {
    pub(super) fn new<F: Remote<Args = A, Output = O>>(
        inner: Arc<Inner>,
        f: F,
        inputs: Box<dyn Iterator<Item = A> + Send + 'a>,
        ordered: bool,
    ) -> Self {
        let workers = inner.opts.workers;
        let ahead = workers * inner.opts.in_flight_per_worker + workers;
        let for_tasks = inner.clone();
        let start = Box::new(move |i: usize, a: A| -> TaskFuture<'a, A, O> {
            let inner = for_tasks.clone();
            Box::pin(async move { task(&inner, f, i, a).await })
        });
        MapStream {
            core: Core {
                inner,
                start,
                inputs,
                next_index: 0,
                exhausted: false,
                ended: false,
                inflight: FuturesUnordered::new(),
                ahead,
            },
            ordered,
            ready: BTreeMap::new(),
            next_out: 0,
            last_index: 0,
        }
    }

    /// Pair every item with its input's index (useful on the unordered
    /// stream).
    pub fn indexed(self) -> impl Stream<Item = Done<A, O>> + Unpin + 'a {
        Indexed(self)
    }
}

/// [`MapStream::indexed`]: each item with its input's index (`Unpin`, so
/// `.next()` works on it directly).
struct Indexed<'a, A, O>(MapStream<'a, A, O>);

impl<'a, A: Args + 'a, O: DeserializeOwned + Send + 'a> Stream for Indexed<'a, A, O> {
    type Item = Done<A, O>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        Pin::new(&mut this.0).poll_next(cx).map(|item| item.map(|r| (this.0.last_index, r)))
    }
}

impl<'a, A: Args + 'a, O: DeserializeOwned + Send + 'a> Stream for MapStream<'a, A, O> {
    type Item = std::result::Result<O, TaskError<A>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Ordered results wait at most this many behind a slow one before
        // no further input is taken (bounded memory, like `buffered`).
        let limit = if this.ordered { this.core.ahead * 4 + 16 } else { usize::MAX };
        loop {
            if let Some(r) = this.ready.remove(&this.next_out) {
                this.last_index = this.next_out;
                this.next_out += 1;
                return Poll::Ready(Some(r));
            }
            match this.core.poll_done(cx, this.ready.len(), limit) {
                Poll::Ready(Some((i, r))) => {
                    if !this.ordered || (r.is_err() && this.core.ended) || i == this.next_out {
                        // Unordered; or the failure that cancels the rest
                        // (yielded at once, the rest dropped); or in turn.
                        if this.core.ended {
                            this.ready.clear();
                        }
                        if this.ordered && i == this.next_out {
                            this.next_out += 1;
                        }
                        this.last_index = i;
                        return Poll::Ready(Some(r));
                    }
                    this.ready.insert(i, r);
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
