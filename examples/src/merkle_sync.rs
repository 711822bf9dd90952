//! A stale replica catches up with two up-to-date peers over TCP using the
//! Merkle sync state machines of `quorate-merkle`.
//!
//! A publisher signs the root of version 2 of a set of blocks (Ed25519).
//! Two peers serve that version: `peer-a`, honest, and `peer-b`, whose disk
//! has rotted one block *after* its tree was built, so it serves a bad copy
//! under the genuine signed root. The stale replica holds version 1 (some
//! blocks changed since, some appended) and runs a [`Receiver`]: it checks
//! the signature, diffs its tree against the signed root (fetching only
//! nodes on paths to differing leaves), then fetches the differing blocks in
//! batches spread over both peers, announcing the nodes it already holds
//! (`have`) so proofs stop short. The rotten block fails verification, the
//! faulty peer is dropped and its batch is fetched again from the other one.
//!
//! Request/reply runs over `quorate-transport`'s [`Requester`]/[`Replier`]
//! on one TCP connection per peer (127.0.0.1, ephemeral ports).
//!
//! The signing key is derived from the seed so runs are reproducible; a
//! real publisher draws it from the OS.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use quorate_merkle::signed::{Ed25519Signer, Ed25519Verifier};
use quorate_merkle::sync::{Event, Message, Receiver, Sender, Server};
use quorate_merkle::{MerkleTree, Root, Sha256};
use quorate_transport::framing::{ChannelId, Frame};
use quorate_transport::patterns::reqrep::{Replier, ReplierEvent, Requester, RequesterEvent};
use quorate_transport::patterns::{Limits, RequestId, Wire, WireError};
use quorate_transport::tcp::{PeerId, TcpConfig, TcpError, TcpTransport};
use quorate_transport::{Event as NetEvent, Transport};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The channel the sync's request/reply runs on.
const SYNC: ChannelId = ChannelId(1);
/// Framing header bytes per frame (length, channel, flags).
const FRAME_HEADER: u64 = 9;
/// How long one request may go unanswered. Generous: a loaded CI box is slow.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// The whole sync must finish within this.
const SYNC_DEADLINE: Duration = Duration::from_secs(120);

/// The honest peer.
pub const PEER_A: PeerId = PeerId(1);
/// The peer with one rotten block.
pub const PEER_B: PeerId = PeerId(2);
/// The stale replica.
pub const REPLICA: PeerId = PeerId(3);

