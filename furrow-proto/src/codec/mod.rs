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

mod stream;

pub use stream::{
    Appended, OpenYields, YIELDS_BATCH_BYTES, YieldFrames, YieldRun, append_yield_inline, append_yield_value,
    decode_yield, decode_yields, encode_yield, encode_yield_gathered, encode_yield_payload, scan_yield_run,
    undo_append,
};

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
        let Some(len) = self.complete(buf)? else { return Ok(None) };
        buf.advance(HEADER_LEN);
        Ok(Some(buf.split_to(len).freeze()))
    }

    /// The body length of the frame at the front of `buf` once all of it
    /// is there (`Ok(None)` before), checked as [`decode`](Self::decode)
    /// checks it; nothing is taken.
    ///
    /// ```
    /// use furrow_proto::codec::{FrameDecoder, FrameError};
    /// let d = FrameDecoder::new(8);
    /// assert_eq!(d.complete(&[2, 0, 0, 0, 0xc0]).unwrap(), None);
    /// assert_eq!(d.complete(&[2, 0, 0, 0, 0xc0, 0xc0]).unwrap(), Some(2));
    /// assert!(matches!(d.complete(&[9, 0, 0, 0]), Err(FrameError::TooLarge { len: 9, max: 8 })));
    /// ```
    pub fn complete(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(total) = Self::frame_len(buf) else { return Ok(None) };
        let len = total - HEADER_LEN;
        if len > self.max_frame {
            return Err(FrameError::TooLarge { len, max: self.max_frame });
        }
        if len == 0 {
            return Err(FrameError::Empty);
        }
        Ok((buf.len() >= total).then_some(len))
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
    // Room for the whole frame up front: growing from a small buffer would
    // copy a large payload several times over (and fault in fresh pages at
    // each step).
    let mut out = BytesMut::with_capacity(size_hint(msg).min(max_frame.saturating_add(HEADER_LEN)));
    encode(msg, &mut out, max_frame)?;
    Ok(out.freeze())
}

/// A frame ready to write: whole, or in parts written one after the
/// other (see [`encode_parts`] and [`encode_yield_gathered`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// One buffer holding the whole frame.
    Whole(Bytes),
    /// The frame's header and envelope, up to and including the `bin`
    /// header of its payload; then the payload itself, not copied.
    Parts {
        /// Everything before the payload.
        head: Bytes,
        /// The payload: the last thing in the frame.
        body: Bytes,
    },
    /// The frame in several buffers, in order: the large [`Bytes`](crate::Bytes)
    /// values in it are their senders' own buffers, not copied
    /// ([`encode_yield_gathered`]). Never fewer than two parts, none empty.
    Gather(Vec<Bytes>),
}

impl Encoded {
    /// The frame's length on the wire (header included).
    pub fn len(&self) -> usize {
        match self {
            Encoded::Whole(f) => f.len(),
            Encoded::Parts { head, body } => head.len() + body.len(),
            Encoded::Gather(parts) => parts.iter().map(Bytes::len).sum(),
        }
    }

    /// Whether the frame is empty: never for a frame `encode_parts` made,
    /// which has at least its header.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame in one buffer (copies a split frame).
    pub fn into_whole(self) -> Bytes {
        match self {
            Encoded::Whole(f) => f,
            Encoded::Parts { head, body } => {
                let mut out = BytesMut::with_capacity(head.len() + body.len());
                out.extend_from_slice(&head);
                out.extend_from_slice(&body);
                out.freeze()
            }
            Encoded::Gather(parts) => {
                let mut out = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
                for p in &parts {
                    out.extend_from_slice(p);
                }
                out.freeze()
            }
        }
    }

    /// The frame's buffers, in order.
    ///
    /// ```
    /// use furrow_proto::codec::Encoded;
    /// let f = Encoded::Parts { head: "ab".into(), body: "cd".into() };
    /// assert_eq!(f.into_parts(), ["ab", "cd"]);
    /// ```
    pub fn into_parts(self) -> Vec<Bytes> {
        match self {
            Encoded::Whole(f) => vec![f],
            Encoded::Parts { head, body } => vec![head, body],
            Encoded::Gather(parts) => parts,
        }
    }
}

/// An encoding buffer that takes a large [`Bytes`](crate::Bytes) being
/// serialized by reference instead of copying it (see `blob`, "lending"):
/// the bytes written, and where among them each lent buffer goes. Its
/// offsets are those of `buf`, which lacks the lent bytes.
pub(crate) struct Gather {
    pub(crate) buf: BytesMut,
    /// Each lent buffer and the offset in `buf` it goes before, in order.
    lent: Vec<(usize, Bytes)>,
    lent_len: usize,
}

impl Gather {
    pub(crate) fn with_capacity(n: usize) -> Gather {
        Gather { buf: BytesMut::with_capacity(n), lent: Vec::new(), lent_len: 0 }
    }

    /// Bytes of lent buffers so far (what the frame has beyond `buf`).
    pub(crate) fn lent_len(&self) -> usize {
        self.lent_len
    }

