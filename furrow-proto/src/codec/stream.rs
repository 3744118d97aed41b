//! The stream hot path on the wire: `Yield` frames (one value) and
//! `Yields` frames (several values of one dialog, protocol version 3),
//! written straight into a send buffer and read back without building a
//! [`Msg`](crate::Msg) per value.
//!
//! Both are ordinary messages a generic decoder reads (`decode_msg`); what
//! this module adds is their *canonical layout*, the one furrow writes:
//! `msg_type` first, then `cid`, then the payload(s). A frame in that layout
//! is recognised by its fixed prefix and taken apart by offset; anything
//! else takes the general path.

use super::{EncodeError, FrameDecoder, FrameError, HEADER_LEN};
use crate::Payload;
use bytes::{BufMut, Bytes, BytesMut};

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

/// Append the start of a `Yield` frame up to its payload's `bin 32`
/// header, whose length (at the offset returned) is filled in later, as is
/// the frame's length (at the offset where it starts).
fn yield_head(out: &mut BytesMut, cid: u64) -> usize {
    out.put_u32_le(0);
    out.extend_from_slice(YIELD_HEAD);
    write_uint(out, cid);
    out.extend_from_slice(PLD_KEY);
    out.put_u8(0xc6);
    let bin_len_at = out.len();
    out.put_u32(0);
    bin_len_at
}

