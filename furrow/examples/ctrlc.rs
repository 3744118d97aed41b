//! A tree that works until Ctrl-C, then shuts down gracefully.
//!
//! ```text
//! cargo run --example ctrlc        # then press Ctrl-C (twice to kill at once)
//! ```
//!
//! Three workers each stream their progress to the root. Ctrl-C reaches
//! the root only (workers run in their own process group); the root cancels
//! the tree: each worker sees its cancellation, says what it did and who
//! cancelled it, and exits; the root prints its totals and exits with
//! status 130.

use furrow::{Context, Error};
use std::time::Duration;

#[furrow::context]
async fn work(ctx: Context, id: u32) -> furrow::Result<u64> {
    ctx.started(&()).await?;
    let mut done = 0u64;
    let watch = ctx.clone();
    let progress = ctx.open_stream(async |s| {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            done += 1;
            s.send(&done).await?;
        }
        #[allow(unreachable_code)]
        Ok(())
    });
    tokio::select! {
        by = watch.cancelled() => {
            eprintln!("  worker {id} (pid {}): cancelled by {by} after {done} units of work", std::process::id());
            Ok(done)
        }
        r = progress => r.map(|()| done),
    }
}

#[furrow::main]
async fn main() -> anyhow::Result<()> {
    println!("running 3 workers; press Ctrl-C to stop them (twice to kill)");
    let totals = std::sync::Mutex::new(vec![0u64; 3]);
    let r = furrow::open_nursery(async |n| {
        let workers = futures::future::try_join_all((0..3).map(|i| n.start_actor(format!("worker-{i}")))).await?;
        let runs = workers.iter().enumerate().map(|(i, p)| {
            let totals = &totals;
            p.open_context(work, (i as u32,), async move |ctx, (): ()| {
                ctx.open_stream(async |s| {
                    while let Some(done) = s.recv::<u64>().await? {
                        totals.lock().unwrap_or_else(|p| p.into_inner())[i] = done;
                    }
                    furrow::Ok(())
                })
                .await
            })
        });
        futures::future::try_join_all(runs).await?;
        Ok(())
    })
    .await;
    let totals = totals.into_inner().unwrap_or_default();
    println!("root: last progress seen per worker: {totals:?}");
    match r {
        Err(Error::ActorCancelled { reason, .. }) => {
            println!("root: the tree was cancelled ({reason}); all workers reaped")
        }
        Err(e) => return Err(e.into()),
        Ok(()) => {}
    }
    Ok(())
}
