//! A shard replica's durable Raft log: raft-core's [`SegmentedLog`]
//! (feature `durable`: append-only segment files with a length and a
//! CRC-32C per record, one `fdatasync` per persisted `Ready`, a torn tail
//! cut on open and any other damage refused naming the file and offset,
//! atomic snapshot files that carry their configuration), plus what the
//! node needs around it: what was recovered at start, and when compaction
//! pays off.
//!
//! Each replica keeps its log in a directory of its own (`shard-N.log/`).
//! The snapshot carries the configuration as of its index: once membership
//! has changed, the entries that changed it may be compacted away, and a
//! node restarted with the configuration it was first given would count
//! the wrong majority.

use std::path::Path;

use bytes::Bytes;
use quorate_raft_core::storage::segmented::{Options, SegmentedLog};
use quorate_raft_core::{
    Configuration, Entry, HardState, InitialState, LogIndex, LogStorage, Snapshot, SnapshotMeta,
    Storage, StorageError, Term,
};

use super::Error;

/// Bytes a record costs besides an entry's payload (length, CRC, tag,
/// index and term), for the compaction estimate.
const RECORD_OVERHEAD: u64 = 29;

/// A Raft [`Storage`] on a durable [`SegmentedLog`].
#[derive(Debug)]
pub struct FileLog {
    log: SegmentedLog,
    /// The last index recovered from disk when opened (snapshot plus log).
    recovered: u64,
    /// The snapshot's index when opened (0: none).
    recovered_snapshot: u64,
    /// Bytes appended since the last snapshot (estimated from the entries).
    grown_bytes: u64,
    /// The length of the snapshot's data.
    snapshot_bytes: u64,
}

impl FileLog {
    /// Opens (or creates) the log in the directory `path` for a group with
    /// `members`.
    pub fn open(path: &Path, members: Configuration) -> Result<Self, Error> {
        let log = SegmentedLog::open(path, members, Options::default())?;
        let recovered_snapshot = log.snapshot_meta()?.index.0;
        let recovered = log.last_index()?.0;
        let snapshot_bytes = log.snapshot()?.data.len() as u64;
        let mut tail = Vec::new();
        let first = log.first_index()?;
        log.entries(first, LogIndex(recovered + 1), u64::MAX, &mut tail)?;
        let grown_bytes = tail.iter().map(record_bytes).sum();
        Ok(FileLog {
            log,
            recovered,
            recovered_snapshot,
            grown_bytes,
            snapshot_bytes,
        })
    }

    /// The last log index found on disk when opened (in the snapshot or
    /// the log after it).
    pub fn recovered(&self) -> u64 {
        self.recovered
    }

    /// The index of the snapshot found on disk when opened (0: none).
    pub fn recovered_snapshot(&self) -> u64 {
        self.recovered_snapshot
    }

    /// Whether the log has grown enough since the last compaction for a
    /// new snapshot to pay off: by at least `min_bytes` and at least the
    /// size of the current snapshot, so the bytes written for snapshots
    /// never exceed the bytes appended to the log (a snapshot's cost is in
    /// proportion to the state, and paid only once the log has cost as
    /// much).
    pub fn wants_compaction(&self, min_bytes: u64) -> bool {
        self.grown_bytes >= min_bytes.max(self.snapshot_bytes)
    }

    /// Bytes appended to the log since the last snapshot.
    pub fn log_bytes(&self) -> u64 {
        self.grown_bytes
    }

    /// Compacts the log: `data` is the state machine as of the applied
    /// `index`; it becomes the durable snapshot and the segments it covers
    /// are deleted.
    pub fn compact(&mut self, index: LogIndex, data: Bytes) -> Result<(), Error> {
        if index <= self.log.snapshot_meta()?.index {
            return Ok(());
        }
        let len = data.len() as u64;
        self.log.compact(index, data)?;
        self.snapshot_bytes = len;
        self.grown_bytes = 0;
        Ok(())
    }

    /// Durably stores a snapshot a leader sent
    /// ([`Ready::take_snapshot`](quorate_raft_core::Ready::take_snapshot));
    /// it replaces the whole log. Call before persisting that `Ready`'s
    /// entries and before `advance`.
    pub fn install(&mut self, snapshot: Snapshot) -> Result<(), Error> {
        self.snapshot_bytes = snapshot.data.len() as u64;
        self.grown_bytes = 0;
        self.log.install_snapshot(snapshot)?;
        Ok(())
    }

