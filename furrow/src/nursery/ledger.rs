//! How a nursery ends, decided over the ordered record of what happened to
//! its children (docs/design.md, "Supervision").
//!
//! Pure: no I/O, no clock, no tokio. The nursery (the shell in `mod.rs`)
//! feeds every event to one [`Ledger`] under one lock, so the ledger sees
//! them in the order this process observed them, and acts on what it
//! answers. Before, each background task judged a child's ending when it
//! got to run, against a "tearing down" flag: a start that completed after
//! the teardown had taken the list of children was never ended, and a child
//! that died just before the body returned was taken for one the teardown
//! ended (issue 13, bugs 1–3). Here the judgement depends only on the order
//! of events, which is what the property tests check.
//!
//! The rules:
//!
//! - A child's death is *its own* (a failure when its status is not a clean
//!   exit) when nobody here had asked it to end before this process saw it
//!   gone — its channel closed or its exit reaped. Asking a child that is
//!   already gone does not make its death ours.
//! - A clean exit (status 0) nobody here asked for is a polite end asked by
//!   someone else (a third actor's `cancel_actor`): not a failure.
//! - Once the nursery is ending, no new start begins, and a start that
//!   completes anyway is ended at once (its child never serves the body).
//! - A call's error is a failure, except a lost connection (the death is
//!   reported once, by the exit, with its status) and a cancellation of a
//!   child the nursery asked to end (its own doing).
//! - The nursery is settled when every child it began to start has either
//!   failed to start or been seen to exit.

/// A child of one nursery, numbered in order of starting.
pub(crate) type ChildId = usize;

/// Whether the nursery still takes new children.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The body runs (or the nursery's `cancel` ends a round of children).
    Open,
    /// The body has returned or was dropped: everything is being ended.
    Ending,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Starting,
    Running,
    /// Seen exited (reaped).
    Exited,
    /// The start failed or was abandoned: its process (if any) was killed
    /// by the start itself.
    StartFailed,
}

/// Whether the nursery (or a portal of it) asked a child to end, and
/// whether the child was already gone when it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asked {
    No,
    Yes { gone_first: bool },
}

#[derive(Clone, Copy, Debug)]
struct Child {
    state: State,
    asked: Asked,
    /// Its deaths go to a supervisor of its own (a pool), not the nursery.
    replaceable: bool,
}

/// What to do with a child whose start completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// It is one of the nursery's children now.
    Admit,
    /// The nursery is ending: end it at once.
    EndNow,
}

/// How a child's exit is judged.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ExitVerdict<E> {
    /// A failure of the nursery; recorded (one cancels all).
    Failed,
    /// A failure of a replaceable child: for its supervisor, not recorded.
    Replace(E),
    /// The nursery (or a portal of it) asked for it.
    Asked,
    /// A clean exit nobody here asked for: somebody ended it politely.
    Polite,
}

/// What a lost connection to a running child means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lost {
    /// A failure of the nursery, recorded: end everything.
    Failed,
    /// A replaceable child: end it; its death goes to its supervisor.
    Replace,
    /// Somebody asked it to end already (or it is not running): nothing.
    Asked,
}

/// What kind of error a call in a child ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallError {
    /// The connection to the child was lost (its exit tells why).
    Lost,
    /// The call or the actor was cancelled.
    Cancellation,
    /// Anything else: the function's error, a panic, a type mismatch.
    Other,
}

/// The nursery's record: its phase, its children, its errors.
#[derive(Debug)]
pub(crate) struct Ledger<E> {
    phase: Phase,
    children: Vec<Child>,
    errors: Vec<E>,
}

impl<E> Default for Ledger<E> {
    fn default() -> Self {
        Ledger { phase: Phase::Open, children: Vec::new(), errors: Vec::new() }
    }
}

impl<E> Ledger<E> {
    #[cfg(test)]
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// A start begins; `None` once the nursery is ending.
    pub(crate) fn begin_start(&mut self, replaceable: bool) -> Option<ChildId> {
        if self.phase == Phase::Ending {
            return None;
        }
        self.children.push(Child { state: State::Starting, asked: Asked::No, replaceable });
        Some(self.children.len() - 1)
    }

    /// The start failed or was abandoned (its future dropped).
    pub(crate) fn start_failed(&mut self, id: ChildId) {
        if let Some(c) = self.children.get_mut(id).filter(|c| c.state == State::Starting) {
            c.state = State::StartFailed;
        }
    }

