//! A simple durable Raft log: one append-only file per shard replica, each
//! record written and `fsync`ed before the node is told it is durable, plus
//! a snapshot file next to it once the log has been compacted.
//! On start the snapshot is loaded and the log file replayed on top into a
//! [`MemStorage`]; a torn last record (a crash mid-write) is cut off.
//!
//! Compaction (and installing a leader's snapshot) is crash-safe in two
//! steps: the snapshot is written to a temporary file, `fsync`ed and renamed
//! over the old one (then the directory is `fsync`ed), and only then is the
//! log rewritten the same way without the entries the snapshot covers. A
//! crash between the two leaves the new snapshot and the old, longer log,
//! whose covered prefix replay skips.
//!
//! Snapshot file: `index u64 | term u64 | len u32 | data`, then the
//! configuration as of `index` (`len u32`, then
//! [`Configuration::encode`]'s bytes). The configuration must travel with the
//! snapshot: once membership has changed, the entries that changed it may
//! be compacted away, and a node restarted with the configuration it was
//! first given would count the wrong majority. A file without it (written
//! before membership could change) takes the configuration the log is
//! opened with.
//!
//! Record: `tag u8 | len u32 | payload`. Tag 1 appends entries
//! (`count u32`, then `term u64 | index u64 | len u32 | data` each), with the
//! same truncate-on-conflict rule as [`MemStorage::append`], so replaying the
//! records in order rebuilds exactly the log that was acknowledged. Tag 2
//! sets the hard state (`term u64 | vote u64 (0: none) | commit u64`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use quorate_raft_core::{
    Configuration, Entry, HardState, InitialState, LogIndex, MemStorage, NodeId, Snapshot,
    SnapshotMeta, Storage, StorageError, Term,
};

use super::{AtPath, Error};

const ENTRIES: u8 = 1;
const HARD_STATE: u8 = 2;

/// A Raft [`Storage`] backed by an fsynced append-only file.
#[derive(Debug)]
pub struct FileLog {
    file: File,
    path: PathBuf,
    mem: MemStorage,
    /// The last index recovered from disk when opened (snapshot plus log).
    recovered: u64,
    /// The snapshot's index when opened (0: none).
    recovered_snapshot: u64,
    /// The log file's length now.
    log_bytes: u64,
    /// Its length right after the last compaction (or when opened).
    rewritten_bytes: u64,
    /// The length of the snapshot's data.
    snapshot_bytes: u64,
}

