//! The actor's channels: the one place a handshaken connection becomes a
//! channel the actor keeps.
//!
//! Every connection, whoever dialled it, ends its handshake in
//! [`Actor::open_channel`], which starts the channel (with this actor's
//! limits, as the `Dispatch` of its `Start`s, its tasks on the actor's
//! tracker) and records it where its kind of link is kept: with the other
//! channels (closed at shutdown), as the parent channel (whose loss ends
//! the actor), or as a child's (whose process the actor then owns).

use super::{Actor, ActorDispatch, lock};
use crate::ipc::transport::BoxWrite;
use crate::ipc::{Channel, FrameReader, Limits};
use crate::spawn::ChildProc;
use furrow_proto::Aid;
use std::sync::Arc;

/// A connection whose handshake is done: what a channel starts on.
pub(crate) struct Handshaken {
    /// Its reading half (it may hold bytes read past the handshake).
    pub(crate) reader: FrameReader,
    pub(crate) write: BoxWrite,
    /// Who the peer is, as checked at the handshake.
    pub(crate) peer: Aid,
    /// The connecting process's pid (`SO_PEERCRED`, UDS only).
    pub(crate) peer_pid: Option<u32>,
    /// The most dialogs the peer lets us have open at once, as it
    /// advertised in its `Aid` (`None`: it did not say; an older peer, or
    /// a child, whose bound is ours).
    pub(crate) peer_max_dialogs: Option<u64>,
}

/// What a new channel is to this actor, which decides who keeps it.
pub(crate) enum Link {
    /// We dialled a peer (`connect`, a lookup, the registry).
    Dialled,
    /// A peer dialled us.
    Accepted,
    /// The channel to our parent (a child dialled its parent): its loss
    /// ends this actor.
    Parent,
    /// The channel to a child we spawned, now ready: the actor owns its
    /// process from here on.
    Child(ChildProc),
}

impl Actor {
    /// Start a channel on the handshaken connection `hs` and keep it as
    /// `link` says. The one place a channel is started: its side (who
    /// dialled), its limits and its dispatch are decided here, so no
    /// caller can get them out of step.
    pub(crate) fn open_channel(self: &Arc<Self>, hs: Handshaken, link: Link) -> Arc<Channel> {
        let Handshaken { reader, write, peer, peer_max_dialogs, .. } = hs;
        // The side that dialled opens odd dialog ids: a child dialled its
        // parent, and a parent accepted its child.
        let dialer = matches!(link, Link::Dialled | Link::Parent);
        let chan = Channel::start(
            reader,
            write,
            peer,
            self.aid.clone(),
            dialer,
            Limits {
                peer_max_dialogs: peer_max_dialogs.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
                ..Limits::of(&self.config)
            },
            Arc::new(ActorDispatch(self.clone())),
            &self.tracker,
        );
        match link {
            Link::Dialled | Link::Accepted => self.register_channel(&chan),
            Link::Parent => {
                *lock(&self.parent) = Some(chan.clone());
                // The channel may have closed before it was recorded (the
                // parent died during our start), and then `on_closed`
                // found no parent channel to lose: check here, so that
                // case is not missed (seen: a child whose connection
                // dropped within 2 ms of `Ready` exited 0, 1 run in ~400).
                if chan.is_closed() {
                    self.lose_parent(chan.peer.clone());
                }
            }
            Link::Child(proc) => {
                self.register_channel(&chan);
                self.adopt_child(proc);
            }
        }
        chan
    }

    /// Keep `chan` until it closes (or shutdown closes it). A channel whose
    /// handshake finished after shutdown closed the others is closed at
    /// once: registered late, it would never be closed, and shutdown would
    /// wait for its tasks. (The flag is read and set under the map's lock,
    /// so no channel slips between the two.)
    fn register_channel(&self, chan: &Arc<Channel>) {
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
