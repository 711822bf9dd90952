//! Links with a bandwidth: serialization, head-of-line blocking, the urgent
//! lane, bounded queues and their counters.

use super::*;
use crate::framing::{ChannelId, Flags, Frame, HEADER_LEN};
use alloc::format;
use alloc::vec;
use bytes::Bytes;

const MB_PER_S: u64 = 1_000_000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn t(n: u64) -> SimTime {
    SimTime::from_millis(n)
}

fn bulk(len: usize) -> Frame {
    Frame::new(ChannelId(1), Bytes::from(vec![0u8; len]))
}

fn urgent(tag: u8) -> Frame {
    Frame::new(ChannelId(2), Bytes::from(vec![tag])).with_flags(Flags::URGENT)
}

/// Nanoseconds to send `bytes` at 1 MB/s: one microsecond a byte.
fn at_1mb(bytes: usize) -> Duration {
    Duration::from_micros(bytes as u64)
}

fn drain_until<M: Clone>(net: &mut Network<u8, M>, now: SimTime) -> Vec<Delivery<u8, M>> {
    core::iter::from_fn(|| net.poll_delivery(now)).collect()
}

/// Everything, leaving the clock at the end of time.
fn drain_all<M: Clone>(net: &mut Network<u8, M>) -> Vec<Delivery<u8, M>> {
    drain_until(net, SimTime::MAX)
}

#[test]
fn a_message_occupies_the_link_for_its_size_over_the_bandwidth() {
    let mut net: Network<u8, Vec<u8>> = Network::new_sized(0);
    net.set_link(1, 2, LinkConfig::new(ms(2)).with_bandwidth(MB_PER_S));
    // 250 kB at 1 MB/s: 250 ms on the wire, then 2 ms of latency.
    let out = net.send(t(0), 1, 2, vec![0; 250_000]);
    assert_eq!(
        out,
        SendOutcome::Scheduled {
            id: MessageId(0),
            at: t(252),
            duplicate_at: None
        }
    );
    // Three more sent at once go one after another.
    for _ in 0..3 {
        assert!(matches!(
            net.send(t(0), 1, 2, vec![0; 100_000]),
            SendOutcome::Queued { urgent: false, .. }
        ));
    }
    assert_eq!(net.queued(), 3);
    assert_eq!(net.in_flight(), 4);
    assert_eq!(net.next_delivery_time(), Some(t(252)));
    let due: Vec<SimTime> = drain_until(&mut net, t(999)).iter().map(|d| d.at).collect();
    assert_eq!(due, vec![t(252), t(352), t(452), t(552)]);

    // The link is idle again: the next message goes at once.
    let out = net.send(t(1_000), 1, 2, vec![0; 1_000]);
    assert!(matches!(out, SendOutcome::Scheduled { at, .. } if at == t(1_003)));

    // The reverse direction has no bandwidth limit: size does not matter.
    let out = net.send(t(1_000), 2, 1, vec![0; 1_000_000]);
    assert!(matches!(out, SendOutcome::Scheduled { at, .. } if at == t(1_001)));

    let s = net.link_stats(1, 2);
    assert_eq!(s.messages_sent, 5);
    assert_eq!(s.bytes_sent, 250_000 + 300_000 + 1_000);
    assert_eq!(s.delivered, 4);
    assert_eq!((s.queued_messages, s.queued_bytes), (0, 0));
    assert_eq!((s.max_queued_messages, s.max_queued_bytes), (3, 300_000));
    // The last of the three waited for the first 250 kB and two 100 kB.
    assert_eq!(s.max_queue_delay, ms(450));
    assert_eq!(net.link_stats(2, 1).bytes_sent, 1_000_000);
}

#[test]
fn a_small_message_waits_behind_a_large_one_on_a_fifo_link() {
    let mut net: Network<u8, Frame> = Network::new_sized(0);
    // One lane: urgency is ignored.
    net.set_link(1, 2, LinkConfig::tcp_like(MB_PER_S, u64::MAX));
    net.send(t(0), 1, 2, bulk(1_000_000 - HEADER_LEN)); // 1 s on the wire
    let out = net.send(t(1), 1, 2, urgent(7));
    assert!(matches!(out, SendOutcome::Queued { urgent: false, .. }));
    let got = drain_all(&mut net);
    assert_eq!(got.len(), 2);
    assert!(!got[0].msg.is_urgent() && got[1].msg.is_urgent());
    // The vote left only when the megabyte was out: 1 s + its own 10 µs.
    let expected = SimTime::from_secs(1) + at_1mb(HEADER_LEN + 1) + ms(1);
    assert_eq!(got[1].at, expected);
    assert!(
        got[1].at - got[1].sent_at > ms(900),
        "no head-of-line blocking"
    );
}

