//! kv-cluster: a sharded, replicated key-value store on the quorate crates.
//!
//! With no arguments: a 3-node, 2-shard cluster in this process, a scripted
//! workload with a leader crash, a restart, a member of shard 0 replaced
//! under load and a corrupted replica repaired by anti-entropy, then a
//! summary. With arguments: run one node, or talk to a cluster.
//!
//! ```text
//! cargo run --release -p quorate-examples --example kv-cluster
//! kv-cluster node --id 1 --listen 127.0.0.1:7001 --peers 2=127.0.0.1:7002,3=127.0.0.1:7003
//! kv-cluster put --nodes 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 colour blue
//! kv-cluster get --nodes ... colour
//! kv-cluster get --nodes ... --consistency session colour
//! kv-cluster txn --nodes ... put k1 v1 put k2 v2 cas k3 old new get k4
//! kv-cluster bench --nodes ... --count 1000 --clients 8 --txn-shards 2
//! kv-cluster bench --nodes ... --count 1000 --clients 8
//! kv-cluster bench --nodes ... --count 10000 --clients 8 --reads --consistency session
//! kv-cluster status --nodes ...
//! kv-cluster node --id 4 --listen 127.0.0.1:7004 --peers 1=...,2=...,3=... --join --host 0
//! kv-cluster add-voter --nodes 1=...,2=...,3=... --shard 0 --id 4 --addr 127.0.0.1:7004
//! kv-cluster remove --nodes ... --shard 0 --id 1
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use quorate_examples::kv_cluster::client::{Answer, Client};
use quorate_examples::kv_cluster::protocol::{Consistency, Reply, Request};
use quorate_examples::kv_cluster::scenario::{self, Params};
use quorate_examples::kv_cluster::security::Security;
use quorate_examples::kv_cluster::server::{self, BoundNode, NodeConfig};
use quorate_examples::kv_cluster::txn::{TxnOp, TxnOutcome};
use quorate_examples::kv_cluster::{Error, certs};

