//! quorate-merkle against rs_merkle and against the raw cost of hashing:
//! n leaf hashes plus n-1 parent hashes with the same hasher, no tree.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use quorate_merkle::{Blake3, Hash, MerkleHasher, MerkleTree, Sha256};
use rs_merkle::{Hasher as _, MerkleTree as RsTree, algorithms::Sha256 as RsSha256};
use std::{
    hint::black_box,
    time::{Duration, Instant},
};

const LOG_N: u32 = 20;
const N: usize = 1 << LOG_N;

fn leaves() -> Vec<[u8; 32]> {
    (0..N as u64)
        .map(|i| {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&i.to_le_bytes());
            b
        })
        .collect()
}

/// The floor: every hash a tree of `leaves` needs, with nothing stored.
fn raw_hashing<H: MerkleHasher>(leaves: &[[u8; 32]]) -> Hash {
    let mut acc = Hash::default();
    for l in leaves {
        acc = H::hash_leaf(black_box(l));
    }
    for _ in 1..leaves.len() {
        acc = H::hash_node(black_box(&acc), &acc);
    }
    acc
}

/// Runs each labelled closure `iters` times per round, round after round,
/// and prints the best round of each relative to the first. Interleaving
/// keeps the ratios honest on a shared machine whose load drifts.
fn paired(title: &str, iters: u32, rounds: u32, cases: &mut [(&str, &mut dyn FnMut())]) {
    let mut best = vec![Duration::MAX; cases.len()];
    for _ in 0..rounds {
        for (b, (_, f)) in best.iter_mut().zip(cases.iter_mut()) {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            *b = (*b).min(t.elapsed() / iters);
        }
    }
    let base = best[0].as_secs_f64();
    let line: Vec<String> = cases
        .iter()
        .zip(&best)
        .map(|((name, _), b)| format!("{name} {b:?} ({:.2}x)", b.as_secs_f64() / base))
        .collect();
    eprintln!("paired {title}: {}", line.join(", "));
}

/// A hasher that does no hashing work: building with it measures what the
/// tree costs beyond the hashes (allocation, first touch, index arithmetic).
struct NoHash;

impl MerkleHasher for NoHash {
    fn hash_parts(parts: &[&[u8]]) -> Hash {
        let mut h = Hash::default();
        h.0[0] = parts.iter().map(|p| p.len() as u8).sum();
        h
    }
    fn hash_node(left: &Hash, right: &Hash) -> Hash {
        let mut h = *left;
        h.0[1] ^= right.0[1];
        h
    }
}

/// Raw hashing, a fresh tree and a rebuild in a reused buffer, interleaved.
fn paired_build<H: MerkleHasher>(name: &str, data: &[[u8; 32]]) {
    let mut reused = MerkleTree::<H>::new();
    paired(
        &format!("build 2^20 leaves, {name}"),
        1,
        7,
        &mut [
            ("raw hashing", &mut || {
                black_box(raw_hashing::<H>(data));
            }),
            ("quorate fresh", &mut || {
                black_box(MerkleTree::<H>::from_leaves(data).root());
            }),
            ("quorate reused buffer", &mut || {
                reused.clear();
                reused.extend(data);
                black_box(reused.root());
            }),
            ("no-op hasher (tree cost beyond hashing)", &mut || {
                black_box(MerkleTree::<NoHash>::from_leaves(data).root());
            }),
        ],
    );
}

fn build(c: &mut Criterion) {
    let data = leaves();
    paired_build::<Sha256>("sha256", &data);
    paired_build::<Blake3>("blake3", &data);
    paired(
        "build 2^20 leaves, sha256 vs rs_merkle",
        1,
        5,
        &mut [
            ("raw hashing", &mut || {
                black_box(raw_hashing::<Sha256>(&data));
            }),
            ("rs_merkle", &mut || {
                let hashed: Vec<[u8; 32]> = data.iter().map(|l| RsSha256::hash(l)).collect();
                black_box(RsTree::<RsSha256>::from_leaves(&hashed).root());
            }),
        ],
    );
    let mut g = c.benchmark_group("merkle/build_2^20x32B");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    g.bench_function("raw_hashing_sha256", |b| {
        b.iter(|| raw_hashing::<Sha256>(&data))
    });
    g.bench_function("quorate_sha256", |b| {
        b.iter(|| MerkleTree::<Sha256>::from_leaves(&data).root())
    });
    g.bench_function("rs_merkle_sha256", |b| {
        b.iter(|| {
            // rs_merkle takes leaf hashes; hashing them is part of building.
            let hashed: Vec<[u8; 32]> = data.iter().map(|l| RsSha256::hash(l)).collect();
            RsTree::<RsSha256>::from_leaves(&hashed).root()
        })
    });
    g.bench_function("raw_hashing_blake3", |b| {
        b.iter(|| raw_hashing::<Blake3>(&data))
    });
    g.bench_function("quorate_blake3", |b| {
        b.iter(|| MerkleTree::<Blake3>::from_leaves(&data).root())
    });
    g.finish();
}

