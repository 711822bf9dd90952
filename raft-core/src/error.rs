//! Errors. Bad input (malformed or misaddressed messages, unknown peers) and
//! misuse of the API are reported and leave the node unchanged.

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
    /// Leadership is being handed to `to`; proposals wait until the transfer
    /// completes or is abandoned (after an election timeout).
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
    /// A message came from a node that is not a member.
    #[error("message from unknown peer {from}")]
    UnknownPeer {
        /// The claimed sender.
        from: NodeId,
    },
    /// A message was addressed to another node.
    #[error("message for {to} delivered to {me}")]
    WrongRecipient {
        /// The addressee.
        to: NodeId,
        /// This node.
        me: NodeId,
    },
    /// A message violates the protocol's shape (for example entries that are
    /// not contiguous).
    #[error("malformed message from {from}: {reason}")]
    MalformedMessage {
        /// The sender.
        from: NodeId,
        /// What was wrong.
        reason: &'static str,
    },
    /// A leader asked this node to overwrite a committed entry. Only a buggy
    /// or byzantine peer does that; the message is refused.
    #[error("{from} tried to overwrite committed entry {index} (committed up to {committed})")]
    ConflictWithCommitted {
        /// The sender.
        from: NodeId,
        /// The first conflicting index.
        index: LogIndex,
        /// This node's commit index.
        committed: LogIndex,
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
