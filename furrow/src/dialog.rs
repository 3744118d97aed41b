//! The opener's side of a dialog, shared by every kind of call.
//!
//! [`OpenDialog`] registers a dialog on a channel, sends its `Start`, and
//! hands out the peer's messages in order, already checked by the
//! `furrow-proto` state machine. `Portal::run` is the simplest user of it
//! (`Start → StartAck → Return | Error`); contexts add `Started`, stream
//! traffic and cancellation on top of the same type.
//!
//! Dropping an `OpenDialog` before its outcome arrived is a cancellation
//! (docs/guide.md, rule 5a): `Drop` enqueues a `cancel_task` request for the remote
//! task, without blocking and without waiting for its ack.

use crate::error::error_from_msg;
use crate::ipc::flow::Flow;
use crate::ipc::{Channel, Inbound};
use crate::{Error, Result};
use furrow_proto::request::{self, Request};
use furrow_proto::{Cid, FuncType, Msg, Payload, PayloadParts, RUNTIME_NS};
use std::sync::Arc;
use tokio::sync::mpsc;

/// One dialog this actor opened.
pub(crate) struct OpenDialog {
    chan: Arc<Channel>,
    cid: Cid,
    rx: mpsc::UnboundedReceiver<Inbound>,
    flow: Arc<Flow>,
    /// A context took the mailbox over, and its cancel-on-drop duty.
    handed_over: bool,
    /// Runtime requests are not themselves cancelled when dropped.
    cancel_on_drop: bool,
}

impl std::fmt::Debug for OpenDialog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenDialog(cid {} on {:?})", self.cid, self.chan)
    }
}

impl OpenDialog {
    /// The dialog's id.
    pub(crate) fn cid(&self) -> Cid {
        self.cid
    }

    /// Register a dialog and send its `Start`, without waiting for an
    /// opening permit: for runtime requests (never refused by the peer) and
    /// the one request an actor sends as it leaves.
    pub(crate) fn start(chan: &Arc<Channel>, ns: &str, func: &str, kwargs: Payload) -> Result<OpenDialog> {
        Self::start_with(chan, ns, func, kwargs.into(), None)
    }

    /// [`start`](Self::start) once the channel admits one more dialog (see
    /// `Channel::admit`): what every call and context does.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is sent before the permit is in.
    pub(crate) async fn start_admitted(
        chan: &Arc<Channel>,
        ns: &str,
        func: &str,
        kwargs: PayloadParts,
    ) -> Result<OpenDialog> {
        let permit = chan.admit().await;
        Self::start_with(chan, ns, func, kwargs, permit)
    }

