//! Contexts: linked task pairs across actors (see [`Context`]).

mod mailbox;
mod open;
pub mod role;
pub(crate) use open::{BodyEnd, Target};
pub(crate) mod scope;
mod state;
mod stream;

pub use scope::CancelReason;
pub use stream::{MsgStream, StreamOptions, Subscriber};

use mailbox::Mailbox;
use state::{Final, Inner, State, describe};

use crate::ipc::flow::Flow;
use crate::ipc::{Channel, Inbound};
use crate::{Error, Result};
use furrow_proto::flow::Window;
use furrow_proto::request::Request;
use furrow_proto::{Aid, Cid, Msg, Payload};
use scope::CancelScope;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Which end of a context this is.
///
/// ```
/// use furrow::{Context, Side};
/// /// Log lines that say which end wrote them.
/// fn tag(ctx: &Context) -> String {
///     let side = match ctx.side() {
///         Side::Opener => "opener",
///         Side::Callee => "callee",
///     };
///     format!("[{side} of #{} with {}]", ctx.cid(), ctx.peer())
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The actor that opened it.
    Opener,
    /// The actor running the `#[furrow::context]` function.
    Callee,
}

/// How a context ended, when it did not end with an error.
///
/// ```no_run
/// use furrow::Outcome;
/// # async fn demo(ctx: &furrow::Context<furrow::role::Opener>) -> furrow::Result<()> {
/// match ctx.wait_for_result::<u64>().await? {
///     Outcome::Returned(total) => println!("callee returned {total}"),
///     Outcome::Cancelled { canceller } => println!("cancelled, as {canceller} asked"),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome<T> {
    /// The callee returned this value.
    Returned(T),
    /// The context was cancelled, at this side's own request.
    Cancelled {
        /// Who cancelled (this actor).
        canceller: Aid,
    },
}

/// What is known of a context's end (see [`Context::outcome`]).
///
/// ```
/// use furrow::OutcomeInfo;
/// fn describe(o: Option<OutcomeInfo>) -> String {
///     match o {
///         None => "still running".into(),
///         Some(OutcomeInfo::Returned) => "returned".into(),
///         Some(OutcomeInfo::Failed(why)) => format!("failed: {why}"),
///         Some(OutcomeInfo::Cancelled { canceller }) => format!("cancelled by {canceller}"),
///         Some(OutcomeInfo::TransportClosed(why)) => format!("connection lost: {why}"),
///     }
/// }
/// assert_eq!(describe(None), "still running");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum OutcomeInfo {
    /// The callee returned a value.
    Returned,
    /// The callee failed (error or panic), with this description.
    Failed(String),
    /// The context was cancelled by `canceller`.
    Cancelled {
        /// Who cancelled.
        canceller: Aid,
    },
    /// The connection was lost.
    TransportClosed(String),
}

