//! The [`Transport`] trait.

use core::fmt::Debug;
use core::hash::Hash;

/// Something that happened on a transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<P, M> {
    /// A connection to `P` is up (first contact or after a reconnect).
    Connected(P),
    /// The connection to `P` went away; messages to it may be lost until
    /// it is back.
    Disconnected(P),
    /// A message arrived.
    Message {
        /// Who sent it.
        from: P,
        /// What it was.
        msg: M,
    },
}

/// Moves whole messages between peers: the I/O layer under a state machine.
///
/// A transport moves whole messages between peers. It does not retry,
/// order across peers, or persist: the state machines above it (Raft and the
/// rest) already tolerate loss, duplication and reordering. It tells the
/// caller when a peer connects or goes away so the caller can, for example,
/// stop waiting for it.
///
/// # Writing one
///
/// An implementation needs three things:
///
/// 1. **Send** (`&self`, so it can run while another task awaits `recv`):
///    find or open the connection to `to`, encode `msg` with your
///    [`Codec`](crate::codec::Codec), wrap it in a
///    [`Frame`](crate::framing::Frame), and queue it. Wait while that
///    peer's queue is full (that is the back-pressure); never grow it without
///    bound.
/// 2. **Receive** (`&mut self`): one task per connection decodes frames with
///    [`FrameCodec`](crate::framing::FrameCodec) and pushes
///    [`Event::Message`] into one bounded inbound queue; `recv` pops it.
///    Push [`Event::Connected`] / [`Event::Disconnected`] into the same queue
///    as connections come and go.
/// 3. **Errors**: a malformed frame closes that connection (report
///    `Disconnected`), it does not end the transport; `recv` fails only when
///    the transport is shut down.
///
/// For **in process**, [`mem`](crate::mem) is a complete implementation in
/// about a hundred lines: a shared map from peer to a bounded channel.
/// For **QUIC** (e.g. quinn), open one bidirectional stream per peer pair
/// and run exactly the TCP design of [`tcp`](crate#modules) (feature `tokio`) over it:
/// QUIC's own streams could replace the channel ids, but one framed stream
/// keeps the code shared with TCP. Handshake identity, as in `tcp`, goes in
/// the first frame.
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    /// Names a peer (a node id, an address).
    type Peer: Clone + Eq + Hash + Debug + Send + Sync + 'static;
    /// The messages carried.
    type Message: Send + 'static;
    /// What can go wrong.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Queues `msg` for `to`, waiting while that peer's queue is full.
    /// `Ok` means queued, not delivered.
    async fn send(&self, to: Self::Peer, msg: Self::Message) -> Result<(), Self::Error>;

    /// The next event. Fails only once the transport is shut down.
    async fn recv(&mut self) -> Result<Event<Self::Peer, Self::Message>, Self::Error>;
}
