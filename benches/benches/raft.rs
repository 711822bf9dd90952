//! Raft replication throughput: a 3-node cluster in one thread, no I/O,
//! 100,000 entries of 16 bytes proposed in batches of 64, each batch driven
//! until every node applied it. quorate-raft-core against raft-rs 0.7
//! (`raft` crate) with the same harness, same message limits, same run.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use std::collections::VecDeque;
use std::time::Duration;

const ENTRIES: usize = 100_000;
const BATCH: usize = 64;
const PAYLOAD: usize = 16;
const MAX_SIZE_PER_MSG: u64 = 1 << 20;
const MAX_INFLIGHT: usize = 256;

mod quorate {
    use super::*;
    use quorate_raft_core::{Config, Configuration, MemStorage, Message, Node, NodeId, Role};

    pub(crate) struct Cluster {
        nodes: Vec<Node<MemStorage>>,
        queue: VecDeque<Message>,
        pub(crate) applied: [usize; 3],
    }

    impl Cluster {
        pub(crate) fn new() -> Self {
            let members = Configuration::new([NodeId(1), NodeId(2), NodeId(3)]);
            let nodes = (1..=3)
                .map(|id| {
                    let mut config = Config::new(NodeId(id));
                    config.election_tick = 10;
                    config.heartbeat_tick = 3;
                    config.max_size_per_msg = MAX_SIZE_PER_MSG;
                    config.max_inflight_msgs = MAX_INFLIGHT;
                    Node::new(config, MemStorage::new(members.clone())).unwrap()
                })
                .collect();
            let mut cluster = Cluster {
                nodes,
                queue: VecDeque::new(),
                applied: [0; 3],
            };
            cluster.nodes[0].campaign();
            cluster.settle();
            assert_eq!(cluster.nodes[0].role(), Role::Leader);
            cluster
        }

        fn pump(&mut self, i: usize) {
            let node = &mut self.nodes[i];
            while let Some(mut ready) = node.ready().unwrap() {
                self.queue.extend(ready.take_messages());
                node.storage_mut().append(ready.entries()).unwrap();
                if let Some(hs) = ready.hard_state() {
                    node.storage_mut().set_hard_state(hs);
                }
                self.applied[i] += ready
                    .committed_entries()
                    .iter()
                    .filter(|e| !e.data.is_empty())
                    .count();
                node.advance(ready).unwrap();
            }
        }

        fn settle(&mut self) {
            for i in 0..3 {
                self.pump(i);
            }
            while let Some(m) = self.queue.pop_front() {
                let i = (m.to.0 - 1) as usize;
                self.nodes[i].step(m).unwrap();
                self.pump(i);
            }
        }

        pub(crate) fn replicate(&mut self, payloads: Vec<Bytes>) {
            let mut payloads = payloads.into_iter();
            loop {
                let mut proposed = 0;
                for data in payloads.by_ref().take(BATCH) {
                    self.nodes[0].propose(data).unwrap();
                    proposed += 1;
                }
                if proposed == 0 {
                    break;
                }
                self.pump(0);
                self.settle();
            }
        }
    }

    /// Payloads carved out of one buffer: cloning them is a reference
    /// count, never an allocation.
    pub(crate) fn payloads(n: usize) -> Vec<Bytes> {
        let mut buf = BytesMut::zeroed(n * PAYLOAD);
        (0..n).map(|_| buf.split_to(PAYLOAD).freeze()).collect()
    }
}

mod raftrs {
    use super::*;
    use raft::eraftpb::{ConfState, Message};
    use raft::storage::MemStorage;
    use raft::{Config, RawNode, StateRole};

    pub(crate) struct Cluster {
        nodes: Vec<RawNode<MemStorage>>,
        queue: VecDeque<Message>,
        pub(crate) applied: [usize; 3],
    }

