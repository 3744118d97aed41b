//! Byte payloads without copies: [`Bytes`], and the decoding scope that
//! lets it (and [`Payload`](crate::Payload)) share the buffer a frame was
//! read into instead of copying out of it.
//!
//! How it works: while a frame or a payload is being decoded, the buffer it
//! lives in is this thread's *source* ([`with_source`]). A msgpack `bin`
//! that the decoder hands over borrowed from that buffer becomes a slice of
//! it (a reference count, no copy). Anything else is copied, as usual.
//!
//! Small values are always copied: under [`SHARE_MIN`] bytes a copy costs
//! less than sharing, and a small slice kept for long would hold a whole
//! read buffer alive.
//!
//! The sending side has the mirror image, *lending*: while a [`Bytes`] of
//! at least [`LEND_MIN`] bytes is serialized, it is this thread's *lent*
//! value ([`lent`]). An encoder that writes through its own writer (the
//! codec's `Gather`) recognises the slice serde hands it by its address
//! and length, and keeps a reference to the `Bytes` in place of copying
//! it: the frame is then written from several buffers, the large value
//! from its own. A slice that is not the lent value, or any other writer,
//! gets a copy as usual: recognising by address is exact (a `Bytes` is
//! immutable, so the same address and length are the same bytes).

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::RefCell;

/// Smallest `bin` that is shared with the buffer it was decoded from
/// rather than copied (see the module docs).
pub(crate) const SHARE_MIN: usize = 1024;

/// Smallest [`Bytes`] that an encoder may send by reference rather than
/// copy into its frame (see the module docs): the size from which a frame
/// is written in parts anyway (`codec::PARTS_MIN`).
pub(crate) const LEND_MIN: usize = crate::codec::PARTS_MIN;

thread_local! {
    /// The buffer being decoded on this thread, if any (see [`with_source`]).
    static SOURCE: RefCell<Option<bytes::Bytes>> = const { RefCell::new(None) };
    /// The large `Bytes` being serialized on this thread, if any (see
    /// [`lent`]).
    static LENT: RefCell<Option<bytes::Bytes>> = const { RefCell::new(None) };
}

/// The large [`Bytes`] being serialized on this thread, if `buf` (a slice
/// an encoder was asked to write) is exactly its bytes: the encoder may
/// keep this reference instead of copying `buf`.
#[inline]
pub(crate) fn lent(buf: &[u8]) -> Option<bytes::Bytes> {
    // The common case, a small write, decided inline.
    if buf.len() < LEND_MIN {
        return None;
    }
    lent_large(buf)
}

#[inline(never)]
fn lent_large(buf: &[u8]) -> Option<bytes::Bytes> {
    LENT.with(|l| {
        let l = l.borrow();
        let b = l.as_ref()?;
        (b.as_ptr() == buf.as_ptr() && b.len() == buf.len()).then(|| b.clone())
    })
}

/// Run `f` (the serialization of `b`) with `b` as this thread's lent value;
/// the previous one is restored afterwards, unwinding included.
fn lending<R>(b: &bytes::Bytes, f: impl FnOnce() -> R) -> R {
    scoped(&LENT, b, f)
}

/// Run `f` (a synchronous decode of bytes inside `buf`) with `buf` as this
/// thread's source, so `bin` values of at least [`SHARE_MIN`] bytes decoded
/// from it share it. The previous source is restored afterwards, so decodes
/// may nest.
pub(crate) fn with_source<R>(buf: &bytes::Bytes, f: impl FnOnce() -> R) -> R {
    // Restored on unwind too: a panicking `Deserialize` impl leaves no
    // stale source behind for the next decode on this thread.
    scoped(&SOURCE, buf, f)
}

