//! Quiescence: a group with nothing to do stops its timers, so that many
//! idle groups on one server cost nothing (the idea CockroachDB and TiKV
//! apply to their ranges and regions).
//!
//! A leader whose every live follower holds its whole log, all committed,
//! applied and durable, with no read, transfer, catch-up or configuration
//! change under way, may [`quiesce`](Node::quiesce): it sends one last
//! heartbeat marked `quiesce` (carrying the final commit index) and stops
//! heartbeating and checking its quorum. A follower whose log is complete
//! when that heartbeat arrives stops its election timer. A quiesced node
//! still counts the ticks it is given, so leases end on time; it only
//! stops acting on them ([`poll_timeout`](Node::poll_timeout) is `None`).
//!
//! Anything that needs the group wakes it: every message of the group but
//! a heartbeat answer wakes the node it reaches (so a new leader, a
//! candidate or a lost follower is never missed), and a proposal, a read,
//! a transfer or a configuration change wakes a leader. What a node cannot
//! see on its own is the failure of the server it follows, since a quiet
//! leader and a dead one look alike: the application watches its peers
//! (the [`multi`](crate::multi) layer does, with one liveness beat per
//! server pair) and calls [`wake`](Node::wake) on the groups of a server
//! that went down, came back or restarted.
//!
//! Safety never depends on it: quiescence only stops timers, and no timer
//! decides anything Raft's safety rests on. Leases stay sound because the
//! ticks keep counting: a leader's lease ends after the same number of
//! ticks whether it was quiet or not, and a follower's memory of its
//! leader fades at the same rate, so it refuses votes exactly as long as
//! an awake follower would.

use super::Node;
use crate::ready::Role;
use crate::storage::Storage;
use crate::types::NodeId;

impl<S: Storage> Node<S> {
    /// Whether this node's timers are stopped ([`quiesce`](Node::quiesce)
    /// or a leader's quiescing heartbeat).
    pub fn is_quiesced(&self) -> bool {
        self.quiesced
    }

    /// Whether a leader could [`quiesce`](Node::quiesce) now, counting
    /// only the followers `live` says are up: every live follower's log
    /// matches the whole of the leader's, a quorum of voters is among
    /// them, the log is all committed, durable and applied, and no read,
    /// leadership transfer, catch-up or joint configuration is under way.
    pub fn can_quiesce(&self, live: impl Fn(NodeId) -> bool) -> bool {
        if self.role != Role::Leader
            || self.quiesced
            || self.transferee.is_some()
            || !self.catching_up.is_empty()
            || !self.pending_reads.is_empty()
            || !self.read_states.is_empty()
            || !self.in_flight.is_empty()
            || self.configuration.is_joint()
        {
            return false;
        }
        let last = self.log.last_index();
        if self.log.committed != last || self.log.persisted() != last || self.log.applied != last {
            return false;
        }
        let caught_up = |id: NodeId| {
            self.progress
                .iter()
                .any(|p| p.id == id && p.match_index == last)
        };
        let live_complete = self
            .progress
            .iter()
            .all(|p| !live(p.id) || p.match_index == last);
        let id = self.id;
        live_complete
            && self
                .configuration
                .has_quorum(|v| v == id || (live(v) && caught_up(v)))
    }

    /// Stops a leader's timers if [`can_quiesce`](Node::can_quiesce)
    /// allows it with every follower counted live; see
    /// [`quiesce_with`](Node::quiesce_with).
    pub fn quiesce(&mut self) -> bool {
        self.quiesce_with(|_| true)
    }

    /// Stops a leader's timers if [`can_quiesce`](Node::can_quiesce)
    /// allows it with `live` saying which followers are up: queues one
    /// heartbeat marked `quiesce` to every follower (live or not) for the
    /// next [`Ready`](crate::Ready) and returns `true`; otherwise changes
    /// nothing and returns `false`. A follower left out as down is woken
    /// when it comes back (call [`wake`](Node::wake) then: the leader
    /// heartbeats it at once).
    pub fn quiesce_with(&mut self, live: impl Fn(NodeId) -> bool) -> bool {
        if !self.can_quiesce(live) {
            return false;
        }
        trace_event!(
            debug,
            node = self.id.0,
            term = self.term.0,
            index = self.log.last_index().0,
            "quiesced (leader)"
        );
        self.broadcast_heartbeat(true);
        self.quiesced = true;
        true
    }

    /// A follower handling a quiescing heartbeat from its leader: stops
    /// its timer if its log is complete (nothing past the leader's commit
    /// index, which it now holds).
    pub(super) fn follower_quiesce(&mut self, from: NodeId) {
        let complete = self.log.committed == self.log.last_index();
        if self.role == Role::Follower
            && self.leader == Some(from)
            && complete
            && !self.log.is_restoring()
            && self.incoming_snapshot.is_none()
        {
            trace_event!(
                debug,
                node = self.id.0,
                term = self.term.0,
                peer = from.0,
                index = self.log.committed.0,
                "quiesced (follower)"
            );
            self.quiesced = true;
        }
    }

    /// Restarts a quiesced node's timers (nothing if it is awake). A
    /// leader heartbeats every follower at once and starts its
    /// check-quorum interval afresh (the quiet time says nothing against
    /// its followers). A follower keeps the time since it last heard from
    /// its leader, capped at one election timeout: if that is past, it
    /// campaigns once its randomized timeout is reached (so many groups
    /// woken together do not all campaign at the same tick); if not, it
    /// still honours the leader's lease. Every message but a heartbeat
    /// answer wakes a node by itself; call this when the server a group
    /// follows or leads went down, came back or restarted.
    pub fn wake(&mut self) {
        if !self.quiesced {
            return;
        }
        self.quiesced = false;
        trace_event!(debug, node = self.id.0, term = self.term.0, "woken");
        if self.role == Role::Leader {
            self.election_elapsed = 0;
            self.heartbeat_elapsed = 0;
            for p in &mut self.progress {
                p.recent_active = true;
            }
            self.broadcast_heartbeat(false);
        } else {
            self.resume_follower_timer();
        }
    }

    /// A follower's election timer after a quiet spell: the time since it
    /// heard from its leader, capped at one election timeout.
    pub(super) fn resume_follower_timer(&mut self) {
        self.election_elapsed = self.election_elapsed.min(self.config.election_tick);
    }
}
