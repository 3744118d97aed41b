//! The registrar's side: the table of registered actors and the requests
//! (`Start`s on [`REGISTRY_NS`](super::REGISTRY_NS)) that read and change it.
//!
//! **Ownership.** Every entry remembers the channel it was registered over,
//! and only that channel may change or remove it: a `register` or
//! `unregister` naming a uuid that another channel registered is refused
//! (`RegistrationRefused`) and the entry is left as it was. When the
//! owning channel is lost (the actor exited, crashed or was SIGKILLed),
//! every entry it registered is dropped: the registry never lists an actor
//! whose connection to it is gone for longer than the time the registrar
//! takes to see the socket close. (Before, any peer could re-register
//! another actor's uuid, and its disconnection then took the real actor out
//! of the registry for good.)
//!
//! **Cost.** Entries are indexed by uuid, by name and by channel, each name
//! and the whole table in registration order, so a registration, a removal
//! and a lookup by name or uuid cost O(log n) (a listing O(n)), and a lost
//! channel costs O(its entries). Waiting lookups are keyed by what they
//! wait for: a registration wakes only the waiters for its name, its uuid,
//! or anything — never all of them. (Before, every registration scanned the
//! whole table twice and woke every waiter, which scanned it again: 100k
//! registrations took 42–52 s.)

use super::{ActorInfo, Lookup};
use crate::remote::Failure;
use crate::runtime::lock;
use furrow_proto::Payload;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use tokio::sync::oneshot;
use uuid::Uuid;

/// The `boxed_type` of a refused `register` or `unregister`.
pub(crate) const REFUSED: &str = "RegistrationRefused";

/// One registration.
struct Entry {
    /// The channel it came over (`None`: the registrar itself).
    chan: Option<u64>,
    /// Registration order: lookups by name resolve to the highest.
    seq: u64,
    info: ActorInfo,
}

/// What a waiting lookup waits for (a [`Lookup`] that can key a map).
#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Name(String),
    Uuid(Uuid),
    All,
}

impl From<&Lookup> for Key {
    fn from(who: &Lookup) -> Key {
        match who {
            Lookup::Name(n) => Key::Name(n.clone()),
            Lookup::Uuid(u) => Key::Uuid(*u),
            Lookup::All => Key::All,
        }
    }
}

#[derive(Default)]
struct Table {
    entries: HashMap<Uuid, Entry>,
    /// Every entry, in registration order.
    by_seq: BTreeMap<u64, Uuid>,
    /// The entries of each name, in registration order.
    by_name: HashMap<String, BTreeMap<u64, Uuid>>,
    /// The entries each channel registered.
    by_chan: HashMap<u64, HashSet<Uuid>>,
    next_seq: u64,
    /// Lookups waiting for a first match, by what they wait for; each has
    /// an id so that a waiter that gives up removes exactly itself.
    waiters: HashMap<Key, HashMap<u64, oneshot::Sender<ActorInfo>>>,
    next_waiter: u64,
}

impl Table {
    /// Remove `uuid`'s entry from every index.
    fn remove(&mut self, uuid: &Uuid) -> Option<Entry> {
        let e = self.entries.remove(uuid)?;
        self.by_seq.remove(&e.seq);
        if let Some(m) = self.by_name.get_mut(&e.info.aid.name) {
            m.remove(&e.seq);
            if m.is_empty() {
                self.by_name.remove(&e.info.aid.name);
            }
        }
        if let Some(chan) = e.chan
            && let Some(s) = self.by_chan.get_mut(&chan)
        {
            s.remove(uuid);
            if s.is_empty() {
                self.by_chan.remove(&chan);
            }
        }
        Some(e)
    }

    /// The entries matching `who`, newest registration first.
    fn matching<'a>(&'a self, who: &'a Lookup) -> Box<dyn Iterator<Item = &'a Entry> + 'a> {
        let get = |u: &Uuid| self.entries.get(u);
        match who {
            Lookup::Name(n) => match self.by_name.get(n) {
                Some(m) => Box::new(m.values().rev().filter_map(get)),
                None => Box::new(std::iter::empty()),
            },
            Lookup::Uuid(u) => Box::new(self.entries.get(u).into_iter()),
            Lookup::All => Box::new(self.by_seq.values().rev().filter_map(get)),
        }
    }

    /// Hand `info` to every lookup waiting for its name, its uuid, or
    /// anything.
    fn wake(&mut self, info: &ActorInfo) {
        for key in [Key::Name(info.aid.name.clone()), Key::Uuid(info.aid.uuid), Key::All] {
            if let Some(waiting) = self.waiters.remove(&key) {
                for (_, tx) in waiting {
                    // A waiter that gave up meanwhile is simply gone.
                    let _ = tx.send(info.clone());
                }
            }
        }
    }
}

