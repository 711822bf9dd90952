//! merkle-sync: Dropbox/git-like block sync of a directory tree under an
//! Ed25519-signed Merkle root.
//!
//! With no arguments (or `demo`): a stale replica syncs a set of blocks from
//! two peers over TCP in this process: signed root, diff, block requests
//! with proofs shortened by `have` announcements, and a rotten block from a
//! faulty peer caught and fetched again from the honest one.
//!
//! ```text
//! cargo run --release -p quorate-examples --example merkle-sync
//! merkle-sync keygen --out publisher.key
//! merkle-sync serve --dir ./photos --listen 127.0.0.1:7100 --key publisher.key
//! merkle-sync fetch --from 127.0.0.1:7100,127.0.0.1:7101 --dir ./copy --trust publisher.key.pub
//! ```

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use quorate_examples::merkle_sync::fetch::{self, FetchConfig};
use quorate_examples::merkle_sync::manifest::{
    DEFAULT_BLOCK_SIZE, Limits, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE,
};
use quorate_examples::merkle_sync::serve::{self, Published, ServeConfig};
use quorate_examples::merkle_sync::wire::{Error, hex};
use quorate_examples::merkle_sync::{self, Config, keys};

#[derive(Parser, Debug)]
#[command(about = "Block sync of a directory tree under an Ed25519-signed Merkle root")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// Bounds on what a source may send (also applied to a served tree).
#[derive(clap::Args, Debug, Clone, Copy)]
struct LimitArgs {
    /// Largest manifest, in bytes.
    #[arg(long, default_value_t = Limits::default().max_manifest_bytes)]
    max_manifest_bytes: u64,
    /// Most files and directories.
    #[arg(long, default_value_t = Limits::default().max_entries)]
    max_entries: u64,
    /// Longest path, in bytes.
    #[arg(long, default_value_t = Limits::default().max_path_len)]
    max_path_len: usize,
    /// Largest tree (all files), in bytes.
    #[arg(long, default_value_t = Limits::default().max_tree_bytes)]
    max_tree_bytes: u64,
}

impl From<LimitArgs> for Limits {
    fn from(a: LimitArgs) -> Self {
        Limits {
            max_manifest_bytes: a.max_manifest_bytes,
            max_entries: a.max_entries,
            max_path_len: a.max_path_len,
            max_tree_bytes: a.max_tree_bytes,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the scripted in-process demo (the default).
    Demo,
    /// Write a new Ed25519 signing key to KEY (mode 0600) and its public
    /// key to KEY.pub.
    Keygen {
        /// Where to write the signing key (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Serve a directory tree under a root signed with KEY.
    Serve {
        /// The directory to serve.
        #[arg(long)]
        dir: PathBuf,
        /// Address to listen on (port 0: any free port, printed).
        #[arg(long)]
        listen: SocketAddr,
        /// The signing key (`keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Bytes per block.
        #[arg(long, default_value_t = DEFAULT_BLOCK_SIZE,
              value_parser = clap::value_parser!(u32).range(i64::from(MIN_BLOCK_SIZE)..=i64::from(MAX_BLOCK_SIZE)))]
        block_size: u32,
        /// Most fetchers connected at once.
        #[arg(long, default_value_t = ServeConfig::default().max_connections)]
        max_connections: usize,
        /// Close a connection silent for this many seconds.
        #[arg(long, default_value_t = ServeConfig::default().idle_timeout.as_secs())]
        idle_timeout_secs: u64,
        #[command(flatten)]
        limits: LimitArgs,
        /// Test fault: flip a byte of every block whose index is a multiple of N.
        #[arg(long, hide = true)]
        corrupt_every: Option<u64>,
        /// Test fault: wait this many milliseconds before each block reply.
        #[arg(long, hide = true, default_value_t = 0)]
        block_delay_ms: u64,
    },
    /// Make DIR identical to the tree served at the sources.
    Fetch {
        /// Sources, comma separated; blocks are fetched from all at once.
        #[arg(long, value_delimiter = ',', required = true)]
        from: Vec<SocketAddr>,
        /// The target directory (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// The publisher's public key (`KEY.pub` of `keygen`).
        #[arg(long)]
        trust: PathBuf,
        /// Seconds one request may go unanswered.
        #[arg(long, default_value_t = 10)]
        request_timeout_secs: u64,
        /// Seconds the whole fetch may take.
        #[arg(long, default_value_t = 3600)]
        deadline_secs: u64,
        #[command(flatten)]
        limits: LimitArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` and `fetch` log at info; the demo prints its own report.
    let default = match cli.command {
        Some(Command::Serve { .. } | Command::Fetch { .. }) => "info",
        _ => "warn",
    };
    quorate_examples::program::main(
        "merkle-sync",
        default,
        run(cli.command.unwrap_or(Command::Demo)),
    )
}

async fn run(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Demo => match merkle_sync::run(&Config::default()).await {
            Ok(report) => {
                print!("{}", report.render());
                Ok(if report.roots_match() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
            Err(error) => Err(Error::Invalid(format!("demo failed: {error}"))),
        },
        Command::Keygen { out } => {
            let public = keys::generate(&out)?;
            quorate_examples::outln!(
                "wrote {} and {} (public key {})",
                out.display(),
                keys::public_path(&out).display(),
                hex(&public.to_bytes())
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            dir,
            listen,
            key,
            block_size,
            max_connections,
            idle_timeout_secs,
            limits,
            corrupt_every,
            block_delay_ms,
        } => {
            let signer = keys::load_signer(&key)?;
            let published = Published::new(&dir, block_size, &limits.into(), &signer)?;
            let config = ServeConfig {
                max_connections,
                idle_timeout: Duration::from_secs(idle_timeout_secs),
                corrupt_every,
                block_delay: Duration::from_millis(block_delay_ms),
            };
            let net = serve::bind(listen, &config).await?;
            if let Some(addr) = net.local_addr() {
                // Tests and scripts read the port from this line.
                quorate_examples::outln!("listening on {addr}");
            }
            // Runs until killed (Ctrl-C, SIGTERM): nothing to flush.
            serve::serve(net, published, config, std::future::pending()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Fetch {
            from,
            dir,
            trust,
            request_timeout_secs,
            deadline_secs,
            limits,
        } => {
            let config = FetchConfig {
                sources: from,
                dir,
                trust: keys::load_verifier(&trust)?,
                limits: limits.into(),
                request_timeout: Duration::from_secs(request_timeout_secs),
                deadline: Duration::from_secs(deadline_secs),
            };
            let bar = if std::io::stdout().is_terminal() {
                let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout());
                if let Ok(style) = ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} blocks {msg}",
                ) {
                    bar.set_style(style);
                }
                bar
            } else {
                ProgressBar::hidden()
            };
            let summary = fetch::fetch(&config, &bar).await?;
            for r in &summary.refused {
                quorate_examples::outln!("refused {}: {}", r.source, r.why);
            }
            quorate_examples::outln!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
