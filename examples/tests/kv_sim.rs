//! A deterministic simulation of whole kv-cluster nodes: three
//! [`NodeCore`]s (the node's own logic: Raft driver, request handling,
//! anti-entropy gossip, compaction, real log files) over
//! `quorate_transport::sim`'s seeded network, with a simulated clock, a
//! client, crashes with restarts from disk, and pauses (SIGSTOP) during
//! which everything sent to the paused node piles up in its socket buffers
//! and arrives at once when it resumes.
//!
//! This is the failure the real processes showed and the Raft simulator
//! could not: after a restart or a pause of one node an idle cluster lost
//! every leader for good, because the anti-entropy gossip echoed a backlog
//! of old rounds between the nodes. Each run checks that the cluster
//! recovers (a leader for every shard that every node agrees on, a write
//! and a read answered) within 5 s, and that node-to-node traffic stays
//! bounded meanwhile. Failures print the seed; `QUORATE_SIM_SEEDS=N` runs
//! more seeds.
//!
//! The transaction workload drives `kv_cluster::txn`'s Sans-IO
//! coordinator over the same network: list-append transactions across
//! both shards while coordinators crash mid-transaction and nodes crash,
//! pause and are cut off, every seed's history checked for atomic
//! visibility and strict serializability by `jepsen::txn`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use quorate_examples::jepsen::session::{Guarantee, SessionEvent, SessionOp, check_sessions};
use quorate_examples::jepsen::txn::{
    Anomaly, GARBAGE_TOKEN, Isolation, Mop, Txn, TxnIndex, TxnOutcome, check, check_with,
    decode_tokens, encode_tokens, render, render_txn,
};
use quorate_examples::kv_cluster::CLIENT_CHANNEL;
use quorate_examples::kv_cluster::clock_sync::CLOCK_CHANNEL;
use quorate_examples::kv_cluster::protocol::{Consistency, Envelope, Reply, Request};
use quorate_examples::kv_cluster::server::{NodeConfig, NodeCore};
use quorate_examples::kv_cluster::txn::{
    Coordinator, TxnConfig, TxnFailure, TxnId, TxnOp, TxnOutcome as CoordinatorOutcome,
    priority_by_age,
};
use quorate_transport::Event;
use quorate_transport::framing::{Frame, HEADER_LEN};
use quorate_transport::sim::{LinkConfig, Network, SimTime};
use quorate_transport::tcp::PeerId;

const NODES: [u64; 3] = [1, 2, 3];
const SHARDS: u32 = 2;
const CLIENT: u64 = 1000;
const TICK: Duration = Duration::from_millis(10);
/// Node-to-node bytes in one run past which it is a storm (a healthy run
/// of about 20 simulated seconds sends well under 2 MB).
const STORM_BYTES: u64 = 64 * 1024 * 1024;
/// Bandwidth of a simulated node-to-node link: enough for the workload,
/// little enough that a backlog shows as queueing delay.
const LINK_BYTES_PER_SEC: u64 = 20 * 1024 * 1024;
/// The simulated wall clock starts here (HLC stamps need a plausible time).
const EPOCH_MS: u64 = 1_767_225_600_000;

fn wire_size(frame: &Frame) -> u64 {
    (HEADER_LEN + frame.payload.len()) as u64
}

struct Slot {
    config: NodeConfig,
    core: Option<NodeCore>,
    /// Paused (SIGSTOP): what arrives waits here, in order.
    paused: Option<VecDeque<(u64, Frame)>>,
}

