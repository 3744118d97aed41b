//! A cheap look at a running actor: [`Portal::stats`] and [`local_stats`].
//!
//! Every actor serves the runtime request `furrow::runtime::stats` (an
//! ordinary `Start` on the runtime's namespace, like `cancel_actor`), so
//! any peer, and the `furrow` command through discovery, can ask any actor
//! for its [`ActorStats`]: its identity, uptime, open contexts (both
//! sides), children, and per channel the messages and bytes in and out.
//!
//! The counters are relaxed atomics bumped by each channel's reader and
//! writer tasks (one writer per counter, one add per message read and per
//! coalesced write); the rest is read under the runtime's short locks when
//! the query arrives. Nothing is sampled in the background.
//!
//! ```no_run
//! # async fn demo() -> furrow::Result<()> {
//! furrow::open_nursery(async |n| {
//!     let p = n.start_actor("worker").await?;
//!     let s = p.stats().await?;
//!     println!("{} up {:?}, {} children", s.aid, s.uptime, s.children);
//!     for c in &s.channels {
//!         println!("  {}: {} msgs in, {} msgs out", c.peer, c.msgs_in, c.msgs_out);
//!     }
//!     Ok(())
//! })
//! .await
//! # }
//! ```

use crate::Result;
use crate::portal::Portal;
use crate::runtime::Actor;
use furrow_proto::{Aid, RUNTIME_NS};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What an actor says about itself: see [`Portal::stats`].
///
/// New fields may be added; decoding tolerates missing ones (they take
/// their default), so a newer `furrow` can read an older actor's answer.
///
/// ```no_run
/// # async fn demo(workers: Vec<furrow::Portal>) -> furrow::Result<()> {
/// // The least busy worker.
/// let mut loads = Vec::new();
/// for w in &workers {
///     let s = w.stats().await?;
///     loads.push((s.calls_served + s.contexts_served, w));
/// }
/// if let Some((_, idle)) = loads.into_iter().min_by_key(|(load, _)| *load) {
///     println!("next job goes to {}", idle.aid());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[serde(default)]
pub struct ActorStats {
    /// Who it is.
    pub aid: Aid,
    /// How long ago its runtime started.
    pub uptime: Duration,
    /// Contexts this actor opened that are still open (their outcome not
    /// yet received).
    pub contexts_opened: usize,
    /// Contexts this actor serves (is the callee of) right now.
    pub contexts_served: usize,
    /// Plain calls this actor made that have not answered yet.
    pub calls_opened: usize,
    /// Plain calls this actor is running for its peers, the stats request
    /// being answered included.
    pub calls_served: usize,
    /// Child processes it started that are running (not yet reaped).
    pub children: usize,
    /// The longest that any of its dialogs' tasks has been waiting, now,
    /// for its peer (an answer, a stream value) or for credit to send:
    /// zero when none waits. A figure that keeps growing is a dialog to
    /// look at with [`Portal::dump`] (`furrow tree --watch` marks it).
    pub longest_wait: Duration,
    /// Every channel it holds, one per connected peer (two if both dialled
    /// each other).
    pub channels: Vec<ChannelStats>,
    /// The children its [supervisors](crate::supervise) keep, with their
    /// restarts so far, in start order.
    pub supervised: Vec<SupervisedStats>,
}

/// A child kept by a supervisor of the actor: see [`ActorStats::supervised`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[non_exhaustive]
#[serde(default)]
pub struct SupervisedStats {
    /// Its name (each instance's actor name).
    pub name: String,
    /// How many times it was restarted (instances started after the
    /// first; see `Supervised::restarts`).
    pub restarts: u32,
}

impl ActorStats {
    /// Contexts open on either side.
    ///
    /// ```no_run
    /// # fn demo() -> furrow::Result<()> {
    /// let s = furrow::local_stats()?;
    /// assert_eq!(s.contexts(), s.contexts_opened + s.contexts_served);
    /// # Ok(()) }
    /// ```
    pub fn contexts(&self) -> usize {
        self.contexts_opened + self.contexts_served
    }
}

