//! Process faults: one named actor kills or freezes itself at a chosen step
//! of a dialog, the N-th time it gets there.
//!
//! `fault=ACTION:ACTOR:STEP[:N]` in the chaos configuration (see
//! [`super`]):
//!
//! - `ACTION`: `kill` (`SIGKILL`: the process is gone at once, its sockets
//!   close) or `stop` (`SIGSTOP`: the process freezes with its sockets
//!   open, and says nothing more; whoever ends the tree must kill it);
//! - `ACTOR`: the actor's name; the fault is armed in that actor's process
//!   only (every actor of that name, if several share it);
//! - `STEP`: where, in that actor (see [`Step`]);
//! - `N`: the N-th time the step is reached in that process (default 1). A
//!   step reached fewer times never fires: the run is then a fault-free run.
//!
//! Before the signal, one line goes to stderr
//! (`furrow chaos: fault fired: …`), so a test can tell a run in which the
//! fault fired from one in which it did not.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the faulty actor does to itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// `SIGKILL`.
    Kill,
    /// `SIGSTOP`: frozen until someone kills it.
    Stop,
}

/// A step of a dialog, as the faulty actor sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A `Start` of a user function arrived (before it runs).
    Start,
    /// A context callee is about to send `Started`.
    Started,
    /// About to send a `Yield` (either end of a stream): mid-stream.
    Yield,
    /// A function finished and its `Return` is about to be sent.
    Return,
    /// A cancel request (of one task, or of the whole actor) arrived.
    Cancel,
    /// The actor's shutdown began (its work is over; its channels, socket
    /// files and children are not dealt with yet).
    Teardown,
}

impl Step {
    const ALL: [(Step, &'static str); 6] = [
        (Step::Start, "start"),
        (Step::Started, "started"),
        (Step::Yield, "yield"),
        (Step::Return, "return"),
        (Step::Cancel, "cancel"),
        (Step::Teardown, "teardown"),
    ];

    fn name(self) -> &'static str {
        Step::ALL.iter().find(|(s, _)| *s == self).map(|(_, n)| *n).unwrap_or("?")
    }
}

/// One process fault (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fault {
    pub(crate) action: Action,
    pub(crate) actor: String,
    pub(crate) step: Step,
    pub(crate) nth: u64,
}

impl Fault {
    /// Parse `ACTION:ACTOR:STEP[:N]`.
    pub(crate) fn parse(s: &str) -> Result<Fault, String> {
        let mut parts = s.split(':');
        let (Some(action), Some(actor), Some(step)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("expected ACTION:ACTOR:STEP[:N], e.g. kill:worker:yield:3".into());
        };
        let action = match action {
            "kill" => Action::Kill,
            "stop" => Action::Stop,
            other => return Err(format!("unknown action {other:?} (kill, stop)")),
        };
        if actor.is_empty() {
            return Err("no actor name".into());
        }
        let Some(&(step, _)) = Step::ALL.iter().find(|(_, n)| *n == step) else {
            let names: Vec<&str> = Step::ALL.iter().map(|(_, n)| *n).collect();
            return Err(format!("unknown step {step:?} ({})", names.join(", ")));
        };
        let nth = match parts.next() {
            Some(n) => n.parse::<u64>().map_err(|e| format!("N={n}: {e}"))?.max(1),
            None => 1,
        };
        if parts.next().is_some() {
            return Err("too many fields (ACTION:ACTOR:STEP[:N])".into());
        }
        Ok(Fault { action, actor: actor.to_owned(), step, nth })
    }
}

/// The fault armed in this process, with how often its step was reached.
struct Armed {
    fault: Fault,
    seen: AtomicU64,
}

static ARMED: OnceLock<Option<Armed>> = OnceLock::new();

/// Arm the configured fault if it names this process's actor. Called once,
/// when the process's actor is created; later calls change nothing.
pub(crate) fn arm(actor: &str) {
    ARMED.get_or_init(|| {
        let fault = super::config()?.fault.as_ref().filter(|f| f.actor == actor)?;
        tracing::info!("chaos: fault armed: {fault:?}");
        Some(Armed { fault: fault.clone(), seen: AtomicU64::new(0) })
    });
}

/// This process reached `step`: fire the fault if this is its turn.
///
/// Cheap when nothing is armed (one atomic load), so it can sit on the
/// stream path. It never returns when it fires with `kill`; with `stop` it
/// returns only if someone sends `SIGCONT`.
pub(crate) fn at(step: Step) {
    let Some(Some(armed)) = ARMED.get() else { return };
    if armed.fault.step != step {
        return;
    }
    let n = armed.seen.fetch_add(1, Ordering::Relaxed) + 1;
    if n != armed.fault.nth {
        return;
    }
    let (sig, what) = match armed.fault.action {
        Action::Kill => (libc::SIGKILL, "SIGKILL"),
        Action::Stop => (libc::SIGSTOP, "SIGSTOP"),
    };
    // A plain write to stderr (not the log): it must be out before the
    // signal, whatever the log filter says.
    eprintln!(
        "furrow chaos: fault fired: {} {what} at {} #{n} (pid {})",
        armed.fault.actor,
        step.name(),
        std::process::id()
    );
    // (A number that names no signal cannot come from a fault spec: they
    // are parsed from names.)
    crate::spawn::send_signal(std::process::id(), sig);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_refuse_nonsense() {
        let f = Fault::parse("kill:worker-1:yield:7").unwrap();
        assert_eq!(f, Fault { action: Action::Kill, actor: "worker-1".into(), step: Step::Yield, nth: 7 });
        assert_eq!(Fault::parse("stop:a:teardown").unwrap().nth, 1);
        for (bad, says) in [
            ("kill:a", "expected"),
            ("maim:a:start", "unknown action"),
            ("kill::start", "no actor"),
            ("kill:a:later", "unknown step"),
            ("kill:a:start:x", "N=x"),
            ("kill:a:start:1:2", "too many"),
        ] {
            let e = Fault::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
