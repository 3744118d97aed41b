//! furrow's errors.
//!
//! Everything a furrow call can fail with is an [`Error`]. An error raised
//! in another actor arrives as [`Error::Remote`] holding a
//! [`RemoteActorError`]: the error as data (type name, message, chain or
//! backtrace, source actor, relay path, and the value itself when it was a
//! serde type), never a `Box<dyn Error>` from the wire.

use furrow_proto::{Aid, ErrorKind, ErrorMsg, Payload, PayloadError};
use serde::de::DeserializeOwned;
use std::fmt;
use std::time::Duration;

/// `Result` with furrow's [`Error`].
///
/// ```
/// fn parse_port(s: &str) -> furrow::Result<u16> {
///     s.parse().map_err(|e| furrow::Error::Usage(format!("bad port {s:?}: {e}")))
/// }
/// assert!(parse_port("80").is_ok());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The `Ok` function, in a module of its own: in scope in this file, it
/// would hide the prelude's `Ok` (see its docs).
pub(crate) mod ok {
    /// `Ok(value)` as a furrow [`Result`](super::Result): for the end of a body whose error
    /// type nothing else fixes.
    ///
    /// The bodies furrow runs (a nursery's, a context's, a stream's) may fail
    /// with any error type that a furrow [`Error`](super::Error) converts into, so a body
    /// that only propagates furrow's errors with `?` and ends in `Ok(x)`
    /// leaves its error type open when its scope's result is itself
    /// propagated with `?`; `furrow::Ok(x)` closes it. (A body whose result
    /// is what its function returns needs nothing: the function's signature
    /// fixes it.) Write it as a path, `furrow::Ok(..)`: imported, it would
    /// hide the prelude's `Ok` from patterns.
    ///
    /// ```no_run
    /// # async fn demo(ctx: &furrow::Context) -> furrow::Result<()> {
    /// let sum = ctx
    ///     .open_stream(async |s| {
    ///         let mut sum = 0u64;
    ///         while let Some(x) = s.recv::<u64>().await? {
    ///             sum += x;
    ///         }
    ///         furrow::Ok(sum)
    ///     })
    ///     .await?;
    /// println!("{sum}");
    /// # Ok(()) }
    /// ```
    #[allow(non_snake_case)]
    pub fn Ok<T>(value: T) -> super::Result<T> {
        std::result::Result::Ok(value)
    }
}

