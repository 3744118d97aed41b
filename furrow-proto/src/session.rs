//! One channel's dialogs, with no I/O: the table of open dialogs, who may
//! open which id, how many the peer may have open, and where each message
//! goes.
//!
//! The runtime keeps one [`Session`] per channel and asks it about every
//! message: [`Session::on_recv`] for what arrives (a [`Route`]: start a
//! function, deliver to a dialog, drop late traffic, answer a probe, refuse
//! or report a violation), [`Session::on_send`] for what it is about to
//! write (accepted, and on which lane, or refused). Each dialog carries the
//! runtime's handle `D` (its mailbox), so one table answers both "is this
//! legal" and "who gets it", and a dialog's handle leaves the table exactly
//! when its outcome passes, in either direction.
//!
//! Rules (docs/design.md, "Wire protocol" and "Limits on a peer"):
//!
//! - ids: the dialling side opens odd ids, the accepting side even ones; a
//!   `Start` with an id of the wrong parity, or reusing a live id, is a
//!   violation;
//! - at most `max_served` dialogs opened by the peer are open at once; a
//!   `Start` beyond is refused with kind `TooManyDialogs` (runtime
//!   requests excepted: a cancel is answered at once and must never be
//!   refused);
//! - the peer's own bound, which it advertised in its handshake
//!   ([`peer_bound`](Session::peer_bound)), is what this side's openers
//!   keep within;
//! - every message of a dialog is checked by its [`Dialog`] state machine;
//!   stream traffic, acks and outcomes for a dialog no longer in the table
//!   are late (the far side sent them before it learned the dialog was
//!   over, or they answer a request this side gave up): dropped;
//! - `Ping` is answered with `Pong`; an `Error` with no id is the peer's
//!   report about the channel;
//! - stream credit ([`flow`](crate::flow)) is kept per dialog: a `Credit`
//!   from the peer is added to what this side may send
//!   ([`Session::send_yield`] spends it, or says there is none), and each
//!   `Yield` that arrives is admitted against the window this side opened
//!   ([`Session::open_stream`]); one over it is an overrun, reported once
//!   ([`Route::Overrun`]), and what follows is dropped.
//!
//! ```
//! use furrow_proto::session::{Route, Sent, Session, Side};
//! use furrow_proto::{Aid, FuncType, Msg, MsgKind, Payload};
//!
//! let mut opener: Session<&str> = Session::new(Side::Dialer, 16);
//! let mut callee: Session<&str> = Session::new(Side::Acceptor, 16);
//! let cid = opener.open("caller's mailbox").unwrap();
//! let start = Msg::Start { cid, ns: "m".into(), func: "f".into(), kwargs: Payload::default(), uid: Aid::new("a", 1) };
//! assert!(matches!(callee.on_recv(&start), Route::Start));
//! assert!(callee.accept(cid, "callee's mailbox"));
//! assert!(matches!(callee.on_send(cid, MsgKind::StartAck, Some(FuncType::Asyncfunc)), Sent::Accept { .. }));
//! assert!(matches!(callee.on_send(cid, MsgKind::Return, None), Sent::Last { data: "callee's mailbox", .. }));
//! let ret = Msg::Return { cid, pld: Payload::default() };
//! assert!(matches!(opener.on_recv(&Msg::StartAck { cid, functype: FuncType::Asyncfunc }), Route::Deliver(_)));
//! assert!(matches!(opener.on_recv(&ret), Route::Last("caller's mailbox")));
//! assert_eq!((opener.len(), callee.len()), (0, 0));
//! ```

use crate::dialog::{Dialog, Role, State, Verdict};
use crate::flow::{Acks, Admit, Grant, RecvWindow, SendCredit, Window};
use crate::{Cid, ErrorKind, FuncType, Msg, MsgKind};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// Which end of the connection this session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// It dialled: opens odd ids.
    Dialer,
    /// It accepted: opens even ids.
    Acceptor,
}

