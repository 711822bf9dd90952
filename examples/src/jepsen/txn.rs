//! Checks a history of multi-key transactions for atomic visibility and
//! serializability, after Adya's "Weak Consistency" (1999) and Elle
//! (Kingsbury and Alvaro, 2020), and a bank workload for its invariant.
//!
//! The workload makes the version order of every key recoverable, as
//! Elle's list-append does: a key's value is a list of tokens, unique
//! over the history, and every write appends one token with a
//! compare-and-set (`Cas { key, expect: old, value: old + [token] }`), so
//! every read reveals the key's whole version history and every write
//! names the version it follows. From that the checker finds:
//!
//! - reads of a token nobody wrote or of an aborted transaction's write
//!   (G1a), reads of a transaction's intermediate state (G1b), reads that
//!   see some but not all of another transaction's writes (fractured: no
//!   atomic visibility), reads that disagree with the transaction's own
//!   earlier operations (internal), and two reads of one key that no one
//!   version order explains (incompatible order: a lost update shows so);
//! - cycles in the dependency graph over committed transactions, with
//!   write-write, write-read and read-write (anti-) dependency edges:
//!   G0 (write cycle), G1c (write and read dependencies), G2
//!   (at least one anti-dependency, as in write skew).
//!
//! A transaction whose outcome is unknown (timed out, crashed client) may
//! or may not have committed, as Elle handles it: if a committed
//! transaction observed one of its writes it committed and joins the graph
//! (its own reads, unknown, are not checked); otherwise it is taken as
//! never having happened, which no read contradicts.
//!
//! [`check`] checks serializability; [`check_with`] also strict
//! serializability ([`Isolation::StrictSerializable`]): real-time edges
//! from every committed transaction to every one invoked after it
//! completed, and a cycle through one is [`CycleKind::Realtime`].
//!
//! [`check_bank`] checks a bank workload: every committed transaction that
//! reads all accounts sees the initial total, and, with the balances'
//! writers recovered from their compare-and-sets, all the checks above.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// How a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnOutcome {
    /// Acknowledged as committed.
    Committed,
    /// Certainly aborted: none of its writes took effect.
    Aborted,
    /// Unknown (timeout, crash, never completed): it may have committed.
    Unknown,
}

/// One transaction of a history: who ran it, when, its micro-operations
/// in order, and how it ended. `M` is the workload's micro-operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Txn<M> {
    /// The client (worker) that ran it.
    pub client: u64,
    /// When it was invoked (nanoseconds since the history began).
    pub call: u64,
    /// When it completed, if it did.
    pub ret: Option<u64>,
    /// Its micro-operations, in the order the transaction ran them.
    pub ops: Vec<M>,
    /// How it ended.
    pub outcome: TxnOutcome,
}

/// A micro-operation of the list-append workload.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Mop {
    /// Read `key`.
    Read {
        /// The key.
        key: u64,
        /// The tokens read, oldest first (empty: the key was absent);
        /// `None` if not known (the transaction did not commit).
        value: Option<Vec<u64>>,
    },
    /// `Cas { key, expect, value: expect + [token] }`: appends `token`
    /// (unique over the history) to `key`, which held `expect`.
    Append {
        /// The key.
        key: u64,
        /// The value the key held before (and the transaction read).
        expect: Vec<u64>,
        /// The token appended.
        token: u64,
    },
}

impl Mop {
    /// The key the micro-operation touches.
    pub fn key(&self) -> u64 {
        match *self {
            Mop::Read { key, .. } | Mop::Append { key, .. } => key,
        }
    }
}

/// A transaction's position in the history it was checked in.
pub type TxnIndex = usize;

/// A dependency between two transactions: `to` depends on `from`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dependency {
    /// `to` overwrote `from`'s version of a key.
    WriteWrite,
    /// `to` read `from`'s version of a key.
    WriteRead,
    /// `from` read a version of a key that `to` overwrote
    /// (anti-dependency).
    ReadWrite,
    /// `from` completed before `to` was invoked (checked for strict
    /// serializability only).
    Realtime,
}

/// One edge of a reported cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The transaction depended on.
    pub from: TxnIndex,
    /// The dependent transaction.
    pub to: TxnIndex,
    /// How (one of the edge's kinds, the strongest in the order above).
    pub dependency: Dependency,
    /// The key the dependency is on (none for a real-time one).
    pub key: Option<u64>,
}

/// Adya's name for a dependency cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CycleKind {
    /// Write-write dependencies only.
    G0,
    /// Write-write and write-read dependencies, at least one write-read.
    G1c,
    /// At least one anti-dependency (exactly one: G-single; write skew
    /// has two).
    G2,
    /// Serializable, but only in an order that contradicts real time: a
    /// transaction ordered before one that completed before it began
    /// (checked for strict serializability only).
    Realtime,
}

/// The isolation level a history is checked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Isolation {
    /// Some serial order of the committed transactions explains every
    /// read.
    #[default]
    Serializable,
    /// And that order agrees with real time: a transaction that completed
    /// before another was invoked comes first.
    StrictSerializable,
}

/// What is wrong with a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// Two transactions claim the same token for one key: the history
    /// breaks the workload's uniqueness rule and cannot be checked.
    DuplicateToken {
        /// The key.
        key: u64,
        /// The token.
        token: u64,
        /// The transactions.
        txns: [TxnIndex; 2],
    },
    /// A read of `key` returned a token no transaction appended to it.
    GarbageRead {
        /// The reader.
        txn: TxnIndex,
        /// The key.
        key: u64,
        /// The token.
        token: u64,
    },
    /// G1a: a committed transaction read an aborted transaction's write.
    AbortedRead {
        /// The reader.
        txn: TxnIndex,
        /// The aborted writer.
        writer: TxnIndex,
        /// The key.
        key: u64,
        /// The token.
        token: u64,
    },
    /// G1b: a read saw a transaction's write that the same transaction
    /// later overwrote.
    IntermediateRead {
        /// The reader.
        txn: TxnIndex,
        /// The writer.
        writer: TxnIndex,
        /// The key.
        key: u64,
        /// The token read last.
        token: u64,
    },
    /// The reader saw `writer`'s write of `seen` but not its write of
    /// `missed`: not atomically visible.
    FracturedRead {
        /// The reader.
        txn: TxnIndex,
        /// The writer.
        writer: TxnIndex,
        /// The key whose write the reader saw.
        seen: u64,
        /// The key whose write it missed.
        missed: u64,
    },
    /// A transaction's read of a key disagrees with its own earlier read
    /// or write of the key.
    Internal {
        /// The transaction.
        txn: TxnIndex,
        /// The key.
        key: u64,
        /// What its earlier operations implied.
        expected: Vec<u64>,
        /// What it read.
        found: Vec<u64>,
    },
    /// A list read with a token twice.
    DuplicateInRead {
        /// The reader.
        txn: TxnIndex,
        /// The key.
        key: u64,
        /// The token.
        token: u64,
    },
    /// Two versions of a key neither of which is a prefix of the other:
    /// no one version order explains both (two writers overwrote one
    /// version: a lost update).
    IncompatibleOrder {
        /// The key.
        key: u64,
        /// One version.
        a: Vec<u64>,
        /// The other.
        b: Vec<u64>,
    },
    /// A dependency cycle among committed transactions: no equivalent
    /// serial order.
    Cycle {
        /// Its kind.
        kind: CycleKind,
        /// Its edges, each `to` the next one's `from`, the last back to
        /// the first.
        steps: Vec<Step>,
    },
}

