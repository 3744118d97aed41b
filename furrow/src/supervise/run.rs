//! The supervisor's loop: children, their instances, restarts.
//!
//! Each instance of a child runs as a task of its own: a nursery holding
//! one child actor until it ends or the supervisor asks it to (its stop
//! token). The nursery does what it always does — it ends its child
//! through the teardown ladder when asked, and fails when the child exits
//! unasked — so the supervisor only decides what follows: the instance's
//! end comes back on one channel, tagged with the child and the
//! *generation* of the instance, and an end of a generation that is not
//! the child's current one (an instance the supervisor itself stopped to
//! restart) is ignored.
//!
//! Cancel safety of the loop: it is raced against the body and dropped
//! when the body ends, possibly in the middle of a restart. Every task it
//! spawns is stored in its child before the next await, so the end of
//! the scope (which stops every stored task) or `State`'s drop (which
//! aborts them) reaches every instance.

use super::handle::Slot;
use super::{ChildSpec, Event, Restart, Strategy, Supervised, Supervisor, SupervisorOptions};
use crate::Error;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Instant;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the body asks of the loop.
pub(crate) enum Cmd {
    Start { spec: ChildSpec, reply: oneshot::Sender<Supervised> },
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::Start { spec, .. } => write!(f, "Start({})", spec.name),
        }
    }
}

/// How one instance ended.
struct End {
    idx: usize,
    generation: u64,
    result: crate::Result<()>,
    /// It served (reached `Up`) before it ended.
    served: bool,
}

/// One supervised child.
struct Child {
    spec: ChildSpec,
    slot: Arc<watch::Sender<Slot>>,
    restarts: Arc<AtomicU32>,
    generation: u64,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    /// An instance served once: later failures are crashes, not a bad
    /// configuration.
    served_once: bool,
    /// Not supervised any more.
    gone: bool,
    /// Its entry in the process's stats (removed when dropped).
    _counted: Arc<super::ChildCount>,
}

struct State {
    opts: SupervisorOptions,
    children: Vec<Child>,
    ends_tx: mpsc::UnboundedSender<End>,
    ends_rx: mpsc::UnboundedReceiver<End>,
    events: broadcast::Sender<Event>,
    /// Restarts within the window, with the ending that caused each.
    window: VecDeque<(Instant, Error)>,
}

impl Drop for State {
    /// The scope was dropped (cancelled): each instance's nursery is
    /// dropped with its task, as a dropped nursery (children being started
    /// killed, running ones sent SIGTERM and reaped by the actor).
    fn drop(&mut self) {
        for c in &mut self.children {
            if let Some(t) = c.task.take() {
                t.abort();
            }
        }
    }
}

/// Open a supervisor, run `body` with it, then end every child (reverse
/// start order, through the teardown ladder) and return `body`'s result.
///
/// If the children end more often than the intensity allows, the body is
/// cancelled (its future dropped), every child ended, and the supervisor
/// fails with [`Error::GaveUp`] (converted into `E`). See the
/// [module docs](super) for the rules.
///
/// ```no_run
/// use furrow::supervise::{ChildSpec, Strategy, SupervisorOptions};
///
/// # async fn demo() -> furrow::Result<()> {
/// furrow::supervise::open_supervisor(SupervisorOptions::new(Strategy::OneForAll), async |sup| {
///     let a = sup.start(ChildSpec::new("a")).await?;
///     let b = sup.start(ChildSpec::new("b")).await?;
///     let mut events = sup.events();
///     // … serve; `a` crashing restarts `b` too …
///     # let _ = (a, b, events.try_recv());
///     Ok(())
/// })
/// .await
/// # }
/// ```
///
/// Errors: the body's, or [`Error::GaveUp`].
///
/// # Cancel safety
/// Not cancel safe, like [`open_nursery`](crate::open_nursery): dropping
/// the future drops the body and each child's nursery (children being
/// started are killed, running ones sent SIGTERM; the actor reaps them).
pub async fn open_supervisor<R, E, B>(opts: SupervisorOptions, body: B) -> std::result::Result<R, E>
where
    B: AsyncFnOnce(&Supervisor) -> std::result::Result<R, E>,
    E: From<Error>,
{
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
    let (events, _) = broadcast::channel(1024);
    let (ends_tx, ends_rx) = mpsc::unbounded_channel();
    let sup = Supervisor { cmd: cmd_tx, events: events.clone() };
    let mut state = State { opts, children: Vec::new(), ends_tx, ends_rx, events, window: VecDeque::new() };
    let outcome = {
        let body = body(&sup);
        tokio::pin!(body);
        // `biased`: a body that is done ends the scope even if an ending
        // waits; the loop only returns when the supervisor gives up.
        tokio::select! {
            biased;
            r = &mut body => Ok(r),
            e = state.run(&mut cmd_rx) => Err(e),
        }
    };
    state.stop_all().await;
    match outcome {
        Ok(r) => r,
        Err(e) => Err(E::from(e)),
    }
}

