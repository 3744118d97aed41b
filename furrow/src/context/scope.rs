//! Cancellation of one served task (a remote call or a context's callee).

use furrow_proto::Aid;
use std::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Why a task was cancelled (see [`Context::cancel_reason`](crate::Context::cancel_reason)).
///
/// ```
/// use furrow::CancelReason;
/// /// A callee's clean-up: a lost opener gets no answer, so only log.
/// fn on_cancel(why: &CancelReason) -> &'static str {
///     match why {
///         CancelReason::Requested { .. } => "asked to stop: report what was done",
///         CancelReason::LinkLost { .. } => "opener gone: just release resources",
///         _ => "cancelled",
///     }
/// }
/// # let _ = on_cancel;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelReason {
    /// An actor asked: the opener (`ctx.cancel()`, a dropped or failed
    /// `open_context`), the callee itself, or whoever cancelled the
    /// callee's whole actor (`cancel_actor`, a nursery's teardown, Ctrl-C).
    Requested {
        /// Who asked.
        by: Aid,
    },
    /// The connection to the peer that opened this task was lost (it died,
    /// or the link broke): nobody asked, and nobody will read the outcome.
    /// *Decision:* the lost peer counts as the canceller, since its
    /// departure is what ends the task.
    LinkLost {
        /// The peer that was lost.
        peer: Aid,
        /// What the connection's reader saw ("peer closed the connection", …).
        reason: String,
    },
}

impl CancelReason {
    /// The reason of a task whose opener's channel `chan` was lost.
    pub(crate) fn link_lost(chan: &crate::ipc::Channel) -> CancelReason {
        let reason = match chan.closed_error() {
            // Its writer failed before its reader said why.
            crate::Error::TransportClosed { reason, .. } if reason.is_empty() => "the connection closed".to_owned(),
            crate::Error::TransportClosed { reason, .. } => reason,
            other => other.to_string(),
        };
        CancelReason::LinkLost { peer: chan.peer.clone(), reason }
    }

    /// The actor named as the canceller.
    ///
    /// ```
    /// # fn demo(why: &furrow::CancelReason) {
    /// eprintln!("cancelled on behalf of {}", why.canceller());
    /// # }
    /// ```
    pub fn canceller(&self) -> &Aid {
        match self {
            CancelReason::Requested { by } => by,
            CancelReason::LinkLost { peer, .. } => peer,
        }
    }
}

impl std::fmt::Display for CancelReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CancelReason::Requested { by } => write!(f, "cancelled by {by}"),
            CancelReason::LinkLost { peer, reason } => {
                write!(f, "the connection to {peer} was lost ({reason})")
            }
        }
    }
}

/// The cancellation state of one task this actor serves: a token and the
/// first reason given. Shared by the runtime (which cancels on a
/// `cancel_task` or `cancel_actor` request, or when the channel to the
/// task's opener is lost) and the task's `Context` (which lets the task see
/// it, and cancel itself).
#[derive(Debug, Default)]
pub(crate) struct CancelScope {
    token: CancellationToken,
    /// Set before `token` is cancelled: what `is_cancelled` reads, with no
    /// lock (a callee's every send looks; the token's own check locks).
    /// The token is this scope's alone (no parent), so it is cancelled
    /// only through `cancel_for`, which sets this first.
    cancelled: std::sync::atomic::AtomicBool,
    reason: Mutex<Option<CancelReason>>,
    /// When the first request came (for dumps).
    at: std::sync::OnceLock<std::time::Instant>,
}

impl CancelScope {
    /// Request cancellation on behalf of `by`. The first request wins:
    /// later ones neither change the canceller nor fail.
    pub(crate) fn cancel(&self, by: Aid) {
        self.cancel_for(CancelReason::Requested { by });
    }

    /// Cancel because `why` (the first reason wins, as in `cancel`).
    pub(crate) fn cancel_for(&self, why: CancelReason) {
        {
            let mut r = crate::sync::lock(&self.reason);
            if r.is_none() {
                *r = Some(why);
                let _ = self.at.set(std::time::Instant::now());
            }
        }
        self.cancelled.store(true, std::sync::atomic::Ordering::Release);
        self.token.cancel();
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn canceller(&self) -> Option<Aid> {
        crate::sync::lock(&self.reason).as_ref().map(|r| r.canceller().clone())
    }

    /// How long ago cancellation was requested, and on whose behalf.
    pub(crate) fn asked(&self) -> Option<(std::time::Duration, Aid)> {
        let by = self.canceller()?;
        Some((self.at.get().map(|t| t.elapsed()).unwrap_or_default(), by))
    }

    pub(crate) fn reason(&self) -> Option<CancelReason> {
        crate::sync::lock(&self.reason).clone()
    }

    /// Resolves once cancellation was requested.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn cancelled(&self) {
        self.token.cancelled().await
    }
}
