//! A TCP [`Transport`] on tokio (feature `tokio`).
//!
//! [`TcpTransport`] carries [`Frame`]s between peers named by [`PeerId`]:
//! wrap it in [`Typed`](crate::Typed) for typed messages, or run the
//! [`patterns`](crate::patterns) over it, each on its own channel, all on
//! one connection per peer.
//!
//! - **Connection reuse.** One connection per peer, for every channel. A
//!   peer that connected to us is answered on its own connection, so a
//!   client needs no listening socket.
//! - **Handshake.** The first frame each way is a hello on
//!   [`CONTROL_CHANNEL`] carrying the sender's [`PeerId`]. It must come
//!   within [`TcpConfig::hello_timeout`] (the wrapper's handshake included).
//! - **Trust.** [`TcpConfig::trust`] says whose word a hello is taken on:
//!   [`Trust::Hello`] (the default) believes it; [`Trust::KnownPeers`]
//!   makes only ids added with [`add_peer`](TcpTransport::add_peer) peers
//!   and gives every other connection a *client id* of its own
//!   ([`PeerId::is_client`]). A [`StreamWrapper`] that
//!   [authenticates](StreamWrapper::authenticates) must prove a peer's id in
//!   its handshake, or the hello is refused (counted in
//!   [`TcpStats::refused_hellos`], logged).
//! - **Control traffic first.** Frames with [`Flags::URGENT`] (Raft
//!   heartbeats, votes) go in each peer's urgent queue and are written
//!   before any queued bulk frame; a write coalesces at most 64 KiB of bulk,
//!   so an urgent frame waits for at most that (and for any single frame
//!   already being written: keep bulk frames small). On arrival, urgent
//!   frames from peers wait in a lane [`recv`](Transport::recv) serves
//!   first, then everything else from peers, then client connections, so a
//!   client flood cannot starve traffic between nodes. Urgent frames may so
//!   overtake the peer's bulk frames and its `Connected` event; everything
//!   else from one connection keeps its order.
//! - **Reconnect.** A peer added with [`add_peer`](TcpTransport::add_peer)
//!   has a link task that dials it (bounded by
//!   [`TcpConfig::connect_timeout`]), and redials with exponential backoff
//!   (from [`TcpConfig::backoff_initial`] to [`TcpConfig::backoff_max`])
//!   whenever the connection drops. Frames queued meanwhile wait in the
//!   peer's queue; frames being written when a connection breaks are lost
//!   (at-most-once, like the network itself). The last failed dial is kept
//!   in [`dial_failure`](TcpTransport::dial_failure) until the peer connects.
//! - **High-water marks.** Each peer's bulk queue holds at most
//!   [`TcpConfig::peer_queue`] frames and [`TcpConfig::peer_queue_bytes`]
//!   bytes, its urgent queue [`TcpConfig::urgent_queue`] frames (and as
//!   many bytes); each inbound lane holds [`TcpConfig::inbound_queue`]
//!   events. [`send`](Transport::send) waits while the peer's queue is full
//!   (block policy); [`try_send`](TcpTransport::try_send) refuses with
//!   [`TcpError::Full`] or [`TcpError::FullBytes`] and counts the drop (drop
//!   policy). A reader whose inbound lane is full stops reading, so a slow
//!   consumer pushes back through TCP to the sender.
//! - **Limits.** Accepted connections are capped
//!   ([`TcpConfig::max_connections`]); a connection that completes no frame
//!   for [`TcpConfig::idle_timeout`] is closed (each side pings an idle
//!   connection, so live transports never are); client connections may
//!   send frames of [`TcpConfig::client_max_frame`] only; the bytes of
//!   partial frames across all connections are capped
//!   ([`TcpConfig::max_buffered_bytes`]), and a read never reserves more
//!   than 64 KiB whatever length a header claims; a failing `accept`
//!   (EMFILE, ...) backs off from 10 ms to 1 s instead of spinning. Every
//!   limit hit closes that connection only, is counted in [`TcpStats`] and
//!   logged.
//! - **Simultaneous dials.** Two peers that dial each other at once end
//!   with one connection: once a second connection to the same peer has
//!   exchanged hellos, both sides keep the one dialed by the lower
//!   [`PeerId`] ([`simultaneous_open::resolve`],
//!   Sans-IO) and close the other gracefully: its writer stops, the peer's
//!   queue moves to the winner in order, and what was already written on
//!   the loser is still read to its end, so nothing queued is lost (frames
//!   still in flight on the loser may arrive after the first ones on the
//!   winner). The switch emits no events: the peer stays connected. A side
//!   whose own dial lost does not redial while the winner is up.
//! - **One receiver, many senders.** [`into_split`](TcpTransport::into_split)
//!   gives a [`TcpReceiver`] that owns `recv` and a [`TcpSender`] that is
//!   `Clone + Send + Sync`, so one task receives while any number send
//!   (quinn's cloneable handles, tokio's `into_split`);
//!   [`sender`](TcpTransport::sender) hands out a sender without splitting.
//!   The halves are the same transport: same queues, lanes, limits, stats.
//!   The transport runs until it is shut down or its last sender is dropped.
//! - **Graceful shutdown.** [`shutdown`](TcpTransport::shutdown) stops
//!   accepting, writes out every queued frame, closes each connection's
//!   write side and waits for the tasks.
//! - **TLS seam.** Every stream passes through a [`StreamWrapper`] before
//!   use; [`Plain`] leaves it as is, a TLS wrapper (e.g. tokio-rustls)
//!   would run its handshake there.
//! - **Observability.** [`stats`](TcpTransport::stats) counts connections,
//!   refusals, limits hit and drops, and shows each peer's queue depth.
//!   With feature `tracing` the transport logs (target
//!   `quorate_transport::tcp`): info for the listening address and peers
//!   connecting and disconnecting, warn for every limit hit and refused
//!   hello, debug for dial failures. Without it, logging costs nothing.
//!
//! ```
//! use bytes::Bytes;
//! use quorate_transport::framing::{ChannelId, Frame};
//! use quorate_transport::tcp::{PeerId, TcpConfig, TcpTransport};
//! use quorate_transport::{Event, Transport};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let mut server = TcpTransport::bind(PeerId(1), "127.0.0.1:0", TcpConfig::default()).await.unwrap();
//! let client = TcpTransport::client(PeerId(2), TcpConfig::default());
//! client.add_peer(PeerId(1), server.local_addr().unwrap());
//! client.send(PeerId(1), Frame::new(ChannelId(0), Bytes::from("hi"))).await.unwrap();
//! assert_eq!(server.recv().await.unwrap(), Event::Connected(PeerId(2)));
//! let Event::Message { from, msg } = server.recv().await.unwrap() else { panic!() };
//! assert_eq!((from, &msg.payload[..]), (PeerId(2), &b"hi"[..]));
//! client.shutdown().await;
//! server.shutdown().await;
//! # });
//! ```
//!
//! Receiving in one task while others send:
//!
//! ```
//! use bytes::Bytes;
//! use quorate_transport::framing::{ChannelId, Frame};
//! use quorate_transport::tcp::{PeerId, TcpConfig, TcpTransport};
//! use quorate_transport::Event;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let server = TcpTransport::bind(PeerId(1), "127.0.0.1:0", TcpConfig::default()).await.unwrap();
//! let addr = server.local_addr().unwrap();
//! let (_server_tx, mut server_rx) = server.into_split();
//! let (tx, _rx) = TcpTransport::client(PeerId(2), TcpConfig::default()).into_split();
//! tx.add_peer(PeerId(1), addr);
//! let senders: Vec<_> = (0..3u8)
//!     .map(|i| {
//!         let tx = tx.clone();
//!         tokio::spawn(async move { tx.send(PeerId(1), Frame::new(ChannelId(0), Bytes::from(vec![i]))).await })
//!     })
//!     .collect();
//! let receiver = tokio::spawn(async move {
//!     let mut got = Vec::new();
//!     while got.len() < 3 {
//!         if let Event::Message { msg, .. } = server_rx.recv().await.unwrap() {
//!             got.push(msg.payload[0]);
//!         }
//!     }
//!     got.sort();
//!     got
//! });
//! for s in senders {
//!     s.await.unwrap().unwrap();
//! }
//! assert_eq!(receiver.await.unwrap(), [0, 1, 2]);
//! tx.shutdown().await;
//! # });
//! ```

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use core::fmt;
use core::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{Mutex as AsyncMutex, Notify, watch};
use tokio::task::JoinHandle;

