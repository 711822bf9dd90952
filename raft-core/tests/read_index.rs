//! ReadIndex (thesis §6.4) under load: read rounds must not disturb log
//! replication, and the reads asked before one `ready` share one heartbeat
//! round.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use quorate_raft_core::{
    Config, Configuration, LogIndex, MemStorage, Message, MessageBody, Node, NodeId, ReadState,
    Role,
};
use std::collections::BTreeMap;

/// A cluster in hops: what is sent in one hop arrives, in order, in the
/// next; storage completes each Ready at once.
struct Hops {
    nodes: Vec<Node<MemStorage>>,
    in_transit: Vec<Message>,
    /// Every message sent, for assertions.
    sent: Vec<Message>,
    read_states: Vec<ReadState>,
}

impl Hops {
    fn new(size: u64, tweak: impl Fn(&mut Config)) -> Self {
        let members = Configuration::new((1..=size).map(NodeId));
        let nodes = (1..=size)
            .map(|n| {
                let mut c = Config::new(NodeId(n));
                c.seed = 5;
                tweak(&mut c);
                Node::new(c, MemStorage::new(members.clone())).unwrap()
            })
            .collect();
        Hops {
            nodes,
            in_transit: Vec::new(),
            sent: Vec::new(),
            read_states: Vec::new(),
        }
    }

    fn leader(&mut self) -> &mut Node<MemStorage> {
        &mut self.nodes[0]
    }

    /// Runs node `i`'s Ready loop: messages leave, writes complete.
    fn pump(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        while let Some(mut ready) = node.ready().unwrap() {
            let messages = ready.take_messages();
            self.sent.extend(messages.iter().cloned());
            self.in_transit.extend(messages);
            self.read_states.extend(ready.take_read_states());
            node.storage_mut().append(ready.entries()).unwrap();
            if let Some(hs) = ready.hard_state() {
                node.storage_mut().set_hard_state(hs);
            }
            let _ = ready.take_committed_entries();
            node.advance(ready).unwrap();
        }
    }

    /// Delivers what was sent in the last hop, ticks if asked, and runs
    /// every node's Ready loop.
    fn hop(&mut self, tick: bool) {
        for m in std::mem::take(&mut self.in_transit) {
            let to = m.to.0 as usize - 1;
            self.nodes[to].step(m).unwrap();
        }
        for i in 0..self.nodes.len() {
            if tick {
                self.nodes[i].tick();
            }
            self.pump(i);
        }
    }

    /// Node 1 becomes leader and commits its no-op.
    fn elect(&mut self) {
        self.leader().campaign();
        self.pump(0);
        for _ in 0..10 {
            self.hop(false);
        }
        assert_eq!(self.nodes[0].role(), Role::Leader);
        assert_eq!(self.nodes[0].commit_index(), self.nodes[0].last_index());
    }

