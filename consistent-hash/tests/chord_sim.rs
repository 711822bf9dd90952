//! Seeded simulation of hundreds of Chord nodes joining and failing.
//!
//! A deterministic network (seeded delays of 1-3 ticks so messages reorder,
//! messages to dead nodes vanish; while nodes join and crash, 1% of messages
//! are lost and 1% duplicated) drives [`Node`]s through three phases: 200 nodes join one
//! by one; then churn, where 60 of them crash (one every 4 ticks) while 40
//! more join and a lookup starts every tick, of which at least 85% must
//! already be right; then quiet. After each phase the successor and
//! predecessor pointers must match the live ring within 300 quiet ticks
//! (stabilization converges), and then every lookup must return the true
//! successor and take
//! `O(log n)` hops (mean at most `log2(n)/2 + 1`, as the paper predicts).
//! A second run grows
//! rings of 16 and 256 nodes to show the mean grows with `log n`.
//!
//! A third test replays the churn on 12-node rings for many seeds (default
//! 500, `QUORATE_SIM_SEEDS=N` for N; the 200-node runs use N/250, at least
//! 2); `QUORATE_SIM_SEED=S` runs only seed `S`. A failure names its seed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use quorate_consistent_hash::chord::{Config, Event, LookupId, Message, Node, Point, Tick};

const BITS: u32 = 32;

struct Sim {
    rng: fastrand::Rng,
    config: Config,
    now: u64,
    nodes: BTreeMap<Point, Node>,
    in_flight: BTreeMap<u64, Vec<(Point, Point, Message)>>,
    lookups: BTreeMap<(Point, LookupId), Point>,
    results: Vec<LookupResult>,
    messages: u64,
    /// Whether the network loses and duplicates messages right now.
    faults: bool,
}

#[derive(Debug)]
struct LookupResult {
    key: Point,
    successor: Point,
    truth: Point,
    hops: u32,
}

