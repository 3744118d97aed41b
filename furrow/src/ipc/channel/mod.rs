//! One connection to one peer, shared by many dialogs: the handle the
//! runtime holds (open and accept dialogs, send, close). The session in
//! furrow-proto decides; `route.rs` is the reader task that feeds it,
//! `writer.rs` the writer task that drains what it accepts.

mod route;
mod writer;

use route::reader_task;
use writer::{Backlog, Lane, LaneBuf, Out, writer_task};

use super::Limits;
use super::flow::{DialogEnd, Flow};
use super::reader::FrameReader;
use super::transport::BoxWrite;
use bytes::BytesMut;
use furrow_proto::codec;
use furrow_proto::dialog::Role;
use furrow_proto::session::{Sent, SentYield, Session, Side};
use furrow_proto::{Aid, Cid, ErrorKind, ErrorMsg, Msg, MsgKind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// What a dialog's mailbox receives.
///
/// Small on purpose (about 40 bytes): the stream hot path moves one per
/// message through the mailbox's queue, and a `Msg` is some 250 bytes
/// (moving it was 8 % of a receiver's CPU). A `Yield` travels as its
/// payload, and a run of them read in one burst as one entry (see
/// `route::Run`); every other message, rare by comparison, in a box.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A stream message's payload, already checked against the dialog's
    /// state and window.
    Yield(furrow_proto::Payload),
    /// Consecutive stream messages of the dialog, in the wire's order,
    /// each checked as a `Yield` is.
    Yields(Vec<furrow_proto::Payload>),
    /// Consecutive `Yield` frames of the dialog as they came off the wire
    /// (`codec::YieldFrames` reads them), checked together.
    Frames(bytes::Bytes),
    /// Any other message for the dialog, already checked against its state.
    Msg(Box<Msg>),
    /// The peer sent something that does not fit the dialog; it is over.
    Violation(String),
    /// More `Yield`s arrived than the receive window holds (in messages
    /// or bytes); later ones are dropped.
    Overrun(furrow_proto::flow::Window),
}

/// The runtime's side of a channel: what to do with what is not a reply to
/// a dialog this side opened.
pub(crate) trait Dispatch: Send + Sync + 'static {
    /// A `Start` arrived: run the function (the callee side of a dialog).
    fn on_start(
        &self,
        chan: &Arc<Channel>,
        cid: Cid,
        ns: String,
        func: String,
        kwargs: furrow_proto::Payload,
        uid: Aid,
    );
    /// The channel is closed for good (reader saw EOF, an error, or a
    /// frame it could not accept).
    fn on_closed(&self, chan: &Arc<Channel>);
}

/// Why a `Yield` was not queued ([`Channel::send_yield`]).
#[derive(Debug)]
pub(crate) enum YieldRefused {
    /// The peer stopped its end, or the dialog is over.
    Blocked(super::flow::Blocked),
    /// The channel is closed, or (a bug) the dialog's state refuses it.
    Failed(crate::Error),
    /// The value cannot be sent at all (it does not encode, or its frame
    /// is over the limit): nothing was queued, the stream is as it was.
    Invalid(crate::Error),
}

/// What became of a `Yield` offered without waiting
/// ([`Channel::offer_yield`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Queued, its credit spent (or dropped as late traffic for a dialog
    /// that is over: as good as sent).
    Sent,
    /// The dialog's credit does not allow it now: nothing queued or spent.
    /// `size`: the value's encoded length, so a frame made for it while it
    /// waits is allocated at its size at once.
    NoCredit { size: usize },
    /// The value holds a large `furrow::Bytes`: it goes in a frame of its
    /// own ([`Channel::yield_frame`]), sent from the value's own buffer
    /// rather than copied into the lane. Nothing queued or spent.
    OwnFrame,
}

/// A dialog's handle in the channel's session: where its messages go.
struct Slot {
    tx: mpsc::UnboundedSender<Inbound>,
    flow: Arc<Flow>,
    /// The function it calls (`ns::func`), and when it was registered:
    /// what a dump says of it.
    func: Arc<str>,
    since: std::time::Instant,
    /// A dialog this side opened holds one of the channel's opening
    /// permits until it leaves the session (see `Channel::admit`).
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// A fresh dialog handle and the mailbox and flow state it feeds.
fn new_slot(
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    func: &str,
) -> (Slot, mpsc::UnboundedReceiver<Inbound>, Arc<Flow>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let flow = Arc::new(Flow::default());
    let slot = Slot { tx, flow: flow.clone(), func: func.into(), since: std::time::Instant::now(), _permit: permit };
    (slot, rx, flow)
}

impl Drop for Slot {
    /// A dialog leaving the session is over: release senders waiting for
    /// credit. (Takes no lock.)
    fn drop(&mut self) {
        self.flow.end();
    }
}

/// What went through a channel, counted by its reader and writer tasks
/// (each counter has one writer: relaxed atomics, read by `stats`).
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    pub(crate) msgs_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) msgs_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// Writes to the socket that wrote something.
    pub(crate) writes: AtomicU64,
    /// When a frame was last read, and last written (`flow::now_micros`;
    /// 0: never), for dumps: stamped once per read burst and per write.
    pub(crate) last_in: AtomicU64,
    pub(crate) last_out: AtomicU64,
}

impl Traffic {
    /// How long ago `stamp` (a `last_in`/`last_out`) was, if ever.
    fn ago(stamp: &AtomicU64) -> Option<std::time::Duration> {
        let t = stamp.load(Ordering::Relaxed);
        (t != 0).then(|| std::time::Duration::from_micros(super::flow::now_micros().saturating_sub(t)))
    }
}