use crate::framing::{ChannelId, Frame, FrameCodec, FrameError};
use crate::simultaneous_open::{self, Direction, Resolution};
use crate::transport::{Event, Transport};

mod conn;
mod limits;
mod log;
mod queue;
mod stats;
mod trust;

pub use crate::peer::{ClientRangeError, PeerId};
pub use stats::{DialFailure, InboundDepth, LimitCounts, QueueDepth, TcpStats};
pub use trust::Trust;

use limits::{Budget, Counters, Limit, bump, get};
use log::tcp_log;
use queue::{InLane, Inbound, InboundRx, OutQueue, QueueLimits, Refused};

#[cfg(doc)]
use crate::framing::Flags;

/// The channel the transport keeps for its handshake and keepalives;
/// applications may not send on it.
pub const CONTROL_CHANNEL: ChannelId = ChannelId(u32::MAX);

/// Settings of a [`TcpTransport`]. Every limit has a safe default; see the
/// [module docs](self) for what each one guards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// Frame size limit for both directions on connections between peers.
    pub framing: FrameCodec,
    /// The most bulk frames queued for one peer (its high-water mark).
    pub peer_queue: usize,
    /// The most payload bytes of bulk frames queued for one peer. A frame
    /// larger than this is still taken when nothing else is queued.
    pub peer_queue_bytes: usize,
    /// The most urgent frames queued for one peer (they also obey
    /// `peer_queue_bytes`, counted apart from the bulk ones). Keep it small:
    /// urgent traffic is periodic (heartbeats, votes), so a deep queue for a
    /// peer that is unreachable or not reading only stores stale frames,
    /// all delivered and answered at once when it comes back, and each
    /// answer can release a full append.
    pub urgent_queue: usize,
    /// The most events waiting for [`recv`](Transport::recv) in each of its
    /// three lanes (urgent from peers, rest from peers, clients).
    pub inbound_queue: usize,
    /// The first redial delay.
    pub backoff_initial: Duration,
    /// The longest redial delay.
    pub backoff_max: Duration,
    /// Whose word a hello is taken on.
    pub trust: Trust,
    /// The most accepted connections open at once, handshakes included;
    /// further ones are closed as soon as they are accepted. Dialed
    /// connections do not count.
    pub max_connections: usize,
    /// How long a connection may take to complete its handshake (the
    /// wrapper's and the hello). Also bounds how long a losing
    /// simultaneous-open connection is read before it is dropped.
    pub hello_timeout: Duration,
    /// A connection past its hello that completes no frame for this long is
    /// closed: it sends nothing, or stalls inside a frame. Each transport
    /// pings a connection it has written nothing on for a quarter of its
    /// own `idle_timeout`, so give all nodes similar values. Zero turns
    /// both the timeout and the pings off.
    pub idle_timeout: Duration,
    /// The largest frame payload accepted from a client connection
    /// ([`Trust::KnownPeers`]); a larger one closes it.
    pub client_max_frame: usize,
    /// The most bytes of partial (not yet complete) frames held across all
    /// connections; a connection whose partial frame would pass it is
    /// closed. Under [`Trust::KnownPeers`] connections to known peers are
    /// not counted, so clients filling it cannot cut peers off.
    pub max_buffered_bytes: usize,
    /// How long a dial may take to connect (and run the wrapper's client
    /// handshake).
    pub connect_timeout: Duration,
}