/// Everything that can go wrong in furrow.
///
/// `Debug` prints the same text as `Display` (plus the remote detail), so
/// `fn main() -> furrow::Result<()>` reports errors readably.
///
/// Most code propagates it with `?`; code that reacts to a failure matches
/// on the few variants it can do something about:
///
/// ```no_run
/// #[furrow::remote]
/// async fn fetch(url: String) -> anyhow::Result<Vec<u8>> {
///     # let _ = url;
///     Ok(Vec::new())
/// }
///
/// # async fn demo(p: furrow::Portal) -> furrow::Result<()> {
/// match p.run(fetch, ("https://example.com".to_string(),)).await {
///     Ok(body) => println!("{} bytes", body.len()),
///     Err(furrow::Error::TransportClosed { peer, reason }) => {
///         eprintln!("{peer} went away ({reason}); retrying elsewhere");
///     }
///     Err(e) if e.as_remote().is_some_and(|r| r.is_panic()) => {
///         eprintln!("the fetcher panicked: {e}");
///     }
///     Err(e) => return Err(e),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error (or panic) raised in another actor.
    #[error(transparent)]
    Remote(Box<RemoteActorError>),
    /// A value did not have the type the receiver expected: wrong, missing
    /// or extra arguments, or a return value of another type.
    #[error("message type error: {0}")]
    MsgType(#[from] PayloadError),
    /// The channel to the peer closed (the peer exited, crashed or was
    /// killed) while a dialog depended on it.
    #[error("transport to {peer} closed{}", detail(.reason))]
    TransportClosed {
        /// The peer.
        peer: String,
        /// What is known about why.
        reason: String,
    },
    /// A child actor could not be started.
    #[error("cannot start actor {name:?}: {reason}")]
    Spawn {
        /// The child's name (one over
        /// [`MAX_ACTOR_NAME_LEN`](crate::MAX_ACTOR_NAME_LEN) is shown by
        /// its start and its length).
        name: String,
        /// Why (missing binary, early exit with its status, timeout …).
        reason: String,
        /// The steps of its start it reached, in order, ending with its
        /// exit when it had a process.
        lifecycle: Vec<crate::Lifecycle>,
    },
    /// The peer broke the protocol (a frame out of order, malformed or too
    /// large).
    #[error("protocol error with {peer}: {reason}")]
    Protocol {
        /// The peer.
        peer: String,
        /// What was wrong.
        reason: String,
    },
    /// A message is larger than the frame limit
    /// ([`Config::max_frame`](crate::Config::max_frame), 32 MiB by
    /// default), so it was not sent: a call's arguments, a stream message,
    /// a context's first value. Nothing was queued; the dialog is as it
    /// was (a stream's credit is given back).
    ///
    /// A callee whose result or error is too large answers with a remote
    /// error of kind [`ErrorKind::FrameTooLarge`] carrying this text
    /// instead, so the caller is never left waiting. [`Error::kind`] is
    /// `FrameTooLarge` for both:
    ///
    /// ```no_run
    /// use furrow::ErrorKind;
    ///
    /// #[furrow::remote]
    /// async fn dump(n: usize) -> Vec<u8> { vec![0; n] }
    ///
    /// # async fn demo(p: furrow::Portal) {
    /// match p.run(dump, (40 << 20,)).await {
    ///     Err(e) if e.kind() == ErrorKind::FrameTooLarge => {
    ///         eprintln!("too big to send in one piece; stream it instead: {e}");
    ///     }
    ///     other => println!("{:?}", other.map(|v| v.len())),
    /// }
    /// # }
    /// ```
    #[error(
        "{what} of {len} bytes exceeds the frame limit of {max} bytes \
         (Config::max_frame; send large data in pieces, e.g. on a stream)"
    )]
    FrameTooLarge {
        /// What could not be sent (`the result of `f``, `a stream message` …).
        what: String,
        /// Its encoded size, in bytes.
        len: usize,
        /// The frame limit, in bytes.
        max: usize,
    },
    /// A context was cancelled by someone other than this side of it (the
    /// peer, a third actor, or another task of this actor cancelling the
    /// whole peer actor). `canceller` says who.
    #[error("context cancelled by {canceller}{}", cancel_detail(.canceller, .message))]
    ContextCancelled {
        /// The actor that asked for the cancellation.
        canceller: Aid,
        /// Extra detail (which context, why).
        message: String,
    },
    /// A stream received more than its window holds before the messages
    /// were consumed: opened with overrun errors and consumed too slowly,
    /// or the sender ignored its credit.
    #[error("stream overrun: more than {limit} messages or {limit_bytes} payload bytes buffered and not consumed")]
    StreamOverrun {
        /// The window in messages.
        limit: usize,
        /// The window in payload bytes.
        limit_bytes: u64,
    },
    /// The stream or context is over (its outcome arrived, or this side
    /// closed it), so it cannot be used any more.
    #[error("{0}")]
    Closed(String),
    /// A bounded wait ran out.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The bound.
        after: Duration,
    },
    /// A furrow API was used outside a furrow runtime, or a configuration
    /// value is unusable.
    #[error("{0}")]
    Usage(String),
    /// An OS-level I/O failure (binding a socket, creating the socket
    /// directory …).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error (shared, so the error can be cloned).
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// A child actor's process ended when nobody asked it to (a crash,
    /// a SIGKILL, an abort), or, for a child started through a launcher
    /// (ssh), the launcher did: `the ssh link to actor far[…]@4242 (ssh
    /// pid 77) ended with signal 9 (SIGKILL)`.
    #[error("{}", exited_text(.actor, .status, .launcher.as_deref()))]
    ActorExited {
        /// The actor.
        actor: Aid,
        /// How it ended (`exit code 3`, `signal 9 (SIGKILL)` …): the
        /// launcher's status when `launcher` is set (ssh's is the far
        /// command's exit code, or 255 for its own failures: a lost
        /// connection, a refused login).
        status: String,
        /// The local process that stood for the actor and ended, when it
        /// was not the actor's own (`ssh pid 77`): its end is the link's,
        /// and `status` is its status. `None` for a local child.
        launcher: Option<String>,
        /// Its whole lifecycle, in order, ending with this exit.
        lifecycle: Vec<crate::Lifecycle>,
    },
    /// This actor was asked to cancel (by its parent, another actor, or a
    /// signal such as Ctrl-C), so the work in progress was cancelled.
    #[error("actor cancelled{}{}", canceller.as_ref().map(|c| format!(" by {c}")).unwrap_or_default(), detail(.reason))]
    ActorCancelled {
        /// The actor that asked, when known.
        canceller: Option<Aid>,
        /// Why (`SIGINT`, …), when known.
        reason: String,
    },
    /// A TCP peer failed the challenge–response (it does not know this
    /// system's secret, or we do not know its), or a connection was refused
    /// before any message was acted on.
    #[error("authentication with {peer} failed: {reason}")]
    Auth {
        /// The peer's address.
        peer: String,
        /// What went wrong.
        reason: String,
    },
    /// The registry address cannot be used: something that is not a furrow
    /// registrar serves it, or no registrar is there when one is required.
    #[error("registry {addr}: {reason}")]
    Registry {
        /// The registry address.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Several actors of one nursery failed; every error, none masked by
    /// the cancellations they caused.
    ///
    /// A `Multiple` relayed by a remote function (`?` in another actor)
    /// arrives as a `Multiple` too, never flattened into one remote error:
    /// each of its errors keeps its own origin, and a remote one has the
    /// relaying actors appended to its `relay_path` (see
    /// [`Error::errors`]).
    #[error("{} actors failed:{}", .0.len(), list(.0))]
    Multiple(Vec<Error>),
    /// A task of a [process pool](crate::pool) failed: which input, and
    /// why (`?` on a [`TaskError`](crate::pool::TaskError) gives this).
    #[error("pool task #{index} (input {input}) failed: {source}")]
    Task {
        /// The input's position (in its `map`, or in submission order).
        index: usize,
        /// The input, as `Debug` prints it.
        input: String,
        /// What went wrong: the remote error, or the worker's death.
        #[source]
        source: Box<Error>,
    },
    /// A [supervisor](crate::supervise) restarted its children more often
    /// than its intensity allows (more than `max_restarts` within
    /// `within`), so it ended every child and gave up: the endings that
    /// exhausted it, oldest first.
    #[error("supervisor gave up after {restarts} restarts within {within:?}; the last endings:\n{}", list(.errors))]
    GaveUp {
        /// Restarts within the window when it gave up.
        restarts: u32,
        /// The intensity's window.
        within: std::time::Duration,
        /// How the children ended, in the window, oldest first.
        errors: Vec<Error>,
    },
    /// An error of the program's own, made with [`Error::other`]: for the
    /// bodies furrow runs that return its [`Result`] (a stream's body, say)
    /// and need to fail with something that is not a furrow error.
    /// `Display` shows the error's own message, and
    /// [`source`](std::error::Error::source) continues with its source; a
    /// remote function that returns it sends it under its type's name
    /// ([`ErrorKind::Other`]). Get it back with
    /// [`downcast_ref`](Error::downcast_ref).
    #[error(transparent)]
    Other(OtherError),
}

