//! A synchronous test network in the style of raft-rs's harness: messages
//! are delivered in FIFO order until none are left; links can be cut,
//! nodes isolated and crashed.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use quorate_raft_core::{
    Config, Configuration, Entry, Error, HardState, LogIndex, MemStorage, Message, Node, NodeId,
    ReadState, Snapshot, StepOutcome, Term,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub struct Network {
    pub nodes: BTreeMap<NodeId, Node<MemStorage>>,
    /// The durable storage of crashed nodes.
    pub crashed: BTreeMap<NodeId, MemStorage>,
    configs: BTreeMap<NodeId, Config>,
    cut: BTreeSet<(NodeId, NodeId)>,
    queue: VecDeque<Message>,
    /// Every message delivered, for assertions.
    pub delivered: Vec<Message>,
    /// The entries each node applied, in order.
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    /// Reads each node confirmed (ReadIndex).
    pub read_states: BTreeMap<NodeId, Vec<ReadState>>,
    /// Snapshots each node installed from a leader.
    pub installed: BTreeMap<NodeId, Vec<Snapshot>>,
}

/// A storage for `members` holding entries 1.. with the given terms (each
/// with the payload `x`) and `hard_state`.
pub fn storage_with_terms(
    members: Configuration,
    terms: &[u64],
    hard_state: HardState,
) -> MemStorage {
    let mut storage = MemStorage::new(members);
    let entries: Vec<Entry> = terms
        .iter()
        .enumerate()
        .map(|(i, t)| Entry {
            term: Term(*t),
            index: LogIndex(i as u64 + 1),
            data: Bytes::from_static(b"x"),
        })
        .collect();
    storage.append(&entries).unwrap();
    storage.set_hard_state(hard_state);
    storage
}

pub fn id(n: u64) -> NodeId {
    NodeId(n)
}

impl Network {
    pub fn new(size: u64) -> Self {
        Self::with_config(size, |_| {})
    }

    pub fn with_config(size: u64, tweak: impl Fn(&mut Config)) -> Self {
        Self::with_members(Configuration::new((1..=size).map(NodeId)), tweak)
    }

    pub fn with_members(configuration: Configuration, tweak: impl Fn(&mut Config)) -> Self {
        let mut net = Network {
            nodes: BTreeMap::new(),
            crashed: BTreeMap::new(),
            configs: BTreeMap::new(),
            cut: BTreeSet::new(),
            queue: VecDeque::new(),
            delivered: Vec::new(),
            applied: BTreeMap::new(),
            read_states: BTreeMap::new(),
            installed: BTreeMap::new(),
        };
        let members: Vec<u64> = configuration.members().map(|m| m.0).collect();
        for n in members {
            let mut config = Config::new(NodeId(n));
            config.seed = 7;
            tweak(&mut config);
            let node = Node::new(config.clone(), MemStorage::new(configuration.clone())).unwrap();
            net.configs.insert(NodeId(n), config);
            net.nodes.insert(NodeId(n), node);
            net.applied.insert(NodeId(n), Vec::new());
        }
        net
    }

    /// Starts node `n` with an empty log, booting with `boot` (the current
    /// voters, itself a learner) until it learns the configuration.
    pub fn add_node(&mut self, n: u64, boot: Configuration) {
        let mut config = Config::new(NodeId(n));
        config.seed = 7;
        let node = Node::new(config.clone(), MemStorage::new(boot)).unwrap();
        self.configs.insert(NodeId(n), config);
        self.nodes.insert(NodeId(n), node);
        self.applied.insert(NodeId(n), Vec::new());
    }

    pub fn node(&self, n: u64) -> &Node<MemStorage> {
        &self.nodes[&NodeId(n)]
    }

    pub fn node_mut(&mut self, n: u64) -> &mut Node<MemStorage> {
        self.nodes.get_mut(&NodeId(n)).unwrap()
    }

    /// Runs the ready loop of node `n`: persist, queue messages, apply.
    pub fn drive(&mut self, n: NodeId) {
        let Some(node) = self.nodes.get_mut(&n) else {
            return;
        };
        while let Some(mut ready) = node.ready().unwrap() {
            self.queue.extend(ready.take_messages());
            self.read_states
                .entry(n)
                .or_default()
                .extend(ready.take_read_states());
            if let Some(snapshot) = ready.take_snapshot() {
                node.storage_mut().apply_snapshot(snapshot.clone());
                self.installed.entry(n).or_default().push(snapshot);
            }
            node.storage_mut().append(ready.entries()).unwrap();
            if let Some(hs) = ready.hard_state() {
                node.storage_mut().set_hard_state(hs);
            }
            self.applied
                .get_mut(&n)
                .unwrap()
                .extend(ready.take_committed_entries());
            node.advance(ready).unwrap();
        }
    }

