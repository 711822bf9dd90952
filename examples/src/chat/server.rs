//! The chat server: one task that owns the archive and the [`Mux`] of
//! every client connection (archive and posts by request/reply, the feed
//! by pub/sub), what `chat server` and the scripted demo run.
//!
//! **Posts are acknowledged.** Push/pull has no reply (the notes: "the
//! client does not expect a response"), so a push lost with its connection
//! would be lost silently. Posts are therefore requests on [`POST`]: the
//! server appends every post of a batch to the [`Archive`], `fdatasync`s
//! once, then replies [`PostStatus::Stored`] to each (the ack) and
//! publishes them on the feed. A retried post is answered
//! [`PostStatus::Duplicate`], so retries are safe.
//!
//! **Slow subscribers are dropped from, not waited for.** Frames go to the
//! transport with [`try_send`](TcpTransport::try_send): each client
//! connection has an outgoing queue bounded by [`HWM_FRAMES`] frames and
//! [`HWM_BYTES`] bytes (its high-water mark). A client that stops reading
//! fills it; beyond it the server **drops** what it would have sent that
//! client (feed messages, and replies, which its requests' timeouts
//! retry), counts it ([`ServerStats::feed_dropped`],
//! [`ServerStats::replies_dropped`]) and logs it once per episode. The
//! client keeps its connection: when it reads again, the gap in its vector
//! clocks (or its periodic sync) makes it fetch what it missed from the
//! archive. Nobody else waits, and the server holds at most the mark for it.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use quorate_transport::Event as NetEvent;
use quorate_transport::patterns::mux::{Endpoint, Mux};
use quorate_transport::patterns::pubsub::Publisher;
use quorate_transport::patterns::reqrep::{Replier, ReplierEvent};
use quorate_transport::patterns::{Limits, RequestId};
use quorate_transport::tcp::{PeerId, TcpConfig, TcpError, TcpTransport};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::archive::{Appended, Archive};
use super::{
    ARCHIVE, ArchiveRequest, ChatError, ChatMessage, FEED, POST, PostStatus, TOPIC, encode_page,
};

/// Frames one client's outgoing queue may hold (its high-water mark).
pub const HWM_FRAMES: usize = 256;
/// Bytes one client's outgoing queue may hold (its high-water mark).
pub const HWM_BYTES: usize = 1024 * 1024;
/// The largest frame a client may send: a post or an archive request.
pub const CLIENT_MAX_FRAME: usize = 64 * 1024;
/// The longest text a post may have.
pub const MAX_TEXT: usize = 16 * 1024;
/// Messages in one archive reply.
pub const PAGE_MESSAGES: usize = 512;
/// Bytes of messages in one archive reply (about).
pub const PAGE_BYTES: usize = 256 * 1024;
/// Events the server's receiving task may hand over ahead of its loop.
const SERVER_EVENTS: usize = 256;
/// Events the loop takes before it syncs and answers a batch.
const BATCH_EVENTS: usize = 256;

/// The transport settings of `chat server`: kv-cluster's node settings
/// (connection cap, hello and idle timeouts, partial-frame budget, every
/// connection a client of its own) with the chat's per-client high-water
/// mark and frame limit.
pub fn tcp_config() -> TcpConfig {
    TcpConfig {
        peer_queue: HWM_FRAMES,
        peer_queue_bytes: HWM_BYTES,
        client_max_frame: CLIENT_MAX_FRAME,
        ..crate::kv_cluster::server::tcp_config()
    }
}

/// What the server has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Client connections open.
    pub clients: usize,
    /// Subscribers to the feed.
    pub subscribers: usize,
    /// Messages in the archive.
    pub archived: usize,
    /// Posts stored since start.
    pub stored: u64,
    /// Posts answered as duplicates (retries).
    pub duplicates: u64,
    /// Posts refused (conflict, gap, invalid).
    pub refused: u64,
    /// Feed messages dropped for clients at their high-water mark.
    pub feed_dropped: u64,
    /// Replies dropped for clients at their high-water mark.
    pub replies_dropped: u64,
    /// Times a client reached its high-water mark.
    pub slow_episodes: u64,
}

#[derive(Debug, Default)]
struct ClientState {
    /// At its high-water mark: dropping until a send succeeds again.
    lagging: bool,
    /// Frames dropped for it in the current episode.
    dropped_now: u64,
    /// Frames dropped for it in all.
    dropped: u64,
    /// The name it posts under, once seen.
    name: Option<String>,
}

