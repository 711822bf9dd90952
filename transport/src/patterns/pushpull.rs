//! Push/pull: one-way messages from pushers to pullers with credit-based
//! back-pressure.
//!
//! A [`Puller`] grants each pusher it [connects](Puller::connect) to an
//! absolute credit `grant`: the pusher may send pushes numbered below it.
//! The grant is `highest sequence received + 1 + window - queued`, so the
//! puller never holds more than `window` unread messages from one pusher,
//! whatever the network does; it is re-sent as the application reads and
//! every `refresh`, so lost credit heals. A push that arrives out of order
//! (below the highest seen) or twice is ignored: push/pull is at-most-once.
//!
//! Lost pushes would otherwise eat credit forever. Each credit also says
//! how far the puller has received (`high`); a pusher that is out of credit,
//! has pushes beyond `high`, and has seen `high` stand still for two
//! `refresh` intervals sends [`Wire::Skip`]: "all below my next sequence
//! number that you lack is lost". The puller moves past the gap and grants
//! afresh. On an ordered transport every push sent before the skip arrives
//! before it, so nothing that was not lost is skipped.
//!
//! A [`Pusher`] queues up to `hwm` messages and hands them round-robin to
//! pullers that have credit.
//!
//! ```
//! use core::time::Duration;
//! use bytes::Bytes;
//! use quorate_transport::patterns::Limits;
//! use quorate_transport::patterns::pushpull::{Puller, Pusher};
//!
//! let now = Duration::ZERO;
//! let mut push: Pusher<u8> = Pusher::new(Limits::default());
//! let mut pull: Puller<u8> = Puller::new(Limits::default(), 2);
//! pull.connect(now, 1);                        // pusher is node 1
//! let (_, credit) = pull.poll_transmit().unwrap();
//! push.handle(now, 2, credit);                 // puller is node 2
//! for i in 0..3u8 { push.push(Bytes::from(vec![i])).unwrap(); }
//! // Only two fit the window.
//! let mut sent = 0;
//! while let Some((to, m)) = push.poll_transmit() { pull.handle(1, m); sent += 1; }
//! assert_eq!(sent, 2);
//! assert_eq!(pull.poll_event().unwrap().body, Bytes::from(vec![0]));
//! ```

use alloc::collections::{BTreeMap, VecDeque};
use core::fmt::Debug;
use core::time::Duration;

use bytes::Bytes;

use super::{Counters, Error, Limits, Wire};

/// The sending side of push/pull.
#[derive(Debug)]
pub struct Pusher<P> {
    limits: Limits,
    queue: VecDeque<Bytes>,
    pullers: BTreeMap<P, Credit>,
    /// Skip notices; at most one per puller per two refreshes.
    control: VecDeque<(P, Wire)>,
    /// Where the round-robin resumes.
    cursor: Option<P>,
    counters: Counters,
}

#[derive(Clone, Copy, Debug, Default)]
struct Credit {
    next_seq: u64,
    grant: u64,
    /// How far the puller said it has received.
    high: u64,
    /// When `high` last moved (or a skip was sent).
    high_since: Duration,
}

impl Credit {
    fn available(&self) -> u64 {
        self.grant.saturating_sub(self.next_seq)
    }
}

impl<P: Copy + Ord + Debug> Pusher<P> {
    /// A pusher queueing at most `limits.hwm` messages.
    pub fn new(limits: Limits) -> Self {
        Pusher {
            limits,
            queue: VecDeque::new(),
            pullers: BTreeMap::new(),
            control: VecDeque::new(),
            cursor: None,
            counters: Counters::default(),
        }
    }

    /// Queues `body` for the next puller with credit.
    pub fn push(&mut self, body: Bytes) -> Result<(), Error> {
        if self.queue.len() >= self.limits.cap() {
            return Err(self.limits.refuse(&mut self.counters));
        }
        self.queue.push_back(body);
        Ok(())
    }

