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
//! or put answers [`Reply::Intent`](super::protocol::Reply::Intent) instead.
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
}

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
            if f.purpose == Purpose::Cleanup && f.sends >= 3 {
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
            Purpose::Cleanup => {}
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
                        intent: intent.clone(),
                        until_ms: now_ms.saturating_add(wait),
                        pushes,
                    },
                );
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
            _ => {
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
        }
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
                self.inflight.retain(|_, f| f.purpose == Purpose::Cleanup);
                self.phase = Phase::Done;
            }
            Phase::Aborting { .. } | Phase::Resolving { .. } => {
                // The outcome (if any) stands; stop waiting.
                if self.outcome.is_none() {
                    self.finish_aborted(TxnFailure::Deadline);
                }
                self.inflight.retain(|_, f| f.purpose == Purpose::Cleanup);
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
        self.inflight.retain(|_, f| f.purpose == Purpose::Cleanup);
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
            let forget = TxnCommand::Forget { txn: self.txn };
            self.send(Purpose::Forget, self.anchor, forget, now_ms);
        }
    }
}
