//! Property tests: whatever arrives from the network, a node never panics,
//! and a refused message changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use bytes::Bytes;
use harness::storage_with_terms;
use proptest::prelude::*;
use quorate_raft_core::{
    AppendOutcome, Config, Configuration, DropReason, Entry, HardState, LogIndex, MemStorage,
    Message, MessageBody, Node, NodeId, StepOutcome, Term, codec,
};

fn node_with_log(terms: &[u64], commit: usize) -> Node<MemStorage> {
    let storage = storage_with_terms(
        Configuration::new([NodeId(1), NodeId(2), NodeId(3)]),
        terms,
        HardState {
            term: Term(terms.last().copied().unwrap_or(0)),
            vote: None,
            commit: LogIndex(commit.min(terms.len()) as u64),
        },
    );
    Node::new(Config::new(NodeId(1)), storage).unwrap()
}

fn index() -> impl Strategy<Value = LogIndex> {
    prop_oneof![0..12u64, Just(u64::MAX), Just(u64::MAX - 1)].prop_map(LogIndex)
}

fn term() -> impl Strategy<Value = Term> {
    prop_oneof![0..6u64, Just(u64::MAX)].prop_map(Term)
}

fn entry() -> impl Strategy<Value = Entry> {
    (term(), index()).prop_map(|(term, index)| Entry {
        term,
        index,
        data: Bytes::from_static(b"y"),
    })
}

fn body() -> impl Strategy<Value = MessageBody> {
    prop_oneof![
        (index(), term(), any::<bool>()).prop_map(
            |(last_log_index, last_log_term, leadership_transfer)| MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                leadership_transfer,
            }
        ),
        Just(MessageBody::TimeoutNow),
        prop::collection::vec(Just(Bytes::from_static(b"f")), 0..3)
            .prop_map(|commands| MessageBody::ForwardedProposal { commands }),
        any::<bool>().prop_map(|granted| MessageBody::RequestVoteResponse { granted }),
        // Mostly well-formed appends (contiguous), sometimes arbitrary.
        (index(), term(), 0..4usize, 0..6u64, index()).prop_map(
            |(prev_log_index, prev_log_term, n, t, leader_commit)| MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries: (0..n as u64)
                    .map(|i| Entry {
                        term: Term(prev_log_term.0.max(t)),
                        index: prev_log_index.plus(i + 1),
                        data: Bytes::from_static(b"z"),
                    })
                    .collect(),
                leader_commit,
            }
        ),
        (
            index(),
            term(),
            prop::collection::vec(entry(), 0..4),
            index()
        )
            .prop_map(|(prev_log_index, prev_log_term, entries, leader_commit)| {
                MessageBody::AppendEntries {
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                }
            }),
        index().prop_map(|match_index| MessageBody::AppendEntriesResponse {
            outcome: AppendOutcome::Success { match_index }
        }),
        index().prop_map(|match_index| MessageBody::AppendEntriesResponse {
            outcome: AppendOutcome::Received { match_index }
        }),
        (index(), prop::option::of(term()), index()).prop_map(
            |(rejected_index, conflict_term, first_index)| MessageBody::AppendEntriesResponse {
                outcome: AppendOutcome::Conflict {
                    rejected_index,
                    conflict_term,
                    first_index,
                }
            }
        ),
        (index(), 0..4u64, any::<bool>()).prop_map(|(commit, round, quiesce)| {
            MessageBody::Heartbeat {
                commit,
                round,
                quiesce,
            }
        }),
        (0..4u64).prop_map(|round| MessageBody::HeartbeatResponse { round }),
        (index(), term(), 0..12u64, any::<bool>(), 1..4u64, 0..3u64).prop_map(
            |(index, term, offset, done, voters, witnesses)| MessageBody::InstallSnapshot {
                meta: Box::new(quorate_raft_core::SnapshotMeta {
                    index,
                    term,
                    configuration: quorate_raft_core::Configuration::new(
                        (1..=voters).map(quorate_raft_core::NodeId)
                    )
                    .with_witnesses(
                        (voters + 1..=voters + witnesses).map(quorate_raft_core::NodeId)
                    ),
                }),
                offset,
                data: Bytes::from_static(b"snap"),
                done,
            }
        ),
        (index(), 0..12u64).prop_map(|(index, received)| {
            MessageBody::InstallSnapshotResponse { index, received }
        }),
    ]
}

#[derive(Debug, Clone)]
enum Input {
    Step(u64, u64, Term, MessageBody),
    Tick,
    Campaign,
    Propose,
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        6 => (0..5u64, prop_oneof![9 => Just(1u64), 1 => 0..4u64], term(), body())
            .prop_map(|(from, to, term, body)| Input::Step(from, to, term, body)),
        1 => Just(Input::Tick),
        1 => Just(Input::Campaign),
        1 => Just(Input::Propose),
    ]
}

type Observed = (
    Term,
    Option<NodeId>,
    String,
    LogIndex,
    LogIndex,
    LogIndex,
    Option<NodeId>,
);

