//! Listeners and connections over UDS and TCP, as boxed byte streams.

#[cfg(feature = "chaos")]
use super::fragment::{self, Fragmenting};
#[cfg(feature = "chaos")]
use crate::chaos::{self, transport::Chaos};
use furrow_proto::Addr;
use std::io;
use std::path::PathBuf;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// The reading half of a connection.
pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a connection.
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// One established connection, split in halves.
pub(crate) struct Conn {
    pub(crate) read: BoxRead,
    pub(crate) write: BoxWrite,
    /// Where the other end is, for messages.
    pub(crate) desc: String,
    /// Over TCP: the peer must authenticate ([`super::auth`]).
    pub(crate) tcp: bool,
    /// Over UDS: the pid of the process at the other end, as the kernel
    /// knows it (`SO_PEERCRED`: the connecting process for an accepted
    /// connection, the listening one for a connection we made). `None`
    /// over TCP, or when the kernel cannot name it (a process in another
    /// pid namespace).
    pub(crate) peer_pid: Option<u32>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn({})", self.desc)
    }
}

fn boxed<R, W>(r: R, w: W, desc: String, tcp: bool, peer_pid: Option<u32>) -> Conn
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    // The test transports (chaos, fragmenting) exist only with the `chaos`
    // feature; without it a connection is the socket, and no variable is
    // read for it.
    #[cfg(feature = "chaos")]
    if let Some(cfg) = chaos::config().filter(|c| c.wraps_connections()) {
        // One generator per direction, both drawn from this process's
        // connection ordinal (see `chaos`).
        return Conn {
            read: Box::new(Chaos::new(r, cfg, "read")),
            write: Box::new(Chaos::new(w, cfg, "write")),
            desc,
            tcp,
            peer_pid,
        };
    }
    #[cfg(feature = "chaos")]
    if let Some(n) = fragment::from_env() {
        return Conn {
            read: Box::new(Fragmenting::new(r, n)),
            write: Box::new(Fragmenting::new(w, n)),
            desc,
            tcp,
            peer_pid,
        };
    }
    Conn { read: Box::new(r), write: Box::new(w), desc, tcp, peer_pid }
}

/// Connect to `addr`.
///
/// # Cancel safety
/// Cancel safe: dropping the future drops the half-open socket.
pub(crate) async fn connect(addr: &Addr) -> io::Result<Conn> {
    match addr {
        Addr::Uds(path) => {
            let s = UnixStream::connect(path).await?;
            let pid = peer_pid(&s.peer_cred()?);
            let (r, w) = s.into_split();
            Ok(boxed(r, w, addr.to_string(), false, pid))
        }
        Addr::Tcp(hp) => {
            let s = TcpStream::connect(hp.as_str()).await?;
            s.set_nodelay(true)?;
            let (r, w) = s.into_split();
            Ok(boxed(r, w, addr.to_string(), true, None))
        }
    }
}

/// A bound listener. A UDS listener unlinks its socket file when dropped,
/// if the file is still the one it bound (its inode): a socket bound at the
/// same path by someone else since — a new registrar at the registry
/// address — is left alone.
#[derive(Debug)]
pub(crate) enum Listener {
    Uds(UnixListener, PathBuf, u64),
    Tcp(TcpListener, Addr),
}

