//! Where a child's stdout and stderr go ([`Output`]), and the relay that
//! copies a child's lines to this process's own stdout or stderr, each
//! line prefixed with the actor's name.
//!
//! A relay is two parts, so that neither side can hold up the other:
//!
//! - the *reader*, a tokio task, reads the child's pipe as fast as the
//!   child writes, cuts it into lines and queues them. It never waits for
//!   the queue: when the queue holds [`QUEUE_MAX`] bytes, the line is
//!   dropped and counted, and a marker line saying how many were dropped
//!   takes the place of the first ones lost. So a slow terminal (or a
//!   parent's stdout that nobody reads) never blocks the child.
//! - the *writer*, a thread of its own, takes whole lines from the queue
//!   and writes them, several at most [`LINE_MAX`] bytes at a time, one
//!   `write` each. A thread, not a blocking tokio task: a write to a
//!   terminal that is stopped can block forever, and a runtime waits for
//!   its blocking tasks when it shuts down.
//!
//! The reader reads to EOF, after the child's exit too: the last lines of
//! a child that crashed are still in the pipe, and a last line without a
//! newline is emitted with one. The child's reaper waits for the relay,
//! bounded by [`DRAIN_BOUND`] from the exit: a process the child started
//! (which inherits its stdout) may hold the pipe open for ever, and then
//! the relay is stopped and says so.

use crate::sync::lock;
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Where one output stream (stdout or stderr) of a child actor goes:
/// [`SpawnOptions::stdout`](crate::SpawnOptions::stdout),
/// [`SpawnOptions::stderr`](crate::SpawnOptions::stderr).
///
/// ```no_run
/// use furrow::{Output, SpawnOptions};
///
/// # async fn demo() -> furrow::Result<()> {
/// furrow::open_nursery(async |n| {
///     // Every line the child prints arrives on our stdout as "[indexer] …".
///     let indexer = n.start_actor_with("indexer", SpawnOptions::new().stdout(Output::relay())).await?;
///     // Its stderr goes to a log file (appended to), its stdout nowhere.
///     let opts = SpawnOptions::new().stdout(Output::Null).stderr(Output::file("/var/log/crawler.log"));
///     let crawler = n.start_actor_with("crawler", opts).await?;
///     # let _ = (indexer, crawler);
///     Ok(())
/// })
/// .await
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// The child writes to this process's own stream, unchanged (the
    /// default). So do the processes it starts.
    #[default]
    Inherit,
    /// The child's lines are copied to this process's own stream (its
    /// stdout for the child's stdout, its stderr for the child's stderr),
    /// each starting with `prefix`: by default the actor's name in
    /// brackets and a space, `[worker] `. See [`Output::relay`] for the
    /// rules.
    Relay {
        /// What starts each line; `None` for `[name] `. At most 1 KiB.
        prefix: Option<String>,
    },
    /// The child writes to this file, created if needed (mode `0o666`
    /// less the umask) and appended to, never truncated. A relative path
    /// is relative to this process's working directory, not the child's.
    File(PathBuf),
    /// The child's output is discarded (`/dev/null`).
    Null,
}

