//! Every message survives encode → FrameDecoder → decode_msg unchanged.

#![allow(missing_docs, unreachable_pub, dead_code, clippy::unwrap_used)]

mod common;

use bytes::BytesMut;
use common::strategies::{self, ALL_KINDS};
use common::{body_of, round_trip};
use furrow_proto::codec::{self, FrameDecoder};
use furrow_proto::{Addr, Aid, DEFAULT_MAX_FRAME, ErrorKind, ErrorMsg, FuncType, Msg, MsgKind, Payload, SpawnSpec};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_message_round_trips(msg in strategies::msg()) {
        prop_assert_eq!(round_trip(&msg), msg);
    }

    #[test]
    fn encode_to_bytes_matches_encode(msg in strategies::msg(), prefix in proptest::collection::vec(any::<u8>(), 0..8)) {
        let alone = codec::encode_to_bytes(&msg, DEFAULT_MAX_FRAME).unwrap();
        let mut buf = BytesMut::from(&prefix[..]);
        codec::encode(&msg, &mut buf, DEFAULT_MAX_FRAME).unwrap();
        prop_assert_eq!(&buf[..prefix.len()], &prefix[..], "encode appends");
        prop_assert_eq!(&buf[prefix.len()..], &alone[..]);
    }

    #[test]
    fn body_is_a_map_tagged_with_the_kind(msg in strategies::msg()) {
        let body = body_of(&msg);
        let map = rmp_serde::from_slice::<common::val::Val>(&body).unwrap().into_map();
        let tag: Vec<_> = map.iter().filter(|(k, _)| *k == common::val::Val::s("msg_type")).collect();
        prop_assert_eq!(tag.len(), 1);
        prop_assert_eq!(&tag[0].1, &common::val::Val::s(msg.kind().as_str()));
    }

    #[test]
    fn error_msg_converts_both_ways(e in strategies::error_msg()) {
        let msg = Msg::from(e.clone());
        prop_assert_eq!(msg.kind(), MsgKind::Error);
        prop_assert_eq!(msg.cid(), e.cid);
        prop_assert_eq!(round_trip(&msg).into_error().unwrap(), e);
    }

    #[test]
    fn cid_and_kind_survive(msg in strategies::msg()) {
        let back = round_trip(&msg);
        prop_assert_eq!(back.kind(), msg.kind());
        prop_assert_eq!(back.cid(), msg.cid());
    }

    #[test]
    fn addr_text_form_round_trips(a in strategies::addr()) {
        let parsed: Addr = a.to_string().parse().unwrap();
        prop_assert_eq!(parsed, a);
    }

    #[test]
    fn payload_values_survive_inside_messages(cid in any::<u64>(), v in proptest::collection::vec((any::<i64>(), ".{0,8}"), 0..6)) {
        let msg = Msg::Yield { cid, pld: Payload::encode(&v).unwrap() };
        let Msg::Yield { pld, .. } = round_trip(&msg) else { panic!("not a Yield") };
        prop_assert_eq!(pld.decode::<Vec<(i64, String)>>().unwrap(), v);
    }
}

/// Each variant separately, so a variant the mixed strategy rarely picks
/// still gets its share of cases.
#[test]
fn every_variant_round_trips() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(64));
    for kind in ALL_KINDS {
        runner
            .run(&strategies::msg_of(kind), |msg| {
                prop_assert_eq!(msg.kind(), kind);
                prop_assert_eq!(round_trip(&msg), msg);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    }
}

#[test]
fn msg_kind_wire_names() {
    for kind in ALL_KINDS {
        assert_eq!(MsgKind::from_wire(kind.as_str()), Some(kind));
        assert_eq!(kind.as_str(), format!("{kind:?}"));
    }
    assert_eq!(MsgKind::from_wire("stop"), None, "msg_type is case-sensitive");
    assert_eq!(MsgKind::from_wire(""), None);
}

#[test]
fn optional_fields_at_their_defaults_round_trip() {
    let aid = Aid::new("a", 1);
    let msgs = [
        Msg::Aid { name: String::new(), uuid: aid.uuid, pid: 0, proto: 0, spawn_token: None, max_dialogs: None },
        Msg::Aid {
            name: "x".into(),
            uuid: aid.uuid,
            pid: u32::MAX,
            proto: u32::MAX,
            spawn_token: Some(String::new()),
            max_dialogs: Some(0),
        },
        Msg::Ready { addrs: vec![] },
        Msg::SpawnSpec {
            spec: SpawnSpec {
                parent: aid.clone(),
                bind: vec![],
                registry: vec![],
                secret: None,
                socket_dir: String::new(),
                enable_modules: vec![],
                log_filter: None,
                max_frame: 0,
                tuning: None,
            },
        },
        Msg::from(ErrorMsg {
            cid: None,
            src_uid: aid.clone(),
            boxed_type_str: String::new().into(),
            message: String::new(),
            tb_str: String::new(),
            relay_path: vec![],
            canceller: None,
            pld: None,
            errors: vec![],
        }),
        // `Some(empty payload)` must not collapse to `None`.
        Msg::from(ErrorMsg {
            cid: Some(0),
            src_uid: aid.clone(),
            boxed_type_str: "E".into(),
            message: "m".into(),
            tb_str: "tb".into(),
            relay_path: vec![aid.clone()],
            canceller: Some(aid),
            pld: Some(Payload::default()),
            errors: vec![],
        }),
        Msg::StartAck { cid: u64::MAX, functype: FuncType::Context },
        Msg::Credit { cid: 0, n: u64::MAX, bytes: None },
        Msg::Return { cid: 3, pld: Payload::default() },
    ];
    for msg in msgs {
        assert_eq!(round_trip(&msg), msg);
    }
}

#[test]
fn several_frames_in_one_buffer() {
    let msgs = [
        Msg::Stop { cid: 1 },
        Msg::Credit { cid: 2, n: 3, bytes: Some(4096) },
        Msg::Return { cid: 1, pld: Payload::encode("done").unwrap() },
    ];
    let mut buf = BytesMut::new();
    for m in &msgs {
        codec::encode(m, &mut buf, DEFAULT_MAX_FRAME).unwrap();
    }
    let mut d = FrameDecoder::default();
    for m in &msgs {
        let frame = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&codec::decode_msg(frame).unwrap(), m);
    }
    assert!(d.decode(&mut buf).unwrap().is_none());
    assert!(buf.is_empty());
}