/// Contexts: linked task pairs across actors, with a two-way stream.
///
/// A context links a task in the *opener* (the actor that called
/// [`Portal::open_context`](crate::Portal::open_context)) to a task in the
/// *callee* (a `#[furrow::context]` function in the peer). Whatever ends
/// one side ends the other in a defined way:
///
/// | what happens | the callee | the opener |
/// |---|---|---|
/// | callee returns `Ok(v)` | — | the body runs on; `wait_for_result` gives `Outcome::Returned(v)`; an open stream ends (`recv` gives `None`) |
/// | callee returns `Err` or panics | — | the body is interrupted (dropped where it waits); `open_context` returns the `RemoteActorError` (as do `recv` and `wait_for_result`) |
/// | opener's body returns `Err(e)` | cancelled, canceller = opener | `open_context` returns `e`, after a bounded wait for the callee to end |
/// | opener calls `ctx.cancel()` | cancelled, canceller = opener | *absorbed*: streams end as if closed, `wait_for_result` gives `Outcome::Cancelled`, `open_context` returns the body's value |
/// | callee calls `ctx.cancel()` | cancelled, canceller = callee | raised: the body is interrupted, `Error::ContextCancelled { canceller: callee }` |
/// | a third actor cancels the callee's actor | cancelled, canceller = that actor | raised: the body is interrupted, `Error::ContextCancelled { canceller: third }` |
/// | the opener's future is dropped | cancelled, canceller = opener | — |
/// | the connection is lost | cancelled, canceller = the lost opener, [`CancelReason::LinkLost`] | the body is interrupted, `Error::TransportClosed` |
///
/// Rules (each one is a test in `tests/integration/context_*.rs`):
///
/// 1. `open_context` returns only after the callee called `started`; the
///    opener's scope does not end before the callee's outcome arrived
///    (`Yield`s still in flight then are drained and dropped). A failed
///    context (callee error, cancellation raised, lost link) interrupts
///    the opener's body wherever it waits; a returned one does not.
/// 2. A cancel is absorbed only when *this context* asked for it and this
///    actor is the canceller; every other cancellation is raised, naming
///    who cancelled.
/// 3. A cancelled callee sees [`Context::cancelled`] resolve (with the
///    canceller) and has a grace period (`Config::cancel_grace`) to clean
///    up; then its future is dropped. A lost link to the opener is such a
///    cancellation too ([`Context::cancel_reason`]). Its outcome is `ContextCancelled`
///    unless it failed with an error of its own during the grace period,
///    which is reported instead (never masked).
/// 4. A cancel and a completion of the same context are never both
///    delivered, nor neither: the callee's wrapper picks exactly one.
/// 5. A stream is opened by both sides, once per context, only after
///    `started` and never after a cancel. Closing (`Stop`) is not
///    cancelling: the peer's `recv` ends with `None` and its `send`s fail
///    with [`Error::Closed`](crate::Error::Closed).
/// 6. Backpressure is per stream: a receiver grants its window as credit
///    and re-grants as it consumes; a sender without credit waits. In
///    overrun mode ([`StreamOptions::overrun_errors`]) the sender never
///    waits and a receiver that falls more than a window behind fails with
///    `StreamOverrun`. Memory is bounded by the window in both modes.
///
/// **Each end has its own handle type** (see [`role`]): a
/// `#[furrow::context]` function gets a `Context` (that is,
/// `Context<role::Callee>`, with [`started`](Context::started)), the
/// opener's body a `Context<role::Opener>` (with
/// [`wait_for_result`](Context::wait_for_result)); both have the methods
/// the ends share, and [`any`](Context::any) lends a
/// `Context<role::Either>` to code that works on either. Calling one end's
/// method on the other's handle does not compile.
///
/// Cheap to clone; clones share the context.
///
/// A callee that streams until its opener cancels it, and cleans up in its
/// grace period; the opener takes five items and cancels:
///
/// ```no_run
/// use furrow::{Context, Outcome};
/// use std::time::Duration;
///
/// #[furrow::context]
/// async fn ticks(ctx: Context, every_ms: u64) -> furrow::Result<()> {
///     ctx.started(&()).await?;
///     ctx.open_stream(async |s| {
///         let mut n = 0u64;
///         loop {
///             tokio::select! {
///                 by = ctx.cancelled() => {
///                     // The grace period (`Config::cancel_grace`): clean up.
///                     eprintln!("context {} cancelled by {by} after {n} ticks", ctx.cid());
///                     return Ok(());
///                 }
///                 () = tokio::time::sleep(Duration::from_millis(every_ms)) => {
///                     s.send(&n).await?;
///                     n += 1;
///                 }
///             }
///         }
///     })
///     .await
/// }
///
/// # async fn demo(p: furrow::Portal) -> furrow::Result<()> {
/// let got = p
///     .open_context(ticks, (10,), async |ctx, _: ()| {
///         let got = ctx
///             .open_stream(async |s| {
///                 let mut got = Vec::new();
///                 while let Some(t) = s.recv::<u64>().await? {
///                     got.push(t);
///                     if got.len() == 5 {
///                         ctx.cancel().await?;
///                     }
///                 }
///                 furrow::Ok(got) // the cancel ended the stream
///             })
///             .await?;
///         // Asked for by this side: absorbed, not an error.
///         let outcome = ctx.wait_for_result::<()>().await?;
///         assert!(matches!(outcome, Outcome::Cancelled { .. }));
///         furrow::Ok(got)
///     })
///     .await?;
/// assert!(got.len() >= 5);
/// # Ok(()) }
/// ```
pub struct Context<S: role::Role = role::Callee> {
    pub(crate) inner: Arc<Inner>,
    role: std::marker::PhantomData<fn() -> S>,
}

