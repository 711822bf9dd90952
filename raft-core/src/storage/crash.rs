//! A storage that forgets what it was not told to sync: the disk of a
//! simulated machine that loses power.

use super::{LogStorage, MemStorage, Snapshot, Storage};
use crate::error::StorageError;
use crate::types::{Entry, HardState, LogIndex};

/// A write not yet synced.
#[derive(Clone, Debug)]
enum Write {
    Append(Vec<Entry>),
    HardState(HardState),
}

/// Wraps a [`LogStorage`] and, on [`crash`](CrashStorage::crash), loses
/// what the [persistence contract](crate::storage#the-persistence-contract) allows a
/// real disk to lose: the unsynced writes after a random prefix of them,
/// the last kept append possibly torn to a prefix of its entries (the torn
/// last record of a log file). Synced writes, installed snapshots and
/// compactions always survive.
///
/// Reads see every write at once, synced or not, as from a page cache. The
/// choices a crash makes come from the seed, so a simulation stays
/// replayable.
#[derive(Clone, Debug)]
pub struct CrashStorage<S = MemStorage> {
    /// What reads see.
    live: S,
    /// What survives a crash.
    durable: S,
    /// Writes since the last sync, oldest first.
    pending: Vec<Write>,
    rng: fastrand::Rng,
    crashes: u64,
    lost: u64,
    torn: u64,
}

impl<S: LogStorage + Clone> CrashStorage<S> {
    /// Wraps `inner`, whose current state counts as durable.
    pub fn new(inner: S, seed: u64) -> Self {
        CrashStorage {
            durable: inner.clone(),
            live: inner,
            pending: Vec::new(),
            rng: fastrand::Rng::with_seed(seed),
            crashes: 0,
            lost: 0,
            torn: 0,
        }
    }

    /// Simulates a crash: keeps a random prefix of the unsynced writes
    /// (tearing the last kept append at a random entry) and drops the
    /// rest; reads then see what a restart would recover.
    pub fn crash(&mut self) -> Result<(), StorageError> {
        self.crashes += 1;
        let pending = std::mem::take(&mut self.pending);
        let keep = self.rng.usize(0..=pending.len());
        self.lost += (pending.len() - keep) as u64;
        let mut writes = pending.into_iter();
        for write in writes.by_ref().take(keep) {
            apply(&mut self.durable, &write)?;
        }
        // The append being written when the power went is torn: the
        // entries before the tear reached the disk, the rest did not.
        if let Some(Write::Append(entries)) = writes.next() {
            let part = self.rng.usize(0..entries.len());
            self.torn += 1;
            self.durable
                .append(entries.get(..part).unwrap_or_default())?;
        }
        self.live = self.durable.clone();
        Ok(())
    }

    /// How many writes are not yet synced.
    pub fn unsynced(&self) -> usize {
        self.pending.len()
    }

    /// How many crashes were simulated, how many unsynced writes they lost
    /// and how many appends they tore.
    pub fn crash_stats(&self) -> (u64, u64, u64) {
        (self.crashes, self.lost, self.torn)
    }

    /// The state a crash now would certainly keep (the synced state).
    pub fn durable(&self) -> &S {
        &self.durable
    }
}

fn apply<S: LogStorage>(storage: &mut S, write: &Write) -> Result<(), StorageError> {
    match write {
        Write::Append(entries) => storage.append(entries),
        Write::HardState(hs) => storage.set_hard_state(*hs),
    }
}

impl<S: LogStorage + Clone> Storage for CrashStorage<S> {
    forward_reads!(live);
}

impl<S: LogStorage + Clone> LogStorage for CrashStorage<S> {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.live.append(entries)?;
        self.pending.push(Write::Append(entries.to_vec()));
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.live.set_hard_state(hard_state)?;
        self.pending.push(Write::HardState(hard_state));
        Ok(())
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.sync()?;
        self.durable.install_snapshot(snapshot.clone())?;
        self.live.install_snapshot(snapshot)
    }

    fn compact(&mut self, index: LogIndex, data: bytes::Bytes) -> Result<(), StorageError> {
        self.sync()?;
        self.durable.compact(index, data.clone())?;
        self.live.compact(index, data)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        for write in std::mem::take(&mut self.pending) {
            apply(&mut self.durable, &write)?;
        }
        self.live.sync()?;
        self.durable.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Configuration;
    use crate::storage::SnapshotMeta;
    use crate::types::{NodeId, Term};
    use bytes::Bytes;

    fn e(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            data: Bytes::from(format!("{index}/{term}")),
        }
    }

    #[test]
    fn synced_writes_survive_and_unsynced_ones_are_a_torn_prefix() {
        let mut kept_all = false;
        let mut lost_all = false;
        let mut torn = false;
        for seed in 0..64 {
            let mut s = CrashStorage::new(MemStorage::new(Configuration::new([NodeId(1)])), seed);
            s.append(&[e(1, 1), e(2, 1)]).unwrap();
            s.sync().unwrap();
            s.append(&[e(3, 1), e(4, 1), e(5, 1)]).unwrap();
            let hs = HardState {
                term: Term(2),
                vote: Some(NodeId(1)),
                commit: LogIndex(2),
            };
            s.set_hard_state(hs).unwrap();
            s.crash().unwrap();
            let last = s.last_index().unwrap().0;
            assert!((2..=5).contains(&last), "seed {seed}: last {last}");
            let mut out = Vec::new();
            s.entries(LogIndex(1), LogIndex(last + 1), u64::MAX, &mut out)
                .unwrap();
            assert_eq!(out, (1..=last).map(|i| e(i, 1)).collect::<Vec<_>>());
            let got = s.initial_state().unwrap().hard_state;
            // The hard state was written after the append: kept only with it.
            assert!(got == HardState::default() || (got == hs && last == 5));
            kept_all |= got == hs;
            lost_all |= last == 2;
            torn |= (3..5).contains(&last);
        }
        assert!(kept_all && lost_all && torn, "{kept_all} {lost_all} {torn}");
    }

    #[test]
    fn snapshots_are_durable_at_once() {
        let mut s = CrashStorage::new(MemStorage::default(), 7);
        s.append(&[e(1, 1), e(2, 1), e(3, 1)]).unwrap();
        s.compact(LogIndex(2), Bytes::from_static(b"sm")).unwrap();
        s.append(&[e(4, 1)]).unwrap();
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                index: LogIndex(9),
                term: Term(3),
                configuration: Configuration::default(),
            },
            data: Bytes::from_static(b"leader"),
        };
        s.install_snapshot(snapshot.clone()).unwrap();
        s.crash().unwrap();
        assert_eq!(s.snapshot().unwrap(), snapshot);
        assert_eq!(s.last_index().unwrap(), LogIndex(9));
        assert_eq!(s.initial_state().unwrap().hard_state.commit, LogIndex(9));
    }
}
