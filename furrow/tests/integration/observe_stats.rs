//! The stats every actor serves (`Portal::stats`, `local_stats`): traffic
//! counters grow with calls and streams, open contexts are counted on both
//! sides while open and are back to 0 after, children are counted.

use anyhow::ensure;
use furrow::{ActorStats, Aid, ChannelStats, Context};

#[furrow::remote]
async fn echo(x: u64) -> u64 {
    x
}

/// Echoes every item of its stream back.
#[furrow::context]
async fn echo_stream(ctx: Context) -> furrow::Result<()> {
    ctx.started(&()).await?;
    ctx.open_stream(async |s| {
        while let Some(x) = s.recv::<u64>().await? {
            s.send(&x).await?;
        }
        Ok(())
    })
    .await
}

/// Starts a child and keeps it until cancelled.
#[furrow::context]
async fn with_child(ctx: Context) -> furrow::Result<()> {
    furrow::open_nursery(async |n| {
        let _leaf = n.start_actor("leaf").await?;
        ctx.started(&()).await?;
        ctx.cancelled().await;
        Ok(())
    })
    .await
}

/// The traffic of `s` with `peer`, summed over its channels to it (a child
/// has two to its parent when the parent is also the registrar: the
/// parent channel and the registry channel).
fn chan(s: &ActorStats, peer: &Aid) -> anyhow::Result<ChannelStats> {
    let mut sum = ChannelStats::default();
    let mut found = false;
    for c in s.channels.iter().filter(|c| &c.peer == peer) {
        found = true;
        sum.peer = c.peer.clone();
        sum.dialer |= c.dialer;
        sum.msgs_in += c.msgs_in;
        sum.msgs_out += c.msgs_out;
        sum.bytes_in += c.bytes_in;
        sum.bytes_out += c.bytes_out;
        sum.writes += c.writes;
        sum.dialogs += c.dialogs;
    }
    ensure!(found, "no channel to {peer} in {s:#?}");
    Ok(sum)
}

/// A call whose function returns in its first poll costs the callee one
/// write: its `StartAck` leaves with its `Return` (docs/design.md, "One
/// thread per actor"), so the caller is woken once per call, not twice.
#[furrow_testing::test]
async fn a_call_that_returns_at_once_is_answered_in_one_write() -> anyhow::Result<()> {
    const N: u64 = 200;
    let me = furrow::local_aid()?;
    furrow::open_nursery(async |n| {
        let p = n.start_actor("one-write").await?;
        let before = chan(&p.stats().await?, &me)?;
        for i in 0..N {
            ensure!(p.run(echo, (i,)).await? == i);
        }
        let after = chan(&p.stats().await?, &me)?;
        // Between the two snapshots: the first query's answer, then N
        // calls, each 2 messages. The second query's answer is not written
        // yet when it counts.
        let (writes, msgs) = (after.writes - before.writes, after.msgs_out - before.msgs_out);
        ensure!(msgs >= 2 * N, "{msgs} messages for {N} calls");
        ensure!(writes <= N + 5, "{writes} writes for {N} calls ({msgs} messages): acks written apart");
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn counters_grow_and_open_contexts_are_counted() -> anyhow::Result<()> {
    let me = furrow::local_aid()?;
    furrow::open_nursery(async |n| {
        let p = n.start_actor("counted").await?;
        let before = p.stats().await?;
        ensure!(&before.aid == p.aid(), "{before:#?}");
        ensure!(before.contexts() == 0 && before.children == 0, "{before:#?}");
        // The query itself is the one call it serves.
        ensure!(before.calls_served == 1, "{before:#?}");
        let c0 = chan(&before, &me)?;
        // A child dials its parent back.
        ensure!(c0.dialer, "{c0:?}");

        for i in 0..10 {
            ensure!(p.run(echo, (i,)).await? == i);
        }
        let after = p.stats().await?;
        let c1 = chan(&after, &me)?;
        // In: each call's Start and the second query's Start (counted
        // before the query is served: exact).
        ensure!(c1.msgs_in >= c0.msgs_in + 11, "{c0:?} -> {c1:?}");
        ensure!(c1.bytes_in > c0.bytes_in, "{c0:?} -> {c1:?}");
        // Out: a StartAck and a Return per call. Counted after each write
        // returns, so the very last write may not be counted yet.
        ensure!(c1.msgs_out >= c0.msgs_out + 18, "{c0:?} -> {c1:?}");
        ensure!(c1.bytes_out > c0.bytes_out, "{c0:?} -> {c1:?}");
        ensure!(after.uptime >= before.uptime);

        // This side's view of the same channel: exact on the reading side.
        let mine = furrow::local_stats()?;
        ensure!(mine.children == 1, "{mine:#?}");
        let ours = chan(&mine, p.aid())?;
        ensure!(ours.msgs_in + 1 >= c1.msgs_out, "{ours:?} vs {c1:?}");

        // A context: counted on both sides while open, then gone.
        let streamed = p
            .open_context(echo_stream, (), async |ctx, ()| {
                let s = p.stats().await?;
                ensure!(s.contexts_served == 1 && s.contexts_opened == 0, "{s:#?}");
                let m = furrow::local_stats()?;
                ensure!(m.contexts_opened == 1 && m.contexts_served == 0, "{m:#?}");
                let before_stream = chan(&s, &me)?;
                ctx.open_stream(async |st| {
                    for i in 0..50u64 {
                        st.send(&i).await?;
                        ensure!(st.recv::<u64>().await? == Some(i));
                    }
                    Ok(())
                })
                .await?;
                let s = p.stats().await?;
                let c = chan(&s, &me)?;
                ensure!(c.msgs_in >= before_stream.msgs_in + 50, "{before_stream:?} -> {c:?}");
                ensure!(c.msgs_out >= before_stream.msgs_out + 49, "{before_stream:?} -> {c:?}");
                Ok(50)
            })
            .await?;
        ensure!(streamed == 50);
        let end = p.stats().await?;
        ensure!(end.contexts() == 0 && end.calls_opened == 0 && end.calls_served == 1, "{end:#?}");
        let m = furrow::local_stats()?;
        ensure!(m.contexts() == 0 && m.calls_opened == 0, "{m:#?}");
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn stats_of_a_middle_actor_count_its_children_and_channels() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let mid = n.start_actor("mid").await?;
        mid.open_context(with_child, (), async |ctx, ()| {
            let s = mid.stats().await?;
            ensure!(s.aid.name == "mid" && s.children == 1, "{s:#?}");
            ensure!(s.contexts_served == 1, "{s:#?}");
            // Its parent (us) and its child, at least.
            let peers: Vec<&str> = s.channels.iter().map(|c| c.peer.name.as_str()).collect();
            ensure!(peers.contains(&"leaf"), "{peers:?}");
            ctx.cancel().await?;
            Ok(())
        })
        .await?;
        let s = mid.stats().await?;
        ensure!(s.children == 0 && s.contexts() == 0, "{s:#?}");
        Ok(())
    })
    .await
}
