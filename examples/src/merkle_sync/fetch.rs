//! `merkle-sync fetch`: makes a directory identical to a served tree,
//! fetching only the blocks it lacks, from several sources at once.
//!
//! 1. Every source is asked for the manifest reply; each answer is checked
//!    (signature by the trusted key, the manifest's inclusion proof as leaf
//!    0, every bound of [`Limits`]). A source whose answer fails is refused;
//!    one that serves another signed version is left out.
//! 2. The target's blocks are laid out at the tree indices the manifest
//!    gives (a file's blocks where the target has that file), and the
//!    blocks of the staging log of an interrupted fetch of the same root
//!    over them. A [`Receiver`] diffs them against the signed root and
//!    fetches the rest in batches spread over the sources; every block is
//!    verified before it is accepted, then appended to the staging log. A
//!    source whose reply fails verification is refused, and exactly its
//!    outstanding requests are asked of the others.
//! 3. Once every block verified, the target is made identical to the
//!    manifest ([`local::apply`]): new and changed files are written to the
//!    staging directory and renamed into place, the rest removed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use indicatif::ProgressBar;
use quorate_merkle::signed::Ed25519Verifier;
use quorate_merkle::sync::{Event, Message, Receiver};
use quorate_merkle::{Sha256, SignedRoot};
use quorate_transport::Event as NetEvent;
use quorate_transport::framing::{Frame, HEADER_LEN};
use quorate_transport::patterns::reqrep::{Requester, RequesterEvent};
use quorate_transport::patterns::{Limits as PatternLimits, RequestId, Wire};
use quorate_transport::tcp::{PeerId, TcpError, TcpSender, TcpTransport};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::local::{self, Applied, Staging};
use super::manifest::{Limits, Manifest};
use super::wire::{
    self, CHANNEL, Error, FETCHER_ID, ManifestReply, SERVER_ID, TAG_MANIFEST, TAG_SYNC, hex,
};

/// How long phase 1 waits for slower sources once one answered validly.
const MANIFEST_GRACE: Duration = Duration::from_secs(1);

/// What to fetch, from where, trusting whom.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// The serving processes.
    pub sources: Vec<SocketAddr>,
    /// The target directory (created if missing).
    pub dir: PathBuf,
    /// The publisher's public key.
    pub trust: Ed25519Verifier,
    /// Bounds on what sources may send.
    pub limits: Limits,
    /// How long one request may go unanswered.
    pub request_timeout: Duration,
    /// The whole fetch must finish within this.
    pub deadline: Duration,
}

/// A source left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The source.
    pub source: SocketAddr,
    /// Why.
    pub why: String,
}

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Files in the tree.
    pub files: u64,
    /// Blocks of all files.
    pub blocks: u64,
    /// Blocks fetched and verified from the network.
    pub fetched: u64,
    /// Blocks taken from the target or the staging log (verified too).
    pub reused: u64,
    /// Of the reused, those from the staging log of an interrupted fetch.
    pub resumed: u64,
    /// Bytes on the wire, both ways (frames with their headers).
    pub wire_bytes: u64,
    /// Bytes of all files.
    pub tree_bytes: u64,
    /// What was changed on disk.
    pub applied: Applied,
    /// Sources refused or left out.
    pub refused: Vec<Refused>,
    /// Blocks accepted, by source.
    pub from: BTreeMap<SocketAddr, u64>,
    /// The signed root synced to (first bytes, hex).
    pub root: String,
    /// Wall time.
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "synced {} files ({} written, {} removed): {} blocks, {} fetched, {} reused ({} resumed); \
             {} bytes on the wire for a {}-byte tree ({:.1}%); {} source(s) refused; {:.2} s",
            self.files,
            self.applied.written,
            self.applied.removed,
            self.blocks,
            self.fetched,
            self.reused,
            self.resumed,
            self.wire_bytes,
            self.tree_bytes,
            100.0 * self.wire_bytes as f64 / self.tree_bytes.max(1) as f64,
            self.refused.len(),
            self.elapsed.as_secs_f64()
        )
    }
}

