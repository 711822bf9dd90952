//! Every decoder of this crate that reads bytes from outside — the wire
//! codec ([`codec::decode`] and [`codec::decode_batch`], feature `codec`),
//! [`Configuration::decode`],
//! the simulator's [`KvCommand::decode`] and `KvStore` snapshots (feature
//! `sim`), and with the `serde` feature the `Deserialize` of messages,
//! configurations, entries and hard state — fed huge declared lengths and
//! counts (`u32::MAX`, one more than the input holds), nested counts (the
//! voter, learner, outgoing and witness sets of a snapshot; commands of a
//! forwarded proposal), input truncated after a large header, and random
//! bytes, returns a value or a typed error (`None` for the `Option`
//! decoders), never panics, and never allocates on a count it has not read
//! the bytes for.
//!
//! **The cap.** Every byte allocated while one input of `n` bytes is
//! decoded, in all, is at most `64 × n + 4 KiB`.
//!
//! Counted by a global allocator that counts every thread, so this binary
//! has one test, which runs the cases one after another.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use quorate_raft_core::codec::{self, CodecError};
use quorate_raft_core::multi::{Batch, GroupId};
use quorate_raft_core::sim::StateMachine;
use quorate_raft_core::sim::kv::{ClientSeq, KvCommand, KvOp, KvStore};
use quorate_raft_core::{
    AppendOutcome, Configuration, Entry, LogIndex, Message, MessageBody, NodeId, SnapshotMeta, Term,
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

/// Runs every decoder on `input`, checking the cap; whether the wire codec
/// accepted it.
fn decode_all(case: &str, input: &[u8]) -> Result<Message, CodecError> {
    let src = Bytes::copy_from_slice(input);
    // Shares the buffer now, so that the clones below allocate nothing.
    drop(src.clone());
    let check = |name: &str, bytes: usize| {
        assert!(
            bytes <= cap(input.len()),
            "{case}: {name} allocated {bytes} bytes for {} input bytes",
            input.len()
        );
    };
    let (message, bytes) = allocated(|| codec::decode(src.clone()));
    check("codec::decode", bytes);
    let (_, bytes) = allocated(|| codec::decode_batch(src.clone(), codec::MAX_BATCH_MESSAGES));
    check("codec::decode_batch", bytes);
    let (_, bytes) = allocated(|| Configuration::decode(input));
    check("Configuration::decode", bytes);
    let (_, bytes) = allocated(|| KvCommand::decode(input));
    check("KvCommand::decode", bytes);
    let (_, bytes) = allocated(|| {
        let mut store = KvStore::default();
        store.restore(&src);
        store
    });
    check("KvStore::restore", bytes);
    message
}

fn message(body: MessageBody) -> Message {
    Message {
        from: NodeId(1),
        to: NodeId(u64::MAX),
        term: Term(7),
        body,
    }
}

fn encoded(m: &Message) -> Vec<u8> {
    let mut buf = BytesMut::new();
    codec::encode(m, &mut buf);
    buf.to_vec()
}

/// Valid messages of every kind the codec has, and what they encode to.
fn samples() -> Vec<(Message, Vec<u8>)> {
    let data = Bytes::from(vec![5u8; 2000]);
    let configuration = Configuration::new((1..=50).map(NodeId))
        .with_learners((60..70).map(NodeId))
        .with_witnesses([NodeId(3)]);
    let bodies = vec![
        MessageBody::RequestVote {
            last_log_index: LogIndex(u64::MAX),
            last_log_term: Term(1),
            leadership_transfer: true,
        },
        MessageBody::RequestVoteResponse { granted: true },
        MessageBody::PreVote {
            last_log_index: LogIndex(3),
            last_log_term: Term(2),
        },
        MessageBody::PreVoteResponse { granted: false },
        MessageBody::AppendEntries {
            prev_log_index: LogIndex(10),
            prev_log_term: Term(6),
            entries: (11..111)
                .map(|i| Entry {
                    term: Term(7),
                    index: LogIndex(i),
                    data: data.slice(..(i as usize % 20)),
                })
                .collect(),
            leader_commit: LogIndex(9),
        },
        MessageBody::AppendEntriesResponse {
            outcome: AppendOutcome::Conflict {
                rejected_index: LogIndex(4),
                conflict_term: Some(Term(2)),
                first_index: LogIndex(1),
            },
        },
        MessageBody::Heartbeat {
            commit: LogIndex(5),
            round: 8,
            quiesce: false,
        },
        MessageBody::TimeoutNow,
        MessageBody::ForwardedProposal {
            commands: (0..100).map(|i| data.slice(..i)).collect(),
        },
        MessageBody::InstallSnapshot {
            meta: Box::new(SnapshotMeta {
                index: LogIndex(100),
                term: Term(6),
                configuration,
            }),
            offset: 0,
            data: data.clone(),
            done: true,
        },
        MessageBody::InstallSnapshotResponse {
            index: LogIndex(100),
            received: 2000,
        },
        MessageBody::HeartbeatResponse { round: 8 },
    ];
    bodies
        .into_iter()
        .map(|body| {
            let m = message(body);
            let bytes = encoded(&m);
            (m, bytes)
        })
        .collect()
}

#[test]
fn hostile_bytes_cost_at_most_the_cap() {
    let samples = samples();
    for (m, bytes) in &samples {
        assert_eq!(decode_all("sample", bytes).as_ref(), Ok(m));
    }
    // The common header (version, from, to, term), then each kind byte.
    let header = &samples[0].1[..25];
    let kinds: Vec<u8> = samples.iter().map(|(_, b)| b[25]).collect();
    // A huge count or length in every position a kind reads one: right
    // after the kind byte, or after its fixed fields.
    for &kind in &kinds {
        for skip in [0usize, 8, 16, 24, 33] {
            for count in [u32::MAX, 1 << 31, 1 << 20, 1000, 13] {
                for tail in [&[][..], &[0u8; 12][..], &[1u8; 40][..]] {
                    let mut input = header.to_vec();
                    input.push(kind);
                    input.extend(std::iter::repeat_n(0u8, skip));
                    input.put_u32(count);
                    input.extend_from_slice(tail);
                    decode_all("huge count", &input).ok();
                }
            }
        }
    }
    // The named cases: forged entry and command counts are typed errors.
    let append = samples
        .iter()
        .find(|(m, _)| m.body.kind() == "AppendEntries");
    let (_, append) = append.unwrap();
    let mut forged = append.clone();
    forged[50..54].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        decode_all("entry count", &forged),
        Err(CodecError::TooManyEntries { .. })
    ));
    let mut forged = header.to_vec();
    forged.push(kinds[8]);
    forged.put_u32(u32::MAX);
    assert!(matches!(
        decode_all("command count", &forged),
        Err(CodecError::TooManyEntries { .. })
    ));
    // Configuration payloads with huge set sizes, nested in each position.
    let configuration = Configuration::new([NodeId(1), NodeId(2)]).encode();
    let tag_len = configuration.len() - 4 * 3 - 16;
    for set in 0..4 {
        for count in [u32::MAX, 1 << 28, 3] {
            let mut input = configuration[..tag_len].to_vec();
            for i in 0..4 {
                input.put_u32(if i == set { count } else { 0 });
            }
            input.put_u64(1);
            assert_eq!(Configuration::decode(&input), None);
            decode_all("configuration set", &input).ok();
        }
    }
    // KvStore snapshots with huge counts.
    let mut store = KvStore::default();
    for seq in 1..=20u64 {
        let cmd = KvCommand {
            id: ClientSeq {
                client: seq as u32,
                seq,
            },
            op: KvOp::Put {
                key: seq as u8,
                value: seq,
            },
        };
        store.apply(&cmd.encode());
    }
    let snapshot = store.snapshot();
    for count in [u32::MAX, 1 << 24] {
        let mut forged = count.to_be_bytes().to_vec();
        forged.extend_from_slice(&snapshot[4..]);
        decode_all("kv snapshot", &forged).ok();
    }
    // A batch of every sample, and batches with huge counts, lengths and
    // varints where the batch reads them.
    let batch = Batch {
        from: NodeId(1),
        to: NodeId(u64::MAX),
        incarnation: 3,
        messages: samples
            .iter()
            .enumerate()
            .map(|(i, (m, _))| (GroupId(i as u64 * 1000), m.clone()))
            .collect(),
    };
    let mut batch_bytes = BytesMut::new();
    codec::encode_batch(&batch, &mut batch_bytes);
    let batch_bytes = batch_bytes.to_vec();
    let decoded = codec::decode_batch(Bytes::from(batch_bytes.clone()), codec::MAX_BATCH_MESSAGES);
    assert_eq!(decoded.as_ref(), Ok(&batch));
    let batch_header = &batch_bytes[..codec::BATCH_HEADER_LEN - 4];
    for count in [u32::MAX, 1 << 31, 1 << 20, 1000, 13, 1] {
        for tail in [
            &[][..],
            &[0u8; 12][..],
            &[1u8; 40][..],
            &[0xffu8; 40][..],
            &[1, 0xff, 0xff, 0xff, 0x0f][..],
        ] {
            let mut input = batch_header.to_vec();
            input.put_u32(count);
            input.extend_from_slice(tail);
            let (out, bytes) = allocated(|| {
                codec::decode_batch(Bytes::copy_from_slice(&input), codec::MAX_BATCH_MESSAGES)
            });
            assert!(
                bytes <= cap(input.len()),
                "batch count {count}: {bytes} bytes"
            );
            if count as usize > input.len() {
                assert!(
                    matches!(out, Err(CodecError::TooManyMessages { .. })),
                    "count {count}: {out:?}"
                );
            }
            decode_all("huge batch count", &input).ok();
        }
    }
    // Every sample truncated anywhere, and each byte in turn set to 0xff.
    let extra = [
        snapshot.to_vec(),
        configuration.to_vec(),
        batch_bytes.clone(),
    ];
    for bytes in samples.iter().map(|(_, b)| b).chain(&extra) {
        for cut in 0..bytes.len().min(300) {
            decode_all("truncated", &bytes[..cut]).ok();
        }
        for at in 0..bytes.len().min(300) {
            let mut forged = bytes.clone();
            forged[at] = 0xff;
            decode_all("forged byte", &forged).ok();
        }
    }

    let mut runner = TestRunner::new(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &(
                proptest::sample::select(kinds),
                proptest::collection::vec(any::<u8>(), 0..96),
            ),
            |(kind, rest)| {
                decode_all("random", &rest).ok();
                let input = [header, &[kind], &rest].concat();
                decode_all("random after a header", &input).ok();
                let input = [&batch_bytes[..codec::BATCH_HEADER_LEN], &rest].concat();
                decode_all("random after a batch header", &input).ok();
                Ok(())
            },
        )
        .unwrap();

    #[cfg(feature = "serde")]
    serde_cases::run(&samples, &mut runner);
}