fn proofs(c: &mut Criterion) {
    let data = leaves();
    let ours = MerkleTree::<Sha256>::from_leaves(&data);
    let root = ours.root();
    let hashed: Vec<[u8; 32]> = data.iter().map(|l| RsSha256::hash(l)).collect();
    let theirs = RsTree::<RsSha256>::from_leaves(&hashed);
    let rs_root = theirs.root().unwrap();
    let index = 654_321u64;
    let leaf_hash = Sha256::hash_leaf(&data[index as usize]);

    let proof = ours.inclusion_proof(index).unwrap();
    let rs_proof = theirs.proof(&[index as usize]);
    paired(
        "verify one proof, 2^20 leaves",
        2000,
        15,
        &mut [
            ("raw 20 parent hashes", &mut || {
                let mut acc = black_box(leaf_hash);
                for _ in 0..LOG_N {
                    acc = Sha256::hash_node(&acc, &acc);
                }
                black_box(acc);
            }),
            ("quorate", &mut || {
                proof
                    .verify_hash::<Sha256>(black_box(index), &leaf_hash, N as u64, &root)
                    .unwrap();
            }),
            ("rs_merkle", &mut || {
                assert!(rs_proof.verify(
                    rs_root,
                    &[black_box(index as usize)],
                    &[hashed[index as usize]],
                    N
                ));
            }),
        ],
    );
    paired(
        "generate one proof, 2^20 leaves",
        2000,
        15,
        &mut [
            ("quorate", &mut || {
                black_box(ours.inclusion_proof(black_box(index)).unwrap());
            }),
            ("rs_merkle", &mut || {
                black_box(theirs.proof(&[black_box(index as usize)]));
            }),
        ],
    );
    let mut g = c.benchmark_group("merkle/single_proof_2^20");
    g.sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("generate/quorate", |b| {
        b.iter(|| ours.inclusion_proof(black_box(index)).unwrap())
    });
    g.bench_function("generate/rs_merkle", |b| {
        b.iter(|| theirs.proof(&[black_box(index as usize)]))
    });
    g.bench_function("verify/quorate", |b| {
        b.iter(|| {
            proof
                .verify_hash::<Sha256>(black_box(index), &leaf_hash, N as u64, &root)
                .unwrap()
        })
    });
    g.bench_function("verify/rs_merkle", |b| {
        b.iter(|| {
            assert!(rs_proof.verify(
                rs_root,
                &[black_box(index as usize)],
                &[hashed[index as usize]],
                N
            ))
        })
    });
    g.bench_function("verify/raw_20_parent_hashes", |b| {
        b.iter(|| {
            let mut acc = black_box(leaf_hash);
            for _ in 0..LOG_N {
                acc = Sha256::hash_node(&acc, &acc);
            }
            acc
        })
    });
    g.finish();

    // 1,000 leaves spread over the tree.
    let picks: Vec<u64> = (0..1000u64)
        .map(|i| i * (N as u64 / 1000) + (i * 7919) % 97)
        .collect();
    let rs_picks: Vec<usize> = picks.iter().map(|&i| i as usize).collect();
    let picked: Vec<(u64, Hash)> = picks
        .iter()
        .map(|&i| (i, Sha256::hash_leaf(&data[i as usize])))
        .collect();
    let rs_picked: Vec<[u8; 32]> = rs_picks.iter().map(|&i| hashed[i]).collect();
    let mut g = c.benchmark_group("merkle/multi_proof_1000_of_2^20");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.bench_function(BenchmarkId::new("generate", "quorate"), |b| {
        b.iter(|| ours.multi_proof(black_box(&picks)).unwrap())
    });
    g.bench_function(BenchmarkId::new("generate", "rs_merkle"), |b| {
        b.iter(|| theirs.proof(black_box(&rs_picks)))
    });
    let multi = ours.multi_proof(&picks).unwrap();
    let rs_multi = theirs.proof(&rs_picks);
    eprintln!(
        "multi-proof of 1000 leaves: quorate {} hashes, rs_merkle {} hashes",
        multi.hashes().len(),
        rs_multi.proof_hashes().len()
    );
    g.bench_function(BenchmarkId::new("verify", "quorate"), |b| {
        b.iter(|| {
            multi
                .verify_hashes::<Sha256>(black_box(&picked), N as u64, &root)
                .unwrap()
        })
    });
    g.bench_function(BenchmarkId::new("verify", "rs_merkle"), |b| {
        b.iter(|| assert!(rs_multi.verify(rs_root, black_box(&rs_picks), &rs_picked, N)))
    });
    g.finish();
}

criterion_group!(benches, build, proofs);
criterion_main!(benches);
