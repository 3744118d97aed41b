//! Stream flow control under random interleavings: an honest sender never
//! trips the receiver's check, what the receiver holds stays within the
//! documented bound, no stream is ever stranded, and a sender that ignores
//! its credit cannot grow the receiver's memory.

use furrow_proto::flow::{Acks, Admit, RecvWindow, SendCredit, Window};
use proptest::prelude::*;
use std::collections::VecDeque;

#[derive(Clone, Debug)]
enum Op {
    /// The sender tries to send a message of this size.
    Send(u64),
    /// The oldest message in flight arrives.
    Arrive,
    /// The consumer takes the oldest queued message.
    Consume,
    /// The oldest grant in flight reaches the sender.
    Grant,
}

fn op(max: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..=max).prop_map(Op::Send),
        2 => Just(Op::Arrive),
        2 => Just(Op::Consume),
        2 => Just(Op::Grant),
    ]
}

struct Pair {
    tx: SendCredit,
    rx: RecvWindow,
    acks: Acks,
    in_flight: VecDeque<u64>,
    queued: VecDeque<u64>,
    grants: VecDeque<(u64, Option<u64>)>,
    largest: u64,
}

impl Pair {
    fn new(window: Window) -> Pair {
        let (rx, first, acks) = RecvWindow::open(window, false);
        let grants = VecDeque::from([(first.msgs, first.bytes)]);
        Pair {
            tx: SendCredit::default(),
            rx,
            acks,
            in_flight: VecDeque::new(),
            queued: VecDeque::new(),
            grants,
            largest: 0,
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Send(size) => {
                if self.tx.try_spend(size) {
                    self.largest = self.largest.max(size);
                    self.in_flight.push_back(size);
                }
            }
            Op::Arrive => {
                if let Some(size) = self.in_flight.pop_front() {
                    let a = self.rx.admit(size);
                    prop_assert_eq!(a, Admit::Deliver, "an honest sender tripped the window");
                    self.queued.push_back(size);
                }
            }
            Op::Consume => {
                if let Some(r) = self.queued.pop_front().and_then(|size| self.acks.consume(size)) {
                    self.rx.release(r);
                    let g = r.grant().ok_or_else(|| TestCaseError::fail("credit mode grants back"))?;
                    self.grants.push_back((g.msgs, g.bytes));
                }
            }
            Op::Grant => {
                if let Some((n, b)) = self.grants.pop_front() {
                    self.tx.grant(n, b);
                }
            }
        }
        let w = self.rx.window();
        prop_assert!(self.rx.held_msgs() <= w.msgs);
        prop_assert!(
            self.rx.held_bytes() <= self.rx.bound_bytes(self.largest),
            "held {} bytes, bound {}",
            self.rx.held_bytes(),
            self.rx.bound_bytes(self.largest)
        );
        // Held is what is queued plus what was consumed and not released.
        let (pending_msgs, pending_bytes) = self.acks.pending();
        prop_assert_eq!(self.rx.held_bytes(), self.queued.iter().sum::<u64>() + pending_bytes);
        prop_assert_eq!(self.rx.held_msgs(), self.queued.len() as u64 + pending_msgs);
        Ok(())
    }

    /// Let everything in flight arrive, be consumed, and its grants land.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        while !(self.in_flight.is_empty() && self.queued.is_empty() && self.grants.is_empty()) {
            self.apply(&Op::Arrive)?;
            self.apply(&Op::Consume)?;
            self.apply(&Op::Grant)?;
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn honest_streams_stay_bounded_and_never_stall(
        msgs in 1u64..16,
        bytes in 1u64..4096,
        ops in proptest::collection::vec(op(8192), 0..300),
        last in 0u64..8192,
    ) {
        let mut p = Pair::new(Window { msgs, bytes });
        for o in &ops {
            p.apply(o)?;
        }
        // Whatever happened, once the receiver consumed everything the
        // sender can send any message again: nothing is stranded.
        p.settle()?;
        prop_assert!(p.tx.can_send(last), "stranded: {:?} cannot send {last}", p.tx);
        // (What stays outstanding is a batch too small to be granted back:
        // at most half the window.)
        prop_assert!(p.tx.outstanding_bytes() <= bytes / 2);
    }

    #[test]
    fn a_sender_ignoring_credit_cannot_grow_the_receiver(
        msgs in 1u64..16,
        bytes in 1u64..4096,
        sizes in proptest::collection::vec(0u64..8192, 1..300),
    ) {
        let (mut rx, _, _) = RecvWindow::open(Window { msgs, bytes }, false);
        let mut overruns = 0;
        for s in sizes {
            match rx.admit(s) {
                Admit::Overrun { .. } => overruns += 1,
                Admit::Deliver | Admit::Drop => {}
            }
            prop_assert!(rx.held_msgs() <= msgs);
            prop_assert!(rx.held_bytes() <= rx.bound_bytes(8192));
        }
        prop_assert!(overruns <= 1, "an overrun is reported once");
    }
}

#[test]
fn a_message_larger_than_the_window_goes_alone() {
    let mut p = Pair::new(Window { msgs: 8, bytes: 100 });
    p.apply(&Op::Grant).unwrap();
    p.apply(&Op::Send(1000)).unwrap();
    assert_eq!(p.in_flight.len(), 1, "nothing outstanding: a large message goes");
    assert!(!p.tx.can_send(1), "and nothing else until it is consumed");
    p.settle().unwrap();
    assert!(p.tx.can_send(1000));
}

#[test]
fn overrun_mode_grants_unlimited_and_bounds_what_waits() {
    let (mut rx, g, mut acks) = RecvWindow::open(Window { msgs: 2, bytes: 1 << 20 }, true);
    assert_eq!((g.msgs, g.bytes), (furrow_proto::flow::UNLIMITED, None));
    let mut tx = SendCredit::default();
    tx.grant(g.msgs, g.bytes);
    for _ in 0..1000 {
        assert!(tx.try_spend(1 << 30), "unlimited credit");
    }
    assert_eq!(rx.admit(10), Admit::Deliver);
    let r = acks.consume(10).expect("overrun mode releases each message at once");
    assert_eq!(r.grant(), None, "no grants in overrun mode");
    rx.release(r);
    assert_eq!(rx.admit(10), Admit::Deliver);
    assert_eq!(rx.admit(10), Admit::Deliver);
    assert!(matches!(rx.admit(10), Admit::Overrun { .. }), "a slow consumer is reported");
}
