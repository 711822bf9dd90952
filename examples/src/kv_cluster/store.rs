//! The replicated state machine of one shard replica: a key-value map, a
//! table of client sessions that makes every write apply once (Raft thesis
//! §6.3), and a Merkle tree over a fixed partition of the key space.
//!
//! Sessions: a client registers one through the log (the session id is the
//! index of the register entry, so ids never collide) and numbers its
//! writes 1, 2, ... within it, one write in flight at a time. The store
//! keeps, per session, the highest sequence number it applied; a write
//! whose number is not above it is a retry and is answered (for a put the
//! answer is always "written") without applying it again. Sessions expire
//! by the time carried in the log, never by a replica's own clock: every
//! command carries its leader's HLC stamp, the store keeps the largest
//! physical time it applied (`log_time`), and when it applies an entry it
//! drops the sessions idle for longer than [`SessionLimits::timeout_ms`]
//! at that time. The table also holds at most
//! [`SessionLimits::max_sessions`]; registering one more evicts the least
//! recently active. Both rules depend only on the entries, so every replica
//! drops the same sessions at the same index. Every replica of a shard must
//! use the same limits.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use quorate_clocks::HlcTimestamp;
use quorate_consistent_hash::{KeyHasher, Xxh3};
use quorate_merkle::{MerkleTree, Sha256};

use super::Error;
use super::protocol::{Command, Reply};
use super::txn::{IntentRef, ReadValue, TxnCommand, TxnId, TxnLimit, TxnOp, TxnReply, TxnStatus};

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
    /// The correlation id of the request that wrote it (informational:
    /// writes are deduplicated by session, not by this id).
    pub request: u64,
}

/// How long sessions live and how many a replica keeps. Replicated
/// behaviour: every replica of a shard must use the same limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// A session with no applied entry for longer than this (in log time,
    /// milliseconds) is dropped.
    pub timeout_ms: u64,
    /// The most sessions kept; registering one more evicts the least
    /// recently active.
    pub max_sessions: usize,
}

impl SessionLimits {
    /// Default session timeout: 10 minutes of log time.
    pub const TIMEOUT_MS: u64 = 10 * 60 * 1000;
    /// Default session cap: 64k sessions (24 bytes each in a snapshot).
    pub const MAX_SESSIONS: usize = 1 << 16;
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            timeout_ms: Self::TIMEOUT_MS,
            max_sessions: Self::MAX_SESSIONS,
        }
    }
}

/// One client session as the state machine keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    /// The highest sequence number applied (0: none yet). What a retry
    /// must be answered needs no storing: a put's answer is always
    /// [`Reply::Written`] (with an index at or after the write's).
    pub last_seq: u64,
    /// The log time (ms) of the session's last applied entry.
    pub last_active: u64,
}

/// How many transaction records, intents and resolutions a replica keeps,
/// and for how long. Replicated behaviour: every replica of a shard must
/// use the same limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnLimits {
    /// Records kept (pending, committed, and finished ones kept as
    /// tombstones). A new record past it evicts the oldest finished one;
    /// with none to evict, the prepare is refused ([`TxnLimit::Records`]).
    pub max_records: usize,
    /// Intents kept; a prepare that would pass it is refused
    /// ([`TxnLimit::Intents`]).
    pub max_intents: usize,
    /// Resolutions remembered (so a late copy of a prepare cannot write an
    /// intent again); past it the oldest is forgotten.
    pub max_resolved: usize,
    /// How long (log time, ms) finished records and resolutions are kept.
    pub retention_ms: u64,
    /// The longest time to live a record gets, whatever its begin asks.
    pub max_ttl_ms: u64,
}

impl TxnLimits {
    /// Default record cap.
    pub const MAX_RECORDS: usize = 1 << 16;
    /// Default intent cap.
    pub const MAX_INTENTS: usize = 1 << 16;
    /// Default cap of remembered resolutions.
    pub const MAX_RESOLVED: usize = 1 << 16;
    /// Default retention: 10 minutes of log time, the session timeout
    /// ([`SessionLimits::TIMEOUT_MS`]): the same bound on how late a copy
    /// of a request may still reach the log. (Under load the record cap
    /// evicts the oldest tombstones sooner.)
    pub const RETENTION_MS: u64 = SessionLimits::TIMEOUT_MS;
    /// Default longest time to live: a minute.
    pub const MAX_TTL_MS: u64 = 60_000;
}

impl Default for TxnLimits {
    fn default() -> Self {
        TxnLimits {
            max_records: Self::MAX_RECORDS,
            max_intents: Self::MAX_INTENTS,
            max_resolved: Self::MAX_RESOLVED,
            retention_ms: Self::RETENTION_MS,
            max_ttl_ms: Self::MAX_TTL_MS,
        }
    }
}

/// A transaction record, as its anchor keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnRecord {
    /// The shard of the record (this one).
    pub anchor: u32,
    /// Its priority.
    pub priority: u64,
    /// Log time (ms) past which it can no longer commit.
    pub expiry: u64,
    /// The shards it spans.
    pub participants: Vec<u32>,
    /// Where it is.
    pub status: TxnStatus,
    /// Log time it finished (aborted, or committed and forgotten): from
    /// then on it is a tombstone, dropped after the retention.
    pub finished_at: Option<u64>,
}

/// An intent on a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    /// The transaction.
    pub txn: TxnId,
    /// Its anchor.
    pub anchor: u32,
    /// The provisional value (none: a read lock).
    pub value: Option<Bytes>,
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A session was opened with this id.
    Registered {
        /// The session id (the entry's index).
        session: u64,
    },
    /// The write changed the store.
    Written,
    /// The write's sequence number was already applied: skipped.
    Duplicate,
    /// The write's session is unknown (expired, evicted or never opened):
    /// skipped.
    SessionExpired,
    /// The put's key holds a transaction's intent: not applied, and not
    /// recorded in its session (the same write may be sent again).
    Blocked(IntentRef),
    /// A transaction step, with its answer.
    Txn(TxnReply),
}

impl Applied {
    /// The answer to the client whose request this was, applied as the
    /// entry at `index` (a write's answer carries it: the session token).
    pub fn reply(self, index: u64) -> Reply {
        match self {
            Applied::Registered { session } => Reply::Registered { session },
            Applied::Written | Applied::Duplicate => Reply::Written { index },
            Applied::SessionExpired => Reply::SessionExpired,
            Applied::Blocked(intent) => Reply::Intent(intent),
            Applied::Txn(reply) => Reply::Txn(reply),
        }
    }
}

/// One shard replica's key-value store.
#[derive(Clone, Debug, Default)]
pub struct KvStore {
    data: BTreeMap<String, Versioned>,
    limits: SessionLimits,
    /// The largest physical time (ms) of any applied command's stamp.
    log_time: u64,
    sessions: HashMap<u64, Session>,
    /// `(last_active, session)` of every session: the expiry and eviction
    /// order (ties broken by id, so it is the same on every replica).
    by_activity: BTreeSet<(u64, u64)>,
    /// How many times this process applied each write, if auditing is on
    /// (tests and the scenario; not replicated, not in snapshots).
    audit: Option<HashMap<(u64, u64), u32>>,
    /// Sessions dropped by the timeout, and by the cap.
    expired: u64,
    evicted: u64,
    /// Log entries carrying an already-applied sequence number (retries
    /// that reached the log twice), skipped.
    duplicates_skipped: u64,
    /// Client retries of applied requests answered without proposing again.
    retries_answered: u64,
    /// Snapshots from the leader this replica restored itself from.
    installed: Vec<InstalledSnapshot>,
    txn_limits: TxnLimits,
    /// Transaction records this shard anchors.
    records: BTreeMap<TxnId, TxnRecord>,
    /// Intents, by key.
    intents: BTreeMap<String, Intent>,
    /// Transactions whose intents this shard resolved: whether each
    /// committed, and the log time.
    resolved: BTreeMap<TxnId, (bool, u64)>,
    /// Derived (not in snapshots): the keys of each transaction's intents,
    /// pending records by expiry, finished records and resolutions by time.
    by_txn: BTreeMap<TxnId, BTreeSet<String>>,
    pending_by_expiry: BTreeSet<(u64, TxnId)>,
    finished_by_time: BTreeSet<(u64, TxnId)>,
    resolved_by_time: BTreeSet<(u64, TxnId)>,
}

