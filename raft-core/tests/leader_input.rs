//! A proptest aimed at the leader: a node elected in a three-node cluster,
//! with a log, is fed arbitrary and forged messages mixed with valid ones,
//! proposals, ticks, reads, and Readies persisted late. Whatever arrives it
//! never panics, refused messages change nothing, `ready()` runs dry once
//! everything is advanced, commit never decreases, and the leader never
//! commits beyond what a quorum durably acknowledged of entries it has.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use bytes::Bytes;
use harness::storage_with_terms;
use proptest::prelude::*;
use quorate_raft_core::{
    AppendOutcome, CONFIGURATION_TAG, Config, Configuration, DropReason, Entry, HardState,
    LogIndex, MemStorage, Message, MessageBody, Node, NodeId, Ready, Role, SnapshotMeta,
    StepOutcome, Term,
};
use std::collections::VecDeque;

const MAX_POSITION: u64 = u64::MAX / 2;

/// Node 1 leads term 3 over a log of terms [1, 1, 2] (plus its no-op),
/// elected by node 2's vote; nothing of term 3 is committed yet.
fn elected_leader(early_append_ack: bool) -> Node<MemStorage> {
    let storage = storage_with_terms(
        Configuration::new([1, 2, 3].map(NodeId)),
        &[1u64, 1, 2],
        HardState {
            term: Term(2),
            vote: None,
            commit: LogIndex(1),
        },
    );
    let mut config = Config::new(NodeId(1));
    config.max_inflight_msgs = 2;
    config.max_size_per_msg = 1;
    config.early_append_ack = early_append_ack;
    let mut node = Node::new(config, storage).unwrap();
    node.campaign();
    drive(&mut node);
    node.step(Message {
        from: NodeId(2),
        to: NodeId(1),
        term: Term(3),
        body: MessageBody::RequestVoteResponse { granted: true },
    })
    .unwrap();
    drive(&mut node);
    assert_eq!(node.role(), Role::Leader);
    node
}

fn persist(node: &mut Node<MemStorage>, mut ready: Ready) {
    if let Some(snapshot) = ready.take_snapshot() {
        node.storage_mut().apply_snapshot(snapshot);
    }
    node.storage_mut().append(ready.entries()).unwrap();
    if let Some(hs) = ready.hard_state() {
        node.storage_mut().set_hard_state(hs);
    }
    node.advance(ready).unwrap();
}

fn drive(node: &mut Node<MemStorage>) {
    for _ in 0..64 {
        match node.ready().unwrap() {
            Some(ready) => persist(node, ready),
            None => return,
        }
    }
    panic!("ready() did not run dry");
}

/// Indices around the leader's log, and far beyond it.
fn index() -> impl Strategy<Value = LogIndex> {
    prop_oneof![
        8 => 0..12u64,
        1 => prop_oneof![
            Just(MAX_POSITION - 1),
            Just(MAX_POSITION),
            Just(u64::MAX - 1),
            Just(u64::MAX)
        ],
    ]
    .prop_map(LogIndex)
}

fn small_term() -> impl Strategy<Value = Term> {
    prop_oneof![0..5u64, Just(u64::MAX)].prop_map(Term)
}

