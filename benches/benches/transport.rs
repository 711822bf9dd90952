//! quorate-transport: frame codec against tokio-util's LengthDelimitedCodec,
//! and TCP loopback request/reply and pub/sub throughput.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::{SinkExt, StreamExt};
use quorate_transport::framing::{ChannelId, Frame, FrameCodec};
use quorate_transport::patterns::pubsub::{Publisher, Subscriber};
use quorate_transport::patterns::{HwmPolicy, Limits, Wire};
use quorate_transport::tcp::{PeerId, TcpConfig, TcpTransport};
use quorate_transport::{Event, Transport};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Decoder, Encoder, Framed, LengthDelimitedCodec};

/// Frames per codec iteration: encode them all into one buffer, decode all.
const BATCH: usize = 64;

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("transport/codec encode+decode");
    for size in [64usize, 64 * 1024] {
        let payload = Bytes::from(vec![0xa5u8; size]);
        g.throughput(Throughput::Bytes((size * BATCH) as u64));
        let ours = FrameCodec::new();
        let mut buf = BytesMut::with_capacity(BATCH * (size + 16));
        g.bench_with_input(BenchmarkId::new("quorate", size), &payload, |b, p| {
            b.iter(|| {
                for _ in 0..BATCH {
                    ours.encode_parts(ChannelId(1), Default::default(), p, &mut buf)
                        .unwrap();
                }
                let mut n = 0;
                while let Some(f) = ours.decode(&mut buf).unwrap() {
                    n += f.payload.len();
                }
                black_box(n)
            })
        });
        let mut theirs = LengthDelimitedCodec::builder()
            .max_frame_length(8 * 1024 * 1024)
            .new_codec();
        let mut buf = BytesMut::with_capacity(BATCH * (size + 16));
        g.bench_with_input(BenchmarkId::new("tokio-util", size), &payload, |b, p| {
            b.iter(|| {
                for _ in 0..BATCH {
                    theirs.encode(p.clone(), &mut buf).unwrap();
                }
                let mut n = 0;
                while let Some(f) = theirs.decode(&mut buf).unwrap() {
                    n += f.len();
                }
                black_box(n)
            })
        });
    }
    g.finish();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A quorate echo server and a client connected to it.
async fn quorate_pair() -> TcpTransport {
    let mut server = TcpTransport::bind(PeerId(1), "127.0.0.1:0", TcpConfig::default())
        .await
        .unwrap();
    let client = TcpTransport::client(PeerId(2), TcpConfig::default());
    client.add_peer(PeerId(1), server.local_addr().unwrap());
    // Connect before measuring.
    let probe = Frame::new(ChannelId(1), Bytes::from_static(b"x"));
    client.send(PeerId(1), probe).await.unwrap();
    loop {
        if let Event::Message { .. } = server.recv().await.unwrap() {
            break;
        }
    }
    tokio::spawn(async move {
        while let Ok(ev) = server.recv().await {
            if let Event::Message { from, msg } = ev
                && server.send(from, msg).await.is_err()
            {
                break;
            }
        }
    });
    client
}

/// `iters` round trips keeping `in_flight` requests outstanding.
async fn quorate_round_trips(client: &mut TcpTransport, iters: u64, in_flight: u64) -> Duration {
    let req = Frame::new(ChannelId(1), Bytes::from_static(&[0u8; 64]));
    let start = Instant::now();
    let first = in_flight.min(iters);
    for _ in 0..first {
        client.send(PeerId(1), req.clone()).await.unwrap();
    }
    let mut sent = first;
    let mut done = 0;
    while done < iters {
        if let Event::Message { .. } = client.recv().await.unwrap() {
            done += 1;
            if sent < iters {
                client.send(PeerId(1), req.clone()).await.unwrap();
                sent += 1;
            }
        }
    }
    start.elapsed()
}

/// The same echo over tokio-util `Framed<TcpStream, LengthDelimitedCodec>`.
async fn tokio_util_pair() -> Framed<TcpStream, LengthDelimitedCodec> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut f = Framed::new(s, LengthDelimitedCodec::new());
        while let Some(Ok(m)) = f.next().await {
            if f.send(m.freeze()).await.is_err() {
                break;
            }
        }
    });
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    Framed::new(s, LengthDelimitedCodec::new())
}

async fn tokio_util_round_trips(
    f: &mut Framed<TcpStream, LengthDelimitedCodec>,
    iters: u64,
    in_flight: u64,
) -> Duration {
    let req = Bytes::from_static(&[0u8; 64]);
    let start = Instant::now();
    let first = in_flight.min(iters);
    for _ in 0..first {
        f.feed(req.clone()).await.unwrap();
    }
    SinkExt::<Bytes>::flush(f).await.unwrap();
    let mut sent = first;
    let mut done = 0;
    while done < iters {
        f.next().await.unwrap().unwrap();
        done += 1;
        if sent < iters {
            f.send(req.clone()).await.unwrap();
            sent += 1;
        }
    }
    start.elapsed()
}

