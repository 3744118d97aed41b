//! The registrar scales: registrations and lookups cost O(log n), and a
//! registration wakes only the lookups waiting for its name. (Bounds are
//! generous, only there to catch quadratic behaviour; the figures are in
//! `cargo bench -p furrow-actors --bench registry`.)

use crate::raw_peer::{Answer, Raw, kwargs};
use crate::registry_wire::{Info, Query, REGISTRY, Register};
use anyhow::{Context as _, bail, ensure};
use bytes::BytesMut;
use furrow::Addr;
use furrow::proto::codec::{self, FrameDecoder};
use furrow::proto::{Aid, Msg};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[furrow_testing::test]
async fn registrations_stay_fast_with_many_entries_and_waiters() -> anyhow::Result<()> {
    const ENTRIES: usize = 50_000;
    const WAITERS: usize = 1_000;
    let registrar = furrow::local_addrs()?.into_iter().find(|a| matches!(a, Addr::Uds(_))).context("uds")?;
    let pid = std::process::id();

    // Lookups waiting for names nobody registers (yet), on a connection of
    // their own.
    let mut waiting = Raw::uds(&registrar, Aid::new("waiter", pid)).await?;
    waiting.handshake().await?;
    let me = waiting.me.clone();
    for i in 0..WAITERS {
        let who = Query { who: furrow::Lookup::Name(format!("absent-{i}")) };
        waiting
            .send(&Raw::<tokio::net::UnixStream>::start_as(&me, 2 * i as u64 + 1, REGISTRY, "wait", kwargs(&who)))
            .await?;
    }
    for _ in 0..WAITERS {
        match waiting.recv().await? {
            Some(Msg::StartAck { .. }) => {}
            other => bail!("expected the waits to be acknowledged, got {other:?}"),
        }
    }

    // One connection registers ENTRIES actors, pipelined (written by a
    // task while this one reads the answers), with at most IN_FLIGHT
    // unanswered, as an honest client keeps within the registrar's bound
    // on a peer's open dialogs (docs/design.md, "Limits on a peer").
    const IN_FLIGHT: usize = 2048;
    let furrow::Addr::Uds(path) = &registrar else { bail!("uds") };
    let mut s = tokio::net::UnixStream::connect(path).await?;
    let reg = Aid::new("mass-registrar", pid);
    let hello = Msg::Aid {
        name: reg.name.clone(),
        uuid: reg.uuid,
        pid,
        proto: furrow::proto::PROTO_VERSION,
        spawn_token: None,
        max_dialogs: None,
    };
    s.write_all(&codec::encode_to_bytes(&hello, 1 << 20)?).await?;
    let (mut rd, mut wr) = s.into_split();
    let mut frames = Vec::with_capacity(ENTRIES);
    for i in 0..ENTRIES {
        let info = Info {
            aid: Aid::new(format!("mass-{}", i % 1000), pid),
            addrs: vec![Addr::Uds(format!("/nonexistent/mass-{i}.sock").into())],
        };
        let start = Raw::<tokio::net::UnixStream>::start_as(
            &reg,
            2 * i as u64 + 1,
            REGISTRY,
            "register",
            kwargs(&Register { info }),
        );
        frames.push(codec::encode_to_bytes(&start, 1 << 20)?);
    }
    let t0 = Instant::now();
    let window = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let writer_window = window.clone();
    let writer = tokio::spawn(async move {
        for batch in frames.chunks(256) {
            // One permit per request, given back as its answer arrives.
            let permits = writer_window.acquire_many(batch.len() as u32).await.map_err(std::io::Error::other)?;
            permits.forget();
            wr.write_all(&batch.concat()).await?;
        }
        Ok::<_, std::io::Error>(wr)
    });

    // Meanwhile, lookups by name must stay quick.
    let lookups = tokio::spawn(async {
        let mut slowest = Duration::ZERO;
        let mut n = 0;
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            let t = Instant::now();
            let found = furrow::query_actors("mass-7").await?;
            slowest = slowest.max(t.elapsed());
            n += 1;
            if found.len() >= ENTRIES / 1000 || Instant::now() > until {
                return furrow::Ok((n, slowest));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    let mut buf = BytesMut::new();
    let mut dec = FrameDecoder::default();
    let mut returned = 0;
    let mut first = true;
    // When each block of 10k registrations was answered: a quadratic
    // registrar makes each block slower than the one before.
    let mut blocks = Vec::new();
    let mut block_start = Instant::now();
    while returned < ENTRIES {
        let Some(frame) = dec.decode(&mut buf)? else {
            ensure!(rd.read_buf(&mut buf).await? > 0, "the registrar closed the connection");
            continue;
        };
        match codec::decode_msg(frame)? {
            Msg::Aid { .. } if first => first = false,
            Msg::StartAck { .. } => {}
            Msg::Return { .. } => {
                window.add_permits(1);
                returned += 1;
                if returned % 10_000 == 0 {
                    blocks.push(block_start.elapsed());
                    block_start = Instant::now();
                }
            }
            other => bail!("unexpected answer to a registration: {other:?}"),
        }
    }
    let took = t0.elapsed();
    let wr = writer.await??;
    let (n, slowest) = lookups.await??;
    println!(
        "{ENTRIES} registrations with {WAITERS} waiting lookups: {took:?} (each 10k: {blocks:?}); \
         {n} lookups meanwhile, slowest {slowest:?}"
    );
    // About 2 s in a debug build on a loaded 2-core machine; a quadratic
    // registrar takes about a minute.
    ensure!(took < Duration::from_secs(30), "{ENTRIES} registrations took {took:?} (quadratic?): {blocks:?}");
    ensure!(slowest < Duration::from_secs(10), "a lookup took {slowest:?} during the registrations");
    ensure!(furrow::query_actors("mass-7").await?.len() == ENTRIES / 1000);

    // A registration answers exactly the lookups waiting for its name.
    let late = Aid::new("absent-7", pid);
    let info = Info { aid: late.clone(), addrs: vec![Addr::Uds("/nonexistent/late.sock".into())] };
    let mut again = Raw::uds(&registrar, Aid::new("late-registrar", pid)).await?;
    again.handshake().await?;
    ensure!(matches!(again.request(1, REGISTRY, "register", kwargs(&Register { info })).await?, Answer::Returned(_)));
    match waiting.answer(2 * 7 + 1).await? {
        Answer::Returned(p) => {
            #[derive(serde::Deserialize)]
            struct Got {
                aid: Aid,
            }
            let got: Got = p.decode()?;
            ensure!(got.aid == late, "the waiter got {}", got.aid);
        }
        other => bail!("the waiter for absent-7 got {other:?}"),
    }
    // Nobody else was answered.
    let more = tokio::time::timeout(Duration::from_millis(200), waiting.recv()).await;
    ensure!(more.is_err(), "another waiter was answered: {more:?}");

    drop((wr, rd, waiting, again));
    // The registrar drops the entries of the connections that closed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !furrow::query_actors("mass-7").await?.is_empty() || !furrow::query_actors("absent-7").await?.is_empty() {
        ensure!(Instant::now() < deadline, "the closed connections' entries are still listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