/// A `Yield { cid, pld: value }` frame of its own, as [`encode_yield`]
/// writes it, except that a [`Bytes`](crate::Bytes) of 64 KiB
/// ([`PARTS_MIN`](super::PARTS_MIN)) or more inside `value` is not copied:
/// the frame then comes in parts ([`Encoded::Gather`](super::Encoded::Gather)), each such value
/// its sender's own buffer, taken by reference count. Returns the frame
/// and its payload's length (lent bytes included). `capacity`: the room
/// reserved for what is copied (a value's known size, say).
///
/// ```
/// use furrow_proto::codec::{Encoded, FrameDecoder, decode_msg, encode_yield_gathered};
/// use furrow_proto::{Bytes, DEFAULT_MAX_FRAME, Msg};
/// let big = Bytes::from(vec![7u8; 100_000]);
/// let (frame, pld_len) = encode_yield_gathered(5, &(&big, 42u8), 64, DEFAULT_MAX_FRAME).unwrap();
/// let Encoded::Gather(parts) = &frame else { unreachable!() };
/// // The envelope, then the value's own buffer, then the rest of the tuple.
/// assert_eq!(parts.len(), 3);
/// assert_eq!(parts[1].as_ptr(), big.as_ptr());
/// let mut wire = bytes::BytesMut::from(&frame.into_whole()[..]);
/// let Msg::Yield { cid, pld } = decode_msg(FrameDecoder::default().decode(&mut wire).unwrap().unwrap()).unwrap()
/// else { unreachable!() };
/// assert_eq!((cid, pld.len()), (5, pld_len));
/// assert_eq!(pld.decode::<(Bytes, u8)>().unwrap(), (big, 42));
/// ```
pub fn encode_yield_gathered<T: serde::Serialize + ?Sized>(
    cid: u64,
    value: &T,
    capacity: usize,
    max_frame: usize,
) -> Result<(super::Encoded, usize), EncodeError> {
    let mut g = super::Gather::with_capacity(capacity.max(32));
    let bin_len_at = yield_head(&mut g.buf, cid);
    let pld_start = g.buf.len();
    value
        .serialize(&mut rmp_serde::Serializer::new(&mut g).with_struct_map())
        .map_err(|e| EncodeError::Serialize(e.to_string()))?;
    let pld_len = g.buf.len() - pld_start + g.lent_len();
    let len = g.buf.len() + g.lent_len() - HEADER_LEN;
    if len > max_frame || pld_len > u32::MAX as usize {
        return Err(FrameError::TooLarge { len, max: max_frame }.into());
    }
    g.buf[bin_len_at..bin_len_at + 4].copy_from_slice(&(pld_len as u32).to_be_bytes());
    g.buf[..HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok((g.into_encoded(), pld_len))
}

/// The `Yield` frame around a payload that `write_pld` appends.
fn encode_yield_with(
    cid: u64,
    out: &mut BytesMut,
    max_frame: usize,
    write_pld: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<usize, EncodeError> {
    let start = out.len();
    let bin_len_at = yield_head(out, cid);
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
/// laid out otherwise) is `None`: decode it with
/// [`decode_msg`](super::decode_msg).
///
/// A receiver that routes stream messages on their own path uses this to
/// avoid building a [`Msg`](crate::Msg) per message.
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
    let (hdr, len) = read_bin(rest)?;
    // The payload must be exactly the rest of the frame.
    if rest.len() != hdr + len {
        return None;
    }
    Some((cid, frame.len() - len))
}

/// The fixed start of a `Yields` frame body: a map of three entries,
/// `msg_type: "Yields"`, `cid`, then `plds`, an `array 32` of `bin`s.
const YIELDS_HEAD: &[u8] = b"\x83\xa8msg_type\xa6Yields\xa3cid";
const PLDS_KEY: &[u8] = b"\xa4plds";

/// The `Yields` frame at the end of a send buffer, which more values of its
/// dialog may join (see [`append_yield_value`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenYields {
    cid: u64,
    /// Where the frame (its length header) starts in the buffer.
    start: usize,
    /// Where its `array 32` count is.
    count_at: usize,
    count: u32,
    /// Where it ends: it may grow only while it is the buffer's tail.
    end: usize,
    /// Its last value's payload took a `bin 8` header.
    small: bool,
}

/// One value [`append_yield_value`] appended, and how to take it back
/// ([`undo_append`]). Small on purpose: the stream hot path moves it.
#[derive(Clone, Copy, Debug)]
#[must_use = "the payload length is what stream credit counts"]
pub struct Appended {
    /// The value's payload length (what byte credit counts).
    pub pld_len: usize,
    /// Whether it started a new frame (else it joined the open one).
    pub new_frame: bool,
    undo_to: usize,
}

/// Most bytes a `Yields` frame grows to before the next value starts a new
/// one: big enough to amortise a frame's header and routing over many
/// values (over a thousand small ones), small enough that a control frame
/// queued behind stream data waits for little: a writer cuts only at frame
/// boundaries, so a cancel's acknowledgement waits for the rest of the
/// frame being written. (64 KiB was too much on a transport that moves a
/// byte per call, the chaos runner's `frag=1`: a 64 KiB frame took over
/// the 500 ms cancel-acknowledgement bound on a loaded machine, 3 seeds in
/// 1000 of `inter_actor_cancels`.)
pub const YIELDS_BATCH_BYTES: usize = 8 * 1024;

/// Append the stream value `value` of dialog `cid` to `out`, encoded in
/// place: into the `Yields` frame `open` (the buffer's tail) if it is that
/// dialog's and has room, else as a new `Yields` frame, which becomes
/// `open`. Small payloads take the smallest `bin` header. On error `out`
/// and `open` are left as they were: a value that does not encode, or
/// whose frame alone would be over `max_frame`
/// ([`FrameError::TooLarge`]). [`undo_append`] takes it back.
///
/// `open` must be `None` whenever anything else was appended to `out`
/// after it, or `out` was taken (a value never joins a frame that is no
/// longer the tail; this is checked).
///
/// ```
/// use bytes::BytesMut;
/// use furrow_proto::codec::{FrameDecoder, YieldFrames, append_yield_value, decode_msg, undo_append};
/// use furrow_proto::{DEFAULT_MAX_FRAME, Msg};
/// let (mut out, mut open) = (BytesMut::new(), None);
/// for v in [1u64, 2, 3] {
///     let a = append_yield_value(&mut out, &mut open, 5, &v, DEFAULT_MAX_FRAME).unwrap();
///     assert_eq!(a.new_frame, v == 1); // one frame for the three
/// }
/// // A value the receiver has no credit for is taken back.
/// let a = append_yield_value(&mut out, &mut open, 5, &4u64, DEFAULT_MAX_FRAME).unwrap();
/// undo_append(&mut out, &mut open, &a);
///
/// let frame = FrameDecoder::default().decode(&mut out.clone()).unwrap().unwrap();
/// let Msg::Yields { cid, plds } = decode_msg(frame).unwrap() else { unreachable!() };
/// let values: Vec<u64> = plds.iter().map(|p| p.decode().unwrap()).collect();
/// assert_eq!((cid, values), (5, vec![1, 2, 3]));
/// // The same, the receiver's fast way.
/// let got: Vec<u64> = YieldFrames::new(out.freeze()).map(|p| p.decode().unwrap()).collect();
/// assert_eq!(got, [1, 2, 3]);
/// ```
pub fn append_yield_value<T: serde::Serialize + ?Sized>(
    out: &mut BytesMut,
    open: &mut Option<OpenYields>,
    cid: u64,
    value: &T,
    max_frame: usize,
) -> Result<Appended, EncodeError> {
    // Nothing is lent (`lend` is false): the value is always appended.
    match append_maybe(out, open, cid, value, max_frame, false)? {
        Some(a) => Ok(a),
        None => Err(EncodeError::Serialize("a value was lent where nothing may be".into())),
    }
}

/// [`append_yield_value`], unless `value` holds a
/// [`Bytes`](crate::Bytes) of 64 KiB ([`PARTS_MIN`](super::PARTS_MIN)) or
/// more: then nothing is appended (`Ok(None)`, `out` and `open` as they
/// were), and the value is for [`encode_yield_gathered`], which sends
/// such a value from its own buffer where appending would copy it. The
/// serialization is abandoned where that value comes, so finding out
/// costs little.
///
/// ```
/// use bytes::BytesMut;
/// use furrow_proto::codec::append_yield_inline;
/// use furrow_proto::{Bytes, DEFAULT_MAX_FRAME};
/// let (mut out, mut open) = (BytesMut::new(), None);
/// let small = Bytes::from(vec![1u8; 100]);
/// assert!(append_yield_inline(&mut out, &mut open, 3, &small, DEFAULT_MAX_FRAME).unwrap().is_some());
/// let before = out.len();
/// let big = Bytes::from(vec![1u8; 1 << 20]);
/// assert!(append_yield_inline(&mut out, &mut open, 3, &big, DEFAULT_MAX_FRAME).unwrap().is_none());
/// assert_eq!(out.len(), before);
/// ```
#[inline(always)] // the hot path's: see `append_maybe`
pub fn append_yield_inline<T: serde::Serialize + ?Sized>(
    out: &mut BytesMut,
    open: &mut Option<OpenYields>,
    cid: u64,
    value: &T,
    max_frame: usize,
) -> Result<Option<Appended>, EncodeError> {
    append_maybe(out, open, cid, value, max_frame, true)
}

/// [`append_yield_value`]'s and [`append_yield_inline`]'s work.
///
/// Always inlined, as is [`append_value`]: out of line, their result
/// (`Result<Option<Appended>, _>`, its flag in a niche) is returned through
/// memory and copied on in pieces of other sizes than it was stored in,
/// and each such load waits for the stores before it to drain (a failed
/// store-to-load forwarding): in one build of the stream bench that was a
/// third of the sender's time, and which build got it depended on how
/// the compiler split the calling crate, not on furrow's code.
#[inline(always)]
fn append_maybe<T: serde::Serialize + ?Sized>(
    out: &mut BytesMut,
    open: &mut Option<OpenYields>,
    cid: u64,
    value: &T,
    max_frame: usize,
    lend: bool,
) -> Result<Option<Appended>, EncodeError> {
    let joins = matches!(open, Some(o) if o.cid == cid && o.end == out.len() && o.end - o.start < YIELDS_BATCH_BYTES);
    match append_value(out, open, joins, cid, value, max_frame, lend) {
        // Too large to join the open frame: it may still fit alone.
        Err(EncodeError::Frame(FrameError::TooLarge { .. })) if joins => {
            append_value(out, open, false, cid, value, max_frame, lend)
        }
        other => other,
    }
}

/// Writes into a send buffer; when `lend` is set and it is asked to write
/// a lent [`Bytes`](crate::Bytes) (see `blob`), it fails instead and
/// records that it did.
struct Inline<'a> {
    out: &'a mut BytesMut,
    lend: bool,
    lent: bool,
}