impl Anomaly {
    /// The transactions it names, in the order it names them.
    pub fn txns(&self) -> Vec<TxnIndex> {
        match self {
            Anomaly::DuplicateToken { txns, .. } => txns.to_vec(),
            Anomaly::GarbageRead { txn, .. }
            | Anomaly::Internal { txn, .. }
            | Anomaly::DuplicateInRead { txn, .. } => vec![*txn],
            Anomaly::AbortedRead { txn, writer, .. }
            | Anomaly::IntermediateRead { txn, writer, .. }
            | Anomaly::FracturedRead { txn, writer, .. } => vec![*writer, *txn],
            Anomaly::IncompatibleOrder { .. } => Vec::new(),
            Anomaly::Cycle { steps, .. } => steps.iter().map(|s| s.from).collect(),
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::DuplicateToken { key, token, txns } => write!(
                f,
                "token {token} of key {key} appended by both T{} and T{}",
                txns[0], txns[1]
            ),
            Anomaly::GarbageRead { txn, key, token } => {
                write!(f, "T{txn} read token {token} of key {key}, never appended")
            }
            Anomaly::AbortedRead {
                txn,
                writer,
                key,
                token,
            } => write!(
                f,
                "G1a: T{txn} read token {token} of key {key} from aborted T{writer}"
            ),
            Anomaly::IntermediateRead {
                txn,
                writer,
                key,
                token,
            } => write!(
                f,
                "G1b: T{txn} read key {key} ending at {token}, an intermediate write of T{writer}"
            ),
            Anomaly::FracturedRead {
                txn,
                writer,
                seen,
                missed,
            } => write!(
                f,
                "fractured: T{txn} saw T{writer}'s write of key {seen} but not of key {missed}"
            ),
            Anomaly::Internal {
                txn,
                key,
                expected,
                found,
            } => write!(
                f,
                "internal: T{txn} read key {key} as {found:?}, its own operations imply {expected:?}"
            ),
            Anomaly::DuplicateInRead { txn, key, token } => {
                write!(f, "T{txn} read key {key} with token {token} twice")
            }
            Anomaly::IncompatibleOrder { key, a, b } => {
                write!(f, "key {key}: versions {a:?} and {b:?} fork")
            }
            Anomaly::Cycle { kind, steps } => {
                write!(f, "{kind:?} cycle:")?;
                for s in steps {
                    match s.key {
                        Some(key) => write!(f, " T{} -{:?}({key})->", s.from, s.dependency)?,
                        None => write!(f, " T{} -{:?}->", s.from, s.dependency)?,
                    }
                }
                match steps.first() {
                    Some(s) => write!(f, " T{}", s.from),
                    None => Ok(()),
                }
            }
        }
    }
}

/// What [`check`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Every anomaly found (at most one cycle of each kind).
    pub anomalies: Vec<Anomaly>,
    /// Committed transactions, and unknown ones found to have committed.
    pub committed: usize,
    /// Dependency edges between them.
    pub edges: usize,
}

impl Verdict {
    /// Nothing wrong.
    pub fn ok(&self) -> bool {
        self.anomalies.is_empty()
    }
}

/// Who appended a token to a key, and after which version.
struct Write<'a> {
    txn: TxnIndex,
    expect: &'a [u64],
    /// The transaction's last append to this key.
    last: bool,
}

/// Checks a list-append history for serializability (see the module
/// docs).
pub fn check(history: &[Txn<Mop>]) -> Verdict {
    check_with(history, Isolation::Serializable)
}

