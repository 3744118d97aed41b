//! Attacks a live actor the way a hostile peer with the same uid would, and
//! prints what each attack costs it: its peak memory, and a legitimate
//! caller's call latency beside the idle latency.
//!
//! ```text
//! cargo run --release --example abuse
//! ```
//!
//! Each attack runs for a few seconds against one child actor (the
//! "victim") while the root keeps calling it; then the attacker leaves and
//! the victim's memory is read again. The bounds that hold each attack are
//! in docs/design.md, "Limits on a peer".

use anyhow::{Context as _, bail};
use bytes::BytesMut;
use furrow::proto::codec::{self, FrameDecoder};
use furrow::proto::{Aid, DEFAULT_MAX_FRAME, Msg, PROTO_VERSION, Payload};
use furrow::{Context, Portal};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const ATTACK: Duration = Duration::from_secs(3);

#[furrow::remote]
async fn echo(x: u64) -> u64 {
    x
}

#[furrow::remote]
async fn sleep_forever() {
    std::future::pending::<()>().await
}

#[furrow::remote]
async fn make_vec(n: usize) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(vec![1u8; n])
}

/// Streams `count` values of 1 MiB as fast as credit allows.
#[furrow::context]
async fn bulk(ctx: Context, count: u64) -> furrow::Result<()> {
    ctx.started(&()).await?;
    let blob = serde_bytes::ByteBuf::from(vec![7u8; 1 << 20]);
    ctx.open_stream(async |s| {
        for _ in 0..count {
            s.send(&blob).await?;
        }
        Ok(())
    })
    .await
}

/// A field of /proc/<pid>/status in MiB.
fn status_mib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kib| kib >> 10)
}

/// Samples the victim's RSS until stopped; the peak in MiB.
fn sample_peak(pid: u32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(status_mib(pid, "VmRSS:"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak
    })
}

/// Latencies of legitimate calls for `d`: (p50, p99, calls that failed or
/// took over 2 s).
async fn latency(p: &Portal, d: Duration) -> (Duration, Duration, usize) {
    let mut lat = Vec::new();
    let mut bad = 0;
    let end = Instant::now() + d;
    while Instant::now() < end {
        let t = Instant::now();
        match tokio::time::timeout(Duration::from_secs(2), p.run(echo, (7,))).await {
            Ok(Ok(7)) => lat.push(t.elapsed()),
            _ => bad += 1,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    lat.sort();
    let at = |q: f64| lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1))).copied();
    (at(0.5).unwrap_or_default(), at(0.99).unwrap_or_default(), bad)
}

/// A raw connection to the victim that has passed the handshake.
async fn raw(path: &PathBuf) -> anyhow::Result<UnixStream> {
    let mut s = UnixStream::connect(path).await?;
    let me = Aid::new("attacker", std::process::id());
    let hello = Msg::Aid {
        name: me.name,
        uuid: me.uuid,
        pid: me.pid,
        proto: PROTO_VERSION,
        spawn_token: None,
        max_dialogs: None,
    };
    s.write_all(&codec::encode_to_bytes(&hello, DEFAULT_MAX_FRAME)?).await?;
    let mut buf = BytesMut::new();
    let mut dec = FrameDecoder::default();
    loop {
        if let Some(f) = dec.decode(&mut buf)? {
            match codec::decode_msg(f)? {
                Msg::Aid { .. } => return Ok(s),
                other => bail!("expected Aid, got {:?}", other.kind()),
            }
        }
        if s.read_buf(&mut buf).await? == 0 {
            bail!("closed during the handshake");
        }
    }
}

/// Send `Start`s of `func` as fast as the victim takes them, reading
/// nothing, until `until`.
async fn flood(path: &PathBuf, func: &str, kwargs: Payload, until: Instant) -> anyhow::Result<u64> {
    let mut s = raw(path).await?;
    let me = Aid::new("attacker", std::process::id());
    let (ns, f) = func.rsplit_once("::").unwrap_or(("", func));
    let mut sent = 0u64;
    let mut cid = 1u64;
    while Instant::now() < until {
        let mut batch = BytesMut::new();
        for _ in 0..1000 {
            let m = Msg::Start { cid, ns: ns.into(), func: f.into(), kwargs: kwargs.clone(), uid: me.clone() };
            codec::encode(&m, &mut batch, DEFAULT_MAX_FRAME)?;
            cid += 2;
        }
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.write_all(&batch)).await {
            Ok(r) => r?,
            Err(_) => break, // the victim stopped reading us: backpressure
        }
        sent += 1000;
    }
    Ok(sent)
}

