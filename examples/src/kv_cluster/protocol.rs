//! The bytes on the wire: client requests and replies, and the commands
//! that go through each shard's Raft log. A small hand-written format:
//! big-endian integers, length-prefixed strings; every decoder is total.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::Error;
use super::txn::{IntentRef, TxnCommand, TxnReply, get_intent, put_intent};

/// A command as it travels through a shard's Raft log. Every command
/// carries the leader's HLC stamp: its physical milliseconds are the time
/// the state machine expires client sessions by, so every replica expires
/// the same sessions at the same index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Opens a client session; the session's id is this entry's log index.
    RegisterSession {
        /// The leader's HLC stamp.
        stamp: u64,
    },
    /// A write, deduplicated by `(session, seq)`.
    Put {
        /// The client's session (from [`Reply::Registered`]).
        session: u64,
        /// The write's sequence number in the session.
        seq: u64,
        /// The client's correlation id (informational: recorded with the
        /// value, never used to deduplicate).
        request: u64,
        /// The leader's HLC stamp for the write.
        stamp: u64,
        /// The key.
        key: String,
        /// The new value.
        value: Bytes,
    },
    /// A step of a cross-shard transaction (see [`super::txn`]).
    Txn {
        /// The leader's HLC stamp (log time for the record's expiry).
        stamp: u64,
        /// The step.
        command: TxnCommand,
    },
}

/// Names one write for audits: its shard, session and sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriteId {
    /// The shard.
    pub shard: u32,
    /// The session (the index of its register entry in the shard's log).
    pub session: u64,
    /// The sequence number within the session.
    pub seq: u64,
}

/// How fresh a read must be: the client picks per request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// Linearizable, by ReadIndex on the shard's leader (a heartbeat round
    /// confirms the leadership): the default.
    #[default]
    Linearizable,
    /// Linearizable while the leader holds its lease (check-quorum and the
    /// clock-drift bound, `Node::read_lease`): no heartbeat round. A leader
    /// without the lease answers [`Reply::LeaseUnavailable`].
    Lease,
    /// Any replica (follower or learner) whose applied index has reached
    /// the request's `token`: read-your-writes, monotonic reads, monotonic
    /// writes and writes-follow-reads within the client's session (Terry et
    /// al. 1994), not linearizable. A replica behind waits a bounded time,
    /// then answers [`Reply::Behind`].
    Session,
    /// Whatever the replica asked holds now: possibly stale (the reply says
    /// so and carries the replica's applied index).
    Any,
}

impl Consistency {
    /// Every level, by name.
    pub const ALL: [Consistency; 4] = [
        Consistency::Linearizable,
        Consistency::Lease,
        Consistency::Session,
        Consistency::Any,
    ];

    /// The level's name, as the CLI takes it.
    pub fn name(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Lease => "lease",
            Consistency::Session => "session",
            Consistency::Any => "any",
        }
    }

    /// Whether the read is served by the shard's leader only.
    pub fn leader_only(self) -> bool {
        matches!(self, Consistency::Linearizable | Consistency::Lease)
    }

    fn code(self) -> u8 {
        match self {
            Consistency::Linearizable => 0,
            Consistency::Lease => 1,
            Consistency::Session => 2,
            Consistency::Any => 3,
        }
    }

    fn from_code(code: u8) -> Result<Self, Error> {
        Ok(match code {
            0 => Consistency::Linearizable,
            1 => Consistency::Lease,
            2 => Consistency::Session,
            3 => Consistency::Any,
            _ => return Err(Error::Malformed("unknown consistency level")),
        })
    }
}

impl std::str::FromStr for Consistency {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Consistency::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown consistency {s:?} (linearizable, lease, session, any)"))
    }
}

