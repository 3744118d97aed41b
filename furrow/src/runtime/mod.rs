//! The actor runtime: one per process.
//!
//! An [`Actor`] owns this process's identity, its listeners, its channels
//! to peers, and the tasks running remote functions for them. It is the
//! [`Dispatch`] of every channel: a `Start` arriving on any channel is run
//! here.
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

pub(crate) mod entry;
pub(crate) use crate::sync::lock;
mod panic;
mod stats;

use crate::config::{Config, ensure_private_dir};
use crate::context::scope::CancelScope;
use crate::context::{Context, Side};
use crate::discovery::registrar::Registrar;
use crate::discovery::{REGISTRY_NS, member};
use crate::ipc::transport::{Conn, Listener};
use crate::ipc::{Channel, Dispatch, FrameReader, auth, write_msg};
use crate::portal::Portal;
use crate::remote::{Failure, Handler, check_registry, lookup};
use crate::spawn::ChildProc;
use crate::{Error, ErrorKind, Result};
use furrow_proto::dialog::{Arbiter, Completion, Decision};
use furrow_proto::{Addr, Aid, Cid, ErrorMsg, FuncType, Msg, PROTO_VERSION, Payload, RUNTIME_NS, Secret};
use futures::FutureExt;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// How long an accepted connection may take to send its `Aid`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How much of an error's message is kept when the whole error is over
/// the frame limit (see [`Actor::reply`]).
const TRUNCATED_MESSAGE: usize = 1024;

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A task serving one dialog: how to cancel it politely, and abort it.
struct TaskHandle {
    abort: AbortHandle,
    scope: Arc<CancelScope>,
}

