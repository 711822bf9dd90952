//! Many pattern endpoints on one connection: a Sans-IO multiplexer that
//! routes inbound frames to endpoints by channel and gathers their outbound
//! messages as frames.
//!
//! ```
//! use core::time::Duration;
//! use bytes::Bytes;
//! use quorate_transport::framing::ChannelId;
//! use quorate_transport::patterns::mux::{Endpoint, Mux};
//! use quorate_transport::patterns::pubsub::Subscriber;
//! use quorate_transport::patterns::reqrep::Requester;
//! use quorate_transport::patterns::Limits;
//!
//! // A chat client: archive requests on channel 1, new posts on channel 3.
//! let now = Duration::ZERO;
//! let mut client: Mux<u8> = Mux::new();
//! client.add(ChannelId(1), Endpoint::Requester(Requester::new(Limits::default()))).unwrap();
//! client.add(ChannelId(3), Endpoint::Subscriber(Subscriber::new(Limits::default()))).unwrap();
//! let sub = client.subscriber_mut(ChannelId(3)).unwrap();
//! sub.connect(now, 9);
//! sub.subscribe(now, Bytes::from("room/")).unwrap();
//! let (to, frame) = client.poll_transmit().unwrap();
//! assert_eq!((to, frame.channel), (9, ChannelId(3)));
//! ```

use alloc::collections::BTreeMap;
use core::fmt::Debug;
use core::ops::Bound;
use core::time::Duration;

use bytes::BytesMut;

use super::pubsub::{Publisher, Subscriber};
use super::pushpull::{Puller, Pusher};
use super::reqrep::{Replier, Requester};
use super::router::{Dealer, Router};
use super::{Wire, WireError};
use crate::framing::{ChannelId, Frame};

/// One pattern endpoint on a channel.
#[derive(Debug)]
#[non_exhaustive]
pub enum Endpoint<P> {
    /// Asks; see [`Requester`].
    Requester(Requester<P>),
    /// Answers; see [`Replier`].
    Replier(Replier<P>),
    /// Pushes; see [`Pusher`].
    Pusher(Pusher<P>),
    /// Pulls; see [`Puller`].
    Puller(Puller<P>),
    /// Publishes; see [`Publisher`].
    Publisher(Publisher<P>),
    /// Subscribes; see [`Subscriber`].
    Subscriber(Subscriber<P>),
    /// Deals; see [`Dealer`].
    Dealer(Dealer<P>),
    /// Routes; see [`Router`].
    Router(Router<P>),
}

impl<P: Copy + Ord + Debug> Endpoint<P> {
    fn handle(&mut self, now: Duration, from: P, msg: Wire) {
        match self {
            Endpoint::Requester(e) => e.handle(from, msg),
            Endpoint::Replier(e) => e.handle(from, msg),
            Endpoint::Pusher(e) => e.handle(now, from, msg),
            Endpoint::Puller(e) => e.handle(from, msg),
            Endpoint::Publisher(e) => e.handle(from, msg),
            Endpoint::Subscriber(e) => e.handle(from, msg),
            Endpoint::Dealer(e) => e.handle(from, msg),
            Endpoint::Router(e) => e.handle(from, msg),
        }
    }

