//! `furrow::pool` (issue 7): ordering, errors that name their input,
//! cancel-on-first-error, keep-going, and SIGKILLed workers replaced.

use anyhow::{Context as _, anyhow, bail, ensure};
use furrow::Error;
use furrow::pool::{OnError, PoolOptions, TaskError, open_pool};
use futures::{StreamExt, TryStreamExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Earlier inputs take longer, so completion order is not input order.
#[furrow::remote]
pub async fn slow_first(i: u64, of: u64) -> (u64, u32) {
    tokio::time::sleep(Duration::from_millis((of - i) * 5)).await;
    (i * 10, std::process::id())
}

/// Fails for `bad`; the others sleep `ms`, then leave a file in `dir`
/// saying they finished (a cancelled task leaves none).
#[furrow::remote]
pub async fn fail_one(i: u64, bad: u64, ms: u64, dir: PathBuf) -> Result<u64, String> {
    if i == bad {
        tokio::time::sleep(Duration::from_millis(50)).await;
        return Err(format!("input {i} is bad"));
    }
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let _ = std::fs::write(dir.join(format!("done-{i}")), b"");
    Ok(i)
}

#[furrow::remote]
pub async fn no_fives(i: u64) -> Result<u64, String> {
    if i.is_multiple_of(5) { Err(format!("{i} is a multiple of five")) } else { Ok(i * 2) }
}

/// The first time input `victim` reaches a worker, that worker SIGKILLs
/// itself (mid-task); `dir/killed` remembers it happened.
#[furrow::remote]
pub async fn die_once(i: u64, victim: u64, dir: PathBuf) -> (u64, u32) {
    let marker = dir.join("killed");
    if i == victim && !marker.exists() {
        let _ = std::fs::write(&marker, std::process::id().to_string());
        // SAFETY: raise(3) on ourselves.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    (i, std::process::id())
}

#[furrow::remote]
pub async fn pid() -> u32 {
    std::process::id()
}

/// A scratch directory for the workers' marker files (not the socket
/// directory: the leak check owns that one).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> anyhow::Result<Scratch> {
        let d = std::env::temp_dir().join(format!("furrow-pool-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d)?;
        Ok(Scratch(d))
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn done_count(&self) -> usize {
        std::fs::read_dir(&self.0).map(|r| r.filter(|e| e.is_ok()).count()).unwrap_or(0)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[furrow_testing::test]
async fn map_yields_in_input_order_and_unordered_as_they_complete() -> anyhow::Result<()> {
    let n = 40;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let opts = PoolOptions::new(3).name("order").progress(move |p| seen2.lock().unwrap().push(p.completed));
    open_pool(opts, async |pool| {
        let out: Vec<(u64, u32)> = pool.map(slow_first, (0..n).map(|i| (i, n))).try_collect().await?;
        let values: Vec<u64> = out.iter().map(|(v, _)| *v).collect();
        ensure!(values == (0..n).map(|i| i * 10).collect::<Vec<_>>(), "out of order: {values:?}");
        let pids: std::collections::BTreeSet<u32> = out.iter().map(|(_, p)| *p).collect();
        ensure!(pids.len() == 3, "expected all 3 workers to work, saw {pids:?}");
        ensure!(!pids.contains(&std::process::id()), "ran in the root");

        type Item = (usize, Result<(u64, u32), TaskError<(u64, u64)>>);
        let unordered: Vec<Item> = pool.map_unordered(slow_first, (0..n).map(|i| (i, n))).indexed().collect().await;
        let indices: Vec<usize> = unordered.iter().map(|(i, _)| *i).collect();
        for (i, r) in &unordered {
            let (v, _) = r.as_ref().map_err(|e| anyhow!("{e}"))?;
            ensure!(*v == *i as u64 * 10, "index {i} paired with {v}");
        }
        let mut sorted = indices.clone();
        sorted.sort();
        ensure!(sorted == (0..n as usize).collect::<Vec<_>>(), "missing or repeated: {indices:?}");
        ensure!(indices != sorted, "unordered came in input order although earlier inputs are slower");
        Ok(())
    })
    .await?;
    let seen = seen.lock().unwrap().clone();
    ensure!(seen.len() == 2 * n as usize, "progress called {} times", seen.len());
    ensure!(seen.windows(2).all(|w| w[0] <= w[1]) && seen.last() == Some(&(2 * n)), "{seen:?}");
    Ok(())
}

#[furrow_testing::test]
async fn the_first_error_names_its_input_and_cancels_the_rest() -> anyhow::Result<()> {
    let scratch = Scratch::new("cancel")?;
    let dir = scratch.path().to_path_buf();
    let started = Instant::now();
    open_pool(PoolOptions::new(2).name("canceller"), async |pool| {
        // Input 1 fails after 50 ms, while input 0 (1.5 s, like every
        // other) still runs on the other worker: the failure comes first,
        // out of order, and input 0 is cancelled.
        let mut s = pool.map(fail_one, (0..50).map(|i| (i, 1, 1500, dir.clone())));
        let first = s.next().await.context("empty stream")?;
        let err = match first {
            Err(e) => e,
            Ok(v) => bail!("expected the failure first, got {v}"),
        };
        // It names its input and where it ran.
        ensure!(err.index == 1 && err.input.0 == 1, "{err}");
        ensure!(err.worker.as_ref().is_some_and(|w| w.name.starts_with("canceller-")), "{err}");
        match &err.error {
            Error::Remote(r) => ensure!(r.message.contains("input 1 is bad"), "{r:?}"),
            other => bail!("expected a remote error, got {other:?}"),
        }
        ensure!(err.to_string().starts_with("task #1 (input (1, 1, 1500, "), "{err}");
        // `?` gives furrow's error, still naming the input.
        let as_furrow: Error = err.into();
        ensure!(matches!(&as_furrow, Error::Task { index: 1, input, .. } if input.starts_with("(1, 1, 1500")));
        // Then the stream ends: the rest were cancelled, not awaited.
        ensure!(s.next().await.is_none(), "the stream went on after the first error");
        let started_tasks = pool.progress().started;
        ensure!(started_tasks < 10, "took {started_tasks} inputs although only 2 workers ran");
        Ok(())
    })
    .await?;
    // Not waited for: none of the tasks that were running had finished
    // when the pool returned (each leaves a file after 1.5 s of work), and
    // the pool did return (a bound for hangs only: a bound close to the
    // tasks' 1.5 s flaked on a loaded machine and said less).
    ensure!(scratch.done_count() == 0, "the pool waited for {} task(s) to finish", scratch.done_count());
    ensure!(started.elapsed() < Duration::from_secs(20), "hung: {:?}", started.elapsed());
    // The tasks that were running were cancelled in their workers too: none
    // finished (each would have left a file after 1.5 s).
    tokio::time::sleep(Duration::from_millis(2000)).await;
    ensure!(scratch.done_count() == 0, "{} cancelled task(s) ran to the end", scratch.done_count());
    Ok(())
}

#[furrow_testing::test]
async fn keep_going_yields_every_result_and_every_error_in_order() -> anyhow::Result<()> {
    let opts = PoolOptions::new(2).on_error(OnError::KeepGoing);
    open_pool(opts, async |pool| {
        let all: Vec<Result<u64, TaskError<(u64,)>>> = pool.map(no_fives, (0..20).map(|i| (i,))).collect().await;
        ensure!(all.len() == 20);
        for (i, r) in all.iter().enumerate() {
            match r {
                Ok(v) => ensure!(i % 5 != 0 && *v == i as u64 * 2, "#{i}: {v}"),
                Err(e) => ensure!(i % 5 == 0 && e.index == i && e.input == (i as u64,), "#{i}: {e}"),
            }
        }
        ensure!(pool.progress().failed == 4 && pool.progress().completed == 16, "{:?}", pool.progress());
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn a_sigkilled_worker_is_replaced_and_its_task_retried() -> anyhow::Result<()> {
    let scratch = Scratch::new("retry")?;
    let dir = scratch.path().to_path_buf();
    let opts = PoolOptions::new(2).name("mortal").retries_on_worker_death(1);
    let killed = open_pool(opts, async |pool| {
        let before: Vec<u32> = pool.workers().iter().map(|p| p.aid().pid).collect();
        let out: Vec<(u64, u32)> = pool.map(die_once, (0..10).map(|i| (i, 4, dir.clone()))).try_collect().await?;
        ensure!(out.iter().map(|(i, _)| *i).collect::<Vec<_>>() == (0..10).collect::<Vec<_>>(), "{out:?}");
        let killed: u32 = std::fs::read_to_string(dir.join("killed"))?.parse()?;
        ensure!(before.contains(&killed), "the victim {killed} was not one of {before:?}");
        let p = pool.progress();
        ensure!(p.replaced == 1 && p.retried == 1 && p.failed == 0, "{p:?}");
        let after: Vec<u32> = pool.workers().iter().map(|p| p.aid().pid).collect();
        ensure!(!after.contains(&killed) && after.len() == 2, "not replaced: {after:?}");
        // The replacement works.
        let fresh: Vec<u32> = futures::future::try_join_all((0..4).map(|_| pool.submit(pid, ())))
            .await
            .map_err(|e| anyhow!("{}", e.error))?;
        ensure!(fresh.iter().all(|p| after.contains(p)), "{fresh:?} vs {after:?}");
        Ok(killed)
    })
    .await?;
    furrow_testing::wait_gone(&[killed], Duration::from_secs(2)).map_err(|e| anyhow!(e))?;
    Ok(())
}

#[furrow_testing::test]
async fn without_retries_a_workers_death_fails_its_task_with_the_exit_status() -> anyhow::Result<()> {
    let scratch = Scratch::new("noretry")?;
    let dir = scratch.path().to_path_buf();
    let opts = PoolOptions::new(2).name("mortal").on_error(OnError::KeepGoing);
    open_pool(opts, async |pool| {
        let all: Vec<_> = pool.map(die_once, (0..6).map(|i| (i, 2, dir.clone()))).collect().await;
        for (i, r) in all.iter().enumerate() {
            match (i, r) {
                (2, Err(e)) => match &e.error {
                    Error::ActorExited { actor, status, .. } => {
                        ensure!(actor.name.starts_with("mortal-") && status.contains("SIGKILL"), "{e}")
                    }
                    other => bail!("expected the worker's death, got {other:?}"),
                },
                (2, Ok(v)) => bail!("the killed task succeeded: {v:?}"),
                (_, Ok((v, _))) => ensure!(*v == i as u64),
                (_, Err(e)) => bail!("#{i} failed: {e}"),
            }
        }
        ensure!(pool.progress().replaced == 1, "{:?}", pool.progress());
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn a_worker_killed_from_outside_while_idle_is_replaced_on_next_use() -> anyhow::Result<()> {
    let calls = Arc::new(AtomicU64::new(0));
    let calls2 = calls.clone();
    let opts = PoolOptions::new(2).name("idle").progress(move |_| {
        calls2.fetch_add(1, Ordering::Relaxed);
    });
    open_pool(opts, async |pool| {
        let victim = pool.workers()[0].aid().pid;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(victim as i32, libc::SIGKILL) };
        // (Not `wait_gone`: it would reap our own child, which is the
        // nursery's job.) Its channel is seen closed once the reader hears
        // the EOF.
        let dead = pool.workers()[0].clone();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !dead.is_closed() {
            ensure!(Instant::now() < deadline, "the dead worker's channel is still open");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // No task was on it: nothing fails, nothing is retried.
        let out: Vec<u32> = pool.map(pid, (0..8).map(|_| ())).try_collect().await?;
        ensure!(!out.contains(&victim), "ran on the dead worker: {out:?}");
        let p = pool.progress();
        ensure!(p.failed == 0 && p.retried == 0 && p.completed == 8, "{p:?}");
        Ok(())
    })
    .await?;
    ensure!(calls.load(Ordering::Relaxed) == 8);
    Ok(())
}
