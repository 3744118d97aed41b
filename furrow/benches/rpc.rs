//! Calls, spawns and an idle actor's memory, each beside the raw limit
//! measured in the same run.
//!
//! ```text
//! cargo bench -p furrow-actors --bench rpc            # defaults: 20000 round trips
//! cargo bench -p furrow-actors --bench rpc -- 50000   # more
//! ```
//!
//! The raw limits are plain tokio, outside any furrow root, on
//! current-thread runtimes in both processes (the best tokio does for a
//! ping-pong: no wake-up crosses threads):
//!
//! - **call round trip**: two processes exchange a small length-prefixed
//!   frame over a Unix socket, each reading exactly one frame and writing
//!   one back; furrow's figure is `portal.run(add, (a, b))` from a
//!   `block_on_root` root (its default runtime) to a child actor;
//! - **spawn to serving**: the parent starts its own executable, which
//!   builds a runtime, connects back over a Unix socket and writes one
//!   byte; furrow's figure is `start_actor`, which returns once the child
//!   is serving;
//! - **idle RSS**: that raw child, connected and idle, against an idle
//!   furrow actor that has served one call; and the same for their private
//!   memory (what one more actor costs: the pages of the binary and its
//!   libraries, shared by every actor of the program, not counted);
//! - **idle memory in a tree**: 20 of those children (or actors) idle at
//!   once under one parent, and the memory each holds by its proportional
//!   set size (`Pss`: private pages plus its share of the shared ones), the
//!   measure that adds up: the tree's children together hold 20 times it.
//!   Why RSS alone misleads here is in `docs/design.md`, "Idle memory".
//!
//! The bench runs twice, unpinned then pinned to one CPU (see
//! `support/mod.rs`).

mod support;

