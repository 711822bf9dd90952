//! Property tests: the lattice laws of vector clocks, agreement with a plain
//! map-based model, clock monotonicity, DVV sibling semantics, and decoding
//! of arbitrary bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use quorate_clocks::{
    AtomicHlc, AtomicLamportClock, Causality, Dot, DottedVersionVector, DvvSet, Hlc, HlcError,
    HlcTimestamp, LamportClock, LamportTimestamp, MaxDrift, VectorClock,
};

/// Clocks over few actors and small counters, so that equal, ordered and
/// concurrent pairs all come up often.
fn clock() -> impl Strategy<Value = VectorClock<u8>> {
    prop::collection::vec((0u8..6, 0u64..4), 0..8).prop_map(|entries| entries.into_iter().collect())
}

/// The model: a map where a missing actor means 0.
fn model(clock: &VectorClock<u8>) -> BTreeMap<u8, u64> {
    clock.iter().map(|(a, c)| (*a, c)).collect()
}

fn model_compare(a: &BTreeMap<u8, u64>, b: &BTreeMap<u8, u64>) -> Causality {
    let actors: Vec<u8> = a.keys().chain(b.keys()).copied().collect();
    let get = |m: &BTreeMap<u8, u64>, k: &u8| m.get(k).copied().unwrap_or(0);
    let ahead = actors.iter().any(|k| get(a, k) > get(b, k));
    let behind = actors.iter().any(|k| get(a, k) < get(b, k));
    match (ahead, behind) {
        (false, false) => Causality::Equal,
        (true, false) => Causality::After,
        (false, true) => Causality::Before,
        (true, true) => Causality::Concurrent,
    }
}

/// Two long clocks that mostly share actors, as gossip produces: `b` is `a`
/// with some counters raised or lowered, some actors dropped and some added,
/// so blocks of equal actors, early and late differences, and mismatched
/// actor sets all come up. Counters sometimes sit at or above 2^63, which the
/// branch-free blocks must hand to their plain fallback.
fn related_pair() -> impl Strategy<Value = (VectorClock<u32>, VectorClock<u32>)> {
    let counter = prop_oneof![
        8 => 1u64..6,
        1 => (1u64 << 63) - 2..(1u64 << 63) + 2,
        1 => u64::MAX - 2..=u64::MAX,
    ];
    let edit = prop_oneof![
        6 => Just(0u8), // keep
        2 => Just(1),   // raise in b
        2 => Just(2),   // lower in b
        1 => Just(3),   // drop from b
        1 => Just(4),   // add an actor to b just after this one
        1 => Just(5),   // an unrelated counter in b
    ];
    prop::collection::vec((counter.clone(), counter, edit), 0..70).prop_map(|entries| {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for (index, (c, unrelated, edit)) in entries.into_iter().enumerate() {
            let actor = 2 * index as u32;
            a.push((actor, c));
            match edit {
                1 => b.push((actor, c.saturating_add(1))),
                2 => b.push((actor, c - 1)),
                3 => {}
                4 => {
                    b.push((actor, c));
                    b.push((actor + 1, 1));
                }
                5 => b.push((actor, unrelated)),
                _ => b.push((actor, c)),
            }
        }
        (a.into_iter().collect(), b.into_iter().collect())
    })
}

/// The map model of any clock.
fn model_of<A: Ord + Clone>(clock: &VectorClock<A>) -> BTreeMap<A, u64> {
    clock.iter().map(|(a, c)| (a.clone(), c)).collect()
}

/// The naive relation: every actor of either clock, entry by entry.
fn naive_compare<A: Ord>(a: &BTreeMap<A, u64>, b: &BTreeMap<A, u64>) -> Causality {
    let get = |m: &BTreeMap<A, u64>, k: &A| m.get(k).copied().unwrap_or(0);
    let keys = || a.keys().chain(b.keys());
    let ahead = keys().any(|k| get(a, k) > get(b, k));
    let behind = keys().any(|k| get(a, k) < get(b, k));
    match (ahead, behind) {
        (false, false) => Causality::Equal,
        (true, false) => Causality::After,
        (false, true) => Causality::Before,
        (true, true) => Causality::Concurrent,
    }
}