#[derive(Parser, Debug)]
#[command(about = "A sharded, replicated key-value store built on the quorate crates")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the scripted in-process scenario (the default).
    Demo {
        /// Writes before the crash.
        #[arg(long, default_value_t = 200)]
        writes: usize,
        /// Compact each shard's log every this many applied entries.
        #[arg(long, default_value_t = NodeConfig::COMPACT_EVERY)]
        compact_every: u64,
        /// Largest InstallSnapshot chunk, in bytes.
        #[arg(long, default_value_t = NodeConfig::SNAPSHOT_CHUNK_BYTES)]
        snapshot_chunk_bytes: u64,
    },
    /// Run one node.
    Node {
        /// This node's id.
        #[arg(long)]
        id: u64,
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// The other nodes, as id=address, comma separated.
        #[arg(long, value_delimiter = ',', value_parser = parse_peer)]
        peers: Vec<(u64, SocketAddr)>,
        /// Number of shards (the same on every node).
        #[arg(long, default_value_t = 2)]
        shards: u32,
        /// Where the node keeps its log files.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Also compact each shard's log every this many applied entries
        /// (0: by size only).
        #[arg(long, default_value_t = 0)]
        compact_every: u64,
        /// Compact a shard's log once it grew this many bytes since the last
        /// snapshot (and at least the snapshot's size; 0: never by size).
        #[arg(long, default_value_t = NodeConfig::COMPACT_LOG_BYTES)]
        compact_log_bytes: u64,
        /// Largest InstallSnapshot chunk, in bytes.
        #[arg(long, default_value_t = NodeConfig::SNAPSHOT_CHUNK_BYTES)]
        snapshot_chunk_bytes: u64,
        /// Join running shards: start as a learner of the voters in
        /// `--peers` and wait for `add-voter` (new data directory only).
        #[arg(long)]
        join: bool,
        /// The shards to hold a replica of, comma separated (default: all).
        #[arg(long, value_delimiter = ',')]
        host: Vec<u32>,
        /// Mutual TLS with the certificates `kv-cluster certs` wrote here
        /// (`ca.pem`, `node-<id>.pem`, `node-<id>.key`): peers must prove
        /// their ids. Without it the node serves loopback only.
        #[arg(long)]
        tls_dir: Option<PathBuf>,
        /// Listen on a non-loopback address without TLS (anyone who can
        /// reach the port can pose as a node).
        #[arg(long)]
        insecure: bool,
        /// Liveness beat to every peer, in 10 ms ticks: idle shards
        /// quiesce, and a peer unheard for three beats counts as down
        /// (waking the shards it is in). Longer: fewer frames between
        /// idle nodes, slower failover of idle shards.
        #[arg(long, default_value_t = NodeConfig::LIVENESS_TICKS)]
        liveness_ticks: u32,
    },
    /// Write a cluster CA and a certificate and key per node into a
    /// directory (never overwriting; with an existing CA, adds nodes).
    Certs {
        /// The directory.
        #[arg(long)]
        dir: PathBuf,
        /// The node ids, comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<u64>,
    },
    /// Tell every node where a new server listens, then ask the shard's
    /// leader to catch it up as a learner and promote it.
    AddVoter {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The shard to join.
        #[arg(long)]
        shard: u32,
        /// The new server's id.
        #[arg(long)]
        id: u64,
        /// Where it listens.
        #[arg(long)]
        addr: SocketAddr,
    },
    /// Remove a server from a shard (a removed leader steps down).
    Remove {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The shard.
        #[arg(long)]
        shard: u32,
        /// The server to remove.
        #[arg(long)]
        id: u64,
    },
    /// Write a key.
    Put {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Read a key.
    Get {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// How fresh: linearizable (ReadIndex on the leader), lease (the
        /// leader's lease), session (any replica caught up with this
        /// client's writes and reads; a one-shot CLI client has none yet,
        /// so any replica) or any (possibly stale, labelled so).
        #[arg(long, default_value_t = Consistency::Linearizable)]
        consistency: Consistency,
        /// The key.
        key: String,
    },
    /// Run operations as one atomic transaction across shards (two-phase
    /// commit with the record in the first key's shard): every write
    /// becomes visible together or none does, and every key read or
    /// written is locked until the end. Prints the values read; exits 1 if
    /// the transaction aborted (a failed cas, or contention past the
    /// attempts), 2 if its commit went unanswered (it may have committed).
    Txn {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The operations, in order: `put KEY VALUE`, `cas KEY OLD NEW`
        /// (OLD `-`: the key must be absent), `get KEY`; one per key.
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
        ops: Vec<String>,
    },
    /// Write `count` distinct keys from `clients` concurrent clients (each
    /// with its own sessions, one write in flight at a time) and report
    /// throughput and latencies; with `--reads`, each client writes a few
    /// keys and then reads them `count` times in all at `--consistency`.
    Bench {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// How many writes (or reads, with --reads), over all clients.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Concurrent clients in this process.
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// Measure reads instead of writes.
        #[arg(long)]
        reads: bool,
        /// The reads' consistency (with --reads).
        #[arg(long, default_value_t = Consistency::Linearizable)]
        consistency: Consistency,
        /// Measure transactions instead of plain writes: each writes one
        /// new key in each of this many shards (1: a one-phase commit in
        /// one shard; at most --shards).
        #[arg(long)]
        txn_shards: Option<u32>,
    },
    /// Show every node's shard replicas: leader, term, indices, Merkle root;
    /// and each node's estimate of every peer's clock offset, with its bound.
    Status {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(clap::Args, Debug)]
struct ClusterArgs {
    /// The nodes, as id=address, comma separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_peer, required = true)]
    nodes: Vec<(u64, SocketAddr)>,
    /// Number of shards.
    #[arg(long, default_value_t = 2)]
    shards: u32,
    /// This client's transport id (default: random, so concurrent clients
    /// never share one; writes are deduplicated by session either way).
    #[arg(long)]
    client_id: Option<u64>,
    /// Verify the nodes' certificates with `ca.pem` from this directory
    /// (for a cluster started with --tls-dir).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
}

fn parse_peer(s: &str) -> Result<(u64, SocketAddr), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("expected id=address, got {s:?}"))?;
    let id = id.parse().map_err(|e| format!("node id {id:?}: {e}"))?;
    let addr = addr.parse().map_err(|e| format!("address {addr:?}: {e}"))?;
    Ok((id, addr))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Nodes log at info by default; the demo and the client commands print
    // their own report, so they only show warnings unless RUST_LOG says more.
    let default = match cli.command {
        Some(Command::Node { .. }) => "info",
        _ => "warn",
    };
    let demo = Command::Demo {
        writes: 200,
        compact_every: NodeConfig::COMPACT_EVERY,
        snapshot_chunk_bytes: NodeConfig::SNAPSHOT_CHUNK_BYTES,
    };
    quorate_examples::program::main("kv-cluster", default, run(cli.command.unwrap_or(demo)))
}

