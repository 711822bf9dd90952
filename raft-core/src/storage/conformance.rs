//! A test suite that checks a [`LogStorage`] against the
//! [persistence contract](crate::storage#the-persistence-contract), for the tests
//! of your own storage (feature `conformance`), in the spirit of
//! openraft's `testing::Suite`.
//!
//! [`check`] takes two closures: one creates an empty storage for a boot
//! configuration, the other *reopens* a storage as a restart after a crash
//! would (drop it without syncing and open its files again). It checks
//! ordering, truncation on conflict, the hard state, what a crash before
//! `sync` may and may not lose, compaction, snapshot install, the read
//! budget, and that every one of them survives a reopen.
//!
//! ```
//! use quorate_raft_core::{MemStorage, storage::conformance};
//!
//! // An in-memory storage loses nothing on a "crash": reopening is the identity.
//! let report = conformance::check(MemStorage::new, |s| s).unwrap();
//! assert!(report.checks > 20);
//! ```

use super::{LogStorage, Snapshot, SnapshotMeta};
use crate::config::Configuration;
use crate::error::StorageError;
use crate::types::{Entry, HardState, LogIndex, NodeId, Term};
use bytes::Bytes;
use std::fmt;

/// A failed check: which one, and what was seen.
#[derive(Debug)]
pub struct Failure {
    /// The contract clause checked.
    pub check: &'static str,
    /// What the storage did instead.
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage conformance: {}: {}", self.check, self.detail)
    }
}

impl std::error::Error for Failure {}

/// What [`check`] verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// How many assertions held.
    pub checks: usize,
}

struct Checker {
    check: &'static str,
    checks: usize,
}

impl Checker {
    fn that(&mut self, ok: bool, detail: impl FnOnce() -> String) -> Result<(), Failure> {
        self.checks += 1;
        match ok {
            true => Ok(()),
            false => Err(Failure {
                check: self.check,
                detail: detail(),
            }),
        }
    }

    fn ok<T>(&mut self, result: Result<T, StorageError>) -> Result<T, Failure> {
        result.map_err(|e| Failure {
            check: self.check,
            detail: format!("storage error: {e}"),
        })
    }

    fn entries<S: LogStorage>(&mut self, s: &S) -> Result<Vec<Entry>, Failure> {
        let (first, last) = (self.ok(s.first_index())?, self.ok(s.last_index())?);
        let mut out = Vec::new();
        self.ok(s.entries(first, last.next(), u64::MAX, &mut out))?;
        Ok(out)
    }

    fn log_is<S: LogStorage>(&mut self, s: &S, want: &[Entry]) -> Result<(), Failure> {
        let got = self.entries(s)?;
        self.that(got == want, || {
            format!("log holds {:?}, expected {:?}", ids(&got), ids(want))
        })
    }
}

fn ids(entries: &[Entry]) -> Vec<(u64, u64)> {
    entries.iter().map(|e| (e.index.0, e.term.0)).collect()
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        data: Bytes::from(format!("entry {index} of term {term}")),
    }
}

fn entries(indices: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    indices.map(|i| entry(i, term)).collect()
}

