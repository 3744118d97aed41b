//! proptest strategies for the protocol types.

use bytes::Bytes;
use furrow_proto::{Addr, Aid, ErrorMsg, FuncType, Msg, MsgKind, Payload, SpawnSpec};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use std::path::PathBuf;
use uuid::Uuid;

/// Any string, control characters and astral-plane characters included.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z_:]{0,12}",
        1 => vec(any::<char>(), 0..12).prop_map(|c| c.into_iter().collect()),
    ]
}

pub fn uuid() -> impl Strategy<Value = Uuid> {
    prop_oneof![Just(Uuid::nil()), Just(Uuid::max()), any::<u128>().prop_map(Uuid::from_u128)]
}

pub fn aid() -> impl Strategy<Value = Aid> {
    (text(), uuid(), any::<u32>()).prop_map(|(name, uuid, pid)| Aid { name, uuid, pid })
}

/// Addresses that are valid on the wire (`Addr`'s text form parses back).
pub fn addr() -> impl Strategy<Value = Addr> {
    let non_empty = || text().prop_filter("non-empty", |s| !s.is_empty());
    prop_oneof![
        "/[a-zA-Z0-9_. -]{1,20}(/[a-zA-Z0-9_.-]{1,10}){0,3}\\.sock".prop_map(|p| Addr::Uds(PathBuf::from(p))),
        non_empty().prop_map(|p| Addr::Uds(PathBuf::from(p))),
        ("[a-z0-9.-]{1,15}|\\[[0-9a-f:]{2,20}\\]", any::<u16>()).prop_map(|(h, p)| Addr::Tcp(format!("{h}:{p}"))),
        (non_empty(), any::<u16>()).prop_map(|(h, p)| Addr::Tcp(format!("{h}:{p}"))),
    ]
}

/// Opaque payload bytes (the envelope never looks inside).
pub fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        1 => Just(Payload::default()),
        4 => vec(any::<u8>(), 0..48).prop_map(|b| Payload(Bytes::from(b))),
        // Occasionally big enough to need bin16.
        1 => vec(any::<u8>(), 250..400).prop_map(|b| Payload(Bytes::from(b))),
    ]
}

pub fn functype() -> impl Strategy<Value = FuncType> {
    prop_oneof![Just(FuncType::Asyncfunc), Just(FuncType::Context)]
}

/// Context ids, edge values over-represented.
pub fn cid() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(1), Just(u64::MAX), Just(u32::MAX as u64 + 1), any::<u64>()]
}

pub fn tuning() -> impl Strategy<Value = furrow_proto::Tuning> {
    (any::<[u64; 6]>(), any::<[u64; 6]>(), any::<Option<u64>>()).prop_map(|(t, u, max_unauthenticated)| {
        furrow_proto::Tuning {
            spawn_timeout_ms: t[0],
            cancel_ack_timeout_ms: t[1],
            exit_timeout_ms: t[2],
            term_timeout_ms: t[3],
            stream_window: t[4],
            cancel_grace_ms: t[5],
            stream_window_bytes: u[0],
            keepalive_interval_ms: u[1],
            keepalive_silence_ms: u[2],
            max_dialogs_per_peer: u[3],
            max_queued_output: u[4],
            frame_timeout_ms: u[5],
            max_unauthenticated,
        }
    })
}

pub fn spawn_spec() -> impl Strategy<Value = SpawnSpec> {
    (
        aid(),
        vec(addr(), 0..3),
        vec(addr(), 0..3),
        option::of(vec(any::<u8>(), 0..40)),
        text(),
        vec(text(), 0..3),
        option::of(text()),
        any::<u64>(),
        option::of(tuning()),
    )
        .prop_map(|(parent, bind, registry, secret, socket_dir, enable_modules, log_filter, max_frame, tuning)| {
            SpawnSpec {
                parent,
                bind,
                registry,
                secret: secret.map(furrow_proto::Secret),
                socket_dir,
                enable_modules,
                log_filter,
                max_frame,
                tuning,
            }
        })
}

/// An `Error` message, sometimes with nested `errors` (up to 3 levels).
pub fn error_msg() -> impl Strategy<Value = ErrorMsg> {
    error_msg_with(Just(Vec::new()).boxed())
        .prop_recursive(3, 8, 3, |inner| error_msg_with(vec(inner, 0..3).boxed()).boxed())
}

