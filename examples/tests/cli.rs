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
