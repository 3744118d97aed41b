//! Accepting connections: the accept loop of each listener, the refusals
//! it makes without reading anything (too many unauthenticated
//! connections, no file descriptor left), and the accepting side of the
//! handshake, which hands a connection either to the spawn waiting for it
//! (a child connecting back) or to a new channel.

use super::{Actor, Handshaken, Link, lock};
use crate::ErrorKind;
use crate::ipc::handshake::drive;
use crate::ipc::transport::{Conn, Listener};
use crate::ipc::{FrameReader, auth, write_msg};
use crate::remote::Failure as RemoteFailure;
use furrow_proto::MsgKind;
use furrow_proto::handshake::{self, Acceptor, Failure, Handshake, Hello, Status};
use futures::FutureExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// How long an accepted connection may take to send its `Aid`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Shortest and longest pause after a failed accept.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// How often a refused connection or a failed accept is logged at most
/// (each line counts those held back since the previous one).
pub(super) const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Accept connections until aborted; each one is handshaken on its own task.
///
/// A TCP connection holds one of the actor's `max_unauthenticated` permits
/// until its peer has authenticated and its `Aid` was checked; one that
/// finds none left is refused at once (an `Error` saying why, then closed),
/// so silent connections can hold at most that many file descriptors.
/// When accept itself fails for want of file descriptors (EMFILE, ENFILE),
/// a spare descriptor kept for the purpose is closed to take the waiting
/// connection and refuse it the same way, naming the cause (instead of
/// leaving the caller to time out), and the loop backs off, 10 ms doubling
/// to 1 s, until an accept succeeds: a full table is never a busy loop.
///
/// Cancel safety: aborted at shutdown; `Listener::accept` is cancel safe,
/// and a connection taken but not yet handed to its task is dropped, which
/// closes it (nothing of it was acted on).
pub(super) async fn accept_loop(actor: Arc<Actor>, listener: Listener) {
    let addr = listener.addr();
    let mut spare = std::fs::File::open("/dev/null").ok();
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        let conn = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                let why = if out_of_fds { fd_exhaustion(&e) } else { e.to_string() };
                if let Some(note) = actor.accept_errors.admit() {
                    tracing::error!(actor = %actor.aid, "cannot accept connections on {addr}: {why}{note}");
                }
                if out_of_fds && let Some(f) = spare.take() {
                    drop(f);
                    // The connection that could not be accepted is waiting:
                    // take it with the freed descriptor (never waiting if it
                    // is not there any more) and tell it why.
                    let taken = match listener.accept().now_or_never() {
                        Some(Ok(conn)) => {
                            let why = format!("actor {} cannot take the connection: {why}", actor.aid);
                            refuse_now(&actor, conn, ErrorKind::OutOfFileDescriptors, &why);
                            true
                        }
                        _ => false,
                    };
                    spare = std::fs::File::open("/dev/null").ok();
                    // One connection refused: the next may be waiting too
                    // (a backlog of them); refuse it without a pause, or it
                    // would wait, and its caller time out, behind every
                    // backoff of those before it. This is no busy loop:
                    // each round takes a connection off the backlog.
                    if taken && spare.is_some() {
                        continue;
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        backoff = ACCEPT_BACKOFF.0;
        if spare.is_none() {
            spare = std::fs::File::open("/dev/null").ok();
        }
        let permit = if conn.tcp {
            match actor.unauthenticated.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    let why = format!(
                        "actor {} has {} connections authenticating already, the most it allows \
                         (Config::max_unauthenticated); try again later",
                        actor.aid, actor.config.max_unauthenticated
                    );
                    refuse_now(&actor, conn, ErrorKind::TooManyUnauthenticated, &why);
                    continue;
                }
            }
        } else {
            None
        };
        let a = actor.clone();
        actor.tracker.spawn(
            async move {
                // A handshake in progress does not hold shutdown up:
                // dropping it drops the half-open connection, which is
                // exactly what shutdown wants (nothing was acted on).
                tokio::select! {
                    () = a.cancel.cancelled() => {}
                    () = handshake_incoming(a.clone(), conn, permit) => {}
                }
            }
            .instrument(crate::log::actor_span()),
        );
    }
}

/// Refuse a connection at once: an `Error` saying why, written only if the
/// socket takes it without waiting (a new connection's send buffer is
/// empty, so it does), then closed. Never waits: the accept loop calls it.
fn refuse_now(actor: &Actor, conn: Conn, kind: ErrorKind, why: &str) {
    let Conn { mut write, desc, .. } = conn;
    if let Some(note) = actor.refusals.admit() {
        tracing::warn!("refusing {desc}: {why}{note}");
    }
    let msg = actor.error_msg(None, RemoteFailure::runtime(kind, why.to_owned()));
    let _ = write_msg(&mut write, &msg, auth::PRE_AUTH_MAX_FRAME).now_or_never();
}

