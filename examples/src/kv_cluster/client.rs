//! A kv-cluster client: maps keys to shards on a consistent-hash ring,
//! finds each shard's leader (on first contact by asking every node at
//! once, then by following hints, learning the address of a server that
//! joined from the hint itself), and writes through client sessions (Raft
//! thesis §6.3): on its first write to a shard it registers a session
//! through the shard's log, then numbers its writes in it 1, 2, ... and
//! retries each with the same number until it is answered, so a write
//! applies once however many times it is sent.
//!
//! **One write in flight per session.** The state machine answers any
//! write numbered at or below the highest it applied as a retry, so a
//! session must not start write `n + 1` before write `n` is answered: a
//! late write `n` would then be taken for a retry and dropped. A client
//! therefore sends one write per shard at a time; concurrency comes from
//! more clients (each with its own sessions). If a write is left
//! unanswered (an error), the next write to that shard opens a new
//! session, and the unanswered one can still be retried in its own.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use quorate_consistent_hash::Ring;
use quorate_transport::framing::Frame;
use quorate_transport::tcp::{PeerId, TcpConfig, TcpTransport};
use quorate_transport::{Event, Transport};

use super::protocol::{Consistency, Envelope, PeerClock, Reply, Request, ShardStatus, WriteId};
use super::security::Security;
use super::txn::{
    Coordinator, IntentRef, TxnCommand, TxnConfig, TxnId, TxnOp, TxnOutcome, TxnReply, TxnStatus,
    priority_by_age,
};
use super::{CLIENT_CHANNEL, Error};

/// Virtual nodes per shard on the placement ring.
const VNODES: u32 = 64;

/// How long one attempt waits for its reply before retrying.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a request keeps retrying before giving up.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// How often a waiting request looks for failed dials.
const DIAL_CHECK: Duration = Duration::from_millis(25);

/// Pause before asking again when no node knows a leader (an election).
const ELECTION_PAUSE: Duration = Duration::from_millis(50);

/// How long a plain get or put waits, in all, for a transaction's intent
/// on its key to go (pushing it now and then) before giving up with
/// [`Error::Locked`]: past a transaction's default time to live, so a
/// crashed coordinator's intent is always pushed out within it.
const INTENT_WAIT: Duration = Duration::from_secs(12);

/// The first wait before pushing an intent; it doubles up to
/// [`INTENT_BACKOFF_MAX`].
const INTENT_BACKOFF: Duration = Duration::from_millis(5);

/// The longest wait between pushes of an intent.
const INTENT_BACKOFF_MAX: Duration = Duration::from_millis(200);

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A connection to a cluster.
#[derive(Debug)]
pub struct Client {
    transport: TcpTransport<Security>,
    nodes: Vec<u64>,
    addrs: HashMap<u64, SocketAddr>,
    ring: Ring<u32>,
    leaders: HashMap<u32, u64>,
    /// Nodes whose connection dropped and has not come back.
    down: HashSet<u64>,
    /// This client's current session on each shard it wrote to.
    sessions: HashMap<u32, ClientSession>,
    /// Draws correlation ids.
    rng: fastrand::Rng,
    /// Attempts beyond the first, over all requests.
    retries: u64,
    /// The session token per shard: the highest log index this client has
    /// written or read there. Session reads ask for it.
    tokens: HashMap<u32, u64>,
    /// Where the next session or `any` read starts looking (round-robin
    /// over the nodes, so reads spread over every replica).
    next_reader: usize,
    /// The client part of this client's transaction ids (random, so two
    /// clients' transactions never share an id, whatever their transport
    /// ids), and the next counter.
    txn_client: u64,
    txn_seq: u64,
    /// Forgets owed by finished transactions (`(anchor, txn)`): sent with
    /// the next transaction's requests, or by [`close`](Self::close).
    forgets: Vec<(u32, TxnId)>,
}

/// A session as its client keeps it.
#[derive(Clone, Copy, Debug)]
struct ClientSession {
    id: u64,
    /// The sequence number of the last write begun.
    last_seq: u64,
    /// The write begun and not yet answered, and how often it was sent.
    unfinished: Option<(u64, u32)>,
}

/// A write with its place in a session: sending it again (with
/// [`Client::write`]) is a retry, applied at most once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// Its shard, session and sequence number.
    pub id: WriteId,
    /// The correlation id its attempts carry.
    pub request: u64,
    /// The key.
    pub key: String,
    /// The value.
    pub value: Bytes,
}

