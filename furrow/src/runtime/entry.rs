//! Process entry: root mode and child mode.
//!
//! A child actor is this same executable (or a named one) started with the
//! environment variable [`SPAWN_ENV`] naming its parent's address, a
//! one-time token, its name, uuid and parent pid. Argv is never used (it is
//! visible to every user of the machine). [`enter_child_if_spawned`] runs
//! first thing in `main` (`#[furrow::main]` and the test harness call it):
//! if the variable is set it removes it from the environment, so processes
//! the user's code spawns do not inherit it, and runs the actor loop
//! instead of the user's `main`, then exits the process.

use super::{Actor, Handshaken, Link, lock};
use crate::config::{Config, Discovery};
use crate::discovery::member::Plan;
use crate::ipc::handshake::{drive, flush};
use crate::ipc::{FrameReader, transport};
use crate::{Error, Result};
use furrow_proto::handshake::{Child, Failure, Handshake, Hello, Status};
use furrow_proto::{Addr, Aid, Msg, SpawnSpec};
use std::future::Future;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Environment variable that puts a process in child mode.
pub(crate) const SPAWN_ENV: &str = "FURROW_SPAWN";

/// Fault injection for tests (and the chaos tooling): a child actor whose
/// environment has `FURROW_CHAOS_DIE_AT=<step>` kills itself with SIGKILL
/// at that step of its start: `start` (before connecting), `connected`
/// (after sending its `Aid`), `spec` (after receiving its `SpawnSpec`),
/// `registered` (its socket bound and registered, `Ready` not sent yet) or
/// `ready` (right after sending `Ready`).
///
/// A test hook, so only with the `chaos` feature.
#[cfg(feature = "chaos")]
pub(crate) const DIE_AT_ENV: &str = "FURROW_CHAOS_DIE_AT";

#[cfg(feature = "chaos")]
fn maybe_die_at(step: &str) {
    if std::env::var(DIE_AT_ENV).is_ok_and(|s| s == step) {
        crate::spawn::send_signal(std::process::id(), libc::SIGKILL);
    }
}

/// Without the `chaos` feature the hook is nothing (the variable is not
/// read): a production child never kills itself on an inherited variable.
#[cfg(not(feature = "chaos"))]
#[inline(always)]
fn maybe_die_at(_step: &str) {}

/// Bound on a child's handshake with its parent: the parent's `Aid` and
/// the `SpawnSpec` are due within it.
const SPAWN_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a child started through a launcher may take to end once its
/// link (stdin) closed, before it exits regardless: its own teardown
/// ladder for its children (cancel ack, exit, SIGTERM: the tree's
/// `cancel_ack_timeout`, `exit_timeout`, `term_timeout`, which it gets in
/// its `SpawnSpec` too) plus [`REMOTE_EXIT_SLACK`] for the SIGKILL step and
/// its own exit. 5 s at the defaults (0.5 + 1 + 1 + 2.5). The parent
/// computes it and sends it in the boot frame: the child needs it before
/// its `SpawnSpec` (its watcher is forked before any thread).
pub(crate) fn remote_exit_bound(cfg: &Config) -> Duration {
    cfg.cancel_ack_timeout
        .saturating_add(cfg.exit_timeout)
        .saturating_add(cfg.term_timeout)
        .saturating_add(REMOTE_EXIT_SLACK)
}

/// What [`remote_exit_bound`] adds to the ladder's timeouts.
const REMOTE_EXIT_SLACK: Duration = Duration::from_millis(2500);

/// What the watcher of such a child (`spawn::link::start_watcher`) adds
/// to [`remote_exit_bound`] before its SIGKILL: the child's own bound
/// goes first.
const WATCHER_MARGIN: Duration = Duration::from_secs(1);

