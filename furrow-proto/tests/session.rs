//! Two sessions back to back, as two honest actors would drive them, under
//! random interleavings: dialogs opened by either side (calls, contexts,
//! cancel requests), callees and openers stepping at random, an opener
//! aborting at any point, messages delivered in a random mix of the two
//! directions, and the connection cut at a random moment.
//!
//! Contexts stream both ways under the sessions' credit: each side opens
//! its receiving window after `Started`, senders wait while the session
//! says there is no credit, and consumers take what arrived at random
//! moments and release it in batches, as the runtime does.
//!
//! Invariants: every `Start` gets exactly one terminal reply at its opener
//! (unless the opener aborted, or the connection was cut, and then both
//! sides forget the dialog); nothing is delivered to a dialog after its
//! end; an honest peer never meets a refusal, a violation or an overrun;
//! what a receiving window holds never exceeds the window; and when all is
//! said, both tables are empty.

use furrow_proto::flow::{Acks, Window};
use furrow_proto::session::{Route, Sent, SentYield, Session, Side};
use furrow_proto::{Aid, Cid, ErrorKind, FuncType, Msg, MsgKind, Payload};
use proptest::prelude::*;
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Call { fails: bool },
    Context { callee_yields: u8, opener_yields: u8, window: u8, size: u16 },
    Cancel,
}

#[derive(Clone, Debug)]
enum Op {
    Open { by_b: bool, kind: Kind },
    Callee(usize),
    Opener { which: usize, abort: bool },
    Deliver { to_b: bool },
    Cut,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        any::<bool>().prop_map(|fails| Kind::Call { fails }),
        (0u8..6, 0u8..6, 1u8..4, 0u16..300).prop_map(|(callee_yields, opener_yields, window, size)| Kind::Context {
            callee_yields,
            opener_yields,
            window,
            size
        }),
        Just(Kind::Cancel),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (any::<bool>(), kind()).prop_map(|(by_b, kind)| Op::Open { by_b, kind }),
        4 => any::<usize>().prop_map(Op::Callee),
        2 => (any::<usize>(), proptest::bool::weighted(0.05)).prop_map(|(which, abort)| Op::Opener { which, abort }),
        6 => any::<bool>().prop_map(|to_b| Op::Deliver { to_b }),
        1 => Just(Op::Cut),
    ]
}

/// One dialog, as both its ends' scripts see it.
#[derive(Debug)]
struct Dlg {
    by_b: bool,
    cid: Cid,
    kind: Kind,
    /// Callee: 0 not started yet, 1 accepted, 2 acked, 3 `Started` sent.
    step: u8,
    callee_yields: u8,
    callee_stopped: bool,
    callee_done: bool,
    opener_yields: u8,
    opener_stopped: bool,
    opener_started: bool,
    opener_done: bool,
    aborted: bool,
    terminals: u32,
    /// Each end's consumer half of its receiving window, once open, and
    /// how many messages wait for it unconsumed.
    acks: [Option<Acks>; 2],
    queued: [Vec<u64>; 2],
}

/// Index of a dialog's end in `Dlg::acks`/`queued`.
const CALLEE: usize = 0;
const OPENER: usize = 1;

/// The receiving window every stream of a context of `kind` opens with:
/// small, so senders wait for credit often.
fn window_of(kind: Kind) -> Window {
    match kind {
        Kind::Context { window, .. } => Window { msgs: u64::from(window), bytes: 400 },
        _ => Window { msgs: 1, bytes: 1 },
    }
}

fn yield_of(cid: Cid, kind: Kind) -> Msg {
    let size = match kind {
        Kind::Context { size, .. } => usize::from(size),
        _ => 0,
    };
    // A payload of `size` bytes: a msgpack bin of that length (the
    // session counts the encoded payload's length).
    let pld = Payload::encode(&serde_bytes::ByteBuf::from(vec![7u8; size])).expect("encode");
    Msg::Yield { cid, pld }
}

struct World {
    sessions: [Session<usize>; 2],
    /// wires[0]: A → B, wires[1]: B → A.
    wires: [VecDeque<Msg>; 2],
    dialogs: Vec<Dlg>,
    cut: bool,
}

fn me() -> Aid {
    Aid::new("x", 1)
}

