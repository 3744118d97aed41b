//! The registrar under load: how long registrations take as the table
//! grows, how long lookups take meanwhile, what waiting lookups cost a
//! registration, and the registrar's memory.
//!
//! ```text
//! cargo bench -p furrow-actors --bench registry                 # 100000 entries, 10000 waiters
//! cargo bench -p furrow-actors --bench registry -- 20000 1000   # entries, waiters
//! ```
//!
//! This process is the registrar (a root serving the registry in a
//! temporary socket directory); clients are raw connections speaking the
//! wire protocol, one registering everything (all requests written at
//! once, answers read as they come), one looking a name up in a loop.

use bytes::BytesMut;
use furrow::proto::codec::{self, FrameDecoder};
use furrow::proto::{Aid, Msg, PROTO_VERSION, Payload};
use furrow::{Addr, Config, Discovery, Lookup};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

// The requests as the integration tests write them (one definition).
#[path = "../tests/integration/registry_wire.rs"]
#[allow(dead_code, unreachable_pub)]
mod registry_wire;
use registry_wire::{Info, Query, REGISTRY as NS, Register};

/// A raw client of the registrar (its reading half; the writing half is
/// kept apart, so one task can write while another reads).
struct Client {
    rd: OwnedReadHalf,
    buf: BytesMut,
    me: Aid,
    next_cid: u64,
}

impl Client {
    async fn connect(path: &std::path::Path, name: &str) -> (Client, OwnedWriteHalf) {
        let s = UnixStream::connect(path).await.expect("connect to the registry");
        let (rd, mut wr) = s.into_split();
        let me = Aid::new(name, std::process::id());
        let mut c = Client { rd, buf: BytesMut::new(), me: me.clone(), next_cid: 1 };
        let hello = Msg::Aid {
            name: me.name,
            uuid: me.uuid,
            pid: me.pid,
            proto: PROTO_VERSION,
            spawn_token: None,
            max_dialogs: None,
        };
        wr.write_all(&frame(&hello)).await.expect("hello");
        match c.next().await {
            Msg::Aid { .. } => (c, wr),
            other => panic!("expected Aid, got {other:?}"),
        }
    }

    fn start(&mut self, func: &str, kwargs: Payload) -> (u64, Msg) {
        let cid = self.next_cid;
        self.next_cid += 2;
        (cid, Msg::Start { cid, ns: NS.into(), func: func.into(), kwargs, uid: self.me.clone() })
    }

    async fn next(&mut self) -> Msg {
        let mut dec = FrameDecoder::default();
        loop {
            if let Some(f) = dec.decode(&mut self.buf).expect("frame") {
                return codec::decode_msg(f).expect("message");
            }
            assert!(self.rd.read_buf(&mut self.buf).await.expect("read") > 0, "the registrar hung up");
        }
    }

    /// Read until `n` `Return`s came; the time at each `every`-th.
    async fn returns(&mut self, n: usize, every: usize) -> Vec<Instant> {
        let mut marks = Vec::new();
        let mut got = 0;
        while got < n {
            match self.next().await {
                Msg::StartAck { .. } => {}
                Msg::Return { .. } => {
                    got += 1;
                    if got % every == 0 {
                        marks.push(Instant::now());
                    }
                }
                other => panic!("unexpected answer: {other:?}"),
            }
        }
        marks
    }

    /// One query by name, answered.
    async fn query(&mut self, wr: &mut OwnedWriteHalf, name: &str) -> Duration {
        let (_, start) = self.start("query", Payload::encode(&Query { who: Lookup::from(name) }).expect("encode"));
        let t = Instant::now();
        wr.write_all(&frame(&start)).await.expect("write");
        self.returns(1, 1).await;
        t.elapsed()
    }
}

fn frame(m: &Msg) -> bytes::Bytes {
    codec::encode_to_bytes(m, 1 << 20).expect("encode")
}