impl<S: role::Role> Clone for Context<S> {
    fn clone(&self) -> Self {
        Context { inner: self.inner.clone(), role: std::marker::PhantomData }
    }
}

impl<S: role::Role> std::fmt::Debug for Context<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Context({:?} of `{}`, cid {}, peer {})",
            self.inner.side, self.inner.func, self.inner.cid, self.inner.chan.peer
        )
    }
}

impl<S: role::Role> Context<S> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        chan: Arc<Channel>,
        cid: Cid,
        side: Side,
        func: String,
        rx: mpsc::UnboundedReceiver<Inbound>,
        flow: Arc<Flow>,
        scope: Arc<CancelScope>,
        window: Window,
        cancel_ack_timeout: Duration,
    ) -> Context<S> {
        let local = chan.local.clone();
        Context {
            role: std::marker::PhantomData,
            inner: Arc::new(Inner {
                chan,
                cid,
                side,
                func,
                local,
                flow,
                mailbox: Arc::new(tokio::sync::Mutex::new(Mailbox { rx })),
                cursor: Mutex::new(mailbox::Cursor::default()),
                state: Mutex::new(State { started: side == Side::Opener, ..State::default() }),
                local_stopped: std::sync::atomic::AtomicBool::new(false),
                ended: watch::Sender::new(false),
                scope,
                window: Window { msgs: window.msgs.max(1), bytes: window.bytes.max(1) },
                cancel_ack_timeout,
                opened_at: std::sync::OnceLock::new(),
            }),
        }
    }

    /// This handle as [`Either`](role::Either) end's: the methods both ends
    /// share, for code that works on either.
    ///
    /// ```
    /// # fn demo(ctx: &furrow::Context) {
    /// let any: furrow::Context<furrow::role::Either> = ctx.any();
    /// assert_eq!(any.cid(), ctx.cid());
    /// # }
    /// ```
    pub fn any(&self) -> Context<role::Either> {
        Context { inner: self.inner.clone(), role: std::marker::PhantomData }
    }

    pub(crate) fn set_opened_at(&self, at: &'static std::panic::Location<'static>) {
        let _ = self.inner.opened_at.set(at);
    }

    /// This side.
    ///
    /// ```
    /// # fn demo(ctx: &furrow::Context) {
    /// if ctx.side() == furrow::Side::Callee {
    ///     // only the callee may call `started`
    /// }
    /// # }
    /// ```
    pub fn side(&self) -> Side {
        self.inner.side
    }

    /// The context id (unique on its channel; together with
    /// [`peer`](Self::peer) it names the context).
    ///
    /// ```
    /// # fn demo(ctx: &furrow::Context) {
    /// let span = tracing::info_span!("ticks", cid = ctx.cid(), peer = %ctx.peer());
    /// # let _ = span;
    /// # }
    /// ```
    pub fn cid(&self) -> Cid {
        self.inner.cid
    }

    /// The actor at the other end.
    ///
    /// ```
    /// # fn demo(ctx: &furrow::Context) {
    /// eprintln!("serving {} (pid {})", ctx.peer().name, ctx.peer().pid);
    /// # }
    /// ```
    pub fn peer(&self) -> &Aid {
        &self.inner.chan.peer
    }

    /// Open this side of the context's stream with default options, run
    /// `body` with it, then close it (the peer's `recv` gives `None`) if
    /// `body` succeeded; a failed `body` leaves the context's outcome to
    /// end the peer's stream.
    ///
    /// Errors: [`Error::ContextCancelled`] once the context was cancelled
    /// ("stream after cancel"), [`Error::Usage`] before `started` or for a
    /// second stream, and `body`'s own error.
    ///
    /// # Cancel safety
    /// Dropping the future drops the stream without sending `Stop`; the
    /// context's own teardown (its outcome, or its cancellation) ends it.
    /// A fan-out pump ([`subscribe`](MsgStream::subscribe)) is stopped with
    /// the stream.
    pub async fn open_stream<R, E, B>(&self, body: B) -> std::result::Result<R, E>
    where
        B: AsyncFnOnce(&MsgStream) -> std::result::Result<R, E>,
        E: From<Error>,
    {
        self.open_stream_with(StreamOptions::default(), body).await
    }

    /// [`open_stream`](Self::open_stream) with options (window size,
    /// overrun mode).
    ///
    /// ```no_run
    /// use furrow::StreamOptions;
    /// # async fn demo(ctx: &furrow::Context) -> furrow::Result<()> {
    /// // A live view: never slow the producer down; fail if we fall more
    /// // than 64 frames behind instead.
    /// let opts = StreamOptions::new().window(64).overrun_errors(true);
    /// ctx.open_stream_with(opts, async |s| {
    ///     while let Some(frame) = s.recv::<Vec<u8>>().await? {
    ///         # let _ = frame;
    ///     }
    ///     furrow::Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// As [`open_stream`](Self::open_stream).
    pub async fn open_stream_with<R, E, B>(&self, opts: StreamOptions, body: B) -> std::result::Result<R, E>
    where
        B: AsyncFnOnce(&MsgStream) -> std::result::Result<R, E>,
        E: From<Error>,
    {
        let stream = self.begin_stream(opts).await.map_err(E::from)?;
        let out = body(&stream).await;
        // Only a body that succeeded closes the stream cleanly (`Stop`). One
        // that failed leaves it to the context's outcome (its error, or the
        // cancellation its opener sends) to end the peer's stream, so the
        // peer never mistakes a failure for a clean close.
        stream.finish(out.is_ok()).await;
        out
    }

    async fn begin_stream(&self, opts: StreamOptions) -> Result<MsgStream> {
        // Decide under the state lock, build errors after releasing it
        // (building one reads the state again: std locks do not re-enter).
        let refusal = {
            let mut st = self.state();
            if self.inner.scope.is_cancelled() || st.cancel_called {
                Some(None)
            } else if !st.started {
                Some(Some(Error::usage("open the stream after started()")))
            } else if st.stream_opened {
                Some(Some(Error::usage("a context has one stream; it was already opened")))
            } else if let Some(f) = &st.final_ {
                let e = Error::Closed(format!("context `{}` already ended ({})", self.inner.func, describe(f)));
                Some(Some(e))
            } else {
                st.stream_opened = true;
                None
            }
        };
        match refusal {
            Some(None) => return Err(self.cancelled_error("cannot open a stream on a cancelled context")),
            Some(Some(e)) => return Err(e),
            None => {}
        }
        let window = Window {
            msgs: opts.window.map_or(self.inner.window.msgs, |n| n as u64),
            bytes: opts.window_bytes.map_or(self.inner.window.bytes, |n| n as u64),
        };
        // The session keeps the window; `None`: the dialog already left
        // it (its outcome passed), and nothing more will arrive. The
        // window opens under the cursor's lock (order: cursor, then the
        // session, as everywhere), so no `Yield` the session admits from
        // now on can be taken before its consumer's count is in place. A
        // peer keeping to the protocol sends none before the `Credit`
        // below; one that ignores credit may, and a mailbox holder
        // (`wait_final`) may be reading already: a value taken uncounted
        // would never be given back to the window.
        let opened = {
            let mut cur = crate::sync::lock(&self.inner.cursor);
            self.inner.chan.open_stream(self.inner.cid, window, opts.overrun_errors).map(|(grant, acks)| {
                cur.acks = Some(acks);
                grant
            })
        };
        if let Some(grant) = opened {
            self.inner.chan.send(&Msg::Credit { cid: self.inner.cid, n: grant.msgs, bytes: grant.bytes })?;
        }
        Ok(MsgStream::new(self.any(), usize::try_from(window.msgs).unwrap_or(usize::MAX)))
    }

    /// Cancel the context.
    ///
    /// - Opener: asks the callee's actor to cancel the callee task and
    ///   waits (bounded) for the acknowledgement. The context's outcome is
    ///   then `Cancelled` *by this actor*, which is absorbed: streams end
    ///   as if closed and `wait_for_result` gives `Outcome::Cancelled`.
    /// - Callee: cancels its own task (after the grace period); the opener
    ///   sees `ContextCancelled` raised, naming this actor.
    ///
    /// # Cancel safety
    /// Cancel safe: the request is queued before the first await; dropping
    /// the future only stops waiting for the acknowledgement.
    pub async fn cancel(&self) -> Result<()> {
        {
            let mut st = self.state();
            st.cancel_called = true;
            // Over already (its outcome was read, or the channel's reader
            // has seen it arrive): nothing to ask.
            if st.final_.is_some() || (self.inner.side == Side::Opener && self.inner.flow.ended_already()) {
                return Ok(());
            }
        }
        match self.inner.side {
            Side::Callee => {
                self.inner.scope.cancel(self.inner.local.clone());
                Ok(())
            }
            Side::Opener => {
                self.inner.flow.note_cancel(&self.inner.local);
                let within = self.inner.cancel_ack_timeout;
                let (peer, func) = (&self.inner.chan.peer, &self.inner.func);
                let request = Request::CancelTask { cid: self.inner.cid };
                let reply = crate::dialog::request_cancel(&self.inner.chan, request, within, || {
                    format!("{peer} to acknowledge cancelling context `{func}`")
                })
                .await?;
                // Acked with the task still running there: the cancel
                // reached it. A task that had ended (its outcome still on
                // the way) is acked with `found: false`.
                if reply == (crate::dialog::CancelReply::Acked { found: true }) {
                    self.state().cancel_acked = true;
                }
                Ok(())
            }
        }
    }

    /// Callee: resolves when this context is asked to cancel, with who
    /// asked, or when the connection to its opener is lost, with the lost
    /// opener ([`cancel_reason`](Self::cancel_reason) tells which). The
    /// task then has the grace period to clean up.
    ///
    /// Opener: resolves when the context ended cancelled.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn cancelled(&self) -> Aid {
        match self.inner.side {
            Side::Callee => {
                self.inner.scope.cancelled().await;
                self.inner.scope.canceller().unwrap_or_else(|| self.inner.local.clone())
            }
            Side::Opener => {
                let mut rx = self.inner.ended.subscribe();
                let _ = rx.wait_for(|e| *e).await;
                match self.canceller() {
                    Some(c) => c,
                    // Ended otherwise: this never resolves, as documented.
                    None => std::future::pending().await,
                }
            }
        }
    }

    /// Who cancelled this context, if it was cancelled.
    ///
    /// ```no_run
    /// # async fn demo(ctx: &furrow::Context) {
    /// // Callee: who is asking us to stop?
    /// if let Some(by) = ctx.canceller() {
    ///     eprintln!("stopping early: {by} cancelled us");
    /// }
    /// # }
    /// ```
    pub fn canceller(&self) -> Option<Aid> {
        if let Some(c) = self.inner.scope.canceller() {
            return Some(c);
        }
        match &self.state().final_ {
            Some(Final::Cancelled { canceller, .. }) => Some(canceller.clone()),
            _ => None,
        }
    }

    /// Why this context was cancelled, if it was: who asked, or (callee)
    /// that the connection to the opener was lost. On the opener side, a
    /// context that ended cancelled gives who asked.
    ///
    /// *Decision:* a callee whose opener is lost (its process died, the
    /// link broke) is cancelled like one whose opener asked, grace period
    /// included: [`cancelled`](Self::cancelled) resolves naming the lost
    /// peer, and this says the link was lost. Its outcome has nowhere to
    /// go.
    ///
    /// ```no_run
    /// use furrow::{CancelReason, Context};
    ///
    /// #[furrow::context]
    /// async fn lease(ctx: Context) -> furrow::Result<()> {
    ///     ctx.started(&()).await?;
    ///     let by = ctx.cancelled().await; // the grace period starts here
    ///     match ctx.cancel_reason() {
    ///         Some(CancelReason::LinkLost { reason, .. }) => eprintln!("{by} is gone ({reason}): releasing"),
    ///         _ => eprintln!("{by} asked: releasing"),
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        if let Some(r) = self.inner.scope.reason() {
            return Some(r);
        }
        match &self.state().final_ {
            Some(Final::Cancelled { canceller, .. }) => Some(CancelReason::Requested { by: canceller.clone() }),
            _ => None,
        }
    }

    /// Whether this side called [`cancel`](Self::cancel).
    ///
    /// ```no_run
    /// # async fn demo(ctx: &furrow::Context) -> furrow::Result<()> {
    /// // Opener: a stream that ended early — our doing, or the callee's?
    /// if ctx.cancel_called() {
    ///     println!("we cancelled it");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn cancel_called(&self) -> bool {
        self.state().cancel_called
    }

    /// Opener: whether this side's cancel request reached the callee
    /// while it still ran: the peer acknowledged it *and* found the task.
    /// `false` when the context had ended already (its outcome arrived
    /// here, or the callee ended before the request got there, even if
    /// its outcome is still on the way), when the peer was gone, and
    /// before `cancel()` was called. A callee that got the request may
    /// still complete on its own within the same instant: the outcome
    /// ([`wait_for_result`](Self::wait_for_result)) is what tells how it
    /// ended.
    ///
    /// ```no_run
    /// # async fn demo(ctx: &furrow::Context) -> furrow::Result<()> {
    /// ctx.cancel().await?;
    /// if !ctx.cancel_acked() {
    ///     // The context had ended already, or its peer was gone.
    ///     eprintln!("nothing left to cancel at {}", ctx.peer());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn cancel_acked(&self) -> bool {
        self.state().cancel_acked
    }

    /// Opener: whether a cancellation this side asked for was received and
    /// absorbed (by `recv`, `wait_for_result` or the end of
    /// `open_context`).
    ///
    /// ```no_run
    /// # async fn demo(ctx: &furrow::Context<furrow::role::Opener>) -> furrow::Result<()> {
    /// ctx.cancel().await?;
    /// // `Returned` if the callee finished before the cancel reached it.
    /// if let furrow::Outcome::Cancelled { .. } = ctx.wait_for_result::<()>().await? {
    ///     assert!(ctx.cancelled_caught());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn cancelled_caught(&self) -> bool {
        self.state().cancelled_caught
    }

    /// How the context ended, once it has (`None` while it runs). Unlike
    /// [`wait_for_result`](Self::wait_for_result) it does not wait, and
    /// it reports every ending as data, errors included.
    ///
    /// ```no_run
    /// use furrow::OutcomeInfo;
    /// # async fn demo(ctx: &furrow::Context) {
    /// match ctx.outcome() {
    ///     None => println!("still running"),
    ///     Some(OutcomeInfo::Failed(why)) => println!("callee failed: {why}"),
    ///     Some(other) => println!("ended: {other:?}"),
    /// }
    /// # }
    /// ```
    pub fn outcome(&self) -> Option<OutcomeInfo> {
        self.state().final_.as_ref().map(|f| match f {
            Final::Returned(_) => OutcomeInfo::Returned,
            Final::Failed(e) => OutcomeInfo::Failed(e.to_string()),
            Final::Cancelled { canceller, .. } => OutcomeInfo::Cancelled { canceller: canceller.clone() },
            Final::Lost(r) => OutcomeInfo::TransportClosed(r.clone()),
        })
    }

    /// Highest number of received stream messages that were buffered
    /// unconsumed at once (bounded by the stream's window).
    ///
    /// ```no_run
    /// # async fn demo(ctx: &furrow::Context) {
    /// // After a run: did the consumer keep up, or did messages pile up
    /// // to the window?
    /// println!("peak backlog: {} messages", ctx.max_buffered());
    /// # }
    /// ```
    pub fn max_buffered(&self) -> usize {
        self.inner.flow.high_water()
    }

    /// Highest number of payload bytes of received stream messages that
    /// were buffered unconsumed at once (bounded by the stream's byte
    /// window, or by one message larger than half of it).
    ///
    /// ```no_run
    /// # async fn demo(ctx: &furrow::Context) {
    /// println!("peak backlog: {} bytes", ctx.max_buffered_bytes());
    /// # }
    /// ```
    pub fn max_buffered_bytes(&self) -> u64 {
        self.inner.flow.high_water_bytes()
    }
}

