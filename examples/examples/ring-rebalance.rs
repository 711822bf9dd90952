//! Why modulo placement fails and consistent hashing works: keys moved when
//! a node joins or leaves, for modulo, ring, jump, rendezvous, Maglev and
//! multi-probe; then bounded-load placement under a hot key.
//!
//! `cargo run --release -p quorate-examples --example ring-rebalance`
//! (optional: `-- NODES KEYS`).

use std::process::ExitCode;

use clap::Parser;
use quorate_examples::ring_rebalance::{self, Config};

/// Keys moved when a node joins or leaves, for modulo, ring, jump,
/// rendezvous, Maglev and multi-probe placement; then bounded-load
/// placement under a hot key.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Cli {
    /// Number of nodes (default: the scenario's).
    nodes: Option<u32>,
    /// Number of keys placed (default: the scenario's).
    keys: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = Config::default();
    if let Some(nodes) = cli.nodes {
        config.nodes = nodes;
    }
    if let Some(keys) = cli.keys {
        config.keys = keys;
    }
    if config.nodes < 2 || config.leaver.0 >= config.nodes {
        config.leaver.0 = config.nodes / 2;
    }
    match ring_rebalance::run(&config) {
        Ok(report) => {
            print!("{}", report.render());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("ring-rebalance failed: {error}");
            ExitCode::FAILURE
        }
    }
}
