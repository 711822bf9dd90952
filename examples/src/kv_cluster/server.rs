//! One kv-cluster node: a replica of every shard (each shard its own Raft
//! group over the same three nodes), all on one TCP transport, one channel
//! per shard for Raft and one for clients.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use quorate_clocks::{Hlc, HlcTimestamp};
use quorate_raft_core::{Config, Configuration, Node, NodeId, ReadState, Role, Storage};
use quorate_transport::framing::{ChannelId, Frame};
use quorate_transport::tcp::{PeerId, TcpConfig, TcpTransport};
use quorate_transport::{Event, Transport};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::log_store::FileLog;
use super::protocol::{BucketEntry, Command, Envelope, Reply, Request, ShardStatus};
use super::store::{KvStore, Versioned};
use super::{CLIENT_CHANNEL, Error};

/// Timing and layout of a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id (1, 2, 3, ...): its Raft id in every shard.
    pub id: u64,
    /// Every node of the cluster, this one included.
    pub members: Vec<u64>,
    /// How many shards (Raft groups) the cluster has.
    pub shards: u32,
    /// Where the node keeps its logs, one file per shard.
    pub data_dir: PathBuf,
    /// Interval of Raft ticks.
    pub tick: Duration,
    /// Election timeout in ticks (randomized up to twice this).
    pub election_ticks: u32,
    /// Compact a shard's log into a snapshot every this many applied
    /// entries (0: never).
    pub compact_every: u64,
    /// Largest InstallSnapshot chunk a leader sends, in bytes.
    pub snapshot_chunk_bytes: u64,
}

impl NodeConfig {
    /// Default compaction interval, in applied entries.
    pub const COMPACT_EVERY: u64 = 32;
    /// Default InstallSnapshot chunk size: small, so a demo snapshot of a
    /// few kilobytes visibly travels in several resumable chunks.
    pub const SNAPSHOT_CHUNK_BYTES: u64 = 1024;
}

/// The state of one node's replicas that a test or the scenario may read.
pub type SharedStores = Arc<Mutex<Vec<KvStore>>>;

/// A node bound to its address, not yet running.
#[derive(Debug)]
pub struct BoundNode {
    transport: TcpTransport,
}

impl BoundNode {
    /// Binds node `id` to `listen` (port 0 picks a free one).
    pub async fn bind(id: u64, listen: SocketAddr) -> Result<Self, Error> {
        let transport = TcpTransport::bind(PeerId(id), listen, tcp_config()).await?;
        Ok(BoundNode { transport })
    }

    /// The address peers and clients dial.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.transport.local_addr()
    }

    /// Tells the node where a peer listens.
    pub fn add_peer(&self, id: u64, addr: SocketAddr) {
        self.transport.add_peer(PeerId(id), addr);
    }

    /// Opens the logs (replaying what is on disk) and runs the node until
    /// [`NodeHandle::stop`].
    pub fn spawn(self, config: NodeConfig) -> Result<NodeHandle, Error> {
        std::fs::create_dir_all(&config.data_dir)?;
        let members = Configuration::new(config.members.iter().map(|&m| NodeId(m)));
        let mut replicas = Vec::new();
        let mut recovered = 0;
        let mut recovered_snapshots = Vec::new();
        let mut stores = vec![KvStore::default(); config.shards as usize];
        for (shard, store) in (0..config.shards).zip(&mut stores) {
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
            replicas.push(Replica {
                shard,
                node: Node::new(raft, log)?,
                pending_writes: HashMap::new(),
                pending_reads: HashMap::new(),
                confirmed_reads: Vec::new(),
            });
        }
        let stores: SharedStores = Arc::new(Mutex::new(stores));
        let (stop_tx, stop_rx) = watch::channel(false);
        let running = Running {
            transport: self.transport,
            replicas,
            stores: stores.clone(),
            hlc: Hlc::default(),
            compact_every: config.compact_every,
        };
        let task = tokio::spawn(running.run(config.tick, stop_rx));
        Ok(NodeHandle {
            id: config.id,
            stores,
            stop: stop_tx,
            task,
            recovered,
            recovered_snapshots,
        })
    }
}

fn tcp_config() -> TcpConfig {
    TcpConfig {
        // A restarted peer is redialed within a quarter second.
        backoff_max: Duration::from_millis(250),
        ..TcpConfig::default()
    }
}

/// A running node.
#[derive(Debug)]
pub struct NodeHandle {
    id: u64,
    stores: SharedStores,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), Error>>,
    recovered: u64,
    recovered_snapshots: Vec<u64>,
}

