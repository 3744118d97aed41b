//! Scoped connections (`connect`, `find_actor`, …) close when their future
//! is dropped mid-body: a `timeout` around them must not leave a
//! connection open each time it fires.

use anyhow::ensure;
use std::time::{Duration, Instant};

#[furrow::remote]
pub async fn forever() {
    std::future::pending::<()>().await
}

/// Wait (bounded) until the child has exactly `n` channels open that it
/// accepted (its own channels to its parent and the registrar, which it
/// dialled, are not counted).
async fn accepted_become(p: &furrow::Portal, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = p.stats().await?;
        let open = st.channels.iter().filter(|c| !c.dialer).count();
        if open == n {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{open} channels open, expected {n}: {:#?}", st.channels);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[furrow_testing::test]
async fn scopes_dropped_by_a_timeout_close_their_connections() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("target").await?;
        accepted_become(&p, 0).await?;
        let addr = p.addrs().first().cloned().ok_or_else(|| anyhow::anyhow!("no address"))?;
        for _ in 0..3 {
            let r = tokio::time::timeout(
                Duration::from_millis(100),
                furrow::connect(&addr, async |q| q.run(forever, ()).await),
            )
            .await;
            ensure!(r.is_err(), "the call should hang until the timeout");
            let r = tokio::time::timeout(
                Duration::from_millis(100),
                furrow::find_actor("target", async |q| match q {
                    Some(q) => q.run(forever, ()).await,
                    None => Ok(()),
                }),
            )
            .await;
            ensure!(r.is_err(), "the lookup's call should hang until the timeout");
        }
        // Six dropped scopes, no connection left behind.
        accepted_become(&p, 0).await?;
        Ok(())
    })
    .await
}
