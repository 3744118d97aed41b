//! Discovery: finding actors by name, across trees and programs.
//!
//! One *registrar* per system maps each live actor's [`Aid`] to the
//! addresses it listens on. Every actor registers when it starts (a child
//! before its parent's `start_actor` returns) and unregisters when it ends;
//! an actor that dies without unregistering (SIGKILL) is dropped as soon as
//! the registrar sees its registry connection close.
//!
//! The registrar is whichever root first serves the *registry address*
//! (`uds://<socket_dir>/registry.sock` by default; see
//! [`Config::registry`](crate::Config::registry)). A root started later with
//! the same address joins it, so programs started separately form one
//! system. If the registrar's program ends, the remaining roots take over
//! and everyone re-registers.
//!
//! Lookups: by name (names need not be unique: the newest registration
//! wins) or by uuid (exact). [`find_actor`] and [`wait_for_actor`] give a
//! connected [`Portal`] scoped to a block, [`find_all_actors`] portals to
//! every match; [`query_actors`] and
//! [`list_actors`] give the entries as data, and [`connect_actor`] connects
//! to one of them.
//!
//! ```no_run
//! #[furrow::remote]
//! async fn greet(who: String) -> String { format!("hello {who}") }
//!
//! # async fn demo() -> furrow::Result<()> {
//! // Somewhere, in any program of the system: an actor named "greeter".
//! let answer = furrow::wait_for_actor("greeter", async |p| p.run(greet, ("you".to_string(),)).await).await?;
//! assert_eq!(answer, "hello you");
//! for a in furrow::list_actors().await? {
//!     println!("{} at {:?}", a.aid, a.addrs);
//! }
//! # Ok(()) }
//! ```

pub(crate) mod member;
pub(crate) mod registrar;

use crate::connect::Dialled;
use crate::portal::Portal;
use crate::runtime::Actor;
use crate::{Error, Result};
use furrow_proto::{Addr, Aid};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Namespace of the registry's requests on the wire.
pub(crate) const REGISTRY_NS: &str = "furrow::registry";

/// One registered actor.
///
/// ```no_run
/// # async fn demo() -> furrow::Result<()> {
/// // Print the system as a forest: roots first, each with its children.
/// let all = furrow::list_actors().await?;
/// for root in all.iter().filter(|a| a.parent.is_none()) {
///     let mark = if root.registrar { " (registrar)" } else { "" };
///     println!("{}{mark}", root.aid);
///     for child in all.iter().filter(|a| a.parent.as_ref() == Some(&root.aid)) {
///         println!("  {} at {:?}", child.aid, child.addrs);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ActorInfo {
    /// Who it is.
    pub aid: Aid,
    /// Every address it listens on (UDS and/or TCP).
    pub addrs: Vec<Addr>,
    /// The actor that spawned it (`None` for a root).
    #[serde(default)]
    pub parent: Option<Aid>,
    /// Whether it is the registrar.
    #[serde(default)]
    pub registrar: bool,
    /// For the registrar: the registry addresses it serves.
    #[serde(default)]
    pub registry: Vec<Addr>,
    /// The host it runs on: its kernel's host name (of its UTS namespace),
    /// as the actor itself reports it. Empty from a peer older than this
    /// field.
    #[serde(default)]
    pub host: String,
}

/// What to look up: a name (the newest registration of that name wins), a
/// uuid (exact), or everything.
///
/// ```
/// use furrow::Lookup;
/// assert_eq!(Lookup::from("worker"), Lookup::Name("worker".into()));
/// let u = uuid::Uuid::nil();
/// assert_eq!(Lookup::from(u), Lookup::Uuid(u));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Lookup {
    /// Actors called this.
    Name(String),
    /// The actor with this uuid.
    Uuid(uuid::Uuid),
    /// Every actor.
    All,
}

impl std::fmt::Display for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lookup::Name(n) => write!(f, "an actor named {n:?}"),
            Lookup::Uuid(u) => write!(f, "the actor with uuid {u}"),
            Lookup::All => f.write_str("any actor"),
        }
    }
}

impl From<&str> for Lookup {
    fn from(s: &str) -> Self {
        Lookup::Name(s.to_owned())
    }
}

impl From<String> for Lookup {
    fn from(s: String) -> Self {
        Lookup::Name(s)
    }
}

impl From<uuid::Uuid> for Lookup {
    fn from(u: uuid::Uuid) -> Self {
        Lookup::Uuid(u)
    }
}

impl From<&Aid> for Lookup {
    fn from(a: &Aid) -> Self {
        Lookup::Uuid(a.uuid)
    }
}

