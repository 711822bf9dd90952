//! Deterministic, seeded simulations of the sync protocol and property tests
//! of diff. Set `QUORATE_SIM_SEEDS=N` to run more seeds; a failure prints
//! its seed.
#![cfg(feature = "sha2")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use quorate_merkle::{
    Error, Hash, MerkleHasher, MerkleTree, Sha256,
    diff::{RemoteDiff, diff},
    sync::{Event, Message, Receiver, Sender},
};
use std::{ops::Range, time::Duration};

mod common;
use common::{TestKey, seeds};

fn block(rng: &mut fastrand::Rng) -> Vec<u8> {
    let len = rng.usize(0..40);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// A remote block set and a local one related to it the ways files drift:
/// identical, edited in places, shifted, truncated, extended, unrelated, empty.
fn scenario(rng: &mut fastrand::Rng) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let n = rng.usize(0..300);
    let remote: Vec<Vec<u8>> = (0..n).map(|_| block(rng)).collect();
    let mut local = remote.clone();
    match rng.u8(0..7) {
        0 => {}
        1 => {
            for _ in 0..rng.usize(1..6) {
                if !local.is_empty() {
                    let i = rng.usize(..local.len());
                    local[i] = block(rng);
                }
            }
        }
        2 => {
            for _ in 0..rng.usize(1..4) {
                local.insert(0, block(rng));
            }
        }
        3 => local.truncate(rng.usize(0..=n)),
        4 => local.extend((0..rng.usize(1..30)).map(|_| block(rng))),
        5 => local = (0..rng.usize(0..300)).map(|_| block(rng)).collect(),
        _ => local.clear(),
    }
    (remote, local)
}

/// How the harness tampers with what the sender says.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Liar {
    Honest,
    /// Flip one byte of one block's data, once.
    CorruptBlock,
    /// Flip one proof or node hash, once.
    CorruptHash,
}

struct Outcome {
    lied: bool,
    caught: Vec<Error>,
    proof_hashes: usize,
    blocks_sent: usize,
}

/// Runs one sync. The network drops each message with probability `loss`;
/// when nothing is moving the receiver is told the connection dropped and
/// resumes. Panics (with the seed) if it does not converge.
fn run(seed: u64, remote: Vec<Vec<u8>>, local: Vec<Vec<u8>>, liar: Liar, loss: f64) -> Outcome {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let key = TestKey(7);
    let mut sender = Sender::<Sha256>::new(remote.clone(), &key);
    let mut receiver = Receiver::<Sha256, _>::new(local, key.clone());
    let mut out = Outcome {
        lied: false,
        caught: Vec::new(),
        proof_hashes: 0,
        blocks_sent: 0,
    };
    let mut lied = false;
    let mut now = Duration::ZERO;
    for _step in 0..10_000 {
        now += Duration::from_millis(1);
        let mut moved = false;
        while let Some(m) = receiver.poll_transmit(now) {
            moved = true;
            // Every message survives its own encoding.
            let m = Message::from_bytes(&m.to_bytes()).unwrap();
            if rng.f64() >= loss {
                sender
                    .handle(m)
                    .unwrap_or_else(|e| panic!("seed {seed}: honest receiver refused: {e}"));
            }
        }
        while let Some(mut m) = sender.poll_transmit() {
            moved = true;
            if rng.f64() < loss {
                continue;
            }
            if !lied && tamper(&mut m, liar, &mut rng) {
                lied = true;
                out.lied = true;
            }
            if let Message::Blocks { blocks, .. } = &m {
                for b in blocks.iter().flatten() {
                    out.proof_hashes += b.proof.len();
                    out.blocks_sent += 1;
                }
            }
            if let Err(e) = receiver.handle(m) {
                assert!(
                    liar != Liar::Honest,
                    "seed {seed}: honest sender rejected: {e}"
                );
                out.caught.push(e);
                // Drop the liar's connection: what it still has queued is lost.
                receiver.on_disconnect();
                while sender.poll_transmit().is_some() {}
                break;
            }
        }
        if receiver.is_complete() {
            let got: Vec<Vec<u8>> = receiver
                .blocks()
                .unwrap()
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect();
            assert_eq!(got, remote, "seed {seed}: synced blocks differ");
            let tree = MerkleTree::<Sha256>::from_leaves(&got);
            assert_eq!(tree.root(), sender.tree().root(), "seed {seed}");
            if liar != Liar::Honest && lied {
                assert!(!out.caught.is_empty(), "seed {seed}: a lie went unnoticed");
            }
            return out;
        }
        if !moved {
            // Nothing in transit: let the lost requests time out.
            now = now.max(
                receiver
                    .poll_timeout()
                    .expect("stalled with nothing outstanding"),
            );
            receiver.handle_timeout(now);
        }
    }
    panic!("seed {seed}: sync did not converge: {receiver:?}");
}

