//! Stream throughput and echo round trip, next to raw UDS figures measured
//! in the same run.
//!
//! ```text
//! cargo bench -p furrow-actors --bench stream            # 1,000,000 messages one way
//! cargo bench -p furrow-actors --bench stream -- 3000000
//! ```
//!
//! - raw one-way: a child process writes N length-prefixed 12-byte frames
//!   to a Unix socket, either one `write` per frame (unbatched) or packed
//!   into 64 KiB writes (batched); the parent reads them and splits them
//!   into frames (no message decoding);
//! - furrow one-way: a context callee `send`s N `u64`s; the opener `recv`s
//!   and decodes them all;
//! - echo: a raw ping-pong of one frame, against a furrow stream where the
//!   callee sends back each message it receives.
//!
//! The raw sides run on plain tokio current-thread runtimes, outside any
//! furrow root. The bench runs twice, unpinned then pinned to one CPU (see
//! `support/mod.rs`). In each pass the one-way figures alternate, raw
//! batched then furrow, for three rounds (`FURROW_BENCH_ROUNDS`), and the
//! table shows each one's median and its ratio, then every round's
//! figures: a one-way figure takes a tenth of a second, and on a shared
//! VM either side can fall into an episode of the machine's.

mod support;

use furrow::Context;
use std::time::{Duration, Instant};
use support::Row;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RAW_ENV: &str = "FURROW_BENCH_RAW_STREAM";

#[furrow::context]
async fn source(ctx: Context, count: u64) -> furrow::Result<u64> {
    ctx.started(&()).await?;
    ctx.open_stream(async |s| {
        for i in 0..count {
            s.send(&i).await?;
        }
        Ok(count)
    })
    .await
}

#[furrow::context]
async fn echo(ctx: Context) -> furrow::Result<()> {
    ctx.started(&()).await?;
    ctx.open_stream(async |s| {
        while let Some(x) = s.recv::<u64>().await? {
            s.send(&x).await?;
        }
        Ok(())
    })
    .await
}

const FRAME: [u8; 16] = [12, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

/// Child side of the raw figures.
fn raw_child(spec: &str) {
    let mut parts = spec.split('\n');
    let path = parts.next().expect("path").to_owned();
    let mode = parts.next().expect("mode").to_owned();
    let n: usize = parts.next().and_then(|s| s.parse().ok()).expect("count");
    support::raw_runtime().block_on(async move {
        let mut s = tokio::net::UnixStream::connect(&path).await.expect("connect");
        match mode.as_str() {
            "unbatched" => {
                for _ in 0..n {
                    s.write_all(&FRAME).await.expect("write");
                }
            }
            "batched" => {
                let per = 65536 / FRAME.len();
                let chunk: Vec<u8> = FRAME.iter().copied().cycle().take(per * FRAME.len()).collect();
                let mut left = n;
                while left > 0 {
                    let k = left.min(per);
                    s.write_all(&chunk[..k * FRAME.len()]).await.expect("write");
                    left -= k;
                }
            }
            _ => {
                // echo
                let mut buf = [0u8; 16];
                while s.read_exact(&mut buf).await.is_ok() {
                    s.write_all(&buf).await.expect("write");
                }
                return;
            }
        }
        let mut done = [0u8; 1];
        let _ = s.read_exact(&mut done).await;
    });
}

async fn with_raw_child<F, Fut, T>(mode: &str, n: usize, f: F) -> T
where
    F: FnOnce(tokio::net::UnixStream) -> Fut,
    Fut: Future<Output = T>,
{
    let dir = support::ScratchDir::new("stream");
    let path = dir.path(&format!("{mode}.sock"));
    let l = tokio::net::UnixListener::bind(&path).expect("bind");
    let mut child = support::start_raw_child(RAW_ENV, format!("{}\n{mode}\n{n}", path.display()));
    let (s, _) = l.accept().await.expect("accept");
    let out = f(s).await;
    let _ = child.wait().await;
    out
}

async fn raw_one_way(mode: &str, n: usize) -> f64 {
    with_raw_child(mode, n, |mut s| async move {
        // The floor includes splitting the stream into frames (furrow's own
        // frame decoder, no msgpack), as any framed protocol must.
        let mut buf = bytes::BytesMut::with_capacity(1 << 16);
        let mut dec = furrow::proto::codec::FrameDecoder::default();
        let (mut frames, mut checksum) = (0usize, 0u64);
        let t = Instant::now();
        while frames < n {
            while let Some(f) = dec.decode(&mut buf).expect("frame") {
                checksum += f[0] as u64;
                frames += 1;
            }
            if frames == n {
                break;
            }
            buf.reserve(1 << 16);
            let k = s.read_buf(&mut buf).await.expect("read");
            assert!(k > 0, "raw sender ended early");
        }
        let el = t.elapsed();
        assert_eq!(checksum, n as u64);
        s.write_all(&[1]).await.expect("done");
        n as f64 / el.as_secs_f64()
    })
    .await
}

async fn raw_echo(rounds: usize) -> Duration {
    with_raw_child("echo", 0, |mut s| async move {
        let mut back = [0u8; 16];
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t = Instant::now();
            s.write_all(&FRAME).await.expect("w");
            s.read_exact(&mut back).await.expect("r");
            times.push(t.elapsed());
        }
        times.sort();
        times[rounds / 2]
    })
    .await
}