/// The dialogs open on a channel, by kind and side.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct DialogCounts {
    pub(crate) contexts_opened: usize,
    pub(crate) contexts_served: usize,
    pub(crate) calls_opened: usize,
    pub(crate) calls_served: usize,
    /// The longest any dialog's task here has been parked (on its peer or
    /// on credit).
    pub(crate) longest_wait: std::time::Duration,
}

static NEXT_CHANNEL_ID: AtomicU64 = AtomicU64::new(1);

/// What a channel keeps under one lock: its session, and the data lane
/// (`LaneBuf`: stream data and what must not overtake it). One lock, so a
/// message's verdict and its place on the data lane are one step: the
/// stream hot path takes one lock per send, and nothing the session accepts
/// after a `Yield` can reach the lane before it.
struct Core {
    session: Session<Slot>,
    lane: LaneBuf,
}

impl std::ops::Deref for Core {
    type Target = Session<Slot>;
    fn deref(&self) -> &Session<Slot> {
        &self.session
    }
}

impl std::ops::DerefMut for Core {
    fn deref_mut(&mut self) -> &mut Session<Slot> {
        &mut self.session
    }
}

impl Lane for Channel {
    fn with_lane<R>(&self, f: impl FnOnce(&mut LaneBuf) -> R) -> R {
        f(&mut self.lock_slots().lane)
    }

    fn ready(&self) -> &tokio::sync::Notify {
        &self.lane_ready
    }
}

/// A connection to one peer actor, carrying frames for many dialogs.
pub(crate) struct Channel {
    /// Process-unique id of this channel (for task bookkeeping).
    pub(crate) id: u64,
    /// The actor at the other end.
    pub(crate) peer: Aid,
    /// This actor.
    pub(crate) local: Aid,
    ctrl: mpsc::UnboundedSender<Out>,
    /// The dialogs (furrow-proto's session decides what is legal and where
    /// each message goes; each dialog's handle is its mailbox), and the
    /// data lane. The session is closed under this lock when the channel
    /// closes, and a dialog is registered under it, so no dialog can be
    /// registered after the close and never be woken.
    slots: Mutex<Core>,
    /// Wakes the writer when a frame lands in an empty data lane.
    lane_ready: tokio::sync::Notify,
    /// Permits to open dialogs (see `admit`); closed with the channel.
    opens: Arc<tokio::sync::Semaphore>,
    closed: CancellationToken,
    /// Why the channel closed: set once, by whoever learned it first (the
    /// writer's failed write, the reader's end of stream or error, a
    /// discarding close); shared with the writer task.
    close_reason: Arc<Mutex<String>>,
    /// Cancelled by the writer when a write failed (the peer is gone):
    /// the reader then drains what the peer sent before it went, instead
    /// of stopping as on a local close.
    write_failed: CancellationToken,
    limits: Limits,
    backlog: Arc<Backlog>,
    /// The reader and writer tasks, for `abort`.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// How many of the two tasks have ended (their futures dropped, so
    /// their socket halves closed); `close` waits for 2.
    ended: watch::Sender<u8>,
    /// Messages and bytes in and out.
    pub(crate) traffic: Arc<Traffic>,
}

/// Counts a channel task as ended when its future is dropped, whether it
/// returned or was aborted.
struct Ended(watch::Sender<u8>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n += 1);
    }
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Channel#{}({} -> {})", self.id, self.local, self.peer)
    }
}