impl FileLog {
    /// Opens (or creates) the log at `path` for a group with `members`.
    pub fn open(path: &Path, members: Configuration) -> Result<Self, Error> {
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .at(path)?;
        if !existed {
            // Make the new file's directory entry durable too (POSIX).
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir).and_then(|d| d.sync_all()).at(dir)?;
            }
        }
        let mut mem = MemStorage::new(members.clone());
        if let Some(snapshot) = read_snapshot(&snapshot_path(path), members)? {
            mem.apply_snapshot(snapshot);
        }
        let recovered_snapshot = mem.snapshot_meta()?.index.0;
        let mut raw = Vec::new();
        file.read_to_end(&mut raw).at(path)?;
        let mut src = Bytes::from(raw);
        let total = src.len();
        let mut good = 0;
        while let Some((tag, mut payload)) = next_record(&mut src) {
            match tag {
                ENTRIES => match decode_entries(&mut payload) {
                    Some(entries) => mem.append(&entries)?,
                    None => break,
                },
                HARD_STATE => match decode_hard_state(&mut payload) {
                    Some(hs) => mem.set_hard_state(hs),
                    None => break,
                },
                _ => break,
            }
            good = total - src.len();
        }
        if good < total {
            // A torn tail: never acknowledged, so safe to drop.
            file.set_len(good as u64).at(path)?;
            file.sync_all().at(path)?;
        }
        let recovered = mem.last_index()?.0;
        let snapshot_bytes = mem.snapshot()?.data.len() as u64;
        Ok(FileLog {
            file,
            path: path.to_path_buf(),
            mem,
            recovered,
            recovered_snapshot,
            log_bytes: good as u64,
            rewritten_bytes: good as u64,
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
        let grown = self.log_bytes.saturating_sub(self.rewritten_bytes);
        grown >= min_bytes.max(self.snapshot_bytes)
    }

    /// The log file's length in bytes.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// Compacts the log: `data` is the state machine as of the applied
    /// `index`; it becomes the durable snapshot and the entries up to
    /// `index` are dropped from the log file.
    pub fn compact(&mut self, index: LogIndex, data: Bytes) -> Result<(), Error> {
        if index <= self.mem.snapshot_meta()?.index {
            return Ok(());
        }
        // Compacting in memory first finds the configuration as of `index`
        // (the snapshot's); if writing it fails the node stops on the error.
        self.mem.compact(index, data.clone())?;
        let meta = self.mem.snapshot_meta()?;
        write_snapshot(&self.path, &meta, &data)?;
        self.snapshot_bytes = data.len() as u64;
        self.rewrite()
    }

    /// Durably stores a snapshot a leader sent
    /// ([`Ready::take_snapshot`](quorate_raft_core::Ready::take_snapshot));
    /// it replaces the whole log. Call before persisting that `Ready`'s
    /// entries and before `advance`.
    pub fn install(&mut self, snapshot: Snapshot) -> Result<(), Error> {
        write_snapshot(&self.path, &snapshot.meta, &snapshot.data)?;
        self.snapshot_bytes = snapshot.data.len() as u64;
        self.mem.apply_snapshot(snapshot);
        self.rewrite()
    }

    /// Rewrites the log file as the hard state plus the entries after the
    /// snapshot: temporary file, `fsync`, rename, directory `fsync`.
    fn rewrite(&mut self) -> Result<(), Error> {
        let mut buf = BytesMut::new();
        put_hard_state(&mut buf, self.mem.hard_state());
        put_entries(&mut buf, self.mem.all_entries());
        let tmp = self.path.with_extension("log.tmp");
        replace_durably(&tmp, &self.path, &buf)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .at(&self.path)?;
        self.log_bytes = buf.len() as u64;
        self.rewritten_bytes = self.log_bytes;
        Ok(())
    }

    /// Durably appends `entries` and stores `hard_state`, in one write and
    /// one `fsync`.
    pub fn persist(
        &mut self,
        entries: &[Entry],
        hard_state: Option<HardState>,
    ) -> Result<(), Error> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        let mut buf = BytesMut::new();
        put_entries(&mut buf, entries);
        if let Some(hs) = hard_state {
            put_hard_state(&mut buf, hs);
        }
        self.file.write_all(&buf).at(&self.path)?;
        self.file.sync_data().at(&self.path)?;
        self.log_bytes += buf.len() as u64;
        self.mem.append(entries)?;
        if let Some(hs) = hard_state {
            self.mem.set_hard_state(hs);
        }
        Ok(())
    }
}

fn put_entries(buf: &mut BytesMut, entries: &[Entry]) {
    if entries.is_empty() {
        return;
    }
    let mut payload = BytesMut::new();
    payload.put_u32(entries.len() as u32);
    for e in entries {
        payload.put_u64(e.term.0);
        payload.put_u64(e.index.0);
        payload.put_u32(e.data.len() as u32);
        payload.put_slice(&e.data);
    }
    put_record(buf, ENTRIES, &payload);
}

fn put_hard_state(buf: &mut BytesMut, hs: HardState) {
    let mut payload = BytesMut::new();
    payload.put_u64(hs.term.0);
    payload.put_u64(hs.vote.map_or(0, |v| v.0));
    payload.put_u64(hs.commit.0);
    put_record(buf, HARD_STATE, &payload);
}

fn snapshot_path(log: &Path) -> PathBuf {
    log.with_extension("snap")
}

/// Writes `bytes` to `tmp`, `fsync`s it, renames it over `path` and
/// `fsync`s the directory, so `path` holds either the old or the new bytes.
fn replace_durably(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut file = File::create(tmp).at(tmp)?;
    file.write_all(bytes).at(tmp)?;
    file.sync_all().at(tmp)?;
    drop(file);
    std::fs::rename(tmp, path).at(path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).at(dir)?;
    }
    Ok(())
}

fn write_snapshot(log: &Path, meta: &SnapshotMeta, data: &[u8]) -> Result<(), Error> {
    let mut buf = BytesMut::with_capacity(20 + data.len());
    buf.put_u64(meta.index.0);
    buf.put_u64(meta.term.0);
    buf.put_u32(data.len() as u32);
    buf.put_slice(data);
    let configuration = meta.configuration.encode();
    buf.put_u32(configuration.len() as u32);
    buf.put_slice(&configuration);
    let path = snapshot_path(log);
    replace_durably(&path.with_extension("snap.tmp"), &path, &buf)
}

