//! The default run: a 3-node, 2-shard cluster in one process on 127.0.0.1,
//! a scripted workload (writes, reads, a retried write, the shard-0 leader
//! killed and replaced, the killed node restarted and caught up, Merkle
//! roots compared, a new server joining shard 0 under client load and
//! the shard's leader removed, a corrupted replica found and repaired by
//! the replicas' own anti-entropy), a timeline and a [`Report`] that tests
//! check.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quorate_raft_core::Promotion;
use tokio::sync::watch;

use super::Error;
use super::client::{Answer, Client};
use super::protocol::{Reply, Request, ShardStatus, WriteId};
use super::server::{BoundNode, NodeConfig, NodeEvent, NodeHandle};
use super::store::{InstalledSnapshot, KvStore};

/// Sizes and timing of a run.
#[derive(Clone, Debug)]
pub struct Params {
    /// Nodes (each holds a replica of every shard).
    pub nodes: u64,
    /// Shards (Raft groups).
    pub shards: u32,
    /// Writes before the crash; half as many again while a node is down.
    pub writes: usize,
    /// Raft tick interval.
    pub tick: Duration,
    /// Election timeout in ticks.
    pub election_ticks: u32,
    /// Compact each shard's log every this many applied entries. Keep it
    /// below `writes / shards / 2` (about the writes per shard made while a
    /// node is down) so the restarted node is behind the leaders' compacted
    /// logs and catches up by InstallSnapshot.
    pub compact_every: u64,
    /// Largest InstallSnapshot chunk, in bytes.
    pub snapshot_chunk_bytes: u64,
    /// Anti-entropy period of the shard leaders, in ticks.
    pub gossip_ticks: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            nodes: 3,
            shards: 2,
            writes: 200,
            tick: Duration::from_millis(10),
            election_ticks: 10,
            compact_every: NodeConfig::COMPACT_EVERY,
            snapshot_chunk_bytes: NodeConfig::SNAPSHOT_CHUNK_BYTES,
            gossip_ticks: NodeConfig::GOSSIP_TICKS,
        }
    }
}

/// What a run observed.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Latencies of acknowledged writes (retries included).
    pub writes: Vec<Duration>,
    /// Latencies of reads.
    pub reads: Vec<Duration>,
    /// From the leader's kill to a successor's election, as seen by a
    /// surviving node.
    pub election: Duration,
    /// From the leader's kill to the successor acknowledging the write that
    /// was in flight at the kill (the failover a client sees).
    pub failover: Duration,
    /// Every acknowledged write: key, value.
    pub acknowledged: BTreeMap<String, Bytes>,
    /// Every acknowledged write's shard, session and sequence number.
    pub acknowledged_writes: BTreeSet<WriteId>,
    /// Acknowledged writes not read back with their value after failover
    /// and at the end (must be empty).
    pub lost: Vec<String>,
    /// Writes that changed some replica more than once (must be empty),
    /// by the replicas' in-memory audit.
    pub applied_twice: Vec<WriteId>,
    /// Writes (acknowledged, or applied by some voter) that some voter of
    /// their shard does not have: its session table does not cover them
    /// (must be empty).
    pub never_applied: Vec<WriteId>,
    /// Requests sent more than once by the client.
    pub retries: u64,
    /// Log entries skipped by replicas as duplicates of applied requests.
    pub duplicates_skipped: u64,
    /// Sends of the retried write answered from the session table (not
    /// proposed).
    pub retries_answered: u64,
    /// The last log index the restarted node found on its own disk (in its
    /// snapshot or the log after it), summed over shards.
    pub replayed_from_disk: u64,
    /// Per shard, the index of the snapshot the restarted node loaded from
    /// its own disk (0: none).
    pub disk_snapshots: Vec<u64>,
    /// Leaders' snapshots the restarted node installed to catch up, with
    /// their shard.
    pub snapshots_installed: Vec<(u32, InstalledSnapshot)>,
    /// The InstallSnapshot chunk size of the run.
    pub snapshot_chunk_bytes: u64,
    /// How long the restarted node took to catch up.
    pub catch_up: Duration,
    /// Whether every shard's replicas had equal Merkle roots (before the
    /// corruption, and again after repair).
    pub roots_equal: bool,
    /// Buckets the replicas' anti-entropy repaired, over the whole run and
    /// every replica (only the corrupted one should have any).
    pub repaired_buckets: usize,
    /// The server that joined shard 0 during the run.
    pub joined: u64,
    /// The server removed from shard 0 (its leader at the time).
    pub removed: u64,
    /// Replication rounds the joining server took to catch up.
    pub catch_up_rounds: u32,
    /// Shard 0's voters at the end.
    pub final_voters: Vec<u64>,
    /// Writes acknowledged while the membership changed.
    pub writes_during_move: usize,
    /// The readable timeline.
    pub timeline: Vec<String>,
}

