//! Lookup cost, balance and movement of quorate-consistent-hash against hashring and jumphash.
//!
//! Equal work on both sides of every row: the same `u64` keys, each side
//! hashing the key as its docs recommend (`get(&key)`: XXH3 for ours,
//! SipHash for hashring and jumphash), the same 100 nodes named by `u32`
//! ids, and the owner's `u32` id summed. The headline rows (`distinct`) look
//! up the next 1,024 keys of a 2^20-key array per iteration, so no key
//! repeats within 2^20 lookups and neither caches nor branch predictors
//! remember a key; the `hot1024` rows repeat the same 1,024 keys every
//! iteration (the special case of a small, cached working set).
//!
//! Before timing, prints balance (max/mean load, 100 nodes, parameters
//! printed on each line) and the fraction of keys moved when a 101st node
//! joins, for every scheme. `QUORATE_SKIP_FIGURES=1` skips them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hash::Hash;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Bencher, Criterion, Throughput, criterion_group, criterion_main};
use hashring::HashRing;
use jumphash::JumpHasher;
use quorate_consistent_hash::{JumpHash, Maglev, MultiProbe, Rendezvous, Ring, splitmix64};

const NODES: u32 = 100;
/// Keys for the balance figures.
const FIGURE_KEYS: u64 = 1_000_000;
/// Seed of the balance figures' keys (key `i` is `splitmix64(SEED + i * gamma)`).
const FIGURE_SEED: u64 = 1;
/// Keys for the distinct-key timings.
const DISTINCT: usize = 1 << 20;
/// Lookups per timed iteration.
const BATCH: usize = 1024;

/// hashring's way of giving a node several points: one entry per (node, replica).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct VNode {
    node: u32,
    replica: u32,
}

fn ring(nodes: u32, vnodes: u32) -> Ring<u32> {
    let mut ring = Ring::new(vnodes).unwrap();
    for node in 0..nodes {
        ring.add(node).unwrap();
    }
    ring
}

fn hashring(nodes: u32, vnodes: u32) -> HashRing<VNode> {
    let mut ring = HashRing::new();
    let all = (0..nodes).flat_map(|node| (0..vnodes).map(move |replica| VNode { node, replica }));
    ring.batch_add(all.collect());
    ring
}

fn multi_probe(nodes: u32, probes: u32) -> MultiProbe<u32> {
    let mut mp = MultiProbe::new(probes).unwrap();
    for node in 0..nodes {
        mp.add(node).unwrap();
    }
    mp
}

fn rendezvous(nodes: u32) -> Rendezvous<u32> {
    let mut hrw = Rendezvous::new();
    for node in 0..nodes {
        hrw.add(node).unwrap();
    }
    hrw
}

fn maglev(nodes: u32) -> Maglev<u32> {
    Maglev::new(0..nodes).unwrap()
}

