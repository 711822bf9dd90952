//! Scenario tests named after the sections of the Raft paper (Ongaro and
//! Ousterhout, "In Search of an Understandable Consensus Algorithm",
//! extended version), in the manner of etcd-raft's `raft_paper_test.go`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use bytes::Bytes;
use harness::{Network, id};
use quorate_raft_core::{
    AppendOutcome, Config, Configuration, DropReason, Entry, Error, HardState, LogIndex,
    MemStorage, Message, MessageBody, Node, NodeId, Role, StepOutcome, Term,
};

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        data: Bytes::from(format!("{index}@{term}")),
    }
}

/// A storage holding a log with the given entry terms.
fn storage_with_log(voters: u64, terms: &[u64], current_term: u64) -> MemStorage {
    let mut s = MemStorage::new(Configuration::new((1..=voters).map(NodeId)));
    let entries: Vec<Entry> = terms
        .iter()
        .enumerate()
        .map(|(i, t)| entry(i as u64 + 1, *t))
        .collect();
    s.append(&entries).unwrap();
    s.set_hard_state(HardState {
        term: Term(current_term),
        vote: None,
        commit: LogIndex::ZERO,
    });
    s
}

/// Persists and applies everything `node` asks for; returns the messages.
fn drive(node: &mut Node<MemStorage>) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(mut ready) = node.ready().unwrap() {
        out.extend(ready.take_messages());
        node.storage_mut().append(ready.entries()).unwrap();
        if let Some(hs) = ready.hard_state() {
            node.storage_mut().set_hard_state(hs);
        }
        node.advance(ready).unwrap();
    }
    out
}

fn msg(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message {
        from: id(from),
        to: id(to),
        term: Term(term),
        body,
    }
}

fn single(id_: u64, storage: MemStorage) -> Node<MemStorage> {
    Node::new(Config::new(id(id_)), storage).unwrap()
}

// ---------- §5.2 Leader election ----------

#[test]
fn leader_election_5_2_candidate_with_majority_becomes_leader() {
    let mut net = Network::new(3);
    net.campaign(1);
    assert_eq!(net.leaders(), vec![id(1)]);
    for n in 2..=3 {
        assert_eq!(net.node(n).role(), Role::Follower);
        assert_eq!(net.node(n).leader(), Some(id(1)));
        assert_eq!(net.node(n).term(), Term(1));
    }
}

#[test]
fn leader_election_5_2_candidate_without_majority_stays_candidate() {
    let mut net = Network::new(5);
    for n in 3..=5 {
        net.cut(1, n);
    }
    net.campaign(1);
    assert_eq!(
        net.node(1).role(),
        Role::Candidate,
        "one vote of five is not a majority"
    );
    assert!(net.leaders().is_empty());
}

#[test]
fn leader_election_5_2_each_server_votes_for_at_most_one_candidate_per_term() {
    let mut node = single(1, storage_with_log(3, &[], 0));
    let ask = |from| {
        msg(
            from,
            1,
            1,
            MessageBody::RequestVote {
                last_log_index: LogIndex(0),
                last_log_term: Term(0),
                leadership_transfer: false,
            },
        )
    };
    node.step(ask(2)).unwrap();
    node.step(ask(3)).unwrap();
    let replies = drive(&mut node);
    let granted: Vec<(NodeId, bool)> = replies
        .iter()
        .map(|m| match m.body {
            MessageBody::RequestVoteResponse { granted } => (m.to, granted),
            _ => panic!("unexpected {m:?}"),
        })
        .collect();
    assert_eq!(granted, vec![(id(2), true), (id(3), false)]);
    // Asking again (a retry) gets the same answer.
    node.step(ask(2)).unwrap();
    assert!(matches!(
        drive(&mut node)[0].body,
        MessageBody::RequestVoteResponse { granted: true }
    ));
}

#[test]
fn leader_election_5_2_leader_steps_down_on_higher_term() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.isolate(1);
    net.campaign(2);
    assert_eq!(net.node(2).role(), Role::Leader);
    assert_eq!(
        net.node(1).role(),
        Role::Leader,
        "isolated, it does not know yet"
    );
    net.heal();
    net.tick_all(3); // the old leader's heartbeat draws a reply with term 2
    assert_eq!(net.node(1).role(), Role::Follower);
    assert_eq!(net.node(1).term(), Term(2));
    assert_eq!(net.leaders(), vec![id(2)]);
}

#[test]
fn leader_election_5_2_candidate_steps_down_when_another_leader_appends() {
    let mut net = Network::new(3);
    net.cut(1, 2);
    net.cut(1, 3);
    net.campaign(1); // term 1, no votes
    net.campaign(2); // term 1 as well? No: node 2 is at term 0, so term 1.
    assert_eq!(net.node(2).role(), Role::Leader);
    net.heal();
    net.tick_all(3);
    assert_eq!(net.node(1).role(), Role::Follower);
    assert_eq!(net.node(1).leader(), Some(id(2)));
}