    /// The start completed: the child is serving.
    pub(crate) fn started(&mut self, id: ChildId) -> Admission {
        let ending = self.phase == Phase::Ending;
        let Some(c) = self.children.get_mut(id).filter(|c| c.state == State::Starting) else {
            return Admission::EndNow;
        };
        c.state = State::Running;
        if ending {
            // Asked before it could do anything, so its end is ours.
            c.asked = Asked::Yes { gone_first: false };
            Admission::EndNow
        } else {
            Admission::Admit
        }
    }

    /// Somebody here asks `id` to end; `gone` says whether its channel was
    /// already closed or its exit already seen. Returns true the first
    /// time (only a running child can be asked).
    pub(crate) fn ask(&mut self, id: ChildId, gone: bool) -> bool {
        match self.children.get_mut(id) {
            Some(c) if c.state == State::Running && c.asked == Asked::No => {
                c.asked = Asked::Yes { gone_first: gone };
                true
            }
            _ => false,
        }
    }

    /// Child `id` was reaped; `abnormal` when its status is not a clean
    /// exit. `death` is the error a failure is reported with.
    pub(crate) fn exited(&mut self, id: ChildId, abnormal: bool, death: E) -> ExitVerdict<E> {
        let Some(c) = self.children.get_mut(id).filter(|c| c.state == State::Running) else {
            return ExitVerdict::Asked;
        };
        c.state = State::Exited;
        let ours = matches!(c.asked, Asked::Yes { gone_first: false });
        match (ours, abnormal) {
            (true, _) => ExitVerdict::Asked,
            (false, false) => ExitVerdict::Polite,
            (false, true) if c.replaceable => ExitVerdict::Replace(death),
            (false, true) => {
                self.errors.push(death);
                ExitVerdict::Failed
            }
        }
    }

    /// A call in child `id` failed with `e`, of kind `kind`. Returns true
    /// when it was recorded as a failure of the nursery.
    pub(crate) fn call_failed(&mut self, id: ChildId, kind: CallError, e: E) -> bool {
        let asked = self.children.get(id).is_some_and(|c| c.asked != Asked::No);
        let failure = match kind {
            CallError::Lost => false,
            CallError::Cancellation => !asked,
            CallError::Other => true,
        };
        if failure {
            self.errors.push(e);
        }
        failure
    }

    /// A `run_in_actor` start failed with `e` (`cancellation` when it is
    /// an `ActorCancelled`). Returns true when it was recorded as a
    /// failure: a start refused or abandoned because the nursery is ending
    /// is its own doing; any other failure to start is the call's.
    pub(crate) fn start_error(&mut self, cancellation: bool, e: E) -> bool {
        let failure = !(cancellation && self.phase == Phase::Ending);
        if failure {
            self.errors.push(e);
        }
        failure
    }

    /// Child `id`'s connection was lost while its process runs on; `e`
    /// says why. Unless somebody asked it to end, that is its failure: for
    /// a replaceable child, its supervisor's to handle (`Replace`: end it,
    /// its death is then handed over as any other); otherwise recorded
    /// now, and its exit, which the nursery's end brings about, is then
    /// the nursery's doing, not a second failure.
    pub(crate) fn lost(&mut self, id: ChildId, e: E) -> Lost {
        match self.children.get_mut(id) {
            Some(c) if c.state == State::Running && c.asked == Asked::No => {
                if c.replaceable {
                    return Lost::Replace;
                }
                c.asked = Asked::Yes { gone_first: false };
                self.errors.push(e);
                Lost::Failed
            }
            _ => Lost::Asked,
        }
    }

    /// Record a failure that is not a child's (the actor was cancelled).
    pub(crate) fn fail(&mut self, e: E) {
        self.errors.push(e);
    }

    /// The nursery ends: no new starts; every running child not asked yet
    /// is asked now (`gone` tells whether each was already gone) and
    /// returned, for the teardown to end.
    pub(crate) fn begin_ending(&mut self, gone: impl Fn(ChildId) -> bool) -> Vec<ChildId> {
        self.phase = Phase::Ending;
        self.running_unasked().into_iter().filter(|&id| self.ask(id, gone(id))).collect()
    }

    fn running_unasked(&self) -> Vec<ChildId> {
        (0..self.children.len())
            .filter(|&id| self.children[id].state == State::Running && self.children[id].asked == Asked::No)
            .collect()
    }