/// Key `i` of the figures' key set for `seed`.
fn figure_key(seed: u64, i: u64) -> u64 {
    splitmix64(seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

/// Max/mean load over `keys` keys (seeded) for `NODES` nodes, and the
/// fraction of keys whose owner changes when a 101st node joins (ideal:
/// 1/101 = 0.0099).
fn figures<T: Eq + Hash>(
    label: &str,
    keys: u64,
    seed: u64,
    before: impl Fn(u64) -> T,
    after: impl Fn(u64) -> T,
) {
    let mut loads: HashMap<T, u64> = HashMap::new();
    let mut moved = 0u64;
    for i in 0..keys {
        let key = figure_key(seed, i);
        let owner = before(key);
        if owner != after(key) {
            moved += 1;
        }
        *loads.entry(owner).or_default() += 1;
    }
    let max = *loads.values().max().unwrap() as f64;
    let mean = keys as f64 / f64::from(NODES);
    println!(
        "figures {label:<26} nodes {NODES} keys {keys} seed {seed}  max/mean {:.3}  moved on join {:.4} (ideal {:.4})",
        max / mean,
        moved as f64 / keys as f64,
        1.0 / (f64::from(NODES) + 1.0)
    );
}

fn print_figures() {
    if std::env::var_os("QUORATE_SKIP_FIGURES").is_some_and(|v| v == "1") {
        return;
    }
    let (keys, seed) = (FIGURE_KEYS, FIGURE_SEED);
    for vnodes in [100, 1000] {
        let (a, b) = (ring(NODES, vnodes), ring(NODES + 1, vnodes));
        figures(
            &format!("quorate Ring x{vnodes}"),
            keys,
            seed,
            |k| *a.get(&k).unwrap(),
            |k| *b.get(&k).unwrap(),
        );
        let (a, b) = (hashring(NODES, vnodes), hashring(NODES + 1, vnodes));
        figures(
            &format!("hashring x{vnodes}"),
            keys,
            seed,
            |k| a.get(&k).unwrap().node,
            |k| b.get(&k).unwrap().node,
        );
    }
    let (a, b) = (
        JumpHash::new(NODES).unwrap(),
        JumpHash::new(NODES + 1).unwrap(),
    );
    figures(
        "quorate JumpHash",
        keys,
        seed,
        |k| a.bucket(&k),
        |k| b.bucket(&k),
    );
    let peer = JumpHasher::new_with_keys(1, 2);
    figures(
        "jumphash",
        keys,
        seed,
        |k| peer.slot(&k, NODES),
        |k| peer.slot(&k, NODES + 1),
    );
    let (a, b) = (rendezvous(NODES), rendezvous(NODES + 1));
    figures(
        "quorate Rendezvous",
        keys,
        seed,
        |k| *a.get(&k).unwrap(),
        |k| *b.get(&k).unwrap(),
    );
    let (a, b) = (maglev(NODES), maglev(NODES + 1));
    figures(
        "quorate Maglev 65537",
        keys,
        seed,
        |k| *a.get(&k).unwrap(),
        |k| *b.get(&k).unwrap(),
    );
    for probes in [21, 32, 48, 64] {
        let (a, b) = (multi_probe(NODES, probes), multi_probe(NODES + 1, probes));
        figures(
            &format!("quorate MultiProbe k={probes}"),
            keys,
            seed,
            |k| *a.get(&k).unwrap(),
            |k| *b.get(&k).unwrap(),
        );
    }
    // The paper's 21 probes at other key counts and seeds: how much of
    // max/mean is sampling noise (it shrinks as keys per node grow).
    let (a, b) = (multi_probe(NODES, 21), multi_probe(NODES + 1, 21));
    for (keys, seed) in [
        (100_000, 1),
        (1_000_000, 2),
        (1_000_000, 3),
        (10_000_000, 1),
    ] {
        figures(
            "quorate MultiProbe k=21",
            keys,
            seed,
            |k| *a.get(&k).unwrap(),
            |k| *b.get(&k).unwrap(),
        );
        // Same keys placed uniformly at random: the noise floor alone.
        let (a, b) = (
            JumpHash::new(NODES).unwrap(),
            JumpHash::new(NODES + 1).unwrap(),
        );
        figures(
            "noise floor (jump)",
            keys,
            seed,
            |k| a.bucket(&k),
            |k| b.bucket(&k),
        );
    }
}

/// Times `lookup` over the next `BATCH` keys of `keys` per iteration,
/// walking the whole array before any key comes again.
fn walk(b: &mut Bencher<'_>, keys: &[u64], lookup: impl Fn(u64) -> u32) {
    let mut at = 0;
    b.iter(|| {
        let chunk = &keys[at..at + BATCH];
        at = (at + BATCH) % keys.len();
        chunk
            .iter()
            .fold(0u32, |sum, &key| sum.wrapping_add(lookup(key)))
    })
}

/// Keys per round of the paired timings.
const ROUND: usize = 1 << 16;
/// Rounds of the paired timings.
const ROUNDS: usize = 41;

/// ns per key of one pass of `lookup` over `keys`.
fn pass(keys: &[u64], lookup: &impl Fn(u64) -> u32) -> f64 {
    let start = std::time::Instant::now();
    let sum = keys
        .iter()
        .fold(0u32, |sum, &key| sum.wrapping_add(lookup(key)));
    black_box(sum);
    start.elapsed().as_nanos() as f64 / keys.len() as f64
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Ours and the peer timed back to back on the same `ROUND` distinct keys,
/// `ROUNDS` times over successive slices of the 2^20 keys (order alternating),
/// so load on the shared machine hits both sides alike; prints the medians
/// and the median of the per-round ratios.
fn paired(label: &str, keys: &[u64], ours: &impl Fn(u64) -> u32, peer: &impl Fn(u64) -> u32) {
    let (mut a, mut b, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    // Warm-up, untimed: caches, page tables, clock frequency.
    for _ in 0..2 {
        pass(&keys[..ROUND], ours);
        pass(&keys[..ROUND], peer);
    }
    for round in 0..ROUNDS {
        let at = (round * ROUND) % keys.len();
        let slice = &keys[at..at + ROUND];
        let (x, y) = if round % 2 == 0 {
            let x = pass(slice, ours);
            (x, pass(slice, peer))
        } else {
            let y = pass(slice, peer);
            (pass(slice, ours), y)
        };
        a.push(x);
        b.push(y);
        ratio.push(y / x);
    }
    println!(
        "paired {label:<44} ours {:7.2} ns/key  peer {:7.2} ns/key  peer/ours {:5.2}x (median of {ROUNDS} rounds of {ROUND} distinct keys)",
        median(&mut a),
        median(&mut b),
        median(&mut ratio)
    );
}

fn print_paired(distinct: &[u64]) {
    let (r100, h100) = (ring(NODES, 100), hashring(NODES, 100));
    let (r1000, h1000) = (ring(NODES, 1000), hashring(NODES, 1000));
    let hashring_x100 = |k: u64| h100.get(&k).unwrap().node;
    paired(
        "ring x100 vs hashring x100",
        distinct,
        &|k| *r100.get(&k).unwrap(),
        &hashring_x100,
    );
    paired(
        "ring x1000 vs hashring x1000",
        distinct,
        &|k| *r1000.get(&k).unwrap(),
        &|k| h1000.get(&k).unwrap().node,
    );
    let jump = JumpHash::new(NODES).unwrap();
    let peer = JumpHasher::new_with_keys(1, 2);
    paired(
        "jump vs jumphash",
        distinct,
        &|k| black_box(&jump).bucket(&k).0,
        &|k| peer.slot(&k, black_box(NODES)),
    );
    let maglev = maglev(NODES);
    paired(
        "Maglev vs hashring x100",
        distinct,
        &|k| *maglev.get(&k).unwrap(),
        &hashring_x100,
    );
    let hrw = rendezvous(NODES);
    paired(
        "rendezvous vs hashring x100",
        &distinct[..distinct.len() / 8],
        &|k| *hrw.get(&k).unwrap(),
        &hashring_x100,
    );
    let mp = multi_probe(NODES, 21);
    paired(
        "multi-probe k=21 vs hashring x100",
        &distinct[..distinct.len() / 8],
        &|k| *mp.get(&k).unwrap(),
        &hashring_x100,
    );
}

fn lookups(c: &mut Criterion) {
    print_figures();
    // Distinct: odd multiples of the golden ratio, a bijection of 0..2^20.
    let distinct: Vec<u64> = (0..DISTINCT as u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    print_paired(&distinct);
    let hot = &distinct[..BATCH];
    let mut group = c.benchmark_group("consistent_hash_lookup");
    group.throughput(Throughput::Elements(BATCH as u64));
    for vnodes in [100, 1000] {
        let ours = ring(NODES, vnodes);
        let peer = hashring(NODES, vnodes);
        for (label, keys) in [("distinct", &distinct[..]), ("hot1024", hot)] {
            group.bench_function(format!("quorate_ring_x{vnodes}_{label}"), |b| {
                walk(b, keys, |k| *ours.get(&k).unwrap())
            });
            group.bench_function(format!("hashring_x{vnodes}_{label}"), |b| {
                walk(b, keys, |k| peer.get(&k).unwrap().node)
            });
        }
    }
    // Where the ring's time goes: the key hash alone, and the index alone
    // (the same keys' hashes, precomputed).
    let ours = ring(NODES, 100);
    let hashes: Vec<u64> = distinct.iter().map(|k| ours.hash_key(k)).collect();
    group.bench_function("quorate_ring_x100_hash_only_distinct", |b| {
        walk(b, &distinct, |k| ours.hash_key(&k) as u32)
    });
    group.bench_function("quorate_ring_x100_get_by_hash_distinct", |b| {
        walk(b, &hashes, |h| *ours.get_by_hash(h).unwrap())
    });
    let jump = JumpHash::new(NODES).unwrap();
    group.bench_function("quorate_jump_distinct", |b| {
        walk(b, &distinct, |k| black_box(&jump).bucket(&k).0)
    });
    let peer = JumpHasher::new_with_keys(1, 2);
    group.bench_function("jumphash_distinct", |b| {
        walk(b, &distinct, |k| peer.slot(&k, black_box(NODES)))
    });
    let hrw = rendezvous(NODES);
    group.bench_function("quorate_rendezvous_distinct", |b| {
        walk(b, &distinct, |k| *hrw.get(&k).unwrap())
    });
    let maglev = maglev(NODES);
    group.bench_function("quorate_maglev_distinct", |b| {
        walk(b, &distinct, |k| *maglev.get(&k).unwrap())
    });
    for probes in [21, 48] {
        let mp = multi_probe(NODES, probes);
        group.bench_function(format!("quorate_multi_probe_k{probes}_distinct"), |b| {
            walk(b, &distinct, |k| *mp.get(&k).unwrap())
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