/// The verified answer of phase 1.
struct Target {
    signed: SignedRoot,
    manifest: Manifest,
    bytes: Vec<u8>,
}

/// Checks a manifest reply against the trusted key and the limits.
fn verify_manifest(body: &[u8], config: &FetchConfig) -> Result<Target, Error> {
    let reply = ManifestReply::decode(body, config.limits.max_manifest_bytes)?;
    reply.signed.verify(&config.trust)?;
    reply.proof.verify::<Sha256>(
        0,
        &reply.manifest,
        reply.signed.tree_size,
        &reply.signed.root,
    )?;
    let manifest = Manifest::decode(&reply.manifest, &config.limits)?;
    if manifest.tree_size() != reply.signed.tree_size {
        return Err(Error::Invalid(format!(
            "manifest lists {} leaves, the signed root {}",
            manifest.tree_size(),
            reply.signed.tree_size
        )));
    }
    Ok(Target {
        signed: reply.signed,
        manifest,
        bytes: reply.manifest,
    })
}

/// What a source's transport reports.
type SourceEvent = Result<NetEvent<PeerId, Frame>, TcpError>;

/// The fetcher's connections (one transport per source: every server
/// answers to [`SERVER_ID`]), request/reply state and byte count. Sources
/// are told apart by the key `PeerId(i + 1)` of their place in `--from`.
struct Link {
    senders: BTreeMap<PeerId, TcpSender>,
    events: mpsc::Receiver<(PeerId, SourceEvent)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    requester: Requester<PeerId>,
    start: Instant,
    addrs: BTreeMap<PeerId, SocketAddr>,
    wire_bytes: u64,
    timeout: Duration,
}

impl Link {
    fn new(sources: &[SocketAddr], timeout: Duration) -> Self {
        let (tx, events) = mpsc::channel(64);
        let mut senders = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        let mut tasks = Vec::new();
        for (i, addr) in sources.iter().enumerate() {
            let key = PeerId(i as u64 + 1);
            let net = TcpTransport::client(FETCHER_ID, wire::fetch_tcp_config());
            net.add_peer(SERVER_ID, *addr);
            let (sender, mut receiver) = net.into_split();
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let event = receiver.recv().await;
                    let closed = event.is_err();
                    if tx.send((key, event)).await.is_err() || closed {
                        break;
                    }
                }
            }));
            senders.insert(key, sender);
            addrs.insert(key, *addr);
        }
        Self {
            senders,
            events,
            tasks,
            requester: Requester::new(PatternLimits::default()),
            start: Instant::now(),
            addrs,
            wire_bytes: 0,
            timeout,
        }
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn drop_source(&mut self, key: PeerId) {
        if let Some(sender) = self.senders.remove(&key) {
            sender.remove_peer(SERVER_ID);
        }
    }

    async fn shutdown(self) {
        for sender in self.senders.values() {
            sender.shutdown().await;
        }
        for task in self.tasks {
            task.abort();
        }
    }

    fn request(&mut self, to: PeerId, body: Vec<u8>) -> Result<RequestId, Error> {
        let now = self.now();
        Ok(self
            .requester
            .request(now, to, Bytes::from(body), self.timeout)?)
    }

    async fn flush(&mut self) -> Result<(), Error> {
        while let Some((to, wire)) = self.requester.poll_transmit() {
            let frame = wire.to_frame(CHANNEL);
            self.wire_bytes += (HEADER_LEN + frame.payload.len()) as u64;
            if let Some(sender) = self.senders.get(&to) {
                sender.send(SERVER_ID, frame).await?;
            }
        }
        Ok(())
    }

    /// Waits for one network event or until `wake` (time since start),
    /// then returns the request/reply outcomes.
    async fn step(&mut self, wake: Duration) -> Result<Vec<RequesterEvent<PeerId>>, Error> {
        let sleep = tokio::time::sleep_until(self.start + wake);
        tokio::select! {
            event = self.events.recv() => {
                match event {
                    Some((key, Ok(NetEvent::Message { msg, .. })))
                        if msg.channel == CHANNEL && self.senders.contains_key(&key) =>
                    {
                        self.wire_bytes += (HEADER_LEN + msg.payload.len()) as u64;
                        match Wire::from_frame(&msg) {
                            Ok(wire) => self.requester.handle(key, wire),
                            Err(e) => tracing::warn!(source = ?self.addrs.get(&key), "malformed frame: {e}"),
                        }
                    }
                    Some((key, Err(e))) => {
                        tracing::debug!(source = ?self.addrs.get(&key), "transport closed: {e}");
                    }
                    Some(_) => {}
                    None => return Err(Error::NoSource("every connection closed".into())),
                }
            }
            () = sleep => {}
        }
        let now = self.now();
        self.requester.handle_timeout(now);
        let mut out = Vec::new();
        while let Some(e) = self.requester.poll_event() {
            out.push(e);
        }
        Ok(out)
    }
}

