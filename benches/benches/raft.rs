//! Raft throughput, quorate-raft-core against raft-rs 0.7 (`raft` crate) in
//! the same run, with one harness for both.
//!
//! Each cluster runs in one thread, no I/O, in-memory storage. Time advances
//! in network *hops*: in every hop the client hands the leader its load
//! (proposals and read requests), every node runs its Ready cycle (persist,
//! apply, send), and then every message sent in that hop is delivered. A
//! message therefore takes one hop and a round trip two, and the leader
//! keeps proposing while earlier appends are still in flight, so the
//! in-flight window (pipelining) decides how much it may send before the
//! first acknowledgement returns.
//!
//! Workloads: replication (64 entries of 16 bytes per hop), ReadIndex reads,
//! lease reads, and a mix, in 3- and 5-node clusters. Reads count once the
//! leader hands out their `ReadState`. Before measuring a row, the bench
//! prints the work of one run (hops, messages and entries delivered,
//! entries applied per node, read states) so both sides can be compared.
//!
//! Besides criterion: `RAFT_BEST_OF=<rounds>` (fastest of alternating runs,
//! CPU and wall time, `RAFT_CASE=<text>` to pick cases) and
//! `RAFT_ALLOC_PROBE=<quorate|raft-rs>:<entries>[:<per hop>]` (for
//! `valgrind` or `perf`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bytes::{Bytes, BytesMut};
use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group};
use std::time::{Duration, Instant};

/// Entries per replication run.
const ENTRIES: usize = 100_000;
/// Entries per replication run with one proposal per hop (every entry
/// its own AppendEntries, acknowledgement and commit).
const ENTRIES_BATCH1: usize = 20_000;
/// Reads per read run (they cost more per item than entries: raft-rs sends
/// a heartbeat round per ReadIndex request, quorate one per Ready).
const READS: usize = 25_600;
const PAYLOAD: usize = 16;
/// Entries the client proposes to the leader per hop.
const WRITES_PER_HOP: usize = 64;
/// Read requests the client makes per hop.
const READS_PER_HOP: usize = 64;
/// At most this many entries go in one AppendEntries: each library's
/// byte limit is set to exactly this many 16-byte entries in its own size
/// accounting.
const MSG_ENTRIES: u64 = 64;
/// The pipelining window: unacknowledged AppendEntries per follower.
const PIPELINED: usize = 256;
/// No pipelining: one AppendEntries in flight per follower.
const STOP_AND_WAIT: usize = 1;

/// How the leader confirms reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadMode {
    /// ReadIndex: a heartbeat round confirms leadership.
    Index,
    /// Lease read: served at once while the leader's lease holds.
    Lease,
}

/// Cluster shape and limits, the same for both libraries.
#[derive(Clone, Copy, Debug)]
struct Setup {
    nodes: usize,
    window: usize,
    read_mode: ReadMode,
}

/// What the client asks for, per hop and in total.
#[derive(Clone, Copy, Debug)]
struct Load {
    writes: usize,
    writes_per_hop: usize,
    /// Read requests in total and per hop.
    read_requests: usize,
    read_requests_per_hop: usize,
    /// Client reads served by one request: more than one when the
    /// application batches reads under one ReadIndex (etcd's server, TiKV).
    reads_per_request: usize,
}

impl Load {
    fn writes(n: usize) -> Self {
        Self::writes_batched(n, WRITES_PER_HOP)
    }

    /// `n` writes, `per_hop` proposed per hop.
    fn writes_batched(n: usize, per_hop: usize) -> Self {
        Load {
            writes: n,
            writes_per_hop: per_hop,
            read_requests: 0,
            read_requests_per_hop: 0,
            reads_per_request: 1,
        }
    }

    /// `n` reads, `READS_PER_HOP` per hop, `per_request` under one request.
    fn reads(n: usize, per_request: usize) -> Self {
        Load {
            writes: 0,
            writes_per_hop: 0,
            read_requests: n / per_request,
            read_requests_per_hop: READS_PER_HOP / per_request,
            reads_per_request: per_request,
        }
    }