/// A freshly spawned child that connected back and completed the `Aid`
/// exchange; handed to the task waiting in `spawn`.
pub(crate) struct Handshaken {
    pub(crate) reader: FrameReader,
    pub(crate) write: crate::ipc::transport::BoxWrite,
    pub(crate) peer: Aid,
    /// The connecting process's pid (`SO_PEERCRED`).
    pub(crate) peer_pid: Option<u32>,
}

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
            .collect();
        *lock(&actor.listeners) = handles;
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

    /// True for the root of a tree (an actor without a parent).
    pub(crate) fn is_root(&self) -> bool {
        self.root
    }

    pub(crate) fn set_parent(&self, chan: Arc<Channel>) {
        *lock(&self.parent) = Some(chan);
    }

    /// Who cancelled this actor and why, once it was cancelled.
    pub(crate) fn cancel_reason(&self) -> (Option<Aid>, String) {
        (lock(&self.canceller).clone(), lock(&self.cancel_why).clone())
    }

    /// Ask the whole actor to end, saying why (the first request wins).
    pub(crate) fn request_cancel_because(&self, by: Option<Aid>, why: &str) {
        {
            let mut w = lock(&self.cancel_why);
            if w.is_empty() {
                *w = why.to_owned();
            }
        }
        self.request_cancel(by);
    }

    /// The parent channel was lost with nobody having asked this actor to
    /// end: end, and say so with the exit status.
    pub(crate) fn lose_parent(&self, parent: Aid) {
        // Asked before (a cancel request that came through this very
        // channel): that is the reason, not the loss.
        if !self.cancel.is_cancelled() {
            self.request_cancel_because(Some(parent), PARENT_LOST);
        }
    }

    /// Whether the actor ended because its parent channel was lost, nobody
    /// having asked it to end before.
    pub(crate) fn parent_lost(&self) -> bool {
        *lock(&self.cancel_why) == PARENT_LOST
    }

    /// Ask the whole actor to end (the first canceller is remembered).
    pub(crate) fn request_cancel(&self, by: Option<Aid>) {
        {
            let mut c = lock(&self.canceller);
            if c.is_none() {
                *c = by;
            }
        }
        self.cancel.cancel();
    }

    /// Keep `chan` until it closes (or shutdown closes it). A channel whose
    /// handshake finished after shutdown closed the others is closed at
    /// once: registered late, it would never be closed, and shutdown would
    /// wait for its tasks. (The flag is read and set under the map's lock,
    /// so no channel slips between the two.)
    pub(crate) fn register_channel(&self, chan: &Arc<Channel>) {
        let mut channels = lock(&self.channels);
        if self.channels_closed.load(std::sync::atomic::Ordering::Acquire) {
            drop(channels);
            tracing::debug!(chan = ?chan, "connected during shutdown: closing it");
            chan.abort();
            return;
        }
        channels.insert(chan.id, chan.clone());
    }

    /// Expect a child connecting back with `token`: every connection that
    /// presents it is handed over (the spawn keeps the one from the process
    /// it spawned), until [`forget_child_token`](Self::forget_child_token).
    pub(crate) fn expect_child(&self, token: String) -> mpsc::Receiver<Handshaken> {
        // A few: only an intruder that read the token makes more than one.
        let (tx, rx) = mpsc::channel(4);
        lock(&self.pending_spawns).insert(token, tx);
        rx
    }

    pub(crate) fn forget_child_token(&self, token: &str) {
        lock(&self.pending_spawns).remove(token);
    }

    /// SIGKILL every child at once (second Ctrl-C). Their reaper tasks
    /// reap them; the process is about to exit anyway.
    pub(crate) fn kill_children_now(&self) {
        let mut groups = Vec::new();
        for c in lock(&self.children).values() {
            // The child's whole subtree is in its process group.
            // SAFETY: kill(2) on a process group led by our unreaped child.
            unsafe { libc::kill(-(c.pid() as libc::pid_t), libc::SIGKILL) };
            c.signal(libc::SIGKILL);
            groups.push(c.pid());
        }
        // A SIGKILLed process keeps its listening socket until the kernel
        // has torn it down, which takes more than a moment on a loaded
        // machine (a fixed 20 ms here left a grandchild's socket file, 1
        // run in ~20 of the integration loop): wait, bounded, until nobody
        // of those groups is still running (zombies have closed their
        // files), then remove the socket files the killed actors could not.
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while running_in_groups(&groups) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // A moment more for the reaper tasks, so no zombie of ours is left
        // between our exit and init adopting it.
        std::thread::sleep(Duration::from_millis(20));
        crate::ipc::transport::sweep_stale(&self.socket_dir);
    }

    pub(crate) fn adopt_child(&self, proc: ChildProc) {
        lock(&self.children).insert(proc.pid(), proc);
    }

    pub(crate) fn release_child(&self, pid: u32) {
        lock(&self.children).remove(&pid);
    }

    /// A child whose start was abandoned (its `start_actor` future was
    /// dropped); it has been sent SIGKILL. See [`Actor::reap_abandoned`].
    pub(crate) fn abandoned_start(&self, proc: ChildProc) {
        lock(&self.abandoned).push(proc);
    }

    /// Wait (bounded) until every child whose start was abandoned has been
    /// reaped. Nurseries call this when they end, and so does shutdown, so
    /// no half-started child outlives the scope that started it.
    ///
    /// # Cancel safety
    /// Cancel safe: a child not waited for stays in the list.
    pub(crate) async fn reap_abandoned(&self) {
        let procs: Vec<ChildProc> = lock(&self.abandoned).clone();
        if procs.is_empty() {
            return;
        }
        futures::future::join_all(procs.iter().map(|p| p.wait_exit(Duration::from_secs(5)))).await;
        lock(&self.abandoned).retain(|p| p.exited().is_none());
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

    /// Whether `name` may be served here (`enable_modules`).
    fn exposes(&self, name: &str) -> bool {
        let mods = &self.config.enable_modules;
        mods.is_empty()
            || mods.iter().any(|m| name == m || (name.starts_with(m.as_str()) && name[m.len()..].starts_with("::")))
    }

    /// An `Error` message raised here (or relayed through here): see
    /// [`Failure::into_msg`].
    pub(crate) fn error_msg(&self, cid: Option<Cid>, f: Failure) -> Msg {
        ErrorMsg { cid, ..f.into_msg(&self.aid) }.into()
    }

    fn refuse(&self, chan: &Arc<Channel>, cid: Cid, kind: ErrorKind, message: String) {
        tracing::debug!(chan = ?chan, cid, "refusing Start: {message}");
        // The message may quote what the peer sent (a function name of any
        // length): `reply` cuts it down rather than lose the refusal.
        self.reply(chan, self.error_msg(Some(cid), Failure::runtime(kind, message)), "the refusal of a request");
    }

    /// Send the one answer a dialog gets (`Return`, `Error`, `CancelAck`),
    /// never losing it to its size: the caller waits for nothing else.
    /// `what` says what the answer is, for the error that replaces it
    /// ("the result of `f`").
    ///
    /// An answer over the frame limit is replaced by the first of these
    /// that fits: for a `Return` or `CancelAck`, an `Error` of kind
    /// `FrameTooLarge` naming `what`, the size and the limit; for an
    /// `Error`, the same error cut down (message cut to 1 KiB and marked,
    /// trace, value and nested errors dropped; its kind, origin and
    /// canceller kept); and last a minimal `FrameTooLarge` error of this
    /// actor's own (no text from the peer or the function), which fits in
    /// any limit furrow can run with. Nothing was queued when the encoding
    /// failed, so the dialog still expects its outcome and the replacement
    /// passes its state machine. (Before, the encoding error was dropped
    /// with a debug line and the caller waited forever: issue 14.)
    ///
    /// Any other failure (the channel closed, the dialog over already)
    /// means the answer has nowhere to go: logged at debug, as before.
    fn reply(&self, chan: &Channel, msg: Msg, what: &str) {
        let cid = msg.cid();
        // The size of the real answer: what every replacement reports.
        let mut too_large: Option<(usize, usize)> = None;
        let mut next = Some(msg);
        let mut tries = 0;
        while let Some(msg) = next.take() {
            match chan.send(&msg) {
                Ok(()) => {
                    if let Some((len, max)) = too_large {
                        tracing::warn!(chan = ?chan, cid, len, max, "{what} was over the frame limit: sent an error instead");
                    }
                    return;
                }
                Err(Error::FrameTooLarge { len, max, .. }) => {
                    let (len, max) = *too_large.get_or_insert((len, max));
                    tries += 1;
                    next = self.smaller_answer(msg, cid, what, (len, max), tries);
                }
                Err(e) => {
                    tracing::debug!(chan = ?chan, cid, "{what} not delivered: {e}");
                    return;
                }
            }
        }
        tracing::error!(
            chan = ?chan,
            cid,
            "{what} was over the frame limit and not even a minimal error fits in it ({:?}): the peer gets no answer",
            too_large
        );
    }

    /// What to send in place of `msg`, which is over the frame limit
    /// (`len` bytes against `max`): see [`reply`](Self::reply). `tries`
    /// counts the answers refused so far (1 for the real one).
    fn smaller_answer(
        &self,
        msg: Msg,
        cid: Option<Cid>,
        what: &str,
        (len, max): (usize, usize),
        tries: u32,
    ) -> Option<Msg> {
        let too_large = |what: &str| Error::FrameTooLarge { what: what.to_owned(), len, max }.to_string();
        match (tries, msg.into_error()) {
            // A too large error: the same one, cut down.
            (1, Ok(e)) => {
                let message = format!(
                    "{}… [cut: {}]",
                    cut(&e.message, TRUNCATED_MESSAGE),
                    too_large(&format!("the whole error ({what})"))
                );
                Some(
                    ErrorMsg {
                        // Only a kind from elsewhere can be long (a type name).
                        boxed_type_str: ErrorKind::from(cut(e.boxed_type_str.as_str(), TRUNCATED_MESSAGE)),
                        message,
                        tb_str: String::new(),
                        pld: None,
                        errors: Vec::new(),
                        ..e
                    }
                    .into(),
                )
            }
            // A too large `Return` or `CancelAck`: an error saying so.
            (1, Err(_)) => Some(self.error_msg(cid, Failure::runtime(ErrorKind::FrameTooLarge, too_large(what)))),
            // Even that did not fit (it quotes the peer, or the limit is
            // tiny): this actor's own error, with nothing of the peer's.
            (2, _) => Some(
                ErrorMsg {
                    cid,
                    ..ErrorMsg::new(self.aid.clone(), ErrorKind::FrameTooLarge, too_large(cut(what, 256)))
                }
                .into(),
            ),
            _ => None,
        }
    }

    /// Run a registered function for the dialog `cid` on `chan`.
    ///
    /// The task ends with exactly one outcome message: `Return` or `Error`
    /// when the function finishes first, `Error { ContextCancelled }` when
    /// a cancel request wins. The `biased` select polls the function
    /// first, so a function that completes in the same poll as the cancel
    /// arrives reports its completion, never both. After a cancel the
    /// function keeps running for the grace period (contexts only), so it
    /// can see `Context::cancelled` and clean up; an error of its own in
    /// that time is reported instead of the cancellation (not masked).
    fn serve(self: &Arc<Self>, chan: &Arc<Channel>, cid: Cid, name: String, handler: Handler, kwargs: Payload) {
        let (mailbox, flow) = chan.accept_dialog(cid);
        let scope = Arc::new(CancelScope::default());
        let span =
            crate::log::dialog_span(matches!(handler, Handler::Context(_)), Some(cid), &name, &chan.peer, "callee");
        let func = name.clone();
        let (functype, fut, grace) = match handler {
            Handler::Rpc(f) => {
                drop(mailbox);
                (FuncType::Asyncfunc, f(kwargs), Duration::ZERO)
            }
            Handler::Context(f) => {
                let ctx = Context::new(
                    chan.clone(),
                    cid,
                    Side::Callee,
                    name,
                    mailbox,
                    flow,
                    scope.clone(),
                    self.config.window(),
                    self.config.cancel_ack_timeout,
                );
                (FuncType::Context, f(ctx, kwargs), self.config.cancel_grace)
            }
        };
        self.run_served(chan, cid, &func, functype, fut, grace, scope, span);
    }

    /// Serve one of furrow's own requests (the registry's) like a remote
    /// function: acknowledged, cancellable, one outcome.
    /// `name` is the request's wire name (for the error that replaces an
    /// answer over the frame limit).
    fn serve_builtin(self: &Arc<Self>, chan: &Arc<Channel>, cid: Cid, name: &str, fut: BoxFuture<'static, Served>) {
        let (mailbox, _flow) = chan.accept_dialog(cid);
        drop(mailbox);
        let scope = Arc::new(CancelScope::default());
        self.run_served(chan, cid, name, FuncType::Asyncfunc, fut, Duration::ZERO, scope, crate::log::actor_span());
    }

    /// Acknowledge the dialog `cid` and run `fut` for it (see `serve`),
    /// under `span`.
    #[allow(clippy::too_many_arguments)]
    fn run_served(
        self: &Arc<Self>,
        chan: &Arc<Channel>,
        cid: Cid,
        name: &str,
        functype: FuncType,
        fut: BoxFuture<'static, Served>,
        grace: Duration,
        scope: Arc<CancelScope>,
        span: tracing::Span,
    ) {
        if chan.send(&Msg::StartAck { cid, functype }).is_err() {
            chan.close_dialog(cid);
            return;
        }
        let actor = self.clone();
        let chan2 = chan.clone();
        let scope2 = scope.clone();
        let name = name.to_owned();
        // The map lock is held while spawning so the task cannot finish and
        // remove its entry before the entry exists.
        let mut tasks = lock(&self.tasks);
        let task = self.serving.spawn(async move {
            let _cleanup = TaskCleanup { actor: actor.clone(), chan: chan2.clone(), cid };
            let mut fut = AssertUnwindSafe(fut).catch_unwind();
            // The proto-level arbiter makes the one decision; this loop only
            // feeds it events. `biased`: the function is polled first.
            let mut arb = Arbiter::new(!grace.is_zero());
            let mut result = None;
            // `fut` is borrowed, not moved: losing the race to the cancel
            // drops nothing, and the same future runs on in the grace period.
            let decided = tokio::select! {
                biased;
                r = &mut fut => {
                    // A task can see its cancellation (a `send` refused
                    // because its scope is cancelled) and fail with it
                    // before this loop sees the cancel: the cancel came
                    // first, and the arbiter must hear it first, or a task
                    // that merely propagated its cancellation is reported
                    // as failing. (Found by the chaos runner,
                    // `inter_actor_cancels`.) A task that *returns* with a
                    // cancel pending still returns, as at a trio
                    // checkpoint: the cancel only wins where it was seen.
                    let completion = completion_of(&r);
                    let first = if scope2.is_cancelled() && completion == (Completion::Failed { cancellation: true }) {
                        arb.on_cancel()
                    } else {
                        None
                    };
                    let d = arb.on_completion(completion);
                    result = Some(r);
                    first.or(d)
                }
                () = scope2.cancelled() => arb.on_cancel(),
            };
            let decision = match decided {
                Some(d) => d,
                // Cancelled with a grace period: let it clean up, bounded.
                None => match tokio::time::timeout(grace, &mut fut).await {
                    Ok(r) => {
                        let d = arb.on_completion(completion_of(&r));
                        result = Some(r);
                        d
                    }
                    Err(_) => arb.on_grace_expired(),
                }
                .unwrap_or(Decision::Cancelled),
            };
            let failure = match (decision, result) {
                (Decision::Completed, Some(Ok(Ok(pld)))) => {
                    // (Registry requests, served here too, reach a root
                    // only, which no fault names.)
                    crate::chaos::fault::at(crate::chaos::fault::Step::Return);
                    // Over the frame limit, the caller gets an error saying
                    // so instead (it would otherwise wait forever).
                    actor.reply(&chan2, Msg::Return { cid, pld }, &format!("the result of `{name}`"));
                    return;
                }
                (Decision::Completed, Some(Ok(Err(f)))) => f,
                (Decision::Completed, Some(Err(p))) => panic::failure(p),
                _ => {
                    let by = scope2.canceller().unwrap_or_else(|| actor.aid.clone());
                    Failure {
                        canceller: Some(by.clone()),
                        ..Failure::runtime(ErrorKind::ContextCancelled, format!("cancelled by {by}"))
                    }
                }
            };
            actor.reply(&chan2, actor.error_msg(Some(cid), failure), &format!("the error of `{name}`"));
        }.instrument(span));
        tasks.insert((chan.id, cid), TaskHandle { abort: task.abort_handle(), scope });
    }

    /// The runtime's own requests (`Start` on [`RUNTIME_NS`]).
    fn runtime_request(self: &Arc<Self>, chan: &Arc<Channel>, cid: Cid, func: &str, kwargs: Payload, uid: Aid) {
        match func {
            "cancel_actor" => {
                tracing::debug!(actor = %self.aid, by = %uid, "cancel requested");
                crate::chaos::fault::at(crate::chaos::fault::Step::Cancel);
                let _mailbox = chan.accept_dialog(cid);
                // The ack is queued before anything is torn down, so it is
                // written before the channel closes.
                self.reply(
                    chan,
                    Msg::CancelAck { cid, pld: Payload::encode(&true).unwrap_or_default() },
                    "the acknowledgement of a cancel request",
                );
                self.request_cancel(Some(uid));
            }
            "cancel_task" => {
                #[derive(serde::Deserialize)]
                struct Args {
                    cid: Cid,
                }
                crate::chaos::fault::at(crate::chaos::fault::Step::Cancel);
                let _mailbox = chan.accept_dialog(cid);
                let found = match kwargs.decode::<Args>() {
                    // Polite: the task sees the cancellation and reports it
                    // as its outcome (it removes its own entry when done).
                    Ok(a) => lock(&self.tasks).get(&(chan.id, a.cid)).map(|h| h.scope.cancel(uid.clone())).is_some(),
                    Err(e) => {
                        self.refuse(chan, cid, ErrorKind::MsgTypeError, e.to_string());
                        return;
                    }
                };
                tracing::debug!(actor = %self.aid, by = %uid, cid, found, "task cancel requested");
                self.reply(
                    chan,
                    Msg::CancelAck { cid, pld: Payload::encode(&found).unwrap_or_default() },
                    "the acknowledgement of a cancel request",
                );
            }
            // Served like a registry request: acknowledged, one outcome.
            "stats" => {
                let (actor, asked_on) = (self.clone(), chan.clone());
                let name = format!("{RUNTIME_NS}::stats");
                self.serve_builtin(chan, cid, &name, Box::pin(async move { actor.stats_payload(&asked_on) }));
            }
            other => self.refuse(
                chan,
                cid,
                ErrorKind::FunctionNotFound,
                format!("no runtime request `{RUNTIME_NS}::{other}`"),
            ),
        }
    }

    /// End this actor: abort its tasks, end its children, close its
    /// channels (flushing what is queued), stop listening and remove its
    /// socket files.
    pub(crate) async fn shutdown(self: &Arc<Self>) {
        crate::chaos::fault::at(crate::chaos::fault::Step::Teardown);
        self.cancel.cancel();
        // Leave the registry first: from here on nobody should find us.
        member::leave(self);
        // Cancel every served task politely, on behalf of whoever cancelled
        // this actor, so each caller learns who it was; then give them the
        // grace period to report it before aborting what is left.
        let by = lock(&self.canceller).clone().unwrap_or_else(|| self.aid.clone());
        let handles: Vec<(Arc<CancelScope>, AbortHandle)> =
            lock(&self.tasks).values().map(|h| (h.scope.clone(), h.abort.clone())).collect();
        for (scope, _) in &handles {
            scope.cancel(by.clone());
        }
        self.serving.close();
        let bound = self.config.cancel_grace + Duration::from_millis(100);
        if tokio::time::timeout(bound, self.serving.wait()).await.is_err() {
            for (_, abort) in &handles {
                abort.abort();
            }
            // A task that never yields cannot be aborted: do not wait for
            // it forever. The process exits after this shutdown anyway,
            // which ends every thread.
            if tokio::time::timeout(Duration::from_millis(500), self.serving.wait()).await.is_err() {
                tracing::warn!(actor = %self.aid, "a task did not stop (it never yields); exiting without it");
            }
        }
        // Abort the accept loops and wait for them to be dropped: only then
        // are the listening sockets closed (and their files unlinked).
        let accept_loops: Vec<_> = lock(&self.listeners).drain(..).collect();
        for l in &accept_loops {
            l.abort();
        }
        for l in accept_loops {
            let _ = l.await;
        }
        // Children still alive here belong to nurseries that were dropped
        // without their teardown: end them (SIGTERM, then SIGKILL) and reap
        // them, all in parallel.
        let children: Vec<ChildProc> = lock(&self.children).drain().map(|(_, c)| c).collect();
        let term = self.config.term_timeout;
        futures::future::join_all(children.iter().map(|c| c.end_leftover(term))).await;
        self.reap_abandoned().await;
        let chans: Vec<Arc<Channel>> = {
            let mut channels = lock(&self.channels);
            self.channels_closed.store(true, std::sync::atomic::Ordering::Release);
            channels.drain().map(|(_, c)| c).collect()
        };
        let parent = lock(&self.parent).take();
        let closing = chans.iter().chain(parent.iter()).map(|c| async move {
            if tokio::time::timeout(Duration::from_secs(1), c.close()).await.is_err() {
                // A peer that stopped reading: give up on the flush.
                c.abort();
                c.wait_ended().await;
            }
        });
        futures::future::join_all(closing).await;
        tracing::debug!(actor = %self.aid, "shutdown: channels closed; waiting for socket tasks");
        // Channels that closed earlier (their peer left) are no longer in
        // the map, and handshakes in progress are in no map: wait for every
        // task that holds a socket. Handshakes end on `cancel`.
        // Every channel is closed by now, so this should be immediate. The
        // bound is well inside a parent's exit timeout: a stuck task must
        // not turn a graceful exit into a SIGTERM/SIGKILL (the process exit
        // releases every socket anyway), and the error says it happened.
        self.tracker.close();
        let bound = (self.config.exit_timeout / 2).min(Duration::from_secs(5));
        if tokio::time::timeout(bound, self.tracker.wait()).await.is_err() {
            tracing::error!(
                actor = %self.aid,
                "bug: {} socket task(s) still running {bound:?} after the channels closed \
                 ({} channel(s) registered, registry {}); exiting without them",
                self.tracker.len(),
                lock(&self.channels).len(),
                if lock(&self.registry).is_some() { "joined" } else { "not joined" },
            );
        }
        // Aborted accept loops drop their listeners (and unlink sockets)
        // asynchronously; remove the files here so they are gone on return.
        // Not the registry's: its listeners were awaited above and removed
        // their file if it was still theirs, and by now another root may
        // have bound a new one at that path (it took over when our channels
        // closed).
        crate::ipc::transport::remove_socket_files(&self.addrs());
        tracing::debug!(actor = %self.aid, "shutdown: done");
    }
}

