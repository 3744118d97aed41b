//! Connecting to an actor by address.

use crate::ipc::handshake::drive;
use crate::ipc::{Channel, FrameReader, PEER_CLOSED, auth, peer_gone, transport};
use crate::portal::Portal;
use crate::runtime::{Actor, Handshaken, Link};
use crate::{Error, Result};
use furrow_proto::handshake::{self, Dialer, Failure, Handshake, Hello, Status};
use furrow_proto::{Addr, Aid, MsgKind, PROTO_VERSION};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connect to the actor listening on `addr`, run `body` with a portal to
/// it, then close the connection.
///
/// The connection is scoped to `body`: no channel outlives it. (Actors
/// started in a nursery come with their portal; this is for actors found
/// by address, such as one in another tree.)
///
/// ```no_run
/// #[furrow::remote]
/// async fn ping() -> String { "pong".into() }
///
/// # async fn demo(addr: furrow::Addr) -> furrow::Result<()> {
/// let answer = furrow::connect(&addr, async |p| p.run(ping, ()).await).await?;
/// assert_eq!(answer, "pong");
/// # Ok(()) }
/// ```
///
/// Errors: [`Error::Io`] if the address cannot be reached,
/// [`Error::TransportClosed`] if the peer closed or reset the connection
/// before answering (it is dying, or hangs up on everyone),
/// [`Error::Protocol`] if what answers is not a furrow actor of the same
/// protocol version, and `body`'s own error.
///
/// # Cancel safety
/// Nothing leaks. Dropped while connecting, the half-open connection is
/// dropped. Dropped while `body` runs, `body` is dropped, which cancels its
/// calls and contexts in flight (each queues a cancel request for the peer
/// from `Drop`), and then the connection's close is queued behind those
/// requests: they are sent, and the connection closes, without anybody
/// waiting.
pub async fn connect<R, E, B>(addr: &Addr, body: B) -> std::result::Result<R, E>
where
    B: AsyncFnOnce(&Portal) -> std::result::Result<R, E>,
    E: From<Error>,
{
    let portal = dial(addr).await.map_err(E::from)?;
    let guard = Dialled::new(&portal);
    let out = body(&portal).await;
    guard.close().await;
    out
}

/// Closes a connection this actor dialled for a scope (`connect`,
/// `find_actor`, …) when the scope ends: at a normal end with a flush,
/// awaited; when the scope's future is dropped mid-way (a `timeout`, a lost
/// `select!`), from `Drop`, queued without waiting. Without it a dropped
/// scope left its connection open and idle until the peer or this actor
/// ended, one more per timeout.
pub(crate) struct Dialled(Option<Arc<Channel>>);

impl Dialled {
    pub(crate) fn new(portal: &Portal) -> Dialled {
        Dialled(Some(portal.chan.clone()))
    }

    /// Close now and wait for the flush (bounded).
    ///
    /// # Cancel safety
    /// The close is queued on the first poll; dropping this future after
    /// that only stops waiting for it.
    pub(crate) async fn close(mut self) {
        if let Some(chan) = self.0.take() {
            chan.close().await;
        }
    }
}

impl Drop for Dialled {
    fn drop(&mut self) {
        if let Some(chan) = self.0.take() {
            chan.close_soon();
        }
    }
}

/// Dial `addr` and complete the handshake: a portal on a new channel.
pub(crate) async fn dial(addr: &Addr) -> Result<Portal> {
    let actor = Actor::ready().await?;
    let conn = transport::connect(addr).await.map_err(|e| Error::io(format!("cannot connect to {addr}"), e))?;
    let chan = handshake_outgoing(&actor, conn, addr, HANDSHAKE_TIMEOUT).await?;
    let mut portal = Portal::over(chan, &actor);
    portal.addrs = vec![addr.clone()].into();
    Ok(portal)
}

/// The dialling side of a connection's start: furrow-proto's [`Dialer`]
/// decides (over TCP, prove we know the secret and check the peer does;
/// then the `Aid` exchange), this does its I/O, checks the identity the
/// acceptor claims, and says what went wrong in furrow's terms. Until the
/// handshake is done, frames are limited to a few KiB. The channel is
/// registered with the actor (closed at its shutdown).
///
/// # Cancel safety
/// Cancel safe: dropping it drops the half-open connection.
pub(crate) async fn handshake_outgoing(
    actor: &Arc<Actor>,
    conn: transport::Conn,
    addr: &Addr,
    timeout: Duration,
) -> Result<Arc<Channel>> {
    let (tcp, peer_pid) = (conn.tcp, conn.peer_pid);
    let mut write = conn.write;
    let auth = if tcp { Some((actor.secret()?, auth::nonce()?)) } else { None };
    let limits = handshake::Limits { auth: auth::AUTH_TIMEOUT, aid: timeout, max_frame: actor.config.max_frame };
    let mut hs = Dialer::new(actor.hello(), auth, limits, Instant::now());
    let mut reader = FrameReader::new(conn.read, hs.read_limit());
    loop {
        drive(&mut hs, &mut reader, &mut write).await.map_err(|e| match peer_gone(&e) {
            Some(_) => Error::TransportClosed {
                peer: addr.to_string(),
                reason: format!("{PEER_CLOSED} during the handshake ({})", e.kind()),
            },
            None => Error::io(format!("handshake with {addr}"), e),
        })?;
        let verdict = match hs.status() {
            // The actor answering over UDS must be the process listening
            // there. (Which actor it is supposed to be, the caller checks:
            // a registry entry's uuid, for one.)
            Status::Verify(claim) => crate::ipc::identity::check(&claim.aid, peer_pid, None),
            Status::Done => break,
            Status::Failed(f) => return Err(dial_error(addr, f)),
            Status::Waiting | Status::Configure(_) => {
                return Err(Error::Protocol { peer: addr.to_string(), reason: "the handshake stopped".into() });
            }
        };
        hs.verified(verdict);
    }
    let Some(Hello { aid: peer, max_dialogs: peer_max_dialogs, .. }) = hs.peer().cloned() else {
        return Err(Error::Protocol { peer: addr.to_string(), reason: "the handshake ended without a peer".into() });
    };
    reader.set_max_frame(hs.read_limit());
    Ok(actor.open_channel(Handshaken { reader, write, peer, peer_pid, peer_max_dialogs }, Link::Dialled))
}

