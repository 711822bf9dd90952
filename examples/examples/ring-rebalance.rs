//! Why modulo placement fails and consistent hashing works: keys moved when
//! a node joins or leaves, for modulo, ring, jump, rendezvous, Maglev and
//! multi-probe; then bounded-load placement under a hot key.
//!
//! `cargo run --release -p quorate-examples --example ring-rebalance`
//! (optional: `-- NODES KEYS`).

use std::process::ExitCode;

use quorate_examples::ring_rebalance::{self, Config};

fn main() -> ExitCode {
    let mut config = Config::default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = (
        args.first().map(|a| a.parse::<u32>()),
        args.get(1).map(|a| a.parse::<u64>()),
    );
    match parsed {
        (Some(Err(_)), _) | (_, Some(Err(_))) => {
            eprintln!("usage: ring-rebalance [NODES [KEYS]]");
            return ExitCode::FAILURE;
        }
        (nodes, keys) => {
            if let Some(Ok(nodes)) = nodes {
                config.nodes = nodes;
            }
            if let Some(Ok(keys)) = keys {
                config.keys = keys;
            }
        }
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