/// Checks a list-append history for `isolation` (see the module docs).
pub fn check_with<'a>(history: &'a [Txn<Mop>], isolation: Isolation) -> Verdict {
    let mut anomalies = Vec::new();

    // Every append, by key and token.
    let mut writes: HashMap<(u64, u64), Write<'_>> = HashMap::new();
    for (i, t) in history.iter().enumerate() {
        let mut last_on_key: HashMap<u64, u64> = HashMap::new();
        for op in &t.ops {
            if let Mop::Append { key, token, .. } = op {
                last_on_key.insert(*key, *token);
            }
        }
        for op in &t.ops {
            let Mop::Append { key, expect, token } = op else {
                continue;
            };
            let last = last_on_key.get(key) == Some(token);
            if let Some(other) = writes.get(&(*key, *token)) {
                anomalies.push(Anomaly::DuplicateToken {
                    key: *key,
                    token: *token,
                    txns: [other.txn, i],
                });
                continue;
            }
            writes.insert(
                (*key, *token),
                Write {
                    txn: i,
                    expect,
                    last,
                },
            );
        }
    }
    if !anomalies.is_empty() {
        return Verdict {
            anomalies,
            ..Verdict::default()
        };
    }

    // The external reads of committed transactions: per transaction and
    // key, the first value it saw (a read, or a compare-and-set's
    // expected value). Reads after its own writes are internal.
    let committed = |t: &Txn<Mop>| t.outcome == TxnOutcome::Committed;
    let mut external: Vec<BTreeMap<u64, &[u64]>> = vec![BTreeMap::new(); history.len()];
    for (i, t) in history.iter().enumerate().filter(|(_, t)| committed(t)) {
        let mut state: HashMap<u64, Vec<u64>> = HashMap::new();
        for op in &t.ops {
            let (key, seen): (u64, &[u64]) = match op {
                Mop::Read {
                    key,
                    value: Some(v),
                } => (*key, v),
                Mop::Read { value: None, .. } => continue,
                Mop::Append { key, expect, .. } => (*key, expect),
            };
            match state.get(&key) {
                Some(expected) if expected.as_slice() != seen => {
                    anomalies.push(Anomaly::Internal {
                        txn: i,
                        key,
                        expected: expected.clone(),
                        found: seen.to_vec(),
                    });
                }
                Some(_) => {}
                None => {
                    external[i].insert(key, seen);
                }
            }
            let mut now = seen.to_vec();
            if let Mop::Append { token, .. } = op {
                now.push(*token);
            }
            state.insert(key, now);
        }
    }

    // The external reads of each key, and the longest of them. While every
    // read of a key is a prefix of its longest, a token in any of them is
    // in the longest: checks of tokens look at the longest once.
    let mut reads_of: BTreeMap<u64, Vec<(TxnIndex, &[u64])>> = BTreeMap::new();
    for (i, reads) in external.iter().enumerate() {
        for (&key, seen) in reads {
            reads_of.entry(key).or_default().push((i, seen));
        }
    }
    let longest_read = |rs: &[(TxnIndex, &'a [u64])]| -> Option<&'a [u64]> {
        let longest = rs.iter().map(|&(_, r)| r).max_by_key(|r| r.len())?;
        rs.iter()
            .all(|&(_, r)| longest.starts_with(r))
            .then_some(longest)
    };

    // Which transactions took effect: committed ones, and unknown ones a
    // committed transaction observed.
    let mut effective: Vec<bool> = history.iter().map(committed).collect();
    let mut observe = |key: u64, tokens: &[u64]| {
        for token in tokens {
            if let Some(w) = writes.get(&(key, *token))
                && history[w.txn].outcome == TxnOutcome::Unknown
            {
                effective[w.txn] = true;
            }
        }
    };
    for (&key, rs) in &reads_of {
        match longest_read(rs) {
            Some(longest) => observe(key, longest),
            None => rs.iter().for_each(|&(_, r)| observe(key, r)),
        }
    }

    // Reads of garbage and of aborted writes: each token once, reported
    // against the first reader (in history order) that saw it.
    for (&key, rs) in &reads_of {
        let scan: Vec<(TxnIndex, &[u64])> = match longest_read(rs) {
            Some(longest) => {
                // The first reader whose read reaches each position.
                let mut first = vec![None; longest.len()];
                for &(i, r) in rs {
                    for slot in first.iter_mut().take(r.len()).rev() {
                        if slot.is_some_and(|f| f <= i) {
                            break;
                        }
                        *slot = Some(i);
                    }
                }
                longest
                    .iter()
                    .zip(first)
                    .map(|(t, i)| (i.unwrap_or_default(), std::slice::from_ref(t)))
                    .collect()
            }
            None => rs.clone(),
        };
        let mut reported = HashSet::new();
        for (i, tokens) in scan {
            for token in tokens {
                if !reported.insert(*token) {
                    continue;
                }
                match writes.get(&(key, *token)) {
                    None => anomalies.push(Anomaly::GarbageRead {
                        txn: i,
                        key,
                        token: *token,
                    }),
                    Some(w) if history[w.txn].outcome == TxnOutcome::Aborted => {
                        anomalies.push(Anomaly::AbortedRead {
                            txn: i,
                            writer: w.txn,
                            key,
                            token: *token,
                        });
                    }
                    Some(_) => {}
                }
            }
        }
    }
    // Reads of intermediate versions.
    for (i, reads) in external.iter().enumerate() {
        for (&key, seen) in reads {
            if let Some((&token, w)) = seen
                .last()
                .and_then(|t| writes.get(&(key, *t)).map(|w| (t, w)))
                && !w.last
                && w.txn != i
            {
                anomalies.push(Anomaly::IntermediateRead {
                    txn: i,
                    writer: w.txn,
                    key,
                    token,
                });
            }
        }
    }

    // The version order of each key: every version observed (reads, and
    // the values effective transactions wrote) must be a prefix of the
    // longest.
    let mut order: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut written: BTreeMap<u64, Vec<(&[u64], u64)>> = BTreeMap::new();
    for (&(key, token), w) in &writes {
        if effective[w.txn] {
            written.entry(key).or_default().push((w.expect, token));
        }
    }
    let keys: BTreeSet<u64> = reads_of.keys().chain(written.keys()).copied().collect();
    for key in keys {
        let rs = reads_of.get(&key).map_or(&[][..], Vec::as_slice);
        let ws = written.get(&key).map_or(&[][..], Vec::as_slice);
        let longest_read = rs.iter().map(|&(_, r)| r).max_by_key(|r| r.len());
        let longest_write = ws.iter().max_by_key(|(e, _)| e.len());
        let longest: Vec<u64> = match (longest_read, longest_write) {
            (Some(r), Some((e, _))) if r.len() > e.len() => r.to_vec(),
            (_, Some((e, t))) => e.iter().copied().chain([*t]).collect(),
            (Some(r), None) => r.to_vec(),
            (None, None) => continue,
        };
        let fork = rs
            .iter()
            .find(|(_, r)| !longest.starts_with(r))
            .map(|(_, r)| r.to_vec())
            .or_else(|| {
                ws.iter()
                    .find(|(e, t)| !longest.starts_with(e) || longest.get(e.len()) != Some(t))
                    .map(|(e, t)| e.iter().copied().chain([*t]).collect())
            });
        // A forked key has no version order to draw edges from.
        if let Some(a) = fork {
            anomalies.push(Anomaly::IncompatibleOrder { key, a, b: longest });
            continue;
        }
        let mut seen = HashSet::new();
        if let Some(token) = longest.iter().find(|t| !seen.insert(**t)) {
            // The first reader that saw it, or the writer that wrote it.
            let txn = rs
                .iter()
                .filter(|(_, r)| r.contains(token))
                .map(|&(i, _)| i)
                .min()
                .or_else(|| {
                    longest_write
                        .and_then(|(_, t)| writes.get(&(key, *t)))
                        .map(|w| w.txn)
                })
                .unwrap_or_default();
            anomalies.push(Anomaly::DuplicateInRead {
                txn,
                key,
                token: *token,
            });
            continue;
        }
        order.insert(key, longest);
    }
    // Where each token is in its key's version order.
    let position: HashMap<(u64, u64), usize> = order
        .iter()
        .flat_map(|(&key, v)| v.iter().enumerate().map(move |(p, &t)| ((key, t), p)))
        .collect();

    // Atomic visibility: a reader that saw one of a writer's versions sees
    // all of them (or later ones) on the keys it read. Per key, walking its
    // version order: the writers of its first `p` versions need a read of
    // each other key they wrote to reach past their version there.
    let mut wrote: Vec<BTreeMap<u64, u64>> = vec![BTreeMap::new(); history.len()];
    for (&(key, token), w) in &writes {
        if w.last {
            wrote[w.txn].insert(key, token);
        }
    }
    for (&key, versions) in &order {
        let Some(rs) = reads_of.get(&key) else {
            continue;
        };
        let mut by_len: Vec<(usize, TxnIndex)> = rs.iter().map(|&(i, r)| (r.len(), i)).collect();
        by_len.sort_unstable();
        // Other key -> (the read length needed, the writer needing it).
        let mut need: BTreeMap<u64, (usize, TxnIndex)> = BTreeMap::new();
        let mut readers = by_len.into_iter().peekable();
        for p in 0..=versions.len() {
            while let Some((_, reader)) = readers.next_if(|&(len, _)| len == p) {
                for (&other, &(len, writer)) in &need {
                    let short = external[reader]
                        .get(&other)
                        .is_some_and(|mine| mine.len() < len);
                    if short && writer != reader && order.contains_key(&other) {
                        anomalies.push(Anomaly::FracturedRead {
                            txn: reader,
                            writer,
                            seen: key,
                            missed: other,
                        });
                    }
                }
            }
            let Some(w) = versions
                .get(p)
                .and_then(|&t| writes.get(&(key, t)))
                .filter(|w| effective[w.txn])
            else {
                continue;
            };
            for (&other, &theirs) in &wrote[w.txn] {
                let Some(&at) = position.get(&(other, theirs)) else {
                    continue;
                };
                if other != key && need.get(&other).is_none_or(|&(len, _)| len < at + 1) {
                    need.insert(other, (at + 1, w.txn));
                }
            }
        }
    }

    // The dependency graph over effective transactions.
    let writer_of = |key: u64, token: u64| writes.get(&(key, token)).map(|w| w.txn);
    let mut graph = Graph::default();
    for (&key, versions) in &order {
        for pair in versions.windows(2) {
            if let (Some(a), Some(b)) = (writer_of(key, pair[0]), writer_of(key, pair[1])) {
                graph.add(a, b, Dependency::WriteWrite, Some(key));
            }
        }
    }
    for (reader, reads) in external.iter().enumerate() {
        for (&key, seen) in reads {
            let Some(versions) = order.get(&key) else {
                continue;
            };
            if let Some(w) = seen.last().and_then(|&t| writer_of(key, t)) {
                graph.add(w, reader, Dependency::WriteRead, Some(key));
            }
            if let Some(w) = versions.get(seen.len()).and_then(|&t| writer_of(key, t)) {
                graph.add(reader, w, Dependency::ReadWrite, Some(key));
            }
        }
    }
    let committed_count = effective.iter().filter(|&&e| e).count();
    let edges = graph.edges.len();
    let mut kinds = vec![CycleKind::G0, CycleKind::G1c, CycleKind::G2];
    if isolation == Isolation::StrictSerializable {
        graph.add_realtime(history, &effective);
        kinds.push(CycleKind::Realtime);
    }
    for kind in kinds {
        if let Some(steps) = graph.cycle(kind) {
            anomalies.push(Anomaly::Cycle {
                kind,
                steps: graph.collapse(steps),
            });
        }
    }
    Verdict {
        anomalies,
        committed: committed_count,
        edges,
    }
}

/// Dependency edges, each with its kinds and one key per kind.
#[derive(Default)]
struct Graph {
    edges: BTreeMap<(TxnIndex, TxnIndex), BTreeMap<Dependency, Option<u64>>>,
    /// Nodes from here on stand for moments of real time, not
    /// transactions.
    first_moment: Option<TxnIndex>,
}

impl Graph {
    fn add(&mut self, from: TxnIndex, to: TxnIndex, dependency: Dependency, key: Option<u64>) {
        if from != to {
            self.edges
                .entry((from, to))
                .or_default()
                .entry(dependency)
                .or_insert(key);
        }
    }

    /// Real-time edges: `a -> b` whenever committed `a` completed before
    /// effective `b` was invoked (an unknown transaction's completion is
    /// unknown: it may commit later). In linear size, through one node per
    /// completion: `a -> moment(a) -> next moment -> ... -> b`.
    fn add_realtime(&mut self, history: &[Txn<Mop>], effective: &[bool]) {
        let mut done: Vec<(u64, TxnIndex)> = history
            .iter()
            .enumerate()
            .filter(|(_, t)| t.outcome == TxnOutcome::Committed)
            .filter_map(|(i, t)| t.ret.map(|r| (r, i)))
            .collect();
        done.sort_unstable();
        let first = history.len();
        self.first_moment = Some(first);
        for (k, &(_, i)) in done.iter().enumerate() {
            self.add(i, first + k, Dependency::Realtime, None);
            if k > 0 {
                self.add(first + k - 1, first + k, Dependency::Realtime, None);
            }
        }
        for (i, t) in history.iter().enumerate() {
            if !effective.get(i).copied().unwrap_or(false) {
                continue;
            }
            // The last completion strictly before the invocation.
            let before = done.partition_point(|&(ret, _)| ret < t.call);
            if let Some(k) = before.checked_sub(1) {
                self.add(first + k, i, Dependency::Realtime, None);
            }
        }
    }

    /// `steps` with each run through moments of real time as one
    /// real-time step between transactions.
    fn collapse(&self, steps: Vec<Step>) -> Vec<Step> {
        let Some(first) = self.first_moment else {
            return steps;
        };
        let mut out: Vec<Step> = Vec::new();
        for s in steps {
            match out.last_mut() {
                Some(last) if last.to >= first => last.to = s.to,
                _ => out.push(s),
            }
        }
        // A cycle that starts inside a run: its head belongs to the tail.
        if let Some(head) = out.first().copied()
            && out.len() > 1
            && head.from >= first
        {
            if let Some(last) = out.last_mut() {
                last.to = head.to;
            }
            out.remove(0);
        }
        out
    }

    /// A cycle using only the dependencies `kind` allows, that has one of
    /// the kind's own (a write-read edge for G1c, an anti-dependency for
    /// G2, a real-time one for Realtime), if there is one: the first such
    /// edge inside a strongly connected component, closed by a shortest
    /// path back.
    fn cycle(&self, kind: CycleKind) -> Option<Vec<Step>> {
        let allowed = |d: Dependency| match kind {
            CycleKind::G0 => d == Dependency::WriteWrite,
            CycleKind::G1c => d == Dependency::WriteWrite || d == Dependency::WriteRead,
            CycleKind::G2 => d != Dependency::Realtime,
            CycleKind::Realtime => true,
        };
        let needed = match kind {
            CycleKind::G0 => Dependency::WriteWrite,
            CycleKind::G1c => Dependency::WriteRead,
            CycleKind::G2 => Dependency::ReadWrite,
            CycleKind::Realtime => Dependency::Realtime,
        };
        let mut next: Adjacency = BTreeMap::new();
        for (&(from, to), kinds) in &self.edges {
            // The strongest allowed kind names the edge.
            if let Some((&d, &key)) = kinds.iter().find(|(d, _)| allowed(**d)) {
                next.entry(from).or_default().push((to, d, key));
            }
        }
        // Only an edge inside one strongly connected component is on a
        // cycle; a shortest path back from its head to its tail closes one.
        let component = components(&next);
        for (&(from, to), kinds) in &self.edges {
            let Some(&key) = kinds.get(&needed) else {
                continue;
            };
            if !component.contains_key(&from) || component.get(&from) != component.get(&to) {
                continue;
            }
            if let Some(path) = shortest_path(&next, to, from) {
                let mut steps = vec![Step {
                    from,
                    to,
                    dependency: needed,
                    key,
                }];
                steps.extend(path);
                return Some(steps);
            }
        }
        None
    }
}

type Adjacency = BTreeMap<TxnIndex, Vec<(TxnIndex, Dependency, Option<u64>)>>;

/// The strongly connected component of every node with an edge
/// (Kosaraju's algorithm, iterative: histories are long).
fn components(next: &Adjacency) -> HashMap<TxnIndex, usize> {
    let mut nodes: BTreeSet<TxnIndex> = next.keys().copied().collect();
    let mut back: Adjacency = BTreeMap::new();
    for (&from, tos) in next {
        for &(to, d, key) in tos {
            nodes.insert(to);
            back.entry(to).or_default().push((from, d, key));
        }
    }
    // Finish order of a depth-first search over `next`.
    let mut done = HashSet::new();
    let mut finished = Vec::new();
    for &root in &nodes {
        if !done.insert(root) {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        while let Some((node, child)) = stack.pop() {
            match next.get(&node).and_then(|tos| tos.get(child)) {
                Some(&(to, _, _)) => {
                    stack.push((node, child + 1));
                    if done.insert(to) {
                        stack.push((to, 0));
                    }
                }
                None => finished.push(node),
            }
        }
    }
    // Components: searches over the reversed edges, latest finished first.
    let mut component = HashMap::new();
    for (id, &root) in finished.iter().rev().enumerate() {
        if component.contains_key(&root) {
            continue;
        }
        component.insert(root, id);
        let mut stack = vec![root];
        while let Some(node) = stack.pop() {
            for &(from, _, _) in back.get(&node).into_iter().flatten() {
                if let std::collections::hash_map::Entry::Vacant(e) = component.entry(from) {
                    e.insert(id);
                    stack.push(from);
                }
            }
        }
    }
    component
}

/// A shortest path from `start` to `goal` (breadth first).
fn shortest_path(next: &Adjacency, start: TxnIndex, goal: TxnIndex) -> Option<Vec<Step>> {
    let mut came_from: HashMap<TxnIndex, Step> = HashMap::new();
    let mut seen = BTreeSet::from([start]);
    let mut queue = VecDeque::from([start]);
    while let Some(at) = queue.pop_front() {
        if at == goal {
            let mut path = Vec::new();
            let mut cursor = goal;
            while cursor != start {
                let step = *came_from.get(&cursor)?;
                path.push(step);
                cursor = step.from;
            }
            path.reverse();
            return Some(path);
        }
        for &(to, dependency, key) in next.get(&at).into_iter().flatten() {
            if seen.insert(to) {
                came_from.insert(
                    to,
                    Step {
                        from: at,
                        to,
                        dependency,
                        key,
                    },
                );
                queue.push_back(to);
            }
        }
    }
    None
}

/// A token no workload appends: what an unparseable value reads as, so
/// the checker reports it as a read of garbage.
pub const GARBAGE_TOKEN: u64 = u64::MAX;

/// A key's tokens as the store holds them: decimal, joined by `,` (no
/// tokens: the empty string; an absent key also reads as none).
pub fn encode_tokens(tokens: &[u64]) -> String {
    let mut out = String::new();
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&t.to_string());
    }
    out
}

/// The tokens of a value [`encode_tokens`] wrote; anything else reads as
/// `[GARBAGE_TOKEN]`. Reads the first 100,000 bytes of a value at most.
pub fn decode_tokens(value: &[u8]) -> Vec<u64> {
    let parsed = std::str::from_utf8(value).ok().and_then(|s| {
        if s.is_empty() {
            return Some(Vec::new());
        }
        s.split(',')
            .map(|t| t.parse::<u64>().ok().filter(|&t| t != GARBAGE_TOKEN))
            .collect::<Option<Vec<u64>>>()
    });
    match parsed {
        Some(tokens) if value.len() <= 100_000 => tokens,
        _ => vec![GARBAGE_TOKEN],
    }
}

/// An account's balance as the bank workload stores it: the amount and
/// the transfer that wrote it, so a read names its writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Balance {
    /// The amount.
    pub amount: i64,
    /// The transfer that wrote it (unique and non-zero over the
    /// history); 0 for the initial balance.
    pub by: u64,
}