#[test]
fn leader_election_5_2_randomized_timeouts_elect_exactly_one_leader() {
    for seed in 0..20 {
        let mut net = Network::with_config(5, |c| c.seed = seed);
        let mut ticks = 0;
        while net.leaders().is_empty() {
            net.tick_all(1);
            ticks += 1;
            assert!(ticks < 200, "seed {seed}: no leader after 200 ticks");
        }
        let leader = net.leaders()[0];
        let term = net.nodes[&leader].term();
        // Every other node follows that leader in that term.
        net.tick_all(3);
        for node in net.nodes.values() {
            assert_eq!(node.term(), term, "seed {seed}");
            assert_eq!(node.leader(), Some(leader), "seed {seed}");
        }
    }
}

// ---------- §5.3 Log replication ----------

#[test]
fn log_replication_5_3_leader_commits_once_a_majority_stores_the_entry() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.propose(1, b"x").unwrap();
    net.propose(1, b"y").unwrap();
    for n in 1..=3 {
        assert_eq!(
            net.applied_data(n),
            vec![Bytes::from_static(b"x"), Bytes::from_static(b"y")]
        );
    }
    assert_eq!(net.node(1).commit_index(), LogIndex(3), "no-op plus two");
}

#[test]
fn log_replication_5_3_entry_on_a_minority_is_not_committed() {
    let mut net = Network::new(5);
    net.campaign(1);
    for n in 3..=5 {
        net.cut(1, n);
    }
    let index = net.propose(1, b"x").unwrap();
    assert!(net.node(1).commit_index() < index);
    assert!(net.applied_data(1).is_empty());
    net.heal();
    net.tick_all(3);
    assert_eq!(net.node(1).commit_index(), index);
    for n in 1..=5 {
        assert_eq!(net.applied_data(n), vec![Bytes::from_static(b"x")]);
    }
}

#[test]
fn log_replication_5_3_lagging_follower_catches_up() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.isolate(3);
    for _ in 0..10 {
        net.propose(1, b"e").unwrap();
    }
    assert!(net.applied_data(3).is_empty());
    net.heal();
    net.tick_all(3);
    assert_eq!(net.applied_data(3).len(), 10);
    assert_eq!(net.node(3).last_index(), net.node(1).last_index());
}

#[test]
fn log_replication_5_3_conflicting_follower_entries_are_overwritten() {
    // Figure 7 (f) in miniature: node 3 holds entries of terms 2 and 3 that
    // never committed; the leader of term 4 has [1, 1, 4].
    let mut net = Network::new(3);
    *net.node_mut(1) = single(1, storage_with_log(3, &[1, 1], 3));
    *net.node_mut(2) = single(2, storage_with_log(3, &[1, 1], 3));
    *net.node_mut(3) = single(3, storage_with_log(3, &[1, 2, 2, 3, 3, 3], 3));
    net.campaign(1);
    assert_eq!(net.node(1).role(), Role::Leader);
    net.propose(1, b"new").unwrap();
    net.tick_all(3);
    let mut leader_log = Vec::new();
    let mut follower_log = Vec::new();
    net.node(1)
        .log_entries(LogIndex(1), &mut leader_log)
        .unwrap();
    net.node(3)
        .log_entries(LogIndex(1), &mut follower_log)
        .unwrap();
    assert_eq!(follower_log, leader_log);
    let terms: Vec<u64> = follower_log.iter().map(|e| e.term.0).collect();
    assert_eq!(terms, vec![1, 1, 4, 4]);
}

#[test]
fn log_replication_5_3_fast_backtracking_skips_a_term_per_round_trip() {
    // Node 3 holds 50 stale entries of term 2; the leader's log diverges
    // after index 1. Backtracking one entry per rejection would take 50
    // round trips; with the conflict-term hint it takes one.
    let mut stale = vec![1];
    stale.extend([2; 50]);
    let mut net = Network::new(3);
    *net.node_mut(1) = single(1, storage_with_log(3, &[1, 3, 3], 3));
    *net.node_mut(2) = single(2, storage_with_log(3, &[1, 3, 3], 3));
    *net.node_mut(3) = single(3, storage_with_log(3, &stale, 3));
    net.campaign(1);
    net.tick_all(3);
    let rejections = net
        .delivered
        .iter()
        .filter(|m| {
            m.from == id(3)
                && matches!(
                    m.body,
                    MessageBody::AppendEntriesResponse {
                        outcome: AppendOutcome::Conflict { .. }
                    }
                )
        })
        .count();
    assert_eq!(rejections, 1);
    assert_eq!(net.node(3).last_index(), net.node(1).last_index());
    assert_eq!(net.node(3).log_term(LogIndex(2)).unwrap(), Some(Term(3)));
}