    /// The frame in order: `buf` cut where the lent buffers go.
    pub(crate) fn into_encoded(self) -> Encoded {
        if self.lent.is_empty() {
            return Encoded::Whole(self.buf.freeze());
        }
        let mut buf = self.buf.freeze();
        let mut parts = Vec::with_capacity(2 * self.lent.len() + 1);
        let mut at = 0;
        for (pos, b) in self.lent {
            if pos > at {
                parts.push(buf.split_to(pos - at));
                at = pos;
            }
            parts.push(b);
        }
        if !buf.is_empty() {
            parts.push(buf);
        }
        Encoded::Gather(parts)
    }
}

// `#[inline]`, as `stream::Inline`'s: written a few bytes at a time.
impl std::io::Write for Gather {
    #[inline]
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.write_all(b).map(|()| b.len())
    }

    #[inline]
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match crate::blob::lent(b) {
            Some(lent) => {
                self.lent.push((self.buf.len(), lent));
                self.lent_len += b.len();
            }
            None => self.buf.extend_from_slice(b),
        }
        Ok(())
    }

    #[inline]
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Payloads at least this large are written after their envelope rather
/// than copied into it (see [`encode_parts`]).
pub const PARTS_MIN: usize = 64 * 1024;

/// Encode `msg` as [`encode_to_bytes`] does, except that a payload of at
/// least [`PARTS_MIN`] bytes that ends the message (a `Start`'s `kwargs`,
/// the `pld` of `Started`, `Yield` and `Return`) is not copied: the frame
/// comes in two parts, the envelope up to the payload's `bin 32` header,
/// then the payload's own buffer. Written one after the other, they are
/// exactly one frame.
///
/// ```
/// use furrow_proto::codec::{Encoded, FrameDecoder, decode_msg, encode_parts};
/// use furrow_proto::{DEFAULT_MAX_FRAME, Msg, Payload};
/// let big = Payload::encode(&furrow_proto::Bytes::from(vec![7u8; 100_000])).unwrap();
/// let msg = Msg::Return { cid: 3, pld: big.clone() };
/// let Encoded::Parts { head, body } = encode_parts(&msg, DEFAULT_MAX_FRAME).unwrap() else { unreachable!() };
/// assert_eq!(body.as_ptr(), big.0.as_ptr()); // the payload's own buffer
/// let mut wire = bytes::BytesMut::from(&head[..]);
/// wire.extend_from_slice(&body);
/// let frame = FrameDecoder::default().decode(&mut wire).unwrap().unwrap();
/// assert_eq!(decode_msg(frame).unwrap(), msg);
/// ```
pub fn encode_parts(msg: &Msg, max_frame: usize) -> Result<Encoded, EncodeError> {
    let (body, empty) = match msg {
        Msg::Start { cid, ns, func, uid, kwargs } if kwargs.len() >= PARTS_MIN => (
            kwargs,
            Msg::Start { cid: *cid, ns: ns.clone(), func: func.clone(), uid: uid.clone(), kwargs: Payload::default() },
        ),
        Msg::Started { cid, pld } if pld.len() >= PARTS_MIN => {
            (pld, Msg::Started { cid: *cid, pld: Payload::default() })
        }
        Msg::Yield { cid, pld } if pld.len() >= PARTS_MIN => (pld, Msg::Yield { cid: *cid, pld: Payload::default() }),
        Msg::Return { cid, pld } if pld.len() >= PARTS_MIN => (pld, Msg::Return { cid: *cid, pld: Payload::default() }),
        _ => return encode_to_bytes(msg, max_frame).map(Encoded::Whole),
    };
    match head_before_payload(&empty, body.len(), max_frame)? {
        Some(head) => Ok(Encoded::Parts { head, body: body.0.clone() }),
        // Not the layout this relies on: the whole frame, copied.
        None => encode_to_bytes(msg, max_frame).map(Encoded::Whole),
    }
}

