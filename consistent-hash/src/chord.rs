//! A Sans-IO Chord node (Stoica et al., SIGCOMM 2001).
//!
//! Nodes and keys live on an identifier circle of `2^bits` points. A key
//! belongs to its *successor*, the first node clockwise at or after it. Each
//! node keeps a successor list (to survive failures), a predecessor and a
//! finger table whose entry `i` points at `successor(id + 2^i)`, which lets a
//! lookup halve the remaining distance at each hop: `O(log n)` hops.
//!
//! [`Node`] never touches a network or a clock. Feed it messages with
//! [`Node::handle_message`] and time with [`Node::handle_timeout`] (logical
//! [`Tick`]s); take messages to send from [`Node::poll_transmit`] and results
//! from [`Node::poll_event`] until they return `None`. Lookups are iterative:
//! the origin asks one node after another for its next hop
//! ([`Node::find_successor`]) so it can count hops and route around nodes
//! that time out. Maintenance follows the paper's figure 6: `stabilize` and
//! `notify` fix successors and predecessors, `fix_fingers` refreshes one
//! finger per round, `check_predecessor` drops a silent predecessor, and a
//! successor that does not answer is replaced by the next in the list.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;

use crate::Error;

/// The most points a message may carry in one list (successors, avoided nodes).
pub const MAX_LIST: usize = 64;

/// A point on the identifier circle (the paper's "identifier"): where a node
/// sits or where a key falls. An application maps its own node names and keys
/// to points with [`IdSpace::point_from_hash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Point(pub u64);

/// Logical time, in whatever unit the driver counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Tick(pub u64);

impl Tick {
    fn after(self, ticks: u64) -> Tick {
        Tick(self.0.saturating_add(ticks))
    }
}

/// Names one lookup started by this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LookupId(pub u64);

/// Matches a reply to its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RequestId(pub u64);

/// The identifier circle: points are `0..2^bits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IdSpace {
    bits: u32,
    mask: u64,
}

impl IdSpace {
    /// A circle of `2^bits` points, `bits` in `1..=64`.
    pub fn new(bits: u32) -> Result<Self, Error> {
        if !(1..=64).contains(&bits) {
            return Err(Error::InvalidIdBits { bits });
        }
        Ok(Self {
            bits,
            mask: u64::MAX >> (64 - bits),
        })
    }

    /// Bits per point (the paper's `m`).
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// `value` as a point, if it fits the circle.
    pub fn point(&self, value: u64) -> Result<Point, Error> {
        if value & !self.mask != 0 {
            return Err(Error::IdOutOfRange {
                id: value,
                bits: self.bits,
            });
        }
        Ok(Point(value))
    }

    /// Any 64-bit hash folded onto the circle (its low `bits` bits).
    pub fn point_from_hash(&self, hash: u64) -> Point {
        Point(hash & self.mask)
    }

    /// Clockwise distance from `from` to `to`.
    pub fn distance(&self, from: Point, to: Point) -> u64 {
        to.0.wrapping_sub(from.0) & self.mask
    }

    /// `x` in the open arc `(a, b)`; `a == b` is the whole circle but `a`.
    pub fn between(&self, x: Point, a: Point, b: Point) -> bool {
        let (to_x, to_b) = (self.distance(a, x), self.distance(a, b));
        to_x != 0 && (to_x < to_b || to_b == 0)
    }

    /// `x` in the half-open arc `(a, b]`; `a == b` is the whole circle.
    pub fn between_right_closed(&self, x: Point, a: Point, b: Point) -> bool {
        let (to_x, to_b) = (self.distance(a, x), self.distance(a, b));
        to_b == 0 || (to_x != 0 && to_x <= to_b)
    }

    /// `id + 2^i` on the circle: where finger `i` starts.
    pub fn finger_start(&self, id: Point, i: u32) -> Point {
        Point(id.0.wrapping_add(1u64 << i) & self.mask)
    }
}