impl World {
    fn new() -> World {
        World {
            sessions: [Session::new(Side::Dialer, 1000), Session::new(Side::Acceptor, 1000)],
            wires: [VecDeque::new(), VecDeque::new()],
            dialogs: Vec::new(),
            cut: false,
        }
    }

    /// Side `from` sends `msg` of dialog `d`; false when its session says
    /// the dialog is over for it (then the message is not sent).
    fn send(&mut self, from: usize, d: usize, msg: Msg) -> Result<Sent<usize>, TestCaseError> {
        let cid = self.dialogs[d].cid;
        let ft = match &msg {
            Msg::StartAck { functype, .. } => Some(*functype),
            _ => None,
        };
        let sent = self.sessions[from].on_send(cid, msg.kind(), ft);
        match &sent {
            Sent::Accept { .. } | Sent::Last { .. } => self.wires[from].push_back(msg),
            Sent::Drop => {}
            Sent::Refused(r) => return Err(TestCaseError::fail(format!("an honest side's send was refused: {r}"))),
        }
        if let Sent::Last { data, .. } = &sent {
            prop_assert_eq!(*data, d);
        }
        Ok(sent)
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        if self.cut {
            return Ok(());
        }
        match *op {
            Op::Open { by_b, kind } => {
                let side = usize::from(by_b);
                let d = self.dialogs.len();
                let cid = self.sessions[side].open(d).expect("open");
                let (callee_yields, opener_yields) = match kind {
                    Kind::Context { callee_yields, opener_yields, .. } => (callee_yields, opener_yields),
                    _ => (0, 0),
                };
                self.dialogs.push(Dlg {
                    by_b,
                    cid,
                    kind,
                    step: 0,
                    callee_yields,
                    callee_stopped: false,
                    callee_done: false,
                    opener_yields,
                    opener_stopped: false,
                    opener_started: false,
                    opener_done: false,
                    aborted: false,
                    terminals: 0,
                    acks: [None, None],
                    queued: [Vec::new(), Vec::new()],
                });
                let ns = if matches!(kind, Kind::Cancel) { "furrow::runtime" } else { "m" };
                self.wires[side].push_back(Msg::Start {
                    cid,
                    ns: ns.into(),
                    func: "f".into(),
                    kwargs: Payload::default(),
                    uid: me(),
                });
            }
            Op::Callee(i) => {
                if self.dialogs.is_empty() {
                    return Ok(());
                }
                let d = i % self.dialogs.len();
                self.callee_step(d)?;
            }
            Op::Opener { which, abort } => {
                if self.dialogs.is_empty() {
                    return Ok(());
                }
                let d = which % self.dialogs.len();
                self.opener_step(d, abort)?;
            }
            Op::Deliver { to_b } => self.deliver(usize::from(to_b))?,
            Op::Cut => {
                self.cut = true;
                for s in &mut self.sessions {
                    s.close();
                    prop_assert!(s.is_empty());
                    prop_assert!(s.open(usize::MAX).is_none(), "nothing opens on a closed channel");
                }
            }
        }
        Ok(())
    }

    fn callee_step(&mut self, d: usize) -> Result<(), TestCaseError> {
        let dl = &self.dialogs[d];
        if dl.step == 0 || dl.callee_done {
            return Ok(());
        }
        let callee = usize::from(!dl.by_b);
        let cid = dl.cid;
        if self.consume(d, CALLEE, callee) {
            return Ok(());
        }
        let dl = &self.dialogs[d];
        if dl.step == 3 && dl.acks[CALLEE].is_none() {
            // After `Started`, the callee opens its stream: its window,
            // granted to the opener.
            return self.open_stream(d, CALLEE, callee);
        }
        let msg = match (dl.kind, dl.step) {
            (Kind::Cancel, _) => Msg::CancelAck { cid, pld: Payload::default() },
            (Kind::Call { .. }, 1) => Msg::StartAck { cid, functype: FuncType::Asyncfunc },
            (Kind::Call { fails: false }, _) => Msg::Return { cid, pld: Payload::default() },
            (Kind::Call { fails: true }, _) => error(cid),
            (Kind::Context { .. }, 1) => Msg::StartAck { cid, functype: FuncType::Context },
            (Kind::Context { .. }, 2) => Msg::Started { cid, pld: Payload::default() },
            (Kind::Context { .. }, _) if dl.callee_yields > 0 && !dl.callee_stopped => {
                let y = yield_of(cid, dl.kind);
                if !self.send_yield(callee, y)? {
                    return Ok(());
                }
                self.dialogs[d].callee_yields -= 1;
                return Ok(());
            }
            (Kind::Context { .. }, _) if !dl.callee_stopped => Msg::Stop { cid },
            (Kind::Context { .. }, _) => Msg::Return { cid, pld: Payload::default() },
        };
        let kind = msg.kind();
        let sent = self.send(callee, d, msg)?;
        let dl = &mut self.dialogs[d];
        match kind {
            MsgKind::StartAck | MsgKind::Started => dl.step += 1,
            MsgKind::Stop => dl.callee_stopped = true,
            _ => {}
        }
        if matches!(sent, Sent::Last { .. }) {
            dl.callee_done = true;
        }
        Ok(())
    }

