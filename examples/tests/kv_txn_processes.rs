//! Cross-shard transactions against real `kv-cluster node` processes: the
//! `txn` CLI commits keys on both shards and `get` shows every one; a
//! failed cas aborts with nothing written; and with the anchor shard's
//! leader killed (-9) and restarted, and with transaction CLIs themselves
//! killed mid-way (crashed coordinators), every transaction is found
//! either whole or not at all. Runs one test at a time (the process
//! tests' lock); the run directory is kept on failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::needless_range_loop)]

use std::net::SocketAddr;
use std::time::Duration;

use quorate_examples::jepsen::cluster::{self, ProcessCluster, fail, runtime, serial};
use quorate_examples::jepsen::probe;
use quorate_examples::kv_cluster::client::Client;
use quorate_examples::kv_cluster::protocol::Reply;

const SHARDS: u32 = 2;
/// How long a fresh cluster has to elect its first leaders.
const STARTUP: Duration = Duration::from_secs(20);
/// Bound of one CLI run (a read waits out a crashed coordinator's intent:
/// its 5 s time to live, then a push).
const CLI: Duration = Duration::from_secs(40);

/// `n` keys named `prefix-<i>` for each shard: `[shard][i]`.
fn keys_by_shard(nodes: &[(u64, SocketAddr)], prefix: &str, n: usize) -> Vec<Vec<String>> {
    let client = Client::new(probe::next_client_id(), nodes, SHARDS).unwrap();
    let mut out = vec![Vec::new(); SHARDS as usize];
    let mut i = 0;
    while out.iter().any(|k| k.len() < n) {
        let key = format!("{prefix}-{i}");
        i += 1;
        let shard = client.shard_of(&key) as usize;
        if out[shard].len() < n {
            out[shard].push(key);
        }
    }
    out
}

/// The value of `key` as the `get` CLI prints it (`None`: not found).
fn cli_get(c: &mut ProcessCluster, key: &str) -> Option<String> {
    let get = c
        .spawn_cli(&format!("get-{key}"), "get", &[key])
        .unwrap()
        .wait_for(CLI)
        .unwrap();
    if !get.success() {
        fail(c, &format!("`{}` failed: {get:?}", get.line));
    }
    let line = get.output.lines().find(|l| l.starts_with(key))?.to_owned();
    if line.starts_with(&format!("{key} not found")) {
        return None;
    }
    let rest = line.strip_prefix(&format!("{key} = "))?;
    Some(rest.split(" (HLC").next().unwrap_or(rest).to_owned())
}

#[test]
fn txn_cli_commits_across_shards_and_a_failed_cas_writes_nothing() {
    let _serial = serial();
    let rt = runtime();
    let mut c = cluster::started(&rt, "txn-cli", 3, SHARDS, STARTUP);
    let keys = keys_by_shard(&c.client_addrs(), "t", 2);
    let (a, b, r) = (&keys[0][0], &keys[1][0], &keys[1][1]);
    let txn = c
        .spawn_cli("txn", "txn", &["put", a, "1", "put", b, "2", "get", r])
        .unwrap()
        .wait_for(CLI)
        .unwrap();
    if !txn.success() || !txn.output.contains("committed") {
        fail(&mut c, &format!("`{}`: {txn:?}", txn.line));
    }
    if !txn.output.contains(&format!("{r} not found")) {
        fail(&mut c, &format!("the read of {r} not shown: {txn:?}"));
    }
    for (key, want) in [(a, "1"), (b, "2")] {
        let got = cli_get(&mut c, key);
        if got.as_deref() != Some(want) {
            fail(
                &mut c,
                &format!("after the txn, get {key}: {got:?}, expected {want}"),
            );
        }
    }
    // The cas on b expects 9 (it holds 2): aborted, and a's new value is not in.
    let cas = c
        .spawn_cli(
            "cas",
            "txn",
            &["put", a, "changed", "cas", b, "9", "3", "get", r],
        )
        .unwrap()
        .wait_for(CLI)
        .unwrap();
    if cas.status.and_then(|s| s.code()) != Some(1) || !cas.output.contains("aborted") {
        fail(
            &mut c,
            &format!("a failing cas must abort with exit 1: {cas:?}"),
        );
    }
    for (key, want) in [(a, "1"), (b, "2")] {
        let got = cli_get(&mut c, key);
        if got.as_deref() != Some(want) {
            fail(
                &mut c,
                &format!("after the aborted txn, get {key}: {got:?}, expected {want}"),
            );
        }
    }
    // And a cas that holds commits.
    let ok = c
        .spawn_cli("cas-ok", "txn", &["cas", b, "2", "3", "cas", a, "1", "4"])
        .unwrap()
        .wait_for(CLI)
        .unwrap();
    if !ok.success() {
        fail(&mut c, &format!("`{}`: {ok:?}", ok.line));
    }
    let got = (cli_get(&mut c, a), cli_get(&mut c, b));
    if got != (Some("4".into()), Some("3".into())) {
        fail(&mut c, &format!("after the cas txn: {got:?}"));
    }
    // `-` expects the key absent: r is, a is not.
    let absent = c
        .spawn_cli("cas-absent", "txn", &["cas", r, "-", "new", "get", b])
        .unwrap()
        .wait_for(CLI)
        .unwrap();
    if !absent.success() || !absent.output.contains(&format!("{b} = 3")) {
        fail(&mut c, &format!("`{}`: {absent:?}", absent.line));
    }
    let present = c
        .spawn_cli("cas-present", "txn", &["cas", a, "-", "x"])
        .unwrap()
        .wait_for(CLI)
        .unwrap();
    if present.status.and_then(|s| s.code()) != Some(1) {
        fail(
            &mut c,
            &format!("cas expecting a present key absent: {present:?}"),
        );
    }
    if cli_get(&mut c, r).as_deref() != Some("new") {
        fail(&mut c, "the cas on an absent key did not write it");
    }
    let bad = c
        .spawn_cli("bad", "txn", &["put", a])
        .unwrap()
        .wait_for(CLI)
        .unwrap();
    if bad.success() {
        fail(
            &mut c,
            &format!("a malformed operation list must fail: {bad:?}"),
        );
    }
}

