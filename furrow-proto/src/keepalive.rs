//! Keepalive: telling a silent peer from a quiet one, with no I/O and no
//! clock (the caller passes the time in).
//!
//! Each side watches only what it *receives*. After `interval` with no byte
//! from the peer it sends a [`Ping`](crate::Msg::Ping), which the peer
//! answers with a [`Pong`](crate::Msg::Pong) at once; every byte that
//! arrives (a `Pong`, or anything else, whole frame or not) counts as a
//! sign of life. After `silence` with no byte the peer is declared gone.
//! Neither side needs to know the other's settings: the peer only answers.
//!
//! While the local side has stopped reading (backpressure), it cannot see
//! the peer's answers: [`Keepalive::pause`] stops the clock, and
//! [`Keepalive::resume`] restarts it as if something had just arrived.
//!
//! ```
//! use furrow_proto::keepalive::{Action, Keepalive};
//! use std::time::{Duration, Instant};
//!
//! let t0 = Instant::now();
//! let s = Duration::from_secs(1);
//! let mut k = Keepalive::new(t0, 2 * s, 6 * s);
//! assert_eq!(k.poll(t0 + s), Action::Wait(t0 + 2 * s));
//! // Two seconds of silence: probe (once).
//! assert_eq!(k.poll(t0 + 2 * s), Action::Ping(1));
//! assert_eq!(k.poll(t0 + 3 * s), Action::Wait(t0 + 6 * s));
//! // The answer (any byte) restarts the clock.
//! k.on_recv(t0 + 3 * s);
//! assert_eq!(k.poll(t0 + 4 * s), Action::Wait(t0 + 5 * s));
//! // Nothing after that: gone six seconds later.
//! assert!(matches!(k.poll(t0 + 5 * s), Action::Ping(2)));
//! assert_eq!(k.poll(t0 + 9 * s), Action::Dead { silent_for: 6 * s });
//! ```

use std::time::{Duration, Instant};

/// What the caller should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing until this instant (call [`Keepalive::poll`] again then, or
    /// earlier after [`Keepalive::on_recv`]).
    Wait(Instant),
    /// Send `Ping { seq }`, then wait.
    Ping(u64),
    /// Nothing arrived for longer than the allowed silence.
    Dead {
        /// How long the peer has been silent.
        silent_for: Duration,
    },
    /// Keepalive is paused (the caller is not reading).
    Paused,
}

/// The keepalive state of one channel.
#[derive(Clone, Debug)]
pub struct Keepalive {
    interval: Duration,
    silence: Duration,
    last_recv: Instant,
    /// A `Ping` was sent since the last byte arrived.
    pinged: bool,
    seq: u64,
    paused: bool,
}

impl Keepalive {
    /// Start watching at `now`: probe after `interval` of silence, give up
    /// after `silence` (raised to at least `interval`).
    pub fn new(now: Instant, interval: Duration, silence: Duration) -> Keepalive {
        Keepalive { interval, silence: silence.max(interval), last_recv: now, pinged: false, seq: 0, paused: false }
    }

    /// Bytes arrived from the peer.
    pub fn on_recv(&mut self, now: Instant) {
        self.last_recv = now;
        self.pinged = false;
    }

    /// The local side stopped reading.
    pub fn pause(&mut self) {
        self.paused = true;
    }

    /// The local side reads again: the peer gets a full allowance.
    pub fn resume(&mut self, now: Instant) {
        self.paused = false;
        self.on_recv(now);
    }

    /// The allowed silence.
    pub fn silence(&self) -> Duration {
        self.silence
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Instant) -> Action {
        if self.paused {
            return Action::Paused;
        }
        let quiet = now.saturating_duration_since(self.last_recv);
        if quiet >= self.silence {
            return Action::Dead { silent_for: quiet };
        }
        if !self.pinged {
            if quiet >= self.interval {
                self.pinged = true;
                self.seq += 1;
                return Action::Ping(self.seq);
            }
            return Action::Wait(self.last_recv + self.interval);
        }
        Action::Wait(self.last_recv + self.silence)
    }
}

