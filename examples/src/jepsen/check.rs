//! Checks a [`History`](super::history::History) of a key-value store of
//! registers: no acknowledged write lost, and linearizability by
//! `quorate-raft-core`'s Porcupine-style checker, one key at a time.
//!
//! Indeterminate writes (`info`, or never completed) enter the
//! linearizability check as writes that return at infinity, as in
//! Porcupine: the search may place them anywhere after their invocation,
//! including after every other operation (never taking effect). Failed
//! operations and reads that did not complete are left out: they had no
//! effect and returned nothing.

use std::collections::{BTreeMap, HashMap};

use quorate_raft_core::sim::linearizability::{self, Model, NotLinearizable, Operation};

use super::history::{Entry, Op, Outcome};

/// Registers, one per key; a read returns the last value written.
#[derive(Clone, Copy, Debug, Default)]
pub struct Registers;

impl Model for Registers {
    type State = Option<u64>;
    type Input = Op;
    /// What a read returned; writes return `None`.
    type Output = Option<u64>;

    fn init(&self) -> Option<u64> {
        None
    }

    fn step(&self, state: &Option<u64>, input: &Op, output: &Option<u64>) -> Option<Option<u64>> {
        match *input {
            Op::Write { value, .. } => Some(Some(value)),
            Op::Read { .. } => (output == state).then_some(*state),
        }
    }

    fn partition(&self, input: &Op) -> u64 {
        input.key()
    }
}

/// The operations of `entries` the linearizability checker sees.
pub fn operations(entries: &[Entry]) -> Vec<Operation<Op, Option<u64>>> {
    let mut ops = Vec::new();
    for e in entries {
        let (ret, output) = match (&e.op, &e.outcome, e.ret) {
            (Op::Write { .. }, Some(Outcome::Written), Some(ret)) => (ret, None),
            (Op::Read { .. }, Some(Outcome::Read(v)), Some(ret)) => (ret, *v),
            (Op::Write { .. }, Some(Outcome::Info(_)) | None, _) => (u64::MAX, None),
            _ => continue,
        };
        ops.push(Operation {
            client: e.client,
            call: e.call,
            ret,
            input: e.op,
            output,
        });
    }
    ops
}

/// An acknowledged write the final state does not account for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostWrite {
    /// The key.
    pub key: u64,
    /// The value acknowledged.
    pub value: u64,
    /// When the write was invoked and acknowledged.
    pub call: u64,
    /// When it was acknowledged.
    pub ret: u64,
    /// What the key held at the end.
    pub found: Option<u64>,
    /// Why that does not account for the write.
    pub why: String,
}

/// What [`check`] found.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// Acknowledged writes neither visible nor overwritten at the end.
    pub lost: Vec<LostWrite>,
    /// The first key whose history has no linearization, if any.
    pub violation: Option<NotLinearizable>,
    /// Acknowledged writes checked against the final state.
    pub acked_writes: usize,
}

impl Verdict {
    /// Nothing wrong.
    pub fn ok(&self) -> bool {
        self.lost.is_empty() && self.violation.is_none()
    }
}

/// Acknowledged writes lost: `finals` is what each key held at the end
/// (read after the faults healed). A write is accounted for if the key
/// holds its value, or a value whose write did not finish before it was
/// invoked (so may have come later). Keys missing from `finals` are not
/// judged.
pub fn lost_writes(entries: &[Entry], finals: &BTreeMap<u64, Option<u64>>) -> Vec<LostWrite> {
    let writes: HashMap<(u64, u64), &Entry> = entries
        .iter()
        .filter_map(|e| match e.op {
            Op::Write { key, value } => Some(((key, value), e)),
            Op::Read { .. } => None,
        })
        .collect();
    let acked_ret = |e: &Entry| match e.outcome {
        Some(Outcome::Written) => e.ret,
        _ => None,
    };
    let mut lost = Vec::new();
    for e in entries {
        let (Op::Write { key, value }, Some(ret)) = (e.op, acked_ret(e)) else {
            continue;
        };
        let Some(&found) = finals.get(&key) else {
            continue;
        };
        let why = match found {
            Some(v) if v == value => continue,
            None => "the key is absent".to_owned(),
            Some(v) => match writes.get(&(key, v)) {
                None => format!("{v} was never written"),
                Some(other) => match (&other.outcome, acked_ret(other)) {
                    (Some(Outcome::Fail(why)), _) => {
                        format!("{v} is from a write that failed ({why})")
                    }
                    (_, Some(other_ret)) if other_ret < e.call => format!(
                        "{v} was acknowledged at {:.3} ms, before this write began",
                        other_ret as f64 / 1e6
                    ),
                    _ => continue,
                },
            },
        };
        lost.push(LostWrite {
            key,
            value,
            call: e.call,
            ret,
            found,
            why,
        });
    }
    lost
}

/// Checks `entries` (which should include the final reads) for lost
/// writes against `finals` and for linearizability.
pub fn check(entries: &[Entry], finals: &BTreeMap<u64, Option<u64>>) -> Verdict {
    let lost = lost_writes(entries, finals);
    let violation = linearizability::check(&Registers, &operations(entries)).err();
    let acked_writes = entries
        .iter()
        .filter(|e| matches!(e.op, Op::Write { .. }) && e.outcome == Some(Outcome::Written))
        .count();
    Verdict {
        lost,
        violation,
        acked_writes,
    }
}
