//! Frames: a 4-byte little-endian length, then one msgpack map.
//!
//! Reading is split in two so that a transport can hand over bytes in
//! pieces of any size (down to one byte): [`FrameDecoder::decode`] only ever
//! takes a *complete* frame off the front of a buffer, and checks the
//! declared length against the limit before reserving any memory for it.
//! [`decode_msg`] then decodes the envelope of a complete frame.
//!
//! A read loop over a byte stream that arrives in arbitrary pieces:
//!
//! ```
//! use bytes::BytesMut;
//! use furrow_proto::codec::{self, FrameDecoder};
//! use furrow_proto::{DEFAULT_MAX_FRAME, Msg};
//!
//! // Two frames, as a peer wrote them.
//! let mut wire = BytesMut::new();
//! codec::encode(&Msg::Stop { cid: 1 }, &mut wire, DEFAULT_MAX_FRAME).unwrap();
//! codec::encode(&Msg::Credit { cid: 1, n: 8, bytes: None }, &mut wire, DEFAULT_MAX_FRAME).unwrap();
//!
//! // Read them three bytes at a time.
//! let mut decoder = FrameDecoder::default();
//! let mut buf = BytesMut::new();
//! let mut got = Vec::new();
//! for piece in wire.chunks(3) {
//!     buf.extend_from_slice(piece);
//!     while let Some(frame) = decoder.decode(&mut buf).unwrap() {
//!         got.push(codec::decode_msg(frame).unwrap());
//!     }
//! }
//! assert_eq!(got, vec![Msg::Stop { cid: 1 }, Msg::Credit { cid: 1, n: 8, bytes: None }]);
//! ```

use crate::msg::{MsgKind, decode_body};
use crate::{DEFAULT_MAX_FRAME, Msg, Payload};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Deserialize;

/// Length of the frame header.
///
/// ```
/// use furrow_proto::codec::{HEADER_LEN, encode_to_bytes};
/// use furrow_proto::{DEFAULT_MAX_FRAME, Msg};
/// let frame = encode_to_bytes(&Msg::Stop { cid: 3 }, DEFAULT_MAX_FRAME).unwrap();
/// let body_len = u32::from_le_bytes(frame[..HEADER_LEN].try_into().unwrap()) as usize;
/// assert_eq!(body_len, frame.len() - HEADER_LEN);
/// ```
pub const HEADER_LEN: usize = 4;

/// Deepest msgpack nesting accepted in an envelope (arrays and maps count
/// one level each). rmp-serde's own default (1024) is deep enough for a
/// frame of about 1 KiB to overflow a 2 MiB thread stack in a debug build;
/// real envelopes nest at most four levels (payloads are opaque bytes).
pub(crate) const MAX_DEPTH: usize = 64;