impl Output {
    /// The child's lines, relayed to this process's own stream with the
    /// prefix `[name] ` (the actor's name).
    ///
    /// What a relay keeps, and what it gives up to keep the child going:
    ///
    /// - **Lines stay whole, in order.** Each relayed line is written with
    ///   one `write` call, so lines of several actors (and of this process,
    ///   if it writes whole lines too) never mix within a line; each
    ///   actor's lines keep their order. A line longer than 4096 bytes with
    ///   its prefix (`PIPE_BUF`, the size a pipe writes at once) is cut
    ///   into pieces of that size, each on a line of its own with the
    ///   prefix, at a UTF-8 character boundary when there is one in the
    ///   last 3 bytes of the piece.
    /// - **The child is never blocked by a slow reader.** The pipe is read
    ///   as fast as the child writes. When this process's stream falls
    ///   more than 1 MiB behind (a slow or stopped terminal, a pipe nobody
    ///   reads), further lines are dropped until the backlog has room, and
    ///   a line `[name] [furrow: N line(s) dropped: stdout fell 1 MiB
    ///   behind]` stands where they were.
    /// - **No last line is lost.** The pipe is read to its end after the
    ///   child exits, however it exits (a crash included); a last line
    ///   without a newline is relayed with one. The nursery returns, and
    ///   a failed start returns its error, only after the relay is done.
    /// - **A process the child started writes through the relay too**: it
    ///   inherits the child's stdout and stderr, so its lines carry the
    ///   child's prefix (a child actor that relays its own children's
    ///   lines gives `[parent] [child] …`). One that outlives the child
    ///   and keeps the pipe open holds the relay up for at most 1 second
    ///   after the child's exit (and 0.1 s more for the relay's last lines
    ///   to be written); then the relay is closed, with a line
    ///   `[name] [furrow: relay closed: …]`, and that process's next write
    ///   fails (`EPIPE`). Give such a process output of its own.
    ///
    /// ```no_run
    /// use furrow::{Output, SpawnOptions};
    /// # async fn demo() -> furrow::Result<()> {
    /// furrow::open_nursery(async |n| {
    ///     let opts = SpawnOptions::new().stdout(Output::relay()).stderr(Output::relay());
    ///     let _worker = n.start_actor_with("worker", opts).await?; // "[worker] …" on both streams
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    pub fn relay() -> Output {
        Output::Relay { prefix: None }
    }

    /// The child's lines, relayed as by [`Output::relay`], each starting
    /// with `prefix` (put the separator in it: `"db | "`). A prefix over
    /// 1 KiB fails the start with [`Error::Spawn`](crate::Error::Spawn).
    ///
    /// ```no_run
    /// use furrow::{Output, SpawnOptions};
    /// # async fn demo() -> furrow::Result<()> {
    /// furrow::open_nursery(async |n| {
    ///     for shard in 0..4 {
    ///         let opts = SpawnOptions::new().stdout(Output::relay_with_prefix(format!("shard {shard} | ")));
    ///         let _p = n.start_actor_with(format!("shard-{shard}"), opts).await?;
    ///     }
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    pub fn relay_with_prefix(prefix: impl Into<String>) -> Output {
        Output::Relay { prefix: Some(prefix.into()) }
    }

    /// The child writes to the file at `path`, created if it does not
    /// exist and appended to if it does (so several actors, or several
    /// runs, can share one log). Opened by this process when the child
    /// starts: a file that cannot be opened fails the start with
    /// [`Error::Spawn`](crate::Error::Spawn) naming it.
    ///
    /// ```no_run
    /// use furrow::{Output, SpawnOptions};
    /// # async fn demo() -> furrow::Result<()> {
    /// furrow::open_nursery(async |n| {
    ///     let log = Output::file("/tmp/worker.log");
    ///     let _p = n.start_actor_with("worker", SpawnOptions::new().stdout(log.clone()).stderr(log)).await?;
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    pub fn file(path: impl Into<PathBuf>) -> Output {
        Output::File(path.into())
    }

    /// What the spawn needs to start the child with this output: the
    /// child's end (`None`: inherit), and a relay waiting for its pipe.
    /// `Err` says why the start must fail.
    pub(crate) fn prepare(&self, stream: Stream, name: &str) -> Result<Prepared, String> {
        match self {
            Output::Inherit => Ok(Prepared { stdio: None, relay: None }),
            Output::Null => Ok(Prepared { stdio: Some(Stdio::null()), relay: None }),
            Output::File(path) => Ok(Prepared { stdio: Some(Stdio::from(open_append(path, stream)?)), relay: None }),
            Output::Relay { prefix } => {
                let prefix = relay_prefix(prefix.as_deref(), name, stream)?;
                let pending = Pending::new(stream, prefix.into_bytes(), std_dest(stream), None)
                    .map_err(|e| format!("cannot start the relay of its {stream}: {e}"))?;
                Ok(Prepared { stdio: Some(Stdio::piped()), relay: Some(pending) })
            }
        }
    }
}

