//! kv-cluster against etcd: write throughput and latency with many
//! concurrent clients, both as real processes on this machine, same disk.
//!
//! The shape, the same on both sides: a 3-member cluster of separate
//! processes on 127.0.0.1, data directories under one base directory (the
//! same disk), every write fsynced by the leader's log before it is
//! acknowledged. `C` closed-loop clients each put distinct keys (`bench:`,
//! run, client, sequence; a value of a few bytes), one at a time, waiting
//! for the acknowledgement before sending the next. Timed: from the first
//! put sent to the last acknowledged, wall clock; latency of each put from
//! send to acknowledgement. Client counts alternate between the two
//! systems, each run on a fresh key range; the best ops/s of each side is
//! reported with that run's percentiles.
//!
//! - **kv-cluster** runs `kv-cluster node` x3 (2 shards, the default) and
//!   the load is its own `kv-cluster bench --clients C` (one session per
//!   client, routed to the shard leader, tokio tasks in one process).
//! - **etcd** (the binary on `PATH`, e.g. Debian's `etcd-server` package)
//!   runs 3 members with their defaults; the load is this file's client:
//!   one keep-alive HTTP/1.1 connection per client to etcd's JSON gateway
//!   (`POST /v3/kv/put`), all to the leader (no forwarding: the cheapest
//!   path etcd has), tokio tasks in this process. etcd's own Go client
//!   speaks gRPC; the gateway costs etcd some CPU per request, which is
//!   why this is labelled a comparison of systems as users run them, not
//!   of Raft cores (`benches/benches/kv_clients.rs` is that).
//!
//! Knobs: `KV_ETCD_CLIENTS=1,8,32,64` (rows), `KV_ETCD_COUNT=4000` (puts
//! per run), `KV_ETCD_ROUNDS=2`, `KV_CLUSTER_BIN` (default
//! `target/release/examples/kv-cluster`: build it first with
//! `cargo build --release -p quorate-examples --example kv-cluster`),
//! `ETCD_BIN` (default `etcd`), `KV_BENCH_DIR` (base of the data
//! directories; default the system's temp directory). A side whose binary
//! is missing is skipped with a message.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Client counts by default: where the issue measured etcd.
const CLIENTS: [usize; 4] = [1, 8, 32, 64];

/// Processes this bench started, killed (and reaped) when it ends, also on
/// a panic.
#[derive(Default)]
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One run's result.
#[derive(Clone, Debug)]
struct Run {
    ops: f64,
    p50: f64,
    p99: f64,
    p999: f64,
}

/// Percentile `q` of `sorted` latencies, in ms.
fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

mod kv {
    use super::*;

    /// A 3-node kv-cluster, one process per node.
    pub(crate) struct Cluster {
        bin: PathBuf,
        nodes: String,
        _children: Children,
    }

    impl Cluster {
        pub(crate) fn start(bin: &Path, dir: &Path) -> Cluster {
            let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
            let addr = |i: usize| format!("{}=127.0.0.1:{}", i + 1, ports[i]);
            let nodes = (0..3).map(addr).collect::<Vec<_>>().join(",");
            let mut children = Children::default();
            for (i, port) in ports.iter().enumerate() {
                let peers = (0..3)
                    .filter(|&j| j != i)
                    .map(addr)
                    .collect::<Vec<_>>()
                    .join(",");
                let child = Command::new(bin)
                    .args(["node", "--id", &(i + 1).to_string()])
                    .args(["--listen", &format!("127.0.0.1:{port}")])
                    .args(["--peers", &peers])
                    .arg("--data-dir")
                    .arg(dir.join(format!("kv-{}", i + 1)))
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("kv-cluster node starts");
                children.0.push(child);
            }
            let cluster = Cluster {
                bin: bin.to_owned(),
                nodes,
                _children: children,
            };
            // Ready once a write goes through (a leader in every shard).
            let deadline = Instant::now() + Duration::from_secs(30);
            while cluster.load(1, 4).is_none() {
                assert!(Instant::now() < deadline, "kv-cluster not up in 30 s");
                std::thread::sleep(Duration::from_millis(200));
            }
            cluster
        }

        /// `kv-cluster bench` with `clients` clients and `count` puts.
        pub(crate) fn load(&self, clients: usize, count: usize) -> Option<Run> {
            let out = Command::new(&self.bin)
                .args(["bench", "--nodes", &self.nodes])
                .args(["--count", &count.to_string()])
                .args(["--clients", &clients.to_string()])
                .env("RUST_LOG", "warn")
                .stderr(Stdio::null())
                .output()
                .ok()?;
            if !out.status.success() {
                return None;
            }
            parse(&String::from_utf8_lossy(&out.stdout))
        }
    }

