//! Starting child actors and ending them.
//!
//! A child is the current executable (or a named one) re-executed with
//! [`SPAWN_ENV`](crate::runtime::entry) set. Its start is a sequence whose
//! every step races against the process exiting, so a child that dies at
//! any point of its start is reported as such, promptly, and reaped:
//!
//! ```text
//! spawned ─▶ connected (Aid exchange) ─▶ SpawnSpec sent ─▶ ready (Ready received)
//! ```
//!
//! Each child has a *reaper* task that owns the OS process handle, waits
//! for its exit, publishes the exit status, and delivers signals (only
//! while the process is not yet reaped, so a signal never hits a reused
//! pid).
//!
//! # Caveats
//! Like `tokio::process`, a child is reaped by its reaper task on the
//! runtime that spawned it. If that runtime is shut down first, the OS
//! handle is dropped with `kill_on_drop` (SIGKILL) and the child's
//! parent-death signal fires; the zombie is then reaped by tokio's orphan
//! queue or by init.

pub(crate) mod launcher;
pub(crate) mod link;
pub(crate) mod orphans;
pub(crate) mod output;
pub(crate) mod pdeath;
pub(crate) mod ship;

use crate::ipc::Channel;
use crate::ipc::handshake::drive;
use crate::runtime::entry::{SPAWN_ENV, SpawnEnv};
use crate::runtime::{Actor, Handshaken, Link};
use crate::{Error, Result};
use furrow_proto::handshake::{Failure, Handshake, Hello, Parent, Status};
use furrow_proto::{Addr, Aid, SpawnSpec};
pub use launcher::Launcher;
pub use output::Output;
use output::Stream;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How to start one child actor.
///
/// Besides furrow's own settings, the options a `std::process::Command`
/// takes: arguments ([`args`](Self::args)), environment
/// ([`env`](Self::env), [`env_clear`](Self::env_clear), …), working
/// directory ([`current_dir`](Self::current_dir)), and where its output
/// goes ([`stdout`](Self::stdout), [`stderr`](Self::stderr)). A child's
/// stdin is `/dev/null`; for a child started through a [`Launcher`] other
/// than the local one ([`launcher`](Self::launcher), [`host`](Self::host)),
/// it is furrow's link to the child (its bootstrap, then its signals).
///
/// ```no_run
/// use furrow::SpawnOptions;
///
/// # async fn demo() -> furrow::Result<()> {
/// furrow::open_nursery(async |n| {
///     // A sandboxed child: it serves `my_app::jobs` only.
///     let jobs = n.start_actor_with("jobs", SpawnOptions::new().enable_modules(["my_app::jobs"])).await?;
///     // A child running another furrow program, reachable over TCP too.
///     let opts = SpawnOptions::new()
///         .exe("/usr/local/bin/indexer")
///         .bind(["tcp://0.0.0.0:0".parse().unwrap()]);
///     let indexer = n.start_actor_with("indexer", opts).await?;
///     # let _ = (jobs, indexer);
///     Ok(())
/// })
/// .await
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct SpawnOptions {
    pub(crate) exe: Option<PathBuf>,
    pub(crate) enable_modules: Vec<String>,
    pub(crate) bind: Vec<Addr>,
    pub(crate) threads: Option<usize>,
    pub(crate) stdout: Output,
    pub(crate) stderr: Output,
    pub(crate) args: Vec<OsString>,
    /// Variables set (`Some`) or removed (`None`), the last word per name.
    pub(crate) env: BTreeMap<OsString, Option<OsString>>,
    pub(crate) env_clear: bool,
    pub(crate) current_dir: Option<PathBuf>,
    pub(crate) launcher: Launcher,
    pub(crate) connect_back: Option<Addr>,
}

impl SpawnOptions {
    /// Defaults: re-execute the current binary, serve everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Run this executable instead of the current one. It must be a furrow
    /// program (its `main` enters child mode first).
    pub fn exe(mut self, path: impl Into<PathBuf>) -> Self {
        self.exe = Some(path.into());
        self
    }

    /// Serve only these module paths in the child.
    pub fn enable_modules<S: Into<String>>(mut self, m: impl IntoIterator<Item = S>) -> Self {
        self.enable_modules = m.into_iter().map(Into::into).collect();
        self
    }

    /// Addresses the child listens on (default: one UDS socket).
    pub fn bind(mut self, addrs: impl IntoIterator<Item = Addr>) -> Self {
        self.bind = addrs.into_iter().collect();
        self
    }