impl Channel {
    /// Start the reader and writer tasks of an established (handshaken)
    /// connection. `reader` may already hold bytes read past the handshake.
    ///
    /// Both tasks are spawned on `tracker`, so the actor can wait at
    /// shutdown until every socket it ever opened is closed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        reader: FrameReader,
        write: BoxWrite,
        peer: Aid,
        local: Aid,
        dialer: bool,
        limits: Limits,
        dispatch: Arc<dyn Dispatch>,
        tracker: &TaskTracker,
    ) -> Arc<Channel> {
        let (ctrl, ctrl_rx) = mpsc::unbounded_channel();
        let session = Session::new(if dialer { Side::Dialer } else { Side::Acceptor }, limits.max_dialogs_per_peer)
            .with_peer_bound(limits.peer_max_dialogs);
        // Openers keep within the peer's bound (the semaphore holds no more
        // than its maximum: a larger bound is no bound).
        let opens = session.peer_bound().min(tokio::sync::Semaphore::MAX_PERMITS);
        let chan = Arc::new(Channel {
            id: NEXT_CHANNEL_ID.fetch_add(1, Ordering::Relaxed),
            peer,
            local,
            ctrl,
            slots: Mutex::new(Core { session, lane: LaneBuf::default() }),
            lane_ready: tokio::sync::Notify::new(),
            closed: CancellationToken::new(),
            close_reason: Arc::default(),
            write_failed: CancellationToken::new(),
            opens: Arc::new(tokio::sync::Semaphore::new(opens)),
            limits,
            backlog: Arc::default(),
            tasks: Mutex::new(Vec::new()),
            ended: watch::Sender::new(0),
            traffic: Arc::default(),
        });
        let (ew, er) = (Ended(chan.ended.clone()), Ended(chan.ended.clone()));
        let closed = chan.closed.clone();
        let traffic = chan.traffic.clone();
        let reason = chan.close_reason.clone();
        let write_failed = chan.write_failed.clone();
        let backlog = chan.backlog.clone();
        let lane = chan.clone();
        let w = tracker.spawn(
            async move {
                let _ended = ew;
                writer_task(write, ctrl_rx, &*lane, (closed, write_failed), &reason, (&traffic, &backlog)).await
            }
            .instrument(crate::log::actor_span()),
        );
        let reader_chan = chan.clone();
        let r = tracker.spawn(
            async move {
                let _ended = er;
                reader_task(reader_chan, reader, dispatch).await
            }
            .instrument(crate::log::actor_span()),
        );
        *crate::sync::lock(&chan.tasks) = vec![w.abort_handle(), r.abort_handle()];
        chan
    }

    /// Whether this side dialled the connection.
    pub(crate) fn is_dialer(&self) -> bool {
        // The session's side is the one record of it.
        self.lock_slots().side() == Side::Dialer
    }

    /// A fresh id of this side's for a request nobody waits the answer of
    /// (a fire-and-forget cancel request): its answer is late traffic.
    pub(crate) fn alloc_cid(&self) -> Cid {
        self.lock_slots().unregistered_cid()
    }

    /// Wait until this side may open one more dialog: the peer refuses a
    /// `Start` beyond its bound on open dialogs (`TooManyDialogs`), so an
    /// honest opener keeps within it, as an HTTP/2 client keeps within a
    /// server's concurrent streams. The bound is the one the peer advertised
    /// in its handshake (this actor's own for a peer that did not). The permit is
    /// released when the dialog leaves the session; `None` once the channel
    /// is closed (opening then fails with the closed channel's error).
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is sent or registered before it returns.
    pub(crate) async fn admit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.opens.clone().acquire_owned().await.ok()
    }

    /// Register a dialog this side opens (before sending its `Start`): its
    /// id and mailbox. On a closed channel the mailbox is closed at once, so
    /// the dialog's first `recv` reports it.
    pub(crate) fn open_dialog(
        &self,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        func: &str,
    ) -> (Cid, mpsc::UnboundedReceiver<Inbound>, Arc<Flow>) {
        let (slot, rx, flow) = new_slot(permit, func);
        let mut slots = self.lock_slots();
        let cid = match slots.open(slot) {
            Some(cid) => cid,
            // The slot was dropped (its sender with it).
            None => slots.unregistered_cid(),
        };
        (cid, rx, flow)
    }

    /// Register a dialog the peer opened (a `Start` we accepted). On a
    /// closed channel the mailbox is closed at once.
    pub(crate) fn accept_dialog(&self, cid: Cid, func: &str) -> (mpsc::UnboundedReceiver<Inbound>, Arc<Flow>) {
        let (slot, rx, flow) = new_slot(None, func);
        // Refused only on a closed channel (the mailbox is then closed at
        // once), or for a live cid, which the reader never routes as a
        // `Start`. A refused slot is dropped at once (its Drop takes no lock).
        if !self.lock_slots().accept(cid, slot) && !self.is_closed() {
            tracing::error!(chan = ?self, cid, "bug: dialog {cid} registered twice");
        }
        (rx, flow)
    }

    /// Forget a dialog (its outcome was exchanged, or its opener gave up).
    pub(crate) fn close_dialog(&self, cid: Cid) {
        // Take the slot out under the lock, drop it after.
        let slot = self.lock_slots().close_dialog(cid);
        drop(slot);
    }

    /// The dialogs open now, by kind and side. A dialog whose `StartAck`
    /// has not been exchanged yet counts as a call.
    pub(crate) fn dialog_counts(&self) -> DialogCounts {
        use furrow_proto::dialog::State;
        let mut n = DialogCounts::default();
        for (_, role, state, slot) in self.lock_slots().dialogs() {
            if let Some((_, t)) = slot.flow.parked() {
                n.longest_wait = n.longest_wait.max(t);
            }
            let context = matches!(state, State::Running(furrow_proto::FuncType::Context) | State::Open { .. });
            let field = match (role, context) {
                (Role::Opener, true) => &mut n.contexts_opened,
                (Role::Callee, true) => &mut n.contexts_served,
                (Role::Opener, false) => &mut n.calls_opened,
                (Role::Callee, false) => &mut n.calls_served,
            };
            *field += 1;
        }
        n
    }

    /// What a dump says of this channel and of each dialog on it.
    /// `cancel_of(cid)` says whether a cancel was asked of a dialog this
    /// side serves (the runtime's task table knows; the channel does not).
    /// One short hold of the channel's lock; nothing else is locked.
    pub(crate) fn dump(
        &self,
        cancel_of: impl Fn(Cid) -> Option<(std::time::Duration, Aid)>,
    ) -> (crate::dump::ChannelDump, Vec<crate::dump::DialogDump>) {
        use crate::dump::{CancelAsked, DialogDump, DialogKind, DialogPhase, DialogSide, WaitOn, Waiting};
        use furrow_proto::FuncType;
        use furrow_proto::dialog::State;
        let now = std::time::Instant::now();
        let core = self.lock_slots();
        let mut dialogs = Vec::with_capacity(core.len());
        for v in core.session.inspect() {
            let (phase, functype, (opener_stopped, callee_stopped)) = match v.state {
                State::Idle | State::Starting => (DialogPhase::Starting, None, (false, false)),
                State::Running(t) => (DialogPhase::Running, Some(t), (false, false)),
                State::Open { opener_stopped, callee_stopped } => {
                    (DialogPhase::Streaming, Some(FuncType::Context), (opener_stopped, callee_stopped))
                }
                State::Done => (DialogPhase::Done, None, (false, false)),
            };
            let kind = if v.data.func.starts_with(furrow_proto::RUNTIME_NS)
                && v.data.func[furrow_proto::RUNTIME_NS.len()..].starts_with("::")
            {
                DialogKind::Request
            } else {
                match functype {
                    Some(FuncType::Context) => DialogKind::Context,
                    Some(_) => DialogKind::Call,
                    None => DialogKind::Unknown,
                }
            };
            let side = match v.role {
                Role::Opener => DialogSide::Opener,
                Role::Callee => DialogSide::Callee,
            };
            let flow = &v.data.flow;
            let waiting = flow.parked().map(|(on, for_)| Waiting {
                on: match on {
                    super::flow::Wait::Peer => WaitOn::Peer,
                    super::flow::Wait::Credit => WaitOn::Credit,
                },
                for_,
            });
            let cancel = match side {
                DialogSide::Opener => flow.cancel_asked(),
                DialogSide::Callee => cancel_of(v.cid),
            }
            .map(|(ago, by)| CancelAsked { ago, by });
            dialogs.push(DialogDump {
                channel: self.id,
                peer: self.peer.clone(),
                cid: v.cid,
                side,
                kind,
                func: v.data.func.to_string(),
                age: now.saturating_duration_since(v.data.since),
                phase,
                opener_stopped,
                callee_stopped,
                waiting,
                send_credit: v.credit.msgs(),
                send_outstanding_bytes: v.credit.outstanding_bytes(),
                recv_queued: v.recv.filter(|r| r.is_open()).map(|r| r.held_msgs()),
                recv_queued_bytes: v.recv.map_or(0, |r| r.held_bytes()),
                cancel,
            });
        }
        let chan = crate::dump::ChannelDump {
            id: self.id,
            peer: self.peer.clone(),
            dialer: core.session.side() == Side::Dialer,
            queued_bytes: self.backlog.queued(),
            queued_stream_bytes: core.lane.queued_bytes(),
            dialogs: dialogs.len(),
            msgs_in: self.traffic.msgs_in.load(Ordering::Relaxed),
            msgs_out: self.traffic.msgs_out.load(Ordering::Relaxed),
            reader_paused: self.backlog.paused.load(Ordering::Relaxed),
            last_in: Traffic::ago(&self.traffic.last_in),
            last_out: Traffic::ago(&self.traffic.last_out),
        };
        (chan, dialogs)
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, Core> {
        crate::sync::lock(&self.slots)
    }

    /// Queue a message. Control messages go ahead of stream data (`Yield`).
    /// Never blocks, so it may be called from `Drop`.
    ///
    /// A message for a dialog is checked against the dialog's state first;
    /// when it ends the dialog (an outcome), the dialog is forgotten.
    ///
    /// A message over the frame limit is [`Error::FrameTooLarge`]
    /// (`what` names the message kind; callers say what it carried) and
    /// nothing is queued, so the dialog's state is untouched: the caller
    /// may still send something else in its place (the runtime answers
    /// with an error instead of a `Return` that does not fit).
    ///
    /// [`Error::FrameTooLarge`]: crate::Error::FrameTooLarge
    pub(crate) fn send(&self, msg: &Msg) -> crate::Result<()> {
        // A large payload that ends the message is written after its
        // envelope from its own buffer, not copied into the frame.
        let frame = codec::encode_parts(msg, self.limits.max_frame);
        self.queue_encoded(msg, frame)
    }

    /// [`send`](Self::send) `msg` with `pld` as its payload (`msg`'s own
    /// is empty): written from `pld`'s parts, so a large `furrow::Bytes`
    /// lent to it is not copied (`codec::encode_with_parts`).
    pub(crate) fn send_with_parts(&self, msg: &Msg, pld: &furrow_proto::PayloadParts) -> crate::Result<()> {
        let frame = codec::encode_with_parts(msg, pld, self.limits.max_frame);
        self.queue_encoded(msg, frame)
    }

    /// Queue `msg` encoded as `frame` (see [`send`](Self::send)).
    fn queue_encoded(&self, msg: &Msg, frame: Result<codec::Encoded, codec::EncodeError>) -> crate::Result<()> {
        let frame = frame.map_err(|e| match e {
            codec::EncodeError::Frame(codec::FrameError::TooLarge { len, max }) => {
                crate::Error::FrameTooLarge { what: format!("a {} message", msg.kind().as_str()), len, max }
            }
            other => crate::Error::Protocol {
                peer: self.peer.to_string(),
                reason: format!("cannot send {}: {other}", msg.kind().as_str()),
            },
        })?;
        let functype = match msg {
            Msg::StartAck { functype, .. } => Some(*functype),
            _ => None,
        };
        self.enqueue(msg.kind(), msg.cid(), functype, frame)
    }

    /// Encode a `Yield` of `value` on dialog `cid` into a frame of its
    /// own: the frame and its payload's length (what stream credit
    /// counts), for a send that must wait for credit (see
    /// [`send_yield`](Self::send_yield)).
    /// `size_hint`: the value's encoded length if known (room for the
    /// frame is reserved at once: no copies as it grows).
    ///
    /// A `furrow::Bytes` of 64 KiB or more in `value` is not copied: the
    /// frame keeps a reference to it and is written from its buffer
    /// (`codec::encode_yield_gathered`).
    pub(crate) fn yield_frame<T: serde::Serialize + ?Sized>(
        &self,
        cid: Cid,
        value: &T,
        size_hint: usize,
    ) -> crate::Result<(codec::Encoded, u64)> {
        let capacity = size_hint.saturating_add(32).min(self.limits.max_frame + 32);
        let (frame, n) = codec::encode_yield_gathered(cid, value, capacity, self.limits.max_frame)
            .map_err(|e| self.yield_error(e))?;
        Ok((frame, n as u64))
    }

    /// [`yield_frame`](Self::yield_frame) of an already encoded payload.
    pub(crate) fn yield_frame_payload(
        &self,
        cid: Cid,
        pld: &furrow_proto::Payload,
    ) -> crate::Result<(codec::Encoded, u64)> {
        let mut buf = BytesMut::with_capacity(pld.len() + 32);
        let n =
            codec::encode_yield_payload(cid, pld, &mut buf, self.limits.max_frame).map_err(|e| self.yield_error(e))?;
        Ok((codec::Encoded::Whole(buf.freeze()), n as u64))
    }

    /// The stream hot path: encode a `Yield` of `value` on dialog `cid`
    /// straight into the data lane, and let it go if the dialog's credit
    /// allows (the session spends the credit and checks the dialog's state
    /// in one step). Never waits: [`Offer::NoCredit`] (nothing sent, no
    /// credit spent) means the caller must wait for credit, with
    /// [`send_yield`](Self::send_yield).
    ///
    /// Both decisions happen under one lock (the session's, which also
    /// guards the lane: see `Core`), so a `Yield` the session accepted is
    /// in the lane before anything the session accepts after it (a
    /// `Return` of the same dialog cannot overtake it).
    pub(crate) fn offer_yield<T: serde::Serialize + ?Sized>(
        &self,
        cid: Cid,
        value: &T,
        flow: &Flow,
    ) -> Result<Offer, YieldRefused> {
        if let Some(b) = flow.blocked() {
            return Err(YieldRefused::Blocked(b));
        }
        let mut guard = self.lock_slots();
        let core = &mut *guard;
        if core.lane.is_closed() {
            drop(guard);
            return Err(YieldRefused::Failed(self.closed_error()));
        }
        let v = match core.lane.append_value(cid, value, self.limits.max_frame) {
            Ok(Some(v)) => v,
            Ok(None) => return Ok(Offer::OwnFrame),
            Err(e) => {
                drop(guard);
                return Err(YieldRefused::Invalid(self.yield_error(e)));
            }
        };
        match core.session.send_yield(cid, v.appended.pld_len as u64) {
            SentYield::Accept => {
                let wake = core.lane.commit_value(&v);
                drop(guard);
                if wake {
                    self.lane_ready.notify_one();
                }
                Ok(Offer::Sent)
            }
            other => {
                core.lane.undo_value(&v);
                drop(guard);
                self.not_sent(other, v.appended.pld_len)
            }
        }
    }

    /// What a `Yield` the session did not accept becomes (its bytes were
    /// taken back from the lane).
    fn not_sent(&self, verdict: SentYield, size: usize) -> Result<Offer, YieldRefused> {
        match verdict {
            SentYield::Accept | SentYield::NoCredit => Ok(Offer::NoCredit { size }),
            // The dialog left the session (its outcome passed, or the
            // channel closed) a moment before its flow says so: late.
            SentYield::Drop => Ok(Offer::Sent),
            SentYield::Refused(v) => {
                tracing::error!(chan = ?self, "bug: sending out of order: {v}");
                Err(YieldRefused::Failed(crate::Error::Protocol { peer: self.peer.to_string(), reason: v }))
            }
        }
    }

    /// Offer the whole `Yield` frame `frame` (of `size` payload bytes):
    /// queued, and taken out of `frame`, if the dialog's credit allows;
    /// see [`offer_yield`](Self::offer_yield). A large frame is moved into
    /// the lane, not copied (`LaneBuf::push_frame`).
    fn offer_frame(&self, cid: Cid, frame: &mut Option<codec::Encoded>, size: u64) -> Result<Offer, YieldRefused> {
        let mut guard = self.lock_slots();
        let core = &mut *guard;
        if core.lane.is_closed() {
            drop(guard);
            return Err(YieldRefused::Failed(self.closed_error()));
        }
        // The credit first: the frame is whole already, so nothing needs
        // taking back when there is none. Both in one critical section, as
        // for `offer_yield`.
        match core.session.send_yield(cid, size) {
            SentYield::Accept => {
                let pushed = frame.take().and_then(|f| core.lane.push_frame(f));
                drop(guard);
                if pushed == Some(true) {
                    self.lane_ready.notify_one();
                }
                Ok(Offer::Sent)
            }
            other => {
                drop(guard);
                self.not_sent(other, size as usize)
            }
        }
    }

    /// Queue a `Yield` frame made by [`yield_frame`](Self::yield_frame),
    /// of `size` payload bytes, on dialog `cid` (whose flow signals are
    /// `flow`), once the dialog's credit allows (as
    /// [`offer_yield`](Self::offer_yield) does, waiting for credit).
    ///
    /// # Cancel safety
    /// Cancel safe: credit is spent and the frame queued together, only
    /// when it returns `Ok`; a dropped wait spends and sends nothing.
    pub(crate) async fn send_yield(
        &self,
        cid: Cid,
        frame: codec::Encoded,
        size: u64,
        flow: &Flow,
    ) -> Result<(), YieldRefused> {
        let mut frame = Some(frame);
        loop {
            // Created before looking: `notify_waiters` wakes every
            // `Notified` created before it, polled or not, so a grant that
            // lands between the look and the wait is not missed.
            let woken = flow.woken();
            if let Some(b) = flow.blocked() {
                return Err(YieldRefused::Blocked(b));
            }
            let offered = self.offer_frame(cid, &mut frame, size)?;
            match offered {
                Offer::Sent => return Ok(()),
                Offer::NoCredit { .. } | Offer::OwnFrame => {
                    let _parked = flow.park(super::flow::Wait::Credit);
                    woken.await
                }
            }
        }
    }

    /// Open the receiving side of dialog `cid`'s stream (the session keeps
    /// the window): the first grant to send, and the consumer's half of the
    /// window. `None` once the dialog left the session.
    pub(crate) fn open_stream(
        &self,
        cid: Cid,
        window: furrow_proto::flow::Window,
        overrun_mode: bool,
    ) -> Option<(furrow_proto::flow::Grant, furrow_proto::flow::Acks)> {
        self.lock_slots().open_stream(cid, window, overrun_mode)
    }

    /// The consumer of dialog `cid`'s stream is done with what `r` counts:
    /// release it from the window, and grant it back if that is due.
    pub(crate) fn release(&self, cid: Cid, r: furrow_proto::flow::Release) {
        self.lock_slots().release(cid, r);
        if let Some(g) = r.grant() {
            let _ = self.send(&Msg::Credit { cid, n: g.msgs, bytes: g.bytes });
        }
    }

    fn yield_error(&self, e: codec::EncodeError) -> crate::Error {
        match e {
            codec::EncodeError::Serialize(m) => crate::Error::MsgType(furrow_proto::PayloadError::Encode(m)),
            codec::EncodeError::Frame(codec::FrameError::TooLarge { len, max }) => {
                crate::Error::FrameTooLarge { what: "a stream message".into(), len, max }
            }
            other => {
                crate::Error::Protocol { peer: self.peer.to_string(), reason: format!("cannot send Yield: {other}") }
            }
        }
    }

    fn enqueue(
        &self,
        kind: MsgKind,
        cid: Option<Cid>,
        functype: Option<furrow_proto::FuncType>,
        frame: codec::Encoded,
    ) -> crate::Result<()> {
        // Which lane, and whether the message fits its dialog, is the
        // session's to say (stream data and what must not overtake it on
        // the data lane; everything else on the control lane, never behind
        // data). `Start` was accounted for by `open_dialog`, and a message
        // with no dialog (`Ping`, `Pong`, a channel-level `Error`) takes the
        // control lane.
        // Whether it is an answer the peer is owed (see `Backlog`) is the
        // session's to say too.
        let (mut data_lane, mut owed) = (false, cid.is_none() && furrow_proto::session::owed(kind, true, false));
        // A dialog that is over: its slot, dropped outside the lock.
        let mut last = None;
        let mut guard = None;
        if let Some(cid) = cid.filter(|_| kind != MsgKind::Start) {
            let mut core = self.lock_slots();
            match core.on_send(cid, kind, functype) {
                Sent::Accept { data_lane: d, owed: o } => (data_lane, owed) = (d, o),
                Sent::Last { data_lane: d, owed: o, data } => {
                    (data_lane, owed) = (d, o);
                    last = Some(data);
                }
                Sent::Drop => return Ok(()),
                Sent::Refused(v) => {
                    drop(core);
                    tracing::error!(chan = ?self, "bug: sending out of order: {v}");
                    return Err(crate::Error::Protocol { peer: self.peer.to_string(), reason: v });
                }
            }
            // Kept for the data lane: the verdict and the place on the lane
            // are one step (see `Core`).
            guard = Some(core);
        }
        let len = frame.len();
        if owed {
            self.backlog.add(Backlog::cost(len));
        }
        let sent = if data_lane {
            let mut core = match guard {
                Some(core) => core,
                None => self.lock_slots(),
            };
            // A large frame in parts stays in its parts (see `push_frame`).
            let pushed = core.lane.push_frame(frame);
            drop(core);
            if pushed == Some(true) {
                self.lane_ready.notify_one();
            }
            pushed.is_some()
        } else {
            drop(guard);
            self.ctrl.send(Out::Frame(frame, owed)).is_ok()
        };
        drop(last);
        if owed && !sent {
            self.backlog.done(Backlog::cost(len));
        }
        // Queued is as good as sent: if the writer dies before writing it,
        // the dialog learns it from its mailbox (closed), not from here.
        // (Checking `closed` after queueing would race with a peer that
        // answers and hangs up before this line runs.)
        if sent { Ok(()) } else { Err(self.closed_error()) }
    }

    /// The error dialogs on this channel end with once it is closed.
    pub(crate) fn closed_error(&self) -> crate::Error {
        let reason = crate::sync::lock(&self.close_reason).clone();
        crate::Error::TransportClosed { peer: self.peer.to_string(), reason }
    }

    /// True once the channel is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Resolves when the channel is closed.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// Flush what is queued, close the connection (the peer sees end of
    /// stream), and wait until the socket is released: both the writer and
    /// the reader task have ended.
    ///
    /// # Cancel safety
    /// Cancel safe: the close request is queued before the first await, and
    /// the tasks end on their own; a dropped `close` only stops waiting.
    pub(crate) async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.ctrl.send(Out::Close(Some(tx))).is_ok() {
            // The flush is bounded: a peer that stopped reading (its socket
            // buffer full) must not hold a close forever.
            if tokio::time::timeout(std::time::Duration::from_secs(2), rx).await.is_err() {
                tracing::warn!(chan = ?self, "flush on close took over 2 s: dropping what is queued");
                self.abort();
            }
        }
        // The writer cancels `closed` when done; the reader stops on it.
        self.closed.cancel();
        if tokio::time::timeout(std::time::Duration::from_secs(2), self.wait_ended()).await.is_err() {
            let ended = *self.ended.borrow();
            tracing::error!(chan = ?self, ended, "bug: channel tasks still running 2 s after close: aborting them");
            self.abort();
            self.wait_ended().await;
        }
    }

    /// Close without waiting, from `Drop`: the writer flushes what is
    /// queued, shuts the socket down and marks the channel closed, which
    /// stops the reader. Never blocks (the queue is unbounded).
    pub(crate) fn close_soon(&self) {
        let _ = self.ctrl.send(Out::Close(None));
    }

    /// Wait until both tasks have ended (their socket halves dropped).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn wait_ended(&self) {
        let mut rx = self.ended.subscribe();
        let _ = rx.wait_for(|n| *n >= 2).await;
    }

    /// Close without flushing, for a peer known to be gone (a reaped
    /// child): what is queued would never be read. The reader stops as on
    /// any close (so waiting dialogs learn the channel closed, and the
    /// runtime forgets it); the writer, whatever it waits on, is aborted.
    ///
    /// # Cancel safety
    /// Cancel safe: the close is done before the first await; a dropped
    /// call only stops waiting for the tasks to end.
    ///
    /// `reason` is what dialogs still waiting are told, unless the reader
    /// already learned why the channel closed.
    pub(crate) async fn close_discarding(&self, reason: &str) {
        set_reason(&self.close_reason, reason.to_owned());
        self.closed.cancel();
        if let Some(writer) = crate::sync::lock(&self.tasks).first() {
            writer.abort();
        }
        if tokio::time::timeout(std::time::Duration::from_secs(2), self.wait_ended()).await.is_err() {
            tracing::error!(chan = ?self, "bug: channel tasks still running 2 s after a discarding close");
            self.abort();
        }
    }

    /// Stop both tasks now (a writer blocked on a peer that does not read
    /// would otherwise never end). Queued frames are lost.
    pub(crate) fn abort(&self) {
        self.closed.cancel();
        for t in crate::sync::lock(&self.tasks).iter() {
            t.abort();
        }
    }

    fn mark_closed(&self, reason: String) {
        set_reason(&self.close_reason, reason);
        // Marked closed *before* any dialog is woken: whoever learns of the
        // loss through a dialog (a call failing) then finds the channel
        // closed, which is how a nursery tells a child that died before its
        // body returned from one its teardown ended (docs/design.md,
        // "Supervision").
        self.closed.cancel();
        // Dropping every mailbox sender wakes every waiting dialog with
        // "closed" (their `recv` returns `None`). The flag is set under the
        // same lock, so no dialog can slip in afterwards.
        let slots = self.lock_slots().close();
        // Openers waiting for a permit give up (their open fails closed).
        self.opens.close();
        // Every dialog still open lost its peer (a dialog whose outcome is
        // in has left the session already, so its record stays).
        for slot in &slots {
            slot.flow.record_end(DialogEnd::Lost);
        }
        drop(slots);
        let _ = self.ctrl.send(Out::Close(None));
    }

    /// Tell the peer it sent something wrong (never in answer to an `Error`,
    /// so two broken peers cannot ping-pong).
    pub(crate) fn protocol_error(&self, cid: Option<Cid>, mut reason: String) {
        // The reason may quote the peer (an unknown `msg_type` of any
        // length): cut it so the reply always fits the frame limit.
        if reason.len() > 1024 {
            let mut end = 1024;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
            reason.push_str("… [cut]");
        }
        tracing::warn!(chan = ?self, "protocol error: {reason}");
        self.send_error(cid, ErrorKind::ProtocolError, reason);
    }

    /// Refuse the `Start` of dialog `cid` (no dialog is registered).
    fn refuse(&self, cid: Cid, kind: ErrorKind, reason: String) {
        tracing::debug!(chan = ?self, cid, "refused: {reason}");
        self.send_error(Some(cid), kind, reason);
    }

    fn send_error(&self, cid: Option<Cid>, kind: ErrorKind, reason: String) {
        let err = ErrorMsg { cid, ..ErrorMsg::new(self.local.clone(), kind, reason) };
        let _ = self.send(&err.into());
    }
}

