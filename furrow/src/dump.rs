//! What a live actor is doing: [`Portal::dump`], [`local_dump`], SIGUSR1,
//! and `furrow dump`.
//!
//! When a tree hangs, the first question is "who is waiting on whom?". A
//! dump answers it for one actor: every dialog open on each of its channels
//! (call or context, which side, which function, how old, where its
//! protocol is, what this side is parked on and for how long, the credit
//! each way, what its receive window holds, any cancel asked), its
//! children, and its channels with what they have queued. Dumps of both
//! ends of a stuck dialog name each other: the opener's `cid 7 to worker`
//! is the callee's `cid 7 from root`.
//!
//! Every actor serves the runtime request `furrow::runtime::dump` (like
//! `stats`, whatever its `enable_modules`), writes its dump to its stderr
//! when it receives SIGUSR1, and the `furrow` command prints the dumps of
//! a running system (`furrow dump [ACTOR…] [--json]`). The dump is read
//! under the runtime's short locks, each taken alone; nothing is recorded
//! in the background but two relaxed stores when a dialog's task parks.
//!
//! The text form is for a person ([`ActorDump`]'s `Display`); the serde
//! form (`--json`) carries the same fields. docs/guide.md, "When a tree
//! hangs", shows how to read one.
//!
//! ```no_run
//! # async fn demo() -> furrow::Result<()> {
//! furrow::open_nursery(async |n| {
//!     let p = n.start_actor("worker").await?;
//!     let d = p.dump().await?;
//!     for dialog in &d.dialogs {
//!         if dialog.waiting.as_ref().is_some_and(|w| w.for_.as_secs() > 10) {
//!             eprintln!("stuck? {}", dialog);
//!         }
//!     }
//!     print!("{d}");
//!     Ok(())
//! })
//! .await
//! # }
//! ```
//!
//! # Caveats
//! The dump is answered, and written on SIGUSR1, by a task of the actor.
//! An actor whose thread is held by a function that never yields (a
//! blocking call on its only thread) cannot answer: its peers' dumps then
//! show their dialogs with it waiting, and its parent's shows it running.

use crate::Result;
use crate::portal::Portal;
use crate::runtime::Actor;
use furrow_proto::{Aid, RUNTIME_NS};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// One actor's dump: see the [module docs](self).
///
/// New fields may be added; decoding tolerates missing ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[serde(default)]
pub struct ActorDump {
    /// Who it is (its pid is in the `Aid`).
    pub aid: Aid,
    /// How long ago its runtime started.
    pub uptime: Duration,
    /// Why it is ending, once it was asked to (by whom and why).
    pub cancelled: Option<String>,
    /// Every open dialog, oldest first.
    pub dialogs: Vec<DialogDump>,
    /// The child processes it started and has not reaped.
    pub children: Vec<ChildDump>,
    /// Its channels, one per connected peer.
    pub channels: Vec<ChannelDump>,
    /// Every tokio task of the actor with its async backtrace, when furrow
    /// is built with the `taskdump` feature and `--cfg tokio_unstable`
    /// (`None` otherwise, or when the runtime did not pause to be traced
    /// within a second).
    pub tasks: Option<String>,
}

impl Default for ActorDump {
    fn default() -> Self {
        ActorDump {
            aid: Aid::new("", 0),
            uptime: Duration::ZERO,
            cancelled: None,
            dialogs: Vec::new(),
            children: Vec::new(),
            channels: Vec::new(),
            tasks: None,
        }
    }
}

/// Which side of a dialog an actor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialogSide {
    /// It sent the `Start` (it called, or opened the context).
    Opener,
    /// It runs the function.
    Callee,
}

/// What kind of dialog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialogKind {
    /// Not known yet: the callee has not acknowledged the `Start` (shown
    /// as `dialog`).
    Unknown,
    /// A plain call (`Portal::run`).
    Call,
    /// A context (`Portal::open_context`).
    Context,
    /// One of the runtime's own requests (a cancel, `stats`, `dump`).
    Request,
}

/// Where a dialog's protocol is (furrow-proto's dialog state machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialogPhase {
    /// `Start` sent or received, not acknowledged yet.
    Starting,
    /// Acknowledged: a call runs; a context has not sent `Started` yet.
    Running,
    /// A context after `Started`: its stream may carry values.
    Streaming,
    /// The outcome passed (the dialog is leaving the table).
    Done,
}

/// What this side of a dialog is parked on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitOn {
    /// The peer's next message: an acknowledgement, `Started`, a stream
    /// value or the outcome (the phase says which it can be).
    Peer,
    /// Credit to send a stream value: the peer has not consumed what it
    /// was sent.
    Credit,
}

