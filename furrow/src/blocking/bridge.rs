//! How a blocking call reaches the runtime and comes back.
//!
//! A call is a future spawned on the runtime plus a one-shot reply the
//! calling thread waits for. Nothing else is shared between the two sides:
//!
//! - **No lock is held while user code runs.** Arguments are encoded and
//!   results decoded on the calling thread, before the request is queued and
//!   after the reply came back; the caller's arguments are dropped *after*
//!   the request is queued and *before* the wait. So a `Drop` or `Serialize`
//!   impl that itself makes a blocking call (a re-entrant call on the same
//!   thread, the bug of seed 001 where a `put` from a finalizer deadlocked
//!   on the queue lock its own thread held) finds nothing taken: its call is
//!   just one more independent request.
//! - **Queueing never blocks.** `Handle::spawn` from a thread outside the
//!   runtime pushes onto tokio's injection queue (a short internal critical
//!   section that never runs user code), and the reply is a
//!   `tokio::sync::oneshot` (atomics, no lock).
//! - **The wait is an ordinary thread park** (`futures::executor::block_on`
//!   on the reply), so any thread may wait, including one that received a
//!   signal through `sigwait`, while other threads' calls are in flight.
//!
//! What is refused: a blocking call from one of this runtime's own threads
//! (a progress callback, a `Drop` that runs inside the runtime) would wait
//! for work that needs the very thread it occupies; it returns
//! [`Error::Usage`] instead of risking that deadlock.

use crate::{Error, Result};
use std::cell::{Cell, RefCell};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

