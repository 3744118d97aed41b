//! Serving: what a `Start` arriving on any channel becomes. The actor is
//! the [`Dispatch`] of every channel: it checks the request (its sender,
//! its namespace, whether the function is exposed here), runs the
//! function on a task of its own with its cancellation scope, and ends
//! the dialog with exactly one outcome. A channel that closes cancels the
//! tasks serving its peer.

use super::{Actor, lock, panic};
use crate::ErrorKind;
use crate::context::scope::CancelScope;
use crate::context::{Context, Side};
use crate::discovery::REGISTRY_NS;
use crate::ipc::{Channel, Dispatch};
use crate::remote::{Failure, Handler, lookup};
use furrow_proto::dialog::{Arbiter, Completion, Decision};
use furrow_proto::request::Request;
use furrow_proto::{Aid, Cid, FuncType, Msg, Payload};
use futures::FutureExt;
use futures::future::BoxFuture;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::AbortHandle;
use tracing::Instrument;

/// A task serving one dialog: how to cancel it politely, and abort it.
pub(super) struct TaskHandle {
    pub(super) abort: AbortHandle,
    pub(super) scope: Arc<CancelScope>,
}

impl Actor {
    /// Whether `name` may be served here (`enable_modules`).
    fn exposes(&self, name: &str) -> bool {
        let mods = &self.config.enable_modules;
        mods.is_empty()
            || mods.iter().any(|m| name == m || (name.starts_with(m.as_str()) && name[m.len()..].starts_with("::")))
    }

    /// Run a registered function for the dialog `cid` on `chan`.
    ///
    /// The task ends with exactly one outcome message: `Return` or `Error`
    /// when the function finishes first, `Error { ContextCancelled }` when
    /// a cancel request wins. The `biased` select polls the function
    /// first, so a function that completes in the same poll as the cancel
    /// arrives reports its completion, never both. After a cancel the
    /// function keeps running for the grace period (contexts only), so it
    /// can see `Context::cancelled` and clean up; an error of its own in
    /// that time is reported instead of the cancellation (not masked).
    fn serve(self: &Arc<Self>, chan: &Arc<Channel>, cid: Cid, name: String, handler: Handler, kwargs: Payload) {
        let (mailbox, flow) = chan.accept_dialog(cid, &name);
        let scope = Arc::new(CancelScope::default());
        let span =
            crate::log::dialog_span(matches!(handler, Handler::Context(_)), Some(cid), &name, &chan.peer, "callee");
        let func = name.clone();
        let (functype, fut, grace) = match handler {
            Handler::Rpc(f) => {
                drop(mailbox);
                (FuncType::Asyncfunc, f(kwargs), Duration::ZERO)
            }
            Handler::Context(f) => {
                let ctx = Context::new(
                    chan.clone(),
                    cid,
                    Side::Callee,
                    name,
                    mailbox,
                    flow,
                    scope.clone(),
                    self.config.window(),
                    self.config.cancel_ack_timeout,
                );
                (FuncType::Context, f(ctx, kwargs), self.config.cancel_grace)
            }
        };
        self.run_served(chan, cid, &func, functype, fut, grace, scope, span);
    }

    /// Serve one of furrow's own requests (the registry's) like a remote
    /// function: acknowledged, cancellable, one outcome.
    /// `name` is the request's wire name (for the error that replaces an
    /// answer over the frame limit).
    pub(super) fn serve_builtin(
        self: &Arc<Self>,
        chan: &Arc<Channel>,
        cid: Cid,
        name: &str,
        fut: BoxFuture<'static, Served>,
    ) {
        let (mailbox, _flow) = chan.accept_dialog(cid, name);
        drop(mailbox);
        let scope = Arc::new(CancelScope::default());
        self.run_served(chan, cid, name, FuncType::Asyncfunc, fut, Duration::ZERO, scope, crate::log::actor_span());
    }

