//! The per-dialog state machine, for both ends, with no I/O.
//!
//! A dialog is what one `Start` opens. Its legal shapes are
//!
//! ```text
//! asyncfunc: Start → StartAck → (Return | Error)
//! cancel:    Start → [StartAck] → CancelAck          (a runtime request)
//! context:   Start → StartAck → Started → (Yield | Stop | Credit)* → (Return | Error)
//! ```
//!
//! and an `Error` may end it at any point after `Start` (an unknown
//! function is refused before any `StartAck`). The runtime feeds every
//! message it sends or receives for a dialog through [`Dialog::on_send`] /
//! [`Dialog::on_recv`]; a message that does not fit is a [`Violation`]
//! (answered with an `Error` naming it), and stream traffic that arrives
//! after the outcome is [`Verdict::Drop`]ped by design (the far side sent it
//! before it learned the dialog was over).
//!
//! ```
//! use furrow_proto::dialog::{Dialog, Role, State, Verdict};
//! use furrow_proto::{FuncType, MsgKind};
//!
//! // The callee's view of a context whose opener stops the stream early.
//! let mut d = Dialog::new(Role::Callee);
//! d.on_recv(MsgKind::Start).unwrap();
//! d.on_send(MsgKind::StartAck).unwrap();
//! d.set_functype(FuncType::Context);
//! d.on_send(MsgKind::Started).unwrap();
//! d.on_recv(MsgKind::Credit).unwrap();
//! d.on_send(MsgKind::Yield).unwrap();
//! d.on_recv(MsgKind::Stop).unwrap();
//! assert_eq!(d.state(), State::Open { opener_stopped: true, callee_stopped: false });
//! d.on_send(MsgKind::Return).unwrap();
//! assert!(d.is_done());
//! // Credit the opener sent before it saw the `Return`: dropped, not an error.
//! assert_eq!(d.on_recv(MsgKind::Credit).unwrap(), Verdict::Drop);
//! ```

use crate::{FuncType, MsgKind};

/// Which end of the dialog this state machine tracks.
///
/// ```
/// use furrow_proto::dialog::{Dialog, Role};
/// use furrow_proto::MsgKind;
/// // Only an opener sends `Start`.
/// assert!(Dialog::new(Role::Opener).on_send(MsgKind::Start).is_ok());
/// assert!(Dialog::new(Role::Callee).on_send(MsgKind::Start).is_err());
/// assert_eq!(Dialog::new(Role::Callee).role(), Role::Callee);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The side that sent `Start`.
    Opener,
    /// The side that runs the function.
    Callee,
}

/// Where a dialog is.
///
/// ```
/// use furrow_proto::dialog::{Dialog, Role, State};
/// use furrow_proto::{FuncType, MsgKind};
/// let mut d = Dialog::new(Role::Opener);
/// assert_eq!(d.state(), State::Idle);
/// d.on_send(MsgKind::Start).unwrap();
/// assert_eq!(d.state(), State::Starting);
/// d.on_recv(MsgKind::StartAck).unwrap();
/// d.set_functype(FuncType::Context);
/// assert_eq!(d.state(), State::Running(FuncType::Context));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Nothing exchanged yet.
    Idle,
    /// `Start` exchanged, no `StartAck` yet.
    Starting,
    /// `StartAck` exchanged; for a context, `Started` not yet.
    Running(FuncType),
    /// Context after `Started`: stream traffic allowed. The flags record
    /// whether each direction sent `Stop`.
    Open {
        /// The opener sent `Stop`.
        opener_stopped: bool,
        /// The callee sent `Stop`.
        callee_stopped: bool,
    },
    /// The outcome (`Return` or `Error`) has been exchanged.
    Done,
}

/// What to do with a message that fits the dialog.
///
/// ```
/// use furrow_proto::dialog::{Dialog, Role, Verdict};
/// use furrow_proto::MsgKind;
/// # let mut dialog = Dialog::new(Role::Callee);
/// # let deliver = |_k: MsgKind| {};
/// # let kind = MsgKind::Start;
/// match dialog.on_recv(kind) {
///     Ok(Verdict::Accept) => deliver(kind),
///     Ok(Verdict::Drop) => {} // late stream traffic after the outcome
///     Err(violation) => eprintln!("protocol error: {violation}"),
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver / send it.
    Accept,
    /// Late stream traffic after the outcome: drop it silently.
    Drop,
}