impl std::fmt::Display for Consistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a client asks a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Opens a session on `shard` (through its log): answered
    /// [`Reply::Registered`].
    RegisterSession {
        /// The shard.
        shard: u32,
    },
    /// Write `value` under `key` in `shard`, as write `seq` of `session`:
    /// a request with a sequence number the session already applied is
    /// answered without applying it again.
    Put {
        /// Shard the key maps to.
        shard: u32,
        /// The client's session on the shard.
        session: u64,
        /// The write's sequence number in the session (1, 2, ...).
        seq: u64,
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
    },
    /// Read `key` from `shard` at `consistency`. (Linearizable reads
    /// without a token go on the wire as before, so older nodes read them.)
    Get {
        /// Shard the key maps to.
        shard: u32,
        /// The key.
        key: String,
        /// How fresh the read must be.
        consistency: Consistency,
        /// For [`Consistency::Session`]: the highest log index of the shard
        /// the client's session has written or read; the replica serves
        /// once its applied index reaches it (0: no floor).
        token: u64,
    },
    /// A step of a cross-shard transaction, to `shard`'s leader, which
    /// proposes it and answers [`Reply::Txn`] once it is applied.
    Txn {
        /// The shard.
        shard: u32,
        /// The step.
        command: TxnCommand,
    },
    /// Report the state of every shard replica on the node.
    Status,
    /// Report what the node has sent, by kind, and its transport counters.
    Traffic,
    /// Report the node's estimate of each peer's clock offset.
    Clocks,
    /// The Merkle leaf hashes (one per bucket) of the node's replica of `shard`.
    LeafHashes {
        /// The shard.
        shard: u32,
    },
    /// The entries of one bucket of the node's replica of `shard`.
    Bucket {
        /// The shard.
        shard: u32,
        /// The bucket (Merkle leaf index).
        bucket: u64,
    },
    /// Admin: tells the node where server `id` listens, so it can reach a
    /// server about to join (idempotent).
    AddPeer {
        /// The server.
        id: u64,
        /// Its address (`ip:port`).
        addr: String,
    },
    /// Admin, to `shard`'s leader: make server `id` a voter once it has
    /// caught up as a learner (`Node::add_voter`).
    AddVoter {
        /// The shard.
        shard: u32,
        /// The joining server.
        id: u64,
    },
    /// Admin, to `shard`'s leader: remove server `id` from the shard (a
    /// single-server change; a removed leader steps down once it commits).
    RemoveMember {
        /// The shard.
        shard: u32,
        /// The leaving server.
        id: u64,
    },
}

/// One key of a bucket, as sent in repairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketEntry {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: Bytes,
    /// The value's HLC stamp.
    pub stamp: u64,
    /// The correlation id of the request that wrote it (informational).
    pub request: u64,
}

/// A request or reply with its correlation id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope<T> {
    /// The correlation id: a reply carries its request's, and retries of
    /// a request reuse it. It only matches replies to requests;
    /// deduplication is by session and sequence number.
    pub id: u64,
    /// The request or reply.
    pub body: T,
}

/// One shard replica's state, as reported by [`Request::Status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardStatus {
    /// The shard.
    pub shard: u32,
    /// The leader this replica knows of (0: none).
    pub leader: u64,
    /// The replica's current term.
    pub term: u64,
    /// Its commit index.
    pub commit: u64,
    /// The last index applied to its key-value store.
    pub applied: u64,
    /// How many keys it holds.
    pub keys: u64,
    /// The Merkle root over its key space.
    pub root: [u8; 32],
    /// The shard's voters, as this replica's configuration says.
    pub voters: Vec<u64>,
    /// The shard's learners (catching up before they vote).
    pub learners: Vec<u64>,
    /// Every other member: its replication progress (on the leader) and
    /// this node's outbound queue to it.
    pub peers: Vec<PeerStatus>,
}

/// One peer of a shard replica, as [`ShardStatus`] reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer.
    pub id: u64,
    /// Highest log index known to match the leader's (0: not the leader).
    pub matched: u64,
    /// Next log index the leader sends it (0: not the leader).
    pub next: u64,
    /// Urgent frames (Raft control) queued to it on this node.
    pub urgent_frames: u64,
    /// Bulk frames queued to it on this node.
    pub bulk_frames: u64,
    /// Bytes of those bulk frames.
    pub bulk_bytes: u64,
}

/// How far a peer's wall clock is from the reporting node's, as
/// [`Request::Clocks`] reports it (NTP-style, from probes between the
/// nodes: `quorate_clocks::offset`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerClock {
    /// The peer.
    pub id: u64,
    /// Its clock minus ours, nanoseconds (the best sample's midpoint).
    pub offset_ns: i64,
    /// How far the true offset may be from `offset_ns`: half the sample's
    /// round trip, drift since, and the 1 ms resolution of the node's clock
    /// reads. `u64::MAX`: no sample yet (or none recent).
    pub bound_ns: u64,
    /// The best sample's round-trip delay.
    pub delay_ns: u64,
    /// Samples held (the clock filter's window).
    pub samples: u32,
}

/// The kinds of frame a node sends, as [`Traffic`] counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrafficKind {
    /// AppendEntries carrying entries.
    Append,
    /// Heartbeats and AppendEntries without entries.
    Heartbeat,
    /// RequestVote, PreVote and TimeoutNow.
    Vote,
    /// Answers to appends, heartbeats, votes and snapshot chunks.
    Response,
    /// InstallSnapshot chunks.
    Snapshot,
    /// Proposals a follower forwards to its leader.
    Forward,
    /// Anti-entropy gossip and clock-offset probes.
    Gossip,
    /// Replies to clients (also to nodes asking as clients).
    ClientReply,
}

impl TrafficKind {
    /// Every kind, in the order [`Traffic::sent`] holds them.
    pub const ALL: [TrafficKind; 8] = [
        TrafficKind::Append,
        TrafficKind::Heartbeat,
        TrafficKind::Vote,
        TrafficKind::Response,
        TrafficKind::Snapshot,
        TrafficKind::Forward,
        TrafficKind::Gossip,
        TrafficKind::ClientReply,
    ];