    /// Acknowledge the dialog `cid` and run `fut` for it (see `serve`),
    /// under `span`.
    #[allow(clippy::too_many_arguments)]
    fn run_served(
        self: &Arc<Self>,
        chan: &Arc<Channel>,
        cid: Cid,
        name: &str,
        functype: FuncType,
        fut: BoxFuture<'static, Served>,
        grace: Duration,
        scope: Arc<CancelScope>,
        span: tracing::Span,
    ) {
        // Where the ack is queued from. On one thread, from the task, just
        // before the function's first poll: a function that finishes in
        // that poll has its `Return` queued behind the ack before the
        // writer runs, and both leave in one write (one wake-up of the
        // opener instead of two). Nothing of the dialog can be queued
        // before it: the function has not run.
        // On a multi-thread runtime, from here, as before: a task that
        // wakes the writer and then never yields (a function stuck in a
        // loop) leaves the writer in its worker's LIFO slot, which no other
        // worker steals, and the actor could answer nothing more, its
        // cancel ack included (`supervise_ladder::one_non_yielding_task_…`
        // caught it). The reader yields right after, so the writer runs.
        let ack_in_task = self.single_thread;
        if !ack_in_task && chan.send(&Msg::StartAck { cid, functype }).is_err() {
            chan.close_dialog(cid);
            return;
        }
        let actor = self.clone();
        let chan2 = chan.clone();
        let scope2 = scope.clone();
        let name = name.to_owned();
        // The map lock is held while spawning so the task cannot finish and
        // remove its entry before the entry exists.
        let mut tasks = lock(&self.tasks);
        let task = self.serving.spawn(async move {
            let _cleanup = TaskCleanup { actor: actor.clone(), chan: chan2.clone(), cid };
            // (See `ack_in_task`.) A channel already closed has nobody to
            // answer; the cleanup closes the dialog.
            if ack_in_task && chan2.send(&Msg::StartAck { cid, functype }).is_err() {
                return;
            }
            let mut fut = AssertUnwindSafe(fut).catch_unwind();
            // The proto-level arbiter makes the one decision; this loop only
            // feeds it events. `biased`: the function is polled first.
            let mut arb = Arbiter::new(!grace.is_zero());
            let mut result = None;
            // `fut` is borrowed, not moved: losing the race to the cancel
            // drops nothing, and the same future runs on in the grace period.
            let decided = tokio::select! {
                biased;
                r = &mut fut => {
                    // A task can see its cancellation (a `send` refused
                    // because its scope is cancelled) and fail with it
                    // before this loop sees the cancel: the cancel came
                    // first, and the arbiter must hear it first, or a task
                    // that merely propagated its cancellation is reported
                    // as failing. (Found by the chaos runner,
                    // `inter_actor_cancels`.) A task that *returns* with a
                    // cancel pending still returns, as at a trio
                    // checkpoint: the cancel only wins where it was seen.
                    let completion = completion_of(&r);
                    let first = if scope2.is_cancelled() && completion == (Completion::Failed { cancellation: true }) {
                        arb.on_cancel()
                    } else {
                        None
                    };
                    let d = arb.on_completion(completion);
                    result = Some(r);
                    first.or(d)
                }
                () = scope2.cancelled() => arb.on_cancel(),
            };
            let decision = match decided {
                Some(d) => d,
                // Cancelled with a grace period: let it clean up, bounded.
                None => match tokio::time::timeout(grace, &mut fut).await {
                    Ok(r) => {
                        let d = arb.on_completion(completion_of(&r));
                        result = Some(r);
                        d
                    }
                    Err(_) => arb.on_grace_expired(),
                }
                .unwrap_or(Decision::Cancelled),
            };
            let failure = match (decision, result) {
                (Decision::Completed, Some(Ok(Ok(pld)))) => {
                    // (Registry requests, served here too, reach a root
                    // only, which no fault names.)
                    crate::chaos::fault::at(crate::chaos::fault::Step::Return);
                    // Over the frame limit, the caller gets an error saying
                    // so instead (it would otherwise wait forever).
                    // Written from the result's parts: a large
                    // `furrow::Bytes` in it is not copied.
                    let ret = Msg::Return { cid, pld: Payload::default() };
                    actor.reply_with(&chan2, ret, Some(&pld), &format!("the result of `{name}`"));
                    return;
                }
                (Decision::Completed, Some(Ok(Err(f)))) => f,
                (Decision::Completed, Some(Err(p))) => panic::failure(p),
                _ => {
                    let by = scope2.canceller().unwrap_or_else(|| actor.aid.clone());
                    Failure {
                        canceller: Some(by.clone()),
                        ..Failure::runtime(ErrorKind::ContextCancelled, format!("cancelled by {by}"))
                    }
                }
            };
            actor.reply(&chan2, actor.error_msg(Some(cid), failure), &format!("the error of `{name}`"));
        }.instrument(span));
        tasks.insert((chan.id, cid), TaskHandle { abort: task.abort_handle(), scope });
    }
}

/// What a served function ends with.
type Served = std::result::Result<furrow_proto::PayloadParts, Failure>;

/// What the arbiter needs to know of a finished task.
fn completion_of(r: &std::thread::Result<Served>) -> Completion {
    match r {
        Ok(Ok(_)) => Completion::Returned,
        // Failing *because* of a cancellation (of the context, or of the
        // whole actor) is the cancellation, not an error of its own.
        Ok(Err(f)) => Completion::Failed { cancellation: f.cancellation },
        Err(_) => Completion::Panicked,
    }
}

