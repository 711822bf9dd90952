//! The protocol's vocabulary: node ids, terms, log indices, log entries and
//! the hard state a node must keep on stable storage.

use bytes::Bytes;
use core::fmt;

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// The identity of a Raft node (a server in the paper's words).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize), serde(transparent))]
pub struct NodeId(pub u64);

/// A member's id is its transport peer id: the same `u64`, which must lie
/// below 2^63 (the transport keeps the top half for client connections).
#[cfg(feature = "codec")]
impl TryFrom<NodeId> for quorate_transport::PeerId {
    type Error = quorate_transport::ClientRangeError;

    fn try_from(id: NodeId) -> Result<Self, Self::Error> {
        quorate_transport::PeerId::try_from(id.0)
    }
}

/// The member a transport peer id names; a client connection's id (top bit
/// set) names none.
#[cfg(feature = "codec")]
impl TryFrom<quorate_transport::PeerId> for NodeId {
    type Error = quorate_transport::ClientRangeError;

    fn try_from(peer: quorate_transport::PeerId) -> Result<Self, Self::Error> {
        u64::try_from(peer).map(NodeId)
    }
}

/// A Raft term: a logical clock that numbers leaderships. Term 0 exists only
/// before the first election and in the sentinel entry at index 0.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize), serde(transparent))]
pub struct Term(pub u64);

/// A position in the replicated log. The first real entry has index 1;
/// index 0 is the empty log's sentinel.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize), serde(transparent))]
pub struct LogIndex(pub u64);

macro_rules! show_as_number {
    ($ty:ident, $prefix:literal) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}
show_as_number!(NodeId, "n");
show_as_number!(Term, "t");
show_as_number!(LogIndex, "i");

impl Term {
    /// The term after this one.
    #[must_use]
    pub const fn next(self) -> Self {
        Term(self.0.saturating_add(1))
    }
}

impl LogIndex {
    /// The sentinel index of the empty log.
    pub const ZERO: LogIndex = LogIndex(0);

    /// The index after this one.
    #[must_use]
    pub const fn next(self) -> Self {
        LogIndex(self.0.saturating_add(1))
    }

    /// The index before this one (0 stays 0).
    #[must_use]
    pub const fn prev(self) -> Self {
        LogIndex(self.0.saturating_sub(1))
    }

    /// `self + n`, saturating.
    #[must_use]
    pub const fn plus(self, n: u64) -> Self {
        LogIndex(self.0.saturating_add(n))
    }
}

/// One entry of the replicated log: a command (or, when `data` is empty, the
/// no-op a new leader appends to commit entries of earlier terms).
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// Its position in the log.
    pub index: LogIndex,
    /// The application's command. Cloning is a reference-count increment.
    pub data: Bytes,
}

impl Entry {
    /// The configuration this entry carries, if it is a configuration
    /// entry (membership change, thesis §4.3) rather than a command.
    /// Applications skip such entries when applying commands.
    pub fn configuration(&self) -> Option<crate::Configuration> {
        crate::Configuration::decode(&self.data)
    }

    /// Whether this entry is a command for the state machine: neither a
    /// configuration entry nor the empty entry a new leader appends.
    /// Apply only these.
    pub fn is_command(&self) -> bool {
        !self.data.is_empty() && !self.data.starts_with(crate::config::CONFIGURATION_TAG)
    }

    /// Bytes this entry counts against a message size budget.
    pub(crate) fn size(&self) -> u64 {
        // 16 bytes of term and index, then the payload.
        16 + self.data.len() as u64
    }
}

/// The state a node must persist before it answers anyone (figure 2 of the
/// paper: `currentTerm`, `votedFor`), plus the commit index so a restarted
/// node can re-apply without waiting for a leader.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// The highest log index known to be committed.
    pub commit: LogIndex,
}

#[cfg(all(test, feature = "codec"))]
mod tests {
    use super::NodeId;
    use quorate_transport::{ClientRangeError, PeerId};

    #[test]
    fn node_ids_are_peer_ids_below_the_client_range() {
        for id in [0, 7, PeerId::CLIENT_BIT - 1] {
            assert_eq!(PeerId::try_from(NodeId(id)), Ok(PeerId(id)));
            assert_eq!(NodeId::try_from(PeerId(id)), Ok(NodeId(id)));
        }
        for id in [PeerId::CLIENT_BIT, u64::MAX] {
            assert_eq!(PeerId::try_from(NodeId(id)), Err(ClientRangeError { id }));
            assert_eq!(NodeId::try_from(PeerId(id)), Err(ClientRangeError { id }));
        }
    }
}
