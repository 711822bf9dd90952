//! Time: `Node::poll_timeout` names the next tick that acts, never a
//! later one, and `Node::tick_by(n)` is `n` calls of `tick()`.
//!
//! Unit tests per timer (election timeout, a candidate's retry, heartbeat,
//! check-quorum, a leader's election count without check-quorum, transfer
//! abandonment, catch-up stall and promotion, nodes that never campaign),
//! then property tests over random clusters and inputs: `tick_by` against
//! single ticks (the whole node state compared through `Debug`), and every
//! tick checked against the deadline announced before it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use bytes::Bytes;
use harness::Network;
use proptest::prelude::*;
use quorate_raft_core::{
    Config, Configuration, MemStorage, MessageBody, Node, NodeId, Promotion, Role,
};

fn timing(heartbeat: u32, election: u32, check_quorum: bool) -> impl Fn(&mut Config) {
    move |c: &mut Config| {
        c.heartbeat_tick = heartbeat;
        c.election_tick = election;
        c.check_quorum = check_quorum;
    }
}

fn conf(ids: &[u64]) -> Configuration {
    Configuration::new(ids.iter().copied().map(NodeId))
}

/// Node 1 leads a cluster of `size`, its first entry committed, with no
/// tick counted since it won.
fn led_by_1(size: u64, tweak: impl Fn(&mut Config)) -> Network {
    let mut net = Network::with_config(size, tweak);
    net.campaign(1);
    assert_eq!(net.node(1).role(), Role::Leader);
    net
}

/// Ticks node `n` once and runs its ready loop.
fn tick(net: &mut Network, n: u64) {
    net.node_mut(n).tick();
    net.drive(NodeId(n));
}

/// Ticks node `n` up to its next deadline, checking on the way that the
/// ticks before it do nothing; returns the deadline.
fn tick_to_deadline(net: &mut Network, n: u64) -> u64 {
    let node = net.node_mut(n);
    let due = node.poll_timeout().expect("a deadline");
    while node.ticks() + 1 < due {
        node.tick();
        assert!(node.ready().unwrap().is_none(), "tick {}", node.ticks());
    }
    node.tick();
    assert_eq!(node.ticks(), due);
    net.drive(NodeId(n));
    due
}

// ----- unit tests, one per timer -----

#[test]
fn a_follower_campaigns_at_poll_timeout_and_not_before() {
    let mut net = Network::new(3);
    let node = net.node_mut(1);
    assert_eq!(node.ticks(), 0);
    let due = node.poll_timeout().unwrap();
    assert_eq!(due, u64::from(node.randomized_election_timeout()));
    while node.ticks() + 1 < due {
        node.tick();
        assert_eq!(node.role(), Role::Follower);
        assert!(node.ready().unwrap().is_none());
        assert_eq!(node.poll_timeout(), Some(due), "the deadline stays put");
    }
    node.tick();
    assert_eq!(node.role(), Role::Candidate);
    let ready = node.ready().unwrap().unwrap();
    let asked: Vec<NodeId> = ready
        .messages()
        .iter()
        .filter(|m| matches!(m.body, MessageBody::RequestVote { .. }))
        .map(|m| m.to)
        .collect();
    assert_eq!(asked, [NodeId(2), NodeId(3)]);
}

#[test]
fn a_candidate_without_votes_campaigns_again_at_its_new_timeout() {
    let mut net = Network::new(3);
    net.isolate(1);
    net.campaign(1);
    let node = net.node_mut(1);
    assert_eq!(
        (node.role(), node.term().0, node.election_elapsed()),
        (Role::Candidate, 1, 0)
    );
    let due = node.poll_timeout().unwrap();
    assert_eq!(
        due,
        node.ticks() + u64::from(node.randomized_election_timeout())
    );
    tick_to_deadline(&mut net, 1);
    assert_eq!(net.node(1).term().0, 2);
}

#[test]
fn a_leader_heartbeats_at_poll_timeout() {
    let mut net = led_by_1(3, timing(3, 10, false));
    let start = net.node(1).ticks();
    assert_eq!(net.node(1).poll_timeout(), Some(start + 3));
    let node = net.node_mut(1);
    node.tick();
    node.tick();
    assert!(node.ready().unwrap().is_none());
    node.tick();
    let ready = node.ready().unwrap().unwrap();
    let beats: Vec<NodeId> = ready
        .messages()
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Heartbeat { .. }))
        .map(|m| m.to)
        .collect();
    assert_eq!(beats, [NodeId(2), NodeId(3)]);
    assert_eq!(node.poll_timeout(), Some(start + 6));
}

