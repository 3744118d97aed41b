//! The actor's channels: the one place a handshaken connection becomes a
//! channel the actor keeps (closed at its shutdown).

use super::{Actor, lock};
use crate::ipc::Channel;
use std::sync::Arc;

impl Actor {
    pub(crate) fn set_parent(&self, chan: Arc<Channel>) {
        *lock(&self.parent) = Some(chan);
    }

    /// Keep `chan` until it closes (or shutdown closes it). A channel whose
    /// handshake finished after shutdown closed the others is closed at
    /// once: registered late, it would never be closed, and shutdown would
    /// wait for its tasks. (The flag is read and set under the map's lock,
    /// so no channel slips between the two.)
    pub(crate) fn register_channel(&self, chan: &Arc<Channel>) {
        let mut channels = lock(&self.channels);
        if self.channels_closed.load(std::sync::atomic::Ordering::Acquire) {
            drop(channels);
            tracing::debug!(chan = ?chan, "connected during shutdown: closing it");
            chan.abort();
            return;
        }
        channels.insert(chan.id, chan.clone());
    }
}
