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
//! The `bank` workload runs the same faults over cross-shard transactions
//! (`Client::txn_with`): transfers between accounts on both shards as
//! two-key compare-and-sets, and reads of every account in one
//! transaction, with clients now and then stopping mid-transaction. Every
//! committed read of all accounts must see the opening total, and the
//! history must be strictly serializable with no read of a partial or
//! aborted transfer (`jepsen::txn::check_bank`).
//!
//! `QUORATE_JEPSEN_SECS` sets the length of the fault schedule (default
//! 30 s; 15 s for the session workload, 10 s for the bank), `QUORATE_JEPSEN_SEED` replays a
//! schedule. On failure the node
//! logs, the history and the fault log are kept in the directory the
//! failure message names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
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
use quorate_examples::jepsen::txn::{
    Balance, BankMop, Isolation, TxnHistory, TxnOutcome, check_bank, render,
};
use quorate_examples::kv_cluster::client::Client;
use quorate_examples::kv_cluster::protocol::{Consistency, Reply};
use quorate_examples::kv_cluster::txn::{TxnConfig, TxnOp, TxnOutcome as CoordinatorOutcome};

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

/// The run's seed (`QUORATE_JEPSEN_SEED`, or one from the clock) and the
/// length of its fault schedule in seconds (`QUORATE_JEPSEN_SECS`, or
/// `default_secs`), printed with how to replay the run.
fn seed_and_secs(workload: &str, default_secs: u64) -> (u64, u64) {
    let seed = env_u64("QUORATE_JEPSEN_SEED").unwrap_or_else(|| {
        // No OS randomness needed: the clock differs from run to run.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.map_or(0, |d| d.as_nanos() as u64)
    });
    let secs = env_u64("QUORATE_JEPSEN_SECS").unwrap_or(default_secs);
    println!(
        "jepsen {workload}: seed {seed}, {secs} s of faults (replay: QUORATE_JEPSEN_SEED={seed})"
    );
    (seed, secs)
}

