//! Bulk data: 1 MiB byte payloads as call arguments and as stream values,
//! beside the raw Unix-socket throughput measured in the same run.
//!
//! ```text
//! cargo bench -p furrow-actors --bench bulk          # 256 MiB per figure
//! cargo bench -p furrow-actors --bench bulk -- 1024  # MiB per figure
//! FURROW_BENCH_ONLY=stream-bytes,call-bytes cargo bench -p furrow-actors --bench bulk
//! ```
//!
//! `FURROW_BENCH_ONLY` measures only the figures named (`call-bytes`,
//! `call-bytebuf`, `call-vec`, `result-bytes`, `stream-bytes`, `stream-bytebuf`,
//! `stream-vec`, `control`); the others print as 0. For profiling one path.
//!
//! - raw: a child process writes the same number of 1 MiB buffers to a
//!   Unix socket, the parent reads them into one reused buffer (plain tokio,
//!   current-thread runtimes on both sides);
//! - call args: `portal.run(sink, (payload,))` one after another, the
//!   callee returning the length it got; call results: the callee
//!   returning the payload (`furrow::Bytes`) to an argumentless call;
//! - stream: a context callee sends the payloads, the opener receives them.
//!
//! Each furrow figure is measured with `furrow::Bytes` (msgpack `bin`,
//! received without a copy, cloned by reference count), with
//! `serde_bytes::ByteBuf` (`bin` too, but an owned `Vec` underneath: copied
//! out on receipt, and cloned for each call) and with a plain `Vec<u8>`,
//! which serde encodes as an array of integers, one per byte. The bench
//! runs twice, unpinned then pinned to one CPU (see `support/mod.rs`), and
//! each pass alternates raw and furrow for three rounds
//! (`FURROW_BENCH_ROUNDS`), printing each figure's median: bulk transfer on
//! a VM meets episodes in which the raw socket itself slows down fiftyfold.
//!
//! **Control under load:** the round trip of a small call and the time a
//! context's `cancel()` waits for its acknowledgement, on the same channel
//! as a bulk `ByteBuf` stream that is running, beside the same figures on
//! an idle channel: how long a control frame waits behind bulk data.

mod support;

use furrow::Context;
use serde_bytes::ByteBuf;
use std::time::Instant;
use support::Row;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RAW_ENV: &str = "FURROW_BENCH_RAW_BULK";
const MIB: usize = 1 << 20;

#[furrow::remote]
async fn sink_bytes(data: furrow::Bytes) -> usize {
    data.len()
}

#[furrow::remote]
async fn sink_bytebuf(data: ByteBuf) -> usize {
    data.len()
}

#[furrow::remote]
async fn sink_vec(data: Vec<u8>) -> usize {
    data.len()
}

/// The payload as a result: the callee's one copy, cloned (a reference
/// count) for each call.
#[furrow::remote]
async fn source_bytes() -> furrow::Bytes {
    static DATA: std::sync::OnceLock<furrow::Bytes> = std::sync::OnceLock::new();
    DATA.get_or_init(|| furrow::Bytes::from(payload())).clone()
}

/// How `source` sends its values.
const AS_BYTES: u8 = 0;
const AS_BYTEBUF: u8 = 1;
const AS_VEC: u8 = 2;

/// Streams `count` copies of the payload, as `furrow::Bytes`, `ByteBuf`s
/// or `Vec<u8>`s (`how`).
#[furrow::context]
async fn source(ctx: Context, count: usize, how: u8) -> furrow::Result<()> {
    ctx.started(&()).await?;
    let data = payload();
    let as_bin = ByteBuf::from(data.clone());
    let as_bytes = furrow::Bytes::from(data.clone());
    ctx.open_stream(async |s| {
        for _ in 0..count {
            match how {
                AS_BYTES => s.send(&as_bytes).await?,
                AS_BYTEBUF => s.send(&as_bin).await?,
                _ => s.send(&data).await?,
            }
        }
        Ok(())
    })
    .await
}

/// Opens `source` on `p` and receives everything as `T`: the bytes it got.
async fn stream_from<T: serde::de::DeserializeOwned + AsRef<[u8]>>(
    p: &furrow::Portal,
    count: usize,
    how: u8,
) -> furrow::Result<usize> {
    p.open_context(source, (count, how), async |ctx, (): ()| {
        ctx.open_stream(async |s| {
            let mut got = 0;
            while let Some(b) = s.recv::<T>().await? {
                got += b.as_ref().len();
            }
            Ok(got)
        })
        .await
    })
    .await
}

/// Waits for its cancellation (the probe of control latency).
#[furrow::context]
async fn sleeper(ctx: Context) -> furrow::Result<()> {
    ctx.started(&()).await?;
    ctx.cancelled().await;
    Ok(())
}

#[furrow::remote]
async fn tiny(x: u32) -> u32 {
    x + 1
}