    fn handle_timeout(&mut self, now: Duration) {
        match self {
            Endpoint::Requester(e) => e.handle_timeout(now),
            Endpoint::Puller(e) => e.handle_timeout(now),
            Endpoint::Subscriber(e) => e.handle_timeout(now),
            Endpoint::Dealer(e) => e.handle_timeout(now),
            Endpoint::Replier(_)
            | Endpoint::Pusher(_)
            | Endpoint::Publisher(_)
            | Endpoint::Router(_) => {}
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        match self {
            Endpoint::Requester(e) => e.poll_timeout(),
            Endpoint::Puller(e) => e.poll_timeout(),
            Endpoint::Subscriber(e) => e.poll_timeout(),
            Endpoint::Dealer(e) => e.poll_timeout(),
            Endpoint::Replier(_)
            | Endpoint::Pusher(_)
            | Endpoint::Publisher(_)
            | Endpoint::Router(_) => None,
        }
    }

    fn poll_transmit(&mut self) -> Option<(P, Wire)> {
        match self {
            Endpoint::Requester(e) => e.poll_transmit(),
            Endpoint::Replier(e) => e.poll_transmit(),
            Endpoint::Pusher(e) => e.poll_transmit(),
            Endpoint::Puller(e) => e.poll_transmit(),
            Endpoint::Publisher(e) => e.poll_transmit(),
            Endpoint::Subscriber(e) => e.poll_transmit(),
            Endpoint::Dealer(e) => e.poll_transmit(),
            Endpoint::Router(e) => e.poll_transmit(),
        }
    }

    /// Forgets `peer` where the endpoint keeps per-peer state (a closed
    /// connection). Requests in flight to it still end by timeout.
    fn disconnect(&mut self, peer: P) {
        match self {
            Endpoint::Pusher(e) => e.disconnect(peer),
            Endpoint::Puller(e) => e.disconnect(peer),
            Endpoint::Publisher(e) => e.disconnect(peer),
            Endpoint::Subscriber(e) => e.disconnect(peer),
            Endpoint::Dealer(e) => e.disconnect(peer),
            Endpoint::Router(e) => e.disconnect(peer),
            Endpoint::Requester(_) | Endpoint::Replier(_) => {}
        }
    }
}

/// What went wrong in a [`Mux`]. The mux is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MuxError {
    /// [`Mux::add`] on a channel that already has an endpoint.
    #[error("{0} already has an endpoint")]
    ChannelInUse(ChannelId),
    /// A frame arrived on a channel with no endpoint.
    #[error("no endpoint on {0}")]
    UnknownChannel(ChannelId),
    /// A frame's payload is not a pattern message.
    #[error("malformed pattern message on {channel}: {source}")]
    Wire {
        /// The channel it came on.
        channel: ChannelId,
        /// What was wrong.
        #[source]
        source: WireError,
    },
}

/// Pattern endpoints keyed by channel. Feed it every inbound frame and poll
/// it for outbound frames; reach the endpoints through the typed accessors
/// to send and read application messages.
#[derive(Debug)]
pub struct Mux<P> {
    endpoints: BTreeMap<ChannelId, Endpoint<P>>,
    /// Where the round-robin over endpoints in `poll_transmit` resumes.
    cursor: Option<ChannelId>,
    /// Outbound payloads are encoded here and split off, so frames share
    /// one allocation, reclaimed once the frames before it are dropped.
    scratch: BytesMut,
}

impl<P> Default for Mux<P> {
    fn default() -> Self {
        Mux {
            endpoints: BTreeMap::new(),
            cursor: None,
            scratch: BytesMut::new(),
        }
    }
}

/// What [`Mux`]'s encoding buffer reserves at a time: many small frames
/// share one allocation.
const SCRATCH_CHUNK: usize = 16 * 1024;

/// A payload larger than this gets the buffer it grew to, and the mux
/// starts a fresh one: one large message must not pin its size for good.
const SCRATCH_KEEP: usize = 64 * 1024;

macro_rules! accessor {
    ($name:ident, $variant:ident, $ty:ident) => {
        #[doc = concat!("The [`", stringify!($ty), "`] on `channel`, if that is what is there.")]
        pub fn $name(&mut self, channel: ChannelId) -> Option<&mut $ty<P>> {
            match self.endpoints.get_mut(&channel) {
                Some(Endpoint::$variant(e)) => Some(e),
                _ => None,
            }
        }
    };
}

impl<P: Copy + Ord + Debug> Mux<P> {
    /// An empty multiplexer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `endpoint` on `channel`.
    pub fn add(&mut self, channel: ChannelId, endpoint: Endpoint<P>) -> Result<(), MuxError> {
        if self.endpoints.contains_key(&channel) {
            return Err(MuxError::ChannelInUse(channel));
        }
        self.endpoints.insert(channel, endpoint);
        Ok(())
    }

    /// Takes the endpoint off `channel`.
    pub fn remove(&mut self, channel: ChannelId) -> Option<Endpoint<P>> {
        self.endpoints.remove(&channel)
    }

    /// The endpoint on `channel`.
    pub fn endpoint_mut(&mut self, channel: ChannelId) -> Option<&mut Endpoint<P>> {
        self.endpoints.get_mut(&channel)
    }

