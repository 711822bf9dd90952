//! The embedding surface a user's own integration meets first: resuming
//! after what the state machine holds (`Config::applied`), what `step`
//! drops and what it fails with, `campaign` on a leader, test-facing
//! controls (election timeout, heartbeats, unreachable peers, snapshot
//! reports, progress), aborting and timing out a leadership transfer, and
//! the proposal caps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use bytes::Bytes;
use harness::{Network, id, storage_with_terms};
use quorate_raft_core::{
    Config, Configuration, DropReason, Entry, Error, FatalError, HardState, InitialState, LogIndex,
    MemStorage, Message, MessageBody, Node, NodeId, ProgressState, Role, Snapshot, SnapshotMeta,
    SnapshotStatus, StepOutcome, Storage, StorageError, Term,
};

fn members() -> Configuration {
    Configuration::new([NodeId(1), NodeId(2), NodeId(3)])
}

fn indices(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.index.0).collect()
}

// ---------- Config::applied ----------

#[test]
fn a_restart_with_applied_set_reapplies_nothing() {
    let mut net = Network::new(3);
    net.campaign(1);
    for _ in 0..5 {
        net.propose(1, b"cmd").unwrap();
    }
    assert_eq!(net.node(2).applied_index(), LogIndex(6), "no-op and five");
    assert_eq!(indices(&net.applied[&id(2)]), [1, 2, 3, 4, 5, 6]);

    // The state machine holds 1..=6: it says so, and gets nothing again.
    net.crash(2);
    net.restart_with(2, |c| c.applied = LogIndex(6));
    assert_eq!(indices(&net.applied[&id(2)]), [1, 2, 3, 4, 5, 6]);
    assert_eq!(net.node(2).applied_index(), LogIndex(6));
    // New entries apply once, after it.
    net.propose(1, b"after").unwrap();
    assert_eq!(indices(&net.applied[&id(2)]), [1, 2, 3, 4, 5, 6, 7]);

    // It resumes where it says: a state machine that holds 1..=4 gets 5..
    net.crash(2);
    net.restart_with(2, |c| c.applied = LogIndex(4));
    assert_eq!(
        indices(&net.applied[&id(2)]),
        [1, 2, 3, 4, 5, 6, 7, 5, 6, 7]
    );

    // Without it a restart hands back every committed entry (the default:
    // the state machine holds only what the snapshot holds).
    net.crash(2);
    net.restart(2);
    assert_eq!(net.applied[&id(2)].len(), 10 + 7);
}

#[test]
fn applied_outside_the_snapshot_and_commit_index_is_refused() {
    // Entries 1..=5, committed up to 3, compacted up to 2.
    let mut storage = storage_with_terms(
        members(),
        &[1, 1, 1, 1, 1],
        HardState {
            term: Term(1),
            vote: None,
            commit: LogIndex(3),
        },
    );
    storage
        .compact(LogIndex(2), Bytes::from_static(b"state@2"))
        .unwrap();
    let start = |applied: u64| {
        let mut config = Config::new(NodeId(1));
        config.applied = LogIndex(applied);
        Node::new(config, storage.clone())
    };
    for applied in [1, 4, 5] {
        match start(applied) {
            Err(Error::AppliedOutOfRange {
                applied: a,
                snapshot,
                committed,
            }) => assert_eq!(
                (a, snapshot, committed),
                (LogIndex(applied), LogIndex(2), LogIndex(3))
            ),
            other => panic!("applied {applied}: {other:?}"),
        }
    }
    // Within range (and zero, the default: the snapshot) the node hands
    // out the committed entries after the applied index.
    for (applied, expected) in [(0, vec![3]), (2, vec![3]), (3, vec![])] {
        let mut node = start(applied).unwrap();
        let mut handed = Vec::new();
        while let Some(mut ready) = node.ready().unwrap() {
            handed.extend(indices(&ready.take_committed_entries()));
            node.advance(ready).unwrap();
        }
        assert_eq!(handed, expected, "applied {applied}");
        assert_eq!(node.applied_index(), LogIndex(3));
    }
}

// ---------- step: drops are outcomes, only storage failures are errors ----------

