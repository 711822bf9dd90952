//! Properties of the virtual-node ring: balance, weights, movement, replicas, ranges.
//!
//! Balance and weight checks use the numbers (1,000 vnodes x 100
//! nodes, 1M keys). Each is also checked without sampling noise through the
//! exact arc lengths a node owns ([`Ring::ranges`]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use quorate_consistent_hash::{Error, KeyRange, Ring};

fn ring_of(names: &[String], vnodes: u32) -> Ring<String> {
    let mut ring = Ring::new(vnodes).unwrap();
    for name in names {
        ring.add(name.clone()).unwrap();
    }
    ring
}

fn names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("node-{i}")).collect()
}

fn share(ring: &Ring<String>, node: &String) -> f64 {
    ring.ranges(node)
        .unwrap()
        .iter()
        .map(KeyRange::fraction)
        .sum()
}

#[test]
fn balance_with_1000_vnodes_and_100_nodes_on_1m_keys() {
    let nodes = names(100);
    let ring = ring_of(&nodes, 1000);
    let mut loads: BTreeMap<&String, u64> = BTreeMap::new();
    for key in 0u64..1_000_000 {
        *loads.entry(ring.get(&key).unwrap()).or_default() += 1;
    }
    let max = *loads.values().max().unwrap() as f64;
    let ratio = max / 10_000.0;
    assert!(ratio <= 1.10, "max/mean {ratio}");
    let exact = nodes
        .iter()
        .map(|node| share(&ring, node))
        .fold(0.0, f64::max)
        * 100.0;
    assert!(exact <= 1.10, "exact max/mean {exact}");
}

#[test]
fn shares_sum_to_the_whole_circle() {
    let nodes = names(20);
    let ring = ring_of(&nodes, 50);
    let total: f64 = nodes.iter().map(|node| share(&ring, node)).sum();
    assert!((total - 1.0).abs() < 1e-9, "{total}");
}

#[test]
fn weights_are_respected_within_5_percent() {
    // 10,000 points per unit of weight keeps the ring's own spread (1/sqrt(points), 1%)
    // well under the 5% tolerance; 1M keys add ~0.3% sampling noise.
    let mut ring = Ring::new(10_000).unwrap();
    let weights = [1u32, 2, 3, 4];
    for (i, weight) in weights.iter().enumerate() {
        ring.add_weighted(format!("node-{i}"), *weight).unwrap();
    }
    let mut loads = [0u64; 4];
    for key in 0u64..1_000_000 {
        let node = ring.get(&key).unwrap();
        let index: usize = node.trim_start_matches("node-").parse().unwrap();
        loads[index] += 1;
    }
    for (i, weight) in weights.iter().enumerate() {
        let expected = f64::from(*weight) / 10.0;
        let sampled = loads[i] as f64 / 1_000_000.0;
        assert!(
            (sampled / expected - 1.0).abs() <= 0.05,
            "node {i}: {sampled} vs {expected}"
        );
        let exact = share(&ring, &format!("node-{i}"));
        assert!(
            (exact / expected - 1.0).abs() <= 0.05,
            "node {i}: exact {exact} vs {expected}"
        );
    }
}

#[test]
fn rejects_bad_membership_changes() {
    let mut ring = Ring::new(10).unwrap();
    assert_eq!(Ring::<&str>::new(0).err(), Some(Error::ZeroVnodes));
    assert_eq!(ring.add_weighted("a", 0), Err(Error::ZeroWeight));
    ring.add("a").unwrap();
    assert_eq!(ring.add("a"), Err(Error::DuplicateNode));
    assert_eq!(ring.remove(&"b"), Err(Error::UnknownNode));
    assert_eq!(ring.ranges(&"b"), Err(Error::UnknownNode));
    assert_eq!(
        ring.add_weighted("b", u32::MAX),
        Err(Error::TooManyPoints {
            vnodes: 10,
            weight: u32::MAX
        })
    );
    assert_eq!(ring.set_weight(&"b", 2), Err(Error::UnknownNode));
    assert_eq!(ring.set_weight(&"a", 0), Err(Error::ZeroWeight));
    assert_eq!((ring.len(), ring.point_count()), (1, 10));
    assert_eq!(
        ring.ranges(&"a")
            .unwrap()
            .iter()
            .map(KeyRange::len)
            .sum::<u128>(),
        1 << 64
    );
}

#[test]
fn empty_ring_places_nothing() {
    let ring = Ring::<&str>::new(10).unwrap();
    assert_eq!(ring.get("k"), None);
    assert!(ring.replicas("k", 3).is_empty());
}

