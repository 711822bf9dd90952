//! merkle-sync as real processes: `keygen`, `serve` and `fetch` spawned
//! from the built example binary, on free loopback ports, every wait
//! bounded, every child killed on drop. A first copy is byte-identical; a
//! 1% change moves about 1% of the bytes; a fetch killed with -9 mid-transfer
//! resumes without fetching again what it had verified; a tampering source
//! is refused and the other completes the copy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use quorate_examples::jepsen::cluster::{example_binary, run_dir, serial, signal};

/// How long a `serve` has to print its address (a loaded debug build is slow).
const STARTUP: Duration = Duration::from_secs(30);
/// How long a `fetch` of the test trees may take.
const FETCH: Duration = Duration::from_secs(120);
/// Block size the tests serve with (small blocks: a 1% change is many blocks).
const BLOCK: &str = "4096";

fn bin() -> PathBuf {
    example_binary("merkle-sync", "QUORATE_MERKLE_SYNC_BIN").unwrap()
}

/// A run directory, removed on drop unless the test is failing.
struct Run(PathBuf);

impl Run {
    fn new(name: &str) -> Self {
        Run(run_dir(name).unwrap())
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("run directory kept: {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process, killed (and reaped) on drop.
struct Proc {
    child: Option<Child>,
    out: PathBuf,
    line: String,
}

impl Proc {
    fn spawn(run: &Run, tag: &str, args: &[&str]) -> Self {
        let out = run.path(&format!("{tag}.out"));
        let err = run.path(&format!("{tag}.err"));
        let child = Command::new(bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(err).unwrap())
            .spawn()
            .unwrap();
        Proc {
            child: Some(child),
            out,
            line: format!("merkle-sync {}", args.join(" ")),
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.out.with_extension("err")).unwrap_or_default()
    }

    /// Waits for exit at most `bound`; `None` (and killed) if it outlived it.
    fn wait(&mut self, bound: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + bound;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs to completion within `bound` and must exit 0; returns stdout.
    fn succeed(mut self, bound: Duration) -> String {
        let status = self.wait(bound);
        assert!(
            status.is_some_and(|s| s.success()),
            "`{}` ended with {status:?}\nstdout:\n{}\nstderr:\n{}",
            self.line,
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `serve --dir <dir>` on a free port; returns it with its address.
fn serve(run: &Run, tag: &str, dir: &Path, extra: &[&str]) -> (Proc, String) {
    let dir = dir.to_str().unwrap().to_owned();
    let key = run.path("key").to_str().unwrap().to_owned();
    let mut args = vec![
        "serve",
        "--dir",
        &dir,
        "--listen",
        "127.0.0.1:0",
        "--key",
        &key,
        "--block-size",
        BLOCK,
    ];
    args.extend_from_slice(extra);
    let mut p = Proc::spawn(run, tag, &args);
    let deadline = Instant::now() + STARTUP;
    loop {
        if let Some(addr) = p
            .stdout()
            .lines()
            .find_map(|l| l.strip_prefix("listening on "))
        {
            return (p, addr.trim().to_owned());
        }
        if let Some(Some(status)) = p.child.as_mut().map(|c| c.try_wait().unwrap()) {
            panic!(
                "`{}` exited with {status} before listening:\n{}",
                p.line,
                p.stderr()
            );
        }
        assert!(
            Instant::now() < deadline,
            "`{}` printed no address within {STARTUP:?}:\n{}",
            p.line,
            p.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fetch(run: &Run, tag: &str, from: &[&str], dir: &Path) -> Proc {
    let from = from.join(",");
    let dir = dir.to_str().unwrap().to_owned();
    let trust = run.path("key.pub").to_str().unwrap().to_owned();
    Proc::spawn(
        run,
        tag,
        &["fetch", "--from", &from, "--dir", &dir, "--trust", &trust],
    )
}

fn keygen(run: &Run) {
    let key = run.path("key");
    Proc::spawn(run, "keygen", &["keygen", "--out", key.to_str().unwrap()]).succeed(STARTUP);
}

/// The numbers of `fetch`'s summary line.
#[derive(Debug)]
struct Summary {
    blocks: u64,
    fetched: u64,
    reused: u64,
    resumed: u64,
    wire: u64,
    tree: u64,
    refused: u64,
}

fn summary(stdout: &str) -> Summary {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("synced "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || "(),;".contains(c))
        .filter(|w| !w.is_empty())
        .collect();
    let before = |word: &str| -> u64 {
        let i = words
            .iter()
            .position(|w| *w == word)
            .unwrap_or_else(|| panic!("no {word:?} in {line:?}"));
        words[i - 1]
            .parse()
            .unwrap_or_else(|_| panic!("{word:?} in {line:?}"))
    };
    let tree = words
        .iter()
        .find_map(|w| w.strip_suffix("-byte"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no tree size in {line:?}"));
    Summary {
        blocks: before("blocks"),
        fetched: before("fetched"),
        reused: before("reused"),
        resumed: before("resumed"),
        wire: before("bytes"),
        tree,
        refused: before("source"),
    }
}

/// A tree of `files` seeded files (sizes up to `max` bytes) in nested
/// directories, with an empty file, an empty directory and assorted modes.
fn make_tree(root: &Path, seed: u64, files: usize, max: usize) {
    let mut rng = fastrand::Rng::with_seed(seed);
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::write(root.join("empty-file"), b"").unwrap();
    for i in 0..files {
        let dir = root.join(format!("d{}/e{}", i % 3, i % 5));
        fs::create_dir_all(&dir).unwrap();
        let len = rng.usize(max / 4..max);
        let data: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        let path = dir.join(format!("file-{i}.bin"));
        fs::write(&path, data).unwrap();
        if i % 4 == 0 {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        }
    }
}

/// Every entry under `root`: path to (mode, contents; `None` for a directory).
fn listing(root: &Path) -> BTreeMap<String, (u32, Option<Vec<u8>>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            let mode = meta.permissions().mode() & 0o777;
            if meta.is_dir() {
                stack.push(e.path());
                out.insert(rel, (mode, None));
            } else {
                out.insert(rel, (mode, Some(fs::read(e.path()).unwrap())));
            }
        }
    }
    out
}

fn assert_identical(src: &Path, dst: &Path) {
    let (a, b) = (listing(src), listing(dst));
    let only_src: Vec<&String> = a.keys().filter(|k| !b.contains_key(*k)).collect();
    let only_dst: Vec<&String> = b.keys().filter(|k| !a.contains_key(*k)).collect();
    let differ: Vec<&String> = a
        .keys()
        .filter(|k| b.get(*k).is_some_and(|v| a[*k] != *v))
        .collect();
    assert!(
        only_src.is_empty() && only_dst.is_empty() && differ.is_empty(),
        "trees differ: only in source {only_src:?}, only in copy {only_dst:?}, different {differ:?}"
    );
}

/// Overwrites `ranges` runs of `len` random bytes at random places in
/// random files; returns the bytes changed.
fn scribble(root: &Path, seed: u64, ranges: usize, len: usize) -> u64 {
    let mut rng = fastrand::Rng::with_seed(seed);
    let files: Vec<String> = listing(root)
        .into_iter()
        .filter(|(_, (_, d))| d.as_ref().is_some_and(|d| d.len() > len))
        .map(|(path, _)| path)
        .collect();
    let mut changed = 0;
    for _ in 0..ranges {
        let path = root.join(&files[rng.usize(..files.len())]);
        let mut data = fs::read(&path).unwrap();
        let at = rng.usize(..data.len() - len);
        for b in &mut data[at..at + len] {
            *b = !*b;
        }
        fs::write(&path, data).unwrap();
        changed += len as u64;
    }
    changed
}

#[test]
fn help_keygen_and_demo() {
    let _serial = serial();
    let run = Run::new("msync-cli");
    let help = Proc::spawn(&run, "help", &["--help"]).succeed(STARTUP);
    for command in ["demo", "keygen", "serve", "fetch"] {
        assert!(help.contains(command), "--help lacks {command}:\n{help}");
    }
    keygen(&run);
    let mode = fs::metadata(run.path("key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "signing key mode");
    let public = fs::read_to_string(run.path("key.pub")).unwrap();
    assert_eq!(public.trim().len(), 64, "public key file: {public:?}");
    // Never overwrites a key.
    let mut again = Proc::spawn(
        &run,
        "keygen2",
        &["keygen", "--out", run.path("key").to_str().unwrap()],
    );
    assert!(
        !again.wait(STARTUP).unwrap().success(),
        "keygen overwrote a key"
    );
    let demo = Proc::spawn(&run, "demo", &[]).succeed(FETCH);
    assert!(demo.contains("identical"), "demo output:\n{demo}");
}

#[test]
fn first_copy_is_identical_and_a_one_percent_change_moves_about_one_percent() {
    let _serial = serial();
    let run = Run::new("msync-copy");
    keygen(&run);
    let (src, dst) = (run.path("src"), run.path("dst"));
    make_tree(&src, 1, 40, 200_000);
    // Links in the target that point outside it are removed, never followed.
    let outside = run.path("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("keep.txt"), b"untouched").unwrap();
    fs::create_dir_all(&dst).unwrap();
    std::os::unix::fs::symlink(&outside, dst.join("d0")).unwrap();
    std::os::unix::fs::symlink(&outside, dst.join(".merkle-sync")).unwrap();
    std::os::unix::fs::symlink(outside.join("keep.txt"), dst.join("empty-file")).unwrap();
    let (server, addr) = serve(&run, "serve1", &src, &[]);
    let first = summary(&fetch(&run, "fetch1", &[&addr], &dst).succeed(FETCH));
    assert_identical(&src, &dst);
    let left: Vec<_> = fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["keep.txt"], "the fetch wrote outside its directory");
    assert_eq!(fs::read(outside.join("keep.txt")).unwrap(), b"untouched");
    println!("first copy: {first:?}");
    assert_eq!(
        first.fetched, first.blocks,
        "a first copy fetches every block"
    );
    assert!(
        first.wire >= first.tree && first.wire <= first.tree + first.tree / 20,
        "first copy moved {} bytes for a {}-byte tree",
        first.wire,
        first.tree
    );
    drop(server);

    // 1% of the bytes, in 8 KiB runs; a file added, one removed.
    let changed = scribble(&src, 2, (first.tree / 100 / 8192) as usize, 8192);
    fs::write(src.join("d1/new.txt"), b"a new file\n").unwrap();
    fs::remove_file(src.join("d0/e0/file-0.bin")).unwrap();
    let (_server, addr) = serve(&run, "serve2", &src, &[]);
    let second = summary(&fetch(&run, "fetch2", &[&addr], &dst).succeed(FETCH));
    assert_identical(&src, &dst);
    println!("1% change ({changed} bytes): {second:?}");
    let share = second.wire as f64 / second.tree as f64;
    assert!(
        second.wire >= changed && share < 0.03,
        "a change of {changed} bytes ({:.2}%) moved {} bytes ({:.2}% of the tree)",
        100.0 * changed as f64 / second.tree as f64,
        second.wire,
        100.0 * share
    );
    assert_eq!(second.fetched + second.reused, second.blocks);
    assert!(second.fetched < second.blocks / 20, "{second:?}");
}

#[test]
fn a_fetch_killed_mid_transfer_resumes_without_refetching() {
    let _serial = serial();
    let run = Run::new("msync-resume");
    keygen(&run);
    let (src, dst) = (run.path("src"), run.path("dst"));
    make_tree(&src, 3, 40, 400_000);
    // Each batch of 256 blocks waits 400 ms: the transfer takes seconds.
    let (_server, addr) = serve(&run, "serve", &src, &["--block-delay-ms", "400"]);
    let mut first = fetch(&run, "fetch1", &[&addr], &dst);
    let state = dst.join(".merkle-sync/state");
    let deadline = Instant::now() + FETCH;
    // At least one batch verified and staged, then kill -9.
    while fs::metadata(&state).map_or(0, |m| m.len()) < 256 * 4096 {
        assert!(
            Instant::now() < deadline,
            "nothing staged within {FETCH:?}:\n{}",
            first.stderr()
        );
        assert!(
            first.child.as_mut().unwrap().try_wait().unwrap().is_none(),
            "the fetch ended before it could be killed:\n{}",
            first.stdout()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(first.pid(), "-KILL").unwrap();
    let status = first.wait(STARTUP);
    assert!(status.is_some_and(|s| !s.success()), "kill -9: {status:?}");
    assert!(
        !first.stdout().contains("synced"),
        "the first fetch completed before the kill"
    );

    let second = summary(&fetch(&run, "fetch2", &[&addr], &dst).succeed(FETCH));
    assert_identical(&src, &dst);
    println!("after kill -9: {second:?}");
    assert!(
        second.resumed >= 256,
        "resumed only {} blocks: {second:?}",
        second.resumed
    );
    // The copy was empty: everything not resumed was fetched, nothing twice.
    assert_eq!(second.fetched + second.resumed, second.blocks, "{second:?}");
    assert!(
        !dst.join(".merkle-sync").exists(),
        "staging directory left behind"
    );
}

#[test]
fn a_tampering_source_is_refused_and_the_other_completes_the_copy() {
    let _serial = serial();
    let run = Run::new("msync-tamper");
    keygen(&run);
    let (src, dst) = (run.path("src"), run.path("dst"));
    make_tree(&src, 4, 30, 200_000);
    let (_bad, bad) = serve(&run, "bad", &src, &["--corrupt-every", "7"]);
    let (_good, good) = serve(&run, "good", &src, &[]);
    let out = fetch(&run, "fetch", &[&bad, &good], &dst).succeed(FETCH);
    assert_identical(&src, &dst);
    let s = summary(&out);
    assert_eq!(s.refused, 1, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("refused {bad}")) && l.contains("verification")),
        "the tampering source is not reported:\n{out}"
    );
    assert!(
        !out.contains(&format!("refused {good}")),
        "the honest source was refused:\n{out}"
    );

    // A fetch that trusts another key refuses every source and fails.
    let other = Run::new("msync-tamper-key");
    keygen(&other);
    let wrong = other.path("key.pub");
    let mut p = Proc::spawn(
        &run,
        "wrong-key",
        &[
            "fetch",
            "--from",
            &good,
            "--dir",
            run.path("dst2").to_str().unwrap(),
            "--trust",
            wrong.to_str().unwrap(),
        ],
    );
    let status = p.wait(FETCH);
    assert!(
        status.is_some_and(|s| !s.success()),
        "a wrongly signed tree was accepted"
    );
    assert!(p.stderr().contains("signature"), "{}", p.stderr());
}