impl Default for TcpConfig {
    /// 8 MiB frames between peers and 1 MiB from clients, 1000-frame and
    /// 4 MiB peer queues, 64-frame urgent queues, 1000-event inbound
    /// lanes, backoff from 10 ms to 5 s, [`Trust::Hello`], 1024 accepted
    /// connections, 5 s hello, 20 s idle and 2 s connect timeouts, 64 MiB
    /// of partial frames.
    fn default() -> Self {
        TcpConfig {
            framing: FrameCodec::new(),
            peer_queue: 1000,
            peer_queue_bytes: 4 * 1024 * 1024,
            urgent_queue: 64,
            inbound_queue: 1000,
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_secs(5),
            trust: Trust::Hello,
            max_connections: 1024,
            hello_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(20),
            client_max_frame: 1024 * 1024,
            max_buffered_bytes: 64 * 1024 * 1024,
            connect_timeout: Duration::from_secs(2),
        }
    }
}

impl TcpConfig {
    fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            urgent_frames: self.urgent_queue,
            bulk_frames: self.peer_queue,
            bytes: self.peer_queue_bytes,
        }
    }
}

/// What went wrong on the TCP transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TcpError {
    /// No connection to this peer and no address to dial it.
    #[error("no connection or address for {0}")]
    UnknownPeer(PeerId),
    /// The peer's queue is at its high-water mark; the frame was dropped
    /// and counted.
    #[error("queue to {peer} full at {hwm} frames; frame dropped")]
    Full {
        /// The peer.
        peer: PeerId,
        /// The high-water mark.
        hwm: usize,
    },
    /// The peer's queue holds its most bytes; the frame was dropped and
    /// counted.
    #[error(
        "queue to {peer} holds {queued} of at most {max} bytes, no room for a frame of {len}; frame dropped"
    )]
    FullBytes {
        /// The peer.
        peer: PeerId,
        /// The refused frame's payload bytes.
        len: usize,
        /// Bytes queued.
        queued: usize,
        /// The bound ([`TcpConfig::peer_queue_bytes`]).
        max: usize,
    },
    /// The channel is the transport's own.
    #[error("{0} is reserved for the transport's handshake")]
    ReservedChannel(ChannelId),
    /// The frame is larger than the configured limit.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The transport is shut down.
    #[error("transport shut down")]
    Shutdown,
}

/// Wraps each TCP stream before use: the seam for TLS.
#[async_trait::async_trait]
pub trait StreamWrapper: Send + Sync + 'static {
    /// The wrapped stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Wraps a stream we dialed to `peer`.
    async fn client(&self, stream: TcpStream, peer: PeerId) -> io::Result<Self::Stream>;
    /// Wraps a stream we accepted.
    async fn server(&self, stream: TcpStream) -> io::Result<Self::Stream>;

    /// Whether this wrapper's handshake proves who is at the other end (a
    /// TLS client certificate, say). When it does, the transport takes a
    /// hello's peer id only if [`peer_identity`](Self::peer_identity)
    /// proved that id; [`Plain`] proves nothing.
    fn authenticates(&self) -> bool {
        false
    }

    /// The peer id the handshake of an accepted `stream` proved, if any.
    fn peer_identity(stream: &Self::Stream) -> Option<PeerId> {
        let _ = stream;
        None
    }

    /// Splits a wrapped stream into the halves its reader task and writer
    /// task use at the same time. The default, [`tokio::io::split`], puts
    /// both halves behind one lock that the two tasks then contend for on
    /// every read and write; override it when the stream splits without one
    /// (as [`Plain`] does with [`TcpStream::into_split`]).
    fn split(stream: Self::Stream) -> (StreamReader, StreamWriter) {
        let (r, w) = tokio::io::split(stream);
        (Box::new(r), Box::new(w))
    }
}

