//! The course notes' chat protocol on one TCP connection per client.
//!
//! The notes' naive design needs three sockets per client: REQUEST to fetch
//! the archive, PUSH to post, SUB for the live feed (and REPLY, PULL and PUB
//! on the server). Here the three patterns of `quorate-transport` share one
//! connection through its [`Mux`], one channel each:
//!
//! | channel | client | server | carries |
//! | --- | --- | --- | --- |
//! | 1 | [`Requester`] | [`Replier`] | "what I lack since this clock" -> archived messages |
//! | 2 | [`Requester`] | [`Replier`] | new posts -> the ack, once archived |
//! | 3 | [`Subscriber`] | [`Publisher`] | the live feed, topic `room/lobby` |
//!
//! The notes put posts on push/pull, which has no reply: a push lost with
//! its connection is lost silently. Posts here are requests instead, and
//! the reply is the acknowledgement, sent once the post is in the
//! [`archive`] and `fdatasync`ed ([`server`] says more).
//!
//! Every message carries a Snowflake id (`quorate-ids`) and its author's
//! vector clock (`quorate-clocks`); each client displays messages through a
//! [`CausalBuffer`], so a reply is never shown before the message it answers,
//! even when it arrives on the feed before the archive reply that holds its
//! cause (which is what happens to a client catching up after a reconnect).
//!
//! The server ([`server::serve`]) receives in one task and sends from
//! another, on the two halves of its [`TcpTransport`]
//! ([`TcpTransport::into_split`]), and never waits for a slow client: each
//! client's outgoing queue has a high-water mark, beyond which what it
//! would be sent is dropped and counted, and the client catches up from
//! the archive.
//!
//! The program's default ([`run`]) is a scripted conversation between
//! `alice`, `bob` and `carol` on 127.0.0.1 with an in-memory archive;
//! carol drops her connection mid-conversation, reconnects and catches up
//! from the archive. `chat server` ([`server`], with a durable
//! [`archive::Archive`]) and `chat client` ([`client`]) are the same
//! protocol across terminals and machines.

pub mod archive;
pub mod client;
pub mod server;

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use quorate_clocks::{CausalBuffer, VectorClock};
use quorate_ids::{ClockPolicy, Id, Layout, SystemClockGenerator, WorkerId};
use quorate_transport::framing::ChannelId;
use quorate_transport::patterns::mux::{Endpoint, Mux};
use quorate_transport::patterns::pubsub::Subscriber;
use quorate_transport::patterns::reqrep::{Requester, RequesterEvent};
use quorate_transport::patterns::{Limits, RequestId};
use quorate_transport::tcp::{PeerId, TcpError, TcpTransport};
use quorate_transport::{Event as NetEvent, Transport};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

#[cfg(doc)]
use quorate_transport::patterns::{pubsub::Publisher, reqrep::Replier};

