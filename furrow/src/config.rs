//! Runtime configuration of an actor tree.

use crate::{Error, Result};
use furrow_proto::{Addr, DEFAULT_MAX_FRAME};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Environment variable that overrides the default socket directory.
pub const SOCKET_DIR_ENV: &str = "FURROW_SOCKET_DIR";

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
/// | `stream_window` | 1024 messages (receive buffer and credit per stream) |
/// | `cancel_grace` | 200 ms (a cancelled context callee's time to clean up) |
///
/// ```
/// use std::time::Duration;
/// let cfg = furrow::Config::new("root").cancel_ack_timeout(Duration::from_millis(200));
/// assert_eq!(cfg.name(), "root");
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
    pub(crate) cancel_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config::new("root")
    }
}

impl Config {
    /// Defaults, for an actor called `name`.
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
            stream_window: 1024,
            cancel_grace: Duration::from_millis(200),
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

    /// Listen on these addresses instead of one UDS socket in the socket
    /// directory.
    pub fn bind(mut self, addrs: impl IntoIterator<Item = Addr>) -> Self {
        self.bind = addrs.into_iter().collect();
        self
    }

    /// Serve only functions whose path starts with one of these module
    /// paths (empty: every registered function).
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

    /// How long a cancelled context callee may run after
    /// `Context::cancelled` resolved, before its future is dropped.
    pub fn cancel_grace(mut self, d: Duration) -> Self {
        self.cancel_grace = d;
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
        self
    }

    /// The socket directory this configuration resolves to.
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
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        PathBuf::from(format!("/tmp/furrow-{uid}"))
    }
}

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
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
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
            .cancel_grace(Duration::from_millis(5));
        let child = Config::new("child").with_tuning(&parent.tuning());
        assert_eq!(child.spawn_timeout, parent.spawn_timeout);
        assert_eq!(child.cancel_ack_timeout, parent.cancel_ack_timeout);
        assert_eq!(child.exit_timeout, parent.exit_timeout);
        assert_eq!(child.term_timeout, parent.term_timeout);
        assert_eq!(child.stream_window, 17);
        assert_eq!(child.cancel_grace, parent.cancel_grace);
    }
}