impl Sim {
    fn new(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            // Round trips take 2-6 ticks here; time out only after that.
            config: Config {
                request_timeout: 8,
                ..Config::new(BITS).unwrap()
            },
            now: 0,
            nodes: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            lookups: BTreeMap::new(),
            results: Vec::new(),
            messages: 0,
            faults: true,
        }
    }

    fn fresh_id(&mut self) -> Point {
        loop {
            let id = Point(self.rng.u64(..1 << BITS));
            if !self.nodes.contains_key(&id) {
                return id;
            }
        }
    }

    fn joined(&self) -> Vec<Point> {
        self.nodes
            .values()
            .filter(|node| node.is_joined())
            .map(Node::id)
            .collect()
    }

    fn random_joined(&mut self) -> Point {
        let joined = self.joined();
        joined[self.rng.usize(..joined.len())]
    }

    fn add_first(&mut self) {
        let id = self.fresh_id();
        self.nodes.insert(id, Node::new(id, self.config).unwrap());
    }

    fn join_one(&mut self) {
        let id = self.fresh_id();
        let bootstrap = self.random_joined();
        let mut node = Node::new(id, self.config).unwrap();
        node.join(bootstrap, Tick(self.now));
        self.nodes.insert(id, node);
    }

    fn crash_one(&mut self) {
        let joined = self.joined();
        let victim = joined[self.rng.usize(..joined.len())];
        self.nodes.remove(&victim);
        self.lookups.retain(|(origin, _), _| *origin != victim);
    }

    /// The true successor of `key` among joined, live nodes.
    fn truth(&self, key: Point) -> Point {
        let joined: BTreeSet<Point> = self.joined().into_iter().collect();
        joined
            .range(key..)
            .next()
            .or_else(|| joined.iter().next())
            .copied()
            .unwrap()
    }

    fn start_lookup(&mut self) {
        let origin = self.random_joined();
        let key = Point(self.rng.u64(..1 << BITS));
        let now = Tick(self.now);
        let lookup = self
            .nodes
            .get_mut(&origin)
            .unwrap()
            .lookup(key, now)
            .unwrap();
        self.lookups.insert((origin, lookup), key);
    }

    fn tick(&mut self) {
        let now = Tick(self.now);
        let due = self.in_flight.remove(&self.now).unwrap_or_default();
        for (from, to, message) in due {
            if let Some(node) = self.nodes.get_mut(&to) {
                node.handle_message(now, from, message).unwrap();
            }
        }
        for node in self.nodes.values_mut() {
            node.handle_timeout(now);
        }
        let ids: Vec<Point> = self.nodes.keys().copied().collect();
        for id in ids {
            while let Some(transmit) = self.nodes.get_mut(&id).unwrap().poll_transmit() {
                self.messages += 1;
                // Seeded faults: 1% of messages lost, 1% delivered twice.
                let fate = if self.faults { self.rng.u32(..100) } else { 99 };
                if fate == 0 {
                    continue;
                }
                let copies = if fate == 1 { 2 } else { 1 };
                for _ in 0..copies {
                    let at = self.now + 1 + self.rng.u64(..3);
                    self.in_flight.entry(at).or_default().push((
                        id,
                        transmit.to,
                        transmit.message.clone(),
                    ));
                }
            }
            while let Some(event) = self.nodes.get_mut(&id).unwrap().poll_event() {
                match event {
                    Event::LookupDone {
                        lookup,
                        key,
                        successor,
                        hops,
                    } => {
                        self.lookups.remove(&(id, lookup));
                        let truth = self.truth(key);
                        self.results.push(LookupResult {
                            key,
                            successor,
                            truth,
                            hops,
                        });
                    }
                    Event::LookupFailed { lookup, key } => {
                        self.lookups.remove(&(id, lookup));
                        let truth = self.truth(key);
                        self.results.push(LookupResult {
                            key,
                            successor: Point(u64::MAX),
                            truth,
                            hops: 0,
                        });
                    }
                    Event::JoinFailed => {
                        let bootstrap = self.random_joined();
                        self.nodes.get_mut(&id).unwrap().join(bootstrap, now);
                    }
                    // Joined, PredecessorChanged and events added later.
                    _ => {}
                }
            }
        }
        self.now += 1;
    }

    fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.tick();
        }
    }

    /// Runs `count` lookups to completion (crashed origins drop theirs) and returns the results.
    fn measure_lookups(&mut self, count: usize) -> Vec<LookupResult> {
        // Lookups started during churn may rightly have seen stale tables: finish and drop them.
        self.finish_lookups();
        self.results.clear();
        for _ in 0..count {
            self.start_lookup();
        }
        self.finish_lookups();
        assert!(
            self.lookups.is_empty(),
            "{} lookups never finished",
            self.lookups.len()
        );
        std::mem::take(&mut self.results)
    }

    fn finish_lookups(&mut self) {
        for _ in 0..200 {
            if self.lookups.is_empty() {
                break;
            }
            self.tick();
        }
    }

    /// Whether every joined node's successor and predecessor are the true ones.
    fn ring_is_consistent(&self) -> bool {
        let joined = self.joined();
        joined.len() == self.nodes.len()
            && joined.iter().enumerate().all(|(i, id)| {
                let node = &self.nodes[id];
                node.successor() == joined[(i + 1) % joined.len()]
                    && node.predecessor() == Some(joined[(i + joined.len() - 1) % joined.len()])
            })
    }

    /// Runs quiet ticks until the ring is consistent, at most `budget` of them,
    /// then checks it (with a precise message if it never converged).
    fn settle(&mut self, budget: u64) {
        self.faults = false;
        for _ in 0..budget {
            if self.ring_is_consistent() {
                break;
            }
            self.tick();
        }
        self.assert_ring_is_consistent();
    }

    fn assert_ring_is_consistent(&self) {
        let joined: Vec<Point> = self.joined();
        let waiting: Vec<&Node> = self
            .nodes
            .values()
            .filter(|node| !node.is_joined())
            .collect();
        assert!(waiting.is_empty(), "nodes never joined: {waiting:?}");
        for (i, id) in joined.iter().enumerate() {
            let node = &self.nodes[id];
            let successor = joined[(i + 1) % joined.len()];
            let predecessor = joined[(i + joined.len() - 1) % joined.len()];
            assert_eq!(
                node.successor(),
                successor,
                "successor of {node:?}; the true successor: {:?}; the believed successor: {:?}",
                self.nodes[&successor],
                self.nodes.get(&node.successor())
            );
            assert_eq!(
                node.predecessor(),
                Some(predecessor),
                "predecessor of {id:?}"
            );
        }
    }
}

fn assert_lookups_correct_and_logarithmic(results: &[LookupResult], nodes: usize, phase: &str) {
    let wrong: Vec<&LookupResult> = results.iter().filter(|r| r.successor != r.truth).collect();
    if let Some(first) = wrong.first() {
        panic!(
            "{phase}: {} of {} lookups wrong, e.g. key {:?} gave {:?} instead of {:?} after {} hops",
            wrong.len(),
            results.len(),
            first.key,
            first.successor,
            first.truth,
            first.hops
        );
    }
    let log_n = (nodes as f64).log2();
    let mean = results.iter().map(|r| f64::from(r.hops)).sum::<f64>() / results.len() as f64;
    let max = results.iter().map(|r| r.hops).max().unwrap();
    eprintln!("{phase}: {nodes} nodes, mean hops {mean:.2}, max {max}, log2 n {log_n:.2}");
    // Chord's bound: about (1/2) log2 n hops on average, O(log n) at most.
    assert!(
        mean <= 0.5 * log_n + 1.0,
        "{phase}: mean hops {mean} > log2 n / 2 + 1 = {}",
        0.5 * log_n + 1.0
    );
    assert!(
        f64::from(max) <= 2.0 * log_n + 2.0,
        "{phase}: max hops {max} > 2 log2 n + 2"
    );
}

