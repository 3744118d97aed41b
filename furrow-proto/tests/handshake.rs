//! The handshakes (`furrow_proto::handshake`) in memory: both sides back
//! to back, with no socket and a clock of our own.
//!
//! Examples first (each failure the runtime maps to an error), then
//! proptest worlds: a dialer and an acceptor (TCP or UDS, same secret or
//! not), or a spawned child and its parent, whose messages are delivered
//! in any interleaving, with the runtime's checks answered either way,
//! time jumping, frames replaced by garbage or cut short, and the
//! connection cut. What must hold: nothing panics; every world ends, each
//! side done or failed with a typed failure; a side that is done learned
//! exactly what the other said of itself; with different secrets or a
//! refused identity, nobody is done.

use bytes::Bytes;
use furrow_proto::handshake::{
    Acceptor, Child, Dialer, Failure, Handshake, Hello, Limits, NONCE_LEN, Nonce, PRE_AUTH_MAX_FRAME, Parent, Status,
};
use furrow_proto::{Aid, DEFAULT_MAX_FRAME, Msg, MsgKind, PROTO_VERSION, Secret, SpawnSpec, codec};
use proptest::prelude::*;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

fn hello(name: &str, pid: u32, bound: Option<u64>) -> Hello {
    Hello { aid: Aid::new(name, pid), spawn_token: None, max_dialogs: bound }
}

fn secret(b: u8) -> Secret {
    Secret(vec![b; 32])
}

fn nonce(b: u8) -> Nonce {
    [b; NONCE_LEN]
}

fn limits() -> Limits {
    Limits { auth: 5 * SECOND, aid: 5 * SECOND, max_frame: 1 << 20 }
}

fn spec(parent: &Aid) -> SpawnSpec {
    SpawnSpec {
        parent: parent.clone(),
        bind: vec![],
        registry: vec![],
        secret: None,
        socket_dir: "/tmp".into(),
        enable_modules: vec![],
        log_filter: None,
        max_frame: DEFAULT_MAX_FRAME as u64,
        tuning: None,
    }
}

/// Everything `from` has to send, delivered to `to` at `now`.
fn pump(from: &mut dyn Handshake, to: &mut dyn Handshake, now: Instant) {
    while let Some(m) = from.poll_send() {
        to.on_msg(now, m);
    }
}

fn failure(s: Status<'_>) -> Failure {
    match s {
        Status::Failed(f) => f.clone(),
        other => panic!("not failed: {other:?}"),
    }
}

#[test]
fn tcp_dialer_and_acceptor_authenticate_and_exchange_aids() {
    let now = Instant::now();
    let (me, them) = (hello("dialer", 10, Some(4096)), hello("acceptor", 20, Some(4)));
    let mut d = Dialer::new(me.clone(), Some((secret(7), nonce(1))), limits(), now);
    let mut a = Acceptor::new(them.clone(), Some((secret(7), nonce(2))), limits(), now);
    // Nothing is read from an unauthenticated peer beyond a few KiB.
    assert_eq!((d.read_limit(), a.read_limit()), (PRE_AUTH_MAX_FRAME, PRE_AUTH_MAX_FRAME));
    // The dialer speaks only when challenged.
    assert_eq!(d.poll_send(), None);
    pump(&mut a, &mut d, now); // Challenge
    pump(&mut d, &mut a, now); // Auth
    pump(&mut a, &mut d, now); // AuthOk
    pump(&mut d, &mut a, now); // Aid
    assert_eq!(a.status(), Status::Verify(&me));
    a.verified(Ok(()));
    assert_eq!(a.status(), Status::Done);
    assert_eq!(a.read_limit(), 1 << 20);
    pump(&mut a, &mut d, now);
    assert_eq!(d.status(), Status::Verify(&them));
    d.verified(Ok(()));
    assert_eq!(d.status(), Status::Done);
    assert_eq!(d.peer().and_then(|p| p.max_dialogs), Some(4));
    assert_eq!(a.peer().and_then(|p| p.max_dialogs), Some(4096));
}

#[test]
fn the_wire_is_what_it_was() {
    // Over UDS the dialer's first frame is its `Aid`; the acceptor's
    // answer is its `Aid`, nothing else.
    let now = Instant::now();
    let me = hello("d", 1, None);
    let mut d = Dialer::new(me.clone(), None, limits(), now);
    let first = d.poll_send().unwrap();
    assert_eq!(
        first,
        Msg::Aid {
            name: "d".into(),
            uuid: me.aid.uuid,
            pid: 1,
            proto: PROTO_VERSION,
            spawn_token: None,
            max_dialogs: None
        }
    );
    assert_eq!(d.poll_send(), None);
}

