//! The patterns on the simulated network with loss, duplication and
//! reordering. Every case is replayable from the seed proptest prints.
//! `QUORATE_SIM_SEEDS=N` runs N cases per property (default 500, as CI expects).

use super::pubsub::{Publisher, Subscriber};
use super::pushpull::{Puller, Pusher};
use super::reqrep::{Replier, ReplierEvent, Requester, RequesterEvent};
use super::router::{Dealer, Router};
use super::*;
use crate::sim::{LinkConfig, Network, SimTime};
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec::Vec;
use proptest::prelude::*;

const STEP: Duration = Duration::from_millis(1);

fn cases() -> u32 {
    std::env::var("QUORATE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500)
}

#[derive(Clone, Copy, Debug)]
struct Faults {
    seed: u64,
    loss: f64,
    dup: f64,
    jitter_us: u64,
}

fn faults() -> impl Strategy<Value = Faults> {
    (any::<u64>(), 0.0..0.3f64, 0.0..0.3f64, 0..10_000u64).prop_map(
        |(seed, loss, dup, jitter_us)| Faults {
            seed,
            loss,
            dup,
            jitter_us,
        },
    )
}

fn network(f: Faults) -> Network<u8, Wire> {
    let mut net = Network::new(f.seed);
    net.set_default_link(
        LinkConfig::new(STEP)
            .with_jitter(Duration::from_micros(f.jitter_us))
            .with_loss(f.loss)
            .with_duplicate(f.dup),
    );
    net
}

fn at(now: Duration) -> SimTime {
    SimTime::from(now)
}

fn limits() -> Limits {
    Limits::default()
        .with_hwm(16)
        .with_refresh(Duration::from_millis(20))
}

/// Moves everything `poll` yields from `node` onto the network.
fn pump(
    net: &mut Network<u8, Wire>,
    now: Duration,
    node: u8,
    mut poll: impl FnMut() -> Option<(u8, Wire)>,
) {
    while let Some((to, msg)) = poll() {
        net.send(at(now), node, to, msg);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Each request gets exactly one outcome; a reply is the answer to that
    /// very request; with the network fault-free, every request is answered.
    #[test]
    fn reqrep_exactly_one_outcome_per_request(f in faults(), n in 1..40usize) {
        let mut net = network(f);
        let mut client: Requester<u8> = Requester::new(limits());
        let mut server: Replier<u8> = Replier::new(limits());
        let mut rng = fastrand::Rng::with_seed(f.seed);
        let mut asked: BTreeMap<RequestId, Bytes> = BTreeMap::new();
        let mut outcomes: BTreeMap<RequestId, Option<Bytes>> = BTreeMap::new();
        let mut now = Duration::ZERO;
        while now < Duration::from_millis(400) {
            if asked.len() < n && rng.u8(0..4) == 0 {
                let body = Bytes::from(format!("q{}", asked.len()));
                if let Ok(id) = client.request(now, 2, body.clone(), Duration::from_millis(50)) {
                    asked.insert(id, body);
                }
            }
            pump(&mut net, now, 1, || client.poll_transmit());
            pump(&mut net, now, 2, || server.poll_transmit());
            while let Some(d) = net.poll_delivery(at(now)) {
                match d.to {
                    1 => client.handle(d.from, d.msg),
                    _ => server.handle(d.from, d.msg),
                }
            }
            while let Some(ReplierEvent::Request { from, id, body }) = server.poll_event() {
                let mut answer = b"re:".to_vec();
                answer.extend_from_slice(&body);
                server.reply(from, id, Bytes::from(answer)).unwrap();
            }
            client.handle_timeout(now);
            while let Some(e) = client.poll_event() {
                let (id, outcome) = match e {
                    RequesterEvent::Reply { id, from, body } => {
                        prop_assert_eq!(from, 2);
                        (id, Some(body))
                    }
                    RequesterEvent::TimedOut { id } => (id, None),
                };
                prop_assert!(outcomes.insert(id, outcome.clone()).is_none(), "two outcomes for {:?}", id);
                if let Some(body) = outcome {
                    let q = asked.get(&id).unwrap();
                    prop_assert_eq!(&body[3..], &q[..], "reply to the wrong request");
                }
            }
            now += STEP;
        }
        // All requests were asked by 400 ms with 50 ms timeouts: all resolved.
        prop_assert_eq!(outcomes.len(), asked.len());
        if f.loss == 0.0 {
            prop_assert!(outcomes.values().all(Option::is_some));
        }
    }

    /// The puller never holds more than its window, receives each push at
    /// most once and in order, and (credit and skips healing loss) the
    /// pusher's queue drains.
    #[test]
    fn pushpull_respects_credit(f in faults(), window in 1..8u64, n in 1..60u32) {
        let mut net = network(f);
        let mut pusher: Pusher<u8> = Pusher::new(limits());
        let mut puller: Puller<u8> = Puller::new(limits(), window);
        let mut rng = fastrand::Rng::with_seed(f.seed ^ 1);
        let mut next = 0u32;
        let mut last: Option<u32> = None;
        let mut received = 0u32;
        let mut now = Duration::ZERO;
        puller.connect(now, 1);
        // Long enough to drain: with a window of 1 and a quarter of the
        // messages lost, a push and its credit make it through about once
        // per 50 ms (the 20 ms credit refresh heals the losses), so 60
        // pushes need about 3 s; 3 s was too tight (regression file).
        while now < Duration::from_secs(10) {
            while next < n && pusher.push(Bytes::from(next.to_be_bytes().to_vec())).is_ok() {
                next += 1;
            }
            pump(&mut net, now, 1, || pusher.poll_transmit());
            pump(&mut net, now, 2, || puller.poll_transmit());
            while let Some(d) = net.poll_delivery(at(now)) {
                match d.to {
                    1 => pusher.handle(now, d.from, d.msg),
                    _ => puller.handle(d.from, d.msg),
                }
                prop_assert!(puller.queued() as u64 <= window, "window exceeded");
            }
            puller.handle_timeout(now);
            // A slow consumer: reads now and then.
            let read = if rng.u8(0..3) == 0 { puller.poll_event() } else { None };
            if let Some(p) = read {
                let v = u32::from_be_bytes(p.body[..].try_into().unwrap());
                prop_assert!(last.is_none_or(|l| l < v), "out of order or repeated: {:?} then {}", last, v);
                last = Some(v);
                received += 1;
            }
            now += STEP;
        }
        prop_assert_eq!(next, n, "pusher could not queue everything");
        prop_assert_eq!(pusher.queued(), 0, "pusher stuck without credit");
        if f.loss == 0.0 && f.jitter_us == 0 && f.dup == 0.0 {
            prop_assert_eq!(received + puller.queued() as u32, n);
        }
    }

    /// Only subscribed topics reach the application, and the publisher never
    /// even sends a topic nobody subscribed to.
    #[test]
    fn pubsub_delivers_only_subscribed_topics(f in faults()) {
        let mut net = network(f);
        let mut publisher: Publisher<u8> = Publisher::new(limits().with_policy(HwmPolicy::Drop));
        let mut sub: Subscriber<u8> = Subscriber::new(limits());
        let mut rng = fastrand::Rng::with_seed(f.seed ^ 2);
        let topics = ["a/1", "a/2", "b/1", "never/1"];
        let mut delivered = 0;
        let mut now = Duration::ZERO;
        sub.connect(now, 1);
        sub.subscribe(now, Bytes::from_static(b"a/")).unwrap();
        while now < Duration::from_millis(600) {
            match rng.u8(0..40) {
                0 => { sub.subscribe(now, Bytes::from_static(b"b/")).unwrap(); }
                1 => { sub.unsubscribe(now, b"b/"); }
                2 => { sub.unsubscribe(now, b"a/"); }
                3 => { sub.subscribe(now, Bytes::from_static(b"a/")).unwrap(); }
                _ => {}
            }
            let topic = topics[rng.usize(0..topics.len())];
            let _ = publisher.publish(Bytes::from_static(topic.as_bytes()), Bytes::new());
            while let Some((to, msg)) = publisher.poll_transmit() {
                if let Wire::Publish { topic, .. } = &msg {
                    prop_assert!(!topic.starts_with(b"never"), "publisher sent an unsubscribed topic");
                }
                net.send(at(now), 1, to, msg);
            }
            pump(&mut net, now, 2, || sub.poll_transmit());
            while let Some(d) = net.poll_delivery(at(now)) {
                match d.to {
                    1 => publisher.handle(d.from, d.msg),
                    _ => sub.handle(d.from, d.msg),
                }
                while let Some(p) = sub.poll_event() {
                    prop_assert!(sub.is_subscribed(&p.topic), "unsubscribed topic {:?}", p.topic);
                    delivered += 1;
                }
            }
            sub.handle_timeout(now);
            now += STEP;
        }
        prop_assert!(delivered > 0, "nothing delivered in 600 ms");
    }

    /// Replies routed by identity reach the dealer that sent the request,
    /// never another.
    #[test]
    fn router_routes_by_identity(f in faults()) {
        let mut net = network(f);
        let mut router: Router<u8> = Router::new(limits());
        let mut dealers: Vec<Dealer<u8>> = (2..5u8)
            .map(|i| Dealer::new(limits(), Bytes::from(format!("w{i}"))))
            .collect();
        let mut now = Duration::ZERO;
        for d in dealers.iter_mut() {
            d.connect(now, 1);
        }
        let mut answered = 0;
        while now < Duration::from_millis(300) {
            for (i, d) in dealers.iter_mut().enumerate() {
                let body = format!("{}:{}", String::from_utf8_lossy(d.identity()), now.as_millis());
                let _ = d.send(Bytes::from(body));
                pump(&mut net, now, i as u8 + 2, || d.poll_transmit());
                d.handle_timeout(now);
            }
            pump(&mut net, now, 1, || router.poll_transmit());
            while let Some(del) = net.poll_delivery(at(now)) {
                match del.to {
                    1 => router.handle(del.from, del.msg),
                    n => dealers[usize::from(n - 2)].handle(del.from, del.msg),
                }
            }
            while let Some(r) = router.poll_event() {
                prop_assert!(r.body.starts_with(&r.identity), "identity does not match sender");
                let _ = router.send(r.identity, r.body);
            }
            for d in dealers.iter_mut() {
                while let Some(m) = d.poll_event() {
                    let mut own = d.identity().to_vec();
                    own.push(b':');
                    prop_assert!(m.body.starts_with(&own), "misrouted reply");
                    answered += 1;
                }
            }
            now += STEP;
        }
        prop_assert!(answered > 0);
    }
}