/// Waits up to `STARTUP` for every shard to have a leader; a problem of
/// the run if one has none.
fn leaders_at_startup(
    rt: &tokio::runtime::Runtime,
    nodes: &[(u64, SocketAddr)],
    problems: &mut Vec<String>,
) {
    if let Err(why) = rt.block_on(probe::wait_for_leaders(
        probe::next_client_id(),
        nodes,
        SHARDS,
        STARTUP,
    )) {
        problems.push(format!("no leaders at startup: {why}"));
    }
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
    let (seed, secs) = seed_and_secs(&format!("{workload:?}"), default_secs);
    let (net, mut cluster) = cluster::start_proxied(name).unwrap();
    let rt = cluster::runtime();
    let nodes = cluster.client_addrs();
    let ids = cluster.ids();
    let mut problems: Vec<String> = Vec::new();
    leaders_at_startup(&rt, &nodes, &mut problems);

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

    let steps = nemesis::schedule(seed, &ids, SHARDS, Duration::from_secs(secs));
    let fault_log = inject(
        &rt,
        &mut cluster,
        &net,
        &steps,
        idle,
        || history.now(),
        &mut problems,
    );
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

/// Runs the nemesis `steps` against `cluster` and `net`: each fault aimed
/// (if the step says so) at the leader of its shard, held, healed, then
/// quiet, with the clients idle (`idle`) when the step says so; then the
/// clients busy, every link healed and every node resumed. Returns the
/// fault log (times by `now`, in ns); what went wrong goes to `problems`.
fn inject(
    rt: &tokio::runtime::Runtime,
    cluster: &mut cluster::ProcessCluster,
    net: &quorate_examples::jepsen::proxy::Network,
    steps: &[nemesis::Step],
    idle: &AtomicBool,
    now: impl Fn() -> u64,
    problems: &mut Vec<String>,
) -> String {
    let nodes = cluster.client_addrs();
    let ids = cluster.ids();
    let mut fault_log = String::new();
    for step in steps {
        let fault = match step
            .at_leader_of
            .and_then(|shard| leader_of(rt, &nodes, shard))
        {
            Some(leader) => step.fault.aimed_at(leader, &ids),
            None => step.fault.clone(),
        };
        idle.store(step.idle, Ordering::Relaxed);
        let clients = if step.idle { ", clients idle" } else { "" };
        let at = now() as f64 / 1e6;
        let _ = writeln!(
            fault_log,
            "{at:.3} ms: {fault} for {:?}, then {:?} quiet{clients}",
            step.hold, step.quiet
        );
        println!("jepsen: {fault} for {:?}{clients}", step.hold);
        if let Err(e) = fault.start(cluster, net) {
            problems.push(format!("could not inject {fault}: {e}"));
        }
        std::thread::sleep(step.hold);
        if let Err(e) = fault.heal(cluster, net) {
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
    fault_log
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

// The bank workload: cross-shard transfers under the nemesis.

/// Accounts, across both shards.
const ACCOUNTS: u64 = 6;
/// Each account's starting balance.
const OPENING: i64 = 100;

fn account_name(account: u64) -> String {
    format!("acct{account}")
}

/// Coordinators of the bank workload: short deadlines, so a transaction
/// caught by a fault ends (as unknown at worst) within a few seconds.
fn bank_txn_config() -> TxnConfig {
    TxnConfig {
        ttl_ms: 1_000,
        deadline_ms: 4_000,
        resend_ms: 300,
        ..TxnConfig::default()
    }
}

/// What bank workers share with the test.
struct Bank {
    history: TxnHistory<BankMop>,
    stop: AtomicBool,
    idle: AtomicBool,
    transfers: AtomicU64,
    /// Transactions the client stopped mid-way (intents left behind).
    abandoned: AtomicU64,
}

/// How long a client waits for one transaction (it ends by its deadline,
/// plus resolving its intents) before calling it unknown.
const TXN_TIMEOUT: Duration = Duration::from_secs(8);

/// Runs `ops` through `client`'s coordinator; `stop_after` stops the
/// client mid-transaction (drops it), as a crashed coordinator would.
async fn run_txn(
    client: &mut Client,
    ops: Vec<TxnOp>,
    stop_after: Option<Duration>,
) -> Option<CoordinatorOutcome> {
    let txn = client.txn_with(ops, bank_txn_config());
    match tokio::time::timeout(stop_after.unwrap_or(TXN_TIMEOUT), txn).await {
        Ok(Ok(outcome)) => Some(outcome),
        Ok(Err(_)) | Err(_) => None,
    }
}

/// Reads every account in one transaction.
fn read_all_ops() -> (Vec<TxnOp>, Vec<BankMop>) {
    (0..ACCOUNTS)
        .map(|a| {
            (
                TxnOp::Get {
                    key: account_name(a),
                },
                BankMop::Read {
                    account: a,
                    value: None,
                },
            )
        })
        .unzip()
}

/// The bank history entry of a transaction (`None`: it did not end, or
/// the client gave up on it): reads filled in.
fn bank_outcome(
    outcome: Option<&CoordinatorOutcome>,
    mut mops: Vec<BankMop>,
) -> (Vec<BankMop>, TxnOutcome) {
    match outcome {
        Some(CoordinatorOutcome::Committed { reads, .. }) => {
            for m in &mut mops {
                if let BankMop::Read { account, value } = m {
                    let name = account_name(*account);
                    // Unparseable or missing: a balance no one wrote.
                    let garbage = Balance {
                        amount: i64::MIN,
                        by: u64::MAX,
                    };
                    let read = reads.iter().find(|(k, _)| *k == name).map(|(_, v)| {
                        v.as_ref()
                            .and_then(|(b, _)| Balance::decode(b))
                            .unwrap_or(garbage)
                    });
                    *value = Some(read.unwrap_or(garbage));
                }
            }
            (mops, TxnOutcome::Committed)
        }
        Some(CoordinatorOutcome::Aborted { .. }) => (mops, TxnOutcome::Aborted),
        Some(CoordinatorOutcome::Unknown { .. }) | None => (mops, TxnOutcome::Unknown),
    }
}

async fn bank_worker(id: u64, nodes: Vec<(u64, SocketAddr)>, bank: Arc<Bank>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed ^ id.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut client = Client::new(200 + id, &nodes, SHARDS).unwrap();
    let mut known: HashMap<u64, Balance> = HashMap::new();
    while !bank.stop.load(Ordering::Relaxed) {
        if bank.idle.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let from = rng.u64(..ACCOUNTS);
        let to = (from + rng.u64(1..ACCOUNTS)) % ACCOUNTS;
        let (ops, mops) = match (known.get(&from), known.get(&to)) {
            (Some(&f), Some(&t)) if rng.u8(..3) != 0 => {
                let transfer = bank.transfers.fetch_add(1, Ordering::Relaxed);
                let amount = rng.i64(1..=10);
                let writes = [(from, f, f.amount - amount), (to, t, t.amount + amount)];
                writes
                    .iter()
                    .map(|&(account, expect, amount)| {
                        let value = Balance {
                            amount,
                            by: transfer,
                        };
                        (
                            TxnOp::Cas {
                                key: account_name(account),
                                expect: Some(Bytes::from(expect.encode())),
                                value: Bytes::from(value.encode()),
                            },
                            BankMop::Write {
                                account,
                                expect,
                                value,
                            },
                        )
                    })
                    .unzip()
            }
            _ => read_all_ops(),
        };
        let at = bank.history.invoke(id, mops.clone());
        // Now and then the client stops mid-transaction, its intents left.
        let stop_after = (rng.u8(..40) == 0).then(|| Duration::from_millis(rng.u64(1..40)));
        let outcome = run_txn(&mut client, ops, stop_after).await;
        if stop_after.is_some() && outcome.is_none() {
            bank.abandoned.fetch_add(1, Ordering::Relaxed);
            // A crashed client's connections go with it.
            client.close().await;
            client = Client::new(200 + id, &nodes, SHARDS).unwrap();
        }
        let (mops, outcome) = bank_outcome(outcome.as_ref(), mops);
        for m in &mops {
            match (m, outcome) {
                (
                    BankMop::Read {
                        account,
                        value: Some(b),
                    },
                    TxnOutcome::Committed,
                ) => {
                    known.insert(*account, *b);
                }
                (BankMop::Write { account, value, .. }, TxnOutcome::Committed) => {
                    known.insert(*account, *value);
                }
                // Not committed: what the accounts hold is not known.
                (BankMop::Write { account, .. }, _) => {
                    known.remove(account);
                }
                _ => {}
            }
        }
        bank.history.complete(at, mops, outcome);
        tokio::time::sleep(Duration::from_millis(rng.u64(0..10))).await;
    }
    client.close().await;
}

/// Opens every account at [`OPENING`] (balance version 0) in one
/// transaction, retried until the accounts read so.
async fn open_accounts(nodes: &[(u64, SocketAddr)]) -> Result<(), String> {
    let mut client = Client::new(299, nodes, SHARDS).map_err(|e| e.to_string())?;
    let opening = Balance {
        amount: OPENING,
        by: 0,
    };
    let started = Instant::now();
    let mut last = String::new();
    for _ in 0..20 {
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
        let ops = (0..ACCOUNTS)
            .map(|a| TxnOp::Cas {
                key: account_name(a),
                expect: None,
                value: Bytes::from(opening.encode()),
            })
            .collect();
        let _ = run_txn(&mut client, ops, None).await;
        let (ops, _) = read_all_ops();
        match run_txn(&mut client, ops, None).await {
            Some(CoordinatorOutcome::Committed { reads, .. }) => {
                let opened = reads.iter().all(|(_, v)| {
                    v.as_ref().and_then(|(b, _)| Balance::decode(b)) == Some(opening)
                });
                if opened && reads.len() == ACCOUNTS as usize {
                    client.close().await;
                    return Ok(());
                }
                last = format!("accounts read {reads:?}");
            }
            other => last = format!("{other:?}"),
        }
    }
    client.close().await;
    Err(format!("accounts not opened: {last}"))
}

/// The bank workload: five clients transfer between six accounts on both
/// shards with two-key compare-and-set transactions and read every
/// account in one transaction, under the nemesis (kill -9, SIGSTOP,
/// isolation, one-way and stalled links through the proxies), with now
/// and then a client stopping mid-transaction. Every committed read of
/// all accounts must see the opening total, no balance may come from a
/// partial or aborted transfer, and the history must be strictly
/// serializable (`jepsen::txn::check_bank`). `QUORATE_JEPSEN_SECS` sets
/// the length of the fault schedule (default 10 s), `QUORATE_JEPSEN_SEED`
/// replays one.
#[test]
fn bank_transfers_across_shards_keep_the_total_under_faults() {
    let _serial = cluster::serial();
    let (seed, secs) = seed_and_secs("bank", 10);
    let began = Instant::now();
    let (net, mut cluster) = cluster::start_proxied("jepsen-bank").unwrap();
    let rt = cluster::runtime();
    let nodes = cluster.client_addrs();
    let ids = cluster.ids();
    let mut problems: Vec<String> = Vec::new();
    leaders_at_startup(&rt, &nodes, &mut problems);
    let led = began.elapsed();
    let probe_client = Client::new(298, &nodes, SHARDS).unwrap();
    let spanned: std::collections::BTreeSet<u32> = (0..ACCOUNTS)
        .map(|a| probe_client.shard_of(&account_name(a)))
        .collect();
    rt.block_on(probe_client.close());
    assert_eq!(
        spanned.len(),
        SHARDS as usize,
        "the accounts must span every shard"
    );
    let bank = Arc::new(Bank {
        history: TxnHistory::new(),
        stop: AtomicBool::new(false),
        idle: AtomicBool::new(false),
        transfers: AtomicU64::new(1),
        abandoned: AtomicU64::new(0),
    });
    if let Err(why) = rt.block_on(open_accounts(&nodes)) {
        problems.push(why);
    }
    let opened = began.elapsed();
    let workers: Vec<_> = (1..=WORKERS)
        .map(|w| rt.spawn(bank_worker(w, nodes.clone(), Arc::clone(&bank), seed)))
        .collect();
    let steps = nemesis::schedule(seed, &ids, SHARDS, Duration::from_secs(secs));
    let fault_log = inject(
        &rt,
        &mut cluster,
        &net,
        &steps,
        &bank.idle,
        || bank.history.now(),
        &mut problems,
    );
    if let Err(why) = rt.block_on(probe::wait_for_leaders(
        probe::next_client_id(),
        &nodes,
        SHARDS,
        RECOVERY,
    )) {
        problems.push(format!(
            "not every shard had a leader {RECOVERY:?} after the faults healed: {why}"
        ));
    }
    let recovered = began.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    bank.stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for w in workers {
            if tokio::time::timeout(Duration::from_secs(15), w)
                .await
                .is_err()
            {
                problems.push("a bank worker did not stop".to_owned());
            }
        }
    });
    // A final read of every account, which must commit: intents left
    // behind are resolved by then.
    let final_read = rt.block_on(async {
        let mut client = Client::new(297, &nodes, SHARDS).unwrap();
        let mut committed = false;
        for _ in 0..5 {
            let (ops, mops) = read_all_ops();
            let at = bank.history.invoke(0, mops.clone());
            let outcome = run_txn(&mut client, ops, None).await;
            let (mops, outcome) = bank_outcome(outcome.as_ref(), mops);
            bank.history.complete(at, mops, outcome);
            if outcome == TxnOutcome::Committed {
                committed = true;
                break;
            }
        }
        client.close().await;
        committed
    });
    if !final_read {
        problems.push("the final read of every account never committed".to_owned());
    }

    let finished = began.elapsed();
    let txns = bank.history.txns();
    let initial: BTreeMap<u64, i64> = (0..ACCOUNTS).map(|a| (a, OPENING)).collect();
    let verdict = check_bank(&txns, &initial, Isolation::StrictSerializable);
    let count = |outcome, transfer: bool| {
        txns.iter()
            .filter(|t| {
                t.outcome == outcome
                    && transfer == t.ops.iter().any(|m| matches!(m, BankMop::Write { .. }))
            })
            .count()
    };
    let summary = format!(
        "jepsen bank summary (seed {seed}): {} transactions; transfers {} committed, {} aborted, \
         {} unknown; reads of every account {} committed, {} aborted, {} unknown; \
         {} abandoned mid-transaction; \
         {} faults injected; {} anomalies; leaders at {led:.1?}, accounts opened at {opened:.1?}, leaders again at \
         {recovered:.1?}, done at {finished:.1?}",
        txns.len(),
        count(TxnOutcome::Committed, true),
        count(TxnOutcome::Aborted, true),
        count(TxnOutcome::Unknown, true),
        verdict.read_alls,
        count(TxnOutcome::Aborted, false),
        count(TxnOutcome::Unknown, false),
        bank.abandoned.load(Ordering::Relaxed),
        steps.len(),
        verdict.anomalies.len(),
    );
    println!("{summary}");
    if count(TxnOutcome::Committed, true) == 0 || verdict.read_alls == 0 {
        problems.push("no transfer or no read of every account committed".to_owned());
    }
    if verdict.ok() && problems.is_empty() {
        return;
    }
    cluster.keep();
    let dir = cluster.dir().to_path_buf();
    std::fs::write(dir.join("history.txt"), render(&txns)).unwrap();
    std::fs::write(dir.join("faults.txt"), &fault_log).unwrap();
    let anomalies: Vec<String> = verdict
        .anomalies
        .iter()
        .take(10)
        .map(ToString::to_string)
        .collect();
    panic!(
        "{summary}\nanomalies (first 10): {anomalies:#?}\nproblems: {problems:#?}\nfaults:\n{fault_log}\
         history, faults and node logs kept in {}",
        dir.display()
    );
}
