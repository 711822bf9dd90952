//! What [`TcpTransport`] reports about itself: its stats snapshot and the
//! last failed dial to a peer.

use core::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use super::PeerId;
#[cfg(doc)]
use super::{TcpConfig, TcpTransport, Trust};
#[cfg(doc)]
use crate::Transport;

/// The last failed dial to a peer added with
/// [`add_peer`](TcpTransport::add_peer), from
/// [`dial_failure`](TcpTransport::dial_failure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialFailure {
    /// The address dialed.
    pub addr: SocketAddr,
    /// What went wrong, as the OS or the handshake said it.
    pub error: String,
    /// When the dial failed.
    pub at: Instant,
    /// Dials that failed in a row.
    pub attempts: u32,
}

impl fmt::Display for DialFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dialing {}: {}", self.addr, self.error)
    }
}

/// Connections closed because they hit a limit, by limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitCounts {
    /// Accepted past [`TcpConfig::max_connections`].
    pub max_connections: u64,
    /// No hello within [`TcpConfig::hello_timeout`].
    pub hello_timeout: u64,
    /// No frame completed for [`TcpConfig::idle_timeout`].
    pub idle_timeout: u64,
    /// A client sent a frame over [`TcpConfig::client_max_frame`].
    pub client_frame: u64,
    /// A partial frame would have passed [`TcpConfig::max_buffered_bytes`].
    pub buffered_bytes: u64,
}

/// What one peer has queued, from [`TcpStats::queues`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueDepth {
    /// The peer.
    pub peer: PeerId,
    /// Whether a connection to it is up.
    pub connected: bool,
    /// Urgent frames waiting.
    pub urgent_frames: usize,
    /// Bulk frames waiting.
    pub bulk_frames: usize,
    /// Payload bytes of the bulk frames waiting.
    pub bulk_bytes: usize,
}

/// Events waiting for [`recv`](Transport::recv), by lane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InboundDepth {
    /// Urgent frames from peers.
    pub urgent: usize,
    /// Other events from peers.
    pub peers: usize,
    /// Events from client connections.
    pub clients: usize,
}

/// A snapshot of a transport's connections, counters and queues, from
/// [`TcpTransport::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Connections to peers past their handshake.
    pub peer_connections: usize,
    /// Client connections ([`Trust::KnownPeers`]) past their handshake.
    pub client_connections: usize,
    /// Accepted connections open, handshakes included (what
    /// [`TcpConfig::max_connections`] bounds).
    pub accepted_connections: usize,
    /// Hellos refused for want of proof of the claimed id.
    pub refused_hellos: u64,
    /// Connections closed by each limit.
    pub closed: LimitCounts,
    /// Connections closed for a malformed frame.
    pub malformed: u64,
    /// Failed `accept` calls (each followed by a backoff).
    pub accept_errors: u64,
    /// Frames dropped by [`try_send`](TcpTransport::try_send) at a
    /// high-water mark.
    pub dropped: u64,
    /// Bytes of partial frames held now (at most
    /// [`TcpConfig::max_buffered_bytes`]).
    pub buffered_bytes: usize,
    /// Events waiting for `recv`.
    pub inbound: InboundDepth,
    /// Each peer's outbound queue, by peer id.
    pub queues: Vec<QueueDepth>,
}
