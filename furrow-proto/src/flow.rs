//! Stream flow control, counted in messages *and* payload bytes, with no
//! I/O.
//!
//! The receiver of a stream opens it with a **window**: at most `msgs`
//! messages and `bytes` payload bytes may be on their way or waiting
//! unconsumed. Its first `Credit` grants the whole window; as it consumes,
//! it grants back what it consumed (in batches, see
//! [`RecvWindow::consume`]). The sender keeps count of what it sent and was
//! not granted back yet (its *outstanding* traffic) and sends only what
//! fits.
//!
//! One exception keeps any message sendable, however large (up to the
//! frame limit): when no more than half the byte window is outstanding, the
//! next message goes even if it does not fit. So what a receiver holds is
//! bounded by `max(bytes, bytes / 2 + largest message)`, and a stream of
//! messages larger than its window still moves, one at a time.
//!
//! The receiver checks the same rule on what arrives ([`RecvWindow::admit`]):
//! a sender that ignores its credit is caught (`Overrun`) and what it sent
//! past its window is dropped, so memory stays bounded whatever the peer
//! does. In *overrun mode* the receiver grants unlimited credit and the
//! window only bounds what may wait unconsumed.
//!
//! ```
//! use furrow_proto::flow::{Admit, RecvWindow, SendCredit, Window};
//!
//! let window = Window { msgs: 4, bytes: 1000 };
//! let (mut rx, first) = RecvWindow::open(window, false);
//! let mut tx = SendCredit::default();
//! tx.grant(first.msgs, first.bytes);
//!
//! // 600 bytes fit; another 600 do not (600 outstanding is over half).
//! assert!(tx.try_spend(600));
//! assert_eq!(rx.admit(600), Admit::Deliver);
//! assert!(!tx.try_spend(600));
//!
//! // Consuming the first message grants its bytes back: the sender may go on.
//! let back = rx.consume(600).expect("half the window consumed: a grant");
//! tx.grant(back.msgs, back.bytes);
//! assert!(tx.try_spend(600));
//! ```

/// A stream's window: what may be outstanding at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Messages.
    pub msgs: u64,
    /// Payload bytes.
    pub bytes: u64,
}

/// A grant to send in a `Credit` message: `n` is `msgs`, `bytes` is
/// `bytes` (`None`: unlimited bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// More messages (`u64::MAX`: unlimited).
    pub msgs: u64,
    /// More payload bytes (`None`: no byte limit).
    pub bytes: Option<u64>,
}

/// Credit grant meaning "send as much as you like" (overrun mode).
pub const UNLIMITED: u64 = u64::MAX;

/// The sending side of one stream: what the peer granted, what was spent.
///
/// ```
/// use furrow_proto::flow::SendCredit;
/// let mut c = SendCredit::default();
/// assert!(!c.try_spend(1), "nothing granted yet");
/// c.grant(1, Some(10));
/// assert!(c.try_spend(3));
/// assert!(!c.try_spend(3), "one message granted");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendCredit {
    /// Messages granted and not spent.
    msgs: u64,
    /// The byte window (the first byte grant), once granted.
    window_bytes: Option<u64>,
    /// Bytes sent and not granted back yet.
    outstanding_bytes: u64,
    /// The peer granted unlimited messages (overrun mode).
    unlimited: bool,
}

impl SendCredit {
    /// The peer granted `msgs` more messages ([`UNLIMITED`]: any number)
    /// and `bytes` more bytes (`None`: no byte limit). The first byte grant
    /// is the window; later ones give back what the peer consumed.
    pub fn grant(&mut self, msgs: u64, bytes: Option<u64>) {
        if msgs == UNLIMITED {
            self.unlimited = true;
        } else {
            self.msgs = self.msgs.saturating_add(msgs);
        }
        if let Some(b) = bytes {
            match self.window_bytes {
                None => self.window_bytes = Some(b),
                // A peer granting back more than was outstanding is wrong;
                // never let it widen the window.
                Some(_) => self.outstanding_bytes = self.outstanding_bytes.saturating_sub(b),
            }
        }
    }

    /// Whether a message of `size` payload bytes may be sent now.
    pub fn can_send(&self, size: u64) -> bool {
        let msg_ok = self.unlimited || self.msgs > 0;
        let bytes_ok = match self.window_bytes {
            None => true,
            Some(w) => fits(self.outstanding_bytes, size, w),
        };
        msg_ok && bytes_ok
    }

    /// Spend credit for one message of `size` bytes if it may be sent now.
    pub fn try_spend(&mut self, size: u64) -> bool {
        if !self.can_send(size) {
            return false;
        }
        if !self.unlimited {
            self.msgs -= 1;
        }
        if self.window_bytes.is_some() {
            self.outstanding_bytes = self.outstanding_bytes.saturating_add(size);
        }
        true
    }

    /// Bytes sent and not granted back (0 without a byte window).
    pub fn outstanding_bytes(&self) -> u64 {
        self.outstanding_bytes
    }
}

/// The rule both sides apply: a message of `size` fits when it keeps the
/// outstanding bytes within the window, or when no more than half the
/// window is outstanding (so any message can eventually go).
fn fits(outstanding: u64, size: u64, window: u64) -> bool {
    outstanding.saturating_add(size) <= window || outstanding <= window / 2
}