#[test]
fn check_quorum_is_a_deadline_and_steps_a_cut_off_leader_down_on_it() {
    let mut net = led_by_1(3, timing(3, 10, true));
    net.isolate(1);
    let start = net.node(1).ticks();
    let mut visited = Vec::new();
    while net.node(1).role() == Role::Leader {
        let due = tick_to_deadline(&mut net, 1);
        visited.push(due - start);
        if net.node(1).role() == Role::Leader && (due - start).is_multiple_of(10) {
            // Check-quorum ran and passed: the count restarts.
            assert_eq!(net.node(1).election_elapsed(), 0);
        }
        assert!(visited.len() < 20, "never stepped down: {visited:?}");
    }
    // Heartbeats every 3 ticks, check-quorum every 10: the follower
    // answers from before the cut carry the leader through the first.
    assert_eq!(visited, [3, 6, 9, 10, 12, 15, 18, 20]);
}

#[test]
fn without_check_quorum_the_leaders_election_count_is_no_deadline() {
    let mut net = led_by_1(3, timing(3, 10, false));
    let start = net.node(1).ticks();
    let visited: Vec<u64> = (0..4)
        .map(|_| tick_to_deadline(&mut net, 1) - start)
        .collect();
    assert_eq!(visited, [3, 6, 9, 12]);
    assert_eq!(net.node(1).election_elapsed(), 2, "wrapped at 10");
    assert_eq!(net.node(1).role(), Role::Leader);
}

#[test]
fn a_transfer_is_abandoned_at_its_deadline_and_not_before() {
    let mut net = led_by_1(3, timing(3, 10, false));
    net.cut(1, 2);
    net.propose(1, b"x").unwrap();
    // Node 2 lags, so no TimeoutNow goes out: the transfer waits.
    net.node_mut(1).transfer_leadership(NodeId(2)).unwrap();
    let start = net.node(1).ticks();
    loop {
        let due = net.node(1).poll_timeout().unwrap();
        assert!(due <= start + 10, "late: {due} after a transfer at {start}");
        tick(&mut net, 1);
        net.deliver_all();
        let node = net.node(1);
        if node.ticks() < start + 10 {
            assert_eq!(node.transferee(), Some(NodeId(2)));
        } else {
            assert_eq!(node.transferee(), None);
            assert_eq!(due, start + 10);
            break;
        }
    }
    assert_eq!(net.node(1).role(), Role::Leader);
}

#[test]
fn a_stalled_catch_up_is_given_up_at_its_deadline_and_not_before() {
    let mut net = led_by_1(3, |c: &mut Config| {
        timing(3, 10, false)(c);
        c.catch_up_stall_timeouts = 2;
    });
    // Server 9 never answers: its catch-up stalls after 2 election timeouts.
    net.node_mut(1).add_voter(NodeId(9)).unwrap();
    net.drive(NodeId(1));
    net.deliver_all();
    let start = net.node(1).ticks();
    loop {
        let due = net.node(1).poll_timeout().unwrap();
        assert!(due <= start + 20, "late: {due}, stalled at {}", start + 20);
        tick(&mut net, 1);
        net.deliver_all();
        let outcome = net.node_mut(1).poll_promotion();
        if net.node(1).ticks() < start + 20 {
            assert_eq!(outcome, None);
        } else {
            assert!(matches!(
                outcome,
                Some(Promotion::Aborted { id: NodeId(9), .. })
            ));
            assert_eq!(due, start + 20);
            break;
        }
    }
}

#[test]
fn a_blocked_promotion_is_no_deadline_until_it_can_go_ahead() {
    let mut net = led_by_1(3, timing(3, 10, false));
    // The learner's configuration entry cannot commit while 2 and 3 are
    // cut off, so the learner catches up but cannot be promoted.
    net.cut(1, 2);
    net.cut(1, 3);
    net.add_node(4, conf(&[1, 2, 3]).with_learners([NodeId(4)]));
    net.node_mut(1).add_voter(NodeId(4)).unwrap();
    net.drive(NodeId(1));
    net.deliver_all();
    let due = tick_to_deadline(&mut net, 1);
    net.deliver_all();
    assert_eq!(
        net.node(1).catching_up().collect::<Vec<_>>(),
        [(NodeId(4), 1)]
    );
    assert_eq!(
        net.node(1).poll_timeout(),
        Some(due + 3),
        "only the next heartbeat, not a promotion at every tick"
    );
    assert_eq!(net.node_mut(1).poll_promotion(), None);
    // Once the entry commits the promotion is due at the next tick.
    net.heal();
    while net.node(1).commit_index() < net.node(1).last_index() {
        tick_to_deadline(&mut net, 1);
        net.deliver_all();
    }
    let now = net.node(1).ticks();
    assert_eq!(net.node(1).poll_timeout(), Some(now + 1));
    tick(&mut net, 1);
    assert!(matches!(
        net.node_mut(1).poll_promotion(),
        Some(Promotion::Promoted { id: NodeId(4), .. })
    ));
}

