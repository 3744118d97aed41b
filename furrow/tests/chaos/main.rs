//! furrow under chaos: six scenarios, each run under many seeds. A seed
//! picks the transport faults (pieces down to one byte, delays, every
//! connection dropped at frame N) and a process fault (one actor SIGKILLs
//! or SIGSTOPs itself at a chosen step of a dialog); the runner
//! (`furrow_testing::chaos`) checks the invariants after every run.
//!
//! ```text
//! cargo test -p furrow-actors --test chaos                              # seeds 0..16 of each scenario (CI)
//! FURROW_CHAOS_SEEDS=0..1000 cargo test --release -p furrow-actors --test chaos   # the soak
//! FURROW_CHAOS_SEEDS=17 cargo test -p furrow-actors --test chaos -- rpc_storm/17 --exact   # replay one
//! ```
//!
//! What each scenario checks itself (an error containing `VIOLATION` is an
//! invariant violation, whatever else happened):
//! - results exact: every answer is the one for its question, every stream
//!   item arrives in order, once (a gap or a repeat is a violation);
//! - on the graceful path (it completed), nothing lost: every call ran
//!   exactly once, every item arrived;
//! - an error ends the tree within the scenario's deadline.

// Scenario code asserts through errors; unwrap is for library code.
#![allow(clippy::unwrap_used, unreachable_pub)]

use anyhow::{Context as _, anyhow, bail};
use furrow::{Context, Outcome as CtxOutcome};
use furrow_testing::chaos::{DEADLINE, Outcome, Run, Scenario, Target};
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

static SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "rpc_storm",
        targets: &[
            Target { actor: "storm-w0", steps: &[("start", 60), ("return", 60), ("teardown", 1)] },
            Target { actor: "storm-w1", steps: &[("start", 60), ("return", 60), ("cancel", 1)] },
            Target { actor: "storm-w2", steps: &[("start", 3), ("return", 60), ("teardown", 1)] },
        ],
        run: |r| Box::pin(rpc_storm(r)),
    },
    Scenario {
        name: "nested_streams",
        targets: &[
            Target { actor: "relay", steps: &[("start", 1), ("started", 1), ("yield", 400), ("teardown", 1)] },
            Target { actor: "source", steps: &[("started", 1), ("yield", 200), ("return", 1), ("cancel", 1)] },
        ],
        run: |r| Box::pin(nested_streams(r)),
    },
    Scenario {
        name: "inter_actor_cancels",
        targets: &[
            Target { actor: "canceller", steps: &[("start", 1), ("return", 1), ("cancel", 1), ("teardown", 1)] },
            Target { actor: "ticker", steps: &[("started", 6), ("yield", 300), ("cancel", 5), ("teardown", 1)] },
        ],
        run: |r| Box::pin(inter_actor_cancels(r)),
    },
    Scenario {
        name: "discovery_churn",
        targets: &[
            Target { actor: "looker", steps: &[("start", 8), ("return", 8), ("teardown", 1)] },
            Target { actor: "svc-1", steps: &[("start", 1), ("return", 1), ("cancel", 1), ("teardown", 1)] },
            Target { actor: "svc-4", steps: &[("start", 1), ("cancel", 1), ("teardown", 1)] },
        ],
        run: |r| Box::pin(discovery_churn(r)),
    },
    Scenario {
        name: "supervision_races",
        targets: &[
            Target { actor: "sr-0", steps: &[("start", 1), ("return", 1), ("cancel", 1), ("teardown", 1)] },
            Target { actor: "sr-1", steps: &[("start", 1), ("cancel", 1), ("teardown", 1)] },
            Target { actor: "sr-2", steps: &[("return", 1), ("teardown", 1)] },
        ],
        run: |r| Box::pin(supervision_races(r)),
    },
    Scenario {
        name: "supervised_service",
        targets: &[
            Target { actor: "svc-a", steps: &[("start", 40), ("return", 40), ("teardown", 1)] },
            Target { actor: "svc-b", steps: &[("start", 40), ("return", 40), ("teardown", 1)] },
        ],
        run: |r| Box::pin(supervised_service(r)),
    },
];

fn main() {
    furrow_testing::chaos::main(SCENARIOS)
}