/// Every registered actor matching `who`, newest registration first.
///
/// However many there are: the registrar answers in pages that fit both
/// sides' frame limits ([`Config::max_frame`](crate::Config::max_frame)),
/// fetched one after the other. The listing holds every actor registered
/// before it began and still registered when it ended, each once; actors
/// registered meanwhile are not in it.
///
/// ```no_run
/// # async fn demo() -> furrow::Result<()> {
/// let workers = furrow::query_actors("worker").await?;
/// println!("{} actors named worker; newest: {:?}", workers.len(), workers.first().map(|w| &w.aid));
/// # Ok(()) }
/// ```
///
/// Errors: [`Error::Registry`] when this actor is not connected to a
/// registrar (discovery is off, or the registrar went away and a new one is
/// not joined yet); [`Error::Usage`] outside a furrow runtime.
///
/// # Cancel safety
/// Cancel safe: it only reads; a dropped query is cancelled at the
/// registrar.
pub async fn query_actors(who: impl Into<Lookup>) -> Result<Vec<ActorInfo>> {
    let actor = Actor::ready().await?;
    member::query(&actor, &who.into()).await
}

/// Every registered actor, newest registration first (what `furrow ls`
/// shows).
///
/// ```no_run
/// # async fn demo() -> furrow::Result<()> {
/// for a in furrow::list_actors().await? {
///     println!("{} {:?} parent={:?}", a.aid, a.addrs, a.parent.map(|p| p.name));
/// }
/// # Ok(()) }
/// ```
///
/// Errors: as [`query_actors`].
///
/// # Cancel safety
/// Cancel safe, as [`query_actors`].
pub async fn list_actors() -> Result<Vec<ActorInfo>> {
    query_actors(Lookup::All).await
}

/// Connect to the newest actor matching `who` and run `body` with a portal
/// to it (`None` if no such actor is registered), then close the
/// connection.
///
/// An entry whose actor is gone (it died a moment ago and the registrar
/// has not noticed yet: its socket refuses or resets the connection, or
/// its socket file is gone) is skipped, as [`wait_for_actor`] skips it:
/// the next newest match is used, and `body` gets `None` when none is
/// left.
///
/// ```no_run
/// #[furrow::remote]
/// async fn ping() -> u32 { 1 }
///
/// # async fn demo() -> furrow::Result<()> {
/// let n = furrow::find_actor("pinger", async |p| match p {
///     Some(p) => p.run(ping, ()).await,
///     None => Ok(0),
/// })
/// .await?;
/// # Ok(()) }
/// ```
///
/// Errors: those of [`query_actors`]; [`Error::Io`] (or [`Error::Auth`])
/// when the actor is registered but cannot be reached for another reason
/// than being gone (an unreachable host, a timeout); [`Error::Protocol`]
/// when what answers at its address is not a furrow actor; and `body`'s
/// own.
///
/// # Cancel safety
/// As [`connect`](crate::connect): dropped during the lookup, the query is
/// cancelled at the registrar; dropped while connecting, the half-open
/// connection is dropped; dropped in `body`, `body`'s calls in flight are
/// cancelled and the connection is closed after their cancel requests
/// (queued from `Drop`, nothing waits).
pub async fn find_actor<R, E, B>(who: impl Into<Lookup>, body: B) -> std::result::Result<R, E>
where
    B: AsyncFnOnce(Option<&Portal>) -> std::result::Result<R, E>,
    E: From<Error>,
{
    let found = query_actors(who).await.map_err(E::from)?;
    for info in &found {
        match dial_entry(info).await {
            Ok(portal) => {
                let guard = Dialled::new(&portal);
                let out = body(Some(&portal)).await;
                guard.close().await;
                return out;
            }
            Err(Unreached { error, gone: true }) => {
                tracing::debug!("{} is registered but gone ({error}): skipped", info.aid)
            }
            Err(Unreached { error, gone: false }) => return Err(E::from(error)),
        }
    }
    body(None).await
}

