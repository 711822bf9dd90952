//! Dealer/router: asynchronous messages routed by peer identity.
//!
//! A [`Dealer`] greets each router it [connects](Dealer::connect) to with
//! its identity (and again every `refresh`, so a lost greeting or a
//! restarted router heals), then sends messages round-robin across its
//! routers with no request/reply lock-step. A [`Router`] tags each inbound
//! message with the sender's identity and sends back to an identity,
//! wherever that dealer is now connected from: a dealer that reconnects
//! with the same identity gets its replies on the new connection.
//!
//! ```
//! use core::time::Duration;
//! use bytes::Bytes;
//! use quorate_transport::patterns::Limits;
//! use quorate_transport::patterns::router::{Dealer, Router, Routed};
//!
//! let now = Duration::ZERO;
//! let mut dealer: Dealer<u8> = Dealer::new(Limits::default(), Bytes::from("worker-7"));
//! let mut router: Router<u8> = Router::new(Limits::default());
//! dealer.connect(now, 1);                       // router is node 1
//! dealer.send(Bytes::from("ready")).unwrap();
//! while let Some((_, m)) = dealer.poll_transmit() { router.handle(2, m); } // dealer is node 2
//! let Routed { identity, body } = router.poll_event().unwrap();
//! assert_eq!((&identity[..], &body[..]), (&b"worker-7"[..], &b"ready"[..]));
//! router.send(identity, Bytes::from("job 1")).unwrap();
//! let (to, m) = router.poll_transmit().unwrap();
//! assert_eq!(to, 2);
//! dealer.handle(1, m);
//! assert_eq!(dealer.poll_event().unwrap().body, Bytes::from("job 1"));
//! ```

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::fmt::Debug;
use core::time::Duration;

use bytes::Bytes;

use super::{Counters, Error, Limits, Wire};

/// A message a [`Router`] received, tagged with the dealer's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routed {
    /// The dealer's identity, to send back to.
    pub identity: Bytes,
    /// The message.
    pub body: Bytes,
}

/// The routing side. It knows at most `hwm` identities, queues at most
/// `hwm` messages per dealer and holds at most `hwm` unread messages.
#[derive(Debug)]
pub struct Router<P> {
    limits: Limits,
    routes: BTreeMap<Bytes, P>,
    identities: BTreeMap<P, Bytes>,
    queued: BTreeMap<P, usize>,
    events: VecDeque<Routed>,
    transmit: VecDeque<(P, Wire)>,
    counters: Counters,
}

