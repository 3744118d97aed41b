//! The per-dialog state machine, checked against the protocol's rules from
//! both ends: exhaustively over every reachable state, on random event
//! sequences, on random legal dialogs, and on two ends talking over
//! channels where messages cross in flight.

#![allow(missing_docs, unreachable_pub, dead_code, clippy::unwrap_used)]

mod common;

use common::strategies::ALL_KINDS;
use furrow_proto::dialog::{Dialog, Role, State, Verdict, Violation};
use furrow_proto::{FuncType, MsgKind};
use proptest::collection::vec;
use proptest::prelude::*;
use std::collections::{HashSet, VecDeque};

use MsgKind as K;

const OPENER: usize = 0;
const CALLEE: usize = 1;

/// One thing that can happen to one end's state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Ev {
    Send(MsgKind),
    Recv(MsgKind),
    SetFt(FuncType),
}

/// The side that sent the message an event is about, for an end of `role`.
fn sender(role: Role, ev: Ev) -> usize {
    match (role, ev) {
        (Role::Opener, Ev::Send(_)) | (Role::Callee, Ev::Recv(_)) => OPENER,
        _ => CALLEE,
    }
}

/// What one end has seen so far, tracked independently of the machine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Obs {
    start: bool,
    ack: bool,
    /// `set_functype(Context)` was called after the StartAck.
    ctx: bool,
    started: bool,
    stopped: [bool; 2],
    outcomes: u8,
}

impl Obs {
    fn done(&self) -> bool {
        self.outcomes > 0
    }

    /// Whether the protocol allows `kind` from side `from` now (ignoring a
    /// repeated Stop, which the rules leave open).
    fn may_accept(&self, kind: MsgKind, from: usize) -> bool {
        if self.done() {
            return false;
        }
        match kind {
            K::Start => !self.start && from == OPENER,
            K::StartAck => self.start && !self.ack && from == CALLEE,
            K::Started => self.ack && self.ctx && !self.started && from == CALLEE,
            K::Yield | K::Yields => self.started && !self.stopped[from],
            K::Stop | K::Credit => self.started,
            K::Return => self.ack && from == CALLEE,
            K::Error => self.start,
            // A cancel request (runtime `Start`) is answered by CancelAck,
            // ending it, before or after a StartAck (never a context's).
            K::CancelAck => self.start && !self.ctx && from == CALLEE,
            K::Aid | K::SpawnSpec | K::Ready | K::Challenge | K::Auth | K::AuthOk | K::Ping | K::Pong => false,
        }
    }

    /// Whether the protocol requires `kind` from side `from` be accepted now.
    fn must_accept(&self, kind: MsgKind, from: usize) -> bool {
        self.may_accept(kind, from) && !(kind == K::Stop && self.stopped[from])
    }

    fn record(&mut self, kind: MsgKind, from: usize) {
        match kind {
            K::Start => self.start = true,
            K::StartAck => self.ack = true,
            K::Started => self.started = true,
            K::Stop => self.stopped[from] = true,
            K::Return | K::Error | K::CancelAck => self.outcomes += 1,
            _ => {}
        }
    }
}

