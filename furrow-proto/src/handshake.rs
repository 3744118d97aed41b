//! The handshakes that open a connection, with no I/O and no clock: one
//! state machine per side, fed what arrives and the current time, telling
//! the runtime what to send and how it ended.
//!
//! Every connection starts with one of these exchanges, each line one
//! frame (docs/design.md, "Handshakes"):
//!
//! ```text
//! TCP only, before anything else (the system's shared secret):
//!   acceptor → dialer    Challenge { Na }
//!   dialer   → acceptor  Auth { Nd, HMAC(secret, "furrow-auth-v1 dialler"  ‖ Na ‖ Nd) }
//!   acceptor → dialer    AuthOk { HMAC(secret, "furrow-auth-v1 acceptor" ‖ Nd ‖ Na) }
//! Then, every connection:
//!   dialer   → acceptor  Aid { name, uuid, pid, proto, max_dialogs, spawn_token? }
//!   acceptor → dialer    Aid { …its own… }            (or Error: identity refused)
//! A spawned child (the dialer) with its parent (the acceptor), after that:
//!   parent   → child     SpawnSpec { … }
//!   child    → parent    Ready { addrs }              (or Error: it could not start)
//! ```
//!
//! - [`Dialer`] and [`Acceptor`]: the two ends of any connection;
//!   [`Child`] is the dialing end of a spawned child, [`Parent`] what the
//!   parent does once the acceptor handed it the connection that
//!   presented the child's spawn token.
//! - Each side is driven the same way (the [`Handshake`] trait): write
//!   every message [`poll_send`](Handshake::poll_send) gives, in order;
//!   while the [`status`](Handshake::status) is [`Status::Waiting`], read
//!   one frame of at most [`read_limit`](Handshake::read_limit) bytes,
//!   until [`deadline`](Handshake::deadline), and hand it over
//!   ([`on_msg`](Handshake::on_msg), or [`on_closed`](Handshake::on_closed),
//!   [`on_unreadable`](Handshake::on_unreadable),
//!   [`on_timeout`](Handshake::on_timeout)); at [`Status::Verify`] check
//!   the identity the peer claims (what only the runtime can: the
//!   kernel's word on the connection's pid, the identities it knows) and
//!   answer with `verified`; end at [`Status::Done`] or
//!   [`Status::Failed`] (a typed [`Failure`]), after writing what is left
//!   to send (a refusal, say).
//! - Time is passed in (`now`); the machine keeps deadlines, never reads a
//!   clock. Randomness (the nonces) is passed in too, so a test replays
//!   an exchange exactly.
//! - Nothing panics, whatever arrives: a message that does not fit the
//!   state is a [`Failure::Unexpected`] naming what was due; once done or
//!   failed, a side ignores everything (what follows a handshake is the
//!   channel's).
//!
//! ```
//! use furrow_proto::handshake::{Acceptor, Dialer, Handshake, Hello, Limits, Status};
//! use furrow_proto::Aid;
//! use std::time::Instant;
//!
//! let now = Instant::now();
//! let hello = |name: &str| Hello { aid: Aid::new(name, 1), spawn_token: None, max_dialogs: Some(4) };
//! let mut d = Dialer::new(hello("d"), None, Limits::default(), now);
//! let mut a = Acceptor::new(hello("a"), None, Limits::default(), now);
//! // Back to back: each side's messages are the other's input.
//! while let Some(m) = d.poll_send() { a.on_msg(now, m) }
//! let Status::Verify(claim) = a.status() else { panic!("{:?}", a.status()) };
//! assert_eq!(claim.aid.name, "d");
//! a.verified(Ok(()));
//! while let Some(m) = a.poll_send() { d.on_msg(now, m) }
//! d.verified(Ok(()));
//! assert!(matches!((a.status(), d.status()), (Status::Done, Status::Done)));
//! assert_eq!(d.peer().map(|p| p.max_dialogs), Some(Some(4)));
//! ```

use crate::{Addr, Aid, DEFAULT_MAX_FRAME, ErrorKind, ErrorMsg, Msg, MsgKind, PROTO_VERSION, Secret, SpawnSpec};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Bytes of each authentication nonce.
pub const NONCE_LEN: usize = 32;

/// An authentication nonce: fresh random bytes, one per connection and
/// side (the driver draws them; the machine has no randomness).
pub type Nonce = [u8; NONCE_LEN];

/// Largest frame read from a peer before its handshake is done: an
/// unauthenticated peer cannot make us allocate more than this.
pub const PRE_AUTH_MAX_FRAME: usize = 4096;

const DIALLER_LABEL: &[u8] = b"furrow-auth-v1 dialler";
const ACCEPTOR_LABEL: &[u8] = b"furrow-auth-v1 acceptor";

/// The time each step may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The whole secret exchange (TCP only).
    pub auth: Duration,
    /// The `Aid` exchange, once authenticated (or from the start).
    pub aid: Duration,
    /// The largest frame read once the handshake is done.
    pub max_frame: usize,
}

impl Default for Limits {
    /// 5 s for each step, the default frame limit.
    fn default() -> Limits {
        Limits { auth: Duration::from_secs(5), aid: Duration::from_secs(5), max_frame: DEFAULT_MAX_FRAME }
    }
}

/// What a side says of itself in its `Aid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Who it is.
    pub aid: Aid,
    /// Set only by a freshly spawned child: the one-time token its parent
    /// gave it.
    pub spawn_token: Option<String>,
    /// The most dialogs it lets its peer have open at once (`None`: not
    /// said; an older peer, or a child, whose bound comes from its parent).
    pub max_dialogs: Option<u64>,
}