fn body() -> impl Strategy<Value = MessageBody> {
    prop_oneof![
        4 => index().prop_map(|match_index| MessageBody::AppendEntriesResponse {
            outcome: AppendOutcome::Success { match_index },
        }),
        3 => index().prop_map(|match_index| MessageBody::AppendEntriesResponse {
            outcome: AppendOutcome::Received { match_index },
        }),
        3 => (index(), prop::option::of(small_term()), index()).prop_map(
            |(rejected_index, conflict_term, first_index)| MessageBody::AppendEntriesResponse {
                outcome: AppendOutcome::Conflict {
                    rejected_index,
                    conflict_term,
                    first_index,
                },
            }
        ),
        2 => prop_oneof![0..8u64, Just(u64::MAX)]
            .prop_map(|round| MessageBody::HeartbeatResponse { round }),
        1 => (index(), prop_oneof![0..20u64, Just(u64::MAX)])
            .prop_map(|(index, received)| MessageBody::InstallSnapshotResponse { index, received }),
        1 => any::<bool>().prop_map(|granted| MessageBody::RequestVoteResponse { granted }),
        1 => any::<bool>().prop_map(|granted| MessageBody::PreVoteResponse { granted }),
        1 => Just(MessageBody::TimeoutNow),
        1 => (index(), small_term(), any::<bool>()).prop_map(
            |(last_log_index, last_log_term, leadership_transfer)| MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                leadership_transfer,
            }
        ),
        1 => (index(), small_term())
            .prop_map(|(last_log_index, last_log_term)| MessageBody::PreVote {
                last_log_index,
                last_log_term,
            }),
        1 => (index(), 0..8u64, any::<bool>()).prop_map(|(commit, round, quiesce)| MessageBody::Heartbeat { commit, round, quiesce }),
        1 => (index(), small_term(), 0..3u64, index()).prop_map(
            |(prev_log_index, prev_log_term, n, leader_commit)| MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries: (1..=n)
                    .map(|i| Entry {
                        term: prev_log_term,
                        index: prev_log_index.plus(i),
                        data: Bytes::from_static(b"z"),
                    })
                    .collect(),
                leader_commit,
            }
        ),
        1 => (index(), small_term(), prop_oneof![0..8u64, Just(u64::MAX)], any::<bool>()).prop_map(
            |(index, term, offset, done)| MessageBody::InstallSnapshot {
                meta: Box::new(SnapshotMeta {
                    index,
                    term,
                    configuration: Configuration::new([1, 2, 3].map(NodeId)),
                }),
                offset,
                data: Bytes::from_static(b"snap"),
                done,
            }
        ),
        1 => any::<bool>().prop_map(|tagged| MessageBody::ForwardedProposal {
            commands: vec![
                Bytes::from_static(b"fwd"),
                if tagged {
                    Bytes::from_static(CONFIGURATION_TAG)
                } else {
                    Bytes::from_static(b"fwd2")
                },
            ],
        }),
    ]
}

#[derive(Debug, Clone)]
enum Input {
    /// From, to, term relative to the leader's (-1, 0, +1) or absolute.
    Step(u64, u64, TermChoice, MessageBody),
    Propose,
    Tick,
    ReadIndex,
    /// Take a Ready and hold its write in progress.
    Ready,
    /// Complete the oldest write in progress.
    Advance,
}

#[derive(Debug, Clone, Copy)]
enum TermChoice {
    Current,
    Older,
    Newer,
    Absolute(u64),
}

fn input() -> impl Strategy<Value = Input> {
    let term = prop_oneof![
        20 => Just(TermChoice::Current),
        2 => Just(TermChoice::Older),
        1 => Just(TermChoice::Newer),
        1 => prop_oneof![Just(MAX_POSITION), Just(u64::MAX)].prop_map(TermChoice::Absolute),
    ];
    let from = prop_oneof![10 => 2..4u64, 1 => Just(1u64), 1 => Just(4u64)];
    let to = prop_oneof![10 => Just(1u64), 1 => Just(2u64)];
    prop_oneof![
        10 => (from, to, term, body()).prop_map(|(f, t, term, b)| Input::Step(f, t, term, b)),
        2 => Just(Input::Propose),
        1 => Just(Input::Tick),
        1 => Just(Input::ReadIndex),
        3 => Just(Input::Ready),
        3 => Just(Input::Advance),
    ]
}

