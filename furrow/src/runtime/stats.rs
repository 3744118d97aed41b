//! The actor's side of the stats query (`furrow::runtime::stats`).

use super::{Actor, lock};
use crate::ipc::Channel;
use crate::remote::Failure;
use crate::stats::{ActorStats, ChannelStats};
use furrow_proto::Payload;
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl Actor {
    /// A snapshot of this actor's counters. Each lock is taken alone and
    /// briefly (the channel map, the parent, the children, then each
    /// channel's dialog map), never nested, so this can run beside any
    /// other runtime code.
    pub(crate) fn stats(&self) -> ActorStats {
        self.stats_with(None)
    }

    /// The stats, listing `asked_on` (the channel the query came over) even
    /// if the runtime does not hold it yet: a child serves its parent's
    /// first `Start` possibly before its parent channel is recorded.
    fn stats_with(&self, asked_on: Option<&Arc<Channel>>) -> ActorStats {
        let mut chans: Vec<Arc<Channel>> = lock(&self.channels).values().cloned().collect();
        chans.extend(lock(&self.parent).iter().cloned());
        chans.extend(asked_on.cloned());
        chans.sort_by_key(|c| c.id);
        chans.dedup_by_key(|c| c.id);
        let mut s = ActorStats {
            aid: self.aid.clone(),
            uptime: self.started.elapsed(),
            children: lock(&self.children).len(),
            supervised: crate::supervise::counts(),
            ..ActorStats::default()
        };
        for c in chans.iter().filter(|c| !c.is_closed()) {
            let n = c.dialog_counts();
            s.contexts_opened += n.contexts_opened;
            s.contexts_served += n.contexts_served;
            s.calls_opened += n.calls_opened;
            s.calls_served += n.calls_served;
            s.longest_wait = s.longest_wait.max(n.longest_wait);
            let t = &c.traffic;
            s.channels.push(ChannelStats {
                id: c.id,
                peer: c.peer.clone(),
                dialer: c.is_dialer(),
                msgs_in: t.msgs_in.load(Ordering::Relaxed),
                msgs_out: t.msgs_out.load(Ordering::Relaxed),
                bytes_in: t.bytes_in.load(Ordering::Relaxed),
                bytes_out: t.bytes_out.load(Ordering::Relaxed),
                writes: t.writes.load(Ordering::Relaxed),
                dialogs: n.contexts_opened + n.contexts_served + n.calls_opened + n.calls_served,
            });
        }
        s
    }

    /// The stats, encoded as the answer to the runtime request.
    // The shape every served function ends with (`Served`); the error path
    // is cold.
    #[allow(clippy::result_large_err)]
    pub(super) fn stats_payload(&self, asked_on: &Arc<Channel>) -> Result<Payload, Failure> {
        Payload::encode(&self.stats_with(Some(asked_on)))
            .map_err(|e| Failure::runtime(crate::ErrorKind::MsgTypeError, e.to_string()))
    }
}
