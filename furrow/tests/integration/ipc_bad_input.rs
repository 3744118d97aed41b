//! Bad input from a peer gets a clear error, loses nothing and never takes
//! a process down. These tests talk to the test's own root actor over a
//! raw socket, byte by byte.

use crate::raw_peer::{Raw, kwargs};
use anyhow::{bail, ensure};
use furrow::proto::{Msg, PROTO_VERSION, Payload};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

static RAN: AtomicBool = AtomicBool::new(false);

#[furrow::remote]
async fn side_effect() -> bool {
    RAN.store(true, Ordering::SeqCst);
    true
}

#[furrow::remote]
async fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[furrow::remote]
async fn len_of(s: String) -> usize {
    s.len()
}

#[derive(serde::Serialize)]
struct AB {
    a: i64,
    b: i64,
}

#[furrow_testing::test]
async fn garbage_frame_gets_an_error_and_the_channel_keeps_serving() -> anyhow::Result<()> {
    let mut raw = Raw::connect().await?;
    raw.handshake().await?;
    // A complete frame whose body is not msgpack (0xc1 is never used).
    raw.send_raw(&[1, 0, 0, 0, 0xc1]).await?;
    raw.expect_error("malformed").await?;
    // A well-formed map with a type nobody knows.
    #[derive(serde::Serialize)]
    struct Bogus {
        msg_type: &'static str,
        cid: u64,
    }
    let body = rmp_serde_named(&Bogus { msg_type: "Bogus", cid: 1 });
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    raw.send_raw(&frame).await?;
    raw.expect_error("Bogus").await?;
    // A Start with a cid of the peer's own parity is refused, not run.
    raw.send(&raw.start(2, add.name(), kwargs(&AB { a: 1, b: 1 }))).await?;
    raw.expect_error("parity").await?;
    // The channel is still in sync: a real call works.
    let v: i64 = raw.call(1, add.name(), kwargs(&AB { a: 2, b: 3 })).await?;
    ensure!(v == 5);
    Ok(())
}

fn rmp_serde_named<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // A furrow Payload is exactly a msgpack encoding with named fields.
    Payload::encode(v).expect("encode").0.to_vec()
}