/// What an EMFILE or ENFILE from accept means, and what to do about it.
fn fd_exhaustion(e: &std::io::Error) -> String {
    if e.raw_os_error() == Some(libc::ENFILE) {
        return "the system is out of file descriptors (ENFILE: fs.file-max is reached); \
                connections are refused until some close"
            .into();
    }
    let limit = match rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
        Some(n) => format!("all {n} of its file descriptors (RLIMIT_NOFILE) are open"),
        None => "all of its file descriptors are open".to_owned(),
    };
    format!(
        "this process is out of file descriptors (EMFILE: {limit}); connections are refused until some \
         close: raise its limit (`ulimit -n`), or lower Config::max_unauthenticated"
    )
}

/// The accepting side of a connection's handshake: furrow-proto's
/// [`Acceptor`] decides (the secret over TCP, the `Aid` exchange), this
/// does its I/O and the checks only the runtime can make (the identity the
/// peer claims). Nothing else is read from the connection before it
/// succeeds. A TCP connection holds `permit` (one of the actor's
/// `max_unauthenticated`) until then.
///
/// Cancel safety: dropped at shutdown (raced against the actor's cancel),
/// which drops the half-open connection; nothing of it was acted on.
async fn handshake_incoming(actor: Arc<Actor>, conn: Conn, permit: Option<tokio::sync::OwnedSemaphorePermit>) {
    let desc = conn.desc.clone();
    let Conn { read, mut write, tcp, peer_pid, .. } = conn;
    // A peer can make these recur at will (one per connection): logged at
    // most once per interval, with the count of those held back.
    let refused = |why: &dyn std::fmt::Display| {
        if let Some(note) = actor.refusals.admit() {
            tracing::warn!("refusing {desc}: {why}{note}");
        }
    };
    let auth = if tcp {
        match actor.secret().and_then(|s| Ok((s, auth::nonce()?))) {
            Ok(a) => Some(a),
            Err(e) => {
                if let Some(note) = actor.refusals.admit() {
                    tracing::error!("refusing {desc}: no secret to authenticate it with: {e}{note}");
                }
                return;
            }
        }
    } else {
        None
    };
    let limits =
        handshake::Limits { auth: auth::AUTH_TIMEOUT, aid: HANDSHAKE_TIMEOUT, max_frame: actor.config.max_frame };
    let mut hs = Acceptor::new(actor.hello(), auth, limits, Instant::now());
    // Small frames only until the peer is known (the machine says how
    // large): an unauthenticated peer cannot make us allocate more.
    let mut reader = FrameReader::new(read, hs.read_limit());
    loop {
        if let Err(e) = drive(&mut hs, &mut reader, &mut write).await {
            refused(&format_args!("cannot write to it during the handshake: {e}"));
            return;
        }
        let verdict = match hs.status() {
            // Who it says it is must hold as far as it can be checked: over
            // UDS its pid is the kernel's, and an identity we know (ours,
            // our parent's, a child's) must be claimed whole. Refused with
            // the reason (the machine sends it), before anything of it is
            // acted on.
            Status::Verify(claim) => {
                crate::ipc::identity::check(&claim.aid, peer_pid, actor.known_identity(claim.aid.uuid).as_ref())
            }
            Status::Done => break,
            // A connection that hangs up before saying who it is (a port
            // probe, a dialer that gave up) is not worth a line.
            Status::Failed(Failure::Closed { waiting_for: MsgKind::Aid, .. }) => return,
            Status::Failed(f) => {
                refused(f);
                return;
            }
            Status::Waiting | Status::Configure(_) => return,
        };
        hs.verified(verdict);
        // (The refusal, if any, is written by the next round.)
    }
    let Some(hello) = hs.peer().cloned() else { return };
    // Authenticated and identified: no longer counted, and its frames may
    // be as large as the configuration allows.
    drop(permit);
    reader.set_max_frame(hs.read_limit());
    let Hello { aid: peer, spawn_token, max_dialogs: peer_max_dialogs } = hello;
    match spawn_token {
        Some(t) => {
            // Not removed here: the spawn removes it once the process it
            // spawned presented it (an intruder presenting it is refused
            // there, and must not make the real child's token unknown).
            let waiting = lock(&actor.pending_spawns).get(&t).cloned();
            match waiting {
                Some(tx) => {
                    if tx
                        .try_send(Handshaken { reader, write, peer: peer.clone(), peer_pid, peer_max_dialogs })
                        .is_err()
                    {
                        refused(&format_args!("too many connections presenting the spawn token of {peer}"));
                    }
                }
                None => refused(&format_args!("unknown spawn token from {peer}")),
            }
        }
        None => {
            actor.open_channel(Handshaken { reader, write, peer, peer_pid, peer_max_dialogs }, Link::Accepted);
        }
    }
}
