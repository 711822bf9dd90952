//! Errors. Misuse of the API is reported and leaves the node unchanged.
//! Messages a node drops (malformed, misaddressed, from unknown peers,
//! stale) are not errors: [`Node::step`](crate::Node::step) reports them as
//! a [`DropReason`], and fails only with a [`FatalError`].

use crate::types::{LogIndex, NodeId, Term};

/// What went wrong in a [`Node`](crate::Node) call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The node is not the leader; `leader_hint` is the leader it last heard
    /// from in the current term, if any. The application decides whether to
    /// forward the proposal there.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The current leader, if known.
        leader_hint: Option<NodeId>,
    },
    /// A new leader cannot serve a read before an entry of its own term is
    /// committed (its commit index may lag until then, thesis §6.4); retry
    /// shortly.
    #[error("leader of term {term} has not yet committed an entry of its term")]
    NoCommitInTerm {
        /// The leader's term.
        term: Term,
    },
    /// Leadership is being handed to `to`; proposals are refused until the
    /// transfer completes, times out (after an election timeout) or is
    /// abandoned with [`Node::abort_transfer`](crate::Node::abort_transfer).
    #[error("leadership transfer to {to} in progress")]
    TransferInProgress {
        /// The designated next leader.
        to: NodeId,
    },
    /// Leadership can only go to another voter.
    #[error("{id} is not another voting member")]
    NotAVoter {
        /// The refused transferee.
        id: NodeId,
    },
    /// Leadership cannot go to a witness: it holds no payloads to
    /// replicate, so it never leads.
    #[error("{id} is a witness and never leads")]
    WitnessCannotLead {
        /// The refused transferee.
        id: NodeId,
    },
    /// A lease read needs check-quorum and a lease confirmed by a quorum
    /// within the last lease period; fall back to
    /// [`Node::read_index`](crate::Node::read_index).
    #[error("no valid leader lease")]
    LeaseUnavailable,
    /// A [`Config`](crate::Config) field is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// A membership change was asked while the previous one has not
    /// finished (its entry is uncommitted, or the cluster is still joint).
    #[error("membership change in progress (configuration entry at {index})")]
    ConfigurationChangeInProgress {
        /// The index of the unfinished configuration entry.
        index: crate::LogIndex,
    },
    /// A membership change that would leave no voter, or name the same
    /// node twice.
    #[error("invalid membership change: {0}")]
    InvalidConfigurationChange(&'static str),
    /// [`Node::promote_learner`](crate::Node::promote_learner) was asked to
    /// promote a learner that does not yet hold every committed entry: as a
    /// voter it would hold up commitment until it caught up (thesis
    /// §4.2.1). Use [`Node::add_voter`](crate::Node::add_voter), which
    /// promotes it once caught up.
    #[error(
        "learner {id} is not caught up (matches up to {match_index}, committed {commit_index})"
    )]
    NotCaughtUp {
        /// The learner.
        id: NodeId,
        /// How far its log is known to match the leader's.
        match_index: LogIndex,
        /// The leader's commit index.
        commit_index: LogIndex,
    },
    /// A command starts with [`CONFIGURATION_TAG`](crate::CONFIGURATION_TAG),
    /// which marks configuration entries.
    #[error("command starts with the reserved configuration tag")]
    ReservedCommand,
    /// The node's id is not in the stored configuration.
    #[error("node {id} is not a member of the stored configuration")]
    NotAMember {
        /// This node's id.
        id: NodeId,
    },
    /// `id` is not a member of the configuration (a simulator or test
    /// asked about a node that does not exist).
    #[error("unknown peer {from}")]
    UnknownPeer {
        /// The unknown id.
        from: NodeId,
    },
    /// A message [`Node::step`](crate::Node::step) dropped, as an error:
    /// `step` itself reports it as
    /// [`StepOutcome::Dropped`](crate::StepOutcome::Dropped), never as an
    /// error; this variant is for callers that treat some drops as
    /// failures (a test harness of honest peers, say).
    #[error("message dropped: {0}")]
    Dropped(DropReason),
    /// [`Config::applied`](crate::Config::applied) is outside what the
    /// stored state allows: below the snapshot (the state machine would
    /// need entries the log no longer holds) or above the durable commit
    /// index (nothing proves those entries committed).
    #[error("applied index {applied} outside [{snapshot}, {committed}] (snapshot, commit index)")]
    AppliedOutOfRange {
        /// The configured applied index.
        applied: LogIndex,
        /// The index of the stored snapshot.
        snapshot: LogIndex,
        /// The stored commit index.
        committed: LogIndex,
    },
    /// A command is larger than [`Config::max_entry_bytes`](crate::Config::max_entry_bytes).
    #[error("command of {size} bytes exceeds the entry limit of {max}")]
    EntryTooLarge {
        /// The command's size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The leader already holds
    /// [`Config::max_uncommitted_bytes`](crate::Config::max_uncommitted_bytes)
    /// of uncommitted commands; retry once some commit.
    #[error("{uncommitted} uncommitted bytes, a command of {size} would exceed the limit of {max}")]
    UncommittedLimit {
        /// Payload bytes appended by this leader and not yet committed.
        uncommitted: u64,
        /// The refused command's size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A randomized election timeout outside `[election_tick, 2 * election_tick)`.
    #[error("election timeout {ticks} outside [{min}, {max})")]
    ElectionTimeoutOutOfRange {
        /// The refused timeout.
        ticks: u32,
        /// `election_tick`.
        min: u32,
        /// `2 * election_tick`.
        max: u32,
    },
    /// [`Node::advance`](crate::Node::advance) was given Readies out of the
    /// order [`Node::ready`](crate::Node::ready) produced them in.
    #[error("ready {got} advanced before ready {expected}")]
    ReadyOutOfOrder {
        /// The sequence number that must be advanced next.
        expected: u64,
        /// The sequence number that was given.
        got: u64,
    },
    /// The stored state contradicts itself (for example a commit index past
    /// the end of the stored log).
    #[error("inconsistent stored state: {0}")]
    InconsistentStorage(&'static str),
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why [`Node::step`](crate::Node::step) dropped a message. The node's
/// state is unchanged (apart from answering a stale sender with the
/// current term, as Raft asks); the caller may count, log or ignore it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DropReason {
    /// The message was addressed to another node.
    #[error("message for {to} delivered to {me}")]
    WrongRecipient {
        /// The addressee.
        to: NodeId,
        /// This node.
        me: NodeId,
    },
    /// The sender is not a member (a removed server still running, say),
    /// or claims to be this node.
    #[error("message from unknown peer {from}")]
    UnknownPeer {
        /// The claimed sender.
        from: NodeId,
    },
    /// The message violates the protocol's shape (entries that are not
    /// contiguous, an answer to something never sent, positions out of
    /// range).
    #[error("malformed message from {from}: {reason}")]
    Malformed {
        /// The sender.
        from: NodeId,
        /// What was wrong.
        reason: &'static str,
    },
    /// A leader asked this node to overwrite a committed entry. Only a
    /// buggy or byzantine peer does that.
    #[error("{from} tried to overwrite committed entry {index} (committed up to {committed})")]
    ConflictWithCommitted {
        /// The sender.
        from: NodeId,
        /// The first conflicting index.
        index: LogIndex,
        /// This node's commit index.
        committed: LogIndex,
    },
    /// The message is from an older term (a stale leader or candidate is
    /// told the current term; stale replies are dropped).
    #[error("{kind} from {from} of stale term {term} (current {current})")]
    StaleTerm {
        /// The sender.
        from: NodeId,
        /// What kind of message.
        kind: &'static str,
        /// Its term.
        term: Term,
        /// This node's term.
        current: Term,
    },
    /// A vote request from a newer term was ignored: this node hears from
    /// a leader (check-quorum lease), or the candidate is not a voter of
    /// the new configuration.
    #[error("vote request from {from} ignored while a leader is heard")]
    VoteIgnored {
        /// The candidate.
        from: NodeId,
    },
    /// A well-formed message this node's role does not expect (a vote
    /// response after the election ended, an append response to a
    /// follower, a forwarded proposal while not leading).
    #[error("unexpected {kind} from {from}: {why}")]
    Unexpected {
        /// The sender.
        from: NodeId,
        /// What kind of message.
        kind: &'static str,
        /// Why it was not expected.
        why: &'static str,
    },
    /// A snapshot chunk would take the snapshot being received beyond
    /// [`Config::max_snapshot_bytes`](crate::Config::max_snapshot_bytes);
    /// the partial snapshot was discarded.
    #[error("snapshot from {from} would reach {size} bytes, over the limit of {limit}")]
    SnapshotTooLarge {
        /// The sender.
        from: NodeId,
        /// The size the snapshot would have reached with this chunk.
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// Forwarded commands the leader refused (a proposal cap, or a
    /// leadership transfer began); the commands before them were appended.
    #[error("{refused} forwarded commands from {from} refused")]
    ForwardedRefused {
        /// The follower that forwarded them.
        from: NodeId,
        /// How many were not appended.
        refused: usize,
    },
}

impl DropReason {
    /// Whether the message breaks the protocol: no honest, correctly
    /// addressed peer of this cluster sends it (a wrong recipient, a
    /// malformed message, an attempt to overwrite committed entries).
    /// Unknown peers, stale and unexpected messages are routine in a
    /// healthy cluster (removed servers, delays, reordering).
    pub fn is_invalid(&self) -> bool {
        matches!(
            self,
            DropReason::WrongRecipient { .. }
                | DropReason::Malformed { .. }
                | DropReason::ConflictWithCommitted { .. }
        )
    }
}

/// An error [`Node::step`](crate::Node::step) cannot recover from: the
/// storage failed or contradicts itself. Stop the node (restart it from
/// its storage once the storage is repaired).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FatalError {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The stored state contradicts itself.
    #[error("inconsistent stored state: {0}")]
    InconsistentStorage(&'static str),
    /// Any other error, which `step` never returns unless it has a bug;
    /// please report it.
    #[error("internal error: {0}")]
    Internal(Box<Error>),
}

impl From<FatalError> for Error {
    fn from(e: FatalError) -> Self {
        match e {
            FatalError::Storage(e) => Error::Storage(e),
            FatalError::InconsistentStorage(s) => Error::InconsistentStorage(s),
            FatalError::Internal(e) => *e,
        }
    }
}

impl FatalError {
    /// Sorts an error raised inside `step`: storage failures stay what
    /// they are; anything else would be a bug of the node.
    pub(crate) fn from_step(e: Error) -> Self {
        match e {
            Error::Storage(e) => FatalError::Storage(e),
            Error::InconsistentStorage(s) => FatalError::InconsistentStorage(s),
            other => FatalError::Internal(Box::new(other)),
        }
    }
}

/// What went wrong in a [`Storage`](crate::Storage) call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The entry was discarded by log compaction.
    #[error("entry {index} is compacted (log starts at {first})")]
    Compacted {
        /// The requested index.
        index: LogIndex,
        /// The first index still stored.
        first: LogIndex,
    },
    /// The entry is past the end of the stored log.
    #[error("entry {index} is unavailable (log ends at {last})")]
    Unavailable {
        /// The requested index.
        index: LogIndex,
        /// The last index stored.
        last: LogIndex,
    },
    /// Appended entries would leave a gap in the log.
    #[error("append at {index} would leave a gap after {last}")]
    Gap {
        /// The first appended index.
        index: LogIndex,
        /// The last index stored.
        last: LogIndex,
    },
    /// Any other failure of a storage implementation (I/O, corruption).
    #[error("storage failure: {0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}