/// Archive requests and replies.
pub const ARCHIVE: ChannelId = ChannelId(1);
/// Posts from clients to the server.
pub const POST: ChannelId = ChannelId(2);
/// The live feed from the server to clients.
pub const FEED: ChannelId = ChannelId(3);
/// The one room of the example.
pub const TOPIC: &str = "room/lobby";
/// The server's transport id.
pub const SERVER: PeerId = PeerId(1);
/// How long any scripted step may take before the run fails. Generous: a
/// loaded CI box is slow, and a healthy run needs milliseconds.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an archive request may wait for its reply.
const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Messages that may wait in a causal buffer for their causes.
const CAUSAL_CAPACITY: usize = 1024;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Socket setup failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The transport refused a frame.
    #[error("transport: {0}")]
    Transport(#[from] TcpError),
    /// A pattern queue was full.
    #[error("messaging pattern: {0}")]
    Pattern(#[from] quorate_transport::patterns::Error),
    /// A frame named no channel of ours or was not a pattern message.
    #[error("mux: {0}")]
    Mux(#[from] quorate_transport::patterns::mux::MuxError),
    /// A chat message or archive did not decode.
    #[error("malformed {what}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
    },
    /// The id generator refused (clock out of the layout's range).
    #[error("ids: {0}")]
    Ids(#[from] quorate_ids::IdError),
    /// A message's clock was refused by the causal buffer.
    #[error("causal buffer: {0}")]
    Causal(#[from] quorate_clocks::CausalError),
    /// A scripted step did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// A client task ended early.
    #[error("client {0} stopped")]
    ClientGone(String),
    /// The archive failed (the server stops: it cannot acknowledge posts).
    #[error("archive: {0}")]
    Archive(#[from] archive::ArchiveError),
    /// Another client posts under this name.
    #[error("the server holds other messages under the name {0:?}: another client uses it")]
    NameTaken(String),
    /// The server refused a post as invalid.
    #[error("the server refused post {seq} as invalid")]
    Refused {
        /// Its sequence number (the author's clock entry).
        seq: u64,
    },
    /// The client's input ended, and after waiting this long posts were
    /// still unacknowledged or the last archive fetch unanswered.
    #[error(
        "gave up {waited:?} after the input ended: {posts} post(s) unacknowledged, or the archive not fetched"
    )]
    Unacknowledged {
        /// How many.
        posts: usize,
        /// How long the client waited once its input ended.
        waited: Duration,
    },
}

/// The server's answer to a post (one byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PostStatus {
    /// Archived and synced: the acknowledgement.
    Stored = 0,
    /// Already archived (a retry): also an acknowledgement.
    Duplicate = 1,
    /// The name's sequence number is taken by another message.
    Conflict = 2,
    /// The author's previous post is not archived yet; send it first.
    Gap = 3,
    /// Malformed, too long, or no clock entry for its author.
    Invalid = 4,
}

impl PostStatus {
    /// Decodes a reply; `None` for anything else.
    pub fn from_byte(body: &[u8]) -> Option<Self> {
        match body {
            [0] => Some(Self::Stored),
            [1] => Some(Self::Duplicate),
            [2] => Some(Self::Conflict),
            [3] => Some(Self::Gap),
            [4] => Some(Self::Invalid),
            _ => None,
        }
    }
}

/// A request to the archive: the messages `since` does not cover, from
/// archive position `from` on (0: wherever the first one is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveRequest {
    /// What the client has delivered.
    pub since: VectorClock<String>,
    /// Where to continue (a previous page's `next`).
    pub from: u64,
}

impl ArchiveRequest {
    /// Wire form: `from` (u64 LE), then the clock.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.from.to_le_bytes().to_vec();
        out.extend_from_slice(&self.since.to_bytes());
        out
    }

    /// Decodes [`to_bytes`](Self::to_bytes) output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ChatError> {
        let mut r = Reader { bytes };
        let from = r.u64("archive request")?;
        let since = VectorClock::from_bytes(r.bytes).map_err(|_| ChatError::Malformed {
            what: "archive request clock",
        })?;
        Ok(Self { since, from })
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Snowflake id: unique, and sorts by creation time.
    pub id: Id,
    /// Who wrote it.
    pub author: String,
    /// The author's vector clock when posting: what it had seen.
    pub clock: VectorClock<String>,
    /// The text.
    pub text: String,
}

/// A reader over untrusted bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], ChatError> {
        if self.bytes.len() < len {
            return Err(ChatError::Malformed { what });
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, ChatError> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(raw))
    }

    fn u32(&mut self, what: &'static str) -> Result<usize, ChatError> {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(self.take(4, what)?);
        usize::try_from(u32::from_le_bytes(raw)).map_err(|_| ChatError::Malformed { what })
    }

    fn chunk(&mut self, what: &'static str) -> Result<&'a [u8], ChatError> {
        let len = self.u32(what)?;
        self.take(len, what)
    }
}

fn put_chunk(out: &mut Vec<u8>, chunk: &[u8]) {
    // Chat messages are small; a chunk over 4 GiB cannot be built here.
    let len = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(chunk);
}

