//! Runtime configuration of an actor tree.

use crate::{Error, Result};
use furrow_proto::{Addr, DEFAULT_MAX_FRAME};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default of [`Config::stream_window_bytes`].
const DEFAULT_STREAM_WINDOW_BYTES: usize = 8 << 20;

/// Default of [`Config::keepalive`]: probe after 10 s, give up after 60 s
/// (Erlang's distribution gives a node up after 60 s too). Generous on
/// purpose: an actor whose runtime threads are all held by blocking code
/// cannot answer a probe, and giving up a live peer ends its subtree.
const DEFAULT_KEEPALIVE: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(60));

/// Environment variable that overrides the default socket directory.
///
/// ```no_run
/// // Run a separate program's tree in this program's socket directory, so
/// // both find the same registrar.
/// let dir = furrow::Config::new("me").resolved_socket_dir();
/// std::process::Command::new("my-service").env(furrow::SOCKET_DIR_ENV, &dir).spawn()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub const SOCKET_DIR_ENV: &str = "FURROW_SOCKET_DIR";

/// Environment variable that overrides the default registry address(es):
/// one or more addresses separated by commas, e.g.
/// `uds:///run/me/furrow/registry.sock,tcp://10.0.0.1:7700`.
///
/// ```no_run
/// // Point a program at a registrar on another host.
/// std::process::Command::new("my-worker")
///     .env(furrow::REGISTRY_ENV, "tcp://10.0.0.1:7700")
///     .env(furrow::SECRET_FILE_ENV, "/etc/my-system/furrow-secret")
///     .spawn()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub const REGISTRY_ENV: &str = "FURROW_REGISTRY";

/// The longest actor name, in bytes (UTF-8).
///
/// Every actor's name (a root's [`Config::new`], a child's in
/// [`start_actor`](crate::ActorNursery::start_actor),
/// [`run_in_actor_with`](crate::ActorNursery::run_in_actor_with), a pool's
/// worker names) must be non-empty, at most this long, and free of control
/// characters (NUL, newlines, escapes: names go into the child's
/// environment, into every log line and into terminal output). Anything
/// else is refused before any process starts, with an error naming the
/// rule and the length. The bound keeps a name well inside the 4 KiB a
/// peer may send before its handshake (which carries the name), and
/// inside the environment's limits.
///
/// ```
/// let name = "worker-".repeat(40);
/// assert!(name.len() > furrow::MAX_ACTOR_NAME_LEN); // 280 bytes: refused
/// ```
pub const MAX_ACTOR_NAME_LEN: usize = 255;

/// Why `name` cannot be an actor's name, if it cannot (see
/// [`MAX_ACTOR_NAME_LEN`]).
pub(crate) fn check_actor_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("an actor name must not be empty".into());
    }
    if name.len() > MAX_ACTOR_NAME_LEN {
        return Err(format!(
            "an actor name is at most {MAX_ACTOR_NAME_LEN} bytes, and this one is {} bytes",
            name.len()
        ));
    }
    if let Some((at, c)) = name.char_indices().find(|(_, c)| c.is_control()) {
        return Err(format!("an actor name must not contain control characters ({c:?} at byte {at})"));
    }
    Ok(())
}

/// `name` as an error message shows it: whole when it is a valid name's
/// length, else its start and its length (a 200 KB name would make the
/// message 200 KB).
pub(crate) fn shown_name(name: &str) -> String {
    if name.len() <= MAX_ACTOR_NAME_LEN {
        return name.to_owned();
    }
    let mut end = 32;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &name[..end], name.len())
}

/// Default of [`Config::max_unauthenticated`]: TCP connections an actor
/// lets authenticate at once. Not public: like every other default it is
/// documented on its setter and in [`Config`]'s table (only a test needed
/// the constant).
pub(crate) const DEFAULT_MAX_UNAUTHENTICATED: usize = 64;

