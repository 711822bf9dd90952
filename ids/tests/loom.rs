//! loom models of `AtomicGenerator`: across 2-3 threads no ID is issued twice
//! and each thread's IDs increase, including across a sequence rollover and a
//! clock step backwards.
#![cfg(loom)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use core::time::Duration;

use loom::sync::Arc;
use loom::thread;
use quorate_ids::{AtomicGenerator, ClockPolicy, Id, IdError, Layout, UnixMillis, WorkerId};

const EPOCH: u64 = 1_000;

/// Two IDs per tick, so two threads minting two IDs each must roll over.
fn tiny_layout() -> Layout {
    Layout::new(61, 1, 1, UnixMillis::from_millis(EPOCH)).unwrap()
}

fn at(ms: u64) -> UnixMillis {
    UnixMillis::from_millis(EPOCH + ms)
}

/// Mints one ID per entry of `clock`, following `retry_at` when blocked and
/// catching up to the last issued time when rejected as behind.
fn mint(ids: &AtomicGenerator, clock: &[u64]) -> Vec<Id> {
    clock
        .iter()
        .map(|&ms| {
            let mut now = at(ms);
            loop {
                match ids.next(now) {
                    Ok(id) => return id,
                    Err(IdError::WouldBlock { retry_at, .. }) => {
                        assert!(retry_at > now, "retry_at must move time forward");
                        now = retry_at;
                    }
                    Err(IdError::ClockMovedBackwards { last, .. }) => {
                        assert!(last > now);
                        now = last;
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
        })
        .collect()
}

fn check(per_thread: &[Vec<Id>], layout: &Layout) {
    let mut all = Vec::new();
    for ids in per_thread {
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "per-thread order: {ids:?}"
        );
        for id in ids {
            assert!(layout.check(*id).is_ok());
            assert_eq!(layout.decompose(*id).worker, WorkerId::new(1));
        }
        all.extend_from_slice(ids);
    }
    let total = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), total, "duplicate id in {per_thread:?}");
}

fn run(policy: ClockPolicy, clocks: &'static [&'static [u64]]) {
    loom::model(move || {
        let layout = tiny_layout();
        let ids = Arc::new(AtomicGenerator::new(layout, WorkerId::new(1), policy).unwrap());
        let workers: Vec<_> = clocks
            .iter()
            .map(|clock| {
                let ids = Arc::clone(&ids);
                thread::spawn(move || mint(&ids, clock))
            })
            .collect();
        let minted: Vec<Vec<Id>> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        check(&minted, &layout);
    });
}

#[test]
fn two_threads_roll_over_the_sequence() {
    // Four IDs in a tick that holds two: the sequence rolls over into tick 1.
    run(ClockPolicy::WaitUntil, &[&[0, 0], &[0, 0]]);
}

#[test]
fn three_threads_in_one_tick() {
    run(ClockPolicy::WaitUntil, &[&[0], &[0], &[0]]);
}

#[test]
fn three_threads_roll_over_with_one_behind() {
    // Six IDs over ticks that hold two; the third thread's clock lags by 1 ms.
    run(
        ClockPolicy::Tolerate(Duration::from_millis(1)),
        &[&[1, 1], &[1, 2], &[0, 1]],
    );
}

#[test]
fn clock_step_back_waited_out() {
    // Thread one's clock steps back from 5 to 3 after thread two minted at 5.
    run(ClockPolicy::WaitUntil, &[&[5, 3], &[5, 4]]);
}

#[test]
fn clock_step_back_tolerated() {
    run(
        ClockPolicy::Tolerate(Duration::from_millis(3)),
        &[&[5, 3], &[4, 5]],
    );
}

#[test]
fn batches_from_two_threads_never_overlap() {
    // Two threads take batches of up to 3 from ticks that hold two, so every
    // batch is cut at a tick end and the second thread's must roll over.
    loom::model(|| {
        let layout = tiny_layout();
        let ids = Arc::new(
            AtomicGenerator::new(layout, WorkerId::new(1), ClockPolicy::WaitUntil).unwrap(),
        );
        let batch = |ids: &AtomicGenerator| {
            let mut now = at(0);
            let mut out = [Id::from_u64(0); 3];
            loop {
                match ids.next_batch(now, &mut out) {
                    Ok(n) => {
                        assert!((1..=2).contains(&n));
                        return out[..n].to_vec();
                    }
                    Err(IdError::WouldBlock { retry_at, .. }) => now = retry_at,
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
        };
        let other = Arc::clone(&ids);
        let second = thread::spawn(move || batch(&other));
        let first = batch(&ids);
        let second = second.join().unwrap();
        for minted in [&first, &second] {
            let ticks: Vec<u64> = minted
                .iter()
                .map(|id| layout.decompose(*id).ticks)
                .collect();
            assert!(ticks.windows(2).all(|w| w[0] == w[1]), "one tick per batch");
        }
        check(&[first, second], &layout);
    });
}

#[test]
fn clock_step_back_rejected_never_duplicates() {
    loom::model(|| {
        let layout = tiny_layout();
        let ids =
            Arc::new(AtomicGenerator::new(layout, WorkerId::new(1), ClockPolicy::Reject).unwrap());
        let other = Arc::clone(&ids);
        let behind = thread::spawn(move || [other.next(at(3)), other.next(at(2))]);
        let ahead = [ids.next(at(4)), ids.next(at(4))];
        let behind = behind.join().unwrap();
        let mut minted: Vec<Id> = ahead.iter().chain(&behind).filter_map(|r| r.ok()).collect();
        for result in ahead.iter().chain(&behind) {
            assert!(matches!(
                result,
                Ok(_) | Err(IdError::ClockMovedBackwards { .. } | IdError::WouldBlock { .. })
            ));
        }
        let total = minted.len();
        minted.sort_unstable();
        minted.dedup();
        assert_eq!(minted.len(), total);
        // The second call at 2 always follows one at 3 or later: always rejected.
        assert!(behind[1].is_err());
    });
}