    /// Whether frames of this kind go between nodes (all but client replies).
    pub fn between_nodes(self) -> bool {
        self != TrafficKind::ClientReply
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Frames and bytes of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindCount {
    /// Frames.
    pub frames: u64,
    /// Bytes on the wire: payloads plus the transport's 9-byte frame
    /// header (TLS records add their own).
    pub bytes: u64,
}

/// What a node has handed its transport since it started, by kind, and the
/// transport's own counters: what `Request::Traffic` reports, so tests and
/// operators can see where the bytes between nodes go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Per kind, indexed as [`TrafficKind::ALL`] (frames a full queue then
    /// dropped included; see `dropped`).
    pub sent: [KindCount; 8],
    /// Hellos refused for want of proof of the claimed peer id.
    pub refused_hellos: u64,
    /// Connections to peers past their handshake.
    pub peer_connections: u64,
    /// Client connections past their handshake.
    pub client_connections: u64,
    /// Accepted connections open, handshakes included.
    pub accepted_connections: u64,
    /// Connections closed for an idle or stalled read.
    pub idle_timeouts: u64,
    /// Connections closed for a missing hello.
    pub hello_timeouts: u64,
    /// Connections refused at the connection limit.
    pub max_connections: u64,
    /// Connections closed for an oversized client frame.
    pub client_frame: u64,
    /// Connections closed at the partial-frame byte cap.
    pub buffered_bytes_limit: u64,
    /// Failed `accept` calls.
    pub accept_errors: u64,
    /// Frames dropped at a full queue.
    pub dropped: u64,
    /// Bytes of partial frames held now.
    pub buffered_bytes: u64,
}

impl Traffic {
    /// The count of `kind`.
    pub fn get(&self, kind: TrafficKind) -> KindCount {
        self.sent.get(kind.index()).copied().unwrap_or_default()
    }

    /// Counts one frame of `kind` with a payload of `payload` bytes.
    pub fn count(&mut self, kind: TrafficKind, payload: usize) {
        if let Some(c) = self.sent.get_mut(kind.index()) {
            c.frames += 1;
            c.bytes += payload as u64 + FRAME_HEADER;
        }
    }

    /// Frames and bytes of every kind sent between nodes.
    pub fn between_nodes(&self) -> KindCount {
        let mut total = KindCount::default();
        for kind in TrafficKind::ALL.into_iter().filter(|k| k.between_nodes()) {
            let c = self.get(kind);
            total.frames += c.frames;
            total.bytes += c.bytes;
        }
        total
    }

    /// The transport counters, in their wire order.
    fn counters(&self) -> [u64; 12] {
        [
            self.refused_hellos,
            self.peer_connections,
            self.client_connections,
            self.accepted_connections,
            self.idle_timeouts,
            self.hello_timeouts,
            self.max_connections,
            self.client_frame,
            self.buffered_bytes_limit,
            self.accept_errors,
            self.dropped,
            self.buffered_bytes,
        ]
    }
}

/// The transport's frame header: length, channel, flags.
const FRAME_HEADER: u64 = 9;

/// What a node answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The write is committed and applied (possibly by an earlier attempt).
    Written {
        /// A log index of the shard at or after the write's entry (the
        /// entry's own, or the replica's applied index when a retry is
        /// answered): a session token covering the write. 0 from a node
        /// of the wire format before tokens.
        index: u64,
    },
    /// A session is open: its id (the index of its register entry).
    Registered {
        /// The session id.
        session: u64,
    },
    /// The write's session is unknown to the shard (expired, evicted, or
    /// never registered); the write was not applied by this attempt.
    SessionExpired,
    /// The value under the key, with its HLC stamp, if any.
    Value {
        /// The value and its HLC stamp (none: no such key).
        value: Option<(Bytes, u64)>,
        /// The applied index of the shard the read reflects: a session
        /// token covering it (0 from a node of the wire format before
        /// tokens).
        index: u64,
        /// The read was served without any freshness check
        /// ([`Consistency::Any`]): it may be stale.
        stale: bool,
    },
    /// A session read reached a replica whose applied index stayed below
    /// the token for the bounded wait: try another replica or the leader.
    Behind {
        /// The replica's applied index.
        applied: u64,
        /// The token asked for.
        token: u64,
    },
    /// A lease read reached the leader while it holds no lease (no quorum
    /// answered a heartbeat within the lease period, a leadership transfer,
    /// or no entry committed in its term yet): use a linearizable read.
    LeaseUnavailable,
    /// This node does not lead the shard; try the hinted node (0: unknown).
    NotLeader {
        /// The leader this node knows of.
        hint: u64,
        /// Where the hinted leader listens, if this node knows (empty
        /// otherwise): how clients learn of servers that joined.
        addr: String,
    },
    /// The request was understood and refused (a membership change while
    /// another is unfinished, ...): the reason.
    Refused(String),
    /// An admin request was accepted.
    Accepted,
    /// The shard does not exist on this node.
    NoSuchShard,
    /// Per-shard state of the node.
    Status(Vec<ShardStatus>),
    /// The node's estimate of each peer's clock.
    Clocks(Vec<PeerClock>),
    /// What the node has sent and its transport counters (boxed: it is
    /// large and rare).
    Traffic(Box<Traffic>),
    /// Merkle leaf hashes, one per bucket.
    LeafHashes(Vec<[u8; 32]>),
    /// A bucket's entries.
    Bucket(Vec<BucketEntry>),
    /// A transaction step's result.
    Txn(TxnReply),
    /// The key holds a transaction's intent: the get or put was not
    /// served (a put is not recorded in its session: send it again). Push
    /// the transaction, resolve the intent, and retry.
    Intent(IntentRef),
}

