//! The chaos transport: a wrapper any connection can be put behind that,
//! driven by the seed, cuts reads and writes into random pieces (down to
//! one byte), delays some frames, and can drop the connection at frame N.
//!
//! Each direction of each connection draws from its own generator, seeded
//! by the seed and the connection's ordinal in the process (see
//! [`super`] for what that means for replay).

use super::{ChaosConfig, Rng, connection_seed};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Wraps one direction of a connection.
#[derive(Debug)]
pub(crate) struct Chaos<T> {
    inner: T,
    /// The process's configuration (set once, never freed).
    cfg: &'static ChaosConfig,
    rng: Rng,
    delay: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The frame (by ordinal) whose delay was already decided.
    delay_decided: Option<u64>,
    /// Writer side: frames written so far, and where the current frame
    /// stands.
    written: FrameCount,
    dropped: bool,
}

impl<T> Chaos<T> {
    /// Wrap `inner`; `label` (which direction) and the process's
    /// connection ordinal pick its generator.
    pub(crate) fn new(inner: T, cfg: &'static ChaosConfig, label: &str) -> Self {
        Chaos {
            inner,
            cfg,
            rng: Rng::new(connection_seed(cfg.seed, label)),
            delay: None,
            delay_decided: None,
            written: FrameCount::default(),
            dropped: false,
        }
    }

    /// At the start of a frame, decide (once) whether it waits first;
    /// `Pending` while it does. Frames are delayed, not pieces: with pieces
    /// of a few bytes a per-piece delay would make the link so slow that
    /// every timeout fires, which is not the fault being simulated.
    fn poll_delay(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.delay.is_none()
            && self.cfg.delay_per_mille > 0
            && self.written.at_frame_start()
            && self.delay_decided != Some(self.written.frames)
        {
            self.delay_decided = Some(self.written.frames);
            if self.rng.next_u64() % 1000 < u64::from(self.cfg.delay_per_mille) {
                let max = self.cfg.delay_max.as_micros().max(1) as u64;
                let d = Duration::from_micros(self.rng.next_u64() % max);
                self.delay = Some(Box::pin(tokio::time::sleep(d)));
            }
        }
        if let Some(d) = self.delay.as_mut() {
            if d.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.delay = None;
        }
        Poll::Ready(())
    }

    /// How many bytes of `data` can be written without passing the end of
    /// the frame the connection drops at (all of them when it does not).
    fn until_drop(&self, data: &[u8]) -> usize {
        let Some(at) = self.cfg.drop_at_frame else { return data.len() };
        let mut probe = self.written.clone();
        for (i, b) in data.iter().enumerate() {
            probe.feed(std::slice::from_ref(b));
            if probe.frames >= at {
                return i + 1;
            }
        }
        data.len()
    }

    fn dropped_error() -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionReset, "chaos transport: connection dropped")
    }
}

/// Where a byte stream of frames (4-byte LE length, then the body) stands:
/// frames complete, header bytes seen, body bytes left.
#[derive(Clone, Debug, Default)]
struct FrameCount {
    frames: u64,
    header: [u8; 4],
    header_len: usize,
    body_left: usize,
}

impl FrameCount {
    /// Nothing of the next frame written yet.
    fn at_frame_start(&self) -> bool {
        self.header_len == 0 && self.body_left == 0
    }

    fn feed(&mut self, mut written: &[u8]) {
        while !written.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(written.len());
                self.body_left -= n;
                written = &written[n..];
                if self.body_left == 0 {
                    self.frames += 1;
                }
                continue;
            }
            self.header[self.header_len] = written[0];
            self.header_len += 1;
            written = &written[1..];
            if self.header_len == 4 {
                self.header_len = 0;
                self.body_left = u32::from_le_bytes(self.header) as usize;
                if self.body_left == 0 {
                    self.frames += 1;
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Chaos<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.dropped {
            return Poll::Ready(Err(Self::dropped_error()));
        }
        let max = if this.cfg.frag == 0 { usize::MAX } else { this.rng.piece(this.cfg.frag) };
        crate::ipc::fragment::poll_read_at_most(Pin::new(&mut this.inner), cx, buf, max)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Chaos<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.dropped {
            return Poll::Ready(Err(Self::dropped_error()));
        }
        if this.poll_delay(cx).is_pending() {
            return Poll::Pending;
        }
        let n = if this.cfg.frag == 0 { data.len() } else { this.rng.piece(this.cfg.frag).min(data.len()) };
        // Never past the end of the frame the connection drops at: the peer
        // gets whole frames, then the end.
        let n = this.until_drop(&data[..n]).max(1).min(n);
        match Pin::new(&mut this.inner).poll_write(cx, &data[..n]) {
            Poll::Ready(Ok(w)) => {
                this.written.feed(&data[..w]);
                if this.cfg.drop_at_frame.is_some_and(|at| this.written.frames >= at) {
                    tracing::info!("chaos transport: dropping the connection after {} frames", this.written.frames);
                    this.dropped = true;
                    // Shut the socket down so the peer sees the loss too.
                    let _ = Pin::new(&mut this.inner).poll_shutdown(cx);
                }
                Poll::Ready(Ok(w))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_arrive_whole_through_pieces_and_delays() {
        let cfg = Box::leak(Box::new(ChaosConfig::parse("seed=9,frag=7,delay=300,delay_ms=1").unwrap()));
        let (a, b) = tokio::io::duplex(1024);
        let mut w = Chaos::new(a, cfg, "w");
        let mut r = Chaos::new(b, cfg, "r");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let expect = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, expect);
    }

    #[tokio::test]
    async fn the_connection_drops_at_the_chosen_frame() {
        let cfg = Box::leak(Box::new(ChaosConfig::parse("seed=1,frag=3,drop=3").unwrap()));
        let (a, mut b) = tokio::io::duplex(4096);
        let mut w = Chaos::new(a, cfg, "w");
        let mut frames = Vec::new();
        for i in 0..5u8 {
            frames.extend_from_slice(&2u32.to_le_bytes());
            frames.extend_from_slice(&[i, i]);
        }
        let err = w.write_all(&frames).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(w.written.frames, 3);
        // The peer got exactly three whole frames, then the end.
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, frames[..18].to_vec());
    }
}