    impl Cluster {
        pub(crate) fn new() -> Self {
            let nodes = (1..=3u64)
                .map(|id| {
                    let config = Config {
                        id,
                        election_tick: 10,
                        heartbeat_tick: 3,
                        max_size_per_msg: MAX_SIZE_PER_MSG,
                        max_inflight_msgs: MAX_INFLIGHT,
                        // Merge a proposal into the append already queued
                        // for a peer: raft-rs's own batching, on for fairness.
                        batch_append: true,
                        ..Config::default()
                    };
                    let storage =
                        MemStorage::new_with_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
                    RawNode::with_default_logger(&config, storage).unwrap()
                })
                .collect();
            let mut cluster = Cluster {
                nodes,
                queue: VecDeque::new(),
                applied: [0; 3],
            };
            cluster.nodes[0].campaign().unwrap();
            cluster.settle();
            assert_eq!(cluster.nodes[0].raft.state, StateRole::Leader);
            cluster
        }

        fn count(applied: &mut usize, entries: &[raft::eraftpb::Entry]) {
            *applied += entries.iter().filter(|e| !e.data.is_empty()).count();
        }

        /// The Ready cycle as in raft-rs's `five_mem_node` example.
        fn pump(&mut self, i: usize) {
            let node = &mut self.nodes[i];
            while node.has_ready() {
                let mut ready = node.ready();
                self.queue.extend(ready.take_messages());
                Self::count(&mut self.applied[i], ready.committed_entries());
                let store = node.raft.raft_log.store.clone();
                if !ready.entries().is_empty() {
                    store.wl().append(ready.entries()).unwrap();
                }
                if let Some(hs) = ready.hs() {
                    store.wl().set_hardstate(hs.clone());
                }
                self.queue.extend(ready.take_persisted_messages());
                let mut light = node.advance(ready);
                if let Some(commit) = light.commit_index() {
                    store.wl().mut_hard_state().set_commit(commit);
                }
                self.queue.extend(light.take_messages());
                Self::count(&mut self.applied[i], light.committed_entries());
                node.advance_apply();
            }
        }

        fn settle(&mut self) {
            for i in 0..3 {
                self.pump(i);
            }
            while let Some(m) = self.queue.pop_front() {
                let i = (m.to - 1) as usize;
                self.nodes[i].step(m).unwrap();
                self.pump(i);
            }
        }

        pub(crate) fn replicate(&mut self, payloads: Vec<Vec<u8>>) {
            let mut payloads = payloads.into_iter();
            loop {
                let mut proposed = 0;
                for data in payloads.by_ref().take(BATCH) {
                    self.nodes[0].propose(vec![], data).unwrap();
                    proposed += 1;
                }
                if proposed == 0 {
                    break;
                }
                self.pump(0);
                self.settle();
            }
        }
    }

    /// raft-rs takes payloads as `Vec<u8>`: one allocation each, made here
    /// outside the measurement.
    pub(crate) fn payloads(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|_| vec![0u8; PAYLOAD]).collect()
    }
}

fn replicate(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft/replicate_100k_x16B_batch64");
    group
        .throughput(Throughput::Elements(ENTRIES as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    group.bench_function("quorate-raft-core", |b| {
        b.iter_batched(
            || (quorate::Cluster::new(), quorate::payloads(ENTRIES)),
            |(mut cluster, payloads)| {
                cluster.replicate(payloads);
                assert_eq!(cluster.applied, [ENTRIES; 3]);
                cluster
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("raft-rs 0.7", |b| {
        b.iter_batched(
            || (raftrs::Cluster::new(), raftrs::payloads(ENTRIES)),
            |(mut cluster, payloads)| {
                cluster.replicate(payloads);
                assert_eq!(cluster.applied, [ENTRIES; 3]);
                cluster
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, replicate);

/// `RAFT_ALLOC_PROBE=<quorate|raft-rs>:<entries>` replicates that many
/// entries once and exits, for counting heap allocations under
/// `valgrind` (two sizes; the difference divided by the entry difference
/// is the allocations per entry).
fn main() {
    if let Ok(probe) = std::env::var("RAFT_ALLOC_PROBE") {
        let (which, n) = probe.split_once(':').expect("which:entries");
        let n: usize = n.parse().expect("entries");
        match which {
            "quorate" => {
                let mut cluster = quorate::Cluster::new();
                cluster.replicate(quorate::payloads(n));
                assert_eq!(cluster.applied, [n; 3]);
            }
            _ => {
                let mut cluster = raftrs::Cluster::new();
                cluster.replicate(raftrs::payloads(n));
                assert_eq!(cluster.applied, [n; 3]);
            }
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