/// Exit status of a child whose parent vanished before it could start.
const EXIT_ORPHANED: i32 = 3;
/// Exit status of a child that could not reach or handshake its parent.
const EXIT_NO_PARENT: i32 = 4;
/// Exit status of a child that ended because its channel to its parent was
/// lost, nobody having asked it to end: a parent still alive sees an
/// unexpected exit (a connection lost between live processes), not a
/// polite one. (Found by the chaos runner: with every connection dropped
/// at frame N, a child exited 0 and its parent's nursery took that for an
/// end it had asked for, and waited on.)
pub(crate) const EXIT_PARENT_LOST: i32 = 5;

/// What a child learns from [`SPAWN_ENV`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpawnEnv {
    pub(crate) parent_addr: Addr,
    pub(crate) token: String,
    pub(crate) name: String,
    pub(crate) uuid: uuid::Uuid,
    pub(crate) ppid: u32,
    /// Worker threads of the child's runtime (`SpawnOptions::threads`):
    /// the runtime exists before the handshake that brings the rest of the
    /// child's settings, so this one travels with the spawn.
    pub(crate) threads: usize,
}

impl SpawnEnv {
    /// `v2`, then one field per line, the name last.
    pub(crate) fn encode(&self) -> String {
        format!(
            "v2\n{}\n{}\n{}\n{}\n{}\n{}",
            self.parent_addr, self.token, self.uuid, self.ppid, self.threads, self.name
        )
    }

    pub(crate) fn decode(s: &str) -> std::result::Result<SpawnEnv, String> {
        Self::decode_as(s, SPAWN_ENV)
    }

    /// [`decode`](Self::decode), its errors naming `source` (the variable,
    /// or the bootstrap on stdin that carries the same text).
    pub(crate) fn decode_as(s: &str, source: &str) -> std::result::Result<SpawnEnv, String> {
        let mut it = s.splitn(7, '\n');
        let bad = |what: &str| format!("malformed {source}: {what}");
        if it.next() != Some("v2") {
            return Err(bad("unknown version (is the child's furrow another version than its parent's?)"));
        }
        let parent_addr = it.next().ok_or_else(|| bad("no address"))?.parse().map_err(|e| bad(&format!("{e}")))?;
        let token = it.next().ok_or_else(|| bad("no token"))?.to_owned();
        let uuid = it.next().and_then(|u| u.parse().ok()).ok_or_else(|| bad("no uuid"))?;
        let ppid = it.next().and_then(|p| p.parse().ok()).ok_or_else(|| bad("no parent pid"))?;
        let threads =
            it.next().and_then(|p| p.parse().ok()).filter(|n| *n >= 1).ok_or_else(|| bad("no thread count"))?;
        let name = it.next().ok_or_else(|| bad("no name"))?.to_owned();
        Ok(SpawnEnv { parent_addr, token, name, uuid, ppid, threads })
    }
}

