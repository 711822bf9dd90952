//! The storage conformance suite over every storage the crate ships, and
//! the durable log's recovery: a torn tail is cut off, damage before the
//! tail is refused with the file and offset.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use quorate_raft_core::storage::segmented::{Options, SegmentedLog, SegmentedLogError};
use quorate_raft_core::{
    Configuration, CrashStorage, Entry, LogIndex, LogStorage, MemStorage, NodeId, Storage, Term,
    storage::conformance,
};
use std::path::{Path, PathBuf};

/// A fresh directory under the system's temporary one, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "quorate-storage-{name}-{}-{}",
            std::process::id(),
            fastrand_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fastrand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn small() -> Options {
    // Small segments, so the suite rolls over and deletes segments.
    Options { segment_bytes: 128 }
}

#[test]
fn mem_storage_conforms() {
    let report = conformance::check(MemStorage::new, |s| s).unwrap();
    assert!(report.checks > 20, "{report:?}");
}

#[test]
fn crash_storage_conforms_whatever_a_crash_keeps() {
    for seed in 0..50 {
        conformance::check(
            |c| CrashStorage::new(MemStorage::new(c), seed),
            |mut s| {
                s.crash().unwrap();
                s
            },
        )
        .unwrap_or_else(|f| panic!("seed {seed}: {f}"));
    }
}

#[test]
fn segmented_log_conforms() {
    let root = TempDir::new("conformance");
    for options in [Options::default(), small()] {
        let mut n = 0;
        let report = conformance::check(
            |c| {
                n += 1;
                let dir = root.0.join(format!("{}-{n}", options.segment_bytes));
                SegmentedLog::open(dir, c, options).unwrap()
            },
            |s| {
                let (dir, boot) = (s.dir().to_path_buf(), Configuration::default());
                drop(s);
                SegmentedLog::open(dir, boot, options).unwrap()
            },
        )
        .unwrap();
        assert!(report.checks > 20);
    }
}

/// A user runs the suite on their own storage: here a storage that
/// forgets to truncate on conflict, which the suite catches.
#[test]
fn the_suite_catches_a_storage_that_does_not_truncate() {
    #[derive(Debug)]
    struct NoTruncate(MemStorage);
    impl Storage for NoTruncate {
        fn initial_state(
            &self,
        ) -> Result<quorate_raft_core::InitialState, quorate_raft_core::StorageError> {
            self.0.initial_state()
        }
        fn entries(
            &self,
            l: LogIndex,
            h: LogIndex,
            m: u64,
            o: &mut Vec<Entry>,
        ) -> Result<(), quorate_raft_core::StorageError> {
            self.0.entries(l, h, m, o)
        }
        fn term(&self, i: LogIndex) -> Result<Term, quorate_raft_core::StorageError> {
            self.0.term(i)
        }
        fn first_index(&self) -> Result<LogIndex, quorate_raft_core::StorageError> {
            self.0.first_index()
        }
        fn last_index(&self) -> Result<LogIndex, quorate_raft_core::StorageError> {
            self.0.last_index()
        }
        fn snapshot_meta(
            &self,
        ) -> Result<quorate_raft_core::SnapshotMeta, quorate_raft_core::StorageError> {
            self.0.snapshot_meta()
        }
        fn snapshot(&self) -> Result<quorate_raft_core::Snapshot, quorate_raft_core::StorageError> {
            self.0.snapshot()
        }
    }
    impl LogStorage for NoTruncate {
        fn append(&mut self, entries: &[Entry]) -> Result<(), quorate_raft_core::StorageError> {
            // The bug: entries that conflict are dropped instead of replacing.
            let last = self.0.last_index()?;
            let fresh: Vec<Entry> = entries.iter().filter(|e| e.index > last).cloned().collect();
            LogStorage::append(&mut self.0, &fresh)
        }
        fn set_hard_state(
            &mut self,
            hs: quorate_raft_core::HardState,
        ) -> Result<(), quorate_raft_core::StorageError> {
            LogStorage::set_hard_state(&mut self.0, hs)
        }
        fn install_snapshot(
            &mut self,
            s: quorate_raft_core::Snapshot,
        ) -> Result<(), quorate_raft_core::StorageError> {
            self.0.install_snapshot(s)
        }
        fn compact(
            &mut self,
            i: LogIndex,
            d: Bytes,
        ) -> Result<(), quorate_raft_core::StorageError> {
            LogStorage::compact(&mut self.0, i, d)
        }
        fn sync(&mut self) -> Result<(), quorate_raft_core::StorageError> {
            Ok(())
        }
    }
    let failure = conformance::check(|c| NoTruncate(MemStorage::new(c)), |s| s).unwrap_err();
    assert_eq!(failure.check, "an append truncates the conflicting suffix");
}

