//! Witness members: voters that never lead and keep no state-machine data
//! (2+1 deployments). Each test pins one part of the design documented in
//! the crate's `witness` module.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use bytes::{Bytes, BytesMut};
use harness::{Network, id};
use quorate_raft_core::codec::encode;
use quorate_raft_core::{
    Configuration, Error, LogIndex, Message, MessageBody, NodeId, Role, Storage, Term,
};

fn conf(ids: &[u64]) -> Configuration {
    Configuration::new(ids.iter().map(|n| NodeId(*n)))
}

/// Data nodes 1 and 2, witness 3; node 1 leads.
fn two_plus_one() -> Network {
    let mut net = Network::with_members(conf(&[1, 2]).with_witnesses([id(3)]), |_| {});
    net.campaign(1);
    assert_eq!(net.node(1).role(), Role::Leader);
    net
}

/// Whether every entry node `n` holds is a command-free entry: empty, or
/// a configuration entry.
fn holds_no_payloads(net: &Network, n: u64) -> bool {
    let mut entries = Vec::new();
    net.node(n).log_entries(LogIndex(1), &mut entries).unwrap();
    !entries.is_empty()
        && entries
            .iter()
            .all(|e| e.data.is_empty() || e.configuration().is_some())
}

#[test]
fn witness_2_plus_1_keeps_committing_with_either_data_node_down() {
    let mut net = two_plus_one();
    // Data node 2 down: the leader and the witness are a majority.
    net.crash(2);
    let a = net.propose(1, b"a").unwrap();
    assert!(net.node(1).commit_index() >= a);
    assert_eq!(net.applied_data(1), [Bytes::from_static(b"a")]);
    // 2 comes back and catches up; then the leader goes down and 2, with
    // the witness's vote, takes over and keeps committing.
    net.restart(2);
    net.tick_all(3);
    assert_eq!(net.applied_data(2), [Bytes::from_static(b"a")]);
    net.crash(1);
    net.campaign(2);
    assert_eq!(
        net.node(2).role(),
        Role::Leader,
        "elected by 2 and witness 3"
    );
    let b = net.propose(2, b"b").unwrap();
    assert!(net.node(2).commit_index() >= b);
    assert_eq!(
        net.applied_data(2),
        [Bytes::from_static(b"a"), Bytes::from_static(b"b")]
    );
    // The witness applied the same positions, none of the commands.
    assert!(net.applied_data(3).is_empty());
    assert!(net.node(3).applied_index() >= b);
}

#[test]
fn witness_restarts_from_its_metadata_and_votes_as_before() {
    let mut net = two_plus_one();
    net.propose(1, b"a").unwrap();
    // The witness compacts (a snapshot without data) and restarts from
    // disk: snapshot metadata plus a stripped tail.
    let applied = net.node(3).applied_index();
    net.node_mut(3)
        .storage_mut()
        .compact(applied, Bytes::new())
        .unwrap();
    net.propose(1, b"b").unwrap();
    net.crash(3);
    net.restart(3);
    assert_eq!(net.node(3).configuration(), net.node(1).configuration());
    assert_eq!(net.node(3).last_index(), net.node(1).last_index());
    // It still makes the quorum with either data node.
    net.crash(2);
    let c = net.propose(1, b"c").unwrap();
    assert!(net.node(1).commit_index() >= c);
    net.restart(2);
    net.tick_all(3);
    net.crash(1);
    net.campaign(2);
    assert_eq!(net.node(2).role(), Role::Leader);
    assert!(holds_no_payloads(&net, 3));
}

#[test]
fn witness_never_campaigns_even_when_the_leader_is_gone() {
    let mut net = Network::with_members(conf(&[1, 2]).with_witnesses([id(3)]), |c| {
        c.pre_vote = true;
    });
    net.campaign(1);
    net.crash(1);
    net.crash(2);
    let term = net.node(3).term();
    net.node_mut(3).campaign();
    net.tick_all(100);
    assert_eq!(net.node(3).role(), Role::Follower);
    assert_eq!(net.node(3).term(), term, "not even a pre-vote");
    let asked = net.delivered.iter().any(|m| {
        m.from == id(3)
            && matches!(
                m.body,
                MessageBody::RequestVote { .. } | MessageBody::PreVote { .. }
            )
    });
    assert!(!asked, "a witness never asks for votes");
}

