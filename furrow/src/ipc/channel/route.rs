//! The channel's reader task: the only reader of the socket. It feeds
//! every message to the session and acts on its route (start a function,
//! deliver to a dialog, answer a probe, report a violation), keeps the
//! reader's clock (keepalive, the frame deadline), and stops reading from a
//! peer that makes this actor queue too much for it (docs/design.md,
//! "Limits on a peer").

use super::{Channel, Dispatch, Inbound, PEER_CLOSED, peer_gone};
use crate::ipc::alarm::Alarm;
use crate::ipc::flow::DialogEnd;
use crate::ipc::reader::{Frame, FrameReader, ReadError};
use furrow_proto::keepalive::Watch;
use furrow_proto::session::Route;
use furrow_proto::{Cid, Msg, MsgKind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// How long the reader keeps reading after the writer found the peer gone.
const DRAIN: std::time::Duration = std::time::Duration::from_millis(500);

/// The only reader of the socket.
pub(super) async fn reader_task(chan: Arc<Channel>, mut reader: FrameReader, dispatch: Arc<dyn Dispatch>) {
    let mut run = Run::default();
    // Bytes read before the channel started (the handshake) are not its
    // traffic.
    let mut counted = reader.bytes_read();
    // Set when the writer failed: the peer is gone, but what it sent
    // before it went (a last `Return` or `Error`) is still in our receive
    // buffer and must reach its dialog, or a dying callee's error would be
    // lost to a race with our own write. Bounded: a peer that only shut
    // down its reading side never sends the end of stream.
    let mut draining: Option<tokio::time::Instant> = None;
    // The reader's clock (keepalive and the frame deadline) is furrow-proto's:
    // this loop only feeds it the time and what was read.
    // Its alarm is a kernel timer the runtime polls like a socket, not a
    // tokio timer: an armed tokio timer makes every worker park with a
    // timeout (see `ipc::alarm`).
    let start = std::time::Instant::now();
    let mut watch = Watch::new(start, chan.limits.keepalive, chan.limits.frame_timeout, counted);
    let mut alarm = Alarm::new(watch.first_check(start));
    let reason = loop {
        // Backpressure: too much waits to be written to this peer (it sends
        // and does not read). Stop reading from it until the writer has
        // drained half, so what it makes us queue stays bounded. Not while
        // draining a dead peer: nothing will be written any more.
        if draining.is_none() && chan.backlog.queued() > chan.limits.max_queued_output {
            match pause_reading(&chan).await {
                Ok(()) => {
                    let now = std::time::Instant::now();
                    watch.resumed(now, reader.bytes_read());
                    alarm.set(watch.first_check(now));
                    continue;
                }
                Err(reason) => break reason,
            }
        }
        // All branches are cancel safe: `FrameReader::fill` keeps partial
        // frames in its buffer, so losing the race to `closed`, to the
        // drain's deadline or to the alarm loses no byte (and a fire that
        // loses is kept for the next turn).
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
            () = alarm.fired() => match watch.check(std::time::Instant::now(), reader.bytes_read(), reader.partial()) {
                Ok((next, ping)) => {
                    if let Some(seq) = ping {
                        let _ = chan.send(&Msg::Ping { seq });
                    }
                    alarm.set(next);
                }
                Err(reason) => {
                    let reason = reason.to_string();
                    tracing::warn!(chan = ?chan, "giving the peer up: {reason}");
                    break reason
                }
            },
            filled = reader.fill() => {
                chan.traffic.last_in.store(super::super::flow::now_micros(), Ordering::Relaxed);
                // The end of the stream, or a read error: nothing to handle.
                if !matches!(filled, Ok(true)) {
                    let next = filled.map(|_| Err(String::from(PEER_CLOSED)));
                    if let Err(reason) = on_read(&chan, &dispatch, &reader, &mut counted, &mut run, next) {
                        break reason;
                    }
                    continue;
                }
                // A whole frame is in: it and the frames the same reads
                // brought in are handled here, not one trip through
                // `select!` each (the stream hot path). Bounded, so a local
                // close or the alarm waits at most a burst; stops early when
                // the backlog asks for a pause.
                let mut burst = 0;
                let stop = loop {
                    if burst == BURST || (draining.is_none() && chan.backlog.queued() > chan.limits.max_queued_output) {
                        break None;
                    }
                    burst += 1;
                    // A run of stream messages for one dialog goes as one
                    // (the stream hot path), when all of it may.
                    if let Some(r) = reader.peek_yield_run(RUN_FRAMES)
                        && deliver_yield_run(&chan, &mut reader, &mut counted, &mut run, &r)
                    {
                        continue;
                    }
                    // `None` here is "no whole frame buffered", not the
                    // end of the stream: only a read can tell that.
                    let next = match reader.next_buffered() {
                        Ok(None) => break None,
                        Ok(Some(msg)) => Ok(Ok(msg)),
                        Err(e) => Err(e),
                    };
                    if let Err(reason) = on_read(&chan, &dispatch, &reader, &mut counted, &mut run, next) {
                        break Some(reason);
                    }
                };
                // Never held across an await: what this burst read reaches
                // its mailbox before the reader waits for anything.
                run.flush();
                if let Some(reason) = stop {
                    break reason;
                }
            }
        }
    };
    tracing::debug!(chan = ?chan, "channel closed: {reason}");
    chan.mark_closed(reason);
    dispatch.on_closed(&chan);
    if chan.backlog.was_paused.load(Ordering::Relaxed) {
        give_memory_back();
    }
}