/// `count` registrations from `c`, as frames.
fn registrations(c: &mut Client, from: usize, count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in from..from + count {
        let info = Info {
            aid: Aid::new(format!("worker-{}", i % 1000), std::process::id()),
            addrs: vec![Addr::Uds(format!("/run/furrow/worker-{i}.sock").into())],
        };
        let (_, m) = c.start("register", Payload::encode(&Register { info }).expect("encode"));
        out.extend_from_slice(&frame(&m));
    }
    out
}

/// The resident memory of this process, after handing freed heap memory
/// back to the system (so it counts what is live, not what the allocator
/// kept from the burst of requests in flight).
fn rss_mib() -> f64 {
    // SAFETY: malloc_trim only releases free memory of glibc's heap.
    unsafe { libc::malloc_trim(0) };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

async fn bench(path: std::path::PathBuf, entries: usize, waiters: usize) {
    let rss0 = rss_mib();
    let (mut reg, reg_wr) = Client::connect(&path, "bench-registering").await;
    let (mut look, mut look_wr) = Client::connect(&path, "bench-looking").await;

    // 1. `entries` registrations, lookups meanwhile.
    let all = registrations(&mut reg, 0, entries);
    let t0 = Instant::now();
    let writer = tokio::spawn(async move {
        let mut wr = reg_wr;
        wr.write_all(&all).await.expect("write");
        wr
    });
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let looking = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut times = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                times.push(look.query(&mut look_wr, "worker-7").await);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (look, look_wr, times)
        })
    };
    let block = 10_000.min(entries);
    let marks = reg.returns(entries, block).await;
    let took = t0.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut reg_wr = writer.await.expect("writer");
    let (mut look, mut look_wr, mut times) = looking.await.expect("lookups");
    let mut prev = t0;
    let blocks: Vec<String> = marks
        .iter()
        .map(|m| {
            let d = m.duration_since(prev);
            prev = *m;
            format!("{:.2}", d.as_secs_f64())
        })
        .collect();
    times.sort();
    println!("{entries} registrations: {:.2} s; each {block} (s): {}", took.as_secs_f64(), blocks.join(" "));
    println!(
        "lookups by name meanwhile: {} done, median {:.2} ms, slowest {:.2} ms",
        times.len(),
        times.get(times.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1e3),
        times.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
    let rss = rss_mib();
    println!("registrar memory: {:.0} MiB more ({rss:.0} MiB in all)", rss - rss0);

    // 2. What waiting lookups cost a registration: 1000 more without
    //    waiters, then `waiters` lookups waiting for names nobody
    //    registers, then 1000 more.
    let more = 1000;
    let mut timed = async |from: usize| {
        let frames = registrations(&mut reg, from, more);
        let t = Instant::now();
        reg_wr.write_all(&frames).await.expect("write");
        reg.returns(more, more).await;
        t.elapsed()
    };
    let without = timed(entries).await;
    let mut waits = Vec::new();
    for i in 0..waiters {
        let who = Query { who: Lookup::from(format!("nobody-{i}").as_str()) };
        let (_, m) = look.start("wait", Payload::encode(&who).expect("encode"));
        waits.extend_from_slice(&frame(&m));
    }
    look_wr.write_all(&waits).await.expect("write");
    // Every wait acknowledged: all are waiting.
    for _ in 0..waiters {
        look.next().await;
    }
    let with = timed(entries + more).await;
    println!(
        "{more} registrations: {:.1} ms without waiters, {:.1} ms with {waiters} waiting lookups ({:.1}x)",
        without.as_secs_f64() * 1e3,
        with.as_secs_f64() * 1e3,
        with.as_secs_f64() / without.as_secs_f64()
    );
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let entries = args.first().copied().unwrap_or(100_000);
    let waiters = args.get(1).copied().unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("furrow-bench-registry-{}", std::process::id()));
    let config = Config::new("registry-bench").socket_dir(&dir).discovery(Discovery::Serve);
    let path = dir.join("registry.sock");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        furrow::run_root(config, async {
            // The registry is served once the root's discovery settled.
            furrow::list_actors().await?;
            bench(path, entries, waiters).await;
            furrow::Ok(())
        })
        .await
    })
    .expect("runtime")
    .expect("bench");
    let _ = std::fs::remove_dir_all(&dir);
}