/// Ten 100 kB bulk frames at 0 ms, then an urgent frame at 50 ms; returns
/// the deliveries in order.
fn backlog_then_urgent(lanes: bool) -> (Vec<Delivery<u8, Frame>>, SendOutcome) {
    let mut net: Network<u8, Frame> = Network::new_sized(3);
    net.set_link(
        1,
        2,
        LinkConfig::tcp_like(MB_PER_S, u64::MAX).with_lanes(lanes),
    );
    for _ in 0..10 {
        net.send(t(0), 1, 2, bulk(100_000 - HEADER_LEN));
    }
    let mut got = drain_until(&mut net, t(50));
    let out = net.send(t(50), 1, 2, urgent(1));
    got.extend(drain_all(&mut net));
    (got, out)
}

#[test]
fn the_urgent_lane_overtakes_the_bulk_backlog() {
    let (got, out) = backlog_then_urgent(true);
    assert!(matches!(out, SendOutcome::Queued { urgent: true, .. }));
    assert_eq!(got.len(), 11);
    let position = got.iter().position(|d| d.msg.is_urgent());
    // Only the frame on the wire at 50 ms (0..100 ms) goes before it.
    assert_eq!(position, Some(1));
    let vote = &got[1];
    assert_eq!(vote.at, t(100) + at_1mb(HEADER_LEN + 1) + ms(1));
    // The bulk frames behind it are pushed back by its 10 µs.
    assert_eq!(got[2].at, t(200) + at_1mb(HEADER_LEN + 1) + ms(1));

    // The same traffic on one FIFO lane: the vote waits for the whole backlog.
    let (fifo, out) = backlog_then_urgent(false);
    assert!(matches!(out, SendOutcome::Queued { urgent: false, .. }));
    assert_eq!(fifo.iter().position(|d| d.msg.is_urgent()), Some(10));
    assert_eq!(fifo[10].at, t(1_000) + at_1mb(HEADER_LEN + 1) + ms(1));
}

#[test]
fn a_full_queue_refuses_and_counts_the_drops() {
    let mut net: Network<u8, Frame> = Network::new_sized(0);
    net.enable_trace(100);
    // 200 kB may wait behind the frame on the wire.
    net.set_link(1, 2, LinkConfig::tcp_like(MB_PER_S, 200_000));
    let chunk = || bulk(100_000 - HEADER_LEN);
    let outcomes: Vec<SendOutcome> = (0..5).map(|_| net.send(t(0), 1, 2, chunk())).collect();
    assert!(matches!(outcomes[0], SendOutcome::Scheduled { .. }));
    assert!(matches!(outcomes[1], SendOutcome::Queued { .. }));
    assert!(matches!(outcomes[2], SendOutcome::Queued { .. }));
    for out in &outcomes[3..] {
        assert!(matches!(
            out,
            SendOutcome::Dropped {
                cause: LossCause::QueueFull,
                ..
            }
        ));
    }
    // On one lane a vote finds the queue full too: the kv-cluster storm.
    assert!(matches!(
        net.send(t(0), 1, 2, urgent(1)),
        SendOutcome::Dropped {
            cause: LossCause::QueueFull,
            ..
        }
    ));
    let s = net.link_stats(1, 2);
    assert_eq!((s.queue_full, s.dropped), (3, 3));
    assert_eq!((s.queued_messages, s.queued_bytes), (2, 200_000));
    assert_eq!(net.stats().queue_full, 3);
    assert_eq!(net.stats().dropped(), 3);
    let full = net
        .trace()
        .filter(|e| e.kind == TraceKind::Dropped(LossCause::QueueFull))
        .count();
    assert_eq!(full, 3);

    // Once the first frame is out, there is room for one more, not two.
    assert!(matches!(
        net.send(t(100), 1, 2, chunk()),
        SendOutcome::Queued { .. }
    ));
    assert!(matches!(
        net.send(t(100), 1, 2, urgent(2)),
        SendOutcome::Dropped { .. }
    ));
    assert_eq!(drain_all(&mut net).len(), 4);
    let s = net.link_stats(1, 2);
    assert_eq!(s.queue_full, 4);
    assert_eq!((s.max_queued_messages, s.max_queued_bytes), (2, 200_000));
    assert_eq!(net.in_flight(), 0);
}