/// Applies the lie, if this message offers a chance to.
fn tamper(m: &mut Message, liar: Liar, rng: &mut fastrand::Rng) -> bool {
    match (liar, m) {
        (Liar::CorruptBlock, Message::Blocks { blocks, .. }) => {
            let Some(b) = blocks.iter_mut().flatten().next() else {
                return false;
            };
            if b.data.is_empty() {
                b.data.push(1);
            } else {
                let i = rng.usize(..b.data.len());
                b.data[i] ^= 1 << rng.u8(0..8);
            }
            true
        }
        (Liar::CorruptHash, Message::Nodes { hashes, .. }) if !hashes.is_empty() => {
            let i = rng.usize(..hashes.len());
            hashes[i].0[rng.usize(..32)] ^= 1 << rng.u8(0..8);
            true
        }
        (Liar::CorruptHash, Message::Blocks { blocks, .. }) => {
            let Some(b) = blocks.iter_mut().flatten().find(|b| !b.proof.is_empty()) else {
                return false;
            };
            let i = rng.usize(..b.proof.len());
            b.proof[i].0[rng.usize(..32)] ^= 1 << rng.u8(0..8);
            true
        }
        _ => false,
    }
}

/// Runs every seed's scenario with this liar and loss rate.
fn run_seeds(liar: Liar, loss: f64) -> Vec<Outcome> {
    (0..seeds())
        .map(|seed| {
            let (remote, local) = scenario(&mut fastrand::Rng::with_seed(seed));
            run(seed, remote, local, liar, loss)
        })
        .collect()
}

#[test]
fn sync_converges_between_random_block_sets() {
    run_seeds(Liar::Honest, 0.0);
}

#[test]
fn sync_resumes_over_a_lossy_network() {
    run_seeds(Liar::Honest, 0.3);
}

#[test]
fn a_corrupting_sender_is_caught_and_sync_still_converges() {
    let mut lies = 0;
    for liar in [Liar::CorruptBlock, Liar::CorruptHash] {
        for (seed, out) in run_seeds(liar, 0.0).iter().enumerate() {
            lies += u64::from(out.lied);
            for e in &out.caught {
                assert!(
                    matches!(
                        e,
                        Error::Forged { .. } | Error::ProofLength { .. } | Error::RootMismatch
                    ),
                    "seed {seed}: unexpected error kind {e:?}"
                );
            }
        }
    }
    // Most scenarios give the liar a chance (identical sets send no blocks).
    assert!(
        lies >= seeds(),
        "only {lies} lies told in {} runs",
        2 * seeds()
    );
}

#[test]
fn have_announcements_keep_proofs_small() {
    // Empty receiver, 1024 blocks: audit paths alone would be 10 hashes a
    // block; announcing held nodes sends each tree node about once.
    let remote: Vec<Vec<u8>> = (0..1024u32).map(|i| i.to_le_bytes().to_vec()).collect();
    let out = run(1, remote, Vec::new(), Liar::Honest, 0.0);
    assert_eq!(out.blocks_sent, 1024);
    eprintln!("{} proof hashes for 1024 blocks", out.proof_hashes);
    assert!(
        out.proof_hashes <= 2 * 1024,
        "{} proof hashes for 1024 blocks",
        out.proof_hashes
    );
}

#[test]
fn edited_blocks_are_found_by_diff_and_moved_blocks_reused() {
    let remote: Vec<Vec<u8>> = (0..500u32).map(|i| i.to_le_bytes().to_vec()).collect();
    let mut local = remote.clone();
    local[17] = b"edited".to_vec();
    local.swap(100, 200); // moved data: both blocks still held locally
    let key = TestKey(1);
    let mut sender = Sender::<Sha256>::new(remote.clone(), &key);
    let mut receiver = Receiver::<Sha256, _>::new(local, key);
    let mut events = Vec::new();
    while !receiver.is_complete() {
        let m = receiver
            .poll_transmit(Duration::ZERO)
            .expect("receiver stalled");
        sender.handle(m).unwrap();
        while let Some(reply) = sender.poll_transmit() {
            receiver.handle(reply).unwrap();
        }
        events.extend(std::iter::from_fn(|| receiver.poll_event()));
    }
    assert!(
        events.contains(&Event::DiffDone {
            missing: 1,
            reused: 2
        }),
        "{events:?}"
    );
    assert!(events.contains(&Event::BlockAccepted { index: 17 }));
    let got: Vec<&[u8]> = receiver.blocks().unwrap();
    assert!(got.iter().zip(&remote).all(|(a, b)| *a == b.as_slice()));
}

