//! Transaction coordinators ([`Coordinator`], Sans-IO) driven through
//! three [`NodeCore`]s (the node's own logic, with real log files) over
//! `quorate_transport::sim`'s seeded network and a simulated clock: the
//! way a simulation drives transactions. Concurrent bank transfers between
//! accounts on both shards, with a node crashed and restarted from disk
//! mid-run; every committed read of all accounts sums to the total.
//! Failures print the seed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use quorate_examples::kv_cluster::CLIENT_CHANNEL;
use quorate_examples::kv_cluster::protocol::{Envelope, Reply};
use quorate_examples::kv_cluster::server::{NodeConfig, NodeCore};
use quorate_examples::kv_cluster::txn::{
    Coordinator, ReadValue, TxnConfig, TxnId, TxnOp, TxnOutcome, priority_by_age,
};
use quorate_transport::Event;
use quorate_transport::framing::Frame;
use quorate_transport::sim::{LinkConfig, Network, SimTime};
use quorate_transport::tcp::PeerId;

const NODES: [u64; 3] = [1, 2, 3];
const SHARDS: u32 = 2;
const CLIENT: u64 = 1000;
const TICK: Duration = Duration::from_millis(10);
const EPOCH_MS: u64 = 1_767_225_600_000;
const ACCOUNTS: usize = 4;

/// The client's placement: account `i` lives in shard `i % 2` (the
/// coordinator takes any placement; the nodes serve whatever shard a
/// request names).
fn shard_of(key: &str) -> u32 {
    key.trim_start_matches("acct").parse::<u32>().unwrap_or(0) % SHARDS
}

