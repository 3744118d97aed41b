//! The message set. Every message is one msgpack map with a `msg_type` key
//! naming its variant; the other keys are the variant's fields.

use crate::{Addr, Aid, ErrorKind, Payload};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Context id. Unique per channel: the side that *dialled* the connection
/// allocates odd ids and the side that accepted it allocates even ids (as
/// HTTP/2 does for streams), so both ends can open dialogs without
/// coordinating.
///
/// ```
/// use furrow_proto::{Cid, Msg};
/// // Ids this side allocates when it dialled the connection: 1, 3, 5 …
/// let mine = |cid: Cid, dialled: bool| (cid % 2 == 1) == dialled;
/// assert!(mine(Msg::Stop { cid: 3 }.cid().unwrap(), true));
/// assert!(!mine(4, true));
/// ```
pub type Cid = u64;

/// What kind of function a `Start` reached, announced by `StartAck`.
///
/// ```
/// use furrow_proto::{FuncType, Msg};
/// let ack = Msg::StartAck { cid: 1, functype: FuncType::Context };
/// if let Msg::StartAck { functype: FuncType::Asyncfunc, .. } = ack {
///     unreachable!("a context is opened, not called");
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FuncType {
    /// A plain async function: `Start → StartAck → Return | Error`.
    Asyncfunc,
    /// A context endpoint: `Start → StartAck → Started → (Yield | Stop)* → Return | Error`.
    Context,
}

impl<'de> Deserialize<'de> for Payload {
    /// Shares the frame's buffer when decoded by [`crate::codec::decode_msg`]
    /// (a large payload is not copied out of the frame it came in).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(crate::blob::BytesVisitor).map(Payload)
    }
}

/// Configuration a parent sends to a child right after the handshake.
///
/// ```
/// use furrow_proto::{Aid, Msg, SpawnSpec, DEFAULT_MAX_FRAME};
/// let spec = SpawnSpec {
///     parent: Aid::new("root", 100),
///     bind: vec![],
///     registry: vec!["uds:///run/user/1000/furrow/registry.sock".parse().unwrap()],
///     secret: None,
///     socket_dir: "/run/user/1000/furrow".into(),
///     enable_modules: vec!["my_app::jobs".into()],
///     log_filter: None,
///     max_frame: DEFAULT_MAX_FRAME as u64,
///     tuning: None,
/// };
/// let msg = Msg::SpawnSpec { spec };
/// # let _ = msg;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnSpec {
    /// The child's parent.
    pub parent: Aid,
    /// Addresses the child listens on besides its UDS socket in
    /// `socket_dir`.
    #[serde(default)]
    pub bind: Vec<Addr>,
    /// Addresses of the registrar the child registers with (empty: none).
    #[serde(default)]
    pub registry: Vec<Addr>,
    /// The tree's shared secret for TCP authentication, when the parent has
    /// one (absent: the child loads it itself, from the same place).
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Directory for the child's UDS socket files.
    pub socket_dir: String,
    /// Namespaces (module path prefixes) the child serves; empty means
    /// every registered function.
    #[serde(default)]
    pub enable_modules: Vec<String>,
    /// `tracing` filter directive for the child (`RUST_LOG` syntax).
    #[serde(default)]
    pub log_filter: Option<String>,
    /// Largest frame the child accepts, in bytes.
    pub max_frame: u64,
    /// Timeouts and stream settings the child uses for its own children and
    /// dialogs (absent: the child's defaults).
    #[serde(default)]
    pub tuning: Option<Tuning>,
}

/// A shared secret (bytes). Its `Debug` form never shows the bytes, so a
/// logged message cannot leak it.
///
/// ```
/// let s = furrow_proto::Secret(b"hunter2".to_vec());
/// assert_eq!(format!("{s:?}"), "Secret(<7 bytes, redacted>)");
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes, redacted>)", self.0.len())
    }
}

