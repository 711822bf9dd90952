//! Node configuration (timing, limits, the election seed) and cluster
//! membership.

use crate::error::Error;
use crate::types::{LogIndex, NodeId};
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
    /// Followers acknowledge appended entries twice (thesis §10.2.1): at
    /// once that they received and matched them
    /// ([`AppendOutcome::Received`](crate::AppendOutcome::Received)), which
    /// lets the leader's in-flight window slide at network pace, and once
    /// they are durable ([`AppendOutcome::Success`](crate::AppendOutcome::Success)),
    /// which alone counts towards commitment. Worth it when storage writes
    /// take longer than a round trip and the window
    /// ([`max_inflight_msgs`](Config::max_inflight_msgs)) fills meanwhile;
    /// off by default, since it doubles the append responses and the
    /// default window of 256 rarely fills.
    #[cfg_attr(feature = "serde", serde(default))]
    pub early_append_ack: bool,
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
    /// [`Node::add_voter`](crate::Node::add_voter) promotes a learner once a
    /// replication round lasts less than an election timeout, and gives up
    /// after this many rounds (thesis §4.2.1 suggests 10).
    #[cfg_attr(feature = "serde", serde(default = "default_catch_up_rounds"))]
    pub catch_up_rounds: u32,
    /// [`Node::add_voter`](crate::Node::add_voter) also gives up on a
    /// learner that acknowledges nothing (no entry, no snapshot chunk) for
    /// this many election timeouts (`election_tick`s): it is unavailable,
    /// and without this bound its first round would never end.
    #[cfg_attr(feature = "serde", serde(default = "default_catch_up_stall_timeouts"))]
    pub catch_up_stall_timeouts: u32,
    /// The index up to which the state machine already holds the log, for
    /// a restart: the node hands out committed entries only after it. Set
    /// it from what your state machine recorded durably (as raft-rs
    /// `Config::applied`). Zero (the default) means "what the stored
    /// snapshot holds". It must lie between the stored snapshot's index
    /// and the stored commit index, or [`Node::new`](crate::Node::new)
    /// fails with [`Error::AppliedOutOfRange`]: below the snapshot the
    /// entries are gone, and above the commit index nothing proves they
    /// committed. So make the hard state durable before (or with) the
    /// applied index that covers its commit.
    #[cfg_attr(feature = "serde", serde(default))]
    pub applied: LogIndex,
    /// The largest command [`Node::propose`](crate::Node::propose) accepts,
    /// in payload bytes; larger ones fail with [`Error::EntryTooLarge`].
    /// Keep it below what your transport carries in one message.
    #[cfg_attr(feature = "serde", serde(default = "no_limit"))]
    pub max_entry_bytes: u64,
    /// A leader refuses commands ([`Error::UncommittedLimit`]) while the
    /// payload bytes it appended in its term and has not yet committed
    /// would exceed this (etcd-raft `MaxUncommittedEntriesSize`): a flood
    /// of proposals to a leader that cannot commit cannot grow its memory
    /// without bound. A single command larger than the limit is accepted
    /// when nothing is uncommitted, so no command is refused forever; the
    /// leader's own empty entries always are. Unlimited by default.
    #[cfg_attr(feature = "serde", serde(default = "no_limit"))]
    pub max_uncommitted_bytes: u64,
    /// The largest snapshot a follower buffers from a leader's chunks, in
    /// bytes: a chunk that would take the buffer beyond it is dropped
    /// ([`DropReason::SnapshotTooLarge`](crate::DropReason::SnapshotTooLarge))
    /// with the partial snapshot, so neither a leader nor a forged message
    /// can make a follower buffer without bound. Set it above the largest
    /// snapshot your state machine produces. Default 1 GiB.
    #[cfg_attr(feature = "serde", serde(default = "default_max_snapshot_bytes"))]
    pub max_snapshot_bytes: u64,
}

/// [`Config::max_snapshot_bytes`] unless set.
pub const DEFAULT_MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

#[cfg(feature = "serde")]
fn default_max_snapshot_bytes() -> u64 {
    DEFAULT_MAX_SNAPSHOT_BYTES
}

#[cfg(feature = "serde")]
fn no_limit() -> u64 {
    u64::MAX
}

