//! Keepalive under random arrival times: a peer is never given up while
//! it was heard from within the allowed silence, always given up once it
//! was silent longer, and probed at most once per silence.

use furrow_proto::keepalive::{Action, Keepalive};
use proptest::prelude::*;
use std::time::{Duration, Instant};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn dead_exactly_when_silent_too_long(
        interval_ms in 1u64..500,
        silence_ms in 1u64..2000,
        // Each step: time passes, then maybe a byte arrives.
        steps in proptest::collection::vec((0u64..400, any::<bool>()), 1..200),
    ) {
        let t0 = Instant::now();
        let interval = Duration::from_millis(interval_ms);
        let silence = Duration::from_millis(silence_ms).max(interval);
        let mut k = Keepalive::new(t0, interval, silence);
        let mut now = t0;
        let mut last = t0;
        let mut pings_since_last = 0;
        for (dt, arrives) in steps {
            now += Duration::from_millis(dt);
            match k.poll(now) {
                Action::Dead { silent_for } => {
                    prop_assert!(now - last >= silence, "given up after {:?} of silence (allowed {silence:?})", now - last);
                    prop_assert_eq!(silent_for, now - last);
                    return Ok(());
                }
                Action::Ping(_) => {
                    prop_assert!(now - last >= interval, "probed after only {:?}", now - last);
                    pings_since_last += 1;
                    prop_assert!(pings_since_last <= 1, "probed twice in one silence");
                }
                Action::Wait(at) => {
                    prop_assert!(at > now, "asked to wait for the past");
                    prop_assert!(now - last < silence, "silent {:?} and not given up", now - last);
                }
                Action::Paused => prop_assert!(false, "never paused here"),
            }
            if arrives {
                k.on_recv(now);
                last = now;
                pings_since_last = 0;
            }
        }
    }
}

#[test]
fn a_paused_clock_gives_nobody_up_and_resumes_with_a_full_allowance() {
    let t0 = Instant::now();
    let s = Duration::from_secs(1);
    let mut k = Keepalive::new(t0, s, 3 * s);
    k.pause();
    assert_eq!(k.poll(t0 + 100 * s), Action::Paused);
    k.resume(t0 + 100 * s);
    assert_eq!(k.poll(t0 + 101 * s), Action::Ping(1));
    assert_eq!(k.poll(t0 + 102 * s), Action::Wait(t0 + 103 * s));
    assert!(matches!(k.poll(t0 + 103 * s), Action::Dead { .. }));
}
