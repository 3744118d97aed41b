//! Remote functions shared by several test modules.

/// Occupies both of the actor's worker threads with loops that never
/// yield: nothing in the actor can answer a cancel request or run its
/// SIGTERM handler any more. (The spawned loop lands in this worker's LIFO
/// slot, which other workers cannot steal; yielding once lets this worker
/// run it while the other worker steals this task and spins too.)
#[furrow::remote]
pub async fn spin_everything() {
    tokio::spawn(async {
        #[allow(clippy::empty_loop)]
        loop {}
    });
    tokio::task::yield_now().await;
    #[allow(clippy::empty_loop)]
    loop {}
}
