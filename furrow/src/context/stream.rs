//! The stream inside a context.

use super::mailbox::Step;
use super::role::Either;
use super::state::Final;
use super::{Context, Side};
use crate::ipc::flow::Blocked;
use crate::ipc::{Offer, YieldRefused};
use crate::{Error, Result};
use furrow_proto::{Msg, Payload};
use futures::{Sink, Stream};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// A send takes a unit of the task's cooperative budget once per this many
/// sends (see `MsgStream::before_send`).
const BUDGET_EVERY: u32 = 16;

/// How to open a stream.
///
/// ```
/// let opts = furrow::StreamOptions::new().window(64).overrun_errors(true);
/// # let _ = opts;
/// ```
#[derive(Clone, Debug, Default)]
pub struct StreamOptions {
    pub(crate) window: Option<usize>,
    pub(crate) window_bytes: Option<usize>,
    pub(crate) overrun_errors: bool,
}

impl StreamOptions {
    /// Defaults: the configured window (`Config::stream_window`), with
    /// backpressure.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many received messages may wait unconsumed; also the credit
    /// granted to the sender.
    pub fn window(mut self, n: usize) -> Self {
        self.window = Some(n.max(1));
        self
    }

    /// How many payload bytes may be on their way or wait unconsumed;
    /// also the byte credit granted to the sender (default
    /// `Config::stream_window_bytes`, 8 MiB). A message larger than the
    /// window still goes, alone, once no more than half of it is in
    /// flight.
    ///
    /// ```
    /// // Frames of video: at most 32 MiB buffered per stream.
    /// let opts = furrow::StreamOptions::new().window_bytes(32 << 20);
    /// # let _ = opts;
    /// ```
    pub fn window_bytes(mut self, n: usize) -> Self {
        self.window_bytes = Some(n.max(1));
        self
    }

    /// Overrun mode: the sender never waits; if more than `window`
    /// messages pile up unconsumed, receiving fails with
    /// [`Error::StreamOverrun`] (and the excess is dropped).
    pub fn overrun_errors(mut self, on: bool) -> Self {
        self.overrun_errors = on;
        self
    }
}

#[derive(Clone)]
enum HubItem {
    Item(Payload),
    End(Option<Arc<Error>>),
}

struct Hub {
    subs: Arc<Mutex<Vec<mpsc::Sender<HubItem>>>>,
    pump: tokio::task::AbortHandle,
    go: Arc<Go>,
}

/// Starts the fan-out pump on the first `recv` of any receiver, so every
/// subscriber created before that sees every message.
#[derive(Debug, Default)]
struct Go {
    set: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Go {
    fn start(&self) {
        if !self.set.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.notify.notify_one();
        }
    }

    async fn wait(&self) {
        // `notify_one` stores a permit if nobody waits yet, so a start
        // before this wait is not lost.
        if !self.set.load(std::sync::atomic::Ordering::Acquire) {
            self.notify.notified().await;
        }
    }
}

/// One side's end of a context's stream: send and receive messages, from
/// one task or several (every method takes `&self`, so sending and
/// receiving can run concurrently, e.g. under `tokio::join!`).
///
/// Also usable with ecosystem combinators through [`MsgStream::stream`]
/// (`futures::Stream`) and [`MsgStream::sink`] (`futures::Sink`).
///
/// Sending jobs and reading their results at the same time:
///
/// ```no_run
/// # async fn demo(ctx: &furrow::Context) -> furrow::Result<()> {
/// let results = ctx
///     .open_stream(async |s| {
///         let jobs = [3u64, 5, 8];
///         let send = async {
///             for j in jobs {
///                 s.send(&j).await?;
///             }
///             furrow::Ok(())
///         };
///         let recv = async {
///             let mut out = Vec::new();
///             while out.len() < jobs.len() {
///                 match s.recv::<u64>().await? {
///                     Some(r) => out.push(r),
///                     None => break, // the peer closed its end
///                 }
///             }
///             Ok(out)
///         };
///         let ((), out) = tokio::try_join!(send, recv)?;
///         furrow::Ok(out)
///     })
///     .await?;
/// # let _ = results; Ok(()) }
/// ```
pub struct MsgStream {
    ctx: Context<Either>,
    /// Sends so far (see `before_send`).
    sends: std::sync::atomic::AtomicU32,
    window: usize,
    /// Set (for good) by the first `subscribe`: until then `recv` reads the
    /// mailbox without looking at the hub or the primary queue, two locks
    /// per message on the stream hot path.
    fanned: std::sync::atomic::AtomicBool,
    hub: Mutex<Option<Hub>>,
    primary: tokio::sync::Mutex<Option<mpsc::Receiver<HubItem>>>,
}

