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
//! - per-link bandwidth, bounded send queues and an urgent lane, all off by
//!   default (see below);
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
//! On a link without a bandwidth (the default) the network holds whatever
//! the driver sends until it is due, and messages never wait for each other.
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
//!
//! # Bandwidth, back-pressure and lanes
//!
//! Real connections have a bandwidth, and a sender's queue in front of them.
//! Megabytes of bulk traffic on one node-to-node connection make a small
//! heartbeat wait behind them (head-of-line blocking), or find the bounded
//! queue full and get dropped. A link [`with_bandwidth`](LinkConfig::with_bandwidth)
//! models that: each message occupies it for `size / bandwidth`, later ones
//! wait, a queue bound refuses what does not fit
//! ([`LossCause::QueueFull`], counted in [`Stats`] and [`LinkStats`]), and
//! [`with_lanes`](LinkConfig::with_lanes) gives urgent messages their own
//! lane that goes first, as the real transport does for frames flagged
//! [`Flags::URGENT`](crate::framing::Flags::URGENT).
//! [`LinkConfig::tcp_like`] sets one up as a node-to-node TCP connection.
//! Message sizes and urgency come from [`WireSize`] (with
//! [`Network::new_sized`]) or from functions given to
//! [`Network::set_size_of`] and [`Network::set_urgent_of`]; without them
//! every message has size 0 and is bulk. Links without a bandwidth draw the
//! same randomness and deliver in the same order as before these existed.
//!
//! ```
//! use bytes::Bytes;
//! use core::time::Duration;
//! use quorate_transport::framing::{ChannelId, Flags, Frame};
//! use quorate_transport::sim::{LinkConfig, Network, SendOutcome, SimTime};
//!
//! let mut net: Network<u8, Frame> = Network::new_sized(7);
//! // 1 MB/s, 1 ms latency, FIFO, up to 4 MB waiting in each lane, and an
//! // urgent lane for Raft's control traffic.
//! net.set_link(1, 2, LinkConfig::tcp_like(1_000_000, 4_000_000).with_lanes(true));
//!
//! // Two megabytes of anti-entropy gossip: two seconds on the wire.
//! let gossip = || Frame::new(ChannelId(1), Bytes::from(vec![0u8; 1_000_000]));
//! net.send(SimTime::ZERO, 1, 2, gossip());
//! assert!(matches!(net.send(SimTime::ZERO, 1, 2, gossip()), SendOutcome::Queued { .. }));
//!
//! // A heartbeat 10 ms later waits only for the frame on the wire.
//! let heartbeat = Frame::new(ChannelId(2), Bytes::from_static(b"hb")).with_flags(Flags::URGENT);
//! let out = net.send(SimTime::from_millis(10), 1, 2, heartbeat);
//! assert!(matches!(out, SendOutcome::Queued { urgent: true, .. }));
//!
//! let got: Vec<_> = std::iter::from_fn(|| net.poll_delivery(SimTime::from_secs(5))).collect();
//! assert_eq!(got[1].msg.payload, Bytes::from_static(b"hb"));
//! // At 1 µs a byte: the first frame (1 000 009 bytes with its header), the
//! // heartbeat's 11 bytes, then 1 ms of latency. Without lanes it would also
//! // have waited for the second megabyte.
//! let us = Duration::from_micros;
//! assert_eq!(got[1].at, SimTime::ZERO + us(1_000_009) + us(11) + us(1_000));
//! assert_eq!(net.link_stats(1, 2).bytes_sent, 2 * 1_000_009 + 11);
//! ```

mod link;
mod queue;
mod time;
mod trace;
mod wire;