/// Most frames handled per wake of the reader, beyond the first.
const BURST: usize = 64;

/// Most frames in one run handed over whole (`deliver_yield_run`).
const RUN_FRAMES: usize = 1024;

/// Route the run of `Yield` frames `r` (just peeked) as one, if the
/// session says every one of them would be delivered: take it off the
/// buffer and hand it to the dialog's mailbox as one entry, after what the
/// burst gathered before it. `false`, and nothing taken, otherwise: the
/// frames then go one by one, and the session says what becomes of each.
fn deliver_yield_run(
    chan: &Arc<Channel>,
    reader: &mut FrameReader,
    counted: &mut u64,
    run: &mut Run,
    r: &furrow_proto::codec::YieldRun,
) -> bool {
    let mut slots = chan.lock_slots();
    let Some((slot, held)) = slots.on_recv_yield_run(r.cid, r.values, r.payload_bytes) else {
        return false;
    };
    slot.flow.note_held(held);
    // Earlier Yields of the same dialog, gathered one by one, go first.
    run.flush();
    let frames = reader.take_yield_run(r);
    let _ = slot.tx.send(Inbound::Frames(frames));
    drop(slots);
    // Counted as `on_read` counts: every byte read so far.
    let read = reader.bytes_read();
    chan.traffic.bytes_in.fetch_add(read - *counted, Ordering::Relaxed);
    chan.traffic.msgs_in.fetch_add(r.frames as u64, Ordering::Relaxed);
    *counted = read;
    true
}

/// Consecutive `Yield`s for one dialog, read in one burst and not yet in
/// its mailbox: they go there as one entry (`Inbound::Yields`), one queue
/// push and one wake-up of the consumer for the run instead of one per
/// message (the stream hot path).
///
/// Order: a dialog's messages reach its mailbox in the wire's order,
/// because the run is flushed before the reader routes any other message
/// (of any dialog: simplest, and a run is broken only where the wire
/// interleaves) and at the end of every burst, before the reader awaits
/// anything. Each `Yield` was checked by the session (state and window)
/// when it was read, as before; only its delivery is deferred, by at most
/// the rest of the burst. A run holds a clone of the mailbox's sender, so
/// a dialog that leaves the session meanwhile (its outcome cannot be in
/// the same run: that flushes it) still gets what was admitted before.
#[derive(Default)]
struct Run {
    cid: Cid,
    to: Option<tokio::sync::mpsc::UnboundedSender<Inbound>>,
    plds: Vec<furrow_proto::Payload>,
}

impl Run {
    /// Add a `Yield` for dialog `cid`, whose mailbox is `tx`.
    fn push(&mut self, cid: Cid, tx: &tokio::sync::mpsc::UnboundedSender<Inbound>, pld: furrow_proto::Payload) {
        if self.to.is_none() || self.cid != cid {
            self.flush();
            self.cid = cid;
            self.to = Some(tx.clone());
        }
        self.plds.push(pld);
    }

    /// Hand what is gathered to its mailbox.
    fn flush(&mut self) {
        let Some(tx) = self.to.take() else { return };
        let inbound = if self.plds.len() == 1 {
            self.plds.pop().map(Inbound::Yield)
        } else {
            Some(Inbound::Yields(std::mem::take(&mut self.plds)))
        };
        if let Some(i) = inbound {
            // A closed mailbox: its dialog is over and nobody reads.
            let _ = tx.send(i);
        }
    }
}

