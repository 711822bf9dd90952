//! kv-cluster as real processes (`kv-cluster node`), driven the way an
//! operator would: kill -9 and restart a node, SIGSTOP/SIGCONT one, run 64
//! `put` CLIs at once, point a CLI at a dead address, open raw sockets that
//! never finish a frame. Each test says what it expects within a bound and,
//! when it fails, what it saw instead, with the run directory (node logs
//! and data) kept and named in the message.
//!
//! The tests take a lock so that they run one at a time (each starts its
//! own processes; the machine may have two cores).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quorate_examples::jepsen::cluster::{self, ProcessCluster, fail, runtime, serial};
use quorate_examples::jepsen::probe;
use quorate_examples::kv_cluster::client::Client;
use quorate_examples::kv_cluster::protocol::Reply;
use tokio::runtime::Runtime;

const SHARDS: u32 = 2;
/// Most bytes node-to-node sockets may hold queued after recovery.
const QUEUE_LIMIT: u64 = 1 << 20;
/// How long a cluster has to recover after a fault ends.
const RECOVERY: Duration = Duration::from_secs(5);
/// How long a fresh cluster has to elect its first leaders (a loaded debug
/// build starts slowly).
const STARTUP: Duration = Duration::from_secs(20);

/// Writes `key` and reads it back before `deadline`.
async fn put_get(
    nodes: &[(u64, SocketAddr)],
    client_id: u64,
    key: &str,
    value: &str,
    deadline: Instant,
) -> Result<(), String> {
    let mut client = Client::new(client_id, nodes, SHARDS).map_err(|e| e.to_string())?;
    let left = || deadline.saturating_duration_since(Instant::now());
    let put = tokio::time::timeout(left(), client.put(key, Bytes::from(value.to_owned()))).await;
    let result = match put {
        Err(_) => Err(format!("put {key} unanswered by the deadline")),
        Ok(Err(e)) => Err(format!("put {key}: {e}")),
        Ok(Ok(a)) if !matches!(a.reply, Reply::Written { .. }) => {
            Err(format!("put {key}: {:?}", a.reply))
        }
        Ok(Ok(_)) => match tokio::time::timeout(left(), client.get(key)).await {
            Err(_) => Err(format!("get {key} unanswered by the deadline")),
            Ok(Err(e)) => Err(format!("get {key}: {e}")),
            Ok(Ok(a)) => match a.reply {
                Reply::Value {
                    value: Some((v, _)),
                    ..
                } if v == value.as_bytes() => Ok(()),
                other => Err(format!("get {key}: {other:?}, expected {value:?}")),
            },
        },
    };
    client.close().await;
    result
}

/// The most bytes queued (Send-Q + Recv-Q) on connections to or from the
/// nodes over about a second; `None` if `ss` cannot run.
fn max_queued(cluster: &ProcessCluster) -> Option<u64> {
    let ports: Vec<u16> = cluster
        .client_addrs()
        .iter()
        .map(|(_, a)| a.port())
        .collect();
    let mut max = None;
    for _ in 0..5 {
        let q = cluster::queued_bytes(&ports)?;
        max = Some(max.unwrap_or(0).max(q));
        std::thread::sleep(Duration::from_millis(200));
    }
    max
}

/// Every shard has a leader and a put/get succeeds within [`RECOVERY`] of
/// `healed`, the node sockets then hold under [`QUEUE_LIMIT`] bytes, and
/// another put/get succeeds after that.
fn assert_recovered(rt: &Runtime, cluster: &mut ProcessCluster, healed: Instant, what: &str) {
    let deadline = healed + RECOVERY;
    let nodes = cluster.client_addrs();
    let left = deadline.saturating_duration_since(Instant::now());
    if let Err(why) = rt.block_on(probe::wait_for_leaders(
        probe::next_client_id(),
        &nodes,
        SHARDS,
        left,
    )) {
        let exited = cluster.exited();
        fail(
            cluster,
            &format!(
                "{what}: not every shard had a leader {RECOVERY:?} after the fault ended \
                 (exited nodes: {exited:?}): {why}"
            ),
        );
    }
    let leaders_at = healed.elapsed();
    let key = format!("after-{}", healed.elapsed().as_nanos());
    if let Err(why) = rt.block_on(put_get(
        &nodes,
        probe::next_client_id(),
        &key,
        "v",
        deadline,
    )) {
        let now = status_now(rt, cluster);
        fail(
            cluster,
            &format!(
                "{what}: leaders back after {leaders_at:?}, but a put/get did not succeed \
                 within {RECOVERY:?} of the fault ending: {why}\nstatus now:\n{now}"
            ),
        );
    }
    match max_queued(cluster) {
        None => println!("{what}: `ss -tn` unavailable, queued-bytes check skipped"),
        Some(q) if q >= QUEUE_LIMIT => fail(
            cluster,
            &format!(
                "{what}: node sockets hold {q} queued bytes (Send-Q + Recv-Q from `ss -tn`) \
                 after recovery, limit {QUEUE_LIMIT}"
            ),
        ),
        Some(q) => println!(
            "{what}: leaders after {leaders_at:?}, put/get ok after {:?}, {q} bytes queued",
            healed.elapsed()
        ),
    }
    // Recovered means staying recovered: once more, a second later.
    let again = Instant::now() + Duration::from_secs(3);
    if let Err(why) = rt.block_on(put_get(
        &nodes,
        probe::next_client_id(),
        &format!("{key}-again"),
        "w",
        again,
    )) {
        let now = status_now(rt, cluster);
        fail(
            cluster,
            &format!(
                "{what}: recovered after {leaders_at:?}, but {:?} after the fault ended a \
                 second put/get failed within 3 s: {why}\nstatus now:\n{now}",
                healed.elapsed()
            ),
        );
    }
}

