//! The stdin link of a child started through a launcher (ssh, a command
//! prefix): what travels over the child's stdin, and what the child does
//! with it (docs/design.md, "Remote hosts").
//!
//! ```text
//! parent → child stdin:  u32 BE length ‖ boot text      (once, first)
//!                        one byte per signal: its number (any time after)
//!                        EOF                             (the parent is gone)
//! ```
//!
//! The boot text is the spawn variable's fields plus the system's secret
//! and the child's exit bound once its link is gone (`v4`, one field per
//! line, the name last). It goes over stdin because
//! argv is visible to every user of both hosts (`ps`), and the
//! environment of a remote command cannot be set without the server's
//! consent (`AcceptEnv`), and would sit in `/proc/<pid>/environ`. The
//! stdin stays open for the child's life: its end is how the child learns
//! that its parent, or the link to it, is gone.

use super::super::runtime::entry::SpawnEnv;
use crate::ipc::auth::hex;
use furrow_proto::Secret;
use std::io::Read;
use std::time::Duration;

/// The value of `FURROW_SPAWN` for a child whose bootstrap comes over its
/// stdin: it names no secret, so it may sit in a remote command line.
pub(crate) const ON_STDIN: &str = "stdin";

/// Largest boot frame a child reads: a name (255 bytes), an address and a
/// secret (at most a few KiB) fit many times over.
const BOOT_MAX: usize = 64 * 1024;

/// The boot frame for `env`, `secret` and `bound` (how long the child may
/// take to end once its link closed, from the tree's timeouts: see
/// `runtime::entry::remote_exit_bound`): its length (u32, big endian), then
/// its text: `v4`, the secret in hex, the bound in ms, then the spawn
/// variable's own text ([`SpawnEnv::encode`], the name last), so its
/// fields have one encoding whichever way a child is started.
pub(crate) fn encode_boot(env: &SpawnEnv, secret: &Secret, bound: Duration) -> Vec<u8> {
    let text =
        format!("v4\n{}\n{}\n{}", hex(&secret.0), u64::try_from(bound.as_millis()).unwrap_or(u64::MAX), env.encode());
    let mut out = Vec::with_capacity(4 + text.len());
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// Decode a boot frame's text (without its length).
pub(crate) fn decode_boot(text: &str) -> Result<(SpawnEnv, Secret, Duration), String> {
    const SOURCE: &str = "bootstrap on stdin";
    let mut it = text.splitn(4, '\n');
    let bad = |what: &str| format!("malformed {SOURCE}: {what}");
    if it.next() != Some("v4") {
        return Err(bad("unknown version (is the child's furrow another version than its parent's?)"));
    }
    let secret = it.next().and_then(unhex).filter(|s| !s.is_empty()).ok_or_else(|| bad("no secret"))?;
    let bound =
        it.next().and_then(|b| b.parse().ok()).map(Duration::from_millis).ok_or_else(|| bad("no exit bound"))?;
    let env = SpawnEnv::decode_as(it.next().ok_or_else(|| bad("no spawn fields"))?, SOURCE)?;
    Ok((env, Secret(secret), bound))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

/// In the child, before any thread exists: read the boot frame from stdin
/// (blocking; the parent writes it right after starting the launcher).
pub(crate) fn read_boot() -> Result<(SpawnEnv, Secret, Duration), String> {
    let mut stdin = std::io::stdin().lock();
    let mut len = [0u8; 4];
    stdin.read_exact(&mut len).map_err(|e| format!("no bootstrap on stdin: {e}"))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > BOOT_MAX {
        return Err(format!("bootstrap on stdin of {len} bytes, at most {BOOT_MAX}"));
    }
    let mut text = vec![0u8; len];
    stdin.read_exact(&mut text).map_err(|e| format!("bootstrap on stdin cut short: {e}"))?;
    let text = String::from_utf8(text).map_err(|_| "bootstrap on stdin is not UTF-8".to_owned())?;
    decode_boot(&text)
}

/// Read control bytes from stdin on a thread of their own (a blocking
/// read never holds up the runtime or its shutdown; the thread holds only
/// fd 0 and dies with the process), until the end of the link.
///
/// Each byte is delivered as a signal to this process at once, here: its
/// handlers are the local ladder's (SIGTERM is a cancel; SIGKILL needs
/// none). The end of the link (end of file, or a read error) is said on
/// the returned channel, so the actor cancels itself; and from then on
/// the process has `bound` to end, or this thread ends it (`code`): a
/// thread, so a runtime stalled by a task that never yields cannot keep
/// the process alive past the bound.
pub(crate) fn watch_stdin(bound: Duration, code: i32) -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("furrow-link".into()).spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut b = [0u8; 1];
        loop {
            match stdin.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    // A named signal, to ourselves: what it does is its
                    // handler (or default action), as if a local parent
                    // had sent it. Any other byte is ignored.
                    super::send_signal(std::process::id(), i32::from(b[0]));
                }
            }
        }
        let _ = tx.send(());
        std::thread::sleep(bound);
        eprintln!("furrow: the link to the parent closed {bound:?} ago and the actor has not ended: exiting");
        end_watcher();
        // SAFETY: _exit ends the process at once, skipping destructors a
        // stalled runtime could block in. Its own children have their
        // parent-death signal armed on it.
        unsafe { libc::_exit(code) };
    });
    if spawned.is_err() {
        // No thread, no way to hear the link: say it is gone rather
        // than run unwatched.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = tx.send(());
        return rx;
    }
    rx
}

