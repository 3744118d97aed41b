//! Nurseries: scopes that own child actors (see [`ActorNursery`]).
//!
//! Every decision about how the nursery ends (which child's ending is a
//! failure, whether a start may still begin, when the nursery may return)
//! is taken by the pure [`ledger`] from the events fed to it here, under
//! one lock, in the order this process observed them. This module does
//! the I/O: starts, exit monitors, the ladder.

mod ledger;
mod report;
mod teardown;

use crate::portal::Portal;
use crate::remote::Remote;
use crate::runtime::Actor;
use crate::spawn::{self, ChildProc, Lifecycle, LifecycleLog, SpawnOptions, describe};
use crate::sync::lock;
use crate::{Error, Result};
use furrow_proto::Aid;
use ledger::{Admission, CallError, ChildId, ExitVerdict, Ledger, Lost};
pub use report::{ChildReport, NurseryReport};
use std::panic::Location;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
pub use teardown::Ending;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One running child of a nursery.
#[derive(Clone)]
struct ChildEntry {
    id: ChildId,
    aid: Aid,
    portal: Portal,
    proc: ChildProc,
}

impl ChildEntry {
    /// Gone as far as this process can tell: its channel closed, or its
    /// exit reaped. The channel is marked closed before any dialog on it
    /// learns of the loss (`Channel::mark_closed`), so a body that saw a
    /// call fail because the child died finds it gone here.
    fn gone(&self) -> bool {
        self.portal.chan.is_closed() || self.proc.exited().is_some()
    }
}

/// What the nursery knows of one child it began to start, by [`ChildId`].
struct Record {
    name: String,
    log: LifecycleLog,
    aid: Option<Aid>,
    ending: Option<Ending>,
}

/// State shared by the nursery, its body, and its background tasks
/// (`run_in_actor` calls and exit monitors).
///
/// Lock order: `ledger`, then `children` or `records`; never the other way
/// round, and `children` and `records` never together.
struct Shared {
    actor: Arc<Actor>,
    /// The record every decision is taken from (see [`ledger`]).
    ledger: Mutex<Ledger<Error>>,
    /// The children started and not yet ended by the nursery.
    children: Mutex<Vec<ChildEntry>>,
    /// Every child begun, indexed by its id.
    records: Mutex<Vec<Record>>,
    /// How each child was ended, in order of ending.
    endings: Mutex<Vec<(Aid, Ending)>>,
    /// One-cancels-all: cancelled at the first failure.
    failed: CancellationToken,
    /// Cancelled when the nursery starts ending: starts in flight give up.
    ending: CancellationToken,
    /// Woken whenever a child settles (start failed, or exit seen).
    settled: Notify,
    /// `run_in_actor` tasks and exit monitors.
    tasks: TaskTracker,
    created_at: &'static Location<'static>,
}

/// Nurseries: scopes that own child actors.
///
/// [`open_nursery`] runs a body with an [`ActorNursery`]; actors started in
/// it are real processes. The nursery cannot end before every one of them
/// is reaped:
///
/// - when the body returns (with a value or an error), every child still
///   running is ended through the teardown ladder, all children in
///   parallel: cancel request → bounded wait for the ack and the exit →
///   SIGTERM → bounded wait → SIGKILL → reap;
/// - when the nursery's future is *dropped* instead (a lost `select!`, a
///   timeout), there is no way to wait in `Drop`: every child still
///   running gets SIGTERM at once (a child handles it as a cancel request),
///   and the actor's shutdown reaps them, escalating to SIGKILL for any
///   that has not exited within `term_timeout`.
///
/// Children started with [`ActorNursery::start_actor`] are services that
/// live as long as the body (or until cancelled); [`ActorNursery::run_in_actor`]
/// runs one function in a fresh actor and ends that actor when it returns.
///
/// ```no_run
/// #[furrow::remote]
/// async fn square(x: u64) -> u64 { x * x }
///
/// # async fn demo() -> furrow::Result<()> {
/// let total = furrow::open_nursery(async |n| {
///     let a = n.run_in_actor(square, (3,));
///     let b = n.run_in_actor(square, (4,));
///     let (a, b) = futures::try_join!(a, b)?;
///     furrow::Ok(a + b) // names the body's error type for the `?` below
/// })
/// .await?;
/// assert_eq!(total, 25);
/// # Ok(()) }
/// ```
pub struct ActorNursery {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ActorNursery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActorNursery(opened at {}, {} children)", self.shared.created_at, lock(&self.shared.children).len())
    }
}