/// The outcome of one request.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The reply.
    pub reply: Reply,
    /// The node that answered.
    pub node: u64,
    /// From first send to reply, retries included.
    pub latency: Duration,
    /// How many rounds of sends it took (a first contact sends one round
    /// to every node).
    pub attempts: u32,
    /// For a write: which one.
    pub write: Option<WriteId>,
}

/// What one transport event means to a client waiting for replies.
enum Heard {
    /// A reply on the client channel, and who sent it.
    Reply(PeerId, Envelope<Reply>),
    /// The connection to this node went away.
    Lost(u64),
    /// Nothing about replies: a connect, another channel, a bad frame.
    Other,
}

/// How one round of sends ended.
enum Round {
    /// A reply that ends the request, and who sent it.
    Answered(Reply, u64),
    /// No such reply before the timeout; a leader hint, if one came.
    Unanswered(Option<u64>),
    /// Every target's dial failed during the round: why, per target.
    Unreachable(String),
}

impl Client {
    /// A random client id: 63 random bits (from the OS-seeded
    /// `RandomState`, the process id and the time) with the top bit set, so
    /// it never equals a (small) node id and two clients started together
    /// do not share one.
    pub fn random_id() -> u64 {
        static DRAWN: AtomicU64 = AtomicU64::new(0);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u64(DRAWN.fetch_add(1, Ordering::Relaxed));
        h.finish() | (1 << 63)
    }

    /// A client with transport id `client_id` (distinct from node ids; see
    /// [`random_id`](Self::random_id)) for a cluster of `shards` shards on
    /// `nodes`. Correctness does not rest on the id being unique:
    /// deduplication is by the sessions the cluster assigns.
    pub fn new(client_id: u64, nodes: &[(u64, SocketAddr)], shards: u32) -> Result<Self, Error> {
        Self::with_security(client_id, nodes, shards, Security::Plain)
    }

    /// [`new`](Self::new) over `security` (TLS: the nodes' certificates are
    /// checked against the cluster CA).
    pub fn with_security(
        client_id: u64,
        nodes: &[(u64, SocketAddr)],
        shards: u32,
        security: Security,
    ) -> Result<Self, Error> {
        let transport =
            TcpTransport::client_with(PeerId(client_id), TcpConfig::default(), security);
        for &(id, addr) in nodes {
            transport.add_peer(PeerId(id), addr);
        }
        let mut ring = Ring::new(VNODES)?;
        for shard in 0..shards {
            ring.add(shard)?;
        }
        let mut rng = fastrand::Rng::with_seed(Self::random_id());
        let txn_client = rng.u64(..);
        Ok(Client {
            transport,
            nodes: nodes.iter().map(|&(id, _)| id).collect(),
            addrs: nodes.iter().copied().collect(),
            ring,
            leaders: HashMap::new(),
            down: HashSet::new(),
            sessions: HashMap::new(),
            rng,
            retries: 0,
            tokens: HashMap::new(),
            next_reader: 0,
            txn_client,
            txn_seq: 1,
            forgets: Vec::new(),
        })
    }

    /// Tells the client where server `id` listens (idempotent). Clients
    /// also learn servers from leader hints; this is for the first contact.
    pub fn add_node(&mut self, id: u64, addr: SocketAddr) {
        if !self.nodes.contains(&id) {
            self.transport.add_peer(PeerId(id), addr);
            self.nodes.push(id);
            self.addrs.insert(id, addr);
        }
    }

    /// The servers this client knows of.
    pub fn nodes(&self) -> &[u64] {
        &self.nodes
    }

    /// Sends an admin request about `shard` (add a voter, remove a member)
    /// to the shard's leader, following hints like a write; returns
    /// whatever the leader answered.
    pub async fn admin(&mut self, shard: u32, request: Request) -> Result<Answer, Error> {
        let envelope = Envelope {
            id: self.next_id(),
            body: request,
        };
        self.call(shard, &envelope).await
    }

    /// The shard `key` lives in.
    pub fn shard_of(&self, key: &str) -> u32 {
        self.ring.get(key).copied().unwrap_or(0)
    }

    /// A fresh correlation id (random: ids of different clients, even ones
    /// sharing a transport id, do not collide).
    pub fn next_id(&mut self) -> u64 {
        self.rng.u64(..)
    }

    /// Retries over all requests so far.
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// This client's current session on `shard`, if it opened one.
    pub fn session(&self, shard: u32) -> Option<u64> {
        self.sessions.get(&shard).map(|s| s.id)
    }

