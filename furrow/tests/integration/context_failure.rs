//! A context's failure ends both sides in a defined way (issue 13, bugs 5
//! and 6): a callee error, a cancellation the opener did not ask for, or a
//! lost link interrupts the opener's body wherever it waits; a callee that
//! returns leaves it running; a callee whose opener is lost is cancelled
//! with its grace period, naming the lost peer.

use anyhow::{Context as _, bail, ensure};
use furrow::blocking::{self, Runtime};
use furrow::{CancelReason, Context, Error, Outcome};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Generous bound for "promptly": a hang is what is being caught.
const PROMPT: Duration = Duration::from_secs(5);

/// Calls `started`, waits `ms`, then fails.
#[furrow::context]
pub async fn fail_after(ctx: Context, ms: u64) -> Result<(), String> {
    ctx.started(&()).await.map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Err("boom from the callee".into())
}

/// Calls `started`, waits `ms`, then cancels itself (raised at the opener).
#[furrow::context]
pub async fn self_cancel_after(ctx: Context, ms: u64) -> furrow::Result<()> {
    ctx.started(&()).await?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ctx.cancel().await?;
    std::future::pending().await
}

/// Calls `started` and returns `value` at once.
#[furrow::context]
pub async fn return_at_once(ctx: Context, value: u64) -> furrow::Result<u64> {
    ctx.started(&()).await?;
    Ok(value)
}

/// Calls `started` and waits until cancelled.
#[furrow::context]
pub async fn hold(ctx: Context) -> furrow::Result<()> {
    ctx.started(&()).await?;
    ctx.cancelled().await;
    Ok(())
}

/// Calls `started` and never returns (its cancel ends it after the grace).
#[furrow::context]
pub async fn wait_forever(ctx: Context) -> furrow::Result<()> {
    ctx.started(&()).await?;
    std::future::pending().await
}

/// How many `nap`s are running in this actor.
static NAPPING: AtomicUsize = AtomicUsize::new(0);

struct Napping;

