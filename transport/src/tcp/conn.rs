//! The transport's tasks: accepting, dialing, the handshake, and each
//! connection's reader and writer.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::limits::{
    ACCEPT_BACKOFF_INITIAL, ACCEPT_BACKOFF_MAX, Backoff, Charge, Limit, Slot, bump, millis,
    read_size,
};
use super::log::tcp_log;
use super::queue::{InLane, OutQueue};
use super::trust::{Admission, Trust, admit, next_client_id};
use super::{
    CONTROL_CHANNEL, Conn, Kind, Open, PeerId, Shared, StreamReader, StreamWrapper, StreamWriter,
    lock,
};
use crate::framing::{Flags, Frame, FrameCodec, FrameError, HEADER_LEN};
use crate::simultaneous_open::Direction;
use crate::transport::Event;

/// A hello's payload: the sender's id.
const HELLO_LEN: usize = 8;

pub(super) async fn accept_loop<W: StreamWrapper>(shared: Arc<Shared<W>>, listener: TcpListener) {
    let mut stop = shared.shutdown.subscribe();
    let mut backoff = Backoff::new(ACCEPT_BACKOFF_INITIAL, ACCEPT_BACKOFF_MAX);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(&mut stop) => return,
        };
        match accepted {
            Ok((stream, remote)) => {
                backoff.reset();
                let max = shared.config.max_connections;
                let Some(slot) = Slot::take(&shared.accepted, max) else {
                    let open = shared.accepted.load(Ordering::Relaxed) as u64;
                    shared.hit(Limit::MaxConnections, &remote, open, max as u64);
                    drop(stream);
                    continue;
                };
                let conn = Arc::clone(&shared);
                shared.spawn(serve(conn, stream, remote, slot));
            }
            // Out of descriptors and the like: retrying at once would spin.
            Err(e) => {
                bump(&shared.counters.accept_errors);
                let pause = backoff.next_delay();
                tcp_log!(warn, "accept failed: {e}; retrying in {pause:?}");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stopped(&mut stop) => return,
                }
            }
        }
    }
}

/// One accepted connection: handshake, admission, then run it until it
/// ends. `_slot` holds its place under `max_connections`.
async fn serve<W: StreamWrapper>(
    shared: Arc<Shared<W>>,
    stream: TcpStream,
    remote: SocketAddr,
    _slot: Slot,
) {
    let _ = stream.set_nodelay(true);
    let limit = shared.config.hello_timeout;
    let handshake = async {
        let stream = shared.wrapper.server(stream).await?;
        let proven = W::peer_identity(&stream);
        let (mut r, w) = W::split(stream);
        let mut buf = BytesMut::new();
        let claimed = read_hello(&mut r, &mut buf).await?;
        io::Result::Ok((r, w, buf, claimed, proven))
    };
    let mut stop = shared.shutdown.subscribe();
    let handshake = tokio::select! {
        handshake = tokio::time::timeout(limit, handshake) => handshake,
        // Shutdown does not wait for strangers to finish their hello.
        _ = stopped(&mut stop) => return,
    };
    let (r, mut w, buf, claimed, proven) = match handshake {
        Ok(Ok(handshake)) => handshake,
        Ok(Err(e)) => {
            tcp_log!(debug, "handshake from {remote} failed: {e}");
            return;
        }
        Err(_) => {
            shared.hit(Limit::HelloTimeout, &remote, millis(limit), millis(limit));
            return;
        }
    };
    let config = &shared.config;
    let known = lock(&shared.addrs).contains_key(&claimed);
    let (peer, kind) = match admit(
        config.trust,
        shared.wrapper.authenticates(),
        claimed,
        known,
        proven,
    ) {
        Admission::Peer(peer) => (peer, Kind::Peer),
        Admission::Client => (next_client_id(), Kind::Client),
        Admission::Refuse(reason) => {
            bump(&shared.counters.refused_hellos);
            tcp_log!(
                warn,
                "refused hello claiming {claimed} from {remote}: {reason} (proved {proven:?})"
            );
            return;
        }
    };
    let _open = Open::new(shared.open(kind));
    // Decide before answering, so the dialer never sees a hello on a
    // connection we have not accounted for.
    let conn = connected(&shared, peer, kind, remote, Direction::Inbound, None).await;
    if let Some(conn) = conn.as_ref().filter(|c| c.kind == Kind::Client) {
        shared.claimed(conn, claimed);
    }
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
        None => refuse(&shared, peer, remote, r, w, buf).await,
    }
}

/// Registers a connection that exchanged hellos and reports a peer that
/// was without one.
async fn connected<W: StreamWrapper>(
    shared: &Arc<Shared<W>>,
    peer: PeerId,
    kind: Kind,
    addr: SocketAddr,
    direction: Direction,
    own: Option<&Arc<OutQueue>>,
) -> Option<Conn> {
    let _order = shared.membership.lock().await;
    let conn = shared.register(peer, kind, addr, direction, own);
    if let Some(conn) = conn.as_ref().filter(|c| c.fresh) {
        tcp_log!(info, "{peer} connected ({direction:?}, {addr})");
        shared.emit(kind.lane(), Event::Connected(conn.peer)).await;
    }
    conn
}

