//! Leak checks: descendant processes, socket files, file descriptors.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Make this process a child subreaper: orphaned descendants are
/// reparented to it (not to init), so the leak check sees them.
pub(crate) fn become_subreaper() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // The flag is set by any non-zero argument (rustix passes our pid).
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    }
    Ok(())
}

/// A fresh 0700 directory for one test's sockets.
pub(crate) fn make_socket_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    // Several tests start at once from one harness process: a counter
    // keeps their names apart.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("furrow-test-{}-{k}-{nanos:x}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// Remove the socket files in `dir` that nobody accepts connections on
/// (the owner was SIGKILLed and could not unlink them). Returns how many.
pub(crate) fn sweep_stale_sockets_in(dir: &Path) -> usize {
    use std::os::unix::fs::FileTypeExt;
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let is_socket = e.file_type().is_ok_and(|t| t.is_socket());
            if is_socket && std::os::unix::net::UnixStream::connect(e.path()).is_err() {
                n += usize::from(std::fs::remove_file(e.path()).is_ok());
            }
        }
    }
    n
}

/// Clear the test directories (see [`make_socket_dir`]) of harness
/// processes that no longer exist: a harness that was SIGKILLed never ran
/// its cleanup, and its SIGKILLed tests could not unlink their sockets.
/// Only sockets nobody listens on are removed, and a directory only once
/// empty, so a test still running from an orphaned run keeps its own.
/// Returns how many directories were removed.
pub(crate) fn sweep_abandoned_dirs() -> usize {
    let tmp = std::env::temp_dir();
    let Ok(rd) = std::fs::read_dir(&tmp) else { return 0 };
    let mut removed = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix("furrow-test-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        // A pid reused by another process keeps the directory: conservative.
        let alive = crate::sys::exists(owner);
        if alive || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = e.path();
        sweep_stale_sockets_in(&dir);
        if std::fs::remove_dir(&dir).is_ok() {
            let _ = std::fs::remove_file(dir.with_extension("secret"));
            removed += 1;
        }
    }
    removed
}

/// Open fds of this process, with what they point to.
pub(crate) fn open_fds() -> BTreeMap<i32, String> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir("/proc/self/fd") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let target = std::fs::read_link(e.path()).map(|p| p.display().to_string()).unwrap_or_default();
        out.insert(fd, target);
    }
    // The directory handle used for this very listing is not a leak.
    out.retain(|_, t| !t.starts_with("/proc/") || !t.ends_with("/fd"));
    out
}

/// A process below this one.
///
/// ```no_run
/// let zombies: Vec<_> = furrow_testing::descendants(std::process::id() as i32)
///     .into_iter()
///     .filter(|d| d.state == 'Z')
///     .collect();
/// for z in &zombies {
///     eprintln!("unreaped: {} ({}), parent {}", z.pid, z.comm, z.ppid);
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Its pid.
    pub pid: i32,
    /// Its parent's pid.
    pub ppid: i32,
    /// Its state letter (`Z` for a zombie).
    pub state: char,
    /// Its command name.
    pub comm: String,
    /// CPU time it has used so far, user and system, in clock ticks
    /// (`utime + stime`; a tick is 10 ms on Linux): rising while it runs.
    pub cpu_ticks: u64,
}

impl Process {
    /// A zombie: it has exited, and its parent has not reaped it yet.
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }

    /// Stopped (SIGSTOP, a debugger): state `T` or `t`.
    pub fn is_stopped(&self) -> bool {
        matches!(self.state, 'T' | 't')
    }
}

/// What `/proc/<pid>/stat` says of process `pid` (Linux only); `None` when
/// there is no such process (or it cannot be read). The one parser of that
/// file for the tests: the command name may hold spaces and parentheses,
/// so the fields are read after its last `)`.
///
/// ```no_run
/// // Still running: neither gone nor a zombie.
/// let running = |pid: i32| furrow_testing::process(pid).is_some_and(|p| !p.is_zombie());
/// assert!(running(std::process::id() as i32));
/// ```
pub fn process(pid: i32) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let comm = stat.get(open + 1..close)?.to_owned();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
    let ppid = rest.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    // After ppid: pgrp session tty_nr tpgid flags minflt cminflt majflt
    // cmajflt, then utime and stime (fields 14 and 15 of proc(5)).
    let mut rest = rest.skip(9);
    let mut ticks = || rest.next().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let cpu_ticks = ticks() + ticks();
    Some(Process { pid, ppid, state, comm, cpu_ticks })
}

