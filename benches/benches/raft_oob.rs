//! Out-of-band persistence acknowledgments (`Config::early_append_ack`,
//! Raft thesis §10.2.1).
//!
//! 1. A deterministic measurement, printed first: a 3-node cluster in lock
//!    step (a message sent at step s arrives at step s + 1; every node's
//!    storage completes a write N steps after the Ready asked for it,
//!    writes pipelined in order), in-flight window 4, one entry per
//!    AppendEntries, the leader always holding a backlog of proposals.
//!    Committed entries per step, with and without early acks.
//! 2. A criterion timing of the CPU cost of the extra acknowledgments:
//!    10,000 entries replicated with instant storage, with and without.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use quorate_raft_core::{
    Config, Configuration, LogIndex, MemStorage, Message, Node, NodeId, Ready, Role,
};
use std::collections::VecDeque;
use std::time::Duration;

const WINDOW: usize = 4;

struct LockStep {
    nodes: Vec<Node<MemStorage>>,
    /// Per node: writes in progress with the step they complete at.
    writes: Vec<VecDeque<(u64, Ready)>>,
    latency: u64,
    in_transit: Vec<Message>,
    step: u64,
    messages: u64,
}

impl LockStep {
    fn new(latency: u64, early_append_ack: bool, max_size_per_msg: u64) -> Self {
        let members = Configuration::new([1, 2, 3].map(NodeId));
        let nodes = (1..=3)
            .map(|id| {
                let mut config = Config::new(NodeId(id));
                config.max_inflight_msgs = WINDOW;
                config.max_size_per_msg = max_size_per_msg;
                config.early_append_ack = early_append_ack;
                Node::new(config, MemStorage::new(members.clone())).unwrap()
            })
            .collect();
        let mut cluster = LockStep {
            nodes,
            writes: (0..3).map(|_| VecDeque::new()).collect(),
            latency,
            in_transit: Vec::new(),
            step: 0,
            messages: 0,
        };
        cluster.nodes[0].campaign();
        cluster.pump(0);
        while cluster.nodes[0].role() != Role::Leader
            || cluster.nodes[0].commit_index() == LogIndex::ZERO
        {
            cluster.run_step();
        }
        cluster
    }

    fn pump(&mut self, i: usize) {
        while let Some(mut ready) = self.nodes[i].ready().unwrap() {
            let out = ready.take_messages();
            self.messages += out.len() as u64;
            self.in_transit.extend(out);
            self.writes[i].push_back((self.step + self.latency, ready));
            self.complete_writes(i);
        }
    }

    fn complete_writes(&mut self, i: usize) {
        while self.writes[i]
            .front()
            .is_some_and(|(due, _)| *due <= self.step)
        {
            let (_, mut ready) = self.writes[i].pop_front().unwrap();
            let node = &mut self.nodes[i];
            node.storage_mut().append(ready.entries()).unwrap();
            if let Some(hs) = ready.hard_state() {
                node.storage_mut().set_hard_state(hs);
            }
            let _ = ready.take_committed_entries();
            node.advance(ready).unwrap();
        }
    }

    fn run_step(&mut self) {
        self.step += 1;
        for m in std::mem::take(&mut self.in_transit) {
            let to = m.to.0 as usize - 1;
            self.nodes[to].step(m).unwrap();
        }
        for i in 0..3 {
            self.complete_writes(i);
            self.pump(i);
        }
    }

    /// Keeps a backlog of 64 uncommitted proposals on the leader.
    fn feed(&mut self) {
        let leader = &mut self.nodes[0];
        while leader.last_index().0 < leader.commit_index().0 + 64 {
            leader.propose(Bytes::from_static(&[7; 16])).unwrap();
        }
        self.pump(0);
    }

    fn commit(&self) -> u64 {
        self.nodes[0].commit_index().0
    }
}

/// Committed entries per step and messages per committed entry, measured
/// over 2,000 steps after 100 steps of warm-up.
fn measure(latency: u64, early: bool) -> (f64, f64) {
    let mut c = LockStep::new(latency, early, 1);
    for _ in 0..100 {
        c.feed();
        c.run_step();
    }
    let (commit, messages) = (c.commit(), c.messages);
    const STEPS: u64 = 2_000;
    for _ in 0..STEPS {
        c.feed();
        c.run_step();
    }
    let committed = (c.commit() - commit) as f64;
    (
        committed / STEPS as f64,
        (c.messages - messages) as f64 / committed,
    )
}

fn report() {
    println!("Out-of-band persistence acks: 3 nodes, window {WINDOW}, one entry per append,");
    println!("network 1 step each way, every node's writes take N steps (pipelined).");
    println!(
        "| write latency N (steps) | entries/step, acks after durability | entries/step, early acks | ratio | messages/entry off / on |"
    );
    println!("|---|---|---|---|---|");
    for latency in [0, 1, 2, 4, 8, 16] {
        let (off, msgs_off) = measure(latency, false);
        let (on, msgs_on) = measure(latency, true);
        println!(
            "| {latency} | {off:.2} | {on:.2} | {:.2}x | {msgs_off:.2} / {msgs_on:.2} |",
            on / off
        );
    }
}

const ENTRIES: u64 = 10_000;

/// Replicates `ENTRIES` entries with instant storage, windows of 4
/// messages of up to 64 entries.
fn replicate(early: bool) -> LockStep {
    let mut c = LockStep::new(0, early, 64 * 32);
    while c.commit() < ENTRIES {
        c.feed();
        c.run_step();
    }
    c
}

fn overhead(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft_oob/instant_storage");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(ENTRIES));
    for (name, early) in [("acks_after_durability", false), ("early_acks", true)] {
        group.bench_function(name, |b| {
            b.iter_batched(|| (), |()| replicate(early), BatchSize::PerIteration);
        });
    }
    group.finish();
}

criterion_group!(benches, overhead);

fn main() {
    report();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