impl ChatMessage {
    /// Wire form: id (u64 LE), then length-prefixed clock and author, then the text.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.id.to_u64().to_le_bytes());
        put_chunk(&mut out, &self.clock.to_bytes());
        put_chunk(&mut out, self.author.as_bytes());
        out.extend_from_slice(self.text.as_bytes());
        out
    }

    /// Decodes [`to_bytes`](Self::to_bytes) output; anything else is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ChatError> {
        let mut r = Reader { bytes };
        let id = Id::from_u64(r.u64("message id")?);
        let clock = VectorClock::from_bytes(r.chunk("message clock")?).map_err(|_| {
            ChatError::Malformed {
                what: "message clock",
            }
        })?;
        let author = String::from_utf8(r.chunk("author")?.to_vec())
            .map_err(|_| ChatError::Malformed { what: "author" })?;
        let text = String::from_utf8(r.bytes.to_vec())
            .map_err(|_| ChatError::Malformed { what: "text" })?;
        Ok(Self {
            id,
            author,
            clock,
            text,
        })
    }
}

/// An archive reply: `next` (u64 LE), `more` (u8), the message count
/// (u32 LE), then each message length-prefixed.
pub fn encode_page(page: &archive::Page) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&page.next.to_le_bytes());
    out.push(u8::from(page.more));
    let count = u32::try_from(page.messages.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_le_bytes());
    for m in &page.messages {
        put_chunk(&mut out, m);
    }
    out
}

/// Decodes [`encode_page`] output: the messages, `next` and `more`.
pub fn decode_page(bytes: &[u8]) -> Result<(Vec<ChatMessage>, u64, bool), ChatError> {
    let mut r = Reader { bytes };
    let next = r.u64("archive page")?;
    let more = r.take(1, "archive page")?[0] != 0;
    let count = r.u32("archive page")?;
    // Never allocate on a claimed count: each message needs at least 16 bytes.
    let mut out = Vec::with_capacity(count.min(bytes.len() / 16));
    for _ in 0..count {
        out.push(ChatMessage::from_bytes(r.chunk("archive entry")?)?);
    }
    Ok((out, next, more))
}

/// Every message the feed's subscriber on `mux` received, in order.
fn take_feed(mux: &mut Mux<PeerId>) -> Vec<Bytes> {
    let mut feed = Vec::new();
    if let Some(sub) = mux.subscriber_mut(FEED) {
        while let Some(published) = sub.poll_event() {
            feed.push(published.body);
        }
    }
    feed
}

/// How a displayed message reached the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The client wrote it.
    Local,
    /// The live feed.
    Feed,
    /// The archive, while catching up.
    Archive,
}

/// A message as a client displayed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Displayed {
    /// The message.
    pub message: ChatMessage,
    /// How it arrived.
    pub via: Via,
    /// Whether it waited in the causal buffer for a message it depends on.
    pub waited: bool,
}

impl fmt::Display for Displayed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.message;
        let via = match self.via {
            Via::Local => "sent   ",
            Via::Feed => "feed   ",
            Via::Archive => "archive",
        };
        write!(
            f,
            "{via} {:<26} {:<6} {}{}",
            m.clock.to_string(),
            format!("{}:", m.author),
            m.text,
            if self.waited {
                "   (held until its cause arrived)"
            } else {
                ""
            }
        )
    }
}

/// What a client reports to the script.
#[derive(Debug, Clone, Default)]
struct Status {
    displayed: usize,
    joined: bool,
    connected: bool,
    held: usize,
}

/// Commands from the script to a client task.
#[derive(Debug)]
enum Command {
    Post(String),
    Leave,
    Connect,
    FetchArchive,
    Quit,
}

/// What woke a client task.
#[derive(Debug)]
enum Wake {
    Command(Option<Command>),
    Net(NetEvent<PeerId, quorate_transport::framing::Frame>),
    Timer,
}