/// How long this side of a dialog has been parked, and on what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// On what.
    pub on: WaitOn,
    /// For how long.
    #[serde(rename = "for")]
    pub for_: Duration,
}

/// A cancel asked of a dialog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelAsked {
    /// How long ago.
    pub ago: Duration,
    /// On whose behalf.
    pub by: Aid,
}

/// One dialog open on one of the actor's channels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DialogDump {
    /// The channel it is on ([`ChannelDump::id`]).
    pub channel: u64,
    /// The actor at the other end.
    pub peer: Aid,
    /// The dialog's id on that channel (the same number on both ends).
    pub cid: u64,
    /// Which side this actor is.
    pub side: DialogSide,
    /// Call, context or runtime request.
    pub kind: DialogKind,
    /// The function (`module::name`).
    pub func: String,
    /// How long ago it opened here.
    pub age: Duration,
    /// Where its protocol is.
    pub phase: DialogPhase,
    /// The opener sent `Stop` (it sends no more stream values).
    pub opener_stopped: bool,
    /// The callee sent `Stop`.
    pub callee_stopped: bool,
    /// What this side's task is parked on, if it is.
    pub waiting: Option<Waiting>,
    /// Stream values this side may send before more credit comes (`None`:
    /// unlimited).
    pub send_credit: Option<u64>,
    /// Stream payload bytes sent and not yet consumed by the peer, with a
    /// byte window.
    pub send_outstanding_bytes: u64,
    /// Stream values received and not yet read by this side's task (its
    /// receive window), once its stream is open.
    pub recv_queued: Option<u64>,
    /// Their payload bytes.
    pub recv_queued_bytes: u64,
    /// A cancel asked of this dialog: by this side (opener) or of it
    /// (callee).
    pub cancel: Option<CancelAsked>,
}

/// A child process the actor started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChildDump {
    /// Its name and pid.
    pub aid: Aid,
    /// `None` while it runs; how it ended, once it did (not reaped by its
    /// nursery yet).
    pub exited: Option<String>,
}

/// One channel (one connection to one peer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChannelDump {
    /// Process-unique id (dialogs name it).
    pub id: u64,
    /// The actor at the other end.
    pub peer: Aid,
    /// Whether this side dialled the connection.
    pub dialer: bool,
    /// Bytes of answers queued for the socket and not written yet (the
    /// peer is reading slowly, or not at all).
    pub queued_bytes: usize,
    /// Bytes of stream data (and what must not overtake it) queued.
    pub queued_stream_bytes: usize,
    /// Dialogs open on it.
    pub dialogs: usize,
    /// Messages read from it so far (see [`ChannelStats`](crate::ChannelStats)).
    pub msgs_in: u64,
    /// Messages written to it so far.
    pub msgs_out: u64,
    /// Its reader is paused: the peer is not reading what this side
    /// answers, and `queued_bytes` is over `Config::max_queued_output`.
    pub reader_paused: bool,
    /// How long ago a frame was last read from it (`None`: never).
    pub last_in: Option<Duration>,
    /// How long ago something was last written to it.
    pub last_out: Option<Duration>,
}

impl Portal {
    /// The peer actor's [`ActorDump`]: what each of its dialogs, children
    /// and channels is doing now. Served by every actor, whatever its
    /// `enable_modules`.
    ///
    /// ```no_run
    /// # async fn demo(p: furrow::Portal) -> furrow::Result<()> {
    /// print!("{}", p.dump().await?);
    /// # Ok(()) }
    /// ```
    ///
    /// Errors: [`Error::TransportClosed`](crate::Error::TransportClosed)
    /// if the peer went away; [`Error::Remote`](crate::Error::Remote)
    /// (`FunctionNotFound`) from an actor too old to serve it.
    ///
    /// # Cancel safety
    /// Cancel safe: the request only reads; dropping the future drops the
    /// answer.
    pub async fn dump(&self) -> Result<ActorDump> {
        let req = furrow_proto::request::Request::Dump;
        let pld = self.call_raw(RUNTIME_NS, req.func(), req.kwargs().into(), req.func()).await?;
        Ok(pld.decode()?)
    }
}

/// This process's own [`ActorDump`] (what SIGUSR1 writes to stderr),
/// without the task section (which needs an `.await`; SIGUSR1 and
/// [`Portal::dump`] include it when built with the `taskdump` feature).
///
/// ```no_run
/// # fn demo() -> furrow::Result<()> {
/// eprint!("{}", furrow::local_dump()?);
/// # Ok(()) }
/// ```
///
/// Errors: [`Error::Usage`](crate::Error::Usage) outside a furrow runtime.
pub fn local_dump() -> Result<ActorDump> {
    Ok(Actor::current()?.dump(None))
}

