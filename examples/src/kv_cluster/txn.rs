//! Cross-shard atomic transactions: two-phase commit in which every
//! participant is a shard (a Raft group) and the coordinator's decision is
//! itself replicated.
//!
//! **The record.** A transaction's record lives in the shard of its first
//! key, the *anchor*, keyed by its [`TxnId`] (the client's id and a
//! counter). It is created by the anchor's [`TxnCommand::Prepare`] (with
//! [`Begin`]), as `Pending { priority, expiry }` (expiry in log time), and
//! ends `Committed` or `Aborted`. The transaction commits exactly when the
//! anchor applies [`TxnCommand::Commit`]: that entry is the decision, and
//! it is in a Raft log, so a crashed coordinator's decision survives it.
//!
//! **Intents.** Each participant applies a [`TxnCommand::Prepare`] with the
//! transaction's operations on its keys: if any key holds another
//! transaction's intent it answers [`TxnReply::Conflict`] and changes
//! nothing; if a compare-and-set fails it answers [`TxnReply::CasFailed`];
//! otherwise it writes an intent on every key (the provisional value, or a
//! lock for a read) and answers [`TxnReply::Prepared`] with the values read.
//! An intent blocks every other writer and reader of its key: a plain get
//! or put answers [`Reply::Intent`] instead.
//! Whoever finds an intent waits a bounded time, then *pushes* the
//! transaction's record ([`TxnCommand::Push`]): a pending record whose
//! expiry passed (in log time), or whose priority is below the pusher's,
//! is aborted; a finished one reports how it ended. The finder then
//! resolves the intent ([`TxnCommand::Resolve`]) and goes on. So an intent
//! left by a crashed coordinator lasts until someone needs its key and the
//! transaction's expiry has passed, never longer: nothing stays in doubt.
//!
//! **The coordinator** ([`Coordinator`]) is a Sans-IO state machine: it
//! hands out requests ([`Coordinator::poll_request`]), takes replies and
//! time, and ends with a [`TxnOutcome`]. `Client::txn` drives it over TCP;
//! the deterministic simulation drives it over its simulated network.
//! Attempts that are pushed out (aborted by a higher-priority transaction)
//! start again under a new id with the same priority, so an old
//! transaction ends up the oldest and wins; the number of attempts is
//! bounded.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use bytes::{BufMut, Bytes, BytesMut};

use super::Error;
use super::protocol::{
    Reply, Request, finish, get_bytes, get_string, get_u8, get_u32, get_u64, need, put_str,
};

/// The most operations one transaction carries (decoders refuse more).
pub const MAX_TXN_OPS: usize = 64;

/// The most shards one transaction spans (decoders refuse more).
pub const MAX_PARTICIPANTS: usize = 64;

/// A transaction's id: its client's id and that client's counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxnId {
    /// The client (its transport id, or any id unique among clients).
    pub client: u64,
    /// The client's counter: every attempt has its own.
    pub seq: u64,
}

impl std::fmt::Display for TxnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}.{}", self.client, self.seq)
    }
}

/// One operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    /// Write `value` under `key`.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
    },
    /// Write `value` under `key` if its committed value is `expect` (none:
    /// the key is absent); otherwise the transaction fails.
    Cas {
        /// The key.
        key: String,
        /// The value it must hold (none: absent).
        expect: Option<Bytes>,
        /// The new value.
        value: Bytes,
    },
    /// Read `key` and keep it locked until the transaction ends.
    Get {
        /// The key.
        key: String,
    },
}

impl TxnOp {
    /// The key the operation is on.
    pub fn key(&self) -> &str {
        match self {
            TxnOp::Put { key, .. } | TxnOp::Cas { key, .. } | TxnOp::Get { key } => key,
        }
    }
}

/// What the anchor's prepare adds: the transaction record's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Begin {
    /// The transaction's priority: a push by a higher one aborts it.
    pub priority: u64,
    /// How long (log time, ms) the record stays pending before any push
    /// aborts it; the store caps it.
    pub ttl_ms: u64,
    /// Every shard the transaction has keys in (the anchor included).
    pub participants: Vec<u32>,
    /// Commit at once if the prepare succeeds (one-phase commit: every key
    /// is in the anchor).
    pub commit: bool,
}

/// A transaction command, as it goes through a shard's log (inside
/// `Command::Txn`, which carries the leader's HLC stamp).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnCommand {
    /// Lock the keys of `ops` (on this shard) for `txn` and write its
    /// intents; on the anchor, `begin` also creates the record.
    Prepare {
        /// The transaction.
        txn: TxnId,
        /// The shard holding its record.
        anchor: u32,
        /// On the anchor: the record to create (or find).
        begin: Option<Begin>,
        /// The operations on this shard's keys.
        ops: Vec<TxnOp>,
    },
    /// On the anchor: decide commit (a pending record whose expiry has not
    /// passed becomes committed) and resolve the anchor's own intents.
    Commit {
        /// The transaction.
        txn: TxnId,
    },
    /// On the anchor: the coordinator gives up (a pending record becomes
    /// aborted; a committed one stays committed).
    Abort {
        /// The transaction.
        txn: TxnId,
    },
    /// On a participant: turn `txn`'s intents into values (`commit`) or
    /// drop them.
    Resolve {
        /// The transaction.
        txn: TxnId,
        /// Whether it committed.
        commit: bool,
    },
    /// On the anchor: report the record's state; abort it if it is pending
    /// and expired, or of lower priority than `priority`.
    Push {
        /// The transaction pushed.
        txn: TxnId,
        /// The pusher's priority.
        priority: u64,
    },
    /// On the anchor: every participant is resolved; the record may go
    /// (it is kept as a tombstone for the store's retention).
    Forget {
        /// The transaction.
        txn: TxnId,
    },
}

impl TxnCommand {
    /// The transaction the command is about.
    pub fn txn(&self) -> TxnId {
        match self {
            TxnCommand::Prepare { txn, .. }
            | TxnCommand::Commit { txn }
            | TxnCommand::Abort { txn }
            | TxnCommand::Resolve { txn, .. }
            | TxnCommand::Push { txn, .. }
            | TxnCommand::Forget { txn } => *txn,
        }
    }
}

/// Where a transaction's record is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnStatus {
    /// Not decided yet.
    Pending,
    /// Committed: its intents become values.
    Committed,
    /// Aborted (by its coordinator, a push, or its expiry): its intents go.
    Aborted,
}

impl TxnStatus {
    fn code(self) -> u8 {
        match self {
            TxnStatus::Pending => 0,
            TxnStatus::Committed => 1,
            TxnStatus::Aborted => 2,
        }
    }

    fn from_code(code: u8) -> Result<Self, Error> {
        Ok(match code {
            0 => TxnStatus::Pending,
            1 => TxnStatus::Committed,
            2 => TxnStatus::Aborted,
            _ => return Err(Error::Malformed("unknown transaction status")),
        })
    }
}

/// An intent found on a key: whose it is and where its record lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IntentRef {
    /// The key.
    pub key: String,
    /// The transaction holding it.
    pub txn: TxnId,
    /// The shard of that transaction's record.
    pub anchor: u32,
}

/// A store limit a transaction command ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnLimit {
    /// The shard holds as many transaction records as it keeps.
    Records,
    /// The shard holds as many intents as it keeps.
    Intents,
}

/// A value read by a transaction: the key, and its value with its HLC
/// stamp (none: absent).
pub type ReadValue = (String, Option<(Bytes, u64)>);

/// A shard's answer to a transaction command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnReply {
    /// The intents are written (now or by an earlier attempt).
    Prepared {
        /// The values its `Get` operations read, in operation order.
        reads: Vec<ReadValue>,
        /// The prepare also committed (one-phase commit).
        committed: bool,
    },
    /// A key holds another transaction's intent; nothing was changed.
    Conflict(IntentRef),
    /// A compare-and-set's expectation failed; nothing was changed.
    CasFailed {
        /// The key.
        key: String,
        /// Its committed value.
        actual: Option<Bytes>,
    },
    /// The record's state (to commit, abort, push; or to a prepare of a
    /// transaction already finished), and its participants if known.
    Status {
        /// The state.
        status: TxnStatus,
        /// The shards it spans (empty: unknown here).
        participants: Vec<u32>,
    },
    /// The intents are resolved, or the record forgotten.
    Done,
    /// A limit of the store refused the command; nothing was changed.
    Limit(TxnLimit),
}