#[test]
fn step_reports_harmless_messages_as_dropped() {
    let mut net = Network::new(3);
    net.campaign(1);
    let term = net.node(1).term();
    let leader = net.node_mut(1);
    let msg = |from: u64, term: Term, body| Message {
        from: NodeId(from),
        to: NodeId(1),
        term,
        body,
    };
    let outcome = leader.step(msg(9, term, MessageBody::HeartbeatResponse { round: 0 }));
    assert_eq!(
        outcome.unwrap(),
        StepOutcome::Dropped(DropReason::UnknownPeer { from: NodeId(9) })
    );
    let stale = leader.step(msg(
        2,
        Term(0),
        MessageBody::RequestVoteResponse { granted: true },
    ));
    assert_eq!(
        stale.unwrap(),
        StepOutcome::Dropped(DropReason::StaleTerm {
            from: NodeId(2),
            kind: "RequestVoteResponse",
            term: Term(0),
            current: term,
        })
    );
    let late_vote = leader.step(msg(
        3,
        term,
        MessageBody::RequestVoteResponse { granted: true },
    ));
    match late_vote.unwrap() {
        StepOutcome::Dropped(DropReason::Unexpected { from, kind, .. }) => {
            assert_eq!((from, kind), (NodeId(3), "RequestVoteResponse"));
        }
        other => panic!("{other:?}"),
    }
    let mut misaddressed = msg(2, term, MessageBody::HeartbeatResponse { round: 0 });
    misaddressed.to = NodeId(3);
    let outcome = leader.step(misaddressed).unwrap();
    assert!(outcome.dropped().is_some_and(DropReason::is_invalid));
    // An ordinary answer is handled.
    let answer = leader.step(msg(2, term, MessageBody::HeartbeatResponse { round: 0 }));
    assert_eq!(answer.unwrap(), StepOutcome::Handled);
    assert_eq!(net.leaders(), [id(1)]);
}

/// A storage whose reads fail once `broken` is set.
#[derive(Debug)]
struct Breakable {
    inner: MemStorage,
    broken: bool,
}

impl Breakable {
    fn check(&self) -> Result<(), StorageError> {
        if self.broken {
            return Err(StorageError::Other("disk on fire".into()));
        }
        Ok(())
    }
}

impl Storage for Breakable {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        self.check()?;
        self.inner.initial_state()
    }
    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
        out: &mut Vec<Entry>,
    ) -> Result<(), StorageError> {
        self.check()?;
        self.inner.entries(low, high, max_bytes, out)
    }
    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        self.check()?;
        self.inner.term(index)
    }
    fn first_index(&self) -> Result<LogIndex, StorageError> {
        self.check()?;
        self.inner.first_index()
    }
    fn last_index(&self) -> Result<LogIndex, StorageError> {
        self.check()?;
        self.inner.last_index()
    }
    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError> {
        self.check()?;
        self.inner.snapshot_meta()
    }
    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        self.check()?;
        self.inner.snapshot()
    }
}

#[test]
fn a_storage_failure_in_step_is_fatal_and_converts_for_question_mark() {
    let inner = storage_with_terms(members(), &[1, 1], HardState::default());
    let mut node = Node::new(
        Config::new(NodeId(1)),
        Breakable {
            inner,
            broken: false,
        },
    )
    .unwrap();
    node.storage_mut().broken = true;
    // Checking the append's previous entry reads the stored log.
    let append = Message {
        from: NodeId(2),
        to: NodeId(1),
        term: Term(1),
        body: MessageBody::AppendEntries {
            prev_log_index: LogIndex(2),
            prev_log_term: Term(1),
            entries: vec![],
            leader_commit: LogIndex(0),
        },
    };
    let outcome = node.step(append.clone());
    assert!(
        matches!(outcome, Err(FatalError::Storage(StorageError::Other(_)))),
        "{outcome:?}"
    );
    // `?` in a loop returning the crate's Error propagates it.
    let mut event_loop = |m| -> Result<(), Error> {
        node.step(m)?;
        Ok(())
    };
    assert!(matches!(
        event_loop(append),
        Err(Error::Storage(StorageError::Other(_)))
    ));
}

// ---------- campaign on a leader ----------

