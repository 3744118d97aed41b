//! `furrow::blocking`: trees driven from sync code (issue 7), including
//! the re-entrant calls of seed 001 (a call from a `Drop`, or from a
//! signal-handling thread, while another call is in flight).
//!
//! These are plain `fn` tests: each runs on its test process's main thread,
//! outside any runtime, and starts its own `blocking::Runtime`.

use anyhow::{Context as _, anyhow, bail, ensure};
use furrow::blocking::{self, Runtime};
use furrow::{Error, Outcome};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

#[furrow::remote]
pub async fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[furrow::remote]
pub async fn nap(x: u64, ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    x
}

#[furrow::remote]
pub async fn refuse(why: String) -> Result<u64, String> {
    Err(format!("refused: {why}"))
}

/// Doubles what it receives until the opener closes; returns the count.
#[furrow::context]
pub async fn doubler(ctx: furrow::Context, greeting: String) -> furrow::Result<u64> {
    ctx.started(&greeting).await?;
    ctx.open_stream(async |s| {
        let mut n = 0;
        while let Some(x) = s.recv::<u64>().await? {
            s.send(&(x * 2)).await?;
            n += 1;
        }
        Ok(n)
    })
    .await
}

/// Streams `0..upto`, then returns `upto`.
#[furrow::context]
pub async fn count_to(ctx: furrow::Context, upto: u64) -> furrow::Result<u64> {
    ctx.started(&()).await?;
    ctx.open_stream(async |s| {
        for i in 0..upto {
            s.send(&i).await?;
        }
        Ok(upto)
    })
    .await
}

/// Waits until cancelled; says so through the registry-free side channel
/// of its result (it never returns normally).
#[furrow::context]
pub async fn wait_forever(ctx: furrow::Context) -> furrow::Result<()> {
    ctx.started(&()).await?;
    std::future::pending::<()>().await;
    Ok(())
}

/// Run `f` on a thread and fail (instead of hanging) if it takes longer
/// than `bound`: the deadlock detector of these tests.
fn within<T: Send + 'static>(bound: Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(bound).map_err(|_| anyhow!("{what}: no answer within {bound:?} (deadlock?)"))
}