/// Run `f` with `b` in the thread-local `key`, and put back what was there
/// afterwards, unwinding included.
fn scoped<R>(
    key: &'static std::thread::LocalKey<RefCell<Option<bytes::Bytes>>>,
    b: &bytes::Bytes,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore(&'static std::thread::LocalKey<RefCell<Option<bytes::Bytes>>>, Option<bytes::Bytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.1.take();
            // `try_with`: during thread teardown there is nothing to restore.
            let _ = self.0.try_with(|s| *s.borrow_mut() = prev);
        }
    }
    let prev = key.with(|s| s.borrow_mut().replace(b.clone()));
    let _restore = Restore(key, prev);
    f()
}

/// `v` as a `Bytes`: a slice of the current source when `v` lies inside it
/// and is large enough to be worth sharing, else a copy.
pub(crate) fn share_or_copy(v: &[u8]) -> bytes::Bytes {
    if v.len() >= SHARE_MIN {
        let shared = SOURCE.with(|s| {
            let s = s.borrow();
            let src = s.as_ref()?;
            let (lo, hi) = (src.as_ptr() as usize, src.as_ptr() as usize + src.len());
            let p = v.as_ptr() as usize;
            // Only a slice inside the source can be shared; `slice_ref`
            // would panic on any other.
            (p >= lo && p + v.len() <= hi).then(|| src.slice_ref(v))
        });
        if let Some(b) = shared {
            return b;
        }
    }
    bytes::Bytes::copy_from_slice(v)
}

