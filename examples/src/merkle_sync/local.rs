//! The directory on disk: scanning a tree to serve, reading what a target
//! already holds, the staging log that makes a fetch resumable, and making
//! the target identical to a manifest.
//!
//! Symbolic links are never followed: a scan skips them (and anything that
//! is not a regular file or a directory), and a fetch removes them from the
//! target, since a served tree never has any.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use quorate_merkle::SignedRoot;

use super::manifest::{Entry, Kind, Limits, Manifest, STAGING_DIR, check_path};
use super::wire::Error;

/// What a scan found on disk: the manifest and the blocks of every file,
/// in tree order (without the manifest leaf).
#[derive(Debug)]
pub struct Scanned {
    /// The file list.
    pub manifest: Manifest,
    /// The blocks of every file, file after file.
    pub blocks: Vec<Vec<u8>>,
    /// Entries skipped (symlinks, special files, non-UTF-8 names).
    pub skipped: Vec<PathBuf>,
}

/// Kind of a local entry, as [`fs::symlink_metadata`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LocalKind {
    File(u64),
    Dir,
    /// A symlink or a special file.
    Other,
}

/// Every entry under `root` (not following links, not entering the
/// staging directory), by relative path.
fn walk(root: &Path) -> Result<(BTreeMap<String, LocalKind>, Vec<PathBuf>), Error> {
    let mut found = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let read = fs::read_dir(&dir).map_err(Error::io(format!("read {}", dir.display())))?;
        for item in read {
            let item = item.map_err(Error::io(format!("read {}", dir.display())))?;
            let Some(name) = item.file_name().to_str().map(str::to_owned) else {
                skipped.push(item.path());
                continue;
            };
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if path == STAGING_DIR {
                continue;
            }
            let meta = fs::symlink_metadata(item.path())
                .map_err(Error::io(format!("stat {}", item.path().display())))?;
            let kind = if meta.file_type().is_dir() {
                stack.push((item.path(), path.clone()));
                LocalKind::Dir
            } else if meta.file_type().is_file() {
                LocalKind::File(meta.len())
            } else {
                LocalKind::Other
            };
            found.insert(path, kind);
        }
    }
    Ok((found, skipped))
}

/// Mode bits of `path` (permissions only).
fn mode_of(path: &Path) -> Result<u32, Error> {
    let meta = fs::symlink_metadata(path).map_err(Error::io(format!("stat {}", path.display())))?;
    Ok(meta.permissions().mode() & 0o777)
}

/// Reads the tree under `root` into a manifest and its blocks, refusing a
/// tree over `limits` (the same limits a fetch applies).
pub fn scan(root: &Path, block_size: u32, limits: &Limits) -> Result<Scanned, Error> {
    let (found, mut skipped) = walk(root)?;
    let mut entries = Vec::new();
    let mut blocks = Vec::new();
    let mut total: u64 = 0;
    for (path, kind) in found {
        let full = root.join(&path);
        if check_path(&path).is_err() || path.len() > limits.max_path_len {
            skipped.push(full);
            continue;
        }
        let kind = match kind {
            LocalKind::Dir => Kind::Dir,
            LocalKind::File(_) => {
                let data =
                    fs::read(&full).map_err(Error::io(format!("read {}", full.display())))?;
                let size = data.len() as u64;
                total += size;
                if total > limits.max_tree_bytes {
                    return Err(Error::TooLarge {
                        what: "tree (bytes)",
                        got: total,
                        limit: limits.max_tree_bytes,
                    });
                }
                blocks.extend(data.chunks(block_size as usize).map(<[u8]>::to_vec));
                Kind::File { size }
            }
            LocalKind::Other => {
                skipped.push(full);
                continue;
            }
        };
        entries.push(Entry {
            mode: mode_of(&full)?,
            path,
            kind,
        });
    }
    if entries.len() as u64 > limits.max_entries {
        return Err(Error::TooLarge {
            what: "tree (entries)",
            got: entries.len() as u64,
            limit: limits.max_entries,
        });
    }
    // `walk` lists by path already; a child under a skipped parent cannot
    // occur (skipped entries are never entered).
    Ok(Scanned {
        manifest: Manifest {
            block_size,
            entries,
        },
        blocks,
        skipped,
    })
}