use std::time::{Duration, Instant};
use support::{Row, ScratchDir, median, quantile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RAW_ENV: &str = "FURROW_BENCH_RAW_RPC";

#[furrow::remote]
async fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Child side of the raw limits: `echo` frames until EOF, or `connect`,
/// say so with one byte and stay connected and idle until EOF.
fn raw_child(spec: &str) {
    let (mode, path) = spec.split_once('\n').expect("raw child spec");
    support::raw_runtime().block_on(async move {
        let mut s = tokio::net::UnixStream::connect(path).await.expect("connect");
        if mode == "connect" {
            s.write_all(&[1]).await.expect("write");
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            return;
        }
        // Header and body are read into, and written from, one buffer: one
        // syscall per direction, the least any framed IPC can do.
        let mut buf = [0u8; 68];
        loop {
            if s.read_exact(&mut buf[..4]).await.is_err() {
                return;
            }
            let n = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            s.read_exact(&mut buf[4..4 + n]).await.expect("read");
            s.write_all(&buf[..4 + n]).await.expect("write");
        }
    });
}

/// The raw call round trip: `rounds` timed, after a tenth as many to warm up.
async fn raw_pingpong(rounds: usize) -> Vec<Duration> {
    let dir = ScratchDir::new("rpc");
    let path = dir.path("echo.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    let mut child = support::start_raw_child(RAW_ENV, format!("echo\n{}", path.display()));
    let (mut s, _) = listener.accept().await.expect("accept");
    // 12-byte body: the size of a small furrow call's payload.
    let frame: [u8; 16] = [12, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    let mut back = [0u8; 16];
    let mut times = Vec::with_capacity(rounds);
    for i in 0..rounds + rounds / 10 {
        let t = Instant::now();
        s.write_all(&frame).await.expect("write");
        s.read_exact(&mut back).await.expect("read");
        if i >= rounds / 10 {
            times.push(t.elapsed());
        }
    }
    drop(s);
    let _ = child.wait().await;
    times
}

/// The raw spawn: `n` children started one after another, each timed from
/// the spawn to its first byte; and the resident set of the last one,
/// connected and idle (resident, private).
async fn raw_spawns(n: usize) -> (Vec<Duration>, (u64, u64)) {
    let dir = ScratchDir::new("spawn");
    let mut times = Vec::with_capacity(n);
    let mut rss = (0, 0);
    for i in 0..n {
        let path = dir.path(&format!("c{i}.sock"));
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let t = Instant::now();
        let mut child = support::start_raw_child(RAW_ENV, format!("connect\n{}", path.display()));
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.expect("the child's byte");
        times.push(t.elapsed());
        if i + 1 == n {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let pid = child.id().expect("running");
            rss = (support::rss_kib(pid), support::private_kib(pid));
        }
        drop(s);
        let _ = child.wait().await;
        let _ = std::fs::remove_file(&path);
    }
    (times, rss)
}

/// How many children (or actors) are idle at once for the tree's memory.
const TREE: usize = 20;

/// The mean proportional set size of `pids`, in KiB.
fn mean_pss(pids: &[u32]) -> u64 {
    pids.iter().map(|&p| support::pss_kib(p)).sum::<u64>() / pids.len().max(1) as u64
}

/// The raw tree: `TREE` raw children connected and idle at once; the mean
/// of their proportional set sizes.
async fn raw_tree() -> u64 {
    let dir = ScratchDir::new("tree");
    let mut kids = Vec::with_capacity(TREE);
    for i in 0..TREE {
        let path = dir.path(&format!("t{i}.sock"));
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let child = support::start_raw_child(RAW_ENV, format!("connect\n{}", path.display()));
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.expect("the child's byte");
        kids.push((child, s));
        let _ = std::fs::remove_file(&path);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pss = mean_pss(&kids.iter().map(|(c, _)| c.id().expect("running")).collect::<Vec<_>>());
    for (mut child, s) in kids {
        drop(s);
        let _ = child.wait().await;
    }
    pss
}

struct Furrow {
    calls: Vec<Duration>,
    spawns: Vec<Duration>,
    tear: Vec<Duration>,
    rss: (u64, u64),
    tree_pss: u64,
}

async fn furrow_figures(rounds: usize) -> furrow::Result<Furrow> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("bench-adder").await?;
        let mut calls = Vec::with_capacity(rounds);
        for i in 0..rounds + rounds / 10 {
            let t = Instant::now();
            let r = p.run(add, (i as i64, 1)).await?;
            let el = t.elapsed();
            assert_eq!(r, i as i64 + 1);
            if i >= rounds / 10 {
                calls.push(el);
            }
        }
        // Spawn-to-serving: start_actor returns once the child is serving.
        let mut spawns = Vec::new();
        let mut tear = Vec::new();
        let mut rss = (0, 0);
        for i in 0..20 {
            let t = Instant::now();
            let q = n.start_actor(format!("spawned-{i}")).await?;
            spawns.push(t.elapsed());
            if i == 19 {
                assert_eq!(q.run(add, (1, 1)).await?, 2);
                tokio::time::sleep(Duration::from_millis(200)).await;
                rss = (support::rss_kib(q.aid().pid), support::private_kib(q.aid().pid));
            }
            let t = Instant::now();
            q.cancel_actor().await?;
            tear.push(t.elapsed());
        }
        // The tree: `TREE` actors idle at once, each having served a call.
        let mut tree = Vec::with_capacity(TREE);
        for i in 0..TREE {
            let q = n.start_actor(format!("idle-{i}")).await?;
            assert_eq!(q.run(add, (i as i64, 1)).await?, i as i64 + 1);
            tree.push(q);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let tree_pss = mean_pss(&tree.iter().map(|q| q.aid().pid).collect::<Vec<_>>());
        for q in tree {
            q.cancel_actor().await?;
        }
        Ok(Furrow { calls, spawns, tear, rss, tree_pss })
    })
    .await
}

fn measure(rounds: usize) {
    // The raw limits first, each on a runtime of its own (unless skipped:
    // then placeholders, printed as skipped).
    let (mut raw_calls, (mut raw_spawn, raw_rss), raw_tree_pss) = if support::raw_wanted() {
        (
            support::raw_runtime().block_on(raw_pingpong(rounds)),
            support::raw_runtime().block_on(raw_spawns(20)),
            support::raw_runtime().block_on(raw_tree()),
        )
    } else {
        (vec![std::time::Duration::ZERO], (vec![std::time::Duration::ZERO], (0, 0)), 0)
    };
    let mut f = furrow::block_on_root(furrow_figures(rounds)).expect("furrow bench");
    let (raw_med, call_med) = (median(&mut raw_calls), median(&mut f.calls));
    support::print_table(
        &format!("calls ({rounds} sequential round trips), spawns (20 sequential), idle memory"),
        &[
            Row::time("call round trip, median", raw_med, call_med),
            Row::time("call round trip, p99", quantile(&raw_calls, 0.99), quantile(&f.calls, 0.99)),
            Row::time("spawn to serving, median", median(&mut raw_spawn), median(&mut f.spawns)),
            Row::time("spawn to serving, slowest", raw_spawn[raw_spawn.len() - 1], f.spawns[f.spawns.len() - 1]),
            Row::size("idle actor RSS (raw: a connected tokio child)", raw_rss.0, f.rss.0),
            Row::size("idle actor, private memory only", raw_rss.1, f.rss.1),
            Row::size(format!("idle actor, one of {TREE} at once (PSS)"), raw_tree_pss, f.tree_pss),
        ],
    );
    let tear = median(&mut f.tear);
    println!("  cancel_actor -> acked and channel closed: {:.2} ms median", tear.as_secs_f64() * 1e3);
}

fn main() {
    support::main(RAW_ENV, raw_child, 20_000, measure);
}