/// If this process was spawned as a furrow child actor, serve as one and
/// exit; otherwise return immediately. Call it first thing in `main`,
/// before any thread is started (`#[furrow::main]` does).
///
/// What `#[furrow::main]` does, written out (for a `main` that must do
/// something else first, such as parse arguments only in the root):
///
/// ```no_run
/// #[furrow::remote]
/// async fn work(n: u64) -> u64 { n * 2 }
///
/// fn main() -> furrow::Result<()> {
///     // In a child this serves its parent and never returns.
///     furrow::enter_child_if_spawned();
///     let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(21);
///     furrow::block_on_root(async {
///         furrow::open_nursery(async |nursery| {
///             let p = nursery.start_actor("worker").await?;
///             println!("{}", p.run(work, (n,)).await?);
///             Ok(())
///         })
///         .await
///     })
/// }
/// ```
pub fn enter_child_if_spawned() {
    let Some(raw) = std::env::var_os(SPAWN_ENV) else {
        return;
    };
    // SAFETY: called first thing in `main`, before this process starts any
    // thread, so nothing can read the environment concurrently.
    unsafe { std::env::remove_var(SPAWN_ENV) };
    // Started through a launcher (ssh, a command prefix): the bootstrap,
    // secret included, comes over stdin (docs/design.md, "Remote hosts").
    let on_stdin = raw == crate::spawn::link::ON_STDIN;
    let decoded = if on_stdin {
        crate::spawn::link::read_boot().map(|(env, secret, bound)| (env, Some((secret, bound))))
    } else {
        match raw.to_str() {
            Some(s) => SpawnEnv::decode(s).map(|env| (env, None)),
            None => Err(format!("{SPAWN_ENV} is not valid UTF-8")),
        }
    };
    let (spec, secret) = match decoded {
        Ok(v) => v,
        Err(e) => {
            eprintln!("furrow: {e}");
            std::process::exit(EXIT_NO_PARENT);
        }
    };
    if on_stdin {
        // Our parent process is the launcher's end on this host (sshd's
        // session, `ip netns exec` exec'd into us, ...): its death is the
        // backstop, as the spawning parent's is for a local child.
        crate::spawn::pdeath::arm(crate::spawn::pdeath::parent_pid());
        // Before any thread: it forks.
        let bound = secret.as_ref().map_or(Duration::ZERO, |(_, b)| *b);
        crate::spawn::link::start_watcher(bound.saturating_add(WATCHER_MARGIN));
    } else {
        crate::spawn::pdeath::arm(spec.ppid);
    }
    let rt = match actor_runtime(spec.threads).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("furrow: cannot start the tokio runtime: {e}");
            std::process::exit(EXIT_NO_PARENT);
        }
    };
    let code = rt.block_on(child_main(spec, secret));
    rt.shutdown_timeout(Duration::from_millis(200));
    crate::spawn::link::end_watcher();
    std::process::exit(code);
}

/// The runtime an actor's tasks run on, given its thread count.
///
/// One thread is a current-thread runtime, not a multi-thread one with one
/// worker: the `block_on` thread then runs the I/O driver and every task
/// itself, so a message that arrives wakes no other thread on its way to
/// the task waiting for it. That hop (a futex wake of a parked worker, and
/// the same back) was most of a call's round trip (docs/design.md, "One
/// thread per actor").
pub(crate) fn actor_runtime(threads: usize) -> tokio::runtime::Builder {
    let mut b = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    b.enable_all();
    b
}

