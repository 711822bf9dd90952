//! Transactions through three in-process kv-cluster nodes over TCP on
//! 127.0.0.1, with the coordinator's crash played by a client that sends
//! some steps of a transaction and then nothing: a reader that finds the
//! intents of a coordinator that crashed after its commit resolves them
//! (and lets the record go); one that crashed before it waits out its
//! expiry and aborts it; and a plain put held up by an intent applies once,
//! after the intent is resolved.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quorate_examples::kv_cluster::client::Client;
use quorate_examples::kv_cluster::protocol::Reply;
use quorate_examples::kv_cluster::server::{BoundNode, NodeConfig, NodeHandle};
use quorate_examples::kv_cluster::txn::{
    Begin, TxnCommand, TxnId, TxnOp, TxnOutcome, TxnReply, TxnStatus, priority_by_age,
};

const SHARDS: u32 = 2;

struct Cluster {
    nodes: Vec<NodeHandle>,
    addrs: Vec<(u64, SocketAddr)>,
    dir: PathBuf,
}

impl Cluster {
    async fn start(name: &str) -> Cluster {
        let dir =
            std::env::temp_dir().join(format!("quorate-kv-txn-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (addrs, bound) = BoundNode::bind_loopback_mesh(3).await.unwrap();
        let mut nodes = Vec::new();
        for (id, node) in bound {
            let config = NodeConfig {
                id,
                members: vec![1, 2, 3],
                shards: SHARDS,
                hosted: Vec::new(),
                joining: false,
                gossip_ticks: NodeConfig::GOSSIP_TICKS,
                data_dir: dir.join(format!("n{id}")),
                tick: Duration::from_millis(10),
                election_ticks: 10,
                compact_every: 0,
                compact_log_bytes: NodeConfig::COMPACT_LOG_BYTES,
                snapshot_chunk_bytes: NodeConfig::SNAPSHOT_CHUNK_BYTES,
                liveness_ticks: NodeConfig::LIVENESS_TICKS,
            };
            nodes.push(node.with_audit().spawn(config).unwrap());
        }
        Cluster { nodes, addrs, dir }
    }

    fn client(&self) -> Client {
        Client::new(Client::random_id(), &self.addrs, SHARDS).unwrap()
    }

    /// Waits (at most 5 s) until `check` holds for shard `shard`'s store on
    /// every node.
    async fn eventually(
        &self,
        shard: u32,
        what: &str,
        check: impl Fn(&quorate_examples::kv_cluster::store::KvStore) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ok = self.nodes.iter().all(|n| {
                let stores = n.stores();
                let stores = stores.lock().unwrap();
                stores.get(shard as usize).is_some_and(&check)
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not on every replica within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        for n in self.nodes {
            n.stop().await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A key of each shard: `[shard 0's, shard 1's]`, named after `prefix`.
fn two_keys(client: &Client, prefix: &str) -> [String; 2] {
    let mut found: [Option<String>; 2] = [None, None];
    for i in 0.. {
        let key = format!("{prefix}{i}");
        let slot = &mut found[client.shard_of(&key) as usize];
        if slot.is_none() {
            *slot = Some(key);
        }
        if let [Some(a), Some(b)] = &found {
            return [a.clone(), b.clone()];
        }
    }
    unreachable!()
}

fn value_of(reply: &Reply) -> Option<String> {
    match reply {
        Reply::Value { value, .. } => value
            .as_ref()
            .map(|(v, _)| String::from_utf8_lossy(v).into_owned()),
        other => panic!("not a value: {other:?}"),
    }
}

/// Prepares `txn` (anchored in shard 0) on both shards, writing `value`
/// under both keys, as a coordinator would, and stops there.
async fn prepare_both(
    client: &mut Client,
    txn: TxnId,
    keys: &[String; 2],
    ttl_ms: u64,
    value: &str,
) {
    for shard in 0..2u32 {
        // Older than any reader to come: readers wait for it (or its expiry).
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let begin = (shard == 0).then(|| Begin {
            priority: priority_by_age(now_ms, 0),
            ttl_ms,
            participants: vec![0, 1],
            commit: false,
        });
        let ops = vec![TxnOp::Put {
            key: keys[shard as usize].clone(),
            value: Bytes::from(value.to_owned()),
        }];
        let command = TxnCommand::Prepare {
            txn,
            anchor: 0,
            begin,
            ops,
        };
        let reply = client.txn_step(shard, command).await.unwrap();
        assert!(matches!(reply, TxnReply::Prepared { .. }), "{reply:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_finish_the_work_of_crashed_coordinators() {
    let cluster = Cluster::start("crash").await;
    let mut client = cluster.client();
    // Crashed after its commit: the anchor resolved its own key at the
    // commit; the other shard still holds the intent.
    let keys = two_keys(&client, "after");
    let txn = TxnId { client: 7, seq: 1 };
    prepare_both(&mut client, txn, &keys, 60_000, "1").await;
    let commit = client
        .txn_step(0, TxnCommand::Commit { txn })
        .await
        .unwrap();
    assert!(matches!(
        commit,
        TxnReply::Status {
            status: TxnStatus::Committed,
            ..
        }
    ));
    let mut reader = cluster.client();
    let got = reader.get(&keys[1]).await.unwrap();
    assert_eq!(value_of(&got.reply).as_deref(), Some("1"));
    let got = reader.get(&keys[0]).await.unwrap();
    assert_eq!(value_of(&got.reply).as_deref(), Some("1"));
    cluster
        .eventually(1, "intent resolved", |s| s.intent(&keys[1]).is_none())
        .await;
    // The reader resolved every participant, so the record may go.
    cluster
        .eventually(0, "record forgotten", |s| {
            s.txn_record(txn).is_some_and(|r| r.finished_at.is_some())
        })
        .await;

    // Crashed before its commit (and older than the reader, so no push
    // aborts it early): the reader waits out its (short) expiry, aborts it,
    // and neither key is written.
    let keys = two_keys(&client, "before");
    let txn = TxnId { client: 7, seq: 2 };
    prepare_both(&mut client, txn, &keys, 300, "2").await;
    let got = reader.get(&keys[1]).await.unwrap();
    assert_eq!(value_of(&got.reply), None);
    let got = reader.get(&keys[0]).await.unwrap();
    assert_eq!(value_of(&got.reply), None);
    cluster
        .eventually(0, "record aborted", |s| {
            s.txn_record(txn)
                .is_some_and(|r| r.status == TxnStatus::Aborted)
        })
        .await;
    // Its coordinator, back, cannot commit it.
    let late = client
        .txn_step(0, TxnCommand::Commit { txn })
        .await
        .unwrap();
    assert!(
        matches!(
            late,
            TxnReply::Status {
                status: TxnStatus::Aborted,
                ..
            }
        ),
        "{late:?}"
    );
    let got = reader.get(&keys[1]).await.unwrap();
    assert_eq!(value_of(&got.reply), None);
    client.close().await;
    reader.close().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_held_up_by_an_intent_applies_once_after_it() {
    let cluster = Cluster::start("held").await;
    let mut client = cluster.client();
    let keys = two_keys(&client, "held");
    let txn = TxnId { client: 8, seq: 1 };
    prepare_both(&mut client, txn, &keys, 60_000, "txn").await;
    // A plain put of the participant's key waits for the intent...
    let addrs = cluster.addrs.clone();
    let key = keys[1].clone();
    let put = tokio::spawn(async move {
        let mut writer = Client::new(Client::random_id(), &addrs, SHARDS).unwrap();
        let answer = writer.put(&key, Bytes::from("plain")).await;
        writer.close().await;
        answer
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!put.is_finished(), "the put must wait for the intent");
    // ... until the transaction commits and is resolved; then it applies,
    // after the transaction's value.
    let commit = client
        .txn_step(0, TxnCommand::Commit { txn })
        .await
        .unwrap();
    assert!(matches!(
        commit,
        TxnReply::Status {
            status: TxnStatus::Committed,
            ..
        }
    ));
    let resolve = TxnCommand::Resolve { txn, commit: true };
    assert_eq!(client.txn_step(1, resolve).await.unwrap(), TxnReply::Done);
    let answer = tokio::time::timeout(Duration::from_secs(20), put)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let write = answer.write.unwrap();
    let got = client.get(&keys[1]).await.unwrap();
    assert_eq!(value_of(&got.reply).as_deref(), Some("plain"));
    // Applied exactly once on every replica, though refused before.
    cluster
        .eventually(1, "the put applied once", |s| {
            s.audit()
                .and_then(|a| a.get(&(write.session, write.seq)))
                .is_some_and(|&n| n == 1)
        })
        .await;
    // And a whole transaction through Client::txn, on top.
    let outcome = client
        .txn(vec![
            TxnOp::Get {
                key: keys[1].clone(),
            },
            TxnOp::Put {
                key: keys[0].clone(),
                value: Bytes::from("again"),
            },
        ])
        .await
        .unwrap();
    match outcome {
        TxnOutcome::Committed { reads, .. } => {
            assert_eq!(reads.len(), 1);
            assert_eq!(
                reads[0].1.as_ref().map(|(v, _)| v.clone()),
                Some(Bytes::from("plain"))
            );
        }
        other => panic!("{other:?}"),
    }
    client.close().await;
    cluster.stop().await;
}

fn num(v: &Option<(Bytes, u64)>) -> u64 {
    v.as_ref()
        .and_then(|(b, _)| std::str::from_utf8(b).ok()?.parse().ok())
        .unwrap_or(0)
}

/// Concurrent clients move money between accounts on both shards, each
/// transfer a read-all transaction then a transaction of two cas: every
/// committed read of all accounts sums to the total, and transfers commit
/// despite the contention (pushes, aborts and retries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_keep_the_total() {
    const ACCOUNTS: usize = 4;
    const CLIENTS: u64 = 4;
    const TRANSFERS: u64 = 12;
    let cluster = Cluster::start("bank").await;
    let mut setup = cluster.client();
    // Two accounts in each shard.
    let mut accounts: Vec<String> = Vec::new();
    for shard in 0..SHARDS {
        let mine = (0..)
            .map(|i| format!("acct{i}"))
            .filter(|a| setup.shard_of(a) == shard);
        accounts.extend(mine.take(ACCOUNTS / 2));
    }
    let init = accounts
        .iter()
        .map(|a| TxnOp::Put {
            key: a.clone(),
            value: Bytes::from("100"),
        })
        .collect();
    assert!(matches!(
        setup.txn(init).await.unwrap(),
        TxnOutcome::Committed { .. }
    ));
    let total = 100 * ACCOUNTS as u64;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let addrs = cluster.addrs.clone();
        let accounts = accounts.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(Client::random_id(), &addrs, SHARDS).unwrap();
            let mut rng = fastrand::Rng::with_seed(c);
            let mut committed = 0;
            for _ in 0..TRANSFERS {
                let read = accounts
                    .iter()
                    .map(|a| TxnOp::Get { key: a.clone() })
                    .collect();
                let TxnOutcome::Committed { reads, .. } = client.txn(read).await.unwrap() else {
                    continue;
                };
                let sum: u64 = reads.iter().map(|(_, v)| num(v)).sum();
                assert_eq!(sum, total, "a read of every account: {reads:?}");
                let (a, b) = (rng.usize(0..ACCOUNTS), rng.usize(0..ACCOUNTS));
                if a == b {
                    continue;
                }
                let (va, vb) = (num(&reads[a].1), num(&reads[b].1));
                let amount = rng.u64(0..=va.min(20));
                let cas = |i: usize, old: u64, new: u64| TxnOp::Cas {
                    key: accounts[i].clone(),
                    expect: Some(Bytes::from(old.to_string())),
                    value: Bytes::from(new.to_string()),
                };
                let ops = vec![cas(a, va, va - amount), cas(b, vb, vb + amount)];
                if let TxnOutcome::Committed { .. } = client.txn(ops).await.unwrap() {
                    committed += 1;
                }
            }
            client.close().await;
            committed
        }));
    }
    let mut committed = 0;
    for t in tasks {
        committed += tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .unwrap()
            .unwrap();
    }
    let read = accounts
        .iter()
        .map(|a| TxnOp::Get { key: a.clone() })
        .collect();
    let TxnOutcome::Committed { reads, .. } = setup.txn(read).await.unwrap() else {
        panic!("the final read aborted");
    };
    let sum: u64 = reads.iter().map(|(_, v)| num(v)).sum();
    assert_eq!(sum, total, "{reads:?}");
    assert!(committed > 0, "no transfer committed");
    println!("{committed} transfers committed; final balances {reads:?}");
    setup.close().await;
    cluster.stop().await;
}