/// Configurations serialized before catch-up existed get the defaults.
#[cfg(feature = "serde")]
fn default_catch_up_rounds() -> u32 {
    Config::new(NodeId(0)).catch_up_rounds
}

#[cfg(feature = "serde")]
fn default_catch_up_stall_timeouts() -> u32 {
    Config::new(NodeId(0)).catch_up_stall_timeouts
}

impl Config {
    /// A configuration with the usual defaults: election after 10-20 ticks,
    /// heartbeat every 2, 1 MiB messages, 256 in flight, no proposal caps,
    /// nothing applied beyond the snapshot.
    #[must_use]
    pub fn new(id: NodeId) -> Self {
        Config {
            id,
            election_tick: 10,
            heartbeat_tick: 2,
            seed: 0,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            early_append_ack: false,
            pre_vote: false,
            check_quorum: false,
            max_clock_drift_ticks: 3,
            max_snapshot_chunk_bytes: 1 << 20,
            catch_up_rounds: 10,
            catch_up_stall_timeouts: 5,
            applied: LogIndex::ZERO,
            max_entry_bytes: u64::MAX,
            max_uncommitted_bytes: u64::MAX,
            max_snapshot_bytes: DEFAULT_MAX_SNAPSHOT_BYTES,
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
        if self.catch_up_rounds == 0 {
            return Err(Error::InvalidConfig("catch_up_rounds must be at least 1"));
        }
        if self.max_snapshot_bytes == 0 {
            return Err(Error::InvalidConfig(
                "max_snapshot_bytes must be at least 1",
            ));
        }
        if self.max_entry_bytes == 0 {
            return Err(Error::InvalidConfig("max_entry_bytes must be at least 1"));
        }
        if self.catch_up_stall_timeouts == 0 {
            return Err(Error::InvalidConfig(
                "catch_up_stall_timeouts must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Cluster membership: the voters, whose majority decides elections and
/// commitment, and learners, which receive the log but do not vote. Some
/// voters may be *witnesses* (see [`with_witnesses`](Configuration::with_witnesses)):
/// they vote and acknowledge appends like any voter, but never lead and
/// keep no state-machine data.
///
/// During a membership change by joint consensus (thesis §4.3) the
/// configuration is *joint*: it also holds the outgoing voters, and
/// decisions need a majority of the (incoming) voters **and** a majority of
/// the outgoing voters.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Configuration {
    voters: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
    /// The voters of C_old while joint; empty otherwise.
    #[cfg_attr(feature = "serde", serde(default))]
    outgoing: BTreeSet<NodeId>,
    /// The voters (of C_new or C_old) that are witnesses.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "BTreeSet::is_empty")
    )]
    witnesses: BTreeSet<NodeId>,
}

impl Configuration {
    /// A configuration of voters only.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Configuration {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
            outgoing: BTreeSet::new(),
            witnesses: BTreeSet::new(),
        }
    }

    /// The joint configuration C_old,new on the way from `self` (C_old) to
    /// `target` (C_new): `target`'s voters and learners, with `self`'s
    /// voters as the outgoing majority. Learners of `target` that vote in
    /// C_old keep voting until the change completes. Witnesses of either
    /// stay witnesses while they vote.
    #[must_use]
    pub fn joint_to(&self, target: &Configuration) -> Configuration {
        let outgoing = self.voters.clone();
        let learners = target
            .learners
            .iter()
            .copied()
            .filter(|l| !target.voters.contains(l))
            .collect();
        let witnesses = self
            .witnesses
            .iter()
            .filter(|w| outgoing.contains(w))
            .chain(&target.witnesses)
            .copied()
            .collect();
        Configuration {
            voters: target.voters.clone(),
            learners,
            outgoing,
            witnesses,
        }
    }

    /// C_new: this configuration without its outgoing voters.
    #[must_use]
    pub fn leave_joint(&self) -> Configuration {
        Configuration {
            voters: self.voters.clone(),
            learners: self.learners.clone(),
            outgoing: BTreeSet::new(),
            witnesses: self.witnesses.intersection(&self.voters).copied().collect(),
        }
    }

    /// Whether this is a joint configuration C_old,new.
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// The outgoing voters (C_old's) while joint; empty otherwise.
    pub fn outgoing(&self) -> &BTreeSet<NodeId> {
        &self.outgoing
    }

    /// Whether `id` votes: a voter of C_new or, while joint, of C_old.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing.contains(&id)
    }

