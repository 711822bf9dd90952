//! A kv-cluster client: maps keys to shards on a consistent-hash ring,
//! finds each shard's leader by following hints (learning the address of a
//! server that joined from the hint itself), and retries every request
//! with the same Snowflake id until it is answered, so a write applies once
//! however many times it is sent.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quorate_consistent_hash::Ring;
use quorate_ids::{ClockPolicy, Layout, SystemClockGenerator};
use quorate_transport::framing::Frame;
use quorate_transport::tcp::{PeerId, TcpConfig, TcpTransport};
use quorate_transport::{Event, Transport};

use super::protocol::{Envelope, Reply, Request, ShardStatus};
use super::{CLIENT_CHANNEL, Error};

/// Virtual nodes per shard on the placement ring.
const VNODES: u32 = 64;

/// How long one attempt waits for its reply before retrying.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a request keeps retrying before giving up.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// A connection to a cluster.
#[derive(Debug)]
pub struct Client {
    transport: TcpTransport,
    nodes: Vec<u64>,
    ring: Ring<u32>,
    leaders: HashMap<u32, u64>,
    /// Nodes whose connection dropped and has not come back.
    down: HashSet<u64>,
    ids: SystemClockGenerator,
    /// Attempts beyond the first, over all requests.
    retries: u64,
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
    /// How many times the request was sent.
    pub attempts: u32,
}

impl Client {
    /// A client with id `client_id` (distinct from node ids and from other
    /// clients; it also names the Snowflake generator's node) for a cluster
    /// of `shards` shards on `nodes`.
    pub fn new(client_id: u64, nodes: &[(u64, SocketAddr)], shards: u32) -> Result<Self, Error> {
        let transport = TcpTransport::client(PeerId(client_id), TcpConfig::default());
        for &(id, addr) in nodes {
            transport.add_peer(PeerId(id), addr);
        }
        let mut ring = Ring::new(VNODES)?;
        for shard in 0..shards {
            ring.add(shard)?;
        }
        let ids = SystemClockGenerator::new(
            Layout::SEED,
            quorate_ids::NodeId::new(client_id % 1024),
            ClockPolicy::WaitUntil,
        )?;
        Ok(Client {
            transport,
            nodes: nodes.iter().map(|&(id, _)| id).collect(),
            ring,
            leaders: HashMap::new(),
            down: HashSet::new(),
            ids,
            retries: 0,
        })
    }

    /// Tells the client where server `id` listens (idempotent). Clients
    /// also learn servers from leader hints; this is for the first contact.
    pub fn add_node(&mut self, id: u64, addr: SocketAddr) {
        if !self.nodes.contains(&id) {
            self.transport.add_peer(PeerId(id), addr);
            self.nodes.push(id);
        }
    }

    /// The servers this client knows of.
    pub fn nodes(&self) -> &[u64] {
        &self.nodes
    }

    /// Sends an admin request about `shard` (add a voter, remove a member)
    /// to the shard's leader, following hints like a write.
    pub async fn admin(&mut self, shard: u32, request: Request) -> Result<Answer, Error> {
        let id = self.next_id()?;
        self.call(Some(shard), Envelope { id, body: request }).await
    }

    /// The shard `key` lives in.
    pub fn shard_of(&self, key: &str) -> u32 {
        self.ring.get(key).copied().unwrap_or(0)
    }

    /// A fresh request id.
    pub fn next_id(&self) -> Result<u64, Error> {
        Ok(self.ids.next()?.to_u64())
    }

    /// Retries over all requests so far.
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// Writes `value` under `key`.
    pub async fn put(&mut self, key: &str, value: Bytes) -> Result<Answer, Error> {
        let id = self.next_id()?;
        self.put_with_id(id, key, value).await
    }

    /// Writes with a given request id: sending the same id again is a retry.
    pub async fn put_with_id(&mut self, id: u64, key: &str, value: Bytes) -> Result<Answer, Error> {
        let shard = self.shard_of(key);
        let request = Request::Put {
            shard,
            key: key.to_owned(),
            value,
        };
        self.call(Some(shard), Envelope { id, body: request }).await
    }

    /// Sends a write once without waiting for the answer: a request in
    /// flight, to be retried with [`Client::put_with_id`].
    pub async fn send_put(&mut self, id: u64, key: &str, value: Bytes) -> Result<(), Error> {
        let shard = self.shard_of(key);
        let target = self.leaders.get(&shard).copied().unwrap_or(0);
        let request = Request::Put {
            shard,
            key: key.to_owned(),
            value,
        };
        self.send(target, &Envelope { id, body: request }).await
    }

