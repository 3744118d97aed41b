//! Dumps (`Portal::dump`, `local_dump`, SIGUSR1, the harness's hang
//! report): a stuck tree says who waits on whom, from both ends of each
//! dialog.

use anyhow::{Context as _, bail, ensure};
use furrow::dump::{ActorDump, DialogDump, DialogKind, DialogPhase, DialogSide, WaitOn};
use furrow::{Aid, Context};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

#[furrow::remote]
async fn echo(x: u64) -> u64 {
    x
}

/// Never returns.
#[furrow::remote]
async fn hang() {
    std::future::pending::<()>().await
}

/// Waits for a value from its opener before it sends one back: with an
/// opener that waits for a value first too, neither ever sends.
#[furrow::context]
async fn echo_after_recv(ctx: Context) -> furrow::Result<()> {
    ctx.started(&()).await?;
    ctx.open_stream(async |s| {
        while let Some(x) = s.recv::<u64>().await? {
            s.send(&x).await?;
        }
        Ok(())
    })
    .await
}

/// The one dialog of `d` calling `func` with `peer`.
fn dialog<'a>(d: &'a ActorDump, func: &str, peer: &Aid) -> anyhow::Result<&'a DialogDump> {
    let mut found = d.dialogs.iter().filter(|x| x.func.ends_with(&format!("::{func}")) && &x.peer == peer);
    let one = found.next().with_context(|| format!("no `{func}` dialog with {peer} in:\n{d}"))?;
    ensure!(found.next().is_none(), "two `{func}` dialogs with {peer} in:\n{d}");
    Ok(one)
}

/// Whether `x` is parked waiting for its peer.
fn waits_for_peer(x: &DialogDump) -> bool {
    x.waiting.is_some_and(|w| w.on == WaitOn::Peer)
}

/// Whether `x` is a stream this side opened (its receive window is
/// there), the peer too (it granted credit), and this side is parked
/// waiting for the peer's next value. (The phase alone is not enough: it
/// is the session's, moved on by the reader when `Started` arrives, while
/// the task that will open the stream may not have run yet; found by the
/// loaded integration loop, 1 run in 15.)
fn stuck_streaming(x: &DialogDump) -> bool {
    waits_for_peer(x)
        && x.phase == DialogPhase::Streaming
        && x.send_credit.is_some_and(|c| c > 0)
        && x.recv_queued.is_some()
}