/// The cancel reason of an actor whose parent channel was lost.
const PARENT_LOST: &str = "its channel to its parent was lost";

/// What a served function ends with.
type Served = std::result::Result<Payload, Failure>;

/// What the arbiter needs to know of a finished task.
fn completion_of(r: &std::thread::Result<Result<Payload, Failure>>) -> Completion {
    match r {
        Ok(Ok(_)) => Completion::Returned,
        // Failing *because* of a cancellation (of the context, or of the
        // whole actor) is the cancellation, not an error of its own.
        Ok(Err(f)) => Completion::Failed { cancellation: f.cancellation },
        Err(_) => Completion::Panicked,
    }
}

/// Removes a serving task's traces when it ends, however it ends (returns,
/// panics, or is aborted).
struct TaskCleanup {
    actor: Arc<Actor>,
    chan: Arc<Channel>,
    cid: Cid,
}

impl Drop for TaskCleanup {
    fn drop(&mut self) {
        // Neither lock is held by code that can drop a TaskCleanup.
        self.chan.close_dialog(self.cid);
        lock(&self.actor.tasks).remove(&(self.chan.id, self.cid));
    }
}

/// `Dispatch` needs an owned handle on the actor to spawn tasks.
pub(crate) struct ActorDispatch(pub(crate) Arc<Actor>);