// ---------- §5.4 Safety ----------

#[test]
fn safety_5_4_1_vote_denied_to_candidate_with_less_up_to_date_log() {
    // Node 2's last entry has a higher term; node 3's log is longer.
    let mut net = Network::new(3);
    *net.node_mut(1) = single(1, storage_with_log(3, &[1, 1], 2));
    *net.node_mut(2) = single(2, storage_with_log(3, &[1, 2], 2));
    *net.node_mut(3) = single(3, storage_with_log(3, &[1, 1, 1], 2));
    net.campaign(1);
    assert_ne!(net.node(1).role(), Role::Leader);
    let answers: Vec<(NodeId, bool)> = net
        .delivered
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::RequestVoteResponse { granted } => Some((m.from, granted)),
            _ => None,
        })
        .collect();
    assert_eq!(
        answers,
        vec![(id(2), false), (id(3), false)],
        "a higher last term and a longer log both beat node 1's log"
    );
    net.campaign(2);
    assert_eq!(
        net.node(2).role(),
        Role::Leader,
        "node 2's log is the most up to date"
    );
}

#[test]
fn safety_5_4_2_entries_of_earlier_terms_are_not_committed_by_counting_replicas() {
    // Figure 8 (c): node 1 leads term 4 with entry 2 of term 2 in its log.
    let mut leader = single(1, storage_with_log(5, &[1, 2], 3));
    leader.campaign();
    drive(&mut leader);
    for from in [2, 3] {
        leader
            .step(msg(
                from,
                1,
                4,
                MessageBody::RequestVoteResponse { granted: true },
            ))
            .unwrap();
    }
    assert_eq!(leader.role(), Role::Leader);
    drive(&mut leader); // persists the no-op at index 3
    let ack = |from, index| {
        msg(
            from,
            1,
            4,
            MessageBody::AppendEntriesResponse {
                outcome: AppendOutcome::Success {
                    match_index: LogIndex(index),
                },
            },
        )
    };
    // Entry 2 (term 2) is now on nodes 1, 2, 3: a majority, yet not committed.
    leader.step(ack(2, 2)).unwrap();
    leader.step(ack(3, 2)).unwrap();
    assert_eq!(leader.commit_index(), LogIndex(0));
    // Once the term-4 entry is on a majority, both commit.
    leader.step(ack(2, 3)).unwrap();
    assert_eq!(leader.commit_index(), LogIndex(0), "two of five");
    leader.step(ack(3, 3)).unwrap();
    assert_eq!(leader.commit_index(), LogIndex(3));
}

#[test]
fn safety_5_4_3_new_leader_holds_every_committed_entry() {
    let mut net = Network::new(5);
    net.campaign(1);
    for _ in 0..5 {
        net.propose(1, b"c").unwrap();
    }
    let committed = net.node(1).commit_index();
    net.crash(1);
    net.crash(2);
    net.tick_all(60);
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1);
    let mut log = Vec::new();
    net.nodes[&leaders[0]]
        .log_entries(LogIndex(1), &mut log)
        .unwrap();
    assert!(log.len() as u64 >= committed.0);
}

// ---------- §5.5 Follower and candidate crashes ----------

#[test]
fn crashes_5_5_restarted_follower_recovers_from_persisted_state_and_catches_up() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.propose(1, b"a").unwrap();
    net.crash(3);
    net.propose(1, b"b").unwrap();
    net.restart(3);
    assert_eq!(net.node(3).term(), Term(1), "term survives the crash");
    assert_eq!(net.node(3).last_index(), LogIndex(2), "no-op and a");
    net.tick_all(3);
    assert_eq!(net.node(3).last_index(), LogIndex(3));
    // Its applied list keeps "a" from before the crash; having no
    // persisted applied index, the restarted node applies its committed
    // entries again from the start (applying must be idempotent or the
    // state machine must persist its applied index).
    assert_eq!(
        net.applied_data(3),
        vec![
            Bytes::from_static(b"a"),
            Bytes::from_static(b"a"),
            Bytes::from_static(b"b")
        ]
    );
}