/// The last lines of a stream, kept by its relay (a launcher's stderr: what
/// ssh said when a start fails).
pub(crate) type Tail = Arc<Mutex<VecDeque<String>>>;

/// Lines a [`Tail`] keeps, and the bytes of each.
const TAIL_LINES: usize = 20;
const TAIL_LINE_MAX: usize = 512;

impl Output {
    /// As [`prepare`](Self::prepare), but always through a relay that keeps
    /// the last lines in `tail`: for the stderr of a child started through a
    /// launcher, where a failed start quotes what the launcher (ssh) said.
    /// `Inherit` becomes a relay to this process's stderr without a
    /// prefix, `Null` one that writes nowhere, `File` one that appends to
    /// the file.
    pub(crate) fn prepare_captured(&self, stream: Stream, name: &str, tail: Tail) -> Result<Prepared, String> {
        let (prefix, dest): (String, Box<dyn Write + Send>) = match self {
            Output::Inherit => (String::new(), std_dest(stream)),
            Output::Null => (String::new(), Box::new(std::io::sink())),
            Output::File(path) => (String::new(), Box::new(open_append(path, stream)?)),
            Output::Relay { prefix } => (relay_prefix(prefix.as_deref(), name, stream)?, std_dest(stream)),
        };
        let pending = Pending::new(stream, prefix.into_bytes(), dest, Some(tail))
            .map_err(|e| format!("cannot start the relay of its {stream}: {e}"))?;
        Ok(Prepared { stdio: Some(Stdio::piped()), relay: Some(pending) })
    }
}

/// `path` opened for appending (created if missing): a child's output file.
fn open_append(path: &std::path::Path, stream: Stream) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {} for its {stream}: {e}", path.display()))
}

/// A relay's prefix: the one given, else `[name] `; at most [`PREFIX_MAX`].
fn relay_prefix(prefix: Option<&str>, name: &str, stream: Stream) -> Result<String, String> {
    let prefix = prefix.map_or_else(|| format!("[{name}] "), str::to_owned);
    if prefix.len() > PREFIX_MAX {
        return Err(format!(
            "the prefix of its {stream} is {} bytes; a prefix is at most {PREFIX_MAX} bytes",
            prefix.len()
        ));
    }
    Ok(prefix)
}

/// This process's own stdout or stderr, as a relay's destination.
fn std_dest(stream: Stream) -> Box<dyn Write + Send> {
    match stream {
        Stream::Stdout => Box::new(std::io::stdout()),
        Stream::Stderr => Box::new(std::io::stderr()),
    }
}

/// A written line with its prefix and newline is at most this long: a
/// pipe's `PIPE_BUF`, the most it writes at once (writes no longer than
/// that are never interleaved with other writers' on a pipe; a terminal and
/// a file opened for appending do not interleave within one `write`).
pub(crate) const LINE_MAX: usize = 4096;

/// The longest prefix: a line keeps at least 3 KiB of the child's text.
pub(crate) const PREFIX_MAX: usize = 1024;

/// Bytes of lines a relay holds for a destination that is slower than the
/// child: beyond, lines are dropped (and counted). 1 MiB is seconds of a
/// busy actor's log, and bounds what a stopped terminal costs per stream.
pub(crate) const QUEUE_MAX: usize = 1 << 20;

/// How long after a child's exit its relay may still wait for the end of
/// its pipe, and for its last lines to be written.
pub(crate) const DRAIN_BOUND: Duration = Duration::from_secs(1);

/// How long a relay's writer is still given after its reader ended, when
/// that was at [`DRAIN_BOUND`] (or later): time to write the last lines,
/// the one saying the relay was closed among them.
pub(crate) const WRITE_GRACE: Duration = Duration::from_millis(100);

/// Bytes read from a pipe at once.
const READ_BUF: usize = 64 * 1024;

/// The child's stream a relay carries, and this process's stream it goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl std::fmt::Display for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        })
    }
}

