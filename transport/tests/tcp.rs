//! TCP loopback tests (127.0.0.1, ephemeral ports only).
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use quorate_transport::codec::BytesCodec;
use quorate_transport::framing::{ChannelId, Frame};
use quorate_transport::patterns::Limits;
use quorate_transport::patterns::mux::{Endpoint, Mux};
use quorate_transport::patterns::pubsub::{Publisher, Subscriber};
use quorate_transport::patterns::pushpull::{Puller, Pusher};
use quorate_transport::patterns::reqrep::{Replier, ReplierEvent, Requester, RequesterEvent};
use quorate_transport::patterns::router::{Dealer, Router};
use quorate_transport::tcp::{CONTROL_CHANNEL, PeerId, TcpConfig, TcpError, TcpTransport};
use quorate_transport::{Event, Transport, Typed};

const REQREP: ChannelId = ChannelId(1);
const PUSHPULL: ChannelId = ChannelId(2);
const PUBSUB: ChannelId = ChannelId(3);
const ROUTER: ChannelId = ChannelId(4);
const SERVER: PeerId = PeerId(1);
const CLIENT: PeerId = PeerId(2);

/// One side: a transport and its pattern endpoints, all on one connection.
struct Side {
    t: TcpTransport,
    mux: Mux<PeerId>,
}

