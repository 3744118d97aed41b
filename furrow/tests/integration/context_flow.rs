//! Flow control: bounded buffers, backpressure, overrun, fan-out, and one
//! slow stream never delaying another dialog (docs/guide.md, rule 9).

use anyhow::{Context as _, bail, ensure};
use furrow::{Context, Error, StreamOptions};
use std::time::{Duration, Instant};

/// Stream `count` numbers as fast as credit allows.
#[furrow::context]
async fn firehose(ctx: Context, count: u64) -> furrow::Result<u64> {
    ctx.started(&()).await?;
    ctx.open_stream(async |s| {
        for i in 0..count {
            s.send(&i).await?;
        }
        Ok(count)
    })
    .await
}

/// Values `big_messages` has queued (in its own process).
static QUEUED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Stream `count` messages of `size` bytes, counting each in `QUEUED` once
/// `send` has queued it.
#[furrow::context]
async fn big_messages(ctx: Context, count: u64, size: usize) -> furrow::Result<()> {
    ctx.started(&()).await?;
    let blob = vec![7u8; size];
    ctx.open_stream(async |s| {
        for _ in 0..count {
            s.send(&serde_bytes::Bytes::new(&blob)).await?;
            QUEUED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    })
    .await
}

#[furrow::remote]
async fn ping() -> u8 {
    1
}

#[furrow_testing::test]
async fn slow_consumer_bounds_memory() -> anyhow::Result<()> {
    const WINDOW: usize = 64;
    furrow::open_nursery(async |n| {
        let p = n.start_actor("fast-producer").await?;
        p.open_context(firehose, (5_000,), async |ctx, (): ()| {
            ctx.open_stream_with(StreamOptions::new().window(WINDOW), async |s| {
                let mut i = 0u64;
                while let Some(x) = s.recv::<u64>().await? {
                    ensure!(x == i);
                    i += 1;
                    if i.is_multiple_of(500) {
                        // A slow consumer: the producer must wait, not pile up.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                ensure!(i == 5_000);
                Ok(())
            })
            .await?;
            let high = ctx.max_buffered();
            println!("slow consumer: at most {high} messages buffered (window {WINDOW})");
            ensure!(high <= WINDOW, "{high} buffered, window {WINDOW}");
            Ok(())
        })
        .await
    })
    .await
}

#[furrow_testing::test]
async fn overrun_mode_fails_the_receiver_and_stays_bounded() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("overrunner").await?;
        let r = p
            .open_context(firehose, (100_000,), async |ctx, (): ()| {
                ctx.open_stream_with(StreamOptions::new().window(16).overrun_errors(true), async |s| {
                    // Do not read for a while: the sender does not wait.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    loop {
                        match s.recv::<u64>().await {
                            Ok(Some(_)) => continue,
                            Ok(None) => bail!("no overrun reported"),
                            Err(Error::StreamOverrun { limit, .. }) => {
                                ensure!(limit == 16);
                                ensure!(ctx.max_buffered() <= 17, "buffered {}", ctx.max_buffered());
                                return Err::<(), _>(anyhow::anyhow!("overrun as expected"));
                            }
                            Err(e) => bail!("unexpected error {e:?}"),
                        }
                    }
                })
                .await
            })
            .await;
        let e = r.expect_err("overrun");
        ensure!(e.to_string() == "overrun as expected", "{e:?}");
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn three_subscribers_each_see_every_message() -> anyhow::Result<()> {
    const N: u64 = 2_000;
    furrow::open_nursery(async |n| {
        let p = n.start_actor("broadcaster").await?;
        p.open_context(firehose, (N,), async |_ctx, (): ()| {
            _ctx.open_stream_with(StreamOptions::new().window(32), async |s| {
                let subs: Vec<_> = (0..3).map(|_| s.subscribe()).collect();
                let readers = subs.into_iter().enumerate().map(|(k, mut sub)| async move {
                    let mut expect = 0u64;
                    while let Some(x) = sub.recv::<u64>().await? {
                        ensure!(x == expect, "subscriber {k}: got {x}, expected {expect}");
                        expect += 1;
                        if k == 2 && expect.is_multiple_of(200) {
                            // The slow one bounds the others.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                    Ok(expect)
                });
                let own = async {
                    let mut c = 0u64;
                    while s.recv::<u64>().await?.is_some() {
                        c += 1;
                    }
                    Ok(c)
                };
                let (counts, own) = tokio::try_join!(futures::future::try_join_all(readers), own)?;
                ensure!(counts == vec![N, N, N], "{counts:?}");
                ensure!(own == N);
                Ok(())
            })
            .await
        })
        .await
    })
    .await
}

#[furrow_testing::test]
async fn a_slow_stream_does_not_delay_other_dialogs() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("shared").await?;
        // Context A: its consumer stalls with a full window until the
        // others are done, then cancels it (while the stream is still
        // open: closing it first would end the producer with `Closed`
        // instead). The others must finish while it stalls: had its full
        // window held up the channel, they never would, and the stall's
        // bound (30 s) says so. (Not a time bound on the others: one of
        // 1.5 s flaked on a loaded machine.)
        let others_done = tokio::sync::Notify::new();
        let full = tokio::sync::Notify::new();
        let stalled = p.open_context(firehose, (1_000_000,), async |ctx, (): ()| {
            ctx.open_stream_with(StreamOptions::new().window(64), async |s| {
                s.recv::<u64>().await?;
                full.notify_one();
                let waited = tokio::time::timeout(Duration::from_secs(30), others_done.notified()).await;
                ensure!(waited.is_ok(), "other dialogs were held up behind the stalled stream for 30 s");
                ctx.cancel().await?;
                Ok(())
            })
            .await?;
            anyhow::Ok(())
        });
        // Meanwhile, on the same channel: a whole stream and many calls.
        let others = async {
            // Once A's producer has started: its window fills at once.
            full.notified().await;
            let t = Instant::now();
            p.open_context(firehose, (20_000,), async |ctx, (): ()| {
                ctx.open_stream(async |s| {
                    let mut c = 0;
                    while s.recv::<u64>().await?.is_some() {
                        c += 1;
                    }
                    furrow::Ok(c)
                })
                .await
            })
            .await?;
            for _ in 0..100 {
                p.run(ping, ()).await?;
            }
            println!("20k-message stream and 100 calls beside a stalled stream: {:?}", t.elapsed());
            others_done.notify_one();
            Ok(())
        };
        tokio::try_join!(stalled, others)?;
        Ok(())
    })
    .await
}

#[furrow::remote]
async fn queued() -> u64 {
    QUEUED.load(std::sync::atomic::Ordering::Relaxed)
}

/// A cancel's request and its acknowledgement are control frames: they
/// never wait behind stream data queued on the same channel (design.md,
/// "Flow control"). The callee's frames are each held up to 100 ms before
/// they are written (the chaos transport, in its process only), so the
/// 128 MiB of its window leave it at some 20 MiB/s: behind that data, the
/// acknowledgement would come after all of it. The test waits until the
/// callee has queued its whole window (no sleep: it asks), cancels, and
/// checks how much of the window had reached this side when the
/// acknowledgement did, not how long it took.
#[furrow_testing::test]
async fn cancel_does_not_wait_behind_stream_data() -> anyhow::Result<()> {
    const WINDOW: u64 = 128;
    furrow::open_nursery(async |n| {
        let slow = furrow::SpawnOptions::new().env(furrow::CHAOS_ENV, "seed=5;frag=0;delay=1000;delay_ms=100");
        let p = n.start_actor_with("bulk", slow).await?;
        // Bytes read from the callee (on every channel with it: it has one
        // to its parent and, through its registration, may have another).
        let bytes_in = || -> anyhow::Result<u64> {
            let stats = furrow::local_stats()?;
            Ok(stats.channels.iter().filter(|c| c.peer == *p.aid()).map(|c| c.bytes_in).sum())
        };
        // The message window binds (a value is 1 MiB and a few bytes).
        let opts = StreamOptions::new().window(WINDOW as usize).window_bytes((WINDOW as usize + 1) << 20);
        p.open_context(big_messages, (100_000, 1 << 20), async |ctx, (): ()| {
            ctx.open_stream_with(opts, async |s| {
                s.recv::<serde_bytes::ByteBuf>().await?.context("first blob")?;
                let deadline = Instant::now() + Duration::from_secs(60);
                while p.run(queued, ()).await? < WINDOW {
                    ensure!(Instant::now() < deadline, "the callee never queued its window");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let before = bytes_in()?;
                let t = Instant::now();
                ctx.cancel().await?;
                let (took, at_ack) = (t.elapsed(), bytes_in()?);
                println!(
                    "cancel acknowledged after {took:?}: {} MiB of the window had arrived when it was queued, {} MiB when it was acknowledged",
                    before >> 20,
                    at_ack >> 20
                );
                ensure!(ctx.cancel_acked(), "the cancel was not acknowledged");
                ensure!(
                    at_ack < (WINDOW / 2) << 20,
                    "the acknowledgement came after {} MiB of the {WINDOW} MiB queued before it: it waited behind the data",
                    at_ack >> 20
                );
                Ok(())
            })
            .await
        })
        .await
    })
    .await
}

/// VmRSS of `pid`, in MiB.
fn rss_mib(pid: u32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("VmRSS")?
        .parse()?;
    Ok(kib >> 10)
}

/// Issue 14, defect 3: credit counted messages only, so a stream of
/// 1 MiB values under the default window of 1024 messages (then) let the sender
/// queue (and the receiver buffer) hundreds of MiB. The byte window (8 MiB
/// by default) bounds both.
#[furrow_testing::test]
async fn a_stream_of_large_values_is_bounded_in_bytes() -> anyhow::Result<()> {
    const COUNT: u64 = 200;
    const SIZE: usize = 1 << 20;
    furrow::open_nursery(async |n| {
        let p = n.start_actor("bulk-producer").await?;
        let pid = p.aid().pid;
        p.open_context(big_messages, (COUNT, SIZE), async |ctx, (): ()| {
            ctx.open_stream(async |s| {
                // Consume nothing for a while: the producer sends what its
                // credit allows, then waits.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let producer = rss_mib(pid)?;
                let buffered = ctx.max_buffered_bytes();
                println!("after 1 s unconsumed: producer RSS {producer} MiB, {} MiB buffered here", buffered >> 20);
                ensure!(buffered <= 8 << 20, "{buffered} bytes buffered, byte window 8 MiB");
                ensure!(producer < 100, "the producer grew to {producer} MiB");
                let mut got = 0u64;
                while let Some(v) = s.recv::<serde_bytes::ByteBuf>().await? {
                    ensure!(v.len() == SIZE && v.iter().all(|b| *b == 7));
                    got += 1;
                }
                ensure!(got == COUNT, "{got} of {COUNT} values");
                Ok(())
            })
            .await
        })
        .await
    })
    .await
}
