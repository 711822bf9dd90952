//! Single-server membership changes (thesis §4.1, §4.4) and catching a new
//! server up before it votes (§4.2.1).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{Network, id};
use quorate_raft_core::{
    ChangeMethod, Configuration, Error, LogIndex, Message, MessageBody, NodeId, Promotion, Role,
};

fn conf(ids: &[u64]) -> Configuration {
    Configuration::new(ids.iter().map(|n| NodeId(*n)))
}

/// Boot configuration of a new node: the voters it will hear from, itself
/// a learner so it never campaigns before it learns the real one.
fn boot(voters: &[u64], me: u64) -> Configuration {
    conf(voters).with_learners([NodeId(me)])
}

fn leader_of(n: u64) -> Network {
    let mut net = Network::new(n);
    net.campaign(1);
    assert_eq!(net.node(1).role(), Role::Leader);
    net
}

fn involves(m: &Message, n: u64) -> bool {
    m.from == id(n) || m.to == id(n)
}

fn promotions(net: &mut Network, n: u64) -> Vec<Promotion> {
    std::iter::from_fn(|| net.node_mut(n).poll_promotion()).collect()
}

#[test]
fn membership_4_1_adding_one_voter_takes_one_step() {
    let mut net = leader_of(3);
    net.add_node(4, boot(&[1, 2, 3], 4));
    let index = net
        .node_mut(1)
        .propose_configuration(conf(&[1, 2, 3, 4]))
        .unwrap();
    // C_new directly, in effect on append: no joint phase.
    assert_eq!(net.node(1).configuration(), &conf(&[1, 2, 3, 4]));
    net.drive_all();
    for n in 1..=4 {
        let node = net.node(n);
        assert_eq!(node.configuration(), &conf(&[1, 2, 3, 4]), "node {n}");
        assert_eq!(node.configuration_index(), index, "one entry, node {n}");
        assert!(node.commit_index() >= index, "node {n}");
    }
    // Four voters need three: 1 and 4 alone cannot commit.
    net.isolate(2);
    net.isolate(3);
    let x = net.propose(1, b"x").unwrap();
    assert!(net.node(1).commit_index() < x);
}

#[test]
fn membership_4_1_removing_one_voter_takes_one_step() {
    let mut net = leader_of(3);
    let index = net.node_mut(1).remove_member(id(3)).unwrap();
    assert_eq!(net.node(1).configuration(), &conf(&[1, 2]));
    net.drive_all();
    assert_eq!(net.node(2).configuration_index(), index);
    assert!(net.node(1).commit_index() >= index);
    // Two voters: 1 and 2 decide without 3.
    net.isolate(3);
    let y = net.propose(1, b"y").unwrap();
    assert!(net.node(1).commit_index() >= y);
}

#[test]
fn membership_4_1_learner_changes_ride_along_a_single_server_change() {
    let mut net = leader_of(3);
    net.add_node(4, boot(&[1, 2, 3], 4));
    // Voter 3 leaves, 4 joins as a learner: one voter changes, one step.
    let target = conf(&[1, 2]).with_learners([id(4)]);
    net.node_mut(1)
        .propose_configuration_with(target.clone(), ChangeMethod::SingleServer)
        .unwrap();
    assert_eq!(net.node(1).configuration(), &target);
    net.drive_all();
    assert_eq!(net.node(4).configuration(), &target);
}

#[test]
fn membership_4_3_larger_changes_and_forced_joint_go_through_c_old_new() {
    let mut net = leader_of(3);
    net.add_node(4, boot(&[1, 2, 3], 4));
    net.add_node(5, boot(&[1, 2, 3], 5));
    // Two voters change: a single-server change is refused, Auto goes joint.
    assert!(matches!(
        net.node_mut(1)
            .propose_configuration_with(conf(&[1, 2, 4]), ChangeMethod::SingleServer),
        Err(Error::InvalidConfigurationChange(_))
    ));
    assert_eq!(net.node(1).configuration(), &conf(&[1, 2, 3]));
    net.node_mut(1)
        .propose_configuration(conf(&[1, 2, 4]))
        .unwrap();
    assert!(net.node(1).configuration().is_joint());
    net.drive_all();
    assert_eq!(net.node(1).configuration(), &conf(&[1, 2, 4]));
    // One voter, but joint on request.
    net.node_mut(1)
        .propose_configuration_with(conf(&[1, 2, 4, 5]), ChangeMethod::Joint)
        .unwrap();
    let joint = net.node(1).configuration().clone();
    assert!(joint.is_joint());
    assert_eq!(joint.outgoing(), conf(&[1, 2, 4]).voters());
    net.drive_all();
    assert_eq!(net.node(5).configuration(), &conf(&[1, 2, 4, 5]));
}