fn reqrep(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("transport/tcp req-rep round trips");
    g.throughput(Throughput::Elements(1));
    let mut client = rt.block_on(quorate_pair());
    let mut framed = rt.block_on(tokio_util_pair());
    for in_flight in [1u64, 16] {
        g.bench_function(BenchmarkId::new("quorate", in_flight), |b| {
            b.iter_custom(|iters| rt.block_on(quorate_round_trips(&mut client, iters, in_flight)))
        });
        g.bench_function(BenchmarkId::new("tokio-util Framed", in_flight), |b| {
            b.iter_custom(|iters| {
                rt.block_on(tokio_util_round_trips(&mut framed, iters, in_flight))
            })
        });
    }
    // The same clients driven from a task on the runtime's workers, as an
    // application runs them, instead of from `block_on`'s own thread: a
    // wake-up of the client then need not cross to a thread outside the
    // runtime.
    let mut client = Some(client);
    let mut framed = Some(framed);
    for in_flight in [1u64, 16] {
        g.bench_function(BenchmarkId::new("quorate in a task", in_flight), |b| {
            b.iter_custom(|iters| {
                let mut c = client.take().unwrap();
                let (c, took) = rt
                    .block_on(rt.spawn(async move {
                        let took = quorate_round_trips(&mut c, iters, in_flight).await;
                        (c, took)
                    }))
                    .unwrap();
                client = Some(c);
                took
            })
        });
        g.bench_function(
            BenchmarkId::new("tokio-util Framed in a task", in_flight),
            |b| {
                b.iter_custom(|iters| {
                    let mut f = framed.take().unwrap();
                    let (f, took) = rt
                        .block_on(rt.spawn(async move {
                            let took = tokio_util_round_trips(&mut f, iters, in_flight).await;
                            (f, took)
                        }))
                        .unwrap();
                    framed = Some(f);
                    took
                })
            },
        );
    }
    g.finish();
}

const TOPIC: &[u8] = b"chat/room";
const ACK: ChannelId = ChannelId(9);
const PUBSUB: ChannelId = ChannelId(3);

/// A subscriber task acknowledging every `batch` messages, and a publisher
/// connected to it, with the subscription already in place.
async fn pubsub_pair(batch: u64) -> (TcpTransport, Publisher<PeerId>) {
    let limits = Limits::default()
        .with_hwm(4096)
        .with_policy(HwmPolicy::Block);
    let mut publisher_t = TcpTransport::bind(PeerId(1), "127.0.0.1:0", TcpConfig::default())
        .await
        .unwrap();
    let mut sub_t = TcpTransport::client(PeerId(2), TcpConfig::default());
    sub_t.add_peer(PeerId(1), publisher_t.local_addr().unwrap());
    tokio::spawn(async move {
        let mut sub: Subscriber<PeerId> = Subscriber::new(limits);
        sub.connect(Duration::ZERO, PeerId(1));
        sub.subscribe(Duration::ZERO, Bytes::from_static(TOPIC))
            .unwrap();
        while let Some((to, w)) = sub.poll_transmit() {
            sub_t.send(to, w.to_frame(PUBSUB)).await.unwrap();
        }
        let mut seen = 0u64;
        while let Ok(ev) = sub_t.recv().await {
            if let Event::Message { from, msg } = ev {
                sub.handle(from, Wire::from_frame(&msg).unwrap());
                while sub.poll_event().is_some() {
                    seen += 1;
                    if seen.is_multiple_of(batch) {
                        let ack = Frame::new(ACK, Bytes::new());
                        if sub_t.send(PeerId(1), ack).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    let mut publisher = Publisher::new(limits);
    while publisher.subscribers() == 0 {
        if let Event::Message { from, msg } = publisher_t.recv().await.unwrap() {
            publisher.handle(from, Wire::from_frame(&msg).unwrap());
        }
    }
    (publisher_t, publisher)
}

/// Publishes `iters` messages with at most `batch` unacknowledged.
async fn publish(
    t: &mut TcpTransport,
    publisher: &mut Publisher<PeerId>,
    iters: u64,
    batch: u64,
) -> Duration {
    let topic = Bytes::from_static(TOPIC);
    let body = Bytes::from_static(&[0u8; 64]);
    // Whole batches only, so every batch is acknowledged.
    let batches = iters.div_ceil(batch);
    let start = Instant::now();
    for _ in 0..batches {
        for _ in 0..batch {
            publisher.publish(topic.clone(), body.clone()).unwrap();
        }
        while let Some((to, w)) = publisher.poll_transmit() {
            t.send(to, w.to_frame(PUBSUB)).await.unwrap();
        }
        loop {
            if let Event::Message { msg, .. } = t.recv().await.unwrap()
                && msg.channel == ACK
            {
                break;
            }
        }
    }
    start
        .elapsed()
        .mul_f64(iters as f64 / (batches * batch) as f64)
}

fn pubsub(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("transport/tcp pub-sub messages");
    g.throughput(Throughput::Elements(1));
    for in_flight in [1u64, 16] {
        let (mut t, mut publisher) = rt.block_on(pubsub_pair(in_flight));
        g.bench_function(BenchmarkId::new("quorate", in_flight), |b| {
            b.iter_custom(|iters| rt.block_on(publish(&mut t, &mut publisher, iters, in_flight)))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = codec, reqrep, pubsub
}
criterion_main!(benches);
