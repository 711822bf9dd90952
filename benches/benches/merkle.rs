//! quorate-merkle against rs_merkle and against the raw cost of hashing:
//! n leaf hashes plus n-1 parent hashes with sha2 called directly, no tree.
//!
//! Equal work: the rs_merkle rows marked "same hash" run rs_merkle on the
//! same sha2 0.11 SHA-256 as ours, hashing a parent from a stack buffer (no
//! per-node allocation), on the same 2^20 leaves; the "stock" rows are
//! rs_merkle as shipped (its sha2 0.10 `Sha256`, a `Vec` per parent hash).
//! Rows "from leaf hashes" give both crates the same pre-hashed leaves.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use quorate_merkle::{Blake3, Hash, MerkleHasher, MerkleTree, Sha256};
use rs_merkle::{Hasher as _, MerkleTree as RsTree, algorithms::Sha256 as RsSha256};
use sha2::Digest as _;
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

/// rs_merkle on the same SHA-256 as ours (sha2 0.11), parents hashed from
/// a stack buffer instead of its default two `Vec`s per parent.
#[derive(Clone)]
struct SameSha256;

impl rs_merkle::Hasher for SameSha256 {
    type Hash = [u8; 32];

    fn hash(data: &[u8]) -> [u8; 32] {
        sha2::Sha256::digest(data).into()
    }

    fn concat_and_hash(left: &[u8; 32], right: Option<&[u8; 32]>) -> [u8; 32] {
        let Some(right) = right else { return *left };
        let mut buf = [0u8; 64];
        buf[..32].copy_from_slice(left);
        buf[32..].copy_from_slice(right);
        Self::hash(&buf)
    }
}

/// The SHA-256 floor: sha2 called directly for every hash a tree of
/// `leaves` needs (`H(0x00||leaf)` each, then `H(0x01||l||r)` n-1 times),
/// with nothing stored.
fn raw_sha256(leaves: &[[u8; 32]]) -> [u8; 32] {
    let mut acc = [0u8; 32];
    for l in leaves {
        acc = sha2::Sha256::new()
            .chain_update([0x00])
            .chain_update(black_box(l))
            .finalize()
            .into();
    }
    let mut buf = [0u8; 65];
    buf[0] = 0x01;
    for _ in 1..leaves.len() {
        buf[1..33].copy_from_slice(black_box(&acc));
        buf[33..].copy_from_slice(&acc);
        acc = sha2::Sha256::digest(buf).into();
    }
    acc
}

/// The same floor for any hasher, through its own leaf and parent hashes.
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