/// Control latency on `p`'s channel: `rounds` small calls and `rounds`
/// cancels of a fresh context, each timed, while `busy` says the bulk
/// stream runs (samples taken after it ended are dropped).
async fn control_probes(
    p: &furrow::Portal,
    rounds: usize,
    busy: Option<&std::sync::atomic::AtomicBool>,
) -> furrow::Result<(Vec<std::time::Duration>, Vec<std::time::Duration>)> {
    use std::sync::atomic::Ordering;
    let (mut calls, mut acks) = (Vec::new(), Vec::new());
    for i in 0..rounds as u32 {
        let running = || busy.is_none_or(|b| b.load(Ordering::Acquire));
        let t = Instant::now();
        assert_eq!(p.run(tiny, (i,)).await?, i + 1);
        if running() {
            calls.push(t.elapsed());
        }
        let ack = p
            .open_context(sleeper, (), async |ctx, (): ()| {
                let t = Instant::now();
                ctx.cancel().await?;
                furrow::Ok(t.elapsed())
            })
            .await?;
        if running() {
            acks.push(ack);
        }
    }
    Ok((calls, acks))
}

/// 1 MiB of varied bytes (not zeros: nothing may get them cheaper).
fn payload() -> Vec<u8> {
    (0..MIB).map(|i| (i * 31 % 251) as u8).collect()
}

fn raw_child(spec: &str) {
    let (count, path) = spec.split_once('\n').expect("raw child spec");
    let count: usize = count.parse().expect("count");
    support::raw_runtime().block_on(async move {
        let mut s = tokio::net::UnixStream::connect(path).await.expect("connect");
        let data = payload();
        for _ in 0..count {
            s.write_all(&data).await.expect("write");
        }
    });
}

/// Raw bytes per second over a Unix socket, 1 MiB writes.
async fn raw_rate(count: usize) -> f64 {
    let dir = support::ScratchDir::new("bulk");
    let path = dir.path("bulk.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    let mut child = support::start_raw_child(RAW_ENV, format!("{count}\n{}", path.display()));
    let (mut s, _) = listener.accept().await.expect("accept");
    let mut buf = vec![0u8; MIB];
    let mut got = 0usize;
    let t = Instant::now();
    loop {
        let n = s.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        got += n;
    }
    let rate = got as f64 / t.elapsed().as_secs_f64();
    assert_eq!(got, count * MIB);
    let _ = child.wait().await;
    rate
}

/// Control latency samples: (small call round trips, cancel acks).
type Probes = (Vec<std::time::Duration>, Vec<std::time::Duration>);

struct Furrow {
    result_bytes: f64,
    call_bytes: f64,
    call_bytebuf: f64,
    call_vec: f64,
    stream_bytes: f64,
    stream_bytebuf: f64,
    stream_vec: f64,
    /// Control latency, idle channel then during a bulk stream.
    idle: Probes,
    loaded: Probes,
}

async fn furrow_figures(count: usize) -> furrow::Result<Furrow> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("bench-bulk").await?;
        let data = payload();
        let rate = |t: Instant, count: usize| (count * MIB) as f64 / t.elapsed().as_secs_f64();
        // `Vec<u8>` is some 15 times slower: a tenth as many, so the bench
        // ends in reasonable time.
        let slow = (count / 10).max(4);

        let only = std::env::var("FURROW_BENCH_ONLY").unwrap_or_default();
        let want = |what: &str| only.is_empty() || only.split(',').any(|o| o == what);
        let (mut call_bytes, mut call_bytebuf, mut call_vec) = (0.0, 0.0, 0.0);
        let (mut stream_bytes, mut stream_bytebuf, mut stream_vec) = (0.0, 0.0, 0.0);
        if want("call-bytes") {
            let bytes = furrow::Bytes::from(data.clone());
            assert_eq!(p.run(sink_bytes, (bytes.clone(),)).await?, MIB);
            let t = Instant::now();
            for _ in 0..count {
                assert_eq!(p.run(sink_bytes, (bytes.clone(),)).await?, MIB);
            }
            call_bytes = rate(t, count);
        }

        if want("call-bytebuf") {
            let bb = ByteBuf::from(data.clone());
            assert_eq!(p.run(sink_bytebuf, (bb.clone(),)).await?, MIB);
            let t = Instant::now();
            for _ in 0..count {
                assert_eq!(p.run(sink_bytebuf, (bb.clone(),)).await?, MIB);
            }
            call_bytebuf = rate(t, count);
        }

        let mut result_bytes = 0.0;
        if want("result-bytes") {
            assert_eq!(p.run(source_bytes, ()).await?.len(), MIB);
            let t = Instant::now();
            for _ in 0..count {
                assert_eq!(p.run(source_bytes, ()).await?.len(), MIB);
            }
            result_bytes = rate(t, count);
        }

        if want("call-vec") {
            let t = Instant::now();
            for _ in 0..slow {
                assert_eq!(p.run(sink_vec, (data.clone(),)).await?, MIB);
            }
            call_vec = rate(t, slow);
        }

        if want("stream-bytes") {
            let t = Instant::now();
            assert_eq!(stream_from::<furrow::Bytes>(&p, count, AS_BYTES).await?, count * MIB);
            stream_bytes = rate(t, count);
        }

        if want("stream-bytebuf") {
            let t = Instant::now();
            assert_eq!(stream_from::<ByteBuf>(&p, count, AS_BYTEBUF).await?, count * MIB);
            stream_bytebuf = rate(t, count);
        }

        if want("stream-vec") {
            let t = Instant::now();
            assert_eq!(stream_from::<Vec<u8>>(&p, slow, AS_VEC).await?, slow * MIB);
            stream_vec = rate(t, slow);
        }
        let (idle, loaded) = if want("control") { control(&p, count).await? } else { Default::default() };
        Ok(Furrow {
            result_bytes,
            call_bytes,
            call_bytebuf,
            call_vec,
            stream_bytes,
            stream_bytebuf,
            stream_vec,
            idle,
            loaded,
        })
    })
    .await
}