pub(super) fn put_entries(dst: &mut BytesMut, entries: &[BucketEntry]) {
    dst.put_u32(entries.len() as u32);
    for e in entries {
        put_str(dst, e.key.as_bytes());
        put_str(dst, &e.value);
        dst.put_u64(e.stamp);
        dst.put_u64(e.request);
    }
}

pub(super) fn get_entries(src: &mut Bytes) -> Result<Vec<BucketEntry>, Error> {
    let n = get_u32(src)?;
    // Each entry takes at least 24 bytes: refuse counts the payload cannot hold.
    need(src, (n as usize).saturating_mul(24))?;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        out.push(BucketEntry {
            key: get_string(src)?,
            value: get_bytes(src)?,
            stamp: get_u64(src)?,
            request: get_u64(src)?,
        });
    }
    Ok(out)
}

fn put_ids(dst: &mut BytesMut, ids: &[u64]) {
    dst.put_u32(ids.len() as u32);
    for id in ids {
        dst.put_u64(*id);
    }
}

fn get_ids(src: &mut Bytes) -> Result<Vec<u64>, Error> {
    let n = get_u32(src)? as usize;
    need(src, n.saturating_mul(8))?;
    Ok((0..n).map(|_| src.get_u64()).collect())
}

pub(super) fn put_str(dst: &mut BytesMut, s: &[u8]) {
    dst.put_u32(s.len() as u32);
    dst.put_slice(s);
}

pub(super) fn need(src: &Bytes, n: usize) -> Result<(), Error> {
    if src.remaining() < n {
        return Err(Error::Malformed("truncated message"));
    }
    Ok(())
}

pub(super) fn get_u8(src: &mut Bytes) -> Result<u8, Error> {
    need(src, 1)?;
    Ok(src.get_u8())
}

pub(super) fn get_u32(src: &mut Bytes) -> Result<u32, Error> {
    need(src, 4)?;
    Ok(src.get_u32())
}

pub(super) fn get_u64(src: &mut Bytes) -> Result<u64, Error> {
    need(src, 8)?;
    Ok(src.get_u64())
}

pub(super) fn get_bytes(src: &mut Bytes) -> Result<Bytes, Error> {
    let len = get_u32(src)? as usize;
    need(src, len)?;
    Ok(src.split_to(len))
}

pub(super) fn get_string(src: &mut Bytes) -> Result<String, Error> {
    let raw = get_bytes(src)?;
    String::from_utf8(raw.to_vec()).map_err(|_| Error::Malformed("key is not UTF-8"))
}

pub(super) fn finish<T>(src: &Bytes, value: T) -> Result<T, Error> {
    if src.has_remaining() {
        return Err(Error::Malformed("trailing bytes"));
    }
    Ok(value)
}

impl Command {
    /// The leader's HLC stamp.
    pub fn stamp(&self) -> u64 {
        match self {
            Command::RegisterSession { stamp }
            | Command::Put { stamp, .. }
            | Command::Txn { stamp, .. } => *stamp,
        }
    }

    /// The bytes stored in the Raft log.
    pub fn encode(&self) -> Bytes {
        match self {
            Command::RegisterSession { stamp } => {
                let mut dst = BytesMut::with_capacity(9);
                dst.put_u8(2);
                dst.put_u64(*stamp);
                dst.freeze()
            }
            Command::Put {
                session,
                seq,
                request,
                stamp,
                key,
                value,
            } => {
                let mut dst = BytesMut::with_capacity(41 + key.len() + value.len());
                dst.put_u8(1);
                for n in [*session, *seq, *request, *stamp] {
                    dst.put_u64(n);
                }
                put_str(&mut dst, key.as_bytes());
                put_str(&mut dst, value);
                dst.freeze()
            }
            Command::Txn { stamp, command } => {
                let mut dst = BytesMut::new();
                dst.put_u8(3);
                dst.put_u64(*stamp);
                command.encode_into(&mut dst);
                dst.freeze()
            }
        }
    }