/// Whether an actor tree takes part in discovery, and how its root finds
/// the registrar.
///
/// Every actor of a tree registers its [`Aid`](crate::Aid) and addresses
/// with one registrar, so others can find it by name (see
/// [`find_actor`](crate::find_actor)). The registrar is a root actor that
/// serves the *registry address* besides its own.
///
/// ```
/// use furrow::{Config, Discovery};
/// // A tool that looks at a running system: it must find a registrar, and
/// // does not list itself.
/// let cfg = Config::new("inspector").discovery(Discovery::Join).listed(false);
/// // A service meant to be the hub of a system spanning hosts.
/// let hub = Config::new("hub")
///     .discovery(Discovery::Serve)
///     .registry(["tcp://0.0.0.0:7700".parse().unwrap()]);
/// # let _ = (cfg, hub);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Discovery {
    /// Join the registrar serving the registry address; if nobody serves
    /// it, become the registrar (the default). Separately started programs
    /// using the same registry address thus form one system.
    #[default]
    Auto,
    /// Join the registrar; fail if there is none.
    Join,
    /// Become the registrar; fail if one already serves the address.
    Serve,
    /// No registry: this tree's actors cannot be found by name.
    Off,
}

/// How a root actor (and, through its `SpawnSpec`, every actor of its tree)
/// runs.
///
/// Defaults are short, because every step of a teardown is bounded and a
/// healthy actor answers within microseconds:
///
/// | setting | default |
/// |---|---|
/// | `socket_dir` | `$FURROW_SOCKET_DIR`, else `$XDG_RUNTIME_DIR/furrow`, else `/tmp/furrow-<uid>` (created 0700) |
/// | `spawn_timeout` | 10 s (child start to `Ready`) |
/// | `cancel_ack_timeout` | 500 ms |
/// | `exit_timeout` | 1 s (after the ack, before SIGTERM) |
/// | `term_timeout` | 1 s (after SIGTERM, before SIGKILL) |
/// | `max_frame` | 32 MiB |
/// | `stream_window` | 8192 messages (receive buffer and credit per stream) |
/// | `stream_window_bytes` | 8 MiB of payload per stream (a single larger message still goes, alone) |
/// | `keepalive` | probe a peer after 10 s of silence, give it up after 60 s |
/// | `max_dialogs_per_peer` | 4096 calls and contexts a peer may have open here at once |
/// | `max_queued_output` | 16 MiB of answers queued for one peer before this actor stops reading from it |
/// | `frame_timeout` | 30 s for a frame that has begun to arrive to arrive whole |
/// | `cancel_grace` | 200 ms (a cancelled context callee's time to clean up) |
/// | `max_unauthenticated` | 64 TCP connections authenticating at once |
/// | `registry` | `$FURROW_REGISTRY`, else `uds://<socket_dir>/registry.sock` |
/// | `discovery` | [`Discovery::Auto`]: join the registrar, or become it |
/// | `listed` | `true` (the actor appears in the registry) |
/// | `secret` | read from `$FURROW_SECRET_FILE`, else `~/.config/furrow/secret` (created 0600 when missing), when TCP is used |
///
/// A root that runs its tree with its own settings:
///
/// ```no_run
/// use std::time::Duration;
/// use furrow::Config;
///
/// # async fn demo() -> furrow::Result<()> {
/// let cfg = Config::new("ingest")
///     .socket_dir("/run/ingest/furrow")
///     .spawn_timeout(Duration::from_secs(30)) // children load a large model first
///     .cancel_ack_timeout(Duration::from_millis(200))
///     .exit_timeout(Duration::from_secs(2))
///     .term_timeout(Duration::from_secs(5))
///     .cancel_grace(Duration::from_secs(1)) // contexts flush their output when cancelled
///     .stream_window(256)
///     .max_frame(64 << 20);
/// assert_eq!(cfg.name(), "ingest");
/// furrow::run_root(cfg, async {
///     furrow::open_nursery(async |n| {
///         let _worker = n.start_actor("worker").await?; // runs with the same settings
///         Ok(())
///     })
///     .await
/// })
/// .await?
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) name: String,
    pub(crate) socket_dir: Option<PathBuf>,
    pub(crate) bind: Vec<Addr>,
    pub(crate) enable_modules: Vec<String>,
    pub(crate) spawn_timeout: Duration,
    pub(crate) cancel_ack_timeout: Duration,
    pub(crate) exit_timeout: Duration,
    pub(crate) term_timeout: Duration,
    pub(crate) max_frame: usize,
    pub(crate) stream_window: usize,
    pub(crate) stream_window_bytes: usize,
    pub(crate) keepalive: Option<(Duration, Duration)>,
    pub(crate) max_dialogs_per_peer: usize,
    pub(crate) max_queued_output: usize,
    pub(crate) frame_timeout: Duration,
    pub(crate) cancel_grace: Duration,
    pub(crate) max_unauthenticated: usize,
    pub(crate) registry: Vec<Addr>,
    pub(crate) discovery: Discovery,
    pub(crate) listed: bool,
    pub(crate) secret: Option<furrow_proto::Secret>,
    pub(crate) secret_file: Option<PathBuf>,
    #[cfg(feature = "chaos")]
    pub(crate) chaos: Option<String>,
    pub(crate) threads: usize,
    pub(crate) dump_on_sigusr1: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config::new("root")
    }
}

