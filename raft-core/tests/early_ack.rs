//! Out-of-band persistence acknowledgments (thesis §10.2.1,
//! `Config::early_append_ack`): a follower answers at once that it received
//! and matched entries, and separately, after `advance`, that they are
//! durable. Only durable acknowledgments count towards commitment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use quorate_raft_core::{
    AppendOutcome, Config, Configuration, Entry, LogIndex, MemStorage, Message, MessageBody, Node,
    NodeId, Ready, Role, Storage, Term,
};
use std::collections::{BTreeSet, VecDeque};

/// A three-node cluster in lock step: a message sent at step `s` arrives at
/// step `s + 1`; each node's storage completes a write a fixed number of
/// steps after the Ready asked for it (writes pipelined, in order), or
/// never while stalled.
struct LockStep {
    nodes: Vec<Option<Node<MemStorage>>>,
    crashed: Vec<Option<MemStorage>>,
    configs: Vec<Config>,
    /// Per node: Readies whose write is in progress, with their due step.
    writes: Vec<VecDeque<(u64, Ready)>>,
    write_latency: Vec<u64>,
    stalled: Vec<bool>,
    in_transit: Vec<Message>,
    cut: BTreeSet<u64>,
    step: u64,
    /// Every message sent, for assertions.
    sent: Vec<Message>,
}

impl LockStep {
    fn new(tweak: impl Fn(&mut Config)) -> Self {
        let members = Configuration::new([1, 2, 3].map(NodeId));
        let configs: Vec<Config> = (1..=3)
            .map(|n| {
                let mut c = Config::new(NodeId(n));
                c.seed = 11;
                tweak(&mut c);
                c
            })
            .collect();
        let nodes = configs
            .iter()
            .map(|c| Some(Node::new(c.clone(), MemStorage::new(members.clone())).unwrap()))
            .collect();
        LockStep {
            nodes,
            crashed: vec![None, None, None],
            configs,
            writes: vec![VecDeque::new(), VecDeque::new(), VecDeque::new()],
            write_latency: vec![0; 3],
            stalled: vec![false; 3],
            in_transit: Vec::new(),
            cut: BTreeSet::new(),
            step: 0,
            sent: Vec::new(),
        }
    }

    fn node(&self, n: u64) -> &Node<MemStorage> {
        self.nodes[n as usize - 1].as_ref().unwrap()
    }

    fn node_mut(&mut self, n: u64) -> &mut Node<MemStorage> {
        self.nodes[n as usize - 1].as_mut().unwrap()
    }

    /// Collects node `i`'s Readies: messages leave now, writes are queued.
    fn pump(&mut self, i: usize) {
        while let Some(node) = self.nodes[i].as_mut() {
            let Some(mut ready) = node.ready().unwrap() else {
                return;
            };
            let messages = ready.take_messages();
            self.sent.extend(messages.iter().cloned());
            self.in_transit.extend(messages);
            let due = self.step + self.write_latency[i];
            self.writes[i].push_back((due, ready));
            self.complete_writes(i);
        }
    }

    /// Completes node `i`'s writes that are due: persist, then advance.
    fn complete_writes(&mut self, i: usize) {
        while !self.stalled[i] && self.writes[i].front().is_some_and(|(d, _)| *d <= self.step) {
            let (_, mut ready) = self.writes[i].pop_front().unwrap();
            let node = self.nodes[i].as_mut().unwrap();
            node.storage_mut().append(ready.entries()).unwrap();
            if let Some(hs) = ready.hard_state() {
                node.storage_mut().set_hard_state(hs);
            }
            let _ = ready.take_committed_entries();
            node.advance(ready).unwrap();
        }
    }

