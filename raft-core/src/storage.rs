//! Stable storage: the [`Storage`] trait through which a node reads its
//! durable log, hard state and snapshot metadata, the [`LogStorage`] trait
//! through which the application writes what a [`Ready`] asks it to
//! persist, and [`MemStorage`], an in-memory implementation for tests,
//! simulation and benchmarks. [`CrashStorage`] wraps any of them and
//! forgets unsynced writes on a simulated crash.
//!
//! A node only *reads* storage. The application writes to it what
//! [`Ready`] batches ask it to persist, then acknowledges with
//! [`Node::advance`](crate::Node::advance).
//!
//! # The persistence contract
//!
//! Stated once, here; the conformance suite (feature `conformance`) checks
//! a storage against it, and the simulator runs every seed over
//! [`CrashStorage`], which loses exactly what the contract allows.
//!
//! 1. **Writes are ordered.** [`LogStorage`] writes take effect in call
//!    order and reads see them at once, synced or not.
//! 2. **Nothing is durable before [`LogStorage::sync`].** When `sync`
//!    returns, every earlier write survives a crash. A crash before it may
//!    keep any *prefix* of the unsynced writes (the last one kept may be
//!    torn: a prefix of its entries), never a later write without an
//!    earlier one.
//! 3. **Snapshots are atomic and durable on return.**
//!    [`LogStorage::install_snapshot`] and [`LogStorage::compact`] first
//!    make earlier writes durable; after a crash the old or the new
//!    snapshot is found whole, never a mix.
//! 4. **`advance` only after `sync`.** Call [`Node::advance`] with a Ready
//!    only once its snapshot, entries and hard state are written and
//!    synced ([`LogStorage::persist`] does all of it in the right order).
//!    Messages may be sent before: the node holds back every reply that
//!    promises durable state (a granted vote, an acknowledged append)
//!    until the `advance` that says it is durable.
//! 5. **Reopen recovers a state the rules allow.** Reopened after a
//!    crash, a storage reads back its synced state plus at most a prefix
//!    of the unsynced writes, and a node started on it
//!    ([`Node::new`](crate::Node::new)) resumes safely.
//!
//! [`Node::advance`]: crate::Node::advance

use crate::config::Configuration;
use crate::error::StorageError;
use crate::ready::Ready;
use crate::types::{Entry, HardState, LogIndex, Term};

/// Implements every read of [`Storage`] by handing it to the field named,
/// for wrappers whose reads are the inner storage's.
macro_rules! forward_reads {
    ($field:ident) => {
        fn initial_state(&self) -> Result<$crate::storage::InitialState, $crate::StorageError> {
            self.$field.initial_state()
        }

        fn entries(
            &self,
            low: $crate::LogIndex,
            high: $crate::LogIndex,
            max_bytes: u64,
            out: &mut Vec<$crate::Entry>,
        ) -> Result<(), $crate::StorageError> {
            self.$field.entries(low, high, max_bytes, out)
        }

        fn term(&self, index: $crate::LogIndex) -> Result<$crate::Term, $crate::StorageError> {
            self.$field.term(index)
        }

        fn first_index(&self) -> Result<$crate::LogIndex, $crate::StorageError> {
            self.$field.first_index()
        }

        fn last_index(&self) -> Result<$crate::LogIndex, $crate::StorageError> {
            self.$field.last_index()
        }

        fn snapshot_meta(&self) -> Result<$crate::storage::SnapshotMeta, $crate::StorageError> {
            self.$field.snapshot_meta()
        }

        fn snapshot(&self) -> Result<$crate::storage::Snapshot, $crate::StorageError> {
            self.$field.snapshot()
        }
    };
}

mod crash;
pub use crash::CrashStorage;
#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;
#[cfg(feature = "durable")]
mod crc;
#[cfg(feature = "durable")]
#[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
pub mod segmented;

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// What a node starts from: its hard state and membership.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct InitialState {
    /// Term, vote and commit index as last persisted.
    pub hard_state: HardState,
    /// The membership as last persisted.
    pub configuration: Configuration,
}

