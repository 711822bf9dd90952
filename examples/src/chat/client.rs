//! `chat client`: one multiplexed connection to a `chat server`, posts from
//! a stream of lines, the live feed displayed in causal order.
//!
//! - **Joining.** On every connect (the first, and each reconnect after the
//!   server or the network went away; the transport redials on its own) the
//!   client subscribes to the feed first, then asks the archive for every
//!   message its [`CausalBuffer`] has not delivered, page by page. Lines
//!   are posted only once the first catch-up is done: a client that reuses
//!   a name continues that name's sequence numbers after its messages in
//!   the archive.
//! - **Posting.** Each line becomes a message stamped with the buffer's
//!   [`broadcast`](CausalBuffer::broadcast) clock and a Snowflake id, and a
//!   request on [`POST`]; the server's reply is the
//!   acknowledgement, sent once the post is `fdatasync`ed. Up to
//!   [`ClientOptions::window`] posts are in flight; unacknowledged ones are
//!   re-sent (in order) after a timeout or a reconnect, and the server
//!   answers a retry as a duplicate.
//! - **Missing messages.** A feed message that has to wait for one the
//!   client never got (dropped while it was slow, or posted while it was
//!   away) triggers an archive fetch; so does a periodic sync
//!   ([`ClientOptions::sync_every`]), which catches a gap at the end.
//! - **Leaving.** When the lines end, the client waits (at most
//!   [`ClientOptions::linger`]) for its posts to be acknowledged, then
//!   closes its connection.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use quorate_clocks::{Admission, CausalBuffer, CausalError};
use quorate_ids::{ClockPolicy, Id, Layout, SystemClockGenerator, WorkerId};
use quorate_transport::patterns::mux::{Endpoint, Mux};
use quorate_transport::patterns::pubsub::Subscriber;
use quorate_transport::patterns::reqrep::{Requester, RequesterEvent};
use quorate_transport::patterns::{Limits, RequestId};
use quorate_transport::tcp::{PeerId, TcpTransport};
use quorate_transport::{Event as NetEvent, Transport};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::server::MAX_TEXT;
use super::{
    ARCHIVE, ArchiveRequest, ChatError, ChatMessage, Displayed, FEED, POST, PostStatus, SERVER,
    TOPIC, Via, decode_page, take_feed,
};

/// Settings of a client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The name to post under (unique among the clients running at once).
    pub name: String,
    /// The server.
    pub server: SocketAddr,
    /// Posts in flight at once.
    pub window: usize,
    /// How long a post or an archive request waits for its reply.
    pub request_timeout: Duration,
    /// How often to ask the archive for anything missed.
    pub sync_every: Duration,
    /// How long to wait for acknowledgements once the lines end.
    pub linger: Duration,
}

impl ClientOptions {
    /// Defaults for `name` at `server`: 32 posts in flight, 5 s request
    /// timeout, a sync every 5 s, 30 s to get the last posts acknowledged.
    pub fn new(name: impl Into<String>, server: SocketAddr) -> Self {
        ClientOptions {
            name: name.into(),
            server,
            window: 32,
            request_timeout: Duration::from_secs(5),
            sync_every: Duration::from_secs(5),
            linger: Duration::from_secs(30),
        }
    }
}

/// What a client did, when it ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientSummary {
    /// Lines posted and acknowledged.
    pub acknowledged: u64,
    /// Messages displayed (own posts included).
    pub displayed: u64,
    /// Of them, from the archive.
    pub from_archive: u64,
    /// Posts re-sent (timeouts, reconnects, gaps).
    pub resent: u64,
    /// Times the connection came up.
    pub connects: u64,
}

/// What woke the client loop.
enum Wake {
    Line(Option<String>),
    Net(
        Result<
            NetEvent<PeerId, quorate_transport::framing::Frame>,
            quorate_transport::tcp::TcpError,
        >,
    ),
    Timer,
}

struct Unacked {
    body: Bytes,
    request: Option<RequestId>,
}

struct Client<F> {
    options: ClientOptions,
    net: TcpTransport,
    mux: Mux<PeerId>,
    ids: SystemClockGenerator,
    buffer: CausalBuffer<String, (ChatMessage, Via)>,
    held: BTreeSet<Id>,
    connected: bool,
    fetch: Option<RequestId>,
    /// The first catch-up is done (posting may start).
    caught_up: bool,
    /// A fetch is wanted once the current one ends.
    refetch: bool,
    /// Fetches (chains of pages) started, and the last one finished.
    chains_started: u64,
    current_chain: u64,
    chains_done: u64,
    next_sync: Duration,
    unacked: BTreeMap<u64, Unacked>,
    in_flight: HashMap<RequestId, u64>,
    posted: bool,
    start: Instant,
    summary: ClientSummary,
    show: F,
}