/// The latency at quantile `q` (0..=1) of `samples`.
pub fn percentile(samples: &[Duration], q: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let Some(last) = sorted.len().checked_sub(1) else {
        return Duration::ZERO;
    };
    let i = ((last as f64) * q.clamp(0.0, 1.0)).round() as usize;
    sorted.get(i.min(last)).copied().unwrap_or_default()
}

impl Report {
    /// Client operations answered (writes and reads).
    pub fn ops(&self) -> usize {
        self.writes.len() + self.reads.len()
    }

    /// The summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let p = |v: &[Duration]| {
            format!(
                "p50 {:>8}   p99 {:>8}",
                ms(percentile(v, 0.5)),
                ms(percentile(v, 0.99))
            )
        };
        [
            "summary".to_owned(),
            format!(
                "  ops             {} ({} writes, {} reads)",
                self.ops(),
                self.writes.len(),
                self.reads.len()
            ),
            format!("  write latency   {}", p(&self.writes)),
            format!("  read latency    {}", p(&self.reads)),
            format!(
                "  failover        new leader after {}, in-flight write acknowledged after {}",
                ms(self.election),
                ms(self.failover)
            ),
            format!(
                "  durability      {} writes acknowledged, {} lost",
                self.acknowledged.len(),
                self.lost.len()
            ),
            format!(
                "  exactly once    {} client retries; {} resent writes answered from the session table; {} duplicate log entries skipped; {} writes applied twice",
                self.retries,
                self.retries_answered,
                self.duplicates_skipped,
                self.applied_twice.len()
            ),
            format!("  catch-up        {}", self.catch_up_summary()),
            format!(
                "  membership      n{} joined shard 0 (caught up in {} round(s), promoted), n{} removed; voters now {:?}; {} writes acknowledged meanwhile",
                self.joined,
                self.catch_up_rounds,
                self.removed,
                self.final_voters,
                self.writes_during_move
            ),
            format!(
                "  merkle          roots {} on every shard; {} bucket(s) repaired by the replicas' own anti-entropy",
                if self.roots_equal { "equal" } else { "DIFFER" },
                self.repaired_buckets
            ),
        ]
        .join("\n")
    }
}

impl Report {
    /// InstallSnapshot chunks a snapshot of `bytes` takes.
    fn chunks(&self, bytes: u64) -> u64 {
        bytes.div_ceil(self.snapshot_chunk_bytes.max(1)).max(1)
    }