    /// Reads `... in 1.10 s (3650/s), p50 5.8 ms, p99 37.5 ms, p99.9 54.5 ms, ...`.
    fn parse(line: &str) -> Option<Run> {
        let after = |tag: &str| -> Option<f64> {
            let rest = &line[line.find(tag)? + tag.len()..];
            let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
            rest[..end].parse().ok()
        };
        Some(Run {
            ops: after(" s (")?,
            p50: after("p50 ")?,
            p99: after("p99 ")?,
            p999: after("p99.9 ")?,
        })
    }
}

mod etcd {
    use super::*;

    /// A 3-member etcd cluster, one process per member.
    pub(crate) struct Cluster {
        clients: Vec<SocketAddr>,
        _children: Children,
    }

    impl Cluster {
        pub(crate) fn start(bin: &str, dir: &Path, rt: &tokio::runtime::Runtime) -> Cluster {
            let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
            let peer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
            let initial = (0..3)
                .map(|i| format!("e{i}=http://127.0.0.1:{}", peer_ports[i]))
                .collect::<Vec<_>>()
                .join(",");
            let mut children = Children::default();
            for i in 0..3 {
                let client_url = format!("http://127.0.0.1:{}", client_ports[i]);
                let peer_url = format!("http://127.0.0.1:{}", peer_ports[i]);
                let child = Command::new(bin)
                    .args(["--name", &format!("e{i}")])
                    .arg("--data-dir")
                    .arg(dir.join(format!("etcd-{i}")))
                    .args(["--listen-client-urls", &client_url])
                    .args(["--advertise-client-urls", &client_url])
                    .args(["--listen-peer-urls", &peer_url])
                    .args(["--initial-advertise-peer-urls", &peer_url])
                    .args(["--initial-cluster", &initial])
                    .args(["--initial-cluster-state", "new"])
                    .args(["--initial-cluster-token", "quorate-bench"])
                    .args(["--logger", "zap", "--log-level", "error"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("etcd starts");
                children.0.push(child);
            }
            let clients = client_ports
                .iter()
                .map(|&p| SocketAddr::from(([127, 0, 0, 1], p)))
                .collect();
            let mut cluster = Cluster {
                clients,
                _children: children,
            };
            // Ready once a member names a leader; then talk to the leader.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(leader) = rt.block_on(cluster.leader()) {
                    cluster.clients = vec![leader];
                    break;
                }
                assert!(Instant::now() < deadline, "etcd not up in 30 s");
                std::thread::sleep(Duration::from_millis(200));
            }
            cluster
        }

        /// The client address of the member that is leader, if one is.
        async fn leader(&self) -> Option<SocketAddr> {
            for &addr in &self.clients {
                let mut conn = Http::connect(addr).await.ok()?;
                let body = conn.post("/v3/maintenance/status", b"{}").await.ok()?;
                let body = String::from_utf8_lossy(&body);
                let field = |name: &str| -> Option<String> {
                    let tag = format!("\"{name}\":\"");
                    let rest = &body[body.find(&tag)? + tag.len()..];
                    Some(rest[..rest.find('"')?].to_owned())
                };
                let (member, leader) = (field("member_id")?, field("leader")?);
                if member == leader {
                    return Some(addr);
                }
            }
            None
        }

        /// `clients` closed-loop clients putting `count` distinct keys.
        pub(crate) async fn load(&self, clients: usize, count: usize, run: u64) -> Option<Run> {
            let addr = self.clients[0];
            let start = Instant::now();
            let mut tasks = Vec::new();
            for c in 0..clients {
                let puts = count / clients + usize::from(c < count % clients);
                tasks.push(tokio::spawn(async move {
                    let mut conn = Http::connect(addr).await.ok()?;
                    let mut latencies = Vec::with_capacity(puts);
                    for i in 0..puts {
                        let body = format!(
                            "{{\"key\":\"{}\",\"value\":\"{}\"}}",
                            base64(format!("bench:{run}:{c}:{i}").as_bytes()),
                            base64(i.to_string().as_bytes())
                        );
                        let sent = Instant::now();
                        let reply = conn.post("/v3/kv/put", body.as_bytes()).await.ok()?;
                        // A put's reply carries the header with the revision.
                        if !reply.starts_with(b"{\"header\"") {
                            return None;
                        }
                        latencies.push(sent.elapsed());
                    }
                    Some(latencies)
                }));
            }
            let mut latencies = Vec::with_capacity(count);
            for task in tasks {
                latencies.append(&mut task.await.ok()??);
            }
            let elapsed = start.elapsed().as_secs_f64();
            latencies.sort_unstable();
            Some(Run {
                ops: latencies.len() as f64 / elapsed,
                p50: percentile(&latencies, 0.5),
                p99: percentile(&latencies, 0.99),
                p999: percentile(&latencies, 0.999),
            })
        }
    }

