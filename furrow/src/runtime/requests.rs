//! Serving the runtime's own requests (`furrow_proto::request`):
//! `cancel_actor`, `cancel_task` (answered at once with a `CancelAck`, and
//! never refused for the bound on open dialogs) and `stats`. What each is
//! called and carries on the wire is furrow-proto's; this is what the
//! actor does about it.

use super::{Actor, lock};
use crate::ipc::Channel;
use furrow_proto::request::{self, Request, RequestError};
use furrow_proto::{Aid, Cid, RUNTIME_NS};
use std::sync::Arc;

impl Actor {
    /// Serve `request`, which came as a `Start` on dialog `cid` from `uid`;
    /// `Err` is one that is not understood (answered with its error).
    pub(super) fn runtime_request(
        self: &Arc<Self>,
        chan: &Arc<Channel>,
        cid: Cid,
        request: Result<Request, RequestError>,
        uid: Aid,
    ) {
        match request {
            Ok(Request::CancelActor) => {
                tracing::debug!(actor = %self.aid, by = %uid, "cancel requested");
                crate::chaos::fault::at(crate::chaos::fault::Step::Cancel);
                let _mailbox = chan.accept_dialog(cid, &format!("{RUNTIME_NS}::cancel_actor"));
                // The ack is queued before anything is torn down, so it is
                // written before the channel closes.
                self.reply(chan, request::cancel_ack(cid, true), "the acknowledgement of a cancel request");
                self.request_cancel(Some(uid));
            }
            Ok(Request::CancelTask { cid: target }) => {
                crate::chaos::fault::at(crate::chaos::fault::Step::Cancel);
                let _mailbox = chan.accept_dialog(cid, &format!("{RUNTIME_NS}::cancel_task"));
                // Polite: the task sees the cancellation and reports it as
                // its outcome (it removes its own entry when done).
                let found = lock(&self.tasks).get(&(chan.id, target)).map(|h| h.scope.cancel(uid.clone())).is_some();
                tracing::debug!(actor = %self.aid, by = %uid, cid = target, found, "task cancel requested");
                self.reply(chan, request::cancel_ack(cid, found), "the acknowledgement of a cancel request");
            }
            // Served like a registry request: acknowledged, one outcome.
            Ok(Request::Stats) => {
                let (actor, asked_on) = (self.clone(), chan.clone());
                let name = format!("{RUNTIME_NS}::stats");
                self.serve_builtin(
                    chan,
                    cid,
                    &name,
                    Box::pin(async move { actor.stats_payload(&asked_on).map(Into::into) }),
                );
            }
            Ok(Request::Dump) => {
                let (actor, asked_on) = (self.clone(), chan.clone());
                let name = format!("{RUNTIME_NS}::dump");
                self.serve_builtin(
                    chan,
                    cid,
                    &name,
                    Box::pin(async move {
                        let tasks = crate::dump::task_dump().await;
                        actor.dump_payload(&asked_on, cid, tasks).map(Into::into)
                    }),
                );
            }
            Err(e) => self.refuse(chan, cid, e.kind(), e.to_string()),
        }
    }
}