// Every method `#[inline]`: this is the stream's hot path, written a
// few bytes at a time (a marker, then a number), and `Inline` is not
// generic, so without the attribute each write was a call into this crate
// from the runtime's instantiation of the encoder (a third more CPU per
// small value, `cargo bench --bench stream`).
impl std::io::Write for Inline<'_> {
    #[inline]
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.write_all(b).map(|()| b.len())
    }

    #[inline]
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        if self.lend && crate::blob::lent(b).is_some() {
            self.lent = true;
            return Err(std::io::Error::other("a large Bytes goes in a frame of its own"));
        }
        self.out.extend_from_slice(b);
        Ok(())
    }

    #[inline]
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// [`append_maybe`]'s work: into the frame `open` if `join`, else a new
/// one. On error, and on `Ok(None)` (the value holds a lent `Bytes`, and
/// `lend`), `out` and `open` are as they were. Always inlined: see
/// [`append_maybe`].
#[inline(always)]
fn append_value<T: serde::Serialize + ?Sized>(
    out: &mut BytesMut,
    open: &mut Option<OpenYields>,
    join: bool,
    cid: u64,
    value: &T,
    max_frame: usize,
    lend: bool,
) -> Result<Option<Appended>, EncodeError> {
    let undo_to = out.len();
    let mut o = match *open {
        Some(o) if join => o,
        _ => {
            let start = out.len();
            out.put_u32_le(0);
            out.extend_from_slice(YIELDS_HEAD);
            write_uint(out, cid);
            out.extend_from_slice(PLDS_KEY);
            out.put_u8(0xdd);
            let count_at = out.len();
            out.put_u32(0);
            OpenYields { cid, start, count_at, count: 0, end: out.len(), small: false }
        }
    };
    // The element: a `bin 32` header, shrunk once the payload's length is
    // known (moving a small payload two or three bytes back is cheaper
    // than encoding it twice).
    // The element: a `bin` header, then the payload encoded in place. Its
    // length is known only after encoding, so the header is a guess, fixed
    // up after: `bin 8` when the frame's last value was small (a stream's
    // values tend to be alike, and then nothing moves), else `bin 32`,
    // shrunk once the length is known (moving a small payload back is
    // cheaper than encoding it twice; a large one keeps `bin 32`).
    let el = out.len();
    let guess = if o.small { 2 } else { 5 };
    out.put_bytes(0, guess);
    let pld_start = out.len();
    let mut w = Inline { out, lend, lent: false };
    let done = value.serialize(&mut rmp_serde::Serializer::new(&mut w).with_struct_map());
    // Lent first: a `Serialize` impl that swallowed the writer's refusal
    // must not leave a frame with the value missing.
    if w.lent {
        out.truncate(undo_to);
        return Ok(None);
    }
    if let Err(e) = done {
        out.truncate(undo_to);
        return Err(EncodeError::Serialize(e.to_string()));
    }
    let pld_len = out.len() - pld_start;
    let hdr = if pld_len < 1 << 8 {
        2
    } else if pld_len < 1 << 16 {
        3
    } else {
        5
    };
    if hdr != guess {
        // Rare once a stream's values are alike: move the payload to fit
        // the header its length needs.
        if hdr > guess {
            out.put_bytes(0, hdr - guess);
        }
        out.copy_within(pld_start..pld_start + pld_len, el + hdr);
        out.truncate(el + hdr + pld_len);
    }
    match hdr {
        2 => out[el..el + 2].copy_from_slice(&[0xc4, pld_len as u8]),
        3 => {
            out[el] = 0xc5;
            out[el + 1..el + 3].copy_from_slice(&(pld_len as u16).to_be_bytes());
        }
        _ => {
            out[el] = 0xc6;
            // Over `u32::MAX` is refused below.
            out[el + 1..el + 5].copy_from_slice(&(pld_len as u32).to_be_bytes());
        }
    }
    o.small = hdr == 2;
    let len = out.len() - o.start - HEADER_LEN;
    if len > max_frame || u32::try_from(pld_len).is_err() {
        out.truncate(undo_to);
        return Err(FrameError::TooLarge { len, max: max_frame }.into());
    }
    o.count += 1;
    o.end = out.len();
    out[o.count_at..o.count_at + 4].copy_from_slice(&o.count.to_be_bytes());
    out[o.start..o.start + HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    *open = Some(o);
    Ok(Some(Appended { pld_len, new_frame: !join, undo_to }))
}

/// Take back the value `a` that [`append_yield_value`] just appended (the
/// last thing appended to `out`, with `open` as that call left it): `out`
/// is as it was before it. If the value had joined the open frame, that
/// frame is as it was and stays open; if it had started a frame, no frame
/// is open (a frame open before stays as it is on the wire, and the next
/// value starts a new one).
pub fn undo_append(out: &mut BytesMut, open: &mut Option<OpenYields>, a: &Appended) {
    out.truncate(a.undo_to);
    match open {
        Some(o) if !a.new_frame && o.count > 1 => {
            // It joined `o`: the frame's count and length are as before.
            o.count -= 1;
            o.end = a.undo_to;
            out[o.count_at..o.count_at + 4].copy_from_slice(&o.count.to_be_bytes());
            let len = (o.end - o.start - HEADER_LEN) as u32;
            out[o.start..o.start + HEADER_LEN].copy_from_slice(&len.to_le_bytes());
        }
        _ => *open = None,
    }
}

/// A canonical `Yields` frame body's header: its dialog, how many values,
/// and where the first element starts. The elements are not looked at.
fn yields_header(frame: &[u8]) -> Option<(u64, u32, usize)> {
    let rest = frame.strip_prefix(YIELDS_HEAD)?;
    let (cid, rest) = read_uint(rest)?;
    let rest = rest.strip_prefix(PLDS_KEY)?;
    let (&0xdd, rest) = rest.split_first()? else { return None };
    let count = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    Some((cid, count, frame.len() - (rest.len() - 4)))
}

/// A canonical `Yields` frame body, every element checked: its dialog,
/// how many values (at least one), and their payload bytes.
fn parse_yields(frame: &[u8]) -> Option<(u64, u32, u64)> {
    let (cid, count, mut at) = yields_header(frame)?;
    if count == 0 {
        return None;
    }
    let mut bytes = 0u64;
    for _ in 0..count {
        let (hdr, len) = read_bin(frame.get(at..)?)?;
        at = at.checked_add(hdr + len).filter(|&e| e <= frame.len())?;
        bytes += len as u64;
    }
    // The elements must be exactly the rest of the frame.
    (at == frame.len()).then_some((cid, count, bytes))
}

/// [`decode_yield`] for a `Yields` frame body in the canonical layout:
/// its dialog and values, each sharing the frame's buffer; `None` for
/// anything else (decode it with [`decode_msg`](super::decode_msg)).
///
/// ```
/// use furrow_proto::codec::{HEADER_LEN, append_yield_value, decode_yields};
/// use furrow_proto::DEFAULT_MAX_FRAME;
/// let (mut buf, mut open) = (bytes::BytesMut::new(), None);
/// let _ = append_yield_value(&mut buf, &mut open, 7, &42u64, DEFAULT_MAX_FRAME).unwrap();
/// let (cid, plds) = decode_yields(&buf.freeze().slice(HEADER_LEN..)).unwrap();
/// assert_eq!((cid, plds[0].decode::<u64>().unwrap()), (7, 42));
/// ```
pub fn decode_yields(frame: &Bytes) -> Option<(u64, Vec<Payload>)> {
    let (cid, count, _) = parse_yields(frame)?;
    let (_, _, mut at) = yields_header(frame)?;
    let mut plds = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (hdr, len) = read_bin(&frame[at..])?;
        plds.push(Payload(frame.slice(at + hdr..at + hdr + len)));
        at += hdr + len;
    }
    Some((cid, plds))
}

