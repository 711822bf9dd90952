//! The course notes' chat protocol: archive (request/reply), posts
//! (push/pull) and live feed (pub/sub) multiplexed on one TCP connection per
//! client; Snowflake ids, vector clocks, causal display. Three scripted
//! clients; carol drops her connection, reconnects and catches up.
//!
//! `cargo run --release -p quorate-examples --example chat`

use std::process::ExitCode;

use quorate_examples::chat;

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(chat::run()) {
        Ok(report) => {
            print!("{}", report.render());
            if report.causally_consistent() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("chat failed: {error}");
            ExitCode::FAILURE
        }
    }
}