    fn mixed(n: usize) -> Self {
        Load {
            writes: n / 2,
            writes_per_hop: WRITES_PER_HOP / 2,
            read_requests: n / 2,
            read_requests_per_hop: READS_PER_HOP / 2,
            reads_per_request: 1,
        }
    }

    fn items(&self) -> u64 {
        (self.writes + self.read_requests * self.reads_per_request) as u64
    }
}

/// One library's cluster, driven by [`run`].
trait Harness: Sized {
    type Payload;
    fn new(setup: Setup) -> Self;
    fn payloads(n: usize) -> Vec<Self::Payload>;
    /// Proposes one entry to the leader (node 0).
    fn propose(&mut self, data: Self::Payload);
    /// Asks the leader for one linearizable read.
    fn read(&mut self, id: u64);
    /// Runs every node's Ready cycle; sent messages wait for [`deliver`].
    fn pump_all(&mut self);
    /// Delivers every message sent so far; false if there was none.
    fn deliver(&mut self) -> bool;
    /// Entries applied per node.
    fn applied(&self) -> &[usize];
    /// Read states the leader handed out.
    fn confirmed(&self) -> usize;
    /// Messages and log entries delivered so far.
    fn delivered(&self) -> Traffic;
    /// Runs Ready cycles and deliveries until no message is left.
    fn settle(&mut self) {
        self.pump_all();
        while self.deliver() {
            self.pump_all();
        }
    }
}

/// What the network carried: messages, and log entries inside them (an
/// entry sent twice counts twice).
#[derive(Clone, Copy, Debug, Default)]
struct Traffic {
    messages: usize,
    entries: usize,
}

/// The simulated network both harnesses share: messages sent in this hop
/// wait in `sent` until [`Wire::deliver`] hands them on.
#[derive(Debug)]
struct Wire<M> {
    sent: Vec<M>,
    delivering: Vec<M>,
    traffic: Traffic,
}

impl<M> Wire<M> {
    fn new() -> Self {
        Wire {
            sent: Vec::new(),
            delivering: Vec::new(),
            traffic: Traffic::default(),
        }
    }

    /// Hands every message sent so far to `step`, counting it and the log
    /// entries it carries (`entries`); false if there was none.
    fn deliver(&mut self, entries: impl Fn(&M) -> usize, mut step: impl FnMut(M)) -> bool {
        std::mem::swap(&mut self.sent, &mut self.delivering);
        let any = !self.delivering.is_empty();
        self.traffic.messages += self.delivering.len();
        for m in self.delivering.drain(..) {
            self.traffic.entries += entries(&m);
            step(m);
        }
        any
    }
}

/// Drives `h` hop by hop until every entry is applied on every node and
/// every read is confirmed; returns the hops taken.
fn run<H: Harness>(h: &mut H, payloads: Vec<H::Payload>, load: Load) -> u64 {
    assert_eq!(payloads.len(), load.writes);
    let mut payloads = payloads.into_iter();
    let mut requested = 0;
    let mut hops = 0;
    loop {
        for data in payloads.by_ref().take(load.writes_per_hop) {
            h.propose(data);
        }
        let reads = load
            .read_requests_per_hop
            .min(load.read_requests - requested);
        for id in requested..requested + reads {
            h.read(id as u64);
        }
        requested += reads;
        h.pump_all();
        let written = h.applied().iter().all(|&n| n == load.writes);
        if written && h.confirmed() == load.read_requests {
            return hops;
        }
        let idle = payloads.len() == 0 && requested == load.read_requests;
        assert!(h.deliver() || !idle, "cluster stalled after {hops} hops");
        hops += 1;
    }
}

mod quorate {
    use super::*;
    use quorate_raft_core::{
        Config, Configuration, LogStorage, MemStorage, Message, MessageBody, Node, NodeId, Role,
    };

    pub(crate) struct Cluster {
        nodes: Vec<Node<MemStorage>>,
        read_mode: ReadMode,
        wire: Wire<Message>,
        applied: Vec<usize>,
        confirmed: usize,
    }

