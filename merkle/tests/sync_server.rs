//! One [`Server`] serving many receivers costs one tree: sessions share it,
//! and answering every peer's sync hashes nothing more on the serving side.
#![cfg(feature = "sha2")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use quorate_merkle::{
    Error, Hash, MerkleHasher, MerkleTree, Sha256, SignedRoot,
    sync::{Receiver, Sender, Server},
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod common;
use common::TestKey;

/// Hashes this file's server-side hasher has computed.
static SERVER_HASHES: AtomicU64 = AtomicU64::new(0);

/// SHA-256 that counts its calls: the serving side's hasher.
struct Counting;

impl MerkleHasher for Counting {
    fn hash_parts(parts: &[&[u8]]) -> Hash {
        SERVER_HASHES.fetch_add(1, Ordering::Relaxed);
        Sha256::hash_parts(parts)
    }
}

fn blocks(n: u32, version: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| [&i.to_le_bytes()[..], &[version]].concat())
        .collect()
}

/// Drives one receiver against one session to completion.
fn sync<P>(sender: &mut Sender<Counting, P>, receiver: &mut Receiver<Sha256, TestKey>) {
    for _ in 0..1000 {
        if receiver.is_complete() {
            return;
        }
        while let Some(m) = receiver.poll_transmit(Duration::ZERO) {
            sender.handle(m).unwrap();
        }
        while let Some(m) = sender.poll_transmit() {
            receiver.handle(m).unwrap();
        }
    }
    panic!("sync did not finish");
}

#[test]
fn many_peers_share_one_tree_and_cost_no_more_hashing() {
    let remote = blocks(500, 2);
    let server = Server::<Counting>::new(remote.clone(), &TestKey(3));
    let built = SERVER_HASHES.load(Ordering::Relaxed);
    // 500 leaves, 499 parents, one size-bound root, at least.
    assert!(built >= 1000, "{built}");

    let mut sessions: Vec<Sender<Counting, u32>> = (0..8).map(|p| server.session(p)).collect();
    for (p, session) in sessions.iter_mut().enumerate() {
        assert_eq!(*session.peer(), p as u32);
        assert!(
            std::ptr::eq(session.tree(), server.tree()),
            "session {p} has its own tree"
        );
        // Receivers that differ: empty, stale in places, truncated.
        let mut local = blocks(500, 2);
        match p % 3 {
            0 => local.clear(),
            1 => local.iter_mut().step_by(7).for_each(|b| b.push(0)),
            _ => local.truncate(100 * p),
        }
        let mut receiver = Receiver::<Sha256, _>::new(local, TestKey(3));
        sync(session, &mut receiver);
        assert_eq!(receiver.into_blocks().unwrap(), remote, "peer {p}");
    }
    // Serving eight peers hashed nothing beyond the one build.
    assert_eq!(SERVER_HASHES.load(Ordering::Relaxed), built);
    // A cloned server and a session's server are the same tree too.
    assert!(std::ptr::eq(
        server.clone().tree(),
        sessions[3].server().tree()
    ));
}

#[test]
fn a_signed_root_for_other_blocks_is_its_own_error() {
    let v1 = blocks(10, 1);
    let tree = MerkleTree::<Sha256>::from_leaves(&v1);
    let signed = SignedRoot::sign(tree.len(), tree.root(), &TestKey(1));
    assert!(Server::<Sha256>::with_signed_root(v1.clone(), signed.clone()).is_ok());
    // Same size, other contents.
    assert_eq!(
        Server::<Sha256>::with_signed_root(blocks(10, 2), signed.clone()).unwrap_err(),
        Error::SignedRootMismatch {
            signed_size: 10,
            size: 10
        }
    );
    // Other size.
    assert_eq!(
        Sender::<Sha256>::with_signed_root(blocks(12, 1), signed).unwrap_err(),
        Error::SignedRootMismatch {
            signed_size: 10,
            size: 12
        }
    );
}
