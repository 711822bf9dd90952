//! A durable Raft log on the file system: [`SegmentedLog`], the one part of
//! the crate that does I/O (feature `durable`, std only).
//!
//! A directory holds append-only *segment* files and at most one
//! *snapshot* file:
//!
//! * `{seq:016x}.seg`: the magic `QRSEG001`, then records
//!   `len u32 | crc32c u32 | payload` (big endian; the CRC covers the
//!   payload). A payload is an entry (`1 | term u64 | index u64 | data`)
//!   or a hard state (`2 | term u64 | vote u64 | has_vote u8 | commit
//!   u64`). An entry at an index already stored discards the stored
//!   suffix from there (truncation on conflict), so replaying the records
//!   in order rebuilds the log. Each segment starts with the hard state,
//!   so older segments can be deleted.
//! * `snapshot`: the magic `QRSNAP01`, `crc32c u32 | len u64`, then
//!   `index u64 | term u64 | first_segment u64 | config_len u32 | config |
//!   data`. Written to `snapshot.tmp`, `fsync`ed, renamed, and the
//!   directory `fsync`ed, so a crash leaves the old or the new one whole.
//!   Segments before `first_segment` belong to the log it replaced and
//!   are ignored (and deleted) on open.
//!
//! Writes are buffered; [`sync`](LogStorage::sync) writes them with one
//! `write` and one `fdatasync`. Segments roll over at
//! [`Options::segment_bytes`]; compaction deletes the segments whose
//! entries the snapshot covers. Opening replays the snapshot and the
//! segments: a damaged record at the end of the last segment is a torn
//! write that was never synced, and is cut off; a damaged record anywhere
//! else is corruption, refused with [`SegmentedLogError::Corrupt`] naming
//! the file and offset.
//!
//! The entries after the snapshot are also kept in memory (reads never
//! touch the disk), so compact regularly.
//!
//! # Example
//!
//! A single-node group on a durable log: every Ready is persisted with one
//! `fsync` ([`LogStorage::persist`]) before it is applied and advanced, and
//! a restart from the same directory finds the committed command.
//!
//! ```
//! use bytes::Bytes;
//! use quorate_raft_core::storage::segmented::{Options, SegmentedLog};
//! use quorate_raft_core::{Config, Configuration, LogStorage, Node, NodeId, Role};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("quorate-doc-{}", std::process::id()));
//! let members = Configuration::new([NodeId(1)]);
//! let log = SegmentedLog::open(&dir, members.clone(), Options::default())?;
//! let mut node = Node::new(Config::new(NodeId(1)), log)?;
//! let mut applied = Vec::new();
//! let mut proposed = false;
//! for _ in 0..100 {
//!     node.tick();
//!     if node.role() == Role::Leader && !proposed {
//!         node.propose(Bytes::from_static(b"set x = 1"))?;
//!         proposed = true;
//!     }
//!     while let Some(mut ready) = node.ready()? {
//!         // Send ready.take_messages() to the peers here (none: one node).
//!         let persisted = node.storage_mut().persist(&mut ready)?;
//!         if let Some(snapshot) = persisted.snapshot {
//!             applied = vec![snapshot.data]; // restore the state machine
//!         }
//!         for entry in ready.take_committed_entries() {
//!             if !entry.data.is_empty() && entry.configuration().is_none() {
//!                 applied.push(entry.data);
//!             }
//!         }
//!         node.advance(ready)?;
//!     }
//! }
//! assert_eq!(applied, [Bytes::from_static(b"set x = 1")]);
//! drop(node);
//! let log = SegmentedLog::open(&dir, members, Options::default())?;
//! assert!(log.initial_state()?.hard_state.commit.0 >= 2);
//! # use quorate_raft_core::Storage;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

use super::{LogStorage, MemStorage, Snapshot, SnapshotMeta, Storage};
use crate::config::Configuration;
use crate::error::StorageError;
use crate::storage::crc::crc32c;
use crate::types::{Entry, HardState, LogIndex, NodeId, Term};
use bytes::Bytes;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const SEGMENT_MAGIC: &[u8; 8] = b"QRSEG001";
const SNAPSHOT_MAGIC: &[u8; 8] = b"QRSNAP01";
const ENTRY: u8 = 1;
const HARD_STATE: u8 = 2;
/// Records are at most this long: a longer length field is damage.
const MAX_RECORD: u32 = 1 << 30;

