//! Membership changes: joint consensus, one-at-a-time changes, learners, witnesses and catch-up before promotion.

use super::Node;
use crate::config::Configuration;
use crate::error::Error;
use crate::membership::{
    CatchUp, CatchUpLimits, CatchUpStep, ChangeMethod, Promotion, voter_difference,
};
use crate::progress::Progress;
use crate::ready::Role;
use crate::storage::Storage;
use crate::types::{LogIndex, NodeId};

impl<S: Storage> Node<S> {
    /// Changes the membership to `target` ([`ChangeMethod::Auto`]): in one
    /// step when the voters change by exactly one server (thesis §4.1,
    /// learner changes alongside are fine), otherwise by joint consensus
    /// (§4.3). See [`propose_configuration_with`](Node::propose_configuration_with).
    ///
    /// This does not wait for a new voter to catch up: a voter with an
    /// empty log can hold up commitment until it has the log (§4.2.1).
    /// [`add_voter`](Node::add_voter) does wait.
    pub fn propose_configuration(&mut self, target: Configuration) -> Result<LogIndex, Error> {
        self.propose_configuration_with(target, ChangeMethod::Auto)
    }

    /// Changes the membership to `target` the way `method` says. Returns the
    /// index of the (first) configuration entry, which is in effect as soon
    /// as it is appended (§4.1).
    ///
    /// * One step (single-server change, §4.1): the leader appends C_new
    ///   directly. Safe because any majority of C_old and any majority of
    ///   C_new share a server when they differ by one voter.
    /// * Joint consensus (§4.3): the leader appends C_old,new; decisions
    ///   then need a majority of both; once it commits, the leader appends
    ///   C_new by itself (so does any leader elected meanwhile that finds
    ///   C_old,new committed: the cluster never stays joint).
    ///
    /// Either way, once C_new commits, a leader that is no longer a voter
    /// steps down (§4.2.2); it led the change without counting itself.
    ///
    /// Refused while the previous change is unfinished, its entry
    /// uncommitted or the cluster joint
    /// ([`Error::ConfigurationChangeInProgress`]); before the leader has
    /// committed an entry of its own term ([`Error::NoCommitInTerm`]: the
    /// single-server bug Ongaro reported on raft-dev in 2015, where a
    /// change appended by a new leader lets a stale configuration of an
    /// older term elect a leader that erases committed entries; this rule
    /// also guards joint changes); for a target without voters or joint
    /// ([`Error::InvalidConfigurationChange`]); and with
    /// [`ChangeMethod::SingleServer`] for a target that changes more than
    /// one voter.
    ///
    /// A new node starts with a storage whose configuration holds the
    /// current voters and itself as a learner (so it never campaigns); it
    /// learns the real configuration from the log or a snapshot.
    pub fn propose_configuration_with(
        &mut self,
        target: Configuration,
        method: ChangeMethod,
    ) -> Result<LogIndex, Error> {
        if target.voters().is_empty() || target.is_joint() {
            return Err(Error::InvalidConfigurationChange(
                "the target needs voters and must not be joint",
            ));
        }
        let target = self.configuration.keep_witnesses(target)?;
        if target.voters().iter().all(|v| target.is_witness(*v)) {
            return Err(Error::InvalidConfigurationChange(
                "the target needs a voter that is not a witness",
            ));
        }
        // A leader that leaves the voters keeps replicating until C_new
        // commits; a witness may then hold entries whose only full copy is
        // on that leader, which can no longer campaign, and refuse every
        // other candidate as less up to date: the cluster would be stuck
        // for good (seen in simulation). With witnesses, hand leadership
        // over first.
        let witnesses =
            !target.witnesses().is_empty() || !self.configuration.witnesses().is_empty();
        if witnesses && !target.voters().contains(&self.id) {
            return Err(Error::InvalidConfigurationChange(
                "with witnesses, a leader cannot remove itself from the voters: transfer leadership first",
            ));
        }
        self.check_can_change()?;
        let difference = voter_difference(&self.configuration, &target);
        let one_step = match method {
            ChangeMethod::Auto => difference <= 1,
            ChangeMethod::Joint => difference == 0,
            ChangeMethod::SingleServer if difference <= 1 => true,
            ChangeMethod::SingleServer => {
                return Err(Error::InvalidConfigurationChange(
                    "a single-server change adds or removes one voter",
                ));
            }
        };
        let next = if one_step {
            target
        } else {
            self.configuration.joint_to(&target)
        };
        Ok(self.append_as_leader(next.encode()))
    }

