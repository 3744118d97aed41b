//! Contexts and their streams: the ordinary paths (docs/guide.md, rules 1, 2, 9).

use anyhow::{Context as _, bail, ensure};
use furrow::{Context, Error, Outcome};

/// Echo every number back plus one, until the opener closes its end.
#[furrow::context]
async fn echo_plus_one(ctx: Context, greeting: String) -> furrow::Result<u64> {
    ctx.started(&format!("{greeting}, ready")).await?;
    ctx.open_stream(async |s| {
        let mut n = 0;
        while let Some(x) = s.recv::<u64>().await? {
            s.send(&(x + 1)).await?;
            n += 1;
        }
        Ok(n)
    })
    .await
}

/// Stream `count` numbers, then return their sum.
#[furrow::context]
async fn produce(ctx: Context, count: u64) -> furrow::Result<u64> {
    ctx.started(&count).await?;
    ctx.open_stream(async |s| {
        for i in 0..count {
            s.send(&i).await?;
        }
        furrow::Ok(())
    })
    .await?;
    Ok((0..count).sum())
}

/// Stream byte values of the sizes asked, each filled with its index.
#[furrow::context]
async fn produce_bytes(ctx: Context, sizes: Vec<usize>) -> furrow::Result<usize> {
    ctx.started(&()).await?;
    ctx.open_stream(async |s| {
        for (i, &len) in sizes.iter().enumerate() {
            s.send(&furrow::Bytes::from(vec![i as u8; len])).await?;
        }
        furrow::Ok(())
    })
    .await?;
    Ok(sizes.len())
}

/// Byte values of every size in one stream, small ones batched into
/// `Yields` frames and large ones past the byte window, arrive whole and in
/// order; the values a consumer keeps stay intact while it reads on (they
/// share buffers the reader has moved past).
#[furrow_testing::test]
async fn a_stream_of_byte_values_arrives_whole_and_in_order() -> anyhow::Result<()> {
    let sizes: Vec<usize> = (0..70usize).map(|i| [0, 5, 1023, 1024, 4096, 300_000, 3 << 20][i % 7]).collect();
    let want = sizes.clone();
    furrow::open_nursery(async |n| {
        let p = n.start_actor("bytes-source").await?;
        let (kept, sent) = p
            .open_context(produce_bytes, (sizes,), async |ctx, (): ()| {
                let kept = ctx
                    .open_stream(async |s| {
                        let mut kept = Vec::new();
                        while let Some(b) = s.recv::<furrow::Bytes>().await? {
                            kept.push(b);
                        }
                        furrow::Ok(kept)
                    })
                    .await?;
                match ctx.wait_for_result::<usize>().await? {
                    Outcome::Returned(sent) => Ok((kept, sent)),
                    other => bail!("unexpected outcome {other:?}"),
                }
            })
            .await?;
        ensure!(sent == want.len(), "the source sent {sent} values");
        ensure!(kept.len() == want.len(), "{} values of {}", kept.len(), want.len());
        for (i, (b, &len)) in kept.iter().zip(&want).enumerate() {
            ensure!(b.len() == len && b.iter().all(|&x| x == i as u8), "value {i} ({len} bytes) is not intact");
        }
        Ok(())
    })
    .await
}

/// A stream value with large byte fields among others.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Record {
    id: u32,
    head: furrow::Bytes,
    name: String,
    tail: furrow::Bytes,
}

/// The expected content of record `i`'s `head`: 70,000 bytes of the
/// shared buffer, from offset `i * 997`.
fn pattern(at: usize, len: usize) -> Vec<u8> {
    (at..at + len).map(|x| (x % 253) as u8).collect()
}

/// Stream `count` records whose `head` is a slice of one shared buffer
/// (so many values lend the same buffer at once) and whose `tail` is one
/// `Bytes` sent again and again, large or small by turns.
#[furrow::context]
async fn produce_records(ctx: Context, count: u32) -> furrow::Result<()> {
    let shared = furrow::Bytes::from(pattern(0, 1 << 20));
    // The first value is large too (lent as well).
    ctx.started(&shared).await?;
    let (big, small) = (furrow::Bytes::from(vec![0xbb; 200_000]), furrow::Bytes::from(vec![0x55; 10]));
    ctx.open_stream(async |s| {
        for i in 0..count {
            let at = i as usize * 997;
            let head = bytes::Bytes::from(shared.clone()).slice(at..at + 70_000).into();
            let tail = if i % 2 == 0 { big.clone() } else { small.clone() };
            s.send(&Record { id: i, head, name: format!("record {i}"), tail }).await?;
        }
        furrow::Ok(())
    })
    .await
}

