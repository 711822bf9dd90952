//! The file list of a served tree, bound into what is signed.
//!
//! The Merkle tree of a served directory has the encoded [`Manifest`] as
//! leaf 0 and every file's fixed-size blocks after it, file after file in
//! manifest order. The signed root so covers the paths, kinds, sizes and
//! modes as well as the bytes: a source cannot add, drop, rename or resize a
//! file without breaking the signature, and a file's block range follows
//! from the sizes before it (it is not stated, so it cannot be misstated).
//!
//! Decoding checks every bound ([`Limits`]) and every path: relative,
//! `/`-separated, no empty, `.` or `..` component, no NUL, not the staging
//! directory, sorted and unique, each entry's parent listed before it as a
//! directory. A file so can never be written outside the target directory.

use std::collections::BTreeSet;

use super::wire::Error;

/// Leading bytes of an encoded manifest.
const MAGIC: &[u8] = b"quorate merkle-sync manifest v1\0";
/// Smallest block size.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// Largest block size: a batch of 256 blocks stays under the frame limit.
pub const MAX_BLOCK_SIZE: u32 = 64 << 10;
/// Default block size.
pub const DEFAULT_BLOCK_SIZE: u32 = 8 << 10;
/// Name of the staging directory inside a fetched tree (never served).
pub const STAGING_DIR: &str = ".merkle-sync";

/// Bounds on a manifest received from the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of an encoded manifest.
    pub max_manifest_bytes: u64,
    /// Most entries (files and directories).
    pub max_entries: u64,
    /// Most bytes of one path.
    pub max_path_len: usize,
    /// Most bytes of all files together.
    pub max_tree_bytes: u64,
}

impl Default for Limits {
    /// 8 MiB manifests, 100,000 entries, 4,096-byte paths, 4 GiB trees.
    fn default() -> Self {
        Self {
            max_manifest_bytes: 8 << 20,
            max_entries: 100_000,
            max_path_len: 4096,
            max_tree_bytes: 4 << 30,
        }
    }
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file of this many bytes.
    File {
        /// Its length.
        size: u64,
    },
    /// A directory.
    Dir,
}

/// One file or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative `/`-separated path.
    pub path: String,
    /// File or directory.
    pub kind: Kind,
    /// Permission bits (`0o777` at most).
    pub mode: u32,
}

/// The file list of a served tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Bytes per block (the last block of a file may be shorter).
    pub block_size: u32,
    /// Entries, sorted by path bytes.
    pub entries: Vec<Entry>,
}

impl Manifest {
    /// Blocks of a file of `size` bytes.
    pub fn blocks_of(&self, size: u64) -> u64 {
        size.div_ceil(u64::from(self.block_size))
    }

    /// Blocks of all files.
    pub fn total_blocks(&self) -> u64 {
        self.files().map(|(_, size)| self.blocks_of(size)).sum()
    }

    /// Bytes of all files.
    pub fn total_bytes(&self) -> u64 {
        self.files().map(|(_, size)| size).sum()
    }

    /// Leaves of the signed tree: the manifest and every block.
    pub fn tree_size(&self) -> u64 {
        1 + self.total_blocks()
    }

    /// The files with their sizes, in manifest (and tree) order.
    pub fn files(&self) -> impl Iterator<Item = (&Entry, u64)> {
        self.entries.iter().filter_map(|e| match e.kind {
            Kind::File { size } => Some((e, size)),
            Kind::Dir => None,
        })
    }

    /// Each file with the tree index of its first block.
    pub fn layout(&self) -> Vec<(&Entry, u64, u64)> {
        let mut next = 1;
        self.files()
            .map(|(e, size)| {
                let first = next;
                next += self.blocks_of(size);
                (e, size, first)
            })
            .collect()
    }