/// A leader's snapshot a replica restored itself from (InstallSnapshot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstalledSnapshot {
    /// The last log index the snapshot covers.
    pub index: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

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

impl KvStore {
    /// An empty store with these session limits.
    pub fn with_limits(limits: SessionLimits) -> Self {
        KvStore {
            limits,
            ..KvStore::default()
        }
    }

    /// This store with these transaction limits.
    pub fn with_txn_limits(mut self, limits: TxnLimits) -> Self {
        self.txn_limits = limits;
        self
    }

    /// Starts counting, in memory, how many times each write is applied
    /// (see [`audit`](Self::audit)).
    pub fn enable_audit(&mut self) {
        self.audit.get_or_insert_with(HashMap::new);
    }

    /// Applies the committed command at log `index`. Sessions idle for
    /// longer than the timeout at the command's log time are dropped first.
    pub fn apply(&mut self, index: u64, command: Command) -> Applied {
        let time = HlcTimestamp::from_u64(command.stamp()).physical_ms();
        self.log_time = self.log_time.max(time);
        self.expire();
        self.expire_txns();
        match command {
            Command::RegisterSession { .. } => {
                while self.sessions.len() >= self.limits.max_sessions.max(1) {
                    let Some(&(_, oldest)) = self.by_activity.first() else {
                        break;
                    };
                    self.remove(oldest);
                    self.evicted += 1;
                }
                self.touch(index, 0);
                Applied::Registered { session: index }
            }
            Command::Put {
                session,
                seq,
                request,
                stamp,
                key,
                value,
            } => {
                let Some(known) = self.sessions.get(&session).copied() else {
                    return Applied::SessionExpired;
                };
                if seq <= known.last_seq {
                    self.duplicates_skipped += 1;
                    self.touch(session, known.last_seq);
                    return Applied::Duplicate;
                }
                if let Some(intent) = self.intent(&key) {
                    // Not recorded: the same write, sent again once the
                    // intent is resolved, applies then.
                    self.touch(session, known.last_seq);
                    return Applied::Blocked(intent);
                }
                self.touch(session, seq);
                if let Some(audit) = &mut self.audit {
                    *audit.entry((session, seq)).or_insert(0) += 1;
                }
                self.data.insert(
                    key,
                    Versioned {
                        value,
                        stamp,
                        request,
                    },
                );
                Applied::Written
            }
            Command::Txn { stamp, command } => Applied::Txn(self.apply_txn(stamp, command)),
        }
    }

    /// Records activity of `session` at the current log time.
    fn touch(&mut self, session: u64, last_seq: u64) {
        if let Some(old) = self.sessions.get(&session) {
            self.by_activity.remove(&(old.last_active, session));
        }
        let last_active = self.log_time;
        self.sessions.insert(
            session,
            Session {
                last_seq,
                last_active,
            },
        );
        self.by_activity.insert((last_active, session));
    }

    fn remove(&mut self, session: u64) {
        if let Some(old) = self.sessions.remove(&session) {
            self.by_activity.remove(&(old.last_active, session));
        }
    }

    /// Drops the sessions idle for longer than the timeout at `log_time`.
    fn expire(&mut self) {
        while let Some(&(last_active, session)) = self.by_activity.first() {
            if self.log_time.saturating_sub(last_active) <= self.limits.timeout_ms {
                break;
            }
            self.remove(session);
            self.expired += 1;
        }
    }