    /// Feeds a message from `from`: credit adds or updates that puller.
    pub fn handle(&mut self, now: Duration, from: P, msg: Wire) {
        let Wire::Credit { high, grant } = msg else {
            self.counters.unexpected += 1;
            return;
        };
        let credit = self.pullers.entry(from).or_insert(Credit {
            high_since: now,
            ..Credit::default()
        });
        // Absolute values: a stale credit is smaller and changes nothing.
        credit.grant = credit.grant.max(grant);
        if high > credit.high {
            credit.high = high;
            credit.high_since = now;
        }
        let stalled = credit.available() == 0
            && credit.next_seq > credit.high
            && now
                >= credit
                    .high_since
                    .saturating_add(self.limits.refresh.saturating_mul(2));
        let already = self.control.iter().any(|(p, _)| *p == from);
        if stalled && !already {
            // The pushes beyond `high` are lost: say so, once per two refreshes.
            credit.high_since = now;
            let to = credit.next_seq;
            self.control.push_back((from, Wire::Skip { to }));
        }
    }

    /// Forgets a puller (e.g. its connection closed). Its credit is gone;
    /// a new connection starts over from its next credit.
    pub fn disconnect(&mut self, peer: P) {
        self.pullers.remove(&peer);
        self.control.retain(|(p, _)| *p != peer);
    }

    /// The next message to send: a skip notice, or a push if a message is
    /// queued and a puller has credit.
    pub fn poll_transmit(&mut self) -> Option<(P, Wire)> {
        if let Some(control) = self.control.pop_front() {
            return Some(control);
        }
        if self.queue.is_empty() {
            return None;
        }
        let peer = self.next_with_credit()?;
        let body = self.queue.pop_front()?;
        let credit = self.pullers.get_mut(&peer)?;
        let seq = credit.next_seq;
        credit.next_seq += 1;
        self.cursor = Some(peer);
        Some((peer, Wire::Push { seq, body }))
    }

    /// Round-robin: the first puller after the cursor with credit, wrapping.
    fn next_with_credit(&self) -> Option<P> {
        let has = |(_, c): &(&P, &Credit)| c.available() > 0;
        let after = self.cursor.and_then(|cur| {
            self.pullers
                .range((core::ops::Bound::Excluded(cur), core::ops::Bound::Unbounded))
                .find(has)
        });
        after
            .or_else(|| self.pullers.iter().find(has))
            .map(|(p, _)| *p)
    }

    /// Messages waiting for credit.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Drop and anomaly counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }
}

/// A message a [`Puller`] received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pulled<P> {
    /// The pusher.
    pub from: P,
    /// The message.
    pub body: Bytes,
}

#[derive(Clone, Copy, Debug, Default)]
struct Source {
    /// One past the highest sequence number received.
    high: u64,
    /// Received but not yet read by the application.
    queued: u64,
    /// The grant last sent.
    sent_grant: Option<u64>,
}

/// The receiving side of push/pull.
#[derive(Debug)]
pub struct Puller<P> {
    limits: Limits,
    window: u64,
    sources: BTreeMap<P, Source>,
    events: VecDeque<Pulled<P>>,
    transmit: VecDeque<(P, Wire)>,
    next_refresh: Option<Duration>,
    counters: Counters,
}

impl<P: Copy + Ord + Debug> Puller<P> {
    /// A puller that lets each pusher have at most `window` (at least 1)
    /// unread messages.
    pub fn new(limits: Limits, window: u64) -> Self {
        Puller {
            limits,
            window: window.max(1),
            sources: BTreeMap::new(),
            events: VecDeque::new(),
            transmit: VecDeque::new(),
            next_refresh: None,
            counters: Counters::default(),
        }
    }

    /// Starts pulling from `pusher`: sends it credit.
    pub fn connect(&mut self, now: Duration, pusher: P) {
        self.sources.entry(pusher).or_default();
        self.send_grant(pusher, true);
        self.arm_refresh(now);
    }

    /// Stops pulling from `pusher`; its unread messages stay readable.
    pub fn disconnect(&mut self, pusher: P) {
        self.sources.remove(&pusher);
    }