    impl Cluster {
        fn pump(&mut self, i: usize) {
            let node = &mut self.nodes[i];
            while let Some(mut ready) = node.ready().unwrap() {
                self.wire.sent.append(&mut ready.take_messages());
                // The documented persist path: entries move into the
                // store (raft-rs's `MemStorage::append` clones them).
                let persisted = node.storage_mut().persist(&mut ready).unwrap();
                debug_assert!(persisted.snapshot.is_none());
                self.applied[i] += ready
                    .committed_entries()
                    .iter()
                    .filter(|e| !e.data.is_empty())
                    .count();
                self.confirmed += ready.read_states().len();
                node.advance(ready).unwrap();
            }
        }
    }

    impl Harness for Cluster {
        type Payload = Bytes;

        fn new(setup: Setup) -> Self {
            let ids = (1..=setup.nodes as u64).map(NodeId);
            let members = Configuration::new(ids.clone());
            let nodes = ids
                .map(|id| {
                    let mut config = Config::new(id);
                    config.election_tick = 10;
                    config.heartbeat_tick = 3;
                    // 16 bytes of term and index per entry, then the payload.
                    config.max_size_per_msg = MSG_ENTRIES * (16 + PAYLOAD as u64);
                    config.max_inflight_msgs = setup.window;
                    config.check_quorum = true;
                    Node::new(config, MemStorage::new(members.clone())).unwrap()
                })
                .collect();
            let mut cluster = Cluster {
                nodes,
                read_mode: setup.read_mode,
                wire: Wire::new(),
                applied: vec![0; setup.nodes],
                confirmed: 0,
            };
            cluster.nodes[0].campaign();
            cluster.settle();
            assert_eq!(cluster.nodes[0].role(), Role::Leader);
            if setup.read_mode == ReadMode::Lease {
                // The lease starts with a heartbeat round a quorum answered.
                cluster.nodes[0].read_index(u64::MAX).unwrap();
                cluster.settle();
            }
            cluster.confirmed = 0;
            cluster.wire.traffic = Traffic::default();
            cluster
        }

        /// Payloads carved out of one buffer: cloning them is a reference
        /// count, never an allocation.
        fn payloads(n: usize) -> Vec<Bytes> {
            let mut buf = BytesMut::zeroed(n * PAYLOAD);
            (0..n).map(|_| buf.split_to(PAYLOAD).freeze()).collect()
        }

        fn propose(&mut self, data: Bytes) {
            self.nodes[0].propose(data).unwrap();
        }

        fn read(&mut self, id: u64) {
            match self.read_mode {
                ReadMode::Index => self.nodes[0].read_index(id).unwrap(),
                ReadMode::Lease => self.nodes[0].read_lease(id).unwrap(),
            }
        }

        fn pump_all(&mut self) {
            for i in 0..self.nodes.len() {
                self.pump(i);
            }
        }

        fn deliver(&mut self) -> bool {
            let nodes = &mut self.nodes;
            self.wire.deliver(
                |m| match &m.body {
                    MessageBody::AppendEntries { entries, .. } => entries.len(),
                    _ => 0,
                },
                |m| {
                    nodes[(m.to.0 - 1) as usize].step(m).unwrap();
                },
            )
        }

        fn applied(&self) -> &[usize] {
            &self.applied
        }

        fn confirmed(&self) -> usize {
            self.confirmed
        }

        fn delivered(&self) -> Traffic {
            self.wire.traffic
        }
    }
}

mod raftrs {
    use super::*;
    use raft::eraftpb::{ConfState, Entry, Message, MessageType};
    use raft::storage::MemStorage;
    use raft::{Config, RawNode, ReadOnlyOption, StateRole};

    pub(crate) struct Cluster {
        nodes: Vec<RawNode<MemStorage>>,
        wire: Wire<Message>,
        applied: Vec<usize>,
        confirmed: usize,
    }

    impl Cluster {
        fn count(applied: &mut usize, entries: &[Entry]) {
            *applied += entries.iter().filter(|e| !e.data.is_empty()).count();
        }