    /// Whether write `seq` of `session` was applied (a leader answers a
    /// retry of it without proposing again).
    pub fn is_applied(&self, session: u64, seq: u64) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|s| seq <= s.last_seq)
    }

    /// The session's state, if it is open.
    pub fn session(&self, session: u64) -> Option<Session> {
        self.sessions.get(&session).copied()
    }

    /// Open sessions.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// The largest physical time (ms) of the applied commands' stamps.
    pub fn log_time(&self) -> u64 {
        self.log_time
    }

    /// Sessions this replica dropped by the timeout since it started.
    pub fn expired(&self) -> u64 {
        self.expired
    }

    /// Sessions this replica evicted by the cap since it started.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Serializes the replicated state as a snapshot: the transaction
    /// section (`"TXN1"`, the records, the intents, the resolutions; a
    /// snapshot from before transactions starts without it and restores
    /// with none), then `keys u32`, then
    /// `key_len u32 | key | value_len u32 | value | stamp u64 | request u64`
    /// each; then `log_time u64`, `sessions u32`, then
    /// `session u64 | last_seq u64 | last_active u64` each, in id order (at
    /// most the session cap). The counters of this process's run and the
    /// audit are not replicated state.
    pub fn snapshot(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.snapshot_txns(&mut out);
        out.put_u32(self.data.len() as u32);
        for (key, v) in &self.data {
            out.put_u32(key.len() as u32);
            out.put_slice(key.as_bytes());
            out.put_u32(v.value.len() as u32);
            out.put_slice(&v.value);
            out.put_u64(v.stamp);
            out.put_u64(v.request);
        }
        out.put_u64(self.log_time);
        let sessions: BTreeMap<_, _> = self.sessions.iter().collect();
        out.put_u32(sessions.len() as u32);
        for (&id, s) in sessions {
            out.put_u64(id);
            out.put_u64(s.last_seq);
            out.put_u64(s.last_active);
        }
        out.freeze()
    }

    /// Replaces the replicated state with a [`snapshot`](Self::snapshot);
    /// on malformed bytes (or more sessions than this store's cap) returns
    /// an error and changes nothing.
    pub fn restore(&mut self, mut src: Bytes) -> Result<(), Error> {
        // Snapshots from before transactions start with the key count (no
        // store holds 1.4 billion keys).
        let txns = if src.starts_with(&TXN_SECTION.to_be_bytes()) {
            src.advance(4);
            restore_txns(&mut src, &self.txn_limits)?
        } else {
            TxnSection::default()
        };
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
        let log_time = u64_of(&mut src)?;
        let count = u32_of(&mut src)? as usize;
        if count > self.limits.max_sessions.max(1) || src.remaining() != count.saturating_mul(24) {
            return Err(BAD);
        }
        let mut sessions = HashMap::new();
        let mut by_activity = BTreeSet::new();
        for _ in 0..count {
            let id = u64_of(&mut src)?;
            let session = Session {
                last_seq: u64_of(&mut src)?,
                last_active: u64_of(&mut src)?,
            };
            if sessions.insert(id, session).is_some() {
                return Err(BAD);
            }
            by_activity.insert((session.last_active, id));
        }
        self.data = data;
        self.log_time = log_time;
        self.sessions = sessions;
        self.by_activity = by_activity;
        self.by_txn.clear();
        self.pending_by_expiry.clear();
        self.finished_by_time.clear();
        self.resolved_by_time.clear();
        for (key, i) in &txns.intents {
            self.by_txn.entry(i.txn).or_default().insert(key.clone());
        }
        for (&txn, r) in &txns.records {
            match r.finished_at {
                Some(at) => self.finished_by_time.insert((at, txn)),
                None if r.status == TxnStatus::Pending => {
                    self.pending_by_expiry.insert((r.expiry, txn))
                }
                None => false,
            };
        }
        for (&txn, &(_, at)) in &txns.resolved {
            self.resolved_by_time.insert((at, txn));
        }
        self.records = txns.records;
        self.intents = txns.intents;
        self.resolved = txns.resolved;
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

    /// If auditing is on: how many times this process applied each write,
    /// by `(session, seq)` (1 for every applied write, however often it
    /// was sent). Writes a snapshot brought in are not counted here.
    pub fn audit(&self) -> Option<&HashMap<(u64, u64), u32>> {
        self.audit.as_ref()
    }

    /// Notes a retry of an applied write answered from the session table.
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

/// Magic that opens the transaction section of a snapshot ("TXN1");
/// snapshots from before transactions end after the sessions.
const TXN_SECTION: u32 = 0x5458_4e31;

impl KvStore {
    /// The intent on `key`, if one is there: a get or put of it is not
    /// served until the intent is resolved.
    pub fn intent(&self, key: &str) -> Option<IntentRef> {
        self.intents.get(key).map(|i| IntentRef {
            key: key.to_owned(),
            txn: i.txn,
            anchor: i.anchor,
        })
    }

    /// The record of `txn`, if this shard anchors it (and has not dropped
    /// it after the retention).
    pub fn txn_record(&self, txn: TxnId) -> Option<&TxnRecord> {
        self.records.get(&txn)
    }

    /// Records kept (tombstones included).
    pub fn txn_records(&self) -> usize {
        self.records.len()
    }

    /// Intents held.
    pub fn intents(&self) -> usize {
        self.intents.len()
    }

    /// Every intent, by key.
    pub fn intent_entries(&self) -> impl Iterator<Item = (&String, &Intent)> {
        self.intents.iter()
    }

    /// Aborts the pending records whose expiry has passed, and drops the
    /// tombstones and resolutions older than the retention, at the current
    /// log time (as sessions expire: by the entries alone).
    fn expire_txns(&mut self) {
        let now = self.log_time;
        while let Some(&(expiry, txn)) = self.pending_by_expiry.first() {
            if expiry > now {
                break;
            }
            self.pending_by_expiry.remove(&(expiry, txn));
            self.finish_record(txn, TxnStatus::Aborted, 0);
        }
        let keep = self.txn_limits.retention_ms;
        drop_older(&mut self.finished_by_time, &mut self.records, now, keep);
        drop_older(&mut self.resolved_by_time, &mut self.resolved, now, keep);
    }

    /// The coordinator's commit or abort (`decision`) of `txn`: a pending
    /// record ends so, a finished one keeps its status, and an unknown one
    /// is aborted (its tombstone fails a begin still on the way).
    fn decide(&mut self, stamp: u64, txn: TxnId, decision: TxnStatus) -> TxnReply {
        let status = match self.records.get(&txn).map(|r| r.status) {
            Some(TxnStatus::Pending) => {
                self.finish_record(txn, decision, stamp);
                decision
            }
            Some(status) => status,
            None => {
                // (Without room the answer stands: this commit or
                // abort comes from the coordinator itself, after
                // its begin, which it will not send again.)
                let _ = self.tombstone(txn);
                TxnStatus::Aborted
            }
        };
        self.status_reply(txn, status)
    }

    /// Applies one transaction step at the current log time.
    fn apply_txn(&mut self, stamp: u64, command: TxnCommand) -> TxnReply {
        match command {
            TxnCommand::Prepare {
                txn,
                anchor,
                begin,
                ops,
            } => self.prepare(stamp, txn, anchor, begin, ops),
            TxnCommand::Commit { txn } => self.decide(stamp, txn, TxnStatus::Committed),
            TxnCommand::Abort { txn } => self.decide(stamp, txn, TxnStatus::Aborted),
            TxnCommand::Push { txn, priority } => {
                let status = match self.records.get(&txn) {
                    Some(r) if r.status == TxnStatus::Pending && priority > r.priority => {
                        self.finish_record(txn, TxnStatus::Aborted, stamp);
                        TxnStatus::Aborted
                    }
                    Some(r) => r.status,
                    None => {
                        // Its begin may still be on the way: the tombstone
                        // makes that begin fail, so it can never commit.
                        // Without room for one, nothing can be promised.
                        if !self.tombstone(txn) {
                            return TxnReply::Limit(TxnLimit::Records);
                        }
                        TxnStatus::Aborted
                    }
                };
                self.status_reply(txn, status)
            }
            TxnCommand::Resolve { txn, commit } => {
                // The anchor knows the decision: it never applies intents
                // of a transaction its record does not say committed.
                if let Some(r) = self.records.get(&txn)
                    && commit
                    && r.status != TxnStatus::Committed
                {
                    return self.status_reply(txn, r.status);
                }
                self.resolve_intents(txn, commit, stamp);
                self.remember_resolved(txn, commit);
                TxnReply::Done
            }
            TxnCommand::Forget { txn } => {
                let now = self.log_time;
                if let Some(r) = self.records.get_mut(&txn)
                    && r.status == TxnStatus::Committed
                    && r.finished_at.is_none()
                {
                    r.finished_at = Some(now);
                    self.finished_by_time.insert((now, txn));
                }
                TxnReply::Done
            }
        }
    }

    fn status_reply(&self, txn: TxnId, status: TxnStatus) -> TxnReply {
        let participants = self
            .records
            .get(&txn)
            .map(|r| r.participants.clone())
            .unwrap_or_default();
        TxnReply::Status {
            status,
            participants,
        }
    }

    fn prepare(
        &mut self,
        stamp: u64,
        txn: TxnId,
        anchor: u32,
        begin: Option<super::txn::Begin>,
        ops: Vec<TxnOp>,
    ) -> TxnReply {
        if let Some(r) = self.records.get(&txn)
            && r.status != TxnStatus::Pending
        {
            return self.status_reply(txn, r.status);
        }
        if let Some(&(commit, _)) = self.resolved.get(&txn) {
            let status = if commit {
                TxnStatus::Committed
            } else {
                TxnStatus::Aborted
            };
            return TxnReply::Status {
                status,
                participants: Vec::new(),
            };
        }
        match self.records.get(&txn) {
            Some(_) => {}
            None => {
                if let Some(b) = &begin {
                    if !self.make_room_for_record() {
                        return TxnReply::Limit(TxnLimit::Records);
                    }
                    let expiry = self
                        .log_time
                        .saturating_add(b.ttl_ms.min(self.txn_limits.max_ttl_ms));
                    let mut participants = b.participants.clone();
                    participants.sort_unstable();
                    participants.dedup();
                    self.records.insert(
                        txn,
                        TxnRecord {
                            anchor,
                            priority: b.priority,
                            expiry,
                            participants,
                            status: TxnStatus::Pending,
                            finished_at: None,
                        },
                    );
                    self.pending_by_expiry.insert((expiry, txn));
                }
            }
        }
        // Every check first, so a refused prepare changes no key.
        let mut fresh = 0usize;
        for op in &ops {
            let key = op.key();
            match self.intents.get(key) {
                Some(i) if i.txn == txn => continue,
                Some(i) => {
                    return TxnReply::Conflict(IntentRef {
                        key: key.to_owned(),
                        txn: i.txn,
                        anchor: i.anchor,
                    });
                }
                None => fresh += 1,
            }
        }
        for op in &ops {
            if let TxnOp::Cas { key, expect, .. } = op
                && !self.intents.contains_key(key.as_str())
            {
                let actual = self.data.get(key).map(|v| v.value.clone());
                if actual != *expect {
                    return TxnReply::CasFailed {
                        key: key.clone(),
                        actual,
                    };
                }
            }
        }
        if self.intents.len().saturating_add(fresh) > self.txn_limits.max_intents {
            return TxnReply::Limit(TxnLimit::Intents);
        }
        let mut reads: Vec<ReadValue> = Vec::new();
        for op in ops {
            let (key, value) = match op {
                TxnOp::Put { key, value } | TxnOp::Cas { key, value, .. } => (key, Some(value)),
                TxnOp::Get { key } => {
                    let current = self.data.get(&key).map(|v| (v.value.clone(), v.stamp));
                    reads.push((key.clone(), current));
                    (key, None)
                }
            };
            if self.intents.contains_key(&key) {
                continue;
            }
            self.by_txn.entry(txn).or_default().insert(key.clone());
            self.intents.insert(key, Intent { txn, anchor, value });
        }
        let committed = begin.is_some_and(|b| b.commit);
        if committed {
            self.finish_record(txn, TxnStatus::Committed, stamp);
        }
        TxnReply::Prepared { reads, committed }
    }

    /// Ends a pending record as `status` and resolves this shard's own
    /// intents of it. A committed record with no participant but this one
    /// is forgotten at once; others wait for [`TxnCommand::Forget`].
    fn finish_record(&mut self, txn: TxnId, status: TxnStatus, stamp: u64) {
        let now = self.log_time;
        let Some(r) = self.records.get_mut(&txn) else {
            return;
        };
        if r.status != TxnStatus::Pending {
            return;
        }
        self.pending_by_expiry.remove(&(r.expiry, txn));
        r.status = status;
        let alone = r.participants.iter().all(|&p| p == r.anchor);
        if status == TxnStatus::Aborted || alone {
            r.finished_at = Some(now);
            self.finished_by_time.insert((now, txn));
        }
        let commit = status == TxnStatus::Committed;
        self.resolve_intents(txn, commit, stamp);
        // Like any participant, the anchor remembers resolving its intents,
        // so a late copy of its prepare is refused even if the record is
        // evicted under pressure.
        self.remember_resolved(txn, commit);
    }

    /// An aborted record for a transaction never begun here; false if
    /// there is no room for it.
    fn tombstone(&mut self, txn: TxnId) -> bool {
        if !self.make_room_for_record() {
            return false;
        }
        let now = self.log_time;
        self.records.insert(
            txn,
            TxnRecord {
                anchor: 0,
                priority: 0,
                expiry: now,
                participants: Vec::new(),
                status: TxnStatus::Aborted,
                finished_at: Some(now),
            },
        );
        self.finished_by_time.insert((now, txn));
        // Its intents here, if any, go too.
        self.resolve_intents(txn, false, 0);
        true
    }

    /// Whether a record fits, evicting the oldest tombstone if need be.
    fn make_room_for_record(&mut self) -> bool {
        if self.records.len() < self.txn_limits.max_records.max(1) {
            return true;
        }
        match self.finished_by_time.pop_first() {
            Some((_, oldest)) => {
                self.records.remove(&oldest);
                true
            }
            None => false,
        }
    }

    fn resolve_intents(&mut self, txn: TxnId, commit: bool, stamp: u64) {
        let Some(keys) = self.by_txn.remove(&txn) else {
            return;
        };
        for key in keys {
            let Some(intent) = self.intents.remove(&key) else {
                continue;
            };
            if commit && let Some(value) = intent.value {
                let v = Versioned {
                    value,
                    stamp,
                    request: txn.seq,
                };
                self.data.insert(key, v);
            }
        }
    }

    fn remember_resolved(&mut self, txn: TxnId, commit: bool) {
        let now = self.log_time;
        if let Some((_, at)) = self.resolved.insert(txn, (commit, now)) {
            self.resolved_by_time.remove(&(at, txn));
        }
        self.resolved_by_time.insert((now, txn));
        while self.resolved.len() > self.txn_limits.max_resolved.max(1) {
            let Some((_, oldest)) = self.resolved_by_time.pop_first() else {
                break;
            };
            self.resolved.remove(&oldest);
        }
    }

    /// Appends the transaction section of a snapshot.
    fn snapshot_txns(&self, out: &mut BytesMut) {
        out.put_u32(TXN_SECTION);
        out.put_u32(self.records.len() as u32);
        for (txn, r) in &self.records {
            out.put_u64(txn.client);
            out.put_u64(txn.seq);
            out.put_u32(r.anchor);
            out.put_u64(r.priority);
            out.put_u64(r.expiry);
            out.put_u8(match r.status {
                TxnStatus::Pending => 0,
                TxnStatus::Committed => 1,
                TxnStatus::Aborted => 2,
            });
            match r.finished_at {
                Some(at) => {
                    out.put_u8(1);
                    out.put_u64(at);
                }
                None => out.put_u8(0),
            }
            out.put_u32(r.participants.len() as u32);
            for p in &r.participants {
                out.put_u32(*p);
            }
        }
        out.put_u32(self.intents.len() as u32);
        for (key, i) in &self.intents {
            out.put_u32(key.len() as u32);
            out.put_slice(key.as_bytes());
            out.put_u64(i.txn.client);
            out.put_u64(i.txn.seq);
            out.put_u32(i.anchor);
            match &i.value {
                Some(v) => {
                    out.put_u8(1);
                    out.put_u32(v.len() as u32);
                    out.put_slice(v);
                }
                None => out.put_u8(0),
            }
        }
        out.put_u32(self.resolved.len() as u32);
        for (txn, (commit, at)) in &self.resolved {
            out.put_u64(txn.client);
            out.put_u64(txn.seq);
            out.put_u8(u8::from(*commit));
            out.put_u64(*at);
        }
    }
}

/// The transaction state a snapshot carries.
#[derive(Default)]
struct TxnSection {
    records: BTreeMap<TxnId, TxnRecord>,
    intents: BTreeMap<String, Intent>,
    resolved: BTreeMap<TxnId, (bool, u64)>,
}

fn txn_of(src: &mut Bytes) -> Result<TxnId, Error> {
    Ok(TxnId {
        client: u64_of(src)?,
        seq: u64_of(src)?,
    })
}

fn u8_of(src: &mut Bytes) -> Result<u8, Error> {
    Ok(take(src, 1)?.get_u8())
}

/// Parses the transaction section (after its magic), refusing more than
/// `limits` keeps.
fn restore_txns(src: &mut Bytes, limits: &TxnLimits) -> Result<TxnSection, Error> {
    let mut section = TxnSection::default();
    let n = u32_of(src)? as usize;
    if n > limits.max_records.max(1) {
        return Err(BAD);
    }
    for _ in 0..n {
        let txn = txn_of(src)?;
        let anchor = u32_of(src)?;
        let priority = u64_of(src)?;
        let expiry = u64_of(src)?;
        let status = match u8_of(src)? {
            0 => TxnStatus::Pending,
            1 => TxnStatus::Committed,
            2 => TxnStatus::Aborted,
            _ => return Err(BAD),
        };
        let finished_at = match u8_of(src)? {
            0 => None,
            1 => Some(u64_of(src)?),
            _ => return Err(BAD),
        };
        let count = u32_of(src)? as usize;
        if count > super::txn::MAX_PARTICIPANTS {
            return Err(BAD);
        }
        let participants = (0..count).map(|_| u32_of(src)).collect::<Result<_, _>>()?;
        let record = TxnRecord {
            anchor,
            priority,
            expiry,
            participants,
            status,
            finished_at,
        };
        if section.records.insert(txn, record).is_some() {
            return Err(BAD);
        }
    }
    let n = u32_of(src)? as usize;
    if n > limits.max_intents {
        return Err(BAD);
    }
    for _ in 0..n {
        let len = u32_of(src)? as usize;
        let key = String::from_utf8(take(src, len)?.to_vec()).map_err(|_| BAD)?;
        let txn = txn_of(src)?;
        let anchor = u32_of(src)?;
        let value = match u8_of(src)? {
            0 => None,
            1 => {
                let len = u32_of(src)? as usize;
                Some(take(src, len)?)
            }
            _ => return Err(BAD),
        };
        if section
            .intents
            .insert(key, Intent { txn, anchor, value })
            .is_some()
        {
            return Err(BAD);
        }
    }
    let n = u32_of(src)? as usize;
    if n > limits.max_resolved.max(1) {
        return Err(BAD);
    }
    for _ in 0..n {
        let txn = txn_of(src)?;
        let commit = match u8_of(src)? {
            0 => false,
            1 => true,
            _ => return Err(BAD),
        };
        let at = u64_of(src)?;
        if section.resolved.insert(txn, (commit, at)).is_some() {
            return Err(BAD);
        }
    }
    Ok(section)
}

/// Drops from `by_time` (entries by the log time they were made) and
/// from `entries` what is older than `keep` at `now`.
fn drop_older<V>(
    by_time: &mut BTreeSet<(u64, TxnId)>,
    entries: &mut BTreeMap<TxnId, V>,
    now: u64,
    keep: u64,
) {
    while let Some(&(at, txn)) = by_time.first() {
        if now.saturating_sub(at) <= keep {
            break;
        }
        by_time.remove(&(at, txn));
        entries.remove(&txn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stamp at `ms` milliseconds of physical time.
    fn at(ms: u64) -> u64 {
        HlcTimestamp::new(ms, 0).unwrap().as_u64()
    }

    fn register(ms: u64) -> Command {
        Command::RegisterSession { stamp: at(ms) }
    }

    fn put(session: u64, seq: u64, ms: u64, key: &str, value: &'static [u8]) -> Command {
        Command::Put {
            session,
            seq,
            request: 99,
            stamp: at(ms),
            key: key.into(),
            value: Bytes::from_static(value),
        }
    }

    fn value(store: &KvStore, key: &str) -> Option<Bytes> {
        store.get(key).map(|v| v.value.clone())
    }

    #[test]
    fn two_sessions_with_equal_sequence_numbers_both_apply() {
        let mut s = KvStore::default();
        assert_eq!(
            s.apply(1, register(1000)),
            Applied::Registered { session: 1 }
        );
        assert_eq!(
            s.apply(2, register(1000)),
            Applied::Registered { session: 2 }
        );
        // The bug this replaces: two clients minting the same request id.
        assert_eq!(
            s.apply(3, put(1, 1, 1001, "a", b"from 1")),
            Applied::Written
        );
        assert_eq!(
            s.apply(4, put(2, 1, 1001, "b", b"from 2")),
            Applied::Written
        );
        assert_eq!(value(&s, "a"), Some(Bytes::from_static(b"from 1")));
        assert_eq!(value(&s, "b"), Some(Bytes::from_static(b"from 2")));
        assert_eq!(s.duplicates_skipped(), 0);
    }

    #[test]
    fn a_retry_applies_once() {
        let mut s = KvStore::default();
        s.enable_audit();
        s.apply(1, register(1000));
        assert_eq!(s.apply(2, put(1, 1, 1001, "x", b"1")), Applied::Written);
        assert!(s.is_applied(1, 1));
        assert!(!s.is_applied(1, 2));
        // The retry reached the log again (leadership moved in between).
        assert_eq!(s.apply(3, put(1, 1, 1002, "x", b"1")), Applied::Duplicate);
        assert_eq!(
            s.apply(4, put(1, 1, 1002, "x", b"1")).reply(4),
            Reply::Written { index: 4 }
        );
        assert_eq!(s.apply(5, put(1, 2, 1003, "x", b"2")), Applied::Written);
        // A late copy of an older write does not roll the value back.
        assert_eq!(s.apply(6, put(1, 1, 1004, "x", b"1")), Applied::Duplicate);
        assert_eq!(value(&s, "x"), Some(Bytes::from_static(b"2")));
        assert_eq!(s.duplicates_skipped(), 3);
        let audit = s.audit().unwrap();
        assert_eq!(audit.get(&(1, 1)), Some(&1));
        assert_eq!(audit.get(&(1, 2)), Some(&1));
    }

    #[test]
    fn an_unknown_or_expired_session_is_refused() {
        let limits = SessionLimits {
            timeout_ms: 100,
            max_sessions: 8,
        };
        let mut s = KvStore::with_limits(limits);
        assert_eq!(
            s.apply(1, put(1, 1, 10, "x", b"1")),
            Applied::SessionExpired
        );
        assert_eq!(Applied::SessionExpired.reply(3), Reply::SessionExpired);
        s.apply(2, register(1000));
        s.apply(3, register(1000));
        s.apply(4, put(2, 1, 1050, "x", b"1"));
        // Session 3 has been idle for 101 ms of log time when this applies.
        assert_eq!(s.apply(5, put(2, 2, 1101, "x", b"2")), Applied::Written);
        assert_eq!(s.session(3), None);
        assert_eq!(
            s.apply(6, put(3, 1, 1101, "y", b"1")),
            Applied::SessionExpired
        );
        assert!(s.get("y").is_none());
        assert_eq!(s.expired(), 1);
        // Exactly the timeout is not longer than it.
        assert_eq!(s.apply(7, put(2, 3, 1201, "x", b"3")), Applied::Written);
        assert!(s.session(2).is_some());
        // Log time never goes back: an entry stamped earlier (a leader
        // with a slow clock) counts as applied at the largest time seen.
        s.apply(8, put(2, 4, 5, "x", b"4"));
        assert_eq!(s.log_time(), 1201);
        assert_eq!(s.session(2).unwrap().last_active, 1201);
    }

    #[test]
    fn replicas_fed_the_same_entries_expire_at_the_same_index() {
        let limits = SessionLimits {
            timeout_ms: 50,
            max_sessions: 1000,
        };
        let mut rng = fastrand::Rng::with_seed(7);
        let mut entries = Vec::new();
        let mut ms = 1000;
        for index in 1..=400u64 {
            ms += rng.u64(0..20);
            let command = if index < 5 || rng.u8(0..8) == 0 {
                register(ms)
            } else {
                put(rng.u64(1..index), rng.u64(1..30), ms, "k", b"v")
            };
            entries.push((index, command));
        }
        let mut a = KvStore::with_limits(limits);
        let mut b = KvStore::with_limits(limits);
        let mut expirations = Vec::new();
        for (index, command) in entries {
            let (ea, eb) = (a.expired(), b.expired());
            let ra = a.apply(index, command.clone());
            let rb = b.apply(index, command);
            assert_eq!(ra, rb, "index {index}");
            assert_eq!(a.expired() - ea, b.expired() - eb, "index {index}");
            if a.expired() > ea {
                expirations.push(index);
            }
            assert_eq!(a.snapshot(), b.snapshot(), "index {index}");
        }
        assert!(
            expirations.len() > 5,
            "the run expires sessions: {expirations:?}"
        );
    }

    #[test]
    fn the_cap_evicts_the_least_recently_active_session() {
        let limits = SessionLimits {
            timeout_ms: 60_000,
            max_sessions: 3,
        };
        let mut s = KvStore::with_limits(limits);
        s.apply(1, register(1000));
        s.apply(2, register(1001));
        s.apply(3, register(1002));
        // Session 1 writes: session 2 is now the least recently active.
        s.apply(4, put(1, 1, 1003, "a", b"1"));
        assert_eq!(
            s.apply(5, register(1004)),
            Applied::Registered { session: 5 }
        );
        assert_eq!(s.sessions(), 3);
        assert_eq!(s.evicted(), 1);
        assert!(s.session(2).is_none());
        for kept in [1, 3, 5] {
            assert!(s.session(kept).is_some(), "session {kept}");
        }
        assert_eq!(
            s.apply(6, put(2, 1, 1005, "b", b"1")),
            Applied::SessionExpired
        );
        // Equal activity times: the lower id goes first, on every replica.
        let mut t = KvStore::with_limits(limits);
        for index in 1..=3 {
            t.apply(index, register(1000));
        }
        t.apply(4, register(1000));
        assert!(t.session(1).is_none());
        assert!(t.session(2).is_some());
    }

    #[test]
    fn roots_track_content_and_repairs_replace_a_bucket() {
        let mut a = KvStore::default();
        let mut b = KvStore::default();
        a.apply(1, register(1000));
        b.apply(1, register(1000));
        a.apply(2, put(1, 1, 1001, "x", b"1"));
        assert_ne!(a.merkle_tree().root(), b.merkle_tree().root());
        b.apply(2, put(1, 1, 1001, "x", b"1"));
        assert_eq!(a.merkle_tree().root(), b.merkle_tree().root());
        b.corrupt("x", Bytes::from_static(b"rot"));
        let diff = quorate_merkle::diff::diff(&a.merkle_tree(), &b.merkle_tree());
        let bucket = KvStore::bucket("x");
        assert_eq!(diff, vec![bucket..bucket + 1]);
        b.replace_bucket(bucket, a.bucket_entries(bucket));
        assert_eq!(a.merkle_tree().root(), b.merkle_tree().root());
    }

    #[test]
    fn a_restored_snapshot_keeps_values_stamps_and_sessions() {
        let mut a = KvStore::default();
        a.apply(1, register(1000));
        a.apply(2, register(1000));
        a.apply(3, put(1, 1, 1001, "x", b"1"));
        a.apply(4, put(2, 1, 1002, "y", b"2"));
        a.apply(5, put(2, 2, 1003, "y", b"3"));
        let mut b = KvStore::default();
        b.enable_audit();
        b.apply(1, register(10));
        b.apply(2, put(1, 1, 11, "stale", b"0"));
        b.install(5, a.snapshot()).unwrap();
        assert_eq!(b.merkle_tree().root(), a.merkle_tree().root());
        assert_eq!(b.get("x"), a.get("x"));
        assert!(b.get("stale").is_none());
        assert_eq!(b.log_time(), a.log_time());
        assert_eq!(b.session(2), a.session(2));
        assert_eq!(b.session(2).map(|s| s.last_seq), Some(2));
        assert_eq!(b.snapshot(), a.snapshot());
        // Retries after the restore are still recognised.
        assert_eq!(b.apply(6, put(2, 2, 1004, "y", b"3")), Applied::Duplicate);
        assert_eq!(b.apply(7, put(1, 2, 1004, "x", b"4")), Applied::Written);
        assert_eq!(
            b.installed(),
            &[InstalledSnapshot {
                index: 5,
                bytes: a.snapshot().len() as u64
            }]
        );
        // Truncated or padded bytes are refused and change nothing.
        let full = a.snapshot();
        let before = b.snapshot();
        for cut in 0..full.len() {
            assert!(b.restore(full.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut padded = BytesMut::from(&full[..]);
        padded.put_u8(0);
        assert!(b.restore(padded.freeze()).is_err());
        assert_eq!(b.snapshot(), before);
        // A snapshot with more sessions than the cap is refused.
        let mut small = KvStore::with_limits(SessionLimits {
            timeout_ms: SessionLimits::TIMEOUT_MS,
            max_sessions: 1,
        });
        assert!(small.restore(full).is_err());
        assert_eq!(small.sessions(), 0);
    }
}

#[cfg(test)]
mod txn_tests {
    use super::*;
    use crate::kv_cluster::txn::Begin;

    fn at(ms: u64) -> u64 {
        HlcTimestamp::new(ms, 0).unwrap().as_u64()
    }

    const A: TxnId = TxnId { client: 1, seq: 1 };
    const B: TxnId = TxnId { client: 2, seq: 1 };

    /// An entry at `index` and `ms` that moves the log time on: a push of
    /// the unknown `B` (which leaves `B` a tombstone).
    fn later(s: &mut KvStore, index: u64, ms: u64) {
        step(
            s,
            index,
            ms,
            TxnCommand::Push {
                txn: B,
                priority: 0,
            },
        );
    }

    fn step(s: &mut KvStore, index: u64, ms: u64, command: TxnCommand) -> TxnReply {
        match s.apply(
            index,
            Command::Txn {
                stamp: at(ms),
                command,
            },
        ) {
            Applied::Txn(reply) => reply,
            other => panic!("not a transaction answer: {other:?}"),
        }
    }

    fn put(key: &str, value: &'static [u8]) -> TxnOp {
        TxnOp::Put {
            key: key.into(),
            value: Bytes::from_static(value),
        }
    }

    fn begin(priority: u64, participants: Vec<u32>) -> Option<Begin> {
        Some(Begin {
            priority,
            ttl_ms: 1000,
            participants,
            commit: false,
        })
    }

    fn prepare(txn: TxnId, begin: Option<Begin>, ops: Vec<TxnOp>) -> TxnCommand {
        TxnCommand::Prepare {
            txn,
            anchor: 0,
            begin,
            ops,
        }
    }

    fn status(s: TxnStatus) -> TxnReply {
        TxnReply::Status {
            status: s,
            participants: vec![0, 1],
        }
    }

    fn value(s: &KvStore, key: &str) -> Option<Bytes> {
        s.get(key).map(|v| v.value.clone())
    }

    fn prepared() -> TxnReply {
        TxnReply::Prepared {
            reads: vec![],
            committed: false,
        }
    }

    #[test]
    fn prepare_commit_makes_the_writes_visible_and_is_idempotent() {
        let mut s = KvStore::default();
        let p = prepare(
            A,
            begin(5, vec![0, 1]),
            vec![put("x", b"1"), put("y", b"2")],
        );
        assert_eq!(step(&mut s, 1, 1000, p.clone()), prepared());
        // Intents are not values yet, and block others.
        assert_eq!(s.get("x"), None);
        assert_eq!(s.intent("x").map(|i| i.txn), Some(A));
        // Re-preparing the same transaction changes nothing.
        let before = s.snapshot();
        assert_eq!(step(&mut s, 2, 1000, p.clone()), prepared());
        assert_eq!(s.snapshot(), before);
        assert_eq!(s.intents(), 2);
        assert_eq!(s.txn_records(), 1);
        let c = TxnCommand::Commit { txn: A };
        assert_eq!(
            step(&mut s, 3, 1002, c.clone()),
            status(TxnStatus::Committed)
        );
        assert_eq!(value(&s, "x"), Some(Bytes::from_static(b"1")));
        assert_eq!(value(&s, "y"), Some(Bytes::from_static(b"2")));
        assert_eq!(s.intents(), 0);
        // Commit again: same answer; a late prepare copy writes no intent.
        assert_eq!(step(&mut s, 4, 1003, c), status(TxnStatus::Committed));
        assert_eq!(step(&mut s, 5, 1004, p), status(TxnStatus::Committed));
        assert_eq!(s.intents(), 0);
    }

    #[test]
    fn conflicts_and_failed_cas_change_nothing() {
        let mut s = KvStore::default();
        step(
            &mut s,
            1,
            1000,
            prepare(A, begin(5, vec![0]), vec![put("x", b"a")]),
        );
        let before = s.snapshot();
        // B wants y (free) and x (A's): refused whole, y stays free.
        let reply = step(
            &mut s,
            2,
            1000,
            prepare(B, None, vec![put("y", b"b"), put("x", b"b")]),
        );
        assert_eq!(
            reply,
            TxnReply::Conflict(IntentRef {
                key: "x".into(),
                txn: A,
                anchor: 0
            })
        );
        assert_eq!(s.intent("y"), None);
        // (Only the log time moved.)
        let cas = TxnOp::Cas {
            key: "z".into(),
            expect: Some(Bytes::from_static(b"old")),
            value: Bytes::from_static(b"new"),
        };
        let reply = step(&mut s, 3, 1000, prepare(B, None, vec![put("y", b"b"), cas]));
        assert_eq!(
            reply,
            TxnReply::CasFailed {
                key: "z".into(),
                actual: None
            }
        );
        assert_eq!(s.snapshot(), before);
    }

    #[test]
    fn push_aborts_lower_priority_or_expired_and_reports_finished() {
        let mut s = KvStore::default();
        step(
            &mut s,
            1,
            1000,
            prepare(A, begin(5, vec![0, 1]), vec![put("x", b"a")]),
        );
        let push = |p| TxnCommand::Push {
            txn: A,
            priority: p,
        };
        // Lower or equal priority: still pending.
        assert_eq!(step(&mut s, 2, 1100, push(5)), status(TxnStatus::Pending));
        assert_eq!(step(&mut s, 3, 1100, push(1)), status(TxnStatus::Pending));
        // Higher: aborted, and its intents here go.
        assert_eq!(step(&mut s, 4, 1100, push(6)), status(TxnStatus::Aborted));
        assert_eq!(s.intents(), 0);
        // Aborted stays aborted: commit says so, a begin again fails.
        let c = TxnCommand::Commit { txn: A };
        assert_eq!(step(&mut s, 5, 1101, c), status(TxnStatus::Aborted));
        let again = prepare(A, begin(5, vec![0, 1]), vec![put("x", b"a")]);
        assert_eq!(step(&mut s, 6, 1102, again), status(TxnStatus::Aborted));
        assert_eq!(s.intents(), 0);
        // Expiry: B's record (ttl 1000 ms) is aborted once log time passes it,
        // by any entry, and its commit then fails.
        step(
            &mut s,
            7,
            2000,
            prepare(B, begin(9, vec![0, 1]), vec![put("y", b"b")]),
        );
        assert_eq!(
            step(
                &mut s,
                8,
                2999,
                TxnCommand::Push {
                    txn: B,
                    priority: 0
                }
            ),
            status(TxnStatus::Pending)
        );
        assert_eq!(
            step(&mut s, 9, 3000, TxnCommand::Commit { txn: B }),
            status(TxnStatus::Aborted)
        );
        assert_eq!(s.intent("y"), None);
        assert_eq!(s.get("y"), None);
    }

    #[test]
    fn a_push_before_the_begin_leaves_a_tombstone_the_begin_cannot_pass() {
        let mut s = KvStore::default();
        let none = TxnReply::Status {
            status: TxnStatus::Aborted,
            participants: vec![],
        };
        assert_eq!(
            step(
                &mut s,
                1,
                1000,
                TxnCommand::Push {
                    txn: A,
                    priority: 0
                }
            ),
            none
        );
        let late = prepare(A, begin(u64::MAX, vec![0, 1]), vec![put("x", b"a")]);
        assert_eq!(step(&mut s, 2, 1001, late), none);
        assert_eq!(s.intents(), 0);
        assert_eq!(step(&mut s, 3, 1002, TxnCommand::Commit { txn: A }), none);
        assert_eq!(s.get("x"), None);
    }

    #[test]
    fn resolve_applies_or_drops_and_blocks_late_prepares() {
        // A participant (not the anchor: no begin).
        let mut s = KvStore::default();
        let get = TxnOp::Get { key: "r".into() };
        let p = prepare(A, None, vec![put("x", b"a"), get]);
        assert_eq!(
            step(&mut s, 1, 1000, p.clone()),
            TxnReply::Prepared {
                reads: vec![("r".into(), None)],
                committed: false
            }
        );
        assert!(s.intent("r").is_some(), "a read locks its key");
        let r = TxnCommand::Resolve {
            txn: A,
            commit: true,
        };
        assert_eq!(step(&mut s, 2, 1001, r.clone()), TxnReply::Done);
        assert_eq!(value(&s, "x"), Some(Bytes::from_static(b"a")));
        assert_eq!(s.get("r"), None);
        assert_eq!(s.intents(), 0);
        // Idempotent, and a late copy of the prepare cannot come back.
        assert_eq!(step(&mut s, 3, 1002, r), TxnReply::Done);
        assert_eq!(
            step(&mut s, 4, 1003, p),
            TxnReply::Status {
                status: TxnStatus::Committed,
                participants: vec![]
            }
        );
        assert_eq!(s.intents(), 0);
        // On the anchor, a commit-resolve of an undecided record is refused.
        let mut anchor = KvStore::default();
        step(
            &mut anchor,
            1,
            1000,
            prepare(B, begin(1, vec![0, 1]), vec![put("x", b"b")]),
        );
        let wrong = TxnCommand::Resolve {
            txn: B,
            commit: true,
        };
        assert_eq!(
            step(&mut anchor, 2, 1001, wrong),
            status(TxnStatus::Pending)
        );
        assert_eq!(anchor.get("x"), None);
        assert!(anchor.intent("x").is_some());
        // Abort drops.
        step(&mut s, 5, 1004, prepare(B, None, vec![put("x", b"b")]));
        step(
            &mut s,
            6,
            1005,
            TxnCommand::Resolve {
                txn: B,
                commit: false,
            },
        );
        assert_eq!(value(&s, "x"), Some(Bytes::from_static(b"a")));
    }

    #[test]
    fn plain_puts_and_reads_are_blocked_by_intents_and_not_recorded() {
        let mut s = KvStore::default();
        s.enable_audit();
        s.apply(1, Command::RegisterSession { stamp: at(1000) });
        step(
            &mut s,
            2,
            1000,
            prepare(A, begin(1, vec![0]), vec![put("x", b"t")]),
        );
        let write = Command::Put {
            session: 1,
            seq: 1,
            request: 7,
            stamp: at(1001),
            key: "x".into(),
            value: Bytes::from_static(b"plain"),
        };
        let blocked = s.apply(3, write.clone());
        let intent = IntentRef {
            key: "x".into(),
            txn: A,
            anchor: 0,
        };
        assert_eq!(blocked, Applied::Blocked(intent.clone()));
        assert_eq!(blocked.reply(3), Reply::Intent(intent));
        assert!(!s.is_applied(1, 1), "a refused put is not recorded");
        // Once A commits, the same write (same session and seq) applies, once.
        step(&mut s, 4, 1002, TxnCommand::Commit { txn: A });
        assert_eq!(value(&s, "x"), Some(Bytes::from_static(b"t")));
        assert_eq!(s.apply(5, write.clone()), Applied::Written);
        assert_eq!(s.apply(6, write), Applied::Duplicate);
        assert_eq!(value(&s, "x"), Some(Bytes::from_static(b"plain")));
        assert_eq!(s.audit().unwrap().get(&(1, 1)), Some(&1));
    }

    #[test]
    fn one_phase_commits_at_once_and_forgets_after_the_retention() {
        let limits = TxnLimits {
            retention_ms: 100,
            ..TxnLimits::default()
        };
        let mut s = KvStore::default().with_txn_limits(limits);
        let mut b = begin(1, vec![0]).unwrap();
        b.commit = true;
        let p = prepare(A, Some(b), vec![put("x", b"1")]);
        assert_eq!(
            step(&mut s, 1, 1000, p.clone()),
            TxnReply::Prepared {
                reads: vec![],
                committed: true
            }
        );
        assert_eq!(value(&s, "x"), Some(Bytes::from_static(b"1")));
        assert_eq!(
            step(&mut s, 2, 1050, p),
            TxnReply::Status {
                status: TxnStatus::Committed,
                participants: vec![0]
            }
        );
        // Past the retention the tombstone goes.
        later(&mut s, 3, 1101);
        assert!(s.txn_record(A).is_none());
        assert!(s.txn_record(B).is_some());
    }

    #[test]
    fn committed_records_stay_until_forgotten() {
        let limits = TxnLimits {
            retention_ms: 100,
            ..TxnLimits::default()
        };
        let mut s = KvStore::default().with_txn_limits(limits);
        step(
            &mut s,
            1,
            1000,
            prepare(A, begin(1, vec![0, 1]), vec![put("x", b"1")]),
        );
        step(&mut s, 2, 1001, TxnCommand::Commit { txn: A });
        later(&mut s, 3, 5000);
        assert_eq!(
            s.txn_record(A).map(|r| r.status),
            Some(TxnStatus::Committed)
        );
        step(&mut s, 4, 5001, TxnCommand::Forget { txn: A });
        later(&mut s, 5, 5102);
        assert!(s.txn_record(A).is_none());
    }

    #[test]
    fn limits_refuse_records_and_intents_without_change() {
        let limits = TxnLimits {
            max_records: 1,
            max_intents: 2,
            ..TxnLimits::default()
        };
        let mut s = KvStore::default().with_txn_limits(limits);
        step(
            &mut s,
            1,
            1000,
            prepare(A, begin(1, vec![0, 1]), vec![put("x", b"1")]),
        );
        let before = s.snapshot();
        assert_eq!(
            step(
                &mut s,
                2,
                1000,
                prepare(B, begin(1, vec![0]), vec![put("y", b"1")])
            ),
            TxnReply::Limit(TxnLimit::Records)
        );
        assert_eq!(
            step(
                &mut s,
                3,
                1000,
                prepare(B, None, vec![put("y", b"1"), put("z", b"1")])
            ),
            TxnReply::Limit(TxnLimit::Intents)
        );
        assert_eq!(s.snapshot(), before);
        // A push of an unknown transaction cannot leave its tombstone:
        // refused, not answered "aborted".
        let unknown = TxnCommand::Push {
            txn: TxnId { client: 5, seq: 5 },
            priority: 0,
        };
        assert_eq!(
            step(&mut s, 4, 1000, unknown),
            TxnReply::Limit(TxnLimit::Records)
        );
        // A finished record is evicted to make room.
        step(&mut s, 4, 1000, TxnCommand::Abort { txn: A });
        assert_eq!(
            step(
                &mut s,
                5,
                1000,
                prepare(B, begin(1, vec![0]), vec![put("y", b"1")])
            ),
            prepared()
        );
    }

    #[test]
    fn snapshots_carry_records_intents_and_resolutions_and_old_ones_restore() {
        let mut a = KvStore::default();
        a.apply(1, Command::RegisterSession { stamp: at(1000) });
        step(
            &mut a,
            2,
            1000,
            prepare(
                A,
                begin(3, vec![0, 1]),
                vec![put("x", b"1"), TxnOp::Get { key: "g".into() }],
            ),
        );
        step(&mut a, 3, 1001, prepare(B, None, vec![put("y", b"2")]));
        step(
            &mut a,
            4,
            1002,
            TxnCommand::Resolve {
                txn: B,
                commit: true,
            },
        );
        step(
            &mut a,
            5,
            1003,
            TxnCommand::Push {
                txn: TxnId { client: 9, seq: 9 },
                priority: 0,
            },
        );
        let snap = a.snapshot();
        let mut b = KvStore::default();
        b.restore(snap.clone()).unwrap();
        assert_eq!(b.snapshot(), snap);
        assert_eq!(b.intent("x"), a.intent("x"));
        assert_eq!(b.txn_record(A), a.txn_record(A));
        // The restored replica goes on exactly like the original.
        for s in [&mut a, &mut b] {
            step(s, 6, 1004, prepare(B, None, vec![put("y", b"late")]));
            step(s, 7, 1005, TxnCommand::Commit { txn: A });
        }
        assert_eq!(a.snapshot(), b.snapshot());
        assert_eq!(value(&b, "x"), Some(Bytes::from_static(b"1")));
        assert_eq!(value(&b, "y"), Some(Bytes::from_static(b"2")));
        // Every cut is refused and changes nothing.
        let before = b.snapshot();
        for cut in 0..snap.len() {
            assert!(b.restore(snap.slice(..cut)).is_err(), "cut at {cut}");
        }
        assert_eq!(b.snapshot(), before);
        // A snapshot from before transactions (no section) restores with
        // none: the old format is the new one without its (here empty,
        // 16-byte) transaction section.
        let mut plain = KvStore::default();
        plain.apply(1, Command::RegisterSession { stamp: at(1000) });
        let full = plain.snapshot();
        assert_eq!(&full[..4], b"TXN1");
        let old = full.slice(16..);
        let mut c = KvStore::default();
        c.restore(old).unwrap();
        assert_eq!(c.session(1), plain.session(1));
        assert_eq!(c.snapshot(), full);
    }
}

#[cfg(test)]
mod txn_props {
    use super::*;
    use crate::kv_cluster::txn::Begin;
    use proptest::prelude::*;

    fn at(ms: u64) -> u64 {
        HlcTimestamp::new(ms, 0).unwrap().as_u64()
    }

    fn txn_id(n: u8) -> TxnId {
        TxnId {
            client: u64::from(n % 2),
            seq: u64::from(n),
        }
    }

    fn key(k: u8) -> String {
        format!("k{}", k % 4)
    }

    fn op() -> impl Strategy<Value = TxnOp> {
        prop_oneof![
            (0u8..4, 0u8..3).prop_map(|(k, v)| TxnOp::Put {
                key: key(k),
                value: Bytes::from(vec![v]),
            }),
            (0u8..4, proptest::option::of(0u8..3), 0u8..3).prop_map(|(k, e, v)| TxnOp::Cas {
                key: key(k),
                expect: e.map(|e| Bytes::from(vec![e])),
                value: Bytes::from(vec![v]),
            }),
            (0u8..4).prop_map(|k| TxnOp::Get { key: key(k) }),
        ]
    }

    fn command() -> impl Strategy<Value = Command> {
        let txn = prop_oneof![
            (
                0u8..5,
                proptest::collection::vec(op(), 0..4),
                any::<Option<(u8, u16, bool)>>()
            )
                .prop_map(|(t, ops, begin)| TxnCommand::Prepare {
                    txn: txn_id(t),
                    anchor: 0,
                    begin: begin.map(|(p, ttl, commit)| Begin {
                        priority: u64::from(p),
                        ttl_ms: u64::from(ttl % 500),
                        participants: vec![0, u32::from(p % 2)],
                        commit,
                    }),
                    ops,
                }),
            (0u8..5).prop_map(|t| TxnCommand::Commit { txn: txn_id(t) }),
            (0u8..5).prop_map(|t| TxnCommand::Abort { txn: txn_id(t) }),
            (0u8..5, any::<bool>()).prop_map(|(t, commit)| TxnCommand::Resolve {
                txn: txn_id(t),
                commit
            }),
            (0u8..5, any::<u8>()).prop_map(|(t, p)| TxnCommand::Push {
                txn: txn_id(t),
                priority: u64::from(p),
            }),
            (0u8..5).prop_map(|t| TxnCommand::Forget { txn: txn_id(t) }),
        ];
        prop_oneof![
            1 => Just(Command::RegisterSession { stamp: 0 }),
            2 => (1u64..4, 1u64..6, 0u8..4).prop_map(|(session, seq, k)| Command::Put {
                session,
                seq,
                request: 0,
                stamp: 0,
                key: key(k),
                value: Bytes::from_static(b"p"),
            }),
            8 => txn.prop_map(|command| Command::Txn { stamp: 0, command }),
        ]
    }

    /// The command with its stamp at `ms`.
    fn stamped(c: Command, ms: u64) -> Command {
        match c {
            Command::RegisterSession { .. } => Command::RegisterSession { stamp: at(ms) },
            Command::Put {
                session,
                seq,
                request,
                key,
                value,
                ..
            } => Command::Put {
                session,
                seq,
                request,
                stamp: at(ms),
                key,
                value,
            },
            Command::Txn { command, .. } => Command::Txn {
                stamp: at(ms),
                command,
            },
        }
    }

    fn limits() -> TxnLimits {
        TxnLimits {
            max_records: 4,
            max_intents: 3,
            max_resolved: 3,
            retention_ms: 300,
            max_ttl_ms: 400,
        }
    }

    proptest! {
        /// A replica restored from a snapshot taken anywhere in the log and
        /// fed the rest ends identical to one fed every entry, answering
        /// the same on the way: snapshots carry all transaction state.
        #[test]
        fn a_replica_from_any_snapshot_goes_on_identically(
            commands in proptest::collection::vec((command(), 0u64..150), 1..60),
            cut in any::<proptest::sample::Index>(),
        ) {
            let cut = cut.index(commands.len());
            let mut a = KvStore::default().with_txn_limits(limits());
            let mut b = KvStore::default().with_txn_limits(limits());
            let mut ms = 1000;
            for (i, (c, dt)) in commands.into_iter().enumerate() {
                ms += dt;
                if i == cut {
                    b.restore(a.snapshot()).unwrap();
                }
                let c = stamped(c, ms);
                let index = i as u64 + 1;
                let ra = a.apply(index, c.clone());
                if i >= cut {
                    let rb = b.apply(index, c);
                    prop_assert_eq!(ra, rb, "entry {}", index);
                }
                prop_assert!(a.intents() <= limits().max_intents);
                prop_assert!(a.txn_records() <= limits().max_records);
            }
            prop_assert_eq!(a.snapshot(), b.snapshot());
        }

        /// A transaction step answered with a refusal (conflict, failed cas,
        /// a limit) changes no value, intent or session; only an anchor's
        /// prepare may leave its own new pending record (the begin half).
        #[test]
        fn refusals_change_nothing(
            commands in proptest::collection::vec((command(), 0u64..150), 1..60),
        ) {
            let mut s = KvStore::default().with_txn_limits(limits());
            let mut ms = 1000;
            for (i, (c, dt)) in commands.into_iter().enumerate() {
                ms += dt;
                // Bring the log time (and what expires with it) forward first.
                s.apply(2 * i as u64 + 1, stamped(Command::RegisterSession { stamp: 0 }, ms));
                let data: Vec<_> = s.entries().map(|(k, v)| (k.clone(), v.clone())).collect();
                let intents: Vec<_> =
                    s.intent_entries().map(|(k, i)| (k.clone(), i.clone())).collect();
                let (sessions, records) = (s.sessions(), s.txn_records());
                let begun = match &c {
                    Command::Txn {
                        command: TxnCommand::Prepare { txn, begin: Some(_), .. },
                        ..
                    } => s.txn_record(*txn).is_none().then_some(*txn),
                    _ => None,
                };
                let applied = s.apply(2 * i as u64 + 2, stamped(c, ms));
                if matches!(
                    applied,
                    Applied::Txn(TxnReply::Conflict(_) | TxnReply::CasFailed { .. } | TxnReply::Limit(_))
                ) {
                    let after: Vec<_> = s.entries().map(|(k, v)| (k.clone(), v.clone())).collect();
                    prop_assert_eq!(after, data);
                    let after: Vec<_> =
                        s.intent_entries().map(|(k, i)| (k.clone(), i.clone())).collect();
                    prop_assert_eq!(after, intents);
                    prop_assert_eq!(s.sessions(), sessions);
                    let new_record = begun
                        .and_then(|t| s.txn_record(t))
                        .is_some_and(|r| r.status == TxnStatus::Pending);
                    // A new record may have evicted a tombstone: the count
                    // grows by one at most, and only for a new record.
                    prop_assert!(s.txn_records() <= records + usize::from(new_record));
                }
            }
        }
    }
}
