//! What a peer may cost an actor (docs/design.md, "Limits on a peer"):
//! keepalive gives up a silent peer, a peer's open dialogs are bounded, a
//! peer that does not read is not read either, and a frame that stalls
//! half-way is dropped. Each test runs its own root with small limits and
//! plays the peer for real: a stopped child process, or a raw socket.

use crate::raw_peer::{Raw, kwargs};
use anyhow::{Context as _, bail, ensure};
use furrow::ErrorKind;
use furrow::proto::Msg;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[furrow::remote]
async fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Never returns on its own (ends when cancelled).
#[furrow::remote]
async fn sleepy() {
    std::future::pending::<()>().await
}

#[derive(serde::Serialize)]
struct AB {
    a: i64,
    b: i64,
}

/// Run `body` in a root of its own with `cfg` (the test's socket directory).
fn with_root<F>(cfg: furrow::Config, body: F) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(furrow::run_root(cfg, body))?
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a process this test started.
    unsafe { libc::kill(pid as i32, sig) };
}

/// SIGSTOP `pid` and wait until it is stopped: the signal is delivered
/// asynchronously, and a thread of it running on the other core may still
/// answer a request or two in between.
async fn stop(pid: u32) -> anyhow::Result<()> {
    signal(pid, libc::SIGSTOP);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let p = furrow_testing::process(pid as i32).with_context(|| format!("{pid} is gone"))?;
        if p.is_stopped() {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{pid} not stopped after 5 s (state {})", p.state);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A field of /proc/<pid>/status, in KiB.
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field}"))?;
    Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
}

/// Defect 9: calls to a SIGSTOPped actor waited forever. Keepalive gives
/// the silent child up, the call fails naming the silence, and the nursery
/// treats the child as failed and ends it through the ladder (a stopped
/// process is killed).
#[furrow_testing::test]
fn a_stopped_child_is_given_up_by_keepalive_and_killed() -> anyhow::Result<()> {
    let cfg = furrow_testing::root_config().keepalive(Duration::from_millis(200), Duration::from_secs(1));
    with_root(cfg, async {
        let mut pid = 0;
        let report = furrow::open_nursery_report(async |n| {
            let p = n.start_actor("frozen").await?;
            pid = p.aid().pid;
            ensure!(p.run(add, (1, 2)).await? == 3);
            stop(pid).await?;
            let t = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(20), p.run(add, (1, 2))).await;
            let err = match r {
                Err(_) => bail!("a call to a stopped actor still waits after 20 s"),
                Ok(Ok(v)) => bail!("a stopped actor answered {v}"),
                Ok(Err(e)) => e,
            };
            println!("after {:?}: {err}", t.elapsed());
            ensure!(matches!(err, furrow::Error::TransportClosed { .. }), "{err:?}");
            ensure!(err.to_string().contains("silent"), "the error should name the silence: {err}");
            Ok(())
        })
        .await;
        println!("{:?}", report.children);
        let err = report.result.err().context("the stopped child's ending should fail the nursery")?;
        println!("nursery: {err}");
        ensure!(err.to_string().contains("silent"), "the nursery's error should say the child went silent: {err}");
        let child = report.children.first().context("one child")?;
        let ending = format!("{:?}", child.ending);
        ensure!(ending.contains("SIGKILL") || ending.contains("signal 9"), "the stopped child is killed: {ending}");
        furrow_testing::wait_gone(&[pid], Duration::from_secs(5)).map_err(anyhow::Error::msg)?;
        Ok(())
    })
}

/// A nursery whose body is busy elsewhere still notices a child that
/// went silent: one cancels all, the body is cancelled, the child killed.
#[furrow_testing::test]
fn a_silent_child_cancels_a_busy_nursery_body() -> anyhow::Result<()> {
    let cfg = furrow_testing::root_config().keepalive(Duration::from_millis(200), Duration::from_secs(1));
    with_root(cfg, async {
        let mut pid = 0;
        let t = Instant::now();
        let r = furrow::open_nursery(async |n| {
            let p = n.start_actor("frozen").await?;
            pid = p.aid().pid;
            stop(pid).await.map_err(|e| furrow::Error::Usage(e.to_string()))?;
            // Not calling the child: only keepalive can notice.
            tokio::time::sleep(Duration::from_secs(60)).await;
            furrow::Ok(())
        })
        .await;
        println!("after {:?}: {r:?}", t.elapsed());
        let err = r.err().context("the silent child should fail the nursery")?;
        ensure!(err.to_string().contains("silent"), "{err}");
        ensure!(t.elapsed() < Duration::from_secs(30), "noticed only after {:?}", t.elapsed());
        furrow_testing::wait_gone(&[pid], Duration::from_secs(5)).map_err(anyhow::Error::msg)?;
        Ok(())
    })
}

