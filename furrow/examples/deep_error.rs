//! An error deep in a tree reaches the root, and the whole tree ends.
//!
//! ```text
//! cargo run --release --example deep_error            # once, explained
//! cargo run --release --example deep_error -- 20      # 20 runs: median timing
//! ```
//!
//! root → middle → leaf: the leaf fails. The middle's nursery cancels its
//! other children and passes the error up; the root's nursery does the same.
//! The root reports the error with the path it travelled, then the time
//! from the leaf's failure to the moment every process of the tree was
//! reaped.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// The leaf's error carries the instant it happened.
#[derive(Debug, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("the leaf failed on purpose")]
struct LeafFailed {
    at_ns: u128,
}

#[furrow::remote]
async fn leaf_work() -> Result<(), LeafFailed> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    Err(LeafFailed { at_ns: now_ns() })
}

#[furrow::remote]
async fn idle() {
    std::future::pending::<()>().await
}

/// The middle of the tree: a failing leaf and two idle siblings.
#[furrow::remote]
async fn middle_work() -> furrow::Result<()> {
    furrow::open_nursery(async |n| {
        drop(n.run_in_actor(idle, ()));
        drop(n.run_in_actor(idle, ()));
        n.run_in_actor(leaf_work, ()).await
    })
    .await
}

async fn one_run(explain: bool) -> anyhow::Result<Duration> {
    let r = furrow::open_nursery(async |n| {
        drop(n.run_in_actor(idle, ()));
        n.run_in_actor(middle_work, ()).await
    })
    .await;
    let reaped = now_ns();
    let err = r.expect_err("the leaf fails");
    let remote = err.as_remote().ok_or_else(|| anyhow::anyhow!("unexpected error {err}"))?;
    let leaf: LeafFailed = remote.downcast().ok_or_else(|| anyhow::anyhow!("not the leaf's error: {err}"))?;
    let took = Duration::from_nanos((reaped - leaf.at_ns) as u64);
    if explain {
        println!("the root received: {err}");
        let path: Vec<String> = remote.relay_path.iter().map(|a| a.to_string()).collect();
        println!("  raised in {} and relayed through: {}", remote.src, path.join(" → "));
        println!("  leaf error to all 6 processes of the tree reaped: {:.1} ms", took.as_secs_f64() * 1e3);
    }
    Ok(took)
}

#[furrow::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let mut times = Vec::new();
    for i in 0..runs {
        times.push(one_run(i == 0).await?);
    }
    if runs > 1 {
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{runs} runs, leaf error to whole depth-3 tree reaped: median {:.1} ms, min {:.1} ms, max {:.1} ms",
            ms(times[runs / 2]),
            ms(times[0]),
            ms(times[runs - 1])
        );
    }
    Ok(())
}