fn put_txn(dst: &mut BytesMut, txn: TxnId) {
    dst.put_u64(txn.client);
    dst.put_u64(txn.seq);
}

fn get_txn(src: &mut Bytes) -> Result<TxnId, Error> {
    Ok(TxnId {
        client: get_u64(src)?,
        seq: get_u64(src)?,
    })
}

fn put_opt(dst: &mut BytesMut, value: Option<&Bytes>) {
    match value {
        Some(v) => {
            dst.put_u8(1);
            put_str(dst, v);
        }
        None => dst.put_u8(0),
    }
}

fn get_opt(src: &mut Bytes) -> Result<Option<Bytes>, Error> {
    match get_u8(src)? {
        0 => Ok(None),
        1 => Ok(Some(get_bytes(src)?)),
        _ => Err(Error::Malformed("unknown option flag")),
    }
}

fn put_shards(dst: &mut BytesMut, shards: &[u32]) {
    dst.put_u32(shards.len() as u32);
    for s in shards {
        dst.put_u32(*s);
    }
}

fn get_shards(src: &mut Bytes) -> Result<Vec<u32>, Error> {
    let n = get_u32(src)? as usize;
    if n > MAX_PARTICIPANTS {
        return Err(Error::Malformed("too many participants"));
    }
    need(src, n.saturating_mul(4))?;
    (0..n).map(|_| get_u32(src)).collect()
}

pub(super) fn put_intent(dst: &mut BytesMut, intent: &IntentRef) {
    put_str(dst, intent.key.as_bytes());
    put_txn(dst, intent.txn);
    dst.put_u32(intent.anchor);
}

pub(super) fn get_intent(src: &mut Bytes) -> Result<IntentRef, Error> {
    Ok(IntentRef {
        key: get_string(src)?,
        txn: get_txn(src)?,
        anchor: get_u32(src)?,
    })
}

fn put_op(dst: &mut BytesMut, op: &TxnOp) {
    match op {
        TxnOp::Put { key, value } => {
            dst.put_u8(1);
            put_str(dst, key.as_bytes());
            put_str(dst, value);
        }
        TxnOp::Cas { key, expect, value } => {
            dst.put_u8(2);
            put_str(dst, key.as_bytes());
            put_opt(dst, expect.as_ref());
            put_str(dst, value);
        }
        TxnOp::Get { key } => {
            dst.put_u8(3);
            put_str(dst, key.as_bytes());
        }
    }
}

fn get_op(src: &mut Bytes) -> Result<TxnOp, Error> {
    Ok(match get_u8(src)? {
        1 => TxnOp::Put {
            key: get_string(src)?,
            value: get_bytes(src)?,
        },
        2 => TxnOp::Cas {
            key: get_string(src)?,
            expect: get_opt(src)?,
            value: get_bytes(src)?,
        },
        3 => TxnOp::Get {
            key: get_string(src)?,
        },
        _ => return Err(Error::Malformed("unknown transaction operation")),
    })
}

impl TxnCommand {
    /// Appends the command's bytes.
    pub fn encode_into(&self, dst: &mut BytesMut) {
        match self {
            TxnCommand::Prepare {
                txn,
                anchor,
                begin,
                ops,
            } => {
                dst.put_u8(1);
                put_txn(dst, *txn);
                dst.put_u32(*anchor);
                match begin {
                    None => dst.put_u8(0),
                    Some(b) => {
                        dst.put_u8(1 + u8::from(b.commit));
                        dst.put_u64(b.priority);
                        dst.put_u64(b.ttl_ms);
                        put_shards(dst, &b.participants);
                    }
                }
                dst.put_u32(ops.len() as u32);
                for op in ops {
                    put_op(dst, op);
                }
            }
            TxnCommand::Commit { txn } => {
                dst.put_u8(2);
                put_txn(dst, *txn);
            }
            TxnCommand::Abort { txn } => {
                dst.put_u8(3);
                put_txn(dst, *txn);
            }
            TxnCommand::Resolve { txn, commit } => {
                dst.put_u8(4);
                put_txn(dst, *txn);
                dst.put_u8(u8::from(*commit));
            }
            TxnCommand::Push { txn, priority } => {
                dst.put_u8(5);
                put_txn(dst, *txn);
                dst.put_u64(*priority);
            }
            TxnCommand::Forget { txn } => {
                dst.put_u8(6);
                put_txn(dst, *txn);
            }
        }
    }

    /// Parses a command (the caller checks nothing trails it).
    pub fn decode_from(src: &mut Bytes) -> Result<Self, Error> {
        Ok(match get_u8(src)? {
            1 => {
                let txn = get_txn(src)?;
                let anchor = get_u32(src)?;
                let begin = match get_u8(src)? {
                    0 => None,
                    flag @ (1 | 2) => Some(Begin {
                        priority: get_u64(src)?,
                        ttl_ms: get_u64(src)?,
                        participants: get_shards(src)?,
                        commit: flag == 2,
                    }),
                    _ => return Err(Error::Malformed("unknown begin flag")),
                };
                let n = get_u32(src)? as usize;
                if n > MAX_TXN_OPS {
                    return Err(Error::Malformed("too many transaction operations"));
                }
                let ops = (0..n).map(|_| get_op(src)).collect::<Result<_, _>>()?;
                TxnCommand::Prepare {
                    txn,
                    anchor,
                    begin,
                    ops,
                }
            }
            2 => TxnCommand::Commit { txn: get_txn(src)? },
            3 => TxnCommand::Abort { txn: get_txn(src)? },
            4 => TxnCommand::Resolve {
                txn: get_txn(src)?,
                commit: match get_u8(src)? {
                    0 => false,
                    1 => true,
                    _ => return Err(Error::Malformed("unknown resolve flag")),
                },
            },
            5 => TxnCommand::Push {
                txn: get_txn(src)?,
                priority: get_u64(src)?,
            },
            6 => TxnCommand::Forget { txn: get_txn(src)? },
            _ => return Err(Error::Malformed("unknown transaction command")),
        })
    }

    /// The command's bytes alone.
    pub fn encode(&self) -> Bytes {
        let mut dst = BytesMut::new();
        self.encode_into(&mut dst);
        dst.freeze()
    }

    /// Parses [`encode`](Self::encode)'s bytes.
    pub fn decode(mut src: Bytes) -> Result<Self, Error> {
        let command = Self::decode_from(&mut src)?;
        finish(&src, command)
    }
}

impl TxnReply {
    /// Appends the reply's bytes.
    pub fn encode_into(&self, dst: &mut BytesMut) {
        match self {
            TxnReply::Prepared { reads, committed } => {
                dst.put_u8(1);
                dst.put_u8(u8::from(*committed));
                dst.put_u32(reads.len() as u32);
                for (key, value) in reads {
                    put_str(dst, key.as_bytes());
                    match value {
                        Some((v, stamp)) => {
                            dst.put_u8(1);
                            put_str(dst, v);
                            dst.put_u64(*stamp);
                        }
                        None => dst.put_u8(0),
                    }
                }
            }
            TxnReply::Conflict(intent) => {
                dst.put_u8(2);
                put_intent(dst, intent);
            }
            TxnReply::CasFailed { key, actual } => {
                dst.put_u8(3);
                put_str(dst, key.as_bytes());
                put_opt(dst, actual.as_ref());
            }
            TxnReply::Status {
                status,
                participants,
            } => {
                dst.put_u8(4);
                dst.put_u8(status.code());
                put_shards(dst, participants);
            }
            TxnReply::Done => dst.put_u8(5),
            TxnReply::Limit(limit) => {
                dst.put_u8(6);
                dst.put_u8(match limit {
                    TxnLimit::Records => 0,
                    TxnLimit::Intents => 1,
                });
            }
        }
    }