/// One output, ready for the spawn.
pub(crate) struct Prepared {
    /// The child's end; `None` to inherit ours.
    pub(crate) stdio: Option<Stdio>,
    /// The relay, when the child's end is a pipe to be relayed.
    pub(crate) relay: Option<Pending>,
}

/// A relay whose writer runs, waiting for the child's pipe. Dropped
/// without a pipe (the process could not be started), its writer ends.
pub(crate) struct Pending {
    sink: Sink,
    written: oneshot::Receiver<()>,
}

impl Pending {
    fn new(
        stream: Stream,
        prefix: Vec<u8>,
        dest: Box<dyn Write + Send>,
        tail: Option<Tail>,
    ) -> std::io::Result<Pending> {
        let queue = Arc::new(Queue::default());
        let (done, written) = oneshot::channel();
        let q = queue.clone();
        std::thread::Builder::new()
            .name(format!("furrow-relay-{stream}"))
            .spawn(move || write_lines(&q, dest, done))?;
        Ok(Pending { sink: Sink { queue, prefix, stream, tail }, written })
    }

    /// Start reading the child's `pipe`.
    pub(crate) fn start<R: AsyncRead + Unpin + Send + 'static>(self, pipe: R) -> Relay {
        let stop = CancellationToken::new();
        let stream = self.sink.stream;
        let reader = tokio::spawn(tracing::Instrument::instrument(
            read_lines(pipe, self.sink, stop.clone()),
            crate::log::actor_span(),
        ));
        Relay { reader, stop, written: self.written, stream }
    }
}

/// A running relay, owned by the child's reaper.
#[derive(Debug)]
pub(crate) struct Relay {
    reader: JoinHandle<()>,
    stop: CancellationToken,
    written: oneshot::Receiver<()>,
    stream: Stream,
}

/// Wait for `relays` (of child `name`, which has exited) to read their
/// pipes to the end and write their last lines: at most [`DRAIN_BOUND`],
/// or [`WRITE_GRACE`] after the last reader ended if that is later (so
/// the line saying a relay was closed is written too). A reader still
/// running at the bound is stopped (its pipe closed) and waited for; a
/// writer still writing after its time (to a stopped terminal) is left to
/// finish on its own, as it holds no file descriptor.
///
/// # Cancel safety
/// Dropping the future drops the readers' handles, not the readers: they
/// run on to the end of their pipes.
pub(crate) async fn finish(mut relays: Vec<Relay>, name: &str) {
    let deadline = tokio::time::Instant::now() + DRAIN_BOUND;
    for r in &mut relays {
        if tokio::time::timeout_at(deadline, &mut r.reader).await.is_err() {
            tracing::warn!(
                child = name,
                "its {} is still open {DRAIN_BOUND:?} after its exit (a process it started holds it): relay closed",
                r.stream
            );
            r.stop.cancel();
            // Prompt: the reader's select is biased toward the stop.
            let _ = (&mut r.reader).await;
        }
    }
    let deadline = deadline.max(tokio::time::Instant::now() + WRITE_GRACE);
    for r in relays {
        let _ = tokio::time::timeout_at(deadline, r.written).await;
    }
}

/// The lines between a relay's reader and its writer.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    /// Signalled when a line is queued or the queue is closed.
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    lines: VecDeque<Vec<u8>>,
    /// Bytes in `lines`.
    bytes: usize,
    /// Lines dropped since the last one queued.
    dropped: u64,
    /// The reader is done: nothing more will be queued.
    closed: bool,
}

/// The reader's end of the queue: makes lines of the child's text. Closes
/// the queue when dropped, so the writer ends however the reader does.
struct Sink {
    queue: Arc<Queue>,
    prefix: Vec<u8>,
    stream: Stream,
    /// The last lines, kept for an error message (a launcher's stderr).
    tail: Option<Tail>,
}

