//! Request/reply with correlation ids: many requests in flight, each
//! answered by exactly one reply event or one timeout event.
//!
//! ```
//! use core::time::Duration;
//! use bytes::Bytes;
//! use quorate_transport::patterns::Limits;
//! use quorate_transport::patterns::reqrep::{Replier, ReplierEvent, Requester, RequesterEvent};
//!
//! let now = Duration::ZERO;
//! let mut client: Requester<&str> = Requester::new(Limits::default());
//! let mut server: Replier<&str> = Replier::new(Limits::default());
//!
//! let id = client.request(now, "server", Bytes::from("2+2"), Duration::from_secs(1)).unwrap();
//! let (to, msg) = client.poll_transmit().unwrap();
//! assert_eq!(to, "server");
//! server.handle("client", msg);
//! let Some(ReplierEvent::Request { from, id: rid, body }) = server.poll_event() else { panic!() };
//! assert_eq!(&body[..], b"2+2");
//! server.reply(from, rid, Bytes::from("4")).unwrap();
//! let (_, reply) = server.poll_transmit().unwrap();
//! client.handle("server", reply);
//! assert_eq!(
//!     client.poll_event(),
//!     Some(RequesterEvent::Reply { id, from: "server", body: Bytes::from("4") })
//! );
//! ```

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use core::fmt::Debug;
use core::time::Duration;

use bytes::Bytes;

use super::{Counters, Error, Limits, RequestId, Wire};

/// What a [`Requester`] tells the application. Each request id appears in
/// exactly one event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequesterEvent<P> {
    /// The reply to request `id`.
    Reply {
        /// Which request.
        id: RequestId,
        /// The peer that answered (the one asked).
        from: P,
        /// The answer.
        body: Bytes,
    },
    /// No reply came before the request's deadline; a late one is ignored.
    TimedOut {
        /// Which request.
        id: RequestId,
    },
}

#[derive(Clone, Copy, Debug)]
struct Pending<P> {
    peer: P,
    deadline: Duration,
}

/// The asking side of request/reply.
#[derive(Debug)]
pub struct Requester<P> {
    limits: Limits,
    next_id: u64,
    pending: BTreeMap<RequestId, Pending<P>>,
    deadlines: BTreeSet<(Duration, RequestId)>,
    transmit: VecDeque<(P, Wire)>,
    events: VecDeque<RequesterEvent<P>>,
    counters: Counters,
}

impl<P: Copy + Ord + Debug> Requester<P> {
    /// A requester allowing at most `limits.hwm` requests that are in flight
    /// or whose outcome has not been polled yet.
    pub fn new(limits: Limits) -> Self {
        Requester {
            limits,
            next_id: 0,
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    /// Sends `body` to `to`; its outcome comes as a [`RequesterEvent`] with
    /// the returned id, a reply or a timeout at `now + timeout`.
    pub fn request(
        &mut self,
        now: Duration,
        to: P,
        body: Bytes,
        timeout: Duration,
    ) -> Result<RequestId, Error> {
        // Outcomes not yet polled and requests not yet transmitted count too,
        // so an application that stops polling cannot grow either queue.
        let cap = self.limits.cap();
        if self.pending.len() + self.events.len() >= cap || self.transmit.len() >= cap {
            return Err(self.limits.refuse(&mut self.counters));
        }
        let id = RequestId(self.next_id);
        self.next_id += 1;
        let deadline = now.saturating_add(timeout);
        self.pending.insert(id, Pending { peer: to, deadline });
        self.deadlines.insert((deadline, id));
        self.transmit.push_back((to, Wire::Request { id, body }));
        Ok(id)
    }

    /// Gives up on request `id` without an event; returns whether it was
    /// pending.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        match self.pending.remove(&id) {
            Some(p) => {
                self.deadlines.remove(&(p.deadline, id));
                true
            }
            None => false,
        }
    }

