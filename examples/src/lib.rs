//! The logic of quorate's example programs, one module per example, so that
//! tests can run every scenario the programs in `examples/examples` run.

pub mod chat;
pub mod clocks;
pub mod jepsen;
pub mod kv_cluster;
pub mod merkle_sync;
pub mod ring_rebalance;

/// Logs to stderr through `tracing` at level `default` unless `RUST_LOG`
/// says otherwise, in colour only on a terminal: the setup every example
/// program shares.
pub fn init_logging(default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// The runtime the example programs run on: two workers, like the machine.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}
