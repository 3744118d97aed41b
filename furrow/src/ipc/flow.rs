//! Per-dialog flow signals: what the waiting sides of one dialog need to
//! be woken for. The accounting itself (credit in messages and bytes, the
//! window that admits what arrives) is the channel's session's, per dialog
//! (docs/design.md, "Flow control"); this holds only the events the
//! session's decisions produce:
//!
//! - a sender waiting for credit is woken when a `Credit` arrives
//!   (`notify`), when the peer stops its end, or when the dialog ends;
//! - the reader records how the dialog ended before the outcome reaches the
//!   mailbox (`record_end`), so an opener's body waiting on something else
//!   learns it at once;
//! - high-water marks of what the receive window held, for
//!   `Context::max_buffered`.
//!
//! Everything here is atomics and one `Notify`; no lock is held across an
//! await and none is shared with the session's.

use furrow_proto::Aid;
use furrow_proto::flow::Window;
// The flags and the wake-up carry the protocol (see `woken`): loom's
// under `--cfg furrow_loom` (see `loom_tests`), std's and tokio's otherwise.
use crate::sync::loomable::{AtomicBool, Notified, Notify};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the local side of a dialog is parked on, as a dump shows it
/// (docs/design.md, "Seeing inside").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// The peer's next message (an ack, `Started`, a stream value, the
    /// outcome: the dialog's state says which).
    Peer = 1,
    /// Credit to send a stream value: the peer has not consumed what it
    /// was sent.
    Credit = 2,
}

/// The instant dumps measure ages from: a process-wide origin, so an
/// instant fits in one atomic.
pub(crate) fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Now, in microseconds since [`origin`] (never 0: 0 means "not set").
pub(crate) fn now_micros() -> u64 {
    u64::try_from(origin().elapsed().as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Marks a dialog's local side as parked on a [`Wait`] while it lives.
/// Two relaxed stores on each end; only taken on the slow path (after a
/// look found nothing ready), so a stream that never waits pays nothing.
pub(crate) struct Parked<'a>(&'a Flow);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.waiting.store(0, Ordering::Relaxed);
    }
}

/// Why a sender cannot send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// The peer closed its end of the stream (`Stop`).
    PeerStopped,
    /// The dialog is over (outcome exchanged or channel closed).
    Ended,
}

/// How a dialog ended, as its channel's reader saw it: recorded when the
/// outcome is routed (or the channel lost), before anyone has read it from
/// the mailbox, where it may wait behind stream messages. A context's
/// opener watches this to interrupt its body (see `Context::interrupted`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DialogEnd {
    /// A `Return` arrived.
    Returned,
    /// An `Error` arrived (or the peer broke the dialog's protocol);
    /// `cancelled_by` is the canceller of a `ContextCancelled`.
    Failed { cancelled_by: Option<Aid> },
    /// The channel was lost before the outcome arrived.
    Lost,
}

/// Flow state of one dialog, shared by its local users and the channel's
/// reader.
#[derive(Debug, Default)]
pub(crate) struct Flow {
    peer_stopped: AtomicBool,
    ended: AtomicBool,
    /// How the dialog ended, once the reader knows (first record wins).
    end: OnceLock<DialogEnd>,
    wake: Notify,
    /// Most messages and payload bytes the receive window held at once
    /// (written by the reader only).
    high_water_msgs: AtomicU64,
    high_water_bytes: AtomicU64,
    /// What the local side waits for now (`Wait as u8`, 0: nothing), and
    /// since when (`now_micros`). Diagnostics only: relaxed, and a reader
    /// may pair a wait with the previous one's start.
    waiting: AtomicU8,
    waiting_since: AtomicU64,
    /// This side asked the peer to cancel the dialog (opener), or the peer
    /// asked this side (callee): when, and on whose behalf. First wins.
    cancel: OnceLock<(Instant, Aid)>,
}

impl Flow {
    /// Credit arrived: wake a waiting sender to try again.
    pub(crate) fn notify(&self) {
        self.wake.notify_waiters();
    }

    /// The peer sent `Stop`: our sends to it are pointless now.
    pub(crate) fn peer_stopped(&self) {
        self.peer_stopped.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }

