//! The channel's writer task, the only writer of the socket, and what it
//! drains: two lanes (control ahead of stream data), frames coalesced into
//! one write per wake, and the backlog of answers owed to the peer that
//! paces the reader.

use super::{Traffic, peer_gone, set_reason};
use crate::ipc::transport::BoxWrite;
use bytes::{Bytes, BytesMut};
use furrow_proto::codec;
// `Backlog`'s protocol (its count, the pause flag and the wake-up) runs on
// loom's primitives under `--cfg furrow_loom` (see `loom_tests`), on std's
// and tokio's otherwise.
use crate::sync::loomable::{self, AtomicBool, AtomicUsize};
use std::io::IoSlice;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

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
pub(super) struct Backlog {
    pub(super) queued: AtomicUsize,
    /// Bytes written so far: a paused reader tells a slow peer from one
    /// that reads nothing by whether this moves. A heuristic on a timer,
    /// no wake-up depends on it: std's atomic even under loom.
    pub(super) written: AtomicU64,
    /// Set while the reader is paused, so the writer notifies only then.
    pub(super) paused: AtomicBool,
    /// The reader was paused at least once (a peer that did not read).
    pub(super) was_paused: AtomicBool,
    pub(super) drained: loomable::Notify,
}

impl Backlog {
    /// What a queued frame of `len` bytes costs in memory: its bytes plus
    /// its allocation and queue node, so that the bound is on memory, not
    /// only on wire bytes (a flood of small answers costs several times
    /// their size).
    pub(super) fn cost(len: usize) -> usize {
        len + 128
    }

    pub(super) fn add(&self, n: usize) {
        self.queued.fetch_add(n, Ordering::SeqCst);
    }

    /// `n` bytes were written (or dropped).
    pub(super) fn done(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::SeqCst);
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        // Pairs with the paused reader's store of `paused` then read of
        // `queued` (`drained_to`): either the reader sees this decrement,
        // or this load sees it paused and wakes it. No wake-up is lost.
        if self.paused.load(Ordering::SeqCst) {
            self.drained.notify_waiters();
        }
    }

    pub(super) fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// The reader stops reading: from now on every `done` wakes it.
    pub(super) fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        self.was_paused.store(true, Ordering::Relaxed);
    }

    /// The reader reads again: `done` stops waking it.
    pub(super) fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }

    /// The paused reader's look: `None` once at most `target` bytes are
    /// owed, else the wake-up to wait for before looking again. The
    /// wake-up is created *before* the look (`notify_waiters` wakes every
    /// `Notified` created before it, polled or not), so a `done` that
    /// drains between the look and the wait is not missed.
    pub(super) fn drained_to(&self, target: usize) -> Option<loomable::Notified<'_>> {
        let notified = self.drained.notified();
        // A read-modify-write, not a load: it reads the latest count, and
        // the writer's `fetch_sub` that comes after it in the count's
        // order reads from it, so the reader's `paused` store (before
        // it) happens before the writer's load of `paused` (after its
        // `fetch_sub`). That holds with acquire/release alone. With two
        // `SeqCst` loads the protocol is right too (Dekker's, by the
        // single total order), but loom treats `SeqCst` accesses as
        // `AcqRel` and reported that version as a lost wake-up (a false
        // alarm), so it could not check it; this one it can. The cost,
        // one locked instruction per look, is paid only while paused.
        if self.queued.fetch_add(0, Ordering::SeqCst) <= target {
            return None;
        }
        Some(notified)
    }
}

/// The data lane: stream frames, and the messages that must not overtake
/// them, in the order their senders appended them. Senders encode a frame
/// straight into the lane's buffer (the stream hot path: no allocation and
/// no queue node per message); the writer takes everything at once,
/// swapping in an empty buffer of its own, so the two ping-pong and
/// neither side allocates once they have grown.
///
/// The channel keeps the lane under its session's lock (see [`Lane`]): a
/// stream value's credit and its place in the lane are decided in one
/// critical section, one lock per send.
///
/// A large frame that arrives whole (a value that waited for credit, a
/// large `Return`) is not copied into the buffer: what the buffer holds is
/// sealed as it is, and the frame follows it in its own buffer
/// (`push_frame`), moved.
///
/// The writer is woken (`Lane::ready`) only when a frame lands in an empty
/// lane: a lane that is not empty has a wake-up on its way already (stored
/// as `Notify`'s permit if the writer is not waiting), and the writer takes
/// the whole lane when it comes. So a burst of sends costs one wake-up.
/// Every method that appends says whether to wake it (`true`): the caller
/// does, after unlocking.
#[derive(Debug, Default)]
pub(crate) struct LaneBuf {
    bytes: BytesMut,
    /// End offset of each frame in `bytes`, in order.
    ends: Vec<usize>,
    /// Set by the writer when it ends: nothing appended from then on would
    /// ever be written, so appending fails.
    closed: bool,
    /// The `Yields` frame at the tail that the next value of its dialog
    /// joins (`None` once anything else is appended, or the lane taken).
    open: Option<codec::OpenYields>,
    /// What goes before `bytes`, in order: buffers sealed when a large
    /// frame came (see `push_frame`), and those frames.
    sealed: Vec<Segment>,
}

/// A stream value appended to the lane and not yet committed or undone.
pub(crate) struct LaneValue {
    pub(crate) appended: codec::Appended,
    was_empty: bool,
}

impl LaneBuf {
    /// Whether the writer has ended (the channel is closed).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Where a frame appended now starts (for [`Self::commit`]).
    fn mark(&self) -> usize {
        self.bytes.len()
    }

    /// Append stream value `value` of dialog `cid`, encoded in place: it
    /// joins the `Yields` frame at the tail if that is the dialog's, else
    /// starts one (`codec::append_yield_value`). Then [`Self::commit_value`]
    /// or [`Self::undo_value`], before the lock is released. On error
    /// nothing changed.
    ///
    /// `Ok(None)`, nothing appended: the value holds a large
    /// `furrow::Bytes`, to be framed on its own and sent from its own
    /// buffer (`codec::append_yield_inline`), not copied into the lane.
    // Always inlined, as the codec's appending (see
    // `furrow_proto::codec::stream::append_maybe`): its result is returned
    // through memory otherwise, and read back more slowly than written.
    #[inline(always)]
    pub(crate) fn append_value<T: serde::Serialize + ?Sized>(
        &mut self,
        cid: furrow_proto::Cid,
        value: &T,
        max_frame: usize,
    ) -> Result<Option<LaneValue>, codec::EncodeError> {
        let was_empty = self.is_empty();
        let appended = codec::append_yield_inline(&mut self.bytes, &mut self.open, cid, value, max_frame)?;
        Ok(appended.map(|appended| LaneValue { appended, was_empty }))
    }