#[test]
fn with_lanes_a_full_bulk_lane_does_not_refuse_urgent_messages() {
    let mut net: Network<u8, Frame> = Network::new_sized(0);
    net.set_link(
        1,
        2,
        LinkConfig::tcp_like(MB_PER_S, 250_000)
            .with_lanes(true)
            .with_max_queued_messages(Some(2)),
    );
    for _ in 0..4 {
        net.send(t(0), 1, 2, bulk(1_000));
    }
    assert_eq!(net.link_stats(1, 2).queue_full, 1); // 1 on the wire, 2 wait
    // The urgent lane has its own bound, here two messages.
    let votes: Vec<SendOutcome> = (0..3).map(|i| net.send(t(0), 1, 2, urgent(i))).collect();
    assert!(matches!(votes[0], SendOutcome::Queued { urgent: true, .. }));
    assert!(matches!(votes[1], SendOutcome::Queued { urgent: true, .. }));
    assert!(matches!(
        votes[2],
        SendOutcome::Dropped {
            cause: LossCause::QueueFull,
            ..
        }
    ));
    assert_eq!(net.link_stats(1, 2).queue_full, 2);
    let order: Vec<bool> = drain_all(&mut net)
        .iter()
        .map(|d| d.msg.is_urgent())
        .collect();
    assert_eq!(order, vec![false, true, true, false, false]);
}

#[test]
fn an_idle_link_takes_a_message_larger_than_the_bound() {
    let mut net: Network<u8, Vec<u8>> = Network::new_sized(0);
    net.set_link(1, 2, LinkConfig::tcp_like(MB_PER_S, 10));
    assert!(matches!(
        net.send(t(0), 1, 2, vec![0; 100]),
        SendOutcome::Scheduled { .. }
    ));
    // Behind it, only 10 bytes may wait.
    assert!(matches!(
        net.send(t(0), 1, 2, vec![0; 11]),
        SendOutcome::Dropped {
            cause: LossCause::QueueFull,
            ..
        }
    ));
    assert!(matches!(
        net.send(t(0), 1, 2, vec![0; 10]),
        SendOutcome::Queued { .. }
    ));
}

#[test]
fn other_message_types_give_size_and_urgency_by_function() {
    #[derive(Clone, Debug, PartialEq)]
    enum Msg {
        Heartbeat,
        Gossip(usize),
    }
    let mut net: Network<u8, Msg> = Network::new(0);
    net.set_size_of(|m| match m {
        Msg::Heartbeat => 50,
        Msg::Gossip(n) => *n,
    });
    net.set_urgent_of(|m| matches!(m, Msg::Heartbeat));
    net.set_default_link(LinkConfig::tcp_like(MB_PER_S, u64::MAX).with_lanes(true));
    net.send(t(0), 1, 2, Msg::Gossip(1_000_000));
    net.send(t(0), 1, 2, Msg::Gossip(1_000_000));
    net.send(t(10), 1, 2, Msg::Heartbeat);
    let got = drain_all(&mut net);
    assert_eq!(got[1].msg, Msg::Heartbeat);
    assert_eq!(got[1].at, SimTime::from_secs(1) + at_1mb(50) + ms(1));
    assert_eq!(net.link_stats(1, 2).urgent_sent, 1);
    assert_eq!(net.link_stats(1, 2).bytes_sent, 2_000_050);

    // Without a size function every message is free.
    let mut free: Network<u8, Msg> = Network::new(0);
    free.set_default_link(LinkConfig::tcp_like(1, u64::MAX));
    let out = free.send(t(0), 1, 2, Msg::Gossip(1_000_000));
    assert!(matches!(out, SendOutcome::Scheduled { at, .. } if at == t(1)));
    let out = free.send(t(0), 1, 2, Msg::Gossip(1_000_000));
    assert!(matches!(out, SendOutcome::Scheduled { at, .. } if at == t(1)));
}

