//! Lookup cost, balance and movement of quorate-consistent-hash against hashring and jumphash.
//!
//! Before timing, prints balance (max/mean load over 1M keys, 100 nodes) and
//! the fraction of keys moved when a 101st node joins, for every scheme.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hash::Hash;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hashring::HashRing;
use jumphash::JumpHasher;
use quorate_consistent_hash::{JumpHash, Maglev, MultiProbe, Rendezvous, Ring};

const NODES: usize = 100;
const KEYS: u64 = 1_000_000;
const BATCH: u64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct VNode {
    node: u32,
    replica: u32,
}

fn name(i: usize) -> String {
    format!("node-{i}")
}

fn ring(nodes: usize, vnodes: u32) -> Ring<String> {
    let mut ring = Ring::new(vnodes).unwrap();
    for i in 0..nodes {
        ring.add(name(i)).unwrap();
    }
    ring
}

fn hashring(nodes: usize, vnodes: u32) -> HashRing<VNode> {
    let mut ring = HashRing::new();
    let all =
        (0..nodes as u32).flat_map(|node| (0..vnodes).map(move |replica| VNode { node, replica }));
    ring.batch_add(all.collect());
    ring
}

fn multi_probe(nodes: usize, probes: u32) -> MultiProbe<String> {
    let mut mp = MultiProbe::new(probes).unwrap();
    for i in 0..nodes {
        mp.add(name(i)).unwrap();
    }
    mp
}

fn rendezvous(nodes: usize) -> Rendezvous<String> {
    let mut hrw = Rendezvous::new();
    for i in 0..nodes {
        hrw.add(name(i)).unwrap();
    }
    hrw
}

fn maglev(nodes: usize) -> Maglev<String> {
    Maglev::new((0..nodes).map(name)).unwrap()
}

/// Max/mean load over `KEYS` keys for 100 nodes, and the fraction of keys
/// whose owner changes when a 101st node joins (ideal: 1/101 = 0.0099).
fn figures<T: Eq + Hash>(label: &str, before: impl Fn(u64) -> T, after: impl Fn(u64) -> T) {
    let mut loads: HashMap<T, u64> = HashMap::new();
    let mut moved = 0u64;
    for key in 0..KEYS {
        let owner = before(key);
        if owner != after(key) {
            moved += 1;
        }
        *loads.entry(owner).or_default() += 1;
    }
    let max = *loads.values().max().unwrap() as f64;
    let mean = KEYS as f64 / loads.len() as f64;
    println!(
        "figures {label:<28} max/mean {:.3}  moved on join {:.4} (ideal {:.4})",
        max / mean,
        moved as f64 / KEYS as f64,
        1.0 / (NODES as f64 + 1.0)
    );
}

fn print_figures() {
    for vnodes in [100, 1000] {
        let (a, b) = (ring(NODES, vnodes), ring(NODES + 1, vnodes));
        figures(
            &format!("quorate Ring x{vnodes}"),
            |k| a.get(&k).unwrap().clone(),
            |k| b.get(&k).unwrap().clone(),
        );
        let (a, b) = (hashring(NODES, vnodes), hashring(NODES + 1, vnodes));
        figures(
            &format!("hashring x{vnodes}"),
            |k| a.get(&k).unwrap().node,
            |k| b.get(&k).unwrap().node,
        );
    }
    let (a, b) = (
        JumpHash::new(NODES as u32).unwrap(),
        JumpHash::new(NODES as u32 + 1).unwrap(),
    );
    figures("quorate JumpHash", |k| a.bucket(&k), |k| b.bucket(&k));
    let peer = JumpHasher::new_with_keys(1, 2);
    figures(
        "jumphash",
        |k| peer.slot(&k, NODES as u32),
        |k| peer.slot(&k, NODES as u32 + 1),
    );
    let (a, b) = (rendezvous(NODES), rendezvous(NODES + 1));
    figures(
        "quorate Rendezvous",
        |k| a.get(&k).unwrap().clone(),
        |k| b.get(&k).unwrap().clone(),
    );
    let (a, b) = (maglev(NODES), maglev(NODES + 1));
    figures(
        "quorate Maglev 65537",
        |k| a.get(&k).unwrap().clone(),
        |k| b.get(&k).unwrap().clone(),
    );
    for probes in [21, 32, 48, 64] {
        let (a, b) = (multi_probe(NODES, probes), multi_probe(NODES + 1, probes));
        figures(
            &format!("quorate MultiProbe k={probes}"),
            |k| a.get(&k).unwrap().clone(),
            |k| b.get(&k).unwrap().clone(),
        );
    }
}

fn lookups(c: &mut Criterion) {
    print_figures();
    let keys: Vec<u64> = (0..BATCH)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    let mut group = c.benchmark_group("consistent_hash_lookup");
    group.throughput(Throughput::Elements(BATCH));
    for vnodes in [100, 1000] {
        let ours = ring(NODES, vnodes);
        group.bench_function(format!("quorate_ring_x{vnodes}"), |b| {
            b.iter(|| {
                keys.iter()
                    .map(|k| ours.get(k).unwrap().len())
                    .sum::<usize>()
            })
        });
        let peer = hashring(NODES, vnodes);
        group.bench_function(format!("hashring_x{vnodes}"), |b| {
            b.iter(|| keys.iter().map(|k| peer.get(k).unwrap().node).sum::<u32>())
        });
    }
    let jump = JumpHash::new(NODES as u32).unwrap();
    group.bench_function("quorate_jump", |b| {
        b.iter(|| keys.iter().map(|k| jump.bucket(k).0).sum::<u32>())
    });
    let peer = JumpHasher::new_with_keys(1, 2);
    group.bench_function("jumphash", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| peer.slot(k, black_box(NODES as u32)))
                .sum::<u32>()
        })
    });
    let hrw = rendezvous(NODES);
    group.bench_function("quorate_rendezvous", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| hrw.get(k).unwrap().len())
                .sum::<usize>()
        })
    });
    let maglev = maglev(NODES);
    group.bench_function("quorate_maglev", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| maglev.get(k).unwrap().len())
                .sum::<usize>()
        })
    });
    for probes in [21, 48] {
        let mp = multi_probe(NODES, probes);
        group.bench_function(format!("quorate_multi_probe_k{probes}"), |b| {
            b.iter(|| keys.iter().map(|k| mp.get(k).unwrap().len()).sum::<usize>())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = lookups
}
criterion_main!(benches);
