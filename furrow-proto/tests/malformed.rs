//! Frames whose content is not a valid message: never a panic, always the
//! right typed error, and the error text names what was wrong.

#![allow(missing_docs, unreachable_pub, dead_code, clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::val::{Val, to_bytes};
use common::{body_of, strategies};
use furrow_proto::codec::{self, DecodeError};
use furrow_proto::{Msg, MsgKind, Payload};
use proptest::collection::vec;
use proptest::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;

/// How a field is typed, to pick values of the wrong type for it.
#[derive(Clone, Copy, Debug)]
enum Ty {
    Num,
    Str,
    Uuid,
    Payload,
    Aid,
    Addrs,
    Spec,
    FuncType,
    OptNum,
    OptStr,
    Aids,
    OptAid,
    OptPayload,
    Payloads,
    Errors,
}

/// Every field of every variant: (name, required, type).
fn fields(kind: MsgKind) -> &'static [(&'static str, bool, Ty)] {
    use Ty::*;
    match kind {
        MsgKind::Aid => &[
            ("name", true, Str),
            ("uuid", true, Uuid),
            ("pid", true, Num),
            ("proto", true, Num),
            ("spawn_token", false, OptStr),
            ("max_dialogs", false, OptNum),
        ],
        MsgKind::Challenge => &[("nonce", true, Payload)],
        MsgKind::Auth => &[("nonce", true, Payload), ("mac", true, Payload)],
        MsgKind::AuthOk => &[("mac", true, Payload)],
        MsgKind::SpawnSpec => &[("spec", true, Spec)],
        MsgKind::Ready => &[("addrs", true, Addrs)],
        MsgKind::Start => {
            &[("cid", true, Num), ("ns", true, Str), ("func", true, Str), ("kwargs", true, Payload), ("uid", true, Aid)]
        }
        MsgKind::StartAck => &[("cid", true, Num), ("functype", true, FuncType)],
        MsgKind::Started | MsgKind::Yield | MsgKind::Return | MsgKind::CancelAck => {
            &[("cid", true, Num), ("pld", true, Payload)]
        }
        MsgKind::Yields => &[("cid", true, Num), ("plds", true, Payloads)],
        MsgKind::Stop => &[("cid", true, Num)],
        MsgKind::Error => &[
            ("cid", false, OptNum),
            ("src_uid", true, Aid),
            ("boxed_type_str", true, Str),
            ("message", true, Str),
            ("tb_str", false, Str),
            ("relay_path", false, Aids),
            ("canceller", false, OptAid),
            ("pld", false, OptPayload),
            ("errors", false, Errors),
        ],
        MsgKind::Credit => &[("cid", true, Num), ("n", true, Num), ("bytes", false, OptNum)],
        MsgKind::Ping | MsgKind::Pong => &[("seq", true, Num)],
    }
}

