use super::*;
use alloc::string::String;
use alloc::vec;
use proptest::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct NodeId(u64);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Msg {
    AppendEntries(u64),
    Vote(u64),
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn t(n: u64) -> SimTime {
    SimTime::from_millis(n)
}

/// How many seeds the seeded scenario tests run: `QUORATE_SIM_SEEDS` or 500.
fn sim_seeds() -> u64 {
    std::env::var("QUORATE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500)
}

fn drain<N: Copy + Ord + fmt::Debug, M: Clone>(
    net: &mut Network<N, M>,
    now: SimTime,
) -> Vec<Delivery<N, M>> {
    core::iter::from_fn(|| net.poll_delivery(now)).collect()
}

/// A random scenario on a faulty network, driven by its own RNG derived from
/// `seed`: sends, crashes, restarts, partitions and polls at advancing times.
/// Returns the deliveries (with payloads) and the trace.
fn run_scenario(seed: u64) -> (Vec<Delivery<NodeId, Msg>>, Vec<TraceEvent<NodeId>>, Stats) {
    let mut net: Network<NodeId, Msg> = Network::new(seed);
    net.enable_trace(usize::MAX);
    net.set_default_link(
        LinkConfig::new(ms(5))
            .with_jitter(ms(20))
            .with_loss(0.1)
            .with_duplicate(0.1),
    );
    net.set_link(
        NodeId(0),
        NodeId(1),
        LinkConfig::new(ms(2)).with_ordered(true).with_jitter(ms(9)),
    );
    let mut driver = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let mut now = SimTime::ZERO;
    let mut out = Vec::new();
    for step in 0..400u64 {
        now += Duration::from_micros(driver.u64(0..3_000));
        let a = NodeId(driver.u64(0..5));
        let b = NodeId(driver.u64(0..5));
        match driver.u8(0..20) {
            0 => net.crash(a),
            1 => net.restart(a),
            2 => net.partition(a, b),
            3 => net.heal(a, b),
            4 => net.cut(a, b),
            _ => {
                let msg = if driver.bool() {
                    Msg::AppendEntries(step)
                } else {
                    Msg::Vote(step)
                };
                net.send(now, a, b, msg);
            }
        }
        out.extend(drain(&mut net, now));
    }
    net.heal_all();
    out.extend(drain(&mut net, SimTime::MAX));
    let stats = net.stats();
    (out, net.disable_trace(), stats)
}

#[test]
fn same_seed_same_trace() {
    for seed in 0..sim_seeds() {
        let first = run_scenario(seed);
        let second = run_scenario(seed);
        assert_eq!(first, second, "seed {seed}: runs diverged");
        assert!(
            first.2.delivered > 0,
            "seed {seed}: scenario delivered nothing"
        );
    }
}

#[test]
fn different_seeds_give_different_traces() {
    let (_, a, _) = run_scenario(1);
    let (_, b, _) = run_scenario(2);
    assert_ne!(a, b);
}

#[test]
fn reliable_link_delivers_after_its_latency() {
    let mut net: Network<NodeId, Msg> = Network::new(0);
    net.set_default_link(LinkConfig::new(ms(10)));
    let out = net.send(t(3), NodeId(1), NodeId(2), Msg::Vote(1));
    assert_eq!(
        out,
        SendOutcome::Scheduled {
            id: MessageId(0),
            at: t(13),
            duplicate_at: None
        }
    );
    assert_eq!(net.next_delivery_time(), Some(t(13)));
    assert_eq!(net.poll_delivery(t(12)), None);
    let d = net.poll_delivery(t(100)).unwrap();
    assert_eq!(
        d,
        Delivery {
            id: MessageId(0),
            at: t(13),
            sent_at: t(3),
            from: NodeId(1),
            to: NodeId(2),
            msg: Msg::Vote(1)
        }
    );
    assert_eq!(net.poll_delivery(t(100)), None);
    assert_eq!(net.next_delivery_time(), None);
}

#[test]
fn same_due_time_keeps_send_order() {
    let mut net: Network<u8, u32> = Network::new(0);
    for i in 0..10 {
        net.send(t(0), 1, 2, i);
    }
    let got: Vec<u32> = drain(&mut net, t(1)).into_iter().map(|d| d.msg).collect();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
}

#[test]
fn loss_probability_extremes_and_middle() {
    let mut net: Network<u8, u32> = Network::new(9);
    net.set_link(1, 2, LinkConfig::default().with_loss(1.0));
    net.set_link(1, 3, LinkConfig::default().with_loss(0.0));
    net.set_link(1, 4, LinkConfig::default().with_loss(0.3));
    for i in 0..2_000 {
        net.send(t(0), 1, 2, i);
        net.send(t(0), 1, 3, i);
        net.send(t(0), 1, 4, i);
    }
    let got = drain(&mut net, t(10));
    let to = |n| got.iter().filter(|d| d.to == n).count();
    assert_eq!(to(2), 0);
    assert_eq!(to(3), 2_000);
    // Binomial(2000, 0.7): mean 1400, sd ~20.5; 1300..1500 is ~5 sd.
    assert!((1_300..=1_500).contains(&to(4)), "delivered {}", to(4));
    assert_eq!(net.stats().lost as usize, 2_000 + (2_000 - to(4)));
}

#[test]
fn duplication_delivers_a_second_copy_with_the_same_id() {
    let mut net: Network<u8, String> = Network::new(3);
    net.set_default_link(
        LinkConfig::new(ms(1))
            .with_duplicate(1.0)
            .with_jitter(ms(5)),
    );
    for i in 0..50 {
        let out = net.send(t(0), 1, 2, alloc::format!("m{i}"));
        assert!(matches!(
            out,
            SendOutcome::Scheduled {
                duplicate_at: Some(_),
                ..
            }
        ));
    }
    let got = drain(&mut net, t(100));
    assert_eq!(got.len(), 100);
    for i in 0..50u64 {
        let copies: Vec<_> = got.iter().filter(|d| d.id == MessageId(i)).collect();
        assert_eq!(copies.len(), 2);
        assert_eq!(copies[0].msg, copies[1].msg);
        assert_eq!(copies[0].msg, alloc::format!("m{i}"));
    }
    assert_eq!(net.stats().duplicated, 50);
}

#[test]
fn jitter_reorders_an_unordered_link() {
    let mut net: Network<u8, u32> = Network::new(5);
    net.set_default_link(LinkConfig::new(ms(1)).with_jitter(ms(50)));
    for i in 0..200 {
        net.send(SimTime::from_micros(u64::from(i) * 100), 1, 2, i);
    }
    let got: Vec<u32> = drain(&mut net, t(1_000))
        .into_iter()
        .map(|d| d.msg)
        .collect();
    assert_eq!(got.len(), 200);
    assert!(got.windows(2).any(|w| w[0] > w[1]), "no reordering at all");
}

#[test]
fn one_way_partition_blocks_one_direction_only() {
    let mut net: Network<u8, u32> = Network::new(0);
    net.cut(1, 2);
    assert!(matches!(
        net.send(t(0), 1, 2, 1),
        SendOutcome::Dropped {
            cause: LossCause::Partitioned,
            ..
        }
    ));
    net.send(t(0), 2, 1, 2);
    let got = drain(&mut net, t(10));
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].from, got[0].to), (2, 1));
    net.mend(1, 2);
    net.send(t(10), 1, 2, 3);
    assert_eq!(drain(&mut net, t(20)).len(), 1);
    assert_eq!(net.stats().partitioned, 1);
}

