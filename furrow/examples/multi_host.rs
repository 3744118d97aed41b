//! A parallel job spread over several hosts through ssh.
//!
//! ```text
//! sudo cargo run --example multi_host -- [HOSTS] [N]
//! ```
//!
//! The "hosts" are made on this machine, as the tests make them: each is a
//! real OpenSSH server (`sshd`) in a network namespace of its own, with a
//! host name of its own (a UTS namespace), reached over a veth pair, with
//! throwaway keys (`furrow_testing::ssh::SshHost`). So it needs root and
//! sshd; without them it says so on one line and exits 1. On real hosts,
//! the same code takes `Launcher::ssh("gpu3")` and your ssh config.
//!
//! The root starts one worker per host over ssh (`SpawnOptions::launcher`),
//! each connecting back over TCP to the address the root listens on for
//! that host (`connect_back`). The workers then pull slices of the range
//! from one queue, so a faster host does more, and each slice says which
//! host counted it. When the nursery ends, every worker on every host has
//! been ended, and nothing is left running anywhere.

use furrow::{Addr, Config, SpawnOptions};
use furrow_testing::ssh::SshHost;
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

/// What a worker reports for one slice.
#[derive(serde::Serialize, serde::Deserialize)]
struct Done {
    primes: u64,
    host: String,
    pid: u32,
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

/// Runs in a worker, on its host: counts the primes in `[lo, hi)` and says
/// where it ran (its host name, as its kernel gives it).
#[furrow::remote]
async fn count_primes(lo: u64, hi: u64) -> anyhow::Result<Done> {
    let primes = tokio::task::spawn_blocking(move || (lo..hi).filter(|&k| is_prime(k)).count() as u64).await?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")?.trim().to_owned();
    Ok(Done { primes, host, pid: std::process::id() })
}

fn main() -> anyhow::Result<()> {
    // In a worker (started over ssh) this serves the root and never
    // returns.
    furrow::enter_child_if_spawned();
    let mut args = std::env::args().skip(1);
    let hosts: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3).max(1);
    let n: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3_000_000);
    // The hosts first: they outlive the root (dropped last), and a machine
    // that cannot make them is told so in one line.
    let mut far = Vec::new();
    for _ in 0..hosts {
        match SshHost::start() {
            Ok(h) => far.push(h),
            Err(why) => {
                eprintln!("multi_host: cannot make a far host here: {why}");
                std::process::exit(1);
            }
        }
    }
    // The root listens on this side of each host's link: that is the
    // address each host's worker connects back to.
    let cfg = Config::new("multi_host").bind(far.iter().map(SshHost::bind_addr));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(furrow::run_root(cfg, run(&far, n)))?
}

async fn run(far: &[SshHost], n: u64) -> anyhow::Result<()> {
    let listening = furrow::local_addrs()?;
    println!("counting primes below {n} on {} hosts, one worker each, over ssh", far.len());
    let start = Instant::now();
    let slice = 100_000;
    let queue = std::sync::Mutex::new(
        (0..n.div_ceil(slice)).map(|i| (i * slice, ((i + 1) * slice).min(n))).collect::<VecDeque<_>>(),
    );
    let by_host = furrow::open_nursery(async |nursery| {
        let workers = far.iter().enumerate().map(|(i, host)| {
            let queue = &queue;
            let listening = &listening;
            async move {
                // The port the root got for this host's address.
                let back = listening
                    .iter()
                    .find(|a| matches!(a, Addr::Tcp(hp) if hp.starts_with(&format!("{}:", host.near_addr()))))
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("the root does not listen on {}", host.near_addr()))?;
                let t = Instant::now();
                let opts = SpawnOptions::new().launcher(host.launcher()).connect_back(back);
                let worker = nursery.start_actor_with(format!("worker-{i}"), opts).await?;
                println!(
                    "  worker-{i} serving on {} (pid {}) after {:.0} ms",
                    host.hostname(),
                    worker.aid().pid,
                    t.elapsed().as_secs_f64() * 1e3
                );
                let mut done = Vec::new();
                loop {
                    // A std mutex, held only to pop: never across an await.
                    let next = queue.lock().map_err(|_| anyhow::anyhow!("queue poisoned"))?.pop_front();
                    let Some((lo, hi)) = next else { break };
                    let d = worker.run(count_primes, (lo, hi)).await?;
                    println!("    [{lo:>8}, {hi:>8})  {:>5} primes  on {} (pid {})", d.primes, d.host, d.pid);
                    done.push(d);
                }
                anyhow::Ok(done)
            }
        });
        let all = futures::future::try_join_all(workers).await?;
        let mut by_host: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for d in all.into_iter().flatten() {
            let e = by_host.entry(d.host).or_default();
            e.0 += 1;
            e.1 += d.primes;
        }
        anyhow::Ok(by_host)
    })
    .await?;
    for (host, (slices, primes)) in &by_host {
        println!("  {host}: {slices} slices, {primes} primes");
    }
    let total: u64 = by_host.values().map(|(_, p)| p).sum();
    println!(
        "total: {total} primes below {n} in {:.2} s (start over ssh, work and teardown on every host included)",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