/// One numbered line per error; an error of several lines (a nested
/// `Multiple`) has its following lines indented under its number.
fn list(errors: &[Error]) -> String {
    errors
        .iter()
        .enumerate()
        .map(|(i, e)| format!("\n  {}. {}", i + 1, e.to_string().replace('\n', "\n     ")))
        .collect()
}

/// The detail of a cancellation, without restating its canceller: a
/// callee's message says "cancelled by C" (for peers that show only the
/// message), which `Display` has already said.
fn cancel_detail(canceller: &Aid, message: &str) -> String {
    let restated = format!("cancelled by {canceller}");
    match message.strip_prefix(&restated) {
        Some(rest) => detail(rest.trim_start_matches([':', ',', ' '])),
        None => detail(message),
    }
}

fn detail(reason: &str) -> String {
    if reason.is_empty() { String::new() } else { format!(": {reason}") }
}

/// The program's own error inside an [`Error::Other`] (made by
/// [`Error::other`]): its message, its source chain, and the name of the
/// type it was made from.
///
/// ```
/// let e = furrow::Error::other("the cache is cold");
/// if let furrow::Error::Other(o) = &e {
///     assert_eq!(o.to_string(), "the cache is cold");
///     assert_eq!(o.type_name(), "&str");
/// }
/// ```
#[derive(Clone)]
pub struct OtherError {
    type_name: &'static str,
    error: std::sync::Arc<dyn std::error::Error + Send + Sync>,
}