    /// True when a failure was recorded.
    #[cfg(test)]
    pub(crate) fn has_failed(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Every child began has failed to start or has been seen to exit.
    pub(crate) fn is_settled(&self) -> bool {
        self.children.iter().all(|c| matches!(c.state, State::Exited | State::StartFailed))
    }

    /// How many children are not settled yet (for a bug report).
    pub(crate) fn unsettled(&self) -> usize {
        self.children.iter().filter(|c| !matches!(c.state, State::Exited | State::StartFailed)).count()
    }

    /// The failures, in the order they were recorded.
    pub(crate) fn take_errors(&mut self) -> Vec<E> {
        std::mem::take(&mut self.errors)
    }
}

#[cfg(test)]
mod tests {
    //! Property tests: a random world (children that start or fail to
    //! start, die on their own or not, calls that fail, a body that ends
    //! at a random moment) is played into the ledger in a random
    //! interleaving, and the ledger's decisions are checked against an
    //! oracle computed from the same world.
    use super::*;
    use proptest::prelude::*;

    /// What one child will do, unknown to the nursery.
    #[derive(Clone, Debug)]
    struct Fate {
        start_ok: bool,
        /// Dies on its own (before anyone asks, if it gets the chance),
        /// with an abnormal status or a clean one.
        dies: Option<bool>,
        /// A call in it fails with this kind (before it dies).
        call: Option<CallError>,
        replaceable: bool,
    }

    fn fate() -> impl Strategy<Value = Fate> {
        (
            prop::bool::weighted(0.85),
            prop::option::of(any::<bool>()),
            prop::option::of(prop_oneof![Just(CallError::Lost), Just(CallError::Cancellation), Just(CallError::Other)]),
            prop::bool::weighted(0.2),
        )
            .prop_map(|(start_ok, dies, call, replaceable)| Fate { start_ok, dies, call, replaceable })
    }

    /// One step of one child's own story, in its order.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Step {
        Begin,
        StartDone,
        Call,
        Die,
        Reaped,
    }

    /// The events the world produces: each child's steps in order, the
    /// body's end at `body_at`; interleaved by `order` (a shuffle key).
    fn world() -> impl Strategy<Value = (Vec<Fate>, Vec<u32>, u32)> {
        prop::collection::vec(fate(), 1..7).prop_flat_map(|fates| {
            let n = fates.len() * 5;
            (Just(fates), prop::collection::vec(any::<u32>(), n), any::<u32>())
        })
    }

    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Err {
        Death(usize),
        Call(usize),
    }

    /// Plays the world into a ledger as the shell would, and returns the
    /// ledger with what happened to each child as seen by the world.
    struct Play {
        ledger: Ledger<Err>,
        /// Per child: its id once begun, whether it was gone (channel
        /// closed) and whether it was reaped, and whether the nursery asked
        /// it (and whether it was gone then).
        ids: Vec<Option<ChildId>>,
        gone: Vec<bool>,
        asked_while_alive: Vec<bool>,
        ended_now: Vec<bool>,
        refused: Vec<bool>,
    }

