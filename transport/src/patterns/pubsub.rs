//! Publish/subscribe with topic prefixes. Subscriptions travel upstream and
//! the publisher filters, so unsubscribed topics never cross the network.
//!
//! A [`Subscriber`] sends each publisher it [connects](Subscriber::connect)
//! to its whole subscription set with a version number, on every change
//! and every `refresh`; the [`Publisher`] keeps the highest version per
//! subscriber, so lost or reordered updates heal. The subscriber also
//! filters what arrives, so it never hands the application a topic it is
//! not subscribed to, even just after unsubscribing.
//!
//! ```
//! use core::time::Duration;
//! use bytes::Bytes;
//! use quorate_transport::patterns::Limits;
//! use quorate_transport::patterns::pubsub::{Publisher, Subscriber};
//!
//! let now = Duration::ZERO;
//! let mut publisher: Publisher<u8> = Publisher::new(Limits::default());
//! let mut sub: Subscriber<u8> = Subscriber::new(Limits::default());
//! sub.connect(now, 1);
//! sub.subscribe(now, Bytes::from("chat/")).unwrap();
//! while let Some((_, m)) = sub.poll_transmit() { publisher.handle(2, m); }
//!
//! assert_eq!(publisher.publish(Bytes::from("chat/rust"), Bytes::from("hi")).unwrap(), 1);
//! assert_eq!(publisher.publish(Bytes::from("news"), Bytes::from("x")).unwrap(), 0);
//! while let Some((_, m)) = publisher.poll_transmit() { sub.handle(1, m); }
//! assert_eq!(sub.poll_event().unwrap().topic, Bytes::from("chat/rust"));
//! assert!(sub.poll_event().is_none());
//! ```

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::fmt::Debug;
use core::time::Duration;

use bytes::Bytes;

use super::{Counters, Error, HwmPolicy, Limits, Wire};

/// Whether `topic` starts with any of `prefixes`.
fn matches<'a>(mut prefixes: impl Iterator<Item = &'a Bytes>, topic: &[u8]) -> bool {
    prefixes.any(|p| topic.starts_with(p))
}

#[derive(Debug, Default)]
struct Subscription {
    version: u64,
    prefixes: Vec<Bytes>,
    /// Messages queued for this subscriber.
    queued: usize,
}

/// The publishing side. Each subscriber has its own queue of at most `hwm`
/// messages. When a matching subscriber's queue is full, under
/// [`HwmPolicy::Drop`] that subscriber misses the message (counted) and
/// the others get it, as in ZeroMQ; under [`HwmPolicy::Block`] the publish
/// is refused for everyone with [`Error::Full`].
#[derive(Debug)]
pub struct Publisher<P> {
    limits: Limits,
    subscribers: BTreeMap<P, Subscription>,
    transmit: VecDeque<(P, Wire)>,
    counters: Counters,
}

