//! One kv-cluster node: a replica of every shard it hosts (each shard its
//! own Raft group, whose membership can change while it runs), all on one
//! TCP transport: one channel for Raft, one for clients, one for
//! anti-entropy gossip between replicas (see [`super::anti_entropy`]).
//!
//! All the node's groups are one [`MultiRaft`]: one tick for all (only the
//! groups whose timer is due do anything), the messages of every group to
//! the same peer coalesced into one [`Batch`] per round (one frame on
//! [`RAFT_CHANNEL`], two when bulk appends ride along), idle groups
//! quiesced (no ticks, no heartbeats), and a liveness beat per peer every
//! [`NodeConfig::liveness_ticks`] so that quiet groups notice a server
//! failing. Per-shard work (driving a Ready, anti-entropy rounds, session
//! reads) touches only the shards that have something to do, so an idle
//! node costs about the same with 1 shard or 1,000.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use quorate_clocks::{Hlc, HlcTimestamp};
use quorate_raft_core::codec::{self, BATCH_HEADER_LEN, MAX_BATCH_MESSAGES};
use quorate_raft_core::multi::{Batch, GroupId, MultiConfig, MultiError, MultiEvent, MultiRaft};
use quorate_raft_core::{
    Config, Configuration, Message, MessageBody, Node, NodeId, Promotion, ReadState, Role, Storage,
};
use quorate_transport::framing::{ChannelId, Flags, Frame};
use quorate_transport::tcp::{PeerId, TcpConfig, TcpError, TcpStats, TcpTransport, Trust};
use quorate_transport::{Event, Transport};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::anti_entropy::{ANTI_ENTROPY_CHANNEL, Action, AntiEntropy, Gossip, View};
use super::clock_sync::{CLOCK_CHANNEL, PROBE_TICKS, PeerClocks, Probe};
use super::log_store::FileLog;
use super::protocol::{
    BucketEntry, Command, Consistency, Envelope, PeerClock, PeerStatus, Reply, Request,
    ShardStatus, Traffic, TrafficKind,
};
use super::security::Security;
use super::store::{KvStore, Versioned};
use super::txn::TxnCommand;
use super::{AtPath, CLIENT_CHANNEL, Error};

/// Timing and layout of a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id (1, 2, 3, ...): its Raft id in every shard.
    pub id: u64,
    /// The voters each hosted shard starts with, this node included unless
    /// it is `joining` (used only when its data directory is new: after
    /// that the configuration comes from its log and snapshots).
    pub members: Vec<u64>,
    /// How many shards (Raft groups) the cluster has.
    pub shards: u32,
    /// The shards this node holds a replica of (empty: all).
    pub hosted: Vec<u32>,
    /// Whether the node joins running shards: its storage then starts with
    /// `members` as voters and itself as a learner (thesis §4.2.1), and it
    /// waits for a leader's `add_voter` to replicate to it and promote it.
    pub joining: bool,
    /// Every this many ticks a shard's leader starts an anti-entropy round
    /// (0: never).
    pub gossip_ticks: u32,
    /// Where the node keeps its logs, one file per shard.
    pub data_dir: PathBuf,
    /// Interval of Raft ticks.
    pub tick: Duration,
    /// Election timeout in ticks (randomized up to twice this).
    pub election_ticks: u32,
    /// Compact a shard's log into a snapshot every this many applied
    /// entries (0: by size only). The demo uses it to show snapshots.
    pub compact_every: u64,
    /// Compact a shard's log once it has grown by this many bytes since the
    /// last snapshot and by at least the snapshot's own size (0: by count
    /// only), so snapshot writes cost at most what the log cost.
    pub compact_log_bytes: u64,
    /// Largest InstallSnapshot chunk a leader sends, in bytes.
    pub snapshot_chunk_bytes: u64,
    /// The liveness beat, in ticks: every peer hears from this node at
    /// least this often (an empty batch if nothing else went to it), and
    /// a peer unheard for three times as long counts as down, which wakes
    /// the quiesced shards it is in. It bounds how soon a quiet shard's
    /// followers notice their leader's server failing, and costs one
    /// small frame per peer per interval.
    pub liveness_ticks: u32,
}

impl NodeConfig {
    /// The demo's compaction interval, in applied entries.
    pub const COMPACT_EVERY: u64 = 32;
    /// Default compaction threshold, in bytes of log since the last
    /// snapshot.
    pub const COMPACT_LOG_BYTES: u64 = 4 * 1024 * 1024;
    /// Default InstallSnapshot chunk size: small, so a demo snapshot of a
    /// few kilobytes visibly travels in several resumable chunks.
    pub const SNAPSHOT_CHUNK_BYTES: u64 = 1024;
    /// Default anti-entropy period, in ticks: a round every half second
    /// costs an idle 3-node shard about 8 KiB/s of digests.
    pub const GOSSIP_TICKS: u32 = 50;
    /// Default liveness beat, in ticks: 80 ms at 10 ms ticks, so that a
    /// quiet shard whose leader's server is cut off elects another within
    /// two election timeouts of 200 ms (the peer counts as down after
    /// 240 ms, then the followers campaign): 12.5 small frames a second to
    /// each peer, whatever the number of shards.
    pub const LIVENESS_TICKS: u32 = 8;

    fn hosts(&self, shard: u32) -> bool {
        self.hosted.is_empty() || self.hosted.contains(&shard)
    }
}

/// Something a node did that the scenario (or an operator) wants to see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// As `shard`'s leader, it started catching up server `id` as a learner.
    LearnerAdded {
        /// The shard.
        shard: u32,
        /// The new server.
        id: u64,
    },
    /// As `shard`'s leader, a catch-up ended (promoted, aborted, cancelled).
    Promotion {
        /// The shard.
        shard: u32,
        /// The outcome.
        outcome: Promotion,
    },
    /// Its replica of `shard` differed at applied `index` from a hash that
    /// a majority of the voters share, in `bucket`; it asked `source`.
    Diverged {
        /// The shard.
        shard: u32,
        /// The round's applied index.
        index: u64,
        /// The damaged bucket.
        bucket: u64,
        /// The voter asked for the bucket.
        source: u64,
    },
    /// It replaced a damaged bucket with `source`'s, both at applied `index`.
    Repaired {
        /// The shard.
        shard: u32,
        /// The applied index of both states.
        index: u64,
        /// The bucket.
        bucket: u64,
        /// Where the contents came from.
        source: u64,
        /// Keys in the repaired bucket.
        keys: usize,
    },
}

/// What a node did, in order, shared with its [`NodeHandle`].
pub type SharedEvents = Arc<Mutex<Vec<NodeEvent>>>;

/// The state of one node's replicas that a test or the scenario may read.
pub type SharedStores = Arc<Mutex<Vec<KvStore>>>;

/// A node bound to its address, not yet running.
#[derive(Debug)]
pub struct BoundNode {
    transport: TcpTransport<Security>,
    peers: Mutex<HashMap<u64, SocketAddr>>,
    audit: bool,
}

impl BoundNode {
    /// Binds node `id` to `listen` (port 0 picks a free one), plain TCP.
    pub async fn bind(id: u64, listen: SocketAddr) -> Result<Self, Error> {
        Self::bind_with(id, listen, Security::Plain).await
    }

    /// Binds nodes `1..=n` on free loopback ports, plain TCP, and tells
    /// each where the others listen: an in-process cluster ready to spawn.
    /// Returns the addresses and the bound nodes, both by id.
    pub async fn bind_loopback_mesh(
        n: u64,
    ) -> Result<(Vec<(u64, SocketAddr)>, Vec<(u64, Self)>), Error> {
        let mut bound = Vec::new();
        let mut addrs = Vec::new();
        for id in 1..=n {
            let node = Self::bind(id, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            let addr = node
                .local_addr()
                .ok_or(Error::Check(format!("node {id} not listening")))?;
            addrs.push((id, addr));
            bound.push((id, node));
        }
        for (id, node) in &bound {
            for &(peer, addr) in &addrs {
                if peer != *id {
                    node.add_peer(peer, addr);
                }
            }
        }
        Ok((addrs, bound))
    }

    /// Binds node `id` to `listen` with `security` (TLS: peers must prove
    /// their ids with the cluster CA's certificates).
    pub async fn bind_with(id: u64, listen: SocketAddr, security: Security) -> Result<Self, Error> {
        let transport = TcpTransport::bind_with(PeerId(id), listen, tcp_config(), security)
            .await
            .map_err(|e| Error::Listen {
                addr: listen,
                source: e,
            })?;
        Ok(BoundNode {
            transport,
            peers: Mutex::new(HashMap::new()),
            audit: false,
        })
    }

    /// Makes the node's stores count how many times they apply each write
    /// ([`KvStore::audit`]), from the first entry on: for tests.
    pub fn with_audit(mut self) -> Self {
        self.audit = true;
        self
    }

    /// The address peers and clients dial.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.transport.local_addr()
    }

    /// Tells the node where a peer listens.
    pub fn add_peer(&self, id: u64, addr: SocketAddr) {
        self.transport.add_peer(PeerId(id), addr);
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        peers.insert(id, addr);
    }

