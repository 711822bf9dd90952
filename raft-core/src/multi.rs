//! Many Raft groups on one server for the cost of the busy ones: one tick
//! for all, heartbeats coalesced per server pair, idle groups quiesced.
//!
//! A sharded store runs one Raft group per shard, and every group of a
//! server has a replica on a few other servers. Driven one by one, each
//! group ticks and heartbeats on its own, so an idle server's cost grows
//! with its number of groups. [`MultiRaft`] drives all the groups of one
//! server as one state machine (Sans-IO, like [`Node`]):
//!
//! - **One tick.** [`tick`](MultiRaft::tick) advances every group, but
//!   only the groups whose next timer is due do any work (each group's
//!   [`poll_timeout`](Node::poll_timeout) is kept in a timer queue), so a
//!   tick costs the groups that act, not the groups that exist.
//! - **Coalescing.** The messages every group sends to the same server
//!   between two [`poll_transmit`](MultiRaft::poll_transmit) calls travel
//!   as one [`Batch`]: a heartbeat round of a thousand groups is one
//!   message per peer, not a thousand.
//! - **Quiescence.** A leader whose group has nothing to do quiesces
//!   ([`Node::quiesce_with`], see the [`Node`] docs on quiescence): no
//!   ticks, no heartbeats, on the leader and its followers. Any message of
//!   the group, a proposal or a read wakes it.
//! - **Liveness.** What a quiet follower cannot see is its leader's server
//!   failing. Each server sends every peer a batch at least every
//!   [`MultiConfig::liveness_interval`] ticks (empty if there is nothing
//!   else to say: a few messages per second per server pair, whatever the
//!   number of groups); a peer unheard for
//!   [`MultiConfig::liveness_timeout`] ticks counts as down, and a batch
//!   with a new [`incarnation`](MultiConfig::incarnation) says the peer
//!   restarted. On either change, and when the peer comes back, every
//!   group with a replica there is woken, so its followers elect a new
//!   leader or its leader catches the peer up. Leaders quiesce counting
//!   only live followers, so one dead server does not keep every group
//!   awake.
//!
//! Quiescence never weakens safety (it only stops timers), and leases stay
//! sound: a quiet group's ticks still count (they are caught up before the
//! group's next input), so a leader's lease ends on time.
//!
//! # Driving it
//!
//! As for a single [`Node`]: after every input
//! ([`tick`](MultiRaft::tick), [`step`](MultiRaft::step),
//! [`propose`](MultiRaft::propose), [`read_index`](MultiRaft::read_index),
//! [`group_mut`](MultiRaft::group_mut)), loop over
//! [`ready`](MultiRaft::ready), which hands out one group's [`Ready`] at a
//! time (its messages already moved into the batches), persist and apply
//! it, and hand it back with [`advance`](MultiRaft::advance); then send
//! what [`poll_transmit`](MultiRaft::poll_transmit) returns (sending
//! before persisting is allowed, as for a `Node`).
//!
//! ```
//! use quorate_raft_core::multi::{GroupId, MultiConfig, MultiRaft};
//! use quorate_raft_core::{Config, Configuration, MemStorage, Node, NodeId};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let members = Configuration::new([NodeId(1), NodeId(2), NodeId(3)]);
//! let mut servers = Vec::new();
//! for id in 1..=3 {
//!     let mut server = MultiRaft::new(MultiConfig::new(NodeId(id)))?;
//!     for group in 0..100 {
//!         let mut config = Config::new(NodeId(id));
//!         config.seed = group;
//!         let node = Node::new(config, MemStorage::new(members.clone()))?;
//!         server.add_group(GroupId(group), node)?;
//!     }
//!     servers.push(server);
//! }
//! let mut sent = 0;
//! for tick in 0..2_000 {
//!     let mut network = Vec::new();
//!     for server in &mut servers {
//!         server.tick();
//!         while let Some((group, mut ready)) = server.ready()? {
//!             let mut node = server.group_mut(group).expect("a group it just named");
//!             // Persist (MemStorage keeps what it is given), apply, advance.
//!             node.storage_mut().append(ready.entries())?;
//!             if let Some(hs) = ready.hard_state() {
//!                 node.storage_mut().set_hard_state(hs);
//!             }
//!             drop(node);
//!             server.advance(group, ready)?;
//!         }
//!         while let Some(batch) = server.poll_transmit() {
//!             if tick >= 1_000 {
//!                 sent += 1;
//!             }
//!             network.push(batch);
//!         }
//!     }
//!     for batch in network {
//!         servers[(batch.to.0 - 1) as usize].step(batch)?;
//!     }
//! }
//! // Every group elected a leader and went quiet: in the last 1,000 ticks
//! // the three servers exchanged liveness beats only, not 100 groups'
//! // heartbeats.
//! for server in &servers {
//!     assert_eq!(server.quiesced(), 100);
//! }
//! let pairs = 6; // ordered server pairs
//! let beats = 1_000 / MultiConfig::LIVENESS_INTERVAL as usize;
//! assert!(sent <= pairs * (beats + 1), "{sent} batches");
//! # Ok(())
//! # }
//! ```