impl Listener {
    /// Bind `addr`. For UDS, a stale socket file at the path (one nobody
    /// accepts on) is replaced; a live one is an `AddrInUse` error.
    /// Synchronous (binding never waits), so it can run outside `async`.
    pub(crate) fn bind(addr: &Addr) -> io::Result<Listener> {
        match addr {
            Addr::Uds(path) => match UnixListener::bind(path) {
                Ok(l) => Ok(Listener::Uds(l, path.clone(), inode(path))),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    use std::os::unix::fs::FileTypeExt;
                    // Never remove what is not a socket (a user's file).
                    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
                    // Only a socket whose connect is refused is stale: a
                    // busy one (a frozen actor's full queue) is in use.
                    if !is_socket || probe_uds(path, PROBE_TIMEOUT) != Probe::Stale {
                        return Err(e);
                    }
                    std::fs::remove_file(path)?;
                    let l = UnixListener::bind(path)?;
                    Ok(Listener::Uds(l, path.clone(), inode(path)))
                }
                Err(e) => Err(e),
            },
            Addr::Tcp(hp) => {
                let std_l = std::net::TcpListener::bind(hp.as_str())?;
                std_l.set_nonblocking(true)?;
                let l = TcpListener::from_std(std_l)?;
                let local = l.local_addr()?;
                Ok(Listener::Tcp(l, Addr::Tcp(local.to_string())))
            }
        }
    }

    /// The address peers connect to (for TCP with port 0: the real port).
    pub(crate) fn addr(&self) -> Addr {
        match self {
            Listener::Uds(_, p, _) => Addr::Uds(p.clone()),
            Listener::Tcp(_, a) => a.clone(),
        }
    }

    /// Accept the next connection. UDS peers running under another uid are
    /// refused here (`SO_PEERCRED`) and never reach the handshake.
    ///
    /// # Cancel safety
    /// Cancel safe (tokio's `accept` is).
    pub(crate) async fn accept(&self) -> io::Result<Conn> {
        loop {
            match self {
                Listener::Uds(l, path, _) => {
                    let (s, _) = l.accept().await?;
                    let cred = s.peer_cred()?;
                    let me = rustix::process::getuid().as_raw();
                    if cred.uid() != me {
                        tracing::warn!(peer_uid = cred.uid(), "refused UDS connection from another user");
                        continue;
                    }
                    let (r, w) = s.into_split();
                    let pid = peer_pid(&cred);
                    let desc = match pid {
                        Some(p) => format!("uds://{} (pid {p})", path.display()),
                        None => format!("uds://{} (pid unknown)", path.display()),
                    };
                    return Ok(boxed(r, w, desc, false, pid));
                }
                Listener::Tcp(l, _) => {
                    let (s, peer) = l.accept().await?;
                    s.set_nodelay(true)?;
                    let (r, w) = s.into_split();
                    return Ok(boxed(r, w, format!("tcp://{peer}"), true, None));
                }
            }
        }
    }
}

/// The pid in a peer's credentials, when the kernel could name one (it
/// reports 0 for a process outside our pid namespace).
fn peer_pid(cred: &tokio::net::unix::UCred) -> Option<u32> {
    cred.pid().and_then(|p| u32::try_from(p).ok()).filter(|p| *p != 0)
}

/// Inode of the file at `path` (0 if there is none).
fn inode(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).map(|m| m.ino()).unwrap_or(0)
}

/// Remove the UDS socket files of `addrs` (TCP addresses have none).
/// Idempotent: a file already gone is not an error.
pub(crate) fn remove_socket_files(addrs: &[Addr]) {
    for a in addrs {
        if let Addr::Uds(p) = a {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// What a connect to a UDS socket file says about whoever listens there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// A listener took the connection.
    Alive,
    /// A listener is there but did not take the connection in time: its
    /// accept queue is full (a frozen or swamped actor). In use.
    Busy,
    /// Nobody listens: the connect was refused. The file is stale.
    Stale,
    /// The probe cannot tell (no file, a path too long, no fd left …).
    Unknown,
}

/// How long [`probe_uds`] waits for a connect that is in progress.
pub(crate) const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

/// Probe the UDS socket at `path` with a non-blocking connect, waiting at
/// most `within`. Never blocks longer: a blocking `connect` to a listener
/// whose accept queue is full (a SIGSTOPped actor after about 4,097
/// connects) waits until the listener accepts, which froze every root
/// started in its socket directory until that actor resumed (issue 14).
/// Linux answers a non-blocking UDS connect at once (`EAGAIN` for a full
/// queue); the wait covers a connect that reports itself in progress.
pub(crate) fn probe_uds(path: &std::path::Path, within: std::time::Duration) -> Probe {
    use rustix::event::{PollFd, PollFlags, Timespec};
    use rustix::io::Errno;
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    // A path too long for a socket address (or holding a NUL): nothing
    // could listen there under this name.
    let Ok(addr) = SocketAddrUnix::new(path) else { return Probe::Unknown };
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    let Ok(fd) = rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, flags, None) else {
        return Probe::Unknown;
    };
    let classify = |errno: Errno| match errno {
        Errno::CONNREFUSED => Probe::Stale,
        Errno::AGAIN => Probe::Busy,
        _ => Probe::Unknown,
    };
    match rustix::net::connect(&fd, &addr) {
        Ok(()) => Probe::Alive,
        Err(Errno::INPROGRESS) => {
            let timeout = Timespec {
                tv_sec: within.as_secs().try_into().unwrap_or(i64::MAX),
                tv_nsec: within.subsec_nanos().into(),
            };
            let mut fds = [PollFd::new(&fd, PollFlags::OUT)];
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                // Not answered in time: someone is there, but busy.
                Ok(0) => Probe::Busy,
                Ok(_) => match rustix::net::sockopt::socket_error(&fd) {
                    Ok(Ok(())) => Probe::Alive,
                    Ok(Err(errno)) => classify(errno),
                    Err(_) => Probe::Unknown,
                },
                Err(_) => Probe::Unknown,
            }
        }
        Err(errno) => classify(errno),
    }
}