    fn heartbeats_sent(&self, after: usize) -> Vec<u64> {
        self.sent[after..]
            .iter()
            .filter_map(|m| match m.body {
                MessageBody::Heartbeat { round, .. } => Some(round),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn reads_interleaved_with_a_deep_pipeline_ship_every_entry_once() {
    for size in [3, 5] {
        let mut c = Hops::new(size, |c| {
            c.max_inflight_msgs = 256;
            // Four 16-byte entries per AppendEntries: many appends per hop.
            c.max_size_per_msg = 64;
        });
        c.elect();
        let first = c.nodes[0].last_index().next();
        let mark = c.sent.len();
        let mut reads = 0;
        for hop in 0..60 {
            for _ in 0..32 {
                c.leader().propose(Bytes::from_static(&[7; 16])).unwrap();
            }
            for _ in 0..4 {
                c.leader().read_index(reads).unwrap();
                reads += 1;
            }
            // Tick-driven heartbeats interleave with the read rounds.
            c.hop(hop % 3 == 0);
        }
        for _ in 0..10 {
            c.hop(false);
        }
        let last = c.nodes[0].last_index();
        assert_eq!(c.nodes[0].commit_index(), last, "size {size}");
        // No message was lost, so each follower got each entry once.
        let mut shipped: BTreeMap<(NodeId, LogIndex), usize> = BTreeMap::new();
        for m in &c.sent[mark..] {
            if let MessageBody::AppendEntries { entries, .. } = &m.body {
                for e in entries {
                    *shipped.entry((m.to, e.index)).or_default() += 1;
                }
            }
        }
        let twice: Vec<_> = shipped.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "size {size}: shipped more than once: {:?}",
            &twice[..twice.len().min(5)]
        );
        let entries = (last.0 + 1 - first.0) as usize;
        assert_eq!(shipped.len(), entries * (size as usize - 1), "size {size}");
        assert_eq!(c.read_states.len() as u64, reads, "size {size}");
    }
}

#[test]
fn lost_appends_behind_reads_are_still_repaired_after_a_beat() {
    let mut c = Hops::new(3, |c| c.max_inflight_msgs = 256);
    c.elect();
    let committed = c.nodes[0].commit_index();
    for _ in 0..5 {
        c.leader().propose(Bytes::from_static(b"lost")).unwrap();
    }
    c.pump(0);
    // Every append is lost, so no commit moves and no later append makes
    // a follower reject: only heartbeat answers can reveal the loss.
    c.in_transit
        .retain(|m| !matches!(m.body, MessageBody::AppendEntries { .. }));
    let last = c.nodes[0].last_index();
    // Read rounds alone, without a tick-driven beat, are answered but are
    // no reason to send the window again.
    for id in 0..3 {
        c.leader().read_index(id).unwrap();
        c.hop(false);
    }
    c.hop(false);
    c.hop(false);
    assert_eq!(c.read_states.len(), 3);
    assert_eq!(c.nodes[0].commit_index(), committed);
    // After a tick-driven beat with the appends still unanswered, the next
    // heartbeat answer makes the leader probe and repair both followers.
    let heartbeat_tick = c.nodes[0].config().heartbeat_tick;
    for _ in 0..heartbeat_tick + 4 {
        c.hop(true);
    }
    assert_eq!(c.nodes[0].commit_index(), last);
    for n in [2, 3] {
        assert_eq!(c.nodes[n - 1].last_index(), last);
    }
}

#[test]
fn reads_before_one_ready_share_one_heartbeat_round() {
    for size in [3u64, 5] {
        let mut c = Hops::new(size, |_| {});
        c.elect();
        let commit = c.nodes[0].commit_index();
        let mark = c.sent.len();
        let n = 6;
        for id in 0..n {
            c.leader().read_index(id).unwrap();
        }
        c.pump(0);
        let rounds = c.heartbeats_sent(mark);
        assert_eq!(rounds.len() as u64, size - 1, "one heartbeat per follower");
        assert!(rounds.iter().all(|r| *r == rounds[0]), "one round");
        assert!(c.read_states.is_empty(), "not confirmed before the answers");
        c.hop(false);
        c.hop(false);
        let expected: Vec<ReadState> = (0..n).map(|id| ReadState { id, index: commit }).collect();
        assert_eq!(c.read_states, expected, "size {size}");
        assert_eq!(c.heartbeats_sent(mark).len() as u64, size - 1);
    }
}

#[test]
fn a_read_is_confirmed_only_by_a_round_sent_after_it_was_asked() {
    let mut c = Hops::new(3, |_| {});
    c.elect();
    let mark = c.sent.len();
    c.leader().read_index(1).unwrap();
    c.pump(0);
    let first = c.heartbeats_sent(mark);
    // The followers answer round `first`; read 2 is asked while those
    // answers are on their way.
    c.hop(false);
    c.leader().read_index(2).unwrap();
    let asked = c.sent.len();
    c.hop(false);
    let ids: Vec<u64> = c.read_states.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![1], "the earlier round confirms only read 1");
    let second = c.heartbeats_sent(asked);
    assert_eq!(second.len(), 2, "a new round for read 2");
    assert!(second[0] > first[0]);
    c.hop(false);
    c.hop(false);
    let ids: Vec<u64> = c.read_states.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![1, 2]);
    // A read asked after a write committed sees it.
    let written = c.leader().propose(Bytes::from_static(b"w")).unwrap();
    for _ in 0..4 {
        c.hop(false);
    }
    assert_eq!(c.nodes[0].commit_index(), written);
    c.leader().read_index(3).unwrap();
    c.hop(false);
    c.hop(false);
    c.hop(false);
    assert_eq!(
        c.read_states.last(),
        Some(&ReadState {
            id: 3,
            index: written
        })
    );
}
