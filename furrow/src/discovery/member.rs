//! An actor's side of discovery: join the registrar (or become it), stay
//! registered, and re-join when the registrar goes away.
//!
//! Order of a root's start ([`Discovery::Auto`]):
//!
//! 1. try every registry address in turn; the first furrow registrar that
//!    answers is joined (`register` over a channel kept open for the
//!    actor's life);
//! 2. if nobody answers anywhere, take the registry lock (a `flock` on the
//!    directory of the registry socket, so two roots starting at once cannot both
//!    decide they are alone and unlink each other's socket), try joining
//!    once more (someone may have won the race), then bind the registry
//!    addresses and serve;
//! 3. if something answers that is not a furrow registrar, fail with
//!    [`Error::Registry`] saying what answered.
//!
//! A child joins the registrar its parent gives it in the `SpawnSpec`,
//! before it reports `Ready`, so an actor is findable by the time
//! `start_actor` returns. It never becomes the registrar.
//!
//! When the registry channel closes while the actor lives (the registrar's
//! program ended), the actor re-joins with backoff; a root in `Auto` mode
//! may become the new registrar, and everyone else's re-registration goes
//! to it.

use super::registrar::{Page, Registrar};
use super::{ActorInfo, Lookup, REGISTRY_NS};
use crate::config::Discovery;
use crate::ipc::Channel;
use crate::ipc::transport::{self, Listener};
use crate::portal::Portal;
use crate::runtime::{Actor, lock};
use crate::{Error, ErrorKind, Result};
use furrow_proto::{Addr, Aid, Payload};
use std::sync::Arc;
use std::time::Duration;

/// Bound on the handshake with whatever answers at a registry address: a
/// silent foreign server must not hold a root's start for long.
const REGISTRY_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// How an actor takes part in discovery.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) addrs: Vec<Addr>,
    pub(crate) mode: Discovery,
    pub(crate) listed: bool,
    pub(crate) parent: Option<Aid>,
    /// A failed first join fails the actor's start (roots); otherwise it is
    /// logged and retried in the background (children).
    pub(crate) first_failure_is_fatal: bool,
}

enum Membership {
    Member(Arc<Channel>),
    Serving,
}

