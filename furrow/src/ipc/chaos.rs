//! The chaos transport: a wrapper any connection can be put behind that,
//! driven by a seed, cuts reads and writes into random pieces (down to one
//! byte), delays some of them, and can drop the connection at frame N.
//!
//! Enabled for every channel of every actor started from an environment
//! with [`CHAOS_ENV`] set (children inherit it):
//!
//! ```text
//! FURROW_CHAOS=seed=42                      random pieces of 1..=64 bytes
//! FURROW_CHAOS=seed=42,frag=1               every read and write one byte
//! FURROW_CHAOS=seed=42,delay=50,delay_ms=3  5 % of operations wait up to 3 ms
//! FURROW_CHAOS=seed=42,drop=100             each connection fails at its 100th frame written
//! ```
//!
//! Reproducibility: each direction of each connection draws from its own
//! generator, seeded by the seed and the connection's ordinal in the
//! process. Within one process the same seed gives the same pieces and
//! delays in the same order; across processes the interleaving is the
//! scheduler's, so a failing seed is replayed by running it again (and
//! again), not byte for byte.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Environment variable that turns the chaos transport on (see the module
/// documentation for its syntax).
pub(crate) const CHAOS_ENV: &str = "FURROW_CHAOS";

/// What the chaos transport does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChaosConfig {
    /// Seed of every generator.
    pub(crate) seed: u64,
    /// Largest piece per read or write (pieces are 1..=frag bytes).
    pub(crate) frag: usize,
    /// Per mille of operations that are delayed.
    pub(crate) delay_per_mille: u32,
    /// Longest delay.
    pub(crate) delay_max: Duration,
    /// Fail the connection when this many frames have been written.
    pub(crate) drop_at_frame: Option<u64>,
}

impl ChaosConfig {
    /// Parse `seed=N[,frag=N][,delay=PER_MILLE][,delay_ms=N][,drop=N]` (`;`
    /// separates too); a bare number is the seed.
    pub(crate) fn parse(s: &str) -> Result<ChaosConfig, String> {
        let mut c = ChaosConfig {
            seed: 0,
            frag: 64,
            delay_per_mille: 0,
            delay_max: Duration::from_millis(2),
            drop_at_frame: None,
        };
        let mut seeded = false;
        for part in s.split([',', ';']).map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or(("seed", part));
            let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{CHAOS_ENV}: {k}={v}: {e}"));
            match k {
                "seed" => {
                    c.seed = num(v)?;
                    seeded = true;
                }
                "frag" => c.frag = usize::try_from(num(v)?).unwrap_or(usize::MAX).max(1),
                "delay" => c.delay_per_mille = u32::try_from(num(v)?.min(1000)).unwrap_or(1000),
                "delay_ms" => c.delay_max = Duration::from_millis(num(v)?),
                "drop" => c.drop_at_frame = Some(num(v)?),
                other => return Err(format!("{CHAOS_ENV}: unknown key {other:?} (seed, frag, delay, delay_ms, drop)")),
            }
        }
        if !seeded {
            return Err(format!("{CHAOS_ENV}: no seed (e.g. {CHAOS_ENV}=seed=42)"));
        }
        Ok(c)
    }
}

/// The configuration in [`CHAOS_ENV`], read once per process. A malformed
/// value is reported once and ignored.
pub(crate) fn from_env() -> Option<&'static ChaosConfig> {
    static CONFIG: std::sync::OnceLock<Option<ChaosConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let v = std::env::var(CHAOS_ENV).ok()?;
            match ChaosConfig::parse(&v) {
                Ok(c) => {
                    tracing::info!("chaos transport on: {c:?}");
                    Some(c)
                }
                Err(e) => {
                    eprintln!("furrow: {e}; chaos transport off");
                    None
                }
            }
        })
        .as_ref()
}

/// A small, fast, seedable generator (SplitMix64): chaos needs
/// reproducibility, not cryptographic quality.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `1..=max` (`max` ≥ 1).
    fn piece(&mut self, max: usize) -> usize {
        1 + (self.next_u64() % max as u64) as usize
    }
}