    /// The value `v` goes: its frame's end moves (or a new frame is
    /// recorded). `true`: wake the writer (the lane was empty before it).
    #[must_use]
    pub(crate) fn commit_value(&mut self, v: &LaneValue) -> bool {
        let end = self.bytes.len();
        match self.ends.last_mut() {
            Some(last) if !v.appended.new_frame => *last = end,
            _ => self.ends.push(end),
        }
        v.was_empty
    }

    /// The value `v` does not go after all: the lane is as before it.
    pub(crate) fn undo_value(&mut self, v: &LaneValue) {
        codec::undo_append(&mut self.bytes, &mut self.open, &v.appended);
    }

    /// The frame appended since `mark` goes: record its end. `true`: wake
    /// the writer (the lane was empty before it).
    #[must_use]
    fn commit(&mut self, mark: usize) -> bool {
        let end = self.bytes.len();
        debug_assert!(end > mark, "an empty frame");
        // A whole frame ends any `Yields` frame open before it.
        self.open = None;
        self.ends.push(end);
        mark == 0 && self.sealed.is_empty()
    }

    /// Nothing is queued.
    fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.sealed.is_empty()
    }

    /// Bytes queued (for dumps).
    pub(crate) fn queued_bytes(&self) -> usize {
        self.bytes.len() + self.sealed.iter().map(|s| s.bytes.len()).sum::<usize>()
    }

    /// Append the whole frame `frame`: `None` once the writer has ended,
    /// else whether to wake it. A frame of [`BIG_FRAME`] bytes or more is
    /// not copied: what the buffer holds so far is sealed and the frame
    /// follows it in its own buffers, as many as it came in (a frame in
    /// parts keeps a large `furrow::Bytes` its sender lent it). A smaller
    /// one is copied into the buffer, its parts joined.
    pub(crate) fn push_frame(&mut self, frame: codec::Encoded) -> Option<bool> {
        if self.closed {
            return None;
        }
        if frame.len() < BIG_FRAME {
            let at = self.mark();
            match &frame {
                codec::Encoded::Whole(f) => self.bytes.extend_from_slice(f),
                codec::Encoded::Parts { head, body } => {
                    self.bytes.extend_from_slice(head);
                    self.bytes.extend_from_slice(body);
                }
                codec::Encoded::Gather(parts) => parts.iter().for_each(|p| self.bytes.extend_from_slice(p)),
            }
            return Some(self.commit(at));
        }
        let was_empty = self.is_empty();
        self.seal();
        let parts = frame.into_parts();
        let last = parts.len() - 1;
        for (i, part) in parts.into_iter().enumerate() {
            // The frame ends with its last part, and starts with its first:
            // a write may stop only there (see `write_batch`).
            let ends = if i == last { vec![part.len()] } else { Vec::new() };
            // A buffer nobody else holds (a frame just encoded) becomes the
            // lane's to reuse once written (`into_spare`): the next large
            // values are encoded into memory already faulted in. One lent
            // by its sender is only written from.
            let bytes = part.try_into_mut().map_or_else(SegBuf::Lent, SegBuf::Own);
            self.sealed.push(Segment { bytes, ends, starts_frame: i == 0 });
        }
        Some(was_empty)
    }

    /// Move what the buffer holds to `sealed` (a large frame goes after it).
    /// The buffer starts again empty: the next small frames grow a new one.
    fn seal(&mut self) {
        // Whatever follows starts a frame of its own.
        self.open = None;
        if self.ends.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut self.bytes);
        let ends = std::mem::take(&mut self.ends);
        self.sealed.push(Segment { bytes: SegBuf::Own(bytes), ends, starts_frame: true });
    }

    /// Take everything appended so far into `out`, in order, swapping in
    /// `spare` (emptied) and its end list for the buffer; `false` (and
    /// `spare` kept) when the lane is empty.
    fn take(&mut self, spare: &mut Option<(BytesMut, Vec<usize>)>, out: &mut Vec<Segment>) -> bool {
        if self.ends.is_empty() && self.sealed.is_empty() {
            return false;
        }
        out.append(&mut self.sealed);
        if !self.ends.is_empty() {
            let (mut bytes, mut ends) = spare.take().unwrap_or_default();
            bytes.clear();
            ends.clear();
            std::mem::swap(&mut self.bytes, &mut bytes);
            std::mem::swap(&mut self.ends, &mut ends);
            out.push(Segment { bytes: SegBuf::Own(bytes), ends, starts_frame: true });
        }
        // The open frame left with the rest: the next value starts one.
        self.open = None;
        true
    }

    /// The writer ended: refuse appends from now on, and drop what will
    /// never be written.
    fn close(&mut self) {
        self.closed = true;
        self.bytes = BytesMut::new();
        self.ends = Vec::new();
        self.open = None;
        self.sealed = Vec::new();
    }
}

/// Where the writer finds the data lane, and how it is woken: the channel
/// keeps the lane under its session's lock.
pub(super) trait Lane {
    /// Run `f` on the lane, locked (briefly: never across an await).
    fn with_lane<R>(&self, f: impl FnOnce(&mut LaneBuf) -> R) -> R;
    /// Notified when a frame lands in an empty lane.
    fn ready(&self) -> &Notify;
}

/// Closes the data lane when the writer task ends, however it ends
/// (returned, or aborted by `Channel::abort`).
struct CloseLane<'a, L: Lane>(&'a L);

impl<L: Lane> Drop for CloseLane<'_, L> {
    fn drop(&mut self) {
        self.0.with_lane(LaneBuf::close);
    }
}

pub(super) enum Out {
    /// A frame, and whether it counts towards the backlog (see `Backlog`).
    Frame(codec::Encoded, bool),
    /// Flush what is queued, shut the write half down, then signal.
    Close(Option<oneshot::Sender<()>>),
}

