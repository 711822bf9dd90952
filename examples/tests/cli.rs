//! The small example programs as their users run them: `--help` prints
//! usage and exits 0, a bad argument is refused with a non-zero exit, and a
//! run with arguments prints its report and exits 0. (chat, merkle-sync and
//! kv-cluster have their own process tests.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output, Stdio};

use quorate_examples::jepsen::cluster::example_binary;

fn run(name: &str, args: &[&str]) -> Output {
    let env = format!("QUORATE_{}_BIN", name.replace('-', "_").to_uppercase());
    let bin = example_binary(name, &env).unwrap();
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn assert_help(name: &str, words: &[&str]) {
    let help = run(name, &["--help"]);
    let usage = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{name} --help: {help:?}");
    assert!(usage.contains("Usage:"), "{usage}");
    for word in words {
        assert!(usage.contains(word), "{name} --help lacks {word}: {usage}");
    }
    let bad = run(name, &["not-a-number"]);
    assert!(!bad.status.success(), "{name} accepted a bad argument");
    let error = String::from_utf8_lossy(&bad.stderr);
    assert!(error.contains("invalid value"), "{error}");
}

#[test]
fn ring_rebalance_answers_help_and_runs_with_its_arguments() {
    assert_help("ring-rebalance", &["[NODES]", "[KEYS]"]);
    let out = run("ring-rebalance", &["8", "20000"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("modulo"));
}

#[test]
fn clocks_answers_help_and_runs_scripted_and_seeded() {
    assert_help("clocks", &["[SEED]"]);
    let scripted = run("clocks", &[]);
    assert!(scripted.status.success(), "{scripted:?}");
    let seeded = run("clocks", &["42"]);
    assert!(seeded.status.success(), "{seeded:?}");
    assert!(String::from_utf8_lossy(&seeded.stdout).contains("seed 42"));
}

#[test]
fn kv_cluster_ends_quietly_when_its_reader_goes_away() {
    let bin = example_binary("kv-cluster", "QUORATE_KV_CLUSTER_BIN").unwrap();
    let mut child = Command::new(bin)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the first line (as `| head -0` would).
    drop(child.stdout.take());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the demo did not end within 120 s of its reader leaving");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.success(), "{status:?}: {stderr}");
}
