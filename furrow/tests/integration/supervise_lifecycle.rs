//! Lifecycle order (docs/guide.md, rule 11): for every child the parent observes
//! spawned → connected → ready → exited(status), in that order, even when
//! the child dies at any point of its start; a failed start is a clear
//! error and leaks nothing (the harness checks processes, fds, sockets).
//!
//! `FURROW_CHAOS_DIE_AT` makes each child SIGKILL itself at one step.

use anyhow::{bail, ensure};
use furrow::{Error, Lifecycle};

const KILLED: &str = "signal 9 (SIGKILL)";

/// Start one child that dies at the step named in the environment, and
/// return its lifecycle as the error reports it.
async fn start_doomed_child() -> anyhow::Result<(Error, Vec<Lifecycle>)> {
    let r = furrow::open_nursery(async |n| {
        n.start_actor("doomed").await?;
        std::future::pending::<()>().await; // a crash after `ready` fails the nursery
        Ok(())
    })
    .await;
    let err = r.expect_err("the child dies");
    let steps = match &err {
        Error::Spawn { lifecycle, .. } | Error::ActorExited { lifecycle, .. } => lifecycle.clone(),
        other => bail!("unexpected error {other}"),
    };
    println!("{err}\n  lifecycle: {steps:?}");
    Ok((err, steps))
}

fn shape(steps: &[Lifecycle]) -> Vec<&'static str> {
    steps
        .iter()
        .map(|s| match s {
            Lifecycle::Spawned { .. } => "spawned",
            Lifecycle::Connected => "connected",
            Lifecycle::Ready => "ready",
            Lifecycle::Exited { .. } => "exited",
        })
        .collect()
}

fn exited_killed(steps: &[Lifecycle]) -> bool {
    matches!(steps.last(), Some(Lifecycle::Exited { status }) if status == KILLED)
}

#[furrow_testing::test(env = "FURROW_CHAOS_DIE_AT=start")]
async fn dies_before_connecting() -> anyhow::Result<()> {
    let (err, steps) = start_doomed_child().await?;
    ensure!(matches!(err, Error::Spawn { .. }), "{err}");
    ensure!(err.to_string().contains("before its handshake"), "{err}");
    ensure!(shape(&steps) == ["spawned", "exited"], "{steps:?}");
    ensure!(exited_killed(&steps), "{steps:?}");
    Ok(())
}

#[furrow_testing::test(env = "FURROW_CHAOS_DIE_AT=connected")]
async fn dies_after_connecting() -> anyhow::Result<()> {
    let (err, steps) = start_doomed_child().await?;
    ensure!(matches!(err, Error::Spawn { .. }), "{err}");
    // It sent its Aid then died: the parent may or may not have completed
    // the exchange first, but never reports the exit before the connection.
    let s = shape(&steps);
    ensure!(s == ["spawned", "connected", "exited"] || s == ["spawned", "exited"], "{steps:?}");
    ensure!(exited_killed(&steps), "{steps:?}");
    Ok(())
}

#[furrow_testing::test(env = "FURROW_CHAOS_DIE_AT=spec")]
async fn dies_after_its_configuration_before_ready() -> anyhow::Result<()> {
    let (err, steps) = start_doomed_child().await?;
    ensure!(matches!(err, Error::Spawn { .. }), "{err}");
    ensure!(err.to_string().contains("before it was ready"), "{err}");
    ensure!(shape(&steps) == ["spawned", "connected", "exited"], "{steps:?}");
    ensure!(exited_killed(&steps), "{steps:?}");
    Ok(())
}

#[furrow_testing::test(env = "FURROW_CHAOS_DIE_AT=ready")]
async fn dies_right_after_ready() -> anyhow::Result<()> {
    let (err, steps) = start_doomed_child().await?;
    // It was ready, so the start succeeded; its death is a crash that fails
    // the nursery, reported with its status.
    match &err {
        Error::ActorExited { actor, status, .. } => ensure!(actor.name == "doomed" && status == KILLED, "{err}"),
        other => bail!("expected ActorExited, got {other}"),
    }
    ensure!(shape(&steps) == ["spawned", "connected", "ready", "exited"], "{steps:?}");
    Ok(())
}

#[furrow::remote]
async fn quit(code: i32) {
    std::process::exit(code)
}

#[furrow_testing::test]
async fn a_normal_life_and_its_exit_status() -> anyhow::Result<()> {
    let lifecycles = furrow::open_nursery(async |n| {
        let p = n.start_actor("normal").await?;
        p.cancel_actor().await?;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        anyhow::Ok(n.lifecycles())
    })
    .await?;
    let [(name, steps)] = &lifecycles[..] else { bail!("{lifecycles:?}") };
    ensure!(name == "normal");
    ensure!(shape(steps) == ["spawned", "connected", "ready", "exited"], "{steps:?}");
    ensure!(matches!(steps.last(), Some(Lifecycle::Exited { status }) if status == "exit code 0"), "{steps:?}");
    // A crash with an exit code is reported with it.
    let r = furrow::open_nursery(async |n| {
        let p = n.start_actor("quitter").await?;
        let _ = p.run(quit, (3,)).await;
        std::future::pending::<()>().await;
        Ok(())
    })
    .await;
    match r {
        Err(Error::ActorExited { status, .. }) => ensure!(status == "exit code 3", "{status}"),
        other => bail!("{other:?}"),
    }
    Ok(())
}
