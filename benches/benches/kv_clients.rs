//! Many-clients KV writes, quorate-raft-core against openraft in the same
//! run, in the shape of openraft's own published benchmark
//! (`benchmarks/minimal` in the openraft repository).
//!
//! The shape, the same on both sides: 3 voters in one process, no
//! network, an in-memory log, no fsync, and a state machine that applies
//! nothing (it counts the commands it is handed). `C` clients each send a
//! 16-byte write and wait for its reply before sending the next; every
//! client sends the same number of writes, `writes / C` (rounded down, so
//! the total is a multiple of `C`). The clock starts before the first
//! write is sent and stops when the leader has applied the last one.
//! After it stops, both sides check that every node applied every write.
//!
//! What each side is, and these differences are part of what a user
//! chooses between, so they stay in the measurement:
//!
//! - **quorate** (`quorate-raft-core`) is a Sans-IO state machine. Here one
//!   thread drives the 3 `Node`s the way our users drive them, in loop
//!   rounds: the clients whose reply arrived propose their next write to
//!   the leader; every node runs its Ready cycle (messages out, the
//!   `MemStorage::persist` path, committed entries applied, `advance`);
//!   then every message sent in the round is stepped into its target. A
//!   client's reply is delivered when the leader's Ready hands its entry
//!   out as committed, that is applied, and it then proposes its next
//!   write in the next round. So every proposal of a round goes into one
//!   Ready and one AppendEntries per follower: batching comes from the
//!   clients alone. One thread, no channels, no tasks, no locks; it never
//!   compacts its log.
//! - **openraft** is multi-threaded async on tokio, as its benchmark runs
//!   it: every node is a set of tasks talking over channels, the clients
//!   are tokio tasks each awaiting `Raft::client_write` in a loop, and the
//!   "network" calls the target node's `append_entries` / `vote` /
//!   `install_full_snapshot` directly. Two runtimes, as in
//!   `benchmarks/minimal`: a multi-thread server runtime for the nodes
//!   (16 workers, minimal's default, on this machine's cores) and a
//!   multi-thread client runtime with 1 worker. Its storage is minimal's:
//!   a `BTreeMap` log and a state machine behind tokio `RwLock`s, append
//!   acknowledged at once (no fsync). Its Config is minimal's too
//!   (election timeout 200..2000 ms, `max_payload_entries` 1024,
//!   `purge_batch_size` 1024; the rest default, so it snapshots its empty
//!   state machine every 5,000 entries and purges the log behind it, and
//!   sends heartbeats). The clock stops when the leader's metrics report
//!   the last write's index applied, as minimal does. The one change from
//!   minimal: the snapshot carries no bytes (minimal serializes its empty
//!   state machine to JSON), since this build has openraft's `serde` off.
//!
//! quorate's message limit is set to 1,024 entries of this workload, the
//! same as openraft's `max_payload_entries`; its pipelining window is the
//! default 256. Payloads: quorate's are `Bytes` carved out of one buffer
//! before the clock starts (cloning one is a reference count); openraft's
//! are a `[u8; 16]` value the client builds inline. Neither allocates a
//! payload per write inside the measurement.
//!
//! Output: one row per client count, ops/s of each side in wall time, the
//! ratio (ours / openraft), and the CPU time all the process's threads
//! used (openraft's threads run on both cores; ours on one).
//!
//! Knobs: `KV_CLIENTS=1,64` (rows; default 1,64,256,1024,4096),
//! `KV_WRITES=<n>` (writes per row; default 200,000, and 20,000 for one
//! client), `KV_ROUNDS=<n>` (alternating runs per row, the fastest of each
//! side is reported; default 3), `KV_SIDE=quorate|openraft` (one side
//! only), `OPENRAFT_SERVER_WORKERS` / `OPENRAFT_CLIENT_WORKERS` (default
//! 16 and 1, minimal's).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

/// Bytes of every write's value, both sides.
const PAYLOAD: usize = 16;
/// Rows by default: openraft's published client counts.
const CLIENTS: [usize; 5] = [1, 64, 256, 1024, 4096];
/// Writes per row by default.
const WRITES: u64 = 200_000;
/// Writes with one client (a round trip each, so fewer).
const WRITES_ONE_CLIENT: u64 = 20_000;
/// Entries per AppendEntries at most: openraft minimal's
/// `max_payload_entries`, and quorate's byte limit set to as many entries.
const MAX_PAYLOAD_ENTRIES: u64 = 1024;

/// One run of one side: its times, and a line describing its work.
#[derive(Debug)]
struct Run {
    took: Took,
    work: String,
}

/// Wall time and the CPU time of all the process's threads.
#[derive(Clone, Copy, Debug)]
struct Took {
    wall: Duration,
    cpu: Duration,
}

/// A point to measure from.
#[derive(Clone, Copy, Debug)]
struct Mark {
    at: Instant,
    cpu: Duration,
}

impl Mark {
    fn now() -> Mark {
        Mark {
            at: Instant::now(),
            cpu: process_cpu(),
        }
    }

