//! Node configuration (timing, limits, the election seed) and cluster
//! membership.

use crate::error::Error;
use crate::types::NodeId;
use std::collections::BTreeSet;

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// Tuning of one node. Time is counted in ticks: the application calls
/// [`Node::tick`](crate::Node::tick) at a fixed interval of its choosing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Config {
    /// This node's id; must be a voter or learner of the stored configuration.
    pub id: NodeId,
    /// A follower that hears nothing from a leader for a random number of
    /// ticks in `[election_tick, 2 * election_tick)` starts an election.
    pub election_tick: u32,
    /// A leader sends heartbeats every `heartbeat_tick` ticks. Must be
    /// smaller than `election_tick` (the paper suggests an order of magnitude).
    pub heartbeat_tick: u32,
    /// Seed of the election-timeout randomization, so runs replay exactly.
    /// Give every node a different seed (the node id is mixed in as well).
    pub seed: u64,
    /// Upper bound on the entry bytes in one AppendEntries (at least one
    /// entry is always sent).
    pub max_size_per_msg: u64,
    /// How many AppendEntries may be unacknowledged per follower while it
    /// is replicating (pipelining window).
    pub max_inflight_msgs: usize,
    /// Run a pre-vote round before an election (thesis §9.6), so a node
    /// that was partitioned away cannot disrupt a healthy leader when it
    /// comes back.
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum within an
    /// election timeout; followers that hear from a leader ignore
    /// RequestVote until their election timeout passes.
    pub check_quorum: bool,
    /// Lease reads ([`Node::read_lease`](crate::Node::read_lease)) assume
    /// that over one election timeout no two nodes' tick clocks drift apart
    /// by more than this many ticks (plus one tick of phase). The lease
    /// lasts `election_tick - max_clock_drift_ticks - 1` ticks from the
    /// sending of a heartbeat a quorum answered.
    pub max_clock_drift_ticks: u32,
    /// Upper bound on the snapshot bytes in one InstallSnapshot chunk.
    pub max_snapshot_chunk_bytes: u64,
}

impl Config {
    /// A configuration with the usual defaults: election after 10-20 ticks,
    /// heartbeat every 2, 1 MiB messages, 256 in flight.
    #[must_use]
    pub fn new(id: NodeId) -> Self {
        Config {
            id,
            election_tick: 10,
            heartbeat_tick: 2,
            seed: 0,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            pre_vote: false,
            check_quorum: false,
            max_clock_drift_ticks: 3,
            max_snapshot_chunk_bytes: 1 << 20,
        }
    }

    /// Checks the invariants between fields.
    pub fn validate(&self) -> Result<(), Error> {
        if self.heartbeat_tick == 0 {
            return Err(Error::InvalidConfig("heartbeat_tick must be at least 1"));
        }
        if self.election_tick <= self.heartbeat_tick {
            return Err(Error::InvalidConfig(
                "election_tick must be greater than heartbeat_tick",
            ));
        }
        if self.max_clock_drift_ticks.saturating_add(1) >= self.election_tick {
            return Err(Error::InvalidConfig(
                "max_clock_drift_ticks must leave a lease shorter than election_tick",
            ));
        }
        if self.max_inflight_msgs == 0 {
            return Err(Error::InvalidConfig("max_inflight_msgs must be at least 1"));
        }
        if self.max_snapshot_chunk_bytes == 0 {
            return Err(Error::InvalidConfig(
                "max_snapshot_chunk_bytes must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Cluster membership: the voters, whose majority decides elections and
/// commitment, and learners, which receive the log but do not vote.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Configuration {
    voters: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
}

impl Configuration {
    /// A configuration of voters only.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Configuration {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    /// Adds learners (non-voting members). A node cannot be both.
    #[must_use]
    pub fn with_learners(mut self, learners: impl IntoIterator<Item = NodeId>) -> Self {
        self.learners = learners
            .into_iter()
            .filter(|l| !self.voters.contains(l))
            .collect();
        self
    }

    /// The voting members.
    pub fn voters(&self) -> &BTreeSet<NodeId> {
        &self.voters
    }

    /// The non-voting members.
    pub fn learners(&self) -> &BTreeSet<NodeId> {
        &self.learners
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Every member, voters first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// The number of voters that make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Whether the voters for which `granted` is true form a majority.
    pub fn has_quorum(&self, mut granted: impl FnMut(NodeId) -> bool) -> bool {
        self.voters.iter().filter(|v| granted(**v)).count() >= self.quorum()
    }

    /// The highest value that a majority of voters has reached, given each
    /// voter's value (a match index, say). Zero for an empty configuration.
    pub(crate) fn committed_by_majority<T: Ord + Copy + Default>(
        &self,
        mut value_of: impl FnMut(NodeId) -> T,
    ) -> T {
        // Small clusters are the norm: keep the values on the stack.
        let mut buf: [T; 9] = [T::default(); 9];
        let mut heap = Vec::new();
        let values: &mut [T] = if self.voters.len() <= buf.len() {
            for (slot, v) in buf.iter_mut().zip(&self.voters) {
                *slot = value_of(*v);
            }
            &mut buf[..self.voters.len()]
        } else {
            heap.extend(self.voters.iter().map(|v| value_of(*v)));
            &mut heap
        };
        if values.is_empty() {
            return T::default();
        }
        values.sort_unstable_by(|a, b| b.cmp(a));
        values.get(self.quorum() - 1).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(n: u64) -> Configuration {
        Configuration::new((1..=n).map(NodeId))
    }

    #[test]
    fn majority_value_is_the_quorum_th_largest() {
        // Five voters with matches 5,4,3,2,1: three of them have reached 3.
        let c = conf(5);
        assert_eq!(c.committed_by_majority(|id| 6 - id.0), 3);
        // Four voters need three: matches 4,3,2,1 -> 2.
        let c = conf(4);
        assert_eq!(c.committed_by_majority(|id| 5 - id.0), 2);
        assert_eq!(Configuration::default().committed_by_majority(|_| 7u64), 0);
        // Larger than the stack buffer.
        let c = conf(11);
        assert_eq!(c.committed_by_majority(|id| id.0), 6);
    }

    #[test]
    fn quorum_sizes() {
        assert_eq!(conf(1).quorum(), 1);
        assert_eq!(conf(3).quorum(), 2);
        assert_eq!(conf(4).quorum(), 3);
        assert!(conf(3).has_quorum(|id| id.0 != 2));
        assert!(!conf(3).has_quorum(|id| id.0 == 2));
    }

    #[test]
    fn learners_are_not_voters() {
        let c = conf(3).with_learners([NodeId(3), NodeId(4)]);
        assert_eq!(c.learners().len(), 1);
        assert!(c.contains(NodeId(4)));
        assert_eq!(c.quorum(), 2);
    }
}