use crate::error::{Error, FatalError};
use crate::message::Message;
use crate::node::{Node, StepOutcome};
use crate::ready::{Ready, Role};
use crate::storage::Storage;
use crate::types::{LogIndex, NodeId};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::{Deref, DerefMut};

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// Names one Raft group (a shard, a range, a region) among the groups of
/// a [`MultiRaft`]. The same group has the same id on every server.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct GroupId(pub u64);

impl std::fmt::Display for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "group {}", self.0)
    }
}

/// How a [`MultiRaft`] runs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MultiConfig {
    /// This server: the id its replicas have in every group.
    pub id: NodeId,
    /// Changes every time the server starts (a counter kept on disk, or
    /// the start time): peers that see it change know this server
    /// restarted and wake the groups it has replicas in, without waiting
    /// for a liveness timeout. Default 0.
    pub incarnation: u64,
    /// A batch goes to every peer at least this often, in ticks (empty if
    /// nothing else went there): the liveness beat. Default
    /// [`LIVENESS_INTERVAL`](Self::LIVENESS_INTERVAL).
    pub liveness_interval: u32,
    /// A peer from which nothing arrived for this many ticks counts as
    /// down. Above `liveness_interval`; default
    /// [`LIVENESS_TIMEOUT`](Self::LIVENESS_TIMEOUT). Quiet followers of a
    /// failed leader start their election after this (awake ones after
    /// their election timeout, as ever).
    pub liveness_timeout: u32,
    /// Whether idle groups quiesce (default `true`). Off, every group
    /// ticks and heartbeats on its own, coalesced.
    pub quiesce: bool,
    /// The most groups [`add_group`](MultiRaft::add_group) accepts.
    /// Default [`MAX_GROUPS`](Self::MAX_GROUPS).
    pub max_groups: usize,
}

impl MultiConfig {
    /// Default liveness beat: every 50 ticks (half a second at 10 ms).
    pub const LIVENESS_INTERVAL: u32 = 50;
    /// Default liveness timeout: 150 ticks (three missed beats).
    pub const LIVENESS_TIMEOUT: u32 = 150;
    /// Default cap on groups per server.
    pub const MAX_GROUPS: usize = 1 << 16;

    /// The defaults, for server `id`.
    pub fn new(id: NodeId) -> Self {
        MultiConfig {
            id,
            incarnation: 0,
            liveness_interval: Self::LIVENESS_INTERVAL,
            liveness_timeout: Self::LIVENESS_TIMEOUT,
            quiesce: true,
            max_groups: Self::MAX_GROUPS,
        }
    }

    fn validate(&self) -> Result<(), MultiError> {
        if self.liveness_interval == 0 || self.liveness_timeout <= self.liveness_interval {
            return Err(MultiError::InvalidConfig(
                "liveness_interval must be above 0 and below liveness_timeout",
            ));
        }
        Ok(())
    }
}

/// Everything one server sends another at once: the messages of all
/// their groups, and the liveness beat.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Batch {
    /// The sending server.
    pub from: NodeId,
    /// The receiving server.
    pub to: NodeId,
    /// The sender's [`MultiConfig::incarnation`].
    pub incarnation: u64,
    /// The messages, each with its group, in the order they were made.
    pub messages: Vec<(GroupId, Message)>,
}

/// Something about the peers the application may want to log or act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MultiEvent {
    /// Nothing came from this peer for the liveness timeout.
    PeerDown(NodeId),
    /// A peer counted down was heard from again.
    PeerUp(NodeId),
    /// A peer's incarnation changed: it restarted.
    PeerRestarted(NodeId),
}

