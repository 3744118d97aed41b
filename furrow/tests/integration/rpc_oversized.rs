//! Answers over the frame limit (issue 14, defect 1): every dialog gets an
//! answer, and what could not be sent is named with its size and the
//! limit. Before, a callee whose `Return` or `Error` did not fit dropped
//! it (a debug line) and the caller waited forever.
//!
//! The harness's root runs with the default limit (32 MiB). Arguments
//! over the limit: `ipc_bad_input::oversized_argument_is_refused_at_the_sender`.

use anyhow::{Context as _, bail, ensure};
use furrow::ErrorKind;
use furrow::{Context, Error};
use std::time::Duration;

const LIMIT: usize = furrow::proto::DEFAULT_MAX_FRAME;
/// A value well over the limit.
const BIG: usize = 40 << 20;
/// Every call here is bounded: a hang is the bug.
const BOUND: Duration = Duration::from_secs(60);

#[furrow::remote]
async fn make_vec(n: usize) -> Vec<u8> {
    vec![7; n]
}

#[furrow::remote]
async fn make_bytes(n: usize) -> furrow::Bytes {
    furrow::Bytes::from(vec![7; n])
}

#[furrow::remote]
async fn fail_with(n: usize) -> Result<(), String> {
    Err("x".repeat(n))
}

/// Sends a stream message of `n` bytes, then (whatever that gave) a small
/// one; returns what the big send gave, as text.
#[furrow::context]
async fn yield_big(ctx: Context, n: usize) -> furrow::Result<String> {
    ctx.started(&()).await?;
    ctx.open_stream(async |s| {
        let big = s.send(&"y".repeat(n)).await;
        s.send(&"small").await?;
        Ok(match big {
            Ok(()) => "sent".to_owned(),
            Err(e @ Error::FrameTooLarge { .. }) => format!("refused: {e}"),
            Err(e) => format!("other error: {e}"),
        })
    })
    .await
}

/// Calls `started` with a value of `n` bytes and fails with what it gave.
#[furrow::context]
async fn start_big(ctx: Context, n: usize) -> furrow::Result<()> {
    ctx.started(&"z".repeat(n)).await
}

/// Tries `started` with a value of `n` bytes, then with a small one.
#[furrow::context]
async fn start_big_then_small(ctx: Context, n: usize) -> furrow::Result<String> {
    let first = match ctx.started(&"z".repeat(n)).await {
        Ok(()) => return Ok("the big first value was sent".into()),
        Err(e) => e.to_string(),
    };
    ctx.started(&"small").await?;
    Ok(first)
}

/// The remote error of `r`, which must be one.
fn remote_of<T: std::fmt::Debug>(r: furrow::Result<T>) -> anyhow::Result<furrow::RemoteActorError> {
    match r {
        Err(Error::Remote(e)) => Ok(*e),
        other => bail!("expected a remote error, got {other:?}"),
    }
}

