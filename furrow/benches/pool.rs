//! `furrow::pool` against the same work done serially in one process.
//!
//! ```text
//! cargo bench -p furrow-actors --bench pool
//! ```
//!
//! Two workloads, each on a pool of 2 workers (this is a 2-core reference
//! machine) and serially in the root:
//!
//! - **10,000 tiny tasks** (`x + 1`): the pool's per-task overhead, a
//!   cross-process round trip, against a local function call. Measured with
//!   1 task in flight per worker (the default) and with 8, from async code
//!   and through the blocking API's iterator.
//! - **A CPU-bound map**: 64 tasks of about 20 ms of arithmetic each
//!   (counting primes by trial division): the speed-up 2 processes give.
//!
//! Every result is checked against the serial answer.

use furrow::pool::{PoolOptions, open_pool};
use futures::TryStreamExt;
use std::time::{Duration, Instant};

#[furrow::remote]
async fn plus_one(x: u64) -> u64 {
    x + 1
}

/// Primes in `[from, from + len)` by trial division: deliberately plain
/// CPU work, the same code in the workers and in the serial baseline.
fn primes_in(from: u64, len: u64) -> u64 {
    (from..from + len).filter(|&n| n > 1 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)).count() as u64
}

#[furrow::remote]
async fn count_primes(from: u64, len: u64) -> u64 {
    primes_in(from, len)
}

const TINY: u64 = 10_000;
const CPU_TASKS: u64 = 64;

/// Chunk size giving about 20 ms of work per task on the reference machine.
const CHUNK: u64 = 60_000;

fn chunk(i: u64) -> (u64, u64) {
    (1_000_000 + i * CHUNK, CHUNK)
}

fn rate(n: u64, d: Duration) -> String {
    format!("{:>10.0} tasks/s", n as f64 / d.as_secs_f64())
}

fn main() {
    furrow::enter_child_if_spawned();
    // Serial baselines, in this process, before anything else runs.
    let t = Instant::now();
    let serial_tiny: u64 = (0..TINY).map(|x| std::hint::black_box(x) + 1).sum();
    let serial_tiny_t = t.elapsed();
    let t = Instant::now();
    let serial_cpu: Vec<u64> = (0..CPU_TASKS).map(|i| primes_in(chunk(i).0, chunk(i).1)).collect();
    let serial_cpu_t = t.elapsed();

    let (tiny1, tiny8, cpu) = furrow::block_on_root(async {
        let run_tiny = async |k: usize| -> furrow::Result<Duration> {
            open_pool(PoolOptions::new(2).name("tiny").in_flight_per_worker(k), async |pool| {
                // Warm-up: one task per worker.
                let _: Vec<u64> = pool.map(plus_one, (0..4).map(|x| (x,))).try_collect().await?;
                let t = Instant::now();
                let out: Vec<u64> = pool.map(plus_one, (0..TINY).map(|x| (x,))).try_collect().await?;
                let el = t.elapsed();
                assert_eq!(out.iter().sum::<u64>(), serial_tiny);
                Ok(el)
            })
            .await
        };
        let tiny1 = run_tiny(1).await?;
        let tiny8 = run_tiny(8).await?;
        let cpu = open_pool(PoolOptions::new(2).name("cpu"), async |pool| {
            let _: Vec<u64> = pool.map(plus_one, (0..4).map(|x| (x,))).try_collect().await?;
            let t = Instant::now();
            let out: Vec<u64> = pool.map(count_primes, (0..CPU_TASKS).map(chunk)).try_collect().await?;
            let el = t.elapsed();
            assert_eq!(out, serial_cpu);
            furrow::Ok(el)
        })
        .await?;
        furrow::Ok((tiny1, tiny8, cpu))
    })
    .expect("pool bench");

    // The blocking API's iterator on the same tiny tasks (its own root,
    // after the async one has shut down).
    let rt = furrow::blocking::Runtime::new(furrow::Config::new("pool-bench")).expect("runtime");
    let blocking8 = rt
        .open_pool(PoolOptions::new(2).name("tiny").in_flight_per_worker(8), |pool| {
            let _ = pool.map(plus_one, (0..4).map(|x| (x,)))?.count();
            let t = Instant::now();
            let sum: u64 = pool.map(plus_one, (0..TINY).map(|x| (x,)))?.map(|r| r.expect("task")).sum();
            let el = t.elapsed();
            assert_eq!(sum, serial_tiny);
            furrow::Ok(el)
        })
        .expect("blocking pool");
    rt.shutdown().expect("shutdown");

    println!("pool bench: 2 workers ({} CPUs here)", std::thread::available_parallelism().map_or(0, usize::from));
    println!();
    println!("10,000 tiny tasks (x + 1):");
    println!(
        "  serial, in-process          {:>9.3} ms  {}",
        serial_tiny_t.as_secs_f64() * 1e3,
        rate(TINY, serial_tiny_t)
    );
    println!("  pool, 1 in flight/worker    {:>9.1} ms  {}", tiny1.as_secs_f64() * 1e3, rate(TINY, tiny1));
    println!("  pool, 8 in flight/worker    {:>9.1} ms  {}", tiny8.as_secs_f64() * 1e3, rate(TINY, tiny8));
    println!("  blocking API, 8 in flight   {:>9.1} ms  {}", blocking8.as_secs_f64() * 1e3, rate(TINY, blocking8));
    println!();
    println!("CPU-bound map ({CPU_TASKS} tasks, primes in {CHUNK}-number chunks):");
    println!("  serial, in-process          {:>9.1} ms", serial_cpu_t.as_secs_f64() * 1e3);
    println!(
        "  pool, 2 workers             {:>9.1} ms  speed-up {:.2}x",
        cpu.as_secs_f64() * 1e3,
        serial_cpu_t.as_secs_f64() / cpu.as_secs_f64()
    );
}