/// Apply `ev` to `d` and check every rule that applies. Returns the verdict.
fn step(
    d: &mut Dialog,
    obs: &mut Obs,
    role: Role,
    ev: Ev,
) -> Result<Option<Result<Verdict, Violation>>, TestCaseError> {
    let before = d.state();
    prop_assert_eq!(d.is_done(), before == State::Done);
    prop_assert_eq!(obs.done(), before == State::Done, "{:?} vs {:?}", obs, before);
    let kind = match ev {
        Ev::SetFt(ft) => {
            d.set_functype(ft);
            let after = d.state();
            if before == State::Running(FuncType::Asyncfunc) {
                prop_assert_eq!(after, State::Running(ft));
            } else {
                prop_assert_eq!(after, before, "set_functype only acts right after StartAck");
            }
            if ft == FuncType::Context && obs.ack && !obs.started && !obs.done() {
                obs.ctx = true;
            }
            return Ok(None);
        }
        Ev::Send(k) | Ev::Recv(k) => k,
    };
    let from = sender(role, ev);
    let r = match ev {
        Ev::Send(_) => d.on_send(kind),
        _ => d.on_recv(kind),
    };
    let after = d.state();
    match &r {
        Ok(Verdict::Accept) => {
            prop_assert!(
                obs.may_accept(kind, from),
                "{:?} accepted {:?} from {} in {:?} ({:?})",
                role,
                ev,
                from,
                before,
                obs
            );
            obs.record(kind, from);
            prop_assert!(obs.outcomes <= 1, "a second outcome was accepted");
            prop_assert_eq!(after == State::Done, obs.done());
            if matches!(kind, K::Yield | K::Yields) {
                prop_assert!(obs.started, "Yield before Started");
            }
        }
        Ok(Verdict::Drop) => {
            prop_assert_eq!(before, State::Done, "Drop before the outcome");
            prop_assert!(matches!(kind, K::Yield | K::Yields | K::Stop | K::Credit | K::Started), "{:?} dropped", kind);
            prop_assert_eq!(after, before);
        }
        Err(v) => {
            prop_assert!(
                !obs.must_accept(kind, from),
                "{:?} refused {:?} from {} in {:?}: {}",
                role,
                ev,
                from,
                before,
                v
            );
            prop_assert_eq!(v.kind, kind);
            prop_assert_eq!(v.role, role);
            prop_assert_eq!(v.state, before);
            prop_assert_eq!(v.dir, if matches!(ev, Ev::Send(_)) { "sent" } else { "received" });
            prop_assert_eq!(after, before, "a violation leaves the state alone");
            let text = v.to_string();
            prop_assert!(text.contains(&format!("{kind:?}")) && text.contains(v.dir), "{}", text);
        }
    }
    if before == State::Done {
        match kind {
            // Late stream traffic is dropped, not an error.
            K::Yield | K::Yields | K::Stop | K::Credit => prop_assert_eq!(r.clone(), Ok(Verdict::Drop)),
            // Exactly one outcome; no second StartAck either.
            K::Return | K::Error | K::CancelAck | K::StartAck | K::Start => {
                prop_assert!(r.is_err(), "{:?} after Done: {:?}", kind, r)
            }
            _ => prop_assert_ne!(r.clone(), Ok(Verdict::Accept)),
        }
    }
    Ok(Some(r))
}

fn all_events() -> Vec<Ev> {
    let mut evs: Vec<Ev> = ALL_KINDS.iter().flat_map(|&k| [Ev::Send(k), Ev::Recv(k)]).collect();
    evs.extend([Ev::SetFt(FuncType::Asyncfunc), Ev::SetFt(FuncType::Context)]);
    evs
}

/// Every event in every reachable (state, history) pair, for both roles.
#[test]
fn exhaustive_over_reachable_states() {
    for role in [Role::Opener, Role::Callee] {
        let mut seen: HashSet<(String, Obs)> = HashSet::new();
        let mut queue = VecDeque::from([(Dialog::new(role), Obs::default())]);
        let mut states = HashSet::new();
        while let Some((d, obs)) = queue.pop_front() {
            if !seen.insert((format!("{:?}", d.state()), obs.clone())) {
                continue;
            }
            states.insert(format!("{:?}", d.state()));
            for ev in all_events() {
                let (mut d2, mut obs2) = (d.clone(), obs.clone());
                step(&mut d2, &mut obs2, role, ev).unwrap_or_else(|e| panic!("{role:?} {ev:?}: {e}"));
                queue.push_back((d2, obs2));
            }
        }
        // Idle, Starting, Running×2, Open×4, Done.
        assert_eq!(states.len(), 9, "{role:?} reached {states:?}");
    }
}

fn dialog_kind() -> impl Strategy<Value = MsgKind> {
    prop_oneof![
        2 => Just(K::Start),
        3 => Just(K::StartAck),
        3 => Just(K::Started),
        5 => Just(K::Yield),
        3 => Just(K::Stop),
        2 => Just(K::Credit),
        1 => Just(K::Return),
        1 => Just(K::Error),
        1 => Just(K::CancelAck),
        1 => prop::sample::select(vec![K::Aid, K::SpawnSpec, K::Ready]),
    ]
}

fn functype() -> impl Strategy<Value = FuncType> {
    prop_oneof![Just(FuncType::Asyncfunc), Just(FuncType::Context)]
}

fn event() -> impl Strategy<Value = Ev> {
    prop_oneof![
        5 => dialog_kind().prop_map(Ev::Send),
        5 => dialog_kind().prop_map(Ev::Recv),
        2 => functype().prop_map(Ev::SetFt),
    ]
}