#[test]
fn campaign_on_a_leader_is_a_no_op_with_check_quorum_and_pre_vote() {
    type Tweak = fn(&mut Config);
    let tweaks: [(&str, Tweak); 3] = [
        ("check-quorum", |c| c.check_quorum = true),
        ("pre-vote", |c| c.pre_vote = true),
        ("both", |c| {
            c.check_quorum = true;
            c.pre_vote = true;
        }),
    ];
    for (name, tweak) in tweaks {
        let mut net = Network::with_config(3, tweak);
        net.campaign(1);
        assert_eq!(net.node(1).role(), Role::Leader, "{name}");
        let term = net.node(1).term();
        net.campaign(1);
        assert_eq!(net.node(1).role(), Role::Leader, "{name}");
        assert_eq!(net.node(1).term(), term, "{name}");
        // The group keeps its leader: no term moves on any node.
        for _ in 0..40 {
            net.tick_all(1);
            assert_eq!(net.leaders(), [id(1)], "{name}");
        }
        for n in 1..=3 {
            assert_eq!(net.node(n).term(), term, "{name}: node {n}");
        }
        net.propose(1, b"still leading").unwrap();
    }
}

// ---------- test-facing controls ----------

#[test]
fn the_randomized_election_timeout_can_be_read_and_set_within_its_range() {
    let mut node = Node::new(Config::new(NodeId(1)), MemStorage::new(members())).unwrap();
    let drawn = node.randomized_election_timeout();
    assert!((10..20).contains(&drawn), "{drawn}");
    for ticks in [0, 9, 20, 40] {
        assert!(matches!(
            node.set_randomized_election_timeout(ticks),
            Err(Error::ElectionTimeoutOutOfRange { ticks: t, min: 10, max: 20 }) if t == ticks
        ));
    }
    assert_eq!(node.randomized_election_timeout(), drawn, "unchanged");
    node.set_randomized_election_timeout(13).unwrap();
    for _ in 0..12 {
        node.tick();
    }
    assert_eq!((node.role(), node.election_elapsed()), (Role::Follower, 12));
    node.tick();
    assert_eq!(node.role(), Role::Candidate);
}

#[test]
fn ping_sends_a_heartbeat_round_now_on_a_leader_only() {
    let mut net = Network::new(3);
    net.campaign(1);
    assert!(net.node_mut(1).ready().unwrap().is_none(), "idle");
    net.node_mut(1).ping();
    let ready = net.node_mut(1).ready().unwrap().unwrap();
    let mut beats: Vec<NodeId> = ready
        .messages()
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Heartbeat { .. }))
        .map(|m| m.to)
        .collect();
    beats.sort();
    assert_eq!(beats, [id(2), id(3)]);
    net.node_mut(1).advance(ready).unwrap();
    net.node_mut(2).ping();
    assert!(net.node_mut(2).ready().unwrap().is_none(), "a follower");
}

#[test]
fn report_unreachable_moves_a_replicating_peer_to_probe() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.propose(1, b"a").unwrap();
    let peers: Vec<NodeId> = net.node(1).all_progress().map(|p| p.id).collect();
    assert_eq!(peers, [id(2), id(3)]);
    assert_eq!(net.node(2).all_progress().count(), 0, "a follower");
    let p = net.node(1).progress(id(3)).unwrap();
    assert_eq!(
        (p.state, p.match_index),
        (ProgressState::Replicate, LogIndex(2))
    );
    assert_eq!(p.sent_commit(), LogIndex(2));
    assert!(p.recent_active());
    // Appends to 3 are lost in flight.
    net.cut(1, 3);
    net.propose(1, b"b").unwrap();
    net.propose(1, b"c").unwrap();
    let p = net.node(1).progress(id(3)).unwrap();
    assert_eq!((p.inflight(), p.next_index), (2, LogIndex(5)));
    net.node_mut(1).report_unreachable(id(3));
    let p = net.node(1).progress(id(3)).unwrap();
    assert_eq!(p.state, ProgressState::Probe);
    assert_eq!((p.inflight(), p.next_index), (0, LogIndex(3)));
    assert!(!p.is_paused() && p.can_send_now(256), "probes at once");
    // Ignored on a follower and for unknown ids.
    net.node_mut(2).report_unreachable(id(3));
    net.node_mut(1).report_unreachable(id(9));
    // Once the link is back the probe repairs it.
    net.heal();
    net.tick_all(3);
    let p = net.node(1).progress(id(3)).unwrap();
    assert_eq!(
        (p.state, p.match_index),
        (ProgressState::Replicate, LogIndex(4))
    );
}