/// Every live or zombie process whose ancestry leads to `root` (read from
/// `/proc`, so Linux only).
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// let me = std::process::id() as i32;
/// furrow::open_nursery(async |n| {
///     let _p = n.start_actor("worker").await?;
///     assert!(!furrow_testing::descendants(me).is_empty());
///     furrow::Ok(())
/// })
/// .await?;
/// assert!(furrow_testing::descendants(me).is_empty()); // all reaped
/// # Ok(()) }
/// ```
pub fn descendants(root: i32) -> Vec<Process> {
    let mut all = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()).and_then(process) {
                all.push(p);
            }
        }
    }
    let mut found: Vec<Process> = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for d in all.iter().filter(|d| d.ppid == p) {
            frontier.push(d.pid);
            found.push(d.clone());
        }
    }
    found
}

/// What the leak check found. Its `Display` lists every leak, one per
/// line.
///
/// ```
/// use furrow_testing::{LeakReport, descendants};
/// // A check of its own, on processes only.
/// let report = LeakReport { processes: descendants(std::process::id() as i32), ..Default::default() };
/// if !report.is_clean() {
///     eprintln!("leaked:\n{report}");
/// }
/// ```
#[derive(Debug, Default)]
pub struct LeakReport {
    /// Processes still alive or unreaped below the test process.
    pub processes: Vec<Process>,
    /// Files left in the socket directory.
    pub files: Vec<PathBuf>,
    /// fds open now that were not before (fd, target).
    pub new_fds: Vec<(i32, String)>,
}

impl LeakReport {
    /// Nothing leaked.
    pub fn is_clean(&self) -> bool {
        self.processes.is_empty() && self.files.is_empty() && self.new_fds.is_empty()
    }
}

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.processes {
            let what = if p.state == 'Z' { "unreaped (zombie)" } else { "still running" };
            writeln!(f, "  process {} ({}) {what}, parent {}", p.pid, p.comm, p.ppid)?;
        }
        for p in &self.files {
            writeln!(f, "  file left in the socket directory: {}", p.display())?;
        }
        for (fd, t) in &self.new_fds {
            writeln!(f, "  fd {fd} leaked: {t}")?;
        }
        Ok(())
    }
}

/// Check for leaks, then clean up whatever leaked (kill and reap
/// processes) so nothing outlives the test process.
pub(crate) fn check(dir: &Path, fds_before: &BTreeMap<i32, String>) -> LeakReport {
    let me = std::process::id() as i32;
    let mut report = LeakReport { processes: descendants(me), ..Default::default() };
    if let Ok(rd) = std::fs::read_dir(dir) {
        report.files = rd.flatten().map(|e| e.path()).collect();
    }
    let now = open_fds();
    report.new_fds = now.into_iter().filter(|(fd, t)| fds_before.get(fd) != Some(t)).collect();
    for p in &report.processes {
        // A descendant found above; a pid that exited meanwhile is ours
        // (subreaper) until we reap it below.
        crate::sys::kill(p.pid, rustix::process::Signal::KILL);
    }
    for _ in &report.processes {
        // Reaping any child of ours, without waiting, after a short pause.
        std::thread::sleep(std::time::Duration::from_millis(5));
        crate::sys::reap_any_nohang();
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_harness_s_directory_is_cleared_a_live_one_kept() {
        // A pid that surely ended: a child we waited for.
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let dead = child.id();
        child.wait().expect("wait");
        let dir = std::env::temp_dir().join(format!("furrow-test-{dead}-0-sweeptest"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        // A socket file nobody listens on any more (its owner was killed).
        drop(std::os::unix::net::UnixListener::bind(dir.join("actor.sock")).expect("bind"));
        std::fs::write(dir.with_extension("secret"), b"s").expect("secret");
        // A directory of this (live) process, with a socket still served.
        let mine = std::env::temp_dir().join(format!("furrow-test-{}-0-sweeptest", std::process::id()));
        let _ = std::fs::remove_dir_all(&mine);
        std::fs::create_dir_all(&mine).expect("mkdir");
        let _live = std::os::unix::net::UnixListener::bind(mine.join("live.sock")).expect("bind");

        assert!(sweep_abandoned_dirs() >= 1);
        assert!(!dir.exists(), "the dead harness's directory is still there");
        assert!(!dir.with_extension("secret").exists());
        assert!(mine.join("live.sock").exists(), "a live harness's socket was removed");
        std::fs::remove_dir_all(&mine).expect("cleanup");
    }
}