#[test]
fn learners_and_witnesses_need_no_tick_and_skip_any_number_cheaply() {
    let learner = conf(&[1, 2]).with_learners([NodeId(3)]);
    let witness = conf(&[1, 2]).with_witnesses([NodeId(3)]);
    for members in [learner, witness] {
        let mut node = Node::new(Config::new(NodeId(3)), MemStorage::new(members)).unwrap();
        assert_eq!(node.poll_timeout(), None);
        node.tick_by(1 << 40);
        assert_eq!(node.ticks(), 1 << 40);
        assert_eq!(node.election_elapsed(), u32::MAX, "saturates");
        assert_eq!(node.role(), Role::Follower);
        assert!(node.ready().unwrap().is_none());
        let voter = Node::new(Config::new(NodeId(1)), MemStorage::new(conf(&[1, 2]))).unwrap();
        assert!(voter.poll_timeout().is_some());
    }
}

#[test]
fn tick_by_zero_does_nothing_and_one_is_a_tick() {
    let new = || Node::new(Config::new(NodeId(1)), MemStorage::new(conf(&[1, 2, 3]))).unwrap();
    let (mut a, mut b) = (new(), new());
    a.tick_by(0);
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    for _ in 0..40 {
        a.tick_by(1);
        b.tick();
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }
}

// ----- property tests -----

/// A cluster layout and its timing.
#[derive(Clone, Debug)]
struct Setup {
    voters: u64,
    learner: bool,
    witness: bool,
    heartbeat: u32,
    election: u32,
    pre_vote: bool,
    check_quorum: bool,
    stall_timeouts: u32,
    rounds: u32,
    seed: u64,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        1..=4u64,
        any::<bool>(),
        any::<bool>(),
        1..=3u32,
        1..=8u32,
        any::<bool>(),
        any::<bool>(),
        1..=3u32,
        1..=3u32,
        any::<u64>(),
    )
        .prop_map(
            |(
                voters,
                learner,
                witness,
                heartbeat,
                extra,
                pre_vote,
                check_quorum,
                stall,
                rounds,
                seed,
            )| {
                Setup {
                    voters,
                    learner,
                    witness: witness && voters >= 2,
                    heartbeat,
                    election: heartbeat + extra,
                    pre_vote,
                    check_quorum,
                    stall_timeouts: stall,
                    rounds,
                    seed,
                }
            },
        )
}

