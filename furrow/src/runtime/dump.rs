//! The actor's side of a dump (`furrow::runtime::dump`, SIGUSR1): see
//! [`crate::dump`].

use super::{Actor, lock};
use crate::dump::{ActorDump, ChildDump};
use crate::ipc::Channel;
use crate::remote::Failure;
use furrow_proto::{Cid, Payload};
use std::sync::Arc;

impl Actor {
    /// What this actor is doing now. Like `stats`, each lock is taken
    /// alone and briefly (the channel map, the parent, the task table per
    /// channel, each channel's own), never nested, so this runs beside any
    /// other runtime code; `asked_on` is listed even if the runtime does
    /// not hold it yet (a child's first request from its parent).
    /// The dialog of the request being answered (`asked_on`, and its cid)
    /// is left out: it is the dump itself, not what the actor was doing.
    pub(crate) fn dump(&self, asked_on: Option<(&Arc<Channel>, Cid)>) -> ActorDump {
        let (asked_on, answering) = (asked_on.map(|a| a.0), asked_on.map(|(c, cid)| (c.id, cid)));
        let mut chans: Vec<Arc<Channel>> = lock(&self.channels).values().cloned().collect();
        chans.extend(lock(&self.parent).iter().cloned());
        chans.extend(asked_on.cloned());
        chans.sort_by_key(|c| c.id);
        chans.dedup_by_key(|c| c.id);
        let (canceller, why) = self.cancel_reason();
        let cancelled = self.cancel.is_cancelled().then(|| match canceller {
            Some(by) if !why.is_empty() => format!("{why} (by {by})"),
            Some(by) => format!("cancelled by {by}"),
            None if !why.is_empty() => why,
            None => "cancelled".to_owned(),
        });
        let mut d =
            ActorDump { aid: self.aid.clone(), uptime: self.started.elapsed(), cancelled, ..Default::default() };
        for c in chans.iter().filter(|c| !c.is_closed()) {
            // `Channel::dump` calls `cancel_of` under the channel's lock:
            // what it needs of the task table is read first, so the two
            // locks are never held together.
            let asked: std::collections::HashMap<_, _> = lock(&self.tasks)
                .iter()
                .filter(|((chan, _), _)| *chan == c.id)
                .filter_map(|((_, cid), h)| h.scope.asked().map(|a| (*cid, a)))
                .collect();
            let (mut chan, dialogs) = c.dump(|cid| asked.get(&cid).cloned());
            let before = d.dialogs.len();
            d.dialogs.extend(dialogs.into_iter().filter(|x| Some((x.channel, x.cid)) != answering));
            chan.dialogs = d.dialogs.len() - before;
            d.channels.push(chan);
        }
        // Oldest first: the dialog stuck longest leads.
        d.dialogs.sort_by_key(|x| std::cmp::Reverse(x.age));
        let mut children: Vec<_> = lock(&self.children).values().cloned().collect();
        children.sort_by_key(|c| c.pid());
        d.children = children
            .iter()
            .map(|c| ChildDump { aid: c.aid(), exited: c.exited().map(|e| crate::spawn::describe(&e.status)) })
            .collect();
        d
    }

    /// The dump, encoded as the answer to the runtime request.
    // The shape every served function ends with (`Served`).
    #[allow(clippy::result_large_err)]
    pub(super) fn dump_payload(
        &self,
        asked_on: &Arc<Channel>,
        cid: Cid,
        tasks: Option<String>,
    ) -> Result<Payload, Failure> {
        Payload::encode(&ActorDump { tasks, ..self.dump(Some((asked_on, cid))) })
            .map_err(|e| Failure::runtime(crate::ErrorKind::MsgTypeError, e.to_string()))
    }
}

/// Write the actor's dump to stderr at each SIGUSR1, until aborted (at
/// shutdown). `None` when the runtime cannot hear signals (a runtime
/// built without its I/O driver): a debug line says so.
///
/// tokio's handler only sets a flag and writes to a pipe (signal safe);
/// the dump is made here, on a task, with the runtime's usual locks. Once
/// installed, the handler stays for the process: a SIGUSR1 after this
/// actor ended is ignored rather than killing the process.
pub(super) fn watch_sigusr1(actor: &Arc<Actor>) -> Option<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sig = match signal(SignalKind::user_defined1()) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("no dump on SIGUSR1: {e}");
            return None;
        }
    };
    let weak = Arc::downgrade(actor);
    Some(tokio::spawn(async move {
        // `recv` is cancel safe; `None` once the runtime's driver is gone.
        while sig.recv().await.is_some() {
            let Some(actor) = weak.upgrade() else { return };
            let tasks = crate::dump::task_dump().await;
            let text = format!("furrow: SIGUSR1: dump of {}\n{}", actor.aid, ActorDump { tasks, ..actor.dump(None) });
            // One write of the whole dump, so dumps of actors sharing a
            // terminal (or a test's captured stderr) do not interleave
            // line by line. Blocking, like `eprintln!`; stderr is ours.
            use std::io::Write as _;
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
    }))
}