/// The blocks a target directory already holds, at the tree indices of
/// `manifest`: a file's blocks where the target has a regular file at the
/// same path (reached through real directories only), empty (never a
/// served block) elsewhere. Index 0 is the manifest itself.
pub fn local_blocks(root: &Path, manifest: &Manifest, manifest_bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut blocks = vec![Vec::new(); manifest.tree_size() as usize];
    if let Some(first) = blocks.first_mut() {
        *first = manifest_bytes.to_vec();
    }
    let Ok((found, _)) = walk(root) else {
        return blocks;
    };
    let bs = manifest.block_size as usize;
    for (entry, _, first) in manifest.layout() {
        if !matches!(found.get(&entry.path), Some(LocalKind::File(_))) {
            continue;
        }
        let Ok(data) = fs::read(root.join(&entry.path)) else {
            continue;
        };
        let want = manifest.blocks_of(entry_size(entry)) as usize;
        for (k, chunk) in data.chunks(bs).take(want).enumerate() {
            if let Some(slot) = blocks.get_mut(first as usize + k) {
                *slot = chunk.to_vec();
            }
        }
    }
    blocks
}

fn entry_size(entry: &Entry) -> u64 {
    match entry.kind {
        Kind::File { size } => size,
        Kind::Dir => 0,
    }
}

/// A block read back from the staging log: its index and bytes.
pub type Staged = (u64, Vec<u8>);

/// Leading bytes of a staging log.
const STAGING_MAGIC: &[u8] = b"quorate merkle-sync staging v1\0";

/// The staging log: every block verified and accepted, appended as it
/// arrives, under the signed root it belongs to. A fetch killed and started
/// again loads it and fetches only the rest; the blocks in it are checked
/// again against the root like any local block, so a torn or damaged log
/// only costs a refetch.
#[derive(Debug)]
pub struct Staging {
    file: File,
    path: PathBuf,
}

impl Staging {
    /// Opens the log of `root`'s staging directory for `signed`: returns
    /// the blocks it holds for that root (index, bytes; at most `tree_size`
    /// indices, each at most `block_size` long) and starts a fresh log if
    /// it was for another root or unreadable.
    pub fn open(
        root: &Path,
        signed: &SignedRoot,
        block_size: u32,
    ) -> Result<(Self, Vec<Staged>), Error> {
        let dir = root.join(STAGING_DIR);
        // Never write through a link planted where the staging directory goes.
        if fs::symlink_metadata(&dir).is_ok_and(|m| !m.is_dir()) {
            fs::remove_file(&dir).map_err(Error::io(format!("remove {}", dir.display())))?;
        }
        fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let path = dir.join("state");
        let mut header = STAGING_MAGIC.to_vec();
        header.extend_from_slice(&signed.tree_size.to_be_bytes());
        header.extend_from_slice(&signed.root.0.0);
        let mut held = Vec::new();
        let mut keep = 0usize;
        if let Ok(mut f) = File::open(&path) {
            let mut bytes = Vec::new();
            if f.read_to_end(&mut bytes).is_ok()
                && let Some(mut rest) = bytes.strip_prefix(header.as_slice())
            {
                keep = header.len();
                while rest.len() >= 12 {
                    let index = u64::from_be_bytes(rest[..8].try_into().unwrap_or([0xff; 8]));
                    let len = u32::from_be_bytes(rest[8..12].try_into().unwrap_or([0xff; 4]));
                    if index == 0 || index >= signed.tree_size || len > block_size {
                        break;
                    }
                    let Some(data) = rest.get(12..12 + len as usize) else {
                        break;
                    };
                    held.push((index, data.to_vec()));
                    keep += 12 + len as usize;
                    rest = &rest[12 + len as usize..];
                }
            }
        }
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(Error::io(format!("open {}", path.display())))?;
        if keep == 0 {
            file.set_len(0)
                .and_then(|()| file.write_all(&header))
                .map_err(Error::io(format!("write {}", path.display())))?;
        } else {
            // Drop a torn last record.
            file.set_len(keep as u64)
                .map_err(Error::io(format!("truncate {}", path.display())))?;
        }
        use std::io::Seek as _;
        file.seek(std::io::SeekFrom::End(0))
            .map_err(Error::io(format!("seek {}", path.display())))?;
        Ok((Self { file, path }, held))
    }