#[test]
fn a_wrong_secret_is_refused_by_the_acceptor_and_reported_by_the_dialer() {
    let now = Instant::now();
    let mut d = Dialer::new(hello("d", 1, None), Some((secret(1), nonce(1))), limits(), now);
    let mut a = Acceptor::new(hello("a", 2, None), Some((secret(2), nonce(2))), limits(), now);
    pump(&mut a, &mut d, now);
    pump(&mut d, &mut a, now);
    assert_eq!(failure(a.status()), Failure::BadProof);
    // The acceptor sends nothing more and hangs up.
    assert_eq!(a.poll_send(), None);
    d.on_closed(None);
    assert_eq!(failure(d.status()), Failure::ProofRefused);
    assert!(failure(d.status()).to_string().contains("refused our proof"));
}

#[test]
fn an_impostor_acceptor_is_caught_by_the_dialer() {
    let now = Instant::now();
    let mut d = Dialer::new(hello("d", 1, None), Some((secret(1), nonce(1))), limits(), now);
    d.on_msg(now, Msg::Challenge { nonce: vec![9; NONCE_LEN] });
    assert!(matches!(d.poll_send(), Some(Msg::Auth { .. })));
    d.on_msg(now, Msg::AuthOk { mac: vec![0; 32] });
    assert_eq!(failure(d.status()), Failure::BadProof);
}

#[test]
fn a_short_nonce_is_refused_on_both_sides() {
    let now = Instant::now();
    let mut d = Dialer::new(hello("d", 1, None), Some((secret(1), nonce(1))), limits(), now);
    d.on_msg(now, Msg::Challenge { nonce: vec![1; 3] });
    assert_eq!(failure(d.status()), Failure::BadNonce { len: 3 });
    let mut a = Acceptor::new(hello("a", 2, None), Some((secret(1), nonce(2))), limits(), now);
    a.on_msg(now, Msg::Auth { nonce: vec![], mac: vec![] });
    assert_eq!(failure(a.status()), Failure::BadNonce { len: 0 });
}

#[test]
fn anything_before_authenticating_ends_the_acceptor_unread() {
    let now = Instant::now();
    let mut a = Acceptor::new(hello("a", 2, None), Some((secret(1), nonce(2))), limits(), now);
    let _challenge = a.poll_send();
    a.on_msg(now, hello("d", 1, None).msg());
    assert_eq!(failure(a.status()), Failure::Unexpected { expected: MsgKind::Auth, got: MsgKind::Aid });
    // Later frames are not its business.
    a.on_msg(now, Msg::Ping { seq: 1 });
    assert_eq!(failure(a.status()), Failure::Unexpected { expected: MsgKind::Auth, got: MsgKind::Aid });
}

#[test]
fn another_protocol_version_is_refused() {
    let now = Instant::now();
    let mut a = Acceptor::new(hello("a", 2, None), None, limits(), now);
    let d = hello("d", 1, None).aid;
    a.on_msg(
        now,
        Msg::Aid { name: d.name, uuid: d.uuid, pid: 1, proto: PROTO_VERSION + 1, spawn_token: None, max_dialogs: None },
    );
    assert_eq!(failure(a.status()), Failure::Version { theirs: PROTO_VERSION + 1 });
}

#[test]
fn a_refused_identity_is_answered_with_the_reason() {
    let now = Instant::now();
    let me = hello("a", 2, None);
    let mut d = Dialer::new(hello("d", 1, None), None, limits(), now);
    let mut a = Acceptor::new(me.clone(), None, limits(), now);
    pump(&mut d, &mut a, now);
    a.verified(Err("it comes from pid 3 (SO_PEERCRED)".into()));
    assert_eq!(failure(a.status()), Failure::Identity("it comes from pid 3 (SO_PEERCRED)".into()));
    let Some(Msg::Error { boxed_type_str, message, src_uid, cid, .. }) = a.poll_send() else { panic!("no refusal") };
    assert_eq!((boxed_type_str, cid, src_uid), (furrow_proto::ErrorKind::IdentityRefused, None, me.aid));
    assert_eq!(message, "connection refused: it comes from pid 3 (SO_PEERCRED)");
    assert_eq!(a.poll_send(), None);
    d.on_msg(now, furrow_proto::ErrorMsg { message, ..error_from(&hello("a", 2, None).aid) }.into());
    assert!(matches!(failure(d.status()), Failure::Refused { waiting_for: MsgKind::Aid, .. }));
}