impl Config {
    /// Defaults, for an actor called `name`.
    ///
    /// The name must be non-empty, at most [`MAX_ACTOR_NAME_LEN`] bytes
    /// and free of control characters; a root with any other name fails
    /// to start ([`run_root`](crate::run_root) and
    /// [`blocking::Runtime::new`](crate::blocking::Runtime::new) return
    /// [`Error::Usage`] naming the rule and the length).
    pub fn new(name: impl Into<String>) -> Self {
        Config {
            name: name.into(),
            socket_dir: None,
            bind: Vec::new(),
            enable_modules: Vec::new(),
            spawn_timeout: Duration::from_secs(10),
            cancel_ack_timeout: Duration::from_millis(500),
            exit_timeout: Duration::from_secs(1),
            term_timeout: Duration::from_secs(1),
            max_frame: DEFAULT_MAX_FRAME,
            stream_window: 8192,
            stream_window_bytes: DEFAULT_STREAM_WINDOW_BYTES,
            keepalive: Some(DEFAULT_KEEPALIVE),
            max_dialogs_per_peer: 4096,
            max_queued_output: 16 << 20,
            frame_timeout: Duration::from_secs(30),
            cancel_grace: Duration::from_millis(200),
            max_unauthenticated: DEFAULT_MAX_UNAUTHENTICATED,
            registry: Vec::new(),
            discovery: Discovery::Auto,
            listed: true,
            secret: None,
            secret_file: None,
            #[cfg(feature = "chaos")]
            chaos: None,
            threads: 1,
            dump_on_sigusr1: true,
        }
    }