fn status_now(rt: &Runtime, cluster: &ProcessCluster) -> String {
    let nodes = cluster.client_addrs();
    let ids = cluster.ids();
    rt.block_on(async {
        let mut client = Client::new(probe::next_client_id(), &nodes, SHARDS).unwrap();
        let s = probe::statuses(&mut client, &ids, Duration::from_secs(2)).await;
        client.close().await;
        probe::describe(&s)
    })
}

fn leaders_now(rt: &Runtime, cluster: &mut ProcessCluster) -> BTreeMap<u32, u64> {
    let nodes = cluster.client_addrs();
    match rt.block_on(probe::wait_for_leaders(
        probe::next_client_id(),
        &nodes,
        SHARDS,
        Duration::from_secs(10),
    )) {
        Ok(l) => l,
        Err(why) => fail(cluster, &format!("no leaders before the fault: {why}")),
    }
}

fn kill_and_restart(rt: &Runtime, cluster: &mut ProcessCluster, what: &str) {
    let victim = leaders_now(rt, cluster).get(&0).copied().unwrap();
    println!("{what}: kill -9 node {victim} (leader of shard 0), restart 1 s later");
    cluster.kill(victim).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    cluster.restart(victim).unwrap();
    assert_recovered(rt, cluster, Instant::now(), what);
}

fn pause_follower(rt: &Runtime, cluster: &mut ProcessCluster, what: &str) {
    let leaders = leaders_now(rt, cluster);
    let follower = cluster
        .ids()
        .into_iter()
        .find(|id| !leaders.values().any(|l| l == id))
        .unwrap();
    println!("{what}: SIGSTOP node {follower} (leads no shard) for 2 s, then SIGCONT");
    cluster.pause(follower).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    cluster.resume(follower).unwrap();
    assert_recovered(rt, cluster, Instant::now(), what);
}

fn cli_put(cluster: &ProcessCluster, key: &str, value: &str) -> cluster::CliOutcome {
    cluster
        .spawn_cli(key, "put", &[key, value])
        .unwrap()
        .wait_for(Duration::from_secs(20))
        .unwrap()
}

#[test]
fn idle_cluster_recovers_from_kill9_and_restart() {
    let _serial = serial();
    let rt = runtime();
    let mut c = cluster::started(&rt, "kill9", 3, SHARDS, STARTUP);
    let put = cli_put(&c, "before", "1");
    if !put.success() {
        fail(&mut c, &format!("`{}` failed: {put:?}", put.line));
    }
    kill_and_restart(&rt, &mut c, "idle kill -9 + restart");
    let get = c
        .spawn_cli("get-before", "get", &["before"])
        .unwrap()
        .wait_for(Duration::from_secs(20))
        .unwrap();
    if !get.success() || !get.output.contains("before = 1") {
        fail(&mut c, &format!("the write from before the crash: {get:?}"));
    }
}

#[test]
fn idle_cluster_recovers_from_a_paused_follower() {
    let _serial = serial();
    let rt = runtime();
    let mut c = cluster::started(&rt, "pause", 3, SHARDS, STARTUP);
    let put = cli_put(&c, "before", "1");
    if !put.success() {
        fail(&mut c, &format!("`{}` failed: {put:?}", put.line));
    }
    pause_follower(&rt, &mut c, "idle SIGSTOP 2 s");
}