/// A frame that cannot be accepted; the channel must be closed after it.
///
/// ```
/// use bytes::BytesMut;
/// use furrow_proto::codec::{FrameDecoder, FrameError};
/// // A header announcing a 1 MiB body, against a 64 KiB limit: refused
/// // before the body is read or any room is reserved for it.
/// let mut buf = BytesMut::from(&(1u32 << 20).to_le_bytes()[..]);
/// let err = FrameDecoder::new(64 * 1024).decode(&mut buf).unwrap_err();
/// assert_eq!(err, FrameError::TooLarge { len: 1 << 20, max: 64 * 1024 });
/// ```
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
///
/// ```
/// use bytes::Bytes;
/// use furrow_proto::codec::{DecodeError, decode_msg};
/// // A msgpack array, not a map.
/// assert!(matches!(decode_msg(Bytes::from_static(&[0x90])), Err(DecodeError::Malformed(_))));
/// // {"msg_type": "Nope"}
/// let frame = Bytes::from_static(b"\x81\xa8msg_type\xa4Nope");
/// assert_eq!(decode_msg(frame), Err(DecodeError::UnknownType("Nope".into())));
/// ```
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
///
/// ```
/// use bytes::BytesMut;
/// use furrow_proto::codec::{EncodeError, FrameError, encode};
/// use furrow_proto::{Msg, Payload};
/// let big = Msg::Return { cid: 1, pld: Payload::encode(&vec![0u8; 100]).unwrap() };
/// let mut out = BytesMut::new();
/// let err = encode(&big, &mut out, 64).unwrap_err();
/// assert!(matches!(err, EncodeError::Frame(FrameError::TooLarge { max: 64, .. })));
/// assert!(out.is_empty()); // nothing was written
/// ```
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
/// assert_eq!(d.max_frame(), 16);
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

    /// The whole length (header included) of the frame at the front of
    /// `buf`, once its header is in.
    ///
    /// ```
    /// use furrow_proto::codec::FrameDecoder;
    /// assert_eq!(FrameDecoder::frame_len(&[3, 0]), None);
    /// assert_eq!(FrameDecoder::frame_len(&[3, 0, 0, 0, 0x80]), Some(7));
    /// ```
    pub fn frame_len(buf: &[u8]) -> Option<usize> {
        let head: [u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(HEADER_LEN + u32::from_le_bytes(head) as usize)
    }

    /// Take one complete frame off the front of `buf`, or `Ok(None)` when
    /// more bytes are needed.
    ///
    /// Allocates nothing for a frame that has not arrived: growing `buf`
    /// is the caller's, as bytes come in, so a peer that announces a large
    /// frame and then sends nothing does not make the receiver reserve it.
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
        if buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        Ok(Some(buf.split_to(len).freeze()))
    }
}

/// Append `msg` as one frame (header and body) to `out`. On error `out` is
/// left as it was.
///
/// ```
/// use bytes::BytesMut;
/// use furrow_proto::codec::encode;
/// use furrow_proto::{DEFAULT_MAX_FRAME, Msg};
/// // Coalesce several frames into one buffer, written with one syscall.
/// let mut out = BytesMut::new();
/// for cid in [1, 3, 5] {
///     encode(&Msg::Stop { cid }, &mut out, DEFAULT_MAX_FRAME).unwrap();
/// }
/// assert!(out.len() > 3 * furrow_proto::codec::HEADER_LEN);
/// ```
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

/// The fixed start of a `Yield` frame body as furrow writes it: a map of
/// three entries whose first two keys are `msg_type: "Yield"` and `cid`.
const YIELD_HEAD: &[u8] = b"\x83\xa8msg_type\xa5Yield\xa3cid";
const PLD_KEY: &[u8] = b"\xa3pld";

/// Append a `Yield { cid, pld: value }` frame to `out`, encoding `value`
/// straight into the frame (one pass, no intermediate payload buffer).
/// The result is an ordinary `Yield` message (`pld` as msgpack `bin 32`).
/// Returns the payload's length (what stream credit counts). On error
/// `out` is left as it was.
///
/// ```
/// use bytes::BytesMut;
/// use furrow_proto::codec::{FrameDecoder, decode_msg, encode_yield};
/// use furrow_proto::{DEFAULT_MAX_FRAME, Msg};
/// let mut out = BytesMut::new();
/// encode_yield(7, &("tick", 42u32), &mut out, DEFAULT_MAX_FRAME).unwrap();
/// let frame = FrameDecoder::default().decode(&mut out).unwrap().unwrap();
/// let Msg::Yield { cid, pld } = decode_msg(frame).unwrap() else { unreachable!() };
/// assert_eq!(cid, 7);
/// assert_eq!(pld.decode::<(String, u32)>().unwrap(), ("tick".to_string(), 42));
/// ```
pub fn encode_yield<T: serde::Serialize + ?Sized>(
    cid: u64,
    value: &T,
    out: &mut BytesMut,
    max_frame: usize,
) -> Result<usize, EncodeError> {
    encode_yield_with(cid, out, max_frame, |out| {
        let mut ser = rmp_serde::Serializer::new(out.writer()).with_struct_map();
        value.serialize(&mut ser).map_err(|e| EncodeError::Serialize(e.to_string()))
    })
}

