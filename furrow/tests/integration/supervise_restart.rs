//! Supervisors that restart (docs/design.md, "Supervisors"): each
//! strategy and policy with real processes ended from outside (SIGKILL),
//! by themselves (`exit(3)`, `exit(0)`, abort), intensity exceeded, and a
//! supervisor cancelled in the middle of a restart.

use anyhow::{Context as _, bail, ensure};
use furrow::Error;
use furrow::supervise::{ChildSpec, Event, Restart, Strategy, Supervised, SupervisorOptions, open_supervisor};
use std::time::Duration;
use tokio::sync::broadcast;

#[furrow::remote]
async fn pid() -> u32 {
    std::process::id()
}

#[furrow::remote]
async fn hang() {
    std::future::pending::<()>().await
}

/// Ends this actor's process at once with `code` (no cleanup: as a crash).
#[furrow::remote]
async fn exit_with(code: i32) {
    std::process::exit(code)
}

/// Aborts this actor's process (SIGABRT: a crash).
#[furrow::remote]
async fn crash() {
    std::process::abort()
}

fn kill(p: u32) {
    // SAFETY: kill(2) on a child actor of this test, alive (it answered).
    unsafe { libc::kill(p as i32, libc::SIGKILL) };
}

/// The next event, within a generous bound.
async fn next(ev: &mut broadcast::Receiver<Event>) -> anyhow::Result<Event> {
    Ok(tokio::time::timeout(Duration::from_secs(20), ev.recv()).await.context("no event within 20 s")??)
}

/// Events until `Started` of `name` (restarted), returned in order.
async fn until_started(ev: &mut broadcast::Receiver<Event>, name: &str) -> anyhow::Result<Vec<Event>> {
    let mut seen = Vec::new();
    loop {
        let e = next(ev).await?;
        let done = matches!(&e, Event::Started { name: n, restarts, .. } if n == name && *restarts > 0);
        seen.push(e);
        if done {
            return Ok(seen);
        }
    }
}

async fn pid_of(s: &Supervised) -> anyhow::Result<u32> {
    Ok(s.run(pid, ()).await?)
}

/// One-for-one, permanent: a child SIGKILLed from outside is restarted;
/// the call in flight fails with the instance's ending (not retried); the
/// next call reaches the new instance, which `find_actor` finds too.
#[furrow_testing::test]
async fn one_for_one_restarts_a_sigkilled_child_and_calls_reach_the_new_one() -> anyhow::Result<()> {
    open_supervisor(SupervisorOptions::new(Strategy::OneForOne).intensity(3, Duration::from_secs(30)), async |sup| {
        let mut ev = sup.events();
        let db = sup.start(ChildSpec::new("db")).await?;
        let before = pid_of(&db).await?;
        let in_flight = db.run(hang, ());
        tokio::pin!(in_flight);
        // The call is on its way before the kill.
        ensure!(tokio::time::timeout(Duration::from_millis(200), &mut in_flight).await.is_err());
        kill(before);
        let err = tokio::time::timeout(Duration::from_secs(20), in_flight).await?.err().context("the call survived")?;
        ensure!(!matches!(err, Error::Timeout { .. }), "the call in flight fails with the ending: {err}");
        let seen = until_started(&mut ev, "db").await?;
        let ended = seen.iter().find(|e| matches!(e, Event::Ended { .. }));
        ensure!(matches!(ended, Some(Event::Ended { abnormal: true, how, .. }) if how.contains("SIGKILL")), "{seen:?}");
        ensure!(seen.iter().any(|e| matches!(e, Event::Restarting { restarts: 1, .. })), "{seen:?}");
        let after = pid_of(&db).await?;
        ensure!(after != before && db.restarts() == 1, "{before} → {after}, {} restarts", db.restarts());
        let found = furrow::find_actor("db", async |p| match p {
            Some(p) => p.run(pid, ()).await.map(Some),
            None => Ok(None),
        })
        .await?;
        ensure!(found == Some(after), "find_actor found {found:?}, the new instance is {after}");
        // The supervising actor's stats count the restart.
        let s = furrow::local_stats()?;
        let db_stats = s.supervised.iter().find(|c| c.name == "db").context("db not in the stats")?;
        ensure!(db_stats.restarts == 1, "{:?}", s.supervised);
        Ok(())
    })
    .await
}