/// Run `work` in a nursery under the run's deadline, and turn how it ended
/// into the run's outcome: `Completed`, the tree's error, or a violation.
async fn under_deadline<F>(run: &Run, body: F) -> Result<Outcome, String>
where
    F: AsyncFnOnce(&furrow::ActorNursery) -> anyhow::Result<()>,
{
    let deadline = run.deadline;
    let r = furrow::open_nursery(async |n| match tokio::time::timeout(deadline, body(n)).await {
        Ok(r) => r,
        Err(_) => {
            // A hang report: what each actor of the tree waits for, in
            // the run's stderr (shown with a violation).
            let me = std::process::id() as i32;
            let wait = std::time::Duration::from_millis(300);
            let _ = tokio::task::spawn_blocking(move || furrow_testing::ask_for_dumps(me, wait)).await;
            Err(anyhow!("{DEADLINE} of {deadline:?} passed: the tree stopped answering"))
        }
    })
    .await;
    match r {
        Ok(()) => Ok(Outcome::Completed),
        Err(e) => {
            let text = format!("{e:#}");
            if text.contains("VIOLATION") { Err(text) } else { Ok(Outcome::Failed(text)) }
        }
    }
}

// ---------------------------------------------------------------- rpc_storm

/// The calls this worker process ran, to catch one run twice.
static EXECUTED: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());

#[furrow::remote]
async fn work(id: u64, pause_us: u64) -> anyhow::Result<u64> {
    if !EXECUTED.lock().unwrap().insert(id) {
        bail!("VIOLATION: call {id} ran twice");
    }
    if pause_us > 0 {
        tokio::time::sleep(Duration::from_micros(pause_us)).await;
    }
    Ok(id * 3 + 1)
}

#[furrow::remote]
async fn executed() -> Vec<u64> {
    EXECUTED.lock().unwrap().iter().copied().collect()
}

/// Three workers, a few hundred concurrent calls spread over them, each
/// answer checked; on the graceful path every call ran exactly once.
async fn rpc_storm(mut run: Run) -> Result<Outcome, String> {
    let calls = run.rng.range(60, 300);
    let pauses: Vec<u64> = (0..calls).map(|_| if run.rng.chance(300) { run.rng.range(1, 800) } else { 0 }).collect();
    under_deadline(&run, async |n| {
        let ps = [n.start_actor("storm-w0").await?, n.start_actor("storm-w1").await?, n.start_actor("storm-w2").await?];
        let each = (0..calls).map(|id| {
            let p = &ps[(id % 3) as usize];
            let pause = pauses[id as usize];
            async move {
                let got = p.run(work, (id, pause)).await?;
                if got != id * 3 + 1 {
                    bail!("VIOLATION: call {id} answered {got}");
                }
                Ok(())
            }
        });
        futures::future::try_join_all(each).await?;
        let mut all = Vec::new();
        for p in &ps {
            all.extend(p.run(executed, ()).await?);
        }
        all.sort_unstable();
        if all != (0..calls).collect::<Vec<_>>() {
            bail!("VIOLATION: {} calls made, the workers ran {:?}", calls, all);
        }
        Ok(())
    })
    .await
}

// ----------------------------------------------------------- nested_streams

/// Echo every number back; return how many.
#[furrow::context]
async fn source(ctx: Context) -> anyhow::Result<u64> {
    ctx.started(&()).await?;
    ctx.open_stream(async |s| {
        let mut n = 0;
        while let Some(x) = s.recv::<u64>().await? {
            s.send(&x).await?;
            n += 1;
        }
        Ok(n)
    })
    .await
}

/// Between the root and its own child `source`: pass every number down,
/// every echo up (checking their order), and return how many went round.
#[furrow::context]
async fn relay(ctx: Context) -> anyhow::Result<u64> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("source").await?;
        let went_round = p
            .open_context(source, (), async |down_ctx, (): ()| {
                ctx.started(&()).await?;
                let n = ctx
                    .open_stream(async |up| {
                        down_ctx
                            .open_stream(async |down| {
                                // Until the root closes (after its last
                                // echo), then close towards the source.
                                let downward = async {
                                    while let Some(x) = up.recv::<u64>().await? {
                                        down.send(&x).await?;
                                    }
                                    down.close().await?;
                                    anyhow::Ok(())
                                };
                                // Until the source's stream ends (it
                                // closes after the relay did).
                                let upward = async {
                                    let mut expect = 0u64;
                                    while let Some(x) = down.recv::<u64>().await? {
                                        if x != expect {
                                            bail!("VIOLATION: relay got echo {x}, expected {expect}");
                                        }
                                        up.send(&x).await?;
                                        expect += 1;
                                    }
                                    anyhow::Ok(expect)
                                };
                                let ((), n) = futures::try_join!(downward, upward)?;
                                anyhow::Ok(n)
                            })
                            .await
                    })
                    .await?;
                match down_ctx.wait_for_result::<u64>().await? {
                    CtxOutcome::Returned(m) if m == n => Ok(n),
                    other => bail!("VIOLATION: source says {other:?}, relay counted {n}"),
                }
            })
            .await?;
        Ok(went_round)
    })
    .await
}

