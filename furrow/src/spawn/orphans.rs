//! Orphans: the actors below a child that died hard.
//!
//! An actor that exits gracefully ends its own children first. One that
//! dies hard (SIGKILL, a crash) cannot: its children lose their parent
//! channel and cancel themselves, but they are still running, for a
//! while, when the dead child is reaped. If nobody waited for them, the
//! nursery that owned the dead child would return with part of its subtree
//! still alive: a process outliving its scope (found by the chaos runner:
//! `nested_streams`, `relay` SIGKILLed at `started`).
//!
//! So every actor that spawns becomes a *child subreaper* (Linux,
//! `PR_SET_CHILD_SUBREAPER`): the kernel reparents an orphan to its nearest
//! living subreaper ancestor, which is the dead child's parent actor. When
//! a child's reaper sees it die by a signal, it ends the orphans this
//! process adopted before it publishes the exit, so whoever waits for that
//! exit (the nursery) also waits for them:
//!
//! 1. wait for them to exit on their own (they are cancelling themselves:
//!    their parent channel is closed, and their parent-death signal fired),
//!    up to `exit_timeout`;
//! 2. then SIGTERM, up to `term_timeout` more; then SIGKILL;
//! 3. reap each one, and remove the socket file of any that could not.
//!
//! Which processes are adopted furrow actors: children of this process
//! that it did not spawn itself (not in [`SPAWNED`]) and that are in the
//! process group the dead child led, or whose environment carries furrow's
//! spawn variable; also, to be waited for and reaped but never signalled,
//! those of the same executable (a process's environment cannot always be
//! read whole). A daemon your own code
//! double-forks below an actor is reparented to that actor too, and is
//! left alone (it stays a zombie there once it exits, until the actor
//! exits).
//!
//! Races considered: a child being spawned is a child of ours before its
//! pid is known; [`spawning`] holds [`SPAWNED`]'s lock across the fork and
//! the scan takes the same lock, so a new child is never mistaken for an
//! orphan. Two reapers ending orphans at once take turns (one async lock);
//! a pid is only signalled while it is our unreaped child, so it cannot
//! have been reused.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Pids this process spawned and has not reaped yet.
static SPAWNED: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

/// One end of orphans at a time.
static ORPHANAGE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Spawn a child with `f`, recording its pid so it is never taken for an
/// orphan. The first spawn makes this process a child subreaper.
pub(crate) fn spawning(
    f: impl FnOnce() -> std::io::Result<tokio::process::Child>,
) -> std::io::Result<tokio::process::Child> {
    let mut spawned = crate::sync::lock(&SPAWNED);
    let set = spawned.get_or_insert_with(|| {
        become_subreaper();
        HashSet::new()
    });
    let child = f()?;
    if let Some(pid) = child.id() {
        set.insert(pid);
    }
    Ok(child)
}

/// A child this process forked by other means (a remote child's watcher,
/// `spawn::link`): never taken for an orphan.
pub(crate) fn forked(pid: u32) {
    crate::sync::lock(&SPAWNED).get_or_insert_with(HashSet::new).insert(pid);
}

/// The child `pid` was reaped by its reaper.
pub(crate) fn reaped(pid: u32) {
    if let Some(set) = crate::sync::lock(&SPAWNED).as_mut() {
        set.remove(&pid);
    }
}

fn become_subreaper() {
    #[cfg(target_os = "linux")]
    {
        // PR_SET_CHILD_SUBREAPER takes a flag; rustix passes our pid
        // (non-zero: set).
        if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
            tracing::warn!(
                "cannot become a child subreaper ({e}): actors orphaned by a child's hard death are not waited for"
            );
        }
    }
}

/// An adopted actor, as far as it could be identified.
#[derive(Debug)]
struct Orphan {
    /// Its socket file, from its spawn variable (unknown for a zombie).
    socket: Option<PathBuf>,
    /// Ours for certain (the dead child's process group, or furrow's spawn
    /// variable), so it may be signalled. One recognised only by its
    /// executable is only waited for and reaped.
    certain: bool,
}

/// This process's `comm` (what `/proc/<pid>/stat` shows in parentheses).
fn comm_of(stat: &str) -> Option<&str> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    stat.get(open + 1..close)
}

/// What furrow reads of `/proc/<pid>/stat` (memory-backed, no disk).
pub(crate) struct ProcStat {
    pid: u32,
    /// The whole line (for its `comm`).
    line: String,
    /// One-letter state: `R`, `S`, `Z` (zombie), …
    pub(crate) state: String,
    pub(crate) ppid: Option<u32>,
    pub(crate) pgrp: Option<u32>,
}