/// What the receiver does with an arriving stream message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Queue it for the consumer.
    Deliver,
    /// The sender exceeded the window (first time): report it, drop the
    /// message.
    Overrun {
        /// The window that was exceeded.
        window: Window,
    },
    /// After an overrun: drop silently.
    Drop,
}

/// The receiving side of one stream: what is queued unconsumed and what
/// to grant back.
///
/// ```
/// use furrow_proto::flow::{Admit, RecvWindow, Window};
/// let (mut rx, first) = RecvWindow::open(Window { msgs: 2, bytes: 100 }, false);
/// assert_eq!((first.msgs, first.bytes), (2, Some(100)));
/// assert_eq!(rx.admit(10), Admit::Deliver);
/// assert_eq!(rx.admit(10), Admit::Deliver);
/// // A third message exceeds the window of 2 messages.
/// assert!(matches!(rx.admit(10), Admit::Overrun { .. }));
/// assert_eq!(rx.admit(10), Admit::Drop);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecvWindow {
    window: Window,
    /// Overrun mode: unlimited credit was granted.
    unlimited: bool,
    queued_msgs: u64,
    queued_bytes: u64,
    /// Consumed and not granted back yet (counts towards what the sender
    /// believes outstanding).
    to_grant_msgs: u64,
    to_grant_bytes: u64,
    overrun: bool,
    high_water_msgs: u64,
    high_water_bytes: u64,
}

impl RecvWindow {
    /// Open a stream with `window`; the grant to send first. In overrun
    /// mode the grant is unlimited, and the window only bounds what waits
    /// unconsumed.
    pub fn open(window: Window, overrun_mode: bool) -> (RecvWindow, Grant) {
        let window = Window { msgs: window.msgs.max(1), bytes: window.bytes.max(1) };
        let rx = RecvWindow {
            window,
            unlimited: overrun_mode,
            queued_msgs: 0,
            queued_bytes: 0,
            to_grant_msgs: 0,
            to_grant_bytes: 0,
            overrun: false,
            high_water_msgs: 0,
            high_water_bytes: 0,
        };
        let grant = if overrun_mode {
            Grant { msgs: UNLIMITED, bytes: None }
        } else {
            Grant { msgs: window.msgs, bytes: Some(window.bytes) }
        };
        (rx, grant)
    }

    /// The window.
    pub fn window(&self) -> Window {
        self.window
    }

    /// A message of `size` payload bytes arrived.
    ///
    /// What the sender counts as outstanding is at least what is queued
    /// here plus what was consumed and not granted back, so an honest
    /// sender never trips this check.
    pub fn admit(&mut self, size: u64) -> Admit {
        if self.overrun {
            return Admit::Drop;
        }
        let held_msgs = self.queued_msgs + if self.unlimited { 0 } else { self.to_grant_msgs };
        let held_bytes = self.queued_bytes + if self.unlimited { 0 } else { self.to_grant_bytes };
        if held_msgs + 1 > self.window.msgs || !fits(held_bytes, size, self.window.bytes) {
            self.overrun = true;
            return Admit::Overrun { window: self.window };
        }
        self.queued_msgs += 1;
        self.queued_bytes += size;
        self.high_water_msgs = self.high_water_msgs.max(self.queued_msgs);
        self.high_water_bytes = self.high_water_bytes.max(self.queued_bytes);
        Admit::Deliver
    }

    /// The consumer took a message of `size` bytes; the grant to send, if
    /// one is due: once half the window (in messages or bytes) was
    /// consumed since the last grant.
    ///
    /// Batching never strands a sender: a sender that cannot send has more
    /// than half the byte window outstanding (or no message credit), so
    /// once the consumer has taken everything, more than half the window
    /// waits to be granted back and the grant goes.
    pub fn consume(&mut self, size: u64) -> Option<Grant> {
        self.queued_msgs = self.queued_msgs.saturating_sub(1);
        self.queued_bytes = self.queued_bytes.saturating_sub(size);
        if self.unlimited {
            return None;
        }
        self.to_grant_msgs += 1;
        self.to_grant_bytes += size;
        if self.to_grant_msgs * 2 >= self.window.msgs || self.to_grant_bytes * 2 >= self.window.bytes {
            let g = Grant { msgs: self.to_grant_msgs, bytes: Some(self.to_grant_bytes) };
            self.to_grant_msgs = 0;
            self.to_grant_bytes = 0;
            Some(g)
        } else {
            None
        }
    }

    /// Messages queued unconsumed.
    pub fn queued_msgs(&self) -> u64 {
        self.queued_msgs
    }

    /// Payload bytes queued unconsumed.
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes
    }

    /// Most messages ever queued unconsumed at once.
    pub fn high_water_msgs(&self) -> u64 {
        self.high_water_msgs
    }

    /// Most payload bytes ever queued unconsumed at once.
    pub fn high_water_bytes(&self) -> u64 {
        self.high_water_bytes
    }

    /// The most payload bytes an honest sender can make this side hold,
    /// for messages of at most `largest` bytes.
    pub fn bound_bytes(&self, largest: u64) -> u64 {
        self.window.bytes.max(self.window.bytes / 2 + largest)
    }
}