/// A `MultipleErrors` carries each error it stands for, nested, each with
/// its own origin, path and value; an entry without a `cid` is encoded
/// without the key.
#[test]
fn nested_errors_round_trip() {
    let (root, mid, a, b) = (Aid::new("root", 1), Aid::new("middle", 2), Aid::new("a", 3), Aid::new("b", 4));
    let leaf = |src: &Aid, pld: Option<Payload>| ErrorMsg {
        cid: None,
        src_uid: src.clone(),
        boxed_type_str: "app::Bad".into(),
        message: format!("bad in {}", src.name),
        tb_str: "caused by: x".into(),
        relay_path: vec![src.clone(), mid.clone(), root.clone()],
        canceller: None,
        pld,
        errors: vec![],
    };
    let inner = ErrorMsg {
        boxed_type_str: ErrorKind::MultipleErrors,
        message: "2 actors failed".into(),
        src_uid: mid.clone(),
        relay_path: vec![mid.clone(), root.clone()],
        errors: vec![leaf(&a, Some(Payload::encode(&7u32).unwrap())), leaf(&b, None)],
        ..leaf(&mid, None)
    };
    let outer = ErrorMsg {
        cid: Some(5),
        boxed_type_str: ErrorKind::MultipleErrors,
        src_uid: root.clone(),
        relay_path: vec![root.clone()],
        errors: vec![inner, leaf(&a, Some(Payload::default()))],
        ..leaf(&root, None)
    };
    let msg = Msg::from(outer.clone());
    assert_eq!(round_trip(&msg).into_error(), Ok(outer));

    // An entry's absent `cid` is no key at all (not a nil).
    let body = rmp_serde::from_slice::<common::val::Val>(&body_of(&msg)).unwrap().into_map();
    let (_, errors) = body.iter().find(|(k, _)| *k == common::val::Val::s("errors")).unwrap();
    let common::val::Val::Arr(entries) = errors else { panic!("errors is an array: {errors:?}") };
    for entry in entries {
        let entry = entry.clone().into_map();
        assert!(entry.iter().all(|(k, _)| *k != common::val::Val::s("cid")), "{entry:?}");
    }
}

