//! The I/O of a handshake: the decisions are furrow-proto's
//! ([`furrow_proto::handshake`]: one state machine per side); this writes
//! what the machine says to send, reads a frame while it waits (of the
//! size it allows, until its deadline), and hands it over with the time.

use super::channel::peer_gone;
use super::reader::{FrameReader, ReadError, write_msg};
use super::transport::BoxWrite;
use furrow_proto::handshake::{Handshake, Status};
use std::time::{Duration, Instant};

/// How long a refusal may take to write: a peer that does not read must
/// not hold the task that refuses it.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

/// Run `hs` until it stops waiting for the peer: until it is done, has
/// failed, or needs the runtime (an identity to check, a configuration to
/// apply). `Err` is a failed write (the machine saw nothing of it).
///
/// # Cancel safety
/// Not cancel safe: a write dropped half-way leaves half a frame on the
/// socket, so a caller dropping this drops the connection with it (every
/// caller does: a handshake dropped is a connection abandoned). Reads
/// are cancel safe (`FrameReader::next`).
pub(crate) async fn drive<H: Handshake>(
    hs: &mut H,
    reader: &mut FrameReader,
    write: &mut BoxWrite,
) -> std::io::Result<()> {
    let mut limit = None;
    loop {
        flush(hs, write).await?;
        if !matches!(hs.status(), Status::Waiting) {
            return Ok(());
        }
        let want = hs.read_limit();
        if limit != Some(want) {
            // Only between frames, and only when it changes: the reader's
            // buffer may hold the start of the next frame.
            reader.set_max_frame(want);
            limit = Some(want);
        }
        let read = match hs.deadline() {
            Some(at) => tokio::time::timeout_at(tokio::time::Instant::from_std(at), reader.next()).await,
            None => Ok(reader.next().await),
        };
        let now = Instant::now();
        match read {
            Err(_) => hs.on_timeout(now),
            Ok(Ok(Some(msg))) => hs.on_msg(now, msg),
            Ok(Ok(None)) => hs.on_closed(None),
            // A reset is a hang-up, not garbage: the peer went away (often
            // an actor that died a moment ago, whose listener still had
            // us in its backlog).
            Ok(Err(ReadError::Io(e))) if peer_gone(&e).is_some() => hs.on_closed(Some(format!("{}", e.kind()))),
            Ok(Err(e)) => hs.on_unreadable(e.to_string()),
        }
    }
}

/// Write everything the machine has to send, each under the frame limit
/// it allows now. After a failure only a refusal is left, and it is
/// written at most [`REFUSAL_WRITE`] long, its failure ignored (the
/// handshake failed already).
///
/// # Cancel safety
/// Not cancel safe, as [`drive`].
pub(crate) async fn flush<H: Handshake>(hs: &mut H, write: &mut BoxWrite) -> std::io::Result<()> {
    while let Some(msg) = hs.poll_send() {
        let max = hs.read_limit();
        if matches!(hs.status(), Status::Failed(_)) {
            let _ = tokio::time::timeout(REFUSAL_WRITE, write_msg(write, &msg, max)).await;
            continue;
        }
        write_msg(write, &msg, max).await?;
    }
    Ok(())
}