/// Describes the snapshot that replaces the log prefix up to `index`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct SnapshotMeta {
    /// The last log index the snapshot covers.
    pub index: LogIndex,
    /// The term of that entry.
    pub term: Term,
    /// The membership as of `index`.
    pub configuration: Configuration,
}

/// A snapshot of the application state: the metadata saying which log
/// prefix it replaces, and the application's serialized state, opaque to
/// Raft (thesis §5.1).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Snapshot {
    /// Which prefix of the log the snapshot replaces.
    pub meta: SnapshotMeta,
    /// The application state as of `meta.index`.
    pub data: bytes::Bytes,
}

/// Read access to a node's stable storage.
///
/// The log stored is the entries in `first_index()..=last_index()`, preceded
/// by the snapshot described by [`Storage::snapshot_meta`] (index 0, term 0
/// for a fresh log).
pub trait Storage {
    /// The persisted hard state and configuration.
    fn initial_state(&self) -> Result<InitialState, StorageError>;

    /// Appends the entries with indices in `[low, high)` to `out`, stopping
    /// early once their total size exceeds `max_bytes` (but always at least
    /// one entry when the range is non-empty).
    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
        out: &mut Vec<Entry>,
    ) -> Result<(), StorageError>;

    /// The term of the entry at `index`, which may be the snapshot's index.
    fn term(&self, index: LogIndex) -> Result<Term, StorageError>;

    /// The first index stored as an entry (the snapshot's index + 1).
    fn first_index(&self) -> Result<LogIndex, StorageError>;

    /// The last index stored (the snapshot's index if no entries follow it).
    fn last_index(&self) -> Result<LogIndex, StorageError>;

    /// The metadata of the latest snapshot.
    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError>;

    /// The latest snapshot with its data, which a leader sends to followers
    /// that need entries it compacted (InstallSnapshot).
    fn snapshot(&self) -> Result<Snapshot, StorageError>;
}

/// Write access to a node's stable storage, under the
/// [persistence contract](crate::storage#the-persistence-contract): writes are
/// ordered, durable once [`sync`](LogStorage::sync) returns, and a Ready is
/// advanced only after its writes are synced.
///
/// Modelled on etcd-raft's `MemoryStorage` (`Append`, `SetHardState`,
/// `ApplySnapshot`, `Compact`) with openraft's explicit flush: appends and
/// hard state are cheap buffered writes, `sync` is the one point that
/// pays for durability, so one `fsync` covers a whole Ready.
pub trait LogStorage: Storage {
    /// Appends `entries` (contiguous, ascending), first discarding every
    /// stored entry at or after the first one's index: they conflict with
    /// the leader's log. Entries a snapshot covers are skipped. Appending
    /// past `last_index() + 1` is refused with [`StorageError::Gap`] and
    /// changes nothing. Not durable until [`sync`](LogStorage::sync).
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;

    /// [`append`](LogStorage::append) for entries the caller gives away,
    /// so a store that keeps them in memory can move them instead of
    /// cloning. [`persist`](LogStorage::persist) uses it. The default
    /// delegates to `append`.
    fn append_owned(&mut self, entries: Vec<Entry>) -> Result<(), StorageError> {
        self.append(&entries)
    }

    /// Stores the hard state (term, vote, commit). Not durable until
    /// [`sync`](LogStorage::sync).
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError>;

    /// Replaces the whole log by a snapshot a leader sent
    /// ([`Ready::snapshot`]) and raises the stored commit index to its
    /// index. Durable and atomic when it returns.
    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError>;

    /// Makes `data`, the state machine as of the applied `index`, the
    /// latest snapshot and discards the entries it covers (log compaction,
    /// thesis §5.1). Compacting at or below the current snapshot does
    /// nothing. Durable and atomic when it returns.
    fn compact(&mut self, index: LogIndex, data: bytes::Bytes) -> Result<(), StorageError>;

    /// Makes every earlier write durable.
    fn sync(&mut self) -> Result<(), StorageError>;