    /// One step: deliver what was sent last step, complete due writes, tick
    /// if asked, and collect new Readies.
    fn run_step(&mut self, tick: bool) {
        self.step += 1;
        for m in std::mem::take(&mut self.in_transit) {
            let to = m.to.0 as usize - 1;
            if self.cut.contains(&m.from.0) || self.cut.contains(&m.to.0) {
                continue;
            }
            if let Some(node) = self.nodes[to].as_mut() {
                node.step(m).unwrap();
            }
        }
        for i in 0..3 {
            if self.nodes[i].is_none() {
                continue;
            }
            self.complete_writes(i);
            if tick {
                self.nodes[i].as_mut().unwrap().tick();
            }
            self.pump(i);
        }
        self.check_commit_is_durable_on_a_quorum();
    }

    fn run(&mut self, steps: u64) {
        for _ in 0..steps {
            self.run_step(false);
        }
    }

    fn elect(&mut self, n: u64) {
        self.node_mut(n).campaign();
        self.pump(n as usize - 1);
        for _ in 0..20 {
            self.run_step(false);
            if self.node(n).role() == Role::Leader && self.node(n).commit_index() > LogIndex(0) {
                return;
            }
        }
        panic!("node {n} was not elected");
    }

    fn propose(&mut self, n: u64, count: usize) {
        for k in 0..count {
            self.node_mut(n)
                .propose(Bytes::from(format!("cmd {k}")))
                .unwrap();
        }
        self.pump(n as usize - 1);
    }

    /// Stops node `n`: what it did not persist is lost.
    fn crash(&mut self, n: u64) {
        let i = n as usize - 1;
        let node = self.nodes[i].take().unwrap();
        self.crashed[i] = Some(node.into_storage());
        self.writes[i].clear();
        self.in_transit.retain(|m| m.to != NodeId(n));
    }

    fn restart(&mut self, n: u64) {
        let i = n as usize - 1;
        let storage = self.crashed[i].take().unwrap();
        self.nodes[i] = Some(Node::new(self.configs[i].clone(), storage).unwrap());
        self.stalled[i] = false;
        self.pump(i);
    }

    /// The storage (durable state) of node `n`, running or crashed.
    fn durable_log(&self, n: u64) -> Vec<Entry> {
        let i = n as usize - 1;
        let storage = match (&self.nodes[i], &self.crashed[i]) {
            (Some(node), _) => node.storage(),
            (None, Some(s)) => s,
            (None, None) => unreachable!(),
        };
        storage.all_entries().to_vec()
    }

    /// The leader's commit index never runs ahead of what a quorum holds in
    /// storage, as the leader has it: nothing acknowledged only as received
    /// counts.
    fn check_commit_is_durable_on_a_quorum(&self) {
        for leader in self.nodes.iter().flatten() {
            if leader.role() != Role::Leader {
                continue;
            }
            let commit = leader.commit_index();
            let holders = (1..=3)
                .filter(|n| {
                    let log = self.durable_log(*n);
                    (1..=commit.0).all(|i| {
                        let held = log.iter().find(|e| e.index == LogIndex(i)).map(|e| e.term);
                        held.is_some() && held == leader.log_term(LogIndex(i)).unwrap()
                    })
                })
                .count();
            assert!(
                holders >= 2,
                "step {}: leader {} committed {commit} held durably by {holders} nodes",
                self.step,
                leader.id()
            );
        }
    }

    fn appends_sent(&self, from: u64, to: u64, after: usize) -> usize {
        self.sent[after..]
            .iter()
            .filter(|m| {
                m.from == NodeId(from)
                    && m.to == NodeId(to)
                    && matches!(&m.body, MessageBody::AppendEntries { entries, .. } if !entries.is_empty())
            })
            .count()
    }
}

fn small_window(early: bool) -> impl Fn(&mut Config) {
    move |c: &mut Config| {
        c.max_inflight_msgs = 2;
        // One entry per append, so the window counts entries.
        c.max_size_per_msg = 1;
        c.early_append_ack = early;
    }
}