#[furrow_testing::test]
fn sync_code_drives_a_whole_tree() -> anyhow::Result<()> {
    let rt = Runtime::new(furrow_testing::root_config())?;
    let out = rt.open_nursery(|n| {
        let a = n.start_actor("alpha")?;
        let b = n.start_actor("beta")?;
        ensure!(a.run(add, (1, 2))? == 3);
        #[derive(Serialize)]
        struct AddArgs {
            a: i64,
            b: i64,
        }
        ensure!(b.run_by_name::<_, i64>("integration::blocking_api::add", &AddArgs { a: 20, b: 22 })? == 42);
        // A remote error comes back with its origin.
        match b.run(refuse, ("no".into(),)) {
            Err(Error::Remote(r)) => {
                ensure!(r.src.name == "beta" && r.message.contains("refused: no"), "{r:?}")
            }
            other => bail!("expected a remote error, got {other:?}"),
        }
        // A two-way stream, iterated.
        let (count, doubled) = a.open_context(doubler, ("hi".to_string(),), |ctx, greeting: String| {
            ensure!(greeting == "hi");
            let doubled = ctx.open_stream(|s| {
                let mut got = Vec::new();
                for x in 1..=5u64 {
                    s.send(&x)?;
                    got.push(s.recv::<u64>()?.context("stream ended early")?);
                }
                s.close()?;
                ensure!(s.recv::<u64>()?.is_none(), "stream not over after close");
                Ok(got)
            })?;
            let count = match ctx.wait_for_result::<u64>()? {
                Outcome::Returned(n) => n,
                other => bail!("unexpected outcome {other:?}"),
            };
            Ok((count, doubled))
        })?;
        ensure!(count == 5 && doubled == vec![2, 4, 6, 8, 10], "{count} {doubled:?}");
        // A one-way stream through the iterator.
        let sum = b.open_context(count_to, (100,), |ctx, ()| {
            ctx.open_stream(|s| s.iter::<u64>().sum::<furrow::Result<u64>>())
        })?;
        ensure!(sum == 4950);
        // run_in_actor in the background.
        let h = n.run_in_actor(nap, (7, 10));
        ensure!(h.join()? == 7);
        ensure!(n.children()?.len() == 2);
        // What the async portal and nursery tell, the blocking ones do too.
        ensure!(!a.addrs().is_empty() && a.addrs() == a.as_async().addrs(), "{:?}", a.addrs());
        ensure!(!b.is_closed());
        b.cancel_actor()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !b.is_closed() {
            ensure!(std::time::Instant::now() < deadline, "beta's portal still open 10 s after its cancel");
            std::thread::sleep(Duration::from_millis(5));
        }
        // `nap`'s actor ended with its call (run_in_actor): it is the one
        // ending recorded so far, a graceful one.
        let ended = n.endings()?;
        ensure!(
            ended.len() == 1 && ended[0].0.name == "nap" && ended[0].1.is_graceful(),
            "nap ended gracefully, and only nap: {ended:?}"
        );
        let lives = n.lifecycles()?;
        let names: Vec<&str> = lives.iter().map(|(name, _)| name.as_str()).collect();
        ensure!(names == ["alpha", "beta", "nap"], "{names:?}");
        ensure!(
            lives.iter().all(|(_, steps)| steps.iter().any(|s| matches!(s, furrow::Lifecycle::Ready))),
            "{lives:?}"
        );
        Ok(a.aid().pid)
    })?;
    ensure!(furrow_testing::wait_gone(&[out], Duration::from_secs(5)).is_ok(), "alpha outlived its nursery");
    rt.shutdown()?;
    Ok(())
}

#[furrow_testing::test]
fn a_failing_child_cancels_the_sync_body_and_is_reported() -> anyhow::Result<()> {
    let rt = Runtime::new(furrow_testing::root_config())?;
    let started = Instant::now();
    let mut long_call = None;
    let out: Result<(), Error> = rt.open_nursery(|n| {
        let p = n.start_actor("sleeper")?;
        let _bad = n.run_in_actor(refuse, ("boom".into(),));
        // In flight when the sibling fails: must return at once, not
        // after 60 s.
        long_call = Some(p.run(nap, (1, 60_000)));
        // And later calls fail too, quickly.
        let later = p.run(add, (1, 1));
        ensure_err(later.is_err(), "a call after the nursery failed succeeded")?;
        Ok(())
    });
    let elapsed = started.elapsed();
    match out {
        Err(Error::Remote(r)) if r.message.contains("refused: boom") => {}
        other => bail!("expected the child's error, got {other:?}"),
    }
    match long_call {
        Some(Err(Error::ActorCancelled { .. })) => {}
        other => bail!("the call in flight should be cancelled, got {other:?}"),
    }
    ensure!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    rt.shutdown()?;
    Ok(())
}

fn ensure_err(cond: bool, msg: &str) -> Result<(), Error> {
    if cond { Ok(()) } else { Err(Error::Closed(msg.into())) }
}

/// An argument whose `Drop` (and, optionally, `Serialize`) makes a blocking
/// call of its own: the finalizer of seed 001.
/// It travels as its plain number.
#[derive(Deserialize)]
#[serde(from = "u64")]
pub struct Reentrant {
    value: u64,
    on_drop: Option<(blocking::Portal, Arc<Mutex<Vec<String>>>)>,
    call_in_serialize: bool,
}

impl From<u64> for Reentrant {
    fn from(value: u64) -> Reentrant {
        Reentrant { value, on_drop: None, call_in_serialize: false }
    }
}