impl ProcStat {
    /// `/proc/<pid>/stat`, if the process (still) exists.
    pub(crate) fn of(pid: u32) -> Option<ProcStat> {
        let line = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the `)` of the comm (which may itself contain `)`): state,
        // ppid, pgrp, session, tty, tpgid, flags, …
        let fields: Vec<&str> = line.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let num = |i: usize| fields.get(i).and_then(|p| p.parse::<u32>().ok());
        let (state, ppid, pgrp) = (fields.first().map(|s| s.to_string()).unwrap_or_default(), num(1), num(2));
        Some(ProcStat { pid, line, state, ppid, pgrp })
    }

    fn comm(&self) -> Option<&str> {
        comm_of(&self.line)
    }

    /// Some thread of it is neither a zombie nor dead: it may still hold
    /// files open.
    ///
    /// The state in `/proc/<pid>/stat` is the main thread's. A SIGKILLed
    /// multi-threaded process (every tokio actor) can show its main thread
    /// as a zombie while a worker thread is still exiting with the files
    /// open — a busy worker on a loaded machine takes a while. Taking that
    /// for "gone" let a hard kill sweep the socket directory while a leaf's
    /// listening socket still accepted connections, and its file was left
    /// (`supervise_signals::second_sigint_during_a_slow_shutdown_hard_kills`,
    /// 2 runs in 100 with other builds loading the machine). So a zombie
    /// main thread is checked against the process's other threads.
    pub(crate) fn running(&self) -> bool {
        if self.state != "Z" && self.state != "X" {
            return true;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return false;
        };
        tasks.flatten().any(|t| {
            std::fs::read_to_string(t.path().join("stat")).is_ok_and(|line| {
                let state = line.rsplit(')').next().and_then(|rest| rest.split_whitespace().next());
                state.is_some_and(|s| s != "Z" && s != "X")
            })
        })
    }
}

/// Every pid in `/proc` now.
pub(crate) fn all_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
}

/// The adopted furrow actors now among this process's children, after the
/// death of the child `dead`; `my_comm` is this process's own `comm`.
///
/// Reads `/proc` (memory-backed, no disk) synchronously, under
/// [`SPAWNED`]'s lock so a fork cannot slip between the scan and the
/// check; it runs only after a child died by a signal.
fn adopted(socket_dir: &Path, dead: u32, my_comm: &str) -> Vec<(u32, Orphan)> {
    let me = std::process::id();
    let spawned = crate::sync::lock(&SPAWNED);
    let ours = |pid: u32| spawned.as_ref().is_some_and(|s| s.contains(&pid));
    let mut found = Vec::new();
    for pid in all_pids() {
        if pid == me || ours(pid) {
            continue;
        }
        let Some(stat) = ProcStat::of(pid) else { continue };
        if stat.ppid != Some(me) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let spawn_var = env
            .split(|&b| b == 0)
            .find_map(|kv| kv.strip_prefix(crate::runtime::entry::SPAWN_ENV.as_bytes())?.strip_prefix(b"="))
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| crate::runtime::entry::SpawnEnv::decode(v).ok());
        // Ours for certain: in the process group the dead child led (a
        // root's children lead one each, which their subtree joins), or
        // furrow's spawn variable in its environment. That environment is
        // not always readable whole (seen: 64 and 128 bytes of it, from a
        // running process, one run in ~40; and a zombie shows none), so
        // one of our executable is also taken, to be waited for and
        // reaped but never signalled. Anything else, such as a helper
        // your code started from another executable, is left alone.
        let certain = spawn_var.is_some() || stat.pgrp == Some(dead);
        if !certain && stat.comm() != Some(my_comm) {
            continue;
        }
        let socket = spawn_var.map(|s| {
            let aid = furrow_proto::Aid { name: s.name, uuid: s.uuid, pid };
            socket_dir.join(crate::runtime::socket_file_name(&aid))
        });
        found.push((pid, Orphan { socket, certain }));
    }
    found
}

