//! Runs the kv-cluster scenario (smaller) over real TCP on 127.0.0.1 and
//! checks what it promises: no acknowledged write lost across a leader
//! crash, no request applied twice however often it was sent, every
//! replica applying every write, and equal Merkle roots (a corrupted
//! replica detected and repaired).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use quorate_examples::kv_cluster::scenario::{self, Params};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_keeps_every_acknowledged_write_once() {
    let params = Params {
        writes: 40,
        // Slower ticks: a loaded debug build must not see spurious elections
        // (they would only cost retries, but keep the run calm).
        tick: Duration::from_millis(20),
        ..Params::default()
    };
    let mut lines = Vec::new();
    let report = scenario::run(params.clone(), &mut |l| lines.push(l.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("scenario failed: {e}\n{}", lines.join("\n")));
    let dump = report.timeline.join("\n");
    // 40 before the crash, 1 sent three times, 1 in flight at the crash, 20 after.
    let expected = params.writes + 1 + 1 + params.writes / 2;
    assert_eq!(report.acknowledged.len(), expected, "{dump}");
    assert!(report.lost.is_empty(), "lost {:?}\n{dump}", report.lost);
    assert!(
        report.applied_twice.is_empty(),
        "applied twice: {:?}\n{dump}",
        report.applied_twice
    );
    assert!(
        report.never_applied.is_empty(),
        "missing on some replica: {:?}\n{dump}",
        report.never_applied
    );
    assert!(report.roots_equal, "{dump}");
    assert_eq!(report.repaired_buckets, 1, "{dump}");
    assert!(
        report.replayed_from_disk > 0,
        "restart found no log\n{dump}"
    );
    assert!(report.failover >= report.election, "{dump}");
}
