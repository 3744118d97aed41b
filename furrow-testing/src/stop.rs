//! What happens to the running tests when the harness itself is stopped.
//!
//! Each test runs in a process group of its own (so the harness can end
//! its whole tree on a timeout), which also means a Ctrl-C at the
//! terminal, a `timeout` or a CI runner's SIGTERM reaches only the
//! harness: without this module the harness died and the tests it was
//! running, with their actors, ran on (a hung one for ever). So:
//!
//! - **SIGINT, SIGTERM, SIGHUP** to the harness: a thread of the harness
//!   kills every running test's tree (its process group, then every
//!   process found below it, as the timeout does) and removes its socket
//!   directory and secret, then the harness exits with 128 + the signal.
//! - **SIGKILL** of the harness, which nothing can catch: each test process
//!   asked the kernel for SIGKILL when the harness dies
//!   (`PR_SET_PDEATHSIG`); its actors then see their parent's channel close
//!   and end by themselves (rule 7 of the guide), and the next harness run
//!   sweeps the directory it left (`leak::sweep_abandoned_dirs`).
//!
//! The registry of running tests and the spawn share one lock, and the
//! stopping thread takes it and never gives it back: a test is either
//! registered before the stop looks (and killed by it) or never started.

use crate::{leak, sys};
use rustix::process::Signal;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Mutex;

/// The harness's pid, in a test process's environment: its parent must
/// be that process, or the harness is already gone.
const HARNESS_ENV: &str = "FURROW_TEST_HARNESS";

/// A test process the harness is running: its pid (which leads its
/// process group) and what to remove if it must be killed.
struct Running {
    pid: i32,
    dir: PathBuf,
    secret: PathBuf,
}

static RUNNING: Mutex<Vec<Running>> = Mutex::new(Vec::new());

fn running() -> std::sync::MutexGuard<'static, Vec<Running>> {
    // A panic elsewhere while holding it leaves a valid list.
    RUNNING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Start `cmd` (a test process, in a process group of its own) and record
/// it as running, both under the registry's lock; `dir` and `secret` are
/// removed if the harness is stopped while it runs.
pub(crate) fn spawn_registered(cmd: &mut Command, dir: PathBuf, secret: PathBuf) -> std::io::Result<Child> {
    let mut list = running();
    let child = cmd.env(HARNESS_ENV, std::process::id().to_string()).spawn()?;
    list.push(Running { pid: child.id() as i32, dir, secret });
    Ok(child)
}

/// Forget test process `pid`: it ended. (It is reaped just before, by the
/// wait that saw it end; a stop in between finds its pid gone, or reused
/// by a process that is not the harness's child, and leaves it alone.)
pub(crate) fn unregister(pid: u32) {
    running().retain(|r| r.pid != pid as i32);
}

/// Harness side: start the thread that stops the running tests on SIGINT,
/// SIGTERM or SIGHUP (see the module's docs). Without it (the handlers
/// cannot be installed) the harness keeps the default behaviour and says
/// so.
pub(crate) fn watch_signals() {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_io().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("furrow-testing: cannot watch for Ctrl-C ({e}); a stopped run may leave its tests running");
            return;
        }
    };
    use tokio::signal::unix::{SignalKind, signal};
    // Installed here, before any test starts, so no signal can arrive
    // between a test's start and the handler's.
    let installed = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        ))
    });
    let (mut int, mut term, mut hup) = match installed {
        Ok(s) => s,
        Err(e) => {
            eprintln!("furrow-testing: cannot watch for Ctrl-C ({e}); a stopped run may leave its tests running");
            return;
        }
    };
    let spawned = std::thread::Builder::new().name("furrow-testing-stop".into()).spawn(move || {
        // `Signal::recv` is cancel safe: the one that lost the race stays
        // pending, and the process exits below anyway.
        let sig = rt.block_on(async {
            tokio::select! {
                _ = int.recv() => Signal::INT,
                _ = term.recv() => Signal::TERM,
                _ = hup.recv() => Signal::HUP,
            }
        });
        stop_all(sig)
    });
    if let Err(e) = spawned {
        eprintln!("furrow-testing: cannot watch for Ctrl-C ({e}); a stopped run may leave its tests running");
    }
}

/// Kill every running test's tree, remove its files, and exit.
fn stop_all(sig: Signal) -> ! {
    // Held until the process exits: no test starts after this point.
    let list = running();
    let me = std::process::id() as i32;
    let mut killed = 0;
    for r in list.iter() {
        // Still ours: a test process is reaped a moment before it is
        // unregistered, and its pid could be reused in between. The
        // harness's only children are its test processes, so a pid whose
        // parent is not the harness is not one to kill.
        if leak::process(r.pid).is_none_or(|p| p.ppid != me) {
            continue;
        }
        // Found before the group is killed: the actors lead groups of
        // their own, and once the test process is gone they are no longer
        // below it.
        let tree = leak::descendants(r.pid);
        sys::kill_group(r.pid, Signal::KILL);
        for d in tree {
            sys::kill(d.pid, Signal::KILL);
        }
        sys::reap(r.pid);
        let _ = std::fs::remove_dir_all(&r.dir);
        let _ = std::fs::remove_file(&r.secret);
        killed += 1;
    }
    let name = match sig {
        Signal::INT => "SIGINT",
        Signal::TERM => "SIGTERM",
        _ => "SIGHUP",
    };
    // Not `eprintln!`: a closed stderr must not keep the harness from
    // exiting.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "furrow-testing: {name}: killed {killed} running test(s) and their actors");
    std::process::exit(128 + sig.as_raw());
}

/// Test-process side, first thing: die with the harness (SIGKILL when it
/// dies, whatever kills it), and exit at once if it is already gone. A
/// process not started by a harness (no `FURROW_TEST_HARNESS`) is left as
/// it is.
pub(crate) fn die_with_harness() {
    let Some(harness) = std::env::var(HARNESS_ENV).ok().and_then(|v| v.parse::<i32>().ok()) else {
        return;
    };
    // SAFETY: nothing else runs yet (no threads); the actors this test
    // starts must not see it.
    unsafe { std::env::remove_var(HARNESS_ENV) };
    // The kernel ties the signal to the harness *thread* that forked this
    // process; that thread waits for this process to end before it
    // returns, so it outlives it.
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(Signal::KILL)) {
        eprintln!("furrow-testing: cannot ask to die with the harness ({e})");
    }
    let parent = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
    if parent != harness {
        // It died between the fork and the line above: nobody waits for
        // this test's result.
        std::process::exit(2);
    }
}