impl Serialize for Reentrant {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let (true, Some((p, log))) = (self.call_in_serialize, &self.on_drop) {
            let r = p.run(add, (1, 1));
            log.lock().unwrap().push(format!("serialize: {r:?}"));
        }
        s.serialize_u64(self.value)
    }
}

impl Drop for Reentrant {
    fn drop(&mut self) {
        if let Some((p, log)) = self.on_drop.take() {
            log.lock().unwrap().push("drop: start".into());
            // The outer call (500 ms in the callee) is in flight now.
            let r = p.run(add, (40, 2));
            log.lock().unwrap().push(format!("drop: {r:?}"));
        }
    }
}

#[furrow::remote]
pub async fn nap_token(token: Reentrant, ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    token.value
}

#[furrow_testing::test]
fn a_call_from_drop_during_a_call_on_the_same_thread_does_not_deadlock() -> anyhow::Result<()> {
    let rt = Arc::new(Runtime::new(furrow_testing::root_config())?);
    let rt2 = rt.clone();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    let result = within(Duration::from_secs(20), "the re-entrant calls", move || {
        rt2.open_nursery(|n| {
            let p = n.start_actor("reentry")?;
            let token = Reentrant { value: 7, on_drop: Some((p.clone(), log2.clone())), call_in_serialize: true };
            let out = p.run(nap_token, (token, 500));
            log2.lock().unwrap().push(format!("outer: {out:?}"));
            out
        })
    })?;
    ensure!(matches!(result, Ok(7)), "outer call: {result:?}");
    let log = log.lock().unwrap().clone();
    // Serialize ran first (before queueing), then Drop, whose nested call
    // completed while the outer call was still in flight, on this thread.
    ensure!(
        log == vec!["serialize: Ok(2)", "drop: start", "drop: Ok(42)", "outer: Ok(7)"],
        "unexpected order: {log:?}"
    );
    Arc::try_unwrap(rt).map_err(|_| anyhow!("runtime still shared"))?.shutdown()?;
    Ok(())
}

#[furrow_testing::test]
fn calls_from_other_threads_run_while_a_long_call_is_in_flight() -> anyhow::Result<()> {
    let rt = Runtime::new(furrow_testing::root_config())?;
    rt.open_nursery(|n| {
        let p = n.start_actor("shared")?;
        let in_flight = Arc::new(AtomicBool::new(true));
        std::thread::scope(|s| {
            let p2 = p.clone();
            let flag = in_flight.clone();
            let other = s.spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                let mut done_during = 0;
                for i in 0..20 {
                    if p2.run(add, (i, 1)).ok() == Some(i + 1) && flag.load(Ordering::Acquire) {
                        done_during += 1;
                    }
                }
                done_during
            });
            let long = p.run(nap, (9, 3000));
            in_flight.store(false, Ordering::Release);
            let done_during = other.join().map_err(|_| anyhow!("the other thread panicked"))?;
            ensure!(long.ok() == Some(9));
            // Not serialized behind the long call: all 20 finished while it ran.
            ensure!(done_during == 20, "only {done_during} of 20 calls ran during the long call");
            Ok(())
        })
    })?;
    rt.shutdown()?;
    Ok(())
}