impl<P: Copy + Ord + Debug> Router<P> {
    /// A router with these limits.
    pub fn new(limits: Limits) -> Self {
        Router {
            limits,
            routes: BTreeMap::new(),
            identities: BTreeMap::new(),
            queued: BTreeMap::new(),
            events: VecDeque::new(),
            transmit: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    /// Feeds a message from `from`: a greeting or data.
    pub fn handle(&mut self, from: P, msg: Wire) {
        match msg {
            Wire::Hello { identity } => self.greet(from, identity),
            Wire::Data { body } => {
                let Some(identity) = self.identities.get(&from) else {
                    // Data before any greeting: we cannot say who sent it.
                    self.counters.ignored += 1;
                    return;
                };
                if self.events.len() >= self.limits.cap() {
                    self.counters.dropped_inbound += 1;
                } else {
                    self.events.push_back(Routed {
                        identity: identity.clone(),
                        body,
                    });
                }
            }
            _ => self.counters.unexpected += 1,
        }
    }

    fn greet(&mut self, from: P, identity: Bytes) {
        if self.identities.get(&from) == Some(&identity) {
            return; // a refresh
        }
        let known = self.routes.contains_key(&identity);
        if !known && self.routes.len() >= self.limits.cap() {
            self.counters.dropped_inbound += 1;
            return;
        }
        // The peer renamed itself, or the identity moved to a new peer.
        if let Some(old) = self.identities.remove(&from) {
            self.routes.remove(&old);
        }
        if let Some(old_peer) = self.routes.insert(identity.clone(), from) {
            self.identities.remove(&old_peer);
        }
        self.identities.insert(from, identity);
    }

    /// Forgets the dealer connected as `peer` and what was queued for it.
    pub fn disconnect(&mut self, peer: P) {
        if let Some(identity) = self.identities.remove(&peer) {
            self.routes.remove(&identity);
        }
        self.queued.remove(&peer);
        self.transmit.retain(|(p, _)| *p != peer);
    }

    /// Queues `body` for the dealer named `identity`.
    pub fn send(&mut self, identity: Bytes, body: Bytes) -> Result<(), Error> {
        let Some(&peer) = self.routes.get(&identity) else {
            return Err(Error::UnknownIdentity { identity });
        };
        let queued = self.queued.entry(peer).or_default();
        if *queued >= self.limits.cap() {
            return Err(self.limits.refuse(&mut self.counters));
        }
        *queued += 1;
        self.transmit.push_back((peer, Wire::Data { body }));
        Ok(())
    }

    /// The peer the dealer named `identity` is reached through.
    pub fn route(&self, identity: &[u8]) -> Option<P> {
        self.routes.get(identity).copied()
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<(P, Wire)> {
        let (peer, msg) = self.transmit.pop_front()?;
        if let Some(q) = self.queued.get_mut(&peer) {
            *q = q.saturating_sub(1);
        }
        Some((peer, msg))
    }

    /// The next message for the application.
    pub fn poll_event(&mut self) -> Option<Routed> {
        self.events.pop_front()
    }

    /// Drop and anomaly counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }
}

/// A message a [`Dealer`] received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dealt<P> {
    /// The router it came from.
    pub from: P,
    /// The message.
    pub body: Bytes,
}

/// The dealing side. It queues at most `hwm` outbound and `hwm` unread
/// messages.
#[derive(Debug)]
pub struct Dealer<P> {
    limits: Limits,
    identity: Bytes,
    routers: Vec<P>,
    next: usize,
    data: VecDeque<(P, Wire)>,
    greetings: VecDeque<(P, Wire)>,
    events: VecDeque<Dealt<P>>,
    next_refresh: Option<Duration>,
    counters: Counters,
}

impl<P: Copy + Ord + Debug> Dealer<P> {
    /// A dealer named `identity`.
    pub fn new(limits: Limits, identity: Bytes) -> Self {
        Dealer {
            limits,
            identity,
            routers: Vec::new(),
            next: 0,
            data: VecDeque::new(),
            greetings: VecDeque::new(),
            events: VecDeque::new(),
            next_refresh: None,
            counters: Counters::default(),
        }
    }

    /// This dealer's identity.
    pub fn identity(&self) -> &Bytes {
        &self.identity
    }

    /// Starts dealing to `router`: greets it.
    pub fn connect(&mut self, now: Duration, router: P) {
        if !self.routers.contains(&router) {
            self.routers.push(router);
        }
        self.greet(router);
        if self.next_refresh.is_none() {
            self.next_refresh = Some(now.saturating_add(self.limits.refresh));
        }
    }

    /// Stops dealing to `router`; messages queued for it are dropped.
    pub fn disconnect(&mut self, router: P) {
        self.routers.retain(|r| *r != router);
        self.data.retain(|(p, _)| *p != router);
        self.greetings.retain(|(p, _)| *p != router);
    }

    /// Queues `body` for the next router in turn; returns which.
    pub fn send(&mut self, body: Bytes) -> Result<P, Error> {
        if self.routers.is_empty() {
            return Err(Error::NoPeers);
        }
        if self.data.len() >= self.limits.cap() {
            return Err(self.limits.refuse(&mut self.counters));
        }
        let router = self.routers[self.next % self.routers.len()];
        self.next = (self.next + 1) % self.routers.len();
        self.data.push_back((router, Wire::Data { body }));
        Ok(router)
    }

    /// Feeds a message from `from`.
    pub fn handle(&mut self, from: P, msg: Wire) {
        let Wire::Data { body } = msg else {
            self.counters.unexpected += 1;
            return;
        };
        if !self.routers.contains(&from) {
            self.counters.ignored += 1;
        } else if self.events.len() >= self.limits.cap() {
            self.counters.dropped_inbound += 1;
        } else {
            self.events.push_back(Dealt { from, body });
        }
    }

    /// Re-greets every router once per `refresh`.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.next_refresh.is_some_and(|t| t <= now) {
            for router in self.routers.clone() {
                self.greet(router);
            }
            self.next_refresh = Some(now.saturating_add(self.limits.refresh));
        }
    }

