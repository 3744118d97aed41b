//! Errors and panics in remote functions come back with their origin
//! (DESIGN rule 2).

use anyhow::{Context, ensure};

#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq, thiserror::Error)]
#[error("account {account} is short by {missing}")]
pub struct Overdrawn {
    account: String,
    missing: u64,
}

#[furrow::remote]
async fn withdraw(account: String, amount: u64) -> Result<u64, Overdrawn> {
    if amount > 100 { Err(Overdrawn { account, missing: amount - 100 }) } else { Ok(100 - amount) }
}

#[furrow::remote]
async fn explode(msg: String) -> u32 {
    panic!("exploded: {msg}");
}

#[furrow::remote]
async fn io_fail() -> std::io::Result<()> {
    Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no access to /secret"))
}

#[furrow::remote]
async fn anyhow_fail() -> anyhow::Result<()> {
    Err(anyhow::anyhow!("low level").context("high level"))
}

#[furrow::remote]
async fn ok_after_panic() -> String {
    "still serving".into()
}

#[furrow_testing::test]
async fn typed_error_is_recovered() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("bank").await?;
        assert_eq!(p.run(withdraw, ("a".into(), 30)).await?, 70);
        let err = p.run(withdraw, ("acct-9".into(), 130)).await.unwrap_err();
        let r = err.as_remote().context("remote")?;
        ensure!(r.src == *p.aid(), "source actor");
        ensure!(r.boxed_type.ends_with("Overdrawn"), "{}", r.boxed_type);
        ensure!(r.message == "account acct-9 is short by 30", "{}", r.message);
        let typed: Overdrawn = r.downcast().context("downcast")?;
        ensure!(typed == Overdrawn { account: "acct-9".into(), missing: 30 });
        ensure!(r.downcast::<String>().is_none());
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn panic_arrives_as_error_and_actor_keeps_serving() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("bomb").await?;
        let err = p.run(explode, ("kaboom".into(),)).await.unwrap_err();
        let r = err.as_remote().context("remote")?;
        ensure!(r.is_panic(), "{err}");
        ensure!(r.message == "exploded: kaboom", "{}", r.message);
        ensure!(r.src == *p.aid());
        ensure!(r.backtrace.contains("errors_remote.rs"), "location in trace: {:?}", r.backtrace);
        assert_eq!(p.run(ok_after_panic, ()).await?, "still serving");
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn error_chain_travels() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("failing").await?;
        let err = p.run(io_fail, ()).await.unwrap_err();
        let r = err.as_remote().context("remote")?;
        ensure!(r.boxed_type == "std::io::error::Error", "{}", r.boxed_type);
        ensure!(r.message == "no access to /secret");
        let err = p.run(anyhow_fail, ()).await.unwrap_err();
        let r = err.as_remote().context("remote")?;
        ensure!(r.message == "high level", "{}", r.message);
        ensure!(r.backtrace.contains("low level"), "chain: {:?}", r.backtrace);
        // Display names type, actor and message.
        let shown = err.to_string();
        ensure!(shown.contains("high level") && shown.contains("failing"), "{shown}");
        Ok(())
    })
    .await
}

/// Streams three numbers, then cancels its own context.
#[furrow::context]
async fn cancels_itself(ctx: furrow::Context) -> furrow::Result<()> {
    ctx.started(&()).await?;
    ctx.open_stream(async |s| {
        for i in 0..3u64 {
            s.send(&i).await?;
        }
        ctx.cancel().await?;
        std::future::pending::<()>().await;
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn a_raised_cancellation_names_its_canceller_once() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("quitter").await?;
        let r = p
            .open_context(cancels_itself, (), async |ctx, (): ()| {
                ctx.open_stream(async |s| {
                    while s.recv::<u64>().await?.is_some() {}
                    Ok::<_, furrow::Error>(())
                })
                .await
            })
            .await;
        let err = r.expect_err("the callee's own cancellation is raised");
        ensure!(matches!(err, furrow::Error::ContextCancelled { .. }), "{err:?}");
        ensure!(err.to_string() == format!("context cancelled by {}", p.aid()), "{err}");
        Ok(())
    })
    .await
}
