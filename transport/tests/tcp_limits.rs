//! Resource limits: hello and idle timeouts, the client frame limit, the
//! cap on buffered partial frames, the connection cap, keepalives and
//! dial failures (127.0.0.1, ephemeral ports only).
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{closed_within, eventually, frame, header, hello, next_event, next_message, wait_for};
use quorate_transport::framing::{ChannelId, Flags, Frame};
use quorate_transport::tcp::{PeerId, TcpConfig, TcpTransport, Trust};
use quorate_transport::{Event, Transport};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const SERVER: PeerId = PeerId(1);

async fn server(config: TcpConfig) -> (TcpTransport, SocketAddr) {
    let t = TcpTransport::bind(SERVER, "127.0.0.1:0", config)
        .await
        .unwrap();
    let addr = t.local_addr().unwrap();
    (t, addr)
}

#[tokio::test]
async fn a_connection_that_does_not_say_hello_in_time_is_closed() {
    let limit = Duration::from_millis(200);
    let (server, addr) = server(TcpConfig {
        hello_timeout: limit,
        ..TcpConfig::default()
    })
    .await;
    // Silent, and half a hello.
    let start = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(&hello(9)[..5]).await.unwrap();
    for s in [&mut silent, &mut half] {
        closed_within(s, Duration::from_secs(5))
            .await
            .expect("still open after 5 s");
        let after = start.elapsed();
        assert!(after >= limit, "closed after {after:?}");
    }
    let stats = server.stats();
    assert_eq!(stats.closed.hello_timeout, 2);
    assert_eq!(stats.peer_connections, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_connection_stalled_inside_a_frame_is_closed_when_idle() {
    let idle = Duration::from_millis(300);
    let (mut server, addr) = server(TcpConfig {
        idle_timeout: idle,
        ..TcpConfig::default()
    })
    .await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(&hello(7)).await.unwrap();
    wait_for(&mut server, Event::Connected(PeerId(7))).await;
    // A frame that never completes: 10 of 100 bytes.
    let start = Instant::now();
    raw.write_all(&header(100, ChannelId(0), Flags::NONE))
        .await
        .unwrap();
    raw.write_all(&[0u8; 10]).await.unwrap();
    assert_eq!(
        next_event(&mut server).await,
        Event::Disconnected(PeerId(7))
    );
    let after = start.elapsed();
    assert!(after >= idle - Duration::from_millis(50), "{after:?}");
    assert!(
        closed_within(&mut raw, Duration::from_secs(5))
            .await
            .is_some()
    );
    let stats = server.stats();
    assert_eq!(stats.closed.idle_timeout, 1);
    assert_eq!(stats.buffered_bytes, 0, "its partial frame was given back");
    server.shutdown().await;
}

#[tokio::test]
async fn quiet_transports_keep_their_connection_with_pings() {
    let config = TcpConfig {
        idle_timeout: Duration::from_millis(200),
        ..TcpConfig::default()
    };
    let (mut server, addr) = server(config).await;
    let mut client = TcpTransport::client(PeerId(2), config);
    client.add_peer(SERVER, addr);
    client.send(SERVER, frame(0, "one")).await.unwrap();
    next_message(&mut server).await;
    // Seven idle timeouts with no application traffic either way.
    let quiet = tokio::time::timeout(Duration::from_millis(1400), server.recv()).await;
    assert!(quiet.is_err(), "unexpected {quiet:?}");
    client.send(SERVER, frame(0, "two")).await.unwrap();
    let (from, msg) = next_message(&mut server).await;
    assert_eq!((from, &msg.payload[..]), (PeerId(2), &b"two"[..]));
    while let Ok(ev) = tokio::time::timeout(Duration::from_millis(10), client.recv()).await {
        assert_eq!(ev.unwrap(), Event::Connected(SERVER), "client saw a drop");
    }
    assert_eq!(server.stats().closed.idle_timeout, 0);
    assert_eq!(client.stats().closed.idle_timeout, 0);
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn client_connections_may_send_small_frames_only() {
    const NODE: PeerId = PeerId(5);
    let config = TcpConfig {
        trust: Trust::KnownPeers,
        client_max_frame: 1024,
        ..TcpConfig::default()
    };
    let (mut server, addr) = server(config).await;
    server.add_peer(NODE, "127.0.0.1:1".parse().unwrap());
    let big = |n: usize| Frame::new(ChannelId(0), Bytes::from(vec![1u8; n]));

    // A known peer may send more than a client.
    let node = TcpTransport::client(NODE, config);
    node.add_peer(SERVER, addr);
    node.send(SERVER, big(4096)).await.unwrap();
    let (from, msg) = next_message(&mut server).await;
    assert_eq!((from, msg.payload.len()), (NODE, 4096));

    let client = TcpTransport::client(PeerId(42), config);
    client.add_peer(SERVER, addr);
    client.send(SERVER, big(1024)).await.unwrap();
    let (id, msg) = next_message(&mut server).await;
    assert!(id.is_client());
    assert_eq!(msg.payload.len(), 1024);
    client.send(SERVER, big(1025)).await.unwrap();
    wait_for(&mut server, Event::Disconnected(id)).await;
    assert_eq!(server.stats().closed.client_frame, 1);
    assert_eq!(server.stats().peer_connections, 1, "the node is untouched");
    client.shutdown().await;
    node.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn partial_frames_across_connections_stay_under_the_cap() {
    const CAP: usize = 64 * 1024;
    const CONNS: usize = 10;
    // Each connection sends 9 header bytes and 10 KiB of a 32 KiB frame.
    const HELD: usize = 9 + 10 * 1024;
    let (mut server, addr) = server(TcpConfig {
        max_buffered_bytes: CAP,
        ..TcpConfig::default()
    })
    .await;
    let mut raws = Vec::new();
    for i in 0..CONNS {
        let mut raw = TcpStream::connect(addr).await.unwrap();
        raw.write_all(&hello(100 + i as u64)).await.unwrap();
        raw.write_all(&header(32 * 1024, ChannelId(0), Flags::NONE))
            .await
            .unwrap();
        raw.write_all(&[0u8; 10 * 1024]).await.unwrap();
        raws.push(raw);
    }
    // Settled: every connection either closed or holds all it sent.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut max_seen = 0;
    loop {
        let stats = server.stats();
        max_seen = max_seen.max(stats.buffered_bytes);
        assert!(
            stats.buffered_bytes <= CAP,
            "{} over the cap",
            stats.buffered_bytes
        );
        let closed = stats.closed.buffered_bytes as usize;
        if stats.buffered_bytes % HELD == 0 && closed + stats.buffered_bytes / HELD == CONNS {
            break;
        }
        assert!(Instant::now() < deadline, "never settled: {stats:?}");
        let _ = tokio::time::timeout(Duration::from_millis(2), server.recv()).await;
    }
    let stats = server.stats();
    let survivors = stats.buffered_bytes / HELD;
    println!(
        "{survivors} connections hold {} bytes under a {CAP}-byte cap; {} closed; most seen {max_seen}",
        stats.buffered_bytes, stats.closed.buffered_bytes
    );
    assert!(survivors <= CAP / HELD);
    assert!(stats.closed.buffered_bytes >= (CONNS - CAP / HELD) as u64);
    assert_eq!(stats.peer_connections, survivors);
    drop(raws);
    eventually("connections closed", || {
        server.stats().peer_connections == 0
    })
    .await;
    assert_eq!(server.stats().buffered_bytes, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn accepts_past_max_connections_are_closed_at_once() {
    let (mut server, addr) = server(TcpConfig {
        max_connections: 2,
        ..TcpConfig::default()
    })
    .await;
    let first = TcpStream::connect(addr).await.unwrap();
    let _second = TcpStream::connect(addr).await.unwrap();
    eventually("two accepted", || server.stats().accepted_connections == 2).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    // Far sooner than the 5 s hello timeout.
    let after = closed_within(&mut third, Duration::from_secs(2))
        .await
        .expect("the third connection stayed open");
    println!("third connection closed after {after:?}");
    assert_eq!(server.stats().closed.max_connections, 1);

    drop(first);
    eventually("a slot freed", || server.stats().accepted_connections == 1).await;
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    fourth.write_all(&hello(9)).await.unwrap();
    wait_for(&mut server, Event::Connected(PeerId(9))).await;
    assert_eq!(server.stats().closed.max_connections, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_refused_dial_is_reported_until_the_peer_is_up() {
    // A port nobody listens on (bound and released).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = TcpConfig {
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        ..TcpConfig::default()
    };
    let mut client = TcpTransport::client(PeerId(2), config);
    assert!(client.dial_failure(SERVER).is_none());
    client.add_peer(SERVER, addr);
    client.try_send(SERVER, frame(0, "queued")).unwrap();
    eventually("the refused dial is recorded", || {
        client.dial_failure(SERVER).is_some()
    })
    .await;
    let failure = client.dial_failure(SERVER).unwrap();
    println!("{failure}");
    assert_eq!(failure.addr, addr);
    assert!(
        failure.error.to_lowercase().contains("refused"),
        "{failure}"
    );
    assert!(failure.attempts >= 1);

    let mut server = TcpTransport::bind(SERVER, addr, config).await.unwrap();
    wait_for(&mut client, Event::Connected(SERVER)).await;
    assert_eq!(client.dial_failure(SERVER), None);
    assert_eq!(&next_message(&mut server).await.1.payload[..], b"queued");
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn under_known_peers_only_clients_count_against_the_buffer_cap() {
    const NODE: u64 = 5;
    let (mut server, addr) = server(TcpConfig {
        trust: Trust::KnownPeers,
        max_buffered_bytes: 16 * 1024,
        ..TcpConfig::default()
    })
    .await;
    server.add_peer(PeerId(NODE), "127.0.0.1:1".parse().unwrap());
    let partial = |claimed: u64, sent: usize| {
        let mut bytes = hello(claimed);
        bytes.extend(header(64 * 1024, ChannelId(0), Flags::NONE));
        bytes.extend(vec![0u8; sent]);
        bytes
    };
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(&partial(42, 10 * 1024)).await.unwrap();
    eventually("the client's bytes are counted", || {
        server.stats().buffered_bytes == 9 + 10 * 1024
    })
    .await;
    // More than the cap has left, from a known peer: not counted, not cut.
    let mut node = TcpStream::connect(addr).await.unwrap();
    node.write_all(&partial(NODE, 12 * 1024)).await.unwrap();
    wait_for(&mut server, Event::Connected(PeerId(NODE))).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = server.stats();
    assert_eq!(stats.buffered_bytes, 9 + 10 * 1024);
    assert_eq!(stats.closed.buffered_bytes, 0);
    assert_eq!(stats.peer_connections, 1);
    // The same from a second client is cut.
    let mut other = TcpStream::connect(addr).await.unwrap();
    other.write_all(&partial(43, 12 * 1024)).await.unwrap();
    assert!(
        closed_within(&mut other, Duration::from_secs(5))
            .await
            .is_some()
    );
    assert_eq!(server.stats().closed.buffered_bytes, 1);
    drop((client, node));
    server.shutdown().await;
}