proptest! {
    #[test]
    fn block_fast_paths_agree_with_the_naive_reference((a, b) in related_pair()) {
        let (ma, mb) = (model_of(&a), model_of(&b));
        let expected = naive_compare(&ma, &mb);
        prop_assert_eq!(a.compare(&b), expected);
        prop_assert_eq!(b.compare(&a), expected.reverse());
        prop_assert_eq!(a.partial_cmp(&b), expected.to_ordering());
        prop_assert_eq!(a.descends(&b), matches!(expected, Causality::After | Causality::Equal));
        prop_assert_eq!(b.descends(&a), matches!(expected, Causality::Before | Causality::Equal));
        let mut join = ma.clone();
        for (actor, counter) in &mb {
            let entry = join.entry(*actor).or_insert(0);
            *entry = (*entry).max(*counter);
        }
        let mut merged = a.clone();
        merged.merge(&b);
        prop_assert_eq!(model_of(&merged), join.clone());
        let mut merged = b.clone();
        merged.merge(&a);
        prop_assert_eq!(model_of(&merged), join);
        let mut meet = a.clone();
        meet.meet(&b);
        let expected_meet: BTreeMap<u32, u64> = ma
            .iter()
            .filter_map(|(k, c)| mb.get(k).map(|d| (*k, (*c).min(*d))))
            .collect();
        prop_assert_eq!(model_of(&meet), expected_meet);
    }
}