/// Open a nursery, run `body` with it, then end every child still running
/// and return `body`'s result.
///
/// **One cancels all.** If a child fails while the body runs (a
/// `run_in_actor` call returns an error, or a child process exits when
/// nobody asked it to), the body is cancelled (its future dropped, which
/// cancels its calls in flight), every other child is ended, and the
/// nursery returns the child's error. Errors of several children are
/// collected in [`Error::Multiple`]; the cancellations they cause are not
/// errors and mask none of them. If the actor itself is asked to cancel
/// (Ctrl-C at the root, a `cancel_actor` from the parent), the body is
/// cancelled the same way and the nursery returns
/// [`Error::ActorCancelled`].
///
/// The body's error type is yours (`furrow::Error`, `anyhow::Error`, …) as
/// long as a `furrow::Error` converts into it. When nothing else fixes it
/// (a body ending in `Ok(x)` whose result is used with `?`), name it:
/// `furrow::Ok(x)`. When children failed *and* the body
/// returned an error of its own, the children's errors are returned (the
/// body's error is usually their consequence) and the body's is logged.
///
/// ```no_run
/// #[furrow::remote]
/// async fn count_words(text: String) -> usize { text.split_whitespace().count() }
///
/// # async fn demo(chapters: Vec<String>) -> anyhow::Result<()> {
/// // The body's error type is anyhow's here; furrow's errors convert.
/// let total = furrow::open_nursery(async |n| {
///     let mut counters = Vec::new();
///     for i in 0..chapters.len() {
///         counters.push(n.start_actor(format!("counter-{i}")).await?);
///     }
///     let mut total = 0;
///     for (p, text) in counters.iter().zip(&chapters) {
///         total += p.run(count_words, (text.clone(),)).await?;
///     }
///     anyhow::Ok(total)
/// })
/// .await?; // every counter has been ended and reaped here
/// println!("{total} words");
/// # Ok(()) }
/// ```
///
/// Errors: as above, or [`Error::Usage`] (converted) when called outside a
/// furrow runtime (`#[furrow::main]` or [`run_root`](crate::run_root)).
///
/// # Cancel safety
/// Not cancel safe: there is no graceful teardown from `Drop`. Dropping the
/// returned future drops the body (cancelling its calls in flight), kills
/// any child whose start was under way, and sends SIGTERM to every child
/// still running (a child handles it as a cancel request and ends its own
/// children in turn); the actor's shutdown reaps them and escalates to
/// SIGKILL for any that do not exit within `term_timeout`. `run_in_actor`
/// calls are background tasks and are not aborted: each ends when its
/// child does.
#[track_caller]
pub fn open_nursery<R, E, B>(body: B) -> impl Future<Output = std::result::Result<R, E>>
where
    B: AsyncFnOnce(&ActorNursery) -> std::result::Result<R, E>,
    E: From<Error> + std::fmt::Display,
{
    let report = open_nursery_report(body);
    async move { report.await.result }
}

