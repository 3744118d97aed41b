//! Turning a remote function's error into data for the wire.
//!
//! The generated handler picks the richest conversion the error type
//! supports, most specific first (autoref specialisation, resolved at
//! compile time in the user's crate):
//!
//! 1. `furrow::Error`: a remote error passing through is *relayed* (its
//!    source, type and relay path are kept, this actor is appended);
//! 2. `Serialize + std::error::Error`: type name, message, source chain and
//!    the value itself (for `downcast` at the caller);
//! 3. `std::error::Error`: type name, message and source chain;
//! 4. error reports that show their chain as a `dyn Error` (`anyhow::Error`,
//!    `eyre::Report`, `Box<dyn Error + Send + Sync>`): message, and the
//!    `Debug` text as trace;
//! 5. `Display + Debug`: message, and the `Debug` text as trace.
//!
//! Whatever the tier, a failure whose cause chain holds furrow's own
//! `ContextCancelled` or `ActorCancelled` is marked as *the cancellation*
//! ([`Failure::cancellation`]): a task that lets a cancelled `send` or
//! `recv` propagate through `?` into its own error type is reporting its
//! cancellation, not failing (docs/guide.md, rule 4's arbiter needs to know).
//! (Found by the chaos runner, `inter_actor_cancels`: a callee returning
//! `anyhow::Result` was reported as failed with "context cancelled by X",
//! and the opener X that had cancelled it got that error instead of
//! `Outcome::Cancelled`.)

use crate::{Error, ErrorKind, RemoteActorError};
use furrow_proto::{Aid, ErrorMsg, Payload};
use std::fmt::{Debug, Display};

/// Deepest nesting of `errors` an actor sends (a `Multiple` inside a
/// `Multiple` …). A receiver's envelope cap (64 msgpack levels, 30
/// of these) must never refuse the frame: a refused `Error` would leave
/// its dialog without an outcome.
const MAX_ERROR_NESTING: usize = 8;

/// A remote function's failure on the callee's side, before the runtime
/// stamps it with the actor's identity (`Failure::into_msg`).
///
/// Only the callee builds one: what it adds to the wire's [`ErrorMsg`] is
/// what the callee knows and the wire does not carry (whether the failure
/// is this task's cancellation; where a relayed error came from before
/// this actor is appended). The caller never sees it: an `ErrorMsg`
/// becomes a [`RemoteActorError`] (or a cancellation, or a `Multiple`) in
/// one place, `error::error_from_msg`.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Its kind (a user error's type name, or one of furrow's).
    pub(crate) kind: ErrorKind,
    /// Its message.
    pub(crate) message: String,
    /// Chain or backtrace text.
    pub(crate) trace: String,
    /// The value, for typed recovery.
    pub(crate) payload: Option<Payload>,
    /// Set when a remote error is passed on: where it was raised and the
    /// actors it crossed, kept as they were.
    pub(crate) relayed_from: Option<(Aid, Vec<Aid>)>,
    /// For a cancellation: who asked for it.
    pub(crate) canceller: Option<Aid>,
    /// The error is (caused by) this task's cancellation.
    pub(crate) cancellation: bool,
    /// For an `Error::Multiple`: each of its errors (relayed ones keep
    /// their origin), sent as the message's `errors`.
    pub(crate) errors: Vec<Failure>,
}

impl Failure {
    /// A failure of kind `kind` raised here, with no trace or value
    /// (`MsgTypeError`, `FunctionNotFound` … of the runtime).
    pub(crate) fn runtime(kind: ErrorKind, message: impl Into<String>) -> Failure {
        Failure {
            cancellation: kind.is_cancellation(),
            kind,
            message: message.into(),
            trace: String::new(),
            payload: None,
            relayed_from: None,
            canceller: None,
            errors: Vec::new(),
        }
    }

    /// A user error of type `E` raised here: its kind is `E`'s type name.
    fn of_type<E: ?Sized>(message: String, trace: String) -> Failure {
        Failure { trace, ..Failure::runtime(ErrorKind::from(std::any::type_name::<E>()), message) }
    }

    /// The remote error `r`, passed on: everything of it is kept.
    fn relay(r: &RemoteActorError) -> Failure {
        Failure {
            kind: r.kind().clone(),
            message: r.message.clone(),
            trace: r.backtrace.clone(),
            payload: r.payload.clone(),
            relayed_from: Some((r.src.clone(), r.relay_path.clone())),
            canceller: r.canceller.clone(),
            // A cancellation relayed from further down is one too.
            cancellation: r.kind().is_cancellation(),
            errors: Vec::new(),
        }
    }

    /// The wire form of this failure, sent by actor `here`: raised here
    /// (`here` is its source), or relayed (`here` is appended to its
    /// path); and so for each error it stands for. Beyond
    /// [`MAX_ERROR_NESTING`] levels of `errors`, the errors travel as the
    /// message text only, so the frame stays well inside the receiver's
    /// nesting cap.
    pub(crate) fn into_msg(self, here: &Aid) -> ErrorMsg {
        self.into_msg_at(here, 0)
    }

