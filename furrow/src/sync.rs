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