/// Removes a serving task's traces when it ends, however it ends (returns,
/// panics, or is aborted).
struct TaskCleanup {
    actor: Arc<Actor>,
    chan: Arc<Channel>,
    cid: Cid,
}

impl Drop for TaskCleanup {
    fn drop(&mut self) {
        // Neither lock is held by code that can drop a TaskCleanup.
        self.chan.close_dialog(self.cid);
        lock(&self.actor.tasks).remove(&(self.chan.id, self.cid));
    }
}

/// `Dispatch` needs an owned handle on the actor to spawn tasks.
pub(crate) struct ActorDispatch(pub(crate) Arc<Actor>);

impl Dispatch for ActorDispatch {
    fn on_start(&self, chan: &Arc<Channel>, cid: Cid, ns: String, func: String, kwargs: Payload, uid: Aid) {
        let actor = &self.0;
        // A request is the connection's peer's, whose identity was checked
        // when it connected: a `Start` naming someone else as its sender is
        // a forgery (a furrow actor always names itself), and is refused
        // before anything is acted on — `cancel_actor` included, so nobody
        // can cancel an actor in another's name.
        if uid != chan.peer {
            return actor.refuse(
                chan,
                cid,
                ErrorKind::IdentityMismatch,
                format!(
                    "refused `{ns}::{func}`: it names {uid} as its sender, but it came over the connection of {}; \
                     a request is attributed to the connection it comes over",
                    chan.peer
                ),
            );
        }
        if let Some(request) = Request::parse(&ns, &func, &kwargs) {
            return actor.runtime_request(chan, cid, request, uid);
        }
        if ns == REGISTRY_NS {
            // Served whatever `enable_modules` says: it is the runtime's.
            return match actor.registrar() {
                Some(reg) => {
                    let reg = reg.clone();
                    let chan_id = chan.id;
                    let name = format!("{REGISTRY_NS}::{func}");
                    actor.serve_builtin(
                        chan,
                        cid,
                        &name,
                        Box::pin(async move { reg.handle(chan_id, &func, kwargs).await.map(Into::into) }),
                    );
                }
                None => actor.refuse(
                    chan,
                    cid,
                    ErrorKind::NotARegistrar,
                    format!("actor {} is not a registrar (registry request `{func}`)", actor.aid),
                ),
            };
        }
        let name = if ns.is_empty() { func } else { format!("{ns}::{func}") };
        if !actor.exposes(&name) {
            return actor.refuse(
                chan,
                cid,
                ErrorKind::ModuleNotExposed,
                format!(
                    "actor {} does not serve `{name}` (its enabled modules: {:?})",
                    actor.aid, actor.config.enable_modules
                ),
            );
        }
        match lookup(&name) {
            Some(reg) => {
                crate::chaos::fault::at(crate::chaos::fault::Step::Start);
                actor.serve(chan, cid, name, reg.handler, kwargs)
            }
            None => actor.refuse(
                chan,
                cid,
                ErrorKind::FunctionNotFound,
                format!("no remote function `{name}` is registered in actor {}", actor.aid),
            ),
        }
    }

    fn on_closed(&self, chan: &Arc<Channel>) {
        let actor = &self.0;
        lock(&actor.channels).remove(&chan.id);
        // An actor whose registry channel is lost is no longer listed
        // (this is how a SIGKILLed actor leaves the registry).
        if let Some(reg) = actor.registrar() {
            reg.drop_channel(chan.id);
        }
        // Tasks serving the peer that left have nobody to report to, but
        // they may hold resources: cancel them as if the peer had asked
        // (a context callee gets its grace period and sees `cancelled()`
        // resolve, naming the lost peer; a plain call is dropped at once).
        // Each removes its own entry when it ends; the actor's shutdown
        // still finds (and, past the grace, aborts) those left.
        let orphaned: Vec<Arc<CancelScope>> =
            lock(&actor.tasks).iter().filter(|((c, _), _)| *c == chan.id).map(|(_, h)| h.scope.clone()).collect();
        if !orphaned.is_empty() {
            let why = crate::CancelReason::link_lost(chan);
            for scope in orphaned {
                scope.cancel_for(why.clone());
            }
        }
        let is_parent = lock(&actor.parent).as_ref().is_some_and(|p| p.id == chan.id);
        if is_parent && !actor.cancel.is_cancelled() {
            tracing::info!(actor = %actor.aid, "parent channel closed: cancelling self");
            // Nobody asked: the process will say so with its exit status
            // (see `entry::EXIT_PARENT_LOST`), so a parent that is still
            // alive does not take this exit for a polite one.
            actor.lose_parent(chan.peer.clone());
        }
    }
}