impl Hello {
    /// The `Aid` message saying this.
    pub fn msg(&self) -> Msg {
        Msg::Aid {
            name: self.aid.name.clone(),
            uuid: self.aid.uuid,
            pid: self.aid.pid,
            proto: PROTO_VERSION,
            spawn_token: self.spawn_token.clone(),
            max_dialogs: self.max_dialogs,
        }
    }

    /// What an `Aid` message says; the protocol version it speaks, which
    /// must be ours.
    fn of(msg: Msg) -> Option<(Hello, u32)> {
        match msg {
            Msg::Aid { name, uuid, pid, proto, spawn_token, max_dialogs } => {
                Some((Hello { aid: Aid { name, uuid, pid }, spawn_token, max_dialogs }, proto))
            }
            _ => None,
        }
    }
}

/// Why a handshake failed. `waiting_for` names the message that was due.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Nothing (or not all of it) arrived in time.
    #[error("no {} within {after:?}", waiting_for.as_str())]
    Timeout {
        /// What was due.
        waiting_for: MsgKind,
        /// The time it had.
        after: Duration,
    },
    /// The peer closed (or reset) the connection.
    #[error("the peer closed the connection before its {}{}", waiting_for.as_str(), detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Closed {
        /// What was due.
        waiting_for: MsgKind,
        /// How it went (a reset, say), when known.
        detail: Option<String>,
    },
    /// A frame arrived that is no furrow message (or no frame at all).
    #[error("not a furrow actor: {reason}")]
    Unreadable {
        /// What was due.
        waiting_for: MsgKind,
        /// What was wrong with it.
        reason: String,
    },
    /// A furrow message, but not the one due.
    #[error("sent {} where {} was due", got.as_str(), expected.as_str())]
    Unexpected {
        /// What was due.
        expected: MsgKind,
        /// What came.
        got: MsgKind,
    },
    /// The peer answered with an `Error` (it refused us, and said why).
    #[error("refused: {message}")]
    Refused {
        /// What was due.
        waiting_for: MsgKind,
        /// Its reason.
        message: String,
    },
    /// The peer speaks another protocol version.
    #[error("protocol version {theirs}, ours is {}", PROTO_VERSION)]
    Version {
        /// Its version.
        theirs: u32,
    },
    /// An authentication nonce of the wrong length.
    #[error("nonce of {len} bytes, expected {NONCE_LEN}")]
    BadNonce {
        /// Its length.
        len: usize,
    },
    /// The peer's proof is wrong: it does not know this system's secret.
    #[error("wrong proof: the peer does not know this system's secret")]
    BadProof,
    /// The acceptor hung up (or sent garbage) after our proof: it refused
    /// it, so the two sides do not share a secret.
    #[error(
        "the peer refused our proof and closed the connection: the two sides do not share a secret \
         (see FURROW_SECRET_FILE)"
    )]
    ProofRefused,
    /// The identity the peer claims does not hold (checked by the runtime,
    /// or here: a parent's pid, a child's uuid).
    #[error("{0}")]
    Identity(String),
    /// This side could not go on (a child whose actor could not start).
    #[error("{0}")]
    Local(String),
}