impl Drop for MsgStream {
    /// Stop the fan-out pump, if any: it holds a handle on the context, and
    /// left running it would keep a dropped opener's context from being
    /// cancelled (found by the rustdoc audit). Aborting only flags the task:
    /// no lock, no wait (`get_mut`: nobody else can hold the hub now).
    fn drop(&mut self) {
        let hub = self.hub.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = hub.take() {
            h.pump.abort();
        }
    }
}

impl std::fmt::Debug for MsgStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MsgStream({:?})", self.ctx)
    }
}

impl MsgStream {
    pub(crate) fn new(ctx: Context<Either>, window: usize) -> MsgStream {
        MsgStream {
            ctx,
            sends: std::sync::atomic::AtomicU32::new(0),
            window,
            fanned: std::sync::atomic::AtomicBool::new(false),
            hub: Mutex::new(None),
            primary: tokio::sync::Mutex::new(None),
        }
    }

    /// The context this stream belongs to.
    ///
    /// ```
    /// /// Forward everything to `out`, stopping when the context is cancelled.
    /// async fn relay(s: &furrow::MsgStream, out: &furrow::MsgStream) -> furrow::Result<()> {
    ///     while let Some(v) = s.recv::<Vec<u8>>().await? {
    ///         out.send(&v).await?;
    ///     }
    ///     if let Some(by) = s.context().canceller() {
    ///         eprintln!("relay ended: cancelled by {by}");
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn context(&self) -> &Context<Either> {
        &self.ctx
    }