proptest! {
    #[test]
    fn merge_is_commutative_associative_idempotent(a in clock(), b in clock(), c in clock()) {
        prop_assert_eq!(a.merged(&b), b.merged(&a));
        prop_assert_eq!(a.merged(&b).merged(&c), a.merged(&b.merged(&c)));
        prop_assert_eq!(a.merged(&a), a.clone());
    }

    #[test]
    fn merge_is_the_least_upper_bound(a in clock(), b in clock(), c in clock()) {
        let join = a.merged(&b);
        prop_assert!(join.descends(&a) && join.descends(&b));
        if c.descends(&a) && c.descends(&b) {
            prop_assert!(c.descends(&join));
        }
        let mut meet = a.clone();
        meet.meet(&b);
        prop_assert!(a.descends(&meet) && b.descends(&meet));
    }

    #[test]
    fn compare_matches_the_model(a in clock(), b in clock()) {
        let expected = model_compare(&model(&a), &model(&b));
        prop_assert_eq!(a.compare(&b), expected);
        prop_assert_eq!(a.descends(&b), matches!(expected, Causality::After | Causality::Equal));
        prop_assert_eq!(a.dominates(&b), expected == Causality::After);
        prop_assert_eq!(a.concurrent(&b), expected == Causality::Concurrent);
        prop_assert_eq!(a.partial_cmp(&b), expected.to_ordering());
        prop_assert_eq!(expected == Causality::Equal, a == b);
    }

    #[test]
    fn compare_is_antisymmetric_and_consistent_with_merge(a in clock(), b in clock()) {
        prop_assert_eq!(a.compare(&b), b.compare(&a).reverse());
        // a descends b exactly when merging b into a changes nothing.
        prop_assert_eq!(a.descends(&b), a.merged(&b) == a);
    }

    #[test]
    fn merge_matches_the_model(a in clock(), b in clock()) {
        let mut expected = model(&a);
        for (actor, counter) in model(&b) {
            let entry = expected.entry(actor).or_insert(0);
            *entry = (*entry).max(counter);
        }
        prop_assert_eq!(model(&a.merged(&b)), expected);
    }

    #[test]
    fn same_actor_fast_path_agrees_with_sparse_path(
        counters in prop::collection::vec((1u64..4, 1u64..4), 1..40),
    ) {
        // Dense clocks over the same actors take the memcmp fast path; the
        // same clocks plus a shared zero-free extra actor at the end do not.
        let a: VectorClock<u32> = counters.iter().enumerate().map(|(i, (x, _))| (i as u32, *x)).collect();
        let b: VectorClock<u32> = counters.iter().enumerate().map(|(i, (_, y))| (i as u32, *y)).collect();
        let mut a2 = a.clone();
        a2.observe(1000, 1);
        let mut b2 = b.clone();
        b2.observe(2000, 1);
        b2.observe(1000, 1);
        a2.observe(2000, 1);
        prop_assert_eq!(a.compare(&b), a2.compare(&b2));
        let mut fast = a.clone();
        fast.merge(&b);
        let mut slow = a.clone();
        slow.observe(5000, 1);
        slow.merge(&b);
        slow.remove(&5000);
        prop_assert_eq!(fast, slow);
    }

    #[test]
    fn retain_meet_and_iteration_match_the_model(a in clock(), b in clock(), cut in 0u8..6) {
        let mut pruned = a.clone();
        pruned.retain(|actor, _| *actor != cut);
        let mut expected = model(&a);
        expected.remove(&cut);
        prop_assert_eq!(model(&pruned), expected);
        let mut meet = a.clone();
        meet.meet(&b);
        let (ma, mb) = (model(&a), model(&b));
        let expected: BTreeMap<u8, u64> = ma
            .iter()
            .filter_map(|(k, x)| mb.get(k).map(|y| (*k, (*x).min(*y))))
            .collect();
        prop_assert_eq!(model(&meet), expected);
        // Borrowing, owning and reversed iteration agree; entries ascend.
        let borrowed: Vec<(u8, u64)> = a.iter().map(|(k, c)| (*k, c)).collect();
        let owned: Vec<(u8, u64)> = a.clone().into_iter().collect();
        let mut reversed: Vec<(u8, u64)> = a.iter().rev().map(|(k, c)| (*k, c)).collect();
        reversed.reverse();
        prop_assert_eq!(&borrowed, &owned);
        prop_assert_eq!(&borrowed, &reversed);
        prop_assert!(borrowed.windows(2).all(|w| w[0].0 < w[1].0) && borrowed.iter().all(|e| e.1 > 0));
        prop_assert_eq!(a.iter().len(), a.len());
    }

    #[test]
    fn vector_clock_bytes_round_trip(a in clock()) {
        prop_assert_eq!(VectorClock::from_bytes(&a.to_bytes()), Ok(a));
    }

    #[test]
    fn lamport_stamps_increase_and_receive_passes_remote(
        steps in prop::collection::vec((any::<bool>(), 0u64..1000), 1..50),
    ) {
        let mut clock = LamportClock::new(1u8);
        let mut last = clock.stamp();
        for (is_receive, remote) in steps {
            let stamp = if is_receive {
                let remote = LamportTimestamp::new(remote, 2u8);
                let stamp = clock.receive(&remote).unwrap();
                prop_assert!(stamp.time > remote.time);
                stamp
            } else {
                clock.tick()
            };
            prop_assert!(stamp > last);
            last = stamp;
        }
    }

    #[test]
    fn hlc_stamps_strictly_increase_and_update_passes_remote(
        steps in prop::collection::vec((any::<bool>(), 0u64..2000, 0u64..2000, any::<u16>()), 1..80),
    ) {
        let mut clock = Hlc::with_max_drift(MaxDrift::millis(300));
        // The lock-free clock must give the same answers, step for step.
        let shared = AtomicHlc::with_max_drift(MaxDrift::millis(300));
        let mut last = clock.last();
        for (is_update, physical, remote_ms, remote_logical) in steps {
            let before = clock.clone();
            let result = if is_update {
                let remote = HlcTimestamp::new(remote_ms, remote_logical).unwrap();
                let result = clock.update(remote, physical);
                prop_assert_eq!(shared.update(remote, physical), result);
                match result {
                    Ok(stamp) => prop_assert!(stamp > remote),
                    Err(HlcError::DriftExceeded { .. }) => {
                        prop_assert!(remote_ms > physical + 300);
                        prop_assert_eq!(&clock, &before);
                        continue;
                    }
                    Err(other) => prop_assert!(false, "unexpected {other:?}"),
                }
                result
            } else {
                let result = clock.now(physical);
                prop_assert_eq!(shared.now(physical), result);
                result
            };
            let stamp = result.unwrap();
            prop_assert!(stamp > last, "{stamp} after {last}");
            prop_assert!(stamp.physical_ms() >= physical);
            last = stamp;
        }
    }

    #[test]
    fn decoding_random_bytes_never_panics(
        header in prop_oneof![Just(None), (0x10u8..=0x18).prop_map(Some)],
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        // Half the inputs start with a valid header so that the body decoders
        // are reached, not just the header check.
        let bytes: Vec<u8> = header.into_iter().chain(body).collect();
        // Whatever decodes must re-encode to exactly the same bytes (the
        // encoding is canonical); everything else is a typed error.
        if let Ok(v) = VectorClock::<u64>::from_bytes(&bytes) { prop_assert_eq!(v.to_bytes(), bytes.clone()); }
        if let Ok(v) = VectorClock::<String>::from_bytes(&bytes) { prop_assert_eq!(v.to_bytes(), bytes.clone()); }
        if let Ok(v) = LamportClock::<u32>::from_bytes(&bytes) { prop_assert_eq!(v.to_bytes(), bytes.clone()); }
        if let Ok(v) = LamportTimestamp::<u64>::from_bytes(&bytes) { prop_assert_eq!(v.to_bytes(), bytes.clone()); }
        if let Ok(v) = Dot::<u16>::from_bytes(&bytes) { prop_assert_eq!(v.to_bytes(), bytes.clone()); }
        if let Ok(v) = DottedVersionVector::<u64>::from_bytes(&bytes) { prop_assert_eq!(v.to_bytes(), bytes.clone()); }
        if let Ok(v) = DvvSet::<u64, Vec<u8>>::from_bytes(&bytes) { prop_assert_eq!(v.to_bytes(), bytes.clone()); }
        if let Ok(v) = HlcTimestamp::from_bytes(&bytes) { prop_assert_eq!(v.to_bytes(), bytes.clone()); }
        if let Ok(v) = Hlc::from_bytes(&bytes) { prop_assert_eq!(v.to_bytes(), bytes.clone()); }
        if let Ok(v) = AtomicLamportClock::<u64>::from_bytes(&bytes) { prop_assert_eq!(v.to_bytes(), bytes.clone()); }
    }

    #[test]
    fn decoding_mutated_encodings_never_panics(a in clock(), flip in any::<(usize, u8)>()) {
        // Random bytes rarely get past the header; mutate real encodings too.
        let mut bytes = a.to_bytes();
        let at = flip.0 % bytes.len();
        bytes[at] ^= flip.1;
        if let Ok(v) = VectorClock::<u8>::from_bytes(&bytes) { prop_assert_eq!(v.to_bytes(), bytes.clone()); }
        bytes.truncate(at);
        prop_assert!(VectorClock::<u8>::from_bytes(&bytes).is_err());
    }
}