/// root ↔ relay ↔ source, a two-way stream through the middle actor:
/// numbers go down, echoes come back in order, once each.
async fn nested_streams(mut run: Run) -> Result<Outcome, String> {
    let count = run.rng.range(20, 400);
    under_deadline(&run, async |n| {
        let p = n.start_actor("relay").await?;
        p.open_context(relay, (), async |ctx, (): ()| {
            ctx.open_stream(async |s| {
                // Closing a stream ends it both ways: send everything,
                // take every echo, then close.
                let sending = async {
                    for i in 0..count {
                        s.send(&i).await?;
                    }
                    anyhow::Ok(())
                };
                let receiving = async {
                    for expect in 0..count {
                        match s.recv::<u64>().await? {
                            Some(x) if x == expect => {}
                            Some(x) => bail!("VIOLATION: root got echo {x}, expected {expect}"),
                            None => bail!("the stream ended after {expect} of {count} echoes"),
                        }
                    }
                    anyhow::Ok(())
                };
                futures::try_join!(sending, receiving)?;
                s.close().await?;
                anyhow::Ok(())
            })
            .await?;
            match ctx.wait_for_result::<u64>().await? {
                CtxOutcome::Returned(m) if m == count => Ok(()),
                other => bail!("VIOLATION: relay says {other:?}, {count} went round"),
            }
        })
        .await
    })
    .await
}

// ------------------------------------------------------ inter_actor_cancels

/// Count up, forever, until cancelled.
#[furrow::context]
async fn tick(ctx: Context) -> anyhow::Result<()> {
    ctx.started(&()).await?;
    ctx.open_stream(async |s| {
        let mut i = 0u64;
        loop {
            s.send(&i).await?;
            i += 1;
            if i.is_multiple_of(16) {
                tokio::task::yield_now().await;
            }
        }
    })
    .await
}

/// Take a few ticks (in order, once each), then cancel; `rounds` times.
async fn take_then_cancel(p: &furrow::Portal, rounds: u64, take: u64) -> anyhow::Result<u64> {
    for round in 0..rounds {
        p.open_context(tick, (), async |ctx, (): ()| {
            ctx.open_stream(async |s| {
                for expect in 0..take {
                    match s.recv::<u64>().await? {
                        Some(x) if x == expect => {}
                        Some(x) => bail!("VIOLATION: round {round}: tick {x}, expected {expect}"),
                        None => bail!("round {round}: the ticks ended after {expect}"),
                    }
                }
                // Cancel while the stream is open: closing it first would
                // let the ticker fail its next send before the cancel.
                if let Err(e) = ctx.cancel().await {
                    // A late acknowledgement: what did each actor of the
                    // tree wait for? (Dumps from the root down, in the
                    // run's stderr.)
                    let root = std::os::unix::process::parent_id() as i32;
                    let wait = Duration::from_millis(300);
                    let _ = tokio::task::spawn_blocking(move || furrow_testing::ask_for_dumps(root, wait)).await;
                    return Err(e.into());
                }
                Ok(())
            })
            .await?;
            match ctx.wait_for_result::<()>().await? {
                CtxOutcome::Cancelled { canceller } if canceller == furrow::local_aid()? => Ok(()),
                other => bail!("VIOLATION: round {round}: cancelled by us, but the outcome is {other:?}"),
            }
        })
        .await?;
    }
    Ok(rounds)
}