    accessor!(requester_mut, Requester, Requester);
    accessor!(replier_mut, Replier, Replier);
    accessor!(pusher_mut, Pusher, Pusher);
    accessor!(puller_mut, Puller, Puller);
    accessor!(publisher_mut, Publisher, Publisher);
    accessor!(subscriber_mut, Subscriber, Subscriber);
    accessor!(dealer_mut, Dealer, Dealer);
    accessor!(router_mut, Router, Router);

    /// Routes an inbound frame from `from` to its channel's endpoint.
    pub fn handle(&mut self, now: Duration, from: P, frame: &Frame) -> Result<(), MuxError> {
        let channel = frame.channel;
        let endpoint = self
            .endpoints
            .get_mut(&channel)
            .ok_or(MuxError::UnknownChannel(channel))?;
        let msg = Wire::from_frame(frame).map_err(|source| MuxError::Wire { channel, source })?;
        endpoint.handle(now, from, msg);
        Ok(())
    }

    /// Tells every endpoint that `peer`'s connection is gone.
    pub fn disconnect(&mut self, peer: P) {
        for e in self.endpoints.values_mut() {
            e.disconnect(peer);
        }
    }

    /// Runs every endpoint's timers due at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        for e in self.endpoints.values_mut() {
            e.handle_timeout(now);
        }
    }

    /// The earliest timer of any endpoint.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.endpoints
            .values()
            .filter_map(Endpoint::poll_timeout)
            .min()
    }

    /// The next outbound frame, taking endpoints in turn so that a busy one
    /// does not starve the others.
    ///
    /// It allocates nothing in steady state: payloads are encoded into one
    /// buffer that the frames share (a [`Bytes`](bytes::Bytes) slice each),
    /// reused once the frames before are dropped; while they are held (in
    /// a transport's queue, say) a new buffer is taken per 16 KiB of
    /// frames, not one per frame.
    pub fn poll_transmit(&mut self) -> Option<(P, Frame)> {
        let cursor = self.cursor;
        let after = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        let mut found = first_transmit(self.endpoints.range_mut((after, Bound::Unbounded)));
        if let (None, Some(c)) = (&found, cursor) {
            // Wrap around: from the start up to the cursor.
            found = first_transmit(self.endpoints.range_mut(..=c));
        }
        let (channel, to, msg) = found?;
        self.cursor = Some(channel);
        Some((to, self.frame(channel, &msg)))
    }

    /// `msg` as a frame on `channel`, encoded into the shared buffer.
    fn frame(&mut self, channel: ChannelId, msg: &Wire) -> Frame {
        let len = msg.encoded_len();
        if self.scratch.capacity() < len {
            // Reclaims the whole buffer when no frame holds a part of it.
            self.scratch.reserve(len.max(SCRATCH_CHUNK));
        }
        msg.encode(&mut self.scratch);
        let payload = self.scratch.split().freeze();
        if payload.len() > SCRATCH_KEEP {
            self.scratch = BytesMut::new();
        }
        Frame::new(channel, payload)
    }
}

/// The first endpoint in `endpoints` with a message to send, and it.
fn first_transmit<'a, P: Copy + Ord + Debug + 'a>(
    endpoints: impl Iterator<Item = (&'a ChannelId, &'a mut Endpoint<P>)>,
) -> Option<(ChannelId, P, Wire)> {
    endpoints
        .into_iter()
        .find_map(|(channel, e)| e.poll_transmit().map(|(to, msg)| (*channel, to, msg)))
}

#[cfg(test)]
mod tests {
    use super::super::Limits;
    use super::*;
    use bytes::Bytes;

    const T: Duration = Duration::ZERO;