#[cfg(feature = "serde")]
mod serde_cases {
    use super::*;
    use quorate_raft_core::{Config, HardState};
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
            check::<Message>("Message", doc),
            check::<Configuration>("Configuration", doc),
            check::<Config>("Config", doc),
            check::<Entry>("Entry", doc),
            check::<HardState>("HardState", doc),
            check::<SnapshotMeta>("SnapshotMeta", doc),
        ]
        .into_iter()
        .filter(|accepted| *accepted)
        .count()
    }

    pub(super) fn run(samples: &[(Message, Vec<u8>)], runner: &mut TestRunner) {
        for (m, _) in samples {
            let doc = serde_json::to_string(m).unwrap();
            assert_eq!(check_all(&doc), 1, "{doc}");
            for cut in (0..doc.len()).step_by(11) {
                check_all(&doc[..cut]);
            }
        }
        let nines = "9".repeat(100_000);
        for doc in [
            "[".repeat(100_000),
            format!(r#"{{"from":{nines}}}"#),
            format!(r#"{{"term":1,"index":1,"data":[{}"#, "1,".repeat(50_000)),
            format!(r#"{{"term":1,"index":1,"data":[{}]}}"#, "256,".repeat(1000)),
            format!(r#"{{"voters":[{}"#, "1,".repeat(50_000)),
            format!(
                r#"{{"from":1,"to":2,"term":3,"body":{{"ForwardedProposal":{{"commands":[{}"#,
                "[],".repeat(30_000)
            ),
        ] {
            assert_eq!(check_all(&doc), 0);
        }
        runner
            .run(&proptest::collection::vec(any::<u8>(), 0..128), |bytes| {
                check_all(&String::from_utf8_lossy(&bytes));
                Ok(())
            })
            .unwrap();
    }
}