impl Side {
    fn on(&mut self, now: Duration, ev: Event<PeerId, Frame>) {
        match ev {
            Event::Connected(peer) => {
                // The server pulls from whoever connects.
                if let Some(puller) = self.mux.puller_mut(PUSHPULL) {
                    puller.connect(now, peer);
                }
            }
            Event::Disconnected(peer) => self.mux.disconnect(peer),
            Event::Message { from, msg } => self.mux.handle(now, from, &msg).unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    }

    async fn flush(&mut self, now: Duration) {
        self.mux.handle_timeout(now);
        while let Some((to, frame)) = self.mux.poll_transmit() {
            self.t.send(to, frame).await.unwrap();
        }
    }
}

#[derive(Default)]
struct Tally {
    replies: usize,
    pulled: usize,
    published: usize,
    dealt: usize,
}

/// The server's application: answer, drain, publish, echo.
fn serve(mux: &mut Mux<PeerId>, tally: &mut Tally) {
    let replier = mux.replier_mut(REQREP).unwrap();
    while let Some(ReplierEvent::Request { from, id, body }) = replier.poll_event() {
        let answer = [b"re:".as_slice(), &body].concat();
        replier.reply(from, id, Bytes::from(answer)).unwrap();
    }
    let puller = mux.puller_mut(PUSHPULL).unwrap();
    while puller.poll_event().is_some() {
        tally.pulled += 1;
    }
    let publisher = mux.publisher_mut(PUBSUB).unwrap();
    if publisher.subscribers() > 0 {
        let _ = publisher.publish(Bytes::from("chat/new"), Bytes::from("m"));
        let _ = publisher.publish(Bytes::from("other"), Bytes::from("x"));
    }
    let router = mux.router_mut(ROUTER).unwrap();
    while let Some(r) = router.poll_event() {
        router.send(r.identity, r.body).unwrap();
    }
}

/// The client's application: check what came back.
fn consume(mux: &mut Mux<PeerId>, tally: &mut Tally) {
    while let Some(e) = mux.requester_mut(REQREP).unwrap().poll_event() {
        match e {
            RequesterEvent::Reply { body, .. } => {
                assert!(body.starts_with(b"re:q"));
                tally.replies += 1;
            }
            RequesterEvent::TimedOut { id } => panic!("request {id:?} timed out on loopback"),
            other => panic!("unexpected {other:?}"),
        }
    }
    while let Some(p) = mux.subscriber_mut(PUBSUB).unwrap().poll_event() {
        assert!(p.topic.starts_with(b"chat/"), "got {:?}", p.topic);
        tally.published += 1;
    }
    while let Some(d) = mux.dealer_mut(ROUTER).unwrap().poll_event() {
        assert!(d.body.starts_with(b"job"));
        tally.dealt += 1;
    }
}

#[tokio::test]
async fn all_patterns_share_one_connection() {
    let l = Limits::default()
        .with_hwm(64)
        .with_refresh(Duration::from_millis(50));
    let server_t = TcpTransport::bind(SERVER, "127.0.0.1:0", TcpConfig::default())
        .await
        .unwrap();
    let client_t = TcpTransport::client(CLIENT, TcpConfig::default());
    client_t.add_peer(SERVER, server_t.local_addr().unwrap());

    let mut server = Side {
        t: server_t,
        mux: Mux::new(),
    };
    server
        .mux
        .add(REQREP, Endpoint::Replier(Replier::new(l)))
        .unwrap();
    server
        .mux
        .add(PUSHPULL, Endpoint::Puller(Puller::new(l, 8)))
        .unwrap();
    server
        .mux
        .add(PUBSUB, Endpoint::Publisher(Publisher::new(l)))
        .unwrap();
    server
        .mux
        .add(ROUTER, Endpoint::Router(Router::new(l)))
        .unwrap();

    let mut client = Side {
        t: client_t,
        mux: Mux::new(),
    };
    let dealer = Dealer::new(l, Bytes::from("client-dealer"));
    client
        .mux
        .add(REQREP, Endpoint::Requester(Requester::new(l)))
        .unwrap();
    client
        .mux
        .add(PUSHPULL, Endpoint::Pusher(Pusher::new(l)))
        .unwrap();
    client
        .mux
        .add(PUBSUB, Endpoint::Subscriber(Subscriber::new(l)))
        .unwrap();
    client.mux.add(ROUTER, Endpoint::Dealer(dealer)).unwrap();

    let start = Instant::now();
    let now = || start.elapsed();
    let requester = client.mux.requester_mut(REQREP).unwrap();
    for i in 0..10 {
        let body = Bytes::from(format!("q{i}"));
        requester
            .request(now(), SERVER, body, Duration::from_secs(10))
            .unwrap();
    }
    let pusher = client.mux.pusher_mut(PUSHPULL).unwrap();
    for i in 0..50u32 {
        pusher.push(Bytes::from(i.to_be_bytes().to_vec())).unwrap();
    }
    let subscriber = client.mux.subscriber_mut(PUBSUB).unwrap();
    subscriber.connect(now(), SERVER);
    subscriber.subscribe(now(), Bytes::from("chat/")).unwrap();
    let dealer = client.mux.dealer_mut(ROUTER).unwrap();
    dealer.connect(now(), SERVER);
    for i in 0..5 {
        dealer.send(Bytes::from(format!("job{i}"))).unwrap();
    }

    let (mut at_server, mut at_client) = (Tally::default(), Tally::default());
    while at_client.replies < 10
        || at_server.pulled < 50
        || at_client.published < 5
        || at_client.dealt < 5
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "stalled: replies {} pulled {} published {} dealt {}",
            at_client.replies,
            at_server.pulled,
            at_client.published,
            at_client.dealt
        );
        tokio::select! {
            ev = server.t.recv() => server.on(now(), ev.unwrap()),
            ev = client.t.recv() => client.on(now(), ev.unwrap()),
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
        serve(&mut server.mux, &mut at_server);
        consume(&mut client.mux, &mut at_client);
        server.flush(now()).await;
        client.flush(now()).await;
    }
    assert_eq!(at_client.replies, 10);
    assert_eq!(at_server.pulled, 50);
    client.t.shutdown().await;
    server.t.shutdown().await;
}

async fn next_message(t: &mut TcpTransport) -> (PeerId, Frame) {
    loop {
        if let Event::Message { from, msg } =
            tokio::time::timeout(Duration::from_secs(10), t.recv())
                .await
                .expect("no message within 10 s")
                .unwrap()
        {
            return (from, msg);
        }
    }
}

async fn wait_for(t: &mut TcpTransport, want: Event<PeerId, Frame>) {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), t.recv())
            .await
            .expect("event did not come within 10 s")
            .unwrap();
        if ev == want {
            return;
        }
    }
}

fn frame(s: &'static str) -> Frame {
    Frame::new(ChannelId(0), Bytes::from_static(s.as_bytes()))
}