/// In another actor: find `ticker` through the registry and cancel its
/// contexts, round after round.
#[furrow::remote]
async fn cancel_rounds(rounds: u64, take: u64) -> anyhow::Result<u64> {
    furrow::wait_for_actor("ticker", async |p| take_then_cancel(p, rounds, take).await).await
}

/// The root holds a context on `ticker` while another actor, `canceller`,
/// opens and cancels its own contexts there; then the root cancels its
/// own, and the canceller actor.
async fn inter_actor_cancels(mut run: Run) -> Result<Outcome, String> {
    let rounds = run.rng.range(1, 5);
    let take = run.rng.range(1, 50);
    under_deadline(&run, async |n| {
        let ticker = n.start_actor("ticker").await?;
        let canceller = n.start_actor("canceller").await?;
        ticker
            .open_context(tick, (), async |ctx, (): ()| {
                ctx.open_stream(async |s| {
                    let first = s.recv::<u64>().await?;
                    if first != Some(0) {
                        bail!("VIOLATION: the root's first tick is {first:?}");
                    }
                    let done = canceller.run(cancel_rounds, (rounds, take)).await?;
                    if done != rounds {
                        bail!("VIOLATION: the canceller did {done} of {rounds} rounds");
                    }
                    ctx.cancel().await?;
                    Ok(())
                })
                .await?;
                match ctx.wait_for_result::<()>().await? {
                    CtxOutcome::Cancelled { .. } => Ok(()),
                    other => bail!("VIOLATION: the root cancelled its tick, outcome {other:?}"),
                }
            })
            .await?;
        canceller.cancel_actor().await.context("cancelling the canceller")?;
        Ok(())
    })
    .await
}

// ---------------------------------------------------------- discovery_churn

#[furrow::remote]
async fn whoami() -> String {
    furrow::local_aid().map(|a| a.name).unwrap_or_default()
}

/// Wait for `name` in the registry and ask it who it is.
#[furrow::remote]
async fn look_for(name: String) -> anyhow::Result<String> {
    Ok(furrow::wait_for_actor(name.as_str(), async |p| p.run(whoami, ()).await).await?)
}

/// Services come and go, one after another; an actor waits for each by
/// name before it exists, and must reach the right one. After each is
/// cancelled, it must be gone from the registry.
async fn discovery_churn(mut run: Run) -> Result<Outcome, String> {
    let rounds = run.rng.range(2, 6);
    under_deadline(&run, async |n| {
        let looker = n.start_actor("looker").await?;
        for i in 0..rounds {
            let name = format!("svc-{i}");
            // The look starts first: it waits at the registrar for a name
            // nobody has yet.
            let look = looker.run(look_for, (name.clone(),));
            let start = async {
                tokio::time::sleep(Duration::from_millis(2)).await;
                n.start_actor(name.clone()).await
            };
            let (found, svc) = futures::join!(look, start);
            let svc = svc?;
            let found = found?;
            if found != name {
                bail!("VIOLATION: waited for {name}, reached {found}");
            }
            svc.cancel_actor().await.with_context(|| format!("cancelling {name}"))?;
            // Unlisting is the registrar's, over another channel than the
            // one `cancel_actor` saw close: bounded, not instant.
            let gone = async {
                while !furrow::query_actors(name.as_str()).await?.is_empty() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                anyhow::Ok(())
            };
            tokio::time::timeout(Duration::from_secs(2), gone)
                .await
                .map_err(|_| anyhow!("VIOLATION: {name} is still listed 2 s after it ended"))??;
        }
        Ok(())
    })
    .await
}

// -------------------------------------------------------- supervision_races

/// What one child of `supervision_races` was planned to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Serve (a service) or return `ms` after `ms` (a `run_in_actor`).
    Fine,
    /// Fail with "planned failure" after `ms` (`run_in_actor` only).
    Fails,
    /// Exit with code 7 after `ms`.
    Crashes,
    /// SIGKILLed by the root after `ms`.
    Killed,
}

/// The planned failure's message (how the judge attributes it).
const PLANNED: &str = "planned failure";

#[furrow::remote]
async fn planned_work(ms: u64, fate: u8) -> anyhow::Result<u64> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    match fate {
        1 => bail!("{PLANNED}"),
        2 => std::process::exit(7),
        _ => Ok(ms),
    }
}

/// Exit the whole process with code 7 after `ms`, from a task of its own.
#[furrow::remote]
async fn crash_in(ms: u64) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        std::process::exit(7)
    });
}

