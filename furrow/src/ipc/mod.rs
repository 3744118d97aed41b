//! Inter-process channels.
//!
//! A [`Channel`] is one connection to one peer actor, carrying the frames of
//! many dialogs at once. Its parts:
//!
//! - [`transport`]: UDS (default, same host) and TCP listeners and
//!   connections, as boxed byte streams; UDS peers must run under our uid;
//! - [`auth`]: the secret every TCP connection proves before its first
//!   message is acted on;
//! - [`handshake`]: the I/O of the handshakes, whose decisions are
//!   furrow-proto's (`furrow_proto::handshake`);
//! - [`identity`]: what is checked of the identity (`Aid`) a peer claims;
//! - the chaos transport (`crate::chaos`): a seeded wrapper that
//!   fragments, delays and drops connections (`FURROW_CHAOS=seed=N;…` puts
//!   every channel of a tree behind it); feature `chaos` only;
//! - `fragment`: a wrapper that cuts every read and write into pieces of
//!   at most N bytes, so tests can prove that no read path assumes a whole
//!   frame arrives at once (`FURROW_FRAGMENT=1` puts every channel of a
//!   tree behind it); feature `chaos` only, as it is a test hook;
//! - [`FrameReader`]: turns a byte stream into messages, whatever the size
//!   of the pieces it arrives in;
//! - the channel's *writer task*, the only writer of the socket: it drains
//!   two queues — control frames first, then stream data — and coalesces
//!   everything queued into one buffer per `write` syscall;
//! - the channel's *reader task*, which routes each incoming message to the
//!   dialog waiting for it, or to the runtime for a new `Start`;
//! - [`alarm`]: the kernel timer that wakes a reader when its keepalive
//!   clock is due (no tokio timer stays armed while a channel lives).

mod alarm;
pub(crate) mod auth;
mod channel;
pub(crate) mod flow;
#[cfg(feature = "chaos")]
pub(crate) mod fragment;
pub(crate) mod handshake;
pub(crate) mod identity;
mod limits;
mod reader;
pub(crate) mod transport;

pub(crate) use channel::{Channel, Dispatch, Inbound, Offer, PEER_CLOSED, YieldRefused, peer_gone};
pub(crate) use limits::Limits;
pub(crate) use reader::{FrameReader, write_msg};