/// Values holding large `furrow::Bytes` go out from their senders' own
/// buffers, in frames of several parts: several large fields in one
/// value, the same buffer in many values at once, fields after them; all
/// arrive whole and in order, past the byte window many times over.
#[furrow_testing::test]
async fn stream_values_with_large_byte_fields_arrive_whole() -> anyhow::Result<()> {
    const COUNT: u32 = 300;
    furrow::open_nursery(async |n| {
        let p = n.start_actor("records-source").await?;
        p.open_context(produce_records, (COUNT,), async |ctx, first: furrow::Bytes| {
            ensure!(first[..] == pattern(0, 1 << 20)[..], "the first value is not intact");
            ctx.open_stream(async |s| {
                let mut next = 0u32;
                while let Some(r) = s.recv::<Record>().await? {
                    ensure!(r.id == next, "record {} came when {next} was due", r.id);
                    ensure!(r.name == format!("record {next}"), "record {next}'s name is {:?}", r.name);
                    ensure!(
                        r.head[..] == pattern(next as usize * 997, 70_000)[..],
                        "record {next}'s head is not intact"
                    );
                    let (len, fill) = if next.is_multiple_of(2) { (200_000, 0xbb) } else { (10, 0x55) };
                    ensure!(r.tail.len() == len && r.tail.iter().all(|&b| b == fill), "record {next}'s tail");
                    next += 1;
                }
                ensure!(next == COUNT, "{next} records of {COUNT}");
                Ok(())
            })
            .await?;
            match ctx.wait_for_result::<()>().await? {
                Outcome::Returned(()) => Ok(()),
                other => bail!("unexpected outcome {other:?}"),
            }
        })
        .await
    })
    .await
}

#[derive(Debug, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("producer gave up at {at}")]
pub struct GaveUp {
    at: u64,
}

impl From<Error> for GaveUp {
    fn from(_: Error) -> Self {
        GaveUp { at: u64::MAX }
    }
}

/// Stream `ok` numbers, then fail in the middle of the stream.
#[furrow::context]
async fn produce_then_fail(ctx: Context, ok: u64) -> Result<(), GaveUp> {
    ctx.started(&()).await.map_err(|_| GaveUp { at: 0 })?;
    ctx.open_stream(async |s| {
        for i in 0..ok {
            s.send(&i).await.map_err(|_| GaveUp { at: i })?;
        }
        Err(GaveUp { at: ok })
    })
    .await
}

/// Both directions at once: send `count` numbers while receiving as many.
#[furrow::context]
async fn duplex(ctx: Context, count: u64) -> furrow::Result<u64> {
    ctx.started(&()).await?;
    ctx.open_stream(async |s| {
        let send = async {
            for i in 0..count {
                s.send(&i).await?;
            }
            Ok(())
        };
        let recv = async {
            let mut expect = 0u64;
            while expect < count {
                match s.recv::<u64>().await? {
                    Some(x) if x == expect => expect += 1,
                    Some(x) => return Err(Error::Usage(format!("callee got {x}, expected {expect}"))),
                    None => return Err(Error::Usage(format!("stream ended at {expect}"))),
                }
            }
            Ok(expect)
        };
        let ((), got) = tokio::try_join!(send, recv)?;
        Ok(got)
    })
    .await
}

#[furrow::remote]
async fn plain() -> u8 {
    1
}

#[furrow_testing::test]
async fn full_ping_pong() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("echoer").await?;
        let total = p
            .open_context(echo_plus_one, ("hi".to_string(),), async |ctx, first: String| {
                ensure!(first == "hi, ready", "{first}");
                ctx.open_stream(async |s| {
                    for i in 0..500u64 {
                        s.send(&i).await?;
                        let back: u64 = s.recv().await?.context("echo ended early")?;
                        ensure!(back == i + 1, "got {back} for {i}");
                    }
                    Ok(())
                })
                .await?;
                // Our end closed: the callee's loop ends and it returns.
                match ctx.wait_for_result::<u64>().await? {
                    Outcome::Returned(n) => Ok(n),
                    other => bail!("unexpected outcome {other:?}"),
                }
            })
            .await?;
        ensure!(total == 500);
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn callee_returns_while_opener_streams() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("producer").await?;
        p.open_context(produce, (1000,), async |ctx, count: u64| {
            let got = ctx
                .open_stream(async |s| {
                    let mut got = Vec::new();
                    while let Some(x) = s.recv::<u64>().await? {
                        got.push(x);
                    }
                    anyhow::Ok(got)
                })
                .await?;
            ensure!(got == (0..count).collect::<Vec<_>>(), "all {count}, in order");
            ensure!(ctx.wait_for_result::<u64>().await? == Outcome::Returned((0..1000).sum()));
            ensure!(ctx.outcome() == Some(furrow::OutcomeInfo::Returned));
            Ok(())
        })
        .await
    })
    .await
}