fn error_from(aid: &Aid) -> furrow_proto::ErrorMsg {
    furrow_proto::ErrorMsg {
        cid: None,
        src_uid: aid.clone(),
        boxed_type_str: "E".into(),
        message: String::new(),
        tb_str: String::new(),
        relay_path: vec![],
        canceller: None,
        pld: None,
        errors: vec![],
    }
}

#[test]
fn timeouts_name_what_was_due() {
    let now = Instant::now();
    let mut a = Acceptor::new(hello("a", 2, None), Some((secret(1), nonce(2))), limits(), now);
    assert_eq!(a.deadline(), Some(now + 5 * SECOND));
    // Not yet.
    a.on_timeout(now + SECOND);
    assert_eq!(a.status(), Status::Waiting);
    a.on_timeout(now + 5 * SECOND);
    assert_eq!(failure(a.status()), Failure::Timeout { waiting_for: MsgKind::Auth, after: 5 * SECOND });
    assert_eq!(a.deadline(), None);
    // A frame after the deadline is too late, however good.
    let mut d = Dialer::new(hello("d", 1, None), None, limits(), now);
    let aid = hello("a", 2, None).msg();
    d.on_msg(now + 6 * SECOND, aid);
    assert_eq!(failure(d.status()), Failure::Timeout { waiting_for: MsgKind::Aid, after: 5 * SECOND });
}

#[test]
fn a_hang_up_and_garbage_are_told_apart() {
    let now = Instant::now();
    let mut d = Dialer::new(hello("d", 1, None), None, limits(), now);
    d.on_closed(Some("connection reset".into()));
    assert_eq!(
        failure(d.status()),
        Failure::Closed { waiting_for: MsgKind::Aid, detail: Some("connection reset".into()) }
    );
    let mut d = Dialer::new(hello("d", 1, None), None, limits(), now);
    d.on_frame(now, Bytes::from_static(b"HTTP/1.1 400"));
    assert!(matches!(failure(d.status()), Failure::Unreadable { waiting_for: MsgKind::Aid, .. }));
}

/// A spawn: the child's `Aid` (with its token) reaches the parent's
/// acceptor, which answers; the parent takes the connection, sends the
/// `SpawnSpec`; the child applies it and says `Ready`.
#[test]
fn a_child_and_its_parent() {
    let now = Instant::now();
    let parent_hello = hello("root", 100, Some(64));
    let child_aid = Aid::new("worker", 200);
    let me = Hello { aid: child_aid.clone(), spawn_token: Some("tok".into()), max_dialogs: None };
    let mut c = Child::new(&me, 100, 10 * SECOND, now);
    let mut a = Acceptor::new(parent_hello.clone(), None, limits(), now);
    let mut p = Parent::new(child_aid.clone(), spec(&parent_hello.aid), 10 * SECOND, 1 << 20, now);
    pump(&mut c, &mut a, now);
    let Status::Verify(claim) = a.status() else { panic!() };
    assert_eq!(claim.spawn_token.as_deref(), Some("tok"));
    a.verified(Ok(()));
    pump(&mut a, &mut c, now);
    assert_eq!(c.status(), Status::Verify(&parent_hello));
    c.verified(Ok(()));
    // An intruder presenting the token from another process is refused,
    // and the parent goes on waiting.
    let intruder = Hello { aid: Aid { pid: 300, ..child_aid.clone() }, ..me.clone() };
    assert!(p.connected(&intruder, Some(300)).is_err());
    assert!(p.connected(&me, Some(300)).is_err(), "the kernel's pid must be the child's too");
    assert_eq!(p.status(), Status::Waiting);
    p.connected(a.peer().unwrap(), Some(200)).unwrap();
    pump(&mut p, &mut c, now);
    let Status::Configure(got) = c.status() else { panic!("{:?}", c.status()) };
    assert_eq!(got, &spec(&parent_hello.aid));
    c.ready(vec!["uds:///tmp/w.sock".parse().unwrap()]);
    assert_eq!(c.status(), Status::Done);
    pump(&mut c, &mut p, now);
    assert_eq!(p.status(), Status::Done);
    assert_eq!(p.addrs().map(<[_]>::len), Some(1));
    assert_eq!(c.parent().and_then(|h| h.max_dialogs), Some(64));
}