    /// Opens a new session on `shard` through its log and makes it this
    /// client's current one there.
    pub async fn register(&mut self, shard: u32) -> Result<u64, Error> {
        let envelope = Envelope {
            id: self.next_id(),
            body: Request::RegisterSession { shard },
        };
        let answer = self.call(shard, &envelope).await?;
        match answer.reply {
            Reply::Registered { session } => {
                let fresh = ClientSession {
                    id: session,
                    last_seq: 0,
                    unfinished: None,
                };
                self.sessions.insert(shard, fresh);
                Ok(session)
            }
            other => Err(self.refusal(shard, answer.node, other)),
        }
    }

    /// Writes `value` under `key`. If the session turns out to have
    /// expired before the write was ever applied, opens a new one and
    /// sends the write once more; if an earlier attempt may have been
    /// applied, returns [`Error::SessionExpired`] instead.
    pub async fn put(&mut self, key: &str, value: Bytes) -> Result<Answer, Error> {
        let write = self.begin_put(key, value.clone()).await?;
        match self.write(&write).await {
            Err(Error::SessionExpired {
                maybe_applied: false,
                ..
            }) => {
                let write = self.begin_put(key, value).await?;
                self.write(&write).await
            }
            other => other,
        }
    }

    /// Gives a write its place in this client's session on the key's shard
    /// (registering one first if there is none, or if the current one
    /// still has an unanswered write), without sending it.
    pub async fn begin_put(&mut self, key: &str, value: Bytes) -> Result<Write, Error> {
        let shard = self.shard_of(key);
        let current = self.sessions.get(&shard).copied();
        let (session, last_seq) = match current {
            Some(s) if s.unfinished.is_none() => (s.id, s.last_seq),
            _ => (self.register(shard).await?, 0),
        };
        let seq = last_seq + 1;
        let begun = ClientSession {
            id: session,
            last_seq: seq,
            unfinished: Some((seq, 0)),
        };
        self.sessions.insert(shard, begun);
        Ok(Write {
            id: WriteId {
                shard,
                session,
                seq,
            },
            request: self.next_id(),
            key: key.to_owned(),
            value,
        })
    }

    /// Sends a write once without waiting for the answer: a request in
    /// flight, to be retried with [`Client::write`].
    pub async fn send_write(&mut self, write: &Write) -> Result<(), Error> {
        let envelope = Self::put_envelope(write);
        let targets = self.targets(write.id.shard);
        for &node in &targets {
            self.send(node, &envelope).await?;
        }
        self.count_sends(write, targets.len() as u32);
        Ok(())
    }

    /// Sends a write until it is answered: `Ok` only once it is applied
    /// (by this or an earlier attempt).
    /// A write refused for a transaction's intent on its key (not applied:
    /// it is not recorded in its session) waits, pushes the transaction,
    /// resolves the intent and is sent again, for at most a bounded time.
    pub async fn write(&mut self, write: &Write) -> Result<Answer, Error> {
        let start = Instant::now();
        let mut waits = 0;
        loop {
            let answer = self.write_once(write).await?;
            match answer.reply {
                Reply::Intent(intent) => {
                    self.clear_intent(&intent, start, waits).await?;
                    waits += 1;
                }
                _ => return Ok(answer),
            }
        }
    }

    async fn write_once(&mut self, write: &Write) -> Result<Answer, Error> {
        let envelope = Self::put_envelope(write);
        let shard = write.id.shard;
        let outcome = self.call_counted(shard, &envelope).await;
        let sends = match &outcome {
            Ok((_, sends)) => *sends,
            Err(_) => 2,
        };
        self.count_sends(write, sends);
        let (mut answer, _) = outcome?;
        answer.write = Some(write.id);
        let current = self
            .sessions
            .get_mut(&shard)
            .filter(|s| s.id == write.id.session);
        match answer.reply {
            Reply::Written { index } => {
                let token = self.tokens.entry(shard).or_default();
                *token = (*token).max(index);
                if let Some(s) = current
                    && s.unfinished.is_some_and(|(seq, _)| seq == write.id.seq)
                {
                    s.unfinished = None;
                }
                Ok(answer)
            }
            Reply::SessionExpired => {
                // Only a write sent exactly once is known not to have been
                // applied by some other attempt.
                let sent = current.and_then(|s| s.unfinished);
                let maybe_applied = sent != Some((write.id.seq, 1));
                if self.session(shard) == Some(write.id.session) {
                    self.sessions.remove(&shard);
                }
                Err(Error::SessionExpired {
                    shard,
                    session: write.id.session,
                    maybe_applied,
                })
            }
            Reply::Intent(_) => Ok(answer),
            other => Err(self.refusal(shard, answer.node, other)),
        }
    }