/// Parameters of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Blocks in version 1.
    pub blocks: u64,
    /// Bytes per block.
    pub block_len: usize,
    /// Blocks of version 1 rewritten in version 2.
    pub changed: u64,
    /// Blocks appended in version 2.
    pub appended: u64,
    /// Whether `peer-b` serves a rotten block.
    pub faulty_peer: bool,
    /// Seed of block contents, the changed set and the signing key.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            blocks: 4096,
            block_len: 1024,
            changed: 300,
            appended: 128,
            faulty_peer: true,
            seed: 2024,
        }
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Socket setup failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The transport refused a frame.
    #[error("transport: {0}")]
    Transport(#[from] TcpError),
    /// A frame was not a request/reply wire message.
    #[error("wire: {0}")]
    Wire(#[from] WireError),
    /// A request/reply queue was full.
    #[error("request/reply: {0}")]
    Pattern(#[from] quorate_transport::patterns::Error),
    /// The Merkle layer refused something (other than a caught lie).
    #[error("merkle: {0}")]
    Merkle(#[from] quorate_merkle::Error),
    /// Every peer was dropped as faulty before the sync completed.
    #[error("no honest peer left")]
    NoPeerLeft,
    /// The sync did not complete in time.
    #[error("sync did not complete within {0:?}")]
    Deadline(Duration),
}

/// A lie caught: which peer, and what the receiver said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caught {
    /// The peer dropped.
    pub peer: PeerId,
    /// The verification error, as text.
    pub error: String,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The parameters.
    pub config: Config,
    /// Blocks in the signed version.
    pub tree_size: u64,
    /// The signed root.
    pub signed_root: Root,
    /// Root of the replica's blocks after the sync.
    pub replica_root: Root,
    /// Root of the honest peer's blocks.
    pub peer_root: Root,
    /// The block `peer-b` rotted, if any.
    pub rotten_block: Option<u64>,
    /// Lies caught.
    pub caught: Vec<Caught>,
    /// Blocks the diff said to fetch.
    pub missing: u64,
    /// Blocks accepted, by the peer that served them.
    pub accepted_from: BTreeMap<PeerId, u64>,
    /// Diff node requests.
    pub node_requests: u64,
    /// Block requests sent, by peer.
    pub block_requests: BTreeMap<PeerId, u64>,
    /// Proof hashes received in accepted replies.
    pub proof_hashes: u64,
    /// Proof hashes the same blocks would need as plain inclusion proofs.
    pub plain_proof_hashes: u64,
    /// Bytes the replica sent (frames, headers included).
    pub bytes_sent: u64,
    /// Bytes the replica received (frames, headers included).
    pub bytes_received: u64,
    /// Bytes of a full copy of the signed version.
    pub full_copy: u64,
    /// Timeline lines.
    pub log: Vec<String>,
}

impl Report {
    /// Whether the replica ended with exactly the signed tree.
    pub fn roots_match(&self) -> bool {
        self.replica_root == self.signed_root && self.peer_root == self.signed_root
    }

    /// The printed report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.log {
            let _ = writeln!(out, "{line}");
        }
        let c = &self.config;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "blocks fetched     {} of {} ({} from peer-a, {} from peer-b)",
            self.accepted_from.values().sum::<u64>(),
            self.tree_size,
            self.accepted_from.get(&PEER_A).copied().unwrap_or(0),
            self.accepted_from.get(&PEER_B).copied().unwrap_or(0)
        );
        let _ = writeln!(
            out,
            "requests           {} node, {} block ({} to peer-a, {} to peer-b)",
            self.node_requests,
            self.block_requests.values().sum::<u64>(),
            self.block_requests.get(&PEER_A).copied().unwrap_or(0),
            self.block_requests.get(&PEER_B).copied().unwrap_or(0)
        );
        let _ = writeln!(
            out,
            "proof hashes       {} received; {} as plain inclusion proofs ({:.0}% saved: nodes verified by the diff and by earlier blocks are announced as `have`)",
            self.proof_hashes,
            self.plain_proof_hashes,
            100.0 * (1.0 - self.proof_hashes as f64 / self.plain_proof_hashes.max(1) as f64)
        );
        let total = self.bytes_sent + self.bytes_received;
        let _ = writeln!(
            out,
            "bytes on the wire  {} ({} sent, {} received, the rejected batch included) vs {} for a full copy: {:.1}%",
            total,
            self.bytes_sent,
            self.bytes_received,
            self.full_copy,
            100.0 * total as f64 / self.full_copy.max(1) as f64
        );
        let _ = writeln!(
            out,
            "roots              signed {}  replica {}  peer-a {}  {}",
            short(&self.signed_root),
            short(&self.replica_root),
            short(&self.peer_root),
            if self.roots_match() {
                "identical"
            } else {
                "DIFFER"
            }
        );
        let _ = writeln!(
            out,
            "({} blocks of {} bytes, {} changed and {} appended since the replica's version)",
            c.blocks + c.appended,
            c.block_len,
            c.changed,
            c.appended
        );
        out
    }
}

fn short(root: &Root) -> String {
    root.0.0.iter().take(6).fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn peer_name(peer: PeerId) -> &'static str {
    match peer {
        PEER_A => "peer-a",
        PEER_B => "peer-b",
        _ => "replica",
    }
}

/// Block `index` as written by `version`: seeded bytes.
fn block(seed: u64, version: u64, index: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed ^ (version << 56) ^ index.wrapping_mul(0x9e37));
    (0..len).map(|_| rng.u8(..)).collect()
}