/// What went wrong opening or writing a [`SegmentedLog`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentedLogError {
    /// A file system call failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// A file holds bytes that are not what this log wrote, before its
    /// tail (so not a torn write): the log refuses to guess.
    #[error("{}: corrupt at byte {offset}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the damaged record or header starts.
        offset: u64,
        /// What is wrong there.
        reason: &'static str,
    },
}

impl From<SegmentedLogError> for StorageError {
    fn from(error: SegmentedLogError) -> Self {
        StorageError::Other(Box::new(error))
    }
}

trait At<T> {
    fn at(self, path: &Path) -> Result<T, SegmentedLogError>;
}

impl<T> At<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T, SegmentedLogError> {
        self.map_err(|source| SegmentedLogError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// How a [`SegmentedLog`] lays out its files.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// A segment rolls over once it holds this many bytes.
    pub segment_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: 64 << 20,
        }
    }
}

/// What is known of a segment file.
#[derive(Clone, Copy, Debug)]
struct Segment {
    seq: u64,
    /// The highest entry index it holds (0: none).
    max_index: u64,
}

/// A durable [`LogStorage`]: append-only segment files with a CRC per
/// record, `fsync` at the contract's sync points, atomic snapshot files.
/// See the [module docs](self) for the format and recovery rules.
#[derive(Debug)]
pub struct SegmentedLog {
    dir: PathBuf,
    options: Options,
    mem: MemStorage,
    /// Every live segment, oldest first; the last one is appended to.
    segments: Vec<Segment>,
    active: File,
    active_path: PathBuf,
    active_len: u64,
    /// Encoded records not yet written.
    buf: Vec<u8>,
    /// Bytes that were cut off a torn tail when opened.
    torn: u64,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.seg"))
}

fn sync_dir(dir: &Path) -> Result<(), SegmentedLogError> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Appends a record whose payload `body` writes, filling in its length and
/// CRC afterwards, so the payload is encoded once, in place.
fn put_record(buf: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 8]);
    body(buf);
    let payload = buf.get(start + 8..).unwrap_or_default();
    let (len, crc) = (payload.len() as u32, crc32c(payload));
    if let Some(header) = buf.get_mut(start..start + 8) {
        header[..4].copy_from_slice(&len.to_be_bytes());
        header[4..].copy_from_slice(&crc.to_be_bytes());
    }
}

fn put_entry(buf: &mut Vec<u8>, entry: &Entry) {
    put_record(buf, |b| {
        b.push(ENTRY);
        b.extend_from_slice(&entry.term.0.to_be_bytes());
        b.extend_from_slice(&entry.index.0.to_be_bytes());
        b.extend_from_slice(&entry.data);
    });
}

fn put_hard_state(buf: &mut Vec<u8>, hs: HardState) {
    put_record(buf, |b| {
        b.push(HARD_STATE);
        b.extend_from_slice(&hs.term.0.to_be_bytes());
        b.extend_from_slice(&hs.vote.map_or(0, |v| v.0).to_be_bytes());
        b.push(u8::from(hs.vote.is_some()));
        b.extend_from_slice(&hs.commit.0.to_be_bytes());
    });
}

/// A cursor over big-endian fields.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// A decoded record.
enum Record {
    Entry(Entry),
    HardState(HardState),
}

fn decode(payload: &[u8]) -> Option<Record> {
    let mut f = Fields(payload);
    match f.u8()? {
        ENTRY => {
            let term = Term(f.u64()?);
            let index = LogIndex(f.u64()?);
            let data = Bytes::copy_from_slice(f.0);
            Some(Record::Entry(Entry { term, index, data }))
        }
        HARD_STATE => {
            let term = Term(f.u64()?);
            let vote = f.u64()?;
            let has_vote = f.u8()? == 1;
            let commit = LogIndex(f.u64()?);
            f.0.is_empty().then_some(Record::HardState(HardState {
                term,
                vote: has_vote.then_some(NodeId(vote)),
                commit,
            }))
        }
        _ => None,
    }
}

