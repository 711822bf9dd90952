//! Seeded simulation of a causal broadcast group over a network that
//! reorders and duplicates messages, with tiny buffers that refuse messages
//! (which the network then retransmits).
//!
//! Ground truth is tracked apart from the clocks: each broadcast records the
//! ids of every message its sender had delivered. Checked: every message is
//! delivered exactly once everywhere, only after all its dependencies, and
//! Lamport and HLC stamps order every dependency before its dependent.
//!
//! Runs 300 seeds; set `QUORATE_SIM_SEEDS=N` to run N. A failure names its seed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use quorate_clocks::{
    Admission, CausalBuffer, CausalError, Hlc, HlcTimestamp, LamportClock, LamportTimestamp,
    MaxDrift, VectorClock,
};

#[derive(Debug, Clone)]
struct Broadcast {
    id: usize,
    sender: u8,
    clock: VectorClock<u8>,
    lamport: LamportTimestamp<u8>,
    hlc: HlcTimestamp,
}

struct Member {
    buffer: CausalBuffer<u8, usize>,
    lamport: LamportClock<u8>,
    hlc: Hlc,
    delivered: BTreeSet<usize>,
    /// Ids the buffer took in as waiting and has not delivered yet.
    waiting: BTreeSet<usize>,
    /// Physical clock of this member, in ms, with its own skew.
    skew_ms: u64,
}

fn seeds() -> u64 {
    std::env::var("QUORATE_SIM_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300)
}

/// How often each admission outcome came up, to show the paths are exercised.
#[derive(Default)]
struct Outcomes {
    waiting: usize,
    duplicate: usize,
    full: usize,
}

#[test]
fn causal_broadcast_under_reordering_and_duplication() {
    let mut outcomes = Outcomes::default();
    let seeds = seeds();
    for seed in 0..seeds {
        run(seed, &mut outcomes);
    }
    if seeds >= 100 {
        assert!(outcomes.waiting > 0 && outcomes.duplicate > 0 && outcomes.full > 0);
    }
}

fn run(seed: u64, outcomes: &mut Outcomes) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let members_count = rng.u8(2..=5);
    let capacity = rng.usize(1..=4);
    let mut members: Vec<Member> = (0..members_count)
        .map(|id| Member {
            buffer: CausalBuffer::new(id, capacity),
            lamport: LamportClock::new(id),
            hlc: Hlc::with_max_drift(MaxDrift::millis(10_000)),
            delivered: BTreeSet::new(),
            waiting: BTreeSet::new(),
            skew_ms: rng.u64(0..50),
        })
        .collect();
    let mut broadcasts: Vec<Broadcast> = Vec::new();
    let mut deps: Vec<BTreeSet<usize>> = Vec::new();
    // In flight: (destination, broadcast id).
    let mut network: Vec<(u8, usize)> = Vec::new();
    let mut now_ms = 1_000u64;
    let total = rng.usize(5..40);

    let mut steps = 0;
    while broadcasts.len() < total || !network.is_empty() {
        steps += 1;
        assert!(steps < 100_000, "seed {seed}: no progress");
        now_ms += rng.u64(0..3);
        if broadcasts.len() < total && (network.is_empty() || rng.u8(0..3) == 0) {
            let sender = rng.u8(0..members_count);
            let member = &mut members[sender as usize];
            let id = broadcasts.len();
            let physical = now_ms + member.skew_ms;
            let broadcast = Broadcast {
                id,
                sender,
                clock: member.buffer.broadcast(),
                lamport: member.lamport.send(),
                hlc: member.hlc.now(physical).unwrap(),
            };
            deps.push(member.delivered.clone());
            member.delivered.insert(id);
            for destination in (0..members_count).filter(|&d| d != sender) {
                network.push((destination, id));
            }
            broadcasts.push(broadcast);
            continue;
        }
        // Deliver a random in-flight message; sometimes duplicate it.
        let (destination, id) = network.swap_remove(rng.usize(..network.len()));
        if rng.u8(0..5) == 0 {
            network.push((destination, id));
        }
        let message = &broadcasts[id];
        let member = &mut members[destination as usize];
        let known = member.delivered.contains(&id) || member.waiting.contains(&id);
        let admission = member
            .buffer
            .receive(message.sender, message.clock.clone(), id);
        assert_eq!(
            admission == Ok(Admission::Duplicate),
            known,
            "seed {seed}: duplicate detection wrong for message {id} at {destination}"
        );
        match admission {
            Ok(Admission::Ready) => {}
            Ok(Admission::Waiting) => {
                outcomes.waiting += 1;
                member.waiting.insert(id);
            }
            Ok(Admission::Duplicate) => outcomes.duplicate += 1,
            Err(CausalError::Full { .. }) => {
                outcomes.full += 1;
                assert_eq!(member.buffer.waiting_len(), capacity, "seed {seed}");
                network.push((destination, id));
            }
            Err(other) => panic!("seed {seed}: unexpected {other}"),
        }
        while let Some(delivery) = member.buffer.poll_deliver() {
            let delivered = &broadcasts[delivery.message];
            member.waiting.remove(&delivered.id);
            assert!(
                member.delivered.insert(delivered.id),
                "seed {seed}: message {} delivered twice at {destination}",
                delivered.id
            );
            assert!(
                deps[delivered.id].is_subset(&member.delivered),
                "seed {seed}: message {} delivered at {destination} before its dependencies",
                delivered.id
            );
            member.lamport.receive(&delivered.lamport).unwrap();
            member
                .hlc
                .update(delivered.hlc, now_ms + member.skew_ms)
                .unwrap();
        }
        // What the buffer says is missing must be real broadcasts not yet
        // delivered here, and a blocked buffer must name at least one.
        let missing = member.buffer.missing();
        assert_eq!(
            missing.is_empty(),
            member.buffer.waiting_len() == 0,
            "seed {seed}"
        );
        for dot in missing {
            let broadcast = broadcasts
                .iter()
                .find(|b| b.sender == dot.actor && b.clock.get(&dot.actor) == dot.counter);
            let Some(broadcast) = broadcast else {
                panic!("seed {seed}: missing {dot} was never broadcast");
            };
            assert!(
                !member.delivered.contains(&broadcast.id)
                    && !member.waiting.contains(&broadcast.id),
                "seed {seed}: {dot} is not missing, it is delivered or buffered"
            );
        }
    }
    for (index, member) in members.iter().enumerate() {
        assert_eq!(
            member.delivered.len(),
            broadcasts.len(),
            "seed {seed}: member {index} missed messages"
        );
        assert_eq!(member.buffer.waiting_len(), 0, "seed {seed}");
    }
    for (id, dependencies) in deps.iter().enumerate() {
        for &dep in dependencies {
            let (before, after) = (&broadcasts[dep], &broadcasts[id]);
            assert!(before.lamport < after.lamport, "seed {seed}: Lamport order");
            assert!(before.hlc < after.hlc, "seed {seed}: HLC order");
            assert!(before.clock < after.clock, "seed {seed}: vector order");
        }
    }
}