/// [`open_nursery`], returning with the result a report of how each child
/// ended: after one-cancels-all dropped the body, the body's `n` is gone,
/// and this is where [`endings`](ActorNursery::endings) and
/// [`lifecycles`](ActorNursery::lifecycles) remain reachable.
///
/// ```no_run
/// #[furrow::remote]
/// async fn check(disk: u32) -> Result<(), String> {
///     if disk == 2 { Err(format!("disk {disk} is failing")) } else { Ok(()) }
/// }
///
/// # async fn demo() {
/// let report = furrow::open_nursery_report(async |n| {
///     let checks: Vec<_> = (0..4).map(|d| n.run_in_actor(check, (d,))).collect();
///     futures::future::try_join_all(checks).await
/// })
/// .await;
/// for child in &report.children {
///     println!("{child}"); // e.g. "check[3f2a9c1e]: spawned (pid 4242) → connected → ready → exited (exit code 0)"
/// }
/// if let Err(e) = report.result {
///     eprintln!("failed: {e}");
/// }
/// # }
/// ```
///
/// # Cancel safety
/// As [`open_nursery`].
#[track_caller]
pub fn open_nursery_report<R, E, B>(body: B) -> impl Future<Output = NurseryReport<R, E>>
where
    B: AsyncFnOnce(&ActorNursery) -> std::result::Result<R, E>,
    E: From<Error> + std::fmt::Display,
{
    let created_at = Location::caller();
    async move {
        let actor = match Actor::ready().await {
            Ok(a) => a,
            Err(e) => return NurseryReport { result: Err(E::from(e)), children: Vec::new() },
        };
        let shared = Arc::new(Shared {
            actor: actor.clone(),
            ledger: Mutex::new(Ledger::default()),
            children: Mutex::new(Vec::new()),
            records: Mutex::new(Vec::new()),
            endings: Mutex::new(Vec::new()),
            failed: CancellationToken::new(),
            ending: CancellationToken::new(),
            settled: Notify::new(),
            tasks: TaskTracker::new(),
            created_at,
        });
        let n = ActorNursery { shared: shared.clone() };
        let mut floor = Floor { shared: shared.clone(), armed: true };
        // `biased`: a child failure or a cancel of the actor wins over a
        // body that happens to be ready in the same poll, so the failure is
        // never lost. Dropping the body cancels what it was doing.
        let out = tokio::select! {
            biased;
            () = shared.failed.cancelled() => None,
            () = actor.cancel.cancelled() => {
                let (canceller, reason) = actor.cancel_reason();
                shared.record(Error::ActorCancelled { canceller, reason });
                None
            }
            out = body(&n) => Some(out),
        };
        // From here on nothing starts: starts in flight give up, and one
        // that completes anyway is ended by its own task (the ledger says
        // `EndNow`). Whatever was already gone is judged as its own death.
        let entries = shared.begin_ending();
        shared.end_entries(entries).await;
        // Every child begun has failed to start or been seen to exit, so
        // none is alive (a child that completed its start during the ending
        // is being ended by the task that started it).
        shared.wait_settled().await;
        // Children whose start was abandoned were killed when it was
        // dropped; they are part of this scope too.
        actor.reap_abandoned().await;
        // `run_in_actor` tasks end once their actor is gone; monitors once
        // their child is reaped: all of them are by now.
        shared.tasks.close();
        // Bounded, and loud if the bound is hit: every child is reaped by
        // now, so these tasks end at once unless something was missed.
        if tokio::time::timeout(Duration::from_secs(10), shared.tasks.wait()).await.is_err() {
            tracing::error!(
                "bug: nursery opened at {}: {} background task(s) still running 10 s after its children ended",
                shared.created_at,
                shared.tasks.len()
            );
        }
        floor.armed = false;
        let errors = lock(&shared.ledger).take_errors();
        let result = match (errors.len(), out) {
            (0, Some(out)) => out,
            (0, None) => Err(E::from(Error::ActorCancelled { canceller: None, reason: "nursery cancelled".into() })),
            (_, out) => {
                if let Some(Err(own)) = out {
                    tracing::warn!("nursery body failed too (after its children did): {own}");
                }
                let mut errors = errors;
                Err(E::from(if errors.len() == 1 { errors.remove(0) } else { Error::Multiple(errors) }))
            }
        };
        NurseryReport { result, children: shared.child_reports() }
    }
}

/// Ends the children of a nursery whose future was dropped mid-way.
struct Floor {
    shared: Arc<Shared>,
    armed: bool,
}

impl Drop for Floor {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Starts in flight give up (and kill their process); the ones that
        // complete anyway are ended by their own task.
        let entries = self.shared.begin_ending();
        let alive: Vec<&ChildEntry> = entries.iter().filter(|c| c.proc.exited().is_none()).collect();
        if !alive.is_empty() {
            tracing::warn!(
                "nursery opened at {} dropped before its end: sending SIGTERM to {} child actor(s)",
                self.shared.created_at,
                alive.len()
            );
        }
        for c in alive {
            // Non-blocking: the reaper task delivers it; the actor's
            // shutdown reaps and escalates.
            c.proc.signal(libc::SIGTERM);
        }
    }
}

/// The error a start gets once the nursery is ending.
fn ending_error(reason: &str) -> Error {
    Error::ActorCancelled { canceller: None, reason: reason.into() }
}

/// What a call's error says about the child (see [`ledger`]'s rules).
fn classify(e: &Error) -> CallError {
    match e {
        Error::TransportClosed { .. } | Error::Closed(_) => CallError::Lost,
        Error::ContextCancelled { .. } | Error::ActorCancelled { .. } => CallError::Cancellation,
        _ => CallError::Other,
    }
}

