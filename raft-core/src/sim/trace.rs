//! The simulator's trace: one event per step, printable for a failing seed.

use crate::{LogIndex, MessageBody, NodeId, Term};
use quorate_transport::sim::SimTime;
use std::fmt;

/// One step of the simulation, as kept in the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceEvent {
    /// A node's clock ticked.
    Tick {
        /// When.
        at: SimTime,
        /// Which node.
        node: NodeId,
    },
    /// A message arrived.
    Deliver {
        /// When.
        at: SimTime,
        /// Sender.
        from: NodeId,
        /// Receiver.
        to: NodeId,
        /// The sender's term.
        term: Term,
        /// What kind of message.
        kind: &'static str,
    },
    /// A storage write became durable.
    Persisted {
        /// When.
        at: SimTime,
        /// Which node.
        node: NodeId,
        /// Last index made durable.
        last: LogIndex,
    },
    /// A node became leader.
    Elected {
        /// When.
        at: SimTime,
        /// Which node.
        node: NodeId,
        /// Its term.
        term: Term,
    },
    /// A client proposal was accepted.
    Proposed {
        /// When.
        at: SimTime,
        /// The leader.
        node: NodeId,
        /// The entry's index.
        index: LogIndex,
    },
    /// A fault was injected or healed.
    Fault {
        /// When.
        at: SimTime,
        /// What.
        what: String,
    },
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |t: &SimTime| t.as_nanos() as f64 / 1e6;
        match self {
            TraceEvent::Tick { at, node } => write!(f, "{:>10.3}ms tick {node:?}", ms(at)),
            TraceEvent::Deliver {
                at,
                from,
                to,
                term,
                kind,
            } => {
                write!(f, "{:>10.3}ms {from:?}->{to:?} {kind} {term:?}", ms(at))
            }
            TraceEvent::Persisted { at, node, last } => {
                write!(f, "{:>10.3}ms {node:?} persisted to {last:?}", ms(at))
            }
            TraceEvent::Elected { at, node, term } => {
                write!(f, "{:>10.3}ms {node:?} leads {term:?}", ms(at))
            }
            TraceEvent::Proposed { at, node, index } => {
                write!(f, "{:>10.3}ms {node:?} proposed {index:?}", ms(at))
            }
            TraceEvent::Fault { at, what } => write!(f, "{:>10.3}ms FAULT {what}", ms(at)),
        }
    }
}

pub(crate) fn kind(body: &MessageBody) -> &'static str {
    match body {
        MessageBody::RequestVote { .. } => "RequestVote",
        MessageBody::TimeoutNow => "TimeoutNow",
        MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
        MessageBody::InstallSnapshotResponse { .. } => "SnapshotChunkAck",
        MessageBody::ForwardedProposal { .. } => "ForwardedProposal",
        MessageBody::RequestVoteResponse { granted: true } => "VoteGranted",
        MessageBody::RequestVoteResponse { granted: false } => "VoteRefused",
        MessageBody::AppendEntries { .. } => "AppendEntries",
        MessageBody::AppendEntriesResponse { .. } => "AppendResponse",
        MessageBody::Heartbeat { .. } => "Heartbeat",
        MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
        MessageBody::PreVote { .. } => "PreVote",
        MessageBody::PreVoteResponse { granted: true } => "PreVoteGranted",
        MessageBody::PreVoteResponse { granted: false } => "PreVoteRefused",
    }
}