/// Stream frames, as taken from the data lane: their bytes and where each
/// ends. Written from, never copied: a write that stops early leaves the
/// rest here (`advance`, no copy).
///
/// Usually whole frames, one after the other. A large frame that came in
/// parts (`LaneBuf::push_frame`) is one segment per part: only its first
/// starts a frame, and only its last has an end.
#[derive(Debug)]
struct Segment {
    bytes: SegBuf,
    ends: Vec<usize>,
    /// A frame starts at its first byte (a write may stop before it).
    starts_frame: bool,
}

/// A segment's bytes: a buffer of the lane's, reused once written, or
/// one written from as it came (a large frame, or a value its sender lent).
#[derive(Debug)]
enum SegBuf {
    Own(BytesMut),
    Lent(Bytes),
}

impl std::ops::Deref for SegBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            SegBuf::Own(b) => b,
            SegBuf::Lent(b) => b,
        }
    }
}

impl Segment {
    /// The first `at` bytes (whole frames) were written: drop them. A
    /// frame starts where they end.
    fn advance(&mut self, at: usize) {
        match &mut self.bytes {
            SegBuf::Own(b) => bytes::Buf::advance(b, at),
            SegBuf::Lent(b) => bytes::Buf::advance(b, at),
        }
        self.ends.retain(|&e| e > at);
        for e in &mut self.ends {
            *e -= at;
        }
        self.starts_frame = true;
    }

    /// Its buffer and end list, emptied, for the lane to reuse (`None` for
    /// a buffer that was not the lane's).
    fn into_spare(self) -> Option<(BytesMut, Vec<usize>)> {
        match self.bytes {
            SegBuf::Own(mut bytes) => {
                let mut ends = self.ends;
                bytes.clear();
                ends.clear();
                Some((bytes, ends))
            }
            SegBuf::Lent(_) => None,
        }
    }
}

/// What one turn of the writer writes: every control frame first, then the
/// stream data, segment after segment.
///
/// Control frames go first even when some were queued after stream data
/// taken for the same batch: control frames may overtake stream data,
/// never the other way (docs/design.md, "Ordering on the wire"), so any
/// order with all control first is legal. What must hold is only that a
/// stream frame is in the batch after every control frame queued before it
/// (see `writer_task`).
#[derive(Default)]
struct Batch {
    ctrl: BytesMut,
    /// Large control frames (a call's 1 MiB arguments, say), each with
    /// the offset in `ctrl` it goes at: written from their own buffers,
    /// never copied into `ctrl`.
    big: Vec<(usize, Bytes)>,
    big_len: usize,
    /// Control frames in `ctrl`.
    ctrl_frames: u64,
    /// Bytes of answers owed to the peer in `ctrl` (see `Backlog`).
    owed_bytes: usize,
    /// Stream data, in order. What a write left (to let control frames go
    /// first) stays at the front for the next turn.
    data: std::collections::VecDeque<Segment>,
    data_len: usize,
}

impl Batch {
    /// Append a control-lane item: a frame, or the close request it is
    /// (returned).
    fn take_ctrl(&mut self, out: Out) -> Option<Option<oneshot::Sender<()>>> {
        match out {
            Out::Frame(f, owed) => {
                if owed {
                    self.owed_bytes += Backlog::cost(f.len());
                }
                self.ctrl_frames += 1;
                // Each large part (a frame, a payload after its envelope, a
                // value lent by its sender) is written from its own buffer
                // in its place; the small ones are copied.
                match f {
                    codec::Encoded::Whole(f) => self.push_ctrl_part(f),
                    codec::Encoded::Parts { head, body } => {
                        self.push_ctrl_part(head);
                        self.push_ctrl_part(body);
                    }
                    codec::Encoded::Gather(parts) => parts.into_iter().for_each(|p| self.push_ctrl_part(p)),
                }
                None
            }
            Out::Close(done) => Some(done),
        }
    }

    fn push_ctrl_part(&mut self, part: Bytes) {
        if part.len() >= BIG_FRAME {
            self.big_len += part.len();
            self.big.push((self.ctrl.len(), part));
        } else {
            self.ctrl.extend_from_slice(&part);
        }
    }

    /// Append stream frames taken from the lane (moved, not copied).
    fn push_data(&mut self, seg: Segment) {
        self.data_len += seg.bytes.len();
        self.data.push_back(seg);
    }

    /// Bytes of control frames in the batch.
    fn ctrl_len(&self) -> usize {
        self.ctrl.len() + self.big_len
    }

    fn is_empty(&self) -> bool {
        self.ctrl_len() == 0 && self.data.is_empty()
    }
}

/// Frames this large are written from their own buffer rather than copied
/// into the batch's or the lane's (an extra write costs less than copying
/// that much). The size from which `codec::encode_parts` splits a payload
/// off its envelope: one threshold for "large".
const BIG_FRAME: usize = codec::PARTS_MIN;

/// Most bytes coalesced into one turn of the writer (control frames, and
/// lane takes until this much stream data is in).
const COALESCE_LIMIT: usize = 256 * 1024;

/// Most stream data copied behind control frames into their write (see
/// `write_batch`).
const MERGE_LIMIT: usize = 64 * 1024;

/// What a [`write_batch`] wrote.
#[derive(Default)]
struct Written {
    bytes: u64,
    frames: u64,
}