/// Writes `load-<i>` keys one after another until stopped; returns the
/// keys acknowledged and when each was.
async fn writer(nodes: Vec<(u64, SocketAddr)>, stop: Arc<AtomicBool>) -> Vec<(String, Instant)> {
    let mut client = Client::new(probe::next_client_id(), &nodes, SHARDS).unwrap();
    let mut acked = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("load-{i}");
        i += 1;
        let put = client.put(&key, Bytes::from(key.clone()));
        if let Ok(Ok(a)) = tokio::time::timeout(Duration::from_secs(2), put).await
            && matches!(a.reply, Reply::Written { .. })
        {
            acked.push((key, Instant::now()));
        }
    }
    client.close().await;
    acked
}

#[test]
fn loaded_cluster_recovers_from_kill9_and_pause() {
    let _serial = serial();
    let rt = runtime();
    let mut c = cluster::started(&rt, "loaded", 3, SHARDS, STARTUP);
    let stop = Arc::new(AtomicBool::new(false));
    let load = rt.spawn(writer(c.client_addrs(), Arc::clone(&stop)));
    std::thread::sleep(Duration::from_millis(500));
    kill_and_restart(&rt, &mut c, "loaded kill -9 + restart");
    pause_follower(&rt, &mut c, "loaded SIGSTOP 2 s");
    let healed = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let acked =
        match rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), load).await }) {
            Ok(Ok(acked)) => acked,
            other => fail(
                &mut c,
                &format!("the background writer did not stop: {other:?}"),
            ),
        };
    let after = acked.iter().filter(|(_, at)| *at > healed).count();
    if after == 0 {
        fail(
            &mut c,
            &format!(
                "the background writer had {} writes acknowledged, none in the 500 ms after \
                 the last fault",
                acked.len()
            ),
        );
    }
    // Every acknowledged write is still there.
    let nodes = c.client_addrs();
    let missing = rt.block_on(async {
        let mut client = Client::new(probe::next_client_id(), &nodes, SHARDS).unwrap();
        let mut missing = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        for (key, _) in &acked {
            let got = tokio::time::timeout_at(deadline, client.get(key)).await;
            match got {
                Ok(Ok(a)) if matches!(&a.reply, Reply::Value { value: Some((v, _)), .. } if v == key.as_bytes()) => {}
                other => missing.push(format!("{key}: {other:?}")),
            }
        }
        client.close().await;
        missing
    });
    if !missing.is_empty() {
        fail(
            &mut c,
            &format!(
                "{} of {} acknowledged background writes not read back: {:?}",
                missing.len(),
                acked.len(),
                missing.iter().take(10).collect::<Vec<_>>()
            ),
        );
    }
    println!(
        "background writer: {} writes acknowledged, all read back",
        acked.len()
    );
}

/// Reads `keys` (in process) and returns those whose value differs from
/// the expected one, with what was read.
fn missing_keys(
    rt: &Runtime,
    c: &ProcessCluster,
    keys: &[(String, String)],
) -> Vec<(String, String)> {
    let nodes = c.client_addrs();
    rt.block_on(async {
        let mut client = Client::new(probe::next_client_id(), &nodes, SHARDS).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut missing = Vec::new();
        for (key, value) in keys {
            match tokio::time::timeout_at(deadline, client.get(key)).await {
                Ok(Ok(a)) if matches!(&a.reply, Reply::Value { value: Some((v, _)), .. } if v == value.as_bytes()) => {}
                Ok(Ok(a)) => missing.push((key.clone(), format!("{:?}", a.reply))),
                other => missing.push((key.clone(), format!("{other:?}"))),
            }
        }
        client.close().await;
        missing
    })
}

