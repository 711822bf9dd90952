//! A key-value state machine with client sessions: each command carries a
//! [`ClientSeq`] (client, sequence number), and a retried command that
//! was already applied returns the recorded answer instead of applying
//! twice (Raft thesis §6.3).

use super::StateMachine;
use super::linearizability::Model;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::collections::BTreeMap;

/// A client's session position: which client, and its sequence number. It
/// names one logical request for deduplication (retries reuse it); it is not
/// a reply-correlation id like the transport's `RequestId`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientSeq {
    /// The client.
    pub client: u32,
    /// The client's sequence number; a client has one request outstanding
    /// and numbers them upwards.
    pub seq: u64,
}

/// An operation on the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// Reads a key.
    Get {
        /// The key.
        key: u8,
    },
    /// Writes a key.
    Put {
        /// The key.
        key: u8,
        /// The new value.
        value: u64,
    },
    /// Writes `new` if the key holds `expected`.
    Cas {
        /// The key.
        key: u8,
        /// The value the key must hold.
        expected: u64,
        /// The value to write.
        new: u64,
    },
}

impl KvOp {
    /// A simulated client's next operation on `key`: a get for kind 0, a
    /// put for 1, a compare-and-set otherwise, with values below 10 (so
    /// compare-and-sets succeed often enough to matter).
    pub(crate) fn draw(kind: u8, key: u8, rng: &mut fastrand::Rng) -> KvOp {
        match kind {
            0 => KvOp::Get { key },
            1 => KvOp::Put {
                key,
                value: rng.u64(..10),
            },
            _ => KvOp::Cas {
                key,
                expected: rng.u64(..10),
                new: rng.u64(..10),
            },
        }
    }

    /// The key the operation touches.
    pub fn key(&self) -> u8 {
        match *self {
            KvOp::Get { key } | KvOp::Put { key, .. } | KvOp::Cas { key, .. } => key,
        }
    }
}

/// The store's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvOutput {
    /// The value read (`None`: never written).
    Value(Option<u64>),
    /// A put succeeded.
    Written,
    /// Whether a compare-and-set swapped.
    Swapped(bool),
}

/// A command as proposed to Raft: the client's sequence number and the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvCommand {
    /// Unique per logical request.
    pub id: ClientSeq,
    /// What to do.
    pub op: KvOp,
}

impl KvCommand {
    /// The wire form: client, seq, tag, key, then the values.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(30);
        b.put_u32(self.id.client);
        b.put_u64(self.id.seq);
        match self.op {
            KvOp::Get { key } => {
                b.put_u8(0);
                b.put_u8(key);
            }
            KvOp::Put { key, value } => {
                b.put_u8(1);
                b.put_u8(key);
                b.put_u64(value);
            }
            KvOp::Cas { key, expected, new } => {
                b.put_u8(2);
                b.put_u8(key);
                b.put_u64(expected);
                b.put_u64(new);
            }
        }
        b.freeze()
    }

    /// Parses the wire form; `None` if malformed.
    pub fn decode(mut b: &[u8]) -> Option<Self> {
        if b.remaining() < 14 {
            return None;
        }
        let client = b.get_u32();
        let seq = b.get_u64();
        let tag = b.get_u8();
        let key = b.get_u8();
        let op = match (tag, b.remaining()) {
            (0, 0) => KvOp::Get { key },
            (1, 8) => KvOp::Put {
                key,
                value: b.get_u64(),
            },
            (2, 16) => KvOp::Cas {
                key,
                expected: b.get_u64(),
                new: b.get_u64(),
            },
            _ => return None,
        };
        Some(KvCommand {
            id: ClientSeq { client, seq },
            op,
        })
    }
}

/// The replicated key-value store with per-client deduplication.
#[derive(Clone, Debug, Default)]
pub struct KvStore {
    data: BTreeMap<u8, u64>,
    /// Per client: the last applied sequence number and its answer.
    sessions: BTreeMap<u32, (u64, KvOutput)>,
    /// How many commands changed or read state (not deduplicated).
    executed: u64,
    /// Commands deduplicated because they were retries.
    deduplicated: u64,
}

