//! No child's ending goes missing, whatever runs first (docs/design.md,
//! "Supervision": the nursery's ledger). Each test is a race that once
//! lost an ending (issue 13, bugs 1–3), repeated in rounds where one run
//! would rarely show it.

use anyhow::{Context as _, bail, ensure};
use furrow::{Error, SpawnOptions};
use std::time::{Duration, Instant};

#[furrow::remote]
async fn idle() {
    std::future::pending::<()>().await
}

#[furrow::remote]
async fn fail() -> Result<(), String> {
    Err("boom".into())
}

#[furrow::remote]
async fn fail_after(ms: u64, message: String) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Err(message)
}

#[furrow::remote]
async fn ping() -> u32 {
    std::process::id()
}

/// Exits the whole process with `code` after `ms`, from a task of its own:
/// the call that scheduled it has long returned.
#[furrow::remote]
async fn crash_soon(code: i32, ms: u64) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        std::process::exit(code)
    });
}

fn alive(pid: u32) -> bool {
    // A zombie is not alive; the harness counts unreaped ones separately.
    furrow_testing::process(pid as i32).is_some_and(|p| !p.is_zombie())
}

/// Bug 1: `run_in_actor` children whose start completed after the
/// teardown began were never ended: the nursery waited its 10 s bound and
/// returned with them running.
#[furrow_testing::test]
async fn run_in_actor_starts_completing_during_the_teardown_are_ended() -> anyhow::Result<()> {
    for round in 0..3 {
        let t = Instant::now();
        let report = furrow::open_nursery_report(async |n| {
            drop(n.run_in_actor(fail, ()));
            for _ in 0..4 {
                drop(n.run_in_actor(idle, ()));
            }
            std::future::pending::<()>().await;
            furrow::Ok(())
        })
        .await;
        let took = t.elapsed();
        let err = report.result.expect_err("the failing child's error");
        let remote = err.as_remote().with_context(|| format!("round {round}: a remote error, got {err}"))?;
        ensure!(remote.message == "boom", "round {round}: {err}");
        ensure!(took < Duration::from_secs(5), "round {round}: took {took:?} (waited for children never ended?)");
        ensure!(report.children.len() == 5, "round {round}: {} children", report.children.len());
        for c in &report.children {
            // Every child that got a pid has exited by the time the
            // nursery returned, whatever moment its start completed at.
            for step in &c.lifecycle {
                if let furrow::Lifecycle::Spawned { pid } = step {
                    ensure!(!alive(*pid), "round {round}: {c} is still running");
                }
            }
            if c.reached_ready() {
                ensure!(
                    matches!(c.lifecycle.last(), Some(furrow::Lifecycle::Exited { .. })),
                    "round {round}: {c} has no exit"
                );
            }
        }
    }
    Ok(())
}

/// Bug 1, the error count: of 25 failing children, the 12 that fail late
/// must have been cancelled by the first failure (before, children whose
/// start completed during the teardown ran on and failed later).
#[furrow_testing::test]
async fn children_failing_late_are_cancelled_by_the_first_failure() -> anyhow::Result<()> {
    let r = furrow::open_nursery(async |n| {
        for i in 0..25u32 {
            let (ms, msg) = if i.is_multiple_of(2) { (0, "early") } else { (3000, "late") };
            drop(n.run_in_actor_with(format!("c{i}"), SpawnOptions::new(), fail_after, (ms, msg.to_string())));
        }
        std::future::pending::<()>().await;
        furrow::Ok(())
    })
    .await;
    let err = r.expect_err("the early failures");
    let errors = err.errors();
    ensure!(!errors.is_empty() && errors.len() <= 13, "{} errors: {err}", errors.len());
    for e in &errors {
        let remote = e.as_remote().with_context(|| format!("only remote errors, got {e}"))?;
        ensure!(remote.message == "early", "a late child failed instead of being cancelled: {e}");
        let i: usize = remote.src.name.trim_start_matches('c').parse().context("named by run_in_actor_with")?;
        ensure!(i.is_multiple_of(2), "{e}");
    }
    Ok(())
}