/// `conn` ended: if the peer is left without a connection, say so.
async fn finish<W: StreamWrapper>(shared: &Arc<Shared<W>>, conn: &Conn, ended: Ended) {
    let _order = shared.membership.lock().await;
    if shared.unregister(conn) && ended != Ended::Retired {
        tcp_log!(
            info,
            "{} disconnected ({:?}, {}, {ended:?})",
            conn.peer,
            conn.direction,
            conn.addr
        );
        shared
            .emit(conn.kind.lane(), Event::Disconnected(conn.peer))
            .await;
    }
}

/// Closes a connection that lost a simultaneous open right after its
/// handshake: nothing is written on it, and what the peer wrote before it
/// learnt is still read.
async fn refuse<W: StreamWrapper>(
    shared: &Arc<Shared<W>>,
    peer: PeerId,
    addr: SocketAddr,
    r: StreamReader,
    mut w: StreamWriter,
    buf: BytesMut,
) {
    let reader = read_loop(Arc::clone(shared), peer, Kind::Peer, addr, r, buf);
    let mut reader = tokio::spawn(reader);
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
        _ = tokio::time::timeout(shared.config.hello_timeout, &mut *reader) => {}
        _ = stopped(&mut stop) => {}
    }
    reader.abort();
    if !close_first {
        let _ = w.shutdown().await;
    }
}

/// Keeps a connection to `peer` up, redialing with backoff, until shutdown.
pub(super) async fn dial_loop<W: StreamWrapper>(
    shared: Arc<Shared<W>>,
    peer: PeerId,
    addr: SocketAddr,
    queue: Arc<OutQueue>,
) {
    let mut stop = shared.shutdown.subscribe();
    let mut backoff = Backoff::new(shared.config.backoff_initial, shared.config.backoff_max);
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
        if *stop.borrow() || queue.is_drained() {
            return;
        }
        match dial(&shared, peer, addr).await {
            Ok((r, w, buf)) => {
                let _open = Open::new(&shared.open_peers);
                backoff.reset();
                let conn = connected(
                    &shared,
                    peer,
                    Kind::Peer,
                    addr,
                    Direction::Outbound,
                    Some(&queue),
                )
                .await;
                let Some(conn) = conn else {
                    refuse(&shared, peer, addr, r, w, buf).await;
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
            Err(e) => shared.dial_failed(peer, addr, &e),
        }
        let pause = backoff.next_delay();
        tcp_log!(debug, "redialing {peer} at {addr} in {pause:?}");
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

type Halves = (StreamReader, StreamWriter, BytesMut);

async fn dial<W: StreamWrapper>(
    shared: &Shared<W>,
    peer: PeerId,
    addr: SocketAddr,
) -> io::Result<Halves> {
    let limit = shared.config.connect_timeout;
    let connect = async {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        shared.wrapper.client(stream, peer).await
    };
    let stream = tokio::time::timeout(limit, connect).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection within {limit:?}"),
        )
    })??;
    let (mut r, mut w) = W::split(stream);
    write_hello(&mut w, shared.id).await?;
    let mut buf = BytesMut::new();
    let theirs = tokio::time::timeout(shared.config.hello_timeout, read_hello(&mut r, &mut buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no hello"))?
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => io::Error::new(
                e.kind(),
                "closed before its hello (our hello refused, or a limit hit)",
            ),
            _ => e,
        })?;
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
    /// We are shutting down (the queue was flushed first), or the peer was
    /// removed and its queue written out.
    Shutdown,
    /// Another connection to the peer took over its queue.
    Retired,
}

/// Runs one connection: a reader task feeding the inbound lanes, and this
/// task writing the peer's queue, until either side ends, another connection
/// takes over, or we shut down.
async fn run_connection<W: StreamWrapper>(
    shared: &Arc<Shared<W>>,
    conn: &Conn,
    r: StreamReader,
    mut w: StreamWriter,
    buf: BytesMut,
) -> Ended {
    let reader = read_loop(Arc::clone(shared), conn.peer, conn.kind, conn.addr, r, buf);
    let mut reader = tokio::spawn(reader);
    let ended = write_loop(shared, conn, &mut w, &mut reader).await;
    if ended == Ended::Retired {
        retire(shared, conn.peer, &mut w, &mut reader).await;
    } else {
        let _ = w.shutdown().await;
        reader.abort();
    }
    ended
}

/// When `d` after `from` is; `None` (never) for a zero `d` (the limit is
/// off) or one too far off to represent.
fn after(from: Instant, d: core::time::Duration) -> Option<Instant> {
    if d.is_zero() {
        return None;
    }
    from.checked_add(d)
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => core::future::pending().await,
    }
}