/// Counters, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MultiStats {
    /// Batches handed out by [`poll_transmit`](MultiRaft::poll_transmit).
    pub batches_sent: u64,
    /// Messages in them.
    pub messages_sent: u64,
    /// Batches with no message: liveness beats only.
    pub beats_sent: u64,
    /// Batches taken by [`step`](MultiRaft::step).
    pub batches_received: u64,
    /// Messages dropped on arrival: for a group this server does not
    /// have, misaddressed, or refused by the group's node.
    pub messages_dropped: u64,
    /// Group ticks run (a group whose timer was due).
    pub group_ticks: u64,
    /// Times a leader quiesced its group.
    pub quiesced: u64,
    /// Times a group was woken by a peer's liveness change.
    pub woken_by_liveness: u64,
}

/// What [`MultiRaft`] refuses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MultiError {
    /// The configuration is inconsistent.
    #[error("invalid multi-raft configuration: {0}")]
    InvalidConfig(&'static str),
    /// A group with this id is already there.
    #[error("{0} already exists")]
    DuplicateGroup(GroupId),
    /// No group with this id here.
    #[error("no {0} here")]
    UnknownGroup(GroupId),
    /// The node's id is not this server's.
    #[error("the node is {node:?}, this server is {server:?}")]
    WrongServer {
        /// The node's id.
        node: NodeId,
        /// This server's id.
        server: NodeId,
    },
    /// [`MultiConfig::max_groups`] reached.
    #[error("at most {max} groups")]
    TooManyGroups {
        /// The cap.
        max: usize,
    },
    /// A batch for another server.
    #[error("a batch for {to:?} reached {server:?}")]
    Misaddressed {
        /// Whom it was for.
        to: NodeId,
        /// This server.
        server: NodeId,
    },
    /// A batch from a server that is no member of any group here.
    #[error("a batch from {0:?}, which is in no group here")]
    UnknownPeer(NodeId),
    /// A group refused the input (see [`Error`]).
    #[error("{group}: {error}")]
    Group {
        /// The group.
        group: GroupId,
        /// Why.
        error: Error,
    },
    /// A group's storage failed: stop the server.
    #[error("{group}: {error}")]
    Fatal {
        /// The group.
        group: GroupId,
        /// What failed.
        error: FatalError,
    },
    /// Creating a node failed (for callers building groups with `?`).
    #[error(transparent)]
    Node(#[from] Error),
}

#[derive(Debug)]
struct Group<S> {
    node: Node<S>,
    /// This server's tick count when the node had seen none: the node's
    /// clock is `now - base`.
    base: u64,
    /// The entry in the timer queue (an absolute server tick).
    deadline: Option<u64>,
    /// The configuration the peer set was computed from.
    configuration_index: LogIndex,
}

#[derive(Debug, Clone, Copy)]
struct Peer {
    last_heard: u64,
    last_sent: u64,
    live: bool,
    incarnation: Option<u64>,
}

/// All the Raft groups of one server; see the [module docs](self).
#[derive(Debug)]
pub struct MultiRaft<S> {
    config: MultiConfig,
    now: u64,
    groups: BTreeMap<GroupId, Group<S>>,
    /// `(deadline, group)` for every group with a timer.
    timers: BTreeSet<(u64, GroupId)>,
    /// Groups that may have a Ready.
    dirty: BTreeSet<GroupId>,
    /// Messages waiting to go, per server.
    outbox: BTreeMap<NodeId, Vec<(GroupId, Message)>>,
    peers: BTreeMap<NodeId, Peer>,
    /// A configuration changed somewhere: recompute the peers.
    peers_stale: bool,
    events: VecDeque<MultiEvent>,
    stats: MultiStats,
}

/// Brings a group's node up to the server's time.
fn catch_up<S: Storage>(group: &mut Group<S>, now: u64) {
    let node_now = now.saturating_sub(group.base);
    let behind = node_now.saturating_sub(group.node.ticks());
    if behind > 0 {
        group.node.tick_by(behind);
    }
}

/// Puts a group's next timer in the queue.
fn reschedule<S: Storage>(
    timers: &mut BTreeSet<(u64, GroupId)>,
    id: GroupId,
    group: &mut Group<S>,
) {
    let next = group
        .node
        .poll_timeout()
        .map(|t| t.saturating_add(group.base));
    if next != group.deadline {
        if let Some(old) = group.deadline {
            timers.remove(&(old, id));
        }
        if let Some(new) = next {
            timers.insert((new, id));
        }
        group.deadline = next;
    }
}

impl<S: Storage> MultiRaft<S> {
    /// A server with no groups yet.
    pub fn new(config: MultiConfig) -> Result<Self, MultiError> {
        config.validate()?;
        Ok(MultiRaft {
            config,
            now: 0,
            groups: BTreeMap::new(),
            timers: BTreeSet::new(),
            dirty: BTreeSet::new(),
            outbox: BTreeMap::new(),
            peers: BTreeMap::new(),
            peers_stale: false,
            events: VecDeque::new(),
            stats: MultiStats::default(),
        })
    }

    /// Adds a group; its node's clock starts now.
    pub fn add_group(&mut self, id: GroupId, node: Node<S>) -> Result<(), MultiError> {
        if self.groups.contains_key(&id) {
            return Err(MultiError::DuplicateGroup(id));
        }
        if node.id() != self.config.id {
            return Err(MultiError::WrongServer {
                node: node.id(),
                server: self.config.id,
            });
        }
        if self.groups.len() >= self.config.max_groups {
            return Err(MultiError::TooManyGroups {
                max: self.config.max_groups,
            });
        }
        let base = self.now.saturating_sub(node.ticks());
        let configuration_index = node.configuration_index();
        let mut group = Group {
            node,
            base,
            deadline: None,
            configuration_index,
        };
        reschedule(&mut self.timers, id, &mut group);
        self.groups.insert(id, group);
        self.dirty.insert(id);
        self.peers_stale = true;
        self.refresh_peers();
        Ok(())
    }

    /// Removes a group and hands back its node (with its storage).
    pub fn remove_group(&mut self, id: GroupId) -> Option<Node<S>> {
        let group = self.groups.remove(&id)?;
        if let Some(d) = group.deadline {
            self.timers.remove(&(d, id));
        }
        self.dirty.remove(&id);
        self.peers_stale = true;
        self.refresh_peers();
        Some(group.node)
    }

    /// A group's node, to read.
    pub fn group(&self, id: GroupId) -> Option<&Node<S>> {
        self.groups.get(&id).map(|g| &g.node)
    }

    /// A group's node, to drive directly (any [`Node`] method). Its clock
    /// is caught up first; when the guard is dropped, its timer is
    /// rescheduled and its Ready looked for by the next
    /// [`ready`](Self::ready).
    pub fn group_mut(&mut self, id: GroupId) -> Option<GroupMut<'_, S>> {
        let now = self.now;
        let group = self.groups.get_mut(&id)?;
        catch_up(group, now);
        Some(GroupMut {
            id,
            group,
            timers: &mut self.timers,
            dirty: &mut self.dirty,
            peers_stale: &mut self.peers_stale,
        })
    }

    /// Every group, in id order.
    pub fn groups(&self) -> impl Iterator<Item = (GroupId, &Node<S>)> + '_ {
        self.groups.iter().map(|(id, g)| (*id, &g.node))
    }

    /// How many groups there are.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether there is no group.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// How many groups are quiesced now.
    pub fn quiesced(&self) -> usize {
        self.groups
            .values()
            .filter(|g| g.node.is_quiesced())
            .count()
    }

    /// How many groups have a timer running (not quiesced, able to act on
    /// time).
    pub fn ticking(&self) -> usize {
        self.timers.len()
    }

    /// This server's tick count.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The configuration.
    pub fn config(&self) -> &MultiConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> MultiStats {
        self.stats
    }

    /// Every peer (a member of some group here other than this server),
    /// with whether it counts as live.
    pub fn peers(&self) -> impl Iterator<Item = (NodeId, bool)> + '_ {
        self.peers.iter().map(|(id, p)| (*id, p.live))
    }

    /// Whether `peer` counts as live (unknown peers do not).
    pub fn is_live(&self, peer: NodeId) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.live)
    }

    /// The next peer event, oldest first.
    pub fn poll_event(&mut self) -> Option<MultiEvent> {
        self.events.pop_front()
    }

    // ----- inputs -----

    /// One tick of logical time for every group: the groups whose timer
    /// is due act (heartbeats, elections, check-quorum), idle leaders
    /// quiesce, and peers are checked for liveness.
    pub fn tick(&mut self) {
        self.now = self.now.saturating_add(1);
        let now = self.now;
        while let Some(&(deadline, id)) = self.timers.first() {
            if deadline > now {
                break;
            }
            self.timers.pop_first();
            let Some(group) = self.groups.get_mut(&id) else {
                continue;
            };
            group.deadline = None;
            catch_up(group, now);
            self.stats.group_ticks += 1;
            if self.config.quiesce && group.node.role() == Role::Leader {
                let peers = &self.peers;
                let live = |n: NodeId| peers.get(&n).is_none_or(|p| p.live);
                if group.node.quiesce_with(live) {
                    self.stats.quiesced += 1;
                }
            }
            reschedule(&mut self.timers, id, group);
            self.dirty.insert(id);
        }
        self.check_liveness();
    }

    /// Delivers a batch from a peer. A batch for another server or from a
    /// server in no group here is refused whole
    /// ([`MultiError::Misaddressed`], [`MultiError::UnknownPeer`]) and
    /// changes nothing. Otherwise each message goes to its group's node;
    /// messages for a group not here, misaddressed, or refused by the node
    /// are dropped and counted ([`MultiStats::messages_dropped`]). Fails
    /// only with [`MultiError::Fatal`] (a group's storage failed).
    pub fn step(&mut self, batch: Batch) -> Result<(), MultiError> {
        if batch.to != self.config.id {
            return Err(MultiError::Misaddressed {
                to: batch.to,
                server: self.config.id,
            });
        }
        self.refresh_peers();
        let Some(peer) = self.peers.get_mut(&batch.from) else {
            return Err(MultiError::UnknownPeer(batch.from));
        };
        self.stats.batches_received += 1;
        peer.last_heard = self.now;
        let was_live = std::mem::replace(&mut peer.live, true);
        let restarted = peer
            .incarnation
            .replace(batch.incarnation)
            .is_some_and(|old| old != batch.incarnation);
        if restarted {
            self.events.push_back(MultiEvent::PeerRestarted(batch.from));
            self.wake_groups_of(batch.from);
        } else if !was_live {
            self.events.push_back(MultiEvent::PeerUp(batch.from));
            self.wake_groups_of(batch.from);
        }
        let now = self.now;
        for (id, message) in batch.messages {
            let Some(group) = self.groups.get_mut(&id) else {
                self.stats.messages_dropped += 1;
                continue;
            };
            if message.from != batch.from || message.to != self.config.id {
                self.stats.messages_dropped += 1;
                continue;
            }
            catch_up(group, now);
            match group.node.step(message) {
                Ok(StepOutcome::Handled) => {}
                Ok(StepOutcome::Dropped(_)) => self.stats.messages_dropped += 1,
                Err(error) => return Err(MultiError::Fatal { group: id, error }),
            }
            if group.node.configuration_index() != group.configuration_index {
                self.peers_stale = true;
            }
            reschedule(&mut self.timers, id, group);
            self.dirty.insert(id);
        }
        Ok(())
    }

    /// Proposes a command to a group whose node here leads
    /// ([`Node::propose`]); wakes the group.
    pub fn propose(&mut self, id: GroupId, data: Bytes) -> Result<LogIndex, MultiError> {
        let mut group = self.group_mut(id).ok_or(MultiError::UnknownGroup(id))?;
        group
            .propose(data)
            .map_err(|error| MultiError::Group { group: id, error })
    }

    /// Asks a group's leader here for a linearizable read
    /// ([`Node::read_index`]); wakes the group.
    pub fn read_index(&mut self, id: GroupId, read: u64) -> Result<(), MultiError> {
        let mut group = self.group_mut(id).ok_or(MultiError::UnknownGroup(id))?;
        group
            .read_index(read)
            .map_err(|error| MultiError::Group { group: id, error })
    }

    /// Wakes a group (see [`Node::wake`]).
    pub fn wake(&mut self, id: GroupId) -> Result<(), MultiError> {
        let mut group = self.group_mut(id).ok_or(MultiError::UnknownGroup(id))?;
        group.wake();
        Ok(())
    }

    // ----- outputs -----

    /// The next group's [`Ready`], its messages already moved into the
    /// outgoing batches; `None` when no group has one. Persist and apply
    /// it as [`Ready`] says, then hand it to [`advance`](Self::advance).
    pub fn ready(&mut self) -> Result<Option<(GroupId, Ready)>, MultiError> {
        while let Some(id) = self.dirty.pop_first() {
            let Some(group) = self.groups.get_mut(&id) else {
                continue;
            };
            let ready = group
                .node
                .ready()
                .map_err(|error| MultiError::Group { group: id, error })?;
            if let Some(mut ready) = ready {
                for m in ready.take_messages() {
                    self.outbox.entry(m.to).or_default().push((id, m));
                }
                // `advance` looks again; the timer may have moved.
                reschedule(&mut self.timers, id, group);
                return Ok(Some((id, ready)));
            }
            reschedule(&mut self.timers, id, group);
        }
        Ok(None)
    }

    /// Hands back a group's Ready once it is persisted and applied
    /// ([`Node::advance`]).
    pub fn advance(&mut self, id: GroupId, ready: Ready) -> Result<(), MultiError> {
        let mut group = self.group_mut(id).ok_or(MultiError::UnknownGroup(id))?;
        group
            .advance(ready)
            .map_err(|error| MultiError::Group { group: id, error })
    }

    /// The next batch to send: everything queued for one server, or its
    /// liveness beat. Call until `None` after every input.
    pub fn poll_transmit(&mut self) -> Option<Batch> {
        let (to, messages) = self.outbox.pop_first()?;
        if let Some(peer) = self.peers.get_mut(&to) {
            peer.last_sent = self.now;
        }
        self.stats.batches_sent += 1;
        self.stats.messages_sent += messages.len() as u64;
        if messages.is_empty() {
            self.stats.beats_sent += 1;
        }
        Some(Batch {
            from: self.config.id,
            to,
            incarnation: self.config.incarnation,
            messages,
        })
    }

    // ----- plumbing -----

    /// Peers silent too long go down; peers not sent to for a liveness
    /// interval get a beat.
    fn check_liveness(&mut self) {
        self.refresh_peers();
        let now = self.now;
        let timeout = u64::from(self.config.liveness_timeout);
        let interval = u64::from(self.config.liveness_interval);
        let mut down = Vec::new();
        for (id, peer) in &mut self.peers {
            if peer.live && now.saturating_sub(peer.last_heard) >= timeout {
                peer.live = false;
                down.push(*id);
            }
            if now.saturating_sub(peer.last_sent) >= interval {
                self.outbox.entry(*id).or_default();
            }
        }
        for id in down {
            self.events.push_back(MultiEvent::PeerDown(id));
            self.wake_groups_of(id);
        }
    }

    /// Wakes every quiesced group with a replica on `peer`.
    fn wake_groups_of(&mut self, peer: NodeId) {
        let now = self.now;
        for (id, group) in &mut self.groups {
            if !group.node.is_quiesced() || !group.node.configuration().contains(peer) {
                continue;
            }
            catch_up(group, now);
            group.node.wake();
            self.stats.woken_by_liveness += 1;
            reschedule(&mut self.timers, *id, group);
            self.dirty.insert(*id);
        }
    }

    /// Recomputes the peer set if a configuration changed.
    fn refresh_peers(&mut self) {
        if !self.peers_stale {
            return;
        }
        self.peers_stale = false;
        let me = self.config.id;
        let mut members = BTreeSet::new();
        for group in self.groups.values_mut() {
            group.configuration_index = group.node.configuration_index();
            members.extend(group.node.configuration().members().filter(|m| *m != me));
        }
        let now = self.now;
        self.peers.retain(|id, _| members.contains(id));
        for id in members {
            // A new peer gets a liveness timeout to show up.
            self.peers.entry(id).or_insert(Peer {
                last_heard: now,
                last_sent: now.saturating_sub(u64::from(self.config.liveness_interval)),
                live: true,
                incarnation: None,
            });
        }
        self.outbox.retain(|id, _| self.peers.contains_key(id));
    }
}

