//! Cancellation of one served task (a remote call or a context's callee).

use furrow_proto::Aid;
use std::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// The cancellation state of one task this actor serves: a token and the
/// first actor that asked. Shared by the runtime (which cancels on a
/// `cancel_task` or `cancel_actor` request) and the task's `Context`
/// (which lets the task see it, and cancel itself).
#[derive(Debug, Default)]
pub(crate) struct CancelScope {
    token: CancellationToken,
    canceller: Mutex<Option<Aid>>,
}

impl CancelScope {
    /// Request cancellation on behalf of `by`. The first request wins:
    /// later ones neither change the canceller nor fail.
    pub(crate) fn cancel(&self, by: Aid) {
        {
            let mut c = crate::sync::lock(&self.canceller);
            if c.is_none() {
                *c = Some(by);
            }
        }
        self.token.cancel();
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    pub(crate) fn canceller(&self) -> Option<Aid> {
        crate::sync::lock(&self.canceller).clone()
    }

    /// Resolves once cancellation was requested.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn cancelled(&self) {
        self.token.cancelled().await
    }
}
