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
//! **Listings are paged** (`query_page`): each answer holds the newest
//! entries that fit in a byte budget below both sides' frame limits, and a
//! cursor for the rest, so a registry of any size is listed (see
//! [`Registrar::query_page`]).
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
use crate::ErrorKind;
use crate::remote::Failure;
use crate::runtime::lock;
use furrow_proto::Payload;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use tokio::sync::oneshot;
use uuid::Uuid;

/// One registration.
struct Entry {
    /// The channel it came over (`None`: the registrar itself).
    chan: Option<u64>,
    /// Registration order: lookups by name resolve to the highest.
    seq: u64,
    info: ActorInfo,
}

/// Room left in a frame for what surrounds a page's entries (the
/// `Return` envelope, the page's own fields).
const PAGE_HEADROOM: usize = 4096;
/// Largest page, whatever the frame limits: a page is built under the
/// table's lock, and a smaller one keeps registrations from waiting on a
/// large listing.
const PAGE_MAX: usize = 1 << 20;

/// One page of a listing, newest registration first.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Page {
    /// The entries of this page.
    pub(crate) entries: Vec<ActorInfo>,
    /// The cursor of the next page (its request's `before`); `None` on the
    /// last page.
    #[serde(default)]
    pub(crate) next: Option<u64>,
    /// Matching entries left out because each alone is over the page's
    /// budget (only possible when the asker's frame limit is smaller than
    /// the one the entry was registered under).
    #[serde(default)]
    pub(crate) omitted: u64,
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
    /// This actor's frame limit: a page must fit in it.
    max_frame: usize,
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
    /// An empty table, answering with frames of at most `max_frame` bytes.
    pub(crate) fn new(max_frame: usize) -> Registrar {
        Registrar { table: Mutex::new(Table::default()), max_frame }
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

    /// One page of the entries matching `who`, newest first: those
    /// registered before the cursor `before` (all, for the first page),
    /// as many as fit in `max_bytes` (the asker's frame limit) and in this
    /// registrar's own limit, less room for the envelope, and at most
    /// [`PAGE_MAX`].
    ///
    /// *Consistency:* the cursor is a registration number, never reused,
    /// so a listing made of pages holds every entry that was registered
    /// before its first page and still is at its last, each once; an entry
    /// registered meanwhile is not in it (it is newer than the listing),
    /// one removed meanwhile may or may not be. Every page but the last
    /// holds at least one entry, so a listing always ends.
    ///
    /// *Cost:* a page starts at its cursor in the ordered indexes, so it
    /// costs what it holds (plus entries too large to list), not the table.
    pub(crate) fn query_page(&self, who: &Lookup, before: Option<u64>, max_bytes: usize) -> Page {
        let budget = max_bytes.min(self.max_frame).saturating_sub(PAGE_HEADROOM).clamp(256, PAGE_MAX);
        let t = lock(&self.table);
        let below = before.unwrap_or(u64::MAX);
        let older: Box<dyn Iterator<Item = &Entry>> = match who {
            Lookup::All => Box::new(t.by_seq.range(..below).rev().filter_map(|(_, u)| t.entries.get(u))),
            Lookup::Name(n) => match t.by_name.get(n) {
                Some(m) => Box::new(m.range(..below).rev().filter_map(|(_, u)| t.entries.get(u))),
                None => Box::new(std::iter::empty()),
            },
            Lookup::Uuid(u) => Box::new(t.entries.get(u).filter(|e| e.seq < below).into_iter()),
        };
        let mut page = Page::default();
        let mut used = 0;
        for e in older {
            // The entry's size in the page's array (an encoding that fails
            // cannot be sent either: counted as too large).
            let size = Payload::encode(&e.info).map(|p| p.len()).unwrap_or(usize::MAX);
            if size > budget {
                page.omitted += 1;
                tracing::debug!(uuid = %e.info.aid.uuid, size, budget, "registry entry too large for a listing page: left out");
                continue;
            }
            if used + size > budget {
                // This one starts the next page.
                page.next = Some(e.seq + 1);
                break;
            }
            used += size;
            page.entries.push(e.info.clone());
        }
        page
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
        let bad = |e: furrow_proto::PayloadError| Failure::runtime(ErrorKind::MsgTypeError, e.to_string());
        let refused = |why: String| Failure::runtime(ErrorKind::RegistrationRefused, why);
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
            "query_page" => {
                #[derive(serde::Deserialize)]
                struct A {
                    who: Lookup,
                    #[serde(default)]
                    before: Option<u64>,
                    max_bytes: u64,
                }
                let a: A = kwargs.decode().map_err(bad)?;
                let max_bytes = usize::try_from(a.max_bytes).unwrap_or(usize::MAX);
                Payload::encode(&self.query_page(&a.who, a.before, max_bytes)).map_err(bad)
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
                ErrorKind::FunctionNotFound,
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
        ActorInfo {
            aid: Aid::new(name, 1),
            addrs: Vec::new(),
            parent: None,
            registrar: false,
            registry: Vec::new(),
            host: String::new(),
        }
    }

    fn names(r: &Registrar, who: &Lookup) -> Vec<String> {
        r.query(who).into_iter().map(|i| i.aid.name).collect()
    }

    #[test]
    fn only_the_owner_changes_or_removes_an_entry() {
        let r = Registrar::new(1 << 20);
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
        let r = Registrar::new(1 << 20);
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
        let r = std::sync::Arc::new(Registrar::new(1 << 20));
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

    /// Every page until the last, as the asker's loop does.
    fn list(r: &Registrar, who: &Lookup, max_bytes: usize) -> (Vec<ActorInfo>, usize, u64) {
        let (mut all, mut before, mut pages, mut omitted) = (Vec::new(), None, 0, 0);
        loop {
            let page = r.query_page(who, before, max_bytes);
            // Within the budget, plus the page's own few fields: a
            // `Return` of it is well inside the asker's frame.
            let bytes = Payload::encode(&page).unwrap().len();
            assert!(bytes + PAGE_HEADROOM / 2 <= max_bytes, "page of {bytes} bytes for a limit of {max_bytes}");
            pages += 1;
            omitted += page.omitted;
            all.extend(page.entries);
            match page.next {
                Some(n) => {
                    assert!(before.is_none_or(|b| n < b), "the cursor moves down");
                    before = Some(n);
                }
                None => return (all, pages, omitted),
            }
        }
    }

    #[test]
    fn a_listing_larger_than_a_frame_comes_in_pages_holding_everything_once() {
        let r = Registrar::new(64 * 1024);
        let names: Vec<String> = (0..500).map(|i| format!("{i:04}-{}", "n".repeat(4000))).collect();
        for n in &names {
            r.register(Some(1), info(n)).unwrap();
        }
        let (all, pages, omitted) = list(&r, &Lookup::All, 64 * 1024);
        assert_eq!(omitted, 0);
        assert!(pages >= 30, "2 MB in 64 KiB pages: {pages}");
        let got: Vec<&str> = all.iter().map(|a| a.aid.name.as_str()).collect();
        let want: Vec<&str> = names.iter().rev().map(String::as_str).collect();
        assert_eq!(got, want, "newest first, each once");
        // The asker's smaller limit wins over the registrar's.
        let (all, pages_small, _) = list(&r, &Lookup::All, 16 * 1024);
        assert_eq!(all.len(), 500);
        assert!(pages_small > pages);
        // A lookup by name pages the same way.
        let (one, _, _) = list(&r, &Lookup::Name(names[7].clone()), 64 * 1024);
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn entries_registered_during_a_listing_are_not_in_it_and_none_appears_twice() {
        let r = Registrar::new(16 * 1024);
        let all: Vec<ActorInfo> = (0..100).map(|i| info(&format!("{i:03}-{}", "a".repeat(1000)))).collect();
        for e in &all {
            r.register(Some(1), e.clone()).unwrap();
        }
        let first = r.query_page(&Lookup::All, None, 16 * 1024);
        let listed = first.entries.clone();
        assert!(first.next.is_some() && listed.len() < 20);
        // The 20 newest leave (those listed and some not yet listed), then
        // those listed register again: their new registration numbers are
        // newer than the listing. (Numbers were `max + 1` before, so they
        // got numbers below the cursor again and were listed twice.)
        for e in &all[80..] {
            r.unregister(Some(1), e.aid.uuid).unwrap();
        }
        for e in &listed {
            r.register(Some(1), e.clone()).unwrap();
        }
        r.register(Some(1), info("late")).unwrap();
        let (mut rest, mut before) = (Vec::new(), first.next);
        while let Some(b) = before {
            let p = r.query_page(&Lookup::All, Some(b), 16 * 1024);
            rest.extend(p.entries);
            before = p.next;
        }
        let mut seen: std::collections::HashSet<uuid::Uuid> = listed.iter().map(|a| a.aid.uuid).collect();
        for a in &rest {
            assert!(seen.insert(a.aid.uuid), "{} listed twice", a.aid.name);
            assert_ne!(a.aid.name, "late");
        }
        assert_eq!(seen.len(), 80 + listed.len(), "every entry there from the first page to the last");
    }

    #[test]
    fn an_entry_larger_than_the_askers_frame_is_left_out_and_counted() {
        let r = Registrar::new(1 << 20);
        r.register(Some(1), info("small")).unwrap();
        r.register(Some(1), info(&"h".repeat(100_000))).unwrap();
        r.register(Some(1), info("smaller")).unwrap();
        let (all, _, omitted) = list(&r, &Lookup::All, 64 * 1024);
        let names: Vec<&str> = all.iter().map(|a| a.aid.name.as_str()).collect();
        assert_eq!(names, ["smaller", "small"]);
        assert_eq!(omitted, 1);
    }
}