    /// Persists what `ready` asks for, in the order the contract needs:
    /// its snapshot (taken out of the Ready and handed back in
    /// [`Persisted::snapshot`] for the state machine to restore from),
    /// then its entries (moved out of the Ready with
    /// [`append_owned`](LogStorage::append_owned): afterwards
    /// [`Ready::entries`] is empty) and hard state, then one `sync`. After
    /// it returns the Ready may be applied and passed to
    /// [`Node::advance`](crate::Node::advance).
    fn persist(&mut self, ready: &mut Ready) -> Result<Persisted, StorageError> {
        let snapshot = ready.take_snapshot();
        if let Some(snapshot) = &snapshot {
            self.install_snapshot(snapshot.clone())?;
        }
        let entries = ready.take_entries();
        let wrote = !entries.is_empty() || ready.hard_state().is_some();
        self.append_owned(entries)?;
        if let Some(hard_state) = ready.hard_state() {
            self.set_hard_state(hard_state)?;
        }
        if wrote {
            self.sync()?;
        }
        Ok(Persisted { snapshot })
    }
}

/// What [`LogStorage::persist`] made durable and the application still has
/// to act on.
#[derive(Debug)]
#[must_use = "a snapshot from the leader must be restored into the state machine"]
pub struct Persisted {
    /// The leader's snapshot the Ready carried, now stored: restore the
    /// state machine from its `data` before applying the Ready's
    /// committed entries.
    pub snapshot: Option<Snapshot>,
}

/// A [`Storage`] kept in memory. "Durable" means "written here"; the
/// simulator keeps a node's `MemStorage` across a crash and drops everything
/// else, which models a disk.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: SnapshotMeta,
    /// The application state as of `snapshot.index`.
    snapshot_data: bytes::Bytes,
    /// The entries after `snapshot.index`.
    entries: Vec<Entry>,
}

impl MemStorage {
    /// An empty log for a cluster with the given membership.
    pub fn new(configuration: Configuration) -> Self {
        MemStorage {
            snapshot: SnapshotMeta {
                configuration,
                ..SnapshotMeta::default()
            },
            ..MemStorage::default()
        }
    }

    /// Persists the hard state.
    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// The persisted hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Appends entries, first discarding any stored entries at or after the
    /// first new index (they conflict with the leader's log). Entries the
    /// snapshot already covers are skipped.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let skip = self.make_room(first.index, entries.len())?;
        if let Some(rest) = entries.get(skip..) {
            self.entries.extend_from_slice(rest);
        }
        Ok(())
    }

    /// [`append`](MemStorage::append) for entries the caller gives away:
    /// they are moved into the log, not cloned. Same truncation and gap
    /// rules.
    pub fn append_owned(&mut self, mut entries: Vec<Entry>) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let skip = self.make_room(first.index, entries.len())?;
        if skip >= entries.len() {
            return Ok(());
        }
        if skip == 0 && self.entries.is_empty() {
            // Nothing stored after the snapshot: the batch becomes the log.
            self.entries = entries;
        } else {
            self.entries.extend(entries.drain(skip..));
        }
        Ok(())
    }

    /// Checks that `len` entries starting at `first` leave no gap, discards
    /// the stored suffix they replace and returns how many of them the
    /// snapshot already covers (to be skipped). If the snapshot covers all
    /// of them nothing is discarded. Changes nothing on error.
    fn make_room(&mut self, first: LogIndex, len: usize) -> Result<usize, StorageError> {
        let last = self.last();
        if first > last.next() {
            return Err(StorageError::Gap { index: first, last });
        }
        let offset = self.snapshot.index.0;
        let skip =
            usize::try_from(offset.saturating_sub(first.0.saturating_sub(1))).unwrap_or(usize::MAX);
        if skip >= len {
            return Ok(skip);
        }
        // The first entry kept (`first + skip`) lands at this position.
        let keep_from = first.0.saturating_add(skip as u64);
        self.entries
            .truncate(keep_from.saturating_sub(offset.saturating_add(1)) as usize);
        Ok(skip)
    }

    /// Records `data`, the application state as of the applied `index`, as
    /// the latest snapshot and discards the entries it covers (log
    /// compaction, thesis §5.1). Followers that need a discarded entry are
    /// sent the snapshot instead (InstallSnapshot). Compact only up to the
    /// applied index, so `data` reflects exactly the entries up to `index`.
    pub fn compact(&mut self, index: LogIndex, data: bytes::Bytes) -> Result<(), StorageError> {
        if index <= self.snapshot.index {
            return Ok(());
        }
        let term = self.term(index)?;
        let drop = (index.0 - self.snapshot.index.0) as usize;
        // The snapshot carries the configuration as of its index.
        if let Some(c) = self
            .entries
            .get(..drop)
            .unwrap_or_default()
            .iter()
            .rev()
            .find_map(Entry::configuration)
        {
            self.snapshot.configuration = c;
        }
        self.entries.drain(..drop);
        self.snapshot.index = index;
        self.snapshot.term = term;
        self.snapshot_data = data;
        Ok(())
    }

    /// Persists a snapshot received from the leader
    /// ([`Ready::snapshot`](crate::Ready::snapshot)): it replaces the whole
    /// log, whose entries conflict with or precede it.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) {
        self.entries.clear();
        self.hard_state.commit = self.hard_state.commit.max(snapshot.meta.index);
        self.snapshot = snapshot.meta;
        self.snapshot_data = snapshot.data;
    }

    /// Every stored entry, oldest first.
    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }

    fn last(&self) -> LogIndex {
        self.snapshot.index.plus(self.entries.len() as u64)
    }

    fn position(&self, index: LogIndex) -> Result<usize, StorageError> {
        if index <= self.snapshot.index {
            return Err(StorageError::Compacted {
                index,
                first: self.snapshot.index.next(),
            });
        }
        let last = self.last();
        if index > last {
            return Err(StorageError::Unavailable { index, last });
        }
        Ok((index.0 - self.snapshot.index.0 - 1) as usize)
    }
}

