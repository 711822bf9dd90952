//! How a membership change is carried out: in one step when it adds or
//! removes a single voter (thesis §4.1), by joint consensus otherwise
//! (§4.3), and, for a new voter, after it has caught up as a learner
//! (§4.2.1).

use crate::config::Configuration;
use crate::types::{LogIndex, NodeId};

/// How [`Node::propose_configuration_with`](crate::Node::propose_configuration_with)
/// moves the cluster to the target configuration.
///
/// etcd-raft and raft-rs (its port) offer the same two paths with other
/// words: a `ConfChange` (v1) changes one server in one step; a
/// `ConfChangeV2` with several changes goes joint, and its transition says
/// how it leaves the joint state: `Auto` (one step when possible, else
/// joint and left automatically, like [`ChangeMethod::Auto`]), `Implicit`
/// (always joint, left automatically, like [`ChangeMethod::Joint`]) or
/// `Explicit` (the application proposes the leave; a forgotten leave is
/// how etcd users got clusters stuck joint, so it has no equivalent here:
/// C_new always follows). There, changes take effect when applied, and a
/// new leader waits until its log is applied before it accepts one; here
/// they take effect when appended (thesis §4.1) and a new leader waits for
/// a commit in its term.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum ChangeMethod {
    /// One step when the target adds or removes exactly one voter (learner
    /// changes alongside are fine), joint consensus otherwise.
    #[default]
    Auto,
    /// Always through the joint configuration C_old,new (then C_new),
    /// even for a single-server change: each step needs majorities of
    /// both configurations, never just one of them.
    Joint,
    /// One step, C_new appended directly (thesis §4.1); refused with
    /// [`Error::InvalidConfigurationChange`](crate::Error::InvalidConfigurationChange)
    /// unless the voters change by exactly one server (or not at all).
    SingleServer,
}

/// How many voters are in one configuration and not the other. At most one
/// means any majority of the one overlaps any majority of the other, which
/// is what makes the one-step change safe (thesis §4.1, figure 4.3).
pub(crate) fn voter_difference(a: &Configuration, b: &Configuration) -> usize {
    a.voters().symmetric_difference(b.voters()).count()
}

/// How a catch-up started by [`Node::add_voter`](crate::Node::add_voter)
/// ended, polled with [`Node::poll_promotion`](crate::Node::poll_promotion).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Promotion {
    /// The learner finished a replication round within an election timeout;
    /// the leader appended the single-server change that makes it a voter
    /// at `index` (in effect at once, durable once it commits).
    Promoted {
        /// The new voter.
        id: NodeId,
        /// The configuration entry that promotes it.
        index: LogIndex,
        /// Replication rounds it took.
        rounds: u32,
    },
    /// The learner did not catch up: `rounds` rounds each lasted an election
    /// timeout or more ([`Config::catch_up_rounds`](crate::Config::catch_up_rounds)),
    /// or it acknowledged nothing for
    /// [`Config::catch_up_stall_timeouts`](crate::Config::catch_up_stall_timeouts).
    /// It stays a learner; ask again (its log is further along now) or
    /// remove it.
    Aborted {
        /// The lagging learner.
        id: NodeId,
        /// Rounds it finished.
        rounds: u32,
        /// How far its log matched the leader's.
        match_index: LogIndex,
    },
    /// This node stopped tracking the learner without promoting it: it lost
    /// leadership, or the server was removed or made a voter by another
    /// change. Ask the current leader again if it still should vote.
    Cancelled {
        /// The learner.
        id: NodeId,
    },
}

/// What the leader decides about a learner after looking at its progress.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum CatchUpStep {
    /// Keep replicating.
    Wait,
    /// Caught up: promote it.
    Promote,
    /// Give up.
    Abort,
}

/// Limits on a catch-up, from the [`Config`](crate::Config).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CatchUpLimits {
    /// A round shorter than this (the election timeout) means caught up.
    pub(crate) round_ticks: u64,
    /// Rounds before giving up.
    pub(crate) max_rounds: u32,
    /// Ticks without any acknowledgement before giving up.
    pub(crate) stall_ticks: u64,
}

impl CatchUpLimits {
    /// The limits `config` sets: rounds measured against the election
    /// timeout, the stall limit in election timeouts.
    pub(crate) fn of(config: &crate::Config) -> Self {
        CatchUpLimits {
            round_ticks: u64::from(config.election_tick),
            max_rounds: config.catch_up_rounds,
            stall_ticks: u64::from(config.catch_up_stall_timeouts)
                * u64::from(config.election_tick),
        }
    }
}

/// When [`CatchUp::observe`] next acts if the learner's progress stays
/// where it is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum CatchUpDue {
    /// Caught up: every observation retries the promotion, which succeeds
    /// once no other change is under way.
    Promotion,
    /// `changes`: the first tick whose observation changes the record at
    /// all; `acts`: the first whose outcome shows (a round ends, or the
    /// learner is given up on). `changes <= acts`.
    At {
        /// The first tick at which the record changes.
        changes: u64,
        /// The first tick with a visible outcome.
        acts: u64,
    },
}

