//! How long a supervised service is away after a crash: from a child's
//! SIGKILL to its replacement answering a call, beside spawn-to-serving
//! measured in the same run.
//!
//! ```text
//! cargo bench -p furrow-actors --bench restart          # 100 kills
//! cargo bench -p furrow-actors --bench restart -- 300   # more
//! ```
//!
//! - **spawn to serving**: `start_actor` of a fresh child, which returns
//!   once the child serves (the floor a restart cannot beat: it is a
//!   spawn).
//! - **kill to answering**: a one-for-one supervisor (no backoff, an
//!   intensity that never gives up) with one permanent child; the bench
//!   asks the child its pid, SIGKILLs it, and calls through the
//!   `Supervised` handle until a call answers with another pid. The time
//!   covers the supervisor noticing the ending (the channel closing, the
//!   exit reaped), the new spawn, and the call; a call that reaches the
//!   dead instance fails with its ending and is made again, as a client
//!   would.
//! - the same split: kill to the supervisor's `Restarting` event (how long
//!   noticing takes), and `Restarting` to the new instance's `Started`.

mod support;

use furrow::supervise::{ChildSpec, Event, Strategy, SupervisorOptions, open_supervisor};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[furrow::remote]
async fn own_pid() -> u32 {
    std::process::id()
}

struct Figures {
    spawns: Vec<Duration>,
    answering: Vec<Duration>,
    noticed: Vec<Duration>,
    restarted: Vec<Duration>,
    failed_calls: usize,
}

async fn measure(kills: usize) -> furrow::Result<Figures> {
    // Spawn to serving, as the rpc bench takes it.
    let spawns = furrow::open_nursery(async |n| {
        let mut spawns = Vec::new();
        for i in 0..kills.min(50) {
            let t = Instant::now();
            let q = n.start_actor(format!("fresh-{i}")).await?;
            spawns.push(t.elapsed());
            q.cancel_actor().await?;
        }
        furrow::Ok(spawns)
    })
    .await?;

    let opts = SupervisorOptions::new(Strategy::OneForOne).intensity(u32::MAX, Duration::from_secs(1));
    open_supervisor(opts, async |sup| {
        // Each event with the instant it was received, by a task of its
        // own, so the instants are the events' and not the loop's.
        let seen: Arc<Mutex<Vec<(Instant, Event)>>> = Arc::default();
        let mut events = sup.events();
        let log = seen.clone();
        let collector = tokio::spawn(async move {
            while let Ok(e) = events.recv().await {
                log.lock().expect("event log").push((Instant::now(), e));
            }
        });
        let svc = sup.start(ChildSpec::new("svc")).await?;
        let (mut answering, mut noticed, mut restarted, mut failed_calls) = (Vec::new(), Vec::new(), Vec::new(), 0);
        for round in 1..=kills as u32 {
            let old = svc.run(own_pid, ()).await?;
            let t = Instant::now();
            // SAFETY: kill(2) on the supervised child, alive (it just
            // answered); its instance's nursery reaps it.
            unsafe { libc::kill(old as libc::pid_t, libc::SIGKILL) };
            loop {
                match svc.run(own_pid, ()).await {
                    Ok(pid) if pid != old => break,
                    // Answered by the old instance before the signal
                    // landed: not yet.
                    Ok(_) => {}
                    // Sent to the dead instance before its channel was
                    // seen closed: its ending. Again, as a client would.
                    Err(_) => failed_calls += 1,
                }
            }
            answering.push(t.elapsed());
            // This restart's events, timed against the same kill (the
            // `Started` event is sent before the handle moves to the new
            // instance, so both are in the log by now, or about to be).
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let found = {
                    let log = seen.lock().expect("event log");
                    let at = |want: fn(&Event, u32) -> bool| {
                        log.iter().find(|(_, e)| want(e, round)).map(|(i, _)| i.duration_since(t))
                    };
                    (
                        at(|e, r| matches!(e, Event::Restarting { restarts, .. } if *restarts == r)),
                        at(|e, r| matches!(e, Event::Started { restarts, .. } if *restarts == r)),
                    )
                };
                if let (Some(r), Some(s)) = found {
                    noticed.push(r);
                    restarted.push(s.saturating_sub(r));
                    break;
                }
                assert!(Instant::now() < deadline, "no Restarting and Started events for restart {round}");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        collector.abort();
        Ok(Figures { spawns, answering, noticed, restarted, failed_calls })
    })
    .await
}

fn run(kills: usize) {
    let mut f = furrow::block_on_root(measure(kills.max(2))).expect("restart bench");
    println!("restart bench ({}):", support::pass_name());
    println!("  {:<36} {:>11} {:>11} {:>11}", "figure", "median", "p99", "slowest");
    support::show_latencies("spawn to serving (start_actor)", &mut f.spawns);
    support::show_latencies("SIGKILL to the replacement answering", &mut f.answering);
    support::show_latencies("  SIGKILL to Restarting (noticed)", &mut f.noticed);
    support::show_latencies("  Restarting to Started (the spawn)", &mut f.restarted);
    println!("  calls that reached a dead instance and failed: {}", f.failed_calls);
}

fn main() {
    furrow::enter_child_if_spawned();
    let n = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(100);
    if support::start() {
        run(n);
    }
    support::run_pinned_pass();
}