thread_local! {
    /// Set on the threads of a blocking runtime (see `on_thread_start`).
    static ON_RUNTIME_THREAD: Cell<bool> = const { Cell::new(false) };
    /// The context bodies running on this thread, innermost last: every
    /// blocking call made from this thread also races their scopes, so a
    /// context that fails ends the calls its body makes through any
    /// handle, not only through the context's own (the sync stand-in for
    /// dropping an async body at its next await).
    static ENCLOSING: RefCell<Vec<(CancellationToken, &'static str)>> = const { RefCell::new(Vec::new()) };
}

/// While alive, blocking calls made on this thread race `scope` too (see
/// `ENCLOSING`). Not `Send`: it must be dropped on the thread that made it.
pub(super) struct Enclosing(std::marker::PhantomData<*const ()>);

/// Enter a sync body's scope on this thread, until the guard is dropped.
pub(super) fn enclose(scope: CancellationToken, what: &'static str) -> Enclosing {
    ENCLOSING.with(|e| e.borrow_mut().push((scope, what)));
    Enclosing(std::marker::PhantomData)
}

impl Drop for Enclosing {
    /// Scopes nest (a guard lives for one body, on one thread), so the one
    /// this guard pushed is the last.
    fn drop(&mut self) {
        ENCLOSING.with(|e| drop(e.borrow_mut().pop()));
    }
}

/// Resolves with the `what` of the first of `scopes` that is over.
///
/// # Cancel safety
/// Cancel safe: it only waits on tokens.
async fn first_over(scopes: Vec<(CancellationToken, &'static str)>) -> &'static str {
    let waits = scopes.into_iter().map(|(t, what)| {
        Box::pin(async move {
            t.cancelled().await;
            what
        })
    });
    // Never empty: the handle's own scope is always there.
    futures::future::select_all(waits).await.0
}

/// Mark the current thread as one of a blocking runtime's own threads.
pub(super) fn mark_runtime_thread() {
    ON_RUNTIME_THREAD.with(|c| c.set(true));
}

/// Refuse a blocking call made on one of the runtime's own threads.
pub(super) fn check_thread(what: &str) -> Result<()> {
    if ON_RUNTIME_THREAD.with(Cell::get) {
        return Err(Error::usage(format!(
            "furrow::blocking: {what} called on one of the furrow runtime's own threads (from async code, a \
             progress callback or a Drop running in the runtime); it would wait for work that needs this \
             thread. Use the async API there"
        )));
    }
    Ok(())
}

/// Where a blocking handle sends its calls, and the scope it belongs to.
#[derive(Clone, Debug)]
pub(super) struct Bridge {
    pub(super) rt: tokio::runtime::Handle,
    /// Cancelled when the scope the handle came from (a nursery body, a
    /// context body, the runtime) is over: calls in flight are dropped
    /// (which cancels them remotely, rule 5a) and new ones fail at once.
    pub(super) scope: CancellationToken,
    /// What the scope is, for the error: "nursery", "context", "runtime".
    pub(super) what: &'static str,
}

/// A request queued on the runtime, not yet waited for.
#[derive(Debug)]
#[must_use = "wait() for the reply"]
pub(super) struct Pending<T> {
    rx: oneshot::Receiver<Result<T>>,
    what: &'static str,
}

impl Bridge {
    /// A bridge for a scope nested in this one.
    pub(super) fn nested(&self, what: &'static str) -> Bridge {
        Bridge { rt: self.rt.clone(), scope: self.scope.child_token(), what }
    }

    /// Queue `fut` on the runtime. It races the scope: once the scope is
    /// over, `fut` is dropped and the call fails.
    pub(super) fn submit<T, F>(&self, what: &str, fut: F) -> Result<Pending<T>>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        check_thread(what)?;
        let (tx, rx) = oneshot::channel();
        // This handle's scope, and those of the context bodies running on
        // this thread (the call is made from inside them).
        let mut scopes = vec![(self.scope.clone(), self.what)];
        ENCLOSING.with(|e| scopes.extend(e.borrow().iter().cloned()));
        // If the runtime is shut down, `spawn` drops the task: `tx` with
        // it, and `wait` reports the runtime's end.
        let task = async move {
            // `biased`: a scope that is over wins over a call that happens
            // to be ready in the same poll, so no call outlives its scope.
            // Losing, `fut` is dropped: for a remote call that queues its
            // cancel request (rule 5a); nothing else is lost, since the
            // caller is told the call was cancelled.
            let out = tokio::select! {
                biased;
                over = first_over(scopes) => Err(scope_over(over)),
                out = fut => out,
            };
            let _ = tx.send(out);
        };
        // Under the root actor's span, like every task of the runtime.
        drop(self.rt.spawn(tracing::Instrument::instrument(task, crate::log::actor_span())));
        Ok(Pending { rx, what: self.what })
    }

    /// Submit and wait.
    pub(super) fn call<T, F>(&self, what: &str, fut: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        self.submit(what, fut)?.wait()
    }
}

impl<T> Pending<T> {
    /// Park this thread until the reply arrives.
    pub(super) fn wait(self) -> Result<T> {
        let what = self.what;
        wait_reply(self.rx).unwrap_or_else(|| Err(runtime_gone(what)))
    }
}

/// Park until `rx` has a value; `None` if its sender was dropped.
pub(super) fn wait_reply<T>(rx: oneshot::Receiver<T>) -> Option<T> {
    futures::executor::block_on(rx).ok()
}

/// The error of a call whose scope is over.
pub(super) fn scope_over(what: &str) -> Error {
    Error::ActorCancelled { canceller: None, reason: format!("the {what} this call belongs to is over") }
}

/// The error of a call whose reply can never come.
pub(super) fn runtime_gone(what: &str) -> Error {
    Error::ActorCancelled {
        canceller: None,
        reason: format!("the {what} this call belongs to ended, or the furrow runtime shut down, before it replied"),
    }
}

/// A scope (a nursery, a pool) whose async side runs on the runtime and
/// whose body runs on this thread:
///
/// 1. `open` starts the async scope on the runtime; its async body sends
///    the sync handle through the sender it is given, then waits for the
///    receiver (the sync body's end). It must hold `Bridge::scope`'s drop
///    guard for as long as it runs, so that the handle's calls stop at once
///    when the async side ends or is dropped (one-cancels-all, a cancel of
///    the actor).
/// 2. The sync body runs here with the handle. A panic is caught, the
///    scope is ended and waited for (nothing outlives it, panic or not),
///    then the panic resumes.
/// 3. The scope's own error (a child's failure, a cancel) wins over the
///    body's, which is usually its consequence; else the body's result.
pub(super) fn scoped<H, R, E, O, B>(rt: &Bridge, what: &'static str, open: O, body: B) -> std::result::Result<R, E>
where
    O: FnOnce(Bridge, oneshot::Sender<H>, oneshot::Receiver<()>) -> futures::future::BoxFuture<'static, Result<()>>,
    B: FnOnce(&H) -> std::result::Result<R, E>,
    E: From<Error> + std::fmt::Display,
{
    check_thread(what).map_err(E::from)?;
    let (handle_tx, handle_rx) = oneshot::channel::<H>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let (end_tx, end_rx) = oneshot::channel::<Result<()>>();
    let scope = open(rt.nested(what), handle_tx, done_rx);
    drop(rt.rt.spawn(tracing::Instrument::instrument(
        async move {
            let _ = end_tx.send(scope.await);
        },
        crate::log::actor_span(),
    )));
    let ended = |end_rx| wait_reply(end_rx).unwrap_or_else(|| Err(runtime_gone(what)));
    let Some(handle) = wait_reply(handle_rx) else {
        // The scope never ran its body (the actor was already cancelled,
        // or the runtime is gone): its error is the answer.
        return Err(E::from(ended(end_rx).err().unwrap_or_else(|| runtime_gone(what))));
    };
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&handle)));
    drop(handle);
    let _ = done_tx.send(());
    let end = ended(end_rx);
    let out = match out {
        Ok(out) => out,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    match end {
        Ok(()) => out,
        Err(e) => {
            if let Err(own) = &out {
                tracing::debug!("{what} body failed too (after its scope did): {own}");
            }
            Err(E::from(e))
        }
    }
}

/// The end of a context or stream body that ran on this thread (its handle
/// already dropped): tell the async side whether the body succeeded (a
/// failure there cancels the callee, or leaves the stream to the context's
/// outcome), wait for the async scope to end, then decide. A panic resumes;
/// the body's own error wins (the scope's error would be its consequence);
/// else the scope's end decides (a callee error, or a cancel this side did
/// not ask for).
pub(super) fn body_verdict<R, E: From<Error>>(
    out: std::thread::Result<std::result::Result<R, E>>,
    done: oneshot::Sender<bool>,
    end: Pending<()>,
) -> std::result::Result<R, E> {
    let _ = done.send(matches!(out, Ok(Ok(_))));
    let end = end.wait();
    match out {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(Err(own)) => Err(own),
        Ok(Ok(r)) => end.map(|()| r).map_err(E::from),
    }
}