/// Settings a parent passes down its tree (all durations in milliseconds).
///
/// ```
/// let t = furrow_proto::Tuning {
///     spawn_timeout_ms: 10_000,
///     cancel_ack_timeout_ms: 500,
///     exit_timeout_ms: 1_000,
///     term_timeout_ms: 1_000,
///     stream_window: 1024,
///     cancel_grace_ms: 200,
///     stream_window_bytes: 8 << 20,
///     keepalive_interval_ms: 10_000,
///     keepalive_silence_ms: 60_000,
///     max_dialogs_per_peer: 4096,
///     max_queued_output: 16 << 20,
///     frame_timeout_ms: 30_000,
///     max_unauthenticated: Some(64),
/// };
/// let spawn_timeout = std::time::Duration::from_millis(t.spawn_timeout_ms);
/// # let _ = spawn_timeout;
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tuning {
    /// Bound on a child's start.
    pub spawn_timeout_ms: u64,
    /// Bound on a cancel request's acknowledgement.
    pub cancel_ack_timeout_ms: u64,
    /// Bound on an exit after the ack, before SIGTERM.
    pub exit_timeout_ms: u64,
    /// Bound on an exit after SIGTERM, before SIGKILL.
    pub term_timeout_ms: u64,
    /// Default stream window (messages).
    pub stream_window: u64,
    /// Grace period of a cancelled context callee.
    pub cancel_grace_ms: u64,
    /// Default stream window in payload bytes (0: the child's default).
    #[serde(default)]
    pub stream_window_bytes: u64,
    /// Keepalive probe interval (0: keepalive off).
    #[serde(default)]
    pub keepalive_interval_ms: u64,
    /// Keepalive allowed silence (0: keepalive off).
    #[serde(default)]
    pub keepalive_silence_ms: u64,
    /// Dialogs one peer may have open at once (0: the child's default).
    #[serde(default)]
    pub max_dialogs_per_peer: u64,
    /// Bytes queued for one peer before reading from it pauses (0: the
    /// child's default).
    #[serde(default)]
    pub max_queued_output: u64,
    /// Bound on a frame's arrival once begun (0: the child's default).
    #[serde(default)]
    pub frame_timeout_ms: u64,
    /// Most TCP connections an actor lets authenticate at once (`None`:
    /// the default; absent from an older parent's message).
    #[serde(default)]
    pub max_unauthenticated: Option<u64>,
}

