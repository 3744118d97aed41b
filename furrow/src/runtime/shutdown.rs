//! How an actor ends: who asked it to and why (the first request wins),
//! the loss of its parent channel, and the shutdown that cancels its
//! tasks, ends its children, closes its channels and removes its socket
//! files.

use super::{Actor, lock};
use crate::context::scope::CancelScope;
use crate::discovery::member;
use crate::ipc::Channel;
use crate::spawn::ChildProc;
use furrow_proto::Aid;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::AbortHandle;

impl Actor {
    /// Who cancelled this actor and why, once it was cancelled.
    pub(crate) fn cancel_reason(&self) -> (Option<Aid>, String) {
        (lock(&self.canceller).clone(), lock(&self.cancel_why).clone())
    }

    /// Ask the whole actor to end, saying why (the first request wins).
    pub(crate) fn request_cancel_because(&self, by: Option<Aid>, why: &str) {
        {
            let mut w = lock(&self.cancel_why);
            if w.is_empty() {
                *w = why.to_owned();
            }
        }
        self.request_cancel(by);
    }

    /// The parent channel was lost with nobody having asked this actor to
    /// end: end, and say so with the exit status.
    pub(crate) fn lose_parent(&self, parent: Aid) {
        // Asked before (a cancel request that came through this very
        // channel): that is the reason, not the loss.
        if !self.cancel.is_cancelled() {
            self.request_cancel_because(Some(parent), PARENT_LOST);
        }
    }

    /// Whether the actor ended because its parent channel was lost, nobody
    /// having asked it to end before.
    pub(crate) fn parent_lost(&self) -> bool {
        *lock(&self.cancel_why) == PARENT_LOST
    }

    /// Ask the whole actor to end (the first canceller is remembered).
    pub(crate) fn request_cancel(&self, by: Option<Aid>) {
        {
            let mut c = lock(&self.canceller);
            if c.is_none() {
                *c = by;
            }
        }
        self.cancel.cancel();
    }

    /// End this actor: abort its tasks, end its children, close its
    /// channels (flushing what is queued), stop listening and remove its
    /// socket files.
    pub(crate) async fn shutdown(self: &Arc<Self>) {
        crate::chaos::fault::at(crate::chaos::fault::Step::Teardown);
        self.cancel.cancel();
        // Leave the registry first: from here on nobody should find us.
        member::leave(self);
        // Cancel every served task politely, on behalf of whoever cancelled
        // this actor, so each caller learns who it was; then give them the
        // grace period to report it before aborting what is left.
        let by = lock(&self.canceller).clone().unwrap_or_else(|| self.aid.clone());
        let handles: Vec<(Arc<CancelScope>, AbortHandle)> =
            lock(&self.tasks).values().map(|h| (h.scope.clone(), h.abort.clone())).collect();
        for (scope, _) in &handles {
            scope.cancel(by.clone());
        }
        self.serving.close();
        let bound = self.config.cancel_grace + Duration::from_millis(100);
        if tokio::time::timeout(bound, self.serving.wait()).await.is_err() {
            for (_, abort) in &handles {
                abort.abort();
            }
            // A task that never yields cannot be aborted: do not wait for
            // it forever. The process exits after this shutdown anyway,
            // which ends every thread.
            if tokio::time::timeout(Duration::from_millis(500), self.serving.wait()).await.is_err() {
                tracing::warn!(actor = %self.aid, "a task did not stop (it never yields); exiting without it");
            }
        }
        // Abort the accept loops and wait for them to be dropped: only then
        // are the listening sockets closed (and their files unlinked).
        let accept_loops: Vec<_> = lock(&self.listeners).drain(..).collect();
        for l in &accept_loops {
            l.abort();
        }
        for l in accept_loops {
            let _ = l.await;
        }
        // Children still alive here belong to nurseries that were dropped
        // without their teardown: end them (SIGTERM, then SIGKILL) and reap
        // them, all in parallel.
        let children: Vec<ChildProc> = lock(&self.children).drain().map(|(_, c)| c).collect();
        let term = self.config.term_timeout;
        futures::future::join_all(children.iter().map(|c| c.end_leftover(term))).await;
        self.reap_abandoned().await;
        let chans: Vec<Arc<Channel>> = {
            let mut channels = lock(&self.channels);
            self.channels_closed.store(true, std::sync::atomic::Ordering::Release);
            channels.drain().map(|(_, c)| c).collect()
        };
        let parent = lock(&self.parent).take();
        let closing = chans.iter().chain(parent.iter()).map(|c| async move {
            if tokio::time::timeout(Duration::from_secs(1), c.close()).await.is_err() {
                // A peer that stopped reading: give up on the flush.
                c.abort();
                c.wait_ended().await;
            }
        });
        futures::future::join_all(closing).await;
        tracing::debug!(actor = %self.aid, "shutdown: channels closed; waiting for socket tasks");
        // Channels that closed earlier (their peer left) are no longer in
        // the map, and handshakes in progress are in no map: wait for every
        // task that holds a socket. Handshakes end on `cancel`.
        // Every channel is closed by now, so this should be immediate. The
        // bound is well inside a parent's exit timeout: a stuck task must
        // not turn a graceful exit into a SIGTERM/SIGKILL (the process exit
        // releases every socket anyway), and the error says it happened.
        self.tracker.close();
        let bound = (self.config.exit_timeout / 2).min(Duration::from_secs(5));
        if tokio::time::timeout(bound, self.tracker.wait()).await.is_err() {
            tracing::error!(
                actor = %self.aid,
                "bug: {} socket task(s) still running {bound:?} after the channels closed \
                 ({} channel(s) registered, registry {}); exiting without them",
                self.tracker.len(),
                lock(&self.channels).len(),
                if lock(&self.registry).is_some() { "joined" } else { "not joined" },
            );
        }
        // Aborted accept loops drop their listeners (and unlink sockets)
        // asynchronously; remove the files here so they are gone on return.
        // Not the registry's: its listeners were awaited above and removed
        // their file if it was still theirs, and by now another root may
        // have bound a new one at that path (it took over when our channels
        // closed).
        crate::ipc::transport::remove_socket_files(&self.addrs());
        tracing::debug!(actor = %self.aid, "shutdown: done");
    }
}

/// The cancel reason of an actor whose parent channel was lost.
const PARENT_LOST: &str = "its channel to its parent was lost";