/// The refusal of a change to an entry another channel registered.
fn not_yours(what: &str, owner: &Entry) -> String {
    format!(
        "refused to {what} {}: that uuid is registered by another connection (by {}); \
         only the connection that registered an entry may change or remove it",
        owner.info.aid.uuid, owner.info.aid
    )
}

/// The registry table of a registrar actor.
pub(crate) struct Registrar {
    table: Mutex<Table>,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registrar({} entries)", lock(&self.table).entries.len())
    }
}

/// Removes a waiting lookup from the table when its `wait` ends, whether it
/// got an answer or was dropped (a cancelled or lost request).
struct Waiting<'a> {
    registrar: &'a Registrar,
    key: Key,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut t = lock(&self.registrar.table);
        if let Some(m) = t.waiters.get_mut(&self.key) {
            m.remove(&self.id);
            if m.is_empty() {
                t.waiters.remove(&self.key);
            }
        }
    }
}

impl Registrar {
    pub(crate) fn new() -> Registrar {
        Registrar { table: Mutex::new(Table::default()) }
    }

    /// Add an entry, or replace the one of the same uuid if `chan`
    /// registered it. Refused (with the reason) when another channel did.
    pub(crate) fn register(&self, chan: Option<u64>, info: ActorInfo) -> Result<(), String> {
        let mut t = lock(&self.table);
        let uuid = info.aid.uuid;
        if let Some(old) = t.entries.get(&uuid) {
            if old.chan != chan {
                return Err(not_yours("register", old));
            }
            t.remove(&uuid);
        }
        t.next_seq += 1;
        let seq = t.next_seq;
        tracing::debug!(actor = %info.aid, "registered");
        t.by_seq.insert(seq, uuid);
        t.by_name.entry(info.aid.name.clone()).or_default().insert(seq, uuid);
        if let Some(c) = chan {
            t.by_chan.entry(c).or_default().insert(uuid);
        }
        t.wake(&info);
        t.entries.insert(uuid, Entry { chan, seq, info });
        Ok(())
    }

    /// Remove the entry of `uuid` if `chan` registered it; whether there
    /// was one. Refused (with the reason) when another channel did.
    pub(crate) fn unregister(&self, chan: Option<u64>, uuid: Uuid) -> Result<bool, String> {
        let mut t = lock(&self.table);
        match t.entries.get(&uuid) {
            None => Ok(false),
            Some(e) if e.chan != chan => Err(not_yours("unregister", e)),
            Some(_) => Ok(t.remove(&uuid).is_some()),
        }
    }

    /// Drop every entry registered over channel `chan` (it closed).
    pub(crate) fn drop_channel(&self, chan: u64) {
        let mut t = lock(&self.table);
        for uuid in t.by_chan.remove(&chan).unwrap_or_default() {
            if let Some(e) = t.remove(&uuid) {
                tracing::debug!(actor = %e.info.aid, "unregistered: its channel closed");
            }
        }
    }

    /// Entries matching `who`, newest registration first.
    pub(crate) fn query(&self, who: &Lookup) -> Vec<ActorInfo> {
        lock(&self.table).matching(who).map(|e| e.info.clone()).collect()
    }

    /// The newest entry matching `who`, once there is one.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping it removes its waiter from the table and
    /// changes nothing else.
    pub(crate) async fn wait(&self, who: &Lookup) -> ActorInfo {
        let key = Key::from(who);
        loop {
            // Looking and queueing under one lock: a registration is either
            // seen here or made after the waiter is queued, which it wakes.
            let (rx, _waiting) = {
                let mut t = lock(&self.table);
                if let Some(first) = t.matching(who).next() {
                    return first.info.clone();
                }
                let (tx, rx) = oneshot::channel();
                t.next_waiter += 1;
                let id = t.next_waiter;
                t.waiters.entry(key.clone()).or_default().insert(id, tx);
                (rx, Waiting { registrar: self, key: key.clone(), id })
            };
            // An error means the sender was dropped unsent, which only the
            // table's own end does: look again rather than wait forever.
            if let Ok(info) = rx.await {
                return info;
            }
        }
    }