/// The read half of a connection's stream.
pub type StreamReader = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a connection's stream.
pub type StreamWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// Plain TCP: streams are used as they are.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plain;

#[async_trait::async_trait]
impl StreamWrapper for Plain {
    type Stream = TcpStream;
    async fn client(&self, stream: TcpStream, _peer: PeerId) -> io::Result<TcpStream> {
        Ok(stream)
    }
    async fn server(&self, stream: TcpStream) -> io::Result<TcpStream> {
        Ok(stream)
    }
    /// Lock-free halves: reads and writes never wait for each other.
    fn split(stream: TcpStream) -> (StreamReader, StreamWriter) {
        let (r, w) = stream.into_split();
        (Box::new(r), Box::new(w))
    }
}

/// Whose a connection is: a peer's, or a client's under [`Trust::KnownPeers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Peer,
    Client,
}

impl Kind {
    /// Where this connection's connects, disconnects and bulk frames wait.
    fn lane(self) -> InLane {
        match self {
            Kind::Peer => InLane::Peers,
            Kind::Client => InLane::Clients,
        }
    }
}

/// State shared by the transport handle and its tasks.
struct Shared<W> {
    id: PeerId,
    config: TcpConfig,
    wrapper: W,
    addrs: Mutex<HashMap<PeerId, SocketAddr>>,
    /// Each peer with a dialing link or a live connection: its outbound
    /// queue and the connection chosen to carry it.
    peers: Mutex<HashMap<PeerId, PeerSlot>>,
    /// Serialises connection changes with their `Connected`/`Disconnected`
    /// events, so the events arrive in the order the changes happened.
    membership: AsyncMutex<()>,
    /// Woken whenever a peer loses its current connection (a dial loop
    /// that lost a simultaneous open waits on it).
    released: Notify,
    next_conn: AtomicU64,
    /// Connections past their handshake and not yet closed, by kind.
    open_peers: AtomicUsize,
    open_clients: AtomicUsize,
    /// Accepted connections not yet closed.
    accepted: Arc<AtomicUsize>,
    budget: Budget,
    counters: Counters,
    dial_failures: Mutex<HashMap<PeerId, DialFailure>>,
    inbound: Inbound,
    /// Set once to shut down; shared with [`Alive`].
    shutdown: Arc<watch::Sender<bool>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A peer's queue and its current connection.
struct PeerSlot {
    queue: Arc<OutQueue>,
    /// A dial loop owns the queue: it outlives connections.
    dialed: bool,
    current: Option<Current>,
    /// For a client connection, the id its hello claimed: if that id
    /// becomes a known peer, the connection is closed so that it comes
    /// back as the peer.
    claimed: Option<PeerId>,
}

impl PeerSlot {
    fn new(config: &TcpConfig, dialed: bool) -> Self {
        PeerSlot {
            queue: Arc::new(OutQueue::new(config.queue_limits())),
            dialed,
            current: None,
            claimed: None,
        }
    }
}

/// The connection carrying a peer's queue.
struct Current {
    serial: u64,
    direction: Direction,
    retire: Arc<Notify>,
}

/// A connection past its handshake that carries (or carried) a peer's queue.
struct Conn {
    peer: PeerId,
    kind: Kind,
    addr: SocketAddr,
    serial: u64,
    queue: Arc<OutQueue>,
    /// Told when a newer or winning connection takes over.
    retire: Arc<Notify>,
    /// Whether the peer had no connection before this one.
    fresh: bool,
    direction: Direction,
}

/// Counts a connection as open from its handshake until dropped.
struct Open<'a>(&'a AtomicUsize);