    /// How many messages are queued, not yet delivered.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Delivers queued messages until there are none.
    pub fn deliver_all(&mut self) {
        while let Some(m) = self.queue.pop_front() {
            self.deliver(m);
        }
    }

    /// Delivers one message (unless its link is cut); what the recipient
    /// sends in return is queued.
    fn deliver(&mut self, m: Message) {
        if self.cut.contains(&(m.from, m.to)) {
            return;
        }
        let to = m.to;
        let Some(node) = self.nodes.get_mut(&to) else {
            return;
        };
        self.delivered.push(m.clone());
        match node.step(m) {
            // Non-members (removed servers) are dropped, as designed, as
            // are stale and unexpected messages; honest peers send nothing
            // invalid.
            Ok(StepOutcome::Dropped(reason)) if reason.is_invalid() => {
                panic!("step refused: {reason}")
            }
            Ok(_) => {}
            Err(e) => panic!("step failed: {e}"),
        }
        self.drive(to);
    }

    /// Delivers the messages queued now that `pass` lets through, once:
    /// the others, and the messages the delivered ones cause, stay queued
    /// (a slow or delayed link).
    pub fn deliver_once(&mut self, pass: impl Fn(&Message) -> bool) {
        let (now, later): (Vec<Message>, Vec<Message>) =
            std::mem::take(&mut self.queue).into_iter().partition(&pass);
        self.queue.extend(later);
        for m in now {
            self.deliver(m);
        }
    }

    pub fn drive_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for n in ids {
            self.drive(n);
        }
        self.deliver_all();
    }

    pub fn campaign(&mut self, n: u64) {
        self.node_mut(n).campaign();
        self.drive(NodeId(n));
        self.deliver_all();
    }

    pub fn propose(&mut self, n: u64, data: &'static [u8]) -> Result<LogIndex, Error> {
        let index = self.node_mut(n).propose(Bytes::from_static(data))?;
        self.drive(NodeId(n));
        self.deliver_all();
        Ok(index)
    }

    /// Ticks every running node once and delivers the results.
    pub fn tick_all(&mut self, ticks: u32) {
        for _ in 0..ticks {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for n in ids {
                self.nodes.get_mut(&n).unwrap().tick();
                self.drive(n);
            }
            self.deliver_all();
        }
    }

    pub fn cut(&mut self, a: u64, b: u64) {
        self.cut.insert((NodeId(a), NodeId(b)));
        self.cut.insert((NodeId(b), NodeId(a)));
    }

    pub fn isolate(&mut self, a: u64) {
        let ids: Vec<u64> = self.configs.keys().map(|n| n.0).collect();
        for b in ids {
            if b != a {
                self.cut(a, b);
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Stops node `n`, keeping only what it persisted.
    pub fn crash(&mut self, n: u64) {
        if let Some(node) = self.nodes.remove(&NodeId(n)) {
            self.crashed.insert(NodeId(n), node.into_storage());
        }
        self.queue.retain(|m| m.to != NodeId(n));
    }

    pub fn restart(&mut self, n: u64) {
        let storage = self.crashed.remove(&NodeId(n)).unwrap();
        let node = Node::new(self.configs[&NodeId(n)].clone(), storage).unwrap();
        self.nodes.insert(NodeId(n), node);
        self.drive(NodeId(n));
    }

    /// Restarts node `n` with its configuration changed by `tweak` (for
    /// this start only).
    pub fn restart_with(&mut self, n: u64, tweak: impl FnOnce(&mut Config)) {
        let storage = self.crashed.remove(&NodeId(n)).unwrap();
        let mut config = self.configs[&NodeId(n)].clone();
        tweak(&mut config);
        let node = Node::new(config, storage).unwrap();
        self.nodes.insert(NodeId(n), node);
        self.drive(NodeId(n));
    }

    pub fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.role() == quorate_raft_core::Role::Leader)
            .map(|n| n.id())
            .collect()
    }

    /// The payloads node `n` applied, skipping leaders' no-op entries.
    pub fn applied_data(&self, n: u64) -> Vec<Bytes> {
        self.applied[&NodeId(n)]
            .iter()
            .filter(|e| !e.data.is_empty())
            .map(|e| e.data.clone())
            .collect()
    }
}