/// A legal dialog, message by message: (sender side, kind), with the
/// function type the StartAck announces.
fn legal_dialog() -> impl Strategy<Value = (FuncType, Vec<(usize, MsgKind)>)> {
    let outcome = prop_oneof![Just((CALLEE, K::Return)), Just((CALLEE, K::Error)), Just((OPENER, K::Error))];
    let stream = vec(
        (prop_oneof![Just(OPENER), Just(CALLEE)], prop::sample::select(vec![K::Yield, K::Yield, K::Credit, K::Stop])),
        0..24,
    );
    let early_error = prop_oneof![Just(OPENER), Just(CALLEE)];
    prop_oneof![
        1 => early_error.prop_map(|side| (FuncType::Asyncfunc, vec![(OPENER, K::Start), (side, K::Error)])),
        // A cancel request, answered with or without a StartAck first.
        1 => any::<bool>().prop_map(|acked| {
            let mut msgs = vec![(OPENER, K::Start)];
            if acked {
                msgs.push((CALLEE, K::StartAck));
            }
            msgs.push((CALLEE, K::CancelAck));
            (FuncType::Asyncfunc, msgs)
        }),
        2 => outcome.clone().prop_map(|o| (FuncType::Asyncfunc, vec![(OPENER, K::Start), (CALLEE, K::StartAck), o])),
        // A context that fails before `started()`.
        1 => outcome.clone().prop_filter("an Error", |o| o.1 == K::Error)
            .prop_map(|o| (FuncType::Context, vec![(OPENER, K::Start), (CALLEE, K::StartAck), o])),
        5 => (stream, outcome).prop_map(|(stream, o)| {
            let mut msgs = vec![(OPENER, K::Start), (CALLEE, K::StartAck), (CALLEE, K::Started)];
            let mut stopped = [false; 2];
            for (side, k) in stream {
                if stopped[side] && matches!(k, K::Yield | K::Stop) {
                    continue;
                }
                if k == K::Stop {
                    stopped[side] = true;
                }
                msgs.push((side, k));
            }
            msgs.push(o);
            (FuncType::Context, msgs)
        }),
    ]
}

/// `msgs` as the events one end of `role` sees, with `set_functype` right
/// after the StartAck.
fn events_for(role: Role, ft: FuncType, msgs: &[(usize, MsgKind)]) -> Vec<Ev> {
    let me = if role == Role::Opener { OPENER } else { CALLEE };
    let mut evs = Vec::new();
    for &(side, k) in msgs {
        evs.push(if side == me { Ev::Send(k) } else { Ev::Recv(k) });
        if k == K::StartAck {
            evs.push(Ev::SetFt(ft));
        }
    }
    evs
}

/// What the two-ends test does next.
#[derive(Clone, Debug)]
enum Action {
    /// Side sends a message its state allows (picked from the menu).
    SendLegal(usize, prop::sample::Index, FuncType),
    /// Side sends an outcome its state allows.
    SendOutcome(usize, prop::sample::Index),
    /// Side tries to send any message (refused ones are not sent).
    Send(usize, MsgKind, FuncType),
    /// Deliver the oldest message in flight from side.
    Deliver(usize),
}

/// What `Action::SendLegal` picks from (stream traffic favoured).
const LEGAL_SEND_MENU: [MsgKind; 10] =
    [K::Start, K::StartAck, K::Started, K::Yield, K::Yield, K::Yield, K::Yield, K::Stop, K::Credit, K::Credit];