impl NodeHandle {
    /// The node's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its replicas' stores.
    pub fn stores(&self) -> SharedStores {
        self.stores.clone()
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
        self.task.await.map_err(|e| Error::Task(e.to_string()))?
    }

    /// Waits for the node to end on its own (an error).
    pub async fn wait(self) -> Result<(), Error> {
        self.task.await.map_err(|e| Error::Task(e.to_string()))?
    }
}

struct Replica {
    shard: u32,
    node: Node<FileLog>,
    /// Writes proposed here, by request id: whom to answer once applied.
    pending_writes: HashMap<u64, PeerId>,
    /// Reads waiting for ReadIndex confirmation: whom to answer, which key.
    pending_reads: HashMap<u64, (PeerId, String)>,
    /// Reads confirmed, waiting for the applied index to reach theirs.
    confirmed_reads: Vec<ReadState>,
}

struct Running {
    transport: TcpTransport,
    replicas: Vec<Replica>,
    stores: SharedStores,
    hlc: Hlc,
    compact_every: u64,
}

fn now_ms() -> u64 {
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
                    for r in &mut self.replicas {
                        r.node.tick();
                    }
                }
                event = self.transport.recv() => match event {
                    Ok(Event::Message { from, msg }) => self.on_frame(from, msg),
                    Ok(_) => {}
                    Err(e) => break Err(Error::from(e)),
                },
            }
            if let Err(e) = self.drive() {
                break Err(e);
            }
        };
        self.transport.shutdown().await;
        outcome
    }

    fn on_frame(&mut self, from: PeerId, frame: Frame) {
        if frame.channel == CLIENT_CHANNEL {
            // Malformed client requests are dropped; the client times out.
            if let Ok(request) = Envelope::<Request>::decode(frame.payload) {
                self.on_request(from, request);
            }
            return;
        }
        let Some(replica) = self.replicas.get_mut(frame.channel.0 as usize) else {
            return;
        };
        // Undecodable or misaddressed Raft messages change nothing.
        if let Ok(message) = quorate_raft_core::codec::decode(frame.payload)
            && message.from.0 == from.0
        {
            let _ = replica.node.step(message);
        }
    }

    fn reply(&self, to: PeerId, id: u64, body: Reply) {
        let frame = Frame::new(CLIENT_CHANNEL, Envelope { id, body }.encode());
        // A lost reply is a client timeout and a retry with the same id.
        let _ = self.transport.try_send(to, frame);
    }

    fn on_request(&mut self, from: PeerId, request: Envelope<Request>) {
        let id = request.id;
        let (shard, key, value) = match request.body {
            Request::Status => {
                let status = self.status();
                self.reply(from, id, Reply::Status(status));
                return;
            }
            Request::LeafHashes { shard } => {
                let reply = self.with_store(shard, |s| Reply::LeafHashes(s.leaf_hashes()));
                self.reply(from, id, reply);
                return;
            }
            Request::Bucket { shard, bucket } => {
                let reply = self.with_store(shard, |s| {
                    Reply::Bucket(
                        s.bucket_entries(bucket)
                            .into_iter()
                            .map(|(key, v)| BucketEntry {
                                key,
                                value: v.value,
                                stamp: v.stamp,
                                request: v.request,
                            })
                            .collect(),
                    )
                });
                self.reply(from, id, reply);
                return;
            }
            Request::Repair {
                shard,
                bucket,
                entries,
            } => {
                let entries = entries
                    .into_iter()
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
                let reply = self.with_store(shard, |s| {
                    s.replace_bucket(bucket, entries);
                    Reply::Written
                });
                self.reply(from, id, reply);
                return;
            }
            Request::Put { shard, key, value } => (shard, key, Some(value)),
            Request::Get { shard, key } => (shard, key, None),
        };
        let applied = {
            let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
            let store = stores.get_mut(shard as usize);
            let applied = store.as_ref().map(|s| s.is_applied(id));
            if let Some(store) = store
                && value.is_some()
                && applied == Some(true)
            {
                store.note_retry_answered();
            }
            applied
        };
        let stamp = match self.hlc.now(now_ms()) {
            Ok(t) => t.as_u64(),
            Err(_) => self.hlc.last().as_u64(),
        };
        let Some(replica) = self.replicas.get_mut(shard as usize) else {
            self.reply(from, id, Reply::NoSuchShard);
            return;
        };
        let hint = replica.node.leader().map_or(0, |l| l.0);
        if replica.node.role() != Role::Leader {
            self.reply(from, id, Reply::NotLeader { hint });
            return;
        }
        let outcome = match value {
            Some(_) if applied == Some(true) => {
                // A retry of an applied write: answer, do not apply again.
                self.reply(from, id, Reply::Written);
                return;
            }
            Some(_) if replica.pending_writes.contains_key(&id) => {
                replica.pending_writes.insert(id, from);
                return;
            }
            Some(value) => {
                let command = Command {
                    request: id,
                    stamp,
                    key,
                    value,
                };
                replica
                    .node
                    .propose(command.encode())
                    .map(|_| replica.pending_writes.insert(id, from))
                    .map(|_| ())
            }
            None => replica
                .node
                .read_index(id)
                .map(|()| replica.pending_reads.insert(id, (from, key)))
                .map(|_| ()),
        };
        if outcome.is_err() {
            self.reply(from, id, Reply::NotLeader { hint });
        }
    }

    /// Runs `f` on the replica of `shard`'s store, or answers NoSuchShard.
    fn with_store(&self, shard: u32, f: impl FnOnce(&mut KvStore) -> Reply) -> Reply {
        let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        stores.get_mut(shard as usize).map_or(Reply::NoSuchShard, f)
    }

    fn status(&self) -> Vec<ShardStatus> {
        let stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        self.replicas
            .iter()
            .zip(stores.iter())
            .map(|(r, s)| ShardStatus {
                shard: r.shard,
                leader: r.node.leader().map_or(0, |l| l.0),
                term: r.node.term().0,
                commit: r.node.commit_index().0,
                applied: r.node.applied_index().0,
                keys: s.len() as u64,
                root: s.merkle_tree().root().0.0,
            })
            .collect()
    }

    /// Persists, sends and applies everything the replicas have ready.
    fn drive(&mut self) -> Result<(), Error> {
        let mut replies = Vec::new();
        for r in &mut self.replicas {
            while let Some(mut ready) = r.node.ready()? {
                for m in ready.take_messages() {
                    let mut buf = BytesMut::new();
                    quorate_raft_core::codec::encode(&m, &mut buf);
                    let frame = Frame::new(ChannelId(r.shard), buf.freeze());
                    // Raft tolerates loss: a full queue or a down peer drops.
                    let _ = self.transport.try_send(PeerId(m.to.0), frame);
                }
                if let Some(snapshot) = ready.take_snapshot() {
                    // Durable before the store changes and before `advance`
                    // lets the node acknowledge it to the leader.
                    let (index, data) = (snapshot.meta.index.0, snapshot.data.clone());
                    r.node.storage_mut().install(snapshot)?;
                    let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(store) = stores.get_mut(r.shard as usize) {
                        store.install(index, data)?;
                    }
                }
                r.node
                    .storage_mut()
                    .persist(ready.entries(), ready.hard_state())?;
                let committed = ready.take_committed_entries();
                if !committed.is_empty() {
                    let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
                    for entry in committed {
                        // Empty entries are the leaders' no-ops.
                        let Ok(command) = Command::decode(entry.data) else {
                            continue;
                        };
                        let _ = self
                            .hlc
                            .update(HlcTimestamp::from_u64(command.stamp), now_ms());
                        let request = command.request;
                        if let Some(store) = stores.get_mut(r.shard as usize) {
                            store.apply(command);
                        }
                        if let Some(client) = r.pending_writes.remove(&request) {
                            replies.push((client, request, Reply::Written));
                        }
                    }
                }
                r.confirmed_reads.extend(ready.take_read_states());
                r.node.advance(ready)?;
            }
            let applied = r.node.applied_index();
            let stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
            let store = stores.get(r.shard as usize);
            // The store reflects exactly the entries up to `applied` here.
            let compacted = r.node.storage().snapshot_meta()?.index;
            if let Some(store) = store
                && self.compact_every > 0
                && applied.0 >= compacted.0 + self.compact_every
            {
                r.node.storage_mut().compact(applied, store.snapshot())?;
            }
            r.confirmed_reads.retain(|read| {
                if read.index > applied {
                    return true;
                }
                if let Some((client, key)) = r.pending_reads.remove(&read.id) {
                    let value = store
                        .and_then(|s| s.get(&key))
                        .map(|v| (v.value.clone(), v.stamp));
                    replies.push((client, read.id, Reply::Value(value)));
                }
                false
            });
        }
        for (to, id, body) in replies {
            self.reply(to, id, body);
        }
        Ok(())
    }
}