fn entry(index: u64) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(index),
        data: Bytes::from(vec![index as u8; 40]),
    }
}

fn write_log(dir: &Path, n: u64, options: Options) {
    let mut log = SegmentedLog::open(dir, Configuration::new([NodeId(1)]), options).unwrap();
    for i in 1..=n {
        log.append(&[entry(i)]).unwrap();
    }
    log.sync().unwrap();
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_torn_tail_is_cut_off() {
    let tmp = TempDir::new("torn");
    write_log(&tmp.0, 5, Options::default());
    let seg = segments(&tmp.0).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    // Cut the last record in half, as a crash mid-write would.
    let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    file.set_len(len - 30).unwrap();
    drop(file);
    let log = SegmentedLog::open(&tmp.0, Configuration::default(), Options::default()).unwrap();
    assert_eq!(log.last_index().unwrap(), LogIndex(4));
    assert_eq!(log.torn_bytes(), 65 - 30);
    let mut out = Vec::new();
    log.entries(LogIndex(1), LogIndex(5), u64::MAX, &mut out)
        .unwrap();
    assert_eq!(out, (1..=4).map(entry).collect::<Vec<_>>());
}

#[test]
fn damage_before_the_tail_is_refused_with_file_and_offset() {
    let tmp = TempDir::new("corrupt");
    write_log(&tmp.0, 5, Options::default());
    let seg = segments(&tmp.0).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    // Header (8) + hard state record (8 + 26) = 42: the first entry's
    // record starts there; flip a byte of its payload.
    bytes[42 + 20] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let err = SegmentedLog::open(&tmp.0, Configuration::default(), Options::default()).unwrap_err();
    match &err {
        SegmentedLogError::Corrupt { path, offset, .. } => {
            assert_eq!(path, &seg);
            assert_eq!(*offset, 42);
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("corrupt at byte 42"), "{err}");
}

#[test]
fn compaction_deletes_covered_segments() {
    let tmp = TempDir::new("compact");
    let options = Options { segment_bytes: 200 };
    let mut log = SegmentedLog::open(&tmp.0, Configuration::new([NodeId(1)]), options).unwrap();
    for i in 1..=40 {
        log.append(&[entry(i)]).unwrap();
    }
    log.sync().unwrap();
    let before = segments(&tmp.0).len();
    assert!(before > 5, "{before} segments");
    log.compact(LogIndex(30), Bytes::from_static(b"sm"))
        .unwrap();
    let after = segments(&tmp.0).len();
    assert!(after < before - 3, "{before} -> {after} segments");
    drop(log);
    let log = SegmentedLog::open(&tmp.0, Configuration::default(), options).unwrap();
    assert_eq!(log.first_index().unwrap(), LogIndex(31));
    assert_eq!(log.last_index().unwrap(), LogIndex(40));
    assert_eq!(log.snapshot().unwrap().data, Bytes::from_static(b"sm"));
    assert_eq!(
        log.initial_state().unwrap().configuration,
        Configuration::new([NodeId(1)])
    );
}

#[test]
fn a_damaged_snapshot_or_older_segment_is_refused() {
    let tmp = TempDir::new("snapshot");
    let options = Options { segment_bytes: 200 };
    let mut log = SegmentedLog::open(&tmp.0, Configuration::new([NodeId(1)]), options).unwrap();
    for i in 1..=20 {
        log.append(&[entry(i)]).unwrap();
    }
    log.sync().unwrap();
    log.compact(LogIndex(5), Bytes::from_static(b"sm")).unwrap();
    drop(log);
    // A torn record in a segment that is not the last: it was synced
    // before the next one started, so this is damage, not a torn write.
    let segs = segments(&tmp.0);
    assert!(segs.len() > 2);
    let older = &segs[0];
    let len = std::fs::metadata(older).unwrap().len();
    let original = std::fs::read(older).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(older)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    match SegmentedLog::open(&tmp.0, Configuration::default(), options).unwrap_err() {
        SegmentedLogError::Corrupt { path, reason, .. } => {
            assert_eq!(&path, older);
            assert_eq!(reason, "record cut short");
        }
        other => panic!("{other}"),
    }
    std::fs::write(older, &original).unwrap();
    let snapshot = tmp.0.join("snapshot");
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&snapshot, &bytes).unwrap();
    match SegmentedLog::open(&tmp.0, Configuration::default(), options).unwrap_err() {
        SegmentedLogError::Corrupt { path, offset, .. } => {
            assert_eq!(path, snapshot);
            assert_eq!(offset, 20);
        }
        other => panic!("{other}"),
    }
}
