//! The multi-raft layer: coalescing, quiescence and liveness over real
//! `Node`s, driven by a small in-memory network.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use quorate_raft_core::multi::{Batch, GroupId, MultiConfig, MultiEvent, MultiRaft};
use quorate_raft_core::{Config, Configuration, Error, MemStorage, Node, NodeId, Role};

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
        .filter(|g| before[*g as usize].first().map(|l| l.0) == Some(NodeId(1)))
        .collect();
    assert!(!led_by_1.is_empty());
    net.cut = vec![(NodeId(2), NodeId(3)), (NodeId(3), NodeId(2))];
    let timeout = u64::from(MultiConfig::LIVENESS_TIMEOUT);
    run_without_campaigns(&mut net, timeout + 200, &led_by_1);
    assert!(!net.servers[1].is_live(NodeId(3)), "the cut was seen");
    let after = leadership(&net, groups);
    for g in led_by_1 {
        assert_eq!(
            after[g as usize], before[g as usize],
            "group {g} kept its leader"
        );
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
        assert_eq!(
            after[g as usize], before[g as usize],
            "group {g} kept its leader"
        );
    }
    for s in &net.servers {
        assert_eq!(s.quiesced(), groups as usize, "quiet again");
    }
}

/// The server leading the most groups.
fn busiest(net: &Net, groups: u64) -> NodeId {
    let mut count = [0u64; 8];
    for g in 0..groups {
        for (l, _) in net.leaders(GroupId(g)) {
            count[l.0 as usize] += 1;
        }
    }
    let best = (1..=net.servers.len()).max_by_key(|i| count[*i]).unwrap();
    NodeId(best as u64)
}

/// The groups `id` leads.
fn led_by(net: &Net, groups: u64, id: NodeId) -> Vec<u64> {
    (0..groups)
        .filter(|g| net.leaders(GroupId(*g)).iter().any(|(l, _)| *l == id))
        .collect()
}

/// The leader of `group` among `among`, with a term above `above`.
fn new_leader(net: &Net, group: u64, among: &[NodeId], above: u64) -> Option<NodeId> {
    net.leaders(GroupId(group))
        .into_iter()
        .find(|(l, t)| among.contains(l) && *t > above)
        .map(|(l, _)| l)
}

fn server(net: &mut Net, id: NodeId) -> &mut MultiRaft<MemStorage> {
    &mut net.servers[(id.0 - 1) as usize]
}

#[test]
fn cutting_off_the_quiet_leaders_server_makes_the_others_elect_and_serve() {
    let groups = 20;
    let mut net = net(3, groups);
    net.run(1_000);
    let old = busiest(&net, groups);
    let lost = led_by(&net, groups, old);
    let terms: Vec<u64> = (0..groups).map(|g| net.leaders(GroupId(g))[0].1).collect();
    let others: Vec<NodeId> = (1..=3).map(NodeId).filter(|n| *n != old).collect();
    net.isolated = vec![old];
    // Quiet followers notice after the liveness timeout, then elect within
    // a few (randomized, up to twice the base) election timeouts.
    let election = u64::from(Config::new(NodeId(1)).election_tick);
    let bound = u64::from(MultiConfig::LIVENESS_TIMEOUT) + 3 * 2 * election;
    let mut waited = 0;
    while lost
        .iter()
        .any(|g| new_leader(&net, *g, &others, terms[*g as usize]).is_none())
    {
        assert!(waited < bound, "the others elected within {bound} ticks");
        net.run(1);
        waited += 1;
    }
    // Not before: the quiet followers learn of the cut from the liveness
    // beats alone (the last one may have come an interval before it).
    let silence = MultiConfig::LIVENESS_TIMEOUT - MultiConfig::LIVENESS_INTERVAL;
    assert!(waited >= u64::from(silence), "elected after {waited} ticks");
    // And serve: a proposal to each new leader commits on both.
    let mut proposed = Vec::new();
    for g in &lost {
        let leader = new_leader(&net, *g, &others, terms[*g as usize]).unwrap();
        let index = server(&mut net, leader)
            .propose(GroupId(*g), Bytes::from_static(b"after the cut"))
            .unwrap();
        proposed.push((*g, index));
    }
    net.run(10);
    for (g, index) in &proposed {
        for id in &others {
            let node = net.servers[(id.0 - 1) as usize].group(GroupId(*g)).unwrap();
            assert!(node.applied_index() >= *index, "group {g} on {id:?}");
        }
    }
    // Heal: the old leader steps down in every group it led, and every
    // group ends with one leader, quiet again.
    net.isolated.clear();
    net.run(1_000);
    for g in 0..groups {
        let leaders = net.leaders(GroupId(g));
        assert_eq!(leaders.len(), 1, "group {g}: {leaders:?}");
        if lost.contains(&g) {
            assert_ne!(leaders[0].0, old, "group {g}");
            let stale = net.servers[(old.0 - 1) as usize].group(GroupId(g)).unwrap();
            assert_eq!(stale.role(), Role::Follower);
            assert_eq!(stale.term().0, leaders[0].1);
        }
    }
    for s in &net.servers {
        assert_eq!(s.quiesced(), groups as usize);
    }
}