/// Two actors each awaiting the other's stream, and a callee blocked in
/// `pending()`: the dumps of both ends name each dialog (same cid, each
/// side's view) with its state, and say that each side waits for the
/// other.
#[furrow_testing::test]
async fn a_deadlocked_tree_is_named_from_both_ends() -> anyhow::Result<()> {
    let me = furrow::local_aid()?;
    furrow::open_nursery(async |n| {
        let waiter = n.start_actor("waiter").await?;
        let hanger = n.start_actor("hanger").await?;
        let stuck_stream = waiter.open_context(echo_after_recv, (), async |ctx, ()| {
            ctx.open_stream(async |s| s.recv::<u64>().await.map(drop)).await
        });
        let stuck_call = hanger.run(hang, ());
        let look = async {
            // Until every side has parked (both processes get there on
            // their own schedule); bounded to catch a dump that never
            // shows it.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (mine, theirs, hung) = (furrow::local_dump()?, waiter.dump().await?, hanger.dump().await?);
                let ready = (|| -> anyhow::Result<bool> {
                    let opener = dialog(&mine, "echo_after_recv", waiter.aid())?;
                    let callee = dialog(&theirs, "echo_after_recv", &me)?;
                    let call = dialog(&mine, "hang", hanger.aid())?;
                    let served = dialog(&hung, "hang", &me)?;
                    Ok(stuck_streaming(opener)
                        && stuck_streaming(callee)
                        && waits_for_peer(call)
                        && call.phase == DialogPhase::Running
                        && served.phase == DialogPhase::Running)
                })();
                if matches!(ready, Ok(true)) {
                    return Ok((mine, theirs, hung));
                }
                ensure!(Instant::now() < deadline, "not all parked after 10 s: {ready:?}\n{mine}{theirs}{hung}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let (mine, theirs, hung) = tokio::select! {
            r = look => r?,
            r = stuck_stream => bail!("the deadlocked stream ended: {r:?}"),
            r = stuck_call => bail!("the hanging call ended: {r:?}"),
        };
        // What a person reads (`FURROW_TEST_SHOW_OUTPUT=1`).
        println!("{mine}{theirs}{hung}");

        let opener = dialog(&mine, "echo_after_recv", waiter.aid())?;
        let callee = dialog(&theirs, "echo_after_recv", &me)?;
        ensure!(opener.cid == callee.cid, "one dialog, one cid: {opener} / {callee}");
        for (x, side) in [(opener, DialogSide::Opener), (callee, DialogSide::Callee)] {
            ensure!(x.side == side && x.kind == DialogKind::Context, "{x}");
            ensure!(x.phase == DialogPhase::Streaming && !x.opener_stopped && !x.callee_stopped, "{x}");
            ensure!(x.recv_queued == Some(0), "nothing received, nothing unread: {x}");
            ensure!(x.send_credit.is_some_and(|c| c > 0), "credit to send, nothing sent: {x}");
            let line = x.to_string();
            ensure!(line.contains("streaming, waiting") && line.contains("for the peer's next message"), "{line}");
        }

        let call = dialog(&mine, "hang", hanger.aid())?;
        let served = dialog(&hung, "hang", &me)?;
        ensure!(call.cid == served.cid, "{call} / {served}");
        ensure!((call.side, call.kind, call.phase) == (DialogSide::Opener, DialogKind::Call, DialogPhase::Running));
        ensure!(call.to_string().contains("for the result"), "{call}");
        ensure!((served.side, served.kind) == (DialogSide::Callee, DialogKind::Call), "{served}");
        ensure!(served.waiting.is_none() && served.to_string().ends_with("running the function"), "{served}");

        // The root lists both children, running.
        let kids: Vec<_> = mine.children.iter().map(|c| (c.aid.pid, c.exited.is_none())).collect();
        for p in [waiter.aid().pid, hanger.aid().pid] {
            ensure!(kids.contains(&(p, true)), "child {p} not listed as running: {kids:?}");
        }
        // Leaving the select dropped both stuck dialogs (cancelling their
        // callees); the nursery ends the children.
        Ok(())
    })
    .await
}

/// Once cancelled, waits (within its grace period) for the file `go`,
/// which its opener creates after looking at its own side, then says what
/// its own dump shows of the cancel, as its error (an error of its own
/// within the grace period is its outcome). Until it returns, the dialog
/// is open on both ends.
#[furrow::context]
async fn report_the_cancel(ctx: Context, go: std::path::PathBuf) -> Result<(), String> {
    ctx.started(&()).await.map_err(|e| e.to_string())?;
    ctx.cancelled().await;
    while !go.exists() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let d = furrow::local_dump().map_err(|e| e.to_string())?;
    let line = d.dialogs.iter().find(|x| x.func.ends_with("::report_the_cancel")).map(ToString::to_string);
    Err(format!("seen: {}", line.unwrap_or_else(|| format!("nothing in\n{d}"))))
}

/// A cancel asked shows on both ends of the dialog, with who asked.
#[furrow_testing::test]
async fn a_cancel_asked_shows_who_asked_on_both_ends() -> anyhow::Result<()> {
    let me = furrow::local_aid()?;
    let go = std::env::temp_dir().join(format!("furrow-test-go-{}", std::process::id()));
    let _ = std::fs::remove_file(&go);
    let r = furrow::open_nursery(async |n| {
        let p = n.start_actor("canceled").await?;
        let r = p
            .open_context(report_the_cancel, (go.clone(),), async |ctx, ()| {
                // The opener's view: the callee cannot end the dialog before
                // `go` exists, which is created only after the look.
                let look = async {
                    let mine = furrow::local_dump();
                    std::fs::write(&go, b"go")?;
                    anyhow::Ok(mine?)
                };
                let (asked, mine) = futures::join!(ctx.cancel(), look);
                asked?;
                let mine = mine?;
                let opener = dialog(&mine, "report_the_cancel", p.aid())?;
                let c = opener.cancel.as_ref().with_context(|| format!("no cancel shown: {opener}"))?;
                ensure!(c.by == me, "{opener}");
                ensure!(opener.to_string().contains("cancel asked "), "{opener}");
                ctx.wait_for_result::<()>().await.map(drop).map_err(anyhow::Error::from)
            })
            .await;
        // The callee's view came back as its error.
        let text = format!("{:#}", r.err().context("the callee reported nothing")?);
        ensure!(text.contains("seen: callee context") && text.contains("cancel asked"), "{text}");
        ensure!(text.contains(&format!("by {me}")), "{text}");
        Ok(())
    })
    .await;
    let _ = std::fs::remove_file(&go);
    r
}

/// Started by the SIGUSR1 test: a root that keeps its worker busy with
/// calls for two seconds, printing the worker's pid first and the number
/// of calls last (every one of them checked).
#[furrow_testing::test(scenario)]
async fn scenario_busy_worker() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("busy").await?;
        println!("pid {} {}", std::process::id(), p.aid().pid);
        let until = Instant::now() + Duration::from_secs(2);
        let mut calls = 0u64;
        while Instant::now() < until {
            ensure!(p.run(echo, (calls,)).await? == calls);
            calls += 1;
        }
        // One more after the signals: the worker still serves.
        ensure!(p.run(echo, (7,)).await? == 7);
        println!("calls {calls}");
        Ok(())
    })
    .await
}

