//! The replicated state machine of one shard replica: a key-value map whose
//! writes are deduplicated by request id, summarised by a Merkle tree over
//! a fixed partition of the key space.

use std::collections::{BTreeMap, HashMap};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use quorate_consistent_hash::{KeyHasher, Xxh3};
use quorate_merkle::{MerkleTree, Sha256};

use super::Error;
use super::protocol::Command;

/// Leaves of the Merkle tree: keys fall into this many buckets by hash, so
/// two replicas' trees line up leaf by leaf whatever keys they hold, and a
/// differing leaf names the bucket to repair.
pub const BUCKETS: u64 = 64;

/// Seed of the bucket hash (distinct from the shard placement's).
const BUCKET_SEED: u64 = 0x6b76_2d62_7563_6b74;

/// A stored value with its HLC stamp and the request that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Bytes,
    /// The HLC stamp the leader gave the write.
    pub stamp: u64,
    /// The request id that wrote it.
    pub request: u64,
}

/// One shard replica's key-value store.
#[derive(Clone, Debug, Default)]
pub struct KvStore {
    data: BTreeMap<String, Versioned>,
    /// How many times each request id changed the store: 1 for every
    /// applied write, whatever the number of retries.
    applications: HashMap<u64, u32>,
    /// Log entries carrying an already-applied request id (retries that
    /// reached the log twice), skipped.
    duplicates_skipped: u64,
    /// Client retries of applied requests answered without proposing again.
    retries_answered: u64,
    /// Snapshots from the leader this replica restored itself from.
    installed: Vec<InstalledSnapshot>,
}

/// A leader's snapshot a replica restored itself from (InstallSnapshot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstalledSnapshot {
    /// The last log index the snapshot covers.
    pub index: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

impl KvStore {
    /// Applies a committed command; returns whether it changed the store
    /// (false for a duplicate of an applied request).
    pub fn apply(&mut self, command: Command) -> bool {
        if self.applications.contains_key(&command.request) {
            self.duplicates_skipped += 1;
            return false;
        }
        *self.applications.entry(command.request).or_insert(0) += 1;
        self.data.insert(
            command.key,
            Versioned {
                value: command.value,
                stamp: command.stamp,
                request: command.request,
            },
        );
        true
    }

    /// Serializes the replicated state (values with their stamps and the
    /// request-id dedup table) as a snapshot: `keys u32`, then
    /// `key_len u32 | key | value_len u32 | value | stamp u64 | request u64`
    /// each, then `requests u32`, then `request u64 | applications u32` each.
    /// The counters of this process's run are not replicated state.
    pub fn snapshot(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u32(self.data.len() as u32);
        for (key, v) in &self.data {
            out.put_u32(key.len() as u32);
            out.put_slice(key.as_bytes());
            out.put_u32(v.value.len() as u32);
            out.put_slice(&v.value);
            out.put_u64(v.stamp);
            out.put_u64(v.request);
        }
        let mut requests: Vec<_> = self.applications.iter().collect();
        requests.sort();
        out.put_u32(requests.len() as u32);
        for (&request, &n) in requests {
            out.put_u64(request);
            out.put_u32(n);
        }
        out.freeze()
    }

    /// Replaces the replicated state with a [`snapshot`](Self::snapshot);
    /// on malformed bytes returns an error and changes nothing.
    pub fn restore(&mut self, mut src: Bytes) -> Result<(), Error> {
        const BAD: Error = Error::Malformed("kv snapshot");
        fn take(src: &mut Bytes, n: usize) -> Result<Bytes, Error> {
            if src.remaining() < n {
                return Err(BAD);
            }
            Ok(src.split_to(n))
        }
        fn u32_of(src: &mut Bytes) -> Result<u32, Error> {
            Ok(take(src, 4)?.get_u32())
        }
        fn u64_of(src: &mut Bytes) -> Result<u64, Error> {
            Ok(take(src, 8)?.get_u64())
        }
        let mut data = BTreeMap::new();
        for _ in 0..u32_of(&mut src)? {
            let len = u32_of(&mut src)? as usize;
            let key = String::from_utf8(take(&mut src, len)?.to_vec()).map_err(|_| BAD)?;
            let len = u32_of(&mut src)? as usize;
            let value = take(&mut src, len)?;
            let stamp = u64_of(&mut src)?;
            let request = u64_of(&mut src)?;
            data.insert(
                key,
                Versioned {
                    value,
                    stamp,
                    request,
                },
            );
        }
        let mut applications = HashMap::new();
        for _ in 0..u32_of(&mut src)? {
            let request = u64_of(&mut src)?;
            applications.insert(request, u32_of(&mut src)?);
        }
        if src.has_remaining() {
            return Err(BAD);
        }
        self.data = data;
        self.applications = applications;
        Ok(())
    }

    /// Restores from a leader's snapshot and remembers that it did.
    pub fn install(&mut self, index: u64, snapshot: Bytes) -> Result<(), Error> {
        let bytes = snapshot.len() as u64;
        self.restore(snapshot)?;
        self.installed.push(InstalledSnapshot { index, bytes });
        Ok(())
    }

    /// The leader's snapshots this replica installed since the process started.
    pub fn installed(&self) -> &[InstalledSnapshot] {
        &self.installed
    }