/// Write `batch`: its control frames, then its stream data, stopping early
/// at a frame boundary when a control frame is waiting (`may_stop`). What
/// is written leaves the batch (emptied segments go to `spare`, for the
/// lane to reuse); what a stop left stays in `batch.data`, whole frames,
/// for the next turn, behind the control frames then queued.
///
/// Why: stream data can be a whole window (8 MiB by default), and a peer
/// reading slowly makes it take long to write. A control frame queued
/// meanwhile (a cancel's acknowledgement, an error) would wait behind all
/// of it; now it waits for at most the frame being written. Control frames
/// keep their order among themselves: they are all written, in order,
/// before any data.
///
/// Writes are vectored (`write_vectored`): the parts of a batch go out
/// from their own buffers in one call when the socket takes them, a large
/// frame and the small ones around it, or a frame in parts (its envelope,
/// a value its sender lent, what follows). While a control frame waits,
/// each call is cut at the next frame boundary (a partial write rarely
/// lands on one by itself); otherwise it takes every segment there is.
///
/// # Cancel safety
/// Not cancel safe (a frame may be left half written); only the writer
/// task calls it, and it is never raced.
async fn write_batch(
    w: &mut BoxWrite,
    batch: &mut Batch,
    ctrl: &mpsc::UnboundedReceiver<Out>,
    may_stop: bool,
    (writes, spare): (&AtomicU64, &mut Option<(BytesMut, Vec<usize>)>),
) -> std::io::Result<Written> {
    let mut done = Written::default();
    // A little stream data behind control frames joins them in one write
    // (a context's `Started` and its first values, say): one syscall, as
    // when both lanes were one buffer. Copying that much costs less than a
    // second write; more goes on its own.
    if batch.ctrl_len() > 0 && batch.data_len <= MERGE_LIMIT {
        while let Some(seg) = batch.data.pop_front() {
            batch.ctrl.extend_from_slice(&seg.bytes);
            batch.ctrl_frames += seg.ends.len() as u64;
            if let Some(s) = seg.into_spare() {
                *spare = Some(s);
            }
        }
        batch.data_len = 0;
    }
    if batch.ctrl_len() > 0 {
        // In order: the small frames before each large one, the large one,
        // then what follows the last, gathered into vectored writes (one
        // call for all of it when the socket takes it). A control frame
        // queued meanwhile waits for these writes, as it waits for a
        // stream frame being written: at most the large frame in progress,
        // then the next turn.
        if batch.big.is_empty() {
            // The usual case (a call's `Start`, its `Return`): one slice,
            // nothing to allocate.
            write_all_vectored(w, &mut [IoSlice::new(&batch.ctrl)], writes).await?;
        } else {
            let mut parts: Vec<IoSlice<'_>> = Vec::with_capacity(2 * batch.big.len() + 1);
            let mut at = 0;
            for (pos, frame) in &batch.big {
                if *pos > at {
                    parts.push(IoSlice::new(&batch.ctrl[at..*pos]));
                }
                parts.push(IoSlice::new(frame));
                at = *pos;
            }
            if at < batch.ctrl.len() {
                parts.push(IoSlice::new(&batch.ctrl[at..]));
            }
            write_all_vectored(w, &mut parts, writes).await?;
        }
        done.bytes += batch.ctrl_len() as u64;
        done.frames += batch.ctrl_frames;
        batch.ctrl.clear();
        batch.big.clear();
        batch.big_len = 0;
        batch.ctrl_frames = 0;
    }
    // Stream data, segment after segment, each call gathering as many as
    // it may (a frame in parts, its envelope and the value its sender lent,
    // goes in one call). `off`: the bytes of the front segment written so
    // far; `next`: the index in its `ends` of the first end after them.
    let (mut off, mut next) = (0usize, 0usize);
    while let Some(front) = batch.data.front_mut() {
        if off == front.bytes.len() {
            // Written (or empty): its frames are out. Only an empty one is
            // found here; `consume` pops those it writes to the end.
            while next < front.ends.len() && front.ends[next] <= off {
                next += 1;
                done.frames += 1;
            }
            if let Some(s) = batch.data.pop_front().and_then(Segment::into_spare) {
                *spare = Some(s);
            }
            (off, next) = (0, 0);
            continue;
        }
        // `ends[next]` is the first frame end after `off`, so `off` is a
        // frame boundary when it is the end before that (or 0).
        let waiting = may_stop && !ctrl.is_empty();
        let at_boundary = (off == 0 && front.starts_frame) || (next > 0 && front.ends[next - 1] == off);
        // Not before anything of this batch's data is out: a control
        // frame that came while the batch was built waits for one write,
        // and stopping at once would only turn the batch over.
        if waiting && at_boundary && done.bytes > 0 {
            front.advance(off);
            break;
        }
        let n = {
            // While a control frame waits, only up to the next frame end
            // (which may lie in a later segment: a frame in parts), so
            // that the next call can stop there; otherwise whatever the
            // segments hold, and the kernel takes what fits its buffer.
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            for (i, seg) in batch.data.iter().enumerate().take(MAX_IOV) {
                let (start, end) = if i == 0 { (off, seg.ends.get(next)) } else { (0, seg.ends.first()) };
                let upto = match end {
                    Some(&e) if waiting => e,
                    _ => seg.bytes.len(),
                };
                if upto > start {
                    slices[count] = IoSlice::new(&seg.bytes[start..upto]);
                    count += 1;
                }
                if waiting && end.is_some() {
                    break;
                }
            }
            w.write_vectored(&slices[..count]).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        writes.fetch_add(1, Ordering::Relaxed);
        done.bytes += n as u64;
        batch.data_len -= n;
        consume(batch, n, (&mut off, &mut next), &mut done.frames, spare);
    }
    Ok(done)
}

/// Most slices handed to one vectored write (Linux takes up to 1,024;
/// the kernel copies what fits its buffer either way, so more would only
/// lengthen the list it walks).
const MAX_IOV: usize = 64;

/// Write every byte of `parts`, in order, in as few calls as the socket
/// allows, at most [`MAX_IOV`] slices each; a call that returns short is
/// resumed where it stopped, in the middle of a slice if need be. A
/// writer that is not vectored writes the first slice per call (tokio's
/// default), which is as correct, one call per slice.
///
/// # Cancel safety
/// Not cancel safe (what was written is not reported); only
/// [`write_batch`] calls it.
async fn write_all_vectored(
    w: &mut BoxWrite,
    mut parts: &mut [IoSlice<'_>],
    writes: &AtomicU64,
) -> std::io::Result<()> {
    // An empty slice would make a call that writes nothing look like a
    // closed socket (`WriteZero`); `write_batch` never builds one.
    debug_assert!(parts.iter().all(|p| !p.is_empty()), "an empty slice");
    while !parts.is_empty() {
        let n = w.write_vectored(&parts[..parts.len().min(MAX_IOV)]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        writes.fetch_add(1, Ordering::Relaxed);
        IoSlice::advance_slices(&mut parts, n);
    }
    Ok(())
}

/// `n` more bytes of `batch.data` were written from the front segment at
/// `off` on: move `off` and `next` (see `write_batch`) past them, count
/// the frames they ended, and pop the segments written to their end (a
/// buffer of the lane's goes to `spare`).
fn consume(
    batch: &mut Batch,
    mut n: usize,
    (off, next): (&mut usize, &mut usize),
    frames: &mut u64,
    spare: &mut Option<(BytesMut, Vec<usize>)>,
) {
    while n > 0 {
        let Some(front) = batch.data.front() else {
            // More written than gathered: impossible, as the slices were
            // taken from these segments; stop rather than loop.
            debug_assert!(false, "{n} bytes written past the stream data");
            return;
        };
        let step = n.min(front.bytes.len() - *off);
        *off += step;
        n -= step;
        while *next < front.ends.len() && front.ends[*next] <= *off {
            *next += 1;
            *frames += 1;
        }
        if *off == front.bytes.len() {
            if let Some(s) = batch.data.pop_front().and_then(Segment::into_spare) {
                *spare = Some(s);
            }
            (*off, *next) = (0, 0);
        }
    }
}

/// The only writer of the socket. Drains the control lane before the data
/// lane and coalesces everything queued into few writes per turn.
pub(super) async fn writer_task<L: Lane>(
    mut w: BoxWrite,
    mut ctrl: mpsc::UnboundedReceiver<Out>,
    lane: &L,
    (closed, write_failed): (CancellationToken, CancellationToken),
    close_reason: &Mutex<String>,
    (traffic, backlog): (&Traffic, &Backlog),
) {
    let _close_lane = CloseLane(lane);
    let mut batch = Batch { ctrl: BytesMut::with_capacity(16 * 1024), ..Batch::default() };
    let mut closing: Option<Option<oneshot::Sender<()>>> = None;
    // Control frames may overtake stream data (that is what the lanes are
    // for), but a stream frame must never overtake a control frame queued
    // *before* it: a dialog's `Started` (control) precedes its first `Yield`
    // or the `Return` that follows it (data lane), and the peer's state
    // machine refuses them in the other order. So stream frames join the
    // batch only after the control lane is drained again *after* they were
    // taken from the data lane: whoever queued the two did so in that
    // order, and taking the later one makes the earlier one visible in its
    // own queue (the lane's lock and the control queue synchronise their
    // senders with the writer); and a batch writes all its control frames
    // before any data.
    // (Found by the integration loop, 1 run in 79: a context that called
    // `started()` and returned at once reached its opener as a `Return`
    // before `Started`, when the writer found the control lane empty and
    // the data lane not, with both sent in between.)
    // Stream frames taken from the lane and not yet in the batch.
    let mut pending: Vec<Segment> = Vec::new();
    // An emptied buffer, handed back to the lane at the next take.
    let mut spare: Option<(BytesMut, Vec<usize>)> = None;
    'outer: loop {
        // Wait for the first frame, unless stream data waits from the last
        // turn. `biased`: a control frame is always taken before stream
        // data. `recv` is cancel safe, and a `Notified` that loses the race
        // keeps its permit stored in the `Notify`, so the branch that loses
        // loses nothing. A wake-up may find the lane empty (its frames went
        // with the last batch): then this waits again.
        if batch.data.is_empty() {
            tokio::select! {
                biased;
                out = ctrl.recv() => {
                    closing = match out {
                        Some(out) => batch.take_ctrl(out),
                        None => Some(None),
                    };
                }
                () = lane.ready().notified() => {
                    lane.with_lane(|l| l.take(&mut spare, &mut pending));
                }
            }
        }
        // Coalesce whatever else is already queued, control first, and
        // stream frames after the control frames queued before them.
        loop {
            // Control frames are bounded by their own bytes, never by the
            // stream data in the batch: data a write left (a whole window,
            // perhaps) must not keep the control lane from being drained,
            // or a cancel's acknowledgement would wait behind all of it
            // (found by the busy integration loop:
            // `context_flow::cancel_does_not_wait_behind_stream_data`
            // failed 4 runs in 9 with 128 MiB carried).
            while closing.is_none() && batch.ctrl_len() < COALESCE_LIMIT {
                match ctrl.try_recv() {
                    Ok(out) => closing = batch.take_ctrl(out),
                    Err(_) => break,
                }
            }
            // The control lane was drained *after* the pending stream
            // frames were taken: they may join now.
            for seg in pending.drain(..) {
                batch.push_data(seg);
            }
            if closing.is_some() || batch.data_len >= COALESCE_LIMIT {
                break;
            }
            if !lane.with_lane(|l| l.take(&mut spare, &mut pending)) {
                break;
            }
        }
        if closing.is_some() {
            // Flush stream data queued before the close request, too.
            lane.with_lane(|l| l.take(&mut spare, &mut pending));
            for seg in pending.drain(..) {
                batch.push_data(seg);
            }
        }
        if !batch.is_empty() {
            let owed = std::mem::take(&mut batch.owed_bytes);
            match write_batch(&mut w, &mut batch, &ctrl, closing.is_none(), (&traffic.writes, &mut spare)).await {
                Err(e) => {
                    tracing::debug!("channel write failed: {e}");
                    // Recorded before `closed` is cancelled below, so the
                    // reader, stopping on it, cannot report a local close.
                    set_reason(close_reason, peer_gone(&e).unwrap_or_else(|| format!("write failed: {e}")));
                    write_failed.cancel();
                    break 'outer;
                }
                Ok(written) => {
                    traffic.bytes_out.fetch_add(written.bytes, Ordering::Relaxed);
                    traffic.msgs_out.fetch_add(written.frames, Ordering::Relaxed);
                    traffic.last_out.store(super::super::flow::now_micros(), Ordering::Relaxed);
                    // Every control frame was written (they go before any
                    // data), so all that was owed is paid.
                    backlog.done(owed);
                }
            }
        }
        if closing.is_some() {
            break;
        }
    }
    // No append succeeds from here on (the lane is closed before the
    // channel is marked closed, so a sender that finds the channel open
    // may still fail to append: it reports the closed channel).
    lane.with_lane(LaneBuf::close);
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
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    /// A data lane of its own, as the channel keeps one.
    #[derive(Default)]
    struct TestLane {
        buf: Mutex<LaneBuf>,
        ready: Notify,
    }

    impl Lane for TestLane {
        fn with_lane<R>(&self, f: impl FnOnce(&mut LaneBuf) -> R) -> R {
            f(&mut crate::sync::lock(&self.buf))
        }
        fn ready(&self) -> &Notify {
            &self.ready
        }
    }

    /// What a test reads the writer's bytes from.
    type Server = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

    /// A writer task on a pipe, with what it drains and counts. It waits
    /// for the lane's notification before it takes the lane.
    struct Rig {
        server: Server,
        ctrl_tx: mpsc::UnboundedSender<Out>,
        lane: Arc<TestLane>,
        traffic: Arc<Traffic>,
        backlog: Arc<Backlog>,
        writer: tokio::task::JoinHandle<()>,
    }

    impl Rig {
        /// A writer on an in-memory pipe that holds `pipe` bytes. tokio's
        /// `DuplexStream` is not vectored: each call writes one slice.
        fn start(pipe: usize) -> Rig {
            let (client, server) = tokio::io::duplex(pipe);
            Rig::start_on(Box::new(client), Box::new(server))
        }

        /// A writer on a real Unix socket pair, vectored as the channel's
        /// sockets are: a call that returns short leaves the rest of a
        /// slice, or of several, for the next.
        fn start_unix() -> Rig {
            let (client, server) = tokio::net::UnixStream::pair().expect("a socket pair");
            Rig::start_on(Box::new(client), Box::new(server))
        }

        fn start_on(client: BoxWrite, server: Server) -> Rig {
            let (ctrl_tx, ctrl_rx) = mpsc::unbounded_channel();
            let lane = Arc::new(TestLane::default());
            let tokens = (CancellationToken::new(), CancellationToken::new());
            let (traffic, backlog) = (Arc::new(Traffic::default()), Arc::new(Backlog::default()));
            let (t, b, l) = (traffic.clone(), backlog.clone(), lane.clone());
            let writer = tokio::spawn(async move {
                let reason = Mutex::new(String::new());
                writer_task(client, ctrl_rx, &*l, tokens, &reason, (&t, &b)).await;
            });
            Rig { server, ctrl_tx, lane, traffic, backlog, writer }
        }

        /// Ask the writer to close; then `read` reads what it wrote until
        /// the end of stream, and the writer must have ended.
        async fn close_and_read<R>(&mut self, read: impl AsyncFnOnce(&mut Server) -> R) -> R {
            let (done_tx, done_rx) = oneshot::channel();
            self.ctrl_tx.send(Out::Close(Some(done_tx))).expect("queued");
            let got = read(&mut self.server).await;
            done_rx.await.expect("closed");
            (&mut self.writer).await.expect("writer");
            got
        }
    }

    /// A frame as the first test reads it back: a 4-byte length, a lane tag
    /// (`C` or `D`) and an index.
    fn frame(tag: u8, i: u32) -> Bytes {
        let mut f = Vec::from(100u32.to_le_bytes());
        f.push(tag);
        f.extend_from_slice(&i.to_le_bytes());
        f.resize(104, 0);
        Bytes::from(f)
    }

    /// A frame of `len` bytes (header included) whose body is all `tag`.
    fn filled(tag: u8, len: usize) -> Bytes {
        let mut f = Vec::from(((len - 4) as u32).to_le_bytes());
        f.resize(len, tag);
        Bytes::from(f)
    }

    /// Read frames made by [`filled`] until the end of stream: each one's
    /// tag and length, after checking it is whole and not mixed with
    /// another.
    async fn read_filled(server: &mut Server) -> Vec<(u8, usize)> {
        let mut got = Vec::new();
        let mut head = [0u8; 4];
        while server.read_exact(&mut head).await.is_ok() {
            let mut body = vec![0u8; u32::from_le_bytes(head) as usize];
            server.read_exact(&mut body).await.expect("a whole frame");
            let tag = body[0];
            assert!(body.iter().all(|&b| b == tag), "frame {tag} is mixed with another");
            got.push((tag, body.len() + 4));
        }
        got
    }

    /// A control frame queued while a large batch of stream data is being
    /// written to a slow reader goes out at the next frame boundary, not
    /// behind the whole batch; every frame arrives whole, once, and stream
    /// data in order. (Before: the cancel acknowledgement of a chaos run
    /// with 1-byte writes waited behind a window of stream data for more
    /// than `cancel_ack_timeout`.)
    #[tokio::test]
    async fn a_control_frame_overtakes_a_batch_of_stream_data_being_written() {
        let mut rig = Rig::start(256);
        // 4,000 frames of 104 bytes: more than `COALESCE_LIMIT`, so what a
        // stopped write leaves is itself more than a batch (with less, the
        // control frames were drained behind a carry of any size; with more,
        // they waited until the carry shrank below the limit).
        const N: u32 = 4000;
        for i in 0..N {
            let wake = rig.lane.with_lane(|l| l.push_frame(codec::Encoded::Whole(frame(b'D', i)))).expect("queued");
            if wake {
                rig.lane.ready().notify_one();
            }
        }
        // The writer takes all 4,000 (416 KB) into one batch and blocks on
        // the full pipe; then the control frame comes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        rig.ctrl_tx.send(Out::Frame(codec::Encoded::Whole(frame(b'C', 0)), true)).expect("queued");
        rig.backlog.add(Backlog::cost(104));
        let seen = rig
            .close_and_read(async |server| {
                let mut seen = Vec::new();
                let mut f = [0u8; 104];
                while server.read_exact(&mut f).await.is_ok() {
                    assert_eq!(&f[..4], &100u32.to_le_bytes(), "a frame boundary was lost");
                    seen.push((f[4], u32::from_le_bytes([f[5], f[6], f[7], f[8]])));
                    // A slow reader.
                    tokio::task::yield_now().await;
                }
                seen
            })
            .await;
        let at = seen.iter().position(|&(tag, _)| tag == b'C').expect("the control frame arrived");
        let data: Vec<u32> = seen.iter().filter(|&&(tag, _)| tag == b'D').map(|&(_, i)| i).collect();
        assert_eq!(data, (0..N).collect::<Vec<_>>(), "stream data lost, repeated or reordered");
        assert!(at < 10, "the control frame waited behind {at} stream frames");
        assert_eq!(rig.traffic.msgs_out.load(Ordering::Relaxed), u64::from(N) + 1);
        assert_eq!(rig.traffic.bytes_out.load(Ordering::Relaxed), 104 * (u64::from(N) + 1));
        assert_eq!(rig.backlog.queued(), 0, "what was owed is paid once written");
    }

    /// Large control frames are written from their own buffers, in their
    /// place among the small ones: every frame arrives whole and in order.
    #[tokio::test]
    async fn large_control_frames_keep_their_place() {
        large_control_frames_case(Rig::start(64 * 1024)).await;
    }

    /// The same over a Unix socket, whose writes are vectored.
    #[tokio::test]
    async fn large_control_frames_keep_their_place_on_a_vectored_socket() {
        large_control_frames_case(Rig::start_unix()).await;
    }

    async fn large_control_frames_case(mut rig: Rig) {
        // Sizes of the frames, in order: small ones between large ones
        // (`BIG_FRAME` and over), two large ones in a row, a large one last.
        let sizes = [104, 200_000, 104, 104, BIG_FRAME, 70_000, 104, 300_000];
        for (i, &len) in sizes.iter().enumerate() {
            let f = filled(i as u8, len);
            // Odd ones in two parts, as `codec::encode_parts` makes them.
            let out = if i % 2 == 1 {
                codec::Encoded::Parts { head: f.slice(..10), body: f.slice(10..) }
            } else {
                codec::Encoded::Whole(f)
            };
            rig.ctrl_tx.send(Out::Frame(out, false)).expect("queued");
        }
        // Everything is queued before the writer first runs: one batch.
        let got = rig.close_and_read(read_filled).await;
        let want: Vec<(u8, usize)> = sizes.iter().enumerate().map(|(i, &len)| (i as u8, len)).collect();
        assert_eq!(got, want, "frames lost, cut or reordered");
        assert_eq!(rig.traffic.msgs_out.load(Ordering::Relaxed), sizes.len() as u64);
        assert_eq!(rig.traffic.bytes_out.load(Ordering::Relaxed), sizes.iter().sum::<usize>() as u64);
    }

    /// Large stream frames are moved into the data lane, not copied, and
    /// keep their place among the small ones appended around them.
    #[tokio::test]
    async fn large_frames_in_the_data_lane_keep_their_place() {
        large_lane_frames_case(Rig::start(64 * 1024)).await;
    }

    /// The same over a Unix socket, whose writes are vectored.
    #[tokio::test]
    async fn large_frames_in_the_data_lane_keep_their_place_on_a_vectored_socket() {
        large_lane_frames_case(Rig::start_unix()).await;
    }

    async fn large_lane_frames_case(mut rig: Rig) {
        let sizes = [300_000, 104, 104, BIG_FRAME, 104, 200_000, 100_000, 104];
        let mut moved = 0;
        // The writer takes the lane only when notified: all of it is
        // queued first.
        for (i, &len) in sizes.iter().enumerate() {
            let f = filled(i as u8, len);
            let at = f.as_ptr();
            let wake = rig.lane.with_lane(|l| {
                let wake = l.push_frame(codec::Encoded::Whole(f)).expect("queued");
                // A large frame is the lane's last segment, in its own buffer.
                if len >= BIG_FRAME && l.sealed.last().is_some_and(|seg| seg.bytes.as_ptr() == at) {
                    moved += 1;
                }
                wake
            });
            assert_eq!(wake, i == 0, "only the first frame finds the lane empty");
        }
        assert_eq!(moved, 4, "every large frame was moved, not copied");
        rig.lane.ready().notify_one();
        let got = rig.close_and_read(read_filled).await;
        let want: Vec<(u8, usize)> = sizes.iter().enumerate().map(|(i, &len)| (i as u8, len)).collect();
        assert_eq!(got, want, "frames lost, cut or reordered");
        assert_eq!(rig.traffic.msgs_out.load(Ordering::Relaxed), sizes.len() as u64);
    }

    /// Frames that come in parts, a large part lent by its sender (a
    /// stream value holding a large `furrow::Bytes`), go out from those
    /// parts, never copied; a control frame queued while they are written
    /// to a slow reader goes out between two frames, never between the
    /// parts of one; everything arrives whole and in order.
    #[tokio::test]
    async fn frames_in_parts_are_written_from_their_parts_and_never_cut() {
        frames_in_parts_case(Rig::start(4096)).await;
    }

    /// The same over a Unix socket, whose writes are vectored: a call may
    /// stop in the middle of any part, and the control frame must still
    /// come between two frames.
    #[tokio::test]
    async fn frames_in_parts_are_never_cut_on_a_vectored_socket() {
        frames_in_parts_case(Rig::start_unix()).await;
    }

    async fn frames_in_parts_case(mut rig: Rig) {
        const N: u8 = 12;
        let mut lent = Vec::new();
        for i in 0..N {
            // Odd ones small enough to be copied into the lane, joined.
            let len = if i % 2 == 1 { 3000 } else { 100_000 + usize::from(i) };
            let f = filled(i, len);
            let body = f.slice(10..len - 5);
            let out = codec::Encoded::Gather(vec![f.slice(..10), body.clone(), f.slice(len - 5..)]);
            let wake = rig.lane.with_lane(|l| {
                let wake = l.push_frame(out).expect("queued");
                if len >= BIG_FRAME {
                    // The large part is a segment of its own: the sender's
                    // buffer, not a copy.
                    assert!(l.sealed.iter().any(|seg| seg.bytes.as_ptr() == body.as_ptr()), "frame {i} was copied");
                }
                wake
            });
            lent.push(body);
            if wake {
                rig.lane.ready().notify_one();
            }
        }
        // Read every frame (N of data, one of control), slowly.
        let mut got = Vec::new();
        let mut head = [0u8; 4];
        while got.len() < usize::from(N) + 1 {
            rig.server.read_exact(&mut head).await.expect("a frame header");
            let mut body = vec![0u8; u32::from_le_bytes(head) as usize];
            rig.server.read_exact(&mut body).await.expect("a whole frame");
            let tag = body[0];
            assert!(body.iter().all(|&b| b == tag), "frame {tag} is mixed with another");
            got.push(tag);
            if got.len() == 2 {
                // The writer is in the middle of the stream data: a control
                // frame now.
                rig.ctrl_tx.send(Out::Frame(codec::Encoded::Whole(filled(b'C', 104)), false)).expect("queued");
            }
            tokio::task::yield_now().await;
        }
        assert!(rig.close_and_read(read_filled).await.is_empty(), "more than was sent");
        let data: Vec<u8> = got.iter().copied().filter(|&t| t != b'C').collect();
        assert_eq!(data, (0..N).collect::<Vec<_>>(), "stream frames lost, repeated or reordered");
        assert_eq!(got.iter().filter(|&&t| t == b'C').count(), 1, "the control frame arrived once");
        let at = got.iter().position(|&t| t == b'C').expect("the control frame");
        assert!(at < usize::from(N), "the control frame waited behind every stream frame");
        assert!(lent.iter().all(|b| b.is_unique()), "a lent part is still held after the writer ended");
    }

    /// A vectored writer that takes at most `chunk` bytes per call, across
    /// the slices it is given, keeps them, and counts its calls: how many
    /// calls the writer makes, and whether a call that stops in the middle
    /// of a slice is resumed exactly there.
    struct Trickle {
        got: Arc<Mutex<Vec<u8>>>,
        calls: Arc<AtomicU64>,
        chunk: usize,
    }

    impl tokio::io::AsyncWrite for Trickle {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }
        fn poll_write_vectored(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let mut got = crate::sync::lock(&self.got);
            let mut left = self.chunk;
            for b in bufs {
                let n = left.min(b.len());
                got.extend_from_slice(&b[..n]);
                left -= n;
            }
            self.calls.fetch_add(1, Ordering::Relaxed);
            std::task::Poll::Ready(Ok(self.chunk - left))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// One batch: two control frames in parts with large parts between
    /// small frames, then three stream frames in three parts each (an
    /// envelope, a large lent value, a tail), all queued before the writer
    /// first runs. Returns the bytes written and the calls made.
    async fn one_batch_through(chunk: usize) -> (Vec<u8>, u64, Vec<u8>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicU64::new(0));
        let w = Trickle { got: got.clone(), calls: calls.clone(), chunk };
        let mut rig = Rig::start_on(Box::new(w), Box::new(tokio::io::empty()));
        let mut want = Vec::new();
        for (i, len) in [(1u8, 104), (2, 150_000), (3, 104), (4, 90_000)] {
            let f = filled(i, len);
            want.extend_from_slice(&f);
            let out = if len >= BIG_FRAME {
                codec::Encoded::Parts { head: f.slice(..10), body: f.slice(10..) }
            } else {
                codec::Encoded::Whole(f)
            };
            rig.ctrl_tx.send(Out::Frame(out, false)).expect("queued");
        }
        for i in 10u8..13 {
            let len = 100_000 + usize::from(i);
            let f = filled(i, len);
            want.extend_from_slice(&f);
            let out = codec::Encoded::Gather(vec![f.slice(..10), f.slice(10..len - 5), f.slice(len - 5..)]);
            let wake = rig.lane.with_lane(|l| l.push_frame(out)).expect("queued");
            if wake {
                rig.lane.ready().notify_one();
            }
        }
        rig.close_and_read(async |_| ()).await;
        assert_eq!(rig.traffic.msgs_out.load(Ordering::Relaxed), 7, "every frame counted once");
        assert_eq!(rig.traffic.bytes_out.load(Ordering::Relaxed), want.len() as u64);
        assert_eq!(rig.traffic.writes.load(Ordering::Relaxed), calls.load(Ordering::Relaxed), "writes counted");
        let got = std::mem::take(&mut *crate::sync::lock(&got));
        (got, calls.load(Ordering::Relaxed), want)
    }

    /// A batch goes out in one vectored call per lane when the socket
    /// takes it all: the control frames, large parts and all, then the
    /// stream frames, envelopes, lent values and tails together. (One
    /// call per part before: 4 for the control frames, 9 for the stream.)
    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_in_parts_goes_out_in_one_call_per_lane() {
        let (got, calls, want) = one_batch_through(usize::MAX).await;
        assert!(got == want, "the bytes written differ from the frames queued");
        assert_eq!(calls, 2, "one call for the control frames, one for the stream");
    }

    /// A socket that takes a few bytes at a time stops the writer's calls
    /// in the middle of slices, of small frames and of large parts alike:
    /// each is resumed exactly where it stopped, and the bytes are those
    /// queued, in order.
    #[tokio::test(flavor = "current_thread")]
    async fn a_short_vectored_write_is_resumed_where_it_stopped() {
        for chunk in [5, 4093, 65_537] {
            let (got, calls, want) = one_batch_through(chunk).await;
            assert!(got == want, "with {chunk} bytes per call, the bytes written differ from the frames queued");
            assert!(calls as usize >= want.len() / chunk, "{calls} calls of at most {chunk} bytes");
        }
    }
}

/// Model checks of `Backlog`'s pause protocol (docs/design.md, "Testing"):
/// `RUSTFLAGS="--cfg furrow_loom" cargo test -p furrow-actors --lib
/// --release loom`. The writer's side is the real `done`, the reader's the
/// real `pause`, `drained_to` and `resume` in the loop `pause_reading`
/// (route.rs) runs; what `pause_reading` adds around them (the local close
/// and the stall timer racing the wake-up in a `select!`) are more ways
/// out of the wait, not part of the wake-up, and are not modelled.
#[cfg(all(test, furrow_loom))]
mod loom_tests {
    use super::Backlog;
    use loom::sync::Arc;

    /// `pause_reading`'s wait, less the close and the stall timer: the
    /// reader returns only once it saw the backlog at `target` or below.
    fn paused_reader(b: &Backlog, target: usize) {
        b.pause();
        while let Some(woken) = b.drained_to(target) {
            loom::future::block_on(woken);
        }
        b.resume();
    }

    /// A reader paused on a backlog over its limit resumes once the
    /// writer drains it to half, whatever the interleaving: a wake-up
    /// lost between its look and its wait would leave it paused for good
    /// (loom reports that as a deadlock).
    #[test]
    fn loom_paused_reader_resumes_once_drained() {
        loom::model(|| {
            let b = Arc::new(Backlog::default());
            b.add(100);
            let w = b.clone();
            // The writer pays what it owed in two writes: the first
            // already brings the backlog to half.
            let writer = loom::thread::spawn(move || {
                w.done(60);
                w.done(40);
            });
            paused_reader(&b, 50);
            writer.join().expect("writer");
            assert_eq!(b.queued(), 0);
        });
    }

    /// Senders add while the writer drains: the count stays exact (no
    /// add or done is lost), and the reader still resumes.
    #[test]
    fn loom_count_is_exact_with_concurrent_adds() {
        loom::model(|| {
            let b = Arc::new(Backlog::default());
            b.add(100);
            let (w, s) = (b.clone(), b.clone());
            let writer = loom::thread::spawn(move || w.done(100));
            let sender = loom::thread::spawn(move || s.add(10));
            paused_reader(&b, 50);
            writer.join().expect("writer");
            sender.join().expect("sender");
            assert_eq!(b.queued(), 10);
        });
    }
}