#[furrow_testing::test]
fn a_signal_handling_thread_calls_and_cancels_while_a_call_is_in_flight() -> anyhow::Result<()> {
    // SIGUSR1 is blocked in every thread (the runtime's threads inherit the
    // mask) and taken synchronously by one thread with sigwait.
    // SAFETY: plain libc signal-set calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        ensure!(libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) == 0);
    }
    let rt = Arc::new(Runtime::without_signal_handling(furrow_testing::root_config())?);
    let started = Instant::now();
    let (portal_tx, portal_rx) = mpsc::channel::<blocking::Portal>();
    let rt2 = rt.clone();
    let handler = std::thread::spawn(move || -> Result<i64, String> {
        // SAFETY: as above; sigwait on a blocked signal.
        let sig = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            let mut sig = 0;
            libc::sigwait(&set, &mut sig);
            sig
        };
        if sig != libc::SIGUSR1 {
            return Err(format!("sigwait gave {sig}"));
        }
        let p = portal_rx.recv().map_err(|e| e.to_string())?;
        // A blocking call from the signal thread while main's is in flight.
        let r = p.run(add, (2, 3)).map_err(|e| e.to_string())?;
        rt2.cancel();
        Ok(r)
    });
    let out: Result<(), Error> = rt.open_nursery(|n| {
        let p = n.start_actor("target")?;
        let _ = portal_tx.send(p.clone());
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            // SAFETY: kill(2) on our own pid.
            unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
        });
        match p.run(nap, (1, 60_000)) {
            Err(Error::ActorCancelled { .. }) => Ok(()),
            other => Err(Error::Closed(format!("the long call should be cancelled, got {other:?}"))),
        }
    });
    let from_handler = handler.join().map_err(|_| anyhow!("the signal thread panicked"))?;
    ensure!(from_handler == Ok(5), "signal thread's call: {from_handler:?}");
    match out {
        Err(Error::ActorCancelled { reason, .. }) if reason.contains("Canceller") => {}
        other => bail!("expected the nursery to end cancelled, got {other:?}"),
    }
    ensure!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    Arc::try_unwrap(rt).map_err(|_| anyhow!("runtime still shared"))?.shutdown()?;
    Ok(())
}

/// Where the handler finds the canceller. (An `AtomicPtr` rather than a
/// `OnceLock`, only so the test can drop it again: it holds an fd, and the
/// leak check counts fds.)
static CANCELLER: AtomicPtr<blocking::Canceller> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_usr2(_: libc::c_int) {
    // SAFETY: the pointer is null or a leaked Box the test frees only after
    // the signal was handled.
    if let Some(c) = unsafe { CANCELLER.load(Ordering::Acquire).as_ref() } {
        c.cancel();
    }
}

#[furrow_testing::test]
fn a_real_signal_handler_cancels_through_the_canceller() -> anyhow::Result<()> {
    let rt = Runtime::without_signal_handling(furrow_testing::root_config())?;
    CANCELLER.store(Box::into_raw(Box::new(rt.canceller())), Ordering::Release);
    // SAFETY: installs an async-signal-safe handler (one send(2)).
    unsafe { libc::signal(libc::SIGUSR2, on_usr2 as *const () as libc::sighandler_t) };
    let started = Instant::now();
    let out: Result<(), Error> = rt.open_nursery(|n| {
        let p = n.start_actor("target")?;
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            // SAFETY: kill(2) on our own pid.
            unsafe { libc::kill(libc::getpid(), libc::SIGUSR2) };
        });
        // The handler may interrupt this very thread mid-call.
        p.run(nap, (1, 60_000)).map(drop)
    });
    ensure!(matches!(out, Err(Error::ActorCancelled { .. })), "{out:?}");
    ensure!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    rt.shutdown()?;
    // SAFETY: the signal was handled (the tree is cancelled); take the Box back.
    unsafe {
        libc::signal(libc::SIGUSR2, libc::SIG_DFL);
        drop(Box::from_raw(CANCELLER.swap(std::ptr::null_mut(), Ordering::AcqRel)));
    }
    Ok(())
}

#[furrow_testing::test]
fn a_blocking_call_on_the_runtime_is_refused_not_deadlocked() -> anyhow::Result<()> {
    let rt = Runtime::new(furrow_testing::root_config())?;
    rt.open_nursery(|n| {
        let p = n.start_actor("target")?;
        let r = within(Duration::from_secs(10), "a blocking call from async code", {
            let handle = rt.block_on(async { Ok(tokio::runtime::Handle::current()) });
            move || {
                let handle = handle?;
                // On a runtime thread: refused with a usage error.
                handle
                    .block_on(async move { tokio::spawn(async move { p.run(add, (1, 2)) }).await })
                    .map_err(|e| Error::Closed(e.to_string()))
            }
        })?;
        match r {
            Ok(Err(Error::Usage(m))) if m.contains("furrow runtime's own threads") => Ok(()),
            other => Err(anyhow!("expected a usage error, got {other:?}")),
        }
    })?;
    rt.shutdown()?;
    Ok(())
}

