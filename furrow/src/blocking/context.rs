//! The blocking context and stream.

use super::bridge::{self, Bridge};
use crate::context::role::Opener;
use crate::context::{Outcome, StreamOptions};
use crate::{Error, Result};
use furrow_proto::{Aid, Cid, Payload};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::panic::AssertUnwindSafe;
use tokio::sync::{mpsc, oneshot};

/// The opener's side of a context, used from sync code (the body of
/// [`Portal::open_context`](super::Portal::open_context)). See
/// [`crate::Context`] for the rules.
///
/// ```no_run
/// #[furrow::context]
/// async fn ticker(ctx: furrow::Context) -> furrow::Result<u64> {
///     ctx.started(&()).await?;
///     ctx.open_stream(async |s| {
///         for i in 0u64.. { s.send(&i).await?; }
///         Ok(0)
///     }).await
/// }
///
/// # fn demo(p: &furrow::blocking::Portal) -> furrow::Result<()> {
/// p.open_context(ticker, (), |ctx, ()| {
///     println!("context {} with {}", ctx.cid(), ctx.peer());
///     let first_ten: Vec<u64> = ctx.open_stream(|s| s.iter::<u64>().take(10).collect())?;
///     assert_eq!(first_ten.len(), 10);
///     ctx.cancel()?; // absorbed: this context asked for it
///     assert!(ctx.as_async().cancel_called());
///     Ok(())
/// })
/// # }
/// ```
pub struct Context {
    inner: crate::Context<Opener>,
    pub(super) bridge: Bridge,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "blocking::{:?}", self.inner)
    }
}

impl Context {
    pub(super) fn new(inner: crate::Context<Opener>, bridge: Bridge) -> Context {
        Context { inner, bridge }
    }

    /// The async context behind this one (its state queries:
    /// [`cancel_called`](crate::Context::cancel_called),
    /// [`canceller`](crate::Context::canceller), …).
    pub fn as_async(&self) -> &crate::Context<Opener> {
        &self.inner
    }

    /// The context id.
    pub fn cid(&self) -> Cid {
        self.inner.cid()
    }

    /// The actor at the other end.
    pub fn peer(&self) -> &Aid {
        self.inner.peer()
    }

    /// Cancel the callee and wait (bounded) for its acknowledgement; the
    /// stream then ends as if closed and the scope's value is returned
    /// (see [`crate::Context::cancel`]).
    pub fn cancel(&self) -> Result<()> {
        let ctx = self.inner.clone();
        self.bridge.call("Context::cancel", async move { ctx.cancel().await })
    }

    /// Wait for the callee's outcome (see [`crate::Context::wait_for_result`]).
    ///
    /// ```no_run
    /// # fn demo(ctx: &furrow::blocking::Context) -> furrow::Result<()> {
    /// match ctx.wait_for_result::<u64>()? {
    ///     furrow::Outcome::Returned(n) => println!("the callee returned {n}"),
    ///     furrow::Outcome::Cancelled { canceller } => println!("cancelled by {canceller}"),
    ///     _ => {}
    /// }
    /// # Ok(()) }
    /// ```
    pub fn wait_for_result<T: DeserializeOwned + Send + 'static>(&self) -> Result<Outcome<T>> {
        let ctx = self.inner.clone();
        self.bridge.call("wait_for_result", async move { ctx.wait_for_result::<T>().await })
    }

    /// Open the context's stream, run `body` with it on this thread, then
    /// close it if `body` succeeded (see [`crate::Context::open_stream`]).
    pub fn open_stream<R, E, B>(&self, body: B) -> std::result::Result<R, E>
    where
        B: FnOnce(&MsgStream) -> std::result::Result<R, E>,
        E: From<Error>,
    {
        self.open_stream_with(StreamOptions::default(), body)
    }

    /// [`open_stream`](Self::open_stream) with options.
    ///
    /// ```no_run
    /// # fn demo(ctx: &furrow::blocking::Context) -> furrow::Result<()> {
    /// let opts = furrow::StreamOptions::new().window(1024);
    /// let n = ctx.open_stream_with(opts, |s| furrow::Ok(s.iter::<u64>().count()))?;
    /// # let _ = n;
    /// # Ok(()) }
    /// ```
    pub fn open_stream_with<R, E, B>(&self, opts: StreamOptions, body: B) -> std::result::Result<R, E>
    where
        B: FnOnce(&MsgStream) -> std::result::Result<R, E>,
        E: From<Error>,
    {
        bridge::check_thread("open_stream").map_err(E::from)?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel::<Cmd>();
        let (open_tx, open_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<bool>();
        let ctx = self.inner.clone();
        let end_rx = self
            .bridge
            .submit("open_stream", async move {
                ctx.open_stream_with(opts, async move |s: &crate::MsgStream| {
                    let _ = open_tx.send(());
                    serve(s, cmd_rx, done_rx).await
                })
                .await
            })
            .map_err(E::from)?;
        if bridge::wait_reply(open_rx).is_none() {
            return Err(E::from(end_rx.wait().err().unwrap_or_else(|| bridge::runtime_gone("stream"))));
        }
        let stream = MsgStream { cmds: cmd_tx };
        let out = std::panic::catch_unwind(AssertUnwindSafe(|| body(&stream)));
        drop(stream);
        bridge::body_verdict(out, done_tx, end_rx)
    }
}