/// Why the record at an offset cannot be read.
enum Damage {
    /// It runs past the end of the file, or only zeros follow: a write
    /// cut short.
    Torn,
    /// Whole, but wrong, with more after it.
    Corrupt(&'static str),
}

/// Reads the record at the start of `rest`: its payload and length.
fn next_record(rest: &[u8]) -> Result<(&[u8], usize), Damage> {
    let zeros = || rest.iter().all(|b| *b == 0);
    let mut f = Fields(rest);
    let (Some(len), Some(crc)) = (f.u32(), f.u32()) else {
        return Err(Damage::Torn);
    };
    if len == 0 || len > MAX_RECORD {
        return Err(match zeros() {
            true => Damage::Torn,
            false => Damage::Corrupt("impossible record length"),
        });
    }
    let Some(payload) = f.take(len as usize) else {
        return Err(Damage::Torn);
    };
    let end = 8 + len as usize;
    if crc32c(payload) != crc {
        let after = rest.get(end..).unwrap_or_default();
        return Err(match after.iter().all(|b| *b == 0) {
            true => Damage::Torn,
            false => Damage::Corrupt("checksum mismatch"),
        });
    }
    Ok((payload, end))
}

impl SegmentedLog {
    /// Opens the log in `dir` (created if missing), recovering what it
    /// holds; an empty directory starts a log whose membership is `boot`.
    pub fn open(
        dir: impl AsRef<Path>,
        boot: Configuration,
        options: Options,
    ) -> Result<Self, SegmentedLogError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).at(&dir)?;
        let tmp = dir.join("snapshot.tmp");
        if tmp.exists() {
            fs::remove_file(&tmp).at(&tmp)?;
        }
        let mut mem = MemStorage::new(boot);
        let mut first_segment = 0;
        if let Some((snapshot, first)) = read_snapshot(&dir.join("snapshot"))? {
            mem.apply_snapshot(snapshot);
            first_segment = first;
        }
        let mut seqs = Vec::new();
        for item in fs::read_dir(&dir).at(&dir)? {
            let path = item.at(&dir)?.path();
            let seq = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| u64::from_str_radix(n, 16).ok());
            match seq {
                Some(seq) if seq < first_segment => fs::remove_file(&path).at(&path)?,
                Some(seq) => seqs.push(seq),
                None => {}
            }
        }
        seqs.sort_unstable();
        let mut segments = Vec::new();
        let mut torn = 0;
        let count = seqs.len();
        for (n, seq) in seqs.into_iter().enumerate() {
            let path = segment_path(&dir, seq);
            let (max_index, cut) = replay(&path, &mut mem, n + 1 == count)?;
            torn += cut;
            segments.push(Segment { seq, max_index });
        }
        // A replayed hard state may predate the snapshot.
        let mut hs = mem.hard_state();
        let snapshot_index = mem.first_index().unwrap_or_default().prev();
        if hs.commit < snapshot_index {
            hs.commit = snapshot_index;
            mem.set_hard_state(hs);
        }
        let (active, active_path, active_len) = match segments.last() {
            Some(last) => {
                let path = segment_path(&dir, last.seq);
                let file = OpenOptions::new().append(true).open(&path).at(&path)?;
                let len = file.metadata().at(&path)?.len();
                (file, path, len)
            }
            None => {
                let seq = first_segment;
                segments.push(Segment { seq, max_index: 0 });
                let (file, path, len) = create_segment(&dir, seq, hs)?;
                (file, path, len)
            }
        };
        Ok(SegmentedLog {
            dir,
            options,
            mem,
            segments,
            active,
            active_path,
            active_len,
            buf: Vec::new(),
            torn,
        })
    }

    /// How many bytes of a torn tail were cut off when the log was opened.
    pub fn torn_bytes(&self) -> u64 {
        self.torn
    }

    /// How many segment files the log holds.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the buffered records, without `fsync`.
    fn flush(&mut self) -> Result<(), SegmentedLogError> {
        if !self.buf.is_empty() {
            self.active.write_all(&self.buf).at(&self.active_path)?;
            self.active_len += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Starts the next segment, headed by `hs`, once everything before it
    /// is durable.
    fn roll(&mut self, hs: HardState) -> Result<(), SegmentedLogError> {
        self.flush()?;
        self.active.sync_data().at(&self.active_path)?;
        let seq = self.segments.last().map_or(0, |s| s.seq + 1);
        let (file, path, len) = create_segment(&self.dir, seq, hs)?;
        self.segments.push(Segment { seq, max_index: 0 });
        self.active = file;
        self.active_path = path;
        self.active_len = len;
        Ok(())
    }

    /// Writes the snapshot file for the current snapshot, then deletes the
    /// segments before `first_segment`.
    fn write_snapshot(&mut self, first_segment: u64) -> Result<(), SegmentedLogError> {
        let snapshot = self
            .mem
            .snapshot()
            .map_err(|_| SegmentedLogError::Corrupt {
                path: self.dir.clone(),
                offset: 0,
                reason: "snapshot unreadable in memory",
            })?;
        let config = snapshot.meta.configuration.encode();
        let mut body = Vec::with_capacity(28 + config.len() + snapshot.data.len());
        body.extend_from_slice(&snapshot.meta.index.0.to_be_bytes());
        body.extend_from_slice(&snapshot.meta.term.0.to_be_bytes());
        body.extend_from_slice(&first_segment.to_be_bytes());
        body.extend_from_slice(&(config.len() as u32).to_be_bytes());
        body.extend_from_slice(&config);
        body.extend_from_slice(&snapshot.data);
        let mut file_bytes = Vec::with_capacity(20 + body.len());
        file_bytes.extend_from_slice(SNAPSHOT_MAGIC);
        file_bytes.extend_from_slice(&crc32c(&body).to_be_bytes());
        file_bytes.extend_from_slice(&(body.len() as u64).to_be_bytes());
        file_bytes.extend_from_slice(&body);
        let tmp = self.dir.join("snapshot.tmp");
        let path = self.dir.join("snapshot");
        let mut file = File::create(&tmp).at(&tmp)?;
        file.write_all(&file_bytes).at(&tmp)?;
        file.sync_all().at(&tmp)?;
        fs::rename(&tmp, &path).at(&path)?;
        sync_dir(&self.dir)?;
        let (old, kept): (Vec<Segment>, Vec<Segment>) =
            self.segments.iter().partition(|s| s.seq < first_segment);
        for s in &old {
            let p = segment_path(&self.dir, s.seq);
            fs::remove_file(&p).at(&p)?;
        }
        self.segments = kept;
        if !old.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn do_append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.mem.append(entries)?;
        for entry in entries {
            put_entry(&mut self.buf, entry);
            if let Some(active) = self.segments.last_mut() {
                active.max_index = active.max_index.max(entry.index.0);
            }
            if self.active_len + self.buf.len() as u64 >= self.options.segment_bytes {
                let hs = self.mem.hard_state();
                self.roll(hs)?;
            }
        }
        Ok(())
    }
}

fn create_segment(
    dir: &Path,
    seq: u64,
    hs: HardState,
) -> Result<(File, PathBuf, u64), SegmentedLogError> {
    let path = segment_path(dir, seq);
    let mut bytes = SEGMENT_MAGIC.to_vec();
    put_hard_state(&mut bytes, hs);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .at(&path)?;
    file.write_all(&bytes).at(&path)?;
    file.sync_data().at(&path)?;
    sync_dir(dir)?;
    let file = OpenOptions::new().append(true).open(&path).at(&path)?;
    Ok((file, path, bytes.len() as u64))
}

/// Replays one segment into `mem`; returns its highest entry index and
/// how many bytes of torn tail were cut off (only in the `last` one).
fn replay(path: &Path, mem: &mut MemStorage, last: bool) -> Result<(u64, u64), SegmentedLogError> {
    let bytes = fs::read(path).at(path)?;
    let corrupt = |offset: usize, reason| SegmentedLogError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let header_ok = bytes.get(..8) == Some(SEGMENT_MAGIC.as_slice());
    if !header_ok {
        // A segment whose creation was cut short holds a prefix of the
        // header, or zeros.
        let partial = SEGMENT_MAGIC.starts_with(&bytes) || bytes.iter().all(|b| *b == 0);
        if !(last && bytes.len() < 8 && partial) {
            return Err(corrupt(0, "not a segment header"));
        }
        let file = OpenOptions::new().write(true).open(path).at(path)?;
        file.set_len(0).at(path)?;
        let mut file = OpenOptions::new().append(true).open(path).at(path)?;
        let mut header = SEGMENT_MAGIC.to_vec();
        put_hard_state(&mut header, mem.hard_state());
        file.write_all(&header).at(path)?;
        file.sync_data().at(path)?;
        return Ok((0, bytes.len() as u64));
    }
    let mut offset = 8;
    let mut max_index = 0;
    while offset < bytes.len() {
        let rest = bytes.get(offset..).unwrap_or_default();
        match next_record(rest) {
            Ok((payload, len)) => {
                match decode(payload) {
                    Some(Record::Entry(entry)) => {
                        max_index = max_index.max(entry.index.0);
                        mem.append(std::slice::from_ref(&entry))
                            .map_err(|_| corrupt(offset, "entry leaves a gap in the log"))?;
                    }
                    Some(Record::HardState(hs)) => mem.set_hard_state(hs),
                    None => return Err(corrupt(offset, "unknown record")),
                }
                offset += len;
            }
            Err(Damage::Torn) if last => {
                let file = OpenOptions::new().write(true).open(path).at(path)?;
                file.set_len(offset as u64).at(path)?;
                file.sync_data().at(path)?;
                return Ok((max_index, (bytes.len() - offset) as u64));
            }
            Err(Damage::Torn) => return Err(corrupt(offset, "record cut short")),
            Err(Damage::Corrupt(reason)) => return Err(corrupt(offset, reason)),
        }
    }
    Ok((max_index, 0))
}

fn read_snapshot(path: &Path) -> Result<Option<(Snapshot, u64)>, SegmentedLogError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).at(path),
    };
    let corrupt = |offset, reason| SegmentedLogError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let mut f = Fields(&bytes);
    if f.take(8) != Some(SNAPSHOT_MAGIC.as_slice()) {
        return Err(corrupt(0, "not a snapshot header"));
    }
    let (Some(crc), Some(len)) = (f.u32(), f.u64()) else {
        return Err(corrupt(8, "snapshot header cut short"));
    };
    let body = f
        .take(usize::try_from(len).unwrap_or(usize::MAX))
        .filter(|b| crc32c(b) == crc && f.0.is_empty())
        .ok_or(corrupt(20, "snapshot checksum mismatch"))?;
    let mut f = Fields(body);
    let parsed = (|| {
        let index = LogIndex(f.u64()?);
        let term = Term(f.u64()?);
        let first_segment = f.u64()?;
        let config_len = f.u32()? as usize;
        let configuration = Configuration::decode(f.take(config_len)?)?;
        let data = Bytes::copy_from_slice(f.0);
        let meta = SnapshotMeta {
            index,
            term,
            configuration,
        };
        Some((Snapshot { meta, data }, first_segment))
    })();
    parsed
        .map(Some)
        .ok_or(corrupt(20, "snapshot body unreadable"))
}

