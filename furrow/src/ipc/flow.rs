//! Per-dialog flow control.
//!
//! Backpressure is per stream, never per channel: the channel's reader
//! never blocks on a slow consumer (that would stall every other dialog on
//! the channel, cancel requests included). Instead:
//!
//! - the *receiver* of a stream grants the sender credit (`Credit {n}`)
//!   when it opens the stream (its window) and again as it consumes;
//! - the *sender* spends one credit per `Yield` and waits when it has none;
//! - the channel's reader counts `Yield`s delivered to a dialog's mailbox
//!   and not yet consumed; more than the window means the peer ignored its
//!   credit, or the stream was opened in overrun mode (unlimited credit)
//!   and the consumer is too slow: the receiver then fails with
//!   `StreamOverrun`, and further `Yield`s are dropped, so memory stays
//!   bounded either way.

use furrow_proto::Aid;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use tokio::sync::Notify;

/// Credit grant meaning "send as much as you like" (overrun mode).
pub(crate) const UNLIMITED: u64 = u64::MAX;

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
    credit: AtomicU64,
    unlimited: AtomicBool,
    peer_stopped: AtomicBool,
    ended: AtomicBool,
    /// How the dialog ended, once the reader knows (first record wins).
    end: OnceLock<DialogEnd>,
    wake: Notify,
    queued: AtomicUsize,
    high_water: AtomicUsize,
    limit: AtomicUsize,
    overrun: AtomicBool,
}

impl Flow {
    /// The peer granted `n` more messages (or unlimited).
    pub(crate) fn grant(&self, n: u64) {
        if n == UNLIMITED {
            self.unlimited.store(true, Ordering::Release);
        } else {
            self.credit.fetch_add(n, Ordering::AcqRel);
        }
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

    fn try_take(&self) -> bool {
        self.unlimited.load(Ordering::Acquire)
            || self.credit.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1)).is_ok()
    }

    /// Take one credit, waiting for a grant if there is none.
    ///
    /// # Cancel safety
    /// Cancel safe: a credit is taken only when the future returns `Ok`.
    pub(crate) async fn acquire(&self) -> Result<(), Blocked> {
        loop {
            if let Some(b) = self.blocked() {
                return Err(b);
            }
            if self.try_take() {
                return Ok(());
            }
            // Register for a wake-up *before* re-checking, so a grant that
            // lands between the check and the wait is not missed.
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.blocked().is_some() || self.try_take_peek() {
                continue;
            }
            notified.await;
        }
    }

    fn try_take_peek(&self) -> bool {
        self.unlimited.load(Ordering::Acquire) || self.credit.load(Ordering::Acquire) > 0
    }

    /// Set the receive window (what may be queued unconsumed).
    pub(crate) fn set_limit(&self, n: usize) {
        self.limit.store(n, Ordering::Release);
    }

    /// Called by the channel's reader for each incoming `Yield`: false
    /// means "over the window": report an overrun once and drop it.
    pub(crate) fn admit(&self) -> Admit {
        if self.overrun.load(Ordering::Acquire) {
            return Admit::Drop;
        }
        let q = self.queued.fetch_add(1, Ordering::AcqRel) + 1;
        self.high_water.fetch_max(q, Ordering::AcqRel);
        let limit = self.limit.load(Ordering::Acquire);
        if q > limit {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            if self.overrun.swap(true, Ordering::AcqRel) { Admit::Drop } else { Admit::Overrun(limit) }
        } else {
            Admit::Deliver
        }
    }

    /// A queued `Yield` was taken out of the mailbox.
    pub(crate) fn consumed(&self) {
        let _ = self.queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| q.checked_sub(1));
    }

    /// Most `Yield`s ever queued unconsumed at once.
    pub(crate) fn high_water(&self) -> usize {
        self.high_water.load(Ordering::Acquire)
    }
}

/// What the reader does with an incoming `Yield`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    Deliver,
    Overrun(usize),
    Drop,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn sender_waits_for_credit_and_wakes_on_grant() {
        let f = Arc::new(Flow::default());
        f.grant(1);
        f.acquire().await.unwrap();
        let f2 = f.clone();
        let waiter = tokio::spawn(async move { f2.acquire().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "no credit: must wait");
        f.grant(1);
        assert_eq!(waiter.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn waiting_sender_is_released_by_stop_and_end() {
        let f = Arc::new(Flow::default());
        let f2 = f.clone();
        let waiter = tokio::spawn(async move { f2.acquire().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        f.peer_stopped();
        assert_eq!(waiter.await.unwrap(), Err(Blocked::PeerStopped));
        f.end();
        assert_eq!(f.acquire().await, Err(Blocked::Ended));
    }

    #[test]
    fn admit_enforces_the_window_once() {
        let f = Flow::default();
        f.set_limit(2);
        assert_eq!(f.admit(), Admit::Deliver);
        assert_eq!(f.admit(), Admit::Deliver);
        assert_eq!(f.admit(), Admit::Overrun(2));
        assert_eq!(f.admit(), Admit::Drop);
        assert_eq!(f.high_water(), 3);
    }
}