impl Dispatch for ActorDispatch {
    fn on_start(&self, chan: &Arc<Channel>, cid: Cid, ns: String, func: String, kwargs: Payload, uid: Aid) {
        let actor = &self.0;
        // A request is the connection's peer's, whose identity was checked
        // when it connected: a `Start` naming someone else as its sender is
        // a forgery (a furrow actor always names itself), and is refused
        // before anything is acted on — `cancel_actor` included, so nobody
        // can cancel an actor in another's name.
        if uid != chan.peer {
            return actor.refuse(
                chan,
                cid,
                ErrorKind::IdentityMismatch,
                format!(
                    "refused `{ns}::{func}`: it names {uid} as its sender, but it came over the connection of {}; \
                     a request is attributed to the connection it comes over",
                    chan.peer
                ),
            );
        }
        if ns == RUNTIME_NS {
            return actor.runtime_request(chan, cid, &func, kwargs, uid);
        }
        if ns == REGISTRY_NS {
            // Served whatever `enable_modules` says: it is the runtime's.
            return match actor.registrar() {
                Some(reg) => {
                    let reg = reg.clone();
                    let chan_id = chan.id;
                    let name = format!("{REGISTRY_NS}::{func}");
                    actor.serve_builtin(
                        chan,
                        cid,
                        &name,
                        Box::pin(async move { reg.handle(chan_id, &func, kwargs).await }),
                    );
                }
                None => actor.refuse(
                    chan,
                    cid,
                    ErrorKind::NotARegistrar,
                    format!("actor {} is not a registrar (registry request `{func}`)", actor.aid),
                ),
            };
        }
        let name = if ns.is_empty() { func } else { format!("{ns}::{func}") };
        if !actor.exposes(&name) {
            return actor.refuse(
                chan,
                cid,
                ErrorKind::ModuleNotExposed,
                format!(
                    "actor {} does not serve `{name}` (its enabled modules: {:?})",
                    actor.aid, actor.config.enable_modules
                ),
            );
        }
        match lookup(&name) {
            Some(reg) => {
                crate::chaos::fault::at(crate::chaos::fault::Step::Start);
                actor.serve(chan, cid, name, reg.handler, kwargs)
            }
            None => actor.refuse(
                chan,
                cid,
                ErrorKind::FunctionNotFound,
                format!("no remote function `{name}` is registered in actor {}", actor.aid),
            ),
        }
    }

