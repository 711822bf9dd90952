//! The multi-raft simulator in CI: 500 seeds (split over four test
//! functions so they run in parallel), each with 3 or 5 servers running 8
//! to 64 groups with quiescence on, checking every group's figure 3
//! properties at every Ready, that no lease read is served after a newer
//! leader was elected, that idle groups quiesce and a quiet system sends
//! liveness beats only, that the servers keeping a quorum elect for every
//! group they lost when a fault strikes the quiet system, liveness after
//! healing, deduplication of retries and per-group linearizability.
//! `QUORATE_SIM_SEEDS=N` runs N seeds; `QUORATE_SIM_SEED=S` replays one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use quorate_raft_core::sim::multi::{MultiSimOptions, MultiSimReport, MultiSimulation, QuietFault};
use quorate_raft_core::sim::run_seeds;

const SHARDS: u64 = 4;
const DEFAULT_SEEDS: u64 = 500;

fn run_shard(shard: u64) -> Vec<MultiSimReport> {
    let options = MultiSimOptions::default();
    // Mutation testing (`mutants/run.sh`) sets QUORATE_SIM_KEEP_GOING to
    // count every failing seed.
    run_seeds(shard, SHARDS, DEFAULT_SEEDS, |seed| {
        MultiSimulation::run(seed, &options)
    })
}

fn summarize(reports: &[MultiSimReport]) {
    let sum = |f: fn(&MultiSimReport) -> u64| reports.iter().map(f).sum::<u64>();
    let ops = sum(|r| r.operations as u64);
    let lease = sum(|r| r.lease_reads);
    let refused = sum(|r| r.lease_refused);
    let index = sum(|r| r.index_reads);
    let dedup = sum(|r| r.deduplicated);
    let crashes = sum(|r| r.crashes);
    let quiesced = sum(|r| r.quiesced_groups);
    let (quiet_ticks, quiet_batches, allowed) = (
        sum(|r| r.quiet_window.0),
        sum(|r| r.quiet_window.1),
        sum(|r| r.quiet_window.2),
    );
    let re_elected = sum(|r| r.re_elected.0);
    let slowest = reports.iter().map(|r| r.re_elected.1).max().unwrap_or(0);
    let requiesced = sum(|r| r.requiesced);
    let woken = sum(|r| r.woken_by_liveness);
    let (batches, messages) = (sum(|r| r.batches.0), sum(|r| r.batches.1));
    let lost = sum(|r| r.lost_writes.0);
    let snapshots = sum(|r| r.snapshots_installed);
    let groups = sum(|r| r.groups * r.servers);
    eprintln!(
        "{} seeds ({groups} group replicas): {ops} linearizable operations ({index} reads without log entries, {lease} by lease, {refused} lease reads refused), {dedup} retries deduplicated, {crashes} crashes ({lost} unsynced writes lost), {snapshots} snapshots installed",
        reports.len()
    );
    eprintln!(
        "  quiescence: {quiesced} replicas quiesced before the quiet fault; quiet windows of {quiet_ticks} ticks sent {quiet_batches} batches (beats allow {allowed}); {re_elected} groups re-elected after a quiet fault (slowest {slowest} ticks); {requiesced} replicas quiet again; {woken} wakes by liveness; {batches} batches carried {messages} messages"
    );
    if reports.len() >= 20 {
        assert!(lease > 0, "lease reads were exercised");
        assert!(refused > 0, "lease reads of quiet leaders were refused");
        assert!(index > 0, "ReadIndex reads were exercised");
        assert!(dedup > 0, "retries were deduplicated");
        assert!(crashes > 0 && lost > 0, "crashes lost unsynced writes");
        assert!(snapshots > 0, "followers installed snapshots");
        assert!(re_elected > 0, "quiet faults made the others elect");
        assert!(woken > 0, "liveness changes woke groups");
        assert!(
            quiet_batches > 0,
            "the quiet windows carried liveness beats"
        );
        for fault in [
            QuietFault::IsolateLeader,
            QuietFault::IsolateFollower,
            QuietFault::CrashLeader,
            QuietFault::RestartLeader,
            QuietFault::MuteLeader,
            QuietFault::DeafenLeader,
            QuietFault::SplitMinority,
        ] {
            assert!(
                reports.iter().any(|r| r.quiet_fault == fault),
                "{fault:?} ran"
            );
        }
    }
}

#[test]
fn many_quiescing_groups_stay_safe_live_and_linearizable_shard_0() {
    summarize(&run_shard(0));
}

#[test]
fn many_quiescing_groups_stay_safe_live_and_linearizable_shard_1() {
    summarize(&run_shard(1));
}

#[test]
fn many_quiescing_groups_stay_safe_live_and_linearizable_shard_2() {
    summarize(&run_shard(2));
}

#[test]
fn many_quiescing_groups_stay_safe_live_and_linearizable_shard_3() {
    summarize(&run_shard(3));
}

#[test]
fn same_seed_same_run() {
    let options = MultiSimOptions::default();
    let a = MultiSimulation::run(4242, &options).unwrap();
    let b = MultiSimulation::run(4242, &options).unwrap();
    assert_eq!(
        (a.steps, a.operations, a.committed, a.batches),
        (b.steps, b.operations, b.committed, b.batches)
    );
}
