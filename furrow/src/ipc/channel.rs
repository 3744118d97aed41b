//! One connection to one peer, shared by many dialogs.

use super::flow::{Admit, DialogEnd, Flow};
use super::reader::{FrameReader, ReadError};
use super::transport::BoxWrite;
use bytes::{Bytes, BytesMut};
use furrow_proto::codec;
use furrow_proto::dialog::{Dialog, Role, Verdict};
use furrow_proto::{Aid, Cid, ErrorMsg, Msg, MsgKind};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, watch};
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
    /// More `Yield`s arrived than the receive window holds (the limit);
    /// later ones are dropped.
    Overrun(usize),
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

struct Slot {
    dialog: Dialog,
    tx: mpsc::UnboundedSender<Inbound>,
    flow: Arc<Flow>,
}

impl Drop for Slot {
    /// A dialog leaving the map is over: release senders waiting for
    /// credit. (Takes no lock.)
    fn drop(&mut self) {
        self.flow.end();
    }
}

#[derive(Default)]
struct Slots {
    map: HashMap<Cid, Slot>,
    closed: bool,
}

enum Out {
    Frame(Bytes),
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
    dialer: bool,
    next_cid: AtomicU64,
    ctrl: mpsc::UnboundedSender<Out>,
    data: mpsc::UnboundedSender<Bytes>,
    /// Dialog mailboxes. `Slots::closed` is set under this lock when the
    /// channel closes, and checked under it when a dialog is registered, so
    /// no dialog can be registered after the close and never be woken.
    slots: Mutex<Slots>,
    closed: CancellationToken,
    /// Why the channel closed: set once, by whoever learned it first (the
    /// writer's failed write, the reader's end of stream or error, a
    /// discarding close); shared with the writer task.
    close_reason: Arc<Mutex<String>>,
    /// Cancelled by the writer when a write failed (the peer is gone):
    /// the reader then drains what the peer sent before it went, instead
    /// of stopping as on a local close.
    write_failed: CancellationToken,
    max_frame: usize,
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
        max_frame: usize,
        dispatch: Arc<dyn Dispatch>,
        tracker: &TaskTracker,
    ) -> Arc<Channel> {
        let (ctrl, ctrl_rx) = mpsc::unbounded_channel();
        let (data, data_rx) = mpsc::unbounded_channel();
        let chan = Arc::new(Channel {
            id: NEXT_CHANNEL_ID.fetch_add(1, Ordering::Relaxed),
            peer,
            local,
            dialer,
            next_cid: AtomicU64::new(if dialer { 1 } else { 2 }),
            ctrl,
            data,
            slots: Mutex::new(Slots::default()),
            closed: CancellationToken::new(),
            close_reason: Arc::default(),
            write_failed: CancellationToken::new(),
            max_frame,
            tasks: Mutex::new(Vec::new()),
            ended: watch::Sender::new(0),
            traffic: Arc::default(),
        });
        let (ew, er) = (Ended(chan.ended.clone()), Ended(chan.ended.clone()));
        let closed = chan.closed.clone();
        let traffic = chan.traffic.clone();
        let reason = chan.close_reason.clone();
        let write_failed = chan.write_failed.clone();
        let w = tracker.spawn(
            async move {
                let _ended = ew;
                writer_task(write, ctrl_rx, data_rx, (closed, write_failed), &reason, &traffic).await
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
        self.dialer
    }

    /// A fresh dialog id owned by this side.
    pub(crate) fn alloc_cid(&self) -> Cid {
        self.next_cid.fetch_add(2, Ordering::Relaxed)
    }

    fn is_mine(&self, cid: Cid) -> bool {
        (cid % 2 == 1) == self.dialer
    }

    /// Register a dialog this side opens (before sending its `Start`).
    pub(crate) fn open_dialog(&self, cid: Cid) -> (mpsc::UnboundedReceiver<Inbound>, Arc<Flow>) {
        let mut dialog = Dialog::new(Role::Opener);
        // Registering and sending Start are one step for the state machine.
        let _ = dialog.on_send(MsgKind::Start);
        self.insert_slot(cid, dialog)
    }

    /// Register a dialog the peer opened (a `Start` we accepted).
    pub(crate) fn accept_dialog(&self, cid: Cid) -> (mpsc::UnboundedReceiver<Inbound>, Arc<Flow>) {
        let mut dialog = Dialog::new(Role::Callee);
        let _ = dialog.on_recv(MsgKind::Start);
        self.insert_slot(cid, dialog)
    }

    /// Register a mailbox unless the channel is closed, in which case the
    /// slot (and its sender) is dropped at once and the dialog's first
    /// `recv` reports the channel closed.
    fn insert_slot(&self, cid: Cid, dialog: Dialog) -> (mpsc::UnboundedReceiver<Inbound>, Arc<Flow>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let flow = Arc::new(Flow::default());
        let slot = Slot { dialog, tx, flow: flow.clone() };
        let mut slots = self.lock_slots();
        if slots.closed {
            drop(slots);
            drop(slot);
        } else {
            slots.map.insert(cid, slot);
        }
        (rx, flow)
    }

    /// Forget a dialog (its outcome was exchanged, or its opener gave up).
    pub(crate) fn close_dialog(&self, cid: Cid) {
        // Take the slot out under the lock, drop it after.
        let slot = self.lock_slots().map.remove(&cid);
        drop(slot);
    }

    /// The dialogs open now, by kind and side. A dialog whose `StartAck`
    /// has not been exchanged yet counts as a call.
    pub(crate) fn dialog_counts(&self) -> DialogCounts {
        use furrow_proto::dialog::{Role, State};
        let mut n = DialogCounts::default();
        for slot in self.lock_slots().map.values() {
            let context =
                matches!(slot.dialog.state(), State::Running(furrow_proto::FuncType::Context) | State::Open { .. });
            let field = match (slot.dialog.role(), context) {
                (Role::Opener, true) => &mut n.contexts_opened,
                (Role::Callee, true) => &mut n.contexts_served,
                (Role::Opener, false) => &mut n.calls_opened,
                (Role::Callee, false) => &mut n.calls_served,
            };
            *field += 1;
        }
        n
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, Slots> {
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
        let frame = codec::encode_to_bytes(msg, self.max_frame).map_err(|e| match e {
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

    /// Queue a `Yield` of `value` on dialog `cid`, encoding the value
    /// straight into the frame (the stream hot path).
    pub(crate) fn send_yield<T: serde::Serialize + ?Sized>(&self, cid: Cid, value: &T) -> crate::Result<()> {
        let mut buf = BytesMut::with_capacity(64);
        codec::encode_yield(cid, value, &mut buf, self.max_frame).map_err(|e| self.yield_error(e))?;
        self.enqueue(MsgKind::Yield, Some(cid), None, buf.freeze())
    }

    /// [`send_yield`](Self::send_yield) of an already encoded payload.
    pub(crate) fn send_yield_payload(&self, cid: Cid, pld: &furrow_proto::Payload) -> crate::Result<()> {
        let mut buf = BytesMut::with_capacity(pld.len() + 32);
        codec::encode_yield_payload(cid, pld, &mut buf, self.max_frame).map_err(|e| self.yield_error(e))?;
        self.enqueue(MsgKind::Yield, Some(cid), None, buf.freeze())
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
        // Which lane: stream data (`Yield`) goes behind control frames, and
        // so must the `Stop` or `Return` that follows a dialog's stream
        // data: they may never overtake that dialog's own `Yield`s. Every
        // other frame (cancels, errors, credit, acks, a plain call's
        // `Return`) takes the control lane and never waits behind data.
        let mut data_lane = kind == MsgKind::Yield;
        // `Start` was accounted for by `open_dialog`.
        if let Some(cid) = cid.filter(|_| kind != MsgKind::Start) {
            let mut slots = self.lock_slots();
            if let Some(slot) = slots.map.get_mut(&cid) {
                if matches!(kind, MsgKind::Stop | MsgKind::Return)
                    && matches!(slot.dialog.state(), furrow_proto::dialog::State::Open { .. })
                {
                    data_lane = true;
                }
                match slot.dialog.on_send(kind) {
                    Ok(Verdict::Accept) => {
                        if let Some(ft) = functype {
                            slot.dialog.set_functype(ft);
                        }
                    }
                    Ok(Verdict::Drop) => return Ok(()),
                    Err(v) => {
                        tracing::error!(chan = ?self, "bug: sending out of order: {v}");
                        return Err(crate::Error::Protocol { peer: self.peer.to_string(), reason: v.to_string() });
                    }
                }
                if slot.dialog.is_done() {
                    slots.map.remove(&cid);
                }
            }
        }
        let sent = if data_lane { self.data.send(frame).is_ok() } else { self.ctrl.send(Out::Frame(frame)).is_ok() };
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
        let slots = {
            let mut s = self.lock_slots();
            s.closed = true;
            std::mem::take(&mut s.map)
        };
        // Every dialog still open lost its peer (a dialog whose outcome is
        // in has left the map already, so its record stays).
        for slot in slots.values() {
            slot.flow.record_end(DialogEnd::Lost);
        }
        drop(slots);
        let _ = self.ctrl.send(Out::Close(None));
    }

    /// Route one message that arrived for dialog `cid`.
    fn route(self: &Arc<Self>, cid: Cid, msg: Msg) {
        let kind = msg.kind();
        let mut slots = self.lock_slots();
        let Some(slot) = slots.map.get_mut(&cid) else {
            drop(slots);
            match kind {
                // Late traffic for a dialog that is already over, or the
                // ack of a fire-and-forget cancel request: expected.
                MsgKind::Yield
                | MsgKind::Stop
                | MsgKind::Credit
                | MsgKind::Started
                | MsgKind::CancelAck
                | MsgKind::StartAck
                | MsgKind::Return
                | MsgKind::Error => {
                    tracing::debug!(chan = ?self, cid, ?kind, "message for a finished dialog dropped")
                }
                _ => self.protocol_error(Some(cid), format!("{} for unknown dialog {cid}", kind.as_str())),
            }
            return;
        };
        match slot.dialog.on_recv(kind) {
            Ok(Verdict::Accept) => match msg {
                // Record the function type here, in the reader, before the
                // next message of the dialog (`Started`) can be checked.
                Msg::StartAck { functype, .. } => {
                    slot.dialog.set_functype(functype);
                    let _ = slot.tx.send(Inbound::Msg(msg));
                }
                // Flow control is handled here, never queued behind data:
                // a sender waiting for credit is woken at once.
                Msg::Credit { n, .. } => slot.flow.grant(n),
                Msg::Yield { .. } => match slot.flow.admit() {
                    Admit::Deliver => {
                        let _ = slot.tx.send(Inbound::Msg(msg));
                    }
                    Admit::Overrun(limit) => {
                        let _ = slot.tx.send(Inbound::Overrun(limit));
                    }
                    Admit::Drop => {}
                },
                other => {
                    if kind == MsgKind::Stop {
                        slot.flow.peer_stopped();
                    }
                    let done = slot.dialog.is_done();
                    if done {
                        // Recorded before the mailbox sees it: an opener's
                        // body waiting on something else learns the outcome
                        // at once (it may wait behind stream messages).
                        slot.flow.record_end(match &other {
                            Msg::Error { boxed_type_str, canceller, .. } => DialogEnd::Failed {
                                cancelled_by: crate::error::cancelled_by(boxed_type_str, canceller.as_ref()).cloned(),
                            },
                            _ => DialogEnd::Returned,
                        });
                    }
                    let _ = slot.tx.send(Inbound::Msg(other));
                    if done {
                        let finished = slots.map.remove(&cid);
                        drop(slots);
                        drop(finished);
                    }
                }
            },
            Ok(Verdict::Drop) => {}
            Err(v) => {
                slot.flow.record_end(DialogEnd::Failed { cancelled_by: None });
                let _ = slot.tx.send(Inbound::Violation(v.to_string()));
                let finished = slots.map.remove(&cid);
                drop(slots);
                drop(finished);
                self.protocol_error(Some(cid), v.to_string());
            }
        }
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
        let err = ErrorMsg {
            cid,
            src_uid: self.local.clone(),
            boxed_type_str: "ProtocolError".into(),
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
    let reason = loop {
        // All branches are cancel safe: `FrameReader::next` keeps partial
        // frames in its buffer, so losing the race to `closed` or to the
        // drain's deadline loses no byte.
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
}

fn handle(chan: &Arc<Channel>, dispatch: &Arc<dyn Dispatch>, msg: Msg) {
    match msg {
        Msg::Start { cid, ns, func, kwargs, uid } => {
            if chan.is_mine(cid) {
                chan.protocol_error(Some(cid), format!("Start with a cid of the wrong parity ({cid})"));
            } else if chan.lock_slots().map.contains_key(&cid) {
                chan.protocol_error(Some(cid), format!("Start reuses the cid {cid} of a live dialog"));
            } else {
                dispatch.on_start(chan, cid, ns, func, kwargs, uid);
            }
        }
        Msg::Aid { .. } | Msg::SpawnSpec { .. } | Msg::Ready { .. } => {
            chan.protocol_error(None, format!("{} after the handshake", msg.kind().as_str()));
        }
        Msg::Error { cid: None, ref message, ref src_uid, .. } => {
            // A channel-level error from the peer: it found something we sent
            // unacceptable. Log it; the dialog concerned (if any) will end
            // when the peer closes or answers.
            tracing::warn!(chan = ?chan, "peer {src_uid} reported: {message}");
        }
        other => {
            // Replies to dialogs we opened and stream traffic of dialogs the
            // peer opened both go to the dialog's slot.
            if let Some(cid) = other.cid() {
                chan.route(cid, other);
            }
        }
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
    traffic: &Traffic,
) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // Frames in `buf`, counted as written once the write succeeded.
    let mut frames = 0u64;
    let mut closing: Option<Option<oneshot::Sender<()>>> = None;
    'outer: loop {
        // Wait for the first frame. `biased`: a control frame is always
        // taken before stream data. Both `recv`s are cancel safe, so the
        // branch that loses the race loses nothing.
        tokio::select! {
            biased;
            out = ctrl.recv() => match out {
                Some(Out::Frame(f)) => { buf.extend_from_slice(&f); frames += 1; },
                Some(Out::Close(done)) => closing = Some(done),
                None => closing = Some(None),
            },
            Some(f) = data.recv() => { buf.extend_from_slice(&f); frames += 1; },
        }
        // Coalesce whatever else is already queued, control first.
        while closing.is_none() && buf.len() < COALESCE_LIMIT {
            match ctrl.try_recv() {
                Ok(Out::Frame(f)) => {
                    buf.extend_from_slice(&f);
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
            1 << 20,
            Arc::new(NoDispatch),
            &tracker,
        );
        // The writer task cannot run until this task yields: everything
        // below is queued first.
        let pld = furrow_proto::Payload::encode(&0u8).unwrap();
        for i in 0..500 {
            chan.send(&Msg::Yield { cid: 1, pld: pld.clone() }).unwrap();
            chan.send(&Msg::Stop { cid: 1000 + i }).unwrap();
        }
        chan.close().await;
        let n = writes.load(Ordering::Relaxed);
        assert!(n <= 4, "1000 frames took {n} writes");
        // Control frames (Stop) all come before stream data (Yield).
        let mut bytes = Vec::new();
        b.read_to_end(&mut bytes).await.unwrap();
        let mut buf = BytesMut::from(&bytes[..]);
        let mut dec = codec::FrameDecoder::default();
        let mut kinds = Vec::new();
        while let Some(f) = dec.decode(&mut buf).unwrap() {
            kinds.push(codec::decode_msg(f).unwrap().kind());
        }
        assert_eq!(kinds.len(), 1000);
        assert!(kinds[..500].iter().all(|k| *k == MsgKind::Stop));
        assert!(kinds[500..].iter().all(|k| *k == MsgKind::Yield));
    }

    fn start_on(read: BoxRead, write: BoxWrite, tracker: &TaskTracker) -> Arc<Channel> {
        Channel::start(
            FrameReader::new(read, 1 << 20),
            write,
            Aid::new("peer", 1),
            Aid::new("me", 2),
            true,
            1 << 20,
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
        let (mut mailbox, _flow) = chan.open_dialog(1);
        chan.send(&Msg::Stop { cid: 3 }).unwrap();
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