    /// Parses a reply (the caller checks nothing trails it).
    pub fn decode_from(src: &mut Bytes) -> Result<Self, Error> {
        Ok(match get_u8(src)? {
            1 => {
                let committed = match get_u8(src)? {
                    0 => false,
                    1 => true,
                    _ => return Err(Error::Malformed("unknown prepared flag")),
                };
                let n = get_u32(src)? as usize;
                if n > MAX_TXN_OPS {
                    return Err(Error::Malformed("too many values read"));
                }
                let mut reads = Vec::with_capacity(n);
                for _ in 0..n {
                    let key = get_string(src)?;
                    let value = match get_u8(src)? {
                        0 => None,
                        1 => {
                            let v = get_bytes(src)?;
                            Some((v, get_u64(src)?))
                        }
                        _ => return Err(Error::Malformed("unknown value flag")),
                    };
                    reads.push((key, value));
                }
                TxnReply::Prepared { reads, committed }
            }
            2 => TxnReply::Conflict(get_intent(src)?),
            3 => TxnReply::CasFailed {
                key: get_string(src)?,
                actual: get_opt(src)?,
            },
            4 => TxnReply::Status {
                status: TxnStatus::from_code(get_u8(src)?)?,
                participants: get_shards(src)?,
            },
            5 => TxnReply::Done,
            6 => TxnReply::Limit(match get_u8(src)? {
                0 => TxnLimit::Records,
                1 => TxnLimit::Intents,
                _ => return Err(Error::Malformed("unknown transaction limit")),
            }),
            _ => return Err(Error::Malformed("unknown transaction reply")),
        })
    }
}

/// A transaction's priority from its age: the earlier `start_ms` (wall
/// clock of its first attempt), the higher; `salt` (any random bits) breaks
/// ties between transactions started in the same millisecond.
pub fn priority_by_age(start_ms: u64, salt: u64) -> u64 {
    u64::MAX - ((start_ms << 20) | (salt & 0xF_FFFF))
}

/// How a coordinator behaves. Defaults are safe for a 3-node cluster on
/// one machine or a LAN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnConfig {
    /// The record's time to live (log time, ms): past it, any push aborts
    /// a pending record, and its commit fails.
    pub ttl_ms: u64,
    /// Attempts (each under a new id) before giving up.
    pub max_attempts: u32,
    /// Wait after finding an intent before the first push.
    pub push_after_ms: u64,
    /// Longest wait between pushes (the wait doubles up to it).
    pub max_backoff_ms: u64,
    /// Pushes of one still-pending intent before this attempt gives up
    /// (aborts itself and starts again).
    pub max_pushes: u32,
    /// A request unanswered for this long is sent again.
    pub resend_ms: u64,
    /// The whole transaction's deadline: before the commit is sent it
    /// aborts; after, the outcome is [`TxnOutcome::Unknown`].
    pub deadline_ms: u64,
    /// Finish without sending the last step, the record's
    /// [`TxnCommand::Forget`] (every intent is resolved by then): hand it
    /// from [`Coordinator::take_deferred_forget`] to the next coordinator's
    /// [`Coordinator::carry_forgets`], which sends it alongside its own
    /// first round. Saves a round of latency per transaction.
    pub defer_forget: bool,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            ttl_ms: 5_000,
            max_attempts: 10,
            push_after_ms: 5,
            max_backoff_ms: 200,
            max_pushes: 40,
            resend_ms: 500,
            deadline_ms: 30_000,
            defer_forget: false,
        }
    }
}

/// Why a transaction did not commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnFailure {
    /// A compare-and-set's expectation failed.
    CasFailed {
        /// The key.
        key: String,
        /// Its committed value.
        actual: Option<Bytes>,
    },
    /// Every attempt was aborted (pushed out by other transactions, or
    /// gave up waiting on one).
    Contention {
        /// Attempts made.
        attempts: u32,
    },
    /// A shard's limit refused it.
    Limit {
        /// The shard.
        shard: u32,
        /// Which limit.
        limit: TxnLimit,
    },
    /// The deadline passed before the commit was sent.
    Deadline,
    /// The operations were refused before anything was sent.
    Invalid(String),
}

impl std::fmt::Display for TxnFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TxnFailure::CasFailed { key, actual } => match actual {
                Some(v) => write!(
                    f,
                    "cas on {key:?} failed: it holds {:?}",
                    String::from_utf8_lossy(v)
                ),
                None => write!(f, "cas on {key:?} failed: it is absent"),
            },
            TxnFailure::Contention { attempts } => {
                write!(f, "aborted by contention after {attempts} attempts")
            }
            TxnFailure::Limit { shard, limit } => {
                write!(f, "shard {shard} refused it: too many {limit:?}")
            }
            TxnFailure::Deadline => f.write_str("deadline passed before the commit"),
            TxnFailure::Invalid(why) => write!(f, "invalid transaction: {why}"),
        }
    }
}

/// How a transaction ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Committed: every write is in, atomically.
    Committed {
        /// The attempt's id.
        txn: TxnId,
        /// The values its `Get` operations read, in operation order.
        reads: Vec<ReadValue>,
        /// Attempts it took.
        attempts: u32,
    },
    /// Not committed: none of its writes is in.
    Aborted {
        /// Why.
        reason: TxnFailure,
        /// Attempts made.
        attempts: u32,
    },
    /// The commit was sent and never answered: it may or may not have
    /// committed (a later push of the record tells).
    Unknown {
        /// The attempt's id.
        txn: TxnId,
    },
}

/// A request a coordinator wants sent to a shard's leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The coordinator's id for it: hand its reply to
    /// [`Coordinator::handle_reply`] with this id.
    pub id: u64,
    /// The shard.
    pub shard: u32,
    /// The request ([`Request::Txn`]).
    pub request: Request,
}

/// What an outstanding request is for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Purpose {
    /// The prepare of one participant (the anchor's carries Begin).
    Prepare(u32),
    /// A push of the intent found on a participant.
    Push(u32),
    /// Resolving that intent on the participant, with the pushed status.
    ResolveOther(u32),
    /// The commit on the anchor.
    Commit,
    /// This attempt's own abort on the anchor.
    Abort,
    /// Resolving this attempt's intents on a participant.
    Resolve(u32),
    /// Forgetting the record once every participant is resolved.
    Forget,
    /// Cleaning up after an earlier attempt (not waited for).
    Cleanup,
    /// An earlier transaction's forget, carried (waited for, a bounded
    /// number of sends).
    Carried,
}

/// Sends of a carried forget (one per resend interval) before it is given
/// up: its committed record then stays on the anchor, counted against the
/// anchor's record cap, as a crashed coordinator's would.
const CARRIED_SENDS: u32 = 20;

#[derive(Clone, Debug)]
struct Inflight {
    purpose: Purpose,
    shard: u32,
    command: TxnCommand,
    resend_at: u64,
    /// Sends so far (cleanup requests are sent a bounded number of times).
    sends: u32,
}

/// One participant's progress in the prepare phase.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    /// Its prepare is in flight.
    Preparing,
    /// Its intents are written.
    Prepared,
    /// It found `intent`: waits until `until_ms`, then pushes.
    Waiting {
        intent: IntentRef,
        until_ms: u64,
        pushes: u32,
    },
    /// Pushing (or resolving) the intent found.
    Pushing { intent: IntentRef, pushes: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Prepares (and the pushes they need) in flight.
    Preparing,
    /// The commit is in flight.
    Committing,
    /// Committed (or aborted, for `commit` false): resolving participants.
    Resolving { commit: bool },
    /// This attempt is aborting itself; then it starts again (`retry`) or
    /// ends with `failure`.
    Aborting {
        retry: bool,
        failure: Option<TxnFailure>,
    },
    /// Finished; cleanup requests may still be out.
    Done,
}