    fn on_closed(&self, chan: &Arc<Channel>) {
        let actor = &self.0;
        lock(&actor.channels).remove(&chan.id);
        // An actor whose registry channel is lost is no longer listed
        // (this is how a SIGKILLed actor leaves the registry).
        if let Some(reg) = actor.registrar() {
            reg.drop_channel(chan.id);
        }
        // Tasks serving the peer that left have nobody to report to, but
        // they may hold resources: cancel them as if the peer had asked
        // (a context callee gets its grace period and sees `cancelled()`
        // resolve, naming the lost peer; a plain call is dropped at once).
        // Each removes its own entry when it ends; the actor's shutdown
        // still finds (and, past the grace, aborts) those left.
        let orphaned: Vec<Arc<CancelScope>> =
            lock(&actor.tasks).iter().filter(|((c, _), _)| *c == chan.id).map(|(_, h)| h.scope.clone()).collect();
        if !orphaned.is_empty() {
            let why = crate::CancelReason::link_lost(chan);
            for scope in orphaned {
                scope.cancel_for(why.clone());
            }
        }
        let is_parent = lock(&actor.parent).as_ref().is_some_and(|p| p.id == chan.id);
        if is_parent && !actor.cancel.is_cancelled() {
            tracing::info!(actor = %actor.aid, "parent channel closed: cancelling self");
            // Nobody asked: the process will say so with its exit status
            // (see `entry::EXIT_PARENT_LOST`), so a parent that is still
            // alive does not take this exit for a polite one.
            actor.lose_parent(chan.peer.clone());
        }
    }
}

