//! A transport wrapper that delivers bytes in small pieces.
//!
//! Seed 000 of this project is a reader that assumed one `read` returns one
//! whole message; it failed once in a blue moon and could not be
//! reproduced. With [`Fragmenting`] every `read` returns at most `max` bytes
//! and every `write` accepts at most `max` bytes, so such an assumption
//! fails on the first frame, every time.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Environment variable: when set to `N > 0`, every channel of every actor
/// started from this environment reads and writes at most `N` bytes per
/// operation.
pub(crate) const FRAGMENT_ENV: &str = "FURROW_FRAGMENT";

/// The fragment size requested through [`FRAGMENT_ENV`], if any.
pub(crate) fn from_env() -> Option<usize> {
    std::env::var(FRAGMENT_ENV).ok()?.parse::<usize>().ok().filter(|n| *n > 0)
}

/// Cuts reads and writes of `inner` to at most `max` bytes each.
#[derive(Debug)]
pub(crate) struct Fragmenting<T> {
    inner: T,
    max: usize,
}

impl<T> Fragmenting<T> {
    pub(crate) fn new(inner: T, max: usize) -> Self {
        Fragmenting { inner, max: max.max(1) }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Fragmenting<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let max = self.max;
        poll_read_at_most(Pin::new(&mut self.inner), cx, buf, max)
    }
}

/// Read from `inner` into `buf`, at most `max` bytes (shared with the chaos
/// transport).
pub(crate) fn poll_read_at_most<R: AsyncRead + ?Sized>(
    inner: Pin<&mut R>,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
    max: usize,
) -> Poll<io::Result<()>> {
    let mut small = buf.take(max.min(buf.remaining()));
    let res = inner.poll_read(cx, &mut small);
    let n = small.filled().len();
    // `take` hands out a view on the unfilled part: account for what the
    // inner reader wrote into it.
    // SAFETY: the inner reader initialised and filled exactly `n` bytes of
    // the region `take` lent it, which is the start of `buf`'s unfilled part.
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    res
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Fragmenting<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let n = self.max.min(data.len());
        Pin::new(&mut self.inner).poll_write(cx, &data[..n])
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
    async fn one_byte_at_a_time() {
        let (a, b) = tokio::io::duplex(64);
        let mut w = Fragmenting::new(a, 1);
        let mut r = Fragmenting::new(b, 1);
        let writer = tokio::spawn(async move { w.write_all(b"hello world").await });
        let mut got = Vec::new();
        let mut buf = [0u8; 8];
        while got.len() < 11 {
            let n = r.read(&mut buf).await.expect("read");
            assert_eq!(n, 1, "a fragmenting reader hands out one byte per read");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(&got, b"hello world");
        writer.await.expect("join").expect("write");
    }
}
