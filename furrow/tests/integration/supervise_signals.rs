//! Real signals to a real root process (docs/guide.md, rules 7 and 8): SIGKILL of
//! the root leaves no descendant behind; SIGINT and SIGTERM cancel the tree
//! gracefully and exit non-zero; a second SIGINT hard-kills.

use anyhow::{Context as _, bail, ensure};
use furrow::Context;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::common::spin_everything;

/// Middle of the tree: starts a leaf, reports (own pid, leaf pid), waits.
#[furrow::context]
async fn mid_with_leaf(ctx: Context, spin_leaf: bool) -> furrow::Result<()> {
    furrow::open_nursery(async |n| {
        let leaf = n.start_actor("leaf").await?;
        if spin_leaf {
            let l = leaf.clone();
            tokio::spawn(async move { l.run(spin_everything, ()).await });
        }
        ctx.started(&(std::process::id(), leaf.aid().pid)).await?;
        std::future::pending::<()>().await;
        Ok(())
    })
    .await
}

/// A 3-level tree: this root, two mids, a leaf under each. Prints `root
/// PID`, then `pids MID LEAF` for each branch, then blocks.
#[furrow_testing::test(scenario)]
async fn scenario_tree3() -> anyhow::Result<()> {
    let spin = std::env::var_os("SPIN_LEAF").is_some();
    println!("root {}", std::process::id());
    furrow::open_nursery(async |n| {
        let a = n.start_actor("mid-a").await?;
        let b = n.start_actor("mid-b").await?;
        let branch = async |p: &furrow::Portal| {
            p.open_context(mid_with_leaf, (spin,), async |_ctx, (mid, leaf): (u32, u32)| {
                println!("pids {mid} {leaf}");
                std::future::pending::<()>().await;
                furrow::Ok(())
            })
            .await
        };
        tokio::try_join!(branch(&a), branch(&b))?;
        Ok(())
    })
    .await
}

struct Tree {
    child: tokio::process::Child,
    root: u32,
    pids: Vec<u32>,
}

async fn start_tree(spin_leaf: bool) -> anyhow::Result<Tree> {
    let mut cmd = furrow_testing::scenario("scenario_tree3");
    // Warnings on: a nursery that has to signal a child says so (the
    // graceful tests check that none did).
    cmd.stderr(std::process::Stdio::piped()).env("RUST_LOG", "warn");
    if spin_leaf {
        cmd.env("SPIN_LEAF", "1");
    }
    let mut child = cmd.spawn()?;
    let out = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(out).lines();
    let (mut root, mut pids) = (0u32, Vec::new());
    tokio::time::timeout(Duration::from_secs(20), async {
        while pids.len() < 4 {
            let line = lines.next_line().await?.context("scenario ended early")?;
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["root", p] => root = p.parse()?,
                ["pids", m, l] => pids.extend([m.parse::<u32>()?, l.parse::<u32>()?]),
                _ => {}
            }
        }
        anyhow::Ok(())
    })
    .await
    .context("tree did not start")??;
    ensure!(root != 0 && pids.iter().all(|p| *p != 0));
    Ok(Tree { child, root, pids })
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a process this test started.
    unsafe { libc::kill(pid as i32, sig) };
}

#[furrow_testing::test]
async fn sigkill_of_the_root_leaves_no_descendant() -> anyhow::Result<()> {
    let mut tree = start_tree(false).await?;
    let t = Instant::now();
    signal(tree.root, libc::SIGKILL);
    let status = tree.child.wait().await?;
    ensure!(!status.success());
    // Each mid sees its parent's channel close (and its parent-death
    // signal) and cancels itself, ending its leaf first.
    furrow_testing::wait_gone(&tree.pids, Duration::from_secs(2)).map_err(anyhow::Error::msg)?;
    println!("root SIGKILLed: all 4 descendants gone in {:?}", t.elapsed());
    // The SIGKILLed root could not remove its socket file; the next root's
    // sweep would.
    furrow_testing::sweep_stale_sockets();
    Ok(())
}

async fn interrupt_and_check(sig: i32, code: i32, needle: &str) -> anyhow::Result<Duration> {
    let mut tree = start_tree(false).await?;
    let mut err = tree.child.stderr.take().context("stderr")?;
    let t = Instant::now();
    signal(tree.root, sig);
    let status = tokio::time::timeout(Duration::from_secs(10), tree.child.wait()).await.context("root hung")??;
    let took = t.elapsed();
    let mut text = String::new();
    err.read_to_string(&mut text).await?;
    ensure!(status.code() == Some(code), "exit status {status}, stderr:\n{text}");
    ensure!(text.contains(needle), "stderr should say {needle:?}:\n{text}");
    // Graceful: every actor acknowledged its cancel and exited by itself;
    // no nursery of the tree needed SIGTERM or SIGKILL (each says so when
    // it does: "did not exit after a cancel request: SIGTERM"). How it
    // ended, not how long it took: a bound near the ladder's steps flakes
    // on a loaded machine.
    ensure!(!text.contains("did not exit after"), "a child needed a signal:\n{text}");
    furrow_testing::wait_gone(&tree.pids, Duration::from_secs(2)).map_err(anyhow::Error::msg)?;
    Ok(took)
}