/// A ring of `nodes` nodes that joined one by one, then stabilized within `budget` ticks.
fn grown(seed: u64, nodes: usize, budget: u64) -> Sim {
    let mut sim = Sim::new(seed);
    sim.add_first();
    for _ in 1..nodes {
        sim.join_one();
        sim.run(2);
    }
    // Quiet network from here: a lost reply can briefly evict a live node
    // (healed by the next stabilize), so exact checks need a quiet spell.
    sim.settle(budget);
    sim
}

/// The same story on 12 nodes, cheap enough for hundreds of seeds: 4 crash
/// and 4 join over 60 faulty ticks, then every pointer and lookup is exact.
fn small_ring(seed: u64) {
    let mut sim = grown(seed, 12, 300);
    sim.faults = true;
    for step in 0..60u64 {
        if step % 15 == 0 {
            sim.crash_one();
        }
        if step % 15 == 7 {
            sim.join_one();
        }
        sim.start_lookup();
        sim.tick();
    }
    sim.settle(300);
    let results = sim.measure_lookups(40);
    assert_lookups_correct_and_logarithmic(&results, sim.nodes.len(), "small ring");
}

fn simulate(seed: u64) {
    let mut sim = grown(seed, 200, 300);
    let results = sim.measure_lookups(300);
    assert_lookups_correct_and_logarithmic(&results, sim.nodes.len(), "after joins");

    // Churn on a faulty network: a crash every 4 ticks, a join every 6, lookups all along.
    sim.faults = true;
    let mut during = Vec::new();
    for step in 0..240u64 {
        if step % 4 == 0 {
            sim.crash_one();
        }
        if step % 6 == 0 {
            sim.join_one();
        }
        sim.start_lookup();
        sim.tick();
        during.append(&mut sim.results);
    }
    sim.faults = false;
    sim.run(150);
    during.append(&mut sim.results);
    let correct = during.iter().filter(|r| r.successor == r.truth).count();
    eprintln!(
        "seed {seed}: during churn {correct} of {} lookups correct, {} messages",
        during.len(),
        sim.messages
    );
    // A crash is noticed after `misses_to_fail` timeouts (3 x 8 ticks); until
    // then the dead node's arc still resolves to it. With a crash every 4
    // ticks about 6 of ~190 arcs are stale at any time (~3%), plus joiners
    // not yet linked in: 91-97% correct over 24 seeds; 85% leaves margin.
    assert!(
        correct * 100 >= during.len() * 85,
        "only {correct} of {} lookups correct during churn",
        during.len()
    );

    sim.settle(300);
    let results = sim.measure_lookups(300);
    assert_lookups_correct_and_logarithmic(&results, sim.nodes.len(), "after churn");
}

/// `QUORATE_SIM_SEED=S` runs seed S only. Otherwise the small-ring
/// simulation runs `QUORATE_SIM_SEEDS` seeds (default 500) and the
/// hundreds-of-nodes ones, 100x dearer each, one per 250 of those (at least 2).
fn seeds(large: bool) -> Vec<u64> {
    if let Some(seed) = std::env::var("QUORATE_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let count = std::env::var("QUORATE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500u64);
    if large {
        (0..(count / 250).max(2)).collect()
    } else {
        (0..count).collect()
    }
}

/// Mean hops grow with log n: 16x more nodes (16 -> 256) add about
/// (1/2) log2 16 = 2 hops, nothing like the 16x of a linear walk.
fn scaling(seed: u64) {
    let mut means = Vec::new();
    for nodes in [16, 256] {
        let mut sim = grown(seed, nodes, 300);
        let results = sim.measure_lookups(300);
        assert_lookups_correct_and_logarithmic(&results, nodes, &format!("{nodes} nodes"));
        means.push(results.iter().map(|r| f64::from(r.hops)).sum::<f64>() / results.len() as f64);
    }
    let growth = means[1] - means[0];
    assert!(
        growth <= 3.0,
        "mean hops grew by {growth} from 16 to 256 nodes: {means:?}"
    );
}

fn for_each_seed(large: bool, run: fn(u64)) {
    for seed in seeds(large) {
        if std::panic::catch_unwind(|| run(seed)).is_err() {
            panic!("chord simulation failed for seed {seed}; rerun with QUORATE_SIM_SEED={seed}");
        }
    }
}

#[test]
fn chord_lookups_stay_correct_and_logarithmic_under_churn() {
    for_each_seed(true, simulate);
}

#[test]
fn chord_small_rings_survive_churn_and_faults() {
    for_each_seed(false, small_ring);
}

#[test]
fn chord_hops_grow_logarithmically() {
    for_each_seed(true, scaling);
}