/// Connect to every actor matching `who` (newest first) and run `body` with
/// portals to all of them, then close the connections. An entry whose
/// actor cannot be reached (it died a moment ago and the registrar has not
/// noticed yet) is left out; an [`Error::Auth`] is not.
///
/// ```no_run
/// #[furrow::remote]
/// async fn load() -> f64 { 0.5 }
///
/// # async fn demo() -> furrow::Result<()> {
/// let loads = furrow::find_all_actors("worker", async |ps| {
///     let mut v = Vec::new();
///     for p in ps {
///         v.push(p.run(load, ()).await?);
///     }
///     furrow::Ok(v)
/// })
/// .await?;
/// # Ok(()) }
/// ```
///
/// Errors: those of [`query_actors`], [`Error::Auth`], and `body`'s own.
///
/// # Cancel safety
/// As [`find_actor`]: dropped during the lookup, the query is cancelled at
/// the registrar; dropped later, `body`'s calls in flight are cancelled and
/// every connection made is closed (queued from `Drop`).
pub async fn find_all_actors<R, E, B>(who: impl Into<Lookup>, body: B) -> std::result::Result<R, E>
where
    B: AsyncFnOnce(&[Portal]) -> std::result::Result<R, E>,
    E: From<Error>,
{
    let found = query_actors(who).await.map_err(E::from)?;
    let dialled = futures::future::join_all(found.iter().map(dial_info)).await;
    let mut portals = Vec::new();
    let mut auth_error = None;
    let mut guards = Vec::new();
    for (info, d) in found.iter().zip(dialled) {
        match d {
            Ok(p) => {
                guards.push(Dialled::new(&p));
                portals.push(p);
            }
            Err(e @ Error::Auth { .. }) => auth_error = Some(e),
            Err(e) => tracing::debug!("{} is registered but unreachable: {e}", info.aid),
        }
    }
    let out = match auth_error {
        Some(e) => Err(E::from(e)),
        None => body(&portals).await,
    };
    futures::future::join_all(guards.into_iter().map(Dialled::close)).await;
    out
}