fn error_msg_with(errors: BoxedStrategy<Vec<ErrorMsg>>) -> BoxedStrategy<ErrorMsg> {
    (
        option::of(cid()),
        aid(),
        text(),
        text(),
        text(),
        vec(aid(), 0..3),
        option::of(aid()),
        option::of(payload()),
        errors,
    )
        .prop_map(|(cid, src_uid, boxed_type_str, message, tb_str, relay_path, canceller, pld, errors)| ErrorMsg {
            cid,
            src_uid,
            // Any string: furrow's names decode to their variant, others
            // to `Other`, and either encodes back to the same string.
            boxed_type_str: boxed_type_str.into(),
            message,
            tb_str,
            relay_path,
            canceller,
            pld,
            errors,
        })
        .boxed()
}

/// Every variant of `MsgKind`, in declaration order.
pub const ALL_KINDS: [MsgKind; 18] = [
    MsgKind::Ping,
    MsgKind::Pong,
    MsgKind::Challenge,
    MsgKind::Auth,
    MsgKind::AuthOk,
    MsgKind::Aid,
    MsgKind::SpawnSpec,
    MsgKind::Ready,
    MsgKind::Start,
    MsgKind::StartAck,
    MsgKind::Started,
    MsgKind::Yield,
    MsgKind::Yields,
    MsgKind::Stop,
    MsgKind::Return,
    MsgKind::CancelAck,
    MsgKind::Error,
    MsgKind::Credit,
];

pub fn kind() -> impl Strategy<Value = MsgKind> {
    proptest::sample::select(&ALL_KINDS[..])
}

/// A message of the given variant.
pub fn msg_of(kind: MsgKind) -> BoxedStrategy<Msg> {
    match kind {
        MsgKind::Aid => (text(), uuid(), any::<u32>(), any::<u32>(), option::of(text()), option::of(any::<u64>()))
            .prop_map(|(name, uuid, pid, proto, spawn_token, max_dialogs)| Msg::Aid {
                name,
                uuid,
                pid,
                proto,
                spawn_token,
                max_dialogs,
            })
            .boxed(),
        MsgKind::Challenge => vec(any::<u8>(), 0..64).prop_map(|nonce| Msg::Challenge { nonce }).boxed(),
        MsgKind::Auth => {
            (vec(any::<u8>(), 0..64), vec(any::<u8>(), 0..64)).prop_map(|(nonce, mac)| Msg::Auth { nonce, mac }).boxed()
        }
        MsgKind::AuthOk => vec(any::<u8>(), 0..64).prop_map(|mac| Msg::AuthOk { mac }).boxed(),
        MsgKind::SpawnSpec => spawn_spec().prop_map(|spec| Msg::SpawnSpec { spec }).boxed(),
        MsgKind::Ready => vec(addr(), 0..4).prop_map(|addrs| Msg::Ready { addrs }).boxed(),
        MsgKind::Start => (cid(), text(), text(), payload(), aid())
            .prop_map(|(cid, ns, func, kwargs, uid)| Msg::Start { cid, ns, func, kwargs, uid })
            .boxed(),
        MsgKind::StartAck => (cid(), functype()).prop_map(|(cid, functype)| Msg::StartAck { cid, functype }).boxed(),
        MsgKind::Started => (cid(), payload()).prop_map(|(cid, pld)| Msg::Started { cid, pld }).boxed(),
        MsgKind::Yield => (cid(), payload()).prop_map(|(cid, pld)| Msg::Yield { cid, pld }).boxed(),
        MsgKind::Yields => (cid(), vec(payload(), 0..5)).prop_map(|(cid, plds)| Msg::Yields { cid, plds }).boxed(),
        MsgKind::Stop => cid().prop_map(|cid| Msg::Stop { cid }).boxed(),
        MsgKind::Return => (cid(), payload()).prop_map(|(cid, pld)| Msg::Return { cid, pld }).boxed(),
        MsgKind::CancelAck => (cid(), payload()).prop_map(|(cid, pld)| Msg::CancelAck { cid, pld }).boxed(),
        MsgKind::Error => error_msg().prop_map(Msg::from).boxed(),
        MsgKind::Credit => (cid(), any::<u64>(), proptest::option::of(any::<u64>()))
            .prop_map(|(cid, n, bytes)| Msg::Credit { cid, n, bytes })
            .boxed(),
        MsgKind::Ping => any::<u64>().prop_map(|seq| Msg::Ping { seq }).boxed(),
        MsgKind::Pong => any::<u64>().prop_map(|seq| Msg::Pong { seq }).boxed(),
    }
}

/// A message of any variant (all variants equally likely).
pub fn msg() -> impl Strategy<Value = Msg> {
    kind().prop_flat_map(msg_of)
}
