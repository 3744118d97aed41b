//! Connecting to an actor by address.

use crate::ipc::{Channel, FrameReader, transport, write_msg};
use crate::portal::Portal;
use crate::runtime::{Actor, ActorDispatch, aid_msg};
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
/// [`Error::Protocol`] if what answers is not a furrow actor of the same
/// protocol version, and `body`'s own error.
///
/// # Cancel safety
/// Dropping the future drops the connection; the peer sees it close and
/// cancels whatever it was running for this caller.
pub async fn connect<R, E, B>(addr: &Addr, body: B) -> std::result::Result<R, E>
where
    B: AsyncFnOnce(&Portal) -> std::result::Result<R, E>,
    E: From<Error>,
{
    let portal = dial(addr).await.map_err(E::from)?;
    let out = body(&portal).await;
    portal.chan.close().await;
    out
}

async fn dial(addr: &Addr) -> Result<Portal> {
    let actor = Actor::current()?;
    let max = actor.config.max_frame;
    let conn = transport::connect(addr).await.map_err(|e| Error::io(format!("cannot connect to {addr}"), e))?;
    let mut write = conn.write;
    let mut reader = FrameReader::new(conn.read, max);
    write_msg(&mut write, &aid_msg(&actor.aid, None), max)
        .await
        .map_err(|e| Error::io(format!("handshake with {addr}"), e))?;
    let not_furrow = |what: String| Error::Protocol { peer: addr.to_string(), reason: what };
    let peer = match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next()).await {
        Ok(Ok(Some(Msg::Aid { name, uuid, pid, proto, .. }))) if proto == PROTO_VERSION => Aid { name, uuid, pid },
        Ok(Ok(Some(Msg::Aid { proto, .. }))) => {
            return Err(not_furrow(format!("speaks protocol version {proto}, we speak {PROTO_VERSION}")));
        }
        Ok(Ok(Some(other))) => {
            return Err(not_furrow(format!("answered {:?} instead of Aid", other.kind())));
        }
        Ok(Ok(None)) => {
            return Err(not_furrow("closed the connection during the handshake".into()));
        }
        Ok(Err(e)) => return Err(not_furrow(format!("is not a furrow actor: {e}"))),
        Err(_) => {
            return Err(not_furrow(format!("no handshake within {HANDSHAKE_TIMEOUT:?}")));
        }
    };
    let chan = Channel::start(
        reader,
        write,
        peer,
        actor.aid.clone(),
        true,
        max,
        Arc::new(ActorDispatch(actor.clone())),
        &actor.tracker,
    );
    actor.register_channel(&chan);
    Ok(Portal {
        chan,
        addrs: vec![addr.clone()].into(),
        cancel_ack_timeout: actor.config.cancel_ack_timeout,
        exit_timeout: actor.config.exit_timeout,
        stream_window: actor.config.stream_window,
        expected_exit: None,
    })
}

/// This process's actor identity.
///
/// Errors: [`Error::Usage`] outside a furrow runtime.
pub fn local_aid() -> Result<Aid> {
    Ok(Actor::current()?.aid.clone())
}

/// The addresses this process's actor listens on.
///
/// Errors: [`Error::Usage`] outside a furrow runtime.
pub fn local_addrs() -> Result<Vec<Addr>> {
    Ok(Actor::current()?.addrs())
}