/// Where a received message goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a, D> {
    /// A `Start` the peer may open: run the function, and register the
    /// dialog with [`Session::accept`] (or answer it with an error).
    Start,
    /// Refuse this `Start`: answer an `Error` of `kind` on its id.
    Refuse {
        /// The error's kind ([`ErrorKind::TooManyDialogs`]: the peer has
        /// `max_served` dialogs open here already).
        kind: ErrorKind,
        /// Its message.
        reason: String,
    },
    /// A message for a live dialog (its handle).
    Deliver(&'a mut D),
    /// A `Yield` within the dialog's window (or a `Yields`, all of it):
    /// deliver it. `held` is what the window holds now, this message
    /// included (for high-water marks).
    Yield {
        /// The dialog's handle.
        data: &'a mut D,
        /// Messages and payload bytes held, this one included.
        held: Window,
    },
    /// A `Credit` was added to what this side may send on the dialog: wake
    /// its sender.
    Credit(&'a mut D),
    /// A `Yield` over the window this side opened (or with no window open):
    /// the peer ignored its credit, or in overrun mode the consumer is too
    /// slow. Reported once; the message and every later `Yield` of the
    /// dialog are dropped (later ones route as [`Route::Late`]).
    Overrun {
        /// The dialog's handle.
        data: &'a mut D,
        /// The window that was exceeded.
        window: Window,
    },
    /// The message that ends the dialog (its outcome): the dialog left the
    /// table; this was its handle.
    Last(D),
    /// The dialog broke the protocol: it left the table (this was its
    /// handle); tell it, and answer the peer with a protocol error.
    Broken {
        /// The dialog's handle.
        data: D,
        /// What was wrong.
        reason: String,
    },
    /// Not acceptable, and no dialog of ours is concerned: answer the peer
    /// with a protocol error (on `cid`, if any).
    Violation {
        /// The dialog id the message named, if any.
        cid: Option<Cid>,
        /// What was wrong.
        reason: String,
    },
    /// Late traffic for a dialog that is over: drop it.
    Late,
    /// A keepalive probe: answer `Pong { seq }`.
    Pong(u64),
    /// The peer reported something about the channel (`Error` without
    /// an id): log it.
    PeerReport,
    /// Nothing to do (a `Pong`).
    Nothing,
}

/// Whether a message of `kind` that this side sends is an answer the peer
/// is owed: an ack, a result, an error or a refusal of a dialog the *peer*
/// opened, or a `Pong`. These are what a peer can make this side queue by
/// asking and not reading, so they are what the runtime bounds (stopping
/// reading from a peer that lets too many pile up); stream data is bounded
/// by credit, and this side's own requests are its own.
/// `peer_opened`: the dialog is one the peer opened (or, for a message of
/// no dialog in the table, `true`: only answers go to such dialogs).
pub fn owed(kind: MsgKind, peer_opened: bool, data_lane: bool) -> bool {
    match kind {
        MsgKind::Pong => true,
        MsgKind::StartAck | MsgKind::Started | MsgKind::Return | MsgKind::Error | MsgKind::CancelAck => {
            peer_opened && !data_lane
        }
        _ => false,
    }
}

/// What to do with a message this side is about to send.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent<D> {
    /// Send it; on the stream-data lane when `data_lane` (so it cannot
    /// overtake the dialog's own stream data), else the control lane.
    Accept {
        /// Which lane.
        data_lane: bool,
        /// It answers a request of the peer's (see [`owed`]).
        owed: bool,
    },
    /// Send it: it ends the dialog, which left the table (this was its
    /// handle).
    Last {
        /// Which lane.
        data_lane: bool,
        /// It answers a request of the peer's (see [`owed`]).
        owed: bool,
        /// The dialog's handle.
        data: D,
    },
    /// Drop it: late stream traffic for a dialog that is over.
    Drop,
    /// A bug of this side: the message does not fit its dialog.
    Refused(String),
}

/// What to do with a `Yield` this side is about to send
/// ([`Session::send_yield`]).
#[derive(Debug, PartialEq, Eq)]
pub enum SentYield {
    /// Send it (on the data lane); its credit is spent.
    Accept,
    /// Not now: the peer has not granted the credit it needs. Nothing was
    /// spent; try again after the next [`Route::Credit`] for the dialog.
    NoCredit,
    /// Drop it: the dialog is over, or the peer stopped its end.
    Drop,
    /// A bug of this side: a `Yield` does not fit the dialog's state.
    Refused(String),
}