    fn into_msg_at(self, here: &Aid, depth: usize) -> ErrorMsg {
        let (src_uid, mut relay_path) = self.relayed_from.unwrap_or_else(|| (here.clone(), Vec::new()));
        relay_path.push(here.clone());
        let errors = if depth < MAX_ERROR_NESTING {
            self.errors.into_iter().map(|e| e.into_msg_at(here, depth + 1)).collect()
        } else {
            Vec::new()
        };
        ErrorMsg {
            cid: None,
            src_uid,
            boxed_type_str: self.kind,
            message: self.message,
            tb_str: self.trace,
            relay_path,
            canceller: self.canceller,
            pld: self.payload,
            errors,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        failure_of(&e)
    }
}

/// Whether `e` or one of its causes is furrow's cancellation.
fn caused_by_cancellation(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if matches!(err.downcast_ref::<Error>(), Some(Error::ContextCancelled { .. } | Error::ActorCancelled { .. })) {
            return true;
        }
        cur = err.source();
    }
    false
}

fn failure_of(e: &Error) -> Failure {
    let f = failure_fields(e);
    Failure { cancellation: f.cancellation || caused_by_cancellation(e), ..f }
}

fn failure_fields(e: &Error) -> Failure {
    match e {
        Error::Remote(r) => Failure::relay(r),
        // Each error keeps its own origin (docs/design.md, "Remote functions"); the
        // message text still lists them all, for a peer that ignores
        // `errors`.
        Error::Multiple(v) => {
            Failure { errors: v.iter().map(failure_of).collect(), ..Failure::runtime(e.kind(), e.to_string()) }
        }
        Error::ContextCancelled { canceller, message } => {
            Failure { canceller: Some(canceller.clone()), ..Failure::runtime(e.kind(), message.clone()) }
        }
        other => Failure { trace: chain(other), ..Failure::runtime(other.kind(), other.to_string()) },
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str("caused by: ");
        out.push_str(&s.to_string());
        out.push('\n');
        cur = s.source();
    }
    out
}

/// Borrowed error under conversion (see the module docs).
#[derive(Debug)]
pub struct Wrap<'a, E>(pub &'a E);

/// Tier 1: `furrow::Error`.
pub trait ViaFurrow {
    /// Convert.
    fn __furrow_failure(&self) -> Failure;
}
impl ViaFurrow for &&&&Wrap<'_, Error> {
    fn __furrow_failure(&self) -> Failure {
        failure_of(self.0)
    }
}

/// Tier 2: serde error types.
pub trait ViaSerdeError {
    /// Convert.
    fn __furrow_failure(&self) -> Failure;
}
impl<E: serde::Serialize + std::error::Error + 'static> ViaSerdeError for &&&Wrap<'_, E> {
    fn __furrow_failure(&self) -> Failure {
        Failure {
            payload: Payload::encode(self.0).ok(),
            cancellation: caused_by_cancellation(self.0),
            ..Failure::of_type::<E>(self.0.to_string(), chain(self.0))
        }
    }
}

/// Tier 3: `std::error::Error` types.
pub trait ViaError {
    /// Convert.
    fn __furrow_failure(&self) -> Failure;
}
impl<E: std::error::Error + 'static> ViaError for &&Wrap<'_, E> {
    fn __furrow_failure(&self) -> Failure {
        Failure {
            cancellation: caused_by_cancellation(self.0),
            ..Failure::of_type::<E>(self.0.to_string(), chain(self.0))
        }
    }
}

/// Tier 4: error reports (`anyhow::Error` and the like).
pub trait ViaReport {
    /// Convert.
    fn __furrow_failure(&self) -> Failure;
}
impl<E: AsRef<dyn std::error::Error + Send + Sync + 'static> + Display + Debug> ViaReport for &Wrap<'_, E> {
    fn __furrow_failure(&self) -> Failure {
        if caused_by_cancellation(self.0.as_ref()) {
            // The task's cancellation: reported as such (the caller sees
            // who cancelled, never this text), so no trace. A report's
            // `Debug` resolves the backtrace it captured (with
            // `RUST_BACKTRACE=1`): in a debug build that took the actor's
            // only thread for half a second, and the cancel's
            // acknowledgement, queued before, waited behind it. (Found with
            // a dump: `chaos_found::a_callee_propagating_its_cancel_through_
            // anyhow_is_cancelled_not_failed`, 1 run in 3 with a core busy;
            // the ticker's last read and last write 0.5 s apart, and strace
            // showing it reading /proc/self/maps, then silent.)
            return Failure { cancellation: true, ..Failure::of_type::<E>(self.0.to_string(), String::new()) };
        }
        display_failure(self.0)
    }
}

/// Tier 5: anything `Display + Debug`.
pub trait ViaDisplay {
    /// Convert.
    fn __furrow_failure(&self) -> Failure;
}
impl<E: Display + Debug> ViaDisplay for Wrap<'_, E> {
    fn __furrow_failure(&self) -> Failure {
        display_failure(self.0)
    }
}

fn display_failure<E: Display + Debug>(e: &E) -> Failure {
    let debug = format!("{e:?}");
    let message = e.to_string();
    let trace = if debug == message { String::new() } else { debug };
    Failure::of_type::<E>(message, trace)
}