    /// Feeds a message from `from`. Only a reply from the peer that was
    /// asked, to a request still pending, becomes an event.
    pub fn handle(&mut self, from: P, msg: Wire) {
        let Wire::Reply { id, body } = msg else {
            self.counters.unexpected += 1;
            return;
        };
        match self.pending.get(&id) {
            Some(p) if p.peer == from => {
                let deadline = p.deadline;
                self.pending.remove(&id);
                self.deadlines.remove(&(deadline, id));
                self.events
                    .push_back(RequesterEvent::Reply { id, from, body });
            }
            _ => self.counters.ignored += 1,
        }
    }

    /// Times out every request whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            self.pending.remove(&id);
            self.events.push_back(RequesterEvent::TimedOut { id });
        }
    }

    /// The earliest deadline, if any request is pending.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<(P, Wire)> {
        self.transmit.pop_front()
    }

    /// The next outcome for the application.
    pub fn poll_event(&mut self) -> Option<RequesterEvent<P>> {
        self.events.pop_front()
    }

    /// Requests awaiting a reply or timeout.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Drop and anomaly counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }
}

/// What a [`Replier`] tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplierEvent<P> {
    /// A request to answer with [`Replier::reply`].
    Request {
        /// Who asked.
        from: P,
        /// The correlation id to reply with.
        id: RequestId,
        /// The question.
        body: Bytes,
    },
}

/// The answering side of request/reply.
///
/// At most `limits.hwm` requests are held (queued for the application or
/// awaiting its reply, plus replies not yet transmitted); more are dropped
/// and counted, and their requesters time out. A repeated request still
/// awaiting its reply is ignored, so a duplicating network does not make
/// the application answer twice.
#[derive(Debug)]
pub struct Replier<P> {
    limits: Limits,
    pending: BTreeSet<(P, RequestId)>,
    events: VecDeque<ReplierEvent<P>>,
    transmit: VecDeque<(P, Wire)>,
    counters: Counters,
}

