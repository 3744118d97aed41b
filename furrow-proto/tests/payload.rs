//! Payloads: user values encoded as msgpack, decoded against the type the
//! receiver expects; a mismatch names the field path.

#![allow(missing_docs, unreachable_pub, dead_code, clippy::unwrap_used)]

use bytes::Bytes;
use furrow_proto::{Payload, PayloadError};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Sent {
    a: i64,
    b: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Expected {
    a: i64,
    b: i64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Inner {
    x: u8,
    tag: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Shape {
    Dot,
    Circle(f64),
    Rect { w: u32, h: u32 },
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Outer {
    id: u64,
    name: String,
    list: Vec<Inner>,
    by_name: BTreeMap<String, Inner>,
    shape: Shape,
    #[serde(with = "serde_bytes")]
    blob: Vec<u8>,
    pair: (i32, bool),
    maybe: Option<Box<Outer>>,
}

fn decode_err<T: serde::de::DeserializeOwned + std::fmt::Debug>(p: &Payload) -> (String, String, String) {
    match p.decode::<T>() {
        Err(PayloadError::Decode { expected, path, reason }) => {
            assert_eq!(expected, std::any::type_name::<T>());
            (path, reason, p.decode::<T>().unwrap_err().to_string())
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[test]
fn wrong_field_type_names_the_field() {
    let p = Payload::encode(&Sent { a: 1, b: "two".into() }).unwrap();
    let (path, reason, text) = decode_err::<Expected>(&p);
    assert_eq!(path, "b");
    assert!(!reason.is_empty());
    assert!(text.contains("at field `b`"), "{text}");
    assert!(text.contains("Expected"), "{text}");
    // The right type still decodes.
    assert_eq!(p.decode::<Sent>().unwrap(), Sent { a: 1, b: "two".into() });
}

#[test]
fn missing_field_is_named_in_the_reason() {
    #[derive(Serialize)]
    struct OnlyA {
        a: i64,
    }
    let p = Payload::encode(&OnlyA { a: 1 }).unwrap();
    let (path, reason, text) = decode_err::<Expected>(&p);
    assert_eq!(path, ".");
    assert!(reason.contains("missing field `b`"), "{reason}");
    assert!(!text.contains("at field"), "{text}");
}

#[test]
fn nested_paths() {
    let good = Outer {
        id: 1,
        name: "n".into(),
        list: vec![Inner { x: 1, tag: None }, Inner { x: 2, tag: Some("t".into()) }],
        by_name: [("k".to_owned(), Inner { x: 3, tag: None })].into(),
        shape: Shape::Rect { w: 1, h: 2 },
        blob: vec![1, 2, 3],
        pair: (-1, true),
        maybe: None,
    };
    assert_eq!(Payload::encode(&good).unwrap().decode::<Outer>().unwrap(), good);

    // Re-encode `good` with one leaf changed, via a generic value.
    #[derive(Serialize)]
    struct Bad<'a> {
        id: u64,
        name: &'a str,
        list: Vec<BTreeMap<&'a str, u64>>,
        by_name: BTreeMap<&'a str, Inner>,
        shape: Shape,
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
        pair: (i32, bool),
        maybe: Option<()>,
    }
    let bad = Bad {
        id: 1,
        name: "n",
        list: vec![[("x", 1)].into(), [("x", 300)].into()],
        by_name: [("k", Inner { x: 3, tag: None })].into(),
        shape: Shape::Dot,
        blob: vec![],
        pair: (0, false),
        maybe: None,
    };
    let (path, reason, text) = decode_err::<Outer>(&Payload::encode(&bad).unwrap());
    assert_eq!(path, "list[1].x", "{reason}");
    assert!(text.contains("at field `list[1].x`"), "{text}");

    #[derive(Serialize)]
    struct BadMap<'a> {
        id: u64,
        name: &'a str,
        list: Vec<Inner>,
        by_name: BTreeMap<&'a str, BTreeMap<&'a str, &'a str>>,
    }
    let bad = BadMap { id: 1, name: "n", list: vec![], by_name: [("key", [("x", "no")].into())].into() };
    let (path, _, _) = decode_err::<Outer>(&Payload::encode(&bad).unwrap());
    assert_eq!(path, "by_name.key.x");

    #[derive(Serialize)]
    struct BadPair {
        id: u64,
        name: String,
        list: Vec<Inner>,
        by_name: BTreeMap<String, Inner>,
        shape: Shape,
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
        pair: (i32, &'static str),
    }
    let bad = BadPair {
        id: 1,
        name: "n".into(),
        list: vec![],
        by_name: BTreeMap::new(),
        shape: Shape::Circle(1.0),
        blob: vec![],
        pair: (1, "yes"),
    };
    let (path, _, _) = decode_err::<Outer>(&Payload::encode(&bad).unwrap());
    assert_eq!(path, "pair[1]");
}

#[test]
fn whole_value_mismatch_has_no_field() {
    let p = Payload::encode(&true).unwrap();
    let (path, _, text) = decode_err::<String>(&p);
    assert_eq!(path, ".");
    assert!(!text.contains("at field"), "{text}");
    assert!(text.starts_with("payload does not match alloc::string::String: "), "{text}");
}

#[test]
fn empty_payload_does_not_decode() {
    let p = Payload::default();
    assert!(p.is_empty());
    assert_eq!(p.len(), 0);
    assert!(matches!(p.decode::<u8>(), Err(PayloadError::Decode { .. })));
    assert!(matches!(p.decode::<()>(), Err(PayloadError::Decode { .. })));
}

#[test]
fn encode_errors_are_typed() {
    struct Refuses;
    impl Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("not today"))
        }
    }
    match Payload::encode(&Refuses) {
        Err(PayloadError::Encode(m)) => assert!(m.contains("not today"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn debug_shows_the_size_only() {
    let p = Payload(Bytes::from_static(b"secret!"));
    assert_eq!(format!("{p:?}"), "Payload(7 bytes)");
}

/// A deeply nested payload is refused with a typed error, even when the
/// deep part is a field the receiver does not know (skipped), and without
/// overflowing a small thread stack.
#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Chain {
        next: Option<Box<Chain>>,
    }
    fn chain(depth: usize) -> Chain {
        let mut c = Chain { next: None };
        for _ in 1..depth {
            c = Chain { next: Some(Box::new(c)) };
        }
        c
    }
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(|| {
            // Reasonable depths still work.
            let c = chain(100);
            assert_eq!(Payload::encode(&c).unwrap().decode::<Chain>().unwrap(), c);
            // Deep values inside a skipped field.
            for depth in [200, 1_000, 1_023, 100_000] {
                let mut b = vec![0x82u8, 0xa1, b'a', 0x01, 0xa1, b'z'];
                b.extend(std::iter::repeat_n(0x91u8, depth));
                b.push(0xc0);
                let p = Payload(Bytes::from(b));
                #[derive(Deserialize, Debug)]
                struct A {
                    a: u8,
                }
                match p.decode::<A>() {
                    Err(PayloadError::Decode { reason, .. }) => {
                        assert!(reason.contains("depth"), "{reason}")
                    }
                    other => panic!("depth {depth}: {other:?}"),
                }
            }
        })
        .unwrap()
        .join()
        .unwrap();
    // A typed value deeper than the limit: the sender may encode it, the
    // receiver refuses it with a typed error.
    let c = chain(300);
    let p = Payload::encode(&c).unwrap();
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || assert!(matches!(p.decode::<Chain>(), Err(PayloadError::Decode { .. }))))
        .unwrap()
        .join()
        .unwrap();
}

fn inner() -> impl Strategy<Value = Inner> {
    (any::<u8>(), proptest::option::of(".{0,6}")).prop_map(|(x, tag)| Inner { x, tag })
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Dot),
        any::<f64>().prop_filter("NaN != NaN", |f| !f.is_nan()).prop_map(Shape::Circle),
        (any::<u32>(), any::<u32>()).prop_map(|(w, h)| Shape::Rect { w, h }),
    ]
}

fn outer() -> impl Strategy<Value = Outer> {
    let leaf = (
        any::<u64>(),
        ".{0,8}",
        vec(inner(), 0..4),
        btree_map(".{0,4}", inner(), 0..3),
        shape(),
        vec(any::<u8>(), 0..16),
        any::<(i32, bool)>(),
    )
        .prop_map(|(id, name, list, by_name, shape, blob, pair)| Outer {
            id,
            name,
            list,
            by_name,
            shape,
            blob,
            pair,
            maybe: None,
        });
    leaf.prop_recursive(3, 8, 1, |inner| {
        (inner.clone(), inner).prop_map(|(mut a, b)| {
            a.maybe = Some(Box::new(b));
            a
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn values_round_trip(v in outer()) {
        prop_assert_eq!(Payload::encode(&v).unwrap().decode::<Outer>().unwrap(), v);
    }

    #[test]
    fn a_wrong_type_is_an_error_not_a_panic(v in outer()) {
        let p = Payload::encode(&v).unwrap();
        prop_assert!(p.decode::<Expected>().is_err());
        prop_assert!(p.decode::<Vec<u8>>().is_err());
        prop_assert!(p.decode::<Shape>().is_err());
    }

    /// The path in the error always names the `b` field, whatever `b` holds
    /// (as long as it is not an integer).
    #[test]
    fn path_names_b(a in any::<i64>(), b in ".{0,16}") {
        let p = Payload::encode(&Sent { a, b }).unwrap();
        let (path, _, text) = decode_err::<Expected>(&p);
        prop_assert_eq!(path, "b");
        prop_assert!(text.contains("`b`"));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..128)) {
        let p = Payload(Bytes::from(bytes));
        let _ = p.decode::<Outer>();
        let _ = p.decode::<Expected>();
        let _ = p.decode::<Shape>();
        let _ = p.decode::<(u8, String, Vec<i64>)>();
        let _ = p.decode::<BTreeMap<String, Option<f32>>>();
        let _ = p.decode::<String>();
    }
}
