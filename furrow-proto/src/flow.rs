//! Stream flow control, counted in messages *and* payload bytes, with no
//! I/O.
//!
//! The receiver of a stream opens it with a **window**: at most `msgs`
//! messages and `bytes` payload bytes may be on their way or waiting
//! unconsumed. Its first `Credit` grants the whole window; as it consumes,
//! it grants back what it consumed (in batches, see
//! [`Acks::consume`]). The sender keeps count of what it sent and was
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
//! let (mut rx, first, mut acks) = RecvWindow::open(window, false);
//! let mut tx = SendCredit::default();
//! tx.grant(first.msgs, first.bytes);
//!
//! // 600 bytes fit; another 600 do not (600 outstanding is over half).
//! assert!(tx.try_spend(600));
//! assert_eq!(rx.admit(600), Admit::Deliver);
//! assert!(!tx.try_spend(600));
//!
//! // Consuming the first message grants its bytes back: the sender may go on.
//! let done = acks.consume(600).expect("half the window consumed: a release");
//! rx.release(done);
//! let back = done.grant().expect("credit mode: granted back");
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

    /// Messages that may be sent before more credit comes (`None`: any
    /// number, the peer granted unlimited credit).
    ///
    /// ```
    /// use furrow_proto::flow::{SendCredit, UNLIMITED};
    /// let mut c = SendCredit::default();
    /// assert_eq!(c.msgs(), Some(0));
    /// c.grant(3, None);
    /// assert_eq!(c.msgs(), Some(3));
    /// c.grant(UNLIMITED, None);
    /// assert_eq!(c.msgs(), None);
    /// ```
    pub fn msgs(&self) -> Option<u64> {
        (!self.unlimited).then_some(self.msgs)
    }

    /// The byte window the peer granted, once it did (`None`: no byte
    /// limit, or nothing granted yet).
    pub fn window_bytes(&self) -> Option<u64> {
        self.window_bytes
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

/// The receiving side of one stream, as its channel's reader sees it: the
/// admission check on what arrives. Its other half, [`Acks`], is the
/// consumer's: it counts what was taken and decides when to grant it back.
///
/// The two are split so that each is touched by one party: the reader
/// admits under the channel's session (which it holds anyway to route the
/// message), and the consumer counts without any lock shared with the
/// reader; the two meet only once per batch ([`RecvWindow::release`]).
///
/// What this half counts as *held* is every message received and not yet
/// released: queued for the consumer, or consumed and not yet granted back.
/// That is exactly what an honest sender counts as outstanding, so an
/// honest sender never trips the check. (In overrun mode nothing is granted
/// back and the consumer releases each message as it takes it: held is
/// then exactly what waits unconsumed.)
///
/// ```
/// use furrow_proto::flow::{Admit, RecvWindow, Window};
/// let (mut rx, first, _acks) = RecvWindow::open(Window { msgs: 2, bytes: 100 }, false);
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
    held_msgs: u64,
    held_bytes: u64,
    overrun: bool,
    high_water_msgs: u64,
    high_water_bytes: u64,
}

/// The consumer's half of a receive window: counts what was consumed and
/// says when to release it ([`Release`]), granting it back to the sender
/// in credit mode.
///
/// ```
/// use furrow_proto::flow::{RecvWindow, Window};
/// let (mut rx, _, mut acks) = RecvWindow::open(Window { msgs: 4, bytes: 1000 }, false);
/// rx.admit(10);
/// rx.admit(10);
/// assert_eq!(acks.consume(10), None, "a quarter of the window: not yet");
/// let r = acks.consume(10).expect("half the window consumed");
/// assert_eq!(r.grant().map(|g| (g.msgs, g.bytes)), Some((2, Some(20))));
/// rx.release(r);
/// assert_eq!(rx.held_msgs(), 0);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acks {
    window: Window,
    /// Overrun mode: unlimited credit was granted, nothing is granted back.
    unlimited: bool,
    msgs: u64,
    bytes: u64,
}

/// Messages and bytes the consumer is done with, to release from the
/// receive window ([`RecvWindow::release`]) and, in credit mode, to grant
/// back to the sender ([`Release::grant`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Release {
    /// Messages consumed.
    pub msgs: u64,
    /// Payload bytes consumed.
    pub bytes: u64,
    credit: bool,
}

impl Release {
    /// The `Credit` to send for it; `None` in overrun mode, where the
    /// sender's credit is unlimited.
    pub fn grant(&self) -> Option<Grant> {
        self.credit.then_some(Grant { msgs: self.msgs, bytes: Some(self.bytes) })
    }
}

impl RecvWindow {
    /// Open the receiving side of a stream with `window`: both halves, and
    /// the first grant to send. In overrun mode the grant is unlimited and
    /// the window bounds only what waits unconsumed.
    pub fn open(window: Window, overrun_mode: bool) -> (RecvWindow, Grant, Acks) {
        let window = Window { msgs: window.msgs.max(1), bytes: window.bytes.max(1) };
        let rx =
            RecvWindow { window, held_msgs: 0, held_bytes: 0, overrun: false, high_water_msgs: 0, high_water_bytes: 0 };
        let grant = if overrun_mode {
            Grant { msgs: UNLIMITED, bytes: None }
        } else {
            Grant { msgs: window.msgs, bytes: Some(window.bytes) }
        };
        (rx, grant, Acks { window, unlimited: overrun_mode, msgs: 0, bytes: 0 })
    }