#[furrow::remote]
async fn alive_pid() -> u32 {
    std::process::id()
}

/// How the body ends.
#[derive(Clone, Copy, Debug)]
enum BodyEnd {
    /// Returns after `ms`, whatever happened.
    After(u64),
    /// Waits forever: only a failure (or the deadline) ends it.
    Never,
    /// SIGKILLs service `i` after `ms`, sees its call fail, returns.
    NoticeKill(usize, u64),
}

/// Children crash, fail and are SIGKILLed at random moments relative to
/// the body's return and to the teardown (the chaos fault adds deaths
/// during starts, cancels and teardowns). After the nursery returns, every
/// error must be one the plan explains, a death the body noticed must be
/// reported, no child may be left running, and every child that served
/// has its exit in the report.
async fn supervision_races(mut run: Run) -> Result<Outcome, String> {
    let count = run.rng.range(2, 6) as usize;
    // (is a service, fate, ms)
    let mut plan: Vec<(bool, Fate, u64)> = (0..count)
        .map(|_| {
            let service = run.rng.chance(500);
            let fate = *run.rng.pick(&[Fate::Fine, Fate::Fine, Fate::Fails, Fate::Crashes, Fate::Killed]);
            let fate = match (service, fate) {
                (true, Fate::Fails) => Fate::Crashes,
                (false, Fate::Killed) => Fate::Fails,
                (_, f) => f,
            };
            (service, fate, run.rng.range(0, 400))
        })
        .collect();
    let failers = plan.iter().any(|(_, f, _)| *f != Fate::Fine);
    let body_end = match run.rng.range(0, 2) {
        0 => BodyEnd::After(run.rng.range(0, 500)),
        1 if failers => BodyEnd::Never,
        _ => match plan.iter().position(|(service, _, _)| *service) {
            Some(i) => {
                plan[i].1 = Fate::Fine;
                BodyEnd::NoticeKill(i, run.rng.range(0, 300))
            }
            None => BodyEnd::After(run.rng.range(0, 500)),
        },
    };
    let deadline = run.deadline;
    let plan = &plan;
    let report = furrow::open_nursery_report(async |n| {
        let body = async {
            let mut services = Vec::new();
            for (i, &(service, fate, ms)) in plan.iter().enumerate() {
                let name = format!("sr-{i}");
                if service {
                    let p = n.start_actor(name).await?;
                    if fate == Fate::Crashes {
                        p.run(crash_in, (ms,)).await?;
                    }
                    services.push((i, p));
                } else {
                    let code = match fate {
                        Fate::Fails => 1,
                        Fate::Crashes => 2,
                        _ => 0,
                    };
                    drop(n.run_in_actor_with(name, furrow::SpawnOptions::new(), planned_work, (ms, code)));
                }
            }
            let kills = futures::future::join_all(services.iter().filter(|(i, _)| plan[*i].1 == Fate::Killed).map(
                |(i, p)| async move {
                    tokio::time::sleep(Duration::from_millis(plan[*i].2)).await;
                    // SAFETY: killing our own child process.
                    unsafe { libc::kill(p.aid().pid as i32, libc::SIGKILL) };
                },
            ));
            let end = async {
                match body_end {
                    BodyEnd::After(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                    BodyEnd::Never => std::future::pending().await,
                    BodyEnd::NoticeKill(victim, ms) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        let Some((_, p)) = services.iter().find(|(i, _)| *i == victim) else {
                            bail!("VIOLATION: no service {victim}")
                        };
                        // SAFETY: killing our own child process.
                        unsafe { libc::kill(p.aid().pid as i32, libc::SIGKILL) };
                        if p.run(alive_pid, ()).await.is_ok() {
                            bail!("VIOLATION: a call to SIGKILLed sr-{victim} succeeded");
                        }
                    }
                }
                Ok(())
            };
            let ((), r) = futures::join!(async { drop(kills.await) }, end);
            r
        };
        match tokio::time::timeout(deadline, body).await {
            Ok(r) => r,
            Err(_) => {
                // A hang report: what each actor of the tree waits for, in
                // the run's stderr (shown with a violation).
                let me = std::process::id() as i32;
                let wait = std::time::Duration::from_millis(300);
                let _ = tokio::task::spawn_blocking(move || furrow_testing::ask_for_dumps(me, wait)).await;
                Err(anyhow!("{DEADLINE} of {deadline:?} passed: the tree stopped answering"))
            }
        }
    })
    .await;
    judge_supervision(plan, body_end, report)
}