/// One open dialog as [`Session::inspect`] shows it.
#[derive(Debug)]
pub struct DialogView<'a, D> {
    /// Its id.
    pub cid: Cid,
    /// Which side this is.
    pub role: Role,
    /// Where the dialog is.
    pub state: State,
    /// What the peer granted this side to send.
    pub credit: &'a SendCredit,
    /// What this side's receive window holds, once its stream is open.
    pub recv: Option<&'a RecvWindow>,
    /// The dialog's handle.
    pub data: &'a D,
}

struct Entry<D> {
    dialog: Dialog,
    /// What the peer granted this side to send.
    credit: SendCredit,
    /// What this side admits, once it opened the stream (or an unopened
    /// window after a `Yield` arrived too early).
    recv: Option<RecvWindow>,
    data: D,
}

impl<D> Entry<D> {
    fn new(dialog: Dialog, data: D) -> Entry<D> {
        Entry { dialog, credit: SendCredit::default(), recv: None, data }
    }
}

/// How the dialog table hashes ids: every message is looked up by its
/// cid, twice per stream message (SipHash was 3 % of a streaming
/// receiver's CPU). A folded 64×64→128 multiply mixes every bit of the id
/// into every bit of the hash (a peer picks the ids of the dialogs it
/// opens: ids differing only in high bits must not share buckets), and a
/// random seed per session keeps a peer from choosing colliding ids in
/// advance. Not a keyed PRF as SipHash is; enough where a peer may have at
/// most `max_served` dialogs open, so even a collision it found would cost
/// a bounded probe.
#[derive(Clone, Debug)]
struct CidHash {
    seed: u64,
}

impl CidHash {
    fn new() -> CidHash {
        // std's per-process random keys, advanced per call.
        CidHash { seed: std::collections::hash_map::RandomState::new().hash_one(0u64) }
    }
}

impl BuildHasher for CidHash {
    type Hasher = CidHasher;
    fn build_hasher(&self) -> CidHasher {
        CidHasher { h: self.seed }
    }
}

struct CidHasher {
    h: u64,
}

fn fold_mul(x: u64) -> u64 {
    let p = u128::from(x) * 0x9E37_79B9_7F4A_7C15u128;
    (p as u64) ^ ((p >> 64) as u64)
}

impl Hasher for CidHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Not used for a `u64` key (`write_u64` is); correct for anything.
        for &b in bytes {
            self.h = fold_mul(self.h ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.h = fold_mul(self.h ^ v);
    }

    fn finish(&self) -> u64 {
        self.h
    }
}

/// Where stream data the window judged `admit` goes.
fn admitted<D>(entry: &mut Entry<D>, admit: Admit) -> Route<'_, D> {
    match admit {
        Admit::Deliver => {
            let held = entry
                .recv
                .as_ref()
                .map_or(Window { msgs: 0, bytes: 0 }, |rx| Window { msgs: rx.held_msgs(), bytes: rx.held_bytes() });
            Route::Yield { data: &mut entry.data, held }
        }
        Admit::Overrun { window } => Route::Overrun { data: &mut entry.data, window },
        Admit::Drop => Route::Late,
    }
}

/// What a routed message carries that routing looks at: a `Yield`'s
/// payload size, a `Yields`' count and payload bytes, or the message.
#[derive(Clone, Copy)]
enum Body<'a> {
    Yield(u64),
    Yields(u64, u64),
    Msg(&'a Msg),
}

/// The dialogs of one channel (see the module docs).
pub struct Session<D> {
    side: Side,
    next_cid: Cid,
    dialogs: HashMap<Cid, Entry<D>, CidHash>,
    /// Dialogs the peer opened that are open.
    served: usize,
    max_served: usize,
    /// The bound the peer advertised on the dialogs we may open there.
    peer_max: Option<usize>,
    closed: bool,
}

impl<D> std::fmt::Debug for Session<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("side", &self.side)
            .field("open", &self.dialogs.len())
            .field("served", &self.served)
            .field("closed", &self.closed)
            .finish()
    }
}