/// Remove the socket files in `dir` that nobody listens on any more (their
/// actor was killed before it could unlink them). A live socket answers a
/// connect; a dead one refuses it, whoever it belonged to, so this is safe
/// in a directory shared by several trees. A socket that does not answer
/// in time (a frozen actor whose accept queue is full) is alive but busy:
/// its file is left alone, never deleted. Each probe is non-blocking and
/// bounded ([`probe_uds`]), so one frozen actor cannot hold up the start
/// of every new root in its directory. Returns how many were removed.
pub(crate) fn sweep_stale(dir: &std::path::Path) -> usize {
    use std::os::unix::fs::FileTypeExt;
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for e in rd.flatten() {
        let is_socket = e.file_type().map(|t| t.is_socket()).unwrap_or(false);
        if !is_socket {
            continue;
        }
        let path = e.path();
        match probe_uds(&path, PROBE_TIMEOUT) {
            Probe::Stale => {
                if std::fs::remove_file(&path).is_ok() {
                    tracing::debug!("removed stale socket {}", path.display());
                    removed += 1;
                }
            }
            Probe::Busy => tracing::debug!("socket {} is busy (accept queue full): left alone", path.display()),
            Probe::Alive | Probe::Unknown => {}
        }
    }
    removed
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Uds(_, path, ino) = self
            && inode(path) == *ino
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("furrow-probe-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Alive, stale and busy sockets are told apart, and none of them
    /// blocks: the busy one answered a blocking `connect` only when its
    /// listener accepted.
    #[test]
    fn a_probe_tells_alive_stale_and_busy_apart_without_blocking() {
        let dir = tmp("kinds");
        let alive = dir.join("alive.sock");
        let _l = std::os::unix::net::UnixListener::bind(&alive).unwrap();
        assert_eq!(probe_uds(&alive, PROBE_TIMEOUT), Probe::Alive);

        let stale = dir.join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap()); // the file stays
        assert_eq!(probe_uds(&stale, PROBE_TIMEOUT), Probe::Stale);
        assert_eq!(probe_uds(&dir.join("missing.sock"), PROBE_TIMEOUT), Probe::Unknown);

        // A listener that never accepts, its queue shrunk to one and filled.
        let busy = dir.join("busy.sock");
        let l = std::os::unix::net::UnixListener::bind(&busy).unwrap();
        // SAFETY: listen(2) again on our listening socket resizes its queue.
        assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
        let mut filled = 0;
        while probe_uds(&busy, PROBE_TIMEOUT) == Probe::Alive {
            filled += 1;
            assert!(filled < 100, "the queue never filled");
        }
        let started = Instant::now();
        assert_eq!(probe_uds(&busy, PROBE_TIMEOUT), Probe::Busy);
        assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
        // The sweep removes the stale file only.
        assert_eq!(sweep_stale(&dir), 1);
        assert!(alive.exists() && busy.exists() && !stale.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