#[test]
fn txns_are_whole_or_absent_across_kill9_of_a_leader_and_of_coordinators() {
    let _serial = serial();
    let rt = runtime();
    let mut c = cluster::started(&rt, "txn-kill9", 3, SHARDS, STARTUP);
    const TXNS: usize = 12;
    let keys = keys_by_shard(&c.client_addrs(), "k", TXNS);
    let leaders = match rt.block_on(probe::wait_for_leaders(
        probe::next_client_id(),
        &c.client_addrs(),
        SHARDS,
        Duration::from_secs(10),
    )) {
        Ok(l) => l,
        Err(why) => fail(&mut c, &format!("no leaders: {why}")),
    };
    // Transaction i writes i under keys[0][i] (its anchor, shard 0) and
    // keys[1][i]. Each CLI runs on its own; some are killed at once (a
    // coordinator crashing mid-way), and halfway the leader of shard 0 (where
    // every record lives) is killed and restarted.
    let mut cli = Vec::new();
    for i in 0..TXNS {
        let v = i.to_string();
        let args = ["put", &keys[0][i], &v, "put", &keys[1][i], &v];
        let p = c.spawn_cli(&format!("txn-{i}"), "txn", &args).unwrap();
        if i % 3 == 1 {
            // Let it get part of the way.
            std::thread::sleep(Duration::from_millis(30 + 10 * i as u64));
            let mut p = p;
            let _ = p.kill();
            cli.push((i, None));
            continue;
        }
        if i == TXNS / 2 {
            let victim = leaders[&0];
            println!("kill -9 node {victim} (leader of shard 0) while txn {i} runs");
            std::thread::sleep(Duration::from_millis(20));
            c.kill(victim).unwrap();
            std::thread::sleep(Duration::from_millis(500));
            c.restart(victim).unwrap();
        }
        cli.push((i, Some(p.wait_for(CLI).unwrap())));
    }
    let mut committed = Vec::new();
    for (i, outcome) in &cli {
        if let Some(o) = outcome {
            if o.success() && o.output.contains("committed") {
                committed.push(*i);
            } else if o.status.is_some_and(|s| s.code() == Some(0)) {
                fail(
                    &mut c,
                    &format!("txn {i} exited 0 without committing: {o:?}"),
                );
            }
        }
    }
    // Read everything back in process: reads wait out (and push away) the
    // intents of the killed coordinators.
    let nodes = c.client_addrs();
    let reads = rt.block_on(async {
        let mut client = Client::new(probe::next_client_id(), &nodes, SHARDS).unwrap();
        let mut reads = Vec::new();
        for i in 0..TXNS {
            let mut pair = Vec::new();
            for shard_keys in &keys {
                let key = &shard_keys[i];
                let got = tokio::time::timeout(CLI, client.get(key)).await;
                pair.push(match got {
                    Ok(Ok(a)) => match a.reply {
                        Reply::Value { value, .. } => {
                            Ok(value.map(|(v, _)| String::from_utf8_lossy(&v).into_owned()))
                        }
                        other => Err(format!("{other:?}")),
                    },
                    other => Err(format!("{other:?}")),
                });
            }
            reads.push(pair);
        }
        client.close().await;
        reads
    });
    for (i, pair) in reads.iter().enumerate() {
        let want = i.to_string();
        match (&pair[0], &pair[1]) {
            (Ok(Some(a)), Ok(Some(b))) if *a == want && *b == want => {}
            (Ok(None), Ok(None)) if !committed.contains(&i) => {}
            other => fail(
                &mut c,
                &format!(
                    "txn {i} (committed: {}) is partial or wrong: {other:?}",
                    committed.contains(&i)
                ),
            ),
        }
    }
    println!(
        "{} of {TXNS} transactions acknowledged; every one of {TXNS} whole or absent",
        committed.len()
    );
    if committed.len() < TXNS / 2 {
        fail(
            &mut c,
            &format!("only {committed:?} of the transactions that ran to the end committed"),
        );
    }
}
