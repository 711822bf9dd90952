//! The default run: a 3-node, 2-shard cluster in one process on 127.0.0.1,
//! a scripted workload (writes, reads, a retried write, the shard-0 leader
//! killed and replaced, the killed node restarted and caught up, Merkle
//! roots compared and a corrupted replica repaired), a timeline and a
//! [`Report`] that tests check.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quorate_merkle::diff::diff;
use quorate_merkle::{Hash, MerkleTree, Sha256};

use super::Error;
use super::client::{Answer, Client};
use super::protocol::{Reply, Request, ShardStatus};
use super::server::{BoundNode, NodeConfig, NodeHandle};
use super::store::InstalledSnapshot;

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
    /// Acknowledged writes not read back with their value after failover
    /// and at the end (must be empty).
    pub lost: Vec<String>,
    /// Request ids that changed some replica more than once (must be empty).
    pub applied_twice: Vec<u64>,
    /// Acknowledged request ids some replica never applied (must be empty).
    pub never_applied: Vec<u64>,
    /// Requests sent more than once by the client.
    pub retries: u64,
    /// Log entries skipped by replicas as duplicates of applied requests.
    pub duplicates_skipped: u64,
    /// Sends of the retried write answered from the dedup table (not proposed).
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
    /// Merkle buckets found differing on the corrupted replica and repaired.
    pub repaired_buckets: usize,
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
                "  exactly once    {} client retries; {} resent writes answered from the dedup table; {} duplicate log entries skipped; {} requests applied twice",
                self.retries,
                self.retries_answered,
                self.duplicates_skipped,
                self.applied_twice.len()
            ),
            format!("  catch-up        {}", self.catch_up_summary()),
            format!(
                "  merkle          roots {} on every shard; {} corrupted bucket(s) found and repaired",
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
        NodeConfig {
            id,
            members: self.addrs.iter().map(|&(id, _)| id).collect(),
            shards: self.params.shards,
            data_dir: self.dir.join(format!("n{id}")),
            tick: self.params.tick,
            election_ticks: self.params.election_ticks,
            compact_every: self.params.compact_every,
            snapshot_chunk_bytes: self.params.snapshot_chunk_bytes,
        }
    }

    fn launch(&mut self, id: u64, node: BoundNode) -> Result<(), Error> {
        for &(peer, addr) in &self.addrs {
            if peer != id {
                node.add_peer(peer, addr);
            }
        }
        let handle = node.spawn(self.config(id))?;
        self.running.insert(id, handle);
        Ok(())
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

fn expect_written(key: &str, answer: &Answer) -> Result<(), Error> {
    match answer.reply {
        Reply::Written => Ok(()),
        ref other => Err(Error::Check(format!("put {key}: {other:?}"))),
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
        expect_written(&key, &answer)?;
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
    let retried = client.next_id()?;
    let value = Bytes::from_static(b"applied-once");
    for attempt in 1..=3 {
        let answer = client
            .put_with_id(retried, "retry:demo", value.clone())
            .await?;
        expect_written("retry:demo", &answer)?;
        report.writes.push(answer.latency);
        t.log(format!(
            "put retry:demo with request id {retried} (send {attempt} of 3): acknowledged"
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
        "the leader answered {} of those sends from its dedup table without proposing again",
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
    // it answers; the client retries that request id on the successor.
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
    let in_flight = client.next_id()?;
    client.send_put(in_flight, &key, value.clone()).await?;
    cluster.kill(victim).await?;
    let killed = Instant::now();
    t.log(format!(
        "sent put {key} (request {in_flight}) to n{victim}, then killed n{victim} (leader of shard(s) {led:?}) before it answered"
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
    let answer = client.put_with_id(in_flight, &key, value.clone()).await?;
    expect_written(&key, &answer)?;
    report.failover = killed.elapsed();
    report.writes.push(answer.latency);
    report.acknowledged.insert(key.clone(), value);
    t.log(format!(
        "retried request {in_flight} on n{}: written {} after the kill ({} attempts)",
        answer.node,
        ms(report.failover),
        answer.attempts
    ));
    let phase = Instant::now();
    for i in 0..params.writes / 2 {
        let key = format!("late:{i:04}");
        let value = Bytes::from(format!("w{i}"));
        let answer = client.put(&key, value.clone()).await?;
        expect_written(&key, &answer)?;
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
    report.roots_equal = roots_agree(&mut client, &nodes, t).await?;

    // Phase 6: corrupt one replica, detect and repair it.
    let bad_node = others.last().copied().unwrap_or(first);
    let corrupt_key = "user:0000";
    let shard = client.shard_of(corrupt_key);
    if let Some(handle) = cluster.running.get(&bad_node) {
        let stores = handle.stores();
        let mut stores = stores.lock().map_err(|_| Error::Check("poisoned".into()))?;
        if let Some(store) = stores.get_mut(shard as usize) {
            store.corrupt(corrupt_key, Bytes::from_static(b"bit rot"));
        }
    }
    t.log(format!(
        "corrupted {corrupt_key} on n{bad_node}'s replica of shard {shard} (bypassing Raft)"
    ));
    let agree = roots_agree(&mut client, &nodes, t).await?;
    if agree {
        return Err(Error::Check("corruption went unnoticed".into()));
    }
    for shard in 0..params.shards {
        report.repaired_buckets += anti_entropy(&mut client, &nodes, shard, t).await?;
    }
    report.roots_equal &= roots_agree(&mut client, &nodes, t).await?;
    read_all(&mut client, report).await?;
    report.retries = client.retries();
    audit(cluster, report);
    for (what, id) in [("retry:demo", retried), ("in-flight write", in_flight)] {
        let counts = applications(cluster, id);
        t.log(format!(
            "{what}: request {id} applied {counts:?} time(s) on the replicas of its shard"
        ));
    }
    client.close().await;
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
        let ok = matches!(&answer.reply, Reply::Value(Some((v, _))) if *v == value);
        if !ok && !report.lost.contains(&key) {
            report.lost.push(key);
        }
    }
    Ok(())
}

/// Compares each shard's Merkle root across all replicas, once they have
/// applied the same prefix of the log.
async fn roots_agree(
    client: &mut Client,
    nodes: &[u64],
    t: &mut Timeline<'_>,
) -> Result<bool, Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut all = Vec::new();
        for &n in nodes {
            all.push((n, client.status(n).await?));
        }
        let settled = all.windows(2).all(|w| match w {
            [(_, a), (_, b)] => a.iter().zip(b).all(|(x, y)| x.applied == y.applied),
            _ => true,
        });
        if !settled && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let mut agree = true;
        let shards = all.first().map_or(0, |(_, s)| s.len());
        for shard in 0..shards {
            let roots: Vec<String> = all
                .iter()
                .filter_map(|(n, s)| s.get(shard).map(|s| (n, s)))
                .map(|(n, s)| format!("n{n}:{}", short(&s.root)))
                .collect();
            let same = all
                .iter()
                .filter_map(|(_, s)| s.get(shard).map(|s| s.root))
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                == 1;
            agree &= same;
            let keys = all
                .first()
                .and_then(|(_, s)| s.get(shard))
                .map_or(0, |s| s.keys);
            t.log(format!(
                "merkle shard {shard}: {} keys, roots {} -> {}",
                keys,
                roots.join(" "),
                if same { "equal" } else { "DIFFER" }
            ));
        }
        return Ok(agree);
    }
}

/// Anti-entropy over the network for one shard: fetches every replica's
/// Merkle leaf hashes, takes the root a majority agrees on, diffs each
/// dissenting replica's tree against it to find the differing buckets, and
/// copies those buckets from an agreeing replica. Returns the buckets repaired.
async fn anti_entropy(
    client: &mut Client,
    nodes: &[u64],
    shard: u32,
    t: &mut Timeline<'_>,
) -> Result<usize, Error> {
    let mut trees = Vec::new();
    for &n in nodes {
        match client.ask(n, Request::LeafHashes { shard }).await? {
            Reply::LeafHashes(hashes) => {
                let tree: MerkleTree<Sha256> =
                    MerkleTree::from_leaf_hashes(hashes.into_iter().map(Hash));
                trees.push((n, tree));
            }
            other => return Err(Error::Check(format!("leaf hashes from n{n}: {other:?}"))),
        }
    }
    let majority = trees.iter().find(|(_, a)| {
        trees.iter().filter(|(_, b)| b.root() == a.root()).count() * 2 > trees.len()
    });
    let Some((good, good_tree)) = majority else {
        return Err(Error::Check(format!("shard {shard}: no majority root")));
    };
    let mut repaired = 0;
    for (bad, tree) in &trees {
        if tree.root() == good_tree.root() {
            continue;
        }
        for bucket in diff(good_tree, tree).into_iter().flatten() {
            let entries = match client.ask(*good, Request::Bucket { shard, bucket }).await? {
                Reply::Bucket(entries) => entries,
                other => return Err(Error::Check(format!("bucket from n{good}: {other:?}"))),
            };
            let count = entries.len();
            let repair = Request::Repair {
                shard,
                bucket,
                entries,
            };
            client.ask(*bad, repair).await?;
            t.log(format!(
                "anti-entropy shard {shard}: n{bad} bucket {bucket} differs from the majority; copied {count} key(s) from n{good}"
            ));
            repaired += 1;
        }
    }
    Ok(repaired)
}

/// How many times each replica holding request `id` applied it.
fn applications(cluster: &Cluster, id: u64) -> Vec<u32> {
    let mut ids: Vec<&u64> = cluster.running.keys().collect();
    ids.sort();
    ids.into_iter()
        .filter_map(|n| cluster.running.get(n))
        .filter_map(|h| {
            let stores = h.stores();
            let stores = stores.lock().ok()?;
            stores
                .iter()
                .find_map(|s| s.applications().get(&id).copied())
        })
        .collect()
}

/// Counts applications per request id on every replica.
fn audit(cluster: &Cluster, report: &mut Report) {
    let mut per_id: HashMap<u64, Vec<u32>> = HashMap::new();
    for handle in cluster.running.values() {
        let stores = handle.stores();
        let Ok(stores) = stores.lock() else { continue };
        for store in stores.iter() {
            report.duplicates_skipped += store.duplicates_skipped();
            for (&id, &n) in store.applications() {
                per_id.entry(id).or_default().push(n);
            }
        }
    }
    report.applied_twice = per_id
        .iter()
        .filter(|(_, counts)| counts.iter().any(|&n| n > 1))
        .map(|(&id, _)| id)
        .collect();
    let replicas = cluster.running.len();
    report.never_applied.extend(
        per_id
            .iter()
            .filter(|(_, counts)| counts.len() != replicas)
            .map(|(&id, _)| id),
    );
}