/// One-way rate and, unless `rounds` is 0, the echo round trip through a
/// furrow stream.
async fn furrow_figures(n: u64, rounds: usize) -> furrow::Result<(f64, Option<Duration>)> {
    furrow::open_nursery(async |nursery| {
        let p = nursery.start_actor("bench-stream").await?;
        // Warm up, then measure.
        let mut rate = 0.0;
        for count in [n / 10, n] {
            let t = Instant::now();
            let got = p
                .open_context(source, (count,), async |ctx, (): ()| {
                    ctx.open_stream(async |s| {
                        let mut got = 0u64;
                        while let Some(x) = s.recv::<u64>().await? {
                            assert_eq!(x, got);
                            got += 1;
                        }
                        furrow::Ok(got)
                    })
                    .await
                })
                .await?;
            assert_eq!(got, count);
            rate = count as f64 / t.elapsed().as_secs_f64();
        }
        if rounds == 0 {
            return Ok((rate, None));
        }
        let rtt = p
            .open_context(echo, (), async |ctx, (): ()| {
                ctx.open_stream(async |s| {
                    let mut times = Vec::with_capacity(rounds);
                    for i in 0..(rounds + rounds / 10) as u64 {
                        let t = Instant::now();
                        s.send(&i).await?;
                        let back: Option<u64> = s.recv().await?;
                        assert_eq!(back, Some(i));
                        if i as usize >= rounds / 10 {
                            times.push(t.elapsed());
                        }
                    }
                    furrow::Ok(support::median(&mut times))
                })
                .await
            })
            .await?;
        Ok((rate, Some(rtt)))
    })
    .await
}

fn measure(n: u64, rounds: usize) {
    // The unbatched raw figure and the echoes once (the first takes a
    // second or more, and neither is near a limit furrow is judged by);
    // the one-way figures alternate, raw then furrow, and each is the
    // median of its rounds (see `support::rounds`).
    let (raw_unbatched, raw_rtt) = if support::raw_wanted() {
        support::raw_runtime().block_on(async { (raw_one_way("unbatched", n as usize).await, raw_echo(rounds).await) })
    } else {
        (0.0, Duration::ZERO)
    };
    let (mut raws, mut rates, mut rtt) = (Vec::new(), Vec::new(), Duration::ZERO);
    for round in 0..support::rounds() {
        raws.push(if support::raw_wanted() {
            support::raw_runtime().block_on(raw_one_way("batched", n as usize))
        } else {
            0.0
        });
        let echoes = if round == 0 { rounds } else { 0 };
        let (rate, echo_rtt) = furrow::block_on_root(furrow_figures(n, echoes)).expect("furrow bench");
        rates.push(rate);
        if let Some(e) = echo_rtt {
            rtt = e;
        }
    }
    let list = |v: &[f64]| v.iter().map(|r| format!("{:.1}", r / 1e6)).collect::<Vec<_>>().join(" ");
    let (raw_rounds, furrow_rounds) = (list(&raws), list(&rates));
    let (raw_batched, rate) = (support::median_f64(&mut raws), support::median_f64(&mut rates));
    support::print_table(
        &format!("streams: {n} small values one way (median of {} rounds), {rounds} sequential echoes", rates.len()),
        &[
            Row::rate("one way, against 64 KiB raw writes", raw_batched, rate, "msgs/s"),
            Row::rate("one way, against one raw write per frame", raw_unbatched, rate, "msgs/s"),
            Row::time("echo round trip, median", raw_rtt, rtt),
        ],
    );
    if support::raw_wanted() {
        println!("  one way, M msgs/s by round: raw {raw_rounds}; furrow {furrow_rounds}");
    } else {
        println!("  one way, M msgs/s by round: furrow {furrow_rounds}");
    }
}

fn main() {
    support::main(RAW_ENV, raw_child, 1_000_000, |n| measure(n as u64, 20_000));
}