/// A msgpack `bin` header: its own length and the payload's.
fn read_bin(b: &[u8]) -> Option<(usize, usize)> {
    Some(match b.split_first()? {
        (0xc4, r) => (2, *r.first()? as usize),
        (0xc5, r) => (3, u16::from_be_bytes(r.get(..2)?.try_into().ok()?) as usize),
        (0xc6, r) => (5, u32::from_be_bytes(r.get(..4)?.try_into().ok()?) as usize),
        _ => return None,
    })
}

/// The values of a canonical stream frame body: its dialog, how many, and
/// their payload bytes.
fn parse_stream_frame(body: &[u8]) -> Option<(u64, u64, u64)> {
    if let Some((cid, at)) = parse_yield(body) {
        return Some((cid, 1, (body.len() - at) as u64));
    }
    parse_yields(body).map(|(cid, n, bytes)| (cid, u64::from(n), bytes))
}

/// Consecutive stream frames (`Yield` and `Yields`) for one dialog, whole,
/// at the front of a receive buffer: found by [`scan_yield_run`], read back
/// with [`YieldFrames`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct YieldRun {
    /// Their dialog.
    pub cid: u64,
    /// How many frames.
    pub frames: usize,
    /// How many values (stream messages) they carry.
    pub values: u64,
    /// Their length on the wire, headers included.
    pub len: usize,
    /// Their payloads' bytes, summed (what byte credit counts).
    pub payload_bytes: u64,
}