/// Values no field of type `ty` accepts, each with the path the error
/// should name below the field ("" for the field itself).
fn wrong_values(ty: Ty) -> Vec<(Val, &'static str)> {
    let mut v = vec![(Val::Bool(true), "")];
    match ty {
        Ty::Num => v.extend([
            (Val::s("7"), ""),
            (Val::Int(-1), ""),
            (Val::Nil, ""),
            (Val::F64(1.5), ""),
            (Val::Arr(vec![]), ""),
        ]),
        Ty::Str => v.extend([(Val::UInt(7), ""), (Val::Nil, ""), (Val::Arr(vec![]), ""), (Val::Map(vec![]), "")]),
        Ty::Uuid => {
            v.extend([(Val::s("not-a-uuid"), ""), (Val::Bin(vec![1, 2, 3]), ""), (Val::UInt(1), ""), (Val::Nil, "")])
        }
        Ty::Payload => v.extend([(Val::UInt(1), ""), (Val::Map(vec![]), ""), (Val::Nil, ""), (Val::Int(-3), "")]),
        Ty::Aid => v.extend([
            (Val::s("worker"), ""),
            (Val::Nil, ""),
            (Val::Map(vec![(Val::s("name"), Val::s("w"))]), ""),
            (
                Val::Map(vec![
                    (Val::s("name"), Val::s("w")),
                    (Val::s("uuid"), Val::Bin(vec![0; 16])),
                    (Val::s("pid"), Val::s("x")),
                ]),
                "pid",
            ),
        ]),
        Ty::Addrs => v.extend([
            (Val::s("tcp://h:1"), ""),
            (Val::Arr(vec![Val::s("bogus")]), "[0]"),
            (Val::Arr(vec![Val::s("tcp://h:1"), Val::s("tcp://h:nope")]), "[1]"),
            (Val::Arr(vec![Val::s("uds://")]), "[0]"),
            (Val::Arr(vec![Val::UInt(1)]), "[0]"),
        ]),
        Ty::Spec => v.extend([(Val::Nil, ""), (Val::Map(vec![]), ""), (Val::s("spec"), "")]),
        Ty::FuncType => {
            v.extend([(Val::s("generator"), ""), (Val::s("Context"), ""), (Val::Nil, ""), (Val::Arr(vec![]), "")])
        }
        Ty::OptNum => v.extend([(Val::s("x"), ""), (Val::Int(-1), "")]),
        Ty::OptStr => v.extend([(Val::UInt(1), ""), (Val::Arr(vec![]), "")]),
        Ty::Aids => v.extend([(Val::s("a"), ""), (Val::Arr(vec![Val::Bool(false)]), "[0]")]),
        Ty::OptAid => v.extend([(Val::s("a"), ""), (Val::UInt(3), "")]),
        Ty::OptPayload => v.extend([(Val::UInt(1), ""), (Val::Map(vec![]), "")]),
        Ty::Payloads => v.extend([(Val::Bin(vec![1]), ""), (Val::Nil, ""), (Val::Arr(vec![Val::UInt(1)]), "[0]")]),
        Ty::Errors => v.extend([
            (Val::s("e"), ""),
            (Val::Nil, ""),
            (Val::Map(vec![]), ""),
            (Val::Arr(vec![Val::UInt(1)]), "[0]"),
            // An entry without its required fields.
            (Val::Arr(vec![Val::Map(vec![])]), "[0]"),
            // A nested entry of the wrong type, named by its whole path.
            (
                Val::Arr(vec![Val::Map(vec![
                    (Val::s("src_uid"), Val::s("not an aid")),
                    (Val::s("boxed_type_str"), Val::s("E")),
                    (Val::s("message"), Val::s("m")),
                ])]),
                "[0].src_uid",
            ),
            (
                Val::Arr(vec![Val::Map(vec![
                    (Val::s("src_uid"), aid_val()),
                    (Val::s("boxed_type_str"), Val::s("E")),
                    (Val::s("message"), Val::s("m")),
                    (Val::s("errors"), Val::Arr(vec![Val::Bool(true)])),
                ])]),
                "[0].errors[0]",
            ),
        ]),
    }
    v
}

/// A valid `Aid`, as a msgpack value.
fn aid_val() -> Val {
    let aid = furrow_proto::Aid::new("w", 1);
    rmp_serde::from_slice(&rmp_serde::to_vec_named(&aid).unwrap()).unwrap()
}

/// `msg` with optional field `field` set to its default.
fn defaulted(msg: &Msg, field: &str) -> Msg {
    let mut m = msg.clone();
    match (&mut m, field) {
        (Msg::Aid { spawn_token, .. }, "spawn_token") => *spawn_token = None,
        (Msg::Aid { max_dialogs, .. }, "max_dialogs") => *max_dialogs = None,
        (Msg::Error { cid, .. }, "cid") => *cid = None,
        (Msg::Error { tb_str, .. }, "tb_str") => tb_str.clear(),
        (Msg::Error { relay_path, .. }, "relay_path") => relay_path.clear(),
        (Msg::Error { canceller, .. }, "canceller") => *canceller = None,
        (Msg::Error { pld, .. }, "pld") => *pld = None,
        (Msg::Error { errors, .. }, "errors") => errors.clear(),
        (Msg::Credit { bytes, .. }, "bytes") => *bytes = None,
        (m, f) => panic!("{f} is not an optional field of {:?}", m.kind()),
    }
    m
}

fn entries_of(msg: &Msg) -> Vec<(Val, Val)> {
    rmp_serde::from_slice::<Val>(&body_of(msg)).unwrap().into_map()
}

