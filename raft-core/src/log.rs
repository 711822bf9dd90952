//! The node's view of its log: the durable prefix in [`Storage`] followed by
//! entries not yet acknowledged as persisted, kept in memory.

use crate::error::Error;
use crate::error::StorageError;
use crate::storage::{SnapshotMeta, Storage};
use crate::types::{Entry, LogIndex, Term};
use std::collections::VecDeque;

/// Invariant: `unstable` holds exactly the entries `(persisted, last]`, and
/// storage holds the entries up to `persisted` (it may still hold stale
/// entries after `persisted` that a pending write will overwrite).
#[derive(Debug)]
pub(crate) struct RaftLog<S> {
    pub(crate) storage: S,
    unstable: VecDeque<Entry>,
    /// Last index durable in storage and still part of this log.
    persisted: LogIndex,
    /// Last index handed to the application in a `Ready` for persisting.
    handed: LogIndex,
    last_term: Term,
    /// Highest index known committed.
    pub(crate) committed: LogIndex,
    /// Highest index the application acknowledged as applied.
    pub(crate) applied: LogIndex,
    /// Highest index handed to the application for applying.
    apply_handed: LogIndex,
    /// A snapshot from the leader that replaced this log and is not yet
    /// durable: storage still holds the old log, which must not be read.
    restoring: Option<SnapshotMeta>,
}

impl<S: Storage> RaftLog<S> {
    pub(crate) fn new(storage: S, committed: LogIndex) -> Result<Self, Error> {
        let last = storage.last_index()?;
        let last_term = storage.term(last)?;
        let first = storage.first_index()?;
        if committed > last {
            return Err(Error::InconsistentStorage(
                "hard state commit index is past the end of the log",
            ));
        }
        // Entries covered by a snapshot count as applied by restoring it.
        let applied = first.prev();
        Ok(RaftLog {
            storage,
            unstable: VecDeque::new(),
            persisted: last,
            handed: last,
            last_term,
            committed: committed.max(applied),
            applied,
            apply_handed: applied,
            restoring: None,
        })
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.persisted.plus(self.unstable.len() as u64)
    }

    pub(crate) fn last_term(&self) -> Term {
        self.last_term
    }

    pub(crate) fn persisted(&self) -> LogIndex {
        self.persisted
    }

    /// The term of the entry at `index`, or `None` past the end of the log.
    pub(crate) fn term(&self, index: LogIndex) -> Result<Option<Term>, Error> {
        if index > self.last_index() {
            return Ok(None);
        }
        if index > self.persisted {
            let pos = (index.0 - self.persisted.0 - 1) as usize;
            return Ok(self.unstable.get(pos).map(|e| e.term));
        }
        if let Some(meta) = &self.restoring {
            return match index == meta.index {
                true => Ok(Some(meta.term)),
                false => Err(self.compacted(index)),
            };
        }
        Ok(Some(self.storage.term(index)?))
    }

    fn compacted(&self, index: LogIndex) -> Error {
        Error::Storage(StorageError::Compacted {
            index,
            first: self.first_index().unwrap_or(index.next()),
        })
    }

    /// The first index still held as an entry (after the latest snapshot,
    /// durable or being restored).
    pub(crate) fn first_index(&self) -> Result<LogIndex, Error> {
        match &self.restoring {
            Some(meta) => Ok(meta.index.next()),
            None => Ok(self.storage.first_index()?),
        }
    }

    /// Whether a snapshot from the leader is waiting to become durable.
    pub(crate) fn is_restoring(&self) -> bool {
        self.restoring.is_some()
    }

    /// Replaces the whole log by the leader's snapshot, which ends after
    /// the commit index. Storage keeps the old log until the application
    /// persists the snapshot and calls [`RaftLog::snapshot_persisted`].
    pub(crate) fn restore(&mut self, meta: SnapshotMeta) {
        self.unstable.clear();
        self.persisted = meta.index;
        self.handed = meta.index;
        self.last_term = meta.term;
        self.committed = meta.index;
        self.apply_handed = meta.index;
        self.restoring = Some(meta);
    }

    /// The snapshot at `index` restored by [`RaftLog::restore`] is durable
    /// and applied.
    pub(crate) fn snapshot_persisted(&mut self, index: LogIndex) {
        if self.restoring.as_ref().is_some_and(|m| m.index == index) {
            self.restoring = None;
        }
        self.applied = self.applied.max(index);
    }