/// Join or serve, then keep the membership until the actor ends. Settles
/// the actor's discovery state after the first attempt.
pub(crate) async fn run(actor: Arc<Actor>, plan: Plan) {
    if plan.mode == Discovery::Off || plan.addrs.is_empty() {
        actor.settle_discovery(Ok(()));
        return;
    }
    // Every wait below races the actor's end, so shutdown never waits for
    // a registrar. Cancel safety: dropping a join in progress drops its
    // half-made channel, which the registrar sees as a registration that
    // closed.
    let first = tokio::select! {
        r = establish(&actor, &plan, false) => r,
        () = actor.cancel.cancelled() => return actor.settle_discovery(Ok(())),
    };
    let mut current = match first {
        Ok(m) => {
            actor.settle_discovery(Ok(()));
            Some(m)
        }
        Err(e) if plan.first_failure_is_fatal => {
            actor.settle_discovery(Err(e));
            return;
        }
        Err(e) => {
            tracing::warn!(actor = %actor.aid, "cannot register (will retry): {e}");
            actor.settle_discovery(Ok(()));
            None
        }
    };
    loop {
        match &current {
            Some(Membership::Serving) => return,
            Some(Membership::Member(chan)) => {
                tokio::select! {
                    () = chan.closed() => {}
                    () = actor.cancel.cancelled() => return,
                }
                *lock(&actor.registry) = None;
                tracing::info!(actor = %actor.aid, "lost the registrar; re-joining");
            }
            None => {}
        }
        current = None;
        let mut delay = Duration::from_millis(20);
        while current.is_none() {
            tokio::select! {
                r = establish(&actor, &plan, true) => match r {
                    Ok(m) => current = Some(m),
                    Err(e) => tracing::debug!(actor = %actor.aid, "re-joining the registry failed: {e}"),
                },
                () = actor.cancel.cancelled() => return,
            }
            if current.is_none() {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = actor.cancel.cancelled() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// One attempt at membership, following the plan's mode.
async fn establish(actor: &Arc<Actor>, plan: &Plan, rejoin: bool) -> Result<Membership> {
    let first = &plan.addrs[0];
    match plan.mode {
        Discovery::Off => Ok(Membership::Serving),
        Discovery::Join => match try_join(actor, plan).await? {
            Some(chan) => Ok(Membership::Member(chan)),
            None => Err(Error::Registry { addr: first.to_string(), reason: "no registrar serves it".into() }),
        },
        // A child (whose plan is `Join`) never gets here; a `Serve` root
        // that lost nothing never re-joins.
        Discovery::Serve if !rejoin => {
            if let Some(chan) = try_join(actor, plan).await? {
                chan.close().await;
                return Err(Error::Registry {
                    addr: first.to_string(),
                    reason: "a registrar already serves it (this root was configured to be the registrar)".into(),
                });
            }
            match become_registrar(actor, plan).await? {
                Some(m) => Ok(m),
                None => Err(Error::Registry { addr: first.to_string(), reason: "taken by another registrar".into() }),
            }
        }
        Discovery::Serve | Discovery::Auto => {
            // A few rounds: losing a bind race to another root means that
            // root is now serving, and the next round joins it.
            for _ in 0..10 {
                if let Some(chan) = try_join(actor, plan).await? {
                    return Ok(Membership::Member(chan));
                }
                if let Some(m) = become_registrar(actor, plan).await? {
                    return Ok(m);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(Error::Registry {
                addr: first.to_string(),
                reason: "could neither join nor serve it (another root keeps taking and releasing it)".into(),
            })
        }
    }
}

/// Join the first registrar that answers. `Ok(None)`: nobody listens at
/// any registry address.
async fn try_join(actor: &Arc<Actor>, plan: &Plan) -> Result<Option<Arc<Channel>>> {
    for addr in &plan.addrs {
        let conn = match transport::connect(addr).await {
            Ok(c) => c,
            // Nothing there (no file, refused, unreachable): try the next.
            Err(e) => {
                tracing::debug!(actor = %actor.aid, "no registrar at {addr}: {e}");
                continue;
            }
        };
        let chan = match crate::connect::handshake_outgoing(actor, conn, addr, REGISTRY_HANDSHAKE_TIMEOUT).await {
            Ok(c) => c,
            Err(e @ Error::Auth { .. }) => return Err(e),
            Err(e) => {
                return Err(Error::Registry {
                    addr: addr.to_string(),
                    reason: format!("something that is not a furrow registrar answers there ({e})"),
                });
            }
        };
        let portal = Portal::over(chan.clone(), actor);
        let answer = if plan.listed {
            let info = ActorInfo {
                aid: actor.aid.clone(),
                addrs: actor.addrs(),
                parent: plan.parent.clone(),
                registrar: false,
                registry: Vec::new(),
                host: crate::runtime::host_name().to_owned(),
            };
            portal.call_internal(REGISTRY_NS, "register", &Kw { info: Some(info), who: None }).await
        } else {
            portal
                .call_internal(REGISTRY_NS, "query", &Kw { info: None, who: Some(Lookup::Uuid(uuid::Uuid::nil())) })
                .await
        };
        match answer {
            Ok(_) => {
                *lock(&actor.registry) = Some(portal);
                return Ok(Some(chan));
            }
            // A registrar that refuses this registration: another
            // connection holds an entry under our uuid (an impostor's, or
            // our own previous registry channel whose loss the registrar
            // has not seen yet; a re-join retries with backoff).
            Err(Error::Remote(r)) if *r.kind() == ErrorKind::RegistrationRefused => {
                chan.close().await;
                return Err(Error::Registry {
                    addr: addr.to_string(),
                    reason: format!("the registrar {} refused our registration: {}", chan.peer, r.message),
                });
            }
            Err(Error::Remote(r)) => {
                chan.close().await;
                return Err(Error::Registry {
                    addr: addr.to_string(),
                    reason: format!("{} is a furrow actor but not a registrar ({})", chan.peer, r.message),
                });
            }
            // The registrar went away in the middle (it is ending): as if
            // nobody were there.
            Err(e) => {
                tracing::debug!(actor = %actor.aid, "registrar at {addr} went away while joining: {e}");
                chan.close().await;
            }
        }
    }
    Ok(None)
}

/// Arguments of `register` / `query` (absent fields are not sent).
#[derive(serde::Serialize)]
struct Kw {
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<ActorInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    who: Option<Lookup>,
}

/// Bind the registry addresses and serve. `Ok(None)`: another root took
/// them first (the caller joins it).
async fn become_registrar(actor: &Arc<Actor>, plan: &Plan) -> Result<Option<Membership>> {
    let _lock = match plan.addrs.iter().find_map(|a| if let Addr::Uds(p) = a { Some(p.clone()) } else { None }) {
        Some(path) => Some(registry_lock(&path).await?),
        None => None,
    };
    // Under the lock, look again: whoever held it before us may serve now.
    if let Some(chan) = try_join(actor, plan).await? {
        return Ok(Some(Membership::Member(chan)));
    }
    // A TCP registry authenticates every connection: have the secret
    // before serving (a missing or unsafe secret fails here, once).
    if plan.addrs.iter().any(|a| matches!(a, Addr::Tcp(_))) {
        actor.secret()?;
    }
    let mut listeners = Vec::new();
    for addr in &plan.addrs {
        if let Addr::Uds(p) = addr {
            use std::os::unix::fs::FileTypeExt;
            if let Ok(m) = std::fs::symlink_metadata(p)
                && !m.file_type().is_socket()
            {
                return Err(Error::Registry {
                    addr: addr.to_string(),
                    reason: "a file that is not a socket is in the way (remove it, or choose another registry address)"
                        .into(),
                });
            }
        }
        match Listener::bind(addr) {
            Ok(l) => listeners.push(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                tracing::debug!(actor = %actor.aid, "registry address {addr} taken meanwhile; joining instead");
                return Ok(None);
            }
            Err(e) => return Err(Error::io(format!("cannot serve the registry on {addr}"), e)),
        }
    }
    let registrar = Arc::new(Registrar::new(actor.config.max_frame));
    if plan.listed {
        let info = ActorInfo {
            aid: actor.aid.clone(),
            addrs: actor.addrs(),
            parent: plan.parent.clone(),
            registrar: true,
            registry: listeners.iter().map(Listener::addr).collect(),
            host: crate::runtime::host_name().to_owned(),
        };
        // A new table holds no entry of anyone else: cannot be refused.
        registrar.register(None, info).map_err(|reason| Error::Registry { addr: plan.addrs[0].to_string(), reason })?;
    }
    actor.serve_registry(registrar, listeners)?;
    tracing::info!(actor = %actor.aid, addrs = ?plan.addrs, "serving the registry");
    Ok(Some(Membership::Serving))
}

/// An exclusive `flock` on the directory holding the registry socket,
/// taken on a blocking thread and released when the returned file closes.
/// Locking the directory itself leaves no lock file behind.
///
/// # Cancel safety
/// Dropping the future does not stop the blocking thread: it still takes
/// the lock, then drops the file at once (releasing it), since nobody
/// awaits its result. So a cancelled attempt delays other roots at most
/// until it was granted, and never holds the lock.
async fn registry_lock(path: &std::path::Path) -> Result<std::fs::File> {
    let dir = path.parent().unwrap_or(std::path::Path::new("/")).to_path_buf();
    crate::config::ensure_private_dir(&dir)?;
    let f = std::fs::File::open(&dir).map_err(|e| Error::io(format!("cannot open {}", dir.display()), e))?;
    let f = tokio::task::spawn_blocking(move || {
        // Released when `f` is closed.
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map(|()| f).map_err(std::io::Error::from)
    })
    .await
    .map_err(|e| Error::usage(format!("registry lock task failed: {e}")))?
    .map_err(|e| Error::io(format!("cannot lock {}", dir.display()), e))?;
    Ok(f)
}

/// Tell the registrar this actor is leaving, without waiting for its
/// answer: the request is queued on the registry channel now, and shutdown
/// flushes queued frames before it closes the channel (the registrar also
/// drops the entry when the channel closes, so a lost request loses
/// nothing). Not waiting keeps a round trip off every actor's exit.
pub(crate) fn leave(actor: &Arc<Actor>) {
    let portal = lock(&actor.registry).take();
    if let Some(p) = portal {
        #[derive(serde::Serialize)]
        struct A {
            uuid: uuid::Uuid,
        }
        match Payload::encode(&A { uuid: actor.aid.uuid })
            .map_err(Error::from)
            .and_then(|kw| crate::dialog::OpenDialog::start(&p.chan, REGISTRY_NS, "unregister", kw))
        {
            // The dialog waits for its answer on a task of its own, bounded,
            // so dropping it early does not send a cancel for it.
            Ok(mut d) => {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_millis(500), d.call_result("unregister")).await;
                });
            }
            Err(e) => tracing::debug!(actor = %actor.aid, "cannot unregister: {e}"),
        }
    }
    if let Some(r) = actor.registrar() {
        // Our own entry (registered with no channel): never refused.
        let _ = r.unregister(None, actor.aid.uuid);
    }
}

/// Query the registry this actor belongs to (locally when it is the
/// registrar).
pub(crate) async fn request(actor: &Arc<Actor>, func: &str, who: &Lookup) -> Result<Payload> {
    if let Some(r) = actor.registrar() {
        let kw = Payload::encode(&Kw { info: None, who: Some(who.clone()) })?;
        return r.handle(0, func, kw).await.map_err(|f| Error::usage(f.message));
    }
    registry_portal(actor)?.call_internal(REGISTRY_NS, func, &Kw { info: None, who: Some(who.clone()) }).await
}

/// Every registered actor matching `who`, newest first, however large the
/// listing: asked page by page (`query_page`), each page within this
/// actor's frame limit and the registrar's (see
/// [`Registrar::query_page`] for what a listing made of pages holds).
/// Before, the whole listing was one answer: over the registrar's frame
/// limit it was never sent, and the asker waited forever (issue 14).
///
/// # Cancel safety
/// Cancel safe: it only reads; a dropped page request is cancelled at the
/// registrar.
pub(crate) async fn query(actor: &Arc<Actor>, who: &Lookup) -> Result<Vec<ActorInfo>> {
    if let Some(r) = actor.registrar() {
        return Ok(r.query(who));
    }
    let portal = registry_portal(actor)?;
    #[derive(serde::Serialize)]
    struct PageKw<'a> {
        who: &'a Lookup,
        before: Option<u64>,
        max_bytes: u64,
    }
    let max_bytes = u64::try_from(actor.config.max_frame).unwrap_or(u64::MAX);
    let (mut all, mut before, mut omitted) = (Vec::new(), None, 0);
    loop {
        let answer = portal.call_internal(REGISTRY_NS, "query_page", &PageKw { who, before, max_bytes }).await;
        let page: Page = match answer {
            Ok(p) => p.decode()?,
            // A registrar of an earlier version lists in one answer (over
            // its frame limit, that answer is an error saying so).
            Err(Error::Remote(r)) if *r.kind() == ErrorKind::FunctionNotFound && before.is_none() => {
                let kw = Kw { info: None, who: Some(who.clone()) };
                return Ok(portal.call_internal(REGISTRY_NS, "query", &kw).await?.decode()?);
            }
            Err(e) => return Err(e),
        };
        all.extend(page.entries);
        omitted += page.omitted;
        match page.next {
            None => break,
            // Each page must move the cursor down, or a broken registrar
            // could keep this loop going for ever.
            Some(next) if before.is_none_or(|b| next < b) => before = Some(next),
            Some(next) => {
                return Err(Error::Protocol {
                    peer: portal.aid().to_string(),
                    reason: format!("registry listing page did not advance (cursor {next} after {before:?})"),
                });
            }
        }
    }
    if omitted > 0 {
        tracing::warn!(
            actor = %actor.aid,
            omitted,
            "registry entries matching {who} left out of the listing: {omitted}, each larger than this \
             actor's frame limit ({} bytes)",
            actor.config.max_frame
        );
    }
    Ok(all)
}

/// The portal to the registrar this actor joined.
fn registry_portal(actor: &Arc<Actor>) -> Result<Portal> {
    let portal = lock(&actor.registry).clone();
    match portal {
        Some(p) => Ok(p),
        None => Err(Error::Registry {
            addr: actor.config.resolved_registry()?.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            reason: if actor.config.discovery == Discovery::Off {
                "discovery is off for this actor (Discovery::Off)".into()
            } else {
                "not connected to a registrar (it went away; re-joining)".into()
            },
        }),
    }
}