#[furrow_testing::test]
async fn callee_error_mid_stream_reaches_the_opener() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("quitter").await?;
        let r = p
            .open_context(produce_then_fail, (3,), async |ctx, (): ()| {
                ctx.open_stream(async |s| {
                    let mut got = Vec::new();
                    loop {
                        match s.recv::<u64>().await {
                            Ok(Some(x)) => got.push(x),
                            Ok(None) => bail!("stream ended without the error"),
                            Err(e) => return Ok((got, e)),
                        }
                    }
                })
                .await
            })
            .await;
        // The body returned Ok((items, error)); the scope then raises the
        // callee's error itself.
        let err = match r {
            Ok(_) => bail!("open_context should fail with the callee's error"),
            Err(e) => e,
        };
        let e = err.downcast_ref::<Error>().with_context(|| format!("a furrow error, got {err:?}"))?;
        let remote = e.as_remote().context("a remote error")?;
        ensure!(remote.src == *p.aid());
        ensure!(remote.downcast::<GaveUp>().map(|g| g.at) == Some(3), "{e}");
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn both_directions_at_once_100k_each_no_loss_in_order() -> anyhow::Result<()> {
    const N: u64 = 100_000;
    furrow::open_nursery(async |n| {
        let p = n.start_actor("duplex").await?;
        p.open_context(duplex, (N,), async |ctx, (): ()| {
            ctx.open_stream(async |s| {
                let send = async {
                    for i in 0..N {
                        s.send(&i).await?;
                    }
                    Ok(())
                };
                let recv = async {
                    let mut expect = 0u64;
                    while let Some(x) = s.recv::<u64>().await? {
                        if x != expect {
                            return Err(Error::Usage(format!("opener got {x}, expected {expect}")));
                        }
                        expect += 1;
                    }
                    Ok(expect)
                };
                let ((), got) = tokio::try_join!(send, recv)?;
                ensure!(got == N, "received {got} of {N}");
                Ok(())
            })
            .await?;
            ensure!(ctx.wait_for_result::<u64>().await? == Outcome::Returned(N));
            Ok(())
        })
        .await
    })
    .await
}

#[furrow_testing::test]
async fn hundred_concurrent_contexts_on_one_channel() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("many").await?;
        let all = (0..100u64).map(|i| {
            let p = p.clone();
            async move {
                p.open_context(produce, (i,), async |ctx, count: u64| {
                    let sum = ctx
                        .open_stream(async |s| {
                            let mut sum = 0;
                            while let Some(x) = s.recv::<u64>().await? {
                                sum += x;
                            }
                            furrow::Ok(sum)
                        })
                        .await?;
                    ensure!(count == i);
                    ensure!(ctx.wait_for_result::<u64>().await? == Outcome::Returned(sum));
                    Ok(sum)
                })
                .await
            }
        });
        let sums = futures::future::try_join_all(all).await?;
        ensure!(sums == (0..100u64).map(|i| (0..i).sum::<u64>()).collect::<Vec<_>>());
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn streams_work_as_futures_stream_and_sink() -> anyhow::Result<()> {
    use futures::{SinkExt, StreamExt};
    furrow::open_nursery(async |n| {
        let p = n.start_actor("combinators").await?;
        p.open_context(echo_plus_one, ("x".to_string(),), async |ctx, _first: String| {
            ctx.open_stream(async |s| {
                let mut sink = std::pin::pin!(s.sink::<u64>());
                sink.send_all(&mut futures::stream::iter((0..10u64).map(Ok))).await?;
                let got: Vec<u64> = s.stream::<u64>().take(10).map(|r| r.expect("item")).collect().await;
                ensure!(got == (1..=10).collect::<Vec<_>>(), "{got:?}");
                Ok(())
            })
            .await
        })
        .await
    })
    .await
}

