//! A checker for the session guarantees of Terry et al., "Session
//! Guarantees for Weakly Consistent Replicated Data" (1994), over a
//! recorded history of one or more shards (each its own log, so its own
//! indexes: a session's floors are kept per shard):
//! read-your-writes, monotonic reads, monotonic writes and
//! writes-follow-reads, each within one client session. Reads across
//! sessions may be stale: a session that never saw a write may miss it.
//!
//! The model is kv-cluster's: every write is an entry of a totally ordered
//! log, named by its index (the write reply carries it), and a replica's
//! state is a prefix of the log. A state that includes a write therefore
//! includes every write before it, so a session's guarantees come down to
//! a floor per session:
//!
//! - its own writes raise the *write floor*; a read of key `k` must then
//!   return `k`'s latest write at or below that floor, or a later one
//!   (read-your-writes);
//! - the writes its reads returned raise the *read floor*, and later reads
//!   are held to it the same way (monotonic reads);
//! - its writes must land in the log in session order (monotonic writes),
//!   and after every write its reads returned (writes-follow-reads).
//!
//! Values must be unique per write (so a read names the write it saw).
//! Writes with no known index (unanswered) are never held against a read,
//! and a read that returned one is not checked.

use std::collections::{BTreeMap, HashMap};

/// One completed operation of a session, in the session's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionEvent {
    /// The client session.
    pub session: u64,
    /// What it did.
    pub op: SessionOp,
}

/// A session's read or write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionOp {
    /// Wrote `value` (unique over the history) under `key` of `shard`.
    Write {
        /// The shard (whose log `index` is in).
        shard: u32,
        /// The key.
        key: String,
        /// The value.
        value: u64,
        /// The write's log index, if it was answered.
        index: Option<u64>,
    },
    /// Read `key` of `shard` and got `value` (none: no such key).
    Read {
        /// The shard.
        shard: u32,
        /// The key.
        key: String,
        /// The value returned.
        value: Option<u64>,
    },
}

/// A session guarantee.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Guarantee {
    /// A read sees the session's earlier writes.
    ReadYourWrites,
    /// A read sees at least what the session's earlier reads saw.
    MonotonicReads,
    /// The session's writes are ordered as it made them.
    MonotonicWrites,
    /// A write is ordered after the writes the session's earlier reads saw.
    WritesFollowReads,
}

/// A guarantee broken at one event of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which.
    pub guarantee: Guarantee,
    /// The session.
    pub session: u64,
    /// The offending event's position in the history.
    pub at: usize,
    /// What was seen against what was due.
    pub detail: String,
}

#[derive(Default)]
struct Floors {
    /// Highest index of the session's own writes.
    writes: u64,
    /// Highest index of a write the session's reads returned.
    reads: u64,
    /// Index of the session's last write (monotonic writes).
    last_write: u64,
}