    fn took(self) -> Took {
        Took {
            wall: self.at.elapsed(),
            cpu: process_cpu().saturating_sub(self.cpu),
        }
    }
}

/// Time on a CPU of every thread of this process now, from Linux's
/// `/proc/self/task/*/schedstat` (nanoseconds); zero where that does not
/// exist. Threads that exit take their time with them, so both sides keep
/// theirs alive until the measurement is read.
fn process_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .filter_map(|t| {
            let path = t.ok()?.path().join("schedstat");
            let stat = std::fs::read_to_string(path).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum();
    Duration::from_nanos(nanos)
}

/// Writes each of `clients` sends in a row of `writes`.
fn per_client(writes: u64, clients: usize) -> u64 {
    (writes / clients as u64).max(1)
}

mod ours {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use quorate_raft_core::{
        Config, Configuration, LogIndex, LogStorage, MemStorage, Message, Node, NodeId, Role,
    };
    use std::collections::VecDeque;

    /// Three nodes and the messages in flight between them.
    struct Cluster {
        nodes: Vec<Node<MemStorage>>,
        /// Messages sent in this round, stepped in at its end.
        sent: Vec<Message>,
        delivering: Vec<Message>,
        /// Commands applied per node.
        applied: Vec<u64>,
        /// Messages stepped in so far.
        messages: u64,
        /// Leader Readys that carried new entries, and those entries.
        leader_appends: u64,
        leader_appended: u64,
    }

    impl Cluster {
        fn new() -> Cluster {
            let ids = (1..=3).map(NodeId);
            let members = Configuration::new(ids.clone());
            let nodes = ids
                .map(|id| {
                    let mut config = Config::new(id);
                    // 16 bytes of term and index per entry, then the value.
                    config.max_size_per_msg = MAX_PAYLOAD_ENTRIES * (16 + PAYLOAD as u64);
                    Node::new(config, MemStorage::new(members.clone())).unwrap()
                })
                .collect();
            let mut cluster = Cluster {
                nodes,
                sent: Vec::new(),
                delivering: Vec::new(),
                applied: vec![0; 3],
                messages: 0,
                leader_appends: 0,
                leader_appended: 0,
            };
            cluster.nodes[0].campaign();
            cluster.settle(&mut |_| {});
            assert_eq!(cluster.nodes[0].role(), Role::Leader);
            cluster.messages = 0;
            cluster.leader_appends = 0;
            cluster.leader_appended = 0;
            cluster
        }

        /// Runs node `i`'s Ready cycle until it has nothing more; on the
        /// leader (node 0), `reply` gets the index of every command it
        /// applies.
        fn pump(&mut self, i: usize, reply: &mut impl FnMut(LogIndex)) {
            let node = &mut self.nodes[i];
            while let Some(mut ready) = node.ready().unwrap() {
                self.sent.append(&mut ready.take_messages());
                if i == 0 && !ready.entries().is_empty() {
                    self.leader_appends += 1;
                    self.leader_appended += ready.entries().len() as u64;
                }
                let persisted = node.storage_mut().persist(&mut ready).unwrap();
                debug_assert!(persisted.snapshot.is_none());
                // The empty state machine: count the commands.
                for entry in ready.committed_entries() {
                    if entry.is_command() {
                        self.applied[i] += 1;
                        if i == 0 {
                            reply(entry.index);
                        }
                    }
                }
                node.advance(ready).unwrap();
            }
        }

        fn pump_all(&mut self, reply: &mut impl FnMut(LogIndex)) {
            for i in 0..self.nodes.len() {
                self.pump(i, reply);
            }
        }

        /// Steps every message sent so far into its target; false if
        /// there was none.
        fn deliver(&mut self) -> bool {
            std::mem::swap(&mut self.sent, &mut self.delivering);
            let any = !self.delivering.is_empty();
            self.messages += self.delivering.len() as u64;
            for m in self.delivering.drain(..) {
                let to = (m.to.0 - 1) as usize;
                self.nodes[to].step(m).unwrap();
            }
            any
        }

        /// Rounds until no message is left.
        fn settle(&mut self, reply: &mut impl FnMut(LogIndex)) {
            self.pump_all(reply);
            while self.deliver() {
                self.pump_all(reply);
            }
        }
    }

    /// `clients` clients, each sending `per_client` writes one at a time.
    pub(crate) fn run(clients: usize, per_client: u64) -> Run {
        let total = per_client * clients as u64;
        let mut cluster = Cluster::new();
        let mut buf = BytesMut::zeroed(total as usize * PAYLOAD);
        let mut values: Vec<Bytes> = (0..total)
            .map(|_| buf.split_to(PAYLOAD).freeze())
            .collect();
        // Writes each client has still to send.
        let mut left = vec![per_client; clients];
        // Clients whose reply arrived (first, all of them): they send in
        // the next round.
        let mut replied: Vec<usize> = (0..clients).collect();
        // Each outstanding write's index and client, in index order.
        let mut outstanding: VecDeque<(LogIndex, usize)> = VecDeque::with_capacity(clients);
        let mut rounds = 0u64;

        let start = Mark::now();
        loop {
            for client in replied.drain(..) {
                if left[client] == 0 {
                    continue;
                }
                left[client] -= 1;
                let index = cluster.nodes[0].propose(values.pop().unwrap()).unwrap();
                outstanding.push_back((index, client));
            }
            cluster.pump_all(&mut |index| {
                let (at, client) = outstanding.pop_front().unwrap();
                debug_assert_eq!(at, index);
                replied.push(client);
            });
            if cluster.applied[0] == total {
                break;
            }
            assert!(cluster.deliver(), "cluster stalled after {rounds} rounds");
            rounds += 1;
        }
        let took = start.took();

        // Outside the clock: the followers learn the last commit index.
        cluster.settle(&mut |_| {});
        if cluster.applied[1..].iter().any(|&n| n < total) {
            // A heartbeat carries the commit index to a follower that has
            // every entry but has not heard it is committed.
            for _ in 0..Config::new(NodeId(1)).heartbeat_tick {
                cluster.nodes[0].tick();
            }
            cluster.settle(&mut |_| {});
        }
        assert!(outstanding.is_empty() && left.iter().all(|&n| n == 0));
        assert_eq!(cluster.applied, vec![total; 3], "applied per node");
        let work = format!(
            "{total} writes, {rounds} rounds, {} messages, {} leader appends of {:.1} entries on average, applied {:?}",
            cluster.messages,
            cluster.leader_appends,
            cluster.leader_appended as f64 / cluster.leader_appends.max(1) as f64,
            cluster.applied
        );
        Run { took, work }
    }
}

/// Rows and runs the environment asks for.
#[derive(Debug)]
struct Knobs {
    clients: Vec<usize>,
    writes: Option<u64>,
    rounds: usize,
    side: Option<String>,
}

impl Knobs {
    fn from_env() -> Knobs {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let clients = var("KV_CLIENTS").map_or(CLIENTS.to_vec(), |v| {
            v.split(',')
                .map(|c| c.trim().parse().expect("KV_CLIENTS: client counts"))
                .collect()
        });
        Knobs {
            clients,
            writes: var("KV_WRITES").map(|v| v.parse().expect("KV_WRITES: a count")),
            rounds: var("KV_ROUNDS").map_or(3, |v| v.parse().expect("KV_ROUNDS: a count")),
            side: var("KV_SIDE"),
        }
    }

    fn writes(&self, clients: usize) -> u64 {
        self.writes.unwrap_or(if clients == 1 {
            WRITES_ONE_CLIENT
        } else {
            WRITES
        })
    }

    fn runs(&self, side: &str) -> bool {
        self.side.as_deref().is_none_or(|s| s == side)
    }
}

/// The fastest of `runs` by wall time.
fn fastest(runs: &[Run]) -> Option<&Run> {
    runs.iter().min_by_key(|r| r.took.wall)
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no arguments.
    let knobs = Knobs::from_env();
    let mut rows = Vec::new();
    for &clients in &knobs.clients {
        let per_client = per_client(knobs.writes(clients), clients);
        let total = per_client * clients as u64;
        let (mut ours, theirs): (Vec<Run>, Vec<Run>) = (Vec::new(), Vec::new());
        for _ in 0..knobs.rounds {
            if knobs.runs("quorate") {
                ours.push(ours::run(clients, per_client));
            }
        }
        for (side, runs) in [("quorate", &ours), ("openraft", &theirs)] {
            for run in runs.iter() {
                eprintln!(
                    "{clients} clients, {side}: {:.3} s wall, {:.3} s CPU: {}",
                    run.took.wall.as_secs_f64(),
                    run.took.cpu.as_secs_f64(),
                    run.work
                );
            }
        }
        let rate = |r: &Run| total as f64 / r.took.wall.as_secs_f64();
        rows.push((
            clients,
            total,
            fastest(&ours).map(|r| (rate(r), r.took.cpu)),
            fastest(&theirs).map(|r| (rate(r), r.took.cpu)),
        ));
    }

    println!();
    println!(
        "| clients | writes | quorate ops/s | openraft ops/s | ratio | quorate CPU s | openraft CPU s |"
    );
    println!("| --: | --: | --: | --: | --: | --: | --: |");
    let show = |x: Option<(f64, Duration)>| {
        x.map_or(("-".to_owned(), "-".to_owned()), |(rate, cpu)| {
            (format!("{rate:.0}"), format!("{:.3}", cpu.as_secs_f64()))
        })
    };
    for (clients, total, ours, theirs) in rows {
        let ratio = match (ours, theirs) {
            (Some((a, _)), Some((b, _))) => format!("{:.2}x", a / b),
            _ => "-".to_owned(),
        };
        let (our_rate, our_cpu) = show(ours);
        let (their_rate, their_cpu) = show(theirs);
        println!(
            "| {clients} | {total} | {our_rate} | {their_rate} | {ratio} | {our_cpu} | {their_cpu} |"
        );
    }
    println!();
    println!(
        "Timed: from the first write sent to the leader having applied the last one (wall \
         time; fastest of {} alternating runs per side). CPU s: all the process's threads \
         during that run.",
        knobs.rounds
    );
}