#[test]
fn crashes_5_5_crashed_candidate_keeps_its_vote_for_itself() {
    let mut net = Network::new(3);
    net.isolate(1);
    net.campaign(1);
    net.crash(1);
    net.restart(1);
    assert_eq!(net.node(1).term(), Term(1));
    assert_eq!(net.node(1).vote(), Some(id(1)));
    // It refuses to vote for another candidate in that term.
    let mut node = net.nodes.remove(&id(1)).unwrap();
    node.step(msg(
        2,
        1,
        1,
        MessageBody::RequestVote {
            last_log_index: LogIndex(5),
            last_log_term: Term(1),
            leadership_transfer: false,
        },
    ))
    .unwrap();
    assert!(matches!(
        drive(&mut node)[0].body,
        MessageBody::RequestVoteResponse { granted: false }
    ));
}

// ---------- The persistence contract ----------

#[test]
fn persistence_vote_is_not_sent_before_it_is_durable() {
    let mut node = single(1, storage_with_log(3, &[], 0));
    node.step(msg(
        2,
        1,
        1,
        MessageBody::RequestVote {
            last_log_index: LogIndex(0),
            last_log_term: Term(0),
            leadership_transfer: false,
        },
    ))
    .unwrap();
    let ready = node.ready().unwrap().unwrap();
    assert!(
        ready.messages().is_empty(),
        "the grant waits for the vote to be durable"
    );
    assert_eq!(ready.hard_state().unwrap().vote, Some(id(2)));
    // Crash before persisting: the vote is lost and was never announced.
    drop(ready);
    let storage = node.into_storage();
    let mut node = single(1, storage);
    assert_eq!(node.vote(), None);
    node.step(msg(
        3,
        1,
        1,
        MessageBody::RequestVote {
            last_log_index: LogIndex(0),
            last_log_term: Term(0),
            leadership_transfer: false,
        },
    ))
    .unwrap();
    let replies = drive(&mut node);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].to, id(3));
    assert_eq!(node.storage().hard_state().vote, Some(id(3)));
}

#[test]
fn persistence_append_is_acknowledged_only_after_advance() {
    let mut node = single(2, storage_with_log(3, &[], 0));
    node.step(msg(
        1,
        2,
        1,
        MessageBody::AppendEntries {
            prev_log_index: LogIndex(0),
            prev_log_term: Term(0),
            entries: vec![entry(1, 1)],
            leader_commit: LogIndex(0),
        },
    ))
    .unwrap();
    let mut ready = node.ready().unwrap().unwrap();
    assert!(ready.take_messages().is_empty());
    assert_eq!(ready.entries().len(), 1);
    node.storage_mut().append(ready.entries()).unwrap();
    node.storage_mut()
        .set_hard_state(ready.hard_state().unwrap());
    node.advance(ready).unwrap();
    let mut ready = node.ready().unwrap().unwrap();
    let acks = ready.take_messages();
    assert!(matches!(
        acks[0].body,
        MessageBody::AppendEntriesResponse {
            outcome: AppendOutcome::Success {
                match_index: LogIndex(1)
            }
        }
    ));
    node.advance(ready).unwrap();
}

#[test]
fn persistence_candidate_counts_itself_only_once_its_vote_is_durable() {
    let mut node = single(1, storage_with_log(1, &[], 0));
    node.campaign();
    assert_eq!(node.role(), Role::Candidate);
    let ready = node.ready().unwrap().unwrap();
    assert_eq!(
        node.role(),
        Role::Candidate,
        "vote for itself not yet durable"
    );
    node.storage_mut()
        .set_hard_state(ready.hard_state().unwrap());
    node.advance(ready).unwrap();
    assert_eq!(node.role(), Role::Leader);
    // The leader's own no-op commits once it is durable on the leader.
    drive(&mut node);
    assert_eq!(node.commit_index(), LogIndex(1));
}

#[test]
fn persistence_readies_must_be_advanced_in_order() {
    let mut node = single(1, storage_with_log(1, &[], 0));
    node.campaign();
    let first = node.ready().unwrap().unwrap();
    node.tick();
    let mut second = None;
    for _ in 0..40 {
        node.tick();
        if let Some(r) = node.ready().unwrap() {
            second = Some(r);
            break;
        }
    }
    let second = second.unwrap();
    assert!(matches!(
        node.advance(second),
        Err(Error::ReadyOutOfOrder {
            expected: 0,
            got: 1
        })
    ));
    node.advance(first).unwrap();
}

// ---------- Client interaction and bad input ----------

