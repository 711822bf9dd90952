//! Whom a hello may name: the admission rule (Sans-IO) and the ids the
//! transport gives client connections.

use core::sync::atomic::{AtomicU64, Ordering};

use super::PeerId;

/// Whose word a connection's hello is taken on. Set it in
/// [`TcpConfig::trust`](super::TcpConfig::trust).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Trust {
    /// The id in the hello is the peer's id, whoever sent it (the
    /// behaviour before trust levels existed). With an
    /// [authenticating](super::StreamWrapper::authenticates) wrapper the
    /// handshake must prove that id, or the connection is refused.
    #[default]
    Hello,
    /// Only ids added with [`add_peer`](super::TcpTransport::add_peer) are
    /// peers (and with an authenticating wrapper only when the handshake
    /// proves the id; a known id without proof is refused). Every other
    /// hello opens a *client connection*, named by an id the transport
    /// assigns ([`PeerId::is_client`]): two clients claiming the same id
    /// stay apart, and none can pose as a node. Client connections get
    /// [`TcpConfig::client_max_frame`](super::TcpConfig::client_max_frame)
    /// and their frames are handed out after the peers'. A node that
    /// connected before it was added is cut when it is, and comes back as
    /// the peer when it redials.
    KnownPeers,
}

/// What to make of a hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// The connection is this peer's.
    Peer(PeerId),
    /// A client connection: give it an id of its own.
    Client,
    /// Close it, for this reason.
    Refuse(&'static str),
}

/// Decides on a hello claiming `claimed`. `known`: the id was added with
/// `add_peer`; `proven`: the id the wrapper's handshake proved, if any.
pub(super) fn admit(
    trust: Trust,
    authenticates: bool,
    claimed: PeerId,
    known: bool,
    proven: Option<PeerId>,
) -> Admission {
    let proved = !authenticates || proven == Some(claimed);
    let refusal = if proven.is_some() {
        "the handshake proved another id"
    } else {
        "the handshake proved no id"
    };
    match trust {
        Trust::KnownPeers if !known => Admission::Client,
        _ if proved => Admission::Peer(claimed),
        _ => Admission::Refuse(refusal),
    }
}

/// Client ids handed out in this process; never reused.
static NEXT_CLIENT: AtomicU64 = AtomicU64::new(0);

/// A fresh client connection id.
pub(super) fn next_client_id() -> PeerId {
    let n = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
    PeerId(PeerId::CLIENT_BIT | (n & !PeerId::CLIENT_BIT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Admission::{Client, Peer, Refuse};

    const X: PeerId = PeerId(7);
    const Y: PeerId = PeerId(8);

    #[test]
    fn hello_trust_takes_the_claim_unless_the_wrapper_authenticates() {
        assert_eq!(admit(Trust::Hello, false, X, false, None), Peer(X));
        assert_eq!(admit(Trust::Hello, false, X, true, Some(Y)), Peer(X));
        assert_eq!(admit(Trust::Hello, true, X, false, Some(X)), Peer(X));
        assert!(matches!(
            admit(Trust::Hello, true, X, true, None),
            Refuse(_)
        ));
        assert!(matches!(
            admit(Trust::Hello, true, X, true, Some(Y)),
            Refuse(_)
        ));
    }

    #[test]
    fn known_peers_makes_strangers_clients_and_refuses_unproven_peers() {
        assert_eq!(admit(Trust::KnownPeers, false, X, true, None), Peer(X));
        assert_eq!(admit(Trust::KnownPeers, false, X, false, None), Client);
        assert_eq!(admit(Trust::KnownPeers, true, X, true, Some(X)), Peer(X));
        assert!(matches!(
            admit(Trust::KnownPeers, true, X, true, None),
            Refuse(_)
        ));
        assert!(matches!(
            admit(Trust::KnownPeers, true, X, true, Some(Y)),
            Refuse(_)
        ));
        // Unknown ids are clients, proven or not.
        assert_eq!(admit(Trust::KnownPeers, true, X, false, None), Client);
        assert_eq!(admit(Trust::KnownPeers, true, X, false, Some(X)), Client);
    }

    #[test]
    fn client_ids_are_distinct_and_in_the_client_range() {
        let ids: Vec<PeerId> = (0..100).map(|_| next_client_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
        assert!(ids.iter().all(|id| id.is_client()));
        assert!(!PeerId(u64::MAX >> 1).is_client());
    }
}
