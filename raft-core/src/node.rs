//! [`Node`]: one Raft server as a deterministic state machine.

use crate::config::{Config, Configuration};
use crate::error::{DropReason, Error, FatalError, StorageError};
use crate::log::RaftLog;
use crate::membership::{
    CatchUp, CatchUpLimits, CatchUpStep, ChangeMethod, Promotion, voter_difference,
};
use crate::message::{AppendOutcome, Message, MessageBody};
use crate::progress::{Progress, ProgressState};
use crate::ready::{ReadState, Ready, Role, SoftState};
use crate::storage::{Snapshot, SnapshotMeta, Storage};
use crate::types::{Entry, HardState, LogIndex, NodeId, Term};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// Terms and log indices at or above this are refused as malformed input:
/// no real cluster reaches them, and arithmetic on them could overflow.
const MAX_POSITION: u64 = u64::MAX / 2;

/// Where [`Node::propose_or_forward`] sent a command.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Proposed {
    /// Appended to this leader's log at this index.
    Appended(LogIndex),
    /// Forwarded to this leader.
    Forwarded(NodeId),
}

/// What [`Node::step`] did with a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// The message was handled (which may mean: answered, or found to
    /// change nothing, as for a duplicate).
    Handled,
    /// The message was dropped and changed nothing; the reason says why.
    /// Count or log it; there is nothing to do.
    Dropped(DropReason),
}

impl StepOutcome {
    /// Whether the message was dropped.
    pub fn is_dropped(&self) -> bool {
        matches!(self, StepOutcome::Dropped(_))
    }

    /// The reason, if the message was dropped.
    pub fn dropped(&self) -> Option<&DropReason> {
        match self {
            StepOutcome::Dropped(reason) => Some(reason),
            StepOutcome::Handled => None,
        }
    }
}

/// How sending a snapshot ended, for [`Node::report_snapshot`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SnapshotStatus {
    /// Every chunk was delivered.
    Finished,
    /// The transfer failed (the connection broke, the follower refused it).
    Failed,
}

/// A Ready handed out and not yet advanced.
#[derive(Debug)]
struct InFlight {
    seq: u64,
    /// The log is durable up to here once this Ready is advanced (lowered
    /// if a later append replaces entries it carried).
    persists_to: LogIndex,
    hard_state: Option<HardState>,
    /// Replies held until this Ready's state is durable.
    held: Vec<Message>,
    /// The application has applied up to here once this Ready is advanced.
    applies_to: LogIndex,
    /// The index of the snapshot this Ready asked to restore.
    restores: Option<LogIndex>,
}

/// A snapshot arriving in chunks from the leader.
#[derive(Debug)]
struct IncomingSnapshot {
    term: Term,
    from: NodeId,
    meta: SnapshotMeta,
    data: BytesMut,
}

/// One Raft node.
///
/// Drive it with [`tick`](Node::tick), [`step`](Node::step) and
/// [`propose`](Node::propose); after each call, loop over
/// [`ready`](Node::ready) / [`advance`](Node::advance) (see the crate
/// documentation for the contract and a complete event loop).
#[derive(Debug)]
pub struct Node<S> {
    id: NodeId,
    config: Config,
    /// The latest configuration in the log, in effect from the moment it is
    /// appended (thesis §4.1).
    configuration: Configuration,
    /// The configuration as of the snapshot (or the initial one), with the
    /// snapshot's index.
    base_configuration: (LogIndex, Configuration),
    /// Configuration entries in the log after the snapshot, oldest first:
    /// truncating the log reverts to the latest one left.
    configurations: Vec<(LogIndex, Configuration)>,
    log: RaftLog<S>,
    term: Term,
    vote: Option<NodeId>,
    leader: Option<NodeId>,
    role: Role,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_election_timeout: u32,
    rng: fastrand::Rng,
    /// Votes received as candidate (this node's own vote is counted once
    /// durable, see `self_vote_durable`).
    votes: Vec<(NodeId, bool)>,
    /// Per-follower progress, while leader.
    progress: Vec<Progress>,
    /// Messages that may be sent now.
    outbox: Vec<Message>,
    /// Replies that may be sent once the current state is durable.
    held: Vec<Message>,
    in_flight: VecDeque<InFlight>,
    next_seq: u64,
    /// The hard state last handed out in a Ready.
    handed_hard_state: HardState,
    /// The hard state last acknowledged durable.
    durable_hard_state: HardState,
    soft_state: SoftState,
    /// Leader: the read round of the latest ReadIndex request.
    read_round: u64,
    /// Leader: reads waiting for a quorum to confirm leadership.
    pending_reads: VecDeque<PendingRead>,
    /// Reads confirmed, for the next Ready.
    read_states: Vec<ReadState>,
    /// Leader: the voter leadership is being handed to, and for how long.
    transferee: Option<NodeId>,
    transfer_elapsed: u32,
    /// Ticks since this node started.
    ticks: u64,
    /// Whether the node restarted with a term, so may have promised a
    /// leader a lease before it stopped.
    restarted: bool,
    /// Leader: when (in ticks) each recent heartbeat round was sent.
    round_sent: VecDeque<(u64, u64)>,
    /// Leader: lease reads are served while `ticks` is below this.
    lease_until: u64,
    /// Leader: a TimeoutNow went out this term. It may arrive at any later
    /// time and start an election that ignores the followers' leases, so no
    /// more lease reads in this term (raft-rs issue 234).
    lease_forfeited: bool,
    /// Follower: the snapshot being received.
    incoming_snapshot: Option<IncomingSnapshot>,
    /// Follower: a received snapshot for the next Ready.
    restored: Option<Snapshot>,
    /// Leader: learners catching up before their promotion (§4.2.1).
    catching_up: Vec<CatchUp>,
    /// Finished catch-ups, for [`Node::poll_promotion`].
    promotions: VecDeque<Promotion>,
    /// Leader: the entries with a payload it appended in its term and has
    /// not yet committed, with their payload sizes
    /// ([`Config::max_uncommitted_bytes`]).
    uncommitted: VecDeque<(LogIndex, u64)>,
    /// Leader: the sum of the sizes in `uncommitted`.
    uncommitted_bytes: u64,
}

/// A ReadIndex request waiting for heartbeat answers.
#[derive(Debug)]
struct PendingRead {
    id: u64,
    index: LogIndex,
    round: u64,
}

impl<S: Storage> Node<S> {
    /// Starts a node from what `storage` holds (a fresh log or the durable
    /// state of a node that crashed).
    pub fn new(config: Config, storage: S) -> Result<Self, Error> {
        config.validate()?;
        let initial = storage.initial_state()?;
        let hs = initial.hard_state;
        let log = RaftLog::new(storage, hs.commit)?;
        // Configuration entries after the snapshot are in effect already.
        let snapshot_index = log.first_index()?.prev();
        let mut tail = Vec::new();
        log.entries_from(snapshot_index.next(), u64::MAX, &mut tail)?;
        let configurations: Vec<(LogIndex, Configuration)> = tail
            .iter()
            .filter_map(|e| e.configuration().map(|c| (e.index, c)))
            .collect();
        let rng =
            fastrand::Rng::with_seed(config.seed ^ config.id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let configuration = configurations
            .last()
            .map_or(&initial.configuration, |(_, c)| c)
            .clone();
        // A node removed by a configuration in its log or snapshot may
        // restart (and stays passive), as may a new node whose snapshot
        // predates its addition. A fresh node must be a member.
        if configurations.is_empty()
            && snapshot_index == LogIndex::ZERO
            && !configuration.contains(config.id)
        {
            return Err(Error::NotAMember { id: config.id });
        }
        let mut node = Node {
            id: config.id,
            configuration,
            base_configuration: (snapshot_index, initial.configuration),
            configurations,
            log,
            term: hs.term,
            vote: hs.vote,
            leader: None,
            role: Role::Follower,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: config.election_tick,
            rng,
            votes: Vec::new(),
            progress: Vec::new(),
            outbox: Vec::new(),
            held: Vec::new(),
            in_flight: VecDeque::new(),
            next_seq: 0,
            handed_hard_state: hs,
            durable_hard_state: hs,
            soft_state: SoftState::default(),
            read_round: 0,
            pending_reads: VecDeque::new(),
            read_states: Vec::new(),
            transferee: None,
            transfer_elapsed: 0,
            ticks: 0,
            restarted: hs.term > Term(0),
            round_sent: VecDeque::new(),
            lease_until: 0,
            lease_forfeited: false,
            incoming_snapshot: None,
            restored: None,
            catching_up: Vec::new(),
            promotions: VecDeque::new(),
            uncommitted: VecDeque::new(),
            uncommitted_bytes: 0,
            config,
        };
        let applied = node.config.applied;
        if applied != LogIndex::ZERO {
            let committed = node.log.committed;
            if applied < snapshot_index || applied > committed {
                return Err(Error::AppliedOutOfRange {
                    applied,
                    snapshot: snapshot_index,
                    committed,
                });
            }
            node.log.resume_applied(applied);
        }
        node.reset_election_timer();
        Ok(node)
    }

    // ----- observers -----

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader of the current term, if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The candidate voted for in the current term.
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }

    /// The highest index known committed.
    pub fn commit_index(&self) -> LogIndex {
        self.log.committed
    }

    /// The highest index the application acknowledged as applied.
    pub fn applied_index(&self) -> LogIndex {
        self.log.applied
    }

    /// The index of the last log entry (durable or not).
    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }

    /// The highest index acknowledged durable.
    pub fn persisted_index(&self) -> LogIndex {
        self.log.persisted()
    }

    /// The term of the entry at `index`, or `None` past the end of the log.
    pub fn log_term(&self, index: LogIndex) -> Result<Option<Term>, Error> {
        self.log.term(index)
    }

    /// Copies the entries in `[low, last_index]` into `out` (durable or
    /// not), starting after the latest snapshot if `low` is compacted.
    pub fn log_entries(&self, low: LogIndex, out: &mut Vec<Entry>) -> Result<(), Error> {
        self.log
            .entries_from(low.max(self.log.first_index()?), u64::MAX, out)
    }

    /// The cluster membership.
    pub fn configuration(&self) -> &Configuration {
        &self.configuration
    }

    /// The leader's view of a follower, while leader.
    pub fn progress(&self, id: NodeId) -> Option<&Progress> {
        self.progress.iter().find(|p| p.id == id)
    }

    /// The leader's view of every other member, while leader (empty
    /// otherwise).
    pub fn all_progress(&self) -> impl Iterator<Item = &Progress> + '_ {
        self.progress.iter()
    }

    /// The configuration this node runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The storage, for reading.
    pub fn storage(&self) -> &S {
        &self.log.storage
    }

    /// The storage, for writing what a [`Ready`] asks to persist.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.log.storage
    }

    /// Stops the node and returns its storage: what a restart recovers from.
    pub fn into_storage(self) -> S {
        self.log.storage
    }

    // ----- inputs -----

    /// Advances logical time by one tick: followers and candidates count
    /// towards their election timeout, leaders towards the next heartbeat.
    pub fn tick(&mut self) {
        self.ticks += 1;
        match self.role {
            Role::Leader => {
                self.heartbeat_elapsed += 1;
                if self.heartbeat_elapsed >= self.config.heartbeat_tick {
                    self.heartbeat_elapsed = 0;
                    // Only these beats measure how long appends go
                    // unanswered; ReadIndex rounds come at any rate.
                    self.progress.iter_mut().for_each(Progress::beat);
                    self.broadcast_heartbeat();
                }
                self.election_elapsed += 1;
                if self.election_elapsed >= self.config.election_tick {
                    self.election_elapsed = 0;
                    self.check_quorum();
                }
                if self.transferee.is_some() {
                    self.transfer_elapsed += 1;
                    if self.transfer_elapsed >= self.config.election_tick {
                        // The transferee did not take over in time: abandon.
                        trace_event!(
                            info,
                            node = self.id.0,
                            term = self.term.0,
                            peer = self.transferee.map(|t| t.0),
                            why = "transferee did not take over within an election timeout",
                            "leadership transfer aborted"
                        );
                        self.transferee = None;
                    }
                }
                self.advance_catch_ups();
            }
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                self.election_elapsed += 1;
                if self.election_elapsed >= self.randomized_election_timeout && self.can_campaign()
                {
                    self.campaign();
                }
            }
        }
    }

    /// Starts an election now, as if the election timeout had fired: a
    /// pre-vote round first if [`Config::pre_vote`] is set. A leader
    /// ignores it (as etcd-raft and raft-rs do): it already leads, and a
    /// new election would leave the group leaderless for a while. Use
    /// [`transfer_leadership`](Node::transfer_leadership) to move
    /// leadership.
    pub fn campaign(&mut self) {
        if self.role == Role::Leader || !self.can_campaign() {
            return;
        }
        // Called from `tick` only once the timeout elapsed; earlier, the
        // application asked.
        trace_event!(
            info,
            node = self.id.0,
            term = self.term.next().0,
            pre_vote = self.config.pre_vote,
            why = if self.election_elapsed >= self.randomized_election_timeout {
                "election timeout"
            } else {
                "campaign requested"
            },
            "campaign started"
        );
        if self.config.pre_vote {
            self.become_pre_candidate();
            self.request_votes(true, false);
            // Alone, our own pre-vote is a quorum.
            self.tally_votes();
        } else {
            let term = self.term.next();
            self.become_candidate(term);
            self.request_votes(false, false);
        }
    }

    /// Voters campaign; not while restoring a snapshot, since a leader
    /// replicates from storage, which holds the old log until then. Never
    /// witnesses: they hold no payloads to replicate.
    fn can_campaign(&self) -> bool {
        self.configuration.is_voter(self.id)
            && !self.configuration.is_witness(self.id)
            && !self.log.is_restoring()
    }

    fn request_votes(&mut self, pre_vote: bool, transfer: bool) {
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term();
        // A pre-vote asks about the term the election would use, without
        // moving to it (thesis §9.6).
        let term = if pre_vote {
            self.term.next()
        } else {
            self.term
        };
        let peers: Vec<NodeId> = self
            .configuration
            .all_voters()
            .filter(|v| *v != self.id)
            .collect();
        for to in peers {
            let body = if pre_vote {
                MessageBody::PreVote {
                    last_log_index,
                    last_log_term,
                }
            } else {
                MessageBody::RequestVote {
                    last_log_index,
                    last_log_term,
                    leadership_transfer: transfer,
                }
            };
            self.outbox.push(Message {
                from: self.id,
                to,
                term,
                body,
            });
        }
    }

    /// Whether this node heard from a leader within the election timeout;
    /// with check-quorum such a node ignores disruptive elections.
    fn in_lease(&self) -> bool {
        // A node that restarted may have promised a leader its lease before
        // it stopped: it honours that for an election timeout.
        let starting = self.restarted && self.ticks < u64::from(self.config.election_tick);
        self.config.check_quorum && (self.heard_from_leader() || starting)
    }

    /// Whether a leader was heard from within the election timeout.
    fn heard_from_leader(&self) -> bool {
        self.leader.is_some() && self.election_elapsed < self.config.election_tick
    }

    /// Proposes a command. On the leader, appends it to the log and returns
    /// its index; it is replicated on the next [`ready`](Node::ready). The
    /// entry may still be lost if leadership changes before it commits:
    /// watch the index in committed entries, and retry with a request id
    /// your state machine deduplicates.
    pub fn propose(&mut self, data: Bytes) -> Result<LogIndex, Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader_hint: self.leader,
            });
        }
        if let Some(to) = self.transferee {
            return Err(Error::TransferInProgress { to });
        }
        if data.starts_with(crate::config::CONFIGURATION_TAG) {
            return Err(Error::ReservedCommand);
        }
        let size = data.len() as u64;
        if size > self.config.max_entry_bytes {
            return Err(Error::EntryTooLarge {
                size,
                max: self.config.max_entry_bytes,
            });
        }
        // etcd-raft's rule: with nothing uncommitted any one command fits,
        // so a command above the limit is not refused forever; an empty one
        // costs nothing and always fits.
        let max = self.config.max_uncommitted_bytes;
        if self.uncommitted_bytes > 0
            && size > 0
            && self.uncommitted_bytes.saturating_add(size) > max
        {
            return Err(Error::UncommittedLimit {
                uncommitted: self.uncommitted_bytes,
                size,
                max,
            });
        }
        Ok(self.append_as_leader(data))
    }

    /// Payload bytes this leader appended in its term and has not yet
    /// committed (what [`Config::max_uncommitted_bytes`] caps); zero on
    /// other roles.
    pub fn uncommitted_bytes(&self) -> u64 {
        self.uncommitted_bytes
    }

    /// Appends an entry of the current term to the leader's log.
    fn append_as_leader(&mut self, data: Bytes) -> LogIndex {
        let index = self.log.last_index().next();
        let configuration = Configuration::decode(&data);
        let size = data.len() as u64;
        if size > 0 {
            self.uncommitted.push_back((index, size));
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_add(size);
        }
        self.log.push(Entry {
            term: self.term,
            index,
            data,
        });
        if let Some(c) = configuration {
            self.configurations.push((index, c));
            self.configuration_changed();
        }
        index
    }

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
    fn check_can_change(&self) -> Result<(), Error> {
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
    /// [`Config::catch_up_rounds`] rounds, or when the learner acknowledges
    /// nothing for [`Config::catch_up_stall_timeouts`] election timeouts.
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
    fn promote(&mut self, id: NodeId) -> Result<LogIndex, Error> {
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
    fn advance_catch_ups(&mut self) {
        if self.role != Role::Leader || self.catching_up.is_empty() {
            return;
        }
        let limits = CatchUpLimits {
            round_ticks: u64::from(self.config.election_tick),
            max_rounds: self.config.catch_up_rounds,
            stall_ticks: u64::from(self.config.catch_up_stall_timeouts)
                * u64::from(self.config.election_tick),
        };
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
    fn end_catch_ups_of_non_learners(&mut self) {
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
    fn configuration_changed(&mut self) {
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
    fn after_commit(&mut self) {
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

    /// Proposes on the leader, or forwards the command to the leader this
    /// node knows (thesis §6.2 leaves the choice to the implementation).
    /// A forwarded command has no index yet and may be dropped if
    /// leadership moves; retry with a request id your state machine
    /// deduplicates. Without a known leader: [`Error::NotLeader`].
    pub fn propose_or_forward(&mut self, data: Bytes) -> Result<Proposed, Error> {
        match (self.role, self.leader) {
            (Role::Leader, _) => self.propose(data).map(Proposed::Appended),
            (_, Some(leader)) => {
                self.send(
                    leader,
                    MessageBody::ForwardedProposal {
                        commands: vec![data],
                    },
                );
                Ok(Proposed::Forwarded(leader))
            }
            (_, None) => Err(Error::NotLeader { leader_hint: None }),
        }
    }

    /// Hands leadership to voter `to` (thesis §3.10): proposals are refused
    /// meanwhile, `to` is brought up to date, then told to start an election
    /// at once (TimeoutNow), which it wins with the most up-to-date log.
    /// Abandoned if `to` has not taken over within an election timeout
    /// (as in etcd-raft), or at once by [`abort_transfer`](Node::abort_transfer).
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader_hint: self.leader,
            });
        }
        if to == self.id
            || !self.configuration.voters().contains(&to)
            || !self.configuration.is_voter(self.id)
        {
            return Err(Error::NotAVoter { id: to });
        }
        if self.configuration.is_witness(to) {
            return Err(Error::WitnessCannotLead { id: to });
        }
        trace_event!(
            info,
            node = self.id.0,
            term = self.term.0,
            peer = to.0,
            "leadership transfer started"
        );
        self.transferee = Some(to);
        self.transfer_elapsed = 0;
        self.maybe_send_timeout_now(to);
        Ok(())
    }

    /// The leadership transfer in progress, if any.
    pub fn transferee(&self) -> Option<NodeId> {
        self.transferee
    }

    /// Abandons the leadership transfer in progress, if any, and returns
    /// its transferee: proposals are accepted again at once. A TimeoutNow
    /// already sent may still make the transferee start an election, so
    /// lease reads stay off for the rest of the term.
    pub fn abort_transfer(&mut self) -> Option<NodeId> {
        let to = self.transferee.take()?;
        trace_event!(
            info,
            node = self.id.0,
            term = self.term.0,
            peer = to.0,
            why = "aborted by the application",
            "leadership transfer aborted"
        );
        Some(to)
    }

    // ----- controls for tests and transports -----

    /// The election timeout in force, in ticks, in `[election_tick, 2 *
    /// election_tick)`: drawn at start and again whenever this node starts
    /// a campaign.
    pub fn randomized_election_timeout(&self) -> u32 {
        self.randomized_election_timeout
    }

    /// Sets the election timeout until the next one is drawn (when this
    /// node next campaigns), to make a test deterministic without searching
    /// for a seed. It must lie in `[election_tick, 2 * election_tick)`, the
    /// range the lease and check-quorum arguments assume; otherwise
    /// [`Error::ElectionTimeoutOutOfRange`].
    pub fn set_randomized_election_timeout(&mut self, ticks: u32) -> Result<(), Error> {
        let min = self.config.election_tick;
        let max = min.saturating_mul(2);
        if ticks < min || ticks >= max {
            return Err(Error::ElectionTimeoutOutOfRange { ticks, min, max });
        }
        self.randomized_election_timeout = ticks;
        Ok(())
    }

    /// Ticks since this node last heard from a leader or granted a vote
    /// (follower), or since its last check-quorum interval began (leader).
    pub fn election_elapsed(&self) -> u32 {
        self.election_elapsed
    }

    /// A leader sends a heartbeat round now, as if its heartbeat tick had
    /// fired (raft-rs `ping`); nothing on other roles. It does not count as
    /// a tick-driven beat for detecting lost appends.
    pub fn ping(&mut self) {
        if self.role == Role::Leader {
            self.broadcast_heartbeat();
        }
    }

    /// Tells a leader that a message to `id` could not be delivered (a
    /// failed connection, a full queue). Appends pipelined to it were
    /// probably lost: replication falls back to probing from its match
    /// index (etcd-raft `ReportUnreachable`). Ignored on other roles and
    /// for ids this leader does not replicate to, so a transport may call
    /// it on every failed send.
    pub fn report_unreachable(&mut self, id: NodeId) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(p) = self.progress_mut(id)
            && p.state == ProgressState::Replicate
        {
            p.state = ProgressState::Probe;
            p.inflight.clear();
            p.paused = false;
            p.next_index = p.match_index.next();
        }
    }

    /// Tells a leader how sending its snapshot to `id` ended, when the
    /// transport knows (etcd-raft `ReportSnapshot`).
    /// [`SnapshotStatus::Failed`] abandons the transfer: it restarts from
    /// its first byte once `id` answers a heartbeat.
    /// [`SnapshotStatus::Finished`] stops sending chunks and waits for
    /// `id`'s acknowledgment (or a heartbeat answer, then probes after the
    /// snapshot). Ignored unless this leader is sending `id` a snapshot.
    pub fn report_snapshot(&mut self, id: NodeId, status: SnapshotStatus) {
        if self.role != Role::Leader {
            return;
        }
        let Some(p) = self.progress_mut(id) else {
            return;
        };
        if p.state != ProgressState::Snapshot {
            return;
        }
        p.state = ProgressState::Probe;
        p.inflight.clear();
        p.paused = true;
        p.next_index = match status {
            SnapshotStatus::Failed => p.match_index.next(),
            SnapshotStatus::Finished => p.snapshot_index.next().max(p.match_index.next()),
        };
        p.snapshot_offset = 0;
    }

    fn maybe_send_timeout_now(&mut self, to: NodeId) {
        let last = self.log.last_index();
        let caught_up = self.progress(to).is_some_and(|p| p.match_index == last);
        if self.transferee == Some(to) && caught_up {
            trace_event!(
                info,
                node = self.id.0,
                term = self.term.0,
                peer = to.0,
                index = last.0,
                "leadership transfer: transferee caught up, TimeoutNow sent"
            );
            self.lease_forfeited = true;
            self.send(to, MessageBody::TimeoutNow);
        }
    }

    /// Asks for a linearizable read without writing to the log (ReadIndex,
    /// thesis §6.4). The leader records its commit index, confirms with a
    /// heartbeat round that it still leads, and then reports a
    /// [`ReadState`] with this `id` in a [`Ready`]: serve the read once the
    /// applied index reaches the state's index. A leader that loses
    /// leadership first drops its pending reads; retry them elsewhere.
    ///
    /// The round goes out with the next [`ready`](Node::ready), so all the
    /// reads asked before it share one round (each keeps the commit index
    /// of when it was asked): batch reads by calling this several times
    /// between two `ready` calls.
    pub fn read_index(&mut self, id: u64) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.log.term(self.log.committed)? != Some(self.term) {
            return Err(Error::NoCommitInTerm { term: self.term });
        }
        // Confirmed by answers to the next heartbeat round, which goes out
        // after this call: at the next `ready` or tick, whichever is first.
        self.pending_reads.push_back(PendingRead {
            id,
            index: self.log.committed,
            round: self.read_round + 1,
        });
        self.confirm_reads();
        Ok(())
    }

    /// Serves a linearizable read at once if the leader holds a lease: a
    /// quorum answered a heartbeat sent less than a lease period ago, so
    /// (with check-quorum, and clocks drifting less than
    /// [`Config::max_clock_drift_ticks`]) no other leader can have been
    /// elected since. The [`ReadState`] comes in the next [`Ready`].
    /// Fails with [`Error::LeaseUnavailable`]; then use
    /// [`read_index`](Node::read_index).
    pub fn read_lease(&mut self, id: u64) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.log.term(self.log.committed)? != Some(self.term) {
            return Err(Error::NoCommitInTerm { term: self.term });
        }
        let single = self.configuration.voters().len() == 1 && !self.configuration.is_joint();
        let leased = self.ticks < self.lease_until || single;
        let transferring = self.transferee.is_some() || self.lease_forfeited;
        if !self.config.check_quorum || transferring || !leased {
            return Err(Error::LeaseUnavailable);
        }
        self.read_states.push(ReadState {
            id,
            index: self.log.committed,
        });
        Ok(())
    }

    /// Extends the lease to the newest heartbeat round a quorum answered.
    fn renew_lease(&mut self) {
        let id = self.id;
        let progress = &self.progress;
        let round = self.configuration.committed_by_majority(|v| {
            if v == id {
                u64::MAX
            } else {
                progress
                    .iter()
                    .find(|p| p.id == v)
                    .map_or(0, |p| p.acked_round)
            }
        });
        while let Some(&(r, sent)) = self.round_sent.front() {
            if r > round {
                break;
            }
            self.round_sent.pop_front();
            if r == round {
                let lease = self
                    .config
                    .election_tick
                    .saturating_sub(self.config.max_clock_drift_ticks + 1);
                self.lease_until = self.lease_until.max(sent + u64::from(lease));
            }
        }
    }

    /// Releases the pending reads whose round a quorum has answered.
    fn confirm_reads(&mut self) {
        let id = self.id;
        while let Some(read) = self.pending_reads.front() {
            let progress = &self.progress;
            let confirmed = self.configuration.has_quorum(|v| {
                v == id
                    || progress
                        .iter()
                        .any(|p| p.id == v && p.acked_round >= read.round)
            });
            if !confirmed {
                break;
            }
            self.read_states.push(ReadState {
                id: read.id,
                index: read.index,
            });
            self.pending_reads.pop_front();
        }
    }

    /// Handles a message from a peer. Messages the node drops (malformed,
    /// misaddressed, from a non-member, stale or unexpected) change nothing
    /// and come back as [`StepOutcome::Dropped`] with the reason, so
    /// `node.step(m)?` in an event loop survives stray packets: the only
    /// error is a [`FatalError`] (the storage failed), which should stop
    /// the node.
    pub fn step(&mut self, m: Message) -> Result<StepOutcome, FatalError> {
        match self.step_inner(m) {
            Ok(outcome) => Ok(outcome),
            Err(Error::Dropped(reason)) => Ok(StepOutcome::Dropped(reason)),
            Err(e) => Err(FatalError::from_step(e)),
        }
    }

    fn step_inner(&mut self, m: Message) -> Result<StepOutcome, Error> {
        let validated = self.validate(&m);
        if_tracing! {
            if let Err(e) = &validated {
                // The reason itself, not its wrapping as an error.
                let e: &dyn std::fmt::Display = match e {
                    Error::Dropped(reason) => reason,
                    other => other,
                };
                tracing::debug!(
                    target: "quorate_raft_core",
                    node = self.id.0,
                    term = self.term.0,
                    peer = m.from.0,
                    msg_term = m.term.0,
                    kind = m.body.kind(),
                    error = %e,
                    "message refused"
                );
            }
        }
        validated?;
        trace_event!(
            trace,
            node = self.id.0,
            term = self.term.0,
            peer = m.from.0,
            msg_term = m.term.0,
            kind = m.body.kind(),
            "message received"
        );
        let leader_hears_follower = self.role == Role::Leader && m.term == self.term;
        if let Some(p) = self.progress_mut(m.from).filter(|_| leader_hears_follower) {
            p.recent_active = true;
        }
        if m.term > self.term {
            match m.body {
                // Pre-votes never move terms: a granted answer carries the
                // term the pre-candidate would use.
                MessageBody::PreVote { .. } => {}
                MessageBody::PreVoteResponse { granted: true } => {}
                // A node that hears from its leader ignores elections
                // (check-quorum lease, thesis §4.2.3), and always those
                // of servers that are not voters of C_new: a server being
                // removed cannot disrupt the new configuration.
                MessageBody::RequestVote {
                    leadership_transfer: false,
                    ..
                } if self.in_lease()
                    || (self.heard_from_leader()
                        && !self.configuration.voters().contains(&m.from)) =>
                {
                    trace_event!(
                        debug,
                        node = self.id.0,
                        term = self.term.0,
                        peer = m.from.0,
                        msg_term = m.term.0,
                        why = if self.in_lease() {
                            "leader lease (check-quorum)"
                        } else {
                            "candidate not a voter of the new configuration"
                        },
                        "vote request ignored"
                    );
                    return Ok(StepOutcome::Dropped(DropReason::VoteIgnored {
                        from: m.from,
                    }));
                }
                MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => {
                    if_tracing! { self.trace_higher_term(&m); }
                    self.become_follower(m.term, Some(m.from));
                }
                _ => {
                    if_tracing! { self.trace_higher_term(&m); }
                    self.become_follower(m.term, None);
                }
            }
        } else if m.term < self.term {
            // Tell a stale leader or candidate about the newer term; drop
            // stale replies.
            trace_event!(
                debug,
                node = self.id.0,
                term = self.term.0,
                peer = m.from.0,
                msg_term = m.term.0,
                kind = m.body.kind(),
                "message refused: stale term"
            );
            match m.body {
                MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => {
                    self.reply(m.from, MessageBody::HeartbeatResponse { round: 0 });
                }
                MessageBody::RequestVote { .. } => {
                    self.reply(m.from, MessageBody::RequestVoteResponse { granted: false });
                }
                MessageBody::PreVote { .. } => {
                    self.send(m.from, MessageBody::PreVoteResponse { granted: false });
                }
                _ => {}
            }
            return Ok(StepOutcome::Dropped(DropReason::StaleTerm {
                from: m.from,
                kind: m.body.kind(),
                term: m.term,
                current: self.term,
            }));
        }
        if let Some(why) = self.unexpected(&m) {
            trace_event!(
                debug,
                node = self.id.0,
                term = self.term.0,
                peer = m.from.0,
                kind = m.body.kind(),
                why,
                "message ignored: unexpected"
            );
            return Ok(StepOutcome::Dropped(DropReason::Unexpected {
                from: m.from,
                kind: m.body.kind(),
                why,
            }));
        }
        self.handle(m)?;
        Ok(StepOutcome::Handled)
    }

    /// Handles a well-formed message of the current term.
    fn handle(&mut self, m: Message) -> Result<(), Error> {
        match m.body {
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => self.handle_request_vote(m.from, last_log_index, last_log_term),
            MessageBody::ForwardedProposal { commands } => {
                // `unexpected` dropped it unless this node leads and is
                // not transferring; the caps may still refuse commands.
                let total = commands.len();
                for (i, data) in commands.into_iter().enumerate() {
                    if self.propose(data).is_err() {
                        return Err(Error::Dropped(DropReason::ForwardedRefused {
                            from: m.from,
                            refused: total - i,
                        }));
                    }
                }
                Ok(())
            }
            MessageBody::TimeoutNow => {
                // Only our leader may hand over; skip pre-vote, we know the
                // leader stepped aside for us.
                if self.leader == Some(m.from) && self.can_campaign() {
                    let term = self.term.next();
                    trace_event!(
                        info,
                        node = self.id.0,
                        term = term.0,
                        peer = m.from.0,
                        pre_vote = false,
                        why = "leadership transfer",
                        "campaign started"
                    );
                    self.become_candidate(term);
                    self.request_votes(false, true);
                }
                Ok(())
            }
            MessageBody::RequestVoteResponse { granted } => {
                if self.role == Role::Candidate {
                    self.handle_vote_response(m.from, granted);
                }
                Ok(())
            }
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => {
                self.handle_pre_vote(m.from, m.term, last_log_index, last_log_term);
                Ok(())
            }
            MessageBody::PreVoteResponse { granted } => {
                // Grants carry our next term, refusals our current one.
                let current = if granted { self.term.next() } else { self.term };
                if self.role == Role::PreCandidate && m.term == current {
                    self.handle_vote_response(m.from, granted);
                }
                Ok(())
            }
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                self.follow(m.from)?;
                self.handle_append(
                    m.from,
                    prev_log_index,
                    prev_log_term,
                    &entries,
                    leader_commit,
                )
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done,
            } => {
                self.follow(m.from)?;
                self.handle_install_snapshot(m.from, m.term, meta, offset, &data, done)
            }
            MessageBody::InstallSnapshotResponse { index, received } => {
                if self.role == Role::Leader
                    && let Some(p) = self.progress_mut(m.from)
                {
                    p.snapshot_received(index, received);
                }
                Ok(())
            }
            MessageBody::Heartbeat { commit, round } => {
                self.follow(m.from)?;
                self.log.commit_to(commit);
                self.reply(m.from, MessageBody::HeartbeatResponse { round });
                Ok(())
            }
            MessageBody::AppendEntriesResponse { outcome } => {
                self.handle_append_response(m.from, outcome)
            }
            MessageBody::HeartbeatResponse { round } => {
                if let Some(p) = self.progress_mut(m.from) {
                    p.heartbeat_answered();
                    p.acked_round = p.acked_round.max(round);
                }
                self.confirm_reads();
                self.renew_lease();
                Ok(())
            }
        }
    }

    // ----- outputs -----

    /// Collects the work the node has for the application, or `None` if
    /// there is none. See [`Ready`] for what to do with it.
    pub fn ready(&mut self) -> Result<Option<Ready>, Error> {
        if self.role == Role::Leader {
            self.replicate()?;
            self.send_read_round();
        }
        let soft = SoftState {
            leader: self.leader,
            role: self.role,
        };
        let soft_state = (soft != self.soft_state).then_some(soft);
        let hs = self.hard_state();
        let hard_state = (hs != self.handed_hard_state).then_some(hs);
        if self.outbox.is_empty()
            && self.held.is_empty()
            && !self.log.has_unhanded_entries()
            && hard_state.is_none()
            && soft_state.is_none()
            && self.read_states.is_empty()
            && self.restored.is_none()
            && !self.log.has_committed_to_hand()
        {
            return Ok(None);
        }
        let committed_entries = self.log.take_committed(u64::MAX)?;
        let entries = self.log.take_unpersisted();
        let snapshot = self.restored.take();
        let mut messages = std::mem::take(&mut self.outbox);
        let mut held = std::mem::take(&mut self.held);
        if entries.is_empty()
            && hard_state.is_none()
            && snapshot.is_none()
            && self.in_flight.is_empty()
        {
            // Everything the replies assert is already durable.
            messages.append(&mut held);
        }
        self.soft_state = soft;
        self.handed_hard_state = hs;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.push_back(InFlight {
            seq,
            persists_to: self.log.last_index(),
            hard_state,
            held,
            applies_to: committed_entries
                .last()
                .map_or(self.log.applied, |e| e.index),
            restores: snapshot.as_ref().map(|s| s.meta.index),
        });
        Ok(Some(Ready {
            seq,
            messages,
            entries,
            hard_state,
            committed_entries,
            soft_state,
            read_states: std::mem::take(&mut self.read_states),
            snapshot,
        }))
    }

    /// Acknowledges that `ready`'s entries and hard state are durable and its
    /// committed entries applied. Releases the replies that waited for it.
    pub fn advance(&mut self, ready: Ready) -> Result<(), Error> {
        let expected = self.in_flight.front().map_or(self.next_seq, |f| f.seq);
        if ready.seq != expected {
            return Err(Error::ReadyOutOfOrder {
                expected,
                got: ready.seq,
            });
        }
        let Some(done) = self.in_flight.pop_front() else {
            return Err(Error::ReadyOutOfOrder {
                expected,
                got: ready.seq,
            });
        };
        self.log.persisted_to(done.persists_to);
        if let Some(hs) = done.hard_state {
            self.durable_hard_state = hs;
        }
        self.log.applied_to(done.applies_to);
        if let Some(index) = done.restores {
            trace_event!(
                info,
                node = self.id.0,
                term = self.term.0,
                index = index.0,
                "snapshot installed"
            );
            self.log.snapshot_persisted(index);
        }
        self.outbox.extend(done.held);
        match self.role {
            Role::Candidate => self.tally_votes(),
            Role::PreCandidate => {}
            // The leader counts itself towards commitment only for durable
            // entries (thesis §10.2.1).
            Role::Leader => self.maybe_commit()?,
            Role::Follower => {}
        }
        Ok(())
    }

    // ----- role changes -----

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let base = self.config.election_tick;
        self.randomized_election_timeout = self.rng.u32(base..base.saturating_mul(2));
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if_tracing! {
            if let Some(l) = leader.filter(|l| self.leader != Some(*l)) {
                tracing::info!(
                    target: "quorate_raft_core",
                    node = self.id.0,
                    term = term.0,
                    leader = l.0,
                    "following a new leader"
                );
            }
        }
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.promotions.extend(
            self.catching_up
                .drain(..)
                .map(|c| Promotion::Cancelled { id: c.id }),
        );
        self.pending_reads.clear();
        self.transferee = None;
        self.forget_uncommitted();
        // The election timer keeps running: figure 2 resets it only on
        // hearing from a leader or granting a vote. Resetting it on every
        // newer term lets two candidates with stale logs starve the nodes
        // that could win (seen in simulation).
    }

    fn become_candidate(&mut self, term: Term) {
        self.term = term;
        self.vote = Some(self.id);
        self.start_campaign(Role::Candidate);
    }

    fn become_pre_candidate(&mut self) {
        // Term and vote stay: a failed pre-vote leaves no trace.
        self.start_campaign(Role::PreCandidate);
    }

    /// What a candidate and a pre-candidate both forget as they ask for votes.
    fn start_campaign(&mut self, role: Role) {
        self.role = role;
        self.leader = None;
        self.votes.clear();
        self.progress.clear();
        self.pending_reads.clear();
        self.transferee = None;
        self.forget_uncommitted();
        self.reset_election_timer();
    }

    /// The uncommitted-bytes cap counts this leader's own term only
    /// (etcd-raft resets it on election too): entries inherited from
    /// earlier terms are not its proposals.
    fn forget_uncommitted(&mut self) {
        self.uncommitted.clear();
        self.uncommitted_bytes = 0;
    }

    /// A leader that has not heard from a quorum within an election timeout
    /// steps down, so clients stop waiting on it (thesis §6.2).
    fn check_quorum(&mut self) {
        if !self.config.check_quorum {
            return;
        }
        let id = self.id;
        let progress = &self.progress;
        let active = self
            .configuration
            .has_quorum(|v| v == id || progress.iter().any(|p| p.id == v && p.recent_active));
        for p in &mut self.progress {
            p.recent_active = false;
        }
        if !active {
            trace_event!(
                info,
                node = self.id.0,
                term = self.term.0,
                why = "check-quorum lost: no quorum heard within an election timeout",
                "stepped down"
            );
            self.become_follower(self.term, None);
        }
    }

    fn become_leader(&mut self) {
        trace_event!(
            info,
            node = self.id.0,
            term = self.term.0,
            // Our own vote and the others' granted ones.
            votes = 1 + self.votes.iter().filter(|(_, granted)| *granted).count(),
            voters = self.configuration.voters().len(),
            "became leader"
        );
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.transferee = None;
        self.forget_uncommitted();
        self.lease_until = 0;
        self.lease_forfeited = false;
        self.round_sent.clear();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        let next = self.log.last_index().next();
        let id = self.id;
        self.progress = self
            .configuration
            .members()
            .filter(|m| *m != id)
            .map(|m| Progress::new(m, next))
            .collect();
        // A no-op entry of the new term lets entries of earlier terms commit
        // (§5.4.2) without waiting for a client.
        self.log.push(Entry {
            term: self.term,
            index: next,
            data: Bytes::new(),
        });
        // A joint configuration inherited committed is finished at once
        // (otherwise when the no-op commits it).
        self.after_commit();
    }

    /// Accepts `from` as leader of the current term.
    fn follow(&mut self, from: NodeId) -> Result<(), Error> {
        if self.role == Role::Leader {
            return Err(Error::Dropped(DropReason::Malformed {
                from,
                reason: "a second leader in this node's term",
            }));
        }
        if matches!(self.role, Role::Candidate | Role::PreCandidate) {
            self.become_follower(self.term, Some(from));
        }
        if_tracing! {
            if self.leader != Some(from) {
                tracing::info!(
                    target: "quorate_raft_core",
                    node = self.id.0,
                    term = self.term.0,
                    leader = from.0,
                    "following a new leader"
                );
            }
        }
        self.leader = Some(from);
        self.election_elapsed = 0;
        Ok(())
    }

    // ----- elections -----

    fn handle_request_vote(
        &mut self,
        from: NodeId,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) -> Result<(), Error> {
        let can_vote = self.vote == Some(from) || (self.vote.is_none() && self.leader.is_none());
        let granted = can_vote && self.log.is_up_to_date(last_log_index, last_log_term);
        trace_event!(
            debug,
            node = self.id.0,
            term = self.term.0,
            peer = from.0,
            granted,
            why = if granted {
                "log up to date"
            } else if !can_vote && self.vote.is_some() {
                "already voted"
            } else if !can_vote {
                "leader known in this term"
            } else {
                "stale log"
            },
            "vote"
        );
        if granted {
            self.vote = Some(from);
            self.election_elapsed = 0;
        }
        self.reply(from, MessageBody::RequestVoteResponse { granted });
        Ok(())
    }

    /// Answers a pre-vote: would we vote for this candidate if it started
    /// an election? Changes nothing here, so the answer goes out at once.
    fn handle_pre_vote(
        &mut self,
        from: NodeId,
        term: Term,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) {
        let could_vote = term > self.term
            || self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none());
        // Thesis §9.6: refuse while a leader is being heard from, so a
        // rejoining node cannot unseat it; and while this node honours a
        // lease (it would ignore the RequestVote that follows, and a granted
        // pre-vote would only raise the candidate's term, which then unseats
        // the leader when the candidate is heard: seen in simulation).
        let granted = could_vote
            && !self.heard_from_leader()
            && !self.in_lease()
            && self.log.is_up_to_date(last_log_index, last_log_term);
        trace_event!(
            debug,
            node = self.id.0,
            term = self.term.0,
            peer = from.0,
            granted,
            why = if granted {
                "log up to date"
            } else if !could_vote {
                "already voted or leader known in this term"
            } else if self.heard_from_leader() {
                "leader heard from"
            } else if self.in_lease() {
                "lease"
            } else {
                "stale log"
            },
            "pre-vote"
        );
        self.outbox.push(Message {
            from: self.id,
            to: from,
            term: if granted { term } else { self.term },
            body: MessageBody::PreVoteResponse { granted },
        });
    }

    fn handle_vote_response(&mut self, from: NodeId, granted: bool) {
        if !self.votes.iter().any(|(v, _)| *v == from) {
            self.votes.push((from, granted));
        }
        self.tally_votes();
    }

    fn tally_votes(&mut self) {
        if !matches!(self.role, Role::Candidate | Role::PreCandidate) {
            return;
        }
        let pre_vote = self.role == Role::PreCandidate;
        // Our own vote counts once it is durable: a restart must not let us
        // vote for someone else in this term. A pre-vote changes nothing.
        let self_vote = pre_vote
            || (self.durable_hard_state.term == self.term
                && self.durable_hard_state.vote == Some(self.id));
        let id = self.id;
        let votes = &self.votes;
        let vote_of = |v: NodeId| -> Option<bool> {
            if v == id {
                self_vote.then_some(true)
            } else {
                votes.iter().find(|(n, _)| *n == v).map(|(_, g)| *g)
            }
        };
        if self.configuration.has_quorum(|v| vote_of(v) == Some(true)) {
            if pre_vote {
                let term = self.term.next();
                trace_event!(
                    info,
                    node = self.id.0,
                    term = term.0,
                    pre_vote = false,
                    why = "pre-vote won",
                    "campaign started"
                );
                self.become_candidate(term);
                self.request_votes(false, false);
            } else if self_vote {
                self.become_leader();
            }
            // Otherwise the others' votes already make a quorum, but this
            // node leads only once its term and vote are durable (`advance`
            // tallies again). A leader whose term is not durable could crash,
            // restart in the previous term, win the same term again and
            // append different entries at indices it already sent: two
            // entries with one index and term (seen in simulation).
        } else if self
            .configuration
            .has_quorum(|v| v != id && vote_of(v) == Some(false))
        {
            trace_event!(
                info,
                node = self.id.0,
                term = self.term.0,
                pre_vote,
                why = "a quorum refused",
                "campaign lost"
            );
            self.become_follower(self.term, None);
        }
    }

    // ----- replication, follower side -----

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: &[Entry],
        leader_commit: LogIndex,
    ) -> Result<(), Error> {
        let committed = self.log.committed;
        if prev_log_index < committed {
            // Everything up to the commit index matches any leader's log
            // (§5.4.3); skip the part we already have.
            let skip = (committed.0 - prev_log_index.0) as usize;
            let (prev_term, rest) = match entries.get(skip - 1..) {
                Some([last_known, rest @ ..]) => (last_known.term, rest),
                _ => {
                    self.ack_append(from, committed);
                    return Ok(());
                }
            };
            return self.handle_append(from, committed, prev_term, rest, leader_commit);
        }
        if !self.log.matches(prev_log_index, prev_log_term)? {
            let outcome = self.conflict_hint(prev_log_index)?;
            self.reply_append(from, outcome);
            return Ok(());
        }
        // Skip entries we already have; replace from the first conflict.
        let mut first_new = entries.len();
        for (i, e) in entries.iter().enumerate() {
            if !self.log.matches(e.index, e.term)? {
                first_new = i;
                break;
            }
        }
        if let Some(new) = entries.get(first_new..).filter(|n| !n.is_empty()) {
            let first = new[0].index;
            if first <= committed {
                return Err(Error::Dropped(DropReason::ConflictWithCommitted {
                    from,
                    index: first,
                    committed,
                }));
            }
            if let Some(replaced) = self.log.truncate_and_append(new) {
                for f in &mut self.in_flight {
                    f.persists_to = f.persists_to.min(replaced.prev());
                }
                self.forget_acks_from(replaced);
            }
            // Configurations of replaced entries revert; new ones take
            // effect on append (thesis §4.1).
            self.configurations.retain(|(i, _)| *i < first);
            self.configurations.extend(
                new.iter()
                    .filter_map(|e| e.configuration().map(|c| (e.index, c))),
            );
            self.configuration_changed();
        }
        let last_new = prev_log_index.plus(entries.len() as u64);
        self.log.commit_to(leader_commit.min(last_new));
        self.ack_append(from, last_new);
        Ok(())
    }

    /// A chunk of the leader's snapshot (thesis figure 5.3). Chunks must
    /// arrive in order; otherwise the answer tells the leader where to
    /// resume. The last chunk either confirms a log we already hold or
    /// replaces the log, and is acknowledged once that is durable.
    fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        term: Term,
        meta: SnapshotMeta,
        offset: u64,
        data: &Bytes,
        done: bool,
    ) -> Result<(), Error> {
        let committed = self.log.committed;
        if meta.index <= committed {
            // We already hold (and may have applied) all of it.
            self.incoming_snapshot = None;
            self.reply_append(
                from,
                AppendOutcome::Success {
                    match_index: committed,
                },
            );
            return Ok(());
        }
        let same = |i: &IncomingSnapshot| i.term == term && i.from == from && i.meta == meta;
        if !self.incoming_snapshot.as_ref().is_some_and(same) {
            if offset != 0 {
                self.snapshot_received(from, meta.index, 0);
                return Ok(());
            }
            self.incoming_snapshot = Some(IncomingSnapshot {
                term,
                from,
                meta: meta.clone(),
                data: BytesMut::new(),
            });
        }
        let Some(incoming) = self.incoming_snapshot.as_mut() else {
            return Ok(());
        };
        let received = incoming.data.len() as u64;
        if offset != received {
            self.snapshot_received(from, meta.index, received);
            return Ok(());
        }
        incoming.data.extend_from_slice(data);
        if !done {
            let received = incoming.data.len() as u64;
            self.snapshot_received(from, meta.index, received);
            return Ok(());
        }
        let Some(incoming) = self.incoming_snapshot.take() else {
            return Ok(());
        };
        trace_event!(
            debug,
            node = self.id.0,
            term = self.term.0,
            peer = from.0,
            index = meta.index.0,
            bytes = incoming.data.len(),
            "snapshot received"
        );
        if self.log.matches(meta.index, meta.term)? {
            // Our log already holds the snapshot's last entry, so it holds
            // everything before it: keep the log, entries after it included.
            self.log.commit_to(meta.index);
        } else {
            self.log.restore(meta.clone());
            self.base_configuration = (meta.index, meta.configuration.clone());
            self.configurations.clear();
            self.configuration_changed();
            for f in &mut self.in_flight {
                f.persists_to = f.persists_to.min(meta.index);
            }
            self.forget_acks_from(meta.index.next());
            self.restored = Some(Snapshot {
                meta: meta.clone(),
                data: incoming.data.freeze(),
            });
        }
        self.reply_append(
            from,
            AppendOutcome::Success {
                match_index: meta.index,
            },
        );
        Ok(())
    }

    fn snapshot_received(&mut self, to: NodeId, index: LogIndex, received: u64) {
        self.send(to, MessageBody::InstallSnapshotResponse { index, received });
    }

    /// The repair hint for a rejected `prev_log_index`: the term we hold
    /// there and the first index of that term, so the leader can skip it.
    fn conflict_hint(&self, rejected_index: LogIndex) -> Result<AppendOutcome, Error> {
        let Some(term) = self.log.term(rejected_index)? else {
            return Ok(AppendOutcome::Conflict {
                rejected_index,
                conflict_term: None,
                first_index: self.log.last_index().next(),
            });
        };
        let mut first = rejected_index;
        while first.prev() > self.log.committed && self.log.term(first.prev())? == Some(term) {
            first = first.prev();
        }
        Ok(AppendOutcome::Conflict {
            rejected_index,
            conflict_term: Some(term),
            first_index: first,
        })
    }

    // ----- replication, leader side -----

    fn handle_append_response(
        &mut self,
        from: NodeId,
        outcome: AppendOutcome,
    ) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Ok(());
        }
        match outcome {
            AppendOutcome::Success { match_index } => {
                // validate() refused indices beyond the leader's log.
                let moved = match self.progress_mut(from) {
                    Some(p) => p.acknowledge(match_index),
                    None => false,
                };
                if moved {
                    self.maybe_commit()?;
                    self.maybe_send_timeout_now(from);
                    if self.catching_up.iter().any(|c| c.id == from) {
                        self.advance_catch_ups();
                    }
                }
            }
            AppendOutcome::Received { match_index } => {
                // Not durable yet: replicate further, but do not count it.
                if let Some(p) = self.progress_mut(from) {
                    p.received(match_index);
                }
            }
            AppendOutcome::Conflict {
                rejected_index,
                conflict_term,
                first_index,
            } => {
                let hint = match conflict_term {
                    Some(term) => self
                        .last_index_of_term(term, rejected_index)?
                        .map_or(first_index, LogIndex::next),
                    None => first_index,
                };
                if let Some(p) = self.progress_mut(from) {
                    p.reject(rejected_index, hint);
                }
            }
        }
        Ok(())
    }

    /// The last index at or before `at` holding an entry of `term`.
    fn last_index_of_term(&self, term: Term, at: LogIndex) -> Result<Option<LogIndex>, Error> {
        let mut i = at.min(self.log.last_index());
        let snapshot = self.log.first_index()?.prev();
        while i > LogIndex::ZERO && i >= snapshot {
            match self.log.term(i)? {
                Some(t) if t == term => return Ok(Some(i)),
                Some(t) if t < term => return Ok(None),
                _ => i = i.prev(),
            }
        }
        Ok(None)
    }

    fn maybe_commit(&mut self) -> Result<(), Error> {
        let id = self.id;
        let persisted = self.log.persisted();
        let progress = &self.progress;
        let candidate = self.configuration.committed_by_majority(|v| {
            if v == id {
                persisted
            } else {
                progress
                    .iter()
                    .find(|p| p.id == v)
                    .map_or(LogIndex::ZERO, |p| p.match_index)
            }
        });
        // Only entries of the current term commit by counting (§5.4.2).
        if candidate > self.log.committed && self.log.term(candidate)? == Some(self.term) {
            if_tracing! {
                let index = self.configuration_index();
                if index > self.log.committed && index <= candidate {
                    tracing::info!(
                        target: "quorate_raft_core",
                        node = self.id.0,
                        term = self.term.0,
                        index = index.0,
                        voters = ?self.configuration.voters(),
                        learners = ?self.configuration.learners(),
                        witnesses = ?self.configuration.witnesses(),
                        joint = self.configuration.is_joint(),
                        "configuration change committed"
                    );
                }
            }
            self.log.commit_to(candidate);
            while let Some(&(index, size)) = self.uncommitted.front() {
                if index > candidate {
                    break;
                }
                self.uncommitted.pop_front();
                self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(size);
            }
            self.after_commit();
        }
        Ok(())
    }

    /// Sends every follower what it is missing, as far as flow control
    /// allows, and tells followers about a new commit index.
    fn replicate(&mut self) -> Result<(), Error> {
        let mut progress = std::mem::take(&mut self.progress);
        let result = progress.iter_mut().try_for_each(|p| self.replicate_to(p));
        self.progress = progress;
        result
    }

    fn replicate_to(&mut self, p: &mut Progress) -> Result<(), Error> {
        if p.state == ProgressState::Snapshot || p.next_index < self.log.first_index()? {
            return self.send_snapshot_chunk(p);
        }
        let last = self.log.last_index();
        let committed = self.log.committed;
        while p.can_send(self.config.max_inflight_msgs)
            && (p.next_index <= last || p.sent_commit < committed)
        {
            let prev_log_index = p.next_index.prev();
            let Some(prev_log_term) = self.log.term(prev_log_index)? else {
                // Beyond our log (a stale probe position): restart the probe.
                p.next_index = p.match_index.next();
                p.state = ProgressState::Probe;
                continue;
            };
            let mut entries = Vec::new();
            if self.configuration.is_witness(p.id) {
                self.witness_entries(p.next_index, &mut entries)?;
            } else {
                self.log
                    .entries_from(p.next_index, self.config.max_size_per_msg, &mut entries)?;
            }
            p.sent(entries.last().map(|e| e.index));
            p.sent_commit = committed;
            self.outbox.push(Message {
                from: self.id,
                to: p.id,
                term: self.term,
                body: MessageBody::AppendEntries {
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit: committed,
                },
            });
            if p.state == ProgressState::Probe {
                break;
            }
            if_tracing! {
                if !p.can_send(self.config.max_inflight_msgs) {
                    tracing::debug!(
                        target: "quorate_raft_core",
                        node = self.id.0,
                        term = self.term.0,
                        peer = p.id.0,
                        next_index = p.next_index.0,
                        match_index = p.match_index.0,
                        "in-flight window full: replication to the peer paused until it acknowledges"
                    );
                }
            }
        }
        Ok(())
    }

    /// The entries from `low` as a witness receives them, built from log
    /// positions alone: each entry's term with an empty payload, except
    /// configuration entries, which go whole. The leader reads no payload,
    /// and the message size budget counts what is sent (16 bytes a
    /// stripped entry), so a witness catches up in few messages.
    fn witness_entries(&self, low: LogIndex, out: &mut Vec<Entry>) -> Result<(), Error> {
        let last = self.log.last_index();
        let mut size = 0u64;
        let mut index = low;
        while index <= last {
            let is_configuration = self
                .configurations
                .binary_search_by_key(&index, |(i, _)| *i)
                .is_ok();
            let entry = if is_configuration {
                let mut one = Vec::new();
                self.log.entries_from(index, 0, &mut one)?;
                one.truncate(1);
                match one.pop() {
                    Some(entry) => entry,
                    None => break,
                }
            } else {
                let Some(term) = self.log.term(index)? else {
                    break;
                };
                Entry {
                    term,
                    index,
                    data: Bytes::new(),
                }
            };
            size += entry.size();
            if size > self.config.max_size_per_msg && !out.is_empty() {
                break;
            }
            out.push(entry);
            index = index.next();
        }
        Ok(())
    }

    /// Sends the next chunk of the latest snapshot to a follower that needs
    /// compacted entries; restarts the transfer if the snapshot changed.
    fn send_snapshot_chunk(&mut self, p: &mut Progress) -> Result<(), Error> {
        let mut snapshot = self.log.storage.snapshot()?;
        if self.configuration.is_witness(p.id) {
            crate::witness::snapshot_metadata_only(&mut snapshot);
        }
        let index = snapshot.meta.index;
        let len = snapshot.data.len() as u64;
        if p.state != ProgressState::Snapshot || p.snapshot_index != index {
            trace_event!(
                info,
                node = self.id.0,
                term = self.term.0,
                peer = p.id.0,
                index = index.0,
                bytes = len,
                "snapshot send started"
            );
            p.send_snapshot(index, len);
        }
        if !p.can_send(self.config.max_inflight_msgs) {
            return Ok(());
        }
        let start = p.snapshot_offset.min(len);
        let end = start
            .saturating_add(self.config.max_snapshot_chunk_bytes)
            .min(len);
        let data = snapshot.data.slice(start as usize..end as usize);
        p.sent(None);
        self.outbox.push(Message {
            from: self.id,
            to: p.id,
            term: self.term,
            body: MessageBody::InstallSnapshot {
                meta: snapshot.meta,
                offset: start,
                data,
                done: end == len,
            },
        });
        Ok(())
    }

    /// Sends one heartbeat round for all the reads asked since the last
    /// round went out (ReadIndex batching): none if there are none.
    fn send_read_round(&mut self) {
        let unsent = self
            .pending_reads
            .back()
            .is_some_and(|read| read.round > self.read_round);
        if unsent {
            self.broadcast_heartbeat();
        }
    }

    fn broadcast_heartbeat(&mut self) {
        let committed = self.log.committed;
        let beats: Vec<(NodeId, LogIndex)> = self
            .progress
            .iter()
            .map(|p| (p.id, p.match_index.min(committed)))
            .collect();
        self.read_round += 1;
        let round = self.read_round;
        self.round_sent.push_back((round, self.ticks));
        if self.round_sent.len() > 64 {
            self.round_sent.pop_front();
        }
        for (to, commit) in beats {
            self.send(to, MessageBody::Heartbeat { commit, round });
        }
    }

    // ----- plumbing -----

    fn progress_mut(&mut self, id: NodeId) -> Option<&mut Progress> {
        self.progress.iter_mut().find(|p| p.id == id)
    }

    /// A message from this node in its current term.
    fn message(&self, to: NodeId, body: MessageBody) -> Message {
        Message {
            from: self.id,
            to,
            term: self.term,
            body,
        }
    }

    fn send(&mut self, to: NodeId, body: MessageBody) {
        let m = self.message(to, body);
        self.outbox.push(m);
    }

    /// Replies wait until the state they were computed from is durable.
    fn reply(&mut self, to: NodeId, body: MessageBody) {
        let m = self.message(to, body);
        self.held.push(m);
    }

    fn reply_append(&mut self, to: NodeId, outcome: AppendOutcome) {
        self.reply(to, MessageBody::AppendEntriesResponse { outcome });
    }

    /// Acknowledges entries that match the leader's log up to
    /// `match_index`: as durable once the Ready persisting them is
    /// advanced, and (with [`Config::early_append_ack`]) at once as
    /// received, which asserts nothing about durability (thesis §10.2.1).
    fn ack_append(&mut self, to: NodeId, match_index: LogIndex) {
        if self.config.early_append_ack {
            let received = AppendOutcome::Received { match_index };
            self.send(to, MessageBody::AppendEntriesResponse { outcome: received });
        }
        self.reply_append(to, AppendOutcome::Success { match_index });
    }

    /// The log from `index` on was replaced (by a newer leader's entries or
    /// a snapshot) before being acknowledged: durable acknowledgments still
    /// held for it would claim entries this node no longer has, to a leader
    /// that has been superseded, so they are dropped.
    fn forget_acks_from(&mut self, index: LogIndex) {
        let stale = |m: &Message| {
            matches!(
                m.body,
                MessageBody::AppendEntriesResponse {
                    outcome: AppendOutcome::Success { match_index }
                } if match_index >= index
            )
        };
        self.held.retain(|m| !stale(m));
        for f in &mut self.in_flight {
            f.held.retain(|m| !stale(m));
        }
    }

    /// A message with a newer term moves this node to it.
    #[cfg(feature = "tracing")]
    fn trace_higher_term(&self, m: &Message) {
        let (node, term, peer, msg_term) = (self.id.0, self.term.0, m.from.0, m.term.0);
        let kind = m.body.kind();
        if self.role == Role::Follower {
            tracing::info!(target: "quorate_raft_core", node, term = msg_term, old_term = term, peer, kind, "term advanced: higher term seen");
        } else if self.transferee == Some(m.from) {
            tracing::info!(target: "quorate_raft_core", node, term = msg_term, old_term = term, peer, kind, "leadership transfer finished: the transferee started its election");
        } else {
            tracing::info!(target: "quorate_raft_core", node, term = msg_term, old_term = term, peer, kind, role = ?self.role, why = "higher term seen", "stepped down");
        }
    }

    /// Why a well-formed message of the current term has nothing to do in
    /// this node's state, if so (`handle` would ignore it).
    fn unexpected(&self, m: &Message) -> Option<&'static str> {
        let leader = self.role == Role::Leader;
        let why = match m.body {
            MessageBody::ForwardedProposal { .. } if !leader || self.transferee.is_some() => {
                "forwarded proposal while not the leader, or transferring leadership"
            }
            MessageBody::TimeoutNow if self.leader != Some(m.from) || !self.can_campaign() => {
                "TimeoutNow not from the leader, or this node cannot campaign"
            }
            MessageBody::RequestVoteResponse { .. } if self.role != Role::Candidate => {
                "vote response while not a candidate"
            }
            MessageBody::PreVoteResponse { granted }
                if self.role != Role::PreCandidate
                    || m.term != if granted { self.term.next() } else { self.term } =>
            {
                "pre-vote response while not a pre-candidate for that term"
            }
            MessageBody::AppendEntriesResponse { .. }
            | MessageBody::HeartbeatResponse { .. }
            | MessageBody::InstallSnapshotResponse { .. }
                if !leader || self.progress(m.from).is_none() =>
            {
                "response to a leader while not the leader, or from a non-follower"
            }
            _ => return None,
        };
        Some(why)
    }

    fn validate(&self, m: &Message) -> Result<(), Error> {
        if m.to != self.id {
            return Err(Error::Dropped(DropReason::WrongRecipient {
                to: m.to,
                me: self.id,
            }));
        }
        // A leader's traffic is accepted from nodes we do not know yet (a
        // lagging node learns of new members from the log); anything else
        // from a non-member, such as a removed server's RequestVote, is
        // refused.
        let leader_traffic = matches!(
            m.body,
            MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
        );
        if m.from == self.id || !(leader_traffic || self.configuration.contains(m.from)) {
            return Err(Error::Dropped(DropReason::UnknownPeer { from: m.from }));
        }
        // Terms and indices this far out are unreachable by a real cluster;
        // accepting them would let later arithmetic (a new term, the next
        // entry's index) overflow, so they are refused as malformed.
        let out_of_range = match &m.body {
            MessageBody::AppendEntries {
                prev_log_index,
                entries,
                ..
            } => prev_log_index.0.saturating_add(entries.len() as u64) >= MAX_POSITION,
            MessageBody::InstallSnapshot { meta, .. } => meta.index.0 >= MAX_POSITION,
            _ => false,
        };
        if m.term.0 >= MAX_POSITION || out_of_range {
            return Err(Error::Dropped(DropReason::Malformed {
                from: m.from,
                reason: "term or log index beyond any reachable position",
            }));
        }
        if let MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            ..
        } = &m.body
        {
            let malformed = |reason| {
                Error::Dropped(DropReason::Malformed {
                    from: m.from,
                    reason,
                })
            };
            if *prev_log_term > m.term {
                return Err(malformed("previous entry from a future term"));
            }
            let mut term = *prev_log_term;
            for (i, e) in entries.iter().enumerate() {
                if e.index != prev_log_index.plus(i as u64 + 1) {
                    return Err(malformed("entries are not contiguous"));
                }
                if e.term < term || e.term > m.term {
                    return Err(malformed("entry terms out of order"));
                }
                term = e.term;
            }
            // Committed entries are never replaced (§5.4.3): a current
            // leader that asks for it is refused before anything changes.
            // (A stale leader's message is answered with our term instead.)
            let current = m.term >= self.term;
            for e in entries
                .iter()
                .take_while(|e| current && e.index <= self.log.committed)
            {
                let held = match self.log.term(e.index) {
                    // Compacted entries were committed, so they match.
                    Err(Error::Storage(StorageError::Compacted { .. })) => None,
                    other => other?,
                };
                if held.is_some_and(|t| t != e.term) {
                    return Err(Error::Dropped(DropReason::ConflictWithCommitted {
                        from: m.from,
                        index: e.index,
                        committed: self.log.committed,
                    }));
                }
            }
        }
        if let MessageBody::InstallSnapshot { meta, .. } = &m.body {
            let malformed = |reason| {
                Error::Dropped(DropReason::Malformed {
                    from: m.from,
                    reason,
                })
            };
            if meta.term > m.term
                || meta.term == Term(0)
                || meta.index == LogIndex::ZERO
                || meta.index == LogIndex(u64::MAX)
            {
                return Err(malformed("snapshot of an impossible log position"));
            }
        }
        self.validate_positions(m)?;
        if self.role == Role::Leader && m.term == self.term {
            self.validate_for_leader(m)?;
        }
        Ok(())
    }

    /// Positions no honest sender produces in any state: beyond
    /// [`MAX_POSITION`], or a candidate's last entry from a term after the
    /// election's.
    fn validate_positions(&self, m: &Message) -> Result<(), Error> {
        let beyond = |i: &LogIndex| i.0 >= MAX_POSITION;
        let reason = match &m.body {
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            }
            | MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } if beyond(last_log_index) || *last_log_term > m.term => {
                "candidate's last entry beyond its election"
            }
            MessageBody::AppendEntries { leader_commit, .. } if beyond(leader_commit) => {
                "commit index beyond any reachable position"
            }
            MessageBody::Heartbeat { commit, .. } if beyond(commit) => {
                "commit index beyond any reachable position"
            }
            MessageBody::InstallSnapshot { offset, .. } if *offset >= MAX_POSITION => {
                "snapshot offset beyond any reachable position"
            }
            MessageBody::ForwardedProposal { commands }
                if commands
                    .iter()
                    .any(|c| c.starts_with(crate::config::CONFIGURATION_TAG)) =>
            {
                "forwarded command carries the configuration tag"
            }
            _ => return Ok(()),
        };
        Err(Error::Dropped(DropReason::Malformed {
            from: m.from,
            reason,
        }))
    }

    /// Answers a leader can check against what it sent in its term: no
    /// acknowledgment beyond its log, no rejection of an append it never
    /// sent, no answer to a heartbeat round or snapshot bytes it never
    /// sent, and no second leader. Refused before anything changes.
    fn validate_for_leader(&self, m: &Message) -> Result<(), Error> {
        let last = self.log.last_index();
        let reason = match &m.body {
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => "a second leader in this node's term",
            MessageBody::AppendEntriesResponse {
                outcome:
                    AppendOutcome::Success { match_index } | AppendOutcome::Received { match_index },
            } if *match_index > last => "acknowledged entries the leader does not have",
            MessageBody::AppendEntriesResponse {
                outcome:
                    AppendOutcome::Conflict {
                        rejected_index,
                        conflict_term,
                        first_index,
                    },
            } if *rejected_index > last
                || *rejected_index == LogIndex::ZERO
                || *first_index > *rejected_index
                || *first_index == LogIndex::ZERO
                || conflict_term.is_some_and(|t| t > m.term) =>
            {
                "rejection of an append the leader never sent"
            }
            MessageBody::HeartbeatResponse { round } if *round > self.read_round => {
                "answer to a heartbeat round not yet sent"
            }
            MessageBody::InstallSnapshotResponse { index, received } => {
                // Bounded by what this transfer sends, kept in the progress:
                // no storage read per acknowledgment.
                let too_long = self.progress(m.from).is_some_and(|p| {
                    p.state == ProgressState::Snapshot
                        && p.snapshot_index == *index
                        && *received > p.snapshot_len
                });
                if *index > last || too_long {
                    "snapshot bytes the leader never sent"
                } else {
                    return Ok(());
                }
            }
            _ => return Ok(()),
        };
        Err(Error::Dropped(DropReason::Malformed {
            from: m.from,
            reason,
        }))
    }
}