impl OtherError {
    /// The Rust type name of the value it was made from (as
    /// [`std::any::type_name`] gives it): the kind it travels under.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// The error itself.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }
}

impl fmt::Display for OtherError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl fmt::Debug for OtherError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.error, self.type_name)
    }
}

/// Transparent: its message is the error's, and its source the error's
/// source (not the error again, so a chain is not printed twice).
impl std::error::Error for OtherError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Remote(r) => fmt::Debug::fmt(r, f),
            other => fmt::Display::fmt(other, f),
        }
    }
}

impl Error {
    /// The remote error, if this is one.
    ///
    /// ```
    /// # fn demo(err: furrow::Error) {
    /// if let Some(remote) = err.as_remote() {
    ///     eprintln!("{} failed in {}: {}", remote.kind(), remote.src, remote.message);
    /// }
    /// # }
    /// ```
    pub fn as_remote(&self) -> Option<&RemoteActorError> {
        match self {
            Error::Remote(r) => Some(r),
            _ => None,
        }
    }

    /// The error's kind: for a remote error, the kind it arrived with
    /// ([`RemoteActorError::kind`]); for one of this actor's, the kind it
    /// travels under when a remote function returns it (a local
    /// [`Error::FrameTooLarge`] and a callee's answer replaced for its size
    /// are both [`ErrorKind::FrameTooLarge`]). Match on it instead of
    /// comparing strings:
    ///
    /// ```
    /// use furrow::{Error, ErrorKind};
    /// fn worth_retrying(e: &Error) -> bool {
    ///     match e.kind() {
    ///         ErrorKind::TooManyDialogs | ErrorKind::Timeout | ErrorKind::TransportClosed => true,
    ///         ErrorKind::Panic | ErrorKind::FunctionNotFound | ErrorKind::MsgTypeError => false,
    ///         kind => kind.is_cancellation(),
    ///     }
    /// }
    /// assert!(worth_retrying(&Error::Timeout { what: "a reply".into(), after: std::time::Duration::from_secs(1) }));
    /// assert!(!worth_retrying(&Error::Usage("no runtime".into())));
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Remote(r) => r.kind().clone(),
            Error::MsgType(_) => ErrorKind::MsgTypeError,
            Error::TransportClosed { .. } => ErrorKind::TransportClosed,
            Error::Spawn { .. } => ErrorKind::SpawnError,
            Error::Protocol { .. } => ErrorKind::ProtocolError,
            Error::FrameTooLarge { .. } => ErrorKind::FrameTooLarge,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Usage(_) => ErrorKind::UsageError,
            Error::Io { .. } => ErrorKind::IoError,
            Error::ContextCancelled { .. } => ErrorKind::ContextCancelled,
            Error::ActorExited { .. } => ErrorKind::ActorExited,
            Error::ActorCancelled { .. } => ErrorKind::ActorCancelled,
            Error::Multiple(_) => ErrorKind::MultipleErrors,
            Error::Task { .. } => ErrorKind::PoolTaskError,
            Error::StreamOverrun { .. } => ErrorKind::StreamOverrun,
            Error::Closed(_) => ErrorKind::Closed,
            Error::Auth { .. } => ErrorKind::AuthError,
            Error::Registry { .. } => ErrorKind::RegistryError,
            Error::GaveUp { .. } => ErrorKind::SupervisorGaveUp,
            Error::Other(o) => ErrorKind::from(o.type_name),
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { what: what.into(), source: std::sync::Arc::new(source) }
    }

    /// The errors this one stands for: itself, or each error of a
    /// `Multiple`, in order, with any `Multiple` among them replaced by its
    /// own errors (so the result never holds a `Multiple`).
    ///
    /// ```
    /// # fn demo(err: furrow::Error) {
    /// // A nursery whose children failed together reports them all.
    /// for e in err.errors() {
    ///     if let furrow::Error::ActorExited { actor, status, .. } = e {
    ///         eprintln!("{actor} died: {status}");
    ///     }
    /// }
    /// # }
    /// ```
    ///
    /// A remote function that returns its own nursery's `Multiple` with
    /// `?` relays every error with its origin: the caller finds each one
    /// with the actor it was raised in, and the relaying actor at the end
    /// of its relay path.
    ///
    /// ```no_run
    /// #[furrow::remote]
    /// async fn check(input: u32) -> Result<(), String> {
    ///     if input % 2 == 1 { Err(format!("{input} is odd")) } else { Ok(()) }
    /// }
    ///
    /// /// Runs in a middle actor: checks two inputs in two leaf actors.
    /// #[furrow::remote]
    /// async fn check_both(a: u32, b: u32) -> furrow::Result<()> {
    ///     furrow::open_nursery(async |n| {
    ///         let (x, y) = (n.run_in_actor(check, (a,)), n.run_in_actor(check, (b,)));
    ///         x.await?;
    ///         y.await
    ///     })
    ///     .await // both leaves failing: an `Error::Multiple`, relayed as one
    /// }
    ///
    /// # async fn demo(middle: furrow::Portal) {
    /// if let Err(e) = middle.run(check_both, (1, 3)).await {
    ///     for leaf in e.errors() {
    ///         if let Some(r) = leaf.as_remote() {
    ///             let path: Vec<&str> = r.relay_path.iter().map(|a| a.name.as_str()).collect();
    ///             println!("{} failed: {} (via {path:?})", r.src, r.message);
    ///         }
    ///     }
    /// }
    /// # }
    /// ```
    pub fn errors(&self) -> Vec<&Error> {
        fn collect<'a>(e: &'a Error, out: &mut Vec<&'a Error>) {
            match e {
                Error::Multiple(v) => v.iter().for_each(|e| collect(e, out)),
                e => out.push(e),
            }
        }
        let mut out = Vec::new();
        collect(self, &mut out);
        out
    }

    /// An [`Error::Other`] holding `error`, an error of the program's own:
    /// what a body that returns furrow's [`Result`] fails with when the
    /// failure is not furrow's (as [`std::io::Error::other`] does for I/O).
    /// Anything that converts into a boxed error works: an error type, an
    /// `anyhow::Error`, a `String`.
    ///
    /// ```no_run
    /// # async fn demo(ctx: &furrow::Context) -> furrow::Result<()> {
    /// let total = ctx
    ///     .open_stream(async |s| {
    ///         let mut total = 0u64;
    ///         while let Some(line) = s.recv::<String>().await? {
    ///             total += line.trim().parse::<u64>().map_err(furrow::Error::other)?;
    ///         }
    ///         furrow::Ok(total)
    ///     })
    ///     .await;
    /// if let Err(e) = &total
    ///     && let Some(bad) = e.downcast_ref::<std::num::ParseIntError>()
    /// {
    ///     eprintln!("the peer sent a line that is not a number: {bad}");
    /// }
    /// # let _ = total; Ok(()) }
    /// ```
    pub fn other<E>(error: E) -> Error
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        Error::Other(OtherError { type_name: std::any::type_name::<E>(), error: std::sync::Arc::from(error.into()) })
    }

    /// The program's own error inside an [`Error::Other`], if it is one
    /// and of type `T`.
    ///
    /// ```
    /// let e = furrow::Error::other(std::io::Error::other("disk full"));
    /// assert_eq!(e.downcast_ref::<std::io::Error>().map(|io| io.to_string()).as_deref(), Some("disk full"));
    /// assert!(e.downcast_ref::<std::fmt::Error>().is_none());
    /// ```
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        match self {
            Error::Other(o) => o.error.downcast_ref::<T>(),
            _ => None,
        }
    }

    pub(crate) fn usage(msg: impl Into<String>) -> Error {
        Error::Usage(msg.into())
    }
}