async fn child_main(env: SpawnEnv, link: Option<(furrow_proto::Secret, Duration)>) -> i32 {
    // Take over SIGTERM (the parent-death signal among others) before
    // anything that leaves traces, such as binding our socket: with the
    // default action, a parent dying between our bind and the wait below
    // would kill us with our socket file left behind. Tokio keeps a signal
    // that arrives before we wait for it.
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let (secret, on_stdin_link) = match link {
        Some((secret, bound)) => (Some(secret), Some(bound)),
        None => (None, None),
    };
    // Kept for the actor's configuration: the parent does not send it
    // again in the SpawnSpec to a launched child (docs/design.md, "Remote
    // hosts", rule 1).
    let stdin_secret = secret.clone();
    maybe_die_at("start");
    let aid = Aid { name: env.name.clone(), uuid: env.uuid, pid: std::process::id() };
    let conn = match transport::connect(&env.parent_addr).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("furrow: actor {aid}: cannot reach parent at {}: {e}", env.parent_addr);
            return EXIT_NO_PARENT;
        }
    };
    let listener_pid = conn.peer_pid;
    let mut write = conn.write;
    // No bound advertised: ours comes with the SpawnSpec, from the parent's
    // own settings, so the parent's assumption (its own bound) is exact.
    let me = Hello { aid: aid.clone(), spawn_token: Some(env.token.clone()), max_dialogs: None };
    // furrow-proto's `Child` decides; this does its I/O. A child started
    // through a launcher dials TCP, authenticated with the secret that
    // came over its stdin.
    let mut hs = match secret {
        Some(secret) => match crate::ipc::auth::nonce() {
            Ok(n) => Child::over_tcp(&me, env.ppid, (secret, n), SPAWN_HANDSHAKE_TIMEOUT, Instant::now()),
            Err(e) => {
                eprintln!("furrow: actor {aid}: {e}");
                return EXIT_NO_PARENT;
            }
        },
        None => Child::new(&me, env.ppid, SPAWN_HANDSHAKE_TIMEOUT, Instant::now()),
    };
    let mut reader = FrameReader::new(conn.read, hs.read_limit());
    // Our `Aid` on its own first: the fault-injection step `connected` is
    // right after it.
    if let Err(e) = flush(&mut hs, &mut write).await {
        eprintln!("furrow: actor {aid}: handshake with parent failed: {e}");
        return EXIT_NO_PARENT;
    }
    maybe_die_at("connected");
    loop {
        if let Err(e) = drive(&mut hs, &mut reader, &mut write).await {
            eprintln!("furrow: actor {aid}: handshake with parent failed: {e}");
            return EXIT_NO_PARENT;
        }
        let verdict = match hs.status() {
            // The process answering at the parent's address must be the
            // parent that spawned us (the machine checked the pid it was
            // told; the kernel's word on the connection is checked here).
            Status::Verify(parent) => crate::ipc::identity::check(&parent.aid, listener_pid, None),
            Status::Configure(_) => break,
            Status::Failed(f) => {
                eprintln!("furrow: actor {aid}: {}", parent_failure(&env, f));
                return EXIT_NO_PARENT;
            }
            Status::Waiting | Status::Done => return EXIT_NO_PARENT,
        };
        hs.verified(verdict);
    }
    let (Some(parent), Some(mut spec)) = (hs.parent().cloned(), hs.spec().cloned()) else { return EXIT_NO_PARENT };
    if spec.secret.is_none() {
        spec.secret = stdin_secret;
    }
    maybe_die_at("spec");
    if on_stdin_link.is_some() {
        crate::log::say_host(super::host_name());
    }
    crate::log::init(spec.log_filter.as_deref(), false);
    let link =
        Handshaken { reader, write, peer: parent.aid, peer_pid: listener_pid, peer_max_dialogs: parent.max_dialogs };
    // The link's end is heard from now on (its control bytes, signals,
    // are delivered by the thread that reads it).
    let stdin = on_stdin_link.map(|bound| crate::spawn::link::watch_stdin(bound, EXIT_PARENT_LOST));
    serve_as_child(aid, spec, hs, link, term, stdin).instrument(crate::log::actor_span()).await
}

/// What a child says (on stderr: it has no log yet) when the handshake
/// with its parent failed.
fn parent_failure(env: &SpawnEnv, f: &Failure) -> String {
    match f {
        Failure::Identity(why) => format!("refusing the parent at {}: {why}", env.parent_addr),
        Failure::Timeout { .. } => format!("parent sent no SpawnSpec ({f})"),
        _ => format!("handshake with the parent at {} failed: {f}", env.parent_addr),
    }
}