impl Sink {
    /// Queue one line of the child's text (without its newline), or drop
    /// it if the queue is full. Never waits.
    fn line(&self, text: &[u8]) {
        if let Some(tail) = &self.tail {
            let mut t = lock(tail);
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            let shown = if text.len() <= TAIL_LINE_MAX { text } else { &text[..cut(text, TAIL_LINE_MAX)] };
            t.push_back(String::from_utf8_lossy(shown).into_owned());
        }
        let len = self.prefix.len() + text.len() + 1;
        let mut st = lock(&self.queue.state);
        if st.bytes + len > QUEUE_MAX {
            st.dropped += 1;
            return;
        }
        self.flush_dropped(&mut st);
        let mut line = Vec::with_capacity(len);
        line.extend_from_slice(&self.prefix);
        line.extend_from_slice(text);
        line.push(b'\n');
        st.bytes += len;
        st.lines.push_back(line);
        drop(st);
        self.queue.ready.notify_one();
    }

    /// Queue a line of furrow's own, whatever the queue holds (it is
    /// short, and there are at most a few per relay).
    fn note(&self, text: &str) {
        let mut st = lock(&self.queue.state);
        self.flush_dropped(&mut st);
        self.push_note(&mut st, text);
        drop(st);
        self.queue.ready.notify_one();
    }

    /// The marker standing where lines were dropped, if any were.
    fn flush_dropped(&self, st: &mut QueueState) {
        if st.dropped > 0 {
            let text = format!(
                "[furrow: {} line(s) dropped: {} fell {} MiB behind]",
                st.dropped,
                self.stream,
                QUEUE_MAX >> 20
            );
            st.dropped = 0;
            self.push_note(st, &text);
        }
    }

    fn push_note(&self, st: &mut QueueState, text: &str) {
        let mut line = Vec::with_capacity(self.prefix.len() + text.len() + 1);
        line.extend_from_slice(&self.prefix);
        line.extend_from_slice(text.as_bytes());
        line.push(b'\n');
        st.bytes += line.len();
        st.lines.push_back(line);
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let mut st = lock(&self.queue.state);
        self.flush_dropped(&mut st);
        st.closed = true;
        drop(st);
        self.queue.ready.notify_one();
    }
}

/// The writer thread: whole lines from `queue` to `dest`, until the queue
/// is closed and empty; then `done`.
fn write_lines(queue: &Queue, mut dest: Box<dyn Write + Send>, done: oneshot::Sender<()>) {
    let mut batch = Vec::with_capacity(LINE_MAX);
    loop {
        {
            let mut st = lock(&queue.state);
            while st.lines.is_empty() && !st.closed {
                st = queue.ready.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            if st.lines.is_empty() {
                break;
            }
            // As many whole lines as fit in one atomic write (at least one:
            // a line is never longer than LINE_MAX, a note barely).
            batch.clear();
            while let Some(front) = st.lines.front() {
                if !batch.is_empty() && batch.len() + front.len() > LINE_MAX {
                    break;
                }
                if let Some(line) = st.lines.pop_front() {
                    st.bytes -= line.len();
                    batch.extend_from_slice(&line);
                }
            }
        }
        // Outside the lock: the reader never waits for a write. A failed
        // write (our stream closed) loses these lines; the queue is still
        // drained, so the child is still never blocked.
        let _ = dest.write_all(&batch);
    }
    let _ = dest.flush();
    let _ = done.send(());
}

/// The reader task: the child's pipe, cut into lines, into the queue,
/// until the pipe's end (or `stop`).
async fn read_lines<R: AsyncRead + Unpin>(mut pipe: R, sink: Sink, stop: CancellationToken) {
    let mut lines = Lines::new(LINE_MAX - 1 - sink.prefix.len());
    let mut buf = vec![0u8; READ_BUF];
    let mut stopped = false;
    loop {
        // `biased` toward the stop: a pipe that never runs dry (a process
        // still writing to it) must not keep the relay from ending. A lost
        // `read` loses nothing (it is cancel safe).
        let r = tokio::select! {
            biased;
            () = stop.cancelled() => {
                stopped = true;
                break;
            }
            r = pipe.read(&mut buf) => r,
        };
        match r {
            Ok(0) => break,
            Ok(n) => lines.feed(&buf[..n], &mut |l| sink.line(l)),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                sink.note(&format!("[furrow: reading its {} failed: {e}]", sink.stream));
                break;
            }
        }
    }
    // The pipe is closed before anyone learns the relay is done (no fd
    // outlives the relay).
    drop(pipe);
    lines.finish(&mut |l| sink.line(l));
    if stopped {
        sink.note(&format!(
            "[furrow: relay closed: its {} was still open {} s after the actor exited (held by a process it started)]",
            sink.stream,
            DRAIN_BOUND.as_secs()
        ));
    }
    // Dropping the sink closes the queue: the writer ends once it is empty.
}