/// Version 1 and version 2 of the data set.
fn versions(config: &Config) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<u64>) {
    let v1: Vec<Vec<u8>> = (0..config.blocks)
        .map(|i| block(config.seed, 1, i, config.block_len))
        .collect();
    let mut rng = fastrand::Rng::with_seed(config.seed);
    let mut changed: Vec<u64> = Vec::new();
    while (changed.len() as u64) < config.changed.min(config.blocks) {
        let i = rng.u64(0..config.blocks);
        if !changed.contains(&i) {
            changed.push(i);
        }
    }
    changed.sort_unstable();
    let mut v2 = v1.clone();
    for &i in &changed {
        if let Some(b) = v2.get_mut(i as usize) {
            *b = block(config.seed, 2, i, config.block_len);
        }
    }
    v2.extend(
        (config.blocks..config.blocks + config.appended)
            .map(|i| block(config.seed, 2, i, config.block_len)),
    );
    (v1, v2, changed)
}

/// One serving peer: answers sync requests until told to stop, each
/// requesting peer from its own session over the shared `server` tree. With
/// `rot = Some(i)` it flips a byte of block `i` in every reply, as a disk
/// that rotted after the tree was built would.
async fn serve(
    mut net: TcpTransport,
    server: Server<Sha256>,
    rot: Option<u64>,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), SyncError> {
    let mut replier = Replier::new(Limits::default());
    let mut sessions: BTreeMap<PeerId, Sender<Sha256, PeerId>> = BTreeMap::new();
    loop {
        let event = tokio::select! {
            event = net.recv() => event?,
            _ = &mut stop => break,
        };
        let NetEvent::Message { from, msg } = event else {
            continue;
        };
        if msg.channel != SYNC {
            continue;
        }
        replier.handle(from, Wire::from_frame(&msg)?);
        while let Some(ReplierEvent::Request { from, id, body }) = replier.poll_event() {
            // A request the sender refuses gets no answer; the replica times it out.
            let Ok(request) = Message::from_bytes(&body) else {
                replier.abandon(from, id);
                continue;
            };
            let sender = sessions.entry(from).or_insert_with(|| server.session(from));
            if sender.handle(request).is_err() {
                replier.abandon(from, id);
                continue;
            }
            if let Some(mut reply) = sender.poll_transmit() {
                if let (Some(bad), Message::Blocks { blocks, .. }) = (rot, &mut reply) {
                    for b in blocks.iter_mut().flatten().filter(|b| b.index == bad) {
                        if let Some(byte) = b.data.first_mut() {
                            *byte ^= 0x01;
                        }
                    }
                }
                replier.reply(from, id, Bytes::from(reply.to_bytes()))?;
            }
        }
        while let Some((to, wire)) = replier.poll_transmit() {
            net.send(to, wire.to_frame(SYNC)).await?;
        }
    }
    net.shutdown().await;
    Ok(())
}

/// The replica's side: a [`Receiver`] driven over TCP against both peers.
struct Replica {
    receiver: Receiver<Sha256, Ed25519Verifier, PeerId>,
    requester: Requester<PeerId>,
    net: TcpTransport,
    start: Instant,
    /// Outstanding transport requests: to whom, and whether they ask for blocks.
    outstanding: BTreeMap<RequestId, (PeerId, bool)>,
    honest: Vec<PeerId>,
    /// Indices of the blocks accepted from the network.
    fetched: Vec<u64>,
    report: Report,
}

impl Replica {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn log(&mut self, line: String) {
        let ms = self.now().as_millis();
        self.report.log.push(format!("[{ms:>5} ms] {line}"));
    }

    /// Asks each honest peer in turn for the receiver's next request to it,
    /// round after round, until none has more: the work spreads over them.
    async fn flush(&mut self) -> Result<(), SyncError> {
        let mut asked = true;
        while asked {
            asked = false;
            for peer in self.honest.clone() {
                if let Some(msg) = self.receiver.poll_transmit_to(self.now(), peer) {
                    self.request(peer, msg)?;
                    asked = true;
                }
            }
        }
        while let Some((to, wire)) = self.requester.poll_transmit() {
            let frame = wire.to_frame(SYNC);
            self.report.bytes_sent += FRAME_HEADER + frame.payload.len() as u64;
            self.net.send(to, frame).await?;
        }
        Ok(())
    }