/// The rest of a child's life, once its logging is set up: under its actor
/// span, so everything it logs names it.
async fn serve_as_child(
    aid: Aid,
    spec: SpawnSpec,
    mut hs: Child,
    mut link: Handshaken,
    term: Option<tokio::signal::unix::Signal>,
    stdin: Option<tokio::sync::oneshot::Receiver<()>>,
) -> i32 {
    let config = config_from_spec(&aid.name, &spec);
    let actor = match Actor::start(aid.clone(), config, false) {
        Ok(a) => a,
        Err(e) => {
            // Our parent learns why, in place of `Ready`.
            hs.start_failed(actor_start_error(&aid, &e));
            let _ = flush(&mut hs, &mut link.write).await;
            eprintln!("furrow: actor {aid}: {e}");
            return EXIT_NO_PARENT;
        }
    };
    Actor::set_current(Some(actor.clone()));
    // Register before `Ready`: once `start_actor` returns, the child can be
    // found by name. A registrar that cannot be reached does not fail the
    // child (it retries in the background).
    actor.start_discovery(Plan {
        addrs: spec.registry.clone(),
        mode: if spec.registry.is_empty() { Discovery::Off } else { Discovery::Join },
        listed: true,
        parent: Some(link.peer.clone()),
        first_failure_is_fatal: false,
    });
    let _ = actor.discovery_ready().await;
    maybe_die_at("registered");
    hs.ready(actor.addrs());
    if flush(&mut hs, &mut link.write).await.is_err() {
        actor.shutdown().await;
        return EXIT_ORPHANED;
    }
    maybe_die_at("ready");
    // (A parent channel lost before it was recorded is seen there too.)
    actor.open_channel(link, Link::Parent);
    if let Some(stdin) = stdin {
        let a = actor.clone();
        // Ends with the actor (its tracker is awaited at shutdown: the
        // cancel token ends this branch).
        actor.tracker.spawn(
            async move {
                // Cancel safe: a oneshot receive loses nothing; once the
                // actor is cancelled the link no longer matters.
                tokio::select! {
                    () = a.cancel.cancelled() => {}
                    _ = stdin => {
                        // (Bounded by the thread that read the end: a
                        // subtree that does not end in time does not keep
                        // this process alive.)
                        tracing::info!(actor = %a.aid, "the link to the parent (stdin) closed: cancelling");
                        a.request_cancel_because(None, "the link to its parent (stdin) closed");
                    }
                }
            }
            .instrument(crate::log::actor_span()),
        );
    }
    wait_for_end(&actor, term).await;
    actor.shutdown().await;
    Actor::set_current(None);
    if actor.parent_lost() { EXIT_PARENT_LOST } else { 0 }
}

/// Until the actor is cancelled (by request, by its parent's channel
/// closing, or by SIGTERM / the parent-death signal).
async fn wait_for_end(actor: &Arc<Actor>, term: Option<tokio::signal::unix::Signal>) {
    match term {
        Some(mut term) => {
            // Cancel safe: `Signal::recv` and a token's `cancelled` lose
            // nothing when the other branch wins.
            tokio::select! {
                () = actor.cancel.cancelled() => {}
                _ = term.recv() => {
                    tracing::info!(actor = %actor.aid, "SIGTERM: cancelling");
                    actor.request_cancel_because(None, "SIGTERM");
                }
            }
        }
        None => actor.cancel.cancelled().await,
    }
}

fn actor_start_error(aid: &Aid, e: &Error) -> Msg {
    furrow_proto::ErrorMsg::new(aid.clone(), crate::ErrorKind::ActorStartError, e.to_string()).into()
}

fn config_from_spec(name: &str, spec: &SpawnSpec) -> Config {
    let mut c = Config::new(name)
        .socket_dir(&spec.socket_dir)
        .bind(spec.bind.clone())
        .enable_modules(spec.enable_modules.clone());
    c.max_frame = usize::try_from(spec.max_frame).unwrap_or(furrow_proto::DEFAULT_MAX_FRAME);
    c.registry = spec.registry.clone();
    c.discovery = if spec.registry.is_empty() { Discovery::Off } else { Discovery::Join };
    c.secret = spec.secret.clone();
    match &spec.tuning {
        Some(t) => c.with_tuning(t),
        None => c,
    }
}

/// Configuration for a root created lazily inside [`block_on_root`].
static ROOT_MODE: Mutex<Option<Config>> = Mutex::new(None);

/// The lazily created root of a `#[furrow::main]` program.
pub(super) fn lazy_root() -> Result<Arc<Actor>> {
    let Some(cfg) = lock(&ROOT_MODE).clone() else {
        return Err(Error::usage(
            "no furrow runtime in this process: annotate `main` with #[furrow::main] \
             or run the code inside furrow::run_root(config, ...)",
        ));
    };
    let mut current = lock(&super::CURRENT);
    if let Some(a) = current.as_ref() {
        return Ok(a.clone());
    }
    // A new root cleans up after earlier trees that were SIGKILLed.
    crate::ipc::transport::sweep_stale(&cfg.resolved_socket_dir());
    let plan = root_plan(&cfg)?;
    let actor = Actor::start(Aid::new(cfg.name.clone(), std::process::id()), cfg, true)?;
    actor.start_discovery(plan);
    *current = Some(actor.clone());
    Ok(actor)
}