/// The error an incoming `Error` message stands for: a cancellation
/// (`ContextCancelled` naming its canceller), several errors relayed
/// together (`Multiple`, each decoded in turn), or a remote error. The
/// one place the caller's side turns the wire's [`ErrorMsg`] into an
/// [`Error`].
///
/// The recursion over `errors` is as deep as the frame nests them, which
/// the envelope's depth cap bounds (two msgpack levels per level here).
/// A `MultipleErrors` without `errors` (from a peer that does not send
/// them) stays one remote error whose message lists them.
pub(crate) fn error_from_msg(e: ErrorMsg) -> Error {
    if let Some(canceller) = cancelled_by(&e.boxed_type_str, e.canceller.as_ref()) {
        return Error::ContextCancelled { canceller: canceller.clone(), message: e.message };
    }
    if e.boxed_type_str == ErrorKind::MultipleErrors && !e.errors.is_empty() {
        return Error::Multiple(e.errors.into_iter().map(error_from_msg).collect());
    }
    let mut relay_path = e.relay_path;
    if relay_path.is_empty() {
        relay_path.push(e.src_uid.clone());
    }
    RemoteActorError {
        src: e.src_uid,
        kind: e.boxed_type_str,
        message: e.message,
        backtrace: e.tb_str,
        relay_path,
        canceller: e.canceller,
        payload: e.pld,
    }
    .into()
}