/// The fetch in progress.
struct Fetch<'a> {
    config: &'a FetchConfig,
    link: Link,
    honest: Vec<PeerId>,
    refused: Vec<Refused>,
    progress: &'a ProgressBar,
}

impl Fetch<'_> {
    fn refuse(&mut self, peer: PeerId, why: String) {
        let source = self.link.addrs.get(&peer).copied();
        if let Some(source) = source {
            tracing::warn!(%source, "source refused: {why}");
            self.progress.println(format!("refused {source}: {why}"));
            self.refused.push(Refused { source, why });
        }
        self.honest.retain(|p| *p != peer);
        self.link.drop_source(peer);
    }

    /// Phase 1: the verified manifest, and the sources that serve it.
    async fn manifest(&mut self) -> Result<Target, Error> {
        let mut asked: BTreeMap<RequestId, PeerId> = BTreeMap::new();
        for peer in self.link.addrs.keys().copied().collect::<Vec<_>>() {
            asked.insert(self.link.request(peer, vec![TAG_MANIFEST])?, peer);
        }
        self.link.flush().await?;
        let mut target: Option<Target> = None;
        let mut grace_until = None;
        let give_up = self.link.now() + self.config.request_timeout;
        while !asked.is_empty() {
            let now = self.link.now();
            if now >= give_up || grace_until.is_some_and(|g| now >= g) {
                break;
            }
            let wake = grace_until.unwrap_or(give_up).min(give_up);
            for event in self.link.step(wake).await? {
                match event {
                    RequesterEvent::Reply { id, from, body } => {
                        if asked.remove(&id).is_none() {
                            continue;
                        }
                        match verify_manifest(&body, self.config) {
                            Err(e) => self.refuse(from, format!("bad manifest reply: {e}")),
                            Ok(t) => match &target {
                                None => {
                                    self.honest.push(from);
                                    grace_until = Some(self.link.now() + MANIFEST_GRACE);
                                    target = Some(t);
                                }
                                Some(first) if first.signed == t.signed => self.honest.push(from),
                                Some(_) => {
                                    let why = "serves another signed version".to_owned();
                                    self.refuse(from, why);
                                }
                            },
                        }
                    }
                    RequesterEvent::TimedOut { id } => {
                        if let Some(peer) = asked.remove(&id) {
                            self.refuse(peer, "no answer to the manifest request".into());
                        }
                    }
                    // Outcomes a newer transport may add.
                    _ => {}
                }
            }
        }
        for peer in asked.into_values() {
            self.refuse(peer, "no answer to the manifest request in time".into());
        }
        target.ok_or_else(|| {
            let why: Vec<String> = self
                .refused
                .iter()
                .map(|r| format!("{}: {}", r.source, r.why))
                .collect();
            Error::NoSource(why.join("; "))
        })
    }
}