/// How a root takes part in discovery.
fn root_plan(cfg: &Config) -> Result<Plan> {
    Ok(Plan {
        addrs: if cfg.discovery == Discovery::Off { Vec::new() } else { cfg.resolved_registry()? },
        mode: cfg.discovery,
        listed: cfg.listed,
        parent: None,
        first_failure_is_fatal: true,
    })
}

/// Run `fut` as the root of an actor tree on a new tokio runtime, of one
/// thread unless [`Config::threads`] says otherwise (see
/// [`SpawnOptions::threads`](crate::SpawnOptions::threads)): what
/// `#[furrow::main]` expands to. Reach for the attribute; call this from a
/// plain `main` that runs several trees in turn or does synchronous work
/// around one (docs/guide.md, "Starting a root", compares the ways). The root actor is created on
/// first use (the first nursery) with the default [`Config`], named after
/// the program's executable (`service_daemon`, …), and torn down
/// when `fut` returns: its children reaped, its channels closed, its socket
/// files removed.
///
/// **Ctrl-C.** The first SIGINT (or SIGTERM) cancels the whole tree
/// gracefully: every open nursery cancels its body and ends its children
/// through the teardown ladder (children, in their own process groups, do
/// not see the terminal's SIGINT themselves). When `fut` has returned, the
/// process prints one line and exits with status 130 (143 for SIGTERM). A
/// second SIGINT during a slow shutdown kills every child with SIGKILL and
/// exits at once.
///
/// ```no_run
/// fn main() -> furrow::Result<()> {
///     furrow::enter_child_if_spawned(); // always first
///     furrow::block_on_root(async {
///         furrow::open_nursery(async |n| {
///             let _service = n.start_actor("service").await?;
///             // Serve until Ctrl-C: the nursery then cancels this body.
///             std::future::pending::<furrow::Result<()>>().await
///         })
///         .await
///     })
/// }
/// ```
///
/// # Panics
/// If the tokio runtime cannot be built.
pub fn block_on_root<F: Future>(fut: F) -> F::Output {
    block_on_root_with(Config::new(program_name()), fut)
}

/// [`block_on_root`] with the root configured by `config` (its name, bind
/// addresses, timeouts, registry, secret, …), Ctrl-C handling included:
/// what `#[furrow::main(config = make_config)]` expands to.
///
/// ```no_run
/// fn config() -> furrow::Config {
///     furrow::Config::new("hub").bind(["tcp://127.0.0.1:7700".parse().expect("address")])
/// }
///
/// #[furrow::main(config = config)]
/// async fn main() -> furrow::Result<()> {
///     furrow::open_nursery(async |n| {
///         let _service = n.start_actor("service").await?;
///         std::future::pending::<furrow::Result<()>>().await // until Ctrl-C
///     })
///     .await
/// }
/// ```
///
/// # Panics
/// If the tokio runtime cannot be built. A malformed `Config::chaos`
/// spec (feature `chaos`) is reported and the process exits with status 2.
pub fn block_on_root_with<F: Future>(config: Config, fut: F) -> F::Output {
    refuse_unentered_child();
    crate::log::init(None, true);
    #[cfg(feature = "chaos")]
    if let Some(spec) = &config.chaos
        && let Err(e) = crate::chaos::install(spec)
    {
        eprintln!("furrow: Config::chaos: {e}");
        std::process::exit(2);
    }
    // The root future runs on this thread, and with one thread (the
    // default) so does all of the root's I/O: see `actor_runtime`.
    let rt = match actor_runtime(config.threads).build() {
        Ok(rt) => rt,
        Err(e) => panic!("furrow: cannot start the tokio runtime: {e}"),
    };
    *lock(&ROOT_MODE) = Some(config);
    let interrupted = Arc::new(AtomicI32::new(0));
    // Under the actor span (its name and uuid are filled in when the root
    // actor starts).
    let out = rt.block_on(
        async {
            let signals = tokio::spawn(watch_signals(interrupted.clone()));
            let out = fut.await;
            if let Some(actor) = Actor::take_current() {
                actor.shutdown().await;
            }
            signals.abort();
            out
        }
        .instrument(crate::log::actor_span()),
    );
    *lock(&ROOT_MODE) = None;
    let sig = Some(interrupted.load(Ordering::Acquire)).filter(|s| *s != 0);
    if let Some(sig) = sig {
        let name = if sig == libc::SIGTERM { "SIGTERM" } else { "SIGINT" };
        eprintln!("furrow: interrupted by {name}; the actor tree was cancelled");
        // The tree is reaped and the root shut down: exit at once (a runtime
        // shutdown could only wait on blocking threads we no longer need).
        std::process::exit(128 + sig);
    }
    out
}

