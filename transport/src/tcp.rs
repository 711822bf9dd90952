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
//!   [`CONTROL_CHANNEL`] carrying the sender's [`PeerId`].
//! - **Reconnect.** A peer added with [`add_peer`](TcpTransport::add_peer)
//!   has a link task that dials it, and redials with exponential backoff
//!   (from [`TcpConfig::backoff_initial`] to [`TcpConfig::backoff_max`])
//!   whenever the connection drops. Frames queued meanwhile wait in the
//!   peer's queue; frames being written when a connection breaks are lost
//!   (at-most-once, like the network itself).
//! - **High-water marks.** Each peer's outbound queue holds at most
//!   [`TcpConfig::peer_queue`] frames and the inbound queue at most
//!   [`TcpConfig::inbound_queue`] events. [`send`](Transport::send) waits
//!   while the peer's queue is full (block policy);
//!   [`try_send`](TcpTransport::try_send) refuses with [`TcpError::Full`]
//!   and counts the drop (drop policy). A reader whose inbound queue is full
//!   stops reading, so a slow consumer pushes back through TCP to the sender.
//! - **Simultaneous dials.** Two peers that dial each other at once end
//!   with one connection: once a second connection to the same peer has
//!   exchanged hellos, both sides keep the one dialed by the lower
//!   [`PeerId`] ([`simultaneous_open::resolve`], Sans-IO) and close the
//!   other gracefully: its writer stops, the peer's queue moves to the
//!   winner in order, and what was already written on the loser is still
//!   read to its end, so nothing queued is lost (frames still in flight on
//!   the loser may arrive after the first ones on the winner). The switch
//!   emits no events: the peer stays connected. A side whose own dial lost
//!   does not redial while the winner is up.
//! - **Graceful shutdown.** [`shutdown`](TcpTransport::shutdown) stops
//!   accepting, writes out every queued frame, closes each connection's
//!   write side and waits for the tasks.
//! - **TLS seam.** Every stream passes through a [`StreamWrapper`] before
//!   use; [`Plain`] leaves it as is, a TLS wrapper (e.g. tokio-rustls)
//!   would run its handshake there.
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

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use core::fmt;
use core::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{Mutex as AsyncMutex, Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::framing::{ChannelId, Frame, FrameCodec, FrameError};
use crate::simultaneous_open::{self, Direction, Resolution};
use crate::transport::{Event, Transport};

/// Names a node on the TCP transport; sent in the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {}", self.0)
    }
}

/// The channel the transport keeps for its handshake; applications may
/// not send on it.
pub const CONTROL_CHANNEL: ChannelId = ChannelId(u32::MAX);

/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a [`TcpTransport`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// Frame size limit for both directions.
    pub framing: FrameCodec,
    /// The most frames queued for one peer (its high-water mark).
    pub peer_queue: usize,
    /// The most events waiting for [`recv`](Transport::recv).
    pub inbound_queue: usize,
    /// The first redial delay.
    pub backoff_initial: Duration,
    /// The longest redial delay.
    pub backoff_max: Duration,
}