/// A client that retries at once, in a loop, after its instance died
/// reaches the new instance: a call made once the old instance's channel
/// is closed waits for the replacement instead of failing at once. (Found
/// by the restart bench: such a loop, in the supervisor's own body, spun
/// on immediate failures and starved the supervisor, which runs in the
/// same task, so the child was never restarted.)
#[furrow_testing::test]
async fn a_client_retrying_in_a_loop_reaches_the_new_instance() -> anyhow::Result<()> {
    let opts = SupervisorOptions::new(Strategy::OneForOne).intensity(100, Duration::from_secs(30));
    open_supervisor(opts, async |sup| {
        let svc = sup.start(ChildSpec::new("svc")).await?;
        for round in 1..=5u32 {
            let old = pid_of(&svc).await?;
            kill(old);
            let mut failures = 0u32;
            loop {
                match svc.run(pid, ()).await {
                    Ok(p) if p != old => break,
                    Ok(_) => {}
                    // Only a call that raced the kill (sent before the
                    // channel was seen closed) may fail, with the ending.
                    Err(e) => {
                        ensure!(!matches!(e, Error::Timeout { .. }), "round {round}: {e}");
                        failures += 1;
                        ensure!(failures < 50, "round {round}: {failures} failed calls, the last: {e}");
                    }
                }
            }
            ensure!(svc.restarts() == round, "round {round}: {} restarts", svc.restarts());
        }
        Ok(())
    })
    .await
}

/// Transient: `exit(0)` is a normal end (not restarted, the handle says
/// it is gone); `exit(3)` and an abort are abnormal (restarted).
/// Temporary: never restarted.
#[furrow_testing::test]
async fn transient_and_temporary_children_follow_their_policy() -> anyhow::Result<()> {
    open_supervisor(SupervisorOptions::new(Strategy::OneForOne).intensity(5, Duration::from_secs(30)), async |sup| {
        let mut ev = sup.events();
        let t = sup.start(ChildSpec::new("transient").restart(Restart::Transient)).await?;
        let _ = t.run(exit_with, (3,)).await;
        let seen = until_started(&mut ev, "transient").await?;
        ensure!(
            seen.iter().any(|e| matches!(e, Event::Ended { abnormal: true, how, .. } if how.contains("exit code 3")))
        );
        let _ = t.run(crash, ()).await;
        let seen = until_started(&mut ev, "transient").await?;
        ensure!(seen.iter().any(|e| matches!(e, Event::Ended { abnormal: true, how, .. } if how.contains("SIGABRT"))));
        let _ = t.run(exit_with, (0,)).await;
        loop {
            match next(&mut ev).await? {
                Event::Ended { abnormal, .. } => ensure!(!abnormal, "exit 0 is normal"),
                Event::Gone { name } if name == "transient" => break,
                other => bail!("unexpected {other:?}"),
            }
        }
        ensure!(matches!(t.portal().await, Err(Error::Closed(_))), "a gone child's handle says so");
        ensure!(t.restarts() == 2);

        let tmp = sup.start(ChildSpec::new("temporary").restart(Restart::Temporary)).await?;
        kill(pid_of(&tmp).await?);
        let _ = next(&mut ev).await?; // its Started
        loop {
            match next(&mut ev).await? {
                Event::Ended { abnormal: true, .. } => {}
                Event::Gone { name } if name == "temporary" => break,
                other => bail!("unexpected {other:?}"),
            }
        }
        ensure!(tmp.restarts() == 0);
        Ok(())
    })
    .await
}

