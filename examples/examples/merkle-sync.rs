//! A stale replica syncs a set of blocks from two peers over TCP with the
//! Merkle sync state machines: signed root, diff, block requests with proofs
//! shortened by `have` announcements, and a rotten block from a faulty peer
//! caught and fetched again from the honest one.
//!
//! `cargo run --release -p quorate-examples --example merkle-sync`

use std::process::ExitCode;

use quorate_examples::merkle_sync::{self, Config};

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(merkle_sync::run(&Config::default())) {
        Ok(report) => {
            print!("{}", report.render());
            if report.roots_match() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("merkle-sync failed: {error}");
            ExitCode::FAILURE
        }
    }
}
