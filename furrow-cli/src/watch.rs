//! `furrow tree --watch`: the tree, redrawn every interval with each
//! actor's stats.
//!
//! Each frame lists the actors (through the registrar), then asks every
//! one of them for its stats at once, over a connection of its own, each
//! bounded by the interval (at least a second); one that does not answer
//! is shown as gone. Rates come from two successive answers of the same
//! actor. On a terminal the frame is redrawn in place (cursor home, clear,
//! cursor hidden until the command ends); otherwise frames follow each
//! other, separated by a blank line.

use crate::render::{self, Sample, UuidWidth};
use furrow::ActorInfo;
use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// What the watch was asked for.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    pub(crate) interval: Duration,
    /// Stop after this many frames.
    pub(crate) count: Option<u64>,
    pub(crate) width: UuidWidth,
    /// Bound on each listing.
    pub(crate) within: Duration,
    /// Mark actors with a dialog waiting this long.
    pub(crate) stuck_after: Duration,
    /// The actor whose dump follows the tree in each frame.
    pub(crate) dump: Option<String>,
}

/// Hide the cursor now, show it again when dropped (however the watch
/// ends: Ctrl-C, an error, the last frame).
struct Cursor {
    tty: bool,
}

impl Cursor {
    fn hide(tty: bool) -> Cursor {
        if tty {
            print!("\x1b[?25l");
        }
        Cursor { tty }
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        if self.tty {
            print!("\x1b[?25h");
            let _ = std::io::stdout().flush();
        }
    }
}

/// Draw frames until Ctrl-C, the frame count, or an error (the one-line
/// message). Runs inside the command's root actor.
pub(crate) async fn run(w: Watch) -> Result<(), String> {
    let tty = std::io::stdout().is_terminal();
    let _cursor = Cursor::hide(tty);
    // Ctrl-C ends the watch like its last frame: the frame being built is
    // dropped (its connections close), the cursor comes back, and the
    // command's actor shuts down normally.
    tokio::select! {
        r = frames(w, tty) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn frames(w: Watch, tty: bool) -> Result<(), String> {
    let me = furrow::local_aid().map_err(|e| e.to_string())?;
    let mut prev: HashMap<Uuid, Sample> = HashMap::new();
    let mut drawn = 0u64;
    loop {
        let started = Instant::now();
        let actors = match tokio::time::timeout(w.within, furrow::list_actors()).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return Err(format!("cannot list the actors: {e}")),
            Err(_) => return Err(format!("the registrar did not answer within {:?}", w.within)),
        };
        let bound = w.interval.max(Duration::from_secs(1));
        let now = sample_all(&actors, bound).await;
        let mut body = render::watch_frame(&actors, &now, &prev, &me, w.width, w.stuck_after);
        if let Some(sel) = &w.dump {
            // Chosen anew each frame: the actor may come, go, or restart.
            body.push('\n');
            match crate::dump::select(&actors, std::slice::from_ref(sel)) {
                Ok(chosen) => body += &crate::dump::text(&crate::dump::dump_all(&chosen, bound).await),
                Err(why) => body += &format!("{why}\n"),
            }
        }
        let frame = if tty {
            format!("\x1b[H\x1b[2J{body}")
        } else if drawn == 0 {
            body
        } else {
            format!("\n{body}")
        };
        let mut out = std::io::stdout().lock();
        match out.write_all(frame.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => {}
            // `furrow tree --watch | head`: the reader went away.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(format!("cannot write the output: {e}")),
        }
        drop(out);
        drawn += 1;
        if w.count.is_some_and(|n| drawn >= n) {
            return Ok(());
        }
        prev = now;
        tokio::time::sleep_until(started + w.interval).await;
    }
}

/// Every actor's stats, asked all at once, each bounded by `bound`.
pub(crate) async fn sample_all(actors: &[ActorInfo], bound: Duration) -> HashMap<Uuid, Sample> {
    let asks = actors.iter().map(|a| async move {
        let ask = furrow::connect_actor(a, async |p| p.stats().await);
        let sample = match tokio::time::timeout(bound, ask).await {
            Ok(Ok(s)) => Sample::Live(s),
            // Ended between the listing and the query, or unreachable.
            Ok(Err(_)) | Err(_) => Sample::Gone,
        };
        (a.aid.uuid, sample)
    });
    futures::future::join_all(asks).await.into_iter().collect()
}