#[test]
fn a_restarted_server_is_seen_by_its_incarnation_and_its_groups_reelect() {
    let groups = 20;
    let mut net = net(3, groups);
    net.run(1_000);
    let restarted = busiest(&net, groups);
    let lost = led_by(&net, groups, restarted);
    let terms: Vec<u64> = (0..groups).map(|g| net.leaders(GroupId(g))[0].1).collect();
    for s in &mut net.servers {
        while s.poll_event().is_some() {}
    }
    // Back at once: no liveness timeout passes, only the incarnation says it.
    restart(&mut net, restarted.0, 1);
    net.run(u64::from(MultiConfig::LIVENESS_TIMEOUT) / 2);
    for s in &mut net.servers {
        if s.config().id == restarted {
            continue;
        }
        let events: Vec<MultiEvent> = std::iter::from_fn(|| s.poll_event()).collect();
        assert_eq!(events, vec![MultiEvent::PeerRestarted(restarted)]);
    }
    net.run(1_000);
    for g in 0..groups {
        let leaders = net.leaders(GroupId(g));
        assert_eq!(leaders.len(), 1, "group {g}");
        if lost.contains(&g) {
            // Its nodes restarted as followers: a new term was needed.
            assert!(leaders[0].1 > terms[g as usize], "group {g}");
        }
    }
    for s in &net.servers {
        assert_eq!(s.quiesced(), groups as usize);
        assert!(s.peers().all(|(_, live)| live));
    }
}

#[test]
fn a_proposal_on_a_quiet_leader_commits_and_the_group_quiets_again() {
    let groups = 10;
    let mut net = net(3, groups);
    net.run(1_000);
    let g = GroupId(3);
    let (leader, _) = net.leaders(g)[0];
    assert!(server(&mut net, leader).group(g).unwrap().is_quiesced());
    let index = server(&mut net, leader)
        .propose(g, Bytes::from_static(b"wake up"))
        .unwrap();
    net.run(5);
    for s in &net.servers {
        let node = s.group(g).unwrap();
        assert!(node.applied_index() >= index, "{:?}", s.config().id);
    }
    net.run(50);
    for s in &net.servers {
        assert_eq!(s.quiesced(), groups as usize);
    }
}

/// A quiet leader's lease ended with its last heartbeat round's: after a
/// long quiet spell it refuses lease reads, also when a newer leader was
/// elected on the other side of a partition while it still leads.
#[test]
fn a_quiet_leaders_lease_read_after_a_long_quiet_spell_is_refused() {
    let groups = 10;
    let mut net = net(3, groups);
    net.run(1_000);
    let old = busiest(&net, groups);
    let lost = led_by(&net, groups, old);
    let terms: Vec<u64> = (0..groups).map(|g| net.leaders(GroupId(g))[0].1).collect();
    let others: Vec<NodeId> = (1..=3).map(NodeId).filter(|n| *n != old).collect();
    for g in &lost {
        let mut node = server(&mut net, old).group_mut(GroupId(*g)).unwrap();
        assert!(node.is_quiesced());
        assert!(matches!(node.read_lease(1), Err(Error::LeaseUnavailable)));
    }
    // Cut off, it keeps leading while the others elect; every lease read
    // it is asked for meanwhile is refused.
    net.isolated = vec![old];
    let mut overlapped = 0;
    for _ in 0..400 {
        net.run(1);
        for g in &lost {
            let newer = new_leader(&net, *g, &others, terms[*g as usize]).is_some();
            let mut node = server(&mut net, old).group_mut(GroupId(*g)).unwrap();
            if node.role() != Role::Leader {
                continue;
            }
            if newer {
                overlapped += 1;
            }
            assert!(
                matches!(node.read_lease(2), Err(Error::LeaseUnavailable)),
                "group {g}: lease read served"
            );
        }
    }
    assert!(
        overlapped > 0,
        "the old leader still led when the new one was elected"
    );
    // For contrast: a leader that just heard a quorum holds a lease.
    net.isolated.clear();
    net.run(1_000);
    let (leader, _) = net.leaders(GroupId(lost[0]))[0];
    let mut node = server(&mut net, leader)
        .group_mut(GroupId(lost[0]))
        .unwrap();
    assert!(node.read_index(3).is_ok());
    drop(node);
    net.run(1);
    let mut node = server(&mut net, leader)
        .group_mut(GroupId(lost[0]))
        .unwrap();
    assert!(node.read_lease(4).is_ok());
}
