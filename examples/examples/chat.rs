//! chat: the course notes' chat protocol, archive (request/reply), posts
//! (request/reply, acknowledged once archived) and live feed (pub/sub)
//! multiplexed on one TCP connection per client; Snowflake ids, vector
//! clocks, causal display.
//!
//! With no arguments (or `demo`): three scripted clients in this process;
//! carol drops her connection, reconnects and catches up. Across
//! terminals:
//!
//! ```text
//! chat server --listen 127.0.0.1:7100 --data-dir chat-data
//! chat client --connect 127.0.0.1:7100 --name alice
//! chat client --connect 127.0.0.1:7100 --name bob
//! ```

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use quorate_examples::chat::archive::Archive;
use quorate_examples::chat::client::{self, ClientOptions};
use quorate_examples::chat::server::{self, ServerStats};
use quorate_examples::chat::{self, ChatError, SERVER};
use quorate_transport::tcp::TcpTransport;

#[derive(Parser, Debug)]
#[command(about = "A chat room: a durable archive, acknowledged posts, a causal live feed")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the scripted three-client conversation in this process (the
    /// default).
    Demo,
    /// Run the server: the archive in DIR survives kill -9 and restart.
    Server {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// Where the archive is kept (`archive.log`).
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Post each line of stdin and print the room to stdout in causal
    /// order; exits when stdin ends and every post is acknowledged.
    Client {
        /// The server's address.
        #[arg(long)]
        connect: SocketAddr,
        /// The name to post under (unique among running clients).
        #[arg(long)]
        name: String,
        /// Posts in flight at once.
        #[arg(long, default_value_t = 32)]
        window: usize,
        /// Seconds to wait for the last acknowledgements once stdin ends.
        #[arg(long, default_value_t = 30)]
        linger: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs at info by default; the demo and the client print
    // the room on stdout, so they log warnings only unless RUST_LOG says.
    let default = match cli.command {
        Some(Command::Server { .. }) => "info",
        _ => "warn",
    };
    quorate_examples::program::main("chat", default, run(cli.command.unwrap_or(Command::Demo)))
}

async fn run(command: Command) -> Result<ExitCode, ChatError> {
    match command {
        Command::Demo => {
            let report = chat::run().await?;
            print!("{}", report.render());
            Ok(if report.causally_consistent() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Server { listen, data_dir } => {
            let archive = Archive::open(&data_dir)?;
            if archive.torn_bytes() > 0 {
                tracing::warn!(
                    torn_bytes = archive.torn_bytes(),
                    "cut a torn write off the archive's end (never acknowledged)"
                );
            }
            if !listen.ip().is_loopback() {
                tracing::warn!(%listen, "no authentication: anyone who reaches the port can post under any name");
            }
            let net = TcpTransport::bind(SERVER, listen, server::tcp_config()).await?;
            let addr = net.local_addr().unwrap_or(listen);
            tracing::info!(
                %addr,
                data_dir = %data_dir.display(),
                archived = archive.len(),
                hwm_frames = server::HWM_FRAMES,
                hwm_bytes = server::HWM_BYTES,
                "chat server listening"
            );
            let (stats, _) = tokio::sync::watch::channel(ServerStats::default());
            let mut watch = stats.subscribe();
            // Counters in the log whenever drops happened, at most every 5 s.
            tokio::spawn(async move {
                let mut logged = ServerStats::default();
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    if watch.has_changed().is_err() {
                        break;
                    }
                    let now = *watch.borrow_and_update();
                    if now.feed_dropped != logged.feed_dropped
                        || now.replies_dropped != logged.replies_dropped
                    {
                        tracing::info!(
                            feed_dropped = now.feed_dropped,
                            replies_dropped = now.replies_dropped,
                            slow_episodes = now.slow_episodes,
                            archived = now.archived,
                            clients = now.clients,
                            "high-water mark counters"
                        );
                        logged = now;
                    }
                }
            });
            server::serve(net, archive, std::future::pending(), stats).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Client {
            connect,
            name,
            window,
            linger,
        } => {
            let mut options = ClientOptions::new(name, connect);
            options.window = window.max(1);
            options.linger = Duration::from_secs(linger);
            let (lines_tx, lines) = tokio::sync::mpsc::channel(1);
            // Stdin is read on a thread of its own; the loop takes a line
            // only when it has room for another post.
            std::thread::spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    let Ok(line) = line else { break };
                    if lines_tx.blocking_send(line).is_err() {
                        break;
                    }
                }
            });
            let stdout = std::io::stdout();
            let summary = client::run(options, lines, |shown| {
                let mut out = stdout.lock();
                // A closed stdout is no reason to stop posting.
                let _ = writeln!(out, "{shown}");
                let _ = out.flush();
            })
            .await?;
            tracing::info!(?summary, "done");
            Ok(ExitCode::SUCCESS)
        }
    }
}