/// Handle what one read produced: a message (`Ok(Ok)`), the end of the
/// stream (`Ok(Err(reason))`), or a read error. `Err(reason)` when the
/// channel must close.
fn on_read(
    chan: &Arc<Channel>,
    dispatch: &Arc<dyn Dispatch>,
    reader: &FrameReader,
    counted: &mut u64,
    run: &mut Run,
    next: Result<Result<Frame, String>, ReadError>,
) -> Result<(), String> {
    match next {
        Ok(Ok(frame)) => {
            // One writer per counter: a relaxed add is all it takes.
            let read = reader.bytes_read();
            chan.traffic.bytes_in.fetch_add(read - *counted, Ordering::Relaxed);
            chan.traffic.msgs_in.fetch_add(1, Ordering::Relaxed);
            *counted = read;
            handle(chan, dispatch, run, frame);
            Ok(())
        }
        Ok(Err(reason)) => Err(reason),
        Err(ReadError::Decode(e)) => {
            // Frame boundary intact: answer and keep reading.
            chan.protocol_error(None, e.to_string());
            Ok(())
        }
        Err(ReadError::Io(e)) => Err(peer_gone(&e).unwrap_or_else(|| format!("read failed: {e}"))),
        Err(ReadError::Truncated(n)) => Err(format!("{PEER_CLOSED} in the middle of a frame ({n} bytes pending)")),
        Err(ReadError::Frame(fe)) => {
            chan.protocol_error(None, fe.to_string());
            Err(fe.to_string())
        }
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
    backlog.pause();
    let result = loop {
        // The look and the wake-up, in the order that loses none (see
        // `Backlog::drained_to` and `Backlog::done`; model-checked there).
        let Some(notified) = backlog.drained_to(limit / 2) else {
            break Ok(());
        };
        tokio::pin!(notified);
        notified.as_mut().enable();
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
    backlog.resume();
    result
}

/// Act on one message from the peer, as the session routes it. A `Yield`
/// comes as `Frame::Yield` (the stream hot path: no `Msg` is built, and
/// the session routes it by its dialog and size); one laid out otherwise
/// than the canonical way comes as a `Msg` and is routed the same.
fn handle(chan: &Arc<Channel>, dispatch: &Arc<dyn Dispatch>, run: &mut Run, frame: Frame) {
    let (cid, kind) = match frame {
        Frame::Yield(cid, _) => (Some(cid), MsgKind::Yield),
        // Each value of a `Yields` outside a run is routed as a `Yield`, so
        // the session admits (or finds an overrun at) each on its own. One
        // with no value is routed whole, for its state check.
        Frame::Yields(cid, plds) if !plds.is_empty() => {
            for pld in plds {
                handle(chan, dispatch, run, Frame::Yield(cid, pld));
            }
            return;
        }
        Frame::Yields(cid, _) => (Some(cid), MsgKind::Yields),
        Frame::Msg(ref m) => (m.cid(), m.kind()),
    };
    if kind != MsgKind::Yield {
        // Anything else may end or refer to a dialog whose run waits: the
        // run goes first (see `Run`).
        run.flush();
    }
    let mut slots = chan.lock_slots();
    let route = match &frame {
        Frame::Yield(cid, pld) => slots.on_recv_yield(*cid, pld.len() as u64),
        Frame::Yields(cid, plds) => slots.on_recv(&Msg::Yields { cid: *cid, plds: plds.clone() }),
        Frame::Msg(m) => slots.on_recv(m),
    };
    // The message itself, for the routes that take it (never a `Yield`'s).
    let msg = || frame.into_msg();
    match route {
        Route::Start => {
            drop(slots);
            if let Msg::Start { cid, ns, func, kwargs, uid } = msg() {
                dispatch.on_start(chan, cid, ns, func, kwargs, uid);
            }
        }
        Route::Refuse { kind: refusal, reason } => {
            drop(slots);
            if let Msg::Start { cid, ns, func, .. } = &msg() {
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
        // Gathered into the burst's run (see `Run` for why the order of a
        // dialog's messages stays the wire's).
        Route::Yield { data: slot, held } => {
            slot.flow.note_held(held);
            if let Msg::Yield { cid, pld } = msg() {
                run.push(cid, &slot.tx, pld);
            }
        }
        // Credit is the session's (already added); never queued behind
        // data: a sender waiting for it is woken at once.
        Route::Credit(slot) => slot.flow.notify(),
        Route::Overrun { data: slot, window } => {
            // After the run of what the window admitted.
            run.flush();
            let _ = slot.tx.send(Inbound::Overrun(window));
        }
        Route::Deliver(slot) => {
            if kind == MsgKind::Stop {
                slot.flow.peer_stopped();
            }
            let _ = slot.tx.send(Inbound::Msg(Box::new(msg())));
        }
        Route::Last(slot) => {
            drop(slots);
            let msg = msg();
            // Recorded before the mailbox sees it: an opener's body waiting
            // on something else learns the outcome at once (it may wait
            // behind stream messages).
            slot.flow.record_end(match &msg {
                Msg::Error { boxed_type_str, canceller, .. } => DialogEnd::Failed {
                    cancelled_by: crate::error::cancelled_by(boxed_type_str, canceller.as_ref()).cloned(),
                },
                _ => DialogEnd::Returned,
            });
            let _ = slot.tx.send(Inbound::Msg(Box::new(msg)));
        }
        Route::Broken { data, reason } => {
            drop(slots);
            // A broken `Yield` ends its dialog after what came before it.
            run.flush();
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
            if let Msg::Error { message, src_uid, .. } = &msg() {
                // The peer found something we sent unacceptable. Log it; the
                // dialog concerned (if any) ends when the peer closes or
                // answers.
                tracing::warn!(chan = ?chan, "peer {src_uid} reported: {message}");
            }
        }
        Route::Nothing => {}
    }
}