    /// Parses a log entry.
    pub fn decode(mut src: Bytes) -> Result<Self, Error> {
        let command = match get_u8(&mut src)? {
            1 => Command::Put {
                session: get_u64(&mut src)?,
                seq: get_u64(&mut src)?,
                request: get_u64(&mut src)?,
                stamp: get_u64(&mut src)?,
                key: get_string(&mut src)?,
                value: get_bytes(&mut src)?,
            },
            2 => Command::RegisterSession {
                stamp: get_u64(&mut src)?,
            },
            3 => Command::Txn {
                stamp: get_u64(&mut src)?,
                command: TxnCommand::decode_from(&mut src)?,
            },
            _ => return Err(Error::Malformed("unknown command kind")),
        };
        finish(&src, command)
    }
}

impl Envelope<Request> {
    /// The frame payload.
    pub fn encode(&self) -> Bytes {
        let mut dst = BytesMut::new();
        dst.put_u64(self.id);
        match &self.body {
            Request::Put {
                shard,
                session,
                seq,
                key,
                value,
            } => {
                dst.put_u8(1);
                dst.put_u32(*shard);
                dst.put_u64(*session);
                dst.put_u64(*seq);
                put_str(&mut dst, key.as_bytes());
                put_str(&mut dst, value);
            }
            Request::Get {
                shard,
                key,
                consistency: Consistency::Linearizable,
                token: 0,
            } => {
                dst.put_u8(2);
                dst.put_u32(*shard);
                put_str(&mut dst, key.as_bytes());
            }
            Request::Get {
                shard,
                key,
                consistency,
                token,
            } => {
                dst.put_u8(12);
                dst.put_u32(*shard);
                dst.put_u8(consistency.code());
                dst.put_u64(*token);
                put_str(&mut dst, key.as_bytes());
            }
            Request::Status => dst.put_u8(3),
            Request::Traffic => dst.put_u8(11),
            Request::Clocks => dst.put_u8(13),
            Request::LeafHashes { shard } => {
                dst.put_u8(4);
                dst.put_u32(*shard);
            }
            Request::Bucket { shard, bucket } => {
                dst.put_u8(5);
                dst.put_u32(*shard);
                dst.put_u64(*bucket);
            }
            Request::AddPeer { id, addr } => {
                dst.put_u8(7);
                dst.put_u64(*id);
                put_str(&mut dst, addr.as_bytes());
            }
            Request::AddVoter { shard, id } => {
                dst.put_u8(8);
                dst.put_u32(*shard);
                dst.put_u64(*id);
            }
            Request::RemoveMember { shard, id } => {
                dst.put_u8(9);
                dst.put_u32(*shard);
                dst.put_u64(*id);
            }
            Request::RegisterSession { shard } => {
                dst.put_u8(10);
                dst.put_u32(*shard);
            }
            Request::Txn { shard, command } => {
                dst.put_u8(14);
                dst.put_u32(*shard);
                command.encode_into(&mut dst);
            }
        }
        dst.freeze()
    }

    /// Parses a frame payload.
    pub fn decode(mut src: Bytes) -> Result<Self, Error> {
        let id = get_u64(&mut src)?;
        let body = match get_u8(&mut src)? {
            1 => Request::Put {
                shard: get_u32(&mut src)?,
                session: get_u64(&mut src)?,
                seq: get_u64(&mut src)?,
                key: get_string(&mut src)?,
                value: get_bytes(&mut src)?,
            },
            2 => Request::Get {
                shard: get_u32(&mut src)?,
                key: get_string(&mut src)?,
                consistency: Consistency::Linearizable,
                token: 0,
            },
            12 => Request::Get {
                shard: get_u32(&mut src)?,
                consistency: Consistency::from_code(get_u8(&mut src)?)?,
                token: get_u64(&mut src)?,
                key: get_string(&mut src)?,
            },
            3 => Request::Status,
            11 => Request::Traffic,
            13 => Request::Clocks,
            4 => Request::LeafHashes {
                shard: get_u32(&mut src)?,
            },
            5 => Request::Bucket {
                shard: get_u32(&mut src)?,
                bucket: get_u64(&mut src)?,
            },
            7 => Request::AddPeer {
                id: get_u64(&mut src)?,
                addr: get_string(&mut src)?,
            },
            8 => Request::AddVoter {
                shard: get_u32(&mut src)?,
                id: get_u64(&mut src)?,
            },
            9 => Request::RemoveMember {
                shard: get_u32(&mut src)?,
                id: get_u64(&mut src)?,
            },
            10 => Request::RegisterSession {
                shard: get_u32(&mut src)?,
            },
            14 => Request::Txn {
                shard: get_u32(&mut src)?,
                command: TxnCommand::decode_from(&mut src)?,
            },
            _ => return Err(Error::Malformed("unknown request kind")),
        };
        finish(&src, Envelope { id, body })
    }
}

