//! Control traffic never waits behind bulk: urgent frames overtake queued
//! bulk frames on the way out, and peers' frames are handed out before
//! clients' on the way in (127.0.0.1, ephemeral ports only).
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{eventually, frame, next_event, next_message};
use quorate_transport::Event;
use quorate_transport::framing::{ChannelId, Flags, Frame};
use quorate_transport::tcp::{PeerId, TcpConfig, TcpTransport, Trust};

const SERVER: PeerId = PeerId(1);
const CLIENT: PeerId = PeerId(2);
const BULK: ChannelId = ChannelId(1);
const CONTROL: ChannelId = ChannelId(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_urgent_frame_overtakes_megabytes_of_queued_bulk() {
    const FRAMES: usize = 2048;
    const SIZE: usize = 64 * 1024;
    let config = TcpConfig {
        peer_queue: FRAMES,
        peer_queue_bytes: FRAMES * SIZE,
        inbound_queue: 16,
        ..TcpConfig::default()
    };
    let mut server = TcpTransport::bind(SERVER, "127.0.0.1:0", config)
        .await
        .unwrap();
    let client = TcpTransport::client(CLIENT, config);
    client.add_peer(SERVER, server.local_addr().unwrap());
    client.try_send(SERVER, frame(0, "warm-up")).unwrap();
    next_message(&mut server).await;

    // 128 MiB of bulk queued at once (one shared buffer, so cheap to hold).
    let payload = Bytes::from(vec![7u8; SIZE]);
    for _ in 0..FRAMES {
        client
            .try_send(SERVER, Frame::new(BULK, payload.clone()))
            .unwrap();
    }
    let mut bulk = 0usize;
    while bulk < 8 {
        let (_, msg) = next_message(&mut server).await;
        assert_eq!(msg.channel, BULK);
        bulk += 1;
    }
    // The backlog is still queued, and the stats show it.
    let depth = client.stats().queues[0];
    assert_eq!(depth.peer, SERVER);
    assert!(depth.connected);
    assert!(depth.bulk_frames > FRAMES / 2, "{depth:?}");
    assert_eq!(depth.bulk_bytes, depth.bulk_frames * SIZE);

    let sent = Instant::now();
    let urgent = Frame::new(CONTROL, Bytes::from_static(b"heartbeat")).with_flags(Flags::URGENT);
    client.try_send(SERVER, urgent).unwrap();
    let mut before = None;
    while bulk < FRAMES || before.is_none() {
        let (_, msg) = next_message(&mut server).await;
        match msg.channel {
            BULK => bulk += 1,
            CONTROL => {
                assert!(msg.flags.contains(Flags::URGENT));
                assert_eq!(&msg.payload[..], b"heartbeat");
                before = Some((bulk, sent.elapsed()));
            }
            other => panic!("unexpected {other}"),
        }
    }
    let (before, latency) = before.unwrap();
    println!(
        "urgent frame arrived after {before} of {FRAMES} bulk frames ({} MiB queued), {latency:?} after it was sent",
        (FRAMES * SIZE) >> 20
    );
    // Without the urgent lane it would come after all of them; with it,
    // only what was already in the socket buffers and on the wire is ahead.
    assert!(
        before < FRAMES / 4,
        "{before} bulk frames came before the urgent one"
    );
    assert_eq!(bulk, FRAMES, "the bulk backlog still arrives in full");
    client.shutdown().await;
    server.shutdown().await;
}

/// Where nothing listens (a known peer the server never dials).
fn nowhere() -> SocketAddr {
    "127.0.0.1:1".parse().unwrap()
}

#[tokio::test]
async fn recv_serves_urgent_peer_frames_then_peers_then_clients() {
    const NODE: PeerId = PeerId(5);
    let config = TcpConfig {
        trust: Trust::KnownPeers,
        ..TcpConfig::default()
    };
    let mut server = TcpTransport::bind(SERVER, "127.0.0.1:0", config)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    server.add_peer(NODE, nowhere());

    // A client floods first...
    let client = TcpTransport::client(PeerId(42), config);
    client.add_peer(SERVER, addr);
    for i in 0..5 {
        client.try_send(SERVER, frame(1, &format!("c{i}"))).unwrap();
    }
    eventually("client events queued", || {
        server.stats().inbound.clients == 6
    })
    .await;
    // ...then a node sends bulk and one urgent frame.
    let node = TcpTransport::client(NODE, config);
    node.add_peer(SERVER, addr);
    for i in 0..3 {
        node.try_send(SERVER, frame(1, &format!("p{i}"))).unwrap();
    }
    node.try_send(SERVER, frame(2, "u").with_flags(Flags::URGENT))
        .unwrap();
    eventually("node events queued", || {
        let inbound = server.stats().inbound;
        (inbound.urgent, inbound.peers) == (1, 4)
    })
    .await;

    let mut order = Vec::new();
    for _ in 0..(1 + 4 + 6) {
        order.push(match next_event(&mut server).await {
            Event::Connected(p) if p.is_client() => "client connected".to_string(),
            Event::Connected(p) => format!("{p} connected"),
            Event::Message { from, msg } => {
                let who = if from.is_client() {
                    "client".to_string()
                } else {
                    from.to_string()
                };
                format!("{who}: {}", String::from_utf8_lossy(&msg.payload))
            }
            other => panic!("unexpected {other:?}"),
        });
    }
    let want = [
        "peer 5: u",
        "peer 5 connected",
        "peer 5: p0",
        "peer 5: p1",
        "peer 5: p2",
        "client connected",
        "client: c0",
        "client: c1",
        "client: c2",
        "client: c3",
        "client: c4",
    ];
    assert_eq!(order, want);
    node.shutdown().await;
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn urgent_frames_have_a_bound_of_their_own() {
    let config = TcpConfig {
        peer_queue: 4,
        urgent_queue: 2,
        ..TcpConfig::default()
    };
    // Never connects: everything stays queued.
    let client = TcpTransport::client(CLIENT, config);
    client.add_peer(SERVER, nowhere());
    for i in 0..4 {
        client.try_send(SERVER, frame(1, &format!("b{i}"))).unwrap();
    }
    assert!(client.try_send(SERVER, frame(1, "b4")).is_err());
    let urgent = || frame(2, "u").with_flags(Flags::URGENT);
    client.try_send(SERVER, urgent()).unwrap();
    client.try_send(SERVER, urgent()).unwrap();
    assert!(matches!(
        client.try_send(SERVER, urgent()),
        Err(quorate_transport::tcp::TcpError::Full { hwm: 2, .. })
    ));
    let depth = client.stats().queues[0];
    assert_eq!((depth.urgent_frames, depth.bulk_frames), (2, 4));
    assert_eq!(client.stats().dropped, 2);
    tokio::time::timeout(Duration::from_secs(10), client.shutdown())
        .await
        .unwrap();
}
