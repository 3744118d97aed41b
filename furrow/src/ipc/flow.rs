//! Per-dialog flow control: the shared state around furrow-proto's
//! [`flow`](furrow_proto::flow) accounting, which decides.
//!
//! Backpressure is per stream, never per channel: the channel's reader
//! never blocks on a slow consumer (that would stall every other dialog on
//! the channel, cancel requests included). Instead:
//!
//! - the *receiver* of a stream grants the sender its window (messages and
//!   payload bytes) when it opens the stream, and grants back what it
//!   consumed, in batches;
//! - the *sender* spends credit per `Yield` and waits when what it would
//!   send does not fit;
//! - the channel's reader admits each `Yield` against the same rule; more
//!   than the window means the peer ignored its credit, or the stream was
//!   opened in overrun mode (unlimited credit) and the consumer is too
//!   slow: the receiver then fails with `StreamOverrun`, and further
//!   `Yield`s are dropped, so memory stays bounded either way.
//!
//! The two small locks (`send`, `recv`) are each held for a few integer
//! operations and never across an await; no other lock is taken under
//! them.

use furrow_proto::Aid;
use furrow_proto::flow::{Admit, Grant, RecvWindow, SendCredit, Window};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use tokio::sync::Notify;

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
    /// What the peer granted us to send.
    send: Mutex<SendCredit>,
    /// What we granted the peer, once the stream is open here.
    recv: Mutex<Option<RecvWindow>>,
    peer_stopped: AtomicBool,
    ended: AtomicBool,
    /// How the dialog ended, once the reader knows (first record wins).
    end: OnceLock<DialogEnd>,
    wake: Notify,
}

impl Flow {
    /// The peer granted `n` more messages ([`UNLIMITED`](furrow_proto::flow::UNLIMITED):
    /// any number) and `bytes` more payload bytes.
    pub(crate) fn grant(&self, n: u64, bytes: Option<u64>) {
        crate::sync::lock(&self.send).grant(n, bytes);
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

    fn blocked(&self) -> Option<Blocked> {
        if self.ended.load(Ordering::Acquire) {
            Some(Blocked::Ended)
        } else if self.peer_stopped.load(Ordering::Acquire) {
            Some(Blocked::PeerStopped)
        } else {
            None
        }
    }

    /// Take the credit for one message of `size` payload bytes, waiting for
    /// grants until it fits.
    ///
    /// # Cancel safety
    /// Cancel safe: credit is taken only when the future returns `Ok`.
    pub(crate) async fn acquire(&self, size: u64) -> Result<(), Blocked> {
        loop {
            if let Some(b) = self.blocked() {
                return Err(b);
            }
            // Register for a wake-up *before* trying, so a grant that lands
            // between the try and the wait is not missed.
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if crate::sync::lock(&self.send).try_spend(size) {
                return Ok(());
            }
            if self.blocked().is_some() {
                continue;
            }
            notified.await;
        }
    }

    /// Open the receive side with `window`; the first grant to send.
    pub(crate) fn open_window(&self, window: Window, overrun_mode: bool) -> Grant {
        let (rx, grant) = RecvWindow::open(window, overrun_mode);
        *crate::sync::lock(&self.recv) = Some(rx);
        grant
    }

    /// Called by the channel's reader for each incoming `Yield` of `size`
    /// payload bytes. A `Yield` before the stream is open here is over a
    /// window of nothing.
    pub(crate) fn admit(&self, size: u64) -> Admit {
        match crate::sync::lock(&self.recv).as_mut() {
            Some(rx) => rx.admit(size),
            None => Admit::Overrun { window: Window { msgs: 0, bytes: 0 } },
        }
    }

    /// A queued `Yield` of `size` bytes was taken out of the mailbox; the
    /// grant to send back, if one is due.
    pub(crate) fn consumed(&self, size: u64) -> Option<Grant> {
        crate::sync::lock(&self.recv).as_mut().and_then(|rx| rx.consume(size))
    }

    /// Most `Yield`s ever queued unconsumed at once.
    pub(crate) fn high_water(&self) -> usize {
        crate::sync::lock(&self.recv).as_ref().map_or(0, |rx| rx.high_water_msgs() as usize)
    }

    /// Most `Yield` payload bytes ever queued unconsumed at once.
    pub(crate) fn high_water_bytes(&self) -> u64 {
        crate::sync::lock(&self.recv).as_ref().map_or(0, |rx| rx.high_water_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn sender_waits_for_credit_and_wakes_on_grant() {
        let f = Arc::new(Flow::default());
        f.grant(1, Some(100));
        f.acquire(60).await.unwrap();
        let f2 = f.clone();
        let waiter = tokio::spawn(async move { f2.acquire(60).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "no credit: must wait");
        f.grant(1, None);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "a message but not its bytes: must wait");
        f.grant(0, Some(60));
        assert_eq!(waiter.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn waiting_sender_is_released_by_stop_and_end() {
        let f = Arc::new(Flow::default());
        let f2 = f.clone();
        let waiter = tokio::spawn(async move { f2.acquire(1).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        f.peer_stopped();
        assert_eq!(waiter.await.unwrap(), Err(Blocked::PeerStopped));
        f.end();
        assert_eq!(f.acquire(1).await, Err(Blocked::Ended));
    }

    #[test]
    fn admit_enforces_the_window_once() {
        let f = Flow::default();
        assert!(matches!(f.admit(1), Admit::Overrun { .. }), "nothing granted: nothing may arrive");
        let f = Flow::default();
        f.open_window(Window { msgs: 2, bytes: 1 << 20 }, true);
        assert_eq!(f.admit(1), Admit::Deliver);
        assert_eq!(f.admit(1), Admit::Deliver);
        assert!(matches!(f.admit(1), Admit::Overrun { .. }));
        assert_eq!(f.admit(1), Admit::Drop);
        assert_eq!(f.high_water(), 2);
    }
}