#[test]
fn client_interaction_8_follower_refuses_proposals_with_a_leader_hint() {
    let mut net = Network::new(3);
    net.campaign(2);
    match net.propose(1, b"x") {
        Err(Error::NotLeader { leader_hint }) => assert_eq!(leader_hint, Some(id(2))),
        other => panic!("expected NotLeader, got {other:?}"),
    }
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let mut node = single(1, storage_with_log(3, &[1], 1));
    let before = (node.term(), node.last_index(), node.vote());
    let append = |from, to, entries| {
        msg(
            from,
            to,
            5,
            MessageBody::AppendEntries {
                prev_log_index: LogIndex(1),
                prev_log_term: Term(1),
                entries,
                leader_commit: LogIndex(0),
            },
        )
    };
    assert!(matches!(
        node.step(append(2, 9, vec![])),
        Ok(StepOutcome::Dropped(DropReason::WrongRecipient { .. }))
    ));
    // Non-members may not vote or campaign (a removed server must not
    // disrupt, thesis §4.2.3). A leader's appends from a node we do not
    // know yet are taken: lagging nodes learn new members from the log.
    let vote_request = msg(
        9,
        1,
        6,
        MessageBody::RequestVote {
            last_log_index: LogIndex(9),
            last_log_term: Term(5),
            leadership_transfer: false,
        },
    );
    assert!(matches!(
        node.step(vote_request),
        Ok(StepOutcome::Dropped(DropReason::UnknownPeer { .. }))
    ));
    assert!(matches!(
        node.step(append(2, 1, vec![entry(3, 5)])),
        Ok(StepOutcome::Dropped(DropReason::Malformed { .. }))
    ));
    assert!(matches!(
        node.step(append(2, 1, vec![entry(2, 6)])),
        Ok(StepOutcome::Dropped(DropReason::Malformed { .. }))
    ));
    assert_eq!((node.term(), node.last_index(), node.vote()), before);
    assert!(node.ready().unwrap().is_none());
}

#[test]
fn bad_input_stale_leader_append_over_committed_entries_is_answered_not_refused() {
    // Node 1 committed [1@1, 2@2] in term 2. A deposed leader of term 1
    // still sends its version of index 2: legal, just stale.
    let mut storage = storage_with_log(3, &[1, 2], 2);
    storage.set_hard_state(HardState {
        term: Term(2),
        vote: None,
        commit: LogIndex(2),
    });
    let mut node = single(1, storage);
    node.step(msg(
        2,
        1,
        1,
        MessageBody::AppendEntries {
            prev_log_index: LogIndex(1),
            prev_log_term: Term(1),
            entries: vec![entry(2, 1)],
            leader_commit: LogIndex(2),
        },
    ))
    .unwrap();
    let replies = drive(&mut node);
    assert_eq!(replies.len(), 1);
    assert_eq!(
        replies[0].term,
        Term(2),
        "tells the stale leader the new term"
    );
    // The same from a leader of the current term is refused.
    assert!(matches!(
        node.step(msg(
            3,
            1,
            2,
            MessageBody::AppendEntries {
                prev_log_index: LogIndex(1),
                prev_log_term: Term(1),
                entries: vec![entry(2, 1)],
                leader_commit: LogIndex(2),
            }
        )),
        Ok(StepOutcome::Dropped(DropReason::ConflictWithCommitted {
            index: LogIndex(2),
            ..
        }))
    ));
}

// ---------- Thesis §9.6 pre-vote, §6.2 / §4.2.3 check-quorum ----------

#[test]
fn prevote_9_6_rejoining_partitioned_node_does_not_disrupt_the_leader() {
    let mut net = Network::with_config(3, |c| c.pre_vote = true);
    net.campaign(1);
    assert_eq!(net.leaders(), vec![id(1)]);
    net.isolate(3);
    net.tick_all(100); // node 3 times out again and again
    assert_eq!(net.node(3).term(), Term(1), "pre-votes never move the term");
    assert_eq!(net.node(3).role(), Role::PreCandidate);
    net.heal();
    net.tick_all(30);
    assert_eq!(net.leaders(), vec![id(1)]);
    assert_eq!(net.node(1).term(), Term(1), "the leader was not unseated");
    assert_eq!(net.node(3).leader(), Some(id(1)));
}

#[test]
fn prevote_9_6_without_it_a_rejoining_node_does_disrupt() {
    // The contrast that shows the test above measures something.
    let mut net = Network::new(3);
    net.campaign(1);
    net.isolate(3);
    net.tick_all(100);
    assert!(net.node(3).term() > Term(1));
    net.heal();
    net.tick_all(30);
    assert!(
        net.node(1).term() > Term(1),
        "the old leader had to step down"
    );
}

#[test]
fn prevote_9_6_a_pre_candidate_that_can_win_starts_a_real_election() {
    let mut net = Network::with_config(3, |c| c.pre_vote = true);
    net.campaign(2);
    assert_eq!(net.leaders(), vec![id(2)]);
    assert_eq!(net.node(2).term(), Term(1));
    // Leader crashes: the others stop hearing from it and elect a new one.
    net.crash(2);
    net.tick_all(60);
    assert_eq!(net.leaders().len(), 1);
    assert_eq!(net.nodes[&net.leaders()[0]].term(), Term(2));
}