    fn catch_up_summary(&self) -> String {
        let disk = format!(
            "own disk up to index {} (snapshots at {:?})",
            self.replayed_from_disk, self.disk_snapshots
        );
        if self.snapshots_installed.is_empty() {
            return format!(
                "{disk}, rest by log replay from the leaders in {}",
                ms(self.catch_up)
            );
        }
        let bytes: u64 = self.snapshots_installed.iter().map(|(_, s)| s.bytes).sum();
        let chunks: u64 = self
            .snapshots_installed
            .iter()
            .map(|(_, s)| self.chunks(s.bytes))
            .sum();
        format!(
            "{disk}, then {} InstallSnapshot(s) ({bytes} bytes in {chunks} chunks) + log tail from the leaders, in {}",
            self.snapshots_installed.len(),
            ms(self.catch_up)
        )
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn short(root: &[u8; 32]) -> String {
    root.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// The in-process cluster.
#[derive(Debug)]
struct Cluster {
    addrs: Vec<(u64, SocketAddr)>,
    /// Servers that joined one shard: the shard and the voters they were
    /// told of.
    joined: HashMap<u64, (u32, Vec<u64>)>,
    running: HashMap<u64, NodeHandle>,
    dir: PathBuf,
    params: Params,
}

impl Cluster {
    async fn start(params: &Params) -> Result<Self, Error> {
        let dir = std::env::temp_dir().join(format!(
            "quorate-kv-cluster-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let mut bound = Vec::new();
        for id in 1..=params.nodes {
            bound.push((id, BoundNode::bind(id, loopback(0)).await?));
        }
        let mut addrs = Vec::new();
        for (id, node) in &bound {
            let addr = node
                .local_addr()
                .ok_or(Error::Check(format!("node {id} not listening")))?;
            addrs.push((*id, addr));
        }
        let mut cluster = Cluster {
            addrs,
            joined: HashMap::new(),
            running: HashMap::new(),
            dir,
            params: params.clone(),
        };
        for (id, node) in bound {
            cluster.launch(id, node)?;
        }
        Ok(cluster)
    }

    fn config(&self, id: u64) -> NodeConfig {
        let joined = self.joined.get(&id);
        NodeConfig {
            id,
            members: joined.map_or_else(|| (1..=self.params.nodes).collect(), |(_, v)| v.clone()),
            shards: self.params.shards,
            hosted: joined.map(|&(shard, _)| vec![shard]).unwrap_or_default(),
            joining: joined.is_some(),
            gossip_ticks: self.params.gossip_ticks,
            liveness_ticks: NodeConfig::LIVENESS_TICKS,
            data_dir: self.dir.join(format!("n{id}")),
            tick: self.params.tick,
            election_ticks: self.params.election_ticks,
            compact_every: self.params.compact_every,
            compact_log_bytes: NodeConfig::COMPACT_LOG_BYTES,
            snapshot_chunk_bytes: self.params.snapshot_chunk_bytes,
        }
    }

    fn launch(&mut self, id: u64, node: BoundNode) -> Result<(), Error> {
        for &(peer, addr) in &self.addrs {
            if peer != id {
                node.add_peer(peer, addr);
            }
        }
        let handle = node.with_audit().spawn(self.config(id))?;
        self.running.insert(id, handle);
        Ok(())
    }

    /// Starts server `id`, empty, to join `shard` whose voters are
    /// `voters`; returns its address.
    async fn join(&mut self, id: u64, shard: u32, voters: Vec<u64>) -> Result<SocketAddr, Error> {
        let node = BoundNode::bind(id, loopback(0)).await?;
        let addr = node
            .local_addr()
            .ok_or(Error::Check(format!("node {id} not listening")))?;
        self.addrs.push((id, addr));
        self.joined.insert(id, (shard, voters));
        self.launch(id, node)?;
        Ok(addr)
    }

    /// Every event of every running node, with the node.
    fn events(&self) -> Vec<(u64, NodeEvent)> {
        self.events_after(&HashMap::new())
    }

    /// How many events each running node has reported so far.
    fn event_counts(&self) -> HashMap<u64, usize> {
        self.running
            .iter()
            .map(|(&id, h)| (id, h.events().len()))
            .collect()
    }

    /// The events of every running node after the first `seen[node]`.
    fn events_after(&self, seen: &HashMap<u64, usize>) -> Vec<(u64, NodeEvent)> {
        let mut ids: Vec<u64> = self.running.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| Some((id, self.running.get(&id)?.events())))
            .flat_map(|(id, events)| {
                let skip = seen.get(&id).copied().unwrap_or(0);
                events.into_iter().skip(skip).map(move |e| (id, e))
            })
            .collect()
    }

    async fn kill(&mut self, id: u64) -> Result<(), Error> {
        match self.running.remove(&id) {
            Some(handle) => handle.stop().await,
            None => Ok(()),
        }
    }

    /// Restarts a killed node on its old address, from its log files.
    async fn restart(&mut self, id: u64) -> Result<&NodeHandle, Error> {
        let addr = self
            .addrs
            .iter()
            .find(|(n, _)| *n == id)
            .map(|&(_, a)| a)
            .ok_or(Error::Check(format!("no node {id}")))?;
        let mut attempt = 0;
        let node = loop {
            match BoundNode::bind(id, addr).await {
                Ok(node) => break node,
                Err(e) if attempt >= 100 => return Err(e),
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        self.launch(id, node)?;
        self.running
            .get(&id)
            .ok_or(Error::Check(format!("n{id} did not start")))
    }

    async fn shutdown(mut self) -> Result<(), Error> {
        let ids: Vec<u64> = self.running.keys().copied().collect();
        for id in ids {
            self.kill(id).await?;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Writes the timeline as the run goes.
struct Timeline<'a> {
    start: Instant,
    lines: Vec<String>,
    sink: &'a mut dyn FnMut(&str),
}

impl Timeline<'_> {
    fn log(&mut self, text: impl Into<String>) {
        let line = format!(
            "[{:>7.3}s] {}",
            self.start.elapsed().as_secs_f64(),
            text.into()
        );
        (self.sink)(&line);
        self.lines.push(line);
    }
}

/// Polls `node`'s status until `ok` holds (or 30 s pass).
async fn wait_status(
    client: &mut Client,
    node: u64,
    mut ok: impl FnMut(&[ShardStatus]) -> bool,
) -> Result<Vec<ShardStatus>, Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = client.status(node).await?;
        if ok(&status) {
            return Ok(status);
        }
        if Instant::now() > deadline {
            return Err(Error::Check(format!("node {node} stuck at {status:?}")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks that `answer` acknowledges a write, and records it.
fn expect_written(key: &str, answer: &Answer, report: &mut Report) -> Result<(), Error> {
    match (&answer.reply, answer.write) {
        (Reply::Written { .. }, Some(write)) => {
            report.acknowledged_writes.insert(write);
            Ok(())
        }
        (other, _) => Err(Error::Check(format!("put {key}: {other:?}"))),
    }
}

/// Runs the scenario, passing each timeline line to `sink` as it happens.
pub async fn run(params: Params, sink: &mut dyn FnMut(&str)) -> Result<Report, Error> {
    let mut t = Timeline {
        start: Instant::now(),
        lines: Vec::new(),
        sink,
    };
    let mut report = Report::default();
    let mut cluster = Cluster::start(&params).await?;
    let outcome = workload(&params, &mut cluster, &mut t, &mut report).await;
    cluster.shutdown().await?;
    outcome?;
    for line in report.summary().lines() {
        (t.sink)(line);
        t.lines.push(line.to_owned());
    }
    report.timeline = t.lines;
    Ok(report)
}

async fn workload(
    params: &Params,
    cluster: &mut Cluster,
    t: &mut Timeline<'_>,
    report: &mut Report,
) -> Result<(), Error> {
    let nodes: Vec<u64> = cluster.addrs.iter().map(|&(id, _)| id).collect();
    let addrs = cluster.addrs.clone();
    t.log(format!(
        "started {} nodes x {} shards on {}",
        params.nodes,
        params.shards,
        addrs
            .iter()
            .map(|(id, a)| format!("n{id}={a}"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    let mut client = Client::new(1000, &addrs, params.shards)?;
    let first = nodes.first().copied().unwrap_or(1);
    let status = wait_status(&mut client, first, |s| s.iter().all(|s| s.leader != 0)).await?;
    for s in &status {
        t.log(format!(
            "shard {}: leader n{} elected (term {})",
            s.shard, s.leader, s.term
        ));
    }

    // Phase 1: writes, then a retried write.
    let phase = Instant::now();
    for i in 0..params.writes {
        let key = format!("user:{i:04}");
        let value = Bytes::from(format!("v{i}"));
        let answer = client.put(&key, value.clone()).await?;
        expect_written(&key, &answer, report)?;
        report.writes.push(answer.latency);
        report.acknowledged.insert(key, value);
    }
    t.log(format!(
        "wrote {} keys in {} (shard 0: {}, shard 1: {})",
        params.writes,
        ms(phase.elapsed()),
        report
            .acknowledged
            .keys()
            .filter(|k| client.shard_of(k) == 0)
            .count(),
        report
            .acknowledged
            .keys()
            .filter(|k| client.shard_of(k) == 1)
            .count(),
    ));
    let value = Bytes::from_static(b"applied-once");
    let write = client.begin_put("retry:demo", value.clone()).await?;
    let retried = write.id;
    for attempt in 1..=3 {
        let answer = client.write(&write).await?;
        expect_written("retry:demo", &answer, report)?;
        report.writes.push(answer.latency);
        t.log(format!(
            "put retry:demo as write {} of session {} on shard {} (send {attempt} of 3): acknowledged",
            retried.seq, retried.session, retried.shard
        ));
    }
    report.acknowledged.insert("retry:demo".into(), value);
    // Read now: the counters live in memory and a crash below resets them.
    report.retries_answered = cluster
        .running
        .values()
        .filter_map(|h| {
            let stores = h.stores();
            let stores = stores.lock().ok()?;
            Some(stores.iter().map(|s| s.retries_answered()).sum::<u64>())
        })
        .sum();
    t.log(format!(
        "the leader answered {} of those sends from its session table without proposing again",
        report.retries_answered
    ));

    // Phase 2: reads.
    let phase = Instant::now();
    read_all(&mut client, report).await?;
    t.log(format!(
        "read {} keys back in {}: {} mismatches",
        report.acknowledged.len(),
        ms(phase.elapsed()),
        report.lost.len()
    ));

    // Phase 3: send a write to shard 0's leader and kill the leader before
    // it answers; the client retries that write (same session and sequence
    // number) on the successor.
    let status = wait_status(&mut client, first, |s| s.iter().all(|s| s.leader != 0)).await?;
    let victim = status.first().map_or(first, |s| s.leader);
    let led: Vec<u32> = status
        .iter()
        .filter(|s| s.leader == victim)
        .map(|s| s.shard)
        .collect();
    let others: Vec<u64> = nodes.iter().copied().filter(|&n| n != victim).collect();
    let survivor = others.first().copied().unwrap_or(first);
    let key = (0..)
        .map(|i| format!("in-flight:{i}"))
        .find(|k| client.shard_of(k) == 0)
        .unwrap_or_default();
    let value = Bytes::from_static(b"sent-as-the-leader-died");
    let write = client.begin_put(&key, value.clone()).await?;
    let in_flight = write.id;
    client.send_write(&write).await?;
    cluster.kill(victim).await?;
    let killed = Instant::now();
    t.log(format!(
        "sent put {key} (write {} of session {}) to n{victim}, then killed n{victim} (leader of shard(s) {led:?}) before it answered",
        in_flight.seq, in_flight.session
    ));
    let elected = wait_status(&mut client, survivor, |s| {
        led.iter().all(|&shard| {
            s.get(shard as usize)
                .is_some_and(|s| s.leader != 0 && s.leader != victim)
        })
    })
    .await?;
    report.election = killed.elapsed();
    for &shard in &led {
        if let Some(s) = elected.get(shard as usize) {
            t.log(format!(
                "shard {shard}: n{} elected (term {}) {} after the kill",
                s.leader,
                s.term,
                ms(report.election)
            ));
        }
    }
    let answer = client.write(&write).await?;
    expect_written(&key, &answer, report)?;
    report.failover = killed.elapsed();
    report.writes.push(answer.latency);
    report.acknowledged.insert(key.clone(), value);
    t.log(format!(
        "retried write {} of session {} on n{}: written {} after the kill ({} attempts)",
        in_flight.seq,
        in_flight.session,
        answer.node,
        ms(report.failover),
        answer.attempts
    ));
    let phase = Instant::now();
    for i in 0..params.writes / 2 {
        let key = format!("late:{i:04}");
        let value = Bytes::from(format!("w{i}"));
        let answer = client.put(&key, value.clone()).await?;
        expect_written(&key, &answer, report)?;
        report.writes.push(answer.latency);
        report.acknowledged.insert(key, value);
    }
    t.log(format!(
        "wrote {} more keys with n{victim} down in {}",
        params.writes / 2,
        ms(phase.elapsed())
    ));
    read_all(&mut client, report).await?;
    t.log(format!(
        "read all {} acknowledged keys after failover: {} lost",
        report.acknowledged.len(),
        report.lost.len()
    ));

    // Phase 4: restart the victim; it loads its own snapshot and log, then
    // the leaders, whose logs were compacted past what it holds while it
    // was down, send it their snapshots (InstallSnapshot) and the log tail.
    let restarted = Instant::now();
    report.snapshot_chunk_bytes = params.snapshot_chunk_bytes;
    let handle = cluster.restart(victim).await?;
    report.replayed_from_disk = handle.recovered();
    report.disk_snapshots = handle.recovered_snapshots().to_vec();
    let victim_stores = handle.stores();
    t.log(format!(
        "restarted n{victim}: loaded snapshots at {:?} + log tail (up to index {} over all shards) from its data directory",
        report.disk_snapshots, report.replayed_from_disk
    ));
    let reference = others.first().copied().unwrap_or(first);
    let target = client.status(reference).await?;
    wait_status(&mut client, victim, |s| {
        s.iter()
            .zip(&target)
            .all(|(mine, theirs)| mine.applied >= theirs.commit)
    })
    .await?;
    report.catch_up = restarted.elapsed();
    {
        let stores = victim_stores
            .lock()
            .map_err(|_| Error::Check("poisoned".into()))?;
        for (shard, store) in (0..).zip(stores.iter()) {
            report
                .snapshots_installed
                .extend(store.installed().iter().map(|&s| (shard, s)));
        }
    }
    for (shard, theirs) in (0..).zip(&target) {
        let installed: Vec<InstalledSnapshot> = report
            .snapshots_installed
            .iter()
            .filter(|(s, _)| *s == shard)
            .map(|&(_, s)| s)
            .collect();
        let how = match installed.as_slice() {
            // The leader still held (or had already sent) what it missed.
            [] => "by log replay from the leader".to_owned(),
            many => {
                many.iter()
                    .map(|s| {
                        format!(
                            "by snapshot at index {} ({} bytes in {} chunks)",
                            s.index,
                            s.bytes,
                            report.chunks(s.bytes)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
                    + " + log tail"
            }
        };
        t.log(format!(
            "n{victim} shard {shard}: caught up {how} to index {} in {}",
            theirs.commit,
            ms(report.catch_up)
        ));
    }

    // Phase 5: Merkle roots across replicas.
    let members = shard_members(&mut client, &nodes, params.shards).await?;
    report.roots_equal = roots_agree(&mut client, &members, t).await?;

    // Phase 6: under client load, a new server joins shard 0 and the
    // shard's leader is removed.
    replace_member(params, cluster, &mut client, t, report).await?;
    let nodes: Vec<u64> = cluster.addrs.iter().map(|&(id, _)| id).collect();
    let members = shard_members(&mut client, &nodes, params.shards).await?;
    report.final_voters = members.get(&0).cloned().unwrap_or_default();
    read_all(&mut client, report).await?;
    t.log(format!(
        "read all {} acknowledged keys after the membership change: {} lost",
        report.acknowledged.len(),
        report.lost.len()
    ));
    report.roots_equal &= roots_agree(&mut client, &members, t).await?;

    // Phase 7: corrupt one follower's replica behind Raft's back; the
    // replicas' own anti-entropy rounds find and repair it.
    let corrupt_key = "user:0000";
    let shard = client.shard_of(corrupt_key);
    let voters = members.get(&shard).cloned().unwrap_or_default();
    let leader = client
        .status(voters.first().copied().unwrap_or(first))
        .await?
        .iter()
        .find(|s| s.shard == shard)
        .map_or(0, |s| s.leader);
    let bad_node = voters
        .iter()
        .copied()
        .find(|&n| n != leader)
        .unwrap_or(first);
    let seen = cluster.event_counts();
    if let Some(handle) = cluster.running.get(&bad_node) {
        let stores = handle.stores();
        let mut stores = stores.lock().map_err(|_| Error::Check("poisoned".into()))?;
        if let Some(store) = stores.get_mut(shard as usize) {
            store.corrupt(corrupt_key, Bytes::from_static(b"bit rot"));
        }
    }
    let corrupted = Instant::now();
    t.log(format!(
        "corrupted {corrupt_key} on n{bad_node}'s replica of shard {shard} (bypassing Raft); waiting for the replicas to notice"
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let fresh = cluster.events_after(&seen);
        let repaired = fresh
            .iter()
            .any(|(n, e)| *n == bad_node && matches!(e, NodeEvent::Repaired { .. }));
        if repaired {
            for (n, e) in &fresh {
                match e {
                    NodeEvent::Diverged {
                        shard,
                        index,
                        bucket,
                        source,
                    } => t.log(format!(
                        "anti-entropy: n{n} shard {shard}: bucket {bucket} differs from the voters' majority at applied index {index}; asked n{source}"
                    )),
                    NodeEvent::Repaired {
                        shard,
                        index,
                        bucket,
                        source,
                        keys,
                    } => t.log(format!(
                        "anti-entropy: n{n} shard {shard}: bucket {bucket} replaced by n{source}'s ({keys} key(s)), both at applied index {index}, {} after the corruption",
                        ms(corrupted.elapsed())
                    )),
                    _ => {}
                }
            }
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::Check("the corruption was never repaired".into()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report.repaired_buckets = cluster
        .events()
        .iter()
        .filter(|(_, e)| matches!(e, NodeEvent::Repaired { .. }))
        .count();
    report.roots_equal &= roots_agree(&mut client, &members, t).await?;
    read_all(&mut client, report).await?;
    report.retries = client.retries();
    audit(cluster, &members, report);
    for (what, id) in [("retry:demo", retried), ("in-flight write", in_flight)] {
        let (counts, covered) = applications(cluster, &members, id);
        t.log(format!(
            "{what}: write {} of session {} applied {counts:?} time(s) by the replicas of shard {} in their current run; in the session table of {covered} of them",
            id.seq, id.session, id.shard
        ));
    }
    client.close().await;
    Ok(())
}

/// Each shard's voters, as its leader reports them.
async fn shard_members(
    client: &mut Client,
    nodes: &[u64],
    shards: u32,
) -> Result<BTreeMap<u32, Vec<u64>>, Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut members = BTreeMap::new();
        for &n in nodes {
            for s in client.status(n).await? {
                if s.leader == n {
                    members.insert(s.shard, s.voters);
                }
            }
        }
        if members.len() as u32 == shards {
            return Ok(members);
        }
        if Instant::now() > deadline {
            return Err(Error::Check(format!(
                "no leader for some shard: {members:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes until told to stop, from a client of its own: the load the
/// membership change runs under. Returns what was acknowledged.
type Acked = Vec<(String, Bytes, Duration, WriteId)>;

async fn background_writes(
    addrs: Vec<(u64, SocketAddr)>,
    shards: u32,
    mut stop: watch::Receiver<bool>,
) -> Result<(Acked, Vec<u64>), Error> {
    let mut client = Client::new(1001, &addrs, shards)?;
    let mut acked = Vec::new();
    for i in 0.. {
        if *stop.borrow_and_update() {
            break;
        }
        let key = format!("move:{i:04}");
        let value = Bytes::from(format!("m{i}"));
        let answer = client.put(&key, value.clone()).await?;
        let write = match (&answer.reply, answer.write) {
            (Reply::Written { .. }, Some(write)) => write,
            (other, _) => return Err(Error::Check(format!("put {key}: {other:?}"))),
        };
        acked.push((key, value, answer.latency, write));
    }
    let known = client.nodes().to_vec();
    client.close().await;
    Ok((acked, known))
}

/// Sends a membership change to `shard`'s leader until it is accepted
/// (it is refused while the previous change is uncommitted).
async fn change_membership(
    client: &mut Client,
    shard: u32,
    request: Request,
) -> Result<Answer, Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = client.admin(shard, request.clone()).await?;
        match &answer.reply {
            Reply::Accepted => return Ok(answer),
            Reply::Refused(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return Err(Error::Check(format!("{request:?}: {other:?}"))),
        }
    }
}

/// Phase 6: a new server joins shard 0 (empty; it catches up by snapshot
/// and log as a learner and is promoted by `add_voter`), then shard 0's
/// leader is removed, all while another client keeps writing.
async fn replace_member(
    params: &Params,
    cluster: &mut Cluster,
    client: &mut Client,
    t: &mut Timeline<'_>,
    report: &mut Report,
) -> Result<(), Error> {
    let shard = 0;
    let old_nodes: Vec<u64> = cluster.addrs.iter().map(|&(id, _)| id).collect();
    let voters = shard_members(client, &old_nodes, params.shards)
        .await?
        .remove(&shard)
        .unwrap_or_default();
    let (stop, stopped) = watch::channel(false);
    let load = tokio::spawn(background_writes(
        cluster.addrs.clone(),
        params.shards,
        stopped,
    ));
    let started = Instant::now();
    let new_id = old_nodes.iter().max().copied().unwrap_or(0) + 1;
    let addr = cluster.join(new_id, shard, voters.clone()).await?;
    // The operator's client is told; the writing client is not, and must
    // learn of the new server from leader hints.
    client.add_node(new_id, addr);
    for &n in &old_nodes {
        let reply = client
            .ask(
                n,
                Request::AddPeer {
                    id: new_id,
                    addr: addr.to_string(),
                },
            )
            .await?;
        if reply != Reply::Accepted {
            return Err(Error::Check(format!(
                "n{n} refused n{new_id}'s address: {reply:?}"
            )));
        }
    }
    t.log(format!(
        "client 1001 writing in the background; started n{new_id} on {addr}, empty, for shard {shard} only (its storage: voters {voters:?}, itself a learner)"
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut leader;
    let (index, rounds) = 'promoted: loop {
        let seen = cluster.event_counts();
        let answer =
            change_membership(client, shard, Request::AddVoter { shard, id: new_id }).await?;
        leader = answer.node;
        t.log(format!(
            "shard {shard}: leader n{leader} added n{new_id} as a learner and is catching it up (add_voter)"
        ));
        loop {
            let outcome = cluster
                .events_after(&seen)
                .into_iter()
                .find_map(|(_, e)| match e {
                    NodeEvent::Promotion { shard: s, outcome } if s == shard => Some(outcome),
                    _ => None,
                });
            match outcome {
                Some(Promotion::Promoted { index, rounds, .. }) => break 'promoted (index, rounds),
                // Leadership moved, or the learner fell behind: it is
                // still a learner; ask the shard's leader again.
                Some(other) if Instant::now() < deadline => {
                    t.log(format!(
                        "shard {shard}: catch-up of n{new_id} ended: {other:?}; asking again"
                    ));
                    break;
                }
                Some(other) => return Err(Error::Check(format!("n{new_id}: {other:?}"))),
                None if Instant::now() > deadline => {
                    return Err(Error::Check(format!("n{new_id} never promoted")));
                }
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    report.joined = new_id;
    report.catch_up_rounds = rounds;
    let how = cluster
        .running
        .get(&new_id)
        .and_then(|h| {
            let stores = h.stores();
            let stores = stores.lock().ok()?;
            let installed = stores.get(shard as usize)?.installed().to_vec();
            Some(
                installed
                    .iter()
                    .map(|s| format!("snapshot at index {} ({} bytes)", s.index, s.bytes))
                    .chain(["log tail".to_owned()])
                    .collect::<Vec<_>>()
                    .join(" + "),
            )
        })
        .unwrap_or_default();
    t.log(format!(
        "n{new_id} caught up in {rounds} round(s) ({how}) and was promoted to voter at index {} ({} after it started)",
        index.0,
        ms(started.elapsed())
    ));
    // Remove the leader of the moment: the hardest member to lose.
    let leader = wait_status(client, leader, |s| {
        s.iter()
            .any(|s| s.shard == shard && s.voters.contains(&new_id) && s.leader != 0)
    })
    .await?
    .iter()
    .find(|s| s.shard == shard)
    .map_or(leader, |s| s.leader);
    let answer =
        change_membership(client, shard, Request::RemoveMember { shard, id: leader }).await?;
    report.removed = leader;
    t.log(format!(
        "shard {shard}: removing n{leader}, its leader, from the shard (single-server change, proposed on n{})",
        answer.node
    ));
    let observer = voters
        .iter()
        .copied()
        .find(|&v| v != leader)
        .unwrap_or(new_id);
    let after = wait_status(client, observer, |s| {
        s.iter().any(|s| {
            s.shard == shard && !s.voters.contains(&leader) && s.leader != 0 && s.leader != leader
        })
    })
    .await?;
    if let Some(s) = after.iter().find(|s| s.shard == shard) {
        t.log(format!(
            "shard {shard}: n{leader} stepped down once its removal committed; n{} leads (term {}), voters {:?}",
            s.leader, s.term, s.voters
        ));
    }
    let _ = stop.send(true);
    let (acked, known) = load.await.map_err(|e| Error::Task(e.to_string()))??;
    report.writes_during_move = acked.len();
    let latencies: Vec<Duration> = acked.iter().map(|(_, _, l, _)| *l).collect();
    t.log(format!(
        "client 1001 wrote {} keys during the change (p50 {}, max {}), every one acknowledged; {}",
        acked.len(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 1.0)),
        if known.contains(&new_id) {
            format!("it learned n{new_id}'s address from a leader hint")
        } else {
            format!("it never needed n{new_id}")
        }
    ));
    for (key, value, latency, write) in acked {
        report.writes.push(latency);
        report.acknowledged.insert(key, value);
        report.acknowledged_writes.insert(write);
    }
    Ok(())
}

/// Reads every acknowledged key, recording the ones not read back.
async fn read_all(client: &mut Client, report: &mut Report) -> Result<(), Error> {
    let keys: Vec<(String, Bytes)> = report
        .acknowledged
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, value) in keys {
        let answer = client.get(&key).await?;
        report.reads.push(answer.latency);
        let ok = matches!(&answer.reply, Reply::Value { value: Some((v, _)), .. } if *v == value);
        if !ok && !report.lost.contains(&key) {
            report.lost.push(key);
        }
    }
    Ok(())
}

/// Compares each shard's Merkle root across its voters, once they have
/// applied the same prefix of the log.
async fn roots_agree(
    client: &mut Client,
    members: &BTreeMap<u32, Vec<u64>>,
    t: &mut Timeline<'_>,
) -> Result<bool, Error> {
    let mut agree = true;
    for (&shard, voters) in members {
        let deadline = Instant::now() + Duration::from_secs(30);
        let all = loop {
            let mut all = Vec::new();
            for &n in voters {
                let status = client.status(n).await?;
                if let Some(s) = status.into_iter().find(|s| s.shard == shard) {
                    all.push((n, s));
                }
            }
            let settled = all.windows(2).all(|w| match w {
                [(_, a), (_, b)] => a.applied == b.applied,
                _ => true,
            });
            if settled || Instant::now() > deadline {
                break all;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let roots: Vec<String> = all
            .iter()
            .map(|(n, s)| format!("n{n}:{}", short(&s.root)))
            .collect();
        let same = all
            .iter()
            .map(|(_, s)| s.root)
            .collect::<BTreeSet<_>>()
            .len()
            == 1;
        agree &= same;
        let keys = all.first().map_or(0, |(_, s)| s.keys);
        t.log(format!(
            "merkle shard {shard}: {} keys, roots {} -> {}",
            keys,
            roots.join(" "),
            if same { "equal" } else { "DIFFER" }
        ));
    }
    Ok(agree)
}

/// How many times each voter of `id`'s shard applied it in its current
/// run (by its audit), and how many voters' session tables cover it.
fn applications(
    cluster: &Cluster,
    members: &BTreeMap<u32, Vec<u64>>,
    id: WriteId,
) -> (Vec<u32>, usize) {
    let mut counts = Vec::new();
    let mut covered = 0;
    for &n in members.get(&id.shard).into_iter().flatten() {
        let Some(handle) = cluster.running.get(&n) else {
            continue;
        };
        let stores = handle.stores();
        let Ok(stores) = stores.lock() else { continue };
        let Some(store) = stores.get(id.shard as usize) else {
            continue;
        };
        if let Some(&count) = store.audit().and_then(|a| a.get(&(id.session, id.seq))) {
            counts.push(count);
        }
        covered += usize::from(store.is_applied(id.session, id.seq));
    }
    (counts, covered)
}

/// Finds writes applied twice on some voter (by the in-memory audits) and
/// writes some voter lacks: every acknowledged write, and every write some
/// voter applied, must be covered by every voter's session table (its
/// session's highest applied sequence number is at least the write's),
/// whether the voter applied it itself or got it in a snapshot.
fn audit(cluster: &Cluster, members: &BTreeMap<u32, Vec<u64>>, report: &mut Report) {
    for handle in cluster.running.values() {
        let stores = handle.stores();
        let Ok(stores) = stores.lock() else { continue };
        report.duplicates_skipped += stores.iter().map(KvStore::duplicates_skipped).sum::<u64>();
    }
    let mut applied_twice = BTreeSet::new();
    let mut never_applied = BTreeSet::new();
    for (&shard, voters) in members {
        let mut writes: BTreeSet<WriteId> = report
            .acknowledged_writes
            .iter()
            .filter(|w| w.shard == shard)
            .copied()
            .collect();
        let mut stores_of_voters = Vec::new();
        for n in voters {
            let Some(handle) = cluster.running.get(n) else {
                // A voter that is not running lacks everything.
                never_applied.extend(writes.iter().copied());
                continue;
            };
            stores_of_voters.push(handle.stores());
        }
        let mut guards = Vec::new();
        for stores in &stores_of_voters {
            match stores.lock() {
                Ok(guard) => guards.push(guard),
                Err(_) => never_applied.extend(writes.iter().copied()),
            }
        }
        let stores: Vec<&KvStore> = guards
            .iter()
            .filter_map(|g| g.get(shard as usize))
            .collect();
        for store in &stores {
            for (&(session, seq), &count) in store.audit().into_iter().flatten() {
                let id = WriteId {
                    shard,
                    session,
                    seq,
                };
                writes.insert(id);
                if count > 1 {
                    applied_twice.insert(id);
                }
            }
        }
        if stores.len() != voters.len() {
            never_applied.extend(writes.iter().copied());
        }
        for w in &writes {
            if stores.iter().any(|s| !s.is_applied(w.session, w.seq)) {
                never_applied.insert(*w);
            }
        }
    }
    report.applied_twice = applied_twice.into_iter().collect();
    report.never_applied = never_applied.into_iter().collect();
}