    fn play(fates: &[Fate], keys: &[u32], body_at: u32) -> Play {
        let n = fates.len();
        // Each child's story, then the events in a random interleaving
        // that keeps each child's own order.
        let stories: Vec<Vec<Step>> = fates
            .iter()
            .map(|f| {
                let mut s = vec![Step::Begin, Step::StartDone];
                if f.start_ok {
                    if f.call.is_some() {
                        s.push(Step::Call);
                    }
                    if f.dies.is_some() {
                        s.push(Step::Die);
                        s.push(Step::Reaped);
                    }
                }
                s
            })
            .collect();
        let mut events: Vec<(u32, usize, usize)> = Vec::new(); // (key, child, step index)
        for (c, story) in stories.iter().enumerate() {
            // Keys sorted per child keep the child's own order.
            let mut ks: Vec<u32> = keys[c * 5..c * 5 + story.len()].to_vec();
            ks.sort_unstable();
            for (i, k) in ks.into_iter().enumerate() {
                events.push((k, c, i));
            }
        }
        events.sort_unstable();
        let mut p = Play {
            ledger: Ledger::default(),
            ids: vec![None; n],
            gone: vec![false; n],
            asked_while_alive: vec![false; n],
            ended_now: vec![false; n],
            refused: vec![false; n],
        };
        let mut body_ended = false;
        let mut reaped = vec![false; n];
        let mut to_reap_after_ask: Vec<usize> = Vec::new();
        for &(k, c, i) in &events {
            if !body_ended && k >= body_at {
                body_ended = true;
                end(&mut p, &mut to_reap_after_ask);
            }
            let f = &fates[c];
            match stories[c][i] {
                Step::Begin => match p.ledger.begin_start(f.replaceable) {
                    Some(id) => p.ids[c] = Some(id),
                    None => p.refused[c] = true,
                },
                Step::StartDone => {
                    let Some(id) = p.ids[c] else { continue };
                    if !f.start_ok {
                        p.ledger.start_failed(id);
                        continue;
                    }
                    if p.ledger.started(id) == Admission::EndNow {
                        p.ended_now[c] = true;
                        p.asked_while_alive[c] = true;
                        to_reap_after_ask.push(c);
                    }
                }
                Step::Call => {
                    let Some(id) = p.ids[c] else { continue };
                    if p.gone[c] || reaped[c] {
                        continue;
                    }
                    if let Some(kind) = f.call {
                        p.ledger.call_failed(id, kind, Err::Call(c));
                    }
                }
                Step::Die => {
                    // Its channel closes: the nursery can see it gone.
                    if p.ids[c].is_some() && !p.asked_while_alive[c] {
                        p.gone[c] = true;
                    }
                }
                Step::Reaped => {
                    let Some(id) = p.ids[c] else { continue };
                    if reaped[c] || !p.gone[c] {
                        continue;
                    }
                    reaped[c] = true;
                    let abnormal = fates[c].dies == Some(true);
                    let v = p.ledger.exited(id, abnormal, Err::Death(c));
                    if let ExitVerdict::Replace(e) = v {
                        assert_eq!(e, Err::Death(c));
                    }
                }
            }
        }
        if !body_ended {
            end(&mut p, &mut to_reap_after_ask);
        }
        // The teardown's ladder reaps every child it asked (and the dead).
        for c in 0..n {
            if let Some(id) = p.ids[c]
                && !reaped[c]
                && fates[c].start_ok
            {
                reaped[c] = true;
                let abnormal = if p.gone[c] {
                    fates[c].dies == Some(true)
                } else {
                    true /* SIGKILL or not, ours */
                };
                let _ = p.ledger.exited(id, abnormal, Err::Death(c));
            }
        }
        p
    }