/// A micro-operation of the bank workload.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BankMop {
    /// Read an account.
    Read {
        /// The account.
        account: u64,
        /// What was read (`None`: not known, the transaction did not
        /// commit).
        value: Option<Balance>,
    },
    /// `Cas { account, expect, value }`, as a transfer writes each of its
    /// accounts (`value.by` is the transfer).
    Write {
        /// The account.
        account: u64,
        /// The balance it held before.
        expect: Balance,
        /// The balance written.
        value: Balance,
    },
}

impl Balance {
    /// As the store holds it: `amount:by`.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.amount, self.by)
    }

    /// A balance [`encode`](Self::encode) wrote, if `value` is one.
    pub fn decode(value: &[u8]) -> Option<Balance> {
        let (amount, by) = std::str::from_utf8(value).ok()?.split_once(':')?;
        Some(Balance {
            amount: amount.parse().ok()?,
            by: by.parse().ok()?,
        })
    }
}

/// What is wrong with a bank history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BankAnomaly {
    /// A committed transaction read every account and the balances do not
    /// add up to the initial total.
    WrongTotal {
        /// The reader.
        txn: TxnIndex,
        /// The sum it read.
        found: i64,
        /// The initial total.
        expected: i64,
    },
    /// A balance that its named writer did not write (or, for the
    /// initial version, that the account did not start with).
    UnknownBalance {
        /// The reader.
        txn: TxnIndex,
        /// The account.
        account: u64,
        /// What was read.
        balance: Balance,
    },
    /// An anomaly of the transactions, with each balance's version
    /// history recovered from the transfers' compare-and-sets.
    Txn(Anomaly),
}