#[test]
fn slow_follower_storage_window_slides_but_commit_waits_for_durable_acks() {
    for early in [false, true] {
        let mut c = LockStep::new(small_window(early));
        c.elect(1);
        let committed = c.node(1).commit_index();
        // Both followers' storage stops completing writes.
        c.stalled[1] = true;
        c.stalled[2] = true;
        let mark = c.sent.len();
        c.propose(1, 10);
        c.run(12);
        let last = c.node(1).last_index();
        assert_eq!(c.node(1).commit_index(), committed, "early={early}");
        let p = c.node(1).progress(NodeId(2)).unwrap();
        assert_eq!(p.match_index, committed, "received is not durable");
        if early {
            // Every entry went out: receipts freed the window.
            assert_eq!(c.appends_sent(1, 2, mark), 10);
            assert_eq!(p.next_index, last.next());
        } else {
            // The window of two waits for the stalled writes.
            assert_eq!(c.appends_sent(1, 2, mark), 2);
        }
        // Storage resumes: durable acknowledgments commit everything.
        c.stalled = vec![false; 3];
        c.run(30);
        assert_eq!(c.node(1).commit_index(), last, "early={early}");
        assert_eq!(c.node(2).persisted_index(), last);
    }
}

#[test]
fn follower_crash_before_advance_loses_nothing_acknowledged_durable() {
    let mut c = LockStep::new(small_window(true));
    c.elect(1);
    let committed = c.node(1).commit_index();
    // Follower 3 is away; follower 2 receives but cannot persist.
    c.cut.insert(3);
    c.stalled[1] = true;
    c.propose(1, 3);
    c.run(6);
    let received = c.sent.iter().any(|m| {
        m.from == NodeId(2)
            && matches!(
                m.body,
                MessageBody::AppendEntriesResponse {
                    outcome: AppendOutcome::Received { match_index }
                } if match_index > committed
            )
    });
    assert!(received, "follower 2 acknowledged receipt at once");
    let durable_claims = c.sent.iter().any(|m| {
        m.from == NodeId(2)
            && matches!(
                m.body,
                MessageBody::AppendEntriesResponse {
                    outcome: AppendOutcome::Success { match_index }
                } if match_index > committed
            )
    });
    assert!(!durable_claims, "nothing claimed durable before advance");
    assert_eq!(c.node(1).commit_index(), committed);
    // The follower crashes and loses the entries it only received.
    c.crash(2);
    assert!(c.durable_log(2).iter().all(|e| e.index <= committed));
    c.restart(2);
    // The leader believes 2 received everything; heartbeats find out that
    // nothing was acknowledged durable since, and it probes again.
    for _ in 0..30 {
        c.run_step(true);
    }
    assert_eq!(c.node(1).role(), Role::Leader);
    // The leader repairs it; the entries commit once durable on 2.
    let last = c.node(1).last_index();
    assert_eq!(c.node(1).commit_index(), last);
    assert_eq!(c.durable_log(2).last().unwrap().index, last);
}

#[test]
fn received_acks_never_count_towards_commitment() {
    let mut c = LockStep::new(small_window(true));
    c.elect(1);
    let committed = c.node(1).commit_index();
    c.propose(1, 1);
    let last = c.node(1).last_index();
    // Forged early acknowledgments from both followers: only receipts.
    let term = c.node(1).term();
    for from in [2, 3] {
        c.node_mut(1)
            .step(Message {
                from: NodeId(from),
                to: NodeId(1),
                term,
                body: MessageBody::AppendEntriesResponse {
                    outcome: AppendOutcome::Received { match_index: last },
                },
            })
            .unwrap();
    }
    c.pump(0);
    assert_eq!(c.node(1).commit_index(), committed);
    c.node_mut(1)
        .step(Message {
            from: NodeId(2),
            to: NodeId(1),
            term,
            body: MessageBody::AppendEntriesResponse {
                outcome: AppendOutcome::Success { match_index: last },
            },
        })
        .unwrap();
    assert_eq!(c.node(1).commit_index(), last, "a durable ack commits");
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        data: Bytes::from(format!("{index}@{term}")),
    }
}

fn append(from: u64, term: u64, prev: (u64, u64), entries: Vec<Entry>) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(2),
        term: Term(term),
        body: MessageBody::AppendEntries {
            prev_log_index: LogIndex(prev.0),
            prev_log_term: Term(prev.1),
            entries,
            leader_commit: LogIndex(0),
        },
    }
}