        /// The Ready cycle as in raft-rs's `five_mem_node` example.
        fn pump(&mut self, i: usize) {
            let node = &mut self.nodes[i];
            while node.has_ready() {
                let mut ready = node.ready();
                self.wire.sent.append(&mut ready.take_messages());
                self.confirmed += ready.read_states().len();
                Self::count(&mut self.applied[i], ready.committed_entries());
                let store = node.raft.raft_log.store.clone();
                if !ready.entries().is_empty() {
                    store.wl().append(ready.entries()).unwrap();
                }
                if let Some(hs) = ready.hs() {
                    store.wl().set_hardstate(hs.clone());
                }
                self.wire.sent.append(&mut ready.take_persisted_messages());
                let mut light = node.advance(ready);
                if let Some(commit) = light.commit_index() {
                    store.wl().mut_hard_state().set_commit(commit);
                }
                self.wire.sent.append(&mut light.take_messages());
                Self::count(&mut self.applied[i], light.committed_entries());
                node.advance_apply();
            }
        }
    }

    impl Harness for Cluster {
        type Payload = Vec<u8>;

        fn new(setup: Setup) -> Self {
            let ids: Vec<u64> = (1..=setup.nodes as u64).collect();
            let read_only_option = match setup.read_mode {
                ReadMode::Index => ReadOnlyOption::Safe,
                ReadMode::Lease => ReadOnlyOption::LeaseBased,
            };
            let nodes = ids
                .iter()
                .map(|&id| {
                    let config = Config {
                        id,
                        election_tick: 10,
                        heartbeat_tick: 3,
                        // Protobuf size of an entry of this workload: term
                        // 2 bytes, index 4 (beyond 16,383), data 18.
                        max_size_per_msg: MSG_ENTRIES * (2 + 4 + 2 + PAYLOAD as u64),
                        max_inflight_msgs: setup.window,
                        check_quorum: true,
                        read_only_option,
                        // Merge a proposal into the append already queued
                        // for a peer: raft-rs's own batching, on for fairness.
                        batch_append: true,
                        ..Config::default()
                    };
                    let storage =
                        MemStorage::new_with_conf_state(ConfState::from((ids.clone(), vec![])));
                    RawNode::with_default_logger(&config, storage).unwrap()
                })
                .collect();
            let mut cluster = Cluster {
                nodes,
                wire: Wire::new(),
                applied: vec![0; setup.nodes],
                confirmed: 0,
            };
            cluster.nodes[0].campaign().unwrap();
            cluster.settle();
            assert_eq!(cluster.nodes[0].raft.state, StateRole::Leader);
            cluster.wire.traffic = Traffic::default();
            cluster
        }

        /// raft-rs takes payloads as `Vec<u8>`: one allocation each, made
        /// here outside the measurement.
        fn payloads(n: usize) -> Vec<Vec<u8>> {
            (0..n).map(|_| vec![0u8; PAYLOAD]).collect()
        }

        fn propose(&mut self, data: Vec<u8>) {
            self.nodes[0].propose(vec![], data).unwrap();
        }

        /// The request context is how raft-rs names a read; it takes a
        /// `Vec<u8>`, so the id's 8 bytes are allocated per request.
        fn read(&mut self, id: u64) {
            self.nodes[0].read_index(id.to_be_bytes().to_vec());
        }

        fn pump_all(&mut self) {
            for i in 0..self.nodes.len() {
                self.pump(i);
            }
        }

        fn deliver(&mut self) -> bool {
            let nodes = &mut self.nodes;
            self.wire.deliver(
                |m| match m.get_msg_type() {
                    MessageType::MsgAppend => m.entries.len(),
                    _ => 0,
                },
                |m| nodes[(m.to - 1) as usize].step(m).unwrap(),
            )
        }

        fn applied(&self) -> &[usize] {
            &self.applied
        }

        fn confirmed(&self) -> usize {
            self.confirmed
        }

        fn delivered(&self) -> Traffic {
            self.wire.traffic
        }
    }
}

/// One measured workload: a cluster setup and a client load.
#[derive(Clone, Debug)]
struct Case {
    name: String,
    setup: Setup,
    load: Load,
}

