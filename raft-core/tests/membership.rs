//! Membership changes (thesis chapter 4): joint consensus, configurations
//! in effect on append, a removed leader stepping down, removed servers
//! unable to disrupt, snapshots carrying their configuration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{Network, id};
use quorate_raft_core::{ChangeMethod, Config, Configuration, Error, Node, NodeId, Role, Storage};

fn conf(ids: &[u64]) -> Configuration {
    Configuration::new(ids.iter().map(|n| NodeId(*n)))
}

/// Boot configuration of a new node: the voters it will hear from, itself
/// a learner so it never campaigns before it learns the real one.
fn boot(voters: &[u64], me: u64) -> Configuration {
    conf(voters).with_learners([NodeId(me)])
}

fn leader_of_3() -> Network {
    let mut net = Network::new(3);
    net.campaign(1);
    assert_eq!(net.node(1).role(), Role::Leader);
    net
}

#[test]
fn membership_4_3_joint_consensus_replaces_voters_then_leaves_joint() {
    let mut net = leader_of_3();
    net.add_node(4, boot(&[1, 2, 3], 4));
    net.add_node(5, boot(&[1, 2, 3], 5));
    let index = net
        .node_mut(1)
        .propose_configuration(conf(&[1, 4, 5]))
        .unwrap();
    // In effect on append (§4.1), before it commits.
    let joint = net.node(1).configuration().clone();
    assert!(joint.is_joint());
    assert_eq!(joint.outgoing(), conf(&[1, 2, 3]).voters());
    assert_eq!(net.node(1).configuration_index(), index);
    net.drive_all();
    // The joint entry committed, the leader appended C_new by itself, and
    // it committed too.
    for n in [1, 4, 5] {
        assert_eq!(net.node(n).configuration(), &conf(&[1, 4, 5]), "node {n}");
    }
    let node = net.node(1);
    assert!(node.configuration_index() > index);
    assert!(node.commit_index() >= node.configuration_index());
    // C_new alone now decides: 2 and 3 away, 1, 4 and 5 commit.
    net.isolate(2);
    net.isolate(3);
    let x = net.propose(1, b"x").unwrap();
    net.deliver_all();
    assert!(net.node(1).commit_index() >= x);
    assert!(net.applied_data(5).iter().any(|d| d.as_ref() == b"x"));
}

#[test]
fn membership_4_3_joint_entry_needs_a_majority_of_both_configurations() {
    let mut net = leader_of_3();
    for n in [4, 5, 6] {
        net.add_node(n, boot(&[1, 2, 3], n));
        net.isolate(n);
    }
    let index = net
        .node_mut(1)
        .propose_configuration(conf(&[4, 5, 6]))
        .unwrap();
    net.drive_all();
    // Every voter of C_old acknowledged, none of C_new: not committed.
    assert_eq!(net.node(2).last_index(), index);
    assert!(net.node(1).commit_index() < index);
    assert!(net.node(1).configuration().is_joint());
    // Joint, the old majority alone cannot elect a leader either.
    net.crash(1);
    net.campaign(2);
    assert_ne!(net.node(2).role(), Role::Leader);
}

#[test]
fn membership_4_2_2_removed_leader_steps_down_after_committing_c_new() {
    let mut net = leader_of_3();
    net.node_mut(1).remove_member(id(1)).unwrap();
    // It leads the change while it is still in C_old,new and C_new is
    // uncommitted; it does not count itself in C_new.
    net.drive_all();
    let node = net.node(1);
    assert_eq!(node.configuration(), &conf(&[2, 3]));
    assert!(node.commit_index() >= node.configuration_index());
    assert_eq!(node.role(), Role::Follower, "stepped down");
    // It never campaigns again; 2 or 3 take over.
    net.tick_all(40);
    assert_eq!(net.node(1).role(), Role::Follower);
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], id(1));
}

#[test]
fn membership_4_1_configuration_reverts_when_its_entry_is_truncated() {
    let mut net = leader_of_3();
    net.isolate(1);
    net.node_mut(1)
        .propose_configuration_with(conf(&[1, 2, 3, 4]), ChangeMethod::Joint)
        .unwrap();
    assert!(net.node(1).configuration().is_joint());
    net.drive_all();
    net.campaign(2);
    assert_eq!(net.node(2).role(), Role::Leader);
    net.propose(2, b"y").unwrap();
    net.deliver_all();
    net.heal();
    // Node 1 hears the new leader, its uncommitted joint entry is replaced.
    net.tick_all(4);
    assert_eq!(net.node(1).configuration(), &conf(&[1, 2, 3]));
    assert!(!net.node(1).configuration().is_joint());
}