/// The error for a stream whose window `w` was exceeded.
pub(crate) fn overrun(w: furrow_proto::flow::Window) -> Error {
    Error::StreamOverrun { limit: usize::try_from(w.msgs).unwrap_or(usize::MAX), limit_bytes: w.bytes }
}

/// The canceller of an `Error` message that reports a cancellation
/// (`ContextCancelled` naming who asked); `None` for any other error.
pub(crate) fn cancelled_by<'a>(kind: &ErrorKind, canceller: Option<&'a Aid>) -> Option<&'a Aid> {
    canceller.filter(|_| *kind == ErrorKind::ContextCancelled)
}

impl From<RemoteActorError> for Error {
    fn from(e: RemoteActorError) -> Self {
        Error::Remote(Box::new(e))
    }
}

/// An error raised in another actor, as data.
///
/// - `src` is the actor where it was raised;
/// - [`kind()`](Self::kind) its [`ErrorKind`]: furrow's own
///   ([`ErrorKind::Panic`] for a panic, [`ErrorKind::FunctionNotFound`],
///   [`ErrorKind::MsgTypeError`] … for errors of the runtime), or
///   [`ErrorKind::Other`] holding the Rust type name of the original error;
/// - `message` its `Display` text, `backtrace` its source chain or
///   backtrace as text;
/// - `relay_path` every actor that sent it on, in order: the first is
///   `src`, the last is the actor this one received it from.
///
/// A user error type that implements `serde::Serialize` travels as a value
/// too and can be recovered with [`RemoteActorError::downcast`].
///
/// It is built in one place, from the wire's
/// [`ErrorMsg`](furrow_proto::ErrorMsg) (whose fields it holds, less the
/// dialog id and the nested errors, which become an [`Error::Multiple`]).
/// Its kind is read with [`kind()`](Self::kind); before kinds were typed
/// it was the `String` field `boxed_type`, now `kind().as_str()`.
///
/// ```
/// # fn demo(err: furrow::Error) {
/// #[derive(serde::Deserialize, Debug)]
/// struct Overdrawn { missing: u64 }
/// if let Some(remote) = err.as_remote() {
///     if let Some(o) = remote.downcast::<Overdrawn>() {
///         println!("{} is missing {}", remote.src, o.missing);
///     }
/// }
/// # }
/// ```
#[derive(Clone, PartialEq)]
pub struct RemoteActorError {
    /// The actor where the error was raised.
    pub src: Aid,
    /// Its kind (read with [`kind()`](Self::kind)).
    kind: ErrorKind,
    /// Its message.
    pub message: String,
    /// Its source chain or backtrace, as text (may be empty).
    pub backtrace: String,
    /// The actors it crossed, starting with `src`.
    pub relay_path: Vec<Aid>,
    /// For a cancellation: the actor that asked for it.
    pub canceller: Option<Aid>,
    pub(crate) payload: Option<Payload>,
}