fn judge_supervision(
    plan: &[(bool, Fate, u64)],
    body_end: BodyEnd,
    report: furrow::NurseryReport<(), anyhow::Error>,
) -> Result<Outcome, String> {
    // Nothing the nursery started may outlive it, and every child that
    // served has its exit recorded.
    for c in &report.children {
        for step in &c.lifecycle {
            if let furrow::Lifecycle::Spawned { pid } = step
                && furrow_testing::process(*pid as i32).is_some_and(|p| !p.is_zombie())
            {
                return Err(format!("VIOLATION: the nursery returned with {c} running"));
            }
        }
        if c.reached_ready() && !matches!(c.lifecycle.last(), Some(furrow::Lifecycle::Exited { .. })) {
            return Err(format!("VIOLATION: the nursery returned without {c}'s exit"));
        }
    }
    let index = |name: &str| name.strip_prefix("sr-").and_then(|i| i.parse::<usize>().ok());
    let err = match report.result {
        Ok(()) => {
            if matches!(body_end, BodyEnd::NoticeKill(..)) {
                return Err("VIOLATION: the body noticed a SIGKILLed child, the nursery reported nothing".into());
            }
            return Ok(Outcome::Completed);
        }
        Err(e) => e,
    };
    let text = format!("{err:#}");
    if text.contains("VIOLATION") {
        return Err(text);
    }
    let Some(furrow_err) = err.downcast_ref::<furrow::Error>() else {
        // The deadline, or the body's own error: the runner judges it.
        return Ok(Outcome::Failed(text));
    };
    let mut explained = true;
    let mut victim_reported = false;
    for e in furrow_err.errors() {
        let ok = match e {
            furrow::Error::Remote(r) => {
                index(&r.src.name).is_some_and(|i| plan[i].1 == Fate::Fails) && r.message.contains(PLANNED)
            }
            furrow::Error::ActorExited { actor, status, .. } => match index(&actor.name) {
                Some(i) if matches!(body_end, BodyEnd::NoticeKill(v, _) if v == i) => {
                    victim_reported = true;
                    status.contains("SIGKILL")
                }
                Some(i) => match plan[i].1 {
                    Fate::Crashes => status == "exit code 7",
                    Fate::Killed => status.contains("SIGKILL"),
                    _ => false,
                },
                None => false,
            },
            _ => false,
        };
        explained &= ok;
    }
    if !explained {
        // Not what the plan did: only an injected fault may explain it.
        return Ok(Outcome::Failed(text));
    }
    // The victim's death may be missing only when another planned
    // failure ended the body before the kill (then nothing was noticed).
    let _ = victim_reported;
    Ok(Outcome::Completed)
}

// ------------------------------------------------------- supervised_service

/// Its answer to call `id`: the id and this instance's pid.
#[furrow::remote]
async fn serve_id(id: u64) -> (u64, u32) {
    (id, std::process::id())
}

