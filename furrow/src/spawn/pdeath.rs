//! The parent-death backstop (docs/guide.md, rule 7).
//!
//! The primary way a child notices its parent is gone is the parent
//! channel closing. As a backstop, on Linux the child asks the kernel for
//! SIGTERM when its parent dies (`PR_SET_PDEATHSIG`), which the actor
//! handles as a cancel. The kernel ties that signal to the *thread* that
//! forked the child, not the process, so the parent-side tokio worker
//! thread exiting could fire it early; furrow's runtimes keep their worker
//! threads for their whole life, and the child re-checks `getppid()`
//! against the pid it was told, closing the race where the parent died
//! before the signal was armed.

/// Arm the parent-death signal and verify the parent is still `ppid`;
/// exit at once if it is not.
pub(crate) fn arm(ppid: u32) {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM)) {
        // The parent channel closing still ends this actor; only the
        // backstop is missing.
        tracing::warn!("cannot arm the parent-death signal ({e})");
    }
    if parent_pid() != ppid {
        eprintln!("furrow: parent {ppid} is gone before the child started; exiting");
        std::process::exit(3);
    }
}

/// This process's parent's pid now (0 if it has none: init's children
/// never are actors).
pub(crate) fn parent_pid() -> u32 {
    rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32)
}
