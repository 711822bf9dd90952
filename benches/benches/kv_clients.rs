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
//!   the last write's index applied, as minimal does. Where this differs
//!   from minimal (as of its alpha.34 sources; the API is alpha.37's):
//!   - openraft is built with `default-features = false, features =
//!     ["tokio-rt"]`, without minimal's `type-alias`, `runtime-stats` and
//!     `serde`: the first only names types (spelled out here); the second
//!     adds per-write latency records to the stats minimal prints every
//!     5 s (neither is done here); the third is for the snapshot, which
//!     minimal serializes to JSON and this one makes of the 8-byte command
//!     count (log id and membership travel in the snapshot's meta).
//!   - The network implements `RaftNetworkV2` itself; minimal writes a v1
//!     `RaftNetwork` and wraps it in `openraft-legacy`'s adapter. The
//!     AppendEntries and vote paths are the same (the adapter keeps the
//!     default sequential `stream_append` and `pre_vote`); a snapshot goes
//!     whole to `install_full_snapshot` instead of in v1 chunks. It counts
//!     its AppendEntries calls (one relaxed atomic add per call).
//!   - A write carries 16 bytes (minimal's `ClientRequest {}` none) and
//!     the state machine counts the commands it applies.
//!   - minimal stops the clock at applied index `writes`, one short of
//!     its last write (index 0 is the membership, 1 the leader's blank
//!     entry); here at `writes + 1`. After the clock every node is checked
//!     to have applied every write, and the rafts are shut down.
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
        let mut values: Vec<Bytes> = (0..total).map(|_| buf.split_to(PAYLOAD).freeze()).collect();
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

mod theirs {
    //! openraft's `benchmarks/minimal`, on openraft's public API: its
    //! store (`store.rs`), its network (`network.rs`) and its driver
    //! (`bin/bench.rs`), for the one shape this bench runs.
    use super::*;
    use futures::{Stream, TryStreamExt};
    use openraft::entry::RaftEntry;
    use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
    use openraft::impls::leader_id_adv;
    use openraft::impls::{InlineBatch, OneshotResponder};
    use openraft::network::{RPCOption, RaftNetworkFactory};
    use openraft::raft::{
        AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
    };
    use openraft::storage::{
        EntryResponder, IOFlushed, LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder,
        RaftStateMachine,
    };
    use openraft::{AnyError, EntryPayload, OptionalSend, Raft, RaftNetworkV2, RaftTypeConfig};
    use std::collections::{BTreeMap, BTreeSet};
    use std::fmt;
    use std::fmt::Debug;
    use std::future::Future;
    use std::io::{self, Cursor};
    use std::ops::RangeBounds;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use tokio::runtime::{Builder, Runtime};
    use tokio::sync::RwLock;

    /// How long any wait of the driver may take (minimal: 400 s).
    const TIMEOUT: Option<Duration> = Some(Duration::from_secs(400));

    /// One client write: minimal's `ClientRequest {}`, with the 16 bytes
    /// of value quorate's writes carry.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Request(#[allow(dead_code)] [u8; PAYLOAD]);

