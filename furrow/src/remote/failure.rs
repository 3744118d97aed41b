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

use crate::{Error, RemoteActorError};
use furrow_proto::Payload;
use std::fmt::{Debug, Display};

/// A remote function's failure, before the runtime stamps it with the
/// actor's identity.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Type name of the error.
    pub boxed_type: String,
    /// Its message.
    pub message: String,
    /// Chain or backtrace text.
    pub trace: String,
    /// The value, for typed recovery.
    pub payload: Option<Payload>,
    /// Set when a remote error is passed on: keep its origin.
    pub relayed: Option<Box<RemoteActorError>>,
    /// For a cancellation: who asked for it.
    pub canceller: Option<furrow_proto::Aid>,
    /// The error is (caused by) this task's cancellation.
    pub cancellation: bool,
    /// For an `Error::Multiple`: each of its errors (relayed ones keep
    /// their origin), sent as the message's `errors`.
    pub errors: Vec<Failure>,
}

impl Failure {
    /// A failure of the runtime itself (`MsgTypeError`, `FunctionNotFound` …).
    pub fn runtime(kind: &str, message: impl Into<String>) -> Failure {
        Failure {
            boxed_type: kind.into(),
            message: message.into(),
            trace: String::new(),
            payload: None,
            relayed: None,
            canceller: None,
            cancellation: is_cancellation_kind(kind),
            errors: Vec::new(),
        }
    }
}

/// The wire kind of [`Error::FrameTooLarge`], and of the error a callee
/// answers with when its own answer is over the frame limit.
pub(crate) const FRAME_TOO_LARGE: &str = "FrameTooLarge";

/// Whether an error of kind `kind` (furrow's names, as on the wire) is a
/// cancellation.
fn is_cancellation_kind(kind: &str) -> bool {
    kind == "ContextCancelled" || kind == "ActorCancelled"
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        failure_of(&e)
    }
}

/// Kind name of one of furrow's own errors, as it appears at the caller.
fn kind_name(e: &Error) -> &'static str {
    match e {
        Error::Remote(_) => "RemoteActorError",
        Error::MsgType(_) => "MsgTypeError",
        Error::TransportClosed { .. } => "TransportClosed",
        Error::Spawn { .. } => "SpawnError",
        Error::Protocol { .. } => "ProtocolError",
        Error::FrameTooLarge { .. } => FRAME_TOO_LARGE,
        Error::Timeout { .. } => "Timeout",
        Error::Usage(_) => "UsageError",
        Error::Io { .. } => "IoError",
        Error::ContextCancelled { .. } => "ContextCancelled",
        Error::ActorExited { .. } => "ActorExited",
        Error::ActorCancelled { .. } => "ActorCancelled",
        Error::Multiple(_) => crate::error::MULTIPLE_KIND,
        Error::Task { .. } => "PoolTaskError",
        Error::StreamOverrun { .. } => "StreamOverrun",
        Error::Closed(_) => "Closed",
        Error::Auth { .. } => "AuthError",
        Error::Registry { .. } => "RegistryError",
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
        Error::Remote(r) => Failure {
            boxed_type: r.boxed_type.clone(),
            message: r.message.clone(),
            trace: r.backtrace.clone(),
            payload: r.payload.clone(),
            canceller: r.canceller.clone(),
            relayed: Some(r.clone()),
            // A cancellation relayed from further down is one too.
            cancellation: is_cancellation_kind(&r.boxed_type),
            errors: Vec::new(),
        },
        // Each error keeps its own origin (docs/design.md, "Remote functions"); the
        // message text still lists them all, for a peer that ignores
        // `errors`.
        Error::Multiple(v) => {
            Failure { errors: v.iter().map(failure_of).collect(), ..Failure::runtime(kind_name(e), e.to_string()) }
        }
        Error::ContextCancelled { canceller, message } => {
            Failure { canceller: Some(canceller.clone()), ..Failure::runtime("ContextCancelled", message.clone()) }
        }
        other => {
            let trace = chain(other);
            Failure { trace, ..Failure::runtime(kind_name(other), other.to_string()) }
        }
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
            boxed_type: std::any::type_name::<E>().into(),
            message: self.0.to_string(),
            trace: chain(self.0),
            payload: Payload::encode(self.0).ok(),
            relayed: None,
            canceller: None,
            cancellation: caused_by_cancellation(self.0),
            errors: Vec::new(),
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
            boxed_type: std::any::type_name::<E>().into(),
            message: self.0.to_string(),
            trace: chain(self.0),
            payload: None,
            relayed: None,
            canceller: None,
            cancellation: caused_by_cancellation(self.0),
            errors: Vec::new(),
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
        Failure { cancellation: caused_by_cancellation(self.0.as_ref()), ..display_failure(self.0) }
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
    Failure {
        boxed_type: std::any::type_name::<E>().into(),
        trace: if debug == message { String::new() } else { debug },
        message,
        payload: None,
        relayed: None,
        canceller: None,
        cancellation: false,
        errors: Vec::new(),
    }
}