/// Cuts a byte stream into lines of at most `max` bytes.
///
/// Where a long line is cut depends only on its bytes, never on how they
/// were read: a partial line is cut as soon as it is known to be longer
/// than `max`, at the same place a whole line would be.
struct Lines {
    partial: Vec<u8>,
    max: usize,
}

impl Lines {
    fn new(max: usize) -> Lines {
        Lines { partial: Vec::new(), max: max.max(4) }
    }

    /// Emit every line `data` completes, and the pieces of a partial line
    /// that is too long already.
    fn feed(&mut self, mut data: &[u8], emit: &mut impl FnMut(&[u8])) {
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                self.emit_line(&data[..i], emit);
            } else {
                self.partial.extend_from_slice(&data[..i]);
                let line = std::mem::take(&mut self.partial);
                self.emit_line(&line, emit);
                // Keep the allocation for the next partial line.
                self.partial = line;
                self.partial.clear();
            }
            data = &data[i + 1..];
        }
        self.partial.extend_from_slice(data);
        while self.partial.len() > self.max {
            let k = cut(&self.partial, self.max);
            emit(&self.partial[..k]);
            self.partial.drain(..k);
        }
    }

    /// The end of the stream: a last line without a newline still counts.
    fn finish(&mut self, emit: &mut impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit_line(&line, emit);
        }
    }

    fn emit_line(&self, mut line: &[u8], emit: &mut impl FnMut(&[u8])) {
        while line.len() > self.max {
            let k = cut(line, self.max);
            emit(&line[..k]);
            line = &line[k..];
        }
        emit(line);
    }
}

