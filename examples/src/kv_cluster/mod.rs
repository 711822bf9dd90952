//! kv-cluster: a sharded, replicated key-value store built from the quorate
//! crates. Keys map to shards on a consistent-hash ring; each shard is a
//! Raft group (`quorate-raft-core`) over every node, carried by the TCP
//! transport (`quorate-transport`); clients register sessions through
//! each shard's log and number their writes, so retries apply once (Raft
//! thesis §6.3, see [`store`]); values carry HLC stamps
//! (`quorate-clocks`); and the replicas of a shard compare Merkle digests
//! of their key buckets (`quorate-merkle`) at equal applied indexes and
//! repair a damaged bucket on their own ([`anti_entropy`]). A shard's
//! membership changes live: a new server joins as a learner, is caught up
//! and promoted (`Node::add_voter`), and a member (even the leader) can be
//! removed. Reads choose their consistency per request
//! ([`protocol::Consistency`]): linearizable (ReadIndex), the leader's
//! lease, session (any replica caught up with the client's session token:
//! read-your-writes, monotonic reads and writes, writes-follow-reads), or
//! any (possibly stale, labelled so). Nodes estimate each other's clock
//! offsets NTP-style ([`clock_sync`]). Transactions write and read keys
//! of several shards atomically ([`txn`]): two-phase commit whose record
//! lives in the first key's shard, with intents that block conflicting
//! readers and writers until they are resolved.
//!
//! [`scenario::run`] is the program's default: three nodes and two shards in
//! one process, a scripted workload with a leader crash and a restart, a
//! member replaced under load, a replica corrupted and repaired, and a
//! report. [`server`] and [`client`] are what the `node`, `put`, `get` and
//! `bench` commands run.
//!
//! Talking to a running cluster (started with `kv-cluster node ...`):
//!
//! ```no_run
//! use bytes::Bytes;
//! use quorate_examples::kv_cluster::{Error, client::Client, protocol::Reply};
//!
//! # async fn demo() -> Result<(), Error> {
//! let nodes = [(1, "127.0.0.1:7001".parse().unwrap()), (2, "127.0.0.1:7002".parse().unwrap())];
//! let mut client = Client::new(Client::random_id(), &nodes, 2)?; // 2 shards
//! client.put("colour", Bytes::from("blue")).await?; // registers a session, then writes
//! let answer = client.get("colour").await?;
//! assert!(matches!(answer.reply, Reply::Value { value: Some((v, _stamp)), .. } if v == "blue"));
//! # Ok(())
//! # }
//! ```

pub mod anti_entropy;
pub mod certs;
pub mod client;
pub mod clock_sync;
pub mod log_store;
pub mod protocol;
pub mod scenario;
pub mod security;
pub mod server;
pub mod store;
pub mod txn;

use quorate_transport::framing::ChannelId;

/// Names the file an I/O error is about.
pub(crate) trait AtPath<T> {
    /// The error as [`Error::File`] naming `path`.
    fn at(self, path: &std::path::Path) -> Result<T, Error>;
}

impl<T> AtPath<T> for Result<T, std::io::Error> {
    fn at(self, path: &std::path::Path) -> Result<T, Error> {
        self.map_err(|source| Error::File {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// The channel clients talk on; shard `s`'s Raft messages use channel `s`.
pub const CLIENT_CHANNEL: ChannelId = ChannelId(1 << 20);

/// What can go wrong in kv-cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket or other I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A file or directory failed.
    #[error("{}: {source}", path.display())]
    File {
        /// The file or directory.
        path: std::path::PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The Raft state machine refused something.
    #[error("raft: {0}")]
    Raft(#[from] quorate_raft_core::Error),
    /// The durable log could not be opened (damage is named with its file
    /// and offset).
    #[error("log: {0}")]
    Log(#[from] quorate_raft_core::storage::segmented::SegmentedLogError),
    /// The log file could not be replayed.
    #[error("log storage: {0}")]
    Storage(#[from] quorate_raft_core::StorageError),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] quorate_transport::tcp::TcpError),
    /// Shard placement failed.
    #[error("placement: {0}")]
    Placement(#[from] quorate_consistent_hash::Error),
    /// No request id could be minted.
    #[error("request id: {0}")]
    Id(#[from] quorate_ids::IdError),
    /// Bytes from the network did not parse.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// A request got no answer before its deadline, despite retries.
    #[error("request {id} unanswered by {tried}")]
    Unanswered {
        /// The request's correlation id.
        id: u64,
        /// The nodes it was sent to, as `id=address`.
        tried: String,
    },
    /// Cluster certificates could not be made or loaded.
    #[error("certificates: {0}")]
    Certs(#[from] certs::CertsError),
    /// Plain TCP believes every hello, so it is for loopback only unless
    /// the operator says otherwise.
    #[error(
        "refusing to listen on {addr} without --tls-dir: any host that reaches it could pose as a node (use --tls-dir DIR from `kv-cluster certs`, or --insecure)"
    )]
    Insecure {
        /// The address.
        addr: std::net::SocketAddr,
    },
    /// The node could not listen where it was told to.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
    /// No node asked could be connected to.
    #[error("cannot reach {failures}")]
    Unreachable {
        /// Each node and why, e.g. `1=127.0.0.1:7001 (dialing 127.0.0.1:7001: Connection refused)`.
        failures: String,
    },
    /// The shard does not exist on the node that answered.
    #[error("no shard {shard} on node {node}")]
    NoSuchShard {
        /// The shard.
        shard: u32,
        /// The node, as `id=address`.
        node: String,
    },
    /// A node understood the request and refused it.
    #[error("refused by node {node}: {reason}")]
    Refused {
        /// The node, as `id=address`.
        node: String,
        /// Its reason.
        reason: String,
    },
    /// A lease read reached the shard's leader while it held no lease.
    #[error("node {node} holds no leader lease now; read linearizable instead")]
    LeaseUnavailable {
        /// The leader, as `id=address`.
        node: String,
    },
    /// The write's session expired (or was evicted) on its shard.
    #[error(
        "session {session} of shard {shard} expired; {}",
        if *.maybe_applied { "an earlier attempt of the write may have been applied" } else { "the write was not applied" }
    )]
    SessionExpired {
        /// The shard.
        shard: u32,
        /// The session.
        session: u64,
        /// Whether an earlier attempt may have been applied (so resending
        /// under a new session could apply it twice).
        maybe_applied: bool,
    },
    /// A node answered with a reply that does not fit the request.
    #[error("unexpected reply from node {node}: {reply}")]
    UnexpectedReply {
        /// The node, as `id=address`.
        node: String,
        /// The reply.
        reply: String,
    },
    /// A node task failed.
    #[error("node task: {0}")]
    Task(String),
    /// The scenario saw something wrong.
    #[error("scenario check failed: {0}")]
    Check(String),
    /// A key stayed under a transaction's intent for the whole bounded
    /// wait (pushes found the transaction pending and unexpired each time).
    #[error("key {key:?} stayed locked by transaction {txn} for {waited_ms} ms")]
    Locked {
        /// The key.
        key: String,
        /// The transaction holding it.
        txn: txn::TxnId,
        /// How long the client waited.
        waited_ms: u64,
    },
}