/// A leader compacted up to 8 while 3 was away, and started sending 3 its
/// snapshot (26 bytes in chunks of 5); the first chunk is lost.
fn snapshot_in_flight() -> Network {
    let mut net = Network::with_config(3, |c| c.max_snapshot_chunk_bytes = 5);
    net.campaign(1);
    net.isolate(3);
    for _ in 0..10 {
        net.propose(1, b"e").unwrap();
    }
    net.node_mut(1)
        .storage_mut()
        .compact(
            LogIndex(8),
            Bytes::from_static(b"state after eleven entries"),
        )
        .unwrap();
    // 3 answers nothing: the leader falls back to probing from its match
    // index, which is compacted, so it sends the snapshot.
    net.node_mut(1).report_unreachable(id(3));
    net.drive(id(1));
    net.deliver_all();
    let p = net.node(1).progress(id(3)).unwrap();
    assert_eq!(p.state, ProgressState::Snapshot);
    assert_eq!(p.snapshot_transfer(), Some((LogIndex(8), 0, 26)));
    assert!(p.is_paused(), "waits for the chunk's answer");
    net
}

fn snapshot_offsets_to_3(net: &Network) -> Vec<u64> {
    net.delivered
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::InstallSnapshot { offset, .. } if m.to == id(3) => Some(*offset),
            _ => None,
        })
        .collect()
}

#[test]
fn report_snapshot_failed_restarts_the_transfer_after_a_heartbeat() {
    let mut net = snapshot_in_flight();
    net.node_mut(1)
        .report_snapshot(id(3), SnapshotStatus::Failed);
    let p = net.node(1).progress(id(3)).unwrap();
    assert_eq!(p.state, ProgressState::Probe);
    assert_eq!((p.next_index, p.snapshot_transfer()), (LogIndex(2), None));
    assert!(p.is_paused(), "no retry before the peer answers");
    net.heal();
    net.tick_all(4);
    assert_eq!(snapshot_offsets_to_3(&net), [0, 5, 10, 15, 20, 25]);
    assert_eq!(net.installed[&id(3)].len(), 1);
    assert_eq!(net.node(3).applied_index(), LogIndex(11));
}

#[test]
fn report_snapshot_finished_waits_for_the_ack_and_a_wrong_report_is_repaired() {
    let mut net = snapshot_in_flight();
    // Reports on peers not receiving a snapshot change nothing.
    net.node_mut(1)
        .report_snapshot(id(2), SnapshotStatus::Finished);
    assert_eq!(
        net.node(1).progress(id(2)).unwrap().state,
        ProgressState::Replicate
    );
    net.node_mut(1)
        .report_snapshot(id(3), SnapshotStatus::Finished);
    let p = net.node(1).progress(id(3)).unwrap();
    assert_eq!((p.state, p.next_index), (ProgressState::Probe, LogIndex(9)));
    assert!(p.is_paused());
    // The transport was wrong (the chunk was lost): the probe after the
    // snapshot is rejected and the snapshot goes again.
    net.heal();
    net.tick_all(4);
    assert_eq!(net.installed[&id(3)].len(), 1);
    assert_eq!(net.node(3).applied_index(), LogIndex(11));
    assert_eq!(
        net.node(1).progress(id(3)).unwrap().state,
        ProgressState::Replicate
    );
}

// ---------- leadership transfer: abort and timeout ----------