/// A message that does not fit the dialog's state.
///
/// ```
/// use furrow_proto::dialog::{Dialog, Role, State};
/// use furrow_proto::MsgKind;
/// let mut d = Dialog::new(Role::Opener);
/// d.on_send(MsgKind::Start).unwrap();
/// // A `Yield` before the context was even acknowledged.
/// let v = d.on_recv(MsgKind::Yield).unwrap_err();
/// assert_eq!((v.kind, v.dir, v.role, v.state), (MsgKind::Yield, "received", Role::Opener, State::Starting));
/// assert_eq!(v.to_string(), "Yield received by the Opener is out of order in state Starting");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?} {dir} by the {role:?} is out of order in state {state:?}")]
pub struct Violation {
    /// The offending message.
    pub kind: MsgKind,
    /// "sent" or "received".
    pub dir: &'static str,
    /// The role of the side checking.
    pub role: Role,
    /// The state it was in.
    pub state: State,
}

/// One dialog's state, as seen from one end.
///
/// ```
/// use furrow_proto::dialog::{Dialog, Role, State, Verdict};
/// use furrow_proto::{FuncType, MsgKind};
/// let mut d = Dialog::new(Role::Opener);
/// d.on_send(MsgKind::Start).unwrap();
/// d.on_recv(MsgKind::StartAck).unwrap();
/// d.set_functype(FuncType::Asyncfunc);
/// assert_eq!(d.on_recv(MsgKind::Return).unwrap(), Verdict::Accept);
/// assert_eq!(d.role(), Role::Opener);
/// assert!(d.is_done());
/// assert_eq!(d.state(), State::Done);
/// assert!(d.on_recv(MsgKind::Return).is_err());
/// ```
#[derive(Clone, Debug)]
pub struct Dialog {
    role: Role,
    state: State,
}

impl Dialog {
    /// A dialog that has not started.
    pub fn new(role: Role) -> Self {
        Dialog { role, state: State::Idle }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Which end this state machine tracks.
    pub fn role(&self) -> Role {
        self.role
    }

    /// True once the outcome has been exchanged.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Record the function type announced by `StartAck` (call right after
    /// the `StartAck` was accepted).
    pub fn set_functype(&mut self, ft: FuncType) {
        // Only right after StartAck: in `Starting` this would skip the
        // StartAck (and then refuse it when it comes).
        if self.state == State::Running(FuncType::Asyncfunc) {
            self.state = State::Running(ft);
        }
    }

    /// Check a message this end is about to send.
    pub fn on_send(&mut self, kind: MsgKind) -> Result<Verdict, Violation> {
        let from_opener = self.role == Role::Opener;
        self.step(kind, from_opener, "sent")
    }

    /// Whether a message of `kind` received now would be accepted and leave
    /// the state as it is (as a `Yield` on an open stream does): the
    /// dialog is not changed.
    ///
    /// ```
    /// use furrow_proto::dialog::{Dialog, Role};
    /// use furrow_proto::{FuncType, MsgKind};
    /// let mut d = Dialog::new(Role::Opener);
    /// d.on_send(MsgKind::Start).unwrap();
    /// assert!(!d.accepts_recv(MsgKind::Yield));
    /// d.on_recv(MsgKind::StartAck).unwrap();
    /// d.set_functype(FuncType::Context);
    /// d.on_recv(MsgKind::Started).unwrap();
    /// assert!(d.accepts_recv(MsgKind::Yield));
    /// ```
    pub fn accepts_recv(&self, kind: MsgKind) -> bool {
        let mut probe = self.clone();
        matches!(probe.on_recv(kind), Ok(Verdict::Accept)) && probe.state == self.state
    }

    /// Check a message this end received.
    pub fn on_recv(&mut self, kind: MsgKind) -> Result<Verdict, Violation> {
        let from_opener = self.role == Role::Callee;
        self.step(kind, from_opener, "received")
    }

    fn step(&mut self, kind: MsgKind, from_opener: bool, dir: &'static str) -> Result<Verdict, Violation> {
        use MsgKind as K;
        use State as S;
        let bad = |state| Violation { kind, dir, role: self.role, state };
        let next = match (self.state, kind, from_opener) {
            (S::Idle, K::Start, true) => S::Starting,
            // StartAck carries the type; default to asyncfunc until told.
            (S::Starting, K::StartAck, false) => S::Running(FuncType::Asyncfunc),
            (S::Running(FuncType::Context), K::Started, false) => {
                S::Open { opener_stopped: false, callee_stopped: false }
            }
            // The outcome comes from the callee, at any point after Start.
            (S::Starting | S::Running(_) | S::Open { .. }, K::Return | K::Error, false) => {
                if kind == K::Return && matches!(self.state, S::Starting) {
                    return Err(bad(self.state));
                }
                S::Done
            }
            // A cancel request (a runtime `Start`) is answered by `CancelAck`
            // on its own cid, which ends that dialog.
            (S::Starting | S::Running(FuncType::Asyncfunc), K::CancelAck, false) => S::Done,
            // The opener may abort with an Error of its own (it is being torn down).
            (S::Starting | S::Running(_) | S::Open { .. }, K::Error, true) => S::Done,
            (S::Open { opener_stopped, callee_stopped }, K::Yield | K::Yields, _) => {
                let stopped = if from_opener { opener_stopped } else { callee_stopped };
                if stopped {
                    return Err(bad(self.state));
                }
                self.state
            }
            (S::Open { callee_stopped, .. }, K::Stop, true) => S::Open { opener_stopped: true, callee_stopped },
            (S::Open { opener_stopped, .. }, K::Stop, false) => S::Open { opener_stopped, callee_stopped: true },
            (S::Open { .. }, K::Credit, _) => self.state,
            // Late stream traffic: the peer sent it before it saw the outcome.
            (S::Done, K::Yield | K::Yields | K::Stop | K::Credit | K::Started, _) => return Ok(Verdict::Drop),
            (state, _, _) => return Err(bad(state)),
        };
        self.state = next;
        Ok(Verdict::Accept)
    }
}

/// How a served task finished.
///
/// ```
/// use furrow_proto::dialog::{Arbiter, Completion, Decision};
/// // A context callee that, once cancelled, fails with an error of its own
/// // within its grace period: the error is reported, not masked.
/// let mut a = Arbiter::new(true);
/// a.on_cancel();
/// let d = a.on_completion(Completion::Failed { cancellation: false });
/// assert_eq!(d, Some(Decision::Completed));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// It returned a value.
    Returned,
    /// It returned an error; `cancellation` when that error is itself the
    /// cancellation (e.g. a `send` that failed because the task was
    /// cancelled).
    Failed {
        /// The error is a `ContextCancelled`.
        cancellation: bool,
    },
    /// It panicked.
    Panicked,
}

