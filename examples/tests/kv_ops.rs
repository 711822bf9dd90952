//! kv-cluster as real processes, for what an operator runs into: mutual
//! TLS between nodes (and impostors refused), the bytes nodes exchange per
//! acknowledged write in steady state and under partitions, how fast a
//! majority elects a leader, and the resource limits (memory under partial
//! frames and idle connections, no CPU spin at fd exhaustion).
//!
//! Every figure is printed with how it was measured; run with
//! `--nocapture` to see them. Tests run one at a time (a lock): each starts
//! its own processes on a machine that may have two cores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quorate_examples::jepsen::cluster::{self, ProcessCluster, fail, runtime, serial};
use quorate_examples::jepsen::probe;
use quorate_examples::jepsen::proxy::{Mode, Network};
use quorate_examples::kv_cluster::certs;
use quorate_examples::kv_cluster::client::Client;
use quorate_examples::kv_cluster::protocol::{Reply, Traffic, TrafficKind};
use quorate_examples::kv_cluster::security::Security;
use quorate_raft_core::{LogIndex, Message, MessageBody, NodeId, Term};
use quorate_transport::framing::{ChannelId, Frame};
use quorate_transport::tcp::{PeerId, TcpConfig, TcpTransport};
use tokio::runtime::Runtime;

const SHARDS: u32 = 2;
/// How long a fresh cluster has to elect its first leaders (a loaded debug
/// build starts slowly).
const STARTUP: Duration = Duration::from_secs(20);