#[test]
fn an_aborted_transfer_accepts_proposals_again() {
    let mut net = Network::new(3);
    net.campaign(1);
    // The TimeoutNow to 2 is lost.
    net.cut(1, 2);
    net.node_mut(1).transfer_leadership(id(2)).unwrap();
    net.drive(id(1));
    net.deliver_all();
    assert_eq!(net.node(1).transferee(), Some(id(2)));
    assert!(matches!(
        net.propose(1, b"x"),
        Err(Error::TransferInProgress { to }) if to == id(2)
    ));
    assert_eq!(net.node_mut(1).abort_transfer(), Some(id(2)));
    assert_eq!(net.node_mut(1).abort_transfer(), None);
    assert_eq!(net.node(1).transferee(), None);
    net.propose(1, b"x").unwrap();
    net.heal();
    net.tick_all(3);
    assert_eq!(net.leaders(), [id(1)]);
    assert_eq!(net.applied_data(2), [Bytes::from_static(b"x")]);
}

#[test]
fn a_transfer_times_out_after_an_election_timeout() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.cut(1, 2);
    net.node_mut(1).transfer_leadership(id(2)).unwrap();
    net.drive(id(1));
    net.deliver_all();
    let election_tick = net.node(1).config().election_tick;
    for _ in 0..election_tick - 1 {
        net.node_mut(1).tick();
        net.drive(id(1));
    }
    assert!(matches!(
        net.node_mut(1).propose(Bytes::from_static(b"x")),
        Err(Error::TransferInProgress { .. })
    ));
    net.node_mut(1).tick();
    assert_eq!(net.node(1).transferee(), None);
    net.node_mut(1).propose(Bytes::from_static(b"x")).unwrap();
}

// ---------- proposal caps ----------

#[test]
fn commands_above_the_entry_limit_are_refused() {
    let mut net = Network::with_config(3, |c| c.max_entry_bytes = 8);
    net.campaign(1);
    assert!(matches!(
        net.propose(1, b"123456789"),
        Err(Error::EntryTooLarge { size: 9, max: 8 })
    ));
    net.propose(1, b"12345678").unwrap();
    assert_eq!(net.applied_data(3), [Bytes::from_static(b"12345678")]);
}

#[test]
fn uncommitted_bytes_are_capped_until_they_commit() {
    let mut net = Network::with_config(3, |c| c.max_uncommitted_bytes = 10);
    net.campaign(1);
    assert_eq!(net.node(1).uncommitted_bytes(), 0, "its own no-op is free");
    net.isolate(1);
    net.propose(1, b"666666").unwrap();
    assert_eq!(net.node(1).uncommitted_bytes(), 6);
    assert!(matches!(
        net.propose(1, b"55555"),
        Err(Error::UncommittedLimit {
            uncommitted: 6,
            size: 5,
            max: 10
        })
    ));
    net.propose(1, b"4444").unwrap();
    assert!(matches!(
        net.propose(1, b"1"),
        Err(Error::UncommittedLimit { .. })
    ));
    net.propose(1, b"").unwrap();
    assert_eq!(net.node(1).uncommitted_bytes(), 10);
    // Forwarded commands meet the same cap.
    let term = net.node(1).term();
    let forwarded = net.node_mut(1).step(Message {
        from: NodeId(2),
        to: NodeId(1),
        term,
        body: MessageBody::ForwardedProposal {
            commands: vec![Bytes::from_static(b"f"), Bytes::from_static(b"g")],
        },
    });
    assert_eq!(
        forwarded.unwrap(),
        StepOutcome::Dropped(DropReason::ForwardedRefused {
            from: NodeId(2),
            refused: 2
        })
    );
    // Once they commit, the budget is back; with nothing uncommitted one
    // command above the cap still goes in, so none is refused forever.
    net.heal();
    net.tick_all(3);
    assert_eq!(net.node(1).commit_index(), net.node(1).last_index());
    assert_eq!(net.node(1).uncommitted_bytes(), 0);
    net.isolate(1);
    net.propose(1, b"more than ten bytes").unwrap();
    assert_eq!(net.node(1).uncommitted_bytes(), 19);
    assert!(matches!(
        net.propose(1, b"1"),
        Err(Error::UncommittedLimit {
            uncommitted: 19,
            ..
        })
    ));
    net.propose(1, b"").unwrap();
    // A new leader does not inherit the count.
    net.heal();
    net.campaign(2);
    assert_eq!(net.leaders(), [id(2)]);
    assert_eq!(net.node(1).uncommitted_bytes(), 0);
    assert_eq!(net.node(2).uncommitted_bytes(), 0);
}