/// One-for-all: the others are ended (latest first) and all start again
/// in start order; rest-for-one: the child and those after it only.
#[furrow_testing::test]
async fn one_for_all_and_rest_for_one_restart_the_right_children_in_order() -> anyhow::Result<()> {
    for strategy in [Strategy::OneForAll, Strategy::RestForOne] {
        // One restart allowed: the kill of `b` is one restart decision
        // against the intensity, however many siblings it restarts (a
        // sibling counted would have made this give up).
        open_supervisor(SupervisorOptions::new(strategy).intensity(1, Duration::from_secs(30)), async |sup| {
            let mut ev = sup.events();
            let kids = [
                sup.start(ChildSpec::new("a")).await?,
                sup.start(ChildSpec::new("b")).await?,
                sup.start(ChildSpec::new("c")).await?,
            ];
            let mut before = Vec::new();
            for k in &kids {
                before.push(pid_of(k).await?);
            }
            for _ in 0..3 {
                let _ = next(&mut ev).await?; // the first Started events
            }
            kill(before[1]);
            let expect_restarted: &[&str] = match strategy {
                Strategy::OneForAll => &["a", "b", "c"],
                _ => &["b", "c"],
            };
            let last = *expect_restarted.last().unwrap_or(&"c");
            let seen = until_started(&mut ev, last).await?;
            let stopped: Vec<&str> = seen
                .iter()
                .filter_map(|e| if let Event::Stopped { name } = e { Some(name.as_str()) } else { None })
                .collect();
            let started: Vec<&str> = seen
                .iter()
                .filter_map(|e| if let Event::Started { name, .. } = e { Some(name.as_str()) } else { None })
                .collect();
            let want_stopped: Vec<&str> = expect_restarted.iter().rev().copied().filter(|n| *n != "b").collect();
            ensure!(stopped == want_stopped, "{strategy:?}: stopped {stopped:?}, want {want_stopped:?}");
            ensure!(started == expect_restarted, "{strategy:?}: started {started:?}");
            for (k, old) in kids.iter().zip(&before) {
                let now = pid_of(k).await?;
                let restarted = expect_restarted.contains(&k.name());
                ensure!((now != *old) == restarted, "{strategy:?}: {} {old} → {now}", k.name());
                // Each child's own count: the instances of it started
                // after its first, siblings restarted with it included.
                ensure!(k.restarts() == u32::from(restarted), "{strategy:?}: {} restarts {}", k.name(), k.restarts());
            }
            let stats = furrow::local_stats()?;
            let counts: Vec<(&str, u32)> = stats.supervised.iter().map(|c| (c.name.as_str(), c.restarts)).collect();
            let want: Vec<(&str, u32)> =
                ["a", "b", "c"].iter().map(|n| (*n, u32::from(expect_restarted.contains(n)))).collect();
            ensure!(counts == want, "{strategy:?}: stats {counts:?}, want {want:?}");
            Ok(())
        })
        .await?;
    }
    Ok(())
}

/// More restarts than the intensity allows: the supervisor ends every
/// child and fails with `GaveUp`, holding the endings.
#[furrow_testing::test]
async fn intensity_exceeded_gives_up_with_the_endings() -> anyhow::Result<()> {
    let r = open_supervisor(
        SupervisorOptions::new(Strategy::OneForOne).intensity(1, Duration::from_secs(60)),
        async |sup| {
            let mut ev = sup.events();
            let w = sup.start(ChildSpec::new("w")).await?;
            let _other = sup.start(ChildSpec::new("bystander")).await?;
            kill(w.run(pid, ()).await?);
            let _ = until_started(&mut ev, "w").await;
            kill(w.run(pid, ()).await?);
            // The supervisor gives up: this body is dropped meanwhile.
            std::future::pending::<()>().await;
            Ok(())
        },
    )
    .await;
    match r {
        Err(Error::GaveUp { restarts: 1, errors, .. }) => {
            ensure!(errors.len() == 2, "{errors:?}");
            ensure!(errors.iter().all(|e| e.to_string().contains("SIGKILL")), "{errors:?}");
        }
        other => bail!("expected GaveUp, got {other:?}"),
    }
    // The leak check (processes, sockets, fds) follows the test.
    Ok(())
}

/// A supervisor dropped while it waits to restart a child leaves nothing
/// behind (the harness checks processes, socket files and fds).
#[furrow_testing::test]
async fn a_supervisor_cancelled_during_a_restart_leaves_nothing_behind() -> anyhow::Result<()> {
    let opts = SupervisorOptions::new(Strategy::OneForAll)
        .intensity(5, Duration::from_secs(30))
        .backoff(Duration::from_secs(3));
    let run = open_supervisor(opts, async |sup| {
        let mut ev = sup.events();
        let a = sup.start(ChildSpec::new("a")).await?;
        let _b = sup.start(ChildSpec::new("b")).await?;
        kill(pid_of(&a).await?);
        // Wait until the restart is under way (b stopped, backoff running).
        loop {
            if let Event::Stopped { .. } = next(&mut ev).await? {
                break;
            }
        }
        std::future::pending::<()>().await;
        anyhow::Ok(())
    });
    ensure!(tokio::time::timeout(Duration::from_secs(8), run).await.is_err(), "the body never ends by itself");
    Ok(())
}

/// The blocking mirror: the same supervisor from a plain sync `main`.
#[furrow_testing::test]
fn the_blocking_api_supervises_and_follows_a_restart() -> anyhow::Result<()> {
    let rt = furrow::blocking::Runtime::new(furrow_testing::root_config())?;
    rt.open_supervisor(SupervisorOptions::new(Strategy::OneForOne).intensity(2, Duration::from_secs(30)), |sup| {
        let mut ev = sup.events();
        let db = sup.start(ChildSpec::new("db"))?;
        let before = db.run(pid, ())?;
        kill(before);
        loop {
            match ev.blocking_recv()? {
                Event::Started { restarts: 1, .. } => break,
                _ => continue,
            }
        }
        let after = db.run(pid, ())?;
        ensure!(after != before && db.restarts() == 1, "{before} → {after}");
        ensure!(db.portal()?.aid().pid == after);
        Ok(())
    })?;
    Ok(())
}

