//! The multi-raft layer: coalescing, quiescence and liveness over real
//! `Node`s, driven by a small in-memory network.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use quorate_raft_core::multi::{Batch, GroupId, MultiConfig, MultiEvent, MultiRaft};
use quorate_raft_core::{Config, Configuration, MemStorage, Node, NodeId, Role};

struct Net {
    servers: Vec<MultiRaft<MemStorage>>,
    /// Servers cut off from everyone (their batches in and out are lost).
    isolated: Vec<NodeId>,
    /// Directed links that lose every batch.
    cut: Vec<(NodeId, NodeId)>,
    /// Groups whose replicas must not campaign, and the first that did
    /// (checked after every input, not only at the end of a tick).
    watch: Vec<u64>,
    campaigned: Option<(u64, NodeId, Role)>,
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
        cut: Vec::new(),
        watch: Vec::new(),
        campaigned: None,
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
            for i in 0..self.servers.len() {
                self.servers[i].tick();
                drain(&mut self.servers[i], &mut wire);
                self.check_watched(i);
            }
            // Deliver until quiet within the tick (zero latency).
            while !wire.is_empty() {
                let mut next = Vec::new();
                for b in wire {
                    if self.isolated.contains(&b.from)
                        || self.isolated.contains(&b.to)
                        || self.cut.contains(&(b.from, b.to))
                    {
                        continue;
                    }
                    self.batches += 1;
                    self.messages += b.messages.len() as u64;
                    let i = (b.to.0 - 1) as usize;
                    self.servers[i].step(b).unwrap();
                    drain(&mut self.servers[i], &mut next);
                    self.check_watched(i);
                }
                wire = next;
            }
        }
    }

    fn check_watched(&mut self, i: usize) {
        let s = &self.servers[i];
        for g in &self.watch {
            let role = s.group(GroupId(*g)).unwrap().role();
            if !matches!(role, Role::Leader | Role::Follower) && self.campaigned.is_none() {
                self.campaigned = Some((*g, s.config().id, role));
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

/// Runs `ticks` ticks; no replica of `groups` may campaign, at any
/// moment.
fn run_without_campaigns(net: &mut Net, ticks: u64, groups: &[u64]) {
    net.watch = groups.to_vec();
    net.run(ticks);
    assert_eq!(net.campaigned, None, "(group, server, role) campaigned");
    net.watch.clear();
}

/// The leader and term of every group.
fn leadership(net: &Net, groups: u64) -> Vec<Vec<(NodeId, u64)>> {
    (0..groups).map(|g| net.leaders(GroupId(g))).collect()
}

/// Two followers of a live, quiet leader stop hearing each other. Each
/// server counted the other down and woke every group with a replica
/// there, its followers included; their leader (which still hears both)
/// stayed quiet, so the woken followers found their election timeout long
/// past, campaigned, and the other quiet followers (no lease to honour
/// after the quiet spell) granted the pre-vote and the vote: elections in
/// every healthy group. A follower needs waking only when its leader's
/// server changes.
#[test]
fn a_link_lost_between_two_followers_does_not_unseat_a_live_quiet_leader() {
    let groups = 30;
    let mut net = net(5, groups);
    net.run(1_000);
    for s in &net.servers {
        assert_eq!(s.quiesced(), groups as usize);
    }
    let before = leadership(&net, groups);
    // Groups whose followers are servers 2 and 3.
    let led_by_1: Vec<u64> = (0..groups)
        .filter(|g| before[*g as usize] .first().map(|l| l.0) == Some(NodeId(1)))
        .collect();
    assert!(!led_by_1.is_empty());
    net.cut = vec![(NodeId(2), NodeId(3)), (NodeId(3), NodeId(2))];
    let timeout = u64::from(MultiConfig::LIVENESS_TIMEOUT);
    run_without_campaigns(&mut net, timeout + 200, &led_by_1);
    assert!(!net.servers[1].is_live(NodeId(3)), "the cut was seen");
    let after = leadership(&net, groups);
    for g in led_by_1 {
        assert_eq!(after[g as usize], before[g as usize], "group {g} kept its leader");
    }
}

/// Restarts server `id` (index `id - 1`) from its storage with a new
/// incarnation.
fn restart(net: &mut Net, id: u64, incarnation: u64) {
    let i = (id - 1) as usize;
    let groups: Vec<GroupId> = net.servers[i].groups().map(|(g, _)| g).collect();
    let mut config = MultiConfig::new(NodeId(id));
    config.incarnation = incarnation;
    let mut server = MultiRaft::new(config).unwrap();
    for g in groups {
        let node = net.servers[i].remove_group(g).unwrap();
        let node_config = node.config().clone();
        let node = Node::new(node_config, node.into_storage()).unwrap();
        server.add_group(g, node).unwrap();
    }
    net.servers[i] = server;
}

/// Found by the multi-raft simulation: a follower server restarts and the
/// others learn of its new incarnation a little apart (its first batch to
/// each goes out when it has something to say). The leader's server
/// learns first, wakes its groups, catches the restarted follower up and
/// quiesces again; then the other follower's server learns, and woke
/// every group with a replica on the restarted server, its followers of
/// the live, quiet leader included. Those found their election timeout
/// long past and campaigned; the restarted follower, quiet too by then,
/// granted: every group of the leader re-elected for nothing.
#[test]
fn a_follower_restart_seen_late_does_not_unseat_a_live_quiet_leader() {
    let groups = 30;
    let mut net = net(3, groups);
    net.run(1_000);
    let before = leadership(&net, groups);
    let led_by_1: Vec<u64> = (0..groups)
        .filter(|g| before[*g as usize].first().map(|l| l.0) == Some(NodeId(1)))
        .collect();
    assert!(!led_by_1.is_empty());
    // Server 3 restarts; server 2 hears of it only 100 ticks later.
    restart(&mut net, 3, 1);
    net.cut = vec![(NodeId(3), NodeId(2))];
    net.run(100);
    assert!(
        net.servers[0].poll_event().is_some(),
        "server 1 saw the restart"
    );
    net.cut.clear();
    run_without_campaigns(&mut net, 300, &led_by_1);
    assert!(
        std::iter::from_fn(|| net.servers[1].poll_event())
            .any(|e| e == MultiEvent::PeerRestarted(NodeId(3))),
        "server 2 saw the restart"
    );
    let after = leadership(&net, groups);
    for g in led_by_1 {
        assert_eq!(after[g as usize], before[g as usize], "group {g} kept its leader");
    }
    for s in &net.servers {
        assert_eq!(s.quiesced(), groups as usize, "quiet again");
    }
}