#[test]
fn a_child_refuses_a_parent_with_another_pid_and_a_parent_a_child_with_another_uuid() {
    let now = Instant::now();
    let me = Hello { aid: Aid::new("worker", 200), spawn_token: Some("tok".into()), max_dialogs: None };
    let mut c = Child::new(&me, 100, 10 * SECOND, now);
    let _ = c.poll_send();
    c.on_msg(now, hello("root", 101, None).msg());
    assert!(matches!(failure(c.status()), Failure::Identity(why) if why.contains("pid is not 100")));

    let mut p = Parent::new(Aid::new("worker", 200), spec(&Aid::new("root", 100)), 10 * SECOND, 1 << 20, now);
    p.connected(&me, Some(200)).unwrap();
    assert!(matches!(failure(p.status()), Failure::Identity(why) if why.contains("presented uuid")));
    assert_eq!(p.poll_send(), None, "no SpawnSpec for another child");
}

#[test]
fn a_child_that_cannot_start_says_why_in_place_of_ready() {
    let now = Instant::now();
    let me = Hello { aid: Aid::new("worker", 200), spawn_token: Some("tok".into()), max_dialogs: None };
    let mut c = Child::new(&me, 100, 10 * SECOND, now);
    let mut p = Parent::new(me.aid.clone(), spec(&Aid::new("root", 100)), 10 * SECOND, 1 << 20, now);
    let _ = c.poll_send();
    c.on_msg(now, hello("root", 100, None).msg());
    c.verified(Ok(()));
    p.connected(&me, Some(200)).unwrap();
    pump(&mut p, &mut c, now);
    c.start_failed(furrow_proto::ErrorMsg { message: "cannot listen".into(), ..error_from(&me.aid) }.into());
    assert_eq!(failure(c.status()), Failure::Local("cannot listen".into()));
    pump(&mut c, &mut p, now);
    assert_eq!(failure(p.status()), Failure::Refused { waiting_for: MsgKind::Ready, message: "cannot listen".into() });
}

// ---------------------------------------------------------------------
// Worlds.

/// One end of a world's connection.
// Two of these per world: their size does not matter.
#[allow(clippy::large_enum_variant)]
enum End {
    Dialer(Dialer),
    /// An acceptor; when it is a parent's, the child it waits for and the
    /// spec it will send once the acceptor is done.
    Acceptor(Acceptor, Option<(Aid, SpawnSpec)>),
    Parent(Parent),
    Child(Child),
}

impl End {
    fn hs(&mut self) -> &mut dyn Handshake {
        match self {
            End::Dialer(h) => h,
            End::Acceptor(h, _) => h,
            End::Parent(h) => h,
            End::Child(h) => h,
        }
    }

