//! The few process calls the harness makes, through rustix: safe
//! wrappers, so the harness has no `unsafe` of its own for them. Each
//! acts only on processes the harness started or found below itself.

use rustix::process::{Pid, Signal, WaitOptions};

/// Send `sig` to process `pid`; an error (the process is gone) is ignored.
pub(crate) fn kill(pid: i32, sig: Signal) {
    if let Some(p) = Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Send `sig` to process group `pgid`; an error (the group is empty) is
/// ignored.
pub(crate) fn kill_group(pgid: i32, sig: Signal) {
    if let Some(p) = Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(p, sig);
    }
}

/// Reap child `pid`, waiting for it (a zombie returns at once).
pub(crate) fn reap(pid: i32) {
    if let Some(p) = Pid::from_raw(pid) {
        let _ = rustix::process::waitpid(Some(p), WaitOptions::empty());
    }
}

/// Reap one exited child, if any, without waiting.
pub(crate) fn reap_any_nohang() {
    let _ = rustix::process::wait(WaitOptions::NOHANG);
}

/// Whether process `pid` exists (a zombie counts; so does one we may not
/// signal).
pub(crate) fn exists(pid: i32) -> bool {
    match Pid::from_raw(pid) {
        Some(p) => !matches!(rustix::process::test_kill_process(p), Err(rustix::io::Errno::SRCH)),
        None => false,
    }
}

/// Whether this process runs as root.
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