#[furrow_testing::test]
async fn wrong_kind_of_function_is_a_clear_error() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("kinds").await?;
        let as_context: furrow::ContextFn<(), u8> = furrow::ContextFn::__new(plain.name(), &[]);
        let e = p.open_context(as_context, (), async |_ctx, (): ()| furrow::Ok(())).await.unwrap_err();
        ensure!(e.to_string().contains("plain function"), "{e}");
        let as_rpc = furrow::RemoteFn::<(u64,), u64, ()>::__new(produce.name(), &["count"], ());
        let e = p.run(as_rpc, (1,)).await.unwrap_err();
        ensure!(e.to_string().contains("open_context"), "{e}");
        Ok(())
    })
    .await
}

/// Calls `started`, sends one stream value if asked, and returns at once:
/// its `Started` (control lane) is followed at once by a `Yield` or a
/// `Return` (data lane).
#[furrow::context]
async fn started_then(ctx: Context, yields: bool) -> furrow::Result<u64> {
    ctx.started(&7u64).await?;
    if yields {
        ctx.open_stream(async |s| s.send(&1u64).await).await?;
    }
    Ok(9)
}

/// A stream frame never overtakes a control frame of its dialog queued
/// before it: the writer found the control lane empty, then took a
/// `Return` sent after `Started` from the data lane, and the opener met
/// "returned without calling started()" (the integration loop, 1 run in
/// 79). Many contexts at once keep the callee's writer busy coalescing
/// while callees send, which widens that window.
#[furrow_testing::test]
async fn started_comes_before_the_yield_or_return_that_follows_it() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("prompt").await?;
        for round in 0..600u32 {
            let contexts = (0..64u32).map(|i| {
                let yields = i % 2 == 0;
                p.open_context(started_then, (yields,), async move |ctx, first: u64| {
                    ensure!(first == 7, "first value {first}");
                    if yields {
                        let got = ctx.open_stream(async |s| s.recv::<u64>().await).await?;
                        ensure!(got == Some(1), "streamed {got:?}");
                    }
                    ensure!(ctx.wait_for_result::<u64>().await? == Outcome::Returned(9));
                    Ok(())
                })
            });
            futures::future::try_join_all(contexts).await.with_context(|| format!("round {round}"))?;
        }
        Ok(())
    })
    .await
}

/// Two tasks reading one stream at once (`recv` takes `&self`): every
/// value reaches exactly one of them, each sees its values in the order
/// they were sent, and the window is given back for all of them (the
/// source sends the window's worth many times over, so a value counted by
/// neither reader would stall it). Both take from the same run of values
/// the reader handed over in one piece, one of them while the other holds
/// the mailbox (design.md, "The stream hot path").
#[furrow_testing::test]
async fn two_readers_of_one_stream_get_each_value_once_and_in_order() -> anyhow::Result<()> {
    const COUNT: u64 = 200_000;
    furrow::open_nursery(async |n| {
        let p = n.start_actor("shared-source").await?;
        let (a, b, sum) = p
            .open_context(produce, (COUNT,), async |ctx, count: u64| {
                ensure!(count == COUNT, "the source announced {count}");
                let (a, b) = ctx
                    .open_stream(async |s| {
                        let read = async || {
                            let mut got = Vec::new();
                            while let Some(x) = s.recv::<u64>().await? {
                                got.push(x);
                                // Let the other reader in now and then,
                                // in the middle of a run.
                                if x % 997 == 0 {
                                    tokio::task::yield_now().await;
                                }
                            }
                            furrow::Ok(got)
                        };
                        let (a, b) = tokio::join!(read(), read());
                        furrow::Ok((a?, b?))
                    })
                    .await?;
                match ctx.wait_for_result::<u64>().await? {
                    Outcome::Returned(sum) => Ok((a, b, sum)),
                    other => bail!("unexpected outcome {other:?}"),
                }
            })
            .await?;
        ensure!(sum == (0..COUNT).sum::<u64>(), "the source's sum {sum}");
        ensure!(!a.is_empty() && !b.is_empty(), "one reader got nothing ({} and {} values)", a.len(), b.len());
        for (name, got) in [("first", &a), ("second", &b)] {
            if let Some(w) = got.windows(2).find(|w| w[0] >= w[1]) {
                bail!("the {name} reader got {} after {}", w[1], w[0]);
            }
        }
        // Both in order: merging them must give every value once.
        let (mut i, mut j) = (0, 0);
        for want in 0..COUNT {
            if a.get(i) == Some(&want) {
                i += 1;
            } else if b.get(j) == Some(&want) {
                j += 1;
            } else {
                bail!("value {want} reached neither reader (or both)");
            }
        }
        ensure!(i == a.len() && j == b.len(), "values past the end: {} and {}", a.len() - i, b.len() - j);
        Ok(())
    })
    .await
}