    impl fmt::Display for Request {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "Request")
        }
    }

    /// minimal's `ClientResponse {}`.
    #[derive(Debug)]
    pub(crate) struct Response;

    type NodeId = u64;
    type SnapshotData = Cursor<Vec<u8>>;
    /// minimal's default leader id (without its `single-term-leader`
    /// feature); it is its own committed leader id.
    type LeaderId = leader_id_adv::LeaderId<u64, NodeId>;
    type LogId = openraft::LogId<LeaderId>;
    type StoredMembership = openraft::StoredMembership<LeaderId, NodeId, ()>;
    type SnapshotMeta = openraft::SnapshotMeta<LeaderId, NodeId, ()>;
    type Snapshot = openraft::Snapshot<LeaderId, NodeId, (), SnapshotData>;
    type Vote = openraft::Vote<LeaderId>;
    type Entry = openraft::Entry<LeaderId, EntryPayload<Request, NodeId, ()>>;

    /// minimal's `TypeConfig`, field for field (`Payload` is new in
    /// alpha.37; this is its default).
    #[derive(Debug, Clone, Copy, Default, Eq, PartialEq, Ord, PartialOrd)]
    pub(crate) struct TypeConfig;

    impl RaftTypeConfig for TypeConfig {
        type D = Request;
        type R = Response;
        type NodeId = NodeId;
        type Node = ();
        type Term = u64;
        type LeaderId = LeaderId;
        type Vote = Vote;
        type Payload = EntryPayload<Request, NodeId, ()>;
        type Entry = Entry;
        type Responder<T>
            = OneshotResponder<Self, T>
        where
            T: OptionalSend + 'static;
        type Batch<T>
            = InlineBatch<T>
        where
            T: OptionalSend + 'static;
        // Deprecated in favour of naming `openraft_rt_tokio` directly, which
        // is the same type; minimal names it so.
        #[allow(deprecated)]
        type AsyncRuntime = openraft::impls::TokioRuntime;
        type ErrorSource = AnyError;
    }

    type BenchRaft = Raft<TypeConfig, Arc<StateMachineStore>>;

    /// minimal's `LogStore`: a `BTreeMap` log behind tokio `RwLock`s.
    #[derive(Default)]
    struct LogStore {
        vote: RwLock<Option<Vote>>,
        log: RwLock<BTreeMap<u64, Entry>>,
        last_purged_log_id: RwLock<Option<LogId>>,
    }

    /// minimal's state machine (the last applied log id and membership),
    /// plus the count of commands it was handed.
    #[derive(Debug, Default, Clone)]
    struct StateMachine {
        last_applied_log: Option<LogId>,
        last_membership: StoredMembership,
        commands: u64,
    }

    impl StateMachine {
        /// The snapshot's bytes: the command count (minimal serializes
        /// its whole state machine to JSON; log id and membership travel
        /// in the snapshot's meta anyway).
        fn to_bytes(&self) -> Vec<u8> {
            self.commands.to_le_bytes().to_vec()
        }
    }

    #[derive(Debug)]
    struct StoredSnapshot {
        meta: SnapshotMeta,
        data: Vec<u8>,
    }

    /// minimal's `StateMachineStore`.
    #[derive(Default)]
    pub(crate) struct StateMachineStore {
        sm: RwLock<StateMachine>,
        current_snapshot: RwLock<Option<StoredSnapshot>>,
    }

    impl RaftLogReader<TypeConfig> for Arc<LogStore> {
        async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
            &mut self,
            range: RB,
        ) -> Result<Vec<Entry>, io::Error> {
            let mut entries = vec![];
            {
                let log = self.log.read().await;
                for (_, ent) in log.range(range.clone()) {
                    entries.push(ent.clone());
                }
            };
            Ok(entries)
        }

        async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
            Ok(*self.vote.read().await)
        }
    }

    impl RaftSnapshotBuilder<TypeConfig> for Arc<StateMachineStore> {
        type SnapshotData = SnapshotData;

        async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
            let (data, last_applied_log, last_membership) = {
                let sm = self.sm.read().await;
                (
                    sm.to_bytes(),
                    sm.last_applied_log,
                    sm.last_membership.clone(),
                )
            };
            let meta = SnapshotMeta {
                last_log_id: last_applied_log,
                last_membership,
            };
            let snapshot = StoredSnapshot {
                meta: meta.clone(),
                data: data.clone(),
            };
            *self.current_snapshot.write().await = Some(snapshot);
            Ok(Snapshot {
                meta,
                snapshot: Cursor::new(data),
            })
        }
    }

    impl RaftLogStorage<TypeConfig> for Arc<LogStore> {
        type LogReader = Self;

        async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
            let log = self.log.read().await;
            let last = log.iter().next_back().map(|(_, ent)| ent.log_id());
            let last_purged = *self.last_purged_log_id.read().await;
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last.or(last_purged),
            })
        }

        async fn get_log_reader(&mut self) -> Self::LogReader {
            self.clone()
        }

        async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
            *self.vote.write().await = Some(*vote);
            Ok(())
        }

        async fn append<I>(
            &mut self,
            entries: I,
            callback: IOFlushed<TypeConfig>,
        ) -> Result<(), io::Error>
        where
            I: IntoIterator<Item = Entry> + OptionalSend,
            I::IntoIter: OptionalSend,
        {
            {
                let mut log = self.log.write().await;
                log.extend(entries.into_iter().map(|entry| (entry.index(), entry)));
            }
            // No fsync: acknowledged at once.
            callback.io_completed(Ok(()));
            Ok(())
        }

        async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
            let start_index = last_log_id.map_or(0, |log_id| log_id.index() + 1);
            self.log.write().await.split_off(&start_index);
            Ok(())
        }

        async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
            *self.last_purged_log_id.write().await = Some(log_id);
            let mut log = self.log.write().await;
            *log = log.split_off(&(log_id.index() + 1));
            Ok(())
        }
    }

    impl RaftStateMachine<TypeConfig> for Arc<StateMachineStore> {
        type SnapshotData = SnapshotData;
        type SnapshotBuilder = Self;

        async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
            let sm = self.sm.read().await;
            Ok((sm.last_applied_log, sm.last_membership.clone()))
        }

        async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
        where
            Strm:
                Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
        {
            let mut sm = self.sm.write().await;
            while let Some((entry, responder)) = entries.try_next().await? {
                sm.last_applied_log = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => {}
                    // The empty state machine: count the commands.
                    EntryPayload::Normal(_) => sm.commands += 1,
                    EntryPayload::Membership(ref mem) => {
                        sm.last_membership = StoredMembership::new(Some(entry.log_id), mem.clone());
                    }
                }
                if let Some(responder) = responder {
                    responder.send(Response);
                }
            }
            Ok(())
        }

        async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
            self.clone()
        }

        async fn install_snapshot(
            &mut self,
            meta: &SnapshotMeta,
            snapshot: Self::SnapshotData,
        ) -> Result<(), io::Error> {
            let data = snapshot.into_inner();
            let commands = <[u8; 8]>::try_from(data.as_slice())
                .map(u64::from_le_bytes)
                .map_err(io::Error::other)?;
            *self.sm.write().await = StateMachine {
                last_applied_log: meta.last_log_id,
                last_membership: meta.last_membership.clone(),
                commands,
            };
            *self.current_snapshot.write().await = Some(StoredSnapshot {
                meta: meta.clone(),
                data,
            });
            Ok(())
        }

        async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
            Ok(self
                .current_snapshot
                .read()
                .await
                .as_ref()
                .map(|s| Snapshot {
                    meta: s.meta.clone(),
                    snapshot: Cursor::new(s.data.clone()),
                }))
        }
    }

    /// minimal's `Router`: every node's `Raft`, by id.
    #[derive(Clone, Default)]
    struct Router {
        table: Arc<Mutex<BTreeMap<NodeId, BenchRaft>>>,
        /// AppendEntries calls made, all nodes (one relaxed add per call).
        appends: Arc<AtomicU64>,
    }

    impl RaftNetworkFactory<TypeConfig> for Router {
        type Network = Network;

        async fn new_client(&mut self, target: NodeId, _node: &()) -> Self::Network {
            Network {
                target_raft: self.table.lock().unwrap().get(&target).unwrap().clone(),
                appends: self.appends.clone(),
            }
        }
    }

    /// minimal's `Network`: calls straight into the target's `Raft`.
    struct Network {
        target_raft: BenchRaft,
        appends: Arc<AtomicU64>,
    }

    impl RaftNetworkV2<TypeConfig> for Network {
        type SnapshotData = SnapshotData;

        async fn append_entries(
            &mut self,
            rpc: AppendEntriesRequest<TypeConfig>,
            _option: RPCOption,
        ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
            self.appends.fetch_add(1, Ordering::Relaxed);
            // The only error is Fatal: the target is shutting down.
            self.target_raft
                .append_entries(rpc)
                .await
                .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
        }

        async fn vote(
            &mut self,
            rpc: VoteRequest<TypeConfig>,
            _option: RPCOption,
        ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
            self.target_raft
                .vote(rpc)
                .await
                .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
        }

        async fn full_snapshot(
            &mut self,
            vote: Vote,
            snapshot: Snapshot,
            _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
            _option: RPCOption,
        ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
            self.target_raft
                .install_full_snapshot(vote, snapshot)
                .await
                .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))
        }
    }

    /// A runtime as minimal builds both of its own.
    fn runtime(name: &str, workers: usize) -> Runtime {
        Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .thread_name(name)
            .thread_stack_size(3 * 1024 * 1024)
            .build()
            .unwrap()
    }

    fn workers(var: &str, default: usize) -> usize {
        std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .map_or(default, |v| v.parse().expect("worker threads: a count"))
    }

    /// The 3 voters, and the state machine of each.
    struct Cluster {
        router: Router,
        rafts: Vec<BenchRaft>,
        machines: Vec<Arc<StateMachineStore>>,
        /// The leader's last applied index before the first write.
        first: u64,
    }

    /// minimal's `Router::new_cluster` with its `Config`: voters 0, 1, 2,
    /// initialized at node 0, which leads.
    async fn new_cluster() -> Cluster {
        let config = Arc::new(
            openraft::Config {
                election_timeout_min: 200,
                election_timeout_max: 2000,
                purge_batch_size: 1024,
                max_payload_entries: MAX_PAYLOAD_ENTRIES,
                ..Default::default()
            }
            .validate()
            .unwrap(),
        );
        let router = Router::default();
        let voters: BTreeSet<NodeId> = (0..3).collect();
        let (mut rafts, mut machines) = (Vec::new(), Vec::new());
        for &id in &voters {
            let log_store = Arc::new(LogStore::default());
            let sm = Arc::new(StateMachineStore::default());
            let raft = Raft::new(id, config.clone(), router.clone(), log_store, sm.clone())
                .await
                .unwrap();
            rafts.push(raft);
            machines.push(sm);
        }
        *router.table.lock().unwrap() = voters.iter().copied().zip(rafts.iter().cloned()).collect();
        rafts[0].initialize(voters).await.unwrap();
        // Log 0: the initial membership; 1: the leader's blank entry.
        let mut first = 0;
        for raft in &rafts {
            let metrics = raft
                .wait(TIMEOUT)
                .applied_index(Some(1), "init")
                .await
                .unwrap();
            first = metrics.last_applied.map_or(0, |l| l.index());
        }
        Cluster {
            router,
            rafts,
            machines,
            first,
        }
    }

    /// `clients` clients, each sending `per_client` writes one at a time.
    pub(crate) fn run(clients: usize, per_client: u64) -> Run {
        let total = per_client * clients as u64;
        let server_rt = runtime("bench-server", workers("OPENRAFT_SERVER_WORKERS", 16));
        let client_rt = runtime("bench-client", workers("OPENRAFT_CLIENT_WORKERS", 1));
        let cluster = server_rt.block_on(new_cluster());
        let leader = cluster.rafts[0].clone();
        let last = cluster.first + total;
        let appends_before = cluster.router.appends.load(Ordering::Relaxed);

        let (took, leader_metrics) = client_rt.block_on(async {
            let start = Mark::now();
            let handles: Vec<_> = (0..clients)
                .map(|_| {
                    let l = leader.clone();
                    tokio::spawn(async move {
                        for _ in 0..per_client {
                            l.client_write(Request([0; PAYLOAD])).await.unwrap();
                        }
                    })
                })
                .collect();
            let metrics = leader
                .wait(TIMEOUT)
                .applied_index_at_least(Some(last), "commit all written logs")
                .await
                .unwrap();
            let took = start.took();
            for h in handles {
                h.await.unwrap();
            }
            (took, metrics)
        });
        let appends = cluster.router.appends.load(Ordering::Relaxed) - appends_before;

        // Outside the clock: every node applies every write.
        let applied: Vec<u64> = server_rt.block_on(async {
            let mut applied = Vec::new();
            for (raft, sm) in cluster.rafts.iter().zip(&cluster.machines) {
                raft.wait(TIMEOUT)
                    .applied_index_at_least(Some(last), "every node applies every write")
                    .await
                    .unwrap();
                applied.push(sm.sm.read().await.commands);
            }
            for raft in &cluster.rafts {
                raft.shutdown().await.unwrap();
            }
            applied
        });
        assert_eq!(applied, vec![total; 3], "applied per node");
        let index = |l: Option<LogId>| l.map_or("-".to_owned(), |l| l.index().to_string());
        let work = format!(
            "{total} writes, {appends} AppendEntries calls, leader at index {} with its last \
             snapshot at {} and log purged to {}, applied {applied:?}",
            index(leader_metrics.last_applied),
            index(leader_metrics.snapshot),
            index(leader_metrics.purged),
        );
        drop(cluster);
        drop(client_rt);
        drop(server_rt);
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
        let (mut ours, mut theirs): (Vec<Run>, Vec<Run>) = (Vec::new(), Vec::new());
        for _ in 0..knobs.rounds {
            if knobs.runs("quorate") {
                ours.push(ours::run(clients, per_client));
            }
            if knobs.runs("openraft") {
                theirs.push(theirs::run(clients, per_client));
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