#[test]
fn check_quorum_6_2_leader_without_a_quorum_steps_down() {
    let mut net = Network::with_config(3, |c| c.check_quorum = true);
    net.campaign(1);
    net.isolate(1);
    let election_tick = net.node(1).config().election_tick;
    net.tick_all(2 * election_tick);
    assert_eq!(net.node(1).role(), Role::Follower);
    assert!(matches!(net.propose(1, b"x"), Err(Error::NotLeader { .. })));
}

#[test]
fn check_quorum_4_2_3_followers_in_lease_ignore_disruptive_vote_requests() {
    let mut net = Network::with_config(3, |c| c.check_quorum = true);
    net.campaign(1);
    net.tick_all(1);
    // Node 3 asks for votes in term 2 while 2 still hears from leader 1.
    let mut node2 = net.nodes.remove(&id(2)).unwrap();
    node2
        .step(msg(
            3,
            2,
            2,
            MessageBody::RequestVote {
                last_log_index: LogIndex(10),
                last_log_term: Term(1),
                leadership_transfer: false,
            },
        ))
        .unwrap();
    assert_eq!(node2.term(), Term(1), "ignored: no term change");
    assert!(drive(&mut node2).is_empty(), "and no answer");
}

// ---------- Thesis §6.4 linearizable reads (ReadIndex) ----------

/// Reads node `n` confirmed since the last call.
fn confirmed_reads(net: &mut Network, n: u64) -> Vec<quorate_raft_core::ReadState> {
    net.drive(id(n));
    net.read_states.remove(&id(n)).unwrap_or_default()
}

#[test]
fn read_index_6_4_leader_confirms_reads_with_a_heartbeat_quorum() {
    let mut net = Network::new(3);
    net.campaign(1);
    let written = net.propose(1, b"x").unwrap();
    net.node_mut(1).read_index(7).unwrap();
    // Not confirmed until the followers answer the heartbeat round.
    let before = confirmed_reads(&mut net, 1);
    assert!(before.is_empty());
    net.deliver_all();
    let reads = confirmed_reads(&mut net, 1);
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].id, 7);
    assert!(
        reads[0].index >= written,
        "the read sees the committed write"
    );
}

#[test]
fn read_index_6_4_deposed_leader_never_confirms_a_read() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.isolate(1);
    net.campaign(2);
    net.propose(2, b"new").unwrap();
    // Node 1 still believes it leads; its read must not be confirmed.
    net.node_mut(1).read_index(1).unwrap();
    net.deliver_all();
    net.tick_all(10);
    assert!(
        confirmed_reads(&mut net, 1).is_empty(),
        "a stale read would be served"
    );
    net.heal();
    net.tick_all(5);
    assert_ne!(net.node(1).role(), Role::Leader);
    assert!(
        confirmed_reads(&mut net, 1).is_empty(),
        "dropped on stepping down"
    );
}

#[test]
fn read_index_6_4_needs_a_commit_in_the_leaders_term_and_a_leader() {
    let mut node = single(1, storage_with_log(3, &[1], 1));
    node.campaign();
    drive(&mut node);
    node.step(msg(
        2,
        1,
        2,
        MessageBody::RequestVoteResponse { granted: true },
    ))
    .unwrap();
    assert_eq!(node.role(), Role::Leader);
    assert!(matches!(
        node.read_index(1),
        Err(Error::NoCommitInTerm { term: Term(2) })
    ));
    let mut follower = single(2, storage_with_log(3, &[], 0));
    assert!(matches!(
        follower.read_index(1),
        Err(Error::NotLeader { .. })
    ));
}

// ---------- Learners (non-voting members) ----------

#[test]
fn learners_receive_the_log_but_neither_vote_nor_count() {
    let members = Configuration::new([id(1), id(2), id(3)]).with_learners([id(4)]);
    let mut net = Network::with_members(members, |_| {});
    net.campaign(1);
    net.propose(1, b"a").unwrap();
    assert_eq!(net.applied_data(4), vec![Bytes::from_static(b"a")]);
    // With both voters cut off, the learner's acknowledgement is no quorum.
    net.cut(1, 2);
    net.cut(1, 3);
    let index = net.propose(1, b"b").unwrap();
    assert_eq!(net.node(4).last_index(), index, "the learner has it");
    assert!(net.node(1).commit_index() < index, "but it does not count");
    // A learner never campaigns, however long it hears nothing.
    net.isolate(4);
    net.tick_all(100);
    assert_eq!(net.node(4).role(), Role::Follower);
    assert_eq!(net.node(4).term(), Term(1));
}

