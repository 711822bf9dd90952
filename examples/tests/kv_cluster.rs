//! Runs the kv-cluster scenario (smaller) over real TCP on 127.0.0.1 and
//! checks what it promises: no acknowledged write lost across a leader
//! crash or a membership change, no request applied twice however often it
//! was sent, every voter applying every write, a new server caught up and
//! promoted and the old leader removed, and equal Merkle roots (a corrupted
//! replica found and repaired by the replicas themselves, nothing else
//! repaired).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use quorate_examples::kv_cluster::scenario::{self, Params};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_keeps_every_acknowledged_write_once() {
    let params = Params {
        writes: 40,
        // Slower ticks: a loaded debug build must not see spurious elections
        // (they would only cost retries, but keep the run calm).
        tick: Duration::from_millis(20),
        // 20 writes while a node is down, about 10 per shard: compacting
        // every 4 puts the leaders' snapshots past the restarted node's log.
        compact_every: 4,
        snapshot_chunk_bytes: 256,
        ..Params::default()
    };
    let mut lines = Vec::new();
    let report = scenario::run(params.clone(), &mut |l| lines.push(l.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("scenario failed: {e}\n{}", lines.join("\n")));
    let dump = report.timeline.join("\n");
    // 40 before the crash, 1 sent three times, 1 in flight at the crash, 20
    // after, and those of the background client during the membership change.
    let expected = params.writes + 1 + 1 + params.writes / 2 + report.writes_during_move;
    assert!(report.writes_during_move > 0, "{dump}");
    assert_eq!(report.acknowledged.len(), expected, "{dump}");
    assert!(report.lost.is_empty(), "lost {:?}\n{dump}", report.lost);
    assert!(
        report.applied_twice.is_empty(),
        "applied twice: {:?}\n{dump}",
        report.applied_twice
    );
    assert!(
        report.never_applied.is_empty(),
        "missing on some replica: {:?}\n{dump}",
        report.never_applied
    );
    assert!(report.roots_equal, "{dump}");
    // retry:demo was sent three times: the last two were answered from the
    // dedup table (or, had leadership moved in between, reached the log
    // again and were skipped when applied).
    assert!(
        report.retries_answered + report.duplicates_skipped >= 2,
        "{dump}"
    );
    // Exactly the corrupted bucket: anti-entropy compares replicas at the
    // same applied index, so writes in flight are never taken for damage.
    assert_eq!(report.repaired_buckets, 1, "{dump}");
    assert!(dump.contains("anti-entropy: n"), "{dump}");
    // The new server joined shard 0 and the removed one left its voters.
    assert_eq!(report.joined, params.nodes + 1, "{dump}");
    assert!(report.catch_up_rounds >= 1, "{dump}");
    assert!(report.final_voters.contains(&report.joined), "{dump}");
    assert!(
        report.removed != 0 && !report.final_voters.contains(&report.removed),
        "{dump}"
    );
    assert_eq!(report.final_voters.len(), params.nodes as usize, "{dump}");
    assert!(
        report.replayed_from_disk > 0,
        "restart found no log\n{dump}"
    );
    assert!(report.failover >= report.election, "{dump}");
    // The restarted node caught up through InstallSnapshot, and what it
    // installed covers entries it never had (beyond its own disk).
    assert!(
        !report.snapshots_installed.is_empty(),
        "no snapshot installed on the restarted node\n{dump}"
    );
    for (shard, s) in &report.snapshots_installed {
        let own = report
            .disk_snapshots
            .get(*shard as usize)
            .copied()
            .unwrap_or(0);
        assert!(
            s.index > own,
            "shard {shard}: snapshot {s:?} not newer than disk ({own})\n{dump}"
        );
        assert!(s.bytes > 0, "{dump}");
    }
    assert!(dump.contains("caught up by snapshot at index"), "{dump}");
}

