//! Connecting to an actor by address.

use crate::ipc::{Channel, FrameReader, PEER_CLOSED, ReadError, auth, peer_gone, transport, write_msg};
use crate::portal::Portal;
use crate::runtime::{Actor, Handshaken, Link, aid_msg};
use crate::{Error, Result};
use furrow_proto::{Addr, Aid, Msg, PROTO_VERSION};
use std::sync::Arc;
use std::time::Duration;

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

/// The dialling side of a connection's start: over TCP, prove we know the
/// secret (and check the peer does); then the `Aid` exchange. Until both
/// are done, frames are limited to a few KiB. The channel is registered
/// with the actor (closed at its shutdown).
///
/// # Cancel safety
/// Cancel safe: dropping it drops the half-open connection.
pub(crate) async fn handshake_outgoing(
    actor: &Arc<Actor>,
    conn: transport::Conn,
    addr: &Addr,
    timeout: Duration,
) -> Result<Arc<Channel>> {
    let max = actor.config.max_frame;
    let (tcp, peer_pid) = (conn.tcp, conn.peer_pid);
    let mut write = conn.write;
    let mut reader = FrameReader::new(conn.read, auth::PRE_AUTH_MAX_FRAME);
    if tcp {
        let secret = actor.secret()?;
        auth::dial(&mut reader, &mut write, &secret, &addr.to_string()).await?;
    }
    // A peer that closes or resets the connection before answering has
    // not said it is something else: it is gone (most often an actor that
    // died a moment ago, whose listener still had us in its backlog), not
    // "not a furrow actor", which is for what answers with something else.
    let hung_up = |e: Option<&std::io::Error>| Error::TransportClosed {
        peer: addr.to_string(),
        reason: match e {
            Some(e) => format!("{PEER_CLOSED} during the handshake ({})", e.kind()),
            None => format!("{PEER_CLOSED} during the handshake"),
        },
    };
    write_msg(&mut write, &aid_msg(&actor.aid, None, Some(actor.config.max_dialogs_per_peer)), max).await.map_err(
        |e| match peer_gone(&e) {
            Some(_) => hung_up(Some(&e)),
            None => Error::io(format!("handshake with {addr}"), e),
        },
    )?;
    let not_furrow = |what: String| Error::Protocol { peer: addr.to_string(), reason: what };
    let (peer, peer_max_dialogs) = match tokio::time::timeout(timeout, reader.next()).await {
        Ok(Ok(Some(Msg::Aid { name, uuid, pid, proto, max_dialogs, .. }))) if proto == PROTO_VERSION => {
            (Aid { name, uuid, pid }, max_dialogs)
        }
        Ok(Ok(Some(Msg::Aid { proto, .. }))) => {
            return Err(not_furrow(format!("speaks protocol version {proto}, we speak {PROTO_VERSION}")));
        }
        // The acceptor refused us (our identity, or it is overloaded), and
        // said why.
        Ok(Ok(Some(Msg::Error { message, .. }))) => {
            return Err(Error::Auth { peer: addr.to_string(), reason: message });
        }
        Ok(Ok(Some(Msg::Challenge { .. }))) => {
            return Err(Error::Auth {
                peer: addr.to_string(),
                reason: "the peer asks for authentication on a connection that is not TCP".into(),
            });
        }
        Ok(Ok(Some(other))) => {
            return Err(not_furrow(format!("answered {:?} instead of Aid", other.kind())));
        }
        Ok(Ok(None)) => return Err(hung_up(None)),
        Ok(Err(ReadError::Io(e))) if peer_gone(&e).is_some() => return Err(hung_up(Some(&e))),
        Ok(Err(e)) => return Err(not_furrow(format!("is not a furrow actor: {e}"))),
        Err(_) => {
            return Err(not_furrow(format!("no handshake within {timeout:?}")));
        }
    };
    // The actor answering over UDS must be the process listening there.
    // (Which actor it is supposed to be, the caller checks: a registry
    // entry's uuid, for one.)
    if let Err(why) = crate::ipc::identity::check(&peer, peer_pid, None) {
        return Err(Error::Auth { peer: addr.to_string(), reason: format!("refused the peer: {why}") });
    }
    reader.set_max_frame(max);
    Ok(actor.open_channel(Handshaken { reader, write, peer, peer_pid, peer_max_dialogs }, Link::Dialled))
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
///     Ok::<_, furrow::Error>(())
/// })
/// .await?
/// # }
/// ```
///
/// Errors: [`Error::Usage`] outside a furrow runtime.
pub fn local_addrs() -> Result<Vec<Addr>> {
    Ok(Actor::current()?.addrs())
}
