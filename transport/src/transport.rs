//! The [`Transport`] trait.

use core::fmt::Debug;
use core::hash::Hash;

use bytes::BytesMut;

use crate::codec::Codec;
use crate::framing::{ChannelId, Frame, FrameCodec, FrameError};

/// Something that happened on a transport.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
/// 1. **Send** (`&self`, so many callers can send at once): find or open
///    the connection to `to`, encode `msg` with your
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
/// `recv` takes `&mut self`, so a task awaiting it holds the transport. To
/// send from other tasks meanwhile, split it into a cloneable sender and
/// the one receiver (quinn's cloneable handles, tokio's `into_split`): the
/// TCP transport does, with `TcpTransport::into_split` and
/// `TcpTransport::sender` (feature `tokio`). The trait itself stays whole,
/// so code generic over it keeps one owner.
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

/// What went wrong in a [`Typed`] transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TypedError<P: Debug, T, C> {
    /// The frame transport underneath failed.
    #[error("transport: {0}")]
    Transport(#[source] T),
    /// A message could not be encoded; nothing was sent.
    #[error("encoding a message: {0}")]
    Encode(#[source] C),
    /// A frame from `from` did not decode. Only that frame is lost: keep
    /// calling `recv`.
    #[error("undecodable message from {from:?}: {source}")]
    Decode {
        /// The sender.
        from: P,
        /// The codec's complaint.
        #[source]
        source: C,
    },
    /// The message encoded to more than the frame size limit allows.
    #[error("frame: {0}")]
    Frame(#[source] FrameError),
}

/// Typed messages over a frame transport (such as TCP): each message is
/// encoded by a [`Codec`] into one frame on one channel. Frames on other
/// channels are skipped, so typed messages can share a connection with the
/// patterns.
///
/// ```
/// use bytes::Bytes;
/// use quorate_transport::codec::BytesCodec;
/// use quorate_transport::framing::{ChannelId, Frame};
/// use quorate_transport::mem::MemHub;
/// use quorate_transport::{Event, Transport, Typed};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let hub: MemHub<u8, Frame> = MemHub::new(8);
/// let mut a = Typed::new(hub.join(1).unwrap(), BytesCodec, ChannelId(7));
/// let b = Typed::new(hub.join(2).unwrap(), BytesCodec, ChannelId(7));
/// assert_eq!(a.recv().await.unwrap(), Event::Connected(2));
/// b.send(1, Bytes::from("hi")).await.unwrap();
/// assert_eq!(a.recv().await.unwrap(), Event::Message { from: 2, msg: Bytes::from("hi") });
/// # });
/// ```
#[derive(Debug)]
pub struct Typed<T, C> {
    inner: T,
    codec: C,
    channel: ChannelId,
    framing: FrameCodec,
}

impl<T, C> Typed<T, C> {
    /// Carries `codec`'s messages on `channel` of `inner`, with the default
    /// maximum frame size.
    pub fn new(inner: T, codec: C, channel: ChannelId) -> Self {
        Typed {
            inner,
            codec,
            channel,
            framing: FrameCodec::new(),
        }
    }

    /// Refuses to send messages longer than `framing` allows (match the
    /// transport underneath).
    pub fn with_framing(mut self, framing: FrameCodec) -> Self {
        self.framing = framing;
        self
    }

    /// The frame transport underneath.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The frame transport underneath, mutably.
    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

#[async_trait::async_trait]
impl<T, C> Transport for Typed<T, C>
where
    T: Transport<Message = Frame>,
    C: Codec,
{
    type Peer = T::Peer;
    type Message = C::Message;
    type Error = TypedError<T::Peer, T::Error, C::Error>;

    async fn send(&self, to: T::Peer, msg: C::Message) -> Result<(), Self::Error> {
        let mut buf = BytesMut::new();
        self.codec
            .encode(&msg, &mut buf)
            .map_err(TypedError::Encode)?;
        if buf.len() > self.framing.max_frame_size() {
            return Err(TypedError::Frame(FrameError::TooLarge {
                len: buf.len() as u64,
                max: self.framing.max_frame_size(),
            }));
        }
        let frame = Frame::new(self.channel, buf.freeze());
        self.inner
            .send(to, frame)
            .await
            .map_err(TypedError::Transport)
    }

    async fn recv(&mut self) -> Result<Event<T::Peer, C::Message>, Self::Error> {
        loop {
            let event = self.inner.recv().await.map_err(TypedError::Transport)?;
            return Ok(match event {
                Event::Connected(p) => Event::Connected(p),
                Event::Disconnected(p) => Event::Disconnected(p),
                Event::Message { from, msg } => {
                    if msg.channel != self.channel {
                        continue;
                    }
                    match self.codec.decode(msg.payload) {
                        Ok(msg) => Event::Message { from, msg },
                        Err(source) => return Err(TypedError::Decode { from, source }),
                    }
                }
            });
        }
    }
}
