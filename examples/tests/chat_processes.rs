//! `chat server` and `chat client` as real processes, the way people run
//! them in terminals: two clients talk, a third joins later and catches up
//! from the archive, the server is killed -9 (with a torn write at the end
//! of its file) and restarted with the archive intact, and a client that
//! stops reading does not grow the server's memory while another floods
//! the room. Every wait is bounded; every child is killed on drop; a
//! failure keeps the run directory (logs, archive) and names it.
//!
//! The tests take a lock so that they run one at a time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quorate_examples::jepsen::cluster::{CliProcess, example_binary, free_addr, run_dir, serial};

/// Environment variable naming a `chat` binary to use instead of the
/// example next to the test executable.
const BINARY_ENV: &str = "QUORATE_CHAT_BIN";
/// How long a step may take on a loaded machine (healthy: milliseconds).
const STEP: Duration = Duration::from_secs(30);

/// A server process, its run directory and the clients started against it.
struct Room {
    bin: PathBuf,
    dir: PathBuf,
    addr: SocketAddr,
    server: Option<CliProcess>,
    keep: bool,
}

impl Room {
    fn start(name: &str) -> Room {
        let mut room = Room {
            bin: example_binary("chat", BINARY_ENV).unwrap(),
            dir: run_dir(name).unwrap(),
            addr: free_addr().unwrap(),
            server: None,
            keep: false,
        };
        room.start_server();
        room
    }

    fn server_log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn archive(&self) -> PathBuf {
        self.dir.join("data").join("archive.log")
    }