/// A transaction's coordinator, without I/O: see the [module](self) docs.
///
/// Drive it: send every [`poll_request`](Self::poll_request) to its shard's
/// leader (following leader hints yourself), hand each reply to
/// [`handle_reply`](Self::handle_reply), and call
/// [`handle_timeout`](Self::handle_timeout) at
/// [`poll_timeout`](Self::poll_timeout); stop when
/// [`is_finished`](Self::is_finished). Replies to requests it no longer
/// waits for, and replies that are not transaction replies (`NotLeader`, a
/// timeout), are ignored: the request is sent again at its resend time.
#[derive(Debug)]
pub struct Coordinator {
    config: TxnConfig,
    txn: TxnId,
    priority: u64,
    anchor: u32,
    /// The operations by shard, in their given order within each.
    ops: BTreeMap<u32, Vec<TxnOp>>,
    /// The order of the `Get` keys in the caller's operations.
    get_order: Vec<String>,
    phase: Phase,
    parts: BTreeMap<u32, Part>,
    reads: HashMap<String, Option<(Bytes, u64)>>,
    /// Participants whose resolve is still unanswered.
    unresolved: BTreeSet<u32>,
    attempts: u32,
    started_ms: u64,
    next_id: u64,
    outbox: VecDeque<u64>,
    inflight: BTreeMap<u64, Inflight>,
    outcome: Option<TxnOutcome>,
    /// One-phase: every key is in the anchor and nothing is read.
    one_phase: bool,
    /// The forget this coordinator left for the next (see
    /// [`TxnConfig::defer_forget`]).
    deferred: Option<(u32, TxnId)>,
}

impl Coordinator {
    /// A coordinator for `ops` as transaction `txn` (its `seq` is bumped
    /// for each further attempt: give each coordinator a range of its own,
    /// e.g. by stepping a client's counter by `config.max_attempts`), with
    /// `priority` (see [`priority_by_age`]), placing keys with `shard_of`,
    /// starting at `now_ms` (any monotonic clock in milliseconds).
    /// Operations must be non-empty, at most [`MAX_TXN_OPS`], one per key;
    /// otherwise the outcome is at once [`TxnFailure::Invalid`].
    pub fn new(
        config: TxnConfig,
        txn: TxnId,
        priority: u64,
        ops: Vec<TxnOp>,
        shard_of: impl Fn(&str) -> u32,
        now_ms: u64,
    ) -> Self {
        let anchor = ops.first().map_or(0, |op| shard_of(op.key()));
        let mut invalid = None;
        let mut keys = BTreeSet::new();
        if ops.is_empty() {
            invalid = Some("no operations".to_owned());
        } else if ops.len() > MAX_TXN_OPS {
            invalid = Some(format!("{} operations (at most {MAX_TXN_OPS})", ops.len()));
        }
        let mut by_shard: BTreeMap<u32, Vec<TxnOp>> = BTreeMap::new();
        let mut get_order = Vec::new();
        for op in ops {
            if !keys.insert(op.key().to_owned()) {
                invalid = Some(format!("key {:?} appears twice", op.key()));
            }
            if let TxnOp::Get { key } = &op {
                get_order.push(key.clone());
            }
            by_shard.entry(shard_of(op.key())).or_default().push(op);
        }
        if by_shard.len() > MAX_PARTICIPANTS {
            invalid = Some(format!(
                "{} shards (at most {MAX_PARTICIPANTS})",
                by_shard.len()
            ));
        }
        let one_phase = by_shard.len() == 1 && get_order.is_empty();
        let mut c = Coordinator {
            config,
            txn,
            priority,
            anchor,
            ops: by_shard,
            get_order,
            phase: Phase::Preparing,
            parts: BTreeMap::new(),
            reads: HashMap::new(),
            unresolved: BTreeSet::new(),
            attempts: 0,
            started_ms: now_ms,
            next_id: 1,
            outbox: VecDeque::new(),
            inflight: BTreeMap::new(),
            outcome: None,
            one_phase,
            deferred: None,
        };
        match invalid {
            Some(why) => {
                c.phase = Phase::Done;
                c.outcome = Some(TxnOutcome::Aborted {
                    reason: TxnFailure::Invalid(why),
                    attempts: 0,
                });
            }
            None => c.start_attempt(now_ms),
        }
        c
    }

    /// The current attempt's id.
    pub fn txn(&self) -> TxnId {
        self.txn
    }

    /// The shard holding the record.
    pub fn anchor(&self) -> u32 {
        self.anchor
    }

    /// The shards the transaction spans.
    pub fn participants(&self) -> Vec<u32> {
        self.ops.keys().copied().collect()
    }

    /// The outcome, once decided (the coordinator may still be resolving
    /// intents: see [`is_finished`](Self::is_finished)).
    pub fn outcome(&self) -> Option<&TxnOutcome> {
        self.outcome.as_ref()
    }