impl<D> Session<D> {
    /// A session for one end of a channel; the peer may have at most
    /// `max_served` dialogs open here at once.
    pub fn new(side: Side, max_served: usize) -> Session<D> {
        let first = match side {
            Side::Dialer => 1,
            Side::Acceptor => 2,
        };
        Session {
            side,
            next_cid: first,
            dialogs: HashMap::with_hasher(CidHash::new()),
            served: 0,
            max_served: max_served.max(1),
            peer_max: None,
            closed: false,
        }
    }

    /// The peer's own bound on the dialogs this side may have open there,
    /// as it advertised in its handshake (`Aid.max_dialogs`); `None` when
    /// it said nothing (an older peer), and then this side assumes its own
    /// bound (a tree shares its settings).
    ///
    /// ```
    /// use furrow_proto::session::{Session, Side};
    /// let s: Session<()> = Session::new(Side::Dialer, 4096).with_peer_bound(Some(4));
    /// assert_eq!(s.peer_bound(), 4);
    /// let old: Session<()> = Session::new(Side::Dialer, 4096).with_peer_bound(None);
    /// assert_eq!(old.peer_bound(), 4096);
    /// ```
    pub fn with_peer_bound(mut self, advertised: Option<usize>) -> Session<D> {
        self.peer_max = advertised;
        self
    }

    /// How many dialogs this side may have open at the peer at once: what
    /// it advertised, else our own bound; at least 1 (a peer advertising 0
    /// would otherwise make every call wait forever; its refusal is the
    /// better answer).
    pub fn peer_bound(&self) -> usize {
        self.peer_max.unwrap_or(self.max_served).max(1)
    }

    /// Which end this is.
    pub fn side(&self) -> Side {
        self.side
    }

    fn is_mine(&self, cid: Cid) -> bool {
        (cid % 2 == 1) == (self.side == Side::Dialer)
    }

    /// Open a dialog (this side will send its `Start`): its fresh id, or
    /// `None` once the channel is closed (`data` is dropped).
    pub fn open(&mut self, data: D) -> Option<Cid> {
        if self.closed {
            return None;
        }
        let cid = self.next_cid;
        self.next_cid += 2;
        let mut dialog = Dialog::new(Role::Opener);
        // Registering and sending `Start` are one step.
        let _ = dialog.on_send(MsgKind::Start);
        self.dialogs.insert(cid, Entry::new(dialog, data));
        Some(cid)
    }

    /// A fresh id of this side's for a request whose answer nobody waits
    /// for (a fire-and-forget cancel request): no dialog is registered, so
    /// its answer is late traffic, dropped.
    pub fn unregistered_cid(&mut self) -> Cid {
        let cid = self.next_cid;
        self.next_cid += 2;
        cid
    }

    /// Register the dialog the peer opened with the `Start` that was routed
    /// as [`Route::Start`]. False once the channel is closed, or if the id
    /// is live already (`data` is dropped).
    pub fn accept(&mut self, cid: Cid, data: D) -> bool {
        if self.closed || self.is_mine(cid) || self.dialogs.contains_key(&cid) {
            return false;
        }
        let mut dialog = Dialog::new(Role::Callee);
        let _ = dialog.on_recv(MsgKind::Start);
        self.dialogs.insert(cid, Entry::new(dialog, data));
        self.served += 1;
        true
    }

    fn remove(&mut self, cid: Cid) -> Option<D> {
        let e = self.dialogs.remove(&cid)?;
        if e.dialog.role() == Role::Callee {
            self.served -= 1;
        }
        Some(e.data)
    }

    /// Forget a dialog (its opener gave up, or its outcome was handled
    /// elsewhere): its handle, if it was open.
    pub fn close_dialog(&mut self, cid: Cid) -> Option<D> {
        self.remove(cid)
    }