impl Drop for Napping {
    fn drop(&mut self) {
        NAPPING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Sleeps `ms`, counted in `NAPPING` while it runs (also when dropped).
#[furrow::remote]
pub async fn nap(ms: u64) -> u64 {
    NAPPING.fetch_add(1, Ordering::SeqCst);
    let _n = Napping;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

#[furrow::remote]
pub async fn napping() -> usize {
    NAPPING.load(Ordering::SeqCst)
}

/// Sets its flag when dropped: the body's future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[furrow_testing::test]
async fn a_callee_error_interrupts_a_body_waiting_on_another_call() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let callee = n.start_actor("failing").await?;
        let worker = n.start_actor("worker").await?;
        let dropped = Arc::new(AtomicBool::new(false));
        let t0 = Instant::now();
        let r = tokio::time::timeout(
            PROMPT * 2,
            callee.open_context(fail_after, (300,), async |_ctx, (): ()| {
                let _flag = DropFlag(dropped.clone());
                // Waits on something else than the context: a long call.
                worker.run(nap, (600_000,)).await?;
                Ok("the body finished")
            }),
        )
        .await
        .context("open_context hung: the callee's error did not end its body")?;
        let took = t0.elapsed();
        match r {
            Err(Error::Remote(e)) => ensure!(e.message.contains("boom from the callee"), "{e:?}"),
            other => bail!("expected the callee's error, got {other:?}"),
        }
        ensure!(took < PROMPT, "the body was interrupted only after {took:?}");
        ensure!(dropped.load(Ordering::SeqCst), "the body's future was not dropped");
        // Dropping the body cancelled its call in flight (rule 5a).
        let deadline = Instant::now() + PROMPT;
        while worker.run(napping, ()).await? != 0 {
            ensure!(Instant::now() < deadline, "the body's call still runs in the worker");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn a_raised_cancellation_interrupts_a_body_waiting_on_a_lock() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let callee = n.start_actor("quitter").await?;
        let lock = tokio::sync::Mutex::new(());
        let _held = lock.lock().await; // never released while the body runs
        let r = tokio::time::timeout(
            PROMPT * 2,
            callee.open_context(self_cancel_after, (200,), async |_ctx, (): ()| {
                let _g = lock.lock().await;
                Ok(())
            }),
        )
        .await
        .context("open_context hung: the callee's cancellation did not end its body")?;
        match r {
            Err(Error::ContextCancelled { canceller, .. }) => {
                ensure!(canceller == *callee.aid(), "canceller should be the callee, got {canceller}")
            }
            other => bail!("expected ContextCancelled raised, got {other:?}"),
        }
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn a_lost_link_interrupts_a_body_waiting_forever() -> anyhow::Result<()> {
    // The context runs in a task of its own: the SIGKILL also fails the
    // nursery (one cancels all), which would drop a body running in it.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let r = furrow::open_nursery(async |n| {
        let p = n.start_actor("doomed").await?;
        let pid = p.aid().pid as i32;
        tokio::spawn(async move {
            let dropped = Arc::new(AtomicBool::new(false));
            let r = p
                .open_context(hold, (), async |_ctx, (): ()| {
                    let _flag = DropFlag(dropped.clone());
                    // SAFETY: killing our own child process.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    std::future::pending::<()>().await;
                    Ok(())
                })
                .await;
            let _ = tx.send((r, dropped.load(Ordering::SeqCst)));
        });
        std::future::pending::<()>().await;
        Ok(())
    })
    .await;
    let (ctx_result, dropped) =
        tokio::time::timeout(PROMPT, rx).await.context("open_context hung: the lost link did not end its body")??;
    ensure!(matches!(ctx_result, Err(Error::TransportClosed { .. })), "{ctx_result:?}");
    ensure!(dropped, "the body's future was not dropped");
    ensure!(matches!(r, Err(Error::ActorExited { .. })), "the nursery should fail with the crash: {r:?}");
    Ok(())
}

#[furrow_testing::test]
async fn a_callee_that_returns_leaves_the_body_running() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let callee = n.start_actor("quick").await?;
        let value = callee
            .open_context(return_at_once, (7,), async |ctx, (): ()| {
                // Long enough for the `Return` to arrive while the body
                // waits on something else.
                tokio::time::sleep(Duration::from_millis(300)).await;
                ensure!(ctx.wait_for_result::<u64>().await? == Outcome::Returned(7));
                Ok("the body ran to its end")
            })
            .await?;
        ensure!(value == "the body ran to its end");
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn our_own_cancel_does_not_interrupt_the_body() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let callee = n.start_actor("held").await?;
        let me = furrow::local_aid()?;
        let value = callee
            .open_context(wait_forever, (), async |ctx, (): ()| {
                ctx.cancel().await?;
                // The absorbed cancellation arrives while the body sleeps.
                tokio::time::sleep(Duration::from_millis(300)).await;
                ensure!(ctx.wait_for_result::<()>().await? == Outcome::Cancelled { canceller: me.clone() });
                Ok("the body ran to its end")
            })
            .await?;
        ensure!(value == "the body ran to its end");
        Ok(())
    })
    .await
}

#[furrow_testing::test]
fn a_callee_error_fails_the_sync_bodys_later_calls() -> anyhow::Result<()> {
    let rt = Runtime::new(furrow_testing::root_config())?;
    let saw: std::sync::Mutex<Option<(Error, Duration)>> = std::sync::Mutex::new(None);
    let r = rt.open_nursery(|n: &blocking::ActorNursery| {
        let callee = n.start_actor("failing")?;
        let worker = n.start_actor("worker")?;
        let t0 = Instant::now();
        let r = callee.open_context(fail_after, (300,), |_ctx, ()| {
            // Calls through another portal, made on this thread: they end
            // with the context (a sync body cannot be dropped mid-way).
            while t0.elapsed() < PROMPT * 2 {
                if let Err(e) = worker.run(nap, (50,)) {
                    *saw.lock().unwrap() = Some((e.clone(), t0.elapsed()));
                    return Err(e);
                }
            }
            Ok(())
        });
        match r {
            Err(Error::Remote(e)) if e.message.contains("boom from the callee") => Ok(()),
            other => Err(Error::Closed(format!("expected the callee's error, got {other:?}"))),
        }
    });
    r.map_err(|e| anyhow::anyhow!("{e}"))?;
    let (e, when) = saw.lock().unwrap().take().context("no call of the body failed: it ran to its end")?;
    ensure!(when < PROMPT, "the body's call failed only after {when:?}: {e}");
    Ok(())
}