    /// Whether it has nothing more to do (outcome decided, intents
    /// resolved, record forgotten; cleanup of earlier attempts is sent a
    /// bounded number of times and not waited for).
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Done
            && self
                .inflight
                .values()
                .all(|f| f.purpose == Purpose::Cleanup)
    }

    /// Sends the forgets of earlier transactions (`(anchor, txn)`, from
    /// their coordinators' [`take_deferred_forget`](Self::take_deferred_forget))
    /// with this one's requests; [`is_finished`](Self::is_finished) waits
    /// for their answers too (a bounded number of sends each).
    pub fn carry_forgets(&mut self, forgets: impl IntoIterator<Item = (u32, TxnId)>, now_ms: u64) {
        for (anchor, txn) in forgets {
            self.send(Purpose::Carried, anchor, TxnCommand::Forget { txn }, now_ms);
        }
    }

    /// With [`TxnConfig::defer_forget`]: the forget this transaction still
    /// owes its anchor, once finished (hand it to the next coordinator).
    pub fn take_deferred_forget(&mut self) -> Option<(u32, TxnId)> {
        self.deferred.take()
    }

    /// The next request to send.
    pub fn poll_request(&mut self) -> Option<Outgoing> {
        while let Some(id) = self.outbox.pop_front() {
            if let Some(f) = self.inflight.get(&id) {
                return Some(Outgoing {
                    id,
                    shard: f.shard,
                    request: Request::Txn {
                        shard: f.shard,
                        command: f.command.clone(),
                    },
                });
            }
        }
        None
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants calling next
    /// (none: only replies move it on).
    pub fn poll_timeout(&self) -> Option<u64> {
        let resend = self.inflight.values().map(|f| f.resend_at).min();
        let waits = self.parts.values().filter_map(|p| match p {
            Part::Waiting { until_ms, .. } => Some(*until_ms),
            _ => None,
        });
        let deadline = (self.phase != Phase::Done)
            .then(|| self.started_ms.saturating_add(self.config.deadline_ms));
        resend.into_iter().chain(waits).chain(deadline).min()
    }

    /// Time passed: resends what is unanswered, pushes what waited enough,
    /// and enforces the deadline.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if self.phase != Phase::Done
            && now_ms >= self.started_ms.saturating_add(self.config.deadline_ms)
        {
            self.on_deadline(now_ms);
        }
        let due: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.resend_at <= now_ms)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let Some(mut f) = self.inflight.remove(&id) else {
                continue;
            };
            if (f.purpose == Purpose::Cleanup && f.sends >= 3)
                || (f.purpose == Purpose::Carried && f.sends >= CARRIED_SENDS)
            {
                continue;
            }
            f.sends += 1;
            f.resend_at = now_ms.saturating_add(self.config.resend_ms);
            // The same id: a late answer to the first send counts too.
            self.inflight.insert(id, f);
            self.outbox.push_back(id);
        }
        let ready: Vec<(u32, IntentRef, u32)> = self
            .parts
            .iter()
            .filter_map(|(&shard, p)| match p {
                Part::Waiting {
                    intent,
                    until_ms,
                    pushes,
                } if *until_ms <= now_ms => Some((shard, intent.clone(), *pushes)),
                _ => None,
            })
            .collect();
        for (shard, intent, pushes) in ready {
            self.parts.insert(
                shard,
                Part::Pushing {
                    intent: intent.clone(),
                    pushes: pushes + 1,
                },
            );
            let push = TxnCommand::Push {
                txn: intent.txn,
                priority: self.priority,
            };
            self.send(Purpose::Push(shard), intent.anchor, push, now_ms);
        }
    }

    /// A reply to request `id` arrived.
    pub fn handle_reply(&mut self, id: u64, reply: &Reply, now_ms: u64) {
        let Reply::Txn(reply) = reply else {
            return;
        };
        let Some(f) = self.inflight.get(&id) else {
            return;
        };
        if matches!(reply, TxnReply::Limit(_)) && f.purpose == Purpose::Cleanup {
            return;
        }
        let Some(f) = self.inflight.remove(&id) else {
            return;
        };
        match f.purpose {
            Purpose::Prepare(shard) => self.on_prepared(shard, reply, now_ms),
            Purpose::Push(shard) => self.on_pushed(shard, reply, now_ms),
            Purpose::ResolveOther(shard) => {
                if matches!(self.parts.get(&shard), Some(Part::Pushing { .. }))
                    && self.phase == Phase::Preparing
                {
                    self.prepare(shard, now_ms);
                }
            }
            Purpose::Commit => self.on_committed(reply, now_ms),
            Purpose::Abort => self.on_aborted(reply, now_ms),
            Purpose::Resolve(shard) => {
                if matches!(reply, TxnReply::Done) {
                    self.unresolved.remove(&shard);
                    self.maybe_forget(now_ms);
                }
            }
            Purpose::Forget => {
                if matches!(self.phase, Phase::Resolving { .. }) {
                    self.phase = Phase::Done;
                }
            }
            Purpose::Cleanup | Purpose::Carried => {}
        }
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn send(&mut self, purpose: Purpose, shard: u32, command: TxnCommand, now_ms: u64) {
        let id = self.fresh_id();
        let f = Inflight {
            purpose,
            shard,
            command,
            resend_at: now_ms.saturating_add(self.config.resend_ms),
            sends: 1,
        };
        self.inflight.insert(id, f);
        self.outbox.push_back(id);
    }

    fn start_attempt(&mut self, now_ms: u64) {
        if self.attempts > 0 {
            self.txn.seq += 1;
        }
        self.attempts += 1;
        self.phase = Phase::Preparing;
        self.reads.clear();
        self.parts.clear();
        let shards: Vec<u32> = self.ops.keys().copied().collect();
        for shard in shards {
            self.parts.insert(shard, Part::Preparing);
            self.prepare(shard, now_ms);
        }
    }

    fn prepare(&mut self, shard: u32, now_ms: u64) {
        let begin = (shard == self.anchor).then(|| Begin {
            priority: self.priority,
            ttl_ms: self.config.ttl_ms,
            participants: self.ops.keys().copied().collect(),
            commit: self.one_phase,
        });
        let command = TxnCommand::Prepare {
            txn: self.txn,
            anchor: self.anchor,
            begin,
            ops: self.ops.get(&shard).cloned().unwrap_or_default(),
        };
        self.parts.insert(shard, Part::Preparing);
        self.send(Purpose::Prepare(shard), shard, command, now_ms);
    }

    fn on_prepared(&mut self, shard: u32, reply: &TxnReply, now_ms: u64) {
        if self.phase != Phase::Preparing {
            return;
        }
        match reply {
            TxnReply::Prepared { reads, committed } => {
                for (key, value) in reads {
                    self.reads.insert(key.clone(), value.clone());
                }
                self.parts.insert(shard, Part::Prepared);
                if *committed {
                    self.decide_committed();
                    self.phase = Phase::Done;
                    return;
                }
                if self.parts.values().all(|p| *p == Part::Prepared) {
                    self.phase = Phase::Committing;
                    let commit = TxnCommand::Commit { txn: self.txn };
                    self.send(Purpose::Commit, self.anchor, commit, now_ms);
                }
            }
            TxnReply::Conflict(intent) => {
                let pushes = match self.parts.get(&shard) {
                    Some(Part::Pushing { pushes, .. }) => *pushes,
                    _ => 0,
                };
                if intent.txn == self.txn {
                    // Our own intent under our own id cannot conflict; a
                    // store that says so is answered by trying again.
                    self.prepare(shard, now_ms);
                    return;
                }
                self.wait_to_push(shard, intent.clone(), pushes, now_ms);
            }
            TxnReply::CasFailed { key, actual } => {
                let failure = TxnFailure::CasFailed {
                    key: key.clone(),
                    actual: actual.clone(),
                };
                self.abort_attempt(false, Some(failure), now_ms);
            }
            TxnReply::Status {
                status: TxnStatus::Committed,
                ..
            } if self.one_phase => {
                // A one-phase prepare answered again after it committed.
                self.decide_committed();
                self.phase = Phase::Done;
            }
            TxnReply::Status { .. } => {
                // Finished without us: a push aborted this attempt.
                self.abort_attempt(true, None, now_ms);
            }
            TxnReply::Limit(limit) => {
                let failure = TxnFailure::Limit {
                    shard,
                    limit: *limit,
                };
                self.abort_attempt(false, Some(failure), now_ms);
            }
            TxnReply::Done => self.prepare(shard, now_ms),
        }
    }

    fn on_pushed(&mut self, shard: u32, reply: &TxnReply, now_ms: u64) {
        if self.phase != Phase::Preparing {
            return;
        }
        let Some(Part::Pushing { intent, pushes }) = self.parts.get(&shard).cloned() else {
            return;
        };
        match reply {
            TxnReply::Status {
                status: status @ (TxnStatus::Committed | TxnStatus::Aborted),
                ..
            } => {
                let resolve = TxnCommand::Resolve {
                    txn: intent.txn,
                    commit: *status == TxnStatus::Committed,
                };
                self.send(Purpose::ResolveOther(shard), shard, resolve, now_ms);
            }
            _ => self.wait_to_push(shard, intent, pushes, now_ms),
        }
    }

    /// `shard`'s prepare is blocked by `intent`, pushed `pushes` times so
    /// far: waits (backing off) before pushing it again, or, past the
    /// pushes allowed, gives this attempt up.
    fn wait_to_push(&mut self, shard: u32, intent: IntentRef, pushes: u32, now_ms: u64) {
        if pushes >= self.config.max_pushes {
            self.abort_attempt(true, None, now_ms);
            return;
        }
        let wait = self
            .config
            .push_after_ms
            .saturating_mul(1 << pushes.min(16))
            .min(self.config.max_backoff_ms);
        self.parts.insert(
            shard,
            Part::Waiting {
                intent,
                until_ms: now_ms.saturating_add(wait),
                pushes,
            },
        );
    }

    fn on_committed(&mut self, reply: &TxnReply, now_ms: u64) {
        if self.phase != Phase::Committing {
            return;
        }
        match reply {
            TxnReply::Status {
                status: TxnStatus::Committed,
                ..
            } => {
                self.decide_committed();
                self.resolve_all(true, now_ms);
            }
            TxnReply::Status {
                status: TxnStatus::Aborted,
                ..
            } => {
                // Pushed (or expired) before the commit: the anchor's own
                // intents are gone; drop the others and try again.
                self.resolve_others_after_abort(now_ms);
                self.retry_or_fail(None, now_ms);
            }
            _ => {
                let commit = TxnCommand::Commit { txn: self.txn };
                self.send(Purpose::Commit, self.anchor, commit, now_ms);
            }
        }
    }

    fn on_aborted(&mut self, reply: &TxnReply, now_ms: u64) {
        let Phase::Aborting { retry, failure } = self.phase.clone() else {
            return;
        };
        match reply {
            TxnReply::Status {
                status: TxnStatus::Committed,
                ..
            } => {
                // Cannot happen (no commit was sent), but the record rules.
                self.decide_committed();
                self.resolve_all(true, now_ms);
            }
            TxnReply::Status { .. } | TxnReply::Done => {
                self.resolve_others_after_abort(now_ms);
                if retry {
                    self.retry_or_fail(failure, now_ms);
                } else {
                    self.finish_aborted(failure.unwrap_or(TxnFailure::Contention {
                        attempts: self.attempts,
                    }));
                }
            }
            _ => {
                let abort = TxnCommand::Abort { txn: self.txn };
                self.send(Purpose::Abort, self.anchor, abort, now_ms);
            }
        }
    }

    fn on_deadline(&mut self, now_ms: u64) {
        match self.phase {
            Phase::Preparing => {
                // Abort the record (so no one waits for its expiry) and drop
                // the intents, without waiting for either.
                self.drop_attempt_requests();
                let abort = TxnCommand::Abort { txn: self.txn };
                self.send(Purpose::Cleanup, self.anchor, abort, now_ms);
                self.resolve_others_after_abort(now_ms);
                self.finish_aborted(TxnFailure::Deadline);
            }
            Phase::Committing => {
                self.outcome = Some(TxnOutcome::Unknown { txn: self.txn });
                self.inflight.retain(|_, f| !f.purpose.of_attempt());
                self.phase = Phase::Done;
            }
            Phase::Aborting { .. } | Phase::Resolving { .. } => {
                // The outcome (if any) stands; stop waiting.
                if self.outcome.is_none() {
                    self.finish_aborted(TxnFailure::Deadline);
                }
                self.inflight.retain(|_, f| !f.purpose.of_attempt());
                self.phase = Phase::Done;
            }
            Phase::Done => {}
        }
    }

    fn decide_committed(&mut self) {
        let reads = self
            .get_order
            .iter()
            .map(|k| (k.clone(), self.reads.get(k).cloned().flatten()))
            .collect();
        self.outcome = Some(TxnOutcome::Committed {
            txn: self.txn,
            reads,
            attempts: self.attempts,
        });
    }

    fn finish_aborted(&mut self, reason: TxnFailure) {
        self.outcome = Some(TxnOutcome::Aborted {
            reason,
            attempts: self.attempts,
        });
        self.phase = Phase::Done;
    }

    /// Sends this attempt's abort to the anchor; then `retry` or fail.
    fn abort_attempt(&mut self, retry: bool, failure: Option<TxnFailure>, now_ms: u64) {
        self.drop_attempt_requests();
        self.phase = Phase::Aborting { retry, failure };
        let abort = TxnCommand::Abort { txn: self.txn };
        self.send(Purpose::Abort, self.anchor, abort, now_ms);
    }

    /// Forgets the current attempt's outstanding requests.
    fn drop_attempt_requests(&mut self) {
        self.inflight.retain(|_, f| !f.purpose.of_attempt());
        self.parts.clear();
    }

    /// After this attempt's record is aborted: drop its intents on every
    /// participant (the anchor dropped its own), not waiting for answers.
    fn resolve_others_after_abort(&mut self, now_ms: u64) {
        self.drop_attempt_requests();
        let others: Vec<u32> = self
            .ops
            .keys()
            .copied()
            .filter(|&s| s != self.anchor)
            .collect();
        for shard in others {
            let resolve = TxnCommand::Resolve {
                txn: self.txn,
                commit: false,
            };
            self.send(Purpose::Cleanup, shard, resolve, now_ms);
        }
    }

    fn retry_or_fail(&mut self, failure: Option<TxnFailure>, now_ms: u64) {
        if self.attempts >= self.config.max_attempts {
            self.finish_aborted(failure.unwrap_or(TxnFailure::Contention {
                attempts: self.attempts,
            }));
        } else {
            self.start_attempt(now_ms);
        }
    }

    /// After the decision: resolve every participant but the anchor (whose
    /// commit resolved its own), then forget the record.
    fn resolve_all(&mut self, commit: bool, now_ms: u64) {
        self.drop_attempt_requests();
        self.phase = Phase::Resolving { commit };
        self.unresolved = self
            .ops
            .keys()
            .copied()
            .filter(|&s| s != self.anchor)
            .collect();
        let targets: Vec<u32> = self.unresolved.iter().copied().collect();
        for shard in targets {
            let resolve = TxnCommand::Resolve {
                txn: self.txn,
                commit,
            };
            self.send(Purpose::Resolve(shard), shard, resolve, now_ms);
        }
        self.maybe_forget(now_ms);
    }

    fn maybe_forget(&mut self, now_ms: u64) {
        if matches!(self.phase, Phase::Resolving { .. }) && self.unresolved.is_empty() {
            if self.ops.len() <= 1 {
                // The commit itself forgot a record with no other participant.
                self.phase = Phase::Done;
                return;
            }
            if self.config.defer_forget {
                self.deferred = Some((self.anchor, self.txn));
                self.phase = Phase::Done;
                return;
            }
            let forget = TxnCommand::Forget { txn: self.txn };
            self.send(Purpose::Forget, self.anchor, forget, now_ms);
        }
    }
}