    /// Every voter, C_new's and C_old's, each once.
    pub fn all_voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters
            .iter()
            .copied()
            .chain(self.outgoing.difference(&self.voters).copied())
    }

    /// Adds learners (non-voting members). A node cannot be both.
    #[must_use]
    pub fn with_learners(mut self, learners: impl IntoIterator<Item = NodeId>) -> Self {
        self.learners = learners
            .into_iter()
            .filter(|l| !self.voters.contains(l) && !self.outgoing.contains(l))
            .collect();
        self
    }

    /// Adds witnesses: voters that vote and acknowledge appends like any
    /// voter (they count towards election and commit quorums) but never
    /// campaign or lead, receive entries with their payload stripped
    /// (index and term kept, configuration entries whole) and snapshots
    /// without data. For 2+1 deployments: two data nodes and a cheap third
    /// vote. Each id that is not a voter yet (of C_new or, while joint, of
    /// C_old) becomes a voter of C_new, and stops being a learner.
    ///
    /// See the crate's `witness` documentation for the safety argument.
    #[must_use]
    pub fn with_witnesses(mut self, witnesses: impl IntoIterator<Item = NodeId>) -> Self {
        for w in witnesses {
            if !self.outgoing.contains(&w) {
                self.voters.insert(w);
            }
            self.learners.remove(&w);
            self.witnesses.insert(w);
        }
        self
    }

    /// Whether `id` is a witness: a voter that never leads and keeps no
    /// state-machine data.
    pub fn is_witness(&self, id: NodeId) -> bool {
        self.witnesses.contains(&id)
    }

    /// The witnesses (voters of C_new or C_old that never lead).
    pub fn witnesses(&self) -> &BTreeSet<NodeId> {
        &self.witnesses
    }

    /// The voting members.
    pub fn voters(&self) -> &BTreeSet<NodeId> {
        &self.voters
    }

    /// The non-voting members.
    pub fn learners(&self) -> &BTreeSet<NodeId> {
        &self.learners
    }

    /// Whether `id` is a voter (of C_new or C_old) or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    /// Every member, voters first, each once.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.all_voters().chain(
            self.learners
                .iter()
                .copied()
                .filter(|l| !self.outgoing.contains(l)),
        )
    }

    /// The number of voters that make a majority (of C_new while joint).
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Whether the voters for which `granted` is true form a majority; while
    /// joint, a majority of C_new and a majority of C_old.
    pub fn has_quorum(&self, mut granted: impl FnMut(NodeId) -> bool) -> bool {
        let majority = |set: &BTreeSet<NodeId>, granted: &mut dyn FnMut(NodeId) -> bool| {
            set.iter().filter(|v| granted(**v)).count() > set.len() / 2
        };
        majority(&self.voters, &mut granted)
            && (self.outgoing.is_empty() || majority(&self.outgoing, &mut granted))
    }

    /// The highest value that a majority of voters has reached, given each
    /// voter's value (a match index, say); while joint, the lower of C_new's
    /// and C_old's. Zero for an empty configuration.
    pub(crate) fn committed_by_majority<T: Ord + Copy + Default>(
        &self,
        mut value_of: impl FnMut(NodeId) -> T,
    ) -> T {
        let new = majority_value(&self.voters, &mut value_of);
        if self.outgoing.is_empty() {
            return new;
        }
        new.min(majority_value(&self.outgoing, &mut value_of))
    }
}

/// Configuration entries are log entries whose data starts with this tag
/// (the [`Entry`](crate::Entry) layout stays three fields, so every
/// existing `Storage` persists them unchanged); [`Node::propose`]
/// refuses commands that start with it.
///
/// [`Node::propose`]: crate::Node::propose
pub const CONFIGURATION_TAG: &[u8] = b"\xffquorate/configuration\x00";

