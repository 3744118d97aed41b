//! The cancel/completion arbiter: exactly one outcome, whatever the order.
#![allow(missing_docs)]

use furrow_proto::dialog::{Arbiter, Completion, Decision};
use proptest::prelude::*;

#[derive(Clone, Copy, Debug)]
enum Ev {
    Complete(Completion),
    Cancel,
    GraceExpired,
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        Just(Ev::Complete(Completion::Returned)),
        Just(Ev::Complete(Completion::Failed { cancellation: false })),
        Just(Ev::Complete(Completion::Failed { cancellation: true })),
        Just(Ev::Complete(Completion::Panicked)),
        Just(Ev::Cancel),
        Just(Ev::GraceExpired),
    ]
}

proptest! {
    #[test]
    fn exactly_one_outcome(grace in any::<bool>(), evs in proptest::collection::vec(ev(), 0..12)) {
        let mut a = Arbiter::new(grace);
        let mut decisions = Vec::new();
        let mut completed = false;
        let mut cancelled = false;
        let mut expired_after_cancel = false;
        for e in &evs {
            let d = match *e {
                Ev::Complete(c) => { completed = true; a.on_completion(c) }
                Ev::Cancel => { cancelled = true; a.on_cancel() }
                Ev::GraceExpired => { if cancelled { expired_after_cancel = true; } a.on_grace_expired() }
            };
            decisions.extend(d);
        }
        // Never both, never twice.
        prop_assert!(decisions.len() <= 1, "{decisions:?} from {evs:?}");
        // Never neither: a finished task, a cancel without grace, or a cancel
        // whose grace ran out is always decided.
        if completed || (cancelled && (!grace || expired_after_cancel)) {
            prop_assert_eq!(decisions.len(), 1, "undecided after {:?}", evs);
        }
        prop_assert_eq!(a.decision(), decisions.first().copied());
    }

    #[test]
    fn completion_before_any_cancel_is_reported_as_is(grace in any::<bool>(), later in proptest::collection::vec(ev(), 0..6)) {
        let mut a = Arbiter::new(grace);
        prop_assert_eq!(a.on_completion(Completion::Returned), Some(Decision::Completed));
        for e in later {
            let d = match e { Ev::Complete(c) => a.on_completion(c), Ev::Cancel => a.on_cancel(), Ev::GraceExpired => a.on_grace_expired() };
            prop_assert_eq!(d, None);
        }
        prop_assert_eq!(a.decision(), Some(Decision::Completed));
    }
}

#[test]
fn own_error_during_grace_is_not_masked() {
    let mut a = Arbiter::new(true);
    assert_eq!(a.on_cancel(), None);
    assert_eq!(a.on_completion(Completion::Failed { cancellation: false }), Some(Decision::Completed));
    let mut a = Arbiter::new(true);
    a.on_cancel();
    assert_eq!(a.on_completion(Completion::Panicked), Some(Decision::Completed));
}

#[test]
fn plain_calls_are_cancelled_at_once() {
    let mut a = Arbiter::new(false);
    assert_eq!(a.on_cancel(), Some(Decision::Cancelled));
    assert_eq!(a.on_completion(Completion::Returned), None);
}