fn observe(node: &Node<MemStorage>) -> Observed {
    (
        node.term(),
        node.vote(),
        format!("{:?}", node.role()),
        node.last_index(),
        node.commit_index(),
        node.persisted_index(),
        node.leader(),
    )
}

fn drive(node: &mut Node<MemStorage>) {
    while let Some(mut ready) = node.ready().unwrap() {
        if let Some(snapshot) = ready.take_snapshot() {
            node.storage_mut().apply_snapshot(snapshot);
        }
        node.storage_mut().append(ready.entries()).unwrap();
        if let Some(hs) = ready.hard_state() {
            node.storage_mut().set_hard_state(hs);
        }
        node.advance(ready).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_input_never_panics_and_refusals_change_nothing(
        terms in prop::collection::vec(1..4u64, 0..6).prop_map(|mut t| { t.sort_unstable(); t }),
        commit in 0..6usize,
        inputs in prop::collection::vec(input(), 1..40),
    ) {
        let mut node = node_with_log(&terms, commit);
        for input in inputs {
            match input {
                Input::Step(from, to, term, body) => {
                    let before = observe(&node);
                    let result = node.step(Message { from: NodeId(from), to: NodeId(to), term, body });
                    let refused = match &result {
                        Err(_) => true,
                        Ok(StepOutcome::Dropped(r)) => {
                            r.is_invalid() || matches!(r, DropReason::UnknownPeer { .. })
                        }
                        Ok(StepOutcome::Handled) => false,
                    };
                    if refused {
                        prop_assert_eq!(observe(&node), before);
                    }
                }
                Input::Tick => node.tick(),
                Input::Campaign => node.campaign(),
                Input::Propose => {
                    // Refused (not the leader, a transfer, a cap): nothing changes.
                    let before = observe(&node);
                    if node.propose(Bytes::from_static(b"p")).is_err() {
                        prop_assert_eq!(observe(&node), before);
                    }
                }
            }
            drive(&mut node);
            // What the node persisted agrees with what it reports.
            prop_assert!(node.commit_index() <= node.last_index());
            prop_assert_eq!(node.storage().hard_state().term, node.term());
            prop_assert_eq!(node.persisted_index(), node.last_index());
        }
    }

    #[test]
    fn codec_round_trips_well_formed_messages(
        from in 0..u64::MAX, to in 0..u64::MAX, term in term(), body in body(),
    ) {
        // Only contiguous entries are representable (indices are implied).
        let contiguous = match &body {
            MessageBody::AppendEntries { prev_log_index, entries, .. } => entries
                .iter()
                .enumerate()
                .all(|(i, e)| prev_log_index.0.checked_add(i as u64 + 1) == Some(e.index.0)),
            _ => true,
        };
        prop_assume!(contiguous);
        let m = Message { from: NodeId(from), to: NodeId(to), term, body };
        let mut buf = bytes::BytesMut::new();
        codec::encode(&m, &mut buf);
        prop_assert_eq!(codec::decode(buf.freeze()), Ok(m));
    }

    #[test]
    fn codec_decodes_arbitrary_bytes_without_panicking(
        bytes in prop::collection::vec(any::<u8>(), 0..120),
        kind in 0..7u8,
    ) {
        // Mostly frames with a valid header, so the body parsers get fuzzed.
        let mut frame = vec![1u8];
        frame.extend_from_slice(&[0u8; 24]);
        frame.push(kind);
        frame.extend_from_slice(&bytes);
        let _ = codec::decode(Bytes::from(frame));
        let _ = codec::decode(Bytes::from(bytes));
    }

    #[test]
    fn mem_storage_append_matches_a_vector_model(
        ops in prop::collection::vec((1..12u64, 1..5usize, 1..4u64), 1..30),
    ) {
        let mut storage = MemStorage::default();
        let mut model: Vec<u64> = Vec::new(); // terms by index - 1
        for (first, len, term) in ops {
            let entries: Vec<Entry> = (0..len as u64)
                .map(|i| Entry { term: Term(term), index: LogIndex(first + i), data: Bytes::new() })
                .collect();
            let result = storage.append(&entries);
            if first as usize > model.len() + 1 {
                prop_assert!(result.is_err(), "a gap must be refused");
                continue;
            }
            prop_assert!(result.is_ok());
            model.truncate(first as usize - 1);
            model.extend(std::iter::repeat_n(term, len));
            let stored: Vec<u64> = storage.all_entries().iter().map(|e| e.term.0).collect();
            prop_assert_eq!(&stored, &model);
        }
    }
}

#[cfg(feature = "serde")]
#[test]
fn serde_round_trips_messages() {
    let m = Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(3),
        body: MessageBody::AppendEntries {
            prev_log_index: LogIndex(4),
            prev_log_term: Term(2),
            entries: vec![Entry {
                term: Term(3),
                index: LogIndex(5),
                data: Bytes::from_static(b"cmd"),
            }],
            leader_commit: LogIndex(4),
        },
    };
    let json = serde_json::to_string(&m).unwrap();
    assert_eq!(serde_json::from_str::<Message>(&json).unwrap(), m);
    // Newtypes are transparent on the wire.
    assert!(json.contains("\"term\":3"), "{json}");
}