/// The ending of a child that went away by itself without failing its
/// nursery (an exit with status 0), from the nursery's report.
fn ended_by_itself(children: &[crate::ChildReport]) -> Error {
    let Some(c) = children.last() else { return Error::Closed("the instance ended".into()) };
    let status = c
        .lifecycle
        .iter()
        .rev()
        .find_map(|l| if let crate::Lifecycle::Exited { status } = l { Some(status.clone()) } else { None })
        .unwrap_or_else(|| "its connection closed".to_owned());
    let actor = c.aid.clone().unwrap_or_else(|| furrow_proto::Aid::new(&c.name, 0));
    Error::ActorExited { actor, status, launcher: None, lifecycle: c.lifecycle.clone() }
}

/// Whether an instance's ending counts as abnormal (see the module docs):
/// everything but an unasked exit with status 0.
fn abnormal(e: &Error) -> bool {
    !matches!(e, Error::ActorExited { status, .. } if status == "exit code 0")
}

impl State {
    fn emit(&self, e: Event) {
        // No subscriber is fine.
        let _ = self.events.send(e);
    }

    /// Handle commands and endings until the supervisor gives up.
    ///
    /// # Cancel safety
    /// See the module docs: every spawned instance is stored before the
    /// next await.
    async fn run(&mut self, cmds: &mut mpsc::UnboundedReceiver<Cmd>) -> Error {
        loop {
            tokio::select! {
                Some(cmd) = cmds.recv() => match cmd {
                    Cmd::Start { spec, reply } => {
                        let h = self.add(spec);
                        let _ = reply.send(h);
                    }
                },
                Some(end) = self.ends_rx.recv() => {
                    if let Some(gave_up) = self.on_end(end).await {
                        return gave_up;
                    }
                }
            }
        }
    }

    /// Supervise a new child: its first instance starts now.
    fn add(&mut self, spec: ChildSpec) -> Supervised {
        let slot = Arc::new(watch::Sender::new(Slot::Starting));
        let restarts = Arc::new(AtomicU32::new(0));
        let handle = Supervised {
            name: spec.name.clone(),
            slot: slot.subscribe(),
            restarts: restarts.clone(),
            wait: self.opts.restart_wait,
        };
        let counted = Arc::new(super::ChildCount { name: spec.name.clone(), restarts: restarts.clone() });
        super::count(&counted);
        self.children.push(Child {
            _counted: counted,
            spec,
            slot,
            restarts,
            generation: 0,
            stop: CancellationToken::new(),
            task: None,
            served_once: false,
            gone: false,
        });
        let idx = self.children.len() - 1;
        let _settled = self.launch(idx);
        handle
    }