    fn put_envelope(write: &Write) -> Envelope<Request> {
        Envelope {
            id: write.request,
            body: Request::Put {
                shard: write.id.shard,
                session: write.id.session,
                seq: write.id.seq,
                key: write.key.clone(),
                value: write.value.clone(),
            },
        }
    }

    fn count_sends(&mut self, write: &Write, sends: u32) {
        if let Some(s) = self.sessions.get_mut(&write.id.shard)
            && s.id == write.id.session
            && let Some((seq, sent)) = &mut s.unfinished
            && *seq == write.id.seq
        {
            *sent = sent.saturating_add(sends);
        }
    }

    /// Reads `key` (linearizable: served by the leader after ReadIndex).
    pub async fn get(&mut self, key: &str) -> Result<Answer, Error> {
        self.get_with(key, Consistency::Linearizable).await
    }

    /// This client's session token on `shard`: the highest log index it
    /// has written or read there (0: none yet).
    pub fn token(&self, shard: u32) -> u64 {
        self.tokens.get(&shard).copied().unwrap_or(0)
    }

    /// Reads `key` at `consistency`. Linearizable and lease reads go to the
    /// shard's leader (a leader without its lease is
    /// [`Error::LeaseUnavailable`]); session and `any` reads go to the
    /// nodes in turn (round-robin), a session read carrying this client's
    /// token for the shard and moving on from a replica that answers
    /// [`Reply::Behind`] (or nothing) to the next. Every answer raises the
    /// token to the index it reflects.
    /// A key under a transaction's intent is waited for (pushing the
    /// transaction and resolving the intent) for at most a bounded time.
    pub async fn get_with(&mut self, key: &str, consistency: Consistency) -> Result<Answer, Error> {
        let start = Instant::now();
        let mut waits = 0;
        loop {
            let answer = self.get_once(key, consistency).await?;
            match answer.reply {
                Reply::Intent(intent) => {
                    self.clear_intent(&intent, start, waits).await?;
                    waits += 1;
                }
                _ => return Ok(answer),
            }
        }
    }

    async fn get_once(&mut self, key: &str, consistency: Consistency) -> Result<Answer, Error> {
        let shard = self.shard_of(key);
        let envelope = Envelope {
            id: self.next_id(),
            body: Request::Get {
                shard,
                key: key.to_owned(),
                consistency,
                token: match consistency {
                    Consistency::Session => self.token(shard),
                    _ => 0,
                },
            },
        };
        let answer = if consistency.leader_only() {
            self.call(shard, &envelope).await?
        } else {
            self.call_replicas(&envelope).await?
        };
        match answer.reply {
            Reply::Value { index, .. } => {
                let token = self.tokens.entry(shard).or_default();
                *token = (*token).max(index);
                Ok(answer)
            }
            Reply::LeaseUnavailable => Err(Error::LeaseUnavailable {
                node: self.describe([answer.node]),
            }),
            Reply::Intent(_) => Ok(answer),
            other => Err(self.refusal(shard, answer.node, other)),
        }
    }

    /// Sends `envelope` (a session or `any` read) to one node at a time,
    /// starting at the next in turn, until one serves it or the request
    /// deadline passes.
    async fn call_replicas(&mut self, envelope: &Envelope<Request>) -> Result<Answer, Error> {
        let start = Instant::now();
        let mut attempts = 0u32;
        let mut tried = BTreeSet::new();
        while start.elapsed() < REQUEST_DEADLINE {
            let candidates = self.up_or_all();
            let Some(&node) = candidates.get(self.next_reader % candidates.len().max(1)) else {
                return Err(Error::Unanswered {
                    id: envelope.id,
                    tried: String::new(),
                });
            };
            self.next_reader = self.next_reader.wrapping_add(1);
            attempts += 1;
            if attempts > 1 {
                self.retries += 1;
            }
            let sent = Instant::now();
            self.send(node, envelope).await?;
            tried.insert(node);
            match self.await_round(envelope.id, &[node], false, sent).await? {
                // Behind the token, or a node without the shard: the next.
                Round::Answered(Reply::Behind { .. } | Reply::NoSuchShard, _) => {}
                Round::Answered(reply, node) => {
                    return Ok(Answer {
                        reply,
                        node,
                        latency: start.elapsed(),
                        attempts,
                        write: None,
                    });
                }
                Round::Unreachable(_) => {
                    self.down.insert(node);
                    if let Some(failures) = self.unreachable(&self.nodes.clone(), start) {
                        return Err(Error::Unreachable { failures });
                    }
                }
                Round::Unanswered(_) => {}
            }
        }
        Err(Error::Unanswered {
            id: envelope.id,
            tried: self.describe(tried),
        })
    }

