//! TCP loopback tests (127.0.0.1, ephemeral ports only).
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use quorate_transport::codec::BytesCodec;
use quorate_transport::framing::{ChannelId, Frame};
use quorate_transport::patterns::pubsub::{Publisher, Subscriber};
use quorate_transport::patterns::pushpull::{Puller, Pusher};
use quorate_transport::patterns::reqrep::{Replier, ReplierEvent, Requester, RequesterEvent};
use quorate_transport::patterns::router::{Dealer, Router};
use quorate_transport::patterns::{Limits, Wire};
use quorate_transport::tcp::{CONTROL_CHANNEL, PeerId, TcpConfig, TcpError, TcpTransport};
use quorate_transport::{Event, Transport, Typed};

const REQREP: ChannelId = ChannelId(1);
const PUSHPULL: ChannelId = ChannelId(2);
const PUBSUB: ChannelId = ChannelId(3);
const ROUTER: ChannelId = ChannelId(4);
const SERVER: PeerId = PeerId(1);
const CLIENT: PeerId = PeerId(2);

async fn send_all(t: &TcpTransport, out: Vec<(PeerId, Frame)>) {
    for (to, frame) in out {
        t.send(to, frame).await.unwrap();
    }
}

/// Drains one pattern endpoint's transmits into frames on `channel`.
fn frames(
    channel: ChannelId,
    out: &mut Vec<(PeerId, Frame)>,
    mut poll: impl FnMut() -> Option<(PeerId, Wire)>,
) {
    while let Some((to, w)) = poll() {
        out.push((to, w.to_frame(channel)));
    }
}

struct Server {
    t: TcpTransport,
    replier: Replier<PeerId>,
    puller: Puller<PeerId>,
    publisher: Publisher<PeerId>,
    router: Router<PeerId>,
    pulled: usize,
}

struct Client {
    t: TcpTransport,
    requester: Requester<PeerId>,
    pusher: Pusher<PeerId>,
    subscriber: Subscriber<PeerId>,
    dealer: Dealer<PeerId>,
    replies: usize,
    published: usize,
    dealt: usize,
}

impl Server {
    fn on(&mut self, now: Duration, ev: Event<PeerId, Frame>) {
        match ev {
            Event::Connected(p) => self.puller.connect(now, p),
            Event::Disconnected(_) => {}
            Event::Message { from, msg } => {
                let w = Wire::from_frame(&msg).unwrap();
                match msg.channel {
                    REQREP => self.replier.handle(from, w),
                    PUSHPULL => self.puller.handle(now, from, w),
                    PUBSUB => self.publisher.handle(from, w),
                    ROUTER => self.router.handle(from, w),
                    other => panic!("unexpected {other}"),
                }
            }
        }
    }

    fn app(&mut self, now: Duration) {
        self.puller.handle_timeout(now);
        while let Some(ReplierEvent::Request { from, id, body }) = self.replier.poll_event() {
            let answer = [b"re:".as_slice(), &body].concat();
            self.replier.reply(from, id, Bytes::from(answer)).unwrap();
        }
        while self.puller.poll_event().is_some() {
            self.pulled += 1;
        }
        if self.publisher.subscribers() > 0 {
            let _ = self
                .publisher
                .publish(Bytes::from("chat/new"), Bytes::from("m"));
            let _ = self
                .publisher
                .publish(Bytes::from("other"), Bytes::from("x"));
        }
        while let Some(r) = self.router.poll_event() {
            self.router.send(r.identity, r.body).unwrap();
        }
    }

    fn transmits(&mut self) -> Vec<(PeerId, Frame)> {
        let mut out = Vec::new();
        frames(REQREP, &mut out, || self.replier.poll_transmit());
        frames(PUSHPULL, &mut out, || self.puller.poll_transmit());
        frames(PUBSUB, &mut out, || self.publisher.poll_transmit());
        frames(ROUTER, &mut out, || self.router.poll_transmit());
        out
    }
}

impl Client {
    fn on(&mut self, now: Duration, ev: Event<PeerId, Frame>) {
        if let Event::Message { from, msg } = ev {
            let w = Wire::from_frame(&msg).unwrap();
            match msg.channel {
                REQREP => self.requester.handle(now, from, w),
                PUSHPULL => self.pusher.handle(now, from, w),
                PUBSUB => self.subscriber.handle(from, w),
                ROUTER => self.dealer.handle(from, w),
                other => panic!("unexpected {other}"),
            }
        }
    }