/// What `Action::SendOutcome` picks from.
const OUTCOMES: [MsgKind; 3] = [K::Return, K::Error, K::CancelAck];

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Opener), Just(Role::Callee)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random events from scratch.
    #[test]
    fn random_events(role in role(), evs in vec(event(), 0..60)) {
        let (mut d, mut obs) = (Dialog::new(role), Obs::default());
        for ev in evs {
            step(&mut d, &mut obs, role, ev)?;
        }
    }

    /// A legal dialog cut at a random point, then random events: reaches
    /// every state often.
    #[test]
    fn legal_prefix_then_random_events(
        role in role(),
        (ft, msgs) in legal_dialog(),
        cut in any::<prop::sample::Index>(),
        tail in vec(event(), 0..40),
    ) {
        let evs = events_for(role, ft, &msgs);
        let cut = cut.index(evs.len() + 1);
        let (mut d, mut obs) = (Dialog::new(role), Obs::default());
        for &ev in &evs[..cut] {
            let r = step(&mut d, &mut obs, role, ev)?;
            prop_assert!(matches!(r, None | Some(Ok(Verdict::Accept))), "legal {:?} refused: {:?}", ev, r);
        }
        for ev in tail {
            step(&mut d, &mut obs, role, ev)?;
        }
    }

    /// Every legal dialog is accepted by both ends, message by message
    /// (the sender's on_send, then the receiver's on_recv), and ends Done
    /// on both; stream traffic after it is dropped on both.
    #[test]
    fn legal_dialogs_are_accepted_by_both_ends(
        (ft, msgs) in legal_dialog(),
        late in vec((prop_oneof![Just(OPENER), Just(CALLEE)], prop::sample::select(vec![K::Yield, K::Stop, K::Credit])), 0..4),
    ) {
        let mut ends = [Dialog::new(Role::Opener), Dialog::new(Role::Callee)];
        for &(side, k) in &msgs {
            prop_assert_eq!(ends[side].on_send(k), Ok(Verdict::Accept), "{:?} sending {:?}", side, k);
            prop_assert_eq!(ends[1 - side].on_recv(k), Ok(Verdict::Accept), "{:?} receiving {:?}", 1 - side, k);
            if k == K::StartAck {
                ends[0].set_functype(ft);
                ends[1].set_functype(ft);
            }
            prop_assert_eq!(ends[0].state(), ends[1].state());
        }
        prop_assert!(ends[0].is_done() && ends[1].is_done());
        for (side, k) in late {
            prop_assert_eq!(ends[side].on_send(k), Ok(Verdict::Drop));
            prop_assert_eq!(ends[1 - side].on_recv(k), Ok(Verdict::Drop));
        }
        for end in &mut ends {
            for k in [K::Return, K::Error, K::CancelAck, K::StartAck] {
                prop_assert!(end.on_send(k).is_err());
                prop_assert!(end.on_recv(k).is_err());
            }
            prop_assert_eq!(end.state(), State::Done);
        }
    }

    /// Two ends joined by two FIFO channels, messages delivered in any
    /// interleaving (so an opener's Error can cross the callee's StartAck
    /// or Return, a Yield can cross a Stop, ...). Whatever one end sent, the
    /// other accepts, or drops as late stream traffic, or (an outcome having
    /// crossed it) refuses a StartAck or a second outcome once it is itself
    /// done; never anything else.
    #[test]
    fn two_ends_with_messages_in_flight(
        actions in vec(prop_oneof![
            12 => (0..2usize, any::<prop::sample::Index>(), prop_oneof![1 => Just(FuncType::Asyncfunc), 3 => Just(FuncType::Context)])
                .prop_map(|(side, i, ft)| Action::SendLegal(side, i, ft)),
            1 => (0..2usize, any::<prop::sample::Index>()).prop_map(|(side, i)| Action::SendOutcome(side, i)),
            1 => (0..2usize, dialog_kind(), functype()).prop_map(|(side, k, ft)| Action::Send(side, k, ft)),
            10 => (0..2usize).prop_map(Action::Deliver),
        ], 0..80),
    ) {
        let roles = [Role::Opener, Role::Callee];
        let mut ends = [Dialog::new(Role::Opener), Dialog::new(Role::Callee)];
        let mut obs = [Obs::default(), Obs::default()];
        // wire[i]: messages sent by side i, not yet delivered.
        let mut wire: [VecDeque<(MsgKind, FuncType)>; 2] = [VecDeque::new(), VecDeque::new()];
        let deliver = |ends: &mut [Dialog; 2], obs: &mut [Obs; 2], wire: &mut [VecDeque<(MsgKind, FuncType)>; 2], from: usize| -> Result<(), TestCaseError> {
            let Some((k, ft)) = wire[from].pop_front() else { return Ok(()) };
            let to = 1 - from;
            let was_done = ends[to].is_done();
            let r = step(&mut ends[to], &mut obs[to], roles[to], Ev::Recv(k))?.unwrap();
            match r {
                Ok(Verdict::Accept) => {
                    if k == K::StartAck {
                        step(&mut ends[to], &mut obs[to], roles[to], Ev::SetFt(ft))?;
                    }
                }
                Ok(Verdict::Drop) => prop_assert!(was_done),
                Err(v) => prop_assert!(
                    was_done && matches!(k, K::StartAck | K::Return | K::Error | K::CancelAck),
                    "{} refused a sent {:?}: {}", to, k, v
                ),
            }
            Ok(())
        };
        for action in actions {
            let (side, k, ft) = match action {
                Action::Deliver(from) => {
                    deliver(&mut ends, &mut obs, &mut wire, from)?;
                    continue;
                }
                Action::Send(side, k, ft) => (side, k, ft),
                Action::SendLegal(side, i, ft) => {
                    let choices: Vec<MsgKind> =
                        LEGAL_SEND_MENU.iter().copied().filter(|&k| obs[side].must_accept(k, side)).collect();
                    if choices.is_empty() {
                        continue;
                    }
                    (side, choices[i.index(choices.len())], ft)
                }
                Action::SendOutcome(side, i) => {
                    let choices: Vec<MsgKind> =
                        OUTCOMES.iter().copied().filter(|&k| obs[side].must_accept(k, side)).collect();
                    if choices.is_empty() {
                        continue;
                    }
                    (side, choices[i.index(choices.len())], FuncType::Asyncfunc)
                }
            };
            let r = step(&mut ends[side], &mut obs[side], roles[side], Ev::Send(k))?.unwrap();
            if r == Ok(Verdict::Accept) {
                wire[side].push_back((k, ft));
                if k == K::StartAck {
                    step(&mut ends[side], &mut obs[side], roles[side], Ev::SetFt(ft))?;
                }
            }
        }
        while !wire[0].is_empty() || !wire[1].is_empty() {
            deliver(&mut ends, &mut obs, &mut wire, 0)?;
            deliver(&mut ends, &mut obs, &mut wire, 1)?;
        }
        // Once everything is delivered, an outcome seen by one end has
        // been seen by the other.
        prop_assert_eq!(ends[0].is_done(), ends[1].is_done());
    }
}