#[tokio::test]
async fn client_reconnects_after_the_server_restarts() {
    let config = TcpConfig {
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        ..TcpConfig::default()
    };
    let mut server = TcpTransport::bind(SERVER, "127.0.0.1:0", config)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let mut client = TcpTransport::client(CLIENT, config);
    client.add_peer(SERVER, addr);

    client.send(SERVER, frame("before")).await.unwrap();
    let (from, msg) = next_message(&mut server).await;
    assert_eq!((from, &msg.payload[..]), (CLIENT, &b"before"[..]));

    server.shutdown().await;
    wait_for(&mut client, Event::Connected(SERVER)).await;
    wait_for(&mut client, Event::Disconnected(SERVER)).await;

    // Queued while the server is down; delivered once the link redials.
    client.send(SERVER, frame("after")).await.unwrap();
    let mut server = TcpTransport::bind(SERVER, addr, config).await.unwrap();
    let (from, msg) = next_message(&mut server).await;
    assert_eq!((from, &msg.payload[..]), (CLIENT, &b"after"[..]));
    wait_for(&mut client, Event::Connected(SERVER)).await;

    // The server answers over the connection the client opened.
    server.send(CLIENT, frame("reply")).await.unwrap();
    let (from, msg) = next_message(&mut client).await;
    assert_eq!((from, &msg.payload[..]), (SERVER, &b"reply"[..]));
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn slow_consumer_hits_the_high_water_mark() {
    let config = TcpConfig {
        peer_queue: 16,
        inbound_queue: 16,
        ..TcpConfig::default()
    };
    let mut server = TcpTransport::bind(SERVER, "127.0.0.1:0", config)
        .await
        .unwrap();
    let client = TcpTransport::client(CLIENT, config);
    client.add_peer(SERVER, server.local_addr().unwrap());

    // The server reads nothing: buffers fill until the client's queue is full.
    let payload = Bytes::from(vec![7u8; 64 * 1024]);
    let mut accepted = 0u64;
    let mut full = false;
    for _ in 0..100_000 {
        match client.try_send(SERVER, Frame::new(ChannelId(0), payload.clone())) {
            Ok(()) => accepted += 1,
            Err(TcpError::Full { peer, hwm }) => {
                assert_eq!((peer, hwm), (SERVER, 16));
                full = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_micros(50)).await;
    }
    assert!(full, "queue never filled after {accepted} frames");
    assert_eq!(client.dropped(), 1);
    // The blocking send waits instead of queueing without bound.
    let blocked = tokio::time::timeout(
        Duration::from_millis(200),
        client.send(SERVER, Frame::new(ChannelId(0), payload.clone())),
    )
    .await;
    assert!(blocked.is_err(), "send did not wait at the high-water mark");

    // Once the consumer reads, every accepted frame arrives, intact.
    let mut received = 0u64;
    while received < accepted {
        let (_, msg) = next_message(&mut server).await;
        assert_eq!(msg.payload, payload);
        received += 1;
    }
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn typed_messages_and_misuse_errors() {
    let server = TcpTransport::bind(SERVER, "127.0.0.1:0", TcpConfig::default())
        .await
        .unwrap();
    let client = TcpTransport::client(CLIENT, TcpConfig::default());
    assert!(matches!(
        client.send(SERVER, frame("x")).await,
        Err(TcpError::UnknownPeer(SERVER))
    ));
    assert!(matches!(
        client
            .send(SERVER, Frame::new(CONTROL_CHANNEL, Bytes::new()))
            .await,
        Err(TcpError::ReservedChannel(CONTROL_CHANNEL))
    ));
    client.add_peer(SERVER, server.local_addr().unwrap());
    let client = Typed::new(client, BytesCodec, ChannelId(9));
    let mut server = Typed::new(server, BytesCodec, ChannelId(9));
    // A frame on another channel is skipped by the typed view.
    client.inner().send(SERVER, frame("raw")).await.unwrap();
    client.send(SERVER, Bytes::from("typed")).await.unwrap();
    loop {
        match server.recv().await.unwrap() {
            Event::Message { from, msg } => {
                assert_eq!((from, msg), (CLIENT, Bytes::from("typed")));
                break;
            }
            _ => continue,
        }
    }
}

#[tokio::test]
async fn shutdown_writes_out_queued_frames() {
    let mut server = TcpTransport::bind(SERVER, "127.0.0.1:0", TcpConfig::default())
        .await
        .unwrap();
    let client = TcpTransport::client(CLIENT, TcpConfig::default());
    client.add_peer(SERVER, server.local_addr().unwrap());
    for i in 0..200u32 {
        let f = Frame::new(ChannelId(0), Bytes::from(i.to_be_bytes().to_vec()));
        client.send(SERVER, f).await.unwrap();
    }
    client.shutdown().await;
    for i in 0..200u32 {
        let (_, msg) = next_message(&mut server).await;
        assert_eq!(msg.payload, Bytes::from(i.to_be_bytes().to_vec()));
    }
    wait_for(&mut server, Event::Disconnected(CLIENT)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_and_oversized_frames_close_only_that_connection() {
    use tokio::io::AsyncWriteExt;
    let config = TcpConfig {
        framing: quorate_transport::framing::FrameCodec::with_max_frame_size(1024),
        ..TcpConfig::default()
    };
    let mut server = TcpTransport::bind(SERVER, "127.0.0.1:0", config)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();

    // No hello at all, just noise: dropped before any event.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(&[0xff; 64]).await.unwrap();

    // A proper hello, then a header claiming 4 GiB.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut hello = vec![0, 0, 0, 8];
    hello.extend_from_slice(&CONTROL_CHANNEL.0.to_be_bytes());
    hello.push(0);
    hello.extend_from_slice(&7u64.to_be_bytes());
    raw.write_all(&hello).await.unwrap();
    raw.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    wait_for(&mut server, Event::Connected(PeerId(7))).await;
    wait_for(&mut server, Event::Disconnected(PeerId(7))).await;

    // The server still serves well-behaved peers.
    let client = TcpTransport::client(CLIENT, config);
    client.add_peer(SERVER, addr);
    client.send(SERVER, frame("fine")).await.unwrap();
    let (from, msg) = next_message(&mut server).await;
    assert_eq!((from, &msg.payload[..]), (CLIENT, &b"fine"[..]));
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn removing_a_peer_closes_its_link() {
    let mut server = TcpTransport::bind(SERVER, "127.0.0.1:0", TcpConfig::default())
        .await
        .unwrap();
    let client = TcpTransport::client(CLIENT, TcpConfig::default());
    client.add_peer(SERVER, server.local_addr().unwrap());
    client.send(SERVER, frame("last words")).await.unwrap();
    client.remove_peer(SERVER);
    let (_, msg) = next_message(&mut server).await;
    assert_eq!(&msg.payload[..], b"last words");
    wait_for(&mut server, Event::Disconnected(CLIENT)).await;
    assert!(matches!(
        client.send(SERVER, frame("x")).await,
        Err(TcpError::UnknownPeer(SERVER))
    ));
    client.shutdown().await;
    server.shutdown().await;
}

/// Waits until `t` holds `n` open connections, handling its events meanwhile
/// into `seen`.
async fn settle(t: &mut TcpTransport, n: usize, seen: &mut Vec<Event<PeerId, Frame>>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.open_connections() != n {
        assert!(
            Instant::now() < deadline,
            "{:?} still has {} connections",
            t.id(),
            t.open_connections()
        );
        if let Ok(ev) = tokio::time::timeout(Duration::from_millis(5), t.recv()).await {
            seen.push(ev.unwrap());
        }
    }
}

/// Receives events until `count` messages have arrived, returning them.
async fn take_messages(
    t: &mut TcpTransport,
    count: usize,
    seen: &mut Vec<Event<PeerId, Frame>>,
) -> Vec<Bytes> {
    let mut got: Vec<Bytes> = seen
        .iter()
        .filter_map(|e| match e {
            Event::Message { msg, .. } => Some(msg.payload.clone()),
            _ => None,
        })
        .collect();
    while got.len() < count {
        let ev = tokio::time::timeout(Duration::from_secs(10), t.recv())
            .await
            .expect("messages did not arrive within 10 s")
            .unwrap();
        if let Event::Message { msg, .. } = &ev {
            got.push(msg.payload.clone());
        }
        seen.push(ev);
    }
    seen.retain(|e| !matches!(e, Event::Message { .. }));
    got
}

fn numbered(tag: &str, i: u32) -> Bytes {
    Bytes::from(format!("{tag}{i}"))
}

// Current-thread runtime: both sends queue (and spawn both dial loops)
// before either loop runs, so both sides really dial each other at once.
#[tokio::test(flavor = "current_thread")]
async fn simultaneous_dials_end_with_one_connection_that_works_both_ways() {
    simultaneous_dials().await;
}

// Two worker threads: the handshakes of the two connections interleave
// differently from run to run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_dials_across_threads() {
    simultaneous_dials().await;
}

/// Two nodes dial each other at once, six times, with either one the lower
/// id: each ends with one connection, nothing sent is lost, the connection
/// carries traffic both ways, and each side sees one `Connected` only.
async fn simultaneous_dials() {
    for (x, y) in [(PeerId(10), PeerId(20)), (PeerId(20), PeerId(10))]
        .into_iter()
        .cycle()
        .take(6)
    {
        let mut a = TcpTransport::bind(x, "127.0.0.1:0", TcpConfig::default())
            .await
            .unwrap();
        let mut b = TcpTransport::bind(y, "127.0.0.1:0", TcpConfig::default())
            .await
            .unwrap();
        a.add_peer(y, b.local_addr().unwrap());
        b.add_peer(x, a.local_addr().unwrap());
        for i in 0..50 {
            a.try_send(y, Frame::new(ChannelId(0), numbered("a", i)))
                .unwrap();
            b.try_send(x, Frame::new(ChannelId(0), numbered("b", i)))
                .unwrap();
        }
        let (mut at_a, mut at_b) = (Vec::new(), Vec::new());

        // Frames queued during the race all arrive, whichever connection
        // carried them (order across the switch is not promised).
        let mut got_b = take_messages(&mut b, 50, &mut at_b).await;
        let mut got_a = take_messages(&mut a, 50, &mut at_a).await;
        got_a.sort();
        got_b.sort();
        let mut want_a: Vec<Bytes> = (0..50).map(|i| numbered("b", i)).collect();
        let mut want_b: Vec<Bytes> = (0..50).map(|i| numbered("a", i)).collect();
        want_a.sort();
        want_b.sort();
        assert_eq!(got_a, want_a);
        assert_eq!(got_b, want_b);

        // The surviving connection carries traffic both ways, in order.
        for i in 0..20 {
            a.send(y, Frame::new(ChannelId(0), numbered("ping", i)))
                .await
                .unwrap();
            b.send(x, Frame::new(ChannelId(0), numbered("pong", i)))
                .await
                .unwrap();
        }
        let pings = take_messages(&mut b, 20, &mut at_b).await;
        let pongs = take_messages(&mut a, 20, &mut at_a).await;
        assert_eq!(
            pings,
            (0..20).map(|i| numbered("ping", i)).collect::<Vec<_>>()
        );
        assert_eq!(
            pongs,
            (0..20).map(|i| numbered("pong", i)).collect::<Vec<_>>()
        );
        // A losing dial may still be finishing its handshake and closing:
        // whatever happened meanwhile, each side ends with one connection.
        settle(&mut a, 1, &mut at_a).await;
        settle(&mut b, 1, &mut at_b).await;

        // Each side saw the peer connect once and never disconnect.
        assert_eq!(at_a, [Event::Connected(y)], "{x:?}");
        assert_eq!(at_b, [Event::Connected(x)], "{y:?}");
        a.shutdown().await;
        b.shutdown().await;
    }
}

#[tokio::test]
async fn removing_a_peer_also_closes_the_connection_it_opened() {
    let mut server = TcpTransport::bind(SERVER, "127.0.0.1:0", TcpConfig::default())
        .await
        .unwrap();
    let mut client = TcpTransport::client(CLIENT, TcpConfig::default());
    client.add_peer(SERVER, server.local_addr().unwrap());
    client.send(SERVER, frame("hello")).await.unwrap();
    next_message(&mut server).await;
    server.send(CLIENT, frame("queued")).await.unwrap();
    server.remove_peer(CLIENT);
    // What was queued is still written, then the connection closes.
    let (_, msg) = next_message(&mut client).await;
    assert_eq!(&msg.payload[..], b"queued");
    wait_for(&mut server, Event::Disconnected(CLIENT)).await;
    wait_for(&mut client, Event::Disconnected(SERVER)).await;
    client.shutdown().await;
    server.shutdown().await;
}