impl Shared {
    /// Record a failure that is not a child's ending, and trigger
    /// one-cancels-all.
    fn record(&self, e: Error) {
        lock(&self.ledger).fail(e);
        self.failed.cancel();
    }

    /// Child `id` is asked to end (by the nursery, or by `cancel_actor` on
    /// its portal), noting whether it was already gone: a death this
    /// process saw before it asked is the child's own.
    fn ask(&self, id: ChildId) {
        let mut ledger = lock(&self.ledger);
        // Not in the list: the nursery took it to end it, and asked then.
        if let Some(gone) = lock(&self.children).iter().find(|c| c.id == id).map(ChildEntry::gone) {
            ledger.ask(id, gone);
        }
    }

    /// The nursery ends: no new start begins, starts in flight give up,
    /// every running child is asked to end (those already gone are judged
    /// as dead on their own). Returns the children to end.
    fn begin_ending(&self) -> Vec<ChildEntry> {
        // The children are taken under the ledger's lock (its order allows
        // it), so a start completing meanwhile is either taken here or told
        // `EndNow` and ended by its own task: never both, never neither.
        let entries = {
            let mut ledger = lock(&self.ledger);
            let kids = std::mem::take(&mut *lock(&self.children));
            ledger.begin_ending(|id| kids.iter().find(|c| c.id == id).is_some_and(ChildEntry::gone));
            kids
        };
        self.ending.cancel();
        entries
    }

    /// Wait until every child begun has settled (bounded and loud: each
    /// one is being ended through the ladder, which is bounded too).
    async fn wait_settled(&self) {
        let cfg = &self.actor.config;
        let bound = cfg.cancel_ack_timeout + cfg.exit_timeout + cfg.term_timeout + Duration::from_secs(10);
        let wait = async {
            loop {
                // Registered before the check, so a child settling between
                // the check and the await still wakes us.
                let notified = self.settled.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if lock(&self.ledger).is_settled() {
                    return;
                }
                notified.await;
            }
        };
        // Cancel safe: the wait takes nothing; losing it to the bound only
        // stops waiting (and says so).
        if tokio::time::timeout(bound, wait).await.is_err() {
            tracing::error!(
                "bug: nursery opened at {}: {} child(ren) not settled {bound:?} after its end began",
                self.created_at,
                lock(&self.ledger).unsettled()
            );
        }
    }

    /// Start a child. Its unexpected death fails the nursery (rule 3),
    /// unless `on_death` is given: then the death is reported there instead
    /// (a pool replaces its dead workers) and the nursery carries on.
    async fn start_child(
        self: &Arc<Self>,
        name: &str,
        opts: SpawnOptions,
        on_death: Option<mpsc::UnboundedSender<Error>>,
    ) -> Result<(ChildId, Portal)> {
        let log = LifecycleLog::default();
        let id = {
            let mut ledger = lock(&self.ledger);
            let Some(id) = ledger.begin_start(on_death.is_some()) else {
                return Err(ending_error("the nursery is ending"));
            };
            lock(&self.records).push(Record { name: name.to_owned(), log: log.clone(), aid: None, ending: None });
            id
        };
        // Whatever ends the start without a child (an error, the ending,
        // this future dropped) settles it in the ledger.
        let mut unsettled = StartGuard { shared: self, id: Some(id) };
        // `biased`: a start that completed in the same poll as the ending
        // is taken (and then ended by the ledger's `EndNow`). Losing to the
        // ending drops the spawn, which kills the half-started process and
        // hands it to the actor (`reap_abandoned`).
        let started = tokio::select! {
            biased;
            r = spawn::spawn(&self.actor, name, &opts, &log) => r?,
            () = self.ending.cancelled() => return Err(ending_error("the nursery ended during the start")),
        };
        let ask: Arc<dyn Fn() + Send + Sync> = {
            let shared = Arc::downgrade(self);
            Arc::new(move || {
                if let Some(s) = shared.upgrade() {
                    s.ask(id);
                }
            })
        };
        let portal = Portal {
            chan: started.chan,
            addrs: started.addrs.into(),
            cancel_ack_timeout: self.actor.config.cancel_ack_timeout,
            exit_timeout: self.actor.config.exit_timeout,
            stream_window: self.actor.config.window(),
            on_cancel_actor: Some(ask),
        };
        let entry = ChildEntry { id, aid: started.aid, portal: portal.clone(), proc: started.proc };
        let admission = {
            let mut ledger = lock(&self.ledger);
            let admission = ledger.started(id);
            lock(&self.children).push(entry.clone());
            drop(ledger);
            if let Some(r) = lock(&self.records).get_mut(id) {
                r.aid = Some(entry.aid.clone());
            }
            admission
        };
        unsettled.id = None;
        self.monitor_exit(entry, log, on_death);
        match admission {
            Admission::Admit => Ok((id, portal)),
            Admission::EndNow => {
                self.end_one(id).await;
                Err(ending_error("the nursery was ending when the start completed"))
            }
        }
    }

