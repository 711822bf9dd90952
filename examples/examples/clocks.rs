//! Three simulated processes exchange messages; every event is printed with
//! its Lamport, vector and hybrid logical clock stamps, and the concurrent
//! events are named.
//!
//! `cargo run --release -p quorate-examples --example clocks` runs the
//! scripted scenario; pass a number (`-- 42`) to run a random one with that seed.

use std::process::ExitCode;

use clap::Parser;
use quorate_examples::clocks;

/// Three simulated processes exchange messages; every event is printed
/// with its Lamport, vector and hybrid logical clock stamps.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Cli {
    /// Run a random scenario from this seed instead of the scripted one.
    seed: Option<u64>,
}

fn main() -> ExitCode {
    let actions = match Cli::parse().seed {
        None => clocks::scripted(),
        Some(seed) => {
            println!("Random scenario, seed {seed}.");
            clocks::random(seed, 14)
        }
    };
    match clocks::run(&actions) {
        Ok(run) => {
            print!("{}", run.render());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("scenario failed: {error}");
            ExitCode::FAILURE
        }
    }
}