/// What a channel's dialogs are told when the peer went away: one wording
/// however this side learned it (end of stream, a reset, a broken pipe),
/// with the detail in parentheses.
pub(crate) const PEER_CLOSED: &str = "peer closed the connection";

/// Why a channel closed, unless a reason is already recorded: the first
/// side to learn it wins (a writer's broken pipe makes the reader stop
/// with "closed locally", which must not replace it).
fn set_reason(slot: &Mutex<String>, reason: String) {
    let mut r = crate::sync::lock(slot);
    if r.is_empty() {
        *r = reason;
    }
}

/// The reason for an I/O error that means the peer is gone (its socket
/// closed under a read or a write), or `None` for any other failure.
pub(crate) fn peer_gone(e: &std::io::Error) -> Option<String> {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    matches!(e.kind(), BrokenPipe | ConnectionReset | ConnectionAborted)
        .then(|| format!("{PEER_CLOSED} ({})", e.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::transport::BoxRead;
    use std::pin::Pin;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

    /// Counts `poll_write` calls that wrote something.
    struct CountingWriter<W> {
        inner: W,
        writes: Arc<AtomicUsize>,
    }

    impl<W: AsyncWrite + Unpin> AsyncWrite for CountingWriter<W> {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<std::io::Result<usize>> {
            let r = Pin::new(&mut self.inner).poll_write(cx, b);
            if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
            r
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    struct NoDispatch;
    impl Dispatch for NoDispatch {
        fn on_start(&self, _: &Arc<Channel>, _: Cid, _: String, _: String, _: furrow_proto::Payload, _: Aid) {}
        fn on_closed(&self, _: &Arc<Channel>) {}
    }

    struct Never;
    impl AsyncRead for Never {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
            Poll::Pending
        }
    }

    /// Frames queued while the writer is busy go out in a few syscalls, in
    /// order, control before data.
    #[tokio::test(flavor = "current_thread")]
    async fn writer_coalesces_and_puts_control_first() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let w = CountingWriter { inner: a, writes: writes.clone() };
        let tracker = TaskTracker::new();
        let chan = Channel::start(
            FrameReader::new(Box::new(Never), 1 << 20),
            Box::new(w),
            Aid::new("peer", 1),
            Aid::new("me", 2),
            true,
            Limits { max_frame: 1 << 20, ..Limits::default() },
            Arc::new(NoDispatch),
            &tracker,
        );
        // The writer task cannot run until this task yields: everything
        // below is queued first.
        let pld = furrow_proto::Payload::encode(&0u8).unwrap();
        // A context of ours whose stream is open (as if the peer had
        // acknowledged and started it), so its `Yield`s are legal.
        let (cid, _rx, _flow) = chan.open_dialog(None, "test");
        {
            let mut slots = chan.lock_slots();
            let _ = slots.on_recv(&Msg::StartAck { cid, functype: furrow_proto::FuncType::Context });
            let _ = slots.on_recv(&Msg::Started { cid, pld: pld.clone() });
        }
        for i in 0..500 {
            chan.send(&Msg::Yield { cid, pld: pld.clone() }).unwrap();
            chan.send(&Msg::Ping { seq: i }).unwrap();
        }
        chan.close().await;
        let n = writes.load(Ordering::Relaxed);
        assert!(n <= 4, "1000 frames took {n} writes");
        // Control frames (Ping) all come before stream data (Yield).
        let mut bytes = Vec::new();
        b.read_to_end(&mut bytes).await.unwrap();
        let mut buf = BytesMut::from(&bytes[..]);
        let mut dec = codec::FrameDecoder::default();
        let mut kinds = Vec::new();
        while let Some(f) = dec.decode(&mut buf).unwrap() {
            kinds.push(codec::decode_msg(f).unwrap().kind());
        }
        assert_eq!(kinds.len(), 1000);
        assert!(kinds[..500].iter().all(|k| *k == MsgKind::Ping));
        assert!(kinds[500..].iter().all(|k| *k == MsgKind::Yield));
    }

    fn start_on(read: BoxRead, write: BoxWrite, tracker: &TaskTracker) -> Arc<Channel> {
        Channel::start(
            FrameReader::new(read, 1 << 20),
            write,
            Aid::new("peer", 1),
            Aid::new("me", 2),
            true,
            Limits { max_frame: 1 << 20, ..Limits::default() },
            Arc::new(NoDispatch),
            tracker,
        )
    }

    fn reason_of(chan: &Channel) -> String {
        match chan.closed_error() {
            crate::Error::TransportClosed { reason, .. } => reason,
            other => panic!("{other:?}"),
        }
    }

    /// Reads nothing until `delay` has passed, then reads `inner`: the
    /// writer's failure comes first, whatever the scheduler does.
    struct Late<R> {
        delay: Pin<Box<tokio::time::Sleep>>,
        inner: R,
    }
    impl<R: AsyncRead + Unpin> AsyncRead for Late<R> {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, b: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
            if self.delay.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            Pin::new(&mut self.inner).poll_read(cx, b)
        }
    }

    /// A peer that answered and died: our write to it fails before we read
    /// its answer. The answer still reaches its dialog (before, the reader
    /// stopped as soon as the writer closed the channel, and a dying
    /// callee's last `Return` or `Error` became "transport closed").
    #[tokio::test(flavor = "current_thread")]
    async fn what_a_peer_sent_before_it_went_is_read_after_a_failed_write() {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let (_r, theirs_w) = theirs.into_split();
        let mut theirs_w: BoxWrite = Box::new(theirs_w);
        let ack = Msg::StartAck { cid: 1, functype: furrow_proto::FuncType::Asyncfunc };
        let ret = Msg::Return { cid: 1, pld: furrow_proto::Payload::encode(&7u32).unwrap() };
        crate::ipc::write_msg(&mut theirs_w, &ack, 1 << 20).await.unwrap();
        crate::ipc::write_msg(&mut theirs_w, &ret, 1 << 20).await.unwrap();
        drop(theirs_w);
        drop(_r);
        let (read, write) = ours.into_split();
        let late = Late { delay: Box::pin(tokio::time::sleep(std::time::Duration::from_millis(100))), inner: read };
        let tracker = TaskTracker::new();
        let chan = start_on(Box::new(late), Box::new(write), &tracker);
        let (cid, mut mailbox, _flow) = chan.open_dialog(None, "test");
        assert_eq!(cid, 1, "the dialler's first dialog");
        // Anything that must be written (a Stop of an unknown dialog would
        // be dropped by the session).
        chan.send(&Msg::Ping { seq: 1 }).unwrap();
        chan.closed().await;
        assert!(chan.write_failed.is_cancelled(), "the write to the gone peer failed first");
        let mut got = Vec::new();
        while let Some(inbound) = mailbox.recv().await {
            if let Inbound::Msg(m) = inbound {
                got.push(m.kind());
            }
        }
        assert_eq!(got, [MsgKind::StartAck, MsgKind::Return], "the answer is delivered");
        chan.wait_ended().await;
        assert_eq!(reason_of(&chan), "peer closed the connection (broken pipe)");
    }

    /// A write that meets a peer's closed socket closes the channel saying
    /// so; the reader, stopping because the channel closed, must not
    /// replace that with "closed locally". (A reader that never sees the
    /// end of stream makes the writer the only one to learn it.)
    #[tokio::test(flavor = "current_thread")]
    async fn a_write_to_a_gone_peer_is_reported_as_the_peer_closing() {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        drop(theirs);
        let (_read, write) = ours.into_split();
        let tracker = TaskTracker::new();
        let chan = start_on(Box::new(Never), Box::new(write), &tracker);
        chan.send(&Msg::Stop { cid: 1 }).unwrap();
        chan.closed().await;
        chan.wait_ended().await;
        assert_eq!(reason_of(&chan), "peer closed the connection (broken pipe)");
    }

    /// The end of stream, and a close this side asked for, each say what
    /// happened.
    #[tokio::test(flavor = "current_thread")]
    async fn end_of_stream_and_local_close_are_told_apart() {
        let tracker = TaskTracker::new();
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let (read, write) = ours.into_split();
        let chan = start_on(Box::new(read), Box::new(write), &tracker);
        drop(theirs);
        chan.closed().await;
        chan.wait_ended().await;
        assert_eq!(reason_of(&chan), "peer closed the connection");

        let (ours, _theirs) = tokio::net::UnixStream::pair().unwrap();
        let (read, write) = ours.into_split();
        let chan = start_on(Box::new(read), Box::new(write), &tracker);
        chan.close().await;
        assert_eq!(reason_of(&chan), "closed locally");
    }
}