/// Where a side stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Status<'a> {
    /// Waiting for the peer's next frame (after writing what
    /// [`poll_send`](Handshake::poll_send) gives).
    Waiting,
    /// The peer claims this identity: check it (the connection's pid, the
    /// identities the runtime knows for certain) and call `verified`.
    Verify(&'a Hello),
    /// A child's configuration arrived: apply it, then [`Child::ready`] or
    /// [`Child::start_failed`].
    Configure(&'a SpawnSpec),
    /// Done: what it learned is in the side's accessors.
    Done,
    /// Failed; what is left to send (a refusal) goes first.
    Failed(&'a Failure),
}

/// What every side of a handshake is driven with (see the module docs).
pub trait Handshake {
    /// The next message to write, in order.
    fn poll_send(&mut self) -> Option<Msg>;
    /// A message arrived at `now`.
    fn on_msg(&mut self, now: Instant, msg: Msg);
    /// The peer closed the connection (`detail`: how, when known).
    fn on_closed(&mut self, detail: Option<String>);
    /// What arrived is no furrow message (`reason`).
    fn on_unreadable(&mut self, reason: String);
    /// [`deadline`](Self::deadline) passed (`now` is when it was noticed).
    fn on_timeout(&mut self, now: Instant);
    /// When [`on_timeout`](Self::on_timeout) is due, while waiting.
    fn deadline(&self) -> Option<Instant>;
    /// The largest frame to read now.
    fn read_limit(&self) -> usize;
    /// Where it stands.
    fn status(&self) -> Status<'_>;

    /// A frame arrived: decoded here, so bytes that are no furrow message
    /// are [`Failure::Unreadable`].
    fn on_frame(&mut self, now: Instant, frame: bytes::Bytes) {
        match crate::codec::decode_msg(frame) {
            Ok(m) => self.on_msg(now, m),
            Err(e) => self.on_unreadable(e.to_string()),
        }
    }
}

/// What all sides share: the queue of messages to send, the deadline, the
/// failure.
#[derive(Debug, Default)]
struct Core {
    out: VecDeque<Msg>,
    /// When the current wait ends, and what it waits for, for how long.
    deadline: Option<(Instant, MsgKind, Duration)>,
    failed: Option<Failure>,
}

impl Core {
    fn wait(&mut self, now: Instant, what: MsgKind, d: Duration) {
        self.deadline = Some((now.checked_add(d).unwrap_or(now), what, d));
    }

    /// Wait for `what` under the deadline already running.
    fn wait_more(&mut self, what: MsgKind) {
        if let Some((at, _, d)) = self.deadline {
            self.deadline = Some((at, what, d));
        }
    }

    fn fail(&mut self, f: Failure) {
        self.deadline = None;
        self.failed.get_or_insert(f);
    }

    fn waiting_for(&self) -> MsgKind {
        self.deadline.map_or(MsgKind::Aid, |(_, w, _)| w)
    }

    fn timed_out(&mut self, now: Instant) -> bool {
        match self.deadline {
            Some((at, what, after)) if now >= at => {
                self.fail(Failure::Timeout { waiting_for: what, after });
                true
            }
            _ => false,
        }
    }

    /// A message that is not the one due (an `Error` is the peer's refusal).
    fn unexpected(&mut self, expected: MsgKind, msg: Msg) {
        match msg {
            Msg::Error { message, .. } => self.fail(Failure::Refused { waiting_for: expected, message }),
            other => self.fail(Failure::Unexpected { expected, got: other.kind() }),
        }
    }
}

fn mac(secret: &Secret, label: &[u8], first: &[u8], second: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let mut m = match <Hmac<Sha256> as Mac>::new_from_slice(&secret.0) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes any key"),
    };
    m.update(label);
    m.update(first);
    m.update(second);
    m
}

/// The dialling side of the secret exchange, one implementation for
/// [`Dialer`] and [`Child::over_tcp`]: our proof over both nonces, and the
/// check of the acceptor's.
#[derive(Debug)]
struct DialAuth {
    secret: Secret,
    ours: Nonce,
    /// The acceptor's nonce, once challenged.
    theirs: Vec<u8>,
}

impl DialAuth {
    fn new((secret, ours): (Secret, Nonce)) -> DialAuth {
        DialAuth { secret, ours, theirs: Vec::new() }
    }

    /// The answer to the acceptor's `Challenge`: our proof and our nonce.
    fn answer(&mut self, nonce: Vec<u8>) -> Result<Msg, Failure> {
        if nonce.len() != NONCE_LEN {
            return Err(Failure::BadNonce { len: nonce.len() });
        }
        let proof = mac(&self.secret, DIALLER_LABEL, &nonce, &self.ours).finalize().into_bytes().to_vec();
        self.theirs = nonce;
        Ok(Msg::Auth { nonce: self.ours.to_vec(), mac: proof })
    }

    /// The acceptor's proof, from its `AuthOk`, checked in constant time
    /// (`verify_slice`): it knows the secret too, so a dialler never
    /// serves a port squatter that answered at the address it dialled.
    fn check(&self, proof: &[u8]) -> Result<(), Failure> {
        mac(&self.secret, ACCEPTOR_LABEL, &self.ours, &self.theirs).verify_slice(proof).map_err(|_| Failure::BadProof)
    }
}

/// The version check every `Aid` passes.
fn check_version(proto: u32) -> Result<(), Failure> {
    if proto == PROTO_VERSION { Ok(()) } else { Err(Failure::Version { theirs: proto }) }
}

/// The `Error` an acceptor answers a connection whose identity it
/// refused with (from `me`, on no dialog).
pub fn refusal(me: &Aid, why: &str) -> Msg {
    ErrorMsg::new(me.clone(), ErrorKind::IdentityRefused, format!("connection refused: {why}")).into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DialerState {
    AwaitChallenge,
    AwaitAuthOk,
    AwaitAid,
    Verify,
    Done,
    Failed,
}

/// The dialing end of a connection.
#[derive(Debug)]
pub struct Dialer {
    core: Core,
    state: DialerState,
    me: Hello,
    /// The secret and our nonce, over TCP.
    auth: Option<DialAuth>,
    limits: Limits,
    peer: Option<Hello>,
}

impl Dialer {
    /// Start dialing as `me`; `auth` (the secret and a fresh nonce) over
    /// TCP, where the acceptor challenges first. Over UDS our `Aid` goes
    /// out at once.
    pub fn new(me: Hello, auth: Option<(Secret, Nonce)>, limits: Limits, now: Instant) -> Dialer {
        let mut d = Dialer {
            core: Core::default(),
            state: DialerState::AwaitAid,
            me,
            auth: auth.map(DialAuth::new),
            limits,
            peer: None,
        };
        if d.auth.is_some() {
            d.state = DialerState::AwaitChallenge;
            d.core.wait(now, MsgKind::Challenge, limits.auth);
        } else {
            d.send_aid(now);
        }
        d
    }

    fn send_aid(&mut self, now: Instant) {
        self.core.out.push_back(self.me.msg());
        self.state = DialerState::AwaitAid;
        self.core.wait(now, MsgKind::Aid, self.limits.aid);
    }

    fn fail(&mut self, f: Failure) {
        self.state = DialerState::Failed;
        self.core.fail(f);
    }

    /// The runtime's verdict on the identity the acceptor claims (at
    /// [`Status::Verify`]): `Err` with the reason refuses it.
    pub fn verified(&mut self, verdict: Result<(), String>) {
        if self.state != DialerState::Verify {
            return;
        }
        match verdict {
            Ok(()) => self.state = DialerState::Done,
            Err(why) => self.fail(Failure::Identity(why)),
        }
    }

    /// Who answered, once [`Status::Verify`] or [`Status::Done`].
    pub fn peer(&self) -> Option<&Hello> {
        self.peer.as_ref()
    }
}

impl Handshake for Dialer {
    fn poll_send(&mut self) -> Option<Msg> {
        self.core.out.pop_front()
    }

    fn on_msg(&mut self, now: Instant, msg: Msg) {
        let expected = match self.state {
            DialerState::AwaitChallenge => MsgKind::Challenge,
            DialerState::AwaitAuthOk => MsgKind::AuthOk,
            DialerState::AwaitAid => MsgKind::Aid,
            // Verifying, done or failed: what follows is not ours to read.
            _ => return,
        };
        // A frame that arrives after the deadline is too late, however
        // good (the driver may notice both at once).
        if self.core.timed_out(now) {
            self.state = DialerState::Failed;
            return;
        }
        match (self.state, msg) {
            (DialerState::AwaitChallenge, Msg::Challenge { nonce }) => {
                // (This state is only entered with a secret.)
                let answer = match self.auth.as_mut() {
                    Some(a) => a.answer(nonce),
                    None => Err(Failure::Unexpected { expected, got: MsgKind::Challenge }),
                };
                match answer {
                    Ok(m) => self.core.out.push_back(m),
                    Err(f) => return self.fail(f),
                }
                self.state = DialerState::AwaitAuthOk;
                // The whole secret exchange shares one deadline.
                self.core.wait_more(MsgKind::AuthOk);
            }
            (DialerState::AwaitAuthOk, Msg::AuthOk { mac: proof }) => {
                let checked = match &self.auth {
                    Some(a) => a.check(&proof),
                    None => Err(Failure::Unexpected { expected, got: MsgKind::AuthOk }),
                };
                if let Err(f) = checked {
                    return self.fail(f);
                }
                self.send_aid(now);
            }
            (DialerState::AwaitAid, msg @ Msg::Aid { .. }) => {
                let Some((hello, proto)) = Hello::of(msg) else { return };
                if let Err(f) = check_version(proto) {
                    return self.fail(f);
                }
                self.peer = Some(hello);
                self.core.deadline = None;
                self.state = DialerState::Verify;
            }
            (_, other) => {
                self.state = DialerState::Failed;
                self.core.unexpected(expected, other);
            }
        }
    }

    fn on_closed(&mut self, detail: Option<String>) {
        match self.state {
            DialerState::AwaitAuthOk => self.fail(Failure::ProofRefused),
            DialerState::AwaitChallenge | DialerState::AwaitAid => {
                let waiting_for = self.core.waiting_for();
                self.fail(Failure::Closed { waiting_for, detail });
            }
            _ => {}
        }
    }

    fn on_unreadable(&mut self, reason: String) {
        match self.state {
            DialerState::AwaitAuthOk => self.fail(Failure::ProofRefused),
            DialerState::AwaitChallenge | DialerState::AwaitAid => {
                let waiting_for = self.core.waiting_for();
                self.fail(Failure::Unreadable { waiting_for, reason });
            }
            _ => {}
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        if matches!(self.state, DialerState::AwaitChallenge | DialerState::AwaitAuthOk | DialerState::AwaitAid)
            && self.core.timed_out(now)
        {
            self.state = DialerState::Failed;
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self.state {
            DialerState::AwaitChallenge | DialerState::AwaitAuthOk | DialerState::AwaitAid => {
                self.core.deadline.map(|(at, _, _)| at)
            }
            _ => None,
        }
    }

    fn read_limit(&self) -> usize {
        if self.state == DialerState::Done { self.limits.max_frame } else { PRE_AUTH_MAX_FRAME }
    }

    fn status(&self) -> Status<'_> {
        match (self.state, &self.core.failed, &self.peer) {
            (_, Some(f), _) => Status::Failed(f),
            (DialerState::Verify, _, Some(p)) => Status::Verify(p),
            (DialerState::Done, _, _) => Status::Done,
            _ => Status::Waiting,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptorState {
    AwaitAuth,
    AwaitAid,
    Verify,
    Done,
    Failed,
}

/// The accepting end of a connection. Nothing the peer sends is acted on
/// before it is done: until then frames are small
/// ([`PRE_AUTH_MAX_FRAME`]), and anything but the message due ends it.
#[derive(Debug)]
pub struct Acceptor {
    core: Core,
    state: AcceptorState,
    me: Hello,
    /// The secret and our nonce, over TCP.
    auth: Option<(Secret, Nonce)>,
    limits: Limits,
    peer: Option<Hello>,
}

impl Acceptor {
    /// Start accepting as `me`; over TCP (`auth`: the secret and a fresh
    /// nonce) the challenge goes out at once.
    pub fn new(me: Hello, auth: Option<(Secret, Nonce)>, limits: Limits, now: Instant) -> Acceptor {
        let mut a = Acceptor { core: Core::default(), state: AcceptorState::AwaitAid, me, auth, limits, peer: None };
        match &a.auth {
            Some((_, ours)) => {
                a.core.out.push_back(Msg::Challenge { nonce: ours.to_vec() });
                a.state = AcceptorState::AwaitAuth;
                a.core.wait(now, MsgKind::Auth, limits.auth);
            }
            None => a.core.wait(now, MsgKind::Aid, limits.aid),
        }
        a
    }

    fn fail(&mut self, f: Failure) {
        self.state = AcceptorState::Failed;
        self.core.fail(f);
    }

    /// The runtime's verdict on the identity the dialer claims (at
    /// [`Status::Verify`]). `Ok`: our `Aid` goes out, done. `Err(why)`:
    /// an `Error` of kind [`ErrorKind::IdentityRefused`] saying why goes out, and
    /// the handshake fails with [`Failure::Identity`].
    pub fn verified(&mut self, verdict: Result<(), String>) {
        if self.state != AcceptorState::Verify {
            return;
        }
        match verdict {
            Ok(()) => {
                self.core.out.push_back(self.me.msg());
                self.state = AcceptorState::Done;
            }
            Err(why) => {
                self.core.out.push_back(refusal(&self.me.aid, &why));
                self.fail(Failure::Identity(why));
            }
        }
    }

    /// Who dialled, once [`Status::Verify`] or [`Status::Done`] (with its
    /// spawn token, if it is a child connecting back).
    pub fn peer(&self) -> Option<&Hello> {
        self.peer.as_ref()
    }
}

impl Handshake for Acceptor {
    fn poll_send(&mut self) -> Option<Msg> {
        self.core.out.pop_front()
    }

    fn on_msg(&mut self, now: Instant, msg: Msg) {
        let expected = match self.state {
            AcceptorState::AwaitAuth => MsgKind::Auth,
            AcceptorState::AwaitAid => MsgKind::Aid,
            _ => return,
        };
        if self.core.timed_out(now) {
            self.state = AcceptorState::Failed;
            return;
        }
        match (self.state, msg) {
            (AcceptorState::AwaitAuth, Msg::Auth { nonce, mac: proof }) => {
                if nonce.len() != NONCE_LEN {
                    return self.fail(Failure::BadNonce { len: nonce.len() });
                }
                let Some((secret, ours)) = &self.auth else {
                    return self.fail(Failure::Unexpected { expected, got: MsgKind::Auth });
                };
                // Constant time (`verify_slice`).
                if mac(secret, DIALLER_LABEL, ours, &nonce).verify_slice(&proof).is_err() {
                    return self.fail(Failure::BadProof);
                }
                let ok = mac(secret, ACCEPTOR_LABEL, &nonce, ours).finalize().into_bytes().to_vec();
                self.core.out.push_back(Msg::AuthOk { mac: ok });
                self.state = AcceptorState::AwaitAid;
                self.core.wait(now, MsgKind::Aid, self.limits.aid);
            }
            (AcceptorState::AwaitAid, msg @ Msg::Aid { .. }) => {
                let Some((hello, proto)) = Hello::of(msg) else { return };
                if let Err(f) = check_version(proto) {
                    return self.fail(f);
                }
                self.peer = Some(hello);
                self.core.deadline = None;
                self.state = AcceptorState::Verify;
            }
            (_, other) => {
                self.state = AcceptorState::Failed;
                self.core.unexpected(expected, other);
            }
        }
    }

    fn on_closed(&mut self, detail: Option<String>) {
        if matches!(self.state, AcceptorState::AwaitAuth | AcceptorState::AwaitAid) {
            let waiting_for = self.core.waiting_for();
            self.fail(Failure::Closed { waiting_for, detail });
        }
    }

    fn on_unreadable(&mut self, reason: String) {
        if matches!(self.state, AcceptorState::AwaitAuth | AcceptorState::AwaitAid) {
            let waiting_for = self.core.waiting_for();
            self.fail(Failure::Unreadable { waiting_for, reason });
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        if matches!(self.state, AcceptorState::AwaitAuth | AcceptorState::AwaitAid) && self.core.timed_out(now) {
            self.state = AcceptorState::Failed;
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self.state {
            AcceptorState::AwaitAuth | AcceptorState::AwaitAid => self.core.deadline.map(|(at, _, _)| at),
            _ => None,
        }
    }

    fn read_limit(&self) -> usize {
        if self.state == AcceptorState::Done { self.limits.max_frame } else { PRE_AUTH_MAX_FRAME }
    }

    fn status(&self) -> Status<'_> {
        match (self.state, &self.core.failed, &self.peer) {
            (_, Some(f), _) => Status::Failed(f),
            (AcceptorState::Verify, _, Some(p)) => Status::Verify(p),
            (AcceptorState::Done, _, _) => Status::Done,
            _ => Status::Waiting,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChildState {
    AwaitChallenge,
    AwaitAuthOk,
    AwaitAid,
    Verify,
    AwaitSpec,
    Configure,
    Done,
    Failed,
}

/// A spawned child's end: it dialled its parent, presents its spawn
/// token, checks that the parent is the process that spawned it, takes
/// its configuration, and says `Ready` once it serves.
#[derive(Debug)]
pub struct Child {
    core: Core,
    state: ChildState,
    /// The pid of the process that spawned it (from its environment).
    parent_pid: u32,
    parent: Option<Hello>,
    spec: Option<SpawnSpec>,
    /// Over TCP (a child started through a launcher): the secret and our
    /// nonce, and the acceptor's nonce once challenged.
    auth: Option<DialAuth>,
    /// Our `Aid`, sent once authenticated.
    me: Option<Msg>,
}

impl Child {
    /// Start as `me` (its `spawn_token` set), expecting the parent
    /// `parent_pid`; the parent's `Aid` and the `SpawnSpec` are due within
    /// `timeout`. Our `Aid` goes out at once.
    pub fn new(me: &Hello, parent_pid: u32, timeout: Duration, now: Instant) -> Child {
        let mut c = Child {
            core: Core::default(),
            state: ChildState::AwaitAid,
            parent_pid,
            parent: None,
            spec: None,
            auth: None,
            me: None,
        };
        c.core.out.push_back(me.msg());
        c.core.wait(now, MsgKind::Aid, timeout);
        c
    }

    /// A child that dials its parent over TCP (one started on another host
    /// or in another network namespace, through a launcher): the parent's
    /// acceptor challenges first, and the child proves it knows `auth`'s
    /// secret (which reached it with its spawn, never through argv or the
    /// environment) before its `Aid` goes out. The whole exchange, the
    /// `SpawnSpec` included, is due within `timeout`.
    ///
    /// ```
    /// use furrow_proto::handshake::{Acceptor, Child, Handshake, Hello, Limits, Parent, Status};
    /// use furrow_proto::{Aid, Secret, SpawnSpec};
    /// use std::time::{Duration, Instant};
    ///
    /// let now = Instant::now();
    /// let secret = Secret(vec![7; 32]);
    /// let root = Hello { aid: Aid::new("root", 100), spawn_token: None, max_dialogs: None };
    /// let me = Hello { aid: Aid::new("far", 4242), spawn_token: Some("tok".into()), max_dialogs: None };
    /// let mut c = Child::over_tcp(&me, 100, (secret.clone(), [1; 32]), Duration::from_secs(10), now);
    /// let mut a = Acceptor::new(root.clone(), Some((secret, [2; 32])), Limits::default(), now);
    /// let pump = |from: &mut dyn Handshake, to: &mut dyn Handshake| {
    ///     while let Some(m) = from.poll_send() { to.on_msg(now, m) }
    /// };
    /// pump(&mut a, &mut c); // Challenge
    /// pump(&mut c, &mut a); // Auth
    /// pump(&mut a, &mut c); // AuthOk
    /// pump(&mut c, &mut a); // Aid, with the token
    /// assert!(matches!(a.status(), Status::Verify(h) if h.spawn_token.as_deref() == Some("tok")));
    /// # a.verified(Ok(()));
    /// # pump(&mut a, &mut c);
    /// # c.verified(Ok(()));
    /// # let spec = SpawnSpec { parent: root.aid.clone(), bind: vec![], registry: vec![], secret: None,
    /// #     socket_dir: "/tmp".into(), enable_modules: vec![], log_filter: None, max_frame: 1 << 20, tuning: None };
    /// # let mut p = Parent::new(Aid { pid: 0, ..me.aid.clone() }, spec, Duration::from_secs(10), 1 << 20, now).remote();
    /// # p.connected(&me, None).unwrap();
    /// # pump(&mut p, &mut c);
    /// # assert!(matches!(c.status(), Status::Configure(_)));
    /// ```
    pub fn over_tcp(me: &Hello, parent_pid: u32, auth: (Secret, Nonce), timeout: Duration, now: Instant) -> Child {
        let mut c = Child {
            core: Core::default(),
            state: ChildState::AwaitChallenge,
            parent_pid,
            parent: None,
            spec: None,
            auth: Some(DialAuth::new(auth)),
            me: Some(me.msg()),
        };
        c.core.wait(now, MsgKind::Challenge, timeout);
        c
    }

    fn fail(&mut self, f: Failure) {
        self.state = ChildState::Failed;
        self.core.fail(f);
    }

    /// Waiting for a frame from the parent.
    fn waiting(&self) -> bool {
        matches!(
            self.state,
            ChildState::AwaitChallenge | ChildState::AwaitAuthOk | ChildState::AwaitAid | ChildState::AwaitSpec
        )
    }

    /// The runtime's verdict on the parent's identity (at
    /// [`Status::Verify`]; the pid the child was told is checked already).
    pub fn verified(&mut self, verdict: Result<(), String>) {
        if self.state != ChildState::Verify {
            return;
        }
        match verdict {
            Ok(()) => {
                self.state = ChildState::AwaitSpec;
                // Under the same deadline as the parent's `Aid`.
                self.core.wait_more(MsgKind::SpawnSpec);
            }
            Err(why) => self.fail(Failure::Identity(why)),
        }
    }

    /// The configuration is applied and the child serves on `addrs`
    /// (at [`Status::Configure`]): `Ready` goes out, done.
    pub fn ready(&mut self, addrs: Vec<Addr>) {
        if self.state == ChildState::Configure {
            self.core.out.push_back(Msg::Ready { addrs });
            self.state = ChildState::Done;
        }
    }

    /// The child could not start with its configuration (at
    /// [`Status::Configure`]): `error` (an `Error` message saying why)
    /// goes out in place of `Ready`, and the handshake fails.
    pub fn start_failed(&mut self, error: Msg) {
        if self.state == ChildState::Configure {
            let why = match &error {
                Msg::Error { message, .. } => message.clone(),
                other => other.kind().as_str().to_owned(),
            };
            self.core.out.push_back(error);
            self.fail(Failure::Local(why));
        }
    }

    /// The parent, once it answered.
    pub fn parent(&self) -> Option<&Hello> {
        self.parent.as_ref()
    }

    /// The configuration, once it arrived.
    pub fn spec(&self) -> Option<&SpawnSpec> {
        self.spec.as_ref()
    }
}

impl Handshake for Child {
    fn poll_send(&mut self) -> Option<Msg> {
        self.core.out.pop_front()
    }

    fn on_msg(&mut self, now: Instant, msg: Msg) {
        let expected = match self.state {
            ChildState::AwaitChallenge => MsgKind::Challenge,
            ChildState::AwaitAuthOk => MsgKind::AuthOk,
            ChildState::AwaitAid => MsgKind::Aid,
            ChildState::AwaitSpec => MsgKind::SpawnSpec,
            _ => return,
        };
        if self.core.timed_out(now) {
            self.state = ChildState::Failed;
            return;
        }
        match (self.state, msg) {
            (ChildState::AwaitChallenge, Msg::Challenge { nonce }) => {
                // (This state is only entered with a secret.)
                let answer = match self.auth.as_mut() {
                    Some(a) => a.answer(nonce),
                    None => Err(Failure::Unexpected { expected, got: MsgKind::Challenge }),
                };
                match answer {
                    Ok(m) => self.core.out.push_back(m),
                    Err(f) => return self.fail(f),
                }
                self.state = ChildState::AwaitAuthOk;
                self.core.wait_more(MsgKind::AuthOk);
            }
            (ChildState::AwaitAuthOk, Msg::AuthOk { mac: proof }) => {
                // The parent proves it knows the secret too, so the child
                // never serves a port squatter that answered at its
                // parent's address.
                let checked = match &self.auth {
                    Some(a) => a.check(&proof),
                    None => Err(Failure::Unexpected { expected, got: MsgKind::AuthOk }),
                };
                if let Err(f) = checked {
                    return self.fail(f);
                }
                if let Some(aid) = self.me.take() {
                    self.core.out.push_back(aid);
                }
                self.state = ChildState::AwaitAid;
                // One deadline for the whole start (`timeout` is the
                // parent's spawn bound, not a per-step one).
                self.core.wait_more(MsgKind::Aid);
            }
            (ChildState::AwaitAid, msg @ Msg::Aid { .. }) => {
                let Some((hello, proto)) = Hello::of(msg) else { return };
                if let Err(f) = check_version(proto) {
                    return self.fail(f);
                }
                // The process answering at the parent's address must be the
                // one that spawned us (its pid came with the spawn).
                if hello.aid.pid != self.parent_pid {
                    let why = format!("it says it is {}, and its pid is not {}", hello.aid, self.parent_pid);
                    return self.fail(Failure::Identity(why));
                }
                self.parent = Some(hello);
                self.state = ChildState::Verify;
            }
            (ChildState::AwaitSpec, Msg::SpawnSpec { spec }) => {
                self.spec = Some(spec);
                self.core.deadline = None;
                self.state = ChildState::Configure;
            }
            (_, other) => {
                self.state = ChildState::Failed;
                self.core.unexpected(expected, other);
            }
        }
    }

    fn on_closed(&mut self, detail: Option<String>) {
        match self.state {
            // Our proof was refused: the parent hangs up on a wrong one.
            ChildState::AwaitAuthOk => self.fail(Failure::ProofRefused),
            ChildState::AwaitChallenge | ChildState::AwaitAid | ChildState::AwaitSpec => {
                let waiting_for = self.core.waiting_for();
                self.fail(Failure::Closed { waiting_for, detail });
            }
            _ => {}
        }
    }

    fn on_unreadable(&mut self, reason: String) {
        match self.state {
            ChildState::AwaitAuthOk => self.fail(Failure::ProofRefused),
            ChildState::AwaitChallenge | ChildState::AwaitAid | ChildState::AwaitSpec => {
                let waiting_for = self.core.waiting_for();
                self.fail(Failure::Unreadable { waiting_for, reason });
            }
            _ => {}
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        if self.waiting() && self.core.timed_out(now) {
            self.state = ChildState::Failed;
        }
    }

    fn deadline(&self) -> Option<Instant> {
        if self.waiting() { self.core.deadline.map(|(at, _, _)| at) } else { None }
    }

    /// The default frame limit throughout: the child's own comes with its
    /// `SpawnSpec` (which may carry a secret of a few KiB, more than a
    /// pre-authentication frame), and its parent is trusted (UDS, same
    /// uid, the pid it was told). Over TCP, small frames until the parent
    /// proved it knows the secret.
    fn read_limit(&self) -> usize {
        match self.state {
            ChildState::AwaitChallenge | ChildState::AwaitAuthOk => PRE_AUTH_MAX_FRAME,
            _ => DEFAULT_MAX_FRAME,
        }
    }

    fn status(&self) -> Status<'_> {
        match (self.state, &self.core.failed, &self.parent, &self.spec) {
            (_, Some(f), _, _) => Status::Failed(f),
            (ChildState::Verify, _, Some(p), _) => Status::Verify(p),
            (ChildState::Configure, _, _, Some(s)) => Status::Configure(s),
            (ChildState::Done, _, _, _) => Status::Done,
            _ => Status::Waiting,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParentState {
    AwaitChild,
    AwaitReady,
    Done,
    Failed,
}

/// What a parent does with the child it spawned: wait for the connection
/// that presents the child's spawn token (the [`Acceptor`] has answered
/// it already), keep it only if it comes from the process it spawned,
/// send the child's `SpawnSpec`, and wait for `Ready`. All of it within
/// the spawn's one deadline.
#[derive(Debug)]
pub struct Parent {
    core: Core,
    state: ParentState,
    /// The child as spawned: its name, the uuid it was given, its pid.
    child: Aid,
    spec: Option<SpawnSpec>,
    max_frame: usize,
    addrs: Option<Vec<Addr>>,
    /// Started through a launcher: the pid is the child's word.
    remote: bool,
}

impl Parent {
    /// A spawn of `child` (its pid is the process's), which is to receive
    /// `spec`, started at `now` with `timeout` for all of it.
    pub fn new(child: Aid, spec: SpawnSpec, timeout: Duration, max_frame: usize, now: Instant) -> Parent {
        let mut p = Parent {
            core: Core::default(),
            state: ParentState::AwaitChild,
            child,
            spec: Some(spec),
            max_frame,
            addrs: None,
            remote: false,
        };
        p.core.wait(now, MsgKind::Aid, timeout);
        p
    }

    /// A child started through a launcher (ssh, a command prefix): the
    /// process the parent started is the launcher, not the child, and the
    /// connection comes over TCP, where the kernel says nothing of its
    /// pid. What ties the connection to this spawn is the token, which
    /// only the child was given (over its stdin), presented after the TCP
    /// authentication; the pid in its `Aid` is taken as the child's own
    /// (`child.pid` is ignored). The uuid must still be the one given.
    pub fn remote(mut self) -> Parent {
        self.remote = true;
        self
    }

    /// The child's identity as it connected: its pid is its own (for a
    /// remote child, the one it reported), once connected.
    pub fn child(&self) -> &Aid {
        &self.child
    }

    /// A connection presented the child's spawn token, claiming `hello`,
    /// from the process `peer_pid` (`SO_PEERCRED`). `Err(why)`: not the
    /// process spawned with the token (anyone of our uid can read it in
    /// its environment): refuse that connection and go on waiting. `Ok`:
    /// this connection is the child's; its `SpawnSpec` goes out (or the
    /// handshake failed: it claims another uuid than it was given).
    pub fn connected(&mut self, hello: &Hello, peer_pid: Option<u32>) -> Result<(), String> {
        if self.state != ParentState::AwaitChild {
            return Err("the child is connected already".into());
        }
        if !self.remote && (peer_pid != Some(self.child.pid) || hello.aid.pid != self.child.pid) {
            return Err("only the process spawned with a token may use it".into());
        }
        if hello.aid.uuid != self.child.uuid {
            let why = format!("child presented uuid {} instead of {}", hello.aid.uuid, self.child.uuid);
            self.state = ParentState::Failed;
            self.core.fail(Failure::Identity(why));
            return Ok(());
        }
        if self.remote {
            self.child.pid = hello.aid.pid;
        }
        if let Some(spec) = self.spec.take() {
            self.core.out.push_back(Msg::SpawnSpec { spec });
        }
        self.state = ParentState::AwaitReady;
        self.core.wait_more(MsgKind::Ready);
        Ok(())
    }

    /// Whether the child's connection was accepted (and the spec sent).
    pub fn is_connected(&self) -> bool {
        !matches!(self.state, ParentState::AwaitChild)
    }

    /// The addresses the child serves on, once `Ready`.
    pub fn addrs(&self) -> Option<&[Addr]> {
        self.addrs.as_deref()
    }

    fn fail(&mut self, f: Failure) {
        self.state = ParentState::Failed;
        self.core.fail(f);
    }
}

impl Handshake for Parent {
    fn poll_send(&mut self) -> Option<Msg> {
        self.core.out.pop_front()
    }

    fn on_msg(&mut self, now: Instant, msg: Msg) {
        if self.state != ParentState::AwaitReady {
            return;
        }
        if self.core.timed_out(now) {
            self.state = ParentState::Failed;
            return;
        }
        match msg {
            Msg::Ready { addrs } => {
                self.addrs = Some(addrs);
                self.core.deadline = None;
                self.state = ParentState::Done;
            }
            other => {
                self.state = ParentState::Failed;
                self.core.unexpected(MsgKind::Ready, other);
            }
        }
    }

    fn on_closed(&mut self, detail: Option<String>) {
        if self.state == ParentState::AwaitReady {
            self.fail(Failure::Closed { waiting_for: MsgKind::Ready, detail });
        }
    }

    fn on_unreadable(&mut self, reason: String) {
        if self.state == ParentState::AwaitReady {
            self.fail(Failure::Unreadable { waiting_for: MsgKind::Ready, reason });
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        if matches!(self.state, ParentState::AwaitChild | ParentState::AwaitReady) && self.core.timed_out(now) {
            self.state = ParentState::Failed;
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self.state {
            ParentState::AwaitChild | ParentState::AwaitReady => self.core.deadline.map(|(at, _, _)| at),
            _ => None,
        }
    }

    fn read_limit(&self) -> usize {
        self.max_frame
    }

    fn status(&self) -> Status<'_> {
        match (self.state, &self.core.failed) {
            (_, Some(f)) => Status::Failed(f),
            (ParentState::Done, _) => Status::Done,
            _ => Status::Waiting,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_depend_on_secret_nonces_and_role() {
        let s = Secret(b"k".to_vec());
        let p = |s: &Secret, l, a: &[u8], b: &[u8]| mac(s, l, a, b).finalize().into_bytes().to_vec();
        let base = p(&s, DIALLER_LABEL, b"a", b"b");
        assert_ne!(base, p(&Secret(b"j".to_vec()), DIALLER_LABEL, b"a", b"b"));
        assert_ne!(base, p(&s, ACCEPTOR_LABEL, b"a", b"b"), "a proof cannot be reflected");
        assert_ne!(base, p(&s, DIALLER_LABEL, b"b", b"a"));
        assert!(mac(&s, DIALLER_LABEL, b"a", b"b").verify_slice(&base).is_ok());
    }
}