    fn start_with(
        chan: &Arc<Channel>,
        ns: &str,
        func: &str,
        kwargs: PayloadParts,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<OpenDialog> {
        let name = if ns.is_empty() { func.to_owned() } else { format!("{ns}::{func}") };
        let (cid, rx, flow) = chan.open_dialog(permit, &name);
        let d = OpenDialog { chan: chan.clone(), cid, rx, flow, handed_over: false, cancel_on_drop: ns != RUNTIME_NS };
        let start =
            |kwargs| Msg::Start { cid, ns: ns.to_owned(), func: func.to_owned(), kwargs, uid: chan.local.clone() };
        // Arguments in parts (a large `furrow::Bytes` among them, lent)
        // are written from those parts; in one piece, as any message.
        let sent = if kwargs.parts().len() > 1 {
            chan.send_with_parts(&start(Payload::default()), &kwargs)
        } else {
            chan.send(&start(kwargs.into_payload()))
        };
        if let Err(e) = sent {
            // Nothing was sent: the dialog leaves the session (so `Drop`
            // finds it over and sends no cancel).
            chan.close_dialog(cid);
            return Err(match e {
                Error::FrameTooLarge { len, max, .. } => {
                    Error::FrameTooLarge { what: format!("the call of `{name}` (its arguments)"), len, max }
                }
                other => other,
            });
        }
        Ok(d)
    }

    /// The next message of the dialog. An `Error` from the peer, a
    /// protocol violation and a closed channel are returned as `Err` and
    /// end the dialog.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is removed from the mailbox only when it is
    /// returned.
    pub(crate) async fn next(&mut self) -> Result<Msg> {
        // Whether the dialog is over is the session's to say, not this
        // side's reading of message kinds: it leaves the session when its
        // outcome passes, and `Drop` asks the flow (see `is_over`).
        // Polled once before parking, never `try_recv` (it can block the
        // thread: see `Context::step`).
        let got = match futures::FutureExt::now_or_never(self.rx.recv()) {
            Some(m) => m,
            None => {
                let _parked = self.flow.park(crate::ipc::flow::Wait::Peer);
                self.rx.recv().await
            }
        };
        match got {
            Some(Inbound::Msg(msg)) => match *msg {
                msg @ Msg::Error { .. } => match msg.into_error() {
                    Ok(e) => Err(error_from_msg(e)),
                    Err(other) => Err(Error::Protocol {
                        peer: self.chan.peer.to_string(),
                        reason: format!("unexpected {:?}", other.kind()),
                    }),
                },
                msg => Ok(msg),
            },
            // The session routes a `Yield` only to a dialog whose stream
            // is open: never one still being opened, nor a plain call.
            Some(Inbound::Yield(_) | Inbound::Yields(_) | Inbound::Frames(_)) => Err(Error::Protocol {
                peer: self.chan.peer.to_string(),
                reason: "unexpected Yield: this dialog has no stream open".into(),
            }),
            Some(Inbound::Overrun(w)) => Err(crate::error::overrun(w)),
            Some(Inbound::Violation(v)) => Err(Error::Protocol { peer: self.chan.peer.to_string(), reason: v }),
            None => Err(self.chan.closed_error()),
        }
    }

    /// Whether the dialog is over: its outcome passed through the session
    /// (recorded before it reaches the mailbox, so a caller that read it
    /// always finds this true), it broke, its channel closed, or it left
    /// the session otherwise.
    fn is_over(&self) -> bool {
        self.flow.ended_already() || self.flow.blocked() == Some(crate::ipc::flow::Blocked::Ended)
    }

    /// Hand the dialog's mailbox over to a context, which takes over its
    /// cancel-on-drop duty. Returns (channel, cid, mailbox, flow).
    pub(crate) fn into_parts(mut self) -> (Arc<Channel>, Cid, mpsc::UnboundedReceiver<Inbound>, Arc<Flow>) {
        self.handed_over = true;
        let (tx_dummy, rx_dummy) = mpsc::unbounded_channel();
        drop(tx_dummy);
        let rx = std::mem::replace(&mut self.rx, rx_dummy);
        (self.chan.clone(), self.cid, rx, self.flow.clone())
    }

    /// Run the plain-call dialog to its end: the `Return` payload.
    pub(crate) async fn call_result(&mut self, name: &str) -> Result<Payload> {
        loop {
            match self.next().await? {
                Msg::StartAck { functype: FuncType::Asyncfunc, .. } => {}
                Msg::StartAck { functype, .. } => {
                    return Err(Error::usage(format!(
                        "`{name}` is a {functype:?} endpoint, not a plain function: open it with open_context"
                    )));
                }
                Msg::Return { pld, .. } => return Ok(pld),
                other => {
                    return Err(Error::Protocol {
                        peer: self.chan.peer.to_string(),
                        reason: format!("unexpected {:?} in a call", other.kind()),
                    });
                }
            }
        }
    }
}

/// How a runtime cancel request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelReply {
    /// The peer acknowledged it; `found` says whether there was still
    /// something to cancel (a `cancel_task` for a task that had ended
    /// already is acknowledged with `false`).
    Acked { found: bool },
    /// The peer is gone (before or while answering): nothing left to cancel.
    PeerGone,
}

/// Send the runtime cancel request `request` (`cancel_actor`,
/// `cancel_task`), and wait at most `within` for its `CancelAck`.
///
/// # Cancel safety
/// Cancel safe: the request is queued before the first await; dropping the
/// future only stops waiting for the acknowledgement.
pub(crate) async fn request_cancel(
    chan: &Arc<Channel>,
    request: Request,
    within: std::time::Duration,
    what: impl FnOnce() -> String,
) -> Result<CancelReply> {
    let mut req = match OpenDialog::start(chan, RUNTIME_NS, request.func(), request.kwargs()) {
        Ok(d) => d,
        Err(Error::TransportClosed { .. }) => return Ok(CancelReply::PeerGone),
        Err(e) => return Err(e),
    };
    let ack = async {
        loop {
            match req.next().await {
                Ok(Msg::CancelAck { pld, .. }) => {
                    return Ok(CancelReply::Acked { found: request::cancel_found(&pld) });
                }
                Ok(_) => continue,
                Err(Error::TransportClosed { .. }) => return Ok(CancelReply::PeerGone),
                Err(e) => return Err(e),
            }
        }
    };
    match tokio::time::timeout(within, ack).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout { what: what(), after: within }),
    }
}

impl Drop for OpenDialog {
    fn drop(&mut self) {
        if self.handed_over || self.is_over() {
            return;
        }
        // Dropped before its outcome: forget the dialog, and ask the peer
        // to cancel the task. `send` only enqueues (never blocks, takes only
        // the channel's slot lock, which no caller of this Drop holds).
        self.chan.close_dialog(self.cid);
        if self.cancel_on_drop && !self.chan.is_closed() {
            let cancel = Request::CancelTask { cid: self.cid }.to_start(self.chan.alloc_cid(), self.chan.local.clone());
            let _ = self.chan.send(&cancel);
        }
    }
}
