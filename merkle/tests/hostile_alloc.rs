//! Every decoder of this crate — `from_bytes` of the three proofs, of
//! [`SignedRoot`] and of the sync [`Message`], and with the `serde`
//! feature their `Deserialize` — fed huge LEB128 counts and lengths
//! (`u64::MAX`, `2^63`, one past each cap, one more than the input holds),
//! nested counts (a block list whose blocks carry lengths and proofs),
//! input truncated after a large header, and random bytes, returns a
//! value or a typed error, never panics, and never allocates on a count it
//! has not read the bytes for.
//!
//! **The cap.** Every byte allocated while one input of `n` bytes is
//! decoded, in all, is at most `64 × n + 4 KiB`.
//!
//! Counted by a global allocator that counts every thread, so this binary
//! has one test, which runs the cases one after another.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use quorate_merkle::signed::MAX_SIGNATURE_LEN;
use quorate_merkle::sync::{
    Block, BlockRef, MAX_BLOCK_LEN, MAX_BLOCKS_PER_REQUEST, MAX_NODES_PER_MESSAGE, Message,
    RequestId,
};
use quorate_merkle::{
    ConsistencyProof, Error, Hash, InclusionProof, MerkleTree, MultiProof, Sha256, SignedRoot,
    Signer,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes decoding `n` input bytes may cost: 64 per byte and 4 KiB.
fn cap(n: usize) -> usize {
    64 * n + 4096
}

/// The bytes allocated while `f` runs, in all. The test harness's own
/// thread may allocate meanwhile (the counter counts every thread), so `f`
/// runs twice and the lesser count is kept: an allocation of `f`'s shows
/// in both.
fn allocated<T>(f: impl Fn() -> T) -> (T, usize) {
    let once = || {
        let region = Region::new(GLOBAL);
        let out = f();
        let change = region.change();
        let grown = usize::try_from(change.bytes_reallocated).unwrap_or(0);
        (out, change.bytes_allocated + grown)
    };
    let (_, first) = once();
    let (out, second) = once();
    (out, first.min(second))
}

type Decoder = fn(&[u8]) -> Result<(), Error>;

const DECODERS: &[(&str, Decoder)] = &[
    ("InclusionProof", |b| {
        InclusionProof::from_bytes(b).map(drop)
    }),
    ("MultiProof", |b| MultiProof::from_bytes(b).map(drop)),
    ("ConsistencyProof", |b| {
        ConsistencyProof::from_bytes(b).map(drop)
    }),
    ("SignedRoot", |b| SignedRoot::from_bytes(b).map(drop)),
    ("Message", |b| Message::from_bytes(b).map(drop)),
];

/// Runs every decoder on `input`, checking the cap; how many accepted it.
fn decode_all(case: &str, input: &[u8]) -> usize {
    let mut accepted = 0;
    for (name, decode) in DECODERS {
        let (out, bytes) = allocated(|| decode(input));
        assert!(
            bytes <= cap(input.len()),
            "{case}: {name} allocated {bytes} bytes for {} input bytes ({out:?})",
            input.len()
        );
        accepted += usize::from(out.is_ok());
    }
    accepted
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// A stand-in signature scheme: 64 bytes, like Ed25519.
struct FixedSigner;

impl Signer for FixedSigner {
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let mut s = message.to_vec();
        s.resize(64, 0xaa);
        s
    }
}

/// The valid encodings the hostile inputs start from.
fn samples() -> Vec<Vec<u8>> {
    let tree = MerkleTree::<Sha256>::from_leaves((0..100u32).map(|i| i.to_be_bytes()));
    let signed = SignedRoot::sign(100, tree.root(), &FixedSigner);
    let block = Block {
        index: 7,
        data: vec![9; 500],
        proof: tree.inclusion_proof(7).unwrap().hashes().to_vec(),
    };
    vec![
        tree.inclusion_proof(42).unwrap().to_bytes(),
        tree.multi_proof(&[1, 2, 50, 99]).unwrap().to_bytes(),
        tree.consistency_proof(37, 100).unwrap().to_bytes(),
        signed.to_bytes(),
        Message::GetSignedRoot.to_bytes(),
        Message::SignedRoot(signed).to_bytes(),
        Message::GetNodes {
            id: RequestId(3),
            nodes: (0..100).collect(),
        }
        .to_bytes(),
        Message::Nodes {
            id: RequestId(4),
            hashes: vec![Hash([5; 32]); 20],
        }
        .to_bytes(),
        Message::GetBlocks {
            id: RequestId(u64::MAX),
            blocks: vec![BlockRef::Index(1), BlockRef::Hash(Hash([1; 32]))],
            have: vec![1, 2, 3],
        }
        .to_bytes(),
        Message::Blocks {
            id: RequestId(6),
            blocks: vec![Some(block), None],
        }
        .to_bytes(),
    ]
}

#[test]
fn hostile_bytes_cost_at_most_the_cap() {
    let samples = samples();
    for sample in &samples {
        assert_eq!(decode_all("sample", sample), 1, "{sample:?}");
    }
    let huge = [
        u64::MAX,
        1 << 63,
        u64::from(u32::MAX),
        MAX_NODES_PER_MESSAGE + 1,
        MAX_NODES_PER_MESSAGE,
        MAX_BLOCKS_PER_REQUEST + 1,
        MAX_BLOCK_LEN + 1,
        MAX_BLOCK_LEN,
        MAX_SIGNATURE_LEN + 1,
        67,
    ];
    // Every tag byte (proof tags and message tags overlap), an id, then a
    // huge count; then nothing, a few bytes, or a plausible first item.
    for tag in 0..=7u8 {
        for &count in &huge {
            for tail in [&[][..], &[1, 1, 1][..], &[1, 0, 0x80, 0x80, 0x04][..]] {
                for id in [&[][..], &[9][..]] {
                    let input = [&[tag][..], id, &varint(count), tail].concat();
                    assert_eq!(decode_all("huge count", &input), 0, "{input:?}");
                }
                // Nested: a block list of one block whose length (or, after
                // an empty block, proof count) is huge.
                let block = [&[6, 1, 1, 1, 0][..], &varint(count), tail].concat();
                assert_eq!(decode_all("huge block length", &block), 0);
                let proof = [&[6, 1, 1, 1, 0, 0][..], &varint(count), tail].concat();
                decode_all("huge proof count", &proof);
            }
        }
    }
    // A signed root whose signature length is huge, after its 40 bytes.
    for &len in &huge {
        let input = [&[0u8; 40][..], &varint(len), &[1; 10]].concat();
        assert_eq!(decode_all("huge signature", &input), 0);
        let message = [&[2u8][..], &input].concat();
        assert_eq!(decode_all("huge signature", &message), 0);
    }
    // Over-long and overflowing varints after every tag.
    for tag in 0..=7u8 {
        for bad in [&[0x80u8; 11][..], &[0xff; 10][..], &[0x80, 0x00][..]] {
            let input = [&[tag][..], bad].concat();
            assert_eq!(decode_all("bad varint", &input), 0);
        }
    }
    for sample in &samples {
        // Truncated anywhere.
        for cut in 0..sample.len() {
            decode_all("truncated", &sample[..cut]);
        }
        // Every byte in turn set to 0xff (a count or length grown huge).
        for at in 0..sample.len() {
            let mut forged = sample.clone();
            forged[at] = 0xff;
            decode_all("forged byte", &forged);
        }
    }

    let mut runner = TestRunner::new(Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(0..8u8, proptest::collection::vec(any::<u8>(), 0..128)),
            |(tag, rest)| {
                decode_all("random", &rest);
                decode_all("random after a tag", &[&[tag][..], &rest].concat());
                Ok(())
            },
        )
        .unwrap();

    #[cfg(feature = "serde")]
    serde_cases::run(&samples);
}

#[cfg(feature = "serde")]
mod serde_cases {
    use super::*;
    use serde::de::DeserializeOwned;

    fn check<T: DeserializeOwned>(name: &str, doc: &str) -> bool {
        let (out, bytes) = allocated(|| serde_json::from_str::<T>(doc).is_ok());
        assert!(
            bytes <= cap(doc.len()),
            "{name}: {bytes} bytes allocated for a {} byte document",
            doc.len()
        );
        out
    }

    fn check_all(doc: &str) -> usize {
        [
            check::<InclusionProof>("InclusionProof", doc),
            check::<MultiProof>("MultiProof", doc),
            check::<ConsistencyProof>("ConsistencyProof", doc),
            check::<SignedRoot>("SignedRoot", doc),
            check::<Message>("Message", doc),
            check::<Hash>("Hash", doc),
        ]
        .into_iter()
        .filter(|accepted| *accepted)
        .count()
    }

    pub(super) fn run(samples: &[Vec<u8>]) {
        let mut docs = Vec::new();
        for sample in samples {
            if let Ok(m) = Message::from_bytes(sample) {
                docs.push(serde_json::to_string(&m).unwrap());
            }
            if let Ok(p) = MultiProof::from_bytes(sample) {
                docs.push(serde_json::to_string(&p).unwrap());
            }
        }
        for doc in &docs {
            assert!(check_all(doc) >= 1, "{doc}");
            for cut in (0..doc.len()).step_by(7) {
                check_all(&doc[..cut]);
            }
        }
        for doc in [
            "[".repeat(100_000),
            format!(r#"{{"hashes":[{}"#, "[1,2,3],".repeat(10_000)),
            format!(
                r#"{{"tree_size":1,"root":[1],"signature":[{}"#,
                "1,".repeat(50_000)
            ),
            format!(r#"{{"hashes":[[{}]]}}"#, "7,".repeat(50_000)),
        ] {
            assert_eq!(check_all(&doc), 0);
        }
        let mut runner = TestRunner::new(Config {
            cases: 256,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&proptest::collection::vec(any::<u8>(), 0..128), |bytes| {
                check_all(&String::from_utf8_lossy(&bytes));
                Ok(())
            })
            .unwrap();
    }
}
