//! The TCP transport, and several addresses per actor.

use anyhow::ensure;
use furrow::{Addr, SpawnOptions};

#[furrow::remote]
async fn mul(a: i64, b: i64) -> i64 {
    a * b
}

#[furrow_testing::test]
async fn call_over_tcp() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let tcp: Addr = "tcp://127.0.0.1:0".parse()?;
        let uds = Addr::Uds(furrow_testing::socket_dir().join("multi.sock"));
        let p = n.start_actor_with("tcp-child", SpawnOptions::new().bind([tcp, uds.clone()])).await?;
        // Port 0 was resolved to the real port; both addresses are served.
        let addrs = p.addrs().to_vec();
        ensure!(addrs.len() == 2, "{addrs:?}");
        let Addr::Tcp(hp) = &addrs[0] else { anyhow::bail!("first address should be TCP: {addrs:?}") };
        ensure!(!hp.ends_with(":0"), "{hp}");
        ensure!(addrs[1] == uds);
        for addr in &addrs {
            let (got, peer) = furrow::connect(addr, async |q| {
                let many = (0..50).map(|i| q.run(mul, (i, 3)));
                let got = futures::future::try_join_all(many).await?;
                furrow::Ok((got, q.aid().clone()))
            })
            .await?;
            ensure!(got == (0..50).map(|i| i * 3).collect::<Vec<i64>>());
            // The same actor, reached another way.
            ensure!(peer == *p.aid(), "{peer} vs {}", p.aid());
        }
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn connecting_to_nothing_is_a_clear_error() -> anyhow::Result<()> {
    let addr: Addr = format!("uds://{}", furrow_testing::socket_dir().join("nobody.sock").display()).parse()?;
    let err = furrow::connect(&addr, async |_p| Ok(())).await.unwrap_err();
    ensure!(matches!(err, furrow::Error::Io { .. }), "{err:?}");
    ensure!(err.to_string().contains("nobody.sock"), "{err}");
    Ok(())
}
