//! The simulator used directly with an application's own state machine,
//! as a user of the `sim` feature would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use quorate_raft_core::sim::{Cluster, ClusterOptions, StateMachine};
use quorate_transport::sim::SimTime;

/// Appends every command to a list; answers with the list's length.
#[derive(Default, Debug)]
struct Journal(Vec<Bytes>);

impl StateMachine for Journal {
    type Response = usize;
    fn apply(&mut self, command: &Bytes) -> Option<usize> {
        self.0.push(command.clone());
        Some(self.0.len())
    }
    fn snapshot(&self) -> Bytes {
        let mut out = Vec::new();
        for c in &self.0 {
            out.extend_from_slice(&(c.len() as u32).to_be_bytes());
            out.extend_from_slice(c);
        }
        Bytes::from(out)
    }
    fn restore(&mut self, snapshot: &Bytes) {
        self.0.clear();
        let mut rest = snapshot.clone();
        while rest.len() >= 4 {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            self.0.push(rest.slice(4..4 + len));
            rest = rest.slice(4 + len..);
        }
    }
}

fn run_to(cluster: &mut Cluster<Journal>, ms: u64) {
    let until = SimTime::from_millis(ms);
    cluster.run_until(until).unwrap_or_else(|v| {
        let trace: Vec<String> = cluster.trace().map(|e| e.to_string()).collect();
        panic!("{v}\n{}", trace.join("\n"))
    });
}

#[test]
fn leader_election_and_replication_survive_a_leader_crash_and_a_partition() {
    let options = ClusterOptions {
        nodes: 5,
        ..ClusterOptions::default()
    };
    let mut cluster: Cluster<Journal> = Cluster::new(99, &options).unwrap();
    run_to(&mut cluster, 1_000);
    let first = cluster.leader().expect("a leader within a second");
    cluster.propose(first, Bytes::from_static(b"a")).unwrap();
    run_to(&mut cluster, 1_200);

    // The leader crashes; the rest elect another and keep going.
    cluster.crash(first);
    run_to(&mut cluster, 2_500);
    let second = cluster.leader().expect("a new leader");
    assert_ne!(second, first);
    cluster.propose(second, Bytes::from_static(b"b")).unwrap();
    run_to(&mut cluster, 2_700);

    // A follower is cut off, the old leader comes back from its disk.
    let cut_off = cluster
        .ids()
        .into_iter()
        .find(|id| *id != first && *id != second)
        .unwrap();
    cluster.isolate(cut_off);
    cluster.restart(first).unwrap();
    run_to(&mut cluster, 3_500);
    cluster.heal();
    run_to(&mut cluster, 5_000);

    for id in cluster.ids() {
        let journal = cluster.state_machine(id).unwrap();
        assert_eq!(
            journal.0,
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
            "{id:?} applied the same commands in the same order"
        );
    }
    // Responses came back from every node that applied the commands.
    let responses = cluster.take_responses();
    assert!(responses.iter().any(|(_, _, n)| *n == 2));
    assert!(
        cluster.network_stats().dropped() > 0,
        "the partition dropped messages"
    );
    assert!(cluster.crashed().is_empty());
}