    /// Standard base64 with padding (etcd's JSON gateway takes bytes so).
    fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for k in 0..4 {
                if k <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    /// One keep-alive HTTP/1.1 connection.
    struct Http {
        stream: BufReader<TcpStream>,
    }

    impl Http {
        async fn connect(addr: SocketAddr) -> std::io::Result<Http> {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Http {
                stream: BufReader::new(stream),
            })
        }

        /// POSTs `body` as JSON to `path` and returns the reply's body.
        async fn post(&mut self, path: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
            let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
            let mut request = format!(
                "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            request.extend_from_slice(body);
            self.stream.get_mut().write_all(&request).await?;
            let mut line = String::new();
            self.stream.read_line(&mut line).await?;
            if !line.starts_with("HTTP/1.1 200") {
                return Err(bad("status"));
            }
            let (mut length, mut chunked) = (None, false);
            loop {
                line.clear();
                if self.stream.read_line(&mut line).await? == 0 {
                    return Err(bad("eof in headers"));
                }
                let header = line.trim_end().to_ascii_lowercase();
                if header.is_empty() {
                    break;
                }
                if let Some(v) = header.strip_prefix("content-length:") {
                    length = v.trim().parse::<usize>().ok();
                }
                if header.starts_with("transfer-encoding:") && header.contains("chunked") {
                    chunked = true;
                }
            }
            let mut out = Vec::new();
            if chunked {
                loop {
                    line.clear();
                    self.stream.read_line(&mut line).await?;
                    let size = usize::from_str_radix(line.trim_end(), 16)
                        .map_err(|_| bad("chunk size"))?;
                    let mut chunk = vec![0; size + 2];
                    self.stream.read_exact(&mut chunk).await?;
                    if size == 0 {
                        break;
                    }
                    out.extend_from_slice(&chunk[..size]);
                }
            } else {
                out.resize(length.ok_or_else(|| bad("no length"))?, 0);
                self.stream.read_exact(&mut out).await?;
            }
            Ok(out)
        }
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn on_path(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn main() {
    let clients: Vec<usize> = var("KV_ETCD_CLIENTS").map_or(CLIENTS.to_vec(), |v| {
        v.split(',').map(|c| c.trim().parse().unwrap()).collect()
    });
    let count: usize = var("KV_ETCD_COUNT").map_or(4000, |v| v.parse().unwrap());
    let rounds: usize = var("KV_ETCD_ROUNDS").map_or(2, |v| v.parse().unwrap());
    let kv_bin = var("KV_CLUSTER_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/examples/kv-cluster"),
        PathBuf::from,
    );
    let etcd_bin = var("ETCD_BIN").unwrap_or_else(|| "etcd".to_owned());
    let base = var("KV_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = base.join(format!("quorate-kv-etcd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let kv = kv_bin
        .exists()
        .then(|| kv::Cluster::start(&kv_bin, &dir))
        .or_else(|| {
            eprintln!("kv-cluster skipped: no {}", kv_bin.display());
            None
        });
    let etcd = on_path(&etcd_bin)
        .then(|| etcd::Cluster::start(&etcd_bin, &dir, &rt))
        .or_else(|| {
            eprintln!("etcd skipped: `{etcd_bin} --version` does not run");
            None
        });

    let best = |a: Option<Run>, b: Option<Run>| match (a, b) {
        (Some(a), Some(b)) => Some(if b.ops > a.ops { b } else { a }),
        (a, b) => a.or(b),
    };
    let mut rows = Vec::new();
    let mut run_id = 0;
    for &c in &clients {
        let (mut ours, mut theirs) = (None, None);
        for _ in 0..rounds {
            if let Some(kv) = &kv {
                let r = kv.load(c, count);
                eprintln!("{c} clients, kv-cluster: {r:?}");
                ours = best(ours, r);
            }
            if let Some(etcd) = &etcd {
                run_id += 1;
                let r = rt.block_on(etcd.load(c, count, run_id));
                eprintln!("{c} clients, etcd: {r:?}");
                theirs = best(theirs, r);
            }
        }
        rows.push((c, ours, theirs));
    }
    drop((kv, etcd));
    let _ = std::fs::remove_dir_all(&dir);

    println!();
    println!(
        "| clients | kv-cluster ops/s | p50 / p99 / p99.9 ms | etcd ops/s | p50 / p99 / p99.9 ms | ops ratio |"
    );
    println!("| --: | --: | --: | --: | --: | --: |");
    let show = |r: &Option<Run>| {
        r.as_ref().map_or(("-".into(), "-".into()), |r| {
            (
                format!("{:.0}", r.ops),
                format!("{:.1} / {:.1} / {:.1}", r.p50, r.p99, r.p999),
            )
        })
    };
    for (c, ours, theirs) in rows {
        let ratio = match (&ours, &theirs) {
            (Some(a), Some(b)) => format!("{:.2}x", a.ops / b.ops),
            _ => "-".into(),
        };
        let ((oo, ol), (to, tl)) = (show(&ours), show(&theirs));
        println!("| {c} | {oo} | {ol} | {to} | {tl} | {ratio} |");
    }
    println!();
    println!(
        "Timed: first put sent to last acknowledged, {count} puts per run, best of {rounds} alternating runs per side."
    );
}
