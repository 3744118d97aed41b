//! One connection to one peer, shared by many dialogs.

use super::Limits;
use super::flow::{DialogEnd, Flow};
use super::reader::{FrameReader, ReadError};
use super::transport::BoxWrite;
use bytes::{Bytes, BytesMut};
use furrow_proto::codec;
use furrow_proto::dialog::Role;
use furrow_proto::flow::Admit;
use furrow_proto::keepalive::{Action, Keepalive};
use furrow_proto::session::{Route, Sent, Session, Side};
use furrow_proto::{Aid, Cid, ErrorMsg, Msg, MsgKind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// What a dialog's mailbox receives.
// `Msg` is moved once per message; boxing it would cost an allocation per
// message to save a memcpy of a few hundred bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A message for the dialog, already checked against its state.
    Msg(Msg),
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

/// A dialog's handle in the channel's session: where its messages go.
struct Slot {
    tx: mpsc::UnboundedSender<Inbound>,
    flow: Arc<Flow>,
    /// A dialog this side opened holds one of the channel's opening
    /// permits until it leaves the session (see `Channel::admit`).
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// A fresh dialog handle and the mailbox and flow state it feeds.
fn new_slot(permit: Option<tokio::sync::OwnedSemaphorePermit>) -> (Slot, mpsc::UnboundedReceiver<Inbound>, Arc<Flow>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let flow = Arc::new(Flow::default());
    (Slot { tx, flow: flow.clone(), _permit: permit }, rx, flow)
}

impl Drop for Slot {
    /// A dialog leaving the session is over: release senders waiting for
    /// credit. (Takes no lock.)
    fn drop(&mut self) {
        self.flow.end();
    }
}

/// Answers owed to the peer, queued for the writer and not written yet.
/// The reader stops reading from a peer while too much waits for it (a peer
/// that sends requests and reads no answers), and the writer wakes it as it
/// drains.
///
/// Only what the peer's own requests caused counts: acks, results, errors
/// and refusals of dialogs it opened, and `Pong`s. Stream data is bounded
/// by the credit the peer granted, and our own requests are ours: counting
/// either would let two actors streaming to (or calling) each other both
/// stop reading at once and deadlock.
#[derive(Debug, Default)]
struct Backlog {
    queued: AtomicUsize,
    /// Bytes written so far: a paused reader tells a slow peer from one
    /// that reads nothing by whether this moves.
    written: AtomicU64,
    /// Set while the reader is paused, so the writer notifies only then.
    paused: AtomicBool,
    /// The reader was paused at least once (a peer that did not read).
    was_paused: AtomicBool,
    drained: Notify,
}

impl Backlog {
    /// What a queued frame of `len` bytes costs in memory: its bytes plus
    /// its allocation and queue node, so that the bound is on memory, not
    /// only on wire bytes (a flood of small answers costs several times
    /// their size).
    fn cost(len: usize) -> usize {
        len + 128
    }

    fn add(&self, n: usize) {
        self.queued.fetch_add(n, Ordering::SeqCst);
    }

    /// `n` bytes were written (or dropped).
    fn done(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::SeqCst);
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        // SeqCst pairs with the reader's store of `paused` then load of
        // `queued`: either the reader sees this decrement, or this load
        // sees it paused and wakes it. No wake-up is lost.
        if self.paused.load(Ordering::SeqCst) {
            self.drained.notify_waiters();
        }
    }

    fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }
}

enum Out {
    /// A frame, and whether it counts towards the backlog (see `Backlog`).
    Frame(Bytes, bool),
    /// Flush what is queued, shut the write half down, then signal.
    Close(Option<oneshot::Sender<()>>),
}

static NEXT_CHANNEL_ID: AtomicU64 = AtomicU64::new(1);

/// What went through a channel, counted by its reader and writer tasks
/// (each counter has one writer: relaxed atomics, read by `stats`).
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    pub(crate) msgs_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) msgs_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
}