// ---------- Thesis §3.10 leadership transfer ----------

#[test]
fn leadership_transfer_3_10_hands_over_to_an_up_to_date_voter() {
    let mut net = Network::with_config(3, |c| c.check_quorum = true);
    net.campaign(1);
    net.propose(1, b"a").unwrap();
    net.node_mut(1).transfer_leadership(id(3)).unwrap();
    net.drive(id(1));
    net.deliver_all();
    assert_eq!(
        net.leaders(),
        vec![id(3)],
        "even though followers were in lease"
    );
    assert_eq!(net.node(3).term(), Term(2));
    net.propose(3, b"b").unwrap();
    assert_eq!(
        net.applied_data(1),
        vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
    );
}

#[test]
fn leadership_transfer_3_10_catches_a_lagging_transferee_up_first_and_blocks_proposals() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.isolate(3);
    for _ in 0..5 {
        net.propose(1, b"x").unwrap();
    }
    net.node_mut(1).transfer_leadership(id(3)).unwrap();
    assert!(matches!(
        net.propose(1, b"refused"),
        Err(Error::TransferInProgress { to }) if to == id(3)
    ));
    net.heal();
    net.tick_all(4);
    assert_eq!(net.leaders(), vec![id(3)]);
    assert_eq!(net.node(3).last_index(), net.node(1).last_index());
}

#[test]
fn leadership_transfer_3_10_forfeits_lease_reads_for_the_term() {
    // A TimeoutNow may be delayed past an abandoned transfer and then start
    // an election that ignores leases: the leader stops lease reads.
    let mut net = Network::with_config(3, |c| c.check_quorum = true);
    net.campaign(1);
    net.tick_all(2);
    net.node_mut(1).read_lease(1).unwrap();
    net.cut(1, 3); // the TimeoutNow is lost, the transfer abandoned
    net.node_mut(1).transfer_leadership(id(3)).unwrap();
    net.drive(id(1));
    net.deliver_all();
    let election_tick = net.node(1).config().election_tick;
    net.heal();
    net.tick_all(election_tick);
    assert_eq!(net.node(1).transferee(), None);
    assert_eq!(net.leaders(), vec![id(1)]);
    assert!(matches!(
        net.node_mut(1).read_lease(2),
        Err(Error::LeaseUnavailable)
    ));
    net.node_mut(1).read_index(3).unwrap();
}

#[test]
fn leadership_transfer_3_10_is_abandoned_after_an_election_timeout() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.crash(3);
    net.node_mut(1).transfer_leadership(id(3)).unwrap();
    let election_tick = net.node(1).config().election_tick;
    net.tick_all(election_tick);
    assert_eq!(net.node(1).transferee(), None);
    assert_eq!(net.leaders(), vec![id(1)]);
    net.propose(1, b"accepted again").unwrap();
    assert!(matches!(
        net.node_mut(1).transfer_leadership(id(1)),
        Err(Error::NotAVoter { .. })
    ));
}

#[test]
fn read_lease_6_4_1_no_other_leader_while_the_lease_holds() {
    // Five nodes; 4 and 5 cannot hear leader 1. Node 2 crashes and comes
    // back: had it forgotten its promise to leader 1, 4 could win with
    // 2, 4 and 5 while 1 still serves reads under its lease.
    let mut net = Network::with_config(5, |c| c.check_quorum = true);
    net.campaign(1);
    net.propose(1, b"a").unwrap();
    net.cut(1, 4);
    net.cut(1, 5);
    // 4 and 5 stop hearing from 1 long enough to leave its lease; 2 and 3
    // keep answering heartbeats, so 1 keeps its lease.
    let election_tick = net.node(1).config().election_tick;
    net.tick_all(2 * election_tick);
    assert_eq!(net.leaders(), vec![id(1)]);
    net.node_mut(1).read_lease(1).unwrap();
    net.crash(2);
    net.restart(2);
    net.campaign(4);
    let leaders = net.leaders();
    let lease_read = net.node_mut(1).read_lease(2);
    assert!(
        leaders == vec![id(1)] || lease_read.is_err(),
        "leaders {leaders:?} while node 1 still serves lease reads"
    );
    net.heal();
    net.tick_all(4 * election_tick);
    assert_eq!(net.leaders().len(), 1);
}