/// The run of canonical stream frames (`Yield` and `Yields`, see
/// [`decode_yield`]) for one dialog at the front of `buf`, whole frames
/// only, at most `max_frames` of them; `None` unless they carry at least
/// two values. A frame that is anything else (another message, another
/// dialog, a frame over `max_frame` or empty, one not fully buffered, one
/// laid out otherwise) ends the run, and is left for
/// [`FrameDecoder::decode`] and [`decode_msg`](super::decode_msg), which
/// report what is wrong with it.
///
/// This is the receiver's hot path: a run is routed as one (see
/// `session::Session::on_recv_yield_run`) and handed to its consumer as
/// one buffer, instead of one frame, message and queue entry per value.
///
/// ```
/// use furrow_proto::codec::{YieldFrames, encode, encode_yield, scan_yield_run};
/// use furrow_proto::{DEFAULT_MAX_FRAME, Msg};
/// let mut buf = bytes::BytesMut::new();
/// for v in [10u64, 20, 30] {
///     encode_yield(5, &v, &mut buf, DEFAULT_MAX_FRAME).unwrap();
/// }
/// encode(&Msg::Stop { cid: 5 }, &mut buf, DEFAULT_MAX_FRAME).unwrap();
/// let run = scan_yield_run(&buf, DEFAULT_MAX_FRAME, 64).unwrap();
/// assert_eq!((run.cid, run.frames, run.values), (5, 3, 3));
/// let frames = buf.split_to(run.len).freeze();
/// let got: Vec<u64> = YieldFrames::new(frames).map(|p| p.decode().unwrap()).collect();
/// assert_eq!(got, [10, 20, 30]);
/// ```
pub fn scan_yield_run(buf: &[u8], max_frame: usize, max_frames: usize) -> Option<YieldRun> {
    let mut run = YieldRun { cid: 0, frames: 0, values: 0, len: 0, payload_bytes: 0 };
    while run.frames < max_frames {
        let rest = &buf[run.len..];
        let Some(total) = FrameDecoder::frame_len(rest) else { break };
        let body_len = total - HEADER_LEN;
        if body_len == 0 || body_len > max_frame || rest.len() < total {
            break;
        }
        let Some((cid, n, bytes)) = parse_stream_frame(&rest[HEADER_LEN..total]) else { break };
        if run.frames > 0 && cid != run.cid {
            break;
        }
        run.cid = cid;
        run.frames += 1;
        run.values += n;
        run.len += total;
        run.payload_bytes += bytes;
    }
    (run.values >= 2).then_some(run)
}

