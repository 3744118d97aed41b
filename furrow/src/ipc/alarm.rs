//! The alarm a channel's reader sets for its keepalive clock
//! (`furrow_proto::keepalive::Watch`): a kernel timer (`timerfd`) that the
//! runtime watches like a socket, not a tokio timer.
//!
//! Why: while any tokio timer is armed, every worker that parks reads the
//! clock, scans the timer wheel and parks in `epoll_wait` with a timeout (a
//! kernel hrtimer armed and cancelled each time). A reader's keepalive
//! timer is armed for as long as its channel lives, so every park of a busy
//! actor paid for it: about 2 µs of CPU per stream round trip, measured with
//! both processes on one CPU (the stream bench, timer on against off in the
//! same binary). A `timerfd` is one more file descriptor in the epoll set:
//! workers park with no timeout, and the expiry arrives as readiness, on a
//! runtime thread.
//!
//! Why not one thread sleeping for every reader (tried first): the wake it
//! sends a task comes from outside the runtime, and a wake in flight while
//! the runtime is dropped holds a task reference, and through it the
//! runtime's driver (its epoll and eventfd descriptors), past the drop. The
//! test harness's leak check reported descriptors of that shape once in 20
//! suite runs on a busy machine with the thread (docs/design.md,
//! "Keepalive").
//!
//! If the kernel refuses a timer (descriptor limit), the reader falls back
//! to a tokio timer: slower, never wrong.

use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;

/// A reader's alarm: set to a deadline, [`fired`](Alarm::fired) once it
/// passed.
pub(crate) enum Alarm {
    Kernel(AsyncFd<OwnedFd>),
    /// The fallback.
    Tokio(Pin<Box<tokio::time::Sleep>>),
}

impl std::fmt::Debug for Alarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Alarm::Kernel(_) => "Alarm::Kernel",
            Alarm::Tokio(_) => "Alarm::Tokio",
        })
    }
}

impl Alarm {
    /// An alarm set to `at`. Must be called inside a tokio runtime (the
    /// timer is registered with its I/O driver).
    pub(crate) fn new(at: Instant) -> Alarm {
        match Self::kernel() {
            Ok(fd) => {
                let mut alarm = Alarm::Kernel(fd);
                alarm.set(at);
                alarm
            }
            Err(e) => {
                tracing::warn!("no kernel timer for a channel's keepalive ({e}); using a tokio timer");
                Alarm::Tokio(Box::pin(tokio::time::sleep_until(at.into())))
            }
        }
    }

    fn kernel() -> std::io::Result<AsyncFd<OwnedFd>> {
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        // Monotonic, as `Instant` is: a change of the wall clock moves no
        // deadline.
        let fd = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC)?;
        // SAFETY: `OwnedFd` owns its descriptor for as long as it lives, and
        // the `AsyncFd` owns the `OwnedFd`: the descriptor stays open and
        // the same until the `AsyncFd` is dropped.
        Ok(unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?)
    }

    /// Fire at `at` (replacing the deadline set before; a deadline passed
    /// already fires at once). Called each time the reader looks at its
    /// clock (seconds apart), never per message.
    pub(crate) fn set(&mut self, at: Instant) {
        match self {
            Alarm::Kernel(fd) => {
                use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
                // Relative: `Instant` does not expose its clock reading. A
                // zero value would disarm the timer, so at least 1 ns.
                let d = at.saturating_duration_since(Instant::now()).max(Duration::from_nanos(1));
                let value = Timespec {
                    tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                    tv_nsec: i64::from(d.subsec_nanos()),
                };
                let spec = Itimerspec { it_interval: Timespec { tv_sec: 0, tv_nsec: 0 }, it_value: value };
                if let Err(e) = timerfd_settime(fd.get_ref(), TimerfdTimerFlags::empty(), &spec) {
                    // Cannot happen for a valid timer and a valid value;
                    // if it did, keepalive would stop silently: say so.
                    tracing::error!("cannot set a channel's keepalive timer: {e}");
                }
            }
            Alarm::Tokio(sleep) => sleep.as_mut().reset(at.into()),
        }
    }

    /// Resolves once the deadline set last has passed; then not again
    /// until set again.
    ///
    /// # Cancel safety
    /// Cancel safe: an expiry not yet taken stays in the kernel timer (or
    /// the tokio timer stays elapsed) for the next call.
    pub(crate) async fn fired(&mut self) {
        match self {
            Alarm::Kernel(fd) => loop {
                let Ok(mut ready) = fd.readable().await else {
                    // The runtime is shutting down: nothing will fire.
                    return std::future::pending().await;
                };
                let mut count = [0u8; 8];
                // Reading takes the expiry (the count of expirations); a
                // spurious readiness reads `WouldBlock` and waits again.
                match ready.try_io(|fd| rustix::io::read(fd.get_ref(), &mut count).map_err(std::io::Error::from)) {
                    Ok(Ok(_)) => return,
                    Ok(Err(e)) => {
                        tracing::error!("cannot read a channel's keepalive timer: {e}");
                        return std::future::pending().await;
                    }
                    Err(_would_block) => continue,
                }
            },
            Alarm::Tokio(sleep) => {
                sleep.as_mut().await;
                // Elapsed stays elapsed: push it out of the way until set.
                sleep.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(86400 * 365));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Alarm;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn fires_at_its_deadline_once_and_again_when_set_again() {
        let start = Instant::now();
        let mut alarm = Alarm::new(start + Duration::from_secs(3600));
        assert!(matches!(alarm, Alarm::Kernel(_)), "{alarm:?}");
        // Set earlier: the earlier deadline counts.
        alarm.set(start + Duration::from_millis(50));
        tokio::time::timeout(Duration::from_secs(5), alarm.fired()).await.expect("the alarm fired");
        assert!(start.elapsed() >= Duration::from_millis(50), "not before its deadline");
        // Fired once: not again until set again.
        assert!(tokio::time::timeout(Duration::from_millis(100), alarm.fired()).await.is_err());
        // An expiry nobody waited for is kept for the next wait; a passed
        // deadline fires at once.
        alarm.set(Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        tokio::time::timeout(Duration::from_secs(5), alarm.fired()).await.expect("kept");
    }

    #[tokio::test]
    async fn the_fallback_behaves_the_same() {
        let start = Instant::now();
        let mut alarm = Alarm::Tokio(Box::pin(tokio::time::sleep_until((start + Duration::from_secs(3600)).into())));
        alarm.set(start + Duration::from_millis(50));
        tokio::time::timeout(Duration::from_secs(5), alarm.fired()).await.expect("the alarm fired");
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(tokio::time::timeout(Duration::from_millis(100), alarm.fired()).await.is_err());
        alarm.set(Instant::now());
        tokio::time::timeout(Duration::from_secs(5), alarm.fired()).await.expect("fired again");
    }
}