/// One step of a Dynamo-style history over three replicas of one key.
#[derive(Debug, Clone)]
enum KeyOp {
    /// A client reads replica `read` (possibly long ago: `stale` drops the
    /// read context), then writes through replica `write`.
    Write {
        read: usize,
        write: usize,
        stale: bool,
    },
    /// Anti-entropy from replica `from` into replica `to`.
    Sync { from: usize, to: usize },
}

fn key_op() -> impl Strategy<Value = KeyOp> {
    prop_oneof![
        (0usize..3, 0usize..3, any::<bool>()).prop_map(|(read, write, stale)| KeyOp::Write {
            read,
            write,
            stale
        }),
        (0usize..3, 0usize..3).prop_map(|(from, to)| KeyOp::Sync { from, to }),
    ]
}

proptest! {
    #[test]
    fn dvv_set_keeps_exactly_the_concurrent_writes(ops in prop::collection::vec(key_op(), 1..40)) {
        let mut replicas: Vec<DvvSet<u8, u32>> = vec![DvvSet::new(); 3];
        let mut writes: Vec<(DottedVersionVector<u8>, u32)> = Vec::new();
        for op in ops {
            match op {
                KeyOp::Write { read, write, stale } => {
                    let context = if stale { VectorClock::new() } else { replicas[read].join().clone() };
                    let value = writes.len() as u32;
                    let version = replicas[write].event(&context, write as u8, value);
                    writes.push((version, value));
                }
                KeyOp::Sync { from, to } => {
                    let source = replicas[from].clone();
                    let before = replicas[to].clone();
                    replicas[to].sync(&source);
                    // descends is exactly "sync would change nothing".
                    prop_assert_eq!(before.descends(&source), replicas[to] == before);
                    prop_assert!(replicas[to].descends(&source) && replicas[to].descends(&before));
                }
            }
            for replica in &replicas {
                let dots: Vec<_> = replica.siblings().map(|(d, _)| *d).collect();
                let versions: Vec<_> = writes.iter().filter(|(v, _)| dots.contains(v.dot())).collect();
                for (x, _) in &versions {
                    for (y, _) in &versions {
                        if x.dot() != y.dot() {
                            prop_assert_eq!(x.compare(y), Causality::Concurrent);
                        }
                    }
                }
            }
        }
        // After full anti-entropy every replica agrees, and the survivors are
        // exactly the writes no other write has seen.
        let mut all = DvvSet::new();
        for replica in &replicas { all.sync(replica); }
        let mut other_order = DvvSet::new();
        for replica in replicas.iter().rev() { other_order.sync(replica); }
        prop_assert_eq!(&all, &other_order);
        let mut twice = all.clone();
        twice.sync(&all);
        prop_assert_eq!(&twice, &all);
        let expected: Vec<u32> = writes
            .iter()
            .filter(|(x, _)| writes.iter().all(|(y, _)| x.compare(y) != Causality::Before))
            .map(|(_, value)| *value)
            .collect();
        let mut survivors: Vec<u32> = all.values().copied().collect();
        survivors.sort_unstable();
        prop_assert_eq!(survivors, expected);
        prop_assert_eq!(DvvSet::from_bytes(&all.to_bytes()), Ok(all));
    }
}