impl Default for ActorStats {
    fn default() -> Self {
        ActorStats {
            aid: Aid::new("", 0),
            uptime: Duration::ZERO,
            contexts_opened: 0,
            contexts_served: 0,
            calls_opened: 0,
            calls_served: 0,
            children: 0,
            longest_wait: Duration::ZERO,
            channels: Vec::new(),
            supervised: Vec::new(),
        }
    }
}

/// One channel (one connection to one peer) of an actor.
///
/// Counts are totals since the channel opened: take two samples to get
/// rates. `msgs_out` and `bytes_out` count what was written to the socket,
/// `msgs_in` and `bytes_in` what was read from it (handshake excluded).
///
/// ```no_run
/// use std::time::Duration;
/// # async fn demo(p: furrow::Portal) -> furrow::Result<()> {
/// // Bytes per second written by the peer, per channel, over one second.
/// let before = p.stats().await?;
/// tokio::time::sleep(Duration::from_secs(1)).await;
/// let after = p.stats().await?;
/// let secs = (after.uptime - before.uptime).as_secs_f64();
/// for c in &after.channels {
///     // Match by id: a channel opened in between has no earlier sample.
///     if let Some(b) = before.channels.iter().find(|b| b.id == c.id) {
///         println!("to {}: {:.0} B/s", c.peer, (c.bytes_out - b.bytes_out) as f64 / secs);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[serde(default)]
pub struct ChannelStats {
    /// Process-unique id of the channel (tells a reconnected peer's new
    /// channel from its old one).
    pub id: u64,
    /// The actor at the other end.
    pub peer: Aid,
    /// Whether this side dialled the connection.
    pub dialer: bool,
    /// Messages read.
    pub msgs_in: u64,
    /// Messages written.
    pub msgs_out: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Writes to the socket (system calls that wrote something):
    /// `msgs_out / writes` is how many messages the writer coalesced into
    /// each. A plain call whose function returns in its first poll is
    /// answered (`StartAck` and `Return`) in one write.
    pub writes: u64,
    /// Dialogs (calls and contexts, either side) open on it now.
    pub dialogs: usize,
}

impl Default for ChannelStats {
    fn default() -> Self {
        ChannelStats {
            id: 0,
            peer: Aid::new("", 0),
            dialer: false,
            msgs_in: 0,
            msgs_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            writes: 0,
            dialogs: 0,
        }
    }
}

impl Portal {
    /// The peer actor's [`ActorStats`]: served by every actor (whatever its
    /// `enable_modules`), answered from counters, without waiting on
    /// anything but the round trip.
    ///
    /// The answer counts this query as one call the peer serves, and the
    /// channel it came over as one of its channels.
    ///
    /// ```no_run
    /// # async fn demo(p: furrow::Portal) -> furrow::Result<()> {
    /// let s = p.stats().await?;
    /// assert_eq!(&s.aid, p.aid());
    /// println!("open contexts: {}", s.contexts());
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
    pub async fn stats(&self) -> Result<ActorStats> {
        let req = furrow_proto::request::Request::Stats;
        let pld = self.call_raw(RUNTIME_NS, req.func(), req.kwargs().into(), req.func()).await?;
        Ok(pld.decode()?)
    }
}

/// This process's own [`ActorStats`], as a peer asking through
/// [`Portal::stats`] would see them (without the query itself).
///
/// ```no_run
/// /// A health endpoint: how loaded this actor is.
/// #[furrow::remote]
/// async fn load() -> furrow::Result<usize> {
///     let s = furrow::local_stats()?;
///     Ok(s.calls_served + s.contexts_served)
/// }
/// ```
///
/// Errors: [`Error::Usage`](crate::Error::Usage) outside a furrow runtime.
pub fn local_stats() -> Result<ActorStats> {
    Ok(Actor::current()?.stats())
}
