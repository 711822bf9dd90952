//! Which connection survives when two peers dial each other at once.
//!
//! Two nodes that dial each other at the same moment end up with two
//! connections between them, one dialed by each. Both sides must keep the
//! *same* one without another round trip, so the rule may depend only on
//! what both know after the handshake: the two node ids and who dialed.
//! libp2p's simultaneous-open extension to multistream-select settles the
//! same question by comparing random nonces both sides exchange; here the
//! hello already carries unique node ids, so they play the nonces' part:
//! **the connection dialed by the lower node id wins**. A new connection in the same direction as the existing
//! one replaces it: the peer (or we) redialed, so the old one is stale or
//! half-open.
//!
//! This module is Sans-IO; the [`tcp`](crate#modules) transport (feature
//! `tokio`) calls [`resolve`] when a handshake completes and closes the
//! loser, gracefully: its writer stops, the queued frames move to the
//! winner, and what was already written on the loser is still read.
//!
//! ```
//! use quorate_transport::simultaneous_open::{resolve, Direction, Resolution};
//!
//! // Node 1 dialed node 2 (connection A) while node 2 dialed node 1 (B).
//! // Node 1 has A up (outbound) when B arrives (inbound): A was dialed by
//! // the lower id, so node 1 keeps it...
//! assert_eq!(resolve(&1, &2, Direction::Outbound, Direction::Inbound), Resolution::KeepExisting);
//! // ...and node 2, with B up (outbound) when A arrives (inbound), switches to A.
//! assert_eq!(resolve(&2, &1, Direction::Outbound, Direction::Inbound), Resolution::ReplaceExisting);
//! ```

/// Who opened a connection, seen from the local node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Direction {
    /// We dialed the peer.
    Outbound,
    /// The peer dialed us.
    Inbound,
}

/// What to do with the connection already up when another one to the same
/// peer completes its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Resolution {
    /// Keep the existing connection; close the new one.
    KeepExisting,
    /// Switch to the new connection; close the existing one.
    ReplaceExisting,
}

/// The direction whose connection wins at `local` between `local` and
/// `remote` when there is one each way: the one dialed by the lower id.
/// (A node talking to itself, `local == remote`, keeps its inbound side.)
pub fn winning_direction<P: Ord>(local: &P, remote: &P) -> Direction {
    if local < remote {
        Direction::Outbound
    } else {
        Direction::Inbound
    }
}

/// Decides between the `existing` connection from `local` to `remote` and a
/// `new` one whose handshake just completed. Both nodes reach the same
/// verdict about the same connection: it depends only on the two ids and who
/// dialed each connection.
pub fn resolve<P: Ord>(local: &P, remote: &P, existing: Direction, new: Direction) -> Resolution {
    if existing == new || new == winning_direction(local, remote) {
        Resolution::ReplaceExisting
    } else {
        Resolution::KeepExisting
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Inbound, Outbound};
    use Resolution::{KeepExisting, ReplaceExisting};

    fn flip(d: Direction) -> Direction {
        match d {
            Outbound => Inbound,
            Inbound => Outbound,
        }
    }

    /// The connection a node ends with, named by who dialed it.
    fn kept(local: u64, remote: u64, existing: Direction, new: Direction) -> (u64, &'static str) {
        let dialer = |d| if d == Outbound { local } else { remote };
        match resolve(&local, &remote, existing, new) {
            KeepExisting => (dialer(existing), "existing"),
            ReplaceExisting => (dialer(new), "new"),
        }
    }

    #[test]
    fn the_connection_dialed_by_the_lower_id_wins() {
        // Connection A dialed by 3, B dialed by 8. Node 3 sees A as outbound,
        // node 8 sees it as inbound; either may have either one up first.
        for (local, remote) in [(3, 8), (8, 3)] {
            for existing in [Outbound, Inbound] {
                let (dialer, _) = kept(local, remote, existing, flip(existing));
                assert_eq!(dialer, 3, "at {local}, existing {existing:?}");
            }
        }
    }

    #[test]
    fn both_sides_agree_whatever_order_they_see_the_connections_in() {
        // Hand enumeration of every (id order, arrival order at each side):
        // both sides must keep the connection with the same dialer.
        for (a, b) in [(1u64, 2u64), (2, 1), (0, u64::MAX)] {
            for a_first in [Outbound, Inbound] {
                for b_first in [Outbound, Inbound] {
                    let at_a = kept(a, b, a_first, flip(a_first)).0;
                    let at_b = kept(b, a, b_first, flip(b_first)).0;
                    assert_eq!(at_a, at_b, "ids {a},{b}: {a_first:?}/{b_first:?}");
                    assert_eq!(at_a, a.min(b));
                }
            }
        }
    }

    #[test]
    fn a_redial_in_the_same_direction_replaces_the_stale_connection() {
        for (local, remote) in [(1, 2), (2, 1)] {
            for d in [Outbound, Inbound] {
                assert_eq!(resolve(&local, &remote, d, d), ReplaceExisting);
            }
        }
    }

    #[test]
    fn winning_direction_by_id() {
        assert_eq!(winning_direction(&1, &2), Outbound);
        assert_eq!(winning_direction(&2, &1), Inbound);
        assert_eq!(winning_direction(&5, &5), Inbound);
    }
}
