//! A service that stays up while its actors are killed: a cache and a
//! worker under a one-for-one supervisor, taking steady requests, while
//! a "chaos monkey" SIGKILLs one of them every two seconds.
//!
//! ```text
//! cargo run --example supervised_service          # Ctrl-C stops it
//! cargo run --example supervised_service -- 10    # stops by itself after 10 s
//! cargo run -p furrow-cli -- tree --watch         # from another terminal: ↻N climbs
//! ```
//!
//! The tree:
//!
//! ```text
//! supervised_service     sends a request every 20 ms; prints the supervisor's events
//! ├─ cache               remembers answers (in memory: a restart empties it)
//! └─ worker              computes them (the number of primes below n)
//! ```
//!
//! Each request asks the cache, and on a miss the worker, then stores the
//! answer in the cache. A request in flight when its actor is killed fails
//! with how that instance ended (furrow never retries a call: the callee
//! may have done part of the work); the next request waits for the new
//! instance. At the end it prints how many requests were answered, how
//! many failed, and each child's restarts.

use furrow::supervise::{ChildSpec, Event, Restart, Strategy, SupervisorOptions, open_supervisor};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

static CACHE: Mutex<Option<HashMap<u64, u64>>> = Mutex::new(None);

/// The cache's lookup.
#[furrow::remote]
async fn get(n: u64) -> Option<u64> {
    CACHE.lock().ok()?.as_ref()?.get(&n).copied()
}

/// The cache's store; returns how many answers it holds.
#[furrow::remote]
async fn put(n: u64, primes: u64) -> usize {
    match CACHE.lock() {
        Ok(mut c) => {
            let map = c.get_or_insert_with(HashMap::new);
            map.insert(n, primes);
            map.len()
        }
        Err(_) => 0,
    }
}

/// The worker's job: how many primes are below `n`.
#[furrow::remote]
async fn primes_below(n: u64) -> u64 {
    (2..n).filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0)).count() as u64
}

#[furrow::remote]
async fn own_pid() -> u32 {
    std::process::id()
}

#[furrow::main]
async fn main() -> anyhow::Result<()> {
    let stop_after: Option<u64> = std::env::args().nth(1).map(|s| s.parse()).transpose()?;
    let opts = SupervisorOptions::new(Strategy::OneForOne)
        // A kill every 2 s is 5 restarts in 10 s: within this budget.
        .intensity(10, Duration::from_secs(10))
        .backoff(Duration::from_millis(100));
    let outcome = open_supervisor(opts, async |sup| {
        let mut events = sup.events();
        tokio::spawn(async move {
            while let Ok(e) = events.recv().await {
                match e {
                    Event::Started { name, aid, restarts } if restarts > 0 => {
                        println!("  [supervisor] {name} is back (pid {}, restart {restarts})", aid.pid);
                    }
                    Event::Ended { name, how, .. } => println!("  [supervisor] {name} ended: {how}"),
                    _ => {}
                }
            }
        });
        let cache = sup.start(ChildSpec::new("cache").restart(Restart::Permanent)).await?;
        let worker = sup.start(ChildSpec::new("worker").restart(Restart::Permanent)).await?;
        println!("supervised_service: serving (Ctrl-C to stop); watch it with:");
        println!("  cargo run -p furrow-cli -- tree --watch");

        let deadline = stop_after.map(|secs| tokio::time::Instant::now() + Duration::from_secs(secs));
        let mut requests = tokio::time::interval(Duration::from_millis(20));
        let mut monkey = tokio::time::interval(Duration::from_secs(2));
        monkey.tick().await; // the first tick is now: let it serve first
        let (mut answered, mut failed, mut hits, mut victim) = (0u64, 0u64, 0u64, 0usize);
        loop {
            tokio::select! {
                _ = requests.tick() => {
                    let n = 20_000 + (answered + failed) % 50 * 1_000;
                    let answer = async {
                        if let Some(p) = cache.run(get, (n,)).await? {
                            return furrow::Ok((p, true));
                        }
                        let p = worker.run(primes_below, (n,)).await?;
                        cache.run(put, (n, p)).await?;
                        Ok((p, false))
                    };
                    match answer.await {
                        Ok((_, hit)) => {
                            answered += 1;
                            hits += u64::from(hit);
                        }
                        Err(e) => {
                            failed += 1;
                            println!("  request for n={n} failed: {e}");
                        }
                    }
                }
                _ = monkey.tick() => {
                    let target = [&cache, &worker][victim % 2];
                    victim += 1;
                    if let Ok(pid) = target.run(own_pid, ()).await {
                        println!("chaos monkey: SIGKILL {} (pid {pid})", target.name());
                        // SAFETY: kill(2) on a child actor of this program,
                        // alive (it just answered); its supervisor reaps it.
                        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                    }
                }
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                break;
            }
        }
        println!(
            "supervised_service: {answered} requests answered ({hits} from the cache), {failed} failed; \
             restarts: cache {}, worker {}",
            cache.restarts(),
            worker.restarts()
        );
        Ok(())
    })
    .await;
    match outcome {
        Ok(()) => println!("supervised_service: done"),
        // Ctrl-C (or SIGTERM) cancelled the tree: the usual way it ends.
        Err(furrow::Error::ActorCancelled { reason, .. }) => println!("supervised_service: stopped ({reason})"),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