/// Writes the peer's queue while this connection holds it, urgent frames
/// first, with a ping whenever it has been silent for a quarter of the idle
/// timeout.
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
    let _writer = tokio::select! {
        biased;
        writer = conn.queue.writer.lock() => writer,
        _ = conn.retire.notified() => return Ended::Retired,
        _ = &mut *reader => return Ended::Closed,
        _ = stopped(&mut stop) => return Ended::Shutdown,
    };
    let framing = shared.config.framing;
    let ping_every = shared.config.idle_timeout / 4;
    let mut out = BytesMut::new();
    let mut last_write = Instant::now();
    loop {
        // Biased toward the rare events: a queue that is never empty must
        // not keep a retired connection writing.
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => {
                conn.queue.take_all(framing, &mut out);
                let _ = w.write_all(&out).await;
                break Ended::Shutdown;
            }
            _ = conn.retire.notified() => break Ended::Retired,
            _ = &mut *reader => break Ended::Closed,
            () = conn.queue.ready() => {
                if !conn.queue.take_batch(framing, &mut out) {
                    break Ended::Shutdown;
                }
            }
            () = sleep_until(after(last_write, ping_every)) => {
                let _ = framing.encode(&Frame::new(CONTROL_CHANNEL, Bytes::new()), &mut out);
            }
        }
        if !out.is_empty() {
            if w.write_all(&out).await.is_err() {
                break Ended::Closed;
            }
            out.clear();
            last_write = Instant::now();
        }
    }
}

/// Decodes frames into the inbound lanes until the stream ends, breaks or
/// hits a limit.
async fn read_loop<W: StreamWrapper>(
    shared: Arc<Shared<W>>,
    peer: PeerId,
    kind: Kind,
    addr: SocketAddr,
    mut r: StreamReader,
    mut buf: BytesMut,
) {
    let config = &shared.config;
    let framing = match kind {
        Kind::Peer => config.framing,
        Kind::Client => FrameCodec::with_max_frame_size(
            config.client_max_frame.min(config.framing.max_frame_size()),
        ),
    };
    let idle = config.idle_timeout;
    // Known peers under `KnownPeers` are few and trusted: clients filling
    // the cap must not get node-to-node connections closed.
    let charged = kind == Kind::Client || config.trust == Trust::Hello;
    let mut charge = Charge::new(charged.then_some(&shared.budget));
    // When the last frame completed (or the consumer took the last one: a
    // reader waiting for room in its lane is not idle).
    let mut last_frame = Instant::now();
    loop {
        match framing.decode(&mut buf) {
            Ok(Some(frame)) => {
                // Shrinking never fails.
                charge.set(buf.len());
                if frame.channel == CONTROL_CHANNEL {
                    last_frame = Instant::now();
                    continue;
                }
                let lane = match kind {
                    Kind::Peer if frame.flags.contains(Flags::URGENT) => InLane::Urgent,
                    Kind::Peer => InLane::Peers,
                    Kind::Client => InLane::Clients,
                };
                // Waiting here is the back-pressure: we stop reading.
                let event = Event::Message {
                    from: peer,
                    msg: frame,
                };
                shared.emit(lane, event).await;
                last_frame = Instant::now();
            }
            Ok(None) => {
                let want = read_size(&buf);
                buf.reserve(want);
                let mut room = (&mut buf).limit(want);
                let read = r.read_buf(&mut room);
                let read = match after(last_frame, idle) {
                    Some(deadline) => tokio::time::timeout_at(deadline, read).await,
                    None => Ok(read.await),
                };
                match read {
                    Err(_) => {
                        let silent = millis(last_frame.elapsed());
                        shared.hit(Limit::IdleTimeout, &addr, silent, millis(idle));
                        return;
                    }
                    Ok(Ok(0) | Err(_)) => return,
                    Ok(Ok(_)) => {}
                }
                if !charge.set(buf.len()) {
                    let cap = shared.budget.cap() as u64;
                    let total = (shared.budget.held() + buf.len()) as u64;
                    shared.hit(Limit::BufferedBytes, &addr, total, cap);
                    return;
                }
            }
            Err(FrameError::TooLarge { len, max }) if kind == Kind::Client => {
                shared.hit(Limit::ClientFrame, &addr, len, max as u64);
                return;
            }
            // A malformed stream cannot be resynchronised: close it.
            Err(e) => {
                bump(&shared.counters.malformed);
                tcp_log!(warn, "{peer} at {addr}: {e}; connection closed");
                return;
            }
        }
    }
}

/// Resolves once shutdown is signalled (or the transport is gone).
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
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

/// Reads the hello, and not a byte past it.
async fn read_hello(r: &mut StreamReader, buf: &mut BytesMut) -> io::Result<PeerId> {
    let framing = FrameCodec::with_max_frame_size(HELLO_LEN);
    loop {
        match framing.decode(buf) {
            Ok(Some(frame)) => {
                let mut p = frame.payload;
                if frame.channel != CONTROL_CHANNEL || p.len() != HELLO_LEN {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "bad hello"));
                }
                return Ok(PeerId(p.get_u64()));
            }
            Ok(None) => {
                let want = (HEADER_LEN + HELLO_LEN).saturating_sub(buf.len()).max(1);
                buf.reserve(want);
                if r.read_buf(&mut (&mut *buf).limit(want)).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }
}