async fn run(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Demo {
            writes,
            compact_every,
            snapshot_chunk_bytes,
        } => {
            let params = Params {
                writes,
                compact_every,
                snapshot_chunk_bytes,
                ..Params::default()
            };
            let report =
                scenario::run(params, &mut |line| quorate_examples::outln!("{line}")).await?;
            let ok = report.lost.is_empty()
                && report.applied_twice.is_empty()
                && report.never_applied.is_empty()
                && report.roots_equal;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Node {
            id,
            listen,
            peers,
            shards,
            data_dir,
            compact_every,
            compact_log_bytes,
            snapshot_chunk_bytes,
            join,
            host,
            tls_dir,
            insecure,
            liveness_ticks,
        } => {
            let security = match &tls_dir {
                Some(dir) => Security::Tls(Box::new(certs::node_tls(dir, id)?)),
                None if listen.ip().is_loopback() || insecure => Security::Plain,
                None => return Err(Error::Insecure { addr: listen }),
            };
            if tls_dir.is_none() {
                tracing::warn!(
                    %listen,
                    "no --tls-dir: peers are believed on their word (loopback or --insecure)"
                );
            }
            let hosted = if host.is_empty() {
                shards
            } else {
                host.len() as u32
            };
            if let Some(limit) = server::open_files_limit() {
                server::check_open_files(u64::from(hosted), limit)?;
            }
            let node = BoundNode::bind_with(id, listen, security).await?;
            for &(peer, addr) in &peers {
                node.add_peer(peer, addr);
            }
            let mut members: Vec<u64> = peers.iter().map(|&(p, _)| p).collect();
            if !join {
                members.push(id);
            }
            members.sort_unstable();
            let config = NodeConfig {
                id,
                members,
                shards,
                data_dir: data_dir.unwrap_or_else(|| PathBuf::from(format!("kv-data-{id}"))),
                tick: Duration::from_millis(10),
                election_ticks: 10,
                compact_every,
                compact_log_bytes,
                snapshot_chunk_bytes,
                hosted: host,
                joining: join,
                gossip_ticks: NodeConfig::GOSSIP_TICKS,
                liveness_ticks: liveness_ticks.max(1),
            };
            tracing::info!(
                node = id,
                %listen,
                peers = ?peers,
                shards,
                data_dir = %config.data_dir.display(),
                "node starting"
            );
            let handle = node.spawn(config)?;
            tracing::info!(
                node = id,
                recovered = handle.recovered(),
                snapshots = ?handle.recovered_snapshots(),
                "recovered from disk"
            );
            handle.wait().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Put {
            cluster,
            key,
            value,
        } => {
            let mut client = connect(&cluster)?;
            let outcome = client.put(&key, Bytes::from(value)).await;
            client.close().await;
            let answer = outcome?;
            let write = answer
                .write
                .map(|w| format!(" (shard {} session {} write {})", w.shard, w.session, w.seq))
                .unwrap_or_default();
            quorate_examples::outln!(
                "{:?} by node {} in {:.1} ms ({} attempts){write}",
                answer.reply,
                answer.node,
                answer.latency.as_secs_f64() * 1000.0,
                answer.attempts
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Get {
            cluster,
            consistency,
            key,
        } => {
            let mut client = connect(&cluster)?;
            let outcome = client.get_with(&key, consistency).await;
            client.close().await;
            let answer = outcome?;
            let Reply::Value {
                value,
                index,
                stale,
            } = answer.reply
            else {
                return Err(Error::UnexpectedReply {
                    node: answer.node.to_string(),
                    reply: format!("{:?}", answer.reply),
                });
            };
            let seen = format!(
                "node {} at index {index}, {consistency}{}",
                answer.node,
                if stale { ", may be stale" } else { "" }
            );
            match value {
                Some((value, stamp)) => quorate_examples::outln!(
                    "{key} = {} (HLC {}; {seen})",
                    String::from_utf8_lossy(&value),
                    quorate_clocks::HlcTimestamp::from_u64(stamp)
                ),
                None => quorate_examples::outln!("{key} not found ({seen})"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Txn { cluster, ops } => {
            let ops = parse_ops(&ops).map_err(|e| Error::Check(format!("operations: {e}")))?;
            let mut client = connect(&cluster)?;
            let start = Instant::now();
            let outcome = client.txn(ops).await;
            client.close().await;
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            match outcome? {
                TxnOutcome::Committed {
                    txn,
                    reads,
                    attempts,
                } => {
                    quorate_examples::outln!(
                        "committed (transaction {txn}, {attempts} attempt(s), {ms:.1} ms)"
                    );
                    for (key, value) in reads {
                        match value {
                            Some((v, _)) => {
                                quorate_examples::outln!("{key} = {}", String::from_utf8_lossy(&v))
                            }
                            None => quorate_examples::outln!("{key} not found"),
                        }
                    }
                    Ok(ExitCode::SUCCESS)
                }
                TxnOutcome::Aborted { reason, attempts } => {
                    quorate_examples::outln!("aborted after {attempts} attempt(s): {reason}");
                    Ok(ExitCode::from(1))
                }
                TxnOutcome::Unknown { txn } => {
                    quorate_examples::outln!(
                        "unknown: the commit of transaction {txn} went unanswered"
                    );
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Bench {
            cluster,
            count,
            clients,
            txn_shards: Some(n),
            ..
        } => bench_txn(&cluster, count, clients, n).await,
        Command::Bench {
            cluster,
            count,
            clients,
            reads: false,
            ..
        } => bench(&cluster, count, clients).await,
        Command::Bench {
            cluster,
            count,
            clients,
            reads: true,
            consistency,
            ..
        } => bench_reads(&cluster, count, clients, consistency).await,
        Command::AddVoter {
            cluster,
            shard,
            id,
            addr,
        } => {
            let mut client = connect(&cluster)?;
            let outcome = add_voter(&mut client, &cluster, shard, id, addr).await;
            client.close().await;
            outcome
        }
        Command::Remove { cluster, shard, id } => {
            let mut client = connect(&cluster)?;
            let outcome = client
                .admin(shard, Request::RemoveMember { shard, id })
                .await;
            client.close().await;
            let answer = accepted(&cluster, outcome?, shard)?;
            quorate_examples::outln!("shard {shard} leader {}: {:?}", answer.node, answer.reply);
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs { dir, nodes } => {
            for path in certs::generate(&dir, &nodes)? {
                quorate_examples::outln!("wrote {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { cluster } => {
            let mut client = connect(&cluster)?;
            let mut silent = 0;
            for &(id, addr) in &cluster.nodes {
                match tokio::time::timeout(Duration::from_secs(3), client.status(id)).await {
                    Ok(Ok(shards)) => {
                        let quiet = shards.iter().filter(|s| s.quiesced).count();
                        let total = shards.len();
                        for s in shards {
                            let root: String =
                                s.root.iter().take(4).map(|b| format!("{b:02x}")).collect();
                            quorate_examples::outln!(
                                "node {id} ({addr}) shard {}: leader {} term {} commit {} applied {} keys {} root {root} voters {:?} learners {:?}{}",
                                s.shard,
                                s.leader,
                                s.term,
                                s.commit,
                                s.applied,
                                s.keys,
                                s.voters,
                                s.learners,
                                if s.quiesced { " quiesced" } else { "" }
                            );
                            for p in &s.peers {
                                quorate_examples::outln!(
                                    "  peer {}: matched {} next {} queued {} urgent + {} bulk frames ({} bytes)",
                                    p.id,
                                    p.matched,
                                    p.next,
                                    p.urgent_frames,
                                    p.bulk_frames,
                                    p.bulk_bytes
                                );
                            }
                        }
                        quorate_examples::outln!(
                            "node {id} ({addr}): {quiet} of {total} shards quiesced"
                        );
                        // Nodes from before clock probes do not answer.
                        let clocks =
                            tokio::time::timeout(Duration::from_secs(1), client.clocks(id));
                        if let Ok(Ok(peers)) = clocks.await {
                            for c in peers {
                                match c.bound_ns {
                                    u64::MAX => quorate_examples::outln!(
                                        "  clock of {}: no sample yet",
                                        c.id
                                    ),
                                    bound => quorate_examples::outln!(
                                        "  clock of {}: offset {:+.3} ms ± {:.3} ms (round trip {:.3} ms, {} samples)",
                                        c.id,
                                        c.offset_ns as f64 / 1e6,
                                        bound as f64 / 1e6,
                                        c.delay_ns as f64 / 1e6,
                                        c.samples
                                    ),
                                }
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        eprintln!("kv-cluster: node {id} ({addr}): {e}");
                        silent += 1;
                    }
                    Err(_) => {
                        eprintln!("kv-cluster: node {id} ({addr}): no answer within 3 s");
                        silent += 1;
                    }
                }
            }
            client.close().await;
            Ok(if silent == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn connect(cluster: &ClusterArgs) -> Result<Client, Error> {
    let id = cluster.client_id.unwrap_or_else(Client::random_id);
    let security = match &cluster.tls_dir {
        Some(dir) => Security::Tls(Box::new(certs::client_tls(dir)?)),
        None => Security::Plain,
    };
    Client::with_security(id, &cluster.nodes, cluster.shards, security)
}

/// `id=address` of node `node`, as given on the command line.
fn node_name(cluster: &ClusterArgs, node: u64) -> String {
    match cluster.nodes.iter().find(|&&(n, _)| n == node) {
        Some((n, addr)) => format!("{n}={addr}"),
        None => format!("{node}"),
    }
}

/// The answer if the node accepted the admin request, else the error.
fn accepted(cluster: &ClusterArgs, answer: Answer, shard: u32) -> Result<Answer, Error> {
    let node = node_name(cluster, answer.node);
    match answer.reply {
        Reply::Accepted => Ok(answer),
        Reply::Refused(reason) => Err(Error::Refused { node, reason }),
        Reply::NoSuchShard => Err(Error::NoSuchShard { shard, node }),
        other => Err(Error::UnexpectedReply {
            node,
            reply: format!("{other:?}"),
        }),
    }
}

async fn add_voter(
    client: &mut Client,
    cluster: &ClusterArgs,
    shard: u32,
    id: u64,
    addr: SocketAddr,
) -> Result<ExitCode, Error> {
    for &(node, _) in &cluster.nodes {
        let request = Request::AddPeer {
            id,
            addr: addr.to_string(),
        };
        match client.ask(node, request).await? {
            Reply::Accepted => quorate_examples::outln!("node {node}: address of {id}: accepted"),
            Reply::Refused(reason) => {
                return Err(Error::Refused {
                    node: node_name(cluster, node),
                    reason,
                });
            }
            other => {
                return Err(Error::UnexpectedReply {
                    node: node_name(cluster, node),
                    reply: format!("{other:?}"),
                });
            }
        }
    }
    let answer = client.admin(shard, Request::AddVoter { shard, id }).await?;
    let answer = accepted(cluster, answer, shard)?;
    quorate_examples::outln!(
        "shard {shard} leader {}: {:?} (see `status` for the promotion)",
        answer.node,
        answer.reply
    );
    Ok(ExitCode::SUCCESS)
}

/// Keys each client of a read bench writes before it reads them.
const READ_BENCH_KEYS: usize = 16;

/// `clients` concurrent clients each write [`READ_BENCH_KEYS`] keys, then
/// read them in turn, `count` reads in all, at `consistency`; reports
/// throughput, latencies and how the reads spread over the nodes.
async fn bench_reads(
    cluster: &ClusterArgs,
    count: usize,
    clients: usize,
    consistency: Consistency,
) -> Result<ExitCode, Error> {
    let clients = clients.max(1);
    let run = Client::random_id() % 1_000_000;
    let mut prepared = Vec::with_capacity(clients);
    for c in 0..clients {
        let id = cluster
            .client_id
            .map_or_else(Client::random_id, |id| id.wrapping_add(c as u64));
        let mut client = Client::new(id, &cluster.nodes, cluster.shards)?;
        let keys: Vec<String> = (0..READ_BENCH_KEYS)
            .map(|i| format!("bench-read:{run}:{c}:{i}"))
            .collect();
        for (i, key) in keys.iter().enumerate() {
            client.put(key, Bytes::from(format!("{i}"))).await?;
        }
        prepared.push((client, keys));
    }
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for (c, (mut client, keys)) in prepared.into_iter().enumerate() {
        let reads = count / clients + usize::from(c < count % clients);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(reads);
            let mut by_node = std::collections::BTreeMap::<u64, usize>::new();
            let mut outcome = Ok(());
            for i in 0..reads {
                let key = &keys[i % keys.len()];
                match client.get_with(key, consistency).await {
                    Ok(answer) => {
                        latencies.push(answer.latency);
                        *by_node.entry(answer.node).or_default() += 1;
                    }
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            }
            let retries = client.retries();
            client.close().await;
            (outcome, latencies, by_node, retries)
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    let mut by_node = std::collections::BTreeMap::<u64, usize>::new();
    let mut retries = 0;
    let mut failure = None;
    for task in tasks {
        let (outcome, mut l, nodes, r) = task.await.map_err(|e| Error::Task(e.to_string()))?;
        latencies.append(&mut l);
        for (node, n) in nodes {
            *by_node.entry(node).or_default() += n;
        }
        retries += r;
        if let Err(e) = outcome {
            failure.get_or_insert(e);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ms = |q: f64| scenario::percentile(&latencies, q).as_secs_f64() * 1000.0;
    let spread: Vec<String> = by_node.iter().map(|(n, c)| format!("{n}:{c}")).collect();
    quorate_examples::outln!(
        "{} {consistency} reads from {clients} client(s) in {elapsed:.2} s ({:.0}/s), p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, {retries} retries, served by node {}",
        latencies.len(),
        latencies.len() as f64 / elapsed.max(1e-9),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        spread.join(" "),
    );
    match failure {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Parses `put K V`, `cas K OLD NEW` (OLD `-`: absent) and `get K`.
fn parse_ops(words: &[String]) -> Result<Vec<TxnOp>, String> {
    let mut ops = Vec::new();
    let mut rest = words;
    while let Some((verb, tail)) = rest.split_first() {
        let arity = match verb.as_str() {
            "put" => 2,
            "cas" => 3,
            "get" => 1,
            other => return Err(format!("unknown operation {other:?} (put, cas, get)")),
        };
        if tail.len() < arity {
            return Err(format!("{verb} takes {arity} argument(s)"));
        }
        let (args, after) = tail.split_at(arity);
        let key = args.first().cloned().unwrap_or_default();
        let value = |i: usize| Bytes::from(args.get(i).cloned().unwrap_or_default());
        ops.push(match verb.as_str() {
            "put" => TxnOp::Put {
                key,
                value: value(1),
            },
            "cas" => TxnOp::Cas {
                key,
                expect: (args.get(1).map(String::as_str) != Some("-")).then(|| value(1)),
                value: value(2),
            },
            _ => TxnOp::Get { key },
        });
        rest = after;
    }
    Ok(ops)
}

/// `clients` concurrent clients run `count` transactions in all, each
/// writing one new key in each of `shards` shards.
async fn bench_txn(
    cluster: &ClusterArgs,
    count: usize,
    clients: usize,
    shards: u32,
) -> Result<ExitCode, Error> {
    if shards == 0 || shards > cluster.shards {
        return Err(Error::Check(format!(
            "--txn-shards {shards}: between 1 and --shards ({})",
            cluster.shards
        )));
    }
    let run = Client::random_id() % 1_000_000;
    let totals = run_clients(
        cluster,
        count,
        clients,
        move |c, mut client, txns| async move {
            let mut latencies = Vec::with_capacity(txns);
            let mut outcome = Ok(());
            let mut aborted = 0u64;
            for i in 0..txns {
                // One new key in each of `shards` distinct shards.
                let mut ops = Vec::new();
                let mut used = std::collections::BTreeSet::new();
                let mut j = 0;
                while used.len() < shards as usize {
                    let key = format!("bench:{run}:{c}:{i}:{j}");
                    j += 1;
                    if used.insert(client.shard_of(&key)) {
                        ops.push(TxnOp::Put {
                            key,
                            value: Bytes::from(format!("{i}")),
                        });
                    }
                }
                let began = Instant::now();
                match client.txn(ops).await {
                    Ok(TxnOutcome::Committed { .. }) => latencies.push(began.elapsed()),
                    Ok(_) => aborted += 1,
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            }
            client.close().await;
            (outcome, latencies, aborted)
        },
    )
    .await?;
    totals.report(&format!("transactions over {shards} shard(s)"), "aborted");
    match totals.failure {
        Some(e) => Err(e),
        None if totals.counted > 0 => Ok(ExitCode::from(1)),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// `clients` concurrent clients write `count` distinct keys in all.
async fn bench(cluster: &ClusterArgs, count: usize, clients: usize) -> Result<ExitCode, Error> {
    // Distinct keys across runs too, so every write is a new key.
    let run = Client::random_id() % 1_000_000;
    let totals = run_clients(
        cluster,
        count,
        clients,
        move |c, mut client, writes| async move {
            let mut latencies = Vec::with_capacity(writes);
            let mut outcome = Ok(());
            for i in 0..writes {
                let key = format!("bench:{run}:{c}:{i}");
                match client.put(&key, Bytes::from(format!("{i}"))).await {
                    Ok(answer) => latencies.push(answer.latency),
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            }
            let retries = client.retries();
            client.close().await;
            (outcome, latencies, retries)
        },
    )
    .await?;
    totals.report("writes", "retries");
    match totals.failure {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// What one bench client hands back: its first error, the latency of each
/// operation that succeeded, and a count its bench names (retries, aborts).
type ClientTally = (Result<(), Error>, Vec<Duration>, u64);

/// The sum of what the clients of one bench reported.
struct BenchTotals {
    clients: usize,
    latencies: Vec<Duration>,
    counted: u64,
    failure: Option<Error>,
    elapsed: f64,
}

impl BenchTotals {
    /// Prints the bench's one line: how many `what` succeeded, throughput,
    /// latency percentiles, and the count as `counted`.
    fn report(&self, what: &str, counted: &str) {
        let Self {
            clients, elapsed, ..
        } = self;
        let ms = |q: f64| scenario::percentile(&self.latencies, q).as_secs_f64() * 1000.0;
        quorate_examples::outln!(
            "{} {what} from {clients} client(s) in {elapsed:.2} s ({:.0}/s), p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, {} {counted}",
            self.latencies.len(),
            self.latencies.len() as f64 / elapsed.max(1e-9),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            self.counted,
        );
    }
}

/// Splits `count` operations over `clients` (at least one) concurrent
/// clients, one task each running `work(index, client, its share)`, and
/// sums what they report.
async fn run_clients<W, F>(
    cluster: &ClusterArgs,
    count: usize,
    clients: usize,
    work: W,
) -> Result<BenchTotals, Error>
where
    W: Fn(usize, Client, usize) -> F,
    F: std::future::Future<Output = ClientTally> + Send + 'static,
{
    let clients = clients.max(1);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        // One client per task; an explicit --client-id is offset per client.
        let id = cluster
            .client_id
            .map_or_else(Client::random_id, |id| id.wrapping_add(c as u64));
        let client = Client::new(id, &cluster.nodes, cluster.shards)?;
        let share = count / clients + usize::from(c < count % clients);
        tasks.push(tokio::spawn(work(c, client, share)));
    }
    let mut totals = BenchTotals {
        clients,
        latencies: Vec::with_capacity(count),
        counted: 0,
        failure: None,
        elapsed: 0.0,
    };
    for task in tasks {
        let (outcome, mut l, n) = task.await.map_err(|e| Error::Task(e.to_string()))?;
        totals.latencies.append(&mut l);
        totals.counted += n;
        if let Err(e) = outcome {
            totals.failure.get_or_insert(e);
        }
    }
    totals.elapsed = start.elapsed().as_secs_f64();
    Ok(totals)
}
