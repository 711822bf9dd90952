//! The RPCs nodes exchange (figure 2 of the paper), as plain data. The
//! application carries them between nodes by any means; with the `serde`
//! feature they serialize with any serde format (and so through
//! `quorate-transport`'s serde codec).

use crate::storage::SnapshotMeta;
use crate::types::{Entry, LogIndex, NodeId, Term};

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// A message from one node to another.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's current term; every RPC carries it (§5.1).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of message.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[non_exhaustive]
pub enum MessageBody {
    /// A candidate asks for a vote (§5.2). It carries the candidate's last log
    /// position so voters can refuse candidates with stale logs (§5.4.1).
    RequestVote {
        /// Index of the candidate's last log entry.
        last_log_index: LogIndex,
        /// Term of the candidate's last log entry.
        last_log_term: Term,
        /// The election was started by the leader handing over (TimeoutNow):
        /// voters answer even while they hear from that leader.
        leadership_transfer: bool,
    },
    /// The answer to [`MessageBody::RequestVote`].
    RequestVoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// A would-be candidate asks whether it could win an election (thesis
    /// §9.6). The message's term is the term the election would use; the
    /// receiver does not move to it.
    PreVote {
        /// Index of the sender's last log entry.
        last_log_index: LogIndex,
        /// Term of the sender's last log entry.
        last_log_term: Term,
    },
    /// The answer to [`MessageBody::PreVote`]: granted answers carry the
    /// asked term, refusals the voter's own term.
    PreVoteResponse {
        /// Whether the vote would be granted.
        granted: bool,
    },
    /// The leader replicates entries (§5.3), which follow the entry at
    /// `prev_log_index`/`prev_log_term`.
    AppendEntries {
        /// Index of the entry just before `entries`.
        prev_log_index: LogIndex,
        /// Term of that entry.
        prev_log_term: Term,
        /// New entries, contiguous from `prev_log_index + 1`; may be empty.
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: LogIndex,
    },
    /// The answer to [`MessageBody::AppendEntries`].
    AppendEntriesResponse {
        /// Accepted with a match index, or rejected with a repair hint.
        outcome: AppendOutcome,
    },
    /// The leader asserts its leadership and tells the follower how far it
    /// may commit (at most the follower's known match index, so the follower
    /// never commits entries it does not have from this leader).
    Heartbeat {
        /// The commit index the follower may adopt.
        commit: LogIndex,
        /// The leader's read round: answers to this heartbeat confirm
        /// leadership for reads registered up to this round (ReadIndex).
        round: u64,
        /// The leader has gone quiet ([`Node::quiesce`](crate::Node::quiesce)):
        /// a follower whose log is complete (everything up to `commit`
        /// and nothing after) stops its election timer until the next
        /// message of the group wakes it.
        quiesce: bool,
    },
    /// The leader hands leadership over: the receiver starts an election at
    /// once (thesis §3.10).
    TimeoutNow,
    /// Commands a follower forwards to the leader it knows
    /// ([`Node::propose_or_forward`](crate::Node::propose_or_forward)).
    /// Dropped by a node that is not the leader of that term.
    ForwardedProposal {
        /// The commands, in order.
        commands: Vec<bytes::Bytes>,
    },
    /// One chunk of the leader's snapshot, for a follower that needs
    /// entries the leader compacted (InstallSnapshot, thesis §5.3). Chunks
    /// go one at a time; the transfer resumes from the offset the follower
    /// reports, so a lost chunk is simply sent again.
    InstallSnapshot {
        /// Which log prefix the snapshot replaces (boxed: it holds the
        /// membership, and keeping it out of line keeps every other message
        /// small).
        meta: Box<SnapshotMeta>,
        /// Where `data` starts in the snapshot's data.
        offset: u64,
        /// The chunk.
        data: bytes::Bytes,
        /// Whether this is the last chunk.
        done: bool,
    },
    /// The answer to a chunk of [`MessageBody::InstallSnapshot`] that was
    /// not the last: how many bytes of the snapshot at `index` the follower
    /// holds, so the leader sends from there. The last chunk is answered
    /// with an [`MessageBody::AppendEntriesResponse`] once the snapshot is
    /// durable.
    InstallSnapshotResponse {
        /// The snapshot's index.
        index: LogIndex,
        /// Bytes received so far.
        received: u64,
    },
    /// The answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse {
        /// The round of the heartbeat answered (0 when answering a stale
        /// leader).
        round: u64,
    },
}

/// The result of an AppendEntries at the follower.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub enum AppendOutcome {
    /// The follower's log now matches the leader's up to `match_index`,
    /// and those entries are durable there: this is what counts towards
    /// commitment.
    Success {
        /// The last index known to match the leader's log.
        match_index: LogIndex,
    },
    /// The follower's log matches the leader's up to `match_index`, but
    /// those entries may not be durable yet: sent at once when
    /// [`Config::early_append_ack`](crate::Config::early_append_ack) is set,
    /// ahead of the [`AppendOutcome::Success`] that follows once they are
    /// durable. The leader uses it to send further entries (next index,
    /// probe to replicate, in-flight window) and never counts it towards
    /// commitment (thesis §10.2.1).
    Received {
        /// The last index known to match the leader's log.
        match_index: LogIndex,
    },
    /// The follower's log does not contain the entry at `rejected_index`
    /// with the leader's term. The hint lets the leader skip a whole term
    /// per round trip instead of one entry (the extended paper, end of §5.3).
    Conflict {
        /// The `prev_log_index` that was rejected (lets the leader drop
        /// stale rejections).
        rejected_index: LogIndex,
        /// The term of the follower's entry at `rejected_index`, or `None`
        /// if its log is shorter than that.
        conflict_term: Option<Term>,
        /// The first index of `conflict_term` in the follower's log, or its
        /// last index + 1 when `conflict_term` is `None`.
        first_index: LogIndex,
    },
}

impl MessageBody {
    /// The message's kind (its variant's name), for logs, counters and
    /// [`DropReason`](crate::DropReason)s; never its contents.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageBody::RequestVote { .. } => "RequestVote",
            MessageBody::RequestVoteResponse { .. } => "RequestVoteResponse",
            MessageBody::PreVote { .. } => "PreVote",
            MessageBody::PreVoteResponse { .. } => "PreVoteResponse",
            MessageBody::AppendEntries { .. } => "AppendEntries",
            MessageBody::AppendEntriesResponse { .. } => "AppendEntriesResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ForwardedProposal { .. } => "ForwardedProposal",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::InstallSnapshotResponse { .. } => "InstallSnapshotResponse",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
        }
    }

    /// Whether this is a response. Responses assert the sender's durable
    /// state (a granted vote, an acknowledged append) and so are held back
    /// until that state is persisted, except
    /// [`AppendOutcome::Received`], which asserts nothing durable.
    pub fn is_response(&self) -> bool {
        matches!(
            self,
            MessageBody::RequestVoteResponse { .. }
                | MessageBody::AppendEntriesResponse { .. }
                | MessageBody::HeartbeatResponse { .. }
        )
    }
}