impl Setup {
    fn network(&self) -> Network {
        // Ids 1..=voters vote; the last voter is the witness, if any; the
        // learner comes after them.
        let mut members = Configuration::new((1..=self.voters).map(NodeId));
        if self.learner {
            members = members.with_learners([NodeId(self.voters + 1)]);
        }
        if self.witness {
            members = members.with_witnesses([NodeId(self.voters)]);
        }
        let s = self.clone();
        Network::with_members(members, move |c| {
            c.heartbeat_tick = s.heartbeat;
            c.election_tick = s.election;
            c.pre_vote = s.pre_vote;
            c.check_quorum = s.check_quorum;
            c.max_clock_drift_ticks = c.max_clock_drift_ticks.min(s.election - 2);
            c.catch_up_stall_timeouts = s.stall_timeouts;
            c.catch_up_rounds = s.rounds;
            c.max_snapshot_chunk_bytes = 8;
            c.seed = s.seed ^ c.id.0;
        })
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Node ticks `n` times.
    Tick(u64, u64),
    /// Every running node ticks `n` times, one tick each in turn, with the
    /// messages delivered after each round.
    TickAll(u64),
    Deliver,
    Cut(u64, u64),
    Heal,
    Propose(u64),
    Campaign(u64),
    /// The leader, if any, hands leadership to this node.
    Transfer(u64),
    AbortTransfer,
    /// The leader, if any, adds this server as a voter after a catch-up:
    /// 6 and 7 are started, 9 never exists.
    AddVoter(u64),
    ReadIndex(u64),
    Crash(u64),
    Restart(u64),
    /// The node compacts its log up to what it applied, so that learners
    /// added later get a snapshot (in chunks, which catch-ups watch).
    Compact(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let node = 1..=5u64;
    prop_oneof![
        6 => (node.clone(), 1..40u64).prop_map(|(n, k)| Op::Tick(n, k)),
        4 => (1..12u64).prop_map(Op::TickAll),
        4 => Just(Op::Deliver),
        1 => (node.clone(), node.clone()).prop_map(|(a, b)| Op::Cut(a, b)),
        1 => Just(Op::Heal),
        2 => node.clone().prop_map(Op::Propose),
        1 => node.clone().prop_map(Op::Campaign),
        1 => node.clone().prop_map(Op::Transfer),
        1 => Just(Op::AbortTransfer),
        1 => prop_oneof![Just(6u64), Just(7), Just(9)].prop_map(Op::AddVoter),
        1 => node.clone().prop_map(Op::ReadIndex),
        1 => node.clone().prop_map(Op::Crash),
        1 => node.clone().prop_map(Op::Restart),
        1 => node.prop_map(Op::Compact),
    ]
}

fn leader(net: &Network) -> Option<NodeId> {
    net.leaders().first().copied()
}

/// Applies everything but the ticks, identically on any network.
fn apply(net: &mut Network, op: &Op) {
    match *op {
        Op::Tick(..) | Op::TickAll(_) => unreachable!("ticks are the caller's"),
        Op::Deliver => net.deliver_all(),
        Op::Cut(a, b) if a != b => net.cut(a, b),
        Op::Cut(..) => {}
        Op::Heal => net.heal(),
        Op::Propose(n) => {
            if net.nodes.contains_key(&NodeId(n)) {
                let _ = net.propose(n, b"p");
            }
        }
        Op::Campaign(n) => {
            if net.nodes.contains_key(&NodeId(n)) {
                net.campaign(n);
            }
        }
        Op::Transfer(to) => {
            if let Some(l) = leader(net) {
                let _ = net
                    .nodes
                    .get_mut(&l)
                    .unwrap()
                    .transfer_leadership(NodeId(to));
                net.drive(l);
            }
        }
        Op::AbortTransfer => {
            if let Some(l) = leader(net) {
                let _ = net.nodes.get_mut(&l).unwrap().abort_transfer();
                net.drive(l);
            }
        }
        Op::AddVoter(id) => {
            if let Some(l) = leader(net) {
                let known =
                    net.nodes.contains_key(&NodeId(id)) || net.crashed.contains_key(&NodeId(id));
                if id != 9 && !known {
                    let c = net.nodes[&l].configuration();
                    let boot = Configuration::new(c.voters().iter().copied())
                        .with_learners(c.learners().iter().copied().chain([NodeId(id)]))
                        .with_witnesses(c.witnesses().iter().copied());
                    net.add_node(id, boot);
                }
                let _ = net.nodes.get_mut(&l).unwrap().add_voter(NodeId(id));
                net.drive(l);
            }
        }
        Op::ReadIndex(n) => {
            if let Some(node) = net.nodes.get_mut(&NodeId(n)) {
                let _ = node.read_index(7);
                net.drive(NodeId(n));
            }
        }
        Op::Crash(n) => net.crash(n),
        Op::Compact(n) => {
            if let Some(node) = net.nodes.get_mut(&NodeId(n)) {
                let applied = node.applied_index();
                node.storage_mut()
                    .compact(applied, Bytes::from_static(&[7; 40]))
                    .unwrap();
                // A leader may now send a snapshot instead of entries.
                net.drive(NodeId(n));
            }
        }
        Op::Restart(n) => {
            if net.crashed.contains_key(&NodeId(n)) {
                net.restart(n);
            }
        }
    }
}

fn ids(net: &Network) -> Vec<NodeId> {
    net.nodes.keys().copied().collect()
}

/// The whole state of every node (through `Debug`: storage, counters,
/// random number generator and all) and every message delivered.
fn state(net: &Network) -> (Vec<String>, usize, Vec<quorate_raft_core::Message>) {
    let nodes = net.nodes.values().map(|n| format!("{n:?}")).collect();
    (nodes, net.queued(), net.delivered.clone())
}

/// What a tick may visibly change.
#[derive(PartialEq, Eq, Debug)]
struct Visible {
    role: Role,
    term: u64,
    vote: Option<NodeId>,
    leader: Option<NodeId>,
    transferee: Option<NodeId>,
    catching_up: Vec<(NodeId, u32)>,
}

fn visible(node: &Node<MemStorage>) -> Visible {
    Visible {
        role: node.role(),
        term: node.term().0,
        vote: node.vote(),
        leader: node.leader(),
        transferee: node.transferee(),
        catching_up: node.catching_up().collect(),
    }
}

/// One tick of node `id`, checked against the deadline announced before
/// it: the ticks before the deadline change nothing visible and leave it
/// where it was, the tick reaching it does something.
fn checked_tick(net: &mut Network, id: NodeId) -> Result<(), TestCaseError> {
    let Some(node) = net.nodes.get_mut(&id) else {
        return Ok(());
    };
    // Outcomes of earlier inputs are not this tick's.
    while node.poll_promotion().is_some() {}
    let due = node.poll_timeout();
    if let Some(due) = due {
        prop_assert!(due > node.ticks());
    }
    let before = visible(node);
    node.tick();
    let now = node.ticks();
    if due.is_none_or(|due| now < due) {
        prop_assert!(
            node.ready().unwrap().is_none(),
            "{id:?} acted at {now} before {due:?}"
        );
        prop_assert_eq!(
            visible(node),
            before,
            "{:?} at {} before {:?}",
            id,
            now,
            due
        );
        prop_assert!(node.poll_promotion().is_none());
        prop_assert_eq!(
            node.poll_timeout(),
            due,
            "the deadline moved without an input"
        );
        return Ok(());
    }
    prop_assert_eq!(Some(now), due);
    let check_quorum =
        node.role() == Role::Leader && node.config().check_quorum && node.election_elapsed() == 0;
    let alone = node.role() == Role::Leader && node.all_progress().next().is_none();
    let changed = visible(node) != before;
    let promoted = node.poll_promotion().is_some();
    let queued = net.queued();
    net.drive(id);
    let sent = net.queued() > queued;
    prop_assert!(
        sent || changed || promoted || check_quorum || alone,
        "{id:?} did nothing at its deadline {now}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// `tick_by(n)` and `n` ticks leave every node in the same state and
    /// send the same messages, whatever the cluster went through.
    #[test]
    fn tick_by_n_is_n_ticks(setup in setup(), ops in prop::collection::vec(op(), 1..60)) {
        let mut by = setup.network();
        let mut single = setup.network();
        for op in &ops {
            match *op {
                Op::Tick(n, k) => {
                    if let Some(node) = by.nodes.get_mut(&NodeId(n)) {
                        node.tick_by(k);
                        by.drive(NodeId(n));
                    }
                    if let Some(node) = single.nodes.get_mut(&NodeId(n)) {
                        for _ in 0..k {
                            node.tick();
                        }
                        single.drive(NodeId(n));
                    }
                }
                Op::TickAll(k) => {
                    // Here tick_by(1) against tick(), with deliveries in
                    // between.
                    for _ in 0..k {
                        for id in ids(&by) {
                            by.nodes.get_mut(&id).unwrap().tick_by(1);
                            by.drive(id);
                        }
                        by.deliver_all();
                    }
                    single.tick_all(k as u32);
                }
                _ => {
                    apply(&mut by, op);
                    apply(&mut single, op);
                }
            }
            prop_assert_eq!(state(&by), state(&single), "after {:?}", op);
        }
    }

    /// No tick before `poll_timeout` does anything visible, and the tick
    /// reaching it does something.
    #[test]
    fn poll_timeout_is_never_late_and_never_idle(
        setup in setup(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut net = setup.network();
        for op in &ops {
            match *op {
                Op::Tick(n, k) => {
                    for _ in 0..k {
                        checked_tick(&mut net, NodeId(n))?;
                    }
                }
                Op::TickAll(k) => {
                    for _ in 0..k {
                        for id in ids(&net) {
                            checked_tick(&mut net, id)?;
                        }
                        net.deliver_all();
                    }
                }
                _ => apply(&mut net, op),
            }
        }
    }

    /// An event loop that sleeps until the earliest deadline and then
    /// catches every node up with `tick_by` ends where one that ticks
    /// every node at every tick does.
    #[test]
    fn sleeping_until_poll_timeout_matches_ticking_every_tick(setup in setup(), horizon in 1..200u64) {
        let mut sleeper = setup.network();
        let mut ticker = setup.network();
        let mut now = 0;
        while now < horizon {
            let next = sleeper
                .nodes
                .values()
                .filter_map(Node::poll_timeout)
                .min()
                .unwrap_or(horizon)
                .min(horizon);
            // Every node is at `now`; the earliest deadline acts first.
            for id in ids(&sleeper) {
                sleeper.nodes.get_mut(&id).unwrap().tick_by(next - now);
                sleeper.drive(id);
            }
            sleeper.deliver_all();
            ticker.tick_all(u32::try_from(next - now).unwrap());
            now = next;
            prop_assert_eq!(state(&sleeper), state(&ticker), "at tick {}", now);
        }
    }
}