impl<P: Copy + Ord + Debug> Replier<P> {
    /// A replier with these limits.
    pub fn new(limits: Limits) -> Self {
        Replier {
            limits,
            pending: BTreeSet::new(),
            events: VecDeque::new(),
            transmit: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    /// Feeds a message from `from`.
    pub fn handle(&mut self, from: P, msg: Wire) {
        let Wire::Request { id, body } = msg else {
            self.counters.unexpected += 1;
            return;
        };
        if self.pending.contains(&(from, id)) {
            self.counters.ignored += 1;
        } else if self.pending.len() + self.transmit.len() >= self.limits.cap() {
            self.counters.dropped_inbound += 1;
        } else {
            self.pending.insert((from, id));
            self.events
                .push_back(ReplierEvent::Request { from, id, body });
        }
    }

    /// Answers request `id` from `to`.
    pub fn reply(&mut self, to: P, id: RequestId, body: Bytes) -> Result<(), Error> {
        if !self.pending.remove(&(to, id)) {
            return Err(Error::UnknownRequest { id });
        }
        self.transmit.push_back((to, Wire::Reply { id, body }));
        Ok(())
    }

    /// Gives up on answering request `id` from `from`, freeing its slot
    /// (the requester will time out); returns whether it was pending.
    pub fn abandon(&mut self, from: P, id: RequestId) -> bool {
        self.pending.remove(&(from, id))
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<(P, Wire)> {
        self.transmit.pop_front()
    }

    /// The next request for the application.
    pub fn poll_event(&mut self) -> Option<ReplierEvent<P>> {
        self.events.pop_front()
    }

    /// Drop and anomaly counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn hwm_blocks_then_frees_after_polling() {
        let mut r: Requester<u8> = Requester::new(Limits::default().with_hwm(2));
        r.request(ms(0), 1, Bytes::new(), ms(10)).unwrap();
        r.request(ms(0), 1, Bytes::new(), ms(10)).unwrap();
        assert_eq!(
            r.request(ms(0), 1, Bytes::new(), ms(10)),
            Err(Error::Full { hwm: 2 })
        );
        r.handle_timeout(ms(10));
        // Timed out but not yet polled: still counts against the mark.
        assert!(r.request(ms(10), 1, Bytes::new(), ms(10)).is_err());
        assert_eq!(
            r.poll_event(),
            Some(RequesterEvent::TimedOut { id: RequestId(0) })
        );
        // Still refused: both requests are still waiting to be transmitted.
        assert!(r.request(ms(10), 1, Bytes::new(), ms(10)).is_err());
        assert!(r.poll_transmit().is_some());
        assert!(r.request(ms(10), 1, Bytes::new(), ms(10)).is_ok());
    }

    #[test]
    fn drop_policy_counts() {
        let limits = Limits::default()
            .with_hwm(1)
            .with_policy(super::super::HwmPolicy::Drop);
        let mut r: Requester<u8> = Requester::new(limits);
        r.request(ms(0), 1, Bytes::new(), ms(10)).unwrap();
        assert_eq!(
            r.request(ms(0), 1, Bytes::new(), ms(10)),
            Err(Error::Dropped { hwm: 1 })
        );
        assert_eq!(r.counters().dropped_outbound, 1);
    }

    #[test]
    fn replies_from_the_wrong_peer_or_late_are_ignored() {
        let mut r: Requester<u8> = Requester::new(Limits::default());
        let id = r.request(ms(0), 1, Bytes::new(), ms(10)).unwrap();
        let reply = Wire::Reply {
            id,
            body: Bytes::from_static(b"x"),
        };
        r.handle(2, reply.clone());
        assert_eq!(r.poll_event(), None);
        r.handle(1, reply.clone());
        assert!(matches!(r.poll_event(), Some(RequesterEvent::Reply { .. })));
        r.handle(1, reply); // duplicate
        assert_eq!(r.poll_event(), None);
        assert_eq!(r.counters().ignored, 2);
        assert_eq!(r.poll_timeout(), None);
        r.handle(1, Wire::Data { body: Bytes::new() });
        assert_eq!(r.counters().unexpected, 1);
    }

    #[test]
    fn cancel_suppresses_the_outcome() {
        let mut r: Requester<u8> = Requester::new(Limits::default());
        let id = r.request(ms(0), 1, Bytes::new(), ms(10)).unwrap();
        assert!(r.cancel(id));
        assert!(!r.cancel(id));
        r.handle_timeout(ms(100));
        assert_eq!(r.poll_event(), None);
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn replier_dedups_and_bounds() {
        let mut s: Replier<u8> = Replier::new(Limits::default().with_hwm(2));
        let req = |id| Wire::Request {
            id: RequestId(id),
            body: Bytes::new(),
        };
        s.handle(1, req(0));
        s.handle(1, req(0)); // duplicate while pending
        s.handle(2, req(0)); // same id, other peer: distinct
        s.handle(3, req(0)); // over the mark
        assert_eq!(s.counters().ignored, 1);
        assert_eq!(s.counters().dropped_inbound, 1);
        assert_eq!(
            s.reply(9, RequestId(0), Bytes::new()),
            Err(Error::UnknownRequest { id: RequestId(0) })
        );
        s.reply(1, RequestId(0), Bytes::new()).unwrap();
        assert_eq!(
            s.reply(1, RequestId(0), Bytes::new()),
            Err(Error::UnknownRequest { id: RequestId(0) })
        );
        // The untransmitted reply still holds its slot.
        s.handle(3, req(1));
        assert_eq!(s.counters().dropped_inbound, 2);
        assert!(s.poll_transmit().is_some());
        s.handle(3, req(1));
        assert_eq!(s.poll_event().map(|_| ()), Some(()));
        assert!(s.abandon(2, RequestId(0)));
        assert!(!s.abandon(2, RequestId(0)));
        assert_eq!(
            s.reply(2, RequestId(0), Bytes::new()),
            Err(Error::UnknownRequest { id: RequestId(0) })
        );
    }
}