    /// Feeds a message from `from`.
    pub fn handle(&mut self, from: P, msg: Wire) {
        let (seq, body) = match msg {
            Wire::Push { seq, body } => (seq, body),
            Wire::Skip { to } => {
                if let Some(src) = self.sources.get_mut(&from) {
                    src.high = src.high.max(to);
                    self.send_grant(from, true);
                } else {
                    self.counters.ignored += 1;
                }
                return;
            }
            _ => {
                self.counters.unexpected += 1;
                return;
            }
        };
        let window = self.window;
        let Some(src) = self.sources.get_mut(&from) else {
            self.counters.ignored += 1;
            return;
        };
        if seq < src.high {
            // Duplicate or overtaken: at-most-once, in order.
            self.counters.ignored += 1;
            return;
        }
        if seq >= grant(src, window) {
            // Beyond any credit we gave: a misbehaving pusher.
            self.counters.dropped_inbound += 1;
            return;
        }
        src.high = seq + 1;
        src.queued += 1;
        self.events.push_back(Pulled { from, body });
    }

    /// Re-sends every pusher its current grant once per `refresh`.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.next_refresh.is_some_and(|t| t <= now) {
            let peers: alloc::vec::Vec<P> = self.sources.keys().copied().collect();
            for p in peers {
                self.send_grant(p, true);
            }
            self.next_refresh = None;
            self.arm_refresh(now);
        }
    }

    /// When to call [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.next_refresh
    }

    /// The next message to send (credit).
    pub fn poll_transmit(&mut self) -> Option<(P, Wire)> {
        self.transmit.pop_front()
    }

    /// The next message for the application. Reading it frees credit.
    pub fn poll_event(&mut self) -> Option<Pulled<P>> {
        let pulled = self.events.pop_front()?;
        if let Some(src) = self.sources.get_mut(&pulled.from) {
            src.queued = src.queued.saturating_sub(1);
            self.send_grant(pulled.from, false);
        }
        Some(pulled)
    }

    /// Unread messages.
    pub fn queued(&self) -> usize {
        self.events.len()
    }

    /// Drop and anomaly counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Queues the current grant for `peer`: always if `force`, otherwise once
    /// it has grown by half a window, so credit costs one message per
    /// half-window read rather than one per message.
    fn send_grant(&mut self, peer: P, force: bool) {
        let window = self.window;
        let room = self.transmit.len() < self.sources.len().max(1) * 2;
        let Some(src) = self.sources.get_mut(&peer) else {
            return;
        };
        let g = grant(src, window);
        let due = match src.sent_grant {
            None => true,
            Some(sent) => force || g.saturating_sub(sent) >= window.div_ceil(2),
        };
        // Never queue more than one credit per pusher per refresh round.
        if due && room {
            src.sent_grant = Some(g);
            let high = src.high;
            self.transmit
                .push_back((peer, Wire::Credit { high, grant: g }));
        }
    }

    fn arm_refresh(&mut self, now: Duration) {
        if self.next_refresh.is_none() {
            self.next_refresh = Some(now.saturating_add(self.limits.refresh));
        }
    }
}

