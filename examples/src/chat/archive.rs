//! The chat server's archive: every post, in the order it was accepted.
//!
//! On disk ([`Archive::open`]) it is one append-only file, `archive.log`:
//! the magic `QCHAT001`, then records `len u32 | xxh3-64 u64 | message`
//! (little endian; the checksum covers the message bytes). A batch of
//! posts is written with one `write` and made durable with one
//! `fdatasync` ([`Archive::sync`]) before any of them is acknowledged or
//! published. Opening replays the file: a damaged record that runs to the
//! end of the file is a torn write that was never acknowledged, and is cut
//! off ([`Archive::torn_bytes`]); a damaged record anywhere else is
//! corruption, refused with [`ArchiveError::Corrupt`] naming the offset.
//!
//! Only an index stays in memory (about 32 bytes a message: offset, length,
//! id, author, sequence number); message bytes are read back from the file
//! when a client asks for them, so the server's memory does not grow with
//! the text posted. [`Archive::in_memory`] keeps the same records in a
//! buffer instead (the scripted demo).
//!
//! The archive admits a post only in causal order per author: author `a`'s
//! message with sequence number `k` (its own entry in its vector clock) is
//! stored only after `a`'s `k - 1`. Every other cause of a post reached
//! its author through the feed or the archive, which carry only archived
//! messages, so the archive's order is a causal order.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use quorate_clocks::VectorClock;
use xxhash_rust::xxh3::xxh3_64;

use super::ChatMessage;

const MAGIC: &[u8; 8] = b"QCHAT001";
/// Bytes of a record before its message: length and checksum.
const HEADER: usize = 12;
/// The file name inside the data directory.
pub const FILE_NAME: &str = "archive.log";

/// What went wrong with the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file system call failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The file holds bytes this archive did not write, before its tail.
    #[error("{}: corrupt at byte {offset}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the damaged record starts.
        offset: u64,
        /// What is wrong there.
        reason: &'static str,
    },
}

/// What [`Archive::append`] did with a post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored (durable after the next [`Archive::sync`]).
    Stored,
    /// The same message (same id) is already stored: a retry.
    Duplicate,
    /// Another message holds this author's sequence number: two clients
    /// post under one name.
    Conflict,
    /// The author's previous message is not stored yet: post that first.
    Gap,
    /// The message's clock has no entry for its author.
    Invalid,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: u64,
    id: u64,
    len: u32,
    author: u32,
}

#[derive(Debug)]
enum Store {
    Memory(Vec<u8>),
    File {
        file: File,
        path: PathBuf,
        /// Bytes written (synced or not).
        len: u64,
    },
}

/// A page of archived messages (see [`Archive::page`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Encoded messages ([`ChatMessage::to_bytes`]), in archive order.
    pub messages: Vec<Vec<u8>>,
    /// Where the next page starts (an archive position).
    pub next: u64,
    /// Whether more messages may follow `next`.
    pub more: bool,
}