impl Storage for MemStorage {
    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Ok(Snapshot {
            meta: self.snapshot.clone(),
            data: self.snapshot_data.clone(),
        })
    }

    fn initial_state(&self) -> Result<InitialState, StorageError> {
        Ok(InitialState {
            hard_state: self.hard_state,
            configuration: self.snapshot.configuration.clone(),
        })
    }

    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
        out: &mut Vec<Entry>,
    ) -> Result<(), StorageError> {
        if low >= high {
            return Ok(());
        }
        let start = self.position(low)?;
        let end = self.position(high.prev())? + 1;
        let mut size = 0u64;
        for entry in self.entries.get(start..end).unwrap_or_default() {
            size += entry.size();
            if size > max_bytes && size != entry.size() {
                break;
            }
            out.push(entry.clone());
        }
        Ok(())
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        if index == self.snapshot.index {
            return Ok(self.snapshot.term);
        }
        let pos = self.position(index)?;
        self.entries
            .get(pos)
            .map(|e| e.term)
            .ok_or(StorageError::Unavailable {
                index,
                last: self.last(),
            })
    }

    fn first_index(&self) -> Result<LogIndex, StorageError> {
        Ok(self.snapshot.index.next())
    }

    fn last_index(&self) -> Result<LogIndex, StorageError> {
        Ok(self.last())
    }

    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError> {
        Ok(self.snapshot.clone())
    }
}