/// A duration as a person reads it: `850µs`, `12ms`, `3.4s`, `2m05s`.
struct Age(Duration);

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d < Duration::from_millis(1) {
            write!(f, "{}µs", d.as_micros())
        } else if d < Duration::from_secs(1) {
            write!(f, "{}ms", d.as_millis())
        } else if d < Duration::from_secs(60) {
            write!(f, "{:.1}s", d.as_secs_f64())
        } else {
            write!(f, "{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
        }
    }
}

impl DialogDump {
    /// What this side is doing, in words: what it waits for, or what runs.
    fn doing(&self) -> String {
        let waiting = self.waiting.map(|w| (w.on, w.for_));
        let parked_on_peer = |what: &str| match waiting {
            Some((WaitOn::Peer, t)) => format!("waiting {} for {what}", Age(t)),
            _ => format!("expecting {what}"),
        };
        match (self.side, self.phase) {
            (_, DialogPhase::Done) => "done".into(),
            (DialogSide::Opener, DialogPhase::Starting) => parked_on_peer("the peer to accept the Start"),
            (DialogSide::Opener, DialogPhase::Running) => match self.kind {
                DialogKind::Context => parked_on_peer("`started`"),
                DialogKind::Request
                    if self.func.ends_with("::cancel_task") || self.func.ends_with("::cancel_actor") =>
                {
                    parked_on_peer("the cancel's acknowledgement")
                }
                _ => parked_on_peer("the result"),
            },
            (DialogSide::Callee, DialogPhase::Starting | DialogPhase::Running) => match self.kind {
                DialogKind::Context => "running, `started` not sent yet".into(),
                _ => "running the function".into(),
            },
            (_, DialogPhase::Streaming) => {
                let mut s = String::from("streaming");
                match waiting {
                    Some((WaitOn::Credit, t)) => {
                        s += &format!(", waiting {} for credit to send (the peer has not read what it got)", Age(t))
                    }
                    Some((WaitOn::Peer, t)) => s += &format!(", waiting {} for the peer's next message", Age(t)),
                    None => {}
                }
                s
            }
        }
    }
}

impl fmt::Display for DialogDump {
    /// One line: `callee context demo::ticker cid 3 from root (pid 12), 5.2s: streaming, …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (side, dir) = match self.side {
            DialogSide::Opener => ("opener", "to"),
            DialogSide::Callee => ("callee", "from"),
        };
        let kind = match self.kind {
            DialogKind::Unknown => "dialog",
            DialogKind::Call => "call",
            DialogKind::Context => "context",
            DialogKind::Request => "request",
        };
        write!(
            f,
            "{side} {kind} {} cid {} {dir} {} (pid {}), {}: {}",
            self.func,
            self.cid,
            self.peer.name,
            self.peer.pid,
            Age(self.age),
            self.doing()
        )?;
        if self.phase == DialogPhase::Streaming {
            let credit = self.send_credit.map_or("unlimited".to_owned(), |n| n.to_string());
            write!(f, "; send credit {credit}")?;
            if let Some(q) = self.recv_queued {
                write!(f, ", {q} received and unread ({} B)", self.recv_queued_bytes)?;
            }
            match (self.opener_stopped, self.callee_stopped) {
                (true, true) => write!(f, "; both ends stopped")?,
                (true, false) => write!(f, "; the opener stopped")?,
                (false, true) => write!(f, "; the callee stopped")?,
                (false, false) => {}
            }
        }
        if let Some(c) = &self.cancel {
            write!(f, "; cancel asked {} ago by {}", Age(c.ago), c.by)?;
        }
        Ok(())
    }
}