/// Checks every session of `history` (events in completion order; each
/// session's in its own order) for the four guarantees; returns every
/// violation.
pub fn check_sessions(history: &[SessionEvent]) -> Vec<Violation> {
    // Every answered write, by value and by key.
    let mut index_of: HashMap<u64, u64> = HashMap::new();
    let mut by_key: HashMap<&str, BTreeMap<u64, u64>> = HashMap::new();
    for e in history {
        if let SessionOp::Write {
            key,
            value,
            index: Some(index),
            ..
        } = &e.op
        {
            index_of.insert(*value, *index);
            by_key.entry(key).or_default().insert(*index, *value);
        }
    }
    // The latest answered write to `key` at or below `floor`.
    let due = |key: &str, floor: u64| {
        by_key
            .get(key)
            .and_then(|w| w.range(..=floor).next_back())
            .map(|(&i, &v)| (i, v))
    };
    // Per session and shard.
    let mut floors: HashMap<(u64, u32), Floors> = HashMap::new();
    let mut out = Vec::new();
    for (at, e) in history.iter().enumerate() {
        let shard = match &e.op {
            SessionOp::Write { shard, .. } | SessionOp::Read { shard, .. } => *shard,
        };
        let f = floors.entry((e.session, shard)).or_default();
        let mut violation = |guarantee, detail: String| {
            out.push(Violation {
                guarantee,
                session: e.session,
                at,
                detail,
            });
        };
        match &e.op {
            SessionOp::Write { value, index, .. } => {
                let Some(index) = *index else { continue };
                if index <= f.last_write {
                    violation(
                        Guarantee::MonotonicWrites,
                        format!(
                            "write {value} at index {index}, not after the session's write at {}",
                            f.last_write
                        ),
                    );
                }
                if index <= f.reads {
                    violation(
                        Guarantee::WritesFollowReads,
                        format!(
                            "write {value} at index {index}, not after index {} its reads saw",
                            f.reads
                        ),
                    );
                }
                f.last_write = f.last_write.max(index);
                f.writes = f.writes.max(index);
            }
            SessionOp::Read { key, value, .. } => {
                // The index of the write the read returned (0: none).
                let seen = match value {
                    None => 0,
                    Some(v) => match index_of.get(v) {
                        Some(&i) => i,
                        // An unanswered write: its place is unknown.
                        None => continue,
                    },
                };
                let describe = |what: &str, floor: u64, (i, v): (u64, u64)| {
                    format!(
                        "read of {key:?} returned {value:?} (index {seen}) though the session's {what} reached index {floor}, past write {v} at {i}"
                    )
                };
                if let Some(w) = due(key, f.writes).filter(|&(i, _)| i > seen) {
                    violation(Guarantee::ReadYourWrites, describe("writes", f.writes, w));
                } else if let Some(w) = due(key, f.reads).filter(|&(i, _)| i > seen) {
                    violation(Guarantee::MonotonicReads, describe("reads", f.reads, w));
                }
                f.reads = f.reads.max(seen);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys "x" to "z" in shard 0; "s..." keys in shard 1.
    fn shard_of(key: &str) -> u32 {
        u32::from(key.starts_with('s'))
    }

    fn write(session: u64, key: &str, value: u64, index: u64) -> SessionEvent {
        SessionEvent {
            session,
            op: SessionOp::Write {
                shard: shard_of(key),
                key: key.into(),
                value,
                index: Some(index),
            },
        }
    }

    fn read(session: u64, key: &str, value: Option<u64>) -> SessionEvent {
        SessionEvent {
            session,
            op: SessionOp::Read {
                shard: shard_of(key),
                key: key.into(),
                value,
            },
        }
    }

    fn broken(history: &[SessionEvent]) -> Vec<Guarantee> {
        check_sessions(history)
            .into_iter()
            .map(|v| v.guarantee)
            .collect()
    }

    #[test]
    fn a_fresh_history_passes() {
        let h = [
            write(1, "x", 10, 3),
            read(1, "x", Some(10)),
            write(2, "x", 20, 5),
            read(1, "x", Some(20)),
            read(2, "y", None),
            write(1, "y", 11, 7),
            read(2, "y", Some(11)),
        ];
        assert_eq!(check_sessions(&h), []);
    }

    #[test]
    fn catches_a_stale_read_within_a_session_and_allows_one_across() {
        // Session 1 wrote x=20 at 5, then read the older x=10: broken.
        let own = [
            write(2, "x", 10, 3),
            write(1, "x", 20, 5),
            read(1, "x", Some(10)),
        ];
        assert_eq!(broken(&own), [Guarantee::ReadYourWrites]);
        // Session 2 never saw x=20: its stale read is allowed.
        let across = [
            write(1, "x", 10, 3),
            write(1, "x", 20, 5),
            read(2, "x", Some(10)),
        ];
        assert_eq!(broken(&across), []);
        // Missing the write entirely is as stale.
        let missing = [write(1, "x", 20, 5), read(1, "x", None)];
        assert_eq!(broken(&missing), [Guarantee::ReadYourWrites]);
    }

    #[test]
    fn catches_reads_going_back() {
        // Session 2 saw x=20, then read x=10; also across keys: it saw
        // y=30 (index 9, after x=40 at 8), then x=20.
        let h = [
            write(1, "x", 10, 3),
            write(1, "x", 20, 5),
            read(2, "x", Some(20)),
            read(2, "x", Some(10)),
            write(1, "x", 40, 8),
            write(1, "y", 30, 9),
            read(2, "y", Some(30)),
            read(2, "x", Some(20)),
        ];
        let v = check_sessions(&h);
        let at: Vec<(Guarantee, usize)> = v.iter().map(|v| (v.guarantee, v.at)).collect();
        assert_eq!(
            at,
            [
                (Guarantee::MonotonicReads, 3),
                (Guarantee::MonotonicReads, 7)
            ]
        );
    }

    #[test]
    fn catches_writes_out_of_order() {
        let reordered = [write(1, "x", 10, 6), write(1, "y", 11, 4)];
        assert_eq!(broken(&reordered), [Guarantee::MonotonicWrites]);
        let before_read = [
            write(1, "x", 10, 6),
            read(2, "x", Some(10)),
            write(2, "z", 12, 5),
        ];
        assert_eq!(broken(&before_read), [Guarantee::WritesFollowReads]);
    }

    #[test]
    fn shards_have_their_own_indexes() {
        // Index 9 of shard 1 says nothing about index 5 of shard 0.
        let h = [
            write(1, "x", 10, 3),
            write(2, "x", 20, 5),
            write(1, "s1", 11, 9),
            read(1, "x", Some(10)),
            write(1, "x", 12, 6),
        ];
        assert_eq!(check_sessions(&h), []);
        // Within shard 0, 5 is still past 3 once seen.
        let h = [
            write(1, "x", 10, 3),
            write(2, "x", 20, 5),
            read(1, "x", Some(20)),
            read(1, "x", Some(10)),
        ];
        assert_eq!(broken(&h), [Guarantee::MonotonicReads]);
    }

    #[test]
    fn unanswered_writes_are_not_held_against_reads() {
        let h = [
            SessionEvent {
                session: 1,
                op: SessionOp::Write {
                    shard: 0,
                    key: "x".into(),
                    value: 10,
                    index: None,
                },
            },
            read(1, "x", None),
            read(1, "x", Some(10)),
            read(1, "x", None),
        ];
        assert_eq!(check_sessions(&h), []);
    }
}
