//! Log compaction and InstallSnapshot (Raft thesis chapter 5): the
//! application snapshots its state, storage drops the covered entries, the
//! leader sends the snapshot in chunks to followers that need compacted
//! entries, and followers restore it through the `Ready` under the same
//! persistence contract as appends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use bytes::Bytes;
use harness::{Network, id, storage_with_terms};
use quorate_raft_core::{
    AppendOutcome, Config, Configuration, DropReason, HardState, LogIndex, MemStorage, Message,
    MessageBody, Node, NodeId, ProgressState, SnapshotMeta, StepOutcome, Storage, Term,
};

fn members() -> Configuration {
    Configuration::new([NodeId(1), NodeId(2), NodeId(3)])
}

fn meta(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta {
        index: LogIndex(index),
        term: Term(term),
        configuration: members(),
    }
}

fn chunk(offset: u64, data: &'static [u8], done: bool) -> Message {
    Message {
        from: id(1),
        to: id(2),
        term: Term(2),
        body: MessageBody::InstallSnapshot {
            meta: Box::new(meta(10, 2)),
            offset,
            data: Bytes::from_static(data),
            done,
        },
    }
}

/// Node 2 of a three-node cluster, with the given entry terms on disk.
fn follower(terms: &[u64]) -> Node<MemStorage> {
    follower_with(terms, |_| {})
}

fn follower_with(terms: &[u64], configure: impl FnOnce(&mut Config)) -> Node<MemStorage> {
    let storage = storage_with_terms(
        members(),
        terms,
        HardState {
            term: Term(1),
            vote: None,
            commit: LogIndex::ZERO,
        },
    );
    let mut config = Config::new(id(2));
    config.seed = 3;
    configure(&mut config);
    Node::new(config, storage).unwrap()
}

fn acks(messages: &[Message]) -> Vec<(LogIndex, u64)> {
    messages
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::InstallSnapshotResponse { index, received } => Some((index, received)),
            _ => None,
        })
        .collect()
}

fn append_success(messages: &[Message]) -> Option<LogIndex> {
    messages.iter().find_map(|m| match m.body {
        MessageBody::AppendEntriesResponse {
            outcome: AppendOutcome::Success { match_index },
        } => Some(match_index),
        _ => None,
    })
}

#[test]
fn log_compaction_5_1_leader_sends_its_snapshot_to_a_follower_behind_the_compacted_log() {
    let mut net = Network::with_config(3, |c| c.max_snapshot_chunk_bytes = 5);
    net.campaign(1);
    net.isolate(3);
    for _ in 0..10 {
        net.propose(1, b"e").unwrap();
    }
    let applied = net.node(1).applied_index();
    assert_eq!(applied, LogIndex(11), "the no-op and ten entries");
    let state = Bytes::from_static(b"state after eleven entries");
    net.node_mut(1)
        .storage_mut()
        .compact(LogIndex(8), state.clone())
        .unwrap();
    assert_eq!(net.node(1).storage().first_index().unwrap(), LogIndex(9));
    net.heal();
    net.tick_all(4);
    let installed = &net.installed[&id(3)];
    assert_eq!(installed.len(), 1);
    assert_eq!(installed[0].meta.index, LogIndex(8));
    assert_eq!(installed[0].meta.term, net.node(1).term());
    assert_eq!(installed[0].data, state, "reassembled from 5-byte chunks");
    let chunks: Vec<u64> = net
        .delivered
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::InstallSnapshot { offset, .. } if m.to == id(3) => Some(*offset),
            _ => None,
        })
        .collect();
    assert_eq!(chunks, [0, 5, 10, 15, 20, 25], "26 bytes in chunks of 5");
    // The entries after the snapshot arrive by AppendEntries and apply.
    let follower = net.node(3);
    assert_eq!(follower.storage().first_index().unwrap(), LogIndex(9));
    assert_eq!(follower.last_index(), LogIndex(11));
    assert_eq!(follower.applied_index(), LogIndex(11));
    let after: Vec<LogIndex> = net.applied[&id(3)].iter().map(|e| e.index).collect();
    // The no-op at 1 was applied before the isolation; 2..=8 come from
    // the snapshot.
    assert_eq!(
        after,
        [LogIndex(1), LogIndex(9), LogIndex(10), LogIndex(11)]
    );
    assert_eq!(
        net.node(1).progress(id(3)).unwrap().state,
        ProgressState::Replicate
    );
    net.propose(1, b"after").unwrap();
    assert_eq!(net.node(3).applied_index(), LogIndex(12));
}