impl Configuration {
    /// The payload of a configuration entry: the tag, then the voter,
    /// learner and outgoing sets, each as a u32 count and u64 ids (big
    /// endian), then the witness set in the same form, present only when
    /// not empty: a configuration without witnesses encodes exactly as
    /// before witnesses existed, so logs written earlier read unchanged.
    ///
    /// Public so that a storage keeping its own snapshot files can store a
    /// snapshot's configuration in the same format (read it back with
    /// [`decode`](Configuration::decode)).
    pub fn encode(&self) -> bytes::Bytes {
        let mut out = Vec::with_capacity(CONFIGURATION_TAG.len() + 12);
        out.extend_from_slice(CONFIGURATION_TAG);
        let witnesses = (!self.witnesses.is_empty()).then_some(&self.witnesses);
        for set in [&self.voters, &self.learners, &self.outgoing]
            .into_iter()
            .chain(witnesses)
        {
            out.extend_from_slice(&(set.len() as u32).to_be_bytes());
            for id in set {
                out.extend_from_slice(&id.0.to_be_bytes());
            }
        }
        out.into()
    }

    /// Reads what [`encode`](Configuration::encode) wrote (a configuration
    /// entry's payload); `None` for any other data, including truncated or
    /// contradictory sets.
    pub fn decode(data: &[u8]) -> Option<Configuration> {
        let mut rest = data.strip_prefix(CONFIGURATION_TAG)?;
        let mut sets: [BTreeSet<NodeId>; 4] = Default::default();
        for (i, set) in sets.iter_mut().enumerate() {
            // The witness set is optional (absent in older entries).
            if i == 3 && rest.is_empty() {
                break;
            }
            let (count, tail) = rest.split_first_chunk::<4>()?;
            rest = tail;
            for _ in 0..u32::from_be_bytes(*count) {
                let (id, tail) = rest.split_first_chunk::<8>()?;
                rest = tail;
                set.insert(NodeId(u64::from_be_bytes(*id)));
            }
        }
        let [voters, learners, outgoing, witnesses] = sets;
        let configuration = Configuration::from_sets(voters, learners, outgoing, witnesses)?;
        rest.is_empty().then_some(configuration)
    }

    /// A configuration from its four sets, `None` if they contradict each
    /// other (a witness that is not a voter).
    pub(crate) fn from_sets(
        voters: BTreeSet<NodeId>,
        learners: BTreeSet<NodeId>,
        outgoing: BTreeSet<NodeId>,
        witnesses: BTreeSet<NodeId>,
    ) -> Option<Configuration> {
        let mut learners = learners;
        learners.retain(|l| !voters.contains(l));
        let c = Configuration {
            voters,
            learners,
            outgoing,
            witnesses,
        };
        c.witnesses.iter().all(|w| c.is_voter(*w)).then_some(c)
    }

    /// The target of a membership change from `self`, with witness status
    /// kept: a witness stays a witness for as long as it is a member (its
    /// log holds no payloads, so it can never become a data node), and a
    /// data node never becomes a witness in place (the leader would strip
    /// the payloads of entries the node may still need as a data node if
    /// the change were rolled back). Replace the node instead.
    pub(crate) fn keep_witnesses(&self, target: Configuration) -> Result<Configuration, Error> {
        if target
            .witnesses
            .iter()
            .any(|w| self.contains(*w) && !self.is_witness(*w))
        {
            return Err(Error::InvalidConfigurationChange(
                "a data node cannot become a witness in place; add a new witness instead",
            ));
        }
        if self.witnesses.iter().any(|w| target.learners.contains(w)) {
            return Err(Error::InvalidConfigurationChange(
                "a witness cannot become a learner; remove it instead",
            ));
        }
        let kept: Vec<NodeId> = self
            .witnesses
            .iter()
            .copied()
            .filter(|w| target.voters.contains(w))
            .collect();
        Ok(target.with_witnesses(kept))
    }
}