    fn status(&self) -> Status<'_> {
        match self {
            End::Dialer(h) => h.status(),
            End::Acceptor(h, _) => h.status(),
            End::Parent(h) => h.status(),
            End::Child(h) => h.status(),
        }
    }

    fn waiting(&self) -> bool {
        matches!(self.status(), Status::Waiting)
    }

    /// Waiting for a frame of this connection (a parent waiting for its
    /// child's connection reads none: it waits for the runtime).
    fn reading(&self) -> bool {
        self.waiting() && !matches!(self, End::Parent(p) if !p.is_connected())
    }

    /// Done for good, or failed.
    fn ended(&self) -> bool {
        match (self, self.status()) {
            (End::Acceptor(_, Some(_)), Status::Done) => false,
            (_, s) => matches!(s, Status::Done | Status::Failed(_)),
        }
    }

    /// What the runtime does at a status that needs it (`ok`: its checks
    /// pass); `out` gets what the acceptor had left to send when a parent
    /// takes over. True if it did something.
    fn runtime(&mut self, ok: bool, now: Instant, out: &mut VecDeque<Msg>) -> bool {
        let verdict = || if ok { Ok(()) } else { Err("the runtime says no".to_owned()) };
        match self {
            End::Dialer(d) => {
                matches!(d.status(), Status::Verify(_)) && {
                    d.verified(verdict());
                    true
                }
            }
            End::Acceptor(a, parent) => match a.status() {
                Status::Verify(_) => {
                    a.verified(verdict());
                    true
                }
                Status::Done if parent.is_some() => {
                    let Some((child, spec)) = parent.take() else { return false };
                    let claim = a.peer().cloned();
                    out.extend(std::iter::from_fn(|| a.poll_send()));
                    let mut p = Parent::new(child.clone(), spec, 10 * SECOND, 1 << 20, now);
                    if let Some(claim) = claim {
                        let _ = p.connected(&claim, if ok { Some(child.pid) } else { None });
                    }
                    *self = End::Parent(p);
                    true
                }
                _ => false,
            },
            End::Child(c) => match c.status() {
                Status::Verify(_) => {
                    c.verified(verdict());
                    true
                }
                Status::Configure(_) => {
                    if ok {
                        c.ready(vec![]);
                    } else {
                        c.start_failed(
                            furrow_proto::ErrorMsg { message: "no".into(), ..error_from(&Aid::new("c", 1)) }.into(),
                        );
                    }
                    true
                }
                _ => false,
            },
            End::Parent(_) => false,
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Deliver the next frame in flight to side `0` or `1`.
    Deliver(u8),
    /// The runtime answers a side's check (or applies a configuration).
    Runtime(u8, bool),
    /// Time passes.
    Tick(u64),
    /// The next frame to side `s` is replaced by these bytes.
    Garbage(u8, Vec<u8>),
    /// The next frame to side `s` arrives cut to `n` bytes.
    Truncate(u8, usize),
    /// The connection is cut.
    Cut,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..2).prop_map(Op::Deliver),
        3 => (0u8..2, prop::bool::weighted(0.9)).prop_map(|(s, ok)| Op::Runtime(s, ok)),
        1 => (0u64..12_000).prop_map(Op::Tick),
        1 => (0u8..2, prop::collection::vec(any::<u8>(), 0..40)).prop_map(|(s, b)| Op::Garbage(s, b)),
        1 => (0u8..2, 0usize..64).prop_map(|(s, n)| Op::Truncate(s, n)),
        1 => Just(Op::Cut),
    ]
}

#[derive(Clone, Debug)]
enum Kind {
    /// A dialer and an acceptor; over TCP with these secrets.
    Connect { tcp: Option<(u8, u8)> },
    /// A spawned child (side 0) and its parent's acceptor, then parent.
    Spawn,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Connect { tcp: None }),
        (0u8..2, 0u8..2).prop_map(|(a, b)| Kind::Connect { tcp: Some((a, b)) }),
        Just(Kind::Spawn),
    ]
}

struct World {
    ends: [End; 2],
    /// Frames in flight to side 0 and to side 1.
    wire: [VecDeque<Msg>; 2],
    hellos: [Hello; 2],
    now: Instant,
    start: Instant,
    cut: bool,
    /// Anything went wrong on the way (a fault, a refusal).
    faulted: bool,
}

impl World {
    fn new(kind: &Kind) -> World {
        let now = Instant::now();
        match kind {
            Kind::Connect { tcp } => {
                let hellos = [hello("dialer", 1, Some(4096)), hello("acceptor", 2, Some(4))];
                let auth = |s: u8, n: u8| tcp.map(|t| (secret(if s == 0 { t.0 } else { t.1 }), nonce(n)));
                let d = Dialer::new(hellos[0].clone(), auth(0, 1), limits(), now);
                let a = Acceptor::new(hellos[1].clone(), auth(1, 2), limits(), now);
                let faulted = matches!(tcp, Some((a, b)) if a != b);
                World {
                    ends: [End::Dialer(d), End::Acceptor(a, None)],
                    wire: Default::default(),
                    hellos,
                    now,
                    start: now,
                    cut: false,
                    faulted,
                }
            }
            Kind::Spawn => {
                let child = Hello { aid: Aid::new("worker", 200), spawn_token: Some("t".into()), max_dialogs: None };
                let parent = hello("root", 100, Some(64));
                let c = Child::new(&child, 100, 10 * SECOND, now);
                let a = Acceptor::new(parent.clone(), None, limits(), now);
                let sp = spec(&parent.aid);
                World {
                    ends: [End::Child(c), End::Acceptor(a, Some((child.aid.clone(), sp)))],
                    wire: Default::default(),
                    hellos: [child, parent],
                    now,
                    start: now,
                    cut: false,
                    faulted: false,
                }
            }
        }
    }

