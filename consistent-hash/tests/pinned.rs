//! Pinned placements: a change to hashing or placement rules breaks these.
//!
//! Every expected value was computed outside this crate: XXH3 by the C
//! reference library (python-xxhash 4.1, `xxh3_64_intdigest(data, seed)`),
//! and ring, jump, Maglev, rendezvous and multi-probe placement by a short
//! independent Python transcription of the rules documented in each module
//! (SplitMix64 there checked against the reference sequence, whose first
//! output for seed 0 is 0xe220a8397b1dcdaf).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use quorate_consistent_hash::{JumpHash, KeyHasher, Maglev, MultiProbe, Rendezvous, Ring, Xxh3};

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

fn keys() -> impl Iterator<Item = String> {
    (0..10).map(|i| format!("key-{i}"))
}

#[test]
fn xxh3_reference_values() {
    assert_eq!(Xxh3.hash(b"node-0", 0), 0x982a_cdf8_04e9_7d99);
    assert_eq!(Xxh3.hash(b"key-1", 0), 0x2d29_f133_6b02_29f9);
    assert_eq!(Xxh3.hash(b"node-0", 1), 0x49c2_b14a_7a3b_59e2);
}

#[test]
fn ring_assignments_are_pinned() {
    let mut ring = Ring::new(4).unwrap();
    for node in NODES {
        ring.add(node).unwrap();
    }
    let owners: Vec<&str> = keys().map(|key| *ring.get(&key).unwrap()).collect();
    let expected = [
        "node-c", "node-c", "node-b", "node-c", "node-c", "node-c", "node-c", "node-c", "node-c",
        "node-b",
    ];
    assert_eq!(owners, expected);
    let replicas: Vec<Vec<&str>> = keys()
        .take(4)
        .map(|key| ring.replicas(&key, 2).into_iter().copied().collect())
        .collect();
    assert_eq!(
        replicas,
        [
            ["node-c", "node-a"],
            ["node-c", "node-b"],
            ["node-b", "node-c"],
            ["node-c", "node-a"]
        ]
    );
}

#[test]
fn ring_ignores_insertion_order() {
    let mut forward = Ring::new(50).unwrap();
    let mut backward = Ring::new(50).unwrap();
    for node in NODES {
        forward.add(node).unwrap();
    }
    for node in NODES.iter().rev() {
        backward.add(*node).unwrap();
    }
    for key in 0u32..2000 {
        assert_eq!(forward.get(&key), backward.get(&key));
    }
}

#[test]
fn jump_assignments_are_pinned() {
    let jump = JumpHash::new(7).unwrap();
    let buckets: Vec<u32> = keys().map(|key| jump.bucket(&key).0).collect();
    assert_eq!(buckets, [1, 1, 4, 0, 3, 4, 6, 2, 2, 6]);
}

#[test]
fn maglev_assignments_are_pinned() {
    let maglev = Maglev::with_table_size(NODES, 13, Xxh3).unwrap();
    assert_eq!(maglev.table(), [0, 1, 1, 0, 2, 2, 0, 2, 0, 0, 1, 1, 2]);
    let owners: Vec<&str> = keys().map(|key| *maglev.get(&key).unwrap()).collect();
    let expected = [
        "node-a", "node-b", "node-c", "node-a", "node-a", "node-b", "node-b", "node-b", "node-a",
        "node-c",
    ];
    assert_eq!(owners, expected);
}

#[test]
fn rendezvous_assignments_are_pinned() {
    let mut uniform = Rendezvous::new();
    for node in NODES {
        uniform.add(node).unwrap();
    }
    let owners: Vec<&str> = keys().map(|key| *uniform.get(&key).unwrap()).collect();
    let expected = [
        "node-c", "node-a", "node-c", "node-c", "node-b", "node-c", "node-c", "node-c", "node-a",
        "node-b",
    ];
    assert_eq!(owners, expected);

    let mut weighted = Rendezvous::new();
    for (node, weight) in NODES.into_iter().zip([1.0, 2.0, 4.0]) {
        weighted.add_weighted(node, weight).unwrap();
    }
    let owners: Vec<&str> = keys().map(|key| *weighted.get(&key).unwrap()).collect();
    let expected = [
        "node-c", "node-c", "node-c", "node-c", "node-c", "node-c", "node-c", "node-c", "node-c",
        "node-b",
    ];
    assert_eq!(owners, expected);
}

#[test]
fn multi_probe_assignments_are_pinned() {
    let mut mp = MultiProbe::new(5).unwrap();
    for node in NODES {
        mp.add(node).unwrap();
    }
    let owners: Vec<&str> = keys().map(|key| *mp.get(&key).unwrap()).collect();
    let expected = [
        "node-c", "node-c", "node-c", "node-b", "node-a", "node-b", "node-b", "node-a", "node-c",
        "node-c",
    ];
    assert_eq!(owners, expected);
}