#[test]
fn leader_election_5_2_a_candidate_leads_only_once_its_term_is_durable() {
    // Five voters; 2..5 grant at once while candidate 1's own hard state
    // (the new term and its vote) is still being written. Were 1 to lead
    // now, a crash before the write would bring it back in the old term,
    // free to win the same term again with a different log.
    let mut nodes: Vec<Node<MemStorage>> = (1..=5)
        .map(|i| Node::new(Config::new(id(i)), storage_with_log(5, &[], 0)).unwrap())
        .collect();
    nodes[0].campaign();
    let ready = nodes[0].ready().unwrap().unwrap();
    let term = ready.hard_state().unwrap().term;
    let requests = ready.messages().to_vec();
    for m in requests {
        let to = usize::try_from(m.to.0 - 1).unwrap();
        nodes[to].step(m).unwrap();
        for answer in drive(&mut nodes[to]) {
            nodes[0].step(answer).unwrap();
        }
    }
    assert_eq!(
        nodes[0].role(),
        Role::Candidate,
        "leads on a term not yet durable"
    );
    nodes[0]
        .storage_mut()
        .set_hard_state(ready.hard_state().unwrap());
    nodes[0].advance(ready).unwrap();
    assert_eq!(nodes[0].role(), Role::Leader);
    assert_eq!(nodes[0].term(), term);
}

#[test]
fn prevote_9_6_a_restarted_voter_refuses_pre_votes_while_it_honours_a_lease() {
    // Three nodes with pre-vote and check-quorum. 3 cannot hear leader 1;
    // 2 crashes and comes back, so it honours for an election timeout the
    // lease it may have promised 1 and would ignore 3's RequestVote. Were
    // it to grant 3's pre-vote, 3 would move to a new term that no one
    // backs, and unseat 1 as soon as 1 hears it.
    let mut net = Network::with_config(3, |c| {
        c.check_quorum = true;
        c.pre_vote = true;
    });
    net.campaign(1);
    net.propose(1, b"a").unwrap();
    let term = net.node(1).term();
    net.cut(1, 3);
    let election_tick = net.node(1).config().election_tick;
    net.tick_all(2 * election_tick);
    assert_eq!(net.leaders(), vec![id(1)]);
    net.crash(2);
    net.restart(2);
    net.campaign(3);
    assert_eq!(net.node(3).term(), term, "a pre-vote 2 could not back");
    net.heal();
    net.tick_all(2);
    assert_eq!(net.leaders(), vec![id(1)]);
    assert_eq!(net.node(1).term(), term, "leader 1 was unseated");
}

#[test]
fn read_lease_6_4_1_needs_check_quorum_and_expires_without_heartbeat_answers() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.tick_all(2);
    assert!(matches!(
        net.node_mut(1).read_lease(1),
        Err(Error::LeaseUnavailable)
    ));

    let mut net = Network::with_config(3, |c| c.check_quorum = true);
    net.campaign(1);
    net.tick_all(2);
    net.node_mut(1).read_lease(1).unwrap();
    net.isolate(1);
    let config = net.node(1).config().clone();
    let lease = config.election_tick - config.max_clock_drift_ticks - 1;
    net.tick_all(lease);
    assert!(net.node_mut(1).read_lease(2).is_err(), "expired");
}

// ---------- Proposal forwarding ----------

#[test]
fn forwarding_follower_sends_commands_to_the_leader_it_knows() {
    let mut net = Network::new(3);
    net.campaign(1);
    let proposed = net
        .node_mut(2)
        .propose_or_forward(Bytes::from_static(b"via 2"))
        .unwrap();
    assert_eq!(proposed, quorate_raft_core::Proposed::Forwarded(id(1)));
    net.drive(id(2));
    net.deliver_all();
    assert_eq!(net.applied_data(3), vec![Bytes::from_static(b"via 2")]);
    // On the leader it is an ordinary proposal.
    let on_leader = net
        .node_mut(1)
        .propose_or_forward(Bytes::from_static(b"x"))
        .unwrap();
    assert!(matches!(
        on_leader,
        quorate_raft_core::Proposed::Appended(_)
    ));
    // Without a known leader there is nowhere to forward to.
    let mut lone = single(1, storage_with_log(3, &[], 0));
    assert!(matches!(
        lone.propose_or_forward(Bytes::from_static(b"y")),
        Err(Error::NotLeader { leader_hint: None })
    ));
}

#[test]
fn forwarding_a_deposed_leader_drops_forwarded_commands() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.isolate(1);
    net.campaign(2);
    net.heal();
    net.tick_all(3);
    assert_eq!(net.node(1).role(), Role::Follower);
    // A command forwarded to node 1 while it led term 1 arrives late: node
    // 1 now follows in term 2 and drops it.
    let stale = msg(
        3,
        1,
        1,
        MessageBody::ForwardedProposal {
            commands: vec![Bytes::from_static(b"lost")],
        },
    );
    let mut node1 = net.nodes.remove(&id(1)).unwrap();
    let before = node1.last_index();
    node1.step(stale).unwrap();
    assert_eq!(node1.last_index(), before, "nothing appended");
}