/// The leader's record of a learner catching up (thesis §4.2.1): a round
/// replicates everything up to the leader's last index at the round's
/// start; when a round lasts less than an election timeout, the entries
/// still missing are few enough that the learner will not hold up
/// commitment as a voter.
#[derive(Clone, Debug)]
pub(crate) struct CatchUp {
    pub(crate) id: NodeId,
    /// Rounds finished.
    pub(crate) rounds: u32,
    /// The current round ends when the learner matches up to here.
    round_end: LogIndex,
    /// When (in ticks) the current round started.
    round_start: u64,
    /// The learner's last seen match index and snapshot offset, and when
    /// either last moved: a learner receiving a large snapshot progresses
    /// without its match index moving.
    seen: (LogIndex, u64),
    seen_at: u64,
    /// Caught up; the promotion waits for the previous change to finish.
    caught_up: bool,
}

impl CatchUp {
    /// Starts the first round: everything up to `leader_last`.
    pub(crate) fn new(id: NodeId, leader_last: LogIndex, now: u64) -> Self {
        CatchUp {
            id,
            rounds: 0,
            round_end: leader_last,
            round_start: now,
            seen: (LogIndex::ZERO, 0),
            seen_at: now,
            caught_up: false,
        }
    }

    /// Looks at the learner's progress (`matched`, and `snapshot_offset`
    /// while it receives a snapshot) at tick `now`, when the leader's log
    /// ends at `leader_last`.
    pub(crate) fn observe(
        &mut self,
        matched: LogIndex,
        snapshot_offset: u64,
        leader_last: LogIndex,
        now: u64,
        limits: CatchUpLimits,
    ) -> CatchUpStep {
        if self.caught_up {
            return CatchUpStep::Promote;
        }
        if (matched, snapshot_offset) != self.seen {
            self.seen = (matched, snapshot_offset);
            self.seen_at = now;
        }
        if matched >= self.round_end {
            self.rounds += 1;
            if now.saturating_sub(self.round_start) < limits.round_ticks {
                self.caught_up = true;
                return CatchUpStep::Promote;
            }
            if self.rounds >= limits.max_rounds {
                return CatchUpStep::Abort;
            }
            self.round_end = leader_last;
            self.round_start = now;
            return CatchUpStep::Wait;
        }
        if now.saturating_sub(self.seen_at) >= limits.stall_ticks {
            return CatchUpStep::Abort;
        }
        CatchUpStep::Wait
    }