#[test]
fn two_way_partition_split_and_isolate() {
    let mut net: Network<u8, u32> = Network::new(0);
    net.partition(1, 2);
    assert!(net.is_cut(1, 2) && net.is_cut(2, 1) && !net.is_cut(1, 3));
    net.heal(1, 2);
    assert!(!net.is_cut(1, 2) && !net.is_cut(2, 1));

    net.split(&[&[1, 2], &[3, 4, 5]]);
    assert!(!net.is_cut(1, 2) && !net.is_cut(4, 5));
    for a in [1, 2] {
        for b in [3, 4, 5] {
            assert!(net.is_cut(a, b) && net.is_cut(b, a));
        }
    }
    net.heal_all();
    assert!(!net.is_cut(1, 3));

    net.isolate(3);
    assert!(net.is_cut(3, 1) && net.is_cut(2, 3) && !net.is_cut(3, 3) && !net.is_cut(1, 2));
    net.rejoin(3);
    assert!(!net.is_cut(3, 1));
}

#[test]
fn cutting_a_link_drops_what_is_in_flight_on_it() {
    let mut net: Network<u8, u32> = Network::new(0);
    net.set_default_link(LinkConfig::new(ms(10)));
    net.send(t(0), 1, 2, 1);
    net.send(t(0), 2, 1, 2);
    net.cut(1, 2);
    let got = drain(&mut net, t(20));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].msg, 2);
    assert_eq!(net.stats().partitioned, 1);
}