impl<'a> Open<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Open(count)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Locks a map. A panicking task cannot leave these maps half-updated, so
/// a poisoned lock is still good.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<W> Shared<W> {
    /// Makes a connection that just exchanged hellos with `peer` its current
    /// one, or refuses it (`None`) because the existing one wins the
    /// simultaneous open. `own` is a dial loop's queue, used if the peer was
    /// removed meanwhile.
    fn register(
        &self,
        peer: PeerId,
        kind: Kind,
        addr: SocketAddr,
        direction: Direction,
        own: Option<&Arc<OutQueue>>,
    ) -> Option<Conn> {
        let serial = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let retire = Arc::new(Notify::new());
        let mut peers = lock(&self.peers);
        let slot = match (peers.entry(peer), own) {
            (Entry::Occupied(e), _) => e.into_mut(),
            (Entry::Vacant(e), None) => e.insert(PeerSlot::new(&self.config, false)),
            // Removed while we dialed: write out what was queued, unregistered.
            (Entry::Vacant(_), Some(queue)) => {
                return Some(Conn {
                    peer,
                    kind,
                    addr,
                    serial,
                    queue: Arc::clone(queue),
                    retire,
                    fresh: true,
                    direction,
                });
            }
        };
        let fresh = match &slot.current {
            None => true,
            Some(existing) => {
                match simultaneous_open::resolve(&self.id, &peer, existing.direction, direction) {
                    Resolution::KeepExisting => return None,
                    Resolution::ReplaceExisting => existing.retire.notify_one(),
                }
                false
            }
        };
        slot.current = Some(Current {
            serial,
            direction,
            retire: Arc::clone(&retire),
        });
        let queue = Arc::clone(&slot.queue);
        drop(peers);
        lock(&self.dial_failures).remove(&peer);
        Some(Conn {
            peer,
            kind,
            addr,
            serial,
            queue,
            retire,
            fresh,
            direction,
        })
    }

    /// `conn` ended. Whether the peer is now without a connection (`conn`
    /// was current, or the peer was removed under it).
    fn unregister(&self, conn: &Conn) -> bool {
        let mut peers = lock(&self.peers);
        let Some(slot) = peers.get_mut(&conn.peer) else {
            return true;
        };
        if slot
            .current
            .as_ref()
            .is_none_or(|c| c.serial != conn.serial)
        {
            return false;
        }
        slot.current = None;
        if !slot.dialed
            && let Some(slot) = peers.remove(&conn.peer)
        {
            slot.queue.close();
        }
        drop(peers);
        self.released.notify_waiters();
        true
    }

    /// Notes what client connection `conn`'s hello claimed, and closes it
    /// if that id is (by now) a known peer.
    fn claimed(&self, conn: &Conn, claimed: PeerId) {
        if let Some(slot) = lock(&self.peers).get_mut(&conn.peer) {
            slot.claimed = Some(claimed);
        }
        // After noting the claim: `add_peer` adds the address before it
        // looks for claims, so one of the two sees the other.
        if lock(&self.addrs).contains_key(&claimed) {
            conn.queue.close();
        }
    }

    /// Whether `peer` has a live connection.
    fn connected(&self, peer: PeerId) -> bool {
        lock(&self.peers)
            .get(&peer)
            .is_some_and(|s| s.current.is_some())
    }

    /// The open-connection counter for `kind`.
    fn open(&self, kind: Kind) -> &AtomicUsize {
        match kind {
            Kind::Peer => &self.open_peers,
            Kind::Client => &self.open_clients,
        }
    }

    /// A connection hit `limit` (`value` against `max`) and is being closed.
    fn hit(&self, limit: Limit, who: &dyn fmt::Display, value: u64, max: u64) {
        bump(self.counters.limit(limit));
        tcp_log!(
            warn,
            "{who}: {limit} limit hit ({value} against {max}); connection closed"
        );
    }

    /// A dial to `peer` at `addr` failed.
    fn dial_failed(&self, peer: PeerId, addr: SocketAddr, error: &io::Error) {
        tcp_log!(debug, "dialing {peer} at {addr} failed: {error}");
        let mut failures = lock(&self.dial_failures);
        let attempts = failures.get(&peer).map_or(0, |f| f.attempts);
        failures.insert(
            peer,
            DialFailure {
                addr,
                error: error.to_string(),
                at: Instant::now(),
                attempts: attempts.saturating_add(1),
            },
        );
    }

    fn spawn(&self, task: impl core::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    /// Queues an event for `recv` in `lane`, waiting for room, unless
    /// shutting down (nobody may be reading any more then).
    async fn emit(&self, lane: InLane, event: Event<PeerId, Frame>) {
        let mut stop = self.shutdown.subscribe();
        tokio::select! {
            _ = self.inbound.send(lane, event) => {}
            _ = conn::stopped(&mut stop) => {}
        }
    }
}

/// A TCP transport endpoint. See the [module docs](self).
///
/// It owns both directions: [`send`](Transport::send) takes `&self`,
/// [`recv`](Transport::recv) `&mut self`. To receive in one task and send
/// from others, take a [`sender`](Self::sender) (a cloneable handle) or
/// split it with [`into_split`](Self::into_split), as tokio's
/// [`TcpStream::into_split`] does a socket.
pub struct TcpTransport<W: StreamWrapper = Plain> {
    sender: TcpSender<W>,
    receiver: TcpReceiver,
}

impl<W: StreamWrapper> fmt::Debug for TcpTransport<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpTransport")
            .field("id", &self.sender.shared.id)
            .field("local_addr", &self.sender.local_addr)
            .field("config", &self.sender.shared.config)
            .finish_non_exhaustive()
    }
}

