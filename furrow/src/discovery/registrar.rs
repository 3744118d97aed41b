//! The registrar's side: the table of registered actors and the requests
//! (`Start`s on [`REGISTRY_NS`](super::REGISTRY_NS)) that read and change it.
//!
//! Every entry remembers the channel it was registered over. When that
//! channel is lost (the actor exited, crashed or was SIGKILLed), every entry
//! it registered is dropped: the registry never lists an actor whose
//! connection to it is gone for longer than the time the registrar takes to
//! see the socket close.

use super::{ActorInfo, Lookup};
use crate::remote::Failure;
use crate::runtime::lock;
use furrow_proto::Payload;
use std::sync::Mutex;
use tokio::sync::watch;

/// One registration.
struct Entry {
    /// The channel it came over (`None`: the registrar itself).
    chan: Option<u64>,
    /// Registration order: lookups by name resolve to the highest.
    seq: u64,
    info: ActorInfo,
}

/// The registry table of a registrar actor.
pub(crate) struct Registrar {
    entries: Mutex<Vec<Entry>>,
    /// Bumped on every change, so waiters can re-check.
    version: watch::Sender<u64>,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registrar({} entries)", lock(&self.entries).len())
    }
}

impl Registrar {
    pub(crate) fn new() -> Registrar {
        Registrar { entries: Mutex::new(Vec::new()), version: watch::Sender::new(0) }
    }

    fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Add (or replace: same uuid) an entry.
    pub(crate) fn register(&self, chan: Option<u64>, info: ActorInfo) {
        {
            let mut entries = lock(&self.entries);
            entries.retain(|e| e.info.aid.uuid != info.aid.uuid);
            let seq = entries.iter().map(|e| e.seq).max().unwrap_or(0) + 1;
            tracing::debug!(actor = %info.aid, "registered");
            entries.push(Entry { chan, seq, info });
        }
        self.changed();
    }

    /// Remove the entry of `uuid`; whether there was one.
    pub(crate) fn unregister(&self, uuid: uuid::Uuid) -> bool {
        let removed = {
            let mut entries = lock(&self.entries);
            let before = entries.len();
            entries.retain(|e| e.info.aid.uuid != uuid);
            before != entries.len()
        };
        if removed {
            self.changed();
        }
        removed
    }

    /// Drop every entry registered over channel `chan` (it closed).
    pub(crate) fn drop_channel(&self, chan: u64) {
        let removed = {
            let mut entries = lock(&self.entries);
            let before = entries.len();
            entries.retain(|e| {
                let keep = e.chan != Some(chan);
                if !keep {
                    tracing::debug!(actor = %e.info.aid, "unregistered: its channel closed");
                }
                keep
            });
            before != entries.len()
        };
        if removed {
            self.changed();
        }
    }

    /// Entries matching `who`, newest registration first.
    pub(crate) fn query(&self, who: &Lookup) -> Vec<ActorInfo> {
        let entries = lock(&self.entries);
        let mut hits: Vec<&Entry> = entries.iter().filter(|e| who.matches(&e.info.aid)).collect();
        hits.sort_by_key(|e| std::cmp::Reverse(e.seq));
        hits.into_iter().map(|e| e.info.clone()).collect()
    }

    /// The newest entry matching `who`, once there is one.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub(crate) async fn wait(&self, who: &Lookup) -> ActorInfo {
        let mut rx = self.version.subscribe();
        loop {
            // Marking the version seen *before* querying means a change
            // made after the query wakes the `changed` below: none is missed.
            rx.borrow_and_update();
            if let Some(first) = self.query(who).into_iter().next() {
                return first;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `self`: unreachable, but do
                // not spin if it ever happens.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Serve one registry request from channel `chan`.
    pub(crate) async fn handle(&self, chan: u64, func: &str, kwargs: Payload) -> Result<Payload, Failure> {
        let bad = |e: furrow_proto::PayloadError| Failure::runtime("MsgTypeError", e.to_string());
        match func {
            "register" => {
                #[derive(serde::Deserialize)]
                struct A {
                    info: ActorInfo,
                }
                let a: A = kwargs.decode().map_err(bad)?;
                self.register(Some(chan), a.info);
                Payload::encode(&true).map_err(bad)
            }
            "unregister" => {
                #[derive(serde::Deserialize)]
                struct A {
                    uuid: uuid::Uuid,
                }
                let a: A = kwargs.decode().map_err(bad)?;
                Payload::encode(&self.unregister(a.uuid)).map_err(bad)
            }
            "query" => {
                #[derive(serde::Deserialize)]
                struct A {
                    who: Lookup,
                }
                let a: A = kwargs.decode().map_err(bad)?;
                Payload::encode(&self.query(&a.who)).map_err(bad)
            }
            "wait" => {
                #[derive(serde::Deserialize)]
                struct A {
                    who: Lookup,
                }
                let a: A = kwargs.decode().map_err(bad)?;
                Payload::encode(&self.wait(&a.who).await).map_err(bad)
            }
            other => Err(Failure::runtime(
                "FunctionNotFound",
                format!("no registry request `{}::{other}`", super::REGISTRY_NS),
            )),
        }
    }
}