#[furrow_testing::test]
async fn sigint_cancels_the_tree_and_exits_non_zero() -> anyhow::Result<()> {
    let took = interrupt_and_check(libc::SIGINT, 130, "interrupted by SIGINT").await?;
    println!("SIGINT to exit of a 3-level tree: {took:?}");
    Ok(())
}

#[furrow_testing::test]
async fn sigterm_behaves_like_the_first_ctrl_c() -> anyhow::Result<()> {
    let took = interrupt_and_check(libc::SIGTERM, 143, "interrupted by SIGTERM").await?;
    println!("SIGTERM to exit of a 3-level tree: {took:?}");
    Ok(())
}

#[furrow_testing::test]
async fn second_sigint_during_a_slow_shutdown_hard_kills() -> anyhow::Result<()> {
    // The leaves never yield: a graceful shutdown would need the whole
    // ladder (seconds). The second Ctrl-C does not wait for it.
    let mut tree = start_tree(true).await?;
    // Both leaves spinning (their CPU time rising: 5 ticks, 50 ms, each)
    // before the first Ctrl-C, or the graceful shutdown could succeed.
    let leaves = [tree.pids[1], tree.pids[3]];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !leaves.iter().all(|&l| furrow_testing::process(l as i32).is_some_and(|p| p.cpu_ticks >= 5)) {
        ensure!(Instant::now() < deadline, "the leaves never started spinning");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal(tree.root, libc::SIGINT);
    // The second Ctrl-C only once the root has taken the first (it says
    // so on stderr), not after a guess at how long that takes.
    let mut err = BufReader::new(tree.child.stderr.take().context("stderr")?).lines();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = err.next_line().await? {
            if line.contains("cancelling the actor tree") {
                return anyhow::Ok(());
            }
        }
        bail!("the root's stderr ended before it took the first Ctrl-C")
    })
    .await
    .context("the root never said it took the first Ctrl-C")??;
    let t = Instant::now();
    signal(tree.root, libc::SIGINT);
    let status = tokio::time::timeout(Duration::from_secs(5), tree.child.wait()).await.context("root hung")??;
    let took = t.elapsed();
    // 137 is the hard kill's own status (the root SIGKILLs the process
    // groups and exits 128 + 9); a root that had waited for the ladder
    // instead would have exited 130. Which step ended it, not how fast
    // (a bound of 1 s flaked on a loaded machine); the wait above only
    // catches a hang.
    ensure!(status.code() == Some(137), "exit status {status}");
    println!("second SIGINT to exit: {took:?}");
    if let Err(e) = furrow_testing::wait_gone(&tree.pids, Duration::from_secs(2)) {
        bail!("after the hard kill: {e}");
    }
    // No socket file is left: the root swept the killed actors' sockets
    // and removed its own (the harness's leak check verifies it).
    Ok(())
}

/// `#[furrow::main(config = …)]`'s expansion: a configured root that still
/// handles Ctrl-C.
#[furrow_testing::test(scenario)]
fn scenario_configured_root() -> anyhow::Result<()> {
    furrow::__private::block_on_root_with(furrow::Config::new("custom-root"), async {
        furrow::open_nursery(async |n| {
            let child = n.start_actor("served").await?;
            println!("root {} child {}", furrow::local_aid()?.name, child.aid().pid);
            std::future::pending::<anyhow::Result<()>>().await
        })
        .await
    })
}

#[furrow_testing::test]
async fn a_configured_root_is_named_by_its_config_and_handles_ctrl_c() -> anyhow::Result<()> {
    let mut cmd = furrow_testing::scenario("scenario_configured_root");
    cmd.stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .context("no start")??
        .context("scenario ended early")?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let ["root", name, "child", pid] = words.as_slice() else { bail!("unexpected line {line:?}") };
    ensure!(*name == "custom-root", "the root is named {name}, not by its config");
    let pid: u32 = pid.parse()?;
    signal(child.id().context("pid")?, libc::SIGINT);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.context("root hung")??;
    let mut err = String::new();
    child.stderr.take().context("stderr")?.read_to_string(&mut err).await?;
    ensure!(status.code() == Some(130), "exit status {status}, stderr:\n{err}");
    ensure!(err.contains("interrupted by SIGINT"), "{err}");
    furrow_testing::wait_gone(&[pid], Duration::from_secs(2)).map_err(anyhow::Error::msg)?;
    Ok(())
}
