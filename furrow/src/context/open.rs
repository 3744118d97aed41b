//! The opener's side: `Portal::open_context`.

use super::role::Opener;
use super::scope::CancelScope;
use super::{Context, Side};
use crate::dialog::OpenDialog;
use crate::portal::Portal;
use crate::remote::{Args, ContextFn};
use crate::{Error, Result};
use furrow_proto::{FuncType, Msg, Payload};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use tracing::Instrument;

impl Portal {
    /// Open a context with `f(args)` in the peer: wait until the callee
    /// called `started(first)`, run `body(&ctx, first)`, then wait for the
    /// callee's outcome, and return the body's value.
    ///
    /// - If the body returns `Err(e)`, the callee is cancelled (it sees
    ///   this actor as the canceller), its end is awaited (bounded by
    ///   `cancel_ack_timeout` plus the grace period), and `e` is returned,
    ///   never masked by the cancellation it caused.
    /// - If the body returns `Ok`, the scope does not end before the
    ///   callee's outcome arrived; stream messages still in flight are
    ///   drained and dropped. An error in the callee, or a cancellation not
    ///   asked for by this context, is returned as the error.
    /// - If the context fails while the body runs — the callee returns an
    ///   error or panics, it is cancelled by anyone but this context's own
    ///   [`cancel`](Context::cancel) (`ContextCancelled` raised), or the
    ///   connection is lost — the body is *interrupted*: its future is
    ///   dropped at the await where it waits, whatever it waits on (the
    ///   context, a lock, another call, which is then cancelled: rule 5a),
    ///   and `open_context` returns that error. A body whose own result is
    ///   ready in the same poll completes instead (the failure interrupts
    ///   only where the body would wait); the rules above then apply, so
    ///   the callee's error is still returned if the body returned `Ok`.
    /// - A callee that *returns* (or a cancel this context asked for)
    ///   leaves the body running: the value waits in
    ///   [`wait_for_result`](Context::wait_for_result), and an open stream
    ///   ends (`recv` gives `None`).
    ///
    /// A body that does not wait on its context still ends with it:
    ///
    /// ```no_run
    /// #[furrow::context]
    /// async fn lease(ctx: furrow::Context) -> Result<(), String> {
    ///     ctx.started(&()).await.map_err(|e| e.to_string())?;
    ///     Err("lease revoked".into())
    /// }
    ///
    /// #[furrow::remote]
    /// async fn long_job() {}
    ///
    /// # async fn demo(p: furrow::Portal, work: furrow::Portal) -> furrow::Result<()> {
    /// let r = p
    ///     .open_context(lease, (), async |_ctx, (): ()| {
    ///         work.run(long_job, ()).await // cancelled when the lease fails
    ///     })
    ///     .await;
    /// assert!(matches!(r, Err(furrow::Error::Remote(_))));
    /// # Ok(()) }
    /// ```
    ///
    /// ```no_run
    /// #[furrow::context]
    /// async fn counter(ctx: furrow::Context, upto: u64) -> furrow::Result<u64> {
    ///     ctx.started(&"ready").await?;
    ///     ctx.open_stream(async |s| {
    ///         for i in 0..upto { s.send(&i).await?; }
    ///         Ok(upto)
    ///     }).await
    /// }
    ///
    /// # async fn demo(p: furrow::Portal) -> furrow::Result<()> {
    /// let sum = p.open_context(counter, (10,), async |ctx, first: String| {
    ///     assert_eq!(first, "ready");
    ///     let sum = ctx.open_stream(async |s| {
    ///         let mut sum = 0;
    ///         while let Some(x) = s.recv::<u64>().await? { sum += x; }
    ///         furrow::Ok(sum)
    ///     }).await?;
    ///     assert_eq!(ctx.wait_for_result::<u64>().await?, furrow::Outcome::Returned(10));
    ///     furrow::Ok(sum)
    /// }).await?;
    /// assert_eq!(sum, 45);
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the future cancels the callee (a cancel request is queued
    /// from `Drop`, without waiting) and drops the body with it.
    #[track_caller]
    pub fn open_context<A, O, F, R, E, B>(
        &self,
        f: ContextFn<A, O>,
        args: A,
        body: B,
    ) -> impl Future<Output = std::result::Result<R, E>>
    where
        A: Args,
        F: DeserializeOwned,
        B: AsyncFnOnce(&Context<Opener>, F) -> std::result::Result<R, E>,
        E: From<Error>,
    {
        let opened_at = std::panic::Location::caller();
        let span = crate::log::dialog_span(true, None, f.name(), &self.chan.peer, "opener");
        async move {
            let target = Target::of(f, &args).map_err(E::from)?;
            drop(args);
            self.run_context(target, body, opened_at).await
        }
        .instrument(span)
    }

    /// [`open_context`](Self::open_context) with the arguments already
    /// encoded (the blocking API encodes them on the caller's thread).
    pub(crate) async fn run_context<F, R, E, B>(
        &self,
        target: Target,
        body: B,
        opened_at: &'static std::panic::Location<'static>,
    ) -> std::result::Result<R, E>
    where
        F: DeserializeOwned,
        B: AsyncFnOnce(&Context<Opener>, F) -> std::result::Result<R, E>,
        E: From<Error>,
    {
        match self.run_context_ended(target, body, opened_at).await {
            BodyEnd::Ran(out) => out,
            BodyEnd::Interrupted(e) => Err(E::from(e)),
        }
    }

    /// [`run_context`](Self::run_context), telling whether the body ran
    /// to its end or was interrupted by the context's failure (the blocking
    /// API needs to know which error is the cause).
    pub(crate) async fn run_context_ended<F, R, E, B>(
        &self,
        target: Target,
        body: B,
        opened_at: &'static std::panic::Location<'static>,
    ) -> BodyEnd<std::result::Result<R, E>>
    where
        F: DeserializeOwned,
        B: AsyncFnOnce(&Context<Opener>, F) -> std::result::Result<R, E>,
        E: From<Error>,
    {
        let (ctx, first) = match self.start_context::<F>(target, opened_at).await {
            Ok(opened) => opened,
            Err(e) => return BodyEnd::Ran(Err(E::from(e))),
        };
        // The body races the context's failure (rule 1 of `open_context`:
        // a callee error, a cancellation not absorbed, or the lost link
        // ends the body). `biased`: the body is polled first, so a body
        // whose own result is ready in the same poll as the failure
        // completes (trio's checkpoint rule: the failure interrupts only
        // where the body would wait); its result is then judged below with
        // the callee's outcome, as if the failure had come later. Losing,
        // the body's future is dropped at the await where it waited (rule
        // 5a: dropping is cancelling; its calls in flight are cancelled).
        // `interrupted` takes nothing, so losing it loses nothing.
        let out = {
            let body = body(&ctx, first);
            tokio::select! {
                biased;
                out = body => out,
                () = ctx.interrupted() => {
                    // The outcome is in the mailbox already (or the mailbox
                    // is closed): this takes it without waiting for anyone.
                    ctx.wait_final().await;
                    let e = match ctx.result_from_final::<serde::de::IgnoredAny>() {
                        Err(e) => e,
                        Ok(_) => Error::Closed(format!("context `{}` ended", ctx.inner.func)),
                    };
                    tracing::debug!("the body of context `{}` was interrupted: {e}", ctx.inner.func);
                    return BodyEnd::Interrupted(e);
                }
            }
        };
        BodyEnd::Ran(match out {
            Ok(r) => {
                ctx.wait_final().await;
                ctx.result_from_final::<serde::de::IgnoredAny>().map(|_| r).map_err(E::from)
            }
            Err(e) => {
                if ctx.state().final_.is_none() {
                    // Cancel the callee and give it a bounded time to end.
                    // Whatever happens here is secondary: `e` is returned.
                    let _ = ctx.cancel().await;
                    let bound = ctx.inner.cancel_ack_timeout * 2;
                    // Cancel safe: losing the timeout only stops draining;
                    // the outcome, if it comes, is stored where it lands.
                    let _ = tokio::time::timeout(bound, ctx.wait_final()).await;
                }
                Err(e)
            }
        })
    }

    async fn start_context<F: DeserializeOwned>(
        &self,
        target: Target,
        opened_at: &'static std::panic::Location<'static>,
    ) -> Result<(Context<Opener>, F)> {
        let Target { name, ns, func, kwargs } = target;
        let f = Named(name);
        let mut d = OpenDialog::start_admitted(&self.chan, ns, func, kwargs).await?;
        // The current span is this context's (see `open_context`).
        tracing::Span::current().record("cid", d.cid());
        let first: Payload = loop {
            match d.next().await? {
                Msg::StartAck { functype: FuncType::Context, .. } => {}
                Msg::StartAck { .. } => {
                    return Err(Error::usage(format!(
                        "`{}` is a plain function, not a context: call it with run",
                        f.name()
                    )));
                }
                Msg::Started { pld, .. } => break pld,
                Msg::Return { .. } => {
                    return Err(Error::Protocol {
                        peer: self.chan.peer.to_string(),
                        reason: format!("context `{}` returned without calling started()", f.name()),
                    });
                }
                other => {
                    return Err(Error::Protocol {
                        peer: self.chan.peer.to_string(),
                        reason: format!("unexpected {:?} while opening context `{}`", other.kind(), f.name()),
                    });
                }
            }
        };
        let first: F = first.decode()?;
        let (chan, cid, rx, flow) = d.into_parts();
        let ctx = Context::new(
            chan,
            cid,
            Side::Opener,
            f.name().to_owned(),
            rx,
            flow,
            Arc::new(CancelScope::default()),
            self.stream_window,
            self.cancel_ack_timeout,
        );
        ctx.set_opened_at(opened_at);
        Ok((ctx, first))
    }
}

/// How an opener's body ended.
#[derive(Debug)]
pub(crate) enum BodyEnd<T> {
    /// It returned: its value, judged with the callee's outcome.
    Ran(T),
    /// The context failed (callee error, cancellation not absorbed, lost
    /// link) and the body was dropped; this is the context's error.
    Interrupted(Error),
}

/// A context function and its encoded arguments: what opening a context
/// sends.
#[derive(Debug)]
pub(crate) struct Target {
    name: &'static str,
    ns: &'static str,
    func: &'static str,
    kwargs: furrow_proto::PayloadParts,
}

impl Target {
    /// Encode `args` for `f` (runs the arguments' `Serialize`).
    pub(crate) fn of<A: Args, O>(f: ContextFn<A, O>, args: &A) -> Result<Target> {
        let kwargs = args.to_kwargs_parts(f.params())?;
        let (ns, func) = f.ns_func();
        Ok(Target { name: f.name(), ns, func, kwargs })
    }
}

/// The function's name, for messages.
struct Named(&'static str);

impl Named {
    fn name(&self) -> &'static str {
        self.0
    }
}