    /// Whether this leader may start a membership change now (see
    /// [`propose_configuration_with`](Node::propose_configuration_with)).
    pub(super) fn check_can_change(&self) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader_hint: self.leader,
            });
        }
        if let Some(to) = self.transferee {
            return Err(Error::TransferInProgress { to });
        }
        let index = self.configuration_index();
        if index > self.log.committed || self.configuration.is_joint() {
            return Err(Error::ConfigurationChangeInProgress { index });
        }
        if self.log.term(self.log.committed)? != Some(self.term) {
            return Err(Error::NoCommitInTerm { term: self.term });
        }
        Ok(())
    }

    /// Makes `id` a voter once it has caught up (thesis §4.2.1): a server
    /// that is not a member is added as a learner first (a configuration
    /// entry, so the usual conditions of
    /// [`propose_configuration_with`](Node::propose_configuration_with)
    /// apply); the leader then replicates to it in rounds, each up to the
    /// leader's last index at the round's start, and promotes it (a
    /// single-server change) at the end of the first round that lasts less
    /// than an election timeout. It gives up after
    /// [`Config::catch_up_rounds`](crate::Config::catch_up_rounds) rounds, or when the learner acknowledges
    /// nothing for [`Config::catch_up_stall_timeouts`](crate::Config::catch_up_stall_timeouts) election timeouts.
    /// A learner never counts
    /// towards commitment, so a slow or unavailable new server never holds
    /// up the cluster. Poll the outcome with
    /// [`poll_promotion`](Node::poll_promotion). Asking again for a learner
    /// already catching up changes nothing.
    pub fn add_voter(&mut self, id: NodeId) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.configuration.is_voter(id) {
            return Err(Error::InvalidConfigurationChange("already a voter"));
        }
        if self.catching_up.iter().any(|c| c.id == id) {
            return Ok(());
        }
        if !self.configuration.learners().contains(&id) {
            self.add_learner(id)?;
        }
        self.wake();
        let catch_up = CatchUp::new(id, self.log.last_index(), self.ticks);
        self.catching_up.push(catch_up);
        self.advance_catch_ups();
        Ok(())
    }

    /// Promotes learner `id` to voter now (a single-server change), if it
    /// holds every committed entry; otherwise [`Error::NotCaughtUp`], since
    /// as a voter it would hold up commitment while it catches up. For a
    /// promotion that waits, use [`add_voter`](Node::add_voter).
    pub fn promote_learner(&mut self, id: NodeId) -> Result<LogIndex, Error> {
        self.check_can_change()?;
        if !self.configuration.learners().contains(&id) {
            return Err(Error::InvalidConfigurationChange("not a learner"));
        }
        let match_index = self
            .progress
            .iter()
            .find(|p| p.id == id)
            .map_or(LogIndex::ZERO, |p| p.match_index);
        if match_index < self.log.committed {
            return Err(Error::NotCaughtUp {
                id,
                match_index,
                commit_index: self.log.committed,
            });
        }
        self.promote(id)
    }

    /// Appends the single-server change that makes learner `id` a voter.
    pub(super) fn promote(&mut self, id: NodeId) -> Result<LogIndex, Error> {
        let c = &self.configuration;
        let voters = c.voters().iter().copied().chain([id]);
        let learners = c.learners().iter().copied().filter(|l| *l != id);
        let target = Configuration::new(voters).with_learners(learners.collect::<Vec<_>>());
        self.propose_configuration_with(target, ChangeMethod::SingleServer)
    }

    /// The outcome of a catch-up started by [`add_voter`](Node::add_voter),
    /// oldest first; `None` when there is none to report. Call it after
    /// your inputs like [`ready`](Node::ready).
    pub fn poll_promotion(&mut self) -> Option<Promotion> {
        self.promotions.pop_front()
    }

    /// Learners this leader is catching up before promoting them, with the
    /// replication rounds each has finished.
    pub fn catching_up(&self) -> impl Iterator<Item = (NodeId, u32)> + '_ {
        self.catching_up.iter().map(|c| (c.id, c.rounds))
    }

    /// Leader: moves every catch-up along; promotes the learners that
    /// caught up (one change at a time: the others wait) and gives up on
    /// those that will not.
    pub(super) fn advance_catch_ups(&mut self) {
        if self.role != Role::Leader || self.catching_up.is_empty() {
            return;
        }
        let limits = CatchUpLimits::of(&self.config);
        let mut pending = std::mem::take(&mut self.catching_up);
        let mut keep = Vec::with_capacity(pending.len());
        for mut c in pending.drain(..) {
            let (matched, offset) = self
                .progress
                .iter()
                .find(|p| p.id == c.id)
                .map_or((LogIndex::ZERO, 0), |p| (p.match_index, p.snapshot_offset));
            let step = c.observe(matched, offset, self.log.last_index(), self.ticks, limits);
            match step {
                CatchUpStep::Wait => keep.push(c),
                CatchUpStep::Abort => self.promotions.push_back(Promotion::Aborted {
                    id: c.id,
                    rounds: c.rounds,
                    match_index: matched,
                }),
                // Refused while another change is unfinished: retried on
                // the next tick.
                CatchUpStep::Promote => match self.promote(c.id) {
                    Ok(index) => self.promotions.push_back(Promotion::Promoted {
                        id: c.id,
                        index,
                        rounds: c.rounds,
                    }),
                    Err(_) => keep.push(c),
                },
            }
        }
        self.catching_up = keep;
        // The configuration may have changed under the others meanwhile.
        self.end_catch_ups_of_non_learners();
    }

    /// Ends (as cancelled) the catch-ups of servers that are no longer
    /// learners: removed, or made voters by another change.
    pub(super) fn end_catch_ups_of_non_learners(&mut self) {
        let learners = self.configuration.learners();
        let (still, gone): (Vec<CatchUp>, Vec<CatchUp>) = std::mem::take(&mut self.catching_up)
            .into_iter()
            .partition(|c| learners.contains(&c.id));
        self.catching_up = still;
        self.promotions
            .extend(gone.into_iter().map(|c| Promotion::Cancelled { id: c.id }));
    }

    /// Adds `id` as a witness: a voter that never leads and keeps no
    /// state-machine data (see [`Configuration::with_witnesses`]). A witness catches up on metadata only, so it needs
    /// no learner phase; adding one voter, the change takes one step
    /// (thesis §4.1). Refused for a current data member (witness status is
    /// fixed for a node's membership).
    pub fn add_witness(&mut self, id: NodeId) -> Result<LogIndex, Error> {
        let c = &self.configuration;
        let learners = c.learners().iter().copied().filter(|l| *l != id);
        let target = Configuration::new(c.voters().iter().copied())
            .with_learners(learners.collect::<Vec<_>>())
            .with_witnesses([id]);
        self.propose_configuration(target)
    }

    /// Adds `id` as a learner (a non-voting member that receives the log).
    pub fn add_learner(&mut self, id: NodeId) -> Result<LogIndex, Error> {
        let c = &self.configuration;
        if c.is_voter(id) {
            return Err(Error::InvalidConfigurationChange("already a voter"));
        }
        let learners = c.learners().iter().copied().chain([id]);
        let target = Configuration::new(c.voters().iter().copied()).with_learners(learners);
        self.propose_configuration(target)
    }

    /// Removes voter or learner `id` (in one step, a single-server change).
    /// Removing the leader is allowed: it steps down once the new
    /// configuration commits (thesis §4.2.2).
    pub fn remove_member(&mut self, id: NodeId) -> Result<LogIndex, Error> {
        let c = &self.configuration;
        let voters = c.voters().iter().copied().filter(|v| *v != id);
        let learners = c.learners().iter().copied().filter(|l| *l != id);
        let target = Configuration::new(voters).with_learners(learners.collect::<Vec<_>>());
        self.propose_configuration(target)
    }

    /// The index of the entry the current configuration came from (the
    /// snapshot's index if it came from the snapshot).
    pub fn configuration_index(&self) -> LogIndex {
        self.configurations
            .last()
            .map_or(self.base_configuration.0, |(i, _)| *i)
    }

    /// The configuration list changed: bring `configuration` and the
    /// leader's follower set in line.
    pub(super) fn configuration_changed(&mut self) {
        self.configuration = self
            .configurations
            .last()
            .map_or(&self.base_configuration.1, |(_, c)| c)
            .clone();
        if self.role != Role::Leader {
            return;
        }
        let id = self.id;
        let configuration = &self.configuration;
        self.progress.retain(|p| configuration.contains(p.id));
        let next = self.log.last_index();
        let new: Vec<NodeId> = configuration
            .members()
            .filter(|m| *m != id && !self.progress.iter().any(|p| p.id == *m))
            .collect();
        self.progress
            .extend(new.into_iter().map(|m| Progress::new(m, next)));
        if self
            .transferee
            .is_some_and(|t| !configuration.voters().contains(&t))
        {
            trace_event!(
                info,
                node = id.0,
                term = self.term.0,
                peer = self.transferee.map(|t| t.0),
                why = "transferee no longer a voter",
                "leadership transfer aborted"
            );
            self.transferee = None;
        }
        self.end_catch_ups_of_non_learners();
    }

    /// Leader, after its commit index moved: finish a joint change by
    /// appending C_new, and step down once a configuration that removed
    /// this node commits.
    pub(super) fn after_commit(&mut self) {
        if self.role != Role::Leader || self.configuration_index() > self.log.committed {
            return;
        }
        if self.configuration.is_joint() {
            let next = self.configuration.leave_joint().encode();
            self.append_as_leader(next);
        } else if !self.configuration.is_voter(self.id) {
            trace_event!(
                info,
                node = self.id.0,
                term = self.term.0,
                why = "removed from the configuration",
                "stepped down"
            );
            self.become_follower(self.term, None);
        }
    }
}