/// Runs a fetch (see the [module docs](self)), showing progress on
/// `progress` (pass [`ProgressBar::hidden`] for none).
pub async fn fetch(config: &FetchConfig, progress: &ProgressBar) -> Result<Summary, Error> {
    if config.sources.is_empty() {
        return Err(Error::NoSource("no --from given".into()));
    }
    std::fs::create_dir_all(&config.dir)
        .map_err(Error::io(format!("create {}", config.dir.display())))?;
    let mut f = Fetch {
        config,
        link: Link::new(&config.sources, config.request_timeout),
        honest: Vec::new(),
        refused: Vec::new(),
        progress,
    };
    let outcome = run(&mut f).await;
    let Fetch { link, .. } = f;
    link.shutdown().await;
    outcome
}

async fn run(f: &mut Fetch<'_>) -> Result<Summary, Error> {
    let config = f.config;
    let target = f.manifest().await?;
    let manifest = &target.manifest;
    tracing::info!(
        files = manifest.files().count(),
        blocks = manifest.total_blocks(),
        bytes = manifest.total_bytes(),
        root = %hex(&target.signed.root.0.0[..8]),
        sources = f.honest.len(),
        "manifest verified"
    );

    // Phase 2: what the target holds, then the staging log over it.
    let mut local = local::local_blocks(&config.dir, manifest, &target.bytes);
    let (staging, held) = Staging::open(&config.dir, &target.signed, manifest.block_size)?;
    let held: BTreeSet<u64> = held
        .into_iter()
        .filter_map(|(i, data)| {
            let slot = local.get_mut(i as usize)?;
            *slot = data;
            Some(i)
        })
        .collect();
    if !held.is_empty() {
        tracing::info!(blocks = held.len(), "resuming: staged blocks loaded");
    }
    let mut receiver: Receiver<Sha256, Ed25519Verifier, PeerId> =
        Receiver::new(local, config.trust);
    receiver.set_request_timeout(config.request_timeout + Duration::from_secs(1));
    // The root is the one phase 1 verified: answer the receiver's root
    // request here, so no source can steer it to another signed version.
    if let Some(&first) = f.honest.first()
        && let Some(Message::GetSignedRoot) = receiver.poll_transmit_to(f.link.now(), first)
    {
        receiver.handle_from(&first, Message::SignedRoot(target.signed.clone()))?;
    }
    let mut sync = Blocks {
        receiver,
        outstanding: BTreeMap::new(),
        staging,
        fetched: BTreeSet::new(),
        from: BTreeMap::new(),
        signed: target.signed.clone(),
    };
    while !sync.receiver.is_complete() {
        let now = f.link.now();
        if now > config.deadline {
            return Err(Error::Deadline(config.deadline));
        }
        if f.honest.is_empty() {
            let why: Vec<String> = f
                .refused
                .iter()
                .map(|r| format!("{}: {}", r.source, r.why))
                .collect();
            return Err(Error::NoSource(why.join("; ")));
        }
        sync.ask(f)?;
        f.link.flush().await?;
        let wake = [
            sync.receiver.poll_timeout(),
            f.link.requester.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + config.request_timeout);
        for event in f.link.step(wake).await? {
            match event {
                RequesterEvent::Reply { id, from, body } => {
                    let live = sync.outstanding.remove(&id).is_some();
                    if live && f.honest.contains(&from) {
                        sync.on_reply(f, from, &body)?;
                    }
                }
                RequesterEvent::TimedOut { id } => {
                    sync.outstanding.remove(&id);
                }
                // Outcomes a newer transport may add.
                _ => {}
            }
        }
        sync.receiver.handle_timeout(f.link.now());
    }
    let Blocks {
        receiver,
        fetched,
        from,
        ..
    } = sync;
    progress_done(f.progress);
    let blocks = receiver
        .into_blocks()
        .ok_or_else(|| Error::Invalid("sync reported complete without every block".into()))?;
    let applied = local::apply(&config.dir, manifest, &blocks)?;
    let total = manifest.total_blocks();
    let fetched_n = fetched.len() as u64;
    Ok(Summary {
        files: manifest.files().count() as u64,
        blocks: total,
        fetched: fetched_n,
        reused: total - fetched_n.min(total),
        resumed: held.difference(&fetched).count() as u64,
        wire_bytes: f.link.wire_bytes,
        tree_bytes: manifest.total_bytes(),
        applied,
        refused: f.refused.clone(),
        from,
        root: hex(&target.signed.root.0.0[..8]),
        elapsed: f.link.start.elapsed(),
    })
}