    /// Opens the logs (replaying what is on disk) and runs the node until
    /// [`NodeHandle::stop`].
    pub fn spawn(self, config: NodeConfig) -> Result<NodeHandle, Error> {
        let peers = self
            .peers
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let core = NodeCore::open(&config, peers, self.audit)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let handle = NodeHandle {
            id: config.id,
            stores: core.stores(),
            events: core.events.clone(),
            stop: stop_tx,
            task: None,
            recovered: core.recovered,
            recovered_snapshots: core.recovered_snapshots.clone(),
        };
        let running = Running {
            core,
            transport: self.transport,
        };
        let task = tokio::spawn(running.run(config.tick, stop_rx));
        Ok(NodeHandle {
            task: Some(task),
            ..handle
        })
    }
}

/// A node's transport settings: every connection not from a known peer is
/// a client of its own, with the transport's default limits (1,024
/// accepted connections, 5 s hello, 20 s idle timeout, 1 MiB client
/// frames, 64 MiB of partial frames) and fast redials. `chat server`
/// starts from these too.
pub fn tcp_config() -> TcpConfig {
    TcpConfig {
        // A restarted peer is redialed within a quarter second.
        backoff_max: Duration::from_millis(250),
        // Only the servers given with --peers (or added later) are peers;
        // everyone else is a client on a connection of its own, which
        // cannot speak for a node and gets the client frame limit.
        trust: Trust::KnownPeers,
        // 16 rounds of control messages (every shard's in one batch frame
        // per round, about 160 ms of heartbeats): enough to ride out a burst,
        // too few to flood a peer that comes back with stale ones (each
        // answered heartbeat may release an append: under partitions a
        // 1,024-frame queue cost 4.9x the steady bytes per write).
        urgent_queue: 16,
        ..TcpConfig::default()
    }
}

/// File descriptors a node needs at least besides its shard logs: stdio,
/// the runtime's, the listener, its peers and a client or two.
pub const FD_RESERVE: u64 = 16;

/// The soft limit on open files (`RLIMIT_NOFILE`) of this process, from
/// `/proc/self/limits` (`None` where there is no such file).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    match soft {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// Checks that a node hosting `shards` shards can open their logs (one
/// file each, kept open) and still accept connections: an error if the
/// soft open-files limit is below the logs plus [`FD_RESERVE`]; a warning
/// if it leaves less than the transport's accepted-connection cap
/// (those clients would be refused at accept).
pub fn check_open_files(shards: u64, limit: u64) -> Result<(), Error> {
    let needed = shards.saturating_add(FD_RESERVE);
    if limit < needed {
        return Err(Error::TooFewFileDescriptors {
            shards,
            needed,
            limit,
        });
    }
    let connections = tcp_config().max_connections as u64;
    if limit < needed.saturating_add(connections) {
        tracing::warn!(
            shards,
            limit,
            connections,
            "open-files limit leaves room for fewer connections than the transport accepts"
        );
    }
    Ok(())
}

/// A running node.
#[derive(Debug)]
pub struct NodeHandle {
    id: u64,
    stores: SharedStores,
    events: SharedEvents,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), Error>>>,
    recovered: u64,
    recovered_snapshots: Vec<u64>,
}

impl NodeHandle {
    /// The node's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its replicas' stores, indexed by shard (empty for shards it does
    /// not host).
    pub fn stores(&self) -> SharedStores {
        self.stores.clone()
    }

    /// What it did so far (membership changes it led, repairs).
    pub fn events(&self) -> Vec<NodeEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The last log index found on disk at start (in a snapshot or the log
    /// after it), summed over all shards.
    pub fn recovered(&self) -> u64 {
        self.recovered
    }

    /// Per shard, the index of the snapshot found on disk at start (0: none).
    pub fn recovered_snapshots(&self) -> &[u64] {
        &self.recovered_snapshots
    }

    /// Stops the node as a crash would (its log files stay; nothing else
    /// is kept) and waits until its sockets are closed.
    pub async fn stop(self) -> Result<(), Error> {
        let _ = self.stop.send(true);
        self.wait().await
    }

    /// Waits for the node to end on its own (an error).
    pub async fn wait(self) -> Result<(), Error> {
        match self.task {
            Some(task) => task.await.map_err(|e| Error::Task(e.to_string()))?,
            None => Ok(()),
        }
    }
}

/// A shard replica's state outside Raft (its Raft node lives in the
/// node's [`MultiRaft`], as group `shard`).
#[derive(Debug)]
struct Replica {
    shard: u32,
    /// Writes and session registrations proposed here: whom to answer
    /// once applied.
    pending_writes: PendingWrites,
    /// Reads waiting for ReadIndex confirmation: whom to answer, which key.
    pending_reads: HashMap<u64, (PeerId, String)>,
    /// Reads confirmed, waiting for the applied index to reach theirs.
    confirmed_reads: Vec<ReadState>,
    /// Session reads waiting for the applied index to reach their token
    /// (at most [`MAX_SESSION_READS`], each until its deadline).
    session_reads: Vec<SessionRead>,
    /// Anti-entropy rounds this replica takes part in.
    anti_entropy: AntiEntropy,
    /// The applied index of the last anti-entropy round it led: a shard
    /// whose state did not move since has nothing new to compare (idle
    /// shards are checked one at a time, see [`NodeCore::on_tick`]).
    gossiped_at: Option<u64>,
    /// The leader last logged, with its term.
    leader: Option<(u64, u64)>,
    /// Whether a majority of the voters' clocks were last known within
    /// [`LEASE_CLOCK_BOUND_NS`] (to log when that changes).
    clocks_bounded: bool,
}

/// Every other member (voter or learner) of a shard.
fn others(node: &Node<FileLog>) -> Vec<u64> {
    let me = node.id();
    node.configuration()
        .members()
        .filter(|&m| m != me)
        .map(|m| m.0)
        .collect()
}

fn voters(node: &Node<FileLog>) -> BTreeSet<u64> {
    node.configuration().all_voters().map(|v| v.0).collect()
}

/// The group of shard `shard`.
fn group_of(shard: u32) -> GroupId {
    GroupId(u64::from(shard))
}

/// How long a session read waits for a replica behind its token before
/// the replica answers [`Reply::Behind`] (the client then asks another).
pub const SESSION_READ_WAIT_MS: u64 = 200;

/// Session reads one replica holds waiting at most; past it, a read of a
/// replica behind is answered [`Reply::Behind`] at once.
pub const MAX_SESSION_READS: usize = 1024;

/// The uncertainty of the peers' clock offsets past which a leader serves
/// no lease reads: unless a majority of the shard's voters (itself
/// included) have clocks known to within this of its own, it answers
/// [`Reply::LeaseUnavailable`] and logs why.
pub const LEASE_CLOCK_BOUND_NS: u64 = 250_000_000;

/// A session read waiting for its replica to catch up.
#[derive(Debug)]
struct SessionRead {
    client: PeerId,
    id: u64,
    key: String,
    token: u64,
    /// Wall-clock milliseconds at which it is answered [`Reply::Behind`].
    deadline_ms: u64,
}

/// Whether a majority of `replica`'s voters, itself included, have clocks
/// known within [`LEASE_CLOCK_BOUND_NS`] of this node's; logs when that
/// changes.
fn clocks_bounded(replica: &mut Replica, node: &Node<FileLog>, clocks: &[PeerClock]) -> bool {
    let me = node.id().0;
    let voters = voters(node);
    let bounded = voters
        .iter()
        .filter(|&&v| {
            v == me
                || clocks
                    .iter()
                    .any(|c| c.id == v && c.bound_ns <= LEASE_CLOCK_BOUND_NS)
        })
        .count();
    let ok = bounded * 2 > voters.len();
    if ok != replica.clocks_bounded {
        replica.clocks_bounded = ok;
        if ok {
            tracing::info!(
                shard = replica.shard,
                "peer clocks bounded again: lease reads served"
            );
        } else {
            let unknown: Vec<String> = clocks
                .iter()
                .filter(|c| voters.contains(&c.id) && c.bound_ns > LEASE_CLOCK_BOUND_NS)
                .map(|c| match c.bound_ns {
                    u64::MAX => format!("{}: no recent sample", c.id),
                    b => format!("{}: ±{:.1} ms", c.id, b as f64 / 1e6),
                })
                .collect();
            tracing::warn!(
                shard = replica.shard,
                peers = ?unknown,
                bound_ms = LEASE_CLOCK_BOUND_NS / 1_000_000,
                "lease reads refused: too few voters' clocks known within the bound"
            );
        }
    }
    ok
}

/// The answer to a read of `key` served from `store` at `index`.
fn value_reply(store: Option<&KvStore>, key: &str, index: u64, stale: bool) -> Reply {
    // A key under a transaction's intent is not served at any consistency:
    // no read sees part of a transaction.
    if let Some(intent) = store.and_then(|s| s.intent(key)) {
        return Reply::Intent(intent);
    }
    let value = store
        .and_then(|s| s.get(key))
        .map(|v| (v.value.clone(), v.stamp));
    Reply::Value {
        value,
        index,
        stale,
    }
}

/// This node as the leader of a shard's group.
#[derive(Clone, Copy, Debug)]
struct Leading {
    /// The term it leads in.
    term: u64,
    /// The group's applied index.
    applied: u64,
}

/// A client waiting for the entry it proposed.
#[derive(Clone, Copy, Debug)]
struct Waiter {
    /// The entry's term: an entry at the same index with another term is
    /// someone else's (the proposal was lost with the leadership).
    term: u64,
    client: PeerId,
    /// The correlation id to answer with.
    id: u64,
    /// The write's `(session, seq)` (none for a registration).
    write: Option<(u64, u64)>,
}

/// The entries a leader proposed for clients, by log index.
#[derive(Debug, Default)]
struct PendingWrites {
    by_index: HashMap<u64, Waiter>,
    /// Index of each pending write, so a retry waits for the entry already
    /// proposed instead of proposing again.
    by_write: HashMap<(u64, u64), u64>,
}

impl PendingWrites {
    fn insert(&mut self, index: u64, waiter: Waiter) {
        if let Some(write) = waiter.write {
            self.by_write.insert(write, index);
        }
        self.by_index.insert(index, waiter);
    }