impl<P: Copy + Ord + Debug> Publisher<P> {
    /// A publisher with these limits; each subscriber may hold at most
    /// `hwm` prefixes.
    pub fn new(limits: Limits) -> Self {
        Publisher {
            limits,
            subscribers: BTreeMap::new(),
            transmit: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    /// Feeds a message from `from`: a subscription set.
    pub fn handle(&mut self, from: P, msg: Wire) {
        let Wire::Subscribe {
            version,
            mut prefixes,
        } = msg
        else {
            self.counters.unexpected += 1;
            return;
        };
        let sub = self.subscribers.entry(from).or_default();
        if version < sub.version {
            self.counters.ignored += 1;
            return;
        }
        if prefixes.len() > self.limits.cap() {
            self.counters.ignored += 1;
            prefixes.truncate(self.limits.cap());
        }
        sub.version = version;
        sub.prefixes = prefixes;
    }

    /// Forgets a subscriber and drops what was queued for it.
    pub fn disconnect(&mut self, peer: P) {
        self.subscribers.remove(&peer);
        self.transmit.retain(|(p, _)| *p != peer);
    }

    /// Queues `body` on `topic` for every subscriber with a matching prefix;
    /// returns how many.
    pub fn publish(&mut self, topic: Bytes, body: Bytes) -> Result<usize, Error> {
        let cap = self.limits.cap();
        let mut matching = self
            .subscribers
            .iter()
            .filter(|(_, s)| matches(s.prefixes.iter(), &topic));
        if self.limits.policy == HwmPolicy::Block && matching.any(|(_, s)| s.queued >= cap) {
            return Err(Error::Full { hwm: cap });
        }
        let mut queued = 0;
        for (peer, sub) in self.subscribers.iter_mut() {
            if !matches(sub.prefixes.iter(), &topic) {
                continue;
            }
            if sub.queued >= cap {
                self.counters.dropped_outbound += 1;
                continue;
            }
            sub.queued += 1;
            queued += 1;
            let msg = Wire::Publish {
                topic: topic.clone(),
                body: body.clone(),
            };
            self.transmit.push_back((*peer, msg));
        }
        Ok(queued)
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<(P, Wire)> {
        let (peer, msg) = self.transmit.pop_front()?;
        if let Some(sub) = self.subscribers.get_mut(&peer) {
            sub.queued = sub.queued.saturating_sub(1);
        }
        Some((peer, msg))
    }

    /// Known subscribers.
    pub fn subscribers(&self) -> usize {
        self.subscribers.len()
    }

    /// Drop and anomaly counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }
}

/// A message a [`Subscriber`] received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published<P> {
    /// The publisher.
    pub from: P,
    /// The topic, which matches a current subscription.
    pub topic: Bytes,
    /// The message.
    pub body: Bytes,
}

/// The subscribing side. It holds at most `hwm` prefixes and `hwm` unread
/// messages; messages beyond that are dropped and counted.
#[derive(Debug)]
pub struct Subscriber<P> {
    limits: Limits,
    version: u64,
    prefixes: BTreeSet<Bytes>,
    publishers: BTreeSet<P>,
    events: VecDeque<Published<P>>,
    transmit: VecDeque<(P, Wire)>,
    next_refresh: Option<Duration>,
    counters: Counters,
}

impl<P: Copy + Ord + Debug> Subscriber<P> {
    /// A subscriber with these limits.
    pub fn new(limits: Limits) -> Self {
        Subscriber {
            limits,
            version: 0,
            prefixes: BTreeSet::new(),
            publishers: BTreeSet::new(),
            events: VecDeque::new(),
            transmit: VecDeque::new(),
            next_refresh: None,
            counters: Counters::default(),
        }
    }

    /// Starts receiving from `publisher`: sends it the subscription set.
    pub fn connect(&mut self, now: Duration, publisher: P) {
        self.publishers.insert(publisher);
        self.announce(publisher);
        self.arm_refresh(now);
    }

    /// Stops receiving from `publisher`.
    pub fn disconnect(&mut self, publisher: P) {
        self.publishers.remove(&publisher);
        self.transmit.retain(|(p, _)| *p != publisher);
    }

    /// Adds a topic prefix (the empty prefix matches every topic).
    pub fn subscribe(&mut self, now: Duration, prefix: Bytes) -> Result<(), Error> {
        if self.prefixes.contains(&prefix) {
            return Ok(());
        }
        let max = self.limits.cap().min(super::MAX_WIRE_PREFIXES);
        if self.prefixes.len() >= max {
            return Err(Error::TooManySubscriptions { max });
        }
        self.prefixes.insert(prefix);
        self.changed(now);
        Ok(())
    }

    /// Removes a topic prefix; returns whether it was there.
    pub fn unsubscribe(&mut self, now: Duration, prefix: &[u8]) -> bool {
        let was = self.prefixes.remove(prefix);
        if was {
            self.changed(now);
        }
        was
    }

    /// Feeds a message from `from`.
    pub fn handle(&mut self, from: P, msg: Wire) {
        let Wire::Publish { topic, body } = msg else {
            self.counters.unexpected += 1;
            return;
        };
        if !self.publishers.contains(&from) || !matches(self.prefixes.iter(), &topic) {
            self.counters.ignored += 1;
        } else if self.events.len() >= self.limits.cap() {
            self.counters.dropped_inbound += 1;
        } else {
            self.events.push_back(Published { from, topic, body });
        }
    }

    /// Re-sends the subscription set once per `refresh`.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.next_refresh.is_some_and(|t| t <= now) {
            self.next_refresh = None;
            self.announce_all();
            self.arm_refresh(now);
        }
    }

    /// When to call [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.next_refresh
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<(P, Wire)> {
        self.transmit.pop_front()
    }

    /// The next message for the application.
    pub fn poll_event(&mut self) -> Option<Published<P>> {
        self.events.pop_front()
    }

    /// Whether `topic` matches a current subscription.
    pub fn is_subscribed(&self, topic: &[u8]) -> bool {
        matches(self.prefixes.iter(), topic)
    }