/// The shared timeline of the run.
#[derive(Debug, Clone, Default)]
struct Timeline {
    start: Option<std::time::Instant>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Timeline {
    fn log(&self, line: impl Into<String>) {
        let ms = self.start.map(|s| s.elapsed().as_millis()).unwrap_or(0);
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines.push(format!("[{ms:>5} ms] {}", line.into()));
    }

    fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One chat client: its causal buffer and id generator outlive connections.
struct Client {
    name: String,
    server_addr: std::net::SocketAddr,
    /// Transport id of the current connection (a new one per connection).
    session: u64,
    ids: SystemClockGenerator,
    buffer: CausalBuffer<String, (ChatMessage, Via)>,
    /// Ids of messages that waited in the buffer for a cause.
    held: std::collections::BTreeSet<Id>,
    net: Option<TcpTransport>,
    mux: Mux<PeerId>,
    archive_request: Option<RequestId>,
    start: Instant,
    displayed: Vec<Displayed>,
    status: watch::Sender<Status>,
    timeline: Timeline,
}

impl Client {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn client_mux() -> Result<Mux<PeerId>, ChatError> {
        let mut mux = Mux::new();
        mux.add(
            ARCHIVE,
            Endpoint::Requester(Requester::new(Limits::default())),
        )?;
        mux.add(POST, Endpoint::Requester(Requester::new(Limits::default())))?;
        mux.add(
            FEED,
            Endpoint::Subscriber(Subscriber::new(Limits::default())),
        )?;
        Ok(mux)
    }

    async fn flush(&mut self) -> Result<(), ChatError> {
        let Some(net) = &self.net else { return Ok(()) };
        while let Some((to, frame)) = self.mux.poll_transmit() {
            net.send(to, frame).await?;
        }
        Ok(())
    }

    /// Connects and subscribes to the feed. Ask the archive only after
    /// this: the subscription then reaches the server first (one ordered
    /// connection), so no message falls between archive and feed.
    async fn connect(&mut self) -> Result<(), ChatError> {
        self.session += 1;
        let net = TcpTransport::client(PeerId(self.session), server::tcp_config());
        net.add_peer(SERVER, self.server_addr);
        self.net = Some(net);
        self.mux = Self::client_mux()?;
        self.status.send_modify(|s| {
            s.joined = false;
            s.connected = true;
        });
        let now = self.now();
        if let Some(sub) = self.mux.subscriber_mut(FEED) {
            sub.connect(now, SERVER);
            sub.subscribe(now, Bytes::from_static(TOPIC.as_bytes()))?;
        }
        self.flush().await
    }

    /// Asks the archive for every message not yet delivered here.
    async fn fetch_archive(&mut self) -> Result<(), ChatError> {
        let now = self.now();
        let since = ArchiveRequest {
            since: self.buffer.delivered().clone(),
            from: 0,
        };
        if let Some(req) = self.mux.requester_mut(ARCHIVE) {
            let id = req.request(now, SERVER, Bytes::from(since.to_bytes()), ARCHIVE_TIMEOUT)?;
            self.archive_request = Some(id);
        }
        self.flush().await
    }

    async fn leave(&mut self) {
        if let Some(net) = self.net.take() {
            net.shutdown().await;
        }
        self.mux.disconnect(SERVER);
        self.status.send_modify(|s| s.connected = false);
        self.timeline
            .log(format!("{}: connection closed", self.name));
    }

    async fn post(&mut self, text: String) -> Result<(), ChatError> {
        let clock = self.buffer.broadcast();
        let message = ChatMessage {
            id: self.ids.next()?,
            author: self.name.clone(),
            clock,
            text,
        };
        // The script waits on what others display, so it needs no ack.
        let now = self.now();
        if let Some(req) = self.mux.requester_mut(POST) {
            req.request(
                now,
                SERVER,
                Bytes::from(message.to_bytes()),
                ARCHIVE_TIMEOUT,
            )?;
        }
        self.show(Displayed {
            message,
            via: Via::Local,
            waited: false,
        });
        self.flush().await
    }

    fn show(&mut self, displayed: Displayed) {
        self.displayed.push(displayed);
        let count = self.displayed.len();
        self.status.send_modify(|s| s.displayed = count);
    }

    fn admit(&mut self, message: ChatMessage, via: Via) -> Result<(), ChatError> {
        let (author, clock) = (message.author.clone(), message.clock.clone());
        let id = message.id;
        let admission = self.buffer.receive(author, clock, (message, via))?;
        if admission == quorate_clocks::Admission::Waiting {
            self.held.insert(id);
            self.timeline.log(format!(
                "{}: message {id} arrived before its cause; held in the causal buffer",
                self.name
            ));
            self.status.send_modify(|s| s.held += 1);
        }
        while let Some(delivery) = self.buffer.poll_deliver() {
            let (message, via) = delivery.message;
            let waited = self.held.remove(&message.id);
            self.show(Displayed {
                message,
                via,
                waited,
            });
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<(), ChatError> {
        let mut archived = None;
        if let Some(req) = self.mux.requester_mut(ARCHIVE) {
            while let Some(event) = req.poll_event() {
                match event {
                    RequesterEvent::Reply { id, body, .. } if Some(id) == self.archive_request => {
                        archived = Some(body);
                    }
                    RequesterEvent::TimedOut { .. } => {
                        return Err(ChatError::Timeout("an archive reply".into()));
                    }
                    // Late replies, and events a newer transport may add.
                    _ => {}
                }
            }
        }
        if let Some(req) = self.mux.requester_mut(POST) {
            while req.poll_event().is_some() {}
        }
        for body in take_feed(&mut self.mux) {
            // A garbled feed message is dropped, not fatal: the archive has it.
            match ChatMessage::from_bytes(&body) {
                Ok(message) => self.admit(message, Via::Feed)?,
                Err(error) => self
                    .timeline
                    .log(format!("{}: dropped feed message: {error}", self.name)),
            }
        }
        if let Some(body) = archived {
            self.archive_request = None;
            // The script's archive fits in one page.
            let (messages, _, _) = decode_page(&body)?;
            self.timeline.log(format!(
                "{}: joined; the archive sent the {} message(s) missing here",
                self.name,
                messages.len()
            ));
            for message in messages {
                self.admit(message, Via::Archive)?;
            }
            self.status.send_modify(|s| s.joined = true);
        }
        Ok(())
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
    ) -> Result<Vec<Displayed>, ChatError> {
        loop {
            self.flush().await?;
            let wake = self.mux.poll_timeout().unwrap_or(Duration::from_secs(1));
            let sleep = tokio::time::sleep_until(self.start + wake);
            let wake = {
                let net = &mut self.net;
                let received = async {
                    match net {
                        Some(net) => net.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    command = commands.recv() => Wake::Command(command),
                    event = received => Wake::Net(event?),
                    _ = sleep => Wake::Timer,
                }
            };
            match wake {
                Wake::Command(Some(Command::Post(text))) => self.post(text).await?,
                Wake::Command(Some(Command::Leave)) => self.leave().await,
                Wake::Command(Some(Command::Connect)) => self.connect().await?,
                Wake::Command(Some(Command::FetchArchive)) => self.fetch_archive().await?,
                Wake::Command(Some(Command::Quit) | None) => break,
                Wake::Net(NetEvent::Message { from, msg }) => {
                    let now = self.now();
                    self.mux.handle(now, from, &msg)?;
                }
                Wake::Net(_) | Wake::Timer => {}
            }
            let now = self.now();
            self.mux.handle_timeout(now);
            self.drain()?;
        }
        self.leave().await;
        Ok(self.displayed)
    }
}

/// The script's handle on one client task.
struct Handle {
    name: String,
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<Status>,
    task: tokio::task::JoinHandle<Result<Vec<Displayed>, ChatError>>,
}

impl Handle {
    async fn send(&self, command: Command) -> Result<(), ChatError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| ChatError::ClientGone(self.name.clone()))
    }

    async fn wait(&mut self, what: &str, ok: impl Fn(&Status) -> bool) -> Result<(), ChatError> {
        let waited = tokio::time::timeout(STEP_TIMEOUT, self.status.wait_for(|s| ok(s))).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ChatError::ClientGone(self.name.clone())),
            Err(_) => Err(ChatError::Timeout(format!("{} {what}", self.name))),
        }
    }

    async fn left(&mut self) -> Result<(), ChatError> {
        self.wait("to disconnect", |s| !s.connected).await
    }

    async fn joined(&mut self) -> Result<(), ChatError> {
        self.wait("to join", |s| s.joined).await
    }

    async fn seen(&mut self, count: usize) -> Result<(), ChatError> {
        self.wait(&format!("to display {count} messages"), |s| {
            s.displayed >= count
        })
        .await
    }
}

/// The script's view of the server's subscriber count (what the example
/// waits on so that its steps happen in a fixed order).
struct Subscribers(watch::Receiver<server::ServerStats>);

impl Subscribers {
    async fn wait(&mut self, count: usize) -> Result<(), ChatError> {
        let waited =
            tokio::time::timeout(STEP_TIMEOUT, self.0.wait_for(|s| s.subscribers == count)).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ChatError::ClientGone("server".into())),
            Err(_) => Err(ChatError::Timeout(format!("{count} subscribers"))),
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Per client, what it displayed, in order.
    pub displays: BTreeMap<String, Vec<Displayed>>,
    /// Messages the server archived.
    pub archived: usize,
    /// The timeline.
    pub log: Vec<String>,
}

impl Report {
    /// Whether every client displayed the same messages, each after every
    /// message its vector clock says it depends on. (Concurrent messages
    /// may legitimately appear in different orders on different clients.)
    pub fn causally_consistent(&self) -> bool {
        let mut sets = self.displays.values().map(|shown| {
            let mut ids: Vec<Id> = shown.iter().map(|d| d.message.id).collect();
            ids.sort_unstable();
            ids
        });
        let first = sets.next().unwrap_or_default();
        if !sets.all(|ids| ids == first) || first.len() != self.archived {
            return false;
        }
        self.displays
            .values()
            .all(|shown| respects_causality(shown))
    }

