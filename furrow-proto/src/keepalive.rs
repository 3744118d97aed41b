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