    fn request(&mut self, peer: PeerId, msg: Message) -> Result<(), SyncError> {
        let blocks = match &msg {
            Message::GetBlocks { blocks, have, .. } => {
                *self.report.block_requests.entry(peer).or_insert(0) += 1;
                let line = format!(
                    "ask {} for {} blocks, announcing {} held nodes",
                    peer_name(peer),
                    blocks.len(),
                    have.len()
                );
                self.log(line);
                true
            }
            Message::GetNodes { .. } => {
                self.report.node_requests += 1;
                false
            }
            _ => false,
        };
        let id = self.requester.request(
            self.now(),
            peer,
            Bytes::from(msg.to_bytes()),
            REQUEST_TIMEOUT,
        )?;
        self.outstanding.insert(id, (peer, blocks));
        Ok(())
    }

    fn on_reply(&mut self, from: PeerId, body: &Bytes) {
        if !self.honest.contains(&from) {
            return;
        }
        let msg = match Message::from_bytes(body) {
            Ok(msg) => msg,
            Err(error) => return self.drop_peer(from, error),
        };
        let proof: u64 = match &msg {
            Message::Blocks { blocks, .. } => {
                blocks.iter().flatten().map(|b| b.proof.len() as u64).sum()
            }
            _ => 0,
        };
        let served: Vec<u64> = match &msg {
            Message::Blocks { blocks, .. } => blocks.iter().flatten().map(|b| b.index).collect(),
            _ => Vec::new(),
        };
        match self.receiver.handle_from(&from, msg) {
            Ok(()) => {
                self.report.proof_hashes += proof;
                if !served.is_empty() {
                    *self.report.accepted_from.entry(from).or_insert(0) += served.len() as u64;
                    self.fetched.extend(&served);
                    let line = format!(
                        "{} blocks from {} verified ({} proof hashes)",
                        served.len(),
                        peer_name(from),
                        proof
                    );
                    self.log(line);
                }
            }
            // A late answer to a request already asked again: not a lie.
            Err(quorate_merkle::Error::Unexpected { .. }) => {}
            Err(error) => self.drop_peer(from, error),
        }
    }

    fn drop_peer(&mut self, peer: PeerId, error: quorate_merkle::Error) {
        let line = format!("{} caught: {error}; dropping it", peer_name(peer));
        self.log(line);
        self.report.caught.push(Caught {
            peer,
            error: error.to_string(),
        });
        self.honest.retain(|&p| p != peer);
        self.net.remove_peer(peer);
        self.outstanding.retain(|_, (p, _)| *p != peer);
        // Exactly the liar's requests are asked again, of the others.
        self.receiver.on_peer_disconnect(&peer);
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.receiver.poll_event() {
            let line = match event {
                Event::RootVerified { tree_size } => {
                    self.report.tree_size = tree_size;
                    format!("signed root verified (Ed25519): {tree_size} blocks")
                }
                Event::DiffDone { missing, reused } => {
                    self.report.missing = missing;
                    let nodes = self.receiver.verified_nodes();
                    format!(
                        "diff done: {missing} blocks to fetch, {reused} reused locally, {nodes} remote nodes verified"
                    )
                }
                Event::Complete => "sync complete".to_owned(),
                // Per-block events, and kinds a later version may add.
                _ => continue,
            };
            self.log(line);
        }
    }

