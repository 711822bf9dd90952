//! Trust: who a hello may claim to be, with and without a wrapper that
//! proves identities (127.0.0.1, ephemeral ports only).
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::{closed_within, eventually, frame, hello, next_event, next_message, wait_for};
use quorate_transport::Event;
use quorate_transport::Transport;
use quorate_transport::tcp::{PeerId, StreamWrapper, TcpConfig, TcpTransport, Trust};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

const SERVER: PeerId = PeerId(1);
const NODE: PeerId = PeerId(5);

/// A test double for an authenticating wrapper (not crypto): the dialer
/// sends a 9-byte token before the hello, `[1, id]` to "prove" `id` or
/// `[0; 9]` to prove nothing, and the acceptor believes it.
#[derive(Clone, Copy, Debug)]
struct Token {
    /// What this side proves when it dials.
    prove: Option<PeerId>,
    /// Whether this side, accepting, demands proof.
    check: bool,
}

fn token(prove: Option<PeerId>) -> [u8; 9] {
    let mut t = [0u8; 9];
    if let Some(id) = prove {
        t[0] = 1;
        t[1..].copy_from_slice(&id.0.to_be_bytes());
    }
    t
}

/// A stream with the identity its token proved.
#[derive(Debug)]
struct Proved {
    inner: TcpStream,
    id: Option<PeerId>,
}

impl AsyncRead for Proved {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Proved {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[async_trait::async_trait]
impl StreamWrapper for Token {
    type Stream = Proved;
    async fn client(&self, mut stream: TcpStream, _peer: PeerId) -> io::Result<Proved> {
        stream.write_all(&token(self.prove)).await?;
        Ok(Proved {
            inner: stream,
            id: None,
        })
    }
    async fn server(&self, mut stream: TcpStream) -> io::Result<Proved> {
        let mut t = [0u8; 9];
        stream.read_exact(&mut t).await?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&t[1..]);
        let id = (t[0] == 1).then_some(PeerId(u64::from_be_bytes(id)));
        Ok(Proved { inner: stream, id })
    }
    fn authenticates(&self) -> bool {
        self.check
    }
    fn peer_identity(stream: &Proved) -> Option<PeerId> {
        stream.id
    }
}

/// Where nothing listens (a known peer the server never dials).
fn nowhere() -> SocketAddr {
    "127.0.0.1:1".parse().unwrap()
}

fn config(trust: Trust) -> TcpConfig {
    TcpConfig {
        trust,
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        ..TcpConfig::default()
    }
}

/// Dials `addr` by hand with `token` (if any) and a hello claiming
/// `claimed`: whether the server answered with its own hello.
async fn raw_hello(addr: SocketAddr, token_bytes: Option<[u8; 9]>, claimed: u64) -> bool {
    let mut s = TcpStream::connect(addr).await.unwrap();
    if let Some(t) = token_bytes {
        s.write_all(&t).await.unwrap();
    }
    s.write_all(&hello(claimed)).await.unwrap();
    let mut answer = [0u8; 17];
    let answered = tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut answer))
        .await
        .expect("neither answered nor closed within 5 s")
        .is_ok();
    if !answered {
        assert!(
            closed_within(&mut s, Duration::from_secs(1))
                .await
                .is_some()
        );
    }
    answered
}

