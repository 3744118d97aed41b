//! Reading a context's mailbox: one step at a time, in the wire's order,
//! releasing stream credit as messages are taken, and recording the final
//! message when it arrives.

use super::state::Final;
use super::{Context, Side};
use crate::error::error_from_msg;
use crate::ipc::Inbound;
use crate::ipc::flow::DialogEnd;
use crate::{Error, Result};
use furrow_proto::flow::Acks;
use furrow_proto::{Msg, Payload};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Receive side of the dialog (the credit to give back is the flow's).
/// Held, across awaits, by whoever waits for the dialog's next entry.
pub(crate) struct Mailbox {
    pub(super) rx: mpsc::UnboundedReceiver<Inbound>,
}

/// Where a receiver takes the next stream message from while a run lasts,
/// and what it owes the window. Under a plain mutex of its own
/// (`Inner::cursor`), not under the mailbox's async one: taking a value
/// from a run is the stream's hot path and never waits, and a tokio mutex
/// costs a second lock (its waiter list) on every release.
///
/// Order: only the mailbox's holder sets `run`, and only when the run it
/// found empty is done (in `took_run`, after `rx` gave it a new one); any
/// receiver may take from it. So a run's values are taken in their order,
/// each by exactly one receiver, and all of them before anything `rx`
/// holds after them (`step` looks at the run before `rx`).
#[derive(Default)]
pub(crate) struct Cursor {
    /// The rest of a run of stream messages taken from `rx` in one entry
    /// (`Inbound::Yields` or `Inbound::Frames`): read before `rx`, whose
    /// later entries came after them on the wire.
    pub(super) run: Run,
    /// The consumer's half of the stream's receive window (counts what was
    /// taken, says when to release it), from when the stream is opened
    /// (set by `open_stream`; the session admits no `Yield` before it).
    pub(super) acks: Option<Acks>,
}

/// What is left of a run of stream messages the mailbox took in one entry.
#[derive(Default)]
pub(crate) enum Run {
    #[default]
    Empty,
    Payloads(std::vec::IntoIter<Payload>),
    Frames(furrow_proto::codec::YieldFrames),
}

impl Run {
    pub(super) fn next(&mut self) -> Option<Payload> {
        let next = match self {
            Run::Empty => None,
            Run::Payloads(p) => p.next(),
            Run::Frames(f) => f.next(),
        };
        if next.is_none() {
            *self = Run::Empty;
        }
        next
    }
}

/// One step of reading the dialog.
pub(super) enum Step {
    Item(Payload),
    /// The peer closed its end of the stream.
    Stopped,
    /// The context ended (the final is stored).
    Ended,
}

impl<S: super::role::Role> Context<S> {
    /// Opener: resolves when the context ended in a way that ends the
    /// opener's body too (rule 1 of `open_context`): the callee failed,
    /// was cancelled by anyone but this context's own `cancel()`, or the
    /// connection was lost. Never resolves for a return or an absorbed
    /// cancel: the body then runs on.
    ///
    /// It watches what the channel's reader recorded, not the mailbox, so
    /// it neither competes with a stream for messages nor waits behind
    /// them.
    ///
    /// # Cancel safety
    /// Cancel safe: it takes nothing; the record stays.
    pub(crate) async fn interrupted(&self) {
        match self.inner.flow.ended_as().await {
            DialogEnd::Lost => {}
            DialogEnd::Failed { cancelled_by: Some(c) } if self.absorbs(&c) => std::future::pending().await,
            DialogEnd::Failed { .. } => {}
            DialogEnd::Returned => std::future::pending().await,
        }
    }

    /// Wait until the final message is in, draining the mailbox.
    pub(super) async fn wait_final(&self) {
        loop {
            if self.state().final_.is_some() {
                return;
            }
            // If a stream (or its fan-out pump) holds the mailbox, wait for
            // the outcome signal instead of competing for it.
            let mut ended = self.inner.ended.subscribe();
            // Cancel safe: a mutex `lock` that loses only gives up its
            // place in the queue; `wait_for` on a watch loses nothing.
            let mb = tokio::select! {
                mb = self.inner.mailbox.lock() => mb,
                _ = ended.wait_for(|e| *e) => continue,
            };
            let mut mb = mb;
            while self.state().final_.is_none() {
                let _ = self.step(&mut mb).await;
            }
            return;
        }
    }

    /// The next message of the run in hand, if any, accounted for. Needs
    /// no hold of the mailbox (see [`Cursor`]): the stream's hot path.
    pub(super) fn next_of_run(&self) -> Option<Payload> {
        let mut cur = crate::sync::lock(&self.inner.cursor);
        let pld = cur.run.next()?;
        Some(self.took_yield(&mut cur, pld))
    }

    /// Account for a stream message taken from the run: it leaves the
    /// receive window.
    fn took_yield(&self, cur: &mut Cursor, pld: Payload) -> Payload {
        // Released in batches (the session's lock is taken once per half
        // window, not per message). Under the cursor's lock, so releases
        // are made in the order the messages were taken (lock order:
        // cursor, then the channel's session; nothing takes them the other
        // way round).
        if let Some(r) = cur.acks.as_mut().and_then(|a| a.consume(pld.len() as u64)) {
            self.inner.chan.release(self.inner.cid, r);
        }
        pld
    }

    /// A run of stream messages was taken from the mailbox: the first one
    /// is this step's. A run is never sent empty; an empty one is nothing
    /// to read, and the step goes on to the next entry (boxed: a step is
    /// recursive only here, and only for a run that never occurs).
    async fn took_run(&self, mb: &mut Mailbox, run: Run) -> Result<Step> {
        let first = {
            let mut cur = crate::sync::lock(&self.inner.cursor);
            // Only the mailbox's holder (this step) sets a run, and it
            // found the last one done: nobody else can have set one since.
            debug_assert!(matches!(cur.run, Run::Empty), "a run was replaced before it was done");
            cur.run = run;
            cur.run.next().map(|pld| self.took_yield(&mut cur, pld))
        };
        match first {
            Some(pld) => Ok(Step::Item(pld)),
            None => Box::pin(self.step(mb)).await,
        }
    }

    /// Take one message from the mailbox and account for it.
    pub(super) async fn step(&self, mb: &mut Mailbox) -> Result<Step> {
        // Taken before looking at a cancel, as a message already in `rx`
        // is (`biased` below).
        if let Some(pld) = self.next_of_run() {
            return Ok(Step::Item(pld));
        }
        // A message already queued is taken without marking a wait (the
        // stream's hot path); only an empty mailbox parks, so a dump shows
        // this side waiting for its peer. Looked at by polling `recv` once,
        // never with `try_recv`: tokio's `try_recv` blocks the *thread*
        // while a sender is mid-push, on the thread's cached parker, which
        // is also what `Runtime::block_on` parks on, so it could swallow
        // the wake-up of a root's main future (a root hung for good in
        // `context_stream::started_comes_before_the_yield_or_return_that_follows_it`,
        // 1 run in 16 of the loaded integration loop, its dump showing the
        // opener parked on a `Started` that had arrived).
        let next = match futures::FutureExt::now_or_never(mb.rx.recv()) {
            Some(m) => m,
            None => {
                let _parked = self.inner.flow.park(crate::ipc::flow::Wait::Peer);
                if self.inner.side == Side::Callee {
                    // `recv` is cancel safe (a message stays queued if the
                    // cancel wins); `biased` takes a message that is
                    // already there first.
                    tokio::select! {
                        biased;
                        m = mb.rx.recv() => m,
                        () = self.inner.scope.cancelled() => {
                            return Err(self.cancelled_error("context cancelled"));
                        }
                    }
                } else {
                    mb.rx.recv().await
                }
            }
        };
        match next {
            Some(Inbound::Yield(pld)) => {
                Ok(Step::Item(self.took_yield(&mut crate::sync::lock(&self.inner.cursor), pld)))
            }
            Some(Inbound::Yields(plds)) => self.took_run(mb, Run::Payloads(plds.into_iter())).await,
            Some(Inbound::Frames(f)) => self.took_run(mb, Run::Frames(furrow_proto::codec::YieldFrames::new(f))).await,
            Some(Inbound::Msg(m)) => match *m {
                Msg::Stop { .. } => {
                    self.state().peer_stopped = true;
                    Ok(Step::Stopped)
                }
                Msg::Return { pld, .. } => {
                    self.set_final(Final::Returned(pld));
                    Ok(Step::Ended)
                }
                m @ Msg::Error { .. } => {
                    let f = match m.into_error() {
                        Ok(e) => match error_from_msg(e) {
                            Error::ContextCancelled { canceller, message } => Final::Cancelled { canceller, message },
                            other => Final::Failed(Arc::new(other)),
                        },
                        Err(other) => Final::Lost(format!("unexpected {:?}", other.kind())),
                    };
                    self.set_final(f);
                    Ok(Step::Ended)
                }
                other => {
                    let reason = format!("unexpected {:?} in context `{}`", other.kind(), self.inner.func);
                    self.set_final(Final::Failed(Arc::new(Error::Protocol {
                        peer: self.inner.chan.peer.to_string(),
                        reason,
                    })));
                    Ok(Step::Ended)
                }
            },
            Some(Inbound::Overrun(w)) => Err(crate::error::overrun(w)),
            Some(Inbound::Violation(v)) => {
                let e = Error::Protocol { peer: self.inner.chan.peer.to_string(), reason: v };
                self.set_final(Final::Failed(Arc::new(e)));
                Ok(Step::Ended)
            }
            None => {
                if self.inner.side == Side::Callee {
                    // The callee's mailbox closes when its dialog ends (it
                    // sent its outcome) or the channel is lost: the latter
                    // is this task's cancellation.
                    if self.note_lost_link() {
                        return Err(self.cancelled_error("context cancelled"));
                    }
                    return Err(Error::Closed(format!("context `{}` is over", self.inner.func)));
                }
                let reason = match self.inner.chan.closed_error() {
                    Error::TransportClosed { reason, .. } => reason,
                    other => other.to_string(),
                };
                self.set_final(Final::Lost(reason));
                Ok(Step::Ended)
            }
        }
    }
}
