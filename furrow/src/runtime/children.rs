//! The actor's children: spawns waiting for their child to connect back
//! (by spawn token), the child processes it owns, the starts abandoned
//! midway, and the hard kill of a second Ctrl-C.
//!
//! The start sequence itself is `crate::spawn`; this is what the actor
//! keeps of it, so its shutdown and the accept loop can find it.

use super::{Actor, Handshaken, lock};
use crate::spawn::ChildProc;
use std::time::Duration;
use tokio::sync::mpsc;

impl Actor {
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
            // The child's whole subtree is in its process group (led by
            // our unreaped child). A pid of 0 (none known) would name our
            // own group: `from_raw` refuses it.
            if let Some(group) = rustix::process::Pid::from_raw(c.pid() as i32) {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
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
        futures::future::join_all(procs.iter().map(async |p| {
            if p.wait_exit(Duration::from_secs(5)).await.is_some() {
                p.wait_output().await;
            }
        }))
        .await;
        lock(&self.abandoned).retain(|p| p.exited().is_none());
    }
}

/// Whether any process of the process groups `groups` is still running
/// (not a zombie), read from `/proc` (only on the hard-kill path of a
/// second Ctrl-C).
fn running_in_groups(groups: &[u32]) -> bool {
    use crate::spawn::orphans::{ProcStat, all_pids};
    all_pids().filter_map(ProcStat::of).any(|st| st.running() && st.pgrp.is_some_and(|g| groups.contains(&g)))
}