    fn opener_step(&mut self, d: usize, abort: bool) -> Result<(), TestCaseError> {
        let dl = &self.dialogs[d];
        if dl.opener_done {
            return Ok(());
        }
        let opener = usize::from(dl.by_b);
        let cid = dl.cid;
        if !abort && self.consume(d, OPENER, opener) {
            return Ok(());
        }
        let dl = &self.dialogs[d];
        let msg = if abort {
            error(cid)
        } else if !dl.opener_started {
            return Ok(());
        } else if dl.acks[OPENER].is_none() {
            return self.open_stream(d, OPENER, opener);
        } else if dl.opener_yields > 0 && !dl.opener_stopped {
            let y = yield_of(cid, dl.kind);
            if self.send_yield(opener, y)? {
                self.dialogs[d].opener_yields -= 1;
            }
            return Ok(());
        } else if !dl.opener_stopped {
            Msg::Stop { cid }
        } else {
            Msg::Credit { cid, n: 1, bytes: None }
        };
        let kind = msg.kind();
        let sent = self.send(opener, d, msg)?;
        let dl = &mut self.dialogs[d];
        if kind == MsgKind::Stop {
            dl.opener_stopped = true;
        }
        if let Sent::Last { .. } = sent {
            dl.opener_done = true;
            dl.aborted = true;
        }
        Ok(())
    }

    fn deliver(&mut self, to: usize) -> Result<(), TestCaseError> {
        let from = 1 - to;
        let Some(msg) = self.wires[from].pop_front() else { return Ok(()) };
        let cid = msg.cid();
        // The dialog this message belongs to: opened by `from` (a `Start`
        // or opener traffic) or by `to` (callee traffic coming back).
        let find = |w: &World, opened_by_b: bool| {
            w.dialogs.iter().position(|dl| Some(dl.cid) == cid && dl.by_b == opened_by_b)
        };
        let is_start = matches!(msg, Msg::Start { .. });
        match self.sessions[to].on_recv(&msg) {
            Route::Start => {
                let d = find(self, from == 1).ok_or_else(|| TestCaseError::fail("a Start nobody sent"))?;
                prop_assert!(self.sessions[to].accept(self.dialogs[d].cid, d));
                self.dialogs[d].step = 1;
            }
            Route::Deliver(d) => {
                let d = *d;
                let dl = &mut self.dialogs[d];
                let at_opener = dl.by_b == (to == 1);
                if at_opener {
                    prop_assert!(!dl.opener_done, "delivered to an opener after its end: {msg:?}");
                    if msg.kind() == MsgKind::Started {
                        dl.opener_started = true;
                    }
                } else {
                    prop_assert!(!dl.callee_done, "delivered to a callee after its end: {msg:?}");
                }
            }
            Route::Yield { data, held } => {
                let d = *data;
                let dl = &mut self.dialogs[d];
                let at_opener = dl.by_b == (to == 1);
                let end = if at_opener { OPENER } else { CALLEE };
                prop_assert!(!(if at_opener { dl.opener_done } else { dl.callee_done }), "a Yield after the end");
                prop_assert!(dl.acks[end].is_some(), "a Yield admitted before its window was open");
                let w = window_of(dl.kind);
                prop_assert!(held.msgs <= w.msgs, "held {held:?} over the window {w:?}");
                let largest = match dl.kind {
                    Kind::Context { size, .. } => u64::from(size) + 8,
                    _ => 0,
                };
                prop_assert!(held.bytes <= w.bytes.max(w.bytes / 2 + largest), "held {held:?} over {w:?}");
                let size = match &msg {
                    Msg::Yield { pld, .. } => pld.len() as u64,
                    _ => return Err(TestCaseError::fail("a Yield route for another message")),
                };
                dl.queued[end].push(size);
            }
            Route::Credit(d) => {
                let dl = &self.dialogs[*d];
                let at_opener = dl.by_b == (to == 1);
                prop_assert!(!(if at_opener { dl.opener_done } else { dl.callee_done }), "credit after the end");
            }
            Route::Last(d) => {
                let dl = &mut self.dialogs[d];
                let at_opener = dl.by_b == (to == 1);
                if at_opener {
                    prop_assert!(!dl.opener_done, "a second end at the opener: {msg:?}");
                    dl.opener_done = true;
                    dl.terminals += 1;
                } else {
                    prop_assert!(!dl.callee_done, "a second end at the callee: {msg:?}");
                    prop_assert_eq!(msg.kind(), MsgKind::Error, "only an abort ends a callee from outside");
                    dl.callee_done = true;
                }
            }
            Route::Late => prop_assert!(!is_start, "a Start is never late"),
            other => return Err(TestCaseError::fail(format!("honest traffic routed as {other:?}: {msg:?}"))),
        }
        Ok(())
    }

