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