/// The payloads of a run of frames [`scan_yield_run`] found (the run's
/// `len` bytes, split off the buffer), in order, each sharing the run's
/// buffer (no copy).
#[derive(Debug, Clone)]
pub struct YieldFrames {
    frames: Bytes,
    /// Where the next frame starts.
    at: usize,
    /// In a `Yields` frame: where its next element starts, and how many
    /// are left.
    el: usize,
    left: u32,
}

impl YieldFrames {
    /// Read back the frames of a run.
    pub fn new(frames: Bytes) -> YieldFrames {
        YieldFrames { frames, at: 0, el: 0, left: 0 }
    }
}

impl Iterator for YieldFrames {
    type Item = Payload;

    fn next(&mut self) -> Option<Payload> {
        // Everything was checked when the run was scanned; anything else
        // ends it.
        if self.left > 0 {
            let (hdr, len) = read_bin(self.frames.get(self.el..)?)?;
            let start = self.el + hdr;
            self.el = start + len;
            self.left -= 1;
            return Some(Payload(self.frames.slice(start..start + len)));
        }
        let rest = self.frames.get(self.at..)?;
        let total = FrameDecoder::frame_len(rest).filter(|&t| t <= rest.len())?;
        let body = &rest[HEADER_LEN..total];
        let frame_at = self.at + HEADER_LEN;
        self.at += total;
        if let Some((_, at)) = parse_yield(body) {
            return Some(Payload(self.frames.slice(frame_at + at..frame_at + body.len())));
        }
        let (_, count, el) = yields_header(body)?;
        self.el = frame_at + el;
        self.left = count;
        self.next()
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