/// Visits a msgpack `bin` (or, as `serde_bytes` accepts, a string or an
/// array of integers) as `bytes::Bytes`, sharing the source when it can.
pub(crate) struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = bytes::Bytes;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bytes (msgpack bin)")
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
        Ok(share_or_copy(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(bytes::Bytes::copy_from_slice(v))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        Ok(bytes::Bytes::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(bytes::Bytes::copy_from_slice(v.as_bytes()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // Bounded by what the peer actually sent, not by its size hint.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(bytes::Bytes::from(out))
    }
}

/// A byte payload: the type to reach for when a call argument, a result or
/// a stream value is raw bytes.
///
/// - **On the wire** it is one msgpack `bin`, like
///   `serde_bytes::ByteBuf`. A plain `Vec<u8>` is encoded by serde as an
///   array of integers, one per byte: some 20 times slower (the `bulk`
///   bench) and up to twice the size. The two are interchangeable on the wire with
///   `ByteBuf` (a peer may decode a `Bytes` as a `ByteBuf` and back).
/// - **Received without a copy**: a `Bytes` of at least 1 KiB decoded by
///   furrow shares the buffer its frame was read into (as `bytes::Bytes`
///   slices do), where a `ByteBuf` is copied out of it. Keep in mind that
///   a slice kept alive keeps that buffer alive; copy it (`to_vec`) to keep
///   a small part of a large value for long.
/// - **Sent without a copy** when it is 64 KiB or more, in a stream value,
///   in call or context arguments or in a result: furrow writes the socket from its
///   buffer (keeping a reference count until it is written) instead of
///   copying it into the frame. Any other serializer copies it, as usual.
///   The buffer is read when the frame is written: a `Bytes` over memory
///   that something else may change (a mapped file, say) sends what that
///   memory holds then.
/// - **Cheap to clone** (a reference count): sending the same data many
///   times costs no copy on the caller's side.
///
/// It derefs to `[u8]`, and converts from and to [`bytes::Bytes`] and
/// `Vec<u8>`.
///
/// ```
/// use furrow_proto::{Bytes, Payload};
/// let data = Bytes::from(vec![7u8; 4096]);
/// let p = Payload::encode(&data).unwrap();
/// assert_eq!(p.len(), 4096 + 3); // a `bin 16` header, then the bytes
/// let back: Bytes = p.decode().unwrap();
/// assert_eq!(back, data);
/// // Decoded from the payload's buffer, not copied out of it.
/// assert!(p.0.as_ptr_range().contains(&back.as_ptr()));
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(bytes::Bytes);

impl Bytes {
    /// An empty value.
    ///
    /// ```
    /// assert!(furrow_proto::Bytes::new().is_empty());
    /// ```
    pub const fn new() -> Bytes {
        Bytes(bytes::Bytes::new())
    }

    /// A value over static bytes (no allocation).
    ///
    /// ```
    /// let b = furrow_proto::Bytes::from_static(b"hello");
    /// assert_eq!(&b[..], b"hello");
    /// ```
    pub const fn from_static(b: &'static [u8]) -> Bytes {
        Bytes(bytes::Bytes::from_static(b))
    }

    /// The underlying [`bytes::Bytes`].
    ///
    /// ```
    /// let b = furrow_proto::Bytes::from(vec![1u8, 2, 3]);
    /// let inner: bytes::Bytes = b.into_inner();
    /// assert_eq!(inner.len(), 3);
    /// ```
    pub fn into_inner(self) -> bytes::Bytes {
        self.0
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The bytes themselves can be megabytes: show their length and the
        // start.
        const SHOWN: usize = 16;
        write!(f, "Bytes({} bytes", self.0.len())?;
        if !self.0.is_empty() {
            write!(f, ": ")?;
            for b in self.0.iter().take(SHOWN) {
                write!(f, "{b:02x}")?;
            }
            if self.0.len() > SHOWN {
                write!(f, "…")?;
            }
        }
        write!(f, ")")
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::borrow::Borrow<[u8]> for Bytes {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl From<bytes::Bytes> for Bytes {
    fn from(b: bytes::Bytes) -> Bytes {
        Bytes(b)
    }
}

impl From<Bytes> for bytes::Bytes {
    fn from(b: Bytes) -> bytes::Bytes {
        b.0
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        Bytes(bytes::Bytes::from(v))
    }
}

impl From<Bytes> for Vec<u8> {
    fn from(b: Bytes) -> Vec<u8> {
        Vec::from(b.0)
    }
}

impl From<&'static [u8]> for Bytes {
    fn from(b: &'static [u8]) -> Bytes {
        Bytes(bytes::Bytes::from_static(b))
    }
}

impl From<String> for Bytes {
    fn from(s: String) -> Bytes {
        Bytes(bytes::Bytes::from(s))
    }
}

impl PartialEq<[u8]> for Bytes {
    fn eq(&self, other: &[u8]) -> bool {
        self.0 == other
    }
}

impl PartialEq<Vec<u8>> for Bytes {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.0 == other
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.len() < LEND_MIN {
            return s.serialize_bytes(&self.0);
        }
        // Large: an encoder of furrow's may send it by reference (see the
        // module docs); any other serializer copies it, as usual.
        lending(&self.0, || s.serialize_bytes(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        d.deserialize_bytes(BytesVisitor).map(Bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_only_inside_the_source_and_only_large_values() {
        let buf = bytes::Bytes::from(vec![1u8; 8192]);
        let inside = &buf[100..100 + SHARE_MIN];
        let shared = with_source(&buf, || share_or_copy(inside));
        assert_eq!(shared.as_ptr(), inside.as_ptr(), "a large slice of the source is shared");
        let small = with_source(&buf, || share_or_copy(&buf[..SHARE_MIN - 1]));
        assert_ne!(small.as_ptr(), buf.as_ptr(), "a small one is copied");
        let other = vec![1u8; 4096];
        let copied = with_source(&buf, || share_or_copy(&other));
        assert_ne!(copied.as_ptr(), other.as_ptr(), "bytes outside the source are copied");
        assert_ne!(share_or_copy(inside).as_ptr(), inside.as_ptr(), "no source, no sharing");
    }

    #[test]
    fn sources_nest_and_are_restored_after_a_panic() {
        let outer = bytes::Bytes::from(vec![2u8; 4096]);
        let inner = bytes::Bytes::from(vec![3u8; 4096]);
        with_source(&outer, || {
            with_source(&inner, || assert_eq!(share_or_copy(&inner[..]).as_ptr(), inner.as_ptr()));
            assert_eq!(share_or_copy(&outer[..]).as_ptr(), outer.as_ptr(), "the outer source is back");
        });
        let r = std::panic::catch_unwind(|| with_source(&outer, || panic!("a Deserialize impl panicked")));
        assert!(r.is_err());
        assert!(SOURCE.with(|s| s.borrow().is_none()), "no stale source after the panic");
    }

    #[test]
    fn payloads_of_a_decoded_frame_share_its_buffer() {
        use crate::{DEFAULT_MAX_FRAME, Msg, Payload, codec};
        let data = Bytes::from(vec![5u8; 64 * 1024]);
        let msg = Msg::Return { cid: 3, pld: Payload::encode(&data).unwrap() };
        let frame = codec::encode_to_bytes(&msg, DEFAULT_MAX_FRAME).unwrap().slice(codec::HEADER_LEN..);
        let Msg::Return { pld, .. } = codec::decode_msg(frame.clone()).unwrap() else { panic!("not a Return") };
        assert!(frame.as_ptr_range().contains(&pld.0.as_ptr()), "the payload is a slice of the frame");
        let back: Bytes = pld.decode().unwrap();
        assert!(frame.as_ptr_range().contains(&back.as_ptr()), "and so is the value decoded from it");
        assert_eq!(back, data);
    }

    /// A large `Bytes` is lent only while it is serialized, and only to a
    /// writer that asks for exactly its bytes: any other serializer copies
    /// it, and nothing stays lent afterwards, a panic included.
    #[test]
    fn a_value_is_lent_only_while_serialized_and_others_copy_it() {
        let big = Bytes::from(vec![4u8; LEND_MIN]);
        let plain = rmp_serde::to_vec(&(&big, 1u8)).unwrap();
        assert_eq!(rmp_serde::from_slice::<(Bytes, u8)>(&plain).unwrap(), (big.clone(), 1));
        assert!(LENT.with(|l| l.borrow().is_none()), "nothing lent after serializing");
        assert!(lent(&big).is_none(), "not lent outside its serialization");
        // The same bytes elsewhere, and a part of it at the same address:
        // neither is the lent value.
        let twin = Bytes::from(vec![4u8; LEND_MIN]);
        let longer = Bytes::from(vec![4u8; LEND_MIN + 1]);
        let prefix = Bytes::from(bytes::Bytes::from(longer.clone()).slice(..LEND_MIN));
        let inside = lending(&longer.0, || (lent(&longer).map(|b| b.as_ptr()), lent(&prefix).is_some()));
        assert_eq!(inside, (Some(longer.as_ptr()), false), "lent as itself, never a part of it");
        assert!(lending(&big.0, || lent(&twin)).is_none(), "equal bytes elsewhere are not the lent value");
        let small = Bytes::from(vec![4u8; LEND_MIN - 1]);
        assert!(lending(&small.0, || lent(&small)).is_none(), "a small value is never lent");
        let r = std::panic::catch_unwind(|| lending(&big.0, || panic!("a Serialize impl panicked")));
        assert!(r.is_err());
        assert!(LENT.with(|l| l.borrow().is_none()), "nothing lent after the panic");
    }

    #[test]
    fn reads_what_serde_bytes_writes_and_arrays() {
        let bb = serde_bytes::ByteBuf::from(vec![9u8; 3000]);
        let back: Bytes = rmp_serde::from_slice(&rmp_serde::to_vec(&bb).unwrap()).unwrap();
        assert_eq!(back, vec![9u8; 3000]);
        let as_array: Bytes = rmp_serde::from_slice(&rmp_serde::to_vec(&vec![1u8, 2, 3]).unwrap()).unwrap();
        assert_eq!(&as_array[..], &[1, 2, 3]);
        let to_bytebuf: serde_bytes::ByteBuf = rmp_serde::from_slice(&rmp_serde::to_vec(&back).unwrap()).unwrap();
        assert_eq!(to_bytebuf.len(), 3000);
    }
}