    /// The actor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Directory for UDS socket files (tests give each run its own).
    pub fn socket_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.socket_dir = Some(dir.into());
        self
    }

    /// Also listen on these addresses (multi-homing), e.g. a TCP address
    /// for peers on other hosts. The actor always keeps its UDS socket in
    /// the socket directory too, unless a UDS address is among these. A TCP
    /// port 0 picks a free port; the real one is what the actor reports.
    ///
    /// ```
    /// # fn demo() -> Result<(), furrow::proto::AddrParseError> {
    /// // Reachable from other hosts too (they must know the system's secret).
    /// let cfg = furrow::Config::new("hub").bind(["tcp://0.0.0.0:0".parse()?]);
    /// # let _ = cfg; Ok(()) }
    /// # demo().unwrap();
    /// ```
    pub fn bind(mut self, addrs: impl IntoIterator<Item = Addr>) -> Self {
        self.bind = addrs.into_iter().collect();
        self
    }

    /// Serve only functions whose path starts with one of these module
    /// paths (empty: every registered function).
    ///
    /// ```
    /// // Serve `my_app::api::*` only; `my_app::admin::*` is refused.
    /// let cfg = furrow::Config::new("frontend").enable_modules(["my_app::api"]);
    /// # let _ = cfg;
    /// ```
    pub fn enable_modules<S: Into<String>>(mut self, modules: impl IntoIterator<Item = S>) -> Self {
        self.enable_modules = modules.into_iter().map(Into::into).collect();
        self
    }

    /// Bound on a child's start, from exec to serving.
    pub fn spawn_timeout(mut self, d: Duration) -> Self {
        self.spawn_timeout = d;
        self
    }

    /// Bound on waiting for a cancel request's acknowledgement.
    pub fn cancel_ack_timeout(mut self, d: Duration) -> Self {
        self.cancel_ack_timeout = d;
        self
    }

    /// Bound on a child's exit after it acknowledged a cancel, before SIGTERM.
    pub fn exit_timeout(mut self, d: Duration) -> Self {
        self.exit_timeout = d;
        self
    }

    /// Bound on a child's exit after SIGTERM, before SIGKILL.
    pub fn term_timeout(mut self, d: Duration) -> Self {
        self.term_timeout = d;
        self
    }

    /// Default stream window: how many received messages may wait
    /// unconsumed per stream (and the credit granted to its sender).
    pub fn stream_window(mut self, n: usize) -> Self {
        self.stream_window = n.max(1);
        self
    }

    /// Default stream window in payload bytes: how many bytes may be on
    /// their way or wait unconsumed per stream. A message larger than the
    /// window is still sent, once no more than half the window is
    /// outstanding, so a receiver holds at most
    /// `max(window, window / 2 + largest message)` per stream.
    ///
    /// ```
    /// // Streams of large images: room for a few in flight.
    /// let cfg = furrow::Config::new("render").stream_window_bytes(64 << 20);
    /// # let _ = cfg;
    /// ```
    pub fn stream_window_bytes(mut self, n: usize) -> Self {
        self.stream_window_bytes = n.max(1);
        self
    }

    /// Keepalive on every channel: after `interval` without a byte from a
    /// peer, send it a probe (which a live peer answers at once); after
    /// `silence` without a byte, give the peer up. Its dialogs then end
    /// with [`Error::TransportClosed`](crate::Error::TransportClosed)
    /// naming the silence, and a nursery treats a child given up this way
    /// as failed and ends it through the teardown ladder (a stopped
    /// process, `SIGSTOP` or a debugger, is killed).
    ///
    /// Each side judges only what it receives, so peers with different
    /// settings work together. `silence` is raised to at least `interval`.
    ///
    /// ```
    /// use std::time::Duration;
    /// // A tree whose members must answer within 3 s.
    /// let cfg = furrow::Config::new("rt").keepalive(Duration::from_secs(1), Duration::from_secs(3));
    /// # let _ = cfg;
    /// ```
    pub fn keepalive(mut self, interval: Duration, silence: Duration) -> Self {
        self.keepalive = Some((interval.max(Duration::from_millis(1)), silence.max(interval)));
        self
    }

    /// No keepalive: a peer that stops answering (a stopped process, a
    /// host that vanished without a reset) is waited for forever. For
    /// sessions under a debugger.
    ///
    /// ```
    /// let cfg = furrow::Config::new("debugging").disable_keepalive();
    /// # let _ = cfg;
    /// ```
    pub fn disable_keepalive(mut self) -> Self {
        self.keepalive = None;
        self
    }

    /// How many calls and contexts one peer may have open in this actor at
    /// once. A `Start` beyond it is refused at once with an error of kind
    /// `TooManyDialogs` (the caller sees a [`RemoteActorError`](crate::RemoteActorError)
    /// saying so), so a peer cannot make an actor hold unbounded work.
    ///
    /// ```
    /// let cfg = furrow::Config::new("db").max_dialogs_per_peer(256);
    /// # let _ = cfg;
    /// ```
    pub fn max_dialogs_per_peer(mut self, n: usize) -> Self {
        self.max_dialogs_per_peer = n.max(1);
        self
    }

    /// How many bytes of answers (acks, results, errors of the calls and
    /// contexts a peer opened here) may wait to be written to that peer
    /// before this actor stops reading from it: backpressure on a peer that
    /// sends requests and does not read the answers. Stream data (bounded
    /// by credit) and this actor's own requests do not count. If the peer then reads nothing for
    /// the keepalive's allowed silence (or 30 s without keepalive), the
    /// channel is closed as stuck.
    ///
    /// ```
    /// let cfg = furrow::Config::new("api").max_queued_output(16 << 20);
    /// # let _ = cfg;
    /// ```
    pub fn max_queued_output(mut self, bytes: usize) -> Self {
        self.max_queued_output = bytes.max(1);
        self
    }

    /// How long a frame that has begun to arrive may take to arrive whole
    /// before the channel is closed (a peer that announces a large frame
    /// and stalls cannot hold the buffer forever).
    ///
    /// ```
    /// use std::time::Duration;
    /// let cfg = furrow::Config::new("slow-link").frame_timeout(Duration::from_secs(120));
    /// # let _ = cfg;
    /// ```
    pub fn frame_timeout(mut self, d: Duration) -> Self {
        self.frame_timeout = d.max(Duration::from_millis(1));
        self
    }

    /// How long a cancelled context callee may run after
    /// `Context::cancelled` resolved, before its future is dropped.
    pub fn cancel_grace(mut self, d: Duration) -> Self {
        self.cancel_grace = d;
        self
    }

    /// Most TCP connections that may be authenticating at once (connected,
    /// and not yet through the challenge–response and the `Aid` exchange),
    /// per actor; default 64. A connection
    /// beyond it is closed at once, after an `Error` saying so (a furrow
    /// dialler reports it as [`Error::Auth`](crate::Error::Auth)), so a
    /// flood of silent connections cannot take every file descriptor of the
    /// actor. Connections that authenticated are not counted; UDS ones
    /// (checked by uid) neither. At least 1.
    ///
    /// ```
    /// // A hub that many hosts dial at once after a network outage.
    /// let cfg = furrow::Config::new("hub").max_unauthenticated(512);
    /// # let _ = cfg;
    /// ```
    pub fn max_unauthenticated(mut self, n: usize) -> Self {
        self.max_unauthenticated = n.max(1);
        self
    }

    /// The registry address(es): where the registrar is found, or served
    /// when this root becomes it. Several addresses multi-home the
    /// registrar (e.g. UDS for this host and TCP for others); a joining
    /// actor uses the first one it can reach.
    ///
    /// ```
    /// use furrow::{Addr, Config};
    /// let cfg = Config::new("hub").registry([
    ///     "uds:///run/my-system/registry.sock".parse::<Addr>().unwrap(),
    ///     "tcp://10.0.0.1:7700".parse().unwrap(),
    /// ]);
    /// assert_eq!(cfg.resolved_registry().unwrap().len(), 2);
    /// ```
    pub fn registry(mut self, addrs: impl IntoIterator<Item = Addr>) -> Self {
        self.registry = addrs.into_iter().collect();
        self
    }

    /// How this root takes part in discovery (default [`Discovery::Auto`]).
    ///
    /// ```
    /// use furrow::{Config, Discovery};
    /// // A batch job that needs no lookups and must not become the registrar.
    /// let cfg = Config::new("nightly-batch").discovery(Discovery::Off);
    /// # let _ = cfg;
    /// ```
    pub fn discovery(mut self, d: Discovery) -> Self {
        self.discovery = d;
        self
    }

    /// Whether this actor is listed in the registry (default `true`). A
    /// tool that only looks (such as the `furrow` CLI) sets `false`.
    ///
    /// ```no_run
    /// use furrow::{Config, Discovery};
    /// # async fn demo() -> furrow::Result<()> {
    /// // A health check that lists the system without showing up in it.
    /// let cfg = Config::new("health-check").discovery(Discovery::Join).listed(false);
    /// let actors = furrow::run_root(cfg, furrow::list_actors()).await??;
    /// println!("{} actors up", actors.len());
    /// # Ok(()) }
    /// ```
    pub fn listed(mut self, yes: bool) -> Self {
        self.listed = yes;
        self
    }

    /// The system's shared secret, which TCP peers must prove they know.
    /// Every actor of the tree gets it from its parent (never through argv
    /// or the environment). It is 16 to 4096 bytes, any bytes; anything
    /// else fails the start of a root that needs it (one with a TCP
    /// address) with [`Error::Usage`].
    ///
    /// ```no_run
    /// // A secret kept in a secret store rather than in a file.
    /// # fn read_from_vault(_: &str) -> Vec<u8> { Vec::new() }
    /// let cfg = furrow::Config::new("hub").secret(read_from_vault("furrow/hub"));
    /// # let _ = cfg;
    /// ```
    pub fn secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.secret = Some(furrow_proto::Secret(secret.into()));
        self
    }

    /// Read the shared secret from this file (created with 32 random bytes,
    /// mode 0600, if missing) instead of the default.
    ///
    /// The file must be a regular file (not a FIFO or a device: it is
    /// opened without blocking and refused), owned by this user, readable
    /// by nobody else, and hold 16 to 4096 bytes: text is trimmed of the
    /// whitespace around it, anything that is not UTF-8 is used byte for
    /// byte. Otherwise the start fails with [`Error::Usage`] naming the
    /// file and what is wrong with it.
    ///
    /// ```
    /// let cfg = furrow::Config::new("hub").secret_file("/etc/my-system/furrow-secret");
    /// # let _ = cfg;
    /// ```
    pub fn secret_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.secret_file = Some(path.into());
        self
    }

    /// Run the whole tree under chaos: seeded fragmenting, delays, dropped
    /// connections and process faults, exactly as the environment variable
    /// [`CHAOS_ENV`](crate::CHAOS_ENV) (`FURROW_CHAOS`) would, with the
    /// same syntax (`seed=42;frag=1;fault=kill:worker:yield:3`; see the
    /// design doc's "Chaos" section). For testing your own program: a
    /// production tree never sets it.
    ///
    /// Only a root's setting counts (children inherit the root's). A
    /// malformed `spec`, or one different from a chaos configuration this
    /// process already uses, fails [`run_root`](crate::run_root) with
    /// [`Error::Usage`](crate::Error::Usage).
    ///
    /// Needs the `chaos` feature (without it, chaos is compiled out).
    ///
    /// ```
    /// let config = furrow::Config::new("under-test").chaos("seed=7;frag=3;delay=20");
    /// # let _ = config;
    /// ```
    #[cfg(feature = "chaos")]
    #[cfg_attr(docsrs, doc(cfg(feature = "chaos")))]
    pub fn chaos(mut self, spec: impl Into<String>) -> Self {
        self.chaos = Some(spec.into());
        self
    }

    /// How many threads run the root's tasks when furrow builds its
    /// runtime (`#[furrow::main(config = …)]`, [`block_on_root`](crate::block_on_root), [`blocking::Runtime`](crate::blocking::Runtime)):
    /// 1 by default (0 counts as 1), as for every actor (see
    /// [`SpawnOptions::threads`](crate::SpawnOptions::threads) for what
    /// that means and when to ask for more). [`run_root`](crate::run_root)
    /// runs on the caller's runtime and ignores it; children have their
    /// own setting.
    ///
    /// ```
    /// // A root that crunches numbers itself, beside its actors.
    /// let config = furrow::Config::new("root").threads(4);
    /// # let _ = config;
    /// ```
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// Whether this actor writes its [dump](crate::dump) to stderr when it
    /// receives SIGUSR1 (default: yes). A root whose program gives SIGUSR1
    /// a meaning of its own may turn it off; children always answer it.
    ///
    /// ```
    /// let config = furrow::Config::new("root").dump_on_sigusr1(false);
    /// # let _ = config;
    /// ```
    pub fn dump_on_sigusr1(mut self, yes: bool) -> Self {
        self.dump_on_sigusr1 = yes;
        self
    }

    /// Largest frame accepted or sent, in bytes.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// The settings a parent passes to its children.
    pub(crate) fn tuning(&self) -> furrow_proto::Tuning {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        furrow_proto::Tuning {
            spawn_timeout_ms: ms(self.spawn_timeout),
            cancel_ack_timeout_ms: ms(self.cancel_ack_timeout),
            exit_timeout_ms: ms(self.exit_timeout),
            term_timeout_ms: ms(self.term_timeout),
            stream_window: self.stream_window as u64,
            cancel_grace_ms: ms(self.cancel_grace),
            stream_window_bytes: self.stream_window_bytes as u64,
            keepalive_interval_ms: self.keepalive.map_or(0, |(i, _)| ms(i).max(1)),
            keepalive_silence_ms: self.keepalive.map_or(0, |(_, s)| ms(s).max(1)),
            max_dialogs_per_peer: self.max_dialogs_per_peer as u64,
            max_queued_output: self.max_queued_output as u64,
            frame_timeout_ms: ms(self.frame_timeout).max(1),
            max_unauthenticated: Some(self.max_unauthenticated as u64),
        }
    }

    /// Apply settings received from a parent.
    pub(crate) fn with_tuning(mut self, t: &furrow_proto::Tuning) -> Self {
        self.spawn_timeout = Duration::from_millis(t.spawn_timeout_ms);
        self.cancel_ack_timeout = Duration::from_millis(t.cancel_ack_timeout_ms);
        self.exit_timeout = Duration::from_millis(t.exit_timeout_ms);
        self.term_timeout = Duration::from_millis(t.term_timeout_ms);
        self.stream_window = usize::try_from(t.stream_window).unwrap_or(usize::MAX).max(1);
        self.cancel_grace = Duration::from_millis(t.cancel_grace_ms);
        // A limit of 0 (absent) keeps the child's default; a keepalive
        // interval or silence of 0 means the parent turned keepalive off.
        let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        if t.stream_window_bytes > 0 {
            self.stream_window_bytes = n(t.stream_window_bytes);
        }
        self.keepalive = match (t.keepalive_interval_ms, t.keepalive_silence_ms) {
            (0, _) | (_, 0) => None,
            (i, s) => Some((Duration::from_millis(i), Duration::from_millis(s))),
        };
        if t.max_dialogs_per_peer > 0 {
            self.max_dialogs_per_peer = n(t.max_dialogs_per_peer);
        }
        if t.max_queued_output > 0 {
            self.max_queued_output = n(t.max_queued_output);
        }
        if t.frame_timeout_ms > 0 {
            self.frame_timeout = Duration::from_millis(t.frame_timeout_ms);
        }
        if let Some(n) = t.max_unauthenticated {
            self.max_unauthenticated = usize::try_from(n).unwrap_or(usize::MAX).max(1);
        }
        self
    }

    /// The default window of a stream.
    pub(crate) fn window(&self) -> furrow_proto::flow::Window {
        furrow_proto::flow::Window { msgs: self.stream_window as u64, bytes: self.stream_window_bytes as u64 }
    }

    /// The registry addresses this configuration resolves to: those given
    /// to [`registry`](Self::registry), else `$FURROW_REGISTRY`, else
    /// `uds://<socket_dir>/registry.sock`.
    ///
    /// ```
    /// use furrow::{Addr, Config};
    /// let cfg = Config::new("root").socket_dir("/tmp/my-tree");
    /// if std::env::var_os(furrow::REGISTRY_ENV).is_none() {
    ///     let want: Addr = "uds:///tmp/my-tree/registry.sock".parse().unwrap();
    ///     assert_eq!(cfg.resolved_registry().unwrap(), vec![want]);
    /// }
    /// ```
    ///
    /// Errors: [`Error::Usage`] when `$FURROW_REGISTRY` is not valid UTF-8
    /// or holds an address that does not parse.
    pub fn resolved_registry(&self) -> Result<Vec<Addr>> {
        if !self.registry.is_empty() {
            return Ok(self.registry.clone());
        }
        if let Some(v) = std::env::var_os(REGISTRY_ENV) {
            let v = v.to_str().ok_or_else(|| Error::usage(format!("{REGISTRY_ENV} is not valid UTF-8")))?;
            return v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().map_err(|e| Error::usage(format!("{REGISTRY_ENV}: {e}"))))
                .collect();
        }
        Ok(vec![Addr::Uds(self.resolved_socket_dir().join(REGISTRY_SOCKET))])
    }

    /// The socket directory this configuration resolves to: the one given
    /// to [`socket_dir`](Self::socket_dir), else `$FURROW_SOCKET_DIR`, else
    /// `$XDG_RUNTIME_DIR/furrow`, else `/tmp/furrow-<uid>`.
    ///
    /// ```
    /// let cfg = furrow::Config::new("root").socket_dir("/tmp/my-tree");
    /// assert_eq!(cfg.resolved_socket_dir(), std::path::Path::new("/tmp/my-tree"));
    /// ```
    pub fn resolved_socket_dir(&self) -> PathBuf {
        if let Some(d) = &self.socket_dir {
            return d.clone();
        }
        if let Some(d) = std::env::var_os(SOCKET_DIR_ENV) {
            return PathBuf::from(d);
        }
        if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
            return Path::new(&d).join("furrow");
        }
        let uid = rustix::process::getuid().as_raw();
        PathBuf::from(format!("/tmp/furrow-{uid}"))
    }
}