/// Control latency on `p`, idle then during a bulk stream of `count * 8`
/// MiB (see `control_probes`).
async fn control(p: &furrow::Portal, count: usize) -> furrow::Result<(Probes, Probes)> {
    let idle = control_probes(p, 50, None).await?;
    let busy = std::sync::atomic::AtomicBool::new(true);
    let bulk = async {
        let got = stream_from::<ByteBuf>(p, count * 8, AS_BYTEBUF).await;
        busy.store(false, std::sync::atomic::Ordering::Release);
        got
    };
    let probe = async {
        // Let the stream fill the pipe first.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        control_probes(p, 50, Some(&busy)).await
    };
    let (got, loaded) = tokio::try_join!(bulk, probe)?;
    assert_eq!(got, count * 8 * MIB);
    Ok((idle, loaded))
}

fn measure(count: usize) {
    // Raw and furrow alternate, round after round; each figure is the
    // median of its rounds (see `support::rounds`).
    let rounds = support::rounds();
    let (mut raws, mut all) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        raws.push(if support::raw_wanted() { support::raw_runtime().block_on(raw_rate(count)) } else { 0.0 });
        all.push(furrow::block_on_root(furrow_figures(count)).expect("furrow bench"));
    }
    let raw = support::median_f64(&mut raws);
    let med = |f: fn(&Furrow) -> f64| support::median_f64(&mut all.iter().map(f).collect::<Vec<_>>());
    let gb = |r: f64| r / 1e9;
    support::print_table(
        &format!("bulk: 1 MiB byte payloads, {count} MiB per figure (Vec<u8>: a tenth), median of {rounds} rounds"),
        &[
            Row::rate("call args, furrow::Bytes", gb(raw), gb(med(|f| f.call_bytes)), "GB/s"),
            Row::rate("call args, serde_bytes::ByteBuf", gb(raw), gb(med(|f| f.call_bytebuf)), "GB/s"),
            Row::rate("call args, Vec<u8>", gb(raw), gb(med(|f| f.call_vec)), "GB/s"),
            Row::rate("call results, furrow::Bytes", gb(raw), gb(med(|f| f.result_bytes)), "GB/s"),
            Row::rate("stream values, furrow::Bytes", gb(raw), gb(med(|f| f.stream_bytes)), "GB/s"),
            Row::rate("stream values, serde_bytes::ByteBuf", gb(raw), gb(med(|f| f.stream_bytebuf)), "GB/s"),
            Row::rate("stream values, Vec<u8>", gb(raw), gb(med(|f| f.stream_vec)), "GB/s"),
        ],
    );
    println!("  raw rounds: {}", raws.iter().map(|r| format!("{:.2}", gb(*r))).collect::<Vec<_>>().join(" "));
    // Control latency: every round's samples together.
    let mut f = all.pop().expect("one round at least");
    for r in all {
        f.idle.0.extend(r.idle.0);
        f.idle.1.extend(r.idle.1);
        f.loaded.0.extend(r.loaded.0);
        f.loaded.1.extend(r.loaded.1);
    }
    let show = |what: &str, idle: &mut Vec<std::time::Duration>, loaded: &mut Vec<std::time::Duration>| {
        let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
        if idle.is_empty() {
            return;
        }
        if loaded.is_empty() {
            println!("  {what:<44} idle {:>8.1} µs; no sample while the bulk stream ran", us(support::median(idle)));
            return;
        }
        let (mi, ml) = (support::median(idle), support::median(loaded));
        println!(
            "  {what:<44} idle {:>8.1} µs   during bulk {:>8.1} µs median, {:>8.1} µs max ({} samples)",
            us(mi),
            us(ml),
            us(loaded[loaded.len() - 1]),
            loaded.len()
        );
    };
    println!("control on the same channel as a running bulk stream:");
    show("small call round trip", &mut f.idle.0, &mut f.loaded.0);
    show("context cancel() until acknowledged", &mut f.idle.1, &mut f.loaded.1);
}

fn main() {
    support::main(RAW_ENV, raw_child, 256, measure);
}