    async fn run(&mut self) -> Result<(), SyncError> {
        while !self.receiver.is_complete() {
            if self.now() > SYNC_DEADLINE {
                return Err(SyncError::Deadline(SYNC_DEADLINE));
            }
            self.flush().await?;
            if self.honest.is_empty() {
                return Err(SyncError::NoPeerLeft);
            }
            let wake = [self.receiver.poll_timeout(), self.requester.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(REQUEST_TIMEOUT);
            let sleep = tokio::time::sleep_until(self.start + wake);
            tokio::select! {
                event = self.net.recv() => {
                    if let NetEvent::Message { from, msg } = event? {
                        self.on_frame(from, &msg)?;
                    }
                }
                _ = sleep => {}
            }
            let now = self.now();
            self.requester.handle_timeout(now);
            self.receiver.handle_timeout(now);
            self.drain_requester();
            self.drain_events();
        }
        Ok(())
    }

    fn on_frame(&mut self, from: PeerId, frame: &Frame) -> Result<(), SyncError> {
        if frame.channel != SYNC {
            return Ok(());
        }
        self.report.bytes_received += FRAME_HEADER + frame.payload.len() as u64;
        self.requester.handle(from, Wire::from_frame(frame)?);
        Ok(())
    }

    fn drain_requester(&mut self) {
        while let Some(event) = self.requester.poll_event() {
            match event {
                RequesterEvent::Reply { id, from, body }
                    if self.outstanding.remove(&id).is_some() =>
                {
                    self.on_reply(from, &body);
                }
                RequesterEvent::TimedOut { id } => {
                    self.outstanding.remove(&id);
                }
                // Events a newer transport may add need nothing here.
                _ => {}
            }
        }
    }
}

/// Runs the scenario: two peers and a stale replica on 127.0.0.1.
pub async fn run(config: &Config) -> Result<Report, SyncError> {
    let (v1, v2, changed) = versions(config);
    let mut secret = [0u8; 32];
    fastrand::Rng::with_seed(config.seed).fill(&mut secret);
    let publisher = Ed25519Signer::from_secret_bytes(&secret);
    // Built once: both serving peers hold this version and share the tree.
    let server = Server::<Sha256>::new(v2.clone(), &publisher);
    let signed = server.signed_root().clone();
    let rotten_block = if config.faulty_peer {
        // The first differing block: it is in the first batch, which goes to peer-b.
        changed.first().copied().or(Some(config.blocks))
    } else {
        None
    };

    let mut stops = Vec::new();
    let mut servers = Vec::new();
    let replica_net = TcpTransport::client(REPLICA, TcpConfig::default());
    // peer-b first: the replica prefers it (say it is nearer).
    for (peer, rot) in [(PEER_B, rotten_block), (PEER_A, None)] {
        let net = TcpTransport::bind(peer, "127.0.0.1:0", TcpConfig::default()).await?;
        let addr = net
            .local_addr()
            .ok_or_else(|| std::io::Error::other("peer is not listening"))?;
        replica_net.add_peer(peer, addr);
        let (stop, stopped) = oneshot::channel();
        stops.push(stop);
        servers.push(tokio::spawn(serve(net, server.clone(), rot, stopped)));
    }

    let full_copy = v2.iter().map(|b| b.len() as u64).sum();
    let mut replica = Replica {
        receiver: Receiver::new(v1, publisher.verifier()),
        requester: Requester::new(Limits::default()),
        net: replica_net,
        start: Instant::now(),
        outstanding: BTreeMap::new(),
        honest: vec![PEER_B, PEER_A],
        fetched: Vec::new(),
        report: Report {
            config: config.clone(),
            tree_size: 0,
            signed_root: signed.root,
            replica_root: Root(quorate_merkle::Hash([0; 32])),
            peer_root: server.tree().root(),
            rotten_block,
            caught: Vec::new(),
            missing: 0,
            accepted_from: BTreeMap::new(),
            node_requests: 0,
            block_requests: BTreeMap::new(),
            proof_hashes: 0,
            plain_proof_hashes: 0,
            bytes_sent: 0,
            bytes_received: 0,
            full_copy,
            log: Vec::new(),
        },
    };
    if let Some(bad) = rotten_block {
        replica.log(format!("peer-b's copy of block {bad} has rotted on disk"));
    }
    replica
        .receiver
        .set_request_timeout(REQUEST_TIMEOUT + Duration::from_secs(1));
    let outcome = replica.run().await;

    let Replica {
        receiver,
        net,
        mut report,
        fetched,
        ..
    } = replica;
    net.shutdown().await;
    for stop in stops {
        let _ = stop.send(());
    }
    for server in servers {
        match server.await {
            Ok(result) => result?,
            Err(join) => return Err(std::io::Error::other(join.to_string()).into()),
        }
    }
    outcome?;

    let blocks = receiver.into_blocks().unwrap_or_default();
    let synced = MerkleTree::<Sha256>::from_leaves(&blocks);
    report.replica_root = synced.root();
    // What the fetched blocks would have cost as plain inclusion proofs.
    for index in fetched {
        report.plain_proof_hashes += synced.inclusion_proof(index)?.hashes().len() as u64;
    }
    Ok(report)
}

pub mod fetch;
pub mod keys;
pub mod local;
pub mod manifest;
pub mod serve;
pub mod wire;
