//! A deterministic, fault-injecting, in-memory network for simulation tests.
//!
//! [`Network`] carries messages of any type `M` between nodes named by any
//! id type `N`. Nothing is encoded: the Raft simulator passes its own message
//! enum and `NodeId` straight through. All randomness comes from one
//! [`fastrand::Rng`] seeded at construction and all time from the `now`
//! the driver passes in, so **the same seed and the same calls give the same
//! trace**, run after run.
//!
//! Faults, all changeable at any time:
//! - per-link [`LinkConfig`]: latency, jitter (and so reordering), loss,
//!   duplication, FIFO or not;
//! - partitions: one-way ([`Network::cut`]), two-way ([`Network::partition`]),
//!   node isolation ([`Network::isolate`]) and group splits
//!   ([`Network::split`]);
//! - node crash and restart ([`Network::crash`], [`Network::restart`]):
//!   while a node is down, messages to and from it are dropped, and messages
//!   in flight to it when it crashes are lost;
//! - message filters ([`Network::add_filter`]): a closure over
//!   `(from, to, &msg)` that drops what it matches.
//!
//! The driver owns the loop. It sends with [`Network::send`], asks
//! [`Network::next_delivery_time`] when the next message is due, and pulls
//! due messages in time order with [`Network::poll_delivery`], interleaving
//! them with its own timers (node ticks) as it likes.
//! The network holds whatever the driver sends until it is due: it is a
//! test harness, and bounding traffic is the driver's (and the protocol's)
//! job.
//!
//! ```
//! use core::time::Duration;
//! use quorate_transport::sim::{LinkConfig, Network, SimTime};
//!
//! #[derive(Clone, Debug, PartialEq)]
//! enum Msg { Ping(u32), Pong(u32) }
//!
//! let mut net: Network<u8, Msg> = Network::new(42);
//! net.set_default_link(LinkConfig::new(Duration::from_millis(10)));
//! // "Drop every Pong from 2 to 1."
//! net.add_filter(|from, to, m| from == 2 && to == 1 && matches!(m, Msg::Pong(_)));
//!
//! net.send(SimTime::ZERO, 1, 2, Msg::Ping(7));
//! assert_eq!(net.next_delivery_time(), Some(SimTime::from_millis(10)));
//! assert!(net.poll_delivery(SimTime::from_millis(9)).is_none()); // not due yet
//!
//! let now = SimTime::from_millis(10);
//! let d = net.poll_delivery(now).unwrap();
//! assert_eq!((d.from, d.to, d.msg.clone()), (1, 2, Msg::Ping(7)));
//! net.send(now, 2, 1, Msg::Pong(7)); // filtered
//! assert_eq!(net.next_delivery_time(), None);
//! assert_eq!(net.stats().filtered, 1);
//! ```

mod link;
mod time;
mod trace;

pub use link::LinkConfig;
pub use time::SimTime;
pub use trace::{DropReason, MessageId, Stats, TraceEvent, TraceKind};

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use time::duration_nanos;

/// Identifies a filter added with [`Network::add_filter`], to remove it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FilterId(u64);

/// A message the network hands to the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery<N, M> {
    /// The message, as unique to this copy (duplicates share it).
    pub id: MessageId,
    /// When the message was due; never later than the `now` it was polled at.
    pub at: SimTime,
    /// When it was sent.
    pub sent_at: SimTime,
    /// The sender.
    pub from: N,
    /// The addressee.
    pub to: N,
    /// The message itself.
    pub msg: M,
}

/// What [`Network::send`] did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SendOutcome {
    /// Scheduled for delivery at `at`; if `duplicate_at` is set, a second
    /// copy is scheduled then.
    Scheduled {
        /// The message's id.
        id: MessageId,
        /// When the first copy is due.
        at: SimTime,
        /// When the duplicate copy is due, if the link duplicated it.
        duplicate_at: Option<SimTime>,
    },
    /// Dropped at once.
    Dropped {
        /// The message's id (it still appears in the trace).
        id: MessageId,
        /// Why.
        reason: DropReason,
    },
}

type Filter<N, M> = Box<dyn FnMut(N, N, &M) -> bool>;

/// A message copy on the wire.
struct InFlight<N, M> {
    id: MessageId,
    sent_at: SimTime,
    from: N,
    to: N,
    msg: M,
}

