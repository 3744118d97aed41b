//! The handshakes (`furrow_proto::handshake`) back to back, a dialer and
//! an acceptor (UDS, or TCP with the same secret) or a spawned child and
//! its parent, with the input choosing every step: which side reads next,
//! arbitrary bytes in place of a frame, a frame cut short, time passing,
//! the runtime's verdicts, the connection cut. Then both run to their end
//! with no more faults.
//!
//! What must hold: no panic; both sides end, done or failed with a typed
//! failure; a side that is done learned exactly what the other said of
//! itself.
#![no_main]

use bytes::Bytes;
use furrow_proto::handshake::{Acceptor, Child, Dialer, Handshake, Hello, Limits, NONCE_LEN, Parent, Status};
use furrow_proto::{Aid, DEFAULT_MAX_FRAME, Msg, Secret, SpawnSpec, codec};
use libfuzzer_sys::fuzz_target;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

enum End {
    Dialer(Dialer),
    Acceptor(Acceptor, Option<Aid>),
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

    fn reading(&self) -> bool {
        matches!(self.status(), Status::Waiting) && !matches!(self, End::Parent(p) if !p.is_connected())
    }

    fn ended(&self) -> bool {
        match (self, self.status()) {
            (End::Acceptor(_, Some(_)), Status::Done) => false,
            (_, s) => matches!(s, Status::Done | Status::Failed(_)),
        }
    }

    /// The runtime's part, with its checks passing or not; what an
    /// acceptor had left to send when its parent takes over goes to `out`.
    fn runtime(&mut self, ok: bool, now: Instant, out: &mut VecDeque<Msg>) -> bool {
        let verdict = || if ok { Ok(()) } else { Err("no".to_owned()) };
        match self {
            End::Dialer(d) => {
                matches!(d.status(), Status::Verify(_)) && {
                    d.verified(verdict());
                    true
                }
            }
            End::Acceptor(a, child) => match a.status() {
                Status::Verify(_) => {
                    a.verified(verdict());
                    true
                }
                Status::Done if child.is_some() => {
                    let Some(child) = child.take() else { return false };
                    let claim = a.peer().cloned();
                    out.extend(std::iter::from_fn(|| a.poll_send()));
                    let mut p = Parent::new(child.clone(), spec(), Duration::from_secs(10), 1 << 20, now);
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
                        c.start_failed(Msg::Ping { seq: 0 });
                    }
                    true
                }
                _ => false,
            },
            End::Parent(_) => false,
        }
    }
}

