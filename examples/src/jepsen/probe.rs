//! Asking running nodes who leads each shard, with bounded waits.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::kv_cluster::client::Client;
use crate::kv_cluster::protocol::{Reply, Request, ShardStatus, Traffic};

/// A client id no other call in this process got: clients with the same
/// id would share a connection slot on the nodes. Starts above the ids
/// tests give their workers by hand.
pub fn next_client_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(3000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Each node's replicas as it reports them (`None`: no answer in time).
pub type Statuses = BTreeMap<u64, Option<Vec<ShardStatus>>>;

/// Asks every node of `nodes` for its status through `client`, waiting at
/// most `per_node` for each.
pub async fn statuses(client: &mut Client, nodes: &[u64], per_node: Duration) -> Statuses {
    let mut out = BTreeMap::new();
    for &id in nodes {
        let answer = tokio::time::timeout(per_node, client.status(id)).await;
        out.insert(id, answer.ok().and_then(Result::ok));
    }
    out
}

/// Node `node`'s [`Traffic`] counters, if it answers within `bound`.
pub async fn traffic(client: &mut Client, node: u64, bound: Duration) -> Option<Traffic> {
    match tokio::time::timeout(bound, client.ask(node, Request::Traffic)).await {
        Ok(Ok(Reply::Traffic(t))) => Some(*t),
        _ => None,
    }
}

/// Each shard's leader, if every node answered and all agree on one leader
/// for every shard in `0..shards`; otherwise what is missing.
pub fn leaders(statuses: &Statuses, shards: u32) -> Result<BTreeMap<u32, u64>, String> {
    let mut leaders = BTreeMap::new();
    for shard in 0..shards {
        let mut seen = BTreeMap::new();
        for (&node, status) in statuses {
            let Some(status) = status else {
                return Err(format!("node {node} did not answer status"));
            };
            let Some(replica) = status.iter().find(|s| s.shard == shard) else {
                return Err(format!("node {node} has no replica of shard {shard}"));
            };
            seen.insert(node, (replica.leader, replica.term));
        }
        let first = seen.values().next().map_or(0, |&(l, _)| l);
        if first == 0 || seen.values().any(|&(l, _)| l != first) {
            return Err(format!(
                "shard {shard}: no agreed leader (node: (leader, term)) {seen:?}"
            ));
        }
        leaders.insert(shard, first);
    }
    Ok(leaders)
}

/// One line per replica, for failure messages.
pub fn describe(statuses: &Statuses) -> String {
    let mut out = String::new();
    for (node, status) in statuses {
        match status {
            None => {
                let _ = writeln!(out, "node {node}: no answer");
            }
            Some(replicas) => {
                for s in replicas {
                    let _ = writeln!(
                        out,
                        "node {node} shard {}: leader {} term {} commit {} applied {}",
                        s.shard, s.leader, s.term, s.commit, s.applied
                    );
                }
            }
        }
    }
    out
}

/// Polls until every shard has a leader all nodes agree on, or `bound`
/// passes; the error carries the last statuses seen. `client_id` must be
/// distinct from other clients of the cluster.
pub async fn wait_for_leaders(
    client_id: u64,
    nodes: &[(u64, SocketAddr)],
    shards: u32,
    bound: Duration,
) -> Result<BTreeMap<u32, u64>, String> {
    let deadline = Instant::now() + bound;
    let ids: Vec<u64> = nodes.iter().map(|&(id, _)| id).collect();
    let mut client = Client::new(client_id, nodes, shards).map_err(|e| e.to_string())?;
    let mut last = String::from("never asked");
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let per_node = left.min(Duration::from_millis(700));
        let s = statuses(&mut client, &ids, per_node).await;
        match leaders(&s, shards) {
            Ok(l) => {
                client.close().await;
                return Ok(l);
            }
            Err(why) => last = format!("{why}\n{}", describe(&s)),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.close().await;
    Err(format!("after {bound:?}: {last}"))
}
