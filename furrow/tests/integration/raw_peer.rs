//! A peer that speaks furrow's wire protocol by hand, over any byte stream:
//! what an impostor or a misbehaving program can send, frame by frame.
//! (Shared by the ipc, security and discovery tests; not a test module.)

use anyhow::{Context as _, bail};
use bytes::BytesMut;
use furrow::ErrorKind;
use furrow::proto::codec::{self, FrameDecoder};
use furrow::proto::{Aid, Msg, PROTO_VERSION, Payload};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What a peer answered to a request.
#[derive(Debug)]
pub enum Answer {
    /// `StartAck` then `Return`.
    Returned(Payload),
    /// `Error` (with or without a `StartAck` first): its kind and message.
    Refused { kind: ErrorKind, message: String },
}

impl Answer {
    /// The error's kind and message, or a failure naming what came
    /// instead.
    pub fn refusal(self) -> anyhow::Result<(ErrorKind, String)> {
        match self {
            Answer::Refused { kind, message } => Ok((kind, message)),
            Answer::Returned(p) => bail!("expected a refusal, got a Return of {} bytes", p.0.len()),
        }
    }
}

/// A raw peer on stream `S`.
pub struct Raw<S> {
    pub s: S,
    /// Bytes read and not yet taken as messages.
    pub buf: BytesMut,
    /// Who this peer says it is (in its `Aid` and its `Start`s).
    pub me: Aid,
    /// How long [`recv`](Self::recv) waits for a message or the close.
    pub bound: Duration,
}

impl Raw<tokio::net::UnixStream> {
    /// Connect to this process's root actor over its UDS address, as
    /// `raw-peer` (with this process's pid, so the kernel's check agrees).
    pub async fn connect() -> anyhow::Result<Self> {
        let addr = furrow::local_addrs()?.into_iter().find(|a| matches!(a, furrow::Addr::Uds(_)));
        let addr = addr.context("the root listens on UDS")?;
        Self::uds(&addr, Aid::new("raw-peer", std::process::id())).await
    }

    /// Connect to a UDS address.
    pub async fn uds(addr: &furrow::Addr, me: Aid) -> anyhow::Result<Self> {
        let furrow::Addr::Uds(path) = addr else { bail!("{addr} is not a UDS address") };
        Ok(Raw::new(tokio::net::UnixStream::connect(path).await?, me))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    pub fn new(s: S, me: Aid) -> Self {
        Raw { s, buf: BytesMut::new(), me, bound: Duration::from_secs(10) }
    }

    /// The same peer, whose [`recv`](Self::recv) waits at most `bound`.
    pub fn bounded(self, bound: Duration) -> Self {
        Raw { bound, ..self }
    }

    pub async fn send(&mut self, msg: &Msg) -> anyhow::Result<()> {
        let frame = codec::encode_to_bytes(msg, furrow::proto::DEFAULT_MAX_FRAME)?;
        self.s.write_all(&frame).await?;
        Ok(())
    }

    /// [`send`](Self::send), accepting that the peer may have hung up
    /// already (it is allowed to close as soon as it saw enough to refuse
    /// us).
    pub async fn send_after_refusal_is_possible(&mut self, msg: &Msg) -> anyhow::Result<()> {
        match self.send(msg).await {
            Err(e)
                if e.downcast_ref::<std::io::Error>().is_some_and(|e| {
                    matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)
                }) =>
            {
                Ok(())
            }
            r => r,
        }
    }