fn decode(entries: Vec<(Val, Val)>) -> Result<Msg, DecodeError> {
    codec::decode_msg(to_bytes(&Val::Map(entries)))
}

/// A map of arbitrary values under string keys.
fn val() -> impl Strategy<Value = Val> {
    let leaf = prop_oneof![
        Just(Val::Nil),
        any::<bool>().prop_map(Val::Bool),
        any::<i64>().prop_map(Val::Int),
        any::<u64>().prop_map(Val::UInt),
        any::<f64>().prop_map(Val::F64),
        ".{0,6}".prop_map(Val::Str),
        vec(any::<u8>(), 0..8).prop_map(Val::Bin),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Val::Arr),
            vec((".{0,6}".prop_map(Val::Str), inner.clone()), 0..5).prop_map(Val::Map),
            vec((inner.clone(), inner), 0..3).prop_map(Val::Map),
        ]
    })
}

/// Keys no message uses.
fn extra_key() -> impl Strategy<Value = String> {
    ".{0,10}".prop_filter("not a known key", |k| {
        k != "msg_type" && strategies::ALL_KINDS.iter().all(|&kd| fields(kd).iter().all(|(f, _, _)| f != k))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        let _ = codec::decode_msg(Bytes::from(bytes));
    }

    /// Arbitrary bytes behind a plausible start (a map holding a msg_type),
    /// so the decoder gets past the first byte.
    #[test]
    fn arbitrary_bytes_after_a_tag_never_panic(kind in strategies::kind(), n in 1..16u8, tail in vec(any::<u8>(), 0..128)) {
        let mut b = vec![0x80 | n, 0xa8];
        b.extend_from_slice(b"msg_type");
        let t = kind.as_str();
        b.push(0xa0 | t.len() as u8);
        b.extend_from_slice(t.as_bytes());
        b.extend_from_slice(&tail);
        let _ = codec::decode_msg(Bytes::from(b));
    }

    #[test]
    fn mutated_frames_never_panic(
        msg in strategies::msg(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6),
    ) {
        let mut b = body_of(&msg).to_vec();
        for (at, byte, op) in edits {
            if b.is_empty() {
                break;
            }
            let i = at.index(b.len());
            match op {
                0 => b[i] = byte,
                1 => b.insert(i, byte),
                _ => { b.remove(i); }
            }
        }
        let _ = codec::decode_msg(Bytes::from(b));
    }

    /// Any arbitrary msgpack value: a non-map is Malformed; no panic either way.
    #[test]
    fn arbitrary_values_never_panic(v in val()) {
        let r = codec::decode_msg(to_bytes(&v));
        if !matches!(v, Val::Map(_)) {
            prop_assert!(matches!(r, Err(DecodeError::Malformed(_))), "{:?} gave {:?}", v, r);
        }
    }

    /// A strict prefix of a body is never a message.
    #[test]
    fn truncated_bodies_are_malformed(msg in strategies::msg()) {
        let body = body_of(&msg);
        for k in 0..body.len() {
            let r = codec::decode_msg(body.slice(..k));
            prop_assert!(matches!(r, Err(DecodeError::Malformed(_))), "prefix {}: {:?}", k, r);
        }
    }

    #[test]
    fn map_without_msg_type_is_malformed(entries in vec((extra_key().prop_map(Val::Str), val()), 0..6)) {
        match decode(entries) {
            Err(DecodeError::Malformed(reason)) => prop_assert!(reason.contains("msg_type"), "{}", reason),
            other => prop_assert!(false, "{:?}", other),
        }
    }

    /// A real message with its msg_type removed.
    #[test]
    fn message_without_msg_type_is_malformed(msg in strategies::msg()) {
        let entries = entries_of(&msg).into_iter().filter(|(k, _)| *k != Val::s("msg_type")).collect();
        match decode(entries) {
            Err(DecodeError::Malformed(reason)) => prop_assert!(reason.contains("msg_type"), "{}", reason),
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn unknown_msg_type(msg in strategies::msg(), name in ".{0,12}") {
        prop_assume!(MsgKind::from_wire(&name).is_none());
        let entries = entries_of(&msg)
            .into_iter()
            .map(|(k, v)| if k == Val::s("msg_type") { (k, Val::Str(name.clone())) } else { (k, v) })
            .collect();
        let err = decode(entries).unwrap_err();
        prop_assert_eq!(&err, &DecodeError::UnknownType(name.clone()));
        let quoted = format!("{:?}", name);
        prop_assert!(err.to_string().contains(&quoted));
    }

    #[test]
    fn msg_type_of_the_wrong_type_is_malformed(v in val()) {
        prop_assume!(!matches!(v, Val::Str(_) | Val::Bin(_)));
        let r = decode(vec![(Val::s("msg_type"), v), (Val::s("cid"), Val::UInt(1))]);
        prop_assert!(matches!(r, Err(DecodeError::Malformed(_))), "{:?}", r);
    }

    /// Each field removed in turn: a required one is BadFields naming it,
    /// an optional one takes its default.
    #[test]
    fn missing_fields(msg in strategies::msg()) {
        let kind = msg.kind();
        for &(field, required, _) in fields(kind) {
            let entries: Vec<_> = entries_of(&msg).into_iter().filter(|(k, _)| *k != Val::s(field)).collect();
            let r = decode(entries);
            if required {
                match r {
                    Err(DecodeError::BadFields { kind: k, ref reason }) => {
                        prop_assert_eq!(k, kind.as_str());
                        prop_assert!(reason.contains(&format!("missing field `{field}`")), "{}", reason);
                        let text = r.as_ref().unwrap_err().to_string();
                        prop_assert!(text.contains(kind.as_str()) && text.contains(field), "{}", text);
                    }
                    other => prop_assert!(false, "{:?} without {}: {:?}", kind, field, other),
                }
            } else {
                prop_assert_eq!(r.unwrap(), defaulted(&msg, field));
            }
        }
    }

    /// Each field replaced in turn by values of the wrong type: BadFields,
    /// and the reason names the field (and the path below it).
    #[test]
    fn wrong_typed_fields(msg in strategies::msg()) {
        let kind = msg.kind();
        for &(field, _, ty) in fields(kind) {
            for (bad, below) in wrong_values(ty) {
                let entries: Vec<_> = entries_of(&msg)
                    .into_iter()
                    .map(|(k, v)| if k == Val::s(field) { (k, bad.clone()) } else { (k, v) })
                    .collect();
                let r = decode(entries);
                match &r {
                    Err(DecodeError::BadFields { kind: k, reason }) => {
                        prop_assert_eq!(*k, kind.as_str());
                        let sep = if below.is_empty() || below.starts_with('[') { "" } else { "." };
                        let path = format!("`{field}{sep}{below}");
                        prop_assert!(reason.contains(&path), "{:?}.{} = {:?}: {} (wanted {})", kind, field, bad, reason, path);
                    }
                    other => prop_assert!(false, "{:?}.{} = {:?}: {:?}", kind, field, bad, other),
                }
            }
        }
    }

    /// Keys may come in any order (msg_type not first) and unknown keys,
    /// whatever their value, are ignored.
    #[test]
    fn any_key_order_and_extra_keys(
        msg in strategies::msg(),
        extra in vec((extra_key(), val()), 0..4),
        seed in any::<u64>(),
    ) {
        let mut entries = entries_of(&msg);
        entries.extend(extra.into_iter().map(|(k, v)| (Val::Str(k), v)));
        // Deterministic shuffle from `seed` (so the case shrinks well).
        let mut s = seed | 1;
        for i in (1..entries.len()).rev() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            entries.swap(i, (s % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(decode(entries).unwrap(), msg);
    }

    #[test]
    fn msg_type_last(msg in strategies::msg()) {
        let mut entries = entries_of(&msg);
        prop_assert_eq!(&entries[0].0, &Val::s("msg_type"), "encoder writes the tag first");
        entries.rotate_left(1);
        prop_assert_eq!(decode(entries).unwrap(), msg);
    }
}

#[test]
fn empty_map_and_non_maps_are_malformed() {
    for v in [
        Val::Map(vec![]),
        Val::Nil,
        Val::Bool(false),
        Val::UInt(3),
        Val::s("Stop"),
        Val::Bin(b"Stop".to_vec()),
        Val::Arr(vec![]),
        Val::Arr(vec![Val::s("Stop"), Val::UInt(1)]),
        // rmp-serde reads structs from arrays too; a frame must be a map.
        Val::Arr(vec![Val::s("Stop")]),
        Val::Arr(vec![Val::s("")]),
        Val::Arr(vec![Val::s("Aid"), Val::Bin(vec![0; 16]), Val::UInt(1), Val::UInt(1)]),
    ] {
        let r = codec::decode_msg(to_bytes(&v));
        assert!(matches!(r, Err(DecodeError::Malformed(_))), "{v:?}: {r:?}");
    }
    assert!(matches!(codec::decode_msg(Bytes::new()), Err(DecodeError::Malformed(_))));
}

/// Frames built from plain serde values, as the brief of the protocol says.
#[test]
fn frames_from_serde_values() {
    // A map with no msg_type.
    let m: BTreeMap<&str, u64> = [("cid", 1)].into();
    let err = codec::decode_msg(Bytes::from(rmp_serde::to_vec(&m).unwrap())).unwrap_err();
    assert!(matches!(&err, DecodeError::Malformed(r) if r.contains("missing field `msg_type`")), "{err:?}");
    assert!(err.to_string().starts_with("malformed frame"), "{err}");

    // Unknown msg_type.
    let m: BTreeMap<&str, &str> = [("msg_type", "Cancel")].into();
    let err = codec::decode_msg(Bytes::from(rmp_serde::to_vec(&m).unwrap())).unwrap_err();
    assert_eq!(err, DecodeError::UnknownType("Cancel".into()));
    assert_eq!(err.to_string(), "unknown msg_type \"Cancel\"");

    // msg_type sorted after the fields (BTreeMap order: cid < msg_type < n).
    let mut m: BTreeMap<&str, Val> = BTreeMap::new();
    m.insert("msg_type", Val::s("Credit"));
    m.insert("cid", Val::UInt(4));
    m.insert("n", Val::UInt(10));
    m.insert("zzz_future_field", Val::Arr(vec![Val::Map(vec![(Val::s("a"), Val::Nil)])]));
    let msg = codec::decode_msg(Bytes::from(rmp_serde::to_vec(&m).unwrap())).unwrap();
    assert_eq!(msg, Msg::Credit { cid: 4, n: 10, bytes: None });

    // A serde struct with the tag last and a field of the wrong type.
    #[derive(Serialize)]
    struct BadCredit<'a> {
        cid: u64,
        n: &'a str,
        msg_type: &'a str,
    }
    let b = rmp_serde::to_vec_named(&BadCredit { cid: 1, n: "lots", msg_type: "Credit" }).unwrap();
    let err = codec::decode_msg(Bytes::from(b)).unwrap_err();
    match &err {
        DecodeError::BadFields { kind, reason } => {
            assert_eq!(*kind, "Credit");
            assert!(reason.contains("`n`"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(text.starts_with("malformed Credit message: ") && text.contains("`n`"), "{text}");

    // A serde struct missing a required field.
    #[derive(Serialize)]
    struct StartNoFunc<'a> {
        msg_type: &'a str,
        cid: u64,
        ns: &'a str,
    }
    let b = rmp_serde::to_vec_named(&StartNoFunc { msg_type: "Start", cid: 1, ns: "m" }).unwrap();
    match codec::decode_msg(Bytes::from(b)).unwrap_err() {
        DecodeError::BadFields { kind: "Start", reason } => {
            assert!(reason.contains("missing field `func`"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn nested_errors_name_the_path() {
    let aid = furrow_proto::Aid::new("w", 1);
    let start = Msg::Start { cid: 1, ns: "m".into(), func: "f".into(), kwargs: Payload::default(), uid: aid.clone() };
    let entries: Vec<_> = entries_of(&start)
        .into_iter()
        .map(|(k, v)| {
            if k == Val::s("uid") {
                let inner =
                    v.into_map().into_iter().map(|(k, v)| if k == Val::s("pid") { (k, Val::Int(-5)) } else { (k, v) });
                (k, Val::Map(inner.collect()))
            } else {
                (k, v)
            }
        })
        .collect();
    match decode(entries).unwrap_err() {
        DecodeError::BadFields { kind: "Start", reason } => assert!(reason.contains("`uid.pid`"), "{reason}"),
        other => panic!("{other:?}"),
    }

    let err = Msg::from(furrow_proto::ErrorMsg {
        cid: Some(1),
        src_uid: aid.clone(),
        boxed_type_str: "E".into(),
        message: "m".into(),
        tb_str: String::new(),
        relay_path: vec![aid.clone(), aid],
        canceller: None,
        pld: None,
        errors: vec![],
    });
    let entries: Vec<_> = entries_of(&err)
        .into_iter()
        .map(|(k, v)| {
            if k == Val::s("relay_path") {
                let Val::Arr(mut aids) = v else { panic!() };
                aids[1] = Val::Map(vec![(Val::s("name"), Val::UInt(0))]);
                (k, Val::Arr(aids))
            } else {
                (k, v)
            }
        })
        .collect();
    match decode(entries).unwrap_err() {
        DecodeError::BadFields { kind: "Error", reason } => {
            assert!(reason.contains("`relay_path[1].name`"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn duplicate_keys_are_refused() {
    let r = decode(vec![
        (Val::s("msg_type"), Val::s("Stop")),
        (Val::s("cid"), Val::UInt(1)),
        (Val::s("msg_type"), Val::s("Return")),
    ]);
    assert!(matches!(&r, Err(DecodeError::Malformed(m)) if m.contains("msg_type")), "{r:?}");
    let r = decode(vec![
        (Val::s("msg_type"), Val::s("Stop")),
        (Val::s("cid"), Val::UInt(1)),
        (Val::s("cid"), Val::UInt(2)),
    ]);
    assert!(matches!(&r, Err(DecodeError::BadFields { kind: "Stop", reason }) if reason.contains("`cid`")), "{r:?}");
}

/// msgpack nested deeper than any envelope needs: a typed error, not a
/// stack overflow (rmp-serde's own limit, 1024 levels, overflows a 2 MiB
/// stack in a debug build).
#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    fn nested(depth: usize, leaf: u8) -> Vec<u8> {
        let mut v = vec![0x91u8; depth]; // fixarray of one element, `depth` times
        v.push(leaf);
        v
    }
    fn frame(field: &str, value: &[u8]) -> Bytes {
        let mut b = vec![0x82u8, 0xa8];
        b.extend_from_slice(b"msg_type");
        b.extend_from_slice(&[0xa4]);
        b.extend_from_slice(b"Stop");
        b.push(0xa0 | field.len() as u8);
        b.extend_from_slice(field.as_bytes());
        b.extend_from_slice(value);
        Bytes::from(b)
    }
    // Run on a thread with a small stack, as a runtime worker might have.
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(|| {
            for depth in [100, 1_000, 1_023, 5_000, 100_000] {
                for field in ["x", "cid"] {
                    let r = codec::decode_msg(frame(field, &nested(depth, 0xc0)));
                    assert!(
                        matches!(&r, Err(DecodeError::Malformed(m)) if m.contains("depth")),
                        "{field} at {depth}: {r:?}"
                    );
                }
            }
            // Maps nest too.
            let mut deep_map = Vec::new();
            for _ in 0..5_000 {
                deep_map.extend_from_slice(&[0x81, 0xa1, b'k']);
            }
            deep_map.push(0xc0);
            let r = codec::decode_msg(frame("x", &deep_map));
            assert!(matches!(&r, Err(DecodeError::Malformed(m)) if m.contains("depth")), "{r:?}");
            // Moderate nesting in an unknown (future) field is still fine.
            let r = codec::decode_msg(frame("x", &nested(16, 0xc0)));
            assert_eq!(r, Err(DecodeError::BadFields { kind: "Stop", reason: "missing field `cid`".into() }));
        })
        .unwrap()
        .join()
        .unwrap();
}

/// An `Error` whose `errors` nest `levels` deep (each entry holds one).
fn nested_error(levels: usize) -> furrow_proto::ErrorMsg {
    let aid = furrow_proto::Aid::new("w", 1);
    let mut e = furrow_proto::ErrorMsg {
        cid: None,
        src_uid: aid.clone(),
        boxed_type_str: "E".into(),
        message: "leaf".into(),
        tb_str: String::new(),
        relay_path: vec![aid.clone()],
        canceller: None,
        pld: None,
        errors: vec![],
    };
    for _ in 0..levels {
        e = furrow_proto::ErrorMsg {
            boxed_type_str: furrow_proto::ErrorKind::MultipleErrors,
            message: "several".into(),
            errors: vec![e],
            ..nested_error(0)
        };
    }
    e.cid = Some(1);
    e
}

/// The first pass (finding `msg_type`) walks the whole map under the same
/// cap, so it is the one that refuses.
fn refused_for_depth(r: &Result<Msg, DecodeError>) -> bool {
    matches!(r, Err(DecodeError::Malformed(m)) if m.contains("depth"))
}

/// `errors` nest (a `MultipleErrors` holding one), so a hostile peer could
/// nest them deeply: the envelope's depth cap refuses that with a typed
/// error, without overflowing a small stack, while the nesting a furrow
/// sender produces (at most 8 levels) decodes.
#[test]
fn deeply_nested_errors_are_refused_without_overflowing_the_stack() {
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(|| {
            // What senders produce, with room to spare, decodes whole.
            for levels in [1, 8, 16, 30] {
                let msg = Msg::from(nested_error(levels));
                assert_eq!(codec::decode_msg(common::body_of(&msg)), Ok(msg), "{levels} levels");
            }
            // Beyond the envelope's cap (64 msgpack levels, two per level
            // of `errors`): refused, naming the depth.
            for levels in [31, 40] {
                let r = codec::decode_msg(common::body_of(&Msg::from(nested_error(levels))));
                assert!(refused_for_depth(&r), "{levels} levels: {r:?}");
            }
            // Hand-made, far deeper than any encoder here would go: each
            // level is `{"errors": [ … ]}`.
            for depth in [1_000, 100_000] {
                let mut b = vec![0x84u8];
                for (k, v) in [("msg_type", "Error"), ("boxed_type_str", "MultipleErrors"), ("message", "m")] {
                    b.push(0xa0 | k.len() as u8);
                    b.extend_from_slice(k.as_bytes());
                    b.push(0xa0 | v.len() as u8);
                    b.extend_from_slice(v.as_bytes());
                }
                for _ in 0..depth {
                    b.push(0xa6);
                    b.extend_from_slice(b"errors");
                    b.extend_from_slice(&[0x91, 0x81]);
                }
                b.extend_from_slice(&[0xa1, b'x', 0xc0]);
                let r = codec::decode_msg(Bytes::from(b));
                assert!(refused_for_depth(&r), "{depth}: {r:?}");
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

/// Nested entries, like the message itself, ignore keys they do not know
/// (a newer peer's additions) and default their optional fields (an entry
/// carries no `cid`).
#[test]
fn nested_errors_ignore_unknown_keys_and_default_optional_fields() {
    let aid_v = aid_val();
    let entry = Val::Map(vec![
        (Val::s("src_uid"), aid_v.clone()),
        (Val::s("boxed_type_str"), Val::s("E")),
        (Val::s("message"), Val::s("leaf")),
        (Val::s("from_the_future"), Val::Arr(vec![Val::UInt(1), Val::Map(vec![])])),
    ]);
    let msg = decode(vec![
        (Val::s("msg_type"), Val::s("Error")),
        (Val::s("src_uid"), aid_v),
        (Val::s("boxed_type_str"), Val::s("MultipleErrors")),
        (Val::s("message"), Val::s("1 actors failed")),
        (Val::s("errors"), Val::Arr(vec![entry])),
    ])
    .unwrap();
    let e = msg.into_error().unwrap();
    assert_eq!(e.errors.len(), 1);
    let leaf = &e.errors[0];
    assert_eq!((leaf.cid, leaf.boxed_type_str.as_str(), leaf.message.as_str()), (None, "E", "leaf"));
    assert!(leaf.tb_str.is_empty() && leaf.relay_path.is_empty() && leaf.canceller.is_none());
    assert!(leaf.pld.is_none() && leaf.errors.is_empty());
}
