//! The channel's writer task, the only writer of the socket, and what it
//! drains: two lanes (control ahead of stream data), frames coalesced into
//! one write per wake, and the backlog of answers owed to the peer that
//! paces the reader.

use super::{Traffic, peer_gone, set_reason};
use crate::ipc::transport::BoxWrite;
use bytes::{Bytes, BytesMut};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
    /// that reads nothing by whether this moves.
    pub(super) written: AtomicU64,
    /// Set while the reader is paused, so the writer notifies only then.
    pub(super) paused: AtomicBool,
    /// The reader was paused at least once (a peer that did not read).
    pub(super) was_paused: AtomicBool,
    pub(super) drained: Notify,
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
        // SeqCst pairs with the reader's store of `paused` then load of
        // `queued`: either the reader sees this decrement, or this load
        // sees it paused and wakes it. No wake-up is lost.
        if self.paused.load(Ordering::SeqCst) {
            self.drained.notify_waiters();
        }
    }

    pub(super) fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }
}

pub(super) enum Out {
    /// A frame, and whether it counts towards the backlog (see `Backlog`).
    Frame(Bytes, bool),
    /// Flush what is queued, shut the write half down, then signal.
    Close(Option<oneshot::Sender<()>>),
}

/// Append a control-lane item to the batch: a frame (counting what it
/// owes), or the close request it is (returned).
fn take_ctrl(
    out: Out,
    buf: &mut BytesMut,
    frames: &mut u64,
    owed_bytes: &mut usize,
) -> Option<Option<oneshot::Sender<()>>> {
    match out {
        Out::Frame(f, owed) => {
            buf.extend_from_slice(&f);
            *frames += 1;
            if owed {
                *owed_bytes += Backlog::cost(f.len());
            }
            None
        }
        Out::Close(done) => Some(done),
    }
}

/// Most bytes coalesced into one write.
const COALESCE_LIMIT: usize = 256 * 1024;

/// The only writer of the socket. Drains the control lane before the data
/// lane and coalesces everything queued into one buffer per syscall.
pub(super) async fn writer_task(
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
    // Control frames may overtake stream data (that is what the lanes are
    // for), but a stream frame must never overtake a control frame queued
    // *before* it: a dialog's `Started` (control) precedes its first `Yield`
    // or the `Return` that follows it (data lane), and the peer's state
    // machine refuses them in the other order. So a stream frame is
    // appended only after the control lane is drained again *after* the
    // stream frame was taken: whoever queued the two did so in that order,
    // and taking the later one from its queue makes the earlier one visible
    // in its own (the queues synchronise their senders with the receiver).
    // (Found by the integration loop, 1 run in 79: a context that called
    // `started()` and returned at once reached its opener as a `Return`
    // before `Started`, when the writer found the control lane empty and
    // the data lane not, with both sent in between.)
    // A stream frame taken and not yet placed in a batch.
    let mut pending: Option<Bytes> = None;
    'outer: loop {
        // Wait for the first frame, unless one waits from the last batch.
        // `biased`: a control frame is always taken before stream data.
        // Both `recv`s are cancel safe, so the branch that loses the race
        // loses nothing.
        if pending.is_none() {
            pending = tokio::select! {
                biased;
                out = ctrl.recv() => {
                    closing = match out {
                        Some(out) => take_ctrl(out, &mut buf, &mut frames, &mut owed_bytes),
                        None => Some(None),
                    };
                    None
                }
                Some(f) = data.recv() => Some(f),
            };
        }
        // Coalesce whatever else is already queued, control first, and
        // each stream frame after the control frames queued before it.
        loop {
            while closing.is_none() && buf.len() < COALESCE_LIMIT {
                match ctrl.try_recv() {
                    Ok(out) => closing = take_ctrl(out, &mut buf, &mut frames, &mut owed_bytes),
                    Err(_) => break,
                }
            }
            if closing.is_none() && buf.len() >= COALESCE_LIMIT {
                // Full, and the control lane perhaps not drained: a pending
                // stream frame waits for the next batch, behind what is
                // left there.
                break;
            }
            // The control lane was drained *after* the pending stream frame
            // was taken: it may go now.
            if let Some(f) = pending.take() {
                buf.extend_from_slice(&f);
                frames += 1;
            }
            if closing.is_some() || buf.len() >= COALESCE_LIMIT {
                break;
            }
            match data.try_recv() {
                Ok(f) => pending = Some(f),
                Err(_) => break,
            }
        }
        if closing.is_some()
            && let Some(f) = pending.take()
        {
            buf.extend_from_slice(&f);
            frames += 1;
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