/// The archive: an append-only log of posts with an in-memory index.
#[derive(Debug)]
pub struct Archive {
    store: Store,
    /// Records appended since the last sync.
    unsynced: Vec<u8>,
    entries: Vec<Entry>,
    authors: Vec<String>,
    by_name: HashMap<String, u32>,
    /// Per author, the archive position of its message `k + 1` at `k`.
    positions: Vec<Vec<u64>>,
    torn_bytes: u64,
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Archive {
    /// An archive in memory (lost with the process).
    pub fn in_memory() -> Self {
        Self::with_store(Store::Memory(MAGIC.to_vec()))
    }

    fn with_store(store: Store) -> Self {
        Archive {
            store,
            unsynced: Vec::new(),
            entries: Vec::new(),
            authors: Vec::new(),
            by_name: HashMap::new(),
            positions: Vec::new(),
            torn_bytes: 0,
        }
    }

    /// Opens (or creates) the archive in directory `dir`, replaying it and
    /// cutting off a torn tail.
    pub fn open(dir: &Path) -> Result<Self, ArchiveError> {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        let path = dir.join(FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_at(&path))?;
        let file_len = file.metadata().map_err(io_at(&path))?.len();
        if file_len < MAGIC.len() as u64 {
            // New, or torn while writing the magic: start over.
            file.set_len(0).map_err(io_at(&path))?;
            file.write_all(MAGIC).map_err(io_at(&path))?;
            file.sync_all().map_err(io_at(&path))?;
            if let Some(parent) = path.parent()
                && let Ok(d) = File::open(parent)
            {
                // Makes the new file's name durable; best effort.
                let _ = d.sync_all();
            }
            let store = Store::File {
                file,
                path,
                len: MAGIC.len() as u64,
            };
            let mut archive = Self::with_store(store);
            archive.torn_bytes = file_len;
            return Ok(archive);
        }
        let mut archive = Self::with_store(Store::Memory(Vec::new()));
        let valid = archive.replay(&mut file, &path, file_len)?;
        if valid < file_len {
            file.set_len(valid).map_err(io_at(&path))?;
            file.sync_all().map_err(io_at(&path))?;
            archive.torn_bytes = file_len - valid;
        }
        archive.store = Store::File {
            file,
            path,
            len: valid,
        };
        Ok(archive)
    }

    /// Reads every record of `file`; returns the length of its valid prefix.
    fn replay(&mut self, file: &mut File, path: &Path, file_len: u64) -> Result<u64, ArchiveError> {
        let corrupt = |offset, reason| ArchiveError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason,
        };
        file.seek(SeekFrom::Start(0)).map_err(io_at(path))?;
        let mut reader = BufReader::new(file);
        let mut magic = [0u8; 8];
        reader.read_exact(&mut magic).map_err(io_at(path))?;
        if &magic != MAGIC {
            return Err(corrupt(0, "not a chat archive (bad magic)"));
        }
        let mut offset = MAGIC.len() as u64;
        let mut message = Vec::new();
        loop {
            let left = file_len - offset;
            if left == 0 {
                return Ok(offset);
            }
            if left < HEADER as u64 {
                return Ok(offset); // torn header
            }
            let mut header = [0u8; HEADER];
            reader.read_exact(&mut header).map_err(io_at(path))?;
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let mut sum = [0u8; 8];
            sum.copy_from_slice(&header[4..]);
            let sum = u64::from_le_bytes(sum);
            let end = offset + HEADER as u64 + u64::from(len);
            if end > file_len {
                return Ok(offset); // torn payload
            }
            message.resize(len as usize, 0);
            reader.read_exact(&mut message).map_err(io_at(path))?;
            let at_tail = end == file_len;
            let parsed = if xxh3_64(&message) == sum {
                ChatMessage::from_bytes(&message).ok()
            } else {
                None
            };
            let Some(parsed) = parsed else {
                if at_tail {
                    return Ok(offset);
                }
                return Err(corrupt(offset, "checksum mismatch before the tail"));
            };
            match self.index(&parsed, offset, len) {
                Appended::Stored => {}
                _ => return Err(corrupt(offset, "record out of causal order")),
            }
            offset = end;
        }
    }

    /// Bytes cut off the end of the file when it was opened (a torn write).
    pub fn torn_bytes(&self) -> u64 {
        self.torn_bytes
    }

    /// Messages archived.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is archived.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The file, when on disk.
    pub fn path(&self) -> Option<&Path> {
        match &self.store {
            Store::File { path, .. } => Some(path),
            Store::Memory(_) => None,
        }
    }

    fn write_offset(&self) -> u64 {
        let base = match &self.store {
            Store::Memory(bytes) => bytes.len() as u64,
            Store::File { len, .. } => *len,
        };
        base + self.unsynced.len() as u64
    }

    /// Checks `message` against the index and adds it if it is next.
    fn index(&mut self, message: &ChatMessage, offset: u64, len: u32) -> Appended {
        let seq = message.clock.get(&message.author);
        if seq == 0 {
            return Appended::Invalid;
        }
        let author = match self.by_name.get(&message.author) {
            Some(&a) => a,
            None => {
                if seq != 1 {
                    return Appended::Gap;
                }
                let a = u32::try_from(self.authors.len()).unwrap_or(u32::MAX);
                self.authors.push(message.author.clone());
                self.by_name.insert(message.author.clone(), a);
                self.positions.push(Vec::new());
                a
            }
        };
        let positions = &mut self.positions[author as usize];
        let stored = positions.len() as u64;
        if seq <= stored {
            let existing = self.entries[positions[(seq - 1) as usize] as usize];
            return if existing.id == message.id.to_u64() {
                Appended::Duplicate
            } else {
                Appended::Conflict
            };
        }
        if seq > stored + 1 {
            return Appended::Gap;
        }
        positions.push(self.entries.len() as u64);
        self.entries.push(Entry {
            offset,
            id: message.id.to_u64(),
            len,
            author,
        });
        Appended::Stored
    }

