//! [`PeerId`], the name of a node on a transport, available without the
//! `tokio` feature so that Sans-IO code (and crates converting their own node
//! ids) can use it.

use core::fmt;

/// Names a node on the TCP transport; sent in the handshake.
///
/// Ids with the top bit set ([`CLIENT_BIT`](Self::CLIENT_BIT)) are the ones
/// a transport under `Trust::KnownPeers` assigns to client connections:
/// unique per connection and never reused in the process. Give nodes ids
/// below 2^63; [`PeerId::try_from`] a `u64` checks it. The same `u64` names
/// the node in `quorate-raft-core` (`NodeId(u64)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PeerId(pub u64);

impl PeerId {
    /// The bit that marks a transport-assigned client connection id.
    pub const CLIENT_BIT: u64 = 1 << 63;

    /// Whether this id is in the client range (assigned by the transport
    /// to a client connection under `Trust::KnownPeers`).
    pub const fn is_client(self) -> bool {
        self.0 & Self::CLIENT_BIT != 0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_client() {
            write!(f, "client {}", self.0 & !Self::CLIENT_BIT)
        } else {
            write!(f, "peer {}", self.0)
        }
    }
}

/// A node id in the range the transport reserves for client connections
/// (top bit set): it cannot name a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("id {id} has the client bit (2^63) set: it names a client connection, not a node")]
pub struct ClientRangeError {
    /// The refused id.
    pub id: u64,
}

impl TryFrom<u64> for PeerId {
    type Error = ClientRangeError;

    /// A node's id as a peer id; ids at or above 2^63 are client
    /// connections' and refused.
    fn try_from(id: u64) -> Result<Self, Self::Error> {
        let peer = PeerId(id);
        if peer.is_client() {
            Err(ClientRangeError { id })
        } else {
            Ok(peer)
        }
    }
}

impl TryFrom<PeerId> for u64 {
    type Error = ClientRangeError;

    /// The node id a peer id names; a client connection's id names none.
    fn try_from(peer: PeerId) -> Result<Self, Self::Error> {
        if peer.is_client() {
            Err(ClientRangeError { id: peer.0 })
        } else {
            Ok(peer.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_convert_both_ways_and_client_ids_are_refused() {
        for id in [0, 1, 42, PeerId::CLIENT_BIT - 1] {
            let peer = PeerId::try_from(id).unwrap();
            assert_eq!(peer, PeerId(id));
            assert_eq!(u64::try_from(peer), Ok(id));
        }
        for id in [PeerId::CLIENT_BIT, PeerId::CLIENT_BIT | 7, u64::MAX] {
            assert_eq!(PeerId::try_from(id), Err(ClientRangeError { id }));
            assert_eq!(u64::try_from(PeerId(id)), Err(ClientRangeError { id }));
        }
    }

    #[test]
    fn display_tells_clients_from_peers() {
        assert_eq!(PeerId(3).to_string(), "peer 3");
        assert_eq!(PeerId(PeerId::CLIENT_BIT | 3).to_string(), "client 3");
    }
}
