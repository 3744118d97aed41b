//! Count the primes below N in parallel, in worker *processes*.
//!
//! ```text
//! cargo run --release --example primes -- [N] [WORKERS]
//! ```
//!
//! The root starts WORKERS child actors (this same binary, re-executed in
//! child mode by `#[furrow::main]`), gives each a slice of the range, and
//! collects what each one did. When the nursery ends, every worker has been
//! cancelled and reaped.

use std::time::Instant;

/// What one worker reports back.
#[derive(serde::Serialize, serde::Deserialize)]
struct Report {
    primes: u64,
    pid: u32,
    millis: u128,
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// Runs inside a worker actor. CPU-bound work goes to a blocking thread so
/// the actor stays responsive (to a cancel request, for one).
#[furrow::remote]
async fn count_primes(lo: u64, hi: u64) -> anyhow::Result<Report> {
    let t = Instant::now();
    let primes = tokio::task::spawn_blocking(move || (lo..hi).filter(|&k| is_prime(k)).count() as u64).await?;
    Ok(Report { primes, pid: std::process::id(), millis: t.elapsed().as_millis() })
}

#[furrow::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2_000_000);
    let workers: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(4).max(1);
    println!("counting primes below {n} with {workers} worker actors (one process each)");
    let start = Instant::now();

    let total = furrow::open_nursery(async |nursery| {
        let chunk = n.div_ceil(workers);
        let jobs = (0..workers).map(|i| async move {
            let (lo, hi) = (i * chunk, ((i + 1) * chunk).min(n));
            let t = Instant::now();
            let worker = nursery.start_actor(format!("worker-{i}")).await?;
            let spawned = t.elapsed();
            let report = worker.run(count_primes, (lo, hi)).await?;
            println!(
                "  {:<9} pid {:>7}  [{lo:>9}, {hi:>9})  {:>7} primes  in {:>5} ms  (started in {:.1} ms)",
                worker.aid().name,
                report.pid,
                report.primes,
                report.millis,
                spawned.as_secs_f64() * 1e3,
            );
            anyhow::Ok(report.primes)
        });
        let counts = futures::future::try_join_all(jobs).await?;
        anyhow::Ok(counts.iter().sum::<u64>())
    })
    .await?;

    println!(
        "total: {total} primes below {n} in {:.3} s ({workers} workers; start, work and teardown included)",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
