//! furrow's wire protocol, with no I/O and no async runtime.
//!
//! This crate holds everything two furrow actors must agree on to talk:
//!
//! - [`Msg`]: the messages of the dialog (`Aid`, `SpawnSpec`, `Start`,
//!   `StartAck`, `Started`, `Yield`, `Stop`, `Return`, `CancelAck`, `Error`,
//!   plus furrow's additions `Ready` and `Credit`);
//! - the frame codec ([`codec`]): a 4-byte little-endian length followed by
//!   one msgpack map whose `msg_type` key names the variant. The maximum
//!   frame size is checked *before* anything is allocated
//!   ([`DEFAULT_MAX_FRAME`], 32 MiB, configurable per channel);
//! - [`Payload`]: user values travel as opaque msgpack blobs inside the
//!   envelope, so a receiver decodes the envelope first and the payload
//!   second, against the type it expects ([`PayloadError`] names the field
//!   that did not match);
//! - [`dialog`]: the per-context state machine that says which message may
//!   come next;
//! - [`session`]: one channel's dialogs (ids, the dialog table, bounds);
//! - [`handshake`]: the exchanges that open a connection (the secret, the
//!   `Aid`s, a spawned child's `SpawnSpec` and `Ready`), one state machine
//!   per side.
//!
//! The runtime crate (`furrow`) puts sockets and tasks around this.
//!
//! ```
//! use furrow_proto::{codec, Msg, Payload};
//! use bytes::BytesMut;
//!
//! let msg = Msg::Return { cid: 7, pld: Payload::encode(&42u64).unwrap() };
//! let mut buf = BytesMut::new();
//! codec::encode(&msg, &mut buf, furrow_proto::DEFAULT_MAX_FRAME).unwrap();
//! let frame = codec::FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
//! let back = codec::decode_msg(frame).unwrap();
//! assert_eq!(back, msg);
//! ```

mod addr;
mod aid;
mod blob;
pub mod codec;
pub mod dialog;
pub mod flow;
pub mod handshake;
pub mod keepalive;
mod kind;
mod msg;
mod payload;
pub mod request;
pub mod session;

pub use addr::{Addr, AddrParseError};
pub use aid::Aid;
pub use blob::Bytes;
pub use kind::ErrorKind;
pub use msg::{Cid, ErrorMsg, FuncType, Msg, MsgKind, Secret, SpawnSpec, Start, Tuning};
pub use payload::{Payload, PayloadError, PayloadParts};

/// Version of the furrow protocol spoken by this crate, exchanged in the
/// `Aid` handshake. Peers with a different version are refused.
///
/// ```
/// use furrow_proto::{Msg, PROTO_VERSION};
/// fn check_handshake(first: &Msg) -> Result<(), String> {
///     match first {
///         Msg::Aid { proto, .. } if *proto == PROTO_VERSION => Ok(()),
///         Msg::Aid { proto, .. } => Err(format!("peer speaks version {proto}, we speak {PROTO_VERSION}")),
///         other => Err(format!("expected Aid, got {:?}", other.kind())),
///     }
/// }
/// # assert!(check_handshake(&Msg::Stop { cid: 1 }).is_err());
/// ```
pub const PROTO_VERSION: u32 = 3;

/// Default largest frame (length prefix excluded) a channel accepts or
/// sends: 32 MiB. Larger frames are refused before any allocation and the
/// channel is closed.
///
/// ```
/// use furrow_proto::{DEFAULT_MAX_FRAME, codec::FrameDecoder};
/// assert_eq!(FrameDecoder::default().max_frame(), DEFAULT_MAX_FRAME);
/// ```
pub const DEFAULT_MAX_FRAME: usize = 32 * 1024 * 1024;

/// Namespace of the runtime's own requests (cancel an actor, cancel a
/// task, counters). They travel as ordinary `Start` messages; [`request`]
/// encodes and parses them.
///
/// ```
/// use furrow_proto::{Aid, Msg, RUNTIME_NS, request::Request};
/// // What an opener sends to cancel its dialog 5 (on a fresh cid).
/// let cancel = Request::CancelTask { cid: 5 }.to_start(7, Aid::new("opener", 42));
/// assert!(matches!(&cancel, Msg::Start { ns, .. } if ns == RUNTIME_NS));
/// ```
pub const RUNTIME_NS: &str = "furrow::runtime";