    /// Start an instance of child `idx` (its current generation): the task
    /// is stored at once. The receiver resolves when it serves (`true`) or
    /// ended first (`false`).
    fn launch(&mut self, idx: usize) -> oneshot::Receiver<bool> {
        let (settled_tx, settled_rx) = oneshot::channel();
        let c = &mut self.children[idx];
        let (spec, slot, stop, generation) = (c.spec.clone(), c.slot.clone(), c.stop.clone(), c.generation);
        let (ends, events, restarts) = (self.ends_tx.clone(), self.events.clone(), c.restarts.clone());
        let task = tokio::spawn(async move {
            let served = AtomicBool::new(false);
            let mut settled = Some(settled_tx);
            // Set when the child went away by itself: a nursery fails on
            // an abnormal exit, but lets a child that exits 0 go quietly.
            let ended_itself = AtomicBool::new(false);
            let report = crate::open_nursery_report(async |n| {
                let p = n.start_actor_with(spec.name.clone(), spec.opts.clone()).await?;
                served.store(true, Ordering::Relaxed);
                let _ = events.send(Event::Started {
                    name: spec.name.clone(),
                    aid: p.aid().clone(),
                    restarts: restarts.load(Ordering::Relaxed),
                });
                let chan = p.chan.clone();
                let init = spec.init.as_ref().map(|f| f(p.clone()));
                slot.send_replace(Slot::Up(p));
                if let Some(s) = settled.take() {
                    let _ = s.send(true);
                }
                // The init (if any) runs for as long as the instance: its
                // error is the instance's failure (returned, the nursery
                // ends the child); its `Ok` leaves the instance serving.
                let init = async {
                    match init {
                        Some(f) => f.await,
                        None => std::future::pending().await,
                    }
                };
                tokio::pin!(init);
                let mut init_done = false;
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = chan.closed() => {
                            ended_itself.store(true, Ordering::Relaxed);
                            break;
                        }
                        r = &mut init, if !init_done => {
                            r?;
                            init_done = true;
                        }
                    }
                }
                Ok(())
            })
            .await;
            let result = match report.result {
                Ok(()) if ended_itself.load(Ordering::Relaxed) => Err(ended_by_itself(&report.children)),
                other => other,
            };
            let served = served.load(Ordering::Relaxed);
            if let Some(s) = settled.take() {
                let _ = s.send(false);
            }
            let _ = ends.send(End { idx, generation, result, served });
        });
        c.task = Some(task);
        settled_rx
    }

    /// An instance ended: restart what the strategy says, or give up.
    async fn on_end(&mut self, end: End) -> Option<Error> {
        let idx = end.idx;
        let c = &mut self.children[idx];
        if end.generation != c.generation || c.gone {
            // An instance the supervisor stopped itself (to restart it).
            return None;
        }
        c.served_once |= end.served;
        let e = match end.result {
            Ok(()) => return None, // stopped when asked: only at the end
            Err(e) => e,
        };
        let name = c.spec.name.clone();
        if !c.served_once {
            // Its first start failed: the caller's error, not a crash.
            c.gone = true;
            c.slot.send_replace(Slot::FailedStart(e));
            return None;
        }
        let bad = abnormal(&e);
        self.emit(Event::Ended { name: name.clone(), how: e.to_string(), abnormal: bad });
        let c = &mut self.children[idx];
        let again = match c.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => bad,
            Restart::Temporary => false,
        };
        if !again {
            c.gone = true;
            c.slot.send_replace(Slot::Gone(e.to_string()));
            self.emit(Event::Gone { name });
            return None;
        }
        // The intensity: one more restart within the window?
        let now = Instant::now();
        let within = self.opts.within;
        while self.window.front().is_some_and(|(t, _)| now.duration_since(*t) >= within) {
            self.window.pop_front();
        }
        if self.window.len() >= self.opts.max_restarts as usize {
            let restarts = self.window.len() as u32;
            let mut errors: Vec<Error> = self.window.drain(..).map(|(_, e)| e).collect();
            errors.push(e);
            self.emit(Event::GaveUp { restarts });
            return Some(Error::GaveUp { restarts, within, errors });
        }
        self.window.push_back((now, e));
        let set: Vec<usize> = match self.opts.strategy {
            Strategy::OneForOne => vec![idx],
            Strategy::OneForAll => (0..self.children.len()).filter(|&j| !self.children[j].gone).collect(),
            Strategy::RestForOne => (idx..self.children.len()).filter(|&j| !self.children[j].gone).collect(),
        };
        // End the others, latest started first.
        for &j in set.iter().rev().filter(|&&j| j != idx) {
            self.stop(j).await;
            self.emit(Event::Stopped { name: self.children[j].spec.name.clone() });
        }
        if !self.opts.backoff.is_zero() {
            tokio::time::sleep(self.opts.backoff).await;
        }
        // Start them again in start order, each serving before the next.
        for j in set {
            // The ended instance's task is done or about to be.
            self.join(j).await;
            let c = &mut self.children[j];
            c.generation += 1;
            c.stop = CancellationToken::new();
            let n = c.restarts.fetch_add(1, Ordering::Relaxed) + 1;
            c.slot.send_replace(Slot::Starting);
            let name = c.spec.name.clone();
            self.emit(Event::Restarting { name, restarts: n });
            let settled = self.launch(j);
            // A restart that fails comes back as an ending of its own
            // (and counts against the intensity).
            let _ = settled.await;
        }
        None
    }

    /// End child `j`'s instance through its nursery's ladder, and wait.
    async fn stop(&mut self, j: usize) {
        let c = &mut self.children[j];
        c.stop.cancel();
        c.slot.send_replace(Slot::Starting);
        self.join(j).await;
    }

    /// Wait for child `j`'s instance task to end, then forget it.
    ///
    /// # Cancel safety
    /// The handle is awaited in place and cleared only once the task has
    /// ended: if this is dropped (the loop is dropped when the body ends,
    /// possibly mid-restart), the task stays in its child, so the scope's
    /// `stop_all` still ends and awaits it, and `State`'s drop still aborts
    /// it. (Taking it out first would have detached a task still ending
    /// its child, and the scope could have returned before that child
    /// was gone.)
    async fn join(&mut self, j: usize) {
        if let Some(t) = self.children[j].task.as_mut() {
            // A task's panic or abort is its nursery's business; nothing
            // more to wait for either way.
            let _ = t.await;
        }
        self.children[j].task = None;
    }

    /// The end of the scope: every child, latest started first.
    async fn stop_all(&mut self) {
        for j in (0..self.children.len()).rev() {
            self.stop(j).await;
            let c = &mut self.children[j];
            c.gone = true;
            c.slot.send_replace(Slot::Gone("the supervisor ended".into()));
        }
    }
}