impl KvStore {
    /// The current value of `key`.
    pub fn get(&self, key: u8) -> Option<u64> {
        self.data.get(&key).copied()
    }

    /// How many commands were executed and how many were retries answered
    /// from the session table.
    pub fn counts(&self) -> (u64, u64) {
        (self.executed, self.deduplicated)
    }

    /// Parses what [`StateMachine::snapshot`] wrote; `None` if malformed
    /// (the empty snapshot of a fresh log included).
    fn decode(mut b: &[u8]) -> Option<KvStore> {
        let mut store = KvStore::default();
        if b.remaining() < 4 {
            return None;
        }
        for _ in 0..b.get_u32() {
            if b.remaining() < 9 {
                return None;
            }
            let key = b.get_u8();
            store.data.insert(key, b.get_u64());
        }
        if b.remaining() < 4 {
            return None;
        }
        for _ in 0..b.get_u32() {
            if b.remaining() < 21 {
                return None;
            }
            let client = b.get_u32();
            let seq = b.get_u64();
            let tag = b.get_u8();
            let value = b.get_u64();
            let out = match tag {
                0 => KvOutput::Value(None),
                1 => KvOutput::Value(Some(value)),
                2 => KvOutput::Written,
                3 => KvOutput::Swapped(value != 0),
                _ => return None,
            };
            store.sessions.insert(client, (seq, out));
        }
        if b.remaining() != 16 {
            return None;
        }
        store.executed = b.get_u64();
        store.deduplicated = b.get_u64();
        Some(store)
    }

    fn execute(&mut self, op: KvOp) -> KvOutput {
        self.executed += 1;
        match op {
            KvOp::Get { key } => KvOutput::Value(self.get(key)),
            KvOp::Put { key, value } => {
                self.data.insert(key, value);
                KvOutput::Written
            }
            KvOp::Cas { key, expected, new } => {
                let swap = self.get(key) == Some(expected);
                if swap {
                    self.data.insert(key, new);
                }
                KvOutput::Swapped(swap)
            }
        }
    }
}

impl StateMachine for KvStore {
    type Response = (ClientSeq, KvOutput);

    fn apply(&mut self, data: &Bytes) -> Option<Self::Response> {
        let cmd = KvCommand::decode(data)?;
        let id = cmd.id;
        match self.sessions.get(&id.client) {
            Some((seq, out)) if *seq == id.seq => {
                self.deduplicated += 1;
                return Some((id, *out));
            }
            // An older retry: the client has moved on and waits for nobody.
            Some((seq, _)) if *seq > id.seq => {
                self.deduplicated += 1;
                return None;
            }
            _ => {}
        }
        let out = self.execute(cmd.op);
        self.sessions.insert(id.client, (id.seq, out));
        Some((id, out))
    }

    /// The values, the session table (so retries stay deduplicated after a
    /// restore) and the counters.
    fn snapshot(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u32(self.data.len() as u32);
        for (key, value) in &self.data {
            b.put_u8(*key);
            b.put_u64(*value);
        }
        b.put_u32(self.sessions.len() as u32);
        for (client, (seq, out)) in &self.sessions {
            b.put_u32(*client);
            b.put_u64(*seq);
            let (tag, value) = match *out {
                KvOutput::Value(None) => (0, 0),
                KvOutput::Value(Some(v)) => (1, v),
                KvOutput::Written => (2, 0),
                KvOutput::Swapped(swapped) => (3, u64::from(swapped)),
            };
            b.put_u8(tag);
            b.put_u64(value);
        }
        b.put_u64(self.executed);
        b.put_u64(self.deduplicated);
        b.freeze()
    }

    fn restore(&mut self, snapshot: &Bytes) {
        *self = KvStore::decode(snapshot).unwrap_or_default();
    }

    /// Answers a `Get` from the current state; other operations are not
    /// read-only and get no answer.
    fn query(&self, query: &Bytes) -> Option<Self::Response> {
        let cmd = KvCommand::decode(query)?;
        match cmd.op {
            KvOp::Get { key } => Some((cmd.id, KvOutput::Value(self.get(key)))),
            _ => None,
        }
    }
}