/// A scratch directory for marker files (not the socket directory: the
/// leak check owns that one).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> anyhow::Result<Scratch> {
        let d = std::env::temp_dir().join(format!("furrow-ctxfail-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d)?;
        Ok(Scratch(d))
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Waits (bounded) for `name` to exist and returns its text.
    async fn wait_for(&self, name: &str, within: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(s) = std::fs::read_to_string(self.file(name))
                && !s.is_empty()
            {
                return Ok(s);
            }
            ensure!(Instant::now() < deadline, "{name} did not appear within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Says it started, waits for its cancellation, then cleans up: writes who
/// cancelled it and why (the trace the test looks for).
#[furrow::context]
pub async fn lease(ctx: Context, dir: PathBuf) -> furrow::Result<()> {
    ctx.started(&()).await?;
    write(&dir.join("started"), "yes");
    let by = ctx.cancelled().await;
    // Cleaning up takes a while, well inside the grace period (200 ms).
    tokio::time::sleep(Duration::from_millis(20)).await;
    let link_lost = matches!(ctx.cancel_reason(), Some(CancelReason::LinkLost { .. }));
    let why = ctx.cancel_reason().map(|r| r.to_string()).unwrap_or_default();
    write(&dir.join("cleanup"), &format!("by={}\nlink_lost={link_lost}\nwhy={why}\n", by.name));
    Ok(())
}

/// Streams to its opener until sending fails; writes what the failure was.
#[furrow::context]
pub async fn pour(ctx: Context, dir: PathBuf) -> furrow::Result<()> {
    ctx.started(&()).await?;
    ctx.open_stream(async |s| {
        for i in 0u64.. {
            if let Err(e) = s.send(&i).await {
                let cancelled = matches!(&e, Error::ContextCancelled { .. });
                write(&dir.join("cleanup"), &format!("cancelled={cancelled}\nerror={e}\n"));
                return Err(e);
            }
            if i == 10 {
                write(&dir.join("started"), "yes");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    })
    .await
}

/// In the opener actor: open `pour` at `addr` and read from it forever.
#[furrow::remote]
pub async fn open_pour_and_read(addr: furrow::Addr, dir: PathBuf) -> furrow::Result<()> {
    furrow::connect(&addr, async |p| {
        p.open_context(pour, (dir,), async |ctx, (): ()| {
            ctx.open_stream(async |s| {
                while s.recv::<u64>().await?.is_some() {}
                Ok(())
            })
            .await
        })
        .await
    })
    .await
}

/// Runs until dropped; says so in `dir` when it starts and when dropped.
#[furrow::remote]
pub async fn held_call(dir: PathBuf) {
    struct Dropped(PathBuf);
    impl Drop for Dropped {
        fn drop(&mut self) {
            write(&self.0.join("dropped"), "yes");
        }
    }
    let _d = Dropped(dir.clone());
    write(&dir.join("started"), "yes");
    std::future::pending().await
}

fn write(path: &Path, text: &str) {
    // Written whole under another name, then renamed: a reader never sees
    // half of it.
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// In the opener actor: open `lease` at `addr` and wait forever in it.
#[furrow::remote]
pub async fn open_lease_and_wait(addr: furrow::Addr, dir: PathBuf) -> furrow::Result<()> {
    furrow::connect(&addr, async |p| {
        p.open_context(lease, (dir,), async |_ctx, (): ()| std::future::pending::<furrow::Result<()>>().await).await
    })
    .await
}

/// In the caller actor: call `held_call` at `addr` and wait for it.
#[furrow::remote]
pub async fn call_held_and_wait(addr: furrow::Addr, dir: PathBuf) -> furrow::Result<()> {
    furrow::connect(&addr, async |p| p.run(held_call, (dir,)).await).await
}

/// Starts `opener` in a nursery of its own (its SIGKILL fails that nursery,
/// not the one holding the keeper), runs `go(opener)` there, waits for
/// `started` in `dir`, SIGKILLs the opener, and returns the nursery's
/// result.
async fn kill_the_opener_once_started<G, Fut>(scratch: &Scratch, go: G) -> anyhow::Result<furrow::Result<()>>
where
    G: FnOnce(furrow::Portal) -> Fut,
    Fut: Future<Output = furrow::Result<()>>,
{
    let r = furrow::open_nursery(async |n| {
        let opener = n.start_actor("opener").await?;
        let pid = opener.aid().pid as i32;
        let kill = async {
            scratch.wait_for("started", PROMPT).await.map_err(|e| Error::Closed(e.to_string()))?;
            // SAFETY: killing our own child process.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            std::future::pending::<furrow::Result<()>>().await
        };
        // The body waits until the nursery ends it: the crash fails the
        // nursery (its exit monitor reports it), which drops the body. The
        // opener's call fails when its process dies; that is not the
        // nursery's error to report. Only a missing "started" ends it.
        let go = async {
            let r = go(opener).await;
            tracing::debug!("the opener's call ended: {r:?}");
            std::future::pending::<furrow::Result<()>>().await
        };
        tokio::select! {
            r = go => r,
            r = kill => r,
        }
    })
    .await;
    Ok(r)
}

#[furrow_testing::test]
async fn a_callee_whose_opener_is_sigkilled_is_cancelled_with_its_grace() -> anyhow::Result<()> {
    let scratch = Scratch::new("lease")?;
    furrow::open_nursery(async |n| {
        let keeper = n.start_actor("keeper").await?;
        let addr = keeper.addrs().first().cloned().context("keeper has an address")?;
        let dir = scratch.0.clone();
        let r =
            kill_the_opener_once_started(&scratch, async |opener| opener.run(open_lease_and_wait, (addr, dir)).await)
                .await?;
        match r {
            Err(Error::ActorExited { actor, status, .. }) => {
                ensure!(actor.name == "opener" && status.contains("SIGKILL"), "{actor} {status}")
            }
            other => bail!("the opener's nursery should fail with its crash: {other:?}"),
        }
        // The callee saw `cancelled()` resolve and ran its clean-up.
        let trace = scratch.wait_for("cleanup", PROMPT).await.context("the callee's clean-up never ran")?;
        ensure!(trace.contains("by=opener\n"), "the canceller should be the lost opener: {trace}");
        ensure!(trace.contains("link_lost=true\n"), "{trace}");
        ensure!(trace.contains("was lost"), "the reason should say the link was lost: {trace}");
        // The keeper serves on, and nothing of the lost dialog is left.
        ensure!(keeper.run(napping, ()).await? == 0);
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn a_streaming_callee_whose_opener_is_sigkilled_fails_with_its_cancellation() -> anyhow::Result<()> {
    let scratch = Scratch::new("pour")?;
    furrow::open_nursery(async |n| {
        let keeper = n.start_actor("keeper").await?;
        let addr = keeper.addrs().first().cloned().context("keeper has an address")?;
        let dir = scratch.0.clone();
        let r =
            kill_the_opener_once_started(&scratch, async |opener| opener.run(open_pour_and_read, (addr, dir)).await)
                .await?;
        ensure!(matches!(r, Err(Error::ActorExited { .. })), "{r:?}");
        // Its `send` failed with the cancellation (not "closed" or a
        // transport error), which names the lost link.
        let trace = scratch.wait_for("cleanup", PROMPT).await.context("the callee's send never failed")?;
        ensure!(trace.contains("cancelled=true\n"), "{trace}");
        ensure!(trace.contains("was lost"), "the error should say the link was lost: {trace}");
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn a_plain_call_whose_caller_is_sigkilled_is_dropped() -> anyhow::Result<()> {
    let scratch = Scratch::new("call")?;
    furrow::open_nursery(async |n| {
        let keeper = n.start_actor("keeper").await?;
        let addr = keeper.addrs().first().cloned().context("keeper has an address")?;
        let dir = scratch.0.clone();
        let r =
            kill_the_opener_once_started(&scratch, async |caller| caller.run(call_held_and_wait, (addr, dir)).await)
                .await?;
        ensure!(matches!(r, Err(Error::ActorExited { .. })), "{r:?}");
        scratch.wait_for("dropped", PROMPT).await.context("the orphaned call was never dropped")?;
        let stats = keeper.run(served_calls, ()).await?;
        ensure!(stats == 1, "only this call should be served in the keeper now, found {stats}");
        Ok(())
    })
    .await
}

/// How many calls and contexts this actor serves (this one included).
#[furrow::remote]
pub async fn served_calls() -> furrow::Result<usize> {
    let s = furrow::local_stats()?;
    Ok(s.calls_served + s.contexts_served)
}