#[test]
fn durable_ack_of_entries_replaced_before_advance_is_never_sent() {
    let mut config = Config::new(NodeId(2));
    config.early_append_ack = true;
    let mut node = Node::new(
        config,
        MemStorage::new(Configuration::new([1, 2, 3].map(NodeId))),
    )
    .unwrap();
    // Leader 1 of term 1 sends entries 1-2; the write starts.
    node.step(append(1, 1, (0, 0), vec![entry(1, 1), entry(2, 1)]))
        .unwrap();
    let mut first = node.ready().unwrap().unwrap();
    let early = first.take_messages();
    assert!(early.iter().any(|m| matches!(
        m.body,
        MessageBody::AppendEntriesResponse {
            outcome: AppendOutcome::Received {
                match_index: LogIndex(2)
            }
        }
    )));
    // Before it is durable, leader 3 of term 2 replaces entry 1 onwards.
    node.step(append(3, 2, (0, 0), vec![entry(1, 2)])).unwrap();
    let second = node.ready().unwrap().unwrap();
    node.storage_mut().append(first.entries()).unwrap();
    node.advance(first).unwrap();
    node.storage_mut().append(second.entries()).unwrap();
    node.storage_mut()
        .set_hard_state(second.hard_state().unwrap());
    node.advance(second).unwrap();
    let mut out = Vec::new();
    while let Some(mut ready) = node.ready().unwrap() {
        out.extend(ready.take_messages());
        node.advance(ready).unwrap();
    }
    // The durable ack goes to the new leader, none to the old one: its
    // entry 2 was never durable here, and entry 1 is no longer its.
    assert!(out.iter().any(|m| m.to == NodeId(3)
        && matches!(
            m.body,
            MessageBody::AppendEntriesResponse {
                outcome: AppendOutcome::Success {
                    match_index: LogIndex(1)
                }
            }
        )));
    assert!(
        !out.iter().any(|m| m.to == NodeId(1)
            && matches!(
                m.body,
                MessageBody::AppendEntriesResponse {
                    outcome: AppendOutcome::Success { .. }
                }
            )),
        "{out:?}"
    );
    assert_eq!(node.storage().last_index().unwrap(), LogIndex(1));
}

#[test]
fn stale_term_acks_are_ignored_by_a_newer_leader() {
    let mut c = LockStep::new(small_window(true));
    c.elect(1);
    c.propose(1, 2);
    c.run(10);
    // Node 2 takes over in a later term; an old ack from node 1's term
    // arrives late, claiming far more than node 2 has acknowledged.
    c.elect(2);
    let commit = c.node(2).commit_index();
    let old_term = Term(c.node(2).term().0 - 1);
    let last = c.node(2).last_index();
    c.node_mut(2)
        .step(Message {
            from: NodeId(3),
            to: NodeId(2),
            term: old_term,
            body: MessageBody::AppendEntriesResponse {
                outcome: AppendOutcome::Success { match_index: last },
            },
        })
        .unwrap();
    assert_eq!(c.node(2).commit_index(), commit);
}

#[cfg(feature = "serde")]
#[test]
fn serde_carries_received_acks_and_old_configs_default_the_option_off() {
    let m = Message {
        from: NodeId(2),
        to: NodeId(1),
        term: Term(4),
        body: MessageBody::AppendEntriesResponse {
            outcome: AppendOutcome::Received {
                match_index: LogIndex(9),
            },
        },
    };
    let json = serde_json::to_string(&m).unwrap();
    assert_eq!(serde_json::from_str::<Message>(&json).unwrap(), m);
    // A configuration serialized before the option existed still loads.
    let mut value = serde_json::to_value(Config::new(NodeId(1))).unwrap();
    value
        .as_object_mut()
        .unwrap()
        .remove("early_append_ack")
        .unwrap();
    let config: Config = serde_json::from_value(value).unwrap();
    assert!(!config.early_append_ack);
}