impl fmt::Display for BankAnomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BankAnomaly::WrongTotal {
                txn,
                found,
                expected,
            } => write!(f, "T{txn} read a total of {found}, not {expected}"),
            BankAnomaly::UnknownBalance {
                txn,
                account,
                balance,
            } => write!(
                f,
                "T{txn} read account {account} as {balance:?}, which no one wrote"
            ),
            BankAnomaly::Txn(a) => a.fmt(f),
        }
    }
}

/// What [`check_bank`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BankVerdict {
    /// Every anomaly found.
    pub anomalies: Vec<BankAnomaly>,
    /// Committed transactions that read every account (each checked for
    /// the total).
    pub read_alls: usize,
    /// The transaction check's verdict (its anomalies are also above).
    pub txns: Verdict,
}

impl BankVerdict {
    /// Nothing wrong.
    pub fn ok(&self) -> bool {
        self.anomalies.is_empty()
    }
}

/// Checks a bank history: `initial` is every account's starting amount.
/// Every committed transaction that reads all of them must see their
/// total; every balance read must be one its writer wrote; and the
/// history, read as list appends (a balance's version history is the
/// chain of transfers its compare-and-sets name), must pass [`check_with`]
/// for `isolation`.
pub fn check_bank(
    history: &[Txn<BankMop>],
    initial: &BTreeMap<u64, i64>,
    isolation: Isolation,
) -> BankVerdict {
    let mut anomalies = Vec::new();
    // Each written version: the version it follows and its amount.
    let mut versions: HashMap<(u64, u64), (u64, i64)> = HashMap::new();
    for t in history {
        for op in &t.ops {
            if let BankMop::Write {
                account,
                expect,
                value,
            } = op
            {
                versions
                    .entry((*account, value.by))
                    .or_insert((expect.by, value.amount));
            }
        }
    }
    let known = |account: u64, b: &Balance| match b.by {
        0 => initial.get(&account) == Some(&b.amount),
        by => versions.get(&(account, by)).map(|v| v.1) == Some(b.amount),
    };
    // A version's history, oldest first. A broken chain ends in a token
    // no one wrote (or repeats one), which `check` reports.
    let chain = |account: u64, by: u64| {
        let mut tokens = Vec::new();
        let mut at = by;
        while at != 0 && tokens.len() <= versions.len() {
            tokens.push(at);
            match versions.get(&(account, at)) {
                Some(&(before, _)) => at = before,
                None => break,
            }
        }
        tokens.reverse();
        tokens
    };

    let total: i64 = initial.values().sum();
    let mut read_alls = 0;
    let mut lists = Vec::with_capacity(history.len());
    for (i, t) in history.iter().enumerate() {
        let committed = t.outcome == TxnOutcome::Committed;
        let mut read: BTreeMap<u64, i64> = BTreeMap::new();
        let mut ops = Vec::with_capacity(t.ops.len());
        for op in &t.ops {
            match op {
                BankMop::Read { account, value } => {
                    if let (Some(b), true) = (value, committed) {
                        if !known(*account, b) {
                            anomalies.push(BankAnomaly::UnknownBalance {
                                txn: i,
                                account: *account,
                                balance: *b,
                            });
                        }
                        read.entry(*account).or_insert(b.amount);
                    }
                    ops.push(Mop::Read {
                        key: *account,
                        value: value.map(|b| chain(*account, b.by)),
                    });
                }
                BankMop::Write {
                    account,
                    expect,
                    value,
                } => {
                    if committed && !known(*account, expect) {
                        anomalies.push(BankAnomaly::UnknownBalance {
                            txn: i,
                            account: *account,
                            balance: *expect,
                        });
                    }
                    ops.push(Mop::Append {
                        key: *account,
                        expect: chain(*account, expect.by),
                        token: value.by,
                    });
                }
            }
        }
        if committed && initial.keys().all(|a| read.contains_key(a)) {
            read_alls += 1;
            let found: i64 = initial.keys().filter_map(|a| read.get(a)).sum();
            if found != total {
                anomalies.push(BankAnomaly::WrongTotal {
                    txn: i,
                    found,
                    expected: total,
                });
            }
        }
        lists.push(Txn {
            client: t.client,
            call: t.call,
            ret: t.ret,
            ops,
            outcome: t.outcome,
        });
    }
    let txns = check_with(&lists, isolation);
    anomalies.extend(txns.anomalies.iter().cloned().map(BankAnomaly::Txn));
    BankVerdict {
        anomalies,
        read_alls,
        txns,
    }
}