    /// How many threads run the child's tasks: 1 by default (0 counts as 1).
    ///
    /// An actor is a process, and processes are furrow's unit of
    /// parallelism, so by default an actor runs on one thread (a tokio
    /// current-thread runtime): its reader, writer and every function it
    /// serves share that thread, and a call costs no wake-up of another
    /// thread (docs/design.md, "One thread per actor"). With `n ≥ 2` the
    /// child runs a multi-thread runtime with `n` workers, for an actor
    /// whose functions want parallelism inside it (or call
    /// `tokio::task::block_in_place`, which needs one).
    ///
    /// Either way a function must not block its thread for long: on one
    /// thread that stalls the whole actor, its answers to cancel requests
    /// and keepalive probes included. Move blocking work to
    /// `tokio::task::spawn_blocking`.
    ///
    /// ```no_run
    /// # async fn demo() -> furrow::Result<()> {
    /// furrow::open_nursery(async |n| {
    ///     let cruncher = n.start_actor_with("cruncher", furrow::SpawnOptions::new().threads(4)).await?;
    ///     # let _ = cruncher;
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n.max(1));
        self
    }

    /// Where the child's stdout goes: inherited from this process (the
    /// default), relayed line by line with a prefix ([`Output::relay`]),
    /// to a file, or nowhere. Processes the child starts inherit it.
    ///
    /// ```no_run
    /// use furrow::{Output, SpawnOptions};
    /// # async fn demo() -> furrow::Result<()> {
    /// furrow::open_nursery(async |n| {
    ///     // Its lines arrive on our stdout as "[worker] …".
    ///     let worker = n.start_actor_with("worker", SpawnOptions::new().stdout(Output::relay())).await?;
    ///     # let _ = worker;
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    pub fn stdout(mut self, out: Output) -> Self {
        self.stdout = out;
        self
    }

    /// Where the child's stderr goes, as [`stdout`](Self::stdout) (a
    /// relay writes to this process's stderr). furrow's own log lines of
    /// the child (`[name@pid] …`) go there too.
    ///
    /// ```no_run
    /// use furrow::{Output, SpawnOptions};
    /// # async fn demo() -> furrow::Result<()> {
    /// furrow::open_nursery(async |n| {
    ///     let opts = SpawnOptions::new().stderr(Output::file("worker.err"));
    ///     let worker = n.start_actor_with("worker", opts).await?;
    ///     # let _ = worker;
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    pub fn stderr(mut self, out: Output) -> Self {
        self.stderr = out;
        self
    }

    /// Add an argument to the child's command line (after the program,
    /// which is `argv[0]`).
    ///
    /// furrow itself never reads a child's arguments (child mode comes
    /// from the environment), so they are the program's own: in the child,
    /// `std::env::args()` returns them. The test harness ignores them too.
    ///
    /// ```no_run
    /// # async fn demo() -> furrow::Result<()> {
    /// furrow::open_nursery(async |n| {
    ///     let opts = furrow::SpawnOptions::new().arg("--shard").arg("3");
    ///     let shard = n.start_actor_with("shard-3", opts).await?;
    ///     # let _ = shard;
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Add several arguments, as [`arg`](Self::arg).
    ///
    /// ```no_run
    /// # async fn demo() -> furrow::Result<()> {
    /// furrow::open_nursery(async |n| {
    ///     let opts = furrow::SpawnOptions::new().args(["--verbose", "--input", "/data/in"]);
    ///     let worker = n.start_actor_with("worker", opts).await?;
    ///     # let _ = worker;
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    pub fn args<S: Into<OsString>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Set the environment variable `key` in the child (the child inherits
    /// this process's environment otherwise).
    ///
    /// furrow's own variables are set after the user's and cannot be
    /// overridden: `FURROW_SPAWN` (child mode) and, with the `chaos`
    /// feature, `FURROW_CHAOS` (the tree's chaos configuration, when there
    /// is one).
    ///
    /// ```no_run
    /// # async fn demo() -> furrow::Result<()> {
    /// furrow::open_nursery(async |n| {
    ///     let opts = furrow::SpawnOptions::new().env("DATABASE_URL", "postgres://localhost/test");
    ///     let worker = n.start_actor_with("worker", opts).await?;
    ///     # let _ = worker;
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    pub fn env(mut self, key: impl Into<OsString>, val: impl Into<OsString>) -> Self {
        self.env.insert(key.into(), Some(val.into()));
        self
    }

    /// Set several environment variables, as [`env`](Self::env).
    ///
    /// ```no_run
    /// # async fn demo() -> furrow::Result<()> {
    /// furrow::open_nursery(async |n| {
    ///     let opts = furrow::SpawnOptions::new().envs([("LANG", "C"), ("TZ", "UTC")]);
    ///     let worker = n.start_actor_with("worker", opts).await?;
    ///     # let _ = worker;
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    pub fn envs<K: Into<OsString>, V: Into<OsString>>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self {
        for (k, v) in vars {
            self.env.insert(k.into(), Some(v.into()));
        }
        self
    }

    /// Remove the environment variable `key` from the child's environment
    /// (undoing an [`env`](Self::env) of it too).
    ///
    /// ```no_run
    /// # async fn demo() -> furrow::Result<()> {
    /// furrow::open_nursery(async |n| {
    ///     let opts = furrow::SpawnOptions::new().env_remove("AWS_SECRET_ACCESS_KEY");
    ///     let sandbox = n.start_actor_with("sandbox", opts).await?;
    ///     # let _ = sandbox;
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env.insert(key.into(), None);
        self
    }

    /// Start the child with an empty environment, plus the variables
    /// given with [`env`](Self::env) after this call (those given before
    /// are forgotten, as with `std::process::Command::env_clear`).
    ///
    /// The tree's own settings still reach the child: furrow sets
    /// `FURROW_SPAWN` as always (and `FURROW_CHAOS`, with the `chaos`
    /// feature); it carries over from this process's environment
    /// `RUST_LOG`, and with the `chaos` feature the test hooks
    /// `FURROW_FRAGMENT` and `FURROW_CHAOS_DIE_AT`, when set here and not
    /// set or removed by name with this builder; and it sets
    /// `FURROW_SECRET_FILE` to the secret file this process would read
    /// (`$HOME` is gone, so the child could not find it otherwise).
    ///
    /// ```no_run
    /// # async fn demo() -> furrow::Result<()> {
    /// furrow::open_nursery(async |n| {
    ///     // Only PATH and LANG (and furrow's own variables).
    ///     let opts = furrow::SpawnOptions::new().env_clear().env("PATH", "/usr/bin:/bin").env("LANG", "C");
    ///     let clean = n.start_actor_with("clean", opts).await?;
    ///     # let _ = clean;
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    pub fn env_clear(mut self) -> Self {
        self.env.clear();
        self.env_clear = true;
        self
    }

    /// The child's working directory (default: this process's).
    ///
    /// The directory is checked before the child is started: one that does
    /// not exist, or is not a directory, fails the start with
    /// [`Error::Spawn`] naming it. Paths are taken from this process's
    /// directory, not the child's: the socket paths furrow hands the child
    /// (so a relative socket directory still works), an [`exe`](Self::exe)
    /// given as a relative path (`bin/worker`; a bare name is looked up
    /// in `PATH`), an [`Output::file`].
    ///
    /// ```no_run
    /// # async fn demo() -> furrow::Result<()> {
    /// furrow::open_nursery(async |n| {
    ///     let opts = furrow::SpawnOptions::new().current_dir("/srv/data");
    ///     let worker = n.start_actor_with("worker", opts).await?;
    ///     # let _ = worker;
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// How the child's process is started: here (the default), through a
    /// command prefix, or on another host over ssh ([`Launcher`]). A child
    /// started through a prefix or ssh gets its bootstrap over its stdin
    /// and connects back over TCP (see [`connect_back`](Self::connect_back)).
    ///
    /// ```no_run
    /// use furrow::{Launcher, SpawnOptions};
    /// # async fn demo() -> furrow::Result<()> {
    /// furrow::open_nursery(async |n| {
    ///     let opts = SpawnOptions::new().launcher(Launcher::prefix(["ip", "netns", "exec", "far"]));
    ///     let far = n.start_actor_with("far", opts).await?;
    ///     # let _ = far;
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    pub fn launcher(mut self, launcher: Launcher) -> Self {
        self.launcher = launcher;
        self
    }

    /// Start the child on `host` over ssh: `launcher(Launcher::ssh(host))`.
    /// The same path as this executable (or [`exe`](Self::exe)) is run
    /// there.
    ///
    /// ```no_run
    /// # async fn demo() -> furrow::Result<()> {
    /// // The root listens on an address gpu3 can reach.
    /// let cfg = furrow::Config::new("root").bind(["tcp://10.0.0.1:0".parse().expect("address")]);
    /// furrow::run_root(cfg, async {
    ///     furrow::open_nursery(async |n| {
    ///         let w = n.start_actor_with("worker", furrow::SpawnOptions::new().host("me@gpu3:2222")).await?;
    ///         # let _ = w;
    ///         Ok(())
    ///     })
    ///     .await
    /// })
    /// .await?
    /// # }
    /// ```
    pub fn host(self, host: impl Into<String>) -> Self {
        self.launcher(Launcher::ssh(host))
    }

    /// The TCP address a child started through a [`Launcher`] other than
    /// the local one connects back to. By default, a TCP address this
    /// actor listens on that names a host; one that does not (`0.0.0.0`,
    /// `::`), or none at all, fails the spawn with [`Error::Spawn`] saying
    /// what to set. The address need not be one this actor binds itself
    /// (a port forwarded to it, a NAT's outside address), as long as the
    /// connections arrive at one of its TCP listeners.
    ///
    /// ```no_run
    /// use furrow::SpawnOptions;
    /// // Listening on every interface (Config::bind tcp://0.0.0.0:7700):
    /// // the far host reaches this one at 10.0.0.1.
    /// let opts = SpawnOptions::new().host("gpu3").connect_back("tcp://10.0.0.1:7700".parse().expect("address"));
    /// # let _ = opts;
    /// ```
    pub fn connect_back(mut self, addr: Addr) -> Self {
        self.connect_back = Some(addr);
        self
    }
}