/// A supervisor of its own, in the actor it runs in: gives up at the first
/// ending of its child `leaf`, after telling its opener the leaf's pid.
#[furrow::context]
async fn inner_supervisor(ctx: furrow::Context) -> furrow::Result<()> {
    open_supervisor(SupervisorOptions::new(Strategy::OneForOne).intensity(0, Duration::from_secs(60)), async |sup| {
        let leaf = sup.start(ChildSpec::new("leaf")).await?;
        ctx.started(&leaf.run(pid, ()).await?).await?;
        std::future::pending::<()>().await;
        Ok(())
    })
    .await
}

/// Nested supervisors escalate: the inner one (run in `mid` through its
/// spec's init context) gives up when its leaf is SIGKILLed; that fails
/// the `mid` instance, and the outer supervisor restarts `mid`, whose new
/// init starts a new inner supervisor and leaf.
#[furrow_testing::test]
async fn a_nested_supervisor_that_gives_up_escalates_to_the_one_above() -> anyhow::Result<()> {
    let (leaves_tx, mut leaves) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let spec = ChildSpec::new("mid").init(move |p| {
        let leaves_tx = leaves_tx.clone();
        async move {
            p.open_context(inner_supervisor, (), async |ctx, leaf: u32| {
                let _ = leaves_tx.send(leaf);
                ctx.wait_for_result::<()>().await.map(drop)
            })
            .await
        }
    });
    open_supervisor(SupervisorOptions::new(Strategy::OneForOne).intensity(3, Duration::from_secs(60)), async |sup| {
        let mut ev = sup.events();
        let mid = sup.start(spec).await?;
        let within = Duration::from_secs(20);
        let first = tokio::time::timeout(within, leaves.recv()).await?.context("no leaf")?;
        kill(first);
        let seen = until_started(&mut ev, "mid").await?;
        let ended =
            seen.iter().find_map(|e| if let Event::Ended { name, how, .. } = e { Some((name, how)) } else { None });
        ensure!(
            ended.is_some_and(|(name, how)| name == "mid" && how.contains("gave up")),
            "mid should end with its inner supervisor giving up: {seen:?}"
        );
        let second = tokio::time::timeout(within, leaves.recv()).await?.context("no new leaf")?;
        ensure!(second != first && mid.restarts() == 1, "leaf {first} → {second}, {} restarts", mid.restarts());
        Ok(())
    })
    .await
}

/// A child frozen with SIGSTOP past the keepalive bound is given up (its
/// connection judged dead, the process killed) and restarted: a hung
/// instance is an abnormal ending like a crash.
#[furrow_testing::test]
fn a_child_stopped_past_the_keepalive_is_restarted() -> anyhow::Result<()> {
    let cfg = furrow_testing::root_config().keepalive(Duration::from_millis(100), Duration::from_millis(800));
    let rt = furrow::blocking::Runtime::new(cfg)?;
    rt.open_supervisor(SupervisorOptions::new(Strategy::OneForOne).intensity(2, Duration::from_secs(30)), |sup| {
        let mut ev = sup.events();
        let db = sup.start(ChildSpec::new("frozen"))?;
        let before = db.run(pid, ())?;
        // SAFETY: kill(2) on a child actor of this test, alive (it answered).
        unsafe { libc::kill(before as i32, libc::SIGSTOP) };
        let t0 = std::time::Instant::now();
        let mut ended = None;
        loop {
            match ev.blocking_recv()? {
                Event::Ended { how, abnormal, .. } => ended = Some((how, abnormal)),
                Event::Started { restarts: 1, .. } => break,
                _ => {}
            }
            ensure!(t0.elapsed() < Duration::from_secs(20), "no restart within 20 s");
        }
        let (how, abnormal) = ended.context("no Ended event before the restart")?;
        ensure!(abnormal, "a frozen child's ending is abnormal: {how}");
        let after = db.run(pid, ())?;
        ensure!(after != before, "still {before}");
        println!("frozen {before}: restarted as {after} after {:?} ({how})", t0.elapsed());
        Ok(())
    })?;
    Ok(())
}