impl RemoteActorError {
    /// Recover the original error value, if it was sent as a serde value of
    /// type `E` (compared by type name, then decoded). Both sides must name
    /// the same type (the same path in the same crate), as when caller and
    /// callee are one binary.
    ///
    /// ```no_run
    /// #[derive(Debug, serde::Serialize, serde::Deserialize, thiserror::Error)]
    /// #[error("account {account} is short by {missing}")]
    /// struct Overdrawn { account: String, missing: u64 }
    ///
    /// #[furrow::remote]
    /// async fn withdraw(account: String, amount: u64) -> Result<u64, Overdrawn> {
    ///     Err(Overdrawn { account, missing: amount })
    /// }
    ///
    /// # async fn demo(bank: furrow::Portal) -> furrow::Result<()> {
    /// match bank.run(withdraw, ("alice".to_string(), 50)).await {
    ///     Ok(balance) => println!("left: {balance}"),
    ///     Err(e) => match e.as_remote().and_then(|r| r.downcast::<Overdrawn>()) {
    ///         Some(o) => println!("ask {} for {} more", o.account, o.missing),
    ///         None => return Err(e),
    ///     },
    /// }
    /// # Ok(()) }
    /// ```
    pub fn downcast<E: DeserializeOwned>(&self) -> Option<E> {
        if self.kind.as_str() != std::any::type_name::<E>() {
            return None;
        }
        self.payload.as_ref()?.decode().ok()
    }

    /// Decode the carried error value as `E` regardless of its type name
    /// (for a callee built from another crate, whose type has another path
    /// but the same shape).
    ///
    /// ```
    /// # fn demo(err: &furrow::RemoteActorError) {
    /// #[derive(serde::Deserialize)]
    /// struct Overdrawn { missing: u64 }
    /// match err.payload_as::<Overdrawn>() {
    ///     Ok(o) => println!("short by {}", o.missing),
    ///     Err(e) => println!("no usable value ({e}): {}", err.message),
    /// }
    /// # }
    /// ```
    pub fn payload_as<E: DeserializeOwned>(&self) -> Result<E, PayloadError> {
        match &self.payload {
            Some(p) => p.decode(),
            None => Err(PayloadError::Decode {
                expected: std::any::type_name::<E>(),
                path: String::new(),
                reason: "the remote error carries no value".into(),
            }),
        }
    }