    /// When to call [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.next_refresh
    }

    /// The next message to send; greetings go first.
    pub fn poll_transmit(&mut self) -> Option<(P, Wire)> {
        self.greetings.pop_front().or_else(|| self.data.pop_front())
    }

    /// The next message for the application.
    pub fn poll_event(&mut self) -> Option<Dealt<P>> {
        self.events.pop_front()
    }

    /// Drop and anomaly counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// At most one greeting per router is ever queued.
    fn greet(&mut self, router: P) {
        if !self.greetings.iter().any(|(p, _)| *p == router) {
            let identity = self.identity.clone();
            self.greetings.push_back((router, Wire::Hello { identity }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn hello(s: &'static str) -> Wire {
        Wire::Hello { identity: b(s) }
    }

    fn data(s: &'static str) -> Wire {
        Wire::Data { body: b(s) }
    }

    #[test]
    fn identity_moves_with_a_reconnect() {
        let mut r: Router<u8> = Router::new(Limits::default());
        r.handle(1, data("before hello"));
        assert_eq!(r.counters().ignored, 1);
        r.handle(1, hello("w"));
        assert_eq!(r.route(b"w"), Some(1));
        r.handle(2, hello("w")); // same dealer, new connection
        assert_eq!(r.route(b"w"), Some(2));
        r.handle(1, data("old conn"));
        assert_eq!(r.counters().ignored, 2);
        r.send(b("w"), b("x")).unwrap();
        assert_eq!(r.poll_transmit().map(|(p, _)| p), Some(2));
        r.disconnect(2);
        assert_eq!(
            r.send(b("w"), b("x")),
            Err(Error::UnknownIdentity { identity: b("w") })
        );
    }

    #[test]
    fn router_bounds_identities_and_queues() {
        let mut r: Router<u8> = Router::new(Limits::default().with_hwm(1));
        r.handle(1, hello("a"));
        r.handle(2, hello("b")); // over the identity limit
        assert_eq!(r.route(b"b"), None);
        assert_eq!(r.counters().dropped_inbound, 1);
        r.send(b("a"), b("1")).unwrap();
        assert_eq!(r.send(b("a"), b("2")), Err(Error::Full { hwm: 1 }));
        r.handle(1, data("x"));
        r.handle(1, data("y"));
        assert_eq!(r.counters().dropped_inbound, 2);
    }

    #[test]
    fn dealer_round_robins_and_regreets() {
        let limits = Limits::default().with_refresh(Duration::from_millis(10));
        let mut d: Dealer<u8> = Dealer::new(limits, b("me"));
        assert_eq!(d.send(b("x")), Err(Error::NoPeers));
        d.connect(Duration::ZERO, 1);
        d.connect(Duration::ZERO, 2);
        assert_eq!(d.send(b("x")), Ok(1));
        assert_eq!(d.send(b("x")), Ok(2));
        assert_eq!(d.send(b("x")), Ok(1));
        let sent: Vec<(u8, Wire)> = core::iter::from_fn(|| d.poll_transmit()).collect();
        assert_eq!(sent[0], (1, hello("me")));
        assert_eq!(sent[1], (2, hello("me")));
        assert_eq!(sent.len(), 5);
        d.handle_timeout(Duration::from_millis(10));
        assert_eq!(d.poll_transmit(), Some((1, hello("me"))));
        d.handle(3, data("stranger"));
        assert_eq!(d.counters().ignored, 1);
        d.disconnect(1);
        assert_eq!(d.poll_transmit(), Some((2, hello("me"))));
        assert_eq!(d.send(b("x")), Ok(2));
    }
}