    /// End `end` (on side `side`) of dialog `d` opens its receiving window
    /// and grants it.
    fn open_stream(&mut self, d: usize, end: usize, side: usize) -> Result<(), TestCaseError> {
        let (cid, kind) = (self.dialogs[d].cid, self.dialogs[d].kind);
        let Some((grant, acks)) = self.sessions[side].open_stream(cid, window_of(kind), false) else {
            // The dialog is over on this side already (an abort crossed).
            self.dialogs[d].acks[end] = Some(furrow_proto::flow::RecvWindow::open(window_of(kind), false).2);
            return Ok(());
        };
        self.dialogs[d].acks[end] = Some(acks);
        self.send(side, d, Msg::Credit { cid, n: grant.msgs, bytes: grant.bytes })?;
        Ok(())
    }

    /// Side `side` tries to send the `Yield` `y`: false when
    /// it has no credit (it waits).
    fn send_yield(&mut self, side: usize, y: Msg) -> Result<bool, TestCaseError> {
        let (cid, size) = match &y {
            Msg::Yield { cid, pld } => (*cid, pld.len() as u64),
            _ => return Err(TestCaseError::fail("not a Yield")),
        };
        match self.sessions[side].send_yield(cid, size) {
            SentYield::Accept => {
                self.wires[side].push_back(y);
                Ok(true)
            }
            SentYield::NoCredit => Ok(false),
            // The dialog is over here: the script moves on.
            SentYield::Drop => Ok(true),
            SentYield::Refused(r) => Err(TestCaseError::fail(format!("an honest Yield was refused: {r}"))),
        }
    }

    /// End `end` of dialog `d` (on side `side`) consumes one waiting
    /// message, if any, releasing in batches as the runtime does; true if
    /// it did.
    fn consume(&mut self, d: usize, end: usize, side: usize) -> bool {
        let dl = &mut self.dialogs[d];
        let cid = dl.cid;
        let Some(size) = dl.queued[end].pop() else { return false };
        let Some(acks) = dl.acks[end].as_mut() else { return false };
        if let Some(r) = acks.consume(size) {
            self.sessions[side].release(cid, r);
            if let Some(g) = r.grant() {
                // Through the session as any message: dropped once the
                // dialog is over.
                if let Sent::Accept { .. } = self.sessions[side].on_send(cid, MsgKind::Credit, None) {
                    self.wires[side].push_back(Msg::Credit { cid, n: g.msgs, bytes: g.bytes });
                }
            }
        }
        true
    }

    /// Let every script run to its end and every message arrive.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..10_000 {
            if self.cut {
                return Ok(());
            }
            let before = (self.wires[0].len(), self.wires[1].len());
            for d in 0..self.dialogs.len() {
                self.callee_step(d)?;
                self.opener_step(d, false)?;
            }
            self.deliver(0)?;
            self.deliver(1)?;
            let idle = self.dialogs.iter().all(|dl| (dl.callee_done || dl.step == 0) && dl.opener_done);
            if idle && self.wires.iter().all(VecDeque::is_empty) && before == (0, 0) {
                return Ok(());
            }
        }
        Err(TestCaseError::fail("did not settle"))
    }
}