/// Append a `Yield { cid, pld }` frame to `out` whose payload is already
/// encoded (the same frame [`encode_yield`] writes for the value `pld`
/// encodes). Returns the payload's length. On error `out` is left as it
/// was.
///
/// ```
/// use bytes::BytesMut;
/// use furrow_proto::codec::{encode_yield, encode_yield_payload};
/// use furrow_proto::{DEFAULT_MAX_FRAME, Payload};
/// // Encoded once (e.g. on the caller's thread), framed later: same bytes.
/// let pld = Payload::encode(&[1u8, 2, 3]).unwrap();
/// let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
/// encode_yield_payload(9, &pld, &mut a, DEFAULT_MAX_FRAME).unwrap();
/// encode_yield(9, &[1u8, 2, 3], &mut b, DEFAULT_MAX_FRAME).unwrap();
/// assert_eq!(a, b);
/// ```
pub fn encode_yield_payload(
    cid: u64,
    pld: &Payload,
    out: &mut BytesMut,
    max_frame: usize,
) -> Result<usize, EncodeError> {
    encode_yield_with(cid, out, max_frame, |out| {
        out.extend_from_slice(&pld.0);
        Ok(())
    })
}

/// The `Yield` frame around a payload that `write_pld` appends.
fn encode_yield_with(
    cid: u64,
    out: &mut BytesMut,
    max_frame: usize,
    write_pld: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<usize, EncodeError> {
    let start = out.len();
    out.put_u32_le(0);
    out.extend_from_slice(YIELD_HEAD);
    write_uint(out, cid);
    out.extend_from_slice(PLD_KEY);
    out.put_u8(0xc6);
    let bin_len_at = out.len();
    out.put_u32(0);
    let pld_start = out.len();
    if let Err(e) = write_pld(out) {
        out.truncate(start);
        return Err(e);
    }
    let pld_len = out.len() - pld_start;
    let len = out.len() - start - HEADER_LEN;
    if len > max_frame || pld_len > u32::MAX as usize {
        out.truncate(start);
        return Err(FrameError::TooLarge { len, max: max_frame }.into());
    }
    out[bin_len_at..bin_len_at + 4].copy_from_slice(&(pld_len as u32).to_be_bytes());
    out[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(pld_len)
}

/// msgpack unsigned integer, smallest form.
fn write_uint(out: &mut BytesMut, v: u64) {
    if v < 0x80 {
        out.put_u8(v as u8);
    } else if v <= u8::MAX as u64 {
        out.put_u8(0xcc);
        out.put_u8(v as u8);
    } else if v <= u16::MAX as u64 {
        out.put_u8(0xcd);
        out.put_u16(v as u16);
    } else if v <= u32::MAX as u64 {
        out.put_u8(0xce);
        out.put_u32(v as u32);
    } else {
        out.put_u8(0xcf);
        out.put_u64(v);
    }
}

/// The hot path of decoding: a frame body (as [`FrameDecoder::decode`]
/// returns it) that is a `Yield` in the canonical layout, the one both
/// encoders write, decoded without serde and without copying the payload:
/// its dialog and payload. Anything else (another message, or a `Yield`
/// laid out otherwise) is `None`: decode it with [`decode_msg`].
///
/// A receiver that routes stream messages on their own path uses this to
/// avoid building a [`Msg`] per message.
///
/// ```
/// use furrow_proto::codec::{HEADER_LEN, decode_yield, encode_yield};
/// use furrow_proto::DEFAULT_MAX_FRAME;
/// let mut buf = bytes::BytesMut::new();
/// encode_yield(7, &42u64, &mut buf, DEFAULT_MAX_FRAME).unwrap();
/// let (cid, pld) = decode_yield(&buf.freeze().slice(HEADER_LEN..)).unwrap();
/// assert_eq!((cid, pld.decode::<u64>().unwrap()), (7, 42));
/// ```
pub fn decode_yield(frame: &Bytes) -> Option<(u64, crate::Payload)> {
    let (cid, at) = parse_yield(frame)?;
    Some((cid, crate::Payload(frame.slice(at..))))
}

/// A canonical `Yield` frame body: its dialog, and where its payload
/// starts (it runs to the end of the body).
fn parse_yield(frame: &[u8]) -> Option<(u64, usize)> {
    let rest = frame.strip_prefix(YIELD_HEAD)?;
    let (cid, rest) = read_uint(rest)?;
    let rest = rest.strip_prefix(PLD_KEY)?;
    let (len, rest) = match rest.split_first()? {
        (0xc4, r) => (*r.first()? as usize, r.get(1..)?),
        (0xc5, r) => (u16::from_be_bytes(r.get(..2)?.try_into().ok()?) as usize, r.get(2..)?),
        (0xc6, r) => (u32::from_be_bytes(r.get(..4)?.try_into().ok()?) as usize, r.get(4..)?),
        _ => return None,
    };
    // The payload must be exactly the rest of the frame.
    if rest.len() != len {
        return None;
    }
    Some((cid, frame.len() - len))
}

/// Consecutive `Yield` frames for one dialog, whole, at the front of a
/// receive buffer: found by [`scan_yield_run`], read back with
/// [`YieldFrames`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct YieldRun {
    /// Their dialog.
    pub cid: u64,
    /// How many frames.
    pub frames: usize,
    /// Their length on the wire, headers included.
    pub len: usize,
    /// Their payloads' bytes, summed (what byte credit counts).
    pub payload_bytes: u64,
}

/// The run of canonical `Yield` frames (see [`decode_yield`]) for one
/// dialog at the front of `buf`, whole frames only, at most `max_frames`
/// of them; `None` unless there are at least two. A frame that is anything
/// else (another message, another dialog, a frame over `max_frame` or
/// empty, one not fully buffered) ends the run, and is left for
/// [`FrameDecoder::decode`] and [`decode_msg`], which report what is wrong
/// with it.
///
/// This is the receiver's hot path: a run is routed as one (see
/// `session::Session::on_recv_yield_run`) and handed to its consumer as
/// one buffer, instead of one frame, message and queue entry per value.
///
/// ```
/// use furrow_proto::codec::{YieldFrames, encode_yield, scan_yield_run};
/// use furrow_proto::{DEFAULT_MAX_FRAME, Msg, codec::encode};
/// let mut buf = bytes::BytesMut::new();
/// for v in [10u64, 20, 30] {
///     encode_yield(5, &v, &mut buf, DEFAULT_MAX_FRAME).unwrap();
/// }
/// encode(&Msg::Stop { cid: 5 }, &mut buf, DEFAULT_MAX_FRAME).unwrap();
/// let run = scan_yield_run(&buf, DEFAULT_MAX_FRAME, 64).unwrap();
/// assert_eq!((run.cid, run.frames), (5, 3));
/// let frames = buf.split_to(run.len).freeze();
/// let got: Vec<u64> = YieldFrames::new(frames).map(|p| p.decode().unwrap()).collect();
/// assert_eq!(got, [10, 20, 30]);
/// ```
pub fn scan_yield_run(buf: &[u8], max_frame: usize, max_frames: usize) -> Option<YieldRun> {
    let mut run = YieldRun { cid: 0, frames: 0, len: 0, payload_bytes: 0 };
    while run.frames < max_frames {
        let rest = &buf[run.len..];
        let Some(total) = FrameDecoder::frame_len(rest) else { break };
        let body_len = total - HEADER_LEN;
        if body_len == 0 || body_len > max_frame || rest.len() < total {
            break;
        }
        let Some((cid, at)) = parse_yield(&rest[HEADER_LEN..total]) else { break };
        if run.frames > 0 && cid != run.cid {
            break;
        }
        run.cid = cid;
        run.frames += 1;
        run.len += total;
        run.payload_bytes += (body_len - at) as u64;
    }
    (run.frames >= 2).then_some(run)
}

/// The payloads of a run of frames [`scan_yield_run`] found (the run's
/// `len` bytes, split off the buffer), in order, each sharing the run's
/// buffer (no copy).
#[derive(Debug, Clone)]
pub struct YieldFrames {
    frames: Bytes,
    at: usize,
}

impl YieldFrames {
    /// Read back the frames of a run.
    pub fn new(frames: Bytes) -> YieldFrames {
        YieldFrames { frames, at: 0 }
    }

    /// Whether every payload was taken.
    pub fn is_empty(&self) -> bool {
        self.at >= self.frames.len()
    }
}

impl Iterator for YieldFrames {
    type Item = crate::Payload;

    fn next(&mut self) -> Option<crate::Payload> {
        let rest = self.frames.get(self.at..)?;
        let total = FrameDecoder::frame_len(rest).filter(|&t| t <= rest.len())?;
        // Checked when the run was scanned; anything else ends it.
        let (_, at) = parse_yield(&rest[HEADER_LEN..total])?;
        let start = self.at;
        self.at += total;
        Some(crate::Payload(self.frames.slice(start + HEADER_LEN + at..start + total)))
    }
}

fn read_uint(b: &[u8]) -> Option<(u64, &[u8])> {
    let (&m, r) = b.split_first()?;
    Some(match m {
        0x00..=0x7f => (m as u64, r),
        0xcc => (*r.first()? as u64, r.get(1..)?),
        0xcd => (u16::from_be_bytes(r.get(..2)?.try_into().ok()?) as u64, r.get(2..)?),
        0xce => (u32::from_be_bytes(r.get(..4)?.try_into().ok()?) as u64, r.get(4..)?),
        0xcf => (u64::from_be_bytes(r.get(..8)?.try_into().ok()?), r.get(8..)?),
        _ => return None,
    })
}

/// Encode `msg` into a fresh buffer holding one frame.
///
/// ```
/// use furrow_proto::codec::{HEADER_LEN, decode_msg, encode_to_bytes};
/// use furrow_proto::{DEFAULT_MAX_FRAME, Msg};
/// let msg = Msg::Credit { cid: 4, n: 16, bytes: Some(1 << 20) };
/// let frame = encode_to_bytes(&msg, DEFAULT_MAX_FRAME).unwrap();
/// assert_eq!(decode_msg(frame.slice(HEADER_LEN..)).unwrap(), msg);
/// ```
pub fn encode_to_bytes(msg: &Msg, max_frame: usize) -> Result<Bytes, EncodeError> {
    let mut out = BytesMut::with_capacity(64);
    encode(msg, &mut out, max_frame)?;
    Ok(out.freeze())
}

/// Decode one frame body (as returned by [`FrameDecoder::decode`]).
///
/// The `msg_type` is read first (any key order is accepted; unknown keys
/// are skipped), then the body is decoded as that variant.
///
/// ```
/// use furrow_proto::codec::{DecodeError, decode_msg};
/// use furrow_proto::Msg;
///
/// // A peer of a newer version may send fields this one does not know.
/// #[derive(serde::Serialize)]
/// struct NewerStop { cid: u64, msg_type: &'static str, reason: &'static str }
/// let body = rmp_serde::to_vec_named(&NewerStop { cid: 5, msg_type: "Stop", reason: "done" }).unwrap();
/// assert_eq!(decode_msg(body.into()).unwrap(), Msg::Stop { cid: 5 });
///
/// // A missing field is named.
/// let body = rmp_serde::to_vec_named(&std::collections::BTreeMap::from([("msg_type", "Stop")])).unwrap();
/// match decode_msg(body.into()) {
///     Err(DecodeError::BadFields { kind, reason }) => {
///         assert_eq!(kind, "Stop");
///         assert!(reason.contains("cid"));
///     }
///     other => panic!("unexpected {other:?}"),
/// }
/// ```
pub fn decode_msg(frame: Bytes) -> Result<Msg, DecodeError> {
    if let Some((cid, pld)) = decode_yield(&frame) {
        return Ok(Msg::Yield { cid, pld });
    }
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