/// Every node crashes at once and restarts from its data directory: the
/// fsynced logs alone must bring back every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restart_keeps_acknowledged_writes() {
    use bytes::Bytes;
    use quorate_examples::kv_cluster::client::Client;
    use quorate_examples::kv_cluster::protocol::Reply;
    use quorate_examples::kv_cluster::server::{BoundNode, NodeConfig, NodeHandle};
    use std::net::SocketAddr;

    let dir = std::env::temp_dir().join(format!("quorate-kv-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = |id: u64| NodeConfig {
        id,
        members: vec![1, 2, 3],
        shards: 2,
        data_dir: dir.join(format!("n{id}")),
        tick: Duration::from_millis(20),
        election_ticks: 10,
        // Compacts mid-run, so the restart loads snapshot plus log tail.
        compact_every: 8,
        compact_log_bytes: NodeConfig::COMPACT_LOG_BYTES,
        snapshot_chunk_bytes: 1024,
        hosted: Vec::new(),
        joining: false,
        gossip_ticks: NodeConfig::GOSSIP_TICKS,
        liveness_ticks: NodeConfig::LIVENESS_TICKS,
    };
    async fn launch(
        addrs: &[(u64, SocketAddr)],
        bound: Vec<BoundNode>,
        config: &dyn Fn(u64) -> NodeConfig,
    ) -> Vec<NodeHandle> {
        bound
            .into_iter()
            .zip(addrs)
            .map(|(node, &(id, _))| {
                for &(peer, addr) in addrs {
                    if peer != id {
                        node.add_peer(peer, addr);
                    }
                }
                node.spawn(config(id)).unwrap()
            })
            .collect()
    }
    let mut bound = Vec::new();
    for id in 1..=3 {
        bound.push(
            BoundNode::bind(id, "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
        );
    }
    let addrs: Vec<(u64, SocketAddr)> = (1..=3)
        .zip(&bound)
        .map(|(id, b)| (id, b.local_addr().unwrap()))
        .collect();
    let handles = launch(&addrs, bound, &config).await;
    let mut client = Client::new(1000, &addrs, 2).unwrap();
    for i in 0..20 {
        let answer = client
            .put(&format!("k{i}"), Bytes::from(format!("v{i}")))
            .await
            .unwrap();
        assert!(
            matches!(answer.reply, Reply::Written { .. }),
            "{:?}",
            answer.reply
        );
    }
    client.close().await;
    for h in handles {
        h.stop().await.unwrap();
    }

    let mut bound = Vec::new();
    for &(id, addr) in &addrs {
        let mut tries = 0;
        bound.push(loop {
            match BoundNode::bind(id, addr).await {
                Ok(b) => break b,
                Err(e) if tries > 100 => panic!("rebinding {addr}: {e}"),
                Err(_) => tries += 1,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
    }
    let handles = launch(&addrs, bound, &config).await;
    assert!(handles.iter().all(|h| h.recovered() > 0));
    assert!(
        handles
            .iter()
            .all(|h| h.recovered_snapshots().iter().any(|&i| i > 0)),
        "every node compacted some shard before the crash"
    );
    let mut client = Client::new(1001, &addrs, 2).unwrap();
    for i in 0..20 {
        let answer = client.get(&format!("k{i}")).await.unwrap();
        match answer.reply {
            Reply::Value {
                value: Some((v, _)),
                ..
            } => assert_eq!(v, Bytes::from(format!("v{i}"))),
            other => panic!("k{i} after restart: {other:?}"),
        }
    }
    client.close().await;
    for h in handles {
        h.stop().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 15: clients whose ids agree modulo 1024 once minted equal request
/// ids, and a write answered as a "retry" of another client's was never
/// applied. With sessions the cluster numbers each client's writes itself:
/// every acknowledged write of 24 concurrent clients must be read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_with_colliding_ids_lose_no_write() {
    use bytes::Bytes;
    use quorate_examples::kv_cluster::client::Client;
    use quorate_examples::kv_cluster::protocol::Reply;

    let dir = std::env::temp_dir().join(format!("quorate-kv-sessions-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (addrs, handles) = start_three(&dir, 2, 16).await;
    const CLIENTS: u64 = 24;
    const WRITES: u64 = 5;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let addrs = addrs.clone();
        tasks.push(tokio::spawn(async move {
            // Distinct transport ids, equal modulo 1024.
            let mut client = Client::new(1000 + 1024 * c, &addrs, 2).unwrap();
            let mut acked = Vec::new();
            for i in 0..WRITES {
                let (key, value) = (format!("c{c}:{i}"), format!("v{c}.{i}"));
                let answer = client.put(&key, Bytes::from(value.clone())).await;
                let answer = answer.unwrap_or_else(|e| panic!("{key}: {e}"));
                assert!(
                    matches!(answer.reply, Reply::Written { .. }),
                    "{:?}",
                    answer.reply
                );
                acked.push((key, value, answer.write.unwrap()));
            }
            client.close().await;
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert_eq!(acked.len() as u64, CLIENTS * WRITES);
    // Every client's writes on a shard share one session; no two clients
    // share a session.
    let mut sessions = std::collections::HashMap::new();
    for (key, _, w) in &acked {
        let client = key.split(':').next().unwrap().to_owned();
        let owner = sessions
            .entry((w.shard, w.session))
            .or_insert(client.clone());
        assert_eq!(*owner, client, "session {w:?} shared");
    }
    let mut reader = Client::new(Client::random_id(), &addrs, 2).unwrap();
    let mut missing = Vec::new();
    for (key, value, _) in &acked {
        match reader.get(key).await.unwrap().reply {
            Reply::Value {
                value: Some((v, _)),
                ..
            } if v == value.as_bytes() => {}
            other => missing.push(format!("{key}: {other:?}")),
        }
    }
    reader.close().await;
    for h in handles {
        h.stop().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        missing.is_empty(),
        "acknowledged but not read back: {missing:?}"
    );
}

/// The client's side of an expired session, against a fake node that
/// answers `SessionExpired` to every write in an odd-numbered session: a
/// write sent once (so certainly not applied) is sent again under a new
/// session; a write sent more than once surfaces as an error, since an
/// earlier attempt may have been applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_reopened_only_when_the_write_was_never_applied() {
    use bytes::Bytes;
    use quorate_examples::kv_cluster::client::Client;
    use quorate_examples::kv_cluster::protocol::{Envelope, Reply, Request};
    use quorate_examples::kv_cluster::{CLIENT_CHANNEL, Error};
    use quorate_transport::framing::Frame;
    use quorate_transport::tcp::{PeerId, TcpConfig, TcpTransport};
    use quorate_transport::{Event, Transport};

    let mut node = TcpTransport::bind(PeerId(1), "127.0.0.1:0", TcpConfig::default())
        .await
        .unwrap();
    let addr = node.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let mut sessions = 0;
        while let Ok(event) = node.recv().await {
            let Event::Message { from, msg } = event else {
                continue;
            };
            let request = Envelope::<Request>::decode(msg.payload).unwrap();
            let body = match request.body {
                Request::RegisterSession { .. } => {
                    sessions += 1;
                    Reply::Registered { session: sessions }
                }
                Request::Put { session, .. } if session % 2 == 1 => Reply::SessionExpired,
                Request::Put { .. } => Reply::Written { index: 1 },
                other => panic!("unexpected {other:?}"),
            };
            let reply = Envelope {
                id: request.id,
                body,
            };
            node.try_send(from, Frame::new(CLIENT_CHANNEL, reply.encode()))
                .unwrap();
        }
    });
    let mut client = Client::new(Client::random_id(), &[(1, addr)], 1).unwrap();
    let answer = client.put("k", Bytes::from_static(b"v")).await.unwrap();
    assert!(
        matches!(answer.reply, Reply::Written { .. }),
        "{:?}",
        answer.reply
    );
    let write = answer.write.unwrap();
    assert_eq!((write.session, write.seq), (2, 1), "reopened as session 2");
    assert_eq!(client.session(0), Some(2));

    assert_eq!(client.register(0).await.unwrap(), 3);
    let write = client
        .begin_put("k", Bytes::from_static(b"w"))
        .await
        .unwrap();
    assert_eq!((write.id.session, write.id.seq), (3, 1));
    client.send_write(&write).await.unwrap();
    match client.write(&write).await {
        Err(Error::SessionExpired {
            shard: 0,
            session: 3,
            maybe_applied: true,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(client.session(0), None, "the expired session is forgotten");
    client.close().await;
    fake.abort();
}

/// A client whose known leader dies (its port then refuses connections)
/// sends on to the other nodes instead of failing as "unreachable"; only
/// when every node refuses does it fail, at once, naming each address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_leader_sends_the_client_elsewhere_and_a_dead_cluster_fails_fast() {
    use bytes::Bytes;
    use quorate_examples::kv_cluster::Error;
    use quorate_examples::kv_cluster::client::Client;
    use quorate_examples::kv_cluster::protocol::Reply;
    use std::time::Instant;

    let dir = std::env::temp_dir().join(format!("quorate-kv-deadleader-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (addrs, handles) = start_three(&dir, 1, 0).await;
    let mut handles: Vec<_> = handles.into_iter().map(Some).collect();
    let mut client = Client::new(Client::random_id(), &addrs, 1).unwrap();
    let first = client.put("a", Bytes::from("1")).await.unwrap();
    assert!(
        matches!(first.reply, Reply::Written { .. }),
        "{:?}",
        first.reply
    );
    // Kill the leader the client now knows.
    let leader = first.node;
    let index = (leader - 1) as usize;
    handles[index].take().unwrap().stop().await.unwrap();
    let started = Instant::now();
    let second = client.put("b", Bytes::from("2")).await.unwrap();
    assert!(
        matches!(second.reply, Reply::Written { .. }),
        "{:?}",
        second.reply
    );
    assert_ne!(second.node, leader);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Every node gone: an error at once, naming every address.
    for h in handles.iter_mut().filter_map(Option::take) {
        h.stop().await.unwrap();
    }
    let started = Instant::now();
    let err = client.put("c", Bytes::from("3")).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    for (id, addr) in &addrs {
        assert!(err.to_string().contains(&format!("{id}={addr}")), "{err}");
    }
    assert!(took < Duration::from_secs(2), "{took:?}");
    client.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every consistency level over real TCP: a client's session reads (spread
/// round-robin over the three nodes) see its own writes and carry indexes
/// at or past its token, which grows with every write; `any` reads are
/// labelled stale; lease and linearizable reads come from the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_consistency_level_reads_the_clients_writes() {
    use bytes::Bytes;
    use quorate_examples::kv_cluster::client::Client;
    use quorate_examples::kv_cluster::protocol::{Consistency, Reply};
    use std::collections::BTreeSet;

    let dir = std::env::temp_dir().join(format!("quorate-kv-levels-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (addrs, handles) = start_three(&dir, 2, 0).await;
    let mut client = Client::new(Client::random_id(), &addrs, 2).unwrap();
    let mut session_nodes = BTreeSet::new();
    for i in 0..12 {
        let key = format!("k{}", i % 4);
        let value = Bytes::from(format!("v{i}"));
        let written = client.put(&key, value.clone()).await.unwrap();
        let Reply::Written { index } = written.reply else {
            panic!("{:?}", written.reply)
        };
        let shard = client.shard_of(&key);
        assert!(index > 0 && client.token(shard) >= index);
        let leader = written.node;
        let answer = client.get_with(&key, Consistency::Session).await.unwrap();
        session_nodes.insert(answer.node);
        match answer.reply {
            Reply::Value {
                value: Some((v, _)),
                index: seen,
                stale: false,
            } => {
                assert_eq!(v, value, "session read of {key} from {}", answer.node);
                assert!(seen >= index, "read at {seen}, write at {index}");
            }
            other => panic!("session read: {other:?}"),
        }
        for level in [Consistency::Linearizable, Consistency::Lease] {
            // A lease may lapse under a loaded test machine: then the
            // typed refusal, never a wrong value.
            match client.get_with(&key, level).await {
                Ok(answer) => {
                    assert_eq!(answer.node, leader, "{level}");
                    assert!(
                        matches!(&answer.reply, Reply::Value { value: Some((v, _)), stale: false, .. } if *v == value),
                        "{level}: {:?}",
                        answer.reply
                    );
                }
                Err(quorate_examples::kv_cluster::Error::LeaseUnavailable { .. })
                    if level == Consistency::Lease => {}
                Err(e) => panic!("{level}: {e}"),
            }
        }
        let any = client.get_with(&key, Consistency::Any).await.unwrap();
        assert!(
            matches!(any.reply, Reply::Value { stale: true, .. }),
            "{:?}",
            any.reply
        );
    }
    assert_eq!(
        session_nodes.len(),
        3,
        "session reads served by {session_nodes:?}"
    );
    client.close().await;
    for h in handles {
        h.stop().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Binds three nodes on free loopback ports, tells each where the others
/// listen, and runs them with `shards` shards from `dir`.
async fn start_three(
    dir: &std::path::Path,
    shards: u32,
    compact_every: u64,
) -> (
    Vec<(u64, std::net::SocketAddr)>,
    Vec<quorate_examples::kv_cluster::server::NodeHandle>,
) {
    use quorate_examples::kv_cluster::server::{BoundNode, NodeConfig};
    let (addrs, bound) = BoundNode::bind_loopback_mesh(3).await.unwrap();
    let mut handles = Vec::new();
    for (id, node) in bound {
        let config = NodeConfig {
            id,
            members: vec![1, 2, 3],
            shards,
            data_dir: dir.join(format!("n{id}")),
            tick: Duration::from_millis(20),
            election_ticks: 10,
            compact_every,
            compact_log_bytes: NodeConfig::COMPACT_LOG_BYTES,
            snapshot_chunk_bytes: 1024,
            hosted: Vec::new(),
            joining: false,
            gossip_ticks: NodeConfig::GOSSIP_TICKS,
            liveness_ticks: NodeConfig::LIVENESS_TICKS,
        };
        handles.push(node.spawn(config).unwrap());
    }
    (addrs, handles)
}
