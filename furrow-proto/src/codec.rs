//! Frames: a 4-byte little-endian length, then one msgpack map.
//!
//! Reading is split in two so that a transport can hand over bytes in
//! pieces of any size (down to one byte): [`FrameDecoder::decode`] only ever
//! takes a *complete* frame off the front of a buffer, and checks the
//! declared length against the limit before reserving any memory for it.
//! [`decode_msg`] then decodes the envelope of a complete frame.

use crate::msg::{MsgKind, decode_body};
use crate::{DEFAULT_MAX_FRAME, Msg};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Deserialize;

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

/// Deepest msgpack nesting accepted in an envelope (arrays and maps count
/// one level each). rmp-serde's own default (1024) is deep enough for a
/// frame of about 1 KiB to overflow a 2 MiB thread stack in a debug build;
/// real envelopes nest at most four levels (payloads are opaque bytes).
pub(crate) const MAX_DEPTH: usize = 64;

/// A frame that cannot be accepted; the channel must be closed after it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The declared (or encoded) length exceeds the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// A zero-length frame (never valid: a message is at least a map header).
    #[error("empty frame")]
    Empty,
}

/// A complete frame whose content is not a valid message. The frame
/// boundary is intact, so the channel can answer with an `Error` and go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No `msg_type` key, or the frame is not a msgpack map at all.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// `msg_type` names no message this version knows.
    #[error("unknown msg_type {0:?}")]
    UnknownType(String),
    /// The variant is known but a field is missing or has the wrong type.
    #[error("malformed {kind} message: {reason}")]
    BadFields {
        /// The message's `msg_type`.
        kind: &'static str,
        /// What was wrong (names the field).
        reason: String,
    },
}

/// An outgoing message that cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded message is larger than the limit; nothing was written.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// serde refused the value.
    #[error("cannot encode message: {0}")]
    Serialize(String),
}

/// Splits complete frames off the front of a byte buffer.
///
/// # Example
/// ```
/// use furrow_proto::codec::FrameDecoder;
/// use bytes::BytesMut;
/// let mut d = FrameDecoder::new(16);
/// let mut buf = BytesMut::from(&[3u8, 0, 0][..]);   // header not complete yet
/// assert!(d.decode(&mut buf).unwrap().is_none());
/// buf.extend_from_slice(&[0, 0x80, 1]);            // 3-byte body, one byte short
/// assert!(d.decode(&mut buf).unwrap().is_none());
/// buf.extend_from_slice(&[2]);
/// assert_eq!(&d.decode(&mut buf).unwrap().unwrap()[..], &[0x80, 1, 2][..]);
/// assert!(buf.is_empty());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder { max_frame: DEFAULT_MAX_FRAME }
    }
}

impl FrameDecoder {
    /// A decoder refusing frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder { max_frame }
    }

    /// The configured limit.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Take one complete frame off the front of `buf`, or `Ok(None)` when
    /// more bytes are needed. When the header is complete but the body is
    /// not, reserves room for exactly the rest of the frame (the length has
    /// been checked against the limit first).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > self.max_frame {
            return Err(FrameError::TooLarge { len, max: self.max_frame });
        }
        if len == 0 {
            return Err(FrameError::Empty);
        }
        let total = HEADER_LEN + len;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        Ok(Some(buf.split_to(len).freeze()))
    }
}

/// Append `msg` as one frame (header and body) to `out`. On error `out` is
/// left as it was.
pub fn encode(msg: &Msg, out: &mut BytesMut, max_frame: usize) -> Result<(), EncodeError> {
    let start = out.len();
    out.put_u32_le(0);
    let mut ser = rmp_serde::Serializer::new(out.writer()).with_struct_map();
    if let Err(e) = serde::Serialize::serialize(msg, &mut ser) {
        out.truncate(start);
        return Err(EncodeError::Serialize(e.to_string()));
    }
    let len = out.len() - start - HEADER_LEN;
    if len > max_frame || len > u32::MAX as usize {
        out.truncate(start);
        return Err(FrameError::TooLarge { len, max: max_frame }.into());
    }
    out[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Encode `msg` into a fresh buffer holding one frame.
pub fn encode_to_bytes(msg: &Msg, max_frame: usize) -> Result<Bytes, EncodeError> {
    let mut out = BytesMut::with_capacity(64);
    encode(msg, &mut out, max_frame)?;
    Ok(out.freeze())
}

/// Decode one frame body (as returned by [`FrameDecoder::decode`]).
///
/// The `msg_type` is read first (any key order is accepted; unknown keys
/// are skipped), then the body is decoded as that variant.
pub fn decode_msg(frame: Bytes) -> Result<Msg, DecodeError> {
    #[derive(Deserialize)]
    struct Tag<'a> {
        #[serde(borrow)]
        msg_type: std::borrow::Cow<'a, str>,
    }
    // rmp-serde would also read a struct from an array (fields by
    // position): refuse anything but a map up front.
    if !matches!(frame.first(), Some(0x80..=0x8f | 0xde | 0xdf)) {
        return Err(DecodeError::Malformed("frame is not a msgpack map".to_owned()));
    }
    let mut de = rmp_serde::Deserializer::from_read_ref(&frame[..]);
    de.set_max_depth(MAX_DEPTH);
    let tag = Tag::deserialize(&mut de).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let kind = MsgKind::from_wire(&tag.msg_type).ok_or_else(|| DecodeError::UnknownType(tag.msg_type.to_string()))?;
    decode_body(kind, &frame).map_err(|e| {
        // A missing field is reported at the level of the struct (path
        // `.`) and its message names the field; a field of the wrong type
        // is only named by the path.
        let path = e.path().to_string();
        let inner = e.into_inner();
        let reason = if path == "." { inner.to_string() } else { format!("field `{path}`: {inner}") };
        DecodeError::BadFields { kind: kind.as_str(), reason }
    })
}