    /// Points the pending write `(session, seq)`, if any, at the latest
    /// attempt's sender and correlation id.
    fn retry(&mut self, write: (u64, u64), client: PeerId, id: u64) -> bool {
        let Some(waiter) = self
            .by_write
            .get(&write)
            .and_then(|index| self.by_index.get_mut(index))
        else {
            return false;
        };
        waiter.client = client;
        waiter.id = id;
        true
    }

    /// The waiter of the entry `(index, term)` just applied.
    fn take(&mut self, index: u64, term: u64) -> Option<Waiter> {
        let waiter = self.by_index.remove(&index)?;
        if let Some(write) = waiter.write {
            self.by_write.remove(&write);
        }
        (waiter.term == term).then_some(waiter)
    }

    /// Every waiter, as (client, correlation id), leaving none.
    fn drain(&mut self) -> impl Iterator<Item = (PeerId, u64)> + '_ {
        self.by_write.clear();
        self.by_index.drain().map(|(_, w)| (w.client, w.id))
    }
}

/// A running node: its logic and the TCP transport it is driven over.
/// Events a node takes in before it persists and sends once for all of
/// them (its group commit): large enough that a round carries many
/// clients' proposals, small enough that ticks and peers are not starved.
const MAX_EVENTS_PER_ROUND: usize = 256;

struct Running {
    core: NodeCore,
    transport: TcpTransport<Security>,
}

/// One node's logic without I/O (Sans-IO, as quinn-proto's connection): it
/// takes ticks and frames with the wall-clock time they came at, and queues
/// the frames to send ([`poll_transmit`](Self::poll_transmit)) and the peer
/// addresses it learnt ([`poll_new_peer`](Self::poll_new_peer)). The
/// `node` command drives it over TCP; the deterministic simulation in
/// `tests/kv_sim.rs` drives several over a simulated network.
#[derive(Debug)]
pub struct NodeCore {
    /// Where the other servers listen (for leader hints to clients).
    peers: HashMap<u64, SocketAddr>,
    events: SharedEvents,
    gossip_ticks: u64,
    /// Anti-entropy messages to send once the current step is done.
    gossip: Vec<(u64, Gossip)>,
    /// Every hosted shard's Raft group.
    multi: MultiRaft<FileLog>,
    /// Every hosted shard's state outside Raft, by shard.
    replicas: BTreeMap<u32, Replica>,
    /// Shards whose applied index moved since their last anti-entropy
    /// round: the next rounds are theirs.
    gossip_moved: BTreeSet<u32>,
    /// Where the round-robin check of idle shards goes on from.
    scrub_cursor: u32,
    /// Shards whose anti-entropy may have queued messages.
    gossip_touched: BTreeSet<u32>,
    /// Shards with session reads waiting.
    session_waiting: BTreeSet<u32>,
    /// Shards whose leader here is catching up a learner.
    promoting: BTreeSet<u32>,
    stores: SharedStores,
    hlc: Hlc,
    compact_every: u64,
    compact_log_bytes: u64,
    /// Wall-clock milliseconds of the input being handled.
    now_ms: u64,
    /// Frames to send.
    outbox: VecDeque<(PeerId, Frame)>,
    /// Peer addresses learnt from admin requests, for the transport.
    new_peers: Vec<(u64, SocketAddr)>,
    recovered: u64,
    recovered_snapshots: Vec<u64>,
    /// The transport's queue to each peer, as last reported to
    /// [`set_queues`](Self::set_queues).
    queues: HashMap<u64, PeerStatus>,
    /// A failure that stops the node, reported by the next `drive`.
    fatal: Option<Error>,
    /// Frames sent by kind, and the transport's counters as last reported
    /// to [`set_transport`](Self::set_transport).
    traffic: Traffic,
    /// Each peer's clock offset, from probes.
    clocks: PeerClocks,
    /// Ticks since start (paces the clock probes and anti-entropy).
    ticks: u64,
}

/// Every this many gossip periods, one idle shard (applied index
/// unchanged) this node leads is checked by anti-entropy, one after
/// another: a bounded cost whatever the number of shards (a digest to
/// each peer every 2 s at the defaults), so bit rot in a quiet shard is
/// still found, within `IDLE_PERIODS` x the shards this node leads
/// periods.
const IDLE_PERIODS: u64 = 4;

/// Shards looked at, at most, to find the next idle one this node leads.
const IDLE_SCAN: usize = 64;

/// Largest Raft batch frame: a batch over it goes as several (a single
/// larger message goes alone, as it always did).
const MAX_BATCH_FRAME_BYTES: usize = 1024 * 1024;

/// The channel Raft batches travel on.
pub const RAFT_CHANNEL: ChannelId = ChannelId((1 << 20) + 3);

/// File in the data directory counting the node's starts: its
/// [`MultiConfig::incarnation`].
const INCARNATION_FILE: &str = "incarnation";