/// Every workload of this file, for criterion and for `RAFT_BEST_OF`.
fn cases() -> Vec<Case> {
    let case = |name: &str, nodes, window, read_mode, load| Case {
        name: format!("raft/{name}"),
        setup: Setup {
            nodes,
            window,
            read_mode,
        },
        load,
    };
    let writes = Load::writes(ENTRIES);
    let reads = Load::reads(READS, 1);
    vec![
        case(
            "replicate_3n_window256",
            3,
            PIPELINED,
            ReadMode::Index,
            writes,
        ),
        case(
            "replicate_3n_window1",
            3,
            STOP_AND_WAIT,
            ReadMode::Index,
            writes,
        ),
        case(
            "replicate_5n_window256",
            5,
            PIPELINED,
            ReadMode::Index,
            writes,
        ),
        case(
            "replicate_3n_batch1",
            3,
            PIPELINED,
            ReadMode::Index,
            Load::writes_batched(ENTRIES_BATCH1, 1),
        ),
        case(
            "replicate_5n_batch1",
            5,
            PIPELINED,
            ReadMode::Index,
            Load::writes_batched(ENTRIES_BATCH1, 1),
        ),
        case("read_index_3n", 3, PIPELINED, ReadMode::Index, reads),
        case("read_index_5n", 5, PIPELINED, ReadMode::Index, reads),
        case(
            "read_index_3n_batched64",
            3,
            PIPELINED,
            ReadMode::Index,
            Load::reads(READS, READS_PER_HOP),
        ),
        case("read_lease_3n", 3, PIPELINED, ReadMode::Lease, reads),
        case("read_lease_5n", 5, PIPELINED, ReadMode::Lease, reads),
        case(
            "mixed_3n",
            3,
            PIPELINED,
            ReadMode::Index,
            Load::mixed(2 * READS),
        ),
    ]
}

/// One run of `case` on `H`, after building the cluster: the time it took
/// and a line describing the work done (hops, traffic, entries applied
/// per node, read states), so both sides can be compared.
fn once<H: Harness>(case: &Case) -> (Took, String) {
    let mut h = H::new(case.setup);
    let payloads = H::payloads(case.load.writes);
    let start = Took::now();
    let hops = run(&mut h, payloads, case.load);
    let took = Took::now().since(start);
    let work = format!(
        "{hops} hops, {:?}, applied {:?}, {} read states",
        h.delivered(),
        h.applied(),
        h.confirmed()
    );
    (took, work)
}

/// `runs` runs of `case` on `H` back to back (the clusters built first),
/// and the time per run: the CPU clock ticks coarsely, so short cases need
/// several runs per reading.
fn runs<H: Harness>(case: &Case, runs: u32) -> Took {
    let clusters: Vec<_> = (0..runs)
        .map(|_| (H::new(case.setup), H::payloads(case.load.writes)))
        .collect();
    let start = Took::now();
    for (mut h, payloads) in clusters {
        run(&mut h, payloads, case.load);
    }
    let took = Took::now().since(start);
    Took {
        cpu: took.cpu / runs,
        wall: took.wall / runs,
    }
}

/// Wall time and this thread's time on a CPU. On a shared machine the
/// second leaves out the time the thread waited for a core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Took {
    cpu: Duration,
    wall: Duration,
}

impl Took {
    const MAX: Took = Took {
        cpu: Duration::MAX,
        wall: Duration::MAX,
    };

    /// Now, counted from an arbitrary origin. The CPU time comes from
    /// Linux's `/proc/thread-self/schedstat` (nanoseconds on a CPU); zero
    /// where that file does not exist.
    fn now() -> Took {
        let cpu = std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .map_or(Duration::ZERO, Duration::from_nanos);
        let wall = EPOCH.get_or_init(Instant::now).elapsed();
        Took { cpu, wall }
    }

    fn since(self, start: Took) -> Took {
        Took {
            cpu: self.cpu - start.cpu,
            wall: self.wall - start.wall,
        }
    }

    fn min(self, other: Took) -> Took {
        Took {
            cpu: self.cpu.min(other.cpu),
            wall: self.wall.min(other.wall),
        }
    }
}