/// The sending half of a [`TcpTransport`], from
/// [`into_split`](TcpTransport::into_split) or
/// [`sender`](TcpTransport::sender): a handle that can be cloned and
/// shared, so many tasks send (and manage peers) while one task receives.
///
/// Every clone drives the same transport: the same peers, queues, limits and
/// stats. The transport runs while a sender (or the whole [`TcpTransport`])
/// is alive; dropping the last one shuts it down as
/// [`shutdown`](Self::shutdown) would, without waiting, and the
/// [`TcpReceiver`] then hands out what is waiting and fails with
/// [`TcpError::Shutdown`].
pub struct TcpSender<W: StreamWrapper = Plain> {
    shared: Arc<Shared<W>>,
    alive: Arc<Alive>,
    local_addr: Option<SocketAddr>,
}

impl<W: StreamWrapper> Clone for TcpSender<W> {
    fn clone(&self) -> Self {
        TcpSender {
            shared: Arc::clone(&self.shared),
            alive: Arc::clone(&self.alive),
            local_addr: self.local_addr,
        }
    }
}

impl<W: StreamWrapper> fmt::Debug for TcpSender<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpSender")
            .field("id", &self.shared.id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// The receiving half of a [`TcpTransport`], from
/// [`into_split`](TcpTransport::into_split): it owns
/// [`recv`](Self::recv), with the transport's lanes (urgent frames from
/// peers first, then the rest from peers, then clients).
///
/// It does not keep the transport running: the [`TcpSender`]s do. Dropped
/// while senders live, the transport goes on sending, and what arrives
/// from then on is discarded.
pub struct TcpReceiver {
    inbound: InboundRx,
    stop: watch::Receiver<bool>,
}

impl fmt::Debug for TcpReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpReceiver").finish_non_exhaustive()
    }
}

/// Held by every sender of a transport: the last one dropped signals
/// shutdown. The tasks hold only [`Shared`], so they never keep it alive.
struct Alive(Arc<watch::Sender<bool>>);

impl Drop for Alive {
    fn drop(&mut self) {
        // Tasks notice, flush and exit; `shutdown` is the way to wait for them.
        self.0.send_replace(true);
    }
}

impl TcpTransport<Plain> {
    /// A transport named `id` listening on `addr` (use port 0 for any).
    pub async fn bind(id: PeerId, addr: impl ToSocketAddrs, config: TcpConfig) -> io::Result<Self> {
        Self::bind_with(id, addr, config, Plain).await
    }

    /// A transport named `id` that only dials out (and is answered on the
    /// connections it opened).
    pub fn client(id: PeerId, config: TcpConfig) -> Self {
        Self::client_with(id, config, Plain)
    }
}

impl<W: StreamWrapper> TcpTransport<W> {
    /// [`bind`](TcpTransport::bind) with a stream wrapper.
    pub async fn bind_with(
        id: PeerId,
        addr: impl ToSocketAddrs,
        config: TcpConfig,
        wrapper: W,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        tcp_log!(info, "{id} listening on {local_addr}");
        let mut me = Self::client_with(id, config, wrapper);
        me.sender.local_addr = Some(local_addr);
        let shared = Arc::clone(&me.sender.shared);
        me.sender.shared.spawn(conn::accept_loop(shared, listener));
        Ok(me)
    }

    /// [`client`](TcpTransport::client) with a stream wrapper.
    pub fn client_with(id: PeerId, config: TcpConfig, wrapper: W) -> Self {
        let (tx, rx) = queue::inbound(config.inbound_queue);
        let (shutdown, stop) = watch::channel(false);
        let shutdown = Arc::new(shutdown);
        let alive = Arc::new(Alive(Arc::clone(&shutdown)));
        let shared = Arc::new(Shared {
            id,
            config,
            wrapper,
            addrs: Mutex::default(),
            peers: Mutex::default(),
            membership: AsyncMutex::new(()),
            released: Notify::new(),
            next_conn: AtomicU64::new(0),
            open_peers: AtomicUsize::new(0),
            open_clients: AtomicUsize::new(0),
            accepted: Arc::new(AtomicUsize::new(0)),
            budget: Budget::new(config.max_buffered_bytes),
            counters: Counters::default(),
            dial_failures: Mutex::default(),
            inbound: tx,
            shutdown,
            tasks: Mutex::default(),
        });
        TcpTransport {
            sender: TcpSender {
                shared,
                alive,
                local_addr: None,
            },
            receiver: TcpReceiver { inbound: rx, stop },
        }
    }

    /// Splits the transport into a sending half, which can be cloned and
    /// shared between tasks, and the receiving half, so that one task
    /// receives while others send. Nothing about the transport changes:
    /// peers, queues, lanes, limits and stats are the same.
    pub fn into_split(self) -> (TcpSender<W>, TcpReceiver) {
        (self.sender, self.receiver)
    }

    /// A sending handle on this transport, to send from other tasks while
    /// this one keeps receiving. See [`TcpSender`].
    pub fn sender(&self) -> TcpSender<W> {
        self.sender.clone()
    }

    /// The next event if one is already waiting, without waiting
    /// ([`TcpReceiver::try_recv`]).
    pub fn try_recv(&mut self) -> Option<Event<PeerId, Frame>> {
        self.receiver.try_recv()
    }

    /// This node's id.
    pub fn id(&self) -> PeerId {
        self.sender.id()
    }