pub use link::LinkConfig;
pub use time::SimTime;
pub use trace::{LinkStats, LossCause, MessageId, Stats, TraceEvent, TraceKind};
pub use wire::WireSize;

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use queue::{LinkQueue, Waiting};
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
#[non_exhaustive]
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
        cause: LossCause,
    },
    /// Accepted by a busy link with a bandwidth: it waits in the link's
    /// queue, and its delivery time is known once its transmission begins
    /// (an urgent message sent later may still go first).
    Queued {
        /// The message's id.
        id: MessageId,
        /// Whether it waits in the urgent lane.
        urgent: bool,
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
    /// Send queues of the links that have (or had) a bandwidth.
    queues: BTreeMap<(N, N), LinkQueue<M>>,
    link_stats: BTreeMap<(N, N), LinkStats>,
    size_of: fn(&M) -> usize,
    urgent_of: fn(&M) -> bool,
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
            .field(
                "queued",
                &self.queues.values().map(LinkQueue::messages).sum::<u64>(),
            )
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
    /// [`LinkConfig::default`] on every link. Every message has size 0 and
    /// is bulk until [`set_size_of`](Self::set_size_of) and
    /// [`set_urgent_of`](Self::set_urgent_of) say otherwise (or use
    /// [`new_sized`](Self::new_sized)).
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
            queues: BTreeMap::new(),
            link_stats: BTreeMap::new(),
            size_of: |_| 0,
            urgent_of: |_| false,
            stats: Stats::default(),
            trace: None,
        }
    }

    /// Sets how many bytes a message takes on the wire, for links with a
    /// bandwidth. Applies to messages sent from now on.
    pub fn set_size_of(&mut self, size_of: fn(&M) -> usize) {
        self.size_of = size_of;
    }

    /// Sets which messages go in the urgent lane of links
    /// [`with_lanes`](LinkConfig::with_lanes). Applies to messages sent from
    /// now on.
    pub fn set_urgent_of(&mut self, urgent_of: fn(&M) -> bool) {
        self.urgent_of = urgent_of;
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
    /// Messages it sent before crashing stay on the wire, but those still
    /// waiting in a link queue to or from it are lost with the connection.
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
                self.record_drop(now, id, from, to, LossCause::Crashed);
            }
        }
        let links: Vec<(N, N)> = self
            .queues
            .keys()
            .filter(|(from, to)| *from == node || *to == node)
            .copied()
            .collect();
        for key in links {
            let lost: Vec<Waiting<M>> = self
                .queues
                .get_mut(&key)
                .map(|q| q.drain().collect())
                .unwrap_or_default();
            self.sync_queue_stats(key);
            for w in lost {
                for _ in 0..w.copies() {
                    self.record_drop(self.now, w.id, key.0, key.1, LossCause::Crashed);
                }
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
    /// Checks, in order: sender or receiver down, link cut, filters, a full
    /// link queue, loss. A message that passes is scheduled after the link's
    /// delay, and maybe duplicated; on a link with a bandwidth it first
    /// waits for its turn on the wire (see [`LinkConfig`]). `now` earlier
    /// than a previous call's is treated as that previous time: the clock
    /// never runs backwards.
    pub fn send(&mut self, now: SimTime, from: N, to: N, msg: M) -> SendOutcome {
        let now = self.advance(now);
        self.stats.sent += 1;
        let id = MessageId(self.next_id);
        self.next_id += 1;

        let link = self.link(from, to);
        // A link whose bandwidth was removed still drains its queue in order.
        let paced = link.bandwidth().is_some()
            || self
                .queues
                .get(&(from, to))
                .is_some_and(|q| !q.is_idle(now));
        if let Some(cause) = self.refusal(now, from, to, &msg, link, paced) {
            self.record_drop(now, id, from, to, cause);
            return SendOutcome::Dropped { id, cause };
        }
        if paced {
            return self.enqueue(now, link, id, from, to, msg);
        }

        let size = self.size(&msg);
        self.count_on_wire((from, to), size, false, Duration::ZERO);
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

    /// When the earliest message in flight is due, if any. That includes
    /// messages waiting in link queues, as they will go if nothing more is
    /// sent.
    pub fn next_delivery_time(&self) -> Option<SimTime> {
        let on_wire = self.in_flight.keys().next().map(|(at, _)| *at);
        let waiting = self
            .queues
            .iter()
            .filter_map(|(&(from, to), q)| self.first_delivery_from_queue(from, to, q))
            .min();
        match (on_wire, waiting) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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
                self.record_drop(at, m.id, m.from, m.to, LossCause::Partitioned);
                continue;
            }
            self.stats.delivered += 1;
            self.link_stats.entry((m.from, m.to)).or_default().delivered += 1;
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

    /// How many message copies are on the wire or waiting in link queues.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len() + self.queues.values().map(LinkQueue::copies).sum::<usize>()
    }

    /// How many messages wait in link queues (duplicates not counted twice).
    pub fn queued(&self) -> usize {
        self.queues
            .values()
            .map(|q| usize::try_from(q.messages()).unwrap_or(usize::MAX))
            .sum()
    }

    /// Drops every message on the wire or in a link queue without counting
    /// it (e.g. to end a scenario).
    pub fn clear_in_flight(&mut self) {
        self.in_flight.clear();
        let keys: Vec<(N, N)> = self.queues.keys().copied().collect();
        for key in keys {
            if let Some(q) = self.queues.get_mut(&key) {
                q.drain().for_each(drop);
            }
            self.sync_queue_stats(key);
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The counters of the directed link `from -> to` (all zero if nothing
    /// was ever offered to it).
    pub fn link_stats(&self, from: N, to: N) -> LinkStats {
        self.link_stats
            .get(&(from, to))
            .copied()
            .unwrap_or_default()
    }

    /// The counters of every link that was offered a message, by `(from, to)`.
    pub fn all_link_stats(&self) -> impl Iterator<Item = ((N, N), &LinkStats)> + '_ {
        self.link_stats.iter().map(|(k, s)| (*k, s))
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

    /// Moves the clock to `now` and starts every transmission due by then.
    fn advance(&mut self, now: SimTime) -> SimTime {
        self.now = self.now.max(now);
        self.pump(self.now);
        self.now
    }

    fn size(&self, msg: &M) -> u64 {
        u64::try_from((self.size_of)(msg)).unwrap_or(u64::MAX)
    }

    #[allow(clippy::too_many_arguments)]
    fn refusal(
        &mut self,
        now: SimTime,
        from: N,
        to: N,
        msg: &M,
        link: LinkConfig,
        paced: bool,
    ) -> Option<LossCause> {
        if self.is_crashed(from) || self.is_crashed(to) {
            return Some(LossCause::Crashed);
        }
        if self.is_cut(from, to) {
            return Some(LossCause::Partitioned);
        }
        if self.filters.iter_mut().any(|(_, f)| f(from, to, msg)) {
            return Some(LossCause::Filtered);
        }
        if paced && self.queue_refuses(now, from, to, link, msg) {
            return Some(LossCause::QueueFull);
        }
        if self.roll(link.loss()) {
            return Some(LossCause::Lost);
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

    /// Whether the busy link `from -> to` has no room for `msg` in its lane.
    fn queue_refuses(&self, now: SimTime, from: N, to: N, link: LinkConfig, msg: &M) -> bool {
        let Some(q) = self.queues.get(&(from, to)) else {
            return false;
        };
        if q.is_idle(now) {
            return false;
        }
        let urgent = link.lanes() && (self.urgent_of)(msg);
        !q.lane(urgent).admits(
            self.size(msg),
            link.max_queued_bytes(),
            link.max_queued_messages(),
        )
    }

    /// A uniform extra delay in `[0, jitter]`; draws nothing without jitter.
    fn draw_jitter(&mut self, link: LinkConfig) -> Duration {
        let jitter = duration_nanos(link.jitter());
        let extra = if jitter == 0 {
            0
        } else {
            self.rng.u64(0..=jitter)
        };
        Duration::from_nanos(extra)
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
        let extra = self.draw_jitter(link);
        let at = self.place(now, now, link, extra, id, from, to, msg);
        self.record(now, id, from, to, kind);
        at
    }

    /// Puts a copy on the wire that left the sender at `depart`.
    #[allow(clippy::too_many_arguments)]
    fn place(
        &mut self,
        sent_at: SimTime,
        depart: SimTime,
        link: LinkConfig,
        extra: Duration,
        id: MessageId,
        from: N,
        to: N,
        msg: M,
    ) -> SimTime {
        let mut at = (depart + link.latency()) + extra;
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
                sent_at,
                from,
                to,
                msg,
            },
        );
        at
    }

    /// Accepts `msg` on a link with a bandwidth: on the wire at once if the
    /// link is idle, else into its queue. Draws the same randomness, in the
    /// same order, as an unpaced send.
    fn enqueue(
        &mut self,
        now: SimTime,
        link: LinkConfig,
        id: MessageId,
        from: N,
        to: N,
        msg: M,
    ) -> SendOutcome {
        let size = self.size(&msg);
        let urgent = link.lanes() && (self.urgent_of)(&msg);
        let jitter = self.draw_jitter(link);
        self.record(now, id, from, to, TraceKind::Sent);
        let duplicate = if self.roll(link.duplicate()) {
            self.stats.duplicated += 1;
            let extra = self.draw_jitter(link);
            self.record(now, id, from, to, TraceKind::Duplicated);
            Some(extra)
        } else {
            None
        };
        let w = Waiting {
            id,
            sent_at: now,
            msg,
            size,
            urgent,
            jitter,
            duplicate,
        };
        let key = (from, to);
        let q = self.queues.entry(key).or_default();
        if q.is_idle(now) {
            let (at, duplicate_at) = self.transmit(now, key, link, w);
            return SendOutcome::Scheduled {
                id,
                at,
                duplicate_at,
            };
        }
        q.push(w);
        self.sync_queue_stats(key);
        SendOutcome::Queued { id, urgent }
    }

    /// Starts every transmission due at or before `until`, earliest first.
    fn pump(&mut self, until: SimTime) {
        loop {
            let next = self
                .queues
                .iter()
                .filter_map(|(key, q)| q.next_start().map(|start| (start, *key)))
                .filter(|(start, _)| *start <= until)
                .min();
            let Some((start, key)) = next else {
                return;
            };
            let Some(w) = self.queues.get_mut(&key).and_then(LinkQueue::pop) else {
                return;
            };
            self.sync_queue_stats(key);
            let link = self.link(key.0, key.1);
            self.transmit(start, key, link, w);
        }
    }

    /// Transmits `w` from `start`: the link is busy until it is fully sent,
    /// then its copies travel. Returns when they are due.
    fn transmit(
        &mut self,
        start: SimTime,
        key: (N, N),
        link: LinkConfig,
        w: Waiting<M>,
    ) -> (SimTime, Option<SimTime>) {
        let end = start + link.transmission_time(w.size);
        if let Some(q) = self.queues.get_mut(&key) {
            q.busy_until = end;
        }
        self.count_on_wire(key, w.size, w.urgent, start - w.sent_at);
        self.record(start, w.id, key.0, key.1, TraceKind::OnWire);
        let (from, to) = key;
        match w.duplicate {
            None => {
                let at = self.place(w.sent_at, end, link, w.jitter, w.id, from, to, w.msg);
                (at, None)
            }
            Some(extra) => {
                let copy = w.msg.clone();
                let at = self.place(w.sent_at, end, link, w.jitter, w.id, from, to, w.msg);
                let dup = self.place(w.sent_at, end, link, extra, w.id, from, to, copy);
                (at, Some(dup))
            }
        }
    }

    /// When the first copy waiting in `q` will be due if nothing more is
    /// sent. Walks the queue in transmission order only as far as a later
    /// message could still be due earlier (jitter can reorder).
    fn first_delivery_from_queue(&self, from: N, to: N, q: &LinkQueue<M>) -> Option<SimTime> {
        let link = self.link(from, to);
        let mut free = q.busy_until;
        let mut best: Option<SimTime> = None;
        for w in q.in_order() {
            let end = free.max(w.sent_at) + link.transmission_time(w.size);
            let earliest = end + link.latency();
            if best.is_some_and(|b| earliest >= b) {
                break;
            }
            if link.ordered() {
                // Due times on an ordered link never decrease: the first is it.
                let last = self
                    .last_due
                    .get(&(from, to))
                    .copied()
                    .unwrap_or(SimTime::ZERO);
                return Some((earliest + w.jitter).max(last));
            }
            let extra = w.duplicate.map_or(w.jitter, |d| d.min(w.jitter));
            let at = earliest + extra;
            best = Some(best.map_or(at, |b| b.min(at)));
            free = end;
        }
        best
    }

    fn count_on_wire(&mut self, key: (N, N), size: u64, urgent: bool, waited: Duration) {
        let s = self.link_stats.entry(key).or_default();
        s.messages_sent += 1;
        s.bytes_sent = s.bytes_sent.saturating_add(size);
        s.urgent_sent += u64::from(urgent);
        s.max_queue_delay = s.max_queue_delay.max(waited);
    }

    fn sync_queue_stats(&mut self, key: (N, N)) {
        let (messages, bytes) = self
            .queues
            .get(&key)
            .map_or((0, 0), |q| (q.messages(), q.bytes()));
        let s = self.link_stats.entry(key).or_default();
        s.queued_messages = messages;
        s.queued_bytes = bytes;
        s.max_queued_messages = s.max_queued_messages.max(messages);
        s.max_queued_bytes = s.max_queued_bytes.max(bytes);
    }

    fn record_drop(&mut self, at: SimTime, id: MessageId, from: N, to: N, cause: LossCause) {
        self.stats.count_drop(cause);
        let s = self.link_stats.entry((from, to)).or_default();
        s.dropped += 1;
        if cause == LossCause::QueueFull {
            s.queue_full += 1;
        }
        self.record(at, id, from, to, TraceKind::Dropped(cause));
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

impl<N, M> Network<N, M>
where
    N: Copy + Ord + fmt::Debug,
    M: Clone + WireSize,
{
    /// Like [`new`](Self::new), but every message's size and urgency come
    /// from its [`WireSize`] (for [`Frame`](crate::framing::Frame): its
    /// encoded length and [`Flags::URGENT`](crate::framing::Flags::URGENT)).
    pub fn new_sized(seed: u64) -> Self {
        let mut net = Network::new(seed);
        net.set_size_of(M::wire_size);
        net.set_urgent_of(M::is_urgent);
        net
    }
}

#[cfg(test)]
mod pacing_tests;
#[cfg(test)]
mod tests;
