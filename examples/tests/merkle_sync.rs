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

mod manifest {
    //! The signed file list of `merkle-sync serve`: what a source may put in
    //! it is bounded and every path stays inside the target directory.
    use quorate_examples::merkle_sync::manifest::{Entry, Kind, Limits, Manifest};

    fn entry(path: &str, kind: Kind) -> Entry {
        Entry {
            path: path.to_owned(),
            kind,
            mode: 0o644,
        }
    }

    fn file(path: &str, size: u64) -> Entry {
        entry(path, Kind::File { size })
    }

    fn dir(path: &str) -> Entry {
        entry(path, Kind::Dir)
    }

    fn manifest(entries: Vec<Entry>) -> Manifest {
        Manifest {
            block_size: 4096,
            entries,
        }
    }

    #[test]
    fn round_trips_and_lays_out_blocks() {
        let m = manifest(vec![
            dir("a"),
            file("a-b", 0),
            file("a/x", 4097),
            dir("a/y"),
            file("a/y/z", 4096),
        ]);
        let back = Manifest::decode(&m.encode(), &Limits::default()).unwrap();
        assert_eq!(back, m);
        // Leaf 0 is the manifest; a-b has no blocks, a/x two, a/y/z one.
        let layout: Vec<(&str, u64, u64)> = back
            .layout()
            .iter()
            .map(|(e, size, first)| (e.path.as_str(), *size, *first))
            .collect();
        assert_eq!(
            layout,
            vec![("a-b", 0, 1), ("a/x", 4097, 1), ("a/y/z", 4096, 3)]
        );
        assert_eq!(back.tree_size(), 4);
    }

    #[test]
    fn refuses_paths_that_leave_the_target() {
        for bad in [
            vec![file("../etc/passwd", 1)],
            vec![file("/etc/passwd", 1)],
            vec![dir("a"), file("a/../../x", 1)],
            vec![dir("a"), file("a//x", 1)],
            vec![file("./x", 1)],
            vec![file("", 1)],
            vec![file("x\0y", 1)],
            vec![dir(".merkle-sync"), file(".merkle-sync/state", 1)],
            // A parent that is not listed, or is a file.
            vec![file("a/x", 1)],
            vec![file("a", 1), file("a/x", 1)],
            // Out of order, repeated.
            vec![file("b", 1), file("a", 1)],
            vec![file("a", 1), file("a", 1)],
        ] {
            let what = format!("{bad:?}");
            assert!(
                Manifest::decode(&manifest(bad).encode(), &Limits::default()).is_err(),
                "accepted {what}"
            );
        }
    }

    #[test]
    fn refuses_what_is_over_a_limit() {
        let limits = Limits {
            max_manifest_bytes: 1 << 20,
            max_entries: 3,
            max_path_len: 8,
            max_tree_bytes: 100,
        };
        let ok = manifest(vec![file("a", 50), file("b", 50)]);
        assert!(Manifest::decode(&ok.encode(), &limits).is_ok());
        for bad in [
            vec![file("a", 50), file("b", 51)],
            vec![file("a", u64::MAX), file("b", 2)],
            vec![file("a", 1), file("b", 1), file("c", 1), file("d", 1)],
            vec![file("ninechars", 1)],
        ] {
            let what = format!("{bad:?}");
            assert!(
                Manifest::decode(&manifest(bad).encode(), &limits).is_err(),
                "accepted {what}"
            );
        }
        let tiny = Limits {
            max_manifest_bytes: 16,
            ..limits
        };
        assert!(Manifest::decode(&ok.encode(), &tiny).is_err());
    }

    #[test]
    fn every_truncation_and_bad_block_size_is_an_error() {
        let m = manifest(vec![dir("a"), file("a/x", 10_000)]);
        let bytes = m.encode();
        for len in 0..bytes.len() {
            assert!(
                Manifest::decode(&bytes[..len], &Limits::default()).is_err(),
                "a {len}-byte prefix decoded"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Manifest::decode(&longer, &Limits::default()).is_err());
        for block_size in [0, 1, 511, (64 << 10) + 1] {
            let m = Manifest {
                block_size,
                entries: vec![file("x", 1)],
            };
            assert!(
                Manifest::decode(&m.encode(), &Limits::default()).is_err(),
                "block size {block_size} accepted"
            );
        }
    }
}
