//! Launchers other than ssh: a command prefix (`ip netns exec`, run here
//! in a network namespace of the test's own), and what a launched child
//! needs from its parent (a TCP address it can connect back to).
//! docs/design.md, "Remote hosts".

use anyhow::{Context as _, bail, ensure};
use furrow::{Error, Launcher, SpawnOptions};
use furrow_testing::ssh::FarNetns;
use std::time::Duration;

/// This process's pid and network namespace (its inode).
#[furrow::remote]
async fn whereabouts() -> (u32, u64) {
    (std::process::id(), netns_inode())
}

fn netns_inode() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).unwrap_or(0)
}

#[furrow_testing::test]
fn a_prefix_launcher_starts_the_child_in_another_network_namespace() -> anyhow::Result<()> {
    let far = FarNetns::start().unwrap_or_else(|why| furrow_testing::skip(why));
    let here = netns_inode();
    let bind: furrow::Addr = format!("tcp://{}:0", far.near_addr()).parse()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let pid = rt.block_on(furrow::run_root(furrow_testing::root_config().bind([bind]), async {
        furrow::open_nursery(async |n| {
            let opts = SpawnOptions::new().launcher(Launcher::prefix(["ip", "netns", "exec", far.name()]));
            let p = n.start_actor_with("netns-child", opts).await?;
            let (pid, ns) = p.run(whereabouts, ()).await?;
            ensure!(ns != here, "the child runs in this very namespace");
            ensure!(p.aid().pid == pid, "Aid says pid {}, the child is {pid}", p.aid().pid);
            Ok(pid)
        })
        .await
    }))??;
    // `ip netns exec` exec'd the child: the nursery reaped it, nothing is
    // left (the harness checks processes, fds and socket files too).
    furrow_testing::wait_gone(&[pid], Duration::from_secs(5)).map_err(anyhow::Error::msg)?;
    Ok(())
}

/// A child started through a launcher connects back over TCP: a parent
/// that listens on none fails the start, saying what to set, before
/// anything is started.
#[furrow_testing::test]
async fn a_launched_child_needs_a_tcp_address_to_connect_back_to() -> anyhow::Result<()> {
    let r = furrow::open_nursery(async |n| {
        n.start_actor_with("far", SpawnOptions::new().launcher(Launcher::prefix(["env"]))).await.map(drop)
    })
    .await;
    match r {
        Err(Error::Spawn { reason, lifecycle, .. }) => {
            ensure!(reason.contains("listens on no TCP address"), "{reason}");
            ensure!(reason.contains("SpawnOptions::connect_back"), "{reason}");
            ensure!(lifecycle.is_empty(), "something started: {lifecycle:?}");
        }
        other => bail!("{other:?}"),
    }
    let r = furrow::open_nursery(async |n| {
        let opts = SpawnOptions::new()
            .launcher(Launcher::prefix(["env"]))
            .connect_back("tcp://0.0.0.0:7000".parse().context("addr")?);
        n.start_actor_with("far", opts).await.map(drop).map_err(anyhow::Error::from)
    })
    .await;
    let e = r.err().context("an unspecified address was accepted")?;
    ensure!(e.to_string().contains("names no host"), "{e}");
    Ok(())
}