/// In memory every write is durable at once: a [`MemStorage`] kept across
/// a crash models a disk that never loses a write; wrap it in
/// [`CrashStorage`] for one that does.
impl LogStorage for MemStorage {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        MemStorage::append(self, entries)
    }

    fn append_owned(&mut self, entries: Vec<Entry>) -> Result<(), StorageError> {
        MemStorage::append_owned(self, entries)
    }

    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        MemStorage::set_hard_state(self, hard_state);
        Ok(())
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.apply_snapshot(snapshot);
        Ok(())
    }

    fn compact(&mut self, index: LogIndex, data: bytes::Bytes) -> Result<(), StorageError> {
        MemStorage::compact(self, index, data)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn e(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            data: Bytes::from_static(b"x"),
        }
    }

    fn terms(s: &MemStorage) -> Vec<u64> {
        s.all_entries().iter().map(|e| e.term.0).collect()
    }

    #[test]
    fn append_truncates_conflicting_suffix() {
        let mut s = MemStorage::default();
        s.append(&[e(1, 1), e(2, 1), e(3, 1)]).unwrap();
        s.append(&[e(2, 2)]).unwrap();
        assert_eq!(terms(&s), vec![1, 2]);
        assert_eq!(s.last_index().unwrap(), LogIndex(2));
        assert!(matches!(
            s.append(&[e(4, 2)]),
            Err(StorageError::Gap { .. })
        ));
    }

    #[test]
    fn compaction_moves_the_first_index() {
        let mut s = MemStorage::default();
        s.append(&[e(1, 1), e(2, 1), e(3, 2)]).unwrap();
        s.compact(LogIndex(2), bytes::Bytes::new()).unwrap();
        assert_eq!(s.first_index().unwrap(), LogIndex(3));
        assert_eq!(s.term(LogIndex(2)).unwrap(), Term(1));
        assert!(matches!(
            s.term(LogIndex(1)),
            Err(StorageError::Compacted { .. })
        ));
        // Entries the snapshot covers are skipped, the rest appended.
        s.append(&[e(2, 1), e(3, 2), e(4, 2)]).unwrap();
        assert_eq!(terms(&s), vec![2, 2]);
    }

    #[test]
    fn entries_respects_the_size_budget_but_returns_one() {
        let mut s = MemStorage::default();
        s.append(&[e(1, 1), e(2, 1), e(3, 1)]).unwrap();
        let mut out = Vec::new();
        s.entries(LogIndex(1), LogIndex(4), 0, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        out.clear();
        s.entries(LogIndex(1), LogIndex(4), 34, &mut out).unwrap();
        assert_eq!(out.len(), 2, "17 bytes each");
        out.clear();
        assert!(
            s.entries(LogIndex(2), LogIndex(5), u64::MAX, &mut out)
                .is_err()
        );
    }

    proptest::proptest! {
        /// `append` and `append_owned` both follow the contract's model:
        /// a gap is refused and changes nothing; entries a snapshot covers
        /// are skipped; the rest replace the stored suffix from their first
        /// index on. (The model is a plain list of (index, term).)
        #[test]
        fn append_and_append_owned_follow_the_model(
            stored in 0u64..12,
            compact_at in 0u64..12,
            first in 1u64..16,
            len in 0usize..8,
            term in 1u64..4,
        ) {
            let mut base = MemStorage::default();
            let initial: Vec<Entry> = (1..=stored).map(|i| e(i, 1)).collect();
            base.append(&initial).unwrap();
            let snap = compact_at.min(stored);
            base.compact(LogIndex(snap), Bytes::new()).unwrap();
            let batch: Vec<Entry> = (first..first + len as u64).map(|i| e(i, term)).collect();

            let mut model: Vec<(u64, u64)> = (snap + 1..=stored).map(|i| (i, 1)).collect();
            let gap = len > 0 && first > stored + 1;
            if !gap {
                let kept: Vec<(u64, u64)> =
                    batch.iter().filter(|x| x.index.0 > snap).map(|x| (x.index.0, x.term.0)).collect();
                if let Some(&(from, _)) = kept.first() {
                    model.retain(|&(i, _)| i < from);
                    model.extend(kept);
                }
            }

            let mut by_ref = base.clone();
            let mut owned = base.clone();
            let r1 = by_ref.append(&batch);
            let r2 = owned.append_owned(batch.clone());
            proptest::prop_assert_eq!(r1.is_err(), gap);
            proptest::prop_assert_eq!(r2.is_err(), gap);
            for s in [&by_ref, &owned] {
                let got: Vec<(u64, u64)> =
                    s.all_entries().iter().map(|x| (x.index.0, x.term.0)).collect();
                proptest::prop_assert_eq!(&got, &model);
                proptest::prop_assert_eq!(s.first_index().unwrap(), LogIndex(snap + 1));
            }
        }
    }
}