impl Storage for SegmentedLog {
    forward_reads!(mem);
}

impl LogStorage for SegmentedLog {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.do_append(entries)
    }

    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.mem.set_hard_state(hard_state);
        put_hard_state(&mut self.buf, hard_state);
        Ok(())
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        // The new segment starts from the hard state before the snapshot,
        // so a crash before the snapshot file is renamed leaves the old
        // log consistent; the snapshot raises the commit index on open.
        let before = self.mem.hard_state();
        self.mem.apply_snapshot(snapshot);
        self.roll(before)?;
        let first = self.segments.last().map_or(0, |s| s.seq);
        self.write_snapshot(first)?;
        Ok(())
    }

    fn compact(&mut self, index: LogIndex, data: Bytes) -> Result<(), StorageError> {
        if index <= self.mem.snapshot_meta()?.index {
            return Ok(());
        }
        self.sync()?;
        self.mem.compact(index, data)?;
        // Delete the oldest segments while all they hold is covered.
        let active = self.segments.len().saturating_sub(1);
        let covered = self
            .segments
            .iter()
            .take(active)
            .take_while(|s| s.max_index <= index.0)
            .count();
        let first = self.segments.get(covered).map_or(0, |s| s.seq);
        self.write_snapshot(first)?;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.flush()?;
        self.active.sync_data().at(&self.active_path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_whole_torn_or_corrupt() {
        let mut buf = Vec::new();
        put_hard_state(&mut buf, HardState::default());
        let len = buf.len();
        assert!(matches!(next_record(&buf), Ok((_, n)) if n == len));
        assert!(matches!(next_record(&buf[..len - 1]), Err(Damage::Torn)));
        let mut zeroed = buf.clone();
        zeroed[len - 1] ^= 1;
        assert!(matches!(next_record(&zeroed), Err(Damage::Torn)));
        zeroed.extend_from_slice(&buf);
        assert!(matches!(
            next_record(&zeroed),
            Err(Damage::Corrupt("checksum mismatch"))
        ));
        assert!(matches!(next_record(&[0; 12]), Err(Damage::Torn)));
    }
}
