//! Stream throughput and echo round trip, next to raw UDS figures measured
//! in the same run.
//!
//! ```text
//! cargo bench -p furrow --bench stream            # 1,000,000 messages one way
//! cargo bench -p furrow --bench stream -- 3000000
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

use furrow::Context;
use std::time::{Duration, Instant};
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
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    rt.block_on(async move {
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
    let dir = std::env::temp_dir().join(format!("furrow-bench-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(format!("{mode}.sock"));
    let _ = std::fs::remove_file(&path);
    let l = tokio::net::UnixListener::bind(&path).expect("bind");
    let mut child = tokio::process::Command::new(std::env::current_exe().expect("exe"))
        .env(RAW_ENV, format!("{}\n{mode}\n{n}", path.display()))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let (s, _) = l.accept().await.expect("accept");
    let out = f(s).await;
    let _ = child.wait().await;
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir);
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

fn main() {
    furrow::enter_child_if_spawned();
    if let Ok(spec) = std::env::var(RAW_ENV) {
        raw_child(&spec);
        return;
    }
    let n: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    let rounds = 20_000usize;
    furrow::block_on_root(async move {
        let raw_unbatched = raw_one_way("unbatched", n as usize).await;
        let raw_batched = raw_one_way("batched", n as usize).await;
        let raw_rtt = raw_echo(rounds).await;
        let (rate, rtt) = furrow::open_nursery(async |nursery| {
            let p = nursery.start_actor("bench-stream").await?;
            // Warm up, then measure.
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
                            Ok::<_, furrow::Error>(got)
                        })
                        .await
                    })
                    .await?;
                assert_eq!(got, count);
                if count == n {
                    let rate = n as f64 / t.elapsed().as_secs_f64();
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
                                times.sort();
                                Ok::<_, furrow::Error>(times[times.len() / 2])
                            })
                            .await
                        })
                        .await?;
                    return Ok::<_, furrow::Error>((rate, rtt));
                }
            }
            unreachable!()
        })
        .await
        .expect("furrow bench");
        println!("one-way throughput, {n} small messages (msgs/s):");
        println!("  raw UDS, one write per frame (unbatched)  : {:>12.0}", raw_unbatched);
        println!("  raw UDS, 64 KiB writes (batched)          : {:>12.0}", raw_batched);
        println!("  furrow MsgStream send -> recv (u64 values) : {:>12.0}", rate);
        println!("  furrow / raw batched                      : {:>12.2}", rate / raw_batched);
        println!("  furrow / raw unbatched                    : {:>12.2}", rate / raw_unbatched);
        println!("echo round trip, {rounds} sequential (median):");
        println!("  raw UDS ping-pong                         : {:>9.1} µs", raw_rtt.as_secs_f64() * 1e6);
        println!("  furrow stream send + recv                 : {:>9.1} µs", rtt.as_secs_f64() * 1e6);
        println!("  ratio                                     : {:>9.2}x", rtt.as_secs_f64() / raw_rtt.as_secs_f64());
    });
}