    /// Starts the server (appending to its log) and waits until it listens.
    fn start_server(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.server_log())
            .unwrap();
        let listening_before = self.log_count("chat server listening");
        let child = Command::new(&self.bin)
            .arg("server")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.server = Some(CliProcess::from_child(
            child,
            self.server_log(),
            format!("chat server --listen {}", self.addr),
        ));
        let server = self.server.as_ref().unwrap();
        if !server.wait_output(STEP, |log| {
            log.matches("chat server listening").count() > listening_before
        }) {
            self.fail("the server did not start listening");
        }
    }

    fn log_count(&self, what: &str) -> usize {
        fs::read_to_string(self.server_log())
            .unwrap_or_default()
            .matches(what)
            .count()
    }

    fn server_pid(&self) -> u32 {
        self.server.as_ref().and_then(CliProcess::pid).unwrap()
    }

    fn kill_server(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.kill().unwrap();
        }
    }

    /// `chat client --name name` with stdin as given, stdout and stderr to
    /// `client-<tag>.out`.
    fn client(&self, tag: &str, name: &str, stdin: Stdio) -> CliProcess {
        let output = self.dir.join(format!("client-{tag}.out"));
        let file = File::create(&output).unwrap();
        let child = self
            .client_command(name)
            .stdin(stdin)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        CliProcess::from_child(child, output, format!("chat client --name {name}"))
    }

    fn client_command(&self, name: &str) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .arg("client")
            .arg("--connect")
            .arg(self.addr.to_string())
            .arg("--name")
            .arg(name);
        command
    }

    fn fail(&mut self, what: &str) -> ! {
        self.keep = true;
        let log = fs::read_to_string(self.server_log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        panic!(
            "{what}\nrun directory kept: {}\n--- server log (last 20 lines) ---\n{tail}",
            self.dir.display()
        );
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        self.kill_server();
        if self.keep || std::thread::panicking() {
            eprintln!("kept the run directory {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// One displayed line: `via {clock} author: text`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    via: String,
    clock: BTreeMap<String, u64>,
    author: String,
    text: String,
}

/// The chat lines of a client's output (log lines are skipped).
fn screen(output: &str) -> Vec<Shown> {
    output
        .lines()
        .filter_map(|line| {
            let (via, rest) = line.split_once(' ')?;
            if !["sent", "feed", "archive"].contains(&via) {
                return None;
            }
            let open = rest.find('{')?;
            let close = rest.find('}')?;
            let clock = rest[open + 1..close]
                .split(", ")
                .filter(|e| !e.is_empty())
                .map(|e| {
                    let (a, n) = e.rsplit_once(':')?;
                    Some((a.to_owned(), n.parse().ok()?))
                })
                .collect::<Option<BTreeMap<_, _>>>()?;
            let (author, text) = rest[close + 1..].trim_start().split_once(':')?;
            Some(Shown {
                via: via.to_owned(),
                clock,
                author: author.to_owned(),
                text: text.trim_start().to_owned(),
            })
        })
        .collect()
}

/// `a` happened before `b`.
fn before(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> bool {
    a != b && a.iter().all(|(k, &n)| b.get(k).copied().unwrap_or(0) >= n)
}

/// Whether no line is shown after one that it happened before.
fn causal(shown: &[Shown]) -> bool {
    shown.iter().enumerate().all(|(i, earlier)| {
        shown[i + 1..]
            .iter()
            .all(|later| !before(&later.clock, &earlier.clock))
    })
}

fn texts(shown: &[Shown]) -> Vec<&str> {
    shown.iter().map(|s| s.text.as_str()).collect()
}

fn say(room: &mut Room, client: &mut CliProcess, line: &str) {
    let stdin = client.stdin().unwrap();
    if writeln!(stdin, "{line}")
        .and_then(|()| stdin.flush())
        .is_err()
    {
        let out = client.output();
        room.fail(&format!("{} closed its stdin; output:\n{out}", client.line));
    }
}

fn sees(room: &mut Room, client: &CliProcess, text: &str) {
    if !client.wait_output(STEP, |out| texts(&screen(out)).contains(&text)) {
        let out = client.output();
        room.fail(&format!(
            "{} did not display {text:?} within {STEP:?}; its output:\n{out}",
            client.line
        ));
    }
}

/// Waits for a client to exit 0 and returns what it displayed.
fn finishes(room: &mut Room, client: CliProcess) -> Vec<Shown> {
    let outcome = client.wait_for(STEP).unwrap();
    if !outcome.success() {
        room.fail(&format!(
            "`{}` did not exit 0 within {STEP:?}: {:?}\n{}",
            outcome.line, outcome.status, outcome.output
        ));
    }
    screen(&outcome.output)
}

#[test]
fn clients_talk_a_late_joiner_catches_up_and_the_archive_survives_kill9() {
    let _serial = serial();
    let mut room = Room::start("chat-talk");
    let mut alice = room.client("alice", "alice", Stdio::piped());
    let mut bob = room.client("bob", "bob", Stdio::piped());

    say(&mut room, &mut alice, "hi bob, lunch?");
    sees(&mut room, &bob, "hi bob, lunch?");
    say(&mut room, &mut bob, "yes! noodles?");
    sees(&mut room, &alice, "yes! noodles?");
    say(&mut room, &mut alice, "noodles it is");
    sees(&mut room, &bob, "noodles it is");

    // Carol joins later with nothing to say: the archive brings it all.
    let carol = room.client("carol", "carol", Stdio::null());
    let shown = finishes(&mut room, carol);
    let conversation = ["hi bob, lunch?", "yes! noodles?", "noodles it is"];
    if texts(&shown) != conversation || !causal(&shown) {
        room.fail(&format!("carol, joining later, saw {shown:#?}"));
    }
    assert!(shown.iter().all(|s| s.via == "archive"), "{shown:#?}");

    // kill -9, plus half a record at the end (a write torn by the crash).
    room.kill_server();
    let archive = room.archive();
    let before_crash = fs::metadata(&archive).unwrap().len();
    let mut torn = OpenOptions::new().append(true).open(&archive).unwrap();
    torn.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(torn);
    room.start_server();
    if room.log_count("torn_bytes=7") != 1 {
        room.fail("the restarted server did not report cutting the 7 torn bytes");
    }
    assert_eq!(fs::metadata(&archive).unwrap().len(), before_crash);

    // The clients redial on their own and go on.
    say(&mut room, &mut alice, "back after the crash");
    sees(&mut room, &bob, "back after the crash");

    let dave = room.client("dave", "dave", Stdio::null());
    let shown = finishes(&mut room, dave);
    let mut all = conversation.to_vec();
    all.push("back after the crash");
    if texts(&shown) != all || !causal(&shown) {
        room.fail(&format!(
            "dave, after the restart, saw {shown:#?}, expected {all:?}"
        ));
    }

    // End of input: each exits 0 once its posts are acknowledged.
    alice.close_stdin();
    bob.close_stdin();
    for (name, client) in [("alice", alice), ("bob", bob)] {
        let shown = finishes(&mut room, client);
        if texts(&shown) != all || !causal(&shown) {
            room.fail(&format!("{name} displayed {shown:#?}, expected {all:?}"));
        }
    }
}

/// Resident set size of process `pid` in bytes (Linux); `None` elsewhere.
fn rss(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn flood_file(dir: &Path, lines: usize, len: usize) -> PathBuf {
    let path = dir.join("flood.txt");
    let mut out = std::io::BufWriter::new(File::create(&path).unwrap());
    for i in 0..lines {
        writeln!(out, "flood {i:06} {}", "x".repeat(len)).unwrap();
    }
    out.flush().unwrap();
    path
}

/// Messages and bytes of the flood.
const FLOOD_LINES: usize = 30_000;
const FLOOD_LINE_BYTES: usize = 1000;
/// How much the server may grow while the flood passes a reader that
/// stopped reading (about 30 MiB of it): the per-client high-water mark
/// (1 MiB), the archive's index (about 32 bytes a message) and allocator
/// slack.
const GROWTH_BOUND: u64 = 12 * 1024 * 1024;

#[test]
fn a_client_that_stops_reading_does_not_grow_the_server() {
    let _serial = serial();
    let mut room = Room::start("chat-slow");
    let pid = room.server_pid();
    // Its stdout is a pipe nobody reads: once the pipe is full it blocks
    // in `write`, stops taking frames off its connection, and TCP pushes
    // back to the server. Its transport still answers pings, so the
    // server's idle timeout never closes it.
    let slow_err = room.dir.join("client-slow.err");
    let mut slow_child = room
        .client_command("slow")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(File::create(&slow_err).unwrap())
        .spawn()
        .unwrap();
    let slow_stdout = slow_child.stdout.take().unwrap();
    let mut slow = CliProcess::from_child(slow_child, slow_err, "chat client --name slow".into());
    let connected = |log: &str| log.matches("client connected").count() >= 1;
    if !room.server.as_ref().unwrap().wait_output(STEP, connected) {
        room.fail("the slow client never connected");
    }
    // Warm up (first allocations, the archive file) before the baseline.
    let warm = room.client("warm", "warm", Stdio::piped());
    let mut warm = warm;
    for i in 0..50 {
        say(&mut room, &mut warm, &format!("warm-up {i}"));
    }
    warm.close_stdin();
    finishes(&mut room, warm);
    std::thread::sleep(Duration::from_millis(300));
    let baseline = rss(pid);

    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(r) = rss(pid) {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let flood = flood_file(&room.dir, FLOOD_LINES, FLOOD_LINE_BYTES);
    let started = Instant::now();
    let flooder_log = room.dir.join("client-flooder.out");
    let flooder = room
        .client_command("flooder")
        .stdin(File::open(&flood).unwrap())
        .stdout(Stdio::null())
        .stderr(File::create(&flooder_log).unwrap())
        .spawn()
        .unwrap();
    let flooder = CliProcess::from_child(flooder, flooder_log, "chat client --name flooder".into());
    // Every post acknowledged: nobody waited for the slow reader.
    let outcome = flooder.wait_for(Duration::from_secs(180)).unwrap();
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    if !outcome.success() {
        room.fail(&format!(
            "the flooder did not get its {FLOOD_LINES} posts acknowledged: {:?}\n{}",
            outcome.status, outcome.output
        ));
    }
    let posted = (FLOOD_LINES * (FLOOD_LINE_BYTES + 13)) as u64;
    match (baseline, peak.load(Ordering::Relaxed)) {
        (Some(base), peak) if peak > 0 => {
            let growth = peak.saturating_sub(base);
            println!(
                "server RSS {:.1} MiB before, peak {:.1} MiB during a flood of {FLOOD_LINES} messages \
                 ({:.1} MiB, {took:.1?}) past a client that stopped reading: +{:.1} MiB",
                base as f64 / 1048576.0,
                peak as f64 / 1048576.0,
                posted as f64 / 1048576.0,
                growth as f64 / 1048576.0,
            );
            if growth > GROWTH_BOUND {
                room.fail(&format!(
                    "the server grew {growth} bytes (bound {GROWTH_BOUND}) while {posted} bytes \
                     were posted past a client that stopped reading"
                ));
            }
        }
        _ => println!("no /proc/<pid>/status here: the memory bound is not checked"),
    }
    if room.log_count("high-water mark") == 0 {
        room.fail("the server never logged the slow client reaching its high-water mark");
    }

    // It reads again: it catches up from the archive and shows everything.
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut out = slow_stdout;
        std::io::Read::read_to_string(&mut out, &mut all).unwrap();
        all
    });
    slow.close_stdin();
    let status = slow.wait_for(Duration::from_secs(120)).unwrap();
    let shown = screen(&reader.join().unwrap());
    if !status.success() {
        room.fail(&format!(
            "the slow client did not exit 0 after reading again: {:?}\n{}",
            status.status, status.output
        ));
    }
    // (`causal` is quadratic: the flooder's own order is what can break.)
    let seqs: Vec<u64> = shown
        .iter()
        .filter(|s| s.author == "flooder")
        .map(|s| s.clock["flooder"])
        .collect();
    let flooded = seqs.len();
    if flooded != FLOOD_LINES || seqs.windows(2).any(|w| w[0] >= w[1]) {
        room.fail(&format!(
            "the slow client, reading again, displayed {flooded} of {FLOOD_LINES} flood messages"
        ));
    }
    println!(
        "the slow client caught up: {} of its lines came from the archive",
        shown.iter().filter(|s| s.via == "archive").count()
    );
}

#[test]
fn help_prints_usage_and_no_arguments_run_the_demo() {
    let _serial = serial();
    let bin = example_binary("chat", BINARY_ENV).unwrap();
    let help = Command::new(&bin).arg("--help").output().unwrap();
    let usage = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{help:?}");
    for command in ["demo", "server", "client"] {
        assert!(usage.contains(command), "{usage}");
    }
    let client_help = Command::new(&bin)
        .args(["client", "--help"])
        .output()
        .unwrap();
    let usage = String::from_utf8_lossy(&client_help.stdout);
    assert!(
        client_help.status.success() && usage.contains("--connect") && usage.contains("--name")
    );
    let demo = Command::new(&bin).stdin(Stdio::null()).output().unwrap();
    let report = String::from_utf8_lossy(&demo.stdout);
    assert!(demo.status.success(), "{demo:?}");
    assert!(
        report.contains("7 messages archived; every screen shows them all in causal order: yes"),
        "{report}"
    );
}