    /// The exit monitor: reports the child's exit to the ledger, which
    /// judges it. It is also the only writer of the lifecycle after
    /// `Ready` (the start sequence wrote the steps before), so `Exited`
    /// comes last.
    fn monitor_exit(
        self: &Arc<Self>,
        entry: ChildEntry,
        log: LifecycleLog,
        on_death: Option<mpsc::UnboundedSender<Error>>,
    ) {
        let shared = self.clone();
        let grace = self.actor.config.exit_timeout;
        self.tasks.spawn(async move {
            // A child whose connection is lost while its process runs on
            // (keepalive gave it up: stopped, hung, or cut off) is ended
            // like a failed one (docs/design.md, "Keepalive"). A crash
            // closes the connection an instant before the reap, so the
            // loss counts only when no exit follows within the grace.
            let mut lost = None;
            // Both branches are cancel safe (`wait_exit` watches the
            // reaper's record, `closed` a token): the one that loses the
            // race loses nothing. `biased`: an exit already reaped wins over
            // the closed channel, so a crash is never judged a loss.
            let exit = tokio::select! {
                biased;
                exit = entry.proc.wait_exit(Duration::MAX) => exit,
                () = entry.portal.chan.closed() => match entry.proc.wait_exit(grace).await {
                    Some(exit) => Some(exit),
                    None => {
                        lost = Some(entry.portal.chan.closed_error());
                        shared.lost(&entry);
                        entry.proc.wait_exit(Duration::MAX).await
                    }
                },
            };
            let (abnormal, status) = match exit {
                Some(exit) => {
                    let status = describe(&exit.status);
                    spawn::log_step(&log, Lifecycle::Exited { status: status.clone() });
                    (!exit.status.success(), status)
                }
                // The reaper went away without a status: the runtime is
                // going down; nothing is left to wait for.
                None => (true, "not reaped: the runtime is shutting down".to_owned()),
            };
            let lifecycle = lock(&log).clone();
            // Killed after its connection was lost (a body that saw the
            // loss first ended the nursery): say why it was killed.
            let status = match lost {
                Some(why) => format!("{status}, after its connection was lost ({why})"),
                None => status,
            };
            let death =
                Error::ActorExited { actor: entry.aid.clone(), status, launcher: entry.proc.launcher(), lifecycle };
            let verdict = lock(&shared.ledger).exited(entry.id, abnormal, death);
            match verdict {
                ExitVerdict::Failed => shared.failed.cancel(),
                ExitVerdict::Replace(death) => {
                    if let Some(tx) = &on_death {
                        let _ = tx.send(death);
                    }
                }
                ExitVerdict::Asked | ExitVerdict::Polite => {}
            }
            shared.settled.notify_waiters();
            // The nursery waits for this task before it returns: so its
            // caller sees the child's last relayed lines before anything
            // it prints next (the wait is bounded by the reaper). Judged
            // first, so the verdict is not held up by the output.
            entry.proc.wait_output().await;
        });
    }

    /// Child `entry`'s connection was lost and its process runs on. Unless
    /// somebody asked it to end, that is its failure: recorded now (its
    /// exit, however it comes, is then the nursery's doing) and the
    /// nursery ends, which takes the child down the ladder. A replaceable
    /// child (a pool's worker) is killed instead: its death goes to its
    /// supervisor as any other.
    fn lost(&self, entry: &ChildEntry) {
        let reason = entry.portal.chan.closed_error();
        tracing::warn!(actor = %entry.aid, "child lost: {reason}; ending it");
        match lock(&self.ledger).lost(entry.id, reason) {
            Lost::Failed => self.failed.cancel(),
            Lost::Replace => entry.proc.signal(libc::SIGKILL),
            Lost::Asked => {}
        }
    }