/// The highest value a majority of `voters` has reached.
fn majority_value<T: Ord + Copy + Default>(
    voters: &BTreeSet<NodeId>,
    value_of: &mut impl FnMut(NodeId) -> T,
) -> T {
    // Small clusters are the norm: keep the values on the stack.
    let mut buf: [T; 9] = [T::default(); 9];
    let mut heap = Vec::new();
    let values: &mut [T] = if voters.len() <= buf.len() {
        for (slot, v) in buf.iter_mut().zip(voters) {
            *slot = value_of(*v);
        }
        &mut buf[..voters.len()]
    } else {
        heap.extend(voters.iter().map(|v| value_of(*v)));
        &mut heap
    };
    if values.is_empty() {
        return T::default();
    }
    values.sort_unstable_by(|a, b| b.cmp(a));
    values.get(voters.len() / 2).copied().unwrap_or_default()
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
    fn joint_quorum_needs_both_majorities() {
        // C_old = {1,2,3}, C_new = {3,4,5}.
        let joint = conf(3).joint_to(&Configuration::new([3, 4, 5].map(NodeId)));
        assert!(joint.is_joint());
        // {1,2,3}: majority of C_old, one of C_new: not enough.
        assert!(!joint.has_quorum(|id| id.0 <= 3));
        // {3,4,5}: majority of C_new only.
        assert!(!joint.has_quorum(|id| id.0 >= 3));
        // {2,3,4}: two of each.
        assert!(joint.has_quorum(|id| (2..=4).contains(&id.0)));
        // Match indexes 1:9 2:8 3:7 4:6 5:5: C_old's majority reached 8,
        // C_new's reached 6, so 6 is committed.
        assert_eq!(joint.committed_by_majority(|id| 10 - id.0), 6);
        assert_eq!(joint.members().count(), 5);
        assert_eq!(
            joint.leave_joint(),
            Configuration::new([3, 4, 5].map(NodeId))
        );
    }

    #[test]
    fn configuration_entries_round_trip() {
        let c =
            conf(3).joint_to(&Configuration::new([2, 4].map(NodeId)).with_learners([NodeId(9)]));
        let data = c.encode();
        assert_eq!(Configuration::decode(&data), Some(c));
        assert_eq!(Configuration::decode(b"set x 1"), None);
        assert_eq!(Configuration::decode(&data[..data.len() - 1]), None);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn configs_serialized_before_catch_up_get_its_defaults() {
        let config = Config::new(NodeId(3));
        let mut json = serde_json::to_value(&config).unwrap();
        let fields = json.as_object_mut().unwrap();
        assert!(fields.remove("catch_up_rounds").is_some());
        assert!(fields.remove("catch_up_stall_timeouts").is_some());
        let read: Config = serde_json::from_value(json).unwrap();
        assert_eq!(read, config);
        assert_eq!(
            (read.catch_up_rounds, read.catch_up_stall_timeouts),
            (10, 5)
        );
    }

    #[test]
    fn learners_are_not_voters() {
        let c = conf(3).with_learners([NodeId(3), NodeId(4)]);
        assert_eq!(c.learners().len(), 1);
        assert!(c.contains(NodeId(4)));
        assert_eq!(c.quorum(), 2);
    }

    #[test]
    fn witnesses_are_voters_that_count_towards_quorums() {
        // 2+1: data nodes 1 and 2, witness 3.
        let c = conf(2).with_witnesses([NodeId(3)]);
        assert_eq!(c.voters().len(), 3);
        assert!(c.is_witness(NodeId(3)) && !c.is_witness(NodeId(1)));
        assert_eq!(c.quorum(), 2);
        // One data node and the witness are a majority.
        assert!(c.has_quorum(|id| id.0 != 2));
        // Match indexes 1:9 2:1 3:7: two of three have 7.
        assert_eq!(
            c.committed_by_majority(|id| [9, 1, 7][id.0 as usize - 1]),
            7
        );
        // A learner named a witness becomes a voter.
        let c = conf(2)
            .with_learners([NodeId(3)])
            .with_witnesses([NodeId(3)]);
        assert!(c.learners().is_empty() && c.is_voter(NodeId(3)));
    }

    #[test]
    fn witnesses_stay_witnesses_through_joint_changes() {
        let old = conf(2).with_witnesses([NodeId(3)]);
        // Replace witness 3 by witness 4: 3 stays a witness while it votes
        // in C_old, 4 is one in C_new.
        let target = old.keep_witnesses(conf(2).with_witnesses([NodeId(4)]));
        let target = target.unwrap();
        assert!(!target.is_witness(NodeId(3)));
        let joint = old.joint_to(&target);
        assert!(joint.is_witness(NodeId(3)) && joint.is_witness(NodeId(4)));
        assert_eq!(joint.leave_joint().witnesses().len(), 1);
        assert!(joint.leave_joint().is_witness(NodeId(4)));
        // A target that forgets the flag keeps it.
        let kept = old.keep_witnesses(conf(3)).unwrap();
        assert!(kept.is_witness(NodeId(3)));
        // No in-place switches either way.
        assert!(
            old.keep_witnesses(conf(3).with_witnesses([NodeId(1)]))
                .is_err()
        );
        assert!(
            old.keep_witnesses(conf(2).with_learners([NodeId(3)]))
                .is_err()
        );
    }

    #[test]
    fn configuration_entries_with_witnesses_round_trip_and_old_ones_still_read() {
        let c = conf(3).joint_to(&conf(2).with_witnesses([NodeId(5)]));
        assert_eq!(Configuration::decode(&c.encode()), Some(c));
        // Hand-assembled entry as written before witnesses existed:
        // voters {1, 2}, no learners, no outgoing.
        let mut old = CONFIGURATION_TAG.to_vec();
        old.extend_from_slice(&2u32.to_be_bytes());
        old.extend_from_slice(&1u64.to_be_bytes());
        old.extend_from_slice(&2u64.to_be_bytes());
        old.extend_from_slice(&0u32.to_be_bytes());
        old.extend_from_slice(&0u32.to_be_bytes());
        assert_eq!(Configuration::decode(&old), Some(conf(2)));
        // And a configuration without witnesses still writes exactly that.
        assert_eq!(&conf(2).encode()[..], &old[..]);
        // A witness set naming a non-voter is not a configuration.
        let mut bad = old.clone();
        bad.extend_from_slice(&1u32.to_be_bytes());
        bad.extend_from_slice(&9u64.to_be_bytes());
        assert_eq!(Configuration::decode(&bad), None);
    }

    fn arbitrary_configuration() -> impl proptest::strategy::Strategy<Value = Configuration> {
        use proptest::prelude::*;
        // Each of ids 1..=6 is absent, a data voter, a witness or a learner.
        proptest::collection::vec(0..4u8, 6).prop_map(|roles| {
            let with = |role| -> Vec<NodeId> {
                (1..=6u64)
                    .filter(|i| roles[*i as usize - 1] == role)
                    .map(NodeId)
                    .collect()
            };
            let voters = with(1);
            Configuration::new(voters)
                .with_witnesses(with(2))
                .with_learners(with(3))
        })
    }

    proptest::proptest! {
        #[test]
        fn witness_status_is_kept_through_every_accepted_change(
            current in arbitrary_configuration(),
            target in arbitrary_configuration(),
        ) {
            let Ok(next) = current.keep_witnesses(target.clone()) else {
                // Refused only for an in-place switch.
                let data_to_witness = target
                    .witnesses()
                    .iter()
                    .any(|w| current.contains(*w) && !current.is_witness(*w));
                let witness_to_learner = current
                    .witnesses()
                    .iter()
                    .any(|w| target.learners().contains(w));
                proptest::prop_assert!(data_to_witness || witness_to_learner);
                return Ok(());
            };
            proptest::prop_assert_eq!(next.voters(), target.voters());
            for id in next.voters() {
                let was_witness = current.is_witness(*id);
                let named = target.is_witness(*id);
                proptest::prop_assert_eq!(next.is_witness(*id), was_witness || named);
            }
            // Through the joint configuration and out of it, witnesses are
            // always voters, and nobody switches.
            let joint = current.joint_to(&next);
            for step in [&joint, &joint.leave_joint()] {
                for w in step.witnesses() {
                    proptest::prop_assert!(step.is_voter(*w));
                }
                for id in step.members() {
                    if current.contains(id) && step.is_voter(id) {
                        proptest::prop_assert_eq!(step.is_witness(id), current.is_witness(id));
                    }
                }
                proptest::prop_assert_eq!(Configuration::decode(&step.encode()), Some(step.clone()));
            }
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_carries_witnesses_and_reads_configurations_without_them() {
        let c = conf(2).with_witnesses([NodeId(3)]);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Configuration>(&json).unwrap(), c);
        // Written before witnesses existed (and still written so without).
        let old = r#"{"voters":[1,2],"learners":[],"outgoing":[]}"#;
        assert_eq!(serde_json::to_string(&conf(2)).unwrap(), old);
        assert_eq!(serde_json::from_str::<Configuration>(old).unwrap(), conf(2));
    }
}