/// Keepalive must not give up a peer that is only quiet: idle channels
/// (a plain portal, and a context waiting on its stream) outlive many
/// times the allowed silence, because the probes are answered.
#[furrow_testing::test]
fn quiet_healthy_channels_outlive_the_allowed_silence() -> anyhow::Result<()> {
    let cfg = furrow_testing::root_config().keepalive(Duration::from_millis(50), Duration::from_millis(300));
    with_root(cfg, async {
        furrow::open_nursery(async |n| {
            let p = n.start_actor("quiet").await?;
            ensure!(p.run(add, (1, 2)).await? == 3);
            // Time enough to read every request many times over if nothing
            // stopped it (a debug build reads ~20k per second here).
            tokio::time::sleep(Duration::from_secs(3)).await;
            ensure!(p.run(add, (2, 3)).await? == 5, "the idle channel was given up");
            anyhow::Ok(())
        })
        .await
    })
}

/// A raw peer that never answers a probe is given up after the allowed
/// silence: its connection is closed.
#[furrow_testing::test]
fn a_peer_that_answers_no_probe_is_disconnected() -> anyhow::Result<()> {
    let cfg = furrow_testing::root_config().keepalive(Duration::from_millis(100), Duration::from_millis(500));
    with_root(cfg, async {
        // Timed from before connecting: the actor's clock starts when its
        // side of the handshake ends, which can be before ours returns (a
        // timer taken after it read 498.8 ms on a busy machine, against
        // the actor's 500).
        let t = Instant::now();
        let mut raw = Raw::connect().await?;
        raw.handshake().await?;
        // Pings arrive; we do not answer; then the actor hangs up.
        let mut pings = 0;
        loop {
            match raw.recv().await? {
                Some(Msg::Ping { .. }) => pings += 1,
                None => break,
                Some(other) => bail!("unexpected {other:?}"),
            }
        }
        println!("disconnected after {:?} and {pings} probes", t.elapsed());
        ensure!(pings >= 1, "the actor should probe before giving up");
        ensure!(t.elapsed() >= Duration::from_millis(500), "given up before the allowed silence");
        Ok(())
    })
}

/// Defect 2: calls in flight per peer were unlimited. Beyond the bound a
/// `Start` is refused at once with `TooManyDialogs`, and the dialogs
/// already open are unaffected.
#[furrow_testing::test]
fn dialogs_beyond_the_bound_per_peer_are_refused() -> anyhow::Result<()> {
    let cfg = furrow_testing::root_config().max_dialogs_per_peer(8);
    with_root(cfg, async {
        let mut raw = Raw::connect().await?;
        raw.handshake().await?;
        for i in 0..20u64 {
            let msg = raw.start(2 * i + 1, sleepy.name(), kwargs(&()));
            raw.send(&msg).await?;
        }
        let (mut acks, mut refused) = (0, 0);
        while acks + refused < 20 {
            match raw.recv().await?.context("closed")? {
                Msg::StartAck { .. } => acks += 1,
                Msg::Error { boxed_type_str: ErrorKind::TooManyDialogs, message, .. } => {
                    ensure!(message.contains("limit 8"), "{message}");
                    refused += 1;
                }
                other => bail!("unexpected {other:?}"),
            }
        }
        ensure!((acks, refused) == (8, 12), "{acks} started, {refused} refused");
        // The bound is per peer: another connection is served.
        let mut other = Raw::connect().await?;
        other.handshake().await?;
        let v: i64 = other.call(1, add.name(), kwargs(&AB { a: 2, b: 2 })).await?;
        ensure!(v == 4);
        Ok(())
    })
}