    /// The channel is closed: no dialog opens any more; every open one is
    /// returned (its peer is gone), in no particular order.
    pub fn close(&mut self) -> Vec<D> {
        self.closed = true;
        self.served = 0;
        self.dialogs.drain().map(|(_, e)| e.data).collect()
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Open dialogs.
    pub fn len(&self) -> usize {
        self.dialogs.len()
    }

    /// No dialog is open.
    pub fn is_empty(&self) -> bool {
        self.dialogs.is_empty()
    }

    /// Open dialogs the peer opened.
    pub fn served(&self) -> usize {
        self.served
    }

    /// The open dialogs: their role, state and handle.
    pub fn dialogs(&self) -> impl Iterator<Item = (Cid, Role, State, &D)> {
        self.dialogs.iter().map(|(cid, e)| (*cid, e.dialog.role(), e.dialog.state(), &e.data))
    }

    /// The open dialogs with their flow accounting, for a look inside
    /// (a dump): nothing here changes the session.
    ///
    /// ```
    /// use furrow_proto::session::{Session, Side};
    /// use furrow_proto::dialog::{Role, State};
    /// let mut s = Session::<&str>::new(Side::Dialer, 16);
    /// let cid = s.open("a call").expect("open");
    /// let v = s.inspect().next().expect("one dialog");
    /// assert_eq!((v.cid, v.role, v.state, *v.data), (cid, Role::Opener, State::Starting, "a call"));
    /// assert_eq!(v.credit.msgs(), Some(0), "no stream, no credit");
    /// assert!(v.recv.is_none());
    /// ```
    pub fn inspect(&self) -> impl Iterator<Item = DialogView<'_, D>> {
        self.dialogs.iter().map(|(cid, e)| DialogView {
            cid: *cid,
            role: e.dialog.role(),
            state: e.dialog.state(),
            credit: &e.credit,
            recv: e.recv.as_ref(),
            data: &e.data,
        })
    }

    /// The handle of open dialog `cid`.
    pub fn get(&self, cid: Cid) -> Option<&D> {
        self.dialogs.get(&cid).map(|e| &e.data)
    }

