//! Three simulated processes exchange messages; every event is printed with
//! its Lamport, vector and hybrid logical clock stamps, and the concurrent
//! events are named.
//!
//! `cargo run --release -p quorate-examples --example clocks` runs the
//! scripted scenario; pass a number (`-- 42`) to run a random one with that seed.

use std::process::ExitCode;

use quorate_examples::clocks;

fn main() -> ExitCode {
    let actions = match std::env::args().nth(1) {
        None => clocks::scripted(),
        Some(arg) => match arg.parse::<u64>() {
            Ok(seed) => {
                println!("Random scenario, seed {seed}.");
                clocks::random(seed, 14)
            }
            Err(_) => {
                eprintln!("usage: clocks [SEED]   (SEED: a number for a random scenario)");
                return ExitCode::FAILURE;
            }
        },
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
