use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

/// A user value, msgpack-encoded, carried opaquely inside a message.
///
/// The envelope of a frame is decoded without touching its payload; the
/// receiver then decodes the payload against the type *it* expects, and a
/// mismatch is a [`PayloadError`] naming the offending field.
///
/// ```
/// use furrow_proto::Payload;
/// let p = Payload::encode(&(1u8, "two")).unwrap();
/// let (a, b): (u8, String) = p.decode().unwrap();
/// assert_eq!((a, b.as_str()), (1, "two"));
/// assert!(p.decode::<bool>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Payload(pub Bytes);

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

/// A payload that could not be encoded, or did not decode as the expected
/// type. This is what a `MsgTypeError` is made of on the runtime side.
///
/// ```
/// use furrow_proto::{Payload, PayloadError};
/// use std::collections::BTreeMap;
///
/// #[derive(serde::Deserialize, Debug)]
/// struct Job { id: u64 }
///
/// // The sender put a string where the receiver expects a number.
/// let p = Payload::encode(&BTreeMap::from([("id", "seven")])).unwrap();
/// match p.decode::<Job>() {
///     Err(PayloadError::Decode { path, .. }) => assert_eq!(path, "id"),
///     other => panic!("unexpected {other:?}"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The value could not be encoded as msgpack.
    #[error("cannot encode payload: {0}")]
    Encode(String),
    /// The bytes are not a valid encoding of the expected type.
    #[error("payload does not match {expected}{}: {reason}", path_suffix(.path))]
    Decode {
        /// Rust type name the receiver expected.
        expected: &'static str,
        /// Path of the field that failed (`.` when the value itself failed).
        path: String,
        /// What was wrong.
        reason: String,
    },
}

/// Deepest msgpack nesting accepted in a payload. rmp-serde's default
/// (1024) lets a payload of about 1 KiB overflow a 2 MiB thread stack in a
/// debug build (even when the deep part is an unknown field being skipped).
const MAX_DEPTH: usize = 128;

fn path_suffix(path: &str) -> String {
    if path.is_empty() || path == "." { String::new() } else { format!(" at field `{path}`") }
}

impl Payload {
    /// Encode `value` (structs as maps, so field names travel).
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Payload, PayloadError> {
        rmp_serde::to_vec_named(value).map(|v| Payload(Bytes::from(v))).map_err(|e| PayloadError::Encode(e.to_string()))
    }

    /// Decode as `T`; the error names the field path that did not match.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, PayloadError> {
        // Fast path without path tracking; on failure decode again with it,
        // only to name the field in the error.
        let fast = || {
            let mut de = rmp_serde::Deserializer::from_read_ref(&self.0[..]);
            de.set_max_depth(MAX_DEPTH);
            T::deserialize(&mut de).ok()
        };
        // A large payload is the source of the values decoded from it: a
        // `Bytes` in it shares its buffer (see `blob`). Small ones skip the
        // scope: nothing in them is worth sharing.
        let got = if self.0.len() >= crate::blob::SHARE_MIN { crate::blob::with_source(&self.0, fast) } else { fast() };
        if let Some(v) = got {
            return Ok(v);
        }
        let mut de = rmp_serde::Deserializer::from_read_ref(&self.0[..]);
        de.set_max_depth(MAX_DEPTH);
        serde_path_to_error::deserialize(&mut de).map_err(|e| PayloadError::Decode {
            expected: std::any::type_name::<T>(),
            path: e.path().to_string(),
            reason: e.into_inner().to_string(),
        })
    }

    /// Number of encoded bytes.
    ///
    /// ```
    /// let p = furrow_proto::Payload::encode(&true).unwrap();
    /// assert_eq!(p.len(), 1); // msgpack `true` is one byte
    /// ```
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty (absent) payload. An encoded value is never empty
    /// (even `()` is one byte, msgpack nil).
    ///
    /// ```
    /// use furrow_proto::Payload;
    /// assert!(Payload::default().is_empty());
    /// assert!(!Payload::encode(&()).unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

/// A payload encoded for sending, in parts: a [`Bytes`](crate::Bytes) of
/// 64 KiB or more in the value is not copied into it but kept by
/// reference, a part of its own (see [`PayloadParts::encode`]). The parts
/// in order are exactly the bytes [`Payload::encode`] makes; a frame is
/// written from them as they are
/// ([`codec::encode_with_parts`](crate::codec::encode_with_parts)).
///
/// ```
/// use furrow_proto::{Bytes, Payload, PayloadParts};
/// let big = Bytes::from(vec![3u8; 100_000]);
/// let parts = PayloadParts::encode(&("label", &big)).unwrap();
/// assert_eq!(parts.parts().len(), 2); // the tuple's start, then the value's own buffer
/// assert_eq!(parts.parts()[1].as_ptr(), big.as_ptr());
/// assert_eq!(parts.len(), Payload::encode(&("label", &big)).unwrap().len());
/// assert_eq!(parts.into_payload(), Payload::encode(&("label", &big)).unwrap());
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct PayloadParts {
    repr: Parts,
    len: usize,
}

/// One buffer (the usual case, no list to allocate: every call's
/// arguments come this way), or several.
#[derive(Clone, PartialEq, Eq)]
enum Parts {
    One(Bytes),
    Many(Vec<Bytes>),
}

impl Default for Parts {
    fn default() -> Parts {
        Parts::One(Bytes::new())
    }
}

impl std::fmt::Debug for PayloadParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PayloadParts({} bytes in {} parts)", self.len, self.parts().len())
    }
}

impl PayloadParts {
    /// Encode `value` as [`Payload::encode`] does, lending its large
    /// [`Bytes`](crate::Bytes) values instead of copying them.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<PayloadParts, PayloadError> {
        let mut g = crate::codec::Gather::with_capacity(64);
        value
            .serialize(&mut rmp_serde::Serializer::new(&mut g).with_struct_map())
            .map_err(|e| PayloadError::Encode(e.to_string()))?;
        Ok(match g.into_encoded() {
            crate::codec::Encoded::Whole(b) => PayloadParts::from(Payload(b)),
            other => {
                let parts = other.into_parts();
                PayloadParts { len: parts.iter().map(Bytes::len).sum(), repr: Parts::Many(parts) }
            }
        })
    }

    /// Number of encoded bytes, all parts together.
    ///
    /// ```
    /// let p = furrow_proto::PayloadParts::encode(&7u8).unwrap();
    /// assert_eq!(p.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty (absent) payload.
    ///
    /// ```
    /// assert!(furrow_proto::PayloadParts::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The parts, in order (none empty).
    pub fn parts(&self) -> &[Bytes] {
        match &self.repr {
            Parts::One(b) if b.is_empty() => &[],
            Parts::One(b) => std::slice::from_ref(b),
            Parts::Many(parts) => parts,
        }
    }

    /// The payload in one buffer: no copy if it is in one part already.
    pub fn into_payload(self) -> Payload {
        match self.repr {
            Parts::One(one) => Payload(one),
            Parts::Many(parts) => {
                let mut out = bytes::BytesMut::with_capacity(self.len);
                parts.iter().for_each(|p| out.extend_from_slice(p));
                Payload(out.freeze())
            }
        }
    }
}

impl From<Payload> for PayloadParts {
    /// A payload in one part (none if it is empty).
    fn from(p: Payload) -> PayloadParts {
        PayloadParts { len: p.len(), repr: Parts::One(p.0) }
    }
}