fn error(cid: Cid) -> Msg {
    Msg::Error {
        cid: Some(cid),
        src_uid: me(),
        boxed_type_str: "E".into(),
        message: "boom".into(),
        tb_str: String::new(),
        relay_path: vec![],
        canceller: None,
        pld: None,
        errors: vec![],
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn every_start_gets_one_answer_and_nothing_comes_after_it(ops in proptest::collection::vec(op(), 0..120)) {
        let mut w = World::new();
        for o in &ops {
            w.apply(o)?;
        }
        w.settle()?;
        if w.cut {
            // Both sides forgot every dialog: each learns of the loss from
            // its channel closing.
            prop_assert!(w.sessions.iter().all(Session::is_empty));
            return Ok(());
        }
        for dl in &w.dialogs {
            if dl.aborted {
                prop_assert!(dl.terminals == 0, "an aborted opener gets no answer: {dl:?}");
            } else {
                prop_assert_eq!(dl.terminals, 1, "dialog {:?}", dl);
            }
        }
        prop_assert!(w.sessions.iter().all(Session::is_empty), "tables: {:?}", w.sessions);
        prop_assert!(w.sessions.iter().all(|s| s.served() == 0));
    }
}

#[test]
fn starts_beyond_the_bound_are_refused_and_the_bound_frees_as_dialogs_end() {
    let mut callee: Session<u32> = Session::new(Side::Acceptor, 2);
    let start = |cid| Msg::Start { cid, ns: "m".into(), func: "f".into(), kwargs: Payload::default(), uid: me() };
    for cid in [1, 3] {
        assert_eq!(callee.on_recv(&start(cid)), Route::Start);
        assert!(callee.accept(cid, 0));
    }
    assert!(matches!(callee.on_recv(&start(5)), Route::Refuse { kind: ErrorKind::TooManyDialogs, .. }));
    assert!(matches!(callee.on_send(1, MsgKind::Error, None), Sent::Last { .. }));
    assert_eq!(callee.on_recv(&start(5)), Route::Start, "a slot is free again");
    // Wrong parity, and reuse of a live id, are violations.
    assert!(matches!(callee.on_recv(&start(4)), Route::Violation { .. }));
    assert!(matches!(callee.on_recv(&start(3)), Route::Violation { .. }));
}

#[test]
fn a_message_that_does_not_fit_breaks_only_its_dialog() {
    let mut s: Session<&str> = Session::new(Side::Dialer, 8);
    let a = s.open("a").unwrap();
    let b = s.open("b").unwrap();
    // A `Yield` before `StartAck`: dialog `a` is broken and leaves the table.
    let r = s.on_recv(&Msg::Yield { cid: a, pld: Payload::default() });
    assert!(matches!(r, Route::Broken { data: "a", .. }), "{r:?}");
    assert_eq!(s.on_recv(&Msg::StartAck { cid: b, functype: FuncType::Asyncfunc }), Route::Deliver(&mut "b"));
    assert_eq!(s.len(), 1);
    // Late traffic for `a` is dropped; a handshake message is a violation.
    assert_eq!(s.on_recv(&Msg::Return { cid: a, pld: Payload::default() }), Route::Late);
    assert!(matches!(s.on_recv(&Msg::Ready { addrs: vec![] }), Route::Violation { cid: None, .. }));
    assert_eq!(s.on_recv(&Msg::Ping { seq: 4 }), Route::Pong(4));
}

/// Found by the `session` fuzz target (CI, stop 22): opening a stream a
/// second time handed out a consumer count for the new window while the
/// session kept enforcing the first one. A dialog has one stream.
#[test]
fn a_stream_opens_once_and_keeps_its_first_window() {
    let mut s: Session<&str> = Session::new(Side::Dialer, 8);
    let cid = s.open("ctx").unwrap();
    assert_eq!(s.on_recv(&Msg::StartAck { cid, functype: FuncType::Context }), Route::Deliver(&mut "ctx"));
    assert_eq!(s.on_recv(&Msg::Started { cid, pld: Payload::default() }), Route::Deliver(&mut "ctx"));
    let (grant, _acks) = s.open_stream(cid, Window { msgs: 2, bytes: 1000 }, false).expect("first open");
    assert_eq!((grant.msgs, grant.bytes), (2, Some(1000)));
    assert!(s.open_stream(cid, Window { msgs: 1, bytes: 1 }, false).is_none(), "a second open is refused");
    let y = Msg::Yield { cid, pld: Payload::encode(&7u64).unwrap() };
    for held in 1..=2 {
        let r = s.on_recv(&y);
        assert!(matches!(r, Route::Yield { held: Window { msgs, .. }, .. } if msgs == held), "{r:?}");
    }
    assert!(matches!(s.on_recv(&y), Route::Overrun { window: Window { msgs: 2, .. }, .. }));
}

/// A `Yield` that arrives before the stream is opened is an overrun; the
/// stream stays overrun when it is opened, and opening it is still once.
#[test]
fn a_stream_overrun_before_it_opened_stays_overrun() {
    let mut s: Session<&str> = Session::new(Side::Dialer, 8);
    let cid = s.open("ctx").unwrap();
    s.on_recv(&Msg::StartAck { cid, functype: FuncType::Context });
    s.on_recv(&Msg::Started { cid, pld: Payload::default() });
    let y = Msg::Yield { cid, pld: Payload::default() };
    assert!(matches!(s.on_recv(&y), Route::Overrun { .. }));
    assert!(s.open_stream(cid, Window { msgs: 4, bytes: 1000 }, false).is_some());
    assert!(s.open_stream(cid, Window { msgs: 4, bytes: 1000 }, false).is_none());
    assert_eq!(s.on_recv(&y), Route::Late, "an overrun stream drops what follows");
}

/// Found by the `session` fuzz target (`fuzz/regressions/session/
/// yields-on-an-unopened-stream`): a `Yields` with no value, on a stream not
/// yet opened, was delivered (a window of nothing holds nothing more), and
/// a run of no value was routed as one. Before the stream opens any stream
/// frame is an overrun, as a `Yield` is; a run is routed as one only on an
/// open stream, and only a run of something.
#[test]
fn a_yields_before_the_stream_opened_is_an_overrun_even_empty() {
    let mut s: Session<&str> = Session::new(Side::Dialer, 8);
    let cid = s.open("ctx").unwrap();
    s.on_recv(&Msg::StartAck { cid, functype: FuncType::Context });
    s.on_recv(&Msg::Started { cid, pld: Payload::default() });
    assert!(s.on_recv_yield_run(cid, 0, 0).is_none(), "a run of nothing");
    assert!(s.on_recv_yield_run(cid, 2, 10).is_none(), "a run on an unopened stream");
    assert!(matches!(s.on_recv(&Msg::Yields { cid, plds: vec![] }), Route::Overrun { .. }));
}

/// A `Yields` is admitted whole (`on_recv`) or as a run: what the window
/// takes is delivered, what it does not is an overrun, and what the run
/// path refuses changes nothing.
#[test]
fn a_yields_is_admitted_whole_and_a_run_that_does_not_fit_changes_nothing() {
    let mut s: Session<&str> = Session::new(Side::Dialer, 8);
    let cid = s.open("ctx").unwrap();
    s.on_recv(&Msg::StartAck { cid, functype: FuncType::Context });
    s.on_recv(&Msg::Started { cid, pld: Payload::default() });
    s.open_stream(cid, Window { msgs: 4, bytes: 1000 }, false).expect("opens");
    let pld = Payload::encode(&7u64).unwrap();
    let two = Msg::Yields { cid, plds: vec![pld.clone(), pld.clone()] };
    assert!(matches!(s.on_recv(&two), Route::Yield { held: Window { msgs: 2, .. }, .. }));
    assert!(s.on_recv_yield_run(cid, 3, 3).is_none(), "3 more do not fit in 4");
    let (_, held) = s.on_recv_yield_run(cid, 2, 2).expect("2 more fit");
    assert_eq!(held.msgs, 4);
    assert!(matches!(s.on_recv(&two), Route::Overrun { window: Window { msgs: 4, .. }, .. }));
}