#[test]
fn membership_4_1_one_uncommitted_change_at_a_time() {
    let mut net = leader_of(3);
    net.isolate(2);
    net.isolate(3);
    let index = net.node_mut(1).remove_member(id(3)).unwrap();
    for attempt in [
        net.node_mut(1).remove_member(id(2)),
        net.node_mut(1).propose_configuration(conf(&[1, 2, 3])),
    ] {
        assert!(matches!(
            attempt,
            Err(Error::ConfigurationChangeInProgress { index: i }) if i == index
        ));
    }
    assert!(matches!(
        net.node_mut(1).promote_learner(id(9)),
        Err(Error::ConfigurationChangeInProgress { .. })
    ));
}

/// The interleaving of Ongaro's 2015 raft-dev errata ("bug in single-server
/// membership changes"): S1 (term 1) appends C_a = {1..5} and reaches only
/// S5; S2 is elected in term 2 by S2, S3, S4 under C = {1..4}; if S2 could
/// append C_b = {2,3,4} at once and commit it with S3 (a majority of C_b),
/// S1 could then win term 3 with S1, S4, S5 (a majority of C_a, S4's log
/// being no newer than S1's) and overwrite the committed C_b. The fix: a
/// leader appends a configuration only once an entry of its term has
/// committed; that entry reaches a majority of C, so S4 or S1 has it, and
/// S1 cannot win with S4. (With that check removed from the node, this
/// interleaving elects S1 in term 3 over the committed C_b: checked by
/// hand while writing this test.)
#[test]
fn membership_4_1_errata_new_leader_changes_only_after_committing_in_its_term() {
    let mut net = leader_of(4);
    net.propose(1, b"a").unwrap();
    net.add_node(5, boot(&[1, 2, 3, 4], 5));
    net.cut(1, 2);
    net.cut(1, 3);
    net.cut(1, 4);
    let c_a = net
        .node_mut(1)
        .propose_configuration(conf(&[1, 2, 3, 4, 5]))
        .unwrap();
    net.drive_all();
    assert_eq!(net.node(5).last_index(), c_a, "S5 holds C_a");
    assert!(net.node(1).commit_index() < c_a);

    // S2 is elected by S3 and S4; its first append reaches S3 only (the
    // one to S4 is delayed).
    net.node_mut(2).campaign();
    net.drive(id(2));
    let to_4 = |m: &Message| m.to == id(4) && matches!(m.body, MessageBody::AppendEntries { .. });
    for _ in 0..4 {
        net.deliver_once(|m| !to_4(m));
    }
    assert_eq!(net.node(2).role(), Role::Leader);
    let term_2 = net.node(2).term();
    assert_eq!(net.node(3).log_term(c_a).unwrap(), Some(term_2));
    assert!(net.node(4).last_index() < c_a, "S4 lacks S2's entry");
    // The step of the errata is refused: nothing of term 2 is committed.
    assert!(matches!(
        net.node_mut(2).remove_member(id(1)),
        Err(Error::NoCommitInTerm { term }) if term == term_2
    ));
    assert_eq!(net.node(2).configuration(), &conf(&[1, 2, 3, 4]));

    // Once the delayed append lands, S2's entry commits (S2, S3, S4); the
    // removal of S1 may go ahead, and commits with S2 and S3 while S4
    // still lacks it.
    net.deliver_all();
    net.drive(id(2));
    net.deliver_all();
    assert!(net.node(2).commit_index() >= c_a);
    let c_b = net.node_mut(2).remove_member(id(1)).unwrap();
    net.drive(id(2));
    for _ in 0..4 {
        net.deliver_once(|m| !to_4(m) && m.to != id(1));
    }
    assert!(net.node(2).commit_index() >= c_b, "C_b committed by S2, S3");
    assert!(net.node(4).last_index() < c_b);

    // S1 comes back reaching only S4 and S5: S4 holds a term-2 entry, so
    // S1's log is not up to date and it cannot get a majority of C_a.
    net.heal();
    net.cut(1, 2);
    net.cut(1, 3);
    net.cut(2, 4);
    net.cut(2, 5);
    net.cut(3, 4);
    net.cut(3, 5);
    // S1 still thinks it leads term 1, and a leader ignores `campaign`:
    // it comes back by restarting, as a follower with its durable log.
    assert_eq!(net.node(1).role(), Role::Leader);
    net.crash(1);
    net.restart(1);
    for _ in 0..3 {
        net.campaign(1);
        assert_ne!(net.node(1).role(), Role::Leader);
    }
    for n in [2, 3] {
        let node = net.node(n);
        assert_eq!(node.log_term(c_b).unwrap(), Some(term_2), "node {n}");
        assert_eq!(node.configuration(), &conf(&[2, 3, 4]), "node {n}");
    }
}

