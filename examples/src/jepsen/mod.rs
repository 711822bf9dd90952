//! Test machinery for kv-cluster as real processes, in the style of
//! Jepsen: start `kv-cluster node` processes ([`cluster`]), put TCP
//! proxies between them that can cut or stall links ([`proxy`]), record
//! what clients saw ([`history`]), inject faults from a seed
//! ([`nemesis`]), ask nodes who leads ([`probe`]) and check the history
//! for lost writes and linearizability ([`check`], with
//! `quorate-raft-core`'s checker), and per client session for the
//! session guarantees ([`session`]), and transaction histories for
//! atomic visibility and serializability ([`txn`]).
//!
//! Nothing here is used by the programs; the tests in `examples/tests`
//! (`kv_processes.rs`, `jepsen.rs`, `kv_ops.rs`) are its users.

pub mod check;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod probe;
pub mod proxy;
pub mod session;
pub mod txn;

/// What can go wrong while driving a cluster of processes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file, socket or process failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// An example binary (`kv-cluster`, `chat`) could not be found or
    /// built.
    #[error("example binary: {0}")]
    Binary(String),
    /// A node id the cluster does not have.
    #[error("no node {0}")]
    NoSuchNode(u64),
}