/// What a failed dialling handshake is, in furrow's terms: `Auth` for
/// anything about the secret or an identity (ours refused, or theirs),
/// `TransportClosed` for a peer that hung up once authenticated (it is
/// gone, most often an actor that died a moment ago, whose listener still
/// had us in its backlog: not "not a furrow actor"), and `Protocol` for
/// something that answers, but not as a furrow actor of our version.
fn dial_error(addr: &Addr, f: &Failure) -> Error {
    let peer = addr.to_string();
    let auth = |reason: String| Error::Auth { peer: addr.to_string(), reason };
    let protocol = |reason: String| Error::Protocol { peer: addr.to_string(), reason };
    // The secret exchange (TCP), before any `Aid`.
    let authenticating = |k: &MsgKind| matches!(k, MsgKind::Challenge | MsgKind::AuthOk);
    match f {
        Failure::Closed { waiting_for, .. } if authenticating(waiting_for) => {
            auth("the peer closed the connection before challenging us".into())
        }
        Failure::Closed { detail, .. } => Error::TransportClosed {
            peer,
            reason: match detail {
                Some(d) => format!("{PEER_CLOSED} during the handshake ({d})"),
                None => format!("{PEER_CLOSED} during the handshake"),
            },
        },
        Failure::Unreadable { waiting_for, reason } if authenticating(waiting_for) => {
            auth(format!("not a furrow actor: {reason}"))
        }
        Failure::Unreadable { reason, .. } => protocol(format!("is not a furrow actor: {reason}")),
        Failure::Unexpected { expected: MsgKind::Challenge, got } => auth(format!("expected a challenge, got {got:?}")),
        Failure::Unexpected { expected: MsgKind::AuthOk, got } => auth(format!("expected AuthOk, got {got:?}")),
        Failure::Unexpected { got: MsgKind::Challenge, .. } => {
            auth("the peer asks for authentication on a connection that is not TCP".into())
        }
        Failure::Unexpected { got, .. } => protocol(format!("answered {got:?} instead of Aid")),
        // Refused before authenticating (too many connections
        // authenticating, no file descriptor left), saying why.
        Failure::Refused { waiting_for, message } if authenticating(waiting_for) => auth(format!("refused: {message}")),
        // The acceptor refused us (our identity, or it is overloaded), and
        // said why.
        Failure::Refused { message, .. } => auth(message.clone()),
        Failure::Version { theirs } => protocol(format!("speaks protocol version {theirs}, we speak {PROTO_VERSION}")),
        Failure::BadNonce { len } => auth(format!("challenge nonce of {len} bytes, expected {}", handshake::NONCE_LEN)),
        Failure::BadProof => auth("the peer's proof is wrong: it does not know our secret".into()),
        Failure::ProofRefused => auth(f.to_string()),
        Failure::Timeout { waiting_for, after } if authenticating(waiting_for) => {
            auth(format!("no answer within {after:?}"))
        }
        Failure::Timeout { after, .. } => protocol(format!("no handshake within {after:?}")),
        Failure::Identity(why) => auth(format!("refused the peer: {why}")),
        Failure::Local(why) => protocol(why.clone()),
    }
}

/// This process's actor identity.
///
/// ```no_run
/// /// Which actor served this call.
/// #[furrow::remote]
/// async fn whoami() -> furrow::Result<String> {
///     Ok(furrow::local_aid()?.to_string())
/// }
/// ```
///
/// Errors: [`Error::Usage`] outside a furrow runtime.
pub fn local_aid() -> Result<Aid> {
    Ok(Actor::current()?.aid.clone())
}

/// The addresses this process's actor listens on.
///
/// ```no_run
/// # async fn demo() -> furrow::Result<()> {
/// let cfg = furrow::Config::new("service").bind(["tcp://0.0.0.0:0".parse().unwrap()]);
/// furrow::run_root(cfg, async {
///     // The TCP port the OS picked, to hand to clients on other hosts.
///     for addr in furrow::local_addrs()? {
///         println!("listening on {addr}");
///     }
///     Ok(())
/// })
/// .await?
/// # }
/// ```
///
/// Errors: [`Error::Usage`] outside a furrow runtime.
pub fn local_addrs() -> Result<Vec<Addr>> {
    Ok(Actor::current()?.addrs())
}