    /// Whether the request was already applied.
    pub fn is_applied(&self, request: u64) -> bool {
        self.applications.contains_key(&request)
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&Versioned> {
        self.data.get(key)
    }

    /// Every key and value, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&String, &Versioned)> {
        self.data.iter()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the store holds no keys.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Applications per request id.
    pub fn applications(&self) -> &HashMap<u64, u32> {
        &self.applications
    }

    /// Notes a retry of an applied request answered from the dedup table.
    pub fn note_retry_answered(&mut self) {
        self.retries_answered += 1;
    }

    /// Retries of applied requests answered without proposing again.
    pub fn retries_answered(&self) -> u64 {
        self.retries_answered
    }

    /// Log entries skipped as duplicates.
    pub fn duplicates_skipped(&self) -> u64 {
        self.duplicates_skipped
    }

    /// The bucket (Merkle leaf) a key belongs to.
    pub fn bucket(key: &str) -> u64 {
        Xxh3.hash(key.as_bytes(), BUCKET_SEED) % BUCKETS
    }

    /// The Merkle tree over the key space: leaf `b` hashes the sorted
    /// `(key, value, stamp)` triples of bucket `b`.
    pub fn merkle_tree(&self) -> MerkleTree<Sha256> {
        let mut leaves = vec![BytesMut::new(); BUCKETS as usize];
        for (key, v) in &self.data {
            if let Some(leaf) = leaves.get_mut(Self::bucket(key) as usize) {
                leaf.put_u32(key.len() as u32);
                leaf.put_slice(key.as_bytes());
                leaf.put_u32(v.value.len() as u32);
                leaf.put_slice(&v.value);
                leaf.put_u64(v.stamp);
            }
        }
        MerkleTree::from_leaves(leaves.iter().map(|l| &l[..]))
    }

    /// The Merkle leaf hash of every bucket.
    pub fn leaf_hashes(&self) -> Vec<[u8; 32]> {
        let tree = self.merkle_tree();
        (0..BUCKETS)
            .filter_map(|b| tree.leaf_hash(b))
            .map(|h| h.0)
            .collect()
    }

    /// The keys of bucket `b`, with their values.
    pub fn bucket_entries(&self, b: u64) -> Vec<(String, Versioned)> {
        self.data
            .iter()
            .filter(|(k, _)| Self::bucket(k) == b)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Replaces bucket `b` with `entries` (anti-entropy repair from a
    /// replica whose leaf hash the quorum agrees on).
    pub fn replace_bucket(&mut self, b: u64, entries: Vec<(String, Versioned)>) {
        self.data.retain(|k, _| Self::bucket(k) != b);
        self.data.extend(entries);
    }

    /// Overwrites a value without going through the log: models a replica
    /// whose disk or memory silently corrupted a value.
    pub fn corrupt(&mut self, key: &str, value: Bytes) {
        if let Some(v) = self.data.get_mut(key) {
            v.value = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(request: u64, key: &str, value: &'static [u8]) -> Command {
        Command {
            request,
            stamp: request,
            key: key.into(),
            value: Bytes::from_static(value),
        }
    }

    #[test]
    fn a_request_applies_once_and_roots_track_content() {
        let mut a = KvStore::default();
        let mut b = KvStore::default();
        assert!(a.apply(put(1, "x", b"1")));
        assert!(!a.apply(put(1, "x", b"2")), "retry of request 1");
        assert_eq!(a.get("x").unwrap().value, Bytes::from_static(b"1"));
        assert_eq!(a.duplicates_skipped(), 1);
        assert_ne!(a.merkle_tree().root(), b.merkle_tree().root());
        b.apply(put(1, "x", b"1"));
        assert_eq!(a.merkle_tree().root(), b.merkle_tree().root());
        b.corrupt("x", Bytes::from_static(b"rot"));
        let diff = quorate_merkle::diff::diff(&a.merkle_tree(), &b.merkle_tree());
        let bucket = KvStore::bucket("x");
        assert_eq!(diff, vec![bucket..bucket + 1]);
        b.replace_bucket(bucket, a.bucket_entries(bucket));
        assert_eq!(a.merkle_tree().root(), b.merkle_tree().root());
    }

    #[test]
    fn a_restored_snapshot_keeps_values_stamps_and_the_dedup_table() {
        let mut a = KvStore::default();
        a.apply(put(7, "x", b"1"));
        a.apply(put(9, "y", b"2"));
        let mut b = KvStore::default();
        b.apply(put(3, "stale", b"0"));
        b.install(2, a.snapshot()).unwrap();
        assert_eq!(b.merkle_tree().root(), a.merkle_tree().root());
        assert_eq!(b.get("x"), a.get("x"));
        assert!(b.get("stale").is_none());
        assert!(!b.apply(put(7, "x", b"again")), "retry after restore");
        assert_eq!(b.applications().get(&7), Some(&1));
        assert_eq!(
            b.installed(),
            &[InstalledSnapshot {
                index: 2,
                bytes: a.snapshot().len() as u64
            }]
        );
        // Truncated bytes are refused and change nothing.
        let full = a.snapshot();
        let mut c = KvStore::default();
        assert!(c.restore(full.slice(..full.len() - 1)).is_err());
        assert!(c.is_empty());
    }
}
