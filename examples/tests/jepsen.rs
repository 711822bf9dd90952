//! A Jepsen-style test of kv-cluster as three real node processes.
//!
//! Every pair of nodes talks through a TCP proxy (nodes are started with
//! `--peers` at the proxies), so links can be cut both ways, one way, or
//! stalled. Client workers issue random reads and writes of unique values
//! on a few keys and record a history of invoke/ok/fail/info events. A
//! nemesis drawn from a printed seed kills -9 and restarts nodes, pauses
//! them with SIGSTOP/SIGCONT, isolates one, drops one direction of a link
//! or stalls a link. After the faults heal, the history (with a final read
//! of every key) must lose no acknowledged write and be linearizable.
//!
//! The `session` workload runs the same faults with every read a session
//! read (`Consistency::Session`, spread over all replicas): each worker is
//! one client session, and its history must keep read-your-writes,
//! monotonic reads, monotonic writes and writes-follow-reads
//! (`jepsen::session`) and lose no acknowledged write; reads across
//! sessions may be stale, so it is not checked for linearizability.
//!
//! `QUORATE_JEPSEN_SECS` sets the length of the fault schedule (default
//! 30 s; 15 s for the session workload), `QUORATE_JEPSEN_SEED` replays a
//! schedule. On failure the node
//! logs, the history and the fault log are kept in the directory the
//! failure message names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quorate_examples::jepsen::check::{self, LostWrite};
use quorate_examples::jepsen::cluster;
use quorate_examples::jepsen::history::{self, Entry, History, Op, Outcome};
use quorate_examples::jepsen::nemesis;
use quorate_examples::jepsen::probe;
use quorate_examples::jepsen::session::{self, SessionEvent, SessionOp};
use quorate_examples::kv_cluster::client::Client;
use quorate_examples::kv_cluster::protocol::{Consistency, Reply};

const SHARDS: u32 = 2;
const KEYS: u64 = 5;
const WORKERS: u64 = 5;
/// How long a worker waits for one operation before calling it
/// indeterminate.
const OP_TIMEOUT: Duration = Duration::from_millis(1500);
const STARTUP: Duration = Duration::from_secs(20);
/// How long the cluster has, after the last fault heals, to have a leader
/// for every shard again.
const RECOVERY: Duration = Duration::from_secs(10);

fn key_name(key: u64) -> String {
    format!("jk{key}")
}

fn read_value(reply: &Reply) -> Option<Outcome> {
    match reply {
        Reply::Value { value: None, .. } => Some(Outcome::Read(None)),
        Reply::Value {
            value: Some((v, _)),
            ..
        } => Some(Outcome::Read(Some(
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(u64::MAX),
        ))),
        _ => None,
    }
}

/// Which reads the workers make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    /// Linearizable reads: the whole history must be linearizable.
    Linearizable,
    /// Session reads: each worker's session keeps the session guarantees.
    Session,
}

/// What a worker shares with the test.
struct Shared {
    history: History,
    /// Every worker's operations as its session saw them (session workload).
    sessions: Mutex<Vec<SessionEvent>>,
    stop: AtomicBool,
    idle: AtomicBool,
    values: AtomicU64,
}

impl Shared {
    fn record(&self, event: SessionEvent) {
        let mut s = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        s.push(event);
    }
}