/// SIGUSR1 to an actor busy serving calls writes its dump to its stderr,
/// and it keeps serving (every call of the run is answered and checked);
/// the root answers SIGUSR1 the same way.
#[furrow_testing::test]
async fn sigusr1_writes_the_dump_and_the_actor_keeps_serving() -> anyhow::Result<()> {
    let mut run = furrow_testing::scenario("scenario_busy_worker").stderr(std::process::Stdio::piped()).spawn()?;
    let mut out = BufReader::new(run.stdout.take().context("stdout piped")?);
    let mut err = run.stderr.take().context("stderr piped")?;
    let stderr = tokio::spawn(async move {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s).await;
        s
    });
    let mut first = String::new();
    out.read_line(&mut first).await?;
    let pids: Vec<i32> = first.split_whitespace().skip(1).filter_map(|p| p.parse().ok()).collect();
    let [root, busy] = pids[..] else { bail!("no pids in {first:?}") };
    tokio::time::sleep(Duration::from_millis(300)).await;
    for pid in [busy, root] {
        // SAFETY: kill(2) on processes of the scenario we started, alive
        // (it runs for two seconds more).
        unsafe { libc::kill(pid, libc::SIGUSR1) };
    }
    let mut rest = String::new();
    tokio::time::timeout(Duration::from_secs(30), out.read_to_string(&mut rest)).await??;
    let status = tokio::time::timeout(Duration::from_secs(30), run.wait()).await??;
    let stderr = stderr.await?;
    ensure!(status.success(), "the busy run failed ({status}):\n{rest}\n{stderr}");
    ensure!(rest.contains("calls "), "{rest}");
    ensure!(stderr.contains(&format!("actor busy (pid {busy}")), "no dump of busy ({busy}):\n{stderr}");
    ensure!(stderr.contains(&format!(" (pid {root}, uuid")), "no dump of the root ({root}):\n{stderr}");
    ensure!(stderr.matches("SIGUSR1: dump of").count() == 2, "{stderr}");
    Ok(())
}

/// A fixture of the hang-report test below: hangs in a call to a child
/// when `FURROW_TEST_HANG_FIXTURE` is set (only in the harness that test
/// starts); otherwise it checks the same call answers when it returns.
#[furrow_testing::test]
async fn fixture_hangs_in_a_call_when_asked() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("stuck").await?;
        if std::env::var_os("FURROW_TEST_HANG_FIXTURE").is_some() {
            p.run(hang, ()).await?;
        }
        ensure!(p.run(echo, (3,)).await? == 3);
        Ok(())
    })
    .await
}

/// A test past its timeout is a hang report: the harness asks every actor
/// of its tree for its dump before it kills it, and the failure shows
/// them (here: the root waiting for `hang`, the child running it).
#[furrow_testing::test]
fn a_test_that_times_out_prints_its_trees_dump() -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .args(["--exact", "observe_dump::fixture_hangs_in_a_call_when_asked"])
        .env("FURROW_TEST_HANG_FIXTURE", "1")
        .env("FURROW_TEST_TIMEOUT", "3")
        .stdin(std::process::Stdio::null())
        .output()?;
    // The killed tree's processes were adopted by this test process (a
    // subreaper): reap them.
    let me = std::process::id() as i32;
    let left: Vec<u32> = furrow_testing::descendants(me).iter().map(|d| d.pid as u32).collect();
    furrow_testing::wait_gone(&left, Duration::from_secs(10)).map_err(anyhow::Error::msg)?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(!out.status.success(), "the hanging fixture passed:\n{text}");
    ensure!(text.contains("test hung: killed after"), "{text}");
    ensure!(text.matches("SIGUSR1: dump of").count() >= 2, "not every actor dumped:\n{text}");
    let call = text.lines().find(|l| l.contains("opener call") && l.contains("::hang"));
    ensure!(call.is_some_and(|l| l.contains("to stuck") && l.contains("for the result")), "{text}");
    let served = text.lines().find(|l| l.contains("callee call") && l.contains("::hang"));
    ensure!(served.is_some_and(|l| l.contains("running the function")), "{text}");
    Ok(())
}