    /// Every side writes what it has (the driver flushes before it reads).
    fn flush(&mut self) {
        for i in 0..2 {
            let other = 1 - i;
            while let Some(m) = self.ends[i].hs().poll_send() {
                if !self.cut {
                    self.wire[other].push_back(m);
                }
            }
        }
    }

    /// Side `s` reads, if it is reading: the next frame, or the end of a
    /// cut connection.
    fn deliver(&mut self, s: usize) -> bool {
        if !self.ends[s].reading() {
            return false;
        }
        let now = self.now;
        match self.wire[s].pop_front() {
            Some(m) => {
                self.ends[s].hs().on_msg(now, m);
                true
            }
            None if self.cut => {
                self.ends[s].hs().on_closed(None);
                true
            }
            None => false,
        }
    }

    fn step(&mut self, op: &Op) {
        self.flush();
        match op {
            Op::Deliver(s) => {
                self.deliver(usize::from(*s));
            }
            Op::Runtime(s, ok) => {
                let s = usize::from(*s);
                let mut carried = VecDeque::new();
                if self.ends[s].runtime(*ok, self.now, &mut carried) && !ok {
                    self.faulted = true;
                }
                if !self.cut {
                    self.wire[1 - s].extend(carried);
                }
            }
            Op::Tick(ms) => {
                self.now += Duration::from_millis(*ms);
                // Past the shortest step's time, a timeout is fair (a
                // deadline may pass while the runtime checks something,
                // unseen from here).
                if self.now >= self.start + 5 * SECOND {
                    self.faulted = true;
                }
                for e in &mut self.ends {
                    if e.waiting() && e.hs().deadline().is_some_and(|d| d <= self.now) {
                        let now = self.now;
                        e.hs().on_timeout(now);
                        self.faulted = true;
                    }
                }
            }
            Op::Garbage(s, bytes) => {
                let s = usize::from(*s);
                if self.ends[s].reading() && !self.cut {
                    self.wire[s].pop_front();
                    let now = self.now;
                    self.ends[s].hs().on_frame(now, Bytes::from(bytes.clone()));
                    self.faulted = true;
                }
            }
            Op::Truncate(s, n) => {
                let s = usize::from(*s);
                if self.ends[s].reading()
                    && let Some(m) = self.wire[s].pop_front()
                {
                    // The frame's body (its length prefix off), cut.
                    let whole = codec::encode_to_bytes(&m, DEFAULT_MAX_FRAME).expect("encodes");
                    let body = whole.slice(4..);
                    let cut = body.slice(..(*n).min(body.len()));
                    let now = self.now;
                    self.ends[s].hs().on_frame(now, cut);
                    self.faulted = true;
                }
            }
            Op::Cut => {
                self.cut = true;
                self.faulted = true;
                self.wire = Default::default();
            }
        }
    }

    /// Run to the end without faults (the runtime's checks pass), time
    /// moving on only when nobody can move otherwise: every world ends.
    fn finish(&mut self) {
        for _ in 0..200 {
            self.flush();
            if self.ends.iter().all(End::ended) {
                return;
            }
            let mut moved = false;
            for s in 0..2 {
                let mut carried = VecDeque::new();
                moved |= self.ends[s].runtime(true, self.now, &mut carried);
                if !self.cut {
                    self.wire[1 - s].extend(carried);
                }
                self.flush();
                moved |= self.deliver(s);
            }
            if !moved {
                // Nobody can move: the earliest deadline passes.
                let next = self.ends.iter_mut().filter(|e| e.waiting()).filter_map(|e| e.hs().deadline()).min();
                match next {
                    Some(at) => {
                        self.now = self.now.max(at);
                        for e in &mut self.ends {
                            let now = self.now;
                            if e.waiting() {
                                e.hs().on_timeout(now);
                            }
                        }
                        // (Not a fault: a world without any must end
                        // without waiting for a deadline.)
                    }
                    None => {
                        // A side waiting with no deadline and nothing to
                        // read is only possible on a cut connection, which
                        // `deliver` closes: nothing left to do.
                        break;
                    }
                }
            }
        }
    }