/// Shortest and longest pause after a failed accept.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// How often a refused connection or a failed accept is logged at most
/// (each line counts those held back since the previous one).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Accept connections until aborted; each one is handshaken on its own task.
///
/// A TCP connection holds one of the actor's `max_unauthenticated` permits
/// until its peer has authenticated and its `Aid` was checked; one that
/// finds none left is refused at once (an `Error` saying why, then closed),
/// so silent connections can hold at most that many file descriptors.
/// When accept itself fails for want of file descriptors (EMFILE, ENFILE),
/// a spare descriptor kept for the purpose is closed to take the waiting
/// connection and refuse it the same way, naming the cause (instead of
/// leaving the caller to time out), and the loop backs off, 10 ms doubling
/// to 1 s, until an accept succeeds: a full table is never a busy loop.
///
/// Cancel safety: aborted at shutdown; `Listener::accept` is cancel safe,
/// and a connection taken but not yet handed to its task is dropped, which
/// closes it (nothing of it was acted on).
async fn accept_loop(actor: Arc<Actor>, listener: Listener) {
    let addr = listener.addr();
    let mut spare = std::fs::File::open("/dev/null").ok();
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        let conn = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                let why = if out_of_fds { fd_exhaustion(&e) } else { e.to_string() };
                if let Some(note) = actor.accept_errors.admit() {
                    tracing::error!(actor = %actor.aid, "cannot accept connections on {addr}: {why}{note}");
                }
                if out_of_fds && let Some(f) = spare.take() {
                    drop(f);
                    // The connection that could not be accepted is waiting:
                    // take it with the freed descriptor (never waiting if it
                    // is not there any more) and tell it why.
                    let taken = match listener.accept().now_or_never() {
                        Some(Ok(conn)) => {
                            let why = format!("actor {} cannot take the connection: {why}", actor.aid);
                            refuse_now(&actor, conn, ErrorKind::OutOfFileDescriptors, &why);
                            true
                        }
                        _ => false,
                    };
                    spare = std::fs::File::open("/dev/null").ok();
                    // One connection refused: the next may be waiting too
                    // (a backlog of them); refuse it without a pause, or it
                    // would wait, and its caller time out, behind every
                    // backoff of those before it. This is no busy loop:
                    // each round takes a connection off the backlog.
                    if taken && spare.is_some() {
                        continue;
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        backoff = ACCEPT_BACKOFF.0;
        if spare.is_none() {
            spare = std::fs::File::open("/dev/null").ok();
        }
        let permit = if conn.tcp {
            match actor.unauthenticated.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    let why = format!(
                        "actor {} has {} connections authenticating already, the most it allows \
                         (Config::max_unauthenticated); try again later",
                        actor.aid, actor.config.max_unauthenticated
                    );
                    refuse_now(&actor, conn, ErrorKind::TooManyUnauthenticated, &why);
                    continue;
                }
            }
        } else {
            None
        };
        let a = actor.clone();
        actor.tracker.spawn(
            async move {
                // A handshake in progress does not hold shutdown up:
                // dropping it drops the half-open connection, which is
                // exactly what shutdown wants (nothing was acted on).
                tokio::select! {
                    () = a.cancel.cancelled() => {}
                    () = handshake_incoming(a.clone(), conn, permit) => {}
                }
            }
            .instrument(crate::log::actor_span()),
        );
    }
}