    /// End child `id` now, unless the nursery's end already took it.
    async fn end_one(&self, id: ChildId) {
        let entry = {
            let mut kids = lock(&self.children);
            let pos = kids.iter().position(|c| c.id == id);
            pos.map(|i| kids.remove(i))
        };
        if let Some(e) = entry {
            self.end_entries(vec![e]).await;
        }
    }

    /// The ladder for several children, all in parallel (never one after
    /// another: the whole tree ends in the time of its slowest child).
    async fn end_entries(&self, entries: Vec<ChildEntry>) {
        let cfg = &self.actor.config;
        for c in &entries {
            lock(&self.ledger).ask(c.id, c.gone());
        }
        let endings =
            futures::future::join_all(entries.iter().map(|c| teardown::end_child(&c.portal, &c.proc, cfg))).await;
        for (c, ending) in entries.iter().zip(endings) {
            self.actor.release_child(c.proc.pid());
            if let Some(r) = lock(&self.records).get_mut(c.id) {
                r.ending = Some(ending.clone());
            }
            lock(&self.endings).push((c.aid.clone(), ending));
        }
    }

    /// One report per child begun, in order of starting.
    fn child_reports(&self) -> Vec<ChildReport> {
        lock(&self.records)
            .iter()
            .map(|r| ChildReport {
                name: r.name.clone(),
                aid: r.aid.clone(),
                lifecycle: lock(&r.log).clone(),
                ending: r.ending.clone(),
            })
            .collect()
    }
}

/// Settles a start that ended without a child (see `start_child`).
struct StartGuard<'a> {
    shared: &'a Shared,
    id: Option<ChildId>,
}

impl Drop for StartGuard<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            lock(&self.shared.ledger).start_failed(id);
            self.shared.settled.notify_waiters();
        }
    }
}

impl ActorNursery {
    /// Another handle on this nursery, for the blocking API's bridge (which
    /// must hold it outside the body's borrow). Not public: a handle that
    /// outlives the body could only see a nursery that is ending.
    pub(crate) fn share(&self) -> ActorNursery {
        ActorNursery { shared: self.shared.clone() }
    }

    /// Start a child actor called `name` (a fresh process of this binary)
    /// and return a portal to it once it is serving. The name is owned
    /// (`"literal"` or a `String`), so `n.start_actor(format!("worker-{i}"))`
    /// works inside a closure.
    ///
    /// The child is supervised: if its process exits while nobody asked it
    /// to, the nursery fails (one cancels all).
    ///
    /// Errors: [`Error::Spawn`] naming the child when the binary cannot be
    /// executed or the child exits or stalls before it is ready; nothing
    /// is left behind in that case. A name that is empty, longer than
    /// [`MAX_ACTOR_NAME_LEN`](crate::MAX_ACTOR_NAME_LEN) (255) bytes or
    /// holds a control character is an [`Error::Spawn`] saying so (with
    /// the length), before any process starts.
    ///
    /// ```no_run
    /// # async fn demo() -> furrow::Result<()> {
    /// furrow::open_nursery(async |n| {
    ///     let mut workers = Vec::new();
    ///     for i in 0..4 {
    ///         workers.push(n.start_actor(format!("worker-{i}")).await?);
    ///     }
    ///     // … use them; they are ended when the body returns.
    ///     # let _ = workers;
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the future mid-start kills the half-started process
    /// (SIGKILL); the nursery's end, and the actor's shutdown, wait
    /// (bounded) for it to be reaped. Nothing is left behind.
    pub fn start_actor(&self, name: impl Into<String> + 'static) -> impl Future<Output = Result<Portal>> + Send + '_ {
        self.start_actor_with(name, SpawnOptions::default())
    }

    /// Start a child whose unexpected death is sent to `on_death` instead
    /// of failing the nursery (for supervisors that replace children: the
    /// pool). Everything else is as for a child of
    /// [`start_actor`](Self::start_actor): it is ended with the nursery.
    pub(crate) async fn start_replaceable(
        &self,
        name: String,
        opts: SpawnOptions,
        on_death: mpsc::UnboundedSender<Error>,
    ) -> Result<Portal> {
        self.shared.start_child(&name, opts, Some(on_death)).await.map(|(_, p)| p)
    }

    /// [`start_actor`](Self::start_actor) with options (another
    /// executable, restricted modules, listen addresses).
    ///
    /// ```no_run
    /// use furrow::SpawnOptions;
    /// # async fn demo() -> furrow::Result<()> {
    /// furrow::open_nursery(async |n| {
    ///     // A child that serves only the functions of `my_app::public`.
    ///     let opts = SpawnOptions::new().enable_modules(["my_app::public"]);
    ///     let _p = n.start_actor_with("frontend", opts).await?;
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// As [`start_actor`](Self::start_actor).
    pub fn start_actor_with(
        &self,
        name: impl Into<String> + 'static,
        opts: SpawnOptions,
    ) -> impl Future<Output = Result<Portal>> + Send + '_ {
        let name = name.into();
        async move { self.shared.start_child(&name, opts, None).await.map(|(_, p)| p) }
    }