/// The seed of the next connection of this process.
fn connection_seed(base: u64, label: &str) -> u64 {
    static ORDINAL: AtomicU64 = AtomicU64::new(0);
    let n = ORDINAL.fetch_add(1, Ordering::Relaxed);
    let mut h = base ^ 0xF0_22_0E_5C_4A_05;
    for b in label.bytes().chain(n.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
    }
    h
}

/// Wraps one direction of a connection.
#[derive(Debug)]
pub(crate) struct Chaos<T> {
    inner: T,
    cfg: ChaosConfig,
    rng: Rng,
    delay: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Writer side: frames written so far, and where the current frame
    /// stands.
    written: FrameCount,
    dropped: bool,
}

impl<T> Chaos<T> {
    /// Wrap `inner`; `label` (which direction) and the process's
    /// connection ordinal pick its generator.
    pub(crate) fn new(inner: T, cfg: &ChaosConfig, label: &str) -> Self {
        Chaos {
            inner,
            cfg: cfg.clone(),
            rng: Rng::new(connection_seed(cfg.seed, label)),
            delay: None,
            written: FrameCount::default(),
            dropped: false,
        }
    }

    /// Decide whether this operation waits first; `Pending` while it does.
    fn poll_delay(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.delay.is_none()
            && self.cfg.delay_per_mille > 0
            && self.rng.next_u64() % 1000 < u64::from(self.cfg.delay_per_mille)
        {
            let max = self.cfg.delay_max.as_micros().max(1) as u64;
            let d = Duration::from_micros(self.rng.next_u64() % max);
            self.delay = Some(Box::pin(tokio::time::sleep(d)));
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

use std::future::Future;

impl<T: AsyncRead + Unpin> AsyncRead for Chaos<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.dropped {
            return Poll::Ready(Err(Self::dropped_error()));
        }
        if this.poll_delay(cx).is_pending() {
            return Poll::Pending;
        }
        let max = this.rng.piece(this.cfg.frag);
        super::fragment::poll_read_at_most(Pin::new(&mut this.inner), cx, buf, max)
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
        let n = this.rng.piece(this.cfg.frag).min(data.len());
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

    #[test]
    fn config_parses_and_refuses_nonsense() {
        let c = ChaosConfig::parse("seed=7,frag=1,delay=50,delay_ms=3,drop=10").unwrap();
        assert_eq!(
            c,
            ChaosConfig {
                seed: 7,
                frag: 1,
                delay_per_mille: 50,
                delay_max: Duration::from_millis(3),
                drop_at_frame: Some(10)
            }
        );
        assert_eq!(ChaosConfig::parse("42").unwrap().seed, 42);
        assert_eq!(ChaosConfig::parse("seed=7;frag=1;delay=50;delay_ms=3;drop=10").unwrap(), c);
        assert!(ChaosConfig::parse("frag=3").unwrap_err().contains("no seed"));
        assert!(ChaosConfig::parse("seed=1,bogus=2").unwrap_err().contains("unknown key"));
        assert!(ChaosConfig::parse("seed=x").is_err());
    }

    #[test]
    fn the_same_seed_gives_the_same_pieces() {
        let draw = |seed| {
            let mut r = Rng::new(seed);
            (0..100).map(|_| r.piece(64)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        assert!(draw(3).iter().all(|&p| (1..=64).contains(&p)));
    }

    #[tokio::test]
    async fn bytes_arrive_whole_through_pieces_and_delays() {
        let cfg = ChaosConfig::parse("seed=9,frag=7,delay=300,delay_ms=1").unwrap();
        let (a, b) = tokio::io::duplex(1024);
        let mut w = Chaos::new(a, &cfg, "w");
        let mut r = Chaos::new(b, &cfg, "r");
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
        let cfg = ChaosConfig::parse("seed=1,frag=3,drop=3").unwrap();
        let (a, mut b) = tokio::io::duplex(4096);
        let mut w = Chaos::new(a, &cfg, "w");
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