/// The server loop.
struct Server {
    net: quorate_transport::tcp::TcpSender,
    mux: Mux<PeerId>,
    archive: Archive,
    clients: HashMap<PeerId, ClientState>,
    stats: ServerStats,
    start: Instant,
}

impl Server {
    fn new(net: quorate_transport::tcp::TcpSender, archive: Archive) -> Result<Self, ChatError> {
        let mut mux: Mux<PeerId> = Mux::new();
        mux.add(ARCHIVE, Endpoint::Replier(Replier::new(Limits::default())))?;
        mux.add(POST, Endpoint::Replier(Replier::new(Limits::default())))?;
        mux.add(FEED, Endpoint::Publisher(Publisher::new(Limits::default())))?;
        let stats = ServerStats {
            archived: archive.len(),
            ..ServerStats::default()
        };
        Ok(Server {
            net,
            mux,
            archive,
            clients: HashMap::new(),
            stats,
            start: Instant::now(),
        })
    }

    /// Hands every outbound frame to the transport without waiting.
    fn flush(&mut self) {
        while let Some((to, frame)) = self.mux.poll_transmit() {
            let feed = frame.channel == FEED;
            match self.net.try_send(to, frame) {
                Ok(()) => {
                    if let Some(c) = self.clients.get_mut(&to)
                        && c.lagging
                    {
                        c.lagging = false;
                        tracing::info!(
                            client = %to,
                            name = c.name.as_deref().unwrap_or("?"),
                            dropped = c.dropped_now,
                            "client reads again; it catches up on what was dropped from the archive"
                        );
                        c.dropped_now = 0;
                    }
                }
                Err(TcpError::Full { .. } | TcpError::FullBytes { .. }) => {
                    if feed {
                        self.stats.feed_dropped += 1;
                    } else {
                        self.stats.replies_dropped += 1;
                    }
                    let c = self.clients.entry(to).or_default();
                    c.dropped += 1;
                    c.dropped_now += 1;
                    if !c.lagging {
                        c.lagging = true;
                        self.stats.slow_episodes += 1;
                        tracing::warn!(
                            client = %to,
                            name = c.name.as_deref().unwrap_or("?"),
                            hwm_frames = HWM_FRAMES,
                            hwm_bytes = HWM_BYTES,
                            "client's outgoing queue is at its high-water mark: dropping what it would be sent until it reads again"
                        );
                    }
                }
                // The client left meanwhile; its Disconnected event follows.
                Err(_) => {}
            }
        }
    }

    fn on_event(&mut self, event: NetEvent<PeerId, quorate_transport::framing::Frame>) {
        let now = self.start.elapsed();
        match event {
            NetEvent::Connected(peer) => {
                self.clients.insert(peer, ClientState::default());
                self.stats.clients = self.clients.len();
                tracing::info!(client = %peer, clients = self.clients.len(), "client connected");
            }
            NetEvent::Disconnected(peer) => {
                self.mux.disconnect(peer);
                let state = self.clients.remove(&peer).unwrap_or_default();
                self.stats.clients = self.clients.len();
                tracing::info!(
                    client = %peer,
                    name = state.name.as_deref().unwrap_or("?"),
                    dropped = state.dropped,
                    clients = self.clients.len(),
                    "client left"
                );
            }
            NetEvent::Message { from, msg } => {
                if let Err(error) = self.mux.handle(now, from, &msg) {
                    tracing::debug!(client = %from, %error, "frame refused");
                }
            }
            // Events a newer transport may add.
            _ => {}
        }
    }