/// One step in the life of a child actor, as its parent observed it.
///
/// For every child the steps are reported in this order, with none after
/// `Exited`, whatever moment the child dies at: a child that dies during
/// its start shows the steps it reached, then its exit.
///
/// ```no_run
/// # async fn demo() -> furrow::Result<()> {
/// let r = furrow::open_nursery(async |n| n.start_actor("flaky").await.map(drop)).await;
/// if let Err(furrow::Error::Spawn { name, lifecycle, .. }) = &r {
///     let steps: Vec<String> = lifecycle.iter().map(ToString::to_string).collect();
///     eprintln!("{name} failed to start: {}", steps.join(" → "));
///     // e.g. "spawned (pid 4242) → connected → exited (signal 9 (SIGKILL))"
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// The process exists.
    Spawned {
        /// Its pid: for a child started through a [`Launcher`] other than
        /// the local one, the launcher's (ssh's), the process this actor
        /// reaps; the child's own is in its `Aid`.
        pid: u32,
    },
    /// It connected back and exchanged identities.
    Connected,
    /// It applied its configuration and is serving.
    Ready,
    /// Its process ended (and was reaped).
    Exited {
        /// `exit code N` or `signal N (NAME)`.
        status: String,
    },
}

impl std::fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lifecycle::Spawned { pid } => write!(f, "spawned (pid {pid})"),
            Lifecycle::Connected => f.write_str("connected"),
            Lifecycle::Ready => f.write_str("ready"),
            Lifecycle::Exited { status } => write!(f, "exited ({status})"),
        }
    }
}

/// The lifecycle record of one child, appended to by one writer at a time
/// in program order (the start sequence, then its exit monitor), which is
/// what keeps the order.
pub(crate) type LifecycleLog = Arc<std::sync::Mutex<Vec<Lifecycle>>>;

pub(crate) fn log_step(log: &LifecycleLog, step: Lifecycle) {
    crate::sync::lock(log).push(step);
}

fn log_text(log: &LifecycleLog) -> String {
    let steps = crate::sync::lock(log);
    steps.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" → ")
}

/// How a child's process ended, and what ended it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Exit {
    pub(crate) status: ExitStatus,
}

/// Handle on a child process, shared between its nursery and its actor's
/// registry. Cloning shares the same process.
#[derive(Clone, Debug)]
pub(crate) struct ChildProc {
    /// The process this actor started and reaps: the child, or its
    /// launcher (ssh, a command prefix).
    pid: u32,
    /// The child's own pid, the one in its `Aid`: `pid` for a local child,
    /// the one it reported for a child started through a launcher.
    aid_pid: u32,
    /// The launcher's program (`ssh`), for a child started through one:
    /// with `aid_pid` not `pid`, the process reaped stands for the link.
    launcher: Option<String>,
    name: String,
    /// The uuid it was given (its `Aid`'s, once it connected back).
    uuid: uuid::Uuid,
    signals: mpsc::UnboundedSender<i32>,
    exit: watch::Receiver<Option<Exit>>,
    /// True once its output relays are done (at once when it has none):
    /// after its exit, bounded by `output::DRAIN_BOUND`.
    output: watch::Receiver<bool>,
}

impl ChildProc {
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// `ssh pid 77`: the launcher that stands for this child here, when the
    /// process reaped is not the child's own (a prefix that execs the
    /// child, such as `ip netns exec`, is the child).
    pub(crate) fn launcher(&self) -> Option<String> {
        self.launcher.as_ref().filter(|_| self.aid_pid != self.pid).map(|l| format!("{l} pid {}", self.pid))
    }