#[test]
fn a_crash_loses_what_waits_to_and_from_the_node() {
    let mut net: Network<u8, Vec<u8>> = Network::new_sized(0);
    net.set_default_link(LinkConfig::tcp_like(MB_PER_S, u64::MAX));
    for _ in 0..3 {
        net.send(t(0), 1, 2, vec![0; 1_000]);
        net.send(t(0), 2, 3, vec![0; 1_000]);
        net.send(t(0), 3, 1, vec![0; 1_000]);
    }
    assert_eq!(net.queued(), 6);
    net.crash(2);
    // 1->2: the one on the wire and the two waiting are lost; 2->3: the two
    // waiting are lost, the one on the wire arrives; 3->1 is untouched.
    assert_eq!(net.queued(), 2);
    assert_eq!(net.stats().crashed, 5);
    assert_eq!(net.link_stats(1, 2).dropped, 3);
    assert_eq!(net.link_stats(2, 3).dropped, 2);
    let got = drain_all(&mut net);
    let from = |n| got.iter().filter(|d| d.from == n).count();
    assert_eq!((from(1), from(2), from(3)), (0, 1, 3));
    let s = net.stats();
    assert_eq!(s.sent + s.duplicated, s.delivered + s.dropped());
}

#[test]
fn clear_in_flight_empties_the_queues_too() {
    let mut net: Network<u8, Vec<u8>> = Network::new_sized(0);
    net.set_default_link(LinkConfig::tcp_like(MB_PER_S, u64::MAX));
    for _ in 0..3 {
        net.send(t(0), 1, 2, vec![0; 1_000]);
    }
    net.clear_in_flight();
    assert_eq!((net.in_flight(), net.queued()), (0, 0));
    assert_eq!(net.next_delivery_time(), None);
    assert_eq!(net.link_stats(1, 2).queued_bytes, 0);
}

/// Bulk payloads, shared instead of allocated for every frame.
static ZEROS: [u8; 200_000] = [0; 200_000];

/// A random workload over links with bandwidth, bounds, lanes, jitter,
/// loss and duplication, with crashes and cuts. The driver always steps to
/// exactly the next send or [`Network::next_delivery_time`], so a delivery
/// due earlier than announced would show up as `d.at < now`.
fn paced_scenario(seed: u64) -> (Vec<Delivery<u8, Frame>>, Vec<TraceEvent<u8>>, Stats) {
    let mut net: Network<u8, Frame> = Network::new_sized(seed);
    net.enable_trace(usize::MAX);
    net.set_default_link(
        LinkConfig::new(ms(1))
            .with_jitter(ms(3))
            .with_loss(0.05)
            .with_duplicate(0.05)
            .with_bandwidth(MB_PER_S)
            .with_max_queued_bytes(Some(200_000))
            .with_lanes(true),
    );
    net.set_link(0, 1, LinkConfig::tcp_like(MB_PER_S, 300_000));
    net.set_link(
        1,
        0,
        LinkConfig::tcp_like(MB_PER_S, 300_000).with_lanes(true),
    );
    let mut driver = fastrand::Rng::with_seed(seed ^ 0xbead);
    let mut now = SimTime::ZERO;
    let mut next_send = SimTime::ZERO;
    let mut out = Vec::new();
    let mut last_fifo: BTreeMap<(u8, u8), u64> = BTreeMap::new();
    for _ in 0..600 {
        let due = net.next_delivery_time();
        if due.is_some_and(|d| d < next_send) {
            now = due.unwrap_or(now);
        } else {
            now = next_send;
            next_send += Duration::from_micros(driver.u64(0..4_000));
            let a = driver.u8(0..3);
            let b = driver.u8(0..3);
            match driver.u8(0..40) {
                0 => net.crash(a),
                1 | 2 => net.restart(a),
                3 => net.cut(a, b),
                4 => net.heal_all(),
                n => {
                    let frame = if n % 3 == 0 {
                        urgent(0)
                    } else {
                        let len = driver.usize(0..ZEROS.len());
                        Frame::new(ChannelId(1), Bytes::from_static(&ZEROS[..len]))
                    };
                    net.send(now, a, b, frame);
                }
            }
        }
        while let Some(d) = net.poll_delivery(now) {
            assert_eq!(
                d.at, now,
                "seed {seed}: delivery due before it was announced"
            );
            assert!(d.at >= d.sent_at + ms(1));
            if matches!((d.from, d.to), (0, 1) | (1, 0)) && !d.msg.is_urgent() {
                // Ordered links keep bulk frames in send order (ids grow).
                let last = last_fifo.entry((d.from, d.to)).or_insert(0);
                assert!(*last <= d.id.0, "seed {seed}: ordered link reordered");
                *last = d.id.0;
            }
            out.push(d);
        }
        let s = net.stats();
        assert_eq!(
            s.sent + s.duplicated,
            s.delivered + s.dropped() + net.in_flight() as u64,
            "seed {seed}: a copy went missing"
        );
    }
    net.heal_all();
    while let Some(d) = net.poll_delivery(SimTime::MAX) {
        out.push(d);
    }
    let stats = net.stats();
    (out, net.disable_trace(), stats)
}