fn node_names() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::btree_set("[a-z]{1,8}", 2..24).prop_map(|set| set.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Adding one node to n moves about 1/(n+1) of the keys, all of them to the new node,
    /// and exactly the keys inside the announced transfer ranges.
    #[test]
    fn joining_moves_about_one_over_n_plus_one_only_to_the_new_node(nodes in node_names(), newcomer in "[A-Z]{1,8}") {
        let before = ring_of(&nodes, 1000);
        let transfers = before.transfers_on_add(newcomer.clone(), 1).unwrap();
        let mut after = before.clone();
        after.add(newcomer.clone()).unwrap();
        let expected = 1.0 / (nodes.len() as f64 + 1.0);

        let moved_exact: f64 = transfers.iter().map(|t| t.range.fraction()).sum();
        prop_assert!((moved_exact / expected - 1.0).abs() <= 0.20, "exact {moved_exact} vs {expected}");
        prop_assert!(transfers.iter().all(|t| t.to == newcomer));

        let keys = 20_000u64;
        let mut moved = 0u64;
        for key in 0..keys {
            let hash = before.hash_key(&key);
            let (old, new) = (before.get(&key).unwrap(), after.get(&key).unwrap());
            let announced = transfers.iter().any(|t| t.range.contains(hash));
            prop_assert_eq!(old != new, announced);
            if old != new {
                prop_assert_eq!(new, &newcomer);
                moved += 1;
            }
        }
        let fraction = moved as f64 / keys as f64;
        prop_assert!((fraction / expected - 1.0).abs() <= 0.20, "sampled {fraction} vs {expected}");
    }

    /// Reweighting moves keys only to the reweighted node (up) or only away from it (down).
    #[test]
    fn reweighting_moves_only_the_reweighted_nodes_keys(nodes in node_names(), pick in any::<prop::sample::Index>(), weight in 1u32..5) {
        let before = ring_of(&nodes, 50);
        let node = nodes[pick.index(nodes.len())].clone();
        let mut after = before.clone();
        after.set_weight(&node, weight).unwrap();
        prop_assert_eq!(after.nodes().find(|(n, _)| **n == node).map(|(_, w)| w), Some(weight));
        prop_assert_eq!(after.point_count(), before.point_count() + 50 * (weight as usize - 1));
        for key in 0u64..3000 {
            let (old, new) = (before.get(&key).unwrap(), after.get(&key).unwrap());
            if old != new {
                prop_assert!(new == &node, "growing moves keys only to the node");
            }
        }
        let mut back = after.clone();
        back.set_weight(&node, 1).unwrap();
        for key in 0u64..1000 {
            prop_assert_eq!(before.get(&key), back.get(&key));
        }
    }

    /// Removing a node moves only the keys it owned.
    #[test]
    fn leaving_moves_only_the_leavers_keys(nodes in node_names(), pick in any::<prop::sample::Index>()) {
        let before = ring_of(&nodes, 100);
        let leaver = nodes[pick.index(nodes.len())].clone();
        let transfers = before.transfers_on_remove(&leaver).unwrap();
        prop_assert!(transfers.iter().all(|t| t.from == leaver && t.to != leaver));
        let mut after = before.clone();
        after.remove(&leaver).unwrap();
        for key in 0u64..5000 {
            let (old, new) = (before.get(&key).unwrap(), after.get(&key).unwrap());
            prop_assert_eq!(old != new, old == &leaver);
            prop_assert_eq!(old != new, transfers.iter().any(|t| t.range.contains(before.hash_key(&key))));
        }
        // Adding it back restores every placement.
        let mut again = after.clone();
        again.add(leaver).unwrap();
        for key in 0u64..1000 {
            prop_assert_eq!(before.get(&key), again.get(&key));
        }
    }

    /// Replicas are distinct physical nodes, start at the owner and follow ring order.
    #[test]
    fn replicas_are_distinct_physical_nodes(nodes in node_names(), vnodes in 1u32..40, r in 0usize..30, key in any::<u64>()) {
        let ring = ring_of(&nodes, vnodes);
        let replicas = ring.replicas(&key, r);
        prop_assert_eq!(replicas.len(), r.min(nodes.len()));
        let distinct: BTreeSet<&String> = replicas.iter().copied().collect();
        prop_assert_eq!(distinct.len(), replicas.len());
        if r > 0 {
            prop_assert_eq!(replicas.first().copied(), ring.get(&key));
        }
        // Ring order, rebuilt from the arcs: sort every arc by the clockwise
        // distance from the key to its end and keep first appearances.
        let hash = ring.hash_key(&key);
        let mut arcs: Vec<(u64, &String)> = nodes
            .iter()
            .flat_map(|n| ring.ranges(n).unwrap().into_iter().map(move |r| (r.end.wrapping_sub(hash), n)))
            .collect();
        arcs.sort();
        let mut order: Vec<&String> = Vec::new();
        for (_, node) in arcs {
            if !order.contains(&node) {
                order.push(node);
            }
        }
        prop_assert_eq!(&order[..replicas.len()], &replicas[..]);
    }

    /// Every hash lies in exactly one node's ranges: the node `get` returns.
    #[test]
    fn ranges_partition_the_circle(nodes in node_names(), vnodes in 1u32..20, hashes in proptest::collection::vec(any::<u64>(), 1..200)) {
        let ring = ring_of(&nodes, vnodes);
        let ranges: Vec<(String, Vec<KeyRange>)> = nodes.iter().map(|n| (n.clone(), ring.ranges(n).unwrap())).collect();
        let total: u128 = ranges.iter().flat_map(|(_, r)| r.iter().map(KeyRange::len)).sum();
        prop_assert_eq!(total, 1u128 << 64);
        for hash in hashes {
            let owners: Vec<&String> = ranges.iter().filter(|(_, r)| r.iter().any(|range| range.contains(hash))).map(|(n, _)| n).collect();
            prop_assert_eq!(owners, vec![ring.get_by_hash(hash).unwrap()]);
        }
    }

    /// The transfers between any two rings explain every changed placement.
    #[test]
    fn transfers_explain_every_change(old in node_names(), new in node_names(), vnodes in 1u32..30, hashes in proptest::collection::vec(any::<u64>(), 1..300)) {
        let (a, b) = (ring_of(&old, vnodes), ring_of(&new, vnodes));
        let transfers = a.transfers_to(&b);
        for hash in hashes {
            let (from, to) = (a.get_by_hash(hash).unwrap(), b.get_by_hash(hash).unwrap());
            let covering: Vec<_> = transfers.iter().filter(|t| t.range.contains(hash)).collect();
            if from == to {
                prop_assert!(covering.is_empty());
            } else {
                prop_assert_eq!(covering.len(), 1);
                prop_assert_eq!((&covering[0].from, &covering[0].to), (from, to));
            }
        }
    }
}