    /// Its identity: the name and uuid it was spawned with, its pid.
    pub(crate) fn aid(&self) -> Aid {
        Aid { name: self.name.clone(), uuid: self.uuid, pid: self.aid_pid }
    }

    /// The exit, if the process has been reaped.
    pub(crate) fn exited(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    /// Send `sig` if the process is still running (never to a reaped pid).
    /// Never blocks.
    pub(crate) fn signal(&self, sig: i32) {
        let _ = self.signals.send(sig);
    }

    /// Wait until the process is reaped, at most `d`.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn wait_exit(&self, d: Duration) -> Option<Exit> {
        let mut rx = self.exit.clone();
        match tokio::time::timeout(d, rx.wait_for(Option::is_some)).await {
            Ok(Ok(v)) => *v,
            // Reaper gone without a status: the runtime is going down.
            Ok(Err(_)) => self.exited(),
            Err(_) => None,
        }
    }

    /// Wait until its output relays have written its last lines (at once
    /// without relays). The reaper bounds this by `output::DRAIN_BOUND`
    /// after the exit; call it once the exit is seen.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn wait_output(&self) {
        let mut rx = self.output.clone();
        // `Err`: the reaper is gone (the runtime is going down).
        let _ = rx.wait_for(|done| *done).await;
    }

    /// End a child left running by a nursery that was dropped: SIGTERM
    /// (the child handles it as a cancel and ends its own children), then
    /// SIGKILL after `term_timeout`; wait for the reap.
    pub(crate) async fn end_leftover(&self, term_timeout: Duration) -> Option<Exit> {
        let exit = match self.exited() {
            Some(e) => Some(e),
            None => {
                self.signal(libc::SIGTERM);
                match self.wait_exit(term_timeout).await {
                    Some(e) => Some(e),
                    None => {
                        tracing::warn!(child = %self.name, pid = self.pid, "child ignored SIGTERM: SIGKILL");
                        self.signal(libc::SIGKILL);
                        self.wait_exit(Duration::from_secs(5)).await
                    }
                }
            }
        };
        if exit.is_some() {
            self.wait_output().await;
        }
        exit
    }
}

/// How long a SIGKILL sent over a launched child's link has to end it (and
/// so its launcher) before the launcher is killed too.
const SIGKILL_OVER_LINK: Duration = Duration::from_millis(300);

/// Owns the OS process: reaps it, delivers signals while it is unreaped,
/// removes its socket files if it could not; then waits for its output
/// relays (bounded), and says so on `output`.
async fn reaper(
    mut child: tokio::process::Child,
    name: String,
    mut signals: mpsc::UnboundedReceiver<i32>,
    (exit, relays, output): (watch::Sender<Option<Exit>>, Vec<output::Relay>, watch::Sender<bool>),
    sockets: watch::Receiver<Vec<Addr>>,
    (socket_dir, exit_timeout, term_timeout): (std::path::PathBuf, Duration, Duration),
    mut link: Option<tokio::process::ChildStdin>,
) {
    use tokio::io::AsyncWriteExt;
    let pid = child.id().unwrap_or(0);
    let status = loop {
        tokio::select! {
            // `wait` is cancel safe: losing the race to a signal request
            // loses nothing.
            st = child.wait() => break st,
            Some(sig) = signals.recv() => {
                // try_wait reaps if it already exited; only signal a
                // process that is still ours and alive.
                if let Ok(None) = child.try_wait() {
                    // A child started through a launcher gets its signals
                    // as one byte each on its stdin (the link): the process
                    // here is the launcher. Bounded: a link that does not
                    // take a byte (its far end stopped reading and every
                    // buffer on the way is full) must not hold the reaper;
                    // SIGKILL ends the launcher regardless, which closes
                    // the link, and the far end ends on its own.
                    if let Some(stdin) = link.as_mut() {
                        let byte = u8::try_from(sig).unwrap_or(libc::SIGKILL as u8);
                        let sent = tokio::time::timeout(Duration::from_secs(1), async {
                            stdin.write_all(&[byte]).await?;
                            stdin.flush().await
                        })
                        .await;
                        if !matches!(sent, Ok(Ok(()))) {
                            tracing::warn!(child = %name, pid, sig, "could not send a signal over the child's link");
                        }
                    }
                    if link.is_some() && sig == libc::SIGKILL {
                        // The byte first has a moment to arrive: killing
                        // the launcher at once would often close the link
                        // before it, and the far child would end by the
                        // link's bound (`remote_exit_bound`, 5 s at the
                        // defaults) instead of at once. Its end
                        // ends the launcher (ssh exits when its command
                        // does). `wait` here is not raced: a signal
                        // request arriving meanwhile waits in its channel.
                        if let Ok(st) = tokio::time::timeout(SIGKILL_OVER_LINK, child.wait()).await {
                            break st;
                        }
                    }
                    if link.is_none() || sig == libc::SIGKILL {
                        // Our own unreaped child: the pid is still its.
                        send_signal(pid, sig);
                    }
                }
            }
        }
    };
    // The link closes with the process's end (nothing more to say to it).
    drop(link);
    orphans::reaped(pid);
    match status {
        Ok(status) => {
            // A child that died hard could not end its own children: they
            // are ours now (we are a subreaper), and part of this exit.
            if std::os::unix::process::ExitStatusExt::signal(&status).is_some() {
                let n = orphans::end_adopted(&socket_dir, pid, exit_timeout, term_timeout).await;
                if n > 0 {
                    tracing::info!(child = %name, pid, "{n} actor(s) orphaned by its death were ended");
                }
            }
            // A child killed before it could unlink its sockets leaves them.
            // They are removed before the exit is published (so whoever sees
            // the exit sees the files gone), and again after, for addresses
            // the start sequence published meanwhile; the start sequence
            // covers the rest (see `spawn`).
            crate::ipc::transport::remove_socket_files(&sockets.borrow());
            tracing::debug!(child = %name, pid, %status, "child reaped");
            let _ = exit.send(Some(Exit { status }));
            crate::ipc::transport::remove_socket_files(&sockets.borrow());
        }
        Err(e) => tracing::error!(child = %name, pid, "waiting for child failed: {e}"),
    }
    // The exit is published first: the teardown ladder's bounded waits
    // are for the process, and a relay held up by a process the child
    // left behind must not make a child that exited when asked look like
    // one that had to be signalled. Whoever reports the child gone (its
    // nursery, a failed start) waits for `output` as well.
    if !relays.is_empty() {
        output::finish(relays, &name).await;
        let _ = output.send(true);
    }
}