/// 20 parent hashes with sha2 directly: the floor of verifying one proof.
fn raw_20_parents(leaf: &Hash) -> [u8; 32] {
    let mut buf = [0u8; 65];
    buf[0] = 0x01;
    let mut acc = leaf.0;
    for _ in 0..LOG_N {
        buf[1..33].copy_from_slice(black_box(&acc));
        buf[33..].copy_from_slice(&acc);
        acc = sha2::Sha256::digest(buf).into();
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

fn build(c: &mut Criterion) {
    let data = leaves();
    let hashed_leaves: Vec<[u8; 32]> = data.iter().map(|l| Sha256::hash_leaf(l).0).collect();
    let mut reused = MerkleTree::<Sha256>::new();
    paired(
        "build 2^20 leaves, sha256",
        1,
        9,
        &mut [
            ("raw sha2 floor", &mut || {
                black_box(raw_sha256(&data));
            }),
            ("quorate fresh", &mut || {
                black_box(MerkleTree::<Sha256>::from_leaves(&data).tree_hash());
            }),
            ("quorate reused buffer", &mut || {
                reused.clear();
                reused.extend(&data);
                black_box(reused.tree_hash());
            }),
            ("rs_merkle same hash", &mut || {
                // rs_merkle takes leaf hashes; hashing them is part of building.
                let hashed: Vec<[u8; 32]> = data.iter().map(|l| SameSha256::hash(l)).collect();
                black_box(RsTree::<SameSha256>::from_leaves(&hashed).root());
            }),
            ("rs_merkle stock", &mut || {
                let hashed: Vec<[u8; 32]> = data.iter().map(|l| RsSha256::hash(l)).collect();
                black_box(RsTree::<RsSha256>::from_leaves(&hashed).root());
            }),
            (
                "no-op hasher, fresh (tree cost beyond hashing)",
                &mut || {
                    black_box(MerkleTree::<NoHash>::from_leaves(&data).tree_hash());
                },
            ),
            ("first touch of a fresh 2n-1 hash Vec", &mut || {
                let mut v: Vec<Hash> = Vec::with_capacity(2 * N - 1);
                v.extend(std::iter::repeat_n(Hash::default(), 2 * N - 1));
                black_box(&v);
            }),
        ],
    );
    paired(
        "build 2^20 leaves from the same leaf hashes, sha256",
        1,
        7,
        &mut [
            ("quorate", &mut || {
                let hashes = hashed_leaves.iter().map(|&h| Hash(h));
                black_box(MerkleTree::<Sha256>::from_leaf_hashes(hashes).tree_hash());
            }),
            ("rs_merkle same hash", &mut || {
                black_box(RsTree::<SameSha256>::from_leaves(&hashed_leaves).root());
            }),
        ],
    );
    let mut reused = MerkleTree::<Blake3>::new();
    paired(
        "build 2^20 leaves, blake3",
        1,
        5,
        &mut [
            ("raw hashing", &mut || {
                black_box(raw_hashing::<Blake3>(&data));
            }),
            ("quorate fresh", &mut || {
                black_box(MerkleTree::<Blake3>::from_leaves(&data).tree_hash());
            }),
            ("quorate reused buffer", &mut || {
                reused.clear();
                reused.extend(&data);
                black_box(reused.tree_hash());
            }),
        ],
    );
    let mut g = c.benchmark_group("merkle/build_2^20x32B");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("raw_sha2_floor", |b| b.iter(|| raw_sha256(&data)));
    g.bench_function("quorate_sha256", |b| {
        b.iter(|| MerkleTree::<Sha256>::from_leaves(&data).tree_hash())
    });
    let mut reused = MerkleTree::<Sha256>::new();
    g.bench_function("quorate_sha256_reused_buffer", |b| {
        b.iter(|| {
            reused.clear();
            reused.extend(&data);
            reused.tree_hash()
        })
    });
    g.bench_function("no_op_hasher_fresh", |b| {
        b.iter(|| MerkleTree::<NoHash>::from_leaves(&data).tree_hash())
    });
    g.bench_function("rs_merkle_same_sha256", |b| {
        b.iter(|| {
            let hashed: Vec<[u8; 32]> = data.iter().map(|l| SameSha256::hash(l)).collect();
            RsTree::<SameSha256>::from_leaves(&hashed).root()
        })
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

    let tree_hash = ours.tree_hash();
    let same = RsTree::<SameSha256>::from_leaves(&hashed);
    let same_root = same.root().unwrap();
    let proof = ours.inclusion_proof(index).unwrap();
    let rs_proof = theirs.proof(&[index as usize]);
    let same_proof = same.proof(&[index as usize]);
    let leaf = hashed[index as usize];
    paired(
        "verify one proof, 2^20 leaves",
        1000,
        60,
        &mut [
            ("raw 20 parent hashes", &mut || {
                black_box(raw_20_parents(black_box(&leaf_hash)));
            }),
            ("quorate, raw tree hash", &mut || {
                proof
                    .verify_tree_hash::<Sha256>(black_box(index), &leaf_hash, N as u64, &tree_hash)
                    .unwrap();
            }),
            ("quorate, size-bound root", &mut || {
                proof
                    .verify_hash::<Sha256>(black_box(index), &leaf_hash, N as u64, &root)
                    .unwrap();
            }),
            ("rs_merkle same hash", &mut || {
                assert!(same_proof.verify(same_root, &[black_box(index as usize)], &[leaf], N));
            }),
            ("rs_merkle stock", &mut || {
                assert!(rs_proof.verify(rs_root, &[black_box(index as usize)], &[leaf], N));
            }),
        ],
    );
    paired(
        "generate one proof, 2^20 leaves",
        1000,
        60,
        &mut [
            ("quorate", &mut || {
                black_box(ours.inclusion_proof(black_box(index)).unwrap());
            }),
            ("rs_merkle same hash", &mut || {
                black_box(same.proof(&[black_box(index as usize)]));
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
    g.bench_function("generate/rs_merkle_same_sha256", |b| {
        b.iter(|| same.proof(&[black_box(index as usize)]))
    });
    g.bench_function("verify/quorate", |b| {
        b.iter(|| {
            proof
                .verify_tree_hash::<Sha256>(black_box(index), &leaf_hash, N as u64, &tree_hash)
                .unwrap()
        })
    });
    g.bench_function("verify/rs_merkle_same_sha256", |b| {
        b.iter(|| assert!(same_proof.verify(same_root, &[black_box(index as usize)], &[leaf], N)))
    });
    g.bench_function("verify/raw_20_parent_hashes", |b| {
        b.iter(|| raw_20_parents(black_box(&leaf_hash)))
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
    g.bench_function(BenchmarkId::new("generate", "rs_merkle_same_sha256"), |b| {
        b.iter(|| same.proof(black_box(&rs_picks)))
    });
    let multi = ours.multi_proof(&picks).unwrap();
    let rs_multi = same.proof(&rs_picks);
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
    g.bench_function(BenchmarkId::new("verify", "rs_merkle_same_sha256"), |b| {
        b.iter(|| assert!(rs_multi.verify(same_root, black_box(&rs_picks), &rs_picked, N)))
    });
    g.finish();
}

criterion_group!(benches, build, proofs);
criterion_main!(benches);