#[test]
fn paced_links_are_deterministic_and_account_for_every_copy() {
    let mut queue_full = 0;
    let mut delivered = 0;
    for seed in 0..40 {
        let first = paced_scenario(seed);
        let second = paced_scenario(seed);
        assert!(first == second, "seed {seed}: runs diverged");
        queue_full += first.2.queue_full;
        delivered += first.2.delivered;
        assert!(first.1.iter().any(|e| e.kind == TraceKind::OnWire));
    }
    // The workload exercises the bounds and still moves traffic.
    assert!(queue_full > 0, "no queue ever filled");
    assert!(delivered > 1_000, "delivered only {delivered}");
    assert_ne!(paced_scenario(1).1, paced_scenario(2).1);
}

#[test]
fn trace_shows_when_a_queued_message_goes_on_the_wire() {
    let mut net: Network<u8, Vec<u8>> = Network::new_sized(0);
    net.enable_trace(usize::MAX);
    net.set_link(1, 2, LinkConfig::tcp_like(MB_PER_S, u64::MAX));
    net.send(t(0), 1, 2, vec![0; 2_000]);
    net.send(t(0), 1, 2, vec![0; 1_000]);
    drain_all(&mut net);
    let lines: Vec<String> = net.trace().map(|e| format!("{e}")).collect();
    assert_eq!(
        lines,
        vec![
            "0.000000000s #0 1->2 Sent",
            "0.000000000s #0 1->2 OnWire",
            "0.000000000s #1 1->2 Sent",
            "0.002000000s #1 1->2 OnWire",
            "0.003000000s #0 1->2 Delivered",
            "0.004000000s #1 1->2 Delivered",
        ]
    );
}

/// Heartbeat delays and refused heartbeats when node 1 gossips 256 KiB
/// every 10 ms (25.6 MB/s) at node 2 over a 10 MB/s connection whose queue
/// holds 4 MiB or 16 frames, and heartbeats every 50 ms, for 5 s.
fn gossip_storm(lanes: bool) -> (Vec<Duration>, u64, LinkStats) {
    const CHUNK: usize = 256 * 1024;
    let mut net: Network<u8, Frame> = Network::new_sized(11);
    net.set_link(
        1,
        2,
        LinkConfig::tcp_like(10 * MB_PER_S, 4 * 1024 * 1024)
            .with_max_queued_messages(Some(16))
            .with_lanes(lanes),
    );
    let mut heartbeat_delays = Vec::new();
    let mut refused = 0;
    for tick in 0..500u64 {
        let now = t(tick * 10);
        for d in drain_until(&mut net, now) {
            if d.msg.is_urgent() {
                heartbeat_delays.push(d.at - d.sent_at);
            }
        }
        net.send(now, 1, 2, bulk(CHUNK - HEADER_LEN));
        if tick % 5 == 0
            && let SendOutcome::Dropped { .. } = net.send(now, 1, 2, urgent(0))
        {
            refused += 1;
        }
    }
    (heartbeat_delays, refused, net.link_stats(1, 2))
}

#[test]
fn a_gossip_storm_delays_heartbeats_on_one_lane_but_not_with_two() {
    let link = LinkConfig::tcp_like(10 * MB_PER_S, 0);
    // The longest a heartbeat can wait with lanes: one chunk on the wire.
    let bound = link.transmission_time(256 * 1024)
        + link.transmission_time((HEADER_LEN + 1) as u64)
        + link.latency();

    let (delays, refused, stats) = gossip_storm(true);
    assert!(stats.queue_full > 0, "the bulk lane never filled");
    assert_eq!(refused, 0);
    assert_eq!(delays.len(), 100);
    let worst = delays.iter().max().copied().unwrap_or_default();
    assert!(worst <= bound, "a heartbeat waited {worst:?} > {bound:?}");

    // One lane: a chunk arrives each tick and 0.38 leave, so the queue is
    // full (16 frames) within 0.3 s; from then on every tick's chunk takes
    // the slot that the wire freed, so each later heartbeat (90 from 0.5 s
    // on) is refused, and the ones before waited behind a growing backlog.
    let (delays, refused, _) = gossip_storm(false);
    assert!(refused >= 90, "only {refused} heartbeats refused");
    assert_eq!(delays.len() as u64 + refused, 100);
    assert!(delays.windows(2).all(|w| w[0] < w[1]), "{delays:?}");
}