/// Reads, increments and durably writes back the start counter in
/// `dir`, so every start has a new incarnation (peers that see it change
/// know this node restarted and wake the shards it is in).
fn next_incarnation(dir: &std::path::Path) -> Result<u64, Error> {
    use std::io::Write as _;
    let path = dir.join(INCARNATION_FILE);
    let previous = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().unwrap_or(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(Error::File { path, source: e }),
    };
    // Above the wall clock in nanoseconds too, so that a lost or damaged
    // counter file still gives a start of its own (and above the last
    // value, so a clock set back does not repeat one).
    let wall_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let next = previous.saturating_add(1).max(wall_ns);
    let tmp = dir.join(format!("{INCARNATION_FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp).at(&tmp)?;
    file.write_all(next.to_string().as_bytes()).at(&tmp)?;
    file.sync_all().at(&tmp)?;
    std::fs::rename(&tmp, &path).at(&path)?;
    Ok(next)
}

/// The keys of `bucket`, as sent in anti-entropy repairs.
fn bucket_entries(store: &KvStore, bucket: u64) -> Vec<BucketEntry> {
    store
        .bucket_entries(bucket)
        .into_iter()
        .map(|(key, v)| BucketEntry {
            key,
            value: v.value,
            stamp: v.stamp,
            request: v.request,
        })
        .collect()
}

/// A client's write as the leader proposes it.
struct Proposal {
    session: u64,
    seq: u64,
    key: String,
    value: Bytes,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Running {
    async fn run(mut self, tick: Duration, mut stop: watch::Receiver<bool>) -> Result<(), Error> {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outcome = loop {
            tokio::select! {
                _ = stop.changed() => break Ok(()),
                _ = ticker.tick() => {
                    let stats = self.transport.stats();
                    self.core.set_transport(&stats);
                    self.core.set_queues(stats.queues.iter().map(|q| PeerStatus {
                        id: q.peer.0,
                        urgent_frames: q.urgent_frames as u64,
                        bulk_frames: q.bulk_frames as u64,
                        bulk_bytes: q.bulk_bytes as u64,
                        ..PeerStatus::default()
                    }));
                    self.core.handle_tick(wall_ms());
                }
                event = self.transport.recv() => match event {
                    Ok(event) => {
                        let now = wall_ms();
                        self.core.handle_event(now, event);
                        // Group commit: everything that arrived while the
                        // last round was persisting goes into this round,
                        // so its proposals share one append and one fsync.
                        for _ in 1..MAX_EVENTS_PER_ROUND {
                            let Some(event) = self.transport.try_recv() else { break };
                            self.core.handle_event(now, event);
                        }
                    }
                    Err(e) => break Err(Error::from(e)),
                },
            }
            // Raft messages go out before the round's fsync (a full queue
            // drops the frame, as in `flush`, and Raft sends it again); a
            // peer learnt in this round waits for `flush`, which adds it.
            let transport = &self.transport;
            let sent = self.core.drive_sending(&mut |to, frame| match transport
                .try_send(to, frame.clone())
            {
                Err(TcpError::UnknownPeer(_)) => Some(frame),
                _ => None,
            });
            if let Err(e) = sent {
                break Err(e);
            }
            self.flush();
        };
        self.transport.shutdown().await;
        outcome
    }

    /// Hands the core's output to the transport.
    fn flush(&mut self) {
        while let Some((id, addr)) = self.core.poll_new_peer() {
            self.transport.add_peer(PeerId(id), addr);
        }
        while let Some((to, frame)) = self.core.poll_transmit() {
            // Raft, gossip and clients all tolerate loss: a full queue or a
            // peer that is down drops the frame (and the transport counts it).
            let _ = self.transport.try_send(to, frame);
        }
    }
}

impl NodeCore {
    /// Opens (or creates) the node's logs in `config.data_dir`, replaying
    /// what is on disk, for a node that knows where `peers` listen.
    /// With `audit`, the stores count every application of every write
    /// (in memory only; the scenario's exactly-once check).
    pub fn open(
        config: &NodeConfig,
        peers: HashMap<u64, SocketAddr>,
        audit: bool,
    ) -> Result<Self, Error> {
        std::fs::create_dir_all(&config.data_dir).at(&config.data_dir)?;
        let mut members = Configuration::new(config.members.iter().map(|&m| NodeId(m)));
        if config.joining {
            members = members.with_learners([NodeId(config.id)]);
        }
        let mut multi_config = MultiConfig::new(NodeId(config.id));
        multi_config.incarnation = next_incarnation(&config.data_dir)?;
        multi_config.liveness_interval = config.liveness_ticks.max(1);
        multi_config.liveness_timeout = config.liveness_ticks.max(1).saturating_mul(3);
        let mut multi = MultiRaft::new(multi_config)?;
        let mut replicas = BTreeMap::new();
        let mut recovered = 0;
        let mut recovered_snapshots = Vec::new();
        let mut store = KvStore::default();
        if audit {
            store.enable_audit();
        }
        let mut stores = vec![store; config.shards as usize];
        for (shard, store) in (0..config.shards).zip(&mut stores) {
            if !config.hosts(shard) {
                continue;
            }
            let path = config.data_dir.join(format!("shard-{shard}.log"));
            let log = FileLog::open(&path, members.clone())?;
            recovered += log.recovered();
            recovered_snapshots.push(log.recovered_snapshot());
            // The node starts applying after the snapshot, so the store
            // must already hold everything the snapshot covers.
            if log.recovered_snapshot() > 0 {
                store.restore(log.snapshot()?.data)?;
            }
            let mut raft = Config::new(NodeId(config.id));
            raft.election_tick = config.election_ticks;
            raft.heartbeat_tick = (config.election_ticks / 5).max(1);
            raft.seed = 0x5eed ^ u64::from(shard).wrapping_mul(0x9E37_79B9);
            raft.pre_vote = true;
            raft.check_quorum = true;
            raft.max_snapshot_chunk_bytes = config.snapshot_chunk_bytes.max(1);
            multi.add_group(group_of(shard), Node::new(raft, log)?)?;
            replicas.insert(
                shard,
                Replica {
                    shard,
                    pending_writes: PendingWrites::default(),
                    pending_reads: HashMap::new(),
                    confirmed_reads: Vec::new(),
                    session_reads: Vec::new(),
                    anti_entropy: AntiEntropy::new(shard, config.id),
                    gossiped_at: None,
                    leader: None,
                    clocks_bounded: true,
                },
            );
        }

        Ok(NodeCore {
            peers,
            events: SharedEvents::default(),
            gossip_ticks: u64::from(config.gossip_ticks),
            gossip: Vec::new(),
            multi,
            replicas,
            gossip_moved: BTreeSet::new(),
            scrub_cursor: 0,
            gossip_touched: BTreeSet::new(),
            session_waiting: BTreeSet::new(),
            promoting: BTreeSet::new(),
            stores: Arc::new(Mutex::new(stores)),
            hlc: Hlc::default(),
            compact_every: config.compact_every,
            compact_log_bytes: config.compact_log_bytes,
            now_ms: 0,
            outbox: VecDeque::new(),
            new_peers: Vec::new(),
            recovered,
            recovered_snapshots,
            queues: HashMap::new(),
            fatal: None,
            traffic: Traffic::default(),
            clocks: PeerClocks::default(),
            ticks: 0,
        })
    }

    /// What the transport has queued for each peer (`status` shows it).
    pub fn set_queues(&mut self, queues: impl IntoIterator<Item = PeerStatus>) {
        self.queues = queues.into_iter().map(|q| (q.id, q)).collect();
    }

    /// The transport's counters, for [`traffic`](Self::traffic).
    pub fn set_transport(&mut self, stats: &TcpStats) {
        let t = &mut self.traffic;
        t.refused_hellos = stats.refused_hellos;
        t.peer_connections = stats.peer_connections as u64;
        t.client_connections = stats.client_connections as u64;
        t.accepted_connections = stats.accepted_connections as u64;
        t.idle_timeouts = stats.closed.idle_timeout;
        t.hello_timeouts = stats.closed.hello_timeout;
        t.max_connections = stats.closed.max_connections;
        t.client_frame = stats.closed.client_frame;
        t.buffered_bytes_limit = stats.closed.buffered_bytes;
        t.accept_errors = stats.accept_errors;
        t.dropped = stats.dropped;
        t.buffered_bytes = stats.buffered_bytes as u64;
    }

    /// Frames and bytes sent so far by kind, with the transport's counters
    /// (what `Request::Traffic` answers).
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// Its replicas' stores, indexed by shard.
    pub fn stores(&self) -> SharedStores {
        self.stores.clone()
    }

    /// What it did so far.
    pub fn events(&self) -> Vec<NodeEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<(PeerId, Frame)> {
        self.outbox.pop_front()
    }

    /// A peer address learnt from an admin request, for the transport.
    pub fn poll_new_peer(&mut self) -> Option<(u64, SocketAddr)> {
        self.new_peers.pop()
    }

    /// One tick of the Raft clocks, at wall-clock `now_ms`.
    pub fn handle_tick(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        self.on_tick();
    }

    /// A transport event at wall-clock `now_ms`.
    pub fn handle_event(&mut self, now_ms: u64, event: Event<PeerId, Frame>) {
        self.now_ms = now_ms;
        match event {
            Event::Message { from, msg } => self.on_frame(from, msg),
            Event::Connected(peer) if self.peers.contains_key(&peer.0) => {
                tracing::info!(peer = peer.0, addr = ?self.peers.get(&peer.0), "peer connected");
            }
            Event::Disconnected(peer) if self.peers.contains_key(&peer.0) => {
                tracing::info!(peer = peer.0, "peer disconnected");
            }
            Event::Connected(peer) => tracing::debug!(client = peer.0, "client connected"),
            Event::Disconnected(peer) => tracing::debug!(client = peer.0, "client disconnected"),
            other => tracing::debug!(?other, "transport event ignored"),
        }
    }

    fn on_frame(&mut self, from: PeerId, frame: Frame) {
        if frame.channel == ANTI_ENTROPY_CHANNEL {
            // Malformed gossip is dropped; the next round starts over.
            if let Ok(gossip) = Gossip::decode(frame.payload) {
                self.on_gossip(from.0, gossip);
            }
            return;
        }
        if frame.channel == CLOCK_CHANNEL {
            // Malformed probes are dropped; the next one comes in a second.
            if let Ok(probe) = Probe::decode(frame.payload) {
                self.on_probe(from.0, probe);
            }
            return;
        }
        if frame.channel == CLIENT_CHANNEL {
            // Malformed client requests are dropped; the client times out.
            if let Ok(request) = Envelope::<Request>::decode(frame.payload) {
                self.on_request(from, request);
            }
            return;
        }
        if frame.channel != RAFT_CHANNEL {
            tracing::debug!(
                peer = from.0,
                channel = frame.channel.0,
                "frame on no channel of ours"
            );
            return;
        }
        // Undecodable batches, and batches that claim another sender than
        // the connection's, change nothing.
        let batch = match codec::decode_batch(frame.payload, MAX_BATCH_MESSAGES) {
            Ok(batch) if batch.from.0 == from.0 => batch,
            Ok(batch) => {
                tracing::debug!(
                    peer = from.0,
                    claimed = batch.from.0,
                    "raft batch from an impostor"
                );
                return;
            }
            Err(e) => {
                tracing::debug!(peer = from.0, error = %e, "malformed raft batch");
                return;
            }
        };
        match self.multi.step(batch) {
            Ok(()) => {}
            // The log failed: the node stops rather than go on without it.
            Err(MultiError::Fatal { group, error }) => {
                tracing::error!(shard = group.0, %error, "raft storage failed; stopping");
                self.fatal = Some(Error::Raft(error.into()));
            }
            Err(e) => tracing::debug!(peer = from.0, error = %e, "raft batch refused"),
        }
    }

    /// Every member of any shard here but this node, in order.
    fn members(&self) -> Vec<u64> {
        self.multi.peers().map(|(id, _)| id.0).collect()
    }

    fn now_ns(&self) -> u64 {
        self.now_ms.saturating_mul(1_000_000)
    }

    fn send_probe(&mut self, to: u64, probe: Probe) {
        let frame = Frame::new(CLOCK_CHANNEL, probe.encode()).with_flags(Flags::URGENT);
        self.traffic.count(TrafficKind::Gossip, frame.payload.len());
        self.outbox.push_back((PeerId(to), frame));
    }

    fn on_probe(&mut self, from: u64, probe: Probe) {
        // Only members are probed and answered: a client's probes cost nothing.
        if !self.members().contains(&from) {
            return;
        }
        let now = self.now_ns();
        match probe {
            Probe::Ask { t1 } => {
                let answer = Probe::Answer {
                    t1,
                    t2: now,
                    t3: now,
                };
                self.send_probe(from, answer);
            }
            Probe::Answer { t1, t2, t3 } => {
                self.clocks.answer(from, t1, t2, t3, now);
            }
        }
    }

    /// Each peer's clock offset as this node estimates it now.
    pub fn clocks(&self) -> Vec<PeerClock> {
        let now = self.now_ns();
        self.members()
            .into_iter()
            .map(|peer| self.clocks.peer(peer, now))
            .collect()
    }

    fn reply(&mut self, to: PeerId, id: u64, body: Reply) {
        let frame = Frame::new(CLIENT_CHANNEL, Envelope { id, body }.encode());
        // A lost reply is a client timeout and a retry with the same id.
        self.traffic
            .count(TrafficKind::ClientReply, frame.payload.len());
        self.outbox.push_back((to, frame));
    }

    fn on_request(&mut self, from: PeerId, request: Envelope<Request>) {
        let id = request.id;
        let get = match request.body {
            Request::Status => {
                let status = self.status();
                self.reply(from, id, Reply::Status(status));
                return;
            }
            Request::Traffic => {
                self.reply(from, id, Reply::Traffic(Box::new(self.traffic)));
                return;
            }
            Request::Clocks => {
                self.reply(from, id, Reply::Clocks(self.clocks()));
                return;
            }
            Request::LeafHashes { shard } => {
                let reply = self.with_store(shard, |s| Reply::LeafHashes(s.leaf_hashes()));
                self.reply(from, id, reply);
                return;
            }
            Request::Bucket { shard, bucket } => {
                let reply = self.with_store(shard, |s| Reply::Bucket(bucket_entries(s, bucket)));
                self.reply(from, id, reply);
                return;
            }
            Request::AddPeer { id: peer, addr } => {
                let reply = match addr.parse::<SocketAddr>() {
                    Ok(addr) => {
                        self.new_peers.push((peer, addr));
                        self.peers.insert(peer, addr);
                        Reply::Accepted
                    }
                    Err(e) => Reply::Refused(format!("address {addr:?}: {e}")),
                };
                self.reply(from, id, reply);
                return;
            }
            Request::AddVoter { shard, id: server } => {
                let reply = self.change_membership(shard, server, true);
                self.reply(from, id, reply);
                return;
            }
            Request::RemoveMember { shard, id: server } => {
                let reply = self.change_membership(shard, server, false);
                self.reply(from, id, reply);
                return;
            }
            Request::RegisterSession { shard } => {
                self.propose_write(from, id, shard, None);
                return;
            }
            Request::Txn { shard, command } => {
                self.propose_txn(from, id, shard, command);
                return;
            }
            Request::Put {
                shard,
                session,
                seq,
                key,
                value,
            } => {
                let write = Proposal {
                    session,
                    seq,
                    key,
                    value,
                };
                self.propose_write(from, id, shard, Some(write));
                return;
            }
            Request::Get {
                shard,
                key,
                consistency,
                token,
            } => (shard, key, consistency, token),
        };
        let (shard, key, consistency, token) = get;
        let not_leader = self.not_leader(shard);
        let now_ms = self.now_ms;
        // Only lease reads rest on the peers' clocks.
        let clocks = if consistency == Consistency::Lease {
            self.clocks()
        } else {
            Vec::new()
        };
        let Some(replica) = self.replicas.get_mut(&shard) else {
            self.reply(from, id, Reply::NoSuchShard);
            return;
        };
        let group = group_of(shard);
        let reply = match consistency {
            Consistency::Any | Consistency::Session => {
                let applied = self.multi.group(group).map_or(0, |n| n.applied_index().0);
                let stale = consistency == Consistency::Any;
                if stale || applied >= token {
                    let stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
                    value_reply(stores.get(shard as usize), &key, applied, stale)
                } else if replica.session_reads.len() < MAX_SESSION_READS {
                    replica.session_reads.push(SessionRead {
                        client: from,
                        id,
                        key,
                        token,
                        deadline_ms: now_ms.saturating_add(SESSION_READ_WAIT_MS),
                    });
                    self.session_waiting.insert(shard);
                    return;
                } else {
                    Reply::Behind { applied, token }
                }
            }
            Consistency::Linearizable | Consistency::Lease => {
                let lease = consistency == Consistency::Lease;
                let Some(mut node) = self.multi.group_mut(group) else {
                    self.reply(from, id, Reply::NoSuchShard);
                    return;
                };
                if node.role() != Role::Leader {
                    not_leader
                } else if lease && !clocks_bounded(replica, &node, &clocks) {
                    Reply::LeaseUnavailable
                } else {
                    let outcome = if lease {
                        match node.read_lease(id) {
                            // A leader that was quiet (or just elected)
                            // holds no lease until a quorum answers its
                            // heartbeats: a ReadIndex read is at least as
                            // fresh as a lease read, so it serves this one.
                            Err(quorate_raft_core::Error::LeaseUnavailable) => {
                                tracing::debug!(
                                    shard,
                                    "no lease (quiet leader): read index instead"
                                );
                                node.read_index(id)
                            }
                            other => other,
                        }
                    } else {
                        node.read_index(id)
                    };
                    match outcome {
                        Ok(()) => {
                            replica.pending_reads.insert(id, (from, key));
                            return;
                        }
                        Err(
                            quorate_raft_core::Error::LeaseUnavailable
                            | quorate_raft_core::Error::NoCommitInTerm { .. },
                        ) if consistency == Consistency::Lease => {
                            tracing::debug!(shard, "lease read refused: no lease");
                            Reply::LeaseUnavailable
                        }
                        Err(_) => not_leader,
                    }
                }
            }
        };
        self.reply(from, id, reply);
    }

    /// On `shard`'s leader, proposes a session registration (`write`
    /// none) or a write, and answers once it is applied. A retry of a
    /// write this leader applied is answered at once; a retry of one it
    /// proposed waits for that entry.
    fn propose_write(&mut self, from: PeerId, id: u64, shard: u32, write: Option<Proposal>) {
        if write.as_ref().is_some_and(|w| w.seq == 0) {
            // Every seq is at or below a new session's 0: it would be
            // answered as a retry without ever being applied.
            let reason = "sequence numbers start at 1".to_owned();
            self.reply(from, id, Reply::Refused(reason));
            return;
        }
        let applied = write.as_ref().is_some_and(|w| {
            let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
            let store = stores.get_mut(shard as usize);
            store.is_some_and(|s| {
                let applied = s.is_applied(w.session, w.seq);
                if applied {
                    s.note_retry_answered();
                }
                applied
            })
        });
        let stamp = self.stamp();
        let Some(leading) = self.leading(from, id, shard) else {
            return;
        };
        if applied {
            // A retry of an applied write: answer, do not apply again. The
            // write's entry is at or below the applied index.
            let index = leading.applied;
            self.reply(from, id, Reply::Written { index });
            return;
        }
        let (command, key) = match write {
            None => (Command::RegisterSession { stamp }, None),
            Some(w) => {
                let key = (w.session, w.seq);
                let replica = self.replicas.get_mut(&shard);
                if replica.is_some_and(|r| r.pending_writes.retry(key, from, id)) {
                    return;
                }
                let command = Command::Put {
                    session: w.session,
                    seq: w.seq,
                    request: id,
                    stamp,
                    key: w.key,
                    value: w.value,
                };
                (command, Some(key))
            }
        };
        self.propose_waiting(from, id, shard, leading.term, command, key);
    }

    /// On `shard`'s leader, proposes a transaction step and answers once
    /// it is applied (every step is idempotent: a retry proposes again).
    fn propose_txn(&mut self, from: PeerId, id: u64, shard: u32, command: TxnCommand) {
        let stamp = self.stamp();
        let Some(leading) = self.leading(from, id, shard) else {
            return;
        };
        let command = Command::Txn { stamp, command };
        self.propose_waiting(from, id, shard, leading.term, command, None);
    }

    /// A timestamp for a proposal: the HLC's next, or its last if the
    /// clock refuses to move.
    fn stamp(&mut self) -> u64 {
        match self.hlc.now(self.now_ms) {
            Ok(t) => t.as_u64(),
            Err(_) => self.hlc.last().as_u64(),
        }
    }

    /// Where this node leads `shard`'s group; otherwise answers `from`'s
    /// request `id` (no such shard, or not the leader) and returns `None`.
    fn leading(&mut self, from: PeerId, id: u64, shard: u32) -> Option<Leading> {
        let not_leader = self.not_leader(shard);
        let (Some(_), Some(node)) = (self.replicas.get(&shard), self.multi.group(group_of(shard)))
        else {
            self.reply(from, id, Reply::NoSuchShard);
            return None;
        };
        if node.role() != Role::Leader {
            self.reply(from, id, not_leader);
            return None;
        }
        Some(Leading {
            term: node.term().0,
            applied: node.applied_index().0,
        })
    }

    /// Proposes `command` to `shard`'s group as its leader in `term`, and
    /// has `from`'s request `id` answered once it is applied (`write`: the
    /// write's `(session, seq)`, if it is one).
    fn propose_waiting(
        &mut self,
        from: PeerId,
        id: u64,
        shard: u32,
        term: u64,
        command: Command,
        write: Option<(u64, u64)>,
    ) {
        let not_leader = self.not_leader(shard);
        match self.multi.propose(group_of(shard), command.encode()) {
            Ok(index) => {
                let waiter = Waiter {
                    term,
                    client: from,
                    id,
                    write,
                };
                if let Some(replica) = self.replicas.get_mut(&shard) {
                    replica.pending_writes.insert(index.0, waiter);
                }
            }
            Err(_) => self.reply(from, id, not_leader),
        }
    }

    /// The answer to a request for `shard` this node cannot serve: the
    /// leader it knows of and, so clients can reach servers that joined
    /// after they started, where that leader listens.
    fn not_leader(&self, shard: u32) -> Reply {
        let hint = self
            .multi
            .group(group_of(shard))
            .and_then(Node::leader)
            .map_or(0, |l| l.0);
        let addr = self
            .peers
            .get(&hint)
            .map(ToString::to_string)
            .unwrap_or_default();
        Reply::NotLeader { hint, addr }
    }

    /// Adds `server` to `shard` as a voter once it has caught up, or
    /// removes it; only the shard's leader can.
    fn change_membership(&mut self, shard: u32, server: u64, add: bool) -> Reply {
        let not_leader = self.not_leader(shard);
        let Some(mut node) = self.multi.group_mut(group_of(shard)) else {
            return Reply::NoSuchShard;
        };
        if node.role() != Role::Leader {
            return not_leader;
        }
        let outcome = if add {
            node.add_voter(NodeId(server))
        } else {
            node.remove_member(NodeId(server)).map(|_| ())
        };
        drop(node);
        match outcome {
            Ok(()) => {
                if add {
                    self.promoting.insert(shard);
                    self.note(NodeEvent::LearnerAdded { shard, id: server });
                }
                Reply::Accepted
            }
            Err(e) => Reply::Refused(e.to_string()),
        }
    }

    fn note(&self, event: NodeEvent) {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        events.push(event);
    }

    /// One tick: the Raft groups whose timers are due act (the others
    /// cost nothing), clock probes go out every [`PROBE_TICKS`], and every
    /// gossip period the shards whose applied index moved since their last
    /// round start one (and every [`IDLE_PERIODS`], one idle shard in turn).
    fn on_tick(&mut self) {
        self.multi.tick();
        self.ticks += 1;
        if self.gossip_ticks > 0 && self.ticks.is_multiple_of(self.gossip_ticks) {
            let moved = std::mem::take(&mut self.gossip_moved);
            let mut started = 0;
            for shard in moved {
                started += usize::from(self.start_round(shard, false));
            }
            // Idle shards, round robin from where the last check stopped.
            let mut idle_rounds = 0;
            if (self.ticks / self.gossip_ticks).is_multiple_of(IDLE_PERIODS) {
                let after = self.scrub_cursor;
                let order: Vec<u32> = self
                    .replicas
                    .range(after.saturating_add(1)..)
                    .chain(self.replicas.range(..=after))
                    .map(|(&shard, _)| shard)
                    .take(IDLE_SCAN)
                    .collect();
                for shard in order {
                    self.scrub_cursor = shard;
                    if self.start_round(shard, true) {
                        idle_rounds += 1;
                        break;
                    }
                }
            }
            if started + idle_rounds > 0 {
                tracing::trace!(started, idle_rounds, "anti-entropy rounds");
            }
        }
        if self.ticks % PROBE_TICKS == 1 {
            let t1 = self.now_ns();
            for peer in self.members() {
                let probe = self.clocks.ask(peer, t1);
                self.send_probe(peer, probe);
            }
        }
        // Session reads whose replica stayed behind their token: the
        // client tries another replica.
        let now_ms = self.now_ms;
        let mut behind = Vec::new();
        let waiting: Vec<u32> = self.session_waiting.iter().copied().collect();
        for shard in waiting {
            let applied = self
                .multi
                .group(group_of(shard))
                .map_or(0, |n| n.applied_index().0);
            let Some(r) = self.replicas.get_mut(&shard) else {
                self.session_waiting.remove(&shard);
                continue;
            };
            r.session_reads.retain(|read| {
                if now_ms < read.deadline_ms {
                    return true;
                }
                let reply = Reply::Behind {
                    applied,
                    token: read.token,
                };
                behind.push((read.client, read.id, reply));
                false
            });
            if r.session_reads.is_empty() {
                self.session_waiting.remove(&shard);
            }
        }
        for (client, id, reply) in behind {
            self.reply(client, id, reply);
        }
    }

    /// Starts an anti-entropy round of `shard` if this node leads it and
    /// its applied index moved since its last round (or, `idle`, even if
    /// not: the periodic check of quiet shards). Whether it started one.
    fn start_round(&mut self, shard: u32, idle: bool) -> bool {
        let Some(node) = self.multi.group(group_of(shard)) else {
            return false;
        };
        let Some(r) = self.replicas.get_mut(&shard) else {
            return false;
        };
        let (term, applied) = (node.term().0, node.applied_index().0);
        let moved = r.gossiped_at != Some(applied);
        if node.role() != Role::Leader || !(moved || idle) {
            return false;
        }
        let stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(store) = stores.get(shard as usize) else {
            return false;
        };
        r.anti_entropy.tick_to(self.ticks);
        r.anti_entropy
            .start_round(term, applied, store.leaf_hashes(), &others(node));
        r.gossiped_at = Some(applied);
        self.gossip_touched.insert(shard);
        true
    }

    fn on_gossip(&mut self, from: u64, gossip: Gossip) {
        let shard = gossip.shard();
        let (Some(r), Some(node)) = (
            self.replicas.get_mut(&shard),
            self.multi.group(group_of(shard)),
        ) else {
            return;
        };
        let (voters, others) = (voters(node), others(node));
        let view = View {
            term: node.term().0,
            leader: node.leader().map(|l| l.0),
            applied: node.applied_index().0,
            voters: &voters,
            others: &others,
        };
        r.anti_entropy.tick_to(self.ticks);
        self.gossip_touched.insert(shard);
        let applied = view.applied;
        let asked_before = r.anti_entropy.asked().len();
        let action = r.anti_entropy.handle(from, gossip, view);
        let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        let store = stores.get_mut(shard as usize);
        let mut repaired = None;
        match (action, store) {
            (Action::None, _) | (_, None) => {}
            (Action::TakeDigest(round), Some(store)) => {
                r.anti_entropy.digest_taken(round, store.leaf_hashes());
            }
            (Action::ServeBucket { to, bucket }, Some(store)) => {
                let answer = Gossip::Bucket {
                    shard,
                    bucket,
                    index: applied,
                    entries: bucket_entries(store, bucket),
                };
                self.gossip.push((to, answer));
            }
            (
                Action::Install {
                    source,
                    bucket,
                    entries,
                },
                Some(store),
            ) => {
                let keys = entries.len();
                install_bucket(store, bucket, entries);
                repaired = Some(NodeEvent::Repaired {
                    shard,
                    index: applied,
                    bucket,
                    source,
                    keys,
                });
            }
        }
        drop(stores);
        let diverged: Vec<NodeEvent> = r
            .anti_entropy
            .asked()
            .into_iter()
            .skip(asked_before)
            .map(|d| NodeEvent::Diverged {
                shard,
                index: d.round.index,
                bucket: d.bucket,
                source: d.source,
            })
            .collect();
        for event in diverged.into_iter().chain(repaired) {
            self.note(event);
        }
    }

    /// Sends the queued anti-entropy messages.
    fn flush_gossip(&mut self) {
        let mut out = std::mem::take(&mut self.gossip);
        for shard in std::mem::take(&mut self.gossip_touched) {
            if let Some(r) = self.replicas.get_mut(&shard) {
                out.extend(r.anti_entropy.drain_transmits());
            }
        }
        for (to, gossip) in out {
            let frame = Frame::new(ANTI_ENTROPY_CHANNEL, gossip.encode());
            // Lost gossip only delays a repair to a later round.
            self.traffic.count(TrafficKind::Gossip, frame.payload.len());
            self.outbox.push_back((PeerId(to), frame));
        }
    }

    /// Runs `f` on the replica of `shard`'s store, or answers NoSuchShard.
    fn with_store(&self, shard: u32, f: impl FnOnce(&mut KvStore) -> Reply) -> Reply {
        let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        stores.get_mut(shard as usize).map_or(Reply::NoSuchShard, f)
    }

    /// The state of every replica on this node, as `status` reports it.
    pub fn status(&self) -> Vec<ShardStatus> {
        let stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        let ids = |set: &BTreeSet<NodeId>| set.iter().map(|n| n.0).collect();
        self.replicas
            .keys()
            .filter_map(|&shard| {
                let node = self.multi.group(group_of(shard))?;
                Some((shard, node, stores.get(shard as usize)?))
            })
            .map(|(shard, node, s)| ShardStatus {
                shard,
                leader: node.leader().map_or(0, |l| l.0),
                term: node.term().0,
                commit: node.commit_index().0,
                applied: node.applied_index().0,
                keys: s.len() as u64,
                root: s.merkle_tree().root().0.0,
                voters: ids(node.configuration().voters()),
                learners: ids(node.configuration().learners()),
                peers: others(node)
                    .into_iter()
                    .map(|id| {
                        let progress = node.progress(NodeId(id));
                        let queue = self.queues.get(&id).copied().unwrap_or_default();
                        PeerStatus {
                            id,
                            matched: progress.map_or(0, |p| p.match_index.0),
                            next: progress.map_or(0, |p| p.next_index.0),
                            ..queue
                        }
                    })
                    .collect(),
                quiesced: node.is_quiesced(),
            })
            .collect()
    }

    /// The multi-raft layer's counters (batches, beats, group ticks,
    /// quiescences), for tests and the simulation.
    pub fn multi_stats(&self) -> quorate_raft_core::multi::MultiStats {
        self.multi.stats()
    }

    /// Persists, sends and applies everything the replicas have ready:
    /// call after every input, before draining the transmits.
    pub fn drive(&mut self) -> Result<(), Error> {
        self.drive_sending(&mut |_, frame| Some(frame))
    }

    /// [`drive`](Self::drive), handing each Ready's messages to `send` as
    /// soon as they are made, before the Ready is persisted: followers
    /// append while the leader's own write is in flight (Raft allows it:
    /// the leader counts itself only once its entries are durable, and
    /// replies that assert durability wait inside the Raft node). `send`
    /// hands back a frame it did not take; that frame stays queued for
    /// [`poll_transmit`](Self::poll_transmit).
    pub fn drive_sending(
        &mut self,
        send: &mut dyn FnMut(PeerId, Frame) -> Option<Frame>,
    ) -> Result<(), Error> {
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        let mut replies = Vec::new();
        // Per replica: anti-entropy repairs due at an index reached.
        let mut repairs_due = Vec::new();
        let mut promotions = Vec::new();
        let mut abandoned = Vec::new();
        // Only the groups an input touched are looked at; their messages
        // are in the per-peer batches once their Ready is taken.
        let mut readies = VecDeque::new();
        while let Some(ready) = self.multi.ready()? {
            readies.push_back(ready);
        }
        // Raft messages go out before the round's fsyncs, coalesced over
        // every group that had something to say.
        self.transmit(send);
        while let Some((group, mut ready)) = readies.pop_front() {
            let Ok(shard) = u32::try_from(group.0) else {
                continue;
            };
            let _shard = tracing::info_span!("shard", shard).entered();
            let (Some(r), Some(mut node)) =
                (self.replicas.get_mut(&shard), self.multi.group_mut(group))
            else {
                continue;
            };
            if let Some(snapshot) = ready.take_snapshot() {
                // Durable before the store changes and before `advance`
                // lets the node acknowledge it to the leader.
                let (index, data) = (snapshot.meta.index.0, snapshot.data.clone());
                node.storage_mut().install(snapshot)?;
                let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(store) = stores.get_mut(shard as usize) {
                    store.install(index, data)?;
                }
            }
            node.storage_mut()
                .persist(ready.entries(), ready.hard_state())?;
            drop(node);
            let committed = ready.take_committed_entries();
            if !committed.is_empty() {
                self.gossip_moved.insert(shard);
                self.gossip_touched.insert(shard);
                let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
                for entry in committed {
                    let (index, term) = (entry.index.0, entry.term.0);
                    // Configuration entries are Raft's, and empty
                    // entries are the leaders' no-ops.
                    let command = match entry.configuration() {
                        Some(_) => None,
                        None => Command::decode(entry.data).ok(),
                    };
                    if let Some(command) = command {
                        let _ = self
                            .hlc
                            .update(HlcTimestamp::from_u64(command.stamp()), self.now_ms);
                        let applied = stores
                            .get_mut(shard as usize)
                            .map(|store| store.apply(index, command));
                        if let Some(w) = r.pending_writes.take(index, term)
                            && let Some(applied) = applied
                        {
                            replies.push((w.client, w.id, applied.reply(index)));
                        }
                    }
                    // The store is exactly at `index` now, until the
                    // next entry: the moment a round or a repair at
                    // `index` waits for.
                    let store = stores.get_mut(shard as usize);
                    at_index(r, store, index, &mut repairs_due);
                }
            }
            r.confirmed_reads.extend(ready.take_read_states());
            self.multi.advance(group, ready)?;
            let Some(mut node) = self.multi.group_mut(group) else {
                continue;
            };
            let leader = node.leader().map(|l| (l.0, node.term().0));
            if leader.map(|l| l.0) != r.leader.map(|l| l.0) {
                match leader {
                    Some((id, term)) => tracing::info!(leader = id, term, "leader changed"),
                    None => tracing::info!(term = node.term().0, "no leader"),
                }
                r.leader = leader;
            }
            while let Some(outcome) = node.poll_promotion() {
                promotions.push((shard, outcome));
            }
            if node.role() != Role::Leader {
                // Leadership moved (or this server was removed): send the
                // waiting clients on now rather than after their timeout.
                // A write may still commit; its retry carries the same
                // session and sequence number, so it applies once either way.
                let writes = r.pending_writes.drain();
                let reads = r
                    .pending_reads
                    .drain()
                    .map(|(id, (client, _))| (client, id));
                let waiting: Vec<(PeerId, u64)> = writes.chain(reads).collect();
                if !waiting.is_empty() {
                    r.confirmed_reads.clear();
                    abandoned.push((shard, waiting));
                }
            }
            let applied = node.applied_index();
            let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
            // A snapshot may have brought the store to a round's index.
            let store = stores.get_mut(shard as usize);
            at_index(r, store, applied.0, &mut repairs_due);
            self.gossip_touched.insert(shard);
            let store = stores.get(shard as usize);
            // The store reflects exactly the entries up to `applied` here.
            let compacted = node.storage().snapshot_meta()?.index;
            let by_count = self.compact_every > 0 && applied.0 >= compacted.0 + self.compact_every;
            let by_size = self.compact_log_bytes > 0
                && applied > compacted
                && node.storage().wants_compaction(self.compact_log_bytes);
            if let Some(store) = store
                && (by_count || by_size)
            {
                node.storage_mut().compact(applied, store.snapshot())?;
            }
            drop(node);
            r.confirmed_reads.retain(|read| {
                if read.index > applied {
                    return true;
                }
                if let Some((client, key)) = r.pending_reads.remove(&read.id) {
                    replies.push((client, read.id, value_reply(store, &key, applied.0, false)));
                }
                false
            });
            r.session_reads.retain(|read| {
                if read.token > applied.0 {
                    return true;
                }
                let reply = value_reply(store, &read.key, applied.0, false);
                replies.push((read.client, read.id, reply));
                false
            });
            drop(stores);
            // What this group's fsync released (acknowledgments held
            // until its entries were durable) leaves now, not after
            // the other groups' fsyncs.
            while let Some(ready) = self.multi.ready()? {
                readies.push_back(ready);
            }
            self.transmit(send);
        }
        // Catch-ups end on ticks too (a lagging learner is given up on).
        for shard in std::mem::take(&mut self.promoting) {
            let Some(mut node) = self.multi.group_mut(group_of(shard)) else {
                continue;
            };
            while let Some(outcome) = node.poll_promotion() {
                promotions.push((shard, outcome));
            }
            if node.role() == Role::Leader && node.catching_up().next().is_some() {
                self.promoting.insert(shard);
            }
        }
        while let Some(event) = self.multi.poll_event() {
            match event {
                MultiEvent::PeerDown(peer) => {
                    tracing::info!(
                        peer = peer.0,
                        "peer down: no batch within the liveness timeout; waking its shards"
                    );
                }
                MultiEvent::PeerUp(peer) => {
                    tracing::info!(peer = peer.0, "peer up again; waking its shards");
                }
                MultiEvent::PeerRestarted(peer) => {
                    tracing::info!(
                        peer = peer.0,
                        "peer restarted (new incarnation); waking its shards"
                    );
                }
                other => tracing::info!(?other, "multi-raft event"),
            }
        }
        for (to, id, body) in replies {
            self.reply(to, id, body);
        }
        for (shard, waiting) in abandoned {
            let not_leader = self.not_leader(shard);
            for (client, id) in waiting {
                self.reply(client, id, not_leader.clone());
            }
        }
        for (shard, outcome) in promotions {
            self.note(NodeEvent::Promotion { shard, outcome });
        }
        for (shard, index, source, bucket, keys) in repairs_due {
            self.note(NodeEvent::Repaired {
                shard,
                index,
                bucket,
                source,
                keys,
            });
        }
        self.transmit(send);
        self.flush_gossip();
        Ok(())
    }

    /// Encodes the batches the groups made, one per peer (split into an
    /// urgent and a bulk frame, and at [`MAX_BATCH_FRAME_BYTES`]), and
    /// hands them to `send`; what it does not take waits in the outbox.
    fn transmit(&mut self, send: &mut dyn FnMut(PeerId, Frame) -> Option<Frame>) {
        while let Some(batch) = self.multi.poll_transmit() {
            let to = PeerId(batch.to.0);
            for frame in batch_frames(batch, &mut self.traffic) {
                if let Some(frame) = send(to, frame) {
                    self.outbox.push_back((to, frame));
                }
            }
        }
    }
}

/// Adds `frames` frames and `bytes` bytes to `kind` in `traffic`.
fn count_traffic(traffic: &mut Traffic, kind: TrafficKind, frames: u64, bytes: u64) {
    let i = TrafficKind::ALL.iter().position(|&k| k == kind);
    if let Some(c) = i.and_then(|i| traffic.sent.get_mut(i)) {
        c.frames += frames;
        c.bytes += bytes;
    }
}

/// The transport's frame header, as [`Traffic`] counts it.
const FRAME_HEADER: u64 = 9;

/// A batch's frames: its control messages (urgent: votes, heartbeats,
/// answers) and its bulk messages (appends with entries, snapshots,
/// forwards) apart, so that control traffic never waits behind bulk, each
/// cut at [`MAX_BATCH_FRAME_BYTES`] and [`MAX_BATCH_MESSAGES`]; an empty
/// batch (a liveness beat) is one urgent frame. [`Traffic`] counts each
/// Raft message as one frame of its kind (a beat as a heartbeat), and
/// every byte on the wire once: a frame's header and batch header go to
/// its first message's kind.
fn batch_frames(batch: Batch, traffic: &mut Traffic) -> Vec<Frame> {
    let Batch {
        from,
        to,
        incarnation,
        messages,
    } = batch;
    let encode = |messages: Vec<(GroupId, Message)>, flags: Flags| {
        let batch = Batch {
            from,
            to,
            incarnation,
            messages,
        };
        let mut buf = BytesMut::new();
        codec::encode_batch(&batch, &mut buf);
        Frame::new(RAFT_CHANNEL, buf.freeze()).with_flags(flags)
    };
    let overhead = BATCH_HEADER_LEN as u64 + FRAME_HEADER;
    if messages.is_empty() {
        count_traffic(traffic, TrafficKind::Heartbeat, 1, overhead);
        return vec![encode(Vec::new(), Flags::URGENT)];
    }
    let (urgent, bulk): (Vec<_>, Vec<_>) = messages
        .into_iter()
        .partition(|(_, m)| raft_flags(&m.body) == Flags::URGENT);
    let mut frames = Vec::new();
    for (flags, part) in [(Flags::URGENT, urgent), (Flags::NONE, bulk)] {
        let mut chunk: Vec<(GroupId, Message)> = Vec::new();
        let mut size = BATCH_HEADER_LEN;
        for (group, m) in part {
            let len = codec::batched_len(group, &m);
            if !chunk.is_empty()
                && (size + len > MAX_BATCH_FRAME_BYTES || chunk.len() >= MAX_BATCH_MESSAGES)
            {
                frames.push(encode(std::mem::take(&mut chunk), flags));
                size = BATCH_HEADER_LEN;
            }
            let kind = traffic_kind(&m.body);
            let first = if chunk.is_empty() { overhead } else { 0 };
            count_traffic(traffic, kind, 1, len as u64 + first);
            size += len;
            chunk.push((group, m));
        }
        if !chunk.is_empty() {
            frames.push(encode(chunk, flags));
        }
    }
    frames
}

/// Raft's control traffic (elections, heartbeats, acknowledgments) is
/// urgent: the transport sends it ahead of queued appends, snapshots and
/// gossip, so a bulk backlog cannot make check-quorum depose a leader.
fn raft_flags(body: &MessageBody) -> Flags {
    match body {
        MessageBody::AppendEntries { entries, .. } if !entries.is_empty() => Flags::NONE,
        MessageBody::InstallSnapshot { .. } | MessageBody::ForwardedProposal { .. } => Flags::NONE,
        _ => Flags::URGENT,
    }
}

/// How [`Traffic`] counts a Raft message.
fn traffic_kind(body: &MessageBody) -> TrafficKind {
    match body {
        MessageBody::AppendEntries { entries, .. } if !entries.is_empty() => TrafficKind::Append,
        MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } => TrafficKind::Heartbeat,
        MessageBody::RequestVote { .. } | MessageBody::PreVote { .. } | MessageBody::TimeoutNow => {
            TrafficKind::Vote
        }
        MessageBody::InstallSnapshot { .. } => TrafficKind::Snapshot,
        MessageBody::ForwardedProposal { .. } => TrafficKind::Forward,
        MessageBody::RequestVoteResponse { .. }
        | MessageBody::PreVoteResponse { .. }
        | MessageBody::AppendEntriesResponse { .. }
        | MessageBody::InstallSnapshotResponse { .. }
        | MessageBody::HeartbeatResponse { .. } => TrafficKind::Response,
        // Kinds raft-core adds later count with the responses until named here.
        _ => TrafficKind::Response,
    }
}

/// Anti-entropy work due with `store` exactly at applied `index`: the
/// replica's reply to a round at `index`, and repairs parked for it.
fn at_index(
    r: &mut Replica,
    store: Option<&mut KvStore>,
    index: u64,
    repairs_due: &mut Vec<(u32, u64, u64, u64, usize)>,
) {
    let Some(store) = store else {
        return;
    };
    if let Some(round) = r.anti_entropy.wants_digest_at(index) {
        r.anti_entropy.digest_taken(round, store.leaf_hashes());
    }
    for (source, bucket, entries) in r.anti_entropy.due(index) {
        repairs_due.push((r.shard, index, source, bucket, entries.len()));
        install_bucket(store, bucket, entries);
    }
}

/// Replaces `bucket` of `store` with a repair's `entries`.
fn install_bucket(store: &mut KvStore, bucket: u64, entries: Vec<BucketEntry>) {
    let entries = entries
        .into_iter()
        // Keys the source put in the wrong bucket are not taken.
        .filter(|e| KvStore::bucket(&e.key) == bucket)
        .map(|e| {
            let v = Versioned {
                value: e.value,
                stamp: e.stamp,
                request: e.request,
            };
            (e.key, v)
        })
        .collect();
    store.replace_bucket(bucket, entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_few_open_files_for_the_shard_logs_is_refused_up_front() {
        let refused = check_open_files(1024, 1024);
        assert!(
            matches!(
                refused,
                Err(Error::TooFewFileDescriptors {
                    shards: 1024,
                    needed: 1040,
                    limit: 1024
                })
            ),
            "{refused:?}"
        );
        assert!(check_open_files(1024, 1040).is_ok());
        assert!(check_open_files(2, 20_000).is_ok());
    }

    #[test]
    fn every_start_has_a_new_incarnation() {
        let dir = std::env::temp_dir().join(format!(
            "quorate-incarnation-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let first = next_incarnation(&dir).unwrap();
        let second = next_incarnation(&dir).unwrap();
        // A counter file that went bad still yields a new one.
        std::fs::write(dir.join(INCARNATION_FILE), "garbage").unwrap();
        let third = next_incarnation(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(first < second, "{first} then {second}");
        assert_ne!(third, second);
    }

    #[test]
    fn an_empty_batch_is_one_urgent_beat_and_counted_once() {
        let mut traffic = Traffic::default();
        let beat = Batch {
            from: NodeId(1),
            to: NodeId(2),
            incarnation: 7,
            messages: Vec::new(),
        };
        let frames = batch_frames(beat.clone(), &mut traffic);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].flags, Flags::URGENT);
        assert_eq!(frames[0].channel, RAFT_CHANNEL);
        let decoded = codec::decode_batch(frames[0].payload.clone(), 1).unwrap();
        assert_eq!(decoded, beat);
        let counted = traffic.get(TrafficKind::Heartbeat);
        assert_eq!(counted.frames, 1);
        assert_eq!(counted.bytes, frames[0].payload.len() as u64 + FRAME_HEADER);
    }

    #[test]
    fn control_and_bulk_messages_travel_apart_and_every_byte_is_counted() {
        let message = |body| Message {
            from: NodeId(1),
            to: NodeId(2),
            term: quorate_raft_core::Term(3),
            body,
        };
        let heartbeat = message(MessageBody::Heartbeat {
            commit: quorate_raft_core::LogIndex(4),
            round: 1,
            quiesce: false,
        });
        let append = message(MessageBody::AppendEntries {
            prev_log_index: quorate_raft_core::LogIndex(4),
            prev_log_term: quorate_raft_core::Term(3),
            entries: vec![quorate_raft_core::Entry {
                term: quorate_raft_core::Term(3),
                index: quorate_raft_core::LogIndex(5),
                data: Bytes::from_static(b"put"),
            }],
            leader_commit: quorate_raft_core::LogIndex(4),
        });
        let batch = Batch {
            from: NodeId(1),
            to: NodeId(2),
            incarnation: 7,
            messages: vec![
                (GroupId(0), append.clone()),
                (GroupId(1), heartbeat.clone()),
                (GroupId(2), heartbeat.clone()),
            ],
        };
        let mut traffic = Traffic::default();
        let frames = batch_frames(batch, &mut traffic);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].flags, Flags::URGENT);
        assert_eq!(frames[1].flags, Flags::NONE);
        let urgent = codec::decode_batch(frames[0].payload.clone(), 10).unwrap();
        assert_eq!(
            urgent.messages,
            vec![(GroupId(1), heartbeat.clone()), (GroupId(2), heartbeat)]
        );
        let bulk = codec::decode_batch(frames[1].payload.clone(), 10).unwrap();
        assert_eq!(bulk.messages, vec![(GroupId(0), append)]);
        let wire: u64 = frames
            .iter()
            .map(|f| f.payload.len() as u64 + FRAME_HEADER)
            .sum();
        assert_eq!(traffic.between_nodes().bytes, wire);
        assert_eq!(traffic.get(TrafficKind::Heartbeat).frames, 2);
        assert_eq!(traffic.get(TrafficKind::Append).frames, 1);
    }
}
