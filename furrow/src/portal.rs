//! Portals: handles on connected peer actors.

use crate::dialog::OpenDialog;
use crate::ipc::Channel;
use crate::remote::{Args, Remote};
use crate::{Error, Result};
use furrow_proto::{Aid, Payload};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// A handle on a connected peer actor: call its functions, cancel it.
///
/// Cheap to clone; all clones share one channel, and any number of calls
/// may run on it at once.
///
/// ```no_run
/// #[furrow::remote]
/// async fn add(a: i64, b: i64) -> i64 { a + b }
///
/// # async fn demo() -> furrow::Result<()> {
/// furrow::open_nursery(async |n| {
///     let p = n.start_actor("adder").await?;
///     assert_eq!(p.run(add, (1, 2)).await?, 3);
///     p.cancel_actor().await
/// })
/// .await
/// # }
/// ```
#[derive(Clone)]
pub struct Portal {
    pub(crate) chan: Arc<Channel>,
    pub(crate) addrs: Arc<[furrow_proto::Addr]>,
    pub(crate) cancel_ack_timeout: Duration,
    pub(crate) exit_timeout: Duration,
    pub(crate) stream_window: furrow_proto::flow::Window,
    /// For a nursery's child: tells the nursery its exit is asked for
    /// (before the request is sent, so the exit that follows is judged as
    /// asked; a child already gone stays judged by its own death).
    pub(crate) on_cancel_actor: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Portal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Portal({})", self.chan.peer)
    }
}

impl Portal {
    /// A portal on a channel this actor dialled (no nursery child behind
    /// it, so no expected exit).
    pub(crate) fn over(chan: Arc<Channel>, actor: &crate::runtime::Actor) -> Portal {
        let addrs: Arc<[furrow_proto::Addr]> = Arc::from(Vec::new());
        Portal {
            chan,
            addrs,
            cancel_ack_timeout: actor.config.cancel_ack_timeout,
            exit_timeout: actor.config.exit_timeout,
            stream_window: actor.config.window(),
            on_cancel_actor: None,
        }
    }

    /// Call one of furrow's own requests (`ns` is a runtime namespace).
    pub(crate) async fn call_internal<K: Serialize>(&self, ns: &str, func: &str, kwargs: &K) -> Result<Payload> {
        self.call_raw(ns, func, Payload::encode(kwargs)?.into(), func).await
    }

    /// The actor at the other end.
    ///
    /// ```no_run
    /// # async fn demo(p: furrow::Portal) {
    /// println!("talking to {} (pid {})", p.aid().name, p.aid().pid);
    /// # }
    /// ```
    pub fn aid(&self) -> &Aid {
        &self.chan.peer
    }

    /// Whether the channel to the peer is closed (the peer ended, or the
    /// connection was lost): every call on this portal then fails with
    /// [`Error::TransportClosed`].
    ///
    /// ```no_run
    /// # async fn demo(cached: Option<furrow::Portal>, addr: furrow::Addr) {
    /// // Drop a portal kept from an earlier lookup once its peer is gone.
    /// let live = cached.filter(|p| !p.is_closed());
    /// # let _ = (live, addr);
    /// # }
    /// ```
    pub fn is_closed(&self) -> bool {
        self.chan.is_closed()
    }

    /// The addresses the peer listens on, as it reported them when it
    /// started (for a portal from [`connect`](crate::connect): the address
    /// dialled).
    ///
    /// ```no_run
    /// # async fn demo() -> furrow::Result<()> {
    /// furrow::open_nursery(async |n| {
    ///     let p = n.start_actor("worker").await?;
    ///     // Where other programs can reach it too.
    ///     println!("{} listens on {:?}", p.aid(), p.addrs());
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    pub fn addrs(&self) -> &[furrow_proto::Addr] {
        &self.addrs
    }