/// The frame of `empty` (a message whose payload, empty, ends it) up to
/// the `bin 32` header of a payload of `pld_len` bytes that follows it:
/// the frame's length counts that payload. `None` if the message does not
/// end with its empty payload (not the layout this relies on).
fn head_before_payload(empty: &Msg, pld_len: usize, max_frame: usize) -> Result<Option<Bytes>, EncodeError> {
    // The message with an empty payload ends with that payload's encoding,
    // `bin 8` of length 0; it becomes the `bin 32` header of the real one.
    let mut head = BytesMut::with_capacity(size_hint(empty) + 3);
    encode(empty, &mut head, max_frame)?;
    if !head.ends_with(&[0xc4, 0x00]) || pld_len > u32::MAX as usize {
        return Ok(None);
    }
    head.truncate(head.len() - 2);
    head.put_u8(0xc6);
    head.put_u32(pld_len as u32);
    let len = head.len() - HEADER_LEN + pld_len;
    if len > max_frame {
        return Err(FrameError::TooLarge { len, max: max_frame }.into());
    }
    head[..HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(Some(head.freeze()))
}

/// Encode `msg` with `pld` as its payload: `msg`'s own payload, which
/// ends it and must be empty (a `Start`'s `kwargs`, the `pld` of
/// `Started`, `Yield` or `Return`), is replaced by `pld`'s parts, written
/// after the envelope as they are. So a payload's lent values (see
/// [`PayloadParts::encode`](crate::PayloadParts::encode)) and a large
/// payload are not copied; a small one in one part is copied into a whole
/// frame. The bytes are those of [`encode_parts`] for `msg` carrying
/// `pld`'s bytes.
///
/// ```
/// use furrow_proto::codec::{Encoded, FrameDecoder, decode_msg, encode_with_parts};
/// use furrow_proto::{Aid, Bytes, DEFAULT_MAX_FRAME, Msg, Payload, PayloadParts};
/// let big = Bytes::from(vec![9u8; 200_000]);
/// let kwargs = PayloadParts::encode(&(&big,)).unwrap();
/// let me = Aid::new("me", 1);
/// let start = |kwargs| Msg::Start { cid: 1, ns: "m".into(), func: "f".into(), uid: me.clone(), kwargs };
/// let frame = encode_with_parts(&start(Payload::default()), &kwargs, DEFAULT_MAX_FRAME).unwrap();
/// let Encoded::Gather(parts) = &frame else { unreachable!() };
/// assert!(parts.iter().any(|p| p.as_ptr() == big.as_ptr())); // sent from its own buffer
/// let mut wire = bytes::BytesMut::from(&frame.into_whole()[..]);
/// let got = decode_msg(FrameDecoder::default().decode(&mut wire).unwrap().unwrap()).unwrap();
/// assert_eq!(got, start(kwargs.into_payload()));
/// ```
pub fn encode_with_parts(msg: &Msg, pld: &crate::PayloadParts, max_frame: usize) -> Result<Encoded, EncodeError> {
    let empty = match msg {
        Msg::Start { kwargs: p, .. }
        | Msg::Started { pld: p, .. }
        | Msg::Yield { pld: p, .. }
        | Msg::Return { pld: p, .. } => p.is_empty(),
        _ => false,
    };
    if !empty {
        return Err(EncodeError::Serialize(format!("a {} message has no empty payload to fill", msg.kind().as_str())));
    }
    let parts = pld.parts();
    if parts.is_empty() {
        return encode_to_bytes(msg, max_frame).map(Encoded::Whole);
    }
    if let [one] = parts
        && one.len() < PARTS_MIN
    {
        // Small, in one piece: the whole frame, as `encode_parts` makes it.
        return encode_to_bytes(&with_payload(msg, Payload(one.clone())), max_frame).map(Encoded::Whole);
    }
    let Some(head) = head_before_payload(msg, pld.len(), max_frame)? else {
        // Not the layout this relies on: the whole frame, copied.
        let whole = with_payload(msg, pld.clone().into_payload());
        return encode_to_bytes(&whole, max_frame).map(Encoded::Whole);
    };
    let mut all = Vec::with_capacity(parts.len() + 1);
    all.push(head);
    all.extend(parts.iter().cloned());
    Ok(Encoded::Gather(all))
}

/// `msg` (one of the kinds [`encode_with_parts`] takes) carrying `pld`.
fn with_payload(msg: &Msg, pld: Payload) -> Msg {
    let mut m = msg.clone();
    match &mut m {
        Msg::Start { kwargs: p, .. }
        | Msg::Started { pld: p, .. }
        | Msg::Yield { pld: p, .. }
        | Msg::Return { pld: p, .. } => *p = pld,
        _ => {}
    }
    m
}

/// About how many bytes `msg` encodes to: its payloads and strings, plus
/// room for the envelope (a guess, never a bound).
fn size_hint(msg: &Msg) -> usize {
    const ENVELOPE: usize = 96;
    ENVELOPE
        + match msg {
            Msg::Start { ns, func, kwargs, .. } => ns.len() + func.len() + kwargs.len(),
            Msg::Started { pld, .. }
            | Msg::Yield { pld, .. }
            | Msg::Return { pld, .. }
            | Msg::CancelAck { pld, .. } => pld.len(),
            Msg::Yields { plds, .. } => plds.iter().map(|p| p.len() + 5).sum(),
            Msg::Error { message, tb_str, pld, .. } => {
                message.len() + tb_str.len() + pld.as_ref().map_or(0, Payload::len) + ENVELOPE
            }
            _ => 0,
        }
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
    // A large frame is the source of its payloads: they share its buffer
    // instead of being copied out (see `blob`).
    let body = || decode_body(kind, &frame);
    let decoded = if frame.len() >= crate::blob::SHARE_MIN { crate::blob::with_source(&frame, body) } else { body() };
    decoded.map_err(|e| {
        // A missing field is reported at the level of the struct (path
        // `.`) and its message names the field; a field of the wrong type
        // is only named by the path.
        let path = e.path().to_string();
        let inner = e.into_inner();
        let reason = if path == "." { inner.to_string() } else { format!("field `{path}`: {inner}") };
        DecodeError::BadFields { kind: kind.as_str(), reason }
    })
}
