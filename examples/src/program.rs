//! What every example program does before its work: logging with
//! `tracing` (`RUST_LOG`, or a default level) to stderr, and a tokio
//! runtime with two workers.

use std::io::IsTerminal;

/// Logs to stderr at `RUST_LOG`'s levels, or at `default` (e.g. `"info"`
/// for a server, `"warn"` for a program whose stdout is its output).
pub fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// A multi-threaded runtime with two workers, timers and I/O.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Writes one line to stdout like `println!`, but a closed stdout (the
/// reader went away, as `kv-cluster status | head` does) ends the program
/// quietly with success instead of panicking: there is no one left to
/// tell. Any other write error is reported on stderr and exits with 1.
pub fn print_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` for the example programs, through [`print_line`]: a reader
/// that closed the pipe ends the program instead of panicking it.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::program::print_line(format_args!($($arg)*))
    };
}

/// The whole `main` of an example program named `name`: logging at
/// `default` (see [`init_tracing`]), the [`runtime`], and `work` run on it;
/// an error (starting the runtime, or `work`'s) is printed to stderr as
/// `name: error` and exits with failure.
pub fn main<E: std::fmt::Display>(
    name: &str,
    default: &str,
    work: impl std::future::Future<Output = Result<std::process::ExitCode, E>>,
) -> std::process::ExitCode {
    init_tracing(default);
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("{name}: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
