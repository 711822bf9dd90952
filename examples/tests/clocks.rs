//! The clocks example's claims, checked against happened-before computed from
//! the message pattern alone (program order plus send/receive edges).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use quorate_examples::clocks::{self, Action, MessageId, Process, Run, ScenarioError};

/// Every check the example's report relies on.
fn check(run: &Run, label: &str) {
    let n = run.events.len();
    let concurrent = run.concurrent_pairs();
    for i in 0..n {
        for j in (i + 1)..n {
            let ordered = run.happened_before(i, j) || run.happened_before(j, i);
            // Reported concurrent exactly when not causally related.
            assert_eq!(
                concurrent.contains(&(i, j)),
                !ordered,
                "{label}: events {} and {}",
                run.events[i].name,
                run.events[j].name
            );
        }
    }
    for (i, j) in run.ordered_pairs() {
        let (e, f) = (&run.events[i], &run.events[j]);
        assert!(
            e.lamport < f.lamport,
            "{label}: Lamport {} -> {}",
            e.name,
            f.name
        );
        assert!(e.hlc < f.hlc, "{label}: HLC {} -> {}", e.name, f.name);
        assert!(
            e.vector < f.vector,
            "{label}: vector {} -> {}",
            e.name,
            f.name
        );
    }
    // Lamport stamps are unique thanks to the node tie-break.
    let mut stamps: Vec<_> = run.events.iter().map(|e| e.lamport).collect();
    stamps.sort();
    stamps.dedup();
    assert_eq!(stamps.len(), n, "{label}: duplicate Lamport stamps");
    // The HLC never falls behind the local wall clock, and never runs further
    // ahead of it than the largest skew between processes allows.
    for e in &run.events {
        assert!(
            e.hlc.physical_ms() >= clocks::EPOCH_MS + e.wall_ms,
            "{label}: {}",
            e.name
        );
    }
    assert!(
        run.max_hlc_lead_ms() <= 10,
        "{label}: HLC ran {} ms ahead",
        run.max_hlc_lead_ms()
    );
}

#[test]
fn scripted_run_matches_hand_computation() {
    let run = clocks::run(&clocks::scripted()).unwrap();
    check(&run, "scripted");
    let names: Vec<&str> = run.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "a1", "a2", "c1", "b1", "b2", "a3", "c2", "c3", "a4", "b3", "c4", "a5"
        ]
    );
    // Lamport's rules applied by hand to the script (see the step comments in
    // `scripted`): a receive takes max(local, message) + 1.
    let lamport: Vec<u64> = run.events.iter().map(|e| e.lamport.time).collect();
    assert_eq!(lamport, [1, 2, 1, 3, 4, 3, 2, 5, 4, 5, 6, 7]);
    let vector = |name: &str| -> Vec<u64> {
        let e = run.events.iter().find(|e| e.name == name).unwrap();
        Process::ALL.iter().map(|p| e.vector.get(p)).collect()
    };
    assert_eq!(vector("c3"), [2, 2, 3]);
    assert_eq!(vector("a4"), [4, 0, 2]);
    assert_eq!(vector("a5"), [5, 2, 4]);
    // c1 precedes only C's later events and A's receives; B never hears of it.
    let index = |name: &str| names.iter().position(|n| *n == name).unwrap();
    let c1 = index("c1");
    let mut with_c1: Vec<&str> = run
        .concurrent_pairs()
        .into_iter()
        .filter_map(|(i, j)| match (i == c1, j == c1) {
            (true, _) => Some(names[j]),
            (_, true) => Some(names[i]),
            _ => None,
        })
        .collect();
    with_c1.sort_unstable();
    assert_eq!(with_c1, ["a1", "a2", "a3", "b1", "b2", "b3"]);
    // B's wall clock is 6 ms fast: C, 4 ms slow, must use the HLC's logical
    // counter when m2 arrives (wall time at C is behind the stamp of m2).
    assert!(run.logical_counter_events().contains(&index("c3")));
    let report = run.render();
    assert!(report.contains("Lamport stamps order every causal pair: yes"));
    assert!(report.contains("HLC stamps order every causal pair: yes"));
    assert!(!report.contains("NO"));
    for name in names {
        assert!(report.contains(name));
    }
}

#[test]
fn random_runs_agree_with_happened_before() {
    let seeds = std::env::var("QUORATE_SIM_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200u64);
    for seed in 0..seeds {
        let run = clocks::run(&clocks::random(seed, 20)).unwrap();
        check(&run, &format!("seed {seed}"));
    }
}

#[test]
fn receiving_a_message_never_sent_is_an_error() {
    let actions = [Action::Local(Process(0)), Action::Receive(MessageId(0))];
    assert_eq!(
        clocks::run(&actions).unwrap_err(),
        ScenarioError::NotInFlight {
            step: 1,
            message: MessageId(0)
        }
    );
}