#[furrow_testing::test]
fn a_panicking_body_ends_its_children_then_panics_on() -> anyhow::Result<()> {
    let rt = Runtime::new(furrow_testing::root_config())?;
    let pid = Arc::new(Mutex::new(0));
    let pid2 = pid.clone();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _: Result<(), Error> = rt.open_nursery(|n| {
            let p = n.start_actor("doomed")?;
            *pid2.lock().unwrap() = p.aid().pid;
            panic!("the body panicked");
        });
    }));
    ensure!(caught.is_err(), "the panic was swallowed");
    let pid = *pid.lock().unwrap();
    ensure!(pid != 0);
    furrow_testing::wait_gone(&[pid], Duration::from_millis(500))
        .map_err(|e| anyhow!("child outlived the panic: {e}"))?;
    rt.shutdown()?;
    Ok(())
}

#[furrow_testing::test]
fn a_failing_context_body_cancels_the_callee_and_returns_its_own_error() -> anyhow::Result<()> {
    let rt = Runtime::new(furrow_testing::root_config())?;
    rt.open_nursery(|n| {
        let p = n.start_actor("callee")?;
        let out: Result<(), anyhow::Error> =
            p.open_context(wait_forever, (), |_ctx, ()| Err(anyhow!("the body gave up")));
        ensure!(out.as_ref().err().map(|e| e.to_string()) == Some("the body gave up".into()), "{out:?}");
        // The actor is still serving: only the context was cancelled.
        ensure!(p.run(add, (2, 2))? == 4);
        // A context the body cancels itself ends quietly.
        let v = p.open_context(wait_forever, (), |ctx, ()| {
            ctx.cancel()?;
            ensure!(ctx.as_async().cancel_called());
            Ok(11)
        })?;
        ensure!(v == 11);
        Ok(())
    })?;
    rt.shutdown()?;
    Ok(())
}

#[furrow::remote]
pub async fn cube_unless(x: u64, bad: u64) -> Result<u64, String> {
    if x == bad { Err(format!("{x} is unlucky")) } else { Ok(x * x * x) }
}

#[furrow_testing::test]
fn a_pool_from_sync_code_maps_in_order_reports_progress_and_names_a_failed_input() -> anyhow::Result<()> {
    let rt = Runtime::new(furrow_testing::root_config())?;
    let last = Arc::new(Mutex::new(None));
    let last2 = last.clone();
    let opts = furrow::pool::PoolOptions::new(2).name("cubes").progress(move |p| *last2.lock().unwrap() = Some(p));
    rt.open_pool(opts, |pool| {
        let cubes = pool.map(cube_unless, (0..50).map(|x| (x, 1000)))?.collect::<Result<Vec<u64>, _>>()?;
        ensure!(cubes == (0..50).map(|x| x * x * x).collect::<Vec<_>>());
        // The failure names its input; the iterator ends after it.
        let out: Vec<_> = pool.map(cube_unless, (0..50).map(|x| (x, 7)))?.collect();
        let err = out.last().and_then(|r| r.as_ref().err()).context("no error at the end")?;
        ensure!(err.index == 7 && err.input == (7, 7), "{err}");
        ensure!(out[..out.len() - 1].iter().all(|r| r.is_ok()), "an error before the last item");
        // Submissions from several threads at once.
        let sums = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4).map(|t| s.spawn(move || pool.submit(cube_unless, (t, 1000)))).collect();
            hs.into_iter()
                .map(|h| Ok(h.join().map_err(|_| anyhow!("panicked"))???))
                .collect::<anyhow::Result<Vec<u64>>>()
        })?;
        ensure!(sums == vec![0, 1, 8, 27]);
        // `?` on the task's error gives `Error::Task`, naming its input.
        let as_error = || -> furrow::Result<u64> { Ok(pool.submit(cube_unless, (7, 7))??) };
        match as_error() {
            Err(Error::Task { input, .. }) if input == "(7, 7)" => {}
            other => bail!("expected a task error naming (7, 7), got {other:?}"),
        }
        Ok(())
    })?;
    let p = last.lock().unwrap().context("progress never called")?;
    ensure!(p.completed >= 54 && p.failed >= 2, "{p:?}");
    rt.shutdown()?;
    Ok(())
}