/// Answers no follower can give a leader in its term: positions beyond
/// any reachable one, or a heartbeat round the leader never reached.
fn impossible_for_a_leader(body: &MessageBody) -> bool {
    let beyond = |i: &LogIndex| i.0 >= MAX_POSITION;
    match body {
        MessageBody::AppendEntriesResponse { outcome } => match outcome {
            AppendOutcome::Success { match_index } | AppendOutcome::Received { match_index } => {
                beyond(match_index)
            }
            AppendOutcome::Conflict {
                rejected_index,
                first_index,
                ..
            } => beyond(rejected_index) || beyond(first_index),
        },
        MessageBody::HeartbeatResponse { round } => *round == u64::MAX,
        MessageBody::InstallSnapshotResponse { index, .. } => beyond(index),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn leader_survives_forged_input_and_commits_only_durable_quorums(
        early in any::<bool>(),
        inputs in prop::collection::vec(input(), 1..60),
    ) {
        let mut node = elected_leader(early);
        let leader_term = node.term();
        // The highest index each follower acknowledged durable in this
        // term, through messages the leader accepted.
        let mut durable_acks = [LogIndex::ZERO; 2];
        let floor = node.commit_index();
        let mut commit = floor;
        let mut writes: VecDeque<Ready> = VecDeque::new();
        for input in inputs {
            match input {
                Input::Step(from, to, choice, body) => {
                    let term = match choice {
                        TermChoice::Current => node.term(),
                        TermChoice::Older => Term(node.term().0.saturating_sub(1)),
                        TermChoice::Newer => node.term().next(),
                        TermChoice::Absolute(t) => Term(t),
                    };
                    let durable = match &body {
                        MessageBody::AppendEntriesResponse {
                            outcome: AppendOutcome::Success { match_index },
                        } => Some(*match_index),
                        _ => None,
                    };
                    let counted = node.role() == Role::Leader
                        && term == node.term()
                        && (2..4).contains(&from);
                    let forged = counted && to == 1 && impossible_for_a_leader(&body);
                    let before = format!("{node:?}");
                    let m = Message { from: NodeId(from), to: NodeId(to), term, body };
                    let result = node.step(m);
                    // Refused before anything changes: fatal errors and the
                    // drops of invalid or foreign input.
                    let refused = match &result {
                        Err(_) => true,
                        Ok(StepOutcome::Dropped(r)) => {
                            r.is_invalid() || matches!(r, DropReason::UnknownPeer { .. })
                        }
                        Ok(StepOutcome::Handled) => false,
                    };
                    prop_assert!(!forged || refused, "forged answer accepted");
                    if refused {
                        prop_assert_eq!(format!("{node:?}"), before, "refused, yet changed");
                    } else if let (Some(index), true) = (durable, counted) {
                        let slot = &mut durable_acks[from as usize - 2];
                        *slot = (*slot).max(index);
                    }
                }
                Input::Propose => {
                    let before = format!("{node:?}");
                    if node.propose(Bytes::from_static(b"p")).is_err() {
                        prop_assert_eq!(format!("{node:?}"), before, "refused proposal changed state");
                    }
                }
                Input::Tick => node.tick(),
                Input::ReadIndex => {
                    let before = format!("{node:?}");
                    if node.read_index(7).is_err() {
                        prop_assert_eq!(format!("{node:?}"), before, "refused read changed state");
                    }
                }
                Input::Ready => {
                    if let Some(ready) = node.ready().unwrap() {
                        writes.push_back(ready);
                    }
                }
                Input::Advance => {
                    if let Some(ready) = writes.pop_front() {
                        persist(&mut node, ready);
                    }
                }
            }
            prop_assert!(node.commit_index() >= commit, "commit went back");
            commit = node.commit_index();
            prop_assert!(commit <= node.last_index());
            for f in [2, 3] {
                if let Some(p) = node.progress(NodeId(f)) {
                    prop_assert!(p.match_index <= node.last_index(), "{:?}", p);
                    prop_assert!(p.next_index <= node.last_index().next(), "{:?}", p);
                }
            }
            if node.role() == Role::Leader && node.term() == leader_term {
                // Two of three: the leader's durable log and the larger
                // durable acknowledgment, or both followers'.
                let mut acks = [node.persisted_index(), durable_acks[0], durable_acks[1]];
                acks.sort_unstable();
                prop_assert!(
                    commit <= floor.max(acks[1]),
                    "committed {:?} beyond the durable quorum {:?}", commit, acks
                );
            }
        }
        // Once every write completes, ready() runs dry.
        while let Some(ready) = writes.pop_front() {
            persist(&mut node, ready);
        }
        drive(&mut node);
        prop_assert!(node.commit_index() >= commit);
    }
}