#[furrow_testing::test]
async fn a_result_over_the_frame_limit_is_an_error_naming_its_size() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("big-results").await?;
        let got = tokio::time::timeout(BOUND, p.run(make_vec, (BIG,))).await.context("the call hung")?;
        let e = remote_of(got)?;
        ensure!(e.kind() == &ErrorKind::FrameTooLarge, "{e:?}");
        ensure!(e.src == *p.aid(), "raised by the callee: {e:?}");
        let want = format!("the result of `{}` of ", make_vec.name());
        ensure!(e.message.starts_with(&want), "{:?} should start with {want:?}", e.message);
        ensure!(e.message.contains(&format!("exceeds the frame limit of {LIMIT} bytes")), "{}", e.message);
        // The size is the real one: the value's encoding (one byte per
        // element below 128) plus the envelope.
        let len: usize = e.message[want.len()..].split(' ').next().unwrap_or("").parse()?;
        ensure!(len > BIG && len < BIG + 1024, "{len} bytes for {BIG} elements: {}", e.message);
        println!("{e}");
        // The dialog ended cleanly and the channel still serves.
        ensure!(p.run(make_vec, (3,)).await? == vec![7, 7, 7]);
        // A large `furrow::Bytes` result, written from its own buffer (a
        // frame in parts), is measured and replaced the same way.
        let e = remote_of(tokio::time::timeout(BOUND, p.run(make_bytes, (BIG,))).await.context("the call hung")?)?;
        ensure!(e.kind() == &ErrorKind::FrameTooLarge, "{e:?}");
        let want = format!("the result of `{}` of ", make_bytes.name());
        ensure!(e.message.starts_with(&want), "{:?} should start with {want:?}", e.message);
        let len: usize = e.message[want.len()..].split(' ').next().unwrap_or("").parse()?;
        ensure!(len > BIG && len < BIG + 64, "{len} bytes for {BIG}: {}", e.message);
        ensure!(p.run(make_bytes, (1 << 20,)).await?.len() == 1 << 20);
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn an_error_over_the_frame_limit_arrives_cut_down() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("big-errors").await?;
        let got = tokio::time::timeout(BOUND, p.run(fail_with, (BIG,))).await.context("the call hung")?;
        let e = remote_of(got)?;
        // Its own kind and origin, its message cut and marked.
        ensure!(e.kind().as_str().contains("String"), "{e:?}");
        ensure!(e.src == *p.aid());
        ensure!(e.message.starts_with(&"x".repeat(1024)), "the start of the message is kept");
        ensure!(e.message.len() < 2048, "cut to about 1 KiB, not {} bytes", e.message.len());
        let mark = format!("the whole error (the error of `{}`) of ", fail_with.name());
        ensure!(e.message.contains(&mark), "{:?}", &e.message[1024..]);
        ensure!(e.message.contains(&format!("exceeds the frame limit of {LIMIT} bytes")), "{}", &e.message[1024..]);
        println!("{}", &e.message[1000..]);
        // A small error still arrives whole.
        let small = remote_of(p.run(fail_with, (5,)).await)?;
        ensure!(small.message == "xxxxx", "{small:?}");
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn a_refusal_quoting_an_oversized_name_still_arrives() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("refuser").await?;
        // A `Start` that fits (just), whose refusal quotes the name and so
        // does not: before, it was dropped and the caller waited forever.
        let name = "n".repeat(LIMIT - 200);
        let got = tokio::time::timeout(BOUND, p.run_by_name::<_, ()>(&name, &())).await.context("the call hung")?;
        let e = remote_of(got)?;
        ensure!(e.kind() == &ErrorKind::FunctionNotFound, "{e:?}");
        ensure!(e.message.contains("[cut: the whole error (the refusal of a request) of "), "{}", &e.message[1000..]);
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn an_oversized_stream_message_fails_its_send_and_the_stream_goes_on() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("big-yields").await?;
        // The callee's big send fails at once; its next one arrives.
        let said = tokio::time::timeout(
            BOUND,
            p.open_context(yield_big, (BIG,), async |ctx, (): ()| {
                ctx.open_stream(async |s| {
                    let first = s.recv::<String>().await?;
                    ensure!(first.as_deref() == Some("small"), "{first:?}");
                    ensure!(s.recv::<String>().await?.is_none());
                    Ok(())
                })
                .await?;
                anyhow::Ok(ctx.wait_for_result::<String>().await?)
            }),
        )
        .await
        .context("the context hung")??;
        let said = match said {
            furrow::Outcome::Returned(s) => s,
            other => bail!("{other:?}"),
        };
        ensure!(
            said.starts_with("refused: a stream message of ")
                && said.contains(&format!("frame limit of {LIMIT} bytes")),
            "{said}"
        );
        // The opener's own big send fails the same way, and its credit is
        // given back: with a window of one, the next send still goes out.
        let echoed = tokio::time::timeout(
            BOUND,
            p.open_context(echo_one, (), async |ctx, (): ()| {
                ctx.open_stream_with(furrow::StreamOptions::new().window(1), async |s| {
                    match s.send(&"b".repeat(BIG)).await {
                        Err(Error::FrameTooLarge { what, .. }) => ensure!(what == "a stream message", "{what}"),
                        other => bail!("expected FrameTooLarge, got {other:?}"),
                    }
                    // A large `furrow::Bytes` takes another way (a frame of
                    // its own, written from the value's buffer): the same.
                    match s.send(&furrow::Bytes::from(vec![b'b'; BIG])).await {
                        Err(Error::FrameTooLarge { what, .. }) => ensure!(what == "a stream message", "{what}"),
                        other => bail!("expected FrameTooLarge for Bytes, got {other:?}"),
                    }
                    s.send(&"after".to_owned()).await?;
                    Ok(s.recv::<String>().await?)
                })
                .await
            }),
        )
        .await
        .context("the context hung")??;
        ensure!(echoed.as_deref() == Some("after"), "{echoed:?}");
        Ok(())
    })
    .await
}

/// Sends back the first message it receives.
#[furrow::context]
async fn echo_one(ctx: Context) -> furrow::Result<()> {
    ctx.started(&()).await?;
    ctx.open_stream_with(furrow::StreamOptions::new().window(1), async |s| {
        if let Some(m) = s.recv::<String>().await? {
            s.send(&m).await?;
        }
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn an_oversized_first_value_fails_started_and_reaches_the_opener() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("big-started").await?;
        // The callee fails with what `started` gave: the opener gets it
        // instead of waiting for a `Started` that never comes.
        let got = tokio::time::timeout(BOUND, p.open_context(start_big, (BIG,), async |_ctx, _first: String| Ok(())))
            .await
            .context("open_context hung")?;
        let e = remote_of(got)?;
        ensure!(e.kind() == &ErrorKind::FrameTooLarge, "{e:?}");
        let want = format!("the first value of context `{}` of ", start_big.name());
        ensure!(e.message.starts_with(&want), "{}", e.message);
        // Nothing went out, so `started` may be called again.
        let said = p
            .open_context(start_big_then_small, (BIG,), async |ctx, first: String| {
                ensure!(first == "small");
                Ok(ctx.wait_for_result::<String>().await?)
            })
            .await?;
        ensure!(
            matches!(&said, furrow::Outcome::Returned(s) if s.starts_with("the first value of context")),
            "{said:?}"
        );
        Ok(())
    })
    .await
}
