//! A channel's session fed arbitrary decoded messages, as a hostile peer
//! would send them, with the local side opening, answering and abandoning
//! dialogs in between; every input byte pair is one action.
//!
//! What must hold: no panic; the peer never has more dialogs open than the
//! bound; a dialog's handle leaves the table exactly once (delivered as its
//! last message, broken, closed by this side, or drained at the close), and
//! nothing is delivered to a handle that left; the table's count matches
//! the handles in it; what a stream's receive window holds never exceeds
//! the window this side opened (stream credit is the session's: this side
//! opens windows, sends `Yield`s under credit and releases what it
//! consumed, between the peer's messages).
#![no_main]

use furrow_proto::flow::{Acks, Window};
use furrow_proto::session::{Route, Sent, Session, Side};
use furrow_proto::{Aid, FuncType, Msg, MsgKind, Payload};
use libfuzzer_sys::fuzz_target;
use std::collections::{HashMap, HashSet};

const MAX_SERVED: usize = 4;

fn peer_msg(op: u8, arg: u8) -> Msg {
    let cid = u64::from(arg % 16);
    let pld = Payload::default();
    match op % 15 {
        0 => Msg::Start { cid, ns: "m".into(), func: "f".into(), kwargs: pld, uid: Aid::new("p", 1) },
        1 => Msg::StartAck { cid, functype: if arg & 0x80 == 0 { FuncType::Asyncfunc } else { FuncType::Context } },
        2 => Msg::Started { cid, pld },
        // Of a size the window may or may not take.
        3 => Msg::Yield { cid, pld: Payload::encode(&vec![0u8; usize::from(arg >> 2)]).unwrap_or_default() },
        4 => Msg::Stop { cid },
        5 => Msg::Return { cid, pld },
        6 => Msg::CancelAck { cid, pld },
        7 => Msg::Credit { cid, n: u64::from(arg), bytes: Some(u64::from(arg)) },
        8 => Msg::Ping { seq: cid },
        9 => Msg::Pong { seq: cid },
        10 => Msg::Ready { addrs: vec![] },
        // Several values at once, some more than the window takes.
        11 => Msg::Yields {
            cid,
            plds: (0..arg >> 6)
                .map(|i| Payload::encode(&vec![i; usize::from(arg & 0x3f)]).unwrap_or_default())
                .collect(),
        },
        _ => Msg::Error {
            cid: if arg & 0x40 == 0 { Some(cid) } else { None },
            src_uid: Aid::new("p", 1),
            boxed_type_str: "E".into(),
            message: String::new(),
            tb_str: String::new(),
            relay_path: vec![],
            canceller: None,
            pld: None,
            errors: vec![],
        },
    }
}

const LOCAL: [MsgKind; 8] = [
    MsgKind::StartAck,
    MsgKind::Started,
    MsgKind::Yield,
    MsgKind::Stop,
    MsgKind::Return,
    MsgKind::Error,
    MsgKind::CancelAck,
    MsgKind::Credit,
];

/// What a stream's receive window holds never exceeds the window this
/// side opened (payloads here are at most 64 bytes, and a run's at most
/// 248 bytes: the rule for a message larger than the window allows that
/// much over half of it).
fn check_held(streams: &HashMap<u64, (Window, Acks)>, cid: u64, held: Window) {
    let (w, _) = streams.get(&cid).expect("a Yield admitted on a stream never opened here");
    assert!(held.msgs <= w.msgs, "held {held:?} over {w:?}");
    assert!(held.bytes <= w.bytes.max(w.bytes / 2 + 80), "held {held:?} over {w:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let side = if first & 1 == 0 { Side::Dialer } else { Side::Acceptor };
    let mut s: Session<u64> = Session::new(side, MAX_SERVED);
    let mut next = 0u64;
    let mut live: HashSet<u64> = HashSet::new();
    // Streams this side opened: the window, and the consumer's half.
    let mut streams: HashMap<u64, (Window, Acks)> = HashMap::new();
    let leave = |h: u64, live: &mut HashSet<u64>| {
        assert!(live.remove(&h), "handle {h} left the table twice (or was never in it)");
    };
    for pair in rest.chunks(2) {
        let (op, arg) = (pair[0], pair.get(1).copied().unwrap_or(0));
        match op >> 5 {
            // The peer sends something.
            0..=3 => {
                let msg = peer_msg(op, arg);
                let start_cid = match &msg {
                    Msg::Start { cid, .. } => Some(*cid),
                    _ => None,
                };
                match s.on_recv(&msg) {
                    Route::Start => {
                        let cid = start_cid.expect("only a Start is routed as one");
                        let h = next;
                        next += 1;
                        if s.accept(cid, h) {
                            live.insert(h);
                        }
                    }
                    Route::Deliver(h) | Route::Credit(h) | Route::Overrun { data: h, .. } => {
                        assert!(live.contains(h), "delivered to handle {h} after it left")
                    }
                    Route::Yield { data: h, held } => {
                        assert!(live.contains(h), "delivered to handle {h} after it left");
                        let cid = msg.cid().expect("a Yield names its dialog");
                        check_held(&streams, cid, held);
                    }
                    Route::Last(h) | Route::Broken { data: h, .. } => leave(h, &mut live),
                    _ => {}
                }
            }
            // This side opens a dialog.
            4 => {
                let h = next;
                next += 1;
                if s.open(h).is_some() {
                    live.insert(h);
                }
            }
            // Stream credit: open a window, send a `Yield` under credit, or
            // consume what arrived and release it; or the peer sends a run
            // of `Yield`s routed as one (the receiver's hot path).
            6 => {
                let cid = u64::from(op % 16);
                if op & 0x10 != 0 {
                    let (n, bytes) = (u64::from(arg & 7), u64::from(arg >> 3) * 8);
                    if let Some((h, held)) = s.on_recv_yield_run(cid, n, bytes) {
                        assert!(live.contains(h), "a run delivered to handle {h} after it left");
                        check_held(&streams, cid, held);
                    }
                    continue;
                }
                match arg & 3 {
                    0 => {
                        let w = Window { msgs: u64::from(arg >> 2) % 8, bytes: u64::from(arg) * 4 };
                        if let Some((_, acks)) = s.open_stream(cid, w, arg & 0x80 != 0) {
                            streams.insert(cid, (Window { msgs: w.msgs.max(1), bytes: w.bytes.max(1) }, acks));
                        }
                    }
                    1 => drop(s.send_yield(cid, u64::from(arg >> 2))),
                    _ => {
                        if let Some(r) = streams.get_mut(&cid).and_then(|(_, a)| a.consume(u64::from(arg >> 2))) {
                            s.release(cid, r);
                        }
                    }
                }
            }
            // This side sends something on a dialog.
            5 => {
                let kind = LOCAL[usize::from(arg) % LOCAL.len()];
                let ft = (kind == MsgKind::StartAck).then_some(FuncType::Context);
                if let Sent::Last { data, .. } = s.on_send(u64::from(op % 16), kind, ft) {
                    leave(data, &mut live);
                }
            }
            // This side gives a dialog up, or the channel closes.
            _ => {
                if arg & 1 == 0 {
                    if let Some(h) = s.close_dialog(u64::from(op % 16)) {
                        leave(h, &mut live);
                    }
                } else {
                    for h in s.close() {
                        leave(h, &mut live);
                    }
                }
            }
        }
        assert!(s.served() <= MAX_SERVED, "{} served, bound {MAX_SERVED}", s.served());
        assert_eq!(s.len(), live.len(), "the table and the live handles disagree");
    }
});
