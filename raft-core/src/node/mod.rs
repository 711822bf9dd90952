//! [`Node`]: one Raft server as a deterministic state machine.
//!
//! The type, its constructor and read-only accessors live here; its methods
//! are grouped by concern, one file each:
//!
//! - `step`: validation of every incoming message, then dispatch;
//! - `election`: ticks, (pre-)votes, role changes, check-quorum, transfer;
//! - `propose`: the leader's appends and the proposal caps;
//! - `replication`: the leader's side of replication and the commit index;
//! - `follower`: the follower's side (appends, snapshots, answers);
//! - `membership`: configuration changes, learners, witnesses, catch-up;
//! - `reads`: ReadIndex and lease reads;
//! - `ready`: the `Ready` pipeline and `advance`;
//! - `timers`: `poll_timeout` (which tick next acts) and `tick_by`;
//! - `quiesce`: stopping the timers of an idle group, and waking it.

mod election;
mod follower;
mod membership;
mod propose;
mod quiesce;
mod reads;
mod ready;
mod replication;
mod step;
mod timers;

use crate::config::{Config, Configuration};
use crate::error::{DropReason, Error};
use crate::log::RaftLog;
use crate::membership::{CatchUp, Promotion};
use crate::message::{Message, MessageBody};
use crate::progress::Progress;
use crate::ready::{ReadState, Role, SoftState};
use crate::storage::{Snapshot, SnapshotMeta, Storage};
use crate::types::{Entry, HardState, LogIndex, NodeId, Term};
use bytes::BytesMut;
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
/// Drive it with [`tick`](Node::tick) (or [`tick_by`](Node::tick_by),
/// up to [`poll_timeout`](Node::poll_timeout)), [`step`](Node::step) and
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
    restored: Option<Box<Snapshot>>,
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
    /// Timers stopped (see the `quiesce` module).
    quiesced: bool,
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
            quiesced: false,
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

    /// The storage, for writing what a [`Ready`](crate::Ready) asks to persist.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.log.storage
    }

    /// Stops the node and returns its storage: what a restart recovers from.
    pub fn into_storage(self) -> S {
        self.log.storage
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
}