    fn end(p: &mut Play, to_reap: &mut Vec<usize>) {
        let gone = p.gone.clone();
        let ids = p.ids.clone();
        let asked = p.ledger.begin_ending(|id| ids.iter().position(|&x| x == Some(id)).is_some_and(|c| gone[c]));
        for id in asked {
            if let Some(c) = ids.iter().position(|&x| x == Some(id))
                && !gone[c]
            {
                p.asked_while_alive[c] = true;
                to_reap.push(c);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Every child started ends exactly once: as a recorded failure,
        /// a replaceable death, asked for, or a polite exit; the failures
        /// are exactly the oracle's; the ledger settles.
        #[test]
        fn every_ending_is_accounted_for_once((fates, keys, body_at) in world()) {
            let mut p = play(&fates, &keys, body_at);
            prop_assert!(p.ledger.is_settled(), "not settled: {} left", p.ledger.unsettled());
            prop_assert_eq!(p.ledger.phase(), Phase::Ending);
            let errors = p.ledger.take_errors();
            for (c, f) in fates.iter().enumerate() {
                let began = p.ids[c].is_some();
                prop_assert!(began != p.refused[c]);
                let deaths = errors.iter().filter(|e| **e == Err::Death(c)).count();
                let calls = errors.iter().filter(|e| **e == Err::Call(c)).count();
                // Oracle: the death is a failure exactly when the child
                // died abnormally before anyone here asked it to end, and
                // no supervisor of its own takes it.
                let died_first = began && f.start_ok && p.gone[c];
                let want_death = died_first && f.dies == Some(true) && !f.replaceable;
                prop_assert_eq!(deaths, usize::from(want_death), "child {} ({:?}) death", c, f);
                prop_assert!(calls <= 1);
                // A lost connection is never reported as a call error.
                if f.call == Some(CallError::Lost) {
                    prop_assert_eq!(calls, 0);
                }
                // A start completed after the end began never serves.
                if p.ended_now[c] {
                    prop_assert!(!died_first);
                    prop_assert_eq!(deaths, 0);
                }
            }
        }

        /// A failure observed before the body's end is never dropped: the
        /// death of a child that died before the end began is recorded
        /// however late its reaping comes.
        #[test]
        fn a_death_before_the_end_is_never_lost(n in 1usize..6, reap_late in any::<bool>()) {
            let mut l: Ledger<Err> = Ledger::default();
            let ids: Vec<ChildId> = (0..n).map(|_| l.begin_start(false).unwrap()).collect();
            for &id in &ids { prop_assert_eq!(l.started(id), Admission::Admit); }
            // Child 0's channel closes (SIGKILL), the body notices and returns.
            if !reap_late { let _ = l.exited(ids[0], true, Err::Death(0)); }
            let asked = l.begin_ending(|id| id == ids[0]);
            prop_assert_eq!(asked.len(), if reap_late { n } else { n - 1 });
            for &id in &ids[1..] { let _ = l.exited(id, true, Err::Death(id)); }
            if reap_late { let _ = l.exited(ids[0], true, Err::Death(0)); }
            prop_assert!(l.is_settled());
            prop_assert_eq!(l.take_errors(), vec![Err::Death(0)]);
        }
    }

    #[test]
    fn a_start_that_completes_during_the_end_is_ended_and_not_a_failure() {
        let mut l: Ledger<Err> = Ledger::default();
        let a = l.begin_start(false).unwrap();
        assert!(l.begin_ending(|_| false).is_empty());
        assert_eq!(l.begin_start(false), None, "no start begins once ending");
        assert!(!l.is_settled(), "a start in flight keeps the nursery open");
        assert_eq!(l.started(a), Admission::EndNow);
        assert_eq!(l.exited(a, true, Err::Death(a)), ExitVerdict::Asked);
        assert!(l.is_settled());
        assert!(!l.has_failed());
    }

    #[test]
    fn a_start_refused_by_the_ending_is_not_a_failure_other_start_errors_are() {
        let mut l: Ledger<Err> = Ledger::default();
        assert!(l.start_error(false, Err::Call(0)), "a spawn error while open");
        assert!(l.start_error(true, Err::Call(1)), "cancelled by someone else while open");
        l.begin_ending(|_| false);
        assert!(!l.start_error(true, Err::Call(2)), "refused because the nursery is ending");
        assert!(l.start_error(false, Err::Call(3)), "a spawn error is one whenever it comes");
        assert_eq!(l.take_errors(), vec![Err::Call(0), Err::Call(1), Err::Call(3)]);
    }

    #[test]
    fn a_polite_exit_is_not_a_failure_and_a_replaceable_death_is_handed_over() {
        let mut l: Ledger<Err> = Ledger::default();
        let a = l.begin_start(false).unwrap();
        let b = l.begin_start(true).unwrap();
        l.started(a);
        l.started(b);
        assert_eq!(l.exited(a, false, Err::Death(a)), ExitVerdict::Polite);
        assert_eq!(l.exited(b, true, Err::Death(b)), ExitVerdict::Replace(Err::Death(b)));
        assert!(!l.has_failed());
    }

    #[test]
    fn a_lost_child_fails_once_and_its_exit_is_then_ours() {
        let mut l: Ledger<&str> = Ledger::default();
        let a = l.begin_start(false).unwrap();
        let b = l.begin_start(true).unwrap();
        assert_eq!(l.started(a), Admission::Admit);
        assert_eq!(l.started(b), Admission::Admit);
        assert_eq!(l.lost(a, "silent"), Lost::Failed);
        assert_eq!(l.lost(a, "again"), Lost::Asked, "recorded once");
        assert_eq!(l.exited(a, true, "killed"), ExitVerdict::Asked, "the kill is the nursery's doing");
        assert_eq!(l.lost(b, "silent"), Lost::Replace);
        assert_eq!(l.exited(b, true, "killed"), ExitVerdict::Replace("killed"));
        assert_eq!(l.take_errors(), vec!["silent"]);
        // Asked first: a lost connection is expected.
        let mut l: Ledger<&str> = Ledger::default();
        let c = l.begin_start(false).unwrap();
        l.started(c);
        assert!(l.ask(c, false));
        assert_eq!(l.lost(c, "closed"), Lost::Asked);
        assert!(l.take_errors().is_empty());
    }

    #[test]
    fn cancellations_of_asked_children_are_not_failures_others_are() {
        let mut l: Ledger<Err> = Ledger::default();
        let a = l.begin_start(false).unwrap();
        let b = l.begin_start(false).unwrap();
        l.started(a);
        l.started(b);
        // Somebody else cancelled `a`: a failure of the nursery.
        assert!(l.call_failed(a, CallError::Cancellation, Err::Call(a)));
        assert_eq!(l.begin_ending(|_| false), vec![a, b]);
        assert!(!l.call_failed(b, CallError::Cancellation, Err::Call(b)));
        // The function's own error, arriving during the end: still one.
        assert!(l.call_failed(b, CallError::Other, Err::Call(b)));
        assert_eq!(l.take_errors(), vec![Err::Call(a), Err::Call(b)]);
    }
}