#[furrow::remote]
async fn nap(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

/// A furrow caller keeps within the peer's bound on open dialogs: many
/// more concurrent calls than the bound wait their turn instead of being
/// refused (and a cancel still goes through while the bound is reached).
#[furrow_testing::test]
fn a_furrow_caller_with_more_calls_than_the_bound_waits_its_turn() -> anyhow::Result<()> {
    let cfg = furrow_testing::root_config().max_dialogs_per_peer(8);
    with_root(cfg, async {
        furrow::open_nursery(async |n| {
            let p = n.start_actor("busy").await?;
            let calls = (0..100).map(|_| p.run(nap, (20,)));
            let t = Instant::now();
            let all = futures::future::try_join_all(calls).await?;
            ensure!(all.len() == 100 && all.iter().all(|v| *v == 20));
            // 100 calls of 20 ms, 8 at a time: at least 13 rounds.
            ensure!(t.elapsed() >= Duration::from_millis(240), "the bound was not kept: {:?}", t.elapsed());
            Ok(())
        })
        .await
    })
}

/// Another program whose root lets a peer have 4 dialogs open at once
/// (and no part in discovery): prints its address, serves until SIGTERM.
#[furrow_testing::test(scenario)]
fn scenario_small_bound() -> anyhow::Result<()> {
    let cfg = furrow::Config::new("small-bound").max_dialogs_per_peer(4).discovery(furrow::Discovery::Off);
    with_root(cfg, async {
        // Before the address is out: the test's SIGTERM must end us politely.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let addr = furrow::local_addrs()?.into_iter().next().context("no address")?;
        println!("{addr}");
        term.recv().await;
        Ok(())
    })
}

/// Issue 14, step 2: each side advertises its bound on open dialogs in
/// its handshake, and a caller keeps within the *peer's*. Here our own
/// bound is the default (4096) and the peer's is 4: 50 concurrent calls
/// all succeed, 4 at a time, none refused with `TooManyDialogs` (before,
/// the caller assumed its own bound and 46 of them were refused).
#[furrow_testing::test]
fn a_caller_keeps_within_the_bound_its_peer_advertised() -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;
    with_root(furrow_testing::root_config().discovery(furrow::Discovery::Off), async {
        let mut small = furrow_testing::scenario("scenario_small_bound").spawn()?;
        let pid = small.id().context("scenario pid")?;
        let out = small.stdout.take().context("stdout")?;
        let line = tokio::time::timeout(Duration::from_secs(20), tokio::io::BufReader::new(out).lines().next_line())
            .await
            .context("no address within 20 s")??
            .context("the scenario printed nothing")?;
        let addr: furrow::Addr = line.parse()?;
        let outcome = furrow::connect(&addr, async |p| {
            let t = Instant::now();
            let all = futures::future::join_all((0..50).map(|_| p.run(nap, (20,)))).await;
            let failed: Vec<String> = all.iter().filter_map(|r| r.as_ref().err().map(ToString::to_string)).collect();
            ensure!(failed.is_empty(), "{} of 50 calls failed, first: {:?}", failed.len(), failed.first());
            ensure!(all.iter().all(|r| matches!(r, Ok(20))));
            // 50 calls of 20 ms, 4 at a time: at least 13 rounds.
            ensure!(t.elapsed() >= Duration::from_millis(240), "the peer's bound was not kept: {:?}", t.elapsed());
            Ok(())
        })
        .await;
        signal(pid, libc::SIGTERM);
        let status = tokio::time::timeout(Duration::from_secs(10), small.wait()).await.context("scenario hung")??;
        outcome?;
        ensure!(status.success(), "scenario: {status}");
        Ok(())
    })
}