    /// Where this node listens, if it does.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.sender.local_addr()
    }

    /// Tells the transport where `peer` listens. The first send to it dials.
    /// Under [`Trust::KnownPeers`] it also makes `peer` a known peer: client
    /// connections that claimed its id (it connected before it was known)
    /// are closed, so that it reconnects as the peer.
    pub fn add_peer(&self, peer: PeerId, addr: SocketAddr) {
        self.sender.add_peer(peer, addr);
    }

    /// Forgets `peer`'s address and ends its link: frames already queued for
    /// it are still written if it is connected, then its connection (dialed
    /// or accepted) closes. Sends to it fail with [`TcpError::UnknownPeer`]
    /// until it connects to us or is added again.
    pub fn remove_peer(&self, peer: PeerId) {
        self.sender.remove_peer(peer);
    }

    /// Queues `frame` for `to` without waiting: a full queue drops the frame,
    /// counts it and returns [`TcpError::Full`] or [`TcpError::FullBytes`].
    pub fn try_send(&self, to: PeerId, frame: Frame) -> Result<(), TcpError> {
        self.sender.try_send(to, frame)
    }

    /// TCP connections open past their handshake, in either direction,
    /// including any still closing after losing a simultaneous open. One
    /// per connected peer once things settle.
    pub fn open_connections(&self) -> usize {
        self.sender.open_connections()
    }

    /// Frames dropped by [`try_send`](Self::try_send) at the high-water mark.
    pub fn dropped(&self) -> u64 {
        self.sender.dropped()
    }

    /// The last failed dial to `peer`, if its most recent dial failed and it
    /// has not connected since (set by the link of a peer added with
    /// [`add_peer`](Self::add_peer), cleared when a connection to it is up
    /// or it is removed). A client whose first send dials can poll this to
    /// report "connection refused to 127.0.0.1:7001" at once instead of
    /// waiting for a reply that cannot come.
    pub fn dial_failure(&self, peer: PeerId) -> Option<DialFailure> {
        self.sender.dial_failure(peer)
    }

    /// A snapshot of connections, counters and queue depths.
    pub fn stats(&self) -> TcpStats {
        self.sender.stats()
    }

    /// Stops accepting, writes out queued frames, closes every connection
    /// and waits for the transport's tasks to end.
    pub async fn shutdown(self) {
        self.sender.shutdown().await;
    }
}

impl<W: StreamWrapper> TcpSender<W> {
    /// This node's id.
    pub fn id(&self) -> PeerId {
        self.shared.id
    }

    /// Where this node listens, if it does.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// [`TcpTransport::add_peer`].
    pub fn add_peer(&self, peer: PeerId, addr: SocketAddr) {
        lock(&self.shared.addrs).insert(peer, addr);
        for slot in lock(&self.shared.peers).values() {
            if slot.claimed == Some(peer) {
                slot.queue.close();
            }
        }
    }

    /// [`TcpTransport::remove_peer`].
    pub fn remove_peer(&self, peer: PeerId) {
        lock(&self.shared.addrs).remove(&peer);
        lock(&self.shared.dial_failures).remove(&peer);
        if let Some(slot) = lock(&self.shared.peers).remove(&peer) {
            slot.queue.close();
        }
    }

    /// Queues `frame` for `to`, waiting while that peer's queue is full
    /// ([`Transport::send`] on the whole transport). `Ok` means queued, not
    /// delivered.
    pub async fn send(&self, to: PeerId, frame: Frame) -> Result<(), TcpError> {
        check(&self.shared.config, &frame)?;
        let queue = self.link(to)?;
        let len = frame.payload.len();
        queue.push(frame).await.map_err(|r| refusal(to, r, len))
    }

    /// [`TcpTransport::try_send`].
    pub fn try_send(&self, to: PeerId, frame: Frame) -> Result<(), TcpError> {
        check(&self.shared.config, &frame)?;
        let queue = self.link(to)?;
        let len = frame.payload.len();
        queue.try_push(frame).map_err(|refused| {
            if refused != Refused::Closed {
                bump(&self.shared.counters.dropped);
            }
            refusal(to, refused, len)
        })
    }

    /// [`TcpTransport::open_connections`].
    pub fn open_connections(&self) -> usize {
        self.shared.open_peers.load(Ordering::Relaxed)
            + self.shared.open_clients.load(Ordering::Relaxed)
    }

    /// [`TcpTransport::dropped`].
    pub fn dropped(&self) -> u64 {
        get(&self.shared.counters.dropped)
    }

    /// [`TcpTransport::dial_failure`].
    pub fn dial_failure(&self, peer: PeerId) -> Option<DialFailure> {
        lock(&self.shared.dial_failures).get(&peer).cloned()
    }