#[test]
fn blocks_by_content_hash() {
    let remote: Vec<Vec<u8>> = (0..40u32).map(|i| i.to_le_bytes().to_vec()).collect();
    let key = TestKey(2);
    let mut sender = Sender::<Sha256>::new(remote.clone(), &key);
    let mut receiver = Receiver::<Sha256, _>::new(remote.clone(), key);
    receiver.request_by_hash(Sha256::hash_leaf(&remote[9]));
    receiver.request_by_hash(Sha256::hash_leaf(b"nowhere"));
    let mut events = Vec::new();
    for _ in 0..20 {
        while let Some(m) = receiver.poll_transmit(Duration::ZERO) {
            sender.handle(m).unwrap();
        }
        while let Some(m) = sender.poll_transmit() {
            receiver.handle(m).unwrap();
        }
        events.extend(std::iter::from_fn(|| receiver.poll_event()));
    }
    assert!(
        events.contains(&Event::BlockAccepted { index: 9 }),
        "{events:?}"
    );
    assert!(events.contains(&Event::NotFound(Sha256::hash_leaf(b"nowhere"))));
    assert!(receiver.is_complete());
}

#[test]
fn a_bad_signature_is_refused() {
    let remote = vec![b"a".to_vec()];
    let mut sender = Sender::<Sha256>::new(remote, &TestKey(1));
    let mut receiver = Receiver::<Sha256, _>::new(Vec::new(), TestKey(2));
    sender
        .handle(receiver.poll_transmit(Duration::ZERO).unwrap())
        .unwrap();
    let err = receiver
        .handle(sender.poll_transmit().unwrap())
        .unwrap_err();
    assert_eq!(err, Error::BadSignature { tree_size: 1 });
    assert!(receiver.signed_root().is_none());
    // Unasked answers are refused too.
    let stray = Message::Nodes {
        id: quorate_merkle::sync::RequestId(99),
        hashes: vec![],
    };
    assert!(matches!(
        receiver.handle(stray),
        Err(Error::Unexpected { .. })
    ));
}

#[cfg(feature = "ed25519")]
#[test]
fn sync_with_ed25519_signed_roots() {
    use quorate_merkle::signed::Ed25519Signer;
    let signer = Ed25519Signer::from_secret_bytes(&[42; 32]);
    let remote: Vec<Vec<u8>> = (0..33u8).map(|i| vec![i; 5]).collect();
    let mut sender = Sender::<Sha256>::new(remote.clone(), &signer);
    let mut receiver = Receiver::<Sha256, _>::new(Vec::new(), signer.verifier());
    for _ in 0..50 {
        while let Some(m) = receiver.poll_transmit(Duration::ZERO) {
            sender.handle(m).unwrap();
        }
        while let Some(m) = sender.poll_transmit() {
            receiver.handle(m).unwrap();
        }
    }
    assert!(receiver.is_complete());
    assert_eq!(receiver.into_blocks().unwrap(), remote);
    let mut forged = sender.signed_root().clone();
    forged.tree_size += 1;
    assert!(forged.verify(&signer.verifier()).is_err());
}

fn naive_diff(a: &[Vec<u8>], b: &[Vec<u8>]) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for i in 0..a.len().max(b.len()) {
        if a.get(i) != b.get(i) {
            let i = i as u64;
            match out.last_mut() {
                Some(r) if r.end == i => r.end = i + 1,
                _ => out.push(i..i + 1),
            }
        }
    }
    out
}

