//! The kind of an `Error` message: one of furrow's own, or another name.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Declares [`ErrorKind`] from one list: each variant with its wire string,
/// so `as_str`, the decoding and [`ErrorKind::KNOWN`] cannot disagree.
macro_rules! kinds {
    ($( $(#[$doc:meta])* $variant:ident = $wire:literal, )*) => {
        /// The kind of a remote error: what an `Error` message's
        /// `boxed_type_str` names.
        ///
        /// furrow's own kinds are variants; anything else (a user error's
        /// Rust type name such as `my_app::Overdrawn`, or a name only
        /// another peer knows) is [`ErrorKind::Other`]. On the wire a kind
        /// is its string ([`as_str`](Self::as_str)), exactly as before the
        /// type existed and as tractor writes it, so the wire format is
        /// unchanged: decoding a string gives its variant, and encoding a
        /// variant gives the string back.
        ///
        /// Match on variants instead of comparing strings:
        ///
        /// ```
        /// use furrow_proto::ErrorKind;
        /// fn advice(kind: &ErrorKind) -> &'static str {
        ///     match kind {
        ///         ErrorKind::FrameTooLarge => "send it in pieces, on a stream",
        ///         ErrorKind::FunctionNotFound | ErrorKind::ModuleNotExposed => "check the actor's binary and modules",
        ///         k if k.is_cancellation() => "it was cancelled",
        ///         ErrorKind::Other(type_name) if type_name.ends_with("Overdrawn") => "top up the account",
        ///         _ => "see the message",
        ///     }
        /// }
        /// assert_eq!(advice(&ErrorKind::from("FrameTooLarge")), "send it in pieces, on a stream");
        /// assert_eq!(advice(&ErrorKind::from("ContextCancelled")), "it was cancelled");
        /// assert_eq!(advice(&ErrorKind::from("bank::Overdrawn")), "top up the account");
        /// ```
        ///
        /// docs/design.md, "Error kinds", says who raises each kind.
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorKind {
            $( $(#[$doc])* $variant, )*
            /// Any other name: a user error's Rust type name
            /// (`std::any::type_name` of the error type), or a kind this
            /// version does not know. Never one of the names above:
            /// [`ErrorKind::from`] and the decoding map those to their
            /// variant (so build kinds with `from`, not `Other` directly).
            Other(String),
        }

        impl ErrorKind {
            /// Every kind of furrow's own (every variant but
            /// [`Other`](Self::Other)), in declaration order.
            ///
            /// ```
            /// use furrow_proto::ErrorKind;
            /// for k in ErrorKind::KNOWN {
            ///     assert_eq!(&ErrorKind::from(k.as_str()), k);
            /// }
            /// ```
            pub const KNOWN: &'static [ErrorKind] = &[$(ErrorKind::$variant),*];

            /// The kind's wire string (its `boxed_type_str`).
            ///
            /// ```
            /// use furrow_proto::ErrorKind;
            /// assert_eq!(ErrorKind::Panic.as_str(), "panic");
            /// assert_eq!(ErrorKind::from("my_app::Bad").as_str(), "my_app::Bad");
            /// ```
            pub fn as_str(&self) -> &str {
                match self {
                    $( ErrorKind::$variant => $wire, )*
                    ErrorKind::Other(name) => name,
                }
            }

            /// The variant whose wire string is `s`, if any.
            fn known(s: &str) -> Option<ErrorKind> {
                match s {
                    $( $wire => Some(ErrorKind::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

kinds! {
    /// A context (a call, or a context's dialog) was cancelled; the
    /// message's `canceller` names who asked. Raised by the callee's
    /// runtime for a task it cancelled, or relayed.
    ContextCancelled = "ContextCancelled",
    /// The actor was asked to cancel (by its parent, another actor, a
    /// signal): a remote function returning furrow's `ActorCancelled`.
    ActorCancelled = "ActorCancelled",
    /// The remote function panicked (the message is the panic message,
    /// the trace its location). Raised by the callee's runtime.
    Panic = "panic",
    /// A value did not have the expected type: arguments that do not
    /// decode, a result that does not encode. Raised by the callee.
    MsgTypeError = "MsgTypeError",
    /// No remote function (or runtime or registry request) of that name is
    /// registered in the callee.
    FunctionNotFound = "FunctionNotFound",
    /// The function exists but is outside the callee's `enable_modules`.
    ModuleNotExposed = "ModuleNotExposed",
    /// A registry request reached an actor that is not a registrar.
    NotARegistrar = "NotARegistrar",
    /// A `Start` named a sender other than the connection's peer.
    IdentityMismatch = "IdentityMismatch",
    /// A connection was refused during its handshake: the identity it
    /// claimed does not hold (channel-level, no `cid`).
    IdentityRefused = "IdentityRefused",
    /// A `Start` beyond the callee's bound on one peer's open dialogs
    /// (raised by the session, see [`crate::session`]).
    TooManyDialogs = "TooManyDialogs",
    /// A connection was refused: too many unauthenticated connections are
    /// open (channel-level).
    TooManyUnauthenticated = "TooManyUnauthenticated",
    /// A connection was refused: the acceptor is out of file descriptors
    /// (channel-level).
    OutOfFileDescriptors = "OutOfFileDescriptors",
    /// An answer (result, error, ack) was over the frame limit and was
    /// replaced by this error; or a relayed furrow `FrameTooLarge`.
    FrameTooLarge = "FrameTooLarge",
    /// The registrar refused a `register` or `unregister` of an entry
    /// another connection owns.
    RegistrationRefused = "RegistrationRefused",
    /// The peer broke the protocol (channel-level, before the channel
    /// closes); or a relayed furrow `Protocol` error.
    ProtocolError = "ProtocolError",
    /// A child could not start; sent to its parent before it exits
    /// (channel-level).
    ActorStartError = "ActorStartError",
    /// Several errors relayed together; the message's `errors` holds each.
    MultipleErrors = "MultipleErrors",
    /// A relayed furrow `TransportClosed`.
    TransportClosed = "TransportClosed",
    /// A relayed furrow `Spawn` error.
    SpawnError = "SpawnError",
    /// A relayed furrow `Timeout`.
    Timeout = "Timeout",
    /// A relayed furrow `Usage` error.
    UsageError = "UsageError",
    /// A relayed furrow `Io` error.
    IoError = "IoError",
    /// A relayed furrow `ActorExited`.
    ActorExited = "ActorExited",
    /// A relayed furrow pool `Task` error.
    PoolTaskError = "PoolTaskError",
    /// A relayed furrow `StreamOverrun`.
    StreamOverrun = "StreamOverrun",
    /// A relayed furrow `Closed`.
    Closed = "Closed",
    /// A relayed furrow `Auth` error.
    AuthError = "AuthError",
    /// A relayed furrow `Registry` error.
    RegistryError = "RegistryError",
    /// A relayed furrow `GaveUp`: a supervisor's children ended more often
    /// than its intensity allows.
    SupervisorGaveUp = "SupervisorGaveUp",
}

impl ErrorKind {
    /// Whether the kind reports a cancellation (`ContextCancelled` or
    /// `ActorCancelled`) rather than a failure.
    ///
    /// ```
    /// use furrow_proto::ErrorKind;
    /// assert!(ErrorKind::ContextCancelled.is_cancellation());
    /// assert!(!ErrorKind::Panic.is_cancellation());
    /// ```
    pub fn is_cancellation(&self) -> bool {
        matches!(self, ErrorKind::ContextCancelled | ErrorKind::ActorCancelled)
    }
}

impl From<&str> for ErrorKind {
    /// The kind named `s`: its variant, or [`ErrorKind::Other`].
    ///
    /// ```
    /// use furrow_proto::ErrorKind;
    /// assert_eq!(ErrorKind::from("TooManyDialogs"), ErrorKind::TooManyDialogs);
    /// assert_eq!(ErrorKind::from("app::Bad"), ErrorKind::Other("app::Bad".into()));
    /// ```
    fn from(s: &str) -> ErrorKind {
        ErrorKind::known(s).unwrap_or_else(|| ErrorKind::Other(s.to_owned()))
    }
}

impl From<String> for ErrorKind {
    /// The kind named `s`: its variant, or [`ErrorKind::Other`] (reusing
    /// `s`).
    ///
    /// ```
    /// use furrow_proto::ErrorKind;
    /// assert_eq!(ErrorKind::from(String::from("panic")), ErrorKind::Panic);
    /// ```
    fn from(s: String) -> ErrorKind {
        ErrorKind::known(&s).unwrap_or(ErrorKind::Other(s))
    }
}

impl From<ErrorKind> for String {
    /// The kind's wire string.
    ///
    /// ```
    /// use furrow_proto::ErrorKind;
    /// assert_eq!(String::from(ErrorKind::MsgTypeError), "MsgTypeError");
    /// ```
    fn from(k: ErrorKind) -> String {
        match k {
            ErrorKind::Other(name) => name,
            known => known.as_str().to_owned(),
        }
    }
}

impl fmt::Display for ErrorKind {
    /// The wire string, as `as_str` gives it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl Serialize for ErrorKind {
    /// As its string, exactly as a `String` is encoded.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorKind {
    /// From whatever decodes as a `String` (so a frame is accepted or
    /// refused exactly as before), then as [`ErrorKind::from`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(ErrorKind::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_kind_has_its_own_string_and_comes_back() {
        let mut seen = std::collections::HashSet::new();
        for k in ErrorKind::KNOWN {
            assert!(seen.insert(k.as_str()), "{k:?} shares its string");
            assert_eq!(&ErrorKind::from(k.as_str()), k);
            assert_eq!(&ErrorKind::from(String::from(k.clone())), k);
        }
    }

    #[test]
    fn display_is_the_wire_string() {
        assert_eq!(ErrorKind::Panic.to_string(), "panic");
        assert_eq!(format!("{:>6}", ErrorKind::Closed), "Closed");
        assert_eq!(format!("{:>7}", ErrorKind::Closed), " Closed");
    }
}