/// Refuse a connection at once: an `Error` saying why, written only if the
/// socket takes it without waiting (a new connection's send buffer is
/// empty, so it does), then closed. Never waits: the accept loop calls it.
fn refuse_now(actor: &Actor, conn: Conn, kind: ErrorKind, why: &str) {
    let Conn { mut write, desc, .. } = conn;
    if let Some(note) = actor.refusals.admit() {
        tracing::warn!("refusing {desc}: {why}{note}");
    }
    let msg = actor.error_msg(None, Failure::runtime(kind, why.to_owned()));
    let _ = write_msg(&mut write, &msg, auth::PRE_AUTH_MAX_FRAME).now_or_never();
}

/// What an EMFILE or ENFILE from accept means, and what to do about it.
fn fd_exhaustion(e: &std::io::Error) -> String {
    if e.raw_os_error() == Some(libc::ENFILE) {
        return "the system is out of file descriptors (ENFILE: fs.file-max is reached); \
                connections are refused until some close"
            .into();
    }
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    let limit = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        format!("all {} of its file descriptors (RLIMIT_NOFILE) are open", lim.rlim_cur)
    } else {
        "all of its file descriptors are open".to_owned()
    };
    format!(
        "this process is out of file descriptors (EMFILE: {limit}); connections are refused until some \
         close: raise its limit (`ulimit -n`), or lower Config::max_unauthenticated"
    )
}