#[furrow_testing::test]
async fn oversized_frame_is_refused_and_the_channel_closed() -> anyhow::Result<()> {
    let mut raw = Raw::connect().await?;
    raw.handshake().await?;
    // Declares 4 GiB - 1: refused from the header alone, nothing allocated.
    raw.send_raw(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await?;
    raw.expect_error("exceeds the limit").await?;
    ensure!(raw.recv().await?.is_none(), "channel should be closed after an oversized frame");
    // The actor itself is fine: a new connection is served.
    let mut again = Raw::connect().await?;
    again.handshake().await?;
    let v: i64 = again.call(1, add.name(), kwargs(&AB { a: 20, b: 22 })).await?;
    ensure!(v == 42);
    Ok(())
}

#[furrow_testing::test]
async fn start_before_handshake_runs_nothing() -> anyhow::Result<()> {
    let mut raw = Raw::connect().await?;
    raw.send(&raw.start(1, side_effect.name(), kwargs(&()))).await?;
    // No reply, and the connection is closed.
    ensure!(raw.recv().await?.is_none(), "expected the connection to be closed");
    tokio::time::sleep(Duration::from_millis(50)).await;
    ensure!(!RAN.load(Ordering::SeqCst), "a function ran for a peer that never handshook");
    // The same call after a handshake does run (the check above can fail).
    let mut ok = Raw::connect().await?;
    ok.handshake().await?;
    let ran: bool = ok.call(1, side_effect.name(), kwargs(&())).await?;
    ensure!(ran && RAN.load(Ordering::SeqCst));
    Ok(())
}

#[furrow_testing::test]
async fn wrong_protocol_version_is_refused() -> anyhow::Result<()> {
    let mut raw = Raw::connect().await?;
    let me = raw.me.clone();
    raw.send(&Msg::Aid {
        name: me.name,
        uuid: me.uuid,
        pid: me.pid,
        proto: PROTO_VERSION + 1,
        spawn_token: None,
        max_dialogs: None,
    })
    .await?;
    ensure!(raw.recv().await?.is_none(), "a peer of another protocol version must be disconnected");
    Ok(())
}

#[furrow_testing::test]
async fn truncated_frame_then_hangup_is_survived() -> anyhow::Result<()> {
    let mut raw = Raw::connect().await?;
    raw.handshake().await?;
    raw.send_raw(&[100, 0, 0, 0, 0x82, 1, 2]).await?; // 100 bytes announced, 3 sent
    raw.s.shutdown().await?;
    drop(raw);
    let mut again = Raw::connect().await?;
    again.handshake().await?;
    let v: i64 = again.call(1, add.name(), kwargs(&AB { a: 1, b: 2 })).await?;
    ensure!(v == 3);
    Ok(())
}

#[furrow_testing::test]
async fn out_of_order_reply_is_a_protocol_error() -> anyhow::Result<()> {
    let mut raw = Raw::connect().await?;
    raw.handshake().await?;
    // A Return for a dialog the root never opened (even cid = root's parity).
    raw.send(&Msg::Started { cid: 1, pld: kwargs(&1) }).await?;
    // `Started` for an unknown dialog is late traffic by design: dropped.
    // `Stop` likewise. A StartAck for an unknown *root* dialog: dropped
    // too (it may be the answer to a call the root abandoned). Nothing
    // of this may break the channel:
    raw.send(&Msg::StartAck { cid: 2, functype: furrow::proto::FuncType::Asyncfunc }).await?;
    let v: i64 = raw.call(3, add.name(), kwargs(&AB { a: 4, b: 4 })).await?;
    ensure!(v == 8);
    Ok(())
}

#[furrow::remote]
async fn bytes_len(b: furrow::Bytes) -> usize {
    b.len()
}

#[furrow_testing::test]
async fn oversized_argument_is_refused_at_the_sender() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("receiver").await?;
        let big = "x".repeat(33 * 1024 * 1024);
        let err = p.run(len_of, (big,)).await.unwrap_err();
        // A typed error naming what, how big and the limit (it was a
        // `Protocol` error before, although nobody broke the protocol).
        match &err {
            furrow::Error::FrameTooLarge { what, len, max } => {
                ensure!(*what == format!("the call of `{}` (its arguments)", len_of.name()), "{what}");
                ensure!(*len > 33 * 1024 * 1024 && *max == furrow::proto::DEFAULT_MAX_FRAME, "{len} {max}");
            }
            other => bail!("expected FrameTooLarge, got {other:?}"),
        }
        ensure!(err.to_string().contains("exceeds the frame limit of 33554432 bytes"), "{err}");
        // Refused before anything was sent: the channel is intact.
        ensure!(p.run(len_of, ("abc".to_string(),)).await? == 3);
        // Just under the limit passes.
        let fits = "y".repeat(31 * 1024 * 1024);
        ensure!(p.run(len_of, (fits,)).await? == 31 * 1024 * 1024);
        // A large `furrow::Bytes` argument, sent from its own buffer (a
        // frame in parts), is measured and refused the same way.
        let big = furrow::Bytes::from(vec![b'x'; 33 * 1024 * 1024]);
        match p.run(bytes_len, (big,)).await {
            Err(furrow::Error::FrameTooLarge { what, len, .. }) => {
                ensure!(what == format!("the call of `{}` (its arguments)", bytes_len.name()), "{what}");
                ensure!(len > 33 * 1024 * 1024, "{len}");
            }
            other => bail!("expected FrameTooLarge for a Bytes argument, got {other:?}"),
        }
        ensure!(p.run(bytes_len, (furrow::Bytes::from(vec![1u8; 1 << 20]),)).await? == 1 << 20);
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn a_protocol_error_quoting_a_huge_frame_is_cut_to_fit() -> anyhow::Result<()> {
    let mut raw = Raw::connect().await?;
    raw.handshake().await?;
    // A frame just under the limit whose unknown `msg_type` the error reply
    // quotes: the reply would not fit, and before it was dropped unsaid.
    #[derive(serde::Serialize)]
    struct Bogus {
        msg_type: String,
    }
    let body = rmp_serde_named(&Bogus { msg_type: "B".repeat(furrow::proto::DEFAULT_MAX_FRAME - 64) });
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    raw.send_raw(&frame).await?;
    match raw.recv().await? {
        Some(Msg::Error { message, .. }) => {
            ensure!(message.starts_with("unknown msg_type \"BBB"), "{}", &message[..64.min(message.len())]);
            ensure!(message.ends_with("… [cut]") && message.len() < 2048, "{} bytes", message.len());
        }
        other => bail!("expected an Error, got {other:?}"),
    }
    // Still in sync.
    let v: i64 = raw.call(1, add.name(), kwargs(&AB { a: 1, b: 2 })).await?;
    ensure!(v == 3);
    Ok(())
}
