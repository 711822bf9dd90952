//! Properties of jump hash, Maglev, rendezvous, multi-probe and bounded loads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use quorate_consistent_hash::{
    BoundedLoads, Bucket, JumpHash, Maglev, MultiProbe, Rendezvous, Ring,
};

fn names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("node-{i}")).collect()
}

fn max_over_mean<T: Ord>(loads: &BTreeMap<T, u64>, nodes: usize) -> f64 {
    let total: u64 = loads.values().sum();
    *loads.values().max().unwrap() as f64 / (total as f64 / nodes as f64)
}

#[test]
fn jump_balances_100_buckets() {
    // Jump has no structural imbalance: only sampling noise, 1% per bucket at 10,000 keys each.
    let jump = JumpHash::new(100).unwrap();
    let mut loads = BTreeMap::new();
    for key in 0u64..1_000_000 {
        *loads.entry(jump.bucket(&key)).or_insert(0u64) += 1;
    }
    assert_eq!(loads.len(), 100);
    let ratio = max_over_mean(&loads, 100);
    assert!(ratio <= 1.05, "max/mean {ratio}");
}

#[test]
fn maglev_gives_every_node_its_share_of_slots() {
    let maglev = Maglev::new(names(100)).unwrap();
    let mut slots = BTreeMap::new();
    for &owner in maglev.table() {
        *slots.entry(owner).or_insert(0u64) += 1;
    }
    // Round-robin filling: 65,537 = 100 * 655 + 37.
    assert_eq!(slots.len(), 100);
    assert!(slots.values().all(|&count| count == 655 || count == 656));
    assert_eq!(slots.values().filter(|&&count| count == 656).count(), 37);

    let mut loads = BTreeMap::new();
    for key in 0u64..1_000_000 {
        *loads
            .entry(maglev.get(&key).unwrap().clone())
            .or_insert(0u64) += 1;
    }
    let ratio = max_over_mean(&loads, 100);
    assert!(ratio <= 1.06, "max/mean {ratio}");
}

fn owner(maglev: &Maglev<String>, slot: usize) -> &String {
    &maglev.nodes()[maglev.table()[slot] as usize]
}

#[test]
fn maglev_removal_disrupts_little_besides_the_removed_node() {
    let nodes = names(100);
    let before = Maglev::new(nodes.clone()).unwrap();
    let mut after = before.clone();
    let gone = nodes[37].clone();
    after.remove(&gone).unwrap();
    let size = before.table_size() as usize;
    let mut lost = 0usize;
    let mut reshuffled = 0usize;
    for slot in 0..size {
        let (old, new) = (owner(&before, slot), owner(&after, slot));
        if old == &gone {
            lost += 1;
        } else if old != new {
            reshuffled += 1;
        }
    }
    eprintln!("maglev removal: {lost} slots of the removed node, {reshuffled} others reshuffled");
    assert!(
        reshuffled <= lost,
        "{reshuffled} slots moved between survivors, {lost} were the removed node's"
    );
}

#[test]
fn multi_probe_balance() {
    let mut mp = MultiProbe::new(21).unwrap();
    for node in names(100) {
        mp.add(node).unwrap();
    }
    let mut loads = BTreeMap::new();
    for key in 0u64..1_000_000 {
        *loads.entry(mp.get(&key).unwrap().clone()).or_insert(0u64) += 1;
    }
    let ratio = max_over_mean(&loads, 100);
    // 21 independent probes: ~1.06 measured, of which ~1.03 is the sampling noise of 10,000 keys per node.
    assert!(ratio <= 1.08, "max/mean {ratio}");
}

#[test]
fn rendezvous_weights_within_5_percent() {
    let mut hrw = Rendezvous::new();
    let weights = [1.0, 2.0, 3.0, 4.0];
    for (i, weight) in weights.iter().enumerate() {
        hrw.add_weighted(i as u32, *weight).unwrap();
    }
    let mut loads = [0u64; 4];
    for key in 0u64..400_000 {
        loads[*hrw.get(&key).unwrap() as usize] += 1;
    }
    for (i, weight) in weights.iter().enumerate() {
        let share = loads[i] as f64 / 400_000.0;
        assert!(
            (share / (weight / 10.0) - 1.0).abs() <= 0.05,
            "node {i}: {share}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Growing jump hash from n to n+1 moves about 1/(n+1) of keys, all into bucket n.
    #[test]
    fn jump_growth_moves_only_into_the_new_bucket(buckets in 1u32..200) {
        let before = JumpHash::new(buckets).unwrap();
        let mut after = before;
        let added = after.push_bucket().unwrap();
        prop_assert_eq!(added, Bucket(buckets));
        let keys = 40_000u64;
        let mut moved = 0u64;
        for key in 0..keys {
            let (old, new) = (before.bucket(&key), after.bucket(&key));
            if old != new {
                prop_assert_eq!(new, added);
                moved += 1;
            }
        }
        let expected = keys as f64 / (f64::from(buckets) + 1.0);
        prop_assert!((moved as f64 / expected - 1.0).abs() <= 0.20, "{moved} vs {expected}");
    }

    /// Rendezvous: a joiner only takes keys, a leaver only gives its own, top_k is a ranking.
    #[test]
    fn rendezvous_moves_only_what_it_must(count in 2usize..30, weighted in any::<bool>(), k in 0usize..40) {
        let nodes = names(count);
        let mut before = Rendezvous::new();
        for (i, node) in nodes.iter().enumerate() {
            let weight = if weighted { 1.0 + i as f64 % 3.0 } else { 1.0 };
            before.add_weighted(node.clone(), weight).unwrap();
        }
        let mut joined = before.clone();
        joined.add_weighted("joiner".to_string(), 2.0).unwrap();
        let mut left = before.clone();
        left.remove(&nodes[0]).unwrap();
        for key in 0u64..2000 {
            let owner = before.get(&key).unwrap();
            let after_join = joined.get(&key).unwrap();
            prop_assert!(after_join == owner || after_join == "joiner");
            let after_leave = left.get(&key).unwrap();
            prop_assert_eq!(after_leave != owner, owner == &nodes[0]);
            let top = before.top_k(&key, k);
            prop_assert_eq!(top.len(), k.min(count));
            prop_assert!(top.first().is_none_or(|first| *first == owner));
            let mut distinct = top.clone();
            distinct.sort();
            distinct.dedup();
            prop_assert_eq!(distinct.len(), top.len());
        }
    }

    /// Bounded loads: after every placement no node exceeds ceil((1 + eps) * average).
    #[test]
    fn bounded_load_cap_always_holds(count in 1usize..20, eps in 0.0f64..1.0, keys in 1u64..1500, on_ring in any::<bool>()) {
        let nodes = names(count);
        let mut ring = Ring::new(20).unwrap();
        let mut hrw = Rendezvous::new();
        for node in &nodes {
            ring.add(node.clone()).unwrap();
            hrw.add(node.clone()).unwrap();
        }
        let mut loads = BoundedLoads::new(eps).unwrap();
        for (placed, key) in (0..keys).enumerate() {
            let node = if on_ring { loads.place_on_ring(&ring, &key) } else { loads.place_on_rendezvous(&hrw, &key) }.unwrap();
            prop_assert!(nodes.contains(&node));
            let cap = ((1.0 + eps) * (placed as f64 + 1.0) / count as f64).ceil() as u64;
            for node in &nodes {
                prop_assert!(loads.load(node) <= cap, "{} > {cap}", loads.load(node));
            }
        }
        prop_assert_eq!(loads.total(), keys);
        prop_assert_eq!(loads.overloaded(count).count(), 0);
    }
}