/// Wait until an actor matching `who` is registered, connect to it and run
/// `body` with a portal to it, then close the connection.
///
/// It keeps waiting through a change of registrar, and skips an entry whose
/// actor died before the registrar noticed. Bound it with
/// `tokio::time::timeout` if the actor may never come.
///
/// ```no_run
/// #[furrow::remote]
/// async fn status() -> String { "up".into() }
///
/// # async fn demo() -> anyhow::Result<()> {
/// let wait = furrow::wait_for_actor("db", async |p| p.run(status, ()).await);
/// let s = tokio::time::timeout(std::time::Duration::from_secs(10), wait).await??;
/// # Ok(()) }
/// ```
///
/// Errors: [`Error::Auth`] when the actor found refuses us; [`Error::Usage`]
/// outside a furrow runtime or with discovery off; and `body`'s own.
///
/// # Cancel safety
/// Dropping it while waiting cancels the wait at the registrar (nothing is
/// lost). Dropped in `body`, `body`'s calls in flight are cancelled and the
/// connection is closed after their cancel requests (queued from `Drop`).
pub async fn wait_for_actor<R, E, B>(who: impl Into<Lookup>, body: B) -> std::result::Result<R, E>
where
    B: AsyncFnOnce(&Portal) -> std::result::Result<R, E>,
    E: From<Error>,
{
    let who = who.into();
    let actor = Actor::ready().await.map_err(E::from)?;
    if actor.config.discovery == crate::Discovery::Off && actor.registrar().is_none() {
        return Err(E::from(Error::usage("wait_for_actor: discovery is off for this actor (Discovery::Off)")));
    }
    let portal = loop {
        let info = match member::request(&actor, "wait", &who).await.and_then(|p| Ok(p.decode::<ActorInfo>()?)) {
            Ok(info) => info,
            // No registrar right now (it is changing hands), or it went
            // away during the wait (its channel closed, or it cancelled our
            // wait while shutting down): wait on the next one.
            Err(Error::Registry { .. } | Error::TransportClosed { .. } | Error::ContextCancelled { .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(E::from(e)),
        };
        match dial_info(&info).await {
            Ok(p) => break p,
            Err(e @ Error::Auth { .. }) => return Err(E::from(e)),
            // Registered but gone (killed; the registrar will notice its
            // channel close in a moment): look again.
            Err(e) => {
                tracing::debug!("{} is registered but unreachable ({e}); waiting", info.aid);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let guard = Dialled::new(&portal);
    let out = body(&portal).await;
    guard.close().await;
    out
}

/// Connect to a registered actor (an entry from [`query_actors`] or
/// [`list_actors`]), run `body` with a portal to it, then close the
/// connection.
///
/// Its addresses are tried in this order: UDS sockets that exist on this
/// host, then TCP, each in the order the actor listed them; the first that
/// connects and authenticates is used. The portal's
/// [`addrs`](Portal::addrs) are all of the actor's addresses.
///
/// ```no_run
/// #[furrow::remote]
/// async fn ping() -> u32 { 1 }
///
/// # async fn demo() -> furrow::Result<()> {
/// // Ping every actor named "worker", not only the newest.
/// for w in furrow::query_actors("worker").await? {
///     furrow::connect_actor(&w, async |p| p.run(ping, ()).await).await?;
/// }
/// # Ok(()) }
/// ```
///
/// Errors: [`Error::Io`] listing every address tried when none could be
/// reached; [`Error::Auth`] when a TCP peer refuses us; `body`'s own.
///
/// # Cancel safety
/// As [`connect`](crate::connect): dropped while connecting, the half-open
/// connection is dropped; dropped in `body`, `body`'s calls in flight are
/// cancelled and the connection is closed after their cancel requests
/// (queued from `Drop`).
pub async fn connect_actor<R, E, B>(info: &ActorInfo, body: B) -> std::result::Result<R, E>
where
    B: AsyncFnOnce(&Portal) -> std::result::Result<R, E>,
    E: From<Error>,
{
    let portal = dial_info(info).await.map_err(E::from)?;
    let guard = Dialled::new(&portal);
    let out = body(&portal).await;
    guard.close().await;
    out
}

/// The order in which an actor's addresses are tried.
fn reachable_order(addrs: &[Addr]) -> Vec<&Addr> {
    let uds = addrs.iter().filter(|a| matches!(a, Addr::Uds(p) if p.exists()));
    let tcp = addrs.iter().filter(|a| matches!(a, Addr::Tcp(_)));
    uds.chain(tcp).collect()
}

async fn dial_info(info: &ActorInfo) -> Result<Portal> {
    dial_entry(info).await.map_err(|u| u.error)
}

/// A registered actor that could not be reached, and whether that is
/// because it is gone.
struct Unreached {
    error: Error,
    /// Every address said the actor is not there any more: its socket
    /// refused or reset the connection (or hung up during the handshake),
    /// its socket file is gone, or another actor serves the address now.
    /// The registrar drops such an entry when it notices the actor's
    /// registry channel close, a moment later.
    gone: bool,
}

/// Whether a failed dial says nobody is serving there any more (as
/// opposed to an unreachable host, a timeout, or something that answered
/// and is not furrow).
fn says_gone(e: &Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionRefused, ConnectionReset, NotFound};
    match e {
        Error::TransportClosed { .. } => true,
        Error::Io { source, .. } => {
            matches!(source.kind(), ConnectionRefused | ConnectionReset | BrokenPipe | ConnectionAborted | NotFound)
        }
        _ => false,
    }
}

async fn dial_entry(info: &ActorInfo) -> std::result::Result<Portal, Unreached> {
    let mut tried = Vec::new();
    let mut gone = true;
    for addr in reachable_order(&info.addrs) {
        match crate::connect::dial(addr).await {
            Ok(mut p) => {
                if p.aid().uuid != info.aid.uuid {
                    // The address was reused by another actor since.
                    tried.push(format!("{addr}: now served by {}", p.aid()));
                    p.chan.close().await;
                    continue;
                }
                p.addrs = info.addrs.clone().into();
                return Ok(p);
            }
            Err(e @ Error::Auth { .. }) => return Err(Unreached { error: e, gone: false }),
            Err(e) => {
                gone &= says_gone(&e);
                tried.push(format!("{addr}: {e}"));
            }
        }
    }
    if tried.is_empty() {
        // Only UDS sockets whose files are not there (any TCP address is
        // always tried): removed when the actor ended, by itself or by
        // its reaper. (A UDS-only actor of another host cannot be told
        // apart from here; it could not be reached from here either.)
        tried.push(format!("none of its addresses is reachable from here: {:?}", info.addrs));
    }
    let error = Error::io(
        format!("cannot reach {}", info.aid),
        std::io::Error::new(std::io::ErrorKind::NotConnected, tried.join("; ")),
    );
    Err(Unreached { error, gone })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uds_that_exist_come_before_tcp() {
        let here = std::env::temp_dir();
        let addrs = vec![
            Addr::Tcp("10.0.0.1:1".into()),
            Addr::Uds("/nonexistent/x.sock".into()),
            Addr::Uds(here.clone()),
            Addr::Tcp("10.0.0.2:2".into()),
        ];
        let order: Vec<String> = reachable_order(&addrs).into_iter().map(ToString::to_string).collect();
        assert_eq!(
            order,
            vec![Addr::Uds(here).to_string(), "tcp://10.0.0.1:1".to_string(), "tcp://10.0.0.2:2".to_string()]
        );
    }
}