#[test]
fn log_compaction_5_3_chunks_resume_from_the_offset_the_follower_holds() {
    let mut node = follower(&[1, 1]);
    node.step(chunk(0, b"abcd", false)).unwrap();
    let ready = node.ready().unwrap().unwrap();
    assert_eq!(acks(ready.messages()), [(LogIndex(10), 4)]);
    node.advance(ready).unwrap();
    // The chunk at 4 was lost: the one at 8 tells the leader to resume at 4.
    node.step(chunk(8, b"ij", true)).unwrap();
    let ready = node.ready().unwrap().unwrap();
    assert_eq!(acks(ready.messages()), [(LogIndex(10), 4)]);
    assert!(ready.snapshot().is_none());
    node.advance(ready).unwrap();
    // A duplicate of the first chunk changes nothing either.
    node.step(chunk(0, b"abcd", false)).unwrap();
    node.step(chunk(4, b"efgh", false)).unwrap();
    node.step(chunk(8, b"ij", true)).unwrap();
    let ready = node.ready().unwrap().unwrap();
    let snapshot = ready.snapshot().unwrap();
    assert_eq!(snapshot.data, Bytes::from_static(b"abcdefghij"));
    assert_eq!(snapshot.meta, meta(10, 2));
    assert!(ready.must_persist());
    assert!(ready.committed_entries().is_empty());
    assert_eq!(
        append_success(ready.messages()),
        None,
        "the acknowledgement waits until the snapshot is durable"
    );
    assert_eq!(node.last_index(), LogIndex(10));
    assert_eq!(node.commit_index(), LogIndex(10));
    let mut ready = ready;
    let snapshot = ready.take_snapshot().unwrap();
    node.storage_mut().apply_snapshot(snapshot);
    if let Some(hs) = ready.hard_state() {
        node.storage_mut().set_hard_state(hs);
    }
    node.advance(ready).unwrap();
    assert_eq!(node.applied_index(), LogIndex(10));
    let ready = node.ready().unwrap().unwrap();
    assert_eq!(append_success(ready.messages()), Some(LogIndex(10)));
    node.advance(ready).unwrap();
    assert_eq!(node.storage().first_index().unwrap(), LogIndex(11));
}

#[test]
fn log_compaction_5_3_a_new_leader_restarts_the_transfer() {
    let mut node = follower(&[1]);
    node.step(chunk(0, b"abcd", false)).unwrap();
    let mut newer = chunk(4, b"efgh", false);
    newer.term = Term(3);
    node.step(newer).unwrap();
    let ready = node.ready().unwrap().unwrap();
    assert_eq!(
        acks(ready.messages()),
        [(LogIndex(10), 4), (LogIndex(10), 0)],
        "bytes from the old leader's transfer are not continued"
    );
    node.advance(ready).unwrap();
}

#[test]
fn log_compaction_5_3_a_snapshot_matching_the_log_keeps_the_tail() {
    // Thesis figure 5.3, step 6: the follower holds the snapshot's last
    // entry, so it keeps the entries after it.
    let mut node = follower(&[1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]);
    node.step(chunk(0, b"whole", true)).unwrap();
    let ready = node.ready().unwrap().unwrap();
    assert!(ready.snapshot().is_none());
    assert_eq!(node.last_index(), LogIndex(12));
    assert_eq!(node.commit_index(), LogIndex(10));
    let mut ready = ready;
    if let Some(hs) = ready.hard_state() {
        node.storage_mut().set_hard_state(hs);
    }
    let _ = ready.take_committed_entries();
    node.advance(ready).unwrap();
    let ready = node.ready().unwrap().unwrap();
    assert_eq!(append_success(ready.messages()), Some(LogIndex(10)));
    node.advance(ready).unwrap();
}