#[test]
fn witness_cannot_be_handed_leadership() {
    let mut net = two_plus_one();
    assert!(matches!(
        net.node_mut(1).transfer_leadership(id(3)),
        Err(Error::WitnessCannotLead { id }) if id == NodeId(3)
    ));
    assert_eq!(net.node(1).transferee(), None);
    // A TimeoutNow from the leader (a leader that does not know 3 is a
    // witness, say) does not make it campaign.
    let term = net.node(1).term();
    net.node_mut(3)
        .step(Message {
            from: id(1),
            to: id(3),
            term,
            body: MessageBody::TimeoutNow,
        })
        .unwrap();
    net.drive_all();
    assert_eq!(net.node(3).role(), Role::Follower);
    assert_eq!(net.node(3).term(), term);
    assert_eq!(net.leaders(), [id(1)]);
    // Handing over to the data node works as usual.
    net.node_mut(1).transfer_leadership(id(2)).unwrap();
    net.drive_all();
    assert_eq!(net.leaders(), [id(2)]);
}

#[test]
fn witness_grants_votes_by_the_up_to_date_check_on_metadata() {
    // 2 falls behind; 1 and the witness commit x; 1 goes down. The witness
    // holds x's (index, term) without its data and refuses 2, which lacks
    // it; once 2 has caught up, the witness votes for it.
    let mut net = two_plus_one();
    net.isolate(2);
    net.propose(1, b"x").unwrap();
    net.heal();
    net.cut(1, 2);
    net.crash(1);
    net.campaign(2);
    assert_ne!(net.node(2).role(), Role::Leader);
    let refused = net
        .delivered
        .iter()
        .any(|m| m.from == id(3) && m.body == MessageBody::RequestVoteResponse { granted: false });
    assert!(refused, "the witness refused the stale candidate");
    // The availability trade-off: however long we wait, 2 cannot lead
    // and nothing commits, but x is not lost.
    net.tick_all(200);
    assert!(net.leaders().is_empty(), "the cluster waits for node 1");
    net.restart(1);
    net.heal();
    net.tick_all(100);
    let leader = net.leaders()[0];
    assert_ne!(leader, id(3));
    for n in [1, 2] {
        assert!(
            net.applied_data(n).contains(&Bytes::from_static(b"x")),
            "x survived on node {n}"
        );
    }
}

#[test]
fn witness_log_and_ready_hold_no_payloads() {
    let mut net = two_plus_one();
    for _ in 0..5 {
        net.propose(1, b"payload").unwrap();
    }
    assert!(holds_no_payloads(&net, 3));
    let mut stored = Vec::new();
    let witness = net.node(3).storage();
    witness
        .entries(
            witness.first_index().unwrap(),
            witness.last_index().unwrap().next(),
            u64::MAX,
            &mut stored,
        )
        .unwrap();
    assert_eq!(stored.len(), 6, "the leader's no-op and five entries");
    assert!(stored.iter().all(|e| e.data.is_empty()));
    // Same positions as the data nodes, which hold the payloads.
    let mut data = Vec::new();
    net.node(2).log_entries(LogIndex(1), &mut data).unwrap();
    let positions = |es: &[quorate_raft_core::Entry]| -> Vec<(LogIndex, Term)> {
        es.iter().map(|e| (e.index, e.term)).collect()
    };
    assert_eq!(positions(&data), positions(&stored));
    assert_eq!(net.applied_data(2).len(), 5);
    // What the application saw on the witness: committed entries, none
    // with a command to apply.
    assert_eq!(net.applied[&id(3)].len(), 6);
    assert!(net.applied_data(3).is_empty());
}

