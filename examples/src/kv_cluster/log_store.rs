//! A simple durable Raft log: one append-only file per shard replica, each
//! record written and `fsync`ed before the node is told it is durable.
//! On start the file is replayed into a [`MemStorage`]; a torn last record
//! (a crash mid-write) is cut off.
//!
//! Record: `tag u8 | len u32 | payload`. Tag 1 appends entries
//! (`count u32`, then `term u64 | index u64 | len u32 | data` each), with the
//! same truncate-on-conflict rule as [`MemStorage::append`], so replaying the
//! records in order rebuilds exactly the log that was acknowledged. Tag 2
//! sets the hard state (`term u64 | vote u64 (0: none) | commit u64`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use quorate_raft_core::{
    Configuration, Entry, HardState, InitialState, LogIndex, MemStorage, NodeId, Snapshot,
    SnapshotMeta, Storage, StorageError, Term,
};

use super::Error;

const ENTRIES: u8 = 1;
const HARD_STATE: u8 = 2;

/// A Raft [`Storage`] backed by an fsynced append-only file.
#[derive(Debug)]
pub struct FileLog {
    file: File,
    mem: MemStorage,
    /// Entries replayed from disk when opened (for the timeline).
    recovered: u64,
}

impl FileLog {
    /// Opens (or creates) the log at `path` for a group with `members`.
    pub fn open(path: &Path, members: Configuration) -> Result<Self, Error> {
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        if !existed {
            // Make the new file's directory entry durable too (POSIX).
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)?.sync_all()?;
            }
        }
        let mut raw = Vec::new();
        file.read_to_end(&mut raw)?;
        let mut mem = MemStorage::new(members);
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
            file.set_len(good as u64)?;
            file.sync_all()?;
        }
        let recovered = mem.last_index()?.0;
        Ok(FileLog {
            file,
            mem,
            recovered,
        })
    }

    /// How many log entries were found on disk when opened.
    pub fn recovered(&self) -> u64 {
        self.recovered
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
        if !entries.is_empty() {
            let mut payload = BytesMut::new();
            payload.put_u32(entries.len() as u32);
            for e in entries {
                payload.put_u64(e.term.0);
                payload.put_u64(e.index.0);
                payload.put_u32(e.data.len() as u32);
                payload.put_slice(&e.data);
            }
            put_record(&mut buf, ENTRIES, &payload);
        }
        if let Some(hs) = hard_state {
            let mut payload = BytesMut::new();
            payload.put_u64(hs.term.0);
            payload.put_u64(hs.vote.map_or(0, |v| v.0));
            payload.put_u64(hs.commit.0);
            put_record(&mut buf, HARD_STATE, &payload);
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.mem.append(entries)?;
        if let Some(hs) = hard_state {
            self.mem.set_hard_state(hs);
        }
        Ok(())
    }
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

    // The example never compacts its log, so this is the empty snapshot at
    // index 0 and a leader never needs to send one.
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
}