    /// The printed report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.log {
            let _ = writeln!(out, "{line}");
        }
        for (name, shown) in &self.displays {
            let _ = writeln!(out, "\n{name}'s screen:");
            for d in shown {
                let _ = writeln!(out, "  {d}");
            }
        }
        let same_order = {
            let mut orders = self
                .displays
                .values()
                .map(|shown| shown.iter().map(|d| d.message.id).collect::<Vec<_>>());
            let first = orders.next().unwrap_or_default();
            orders.all(|o| o == first)
        };
        let _ = writeln!(
            out,
            "\n{} clients, {} messages archived; every screen shows them all in causal order: {}; identical sequences: {}",
            self.displays.len(),
            self.archived,
            if self.causally_consistent() {
                "yes"
            } else {
                "NO"
            },
            if same_order {
                "yes"
            } else {
                "no (concurrent messages swapped)"
            }
        );
        out
    }
}

/// Whether no message is shown before one that happened before it.
pub fn respects_causality(shown: &[Displayed]) -> bool {
    shown.iter().enumerate().all(|(i, later)| {
        shown.iter().skip(i + 1).all(|after| {
            after.message.clock.partial_cmp(&later.message.clock) != Some(std::cmp::Ordering::Less)
        })
    })
}

/// Starts a client task (not yet connected).
fn spawn_client(
    name: &str,
    node: u16,
    server_addr: std::net::SocketAddr,
    timeline: &Timeline,
) -> Result<Handle, ChatError> {
    let (status_tx, status_rx) = watch::channel(Status::default());
    let (commands_tx, commands_rx) = mpsc::channel(16);
    let client = Client {
        name: name.to_owned(),
        server_addr,
        session: u64::from(node) * 1000,
        ids: SystemClockGenerator::new(
            Layout::SEED,
            WorkerId::new(u64::from(node)),
            ClockPolicy::WaitUntil,
        )?,
        buffer: CausalBuffer::new(name.to_owned(), CAUSAL_CAPACITY),
        held: std::collections::BTreeSet::new(),
        net: None,
        mux: Client::client_mux()?,
        archive_request: None,
        start: Instant::now(),
        displayed: Vec::new(),
        status: status_tx,
        timeline: timeline.clone(),
    };
    Ok(Handle {
        name: name.to_owned(),
        commands: commands_tx,
        status: status_rx,
        task: tokio::spawn(client.run(commands_rx)),
    })
}

