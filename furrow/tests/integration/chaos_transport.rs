//! Every channel of the tree behind the chaos transport (`FURROW_CHAOS`,
//! inherited by every actor): random pieces down to one byte, delays, and a
//! connection dropped at frame N. Results must be exact (nothing lost,
//! duplicated or reordered); a drop must end the tree with a clear error,
//! within a bound, and leave nothing behind.

use anyhow::{Context as _, ensure};
use furrow::{Context, Outcome};
use std::time::{Duration, Instant};

#[furrow::remote]
async fn echo(n: u64, tag: String) -> (u64, String) {
    (n, tag)
}

/// Echo every number back, then return how many.
#[furrow::context]
async fn echo_stream(ctx: Context, _label: String) -> furrow::Result<u64> {
    ctx.started(&()).await?;
    ctx.open_stream(async |s| {
        let mut n = 0;
        while let Some(x) = s.recv::<u64>().await? {
            s.send(&x).await?;
            n += 1;
        }
        Ok(n)
    })
    .await
}

/// 3 actors, 300 concurrent calls, and a 2000-message two-way stream, every
/// byte in random pieces of at most 9 bytes with 3 % of operations delayed.
#[furrow_testing::test(env = "FURROW_CHAOS=seed=11;frag=9;delay=30;delay_ms=2")]
async fn rpc_storm_and_a_stream_are_exact_through_fragments_and_delays() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let ps = [n.start_actor("a").await?, n.start_actor("b").await?, n.start_actor("c").await?];
        let calls = (0..300u64).map(|i| {
            let p = &ps[(i % 3) as usize];
            async move { p.run(echo, (i, format!("call {i}"))).await }
        });
        let got = futures::future::try_join_all(calls).await?;
        for (i, (n, tag)) in got.into_iter().enumerate() {
            ensure!(n == i as u64 && tag == format!("call {i}"), "call {i} answered {n} {tag:?}");
        }
        let count = ps[0]
            .open_context(echo_stream, ("s".to_string(),), async |ctx, (): ()| {
                ctx.open_stream(async |s| {
                    for i in 0..2000u64 {
                        s.send(&i).await?;
                        let back: u64 = s.recv().await?.context("stream ended early")?;
                        ensure!(back == i, "sent {i}, got {back} back");
                    }
                    Ok(())
                })
                .await?;
                match ctx.wait_for_result::<u64>().await? {
                    Outcome::Returned(n) => Ok(n),
                    other => anyhow::bail!("unexpected outcome {other:?}"),
                }
            })
            .await?;
        ensure!(count == 2000, "the callee saw {count} messages");
        Ok(())
    })
    .await
}

/// Every connection fails at its 60th frame: a long stream cannot finish.
/// The opener gets an error naming what happened, the nursery ends, and the
/// leak check finds nothing left.
#[furrow_testing::test(env = "FURROW_CHAOS=seed=5;drop=60")]
async fn a_connection_dropped_mid_stream_ends_the_tree_cleanly() -> anyhow::Result<()> {
    let t = Instant::now();
    let r = furrow::open_nursery(async |n| {
        let p = n.start_actor("doomed").await?;
        p.open_context(echo_stream, ("s".to_string(),), async |ctx, (): ()| {
            ctx.open_stream(async |s| {
                for i in 0..10_000u64 {
                    s.send(&i).await?;
                    s.recv::<u64>().await?;
                }
                furrow::Ok(())
            })
            .await
        })
        .await?;
        furrow::Ok(())
    })
    .await;
    let took = t.elapsed();
    let err = r.err().context("10 000 round trips cannot pass a connection dropped at frame 60")?;
    println!("dropped connection -> {err} (after {took:?})");
    let text = err.to_string();
    ensure!(text.contains("doomed") || text.contains("closed"), "the error says what was lost: {text}");
    ensure!(took < Duration::from_secs(10), "took {took:?}");
    Ok(())
}