    pub(crate) fn matches(&self, index: LogIndex, term: Term) -> Result<bool, Error> {
        Ok(self.term(index)? == Some(term))
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as
    /// up to date as this one (§5.4.1).
    pub(crate) fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term
            || (last_term == self.last_term && last_index >= self.last_index())
    }

    /// Appends one entry at the end (the leader's own proposals).
    pub(crate) fn push(&mut self, entry: Entry) {
        self.last_term = entry.term;
        self.unstable.push_back(entry);
    }

    /// Appends entries that start at or before `last_index() + 1`,
    /// discarding the suffix they replace. Returns the first replaced index,
    /// if any entry was replaced.
    pub(crate) fn truncate_and_append(&mut self, entries: Vec<Entry>) -> Option<LogIndex> {
        let first = entries.first()?.index;
        let replaced = (first <= self.last_index()).then_some(first);
        if first <= self.persisted {
            self.unstable.clear();
            self.persisted = first.prev();
        } else {
            self.unstable
                .truncate((first.0 - self.persisted.0 - 1) as usize);
        }
        self.handed = self.handed.min(first.prev());
        if let Some(last) = entries.last() {
            self.last_term = last.term;
        }
        self.unstable.extend(entries);
        replaced
    }

    /// Appends to `out` the entries from `low` to the end, up to
    /// `max_bytes` (at least one).
    pub(crate) fn entries_from(
        &self,
        low: LogIndex,
        max_bytes: u64,
        out: &mut Vec<Entry>,
    ) -> Result<(), Error> {
        let last = self.last_index();
        if low > last {
            return Ok(());
        }
        if low <= self.persisted {
            if self.restoring.is_some() {
                return Err(self.compacted(low));
            }
            self.storage
                .entries(low, self.persisted.next(), max_bytes, out)?;
            if out.last().is_none_or(|e| e.index < self.persisted) {
                // The budget ran out inside the stored part.
                return Ok(());
            }
        }
        let mut size: u64 = out.iter().map(Entry::size).sum();
        let start = low.0.saturating_sub(self.persisted.0 + 1) as usize;
        for entry in self.unstable.range(start.min(self.unstable.len())..) {
            size += entry.size();
            if size > max_bytes && !out.is_empty() {
                break;
            }
            out.push(entry.clone());
        }
        Ok(())
    }

    /// The entries not yet handed out for persisting; marks them handed.
    pub(crate) fn take_unpersisted(&mut self) -> Vec<Entry> {
        let start = (self.handed.0 - self.persisted.0) as usize;
        let entries: Vec<Entry> = self.unstable.range(start..).cloned().collect();
        self.handed = self.last_index();
        entries
    }

    /// The application made the log durable up to `index` (clamped by the
    /// caller to what is still part of the log).
    pub(crate) fn persisted_to(&mut self, index: LogIndex) {
        if index <= self.persisted {
            return;
        }
        let index = index.min(self.last_index());
        let n = (index.0 - self.persisted.0) as usize;
        self.unstable.drain(..n);
        self.persisted = index;
    }

    pub(crate) fn commit_to(&mut self, index: LogIndex) -> bool {
        let index = index.min(self.last_index());
        if index > self.committed {
            self.committed = index;
            true
        } else {
            false
        }
    }

    /// Committed entries that are durable here and not yet handed out for
    /// applying; marks them handed. Returns the empty vector without
    /// allocating when there are none.
    pub(crate) fn take_committed(&mut self, max_bytes: u64) -> Result<Vec<Entry>, Error> {
        let high = self.committed.min(self.persisted);
        let mut out = Vec::new();
        if high > self.apply_handed {
            self.storage
                .entries(self.apply_handed.next(), high.next(), max_bytes, &mut out)?;
            if let Some(last) = out.last() {
                self.apply_handed = last.index;
            }
        }
        Ok(out)
    }

    /// A restart whose state machine already holds the log up to `index`
    /// (checked by the caller to lie within `[first - 1, committed]`).
    pub(crate) fn resume_applied(&mut self, index: LogIndex) {
        self.applied = index;
        self.apply_handed = index;
    }

    pub(crate) fn applied_to(&mut self, index: LogIndex) {
        self.applied = self.applied.max(index);
    }

    pub(crate) fn has_unhanded_entries(&self) -> bool {
        self.handed < self.last_index()
    }

    pub(crate) fn has_committed_to_hand(&self) -> bool {
        self.committed.min(self.persisted) > self.apply_handed
    }
}