/// The sequential specification of one key of the store, for the
/// linearizability checker.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvModel;

impl Model for KvModel {
    type State = Option<u64>;
    type Input = KvOp;
    type Output = KvOutput;

    fn init(&self) -> Option<u64> {
        None
    }

    fn step(&self, state: &Option<u64>, input: &KvOp, output: &KvOutput) -> Option<Option<u64>> {
        match (*input, *output) {
            (KvOp::Get { .. }, KvOutput::Value(v)) => (v == *state).then_some(*state),
            (KvOp::Put { value, .. }, KvOutput::Written) => Some(Some(value)),
            (KvOp::Cas { expected, new, .. }, KvOutput::Swapped(swapped)) => {
                let would = *state == Some(expected);
                (would == swapped).then_some(if would { Some(new) } else { *state })
            }
            _ => None,
        }
    }

    fn partition(&self, input: &KvOp) -> u64 {
        u64::from(input.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(client: u32, seq: u64, op: KvOp) -> Bytes {
        KvCommand {
            id: ClientSeq { client, seq },
            op,
        }
        .encode()
    }

    #[test]
    fn commands_round_trip_and_garbage_is_refused() {
        for op in [
            KvOp::Get { key: 3 },
            KvOp::Put { key: 1, value: 9 },
            KvOp::Cas {
                key: 2,
                expected: 4,
                new: 5,
            },
        ] {
            let c = KvCommand {
                id: ClientSeq { client: 7, seq: 11 },
                op,
            };
            assert_eq!(KvCommand::decode(&c.encode()), Some(c));
        }
        assert_eq!(KvCommand::decode(b"short"), None);
        let mut long = cmd(1, 1, KvOp::Get { key: 0 }).to_vec();
        long.push(0);
        assert_eq!(KvCommand::decode(&long), None);
    }

    #[test]
    fn a_retried_put_applies_once() {
        let mut kv = KvStore::default();
        let put = cmd(1, 1, KvOp::Put { key: 0, value: 10 });
        assert!(kv.apply(&put).is_some());
        // Another client overwrites, then the retry of the first put arrives.
        kv.apply(&cmd(2, 1, KvOp::Put { key: 0, value: 20 }));
        assert_eq!(
            kv.apply(&put),
            Some((ClientSeq { client: 1, seq: 1 }, KvOutput::Written))
        );
        assert_eq!(kv.get(0), Some(20), "the retry did not write again");
        assert_eq!(kv.counts(), (2, 1));
        // A stale retry after the client moved on is dropped silently.
        kv.apply(&cmd(1, 2, KvOp::Get { key: 0 }));
        assert_eq!(kv.apply(&put), None);
    }

    #[test]
    fn cas_swaps_only_on_the_expected_value() {
        let mut kv = KvStore::default();
        let cas = |seq, expected, new| {
            cmd(
                1,
                seq,
                KvOp::Cas {
                    key: 0,
                    expected,
                    new,
                },
            )
        };
        assert_eq!(
            kv.apply(&cas(1, 0, 1)).map(|r| r.1),
            Some(KvOutput::Swapped(false))
        );
        kv.apply(&cmd(1, 2, KvOp::Put { key: 0, value: 5 }));
        assert_eq!(
            kv.apply(&cas(3, 5, 6)).map(|r| r.1),
            Some(KvOutput::Swapped(true))
        );
        assert_eq!(kv.get(0), Some(6));
        // The model agrees.
        assert_eq!(
            KvModel.step(
                &Some(5),
                &KvOp::Cas {
                    key: 0,
                    expected: 5,
                    new: 6
                },
                &KvOutput::Swapped(true)
            ),
            Some(Some(6))
        );
        assert_eq!(
            KvModel.step(
                &Some(4),
                &KvOp::Cas {
                    key: 0,
                    expected: 5,
                    new: 6
                },
                &KvOutput::Swapped(true)
            ),
            None
        );
    }
}