/// The blocking pool mirrors the async one: `submit` gives the task's
/// `TaskError` back whole (the input itself, the worker, the remote error),
/// and `workers()` gives blocking portals, which belong to the pool's scope.
#[furrow_testing::test]
fn a_sync_pools_submit_keeps_its_task_error_and_its_workers_are_blocking_portals() -> anyhow::Result<()> {
    let rt = Runtime::new(furrow_testing::root_config())?;
    let kept = rt.open_pool(furrow::pool::PoolOptions::new(2).name("mirror"), |pool| {
        let workers: Vec<blocking::Portal> = pool.workers()?;
        ensure!(workers.len() == 2, "{workers:?}");
        // Called from this thread, without the runtime: blocking portals.
        for w in &workers {
            ensure!(w.run(cube_unless, (2, 1000))? == 8);
        }
        let e = match pool.submit(cube_unless, (7, 7))? {
            Err(e) => e,
            Ok(v) => bail!("(7, 7) should fail, gave {v}"),
        };
        ensure!(e.input == (7, 7), "the input given back: {:?}", e.input);
        let worker = e.worker.as_ref().context("a task that ran names its worker")?;
        ensure!(workers.iter().any(|w| w.aid() == worker), "{worker} is not one of {workers:?}");
        match &e.error {
            Error::Remote(r) if r.message.contains("7 is unlucky") => {}
            other => bail!("expected the function's own error, got {other:?}"),
        }
        ensure!(pool.submit(cube_unless, (3, 7))?.map_err(|e| anyhow!("{e}"))? == 27);
        Ok(workers)
    })?;
    // The pool is over: its workers' portals fail at once, not hang.
    let w = kept.first().context("no worker kept")?;
    match w.run(cube_unless, (2, 1000)) {
        Err(Error::ActorCancelled { reason, .. }) if reason.contains("pool") => {}
        other => bail!("a worker portal used after its pool: {other:?}"),
    }
    rt.shutdown()?;
    Ok(())
}

/// A sync program busy with a pool until Ctrl-C: prints its workers, then
/// what the interrupt did.
#[furrow_testing::test(scenario)]
fn scenario_sync_pool_until_interrupted() -> anyhow::Result<()> {
    let rt = Runtime::new(furrow::Config::new("sync-root"))?;
    let out = rt.open_pool(furrow::pool::PoolOptions::new(2).name("busy"), |pool| {
        for w in pool.workers()? {
            println!("worker {}", w.aid().pid);
        }
        pool.map(nap, (0..10_000).map(|i| (i, 100)))?.collect::<Result<Vec<u64>, _>>()?;
        Ok(())
    });
    println!("interrupted {:?}", rt.interrupted());
    rt.shutdown()?;
    out
}