/// End the furrow actors this process adopted (see the module
/// documentation), all within `exit_timeout + term_timeout` and a second.
/// Returns how many there were.
///
/// # Cancel safety
/// Cancel safe: what was reaped stays reaped; what was not is found again
/// by the next call (or by the process's exit).
pub(crate) async fn end_adopted(socket_dir: &Path, dead: u32, exit_timeout: Duration, term_timeout: Duration) -> usize {
    let _turn = ORPHANAGE.lock().await;
    let start = Instant::now();
    let my_stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let my_comm = comm_of(&my_stat).unwrap_or("");
    let mut live: HashMap<u32, Orphan> = HashMap::new();
    let mut seen = 0;
    let mut signalled = None;
    let mut killed = Vec::new();
    // The kernel reparents a dead process's children before its exit can
    // be reaped, so the first scan finds every orphan of this death. Later
    // scans (every 100 ms, not every poll) only catch orphans of an orphan
    // that died hard meanwhile, and identities that were unreadable.
    let mut polls = 0u32;
    loop {
        let scan = if polls.is_multiple_of(20) { adopted(socket_dir, dead, my_comm) } else { Vec::new() };
        polls += 1;
        for (pid, o) in scan {
            live.entry(pid)
                .and_modify(|known| {
                    if known.socket.is_none() {
                        known.socket = o.socket.clone();
                    }
                    known.certain |= o.certain;
                })
                .or_insert_with(|| {
                    seen += 1;
                    o
                });
        }
        // Reap whichever exited; each pid is our unreaped child until then.
        live.retain(|&pid, o| {
            // A child of ours, without blocking: reaped now (`Some`), or
            // gone already (an error: no such child).
            let gone = match rustix::process::Pid::from_raw(pid as i32) {
                Some(p) => !matches!(rustix::process::waitpid(Some(p), rustix::process::WaitOptions::NOHANG), Ok(None)),
                None => true,
            };
            if gone && signalled.is_some() {
                killed.extend(o.socket.take());
            }
            !gone
        });
        if live.is_empty() {
            break;
        }
        let waited = start.elapsed();
        let next = match signalled {
            None if waited >= exit_timeout => Some(libc::SIGTERM),
            Some(libc::SIGTERM) if waited >= exit_timeout + term_timeout => Some(libc::SIGKILL),
            Some(libc::SIGKILL) if waited >= exit_timeout + term_timeout + Duration::from_secs(1) => {
                let certain: Vec<u32> = live.iter().filter(|(_, o)| o.certain).map(|(&p, _)| p).collect();
                let unsure: Vec<u32> = live.iter().filter(|(_, o)| !o.certain).map(|(&p, _)| p).collect();
                if certain.is_empty() {
                    tracing::warn!(
                        "processes {unsure:?} of this executable, adopted by this actor, still run; left alone"
                    );
                } else {
                    tracing::error!("bug: orphaned actor(s) {certain:?} survive SIGKILL");
                }
                break;
            }
            _ => None,
        };
        if let Some(sig) = next {
            tracing::warn!(orphans = ?live.keys(), "orphaned actors did not exit: signal {sig}");
            for (&pid, _) in live.iter().filter(|(_, o)| o.certain) {
                // Our unreaped child (see above): the pid is still its.
                super::send_signal(pid, sig);
            }
            signalled = Some(sig);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A killed actor could not remove its socket file: do it for it, if
    // nobody listens there (it is not a reused name). The probe never
    // blocks this task: a blocking connect to a listener with a full queue
    // waits for it.
    for path in killed {
        use crate::ipc::transport::{PROBE_TIMEOUT, Probe, probe_uds};
        if !matches!(probe_uds(&path, PROBE_TIMEOUT), Probe::Alive | Probe::Busy) {
            let _ = std::fs::remove_file(&path);
        }
    }
    if seen > 0 {
        tracing::info!("{seen} orphaned actor(s) adopted and reaped after {:?}", start.elapsed());
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_is_what_is_in_parentheses() {
        assert_eq!(comm_of("123 (my prog) S 1 2"), Some("my prog"));
        assert_eq!(comm_of("123 (a)b) S 1"), Some("a)b"));
        assert_eq!(comm_of("garbage"), None);
    }

    /// This process runs (its threads do); an unreaped child that exited
    /// is a zombie with no thread left: not running.
    #[test]
    fn running_means_some_thread_is_alive() {
        let me = ProcStat::of(std::process::id()).expect("our own stat");
        assert!(me.running());
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while ProcStat::of(pid).is_some_and(|st| st.state != "Z") {
            assert!(std::time::Instant::now() < deadline, "`true` did not exit");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!ProcStat::of(pid).expect("a zombie keeps its /proc entry").running());
        child.wait().expect("reap");
    }
}