/// Tunables of a Chord node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Config {
    /// The identifier circle.
    pub space: IdSpace,
    /// Successor list length `r`: the ring survives `r - 1` consecutive failures.
    pub successors: usize,
    /// Ticks between maintenance rounds (stabilize, one fix_fingers, check_predecessor).
    pub maintenance_interval: u64,
    /// Ticks to wait for a reply.
    pub request_timeout: u64,
    /// Unanswered requests in a row after which a peer counts as failed;
    /// more than 1 keeps a lost message from evicting a live node.
    pub misses_to_fail: u32,
    /// Most hops a lookup may take before it is reported failed.
    pub max_hops: u32,
    /// Most restarts after timeouts before a lookup is reported failed.
    pub max_restarts: u32,
}

impl Config {
    /// Defaults for a circle of `bits` bits: 8 successors, maintenance every
    /// tick, 4-tick timeouts, failure after 3 misses, `2 * bits` hops.
    pub fn new(bits: u32) -> Result<Self, Error> {
        Ok(Self {
            space: IdSpace::new(bits)?,
            successors: 8,
            maintenance_interval: 1,
            request_timeout: 4,
            misses_to_fail: 3,
            max_hops: 2 * bits,
            max_restarts: 4,
        })
    }
}

/// A routing step: the answer to "who is responsible for this key?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Hop {
    /// The key's successor, final.
    Found(Point),
    /// Ask this node next: the closest node preceding the key known here.
    Next(Point),
}

/// Messages between Chord nodes.
///
/// `#[non_exhaustive]`: later releases may add messages (a graceful leave,
/// key hand-over); a driver forwards them without matching on them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Message {
    /// Asks for the next hop towards `key`, avoiding nodes known to have failed.
    FindSuccessor {
        /// Echoed in the reply.
        request: RequestId,
        /// The key being looked up.
        key: Point,
        /// Nodes the asker saw fail; routing skips them.
        avoid: Vec<Point>,
    },
    /// Answers [`Message::FindSuccessor`].
    NextHop {
        /// The request answered.
        request: RequestId,
        /// Final answer or next node to ask.
        hop: Hop,
    },
    /// Stabilize: asks a successor for its predecessor and successor list.
    GetPredecessor {
        /// Echoed in the reply.
        request: RequestId,
    },
    /// Answers [`Message::GetPredecessor`].
    Predecessor {
        /// The request answered.
        request: RequestId,
        /// The replier's predecessor, if it knows one.
        predecessor: Option<Point>,
        /// The replier's successor list.
        successors: Vec<Point>,
    },
    /// "I think I am your predecessor."
    Notify,
    /// Liveness probe of a predecessor.
    Ping {
        /// Echoed in the reply.
        request: RequestId,
    },
    /// Answers [`Message::Ping`].
    Pong {
        /// The request answered.
        request: RequestId,
    },
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Transmit {
    /// The destination node.
    pub to: Point,
    /// What to deliver.
    pub message: Message,
}

/// Something the application should know.
///
/// `#[non_exhaustive]`: later releases may add events; match the ones you
/// act on and ignore the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Event {
    /// A lookup started with [`Node::lookup`] finished.
    LookupDone {
        /// Which lookup.
        lookup: LookupId,
        /// The key looked up.
        key: Point,
        /// The node responsible for it.
        successor: Point,
        /// Remote nodes asked on the way (0 when answered locally).
        hops: u32,
    },
    /// A lookup gave up (too many hops or timeouts).
    LookupFailed {
        /// Which lookup.
        lookup: LookupId,
        /// The key looked up.
        key: Point,
    },
    /// The join finished: the node is on the ring.
    Joined {
        /// Its first successor.
        successor: Point,
    },
    /// The join lookup gave up; call [`Node::join`] again with another bootstrap.
    JoinFailed,
    /// The predecessor changed: this node is now responsible for the keys in
    /// `(predecessor, self]` (all keys when `None` and alone). A store hands
    /// keys outside that arc to their new owner.
    PredecessorChanged {
        /// The new predecessor, or `None` when the old one failed.
        predecessor: Option<Point>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    User(LookupId),
    Join,
    Finger(u32),
}

#[derive(Debug, Clone)]
struct Lookup {
    key: Point,
    purpose: Purpose,
    asking: Point,
    hops: u32,
    restarts: u32,
    /// Unanswered requests to `asking` so far.
    misses: u32,
    avoid: Vec<Point>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Lookup(u64),
    Stabilize(Point),
    Ping(Point),
}