/// The simulated network. See the [module docs](self) for the model.
///
/// `N` is the node id (any small copyable ordered type, such as a `NodeId`
/// newtype); `M` is the message type, cloned only to duplicate messages.
pub struct Network<N, M> {
    rng: fastrand::Rng,
    seed: u64,
    /// The latest `now` seen; the clock never runs backwards.
    now: SimTime,
    default_link: LinkConfig,
    links: BTreeMap<(N, N), LinkConfig>,
    /// Directed links that are cut.
    cut: BTreeSet<(N, N)>,
    /// Nodes cut off from everyone else in both directions.
    isolated: BTreeSet<N>,
    crashed: BTreeSet<N>,
    filters: Vec<(FilterId, Filter<N, M>)>,
    next_filter: u64,
    /// Keyed by (due time, scheduling sequence): ties go in send order.
    in_flight: BTreeMap<(SimTime, u64), InFlight<N, M>>,
    next_seq: u64,
    next_id: u64,
    /// Per ordered link, the latest delivery time scheduled on it.
    last_due: BTreeMap<(N, N), SimTime>,
    stats: Stats,
    trace: Option<Trace<N>>,
}

/// The last `capacity` trace events.
struct Trace<N> {
    capacity: usize,
    events: VecDeque<TraceEvent<N>>,
}