impl Default for TcpConfig {
    /// 8 MiB frames, 1000-frame queues, backoff from 10 ms to 5 s.
    fn default() -> Self {
        TcpConfig {
            framing: FrameCodec::new(),
            peer_queue: 1000,
            inbound_queue: 1000,
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// What went wrong on the TCP transport.
#[derive(Debug, thiserror::Error)]
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
    /// Connections past their handshake and not yet closed.
    open: AtomicUsize,
    inbound: mpsc::Sender<Event<PeerId, Frame>>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    dropped: AtomicU64,
}

/// A peer's outbound queue, written by whichever connection holds the lock:
/// the current one, so frames move to a new connection in order.
type Queue = Arc<AsyncMutex<mpsc::Receiver<Frame>>>;

/// A peer's queue and its current connection.
struct PeerSlot {
    tx: mpsc::Sender<Frame>,
    rx: Queue,
    /// A dial loop owns the queue: it outlives connections.
    dialed: bool,
    current: Option<Current>,
}

impl PeerSlot {
    fn new(capacity: usize, dialed: bool) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        PeerSlot {
            tx,
            rx: Arc::new(AsyncMutex::new(rx)),
            dialed,
            current: None,
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
    serial: u64,
    rx: Queue,
    /// Told when a newer or winning connection takes over.
    retire: Arc<Notify>,
    /// Whether the peer had no connection before this one.
    fresh: bool,
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
    fn register(&self, peer: PeerId, direction: Direction, own: Option<&Queue>) -> Option<Conn> {
        let serial = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let retire = Arc::new(Notify::new());
        let mut peers = lock(&self.peers);
        let slot = match (peers.entry(peer), own) {
            (Entry::Occupied(e), _) => e.into_mut(),
            (Entry::Vacant(e), None) => e.insert(PeerSlot::new(self.config.peer_queue, false)),
            // Removed while we dialed: write out what was queued, unregistered.
            (Entry::Vacant(_), Some(rx)) => {
                return Some(Conn {
                    peer,
                    serial,
                    rx: Arc::clone(rx),
                    retire,
                    fresh: true,
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
        Some(Conn {
            peer,
            serial,
            rx: Arc::clone(&slot.rx),
            retire,
            fresh,
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
        if !slot.dialed {
            peers.remove(&conn.peer);
        }
        drop(peers);
        self.released.notify_waiters();
        true
    }

    /// Whether `peer` has a live connection.
    fn connected(&self, peer: PeerId) -> bool {
        lock(&self.peers)
            .get(&peer)
            .is_some_and(|s| s.current.is_some())
    }

    fn spawn(&self, task: impl core::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    /// Queues an event for `recv`, waiting for room, unless shutting down
    /// (nobody may be reading any more then).
    async fn emit(&self, event: Event<PeerId, Frame>) {
        let mut stop = self.shutdown.subscribe();
        tokio::select! {
            _ = self.inbound.send(event) => {}
            _ = stopped(&mut stop) => {}
        }
    }
}

/// A TCP transport endpoint. See the [module docs](self).
pub struct TcpTransport<W: StreamWrapper = Plain> {
    shared: Arc<Shared<W>>,
    inbound: mpsc::Receiver<Event<PeerId, Frame>>,
    local_addr: Option<SocketAddr>,
}

impl<W: StreamWrapper> fmt::Debug for TcpTransport<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpTransport")
            .field("id", &self.shared.id)
            .field("local_addr", &self.local_addr)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
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
        let mut me = Self::client_with(id, config, wrapper);
        me.local_addr = Some(local_addr);
        let shared = Arc::clone(&me.shared);
        me.shared.spawn(accept_loop(shared, listener));
        Ok(me)
    }

    /// [`client`](TcpTransport::client) with a stream wrapper.
    pub fn client_with(id: PeerId, config: TcpConfig, wrapper: W) -> Self {
        let (tx, rx) = mpsc::channel(config.inbound_queue.max(1));
        let (shutdown, _) = watch::channel(false);
        TcpTransport {
            shared: Arc::new(Shared {
                id,
                config,
                wrapper,
                addrs: Mutex::default(),
                peers: Mutex::default(),
                membership: AsyncMutex::new(()),
                released: Notify::new(),
                next_conn: AtomicU64::new(0),
                open: AtomicUsize::new(0),
                inbound: tx,
                shutdown,
                tasks: Mutex::default(),
                dropped: AtomicU64::new(0),
            }),
            inbound: rx,
            local_addr: None,
        }
    }

    /// This node's id.
    pub fn id(&self) -> PeerId {
        self.shared.id
    }

    /// Where this node listens, if it does.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Tells the transport where `peer` listens. The first send to it dials.
    pub fn add_peer(&self, peer: PeerId, addr: SocketAddr) {
        lock(&self.shared.addrs).insert(peer, addr);
    }

    /// Forgets `peer`'s address and ends its link: frames already queued for
    /// it are still written if it is connected, then its connection (dialed
    /// or accepted) closes. Sends to it fail with [`TcpError::UnknownPeer`]
    /// until it connects to us or is added again.
    pub fn remove_peer(&self, peer: PeerId) {
        lock(&self.shared.addrs).remove(&peer);
        lock(&self.shared.peers).remove(&peer);
    }

    /// Queues `frame` for `to` without waiting: a full queue drops the frame,
    /// counts it and returns [`TcpError::Full`].
    pub fn try_send(&self, to: PeerId, frame: Frame) -> Result<(), TcpError> {
        check(&self.shared.config, &frame)?;
        let link = self.link(to)?;
        link.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                TcpError::Full {
                    peer: to,
                    hwm: self.shared.config.peer_queue,
                }
            }
            mpsc::error::TrySendError::Closed(_) => TcpError::Shutdown,
        })
    }

    /// TCP connections open past their handshake, in either direction,
    /// including any still closing after losing a simultaneous open. One
    /// per connected peer once things settle.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Frames dropped by [`try_send`](Self::try_send) at the high-water mark.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Stops accepting, writes out queued frames, closes every connection
    /// and waits for the transport's tasks to end.
    pub async fn shutdown(self) {
        let _ = self.shared.shutdown.send(true);
        let tasks: Vec<JoinHandle<()>> = lock(&self.shared.tasks).drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    /// The queue for `peer`: its live connection's, or a new dialing link.
    fn link(&self, peer: PeerId) -> Result<mpsc::Sender<Frame>, TcpError> {
        if *self.shared.shutdown.borrow() {
            return Err(TcpError::Shutdown);
        }
        let mut peers = lock(&self.shared.peers);
        if let Some(slot) = peers.get(&peer) {
            return Ok(slot.tx.clone());
        }
        let addr = lock(&self.shared.addrs)
            .get(&peer)
            .copied()
            .ok_or(TcpError::UnknownPeer(peer))?;
        let slot = PeerSlot::new(self.shared.config.peer_queue, true);
        let (tx, rx) = (slot.tx.clone(), Arc::clone(&slot.rx));
        peers.insert(peer, slot);
        drop(peers);
        let shared = Arc::clone(&self.shared);
        self.shared.spawn(dial_loop(shared, peer, addr, rx));
        Ok(tx)
    }
}

impl<W: StreamWrapper> Drop for TcpTransport<W> {
    fn drop(&mut self) {
        // Tasks notice, flush and exit; `shutdown` is the way to wait for them.
        let _ = self.shared.shutdown.send(true);
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

#[async_trait::async_trait]
impl<W: StreamWrapper> Transport for TcpTransport<W> {
    type Peer = PeerId;
    type Message = Frame;
    type Error = TcpError;

    async fn send(&self, to: PeerId, frame: Frame) -> Result<(), TcpError> {
        check(&self.shared.config, &frame)?;
        let link = self.link(to)?;
        link.send(frame).await.map_err(|_| TcpError::Shutdown)
    }

    async fn recv(&mut self) -> Result<Event<PeerId, Frame>, TcpError> {
        self.inbound.recv().await.ok_or(TcpError::Shutdown)
    }
}

// ----- tasks -----

async fn accept_loop<W: StreamWrapper>(shared: Arc<Shared<W>>, listener: TcpListener) {
    let mut stop = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let conn = Arc::clone(&shared);
                shared.spawn(serve(conn, stream));
            }
            _ = stopped(&mut stop) => return,
        }
    }
}

/// One accepted connection: handshake, then run it until it ends.
async fn serve<W: StreamWrapper>(shared: Arc<Shared<W>>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(stream) = shared.wrapper.server(stream).await else {
        return;
    };
    let (mut r, mut w) = W::split(stream);
    let mut buf = BytesMut::new();
    let hello = tokio::time::timeout(
        HELLO_TIMEOUT,
        read_hello(&mut r, &mut buf, shared.config.framing),
    );
    let Ok(Ok(peer)) = hello.await else {
        return;
    };
    let _open = Open::new(&shared.open);
    // Decide before answering, so the dialer never sees a hello on a
    // connection we have not accounted for.
    let conn = {
        let _order = shared.membership.lock().await;
        let conn = shared.register(peer, Direction::Inbound, None);
        if let Some(conn) = conn.as_ref().filter(|c| c.fresh) {
            shared.emit(Event::Connected(conn.peer)).await;
        }
        conn
    };
    if write_hello(&mut w, shared.id).await.is_err() {
        if let Some(conn) = conn {
            finish(&shared, &conn, Ended::Closed).await;
        }
        return;
    }
    match conn {
        Some(conn) => {
            let ended = run_connection(&shared, &conn, r, w, buf).await;
            finish(&shared, &conn, ended).await;
        }
        None => refuse(&shared, peer, r, w, buf).await,
    }
}

/// `conn` ended: if the peer is left without a connection, say so.
async fn finish<W: StreamWrapper>(shared: &Arc<Shared<W>>, conn: &Conn, ended: Ended) {
    let _order = shared.membership.lock().await;
    if shared.unregister(conn) && ended != Ended::Retired {
        shared.emit(Event::Disconnected(conn.peer)).await;
    }
}

/// Closes a connection that lost a simultaneous open right after its
/// handshake: nothing is written on it, and what the peer wrote before it
/// learnt is still read.
async fn refuse<W: StreamWrapper>(
    shared: &Arc<Shared<W>>,
    peer: PeerId,
    r: StreamReader,
    mut w: StreamWriter,
    buf: BytesMut,
) {
    let mut reader = tokio::spawn(read_loop(Arc::clone(shared), peer, r, buf));
    retire(shared, peer, &mut w, &mut reader).await;
}

/// Closes a losing connection to `peer` and reads it to its end, so what
/// the peer wrote before it switched is still delivered.
///
/// The lower id closes first; the higher id waits for that before closing
/// its side. Otherwise the lower id could see the loser close while it is
/// still its current connection (the winner's hello not yet read) and
/// report a disconnect that never was. Each wait is bounded by the hello
/// timeout (a peer that never closes) and by shutdown.
async fn retire<W>(
    shared: &Shared<W>,
    peer: PeerId,
    w: &mut StreamWriter,
    reader: &mut JoinHandle<()>,
) {
    let mut stop = shared.shutdown.subscribe();
    let close_first = shared.id < peer;
    if close_first {
        let _ = w.shutdown().await;
    }
    tokio::select! {
        _ = tokio::time::timeout(HELLO_TIMEOUT, &mut *reader) => {}
        _ = stopped(&mut stop) => {}
    }
    reader.abort();
    if !close_first {
        let _ = w.shutdown().await;
    }
}

/// Keeps a connection to `peer` up, redialing with backoff, until shutdown.
async fn dial_loop<W: StreamWrapper>(
    shared: Arc<Shared<W>>,
    peer: PeerId,
    addr: SocketAddr,
    rx: Queue,
) {
    let mut stop = shared.shutdown.subscribe();
    let mut backoff = shared.config.backoff_initial;
    loop {
        // The peer's own connection won a simultaneous open: no redial
        // while it is up.
        loop {
            let released = shared.released.notified();
            if !shared.connected(peer) {
                break;
            }
            tokio::select! {
                _ = released => {}
                _ = stopped(&mut stop) => return,
            }
        }
        // Shut down, or the peer was removed and its queue is drained.
        let drained = rx
            .try_lock()
            .is_ok_and(|rx| rx.is_closed() && rx.is_empty());
        if *stop.borrow() || drained {
            return;
        }
        if let Ok((r, w, buf)) = dial(&shared, peer, addr).await {
            let _open = Open::new(&shared.open);
            backoff = shared.config.backoff_initial;
            let conn = {
                let _order = shared.membership.lock().await;
                let conn = shared.register(peer, Direction::Outbound, Some(&rx));
                if let Some(conn) = conn.as_ref().filter(|c| c.fresh) {
                    shared.emit(Event::Connected(conn.peer)).await;
                }
                conn
            };
            let Some(conn) = conn else {
                refuse(&shared, peer, r, w, buf).await;
                continue;
            };
            let ended = run_connection(&shared, &conn, r, w, buf).await;
            finish(&shared, &conn, ended).await;
            match ended {
                Ended::Shutdown => return,
                // The peer's connection took over: wait for it above.
                Ended::Retired => continue,
                Ended::Closed => {}
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut stop) => return,
        }
        backoff = backoff.saturating_mul(2).min(shared.config.backoff_max);
    }
}

type Halves = (StreamReader, StreamWriter, BytesMut);

async fn dial<W: StreamWrapper>(
    shared: &Shared<W>,
    peer: PeerId,
    addr: SocketAddr,
) -> io::Result<Halves> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let stream = shared.wrapper.client(stream, peer).await?;
    let (mut r, mut w) = W::split(stream);
    write_hello(&mut w, shared.id).await?;
    let mut buf = BytesMut::new();
    let theirs = tokio::time::timeout(
        HELLO_TIMEOUT,
        read_hello(&mut r, &mut buf, shared.config.framing),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no hello"))??;
    if theirs != peer {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("dialed {peer} but {theirs} answered"),
        ));
    }
    Ok((r, w, buf))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// The connection failed or the peer closed it.
    Closed,
    /// We are shutting down (the queue was flushed first).
    Shutdown,
    /// Another connection to the peer took over its queue.
    Retired,
}

/// Runs one connection: a reader task feeding the inbound queue, and this
/// task writing the peer's queue, until either side ends, another connection
/// takes over, or we shut down.
async fn run_connection<W: StreamWrapper>(
    shared: &Arc<Shared<W>>,
    conn: &Conn,
    r: StreamReader,
    mut w: StreamWriter,
    buf: BytesMut,
) -> Ended {
    let mut reader = tokio::spawn(read_loop(Arc::clone(shared), conn.peer, r, buf));
    let ended = write_loop(shared, conn, &mut w, &mut reader).await;
    if ended == Ended::Retired {
        retire(shared, conn.peer, &mut w, &mut reader).await;
    } else {
        let _ = w.shutdown().await;
        reader.abort();
    }
    ended
}

/// Writes the peer's queue while this connection holds it.
async fn write_loop<W: StreamWrapper>(
    shared: &Arc<Shared<W>>,
    conn: &Conn,
    w: &mut StreamWriter,
    reader: &mut JoinHandle<()>,
) -> Ended {
    let mut stop = shared.shutdown.subscribe();
    // A connection that replaced another waits here until the old one's
    // writer lets go of the queue, so frames keep their order.
    // Biased: a queue that is free is taken even when shutdown is already
    // signalled, so its frames are written out below.
    let mut rx = tokio::select! {
        biased;
        rx = conn.rx.lock() => rx,
        _ = conn.retire.notified() => return Ended::Retired,
        _ = &mut *reader => return Ended::Closed,
        _ = stopped(&mut stop) => return Ended::Shutdown,
    };
    let framing = shared.config.framing;
    let mut out = BytesMut::new();
    loop {
        tokio::select! {
            frame = rx.recv() => {
                let Some(frame) = frame else { break Ended::Shutdown };
                // Coalesce whatever else is queued into one write.
                let mut next = Some(frame);
                while let Some(f) = next {
                    if framing.encode(&f, &mut out).is_err() {
                        break;
                    }
                    next = if out.len() < 64 * 1024 { rx.try_recv().ok() } else { None };
                }
                if w.write_all(&out).await.is_err() {
                    break Ended::Closed;
                }
                out.clear();
            }
            _ = &mut *reader => break Ended::Closed,
            _ = conn.retire.notified() => break Ended::Retired,
            _ = stopped(&mut stop) => {
                while let Ok(f) = rx.try_recv() {
                    let _ = framing.encode(&f, &mut out);
                }
                let _ = w.write_all(&out).await;
                break Ended::Shutdown;
            }
        }
    }
}

/// Decodes frames into the inbound queue until the stream ends or breaks.
async fn read_loop(
    shared: Arc<Shared<impl StreamWrapper>>,
    peer: PeerId,
    mut r: StreamReader,
    mut buf: BytesMut,
) {
    let framing = shared.config.framing;
    loop {
        match framing.decode(&mut buf) {
            Ok(Some(frame)) if frame.channel == CONTROL_CHANNEL => {}
            Ok(Some(frame)) => {
                // Waiting here is the back-pressure: we stop reading.
                shared
                    .emit(Event::Message {
                        from: peer,
                        msg: frame,
                    })
                    .await;
            }
            Ok(None) => {
                buf.reserve(16 * 1024);
                match r.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
            // A malformed stream cannot be resynchronised: close it.
            Err(_) => return,
        }
    }
}

/// Resolves once shutdown is signalled (or the transport is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn write_hello(w: &mut StreamWriter, id: PeerId) -> io::Result<()> {
    let mut out = BytesMut::new();
    let payload = Bytes::copy_from_slice(&id.0.to_be_bytes());
    FrameCodec::new()
        .encode(&Frame::new(CONTROL_CHANNEL, payload), &mut out)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    w.write_all(&out).await
}

async fn read_hello(
    r: &mut StreamReader,
    buf: &mut BytesMut,
    framing: FrameCodec,
) -> io::Result<PeerId> {
    loop {
        match framing.decode(buf) {
            Ok(Some(frame)) => {
                let mut p = frame.payload;
                if frame.channel != CONTROL_CHANNEL || p.len() != 8 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "bad hello"));
                }
                return Ok(PeerId(p.get_u64()));
            }
            Ok(None) => {
                buf.reserve(1024);
                if r.read_buf(buf).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }
}