    /// Where the message `msg`, just received, goes.
    pub fn on_recv(&mut self, msg: &Msg) -> Route<'_, D> {
        let kind = msg.kind();
        match msg {
            Msg::Start { cid, ns, .. } => {
                let cid = *cid;
                if self.is_mine(cid) {
                    Route::Violation { cid: Some(cid), reason: format!("Start with a cid of the wrong parity ({cid})") }
                } else if self.dialogs.contains_key(&cid) {
                    Route::Violation { cid: Some(cid), reason: format!("Start reuses the cid {cid} of a live dialog") }
                } else if self.served >= self.max_served && ns != crate::RUNTIME_NS {
                    // Runtime requests (cancels) are answered at once and
                    // never held, so they are never refused: a peer at its
                    // bound can still cancel what it started.
                    Route::Refuse {
                        kind: ErrorKind::TooManyDialogs,
                        reason: format!(
                            "{} calls and contexts from this peer are open here already (limit {})",
                            self.served, self.max_served
                        ),
                    }
                } else {
                    Route::Start
                }
            }
            Msg::Ping { seq } => Route::Pong(*seq),
            Msg::Pong { .. } => Route::Nothing,
            Msg::Error { cid: None, .. } => Route::PeerReport,
            Msg::Aid { .. }
            | Msg::SpawnSpec { .. }
            | Msg::Ready { .. }
            | Msg::Challenge { .. }
            | Msg::Auth { .. }
            | Msg::AuthOk { .. } => {
                Route::Violation { cid: None, reason: format!("{} after the handshake", kind.as_str()) }
            }
            other => {
                // Every other message names a dialog.
                let Some(cid) = other.cid() else {
                    return Route::Violation { cid: None, reason: format!("{} without a cid", kind.as_str()) };
                };
                match other {
                    Msg::Yield { pld, .. } => self.route(cid, kind, Body::Yield(pld.len() as u64)),
                    Msg::Yields { plds, .. } => {
                        let bytes = plds.iter().map(|p| p.len() as u64).sum();
                        self.route(cid, kind, Body::Yields(plds.len() as u64, bytes))
                    }
                    other => self.route(cid, kind, Body::Msg(other)),
                }
            }
        }
    }

    /// Where a `Yield` of `size` payload bytes for dialog `cid`, just
    /// received, goes: the same route [`on_recv`](Self::on_recv) gives
    /// `Msg::Yield`, for a receiver that decoded it without building a
    /// [`Msg`] (see [`codec::decode_yield`](crate::codec::decode_yield)).
    ///
    /// ```
    /// use furrow_proto::session::{Route, Session, Side};
    /// let mut s: Session<()> = Session::new(Side::Acceptor, 8);
    /// // No such dialog: late traffic, as for `on_recv`.
    /// assert!(matches!(s.on_recv_yield(3, 10), Route::Late));
    /// ```
    pub fn on_recv_yield(&mut self, cid: Cid, size: u64) -> Route<'_, D> {
        self.route(cid, MsgKind::Yield, Body::Yield(size))
    }

    /// A run of `n` `Yield`s for dialog `cid`, of `bytes` payload bytes in
    /// all (see [`codec::scan_yield_run`](crate::codec::scan_yield_run)),
    /// routed as one when each would take [`Route::Yield`]: the dialog's
    /// handle and what its window holds after them. `None`, and nothing
    /// changes, otherwise (an unknown or finished dialog, a state that
    /// refuses a `Yield`, a window they do not all fit): route them one by
    /// one with [`on_recv_yield`](Self::on_recv_yield), which says what
    /// becomes of each.
    ///
    /// ```
    /// use furrow_proto::session::{Session, Side};
    /// let mut s: Session<()> = Session::new(Side::Acceptor, 8);
    /// assert!(s.on_recv_yield_run(3, 2, 20).is_none());
    /// ```
    pub fn on_recv_yield_run(&mut self, cid: Cid, n: u64, bytes: u64) -> Option<(&mut D, Window)> {
        let entry = self.dialogs.get_mut(&cid)?;
        // A `Yield` never changes a dialog's state: if one is accepted,
        // all are.
        if !entry.dialog.accepts_recv(MsgKind::Yield) {
            return None;
        }
        // Only on a stream this side opened (before that, any `Yield` is an
        // overrun of a window of nothing, which `on_recv_yield` reports),
        // and only a run of something.
        let rx = entry.recv.as_mut().filter(|rx| rx.is_open())?;
        if n == 0 || !rx.admit_all(n, bytes) {
            return None;
        }
        let held = Window { msgs: rx.held_msgs(), bytes: rx.held_bytes() };
        Some((&mut entry.data, held))
    }

    fn route(&mut self, cid: Cid, kind: MsgKind, body: Body<'_>) -> Route<'_, D> {
        let Some(entry) = self.dialogs.get_mut(&cid) else {
            return match kind {
                // Late traffic for a dialog that is already over, or the
                // answer to a request this side gave up on: expected.
                MsgKind::Yield
                | MsgKind::Yields
                | MsgKind::Stop
                | MsgKind::Credit
                | MsgKind::Started
                | MsgKind::CancelAck
                | MsgKind::StartAck
                | MsgKind::Return
                | MsgKind::Error => Route::Late,
                _ => Route::Violation { cid: Some(cid), reason: format!("{} for unknown dialog {cid}", kind.as_str()) },
            };
        };
        match entry.dialog.on_recv(kind) {
            Ok(Verdict::Accept) => {
                if let Body::Msg(Msg::StartAck { functype, .. }) = body {
                    // Recorded here, before the dialog's next message
                    // (`Started`) can be checked.
                    entry.dialog.set_functype(*functype);
                }
                if entry.dialog.is_done() {
                    return match self.remove(cid) {
                        Some(data) => Route::Last(data),
                        None => Route::Late,
                    };
                }
                let Some(entry) = self.dialogs.get_mut(&cid) else {
                    return Route::Late;
                };
                match body {
                    // Before the stream is open here nothing was granted:
                    // the window is one of nothing. A `Yields` routed as
                    // one message is admitted whole (`RecvWindow::admit_frame`:
                    // delivered, or an overrun); a receiver that wants each
                    // value admitted on its own routes them with
                    // `on_recv_yield`.
                    Body::Yield(size) => {
                        let rx = entry.recv.get_or_insert_with(RecvWindow::unopened);
                        let admit = rx.admit(size);
                        admitted(entry, admit)
                    }
                    Body::Yields(n, bytes) => {
                        let rx = entry.recv.get_or_insert_with(RecvWindow::unopened);
                        let admit = rx.admit_frame(n, bytes);
                        admitted(entry, admit)
                    }
                    Body::Msg(Msg::Credit { n, bytes, .. }) => {
                        entry.credit.grant(*n, *bytes);
                        Route::Credit(&mut entry.data)
                    }
                    _ => Route::Deliver(&mut entry.data),
                }
            }
            Ok(Verdict::Drop) => Route::Late,
            Err(v) => match self.remove(cid) {
                Some(data) => Route::Broken { data, reason: v.to_string() },
                None => Route::Violation { cid: Some(cid), reason: v.to_string() },
            },
        }
    }

    /// Open the receiving side of dialog `cid`'s stream with `window`: the
    /// first grant to send the peer, and the consumer's half of the window
    /// (it says when to [`release`](Self::release) what was consumed).
    /// `None` for a dialog not in the table, and for one whose stream was
    /// already opened: a dialog has one stream, and a second window would
    /// hand the consumer a count ([`Acks`]) that disagrees with the window
    /// this side enforces. A stream that already saw an overrun (a `Yield`
    /// before it was opened) stays overrun.
    pub fn open_stream(&mut self, cid: Cid, window: Window, overrun_mode: bool) -> Option<(Grant, Acks)> {
        RecvWindow::open_in(&mut self.dialogs.get_mut(&cid)?.recv, window, overrun_mode)
    }

    /// The consumer of dialog `cid`'s stream is done with what `r` counts
    /// (see [`Acks::consume`]); a no-op once the dialog is over.
    pub fn release(&mut self, cid: Cid, r: crate::flow::Release) {
        if let Some(rx) = self.dialogs.get_mut(&cid).and_then(|e| e.recv.as_mut()) {
            rx.release(r);
        }
    }

    /// Whether this side may send a `Yield` of `size` payload bytes on
    /// dialog `cid` now; if so, its credit is spent. The stream hot path:
    /// one lookup decides both the dialog's state and its credit.
    pub fn send_yield(&mut self, cid: Cid, size: u64) -> SentYield {
        let Some(entry) = self.dialogs.get_mut(&cid) else {
            return SentYield::Drop;
        };
        // Credit first: a `Yield` that must wait changes nothing.
        if !entry.credit.can_send(size) {
            return SentYield::NoCredit;
        }
        match entry.dialog.on_send(MsgKind::Yield) {
            Ok(Verdict::Accept) => {
                entry.credit.try_spend(size);
                SentYield::Accept
            }
            Ok(Verdict::Drop) => SentYield::Drop,
            Err(v) => SentYield::Refused(v.to_string()),
        }
    }

    /// Check a message of `kind` for dialog `cid` that this side is about
    /// to send (not a `Start`: [`open`](Self::open) accounts for it);
    /// `functype` is a `StartAck`'s.
    pub fn on_send(&mut self, cid: Cid, kind: MsgKind, functype: Option<FuncType>) -> Sent<D> {
        let Some(entry) = self.dialogs.get_mut(&cid) else {
            // Not (or no longer) in the table: an answer to a `Start` that
            // was refused before it was registered, a cancel request's ack,
            // or late stream traffic. Stream data of an unknown dialog is
            // dropped; the rest goes on the control lane.
            return match kind {
                MsgKind::Yield | MsgKind::Yields | MsgKind::Stop | MsgKind::Credit => Sent::Drop,
                _ => Sent::Accept { data_lane: false, owed: owed(kind, true, false) },
            };
        };
        // Stream data goes behind control frames, and so must the `Stop`
        // or `Return` that follows a dialog's stream data: they may never
        // overtake that dialog's own `Yield`s.
        let open = matches!(entry.dialog.state(), State::Open { .. });
        let data_lane = matches!(kind, MsgKind::Yield | MsgKind::Yields)
            || (open && matches!(kind, MsgKind::Stop | MsgKind::Return));
        let owed = owed(kind, entry.dialog.role() == Role::Callee, data_lane);
        match entry.dialog.on_send(kind) {
            Ok(Verdict::Accept) => {
                if let Some(ft) = functype {
                    entry.dialog.set_functype(ft);
                }
                if entry.dialog.is_done() {
                    match self.remove(cid) {
                        Some(data) => Sent::Last { data_lane, owed, data },
                        None => Sent::Drop,
                    }
                } else {
                    Sent::Accept { data_lane, owed }
                }
            }
            Ok(Verdict::Drop) => Sent::Drop,
            Err(v) => Sent::Refused(v.to_string()),
        }
    }
}