/// A worker id for this process's Snowflake ids, from the name and pid.
fn worker_for(name: &str) -> WorkerId {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(name.as_bytes());
    h.write_u32(std::process::id());
    WorkerId::new(h.finish() % (Layout::SEED.max_worker() + 1))
}

impl<F: FnMut(&Displayed)> Client<F> {
    fn new(options: ClientOptions, show: F) -> Result<Self, ChatError> {
        let net = TcpTransport::client(
            PeerId(crate::kv_cluster::client::Client::random_id()),
            crate::kv_cluster::server::tcp_config(),
        );
        net.add_peer(SERVER, options.server);
        let limits = Limits::default().with_hwm(options.window.max(1) * 2);
        let mut mux = Mux::new();
        mux.add(ARCHIVE, Endpoint::Requester(Requester::new(limits)))?;
        mux.add(POST, Endpoint::Requester(Requester::new(limits)))?;
        let mut subscriber = Subscriber::new(Limits::default());
        subscriber.subscribe(Duration::ZERO, Bytes::from_static(TOPIC.as_bytes()))?;
        // The transport dials on the first frame: the subscription.
        subscriber.connect(Duration::ZERO, SERVER);
        mux.add(FEED, Endpoint::Subscriber(subscriber))?;
        let ids = SystemClockGenerator::new(
            Layout::SEED,
            worker_for(&options.name),
            ClockPolicy::WaitUntil,
        )?;
        Ok(Client {
            buffer: CausalBuffer::new(options.name.clone(), super::CAUSAL_CAPACITY),
            options,
            net,
            mux,
            ids,
            held: BTreeSet::new(),
            connected: false,
            fetch: None,
            caught_up: false,
            refetch: false,
            chains_started: 0,
            current_chain: 0,
            chains_done: 0,
            next_sync: Duration::ZERO,
            unacked: BTreeMap::new(),
            in_flight: HashMap::new(),
            posted: false,
            start: Instant::now(),
            summary: ClientSummary::default(),
            show,
        })
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Hands every frame to the transport; a full queue drops it (the
    /// request behind it times out and is retried).
    fn flush(&mut self) {
        while let Some((to, frame)) = self.mux.poll_transmit() {
            if let Err(error) = self.net.try_send(to, frame) {
                tracing::debug!(%error, "frame not sent");
            }
        }
    }

    fn on_connected(&mut self) {
        let now = self.now();
        self.connected = true;
        self.summary.connects += 1;
        tracing::info!(server = %self.options.server, "connected");
        if let Some(sub) = self.mux.subscriber_mut(FEED) {
            sub.connect(now, SERVER);
        }
        // The subscription goes out before the archive request (one
        // ordered connection): nothing falls between archive and feed.
        self.flush();
        self.start_fetch();
        self.resend();
    }

    fn on_disconnected(&mut self) {
        self.connected = false;
        tracing::info!(server = %self.options.server, "connection lost; redialing");
        self.mux.disconnect(SERVER);
        if let Some(req) = self.mux.requester_mut(ARCHIVE)
            && let Some(id) = self.fetch.take()
        {
            req.cancel(id);
        }
        if let Some(req) = self.mux.requester_mut(POST) {
            for (id, _) in self.in_flight.drain() {
                req.cancel(id);
            }
        }
        for u in self.unacked.values_mut() {
            u.request = None;
        }
    }

    fn request_page(&mut self, from: u64) {
        let now = self.now();
        let body = ArchiveRequest {
            since: self.buffer.delivered().clone(),
            from,
        }
        .to_bytes();
        let timeout = self.options.request_timeout;
        if let Some(req) = self.mux.requester_mut(ARCHIVE) {
            match req.request(now, SERVER, Bytes::from(body), timeout) {
                Ok(id) => self.fetch = Some(id),
                Err(error) => tracing::debug!(%error, "archive request not sent"),
            }
        }
    }

    fn start_fetch(&mut self) {
        if !self.connected {
            return;
        }
        if self.fetch.is_some() {
            self.refetch = true;
            return;
        }
        self.next_sync = self.now() + self.options.sync_every;
        self.chains_started += 1;
        self.current_chain = self.chains_started;
        self.request_page(0);
    }

    /// Sends every unacknowledged post that has no request out, in order.
    fn resend(&mut self) {
        if !self.connected {
            return;
        }
        let now = self.now();
        let timeout = self.options.request_timeout;
        let Some(req) = self.mux.requester_mut(POST) else {
            return;
        };
        for (&seq, u) in self.unacked.iter_mut() {
            if u.request.is_some() {
                continue;
            }
            match req.request(now, SERVER, u.body.clone(), timeout) {
                Ok(id) => {
                    u.request = Some(id);
                    self.in_flight.insert(id, seq);
                }
                Err(_) => break,
            }
        }
    }

    fn post(&mut self, text: String) -> Result<(), ChatError> {
        if text.len() > MAX_TEXT {
            tracing::warn!(
                len = text.len(),
                max = MAX_TEXT,
                "line too long for one message; not posted"
            );
            return Ok(());
        }
        self.posted = true;
        let clock = self.buffer.broadcast();
        let seq = clock.get(&self.options.name);
        let message = ChatMessage {
            id: self.ids.next()?,
            author: self.options.name.clone(),
            clock,
            text,
        };
        let body = Bytes::from(message.to_bytes());
        self.display(Displayed {
            message,
            via: Via::Local,
            waited: false,
        });
        self.unacked.insert(
            seq,
            Unacked {
                body,
                request: None,
            },
        );
        self.resend();
        Ok(())
    }

    fn display(&mut self, displayed: Displayed) {
        self.summary.displayed += 1;
        if displayed.via == Via::Archive {
            self.summary.from_archive += 1;
        }
        (self.show)(&displayed);
    }

    fn admit(&mut self, message: ChatMessage, via: Via) {
        if message.author == self.options.name {
            // Our own: from this run (already shown), or from an earlier
            // run under this name, found in the archive before we post.
            let seq = message.clock.get(&message.author);
            let mine = self.buffer.delivered().get(&self.options.name);
            if seq == mine + 1 && !self.posted {
                self.buffer.broadcast();
                self.display(Displayed {
                    message,
                    via,
                    waited: false,
                });
            }
            return;
        }
        let (author, clock, id) = (message.author.clone(), message.clock.clone(), message.id);
        match self.buffer.receive(author, clock, (message, via)) {
            Ok(Admission::Waiting) => {
                self.held.insert(id);
                tracing::debug!(%id, "message waits for its causes; asking the archive");
                self.start_fetch();
            }
            Ok(_) => {}
            // Depends on one of our old messages not yet seen, or the
            // buffer is full: the archive will bring it again.
            Err(CausalError::AheadOfLocal { .. } | CausalError::Full { .. }) => {
                self.start_fetch();
            }
            Err(error) => tracing::warn!(%id, %error, "message refused"),
        }
        while let Some(delivery) = self.buffer.poll_deliver() {
            let (message, via) = delivery.message;
            let waited = self.held.remove(&message.id);
            self.display(Displayed {
                message,
                via,
                waited,
            });
        }
    }

    fn drain(&mut self) -> Result<(), ChatError> {
        let mut archive_events = Vec::new();
        if let Some(req) = self.mux.requester_mut(ARCHIVE) {
            while let Some(event) = req.poll_event() {
                archive_events.push(event);
            }
        }
        for event in archive_events {
            match event {
                RequesterEvent::Reply { id, body, .. } if Some(id) == self.fetch => {
                    self.fetch = None;
                    let (messages, next, more) = decode_page(&body)?;
                    for message in messages {
                        self.admit(message, Via::Archive);
                    }
                    if more {
                        self.request_page(next);
                    } else {
                        self.chains_done = self.current_chain;
                        if !self.caught_up {
                            self.caught_up = true;
                            tracing::info!(
                                from_archive = self.summary.from_archive,
                                "caught up with the archive"
                            );
                        }
                        if std::mem::take(&mut self.refetch) {
                            self.start_fetch();
                        }
                    }
                }
                RequesterEvent::TimedOut { id } if Some(id) == self.fetch => {
                    self.fetch = None;
                    self.start_fetch();
                }
                _ => {}
            }
        }
        let mut post_events = Vec::new();
        if let Some(req) = self.mux.requester_mut(POST) {
            while let Some(event) = req.poll_event() {
                post_events.push(event);
            }
        }
        for event in post_events {
            let (id, status) = match event {
                RequesterEvent::Reply { id, body, .. } => (id, PostStatus::from_byte(&body)),
                RequesterEvent::TimedOut { id } => (id, None),
                _ => continue,
            };
            let Some(seq) = self.in_flight.remove(&id) else {
                continue;
            };
            match status {
                Some(PostStatus::Stored | PostStatus::Duplicate) => {
                    self.unacked.remove(&seq);
                    self.summary.acknowledged += 1;
                }
                Some(PostStatus::Conflict) => {
                    return Err(ChatError::NameTaken(self.options.name.clone()));
                }
                Some(PostStatus::Invalid) => return Err(ChatError::Refused { seq }),
                // A timeout, or an earlier post not stored yet: again.
                Some(PostStatus::Gap) | None => {
                    self.summary.resent += 1;
                    if let Some(u) = self.unacked.get_mut(&seq) {
                        u.request = None;
                    }
                }
            }
        }
        for body in take_feed(&mut self.mux) {
            match ChatMessage::from_bytes(&body) {
                Ok(message) => self.admit(message, Via::Feed),
                // The archive has it.
                Err(error) => tracing::warn!(%error, "malformed feed message dropped"),
            }
        }
        if self.connected && self.fetch.is_none() && self.now() >= self.next_sync {
            self.start_fetch();
        }
        self.resend();
        Ok(())
    }

    async fn run(mut self, mut lines: mpsc::Receiver<String>) -> Result<ClientSummary, ChatError> {
        self.flush();
        let mut lines_open = true;
        let mut give_up: Option<Duration> = None;
        // The fetch that must finish before leaving: one started after the
        // input ended, so the screen ends with what the archive holds.
        let mut last_chain = u64::MAX;
        let outcome = loop {
            self.flush();
            if !lines_open
                && self.caught_up
                && self.unacked.is_empty()
                && self.chains_done >= last_chain
            {
                break Ok(());
            }
            let now = self.now();
            if let Some(deadline) = give_up
                && now >= deadline
            {
                break Err(ChatError::Unacknowledged {
                    posts: self.unacked.len(),
                    waited: self.options.linger,
                });
            }
            let mut wake = self
                .mux
                .poll_timeout()
                .unwrap_or(now + Duration::from_secs(1))
                .min(self.next_sync.max(now));
            if let Some(deadline) = give_up {
                wake = wake.min(deadline);
            }
            let room = self.caught_up && self.unacked.len() < self.options.window;
            let woke = {
                let net = &mut self.net;
                tokio::select! {
                    line = lines.recv(), if lines_open && room => Wake::Line(line),
                    event = net.recv() => Wake::Net(event),
                    _ = tokio::time::sleep_until(self.start + wake) => Wake::Timer,
                }
            };
            match woke {
                Wake::Line(Some(line)) => {
                    if let Err(e) = self.post(line) {
                        break Err(e);
                    }
                }
                Wake::Line(None) => {
                    lines_open = false;
                    give_up = Some(self.now() + self.options.linger);
                    let deferred = self.fetch.is_some() || !self.connected;
                    self.start_fetch();
                    last_chain = self.chains_started + u64::from(deferred);
                }
                Wake::Net(Ok(NetEvent::Connected(SERVER))) => self.on_connected(),
                Wake::Net(Ok(NetEvent::Disconnected(SERVER))) => self.on_disconnected(),
                Wake::Net(Ok(NetEvent::Message { from, msg })) => {
                    let now = self.now();
                    if let Err(error) = self.mux.handle(now, from, &msg) {
                        tracing::debug!(%error, "frame refused");
                    }
                }
                Wake::Net(Ok(_)) | Wake::Timer => {}
                Wake::Net(Err(e)) => break Err(e.into()),
            }
            let now = self.now();
            self.mux.handle_timeout(now);
            if let Err(e) = self.drain() {
                break Err(e);
            }
        };
        self.flush();
        self.net.shutdown().await;
        outcome.map(|()| self.summary)
    }
}

/// Runs a client: posts every line from `lines`, calls `show` for every
/// message displayed (own posts, feed, archive) in causal order, and
/// returns once `lines` has ended and every post is acknowledged (an error
/// if that takes longer than [`ClientOptions::linger`]).
pub async fn run(
    options: ClientOptions,
    lines: mpsc::Receiver<String>,
    show: impl FnMut(&Displayed),
) -> Result<ClientSummary, ChatError> {
    Client::new(options, show)?.run(lines).await
}
