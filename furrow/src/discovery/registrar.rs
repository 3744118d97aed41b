//! The registrar's side: the table of registered actors and the requests
//! (`Start`s on [`REGISTRY_NS`](super::REGISTRY_NS)) that read and change it.
//!
//! Every entry remembers the channel it was registered over. When that
//! channel is lost (the actor exited, crashed or was SIGKILLed), every entry
//! it registered is dropped: the registry never lists an actor whose
//! connection to it is gone for longer than the time the registrar takes to
//! see the socket close.
//!
//! Listings are paged (`query_page`): each answer holds the newest entries
//! that fit in a byte budget below both sides' frame limits, and a cursor
//! for the rest, so a registry of any size is listed (see
//! [`Registrar::query_page`]).

use super::{ActorInfo, Lookup};
use crate::remote::Failure;
use crate::runtime::lock;
use furrow_proto::Payload;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

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

/// The registry table of a registrar actor.
pub(crate) struct Registrar {
    /// In registration order: `seq` increases along the vector (an entry
    /// is only ever pushed, with a fresh `seq`, or removed).
    entries: Mutex<Vec<Entry>>,
    /// The next registration's `seq`: never reused, so a listing's cursor
    /// never meets an entry registered after the listing began (or a
    /// re-registration of one it listed already).
    next_seq: AtomicU64,
    /// This actor's frame limit: a page must fit in it.
    max_frame: usize,
    /// Bumped on every change, so waiters can re-check.
    version: watch::Sender<u64>,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registrar({} entries)", lock(&self.entries).len())
    }
}

impl Registrar {
    /// An empty table, answering with frames of at most `max_frame` bytes.
    pub(crate) fn new(max_frame: usize) -> Registrar {
        Registrar {
            entries: Mutex::new(Vec::new()),
            next_seq: AtomicU64::new(1),
            max_frame,
            version: watch::Sender::new(0),
        }
    }

    fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Add (or replace: same uuid) an entry.
    pub(crate) fn register(&self, chan: Option<u64>, info: ActorInfo) {
        {
            let mut entries = lock(&self.entries);
            entries.retain(|e| e.info.aid.uuid != info.aid.uuid);
            // Taken under the lock: pushes happen in `seq` order.
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
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

    /// One page of the entries matching `who`, newest first: those
    /// registered before the cursor `before` (all, for the first page),
    /// as many as fit in `max_bytes` (the asker's frame limit) and in this
    /// registrar's own limit, less room for the envelope, and at most
    /// [`PAGE_MAX`].
    ///
    /// *Consistency:* the cursor is a registration number, so a listing
    /// made of pages holds every entry that was registered before its
    /// first page and still is at its last, each once; an entry
    /// registered meanwhile is not in it (it is newer than the listing),
    /// one removed meanwhile may or may not be. Every page but the last
    /// holds at least one entry, so a listing always ends.
    pub(crate) fn query_page(&self, who: &Lookup, before: Option<u64>, max_bytes: usize) -> Page {
        let budget = max_bytes.min(self.max_frame).saturating_sub(PAGE_HEADROOM).clamp(256, PAGE_MAX);
        let entries = lock(&self.entries);
        let mut page = Page::default();
        let mut used = 0;
        let older = entries.iter().rev().filter(|e| before.is_none_or(|b| e.seq < b));
        for e in older.filter(|e| who.matches(&e.info.aid)) {
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
                "FunctionNotFound",
                format!("no registry request `{}::{other}`", super::REGISTRY_NS),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use furrow_proto::{Addr, Aid};

    fn info(name: &str) -> ActorInfo {
        ActorInfo {
            aid: Aid::new(name, 1),
            addrs: vec![Addr::Uds("/tmp/x.sock".into())],
            parent: None,
            registrar: false,
            registry: Vec::new(),
        }
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
            r.register(Some(1), info(n));
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
            r.register(Some(1), e.clone());
        }
        let first = r.query_page(&Lookup::All, None, 16 * 1024);
        let listed = first.entries.clone();
        assert!(first.next.is_some() && listed.len() < 20);
        // The 20 newest leave (those listed and some not yet listed), then
        // those listed register again: their new registration numbers are
        // newer than the listing. (Numbers were `max + 1` before, so they
        // got numbers below the cursor again and were listed twice.)
        for e in &all[80..] {
            r.unregister(e.aid.uuid);
        }
        for e in &listed {
            r.register(Some(1), e.clone());
        }
        r.register(Some(1), info("late"));
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
        r.register(Some(1), info("small"));
        r.register(Some(1), info(&"h".repeat(100_000)));
        r.register(Some(1), info("smaller"));
        let (all, _, omitted) = list(&r, &Lookup::All, 64 * 1024);
        let names: Vec<&str> = all.iter().map(|a| a.aid.name.as_str()).collect();
        assert_eq!(names, ["smaller", "small"]);
        assert_eq!(omitted, 1);
    }
}