    /// Send one message to the peer. Waits while the peer has granted no
    /// credit (backpressure), so a fast sender never outruns a slow
    /// receiver's buffer.
    ///
    /// With credit available it does not wait for anything: the message is
    /// encoded straight into the connection's outgoing buffer, and a burst
    /// of sends goes out in one write. It still gives other tasks their
    /// turn now and then (tokio's cooperative budget), so a loop of sends
    /// on an unbounded window cannot starve the task that writes them.
    ///
    /// Errors: [`Error::Closed`] once the peer closed its end (or this end
    /// was closed), the context's outcome if it ended, and
    /// [`Error::ContextCancelled`] on a cancelled callee.
    ///
    /// # Cancel safety
    /// Cancel safe: if the future is dropped before it completes, nothing
    /// was sent and no credit was used (the turn it may give other tasks
    /// comes before the message is queued, and queueing never waits).
    pub async fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        if self.budget_turn() {
            tokio::task::coop::consume_budget().await;
        }
        self.may_send()?;
        let inner = &self.ctx.inner;
        match inner.chan.offer_yield(inner.cid, value, &inner.flow) {
            Ok(Offer::Sent) => Ok(()),
            Ok(Offer::NoCredit { size }) => {
                let frame = inner.chan.yield_frame(inner.cid, value, size)?;
                self.send_frame(frame).await
            }
            // A large `furrow::Bytes` in the value: framed on its own, and
            // written from its buffer (no copy), as soon as credit allows.
            Ok(Offer::OwnFrame) => {
                let frame = inner.chan.yield_frame(inner.cid, value, 0)?;
                self.send_frame(frame).await
            }
            Err(e) => Err(self.refused(e).await),
        }
    }

    /// [`send`](Self::send) of an already encoded payload (the blocking
    /// API encodes on the caller's thread).
    pub(crate) async fn send_payload(&self, pld: &Payload) -> Result<()> {
        if self.budget_turn() {
            tokio::task::coop::consume_budget().await;
        }
        self.may_send()?;
        let frame = self.ctx.inner.chan.yield_frame_payload(self.ctx.inner.cid, pld)?;
        self.send_frame(frame).await
    }

    /// Whether this send takes a unit of the task's cooperative budget
    /// (awaited before anything is queued, so dropping it loses nothing).
    ///
    /// One unit per `BUDGET_EVERY` sends: a send with credit never waits,
    /// so this is where a sending loop lets the writer (and every other
    /// task) run. Every send costing a unit made the writer run every 128
    /// sends, one write and one wake-up of the peer per ~1 KiB of small
    /// values, and the wake-up, not the work, bound the rate.
    fn budget_turn(&self) -> bool {
        // A load and a store, not an atomic add (an RMW was 17 % of a
        // send): concurrent sends on one stream may count one send twice or
        // not at all, which only moves when the budget is taken.
        let n = self.sends.load(std::sync::atomic::Ordering::Relaxed);
        self.sends.store(n.wrapping_add(1), std::sync::atomic::Ordering::Relaxed);
        n.is_multiple_of(BUDGET_EVERY)
    }

    /// What every send checks first: this end still open, and the callee
    /// not cancelled (it stops sending even with credit).
    fn may_send(&self) -> Result<()> {
        if self.ctx.inner.local_stopped.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::Closed("this end of the stream is closed".into()));
        }
        crate::chaos::fault::at(crate::chaos::fault::Step::Yield);
        let inner = &self.ctx.inner;
        if inner.side == Side::Callee && inner.scope.is_cancelled() {
            return Err(self.ctx.cancelled_error("context cancelled"));
        }
        Ok(())
    }

    /// Wait for the credit a `Yield` of `size` payload bytes needs, then
    /// queue its `frame`. The frame is encoded before the wait, because
    /// byte credit needs its size; a dropped wait drops it unsent.
    async fn send_frame(&self, (frame, size): (furrow_proto::codec::Encoded, u64)) -> Result<()> {
        let inner = &self.ctx.inner;
        let sent = if inner.side == Side::Callee {
            // `biased`: a cancelled callee stops sending even with credit.
            // `send_yield` is cancel safe (nothing is spent or queued
            // unless it returns `Ok`).
            tokio::select! {
                biased;
                () = inner.scope.cancelled() => return Err(self.ctx.cancelled_error("context cancelled")),
                r = inner.chan.send_yield(inner.cid, frame, size, &inner.flow) => r,
            }
        } else {
            inner.chan.send_yield(inner.cid, frame, size, &inner.flow).await
        };
        match sent {
            Ok(()) => Ok(()),
            Err(e) => Err(self.refused(e).await),
        }
    }

    /// The error for a `Yield` the channel refused.
    async fn refused(&self, e: YieldRefused) -> Error {
        let inner = &self.ctx.inner;
        match e {
            YieldRefused::Invalid(e) => e,
            // The channel closed between the credit and the write (its
            // writer failed first: seen as "transport closed" in 1 run of
            // 60): for a callee that is its cancellation.
            YieldRefused::Failed(e) => {
                if self.ctx.note_lost_link() {
                    self.ctx.cancelled_error("context cancelled")
                } else {
                    e
                }
            }
            // The runtime cancels the scope *before* it handles a later
            // `Stop` or outcome, but on a multi-thread runtime both can
            // land between the `select!`'s two polls above: a cancelled
            // callee reports its cancellation, whatever it saw second.
            // (Found by `chaos_found::a_callee_propagating_its_cancel_…`:
            // 1 round in ~300 reported "the peer closed its end".)
            // A callee whose link was lost is cancelled too (its dialog
            // ended because the channel closed, which the runtime may not
            // have handled yet).
            YieldRefused::Blocked(_)
                if inner.side == Side::Callee && (self.ctx.note_lost_link() || inner.scope.is_cancelled()) =>
            {
                self.ctx.cancelled_error("context cancelled")
            }
            YieldRefused::Blocked(Blocked::PeerStopped) => {
                Error::Closed("the peer closed its end of the stream".into())
            }
            YieldRefused::Blocked(Blocked::Ended) => self.ended_error_after_final().await,
        }
    }

    /// The error for sending on a stream whose dialog is over. The flow
    /// learns that the dialog ended (its outcome arrived, or its channel was
    /// lost) before any receiver has taken the outcome out of the mailbox;
    /// take it now (it is already queued, or the mailbox is closed), so the
    /// error is the real outcome, not "no outcome yet". Bounded, in case a
    /// receiver elsewhere holds the mailbox and is not being polled.
    async fn ended_error_after_final(&self) -> Error {
        if self.ctx.state().final_.is_none() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.ctx.wait_final()).await;
        }
        self.ended_error()
    }

    /// The error for using a stream whose context is over.
    fn ended_error(&self) -> Error {
        // The flow can learn the dialog ended (its channel was lost) before
        // any receiver drained the mailbox and recorded the outcome: then
        // the lost channel is the outcome. (Found by the chaos transport,
        // `chaos_transport::a_connection_dropped_mid_stream_ends_the_tree_cleanly`:
        // a send failed with "context has no outcome yet".)
        let no_outcome = self.ctx.state().final_.is_none();
        if no_outcome && self.ctx.inner.chan.is_closed() {
            return self.ctx.inner.chan.closed_error();
        }
        match self.ctx.result_from_final::<serde::de::IgnoredAny>() {
            Ok(_) => Error::Closed(format!("context `{}` is over", self.ctx.inner.func)),
            Err(e) => e,
        }
    }

    /// Receive the next message; `Ok(None)` once the stream ended: the peer
    /// closed its end, the callee returned, or (opener) a cancel this side
    /// asked for arrived. An error in the callee, a cancellation by anyone
    /// else, an overrun or a lost connection are errors.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is taken from the mailbox only when it is
    /// returned.
    pub async fn recv<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        match self.recv_payload().await? {
            Some(p) => Ok(Some(p.decode()?)),
            None => Ok(None),
        }
    }

    /// [`recv`](Self::recv) without decoding (the blocking API decodes on
    /// the caller's thread).
    ///
    /// # Cancel safety
    /// As [`recv`](Self::recv).
    pub(crate) async fn recv_payload(&self) -> Result<Option<Payload>> {
        // The hot path: the rest of a run already taken from the mailbox,
        // without fan-out. Those messages came before anything else the
        // mailbox holds, the outcome included (which is recorded only when
        // read, after them), so nothing else needs looking at.
        if !self.fanned.load(std::sync::atomic::Ordering::Acquire)
            && let Some(p) = self.ctx.next_of_run()
        {
            return Ok(Some(p));
        }
        // Without fan-out (the common case) neither the hub nor the primary
        // queue exists: skip both. A `subscribe` racing with this `recv`
        // is one made after it began, so this `recv` reading the mailbox
        // itself is what `subscribe` already allows for a `recv` in
        // progress (see there).
        if self.fanned.load(std::sync::atomic::Ordering::Acquire) {
            if let Some(go) = crate::sync::lock(&self.hub).as_ref().map(|h| h.go.clone()) {
                go.start();
            }
            let mut primary = self.primary.lock().await;
            if let Some(rx) = primary.as_mut() {
                return match rx.recv().await {
                    Some(HubItem::Item(p)) => Ok(Some(p)),
                    Some(HubItem::End(None)) | None => Ok(None),
                    Some(HubItem::End(Some(e))) => Err((*e).clone()),
                };
            }
        }
        if let Some(r) = self.ended_already() {
            return r.map(|()| None);
        }
        // Uncontended in the common case (one receiver): take it without
        // queueing on the async mutex.
        let mut mb = match self.ctx.inner.mailbox.try_lock() {
            Ok(mb) => mb,
            Err(_) => self.ctx.inner.mailbox.lock().await,
        };
        match self.ctx.step(&mut mb).await? {
            Step::Item(p) => Ok(Some(p)),
            Step::Stopped => Ok(None),
            Step::Ended => self.end_of_stream().map(|()| None),
        }
    }

    /// `Some` when the stream already ended (peer closed, or the outcome
    /// is in): what `recv` returns without waiting.
    fn ended_already(&self) -> Option<Result<()>> {
        let st = self.ctx.state();
        if st.final_.is_some() {
            drop(st);
            return Some(self.end_of_stream());
        }
        if st.peer_stopped { Some(Ok(())) } else { None }
    }

    /// How the arrival of the outcome ends a stream: quietly for a return
    /// or an absorbed cancel, with an error otherwise.
    fn end_of_stream(&self) -> Result<()> {
        let f = self.ctx.state().final_.clone();
        match f {
            Some(Final::Returned(_)) | None => Ok(()),
            Some(Final::Cancelled { canceller, message }) => {
                if self.ctx.absorbs(&canceller) {
                    self.ctx.state().cancelled_caught = true;
                    Ok(())
                } else {
                    Err(Error::ContextCancelled { canceller, message })
                }
            }
            Some(Final::Failed(e)) => Err((*e).clone()),
            Some(Final::Lost(reason)) => {
                Err(Error::TransportClosed { peer: self.ctx.inner.chan.peer.to_string(), reason })
            }
        }
    }

    /// Close this end: the peer's `recv` gives `None` and its `send`s fail.
    /// Also done when the `open_stream` scope ends.
    ///
    /// ```no_run
    /// #[furrow::context]
    /// async fn export(ctx: furrow::Context, rows: Vec<String>) -> furrow::Result<u64> {
    ///     ctx.started(&rows.len()).await?;
    ///     ctx.open_stream(async |s| {
    ///         for r in &rows {
    ///             s.send(r).await?;
    ///         }
    ///         // Let the opener's `recv` loop end now, not after the checksum.
    ///         s.close().await?;
    ///         Ok(rows.iter().map(|r| r.len() as u64).sum())
    ///     })
    ///     .await
    /// }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel safe (only queues a message).
    pub async fn close(&self) -> Result<()> {
        let already = self.ctx.inner.local_stopped.swap(true, std::sync::atomic::Ordering::AcqRel)
            || self.ctx.state().final_.is_some();
        if already {
            return Ok(());
        }
        match self.ctx.inner.chan.send(&Msg::Stop { cid: self.ctx.inner.cid }) {
            Err(Error::TransportClosed { .. }) => Ok(()),
            other => other,
        }
    }

    /// A further local receiver of every message of this stream (fan-out).
    /// Each subscriber, and this stream's own `recv`, sees every message
    /// from the first `recv` of any of them on (so receivers subscribed up
    /// front see everything; one subscribed later sees what comes after);
    /// the slowest one bounds the others (and, through credit, the sender).
    ///
    /// The first subscription starts a pump task that reads the stream for
    /// every receiver; it is stopped when the `open_stream` scope ends, and
    /// also when the stream is dropped (the scope's future dropped), so a
    /// dropped opener's context is cancelled as without fan-out (rule 5a).
    ///
    /// ```no_run
    /// # async fn demo(ctx: &furrow::Context) -> furrow::Result<()> {
    /// let (count, ()) = ctx
    ///     .open_stream(async |s| {
    ///         let mut audit = s.subscribe(); // subscribe before the first `recv`
    ///         let count = async {
    ///             let mut n = 0;
    ///             while s.recv::<String>().await?.is_some() {
    ///                 n += 1;
    ///             }
    ///             furrow::Ok(n)
    ///         };
    ///         let log = async {
    ///             while let Some(event) = audit.recv::<String>().await? {
    ///                 println!("audit: {event}");
    ///             }
    ///             Ok(())
    ///         };
    ///         tokio::try_join!(count, log)
    ///     })
    ///     .await?;
    /// # let _ = count; Ok(()) }
    /// ```
    pub fn subscribe(&self) -> Subscriber {
        let mut hub = crate::sync::lock(&self.hub);
        self.fanned.store(true, std::sync::atomic::Ordering::Release);
        let (tx, rx) = mpsc::channel(self.window);
        match hub.as_mut() {
            Some(h) => {
                crate::sync::lock(&h.subs).push(tx);
                Subscriber { rx, go: h.go.clone() }
            }
            None => {
                let (ptx, prx) = mpsc::channel(self.window);
                match self.primary.try_lock() {
                    Ok(mut p) => *p = Some(prx),
                    // A `recv` is in progress on the mailbox itself; it
                    // keeps reading there and the hub starts with the
                    // subscribers only.
                    Err(_) => drop(prx),
                }
                let subs = Arc::new(Mutex::new(vec![ptx, tx]));
                let go = Arc::new(Go::default());
                // Under the context's span, like the stream it pumps.
                let pump = pump(self.ctx.clone(), subs.clone(), go.clone());
                let pump = tokio::spawn(tracing::Instrument::in_current_span(pump)).abort_handle();
                *hub = Some(Hub { subs, pump, go: go.clone() });
                Subscriber { rx, go }
            }
        }
    }

    /// The messages of this stream, decoded as `T`, as a
    /// `futures::Stream`. It ends after the first error.
    ///
    /// ```no_run
    /// use futures::TryStreamExt;
    /// # async fn demo(s: &furrow::MsgStream) -> furrow::Result<()> {
    /// let evens: Vec<u64> = s.stream::<u64>().try_filter(|n| std::future::ready(n % 2 == 0)).try_collect().await?;
    /// # let _ = evens; Ok(()) }
    /// ```
    pub fn stream<T: DeserializeOwned + 'static>(&self) -> impl Stream<Item = Result<T>> + '_ {
        futures::stream::unfold(Some(self), |s| async move {
            let s = s?;
            match s.recv::<T>().await {
                Ok(Some(v)) => Some((Ok(v), Some(s))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }

    /// This stream's sending side as a `futures::Sink` of `T`.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// # async fn demo(s: &furrow::MsgStream) -> furrow::Result<()> {
    /// // Send 0..100, with the stream's backpressure.
    /// futures::stream::iter((0..100u64).map(Ok)).forward(s.sink()).await?;
    /// # Ok(()) }
    /// ```
    pub fn sink<T: Serialize + 'static>(&self) -> impl Sink<T, Error = Error> + '_ {
        futures::sink::unfold(self, |s, v: T| async move {
            s.send(&v).await?;
            Ok(s)
        })
    }

    /// End of the `open_stream` scope: stop the fan-out pump (which gives
    /// the mailbox back to the context), then, if the scope ended well,
    /// close this end.
    pub(crate) async fn finish(&self, clean: bool) {
        if let Some(h) = crate::sync::lock(&self.hub).take() {
            h.pump.abort();
        }
        if clean {
            let _ = self.close().await;
        }
    }
}

/// Reads the context's mailbox and hands every message to every
/// subscriber, waiting for the slowest.
async fn pump(ctx: Context<Either>, subs: Arc<Mutex<Vec<mpsc::Sender<HubItem>>>>, go: Arc<Go>) {
    go.wait().await;
    let mut mb = ctx.inner.mailbox.clone().lock_owned().await;
    loop {
        let item = match ctx.step(&mut mb).await {
            Ok(Step::Item(p)) => HubItem::Item(p),
            Ok(Step::Stopped) => HubItem::End(None),
            Ok(Step::Ended) => {
                let f = ctx.state().final_.clone();
                let quiet = match &f {
                    Some(Final::Returned(_)) | None => true,
                    Some(Final::Cancelled { canceller, .. }) => ctx.absorbs(canceller),
                    _ => false,
                };
                if quiet {
                    HubItem::End(None)
                } else {
                    let e = ctx.result_from_final::<serde::de::IgnoredAny>().err();
                    HubItem::End(e.map(Arc::new))
                }
            }
            Err(e) => HubItem::End(Some(Arc::new(e))),
        };
        let end = matches!(item, HubItem::End(_));
        let targets: Vec<mpsc::Sender<HubItem>> = crate::sync::lock(&subs).clone();
        for t in targets {
            // A dropped subscriber is simply skipped.
            let _ = t.send(item.clone()).await;
        }
        crate::sync::lock(&subs).retain(|t| !t.is_closed());
        if end {
            return;
        }
    }
}

/// An extra receiver of a stream (see [`MsgStream::subscribe`]). It can be
/// moved to another task.
///
/// ```no_run
/// # async fn demo(ctx: &furrow::Context) -> furrow::Result<()> {
/// ctx.open_stream(async |s| {
///     let mut tap = s.subscribe();
///     let logger = tokio::spawn(async move {
///         while let Ok(Some(line)) = tap.recv::<String>().await {
///             eprintln!("{line}");
///         }
///     });
///     while let Some(line) = s.recv::<String>().await? {
///         # let _ = line;
///     }
///     let _ = logger.await;
///     Ok(())
/// })
/// .await
/// # }
/// ```
#[derive(Debug)]
pub struct Subscriber {
    rx: mpsc::Receiver<HubItem>,
    go: Arc<Go>,
}

impl std::fmt::Debug for HubItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HubItem::Item(p) => write!(f, "Item({p:?})"),
            HubItem::End(e) => write!(f, "End({e:?})"),
        }
    }
}

impl Subscriber {
    /// The next message; `Ok(None)` when the stream ended.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        self.go.start();
        match self.rx.recv().await {
            Some(HubItem::Item(p)) => Ok(Some(p.decode()?)),
            Some(HubItem::End(None)) | None => Ok(None),
            Some(HubItem::End(Some(e))) => Err((*e).clone()),
        }
    }
}