struct Row {
    attack: &'static str,
    detail: String,
    peak: u64,
    after: u64,
    p50: Duration,
    p99: Duration,
    bad: usize,
}

async fn measure<F, Fut>(p: &Portal, attack: &'static str, run: F) -> anyhow::Result<Row>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let pid = p.aid().pid;
    let stop = Arc::new(AtomicBool::new(false));
    let peak = sample_peak(pid, stop.clone());
    let (detail, (p50, p99, bad)) = tokio::join!(run(), latency(p, ATTACK));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let peak = peak.await?;
    Ok(Row { attack, detail: detail?, peak, after: status_mib(pid, "VmRSS:"), p50, p99, bad })
}

#[furrow::main]
async fn main() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let victim = n.start_actor("victim").await?;
        let pid = victim.aid().pid;
        let path = victim
            .addrs()
            .iter()
            .find_map(|a| match a {
                furrow::Addr::Uds(p) => Some(p.clone()),
                _ => None,
            })
            .context("the victim listens on UDS")?;
        let mut rows = Vec::new();
        rows.push(measure(&victim, "idle", || async { Ok(String::new()) }).await?);

        rows.push(
            measure(&victim, "Start flood, answers never read", || async {
                let sent = flood(&path, echo.name(), Payload::encode(&echo_args(7))?, Instant::now() + ATTACK).await?;
                Ok(format!("{sent} calls written"))
            })
            .await?,
        );

        rows.push(
            measure(&victim, "sleeping calls, answers never read", || async {
                let sent = flood(&path, sleep_forever.name(), Payload::encode(&())?, Instant::now() + ATTACK).await?;
                Ok(format!("{sent} calls written"))
            })
            .await?,
        );

        rows.push(
            measure(&victim, "200 conns announcing 32 MiB frames", || async {
                let mut conns = Vec::new();
                for _ in 0..200 {
                    let mut s = raw(&path).await?;
                    let mut head = ((DEFAULT_MAX_FRAME - 1) as u32).to_le_bytes().to_vec();
                    head.extend_from_slice(&[0x80; 100]);
                    s.write_all(&head).await?;
                    conns.push(s);
                }
                tokio::time::sleep(ATTACK).await;
                Ok(format!("{} held", conns.len()))
            })
            .await?,
        );

        let unread = Arc::new(AtomicU64::new(0));
        rows.push(
            measure(&victim, "stream of 1 MiB values, never consumed", || {
                let victim = victim.clone();
                let unread = unread.clone();
                async move {
                    let r = tokio::time::timeout(
                        ATTACK,
                        victim.open_context(bulk, (100_000,), async |ctx, (): ()| {
                            ctx.open_stream(async |_s| {
                                std::future::pending::<()>().await;
                                anyhow::Ok(())
                            })
                            .await
                        }),
                    )
                    .await;
                    unread.store(1, Ordering::Relaxed);
                    Ok(if r.is_err() { "abandoned after 3 s".into() } else { format!("{r:?}") })
                }
            })
            .await?,
        );

        rows.push(
            measure(&victim, "a 40 MiB reply (over the frame limit)", || async {
                let t = Instant::now();
                let r = tokio::time::timeout(Duration::from_secs(5), victim.run(make_vec, (40 << 20,))).await;
                Ok(match r {
                    Err(_) => "no answer within 5 s".to_owned(),
                    Ok(Ok(v)) => format!("answered {} bytes", v.len()),
                    Ok(Err(e)) => format!("error after {:?}: {}", t.elapsed(), first_words(&e.to_string())),
                })
            })
            .await?,
        );

        println!();
        println!("victim pid {pid}; attacks of {ATTACK:?}; latency of `echo` calls from the root meanwhile");
        println!();
        println!("| attack | victim peak RSS | RSS after | call p50 | call p99 | failed calls | attacker |");
        println!("|---|---|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {} MiB | {} MiB | {:.0} µs | {:.0} µs | {} | {} |",
                r.attack,
                r.peak,
                r.after,
                r.p50.as_secs_f64() * 1e6,
                r.p99.as_secs_f64() * 1e6,
                r.bad,
                r.detail
            );
        }
        Ok(())
    })
    .await
}

/// The kwargs of `echo(x)`.
fn echo_args(x: u64) -> std::collections::BTreeMap<&'static str, u64> {
    std::collections::BTreeMap::from([("x", x)])
}

fn first_words(s: &str) -> String {
    s.chars().take(90).collect()
}