    fn app(&mut self, now: Duration) {
        self.requester.handle_timeout(now);
        self.subscriber.handle_timeout(now);
        self.dealer.handle_timeout(now);
        while let Some(e) = self.requester.poll_event() {
            match e {
                RequesterEvent::Reply { body, .. } => {
                    assert!(body.starts_with(b"re:q"));
                    self.replies += 1;
                }
                RequesterEvent::TimedOut { id } => panic!("request {id:?} timed out on loopback"),
            }
        }
        while let Some(p) = self.subscriber.poll_event() {
            assert!(p.topic.starts_with(b"chat/"), "got {:?}", p.topic);
            self.published += 1;
        }
        while let Some(d) = self.dealer.poll_event() {
            assert!(d.body.starts_with(b"job"));
            self.dealt += 1;
        }
    }

    fn transmits(&mut self) -> Vec<(PeerId, Frame)> {
        let mut out = Vec::new();
        frames(REQREP, &mut out, || self.requester.poll_transmit());
        frames(PUSHPULL, &mut out, || self.pusher.poll_transmit());
        frames(PUBSUB, &mut out, || self.subscriber.poll_transmit());
        frames(ROUTER, &mut out, || self.dealer.poll_transmit());
        out
    }
}

#[tokio::test]
async fn all_patterns_share_one_connection() {
    let limits = Limits::default()
        .with_hwm(64)
        .with_refresh(Duration::from_millis(50));
    let server_t = TcpTransport::bind(SERVER, "127.0.0.1:0", TcpConfig::default())
        .await
        .unwrap();
    let client_t = TcpTransport::client(CLIENT, TcpConfig::default());
    client_t.add_peer(SERVER, server_t.local_addr().unwrap());
    let mut server = Server {
        t: server_t,
        replier: Replier::new(limits),
        puller: Puller::new(limits, 8),
        publisher: Publisher::new(limits),
        router: Router::new(limits),
        pulled: 0,
    };
    let mut client = Client {
        t: client_t,
        requester: Requester::new(limits),
        pusher: Pusher::new(limits),
        subscriber: Subscriber::new(limits),
        dealer: Dealer::new(limits, Bytes::from("client-dealer")),
        replies: 0,
        published: 0,
        dealt: 0,
    };
    let start = Instant::now();
    let now = || start.elapsed();
    for i in 0..10 {
        let body = Bytes::from(format!("q{i}"));
        client
            .requester
            .request(now(), SERVER, body, Duration::from_secs(10))
            .unwrap();
    }
    for i in 0..50u32 {
        client
            .pusher
            .push(Bytes::from(i.to_be_bytes().to_vec()))
            .unwrap();
    }
    client.subscriber.connect(now(), SERVER);
    client
        .subscriber
        .subscribe(now(), Bytes::from("chat/"))
        .unwrap();
    client.dealer.connect(now(), SERVER);
    for i in 0..5 {
        client.dealer.send(Bytes::from(format!("job{i}"))).unwrap();
    }

    while client.replies < 10 || server.pulled < 50 || client.published < 5 || client.dealt < 5 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "stalled: replies {} pulled {} published {} dealt {}",
            client.replies,
            server.pulled,
            client.published,
            client.dealt
        );
        tokio::select! {
            ev = server.t.recv() => server.on(now(), ev.unwrap()),
            ev = client.t.recv() => client.on(now(), ev.unwrap()),
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
        server.app(now());
        client.app(now());
        let out = server.transmits();
        send_all(&server.t, out).await;
        let out = client.transmits();
        send_all(&client.t, out).await;
    }
    assert_eq!(client.replies, 10);
    assert_eq!(server.pulled, 50);
    client.t.shutdown().await;
    server.t.shutdown().await;
}

async fn next_message(t: &mut TcpTransport) -> (PeerId, Frame) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), t.recv())
            .await
            .expect("no message within 10 s")
            .unwrap()
        {
            Event::Message { from, msg } => return (from, msg),
            Event::Connected(_) | Event::Disconnected(_) => {}
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