#[test]
fn membership_new_leader_finishes_an_inherited_joint_change() {
    // etcd users hit clusters stuck in joint state when the leader changed
    // mid-transition; here the next leader appends C_new itself.
    let mut net = leader_of_3();
    net.add_node(4, boot(&[1, 2, 3], 4));
    // The joint entry goes out to 2, 3 and 4; 1 crashes before any answer.
    let index = net
        .node_mut(1)
        .propose_configuration_with(conf(&[1, 2, 3, 4]), ChangeMethod::Joint)
        .unwrap();
    net.drive(id(1));
    assert!(net.node(1).commit_index() < index);
    net.crash(1);
    net.deliver_all();
    assert!(net.node(2).configuration().is_joint());
    net.campaign(2);
    assert_eq!(net.node(2).role(), Role::Leader, "votes of 2, 3 and 4");
    net.drive_all();
    let node = net.node(2);
    assert_eq!(node.configuration(), &conf(&[1, 2, 3, 4]));
    assert!(node.commit_index() >= node.configuration_index());
    assert!(node.configuration_index() > index);
}

#[test]
fn membership_4_2_3_removed_server_cannot_disrupt() {
    let mut net = Network::with_config(3, |c| c.pre_vote = false);
    net.campaign(1);
    // 3 is removed while cut off: it never learns C_new and keeps running.
    net.isolate(3);
    net.node_mut(1).remove_member(id(3)).unwrap();
    net.drive_all();
    assert_eq!(net.node(1).configuration(), &conf(&[1, 2]));
    net.heal();
    let term = net.node(1).term();
    // Its elections (at ever higher terms) are refused as from a non-member.
    for _ in 0..5 {
        net.campaign(3);
        net.deliver_all();
        net.tick_all(1);
    }
    assert!(net.node(3).term() > term);
    assert_eq!(net.node(1).term(), term);
    assert_eq!(net.node(1).role(), Role::Leader);
}

#[test]
fn membership_learner_is_promoted_and_then_votes() {
    let mut net = leader_of_3();
    net.add_node(4, boot(&[1, 2, 3], 4));
    net.node_mut(1).add_learner(id(4)).unwrap();
    net.drive_all();
    assert_eq!(net.node(4).configuration().learners().len(), 1);
    assert!(!net.node(4).configuration().is_voter(id(4)));
    net.node_mut(1).add_voter(id(4)).unwrap();
    net.drive_all();
    assert_eq!(net.node(4).configuration(), &conf(&[1, 2, 3, 4]));
    // Four voters need three: with 2 and 3 away, 1 and 4 cannot commit.
    net.isolate(2);
    net.isolate(3);
    let z = net.propose(1, b"z").unwrap();
    net.deliver_all();
    assert!(net.node(1).commit_index() < z);
}

#[test]
fn membership_one_change_at_a_time_and_tagged_commands_refused() {
    let mut net = leader_of_3();
    net.isolate(2);
    net.isolate(3);
    let index = net
        .node_mut(1)
        .propose_configuration(conf(&[1, 2, 3, 4]))
        .unwrap();
    assert!(matches!(
        net.node_mut(1).remove_member(id(2)),
        Err(Error::ConfigurationChangeInProgress { index: i }) if i == index
    ));
    let tagged = bytes::Bytes::from_static(quorate_raft_core::CONFIGURATION_TAG);
    assert!(matches!(
        net.node_mut(1).propose(tagged),
        Err(Error::ReservedCommand)
    ));
    assert!(matches!(
        net.node_mut(1)
            .propose_configuration(Configuration::default()),
        Err(Error::InvalidConfigurationChange(_))
    ));
}

#[test]
fn membership_snapshot_carries_the_configuration_as_of_its_index() {
    let mut net = leader_of_3();
    net.node_mut(1).remove_member(id(3)).unwrap();
    net.drive_all();
    let applied = net.node(1).applied_index();
    let storage = net.node_mut(1).storage_mut();
    storage.compact(applied, bytes::Bytes::new()).unwrap();
    let snapshot = storage.snapshot().unwrap();
    assert_eq!(snapshot.meta.configuration, conf(&[1, 2]));
    // A restart from it alone recovers that configuration.
    let restarted = Node::new(Config::new(id(1)), storage.clone()).unwrap();
    assert_eq!(restarted.configuration(), &conf(&[1, 2]));
    assert_eq!(restarted.configuration_index(), applied);
}

#[test]
fn membership_new_node_catches_up_from_a_snapshot_older_than_its_addition() {
    let mut net = leader_of_3();
    for _ in 0..5 {
        net.propose(1, b"w").unwrap();
    }
    let applied = net.node(1).applied_index();
    net.node_mut(1)
        .storage_mut()
        .compact(applied, bytes::Bytes::from_static(b"state"))
        .unwrap();
    net.add_node(4, boot(&[1, 2, 3], 4));
    net.node_mut(1).add_voter(id(4)).unwrap();
    net.drive_all();
    net.tick_all(4);
    // The snapshot's configuration lacks node 4; it is installed anyway
    // and the log tail after it makes 4 a voter.
    let installed = &net.installed[&id(4)];
    assert!(!installed[0].meta.configuration.contains(id(4)));
    assert_eq!(net.node(4).configuration(), &conf(&[1, 2, 3, 4]));
    assert_eq!(net.node(4).commit_index(), net.node(1).commit_index());
}