static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn bench_one<H: Harness>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, case: &Case) {
    // Described inside the routine, so only benches the filter selects run.
    let mut described = false;
    g.bench_function(name, |b| {
        if !described {
            eprintln!("{}/{name}: {}", case.name, once::<H>(case).1);
            described = true;
        }
        b.iter_batched(
            || (H::new(case.setup), H::payloads(case.load.writes)),
            |(mut h, payloads)| {
                run(&mut h, payloads, case.load);
                h
            },
            BatchSize::PerIteration,
        );
    });
}

fn raft(c: &mut Criterion) {
    for case in cases() {
        let mut g = c.benchmark_group(&case.name);
        g.throughput(Throughput::Elements(case.load.items()))
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        bench_one::<quorate::Cluster>(&mut g, "quorate-raft-core", &case);
        bench_one::<raftrs::Cluster>(&mut g, "raft-rs 0.7", &case);
        g.finish();
    }
}

criterion_group!(benches, raft);

/// `RAFT_BEST_OF=<rounds>`: runs every case that many times, alternating
/// the two libraries, and prints each side's fastest run, in CPU time and
/// in wall time, and the ratios. On a shared machine the fastest of
/// several alternating runs is the run least disturbed by other
/// processes, for both sides alike, and CPU time leaves out the waits for
/// a core. `RAFT_CASE=<text>` keeps the cases whose name contains it.
fn best_of(rounds: usize) {
    let only = std::env::var("RAFT_CASE").unwrap_or_default();
    for case in cases().into_iter().filter(|c| c.name.contains(&only)) {
        // Enough runs per reading for about 100 ms of the faster side.
        let (one, our_work) = once::<quorate::Cluster>(&case);
        let one = one.wall;
        let (_, their_work) = once::<raftrs::Cluster>(&case);
        println!("{}: quorate {our_work}", case.name);
        println!("{}: raft-rs {their_work}", case.name);
        let n = (Duration::from_millis(100).as_nanos() / one.as_nanos().max(1)).clamp(1, 1000);
        let n = n as u32;
        let (mut ours, mut theirs) = (Took::MAX, Took::MAX);
        for _ in 0..rounds {
            ours = ours.min(runs::<quorate::Cluster>(&case, n));
            theirs = theirs.min(runs::<raftrs::Cluster>(&case, n));
        }
        let rate = |d: Duration| case.load.items() as f64 / d.as_secs_f64();
        let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64();
        println!(
            "{}: cpu {:.0}/s vs {:.0}/s = {:.2}x; wall {:.0}/s vs {:.0}/s = {:.2}x",
            case.name,
            rate(ours.cpu),
            rate(theirs.cpu),
            ratio(ours.cpu, theirs.cpu),
            rate(ours.wall),
            rate(theirs.wall),
            ratio(ours.wall, theirs.wall)
        );
    }
}

/// `RAFT_ALLOC_PROBE=<quorate|raft-rs>:<entries>[:<per hop>]` replicates
/// that many entries once (3 nodes, window 256, 64 proposals per hop unless
/// given) and exits, for counting heap allocations under `valgrind` (two
/// sizes; the difference divided by the entry difference is the
/// allocations per entry) or profiling with `perf`.
fn main() {
    if let Ok(probe) = std::env::var("RAFT_ALLOC_PROBE") {
        let mut parts = probe.split(':');
        let which = parts.next().unwrap_or_default().to_owned();
        let n: usize = parts
            .next()
            .expect("which:entries")
            .parse()
            .expect("entries");
        let per_hop: usize = parts
            .next()
            .map_or(WRITES_PER_HOP, |p| p.parse().expect("per hop"));
        let setup = Setup {
            nodes: 3,
            window: PIPELINED,
            read_mode: ReadMode::Index,
        };
        let load = Load::writes_batched(n, per_hop);
        match which.as_str() {
            "quorate" => {
                let mut h = quorate::Cluster::new(setup);
                run(&mut h, quorate::Cluster::payloads(n), load);
            }
            _ => {
                let mut h = raftrs::Cluster::new(setup);
                run(&mut h, raftrs::Cluster::payloads(n), load);
            }
        }
        return;
    }
    if let Ok(rounds) = std::env::var("RAFT_BEST_OF") {
        best_of(rounds.parse().expect("rounds"));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