/// Runs the scripted conversation on 127.0.0.1 (ephemeral port).
pub async fn run() -> Result<Report, ChatError> {
    let timeline = Timeline {
        start: Some(std::time::Instant::now()),
        lines: Arc::default(),
    };
    let net = TcpTransport::bind(SERVER, "127.0.0.1:0", server::tcp_config()).await?;
    let addr = net
        .local_addr()
        .ok_or_else(|| std::io::Error::other("server is not listening"))?;
    let (stop, stopped) = oneshot::channel();
    let (stats_tx, stats) = watch::channel(server::ServerStats::default());
    let mut server_subscribers = Subscribers(stats);
    let stop_on = async {
        let _ = stopped.await;
    };
    let server_task = tokio::spawn(server::serve(
        net,
        archive::Archive::in_memory(),
        stop_on,
        stats_tx,
    ));
    timeline.log(format!("server listening on {addr}"));

    let mut alice = spawn_client("alice", 1, addr, &timeline)?;
    let mut bob = spawn_client("bob", 2, addr, &timeline)?;
    let mut carol = spawn_client("carol", 3, addr, &timeline)?;
    for c in [&mut alice, &mut bob, &mut carol] {
        c.send(Command::Connect).await?;
        c.send(Command::FetchArchive).await?;
        c.joined().await?;
    }

    alice.send(Command::Post("lunch, anyone?".into())).await?;
    bob.seen(1).await?;
    carol.seen(1).await?;
    // Two answers written at the same time: concurrent.
    bob.send(Command::Post("yes! noodles?".into())).await?;
    carol.send(Command::Post("count me in".into())).await?;
    for c in [&mut alice, &mut bob, &mut carol] {
        c.seen(3).await?;
    }

    timeline.log("carol's connection drops");
    carol.send(Command::Leave).await?;
    carol.left().await?;
    // The server has forgotten her old session before anyone posts.
    server_subscribers.wait(2).await?;
    alice
        .send(Command::Post("noodles it is, 12:30".into()))
        .await?;
    bob.seen(4).await?;
    bob.send(Command::Post("booking a table".into())).await?;
    alice.seen(5).await?;

    // Carol reconnects and subscribes; before she asks the archive, bob
    // posts. His message depends on two she missed, so her causal buffer
    // holds it until the archive brings them.
    timeline.log("carol reconnects and subscribes");
    carol.send(Command::Connect).await?;
    server_subscribers.wait(3).await?;
    bob.send(Command::Post("table for three booked".into()))
        .await?;
    carol.wait("to hold a message", |s| s.held >= 1).await?;
    timeline.log("carol asks the archive for what she lacks");
    carol.send(Command::FetchArchive).await?;
    carol.joined().await?;
    carol.seen(6).await?;
    carol
        .send(Command::Post(
            "sorry, lost my connection. see you there!".into(),
        ))
        .await?;
    for c in [&mut alice, &mut bob, &mut carol] {
        c.seen(7).await?;
    }

    let mut displays = BTreeMap::new();
    for c in [alice, bob, carol] {
        c.send(Command::Quit).await?;
        let shown = c
            .task
            .await
            .map_err(|_| ChatError::ClientGone(c.name.clone()))??;
        displays.insert(c.name, shown);
    }
    let _ = stop.send(());
    let archived = server_task
        .await
        .map_err(|_| ChatError::ClientGone("server".into()))??
        .archived;
    Ok(Report {
        displays,
        archived,
        log: timeline.lines(),
    })
}
