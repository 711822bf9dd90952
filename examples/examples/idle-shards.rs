//! What an idle kv-cluster costs: starts three `kv-cluster node` processes
//! on 127.0.0.1 with `--shards N` for each N asked, waits until every
//! shard has a leader all nodes agree on, writes a few keys, lets the
//! cluster settle, then measures over a window, per node: CPU (utime +
//! stime from `/proc/<pid>/stat`) as a percentage of one core, the frames
//! it handed its transport for the other nodes per second and per peer
//! (its `Traffic` counters), the bytes, its RSS and its open file
//! descriptors. Prints one table row per node and the load average.
//!
//! ```text
//! cargo build --release -p quorate-examples --example kv-cluster --example idle-shards
//! target/release/examples/idle-shards --shards 1,64,1024 --secs 25
//! ```
//!
//! The `kv-cluster` binary is the one next to this one (or
//! `QUORATE_KV_CLUSTER_BIN`); `--node-arg` passes more `node` arguments.
//! Every process it starts is killed when it ends (also on failure).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use quorate_examples::jepsen::cluster::{ProcessCluster, free_addrs, mesh_specs};
use quorate_examples::jepsen::probe;
use quorate_examples::kv_cluster::client::Client;
use quorate_examples::kv_cluster::protocol::Traffic;

#[derive(Parser, Debug)]
#[command(about = "Measure what an idle 3-node kv-cluster costs per node")]
struct Cli {
    /// Shard counts to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,64,1024")]
    shards: Vec<u32>,
    /// Length of the measurement window, in seconds.
    #[arg(long, default_value_t = 25)]
    secs: u64,
    /// Idle time between the writes and the window, in seconds.
    #[arg(long, default_value_t = 10)]
    settle: u64,
    /// How long the nodes get to elect every shard's leader, in seconds.
    #[arg(long, default_value_t = 180)]
    startup: u64,
    /// Keys written before the cluster is left idle.
    #[arg(long, default_value_t = 20)]
    writes: usize,
    /// More arguments for every `kv-cluster node` (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    node_arg: Vec<String>,
}

/// What one node used up to a moment.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    cpu_ticks: u64,
    /// Frames and bytes sent to other nodes (none: no answer in time).
    traffic: Option<(u64, u64)>,
    rss_kib: u64,
    fds: u64,
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields count from after its ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line (1-based),
    // 12 and 13 after the name (0-based: state is 0).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn between_nodes(t: &Traffic) -> (u64, u64) {
    let c = t.between_nodes();
    (c.frames, c.bytes)
}

async fn sample(c: &ProcessCluster, client: &mut Client) -> Option<Vec<(u64, Sample)>> {
    let mut out = Vec::new();
    for id in c.ids() {
        let pid = c.pid(id)?;
        let cpu = cpu_ticks(pid)?;
        let t = probe::traffic(client, id, Duration::from_secs(10)).await;
        out.push((
            id,
            Sample {
                cpu_ticks: cpu,
                traffic: t.as_ref().map(between_nodes),
                rss_kib: rss_kib(pid),
                fds: fds(pid),
            },
        ));
    }
    Some(out)
}

async fn measure(cli: &Cli, shards: u32) -> Result<(), String> {
    let addrs = free_addrs(3).map_err(|e| e.to_string())?;
    let mut extra = vec!["--shards".to_owned(), shards.to_string()];
    extra.extend(cli.node_arg.iter().cloned());
    let specs = mesh_specs(&addrs, &extra);
    let c = ProcessCluster::start_specs(&format!("idle-shards-{shards}"), specs)
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let nodes = c.client_addrs();
    // Status of 1,024 shards from a saturated node can take seconds.
    let mut client =
        Client::new(probe::next_client_id(), &nodes, shards).map_err(|e| e.to_string())?;
    let deadline = started + Duration::from_secs(cli.startup);
    let mut last = String::new();
    let elected = loop {
        let s = probe::statuses(&mut client, &c.ids(), Duration::from_secs(5)).await;
        match probe::leaders(&s, shards) {
            Ok(_) => break true,
            Err(why) => {
                let led: usize = s
                    .values()
                    .flatten()
                    .map(|r| r.iter().filter(|x| x.leader != 0).count())
                    .sum();
                last = format!("{why}; {led} of {} replicas know a leader", 3 * shards);
            }
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    client.close().await;
    let elected_after = started.elapsed();
    if elected {
        let mut writer =
            Client::new(probe::next_client_id(), &nodes, shards).map_err(|e| e.to_string())?;
        for i in 0..cli.writes {
            writer
                .put(&format!("idle:{i}"), Bytes::from(format!("{i}")))
                .await
                .map_err(|e| format!("write {i}: {e}"))?;
        }
        writer.close().await;
    } else {
        println!(
            "shards {shards}: NO agreed leaders within {} s: {last}; measuring anyway",
            cli.startup
        );
    }
    tokio::time::sleep(Duration::from_secs(cli.settle)).await;
    let mut client =
        Client::new(probe::next_client_id(), &nodes, shards).map_err(|e| e.to_string())?;
    let load_before = loadavg();
    let t0 = Instant::now();
    let s0 = sample(&c, &mut client)
        .await
        .ok_or("a node did not answer (before)")?;
    tokio::time::sleep(Duration::from_secs(cli.secs)).await;
    let s1 = sample(&c, &mut client)
        .await
        .ok_or("a node did not answer (after)")?;
    let secs = t0.elapsed().as_secs_f64();
    let load_after = loadavg();
    client.close().await;
    let tck = clk_tck() as f64;
    println!(
        "shards {shards}: {} after {:.1} s; window {secs:.1} s; loadavg {load_before} -> {load_after}",
        if elected {
            "leaders"
        } else {
            "no agreed leaders"
        },
        elapsed_secs(elected_after)
    );
    println!("  node  cpu%   frames/s/peer  bytes/s/peer  rss MiB  fds");
    let peers = 2.0;
    for ((id, a), (_, b)) in s0.iter().zip(&s1) {
        let cpu = (b.cpu_ticks - a.cpu_ticks) as f64 / tck / secs * 100.0;
        let rate = |f: fn((u64, u64)) -> u64| match (a.traffic, b.traffic) {
            (Some(x), Some(y)) => format!("{:.1}", (f(y) - f(x)) as f64 / secs / peers),
            _ => "no answer".to_owned(),
        };
        println!(
            "  {id:>4}  {cpu:>5.2}  {:>13}  {:>12}  {:>7.1}  {:>4}",
            rate(|t| t.0),
            rate(|t| t.1),
            b.rss_kib as f64 / 1024.0,
            b.fds
        );
    }
    Ok(())
}

fn elapsed_secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("idle-shards: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut ok = true;
    for &shards in &cli.shards {
        if let Err(why) = rt.block_on(measure(&cli, shards)) {
            eprintln!("idle-shards: {why}");
            ok = false;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