/// The accepting side of the `Aid` exchange. Nothing else is read from the
/// connection before it succeeds. A TCP connection holds `permit` (one of
/// the actor's `max_unauthenticated`) until then.
async fn handshake_incoming(actor: Arc<Actor>, conn: Conn, permit: Option<tokio::sync::OwnedSemaphorePermit>) {
    let desc = conn.desc.clone();
    let Conn { read, mut write, tcp, peer_pid, .. } = conn;
    // A peer can make these recur at will (one per connection): logged at
    // most once per interval, with the count of those held back.
    let refused = |why: &dyn std::fmt::Display| {
        if let Some(note) = actor.refusals.admit() {
            tracing::warn!("refusing {desc}: {why}{note}");
        }
    };
    // Small frames only until the peer is known: an unauthenticated peer
    // cannot make us allocate more than this.
    let mut reader = FrameReader::new(read, auth::PRE_AUTH_MAX_FRAME);
    if tcp {
        let secret = match actor.secret() {
            Ok(s) => s,
            Err(e) => {
                if let Some(note) = actor.refusals.admit() {
                    tracing::error!("refusing {desc}: no secret to authenticate it with: {e}{note}");
                }
                return;
            }
        };
        if let Err(why) = auth::accept(&mut reader, &mut write, &secret).await {
            refused(&why);
            return;
        }
    }
    let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next()).await;
    let (peer, token) = match first {
        Ok(Ok(Some(Msg::Aid { name, uuid, pid, proto, spawn_token }))) => {
            if proto != PROTO_VERSION {
                refused(&format_args!("protocol version {proto}, ours is {PROTO_VERSION}"));
                return;
            }
            (Aid { name, uuid, pid }, spawn_token)
        }
        Ok(Ok(Some(other))) => {
            refused(&format_args!("first frame is {:?}, not Aid", other.kind()));
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            refused(&e);
            return;
        }
        Err(_) => {
            refused(&format_args!("no handshake within {HANDSHAKE_TIMEOUT:?}"));
            return;
        }
    };
    // Who it says it is must hold as far as it can be checked: over UDS
    // its pid is the kernel's, and an identity we know (ours, our
    // parent's, a child's) must be claimed whole. Refused with the reason,
    // before anything of it is acted on.
    if let Err(why) = crate::ipc::identity::check(&peer, peer_pid, actor.known_identity(peer.uuid).as_ref()) {
        refused(&why);
        let refusal =
            actor.error_msg(None, Failure::runtime(ErrorKind::IdentityRefused, format!("connection refused: {why}")));
        // Bounded: a peer that does not read must not hold this task.
        let _ = tokio::time::timeout(Duration::from_secs(1), write_msg(&mut write, &refusal, auth::PRE_AUTH_MAX_FRAME))
            .await;
        return;
    }
    // Authenticated and identified: no longer counted.
    drop(permit);
    reader.set_max_frame(actor.config.max_frame);
    let ours = aid_msg(&actor.aid, None);
    if write_msg(&mut write, &ours, actor.config.max_frame).await.is_err() {
        return;
    }
    match token {
        Some(t) => {
            // Not removed here: the spawn removes it once the process it
            // spawned presented it (an intruder presenting it is refused
            // there, and must not make the real child's token unknown).
            let waiting = lock(&actor.pending_spawns).get(&t).cloned();
            match waiting {
                Some(tx) => {
                    if tx.try_send(Handshaken { reader, write, peer: peer.clone(), peer_pid }).is_err() {
                        refused(&format_args!("too many connections presenting the spawn token of {peer}"));
                    }
                }
                None => refused(&format_args!("unknown spawn token from {peer}")),
            }
        }
        None => {
            let chan = Channel::start(
                reader,
                write,
                peer,
                actor.aid.clone(),
                false,
                crate::ipc::Limits::of(&actor.config),
                Arc::new(ActorDispatch(actor.clone())),
                &actor.tracker,
            );
            actor.register_channel(&chan);
        }
    }
}

/// The handshake message describing `aid`.
pub(crate) fn aid_msg(aid: &Aid, spawn_token: Option<String>) -> Msg {
    Msg::Aid { name: aid.name.clone(), uuid: aid.uuid, pid: aid.pid, proto: PROTO_VERSION, spawn_token }
}

/// `name-uuidprefix.sock`, with the name reduced to safe characters.
pub(crate) fn socket_file_name(aid: &Aid) -> String {
    let name: String = aid
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(24)
        .collect();
    format!("{name}-{}.sock", &aid.uuid.simple().to_string()[..12])
}

/// Whether any process of the process groups `groups` is still running
/// (not a zombie), read from `/proc` (only on the hard-kill path of a
/// second Ctrl-C).
fn running_in_groups(groups: &[u32]) -> bool {
    use crate::spawn::orphans::{ProcStat, all_pids};
    all_pids().filter_map(ProcStat::of).any(|st| st.running() && st.pgrp.is_some_and(|g| groups.contains(&g)))
}