    /// Run `f(args)` in a fresh actor named after the function, then end
    /// that actor. The work starts at once, in the background; the
    /// returned handle resolves to the result. (A function name over
    /// [`MAX_ACTOR_NAME_LEN`](crate::MAX_ACTOR_NAME_LEN) bytes fails the
    /// start as [`start_actor`](Self::start_actor) says: name it with
    /// [`run_in_actor_with`](Self::run_in_actor_with).)
    ///
    /// A failure of the call (an error or panic in `f`, a crash of the
    /// actor) is a failure of the nursery: every sibling is cancelled and
    /// the nursery returns the error (with the errors of any other child
    /// that failed too), whether or not the handle is awaited. A crash is
    /// reported once, as [`Error::ActorExited`] with the exit status, not
    /// also as the lost connection of the call.
    ///
    /// # Cancel safety
    /// Dropping the handle does not cancel the call: it belongs to the
    /// nursery, which ends it at its own end. A call whose start has not
    /// completed when the nursery ends never runs.
    pub fn run_in_actor<F: Remote>(&self, f: F, args: F::Args) -> RunHandle<F::Output> {
        let (_, func) = crate::remote::ns_func(&f);
        self.run_in_actor_with(func, SpawnOptions::default(), f, args)
    }

    /// [`run_in_actor`](Self::run_in_actor) in an actor called `name`,
    /// started with `opts`. The name follows the rules of
    /// [`start_actor`](Self::start_actor): non-empty, at most
    /// [`MAX_ACTOR_NAME_LEN`](crate::MAX_ACTOR_NAME_LEN) bytes, no control
    /// characters; any other fails the start (and so the nursery) with an
    /// [`Error::Spawn`] saying which rule and the length.
    ///
    /// ```no_run
    /// #[furrow::remote]
    /// async fn crunch(shard: u32) -> u64 { u64::from(shard) * 2 }
    ///
    /// # async fn demo() -> furrow::Result<()> {
    /// let total: u64 = furrow::open_nursery(async |n| {
    ///     let shards: Vec<_> = (0..4)
    ///         .map(|i| n.run_in_actor_with(format!("shard-{i}"), furrow::SpawnOptions::new(), crunch, (i,)))
    ///         .collect();
    ///     furrow::Ok(futures::future::try_join_all(shards).await?.into_iter().sum())
    /// })
    /// .await?;
    /// # let _ = total; Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// As [`run_in_actor`](Self::run_in_actor).
    pub fn run_in_actor_with<F: Remote>(
        &self,
        name: impl Into<String>,
        opts: SpawnOptions,
        f: F,
        args: F::Args,
    ) -> RunHandle<F::Output> {
        let (tx, rx) = oneshot::channel();
        let shared = self.shared.clone();
        let name = name.into();
        self.shared.tasks.spawn(async move {
            let result = async {
                let (id, portal) = match shared.start_child(&name, opts, None).await {
                    Ok(started) => started,
                    Err(e) => {
                        let cancelled = matches!(e, Error::ActorCancelled { .. });
                        if lock(&shared.ledger).start_error(cancelled, e.clone()) {
                            shared.failed.cancel();
                        }
                        return Err(e);
                    }
                };
                let out = portal.run(f, args).await;
                if let Err(e) = &out
                    && lock(&shared.ledger).call_failed(id, classify(e), e.clone())
                {
                    shared.failed.cancel();
                }
                shared.end_one(id).await;
                out
            }
            .await;
            let _ = tx.send(result);
        });
        RunHandle { rx }
    }