/// A group's node borrowed from its [`MultiRaft`]
/// ([`group_mut`](MultiRaft::group_mut)); dereferences to the [`Node`].
/// Dropping it reschedules the group's timer and queues the group for
/// [`ready`](MultiRaft::ready).
#[derive(Debug)]
pub struct GroupMut<'a, S: Storage> {
    id: GroupId,
    group: &'a mut Group<S>,
    timers: &'a mut BTreeSet<(u64, GroupId)>,
    dirty: &'a mut BTreeSet<GroupId>,
    peers_stale: &'a mut bool,
}

impl<S: Storage> GroupMut<'_, S> {
    /// The group's id.
    pub fn id(&self) -> GroupId {
        self.id
    }
}

impl<S: Storage> Deref for GroupMut<'_, S> {
    type Target = Node<S>;

    fn deref(&self) -> &Node<S> {
        &self.group.node
    }
}

impl<S: Storage> DerefMut for GroupMut<'_, S> {
    fn deref_mut(&mut self) -> &mut Node<S> {
        &mut self.group.node
    }
}

impl<S: Storage> Drop for GroupMut<'_, S> {
    fn drop(&mut self) {
        reschedule(self.timers, self.id, self.group);
        self.dirty.insert(self.id);
        if self.group.node.configuration_index() != self.group.configuration_index {
            *self.peers_stale = true;
        }
    }
}