    /// The state of every replica on `node`.
    pub async fn status(&mut self, node: u64) -> Result<Vec<ShardStatus>, Error> {
        match self.ask(node, Request::Status).await? {
            Reply::Status(s) => Ok(s),
            other => Err(Error::UnexpectedReply {
                node: self.describe([node]),
                reply: format!("{other:?}"),
            }),
        }
    }

    /// `node`'s estimate of each peer's clock offset.
    pub async fn clocks(&mut self, node: u64) -> Result<Vec<PeerClock>, Error> {
        match self.ask(node, Request::Clocks).await? {
            Reply::Clocks(c) => Ok(c),
            other => Err(Error::UnexpectedReply {
                node: self.describe([node]),
                reply: format!("{other:?}"),
            }),
        }
    }

    /// Sends `request` to `node` itself (not to a leader), retrying with the
    /// same id until it answers.
    pub async fn ask(&mut self, node: u64, request: Request) -> Result<Reply, Error> {
        let id = self.next_id();
        let envelope = Envelope { id, body: request };
        let deadline = Instant::now() + REQUEST_DEADLINE;
        while Instant::now() < deadline {
            let sent = Instant::now();
            self.send(node, &envelope).await?;
            match self.await_round(id, &[node], false, sent).await? {
                Round::Answered(reply, _) => return Ok(reply),
                Round::Unreachable(failures) => return Err(Error::Unreachable { failures }),
                Round::Unanswered(_) => {}
            }
        }
        Err(Error::Unanswered {
            id,
            tried: self.describe([node]),
        })
    }

    /// The error for a reply that ends a request without serving it.
    fn refusal(&self, shard: u32, node: u64, reply: Reply) -> Error {
        let node = self.describe([node]);
        match reply {
            Reply::NoSuchShard => Error::NoSuchShard { shard, node },
            Reply::Refused(reason) => Error::Refused { node, reason },
            other => Error::UnexpectedReply {
                node,
                reply: format!("{other:?}"),
            },
        }
    }

    /// Why each of `nodes` cannot be reached, if none of them can: a dial
    /// to each failed since `since` and none is connected. (A failure from
    /// before, while a node was down, says nothing about it now.)
    fn unreachable(&self, nodes: &[u64], since: Instant) -> Option<String> {
        let stats = self.transport.stats();
        let connected = |n: u64| {
            stats
                .queues
                .iter()
                .any(|q| q.peer == PeerId(n) && q.connected)
        };
        let failures: Option<Vec<String>> = nodes
            .iter()
            .map(|&n| {
                let failure = self
                    .transport
                    .dial_failure(PeerId(n))
                    .filter(|f| f.at >= since)?;
                (!connected(n)).then(|| format!("{} ({failure})", self.describe([n])))
            })
            .collect();
        failures.filter(|f| !f.is_empty()).map(|f| f.join(", "))
    }

