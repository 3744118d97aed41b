//! Locking of the runtime's small shared maps and flags.

use std::sync::{Mutex, MutexGuard};

/// Lock a `std` mutex, tolerating poison.
///
/// Every critical section in furrow is a single map or field operation
/// that never `.await`s and never drops a value whose `Drop` takes the same
/// lock, so a panic elsewhere cannot leave the data half-updated: a
/// poisoned lock is still consistent, and refusing it would turn one panic
/// into a cascade.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The primitives of furrow's lock-free protocols, swappable for loom's so
/// the model checks in `loom_tests` modules run the real code
/// (docs/design.md, "Testing").
///
/// In every normal build these are exactly `std`'s atomics and tokio's
/// `Notify`: re-exports, nothing wrapped, so the code paths are the ones
/// that ship. Under `--cfg furrow_loom` (test builds only: loom's types
/// work only inside `loom::model`, and loom is a dev-dependency) they are
/// loom's atomics, and `Notify` is [`model::Notify`]: loom's own `Notify`
/// is a single-waiter *permit* (a `notify` before the `wait` is kept),
/// which would hide the very lost wake-ups these checks look for, since
/// furrow's protocols use tokio's `notify_waiters`, which keeps nothing.
///
/// Only the atomics that carry a protocol go through here; counters read
/// only for diagnostics (relaxed, no decision depends on them) stay
/// `std`'s, which loom does not need to see.
pub(crate) mod loomable {
    #[cfg(not(all(test, furrow_loom)))]
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicUsize};
    #[cfg(not(all(test, furrow_loom)))]
    pub(crate) use tokio::sync::{Notify, futures::Notified};

    #[cfg(all(test, furrow_loom))]
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize};
    #[cfg(all(test, furrow_loom))]
    pub(crate) use model::{Notified, Notify};

    /// tokio's `Notify`, as far as furrow uses it, in loom's primitives.
    ///
    /// What it keeps of tokio's contract (tokio's docs for
    /// `Notify::notify_waiters` and `Notified`): `notify_waiters` wakes
    /// every `Notified` *created* before it, polled or not, and stores no
    /// permit for later ones. tokio implements that with a counter of
    /// `notify_waiters` calls that `notified()` snapshots (a `SeqCst`
    /// load) and a waiter list under a lock; this is the same, with the
    /// counter under the lock (a loom `Mutex`, so loom explores every
    /// order of creation and notification and sees their happens-before).
    /// `notify_one` and its permit are not modelled: none of the checked
    /// protocols uses them.
    #[cfg(all(test, furrow_loom))]
    pub(crate) mod model {
        use std::future::Future;
        use std::pin::Pin;
        use std::task::{Context, Poll, Waker};

        #[derive(Debug, Default)]
        struct State {
            /// `notify_waiters` calls so far.
            calls: u64,
            /// Wakers of `Notified`s polled and still pending.
            wakers: Vec<Waker>,
        }

        #[derive(Debug, Default)]
        pub(crate) struct Notify {
            state: loom::sync::Mutex<State>,
        }

        impl Notify {
            fn state(&self) -> loom::sync::MutexGuard<'_, State> {
                self.state.lock().unwrap_or_else(|p| p.into_inner())
            }

            /// A wake-up for the next `notify_waiters`: registered now,
            /// at creation, as tokio's is.
            pub(crate) fn notified(&self) -> Notified<'_> {
                Notified { notify: self, calls: self.state().calls }
            }

            pub(crate) fn notify_waiters(&self) {
                let wakers = {
                    let mut s = self.state();
                    s.calls += 1;
                    std::mem::take(&mut s.wakers)
                };
                for w in wakers {
                    w.wake();
                }
            }
        }

        #[derive(Debug)]
        pub(crate) struct Notified<'a> {
            notify: &'a Notify,
            calls: u64,
        }

        impl Notified<'_> {
            /// Whether a `notify_waiters` came since creation. Registers
            /// nothing: against `notify_waiters`, creation is the
            /// registration (tokio's `enable` matters for `notify_one`).
            pub(crate) fn enable(self: Pin<&mut Self>) -> bool {
                self.notify.state().calls != self.calls
            }
        }

        impl Future for Notified<'_> {
            type Output = ();

            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
                let mut s = self.notify.state();
                if s.calls != self.calls {
                    return Poll::Ready(());
                }
                s.wakers.push(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