fn spec() -> SpawnSpec {
    SpawnSpec {
        parent: Aid::new("root", 100),
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

struct World {
    ends: [End; 2],
    wire: [VecDeque<Msg>; 2],
    hellos: [Hello; 2],
    now: Instant,
    cut: bool,
}

impl World {
    fn flush(&mut self) {
        for i in 0..2 {
            while let Some(m) = self.ends[i].hs().poll_send() {
                if !self.cut {
                    self.wire[1 - i].push_back(m);
                }
            }
        }
    }

    fn deliver(&mut self, s: usize) -> bool {
        if !self.ends[s].reading() {
            return false;
        }
        let now = self.now;
        match self.wire[s].pop_front() {
            Some(m) => self.ends[s].hs().on_msg(now, m),
            None if self.cut => self.ends[s].hs().on_closed(None),
            None => return false,
        }
        true
    }

    fn runtime(&mut self, s: usize, ok: bool) -> bool {
        let mut carried = VecDeque::new();
        let did = self.ends[s].runtime(ok, self.now, &mut carried);
        if !self.cut {
            self.wire[1 - s].extend(carried);
        }
        did
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let now = Instant::now();
    let limits = Limits { auth: Duration::from_secs(5), aid: Duration::from_secs(5), max_frame: 1 << 20 };
    let secret = Secret(vec![7; 32]);
    let mut w = match first % 3 {
        0 | 1 => {
            let tcp = first % 3 == 1;
            let hellos = [
                Hello { aid: Aid::new("dialer", 1), spawn_token: None, max_dialogs: Some(u64::from(first)) },
                Hello { aid: Aid::new("acceptor", 2), spawn_token: None, max_dialogs: None },
            ];
            let auth = |n: u8| tcp.then(|| (secret.clone(), [n; NONCE_LEN]));
            World {
                ends: [
                    End::Dialer(Dialer::new(hellos[0].clone(), auth(1), limits, now)),
                    End::Acceptor(Acceptor::new(hellos[1].clone(), auth(2), limits, now), None),
                ],
                wire: Default::default(),
                hellos,
                now,
                cut: false,
            }
        }
        _ => {
            let child = Hello { aid: Aid::new("worker", 200), spawn_token: Some("t".into()), max_dialogs: None };
            let parent = Hello { aid: Aid::new("root", 100), spawn_token: None, max_dialogs: Some(64) };
            World {
                ends: [
                    End::Child(Child::new(&child, 100, Duration::from_secs(10), now)),
                    End::Acceptor(Acceptor::new(parent.clone(), None, limits, now), Some(child.aid.clone())),
                ],
                wire: Default::default(),
                hellos: [child, parent],
                now,
                cut: false,
            }
        }
    };
    let mut it = rest.iter().copied();
    while let Some(op) = it.next() {
        w.flush();
        let s = usize::from(op & 1);
        match (op >> 1) % 8 {
            0..=2 => {
                w.deliver(s);
            }
            3 => {
                w.runtime(s, op & 0x80 == 0);
            }
            4 => w.now += Duration::from_millis(u64::from(it.next().unwrap_or(0)) * 50),
            5 => {
                // Arbitrary bytes as the next frame.
                let n = usize::from(it.next().unwrap_or(0) % 64);
                let bytes: Vec<u8> = it.by_ref().take(n).collect();
                if w.ends[s].reading() {
                    w.wire[s].pop_front();
                    let now = w.now;
                    w.ends[s].hs().on_frame(now, Bytes::from(bytes));
                }
            }
            6 => {
                // The next frame, cut short.
                let n = usize::from(it.next().unwrap_or(0));
                if w.ends[s].reading()
                    && let Some(m) = w.wire[s].pop_front()
                    && let Ok(whole) = codec::encode_to_bytes(&m, DEFAULT_MAX_FRAME)
                {
                    let body = whole.slice(4..);
                    let now = w.now;
                    w.ends[s].hs().on_frame(now, body.slice(..n.min(body.len())));
                }
            }
            _ => {
                w.cut = true;
                w.wire = Default::default();
            }
        }
        for i in 0..2 {
            let now = w.now;
            if matches!(w.ends[i].status(), Status::Waiting) && w.ends[i].hs().deadline().is_some_and(|d| d <= now) {
                w.ends[i].hs().on_timeout(now);
            }
        }
    }
    // No more faults: every world ends.
    for _ in 0..100 {
        w.flush();
        if w.ends.iter().all(End::ended) {
            break;
        }
        let mut moved = false;
        for s in 0..2 {
            moved |= w.runtime(s, true);
            w.flush();
            moved |= w.deliver(s);
        }
        if !moved {
            let next = w
                .ends
                .iter_mut()
                .filter(|e| matches!(e.status(), Status::Waiting))
                .filter_map(|e| e.hs().deadline())
                .min();
            let Some(at) = next else { break };
            w.now = w.now.max(at);
            for e in &mut w.ends {
                let now = w.now;
                if matches!(e.status(), Status::Waiting) {
                    e.hs().on_timeout(now);
                }
            }
        }
    }
    for s in 0..2 {
        assert!(w.ends[s].ended(), "side {s} did not end: {:?}", w.ends[s].status());
        if matches!(w.ends[s].status(), Status::Done) {
            let learned = match &w.ends[s] {
                End::Dialer(d) => d.peer().cloned(),
                End::Acceptor(a, _) => a.peer().cloned(),
                End::Child(c) => c.parent().cloned(),
                End::Parent(_) => Some(w.hellos[1 - s].clone()),
            };
            assert_eq!(learned.as_ref(), Some(&w.hellos[1 - s]), "side {s} learned a wrong peer");
        }
    }
});