    #[test]
    fn routes_by_channel_and_round_robins_output() {
        let l = Limits::default();
        let mut a: Mux<u8> = Mux::new();
        let mut b: Mux<u8> = Mux::new();
        a.add(ChannelId(1), Endpoint::Requester(Requester::new(l)))
            .unwrap();
        a.add(ChannelId(2), Endpoint::Pusher(Pusher::new(l)))
            .unwrap();
        assert_eq!(
            a.add(ChannelId(2), Endpoint::Pusher(Pusher::new(l))),
            Err(MuxError::ChannelInUse(ChannelId(2)))
        );
        b.add(ChannelId(1), Endpoint::Replier(Replier::new(l)))
            .unwrap();
        b.add(ChannelId(2), Endpoint::Puller(Puller::new(l, 4)))
            .unwrap();
        b.puller_mut(ChannelId(2)).unwrap().connect(T, 1);
        for i in 0..2u8 {
            a.requester_mut(ChannelId(1))
                .unwrap()
                .request(T, 2, Bytes::from(vec![i]), Duration::from_secs(1))
                .unwrap();
            a.pusher_mut(ChannelId(2))
                .unwrap()
                .push(Bytes::from(vec![i]))
                .unwrap();
        }
        // Credit first, so the pusher can go.
        while let Some((to, f)) = b.poll_transmit() {
            assert_eq!(to, 1);
            a.handle(T, 2, &f).unwrap();
        }
        let channels: alloc::vec::Vec<u32> = core::iter::from_fn(|| a.poll_transmit())
            .map(|(_, f)| {
                b.handle(T, 1, &f).unwrap();
                f.channel.0
            })
            .collect();
        assert_eq!(channels, [1, 2, 1, 2]);
        assert_eq!(b.puller_mut(ChannelId(2)).unwrap().queued(), 2);
        assert!(b.replier_mut(ChannelId(1)).unwrap().poll_event().is_some());
        assert!(b.requester_mut(ChannelId(1)).is_none());
        assert_eq!(a.poll_timeout(), Some(Duration::from_secs(1)));
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        let mut m: Mux<u8> = Mux::new();
        m.add(
            ChannelId(1),
            Endpoint::Replier(Replier::new(Limits::default())),
        )
        .unwrap();
        let junk = Frame::new(ChannelId(1), Bytes::from_static(&[200]));
        assert_eq!(
            m.handle(T, 1, &junk),
            Err(MuxError::Wire {
                channel: ChannelId(1),
                source: WireError::UnknownTag(200)
            })
        );
        let elsewhere = Frame::new(ChannelId(5), Bytes::new());
        assert_eq!(
            m.handle(T, 1, &elsewhere),
            Err(MuxError::UnknownChannel(ChannelId(5)))
        );
        assert!(m.remove(ChannelId(1)).is_some());
        m.disconnect(1);
        m.handle_timeout(T);
        assert_eq!(m.poll_transmit(), None);
    }

    fn every_endpoint() -> Mux<u8> {
        let l = Limits::default().with_hwm(4);
        let mut m: Mux<u8> = Mux::new();
        let endpoints = [
            Endpoint::Requester(Requester::new(l)),
            Endpoint::Replier(Replier::new(l)),
            Endpoint::Pusher(Pusher::new(l)),
            Endpoint::Puller(Puller::new(l, 2)),
            Endpoint::Publisher(Publisher::new(l)),
            Endpoint::Subscriber(Subscriber::new(l)),
            Endpoint::Dealer(Dealer::new(l, Bytes::from_static(b"d"))),
            Endpoint::Router(Router::new(l)),
        ];
        for (i, e) in endpoints.into_iter().enumerate() {
            m.add(ChannelId(i as u32), e).unwrap();
        }
        m
    }

    proptest::proptest! {
        /// Whatever a hostile peer sends, on whichever channel, no endpoint
        /// panics and nothing queues past its high-water mark.
        #[test]
        fn hostile_input_never_panics(
            msgs in proptest::collection::vec(
                (0..8u32, 0..3u8, super::super::wire::tests::wire(), 0..50u64),
                0..200,
            ),
        ) {
            let mut m = every_endpoint();
            m.puller_mut(ChannelId(3)).unwrap().connect(T, 1);
            m.subscriber_mut(ChannelId(5)).unwrap().connect(T, 1);
            m.dealer_mut(ChannelId(6)).unwrap().connect(T, 1);
            for (ch, from, wire, ms) in msgs {
                let now = Duration::from_millis(ms);
                m.handle(now, from, &wire.to_frame(ChannelId(ch))).unwrap();
                m.handle_timeout(now);
                proptest::prop_assert!(m.puller_mut(ChannelId(3)).unwrap().queued() <= 2);
            }
            let mut sent = 0;
            while m.poll_transmit().is_some() {
                sent += 1;
                proptest::prop_assert!(sent < 10_000, "unbounded output");
            }
        }
    }
}