/// Start the *watcher* of a remote child: a forked copy of this process
/// that does nothing but wait for the link (stdin) to close, without
/// reading it, then gives the child `bound` to end and SIGKILLs it if it
/// has not. It covers what the child cannot do itself: a child that is
/// stopped (SIGSTOP, a debugger) reads nothing, and its bound thread does
/// not run either. The watcher dies with the child (its parent-death
/// signal is SIGKILL).
///
/// Call before any thread exists (a fork copies only the calling thread).
/// The child ends its watcher itself ([`end_watcher`]) when it exits.
pub(crate) fn start_watcher(bound: Duration) {
    // SAFETY: getpid has no preconditions.
    let child = unsafe { libc::getpid() };
    // SAFETY: called before this process starts any thread, so the forked
    // copy is a consistent single-threaded process; it calls only
    // async-signal-safe functions (prctl, getppid, open, dup2, poll,
    // nanosleep, kill, _exit) and never returns into Rust code.
    let pid = unsafe { libc::fork() };
    if pid != 0 {
        // The parent (pid > 0), or no watcher (-1): the child's own bound
        // thread still applies to a child that runs.
        if pid > 0 {
            WATCHER.store(pid, std::sync::atomic::Ordering::Release);
            super::orphans::forked(pid as u32);
        }
        return;
    }
    // SAFETY: (the whole block) async-signal-safe calls on our own fds and
    // on the pid we were forked from; see above.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
        if libc::getppid() != child {
            libc::_exit(0);
        }
        // Not the child's output: its pipes close when the child ends,
        // whatever the watcher does.
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 1);
            libc::dup2(null, 2);
        }
        let mut fd = libc::pollfd { fd: 0, events: 0, revents: 0 };
        loop {
            // Events 0: only POLLHUP/POLLERR/POLLNVAL are reported, so the
            // control bytes are left for the child to read.
            let n = libc::poll(&mut fd, 1, -1);
            if n > 0 && fd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                break;
            }
            if n < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(0);
            }
        }
        let ts = libc::timespec { tv_sec: bound.as_secs() as libc::time_t, tv_nsec: bound.subsec_nanos() as _ };
        libc::nanosleep(&ts, std::ptr::null_mut());
        libc::kill(child, libc::SIGKILL);
        libc::_exit(0);
    }
}

/// The watcher's pid (0: none).
static WATCHER: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// End and reap the watcher: the child is exiting. Reaped here, not left to
/// whoever adopts it (a zombie on the far host until its subreaper or init
/// gets to it).
pub(crate) fn end_watcher() {
    let pid = WATCHER.swap(0, std::sync::atomic::Ordering::AcqRel);
    if pid > 0 {
        // SAFETY: kill(2) and waitpid(2) on our own child, which only we
        // reap (it is recorded as spawned, so no orphan scan takes it).
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            let mut st = 0;
            libc::waitpid(pid, &mut st, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boot_frame_round_trips_and_refuses_what_is_malformed() {
        let env = SpawnEnv {
            parent_addr: "tcp://10.0.0.1:7700".parse().expect("addr"),
            token: "tok".into(),
            name: "far worker".into(),
            uuid: uuid::Uuid::new_v4(),
            ppid: 42,
            threads: 2,
        };
        let secret = Secret(vec![0, 1, 0xfe, 0xff]);
        let bound = Duration::from_millis(7250);
        let frame = encode_boot(&env, &secret, bound);
        let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len, frame.len() - 4);
        let text = std::str::from_utf8(&frame[4..]).expect("utf-8");
        let (e, s, b) = decode_boot(text).expect("decodes");
        assert_eq!((e, s.0, b), (env, secret.0, bound));
        assert!(decode_boot("v3\nx").is_err());
        assert!(decode_boot(&text.replace("\n7250\n", "\nsoon\n")).unwrap_err().contains("exit bound"));
        assert!(decode_boot(&text.replace("0001feff", "0g")).is_err(), "{text}");
        assert!(decode_boot(&text.replace("0001feff", "")).unwrap_err().contains("secret"));
    }
}