fn run(role: Role, evs: &[Ev]) -> Dialog {
    let mut d = Dialog::new(role);
    for &ev in evs {
        let r = match ev {
            Ev::Send(k) => d.on_send(k),
            Ev::Recv(k) => d.on_recv(k),
            Ev::SetFt(ft) => {
                d.set_functype(ft);
                continue;
            }
        };
        assert_eq!(r, Ok(Verdict::Accept), "{role:?} {ev:?} in {:?}", d.state());
    }
    d
}

#[test]
fn asyncfunc_from_both_ends() {
    let msgs = [(OPENER, K::Start), (CALLEE, K::StartAck), (CALLEE, K::Return)];
    for role in [Role::Opener, Role::Callee] {
        let mut d = run(role, &events_for(role, FuncType::Asyncfunc, &msgs));
        assert!(d.is_done());
        assert!(d.on_recv(K::Return).is_err() && d.on_send(K::Return).is_err());
    }
    // Without set_functype a StartAck means asyncfunc: no Started.
    let mut d = run(Role::Opener, &[Ev::Send(K::Start), Ev::Recv(K::StartAck)]);
    assert_eq!(d.state(), State::Running(FuncType::Asyncfunc));
    assert!(d.on_recv(K::Started).is_err());
    assert!(d.on_recv(K::Yield).is_err());
}

#[test]
fn context_from_both_ends() {
    let msgs = [
        (OPENER, K::Start),
        (CALLEE, K::StartAck),
        (CALLEE, K::Started),
        (CALLEE, K::Yield),
        (OPENER, K::Yield),
        (OPENER, K::Credit),
        (CALLEE, K::Yield),
        (OPENER, K::Stop),
        (CALLEE, K::Yield),
        (CALLEE, K::Stop),
        (CALLEE, K::Return),
    ];
    for role in [Role::Opener, Role::Callee] {
        let evs = events_for(role, FuncType::Context, &msgs);
        let d = run(role, &evs[..4]);
        assert_eq!(d.state(), State::Open { opener_stopped: false, callee_stopped: false });
        let d = run(role, &evs[..evs.len() - 1]);
        assert_eq!(d.state(), State::Open { opener_stopped: true, callee_stopped: true });
        assert!(run(role, &evs).is_done());
    }
}