/// Bug 2: a child that exits with a call in flight is reported with its
/// exit status, not as the body's lost connection.
#[furrow_testing::test]
async fn a_child_exiting_with_a_call_in_flight_is_reported_with_its_status() -> anyhow::Result<()> {
    for round in 0..6 {
        let r = furrow::open_nursery(async |n| {
            let p = n.start_actor("d").await?;
            p.run(crash_soon, (7, 150)).await?;
            p.run(idle, ()).await // in flight when the child exits
        })
        .await;
        match r {
            Err(Error::ActorExited { ref actor, ref status, .. }) => {
                ensure!(actor.name == "d" && status == "exit code 7", "round {round}: {r:?}");
            }
            other => bail!("round {round}: expected the child's exit (code 7), got {other:?}"),
        }
    }
    Ok(())
}

/// Bug 3: a child SIGKILLed from outside, noticed by the body, which
/// returns at once: its death is reported, whichever of the exit's
/// reaping and the body's return comes first.
#[furrow_testing::test]
async fn a_child_killed_and_noticed_just_before_the_body_returns_is_reported() -> anyhow::Result<()> {
    for round in 0..20 {
        let r = furrow::open_nursery(async |n| {
            let p = n.start_actor("victim").await?;
            // SAFETY: killing our own child process.
            unsafe { libc::kill(p.aid().pid as i32, libc::SIGKILL) };
            let call = p.run(ping, ()).await;
            ensure!(call.is_err(), "a call to a killed child succeeded: {call:?}");
            anyhow::Ok(())
        })
        .await;
        let err = r.err().with_context(|| format!("round {round}: the death was lost"))?;
        match err.downcast_ref::<Error>() {
            Some(Error::ActorExited { actor, status, .. }) => {
                ensure!(actor.name == "victim" && status.contains("SIGKILL"), "round {round}: {err}");
            }
            _ => bail!("round {round}: expected ActorExited, got {err:#}"),
        }
    }
    Ok(())
}

/// The other side of bug 3: a child the body asked to end, or that
/// exits cleanly, is not reported.
#[furrow_testing::test]
async fn a_child_asked_to_end_before_it_died_is_not_a_failure() -> anyhow::Result<()> {
    for _ in 0..5 {
        furrow::open_nursery(async |n| {
            let p = n.start_actor("asked").await?;
            p.cancel_actor().await?;
            ensure!(p.run(ping, ()).await.is_err());
            Ok(())
        })
        .await?;
    }
    Ok(())
}

/// After one-cancels-all dropped the body, the report still tells how
/// every child ended.
#[furrow_testing::test]
async fn the_report_tells_how_each_child_ended_after_one_cancels_all() -> anyhow::Result<()> {
    let report = furrow::open_nursery_report(async |n| {
        let _a = n.start_actor("service-a").await?;
        let _b = n.start_actor("service-b").await?;
        let f = n.run_in_actor_with("doomed", SpawnOptions::new(), fail_after, (50, "bad input".to_string()));
        f.await?;
        std::future::pending::<()>().await;
        furrow::Ok(())
    })
    .await;
    let err = report.result.expect_err("the failure");
    ensure!(err.as_remote().is_some_and(|r| r.src.name == "doomed"), "{err}");
    let names: Vec<&str> = report.children.iter().map(|c| c.name.as_str()).collect();
    ensure!(names == ["service-a", "service-b", "doomed"], "{names:?}");
    for c in &report.children {
        let ending = c.ending.as_ref().with_context(|| format!("{c}: no ending"))?;
        ensure!(ending.is_graceful(), "{c}");
        ensure!(matches!(c.lifecycle.last(), Some(furrow::Lifecycle::Exited { .. })), "{c}");
        println!("{c}");
    }
    Ok(())
}
