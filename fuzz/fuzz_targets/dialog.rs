//! The dialog state machine from both ends, with messages crossing in
//! flight, driven by arbitrary bytes.
//!
//! Each input byte is one action: one side sends a message kind (kept only
//! if that side's own machine accepts sending it), or the oldest message in
//! flight from one side is delivered. What must hold: no panic; the
//! receiver accepts whatever the sender's machine let out, except that once
//! it is itself done it may drop late stream traffic or refuse an outcome
//! that crossed its own; once everything is delivered, both ends agree on
//! whether the dialog is over. The arbiter, fed the same bytes, decides
//! exactly once and never changes its mind.
#![no_main]

use furrow_proto::dialog::{Arbiter, Completion, Dialog, Role, Verdict};
use furrow_proto::{FuncType, MsgKind};
use libfuzzer_sys::fuzz_target;
use std::collections::VecDeque;

const KINDS: [MsgKind; 9] = [
    MsgKind::Start,
    MsgKind::StartAck,
    MsgKind::Started,
    MsgKind::Yield,
    MsgKind::Stop,
    MsgKind::Return,
    MsgKind::Error,
    MsgKind::CancelAck,
    MsgKind::Credit,
];

fn deliver(ends: &mut [Dialog; 2], wire: &mut [VecDeque<(MsgKind, FuncType)>; 2], from: usize) {
    let Some((kind, ft)) = wire[from].pop_front() else { return };
    let to = 1 - from;
    let was_done = ends[to].is_done();
    match ends[to].on_recv(kind) {
        Ok(Verdict::Accept) => {
            if kind == MsgKind::StartAck {
                ends[to].set_functype(ft);
            }
        }
        Ok(Verdict::Drop) => assert!(was_done, "{kind:?} dropped by a live end"),
        Err(v) => assert!(
            was_done && matches!(kind, MsgKind::StartAck | MsgKind::Return | MsgKind::Error | MsgKind::CancelAck),
            "side {to} refused a {kind:?} the other side's machine let out: {v}"
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut ends = [Dialog::new(Role::Opener), Dialog::new(Role::Callee)];
    let mut wire: [VecDeque<(MsgKind, FuncType)>; 2] = [VecDeque::new(), VecDeque::new()];
    for &b in data {
        let side = usize::from(b & 1);
        if b & 2 == 0 {
            deliver(&mut ends, &mut wire, side);
            continue;
        }
        let kind = KINDS[usize::from(b >> 2) % KINDS.len()];
        let ft = if b & 0x80 != 0 { FuncType::Context } else { FuncType::Asyncfunc };
        let was_done = ends[side].is_done();
        if let Ok(Verdict::Accept) = ends[side].on_send(kind) {
            assert!(!was_done, "a finished end let out a {kind:?}");
            wire[side].push_back((kind, ft));
            if kind == MsgKind::StartAck {
                ends[side].set_functype(ft);
            }
        }
    }
    while !wire[0].is_empty() || !wire[1].is_empty() {
        deliver(&mut ends, &mut wire, 0);
        deliver(&mut ends, &mut wire, 1);
    }
    assert_eq!(ends[0].is_done(), ends[1].is_done(), "the two ends disagree on whether the dialog is over");

    // The arbiter: completions, cancels and grace expiry in byte order.
    let mut arb = Arbiter::new(data.first().is_some_and(|b| b & 1 == 1));
    let mut decided = None;
    for &b in data {
        let d = match b % 6 {
            0 => arb.on_completion(Completion::Returned),
            1 => arb.on_completion(Completion::Failed { cancellation: false }),
            2 => arb.on_completion(Completion::Failed { cancellation: true }),
            3 => arb.on_completion(Completion::Panicked),
            4 => arb.on_cancel(),
            _ => arb.on_grace_expired(),
        };
        if let Some(d) = d {
            assert!(decided.is_none(), "the arbiter decided twice: {decided:?} then {d:?}");
            decided = Some(d);
        }
        assert_eq!(arb.decision(), decided, "decision() disagrees with what was reported");
    }
});
