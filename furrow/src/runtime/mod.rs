//! The actor runtime: one per process.
//!
//! An [`Actor`] owns this process's identity, its listeners, its channels
//! to peers, and the tasks running remote functions for them. It is the
//! [`Dispatch`](crate::ipc::Dispatch) of every channel: a `Start` arriving
//! on any channel is run here.
//!
//! This file holds the actor itself: its state, its start (binding its
//! listeners), its identity and what it knows of others (the secret, the
//! registry, the identities it knows for certain). The rest follows the
//! call path, one concern per module:
//!
//! - `accept`: accepting connections, the refusals made before reading
//!   anything, and the accepting side of the handshake;
//! - `channels`: the one place a handshaken connection becomes a channel
//!   the actor keeps;
//! - `children`: spawns waiting for their child, the child processes;
//! - `serve`: what a `Start` becomes (the `Dispatch`), the tasks running
//!   functions; `answer`: the one answer each dialog gets;
//! - `requests`: the runtime's own requests (`cancel_actor`, …);
//! - `shutdown`: who asked the actor to end, and its shutdown;
//! - `entry`: process entry (root and child mode); `stats`, `panic`.
//!
//! Rules this module keeps:
//!
//! - a task serving a dialog never outlives the channel of the actor that
//!   opened it by more than its grace period: when a channel closes, its
//!   tasks are cancelled (reason: the link was lost), as if the peer had
//!   asked;
//! - when the channel to the parent closes, the actor cancels itself (no
//!   orphans, docs/guide.md, rule 7);
//! - the lock-protected maps are touched only in short critical sections
//!   that never `.await` and never drop a value whose `Drop` takes the same
//!   lock.

mod accept;
mod answer;
mod channels;
mod children;
mod dump;
pub(crate) mod entry;
mod panic;
mod requests;
mod serve;
mod shutdown;
mod stats;

pub(crate) use crate::sync::lock;
use accept::{REFUSAL_LOG_INTERVAL, accept_loop};
pub(crate) use channels::{Handshaken, Link};
pub(crate) use serve::ActorDispatch;
use serve::TaskHandle;

use crate::config::{Config, ensure_private_dir};
use crate::discovery::member;
use crate::discovery::registrar::Registrar;
use crate::ipc::transport::Listener;
use crate::ipc::{Channel, auth};
use crate::portal::Portal;
use crate::remote::check_registry;
use crate::spawn::ChildProc;
use crate::{Error, Result};
use furrow_proto::handshake::Hello;
use furrow_proto::{Addr, Aid, Cid, Secret};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// This process's actor.
pub(crate) struct Actor {
    pub(crate) aid: Aid,
    pub(crate) config: Config,
    pub(crate) socket_dir: PathBuf,
    addrs: Mutex<Vec<Addr>>,
    listeners: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    channels: Mutex<HashMap<u64, Arc<Channel>>>,
    tasks: Mutex<HashMap<(u64, Cid), TaskHandle>>,
    /// The tasks serving remote calls and contexts (awaited at shutdown,
    /// after their cancellation).
    serving: TaskTracker,
    /// Spawns waiting for their child to connect back, by spawn token.
    pending_spawns: Mutex<HashMap<String, mpsc::Sender<Handshaken>>>,
    children: Mutex<HashMap<u32, ChildProc>>,
    /// Children whose start was abandoned, killed and not yet waited for.
    abandoned: Mutex<Vec<ChildProc>>,
    parent: Mutex<Option<Arc<Channel>>>,
    /// Cancelled when the actor as a whole is asked to end.
    pub(crate) cancel: CancellationToken,
    /// Every task that holds a socket (channel readers and writers,
    /// handshakes): shutdown waits for all of them, so no fd outlives it.
    pub(crate) tracker: TaskTracker,
    canceller: Mutex<Option<Aid>>,
    cancel_why: Mutex<String>,
    root: bool,
    /// Whether this actor runs on a current-thread runtime (the one it was
    /// started on: an actor never moves), which decides where a served
    /// call's ack is queued from (see `serve.rs`, `run_served`). Read once
    /// here rather than per call.
    single_thread: bool,
    /// The registry table, when this actor is the registrar.
    registrar: OnceLock<Arc<Registrar>>,
    /// Registry addresses this actor serves as registrar (their socket
    /// files are removed at shutdown).
    registry_addrs: Mutex<Vec<Addr>>,
    /// The channel to the registrar, while joined.
    pub(crate) registry: Mutex<Option<Portal>>,
    /// `None` until the first registration attempt settled.
    discovery: watch::Sender<Option<Result<()>>>,
    /// The system's secret, loaded on first use.
    secret: OnceLock<Secret>,
    /// Set when shutdown took the channels to close them.
    channels_closed: std::sync::atomic::AtomicBool,
    /// When the actor started (its uptime, in `stats`).
    started: std::time::Instant,
    /// One permit per TCP connection that has not authenticated yet
    /// (`Config::max_unauthenticated`).
    unauthenticated: Arc<tokio::sync::Semaphore>,
    /// Refused connections are logged at most once per interval.
    refusals: crate::log::Throttle,
    /// Failed accepts likewise.
    accept_errors: crate::log::Throttle,
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Actor({})", self.aid)
    }
}