    /// End every child now (the same ladder as at the end of the body).
    /// The nursery stays usable; this is not a failure.
    ///
    /// ```no_run
    /// # async fn demo() -> furrow::Result<()> {
    /// furrow::open_nursery(async |n| {
    ///     for round in 0..3 {
    ///         let _p = n.start_actor(format!("round-{round}")).await?;
    ///         // … one round of work …
    ///         n.cancel().await?; // a fresh set of children for the next round
    ///         assert!(n.children().is_empty());
    ///     }
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// Not cancel safe. On its first poll it takes every child out of the
    /// nursery and sends each a cancel request. If the future is dropped
    /// before they have all ended, the nursery does not escalate for the
    /// ones still running: a child that honours the request exits (not a
    /// failure); one that does not is neither signalled by the nursery nor
    /// waited for by its end beyond a bounded 10 s (which logs an error),
    /// and is ended (SIGTERM, then SIGKILL) by the actor's shutdown.
    pub async fn cancel(&self) -> Result<()> {
        let entries = std::mem::take(&mut *lock(&self.shared.children));
        self.shared.end_entries(entries).await;
        // Children whose start the body abandoned were killed when their
        // start was dropped; they are part of this round too.
        self.shared.actor.reap_abandoned().await;
        Ok(())
    }

    /// Portals to the children currently running.
    ///
    /// ```no_run
    /// #[furrow::remote]
    /// async fn reload() {}
    ///
    /// # async fn demo(n: &furrow::ActorNursery) -> furrow::Result<()> {
    /// // Broadcast to every live child.
    /// for p in n.children() {
    ///     p.run(reload, ()).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn children(&self) -> Vec<Portal> {
        lock(&self.shared.children).iter().filter(|c| c.proc.exited().is_none()).map(|c| c.portal.clone()).collect()
    }

    /// The lifecycle of every child this nursery tried to start (failed
    /// starts included), in order of starting: for each, the steps it
    /// reached, in order, ending with its exit once it is reaped.
    ///
    /// ```no_run
    /// # fn demo(n: &furrow::ActorNursery) {
    /// for (name, steps) in n.lifecycles() {
    ///     let steps: Vec<String> = steps.iter().map(ToString::to_string).collect();
    ///     println!("{name}: {}", steps.join(" → "));
    /// }
    /// # }
    /// ```
    pub fn lifecycles(&self) -> Vec<(String, Vec<Lifecycle>)> {
        lock(&self.shared.records).iter().map(|r| (r.name.clone(), lock(&r.log).clone())).collect()
    }

    /// How each child that has ended so far was ended, in order of ending.
    ///
    /// ```no_run
    /// # async fn demo(n: &furrow::ActorNursery) -> furrow::Result<()> {
    /// n.cancel().await?;
    /// for (aid, ending) in n.endings() {
    ///     if !ending.is_graceful() {
    ///         eprintln!("{aid} had to be {ending}");
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn endings(&self) -> Vec<(Aid, Ending)> {
        lock(&self.shared.endings).clone()
    }
}

/// The result of [`ActorNursery::run_in_actor`]: a future of the call's
/// result. If the nursery ends the child before the call finished (its
/// body returned, or a sibling failed), it resolves to
/// [`Error::ContextCancelled`] naming this actor as the canceller; if the
/// nursery ended before the child's start completed, to
/// [`Error::ActorCancelled`].
///
/// ```no_run
/// #[furrow::remote]
/// async fn render(page: u32) -> Vec<u8> { vec![page as u8] }
///
/// # async fn demo() -> furrow::Result<()> {
/// let pages = furrow::open_nursery(async |n| {
///     // All start at once, in parallel; each handle resolves to its page.
///     let handles: Vec<_> = (1..=8).map(|p| n.run_in_actor(render, (p,))).collect();
///     futures::future::try_join_all(handles).await
/// })
/// .await?;
/// assert_eq!(pages.len(), 8);
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "the call runs anyway; await the handle to get its result"]
pub struct RunHandle<O> {
    rx: oneshot::Receiver<Result<O>>,
}

impl<O> Future for RunHandle<O> {
    type Output = Result<O>;

    /// # Cancel safety
    /// Cancel safe: the result stays in the handle until it is taken.
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<O>> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(r)) => Poll::Ready(r),
            Poll::Ready(Err(_)) => Poll::Ready(Err(Error::ActorCancelled {
                canceller: None,
                reason: "the nursery ended before the call finished".into(),
            })),
            Poll::Pending => Poll::Pending,
        }
    }
}