struct Sim {
    seed: u64,
    dir: PathBuf,
    net: Network<u64, Frame>,
    configs: BTreeMap<u64, NodeConfig>,
    cores: BTreeMap<u64, Option<NodeCore>>,
    now: SimTime,
    next_request: u64,
    /// Correlation id -> (coordinator, its request id).
    waiting: HashMap<u64, (usize, u64)>,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let dir =
            std::env::temp_dir().join(format!("quorate-kv-txn-sim-{}-{seed}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut net = Network::new_sized(seed);
        net.set_default_link(
            LinkConfig::tcp_like(20 * 1024 * 1024, 4 * 1024 * 1024)
                .with_jitter(Duration::from_micros(500))
                .with_lanes(true),
        );
        let mut configs = BTreeMap::new();
        let mut cores = BTreeMap::new();
        for id in NODES {
            let config = NodeConfig {
                id,
                members: NODES.to_vec(),
                shards: SHARDS,
                hosted: Vec::new(),
                joining: false,
                gossip_ticks: NodeConfig::GOSSIP_TICKS,
                data_dir: dir.join(format!("n{id}")),
                tick: TICK,
                election_ticks: 10,
                compact_every: 0,
                compact_log_bytes: NodeConfig::COMPACT_LOG_BYTES,
                snapshot_chunk_bytes: 64 * 1024,
            };
            cores.insert(
                id,
                Some(NodeCore::open(&config, HashMap::new(), false).unwrap()),
            );
            configs.insert(id, config);
        }
        Sim {
            seed,
            dir,
            net,
            configs,
            cores,
            now: SimTime::ZERO,
            next_request: 1,
            waiting: HashMap::new(),
        }
    }

    fn ms(&self) -> u64 {
        self.now.since_start().as_millis() as u64
    }

    fn flush(&mut self, id: u64) {
        let Some(Some(core)) = self.cores.get_mut(&id) else {
            return;
        };
        core.drive()
            .unwrap_or_else(|e| panic!("seed {}: node {id}: {e}", self.seed));
        while let Some((to, frame)) = core.poll_transmit() {
            self.net.send(self.now, id, to.0, frame);
        }
    }

    fn crash(&mut self, id: u64) {
        self.net.crash(id);
        self.cores.insert(id, None);
    }

    fn restart(&mut self, id: u64) {
        self.net.restart(id);
        let core = NodeCore::open(&self.configs[&id], HashMap::new(), false).unwrap();
        self.cores.insert(id, Some(core));
    }

    /// Runs for `d`, driving `coords`: each request goes to every node
    /// (only the shard's leader serves it), replies go back by id.
    fn run(&mut self, coords: &mut [Option<Coordinator>], d: Duration) {
        let until = self.now + d;
        let mut next_tick = self.now;
        while self.now < until {
            for (c, co) in coords.iter_mut().enumerate() {
                let Some(co) = co else { continue };
                co.handle_timeout(self.ms());
                while let Some(out) = co.poll_request() {
                    let id = self.next_request;
                    self.next_request += 1;
                    self.waiting.insert(id, (c, out.id));
                    let body = Envelope {
                        id,
                        body: out.request,
                    }
                    .encode();
                    for node in NODES {
                        self.net.send(
                            self.now,
                            CLIENT,
                            node,
                            Frame::new(CLIENT_CHANNEL, body.clone()),
                        );
                    }
                }
            }
            if coords.iter().flatten().all(Coordinator::is_finished) {
                return;
            }
            let delivery = self.net.next_delivery_time().filter(|&t| t <= next_tick);
            match delivery {
                Some(at) => {
                    self.now = at;
                    while let Some(m) = self.net.poll_delivery(at) {
                        self.deliver(coords, m.from, m.to, m.msg);
                    }
                }
                None => {
                    self.now = next_tick;
                    let wall = EPOCH_MS + self.ms();
                    for id in NODES {
                        if let Some(Some(core)) = self.cores.get_mut(&id) {
                            core.handle_tick(wall);
                        }
                        self.flush(id);
                    }
                    next_tick = self.now + TICK;
                }
            }
        }
    }

    fn deliver(&mut self, coords: &mut [Option<Coordinator>], from: u64, to: u64, frame: Frame) {
        if to == CLIENT {
            let Ok(reply) = Envelope::<Reply>::decode(frame.payload) else {
                return;
            };
            if matches!(reply.body, Reply::NotLeader { .. } | Reply::NoSuchShard) {
                return;
            }
            if let Some(&(c, id)) = self.waiting.get(&reply.id)
                && let Some(Some(co)) = coords.get_mut(c)
            {
                co.handle_reply(id, &reply.body, self.ms());
            }
            return;
        }
        let wall = EPOCH_MS + self.ms();
        let Some(Some(core)) = self.cores.get_mut(&to) else {
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
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn account(i: usize) -> String {
    format!("acct{i}")
}

fn num(v: &Option<(Bytes, u64)>) -> u64 {
    v.as_ref()
        .and_then(|(b, _)| std::str::from_utf8(b).ok()?.parse().ok())
        .unwrap_or(0)
}

fn coordinator(client: u64, ops: Vec<TxnOp>, now: u64) -> Coordinator {
    let txn = TxnId { client, seq: 1 };
    Coordinator::new(
        TxnConfig::default(),
        txn,
        priority_by_age(now, client),
        ops,
        shard_of,
        now,
    )
}

fn read_all(client: u64, now: u64) -> Coordinator {
    let ops = (0..ACCOUNTS)
        .map(|i| TxnOp::Get { key: account(i) })
        .collect();
    coordinator(client, ops, now)
}

fn reads_of(c: &Coordinator) -> Option<Vec<ReadValue>> {
    match c.outcome() {
        Some(TxnOutcome::Committed { reads, .. }) => Some(reads.clone()),
        _ => None,
    }
}

fn bank(seed: u64) {
    let mut sim = Sim::new(seed);
    // Leaders first.
    sim.run(&mut [], Duration::from_secs(2));
    let total = 100 * ACCOUNTS as u64;
    let init = (0..ACCOUNTS)
        .map(|i| TxnOp::Put {
            key: account(i),
            value: Bytes::from("100"),
        })
        .collect();
    let mut coords = vec![Some(coordinator(1, init, sim.ms()))];
    sim.run(&mut coords, Duration::from_secs(30));
    assert!(
        reads_of(coords[0].as_ref().unwrap()).is_some(),
        "seed {seed}: setup: {:?}",
        coords[0].as_ref().unwrap().outcome()
    );
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut committed = 0;
    for round in 0..6u64 {
        if round == 3 {
            let victim = NODES[rng.usize(0..NODES.len())];
            sim.crash(victim);
            sim.run(&mut [], Duration::from_millis(300));
            sim.restart(victim);
        }
        let mut reader = vec![Some(read_all(10 + round, sim.ms()))];
        sim.run(&mut reader, Duration::from_secs(30));
        let reads = reads_of(reader[0].as_ref().unwrap()).unwrap_or_else(|| {
            panic!(
                "seed {seed}: round {round}: read {:?}",
                reader[0].as_ref().unwrap().outcome()
            )
        });
        assert_eq!(
            reads.iter().map(|(_, v)| num(v)).sum::<u64>(),
            total,
            "seed {seed}: round {round}: {reads:?}"
        );
        let mut coords = Vec::new();
        for k in 0..3u64 {
            let (a, b) = (rng.usize(0..ACCOUNTS), rng.usize(0..ACCOUNTS));
            if a == b {
                continue;
            }
            let (va, vb) = (num(&reads[a].1), num(&reads[b].1));
            let amount = rng.u64(0..=va.min(10));
            let cas = |i: usize, old: u64, new: u64| TxnOp::Cas {
                key: account(i),
                expect: Some(Bytes::from(old.to_string())),
                value: Bytes::from(new.to_string()),
            };
            let ops = vec![cas(a, va, va - amount), cas(b, vb, vb + amount)];
            coords.push(Some(coordinator(100 + round * 10 + k, ops, sim.ms())));
        }
        coords.push(Some(read_all(500 + round, sim.ms())));
        sim.run(&mut coords, Duration::from_secs(30));
        for c in coords.iter().flatten() {
            assert!(
                c.is_finished(),
                "seed {seed}: round {round}: {:?}",
                c.outcome()
            );
            if let Some(reads) = reads_of(c) {
                if reads.len() == ACCOUNTS {
                    let sum: u64 = reads.iter().map(|(_, v)| num(v)).sum();
                    assert_eq!(sum, total, "seed {seed}: round {round}: {reads:?}");
                } else {
                    committed += 1;
                }
            }
        }
    }
    assert!(committed > 0, "seed {seed}: no transfer committed");
}

#[test]
fn bank_transfers_through_node_cores_keep_the_total_across_a_crash() {
    let seeds: u64 = std::env::var("QUORATE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    for seed in 0..seeds {
        bank(seed);
    }
}