    /// When [`observe`](Self::observe) next does something, if it is
    /// called at every tick after `now` with the same `matched` and
    /// `snapshot_offset` (the leader's log end does not matter until a
    /// round ends).
    pub(crate) fn due(
        &self,
        matched: LogIndex,
        snapshot_offset: u64,
        now: u64,
        limits: CatchUpLimits,
    ) -> CatchUpDue {
        if self.caught_up {
            return CatchUpDue::Promotion;
        }
        let next = now.saturating_add(1);
        if matched >= self.round_end {
            // Progress observed elsewhere than at a tick: the round ends
            // at the next observation.
            return CatchUpDue::At {
                changes: next,
                acts: next,
            };
        }
        if (matched, snapshot_offset) != self.seen {
            // The next observation records the progress and restarts the
            // stall clock from there.
            return CatchUpDue::At {
                changes: next,
                acts: next.saturating_add(limits.stall_ticks),
            };
        }
        let stall = next.max(self.seen_at.saturating_add(limits.stall_ticks));
        CatchUpDue::At {
            changes: stall,
            acts: stall,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: CatchUpLimits = CatchUpLimits {
        round_ticks: 10,
        max_rounds: 3,
        stall_ticks: 30,
    };

    #[test]
    fn a_round_shorter_than_an_election_timeout_promotes() {
        let mut c = CatchUp::new(NodeId(4), LogIndex(100), 0);
        // Round 1 (up to 100) takes 25 ticks: too slow, round 2 up to 140.
        assert_eq!(
            c.observe(LogIndex(50), 0, LogIndex(120), 12, LIMITS),
            CatchUpStep::Wait
        );
        assert_eq!(
            c.observe(LogIndex(100), 0, LogIndex(140), 25, LIMITS),
            CatchUpStep::Wait
        );
        assert_eq!(c.rounds, 1);
        // Round 2 ends at tick 34, 9 ticks after it started: caught up.
        assert_eq!(
            c.observe(LogIndex(139), 0, LogIndex(150), 30, LIMITS),
            CatchUpStep::Wait
        );
        assert_eq!(
            c.observe(LogIndex(141), 0, LogIndex(150), 34, LIMITS),
            CatchUpStep::Promote
        );
        assert_eq!(c.rounds, 2);
        // Stays promotable while the promotion waits.
        assert_eq!(
            c.observe(LogIndex(141), 0, LogIndex(190), 90, LIMITS),
            CatchUpStep::Promote
        );
    }

    #[test]
    fn slow_rounds_abort_after_the_limit() {
        let mut c = CatchUp::new(NodeId(4), LogIndex(10), 0);
        let mut now = 0;
        let mut end = 10;
        for round in 1..=3 {
            now += 10; // exactly an election timeout: not less
            end += 10;
            let step = c.observe(LogIndex(end - 10), 0, LogIndex(end), now, LIMITS);
            if round < 3 {
                assert_eq!(step, CatchUpStep::Wait, "round {round}");
            } else {
                assert_eq!(step, CatchUpStep::Abort);
            }
        }
        assert_eq!(c.rounds, 3);
    }

    #[test]
    fn a_silent_learner_aborts_but_a_snapshot_in_progress_does_not() {
        let mut c = CatchUp::new(NodeId(4), LogIndex(10), 0);
        assert_eq!(
            c.observe(LogIndex::ZERO, 0, LogIndex(10), 29, LIMITS),
            CatchUpStep::Wait
        );
        assert_eq!(
            c.observe(LogIndex::ZERO, 0, LogIndex(10), 30, LIMITS),
            CatchUpStep::Abort
        );
        let mut c = CatchUp::new(NodeId(4), LogIndex(10), 0);
        for (t, offset) in [(20, 1000), (40, 2000), (60, 3000)] {
            assert_eq!(
                c.observe(LogIndex::ZERO, offset, LogIndex(10), t, LIMITS),
                CatchUpStep::Wait
            );
        }
    }

    /// Whether some majority of `a` and some majority of `b` share no
    /// server: tries every way of splitting the servers in two.
    fn disjoint_majorities_exist(a: &Configuration, b: &Configuration) -> bool {
        let servers: Vec<NodeId> = a.voters().union(b.voters()).copied().collect();
        (0u32..1 << servers.len()).any(|mask| {
            let side = |v: NodeId| {
                let i = servers.iter().position(|s| *s == v).unwrap_or(0);
                mask & (1 << i) != 0
            };
            a.has_quorum(side) && b.has_quorum(|v| !side(v))
        })
    }

    proptest::proptest! {
        /// The safety of one-step changes (thesis §4.1): configurations
        /// that differ by one voter have no disjoint majorities, so they
        /// cannot elect two leaders or commit conflicting entries at once.
        /// Two voters apart, they sometimes do (hence joint consensus).
        #[test]
        fn one_voter_apart_majorities_overlap(
            old in proptest::collection::btree_set(1u64..9, 1..7),
            add in proptest::bool::ANY,
            pick in 0usize..8,
        ) {
            let old = Configuration::new(old.into_iter().map(NodeId));
            let mut voters: Vec<NodeId> = old.voters().iter().copied().collect();
            if add || voters.len() == 1 {
                let fresh = (1..=9).map(NodeId).find(|n| !old.voters().contains(n));
                voters.extend(fresh);
            } else {
                voters.remove(pick % voters.len());
            }
            let new = Configuration::new(voters);
            proptest::prop_assert_eq!(voter_difference(&old, &new), 1);
            proptest::prop_assert!(!disjoint_majorities_exist(&old, &new));
            proptest::prop_assert!(!disjoint_majorities_exist(&new, &old));
        }
    }

    #[test]
    fn two_voters_apart_majorities_may_not_overlap() {
        // Figure 4.2 of the thesis: {1,2,3} -> {1,2,3,4,5}: {1,2} is a
        // majority of the old, {3,4,5} of the new.
        let c = |ids: &[u64]| Configuration::new(ids.iter().map(|n| NodeId(*n)));
        assert!(disjoint_majorities_exist(
            &c(&[1, 2, 3]),
            &c(&[1, 2, 3, 4, 5])
        ));
        assert!(!disjoint_majorities_exist(
            &c(&[1, 2, 3]),
            &c(&[1, 2, 3, 4])
        ));
    }

    #[test]
    fn voter_difference_counts_both_ways() {
        let c = |ids: &[u64]| Configuration::new(ids.iter().map(|n| NodeId(*n)));
        assert_eq!(voter_difference(&c(&[1, 2, 3]), &c(&[1, 2, 3, 4])), 1);
        assert_eq!(voter_difference(&c(&[1, 2, 3]), &c(&[1, 2])), 1);
        assert_eq!(voter_difference(&c(&[1, 2, 3]), &c(&[1, 2, 4])), 2);
        let with_learner = c(&[1, 2, 3]).with_learners([NodeId(9)]);
        assert_eq!(voter_difference(&c(&[1, 2, 3]), &with_learner), 0);
    }
}
