//! What one channel allows its peer: the bounds that keep a peer, honest or
//! not, from growing an actor's memory or holding it forever
//! (docs/design.md, "Limits on a peer").

use crate::config::Config;
use std::time::Duration;

/// The per-channel bounds, taken from the actor's [`Config`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Largest frame accepted or sent.
    pub(crate) max_frame: usize,
    /// Probe after the first, give up after the second (`None`: off).
    pub(crate) keepalive: Option<(Duration, Duration)>,
    /// Dialogs the peer may have open here at once.
    pub(crate) max_dialogs_per_peer: usize,
    /// Dialogs we may have open at the peer at once, as it advertised in
    /// its handshake (`None`: it did not say; we assume our own bound).
    pub(crate) peer_max_dialogs: Option<usize>,
    /// Bytes queued for the peer before reading from it pauses.
    pub(crate) max_queued_output: usize,
    /// Bound on a frame's arrival once its first byte is in.
    pub(crate) frame_timeout: Duration,
}

impl Limits {
    /// The limits `config` sets.
    pub(crate) fn of(config: &Config) -> Limits {
        Limits {
            max_frame: config.max_frame,
            keepalive: config.keepalive,
            max_dialogs_per_peer: config.max_dialogs_per_peer,
            peer_max_dialogs: None,
            max_queued_output: config.max_queued_output,
            frame_timeout: config.frame_timeout,
        }
    }

    /// How long a paused reader waits for the writer to make progress
    /// before the peer is given up as not reading.
    pub(crate) fn stall(&self) -> Duration {
        self.keepalive.map_or(Duration::from_secs(30), |(_, silence)| silence)
    }
}

#[cfg(test)]
impl Default for Limits {
    fn default() -> Self {
        Limits::of(&Config::default())
    }
}