    /// Open the stream whose receive window lives in `slot`: `None` (and
    /// nothing changes) if it was opened already, since a stream opens
    /// once and a second consumer count would disagree with the window
    /// enforced. A slot that holds an [`unopened`](Self::unopened) window
    /// that already saw an overrun stays overrun.
    pub fn open_in(slot: &mut Option<RecvWindow>, window: Window, overrun_mode: bool) -> Option<(Grant, Acks)> {
        if slot.as_ref().is_some_and(RecvWindow::is_open) {
            return None;
        }
        let (mut rx, grant, acks) = RecvWindow::open(window, overrun_mode);
        rx.overrun = slot.as_ref().is_some_and(|prior| prior.overrun);
        *slot = Some(rx);
        Some((grant, acks))
    }

    /// Whether the stream was opened ([`open`](Self::open) takes at least
    /// one message; an unopened window takes none).
    pub fn is_open(&self) -> bool {
        self.window.msgs > 0
    }

    /// The window of a stream that is not open on this side: nothing may
    /// arrive, and what does is an overrun of a window of nothing.
    pub fn unopened() -> RecvWindow {
        RecvWindow {
            window: Window { msgs: 0, bytes: 0 },
            held_msgs: 0,
            held_bytes: 0,
            overrun: false,
            high_water_msgs: 0,
            high_water_bytes: 0,
        }
    }

    /// The window.
    pub fn window(&self) -> Window {
        self.window
    }

    /// A message of `size` payload bytes arrived.
    pub fn admit(&mut self, size: u64) -> Admit {
        if self.overrun {
            return Admit::Drop;
        }
        if self.held_msgs + 1 > self.window.msgs || !fits(self.held_bytes, size, self.window.bytes) {
            self.overrun = true;
            return Admit::Overrun { window: self.window };
        }
        self.held_msgs += 1;
        self.held_bytes += size;
        self.high_water_msgs = self.high_water_msgs.max(self.held_msgs);
        self.high_water_bytes = self.high_water_bytes.max(self.held_bytes);
        Admit::Deliver
    }

    /// `n` messages of `bytes` payload bytes in all arrived together, if
    /// the window holds them all without the rule for a message larger
    /// than the window: then `true`, and they are counted as `n` calls of
    /// [`admit`](Self::admit) would count them. Otherwise `false` and
    /// nothing changes: admit them one by one.
    pub fn admit_all(&mut self, n: u64, bytes: u64) -> bool {
        let fits_all = !self.overrun
            && self.held_msgs.saturating_add(n) <= self.window.msgs
            && self.held_bytes.saturating_add(bytes) <= self.window.bytes;
        if fits_all {
            self.held_msgs += n;
            self.held_bytes += bytes;
            self.high_water_msgs = self.high_water_msgs.max(self.held_msgs);
            self.high_water_bytes = self.high_water_bytes.max(self.held_bytes);
        }
        fits_all
    }

    /// `n` messages of `bytes` payload bytes in all arrived in one frame
    /// (`Yields`), to be admitted whole: [`Admit::Deliver`] if the stream
    /// is open and [`admit_all`](Self::admit_all) takes them, else an
    /// overrun as for a message over the window (or [`Admit::Drop`] after
    /// one).
    pub fn admit_frame(&mut self, n: u64, bytes: u64) -> Admit {
        if self.overrun {
            Admit::Drop
        // Before the stream is open, even an empty frame is one too many
        // (as a `Yield` is: the window is one of nothing).
        } else if self.is_open() && self.admit_all(n, bytes) {
            Admit::Deliver
        } else {
            self.overrun = true;
            Admit::Overrun { window: self.window }
        }
    }

    /// The consumer released what `r` counts.
    pub fn release(&mut self, r: Release) {
        self.held_msgs = self.held_msgs.saturating_sub(r.msgs);
        self.held_bytes = self.held_bytes.saturating_sub(r.bytes);
    }

    /// Messages received and not released.
    pub fn held_msgs(&self) -> u64 {
        self.held_msgs
    }

    /// Payload bytes received and not released.
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// Most messages ever held at once.
    pub fn high_water_msgs(&self) -> u64 {
        self.high_water_msgs
    }

    /// Most payload bytes ever held at once.
    pub fn high_water_bytes(&self) -> u64 {
        self.high_water_bytes
    }

    /// The most payload bytes an honest sender can make this side hold,
    /// for messages of at most `largest` bytes.
    pub fn bound_bytes(&self, largest: u64) -> u64 {
        self.window.bytes.max(self.window.bytes / 2 + largest)
    }
}

impl Acks {
    /// The consumer took a message of `size` bytes; what to release, if
    /// it is time: in credit mode once half the window (in messages or
    /// bytes) was consumed since the last release, in overrun mode at once
    /// (there the window bounds what waits unconsumed, which must be known
    /// exactly).
    ///
    /// Batching never strands a sender: a sender that cannot send has more
    /// than half the byte window outstanding (or no message credit), so
    /// once the consumer has taken everything, more than half the window
    /// waits to be granted back and the grant goes.
    pub fn consume(&mut self, size: u64) -> Option<Release> {
        self.msgs += 1;
        self.bytes += size;
        if self.unlimited || self.msgs * 2 >= self.window.msgs || self.bytes * 2 >= self.window.bytes {
            let r = Release { msgs: self.msgs, bytes: self.bytes, credit: !self.unlimited };
            self.msgs = 0;
            self.bytes = 0;
            Some(r)
        } else {
            None
        }
    }

    /// Consumed and not released yet.
    pub fn pending(&self) -> (u64, u64) {
        (self.msgs, self.bytes)
    }
}