impl<N, M> fmt::Debug for Network<N, M>
where
    N: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network")
            .field("seed", &self.seed)
            .field("now", &self.now)
            .field("default_link", &self.default_link)
            .field("links", &self.links)
            .field("cut", &self.cut)
            .field("isolated", &self.isolated)
            .field("crashed", &self.crashed)
            .field("filters", &self.filters.len())
            .field("in_flight", &self.in_flight.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<N, M> Network<N, M>
where
    N: Copy + Ord + fmt::Debug,
    M: Clone,
{
    /// An empty network whose every random choice derives from `seed`, with
    /// [`LinkConfig::default`] on every link.
    pub fn new(seed: u64) -> Self {
        Network {
            rng: fastrand::Rng::with_seed(seed),
            seed,
            now: SimTime::ZERO,
            default_link: LinkConfig::default(),
            links: BTreeMap::new(),
            cut: BTreeSet::new(),
            isolated: BTreeSet::new(),
            crashed: BTreeSet::new(),
            filters: Vec::new(),
            next_filter: 0,
            in_flight: BTreeMap::new(),
            next_seq: 0,
            next_id: 0,
            last_due: BTreeMap::new(),
            stats: Stats::default(),
            trace: None,
        }
    }

    /// The seed this network was built with (print it when a test fails).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The latest `now` passed to any call.
    pub fn now(&self) -> SimTime {
        self.now
    }

    // ----- links -----

    /// Sets the behaviour of every link without its own [`set_link`](Self::set_link).
    pub fn set_default_link(&mut self, config: LinkConfig) {
        self.default_link = config;
    }

    /// Sets the behaviour of the directed link `from -> to`.
    pub fn set_link(&mut self, from: N, to: N, config: LinkConfig) {
        self.links.insert((from, to), config);
    }

    /// Sets the behaviour of both directions between `a` and `b`.
    pub fn set_link_both(&mut self, a: N, b: N, config: LinkConfig) {
        self.set_link(a, b, config);
        self.set_link(b, a, config);
    }

    /// Returns `from -> to` to the default behaviour.
    pub fn reset_link(&mut self, from: N, to: N) {
        self.links.remove(&(from, to));
    }

    /// The behaviour of the directed link `from -> to`.
    pub fn link(&self, from: N, to: N) -> LinkConfig {
        self.links
            .get(&(from, to))
            .copied()
            .unwrap_or(self.default_link)
    }

    // ----- partitions -----

    /// Cuts the directed link `from -> to` (a one-way partition): messages
    /// sent over it, or in flight on it when due, are dropped.
    pub fn cut(&mut self, from: N, to: N) {
        self.cut.insert((from, to));
    }

    /// Restores the directed link `from -> to` cut by [`cut`](Self::cut).
    pub fn mend(&mut self, from: N, to: N) {
        self.cut.remove(&(from, to));
    }

    /// Cuts both directions between `a` and `b`.
    pub fn partition(&mut self, a: N, b: N) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// Restores both directions between `a` and `b`.
    pub fn heal(&mut self, a: N, b: N) {
        self.mend(a, b);
        self.mend(b, a);
    }

    /// Cuts `node` off from every other node, both ways, until
    /// [`rejoin`](Self::rejoin) or [`heal_all`](Self::heal_all).
    pub fn isolate(&mut self, node: N) {
        self.isolated.insert(node);
    }

    /// Ends [`isolate`](Self::isolate) for `node` (links cut one by one stay cut).
    pub fn rejoin(&mut self, node: N) {
        self.isolated.remove(&node);
    }

    /// Splits the nodes into `groups` that cannot reach each other (both
    /// ways); nodes within a group still can. Adds to existing cuts.
    pub fn split(&mut self, groups: &[&[N]]) {
        for (i, group) in groups.iter().enumerate() {
            for other in groups.iter().skip(i + 1) {
                for &a in group.iter() {
                    for &b in other.iter() {
                        self.partition(a, b);
                    }
                }
            }
        }
    }

    /// Removes every cut and isolation.
    pub fn heal_all(&mut self) {
        self.cut.clear();
        self.isolated.clear();
    }

    /// Whether `from -> to` is currently cut. A node always reaches itself.
    pub fn is_cut(&self, from: N, to: N) -> bool {
        from != to
            && (self.cut.contains(&(from, to))
                || self.isolated.contains(&from)
                || self.isolated.contains(&to))
    }

    // ----- crashes -----

    /// Takes `node` down: messages in flight to it are lost now, and until
    /// [`restart`](Self::restart) messages to and from it are dropped.
    /// Messages it sent before crashing stay on the wire.
    pub fn crash(&mut self, node: N) {
        if !self.crashed.insert(node) {
            return;
        }
        let doomed: Vec<(SimTime, u64)> = self
            .in_flight
            .iter()
            .filter(|(_, m)| m.to == node)
            .map(|(k, _)| *k)
            .collect();
        for key in doomed {
            if let Some(m) = self.in_flight.remove(&key) {
                let (now, id, from, to) = (self.now, m.id, m.from, m.to);
                self.record_drop(now, id, from, to, DropReason::Crashed);
            }
        }
    }

    /// Brings `node` back up. It receives only messages sent from now on.
    pub fn restart(&mut self, node: N) {
        self.crashed.remove(&node);
    }

    /// Whether `node` is down.
    pub fn is_crashed(&self, node: N) -> bool {
        self.crashed.contains(&node)
    }

    // ----- filters -----

    /// Adds a filter: every message for which `drop(from, to, &msg)` returns
    /// `true` is dropped when sent. Filters run in the order added.
    ///
    /// ```
    /// # use quorate_transport::sim::{Network, SimTime};
    /// # #[derive(Clone)] enum Msg { AppendEntries, Vote }
    /// let mut net: Network<u64, Msg> = Network::new(1);
    /// // Drop all AppendEntries from 2 to 3.
    /// let f = net.add_filter(|from, to, m| (from, to) == (2, 3) && matches!(m, Msg::AppendEntries));
    /// net.send(SimTime::ZERO, 2, 3, Msg::AppendEntries);
    /// net.send(SimTime::ZERO, 2, 3, Msg::Vote);
    /// assert_eq!(net.in_flight(), 1);
    /// net.remove_filter(f);
    /// ```
    pub fn add_filter<F>(&mut self, drop: F) -> FilterId
    where
        F: FnMut(N, N, &M) -> bool + 'static,
    {
        let id = FilterId(self.next_filter);
        self.next_filter += 1;
        self.filters.push((id, Box::new(drop)));
        id
    }

    /// Removes a filter; returns whether it was there.
    pub fn remove_filter(&mut self, id: FilterId) -> bool {
        let before = self.filters.len();
        self.filters.retain(|(f, _)| *f != id);
        self.filters.len() != before
    }

    /// Removes every filter.
    pub fn clear_filters(&mut self) {
        self.filters.clear();
    }

    // ----- sending and delivering -----

    /// Offers `msg` from `from` to `to` at time `now`.
    ///
    /// Checks, in order: sender or receiver down, link cut, filters, loss.
    /// A message that passes is scheduled after the link's delay, and maybe
    /// duplicated. `now` earlier than a previous call's is treated as that
    /// previous time: the clock never runs backwards.
    pub fn send(&mut self, now: SimTime, from: N, to: N, msg: M) -> SendOutcome {
        let now = self.advance(now);
        self.stats.sent += 1;
        let id = MessageId(self.next_id);
        self.next_id += 1;

        if let Some(reason) = self.refusal(from, to, &msg) {
            self.record_drop(now, id, from, to, reason);
            return SendOutcome::Dropped { id, reason };
        }

        let link = self.link(from, to);
        let at = self.schedule(now, link, id, from, to, msg.clone(), TraceKind::Sent);
        let duplicate_at = if self.roll(link.duplicate()) {
            self.stats.duplicated += 1;
            Some(self.schedule(now, link, id, from, to, msg, TraceKind::Duplicated))
        } else {
            None
        };
        SendOutcome::Scheduled {
            id,
            at,
            duplicate_at,
        }
    }

    /// When the earliest message in flight is due, if any.
    pub fn next_delivery_time(&self) -> Option<SimTime> {
        self.in_flight.keys().next().map(|(at, _)| *at)
    }

    /// The earliest message due at or before `now`, if any. Call until `None`
    /// to drain everything due. Messages due at the same time come in the
    /// order they were scheduled. A message whose link has been cut since it
    /// was sent is dropped here instead of delivered.
    pub fn poll_delivery(&mut self, now: SimTime) -> Option<Delivery<N, M>> {
        let now = self.advance(now);
        loop {
            let (&(at, _), _) = self.in_flight.first_key_value()?;
            if at > now {
                return None;
            }
            let (_, m) = self.in_flight.pop_first()?;
            if self.is_cut(m.from, m.to) {
                self.record_drop(at, m.id, m.from, m.to, DropReason::Partitioned);
                continue;
            }
            self.stats.delivered += 1;
            self.record(at, m.id, m.from, m.to, TraceKind::Delivered);
            return Some(Delivery {
                id: m.id,
                at,
                sent_at: m.sent_at,
                from: m.from,
                to: m.to,
                msg: m.msg,
            });
        }
    }

    /// How many message copies are on the wire.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Drops every message on the wire without counting it (e.g. to end a
    /// scenario).
    pub fn clear_in_flight(&mut self) {
        self.in_flight.clear();
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    // ----- trace -----

    /// Starts recording a trace of the last `capacity` message events
    /// (replacing any trace so far).
    pub fn enable_trace(&mut self, capacity: usize) {
        self.trace = Some(Trace {
            capacity,
            events: VecDeque::with_capacity(capacity.min(4096)),
        });
    }

    /// Stops recording and returns what was recorded.
    pub fn disable_trace(&mut self) -> Vec<TraceEvent<N>> {
        self.trace
            .take()
            .map(|t| t.events.into())
            .unwrap_or_default()
    }

    /// The recorded trace, oldest first (empty if tracing is off).
    pub fn trace(&self) -> impl Iterator<Item = &TraceEvent<N>> + '_ {
        self.trace.iter().flat_map(|t| t.events.iter())
    }

    // ----- internals -----

    fn advance(&mut self, now: SimTime) -> SimTime {
        self.now = self.now.max(now);
        self.now
    }

    fn refusal(&mut self, from: N, to: N, msg: &M) -> Option<DropReason> {
        if self.is_crashed(from) || self.is_crashed(to) {
            return Some(DropReason::Crashed);
        }
        if self.is_cut(from, to) {
            return Some(DropReason::Partitioned);
        }
        if self.filters.iter_mut().any(|(_, f)| f(from, to, msg)) {
            return Some(DropReason::Filtered);
        }
        let loss = self.link(from, to).loss();
        if self.roll(loss) {
            return Some(DropReason::Lost);
        }
        None
    }

    /// `true` with probability `p`; draws nothing when the outcome is certain
    /// so that a fault-free link consumes no randomness.
    fn roll(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            false
        } else if p >= 1.0 {
            true
        } else {
            self.rng.f64() < p
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn schedule(
        &mut self,
        now: SimTime,
        link: LinkConfig,
        id: MessageId,
        from: N,
        to: N,
        msg: M,
        kind: TraceKind,
    ) -> SimTime {
        let jitter = duration_nanos(link.jitter());
        let extra = if jitter == 0 {
            0
        } else {
            self.rng.u64(0..=jitter)
        };
        let mut at = (now + link.latency()) + Duration::from_nanos(extra);
        if link.ordered() {
            let last = self.last_due.entry((from, to)).or_insert(SimTime::ZERO);
            at = at.max(*last);
            *last = at;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.insert(
            (at, seq),
            InFlight {
                id,
                sent_at: now,
                from,
                to,
                msg,
            },
        );
        self.record(now, id, from, to, kind);
        at
    }

    fn record_drop(&mut self, at: SimTime, id: MessageId, from: N, to: N, reason: DropReason) {
        self.stats.count_drop(reason);
        self.record(at, id, from, to, TraceKind::Dropped(reason));
    }

    fn record(&mut self, at: SimTime, id: MessageId, from: N, to: N, kind: TraceKind) {
        if let Some(trace) = &mut self.trace {
            if trace.capacity == 0 {
                return;
            }
            if trace.events.len() == trace.capacity {
                trace.events.pop_front();
            }
            trace.events.push_back(TraceEvent {
                at,
                id,
                from,
                to,
                kind,
            });
        }
    }
}

#[cfg(test)]
mod tests;