/// Defect 2: writer queues were unbounded, so a peer sending requests and
/// reading no answer grew the actor without limit. Now the actor stops
/// reading from it once the answers it owes exceed the bound; nothing is
/// lost: when the peer reads, every answer comes.
#[furrow_testing::test]
fn a_peer_that_reads_no_answer_is_not_read_either() -> anyhow::Result<()> {
    const CALLS: u64 = 100_000;
    let cfg = furrow_testing::root_config().max_queued_output(256 << 10);
    with_root(cfg, async {
        let mut raw = Raw::connect().await?;
        raw.handshake().await?;
        let mut frames = bytes::BytesMut::new();
        for i in 0..CALLS {
            let msg = raw.start(2 * i + 1, add.name(), kwargs(&AB { a: i as i64, b: 1 }));
            furrow::proto::codec::encode(&msg, &mut frames, furrow::proto::DEFAULT_MAX_FRAME)?;
        }
        let (mut rd, mut wr) = raw.s.into_split();
        let writer = tokio::spawn(async move { wr.write_all(&frames).await.map(|()| wr) });
        // Time enough to read every request many times over if nothing
        // stopped it (a debug build reads ~20k per second here).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let read_by_actor = furrow::local_stats()?
            .channels
            .iter()
            .filter(|c| c.peer.name == "raw-peer")
            .map(|c| c.msgs_in)
            .sum::<u64>();
        println!("requests read while the peer read nothing: {read_by_actor} of {CALLS}");
        // The answers it owes stop it: 256 KiB queued plus what the socket
        // buffers hold, ~75 bytes per answered call, a few thousand calls.
        ensure!(read_by_actor < 20_000, "the actor read {read_by_actor} requests from a peer that reads nothing");
        // Now read: every request gets its answer.
        let mut buf = raw.buf;
        let mut dec = furrow::proto::codec::FrameDecoder::default();
        let (mut returns, mut refused) = (0u64, 0u64);
        let deadline = Instant::now() + Duration::from_secs(60);
        while returns + refused < CALLS {
            ensure!(Instant::now() < deadline, "only {} answers after 60 s", returns + refused);
            while let Some(f) = dec.decode(&mut buf)? {
                match furrow::proto::codec::decode_msg(f)? {
                    Msg::Return { .. } => returns += 1,
                    // Once reading resumes, requests arrive faster than the
                    // calls end: beyond 4096 open ones, a request is refused
                    // at once. A refusal is its one answer too.
                    Msg::Error { boxed_type_str: ErrorKind::TooManyDialogs, .. } => refused += 1,
                    Msg::StartAck { .. } | Msg::Ping { .. } => {}
                    other => bail!("unexpected {other:?}"),
                }
            }
            if rd.read_buf(&mut buf).await? == 0 {
                bail!("closed after {returns} answers");
            }
        }
        let _wr = writer.await??;
        println!("{returns} returned, {refused} refused");
        Ok(())
    })
}

/// Defect 2: a frame announced and never finished held its buffer
/// forever. Now it must arrive whole within the frame timeout.
#[furrow_testing::test]
fn a_frame_that_stalls_half_way_closes_the_connection() -> anyhow::Result<()> {
    let cfg = furrow_testing::root_config().frame_timeout(Duration::from_millis(500)).disable_keepalive();
    with_root(cfg, async {
        let mut raw = Raw::connect().await?;
        raw.handshake().await?;
        let mut stalled = (1u32 << 20).to_le_bytes().to_vec();
        stalled.extend_from_slice(&[0x80; 10]);
        raw.send_raw(&stalled).await?;
        let t = Instant::now();
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            let mut sink = Vec::new();
            raw.s.read_to_end(&mut sink).await
        })
        .await
        .context("a stalled frame still holds the connection after 10 s")?;
        println!("closed after {:?} ({end:?})", t.elapsed());
        ensure!(t.elapsed() >= Duration::from_millis(400), "closed before the frame timeout");
        Ok(())
    })
}

/// Defect 2: each frame header reserved the whole announced size, so 200
/// connections announcing 32 MiB took 6.5 GB. Buffers now grow with what
/// arrives (design.md, "Limits on a peer"): each connection sends 20 KiB
/// of its frame, more than the reader's first buffer, so that the reader
/// has to make room. (Reserving 2 MiB at once passed at 129 MiB; the whole
/// announced frame failed at 2048 MiB.)
#[furrow_testing::test]
fn announced_frames_reserve_nothing() -> anyhow::Result<()> {
    const CONNS: usize = 64;
    let cfg = furrow_testing::root_config().disable_keepalive();
    with_root(cfg, async {
        let me = std::process::id();
        let before = status_kib(me, "VmSize:")?;
        let mut conns = Vec::new();
        for _ in 0..CONNS {
            let mut raw = Raw::connect().await?;
            raw.handshake().await?;
            let mut head = ((furrow::proto::DEFAULT_MAX_FRAME - 1) as u32).to_le_bytes().to_vec();
            head.push(0xc6); // bin 32 ...
            head.extend_from_slice(&[0x7f; 20 << 10]); // ... its length, then 20 KiB of it
            raw.send_raw(&head).await?;
            conns.push(raw);
        }
        // Let every reader see its header.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let grown = status_kib(me, "VmSize:")?.saturating_sub(before);
        println!(
            "{CONNS} connections announcing 32 MiB frames, 20 KiB sent: address space grew by {} MiB",
            grown >> 10
        );
        ensure!(grown < 512 << 10, "{} MiB reserved for frames that never came", grown >> 10);
        drop(conns);
        Ok(())
    })
}