#[test]
fn crash_loses_in_flight_and_drops_until_restart() {
    let mut net: Network<u8, u32> = Network::new(0);
    net.set_default_link(LinkConfig::new(ms(10)));
    net.send(t(0), 1, 2, 10); // to the node that crashes: lost
    net.send(t(0), 2, 1, 20); // from it, already on the wire: delivered
    net.crash(2);
    assert!(net.is_crashed(2));
    assert_eq!(net.in_flight(), 1);
    assert!(matches!(
        net.send(t(1), 1, 2, 11),
        SendOutcome::Dropped {
            cause: LossCause::Crashed,
            ..
        }
    ));
    assert!(matches!(
        net.send(t(1), 2, 3, 21),
        SendOutcome::Dropped {
            cause: LossCause::Crashed,
            ..
        }
    ));
    let got = drain(&mut net, t(20));
    assert_eq!(got.iter().map(|d| d.msg).collect::<Vec<_>>(), vec![20]);

    net.restart(2);
    assert!(!net.is_crashed(2));
    net.send(t(20), 1, 2, 12);
    let got = drain(&mut net, t(40));
    assert_eq!(got.iter().map(|d| d.msg).collect::<Vec<_>>(), vec![12]);
    assert_eq!(net.stats().crashed, 3);
}

#[test]
fn filter_drops_only_what_it_matches() {
    let mut net: Network<NodeId, Msg> = Network::new(0);
    let f = net.add_filter(|from, to, m| {
        from == NodeId(2) && to == NodeId(3) && matches!(m, Msg::AppendEntries(_))
    });
    net.send(t(0), NodeId(2), NodeId(3), Msg::AppendEntries(1)); // dropped
    net.send(t(0), NodeId(2), NodeId(3), Msg::Vote(1));
    net.send(t(0), NodeId(3), NodeId(2), Msg::AppendEntries(2));
    net.send(t(0), NodeId(2), NodeId(1), Msg::AppendEntries(3));
    let got: Vec<Msg> = drain(&mut net, t(10)).into_iter().map(|d| d.msg).collect();
    assert_eq!(
        got,
        vec![Msg::Vote(1), Msg::AppendEntries(2), Msg::AppendEntries(3)]
    );
    assert_eq!(net.stats().filtered, 1);
    assert!(net.remove_filter(f));
    assert!(!net.remove_filter(f));
    net.send(t(10), NodeId(2), NodeId(3), Msg::AppendEntries(4));
    assert_eq!(drain(&mut net, t(20)).len(), 1);
}

#[test]
fn clock_never_runs_backwards() {
    let mut net: Network<u8, u32> = Network::new(0);
    net.set_default_link(LinkConfig::new(ms(10)));
    net.poll_delivery(t(50));
    // A stale `now` counts as the latest seen time.
    let out = net.send(t(10), 1, 2, 1);
    assert!(matches!(out, SendOutcome::Scheduled { at, .. } if at == t(60)));
    assert_eq!(net.now(), t(50));
}

#[test]
fn trace_keeps_the_last_events_without_payloads() {
    let mut net: Network<u8, u32> = Network::new(0);
    assert_eq!(net.trace().count(), 0);
    net.enable_trace(3);
    net.send(t(0), 1, 2, 1);
    net.cut(1, 2);
    net.send(t(0), 1, 2, 2);
    net.mend(1, 2);
    drain(&mut net, t(5));
    let kinds: Vec<TraceKind> = net.trace().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            TraceKind::Sent,
            TraceKind::Dropped(LossCause::Partitioned),
            TraceKind::Delivered
        ]
    );
    net.send(t(5), 1, 2, 3);
    let events = net.disable_trace();
    assert_eq!(events.len(), 3);
    assert_eq!(events[2].id, MessageId(2));
    assert_eq!(alloc::format!("{}", events[2]), "0.005000000s #2 1->2 Sent");
    net.send(t(5), 1, 2, 4);
    assert_eq!(net.trace().count(), 0);
}

