//! Errors and panics in remote functions come back with their origin
//! (docs/guide.md, rule 2).

use anyhow::{Context, ensure};
use furrow::ErrorKind;

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
        ensure!(r.kind().as_str().ends_with("Overdrawn"), "{}", r.kind());
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
        ensure!(r.kind() == &ErrorKind::Other("std::io::error::Error".into()), "{}", r.kind());
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
                    Ok(())
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

#[furrow::remote]
async fn wait_forever() {
    std::future::pending::<()>().await
}

#[furrow::remote]
async fn pong() -> u32 {
    std::process::id()
}

/// One round: a call is in flight in `victim` when it is SIGKILLed, while
/// other calls keep writing to it (so this side's writer meets the dead
/// socket too). Every call's error, and the nursery's.
async fn kill_mid_call() -> anyhow::Result<(Vec<furrow::Error>, furrow::Result<()>)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // The calls run in a task of their own: the death also fails the
    // nursery (one cancels all), which drops its body.
    let r = furrow::open_nursery(async |n| {
        let p = n.start_actor("victim").await?;
        let pid = p.run(pong, ()).await? as i32;
        tokio::spawn(async move {
            let in_flight = p.run(wait_forever, ());
            let killer = async {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                // SAFETY: killing our own child process.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                // Keep writing until the channel is gone.
                let writers = (0..4).map(|_| async {
                    loop {
                        if let Err(e) = p.run(pong, ()).await {
                            return e;
                        }
                    }
                });
                futures::future::join_all(writers).await
            };
            let (first, mut errors) = tokio::join!(in_flight, killer);
            errors.insert(0, first.expect_err("the call in flight cannot complete"));
            let _ = tx.send(errors);
        });
        std::future::pending::<()>().await;
        Ok(())
    })
    .await;
    Ok((rx.await.context("the calls' task ended")?, r))
}

/// A peer that died is reported as the peer closing the connection,
/// however this side learned it (its reader met the end of stream or a
/// reset, or its writer a broken pipe), never as a local close.
#[furrow_testing::test]
async fn a_sigkilled_peer_is_always_reported_as_closing_the_connection() -> anyhow::Result<()> {
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..20 {
        let (errors, r) = kill_mid_call().await?;
        for e in &errors {
            let furrow::Error::TransportClosed { peer, reason } = e else {
                anyhow::bail!("round {round}: expected TransportClosed, got {e:?}")
            };
            ensure!(peer.starts_with("victim["), "round {round}: {e}");
            ensure!(reason.starts_with("peer closed the connection"), "round {round}: {e}");
            *seen.entry(reason.clone()).or_default() += 1;
        }
        match r {
            Err(furrow::Error::ActorExited { actor, status, .. }) => {
                ensure!(actor.name == "victim" && status.contains("SIGKILL"), "round {round}: {actor} {status}")
            }
            other => anyhow::bail!("round {round}: the nursery should fail with the death: {other:?}"),
        }
    }
    println!("reasons seen: {seen:?}");
    Ok(())
}