/// A supervised service of two permanent children under steady calls,
/// while the scenario SIGKILLs random instances. Every answer must be the
/// one for its call; a call fails only as its instance's ending does
/// (never a wrong answer, never a timeout while instances serve); after
/// every kill the child answers again within a bound; restarts equal the
/// endings the supervisor saw, and at least the kills made.
async fn supervised_service(mut run: Run) -> Result<Outcome, String> {
    use furrow::supervise::{ChildSpec, Event, Strategy, SupervisorOptions, open_supervisor};
    let kills: Vec<(usize, u64)> =
        (0..run.rng.range(1, 5)).map(|_| (run.rng.range(0, 1) as usize, run.rng.range(20, 400))).collect();
    let calls = run.rng.range(100, 400);
    let deadline = run.deadline;
    let opts = SupervisorOptions::new(Strategy::OneForOne)
        .intensity(20, Duration::from_secs(60))
        .restart_wait(Duration::from_secs(4));
    let r = tokio::time::timeout(
        deadline,
        open_supervisor(opts, async |sup| {
            let mut events = sup.events();
            let kids = [sup.start(ChildSpec::new("svc-a")).await?, sup.start(ChildSpec::new("svc-b")).await?];
            let caller = async {
                for id in 0..calls {
                    let k = &kids[(id % 2) as usize];
                    match k.run(serve_id, (id,)).await {
                        Ok((got, _pid)) if got != id => bail!("VIOLATION: call {id} answered {got}"),
                        Ok(_) => {}
                        // The instance died under the call, or was being
                        // restarted: the endings a supervised call may see.
                        Err(furrow::Error::TransportClosed { .. } | furrow::Error::ActorExited { .. }) => {}
                        Err(e) => bail!("call {id} to {} failed otherwise: {e}", k.name()),
                    }
                }
                Ok(())
            };
            let killer = async {
                for &(which, ms) in &kills {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    let k = &kids[which];
                    let Ok(p) = k.portal().await else { continue };
                    // SAFETY: killing a child process of this tree.
                    unsafe { libc::kill(p.aid().pid as i32, libc::SIGKILL) };
                    // It answers again within a bound.
                    let back = async {
                        loop {
                            if k.run(serve_id, (u64::MAX,)).await.is_ok_and(|(_, pid)| pid != p.aid().pid) {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    };
                    if tokio::time::timeout(Duration::from_secs(4), back).await.is_err() {
                        bail!("{} did not answer again within 4 s of its kill", k.name());
                    }
                }
                Ok(())
            };
            tokio::try_join!(caller, killer)?;
            // Every ending the supervisor saw was restarted, and each kill
            // made one. An ending may be fresh (an injected fault kills an
            // instance at its Nth call, possibly one of the last): its
            // restart is then still under way (`Ended` is sent before the
            // ended instance's task is joined, `Restarting` after), so wait
            // until each child's endings are matched by restarted
            // instances, awaiting (the supervisor runs in this task). Seen
            // once in 1000 seeds before this wait: "6 restarts, 7 endings
            // seen" (seed 316, a kill at svc-b's 14th call). Settled: each
            // ending followed by a restart, and no restart under way (one
            // whose new instance failed to start ends again, and is
            // restarted again: an `Ended`, then a `Restarting`, per try).
            let names = ["svc-a", "svc-b"];
            let (mut ended, mut restarting, mut pending) = ([0u32; 2], [0u32; 2], [false; 2]);
            let child = |name: &str| names.iter().position(|n| *n == name);
            loop {
                let e = match events.try_recv() {
                    Ok(e) => e,
                    // All seen so far: settled, or wait for what follows.
                    Err(_) if ended == restarting && pending == [false; 2] => break,
                    Err(_) => match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                        Ok(Ok(e)) => e,
                        Ok(Err(e)) => bail!("VIOLATION: the supervisor's events: {e}"),
                        Err(_) => {
                            bail!(
                                "VIOLATION: a restart did not complete within 10 s: endings {ended:?}, restarts {restarting:?}"
                            )
                        }
                    },
                };
                match &e {
                    Event::Ended { name, .. } => child(name).into_iter().for_each(|i| {
                        ended[i] += 1;
                        pending[i] = false;
                    }),
                    Event::Restarting { name, .. } => child(name).into_iter().for_each(|i| {
                        restarting[i] += 1;
                        pending[i] = true;
                    }),
                    Event::Started { name, .. } => child(name).into_iter().for_each(|i| pending[i] = false),
                    _ => {}
                }
            }
            // Read in the same synchronous stretch as the last events: the
            // counts and the `Restarting` events cannot disagree by a
            // restart in between.
            let restarts: Vec<u32> = kids.iter().map(|k| k.restarts()).collect();
            if restarts != restarting || ended != restarting || (restarts.iter().sum::<u32>() as usize) < kills.len() {
                bail!(
                    "VIOLATION: restarts {restarts:?}, Restarting events {restarting:?}, endings {ended:?}, {} kills",
                    kills.len()
                );
            }
            Ok(())
        }),
    )
    .await;
    match r {
        Ok(Ok(())) => Ok(Outcome::Completed),
        Ok(Err(e)) => {
            let text = format!("{e:#}");
            if text.contains("VIOLATION") { Err(text) } else { Ok(Outcome::Failed(text)) }
        }
        Err(_) => Ok(Outcome::Failed(format!("{DEADLINE} of {deadline:?} passed: the service stopped answering"))),
    }
}