    /// Drop and anomaly counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    fn changed(&mut self, now: Duration) {
        self.version += 1;
        self.announce_all();
        self.arm_refresh(now);
    }

    fn announce_all(&mut self) {
        let publishers: Vec<P> = self.publishers.iter().copied().collect();
        for p in publishers {
            self.announce(p);
        }
    }

    /// Queues the current set for `publisher`, replacing any older one still
    /// queued, so the queue holds at most one per publisher.
    fn announce(&mut self, publisher: P) {
        self.transmit.retain(|(p, _)| *p != publisher);
        let msg = Wire::Subscribe {
            version: self.version,
            prefixes: self.prefixes.iter().cloned().collect(),
        };
        self.transmit.push_back((publisher, msg));
    }

    fn arm_refresh(&mut self, now: Duration) {
        if self.next_refresh.is_none() && !self.publishers.is_empty() {
            self.next_refresh = Some(now.saturating_add(self.limits.refresh));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::ZERO;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn sub_msg(version: u64, prefixes: &[&'static str]) -> Wire {
        Wire::Subscribe {
            version,
            prefixes: prefixes.iter().map(|p| b(p)).collect(),
        }
    }

    #[test]
    fn stale_subscription_sets_are_ignored() {
        let mut p: Publisher<u8> = Publisher::new(Limits::default());
        p.handle(1, sub_msg(2, &["a"]));
        p.handle(1, sub_msg(1, &["b"]));
        assert_eq!(p.publish(b("a1"), b("")).unwrap(), 1);
        assert_eq!(p.publish(b("b1"), b("")).unwrap(), 0);
        assert_eq!(p.counters().ignored, 1);
    }

    #[test]
    fn slow_subscriber_under_drop_policy_misses_messages_others_do_not() {
        let limits = Limits::default().with_hwm(2).with_policy(HwmPolicy::Drop);
        let mut p: Publisher<u8> = Publisher::new(limits);
        p.handle(1, sub_msg(1, &[""]));
        p.handle(2, sub_msg(1, &["x"]));
        for _ in 0..3 {
            p.publish(b("x"), b("")).unwrap();
        }
        // 4 queued (2 each), 2 dropped.
        assert_eq!(p.counters().dropped_outbound, 2);
        assert_eq!(p.poll_transmit().map(|(to, _)| to), Some(1));
        assert_eq!(p.publish(b("y"), b("")).unwrap(), 1);
        p.disconnect(1);
        assert_eq!(core::iter::from_fn(|| p.poll_transmit()).count(), 2);
    }

    #[test]
    fn block_policy_refuses_for_everyone() {
        let mut p: Publisher<u8> = Publisher::new(Limits::default().with_hwm(1));
        p.handle(1, sub_msg(1, &[""]));
        p.handle(2, sub_msg(1, &[""]));
        assert_eq!(p.publish(b("t"), b("")).unwrap(), 2);
        assert_eq!(p.publish(b("t"), b("")), Err(Error::Full { hwm: 1 }));
        assert_eq!(p.poll_transmit().map(|(to, _)| to), Some(1));
        assert_eq!(p.poll_transmit().map(|(to, _)| to), Some(2));
        assert_eq!(p.publish(b("t"), b("")).unwrap(), 2);
    }

    #[test]
    fn subscriber_filters_and_limits() {
        let mut s: Subscriber<u8> = Subscriber::new(Limits::default().with_hwm(2));
        s.connect(T, 1);
        s.subscribe(T, b("a")).unwrap();
        s.subscribe(T, b("b")).unwrap();
        assert_eq!(
            s.subscribe(T, b("c")),
            Err(Error::TooManySubscriptions { max: 2 })
        );
        // Only the latest set is queued.
        assert_eq!(s.poll_transmit(), Some((1, sub_msg(2, &["a", "b"]))));
        assert_eq!(s.poll_transmit(), None);
        assert!(s.unsubscribe(T, b"b"));
        assert!(!s.unsubscribe(T, b"b"));
        let publish = |t| Wire::Publish {
            topic: b(t),
            body: b(""),
        };
        s.handle(1, publish("b1")); // unsubscribed: ignored
        s.handle(9, publish("a1")); // unknown publisher
        s.handle(1, publish("a1"));
        s.handle(1, publish("a2"));
        s.handle(1, publish("a3")); // over hwm
        assert_eq!(s.counters().ignored, 2);
        assert_eq!(s.counters().dropped_inbound, 1);
        assert_eq!(s.poll_event().unwrap().topic, b("a1"));
    }
}
