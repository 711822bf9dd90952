//! The merkle-sync example over real TCP on 127.0.0.1: the replica ends with
//! exactly the signed tree, the rotten block is caught and fetched again from
//! the honest peer, and the sync costs far less than a full copy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use quorate_examples::merkle_sync::{self, Config, PEER_A, PEER_B};

fn config(faulty_peer: bool) -> Config {
    Config {
        blocks: 1024,
        block_len: 256,
        // 200 + 100 = 300 differing blocks: two batches of at most 256.
        changed: 200,
        appended: 100,
        faulty_peer,
        seed: 99,
    }
}

#[tokio::test]
async fn rotten_block_is_caught_and_refetched() {
    let config = config(true);
    let report = merkle_sync::run(&config).await.unwrap();
    print!("{}", report.render());
    assert!(report.roots_match(), "roots differ");
    assert_eq!(report.tree_size, config.blocks + config.appended);
    assert_eq!(report.missing, config.changed + config.appended);

    // Exactly one lie, by peer-b, naming the rotten block.
    let bad = report.rotten_block.unwrap();
    assert_eq!(report.caught.len(), 1);
    assert_eq!(report.caught[0].peer, PEER_B);
    assert!(
        report.caught[0].error.contains(&format!("index {bad}")),
        "{}",
        report.caught[0].error
    );
    // Everything came from the honest peer, each missing block once.
    assert_eq!(report.accepted_from.get(&PEER_B), None);
    assert_eq!(report.accepted_from.get(&PEER_A), Some(&report.missing));
    assert!(report.block_requests.get(&PEER_B) == Some(&1));

    // 300 of 1124 blocks differ: the wire carries well under a full copy
    // even with the rejected batch, and `have` cuts the proofs.
    let wire = report.bytes_sent + report.bytes_received;
    assert!(
        wire < report.full_copy * 3 / 4,
        "{wire} vs {}",
        report.full_copy
    );
    assert!(report.proof_hashes < report.plain_proof_hashes / 2);
}

#[tokio::test]
async fn honest_peers_share_the_work() {
    let config = config(false);
    let report = merkle_sync::run(&config).await.unwrap();
    assert!(report.roots_match(), "roots differ");
    assert!(report.caught.is_empty());
    assert_eq!(report.rotten_block, None);
    let a = report.accepted_from.get(&PEER_A).copied().unwrap_or(0);
    let b = report.accepted_from.get(&PEER_B).copied().unwrap_or(0);
    assert!(a > 0 && b > 0, "a {a}, b {b}");
    assert_eq!(a + b, report.missing);
    // Only the differing blocks travel: less than the full copy's bytes.
    let wire = report.bytes_sent + report.bytes_received;
    assert!(
        wire < report.full_copy / 2,
        "{wire} vs {}",
        report.full_copy
    );
}