#[test]
fn log_compaction_5_3_a_conflicting_log_is_replaced() {
    let mut node = follower(&[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    node.step(chunk(0, b"whole", true)).unwrap();
    let ready = node.ready().unwrap().unwrap();
    assert_eq!(ready.snapshot().unwrap().meta.index, LogIndex(10));
    assert_eq!(
        node.last_index(),
        LogIndex(10),
        "entries 11 and 12 are gone"
    );
    assert_eq!(node.log_term(LogIndex(10)).unwrap(), Some(Term(2)));
    // Until the snapshot is durable the node does not campaign: as leader
    // it would replicate from storage, which still holds the old log.
    node.campaign();
    assert_eq!(node.term(), Term(2));
    let mut ready = ready;
    node.storage_mut()
        .apply_snapshot(ready.take_snapshot().unwrap());
    node.advance(ready).unwrap();
    assert_eq!(node.storage().last_index().unwrap(), LogIndex(10));
    assert_eq!(
        node.storage().snapshot().unwrap().data,
        Bytes::from_static(b"whole")
    );
}

#[test]
fn log_compaction_5_3_an_old_snapshot_is_acknowledged_at_the_commit_index() {
    let mut node = follower(&[1, 1]);
    node.step(chunk(0, b"whole", true)).unwrap();
    let mut ready = node.ready().unwrap().unwrap();
    node.storage_mut()
        .apply_snapshot(ready.take_snapshot().unwrap());
    node.advance(ready).unwrap();
    if let Some(ready) = node.ready().unwrap() {
        node.advance(ready).unwrap();
    }
    let mut stale = chunk(0, b"old", true);
    if let MessageBody::InstallSnapshot { meta, .. } = &mut stale.body {
        **meta = self::meta(6, 1);
    }
    node.step(stale).unwrap();
    let ready = node.ready().unwrap().unwrap();
    assert!(ready.snapshot().is_none());
    assert_eq!(append_success(ready.messages()), Some(LogIndex(10)));
    node.advance(ready).unwrap();
}

#[test]
fn log_compaction_5_3_malformed_snapshots_are_refused_without_change() {
    let mut node = follower(&[1]);
    // (A snapshot whose configuration lacks the receiver is legal since
    // membership changes: a new node gets snapshots older than its
    // addition; see tests/membership.rs.)
    let mut endless = chunk(0, b"x", true);
    if let MessageBody::InstallSnapshot { meta, .. } = &mut endless.body {
        meta.index = LogIndex(u64::MAX);
    }
    assert!(matches!(
        node.step(endless),
        Ok(StepOutcome::Dropped(DropReason::Malformed { .. }))
    ));
    let mut future = chunk(0, b"x", true);
    if let MessageBody::InstallSnapshot { meta, .. } = &mut future.body {
        meta.term = Term(9);
    }
    assert!(matches!(
        node.step(future),
        Ok(StepOutcome::Dropped(DropReason::Malformed { .. }))
    ));
    assert_eq!(node.term(), Term(1));
    assert_eq!(node.leader(), None);
    assert_eq!(node.last_index(), LogIndex(1));
}

#[test]
fn log_compaction_5_1_a_node_recovers_from_its_snapshot_and_log_tail() {
    let mut net = Network::new(3);
    net.campaign(1);
    for _ in 0..6 {
        net.propose(1, b"e").unwrap();
    }
    net.node_mut(2)
        .storage_mut()
        .compact(LogIndex(5), Bytes::from_static(b"state@5"))
        .unwrap();
    net.crash(2);
    net.restart(2);
    let node = net.node(2);
    assert_eq!(
        node.storage().snapshot().unwrap().data,
        Bytes::from_static(b"state@5")
    );
    assert_eq!(node.commit_index(), LogIndex(7));
    // Restarted from disk: the snapshot stands for 1..=5, the tail 6..=7
    // is applied again.
    let replayed: Vec<LogIndex> = net.applied[&id(2)]
        .iter()
        .skip(7)
        .map(|e| e.index)
        .collect();
    assert_eq!(replayed, [LogIndex(6), LogIndex(7)]);
    net.propose(1, b"more").unwrap();
    assert_eq!(net.node(2).applied_index(), LogIndex(8));
}

#[test]
fn a_snapshot_beyond_max_snapshot_bytes_is_dropped_and_its_buffer_freed() {
    let mut node = follower_with(&[1], |c| c.max_snapshot_bytes = 8);
    assert_eq!(
        node.step(chunk(0, b"abcde", false)).unwrap(),
        StepOutcome::Handled
    );
    let ready = node.ready().unwrap().unwrap();
    assert_eq!(acks(ready.messages()), vec![(LogIndex(10), 5)]);
    node.advance(ready).unwrap();
    // 5 + 4 bytes would pass the 8-byte limit: dropped, nothing acknowledged.
    let outcome = node.step(chunk(5, b"fghi", true)).unwrap();
    assert_eq!(
        outcome,
        StepOutcome::Dropped(DropReason::SnapshotTooLarge {
            from: id(1),
            size: 9,
            limit: 8,
        })
    );
    assert!(
        node.ready()
            .unwrap()
            .is_none_or(|r| acks(r.messages()).is_empty())
    );
    assert_eq!(node.last_index(), LogIndex(1), "nothing installed");
    // The partial snapshot is gone: a resend from offset 5 is told to start
    // over, and a snapshot within the limit is installed.
    node.step(chunk(5, b"fgh", true)).unwrap();
    let ready = node.ready().unwrap().unwrap();
    assert_eq!(acks(ready.messages()), vec![(LogIndex(10), 0)]);
    node.advance(ready).unwrap();
    node.step(chunk(0, b"12345678", true)).unwrap();
    let ready = node.ready().unwrap().unwrap();
    assert_eq!(ready.snapshot().map(|s| s.data.len()), Some(8));
}

#[test]
fn one_chunk_beyond_max_snapshot_bytes_is_dropped() {
    let mut node = follower_with(&[1], |c| c.max_snapshot_bytes = 4);
    let outcome = node.step(chunk(0, b"abcde", true)).unwrap();
    assert!(matches!(
        outcome,
        StepOutcome::Dropped(DropReason::SnapshotTooLarge {
            size: 5,
            limit: 4,
            ..
        })
    ));
    assert_eq!(node.last_index(), LogIndex(1));
}

#[test]
fn max_snapshot_bytes_of_zero_is_refused() {
    let mut config = Config::new(id(2));
    config.max_snapshot_bytes = 0;
    assert!(config.validate().is_err());
}

/// Found by the multi-raft simulation: a follower that received the first
/// chunk of an old leader's snapshot and then caught up by appends from a
/// new leader kept the half transfer forever (nothing but another
/// snapshot message clears it), and a follower with a transfer under way
/// does not quiesce. So it never quiesced: its election timer kept firing
/// against its quiet leader, whose group never went quiet. A partial
/// snapshot the committed log already covers is dropped when the leader
/// quiesces (as InstallSnapshot would drop it).
#[test]
fn a_half_received_snapshot_the_log_caught_up_past_does_not_keep_a_follower_awake() {
    let mut node = follower(&[1]);
    // Node 1, leading term 2, starts sending its snapshot at 10; one chunk.
    node.step(chunk(0, b"abcd", false)).unwrap();
    drive(&mut node);
    // Node 3 leads term 3 and replicates 2..=12 by appends, all committed.
    let entries: Vec<_> = (2..=12)
        .map(|i| quorate_raft_core::Entry {
            term: Term(3),
            index: LogIndex(i),
            data: Bytes::from_static(b"x"),
        })
        .collect();
    let from_3 = |body| Message {
        from: id(3),
        to: id(2),
        term: Term(3),
        body,
    };
    node.step(from_3(MessageBody::AppendEntries {
        prev_log_index: LogIndex(1),
        prev_log_term: Term(1),
        entries,
        leader_commit: LogIndex(12),
    }))
    .unwrap();
    drive(&mut node);
    assert_eq!(node.commit_index(), LogIndex(12));
    // Its group idle, node 3 quiesces.
    node.step(from_3(MessageBody::Heartbeat {
        commit: LogIndex(12),
        round: 1,
        quiesce: true,
    }))
    .unwrap();
    drive(&mut node);
    assert!(node.is_quiesced(), "the follower quiesced with its leader");
    assert_eq!(node.poll_timeout(), None);
}

/// Persists and applies every Ready of a lone node.
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