/// A channel reader's clock: keepalive, and the bound on how long one frame
/// may take to arrive once begun (a peer that sends half a frame and stops
/// would otherwise hold its buffer forever). No I/O and no clock: the
/// caller passes in the time, how many bytes it has read so far, and the
/// frame in progress if any, at the instants [`Watch::check`] asks for.
///
/// Liveness is judged by bytes, not frames: a peer in the middle of sending
/// a large frame is alive. Arrivals are noticed at the next look, so a
/// silent peer is probed after one to two intervals.
///
/// ```
/// use furrow_proto::keepalive::{GiveUp, Watch};
/// use std::time::{Duration, Instant};
///
/// let t0 = Instant::now();
/// let s = Duration::from_secs(1);
/// let mut w = Watch::new(t0, Some((2 * s, 6 * s)), 4 * s, 0);
/// // Frame 1 begun (10 of 100 bytes) and never finished.
/// let (next, ping) = w.check(t0 + s, 10, Some((1, 10, Some(100)))).unwrap();
/// assert!(ping.is_none() && next > t0 + s);
/// let e = w.check(t0 + 5 * s, 10, Some((1, 10, Some(100)))).unwrap_err();
/// assert!(matches!(e, GiveUp::FrameStalled { have: 10, .. }));
/// ```
#[derive(Clone, Debug)]
pub struct Watch {
    keepalive: Option<Keepalive>,
    frame_timeout: Duration,
    /// How often to look when nothing else is due.
    period: Duration,
    /// Bytes read at the last look.
    seen: u64,
    /// The frame in progress at the last look (its number), and since when.
    partial: Option<(u64, Instant)>,
}

/// Why a [`Watch`] gives the peer up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// No byte for longer than the allowed silence, probes unanswered.
    Silent {
        /// How long the peer has been silent.
        silent_for: Duration,
        /// The silence allowed.
        allowed: Duration,
    },
    /// A frame begun did not arrive whole within the frame timeout.
    FrameStalled {
        /// The timeout.
        timeout: Duration,
        /// Bytes of the frame in.
        have: usize,
        /// Its announced length, once its header is in.
        total: Option<usize>,
    },
}

impl std::fmt::Display for GiveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GiveUp::Silent { silent_for, allowed } => write!(
                f,
                "peer silent for {:.1} s (no answer to keepalive probes; allowed silence {allowed:?})",
                silent_for.as_secs_f64()
            ),
            GiveUp::FrameStalled { timeout, have, total } => {
                let total = total.map_or_else(|| String::from("an incomplete header"), |t| format!("{t} bytes"));
                write!(f, "a frame did not arrive whole within {timeout:?}: {have} bytes of {total} in")
            }
        }
    }
}

impl Watch {
    /// Start watching at `now`, with `read` bytes read so far; keepalive is
    /// `(interval, allowed silence)`, `None` to disable it.
    pub fn new(now: Instant, keepalive: Option<(Duration, Duration)>, frame_timeout: Duration, read: u64) -> Watch {
        // A frame in progress is first seen at a look, so looking four
        // times per frame timeout bounds its real deadline to 1.25 times.
        let period = keepalive.map_or(frame_timeout / 4, |(every, _)| every.min(frame_timeout / 4));
        Watch {
            keepalive: keepalive.map(|(every, silence)| Keepalive::new(now, every, silence)),
            frame_timeout,
            period,
            seen: read,
            partial: None,
        }
    }

    /// When to look first, or next after a pause, from `now`.
    pub fn first_check(&self, now: Instant) -> Instant {
        now + self.period
    }

    /// Reading resumed at `now` after a pause (`read` bytes so far): the
    /// peer gets a full allowance.
    pub fn resumed(&mut self, now: Instant, read: u64) {
        if let Some(k) = &mut self.keepalive {
            k.resume(now);
        }
        self.seen = read;
        self.partial = None;
    }

    /// Look at `now`: `read` bytes read so far, and the frame in progress
    /// if any, as `(frame number, bytes in, announced length)`. Returns
    /// when to look next and the `Ping` to send, if one is due, or why the
    /// peer is given up.
    pub fn check(
        &mut self,
        now: Instant,
        read: u64,
        partial: Option<(u64, usize, Option<usize>)>,
    ) -> Result<(Instant, Option<u64>), GiveUp> {
        let mut next = now + self.period;
        if read != self.seen {
            self.seen = read;
            if let Some(k) = &mut self.keepalive {
                k.on_recv(now);
            }
        }
        match (partial, self.partial) {
            (None, _) => self.partial = None,
            (Some((frame, have, total)), Some((at, since))) if frame == at => {
                if now.duration_since(since) >= self.frame_timeout {
                    return Err(GiveUp::FrameStalled { timeout: self.frame_timeout, have, total });
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
            match k.poll(now) {
                Action::Wait(at) => next = next.min(at),
                Action::Ping(seq) => ping = Some(seq),
                Action::Dead { silent_for } => return Err(GiveUp::Silent { silent_for, allowed: k.silence() }),
                Action::Paused => {}
            }
        }
        Ok((next.max(now + Duration::from_millis(1)), ping))
    }
}