    /// [`TcpTransport::stats`].
    pub fn stats(&self) -> TcpStats {
        let s = &self.shared;
        let c = &s.counters;
        let mut queues: Vec<QueueDepth> = lock(&s.peers)
            .iter()
            .map(|(peer, slot)| {
                let d = slot.queue.depth();
                QueueDepth {
                    peer: *peer,
                    connected: slot.current.is_some(),
                    urgent_frames: d.urgent_frames,
                    bulk_frames: d.bulk_frames,
                    bulk_bytes: d.bulk_bytes,
                }
            })
            .collect();
        queues.sort_by_key(|q| q.peer);
        TcpStats {
            peer_connections: s.open_peers.load(Ordering::Relaxed),
            client_connections: s.open_clients.load(Ordering::Relaxed),
            accepted_connections: s.accepted.load(Ordering::Relaxed),
            refused_hellos: get(&c.refused_hellos),
            closed: LimitCounts {
                max_connections: get(c.limit(Limit::MaxConnections)),
                hello_timeout: get(c.limit(Limit::HelloTimeout)),
                idle_timeout: get(c.limit(Limit::IdleTimeout)),
                client_frame: get(c.limit(Limit::ClientFrame)),
                buffered_bytes: get(c.limit(Limit::BufferedBytes)),
            },
            malformed: get(&c.malformed),
            accept_errors: get(&c.accept_errors),
            dropped: get(&c.dropped),
            buffered_bytes: s.budget.held(),
            inbound: InboundDepth {
                urgent: s.inbound.depth(InLane::Urgent),
                peers: s.inbound.depth(InLane::Peers),
                clients: s.inbound.depth(InLane::Clients),
            },
            queues,
        }
    }

    /// Shuts the transport down for every handle: stops accepting, writes
    /// out queued frames, closes every connection and waits for the
    /// transport's tasks to end. Sends from any handle then fail with
    /// [`TcpError::Shutdown`], and the [`TcpReceiver`] returns it once it
    /// has handed out the events already waiting.
    pub async fn shutdown(&self) {
        // `send_replace`: `send` stores nothing while no task has subscribed
        // yet, and a link spawned just before would then never stop.
        self.shared.shutdown.send_replace(true);
        let tasks: Vec<JoinHandle<()>> = lock(&self.shared.tasks).drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    /// The queue for `peer`: its live connection's, or a new dialing link.
    fn link(&self, peer: PeerId) -> Result<Arc<OutQueue>, TcpError> {
        if *self.shared.shutdown.borrow() {
            return Err(TcpError::Shutdown);
        }
        let mut peers = lock(&self.shared.peers);
        if let Some(slot) = peers.get(&peer) {
            return Ok(Arc::clone(&slot.queue));
        }
        let addr = lock(&self.shared.addrs)
            .get(&peer)
            .copied()
            .ok_or(TcpError::UnknownPeer(peer))?;
        let slot = PeerSlot::new(&self.shared.config, true);
        let queue = Arc::clone(&slot.queue);
        peers.insert(peer, slot);
        drop(peers);
        let shared = Arc::clone(&self.shared);
        self.shared
            .spawn(conn::dial_loop(shared, peer, addr, Arc::clone(&queue)));
        Ok(queue)
    }
}

impl TcpReceiver {
    /// The next event, urgent frames from peers first
    /// ([`Transport::recv`] on the whole transport). Fails with
    /// [`TcpError::Shutdown`] once the transport is shut down and the
    /// events already waiting are handed out.
    pub async fn recv(&mut self) -> Result<Event<PeerId, Frame>, TcpError> {
        self.inbound
            .recv(&mut self.stop)
            .await
            .ok_or(TcpError::Shutdown)
    }

    /// The next event if one is already waiting, without waiting: `None`
    /// when every inbound lane is empty (also after shutdown; use
    /// [`recv`](Self::recv) to learn of that). For an event loop that
    /// drains what has arrived before doing its work once for all of it,
    /// as a Raft node batching every waiting proposal into one append and
    /// one fsync does.
    pub fn try_recv(&mut self) -> Option<Event<PeerId, Frame>> {
        self.inbound.try_recv()
    }
}

fn check(config: &TcpConfig, frame: &Frame) -> Result<(), TcpError> {
    if frame.channel == CONTROL_CHANNEL {
        return Err(TcpError::ReservedChannel(frame.channel));
    }
    let max = config.framing.max_frame_size();
    if frame.payload.len() > max {
        return Err(FrameError::TooLarge {
            len: frame.payload.len() as u64,
            max,
        }
        .into());
    }
    Ok(())
}

/// The error for a frame of `len` payload bytes `to` refused.
fn refusal(to: PeerId, refused: Refused, len: usize) -> TcpError {
    match refused {
        Refused::Frames { hwm } => TcpError::Full { peer: to, hwm },
        Refused::Bytes { queued, max } => TcpError::FullBytes {
            peer: to,
            len,
            queued,
            max,
        },
        // Removed while we held its queue.
        Refused::Closed => TcpError::UnknownPeer(to),
    }
}

#[async_trait::async_trait]
impl<W: StreamWrapper> Transport for TcpTransport<W> {
    type Peer = PeerId;
    type Message = Frame;
    type Error = TcpError;

    async fn send(&self, to: PeerId, frame: Frame) -> Result<(), TcpError> {
        self.sender.send(to, frame).await
    }

    async fn recv(&mut self) -> Result<Event<PeerId, Frame>, TcpError> {
        self.receiver.recv().await
    }
}