#[test]
fn debug_shows_state_without_payloads() {
    let mut net: Network<u8, u32> = Network::new(77);
    net.send(t(0), 1, 2, 1);
    let s = alloc::format!("{net:?}");
    assert!(s.contains("seed: 77") && s.contains("in_flight: 1"), "{s}");
}

/// One step of a random workload for the property tests.
#[derive(Clone, Debug)]
enum Op {
    Send(u8, u8),
    Advance(u16),
    Crash(u8),
    Restart(u8),
    Cut(u8, u8),
    HealAll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4u8, 0..4u8).prop_map(|(a, b)| Op::Send(a, b)),
        3 => any::<u16>().prop_map(Op::Advance),
        1 => (0..4u8).prop_map(Op::Crash),
        1 => (0..4u8).prop_map(Op::Restart),
        1 => (0..4u8, 0..4u8).prop_map(|(a, b)| Op::Cut(a, b)),
        1 => Just(Op::HealAll),
    ]
}

proptest! {
    /// Every copy is accounted for; deliveries come in time order, never
    /// early, never late past `now`; ordered links stay FIFO.
    #[test]
    fn conservation_and_time_order(
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 0..200),
        loss in 0.0..0.5f64,
        dup in 0.0..0.5f64,
        jitter_us in 0..20_000u64,
    ) {
        let mut net: Network<u8, u64> = Network::new(seed);
        let link = LinkConfig::new(ms(1))
            .with_jitter(Duration::from_micros(jitter_us))
            .with_loss(loss)
            .with_duplicate(dup);
        net.set_default_link(link);
        net.set_link(0, 1, link.with_ordered(true));
        let mut now = SimTime::ZERO;
        let mut last_at = SimTime::ZERO;
        let mut last_fifo: Option<u64> = None;
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Send(a, b) => { net.send(now, a, b, i as u64); }
                Op::Advance(us) => now += Duration::from_micros(u64::from(us)),
                Op::Crash(n) => net.crash(n),
                Op::Restart(n) => net.restart(n),
                Op::Cut(a, b) => net.cut(a, b),
                Op::HealAll => net.heal_all(),
            }
            while let Some(d) = net.poll_delivery(now) {
                prop_assert!(d.at <= now);
                prop_assert!(d.at >= last_at);
                prop_assert!(d.at >= d.sent_at + ms(1));
                last_at = d.at;
                if (d.from, d.to) == (0, 1) {
                    // Duplicates may repeat a message but never go back past it.
                    prop_assert!(last_fifo.is_none_or(|l| l <= d.msg));
                    last_fifo = Some(d.msg);
                }
            }
            let s = net.stats();
            prop_assert_eq!(s.sent + s.duplicated, s.delivered + s.dropped() + net.in_flight() as u64);
        }
    }
}

// ----- the behaviour to keep: old-style links -----

/// FNV-1a over `text`, to fingerprint long traces in a few digits.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A short scenario over old-style links (latency, jitter, loss,
/// duplication, one ordered link, a crash and a cut), rendered one trace
/// event per line.
fn old_style_trace() -> String {
    let mut net: Network<u8, u32> = Network::new(0xfeed);
    net.enable_trace(usize::MAX);
    net.set_default_link(
        LinkConfig::new(ms(2))
            .with_jitter(ms(6))
            .with_loss(0.2)
            .with_duplicate(0.2),
    );
    net.set_link(
        1,
        2,
        LinkConfig::new(ms(1)).with_jitter(ms(4)).with_ordered(true),
    );
    for i in 0..24u32 {
        let now = SimTime::from_micros(u64::from(i) * 700);
        let from = 1 + (i % 3) as u8;
        let to = 1 + ((i / 3) % 3) as u8;
        if i == 9 {
            net.cut(3, 1);
        }
        if i == 15 {
            net.crash(2);
        }
        if i == 19 {
            net.restart(2);
        }
        net.send(now, from, to, i);
        drain(&mut net, now);
    }
    drain(&mut net, SimTime::MAX);
    net.trace().map(|e| alloc::format!("{e}\n")).collect()
}