/// Every kind of furrow's own has the wire string it had when kinds were
/// strings (tractor's names where tractor has them): a peer of any version
/// reads the same kind.
#[test]
fn error_kinds_keep_their_wire_strings() {
    use ErrorKind as K;
    let table = [
        (K::ContextCancelled, "ContextCancelled"),
        (K::ActorCancelled, "ActorCancelled"),
        (K::Panic, "panic"),
        (K::MsgTypeError, "MsgTypeError"),
        (K::FunctionNotFound, "FunctionNotFound"),
        (K::ModuleNotExposed, "ModuleNotExposed"),
        (K::NotARegistrar, "NotARegistrar"),
        (K::IdentityMismatch, "IdentityMismatch"),
        (K::IdentityRefused, "IdentityRefused"),
        (K::TooManyDialogs, "TooManyDialogs"),
        (K::TooManyUnauthenticated, "TooManyUnauthenticated"),
        (K::OutOfFileDescriptors, "OutOfFileDescriptors"),
        (K::FrameTooLarge, "FrameTooLarge"),
        (K::RegistrationRefused, "RegistrationRefused"),
        (K::ProtocolError, "ProtocolError"),
        (K::ActorStartError, "ActorStartError"),
        (K::MultipleErrors, "MultipleErrors"),
        (K::TransportClosed, "TransportClosed"),
        (K::SpawnError, "SpawnError"),
        (K::Timeout, "Timeout"),
        (K::UsageError, "UsageError"),
        (K::IoError, "IoError"),
        (K::ActorExited, "ActorExited"),
        (K::PoolTaskError, "PoolTaskError"),
        (K::StreamOverrun, "StreamOverrun"),
        (K::Closed, "Closed"),
        (K::AuthError, "AuthError"),
        (K::RegistryError, "RegistryError"),
        (K::SupervisorGaveUp, "SupervisorGaveUp"),
    ];
    assert_eq!(table.len(), ErrorKind::KNOWN.len(), "every known kind is in the table");
    for (kind, wire) in &table {
        assert_eq!(kind.as_str(), *wire);
        assert_eq!(&ErrorKind::from(*wire), kind);
    }
}

/// The message as it was encoded when `boxed_type_str` was a `String`
/// (same fields, same order).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "msg_type")]
enum OldMsg {
    Error {
        #[serde(default)]
        cid: Option<u64>,
        src_uid: Aid,
        boxed_type_str: String,
        message: String,
        #[serde(default)]
        tb_str: String,
        #[serde(default)]
        relay_path: Vec<Aid>,
        #[serde(default)]
        canceller: Option<Aid>,
        #[serde(default)]
        pld: Option<Payload>,
        #[serde(default)]
        errors: Vec<OldErrorMsg>,
    },
}

#[derive(serde::Serialize, serde::Deserialize)]
struct OldErrorMsg {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cid: Option<u64>,
    src_uid: Aid,
    boxed_type_str: String,
    message: String,
    #[serde(default)]
    tb_str: String,
    #[serde(default)]
    relay_path: Vec<Aid>,
    #[serde(default)]
    canceller: Option<Aid>,
    #[serde(default)]
    pld: Option<Payload>,
    #[serde(default)]
    errors: Vec<OldErrorMsg>,
}

/// A typed kind changes nothing on the wire: an `Error` (and each nested
/// entry) encodes to the very bytes the string field gave, and those bytes
/// decode to the typed kind — for every kind of furrow's and for other
/// names.
#[test]
fn a_typed_kind_encodes_as_the_string_did() {
    let src = Aid::new("w", 1);
    let strings = ErrorKind::KNOWN
        .iter()
        .map(|k| k.as_str().to_owned())
        .chain(["", "E", "my_app::Overdrawn", "std::io::error::Error", "Panic", "ValueError"].map(String::from));
    for wire in strings {
        let entry = |s: &str| OldErrorMsg {
            cid: None,
            src_uid: src.clone(),
            boxed_type_str: s.to_owned(),
            message: "m".into(),
            tb_str: "t".into(),
            relay_path: vec![src.clone()],
            canceller: Some(src.clone()),
            pld: None,
            errors: vec![],
        };
        let old = OldMsg::Error {
            cid: Some(3),
            src_uid: src.clone(),
            boxed_type_str: wire.clone(),
            message: "m".into(),
            tb_str: String::new(),
            relay_path: vec![src.clone()],
            canceller: None,
            pld: Some(Payload::default()),
            errors: vec![entry(&wire), entry("x::Y")],
        };
        let mut old_body = Vec::new();
        serde::Serialize::serialize(&old, &mut rmp_serde::Serializer::new(&mut old_body).with_struct_map()).unwrap();

        let new = Msg::from(ErrorMsg {
            cid: Some(3),
            pld: Some(Payload::default()),
            errors: vec![
                ErrorMsg {
                    tb_str: "t".into(),
                    canceller: Some(src.clone()),
                    ..ErrorMsg::new(src.clone(), ErrorKind::from(wire.as_str()), "m")
                },
                ErrorMsg {
                    tb_str: "t".into(),
                    canceller: Some(src.clone()),
                    ..ErrorMsg::new(src.clone(), ErrorKind::from("x::Y"), "m")
                },
            ],
            ..ErrorMsg::new(src.clone(), ErrorKind::from(wire.as_str()), "m")
        });
        assert_eq!(&body_of(&new)[..], &old_body[..], "kind {wire:?}");
        let decoded = codec::decode_msg(bytes::Bytes::from(old_body)).unwrap();
        assert_eq!(decoded, new, "kind {wire:?}");
        let e = decoded.into_error().unwrap();
        assert_eq!(e.boxed_type_str.as_str(), wire);
        assert_eq!(e.errors[0].boxed_type_str.as_str(), wire);
    }
}
