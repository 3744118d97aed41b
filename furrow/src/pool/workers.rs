//! The pool's workers: who is free, and replacing the dead.
//!
//! A worker is free to take a task when it holds a *token*: each worker has
//! `in_flight_per_worker` of them in one queue, and a task takes one
//! (FIFO: tasks start in the order they asked) and gives it back when it
//! ends, also when its future is dropped (the token's `Drop`), so a
//! cancelled `map` never loses a worker.

use super::PoolOptions;
use crate::nursery::ActorNursery;
use crate::portal::Portal;
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;

/// One worker slot: its current process, and how many times it was
/// replaced (so that several tasks that saw the same death replace it
/// once).
struct Slot {
    portal: Portal,
    generation: u64,
}

pub(super) struct Workers {
    nursery: ActorNursery,
    name: String,
    opts: crate::spawn::SpawnOptions,
    slots: Vec<Mutex<Slot>>,
    /// Serialises replacing one slot (held across the spawn: async).
    replacing: Vec<tokio::sync::Mutex<()>>,
    free_tx: mpsc::UnboundedSender<usize>,
    free_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<usize>>,
    deaths_tx: mpsc::UnboundedSender<Error>,
    /// Deaths reported by the nursery, by the dead actor's uuid.
    deaths: tokio::sync::Mutex<(mpsc::UnboundedReceiver<Error>, HashMap<uuid::Uuid, Error>)>,
}

/// A worker taken for one task; given back when dropped.
pub(super) struct Token<'a> {
    workers: &'a Workers,
    pub(super) slot: usize,
    pub(super) portal: Portal,
    pub(super) generation: u64,
}

impl Drop for Token<'_> {
    fn drop(&mut self) {
        // Never blocks (unbounded); fails only once the pool is gone.
        let _ = self.workers.free_tx.send(self.slot);
    }
}

impl Workers {
    /// Start every worker (concurrently).
    pub(super) async fn start(n: &ActorNursery, opts: &PoolOptions) -> Result<Workers> {
        let (deaths_tx, deaths_rx) = mpsc::unbounded_channel();
        let starts = (0..opts.workers)
            .map(|i| n.start_replaceable(format!("{}-{i}", opts.name), opts.spawn.clone(), deaths_tx.clone()));
        let portals = futures::future::try_join_all(starts).await?;
        let (free_tx, free_rx) = mpsc::unbounded_channel();
        // Round-robin order, so that with k tokens per worker the first
        // tasks spread over every worker before any gets a second one.
        for _ in 0..opts.in_flight_per_worker {
            for i in 0..portals.len() {
                let _ = free_tx.send(i);
            }
        }
        Ok(Workers {
            nursery: n.share(),
            name: opts.name.clone(),
            opts: opts.spawn.clone(),
            replacing: portals.iter().map(|_| tokio::sync::Mutex::new(())).collect(),
            slots: portals.into_iter().map(|portal| Mutex::new(Slot { portal, generation: 0 })).collect(),
            free_tx,
            free_rx: tokio::sync::Mutex::new(free_rx),
            deaths_tx,
            deaths: tokio::sync::Mutex::new((deaths_rx, HashMap::new())),
        })
    }

    /// Portals to the current workers.
    pub(super) fn portals(&self) -> Vec<Portal> {
        self.slots.iter().map(|s| crate::sync::lock(s).portal.clone()).collect()
    }

    /// Wait for a free worker.
    ///
    /// # Cancel safety
    /// Cancel safe: a token is taken only when returned (`recv` and the
    /// mutex's `lock` are both cancel safe), and a returned token goes back
    /// when dropped.
    pub(super) async fn take(&self) -> Result<Token<'_>> {
        let slot = {
            let mut rx = self.free_rx.lock().await;
            rx.recv().await.ok_or_else(|| Error::Closed("the pool is closed".into()))?
        };
        let (portal, generation) = {
            let s = crate::sync::lock(&self.slots[slot]);
            (s.portal.clone(), s.generation)
        };
        Ok(Token { workers: self, slot, portal, generation })
    }

    /// The worker behind `token` died: replace it (once, however many
    /// tasks saw it die) and return the death as an error for the task,
    /// and whether this call replaced it.
    ///
    /// # Cancel safety
    /// Dropped mid-way (its `map` stream dropped), a half-started
    /// replacement is killed by `start_actor`'s own drop guard and the slot
    /// keeps its dead portal, with its generation unchanged: the next task
    /// that takes the slot finds the channel closed and replaces it then.
    pub(super) async fn replace(&self, token: &Token<'_>, seen: Error) -> (Error, bool) {
        let _one_at_a_time = self.replacing[token.slot].lock().await;
        let death = self.death_of(token.portal.aid(), seen).await;
        let current = crate::sync::lock(&self.slots[token.slot]).generation;
        let mut replaced = false;
        if current == token.generation {
            let name = format!("{}-{}", self.name, token.slot);
            match self.nursery.start_replaceable(name, self.opts.clone(), self.deaths_tx.clone()).await {
                Ok(portal) => {
                    tracing::info!("pool worker {} died ({death}); replaced by {}", token.portal.aid(), portal.aid());
                    let mut s = crate::sync::lock(&self.slots[token.slot]);
                    s.portal = portal;
                    s.generation += 1;
                    replaced = true;
                }
                // The slot keeps its dead portal: the next task there fails
                // fast and tries again.
                Err(e) => tracing::warn!("pool worker {} died and could not be replaced: {e}", token.portal.aid()),
            }
        }
        (death, replaced)
    }

    /// The nursery's report of `aid`'s death (with its exit status), if it
    /// comes within a moment; else what the task saw.
    async fn death_of(&self, aid: &furrow_proto::Aid, seen: Error) -> Error {
        let mut guard = self.deaths.lock().await;
        let (rx, known) = &mut *guard;
        let wait = async {
            loop {
                if let Some(e) = known.remove(&aid.uuid) {
                    return Some(e);
                }
                let e = rx.recv().await?;
                if let Error::ActorExited { actor, .. } = &e {
                    known.insert(actor.uuid, e.clone());
                }
            }
        };
        // The exit is reaped within milliseconds of the channel closing; a
        // process that closed its channel but lives on (it will be ended
        // with the nursery) is not worth waiting for.
        tokio::time::timeout(Duration::from_secs(2), wait).await.ok().flatten().unwrap_or(seen)
    }
}