#[tokio::test]
async fn known_peers_gives_each_client_connection_its_own_id() {
    let cfg = config(Trust::KnownPeers);
    let mut server = TcpTransport::bind(SERVER, "127.0.0.1:0", cfg)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    server.add_peer(NODE, nowhere());

    // A known id is that peer.
    let node = TcpTransport::client(NODE, cfg);
    node.add_peer(SERVER, addr);
    node.send(SERVER, frame(0, "from the node")).await.unwrap();
    assert_eq!(next_event(&mut server).await, Event::Connected(NODE));
    assert_eq!(next_message(&mut server).await.0, NODE);

    // Two clients claiming the same unknown id stay apart.
    let mut a = TcpTransport::client(PeerId(42), cfg);
    let mut b = TcpTransport::client(PeerId(42), cfg);
    for (c, name) in [(&a, "a"), (&b, "b")] {
        c.add_peer(SERVER, addr);
        c.send(SERVER, frame(0, name)).await.unwrap();
    }
    let mut ids = Vec::new();
    while ids.len() < 2 {
        match next_event(&mut server).await {
            Event::Connected(id) => assert!(id.is_client(), "{id}"),
            Event::Message { from, msg } => {
                assert!(from.is_client() && from != PeerId(42), "{from}");
                ids.push((from, msg.payload));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_ne!(ids[0].0, ids[1].0, "two clients got the same id");
    let stats = server.stats();
    assert_eq!((stats.peer_connections, stats.client_connections), (1, 2));

    // Replies reach each client on its own connection.
    for (from, payload) in &ids {
        let reply = [b"re:".as_slice(), payload].concat();
        server
            .try_send(*from, frame(0, std::str::from_utf8(&reply).unwrap()))
            .unwrap();
    }
    assert_eq!(&next_message(&mut a).await.1.payload[..], b"re:a");
    assert_eq!(&next_message(&mut b).await.1.payload[..], b"re:b");

    // Its disconnect carries the id it was given.
    let a_id = ids.iter().find(|(_, p)| p == &Bytes::from("a")).unwrap().0;
    a.shutdown().await;
    wait_for(&mut server, Event::Disconnected(a_id)).await;
    b.shutdown().await;
    node.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn with_proof_known_peers_needs_it_and_strangers_are_clients() {
    let cfg = config(Trust::KnownPeers);
    let check = Token {
        prove: None,
        check: true,
    };
    let mut server = TcpTransport::bind_with(SERVER, "127.0.0.1:0", cfg, check)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    server.add_peer(NODE, nowhere());

    // Proven: the peer.
    let prover = Token {
        prove: Some(NODE),
        check: false,
    };
    let node = TcpTransport::client_with(NODE, cfg, prover);
    node.add_peer(SERVER, addr);
    node.send(SERVER, frame(0, "proven")).await.unwrap();
    assert_eq!(next_event(&mut server).await, Event::Connected(NODE));
    assert_eq!(next_message(&mut server).await.0, NODE);

    // A known id without proof, or with proof of another id: refused.
    assert!(!raw_hello(addr, Some(token(None)), NODE.0).await);
    assert_eq!(server.stats().refused_hellos, 1);
    assert!(!raw_hello(addr, Some(token(Some(PeerId(6)))), NODE.0).await);
    assert_eq!(server.stats().refused_hellos, 2);

    // An unknown id without proof: a client connection.
    assert!(raw_hello(addr, Some(token(None)), 42).await);
    let Event::Connected(id) = next_event(&mut server).await else {
        panic!("no connect")
    };
    assert!(id.is_client(), "{id}");
    assert_eq!(server.stats().refused_hellos, 2);
    assert_eq!(server.stats().peer_connections, 1, "the node is still up");
    node.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn with_proof_hello_trust_refuses_unproven_hellos() {
    let cfg = config(Trust::Hello);
    let check = Token {
        prove: None,
        check: true,
    };
    let mut server = TcpTransport::bind_with(SERVER, "127.0.0.1:0", cfg, check)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();

    assert!(raw_hello(addr, Some(token(Some(PeerId(7)))), 7).await);
    assert_eq!(next_event(&mut server).await, Event::Connected(PeerId(7)));

    assert!(!raw_hello(addr, Some(token(None)), 8).await);
    assert!(!raw_hello(addr, Some(token(Some(PeerId(9)))), 8).await);
    assert_eq!(server.stats().refused_hellos, 2);
    // The proven connection (dropped by raw_hello) comes and goes; the
    // refused ones are never reported.
    assert_eq!(
        next_event(&mut server).await,
        Event::Disconnected(PeerId(7))
    );
    let quiet = tokio::time::timeout(Duration::from_millis(200), server.recv()).await;
    assert!(quiet.is_err(), "unexpected {quiet:?}");

    // A transport whose dial is refused learns why.
    let liar = TcpTransport::client_with(
        PeerId(8),
        cfg,
        Token {
            prove: None,
            check: false,
        },
    );
    liar.add_peer(SERVER, addr);
    liar.try_send(SERVER, frame(0, "x")).unwrap();
    eventually("the failed dial is recorded", || {
        liar.dial_failure(SERVER).is_some()
    })
    .await;
    let failure = liar.dial_failure(SERVER).unwrap();
    assert_eq!(failure.addr, addr);
    assert!(server.stats().refused_hellos >= 3);
    println!("refused dial: {failure}");
    liar.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn plain_hello_trust_still_believes_the_hello() {
    let mut server = TcpTransport::bind(SERVER, "127.0.0.1:0", config(Trust::Hello))
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    assert!(raw_hello(addr, None, 77).await);
    assert_eq!(next_event(&mut server).await, Event::Connected(PeerId(77)));
    assert_eq!(server.stats().refused_hellos, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_connected_before_it_was_known_comes_back_as_the_peer() {
    let cfg = config(Trust::KnownPeers);
    let mut server = TcpTransport::bind(SERVER, "127.0.0.1:0", cfg)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let node = TcpTransport::client(NODE, cfg);
    node.add_peer(SERVER, addr);
    node.send(SERVER, frame(0, "early")).await.unwrap();
    let (early, _) = next_message(&mut server).await;
    assert!(early.is_client(), "{early}");

    // Known now: the client connection closes and the node redials as itself.
    server.add_peer(NODE, nowhere());
    wait_for(&mut server, Event::Disconnected(early)).await;
    wait_for(&mut server, Event::Connected(NODE)).await;
    node.send(SERVER, frame(0, "late")).await.unwrap();
    let (from, msg) = next_message(&mut server).await;
    assert_eq!((from, &msg.payload[..]), (NODE, &b"late"[..]));
    let stats = server.stats();
    assert_eq!((stats.peer_connections, stats.client_connections), (1, 0));
    node.shutdown().await;
    server.shutdown().await;
}