    /// Durably appends `entries` and stores `hard_state`, with one `fsync`.
    pub fn persist(
        &mut self,
        entries: &[Entry],
        hard_state: Option<HardState>,
    ) -> Result<(), Error> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        self.log.append(entries)?;
        if let Some(hs) = hard_state {
            self.log.set_hard_state(hs)?;
        }
        self.log.sync()?;
        self.grown_bytes += entries.iter().map(record_bytes).sum::<u64>();
        Ok(())
    }
}

fn record_bytes(entry: &Entry) -> u64 {
    entry.data.len() as u64 + RECORD_OVERHEAD
}

impl Storage for FileLog {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        self.log.initial_state()
    }

    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
        out: &mut Vec<Entry>,
    ) -> Result<(), StorageError> {
        self.log.entries(low, high, max_bytes, out)
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        self.log.term(index)
    }

    fn first_index(&self) -> Result<LogIndex, StorageError> {
        self.log.first_index()
    }

    fn last_index(&self) -> Result<LogIndex, StorageError> {
        self.log.last_index()
    }

    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError> {
        self.log.snapshot_meta()
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        self.log.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use quorate_raft_core::NodeId;
    use std::path::PathBuf;

    fn e(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            data: Bytes::from(format!("{index}/{term}")),
        }
    }

    #[test]
    fn compaction_waits_for_the_log_to_outgrow_the_snapshot() {
        let dir = std::env::temp_dir().join(format!("quorate-compact-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let _ = std::fs::remove_dir_all(&path);
        let members = Configuration::new([NodeId(1)]);
        let mut log = FileLog::open(&path, members.clone()).unwrap();
        assert!(!log.wants_compaction(1000));
        let (mut index, mut before) = (0, 0);
        while !log.wants_compaction(1000) {
            index += 1;
            before = log.log_bytes();
            log.persist(&[e(index, 1)], None).unwrap();
        }
        // No snapshot yet: the 1000-byte floor decides, exactly when crossed.
        assert!(
            before < 1000 && log.log_bytes() >= 1000,
            "{before} {}",
            log.log_bytes()
        );
        // A snapshot larger than the floor raises the bar to its own size.
        log.compact(LogIndex(index), Bytes::from(vec![7u8; 5000]))
            .unwrap();
        let after = log.log_bytes();
        while !log.wants_compaction(1000) {
            index += 1;
            log.persist(&[e(index, 1)], None).unwrap();
        }
        assert!(
            log.log_bytes() - after >= 5000,
            "{} {after}",
            log.log_bytes()
        );
        assert!(log.log_bytes() - after < 5000 + 40);
        // Reopened, it counts what the log grew since the snapshot again.
        let grown = log.log_bytes();
        drop(log);
        let log = FileLog::open(&path, members).unwrap();
        assert_eq!(log.log_bytes(), grown);
        assert!(log.wants_compaction(1000));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_errors_name_the_file() {
        let file = std::env::temp_dir().join(format!("quorate-notadir-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        let inside = file.join("shard-0.log");
        let err = FileLog::open(&inside, Configuration::new([NodeId(1)])).unwrap_err();
        assert!(
            err.to_string().contains(&*inside.to_string_lossy()),
            "{err}"
        );
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn reopens_with_what_was_persisted_and_truncates_conflicts() {
        let dir = std::env::temp_dir().join(format!("quorate-filelog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let _ = std::fs::remove_dir_all(&path);
        let members = Configuration::new([NodeId(1), NodeId(2), NodeId(3)]);
        let hs = HardState {
            term: Term(2),
            vote: Some(NodeId(3)),
            commit: LogIndex(2),
        };
        {
            let mut log = FileLog::open(&path, members.clone()).unwrap();
            log.persist(&[e(1, 1), e(2, 1), e(3, 1)], None).unwrap();
            log.persist(&[e(3, 2)], Some(hs)).unwrap();
        }
        let log = FileLog::open(&path, members).unwrap();
        assert_eq!(log.recovered(), 3);
        assert_eq!(log.initial_state().unwrap().hard_state, hs);
        assert_eq!(
            log.term(LogIndex(3)).unwrap(),
            Term(2),
            "conflict truncated"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("quorate-filelog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn compaction_survives_a_restart_as_snapshot_plus_tail() {
        let dir = scratch("compact");
        let path = dir.join("log");
        let members = Configuration::new([NodeId(1), NodeId(2), NodeId(3)]);
        let hs = HardState {
            term: Term(1),
            vote: Some(NodeId(1)),
            commit: LogIndex(4),
        };
        {
            let mut log = FileLog::open(&path, members.clone()).unwrap();
            log.persist(&[e(1, 1), e(2, 1), e(3, 1), e(4, 1)], Some(hs))
                .unwrap();
            log.compact(LogIndex(3), Bytes::from_static(b"state@3"))
                .unwrap();
            log.persist(&[e(5, 1)], None).unwrap();
        }
        let log = FileLog::open(&path, members.clone()).unwrap();
        assert_eq!(log.recovered_snapshot(), 3);
        assert_eq!(log.recovered(), 5);
        assert_eq!(log.first_index().unwrap(), LogIndex(4));
        let snap = log.snapshot().unwrap();
        assert_eq!((snap.meta.index, snap.meta.term), (LogIndex(3), Term(1)));
        assert_eq!(snap.data, Bytes::from_static(b"state@3"));
        assert_eq!(log.initial_state().unwrap().hard_state, hs);
        assert_eq!(log.term(LogIndex(5)).unwrap(), Term(1));
        assert!(log.term(LogIndex(2)).is_err(), "compacted away");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_installed_snapshot_replaces_the_log_durably() {
        let dir = scratch("install");
        let path = dir.join("log");
        let members = Configuration::new([NodeId(1), NodeId(2), NodeId(3)]);
        {
            let mut log = FileLog::open(&path, members.clone()).unwrap();
            log.persist(&[e(1, 1), e(2, 1)], None).unwrap();
            log.install(Snapshot {
                meta: SnapshotMeta {
                    index: LogIndex(10),
                    term: Term(3),
                    configuration: members.clone(),
                },
                data: Bytes::from_static(b"leader state"),
            })
            .unwrap();
            log.persist(&[e(11, 3)], None).unwrap();
        }
        let log = FileLog::open(&path, members).unwrap();
        assert_eq!(log.recovered_snapshot(), 10);
        assert_eq!(log.first_index().unwrap(), LogIndex(11));
        assert_eq!(log.last_index().unwrap(), LogIndex(11));
        assert_eq!(log.initial_state().unwrap().hard_state.commit, LogIndex(10));
        assert_eq!(
            log.snapshot().unwrap().data,
            Bytes::from_static(b"leader state")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn snapshots_keep_the_configuration_they_were_taken_under() {
        let dir = scratch("membership");
        let path = dir.join("log");
        let first = Configuration::new([NodeId(1), NodeId(2), NodeId(3)]);
        let changed =
            Configuration::new([NodeId(1), NodeId(2), NodeId(4)]).with_learners([NodeId(5)]);
        let joint = first.joint_to(&changed);
        {
            let mut log = FileLog::open(&path, first.clone()).unwrap();
            // A configuration entry (as raft-core writes it: the tag, then
            // the three sets) inside the compacted prefix.
            let mut data = BytesMut::from(quorate_raft_core::CONFIGURATION_TAG);
            for set in [joint.voters(), joint.learners(), joint.outgoing()] {
                data.put_u32(set.len() as u32);
                for id in set {
                    data.put_u64(id.0);
                }
            }
            let config_entry = Entry {
                term: Term(1),
                index: LogIndex(2),
                data: data.freeze(),
            };
            assert_eq!(config_entry.configuration(), Some(joint.clone()));
            log.persist(&[e(1, 1), config_entry, e(3, 1)], None)
                .unwrap();
            log.compact(LogIndex(3), Bytes::from_static(b"state@3"))
                .unwrap();
        }
        // Reopened with the configuration it was first given, it still
        // knows the one of its snapshot.
        let log = FileLog::open(&path, first.clone()).unwrap();
        assert_eq!(log.snapshot().unwrap().meta.configuration, joint);
        assert_eq!(log.initial_state().unwrap().configuration, joint);
        drop(log);
        let mut log = FileLog::open(&path, first.clone()).unwrap();
        log.install(Snapshot {
            meta: SnapshotMeta {
                index: LogIndex(9),
                term: Term(2),
                configuration: changed.clone(),
            },
            data: Bytes::from_static(b"leader state"),
        })
        .unwrap();
        drop(log);
        let log = FileLog::open(&path, first).unwrap();
        assert_eq!(log.snapshot().unwrap().meta.configuration, changed);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