/// What a served task reports as its one outcome.
///
/// ```
/// use furrow_proto::dialog::{Arbiter, Completion, Decision};
/// // A plain call has no grace period: a cancel decides at once.
/// let mut a = Arbiter::new(false);
/// assert_eq!(a.on_cancel(), Some(Decision::Cancelled));
/// assert_eq!(a.on_completion(Completion::Returned), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Report the task's own result (`Return`, or its `Error`).
    Completed,
    /// Report `Error { ContextCancelled, canceller }`.
    Cancelled,
}

/// Decides the single outcome of a served task when a cancel request and
/// the task's own completion race (docs/guide.md, rule 4: a cancel and a
/// completion of the same context can never both be delivered, nor
/// neither).
///
/// - A completion before any cancel is reported as is.
/// - A cancel starts the grace period (none for plain calls): a task that
///   then *fails with an error of its own* or panics is reported as such
///   (never masked by the cancellation); one that returns, or fails with
///   the cancellation itself, is reported as cancelled; when the grace
///   period ends first, it is cancelled.
/// - After the decision every further event is ignored.
///
/// ```
/// use furrow_proto::dialog::{Arbiter, Completion, Decision};
/// let mut a = Arbiter::new(true);
/// assert_eq!(a.on_cancel(), None);                       // grace period starts
/// assert_eq!(a.on_completion(Completion::Returned), Some(Decision::Cancelled));
/// assert_eq!(a.decision(), Some(Decision::Cancelled));
/// assert_eq!(a.on_grace_expired(), None);                // already decided
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arbiter {
    grace: bool,
    state: ArbState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ArbState {
    Running,
    Cancelling,
    Decided(Decision),
}

impl Arbiter {
    /// A running task; `grace` says whether a cancel gives it a grace
    /// period (contexts) or ends it at once (plain calls).
    pub fn new(grace: bool) -> Self {
        Arbiter { grace, state: ArbState::Running }
    }

    /// The decision, once made.
    pub fn decision(&self) -> Option<Decision> {
        match self.state {
            ArbState::Decided(d) => Some(d),
            _ => None,
        }
    }

    fn decide(&mut self, d: Decision) -> Option<Decision> {
        self.state = ArbState::Decided(d);
        Some(d)
    }

    /// The task finished.
    pub fn on_completion(&mut self, c: Completion) -> Option<Decision> {
        match self.state {
            ArbState::Running => self.decide(Decision::Completed),
            ArbState::Cancelling => match c {
                Completion::Failed { cancellation: false } | Completion::Panicked => self.decide(Decision::Completed),
                Completion::Returned | Completion::Failed { cancellation: true } => self.decide(Decision::Cancelled),
            },
            ArbState::Decided(_) => None,
        }
    }

    /// A cancel request arrived (a second one changes nothing).
    pub fn on_cancel(&mut self) -> Option<Decision> {
        match self.state {
            ArbState::Running if self.grace => {
                self.state = ArbState::Cancelling;
                None
            }
            ArbState::Running => self.decide(Decision::Cancelled),
            _ => None,
        }
    }

    /// The grace period after a cancel ran out.
    pub fn on_grace_expired(&mut self) -> Option<Decision> {
        match self.state {
            ArbState::Cancelling => self.decide(Decision::Cancelled),
            _ => None,
        }
    }
}