impl fmt::Display for ActorDump {
    /// Several lines, each ending with a newline: the actor, then its
    /// dialogs, children and channels.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "actor {} (pid {}, uuid {}) up {}", self.aid.name, self.aid.pid, self.aid.uuid, Age(self.uptime))?;
        if let Some(why) = &self.cancelled {
            writeln!(f, "  ending: {why}")?;
        }
        writeln!(f, "  dialogs ({}):", self.dialogs.len())?;
        for d in &self.dialogs {
            writeln!(f, "    {d}")?;
        }
        writeln!(f, "  children ({}):", self.children.len())?;
        for c in &self.children {
            let state = c.exited.as_deref().map_or("running".to_owned(), |s| format!("exited ({s}), not reaped yet"));
            writeln!(f, "    {} (pid {}): {state}", c.aid.name, c.aid.pid)?;
        }
        writeln!(f, "  channels ({}):", self.channels.len())?;
        for c in &self.channels {
            writeln!(
                f,
                "    #{} {} {} (pid {}): {} dialogs, {} B queued, {} B stream data queued; {} msgs in (last {}), \
                 {} out (last {}){}",
                c.id,
                if c.dialer { "to" } else { "from" },
                c.peer.name,
                c.peer.pid,
                c.dialogs,
                c.queued_bytes,
                c.queued_stream_bytes,
                c.msgs_in,
                c.last_in.map_or("never".to_owned(), |t| format!("{} ago", Age(t))),
                c.msgs_out,
                c.last_out.map_or("never".to_owned(), |t| format!("{} ago", Age(t))),
                if c.reader_paused { "; reader paused (the peer does not read)" } else { "" }
            )?;
        }
        if let Some(tasks) = &self.tasks {
            writeln!(f, "  tasks:")?;
            for line in tasks.lines() {
                writeln!(f, "    {line}")?;
            }
        }
        Ok(())
    }
}

/// Every task of the current runtime with its async backtrace (tokio's
/// task dump), bounded by a second: `None` when furrow is built without
/// task dumps, or the runtime did not pause in time (a worker blocked).
///
/// # Cancel safety
/// Cancel safe: dropping it abandons the trace.
pub(crate) async fn task_dump() -> Option<String> {
    #[cfg(all(tokio_unstable, feature = "taskdump"))]
    {
        use std::fmt::Write as _;
        let handle = tokio::runtime::Handle::current();
        let dump = tokio::time::timeout(Duration::from_secs(1), handle.dump()).await.ok()?;
        let mut out = String::new();
        for (i, task) in dump.tasks().iter().enumerate() {
            let _ = writeln!(out, "task {i} ({}):", task.id());
            for line in task.trace().to_string().lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        Some(out)
    }
    #[cfg(not(all(tokio_unstable, feature = "taskdump")))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialog(side: DialogSide, kind: DialogKind, phase: DialogPhase, waiting: Option<Waiting>) -> DialogDump {
        DialogDump {
            channel: 1,
            peer: Aid::new("worker", 42),
            cid: 3,
            side,
            kind,
            func: "demo::ticker".into(),
            age: Duration::from_millis(5200),
            phase,
            opener_stopped: false,
            callee_stopped: false,
            waiting,
            send_credit: Some(0),
            send_outstanding_bytes: 0,
            recv_queued: Some(0),
            recv_queued_bytes: 0,
            cancel: None,
        }
    }

    #[test]
    fn a_dialog_line_says_who_waits_for_what() {
        let w = Some(Waiting { on: WaitOn::Credit, for_: Duration::from_secs(5) });
        let line = dialog(DialogSide::Callee, DialogKind::Context, DialogPhase::Streaming, w).to_string();
        assert_eq!(
            line,
            "callee context demo::ticker cid 3 from worker (pid 42), 5.2s: streaming, waiting 5.0s for credit to \
             send (the peer has not read what it got); send credit 0, 0 received and unread (0 B)"
        );
        let w = Some(Waiting { on: WaitOn::Peer, for_: Duration::from_millis(12) });
        let line = dialog(DialogSide::Opener, DialogKind::Context, DialogPhase::Running, w).to_string();
        assert!(line.ends_with("5.2s: waiting 12ms for `started`"), "{line}");
        let line = dialog(DialogSide::Opener, DialogKind::Call, DialogPhase::Running, None).to_string();
        assert!(line.ends_with("expecting the result"), "{line}");
    }

    #[test]
    fn ages_read_naturally() {
        let s = |d| Age(d).to_string();
        assert_eq!(s(Duration::from_micros(850)), "850µs");
        assert_eq!(s(Duration::from_millis(12)), "12ms");
        assert_eq!(s(Duration::from_millis(3400)), "3.4s");
        assert_eq!(s(Duration::from_secs(125)), "2m05s");
    }

    #[test]
    fn a_dump_round_trips_through_json_and_msgpack() {
        let d = ActorDump {
            aid: Aid::new("root", 7),
            dialogs: vec![dialog(DialogSide::Opener, DialogKind::Call, DialogPhase::Starting, None)],
            ..ActorDump::default()
        };
        let json = serde_json::to_string(&d).expect("json");
        assert!(json.contains("\"side\":\"opener\""), "{json}");
        assert_eq!(serde_json::from_str::<ActorDump>(&json).expect("from json"), d);
        let pld = furrow_proto::Payload::encode(&d).expect("encode");
        assert_eq!(pld.decode::<ActorDump>().expect("decode"), d);
    }
}