    /// Stores the batch's posts with one sync, then acks and publishes them.
    fn posts(&mut self) -> Result<(), ChatError> {
        let mut requests = Vec::new();
        if let Some(replier) = self.mux.replier_mut(POST) {
            while let Some(ReplierEvent::Request { from, id, body }) = replier.poll_event() {
                requests.push((from, id, body));
            }
        }
        if requests.is_empty() {
            return Ok(());
        }
        let mut answers: Vec<(PeerId, RequestId, PostStatus, Option<Bytes>)> = Vec::new();
        for (from, id, body) in requests {
            let message = match ChatMessage::from_bytes(&body) {
                Ok(m) if m.text.len() <= MAX_TEXT => m,
                _ => {
                    answers.push((from, id, PostStatus::Invalid, None));
                    continue;
                }
            };
            let status = match self.archive.append(&message) {
                Appended::Stored => PostStatus::Stored,
                Appended::Duplicate => PostStatus::Duplicate,
                Appended::Conflict => PostStatus::Conflict,
                Appended::Gap => PostStatus::Gap,
                Appended::Invalid => PostStatus::Invalid,
            };
            if let Some(c) = self.clients.get_mut(&from)
                && c.name.is_none()
            {
                tracing::info!(client = %from, name = %message.author, "client posts as");
                c.name = Some(message.author.clone());
            }
            let publish = (status == PostStatus::Stored).then_some(body);
            answers.push((from, id, status, publish));
        }
        // Durable before anyone hears of it.
        self.archive.sync()?;
        self.stats.archived = self.archive.len();
        for (from, id, status, publish) in answers {
            match status {
                PostStatus::Stored => self.stats.stored += 1,
                PostStatus::Duplicate => self.stats.duplicates += 1,
                _ => {
                    self.stats.refused += 1;
                    tracing::info!(client = %from, ?status, "post refused");
                }
            }
            if let Some(replier) = self.mux.replier_mut(POST) {
                // A reply to a request the replier already gave up on.
                let _ = replier.reply(from, id, Bytes::from(vec![status as u8]));
            }
            if let Some(body) = publish
                && let Some(publisher) = self.mux.publisher_mut(FEED)
            {
                // Drop policy is per client in `flush`; the publisher's
                // own queues are emptied into the transport at once.
                let _ = publisher.publish(Bytes::from_static(TOPIC.as_bytes()), body);
            }
            self.flush();
        }
        Ok(())
    }

    fn archive_requests(&mut self) -> Result<(), ChatError> {
        let mut requests = Vec::new();
        if let Some(replier) = self.mux.replier_mut(ARCHIVE) {
            while let Some(ReplierEvent::Request { from, id, body }) = replier.poll_event() {
                requests.push((from, id, body));
            }
        }
        for (from, id, body) in requests {
            let Ok(request) = ArchiveRequest::from_bytes(&body) else {
                if let Some(replier) = self.mux.replier_mut(ARCHIVE) {
                    replier.abandon(from, id);
                }
                continue;
            };
            let page =
                self.archive
                    .page(&request.since, request.from, PAGE_MESSAGES, PAGE_BYTES)?;
            if let Some(replier) = self.mux.replier_mut(ARCHIVE) {
                let _ = replier.reply(from, id, Bytes::from(encode_page(&page)));
            }
            self.flush();
        }
        Ok(())
    }

    fn publish_stats(&mut self, stats: &watch::Sender<ServerStats>) {
        if let Some(p) = self.mux.publisher_mut(FEED) {
            self.stats.subscribers = p.subscribers();
        }
        let now = self.stats;
        stats.send_if_modified(|s| std::mem::replace(s, now) != now);
    }
}

/// Serves chat clients on `net` from `archive` until `stop` completes (or
/// the transport fails); returns the final counters. `stats` follows them.
pub async fn serve(
    net: TcpTransport,
    archive: Archive,
    stop: impl Future<Output = ()>,
    stats: watch::Sender<ServerStats>,
) -> Result<ServerStats, ChatError> {
    let (net, mut inbound) = net.into_split();
    let (events_tx, mut events) = mpsc::channel(SERVER_EVENTS);
    let receiver = tokio::spawn(async move {
        // `recv` fails only once the transport is shut down.
        while let Ok(event) = inbound.recv().await {
            if events_tx.send(event).await.is_err() {
                break;
            }
        }
    });
    let mut server = Server::new(net.clone(), archive)?;
    server.publish_stats(&stats);
    tokio::pin!(stop);
    let outcome = loop {
        server.flush();
        let wake = server.mux.poll_timeout().unwrap_or(Duration::from_secs(1));
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => {
                    server.on_event(event);
                    // Take what else is waiting, so one sync covers a batch.
                    for _ in 1..BATCH_EVENTS {
                        match events.try_recv() {
                            Ok(event) => server.on_event(event),
                            Err(_) => break,
                        }
                    }
                }
                None => break Err(ChatError::Transport(TcpError::Shutdown)),
            },
            _ = tokio::time::sleep_until(server.start + wake) => {}
            _ = &mut stop => break Ok(()),
        }
        let now = server.start.elapsed();
        server.mux.handle_timeout(now);
        if let Err(e) = server.posts() {
            break Err(e);
        }
        if let Err(e) = server.archive_requests() {
            break Err(e);
        }
        server.publish_stats(&stats);
    };
    net.shutdown().await;
    receiver.abort();
    let final_stats = server.stats;
    tracing::info!(?final_stats, "chat server stopped");
    outcome.map(|()| final_stats)
}