/// Exit if this process is a spawned child whose `main` did not enter
/// child mode first: it would run the user's main in every child and spawn
/// recursively.
pub(crate) fn refuse_unentered_child() {
    if std::env::var_os(SPAWN_ENV).is_some() {
        eprintln!(
            "furrow: this process was started as a furrow child actor but its main did not enter \
             child mode; call furrow::enter_child_if_spawned() first (or use #[furrow::main])"
        );
        std::process::exit(EXIT_NO_PARENT);
    }
}

/// The name of a `#[furrow::main]` root: the program's file name (so
/// `furrow ls` tells programs apart), or `root`.
fn program_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|s| crate::config::check_actor_name(s).is_ok())
        .unwrap_or_else(|| "root".to_owned())
}

/// First SIGINT/SIGTERM: cancel the root actor (gracefully). Second
/// SIGINT: SIGKILL every child and exit.
/// `interrupted` is set to the first signal's number (0 until then): an
/// atomic, so sync code may read it without taking a lock the runtime's
/// threads hold.
pub(crate) async fn watch_signals(interrupted: Arc<AtomicI32>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        tracing::warn!("cannot install SIGINT/SIGTERM handlers");
        return;
    };
    // `Signal::recv` is cancel safe: a signal that lost the race is still
    // pending for the next `recv`.
    let first = tokio::select! {
        _ = int.recv() => libc::SIGINT,
        _ = term.recv() => libc::SIGTERM,
    };
    interrupted.store(first, Ordering::Release);
    let why = if first == libc::SIGTERM { "SIGTERM" } else { "SIGINT (Ctrl-C)" };
    eprintln!("furrow: {why}: cancelling the actor tree (Ctrl-C again to kill it)");
    match Actor::current() {
        Ok(actor) => {
            let aid = actor.aid.clone();
            actor.request_cancel_because(Some(aid), why);
        }
        // No actor yet: nothing to cancel gracefully.
        Err(_) => std::process::exit(128 + first),
    }
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!("furrow: second signal: killing the actor tree");
    if let Ok(actor) = Actor::current() {
        actor.kill_children_now();
        crate::ipc::transport::remove_socket_files(&actor.socket_addrs());
    }
    std::process::exit(128 + libc::SIGKILL);
}

