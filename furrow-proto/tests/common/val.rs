//! A minimal dynamic msgpack value, to build and edit frames by hand.

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Any msgpack value (extension types excepted).
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    F64(f64),
    Str(String),
    Bin(Vec<u8>),
    Arr(Vec<Val>),
    Map(Vec<(Val, Val)>),
}

impl Val {
    /// A string value.
    pub fn s(s: &str) -> Val {
        Val::Str(s.to_owned())
    }

    /// The entries of a map (panics on anything else).
    pub fn into_map(self) -> Vec<(Val, Val)> {
        match self {
            Val::Map(m) => m,
            other => panic!("not a map: {other:?}"),
        }
    }
}

impl Serialize for Val {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Val::Nil => s.serialize_unit(),
            Val::Bool(b) => s.serialize_bool(*b),
            Val::Int(i) => s.serialize_i64(*i),
            Val::UInt(u) => s.serialize_u64(*u),
            Val::F64(f) => s.serialize_f64(*f),
            Val::Str(v) => s.serialize_str(v),
            Val::Bin(b) => s.serialize_bytes(b),
            Val::Arr(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Val::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

struct ValVisitor;

impl<'de> Visitor<'de> for ValVisitor {
    type Value = Val;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any msgpack value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Val, E> {
        Ok(Val::Nil)
    }
    fn visit_none<E: de::Error>(self) -> Result<Val, E> {
        Ok(Val::Nil)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Val, D::Error> {
        Val::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Val, E> {
        Ok(Val::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Val, E> {
        Ok(if i >= 0 { Val::UInt(i as u64) } else { Val::Int(i) })
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Val, E> {
        Ok(Val::UInt(u))
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Val, E> {
        Ok(Val::F64(f))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Val, E> {
        Ok(Val::Str(s.to_owned()))
    }
    fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<Val, E> {
        Ok(Val::Bin(b.to_vec()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Val, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = a.next_element()? {
            out.push(v);
        }
        Ok(Val::Arr(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Val, A::Error> {
        let mut out = Vec::new();
        while let Some((k, v)) = a.next_entry()? {
            out.push((k, v));
        }
        Ok(Val::Map(out))
    }
}

impl<'de> Deserialize<'de> for Val {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Val, D::Error> {
        d.deserialize_any(ValVisitor)
    }
}

/// msgpack bytes of a value.
pub fn to_bytes(v: &Val) -> bytes::Bytes {
    bytes::Bytes::from(rmp_serde::to_vec(v).expect("a Val always encodes"))
}
