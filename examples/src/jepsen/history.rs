//! A history of client operations as Jepsen records it: each operation
//! is invoked, then completes `ok`, `fail` (certainly had no effect) or
//! `info` (indeterminate: it may or may not have taken effect, and may
//! still take effect later). Times are nanoseconds since the history
//! began, on one monotonic clock shared by every client.

use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// What a client asked. Keys are small integers (`key` names the key
/// `jk<key>` in the store), values are unique integers, so a value read
/// names the one write that wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Write `value` under `key`.
    Write {
        /// The key.
        key: u64,
        /// The value, unique over the history.
        value: u64,
    },
    /// Read `key`.
    Read {
        /// The key.
        key: u64,
    },
}

impl Op {
    /// The key the operation touches.
    pub fn key(&self) -> u64 {
        match *self {
            Op::Write { key, .. } | Op::Read { key } => key,
        }
    }
}

/// How an operation completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A write was acknowledged.
    Written,
    /// A read returned this value (`None`: the key was absent). A value
    /// that is not one of the history's integers reads as `u64::MAX`,
    /// which no write writes.
    Read(Option<u64>),
    /// The operation certainly had no effect (the reason).
    Fail(String),
    /// Unknown whether it took effect (the reason: a timeout, ...).
    Info(String),
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The client (worker) that issued it.
    pub client: u64,
    /// What it asked.
    pub op: Op,
    /// When it was invoked.
    pub call: u64,
    /// When it completed, if it did.
    pub ret: Option<u64>,
    /// How it completed, if it did (an operation never completed is
    /// indeterminate).
    pub outcome: Option<Outcome>,
}

/// Counts of a history's outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Acknowledged writes and successful reads.
    pub ok: usize,
    /// Of those, reads.
    pub ok_reads: usize,
    /// Operations that certainly failed.
    pub fail: usize,
    /// Indeterminate operations (and those never completed).
    pub info: usize,
}

/// A history shared by concurrent clients.
#[derive(Debug)]
pub struct History {
    start: Instant,
    entries: Mutex<Vec<Entry>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        History {
            start: Instant::now(),
            entries: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Nanoseconds since the history began.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records that `client` invokes `op`; returns the entry's index for
    /// [`complete`](Self::complete).
    pub fn invoke(&self, client: u64, op: Op) -> usize {
        let call = self.now();
        let mut entries = self.lock();
        entries.push(Entry {
            client,
            op,
            call,
            ret: None,
            outcome: None,
        });
        entries.len() - 1
    }

    /// Records how entry `index` completed.
    pub fn complete(&self, index: usize, outcome: Outcome) {
        let ret = self.now();
        if let Some(e) = self.lock().get_mut(index) {
            e.ret = Some(ret);
            e.outcome = Some(outcome);
        }
    }

    /// A copy of the entries, in invocation order.
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().clone()
    }

    /// The outcome counts.
    pub fn counts(&self) -> Counts {
        counts(&self.lock())
    }
}

/// The outcome counts of `entries`.
pub fn counts(entries: &[Entry]) -> Counts {
    let mut c = Counts::default();
    for e in entries {
        match &e.outcome {
            Some(Outcome::Written) => c.ok += 1,
            Some(Outcome::Read(_)) => {
                c.ok += 1;
                c.ok_reads += 1;
            }
            Some(Outcome::Fail(_)) => c.fail += 1,
            Some(Outcome::Info(_)) | None => c.info += 1,
        }
    }
    c
}

/// One line per entry, Jepsen-like: `call ret client op outcome`, times in
/// milliseconds.
pub fn render(entries: &[Entry]) -> String {
    let mut out = String::new();
    for e in entries {
        let ms = |t: u64| t as f64 / 1e6;
        let ret = e.ret.map_or("-".to_owned(), |r| format!("{:.3}", ms(r)));
        let op = match e.op {
            Op::Write { key, value } => format!("write jk{key} {value}"),
            Op::Read { key } => format!("read jk{key}"),
        };
        let outcome = match &e.outcome {
            Some(Outcome::Written) => "ok".to_owned(),
            Some(Outcome::Read(v)) => format!("ok {v:?}"),
            Some(Outcome::Fail(why)) => format!("fail {why}"),
            Some(Outcome::Info(why)) => format!("info {why}"),
            None => "info never completed".to_owned(),
        };
        let _ = writeln!(out, "{:.3} {ret} c{} {op} {outcome}", ms(e.call), e.client);
    }
    out
}