    /// Call remote function `f` with `args` in the peer and return its
    /// result.
    ///
    /// Errors: [`Error::Remote`] for an error or panic in the function (or
    /// if the peer does not have it), [`Error::MsgType`] if the result does
    /// not decode as `O`, [`Error::TransportClosed`] if the peer went away.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes cancels the remote call: a
    /// `cancel_task` request is sent (without waiting) and the remote
    /// function's future is dropped at its next `.await`. Its result, if it
    /// was already on its way, is discarded.
    // `A` and `O` are `F`'s own types, named: with `F::Args` in an
    // `async fn`'s signature, rustc fails to prove its future `Send` where a
    // caller needs it ("`Send` is not general enough", rust#102211).
    pub async fn run<F, A, O>(&self, f: F, args: A) -> Result<O>
    where
        F: Remote<Args = A, Output = O>,
        A: Args,
        O: DeserializeOwned,
    {
        let kwargs = args.to_kwargs_parts(f.params())?;
        let (ns, func) = crate::remote::ns_func(&f);
        let pld = self.call_raw(ns, func, kwargs, f.name()).await?;
        Ok(pld.decode()?)
    }

    /// Call a function by wire name (`module::path::function`) with
    /// arguments given as a serializable map or struct (keys are the
    /// parameter names). Use it for functions this binary has no handle
    /// for; prefer [`Portal::run`] otherwise.
    ///
    /// ```no_run
    /// #[derive(serde::Serialize)]
    /// struct Resize { path: String, width: u32 }
    ///
    /// # async fn demo(p: furrow::Portal) -> furrow::Result<()> {
    /// // A function of another program, known only by its wire name.
    /// let kwargs = Resize { path: "cat.png".into(), width: 200 };
    /// let bytes: u64 = p.run_by_name("thumbnailer::jobs::resize", &kwargs).await?;
    /// # let _ = bytes; Ok(()) }
    /// ```
    ///
    /// Errors: as [`Portal::run`]; a wrong or missing argument is an
    /// [`Error::Remote`] whose `boxed_type` is `MsgTypeError`.
    ///
    /// # Cancel safety
    /// As [`Portal::run`].
    pub async fn run_by_name<K: Serialize, O: DeserializeOwned>(&self, name: &str, kwargs: &K) -> Result<O> {
        let kwargs = Payload::encode(kwargs)?;
        let (ns, func) = crate::remote::split_name(name);
        let pld = self.call_raw(ns, func, kwargs.into(), name).await?;
        Ok(pld.decode()?)
    }

    /// Call `ns::func` with `kwargs` (in parts: large `furrow::Bytes`
    /// arguments are sent from their own buffers), for its result.
    pub(crate) async fn call_raw(
        &self,
        ns: &str,
        func: &str,
        kwargs: furrow_proto::PayloadParts,
        name: &str,
    ) -> Result<Payload> {
        let span = crate::log::dialog_span(false, None, name, &self.chan.peer, "opener");
        async move {
            let mut d = OpenDialog::start_admitted(&self.chan, ns, func, kwargs).await?;
            tracing::Span::current().record("cid", d.cid());
            d.call_result(name).await
        }
        .instrument(span)
        .await
    }

    /// Ask the peer actor to cancel itself: it acknowledges, cancels its
    /// tasks, ends its own children, closes its channels and exits. Waits
    /// (bounded by the configured timeouts) for the acknowledgement and for
    /// the channel to close; a peer that is already gone counts as
    /// cancelled.
    ///
    /// This only *asks*. A parent that must be sure a child is gone relies
    /// on its nursery, which escalates to signals.
    ///
    /// # Cancel safety
    /// Cancel safe: if dropped after the request was queued, the request
    /// still reaches the peer.
    pub async fn cancel_actor(&self) -> Result<()> {
        if let Some(asked) = &self.on_cancel_actor {
            asked();
        }
        if self.chan.is_closed() {
            return Ok(());
        }
        let peer = &self.chan.peer;
        crate::dialog::request_cancel(
            &self.chan,
            furrow_proto::request::Request::CancelActor,
            self.cancel_ack_timeout,
            || format!("{peer} to acknowledge a cancel request"),
        )
        .await?;
        match tokio::time::timeout(self.exit_timeout, self.chan.closed()).await {
            Ok(()) => Ok(()),
            Err(_) => Err(Error::Timeout {
                what: format!("{} to close its channel", self.chan.peer),
                after: self.exit_timeout,
            }),
        }
    }
}
