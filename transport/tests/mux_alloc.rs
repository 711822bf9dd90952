//! `Mux::poll_transmit` allocates nothing in steady state: payloads are
//! encoded into one buffer the frames share, reclaimed once they are
//! dropped. Counted by a global allocator in this test binary, which counts
//! every thread: so the binary runs without libtest's harness (no runner
//! or reporting threads allocate while it measures), its checks one after
//! another on the main thread.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::time::Duration;

use bytes::Bytes;
use quorate_transport::framing::{ChannelId, Frame};
use quorate_transport::patterns::Limits;
use quorate_transport::patterns::mux::{Endpoint, Mux};
use quorate_transport::patterns::pubsub::{Publisher, Subscriber};
use quorate_transport::patterns::pushpull::{Puller, Pusher};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const NOW: Duration = Duration::ZERO;
const POSTS: ChannelId = ChannelId(1);
const FEED: ChannelId = ChannelId(2);
const SERVER: u8 = 1;
const CLIENT: u8 = 2;
/// Messages each endpoint queues per round.
const PER_ROUND: usize = 8;

/// A client mux (a pusher and a publisher, so the round-robin takes both)
/// that the server has given credit and a subscription.
fn connected_client() -> Mux<u8> {
    let limits = Limits::default();
    let mut client: Mux<u8> = Mux::new();
    client
        .add(POSTS, Endpoint::Pusher(Pusher::new(limits)))
        .unwrap();
    client
        .add(FEED, Endpoint::Publisher(Publisher::new(limits)))
        .unwrap();
    let mut server: Mux<u8> = Mux::new();
    server
        .add(POSTS, Endpoint::Puller(Puller::new(limits, 1 << 40)))
        .unwrap();
    server
        .add(FEED, Endpoint::Subscriber(Subscriber::new(limits)))
        .unwrap();
    server.puller_mut(POSTS).unwrap().connect(NOW, CLIENT);
    let sub = server.subscriber_mut(FEED).unwrap();
    sub.connect(NOW, CLIENT);
    sub.subscribe(NOW, Bytes::from_static(b"room/")).unwrap();
    while let Some((to, frame)) = server.poll_transmit() {
        assert_eq!(to, CLIENT);
        client.handle(NOW, SERVER, &frame).unwrap();
    }
    assert_eq!(client.publisher_mut(FEED).unwrap().subscribers(), 1);
    client
}

/// Queues a round of posts and feed messages (this allocates: queues grow,
/// bodies are made; it is not what is measured).
fn queue_round(client: &mut Mux<u8>, round: usize) {
    for i in 0..PER_ROUND {
        let body = Bytes::from(format!("post {round}/{i}: lunch at noon?"));
        client
            .pusher_mut(POSTS)
            .unwrap()
            .push(body.clone())
            .unwrap();
        let topic = Bytes::from_static(b"room/lobby");
        let sent = client.publisher_mut(FEED).unwrap().publish(topic, body);
        assert_eq!(sent, Ok(1));
    }
}

/// What `poll_transmit` allocated, over `rounds` rounds, with each round's
/// frames handed to `sink`; and the frames it returned.
fn measure(
    client: &mut Mux<u8>,
    rounds: usize,
    mut sink: impl FnMut(Frame),
) -> (stats_alloc::Stats, usize) {
    let mut total = stats_alloc::Stats::default();
    let mut frames = 0;
    for round in 0..rounds {
        queue_round(client, round);
        let region = Region::new(GLOBAL);
        while let Some((to, frame)) = client.poll_transmit() {
            assert_eq!(to, SERVER);
            frames += 1;
            sink(frame);
        }
        let change = region.change();
        total.allocations += change.allocations;
        total.reallocations += change.reallocations;
        total.bytes_allocated += change.bytes_allocated;
    }
    (total, frames)
}

fn poll_transmit_allocates_nothing_once_warm_when_frames_are_dropped() {
    let mut client = connected_client();
    // Warm-up: the encoding buffer is allocated once.
    let (warm, _) = measure(&mut client, 4, drop);
    assert!(
        warm.allocations > 0,
        "the warm-up allocated nothing: {warm:?}"
    );
    let (steady, frames) = measure(&mut client, 200, drop);
    assert_eq!(frames, 200 * 2 * PER_ROUND);
    assert_eq!(
        (steady.allocations, steady.reallocations),
        (0, 0),
        "{steady:?} over {frames} frames"
    );
}

fn frames_held_elsewhere_cost_an_allocation_per_buffer_not_per_frame() {
    let mut client = connected_client();
    // A transport queue holding every frame of a round until it is written.
    let mut held: Vec<Frame> = Vec::with_capacity(2 * PER_ROUND);
    let mut rounds = 0;
    let (stats, frames) = measure(&mut client, 200, |frame| {
        held.push(frame);
        if held.len() == 2 * PER_ROUND {
            held.clear();
            rounds += 1;
        }
    });
    assert_eq!(rounds, 200);
    // About 40-byte payloads: a 16 KiB buffer carries hundreds of frames,
    // and each new one costs two allocations (buffer and its share count).
    assert!(
        stats.allocations * 50 <= frames,
        "{} allocations for {frames} frames",
        stats.allocations
    );
}

fn frames_keep_their_payloads_when_the_buffer_is_reused() {
    let mut client = connected_client();
    queue_round(&mut client, 0);
    let first: Vec<Frame> = std::iter::from_fn(|| client.poll_transmit())
        .map(|(_, f)| f)
        .collect();
    queue_round(&mut client, 1);
    let second: Vec<Frame> = std::iter::from_fn(|| client.poll_transmit())
        .map(|(_, f)| f)
        .collect();
    let mut server: Mux<u8> = Mux::new();
    server
        .add(
            POSTS,
            Endpoint::Puller(Puller::new(Limits::default(), 1 << 40)),
        )
        .unwrap();
    server.puller_mut(POSTS).unwrap().connect(NOW, CLIENT);
    for frame in first.iter().chain(&second).filter(|f| f.channel == POSTS) {
        server.handle(NOW, CLIENT, frame).unwrap();
    }
    let bodies: Vec<Bytes> = std::iter::from_fn(|| server.puller_mut(POSTS).unwrap().poll_event())
        .map(|p| p.body)
        .collect();
    let want: Vec<Bytes> = (0..2)
        .flat_map(|r| {
            (0..PER_ROUND).map(move |i| Bytes::from(format!("post {r}/{i}: lunch at noon?")))
        })
        .collect();
    assert_eq!(bodies, want);
}

fn main() {
    poll_transmit_allocates_nothing_once_warm_when_frames_are_dropped();
    frames_held_elsewhere_cost_an_allocation_per_buffer_not_per_frame();
    frames_keep_their_payloads_when_the_buffer_is_reused();
    println!("mux_alloc: 3 checks passed");
}