/// Describe an exit status: `exit code 3` or `signal 9 (SIGKILL)`.
pub(crate) fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        if code == crate::runtime::entry::EXIT_PARENT_LOST {
            return format!("exit code {code} (its channel to its parent was lost)");
        }
        format!("exit code {code}")
    } else if let Some(sig) = status.signal() {
        let name = match sig {
            libc::SIGKILL => " (SIGKILL)",
            libc::SIGTERM => " (SIGTERM)",
            libc::SIGSEGV => " (SIGSEGV)",
            libc::SIGABRT => " (SIGABRT)",
            libc::SIGINT => " (SIGINT)",
            _ => "",
        };
        format!("signal {sig}{name}")
    } else {
        status.to_string()
    }
}

/// A started child: its channel and its process.
pub(crate) struct Started {
    pub(crate) chan: Arc<Channel>,
    pub(crate) proc: ChildProc,
    pub(crate) aid: Aid,
    pub(crate) addrs: Vec<Addr>,
}

/// Start child actor `name` and return once it is serving.
///
/// On any failure the process (if one was started) is killed and reaped
/// before the error is returned, and no fd stays open.
///
/// # Cancel safety
/// If the future is dropped mid-start, the process handle is dropped with
/// `kill_on_drop` (SIGKILL) and the pending spawn token is forgotten. For
/// a child started through a launcher, that kills the launcher, whose end
/// closes the link: the far child ends itself (docs/design.md, "Remote
/// hosts", rule 4).
pub(crate) async fn spawn(actor: &Arc<Actor>, name: &str, opts: &SpawnOptions, log: &LifecycleLog) -> Result<Started> {
    let launcher = &opts.launcher;
    let local = launcher.is_local();
    // A launcher's stderr (ssh's own, and the remote shell's) is kept for
    // the error of a failed start: what ssh said is the reason.
    let tail: output::Tail = Arc::default();
    let fail = |reason: String| {
        // The steps reached, when there were any (a binary that cannot be
        // executed reached none: no empty " []").
        let steps = log_text(log);
        let mut reason = if steps.is_empty() { reason } else { format!("{reason} [{steps}]") };
        if !local {
            let said: Vec<String> = crate::sync::lock(&tail).iter().cloned().collect();
            reason = format!("started through {}: {reason}", launcher.describe());
            if !said.is_empty() {
                reason = format!("{reason}; {} said: {}", launcher.program(), said.join(" / "));
            }
        }
        Error::Spawn { name: crate::config::shown_name(name), reason, lifecycle: crate::sync::lock(log).clone() }
    };
    // Before anything starts: a name over the limit made the child's
    // handshake frame too large for its parent (it exited with status 4,
    // "before its handshake", and only a WARN said why), or the
    // environment too large for exec ("Argument list too long").
    crate::config::check_actor_name(name).map_err(fail)?;
    let mut exe = match &opts.exe {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|e| fail(format!("cannot find the current executable: {e}")))?,
    };
    // Checked here, so a missing directory is named as such: exec would
    // only say "No such file or directory", as if the binary were missing.
    // (On another host, the remote shell's `cd` says so.)
    if let Some(dir) = opts.current_dir.as_ref().filter(|_| launcher.host().is_none()) {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(fail(format!("its working directory {} is not a directory", dir.display()))),
            Err(e) => return Err(fail(format!("its working directory {}: {e}", dir.display()))),
        }
        // A relative path would be looked up from the child's directory;
        // ours is what the caller meant. (A bare name is a PATH lookup.)
        if exe.is_relative() && exe.components().count() > 1 {
            exe = std::path::absolute(&exe).unwrap_or(exe);
        }
    }
    // Shipped to the far host (`Launcher::ship`): the child runs from its
    // cache there. Before anything of the child's starts, so a refusal
    // (another machine type) leaves nothing to undo.
    if launcher.ships() {
        exe = ship::ensure(launcher, &exe, actor.config.spawn_timeout).await.map_err(&fail)?;
    }
    // Before anything starts: a file that cannot be opened, a prefix too
    // long, fail the start with nothing to undo (a relay's writer thread
    // ends when its `Pending` is dropped).
    let mut stdout = opts.stdout.prepare(Stream::Stdout, name).map_err(&fail)?;
    let mut stderr = if local {
        opts.stderr.prepare(Stream::Stderr, name)
    } else {
        opts.stderr.prepare_captured(Stream::Stderr, name, tail.clone())
    }
    .map_err(&fail)?;
    // A local child connects back over UDS: TCP would need the secret
    // before the SpawnSpec can bring it (every actor has a UDS socket). One
    // started through a launcher cannot reach our UDS socket (another host,
    // another network namespace): it connects back over TCP, to an address
    // named explicitly, with the secret it got over its stdin.
    let (parent_addr, boot_secret) = if local {
        let addr = actor
            .addrs()
            .into_iter()
            .find(|a| matches!(a, Addr::Uds(_)))
            .ok_or_else(|| fail("this actor listens on no UDS address".into()))?;
        (addr, None)
    } else {
        let addr = launcher::connect_back(opts.connect_back.as_ref(), &actor.addrs(), launcher).map_err(&fail)?;
        let secret = actor.secret().map_err(|e| fail(format!("no secret to give it: {e}")))?;
        (addr, Some(secret))
    };
    // In another working directory, a relative socket path would name
    // another file: hand the child absolute ones.
    let in_other_dir = opts.current_dir.is_some();
    let parent_addr = if in_other_dir { absolute_addr(parent_addr) } else { parent_addr };
    let token = uuid::Uuid::new_v4().simple().to_string();
    let env = SpawnEnv {
        parent_addr,
        token: token.clone(),
        name: name.to_owned(),
        uuid: uuid::Uuid::new_v4(),
        ppid: std::process::id(),
        threads: opts.threads.unwrap_or(1),
    };
    let mut handshake = actor.expect_child(token.clone());
    struct ForgetToken<'a>(&'a Actor, String);
    impl Drop for ForgetToken<'_> {
        fn drop(&mut self) {
            self.0.forget_child_token(&self.1);
        }
    }
    let forget = ForgetToken(actor, token);

    let mut cmd = match &boot_secret {
        None => {
            let mut cmd = tokio::process::Command::new(&exe);
            cmd.args(&opts.args);
            cmd
        }
        Some(_) => {
            let remote = remote_env(opts);
            let remote = launcher::RemoteEnv {
                clear: opts.env_clear,
                remove: remote.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| k.as_os_str()).collect(),
                set: remote.iter().filter_map(|(k, v)| v.as_ref().map(|v| (k.as_os_str(), v.as_os_str()))).collect(),
                dir: opts.current_dir.as_deref(),
            };
            let lc = launcher.command(&exe, &opts.args, &remote).map_err(&fail)?;
            let mut cmd = tokio::process::Command::new(lc.program);
            cmd.args(lc.args);
            cmd
        }
    };
    // Over ssh, the environment and the directory are in the remote
    // command line: ssh itself runs with ours.
    if launcher.host().is_none() {
        apply_env(&mut cmd, opts);
        if let Some(dir) = &opts.current_dir {
            cmd.current_dir(dir);
        }
    }
    if let Some(out) = stdout.stdio.take() {
        cmd.stdout(out);
    }
    if let Some(err) = stderr.stdio.take() {
        cmd.stderr(err);
    }
    // furrow's own, after the user's: they cannot be overridden. A child
    // started through a launcher has `FURROW_SPAWN=stdin` in its command
    // line (no secret in it), and its bootstrap on its stdin, which stays
    // open for its life: the link (docs/design.md, "Remote hosts").
    if local {
        cmd.env(SPAWN_ENV, env.encode()).stdin(Stdio::null());
    } else {
        cmd.env_remove(SPAWN_ENV).stdin(Stdio::piped());
    }
    // The floor: a process handle dropped without a reap (runtime
    // shutdown, cancelled start) kills the child (or its launcher).
    cmd.kill_on_drop(true);
    // The whole tree runs under one chaos configuration, whether it came
    // from the environment or from `Config::chaos`.
    #[cfg(feature = "chaos")]
    if let Some(spec) = crate::chaos::spec()
        && launcher.host().is_none()
    {
        cmd.env(crate::chaos::CHAOS_ENV, spec);
    }
    if actor.is_root() {
        // Each child of the root leads a process group of its own, which
        // its whole subtree joins (deeper actors spawn into their group):
        // the terminal's Ctrl-C reaches the root only, which then cancels
        // the tree in order (docs/guide.md, rule 8), and a hard kill of one group
        // takes a whole subtree, stuck processes included.
        cmd.process_group(0);
    }
    let mut child = orphans::spawning(|| cmd.spawn()).map_err(|e| match &opts.current_dir {
        _ if !local => fail(format!("cannot execute {}: {e}", launcher.program())),
        Some(dir) => fail(format!("cannot execute {} in {}: {e}", exe.display(), dir.display())),
        None => fail(format!("cannot execute {}: {e}", exe.display())),
    })?;
    // The command holds the child's ends of its pipes and files: closed
    // now, so the relays see the end of a pipe when the child's last
    // holder closes it, and no fd of ours outlives the start.
    drop(cmd);
    let pid = child.id().unwrap_or(0);
    let mut relays = Vec::new();
    if let (Some(pending), Some(pipe)) = (stdout.relay.take(), child.stdout.take()) {
        relays.push(pending.start(pipe));
    }
    if let (Some(pending), Some(pipe)) = (stderr.relay.take(), child.stderr.take()) {
        relays.push(pending.start(pipe));
    }
    let (output_tx, output_rx) = watch::channel(relays.is_empty());
    // The bootstrap goes out first, whole: a fresh pipe takes it without
    // waiting (it is far smaller than a pipe's buffer), so this cannot
    // stall the start; a launcher that died already is seen below, as for
    // any child.
    let link = match (&boot_secret, child.stdin.take()) {
        (Some(secret), Some(mut stdin)) => {
            use tokio::io::AsyncWriteExt;
            let bound = crate::runtime::entry::remote_exit_bound(&actor.config);
            let frame = link::encode_boot(&env, secret, bound);
            let wrote = tokio::time::timeout(Duration::from_secs(5), async {
                stdin.write_all(&frame).await?;
                stdin.flush().await
            })
            .await;
            if !matches!(wrote, Ok(Ok(()))) {
                tracing::debug!(child = name, "could not write the bootstrap to the launcher's stdin: {wrote:?}");
            }
            Some(stdin)
        }
        _ => None,
    };
    let (sig_tx, sig_rx) = mpsc::unbounded_channel();
    let (exit_tx, exit_rx) = watch::channel(None);
    // The child binds its UDS socket at a path we can name already (our
    // socket directory, its name and the uuid we gave it): known to the
    // reaper from the start, it is removed even when the child dies before
    // `Ready` tells us its addresses. (Found by the chaos runner,
    // `discovery_churn` seed 119: a child SIGKILLed by a call that reached
    // it through the registry before its `Ready` left its socket file.)
    // A child started through a launcher keeps its socket files on its
    // own host (its own ladder removes them): none of ours to remove.
    let predicted = Addr::Uds(actor.socket_dir.join(crate::runtime::socket_file_name(&Aid {
        name: name.to_owned(),
        uuid: env.uuid,
        pid,
    })));
    let (sockets_tx, sockets_rx) = watch::channel(if local { vec![predicted] } else { Vec::new() });
    let orphan_bounds = (actor.socket_dir.clone(), actor.config.exit_timeout, actor.config.term_timeout);
    tokio::spawn(tracing::Instrument::instrument(
        reaper(child, name.to_owned(), sig_rx, (exit_tx, relays, output_tx), sockets_rx, orphan_bounds, link),
        crate::log::actor_span(),
    ));
    let mut proc = ChildProc {
        pid,
        aid_pid: pid,
        launcher: (!local).then(|| launcher.program()),
        name: name.to_owned(),
        uuid: env.uuid,
        signals: sig_tx,
        exit: exit_rx,
        output: output_rx,
    };
    // Dropped mid-start (the caller's future was cancelled): the process is
    // killed, and handed to the actor, whose nurseries and shutdown wait
    // for its exit. Without this the reaper kept it, nobody killed it, and
    // a nursery returned with it alive (found by the chaos runner,
    // `discovery_churn` seeds 605, 674, 689, 852, 873, 899: a service being
    // started when the body was cancelled). Disarmed once the child is
    // ready. The error paths below have killed and reaped it already
    // (`abort` waits for the exit, `exited_early` saw it): nothing to hand
    // over then, unless that wait ran out.
    struct EndIfDropped<'a>(&'a Actor, Option<ChildProc>);
    impl Drop for EndIfDropped<'_> {
        fn drop(&mut self) {
            if let Some(p) = self.1.take().filter(|p| p.exited().is_none()) {
                p.signal(libc::SIGKILL);
                self.0.abandoned_start(p);
            }
        }
    }
    let mut end_if_dropped = EndIfDropped(actor, Some(proc.clone()));
    log_step(log, Lifecycle::Spawned { pid });
    tracing::debug!(child = name, pid, "spawned");

    // From here on, every failure must end (and reap) the process.
    let abort = async |reason: String| -> Error {
        proc.signal(libc::SIGKILL);
        let status = proc.wait_exit(Duration::from_secs(5)).await;
        if let Some(e) = status {
            log_step(log, Lifecycle::Exited { status: describe(&e.status) });
            // Its last lines (often why it failed) come before the error.
            proc.wait_output().await;
        }
        let reason = match status {
            Some(e) if !reason.contains("exited") => {
                format!("{reason} (then killed: {})", describe(&e.status))
            }
            _ => reason,
        };
        fail(reason)
    };
    let exited_early = async |stage: &str, e: Exit| -> Error {
        log_step(log, Lifecycle::Exited { status: describe(&e.status) });
        // Its last lines (often why it failed) come before the error.
        proc.wait_output().await;
        if local {
            fail(format!("process {pid} ({}) exited with {} {stage}", exe.display(), describe(&e.status)))
        } else {
            fail(format!("{} (pid {pid}) exited with {} {stage}", launcher.program(), describe(&e.status)))
        }
    };

    let timeout = actor.config.spawn_timeout;
    let spec = SpawnSpec {
        parent: actor.aid.clone(),
        bind: opts.bind.clone(),
        // A child started through a launcher is on another host (or
        // network): a UDS registry is not reachable from there.
        registry: actor
            .registry_for_children()
            .into_iter()
            .filter(|a| local || matches!(a, Addr::Tcp(_)))
            .map(|a| if in_other_dir { absolute_addr(a) } else { a })
            .collect(),
        // A launched child has the secret from its stdin (the ssh
        // channel, encrypted); the SpawnSpec travels over the TCP link,
        // which furrow authenticates but does not encrypt: never the
        // secret there (docs/design.md, "Remote hosts", rule 1).
        secret: if local { actor.secret_for_child() } else { None },
        socket_dir: if in_other_dir {
            std::path::absolute(&actor.socket_dir).unwrap_or_else(|_| actor.socket_dir.clone())
        } else {
            actor.socket_dir.clone()
        }
        .to_string_lossy()
        .into_owned(),
        enable_modules: opts.enable_modules.clone(),
        log_filter: None,
        max_frame: actor.config.max_frame as u64,
        tuning: Some(actor.config.tuning()),
    };
    // furrow-proto's `Parent` decides (which connection is the child's,
    // what is sent, what ends the start); this does the I/O, and races
    // every step against the process exiting.
    let child_aid = Aid { name: name.to_owned(), uuid: env.uuid, pid };
    let mut hs = Parent::new(child_aid, spec, timeout, actor.config.max_frame, std::time::Instant::now());
    if !local {
        hs = hs.remote();
    }
    let deadline = hs.deadline().map_or_else(|| tokio::time::Instant::now() + timeout, tokio::time::Instant::from_std);
    // `biased`: a child that connected and then died at once is reported
    // as connected, then exited (in that order), never the other way round.
    // Cancel safe branches: an mpsc receive and a watch wait lose nothing.
    let conn: Handshaken = loop {
        let h = tokio::select! {
            biased;
            r = handshake.recv() => match r {
                Some(h) => h,
                None => return Err(abort("the runtime dropped the pending spawn".into()).await),
            },
            e = proc.wait_exit(deadline.saturating_duration_since(tokio::time::Instant::now())) => match e {
                Some(e) => return Err(exited_early("before its handshake", e).await),
                None => return Err(abort(format!("no handshake within {timeout:?}")).await),
            },
        };
        // The token says "I am the child spawned with it"; only the process
        // spawned with it may say so (it is in that process's environment,
        // which any process of our uid can read in /proc). Anyone else
        // presenting it is refused, and the spawn goes on waiting for the
        // real child: the intruder neither becomes "our child" nor makes
        // the start fail. (The runtime checked that the Aid's pid is the
        // connecting process's before handing the connection over.)
        let claim = Hello { aid: h.peer.clone(), spawn_token: None, max_dialogs: h.peer_max_dialogs };
        match hs.connected(&claim, h.peer_pid) {
            Ok(()) => break h,
            Err(why) => tracing::warn!(
                child = name,
                pid,
                "refused a connection presenting the spawn token of {name} from {} (pid {}): {why}",
                h.peer,
                h.peer_pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
            ),
        }
    };
    // Used: nobody may present it again.
    drop(forget);
    log_step(log, Lifecycle::Connected);
    tracing::debug!(child = name, pid, "connected");
    let Handshaken { mut reader, mut write, peer, peer_max_dialogs, .. } = conn;
    // The `SpawnSpec` goes out, then `Ready` is due (or the child's
    // uuid was not the one it was given, and this fails at once).
    let ready = tokio::select! {
        biased;
        r = drive(&mut hs, &mut reader, &mut write) => r,
        e = proc.wait_exit(timeout) => match e {
            Some(e) => return Err(exited_early("after connecting, before it was ready", e).await),
            None => return Err(abort(format!("not ready within {timeout:?}")).await),
        },
    };
    if let Err(e) = ready {
        return Err(abort(format!("cannot send SpawnSpec: {e}")).await);
    }
    let addrs = match hs.status() {
        Status::Done => hs.addrs().map(<[Addr]>::to_vec).unwrap_or_default(),
        Status::Failed(Failure::Identity(why)) => return Err(abort(why.clone()).await),
        Status::Failed(Failure::Refused { message, .. }) => {
            return Err(abort(format!("failed to start: {message}")).await);
        }
        Status::Failed(Failure::Unexpected { got, .. }) => {
            return Err(abort(format!("sent {got:?} instead of Ready")).await);
        }
        Status::Failed(Failure::Closed { .. } | Failure::Unreadable { .. }) => {
            // The connection dropped: most likely the process is exiting;
            // give it a moment to report its status.
            return Err(match proc.wait_exit(Duration::from_secs(1)).await {
                Some(e) => exited_early("after connecting, before it was ready", e).await,
                None => abort("closed its connection before it was ready".into()).await,
            });
        }
        Status::Failed(Failure::Timeout { .. }) => return Err(abort(format!("not ready within {timeout:?}")).await),
        Status::Failed(f) => return Err(abort(f.to_string()).await),
        Status::Waiting | Status::Verify(_) | Status::Configure(_) => {
            return Err(abort("the start sequence stopped".into()).await);
        }
    };
    if local {
        let _ = sockets_tx.send(addrs.clone());
        // The child may have died right after `Ready`, before the reaper
        // could know its addresses: then remove its sockets here (published
        // first, checked second: one of the two sides always sees the
        // other).
        if proc.exited().is_some() {
            crate::ipc::transport::remove_socket_files(&addrs);
        }
    } else {
        // Its pid is its own (the process here is its launcher).
        proc.aid_pid = hs.child().pid;
    }
    log_step(log, Lifecycle::Ready);
    tracing::debug!(child = name, pid, "ready");
    let chan = actor.open_channel(
        Handshaken { reader, write, peer: peer.clone(), peer_pid: local.then_some(pid), peer_max_dialogs },
        Link::Child(proc.clone()),
    );
    end_if_dropped.1 = None;

    Ok(Started { chan, proc, aid: peer, addrs })
}