#[test]
fn yield_needs_started() {
    for role in [Role::Opener, Role::Callee] {
        for prefix in [&[][..], &[Ev::Send(K::Start)][..], &[Ev::Send(K::Start), Ev::Recv(K::StartAck)][..]] {
            let prefix: Vec<Ev> = prefix
                .iter()
                .map(|&e| match (role, e) {
                    (Role::Callee, Ev::Send(k)) => Ev::Recv(k),
                    (Role::Callee, Ev::Recv(k)) => Ev::Send(k),
                    (_, e) => e,
                })
                .collect();
            let mut d = run(role, &prefix);
            d.set_functype(FuncType::Context);
            assert!(d.on_send(K::Yield).is_err(), "{role:?} after {prefix:?}");
            assert!(d.on_recv(K::Yield).is_err(), "{role:?} after {prefix:?}");
        }
    }
}

/// set_functype before the StartAck must not let a dialog skip it.
#[test]
fn set_functype_before_start_ack_does_nothing() {
    let mut d = run(Role::Opener, &[Ev::Send(K::Start)]);
    d.set_functype(FuncType::Context);
    assert_eq!(d.state(), State::Starting);
    assert!(d.on_recv(K::Started).is_err(), "Started without StartAck");
    assert_eq!(d.on_recv(K::StartAck), Ok(Verdict::Accept));
    d.set_functype(FuncType::Context);
    assert_eq!(d.on_recv(K::Started), Ok(Verdict::Accept));

    let mut d = Dialog::new(Role::Callee);
    d.set_functype(FuncType::Context);
    assert_eq!(d.state(), State::Idle);
}

#[test]
fn no_yield_after_own_stop() {
    for role in [Role::Opener, Role::Callee] {
        let msgs = [(OPENER, K::Start), (CALLEE, K::StartAck), (CALLEE, K::Started)];
        let mut d = run(role, &events_for(role, FuncType::Context, &msgs));
        assert_eq!(d.on_send(K::Stop), Ok(Verdict::Accept));
        let err = d.on_send(K::Yield).unwrap_err();
        assert_eq!((err.kind, err.dir, err.role), (K::Yield, "sent", role));
        // The other direction is still open.
        assert_eq!(d.on_recv(K::Yield), Ok(Verdict::Accept));
        assert_eq!(d.on_recv(K::Stop), Ok(Verdict::Accept));
        assert!(d.on_recv(K::Yield).is_err());
        // Credit is still fine, and so is the outcome.
        assert_eq!(d.on_recv(K::Credit), Ok(Verdict::Accept));
        let outcome = if role == Role::Callee { d.on_send(K::Return) } else { d.on_recv(K::Return) };
        assert_eq!(outcome, Ok(Verdict::Accept));
    }
}

#[test]
fn unknown_function_is_refused_before_start_ack() {
    let mut d = run(Role::Opener, &[Ev::Send(K::Start)]);
    assert!(d.on_recv(K::Return).is_err(), "no Return before StartAck");
    assert_eq!(d.on_recv(K::Error), Ok(Verdict::Accept));
    assert!(d.is_done());
    assert_eq!(d.on_recv(K::StartAck).unwrap_err().state, State::Done);
}

#[test]
fn violation_message() {
    let mut d = Dialog::new(Role::Callee);
    let v = d.on_send(K::Yield).unwrap_err();
    assert_eq!(v.to_string(), "Yield sent by the Callee is out of order in state Idle");
}

#[test]
fn cancel_request_ends_with_cancel_ack() {
    for acked in [false, true] {
        let mut msgs = vec![(OPENER, K::Start)];
        if acked {
            msgs.push((CALLEE, K::StartAck));
        }
        msgs.push((CALLEE, K::CancelAck));
        for role in [Role::Opener, Role::Callee] {
            let mut d = run(role, &events_for(role, FuncType::Asyncfunc, &msgs));
            assert!(d.is_done());
            assert!(d.on_recv(K::CancelAck).is_err() && d.on_send(K::CancelAck).is_err());
            assert!(d.on_recv(K::Return).is_err() && d.on_send(K::Return).is_err());
        }
    }
    // Not an answer to a context call, nor from the opener.
    let mut d = run(Role::Opener, &[Ev::Send(K::Start), Ev::Recv(K::StartAck), Ev::SetFt(FuncType::Context)]);
    assert!(d.on_recv(K::CancelAck).is_err());
    let mut d = run(Role::Opener, &[Ev::Send(K::Start)]);
    assert!(d.on_send(K::CancelAck).is_err());
}
