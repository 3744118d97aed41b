//! The teardown ladder (docs/guide.md, rule 6): a child that cannot answer a cancel
//! request is still ended, by signal, within the configured bounds.

use anyhow::{bail, ensure};
use furrow::Ending;
use std::time::{Duration, Instant};

use crate::common::spin_everything;

/// One task that never yields; in an actor with two threads the other one
/// stays free.
#[furrow::remote]
async fn spin_one() {
    #[allow(clippy::empty_loop)]
    loop {}
}

#[furrow::remote]
async fn ok() -> u8 {
    7
}

#[furrow_testing::test]
async fn non_yielding_child_is_ended_by_signal() -> anyhow::Result<()> {
    let t = Instant::now();
    let endings = furrow::open_nursery(async |n| {
        let p = n.start_actor("spinner").await?;
        ensure!(p.run(ok, ()).await? == 7);
        // Start the spin and give up on it.
        let _ = tokio::time::timeout(Duration::from_millis(200), p.run(spin_everything, ())).await;
        n.cancel().await?;
        Ok(n.endings())
    })
    .await?;
    let took = t.elapsed();
    let [(aid, ending)] = &endings[..] else { bail!("one child expected: {endings:?}") };
    println!("{aid}: {ending} after {took:?}");
    ensure!(matches!(ending, Ending::Terminated(_) | Ending::Killed(_)), "{aid}: {ending}");
    // Bounds: 0.5 s ack + 1 s exit + 1 s term + the kill, generously.
    ensure!(took < Duration::from_secs(8), "took {took:?}");
    Ok(())
}

#[furrow_testing::test]
async fn one_non_yielding_task_does_not_stop_a_graceful_end() -> anyhow::Result<()> {
    let t = Instant::now();
    let endings = furrow::open_nursery(async |n| {
        // Two threads: the stuck task takes one, the other answers. (With
        // the default one thread, the stuck task is every thread: see
        // `non_yielding_child_is_ended_by_signal`.)
        let p = n.start_actor_with("half-stuck", furrow::SpawnOptions::new().threads(2)).await?;
        let _ = tokio::time::timeout(Duration::from_millis(200), p.run(spin_one, ())).await;
        n.cancel().await?;
        anyhow::Ok(n.endings())
    })
    .await?;
    let [(aid, ending)] = &endings[..] else { bail!("one child expected: {endings:?}") };
    // The free thread answers the cancel; shutdown waits a bounded time for
    // the stuck task, then the process exits without it.
    ensure!(matches!(ending, Ending::Cancelled(_)), "{aid}: {ending}");
    ensure!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    Ok(())
}

#[furrow_testing::test]
async fn graceful_children_need_no_signal() -> anyhow::Result<()> {
    let endings = furrow::open_nursery(async |n| {
        for i in 0..3 {
            n.start_actor(format!("polite-{i}")).await?;
        }
        furrow::Ok(())
    })
    .await;
    // The endings are gone with the nursery; ask a new one.
    ensure!(endings.is_ok());
    let endings = furrow::open_nursery(async |n| {
        let p = n.start_actor("polite").await?;
        ensure!(p.run(ok, ()).await? == 7);
        n.cancel().await?;
        Ok(n.endings())
    })
    .await?;
    ensure!(endings.iter().all(|(_, e)| e.is_graceful()), "{endings:?}");
    Ok(())
}