/// Serialized placement structures rebuild to identical placement, and
/// invalid membership is rejected on the way in.
#[cfg(feature = "serde")]
#[test]
fn serde_round_trips_preserve_placement() {
    let mut ring: Ring<String> = Ring::new(16).unwrap();
    ring.add("a".to_string()).unwrap();
    ring.add_weighted("b".to_string(), 3).unwrap();
    let json = serde_json::to_string(&ring).unwrap();
    assert_eq!(json, r#"{"vnodes":16,"nodes":[["a",1],["b",3]]}"#);
    let back: Ring<String> = serde_json::from_str(&json).unwrap();
    let mut rendezvous: Rendezvous<String> = Rendezvous::new();
    rendezvous.add_weighted("a".to_string(), 0.5).unwrap();
    rendezvous.add("b".to_string()).unwrap();
    let rendezvous_back: Rendezvous<String> =
        serde_json::from_str(&serde_json::to_string(&rendezvous).unwrap()).unwrap();
    let maglev = Maglev::with_table_size(NODES.map(String::from), 13, Xxh3).unwrap();
    let maglev_back: Maglev<String> =
        serde_json::from_str(&serde_json::to_string(&maglev).unwrap()).unwrap();
    let mut mp = MultiProbe::new(7).unwrap();
    for node in NODES {
        mp.add(node.to_string()).unwrap();
    }
    let mp_back: MultiProbe<String> =
        serde_json::from_str(&serde_json::to_string(&mp).unwrap()).unwrap();
    for key in keys() {
        assert_eq!(ring.get(&key), back.get(&key));
        assert_eq!(rendezvous.get(&key), rendezvous_back.get(&key));
        assert_eq!(maglev.get(&key), maglev_back.get(&key));
        assert_eq!(mp.get(&key), mp_back.get(&key));
    }
    assert!(serde_json::from_str::<Ring<String>>(r#"{"vnodes":0,"nodes":[]}"#).is_err());
    assert!(
        serde_json::from_str::<Ring<String>>(r#"{"vnodes":4,"nodes":[["a",1],["a",2]]}"#).is_err()
    );
    assert!(serde_json::from_str::<Maglev<String>>(r#"{"table_size":12,"nodes":["a"]}"#).is_err());
    assert!(serde_json::from_str::<Rendezvous<String>>(r#"{"nodes":[["a",-1.0]]}"#).is_err());
}

/// A hasher whose output can be computed by hand: the key's first 8 bytes
/// as a little-endian integer, plus the seed. It shows the hasher is
/// pluggable and pins the ring's rules (point `i` of node `n` is
/// `hash(n, i)`; a key belongs to the first point at or after its hash).
#[derive(Debug, Clone, Copy, Default)]
struct ByHand;

impl KeyHasher for ByHand {
    fn hash(&self, bytes: &[u8], seed: u64) -> u64 {
        let mut word = [0u8; 8];
        for (to, from) in word.iter_mut().zip(bytes) {
            *to = *from;
        }
        u64::from_le_bytes(word).wrapping_add(seed)
    }
}

#[test]
fn ring_rules_by_hand() {
    use quorate_consistent_hash::{KeyRange, Transfer};
    let mut ring = Ring::with_hasher(2, ByHand).unwrap();
    for node in [100u64, 200, 300] {
        ring.add(node).unwrap();
    }
    // Points: 100, 101 | 200, 201 | 300, 301.
    assert_eq!(ring.get(&150u64), Some(&200));
    assert_eq!(ring.get(&200u64), Some(&200));
    assert_eq!(ring.get(&201u64), Some(&200));
    assert_eq!(ring.get(&202u64), Some(&300));
    assert_eq!(ring.get(&302u64), Some(&100), "wraps past the last point");
    assert_eq!(ring.replicas(&150u64, 5), [&200, &300, &100]);
    assert_eq!(
        ring.ranges(&200).unwrap(),
        [KeyRange {
            start: 101,
            end: 201
        }]
    );
    assert_eq!(
        ring.ranges(&100).unwrap(),
        [KeyRange {
            start: 301,
            end: 101
        }]
    );
    // Node 250 brings points 250 and 251: (201, 251] leaves node 300.
    assert_eq!(
        ring.transfers_on_add(250, 1).unwrap(),
        [Transfer {
            range: KeyRange {
                start: 201,
                end: 251
            },
            from: 300,
            to: 250
        }]
    );
    assert_eq!(
        ring.transfers_on_remove(&100).unwrap(),
        [Transfer {
            range: KeyRange {
                start: 301,
                end: 101
            },
            from: 100,
            to: 200
        }]
    );
    // Weight 2 gives node 300 points 302 and 303 as well.
    ring.set_weight(&300, 2).unwrap();
    assert_eq!(ring.get(&303u64), Some(&300));
    assert_eq!(ring.get(&304u64), Some(&100));
}
