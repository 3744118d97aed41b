//! A context's shared state: what each side knows of the dialog (started,
//! stream opened or stopped, cancel asked and acknowledged) and its final
//! message, with the rules that read them (which cancellation is absorbed,
//! what error a finished context reports). The API is in `mod.rs`, the
//! reading of the mailbox in `mailbox.rs`.

use super::mailbox::{Cursor, Mailbox};
use super::scope::CancelScope;
use super::{CancelReason, Context, Outcome, Side};
use crate::ipc::Channel;
use crate::ipc::flow::Flow;
use crate::{Error, Result};
use furrow_proto::flow::Window;
use furrow_proto::request::Request;
use furrow_proto::{Aid, Cid, Payload};
use serde::de::DeserializeOwned;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// The final message of a context, as stored when it arrives.
#[derive(Debug, Clone)]
pub(super) enum Final {
    Returned(Payload),
    Failed(Arc<Error>),
    Cancelled { canceller: Aid, message: String },
    Lost(String),
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) started: bool,
    pub(super) stream_opened: bool,
    pub(super) peer_stopped: bool,
    pub(super) cancel_called: bool,
    pub(super) cancel_acked: bool,
    pub(super) cancelled_caught: bool,
    pub(super) final_: Option<Final>,
}

pub(crate) struct Inner {
    pub(super) chan: Arc<Channel>,
    pub(super) cid: Cid,
    pub(super) side: Side,
    pub(super) func: String,
    pub(super) local: Aid,
    pub(super) flow: Arc<Flow>,
    pub(super) mailbox: Arc<tokio::sync::Mutex<Mailbox>>,
    /// The run of stream messages being read and the consumer's half of
    /// the window: see `Cursor` for why it is not in the mailbox.
    pub(super) cursor: Mutex<Cursor>,
    pub(super) state: Mutex<State>,
    /// This end of the stream was closed (`MsgStream::close`, or its scope
    /// ended). An atomic, not in `state`: every send looks at it (the
    /// stream hot path).
    pub(super) local_stopped: std::sync::atomic::AtomicBool,
    pub(super) ended: watch::Sender<bool>,
    /// Callee: the task's cancellation. Opener: set when the outcome is in,
    /// so waiting senders and receivers wake.
    pub(super) scope: Arc<CancelScope>,
    pub(super) window: Window,
    pub(super) cancel_ack_timeout: Duration,
    /// Opener: where `open_context` was called, for the warning when the
    /// context is abandoned before its outcome.
    pub(super) opened_at: std::sync::OnceLock<&'static std::panic::Location<'static>>,
}

impl<S: super::role::Role> Context<S> {
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        // Single-field updates only: a poisoned lock is still consistent.
        crate::sync::lock(&self.inner.state)
    }

    pub(super) fn result_from_final<T: DeserializeOwned>(&self) -> Result<Outcome<T>> {
        let f = self.state().final_.clone();
        match f {
            Some(Final::Returned(p)) => Ok(Outcome::Returned(p.decode()?)),
            Some(Final::Cancelled { canceller, message }) => {
                if self.absorbs(&canceller) {
                    self.state().cancelled_caught = true;
                    Ok(Outcome::Cancelled { canceller })
                } else {
                    Err(Error::ContextCancelled { canceller, message })
                }
            }
            Some(Final::Failed(e)) => Err((*e).clone()),
            Some(Final::Lost(reason)) => Err(Error::TransportClosed { peer: self.inner.chan.peer.to_string(), reason }),
            None => Err(Error::Closed("context has no outcome yet".into())),
        }
    }

    /// Whether a cancellation by `canceller` is absorbed: only when this
    /// context asked for it and this actor is the canceller.
    pub(super) fn absorbs(&self, canceller: &Aid) -> bool {
        self.state().cancel_called && *canceller == self.inner.local
    }

    pub(super) fn set_final(&self, f: Final) {
        {
            let mut st = self.state();
            if st.final_.is_none() {
                st.final_ = Some(f);
            }
        }
        self.inner.flow.end();
        self.inner.ended.send_replace(true);
    }

    /// Callee: if the channel to the opener is lost, record it as this
    /// task's cancellation (the runtime does the same when it hears of the
    /// loss; whoever comes first names the reason, and a cancel asked for
    /// earlier stays the reason). True when the channel is lost.
    ///
    /// The channel drops its mailboxes and ends its flows *before* the
    /// runtime hears of the loss, so a callee can see its `recv` or `send`
    /// fail first; without this it would fail with "closed" instead of
    /// being cancelled, and skip its grace period.
    pub(crate) fn note_lost_link(&self) -> bool {
        if self.inner.side != Side::Callee || !self.inner.chan.is_closed() {
            return false;
        }
        self.inner.scope.cancel_for(CancelReason::link_lost(&self.inner.chan));
        true
    }

    pub(super) fn check_cancelled(&self) -> Result<()> {
        if self.inner.scope.is_cancelled() {
            return Err(self.cancelled_error("context cancelled"));
        }
        Ok(())
    }

    pub(super) fn cancelled_error(&self, what: &str) -> Error {
        if let Some(why @ CancelReason::LinkLost { .. }) = self.inner.scope.reason() {
            return Error::ContextCancelled {
                canceller: why.canceller().clone(),
                message: format!("{what} (`{}`): {why}", self.inner.func),
            };
        }
        let canceller = self
            .inner
            .scope
            .canceller()
            .or_else(|| match &self.state().final_ {
                Some(Final::Cancelled { canceller, .. }) => Some(canceller.clone()),
                _ => None,
            })
            .unwrap_or_else(|| self.inner.local.clone());
        Error::ContextCancelled { canceller, message: format!("{what} (`{}`)", self.inner.func) }
    }
}

impl Drop for Inner {
    /// An opener context dropped before its outcome arrived was abandoned
    /// (its `open_context` future was dropped): ask the callee to cancel,
    /// without blocking (rule 5a). Only queues a message.
    fn drop(&mut self) {
        if self.side != Side::Opener {
            return;
        }
        let has_final = self.state.get_mut().map(|s| s.final_.is_some()).unwrap_or(true);
        if has_final || self.chan.is_closed() {
            self.chan.close_dialog(self.cid);
            return;
        }
        self.chan.close_dialog(self.cid);
        match self.opened_at.get() {
            Some(at) => tracing::warn!(
                "context `{}` opened at {at} was dropped before its outcome: cancelling its callee",
                self.func
            ),
            None => tracing::warn!("context `{}` was dropped before its outcome: cancelling its callee", self.func),
        }
        let req = Request::CancelTask { cid: self.cid }.to_start(self.chan.alloc_cid(), self.chan.local.clone());
        let _ = self.chan.send(&req);
    }
}

pub(super) fn describe(f: &Final) -> String {
    match f {
        Final::Returned(_) => "the callee returned".into(),
        Final::Failed(e) => format!("failed: {e}"),
        Final::Cancelled { canceller, .. } => format!("cancelled by {canceller}"),
        Final::Lost(r) => format!("connection lost: {r}"),
    }
}
