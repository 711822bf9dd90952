//! `merkle-sync serve`: one signed Merkle tree over a directory (the
//! manifest as leaf 0, then every file's blocks), answered to any number
//! of fetchers, each from a sync session of its own over the shared tree.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use quorate_merkle::signed::Ed25519Signer;
use quorate_merkle::sync::{Message, Sender, Server};
use quorate_merkle::{InclusionProof, Sha256, SignedRoot};
use quorate_transport::patterns::reqrep::{Replier, ReplierEvent};
use quorate_transport::patterns::{Limits as PatternLimits, Wire};
use quorate_transport::tcp::{PeerId, TcpTransport};
use quorate_transport::{Event as NetEvent, Transport};

use super::local;
use super::manifest::{Limits, Manifest};
use super::wire::{self, CHANNEL, Error, ManifestReply, TAG_MANIFEST, TAG_SYNC, hex};

/// A directory read, hashed and signed, ready to serve.
#[derive(Debug, Clone)]
pub struct Published {
    /// The file list.
    pub manifest: Manifest,
    /// The encoded manifest reply (the same for every fetcher).
    pub manifest_reply: Bytes,
    /// The sync server over the manifest and the blocks.
    pub server: Server<Sha256>,
}

impl Published {
    /// Scans `dir` into blocks of `block_size` and signs the tree with `key`.
    pub fn new(
        dir: &Path,
        block_size: u32,
        limits: &Limits,
        key: &Ed25519Signer,
    ) -> Result<Self, Error> {
        let scanned = local::scan(dir, block_size, limits)?;
        for path in &scanned.skipped {
            tracing::warn!(path = %path.display(), "not served: a symlink, a special file or an unusable name");
        }
        let encoded = scanned.manifest.encode();
        if encoded.len() as u64 > limits.max_manifest_bytes {
            return Err(Error::TooLarge {
                what: "manifest (bytes)",
                got: encoded.len() as u64,
                limit: limits.max_manifest_bytes,
            });
        }
        let mut blocks = Vec::with_capacity(scanned.blocks.len() + 1);
        blocks.push(encoded.clone());
        blocks.extend(scanned.blocks);
        let server = Server::<Sha256>::new(blocks, key);
        let proof: InclusionProof = server.tree().inclusion_proof(0)?;
        let reply = ManifestReply::encode(server.signed_root(), &proof, &encoded);
        Ok(Self {
            manifest: scanned.manifest,
            manifest_reply: Bytes::from(reply),
            server,
        })
    }

    /// The signed root.
    pub fn signed_root(&self) -> &SignedRoot {
        self.server.signed_root()
    }
}

/// Settings of a serving process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeConfig {
    /// Most fetchers connected at once (handshakes included).
    pub max_connections: usize,
    /// A connection that completes no frame for this long is closed.
    pub idle_timeout: Duration,
    /// Fault injection for tests: flip a byte of every block whose index
    /// is a multiple of this (a disk that rotted after the tree was built).
    pub corrupt_every: Option<u64>,
    /// Fault injection for tests: wait this long before each block reply
    /// (a slow link).
    pub block_delay: Duration,
}

impl Default for ServeConfig {
    /// 256 connections, 30 s idle timeout, no faults.
    fn default() -> Self {
        Self {
            max_connections: 256,
            idle_timeout: Duration::from_secs(30),
            corrupt_every: None,
            block_delay: Duration::ZERO,
        }
    }
}

/// Binds `listen` and returns the transport, so a caller can print the
/// address before serving (`--listen 127.0.0.1:0`).
pub async fn bind(listen: SocketAddr, config: &ServeConfig) -> Result<TcpTransport, Error> {
    let tcp = wire::serve_tcp_config(config.max_connections, config.idle_timeout);
    TcpTransport::bind(wire::SERVER_ID, listen, tcp)
        .await
        .map_err(Error::io(format!("listen on {listen}")))
}

/// Per-fetcher state: its sync session and what it was sent.
struct Session {
    sender: Sender<Sha256, PeerId>,
    blocks: u64,
}

/// Serves `published` on `net` until `stop` resolves.
pub async fn serve(
    mut net: TcpTransport,
    published: Published,
    config: ServeConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let signed = published.signed_root();
    tracing::info!(
        addr = ?net.local_addr(),
        files = published.manifest.files().count(),
        blocks = published.manifest.total_blocks(),
        bytes = published.manifest.total_bytes(),
        block_size = published.manifest.block_size,
        root = %hex(&signed.root.0.0[..8]),
        "serving"
    );
    let mut replier = Replier::new(PatternLimits::default());
    let mut sessions: BTreeMap<PeerId, Session> = BTreeMap::new();
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            event = net.recv() => event?,
            () = &mut stop => break,
        };
        let (from, msg) = match event {
            NetEvent::Connected(peer) => {
                tracing::debug!(%peer, "fetcher connected");
                continue;
            }
            NetEvent::Disconnected(peer) => {
                if let Some(s) = sessions.remove(&peer) {
                    tracing::info!(%peer, blocks = s.blocks, "fetcher left");
                }
                continue;
            }
            NetEvent::Message { from, msg } => (from, msg),
            // Events a newer transport may add.
            _ => continue,
        };
        if msg.channel != CHANNEL {
            continue;
        }
        let Ok(wire) = Wire::from_frame(&msg) else {
            tracing::warn!(peer = %from, "malformed request/reply frame");
            continue;
        };
        replier.handle(from, wire);
        while let Some(ReplierEvent::Request { from, id, body }) = replier.poll_event() {
            let reply = match body.split_first() {
                Some((&TAG_MANIFEST, [])) => Some(published.manifest_reply.clone()),
                Some((&TAG_SYNC, rest)) => {
                    answer(&published, &mut sessions, from, rest, &config).await
                }
                _ => None,
            };
            match reply {
                Some(reply) => {
                    if let Err(e) = replier.reply(from, id, reply) {
                        tracing::warn!(peer = %from, "reply dropped: {e}");
                    }
                }
                None => {
                    tracing::warn!(peer = %from, "request refused");
                    replier.abandon(from, id);
                }
            }
        }
        while let Some((to, wire)) = replier.poll_transmit() {
            // A fetcher that left meanwhile: its replies go nowhere.
            if let Err(e) = net.send(to, wire.to_frame(CHANNEL)).await {
                tracing::debug!(peer = %to, "reply not sent: {e}");
            }
        }
    }
    net.shutdown().await;
    Ok(())
}

/// The reply to one sync request, or `None` if the session refuses it.
async fn answer(
    published: &Published,
    sessions: &mut BTreeMap<PeerId, Session>,
    from: PeerId,
    body: &[u8],
    config: &ServeConfig,
) -> Option<Bytes> {
    let request = Message::from_bytes(body).ok()?;
    let session = sessions.entry(from).or_insert_with(|| Session {
        sender: published.server.session(from),
        blocks: 0,
    });
    session.sender.handle(request).ok()?;
    let mut reply = session.sender.poll_transmit()?;
    if let Message::Blocks { blocks, .. } = &mut reply {
        session.blocks += blocks.len() as u64;
        if let Some(every) = config.corrupt_every.filter(|e| *e > 0) {
            for b in blocks.iter_mut().flatten().filter(|b| b.index % every == 0) {
                if let Some(byte) = b.data.first_mut() {
                    *byte ^= 0x01;
                }
            }
        }
        if !config.block_delay.is_zero() {
            tokio::time::sleep(config.block_delay).await;
        }
    }
    let mut out = vec![TAG_SYNC];
    out.extend_from_slice(&reply.to_bytes());
    Some(Bytes::from(out))
}