/// A history of transactions shared by concurrent clients, on one
/// monotonic clock.
#[derive(Debug)]
pub struct TxnHistory<M> {
    start: Instant,
    txns: Mutex<Vec<Txn<M>>>,
}

impl<M: Clone> Default for TxnHistory<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Clone> TxnHistory<M> {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        TxnHistory {
            start: Instant::now(),
            txns: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Txn<M>>> {
        self.txns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Nanoseconds since the history began.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records that `client` invokes a transaction of `ops` (their
    /// results not yet known); its outcome is unknown until
    /// [`complete`](Self::complete). Returns its index.
    pub fn invoke(&self, client: u64, ops: Vec<M>) -> TxnIndex {
        let call = self.now();
        let mut txns = self.lock();
        txns.push(Txn {
            client,
            call,
            ret: None,
            ops,
            outcome: TxnOutcome::Unknown,
        });
        txns.len() - 1
    }

    /// Records how transaction `index` ended, with its operations' results.
    pub fn complete(&self, index: TxnIndex, ops: Vec<M>, outcome: TxnOutcome) {
        let ret = self.now();
        if let Some(t) = self.lock().get_mut(index) {
            t.ret = Some(ret);
            t.ops = ops;
            t.outcome = outcome;
        }
    }

    /// A copy of the transactions, in invocation order.
    pub fn txns(&self) -> Vec<Txn<M>> {
        self.lock().clone()
    }
}

/// One line per transaction: `index call ret client outcome ops`, times in
/// milliseconds.
pub fn render<M: fmt::Debug>(history: &[Txn<M>]) -> String {
    let mut out = String::new();
    for (i, t) in history.iter().enumerate() {
        out.push_str(&render_txn(i, t));
        out.push('\n');
    }
    out
}

/// [`render`]'s line for transaction `index`.
pub fn render_txn<M: fmt::Debug>(index: TxnIndex, t: &Txn<M>) -> String {
    let ms = |t: u64| t as f64 / 1e6;
    let ret = t.ret.map_or("-".to_owned(), |r| format!("{:.3}", ms(r)));
    format!(
        "T{index} {:.3} {ret} c{} {:?} {:?}",
        ms(t.call),
        t.client,
        t.outcome,
        t.ops
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const X: u64 = 0;
    const Y: u64 = 1;

    fn r(key: u64, value: &[u64]) -> Mop {
        Mop::Read {
            key,
            value: Some(value.to_vec()),
        }
    }

    fn a(key: u64, expect: &[u64], token: u64) -> Mop {
        Mop::Append {
            key,
            expect: expect.to_vec(),
            token,
        }
    }

    /// Transactions in the given order, each its own client, one after
    /// another in time.
    fn history(txns: Vec<(Vec<Mop>, TxnOutcome)>) -> Vec<Txn<Mop>> {
        txns.into_iter()
            .enumerate()
            .map(|(i, (ops, outcome))| {
                let i = i as u64;
                Txn {
                    client: i,
                    call: 10 * i,
                    ret: Some(10 * i + 5),
                    ops,
                    outcome,
                }
            })
            .collect()
    }

    use TxnOutcome::{Aborted, Committed, Unknown};

    fn kinds(v: &Verdict) -> Vec<String> {
        v.anomalies
            .iter()
            .map(|a| match a {
                Anomaly::Cycle { kind, .. } => format!("{kind:?}"),
                other => format!("{other:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            })
            .collect()
    }

    #[test]
    fn a_serial_history_passes() {
        let h = history(vec![
            (vec![a(X, &[], 1), a(Y, &[], 2)], Committed),
            (vec![r(X, &[1]), r(Y, &[2])], Committed),
            (
                vec![a(X, &[1], 3), r(X, &[1, 3]), a(X, &[1, 3], 4)],
                Committed,
            ),
            (vec![r(X, &[1, 3, 4]), r(Y, &[2])], Committed),
        ]);
        let v = check(&h);
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.committed, 4);
        assert!(v.edges >= 3, "{v:?}");
    }

    #[test]
    fn a_concurrent_serializable_history_passes() {
        // T1 and T2 overlap in time; T2 read x before T1's append of it
        // and T1 read T2's append of y (serial order T0 T2 T1), T3 after
        // both; T4 is unknown and seen,
        // T5 unknown and unseen, T6 aborted and unseen.
        let mut h = history(vec![
            (vec![a(X, &[], 1), a(Y, &[], 2)], Committed),
            (vec![r(Y, &[2, 4]), a(X, &[1], 3)], Committed),
            (vec![r(X, &[1]), a(Y, &[2], 4)], Committed),
            (vec![r(X, &[1, 3]), r(Y, &[2, 4])], Committed),
            (vec![a(X, &[1, 3], 5)], Unknown),
            (vec![a(Y, &[2, 4], 6)], Unknown),
            (vec![a(Y, &[2, 4], 7)], Aborted),
            (vec![r(X, &[1, 3, 5]), r(Y, &[2, 4])], Committed),
        ]);
        h[2].call = h[1].call;
        let v = check(&h);
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.committed, 6);
    }

    #[test]
    fn catches_an_injected_partial_transaction() {
        // T1 sees T0's write of x but not of y.
        let h = history(vec![
            (vec![a(X, &[], 1), a(Y, &[], 2)], Committed),
            (vec![r(X, &[1]), r(Y, &[])], Committed),
        ]);
        let v = check(&h);
        assert!(
            v.anomalies.contains(&Anomaly::FracturedRead {
                txn: 1,
                writer: 0,
                seen: X,
                missed: Y,
            }),
            "{v:?}"
        );
        // And the cycle it makes: T0 -wr-> T1 -rw-> T0.
        assert_eq!(kinds(&v), ["FracturedRead", "G2"]);
        // The same from an unknown writer that is seen.
        let mut h = h;
        h[0].outcome = Unknown;
        assert_eq!(kinds(&check(&h)), ["FracturedRead", "G2"]);
    }

    #[test]
    fn catches_an_aborted_read_and_garbage() {
        let h = history(vec![
            (vec![a(X, &[], 1)], Aborted),
            (vec![r(X, &[1])], Committed),
            (vec![r(Y, &[9])], Committed),
        ]);
        let v = check(&h);
        assert_eq!(
            v.anomalies,
            [
                Anomaly::AbortedRead {
                    txn: 1,
                    writer: 0,
                    key: X,
                    token: 1
                },
                Anomaly::GarbageRead {
                    txn: 2,
                    key: Y,
                    token: 9
                }
            ]
        );
    }

    #[test]
    fn catches_write_skew() {
        // T1 reads x, writes y; T2 reads y, writes x; each missed the
        // other's write: T1 -rw-> T2 -rw-> T1.
        let h = history(vec![
            (vec![a(X, &[], 1), a(Y, &[], 2)], Committed),
            (vec![r(X, &[1]), a(Y, &[2], 3)], Committed),
            (vec![r(Y, &[2]), a(X, &[1], 4)], Committed),
            (vec![r(X, &[1, 4]), r(Y, &[2, 3])], Committed),
        ]);
        let v = check(&h);
        assert_eq!(kinds(&v), ["G2"], "{v:?}");
        let Some(Anomaly::Cycle { steps, .. }) = v.anomalies.first() else {
            panic!("{v:?}");
        };
        let mut on = v.anomalies[0].txns();
        on.sort_unstable();
        assert_eq!(on, [1, 2]);
        assert!(steps.iter().all(|s| s.dependency == Dependency::ReadWrite));
    }

    #[test]
    fn catches_a_lost_update() {
        // Both compare-and-set x from [1]: one of them overwrote the
        // other's version unseen.
        let h = history(vec![
            (vec![a(X, &[], 1)], Committed),
            (vec![a(X, &[1], 2)], Committed),
            (vec![a(X, &[1], 3)], Committed),
        ]);
        assert_eq!(kinds(&check(&h)), ["IncompatibleOrder"]);
        // Seen by a reader, with one of them unknown.
        let h = history(vec![
            (vec![a(X, &[], 1)], Committed),
            (vec![r(X, &[1]), a(X, &[1], 2)], Committed),
            (vec![a(X, &[1], 3)], Unknown),
            (vec![r(X, &[1, 3])], Committed),
        ]);
        assert_eq!(kinds(&check(&h)), ["IncompatibleOrder"]);
    }

    #[test]
    fn strict_serializability_catches_a_stale_read() {
        // T1 began after T0 completed and missed its write: serializable
        // (T1 first), not strictly.
        let h = history(vec![
            (vec![a(X, &[], 1)], Committed),
            (vec![r(X, &[])], Committed),
        ]);
        assert!(check(&h).ok());
        let v = check_with(&h, Isolation::StrictSerializable);
        let Some(Anomaly::Cycle {
            kind: CycleKind::Realtime,
            steps,
        }) = v.anomalies.first()
        else {
            panic!("{v:?}");
        };
        let hops: Vec<(TxnIndex, TxnIndex, Dependency)> =
            steps.iter().map(|s| (s.from, s.to, s.dependency)).collect();
        assert!(
            hops == [(0, 1, Dependency::Realtime), (1, 0, Dependency::ReadWrite)]
                || hops == [(1, 0, Dependency::ReadWrite), (0, 1, Dependency::Realtime)],
            "{hops:?}"
        );
        // Overlapping in time, it is fine.
        let mut h = h;
        h[1].call = h[0].ret.unwrap_or_default();
        assert!(check_with(&h, Isolation::StrictSerializable).ok());
        // And an unknown writer's completion is unknown: no real-time edge
        // from it, even when seen.
        let h = history(vec![
            (vec![a(X, &[], 1)], Unknown),
            (vec![r(X, &[])], Committed),
            (vec![r(X, &[1])], Committed),
        ]);
        assert!(check_with(&h, Isolation::StrictSerializable).ok());
    }

    #[test]
    fn catches_g0_g1b_g1c_and_internal() {
        // G1c: each reads the other's write.
        let h = history(vec![
            (vec![a(X, &[], 1), r(Y, &[2])], Committed),
            (vec![a(Y, &[], 2), r(X, &[1])], Committed),
        ]);
        assert_eq!(kinds(&check(&h)), ["G1c"]);
        // G0: x says T0 then T1, y says T1 then T0.
        let h = history(vec![
            (vec![a(X, &[], 1), a(Y, &[2], 3)], Unknown),
            (vec![a(X, &[1], 4), a(Y, &[], 2)], Unknown),
            (vec![r(X, &[1, 4]), r(Y, &[2, 3])], Committed),
        ]);
        assert_eq!(kinds(&check(&h))[..1], ["G0"]);
        // G1b: T1 saw T0's first append of x, not its last.
        let h = history(vec![
            (vec![a(X, &[], 1), a(X, &[1], 2)], Committed),
            (vec![r(X, &[1])], Committed),
        ]);
        assert_eq!(kinds(&check(&h))[..1], ["IntermediateRead"]);
        // Internal: T0 read x without its own append.
        let h = history(vec![(vec![a(X, &[], 1), r(X, &[])], Committed)]);
        assert_eq!(kinds(&check(&h)), ["Internal"]);
    }

    fn bal(amount: i64, by: u64) -> Balance {
        Balance { amount, by }
    }

    fn transfer(id: u64, from: (u64, Balance), to: (u64, Balance), amount: i64) -> Vec<BankMop> {
        vec![
            BankMop::Write {
                account: from.0,
                expect: from.1,
                value: bal(from.1.amount - amount, id),
            },
            BankMop::Write {
                account: to.0,
                expect: to.1,
                value: bal(to.1.amount + amount, id),
            },
        ]
    }

    fn read_all(balances: &[Balance]) -> Vec<BankMop> {
        balances
            .iter()
            .enumerate()
            .map(|(i, b)| BankMop::Read {
                account: i as u64,
                value: Some(*b),
            })
            .collect()
    }

    fn bank(txns: Vec<(Vec<BankMop>, TxnOutcome)>) -> Vec<Txn<BankMop>> {
        txns.into_iter()
            .enumerate()
            .map(|(i, (ops, outcome))| Txn {
                client: 0,
                call: 10 * i as u64,
                ret: Some(10 * i as u64 + 5),
                ops,
                outcome,
            })
            .collect()
    }

    #[test]
    fn bank_keeps_its_total_and_catches_a_partial_transfer() {
        let initial = BTreeMap::from([(0, 10), (1, 10), (2, 10)]);
        let good = bank(vec![
            (transfer(1, (0, bal(10, 0)), (1, bal(10, 0)), 3), Committed),
            (read_all(&[bal(7, 1), bal(13, 1), bal(10, 0)]), Committed),
            (transfer(2, (1, bal(13, 1)), (2, bal(10, 0)), 5), Unknown),
            (transfer(3, (0, bal(7, 1)), (2, bal(10, 0)), 1), Aborted),
            (read_all(&[bal(7, 1), bal(8, 2), bal(15, 2)]), Committed),
        ]);
        let v = check_bank(&good, &initial, Isolation::StrictSerializable);
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.read_alls, 2);
        // A reader sees transfer 1's debit but not its credit.
        let mut partial = good.clone();
        partial[1].ops = read_all(&[bal(7, 1), bal(10, 0), bal(10, 0)]);
        let v = check_bank(&partial, &initial, Isolation::Serializable);
        assert!(
            v.anomalies.contains(&BankAnomaly::WrongTotal {
                txn: 1,
                found: 27,
                expected: 30
            }),
            "{v:?}"
        );
        assert!(
            v.anomalies.iter().any(|a| matches!(
                a,
                BankAnomaly::Txn(Anomaly::FracturedRead { writer: 0, .. })
            )),
            "{v:?}"
        );
        // A reader sees the aborted transfer 3.
        let mut aborted = good.clone();
        aborted[4].ops = read_all(&[bal(6, 3), bal(13, 1), bal(11, 3)]);
        let v = check_bank(&aborted, &initial, Isolation::Serializable);
        assert!(
            v.anomalies
                .iter()
                .any(|a| matches!(a, BankAnomaly::Txn(Anomaly::AbortedRead { writer: 3, .. }))),
            "{v:?}"
        );
        // A balance no one wrote.
        let mut garbage = good;
        garbage[1].ops = read_all(&[bal(8, 1), bal(12, 1), bal(10, 0)]);
        let v = check_bank(&garbage, &initial, Isolation::Serializable);
        assert_eq!(
            v.anomalies[..2],
            [
                BankAnomaly::UnknownBalance {
                    txn: 1,
                    account: 0,
                    balance: bal(8, 1)
                },
                BankAnomaly::UnknownBalance {
                    txn: 1,
                    account: 1,
                    balance: bal(12, 1)
                }
            ]
        );
    }

    #[test]
    fn values_round_trip_and_garbage_reads_as_garbage() {
        for tokens in [vec![], vec![7], vec![1, 20, 300]] {
            assert_eq!(decode_tokens(encode_tokens(&tokens).as_bytes()), tokens);
        }
        for bad in [&b"1,,2"[..], b"x", b"1,", b"\xff", b"18446744073709551615"] {
            assert_eq!(decode_tokens(bad), [GARBAGE_TOKEN], "{bad:?}");
        }
        let b = bal(-3, 17);
        assert_eq!(Balance::decode(b.encode().as_bytes()), Some(b));
        assert_eq!(Balance::decode(b"12"), None);
        assert_eq!(Balance::decode(b"a:1"), None);
    }

    /// A transaction to generate: per micro-operation whether it reads
    /// and which key; and its fate.
    #[derive(Clone, Debug)]
    struct Plan {
        ops: Vec<(bool, u64)>,
        /// 0: aborted; 1: unknown, took effect; 2: unknown, did not;
        /// otherwise committed.
        fate: u8,
    }

    fn plans() -> impl Strategy<Value = Vec<Plan>> {
        let plan = (
            prop::collection::vec((any::<bool>(), 0..3u64), 1..4),
            0..8u8,
        )
            .prop_map(|(ops, fate)| Plan { ops, fate });
        prop::collection::vec(plan, 1..7)
    }

    /// The history of running `plans` one after another.
    fn serial(plans: &[Plan]) -> Vec<Txn<Mop>> {
        let mut state: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut token = 0;
        let mut out = Vec::new();
        for (i, p) in plans.iter().enumerate() {
            let (outcome, applies) = match p.fate {
                0 => (Aborted, false),
                1 => (Unknown, true),
                2 => (Unknown, false),
                _ => (Committed, true),
            };
            let mut mine = state.clone();
            let mut ops = Vec::new();
            for &(is_read, key) in &p.ops {
                let now = mine.entry(key).or_default();
                if is_read {
                    ops.push(Mop::Read {
                        key,
                        value: (outcome == Committed).then(|| now.clone()),
                    });
                } else {
                    token += 1;
                    ops.push(Mop::Append {
                        key,
                        expect: now.clone(),
                        token,
                    });
                    now.push(token);
                }
            }
            if applies {
                state = mine;
            }
            let i = i as u64;
            out.push(Txn {
                client: i % 3,
                call: i,
                ret: Some(i),
                ops,
                outcome,
            });
        }
        out
    }

    /// The oracle: some order of the committed transactions, with any of
    /// the unknown ones, reproduces every committed read.
    fn serializable(history: &[Txn<Mop>]) -> bool {
        fn run(t: &Txn<Mop>, state: &BTreeMap<u64, Vec<u64>>) -> Option<BTreeMap<u64, Vec<u64>>> {
            let mut s = state.clone();
            for op in &t.ops {
                match op {
                    Mop::Read { key, value } => {
                        let now = s.get(key).cloned().unwrap_or_default();
                        if value.as_ref().is_some_and(|v| *v != now) {
                            return None;
                        }
                    }
                    Mop::Append { key, expect, token } => {
                        let now = s.entry(*key).or_default();
                        if now != expect {
                            return None;
                        }
                        now.push(*token);
                    }
                }
            }
            Some(s)
        }
        fn search(h: &[Txn<Mop>], left: &mut Vec<bool>, state: &BTreeMap<u64, Vec<u64>>) -> bool {
            let must = h
                .iter()
                .zip(left.iter())
                .any(|(t, &l)| l && t.outcome == Committed);
            if !must {
                return true;
            }
            for i in 0..h.len() {
                if !left[i] || h[i].outcome == Aborted {
                    continue;
                }
                if let Some(next) = run(&h[i], state) {
                    left[i] = false;
                    let found = search(h, left, &next);
                    left[i] = true;
                    if found {
                        return true;
                    }
                }
            }
            false
        }
        search(history, &mut vec![true; history.len()], &BTreeMap::new())
    }

    /// Changes one committed read (the `pick`th, wrapping), as `how` says;
    /// `None` if there is no committed read.
    fn mutate(history: &mut [Txn<Mop>], pick: usize, how: u8, garbage: u64) -> Option<()> {
        let mut reads: Vec<(usize, usize)> = Vec::new();
        for (i, t) in history.iter().enumerate() {
            for (j, op) in t.ops.iter().enumerate() {
                if t.outcome == Committed && matches!(op, Mop::Read { value: Some(_), .. }) {
                    reads.push((i, j));
                }
            }
        }
        let &(i, j) = reads.get(pick % reads.len().max(1))?;
        let tokens: Vec<u64> = history
            .iter()
            .flat_map(|t| &t.ops)
            .filter_map(|op| match op {
                Mop::Append { token, .. } => Some(*token),
                Mop::Read { .. } => None,
            })
            .collect();
        let Mop::Read { value: Some(v), .. } = history.get_mut(i)?.ops.get_mut(j)? else {
            return None;
        };
        match how % 5 {
            0 => {
                v.pop();
            }
            1 => v.clear(),
            2 => v.push(
                tokens
                    .get(garbage as usize % tokens.len().max(1))
                    .copied()
                    .unwrap_or(garbage),
            ),
            3 => v.push(1000 + garbage),
            _ => v.reverse(),
        }
        Some(())
    }

    proptest! {
        #[test]
        fn serial_histories_pass(plans in plans()) {
            let h = serial(&plans);
            let v = check_with(&h, Isolation::StrictSerializable);
            prop_assert!(v.ok(), "{}\n{v:?}", render(&h));
        }

        #[test]
        fn a_mutated_read_is_caught_iff_no_serial_order_explains_it(
            plans in plans(),
            pick in any::<usize>(),
            how in any::<u8>(),
            garbage in any::<u64>(),
        ) {
            let mut h = serial(&plans);
            prop_assume!(mutate(&mut h, pick, how, garbage % 1000).is_some());
            let v = check(&h);
            prop_assert_eq!(v.ok(), serializable(&h), "{}\n{:?}", render(&h), v);
        }
    }
}