/// The snapshot stored next to the log at `log`, if any. It is only ever
/// replaced whole by a rename, so a short file is corruption, not a crash.
fn read_snapshot(path: &Path, members: Configuration) -> Result<Option<Snapshot>, Error> {
    let raw = match std::fs::read(path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).at(path),
    };
    let mut src = Bytes::from(raw);
    if src.remaining() < 20 {
        return Err(Error::Malformed("snapshot file header"));
    }
    let index = LogIndex(src.get_u64());
    let term = Term(src.get_u64());
    let len = src.get_u32() as usize;
    if src.remaining() < len {
        return Err(Error::Malformed("snapshot file length"));
    }
    let data = src.split_to(len);
    let configuration = if src.has_remaining() {
        read_configuration(&mut src).ok_or(Error::Malformed("snapshot configuration"))?
    } else {
        members
    };
    Ok(Some(Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            configuration,
        },
        data,
    }))
}

/// The configuration [`write_snapshot`] stores after the data: its length,
/// then raft-core's own encoding (so witnesses and joint states round-trip).
fn read_configuration(src: &mut Bytes) -> Option<Configuration> {
    if src.remaining() < 4 {
        return None;
    }
    let len = src.get_u32() as usize;
    if src.remaining() != len {
        return None;
    }
    Configuration::decode(src)
}

fn put_record(buf: &mut BytesMut, tag: u8, payload: &[u8]) {
    buf.put_u8(tag);
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
}

fn next_record(src: &mut Bytes) -> Option<(u8, Bytes)> {
    if src.remaining() < 5 {
        return None;
    }
    let tag = src.get_u8();
    let len = src.get_u32() as usize;
    if src.remaining() < len {
        return None;
    }
    Some((tag, src.split_to(len)))
}

fn decode_entries(src: &mut Bytes) -> Option<Vec<Entry>> {
    if src.remaining() < 4 {
        return None;
    }
    let n = src.get_u32();
    let mut out = Vec::new();
    for _ in 0..n {
        if src.remaining() < 20 {
            return None;
        }
        let term = Term(src.get_u64());
        let index = LogIndex(src.get_u64());
        let len = src.get_u32() as usize;
        if src.remaining() < len {
            return None;
        }
        out.push(Entry {
            term,
            index,
            data: src.split_to(len),
        });
    }
    Some(out)
}

fn decode_hard_state(src: &mut Bytes) -> Option<HardState> {
    if src.remaining() < 24 {
        return None;
    }
    let term = Term(src.get_u64());
    let vote = match src.get_u64() {
        0 => None,
        v => Some(NodeId(v)),
    };
    let commit = LogIndex(src.get_u64());
    Some(HardState { term, vote, commit })
}

impl Storage for FileLog {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
        out: &mut Vec<Entry>,
    ) -> Result<(), StorageError> {
        self.mem.entries(low, high, max_bytes, out)
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        self.mem.term(index)
    }

    fn first_index(&self) -> Result<LogIndex, StorageError> {
        self.mem.first_index()
    }

    fn last_index(&self) -> Result<LogIndex, StorageError> {
        self.mem.last_index()
    }

    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError> {
        self.mem.snapshot_meta()
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        self.mem.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(snapshot_path(&path));
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
        // Reopened, it remembers the snapshot's size.
        drop(log);
        let log = FileLog::open(&path, members).unwrap();
        assert!(!log.wants_compaction(1000));
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
    fn reopens_with_what_was_persisted_and_drops_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("quorate-filelog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let _ = std::fs::remove_file(&path);
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
        // A crash in the middle of the next record.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[ENTRIES, 0, 0, 0, 99, 1]).unwrap();
        drop(f);
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
    fn a_crash_between_snapshot_and_log_rewrite_loses_nothing() {
        let dir = scratch("torn-compact");
        let path = dir.join("log");
        let members = Configuration::new([NodeId(1), NodeId(2), NodeId(3)]);
        {
            let mut log = FileLog::open(&path, members.clone()).unwrap();
            log.persist(&[e(1, 1), e(2, 1), e(3, 1)], None).unwrap();
        }
        // The snapshot landed, the log was not rewritten yet.
        let meta = SnapshotMeta {
            index: LogIndex(2),
            term: Term(1),
            configuration: members.clone(),
        };
        write_snapshot(&path, &meta, b"state@2").unwrap();
        let log = FileLog::open(&path, members).unwrap();
        assert_eq!(log.first_index().unwrap(), LogIndex(3));
        assert_eq!(log.last_index().unwrap(), LogIndex(3));
        assert_eq!(log.snapshot().unwrap().data, Bytes::from_static(b"state@2"));
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