impl Envelope<Reply> {
    /// The frame payload.
    pub fn encode(&self) -> Bytes {
        let mut dst = BytesMut::new();
        dst.put_u64(self.id);
        match &self.body {
            Reply::Written { index } => {
                dst.put_u8(14);
                dst.put_u64(*index);
            }
            Reply::Value {
                value,
                index,
                stale,
            } => {
                dst.put_u8(15);
                dst.put_u64(*index);
                dst.put_u8(u8::from(*stale) | (u8::from(value.is_some()) << 1));
                if let Some((value, stamp)) = value {
                    put_str(&mut dst, value);
                    dst.put_u64(*stamp);
                }
            }
            Reply::Behind { applied, token } => {
                dst.put_u8(16);
                dst.put_u64(*applied);
                dst.put_u64(*token);
            }
            Reply::LeaseUnavailable => dst.put_u8(17),
            Reply::Clocks(peers) => {
                dst.put_u8(18);
                dst.put_u32(peers.len() as u32);
                for p in peers {
                    dst.put_u64(p.id);
                    dst.put_i64(p.offset_ns);
                    dst.put_u64(p.bound_ns);
                    dst.put_u64(p.delay_ns);
                    dst.put_u32(p.samples);
                }
            }
            Reply::NotLeader { hint, addr } => {
                dst.put_u8(4);
                dst.put_u64(*hint);
                put_str(&mut dst, addr.as_bytes());
            }
            Reply::Refused(reason) => {
                dst.put_u8(9);
                put_str(&mut dst, reason.as_bytes());
            }
            Reply::Accepted => dst.put_u8(10),
            Reply::Registered { session } => {
                dst.put_u8(11);
                dst.put_u64(*session);
            }
            Reply::SessionExpired => dst.put_u8(12),
            Reply::NoSuchShard => dst.put_u8(5),
            Reply::Status(shards) => {
                dst.put_u8(6);
                dst.put_u32(shards.len() as u32);
                for s in shards {
                    dst.put_u32(s.shard);
                    for n in [s.leader, s.term, s.commit, s.applied, s.keys] {
                        dst.put_u64(n);
                    }
                    dst.put_slice(&s.root);
                    put_ids(&mut dst, &s.voters);
                    put_ids(&mut dst, &s.learners);
                    dst.put_u32(s.peers.len() as u32);
                    for p in &s.peers {
                        for n in [
                            p.id,
                            p.matched,
                            p.next,
                            p.urgent_frames,
                            p.bulk_frames,
                            p.bulk_bytes,
                        ] {
                            dst.put_u64(n);
                        }
                    }
                }
            }
            Reply::Traffic(t) => {
                dst.put_u8(13);
                for c in &t.sent {
                    dst.put_u64(c.frames);
                    dst.put_u64(c.bytes);
                }
                for n in t.counters() {
                    dst.put_u64(n);
                }
            }
            Reply::LeafHashes(hashes) => {
                dst.put_u8(7);
                dst.put_u32(hashes.len() as u32);
                for h in hashes {
                    dst.put_slice(h);
                }
            }
            Reply::Bucket(entries) => {
                dst.put_u8(8);
                put_entries(&mut dst, entries);
            }
            Reply::Txn(reply) => {
                dst.put_u8(19);
                reply.encode_into(&mut dst);
            }
            Reply::Intent(intent) => {
                dst.put_u8(20);
                put_intent(&mut dst, intent);
            }
        }
        dst.freeze()
    }