struct Sim {
    seed: u64,
    /// Shards every node hosts.
    shards: u32,
    dir: PathBuf,
    net: Network<u64, Frame>,
    slots: BTreeMap<u64, Slot>,
    now: SimTime,
    next_tick: SimTime,
    /// Node-to-node bytes sent, total.
    peer_bytes: u64,
    /// Replies the client received, by request id.
    replies: HashMap<u64, Reply>,
    next_request: u64,
    /// The client's session and last sequence number, per shard.
    sessions: HashMap<u32, (u64, u64)>,
    /// How far each node's wall clock is off the simulated time (ms).
    skew_ms: HashMap<u64, i64>,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        Sim::with_shards(seed, SHARDS)
    }

    fn with_shards(seed: u64, shards: u32) -> Sim {
        let dir = std::env::temp_dir().join(format!(
            "quorate-kv-sim-{}-{seed}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        // Each node-to-node link is a TCP connection of the real transport:
        // bandwidth-limited, ordered, a bounded bulk queue (its 4 MiB
        // `peer_queue_bytes`) that refuses what overflows, and an urgent
        // lane for Raft's control messages.
        let mut net = Network::new_sized(seed);
        net.set_default_link(
            LinkConfig::tcp_like(LINK_BYTES_PER_SEC, 4 * 1024 * 1024)
                .with_jitter(Duration::from_micros(500))
                .with_lanes(true),
        );
        let mut slots = BTreeMap::new();
        for id in NODES {
            let config = NodeConfig {
                id,
                members: NODES.to_vec(),
                shards,
                hosted: Vec::new(),
                joining: false,
                gossip_ticks: NodeConfig::GOSSIP_TICKS,
                liveness_ticks: NodeConfig::LIVENESS_TICKS,
                data_dir: dir.join(format!("n{id}")),
                tick: TICK,
                election_ticks: 10,
                compact_every: 0,
                compact_log_bytes: NodeConfig::COMPACT_LOG_BYTES,
                snapshot_chunk_bytes: 64 * 1024,
            };
            let core = NodeCore::open(&config, HashMap::new(), false).unwrap();
            slots.insert(
                id,
                Slot {
                    config,
                    core: Some(core),
                    paused: None,
                },
            );
        }
        Sim {
            seed,
            shards,
            dir,
            net,
            slots,
            now: SimTime::ZERO,
            next_tick: SimTime::ZERO,
            peer_bytes: 0,
            replies: HashMap::new(),
            next_request: 1,
            sessions: HashMap::new(),
            skew_ms: HashMap::new(),
        }
    }

    fn wall_ms(&self) -> u64 {
        EPOCH_MS + self.now.since_start().as_millis() as u64
    }

    /// Node `id`'s wall clock.
    fn wall_of(&self, id: u64) -> u64 {
        let skew = self.skew_ms.get(&id).copied().unwrap_or(0);
        self.wall_ms().saturating_add_signed(skew)
    }

    /// Drives node `id` after an input and sends what it queued.
    fn flush(&mut self, id: u64) {
        let now = self.now;
        let Some(core) = self.slots.get_mut(&id).and_then(|s| s.core.as_mut()) else {
            return;
        };
        core.drive()
            .unwrap_or_else(|e| panic!("seed {}: node {id}: {e}", self.seed));
        while let Some((to, frame)) = core.poll_transmit() {
            if to.0 != CLIENT {
                self.peer_bytes += wire_size(&frame);
                // A storm would grow without end (and the run with it):
                // fail it at a bound no healthy run comes near.
                assert!(
                    self.peer_bytes < STORM_BYTES,
                    "seed {}: over {STORM_BYTES} bytes between nodes by {:?}: a message storm",
                    self.seed,
                    now
                );
            }
            self.net.send(now, id, to.0, frame);
        }
    }

    fn deliver(&mut self, from: u64, to: u64, frame: Frame) {
        if to == CLIENT {
            if let Ok(reply) = Envelope::<Reply>::decode(frame.payload) {
                self.replies.insert(reply.id, reply.body);
            }
            return;
        }
        let wall = self.wall_of(to);
        let Some(slot) = self.slots.get_mut(&to) else {
            return;
        };
        if let Some(backlog) = slot.paused.as_mut() {
            backlog.push_back((from, frame));
            return;
        }
        let Some(core) = slot.core.as_mut() else {
            return;
        };
        core.handle_event(
            wall,
            Event::Message {
                from: PeerId(from),
                msg: frame,
            },
        );
        self.flush(to);
    }

    fn tick_all(&mut self) {
        let ids: Vec<u64> = self.slots.keys().copied().collect();
        for id in ids {
            let wall = self.wall_of(id);
            let slot = self.slots.get_mut(&id).unwrap();
            if slot.paused.is_some() {
                continue;
            }
            if let Some(core) = slot.core.as_mut() {
                core.handle_tick(wall);
                self.flush(id);
            }
        }
    }

    /// Runs the nodes, the network and the clock up to `until`.
    fn run_until(&mut self, until: SimTime) {
        loop {
            let delivery = self.net.next_delivery_time().filter(|&t| t <= until);
            let tick = Some(self.next_tick).filter(|&t| t <= until);
            match (delivery, tick) {
                (Some(d), Some(t)) if d <= t => self.deliver_due(d),
                (Some(d), None) => self.deliver_due(d),
                (_, Some(t)) => {
                    self.now = t;
                    self.tick_all();
                    self.next_tick = t + TICK;
                }
                (None, None) => break,
            }
        }
        self.now = until;
    }

    fn deliver_due(&mut self, at: SimTime) {
        self.now = at;
        while let Some(d) = self.net.poll_delivery(at) {
            self.deliver(d.from, d.to, d.msg);
        }
    }

    fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    fn crash(&mut self, id: u64) {
        self.net.crash(id);
        let slot = self.slots.get_mut(&id).unwrap();
        slot.core = None;
        slot.paused = None;
    }

    fn restart(&mut self, id: u64) {
        self.net.restart(id);
        let slot = self.slots.get_mut(&id).unwrap();
        let core = NodeCore::open(&slot.config, HashMap::new(), false)
            .unwrap_or_else(|e| panic!("seed {}: reopen {id}: {e}", self.seed));
        slot.core = Some(core);
    }

    fn pause(&mut self, id: u64) {
        self.slots.get_mut(&id).unwrap().paused = Some(VecDeque::new());
    }

    /// SIGCONT: the node reads everything that piled up, then ticks again.
    fn resume(&mut self, id: u64) {
        let backlog = self.slots.get_mut(&id).unwrap().paused.take();
        for (from, frame) in backlog.into_iter().flatten() {
            self.deliver(from, id, frame);
        }
    }

    /// The leader of every shard, if every running node names the same one.
    fn agreed_leaders(&self) -> Option<Vec<u64>> {
        let mut leaders = vec![None; self.shards as usize];
        for slot in self.slots.values() {
            let core = slot.core.as_ref()?;
            if slot.paused.is_some() {
                return None;
            }
            for s in core.status() {
                let seen = leaders.get_mut(s.shard as usize)?;
                if s.leader == 0 || seen.is_some_and(|l| l != s.leader) {
                    return None;
                }
                *seen = Some(s.leader);
            }
        }
        leaders.into_iter().collect()
    }

    /// The leader of every shard that all of `nodes` name, if they agree
    /// and it is one of them.
    fn leaders_among(&self, nodes: &[u64]) -> Option<Vec<u64>> {
        let mut leaders = vec![None; self.shards as usize];
        for id in nodes {
            let core = self.slots.get(id)?.core.as_ref()?;
            for s in core.status() {
                let seen = leaders.get_mut(s.shard as usize)?;
                if !nodes.contains(&s.leader) || seen.is_some_and(|l| l != s.leader) {
                    return None;
                }
                *seen = Some(s.leader);
            }
        }
        leaders.into_iter().collect()
    }

    /// Sends `request` to every node until one answers it with something
    /// other than NotLeader, or `deadline` passes.
    fn call(&mut self, request: Request, deadline: SimTime) -> Option<Reply> {
        let id = self.next_request;
        self.next_request += 1;
        let frame = Frame::new(
            CLIENT_CHANNEL,
            Envelope {
                id,
                body: request.clone(),
            }
            .encode(),
        );
        while self.now < deadline {
            for node in NODES {
                self.net.send(self.now, CLIENT, node, frame.clone());
            }
            let retry_at = self.now + Duration::from_millis(200);
            while self.now < retry_at {
                self.run_for(TICK);
                match self.replies.remove(&id) {
                    Some(Reply::NotLeader { .. }) | None => {}
                    Some(reply) => return Some(reply),
                }
            }
        }
        None
    }

    fn put(&mut self, key: &str, value: &str, deadline: SimTime) -> bool {
        self.put_indexed(key, value, deadline).is_some()
    }

    /// Sends `request` to node `node` alone and waits up to `wait` for
    /// its reply.
    fn ask(&mut self, node: u64, request: Request, wait: Duration) -> Option<Reply> {
        let id = self.next_request;
        self.next_request += 1;
        let frame = Frame::new(CLIENT_CHANNEL, Envelope { id, body: request }.encode());
        self.net.send(self.now, CLIENT, node, frame);
        let until = self.now + wait;
        while self.now < until {
            self.run_for(TICK);
            if let Some(reply) = self.replies.remove(&id) {
                return Some(reply);
            }
        }
        None
    }

    /// [`put`](Self::put), answering the write's log index.
    fn put_indexed(&mut self, key: &str, value: &str, deadline: SimTime) -> Option<u64> {
        let shard = shard_of(key);
        let (session, seq) = match self.sessions.get(&shard) {
            Some(&s) => s,
            None => match self.call(Request::RegisterSession { shard }, deadline) {
                Some(Reply::Registered { session }) => (session, 0),
                _ => return None,
            },
        };
        // One write in flight per session: an unanswered one leaves the
        // session behind (the next write opens another).
        self.sessions.remove(&shard);
        let request = Request::Put {
            shard,
            session,
            seq: seq + 1,
            key: key.into(),
            value: Bytes::from(value.to_owned()),
        };
        match self.call(request, deadline) {
            Some(Reply::Written { index }) => {
                self.sessions.insert(shard, (session, seq + 1));
                Some(index)
            }
            _ => None,
        }
    }

    fn get(&mut self, key: &str, deadline: SimTime) -> Option<Option<Bytes>> {
        let request = Request::Get {
            shard: shard_of(key),
            key: key.into(),
            consistency: Consistency::Linearizable,
            token: 0,
        };
        match self.call(request, deadline)? {
            Reply::Value { value, .. } => Some(value.map(|(v, _)| v)),
            _ => None,
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.slots.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Keys go to shards the way the client maps them; the sim asks the
/// shard directly, so any fixed mapping will do.
fn shard_of(key: &str) -> u32 {
    key.bytes().map(u32::from).sum::<u32>() % SHARDS
}

fn seeds(default: u64) -> u64 {
    std::env::var("QUORATE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// kill -9, restart from disk a second later.
    Restart,
    /// SIGSTOP for two seconds, then SIGCONT.
    Pause,
}

/// One run: an idle cluster, one write, then `fault` on a node the seed
/// picks; the cluster must serve again within 5 s of the node's return
/// and keep node-to-node traffic bounded.
fn recovers(seed: u64, fault: Fault, load: bool) {
    let mut sim = Sim::new(seed);
    let mut rng = fastrand::Rng::with_seed(seed);
    sim.run_for(Duration::from_secs(2));
    let deadline = sim.now + Duration::from_secs(5);
    assert!(
        sim.put("before", "1", deadline),
        "seed {seed}: first write unanswered"
    );
    let victim = NODES[rng.usize(..NODES.len())];
    match fault {
        Fault::Restart => {
            sim.crash(victim);
            sim.run_for(Duration::from_secs(1));
            sim.restart(victim);
        }
        Fault::Pause => {
            sim.pause(victim);
            sim.run_for(Duration::from_secs(2));
            sim.resume(victim);
        }
    }
    let back = sim.now;
    let bytes_at_return = sim.peer_bytes;
    let mut written = 0;
    let recovered = loop {
        if load {
            let key = format!("load-{written}");
            if sim.put(&key, "x", sim.now + Duration::from_millis(200)) {
                written += 1;
            }
        } else {
            sim.run_for(TICK * 5);
        }
        if sim.agreed_leaders().is_some() {
            break Some(sim.now - back);
        }
        if sim.now - back > Duration::from_secs(5) {
            break None;
        }
    };
    let Some(took) = recovered else {
        panic!("seed {seed}: {fault:?} of node {victim}: no agreed leaders 5 s after its return");
    };
    let deadline = sim.now + Duration::from_secs(5);
    assert!(
        sim.put("after", "2", deadline),
        "seed {seed}: {fault:?} of node {victim}: write unanswered after recovery ({took:?})"
    );
    assert_eq!(
        sim.get("before", sim.now + Duration::from_secs(5)),
        Some(Some(Bytes::from_static(b"1"))),
        "seed {seed}: {fault:?} of node {victim}: read of the first write"
    );
    assert!(
        sim.now - back <= Duration::from_secs(5),
        "seed {seed}: {fault:?} of node {victim}: served only after {:?}",
        sim.now - back
    );
    // Idle, a shard costs a few KiB/s of heartbeats and digests: a storm
    // costs megabytes.
    sim.run_for(Duration::from_secs(3));
    let secs = (sim.now - back).as_secs_f64();
    let rate = (sim.peer_bytes - bytes_at_return) as f64 / secs;
    let limit = if load { 400_000.0 } else { 100_000.0 };
    assert!(
        rate < limit,
        "seed {seed}: {fault:?} of node {victim}: {rate:.0} B/s between nodes after its return"
    );
}

#[test]
fn an_idle_cluster_recovers_from_a_restart() {
    for seed in 0..seeds(4) {
        recovers(seed, Fault::Restart, false);
    }
}

#[test]
fn an_idle_cluster_recovers_from_a_pause() {
    for seed in 0..seeds(4) {
        recovers(seed, Fault::Pause, false);
    }
}

#[test]
fn a_loaded_cluster_recovers_from_a_restart_and_a_pause() {
    for seed in 0..seeds(2) {
        recovers(seed, Fault::Restart, true);
        recovers(seed, Fault::Pause, true);
    }
}

/// A majority partition elects a leader within two election timeouts: the
/// leader of shard 0 is isolated (both directions) in an idle cluster, and
/// the two others must agree on a leader among themselves for every shard
/// within 2 x 200 ms (the election timeout is 10 ticks of 10 ms, randomized
/// up to twice that). Then the partition heals and the cluster serves.
#[test]
fn a_majority_partition_elects_within_two_election_timeouts() {
    let bound = TICK * 10 * 2 * 2;
    let mut took = Vec::new();
    for seed in 0..seeds(6) {
        let mut sim = Sim::new(seed);
        sim.run_for(Duration::from_secs(2));
        let deadline = sim.now + Duration::from_secs(5);
        assert!(sim.put("before", "1", deadline), "seed {seed}: first write");
        let leaders = sim.agreed_leaders().expect("leaders before the partition");
        let isolated = leaders[0];
        let majority: Vec<u64> = NODES.iter().copied().filter(|&n| n != isolated).collect();
        sim.net.isolate(isolated);
        let cut = sim.now;
        while sim.leaders_among(&majority).is_none() {
            assert!(
                sim.now - cut <= bound,
                "seed {seed}: no leader among {majority:?} {:?} after isolating {isolated}",
                sim.now - cut
            );
            sim.run_for(TICK);
        }
        took.push((sim.now - cut).as_millis());
        sim.net.rejoin(isolated);
        let deadline = sim.now + Duration::from_secs(5);
        assert!(
            sim.put("after", "2", deadline),
            "seed {seed}: write after healing"
        );
    }
    println!("majority partition: new leaders after {took:?} ms (bound {bound:?})");
}

/// One client session of the session workload, as the client library
/// keeps it: a token per shard (the highest index written or read) and the
/// replica its next read starts at.
#[derive(Default)]
struct SimSession {
    tokens: HashMap<u32, u64>,
    next_reader: usize,
}

/// What a session workload saw.
#[derive(Default)]
struct SessionRun {
    history: Vec<SessionEvent>,
    /// Session reads served, by node.
    served: BTreeMap<u64, usize>,
    /// `Behind` answers (a replica below the token after its wait).
    behind: usize,
    /// `any` reads labelled stale whose index was below the reader's token.
    stale_any: usize,
    /// Session reads answered at an index below their token (a bug).
    below_token: usize,
}

/// Three sessions write unique values to a few keys through the leader
/// and read them with session reads spread round-robin over the three
/// replicas, with `any` reads mixed in; meanwhile followers are cut off
/// from their peers (still reachable by the client, so they are asked
/// while behind) and slowed down, one after another. Returns what was
/// recorded.
fn session_workload(seed: u64, ops: usize) -> SessionRun {
    let mut sim = Sim::new(seed);
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5e55);
    sim.run_for(Duration::from_secs(2));
    let mut sessions: Vec<SimSession> = (0..3).map(|_| SimSession::default()).collect();
    let keys = ["a", "b", "c", "d"];
    let mut run = SessionRun::default();
    let mut next_value = 1u64;
    // The follower currently cut off or slowed, and how.
    let mut faulted: Option<(u64, bool)> = None;
    for op in 0..ops {
        if op % 25 == 0 {
            if let Some((f, cut)) = faulted.take() {
                for other in NODES.into_iter().filter(|&n| n != f) {
                    if cut {
                        sim.net.heal(f, other);
                    } else {
                        sim.net.reset_link(f, other);
                        sim.net.reset_link(other, f);
                    }
                }
            } else if let Some(leaders) = sim.agreed_leaders() {
                let followers: Vec<u64> =
                    NODES.into_iter().filter(|n| !leaders.contains(n)).collect();
                let pool = if followers.is_empty() {
                    NODES.iter().copied().filter(|&n| n != leaders[0]).collect()
                } else {
                    followers
                };
                let f = pool[rng.usize(..pool.len())];
                let cut = rng.bool();
                for other in NODES.into_iter().filter(|&n| n != f) {
                    if cut {
                        sim.net.partition(f, other);
                    } else {
                        let slow = LinkConfig::tcp_like(LINK_BYTES_PER_SEC, 4 * 1024 * 1024)
                            .with_latency(Duration::from_millis(60))
                            .with_lanes(true);
                        sim.net.set_link_both(f, other, slow);
                    }
                }
                faulted = Some((f, cut));
            }
        }
        let s = rng.usize(..sessions.len());
        let key = keys[rng.usize(..keys.len())];
        let shard = shard_of(key);
        let roll = rng.u32(..10);
        if roll < 4 {
            let value = next_value;
            next_value += 1;
            let index = sim.put_indexed(key, &value.to_string(), sim.now + Duration::from_secs(2));
            if let Some(index) = index {
                let token = sessions[s].tokens.entry(shard).or_default();
                *token = (*token).max(index);
            }
            run.history.push(SessionEvent {
                session: s as u64,
                op: SessionOp::Write {
                    shard,
                    key: key.into(),
                    value,
                    index,
                },
            });
            continue;
        }
        let consistency = if roll < 9 {
            Consistency::Session
        } else {
            Consistency::Any
        };
        let token = sessions[s].tokens.get(&shard).copied().unwrap_or(0);
        // Each replica in turn, up to two rounds.
        for _ in 0..NODES.len() * 2 {
            let node = NODES[sessions[s].next_reader % NODES.len()];
            sessions[s].next_reader += 1;
            let request = Request::Get {
                shard,
                key: key.into(),
                consistency,
                token: if consistency == Consistency::Session {
                    token
                } else {
                    0
                },
            };
            match sim.ask(node, request, Duration::from_millis(400)) {
                Some(Reply::Value {
                    value,
                    index,
                    stale,
                }) => {
                    assert_eq!(stale, consistency == Consistency::Any, "seed {seed}");
                    if consistency == Consistency::Any {
                        // Possibly stale: not a session read, not checked.
                        run.stale_any += usize::from(index < token);
                        break;
                    }
                    // Checked after the session checker, which must see it too.
                    run.below_token += usize::from(index < token);
                    let value = value.map(|(v, _)| {
                        String::from_utf8_lossy(&v)
                            .parse::<u64>()
                            .expect("a number")
                    });
                    *run.served.entry(node).or_default() += 1;
                    let t = sessions[s].tokens.entry(shard).or_default();
                    *t = (*t).max(index);
                    run.history.push(SessionEvent {
                        session: s as u64,
                        op: SessionOp::Read {
                            shard,
                            key: key.into(),
                            value,
                        },
                    });
                    break;
                }
                Some(Reply::Behind { applied, token: t }) => {
                    assert!(applied < t, "seed {seed}: behind at {applied} >= {t}");
                    run.behind += 1;
                }
                _ => {}
            }
        }
    }
    run
}

/// The session guarantees hold on every seed: session reads served by
/// followers that are cut off or slowed (so behind the sessions' tokens),
/// checked by the session checker; reads spread over all three replicas,
/// and replicas behind a token answer `Behind` rather than a stale value.
#[test]
fn session_reads_keep_every_session_guarantee() {
    let mut behind = 0;
    let mut stale_any = 0;
    for seed in 0..seeds(3) {
        let run = session_workload(seed, 120);
        let violations = check_sessions(&run.history);
        assert!(
            violations.is_empty(),
            "seed {seed}: {} violations, first {:?}",
            violations.len(),
            violations.first()
        );
        assert_eq!(
            run.below_token, 0,
            "seed {seed}: session reads below their token"
        );
        let reads = run
            .history
            .iter()
            .filter(|e| matches!(e.op, SessionOp::Read { .. }))
            .count();
        assert!(
            reads >= 40,
            "seed {seed}: only {reads} session reads served"
        );
        assert_eq!(
            run.served.len(),
            NODES.len(),
            "seed {seed}: reads served by {:?}, not spread over every replica",
            run.served
        );
        behind += run.behind;
        stale_any += run.stale_any;
    }
    // The faults must have put replicas behind the tokens, or the run
    // proves nothing about waiting for them.
    assert!(behind > 0, "no replica was ever behind a session token");
    println!("session workload: {behind} Behind answers, {stale_any} stale `any` reads");
}

/// The checker run on the simulation catches a stale read within a session
/// when one is injected into a recorded history (a read of an older value
/// after the session wrote a newer one), and accepts the same stale read
/// attributed to another session.
#[test]
fn the_session_checker_catches_an_injected_stale_read() {
    let run = session_workload(7, 60);
    assert!(check_sessions(&run.history).is_empty());
    // A key written twice with answered indexes; its first value.
    let mut writes: HashMap<&str, Vec<(u64, u64, u64)>> = HashMap::new();
    for e in &run.history {
        if let SessionOp::Write {
            key,
            value,
            index: Some(i),
            ..
        } = &e.op
        {
            writes.entry(key).or_default().push((*i, *value, e.session));
        }
    }
    let (key, w) = writes
        .iter()
        .find(|(_, w)| w.len() >= 2)
        .expect("a key written twice");
    let (first, last) = (w[0], w[w.len() - 1]);
    let stale = |session| SessionEvent {
        session,
        op: SessionOp::Read {
            shard: shard_of(key),
            key: (*key).to_owned(),
            value: Some(first.1),
        },
    };
    let mut within = run.history.clone();
    within.push(stale(last.2));
    let found = check_sessions(&within);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].guarantee, Guarantee::ReadYourWrites);
    // A session that never wrote or read anything may read it stale.
    let mut across = run.history.clone();
    across.push(stale(99));
    assert_eq!(check_sessions(&across), []);
}

/// Every node estimates every peer's clock offset from the probes between
/// them: node 3's clock runs 300 ms ahead, node 2's 40 ms behind, and
/// each node's estimate of each peer brackets the true offset with a
/// bound of a few milliseconds (the simulated links take about a
/// millisecond each way, and clock reads are whole milliseconds).
/// Lease reads are served while the bounds hold.
#[test]
fn nodes_estimate_each_others_clock_offsets() {
    const MS: i64 = 1_000_000;
    for seed in 0..seeds(2) {
        let mut sim = Sim::new(seed);
        sim.skew_ms.insert(3, 300);
        sim.skew_ms.insert(2, -40);
        sim.run_for(Duration::from_secs(4));
        for me in NODES {
            let clocks = sim.slots[&me].core.as_ref().unwrap().clocks();
            let others: Vec<u64> = clocks.iter().map(|c| c.id).collect();
            assert_eq!(others.len(), 2, "seed {seed}: node {me} knows {others:?}");
            for c in clocks {
                let truth = (sim.skew_ms.get(&c.id).copied().unwrap_or(0)
                    - sim.skew_ms.get(&me).copied().unwrap_or(0))
                    * MS;
                let bound = c.bound_ns as i64;
                assert!(
                    c.bound_ns < 10 * MS as u64 && (c.offset_ns - truth).abs() <= bound,
                    "seed {seed}: node {me} on {}: {c:?}, true offset {truth}",
                    c.id
                );
                assert!(c.samples >= 2, "seed {seed}: {c:?}");
            }
        }
        // A lease read is served by the leader while its peers' clocks are known.
        let deadline = sim.now + Duration::from_secs(5);
        assert!(sim.put("k", "1", deadline), "seed {seed}: write");
        let lease = Request::Get {
            shard: shard_of("k"),
            key: "k".into(),
            consistency: Consistency::Lease,
            token: 0,
        };
        let got = sim.call(lease, sim.now + Duration::from_secs(2));
        assert!(
            matches!(&got, Some(Reply::Value { value: Some((v, _)), stale: false, .. }) if v == "1"),
            "seed {seed}: lease read {got:?}"
        );
    }
}

/// A leader whose peers' clocks are unknown (no probe answered since it
/// started: every probe is dropped) refuses lease reads with the typed
/// reply, and still serves linearizable ones.
#[test]
fn without_clock_estimates_lease_reads_are_refused() {
    let mut sim = Sim::new(1);
    sim.net
        .add_filter(|_, _, frame: &Frame| frame.channel == CLOCK_CHANNEL);
    sim.run_for(Duration::from_secs(3));
    let deadline = sim.now + Duration::from_secs(5);
    assert!(sim.put("k", "1", deadline), "write");
    let get = |consistency| Request::Get {
        shard: shard_of("k"),
        key: "k".into(),
        consistency,
        token: 0,
    };
    let got = sim.call(get(Consistency::Lease), sim.now + Duration::from_secs(2));
    assert_eq!(got, Some(Reply::LeaseUnavailable));
    let got = sim.call(
        get(Consistency::Linearizable),
        sim.now + Duration::from_secs(2),
    );
    assert!(
        matches!(got, Some(Reply::Value { value: Some(_), .. })),
        "{got:?}"
    );
}

/// Every running node's self-declared leaders, checked against what was
/// seen before: two nodes leading one shard in one term is a safety
/// violation, whenever it happens.
fn check_one_leader_per_term(sim: &Sim, seen: &mut HashMap<(u32, u64), u64>) {
    for (&id, slot) in &sim.slots {
        let Some(core) = slot.core.as_ref() else {
            continue;
        };
        for s in core.status().into_iter().filter(|s| s.leader == id) {
            let first = *seen.entry((s.shard, s.term)).or_insert(id);
            assert_eq!(
                first, id,
                "seed {}: shard {} has two leaders in term {}: {first} and {id}",
                sim.seed, s.shard, s.term
            );
        }
    }
}

/// Shards go quiet first (every replica on every node quiesced: no
/// ticks, no heartbeats, only the nodes' liveness beats), then the
/// leader of shard 0 is cut off or crashes (the seed picks). The other
/// two must notice through the liveness beats alone, elect leaders for
/// every shard among themselves within the liveness timeout plus two
/// election timeouts, never two leaders in a term, and keep every
/// acknowledged write; then the partition heals (or the node restarts)
/// and the cluster agrees and serves again.
#[test]
fn quiet_shards_fail_over_when_a_partition_or_crash_starts() {
    const QUIET_SHARDS: u32 = 8;
    let liveness = u64::from(NodeConfig::LIVENESS_TICKS);
    let bound = TICK * (3 * liveness + 10 * 2 * 2) as u32;
    let mut took = Vec::new();
    let mut quiet_bytes = Vec::new();
    for seed in 0..seeds(4) {
        let mut sim = Sim::with_shards(seed, QUIET_SHARDS);
        let mut seen = HashMap::new();
        sim.run_for(Duration::from_secs(2));
        let deadline = sim.now + Duration::from_secs(5);
        assert!(sim.put("before", "1", deadline), "seed {seed}: first write");
        // Quiet: every replica of every shard quiesced, on every node.
        let quiet_by = sim.now + Duration::from_secs(3);
        loop {
            let quiet = sim.slots.values().all(|slot| {
                slot.core.as_ref().is_some_and(|c| {
                    let status = c.status();
                    status.len() == QUIET_SHARDS as usize && status.iter().all(|s| s.quiesced)
                })
            });
            if quiet {
                break;
            }
            assert!(
                sim.now < quiet_by,
                "seed {seed}: shards not all quiesced 3 s after the write"
            );
            sim.run_for(TICK);
            check_one_leader_per_term(&sim, &mut seen);
        }
        // Quiet means no group ticks and no Raft message: only the
        // nodes' liveness beats (and clock probes and the occasional
        // anti-entropy round, outside Raft).
        let stats = |sim: &Sim| -> Vec<_> {
            sim.slots
                .values()
                .filter_map(|s| s.core.as_ref().map(|c| c.multi_stats()))
                .collect()
        };
        let (before, bytes) = (stats(&sim), sim.peer_bytes);
        sim.run_for(Duration::from_secs(1));
        for (a, b) in before.iter().zip(stats(&sim)) {
            assert_eq!(
                (b.group_ticks, b.messages_sent),
                (a.group_ticks, a.messages_sent),
                "seed {seed}: group ticks or Raft messages in a quiet second"
            );
            assert!(b.beats_sent > a.beats_sent, "seed {seed}: no liveness beat");
        }
        quiet_bytes.push(sim.peer_bytes - bytes);
        let leaders = sim.agreed_leaders().expect("leaders while quiet");
        let victim = leaders[0];
        let crash = seed % 2 == 1;
        if crash {
            sim.crash(victim);
        } else {
            sim.net.isolate(victim);
        }
        let majority: Vec<u64> = NODES.iter().copied().filter(|&n| n != victim).collect();
        let cut = sim.now;
        while sim.leaders_among(&majority).is_none() {
            assert!(
                sim.now - cut <= bound,
                "seed {seed}: no leaders among {majority:?} {:?} after {} {victim}",
                sim.now - cut,
                if crash { "crashing" } else { "isolating" }
            );
            sim.run_for(TICK);
            check_one_leader_per_term(&sim, &mut seen);
        }
        took.push((sim.now - cut).as_millis());
        assert_eq!(
            sim.get("before", sim.now + Duration::from_secs(5)),
            Some(Some(Bytes::from_static(b"1"))),
            "seed {seed}: the acknowledged write after the failover"
        );
        if crash {
            sim.restart(victim);
        } else {
            sim.net.rejoin(victim);
        }
        let deadline = sim.now + Duration::from_secs(5);
        assert!(sim.put("after", "2", deadline), "seed {seed}: write after");
        let agreed_by = sim.now + Duration::from_secs(5);
        while sim.agreed_leaders().is_none() {
            assert!(sim.now < agreed_by, "seed {seed}: no agreed leaders after");
            sim.run_for(TICK);
            check_one_leader_per_term(&sim, &mut seen);
        }
        // Quiet again, a lease read reaches a leader that holds no lease
        // (nothing answered its heartbeats lately): it is served, by
        // ReadIndex, with the value written.
        let shard = shard_of("after");
        let quiet_by = sim.now + Duration::from_secs(3);
        while !sim.slots.values().all(|slot| {
            slot.core
                .as_ref()
                .is_some_and(|c| c.status().iter().all(|s| s.shard != shard || s.quiesced))
        }) {
            assert!(
                sim.now < quiet_by,
                "seed {seed}: shard {shard} not quiet again"
            );
            sim.run_for(TICK);
        }
        let read = Request::Get {
            shard,
            key: "after".into(),
            consistency: Consistency::Lease,
            token: 0,
        };
        let got = sim.call(read, sim.now + Duration::from_secs(2));
        assert!(
            matches!(&got, Some(Reply::Value { value: Some((v, _)), stale: false, .. }) if v == "2"),
            "seed {seed}: lease read of a quiet shard: {got:?}"
        );
    }
    println!(
        "quiet shards: new leaders after {took:?} ms (bound {bound:?}); bytes between the nodes \
         in a quiet second: {quiet_bytes:?}"
    );
}

/// The transaction workload's keys: spread over both shards.
const TXN_KEYS: [&str; 6] = ["ta", "tb", "tc", "td", "te", "tf"];

/// One transaction client: a Sans-IO coordinator driven over the
/// simulated network, and what the client believes each key holds (the
/// expectation of its next compare-and-set there).
struct TxnClient {
    /// The id its transactions carry; a new one after each crash.
    id: u64,
    next_seq: u64,
    running: Option<RunningTxn>,
    /// A plain (non-transactional) linearizable get in flight: the key,
    /// when it was sent (ms) and the request's id.
    plain: Option<(u64, u64, u64)>,
    /// A key its last committed transaction wrote, to get at once (while
    /// the coordinator may still be resolving the other shard's intents).
    follow_up: Option<u64>,
    known: HashMap<u64, Vec<u64>>,
}

/// The route of a plain get's reply (not a coordinator's request id).
const PLAIN_GET: u64 = u64::MAX;

struct RunningTxn {
    coordinator: Coordinator,
    /// Its entry in the history.
    at: TxnIndex,
    /// The micro-operations as planned (reads not yet known).
    mops: Vec<Mop>,
    /// The outcome was recorded; the coordinator is resolving intents.
    recorded: bool,
}

/// What a transaction workload run saw.
struct TxnRun {
    history: Vec<Txn<Mop>>,
    /// Coordinators crashed mid-transaction (intents left behind).
    coordinator_crashes: usize,
    /// Faults injected on nodes: crashes, isolations, pauses.
    node_faults: usize,
    /// Plain linearizable gets sent, and served (each in the history as
    /// a one-read transaction).
    plain_gets: usize,
    plain_served: usize,
    /// The final read of every key, and how long after the last fault
    /// healed it committed (none: it did not).
    final_read: Option<Duration>,
}

/// History times are nanoseconds; the coordinators' clock is milliseconds.
fn ns(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

fn txn_config() -> TxnConfig {
    TxnConfig {
        // Short, so intents of crashed coordinators expire within the run.
        ttl_ms: 1_000,
        deadline_ms: 8_000,
        ..TxnConfig::default()
    }
}

impl Sim {
    /// Sends every request `coordinator` has to every node (only the
    /// shard's leader serves it), remembering which client and request it
    /// answers.
    fn send_txn_requests(
        &mut self,
        client: usize,
        coordinator: &mut Coordinator,
        routes: &mut HashMap<u64, (usize, u64)>,
    ) {
        while let Some(out) = coordinator.poll_request() {
            let id = self.next_request;
            self.next_request += 1;
            routes.insert(id, (client, out.id));
            let frame = Frame::new(
                CLIENT_CHANNEL,
                Envelope {
                    id,
                    body: out.request,
                }
                .encode(),
            );
            for node in NODES {
                self.net.send(self.now, CLIENT, node, frame.clone());
            }
        }
    }

    /// The replies received, in request order (a replay handles them in
    /// the same order).
    fn drain_replies(&mut self) -> Vec<(u64, Reply)> {
        let mut replies: Vec<(u64, Reply)> = self.replies.drain().collect();
        replies.sort_unstable_by_key(|&(id, _)| id);
        replies
    }

    fn now_ms(&self) -> u64 {
        self.now.since_start().as_millis() as u64
    }
}

/// Plans a transaction of 1 to 3 operations on distinct keys: reads, and
/// appends of a fresh token as a compare-and-set from what the client
/// believes the key holds. Returns the coordinator's operations and the
/// micro-operations to record.
fn plan_txn(
    rng: &mut fastrand::Rng,
    known: &HashMap<u64, Vec<u64>>,
    next_token: &mut u64,
) -> (Vec<TxnOp>, Vec<Mop>) {
    let mut keys: Vec<u64> = (0..TXN_KEYS.len() as u64).collect();
    rng.shuffle(&mut keys);
    keys.truncate(rng.usize(1..=3));
    let mut ops = Vec::new();
    let mut mops = Vec::new();
    for key in keys {
        let name = TXN_KEYS[key as usize].to_owned();
        if rng.u32(..10) < 4 {
            ops.push(TxnOp::Get { key: name });
            mops.push(Mop::Read { key, value: None });
        } else {
            let expect = known.get(&key).cloned().unwrap_or_default();
            let token = *next_token;
            *next_token += 1;
            let mut value = expect.clone();
            value.push(token);
            ops.push(TxnOp::Cas {
                key: name,
                expect: (!expect.is_empty()).then(|| Bytes::from(encode_tokens(&expect))),
                value: Bytes::from(encode_tokens(&value)),
            });
            mops.push(Mop::Append { key, expect, token });
        }
    }
    (ops, mops)
}

/// The recorded outcome of a decided transaction, its reads filled in,
/// and what it teaches the client about the keys.
fn settle(
    outcome: &CoordinatorOutcome,
    mut mops: Vec<Mop>,
    known: &mut HashMap<u64, Vec<u64>>,
) -> (Vec<Mop>, TxnOutcome) {
    let key_of = |name: &str| TXN_KEYS.iter().position(|k| *k == name).map(|k| k as u64);
    match outcome {
        CoordinatorOutcome::Committed { reads, .. } => {
            for m in &mut mops {
                match m {
                    Mop::Read { key, value } => {
                        let got = reads
                            .iter()
                            .find(|(name, _)| key_of(name) == Some(*key))
                            .map(|(_, v)| {
                                v.as_ref().map_or_else(Vec::new, |(b, _)| decode_tokens(b))
                            });
                        // A committed transaction that lost a read's value
                        // reads garbage, for the checker to report.
                        let got = got.unwrap_or_else(|| vec![GARBAGE_TOKEN]);
                        known.insert(*key, got.clone());
                        *value = Some(got);
                    }
                    Mop::Append { key, expect, token } => {
                        let mut now = expect.clone();
                        now.push(*token);
                        known.insert(*key, now);
                    }
                }
            }
            (mops, TxnOutcome::Committed)
        }
        CoordinatorOutcome::Aborted { reason, .. } => {
            if let TxnFailure::CasFailed { key, actual } = reason
                && let Some(k) = key_of(key)
            {
                known.insert(
                    k,
                    actual.as_ref().map_or_else(Vec::new, |b| decode_tokens(b)),
                );
            }
            (mops, TxnOutcome::Aborted)
        }
        CoordinatorOutcome::Unknown { .. } => (mops, TxnOutcome::Unknown),
    }
}

/// Three clients run list-append transactions over both shards for
/// `secs` simulated seconds while the seed crashes coordinators mid-
/// transaction (their intents left for others to resolve), crashes and
/// restarts, pauses and isolates nodes, and partitions or cuts one way
/// the link between two; then everything heals and a final transaction
/// reads every key.
fn txn_workload(seed: u64, secs: u64) -> TxnRun {
    let mut sim = Sim::new(seed);
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x7a4e);
    sim.run_for(Duration::from_secs(2));
    let mut clients: Vec<TxnClient> = (0..3)
        .map(|i| TxnClient {
            id: 1 + i,
            next_seq: 1,
            running: None,
            plain: None,
            follow_up: None,
            known: HashMap::new(),
        })
        .collect();
    let mut history: Vec<Txn<Mop>> = Vec::new();
    let mut routes: HashMap<u64, (usize, u64)> = HashMap::new();
    let mut next_token = 1;
    let mut next_client_id = 10;
    let mut run = TxnRun {
        history: Vec::new(),
        coordinator_crashes: 0,
        node_faults: 0,
        plain_gets: 0,
        plain_served: 0,
        final_read: None,
    };
    let config = txn_config();
    let end = sim.now + Duration::from_secs(secs);
    // The node fault in force and when it heals.
    let mut fault: Option<(Fault, u64, SimTime)> = None;
    // A network fault (isolation, a partition, a one-way cut) and when it
    // heals.
    let mut net_fault: Option<SimTime> = None;
    let mut next_fault = sim.now + Duration::from_secs(1);
    while sim.now < end
        || clients
            .iter()
            .any(|c| c.running.is_some() || c.plain.is_some())
    {
        let faulting = sim.now < end;
        // Node faults: one at a time, a second or two each.
        if let Some((f, victim, until)) = fault
            && sim.now >= until
        {
            match f {
                Fault::Restart => sim.restart(victim),
                Fault::Pause => sim.resume(victim),
            }
            fault = None;
        }
        if net_fault.is_some_and(|until| sim.now >= until) {
            sim.net.heal_all();
            net_fault = None;
        }
        if faulting && sim.now >= next_fault && fault.is_none() && net_fault.is_none() {
            let victim = NODES[rng.usize(..NODES.len())];
            let other = NODES[(NODES.iter().position(|&n| n == victim).unwrap_or(0)
                + rng.usize(1..NODES.len()))
                % NODES.len()];
            let until = sim.now + Duration::from_millis(rng.u64(500..2_000));
            match rng.u32(..5) {
                0 => {
                    sim.crash(victim);
                    fault = Some((Fault::Restart, victim, until));
                }
                1 => {
                    sim.pause(victim);
                    fault = Some((Fault::Pause, victim, until));
                }
                2 => {
                    // From the client too.
                    sim.net.isolate(victim);
                    net_fault = Some(until);
                }
                3 => {
                    sim.net.partition(victim, other);
                    net_fault = Some(until);
                }
                _ => {
                    sim.net.cut(victim, other);
                    net_fault = Some(until);
                }
            }
            run.node_faults += 1;
            next_fault = until + Duration::from_millis(rng.u64(500..2_000));
        }
        let now_ms = sim.now_ms();
        for (ci, c) in clients.iter_mut().enumerate() {
            // A coordinator crash: the client stops mid-transaction and
            // comes back under a new id.
            if faulting && c.running.is_some() && rng.u32(..400) == 0 {
                let t = c.running.take().unwrap();
                if !t.recorded {
                    history[t.at].ret = Some(ns(now_ms));
                }
                run.coordinator_crashes += 1;
                c.id = next_client_id;
                next_client_id += 1;
                c.next_seq = 1;
                continue;
            }
            // A plain get gets an answer within a second or is dropped
            // (it had no effect).
            if c.plain.is_some_and(|(_, sent, _)| now_ms >= sent + 1_000) {
                c.plain = None;
            }
            let decided = c.running.as_ref().is_none_or(|t| t.recorded);
            if decided
                && c.plain.is_none()
                && faulting
                && (c.follow_up.is_some() || rng.u32(..8) == 0)
            {
                let key = c
                    .follow_up
                    .take()
                    .unwrap_or_else(|| rng.u64(..TXN_KEYS.len() as u64));
                let id = sim.next_request;
                sim.next_request += 1;
                routes.insert(id, (ci, PLAIN_GET));
                let request = Request::Get {
                    shard: shard_of(TXN_KEYS[key as usize]),
                    key: TXN_KEYS[key as usize].to_owned(),
                    consistency: Consistency::Linearizable,
                    token: 0,
                };
                let frame = Frame::new(CLIENT_CHANNEL, Envelope { id, body: request }.encode());
                for node in NODES {
                    sim.net.send(sim.now, CLIENT, node, frame.clone());
                }
                c.plain = Some((key, now_ms, id));
                run.plain_gets += 1;
            }
            if c.running.is_none() && c.plain.is_none() && faulting {
                let (ops, mops) = plan_txn(&mut rng, &c.known, &mut next_token);
                let txn = TxnId {
                    client: c.id,
                    seq: c.next_seq,
                };
                c.next_seq += u64::from(config.max_attempts);
                let priority = priority_by_age(now_ms, rng.u64(..));
                let coordinator = Coordinator::new(config, txn, priority, ops, shard_of, now_ms);
                history.push(Txn {
                    client: ci as u64,
                    call: ns(now_ms),
                    ret: None,
                    ops: mops.clone(),
                    outcome: TxnOutcome::Unknown,
                });
                c.running = Some(RunningTxn {
                    coordinator,
                    at: history.len() - 1,
                    mops,
                    recorded: false,
                });
            }
            let Some(t) = c.running.as_mut() else {
                continue;
            };
            if t.coordinator.poll_timeout().is_some_and(|at| at <= now_ms) {
                t.coordinator.handle_timeout(now_ms);
            }
            sim.send_txn_requests(ci, &mut t.coordinator, &mut routes);
        }
        sim.run_for(TICK);
        let now_ms = sim.now_ms();
        let replies = sim.drain_replies();
        for (id, reply) in replies {
            let Some(&(ci, out)) = routes.get(&id) else {
                continue;
            };
            let c = &mut clients[ci];
            if out == PLAIN_GET {
                // A served plain get is a committed one-read transaction;
                // one refused (an intent on the key, not the leader) had
                // no effect.
                match (c.plain, reply) {
                    (Some((key, sent, want)), Reply::Value { value, .. }) if want == id => {
                        let tokens = value.map_or_else(Vec::new, |(b, _)| decode_tokens(&b));
                        history.push(Txn {
                            client: ci as u64,
                            call: ns(sent),
                            ret: Some(ns(now_ms)),
                            ops: vec![Mop::Read {
                                key,
                                value: Some(tokens),
                            }],
                            outcome: TxnOutcome::Committed,
                        });
                        run.plain_served += 1;
                        c.plain = None;
                    }
                    (Some((_, _, want)), Reply::Intent(_)) if want == id => c.plain = None,
                    _ => {}
                }
            } else if let Some(t) = c.running.as_mut() {
                t.coordinator.handle_reply(out, &reply, now_ms);
            }
        }
        for c in &mut clients {
            let Some(t) = c.running.as_mut() else {
                continue;
            };
            if !t.recorded
                && let Some(outcome) = t.coordinator.outcome()
            {
                let (mops, outcome) = settle(outcome, t.mops.clone(), &mut c.known);
                // A key written outside the anchor (the first key's
                // shard), whose intent the commit did not resolve.
                let anchor = mops.first().map(|m| shard_of(TXN_KEYS[m.key() as usize]));
                if outcome == TxnOutcome::Committed && rng.bool() {
                    c.follow_up = mops.iter().find_map(|m| match m {
                        Mop::Append { key, .. }
                            if Some(shard_of(TXN_KEYS[*key as usize])) != anchor =>
                        {
                            Some(*key)
                        }
                        _ => None,
                    });
                }
                let entry = &mut history[t.at];
                entry.ret = Some(ns(now_ms));
                entry.ops = mops;
                entry.outcome = outcome;
                t.recorded = true;
            }
            if t.recorded && t.coordinator.is_finished() {
                c.running = None;
            }
        }
        // Every coordinator ends by its deadline (plus resolving).
        assert!(
            sim.now < end + Duration::from_secs(30),
            "seed {seed}: coordinators still running 30 s after the faults ended"
        );
    }
    if let Some((f, victim, _)) = fault {
        match f {
            Fault::Restart => sim.restart(victim),
            Fault::Pause => sim.resume(victim),
        }
    }
    sim.net.heal_all();
    // The final read of every key, retried until it commits: any intents
    // left behind must be resolved by then.
    let healed = sim.now;
    let names: Vec<TxnOp> = TXN_KEYS
        .iter()
        .map(|k| TxnOp::Get {
            key: (*k).to_owned(),
        })
        .collect();
    let mut attempt = 0;
    while run.final_read.is_none() && sim.now - healed < Duration::from_secs(20) {
        attempt += 1;
        let now_ms = sim.now_ms();
        let txn = TxnId {
            client: 999,
            seq: attempt * 100,
        };
        let mut coordinator =
            Coordinator::new(config, txn, u64::MAX, names.clone(), shard_of, now_ms);
        let mops: Vec<Mop> = (0..TXN_KEYS.len() as u64)
            .map(|key| Mop::Read { key, value: None })
            .collect();
        history.push(Txn {
            client: 99,
            call: ns(now_ms),
            ret: None,
            ops: mops.clone(),
            outcome: TxnOutcome::Unknown,
        });
        let at = history.len() - 1;
        let mut known = HashMap::new();
        while coordinator.outcome().is_none() && sim.now - healed < Duration::from_secs(20) {
            let now_ms = sim.now_ms();
            if coordinator.poll_timeout().is_some_and(|t| t <= now_ms) {
                coordinator.handle_timeout(now_ms);
            }
            sim.send_txn_requests(usize::MAX, &mut coordinator, &mut routes);
            sim.run_for(TICK);
            let now_ms = sim.now_ms();
            let replies = sim.drain_replies();
            for (id, reply) in replies {
                if let Some(&(usize::MAX, out)) = routes.get(&id) {
                    coordinator.handle_reply(out, &reply, now_ms);
                }
            }
        }
        if let Some(outcome) = coordinator.outcome() {
            let (mops, outcome) = settle(outcome, mops, &mut known);
            let entry = &mut history[at];
            entry.ret = Some(ns(sim.now_ms()));
            entry.ops = mops;
            entry.outcome = outcome;
            if outcome == TxnOutcome::Committed {
                run.final_read = Some(sim.now - healed);
            }
        }
    }
    run.history = history;
    run
}

/// The failure report of a run whose history has `anomalies`: the first
/// few, the transactions the first one names, and where the whole history
/// was written.
fn describe_txn_failure(seed: u64, run: &TxnRun, anomalies: &[Anomaly]) -> String {
    let path = std::env::temp_dir().join(format!("quorate-kv-sim-txn-seed-{seed}.history"));
    let kept = match std::fs::write(&path, render(&run.history)) {
        Ok(()) => format!("history in {}", path.display()),
        Err(e) => format!("history not written to {}: {e}", path.display()),
    };
    let named: Vec<String> = anomalies
        .first()
        .map(Anomaly::txns)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| Some(render_txn(i, run.history.get(i)?)))
        .collect();
    let first: Vec<String> = anomalies.iter().take(5).map(ToString::to_string).collect();
    format!(
        "seed {seed}: {} anomalies, first 5: {first:#?}\nthe first one's transactions:\n{}\n{kept}",
        anomalies.len(),
        named.join("\n")
    )
}

/// Cross-shard transactions stay atomic and serializable under faults:
/// on every seed, three clients' list-append transactions over both
/// shards, with coordinators crashing mid-transaction and nodes crashing,
/// pausing and being cut off, with plain linearizable gets of the same
/// keys mixed in (each a one-read transaction), pass the transaction
/// checker for strict serializability (no read of part of a transaction,
/// of an aborted one or of garbage; no dependency cycle, real-time edges
/// included); and after the faults heal a transaction reading every key
/// commits (no transaction stays in doubt).
#[test]
fn cross_shard_transactions_stay_atomic_and_serializable_under_faults() {
    let mut totals = (0, 0, 0, 0, 0);
    for seed in 0..seeds(3) {
        let run = txn_workload(seed, 15);
        let verdict = check(&run.history);
        assert!(
            verdict.ok(),
            "{}",
            describe_txn_failure(seed, &run, &verdict.anomalies)
        );
        let committed = run
            .history
            .iter()
            .filter(|t| t.outcome == TxnOutcome::Committed)
            .count();
        let unknown = run
            .history
            .iter()
            .filter(|t| t.outcome == TxnOutcome::Unknown)
            .count();
        // Committed transactions that wrote keys in both shards.
        let cross = run
            .history
            .iter()
            .filter(|t| {
                let shards: std::collections::BTreeSet<u32> = t
                    .ops
                    .iter()
                    .filter(|m| matches!(m, Mop::Append { .. }))
                    .map(|m| shard_of(TXN_KEYS[m.key() as usize]))
                    .collect();
                t.outcome == TxnOutcome::Committed && shards.len() > 1
            })
            .count();
        assert!(
            cross >= 10,
            "seed {seed}: only {cross} committed transactions wrote to both shards"
        );
        assert!(
            run.final_read.is_some(),
            "seed {seed}: the final read of every key never committed (the last 20 transactions:\n{})",
            run.history
                .iter()
                .enumerate()
                .skip(run.history.len().saturating_sub(20))
                .map(|(i, t)| render_txn(i, t))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            committed >= 20,
            "seed {seed}: only {committed} of {} transactions committed",
            run.history.len()
        );
        let strict = check_with(&run.history, Isolation::StrictSerializable);
        assert!(
            strict.ok(),
            "strict serializability: {}",
            describe_txn_failure(seed, &run, &strict.anomalies)
        );
        println!(
            "seed {seed}: {} transactions, {committed} committed ({cross} writing both shards), {unknown} unknown, \
             {} dependency edges; {} coordinator crashes, {} node faults; {}/{} plain gets served; final read {:?} after healing",
            run.history.len(),
            verdict.edges,
            run.coordinator_crashes,
            run.node_faults,
            run.plain_served,
            run.plain_gets,
            run.final_read,
        );
        totals.0 += run.history.len();
        totals.1 += committed;
        totals.2 += unknown;
        totals.3 += run.coordinator_crashes;
        totals.4 += run.node_faults;
    }
    println!(
        "transaction workload: {} transactions, {} committed, {} unknown, {} coordinator crashes, {} node faults",
        totals.0, totals.1, totals.2, totals.3, totals.4
    );
}

/// The checker run on the simulation catches a partial transaction
/// injected into a recorded history: the final read-all is made to miss
/// one of a multi-key transaction's writes while still seeing the other.
/// And a read of an aborted transaction's token injected into it.
#[test]
fn the_txn_checker_catches_an_injected_partial_transaction() {
    let run = txn_workload(1, 6);
    assert!(check(&run.history).ok());
    let last = run.history.len() - 1;
    assert_eq!(run.history[last].outcome, TxnOutcome::Committed);
    let finals: Vec<(u64, Vec<u64>)> = run.history[last]
        .ops
        .iter()
        .filter_map(|m| match m {
            Mop::Read {
                key,
                value: Some(v),
            } => Some((*key, v.clone())),
            _ => None,
        })
        .collect();
    // A committed writer of the last token of one key that also wrote
    // another.
    let writer_of = |key: u64, token: u64| {
        run.history.iter().position(|t| {
            t.ops.iter().any(
                |m| matches!(m, Mop::Append { key: k, token: t, .. } if *k == key && *t == token),
            )
        })
    };
    let (victim, key) = finals
        .iter()
        .find_map(|(key, list)| {
            let w = writer_of(*key, *list.last()?)?;
            let appends = run.history[w]
                .ops
                .iter()
                .filter(|m| matches!(m, Mop::Append { .. }))
                .count();
            (appends >= 2).then_some((w, *key))
        })
        .expect("a multi-key transaction wrote a key last");
    let mut partial = run.history.clone();
    for m in &mut partial[last].ops {
        if let Mop::Read {
            key: k,
            value: Some(v),
        } = m
            && *k == key
        {
            v.pop();
        }
    }
    let found = check(&partial).anomalies;
    assert!(
        found.iter().any(|a| matches!(
            a,
            Anomaly::FracturedRead { txn, writer, missed, .. }
                if *txn == last && *writer == victim && *missed == key
        )),
        "{found:?}"
    );
    // An aborted transaction's token, read.
    let (aborted, token, akey) = run
        .history
        .iter()
        .enumerate()
        .filter(|(_, t)| t.outcome == TxnOutcome::Aborted)
        .find_map(|(i, t)| {
            t.ops.iter().find_map(|m| match m {
                Mop::Append { key, token, .. } => Some((i, *token, *key)),
                Mop::Read { .. } => None,
            })
        })
        .expect("an aborted append");
    let mut dirty = run.history.clone();
    for m in &mut dirty[last].ops {
        if let Mop::Read {
            key: k,
            value: Some(v),
        } = m
            && *k == akey
        {
            v.push(token);
        }
    }
    let found = check(&dirty).anomalies;
    assert!(
        found
            .iter()
            .any(|a| matches!(a, Anomaly::AbortedRead { writer, .. } if *writer == aborted)),
        "{found:?}"
    );
}