#[cfg(feature = "serde")]
mod serde_round_trips {
    use super::*;
    use quorate_clocks::offset::{DriftRate, Estimate, OffsetEstimator, Sample};

    proptest! {
        #[test]
        fn json_round_trips(a in clock(), physical in 0u64..1 << 40) {
            let json = serde_json::to_string(&a).unwrap();
            prop_assert_eq!(serde_json::from_str::<VectorClock<u8>>(&json).unwrap(), a.clone());
            let mut key = DvvSet::new();
            key.event(&a, 1u8, String::from("v"));
            let json = serde_json::to_string(&key).unwrap();
            prop_assert_eq!(serde_json::from_str::<DvvSet<u8, String>>(&json).unwrap(), key);
            let mut hlc = Hlc::default();
            hlc.now(physical).unwrap();
            let json = serde_json::to_string(&hlc).unwrap();
            prop_assert_eq!(serde_json::from_str::<Hlc>(&json).unwrap(), hlc);
            let clock = LamportClock::with_time(3u8, physical).unwrap();
            let json = serde_json::to_string(&clock).unwrap();
            prop_assert_eq!(serde_json::from_str::<LamportClock<u8>>(&json).unwrap(), clock.clone());
            // The shared clock serializes exactly as its snapshot.
            let shared = AtomicLamportClock::from(clock.clone());
            prop_assert_eq!(serde_json::to_string(&shared).unwrap(), json.clone());
            let back: AtomicLamportClock<u8> = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back.snapshot(), clock);
        }

