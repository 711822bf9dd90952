//! The durable log under real crashes: a child process (this test binary,
//! re-run with `QUORATE_KILL_CHILD` set) appends entries, syncs, and prints
//! each index it acknowledged; the parent kills it with SIGKILL at random
//! moments, reopens the log and checks that every acknowledged entry is
//! there intact. `QUORATE_KILLS=N` sets the number of kills (default 40).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use quorate_raft_core::storage::segmented::{Options, SegmentedLog};
use quorate_raft_core::{Configuration, Entry, LogIndex, LogStorage, NodeId, Storage, Term};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD: &str = "QUORATE_KILL_CHILD";
const OPTIONS: Options = Options {
    segment_bytes: 16 << 10,
};

fn data(index: u64) -> Bytes {
    let len = 20 + (index * 37 % 300) as usize;
    Bytes::from(
        format!("entry {index} ")
            .into_bytes()
            .into_iter()
            .cycle()
            .take(len)
            .collect::<Vec<u8>>(),
    )
}

fn open(dir: &Path) -> SegmentedLog {
    SegmentedLog::open(dir, Configuration::new([NodeId(1)]), OPTIONS).unwrap()
}

/// The child's work; a no-op unless run as the child.
#[test]
fn kill_child() {
    let Some(dir) = std::env::var_os(CHILD) else {
        return;
    };
    let mut log = open(Path::new(&dir));
    let mut next = log.last_index().unwrap().next().0;
    let mut out = std::io::stdout().lock();
    loop {
        let batch = 1 + next % 7;
        let entries: Vec<Entry> = (next..next + batch)
            .map(|i| Entry {
                term: Term(1),
                index: LogIndex(i),
                data: data(i),
            })
            .collect();
        log.append(&entries).unwrap();
        log.sync().unwrap();
        next += batch;
        let acked = next - 1;
        writeln!(out, "acked {acked}").unwrap();
        out.flush().unwrap();
        if acked % 500 < batch {
            let snap = acked.saturating_sub(100).max(1);
            log.compact(LogIndex(snap), Bytes::from(format!("state at {snap}")))
                .unwrap();
            writeln!(out, "compacted {snap}").unwrap();
        }
    }
}

#[test]
fn acknowledged_entries_survive_sigkill() {
    let kills: u64 = std::env::var("QUORATE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let dir = std::env::temp_dir().join(format!("quorate-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let exe = std::env::current_exe().unwrap();
    let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
    let mut acked_max = 0;
    let mut checked = 0u64;
    let mut torn_opens = 0;
    let started = Instant::now();
    for kill in 0..kills {
        let mut child = Command::new(&exe)
            .args(["--exact", "kill_child", "--nocapture", "--test-threads=1"])
            .env(CHILD, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acked = 0;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("acked ") {
                    acked = n.parse().unwrap();
                }
            }
            acked
        });
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        std::thread::sleep(Duration::from_millis(30 + rng_state % 120));
        // SIGKILL on Unix: no destructor, no flush.
        child.kill().unwrap();
        child.wait().unwrap();
        let acked = reader.join().unwrap();
        acked_max = acked_max.max(acked);
        let log = open(&dir);
        torn_opens += u64::from(log.torn_bytes() > 0);
        let (first, last) = (log.first_index().unwrap(), log.last_index().unwrap());
        assert!(
            last.0 >= acked_max,
            "kill {kill}: log ends at {last:?}, {acked_max} were acknowledged"
        );
        let mut out = Vec::new();
        log.entries(first, LogIndex(acked_max + 1), u64::MAX, &mut out)
            .unwrap();
        for e in &out {
            assert_eq!(e.data, data(e.index.0), "kill {kill}: entry {:?}", e.index);
        }
        assert_eq!(out.len() as u64, acked_max + 1 - first.0, "kill {kill}");
        let snap = log.snapshot().unwrap();
        if snap.meta.index.0 > 0 {
            assert_eq!(
                snap.data,
                Bytes::from(format!("state at {}", snap.meta.index.0))
            );
        }
        checked += out.len() as u64;
        assert!(started.elapsed() < Duration::from_secs(120), "bounded time");
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "{kills} kills, {acked_max} entries acknowledged, {checked} entry checks after reopening, {torn_opens} reopens cut a torn tail"
    );
    assert!(acked_max > kills, "the child made progress between kills");
}