/// `old_style_trace()` as printed by the code on this branch before links
/// had bandwidth, queues and lanes (commit 56bbbb4): the behaviour to keep.
const OLD_STYLE_TRACE: &str = "\
0.000000000s #0 1->1 Sent\n\
0.000700000s #1 2->1 Sent\n\
0.001400000s #2 3->1 Sent\n\
0.002100000s #3 1->2 Sent\n\
0.002800000s #4 2->2 Sent\n\
0.002685913s #0 1->1 Delivered\n\
0.003500000s #5 3->2 Sent\n\
0.004200000s #6 1->3 Sent\n\
0.003847938s #2 3->1 Delivered\n\
0.004900000s #7 2->3 Sent\n\
0.005600000s #8 3->3 Sent\n\
0.005495381s #1 2->1 Delivered\n\
0.006300000s #9 1->1 Sent\n\
0.007000000s #10 2->1 Sent\n\
0.006890694s #3 1->2 Delivered\n\
0.007700000s #11 3->1 Dropped(Partitioned)\n\
0.008400000s #12 1->2 Sent\n\
0.007796569s #4 2->2 Delivered\n\
0.008157205s #6 1->3 Delivered\n\
0.009100000s #13 2->2 Sent\n\
0.009100000s #13 2->2 Duplicated\n\
0.008544468s #7 2->3 Delivered\n\
0.009800000s #14 3->2 Sent\n\
0.009497670s #10 2->1 Delivered\n\
0.009800000s #5 3->2 Dropped(Crashed)\n\
0.009800000s #12 1->2 Dropped(Crashed)\n\
0.009800000s #13 2->2 Dropped(Crashed)\n\
0.009800000s #13 2->2 Dropped(Crashed)\n\
0.009800000s #14 3->2 Dropped(Crashed)\n\
0.010500000s #15 1->3 Dropped(Lost)\n\
0.011200000s #16 2->3 Dropped(Crashed)\n\
0.011900000s #17 3->3 Sent\n\
0.012600000s #18 1->1 Sent\n\
0.012415928s #8 3->3 Delivered\n\
0.013300000s #19 2->1 Dropped(Lost)\n\
0.014000000s #20 3->1 Dropped(Partitioned)\n\
0.013705413s #9 1->1 Delivered\n\
0.014700000s #21 1->2 Sent\n\
0.015400000s #22 2->2 Sent\n\
0.014735304s #17 3->3 Delivered\n\
0.016100000s #23 3->2 Sent\n\
0.016715148s #18 1->1 Delivered\n\
0.018814338s #22 2->2 Delivered\n\
0.019629354s #21 1->2 Delivered\n\
0.023574881s #23 3->2 Delivered\n";

/// [`scenario_fingerprint`] as computed by the code before links had
/// bandwidth, queues and lanes (commit 56bbbb4).
const OLD_SCENARIO_FINGERPRINT: u64 = 0xc01c_244c_a55d_c39c;

/// The deliveries, trace and counters of `run_scenario` over 50 seeds,
/// hashed. The counters are listed one by one so that counters added later
/// (always zero here) leave the fingerprint alone.
fn scenario_fingerprint() -> u64 {
    let mut all = String::new();
    for seed in 0..50 {
        let (deliveries, trace, s) = run_scenario(seed);
        all.push_str(&alloc::format!(
            "{deliveries:?}{trace:?}{} {} {} {} {} {} {}",
            s.sent,
            s.duplicated,
            s.delivered,
            s.lost,
            s.partitioned,
            s.crashed,
            s.filtered
        ));
    }
    fnv1a(&all)
}

#[test]
fn old_style_links_deliver_exactly_as_before() {
    let now = old_style_trace();
    assert_eq!(now, OLD_STYLE_TRACE, "new trace:\n{now}");
    assert_eq!(scenario_fingerprint(), OLD_SCENARIO_FINGERPRINT);
}
