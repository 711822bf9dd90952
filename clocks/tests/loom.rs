//! loom models of `AtomicLamportClock` and `AtomicHlc`: every interleaving of a few threads.
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release -p quorate-clocks --test loom`.
#![cfg(loom)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use loom::sync::Arc;
use loom::thread;
use quorate_clocks::{AtomicLamportClock, LamportTimestamp};

#[test]
fn no_two_sends_return_the_same_stamp() {
    loom::model(|| {
        let clock = Arc::new(AtomicLamportClock::new(1u8));
        let other = Arc::clone(&clock);
        let sender = thread::spawn(move || [other.send(), other.send()]);
        let receive = clock.receive(&LamportTimestamp::new(1, 2)).unwrap();
        let send = clock.send();
        let theirs = sender.join().unwrap();

        let mut times: Vec<u64> = [receive, send, theirs[0], theirs[1]]
            .iter()
            .map(|stamp| stamp.time)
            .collect();
        times.sort_unstable();
        times.dedup();
        assert_eq!(times.len(), 4, "two events got the same stamp");
        // Program order is stamp order.
        assert!(receive < send && theirs[0] < theirs[1]);
        assert!(receive.time > 1);
        // The clock ends at the largest stamp it issued.
        assert_eq!(clock.time(), times[3]);
    });
}

#[test]
fn receive_never_moves_time_backwards() {
    loom::model(|| {
        let clock = Arc::new(AtomicLamportClock::new(1u8));
        let observer = {
            let clock = Arc::clone(&clock);
            thread::spawn(move || {
                let seen = [clock.time(), clock.time(), clock.time()];
                assert!(
                    seen[0] <= seen[1] && seen[1] <= seen[2],
                    "time went back: {seen:?}"
                );
            })
        };
        let receiver = {
            let clock = Arc::clone(&clock);
            thread::spawn(move || {
                let high = clock.receive(&LamportTimestamp::new(5, 2)).unwrap();
                // A stale remote stamp must not pull the clock back below `high`.
                let low = clock.receive(&LamportTimestamp::new(1, 3)).unwrap();
                assert!(high.time > 5 && low > high);
                low
            })
        };
        let before = clock.send();
        let after = clock.time();
        assert!(after >= before.time);
        observer.join().unwrap();
        let low = receiver.join().unwrap();
        assert!(clock.time() >= low.time.max(before.time));
    });
}

#[test]
fn atomic_hlc_stamps_are_unique_and_follow_remote() {
    use quorate_clocks::{AtomicHlc, HlcTimestamp, MaxDrift};
    loom::model(|| {
        let clock = Arc::new(AtomicHlc::with_max_drift(MaxDrift::millis(100)));
        let other = Arc::clone(&clock);
        // Both threads read the same physical millisecond: only the logical
        // counter can keep their stamps apart.
        let local = thread::spawn(move || [other.now(7).unwrap(), other.now(7).unwrap()]);
        let remote = HlcTimestamp::new(7, 40).unwrap();
        let received = clock.update(remote, 7).unwrap();
        let after = clock.now(7).unwrap();
        let theirs = local.join().unwrap();

        assert!(received > remote, "update must pass the remote stamp");
        assert!(received < after && theirs[0] < theirs[1]);
        let mut all = vec![received, after, theirs[0], theirs[1]];
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4, "two events got the same HLC stamp");
        assert_eq!(clock.last(), all[3]);
    });
}