#[test]
fn witness_saves_the_payload_bytes_on_the_wire() {
    // Five 100-byte commands in one append to each follower: the frames
    // differ by exactly the payloads (a stripped entry keeps its 8-byte
    // term and a 4-byte zero length in the codec's layout).
    let mut net = two_plus_one();
    net.delivered.clear();
    let node = net.node_mut(1);
    for _ in 0..5 {
        node.propose(Bytes::from(vec![7u8; 100])).unwrap();
    }
    net.drive_all();
    let append_to = |to: u64| -> usize {
        let m = net
            .delivered
            .iter()
            .find(|m| {
                m.to == id(to)
                    && matches!(&m.body, MessageBody::AppendEntries { entries, .. } if entries.len() == 5)
            })
            .unwrap();
        let mut buf = BytesMut::new();
        encode(m, &mut buf);
        buf.len()
    };
    let (data, witness) = (append_to(2), append_to(3));
    // Header 25 + kind 1 + prev index, prev term, commit 24 + count 4 = 54
    // bytes, then 12 bytes per entry plus its payload.
    assert_eq!(data, 54 + 5 * (12 + 100));
    assert_eq!(witness, 54 + 5 * 12);
    eprintln!(
        "AppendEntries of five 100-byte commands: {data} bytes to a data node, {witness} to the witness ({:.0}% saved)",
        100.0 * (data - witness) as f64 / data as f64
    );
}

#[test]
fn witness_appends_fill_the_size_budget_with_stripped_entries() {
    // 200-byte messages: one 100-byte command (116 bytes counted) fits in
    // an append to a data node, twelve stripped entries (16 bytes each)
    // in one to the witness.
    let mut net = Network::with_members(conf(&[1, 2]).with_witnesses([id(3)]), |c| {
        c.max_size_per_msg = 200;
        c.max_inflight_msgs = 1;
    });
    net.campaign(1);
    net.isolate(3);
    for _ in 0..20 {
        net.node_mut(1)
            .propose(Bytes::from(vec![7u8; 100]))
            .unwrap();
    }
    net.drive_all();
    net.heal();
    net.tick_all(3);
    let largest = |to: u64| {
        net.delivered
            .iter()
            .filter_map(|m| match &m.body {
                MessageBody::AppendEntries { entries, .. } if m.to == id(to) => Some(entries.len()),
                _ => None,
            })
            .max()
            .unwrap()
    };
    assert_eq!(largest(3), 12, "200 / 16 stripped entries");
    assert_eq!(largest(2), 1, "one 116-byte entry");
    assert_eq!(net.node(3).last_index(), net.node(1).last_index());
    assert!(holds_no_payloads(&net, 3));
}

#[test]
fn witness_gets_snapshots_without_data() {
    let mut net = Network::with_members(conf(&[1, 2]).with_witnesses([id(3)]), |c| {
        c.max_snapshot_chunk_bytes = 4;
    });
    net.campaign(1);
    net.isolate(3);
    for _ in 0..6 {
        net.propose(1, b"e").unwrap();
    }
    let state = Bytes::from_static(b"the state machine after seven entries");
    net.node_mut(1)
        .storage_mut()
        .compact(LogIndex(6), state.clone())
        .unwrap();
    net.heal();
    net.tick_all(4);
    // The data node 2 was never behind the compacted log; the witness was:
    // one chunk, metadata and configuration only.
    let installed = &net.installed[&id(3)];
    assert_eq!(installed.len(), 1);
    assert_eq!(installed[0].meta.index, LogIndex(6));
    assert!(installed[0].data.is_empty());
    assert!(installed[0].meta.configuration.is_witness(id(3)));
    let chunks = net
        .delivered
        .iter()
        .filter(|m| m.to == id(3) && matches!(m.body, MessageBody::InstallSnapshot { .. }))
        .count();
    assert_eq!(chunks, 1, "no data, so no chunking");
    assert!(holds_no_payloads(&net, 3));
    // The witness votes from the snapshot's position: with 1 down, 2
    // (up to date) wins its vote.
    net.tick_all(2);
    net.crash(1);
    net.campaign(2);
    assert_eq!(net.node(2).role(), Role::Leader);
}