#[furrow_testing::test]
fn ctrl_c_at_a_sync_root_cancels_its_pool_and_the_program_fails() -> anyhow::Result<()> {
    use std::io::BufRead;
    let mut child = furrow_testing::scenario_command("scenario_sync_pool_until_interrupted").spawn()?;
    let mut lines = std::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut workers = Vec::new();
    while workers.len() < 2 {
        let line = lines.next().context("scenario ended early")??;
        if let Some(pid) = line.strip_prefix("worker ") {
            workers.push(pid.parse::<u32>()?);
        }
    }
    std::thread::sleep(Duration::from_millis(300)); // mid-map
    // SAFETY: kill(2) on the process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = within(Duration::from_secs(15), "the interrupted sync root", move || child.wait())??;
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    ensure!(rest.iter().any(|l| l == &format!("interrupted Some({})", libc::SIGINT)), "{rest:?}");
    ensure!(!status.success(), "a cancelled program exits non-zero: {status}");
    furrow_testing::wait_gone(&workers, Duration::from_secs(2)).map_err(|e| anyhow!("workers outlived it: {e}"))?;
    Ok(())
}

#[furrow_testing::test]
fn misuse_is_a_clear_error_not_a_hang() -> anyhow::Result<()> {
    // Inside a tokio runtime: refused.
    let other = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let inside = other.block_on(async { Runtime::new(furrow_testing::root_config()).map(drop) });
    drop(other);
    ensure!(matches!(&inside, Err(Error::Usage(m)) if m.contains("inside a tokio runtime")), "{inside:?}");
    // A second root in the same process: refused, the first unharmed.
    let rt = Runtime::new(furrow_testing::root_config())?;
    let second = Runtime::new(furrow_testing::root_config()).map(drop);
    ensure!(matches!(&second, Err(Error::Usage(m)) if m.contains("already runs a furrow actor")), "{second:?}");
    ensure!(rt.open_nursery(|n| n.start_actor("still-fine")?.run(add, (1, 1)))? == 2);
    rt.shutdown()?;
    Ok(())
}

#[furrow_testing::test]
fn discovery_from_sync_code_finds_and_waits_for_actors_by_name() -> anyhow::Result<()> {
    let rt = Arc::new(Runtime::new(furrow_testing::root_config())?);
    // Nothing called "late" yet.
    let none = rt.find_actor("late", |p| furrow::Ok(p.is_none()))?;
    ensure!(none, "found an actor that does not exist");
    let rt2 = rt.clone();
    // Waits on another thread until the nursery below starts it.
    let waiter = std::thread::spawn(move || rt2.wait_for_actor("late", |p| p.run(add, (20, 22))));
    rt.open_nursery(|n| {
        std::thread::sleep(Duration::from_millis(200));
        let late = n.start_actor("late")?;
        let answer = within(Duration::from_secs(15), "wait_for_actor", move || waiter.join())?
            .map_err(|_| anyhow!("the waiting thread panicked"))??;
        ensure!(answer == 42);
        let pid = rt.find_actor("late", |p| furrow::Ok(p.map(|p| p.aid().pid)))?;
        ensure!(pid == Some(late.aid().pid), "{pid:?}");
        Ok(())
    })?;
    Arc::try_unwrap(rt).map_err(|_| anyhow!("runtime still shared"))?.shutdown()?;
    Ok(())
}

#[furrow::remote]
async fn my_name() -> String {
    furrow::local_aid().map(|a| a.name).unwrap_or_default()
}

/// `run_in_actor_with` from sync code names the actor; its failure is
/// reported with that name.
#[furrow_testing::test]
fn run_in_actor_with_names_the_actor_from_sync_code() -> anyhow::Result<()> {
    let rt = Runtime::new(furrow_testing::root_config())?;
    let name = rt.open_nursery(|n| n.run_in_actor_with("named-7", furrow::SpawnOptions::new(), my_name, ()).join())?;
    ensure!(name == "named-7", "{name}");
    let out: Result<(), Error> = rt.open_nursery(|n| {
        let _ = n.run_in_actor_with("refuser-3", furrow::SpawnOptions::new(), refuse, ("no".into(),)).join();
        Ok(())
    });
    let err = out.expect_err("the refusal");
    ensure!(err.as_remote().is_some_and(|r| r.src.name == "refuser-3"), "{err}");
    Ok(())
}
