//! The fault simulator in CI: at least 500 seeds (split over four test
//! functions so they run in parallel), each checking the figure 3
//! properties after every step, liveness after healing, deduplication of
//! retries and linearizability of the clients' history.
//! `QUORATE_SIM_SEEDS=N` runs N seeds; `QUORATE_SIM_SEED=S` replays one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use quorate_raft_core::sim::{Nemesis, SimOptions, SimReport, Simulation, run_seeds};

const SHARDS: u64 = 4;
const DEFAULT_SEEDS: u64 = 500;

fn run_shard(shard: u64) -> Vec<SimReport> {
    let options = SimOptions::default();
    // Mutation testing (`mutants/run.sh`) sets QUORATE_SIM_KEEP_GOING to
    // count every failing seed.
    run_seeds(shard, SHARDS, DEFAULT_SEEDS, |seed| {
        Simulation::run(seed, &options)
    })
}

fn summarize(reports: &[SimReport]) {
    let ops: usize = reports.iter().map(|r| r.operations).sum();
    let index_reads: u64 = reports.iter().map(|r| r.index_reads).sum();
    let lease_reads: u64 = reports.iter().map(|r| r.lease_reads).sum();
    let dedup: u64 = reports.iter().map(|r| r.deduplicated).sum();
    let faults: usize = reports.iter().map(|r| r.faults).sum();
    let dropped: u64 = reports.iter().map(|r| r.dropped).sum();
    let steps: u64 = reports.iter().map(|r| r.steps).sum();
    let snapshots: u64 = reports.iter().map(|r| r.snapshots_installed).sum();
    let lost: u64 = reports.iter().map(|r| r.lost_writes).sum();
    let torn: u64 = reports.iter().map(|r| r.torn_appends).sum();
    let changes: u64 = reports.iter().map(|r| r.membership_changes).sum();
    let promotions: u64 = reports.iter().map(|r| r.promotions).sum();
    let joint: u64 = reports.iter().map(|r| r.joint_changes).sum();
    let removed: usize = reports.iter().map(|r| r.removed_running).sum();
    let following = |n| reports.iter().filter(|r| r.nemesis == n).count();
    let figure_8: u64 = reports.iter().map(|r| r.figure_8_moments).sum();
    let reboots: u64 = reports.iter().map(|r| r.lease_reboots).sum();
    let (churn, stale) = (
        following(Nemesis::LeaderChurn),
        following(Nemesis::StaleLeader),
    );
    eprintln!(
        "{} seeds: {ops} linearizable operations ({index_reads} reads without log entries, {lease_reads} of them by lease), {dedup} retries deduplicated, {faults} faults, {dropped} messages dropped, {snapshots} snapshots installed, {changes} membership changes ({joint} joint, {promotions} learners promoted after catching up), {removed} removed servers left running, {steps} steps",
        reports.len()
    );
    eprintln!(
        "  of them {churn} with leader churn, {stale} with a stale leader; {figure_8} leaders rebooted at the figure 8 moment, {reboots} lease holders rebooted inside the lease; crashes lost {lost} unsynced writes and tore {torn} appends"
    );
    if reports.len() >= 20 {
        assert!(index_reads > 0, "ReadIndex reads were exercised");
        assert!(lease_reads > 0, "lease reads were exercised");
        assert!(dedup > 0, "retries were deduplicated");
        assert!(snapshots > 0, "followers installed snapshots");
        assert!(changes > 0, "membership changed");
        assert!(promotions > 0, "learners caught up and were promoted");
        assert!(
            joint > 0 && joint < changes,
            "one-step and joint changes ran"
        );
        assert!(removed > 0, "removed servers kept running");
        assert!(churn > 0 && stale > 0, "the targeted schedules ran");
        assert!(figure_8 > 0, "leaders were rebooted at the figure 8 moment");
        assert!(reboots > 0, "lease holders were rebooted inside the lease");
        assert!(
            lost > 0 && torn > 0,
            "crashes lost unsynced writes and tore appends"
        );
    }
}

#[test]
fn safety_liveness_and_linearizability_under_faults_shard_0() {
    summarize(&run_shard(0));
}

#[test]
fn safety_liveness_and_linearizability_under_faults_shard_1() {
    summarize(&run_shard(1));
}

#[test]
fn safety_liveness_and_linearizability_under_faults_shard_2() {
    summarize(&run_shard(2));
}

#[test]
fn safety_liveness_and_linearizability_under_faults_shard_3() {
    summarize(&run_shard(3));
}

#[test]
fn same_seed_same_run() {
    let options = SimOptions::default();
    let a = Simulation::run(12345, &options).unwrap();
    let b = Simulation::run(12345, &options).unwrap();
    assert_eq!(
        (a.steps, a.operations, a.committed),
        (b.steps, b.operations, b.committed)
    );
}