    /// The dialog is over: wake every waiting sender.
    pub(crate) fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }

    /// The reader saw how the dialog ended (only the first record counts).
    /// Wakes every waiter; takes no lock.
    pub(crate) fn record_end(&self, how: DialogEnd) {
        let _ = self.end.set(how);
        self.wake.notify_waiters();
    }

    /// Whether the reader recorded the dialog's end.
    pub(crate) fn ended_already(&self) -> bool {
        self.end.get().is_some()
    }

    /// How the dialog ended, once the reader recorded it.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits for a record that stays.
    pub(crate) async fn ended_as(&self) -> DialogEnd {
        loop {
            // Register before checking, so a record that lands between the
            // check and the wait is not missed (as in `acquire`).
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(how) = self.end.get() {
                return how.clone();
            }
            notified.await;
        }
    }

    /// Why this dialog's sender cannot send, if it cannot at all.
    pub(crate) fn blocked(&self) -> Option<Blocked> {
        if self.ended.load(Ordering::Acquire) {
            Some(Blocked::Ended)
        } else if self.peer_stopped.load(Ordering::Acquire) {
            Some(Blocked::PeerStopped)
        } else {
            None
        }
    }

    /// A wake-up for the next `notify`, `peer_stopped` or end. Create it
    /// *before* looking at the state it waits for: every event here is a
    /// `notify_waiters`, which wakes each `Notified` created before it,
    /// polled or not, so an event between the look and the wait is not
    /// missed.
    pub(crate) fn woken(&self) -> Notified<'_> {
        self.wake.notified()
    }

    /// The reader admitted a `Yield`: the window holds `held` now.
    /// Only the reader writes, so a load and a store suffice (no RMW on
    /// the hot path unless the mark rises).
    pub(crate) fn note_held(&self, held: Window) {
        if held.msgs > self.high_water_msgs.load(Ordering::Relaxed) {
            self.high_water_msgs.store(held.msgs, Ordering::Relaxed);
        }
        if held.bytes > self.high_water_bytes.load(Ordering::Relaxed) {
            self.high_water_bytes.store(held.bytes, Ordering::Relaxed);
        }
    }

    /// Most messages the receive window ever held at once: received and
    /// not yet released by the consumer (see `furrow_proto::flow`).
    pub(crate) fn high_water(&self) -> usize {
        usize::try_from(self.high_water_msgs.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    /// Most payload bytes the receive window ever held at once.
    pub(crate) fn high_water_bytes(&self) -> u64 {
        self.high_water_bytes.load(Ordering::Relaxed)
    }

    /// The local side is about to wait for `what`, until the guard drops.
    pub(crate) fn park(&self, what: Wait) -> Parked<'_> {
        self.waiting_since.store(now_micros(), Ordering::Relaxed);
        self.waiting.store(what as u8, Ordering::Relaxed);
        Parked(self)
    }

    /// What the local side waits for, and for how long, if it waits.
    pub(crate) fn parked(&self) -> Option<(Wait, Duration)> {
        let what = match self.waiting.load(Ordering::Relaxed) {
            1 => Wait::Peer,
            2 => Wait::Credit,
            _ => return None,
        };
        let since = self.waiting_since.load(Ordering::Relaxed);
        Some((what, Duration::from_micros(now_micros().saturating_sub(since))))
    }

    /// A cancel of this dialog was asked on behalf of `by` (the first
    /// record stays).
    pub(crate) fn note_cancel(&self, by: &Aid) {
        if self.cancel.get().is_none() {
            let _ = self.cancel.set((Instant::now(), by.clone()));
        }
    }

    /// When a cancel was asked (how long ago), and by whom.
    pub(crate) fn cancel_asked(&self) -> Option<(Duration, Aid)> {
        self.cancel.get().map(|(at, by)| (at.elapsed(), by.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_waiter_registered_before_looking_is_woken_by_each_event() {
        let f = Arc::new(Flow::default());
        let f2 = f.clone();
        let waiter = tokio::spawn(async move {
            let w = f2.woken();
            tokio::pin!(w);
            w.as_mut().enable();
            w.await;
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        f.notify();
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").expect("task");
        assert_eq!(f.blocked(), None);
        f.peer_stopped();
        assert_eq!(f.blocked(), Some(Blocked::PeerStopped));
        f.end();
        assert_eq!(f.blocked(), Some(Blocked::Ended), "an end outranks a stop");
    }

    #[test]
    fn high_water_only_rises() {
        let f = Flow::default();
        f.note_held(Window { msgs: 3, bytes: 10 });
        f.note_held(Window { msgs: 1, bytes: 40 });
        assert_eq!((f.high_water(), f.high_water_bytes()), (3, 40));
    }
}

/// Model checks of the wake-up protocol (docs/design.md, "Testing"):
/// `RUSTFLAGS="--cfg furrow_loom" cargo test -p furrow-actors --lib
/// --release loom`. `Flow`'s side is the real code (its flags and
/// `Notify` are loom's under the cfg). The sender's loop is a copy of
/// `Channel::send_yield`'s (ipc/channel/mod.rs), with the session's credit
/// as a counter under a loom `Mutex` (it is under the session's lock
/// there) and the frame left out: that loop is async and reaches into the
/// whole channel, so it cannot run here as it is; keep the two in step.
#[cfg(all(test, furrow_loom))]
mod loom_tests {
    use super::{Blocked, DialogEnd, Flow};
    use loom::sync::{Arc, Mutex};

    /// `Channel::send_yield`'s loop: `woken` created before the looks at
    /// `blocked` and at the credit, then awaited if there was none.
    fn send_yield(flow: &Flow, credit: &Mutex<u32>) -> Result<(), Blocked> {
        loop {
            let woken = flow.woken();
            if let Some(b) = flow.blocked() {
                return Err(b);
            }
            {
                // `offer_frame`: the credit is spent under the session's lock.
                let mut c = credit.lock().expect("credit");
                if *c > 0 {
                    *c -= 1;
                    return Ok(());
                }
            }
            loom::future::block_on(woken);
        }
    }

    /// A sender waiting for credit is woken by the grant (`Route::Credit`:
    /// the session adds the credit under its lock, then the reader calls
    /// `notify`), wherever the grant falls in the sender's loop.
    #[test]
    fn loom_a_grant_wakes_a_sender_waiting_for_credit() {
        loom::model(|| {
            let flow = Arc::new(Flow::default());
            let credit = Arc::new(Mutex::new(0));
            let (f, c) = (flow.clone(), credit.clone());
            let reader = loom::thread::spawn(move || {
                *c.lock().expect("credit") += 1;
                f.notify();
            });
            assert_eq!(send_yield(&flow, &credit), Ok(()));
            reader.join().expect("reader");
        });
    }

    /// A sender with no credit is released by the peer's `Stop` and the
    /// dialog's end, in any order, and sees a reason it cannot send (the
    /// end if it came first, which then outranks the stop).
    #[test]
    fn loom_a_stop_or_an_end_releases_a_sender_without_credit() {
        loom::model(|| {
            let flow = Arc::new(Flow::default());
            let credit = Arc::new(Mutex::new(0));
            let (f1, f2) = (flow.clone(), flow.clone());
            let stopper = loom::thread::spawn(move || f1.peer_stopped());
            let ender = loom::thread::spawn(move || f2.end());
            assert!(send_yield(&flow, &credit).is_err());
            stopper.join().expect("stopper");
            ender.join().expect("ender");
            assert_eq!(flow.blocked(), Some(Blocked::Ended), "an end outranks a stop");
        });
    }

    /// The real `ended_as` (async, run by loom's `block_on`) learns the
    /// end the reader records, wherever the record falls.
    #[test]
    fn loom_ended_as_learns_the_recorded_end() {
        loom::model(|| {
            let flow = Arc::new(Flow::default());
            let f = flow.clone();
            let reader = loom::thread::spawn(move || f.record_end(DialogEnd::Returned));
            assert_eq!(loom::future::block_on(flow.ended_as()), DialogEnd::Returned);
            reader.join().expect("reader");
        });
    }
}