/// What the sync side asks of the stream.
enum Cmd {
    Send(Payload, oneshot::Sender<Result<()>>),
    Recv(oneshot::Sender<Result<Option<Payload>>>),
    Close(oneshot::Sender<Result<()>>),
}

/// Inside the async `open_stream` body: run the sync side's requests, each
/// as its own future so a `recv` waiting on one thread never delays a
/// `send` from another, until the sync body is done.
async fn serve(
    s: &crate::MsgStream,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    done: oneshot::Receiver<bool>,
) -> Result<()> {
    let mut inflight = FuturesUnordered::new();
    let mut done = std::pin::pin!(done);
    let mut open = true;
    loop {
        // Every branch is cancel safe: `recv` takes a request only when it
        // returns it, `next` on `FuturesUnordered` loses no future, and
        // `done` is polled by reference. The verdict arrives only after the
        // sync body returned, when no request is waiting for a reply, so
        // dropping `inflight` then abandons nothing anyone waits for.
        tokio::select! {
            cmd = cmds.recv(), if open => match cmd {
                Some(cmd) => inflight.push(run(s, cmd)),
                // The handle is gone (the body returned or panicked): only
                // its verdict is still to come.
                None => open = false,
            },
            Some(()) = inflight.next(), if !inflight.is_empty() => {}
            ok = &mut done => {
                return match ok {
                    Ok(true) => Ok(()),
                    // A failed body leaves the context's outcome to end the
                    // peer's stream (no clean `Stop`), as in the async API.
                    _ => Err(Error::Closed("the stream's body failed".into())),
                };
            }
        }
    }
}

/// One request. Replies nobody waits for any more are dropped.
async fn run(s: &crate::MsgStream, cmd: Cmd) {
    match cmd {
        Cmd::Send(p, reply) => {
            let _ = reply.send(s.send_payload(&p).await);
        }
        Cmd::Recv(reply) => {
            let _ = reply.send(s.recv_payload().await);
        }
        Cmd::Close(reply) => {
            let _ = reply.send(s.close().await);
        }
    }
}

/// A context's stream, used from sync code (see [`crate::MsgStream`]).
/// `Sync`: one thread may `recv` while another `send`s.
///
/// ```no_run
/// #[furrow::context]
/// async fn echo(ctx: furrow::Context) -> furrow::Result<()> {
///     ctx.started(&()).await?;
///     ctx.open_stream(async |s| {
///         while let Some(x) = s.recv::<String>().await? { s.send(&x).await?; }
///         Ok(())
///     }).await
/// }
///
/// # fn demo(p: &furrow::blocking::Portal) -> furrow::Result<()> {
/// p.open_context(echo, (), |ctx, ()| {
///     ctx.open_stream(|s| {
///         s.send("hello")?;
///         assert_eq!(s.recv::<String>()?.as_deref(), Some("hello"));
///         s.close()?; // the callee's recv gives None
///         Ok(())
///     })
/// })
/// # }
/// ```
pub struct MsgStream {
    cmds: mpsc::UnboundedSender<Cmd>,
}

impl std::fmt::Debug for MsgStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("blocking::MsgStream")
    }
}

impl MsgStream {
    fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Cmd) -> Result<T> {
        bridge::check_thread("MsgStream")?;
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(make(tx)).is_err() {
            return Err(bridge::scope_over("stream"));
        }
        bridge::wait_reply(rx).unwrap_or_else(|| Err(bridge::scope_over("stream")))
    }

    /// Send one message (waits for credit: backpressure). `value` is
    /// encoded on this thread. See [`crate::MsgStream::send`].
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let p = Payload::encode(value)?;
        self.ask(|reply| Cmd::Send(p, reply))
    }

    /// The next message, decoded on this thread; `Ok(None)` once the
    /// stream ended. See [`crate::MsgStream::recv`].
    pub fn recv<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        match self.ask(Cmd::Recv)? {
            Some(p) => Ok(Some(p.decode()?)),
            None => Ok(None),
        }
    }

    /// Close this end (the peer's `recv` gives `None`).
    pub fn close(&self) -> Result<()> {
        self.ask(Cmd::Close)
    }

    /// The messages as an iterator; it ends after the stream ends or after
    /// the first error (which it yields).
    ///
    /// ```no_run
    /// # fn demo(s: &furrow::blocking::MsgStream) -> furrow::Result<()> {
    /// for x in s.iter::<u64>() {
    ///     println!("{}", x?);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn iter<T: DeserializeOwned>(&self) -> impl Iterator<Item = Result<T>> + '_ {
        let mut over = false;
        std::iter::from_fn(move || {
            if over {
                return None;
            }
            match self.recv::<T>() {
                Ok(Some(v)) => Some(Ok(v)),
                Ok(None) => {
                    over = true;
                    None
                }
                Err(e) => {
                    over = true;
                    Some(Err(e))
                }
            }
        })
    }
}
