//! A small service doing steady work, to watch live with the CLI.
//!
//! ```text
//! cargo run --example watched_service            # leave it running; Ctrl-C stops it
//! cargo run -p furrow-cli -- tree --watch        # from another terminal
//! ```
//!
//! The tree:
//!
//! ```text
//! watched_service          consumes the hub's summaries, records each with the keeper
//! ├─ hub                   opens a readings stream on each sensor, sums them up
//! │  ├─ sensor-1           streams a reading every 2 ms
//! │  └─ sensor-2           streams a reading every 5 ms
//! └─ keeper                keeps the running total (one call per summary)
//! ```
//!
//! so `furrow tree --watch` shows three contexts, steady stream traffic
//! between the sensors and the hub, and a call every 100 ms to the keeper.
//! Pass a number of seconds to stop by itself (`-- 30`).

use furrow::{Context, Error};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A sensor: one reading every `every_ms` until the reader closes the
/// stream.
#[furrow::context]
async fn readings(ctx: Context, every_ms: u64) -> furrow::Result<u64> {
    ctx.started(&()).await?;
    let mut tick = tokio::time::interval(Duration::from_millis(every_ms));
    ctx.open_stream(async |out| {
        let mut seq = 0u64;
        loop {
            tick.tick().await;
            // A made-up measurement.
            let value = (seq * 7919) % 1000;
            match out.send(&(seq, value)).await {
                Ok(()) => seq += 1,
                Err(Error::Closed(_)) => return Ok(seq),
                Err(e) => return Err(e),
            }
        }
    })
    .await
}

/// The hub: starts two sensors, reads both, and streams a summary
/// `(readings, sum)` to its opener every 100 ms.
#[furrow::context]
async fn hub(ctx: Context) -> furrow::Result<()> {
    furrow::open_nursery(async |n| {
        let s1 = n.start_actor("sensor-1").await?;
        let s2 = n.start_actor("sensor-2").await?;
        ctx.started(&()).await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<u64>(1024);
        let read = async |p: &furrow::Portal, every_ms: u64| {
            p.open_context(readings, (every_ms,), async |c, ()| {
                c.open_stream(async |s| {
                    while let Some((_seq, value)) = s.recv::<(u64, u64)>().await? {
                        if tx.send(value).await.is_err() {
                            break;
                        }
                    }
                    Ok(())
                })
                .await
            })
            .await
        };
        let summarise = async {
            // Owned here: dropped when the summaries end (the opener closed
            // its stream), which ends both readers, which close the
            // sensors' streams: the whole hub winds down without a cancel.
            let mut rx = rx;
            ctx.open_stream(async |out| {
                let mut every = tokio::time::interval(Duration::from_millis(100));
                let (mut count, mut sum) = (0u64, 0u64);
                loop {
                    tokio::select! {
                        v = rx.recv() => match v {
                            Some(v) => { count += 1; sum += v; }
                            None => return Ok(()),
                        },
                        _ = every.tick() => {
                            match out.send(&(count, sum)).await {
                                Ok(()) => (count, sum) = (0, 0),
                                Err(Error::Closed(_)) => return Ok(()),
                                Err(e) => return Err(e),
                            }
                        }
                    }
                }
            })
            .await
        };
        let (a, b, c) = tokio::join!(read(&s1, 2), read(&s2, 5), summarise);
        a.and(b).and(c)
    })
    .await
}

static TOTAL: AtomicU64 = AtomicU64::new(0);

/// The keeper: adds a summary's count to the running total and returns
/// the total.
#[furrow::remote]
async fn record(count: u64) -> u64 {
    TOTAL.fetch_add(count, Ordering::Relaxed) + count
}

#[furrow::main]
async fn main() -> anyhow::Result<()> {
    let stop_after: Option<u64> = std::env::args().nth(1).map(|s| s.parse()).transpose()?;
    let r = furrow::open_nursery(async |n| {
        let hub_actor = n.start_actor("hub").await?;
        let keeper = n.start_actor("keeper").await?;
        println!("watched_service: running (Ctrl-C to stop); watch it with:");
        println!("  cargo run -p furrow-cli -- tree --watch");
        let deadline = stop_after.map(|secs| tokio::time::Instant::now() + Duration::from_secs(secs));
        hub_actor
            .open_context(hub, (), async |ctx, ()| {
                ctx.open_stream(async |s| {
                    while let Some((count, _sum)) = s.recv::<(u64, u64)>().await? {
                        // Leaving the stream closes it: the hub winds down.
                        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                            break;
                        }
                        let total = keeper.run(record, (count,)).await?;
                        if total > 0 && total % 10_000 < count {
                            println!("watched_service: {total} readings so far");
                        }
                    }
                    Ok(())
                })
                .await
            })
            .await
    })
    .await;
    match r {
        // Ctrl-C (or SIGTERM) cancelled the tree: the usual way it ends.
        Err(Error::ActorCancelled { reason, .. }) => println!("watched_service: stopped ({reason})"),
        Err(e) => return Err(e.into()),
        Ok(()) => println!("watched_service: done"),
    }
    Ok(())
}
