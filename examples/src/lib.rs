//! The logic of quorate's example programs, one module per example, so that
//! tests can run every scenario the programs in `examples/examples` run.

pub mod chat;
pub mod clocks;
pub mod jepsen;
pub mod kv_cluster;
pub mod merkle_sync;
pub mod program;
pub mod ring_rebalance;