fn progress_done(progress: &ProgressBar) {
    progress.finish_and_clear();
}

/// Phase 2: the receiver and what it fetched.
struct Blocks {
    receiver: Receiver<Sha256, Ed25519Verifier, PeerId>,
    /// Transport requests in flight, by source.
    outstanding: BTreeMap<RequestId, PeerId>,
    staging: Staging,
    fetched: BTreeSet<u64>,
    from: BTreeMap<SocketAddr, u64>,
    signed: SignedRoot,
}

impl Blocks {
    /// Asks each honest source in turn for the receiver's next request to
    /// it, round after round, until none has more: the work spreads.
    fn ask(&mut self, f: &mut Fetch<'_>) -> Result<(), Error> {
        let mut asked = true;
        while asked {
            asked = false;
            for peer in f.honest.clone() {
                if let Some(msg) = self.receiver.poll_transmit_to(f.link.now(), peer) {
                    let mut body = vec![TAG_SYNC];
                    body.extend_from_slice(&msg.to_bytes());
                    self.outstanding.insert(f.link.request(peer, body)?, peer);
                    asked = true;
                }
            }
        }
        Ok(())
    }

    /// Refuses `peer`; exactly its outstanding requests go to the others.
    fn refuse(&mut self, f: &mut Fetch<'_>, peer: PeerId, why: String) {
        f.refuse(peer, why);
        self.receiver.on_peer_disconnect(&peer);
        self.outstanding.retain(|_, p| *p != peer);
    }

    /// One reply from `peer`: verified blocks go to the staging log.
    fn on_reply(&mut self, f: &mut Fetch<'_>, peer: PeerId, body: &[u8]) -> Result<(), Error> {
        let msg = match body.split_first() {
            Some((&TAG_SYNC, rest)) => Message::from_bytes(rest),
            _ => Err(quorate_merkle::Error::Unexpected {
                what: "reply",
                id: 0,
            }),
        };
        let msg = match msg {
            Ok(msg) => msg,
            Err(e) => {
                self.refuse(f, peer, format!("malformed reply: {e}"));
                return Ok(());
            }
        };
        let data: BTreeMap<u64, Vec<u8>> = match &msg {
            Message::Blocks { blocks, .. } => blocks
                .iter()
                .flatten()
                .map(|b| (b.index, b.data.clone()))
                .collect(),
            _ => BTreeMap::new(),
        };
        match self.receiver.handle_from(&peer, msg) {
            // A late answer to a request already asked again elsewhere.
            Ok(()) | Err(quorate_merkle::Error::Unexpected { .. }) => {}
            Err(e) => self.refuse(f, peer, format!("sent data that fails verification: {e}")),
        }
        let mut accepted: Vec<(u64, &[u8])> = Vec::new();
        while let Some(event) = self.receiver.poll_event() {
            match event {
                Event::BlockAccepted { index } => {
                    if let Some(d) = data.get(&index) {
                        accepted.push((index, d));
                    }
                }
                Event::RootVerified { .. } if self.receiver.signed_root() != Some(&self.signed) => {
                    return Err(Error::Invalid(
                        "a source changed its signed version during the fetch; run again".into(),
                    ));
                }
                Event::DiffDone { missing, .. } => {
                    f.progress.set_length(missing);
                    tracing::info!(missing, "diff done");
                }
                _ => {}
            }
        }
        if !accepted.is_empty() {
            self.staging.append(&accepted)?;
            f.progress.inc(accepted.len() as u64);
            f.progress
                .set_message(format!("{} bytes on the wire", f.link.wire_bytes));
            if let Some(addr) = f.link.addrs.get(&peer) {
                *self.from.entry(*addr).or_insert(0) += accepted.len() as u64;
            }
            self.fetched.extend(accepted.iter().map(|(i, _)| *i));
        }
        Ok(())
    }
}