    /// Write raw bytes (a broken frame, half a frame).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.s.write_all(bytes).await?;
        Ok(())
    }

    /// The next message; `None` when the peer closed (or reset) the
    /// connection. Bounded in time ([`bound`](Self::bound)).
    pub async fn recv(&mut self) -> anyhow::Result<Option<Msg>> {
        let mut dec = FrameDecoder::default();
        let bound = self.bound;
        tokio::time::timeout(bound, async {
            loop {
                if let Some(frame) = dec.decode(&mut self.buf)? {
                    return Ok(Some(codec::decode_msg(frame)?));
                }
                match self.s.read_buf(&mut self.buf).await {
                    Ok(0) => return Ok(None),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
            }
        })
        .await
        .with_context(|| format!("the peer neither answered nor closed within {bound:?}"))?
    }

    /// Send our `Aid` (`me`, no spawn token); the peer's first answer.
    pub async fn hello(&mut self) -> anyhow::Result<Option<Msg>> {
        self.send(&aid_msg(&self.me)).await?;
        self.recv().await
    }

    /// [`hello`](Self::hello), expecting the peer's `Aid`.
    pub async fn handshake(&mut self) -> anyhow::Result<Aid> {
        match self.hello().await? {
            Some(Msg::Aid { name, uuid, pid, .. }) => Ok(Aid { name, uuid, pid }),
            other => bail!("expected Aid, got {other:?}"),
        }
    }

    /// A `Start` of the function at `path` (`ns::func`) as ourselves.
    pub fn start(&self, cid: u64, path: &str, kwargs: Payload) -> Msg {
        let (ns, func) = path.rsplit_once("::").unwrap_or(("", path));
        Self::start_as(&self.me, cid, ns, func, kwargs)
    }

    /// Call the function at `path` and expect `StartAck` then `Return`;
    /// the decoded value.
    pub async fn call<T: serde::de::DeserializeOwned>(
        &mut self,
        cid: u64,
        path: &str,
        kwargs: Payload,
    ) -> anyhow::Result<T> {
        self.send(&self.start(cid, path, kwargs)).await?;
        match self.recv().await? {
            Some(Msg::StartAck { cid: c, .. }) if c == cid => {}
            other => bail!("expected StartAck, got {other:?}"),
        }
        match self.recv().await? {
            Some(Msg::Return { cid: c, pld }) if c == cid => Ok(pld.decode()?),
            other => bail!("expected Return, got {other:?}"),
        }
    }

    /// The next message is an `Error` whose message mentions `needle`.
    pub async fn expect_error(&mut self, needle: &str) -> anyhow::Result<()> {
        match self.recv().await? {
            Some(Msg::Error { message, .. }) => {
                anyhow::ensure!(message.contains(needle), "error {message:?} should mention {needle:?}");
                Ok(())
            }
            other => bail!("expected an Error mentioning {needle:?}, got {other:?}"),
        }
    }

    /// A `Start` of `ns::func` naming `uid` as its sender.
    pub fn start_as(uid: &Aid, cid: u64, ns: &str, func: &str, kwargs: Payload) -> Msg {
        Msg::Start { cid, ns: ns.into(), func: func.into(), kwargs, uid: uid.clone() }
    }

    /// Send a `Start` of `ns::func` as `uid`, and read its answer.
    pub async fn request_as(
        &mut self,
        uid: &Aid,
        cid: u64,
        ns: &str,
        func: &str,
        kwargs: Payload,
    ) -> anyhow::Result<Answer> {
        self.send(&Self::start_as(uid, cid, ns, func, kwargs)).await?;
        self.answer(cid).await
    }

    /// Send a `Start` of `ns::func` as ourselves, and read its answer.
    pub async fn request(&mut self, cid: u64, ns: &str, func: &str, kwargs: Payload) -> anyhow::Result<Answer> {
        let me = self.me.clone();
        self.request_as(&me, cid, ns, func, kwargs).await
    }

    /// The answer to the request `cid`: `StartAck` and then `Return`, or
    /// an `Error` (after a `StartAck` or instead of one), or a `CancelAck`
    /// (a runtime request), as a `Returned`.
    pub async fn answer(&mut self, cid: u64) -> anyhow::Result<Answer> {
        loop {
            match self.recv().await? {
                Some(Msg::StartAck { cid: c, .. }) if c == cid => continue,
                Some(Msg::Return { cid: c, pld }) | Some(Msg::CancelAck { cid: c, pld }) if c == cid => {
                    return Ok(Answer::Returned(pld));
                }
                Some(Msg::Error { cid: c, boxed_type_str, message, .. }) if c == Some(cid) || c.is_none() => {
                    return Ok(Answer::Refused { kind: boxed_type_str, message });
                }
                other => bail!("expected an answer to request {cid}, got {other:?}"),
            }
        }
    }
}

/// The handshake's `Aid` of `me` (no spawn token).
pub fn aid_msg(me: &Aid) -> Msg {
    Msg::Aid {
        name: me.name.clone(),
        uuid: me.uuid,
        pid: me.pid,
        proto: PROTO_VERSION,
        spawn_token: None,
        max_dialogs: None,
    }
}

/// Encode named arguments.
pub fn kwargs<T: serde::Serialize>(v: &T) -> Payload {
    Payload::encode(v).expect("encode")
}