static CURRENT: Mutex<Option<Arc<Actor>>> = Mutex::new(None);

impl Actor {
    /// The actor of this process.
    pub(crate) fn current() -> Result<Arc<Actor>> {
        if let Some(a) = lock(&CURRENT).as_ref() {
            return Ok(a.clone());
        }
        entry::lazy_root()
    }

    pub(crate) fn set_current(actor: Option<Arc<Actor>>) {
        *lock(&CURRENT) = actor;
    }

    pub(crate) fn take_current() -> Option<Arc<Actor>> {
        lock(&CURRENT).take()
    }

    /// Create the actor and bind its listeners (`config.bind`, or one UDS
    /// socket in the socket directory). Must run inside a tokio runtime.
    ///
    /// `root` is fixed for the actor's life (a child is never a root, even
    /// in the instant before its parent channel is recorded).
    pub(crate) fn start(aid: Aid, config: Config, root: bool) -> Result<Arc<Actor>> {
        // A child's name was checked by its parent; a root's is checked
        // here, before anything is bound or logged under it.
        crate::config::check_actor_name(&aid.name).map_err(|why| {
            Error::usage(format!("cannot start actor {:?}: {why}", crate::config::shown_name(&aid.name)))
        })?;
        check_registry()?;
        panic::install_hook();
        crate::log::set_actor(&aid);
        crate::chaos::fault::arm(&aid.name);
        let socket_dir = config.resolved_socket_dir();
        let mut bind = config.bind.clone();
        // Always a UDS socket: children connect back over it (never TCP,
        // which would need the secret before the SpawnSpec brings it).
        if !bind.iter().any(|a| matches!(a, Addr::Uds(_))) {
            ensure_private_dir(&socket_dir)?;
            bind.push(Addr::Uds(socket_dir.join(socket_file_name(&aid))));
        }
        let mut listeners = Vec::new();
        for addr in &bind {
            let l = Listener::bind(addr).map_err(|e| Error::io(format!("cannot listen on {addr}"), e))?;
            listeners.push(l);
        }
        // (The semaphore cannot hold more: a larger setting means "no limit".)
        let config_max_unauthenticated = config.max_unauthenticated.min(tokio::sync::Semaphore::MAX_PERMITS);
        let actor = Arc::new(Actor {
            aid,
            config,
            socket_dir,
            addrs: Mutex::new(listeners.iter().map(Listener::addr).collect()),
            listeners: Mutex::new(Vec::new()),
            channels: Mutex::new(HashMap::new()),
            tasks: Mutex::new(HashMap::new()),
            serving: TaskTracker::new(),
            pending_spawns: Mutex::new(HashMap::new()),
            children: Mutex::new(HashMap::new()),
            abandoned: Mutex::new(Vec::new()),
            parent: Mutex::new(None),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            canceller: Mutex::new(None),
            cancel_why: Mutex::new(String::new()),
            root,
            // Not inside a runtime (never so in furrow's own entry points):
            // `false`, the choice that is safe on every runtime.
            single_thread: tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread),
            registrar: OnceLock::new(),
            registry_addrs: Mutex::new(Vec::new()),
            registry: Mutex::new(None),
            discovery: watch::Sender::new(None),
            secret: OnceLock::new(),
            channels_closed: std::sync::atomic::AtomicBool::new(false),
            started: std::time::Instant::now(),
            unauthenticated: Arc::new(tokio::sync::Semaphore::new(config_max_unauthenticated)),
            refusals: crate::log::Throttle::new(REFUSAL_LOG_INTERVAL),
            accept_errors: crate::log::Throttle::new(REFUSAL_LOG_INTERVAL),
        });
        // A TCP listener needs the secret for every connection: load it
        // now, so a missing or unsafe secret file fails the start, not
        // each connection.
        if bind.iter().any(|a| matches!(a, Addr::Tcp(_))) {
            actor.secret()?;
        }
        let handles = listeners
            .into_iter()
            .map(|l| tokio::spawn(accept_loop(actor.clone(), l).instrument(crate::log::actor_span())))
            .collect::<Vec<_>>();
        *lock(&actor.listeners) = handles;
        // Aborted with the accept loops at shutdown.
        if actor.config.dump_on_sigusr1
            && let Some(h) = dump::watch_sigusr1(&actor)
        {
            lock(&actor.listeners).push(h);
        }
        tracing::debug!(actor = %actor.aid, addrs = ?actor.addrs(), "actor serving");
        Ok(actor)
    }

    /// Addresses this actor listens on.
    pub(crate) fn addrs(&self) -> Vec<Addr> {
        lock(&self.addrs).clone()
    }

    /// Every address with a socket file of ours: our own, and the registry
    /// addresses we serve.
    pub(crate) fn socket_addrs(&self) -> Vec<Addr> {
        let mut a = self.addrs();
        a.extend(lock(&self.registry_addrs).iter().cloned());
        a
    }

    /// The actor of this process, once its first registration settled
    /// (what every public entry point uses: a root whose registry address
    /// is taken by something foreign fails here, with that error).
    pub(crate) async fn ready() -> Result<Arc<Actor>> {
        let actor = Actor::current()?;
        actor.discovery_ready().await?;
        Ok(actor)
    }

    /// Start taking part in discovery (in the background; see
    /// [`discovery_ready`](Self::discovery_ready)).
    pub(crate) fn start_discovery(self: &Arc<Self>, plan: member::Plan) {
        self.tracker.spawn(member::run(self.clone(), plan).instrument(crate::log::actor_span()));
    }

    /// Wait for the first registration attempt to settle.
    ///
    /// # Cancel safety
    /// Cancel safe: it only watches.
    pub(crate) async fn discovery_ready(&self) -> Result<()> {
        let mut rx = self.discovery.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or(Ok(())),
            // The sender lives in `self`: cannot happen while we hold it.
            Err(_) => Ok(()),
        }
    }

    pub(crate) fn settle_discovery(&self, r: Result<()>) {
        self.discovery.send_replace(Some(r));
    }

    /// The registry table, when this actor is the registrar.
    pub(crate) fn registrar(&self) -> Option<&Arc<Registrar>> {
        self.registrar.get()
    }

    /// Become the registrar: keep `registrar` and accept on `listeners`
    /// (the registry addresses) like on our own.
    pub(crate) fn serve_registry(self: &Arc<Self>, registrar: Arc<Registrar>, listeners: Vec<Listener>) -> Result<()> {
        if self.registrar.set(registrar).is_err() {
            return Err(Error::usage("this actor already serves a registry"));
        }
        let mut accept = lock(&self.listeners);
        let mut addrs = lock(&self.registry_addrs);
        for l in listeners {
            addrs.push(l.addr());
            accept.push(tokio::spawn(accept_loop(self.clone(), l).instrument(crate::log::actor_span())));
        }
        Ok(())
    }

    /// The system's shared secret: from the configuration, else from the
    /// secret file (created when missing). Loaded once.
    pub(crate) fn secret(&self) -> Result<Secret> {
        if let Some(s) = self.secret.get() {
            return Ok(s.clone());
        }
        let s = match (&self.config.secret, &self.config.secret_file) {
            // The same bounds as a secret file's (a child's comes from its
            // parent, which checked it).
            (Some(s), _) => {
                auth::check_secret_len(&s.0).map_err(|why| Error::usage(format!("Config::secret {why}")))?;
                s.clone()
            }
            (None, Some(f)) => auth::load_or_create_secret(f)?,
            (None, None) => match auth::default_secret_file() {
                Some(f) => auth::load_or_create_secret(&f)?,
                None => {
                    return Err(Error::usage(format!(
                        "TCP needs the system's secret, and there is no default place for it (HOME is not set): \
                         set {} or Config::secret_file",
                        auth::SECRET_FILE_ENV
                    )));
                }
            },
        };
        Ok(self.secret.get_or_init(|| s).clone())
    }

    /// The registry addresses a child registers with (none when this
    /// actor takes no part in discovery).
    pub(crate) fn registry_for_children(&self) -> Vec<Addr> {
        if self.config.discovery == crate::Discovery::Off {
            return Vec::new();
        }
        // The registrar hands out the addresses it really bound (a TCP port
        // 0 in the configuration became a real port).
        let served = lock(&self.registry_addrs).clone();
        if !served.is_empty() {
            return served;
        }
        self.config.resolved_registry().unwrap_or_default()
    }

    /// The secret to hand a child, if this actor has one at hand (else the
    /// child loads it from the same file, when it needs it).
    pub(crate) fn secret_for_child(&self) -> Option<Secret> {
        self.secret.get().cloned().or_else(|| self.config.secret.clone())
    }

    /// What this actor says of itself in a handshake: who it is, and the
    /// bound on the dialogs a peer may have open here (so the peer's
    /// openers keep within it).
    pub(crate) fn hello(&self) -> Hello {
        Hello { aid: self.aid.clone(), spawn_token: None, max_dialogs: Some(self.config.max_dialogs_per_peer as u64) }
    }

    /// True for the root of a tree (an actor without a parent).
    pub(crate) fn is_root(&self) -> bool {
        self.root
    }

    /// The identity this actor knows for certain under `uuid`, if any: its
    /// own, its parent's (which spawned it), or one of its children's
    /// (each spawned here and checked when it connected back).
    fn known_identity(&self, uuid: uuid::Uuid) -> Option<Aid> {
        if uuid == self.aid.uuid {
            return Some(self.aid.clone());
        }
        if let Some(p) = lock(&self.parent).as_ref().filter(|p| p.peer.uuid == uuid) {
            return Some(p.peer.clone());
        }
        lock(&self.children).values().map(ChildProc::aid).find(|a| a.uuid == uuid)
    }
}

/// `name-uuidprefix.sock`, with the name reduced to safe characters.
/// This host's name, as its kernel says (`/proc/sys/kernel/hostname`, of
/// this process's UTS namespace), read once; empty if it cannot be read.
/// Listed with each actor (`ActorInfo::host`) and said in a launched
/// actor's log lines.
pub(crate) fn host_name() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().chars().filter(|c| !c.is_control()).collect())
            .unwrap_or_default()
    })
}

pub(crate) fn socket_file_name(aid: &Aid) -> String {
    let name: String = aid
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(24)
        .collect();
    format!("{name}-{}.sock", &aid.uuid.simple().to_string()[..12])
}