    /// True when the remote error is a panic (its `message` is the panic
    /// message and its `backtrace` names the location).
    ///
    /// ```
    /// # fn demo(err: &furrow::RemoteActorError) {
    /// if err.is_panic() {
    ///     eprintln!("bug in {}: {}\n{}", err.src, err.message, err.backtrace);
    /// }
    /// # }
    /// ```
    pub fn is_panic(&self) -> bool {
        self.kind == ErrorKind::Panic
    }

    /// The error's kind: one of furrow's own, or [`ErrorKind::Other`]
    /// holding the Rust type name of the original error.
    ///
    /// ```
    /// use furrow::ErrorKind;
    /// # fn demo(err: &furrow::RemoteActorError) {
    /// match err.kind() {
    ///     ErrorKind::FunctionNotFound | ErrorKind::ModuleNotExposed => eprintln!("{} does not serve it", err.src),
    ///     ErrorKind::Other(type_name) => eprintln!("{type_name}: {}", err.message),
    ///     kind => eprintln!("{kind}: {}", err.message),
    /// }
    /// # }
    /// ```
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
}

impl fmt::Display for RemoteActorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in actor {}: {}", self.kind, self.src, self.message)?;
        if self.relay_path.len() > 1 {
            let path: Vec<String> = self.relay_path.iter().map(|a| a.name.clone()).collect();
            write!(f, " (relayed via {})", path.join(" -> "))?;
        }
        Ok(())
    }
}

impl fmt::Debug for RemoteActorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{self}")?;
        if !self.backtrace.is_empty() {
            writeln!(f, "remote trace:")?;
            for line in self.backtrace.lines() {
                writeln!(f, "    {line}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for RemoteActorError {}

/// The text of [`Error::ActorExited`]: a launcher's end is the link's, not
/// (necessarily) the actor's, and its pid is not the actor's.
fn exited_text(actor: &Aid, status: &str, launcher: Option<&str>) -> String {
    match launcher {
        Some(l) => {
            let program = l.split_whitespace().next().unwrap_or(l);
            format!("the {program} link to actor {actor} ({l}) ended with {status}")
        }
        None => format!("actor {actor} exited unexpectedly with {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancellation_names_its_canceller_once() {
        let c = Aid::new("opener", 7);
        let e = |message: String| Error::ContextCancelled { canceller: c.clone(), message }.to_string();
        // What a callee's runtime sends.
        assert_eq!(e(format!("cancelled by {c}")), format!("context cancelled by {c}"));
        assert_eq!(e(format!("cancelled by {c}: shutting down")), format!("context cancelled by {c}: shutting down"));
        assert_eq!(e(String::new()), format!("context cancelled by {c}"));
        // Detail that does not restate the canceller is kept whole.
        assert_eq!(e("context cancelled (`f`)".into()), format!("context cancelled by {c}: context cancelled (`f`)"));
        let other = Aid::new("other", 8);
        assert_eq!(e(format!("cancelled by {other}")), format!("context cancelled by {c}: cancelled by {other}"));
    }

    #[test]
    fn a_nested_multiple_is_listed_indented() {
        let e = Error::Multiple(vec![
            Error::Usage("a".into()),
            Error::Multiple(vec![Error::Usage("b".into()), Error::Usage("c".into())]),
        ]);
        assert_eq!(e.to_string(), "2 actors failed:\n  1. a\n  2. 2 actors failed:\n       1. b\n       2. c");
        let leaves: Vec<String> = e.errors().iter().map(|e| e.to_string()).collect();
        assert_eq!(leaves, ["a", "b", "c"]);
    }
}