    /// What a side that is done learned of the other.
    fn learned(&self, s: usize) -> Option<Hello> {
        match &self.ends[s] {
            End::Dialer(d) => d.peer().cloned(),
            End::Acceptor(a, _) => a.peer().cloned(),
            End::Child(c) => c.parent().cloned(),
            // The parent learned the child through its acceptor.
            End::Parent(_) => Some(self.hellos[1 - s].clone()),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any interleaving, any fault: no panic, every world ends, each side
    /// done or failed; a side done learned exactly the other's `Hello`;
    /// different secrets let nobody through.
    #[test]
    fn every_world_ends_in_success_or_a_typed_failure(kind in kind(), ops in prop::collection::vec(op(), 0..40)) {
        let mut w = World::new(&kind);
        for op in &ops {
            w.step(op);
        }
        w.finish();
        for s in 0..2 {
            prop_assert!(w.ends[s].ended(), "side {} did not end: {:?} ({:?})", s, w.ends[s].status(), ops);
            if matches!(w.ends[s].status(), Status::Done) {
                prop_assert_eq!(w.learned(s), Some(w.hellos[1 - s].clone()));
            }
        }
        if let Kind::Connect { tcp: Some((a, b)) } = kind
            && a != b
        {
            prop_assert!(
                !matches!(w.ends[1].status(), Status::Done) && !matches!(w.ends[0].status(), Status::Done),
                "a wrong secret got through"
            );
        }
        // Without any fault, both sides are done.
        if !w.faulted {
            for s in 0..2 {
                prop_assert_eq!(w.ends[s].status(), Status::Done, "side {} ({:?})", s, ops);
            }
        }
    }

    /// Arbitrary bytes as any frame of either side's handshake: never a
    /// panic, always a typed failure or progress.
    #[test]
    fn garbage_frames_never_panic(kind in kind(), at in 0usize..6, bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut w = World::new(&kind);
        for _ in 0..at {
            w.step(&Op::Deliver(0));
            w.step(&Op::Runtime(0, true));
            w.step(&Op::Deliver(1));
            w.step(&Op::Runtime(1, true));
        }
        w.step(&Op::Garbage(0, bytes.clone()));
        w.step(&Op::Garbage(1, bytes));
        w.finish();
        prop_assert!(w.ends.iter().all(End::ended));
    }
}

/// A child started through a launcher dials over TCP: it authenticates
/// first (with the secret it got over its stdin), then presents its token;
/// the parent takes its pid as reported (the process it started is the
/// launcher), but not another uuid; with another secret nothing is done.
#[test]
fn a_remote_child_authenticates_and_reports_its_own_pid() {
    let now = Instant::now();
    let root = hello("root", 100, Some(64));
    let me = Hello { aid: Aid::new("far", 4242), spawn_token: Some("tok".into()), max_dialogs: None };
    let mut c = Child::over_tcp(&me, 100, (secret(1), nonce(1)), 10 * SECOND, now);
    assert_eq!(c.poll_send(), None, "nothing before the challenge");
    assert_eq!(c.read_limit(), PRE_AUTH_MAX_FRAME);
    let mut a = Acceptor::new(root.clone(), Some((secret(1), nonce(2))), limits(), now);
    for _ in 0..3 {
        pump(&mut a, &mut c, now);
        pump(&mut c, &mut a, now);
    }
    let Status::Verify(claim) = a.status() else { panic!("{:?}", a.status()) };
    assert_eq!(claim.aid.pid, 4242);
    a.verified(Ok(()));
    pump(&mut a, &mut c, now);
    c.verified(Ok(()));
    // Spawned as the launcher's pid (7): the child's own is what counts.
    let mut p = Parent::new(Aid { pid: 7, ..me.aid.clone() }, spec(&root.aid), 10 * SECOND, 1 << 20, now).remote();
    p.connected(&me, None).unwrap();
    assert_eq!(p.child().pid, 4242);
    pump(&mut p, &mut c, now);
    assert!(matches!(c.status(), Status::Configure(_)));

    let other = Hello { aid: Aid::new("far", 4242), ..me.clone() };
    let mut p = Parent::new(Aid { pid: 7, ..me.aid.clone() }, spec(&root.aid), 10 * SECOND, 1 << 20, now).remote();
    p.connected(&other, None).unwrap();
    assert!(matches!(failure(p.status()), Failure::Identity(_)), "another uuid is another child");

    let mut c = Child::over_tcp(&me, 100, (secret(9), nonce(1)), 10 * SECOND, now);
    let mut a = Acceptor::new(root, Some((secret(1), nonce(2))), limits(), now);
    pump(&mut a, &mut c, now);
    pump(&mut c, &mut a, now);
    assert_eq!(failure(a.status()), Failure::BadProof);
    c.on_closed(None);
    assert_eq!(failure(c.status()), Failure::ProofRefused);
}
