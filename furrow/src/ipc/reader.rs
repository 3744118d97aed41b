//! Reading messages off a byte stream.

use super::transport::{BoxRead, BoxWrite};
use bytes::BytesMut;
use furrow_proto::Msg;
use furrow_proto::codec::{self, DecodeError, FrameDecoder, FrameError};
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The frame cannot be accepted (too large): the channel must close.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The frame was complete but its content is not a valid message; the
    /// stream is still in sync and reading may go on.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame ({0} bytes pending)")]
    Truncated(usize),
}

/// One message read: a stream message on its own path (the hot one: no
/// `Msg` is built, and what moves is some 40 bytes, not a `Msg`'s 250), or
/// any other message, boxed.
#[derive(Debug)]
pub(crate) enum Frame {
    /// A `Yield`: its dialog and payload.
    Yield(furrow_proto::Cid, furrow_proto::Payload),
    /// A `Yields`: its dialog and payloads.
    Yields(furrow_proto::Cid, Vec<furrow_proto::Payload>),
    Msg(Box<Msg>),
}

impl Frame {
    fn decode(frame: bytes::Bytes) -> Result<Frame, DecodeError> {
        if let Some((cid, pld)) = codec::decode_yield(&frame) {
            return Ok(Frame::Yield(cid, pld));
        }
        if let Some((cid, plds)) = codec::decode_yields(&frame) {
            return Ok(Frame::Yields(cid, plds));
        }
        Ok(match codec::decode_msg(frame)? {
            // Laid out otherwise than furrow writes it: the same values.
            Msg::Yields { cid, plds } => Frame::Yields(cid, plds),
            other => Frame::Msg(Box::new(other)),
        })
    }

    pub(crate) fn into_msg(self) -> Msg {
        match self {
            Frame::Yield(cid, pld) => Msg::Yield { cid, pld },
            Frame::Yields(cid, plds) => Msg::Yields { cid, plds },
            Frame::Msg(m) => *m,
        }
    }
}

/// Reads whole messages from a stream that may deliver any number of bytes
/// per read.
pub(crate) struct FrameReader {
    read: BoxRead,
    buf: BytesMut,
    decoder: FrameDecoder,
    /// Bytes read from the stream so far.
    read_total: u64,
    /// Frames taken out whole so far.
    frames_done: u64,
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FrameReader({} bytes buffered)", self.buf.len())
    }
}

const READ_CHUNK: usize = 16 * 1024;

impl FrameReader {
    pub(crate) fn new(read: BoxRead, max_frame: usize) -> Self {
        FrameReader {
            read,
            buf: BytesMut::with_capacity(READ_CHUNK),
            decoder: FrameDecoder::new(max_frame),
            read_total: 0,
            frames_done: 0,
        }
    }

    /// Change the frame limit (between frames: after a handshake, an
    /// authenticated peer may send frames up to the configured limit).
    pub(crate) fn set_max_frame(&mut self, max_frame: usize) {
        self.decoder = FrameDecoder::new(max_frame);
    }

    /// Bytes read from the stream so far (whole messages or not).
    pub(crate) fn bytes_read(&self) -> u64 {
        self.read_total
    }

    /// The frame in progress, if part of one is buffered: which frame it
    /// is (frames completed before it) and its bytes in and announced
    /// (`None` while the header is incomplete).
    pub(crate) fn partial(&self) -> Option<(u64, usize, Option<usize>)> {
        (!self.buf.is_empty()).then(|| (self.frames_done, self.buf.len(), FrameDecoder::frame_len(&self.buf)))
    }

    /// The next message; `Ok(None)` on a clean end of stream (between
    /// frames).
    ///
    /// # Cancel safety
    /// Cancel safe: bytes already read stay in the internal buffer, and a
    /// message is only taken out of it once it is complete.
    pub(crate) async fn next(&mut self) -> Result<Option<Msg>, ReadError> {
        Ok(self.next_frame().await?.map(Frame::into_msg))
    }

    /// [`next`](Self::next), with a stream message on its own path.
    ///
    /// # Cancel safety
    /// As [`next`](Self::next).
    pub(crate) async fn next_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        if !self.fill().await? {
            return Ok(None);
        }
        self.next_buffered()
    }

    /// Wait until a whole frame is buffered (`Ok(true)`: take it, and any
    /// others that came with it, with [`next_buffered`](Self::next_buffered)
    /// or as a run), or the stream ended cleanly between frames
    /// (`Ok(false)`). A frame over the limit is an error as soon as its
    /// header is in.
    ///
    /// # Cancel safety
    /// Cancel safe: bytes already read stay in the internal buffer.
    pub(crate) async fn fill(&mut self) -> Result<bool, ReadError> {
        loop {
            if self.decoder.complete(&self.buf)?.is_some() {
                return Ok(true);
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                // Grow with what arrived, never with what was announced:
                // room doubles as bytes come in (amortised, like a `Vec`),
                // up to the rest of the frame. A peer announcing 32 MiB and
                // sending one byte costs one chunk, not 32 MiB.
                let have = self.buf.len();
                let rest = FrameDecoder::frame_len(&self.buf).map_or(READ_CHUNK, |total| total.saturating_sub(have));
                self.buf.reserve(rest.clamp(1, READ_CHUNK.max(have)));
            }
            let n = self.read.read_buf(&mut self.buf).await?;
            self.read_total += n as u64;
            if n == 0 {
                return if self.buf.is_empty() { Ok(false) } else { Err(ReadError::Truncated(self.buf.len())) };
            }
        }
    }
}

impl FrameReader {
    /// The run of `Yield` frames for one dialog at the front of the buffer,
    /// if whole frames of at least two are buffered (see
    /// `codec::scan_yield_run`); nothing is taken. Never reads.
    pub(crate) fn peek_yield_run(&self, max_frames: usize) -> Option<codec::YieldRun> {
        codec::scan_yield_run(&self.buf, self.decoder.max_frame(), max_frames)
    }

    /// Take the frames of `run`, as [`peek_yield_run`](Self::peek_yield_run)
    /// just found them: one buffer, no copy.
    pub(crate) fn take_yield_run(&mut self, run: &codec::YieldRun) -> bytes::Bytes {
        self.frames_done += run.frames as u64;
        self.buf.split_to(run.len).freeze()
    }

    /// The next message if a whole frame of it is already buffered; never
    /// reads. Lets the channel's reader handle a burst of frames that one
    /// read brought in without going back through its `select!` for each.
    pub(crate) fn next_buffered(&mut self) -> Result<Option<Frame>, ReadError> {
        match self.decoder.decode(&mut self.buf)? {
            Some(frame) => {
                self.frames_done += 1;
                Ok(Some(Frame::decode(frame)?))
            }
            None => Ok(None),
        }
    }
}

/// Write one message directly (used before a channel's writer task exists,
/// during handshakes).
///
/// # Cancel safety
/// Not cancel safe: a dropped write may leave half a frame on the socket;
/// callers drop the whole connection in that case.
pub(crate) async fn write_msg(w: &mut BoxWrite, msg: &Msg, max_frame: usize) -> io::Result<()> {
    let mut buf = BytesMut::new();
    codec::encode(msg, &mut buf, max_frame).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    w.write_all(&buf).await?;
    w.flush().await
}