/// Answers a remote diff's requests from `remote`, counting fetched nodes.
fn remote_diff(
    local: &MerkleTree<Sha256>,
    remote: &MerkleTree<Sha256>,
) -> (Vec<Range<u64>>, usize) {
    let mut d = RemoteDiff::<Sha256>::new(remote.len(), remote.root());
    let mut fetched = 0;
    while let Some(req) = d.poll_request() {
        fetched += req.len();
        let hashes: Vec<Hash> = req.iter().map(|&i| remote.node(i).unwrap()).collect();
        d.handle_nodes(local, &hashes).unwrap();
    }
    assert!(d.is_done());
    (d.differing(local), fetched)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn diff_finds_exactly_the_differing_leaves(seed in any::<u64>()) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let (a, b) = scenario(&mut rng);
        let (ta, tb) = (MerkleTree::<Sha256>::from_leaves(&a), MerkleTree::<Sha256>::from_leaves(&b));
        let expected = naive_diff(&a, &b);
        prop_assert_eq!(&diff(&ta, &tb), &expected);
        prop_assert_eq!(&diff(&tb, &ta), &expected);
        let (remote, fetched) = remote_diff(&tb, &ta);
        prop_assert_eq!(&remote, &expected);
        // O(d log n): at most two nodes per level per differing leaf, plus
        // the full roots.
        let d: u64 = expected.iter().map(|r| r.end - r.start).sum();
        let levels = 64 - (ta.len().max(1)).leading_zeros() as usize;
        prop_assert!(fetched <= 2 * d as usize * levels + levels, "fetched {} for d={}", fetched, d);
    }

    #[test]
    fn remote_diff_rejects_forged_nodes(seed in any::<u64>()) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let n = rng.u64(1..200);
        let remote = MerkleTree::<Sha256>::from_leaves((0..n).map(|i| i.to_le_bytes()));
        let local = MerkleTree::<Sha256>::from_leaves((0..n).map(|i| (i ^ 1).to_le_bytes()));
        let mut d = RemoteDiff::<Sha256>::new(n, remote.root());
        let mut rounds = 0;
        let lie_at = rng.usize(0..8);
        while let Some(req) = d.poll_request() {
            let mut hashes: Vec<Hash> = req.iter().map(|&i| remote.node(i).unwrap()).collect();
            if rounds == lie_at {
                let i = rng.usize(..hashes.len());
                hashes[i].0[0] ^= 0x80;
                let before = format!("{d:?}");
                let forged = matches!(d.handle_nodes(&local, &hashes), Err(Error::Forged { .. }));
                prop_assert!(forged);
                prop_assert_eq!(before, format!("{d:?}"), "state changed on error");
                break;
            }
            d.handle_nodes(&local, &hashes).unwrap();
            rounds += 1;
        }
    }
}

#[test]
fn lost_requests_are_asked_again_after_the_timeout() {
    let remote: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i]).collect();
    let key = TestKey(3);
    let mut sender = Sender::<Sha256>::new(remote.clone(), &key);
    let mut receiver = Receiver::<Sha256, _>::new(Vec::new(), key);
    receiver.set_request_timeout(Duration::from_secs(2));
    let t0 = Duration::from_secs(100);
    let get_root = receiver.poll_transmit(t0).unwrap();
    assert_eq!(get_root, Message::GetSignedRoot);
    // Lost. Nothing more is sent until the timeout fires.
    assert_eq!(receiver.poll_transmit(t0), None);
    assert_eq!(receiver.poll_timeout(), Some(t0 + Duration::from_secs(2)));
    receiver.handle_timeout(t0 + Duration::from_secs(1));
    assert_eq!(receiver.poll_transmit(t0 + Duration::from_secs(1)), None);
    receiver.handle_timeout(t0 + Duration::from_secs(2));
    let again = receiver.poll_transmit(t0 + Duration::from_secs(2)).unwrap();
    assert_eq!(again, Message::GetSignedRoot);
    // The late answer to the first request is as good as the second's: a
    // root is a root. Block answers are matched by id instead.
    sender.handle(again).unwrap();
    receiver.handle(sender.poll_transmit().unwrap()).unwrap();
    let t1 = t0 + Duration::from_secs(3);
    // The diff asks for the remote full roots first.
    let get_nodes = receiver.poll_transmit(t1).unwrap();
    assert!(matches!(get_nodes, Message::GetNodes { .. }));
    sender.handle(get_nodes).unwrap();
    receiver.handle(sender.poll_transmit().unwrap()).unwrap();
    let get_blocks = receiver.poll_transmit(t1).unwrap();
    assert!(matches!(get_blocks, Message::GetBlocks { .. }));
    sender.handle(get_blocks).unwrap();
    let late = sender.poll_transmit().unwrap();
    receiver.handle_timeout(t1 + Duration::from_secs(2));
    assert!(matches!(
        receiver.handle(late),
        Err(Error::Unexpected { .. })
    ));
    assert!(!receiver.is_complete());
    // Asked again, answered, done.
    let retry = receiver.poll_transmit(t1 + Duration::from_secs(2)).unwrap();
    sender.handle(retry).unwrap();
    receiver.handle(sender.poll_transmit().unwrap()).unwrap();
    assert!(receiver.is_complete());
    assert_eq!(receiver.into_blocks().unwrap(), remote);
}