macro_rules! messages {
    ($(
        $(#[$vdoc:meta])*
        $variant:ident { $( $(#[$fattr:meta])* $field:ident : $ty:ty ),* $(,)? }
    ),* $(,)?) => {
        /// One message of the furrow dialog.
        ///
        /// Encoding is a map `{msg_type: "<Variant>", <fields>…}`. Unknown
        /// keys are ignored (so fields can be added compatibly); a missing
        /// required field or a field of the wrong type is a
        /// [`DecodeError`](crate::codec::DecodeError) naming both.
        ///
        /// ```
        /// use furrow_proto::{Msg, MsgKind, Payload};
        /// let msg = Msg::Yield { cid: 3, pld: Payload::encode(&"tick").unwrap() };
        /// match &msg {
        ///     Msg::Yield { pld, .. } => assert_eq!(pld.decode::<String>().unwrap(), "tick"),
        ///     Msg::Stop { .. } | Msg::Return { .. } => { /* end of stream */ }
        ///     other => panic!("unexpected {:?}", other.kind()),
        /// }
        /// assert_eq!(msg.kind(), MsgKind::Yield);
        /// assert_eq!(msg.cid(), Some(3));
        /// ```
        #[derive(Clone, Debug, PartialEq, Serialize)]
        #[serde(tag = "msg_type")]
        pub enum Msg {
            $(
                $(#[$vdoc])*
                $variant { $( $(#[$fattr])* $field: $ty ),* },
            )*
        }

        /// The variant of a [`Msg`], without its fields.
        ///
        /// ```
        /// use furrow_proto::MsgKind;
        /// assert_eq!(MsgKind::StartAck.as_str(), "StartAck");
        /// assert_eq!(MsgKind::from_wire("StartAck"), Some(MsgKind::StartAck));
        /// assert_eq!(MsgKind::from_wire("startack"), None); // case matters
        /// ```
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum MsgKind {
            $( $(#[$vdoc])* $variant, )*
        }

        impl Msg {
            /// Which variant this is.
            pub fn kind(&self) -> MsgKind {
                match self { $( Msg::$variant { .. } => MsgKind::$variant, )* }
            }
        }

        impl MsgKind {
            /// The `msg_type` string on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $( MsgKind::$variant => stringify!($variant), )* }
            }

            /// Parse a `msg_type` string.
            pub fn from_wire(s: &str) -> Option<MsgKind> {
                match s { $( stringify!($variant) => Some(MsgKind::$variant), )* _ => None }
            }
        }

        /// Decode the body of a frame whose `msg_type` is already known.
        pub(crate) fn decode_body(
            kind: MsgKind,
            body: &[u8],
        ) -> Result<Msg, serde_path_to_error::Error<rmp_serde::decode::Error>> {
            match kind {
                $(
                    MsgKind::$variant => {
                        #[derive(Deserialize)]
                        struct Body { $( $(#[$fattr])* $field: $ty ),* }
                        let mut de = rmp_serde::Deserializer::from_read_ref(body);
                        de.set_max_depth(crate::codec::MAX_DEPTH);
                        let b: Body = serde_path_to_error::deserialize(&mut de)?;
                        Ok(Msg::$variant { $( $field: b.$field ),* })
                    }
                )*
            }
        }
    };
}

messages! {
    /// Handshake, sent by both ends as the first frame of a channel.
    Aid {
        /// Sender's actor name.
        name: String,
        /// Sender's actor uuid.
        uuid: Uuid,
        /// Sender's process id.
        pid: u32,
        /// Sender's [`PROTO_VERSION`](crate::PROTO_VERSION).
        proto: u32,
        /// Set only by a freshly spawned child: the one-time token its
        /// parent gave it, which ties the connection to the spawn.
        #[serde(default)]
        spawn_token: Option<String>,
        /// The most dialogs the sender lets this peer have open at once
        /// (its `max_dialogs_per_peer`): an opener keeps within it instead
        /// of meeting `TooManyDialogs`. Absent from an older peer's `Aid`
        /// (an older peer ignores it, as any unknown key): the receiver
        /// then assumes its own bound.
        #[serde(default)]
        max_dialogs: Option<u64>,
    },
    /// TCP only, sent by the accepting side before anything else (furrow
    /// addition): prove you know the system's secret.
    Challenge {
        /// Random bytes, fresh per connection.
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
    },
    /// Dialler's answer to a `Challenge`.
    Auth {
        /// The dialler's own random bytes (for the acceptor's proof).
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
        /// HMAC-SHA256 over both nonces, keyed by the secret.
        #[serde(with = "serde_bytes")]
        mac: Vec<u8>,
    },
    /// Acceptor's proof that it knows the secret too (mutual
    /// authentication); after it, the `Aid` exchange begins.
    AuthOk {
        /// HMAC-SHA256 over both nonces (in the other order), keyed by the
        /// secret.
        #[serde(with = "serde_bytes")]
        mac: Vec<u8>,
    },
    /// Parent → new child: its configuration.
    SpawnSpec {
        /// The configuration.
        spec: SpawnSpec,
    },
    /// Child → parent (furrow addition): the `SpawnSpec` is applied and the
    /// child is serving on these addresses.
    Ready {
        /// Addresses the child listens on.
        addrs: Vec<Addr>,
    },
    /// Open a dialog: call `ns::func` with `kwargs` (a map keyed by
    /// parameter name).
    Start {
        /// New dialog's id.
        cid: Cid,
        /// Module path of the function.
        ns: String,
        /// Function name within `ns`.
        func: String,
        /// The calling actor.
        uid: Aid,
        /// Arguments, a msgpack map keyed by parameter name. Last, so that
        /// large arguments can be written after the envelope without being
        /// copied into it (`codec::encode_parts`; key order means nothing
        /// to a decoder).
        kwargs: Payload,
    },
    /// The callee found the function and is running it.
    StartAck {
        /// Dialog id.
        cid: Cid,
        /// What was started.
        functype: FuncType,
    },
    /// A context callee called `started(value)`.
    Started {
        /// Dialog id.
        cid: Cid,
        /// The first value.
        pld: Payload,
    },
    /// One stream message.
    Yield {
        /// Dialog id.
        cid: Cid,
        /// The value.
        pld: Payload,
    },
    /// Several stream messages of one dialog, in order, each value as a
    /// `Yield` would carry it; each counts as one message for flow
    /// control. What a sender writes when several values are queued at
    /// once (protocol version 3): one frame, one header and one routing
    /// for the lot.
    Yields {
        /// Dialog id.
        cid: Cid,
        /// The values, in order.
        plds: Vec<Payload>,
    },
    /// The sender will send no more stream messages.
    Stop {
        /// Dialog id.
        cid: Cid,
    },
    /// The dialog's final value.
    Return {
        /// Dialog id.
        cid: Cid,
        /// The value.
        pld: Payload,
    },
    /// Answer to a cancel request, on the request's own cid.
    CancelAck {
        /// The cancel request's dialog id.
        cid: Cid,
        /// Whether something was cancelled.
        pld: Payload,
    },
    /// An error, ending the dialog `cid` (or the channel when `cid` is
    /// absent).
    Error {
        /// Dialog the error ends, if any.
        #[serde(default)]
        cid: Option<Cid>,
        /// Actor where the error was raised.
        src_uid: Aid,
        /// The error's kind: one of furrow's, or the Rust type name of
        /// the original error (a string on the wire).
        boxed_type_str: ErrorKind,
        /// Its message.
        message: String,
        /// Backtrace or error chain, as text.
        #[serde(default)]
        tb_str: String,
        /// Every actor that sent the error on, in order, starting with
        /// `src_uid` (an actor relaying it appends itself).
        #[serde(default)]
        relay_path: Vec<Aid>,
        /// For cancellations: the actor that requested it.
        #[serde(default)]
        canceller: Option<Aid>,
        /// The error value itself, when it is a serde type (for typed
        /// recovery by the receiver).
        #[serde(default)]
        pld: Option<Payload>,
        /// furrow addition: for a `MultipleErrors`, each error it stands
        /// for, with its own origin and relay path (empty otherwise; a
        /// peer that does not know the key ignores it and keeps the
        /// message text, which lists them all).
        #[serde(default)]
        errors: Vec<ErrorMsg>,
    },
    /// Flow control (furrow addition): the receiver of stream `cid` grants
    /// the sender `n` more `Yield`s and `bytes` more payload bytes. The
    /// first grant of a stream is its window (see [`crate::flow`]).
    Credit {
        /// Dialog id.
        cid: Cid,
        /// Additional messages allowed.
        n: u64,
        /// Additional payload bytes allowed; absent means no byte limit.
        #[serde(default)]
        bytes: Option<u64>,
    },
    /// Keepalive probe (furrow addition): sent by a side that has heard
    /// nothing from its peer for a while; the peer answers [`Msg::Pong`] at
    /// once. Belongs to no dialog.
    Ping {
        /// Echoed in the `Pong`.
        seq: u64,
    },
    /// Answer to a [`Msg::Ping`].
    Pong {
        /// The `Ping`'s `seq`.
        seq: u64,
    },
}

/// The fields of [`Msg::Error`], as a value of its own.
///
/// It is also the type of each entry of `errors`, the errors a
/// `MultipleErrors` stands for (those carry no `cid`: the outer message
/// ends the dialog). Entries nest when one of them is itself a
/// `MultipleErrors`; the envelope's nesting cap (64 msgpack levels, two
/// per level of `errors`) refuses a frame nesting them more than 30 levels
/// deep, so a peer cannot make a receiver recurse further than that.
///
/// ```
/// use furrow_proto::{Aid, ErrorKind, ErrorMsg, Msg};
/// let leaf = |name: &str| ErrorMsg {
///     cid: None,
///     src_uid: Aid::new(name, 7),
///     boxed_type_str: "my_app::Bad".into(),
///     message: "bad input".into(),
///     tb_str: String::new(),
///     relay_path: vec![Aid::new(name, 7), Aid::new("middle", 6)],
///     canceller: None,
///     pld: None,
///     errors: vec![],
/// };
/// let e = ErrorMsg {
///     cid: Some(3),
///     src_uid: Aid::new("middle", 6),
///     boxed_type_str: ErrorKind::MultipleErrors,
///     message: "2 actors failed: …".into(),
///     tb_str: String::new(),
///     relay_path: vec![Aid::new("middle", 6)],
///     canceller: None,
///     pld: None,
///     errors: vec![leaf("a"), leaf("b")],
/// };
/// let msg = Msg::from(e.clone());
/// assert_eq!(msg.cid(), Some(3));
/// assert_eq!(msg.into_error(), Ok(e));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// Dialog the error ends, if any (never set in an entry of `errors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<Cid>,
    /// Actor where the error was raised.
    pub src_uid: Aid,
    /// The error's kind: one of furrow's, or the Rust type name of the
    /// original error (a string on the wire).
    pub boxed_type_str: ErrorKind,
    /// Its message.
    pub message: String,
    /// Backtrace or error chain, as text.
    #[serde(default)]
    pub tb_str: String,
    /// Every actor that sent the error on, starting with `src_uid`.
    #[serde(default)]
    pub relay_path: Vec<Aid>,
    /// For cancellations: who asked.
    #[serde(default)]
    pub canceller: Option<Aid>,
    /// The error value, when it is a serde type.
    #[serde(default)]
    pub pld: Option<Payload>,
    /// For a `MultipleErrors`: the errors it stands for, each with its own
    /// origin (empty otherwise).
    #[serde(default)]
    pub errors: Vec<ErrorMsg>,
}

impl ErrorMsg {
    /// An error raised by `src` itself, of `kind`: its relay path is
    /// `[src]`, and it has no dialog, trace, value, canceller or nested
    /// errors (set them with struct update syntax).
    ///
    /// ```
    /// use furrow_proto::{Aid, ErrorKind, ErrorMsg, Msg};
    /// let me = Aid::new("server", 1);
    /// let refusal = Msg::from(ErrorMsg { cid: Some(5), ..ErrorMsg::new(me.clone(), ErrorKind::FunctionNotFound, "no `f`") });
    /// let back = refusal.into_error().unwrap();
    /// assert_eq!((back.boxed_type_str, back.relay_path), (ErrorKind::FunctionNotFound, vec![me]));
    /// ```
    pub fn new(src: Aid, kind: ErrorKind, message: impl Into<String>) -> ErrorMsg {
        ErrorMsg {
            cid: None,
            relay_path: vec![src.clone()],
            src_uid: src,
            boxed_type_str: kind,
            message: message.into(),
            tb_str: String::new(),
            canceller: None,
            pld: None,
            errors: Vec::new(),
        }
    }
}

impl From<ErrorMsg> for Msg {
    fn from(e: ErrorMsg) -> Msg {
        Msg::Error {
            cid: e.cid,
            src_uid: e.src_uid,
            boxed_type_str: e.boxed_type_str,
            message: e.message,
            tb_str: e.tb_str,
            relay_path: e.relay_path,
            canceller: e.canceller,
            pld: e.pld,
            errors: e.errors,
        }
    }
}

impl Msg {
    /// The dialog id this message belongs to, if any.
    ///
    /// ```
    /// use furrow_proto::Msg;
    /// assert_eq!(Msg::Credit { cid: 9, n: 1, bytes: None }.cid(), Some(9));
    /// assert_eq!(Msg::Ping { seq: 1 }.cid(), None); // channel-level too
    /// assert_eq!(Msg::Ready { addrs: vec![] }.cid(), None); // channel-level
    /// ```
    pub fn cid(&self) -> Option<Cid> {
        match self {
            Msg::Start { cid, .. }
            | Msg::StartAck { cid, .. }
            | Msg::Started { cid, .. }
            | Msg::Yield { cid, .. }
            | Msg::Yields { cid, .. }
            | Msg::Stop { cid }
            | Msg::Return { cid, .. }
            | Msg::CancelAck { cid, .. }
            | Msg::Credit { cid, .. } => Some(*cid),
            Msg::Error { cid, .. } => *cid,
            Msg::Aid { .. }
            | Msg::SpawnSpec { .. }
            | Msg::Ready { .. }
            | Msg::Challenge { .. }
            | Msg::Auth { .. }
            | Msg::AuthOk { .. }
            | Msg::Ping { .. }
            | Msg::Pong { .. } => None,
        }
    }

    /// Split an `Error` message into its fields; other messages are given
    /// back unchanged.
    ///
    /// ```
    /// use furrow_proto::{Msg, MsgKind};
    /// match (Msg::Stop { cid: 1 }).into_error() {
    ///     Ok(e) => println!("{} failed in {}: {}", e.boxed_type_str, e.src_uid, e.message),
    ///     Err(not_an_error) => assert_eq!(not_an_error.kind(), MsgKind::Stop),
    /// }
    /// ```
    // Giving the message back by value is the point (no allocation on the
    // common non-error path), so the large `Err` is intended.
    #[allow(clippy::result_large_err)]
    pub fn into_error(self) -> Result<ErrorMsg, Msg> {
        match self {
            Msg::Error { cid, src_uid, boxed_type_str, message, tb_str, relay_path, canceller, pld, errors } => {
                Ok(ErrorMsg { cid, src_uid, boxed_type_str, message, tb_str, relay_path, canceller, pld, errors })
            }
            other => Err(other),
        }
    }
}

/// The fields of a [`Msg::Start`], as a value of its own.
///
/// ```
/// use furrow_proto::{Msg, Start};
/// fn take_start(msg: Msg) -> Option<Start> {
///     match msg {
///         Msg::Start { cid, ns, func, kwargs, uid } => Some(Start { cid, ns, func, kwargs, uid }),
///         _ => None,
///     }
/// }
/// assert!(take_start(Msg::Stop { cid: 1 }).is_none());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Start {
    /// Dialog id.
    pub cid: Cid,
    /// Module path.
    pub ns: String,
    /// Function name.
    pub func: String,
    /// Arguments.
    pub kwargs: Payload,
    /// Caller.
    pub uid: Aid,
}