/// The callee's end.
impl Context<role::Callee> {
    /// Callee: send the first value to the opener, whose `open_context`
    /// then runs its body. Must be called once, before opening a stream.
    /// A callee that fails before `started` fails the opener's
    /// `open_context` itself (its body never runs).
    ///
    /// ```no_run
    /// #[furrow::context]
    /// async fn tail(ctx: furrow::Context, path: String) -> anyhow::Result<()> {
    ///     // Refuse a bad request before the opener's body starts.
    ///     let meta = std::fs::metadata(&path)?;
    ///     ctx.started(&meta.len()).await?; // the opener's `first`: the size now
    ///     // … then stream what is appended …
    ///     Ok(())
    /// }
    /// ```
    ///
    /// Errors: [`Error::Usage`] when called twice;
    /// [`Error::ContextCancelled`] once the context was cancelled.
    ///
    /// # Cancel safety
    /// Cancel safe: the message is queued without waiting.
    pub async fn started<T: Serialize + ?Sized>(&self, first: &T) -> Result<()> {
        self.check_cancelled()?;
        {
            let mut st = self.state();
            if st.started {
                return Err(Error::usage(format!("started() called twice in context `{}`", self.inner.func)));
            }
            st.started = true;
        }
        // A large `furrow::Bytes` in it is lent, not copied.
        let pld = furrow_proto::PayloadParts::encode(first)?;
        crate::chaos::fault::at(crate::chaos::fault::Step::Started);
        let started = Msg::Started { cid: self.inner.cid, pld: Payload::default() };
        self.inner.chan.send_with_parts(&started, &pld).map_err(|e| match e {
            // Nothing was queued: the callee may call `started` again with
            // something smaller (or fail with this error, which reaches the
            // opener as its outcome instead of leaving it waiting).
            Error::FrameTooLarge { len, max, .. } => {
                self.state().started = false;
                Error::FrameTooLarge { what: format!("the first value of context `{}`", self.inner.func), len, max }
            }
            // The opener is gone: that is this task's cancellation.
            _ if self.note_lost_link() => self.cancelled_error("context cancelled"),
            e => e,
        })
    }
}

/// The opener's end.
impl Context<role::Opener> {
    /// Opener: wait for the callee's outcome. Stream messages still
    /// arriving are drained and dropped (their credit is given back so the
    /// callee is never stuck). A cancel this side asked for is an
    /// `Ok(Outcome::Cancelled)`; an error, a panic, a cancel by anyone else
    /// or a lost connection is an `Err`.
    ///
    /// # Cancel safety
    /// Cancel safe as to the outcome: it is stored as it arrives and stays
    /// available to the next call. Stream messages drained before the drop
    /// are gone (as they would have been had it completed); each one's
    /// credit was given back.
    pub async fn wait_for_result<T: DeserializeOwned>(&self) -> Result<Outcome<T>> {
        self.wait_final().await;
        self.result_from_final()
    }
}