/// Polls (over the cluster's own security) until every shard has a leader
/// all nodes agree on.
fn wait_for_leaders(rt: &Runtime, c: &mut ProcessCluster, bound: Duration) -> BTreeMap<u32, u64> {
    let ids = c.ids();
    let mut client = c.client(probe::next_client_id(), SHARDS).unwrap();
    let deadline = Instant::now() + bound;
    let mut last = String::new();
    let found = rt.block_on(async {
        while Instant::now() < deadline {
            let s = probe::statuses(&mut client, &ids, Duration::from_millis(700)).await;
            match probe::leaders(&s, SHARDS) {
                Ok(l) => return Some(l),
                Err(why) => last = format!("{why}\n{}", probe::describe(&s)),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    });
    rt.block_on(client.close());
    match found {
        Some(l) => l,
        None => fail(c, &format!("no leaders within {bound:?}: {last}")),
    }
}

/// Each node's [`Traffic`] (`None`: no answer).
type Traffics = BTreeMap<u64, Option<Traffic>>;

/// Every node's [`Traffic`], asked over the cluster's security.
fn traffic(rt: &Runtime, c: &ProcessCluster) -> Traffics {
    let ids = c.ids();
    let mut client = c.client(probe::next_client_id(), SHARDS).unwrap();
    let out = rt.block_on(async {
        let mut out = BTreeMap::new();
        for id in ids {
            out.insert(
                id,
                probe::traffic(&mut client, id, Duration::from_secs(3)).await,
            );
        }
        out
    });
    rt.block_on(client.close());
    out
}

fn hello(id: u64) -> Vec<u8> {
    // len 8, the transport's control channel, no flags, the id.
    let mut h = vec![0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0];
    h.extend_from_slice(&id.to_be_bytes());
    h
}

/// A frame header on the client channel claiming a `len`-byte payload.
fn client_header(len: u32) -> Vec<u8> {
    let mut h = len.to_be_bytes().to_vec();
    h.extend_from_slice(&(1u32 << 20).to_be_bytes());
    h.push(0);
    h
}

fn connect(addr: SocketAddr, bound: Duration) -> TcpStream {
    let deadline = Instant::now() + bound;
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("connecting to {addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// VmRSS of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/<pid>/status");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}

/// User plus system CPU time of process `pid` (from /proc/<pid>/stat).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall, the 12th and 13th after it.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(100);
    Duration::from_millis(ticks * 1000 / hz)
}

// ---------------------------------------------------------------- TLS

/// Dials node 1 as `claimed` over `security` and sends it Raft messages
/// that, if taken, would move shard 0 to term 1000 under leader `claimed`.
async fn impersonate(node: SocketAddr, claimed: u64, security: Security) {
    let t = TcpTransport::client_with(PeerId(claimed), TcpConfig::default(), security);
    t.add_peer(PeerId(1), node);
    let bodies = [
        MessageBody::AppendEntries {
            prev_log_index: LogIndex(0),
            prev_log_term: Term(0),
            entries: Vec::new(),
            leader_commit: LogIndex(0),
        },
        MessageBody::RequestVote {
            last_log_index: LogIndex(1_000_000),
            last_log_term: Term(999),
            leadership_transfer: true,
        },
    ];
    for _ in 0..5 {
        for body in &bodies {
            let m = Message {
                from: NodeId(claimed),
                to: NodeId(1),
                term: Term(1000),
                body: body.clone(),
            };
            let mut buf = BytesMut::new();
            quorate_raft_core::codec::encode(&m, &mut buf);
            let _ = t.try_send(PeerId(1), Frame::new(ChannelId(0), buf.freeze()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    t.shutdown().await;
}

#[test]
fn tls_cluster_serves_tls_clients_and_refuses_impostors() {
    let _serial = serial();
    let rt = runtime();
    let mut c = ProcessCluster::start_tls("tls", 3).unwrap();
    let before = wait_for_leaders(&rt, &mut c, STARTUP);
    let put = c
        .spawn_cli("put", "put", &["colour", "blue"])
        .unwrap()
        .wait_for(Duration::from_secs(20))
        .unwrap();
    let get = c
        .spawn_cli("get", "get", &["colour"])
        .unwrap()
        .wait_for(Duration::from_secs(20))
        .unwrap();
    if !put.success() || !get.success() || !get.output.contains("colour = blue") {
        fail(
            &mut c,
            &format!("put/get with --tls-dir over TLS nodes: {put:?} {get:?}"),
        );
    }
    println!(
        "tls: `{}` took {:?}, `{}` {:?}",
        put.line, put.elapsed, get.line, get.elapsed
    );
    // A client without --tls-dir cannot talk to TLS nodes.
    let plain = cluster::spawn_cli(
        c.bin(),
        c.dir(),
        "plain-get",
        "get",
        &cluster::node_list(&c.client_addrs()),
        &["colour"],
    )
    .unwrap()
    .wait_for(Duration::from_secs(40))
    .unwrap();
    if plain.success() {
        fail(
            &mut c,
            &format!("a plain-TCP get against TLS nodes succeeded: {plain:?}"),
        );
    }
    println!(
        "tls: a get without --tls-dir failed after {:?}: {:?}",
        plain.elapsed,
        plain.output.trim()
    );

    let certs_dir = c.tls_dir().unwrap().to_path_buf();
    let node1 = c.client_addrs()[0].1;
    let term_before = shard0_term(&rt, &c, 1);
    // Node 3's certificate, claiming to be node 2; then no certificate.
    let as_3 = Security::Tls(Box::new(certs::node_tls(&certs_dir, 3).unwrap()));
    rt.block_on(impersonate(node1, 2, as_3));
    let no_cert = Security::Tls(Box::new(certs::client_tls(&certs_dir).unwrap()));
    rt.block_on(impersonate(node1, 2, no_cert));
    let after = wait_for_leaders(&rt, &mut c, Duration::from_secs(5));
    let term_after = shard0_term(&rt, &c, 1);
    let t = traffic(&rt, &c);
    let refused = t.get(&1).copied().flatten().map_or(0, |t| t.refused_hellos);
    let log = std::fs::read_to_string(c.log_path(1)).unwrap_or_default();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("refused hello claiming"))
        .collect();
    println!(
        "tls: impostors claiming node 2 (node 3's certificate, then none): node 1 refused \
         {refused} hellos, logged {} warnings, e.g. {:?}; shard 0 term on node 1 {term_before} -> \
         {term_after}, leaders {before:?} -> {after:?}",
        warned.len(),
        warned.first()
    );
    let another = warned.iter().any(|l| l.contains("proved another id"));
    let none = warned.iter().any(|l| l.contains("proved no id"));
    if refused < 2 || !another || !none {
        fail(
            &mut c,
            &format!(
                "node 1 counted {refused} refused hellos (expected at least 2: one per \
                 impostor) and logged {} warnings about them (one for another node's \
                 certificate: {another}, one for none: {none})",
                warned.len()
            ),
        );
    }
    if term_after >= 1000 || after != before {
        fail(
            &mut c,
            &format!(
                "the impostors disturbed the cluster: shard 0 term {term_before} -> \
                 {term_after}, leaders {before:?} -> {after:?}"
            ),
        );
    }
    let again = c
        .spawn_cli("get-again", "get", &["colour"])
        .unwrap()
        .wait_for(Duration::from_secs(20))
        .unwrap();
    if !again.success() || !again.output.contains("colour = blue") {
        fail(&mut c, &format!("get after the impostors: {again:?}"));
    }
}

fn shard0_term(rt: &Runtime, c: &ProcessCluster, node: u64) -> u64 {
    let mut client = c.client(probe::next_client_id(), SHARDS).unwrap();
    let s = rt.block_on(probe::statuses(
        &mut client,
        &[node],
        Duration::from_secs(3),
    ));
    rt.block_on(client.close());
    s.get(&node)
        .and_then(|s| s.as_ref())
        .and_then(|s| s.iter().find(|r| r.shard == 0))
        .map_or(0, |r| r.term)
}

#[test]
fn a_non_loopback_listen_without_tls_refuses_to_start() {
    let _serial = serial();
    let bin = cluster::binary().unwrap();
    let dir = cluster::run_dir("insecure").unwrap();
    let mut child = Command::new(&bin)
        .args(["node", "--id", "1", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut output);
    }
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut output);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let status = status.unwrap_or_else(|| {
        panic!("`kv-cluster node --listen 0.0.0.0:0` without --tls-dir still ran after 10 s")
    });
    println!("insecure: exited {status}: {}", output.trim());
    assert!(
        !status.success(),
        "without --tls-dir on 0.0.0.0 it exited 0: {output}"
    );
    assert!(
        output.contains("0.0.0.0:0"),
        "its message does not name the address: {output:?}"
    );
}

// ------------------------------------------------- bytes per write, elections

/// Writes distinct keys one after another until stopped; counts the
/// acknowledged ones in `acked`.
async fn writer(
    n: u64,
    nodes: Vec<(u64, SocketAddr)>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) {
    let mut client = Client::new(probe::next_client_id(), &nodes, SHARDS).unwrap();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("w{n}-{i}");
        i += 1;
        let put = client.put(&key, Bytes::from(format!("value-{i:08}")));
        if let Ok(Ok(a)) = tokio::time::timeout(Duration::from_millis(1500), put).await
            && matches!(a.reply, Reply::Written { .. })
        {
            acked.fetch_add(1, Ordering::Relaxed);
        }
    }
    client.close().await;
}

/// Per kind, the frames and bytes all nodes sent between `a` and `b`.
fn delta(
    a: &BTreeMap<u64, Option<Traffic>>,
    b: &BTreeMap<u64, Option<Traffic>>,
) -> Option<BTreeMap<TrafficKind, (u64, u64)>> {
    let mut out = BTreeMap::new();
    for (id, before) in a {
        let before = (*before)?;
        let after = (*b.get(id)?)?;
        for kind in TrafficKind::ALL {
            let (x, y) = (before.get(kind), after.get(kind));
            let e = out.entry(kind).or_insert((0, 0));
            e.0 += y.frames.saturating_sub(x.frames);
            e.1 += y.bytes.saturating_sub(x.bytes);
        }
    }
    Some(out)
}

/// Bytes between nodes per acknowledged write, and a per-kind breakdown.
fn per_write(kinds: &BTreeMap<TrafficKind, (u64, u64)>, writes: u64) -> (f64, String) {
    let w = writes.max(1) as f64;
    let total: u64 = kinds
        .iter()
        .filter(|(k, _)| k.between_nodes())
        .map(|(_, &(_, b))| b)
        .sum();
    let breakdown = kinds
        .iter()
        .map(|(k, &(f, b))| format!("{k:?} {:.0} B ({:.2} frames)", b as f64 / w, f as f64 / w))
        .collect::<Vec<_>>()
        .join(", ");
    (total as f64 / w, breakdown)
}

/// Who `node` (asked directly) thinks leads `shard`, 0 if none or silent.
async fn leader_seen(client: &mut Client, node: u64, shard: u32) -> u64 {
    let s = probe::statuses(client, &[node], Duration::from_millis(150)).await;
    s.get(&node)
        .and_then(|s| s.as_ref())
        .and_then(|s| s.iter().find(|r| r.shard == shard))
        .map_or(0, |r| r.leader)
}

/// Isolates `victim` and returns, per shard `victim` led, how long until
/// both other nodes name the same new leader (None: not within `bound`).
fn isolate_and_time(
    rt: &Runtime,
    net: &Network,
    nodes: &[(u64, SocketAddr)],
    victim: u64,
    led: &[u32],
    bound: Duration,
) -> Vec<(u32, Option<Duration>)> {
    let others: Vec<u64> = nodes
        .iter()
        .map(|&(id, _)| id)
        .filter(|&id| id != victim)
        .collect();
    let mut client = Client::new(probe::next_client_id(), nodes, SHARDS).unwrap();
    // Connect first, so the timing does not include dials.
    for &o in &others {
        rt.block_on(leader_seen(&mut client, o, 0));
    }
    let start = Instant::now();
    net.partition(&[victim], &others);
    let mut out: Vec<(u32, Option<Duration>)> = led.iter().map(|&s| (s, None)).collect();
    rt.block_on(async {
        while start.elapsed() < bound && out.iter().any(|(_, t)| t.is_none()) {
            for (shard, elected) in out.iter_mut().filter(|(_, t)| t.is_none()) {
                let mut seen = Vec::new();
                for &o in &others {
                    seen.push(leader_seen(&mut client, o, *shard).await);
                }
                let first = seen.first().copied().unwrap_or(0);
                if first != 0 && first != victim && seen.iter().all(|&l| l == first) {
                    *elected = Some(start.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    rt.block_on(client.close());
    out
}

fn leaders_direct(rt: &Runtime, nodes: &[(u64, SocketAddr)]) -> Option<BTreeMap<u32, u64>> {
    rt.block_on(probe::wait_for_leaders(
        probe::next_client_id(),
        nodes,
        SHARDS,
        Duration::from_secs(10),
    ))
    .ok()
}

/// Three nodes that reach each other through a proxied [`Network`].
fn proxied_cluster(rt: &Runtime, name: &str) -> (Network, ProcessCluster) {
    let (net, mut c) = cluster::start_proxied(name).unwrap();
    wait_for_leaders(rt, &mut c, STARTUP);
    (net, c)
}

const WRITERS: u64 = 6;

/// Starts [`WRITERS`] writers; returns them, their stop flag and the count
/// of acknowledged writes.
fn start_writers(
    rt: &Runtime,
    nodes: &[(u64, SocketAddr)],
) -> (
    Vec<tokio::task::JoinHandle<()>>,
    Arc<AtomicBool>,
    Arc<AtomicU64>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writers = (0..WRITERS)
        .map(|n| {
            rt.spawn(writer(
                n,
                nodes.to_vec(),
                Arc::clone(&stop),
                Arc::clone(&acked),
            ))
        })
        .collect();
    // Warm up: sessions registered, connections up.
    std::thread::sleep(Duration::from_secs(1));
    (writers, stop, acked)
}

fn stop_writers(rt: &Runtime, writers: Vec<tokio::task::JoinHandle<()>>, stop: &AtomicBool) {
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for w in writers {
            let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
        }
    });
}

/// Bytes between nodes in `kinds`.
fn node_bytes(kinds: &BTreeMap<TrafficKind, (u64, u64)>) -> u64 {
    kinds
        .iter()
        .filter(|(k, _)| k.between_nodes())
        .map(|(_, &(_, b))| b)
        .sum()
}

#[test]
fn traffic_counters_match_the_bytes_between_nodes() {
    let _serial = serial();
    let rt = runtime();
    let (net, mut c) = proxied_cluster(&rt, "counters");
    let nodes = c.client_addrs();
    let (writers, stop, acked) = start_writers(&rt, &nodes);
    // The nodes are asked one after another: take the proxies' count and
    // the writes in the middle of that.
    let snapshot = || {
        let (p, w) = (net.forwarded(), acked.load(Ordering::Relaxed));
        let t = traffic(&rt, &c);
        let (q, x) = (net.forwarded(), acked.load(Ordering::Relaxed));
        (t, w.midpoint(x), p.midpoint(q))
    };
    let (t0, w0, p0) = snapshot();
    std::thread::sleep(Duration::from_secs(5));
    let (t1, w1, p1) = snapshot();
    stop_writers(&rt, writers, &stop);
    let Some(d) = delta(&t0, &t1) else {
        fail(
            &mut c,
            &format!("a node did not report its traffic: {t0:?} {t1:?}"),
        );
    };
    let (counted, wire, writes) = (node_bytes(&d), p1 - p0, w1 - w0);
    let (per, kinds) = per_write(&d, writes);
    println!(
        "counters: {writes} writes in 5 s; the nodes counted {counted} bytes sent to each \
         other, the proxies forwarded {wire} ({per:.0} B/write; {kinds})"
    );
    let frames = |k: TrafficKind| d.get(&k).map_or(0, |&(f, _)| f);
    // Each write is appended to two followers, acknowledged by both and
    // answered to its client (less a little for the edges of the window).
    let at_least = writes * 9 / 10;
    if writes < 50
        || frames(TrafficKind::Append) < at_least
        || frames(TrafficKind::Response) < at_least
        || frames(TrafficKind::Heartbeat) == 0
        || frames(TrafficKind::ClientReply) < at_least
    {
        fail(
            &mut c,
            &format!(
                "{writes} writes: expected at least one append, one response and one client \
                 reply per write and some heartbeats, counted {d:?}"
            ),
        );
    }
    // The proxies also carry hellos and pings; the counters count frames
    // when handed to the transport, a little before they are on the wire.
    let gap = counted.abs_diff(wire) as f64 / wire.max(1) as f64;
    if gap > 0.10 {
        fail(
            &mut c,
            &format!(
                "the nodes counted {counted} bytes sent between them, the proxies forwarded \
                 {wire}: {:.0}% apart (limit 10%)",
                gap * 100.0
            ),
        );
    }
}

/// The new leader must be known this soon after its predecessor was cut
/// off: ten election timeouts, far above the 2 the design aims at (which a
/// loaded 2-core machine does not meet every time), far below the ~4 s of
/// the term storm issue 15 saw.
const ELECTION_BOUND: Duration = Duration::from_secs(2);

#[test]
fn a_majority_partition_elects_a_leader_quickly() {
    let _serial = serial();
    let rt = runtime();
    let (net, mut c) = proxied_cluster(&rt, "elections");
    let nodes = c.client_addrs();
    let (writers, stop, acked) = start_writers(&rt, &nodes);
    let trials = std::env::var("QUORATE_LONG").map_or(4, |_| 20);
    let mut times = Vec::new();
    let mut slow = Vec::new();
    for trial in 0..trials {
        let Some(leaders) = leaders_direct(&rt, &nodes) else {
            fail(&mut c, &format!("no leaders before trial {trial}"));
        };
        // Alternate between the shards' leaders.
        let leader = leaders[&(trial % SHARDS)];
        let led: Vec<u32> = leaders
            .iter()
            .filter(|&(_, &l)| l == leader)
            .map(|(&s, _)| s)
            .collect();
        for (shard, t) in isolate_and_time(&rt, &net, &nodes, leader, &led, Duration::from_secs(5))
        {
            match t {
                Some(t) if t <= ELECTION_BOUND => times.push(t),
                other => slow.push(format!(
                    "shard {shard} after isolating leader {leader}: {other:?}"
                )),
            }
        }
        net.heal();
        std::thread::sleep(Duration::from_millis(700));
    }
    stop_writers(&rt, writers, &stop);
    times.sort();
    let within = times
        .iter()
        .filter(|t| **t <= Duration::from_millis(400))
        .count();
    let ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
    println!(
        "elections: {} shard leaders isolated ({WRITERS} writers, {} writes acknowledged); the \
         two connected nodes agreed on a new leader after (ms, sorted) {ms:?}; median {:?} ms; \
         {within} within 2 election timeouts (400 ms); measured from the partition to both \
         nodes naming the same new leader in status, polled every ~5 ms",
        times.len() + slow.len(),
        acked.load(Ordering::Relaxed),
        ms.get(ms.len() / 2)
    );
    if !slow.is_empty() {
        fail(
            &mut c,
            &format!("no new leader within {ELECTION_BOUND:?}: {slow:?} (others: {ms:?} ms)"),
        );
    }
}

#[test]
fn bytes_per_write_under_partitions_stay_near_steady_state() {
    let _serial = serial();
    let rt = runtime();
    let (net, mut c) = proxied_cluster(&rt, "traffic");
    let nodes = c.client_addrs();
    let (writers, stop, acked) = start_writers(&rt, &nodes);

    // Steady state.
    let (t0, w0, p0, s0) = (
        traffic(&rt, &c),
        acked.load(Ordering::Relaxed),
        net.forwarded(),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(8));
    let (t1, w1, p1) = (
        traffic(&rt, &c),
        acked.load(Ordering::Relaxed),
        net.forwarded(),
    );
    let steady_secs = s0.elapsed().as_secs_f64();

    // Under the partition nemesis: isolate the leader of shard 0 (timing
    // the new election), isolate a follower, drop the leader's sends to a
    // follower one way, stall a leader-follower link; twice.
    let mut elections: Vec<Duration> = Vec::new();
    let mut unelected = 0;
    let mut faults = Vec::new();
    let s1 = Instant::now();
    // After each fault and its quiet time: (fault, traffic, acked writes).
    let mut marks = vec![("start".to_owned(), t1.clone(), w1)];
    let mark = |marks: &mut Vec<(String, Traffics, u64)>, what: &str| {
        marks.push((
            what.to_owned(),
            traffic(&rt, &c),
            acked.load(Ordering::Relaxed),
        ));
    };
    for _round in 0..2 {
        let Some(leaders) = leaders_direct(&rt, &nodes) else {
            fail(&mut c, "no leaders before a nemesis round");
        };
        let leader = leaders[&0];
        let led: Vec<u32> = leaders
            .iter()
            .filter(|&(_, &l)| l == leader)
            .map(|(&s, _)| s)
            .collect();
        let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
        faults.push(format!("isolate leader {leader}"));
        for (shard, t) in isolate_and_time(&rt, &net, &nodes, leader, &led, Duration::from_secs(5))
        {
            match t {
                Some(t) => elections.push(t),
                None => {
                    unelected += 1;
                    println!(
                        "traffic: shard {shard} had no new leader 5 s after isolating {leader}"
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1500));
        net.heal();
        std::thread::sleep(Duration::from_secs(1));
        mark(&mut marks, faults.last().unwrap());
        faults.push(format!("isolate follower {follower}"));
        let others: Vec<u64> = c.ids().into_iter().filter(|&id| id != follower).collect();
        net.partition(&[follower], &others);
        std::thread::sleep(Duration::from_secs(2));
        net.heal();
        std::thread::sleep(Duration::from_secs(1));
        mark(&mut marks, faults.last().unwrap());
        let leader = leaders_direct(&rt, &nodes).map_or(leader, |l| l[&0]);
        let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
        faults.push(format!("drop {leader}->{follower}"));
        net.set(&[(leader, follower)], Mode::Drop);
        std::thread::sleep(Duration::from_secs(2));
        net.heal();
        std::thread::sleep(Duration::from_secs(1));
        mark(&mut marks, faults.last().unwrap());
        faults.push(format!("stall {leader}<->{follower}"));
        net.set_pair(leader, follower, Mode::Stall);
        std::thread::sleep(Duration::from_secs(2));
        net.heal();
        std::thread::sleep(Duration::from_secs(1));
        mark(&mut marks, faults.last().unwrap());
    }
    for pair in marks.windows(2) {
        let [(_, a, wa), (what, b, wb)] = pair else {
            continue;
        };
        if let Some(d) = delta(a, b) {
            let (bw, _) = per_write(&d, wb - wa);
            let append = d.get(&TrafficKind::Append).map_or(0, |&(_, b)| b);
            println!(
                "traffic: {what} (+ quiet): {} writes acknowledged, {bw:.0} B/write between \
                 nodes, of which appends {:.0} B/write",
                wb - wa,
                append as f64 / (wb - wa).max(1) as f64
            );
        }
    }
    let (t2, w2, p2) = (
        traffic(&rt, &c),
        acked.load(Ordering::Relaxed),
        net.forwarded(),
    );
    let nemesis_secs = s1.elapsed().as_secs_f64();
    stop_writers(&rt, writers, &stop);

    let (Some(steady), Some(nemesis)) = (delta(&t0, &t1), delta(&t1, &t2)) else {
        fail(
            &mut c,
            &format!("a node did not report its traffic: {t0:?} {t1:?} {t2:?}"),
        );
    };
    let (sw, nw) = (w1 - w0, w2 - w1);
    let (steady_b, steady_kinds) = per_write(&steady, sw);
    let (nemesis_b, nemesis_kinds) = per_write(&nemesis, nw);
    let proxy_steady = (p1 - p0) as f64 / sw.max(1) as f64;
    let proxy_nemesis = (p2 - p1) as f64 / nw.max(1) as f64;
    println!(
        "traffic: steady state, {WRITERS} writers, {steady_secs:.1} s: {sw} writes acknowledged \
         ({:.0}/s); between nodes {steady_b:.0} B/write by the nodes' counters (frames handed \
         to the transport, 9-byte headers included), {proxy_steady:.0} B/write through the \
         proxies (TCP payload, hellos and pings included); by kind per write: {steady_kinds}",
        sw as f64 / steady_secs
    );
    println!(
        "traffic: nemesis ({}), {nemesis_secs:.1} s: {nw} writes acknowledged ({:.0}/s); between \
         nodes {nemesis_b:.0} B/write by counters ({:.2}x steady), {proxy_nemesis:.0} B/write \
         through the proxies ({:.2}x); by kind per write: {nemesis_kinds}",
        faults.join(", "),
        nw as f64 / nemesis_secs,
        nemesis_b / steady_b.max(1.0),
        proxy_nemesis / proxy_steady.max(1.0),
    );
    elections.sort();
    println!(
        "elections: after isolating the leader, the other two agreed on a new leader in \
         {:?} (per shard it led; polled every ~5 ms via status; {unelected} not within 5 s); \
         election timeout 100-200 ms",
        elections
    );
    if sw < 100 || nw < 50 {
        fail(
            &mut c,
            &format!("too few writes to measure: {sw} steady, {nw} under the nemesis"),
        );
    }
    if nemesis_b > 3.0 * steady_b {
        fail(
            &mut c,
            &format!(
                "bytes between nodes per acknowledged write: {nemesis_b:.0} under the \
                 nemesis, more than 3x the steady {steady_b:.0}\nsteady: {steady_kinds}\n\
                 nemesis: {nemesis_kinds}"
            ),
        );
    }
    if unelected > 0 {
        fail(
            &mut c,
            &format!("{unelected} shards had no new leader 5 s after their leader was isolated"),
        );
    }
}

// ------------------------------------------------------------ resource limits

/// A node started with `sh -c 'ulimit -n <fds>; exec kv-cluster node ...'`,
/// killed when dropped.
struct LoneNode {
    child: Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl LoneNode {
    fn start(name: &str, fds: Option<u32>) -> LoneNode {
        let bin = cluster::binary().unwrap();
        let dir = cluster::run_dir(name).unwrap();
        let addr = cluster::free_addr().unwrap();
        let log = std::fs::File::create(dir.join("node.log")).unwrap();
        let limit = fds.map_or(String::new(), |n| format!("ulimit -n {n}; "));
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("{limit}exec \"$0\" \"$@\""))
            .arg(&bin)
            .args([
                "node",
                "--id",
                "1",
                "--listen",
                &addr.to_string(),
                "--data-dir",
            ])
            .arg(dir.join("data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let node = LoneNode { child, addr, dir };
        // Ready once it answers status (as a client over plain TCP).
        let rt = runtime();
        let mut client = Client::new(probe::next_client_id(), &[(1, addr)], SHARDS).unwrap();
        let deadline = Instant::now() + STARTUP;
        let up = rt.block_on(async {
            while Instant::now() < deadline {
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(500), client.status(1)).await
                {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        });
        rt.block_on(client.close());
        assert!(up, "lone node never answered status; log in {}", node.log());
        node
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    fn traffic(&self) -> Option<Traffic> {
        let rt = runtime();
        let mut client = Client::new(probe::next_client_id(), &[(1, self.addr)], SHARDS).unwrap();
        let t = rt.block_on(probe::traffic(&mut client, 1, Duration::from_secs(5)));
        rt.block_on(client.close());
        t
    }
}

impl Drop for LoneNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("kept the node's log and data in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Opens `n` client connections that send a hello (ids from `first`) and
/// then `extra`.
fn open_clients(addr: SocketAddr, n: u64, first: u64, extra: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = connect(addr, Duration::from_secs(5));
            s.write_all(&hello(first + i)).unwrap();
            s.write_all(extra).unwrap();
            s
        })
        .collect()
}

/// Waits until the node counts at least `n` accepted connections (bounded).
fn wait_accepted(node: &LoneNode, n: u64, bound: Duration) -> Option<Traffic> {
    let deadline = Instant::now() + bound;
    let mut last = None;
    while Instant::now() < deadline {
        last = node.traffic();
        if last.is_some_and(|t| t.accepted_connections >= n) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    last
}

#[test]
fn forty_partial_client_frames_keep_the_node_under_100_mb() {
    let _serial = serial();
    let node = LoneNode::start("partial", None);
    let base = rss(node.pid());
    // Just under the 1 MiB a client may send: header, then all but 100 bytes.
    let len: u32 = 1024 * 1024 - 16;
    let mut partial = client_header(len);
    partial.extend(std::iter::repeat_n(0x5a, len as usize - 100));
    let conns = open_clients(node.addr, 40, 10_000, &partial);
    std::thread::sleep(Duration::from_secs(2));
    let t = wait_accepted(&node, 40, Duration::from_secs(10));
    let held = rss(node.pid());
    // And a frame claiming 8 MiB, more than a client may send, is cut at once.
    let mut big = connect(node.addr, Duration::from_secs(5));
    big.write_all(&hello(20_000)).unwrap();
    big.write_all(&client_header(8 * 1024 * 1024)).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let closed_after = loop {
        match big.read(&mut buf) {
            Ok(0) | Err(_) => break started.elapsed(),
            Ok(_) => {}
        }
    };
    let closed = closed_after < Duration::from_secs(5);
    // The node copies its transport's counters every 10 ms tick.
    std::thread::sleep(Duration::from_millis(100));
    let after = node.traffic();
    println!(
        "limits: 40 connections each holding {} bytes of a {len}-byte client frame: node VmRSS \
         {:.1} MB (idle {:.1} MB); it holds {} partial-frame bytes; an 8 MiB header closed \
         {:?} after it was sent (connections closed for oversized client frames: {:?})",
        len - 100,
        held as f64 / 1e6,
        base as f64 / 1e6,
        t.map_or(0, |t| t.buffered_bytes),
        closed_after,
        after.map(|t| t.client_frame)
    );
    drop(conns);
    let t = t.expect("the node answered traffic");
    assert!(
        t.buffered_bytes >= 40 * u64::from(len - 100) * 9 / 10,
        "the node holds only {} bytes of partial frames: the connections were not all \
         held ({t:?})",
        t.buffered_bytes
    );
    assert!(
        held < 100_000_000,
        "VmRSS {held} bytes with 40 partial 1 MiB frames (limit 100 MB)"
    );
    assert!(
        closed && after.is_some_and(|t| t.client_frame >= 1),
        "a client frame header claiming 8 MiB did not get its connection closed within 5 s \
         for its size (closed: {closed}, counters {after:?})"
    );
}

#[test]
fn fd_exhaustion_costs_no_cpu_spin() {
    let _serial = serial();
    let node = LoneNode::start("fds", Some(64));
    // What the idle node costs anyway (Raft ticks of its two shards).
    let (idle0, at) = (cpu_time(node.pid()), Instant::now());
    std::thread::sleep(Duration::from_secs(5));
    let idle = (cpu_time(node.pid()) - idle0).as_secs_f64() / at.elapsed().as_secs_f64();
    // More connections than the node has descriptors: the rest wait in the
    // listen backlog, and every accept fails with EMFILE.
    let conns = open_clients(node.addr, 120, 30_000, &[]);
    std::thread::sleep(Duration::from_secs(1));
    let (cpu0, wall0) = (cpu_time(node.pid()), Instant::now());
    std::thread::sleep(Duration::from_secs(5));
    let (cpu, wall) = (cpu_time(node.pid()) - cpu0, wall0.elapsed());
    drop(conns);
    // With the descriptors back, it accepts again and reports.
    let t = wait_accepted(&node, 0, Duration::from_secs(10));
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    println!(
        "limits: under `ulimit -n 64` with 120 connections open, the node used {cpu:?} of CPU \
         in {wall:?} ({:.1}%; {:.1}% idle before, utime+stime from /proc/<pid>/stat); accept \
         errors counted: {:?}",
        share * 100.0,
        idle * 100.0,
        t.map(|t| t.accept_errors)
    );
    let t =
        t.unwrap_or_else(|| panic!("no traffic answer after the fds came back: {}", node.log()));
    assert!(
        t.accept_errors > 0,
        "the node never failed an accept: the test did not exhaust its fds ({t:?})"
    );
    assert!(
        share - idle < 0.10,
        "the node spent {:.1}% of a core over {wall:?} with its fds exhausted, {:.1}% idle \
         (limit: 10 points more)",
        share * 100.0,
        idle * 100.0
    );
}

#[test]
fn idle_connections_cost_little_memory() {
    let _serial = serial();
    let node = LoneNode::start("idle", None);
    std::thread::sleep(Duration::from_secs(1));
    let mut figures = Vec::new();
    let mut held = Vec::new();
    let mut next = 40_000;
    for target in [0u64, 100, 500] {
        let more = target - held.len() as u64;
        held.extend(open_clients(node.addr, more, next, &[]));
        next += more;
        // +1: the connection that asks. Accepted first, then past their
        // hello: on a loaded machine the hellos may trail the accepts.
        wait_accepted(&node, target + 1, Duration::from_secs(10));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut t = node.traffic();
        while Instant::now() < deadline && t.is_none_or(|t| t.client_connections < target) {
            std::thread::sleep(Duration::from_millis(200));
            t = node.traffic();
        }
        std::thread::sleep(Duration::from_millis(500));
        figures.push((
            target,
            rss(node.pid()),
            t.map_or(0, |t| t.client_connections),
        ));
    }
    drop(held);
    let (_, r0, _) = figures[0];
    let (_, r500, c500) = figures[2];
    let per = (r500.saturating_sub(r0)) as f64 / 500.0;
    println!(
        "limits: node VmRSS with N idle client connections (each sent a hello): {}; about \
         {per:.0} bytes per idle connection",
        figures
            .iter()
            .map(|(n, r, _)| format!("{n}: {:.1} MB", *r as f64 / 1e6))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        c500 >= 500,
        "the node counted {c500} client connections, expected the 500 idle ones and the asker"
    );
    assert!(
        per < 100_000.0,
        "each idle connection costs {per:.0} bytes of RSS (limit 100 kB)"
    );
}

/// A node asked to host more shards than its open-files limit can hold
/// logs for refuses to start, naming the limit, instead of failing on the
/// first log file it cannot open.
#[test]
fn more_shards_than_the_open_files_limit_allows_refuse_to_start() {
    let _serial = serial();
    let bin = cluster::binary().unwrap();
    let dir = cluster::run_dir("fd-limit").unwrap();
    let addr = cluster::free_addr().unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 64; exec \"$0\" \"$@\"")
        .arg(&bin)
        .args(["node", "--id", "1", "--listen", &addr.to_string()])
        .args(["--shards", "100", "--data-dir"])
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let status = status.unwrap_or_else(|| panic!("the node still ran after 20 s: {stderr}"));
    assert!(!status.success(), "the node started: {stderr}");
    assert!(
        stderr.contains("100 shard logs need at least 116 open files, the limit is 64"),
        "{stderr}"
    );
}