async fn worker(
    id: u64,
    nodes: Vec<(u64, SocketAddr)>,
    shared: Arc<Shared>,
    seed: u64,
    workload: Workload,
) {
    let (history, stop, idle, values) =
        (&shared.history, &shared.stop, &shared.idle, &shared.values);
    let mut rng = fastrand::Rng::with_seed(seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut client = Client::new(100 + id, &nodes, SHARDS).unwrap();
    while !stop.load(Ordering::Relaxed) {
        if idle.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let key = rng.u64(..KEYS);
        if rng.bool() {
            let value = values.fetch_add(1, Ordering::Relaxed);
            let at = history.invoke(id, Op::Write { key, value });
            let name = key_name(key);
            let shard = client.shard_of(&name);
            let put = client.put(&name, Bytes::from(value.to_string()));
            let mut index = None;
            let outcome = match tokio::time::timeout(OP_TIMEOUT, put).await {
                Ok(Ok(a)) => match a.reply {
                    Reply::Written { index: i } => {
                        index = Some(i);
                        Outcome::Written
                    }
                    Reply::Refused(why) => Outcome::Fail(why),
                    Reply::NoSuchShard => Outcome::Fail("no such shard".to_owned()),
                    other => Outcome::Info(format!("{other:?}")),
                },
                Ok(Err(e)) => Outcome::Info(e.to_string()),
                Err(_) => Outcome::Info("timeout".to_owned()),
            };
            history.complete(at, outcome);
            shared.record(SessionEvent {
                session: id,
                op: SessionOp::Write {
                    shard,
                    key: name,
                    value,
                    index,
                },
            });
        } else {
            let at = history.invoke(id, Op::Read { key });
            let name = key_name(key);
            let consistency = match workload {
                Workload::Linearizable => Consistency::Linearizable,
                Workload::Session => Consistency::Session,
            };
            let shard = client.shard_of(&name);
            let get = client.get_with(&name, consistency);
            let outcome = match tokio::time::timeout(OP_TIMEOUT, get).await {
                Ok(Ok(a)) => {
                    read_value(&a.reply).unwrap_or_else(|| Outcome::Fail(format!("{:?}", a.reply)))
                }
                Ok(Err(e)) => Outcome::Info(e.to_string()),
                Err(_) => Outcome::Info("timeout".to_owned()),
            };
            if let Outcome::Read(value) = outcome {
                shared.record(SessionEvent {
                    session: id,
                    op: SessionOp::Read {
                        shard,
                        key: name,
                        value,
                    },
                });
            }
            history.complete(at, outcome);
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(0..20))).await;
    }
    client.close().await;
}

/// Reads every key once (all within 8 s), recorded in the history as
/// client 0's.
async fn final_reads(
    nodes: &[(u64, SocketAddr)],
    history: &History,
) -> (BTreeMap<u64, Option<u64>>, Vec<String>) {
    let mut client = Client::new(99, nodes, SHARDS).unwrap();
    let mut finals = BTreeMap::new();
    let mut failed = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    for key in 0..KEYS {
        let at = history.invoke(0, Op::Read { key });
        let got = tokio::time::timeout_at(deadline, client.get(&key_name(key))).await;
        let outcome = match &got {
            Ok(Ok(a)) => read_value(&a.reply),
            _ => None,
        };
        match outcome {
            Some(outcome) => {
                if let Outcome::Read(v) = outcome {
                    finals.insert(key, v);
                }
                history.complete(at, outcome);
            }
            None => {
                failed.push(format!("final read of {}: {got:?}", key_name(key)));
                history.complete(at, Outcome::Info(format!("{got:?}")));
            }
        }
    }
    client.close().await;
    (finals, failed)
}

