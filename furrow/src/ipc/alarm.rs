//! The channel readers' alarm clock: one plain thread per process wakes
//! each reader at the deadline its keepalive clock asked for
//! (`furrow_proto::keepalive::Watch`).
//!
//! Why not a tokio timer per reader: while any tokio timer is armed, every
//! worker that parks computes the wheel's next expiry, reads the clock and
//! parks in `epoll_wait` with a timeout (a kernel hrtimer armed and
//! cancelled each time). A reader's keepalive timer is armed for as long
//! as its channel lives, so every park of a busy actor paid for it: about
//! 2 µs of CPU per stream round trip, 8% of it, measured with both
//! processes on one CPU (the stream bench, tick on against tick off in the
//! same binary). Deadlines here are seconds apart and change only when a
//! reader looks at its clock, so one thread sleeping on a condition
//! variable serves them all, and tokio's workers park with no timeout.
//!
//! An alarm fires late by at most the thread's wake-up latency; the
//! keepalive and frame deadlines it serves are 100 ms and up.

use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Instant;
use tokio::sync::Notify;

/// One reader's alarm. Dropping it unregisters it (the clock holds it
/// weakly).
#[derive(Debug, Default)]
pub(crate) struct Alarm {
    /// When to fire; `None` once fired, until set again. Changed only
    /// under the clock's lock (see [`Alarm::set`]).
    deadline: Mutex<Option<Instant>>,
    fired: Notify,
}

/// The alarms of this process and the condition variable its thread
/// sleeps on.
#[derive(Default)]
struct Clock {
    alarms: Mutex<Vec<Weak<Alarm>>>,
    changed: Condvar,
}

fn clock() -> &'static Clock {
    static CLOCK: OnceLock<&'static Clock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let clock: &'static Clock = Box::leak(Box::default());
        // A small stack: the loop below is all it runs. If the thread
        // cannot be started, alarms never fire: keepalive and the frame
        // deadline are then off, which is logged, not fatal.
        if let Err(e) =
            std::thread::Builder::new().name("furrow-alarm".into()).stack_size(64 * 1024).spawn(move || run(clock))
        {
            tracing::error!("cannot start the alarm thread ({e}): keepalive probes are off in this process");
        }
        clock
    })
}

/// The clock thread: fire what is due, sleep until the earliest deadline
/// left (or until an alarm is set earlier than that).
fn run(clock: &'static Clock) {
    let mut alarms = crate::sync::lock(&clock.alarms);
    loop {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        alarms.retain(|weak| {
            let Some(alarm) = weak.upgrade() else { return false };
            let mut deadline = crate::sync::lock(&alarm.deadline);
            match *deadline {
                Some(at) if at <= now => {
                    *deadline = None;
                    // `notify_one` keeps a permit if the reader is not
                    // waiting yet: a fire is never lost.
                    alarm.fired.notify_one();
                }
                Some(at) => next = Some(next.map_or(at, |n| n.min(at))),
                None => {}
            }
            true
        });
        // Waiting releases the lock atomically: an alarm set after the
        // scan above (under the same lock) signals a thread that is
        // already waiting, so no earlier deadline is missed.
        alarms = match next {
            Some(at) => match clock.changed.wait_timeout(alarms, at.saturating_duration_since(now)) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            },
            None => match clock.changed.wait(alarms) {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            },
        };
    }
}

impl Alarm {
    /// A new alarm, not set.
    pub(crate) fn new() -> Arc<Alarm> {
        let alarm = Arc::new(Alarm::default());
        crate::sync::lock(&clock().alarms).push(Arc::downgrade(&alarm));
        alarm
    }

    /// Fire at `at` (replacing any deadline set before).
    ///
    /// Takes the clock's lock: the clock thread either has not scanned
    /// yet and will see the new deadline, or is waiting and is woken to
    /// recompute its sleep. Called once per look at the reader's clock
    /// (seconds apart), never per message.
    pub(crate) fn set(&self, at: Instant) {
        let clock = clock();
        let _alarms = crate::sync::lock(&clock.alarms);
        *crate::sync::lock(&self.deadline) = Some(at);
        clock.changed.notify_one();
    }

    /// Resolves once the deadline set last has passed.
    ///
    /// # Cancel safety
    /// Cancel safe: a fire that finds no waiter is kept (as a `Notify`
    /// permit) for the next call.
    pub(crate) async fn fired(&self) {
        self.fired.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::Alarm;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn fires_at_its_deadline_and_an_earlier_one_overrides_a_later() {
        let late = Alarm::new();
        late.set(Instant::now() + Duration::from_secs(3600));
        let alarm = Alarm::new();
        alarm.set(Instant::now() + Duration::from_secs(3600));
        // Set earlier while the thread sleeps towards the hour.
        let start = Instant::now();
        alarm.set(start + Duration::from_millis(50));
        tokio::time::timeout(Duration::from_secs(5), alarm.fired()).await.expect("the alarm fired");
        assert!(start.elapsed() >= Duration::from_millis(50), "not before its deadline");
        // Fired once: not again until set again.
        assert!(tokio::time::timeout(Duration::from_millis(100), alarm.fired()).await.is_err());
        // A fire with nobody waiting is kept for the next wait.
        alarm.set(Instant::now());
        std::thread::sleep(Duration::from_millis(50));
        tokio::time::timeout(Duration::from_secs(5), alarm.fired()).await.expect("kept");
        drop(late);
    }
}