/// `addr` with a UDS path made absolute (from this process's directory).
fn absolute_addr(addr: Addr) -> Addr {
    match addr {
        Addr::Uds(p) if p.is_relative() => Addr::Uds(std::path::absolute(&p).unwrap_or(p)),
        other => other,
    }
}

/// The variables the tree needs that [`SpawnOptions::env_clear`] would
/// take away, carried over from this process's environment: logging
/// (`RUST_LOG` reaches the whole tree), and the test and chaos hooks.
/// (`FURROW_SPAWN` and `FURROW_CHAOS` are set whatever the environment.)
#[cfg(feature = "chaos")]
const CARRIED_OVER: [&str; 3] = ["RUST_LOG", crate::ipc::fragment::FRAGMENT_ENV, crate::runtime::entry::DIE_AT_ENV];
/// Without the `chaos` feature the test hooks do not exist: only logging.
#[cfg(not(feature = "chaos"))]
const CARRIED_OVER: [&str; 1] = ["RUST_LOG"];

/// The environment settings a remote command line carries (ssh): the
/// user's, the variables the tree needs carried over (logging, the test
/// and chaos hooks, the tree's chaos configuration) unless the user named
/// them. `None` removes the variable.
fn remote_env(opts: &SpawnOptions) -> BTreeMap<OsString, Option<OsString>> {
    let mut out = BTreeMap::new();
    for key in CARRIED_OVER {
        if let Some(v) = std::env::var_os(key) {
            out.insert(OsString::from(key), Some(v));
        }
    }
    #[cfg(feature = "chaos")]
    if let Some(spec) = crate::chaos::spec() {
        out.insert(OsString::from(crate::chaos::CHAOS_ENV), Some(OsString::from(spec)));
    }
    for (k, v) in &opts.env {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// The user's environment settings, onto `cmd`.
fn apply_env(cmd: &mut tokio::process::Command, opts: &SpawnOptions) {
    if opts.env_clear {
        cmd.env_clear();
        for key in CARRIED_OVER {
            if !opts.env.contains_key(std::ffi::OsStr::new(key))
                && let Some(v) = std::env::var_os(key)
            {
                cmd.env(key, v);
            }
        }
        // The secret file this process would read: without `$HOME` the
        // child could not find it.
        let secret = crate::SECRET_FILE_ENV;
        if !opts.env.contains_key(std::ffi::OsStr::new(secret))
            && let Some(file) = crate::ipc::auth::default_secret_file()
        {
            cmd.env(secret, std::path::absolute(&file).unwrap_or(file));
        }
    }
    for (key, val) in &opts.env {
        match val {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
}

/// Send signal `sig` (a `libc::SIG*` number; one that names no signal is
/// ignored) to process `pid`. Only for this process or a child of ours not
/// yet reaped, so the pid cannot have been reused; one already exited (a
/// zombie) takes the signal and ignores it, and an error (no such process)
/// means there is nothing left to signal.
pub(crate) fn send_signal(pid: u32, sig: i32) {
    if let (Some(pid), Some(sig)) =
        (rustix::process::Pid::from_raw(pid as i32), rustix::process::Signal::from_named_raw(sig))
    {
        let _ = rustix::process::kill_process(pid, sig);
    }
}