    /// Serve one registry request from channel `chan`.
    pub(crate) async fn handle(&self, chan: u64, func: &str, kwargs: Payload) -> Result<Payload, Failure> {
        let bad = |e: furrow_proto::PayloadError| Failure::runtime("MsgTypeError", e.to_string());
        let refused = |why: String| Failure::runtime(REFUSED, why);
        match func {
            "register" => {
                #[derive(serde::Deserialize)]
                struct A {
                    info: ActorInfo,
                }
                let a: A = kwargs.decode().map_err(bad)?;
                self.register(Some(chan), a.info).map_err(refused)?;
                Payload::encode(&true).map_err(bad)
            }
            "unregister" => {
                #[derive(serde::Deserialize)]
                struct A {
                    uuid: Uuid,
                }
                let a: A = kwargs.decode().map_err(bad)?;
                Payload::encode(&self.unregister(Some(chan), a.uuid).map_err(refused)?).map_err(bad)
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

#[cfg(test)]
mod tests {
    use super::*;
    use furrow_proto::Aid;

    fn info(name: &str) -> ActorInfo {
        ActorInfo { aid: Aid::new(name, 1), addrs: Vec::new(), parent: None, registrar: false, registry: Vec::new() }
    }

    fn names(r: &Registrar, who: &Lookup) -> Vec<String> {
        r.query(who).into_iter().map(|i| i.aid.name).collect()
    }

    #[test]
    fn only_the_owner_changes_or_removes_an_entry() {
        let r = Registrar::new();
        let a = info("a");
        r.register(Some(1), a.clone()).unwrap();
        let e = r.register(Some(2), a.clone()).unwrap_err();
        assert!(e.contains("registered by another connection"), "{e}");
        assert!(r.unregister(Some(2), a.aid.uuid).is_err());
        assert!(r.unregister(None, a.aid.uuid).is_err(), "not even the registrar's own code");
        // The owner re-registers (it becomes the newest) and removes it.
        r.register(Some(1), info("b")).unwrap();
        r.register(Some(1), a.clone()).unwrap();
        assert_eq!(names(&r, &Lookup::All), ["a", "b"]);
        assert_eq!(r.unregister(Some(1), a.aid.uuid), Ok(true));
        assert_eq!(r.unregister(Some(1), a.aid.uuid), Ok(false));
        // A lost channel takes its own entries only.
        r.register(Some(2), info("c")).unwrap();
        r.drop_channel(1);
        assert_eq!(names(&r, &Lookup::All), ["c"]);
    }

    #[test]
    fn lookups_by_name_give_the_newest_first() {
        let r = Registrar::new();
        let (x1, x2, y) = (info("x"), info("x"), info("y"));
        for i in [&x1, &y, &x2] {
            r.register(Some(7), i.clone()).unwrap();
        }
        let got: Vec<_> = r.query(&Lookup::Name("x".into())).into_iter().map(|i| i.aid).collect();
        assert_eq!(got, [x2.aid.clone(), x1.aid.clone()]);
        assert_eq!(r.query(&Lookup::Uuid(y.aid.uuid)), std::slice::from_ref(&y));
        r.unregister(Some(7), x2.aid.uuid).unwrap();
        assert_eq!(r.query(&Lookup::Name("x".into())), [x1]);
        assert!(r.query(&Lookup::Name("nobody".into())).is_empty());
    }

    #[tokio::test]
    async fn a_registration_wakes_only_the_waiters_for_it() {
        let r = std::sync::Arc::new(Registrar::new());
        let spawn_wait = |who: Lookup| {
            let r = r.clone();
            tokio::spawn(async move { r.wait(&who).await })
        };
        let for_a = spawn_wait(Lookup::Name("a".into()));
        let for_b = spawn_wait(Lookup::Name("b".into()));
        let for_any = spawn_wait(Lookup::All);
        while lock(&r.table).waiters.len() < 3 {
            tokio::task::yield_now().await;
        }
        let a = info("a");
        r.register(Some(1), a.clone()).unwrap();
        assert_eq!(for_a.await.unwrap(), a);
        assert_eq!(for_any.await.unwrap(), a);
        tokio::task::yield_now().await;
        assert!(!for_b.is_finished());
        // A waiter that gives up leaves nothing behind.
        for_b.abort();
        let _ = for_b.await;
        assert!(lock(&r.table).waiters.is_empty());
    }
}