/// Run `fut` as the root actor of a tree configured by `config`, inside
/// the current tokio runtime. When `fut` returns, the root is torn down:
/// children still alive are killed and reaped, channels closed, socket
/// files removed.
///
/// Call [`enter_child_if_spawned`] first in `main`: a child process that
/// reaches `run_root` instead (its `main` did not enter child mode) exits
/// with a message saying so, rather than starting a tree of its own. Unlike
/// [`block_on_root`], it installs no Ctrl-C handling: the program owns its
/// runtime and its signals.
///
/// ```no_run
/// # async fn demo() -> furrow::Result<()> {
/// let cfg = furrow::Config::new("root").socket_dir("/tmp/my-tree");
/// furrow::run_root(cfg, async {
///     furrow::open_nursery(async |n| {
///         let _p = n.start_actor("worker").await?;
///         Ok(())
///     })
///     .await
/// })
/// .await?
/// # }
/// ```
///
/// # Cancel safety
/// Dropping the future drops `fut` (and so its nurseries, whose children
/// are killed) but cannot wait for the root's asynchronous teardown; the
/// root's listener is removed and its socket file unlinked synchronously.
pub async fn run_root<F: Future>(config: Config, fut: F) -> Result<F::Output> {
    refuse_unentered_child();
    if lock(&super::CURRENT).is_some() {
        return Err(Error::usage("run_root: this process already runs a furrow actor"));
    }
    #[cfg(feature = "chaos")]
    if let Some(spec) = &config.chaos {
        crate::chaos::install(spec).map_err(|e| Error::usage(format!("Config::chaos: {e}")))?;
    }
    let plan = root_plan(&config)?;
    let actor = Actor::start(Aid::new(config.name.clone(), std::process::id()), config, true)?;
    Actor::set_current(Some(actor.clone()));
    actor.start_discovery(plan);
    if let Err(e) = actor.discovery_ready().await {
        actor.shutdown().await;
        Actor::set_current(None);
        return Err(e);
    }
    struct Reset(Arc<Actor>);
    impl Drop for Reset {
        fn drop(&mut self) {
            // Only reached without the async teardown when `run_root`'s
            // future is dropped: remove what can be removed synchronously.
            Actor::set_current(None);
            self.0.cancel.cancel();
            crate::ipc::transport::remove_socket_files(&self.0.socket_addrs());
        }
    }
    let reset = Reset(actor.clone());
    let out = fut.instrument(crate::log::actor_span()).await;
    actor.shutdown().await;
    drop(reset);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_closed_bound_follows_the_trees_timeouts() {
        // 5 s at the defaults, as before it was derived.
        assert_eq!(remote_exit_bound(&Config::new("r")), Duration::from_secs(5));
        let slow = Config::new("r").exit_timeout(Duration::from_secs(10)).term_timeout(Duration::from_secs(4));
        assert_eq!(remote_exit_bound(&slow), Duration::from_millis(500 + 10_000 + 4_000 + 2_500));
        let quick = Config::new("r")
            .cancel_ack_timeout(Duration::from_millis(100))
            .exit_timeout(Duration::from_millis(200))
            .term_timeout(Duration::from_millis(200));
        assert_eq!(remote_exit_bound(&quick), Duration::from_millis(3_000));
    }

    #[test]
    fn an_actor_runtime_has_the_threads_it_was_given() {
        use tokio::runtime::RuntimeFlavor;
        let shape = |n| {
            let rt = actor_runtime(n).build().expect("runtime");
            (rt.handle().runtime_flavor(), rt.metrics().num_workers())
        };
        assert_eq!(shape(1), (RuntimeFlavor::CurrentThread, 1));
        assert_eq!(shape(0), (RuntimeFlavor::CurrentThread, 1));
        assert_eq!(shape(3), (RuntimeFlavor::MultiThread, 3));
    }

    #[test]
    fn spawn_env_round_trip() {
        let e = SpawnEnv {
            parent_addr: "uds:///tmp/x y/p.sock".parse().unwrap(),
            token: "tok".into(),
            name: "worker one".into(),
            uuid: uuid::Uuid::new_v4(),
            ppid: 42,
            threads: 3,
        };
        assert_eq!(SpawnEnv::decode(&e.encode()).unwrap(), e);
        assert!(SpawnEnv::decode("v2\nx").is_err());
        assert!(SpawnEnv::decode("v1\nnot-an-addr\nt\nu\n1\nn").is_err());
        // A zero thread count is malformed, not silently "one".
        let zero = e.encode().replace("\n42\n3\n", "\n42\n0\n");
        assert!(SpawnEnv::decode(&zero).unwrap_err().contains("thread count"));
    }
}