    /// Parses a frame payload.
    pub fn decode(mut src: Bytes) -> Result<Self, Error> {
        let id = get_u64(&mut src)?;
        let body = match get_u8(&mut src)? {
            // Tags 1 to 3: the replies of nodes from before session tokens.
            1 => Reply::Written { index: 0 },
            2 => Reply::Value {
                value: None,
                index: 0,
                stale: false,
            },
            3 => {
                let value = get_bytes(&mut src)?;
                Reply::Value {
                    value: Some((value, get_u64(&mut src)?)),
                    index: 0,
                    stale: false,
                }
            }
            14 => Reply::Written {
                index: get_u64(&mut src)?,
            },
            15 => {
                let index = get_u64(&mut src)?;
                let flags = get_u8(&mut src)?;
                if flags > 3 {
                    return Err(Error::Malformed("unknown value flags"));
                }
                let value = if flags & 2 != 0 {
                    let value = get_bytes(&mut src)?;
                    Some((value, get_u64(&mut src)?))
                } else {
                    None
                };
                Reply::Value {
                    value,
                    index,
                    stale: flags & 1 != 0,
                }
            }
            16 => Reply::Behind {
                applied: get_u64(&mut src)?,
                token: get_u64(&mut src)?,
            },
            17 => Reply::LeaseUnavailable,
            18 => {
                let n = get_u32(&mut src)? as usize;
                need(&src, n.saturating_mul(36))?;
                let peers = (0..n)
                    .map(|_| PeerClock {
                        id: src.get_u64(),
                        offset_ns: src.get_i64(),
                        bound_ns: src.get_u64(),
                        delay_ns: src.get_u64(),
                        samples: src.get_u32(),
                    })
                    .collect();
                Reply::Clocks(peers)
            }
            4 => Reply::NotLeader {
                hint: get_u64(&mut src)?,
                addr: get_string(&mut src)?,
            },
            9 => Reply::Refused(get_string(&mut src)?),
            10 => Reply::Accepted,
            11 => Reply::Registered {
                session: get_u64(&mut src)?,
            },
            12 => Reply::SessionExpired,
            13 => {
                let mut t = Traffic::default();
                for c in &mut t.sent {
                    c.frames = get_u64(&mut src)?;
                    c.bytes = get_u64(&mut src)?;
                }
                let mut n = [0u64; 12];
                for v in &mut n {
                    *v = get_u64(&mut src)?;
                }
                let [a, b, c, d, e, f, g, h, i, j, k, l] = n;
                t.refused_hellos = a;
                t.peer_connections = b;
                t.client_connections = c;
                t.accepted_connections = d;
                t.idle_timeouts = e;
                t.hello_timeouts = f;
                t.max_connections = g;
                t.client_frame = h;
                t.buffered_bytes_limit = i;
                t.accept_errors = j;
                t.dropped = k;
                t.buffered_bytes = l;
                Reply::Traffic(Box::new(t))
            }
            5 => Reply::NoSuchShard,
            6 => {
                let n = get_u32(&mut src)?;
                // Each shard takes 80 bytes: refuse counts the payload cannot hold.
                need(&src, (n as usize).saturating_mul(80))?;
                let mut shards = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let shard = get_u32(&mut src)?;
                    let [leader, term, commit, applied, keys] = [
                        get_u64(&mut src)?,
                        get_u64(&mut src)?,
                        get_u64(&mut src)?,
                        get_u64(&mut src)?,
                        get_u64(&mut src)?,
                    ];
                    need(&src, 32)?;
                    let mut root = [0u8; 32];
                    src.copy_to_slice(&mut root);
                    let voters = get_ids(&mut src)?;
                    let learners = get_ids(&mut src)?;
                    let count = get_u32(&mut src)? as usize;
                    need(&src, count.saturating_mul(48))?;
                    let mut peers = Vec::with_capacity(count);
                    for _ in 0..count {
                        peers.push(PeerStatus {
                            id: get_u64(&mut src)?,
                            matched: get_u64(&mut src)?,
                            next: get_u64(&mut src)?,
                            urgent_frames: get_u64(&mut src)?,
                            bulk_frames: get_u64(&mut src)?,
                            bulk_bytes: get_u64(&mut src)?,
                        });
                    }
                    shards.push(ShardStatus {
                        shard,
                        leader,
                        term,
                        commit,
                        applied,
                        keys,
                        root,
                        voters,
                        learners,
                        peers,
                    });
                }
                Reply::Status(shards)
            }
            7 => {
                let n = get_u32(&mut src)? as usize;
                need(&src, n.saturating_mul(32))?;
                let mut hashes = Vec::with_capacity(n);
                for _ in 0..n {
                    let mut h = [0u8; 32];
                    src.copy_to_slice(&mut h);
                    hashes.push(h);
                }
                Reply::LeafHashes(hashes)
            }
            8 => Reply::Bucket(get_entries(&mut src)?),
            19 => Reply::Txn(TxnReply::decode_from(&mut src)?),
            20 => Reply::Intent(get_intent(&mut src)?),
            _ => return Err(Error::Malformed("unknown reply kind")),
        };
        finish(&src, Envelope { id, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames from nodes and clients of the format before session tokens
    /// still parse: a plain get is linearizable, old write and value
    /// replies carry index 0 (no token), and a default get is sent in the
    /// old form.
    #[test]
    fn reads_the_format_before_tokens() {
        let mut old_get = BytesMut::new();
        old_get.put_u64(5);
        old_get.put_u8(2);
        old_get.put_u32(1);
        put_str(&mut old_get, b"k");
        let old_get = old_get.freeze();
        let get = Envelope::<Request>::decode(old_get.clone()).unwrap();
        let expected = Request::Get {
            shard: 1,
            key: "k".into(),
            consistency: Consistency::Linearizable,
            token: 0,
        };
        assert_eq!(get.body, expected);
        assert_eq!(get.encode(), old_get);
        let written = Envelope::<Reply>::decode(Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 1, 1]));
        assert_eq!(written.unwrap().body, Reply::Written { index: 0 });
        let mut old_value = BytesMut::new();
        old_value.put_u64(1);
        old_value.put_u8(3);
        put_str(&mut old_value, b"v");
        old_value.put_u64(77);
        let value = Envelope::<Reply>::decode(old_value.freeze()).unwrap();
        let expected = Reply::Value {
            value: Some((Bytes::from_static(b"v"), 77)),
            index: 0,
            stale: false,
        };
        assert_eq!(value.body, expected);
        assert!("session".parse::<Consistency>() == Ok(Consistency::Session));
        assert!("eventual".parse::<Consistency>().is_err());
    }