    /// Appends verified blocks (one write, so a kill leaves at most one
    /// torn record, dropped on the next open).
    pub fn append(&mut self, blocks: &[(u64, &[u8])]) -> Result<(), Error> {
        let mut out = Vec::new();
        for (index, data) in blocks {
            out.extend_from_slice(&index.to_be_bytes());
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            out.extend_from_slice(data);
        }
        self.file
            .write_all(&out)
            .map_err(Error::io(format!("write {}", self.path.display())))
    }
}

/// What [`apply`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Files written (new or changed).
    pub written: u64,
    /// Files whose mode was set (written ones included).
    pub chmod: u64,
    /// Entries removed (not in the manifest, another kind, or links).
    pub removed: u64,
}

/// Makes `root` identical to `manifest` with the verified `blocks` (tree
/// order, index 0 the manifest): removes what the manifest lacks (and
/// every symlink or special file), creates directories, writes each new
/// or changed file to the staging directory and renames it into place,
/// sets modes. Paths come from a checked manifest, so all of them are
/// under `root`.
pub fn apply(root: &Path, manifest: &Manifest, blocks: &[Vec<u8>]) -> Result<Applied, Error> {
    let mut applied = Applied::default();
    let (found, _) = walk(root)?;
    let wanted: BTreeMap<&str, &Entry> = manifest
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e))
        .collect();
    // Deepest first, so a removed directory's children go before it (a
    // removed directory takes its children with it).
    for (path, kind) in found.iter().rev() {
        let keep = matches!(
            (wanted.get(path.as_str()).map(|e| e.kind), kind),
            (Some(Kind::Dir), LocalKind::Dir) | (Some(Kind::File { .. }), LocalKind::File(_))
        );
        if keep {
            continue;
        }
        let full = root.join(path);
        let result = match kind {
            LocalKind::Dir => fs::remove_dir_all(&full),
            _ => fs::remove_file(&full),
        };
        match result {
            Ok(()) => applied.removed += 1,
            // Already gone with a removed parent.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("remove {}", full.display()))(e)),
        }
    }
    let staging = root.join(STAGING_DIR);
    fs::create_dir_all(&staging).map_err(Error::io(format!("create {}", staging.display())))?;
    let mut next = 1usize;
    for entry in &manifest.entries {
        let full = root.join(&entry.path);
        match entry.kind {
            Kind::Dir => {
                if !found.contains_key(&entry.path) || !full.is_dir() {
                    fs::create_dir(&full)
                        .map_err(Error::io(format!("mkdir {}", full.display())))?;
                }
            }
            Kind::File { size } => {
                let n = manifest.blocks_of(size) as usize;
                let parts = blocks.get(next..next + n).ok_or_else(|| {
                    Error::Invalid(format!("{} blocks missing for {}", n, entry.path))
                })?;
                next += n;
                let same = matches!(found.get(&entry.path), Some(LocalKind::File(s)) if *s == size)
                    && fs::read(&full).is_ok_and(|old| {
                        old.chunks(manifest.block_size as usize)
                            .zip(parts)
                            .all(|(a, b)| a == b.as_slice())
                    });
                if !same {
                    let tmp = staging.join("incoming");
                    let mut f = File::create(&tmp)
                        .map_err(Error::io(format!("create {}", tmp.display())))?;
                    for part in parts {
                        f.write_all(part)
                            .map_err(Error::io(format!("write {}", tmp.display())))?;
                    }
                    f.sync_all()
                        .map_err(Error::io(format!("sync {}", tmp.display())))?;
                    drop(f);
                    fs::rename(&tmp, &full).map_err(Error::io(format!(
                        "rename {} to {}",
                        tmp.display(),
                        full.display()
                    )))?;
                    applied.written += 1;
                }
            }
        }
        // Directory modes last: a read-only directory still takes its files.
        if matches!(entry.kind, Kind::File { .. }) && mode_of(&full)? != entry.mode {
            fs::set_permissions(&full, fs::Permissions::from_mode(entry.mode))
                .map_err(Error::io(format!("chmod {}", full.display())))?;
            applied.chmod += 1;
        }
    }
    for entry in manifest.entries.iter().rev() {
        let full = root.join(&entry.path);
        if entry.kind == Kind::Dir && mode_of(&full)? != entry.mode {
            fs::set_permissions(&full, fs::Permissions::from_mode(entry.mode))
                .map_err(Error::io(format!("chmod {}", full.display())))?;
        }
    }
    fs::remove_dir_all(&staging).map_err(Error::io(format!("remove {}", staging.display())))?;
    Ok(applied)
}