/// One Chord node's routing state machine.
///
/// ```
/// use quorate_consistent_hash::chord::{Config, Event, Point, Node, Tick};
///
/// let config = Config::new(16)?;
/// let mut first = Node::new(Point(100), config)?;
/// let mut second = Node::new(Point(40_000), config)?;
/// second.join(Point(100), Tick(0));
/// // A toy network: deliver everything until both are quiet.
/// for now in 0..20 {
///     first.handle_timeout(Tick(now));
///     second.handle_timeout(Tick(now));
///     loop {
///         let mut moved = false;
///         while let Some(out) = first.poll_transmit() {
///             second.handle_message(Tick(now), first.id(), out.message)?;
///             moved = true;
///         }
///         while let Some(out) = second.poll_transmit() {
///             first.handle_message(Tick(now), second.id(), out.message)?;
///             moved = true;
///         }
///         if !moved { break; }
///     }
/// }
/// assert_eq!(first.successor(), Point(40_000));
/// assert_eq!(second.successor(), Point(100));
/// assert_eq!(first.find_successor(Point(500), &[]), chord::Hop::Found(Point(40_000)));
/// # use quorate_consistent_hash::chord;
/// # Ok::<(), quorate_consistent_hash::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Node {
    id: Point,
    config: Config,
    joined: bool,
    /// Where we joined through; used to rejoin if every known node fails.
    bootstrap: Option<Point>,
    lost_ring: bool,
    predecessor: Option<Point>,
    /// Never empty: `[self]` when alone.
    successors: Vec<Point>,
    fingers: Vec<Option<Point>>,
    next_finger: u32,
    successor_misses: u32,
    predecessor_misses: u32,
    next_maintenance: Tick,
    next_number: u64,
    lookups: BTreeMap<u64, Lookup>,
    pending: BTreeMap<RequestId, (Pending, Tick)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Node {
    /// A node that forms a ring of its own; call [`Node::join`] to enter an existing one.
    pub fn new(id: Point, config: Config) -> Result<Self, Error> {
        config.space.point(id.0)?;
        if config.successors == 0 {
            return Err(Error::ZeroSuccessors);
        }
        Ok(Self {
            id,
            config,
            joined: true,
            bootstrap: None,
            lost_ring: false,
            predecessor: None,
            successors: vec![id],
            fingers: vec![None; config.space.bits() as usize],
            next_finger: 0,
            successor_misses: 0,
            predecessor_misses: 0,
            next_maintenance: Tick(0),
            next_number: 0,
            lookups: BTreeMap::new(),
            pending: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// This node's id.
    pub fn id(&self) -> Point {
        self.id
    }

    /// Whether the node is on a ring (alone or joined).
    pub fn is_joined(&self) -> bool {
        self.joined
    }

    /// The first successor (itself when alone).
    pub fn successor(&self) -> Point {
        self.successors.first().copied().unwrap_or(self.id)
    }

    /// The successor list, nearest first.
    pub fn successors(&self) -> &[Point] {
        &self.successors
    }

    /// The predecessor, if known.
    pub fn predecessor(&self) -> Option<Point> {
        self.predecessor
    }

    /// Finger `i`: the node believed to succeed `id + 2^i`.
    pub fn finger(&self, i: u32) -> Option<Point> {
        self.fingers.get(i as usize).copied().flatten()
    }

    /// Leaves the current ring and joins the one `bootstrap` belongs to.
    ///
    /// If later every successor, finger and the predecessor fail, the node
    /// rejoins through `bootstrap` by itself; should that fail too it reports
    /// [`Event::JoinFailed`].
    pub fn join(&mut self, bootstrap: Point, now: Tick) {
        self.joined = false;
        self.bootstrap = Some(bootstrap);
        self.lost_ring = false;
        self.predecessor = None;
        self.successors = vec![self.id];
        self.fingers.iter_mut().for_each(|finger| *finger = None);
        // Lookups in flight cannot finish on a ring we are leaving: fail them.
        for lookup in core::mem::take(&mut self.lookups).into_values() {
            if let Purpose::User(id) = lookup.purpose {
                self.events.push_back(Event::LookupFailed {
                    lookup: id,
                    key: lookup.key,
                });
            }
        }
        self.pending.clear();
        let number = self.number();
        let lookup = Lookup {
            key: self.id,
            purpose: Purpose::Join,
            asking: bootstrap,
            hops: 1,
            restarts: 0,
            misses: 0,
            avoid: Vec::new(),
        };
        self.ask(number, lookup, now);
    }

    /// Starts a lookup of `key`; its result comes as [`Event::LookupDone`].
    pub fn lookup(&mut self, key: Point, now: Tick) -> Result<LookupId, Error> {
        self.config.space.point(key.0)?;
        let number = self.number();
        let lookup = LookupId(number);
        self.start_lookup(number, key, Purpose::User(lookup), now);
        Ok(lookup)
    }

    /// The paper's `find_successor` step, answered from local state only:
    /// the key's successor if it lies between us and our first live
    /// successor, else the closest preceding node we know, skipping `avoid`.
    pub fn find_successor(&self, key: Point, avoid: &[Point]) -> Hop {
        let space = &self.config.space;
        let successor = self
            .successors
            .iter()
            .copied()
            .find(|s| !avoid.contains(s))
            .unwrap_or(self.id);
        if successor == self.id || space.between_right_closed(key, self.id, successor) {
            return Hop::Found(successor);
        }
        let closest = self
            .fingers
            .iter()
            .flatten()
            .chain(&self.successors)
            .copied()
            .filter(|candidate| {
                !avoid.contains(candidate) && space.between(*candidate, self.id, key)
            })
            .max_by_key(|candidate| space.distance(self.id, *candidate));
        match closest {
            Some(next) => Hop::Next(next),
            None => Hop::Found(successor),
        }
    }

    /// Handles a message from `from`.
    ///
    /// A message naming points outside the circle, or carrying more than
    /// [`MAX_LIST`] points in a list, is rejected with an error and changes nothing.
    pub fn handle_message(
        &mut self,
        now: Tick,
        from: Point,
        message: Message,
    ) -> Result<(), Error> {
        self.validate(from, &message)?;
        match message {
            Message::FindSuccessor {
                request,
                key,
                avoid,
            } => {
                // A node still joining knows nothing yet; let the asker time out.
                if self.joined {
                    let hop = self.find_successor(key, &avoid);
                    self.send(from, Message::NextHop { request, hop });
                }
            }
            Message::NextHop { request, hop } => {
                if let Some((Pending::Lookup(number), _)) = self.take_pending(request, from) {
                    self.advance_lookup(number, from, hop, now);
                }
            }
            Message::GetPredecessor { request } => {
                let (predecessor, successors) = (self.predecessor, self.successors.clone());
                self.send(
                    from,
                    Message::Predecessor {
                        request,
                        predecessor,
                        successors,
                    },
                );
            }
            Message::Predecessor {
                request,
                predecessor,
                successors,
            } => {
                if let Some((Pending::Stabilize(successor), _)) = self.take_pending(request, from) {
                    self.successor_misses = 0;
                    self.stabilized(successor, predecessor, &successors);
                }
            }
            Message::Notify => self.notified(from),
            Message::Ping { request } => self.send(from, Message::Pong { request }),
            Message::Pong { request } => {
                if self.take_pending(request, from).is_some() {
                    self.predecessor_misses = 0;
                }
            }
        }
        Ok(())
    }

    fn validate(&self, from: Point, message: &Message) -> Result<(), Error> {
        let space = self.config.space;
        let check_list = |ids: &[Point]| -> Result<(), Error> {
            if ids.len() > MAX_LIST {
                return Err(Error::ListTooLong {
                    len: ids.len(),
                    max: MAX_LIST,
                });
            }
            ids.iter().try_for_each(|id| space.point(id.0).map(drop))
        };
        space.point(from.0)?;
        match message {
            Message::FindSuccessor { key, avoid, .. } => {
                space.point(key.0)?;
                check_list(avoid)
            }
            Message::NextHop {
                hop: Hop::Found(id) | Hop::Next(id),
                ..
            } => space.point(id.0).map(drop),
            Message::Predecessor {
                predecessor,
                successors,
                ..
            } => {
                if let Some(predecessor) = predecessor {
                    space.point(predecessor.0)?;
                }
                check_list(successors)
            }
            Message::GetPredecessor { .. }
            | Message::Notify
            | Message::Ping { .. }
            | Message::Pong { .. } => Ok(()),
        }
    }

    /// Runs maintenance that is due and expires requests that timed out.
    pub fn handle_timeout(&mut self, now: Tick) {
        let expired: Vec<(RequestId, Pending)> = self
            .pending
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(&request, &(pending, _))| (request, pending))
            .collect();
        for (request, pending) in expired {
            self.pending.remove(&request);
            self.timed_out(pending, now);
        }
        if self.lost_ring
            && let Some(bootstrap) = self.bootstrap.filter(|&b| b != self.id)
        {
            self.join(bootstrap, now);
        }
        if self.joined && now >= self.next_maintenance {
            self.next_maintenance = now.after(self.config.maintenance_interval.max(1));
            self.stabilize(now);
            self.fix_fingers(now);
            self.check_predecessor(now);
        }
    }

    /// When [`Node::handle_timeout`] next has work: maintenance or a request deadline.
    pub fn poll_timeout(&self) -> Option<Tick> {
        let deadline = self.pending.values().map(|&(_, deadline)| deadline).min();
        let maintenance = self.joined.then_some(self.next_maintenance);
        deadline.into_iter().chain(maintenance).min()
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn number(&mut self) -> u64 {
        self.next_number += 1;
        self.next_number
    }

    fn send(&mut self, to: Point, message: Message) {
        self.transmits.push_back(Transmit { to, message });
    }

    fn request(&mut self, pending: Pending, now: Tick) -> RequestId {
        let request = RequestId(self.number());
        self.pending
            .insert(request, (pending, now.after(self.config.request_timeout)));
        request
    }

    /// Removes a pending request, but only if `from` is who we asked.
    fn take_pending(&mut self, request: RequestId, from: Point) -> Option<(Pending, Tick)> {
        let asked = match self.pending.get(&request)?.0 {
            Pending::Lookup(number) => self.lookups.get(&number).map(|lookup| lookup.asking),
            Pending::Stabilize(to) | Pending::Ping(to) => Some(to),
        };
        if asked != Some(from) {
            return None;
        }
        self.pending.remove(&request)
    }

    fn start_lookup(&mut self, number: u64, key: Point, purpose: Purpose, now: Tick) {
        let lookup = Lookup {
            key,
            purpose,
            asking: self.id,
            hops: 0,
            restarts: 0,
            misses: 0,
            avoid: Vec::new(),
        };
        let hop = self.find_successor(key, &[]);
        self.lookups.insert(number, lookup);
        self.advance_lookup(number, self.id, hop, now);
    }

    fn ask(&mut self, number: u64, lookup: Lookup, now: Tick) {
        let (to, key, avoid) = (lookup.asking, lookup.key, lookup.avoid.clone());
        self.lookups.insert(number, lookup);
        let request = self.request(Pending::Lookup(number), now);
        self.send(
            to,
            Message::FindSuccessor {
                request,
                key,
                avoid,
            },
        );
    }

    fn advance_lookup(&mut self, number: u64, from: Point, mut hop: Hop, now: Tick) {
        let Some(mut lookup) = self.lookups.remove(&number) else {
            return;
        };
        if hop == Hop::Next(self.id) && from != self.id {
            // Routed back to us: take the step locally instead of messaging ourselves.
            hop = self.find_successor(lookup.key, &lookup.avoid);
        }
        match hop {
            Hop::Found(successor) => self.finish_lookup(lookup, Some(successor)),
            Hop::Next(next) if next == from || lookup.hops >= self.config.max_hops => {
                self.finish_lookup(lookup, None)
            }
            Hop::Next(next) => {
                lookup.asking = next;
                lookup.misses = 0;
                lookup.hops += 1;
                self.ask(number, lookup, now);
            }
        }
    }

    fn finish_lookup(&mut self, lookup: Lookup, successor: Option<Point>) {
        match (lookup.purpose, successor) {
            (Purpose::User(id), Some(successor)) => {
                self.events.push_back(Event::LookupDone {
                    lookup: id,
                    key: lookup.key,
                    successor,
                    hops: lookup.hops,
                });
            }
            (Purpose::User(id), None) => self.events.push_back(Event::LookupFailed {
                lookup: id,
                key: lookup.key,
            }),
            (Purpose::Join, Some(successor)) if successor != self.id => {
                self.joined = true;
                self.successors = vec![successor];
                self.events.push_back(Event::Joined { successor });
            }
            (Purpose::Join, _) => self.events.push_back(Event::JoinFailed),
            (Purpose::Finger(i), Some(successor)) => {
                if let Some(finger) = self.fingers.get_mut(i as usize) {
                    *finger = (successor != self.id).then_some(successor);
                }
            }
            (Purpose::Finger(_), None) => {}
        }
    }

    fn timed_out(&mut self, pending: Pending, now: Tick) {
        match pending {
            Pending::Lookup(number) => {
                let Some(mut lookup) = self.lookups.remove(&number) else {
                    return;
                };
                lookup.misses += 1;
                if lookup.misses < self.config.misses_to_fail {
                    self.ask(number, lookup, now);
                    return;
                }
                self.forget(lookup.asking);
                if lookup.restarts >= self.config.max_restarts || lookup.purpose == Purpose::Join {
                    self.finish_lookup(lookup, None);
                    return;
                }
                lookup.restarts += 1;
                lookup.misses = 0;
                lookup.avoid.push(lookup.asking);
                let hop = self.find_successor(lookup.key, &lookup.avoid);
                lookup.asking = self.id;
                self.lookups.insert(number, lookup);
                self.advance_lookup(number, self.id, hop, now);
            }
            Pending::Stabilize(successor) => {
                self.successor_misses += 1;
                if self.successor_misses >= self.config.misses_to_fail {
                    self.successor_misses = 0;
                    self.forget(successor);
                }
            }
            Pending::Ping(predecessor) => {
                self.predecessor_misses += 1;
                if self.predecessor_misses >= self.config.misses_to_fail
                    && self.predecessor == Some(predecessor)
                {
                    self.predecessor_misses = 0;
                    self.set_predecessor(None);
                }
            }
        }
    }

    /// Drops a failed node from every table; the successor list falls back to the next entry.
    fn forget(&mut self, failed: Point) {
        if failed == self.id {
            return;
        }
        self.successors.retain(|&s| s != failed);
        if self.successors.is_empty() {
            // Every successor failed: fall back on the nearest finger, or ourselves.
            let space = self.config.space;
            let me = self.id;
            let nearest = self
                .fingers
                .iter()
                .flatten()
                .copied()
                .filter(|&f| f != failed)
                .min_by_key(|&f| space.distance(me, f));
            let fallback = nearest.or(self.predecessor.filter(|&p| p != failed));
            self.lost_ring = fallback.is_none();
            self.successors.push(fallback.unwrap_or(me));
        }
        for finger in &mut self.fingers {
            if *finger == Some(failed) {
                *finger = None;
            }
        }
        if self.predecessor == Some(failed) {
            self.set_predecessor(None);
        }
    }

    fn stabilize(&mut self, now: Tick) {
        let successor = self.successor();
        if successor == self.id {
            // Alone: a predecessor that notified us is our successor too.
            if let Some(predecessor) = self.predecessor {
                self.successors = vec![predecessor];
                self.send(predecessor, Message::Notify);
            }
            return;
        }
        self.request_once(successor, Pending::Stabilize(successor), now, |request| {
            Message::GetPredecessor { request }
        });
    }

    /// Sends a request unless the same one is still waiting for its reply.
    fn request_once(
        &mut self,
        to: Point,
        pending: Pending,
        now: Tick,
        message: impl FnOnce(RequestId) -> Message,
    ) {
        if self
            .pending
            .values()
            .any(|(waiting, _)| *waiting == pending)
        {
            return;
        }
        let request = self.request(pending, now);
        self.send(to, message(request));
    }

    fn stabilized(
        &mut self,
        successor: Point,
        predecessor: Option<Point>,
        their_successors: &[Point],
    ) {
        let space = self.config.space;
        let mut list = Vec::with_capacity(self.config.successors);
        if let Some(closer) =
            predecessor.filter(|&p| p != self.id && space.between(p, self.id, successor))
        {
            list.push(closer);
        }
        list.push(successor);
        for &next in their_successors {
            if next == self.id || list.len() >= self.config.successors {
                break;
            }
            if !list.contains(&next) {
                list.push(next);
            }
        }
        list.truncate(self.config.successors);
        self.successors = list;
        let first = self.successor();
        self.send(first, Message::Notify);
    }

    fn notified(&mut self, candidate: Point) {
        if !self.joined || candidate == self.id {
            return;
        }
        let space = self.config.space;
        if self
            .predecessor
            .is_none_or(|p| space.between(candidate, p, self.id))
        {
            self.set_predecessor(Some(candidate));
        }
        if self.successor() == self.id {
            self.successors = vec![candidate];
        }
    }

    fn set_predecessor(&mut self, predecessor: Option<Point>) {
        if self.predecessor != predecessor {
            self.predecessor = predecessor;
            self.events
                .push_back(Event::PredecessorChanged { predecessor });
        }
    }

    fn fix_fingers(&mut self, now: Tick) {
        let bits = self.config.space.bits();
        let i = self.next_finger;
        self.next_finger = (i + 1) % bits;
        if self
            .lookups
            .values()
            .any(|lookup| lookup.purpose == Purpose::Finger(i))
        {
            return;
        }
        let start = self.config.space.finger_start(self.id, i);
        let number = self.number();
        self.start_lookup(number, start, Purpose::Finger(i), now);
    }

    fn check_predecessor(&mut self, now: Tick) {
        let Some(predecessor) = self.predecessor else {
            return;
        };
        self.request_once(predecessor, Pending::Ping(predecessor), now, |request| {
            Message::Ping { request }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arcs_on_a_small_circle() {
        let space = IdSpace::new(3).unwrap();
        let (a, b) = (Point(6), Point(2));
        let inside: Vec<u64> = (0..8).filter(|&x| space.between(Point(x), a, b)).collect();
        assert_eq!(inside, [0, 1, 7]);
        let closed: Vec<u64> = (0..8)
            .filter(|&x| space.between_right_closed(Point(x), a, b))
            .collect();
        assert_eq!(closed, [0, 1, 2, 7]);
        let whole: Vec<u64> = (0..8)
            .filter(|&x| space.between(Point(x), Point(3), Point(3)))
            .collect();
        assert_eq!(whole, [0, 1, 2, 4, 5, 6, 7]);
        assert!((0..8).all(|x| space.between_right_closed(Point(x), Point(3), Point(3))));
        assert_eq!(space.finger_start(Point(6), 2), Point(2));
        assert_eq!(space.distance(Point(6), Point(1)), 3);
    }

    #[test]
    fn rejects_bad_ids_and_configs() {
        assert_eq!(IdSpace::new(0), Err(Error::InvalidIdBits { bits: 0 }));
        assert_eq!(IdSpace::new(65), Err(Error::InvalidIdBits { bits: 65 }));
        assert!(IdSpace::new(64).is_ok());
        let config = Config::new(4).unwrap();
        assert_eq!(
            Node::new(Point(16), config).err(),
            Some(Error::IdOutOfRange { id: 16, bits: 4 })
        );
        let mut node = Node::new(Point(15), config).unwrap();
        assert_eq!(
            node.lookup(Point(99), Tick(0)),
            Err(Error::IdOutOfRange { id: 99, bits: 4 })
        );
        assert!(
            Node::new(
                Point(1),
                Config {
                    successors: 0,
                    ..config
                }
            )
            .is_err()
        );
    }

    #[test]
    fn rejects_forged_messages_without_changing_state() {
        let mut node = Node::new(Point(5), Config::new(8).unwrap()).unwrap();
        let before = alloc::format!("{node:?}");
        let request = RequestId(1);
        let out_of_range = Message::FindSuccessor {
            request,
            key: Point(300),
            avoid: Vec::new(),
        };
        assert_eq!(
            node.handle_message(Tick(0), Point(9), out_of_range),
            Err(Error::IdOutOfRange { id: 300, bits: 8 })
        );
        let too_long = Message::Predecessor {
            request,
            predecessor: None,
            successors: vec![Point(1); MAX_LIST + 1],
        };
        assert_eq!(
            node.handle_message(Tick(0), Point(9), too_long),
            Err(Error::ListTooLong {
                len: MAX_LIST + 1,
                max: MAX_LIST
            })
        );
        assert_eq!(
            node.handle_message(Tick(0), Point(256), Message::Notify),
            Err(Error::IdOutOfRange { id: 256, bits: 8 })
        );
        assert_eq!(alloc::format!("{node:?}"), before);
        assert_eq!(node.poll_transmit(), None);
    }

    #[test]
    fn answers_only_the_peer_it_asked() {
        let mut node = Node::new(Point(5), Config::new(8).unwrap()).unwrap();
        node.handle_message(Tick(0), Point(50), Message::Notify)
            .unwrap();
        assert_eq!(node.predecessor(), Some(Point(50)));
        assert_eq!(
            node.poll_event(),
            Some(Event::PredecessorChanged {
                predecessor: Some(Point(50))
            })
        );
        node.handle_timeout(Tick(0));
        let stabilize = node.poll_transmit().unwrap();
        let Message::GetPredecessor { request } = stabilize.message else {
            panic!("{stabilize:?}")
        };
        assert_eq!(stabilize.to, Point(50));
        // A reply from someone else is ignored.
        let forged = Message::Predecessor {
            request,
            predecessor: Some(Point(7)),
            successors: vec![Point(7)],
        };
        node.handle_message(Tick(1), Point(60), forged).unwrap();
        assert_eq!(node.successor(), Point(50));
        // The real one is taken: 7 lies between 5 and 50, so it becomes the successor.
        let real = Message::Predecessor {
            request,
            predecessor: Some(Point(7)),
            successors: vec![Point(5)],
        };
        node.handle_message(Tick(1), Point(50), real).unwrap();
        assert_eq!(node.successors(), [Point(7), Point(50)]);
    }

    #[test]
    fn a_lone_node_owns_every_key() {
        let mut node = Node::new(Point(5), Config::new(8).unwrap()).unwrap();
        assert_eq!(node.find_successor(Point(200), &[]), Hop::Found(Point(5)));
        let lookup = node.lookup(Point(9), Tick(0)).unwrap();
        assert_eq!(
            node.poll_event(),
            Some(Event::LookupDone {
                lookup,
                key: Point(9),
                successor: Point(5),
                hops: 0
            })
        );
        assert_eq!(node.poll_transmit(), None);
    }

    #[test]
    fn routes_through_the_closest_preceding_finger() {
        // Paper figure 3(b)-style ring on 6 bits: nodes 1, 8, 14, 21, 32, 38, 42, 48, 51, 56.
        let mut node = Node::new(Point(8), Config::new(6).unwrap()).unwrap();
        node.successors = vec![Point(14), Point(21)];
        // Fingers of 8 by hand: succ(9)=14, succ(10)=14, succ(12)=14, succ(16)=21, succ(24)=32, succ(40)=42.
        node.fingers = [14, 14, 14, 21, 32, 42]
            .iter()
            .map(|&f| Some(Point(f)))
            .collect();
        assert_eq!(node.find_successor(Point(10), &[]), Hop::Found(Point(14)));
        assert_eq!(node.find_successor(Point(54), &[]), Hop::Next(Point(42)));
        assert_eq!(node.find_successor(Point(30), &[]), Hop::Next(Point(21)));
        // With 14 failed, the next live successor answers for its arc.
        assert_eq!(
            node.find_successor(Point(10), &[Point(14)]),
            Hop::Found(Point(21))
        );
        assert_eq!(
            node.find_successor(Point(54), &[Point(42)]),
            Hop::Next(Point(32))
        );
    }
}