    #[test]
    fn round_trips_and_refuses_truncation() {
        let commands = [
            Command::Put {
                session: 3,
                seq: 4,
                request: 7,
                stamp: 9,
                key: "k".into(),
                value: Bytes::from_static(b"v"),
            },
            Command::RegisterSession { stamp: 11 },
        ];
        for c in commands {
            let bytes = c.encode();
            assert_eq!(Command::decode(bytes.clone()).unwrap(), c);
            for cut in 0..bytes.len() {
                assert!(Command::decode(bytes.slice(..cut)).is_err());
            }
        }
        assert!(Command::decode(Bytes::from_static(&[3, 0, 0, 0, 0, 0, 0, 0, 0])).is_err());
        let r = Envelope {
            id: 3,
            body: Reply::Status(vec![ShardStatus {
                shard: 1,
                leader: 2,
                term: 3,
                commit: 4,
                applied: 5,
                keys: 6,
                root: [7; 32],
                voters: vec![1, 2, 4],
                learners: vec![5],
                peers: vec![PeerStatus {
                    id: 2,
                    matched: 7,
                    next: 8,
                    urgent_frames: 1,
                    bulk_frames: 2,
                    bulk_bytes: 300,
                }],
            }]),
        };
        let bytes = r.encode();
        assert_eq!(Envelope::<Reply>::decode(bytes.clone()).unwrap(), r);
        for cut in 0..bytes.len() {
            assert!(Envelope::<Reply>::decode(bytes.slice(..cut)).is_err());
        }
        let entry = BucketEntry {
            key: "a".into(),
            value: Bytes::from_static(b"b"),
            stamp: 5,
            request: 6,
        };
        let replies = [
            Reply::LeafHashes(vec![[1; 32], [2; 32]]),
            Reply::Bucket(vec![entry.clone()]),
            Reply::NotLeader {
                hint: 4,
                addr: "127.0.0.1:7004".into(),
            },
            Reply::Refused("busy".into()),
            Reply::Accepted,
            Reply::Registered { session: 12 },
            Reply::SessionExpired,
            Reply::Written { index: 9 },
            Reply::Value {
                value: None,
                index: 4,
                stale: true,
            },
            Reply::Value {
                value: Some((Bytes::from_static(b"v"), 8)),
                index: 12,
                stale: false,
            },
            Reply::Behind {
                applied: 3,
                token: 7,
            },
            Reply::LeaseUnavailable,
            Reply::Clocks(vec![
                PeerClock {
                    id: 2,
                    offset_ns: -300_000_000,
                    bound_ns: 1_500_000,
                    delay_ns: 800_000,
                    samples: 8,
                },
                PeerClock {
                    id: 3,
                    bound_ns: u64::MAX,
                    ..PeerClock::default()
                },
            ]),
            Reply::Traffic(Box::new(Traffic {
                sent: core::array::from_fn(|i| KindCount {
                    frames: i as u64 + 1,
                    bytes: 100 * i as u64 + 7,
                }),
                refused_hellos: 2,
                idle_timeouts: 3,
                buffered_bytes: 11,
                ..Traffic::default()
            })),
        ];
        for body in replies {
            let r = Envelope { id: 4, body };
            let bytes = r.encode();
            assert_eq!(Envelope::<Reply>::decode(bytes.clone()).unwrap(), r);
            for cut in 0..bytes.len() {
                assert!(Envelope::<Reply>::decode(bytes.slice(..cut)).is_err());
            }
        }
        let requests = [
            Request::Put {
                shard: 0,
                session: 5,
                seq: 6,
                key: "a".into(),
                value: Bytes::from_static(b"b"),
            },
            Request::RegisterSession { shard: 1 },
            Request::Get {
                shard: 1,
                key: "k".into(),
                consistency: Consistency::Linearizable,
                token: 0,
            },
            Request::Get {
                shard: 1,
                key: "k".into(),
                consistency: Consistency::Session,
                token: 42,
            },
            Request::Get {
                shard: 0,
                key: "k".into(),
                consistency: Consistency::Any,
                token: 0,
            },
            Request::Traffic,
            Request::Clocks,
            Request::LeafHashes { shard: 1 },
            Request::Bucket {
                shard: 1,
                bucket: 9,
            },
            Request::AddPeer {
                id: 4,
                addr: "127.0.0.1:7004".into(),
            },
            Request::AddVoter { shard: 0, id: 4 },
            Request::RemoveMember { shard: 0, id: 1 },
        ];
        for body in requests {
            let q = Envelope { id: 1, body };
            let bytes = q.encode();
            assert_eq!(Envelope::<Request>::decode(bytes.clone()).unwrap(), q);
            for cut in 0..bytes.len() {
                assert!(Envelope::<Request>::decode(bytes.slice(..cut)).is_err());
            }
        }
    }
}