        #[test]
        fn offset_json_round_trips(
            exchanges in prop::collection::vec((0u64..1 << 40, 0u64..1 << 20, 0u64..1 << 20), 0..12),
            window in 1usize..10,
            now in 0u64..1 << 41,
        ) {
            let mut filter = OffsetEstimator::new().with_window(window).unwrap();
            for (t1, offset, delay) in exchanges {
                let sample = Sample::new(t1, t1 + offset, t1 + offset, t1 + delay).unwrap_or_else(|_| {
                    Sample::new(t1, t1 + offset, t1 + offset, t1 + offset).unwrap()
                });
                let json = serde_json::to_string(&sample).unwrap();
                prop_assert_eq!(serde_json::from_str::<Sample>(&json).unwrap(), sample);
                filter.add(sample);
            }
            let json = serde_json::to_string(&filter).unwrap();
            prop_assert_eq!(serde_json::from_str::<OffsetEstimator>(&json).unwrap(), filter.clone());
            if let Some(estimate) = filter.estimate(now) {
                let json = serde_json::to_string(&estimate).unwrap();
                prop_assert_eq!(serde_json::from_str::<Estimate>(&json).unwrap(), estimate);
            }
            let json = serde_json::to_string(&DriftRate::ppm(42)).unwrap();
            prop_assert_eq!(json.as_str(), "42");
        }
    }

    #[test]
    fn serde_refuses_broken_invariants() {
        assert!(serde_json::from_str::<VectorClock<u8>>("[[1,2],[1,3]]").is_err());
        assert!(serde_json::from_str::<VectorClock<u8>>("[[1,9223372036854775808]]").is_err());
        let unsorted: VectorClock<u8> = serde_json::from_str("[[2,1],[1,0],[0,4]]").unwrap();
        assert_eq!(unsorted.actors().copied().collect::<Vec<_>>(), [0, 2]);
        assert!(
            serde_json::from_str::<LamportClock<u8>>(r#"{"node":1,"time":18446744073709551615}"#)
                .is_err()
        );
        let outside = r#"{"context":[[1,1]],"siblings":[[{"actor":1,"counter":2},"x"]]}"#;
        assert!(serde_json::from_str::<DvvSet<u8, String>>(outside).is_err());
        // Impossible exchanges, empty brackets, windows out of range or overfull.
        assert!(serde_json::from_str::<Sample>("[10,0,0,9]").is_err());
        assert!(serde_json::from_str::<Sample>("[0,100,111,10]").is_err());
        assert!(serde_json::from_str::<Sample>("[0,0,0]").is_err());
        assert!(serde_json::from_str::<Sample>("[0,5,5,10]").is_ok());
        let estimate = |low: i64, high: i64| {
            format!(r#"{{"low_ns":{low},"high_ns":{high},"delay_ns":0,"age_ns":0}}"#)
        };
        assert!(serde_json::from_str::<Estimate>(&estimate(3, 2)).is_err());
        assert!(serde_json::from_str::<Estimate>(&estimate(2, 2)).is_ok());
        let filter = |window: usize, samples: &str| {
            format!(r#"{{"window":{window},"max_age_ns":1,"drift_ppm":5,"samples":[{samples}]}}"#)
        };
        assert!(serde_json::from_str::<OffsetEstimator>(&filter(0, "")).is_err());
        assert!(serde_json::from_str::<OffsetEstimator>(&filter(1025, "")).is_err());
        let two = "[0,5,5,10],[20,25,25,30]";
        assert!(serde_json::from_str::<OffsetEstimator>(&filter(1, two)).is_err());
        assert!(serde_json::from_str::<OffsetEstimator>(&filter(1, "[10,0,0,9]")).is_err());
        // Out-of-order samples are sorted on the way in.
        let back: OffsetEstimator =
            serde_json::from_str(&filter(2, "[20,25,25,30],[0,5,5,10]")).unwrap();
        assert_eq!(back.samples()[0].timestamps(), [0, 5, 5, 10]);
        assert_eq!(back.drift_rate(), DriftRate::ppm(5));
    }
}