/// The documented rule, transcribed without the ring's index: every node's
/// points `hash(node, i)` for `i < vnodes * weight`, sorted by point then
/// node, and a hash goes to the first point `>= hash`, wrapping.
fn owner_by_binary_search(points: &[(u64, String)], hash: u64) -> Option<&String> {
    let at = points.partition_point(|(point, _)| *point < hash);
    points.get(at).or(points.first()).map(|(_, node)| node)
}

fn sorted_points(nodes: &[(String, u32)], vnodes: u32) -> Vec<(u64, String)> {
    use quorate_consistent_hash::{KeyHasher, Xxh3};
    let mut points: Vec<(u64, String)> = nodes
        .iter()
        .flat_map(|(node, weight)| {
            (0..u64::from(vnodes * weight)).map(move |i| (Xxh3.hash_key(node, i), node.clone()))
        })
        .collect();
    points.sort();
    points
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The ring's bucket index answers exactly as a plain binary search over
    /// the sorted points, for rings built by hand, shrunk by removals and
    /// rebuilt from their serialized form (whose index is derived again,
    /// never read from the input).
    #[test]
    fn lookups_match_a_plain_binary_search(
        nodes in proptest::collection::btree_map("[a-z]{1,6}", 1u32..4, 1..30),
        vnodes in 1u32..200,
        remove in any::<prop::sample::Index>(),
        hashes in proptest::collection::vec(any::<u64>(), 1..300),
    ) {
        let mut nodes: Vec<(String, u32)> = nodes.into_iter().collect();
        let mut ring = Ring::new(vnodes).unwrap();
        for (node, weight) in &nodes {
            ring.add_weighted(node.clone(), *weight).unwrap();
        }
        if nodes.len() > 1 {
            let (gone, _) = nodes.remove(remove.index(nodes.len()));
            ring.remove(&gone).unwrap();
        }
        let points = sorted_points(&nodes, vnodes);
        let back: Ring<String> = serde_json::from_str(&serde_json::to_string(&ring).unwrap()).unwrap();
        let near_points = points.iter().flat_map(|(p, _)| [p.wrapping_sub(1), *p, p.wrapping_add(1)]);
        for hash in hashes.iter().copied().chain(near_points).chain([0, u64::MAX]) {
            let expected = owner_by_binary_search(&points, hash);
            prop_assert_eq!(ring.get_by_hash(hash), expected, "hash {}", hash);
            prop_assert_eq!(back.get_by_hash(hash), expected, "hash {} after serde", hash);
        }
    }
}

/// Distinct keys over a ring of the benchmark's size (100 nodes x 100
/// vnodes): every lookup agrees with the plain binary search.
#[test]
fn a_benchmark_sized_ring_matches_binary_search_for_many_keys() {
    let nodes: Vec<(String, u32)> = names(100).into_iter().map(|n| (n, 1)).collect();
    let ring = ring_of(&names(100), 100);
    let points = sorted_points(&nodes, 100);
    for i in 0..200_000u64 {
        let key = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let hash = ring.hash_key(&key);
        assert_eq!(
            ring.get(&key),
            owner_by_binary_search(&points, hash),
            "key {key}"
        );
    }
}