    /// Adds `message` if it is its author's next; durable after
    /// [`sync`](Self::sync).
    pub fn append(&mut self, message: &ChatMessage) -> Appended {
        let bytes = message.to_bytes();
        let Ok(len) = u32::try_from(bytes.len()) else {
            return Appended::Invalid;
        };
        let offset = self.write_offset();
        let outcome = self.index(message, offset, len);
        if outcome == Appended::Stored {
            self.unsynced.extend_from_slice(&len.to_le_bytes());
            self.unsynced
                .extend_from_slice(&xxh3_64(&bytes).to_le_bytes());
            self.unsynced.extend_from_slice(&bytes);
        }
        outcome
    }

    /// Writes what was appended and `fdatasync`s it (one write, one sync).
    pub fn sync(&mut self) -> Result<(), ArchiveError> {
        if self.unsynced.is_empty() {
            return Ok(());
        }
        match &mut self.store {
            Store::Memory(bytes) => bytes.append(&mut self.unsynced),
            Store::File { file, path, len } => {
                file.write_all(&self.unsynced).map_err(io_at(path))?;
                file.sync_data().map_err(io_at(path))?;
                *len += self.unsynced.len() as u64;
                self.unsynced.clear();
            }
        }
        Ok(())
    }

    /// Where the first message not covered by `since` is (or the end).
    fn first_missing(&self, since: &VectorClock<String>) -> u64 {
        self.authors
            .iter()
            .zip(&self.positions)
            .filter_map(|(name, positions)| {
                let seen = usize::try_from(since.get(name)).unwrap_or(usize::MAX);
                positions.get(seen).copied()
            })
            .min()
            .unwrap_or(self.entries.len() as u64)
    }

    /// Up to `max_messages` messages (and about `max_bytes`) that `since`
    /// does not cover, from archive position `from` on, in archive order.
    /// Reads only synced records.
    pub fn page(
        &mut self,
        since: &VectorClock<String>,
        from: u64,
        max_messages: usize,
        max_bytes: usize,
    ) -> Result<Page, ArchiveError> {
        let start = from.max(self.first_missing(since));
        let mut messages = Vec::new();
        let mut bytes = 0usize;
        let mut position = start;
        while let Some(&entry) = self.entries.get(position as usize) {
            if messages.len() >= max_messages || (bytes >= max_bytes && !messages.is_empty()) {
                break;
            }
            position += 1;
            let seq = self.positions[entry.author as usize]
                .binary_search(&(position - 1))
                .map_or(0, |k| k as u64 + 1);
            if seq <= since.get(&self.authors[entry.author as usize]) {
                continue;
            }
            let message = self.read(entry)?;
            bytes += message.len();
            messages.push(message);
        }
        Ok(Page {
            messages,
            next: position,
            more: (position as usize) < self.entries.len(),
        })
    }

    fn read(&mut self, entry: Entry) -> Result<Vec<u8>, ArchiveError> {
        let start = entry.offset + HEADER as u64;
        let mut out = vec![0u8; entry.len as usize];
        match &mut self.store {
            Store::Memory(bytes) => {
                let from = usize::try_from(start).unwrap_or(usize::MAX);
                let slice = bytes
                    .get(from..from + out.len())
                    .ok_or(ArchiveError::Corrupt {
                        path: PathBuf::from("<memory>"),
                        offset: entry.offset,
                        reason: "record past the end",
                    })?;
                out.copy_from_slice(slice);
            }
            Store::File { file, path, .. } => {
                file.seek(SeekFrom::Start(start)).map_err(io_at(path))?;
                file.read_exact(&mut out).map_err(io_at(path))?;
            }
        }
        Ok(out)
    }

    /// Every archived message, decoded, in archive order (tests, tools).
    pub fn messages(&mut self) -> Result<Vec<ChatMessage>, ArchiveError> {
        let page = self.page(&VectorClock::new(), 0, usize::MAX, usize::MAX)?;
        Ok(page
            .messages
            .iter()
            .filter_map(|m| ChatMessage::from_bytes(m).ok())
            .collect())
    }
}