impl Purpose {
    /// Whether the request belongs to the current attempt (dropped when the
    /// attempt ends), as opposed to cleanup and carried forgets.
    fn of_attempt(&self) -> bool {
        !matches!(self, Purpose::Cleanup | Purpose::Carried)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cluster::protocol::Command;
    use crate::kv_cluster::store::KvStore;
    use quorate_clocks::HlcTimestamp;

    const SHARDS: u32 = 3;
    const ACCOUNTS: usize = 6;
    const TOTAL: u64 = 100 * ACCOUNTS as u64;

    fn shard_of(key: &str) -> u32 {
        key.bytes().map(u32::from).sum::<u32>() % SHARDS
    }

    fn account(i: usize) -> String {
        format!("acct{i}")
    }

    /// Shards as bare stores (no Raft: each request is one entry, applied
    /// at once), and a network that delays, reorders, drops and duplicates
    /// requests and replies.
    struct Mem {
        stores: Vec<KvStore>,
        index: u64,
        now: u64,
        rng: fastrand::Rng,
        /// (deliver at, coordinator, its request id, shard, request or reply)
        wire: Vec<(u64, usize, u64, Result<Request, Reply>)>,
        loss: u8,
    }

    impl Mem {
        fn new(seed: u64, loss: u8) -> Mem {
            Mem {
                stores: (0..SHARDS).map(|_| KvStore::default()).collect(),
                index: 0,
                now: 1_000_000,
                rng: fastrand::Rng::with_seed(seed),
                wire: Vec::new(),
                loss,
            }
        }

        fn apply(&mut self, request: Request) -> Reply {
            let Request::Txn { shard, command } = request else {
                panic!("not a transaction request");
            };
            self.index += 1;
            let stamp = HlcTimestamp::new(self.now, 0).unwrap().as_u64();
            let store = &mut self.stores[shard as usize];
            store
                .apply(self.index, Command::Txn { stamp, command })
                .reply(self.index)
        }

        fn send(&mut self, c: usize, id: u64, msg: Result<Request, Reply>) {
            if self.rng.u8(0..100) < self.loss {
                return;
            }
            let copies = if self.rng.u8(0..100) < self.loss {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let at = self.now + self.rng.u64(0..20);
                self.wire.push((at, c, id, msg.clone()));
            }
        }

        /// Runs `coords` (none: crashed) until all have finished, for at
        /// most `limit_ms`; crashes each with probability `crash` per mille
        /// per step.
        fn run(&mut self, coords: &mut [Option<Coordinator>], crash: u16, limit_ms: u64) {
            let end = self.now + limit_ms;
            while self.now < end {
                for (i, c) in coords.iter_mut().enumerate() {
                    let Some(co) = c else { continue };
                    if crash > 0 && self.rng.u16(0..1000) < crash {
                        *c = None;
                        continue;
                    }
                    co.handle_timeout(self.now);
                    while let Some(out) = co.poll_request() {
                        self.wire_push(i, out);
                    }
                }
                let now = self.now;
                let mut due: Vec<_> = Vec::new();
                let mut rest = Vec::new();
                for m in self.wire.drain(..) {
                    if m.0 <= now {
                        due.push(m)
                    } else {
                        rest.push(m)
                    }
                }
                self.wire = rest;
                self.rng.shuffle(&mut due);
                for (_, c, id, msg) in due {
                    match msg {
                        Ok(request) => {
                            let reply = self.apply(request);
                            self.send(c, id, Err(reply));
                        }
                        Err(reply) => {
                            if let Some(Some(co)) = coords.get_mut(c) {
                                co.handle_reply(id, &reply, now);
                                while let Some(out) = co.poll_request() {
                                    self.wire_push(c, out);
                                }
                            }
                        }
                    }
                }
                if coords.iter().flatten().all(Coordinator::is_finished) && self.wire.is_empty() {
                    return;
                }
                self.now += 1;
            }
        }

        fn wire_push(&mut self, c: usize, out: Outgoing) {
            self.send(c, out.id, Ok(out.request));
        }

        fn value(&self, key: &str) -> Option<u64> {
            let v = self.stores[shard_of(key) as usize].get(key)?;
            std::str::from_utf8(&v.value).ok()?.parse().ok()
        }
    }

    fn num(v: &Option<(Bytes, u64)>) -> u64 {
        v.as_ref()
            .and_then(|(b, _)| std::str::from_utf8(b).ok()?.parse().ok())
            .unwrap_or(0)
    }

    fn coordinator(client: u64, ops: Vec<TxnOp>, now: u64, config: TxnConfig) -> Coordinator {
        let txn = TxnId { client, seq: 1 };
        let priority = priority_by_age(now, client);
        Coordinator::new(config, txn, priority, ops, shard_of, now)
    }

    fn read_all(client: u64, now: u64) -> Coordinator {
        let ops = (0..ACCOUNTS)
            .map(|i| TxnOp::Get { key: account(i) })
            .collect();
        coordinator(client, ops, now, TxnConfig::default())
    }

    fn committed(c: &Coordinator) -> Option<&Vec<ReadValue>> {
        match c.outcome() {
            Some(TxnOutcome::Committed { reads, .. }) => Some(reads),
            _ => None,
        }
    }

    #[test]
    fn one_transaction_commits_across_shards_and_leaves_nothing_behind() {
        let mut mem = Mem::new(1, 0);
        let ops: Vec<TxnOp> = (0..ACCOUNTS)
            .map(|i| TxnOp::Put {
                key: account(i),
                value: Bytes::from("100"),
            })
            .collect();
        let c = coordinator(1, ops, mem.now, TxnConfig::default());
        assert!(c.participants().len() > 1, "spans several shards");
        let mut coords = vec![Some(c)];
        mem.run(&mut coords, 0, 10_000);
        let c = coords[0].as_ref().unwrap();
        assert!(c.is_finished());
        assert!(matches!(
            c.outcome(),
            Some(TxnOutcome::Committed { attempts: 1, .. })
        ));
        for i in 0..ACCOUNTS {
            assert_eq!(mem.value(&account(i)), Some(100));
        }
        for s in &mem.stores {
            assert_eq!(s.intents(), 0);
            // Forgotten: only tombstones remain.
            assert!(
                s.txn_record(c.txn())
                    .is_none_or(|r| r.finished_at.is_some())
            );
        }
    }

    #[test]
    fn a_deferred_forget_is_carried_by_the_next_transaction() {
        let mut mem = Mem::new(4, 0);
        let config = TxnConfig {
            defer_forget: true,
            ..TxnConfig::default()
        };
        let put = |k: usize| TxnOp::Put {
            key: account(k),
            value: Bytes::from("1"),
        };
        assert_ne!(shard_of(&account(0)), shard_of(&account(1)));
        let mut coords = vec![Some(coordinator(1, vec![put(0), put(1)], mem.now, config))];
        mem.run(&mut coords, 0, 10_000);
        let mut first = coords.pop().flatten().unwrap();
        assert!(first.is_finished() && committed(&first).is_some());
        let owed = first.take_deferred_forget().unwrap();
        assert_eq!(owed, (first.anchor(), first.txn()));
        assert!(first.take_deferred_forget().is_none());
        let record = |mem: &Mem| mem.stores[owed.0 as usize].txn_record(owed.1).cloned();
        // Committed, every intent resolved, not yet forgotten.
        assert_eq!(
            record(&mem).map(|r| (r.status, r.finished_at)),
            Some((TxnStatus::Committed, None))
        );
        assert!(mem.stores.iter().all(|s| s.intents() == 0));
        let mut next = coordinator(2, vec![put(2)], mem.now, config);
        next.carry_forgets([owed], mem.now);
        let mut coords = vec![Some(next)];
        mem.run(&mut coords, 0, 10_000);
        assert!(coords[0].as_ref().unwrap().is_finished());
        assert!(
            record(&mem).is_some_and(|r| r.finished_at.is_some()),
            "{:?}",
            record(&mem)
        );
    }

    #[test]
    fn a_failed_cas_aborts_with_nothing_written() {
        let mut mem = Mem::new(2, 0);
        let ops = vec![
            TxnOp::Put {
                key: account(0),
                value: Bytes::from("1"),
            },
            TxnOp::Cas {
                key: account(1),
                expect: Some(Bytes::from("7")),
                value: Bytes::from("8"),
            },
        ];
        assert_ne!(shard_of(&account(0)), shard_of(&account(1)));
        let mut coords = vec![Some(coordinator(1, ops, mem.now, TxnConfig::default()))];
        mem.run(&mut coords, 0, 10_000);
        let c = coords[0].as_ref().unwrap();
        assert!(matches!(
            c.outcome(),
            Some(TxnOutcome::Aborted {
                reason: TxnFailure::CasFailed { .. },
                ..
            })
        ));
        assert_eq!(mem.value(&account(0)), None);
        assert!(mem.stores.iter().all(|s| s.intents() == 0));
    }

    #[test]
    fn invalid_operations_are_refused_before_sending() {
        let dup = vec![
            TxnOp::Get { key: "a".into() },
            TxnOp::Get { key: "a".into() },
        ];
        let mut c = coordinator(1, dup, 0, TxnConfig::default());
        assert!(matches!(
            c.outcome(),
            Some(TxnOutcome::Aborted {
                reason: TxnFailure::Invalid(_),
                ..
            })
        ));
        assert!(c.poll_request().is_none());
        assert!(c.is_finished());
        let c = coordinator(1, Vec::new(), 0, TxnConfig::default());
        assert!(c.is_finished());
    }

    /// Bank transfers between accounts on three shards, by many
    /// coordinators at once over a lossy network, some of which crash
    /// mid-way: every committed read of all accounts sums to the total,
    /// and at the end (after a reader has pushed past every crashed
    /// coordinator's intents) so does the state.
    fn bank(seed: u64, loss: u8, crash: u16) {
        let mut mem = Mem::new(seed, loss);
        let init = (0..ACCOUNTS)
            .map(|i| TxnOp::Put {
                key: account(i),
                value: Bytes::from("100"),
            })
            .collect();
        let mut coords = vec![Some(coordinator(1, init, mem.now, TxnConfig::default()))];
        mem.run(&mut coords, 0, 60_000);
        assert!(
            committed(coords[0].as_ref().unwrap()).is_some(),
            "seed {seed}"
        );
        let mut rng = fastrand::Rng::with_seed(seed ^ 0xba5e);
        let config = TxnConfig {
            ttl_ms: 300,
            ..TxnConfig::default()
        };
        let mut transfers = 0;
        for round in 0..15u64 {
            // A snapshot of balances, then transfers based on it by Cas,
            // and readers of everything, all at once.
            let mut reader = vec![Some(read_all(10 + round, mem.now))];
            mem.run(&mut reader, 0, 60_000);
            let reads = committed(reader[0].as_ref().unwrap()).cloned();
            let reads = reads.unwrap_or_else(|| {
                panic!(
                    "seed {seed}: read round {round}: {:?}",
                    reader[0].as_ref().unwrap().outcome()
                )
            });
            let sum: u64 = reads.iter().map(|(_, v)| num(v)).sum();
            assert_eq!(sum, TOTAL, "seed {seed}: round {round}: {reads:?}");
            let mut coords = Vec::new();
            for k in 0..4u64 {
                let (a, b) = (rng.usize(0..ACCOUNTS), rng.usize(0..ACCOUNTS));
                if a == b {
                    continue;
                }
                let (va, vb) = (num(&reads[a].1), num(&reads[b].1));
                let amount = rng.u64(0..=va.min(10));
                let cas = |i: usize, old: u64, new: u64| TxnOp::Cas {
                    key: account(i),
                    expect: Some(Bytes::from(old.to_string())),
                    value: Bytes::from(new.to_string()),
                };
                let ops = vec![cas(a, va, va - amount), cas(b, vb, vb + amount)];
                let client = 1000 + round * 10 + k;
                coords.push(Some(coordinator(client, ops, mem.now, config)));
            }
            coords.push(Some(read_all(5000 + round, mem.now)));
            mem.run(&mut coords, crash, 60_000);
            for c in coords.iter().flatten() {
                assert!(
                    c.is_finished(),
                    "seed {seed}: round {round}: unfinished {:?}",
                    c.outcome()
                );
                if let Some(TxnOutcome::Committed { reads, .. }) = c.outcome() {
                    if reads.len() == ACCOUNTS {
                        let sum: u64 = reads.iter().map(|(_, v)| num(v)).sum();
                        assert_eq!(sum, TOTAL, "seed {seed}: round {round}: {reads:?}");
                    } else {
                        transfers += 1;
                    }
                }
            }
            // Let crashed coordinators' records expire.
            mem.now += 400;
        }
        let mut last = vec![Some(read_all(99_999, mem.now))];
        mem.run(&mut last, 0, 60_000);
        let reads = committed(last[0].as_ref().unwrap()).cloned().unwrap();
        let sum: u64 = reads.iter().map(|(_, v)| num(v)).sum();
        assert_eq!(sum, TOTAL, "seed {seed}");
        assert!(
            crash > 0 || transfers > 0,
            "seed {seed}: no transfer committed"
        );
    }

    #[test]
    fn bank_transfers_keep_the_total_over_a_lossy_network() {
        for seed in 0..8 {
            bank(seed, 5, 0);
        }
    }

    #[test]
    fn bank_transfers_keep_the_total_when_coordinators_crash() {
        for seed in 100..108 {
            bank(seed, 2, 3);
        }
    }

    #[test]
    fn a_higher_priority_transaction_pushes_a_lower_one_out() {
        let mut mem = Mem::new(3, 0);
        let ops = |v: &str| {
            vec![
                TxnOp::Put {
                    key: account(0),
                    value: Bytes::from(v.to_owned()),
                },
                TxnOp::Put {
                    key: account(1),
                    value: Bytes::from(v.to_owned()),
                },
            ]
        };
        // An intent of a young, stuck transaction (its coordinator is gone
        // after the prepares: never driven again).
        let mut young = Coordinator::new(
            TxnConfig::default(),
            TxnId { client: 2, seq: 1 },
            10,
            ops("young"),
            shard_of,
            mem.now,
        );
        while let Some(out) = young.poll_request() {
            let _ = mem.apply(out.request);
        }
        assert!(mem.stores.iter().map(KvStore::intents).sum::<usize>() == 2);
        // An older one (higher priority) pushes it out well before its expiry.
        let old = Coordinator::new(
            TxnConfig::default(),
            TxnId { client: 1, seq: 1 },
            20,
            ops("old"),
            shard_of,
            mem.now,
        );
        let start = mem.now;
        let mut coords = vec![Some(old)];
        mem.run(&mut coords, 0, 10_000);
        assert!(committed(coords[0].as_ref().unwrap()).is_some());
        assert!(mem.now - start < TxnConfig::default().ttl_ms);
        assert_eq!(
            mem.stores[shard_of(&account(0)) as usize]
                .get(&account(0))
                .unwrap()
                .value,
            "old"
        );
        // The young one can no longer commit.
        let anchor = young.anchor() as usize;
        let record = mem.stores[anchor].txn_record(young.txn()).unwrap();
        assert_eq!(record.status, TxnStatus::Aborted);
    }

    #[test]
    fn codecs_round_trip_and_refuse_truncation() {
        let commands = [
            TxnCommand::Prepare {
                txn: TxnId { client: 1, seq: 2 },
                anchor: 3,
                begin: Some(Begin {
                    priority: 4,
                    ttl_ms: 5,
                    participants: vec![0, 3],
                    commit: true,
                }),
                ops: vec![
                    TxnOp::Put {
                        key: "a".into(),
                        value: Bytes::from("b"),
                    },
                    TxnOp::Cas {
                        key: "c".into(),
                        expect: None,
                        value: Bytes::from("d"),
                    },
                    TxnOp::Cas {
                        key: "c".into(),
                        expect: Some(Bytes::from("e")),
                        value: Bytes::from("d"),
                    },
                    TxnOp::Get { key: "f".into() },
                ],
            },
            TxnCommand::Prepare {
                txn: TxnId { client: 1, seq: 2 },
                anchor: 3,
                begin: None,
                ops: vec![],
            },
            TxnCommand::Commit {
                txn: TxnId { client: 1, seq: 2 },
            },
            TxnCommand::Abort {
                txn: TxnId { client: 1, seq: 2 },
            },
            TxnCommand::Resolve {
                txn: TxnId { client: 1, seq: 2 },
                commit: true,
            },
            TxnCommand::Push {
                txn: TxnId { client: 1, seq: 2 },
                priority: 9,
            },
            TxnCommand::Forget {
                txn: TxnId { client: 1, seq: 2 },
            },
        ];
        for c in commands {
            let bytes = c.encode();
            assert_eq!(TxnCommand::decode(bytes.clone()).unwrap(), c);
            for cut in 0..bytes.len() {
                assert!(TxnCommand::decode(bytes.slice(..cut)).is_err());
            }
            let cmd = Command::Txn {
                stamp: 7,
                command: c.clone(),
            };
            assert_eq!(Command::decode(cmd.encode()).unwrap(), cmd);
            let req = crate::kv_cluster::protocol::Envelope {
                id: 5,
                body: Request::Txn {
                    shard: 2,
                    command: c,
                },
            };
            let bytes = req.encode();
            assert_eq!(
                crate::kv_cluster::protocol::Envelope::<Request>::decode(bytes).unwrap(),
                req
            );
        }
        let intent = IntentRef {
            key: "k".into(),
            txn: TxnId { client: 1, seq: 2 },
            anchor: 1,
        };
        let replies = [
            Reply::Intent(intent.clone()),
            Reply::Txn(TxnReply::Conflict(intent)),
            Reply::Txn(TxnReply::Prepared {
                reads: vec![
                    ("a".into(), None),
                    ("b".into(), Some((Bytes::from("v"), 3))),
                ],
                committed: false,
            }),
            Reply::Txn(TxnReply::CasFailed {
                key: "c".into(),
                actual: Some(Bytes::from("x")),
            }),
            Reply::Txn(TxnReply::Status {
                status: TxnStatus::Pending,
                participants: vec![1, 2],
            }),
            Reply::Txn(TxnReply::Done),
            Reply::Txn(TxnReply::Limit(TxnLimit::Intents)),
        ];
        for body in replies {
            let r = crate::kv_cluster::protocol::Envelope { id: 4, body };
            let bytes = r.encode();
            assert_eq!(
                crate::kv_cluster::protocol::Envelope::<Reply>::decode(bytes.clone()).unwrap(),
                r
            );
            for cut in 0..bytes.len() {
                assert!(
                    crate::kv_cluster::protocol::Envelope::<Reply>::decode(bytes.slice(..cut))
                        .is_err()
                );
            }
        }
        // More operations than the cap are refused.
        let many = TxnCommand::Prepare {
            txn: TxnId { client: 1, seq: 2 },
            anchor: 0,
            begin: None,
            ops: (0..=MAX_TXN_OPS)
                .map(|i| TxnOp::Get { key: i.to_string() })
                .collect(),
        };
        assert!(TxnCommand::decode(many.encode()).is_err());
    }
}