#[test]
fn witness_membership_add_replace_and_no_in_place_switch() {
    // Two data voters; add witness 3 (booting as a learner, as every new
    // node does), which then counts towards the quorum.
    let mut net = Network::new(2);
    net.campaign(1);
    net.add_node(3, conf(&[1, 2]).with_learners([id(3)]));
    net.node_mut(1).add_witness(id(3)).unwrap();
    net.drive_all();
    for n in [1, 2, 3] {
        let c = net.node(n).configuration();
        assert_eq!(c, &conf(&[1, 2]).with_witnesses([id(3)]), "node {n}");
    }
    assert!(holds_no_payloads(&net, 3));
    net.crash(2);
    let x = net.propose(1, b"x").unwrap();
    assert!(net.node(1).commit_index() >= x, "leader and witness commit");
    net.restart(2);
    net.tick_all(3);
    // Witness status is fixed while a member: no in-place switch.
    let leader = net.node_mut(1);
    assert!(matches!(
        leader.add_witness(id(2)),
        Err(Error::InvalidConfigurationChange(_))
    ));
    assert!(matches!(
        leader.add_learner(id(3)),
        Err(Error::InvalidConfigurationChange(_))
    ));
    assert!(matches!(
        leader.propose_configuration(conf(&[3]).with_witnesses([id(3)])),
        Err(Error::InvalidConfigurationChange(_))
    ));
    // A target that does not mention 3 as a witness keeps it one.
    leader.propose_configuration(conf(&[1, 2, 3, 4])).unwrap();
    net.add_node(4, conf(&[1, 2]).with_learners([id(4)]));
    net.drive_all();
    let c = net.node(1).configuration().clone();
    assert_eq!(c, conf(&[1, 2, 4]).with_witnesses([id(3)]));
    // Replace the witness by a new one (5), through the joint configuration
    // in which both are witnesses.
    net.add_node(5, conf(&[1, 2, 3, 4]).with_learners([id(5)]));
    let target = conf(&[1, 2, 4]).with_witnesses([id(5)]);
    net.node_mut(1)
        .propose_configuration(target.clone())
        .unwrap();
    let joint = net.node(1).configuration().clone();
    assert!(joint.is_joint() && joint.is_witness(id(3)) && joint.is_witness(id(5)));
    net.drive_all();
    assert_eq!(net.node(1).configuration(), &target);
    assert_eq!(net.node(5).configuration(), &target);
    assert!(holds_no_payloads(&net, 5));
    // The removed witness's log never held a payload either.
    assert!(holds_no_payloads(&net, 3));
}

#[test]
fn witness_only_targets_and_all_witness_leaders_are_refused() {
    let mut net = two_plus_one();
    // Removing both data nodes would leave nobody able to lead.
    let leader = net.node_mut(1);
    assert!(matches!(
        leader.propose_configuration(Configuration::new([id(3)])),
        Err(Error::InvalidConfigurationChange(_))
    ));
    // Removing the witness is fine: back to two data voters.
    leader.remove_member(id(3)).unwrap();
    net.drive_all();
    assert_eq!(net.node(1).configuration(), &conf(&[1, 2]));
}

/// Seeds of the witness simulation per shard (two shards run in parallel).
/// `QUORATE_SIM_SEEDS=N` runs N seeds, `QUORATE_SIM_SEED=S` replays one.
const SIM_SEEDS: u64 = 90;

/// The fault simulator with witnesses: 2 data + 1 witness, 4 + 1 and
/// 3 + 2 by seed, with crashes, partitions, membership changes (adding and
/// replacing witnesses too), snapshots and transfers as in the main runs.
/// Besides the figure 3 properties (state machine safety on the data
/// nodes, the witnesses' logs matched by position), linearizability and
/// liveness, it checks after every step that no witness leaves the
/// follower role and that no witness holds a command payload.
fn witness_simulation(shard: u64) {
    use quorate_raft_core::sim::{SimOptions, Simulation, seeds_from_env};
    let mut runs = 0;
    let mut installed = 0;
    let mut ops = 0;
    let mut witnesses = 0;
    for seed in seeds_from_env(shard, 2, SIM_SEEDS) {
        let (nodes, w) = [(3, 1), (5, 1), (5, 2)][(seed % 3) as usize];
        let mut options = SimOptions {
            nodes: Some(nodes),
            ..SimOptions::default()
        };
        options.cluster.witnesses = w;
        match Simulation::run(seed, &options) {
            Ok(report) => {
                runs += 1;
                installed += report.snapshots_installed;
                ops += report.operations;
                witnesses += report.witnesses;
            }
            Err(failure) => panic!("witness layout {nodes}/{w}: {failure}"),
        }
    }
    eprintln!(
        "{runs} witness seeds: {ops} linearizable operations, {installed} snapshots installed, {witnesses} witnesses in settled configurations"
    );
    if runs >= 20 {
        assert!(ops > 0 && installed > 0 && witnesses >= runs);
    }
}

#[test]
fn witness_simulation_shard_0() {
    witness_simulation(0);
}

#[test]
fn witness_simulation_shard_1() {
    witness_simulation(1);
}