/// The dialogs open on a channel, by kind and side.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct DialogCounts {
    pub(crate) contexts_opened: usize,
    pub(crate) contexts_served: usize,
    pub(crate) calls_opened: usize,
    pub(crate) calls_served: usize,
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
    data: mpsc::UnboundedSender<Bytes>,
    /// The dialogs (furrow-proto's session decides what is legal and where
    /// each message goes; each dialog's handle is its mailbox). The session
    /// is closed under this lock when the channel closes, and a dialog is
    /// registered under it, so no dialog can be registered after the close
    /// and never be woken.
    slots: Mutex<Session<Slot>>,
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
        let (data, data_rx) = mpsc::unbounded_channel();
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
            data,
            slots: Mutex::new(session),
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
        let w = tracker.spawn(
            async move {
                let _ended = ew;
                writer_task(write, ctrl_rx, data_rx, (closed, write_failed), &reason, (&traffic, &backlog)).await
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
    ) -> (Cid, mpsc::UnboundedReceiver<Inbound>, Arc<Flow>) {
        let (slot, rx, flow) = new_slot(permit);
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
    pub(crate) fn accept_dialog(&self, cid: Cid) -> (mpsc::UnboundedReceiver<Inbound>, Arc<Flow>) {
        let (slot, rx, flow) = new_slot(None);
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
        for (_, role, state, _) in self.lock_slots().dialogs() {
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

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, Session<Slot>> {
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
        let frame = codec::encode_to_bytes(msg, self.limits.max_frame).map_err(|e| match e {
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

    /// Encode a `Yield` of `value` on dialog `cid`, straight into its
    /// frame (the stream hot path); the frame and its payload's length
    /// (what stream credit counts). Queue it with [`send_yield`](Self::send_yield).
    pub(crate) fn yield_frame<T: serde::Serialize + ?Sized>(&self, cid: Cid, value: &T) -> crate::Result<(Bytes, u64)> {
        let mut buf = BytesMut::with_capacity(64);
        let n = codec::encode_yield(cid, value, &mut buf, self.limits.max_frame).map_err(|e| self.yield_error(e))?;
        Ok((buf.freeze(), n as u64))
    }

    /// [`yield_frame`](Self::yield_frame) of an already encoded payload.
    pub(crate) fn yield_frame_payload(&self, cid: Cid, pld: &furrow_proto::Payload) -> crate::Result<(Bytes, u64)> {
        let mut buf = BytesMut::with_capacity(pld.len() + 32);
        let n =
            codec::encode_yield_payload(cid, pld, &mut buf, self.limits.max_frame).map_err(|e| self.yield_error(e))?;
        Ok((buf.freeze(), n as u64))
    }

    /// Queue a `Yield` frame made by [`yield_frame`](Self::yield_frame).
    pub(crate) fn send_yield(&self, cid: Cid, frame: Bytes) -> crate::Result<()> {
        self.enqueue(MsgKind::Yield, Some(cid), None, frame)
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
        frame: Bytes,
    ) -> crate::Result<()> {
        // Which lane, and whether the message fits its dialog, is the
        // session's to say (stream data and what must not overtake it on
        // the data lane; everything else on the control lane, never behind
        // data). `Start` was accounted for by `open_dialog`, and a message
        // with no dialog (`Ping`, `Pong`, a channel-level `Error`) takes the
        // control lane.
        let mut data_lane = false;
        if let Some(cid) = cid.filter(|_| kind != MsgKind::Start) {
            let verdict = self.lock_slots().on_send(cid, kind, functype);
            match verdict {
                Sent::Accept { data_lane: d } => data_lane = d,
                Sent::Last { data_lane: d, data } => {
                    // The dialog is over; its slot is dropped outside the lock.
                    data_lane = d;
                    drop(data);
                }
                Sent::Drop => return Ok(()),
                Sent::Refused(v) => {
                    tracing::error!(chan = ?self, "bug: sending out of order: {v}");
                    return Err(crate::Error::Protocol { peer: self.peer.to_string(), reason: v });
                }
            }
        }
        // Answers the peer is owed (see `Backlog`); never on the data lane.
        let owed = !data_lane
            && matches!(
                kind,
                MsgKind::StartAck
                    | MsgKind::Started
                    | MsgKind::Return
                    | MsgKind::Error
                    | MsgKind::CancelAck
                    | MsgKind::Pong
            );
        let len = frame.len();
        if owed {
            self.backlog.add(Backlog::cost(len));
        }
        let sent =
            if data_lane { self.data.send(frame).is_ok() } else { self.ctrl.send(Out::Frame(frame, owed)).is_ok() };
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
        self.send_error(cid, "ProtocolError", reason);
    }

    /// Refuse the `Start` of dialog `cid` (no dialog is registered).
    fn refuse(&self, cid: Cid, kind: &str, reason: String) {
        tracing::debug!(chan = ?self, cid, "refused: {reason}");
        self.send_error(Some(cid), kind, reason);
    }

    fn send_error(&self, cid: Option<Cid>, kind: &str, reason: String) {
        let err = ErrorMsg {
            cid,
            src_uid: self.local.clone(),
            boxed_type_str: kind.into(),
            message: reason,
            tb_str: String::new(),
            relay_path: vec![self.local.clone()],
            canceller: None,
            pld: None,
            errors: Vec::new(),
        };
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

/// How long the reader keeps reading after the writer found the peer gone.
const DRAIN: std::time::Duration = std::time::Duration::from_millis(500);

/// The only reader of the socket.
async fn reader_task(chan: Arc<Channel>, mut reader: FrameReader, dispatch: Arc<dyn Dispatch>) {
    // Bytes read before the channel started (the handshake) are not its
    // traffic.
    let mut counted = reader.bytes_read();
    // Set when the writer failed: the peer is gone, but what it sent
    // before it went (a last `Return` or `Error`) is still in our receive
    // buffer and must reach its dialog, or a dying callee's error would be
    // lost to a race with our own write. Bounded: a peer that only shut
    // down its reading side never sends the end of stream.
    let mut draining: Option<tokio::time::Instant> = None;
    let mut watch = Watch::new(&chan.limits, counted);
    let tick = tokio::time::sleep_until(watch.first_check());
    tokio::pin!(tick);
    let reason = loop {
        // Backpressure: too much waits to be written to this peer (it sends
        // and does not read). Stop reading from it until the writer has
        // drained half, so what it makes us queue stays bounded. Not while
        // draining a dead peer: nothing will be written any more.
        if draining.is_none() && chan.backlog.queued() > chan.limits.max_queued_output {
            match pause_reading(&chan).await {
                Ok(()) => {
                    watch.resumed(reader.bytes_read());
                    tick.as_mut().reset(watch.first_check());
                    continue;
                }
                Err(reason) => break reason,
            }
        }
        // All branches are cancel safe: `FrameReader::next` keeps partial
        // frames in its buffer, so losing the race to `closed`, to the
        // drain's deadline or to the tick loses no byte.
        tokio::select! {
            // Once closed by us, stop reading: nobody waits any more.
            () = chan.closed.cancelled(), if draining.is_none() => {
                if chan.write_failed.is_cancelled() {
                    draining = Some(tokio::time::Instant::now() + DRAIN);
                    continue;
                }
                break String::from("closed locally")
            }
            () = tokio::time::sleep_until(draining.unwrap_or_else(tokio::time::Instant::now)), if draining.is_some() => {
                break String::from("closed locally")
            }
            () = &mut tick => match watch.check(&reader, tokio::time::Instant::now()) {
                Ok((next, ping)) => {
                    if let Some(seq) = ping {
                        let _ = chan.send(&Msg::Ping { seq });
                    }
                    tick.as_mut().reset(next);
                }
                Err(reason) => {
                    tracing::warn!(chan = ?chan, "giving the peer up: {reason}");
                    break reason
                }
            },
            next = reader.next() => match next {
                Ok(Some(msg)) => {
                    // One writer per counter: a relaxed add is all it takes.
                    let read = reader.bytes_read();
                    chan.traffic.bytes_in.fetch_add(read - counted, Ordering::Relaxed);
                    chan.traffic.msgs_in.fetch_add(1, Ordering::Relaxed);
                    counted = read;
                    handle(&chan, &dispatch, msg)
                }
                Ok(None) => break String::from(PEER_CLOSED),
                Err(ReadError::Decode(e)) => {
                    // Frame boundary intact: answer and keep reading.
                    chan.protocol_error(None, e.to_string());
                }
                Err(ReadError::Io(e)) => break peer_gone(&e).unwrap_or_else(|| format!("read failed: {e}")),
                Err(ReadError::Truncated(n)) => {
                    break format!("{PEER_CLOSED} in the middle of a frame ({n} bytes pending)")
                }
                Err(ReadError::Frame(fe)) => {
                    chan.protocol_error(None, fe.to_string());
                    break fe.to_string();
                }
            },
        }
    };
    tracing::debug!(chan = ?chan, "channel closed: {reason}");
    chan.mark_closed(reason);
    dispatch.on_closed(&chan);
    if chan.backlog.was_paused.load(Ordering::Relaxed) {
        give_memory_back();
    }
}

/// Return freed memory to the system after a peer that made this actor
/// hold a large backlog is gone. glibc keeps freed heap in its arenas
/// otherwise, so an actor flooded once would keep its peak size for good.
fn give_memory_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases free memory of the allocator's
        // own arenas; it touches nothing in use. (With another global
        // allocator it has nothing to release.)
        drop(tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }));
    }
}

/// Wait, not reading, until the writer has drained the backlog to half
/// the limit. `Err` (the reason to close) when the channel closes
/// meanwhile, or when the writer wrote nothing for the allowed stall: the
/// peer reads nothing at all, and waiting longer would hold its requests'
/// answers forever.
///
/// # Cancel safety
/// Not used under `select!`: the reader awaits it alone, and only stops
/// early for a local close, which it watches itself.
async fn pause_reading(chan: &Channel) -> Result<(), String> {
    let backlog = &chan.backlog;
    let (limit, stall) = (chan.limits.max_queued_output, chan.limits.stall());
    tracing::debug!(chan = ?chan, queued = backlog.queued(), limit, "peer reads too slowly: pausing reads from it");
    backlog.paused.store(true, Ordering::SeqCst);
    backlog.was_paused.store(true, Ordering::Relaxed);
    let result = loop {
        let notified = backlog.drained.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Checked after registering for the wake-up (see `Backlog::done`).
        if backlog.queued() <= limit / 2 {
            break Ok(());
        }
        let written = backlog.written.load(Ordering::Relaxed);
        tokio::select! {
            () = chan.closed.cancelled() => break Err(String::from("closed locally")),
            () = &mut notified => {}
            () = tokio::time::sleep(stall) => {
                if backlog.written.load(Ordering::Relaxed) == written {
                    break Err(format!(
                        "peer stopped reading: {} bytes queued for it (limit {limit}), none written for {stall:?}",
                        backlog.queued()
                    ));
                }
            }
        }
    };
    backlog.paused.store(false, Ordering::SeqCst);
    result
}

/// The reader's clock: keepalive (docs/design.md, "Keepalive") and the
/// bound on a frame's arrival.
struct Watch {
    keepalive: Option<Keepalive>,
    frame_timeout: std::time::Duration,
    /// How often to look when nothing else is due.
    period: std::time::Duration,
    /// Bytes read at the last look.
    seen: u64,
    /// The frame in progress at the last look, and since when.
    partial: Option<(u64, tokio::time::Instant)>,
}

impl Watch {
    fn new(limits: &Limits, read: u64) -> Watch {
        let now = tokio::time::Instant::now();
        let keepalive = limits.keepalive.map(|(every, silence)| Keepalive::new(now.into_std(), every, silence));
        // A frame in progress is first seen at a look, so looking four
        // times per frame timeout bounds its real deadline to 1.25 times.
        let period =
            limits.keepalive.map_or(limits.frame_timeout / 4, |(every, _)| every.min(limits.frame_timeout / 4));
        Watch { keepalive, frame_timeout: limits.frame_timeout, period, seen: read, partial: None }
    }

    fn first_check(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.period
    }

    /// Reading resumed after a pause: the peer gets a full allowance.
    fn resumed(&mut self, read: u64) {
        let now = tokio::time::Instant::now();
        if let Some(k) = &mut self.keepalive {
            k.resume(now.into_std());
        }
        self.seen = read;
        self.partial = None;
    }

    /// Look at the reader at `now`: when to look next and whether to send
    /// a `Ping`, or why the peer is given up.
    ///
    /// Liveness is judged by bytes, not frames: a peer in the middle of
    /// sending a large frame is alive. Arrivals are noticed at the next
    /// look, so a peer is probed after one to two intervals of silence.
    fn check(
        &mut self,
        reader: &FrameReader,
        now: tokio::time::Instant,
    ) -> Result<(tokio::time::Instant, Option<u64>), String> {
        let read = reader.bytes_read();
        let mut next = now + self.period;
        if read != self.seen {
            self.seen = read;
            if let Some(k) = &mut self.keepalive {
                k.on_recv(now.into_std());
            }
        }
        match (reader.partial(), self.partial) {
            (None, _) => self.partial = None,
            (Some((frame, have, total)), Some((at, since))) if frame == at => {
                if now.duration_since(since) >= self.frame_timeout {
                    let total = total.map_or_else(|| String::from("an incomplete header"), |t| format!("{t} bytes"));
                    return Err(format!(
                        "a frame did not arrive whole within {:?}: {have} bytes of {total} in",
                        self.frame_timeout
                    ));
                }
                next = next.min(since + self.frame_timeout);
            }
            (Some((frame, _, _)), _) => {
                self.partial = Some((frame, now));
                next = next.min(now + self.frame_timeout);
            }
        }
        let mut ping = None;
        if let Some(k) = &mut self.keepalive {
            match k.poll(now.into_std()) {
                Action::Wait(at) => next = next.min(tokio::time::Instant::from_std(at)),
                Action::Ping(seq) => ping = Some(seq),
                Action::Dead { silent_for } => {
                    return Err(format!(
                        "peer silent for {:.1} s (no answer to keepalive probes; allowed silence {:?})",
                        silent_for.as_secs_f64(),
                        k.silence()
                    ));
                }
                Action::Paused => {}
            }
        }
        Ok((next.max(now + std::time::Duration::from_millis(1)), ping))
    }
}

/// Act on one message from the peer, as the session routes it.
fn handle(chan: &Arc<Channel>, dispatch: &Arc<dyn Dispatch>, msg: Msg) {
    let cid = msg.cid();
    let kind = msg.kind();
    let mut slots = chan.lock_slots();
    match slots.on_recv(&msg) {
        Route::Start => {
            drop(slots);
            if let Msg::Start { cid, ns, func, kwargs, uid } = msg {
                dispatch.on_start(chan, cid, ns, func, kwargs, uid);
            }
        }
        Route::Refuse { kind: refusal, reason } => {
            drop(slots);
            if let Msg::Start { cid, ns, func, .. } = &msg {
                // Refused at once, with a small frame: the peer's work here
                // stays bounded, and what refusals queue is bounded by the
                // backlog's pause (docs/design.md, "Limits on a peer").
                chan.refuse(
                    *cid,
                    refusal,
                    format!("{} refused `{ns}::{func}` from {}: {reason}", chan.local, chan.peer),
                );
            }
        }
        // Delivered under the session's lock (sending to a mailbox never
        // blocks), so the order of a dialog's messages is the wire's.
        Route::Deliver(slot) => match msg {
            // Flow control is handled here, never queued behind data: a
            // sender waiting for credit is woken at once.
            Msg::Credit { n, bytes, .. } => slot.flow.grant(n, bytes),
            Msg::Yield { ref pld, .. } => match slot.flow.admit(pld.len() as u64) {
                Admit::Deliver => {
                    let _ = slot.tx.send(Inbound::Msg(msg));
                }
                Admit::Overrun { window } => {
                    let _ = slot.tx.send(Inbound::Overrun(window));
                }
                Admit::Drop => {}
            },
            other => {
                if kind == MsgKind::Stop {
                    slot.flow.peer_stopped();
                }
                let _ = slot.tx.send(Inbound::Msg(other));
            }
        },
        Route::Last(slot) => {
            drop(slots);
            // Recorded before the mailbox sees it: an opener's body waiting
            // on something else learns the outcome at once (it may wait
            // behind stream messages).
            slot.flow.record_end(match &msg {
                Msg::Error { boxed_type_str, canceller, .. } => DialogEnd::Failed {
                    cancelled_by: crate::error::cancelled_by(boxed_type_str, canceller.as_ref()).cloned(),
                },
                _ => DialogEnd::Returned,
            });
            let _ = slot.tx.send(Inbound::Msg(msg));
        }
        Route::Broken { data, reason } => {
            drop(slots);
            data.flow.record_end(DialogEnd::Failed { cancelled_by: None });
            let _ = data.tx.send(Inbound::Violation(reason.clone()));
            drop(data);
            chan.protocol_error(cid, reason);
        }
        Route::Violation { cid, reason } => {
            drop(slots);
            chan.protocol_error(cid, reason);
        }
        Route::Late => {
            drop(slots);
            tracing::debug!(chan = ?chan, ?cid, ?kind, "message for a finished dialog dropped");
        }
        Route::Pong(seq) => {
            drop(slots);
            let _ = chan.send(&Msg::Pong { seq });
        }
        Route::PeerReport => {
            drop(slots);
            if let Msg::Error { message, src_uid, .. } = &msg {
                // The peer found something we sent unacceptable. Log it; the
                // dialog concerned (if any) ends when the peer closes or
                // answers.
                tracing::warn!(chan = ?chan, "peer {src_uid} reported: {message}");
            }
        }
        Route::Nothing => {}
    }
}

/// Most bytes coalesced into one write.
const COALESCE_LIMIT: usize = 256 * 1024;

/// The only writer of the socket. Drains the control lane before the data
/// lane and coalesces everything queued into one buffer per syscall.
async fn writer_task(
    mut w: BoxWrite,
    mut ctrl: mpsc::UnboundedReceiver<Out>,
    mut data: mpsc::UnboundedReceiver<Bytes>,
    (closed, write_failed): (CancellationToken, CancellationToken),
    close_reason: &Mutex<String>,
    (traffic, backlog): (&Traffic, &Backlog),
) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // Frames in `buf`, counted as written once the write succeeded.
    let mut frames = 0u64;
    let mut closing: Option<Option<oneshot::Sender<()>>> = None;
    // Bytes of answers owed to the peer in `buf` (see `Backlog`).
    let mut owed_bytes = 0usize;
    'outer: loop {
        // Wait for the first frame. `biased`: a control frame is always
        // taken before stream data. Both `recv`s are cancel safe, so the
        // branch that loses the race loses nothing.
        tokio::select! {
            biased;
            out = ctrl.recv() => match out {
                Some(Out::Frame(f, owed)) => {
                    buf.extend_from_slice(&f);
                    frames += 1;
                    if owed { owed_bytes += Backlog::cost(f.len()) }
                },
                Some(Out::Close(done)) => closing = Some(done),
                None => closing = Some(None),
            },
            Some(f) = data.recv() => { buf.extend_from_slice(&f); frames += 1; },
        }
        // Coalesce whatever else is already queued, control first.
        while closing.is_none() && buf.len() < COALESCE_LIMIT {
            match ctrl.try_recv() {
                Ok(Out::Frame(f, owed)) => {
                    buf.extend_from_slice(&f);
                    if owed {
                        owed_bytes += Backlog::cost(f.len());
                    }
                    frames += 1;
                    continue;
                }
                Ok(Out::Close(done)) => {
                    closing = Some(done);
                    break;
                }
                Err(_) => {}
            }
            match data.try_recv() {
                Ok(f) => {
                    buf.extend_from_slice(&f);
                    frames += 1;
                }
                Err(_) => break,
            }
        }
        if closing.is_some() {
            // Flush stream data queued before the close request, too.
            while let Ok(f) = data.try_recv() {
                buf.extend_from_slice(&f);
                frames += 1;
            }
        }
        if !buf.is_empty() {
            if let Err(e) = w.write_all(&buf).await {
                tracing::debug!("channel write failed: {e}");
                // Recorded before `closed` is cancelled below, so the
                // reader, stopping on it, cannot report a local close.
                set_reason(close_reason, peer_gone(&e).unwrap_or_else(|| format!("write failed: {e}")));
                write_failed.cancel();
                break 'outer;
            }
            traffic.bytes_out.fetch_add(buf.len() as u64, Ordering::Relaxed);
            traffic.msgs_out.fetch_add(frames, Ordering::Relaxed);
            backlog.done(std::mem::take(&mut owed_bytes));
            frames = 0;
            buf.clear();
        }
        if closing.is_some() {
            break;
        }
    }
    let _ = w.shutdown().await;
    drop(w);
    closed.cancel();
    if let Some(Some(done)) = closing {
        let _ = done.send(());
    }
    // Anyone else waiting in `close()` is released when `ctrl` is dropped.
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
        let (cid, _rx, _flow) = chan.open_dialog(None);
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
        let (cid, mut mailbox, _flow) = chan.open_dialog(None);
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