    /// `id=address` of each node, comma separated.
    fn describe(&self, nodes: impl IntoIterator<Item = u64>) -> String {
        nodes
            .into_iter()
            .map(|n| match self.addrs.get(&n) {
                Some(addr) => format!("{n}={addr}"),
                None => format!("{n}=(address unknown)"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Where a request for `shard` goes: its leader if known and up,
    /// otherwise every node that is up (or every node, if none is).
    fn targets(&self, shard: u32) -> Vec<u64> {
        if let Some(&leader) = self.leaders.get(&shard)
            && !self.down.contains(&leader)
        {
            return vec![leader];
        }
        self.up_or_all()
    }

    /// The nodes not marked down, or every node if all are.
    fn up_or_all(&self) -> Vec<u64> {
        let up: Vec<u64> = self
            .nodes
            .iter()
            .copied()
            .filter(|n| !self.down.contains(n))
            .collect();
        if up.is_empty() {
            self.nodes.clone()
        } else {
            up
        }
    }

    async fn send(&self, node: u64, envelope: &Envelope<Request>) -> Result<(), Error> {
        let frame = Frame::new(CLIENT_CHANNEL, envelope.encode());
        // A node that is down queues nothing useful: drop and time out.
        let _ = self.transport.try_send(PeerId(node), frame);
        Ok(())
    }

    /// Notes what `event` says about which nodes are up, and returns the
    /// reply it carries, if it is one.
    fn hear(&mut self, event: Event<PeerId, Frame>) -> Heard {
        match event {
            Event::Message { from, msg } => {
                if msg.channel != CLIENT_CHANNEL {
                    return Heard::Other;
                }
                match Envelope::<Reply>::decode(msg.payload) {
                    Ok(reply) => Heard::Reply(from, reply),
                    Err(_) => Heard::Other,
                }
            }
            Event::Disconnected(peer) => {
                self.down.insert(peer.0);
                self.leaders.retain(|_, leader| *leader != peer.0);
                Heard::Lost(peer.0)
            }
            Event::Connected(peer) => {
                self.down.remove(&peer.0);
                Heard::Other
            }
            // Events a newer transport may add say nothing about replies.
            _ => Heard::Other,
        }
    }

    /// Waits for the reply to `id` from one of `targets`, until each has
    /// answered "not the leader" or gone away, or the attempt times out.
    /// With `follow_hints` off, any reply is the answer.
    /// A dial that failed since `sent` (this attempt's sends) ends the
    /// round with [`Error::Unreachable`] if every target failed so.
    async fn await_round(
        &mut self,
        id: u64,
        targets: &[u64],
        follow_hints: bool,
        sent: Instant,
    ) -> Result<Round, Error> {
        let deadline = tokio::time::Instant::now() + ATTEMPT_TIMEOUT;
        let mut outstanding: HashSet<u64> = targets.iter().copied().collect();
        let mut hint = None;
        while !outstanding.is_empty() {
            // Wake now and then to see whether the dials failed: a refused
            // connection is an answer too, and comes at once.
            let wake = deadline.min(tokio::time::Instant::now() + DIAL_CHECK);
            let event = match tokio::time::timeout_at(wake, self.transport.recv()).await {
                Err(_elapsed) if wake >= deadline => break,
                Err(_elapsed) => {
                    if let Some(failures) = self.unreachable(targets, sent) {
                        return Ok(Round::Unreachable(failures));
                    }
                    continue;
                }
                Ok(event) => event?,
            };
            let (from, reply) = match self.hear(event) {
                Heard::Reply(from, reply) => (from, reply),
                Heard::Lost(node) => {
                    // A node we wait on went away: do not wait for it.
                    outstanding.remove(&node);
                    continue;
                }
                Heard::Other => continue,
            };
            // Late replies to earlier requests are skipped.
            if reply.id != id {
                continue;
            }
            match reply.body {
                Reply::NotLeader { hint: h, addr } if follow_hints => {
                    outstanding.remove(&from.0);
                    // A leader this client has not heard of joined after it
                    // started: its address comes with the hint.
                    if let Ok(addr) = addr.parse() {
                        self.add_node(h, addr);
                    }
                    if h != 0 && h != from.0 && self.addrs.contains_key(&h) {
                        hint = Some(h);
                    }
                }
                body => return Ok(Round::Answered(body, from.0)),
            }
        }
        Ok(Round::Unanswered(hint))
    }

    async fn call(&mut self, shard: u32, envelope: &Envelope<Request>) -> Result<Answer, Error> {
        Ok(self.call_counted(shard, envelope).await?.0)
    }

    /// Sends `envelope` to `shard`'s leader until a reply other than "not
    /// the leader" comes; also returns how many frames were sent.
    async fn call_counted(
        &mut self,
        shard: u32,
        envelope: &Envelope<Request>,
    ) -> Result<(Answer, u32), Error> {
        let start = Instant::now();
        let mut attempts = 0u32;
        let mut sends = 0u32;
        let mut tried = BTreeSet::new();
        let mut hinted: Option<u64> = None;
        while start.elapsed() < REQUEST_DEADLINE {
            let targets = match hinted.take() {
                Some(hint) => vec![hint],
                None => self.targets(shard),
            };
            attempts += 1;
            if attempts > 1 {
                self.retries += 1;
            }
            let sent = Instant::now();
            for &node in &targets {
                self.send(node, envelope).await?;
                sends = sends.saturating_add(1);
                tried.insert(node);
            }
            match self.await_round(envelope.id, &targets, true, sent).await? {
                Round::Answered(reply, node) => {
                    self.leaders.insert(shard, node);
                    let answer = Answer {
                        reply,
                        node,
                        latency: start.elapsed(),
                        attempts,
                        write: None,
                    };
                    return Ok((answer, sends));
                }
                // Follow a hint, unless it names the one node just asked.
                Round::Unanswered(Some(hint)) if targets != [hint] => hinted = Some(hint),
                Round::Unreachable(failures) => {
                    // Those are down; the request goes to the others, unless
                    // every node has failed to connect since it started.
                    self.down.extend(targets.iter().copied());
                    self.leaders.remove(&shard);
                    let all = self.nodes.clone();
                    if all.iter().all(|n| targets.contains(n)) {
                        return Err(Error::Unreachable { failures });
                    }
                    if let Some(failures) = self.unreachable(&all, start) {
                        return Err(Error::Unreachable { failures });
                    }
                }
                Round::Unanswered(_) => {
                    // No leader known, or no answer: ask everyone after a
                    // pause long enough for an election.
                    self.leaders.remove(&shard);
                    tokio::time::sleep(ELECTION_PAUSE).await;
                }
            }
        }
        Err(Error::Unanswered {
            id: envelope.id,
            tried: self.describe(tried),
        })
    }

    /// Sends one transaction step to `shard`'s leader until it is answered.
    pub async fn txn_step(&mut self, shard: u32, command: TxnCommand) -> Result<TxnReply, Error> {
        let envelope = Envelope {
            id: self.next_id(),
            body: Request::Txn { shard, command },
        };
        let answer = self.call(shard, &envelope).await?;
        match answer.reply {
            Reply::Txn(reply) => Ok(reply),
            other => Err(self.refusal(shard, answer.node, other)),
        }
    }

    /// Waits (the `waits`-th time since `start`), then pushes the
    /// transaction holding `intent` with a priority of now (so only an
    /// expired transaction is aborted: a live one is waited for) and, if it
    /// has finished, resolves the intent. Past [`INTENT_WAIT`] since
    /// `start`: [`Error::Locked`].
    async fn clear_intent(
        &mut self,
        intent: &IntentRef,
        start: Instant,
        waits: u32,
    ) -> Result<(), Error> {
        if start.elapsed() > INTENT_WAIT {
            return Err(Error::Locked {
                key: intent.key.clone(),
                txn: intent.txn,
                waited_ms: start.elapsed().as_millis() as u64,
            });
        }
        let backoff = INTENT_BACKOFF
            .saturating_mul(1 << waits.min(16))
            .min(INTENT_BACKOFF_MAX);
        tokio::time::sleep(backoff).await;
        let priority = priority_by_age(wall_ms(), self.rng.u64(..));
        let push = TxnCommand::Push {
            txn: intent.txn,
            priority,
        };
        if let TxnReply::Status {
            status: status @ (TxnStatus::Committed | TxnStatus::Aborted),
            participants,
        } = self.txn_step(intent.anchor, push).await?
        {
            // Finish the transaction's work for its coordinator (which may
            // have crashed): resolve every participant (the key's own
            // first), and let a committed record go once all are.
            let commit = status == TxnStatus::Committed;
            let mut shards = vec![self.shard_of(&intent.key)];
            shards.extend(participants.into_iter().filter(|&p| p != intent.anchor));
            shards.dedup();
            let mut all = true;
            for (i, shard) in shards.into_iter().enumerate() {
                let resolve = TxnCommand::Resolve {
                    txn: intent.txn,
                    commit,
                };
                match self.txn_step(shard, resolve).await {
                    Ok(TxnReply::Done) => {}
                    // The key's own shard must be resolved; the others are
                    // a courtesy to the record's garbage collection.
                    Err(e) if i == 0 => return Err(e),
                    _ => all = false,
                }
            }
            if commit && all {
                let forget = TxnCommand::Forget { txn: intent.txn };
                let _ = self.txn_step(intent.anchor, forget).await;
            }
        }
        Ok(())
    }

    /// Runs `ops` as one atomic transaction across shards (see
    /// [`super::txn`]) with the default [`TxnConfig`], deferring the
    /// record's last step (its forget, once every intent is resolved) to
    /// the next transaction or [`close`](Self::close).
    pub async fn txn(&mut self, ops: Vec<TxnOp>) -> Result<TxnOutcome, Error> {
        let config = TxnConfig {
            defer_forget: true,
            ..TxnConfig::default()
        };
        self.txn_with(ops, config).await
    }

    /// Runs `ops` as one atomic transaction, its coordinator configured by
    /// `config`: returns once the outcome is decided and the intents are
    /// resolved. [`TxnOutcome::Unknown`] if the commit went unanswered.
    /// Its priority is its age (see [`priority_by_age`]).
    pub async fn txn_with(
        &mut self,
        ops: Vec<TxnOp>,
        config: TxnConfig,
    ) -> Result<TxnOutcome, Error> {
        let txn = TxnId {
            client: self.txn_client,
            seq: self.txn_seq,
        };
        // Every attempt takes the next counter.
        self.txn_seq += u64::from(config.max_attempts) + 1;
        let priority = priority_by_age(wall_ms(), self.rng.u64(..));
        let start = Instant::now();
        let since = |start: Instant| start.elapsed().as_millis() as u64;
        let ring = &self.ring;
        let shard_of = |key: &str| ring.get(key).copied().unwrap_or(0);
        let mut coordinator = Coordinator::new(config, txn, priority, ops, shard_of, 0);
        coordinator.carry_forgets(std::mem::take(&mut self.forgets), 0);
        // Correlation id -> (coordinator's id, shard).
        let mut waiting: HashMap<u64, (u64, u32)> = HashMap::new();
        // The coordinator's id -> the request, to send again on a hint.
        let mut requests: HashMap<u64, (u32, Request)> = HashMap::new();
        loop {
            while let Some(out) = coordinator.poll_request() {
                requests.insert(out.id, (out.shard, out.request.clone()));
                let targets = self.targets(out.shard);
                let id = self.next_id();
                waiting.insert(id, (out.id, out.shard));
                let envelope = Envelope {
                    id,
                    body: out.request,
                };
                for node in targets {
                    self.send(node, &envelope).await?;
                }
            }
            if coordinator.is_finished() {
                break;
            }
            let next = coordinator
                .poll_timeout()
                .map_or(DIAL_CHECK, |at| {
                    Duration::from_millis(at.saturating_sub(since(start)))
                })
                .min(DIAL_CHECK);
            let event = match tokio::time::timeout(next, self.transport.recv()).await {
                Err(_elapsed) => {
                    coordinator.handle_timeout(since(start));
                    if let Some(failures) = self.unreachable(&self.nodes.clone(), start) {
                        return Err(Error::Unreachable { failures });
                    }
                    continue;
                }
                Ok(event) => event?,
            };
            let Heard::Reply(from, reply) = self.hear(event) else {
                continue;
            };
            let Some(&(cid, shard)) = waiting.get(&reply.id) else {
                continue;
            };
            match reply.body {
                Reply::NotLeader { hint, addr } => {
                    if let Ok(addr) = addr.parse() {
                        self.add_node(hint, addr);
                    }
                    if hint != 0 && hint != from.0 && self.addrs.contains_key(&hint) {
                        if self.leaders.insert(shard, hint) != Some(hint)
                            && let Some((shard, request)) = requests.get(&cid).cloned()
                        {
                            // Straight to the hinted leader.
                            let id = self.next_id();
                            waiting.insert(id, (cid, shard));
                            let envelope = Envelope { id, body: request };
                            self.send(hint, &envelope).await?;
                        }
                    } else if self.leaders.get(&shard) == Some(&from.0) {
                        self.leaders.remove(&shard);
                    }
                }
                body => {
                    waiting.remove(&reply.id);
                    self.leaders.insert(shard, from.0);
                    coordinator.handle_reply(cid, &body, since(start));
                }
            }
        }
        self.forgets.extend(coordinator.take_deferred_forget());
        coordinator.outcome().cloned().ok_or(Error::Unanswered {
            id: txn.seq,
            tried: self.describe(self.nodes.clone()),
        })
    }

    /// Closes the connections, after sending the forgets finished
    /// transactions still owe (a bounded wait: an unanswered one leaves its
    /// committed record on the anchor, counted against its cap).
    pub async fn close(mut self) {
        for (anchor, txn) in std::mem::take(&mut self.forgets) {
            let forget = self.txn_step(anchor, TxnCommand::Forget { txn });
            let _ = tokio::time::timeout(Duration::from_secs(2), forget).await;
        }
        self.transport.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_differ_and_stay_clear_of_node_ids() {
        let ids: HashSet<u64> = (0..1000).map(|_| Client::random_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|&id| id >= 1 << 63));
    }
}