/// Where to cut `s` (longer than `max`): at `max`, or up to 3 bytes before
/// it when that is where a UTF-8 character starts, so a piece of valid
/// text is valid text. Only `s[..=max]` is looked at.
fn cut(s: &[u8], max: usize) -> usize {
    (max - 3..=max).rev().find(|&k| s[k] & 0xC0 != 0x80).unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(chunks: &[&[u8]], max: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut lines = Lines::new(max);
        for c in chunks {
            lines.feed(c, &mut |l| out.push(l.to_vec()));
        }
        lines.finish(&mut |l| out.push(l.to_vec()));
        out
    }

    #[test]
    fn lines_are_cut_the_same_however_they_were_read() {
        let text: Vec<u8> = b"short\n".iter().chain(&[b'x'; 25]).chain(b"\n\nend".iter()).copied().collect();
        let whole = lines_of(&[&text], 10);
        assert_eq!(whole, [&b"short"[..], &[b'x'; 10], &[b'x'; 10], &[b'x'; 5], b"", b"end"]);
        for split in 0..text.len() {
            let (a, b) = text.split_at(split);
            assert_eq!(lines_of(&[a, b], 10), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(lines_of(&bytes, 10), whole);
    }

    #[test]
    fn a_long_line_is_cut_at_a_character_boundary() {
        // "é" is 2 bytes: a cut at 9 would split the fifth one.
        let text = "aéééééé".as_bytes();
        let pieces = lines_of(&[text], 10);
        assert!(pieces.iter().all(|p| std::str::from_utf8(p).is_ok()), "{pieces:?}");
        assert_eq!(pieces.concat(), text);
        // No boundary near the cut: cut at `max` anyway.
        let pieces = lines_of(&[&[0x80; 12]], 10);
        assert_eq!(pieces, [vec![0x80; 10], vec![0x80; 2]]);
    }

    #[test]
    fn a_last_line_without_a_newline_is_kept() {
        assert_eq!(lines_of(&[b"a\nb"], 10), [b"a", b"b"]);
        assert_eq!(lines_of(&[b"a\n"], 10), [b"a"]);
        assert!(lines_of(&[b""], 10).is_empty());
    }

    /// Whether a [`Gate`] is open, and what went through it.
    type GateState = (bool, Vec<u8>);

    /// A destination that takes nothing until told to.
    #[derive(Clone, Default)]
    struct Gate(Arc<(Mutex<GateState>, Condvar)>);

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (m, cv) = &*self.0;
            let mut g = cv.wait_while(lock(m), |(open, _)| !*open).unwrap_or_else(PoisonError::into_inner);
            g.1.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Gate {
        fn open(&self) {
            lock(&self.0.0).0 = true;
            self.0.1.notify_all();
        }
        fn text(&self) -> String {
            String::from_utf8_lossy(&lock(&self.0.0).1).into_owned()
        }
    }

    #[tokio::test]
    async fn a_stalled_destination_drops_lines_and_says_how_many() {
        let gate = Gate::default();
        let pending = Pending::new(Stream::Stdout, b"[w] ".to_vec(), Box::new(gate.clone()), None).expect("thread");
        let queue = pending.sink.queue.clone();
        let (mut tx, rx) = tokio::io::duplex(1 << 16);
        let relay = pending.start(rx);
        // 3 MiB of 100-byte lines while nothing is written: the reader
        // must take them all (the duplex would block us otherwise).
        let line = format!("{}\n", "x".repeat(99));
        let n = 3 * (1 << 20) / line.len();
        for _ in 0..n {
            tokio::io::AsyncWriteExt::write_all(&mut tx, line.as_bytes()).await.expect("write");
        }
        gate.open();
        // Once the backlog is written, the last words fit.
        while !lock(&queue.state).lines.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::io::AsyncWriteExt::write_all(&mut tx, b"last words").await.expect("write");
        drop(tx);
        finish(vec![relay], "w").await;
        let text = gate.text();
        let kept = text.lines().filter(|l| l.ends_with('x')).count();
        let marker = text.lines().find(|l| l.contains("dropped")).expect("a marker");
        let dropped: usize =
            marker.split_whitespace().nth(2).and_then(|d| d.parse().ok()).expect("a count in the marker");
        assert_eq!(kept + dropped, n, "{marker}");
        assert!(dropped > 0 && kept > 0, "kept {kept}, dropped {dropped}");
        assert_eq!(text.lines().last(), Some("[w] last words"));
        assert!(text.lines().all(|l| l.starts_with("[w] ")));
    }

    #[tokio::test]
    async fn a_pipe_held_open_is_closed_after_the_bound() {
        let gate = Gate::default();
        gate.open();
        let pending = Pending::new(Stream::Stderr, b"[w] ".to_vec(), Box::new(gate.clone()), None).expect("thread");
        let (mut tx, rx) = tokio::io::duplex(1024);
        let relay = pending.start(rx);
        tokio::io::AsyncWriteExt::write_all(&mut tx, b"one\ntwo").await.expect("write");
        let start = std::time::Instant::now();
        finish(vec![relay], "w").await;
        assert!(start.elapsed() < DRAIN_BOUND + Duration::from_millis(500), "{:?}", start.elapsed());
        // The reader is gone: the writer's end sees a closed pipe.
        assert!(tokio::io::AsyncWriteExt::write_all(&mut tx, b"more\n").await.is_err());
        // Its last lines were written within the grace.
        let text = gate.text();
        assert!(text.starts_with("[w] one\n[w] two\n[w] [furrow: relay closed: its stderr"), "{text}");
    }
}
