//! TCP proxies between node processes, so a test can partition them.
//!
//! [`Network`] has one listening proxy per ordered pair of nodes (a, b):
//! node a dials b at `proxy(a, b)`, which forwards to b's real address.
//! Bytes from the dialer flow a→b, the answers b→a, so each direction of
//! every link is known and has a [`Mode`]:
//!
//! - [`Mode::Pass`] forwards.
//! - [`Mode::Drop`] discards, from the start of a connection: setting it
//!   (and healing from it) resets the pair's connections, because
//!   discarding from the middle of a stream would corrupt its framing. A
//!   link dropped both ways refuses new connections outright. On TCP a
//!   one-way drop ends up breaking the connection both ways, as a real
//!   one-way packet loss would.
//! - [`Mode::Stall`] stops reading: bytes pile up in socket buffers and
//!   flow again, in order and complete, when healed (a congested or
//!   frozen link).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Error;

/// What a direction of a link does with its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Forwards them.
    #[default]
    Pass,
    /// Discards them (connections reset when this starts and ends).
    Drop,
    /// Holds them (stops reading).
    Stall,
}

/// A directed link: bytes from `.0` to `.1`.
pub type Link = (u64, u64);

struct Conn {
    pair: Link,
    streams: [TcpStream; 2],
    closed: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    modes: HashMap<Link, Mode>,
    conns: Vec<Conn>,
}

struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
    /// Bytes forwarded, over every link.
    forwarded: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn mode(&self, link: Link) -> Mode {
        self.lock().modes.get(&link).copied().unwrap_or_default()
    }
}

/// Proxies between every pair of a set of nodes; stops (and closes every
/// proxied connection) when dropped.
pub struct Network {
    shared: Arc<Shared>,
    proxies: HashMap<Link, SocketAddr>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("proxies", &self.proxies)
            .finish_non_exhaustive()
    }
}

impl Network {
    /// Proxies for every ordered pair of `nodes` (id and real address).
    pub fn new(nodes: &[(u64, SocketAddr)]) -> Result<Self, Error> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            stop: AtomicBool::new(false),
            forwarded: AtomicU64::new(0),
        });
        let mut proxies = HashMap::new();
        let mut threads = Vec::new();
        for &(from, _) in nodes {
            for &(to, target) in nodes {
                if from == to {
                    continue;
                }
                let listener = TcpListener::bind("127.0.0.1:0")?;
                listener.set_nonblocking(true)?;
                proxies.insert((from, to), listener.local_addr()?);
                let shared = Arc::clone(&shared);
                threads.push(std::thread::spawn(move || {
                    accept_loop(&shared, &listener, (from, to), target);
                }));
            }
        }
        Ok(Network {
            shared,
            proxies,
            threads,
        })
    }

    /// The peers node `id` should dial: each other node at its proxy.
    pub fn peers_of(&self, id: u64) -> Vec<(u64, SocketAddr)> {
        let mut peers: Vec<(u64, SocketAddr)> = self
            .proxies
            .iter()
            .filter(|((from, _), _)| *from == id)
            .map(|(&(_, to), &addr)| (to, addr))
            .collect();
        peers.sort_unstable();
        peers
    }

    /// Every proxy's listening port.
    pub fn ports(&self) -> Vec<u16> {
        self.proxies.values().map(SocketAddr::port).collect()
    }

    /// Bytes forwarded so far, over every link.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }

    /// Sets the mode of the directions in `links`.
    pub fn set(&self, links: &[Link], mode: Mode) {
        let mut state = self.shared.lock();
        let mut reset = Vec::new();
        for &link in links {
            let old = state.modes.insert(link, mode).unwrap_or_default();
            if (old == Mode::Drop) != (mode == Mode::Drop) {
                reset.push(link);
            }
        }
        for conn in &state.conns {
            let (a, b) = conn.pair;
            if reset.iter().any(|&l| l == (a, b) || l == (b, a)) {
                close(conn);
            }
        }
        state.conns.retain(|c| !c.closed.load(Ordering::Relaxed));
    }

    /// Sets both directions between `a` and `b`.
    pub fn set_pair(&self, a: u64, b: u64, mode: Mode) {
        self.set(&[(a, b), (b, a)], mode);
    }

    /// Cuts every link between a node of `left` and a node of `right`,
    /// both ways.
    pub fn partition(&self, left: &[u64], right: &[u64]) {
        let links: Vec<Link> = left
            .iter()
            .flat_map(|&a| right.iter().flat_map(move |&b| [(a, b), (b, a)]))
            .collect();
        self.set(&links, Mode::Drop);
    }

    /// Every link back to [`Mode::Pass`].
    pub fn heal(&self) {
        let links: Vec<Link> = self.proxies.keys().copied().collect();
        self.set(&links, Mode::Pass);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        {
            let mut state = self.shared.lock();
            for conn in &state.conns {
                close(conn);
            }
            state.conns.clear();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn close(conn: &Conn) {
    conn.closed.store(true, Ordering::Relaxed);
    for s in &conn.streams {
        let _ = s.shutdown(Shutdown::Both);
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener, link: Link, target: SocketAddr) {
    let mut pumps: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                if let Some(p) = connect(shared, client, link, target) {
                    pumps.extend(p);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
        pumps.retain(|p| !p.is_finished());
    }
    for p in pumps {
        let _ = p.join();
    }
}

fn connect(
    shared: &Arc<Shared>,
    client: TcpStream,
    link: Link,
    target: SocketAddr,
) -> Option<[JoinHandle<()>; 2]> {
    let (a, b) = link;
    if shared.mode((a, b)) == Mode::Drop && shared.mode((b, a)) == Mode::Drop {
        // Cut both ways: as if the connection were refused.
        let _ = client.shutdown(Shutdown::Both);
        return None;
    }
    let server = TcpStream::connect_timeout(&target, Duration::from_secs(1)).ok()?;
    let _ = client.set_nonblocking(false);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let closed = Arc::new(AtomicBool::new(false));
    let streams = [client.try_clone().ok()?, server.try_clone().ok()?];
    shared.lock().conns.push(Conn {
        pair: link,
        streams,
        closed: Arc::clone(&closed),
    });
    let up = {
        let (shared, closed) = (Arc::clone(shared), Arc::clone(&closed));
        let (src, dst) = (client.try_clone().ok()?, server.try_clone().ok()?);
        std::thread::spawn(move || pump(&shared, &closed, src, dst, (a, b)))
    };
    let down = {
        let shared = Arc::clone(shared);
        std::thread::spawn(move || pump(&shared, &closed, server, client, (b, a)))
    };
    Some([up, down])
}

/// Copies `src` to `dst` as the mode of `link` says, until either closes.
fn pump(shared: &Shared, closed: &AtomicBool, mut src: TcpStream, mut dst: TcpStream, link: Link) {
    let _ = src.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 * 1024];
    while !closed.load(Ordering::Relaxed) && !shared.stop.load(Ordering::Relaxed) {
        let mode = shared.mode(link);
        if mode == Mode::Stall {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        // The mode may have changed while reading; Drop resets the
        // connection, so bytes read here under Pass are still in order.
        if shared.mode(link) == Mode::Drop {
            continue;
        }
        let Some(chunk) = buf.get(..n) else { break };
        if dst.write_all(chunk).is_err() {
            break;
        }
        shared.forwarded.fetch_add(n as u64, Ordering::Relaxed);
    }
    closed.store(true, Ordering::Relaxed);
    let _ = src.shutdown(Shutdown::Both);
    let _ = dst.shutdown(Shutdown::Both);
}