/// Runs one `put` CLI per (key, value, extra flags) at once; every one must
/// exit 0 and every key be read back.
fn parallel_puts(rt: &Runtime, c: &mut ProcessCluster, puts: &[(String, String, Vec<String>)]) {
    let procs: Vec<_> = puts
        .iter()
        .map(|(k, v, flags)| {
            let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
            args.extend([k.as_str(), v.as_str()]);
            c.spawn_cli(k, "put", &args).unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let outcomes: Vec<_> = procs
        .into_iter()
        .map(|p| p.wait_until(deadline).unwrap())
        .collect();
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.success()).collect();
    if !failed.is_empty() {
        fail(
            c,
            &format!(
                "{} of {} parallel `put` CLIs did not exit 0 within 60 s; first: {:?}",
                failed.len(),
                outcomes.len(),
                failed.iter().take(3).collect::<Vec<_>>()
            ),
        );
    }
    let keys: Vec<(String, String)> = puts
        .iter()
        .map(|(k, v, _)| (k.clone(), v.clone()))
        .collect();
    let missing = missing_keys(rt, c, &keys);
    if !missing.is_empty() {
        let said: Vec<String> = puts
            .iter()
            .zip(&outcomes)
            .filter(|((k, _, _), _)| missing.iter().any(|(m, _)| m == k))
            .take(5)
            .map(|(_, o)| format!("`{}` said {:?}", o.line, o.output.trim()))
            .collect();
        fail(
            c,
            &format!(
                "{} of {} writes acknowledged by `put` (exit 0) are not found by `get`: {:?}; \
                 their CLIs: {said:?}",
                missing.len(),
                puts.len(),
                missing
            ),
        );
    }
}

#[test]
fn parallel_put_clis_with_default_flags_lose_nothing() {
    let _serial = serial();
    let rt = runtime();
    let mut c = cluster::started(&rt, "parallel", 3, SHARDS, STARTUP);
    let puts: Vec<_> = (0..64)
        .map(|i| (format!("par-{i}"), format!("value-{i}"), Vec::new()))
        .collect();
    parallel_puts(&rt, &mut c, &puts);
}

#[test]
fn put_clis_sharing_a_client_id_lose_nothing() {
    let _serial = serial();
    let rt = runtime();
    let mut c = cluster::started(&rt, "same-id", 3, SHARDS, STARTUP);
    // Two at a time, ten times: each pair starts within a few milliseconds.
    for round in 0..10 {
        let puts: Vec<_> = (0..2)
            .map(|i| {
                (
                    format!("same-{round}-{i}"),
                    format!("value-{round}-{i}"),
                    vec!["--client-id".to_owned(), "4242".to_owned()],
                )
            })
            .collect();
        parallel_puts(&rt, &mut c, &puts);
    }
}

#[test]
fn get_against_a_dead_address_fails_fast_and_names_it() {
    let _serial = serial();
    let bin = cluster::binary().unwrap();
    let dir = cluster::run_dir("dead").unwrap();
    let addr = cluster::free_addr().unwrap();
    let nodes = format!("1={addr}");
    let out = cluster::spawn_cli(&bin, &dir, "get", "get", &nodes, &["colour"])
        .unwrap()
        .wait_for(Duration::from_secs(5))
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let Some(status) = out.status else {
        panic!(
            "`{}` against {addr}, where nothing listens, was still running after {:?} \
             (killed); expected a non-zero exit within 2 s. Output: {:?}",
            out.line, out.elapsed, out.output
        );
    };
    assert!(
        !status.success(),
        "`{}` against {addr}, where nothing listens, exited 0 after {:?}: {:?}",
        out.line,
        out.elapsed,
        out.output
    );
    assert!(
        out.elapsed <= Duration::from_secs(2),
        "`{}` against {addr}, where nothing listens, took {:?} to fail (limit 2 s): {:?}",
        out.line,
        out.elapsed,
        out.output
    );
    assert!(
        out.output.contains(&addr.to_string()),
        "`{}` failed ({status}) but its output does not name {addr}: {:?}",
        out.line,
        out.output
    );
}

/// Reads from `stream` until the peer closes it or `bound` passes;
/// returns how long the close took.
fn time_to_close(mut stream: TcpStream, bound: Duration) -> Option<Duration> {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1024];
    while start.elapsed() < bound {
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            // The node's hello, or anything else: keep waiting for the close.
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

#[test]
fn stalled_raw_connections_are_closed() {
    let _serial = serial();
    let mut c = ProcessCluster::start("raw", 1).unwrap();
    let addr = c.client_addrs()[0].1;
    let deadline = Instant::now() + STARTUP;
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            fail(&mut c, &format!("node never listened on {addr}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let hello = {
        // len 8, the transport's control channel, no flags, peer id 4242.
        let mut h = vec![0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0];
        h.extend_from_slice(&4242u64.to_be_bytes());
        h
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("sends nothing", Vec::new()),
        ("sends 6 of a hello header's 9 bytes", hello[..6].to_vec()),
        (
            "sends a hello, then 7 of a 64-byte client frame's 9 header bytes",
            [&hello[..], &[0, 0, 0, 64, 0, 0x10, 0]].concat(),
        ),
    ];
    let bound = Duration::from_secs(30);
    let threads: Vec<_> = cases
        .into_iter()
        .map(|(what, bytes)| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&bytes).unwrap();
            std::thread::spawn(move || (what, time_to_close(s, bound)))
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (what, closed) in &results {
        println!("a connection that {what}: closed after {closed:?}");
    }
    let open: Vec<_> = results
        .iter()
        .filter(|(_, c)| c.is_none())
        .map(|(w, _)| *w)
        .collect();
    if !open.is_empty() {
        fail(
            &mut c,
            &format!(
                "still open after {bound:?}, never closed by the node: connections that {open:?}"
            ),
        );
    }
}