/// Runs the suite on storages made by `create` and reopened by `reopen`.
/// `reopen` must behave as a crash and a restart: it may not sync what the
/// suite left unsynced.
pub fn check<S: LogStorage>(
    mut create: impl FnMut(Configuration) -> S,
    mut reopen: impl FnMut(S) -> S,
) -> Result<Report, Failure> {
    let boot = Configuration::new([NodeId(1), NodeId(2), NodeId(3)]);
    let mut c = Checker {
        check: "a fresh storage is empty",
        checks: 0,
    };
    let mut s = create(boot.clone());
    let (first, last) = (c.ok(s.first_index())?, c.ok(s.last_index())?);
    c.that(first == LogIndex(1) && last == LogIndex(0), || {
        format!("first {first:?}, last {last:?}")
    })?;
    let term = c.ok(s.term(LogIndex(0)))?;
    c.that(term == Term(0), || format!("term of index 0 is {term:?}"))?;
    let initial = c.ok(s.initial_state())?;
    c.that(initial.configuration == boot, || {
        format!(
            "boot configuration came back as {:?}",
            initial.configuration
        )
    })?;

    c.check = "appends are ordered and survive a reopen once synced";
    c.ok(s.append(&entries(1..=3, 1)))?;
    c.ok(s.append(&entries(4..=5, 1)))?;
    c.log_is(&s, &entries(1..=5, 1))?;
    c.ok(s.sync())?;
    s = reopen(s);
    c.log_is(&s, &entries(1..=5, 1))?;
    let term = c.ok(s.term(LogIndex(5)))?;
    c.that(term == Term(1), || format!("term of 5 is {term:?}"))?;

    c.check = "an append truncates the conflicting suffix";
    c.ok(s.append(&[entry(3, 2)]))?;
    let mut want = entries(1..=2, 1);
    want.push(entry(3, 2));
    c.log_is(&s, &want)?;
    c.ok(s.sync())?;
    s = reopen(s);
    c.log_is(&s, &want)?;

    c.check = "an append past the end is refused and changes nothing";
    let gap = s.append(&[entry(9, 2)]);
    c.that(matches!(gap, Err(StorageError::Gap { .. })), || {
        format!("append at 9 after 3 gave {gap:?}")
    })?;
    c.log_is(&s, &want)?;

    c.check = "the latest hard state survives a reopen once synced";
    let hs1 = HardState {
        term: Term(2),
        vote: Some(NodeId(2)),
        commit: LogIndex(1),
    };
    let hs2 = HardState {
        term: Term(2),
        vote: Some(NodeId(2)),
        commit: LogIndex(3),
    };
    c.ok(s.set_hard_state(hs1))?;
    c.ok(s.set_hard_state(hs2))?;
    c.ok(s.sync())?;
    s = reopen(s);
    let got = c.ok(s.initial_state())?.hard_state;
    c.that(got == hs2, || {
        format!("hard state {got:?}, expected {hs2:?}")
    })?;

    c.check = "a crash keeps what was synced and at most a prefix of the rest";
    let hs3 = HardState {
        term: Term(3),
        vote: None,
        commit: LogIndex(3),
    };
    let tail = entries(4..=6, 2);
    c.ok(s.append(&tail))?;
    c.ok(s.set_hard_state(hs3))?;
    s = reopen(s);
    let got = c.entries(&s)?;
    let mut allowed = want.clone();
    allowed.extend(tail.iter().cloned());
    c.that(got.len() >= want.len() && allowed.starts_with(&got), || {
        format!("log holds {:?} after the crash", ids(&got))
    })?;
    let hs = c.ok(s.initial_state())?.hard_state;
    c.that(
        hs == hs2 || (hs == hs3 && got.len() == allowed.len()),
        || format!("hard state {hs:?} with {} entries", got.len()),
    )?;
    c.ok(s.append(&tail))?;
    c.ok(s.set_hard_state(hs3))?;
    c.ok(s.sync())?;
    s = reopen(s);
    c.log_is(&s, &allowed)?;

    c.check = "compaction drops the covered prefix and keeps its configuration";
    let mut s = create(boot.clone());
    let grown = Configuration::new([NodeId(1), NodeId(2), NodeId(3), NodeId(4)]);
    let mut log = entries(1..=10, 1);
    if let Some(e) = log.get_mut(3) {
        e.data = grown.encode();
    }
    c.ok(s.append(&log))?;
    c.ok(s.sync())?;
    let data = Bytes::from_static(b"state machine as of 6");
    c.ok(s.compact(LogIndex(6), data.clone()))?;
    for round in 0..2 {
        let first = c.ok(s.first_index())?;
        c.that(first == LogIndex(7), || {
            format!("round {round}: first {first:?}")
        })?;
        c.log_is(&s, log.get(6..).unwrap_or_default())?;
        let term = c.ok(s.term(LogIndex(6)))?;
        c.that(term == Term(1), || format!("term of 6 is {term:?}"))?;
        let gone = s.term(LogIndex(5));
        c.that(matches!(gone, Err(StorageError::Compacted { .. })), || {
            format!("term of compacted 5 gave {gone:?}")
        })?;
        let snap = c.ok(s.snapshot())?;
        c.that(snap.data == data && snap.meta.index == LogIndex(6), || {
            format!("snapshot {:?} of {} bytes", snap.meta, snap.data.len())
        })?;
        c.that(snap.meta.configuration == grown, || {
            format!("snapshot configuration {:?}", snap.meta.configuration)
        })?;
        let conf = c.ok(s.initial_state())?.configuration;
        c.that(conf == grown, || format!("initial configuration {conf:?}"))?;
        s = reopen(s);
    }
    c.check = "compacting at or below the snapshot does nothing";
    c.ok(s.compact(LogIndex(3), Bytes::from_static(b"older")))?;
    let snap = c.ok(s.snapshot())?;
    c.that(snap.data == data, || {
        "an older compaction replaced the snapshot".into()
    })?;
    c.check = "appends continue after compaction";
    c.ok(s.append(&entries(11..=12, 2)))?;
    c.ok(s.sync())?;
    s = reopen(s);
    let mut want: Vec<Entry> = log.get(6..).unwrap_or_default().to_vec();
    want.extend(entries(11..=12, 2));
    c.log_is(&s, &want)?;

    c.check = "a snapshot past the log replaces it";
    let leader = Snapshot {
        meta: SnapshotMeta {
            index: LogIndex(20),
            term: Term(3),
            configuration: boot.clone(),
        },
        data: Bytes::from_static(b"leader state as of 20"),
    };
    c.ok(s.install_snapshot(leader.clone()))?;
    for round in 0..2 {
        let (first, last) = (c.ok(s.first_index())?, c.ok(s.last_index())?);
        c.that(first == LogIndex(21) && last == LogIndex(20), || {
            format!("round {round}: first {first:?}, last {last:?}")
        })?;
        let snap = c.ok(s.snapshot())?;
        c.that(snap == leader, || format!("snapshot {:?}", snap.meta))?;
        let hs = c.ok(s.initial_state())?.hard_state;
        c.that(hs.commit >= LogIndex(20), || {
            format!("commit {:?} below the snapshot", hs.commit)
        })?;
        let term = c.ok(s.term(LogIndex(20)))?;
        c.that(term == Term(3), || format!("term of 20 is {term:?}"))?;
        s = reopen(s);
    }
    c.ok(s.append(&entries(21..=23, 3)))?;
    c.ok(s.sync())?;

    c.check = "a snapshot inside the log replaces all of it";
    let inside = Snapshot {
        meta: SnapshotMeta {
            index: LogIndex(22),
            term: Term(4),
            configuration: boot,
        },
        data: Bytes::from_static(b"leader state as of 22"),
    };
    c.ok(s.install_snapshot(inside.clone()))?;
    s = reopen(s);
    let last = c.ok(s.last_index())?;
    c.that(last == LogIndex(22), || format!("last {last:?}"))?;
    let snap = c.ok(s.snapshot())?;
    c.that(snap == inside, || format!("snapshot {:?}", snap.meta))?;
    c.ok(s.append(&entries(23..=24, 4)))?;
    c.ok(s.sync())?;
    s = reopen(s);
    c.log_is(&s, &entries(23..=24, 4))?;

    c.check = "reads respect the byte budget but return at least one entry";
    let mut out = Vec::new();
    c.ok(s.entries(LogIndex(23), LogIndex(25), 0, &mut out))?;
    c.that(out.len() == 1, || {
        format!("{} entries for budget 0", out.len())
    })?;
    Ok(Report { checks: c.checks })
}