/// Who leads `shard` now, by a majority of the nodes that answer quickly.
fn leader_of(rt: &tokio::runtime::Runtime, nodes: &[(u64, SocketAddr)], shard: u32) -> Option<u64> {
    let ids: Vec<u64> = nodes.iter().map(|&(id, _)| id).collect();
    let statuses = rt.block_on(async {
        let mut client = Client::new(probe::next_client_id(), nodes, SHARDS).ok()?;
        let s = probe::statuses(&mut client, &ids, Duration::from_millis(300)).await;
        client.close().await;
        Some(s)
    })?;
    let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
    for replicas in statuses.values().flatten() {
        if let Some(r) = replicas.iter().find(|r| r.shard == shard && r.leader != 0) {
            *votes.entry(r.leader).or_default() += 1;
        }
    }
    votes
        .into_iter()
        .find(|&(_, n)| n * 2 > ids.len())
        .map(|(leader, _)| leader)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn kv_cluster_processes_under_faults_stay_linearizable() {
    run(Workload::Linearizable, "jepsen", 30);
}

/// The session workload: session reads from every replica under the same
/// faults keep each session's guarantees.
#[test]
fn kv_cluster_processes_under_faults_keep_session_guarantees() {
    run(Workload::Session, "jepsen-session", 15);
}

fn run(workload: Workload, name: &str, default_secs: u64) {
    // One cluster of processes at a time: two would starve each other.
    let _serial = cluster::serial();
    let seed = env_u64("QUORATE_JEPSEN_SEED").unwrap_or_else(|| {
        // No OS randomness needed: the clock differs from run to run.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.map_or(0, |d| d.as_nanos() as u64)
    });
    let secs = env_u64("QUORATE_JEPSEN_SECS").unwrap_or(default_secs);
    println!(
        "jepsen {workload:?}: seed {seed}, {secs} s of faults (replay: QUORATE_JEPSEN_SEED={seed})"
    );
    let (net, mut cluster) = cluster::start_proxied(name).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let nodes = cluster.client_addrs();
    let ids = cluster.ids();
    let mut problems: Vec<String> = Vec::new();
    if let Err(why) = rt.block_on(probe::wait_for_leaders(
        probe::next_client_id(),
        &nodes,
        SHARDS,
        STARTUP,
    )) {
        problems.push(format!("no leaders at startup: {why}"));
    }

    let shared = Arc::new(Shared {
        history: History::new(),
        sessions: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        idle: AtomicBool::new(false),
        values: AtomicU64::new(1),
    });
    let (history, stop, idle) = (&shared.history, &shared.stop, &shared.idle);
    let workers: Vec<_> = (1..=WORKERS)
        .map(|w| {
            rt.spawn(worker(
                w,
                nodes.clone(),
                Arc::clone(&shared),
                seed,
                workload,
            ))
        })
        .collect();

    let mut fault_log = String::new();
    let steps = nemesis::schedule(seed, &ids, SHARDS, Duration::from_secs(secs));
    for step in &steps {
        let fault = match step
            .at_leader_of
            .and_then(|shard| leader_of(&rt, &nodes, shard))
        {
            Some(leader) => step.fault.aimed_at(leader, &ids),
            None => step.fault.clone(),
        };
        idle.store(step.idle, Ordering::Relaxed);
        let clients = if step.idle { ", clients idle" } else { "" };
        let at = history.now() as f64 / 1e6;
        let _ = writeln!(
            fault_log,
            "{at:.3} ms: {fault} for {:?}, then {:?} quiet{clients}",
            step.hold, step.quiet
        );
        println!("jepsen: {fault} for {:?}{clients}", step.hold);
        if let Err(e) = fault.start(&mut cluster, &net) {
            problems.push(format!("could not inject {fault}: {e}"));
        }
        std::thread::sleep(step.hold);
        if let Err(e) = fault.heal(&mut cluster, &net) {
            problems.push(format!("could not heal {fault}: {e}"));
        }
        std::thread::sleep(step.quiet);
        for (id, status) in cluster.exited() {
            problems.push(format!(
                "node {id} exited on its own ({status}) after {fault}"
            ));
            let _ = cluster.restart(id);
        }
    }
    idle.store(false, Ordering::Relaxed);
    net.heal();
    let _ = cluster.resume_all();
    let healed = Instant::now();
    match rt.block_on(probe::wait_for_leaders(
        probe::next_client_id(),
        &nodes,
        SHARDS,
        RECOVERY,
    )) {
        Ok(leaders) => println!(
            "jepsen: leaders {leaders:?} {:?} after the last heal",
            healed.elapsed()
        ),
        Err(why) => problems.push(format!(
            "not every shard had a leader {RECOVERY:?} after the faults healed: {why}"
        )),
    }
    // Let the workers see the healed cluster, then stop them.
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for w in workers {
            if tokio::time::timeout(OP_TIMEOUT * 4, w).await.is_err() {
                problems.push("a worker did not stop".to_owned());
            }
        }
    });
    let (finals, failed_finals) = rt.block_on(final_reads(&nodes, history));
    problems.extend(failed_finals);

    let entries = history.entries();
    let checked = Instant::now();
    let mut verdict = check::check(&entries, &finals);
    let session_events = shared
        .sessions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let session_violations = session::check_sessions(&session_events);
    if workload == Workload::Session {
        // Stale reads across sessions are allowed: only lost writes and
        // the session guarantees count.
        verdict.violation = None;
        if session_events
            .iter()
            .all(|e| matches!(e.op, SessionOp::Write { .. }))
        {
            problems.push("no session read completed".to_owned());
        }
    }
    if !session_violations.is_empty() {
        problems.push(format!(
            "{} session guarantee violations, first 5: {:#?}",
            session_violations.len(),
            &session_violations[..session_violations.len().min(5)]
        ));
    }
    let counts = history::counts(&entries);
    let slowest = entries
        .iter()
        .filter_map(|e| e.ret.map(|r| r.saturating_sub(e.call)))
        .max()
        .map_or(0.0, |ns| ns as f64 / 1e6);
    let summary = format!(
        "jepsen summary (seed {seed}): {} operations: {} ok ({} reads), {} fail, {} info, \
         slowest {slowest:.1} ms; \
         {} faults injected; {} acknowledged writes, {} lost (final reads of {}/{KEYS} keys \
         succeeded); linearizable: {}; session guarantees over {} events: {} violations; \
         checked in {:?}; {} bytes through the proxies",
        entries.len(),
        counts.ok,
        counts.ok_reads,
        counts.fail,
        counts.info,
        steps.len(),
        verdict.acked_writes,
        verdict.lost.len(),
        finals.len(),
        match &verdict.violation {
            None if workload == Workload::Session => "not checked (session reads)".to_owned(),
            None => "yes".to_owned(),
            Some(v) => format!(
                "NO, key {} ({} operations, longest linearizable prefix {})",
                key_name(v.partition),
                v.operations,
                v.longest_prefix.len()
            ),
        },
        session_events.len(),
        session_violations.len(),
        checked.elapsed(),
        net.forwarded(),
    );
    println!("{summary}");
    if counts.ok_reads == 0 || verdict.acked_writes == 0 {
        problems.push("the workers completed no reads or no writes at all".to_owned());
    }
    if verdict.ok() && problems.is_empty() {
        return;
    }
    cluster.keep();
    let dir = cluster.dir().to_path_buf();
    std::fs::write(dir.join("history.txt"), history::render(&entries)).unwrap();
    std::fs::write(dir.join("faults.txt"), &fault_log).unwrap();
    let lost: Vec<String> = verdict.lost.iter().take(10).map(describe_lost).collect();
    panic!(
        "{summary}\nlost writes (first 10): {lost:#?}\nproblems: {problems:#?}\nfaults:\n{fault_log}\
         history, faults and node logs kept in {}",
        dir.display()
    );
}