    /// Reads `key` (linearizable: served by the leader after ReadIndex).
    pub async fn get(&mut self, key: &str) -> Result<Answer, Error> {
        let shard = self.shard_of(key);
        let id = self.next_id()?;
        let request = Request::Get {
            shard,
            key: key.to_owned(),
        };
        self.call(Some(shard), Envelope { id, body: request }).await
    }

    /// The state of every replica on `node`.
    pub async fn status(&mut self, node: u64) -> Result<Vec<ShardStatus>, Error> {
        match self.ask(node, Request::Status).await? {
            Reply::Status(s) => Ok(s),
            other => Err(Error::Check(format!("status: {other:?}"))),
        }
    }

    /// Sends `request` to `node` itself (not to a leader), retrying with the
    /// same id until it answers.
    pub async fn ask(&mut self, node: u64, request: Request) -> Result<Reply, Error> {
        let id = self.next_id()?;
        let envelope = Envelope { id, body: request };
        let deadline = Instant::now() + REQUEST_DEADLINE;
        while Instant::now() < deadline {
            self.send(node, &envelope).await?;
            if let Some((reply, _)) = self.await_reply(id, Some(node)).await? {
                return Ok(reply);
            }
        }
        Err(Error::Unanswered { id })
    }

    async fn send(&self, node: u64, envelope: &Envelope<Request>) -> Result<(), Error> {
        let frame = Frame::new(CLIENT_CHANNEL, envelope.encode());
        // A node that is down queues nothing useful: drop and time out.
        let _ = self.transport.try_send(PeerId(node), frame);
        Ok(())
    }

    async fn await_reply(
        &mut self,
        id: u64,
        waiting_on: Option<u64>,
    ) -> Result<Option<(Reply, u64)>, Error> {
        let deadline = tokio::time::Instant::now() + ATTEMPT_TIMEOUT;
        loop {
            let event = match tokio::time::timeout_at(deadline, self.transport.recv()).await {
                Err(_elapsed) => return Ok(None),
                Ok(event) => event?,
            };
            let (from, msg) = match event {
                Event::Message { from, msg } => (from, msg),
                Event::Disconnected(peer) => {
                    self.down.insert(peer.0);
                    self.leaders.retain(|_, leader| *leader != peer.0);
                    // The node we wait on went away: retry elsewhere now.
                    if Some(peer.0) == waiting_on {
                        return Ok(None);
                    }
                    continue;
                }
                Event::Connected(peer) => {
                    self.down.remove(&peer.0);
                    continue;
                }
            };
            if msg.channel != CLIENT_CHANNEL {
                continue;
            }
            // Late replies to earlier attempts or requests are skipped.
            if let Ok(reply) = Envelope::<Reply>::decode(msg.payload)
                && reply.id == id
            {
                return Ok(Some((reply.body, from.0)));
            }
        }
    }

    async fn call(
        &mut self,
        shard: Option<u32>,
        envelope: Envelope<Request>,
    ) -> Result<Answer, Error> {
        let start = Instant::now();
        let mut attempts = 0u32;
        let mut next = 0usize;
        let mut target = shard
            .and_then(|s| self.leaders.get(&s).copied())
            .unwrap_or_else(|| self.nodes.first().copied().unwrap_or(0));
        while start.elapsed() < REQUEST_DEADLINE {
            if self.down.contains(&target) {
                // Skip nodes known to be down (unless all are).
                if let Some(up) = self.nodes.iter().find(|n| !self.down.contains(n)) {
                    target = *up;
                }
            }
            attempts += 1;
            if attempts > 1 {
                self.retries += 1;
            }
            self.send(target, &envelope).await?;
            match self.await_reply(envelope.id, Some(target)).await? {
                Some((Reply::NotLeader { hint, addr }, _)) if hint != 0 && hint != target => {
                    // A leader this client has not heard of joined after it
                    // started: its address comes with the hint.
                    if let Ok(addr) = addr.parse() {
                        self.add_node(hint, addr);
                    }
                    target = hint;
                }
                Some((Reply::NotLeader { .. }, _)) | None => {
                    // No leader known, or no answer: try the next node after
                    // a pause long enough for an election.
                    next += 1;
                    target = self
                        .nodes
                        .get(next % self.nodes.len().max(1))
                        .copied()
                        .unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Some((reply, node)) => {
                    if let Some(s) = shard {
                        self.leaders.insert(s, node);
                    }
                    return Ok(Answer {
                        reply,
                        node,
                        latency: start.elapsed(),
                        attempts,
                    });
                }
            }
        }
        Err(Error::Unanswered { id: envelope.id })
    }

    /// Closes the connections.
    pub async fn close(self) {
        self.transport.shutdown().await;
    }
}