#[test]
fn membership_4_2_1_new_server_is_promoted_once_caught_up() {
    let mut net = leader_of(3);
    for _ in 0..20 {
        net.propose(1, b"w").unwrap();
    }
    net.add_node(4, boot(&[1, 2, 3], 4));
    net.node_mut(1).add_voter(id(4)).unwrap();
    // A learner first: the voters and their majority are unchanged.
    assert_eq!(
        net.node(1).configuration(),
        &conf(&[1, 2, 3]).with_learners([id(4)])
    );
    assert_eq!(net.node(1).catching_up().collect::<Vec<_>>(), [(id(4), 0)]);
    // Asking again changes nothing.
    net.node_mut(1).add_voter(id(4)).unwrap();
    net.drive_all();
    net.tick_all(2);
    let promoted = promotions(&mut net, 1);
    let [
        Promotion::Promoted {
            id: who,
            index,
            rounds,
        },
    ] = promoted[..]
    else {
        panic!("expected one promotion, got {promoted:?}");
    };
    assert_eq!(who, id(4));
    assert_eq!(rounds, 1, "an idle cluster: the first round is quick");
    net.drive_all();
    for n in 1..=4 {
        assert_eq!(net.node(n).configuration(), &conf(&[1, 2, 3, 4]));
        assert!(net.node(n).commit_index() >= index);
    }
    assert_eq!(net.node(1).catching_up().count(), 0);
    // Already a voter.
    assert!(matches!(
        net.node_mut(1).add_voter(id(4)),
        Err(Error::InvalidConfigurationChange(_))
    ));
}

/// A learner behind a slow link (one hop per tick, one entry per message,
/// one message in flight) while clients keep the leader busy.
fn slow_learner(rounds: u32) -> Network {
    let mut net = Network::with_config(3, |c| {
        c.max_size_per_msg = 1;
        c.max_inflight_msgs = 1;
        c.catch_up_rounds = rounds;
    });
    net.campaign(1);
    for _ in 0..10 {
        net.propose(1, b"w").unwrap();
    }
    net.add_node(4, boot(&[1, 2, 3], 4));
    net.node_mut(1).add_voter(id(4)).unwrap();
    net
}

/// One tick: every node ticks, the fast links deliver everything, the
/// learner's link one hop.
fn slow_tick(net: &mut Network, propose: bool) {
    for n in 1..=4 {
        net.node_mut(n).tick();
        net.drive(id(n));
    }
    if propose {
        net.node_mut(1)
            .propose(bytes::Bytes::from_static(b"load"))
            .unwrap();
        net.drive(id(1));
    }
    net.deliver_once(|m| involves(m, 4));
    // Everything else, as often as it takes.
    for _ in 0..8 {
        net.deliver_once(|m| !involves(m, 4));
    }
}

#[test]
fn membership_4_2_1_lagging_learner_is_not_promoted() {
    let mut net = slow_learner(3);
    let mut outcome = Vec::new();
    for _ in 0..400 {
        slow_tick(&mut net, true);
        outcome.extend(promotions(&mut net, 1));
        if !outcome.is_empty() {
            break;
        }
        // Commits never wait for it.
        let leader = net.node(1);
        assert!(leader.commit_index().0 + 2 >= leader.last_index().0);
    }
    let [
        Promotion::Aborted {
            id: who,
            rounds,
            match_index,
        },
    ] = outcome[..]
    else {
        panic!("expected an abort, got {outcome:?}");
    };
    assert_eq!((who, rounds), (id(4), 3));
    assert!(match_index < net.node(1).last_index());
    assert_eq!(
        net.node(1).configuration(),
        &conf(&[1, 2, 3]).with_learners([id(4)])
    );
    // Nor on request, while it lags.
    let match_index = net.node(1).progress(id(4)).unwrap().match_index;
    let commit_index = net.node(1).commit_index();
    assert!(matches!(
        net.node_mut(1).promote_learner(id(4)),
        Err(Error::NotCaughtUp { id: who, match_index: m, commit_index: c })
            if who == id(4) && m == match_index && c == commit_index
    ));
}

