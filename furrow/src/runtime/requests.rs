//! The runtime's own requests, `Start`s in the namespace [`RUNTIME_NS`]:
//! `cancel_actor`, `cancel_task` (answered at once with a `CancelAck`, and
//! never refused for the bound on open dialogs) and `stats`.

use super::{Actor, lock};
use crate::ErrorKind;
use crate::ipc::Channel;
use furrow_proto::{Aid, Cid, Msg, Payload, RUNTIME_NS};
use std::sync::Arc;

impl Actor {
    /// The runtime's own requests (`Start` on [`RUNTIME_NS`]).
    pub(super) fn runtime_request(
        self: &Arc<Self>,
        chan: &Arc<Channel>,
        cid: Cid,
        func: &str,
        kwargs: Payload,
        uid: Aid,
    ) {
        match func {
            "cancel_actor" => {
                tracing::debug!(actor = %self.aid, by = %uid, "cancel requested");
                crate::chaos::fault::at(crate::chaos::fault::Step::Cancel);
                let _mailbox = chan.accept_dialog(cid);
                // The ack is queued before anything is torn down, so it is
                // written before the channel closes.
                self.reply(
                    chan,
                    Msg::CancelAck { cid, pld: Payload::encode(&true).unwrap_or_default() },
                    "the acknowledgement of a cancel request",
                );
                self.request_cancel(Some(uid));
            }
            "cancel_task" => {
                #[derive(serde::Deserialize)]
                struct Args {
                    cid: Cid,
                }
                crate::chaos::fault::at(crate::chaos::fault::Step::Cancel);
                let _mailbox = chan.accept_dialog(cid);
                let found = match kwargs.decode::<Args>() {
                    // Polite: the task sees the cancellation and reports it
                    // as its outcome (it removes its own entry when done).
                    Ok(a) => lock(&self.tasks).get(&(chan.id, a.cid)).map(|h| h.scope.cancel(uid.clone())).is_some(),
                    Err(e) => {
                        self.refuse(chan, cid, ErrorKind::MsgTypeError, e.to_string());
                        return;
                    }
                };
                tracing::debug!(actor = %self.aid, by = %uid, cid, found, "task cancel requested");
                self.reply(
                    chan,
                    Msg::CancelAck { cid, pld: Payload::encode(&found).unwrap_or_default() },
                    "the acknowledgement of a cancel request",
                );
            }
            // Served like a registry request: acknowledged, one outcome.
            "stats" => {
                let (actor, asked_on) = (self.clone(), chan.clone());
                let name = format!("{RUNTIME_NS}::stats");
                self.serve_builtin(chan, cid, &name, Box::pin(async move { actor.stats_payload(&asked_on) }));
            }
            other => self.refuse(
                chan,
                cid,
                ErrorKind::FunctionNotFound,
                format!("no runtime request `{RUNTIME_NS}::{other}`"),
            ),
        }
    }
}