fn grant(src: &Source, window: u64) -> u64 {
    // Saturating: `high` comes from the peer (a skip can name any number).
    src.high.saturating_add(window.saturating_sub(src.queued))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::ZERO;

    fn credit(g: u64) -> Wire {
        Wire::Credit { high: 0, grant: g }
    }

    #[test]
    fn no_credit_no_transmit_and_hwm_applies() {
        let mut p: Pusher<u8> = Pusher::new(Limits::default().with_hwm(2));
        p.push(Bytes::new()).unwrap();
        p.push(Bytes::new()).unwrap();
        assert_eq!(p.push(Bytes::new()), Err(Error::Full { hwm: 2 }));
        assert_eq!(p.poll_transmit(), None);
        p.handle(T, 7, credit(1));
        assert!(matches!(
            p.poll_transmit(),
            Some((7, Wire::Push { seq: 0, .. }))
        ));
        assert_eq!(p.poll_transmit(), None);
        p.handle(T, 7, credit(0)); // stale: ignored
        p.handle(T, 7, credit(2));
        assert!(matches!(
            p.poll_transmit(),
            Some((7, Wire::Push { seq: 1, .. }))
        ));
        assert_eq!(p.queued(), 0);
    }

    #[test]
    fn round_robin_over_pullers_with_credit() {
        let mut p: Pusher<u8> = Pusher::new(Limits::default());
        for _ in 0..6 {
            p.push(Bytes::new()).unwrap();
        }
        p.handle(T, 1, credit(10));
        p.handle(T, 2, credit(10));
        p.handle(T, 3, credit(1));
        let order: alloc::vec::Vec<u8> =
            core::iter::from_fn(|| p.poll_transmit().map(|(to, _)| to)).collect();
        assert_eq!(order, [1, 2, 3, 1, 2, 1]);
    }

    #[test]
    fn puller_ignores_duplicates_and_unknown_pushers_and_overruns() {
        let mut q: Puller<u8> = Puller::new(Limits::default(), 2);
        q.connect(T, 1);
        assert_eq!(q.poll_transmit(), Some((1, credit(2))));
        let push = |seq| Wire::Push {
            seq,
            body: Bytes::new(),
        };
        q.handle(1, push(0));
        q.handle(1, push(0));
        q.handle(9, push(0));
        q.handle(1, push(5)); // beyond grant 2
        assert_eq!(q.counters().ignored, 2);
        assert_eq!(q.counters().dropped_inbound, 1);
        q.handle(1, push(1));
        assert_eq!(q.queued(), 2);
        q.poll_event().unwrap();
        // grant = high 2 + window 2 - queued 1 = 3; grew by 1 >= half window.
        assert_eq!(
            q.poll_transmit(),
            Some((1, Wire::Credit { high: 2, grant: 3 }))
        );
        // A skip moves past the gap and re-grants at once.
        q.handle(1, Wire::Skip { to: 10 });
        assert_eq!(
            q.poll_transmit(),
            Some((
                1,
                Wire::Credit {
                    high: 10,
                    grant: 11
                }
            ))
        );
        q.handle(1, push(9));
        assert_eq!(q.counters().ignored, 3);
        // A hostile skip to the end of the sequence space neither panics
        // nor lets anything through.
        q.handle(1, Wire::Skip { to: u64::MAX });
        q.handle(1, push(u64::MAX));
        assert_eq!(q.counters().dropped_inbound, 2);
    }

    #[test]
    fn refresh_resends_grants() {
        let limits = Limits::default().with_refresh(Duration::from_millis(5));
        let mut q: Puller<u8> = Puller::new(limits, 4);
        q.connect(T, 1);
        q.poll_transmit();
        assert_eq!(q.poll_timeout(), Some(Duration::from_millis(5)));
        q.handle_timeout(Duration::from_millis(4));
        assert_eq!(q.poll_transmit(), None);
        q.handle_timeout(Duration::from_millis(5));
        assert_eq!(q.poll_transmit(), Some((1, credit(4))));
        assert_eq!(q.poll_timeout(), Some(Duration::from_millis(10)));
    }

    #[test]
    fn pusher_skips_lost_pushes_after_two_silent_refreshes() {
        let limits = Limits::default().with_refresh(Duration::from_millis(5));
        let mut p: Pusher<u8> = Pusher::new(limits);
        p.push(Bytes::new()).unwrap();
        p.push(Bytes::new()).unwrap();
        let at = Duration::from_millis;
        p.handle(at(0), 1, Wire::Credit { high: 0, grant: 1 });
        assert!(matches!(
            p.poll_transmit(),
            Some((1, Wire::Push { seq: 0, .. }))
        ));
        // seq 0 is lost: refreshes keep saying high 0.
        p.handle(at(5), 1, Wire::Credit { high: 0, grant: 1 });
        assert_eq!(p.poll_transmit(), None);
        p.handle(at(10), 1, Wire::Credit { high: 0, grant: 1 });
        assert_eq!(p.poll_transmit(), Some((1, Wire::Skip { to: 1 })));
        assert_eq!(p.poll_transmit(), None);
        p.handle(at(11), 1, Wire::Credit { high: 1, grant: 2 });
        assert!(matches!(
            p.poll_transmit(),
            Some((1, Wire::Push { seq: 1, .. }))
        ));
    }
}