fn describe_lost(l: &LostWrite) -> String {
    format!(
        "{} = {} acknowledged [{:.3} ms, {:.3} ms], at the end {:?}: {}",
        key_name(l.key),
        l.value,
        l.call as f64 / 1e6,
        l.ret as f64 / 1e6,
        l.found,
        l.why
    )
}

/// Hand-made histories: the checker glue must flag a lost write and a
/// stale read, and accept indeterminate writes that did or did not apply.
#[test]
fn checker_glue_catches_lost_writes_and_stale_reads() {
    let op = |client, op, call, ret: Option<u64>, outcome: Option<Outcome>| Entry {
        client,
        op,
        call,
        ret,
        outcome,
    };
    let write = |key, value, call, ret| {
        op(
            1,
            Op::Write { key, value },
            call,
            Some(ret),
            Some(Outcome::Written),
        )
    };
    let read = |key, value, call, ret| {
        op(
            2,
            Op::Read { key },
            call,
            Some(ret),
            Some(Outcome::Read(value)),
        )
    };
    let finals = |pairs: &[(u64, Option<u64>)]| pairs.iter().copied().collect();

    // A lost write: 2 acknowledged after 1, yet the key ends at 1.
    let h = [
        write(0, 1, 0, 10),
        write(0, 2, 20, 30),
        read(0, Some(1), 40, 50),
    ];
    let v = check::check(&h, &finals(&[(0, Some(1))]));
    assert_eq!(v.lost.len(), 1, "{v:?}");
    assert_eq!((v.lost[0].value, v.lost[0].found), (2, Some(1)));
    assert!(
        v.violation.is_some(),
        "a lost write is also not linearizable"
    );
    // The key gone altogether.
    let h = [write(0, 1, 0, 10), read(0, None, 40, 50)];
    let v = check::check(&h, &finals(&[(0, None)]));
    assert_eq!(v.lost.len(), 1, "{v:?}");

    // A stale read: 2 was acknowledged before the read began, the read saw
    // 1; the final state is right, so nothing is lost.
    let h = [
        write(3, 1, 0, 10),
        write(3, 2, 20, 30),
        read(3, Some(1), 40, 50),
        read(3, Some(2), 60, 70),
    ];
    let v = check::check(&h, &finals(&[(3, Some(2))]));
    assert!(v.lost.is_empty(), "{v:?}");
    assert_eq!(v.violation.as_ref().map(|n| n.partition), Some(3), "{v:?}");

    // The same read overlapping the second write is fine.
    let h = [
        write(3, 1, 0, 10),
        write(3, 2, 20, 45),
        read(3, Some(1), 40, 50),
        read(3, Some(2), 60, 70),
    ];
    assert!(check::check(&h, &finals(&[(3, Some(2))])).ok());

    // An indeterminate write may take effect, even long after it timed out...
    let info = |key, value, call, ret| {
        op(
            4,
            Op::Write { key, value },
            call,
            ret,
            Some(Outcome::Info("timeout".into())),
        )
    };
    let h = [
        write(1, 1, 0, 10),
        info(1, 2, 20, Some(30)),
        read(1, Some(1), 40, 50),
        read(1, Some(2), 60, 70),
    ];
    assert!(check::check(&h, &finals(&[(1, Some(2))])).ok());
    // ... or never: and one never completed counts the same.
    let h = [
        write(1, 1, 0, 10),
        info(1, 2, 20, None),
        read(1, Some(1), 40, 50),
    ];
    assert!(check::check(&h, &finals(&[(1, Some(1))])).ok());
    // But once it is seen, it cannot be unseen.
    let h = [
        write(1, 1, 0, 10),
        info(1, 2, 20, Some(30)),
        read(1, Some(2), 40, 50),
        read(1, Some(1), 60, 70),
    ];
    assert!(
        check::check(&h, &finals(&[(1, Some(1))]))
            .violation
            .is_some()
    );
    // A failed write never takes effect.
    let h = [
        write(2, 1, 0, 10),
        op(
            4,
            Op::Write { key: 2, value: 2 },
            20,
            Some(30),
            Some(Outcome::Fail("refused".into())),
        ),
        read(2, Some(2), 40, 50),
    ];
    let v = check::check(&h, &finals(&[(2, Some(2))]));
    assert!(v.violation.is_some() && v.lost.len() == 1, "{v:?}");
    // A value no one wrote.
    let h = [write(2, 1, 0, 10), read(2, Some(u64::MAX), 40, 50)];
    let v = check::check(&h, &finals(&[(2, Some(u64::MAX))]));
    assert!(v.violation.is_some() && v.lost.len() == 1, "{v:?}");
}
