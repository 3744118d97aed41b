//! A frozen actor does not freeze its neighbours (issue 14, defect 5). A
//! root sweeps its socket directory for stale socket files when it
//! starts; that sweep connected to each socket with a blocking connect,
//! and a stopped actor whose accept queue is full (about 4,097 connects
//! fill it) held that connect, and so the new root's start, until it
//! resumed. Now each probe is non-blocking and bounded, and a socket that
//! does not answer is busy, not stale: its file stays.

use anyhow::{Context as _, bail, ensure};
use furrow::Addr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[furrow::remote]
async fn ping() -> u32 {
    7
}

/// A separate root program in the test's socket directory: its start (the
/// sweep, its listener, its registration) is all it does.
#[furrow_testing::test(scenario)]
async fn scenario_a_new_root_starts() -> anyhow::Result<()> {
    let me = furrow::local_aid()?;
    println!("started as {}", me.name);
    Ok(())
}

/// Sends SIGCONT to a process it stopped, whatever happens to the test.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, still unreaped (its nursery,
        // which reaps it, is still open when this runs).
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// The process state letter in `/proc/PID/stat` (`T` when stopped).
fn state_of(pid: i32) -> Option<char> {
    furrow_testing::process(pid).map(|p| p.state)
}

/// Connect to `path` and close, without blocking, until the listener's
/// queue is full (the connect says `EAGAIN`); how many it took.
fn fill_queue(path: &Path) -> anyhow::Result<usize> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: plain data; zeroes are valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    ensure!(bytes.len() < addr.sun_path.len(), "socket path too long");
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = (std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1) as libc::socklen_t;
    for n in 0..100_000 {
        // SAFETY: a fresh socket, closed below on every path.
        let fd =
            unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
        ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: a valid address of `len` bytes.
        let rc = unsafe { libc::connect(fd, (&raw const addr).cast::<libc::sockaddr>(), len) };
        let err = std::io::Error::last_os_error();
        // SAFETY: our fd. The connection stays in the listener's queue
        // after our end is closed, until the listener accepts it.
        unsafe { libc::close(fd) };
        if rc != 0 {
            if err.raw_os_error() == Some(libc::EAGAIN) {
                return Ok(n);
            }
            bail!("connect {n}: {err}");
        }
    }
    bail!("the queue of {} never filled", path.display())
}

#[furrow_testing::test]
async fn a_frozen_actor_with_a_full_queue_does_not_hold_up_a_new_root() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("frozen").await?;
        let sock: PathBuf = p
            .addrs()
            .iter()
            .find_map(|a| if let Addr::Uds(path) = a { Some(path.clone()) } else { None })
            .context("the actor's socket")?;
        let pid = p.aid().pid as i32;
        // SAFETY: kill(2) on our own unreaped child.
        ensure!(unsafe { libc::kill(pid, libc::SIGSTOP) } == 0);
        let resume = Resume(pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        while state_of(pid) != Some('T') {
            ensure!(Instant::now() < deadline, "the actor did not stop: {:?}", state_of(pid));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let filled = tokio::task::spawn_blocking({
            let sock = sock.clone();
            move || fill_queue(&sock)
        })
        .await??;
        // A new root in the same socket directory starts, well within the
        // bound (before, it waited for the frozen actor to resume).
        let started = Instant::now();
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            furrow_testing::scenario("scenario_a_new_root_starts").output(),
        )
        .await
        .context("a new root in the same socket directory hung on the frozen actor")??;
        let took = started.elapsed();
        let said = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success() && said.starts_with("started as "),
            "{}: {said}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // Busy is not stale: the frozen actor's file is left alone.
        ensure!(sock.exists(), "the frozen actor's socket file was removed");
        ensure!(state_of(pid) == Some('T'), "still frozen while the root started");
        println!("queue filled after {filled} connects; a new root started in {took:?}");
        // Resumed, the actor serves again (and ends with the nursery).
        drop(resume);
        ensure!(p.run(ping, ()).await? == 7);
        Ok(())
    })
    .await
}
