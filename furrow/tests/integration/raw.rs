//! A peer that speaks the wire protocol by hand, for tests that play a
//! broken or hostile peer against a real actor.

use anyhow::{Context, bail, ensure};
use bytes::BytesMut;
use furrow::proto::codec::{self, FrameDecoder};
use furrow::proto::{Aid, Msg, PROTO_VERSION, Payload};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// A raw connection to an actor.
pub struct Raw {
    pub s: UnixStream,
    pub buf: BytesMut,
    pub me: Aid,
}

impl Raw {
    /// Connect to this process's root actor over its UDS address.
    pub async fn connect() -> anyhow::Result<Raw> {
        let addr = furrow::local_addrs()?.into_iter().next().context("root address")?;
        let furrow::Addr::Uds(path) = addr else { bail!("root listens on UDS") };
        let s = UnixStream::connect(path).await?;
        Ok(Raw { s, buf: BytesMut::new(), me: Aid::new("raw-peer", std::process::id()) })
    }

    pub async fn send(&mut self, msg: &Msg) -> anyhow::Result<()> {
        let frame = codec::encode_to_bytes(msg, furrow::proto::DEFAULT_MAX_FRAME)?;
        self.s.write_all(&frame).await?;
        Ok(())
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.s.write_all(bytes).await?;
        Ok(())
    }

    /// The next message, or None at end of stream; bounded in time.
    pub async fn recv(&mut self) -> anyhow::Result<Option<Msg>> {
        let mut dec = FrameDecoder::default();
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(frame) = dec.decode(&mut self.buf)? {
                    return Ok(Some(codec::decode_msg(frame)?));
                }
                if self.s.read_buf(&mut self.buf).await? == 0 {
                    return Ok(None);
                }
            }
        })
        .await
        .context("no answer within 5 s")?
    }

    pub async fn handshake(&mut self) -> anyhow::Result<Aid> {
        let me = self.me.clone();
        self.send(&Msg::Aid { name: me.name, uuid: me.uuid, pid: me.pid, proto: PROTO_VERSION, spawn_token: None })
            .await?;
        match self.recv().await? {
            Some(Msg::Aid { name, uuid, pid, .. }) => Ok(Aid { name, uuid, pid }),
            other => bail!("expected Aid, got {other:?}"),
        }
    }

    pub fn start(&self, cid: u64, func: &str, kwargs: Payload) -> Msg {
        let (ns, f) = func.rsplit_once("::").unwrap_or(("", func));
        Msg::Start { cid, ns: ns.into(), func: f.into(), kwargs, uid: self.me.clone() }
    }

    /// Call `func` and expect StartAck then Return; the decoded value.
    pub async fn call<T: serde::de::DeserializeOwned>(
        &mut self,
        cid: u64,
        func: &str,
        kwargs: Payload,
    ) -> anyhow::Result<T> {
        self.send(&self.start(cid, func, kwargs)).await?;
        match self.recv().await? {
            Some(Msg::StartAck { cid: c, .. }) if c == cid => {}
            other => bail!("expected StartAck, got {other:?}"),
        }
        match self.recv().await? {
            Some(Msg::Return { cid: c, pld }) if c == cid => Ok(pld.decode()?),
            other => bail!("expected Return, got {other:?}"),
        }
    }

    pub async fn expect_error(&mut self, needle: &str) -> anyhow::Result<()> {
        match self.recv().await? {
            Some(Msg::Error { message, .. }) => {
                ensure!(message.contains(needle), "error {message:?} should mention {needle:?}");
                Ok(())
            }
            other => bail!("expected an Error mentioning {needle:?}, got {other:?}"),
        }
    }
}

/// A `Payload` holding `v` (a kwargs map when `v` is a struct).
pub fn kwargs<T: serde::Serialize>(v: &T) -> Payload {
    Payload::encode(v).expect("encode")
}