/// File name of the default registry socket in the socket directory.
pub(crate) const REGISTRY_SOCKET: &str = "registry.sock";

/// Create `dir` (and parents) if needed; make sure it is a directory owned by
/// us with mode 0700, so no other user can reach our sockets.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) => {
            return Err(Error::io(format!("cannot create socket directory {}", dir.display()), e));
        }
    }
    let meta = std::fs::metadata(dir).map_err(|e| Error::io(format!("cannot stat {}", dir.display()), e))?;
    let uid = rustix::process::getuid().as_raw();
    if meta.uid() != uid {
        return Err(Error::usage(format!(
            "socket directory {} belongs to uid {}, not to us (uid {uid})",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("cannot chmod 0700 {}", dir.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_reaches_a_child_config_unchanged() {
        let parent = Config::new("root")
            .spawn_timeout(Duration::from_secs(3))
            .cancel_ack_timeout(Duration::from_millis(70))
            .exit_timeout(Duration::from_millis(80))
            .term_timeout(Duration::from_millis(90))
            .stream_window(17)
            .cancel_grace(Duration::from_millis(5))
            .max_unauthenticated(9);
        let child = Config::new("child").with_tuning(&parent.tuning());
        assert_eq!(child.spawn_timeout, parent.spawn_timeout);
        assert_eq!(child.cancel_ack_timeout, parent.cancel_ack_timeout);
        assert_eq!(child.exit_timeout, parent.exit_timeout);
        assert_eq!(child.term_timeout, parent.term_timeout);
        assert_eq!(child.stream_window, 17);
        assert_eq!(child.cancel_grace, parent.cancel_grace);
        assert_eq!(child.max_unauthenticated, 9);
        // A parent that does not send it leaves the default.
        let old = furrow_proto::Tuning { max_unauthenticated: None, ..parent.tuning() };
        assert_eq!(Config::new("c").with_tuning(&old).max_unauthenticated, DEFAULT_MAX_UNAUTHENTICATED);
    }
}