    /// Magic, block size (u32 BE), entry count (u32 BE), then per entry:
    /// kind (0 file, 1 directory), mode (u32 BE), size (u64 BE, 0 for a
    /// directory), path length (u16 BE) and path.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAGIC.len() + 8 + self.entries.len() * 48);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.block_size.to_be_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for e in &self.entries {
            let (kind, size) = match e.kind {
                Kind::File { size } => (0u8, size),
                Kind::Dir => (1u8, 0),
            };
            out.push(kind);
            out.extend_from_slice(&e.mode.to_be_bytes());
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&(e.path.len() as u16).to_be_bytes());
            out.extend_from_slice(e.path.as_bytes());
        }
        out
    }

    /// Decodes and checks [`encode`](Self::encode) output against `limits`
    /// (see the [module docs](self)); never panics.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, Error> {
        let bad = |what: String| Error::Invalid(format!("manifest: {what}"));
        if bytes.len() as u64 > limits.max_manifest_bytes {
            return Err(Error::TooLarge {
                what: "manifest (bytes)",
                got: bytes.len() as u64,
                limit: limits.max_manifest_bytes,
            });
        }
        let mut r = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| bad("bad magic".into()))?;
        let mut take = |n: usize| -> Result<&[u8], Error> {
            let (head, tail) = r
                .split_at_checked(n)
                .ok_or_else(|| bad("truncated".into()))?;
            r = tail;
            Ok(head)
        };
        let u32_of = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let block_size = u32_of(take(4)?);
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
            return Err(bad(format!("block size {block_size} out of range")));
        }
        let count = u64::from(u32_of(take(4)?));
        if count > limits.max_entries {
            return Err(Error::TooLarge {
                what: "manifest (entries)",
                got: count,
                limit: limits.max_entries,
            });
        }
        let mut entries = Vec::new();
        let mut dirs: BTreeSet<&str> = BTreeSet::new();
        let mut total: u64 = 0;
        let mut last: Option<&[u8]> = None;
        for _ in 0..count {
            let kind = take(1)?[0];
            let mode = u32_of(take(4)?);
            let s = take(8)?;
            let size = u64::from_be_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]);
            let l = take(2)?;
            let len = usize::from(u16::from_be_bytes([l[0], l[1]]));
            if len > limits.max_path_len {
                return Err(bad(format!("a path of {len} bytes")));
            }
            let raw = take(len)?;
            let path = std::str::from_utf8(raw).map_err(|_| bad("a path is not UTF-8".into()))?;
            check_path(path).map_err(|why| bad(format!("path {path:?}: {why}")))?;
            if last.is_some_and(|prev| prev >= raw) {
                return Err(bad(format!("path {path:?} out of order or repeated")));
            }
            last = Some(raw);
            if let Some((parent, _)) = path.rsplit_once('/')
                && !dirs.contains(parent)
            {
                return Err(bad(format!(
                    "path {path:?}: parent not listed as a directory"
                )));
            }
            if mode > 0o777 {
                return Err(bad(format!("path {path:?}: mode {mode:o}")));
            }
            let kind = match (kind, size) {
                (0, size) => {
                    total = total
                        .checked_add(size)
                        .filter(|t| *t <= limits.max_tree_bytes)
                        .ok_or(Error::TooLarge {
                            what: "tree (bytes)",
                            got: total.saturating_add(size),
                            limit: limits.max_tree_bytes,
                        })?;
                    Kind::File { size }
                }
                (1, 0) => {
                    dirs.insert(path);
                    Kind::Dir
                }
                (kind, size) => {
                    return Err(bad(format!("path {path:?}: kind {kind}, size {size}")));
                }
            };
            entries.push(Entry {
                path: path.to_owned(),
                kind,
                mode,
            });
        }
        if !r.is_empty() {
            return Err(bad(format!("{} trailing bytes", r.len())));
        }
        Ok(Self {
            block_size,
            entries,
        })
    }
}

/// Whether `path` is a safe relative path (see the [module docs](self)).
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty");
    }
    if path.contains('\0') {
        return Err("contains NUL");
    }
    if path.starts_with('/') {
        return Err("absolute");
    }
    for component in path.split('/') {
        match component {
            "" => return Err("empty component"),
            "." | ".." => return Err("`.` or `..` component"),
            _ => {}
        }
    }
    if path == STAGING_DIR || path.starts_with(".merkle-sync/") {
        return Err("the staging directory");
    }
    Ok(())
}
