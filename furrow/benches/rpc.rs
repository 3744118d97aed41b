//! `portal.run` round-trip latency and spawn-to-serving time, next to a raw
//! UDS ping-pong between two processes measured in the same run.
//!
//! ```text
//! cargo bench -p furrow --bench rpc            # defaults: 20000 round trips
//! cargo bench -p furrow --bench rpc -- 50000   # more
//! ```
//!
//! The raw baseline is two tokio processes exchanging a small
//! length-prefixed frame over a Unix socket, each side reading exactly
//! one frame and writing one back: the floor any IPC on tokio pays. It is
//! measured on both a current-thread and a multi-thread runtime (furrow
//! actors use the latter); the faster is the reference.

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RAW_ENV: &str = "FURROW_BENCH_RAW_ECHO";

#[furrow::remote]
async fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn pct(v: &[Duration], p: f64) -> Duration {
    v[((v.len() as f64 - 1.0) * p) as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Child side of the raw baseline: echo frames until EOF.
fn raw_echo_child(path: String, multi: bool) {
    let rt = if multi {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    }
    .expect("runtime");
    rt.block_on(async move {
        let mut s = tokio::net::UnixStream::connect(&path).await.expect("connect");
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

/// Parent side of the raw baseline.
async fn raw_pingpong(rounds: usize, multi: bool) -> Vec<Duration> {
    let dir = std::env::temp_dir().join(format!("furrow-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(format!("raw-{multi}.sock"));
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    let mut child = tokio::process::Command::new(std::env::current_exe().expect("exe"))
        .env(RAW_ENV, format!("{}\n{multi}", path.display()))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
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
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir);
    times
}

fn main() {
    furrow::enter_child_if_spawned();
    if let Ok(v) = std::env::var(RAW_ENV) {
        let (path, multi) = v.split_once('\n').expect("raw env");
        raw_echo_child(path.to_owned(), multi == "true");
        return;
    }
    // `cargo bench` passes `--bench`; the first number given is the round count.
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(20_000);
    furrow::block_on_root(async move {
        let mut raw_ct = raw_pingpong(rounds, false).await;
        let mut raw_mt = raw_pingpong(rounds, true).await;
        let (raw_ct_med, raw_mt_med) = (median(&mut raw_ct), median(&mut raw_mt));
        let raw_best = raw_ct_med.min(raw_mt_med);

        let (calls, spawns, spawn_tear) = furrow::open_nursery(async |n| {
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
            for i in 0..20 {
                let t = Instant::now();
                let q = n.start_actor(format!("spawned-{i}")).await?;
                spawns.push(t.elapsed());
                let t = Instant::now();
                q.cancel_actor().await?;
                tear.push(t.elapsed());
            }
            Ok::<_, furrow::Error>((calls, spawns, tear))
        })
        .await
        .expect("furrow bench");
        let (mut calls, mut spawns, mut spawn_tear) = (calls, spawns, spawn_tear);
        let call_med = median(&mut calls);
        let spawn_med = median(&mut spawns);
        let tear_med = median(&mut spawn_tear);
        println!("round trip over UDS, {rounds} sequential round trips each (median, p99):");
        println!(
            "  raw tokio UDS ping-pong, current-thread : {:>7.1} µs  p99 {:>7.1} µs",
            us(raw_ct_med),
            us(pct(&raw_ct, 0.99))
        );
        println!(
            "  raw tokio UDS ping-pong, multi-thread   : {:>7.1} µs  p99 {:>7.1} µs",
            us(raw_mt_med),
            us(pct(&raw_mt, 0.99))
        );
        println!(
            "  furrow portal.run(add, (a, b))          : {:>7.1} µs  p99 {:>7.1} µs",
            us(call_med),
            us(pct(&calls, 0.99))
        );
        println!(
            "  ratio furrow / best raw                 : {:>7.2}x",
            call_med.as_secs_f64() / raw_best.as_secs_f64()
        );
        println!("actor lifecycle, 20 sequential actors (median, max):");
        println!(
            "  start_actor -> serving                  : {:>7.2} ms  max {:>6.2} ms",
            spawn_med.as_secs_f64() * 1e3,
            spawns.last().map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0)
        );
        println!(
            "  cancel_actor -> acked and channel closed: {:>7.2} ms  max {:>6.2} ms",
            tear_med.as_secs_f64() * 1e3,
            spawn_tear.last().map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0)
        );
    });
}