#[test]
fn membership_4_2_1_slow_learner_is_promoted_once_the_load_stops() {
    let mut net = slow_learner(10);
    for _ in 0..30 {
        slow_tick(&mut net, true);
    }
    assert_eq!(net.node(1).catching_up().count(), 1, "still catching up");
    assert!(promotions(&mut net, 1).is_empty());
    let mut outcome = Vec::new();
    for _ in 0..400 {
        slow_tick(&mut net, false);
        outcome.extend(promotions(&mut net, 1));
        if !outcome.is_empty() {
            break;
        }
    }
    let [
        Promotion::Promoted {
            id: who,
            index,
            rounds,
        },
    ] = outcome[..]
    else {
        panic!("expected a promotion, got {outcome:?}");
    };
    assert_eq!(who, id(4));
    assert!(rounds >= 2, "the first rounds were too slow: {rounds}");
    // Promoted only once close: the entries before the promotion are few
    // enough to send in less than an election timeout.
    let learner = net.node(4).last_index();
    assert!(
        index.0 - learner.0 <= 10,
        "learner at {learner:?}, promotion at {index:?}"
    );
    for _ in 0..100 {
        slow_tick(&mut net, false);
    }
    assert_eq!(net.node(4).configuration(), &conf(&[1, 2, 3, 4]));
}

#[test]
fn membership_4_2_1_unavailable_new_server_never_blocks_commits() {
    // Node 3 is down. Adding an empty, unreachable voter directly makes
    // four voters needing three: the cluster stalls.
    let mut direct = leader_of(3);
    direct.crash(3);
    direct.add_node(4, boot(&[1, 2, 3], 4));
    direct.isolate(4);
    direct
        .node_mut(1)
        .propose_configuration(conf(&[1, 2, 3, 4]))
        .unwrap();
    let stalled = direct.propose(1, b"x").unwrap();
    direct.tick_all(20);
    assert!(direct.node(1).commit_index() < stalled);

    // Through add_voter it is a learner until it catches up: 1 and 2 go on.
    let mut net = leader_of(3);
    net.crash(3);
    net.add_node(4, boot(&[1, 2, 3], 4));
    net.isolate(4);
    net.node_mut(1).add_voter(id(4)).unwrap();
    let mut outcome = Vec::new();
    for _ in 0..60 {
        let x = net.propose(1, b"x").unwrap();
        assert!(net.node(1).commit_index() >= x);
        net.tick_all(1);
        outcome.extend(promotions(&mut net, 1));
    }
    // It answered nothing for catch_up_stall_timeouts (5 x 10 ticks): given up.
    assert!(
        matches!(
            outcome[..],
            [Promotion::Aborted { id: who, rounds: 0, match_index: LogIndex::ZERO }] if who == id(4)
        ),
        "{outcome:?}"
    );
    assert!(!net.node(1).configuration().is_voter(id(4)));
}

#[test]
fn membership_4_2_1_catch_up_is_cancelled_with_leadership_or_removal() {
    let mut net = leader_of(3);
    net.add_node(4, boot(&[1, 2, 3], 4));
    net.add_node(5, boot(&[1, 2, 3], 5));
    net.isolate(4);
    net.isolate(5);
    net.node_mut(1).add_voter(id(4)).unwrap();
    net.drive_all();
    // Removing the learner ends its catch-up.
    net.node_mut(1).remove_member(id(4)).unwrap();
    assert_eq!(
        promotions(&mut net, 1),
        [Promotion::Cancelled { id: id(4) }]
    );
    net.drive_all();
    net.node_mut(1).add_voter(id(5)).unwrap();
    net.drive_all();
    // Losing leadership ends it too.
    net.campaign(2);
    assert_eq!(net.node(2).role(), Role::Leader);
    assert_eq!(net.node(1).role(), Role::Follower);
    assert_eq!(
        promotions(&mut net, 1),
        [Promotion::Cancelled { id: id(5) }]
    );
    assert!(matches!(
        net.node_mut(1).add_voter(id(5)),
        Err(Error::NotLeader { .. })
    ));
}
