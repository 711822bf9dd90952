//! The multi-raft layer: coalescing, quiescence and liveness over real
//! `Node`s, driven by a small in-memory network.

use quorate_raft_core::multi::{Batch, GroupId, MultiConfig, MultiEvent, MultiRaft};
use quorate_raft_core::{Config, Configuration, MemStorage, Node, NodeId, Role};

struct Net {
    servers: Vec<MultiRaft<MemStorage>>,
    /// Servers cut off from everyone (their batches in and out are lost).
    isolated: Vec<NodeId>,
    batches: u64,
    messages: u64,
}

fn net(servers: u64, groups: u64) -> Net {
    let members = Configuration::new((1..=servers).map(NodeId));
    let servers = (1..=servers)
        .map(|id| {
            let mut s = MultiRaft::new(MultiConfig::new(NodeId(id))).unwrap();
            for g in 0..groups {
                let mut config = Config::new(NodeId(id));
                config.seed = g;
                config.pre_vote = true;
                config.check_quorum = true;
                let node = Node::new(config, MemStorage::new(members.clone())).unwrap();
                s.add_group(GroupId(g), node).unwrap();
            }
            s
        })
        .collect();
    Net {
        servers,
        isolated: Vec::new(),
        batches: 0,
        messages: 0,
    }
}

fn drain(server: &mut MultiRaft<MemStorage>, out: &mut Vec<Batch>) {
    while let Some((group, mut ready)) = server.ready().unwrap() {
        let mut node = server.group_mut(group).unwrap();
        if let Some(s) = ready.take_snapshot() {
            node.storage_mut().apply_snapshot(s);
        }
        node.storage_mut().append(ready.entries()).unwrap();
        if let Some(hs) = ready.hard_state() {
            node.storage_mut().set_hard_state(hs);
        }
        drop(node);
        server.advance(group, ready).unwrap();
    }
    while let Some(batch) = server.poll_transmit() {
        out.push(batch);
    }
}

impl Net {
    fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            let mut wire = Vec::new();
            for s in &mut self.servers {
                s.tick();
                drain(s, &mut wire);
            }
            // Deliver until quiet within the tick (zero latency).
            while !wire.is_empty() {
                let mut next = Vec::new();
                for b in wire {
                    if self.isolated.contains(&b.from) || self.isolated.contains(&b.to) {
                        continue;
                    }
                    self.batches += 1;
                    self.messages += b.messages.len() as u64;
                    let s = &mut self.servers[(b.to.0 - 1) as usize];
                    s.step(b).unwrap();
                    drain(s, &mut next);
                }
                wire = next;
            }
        }
    }

    fn leaders(&self, group: GroupId) -> Vec<(NodeId, u64)> {
        self.servers
            .iter()
            .filter_map(|s| s.group(group))
            .filter(|n| n.role() == Role::Leader)
            .map(|n| (n.id(), n.term().0))
            .collect()
    }
}

#[test]
fn idle_groups_quiesce_and_only_liveness_beats_remain() {
    let mut net = net(3, 50);
    net.run(1_000);
    for g in 0..50 {
        assert_eq!(net.leaders(GroupId(g)).len(), 1, "group {g}");
    }
    for s in &net.servers {
        let n = s.group(GroupId(0)).unwrap();
    }
    for s in &net.servers {
        assert_eq!(s.quiesced(), 50);
        assert_eq!(s.ticking(), 0);
    }
    let before = net.batches;
    net.run(1_000);
    let beats = net.batches - before;
    // 6 ordered pairs, one beat per liveness interval each.
    let expected = 6 * (1_000 / u64::from(MultiConfig::LIVENESS_INTERVAL) + 1);
    assert!(beats <= expected, "{beats} batches in 1,000 idle ticks");
}
