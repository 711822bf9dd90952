//! Messaging patterns as Sans-IO state machines: request/reply, push/pull,
//! publish/subscribe and dealer/router.
//!
//! Each pattern endpoint is a value you feed and poll, in the quinn-proto
//! shape: inputs are methods taking the sending peer and, only where the
//! endpoint acts on time, `now` (a [`Duration`] since any fixed origin the
//! driver picks; `handle` of a [`Requester`](reqrep::Requester) or a
//! [`Puller`](pushpull::Puller) needs none); outputs are polled until
//! `None`: [`poll_transmit`](reqrep::Requester::poll_transmit) gives
//! `(peer, Wire)` messages to send, `poll_event` gives what the application
//! should see, `poll_timeout` says when to call `handle_timeout`. Nothing
//! here does I/O, so the same endpoints run on the [`sim`](crate::sim)
//! network in tests and on TCP in production.
//!
//! **One connection, many patterns.** Each endpoint owns one
//! [`ChannelId`](crate::framing::ChannelId); [`Wire`] messages travel as frame
//! payloads on that channel, so a chat client's request (archive), push
//! (post) and subscribe (new posts) share one TCP connection.
//! [`mux::Mux`] holds the endpoints by channel, routes inbound frames to
//! them and gathers their output as frames.
//!
//! **High-water marks.** Every queue is bounded by [`Limits::hwm`]. When a
//! queue is full the [`HwmPolicy`] decides: [`HwmPolicy::Block`] refuses
//! the new message with [`Error::Full`] and queues nothing (the caller
//! waits for progress, e.g. the async layer awaits it), and
//! [`HwmPolicy::Drop`] discards it, counts it in the endpoint's
//! [`Counters`] and returns [`Error::Dropped`]. Messages arriving from the
//! network into a full inbound queue are always dropped and counted (the
//! network cannot be told to wait; the peer's own timeouts and credit cover
//! it). Nothing grows without bound.
//!
//! **Loss.** Control state (credit, subscriptions, dealer identity) is
//! absolute and idempotent, and is re-sent every [`Limits::refresh`], so
//! lost, duplicated or reordered control messages heal by themselves.

pub mod mux;
pub mod pubsub;
pub mod pushpull;
pub mod reqrep;
pub mod router;
pub(crate) mod wire;

pub use wire::{MAX_WIRE_PREFIXES, RequestId, Wire, WireError};

use core::time::Duration;

use bytes::Bytes;

/// What an endpoint does when a queue reaches its high-water mark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum HwmPolicy {
    /// Refuse the new message with [`Error::Full`]; nothing is queued.
    #[default]
    Block,
    /// Discard the new message, count it, return [`Error::Dropped`].
    Drop,
}

/// Bounds and timings shared by the pattern endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Limits {
    /// The most messages any one queue holds (per peer where queues are per
    /// peer). At least 1.
    pub hwm: usize,
    /// What happens when the application sends into a full queue.
    pub policy: HwmPolicy,
    /// How often control state (credit, subscriptions, identity) is re-sent.
    pub refresh: Duration,
}

impl Default for Limits {
    /// `hwm` 1000 (as in ZeroMQ), blocking, refresh every second.
    fn default() -> Self {
        Limits {
            hwm: 1000,
            policy: HwmPolicy::Block,
            refresh: Duration::from_secs(1),
        }
    }
}

impl Limits {
    /// These limits with high-water mark `hwm` (at least 1).
    pub fn with_hwm(mut self, hwm: usize) -> Self {
        self.hwm = hwm.max(1);
        self
    }

    /// These limits with `policy`.
    pub fn with_policy(mut self, policy: HwmPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// These limits with refresh interval `refresh`.
    pub fn with_refresh(mut self, refresh: Duration) -> Self {
        self.refresh = refresh;
        self
    }

    fn cap(&self) -> usize {
        self.hwm.max(1)
    }

    /// The error for a full queue under this policy, counting a drop.
    fn refuse(&self, counters: &mut Counters) -> Error {
        match self.policy {
            HwmPolicy::Block => Error::Full { hwm: self.cap() },
            HwmPolicy::Drop => {
                counters.dropped_outbound += 1;
                Error::Dropped { hwm: self.cap() }
            }
        }
    }
}

/// What went wrong in a pattern endpoint. The endpoint is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The queue is at its high-water mark and the policy is
    /// [`HwmPolicy::Block`]: nothing was queued; try again after progress.
    #[error("queue full at high-water mark {hwm}; nothing queued")]
    Full {
        /// The high-water mark.
        hwm: usize,
    },
    /// The queue is at its high-water mark and the policy is
    /// [`HwmPolicy::Drop`]: the message was discarded and counted.
    #[error("queue full at high-water mark {hwm}; message dropped")]
    Dropped {
        /// The high-water mark.
        hwm: usize,
    },
    /// A reply to a request that is not awaiting one (already answered,
    /// never received, or unknown).
    #[error("no pending request {id:?} to reply to")]
    UnknownRequest {
        /// The request id given.
        id: RequestId,
    },
    /// No dealer with this identity has said hello.
    #[error("no dealer with identity {identity:?}")]
    UnknownIdentity {
        /// The identity given.
        identity: Bytes,
    },
    /// There is no peer to send to yet.
    #[error("no connected peer to send to")]
    NoPeers,
    /// More subscriptions than the high-water mark allows.
    #[error("subscription limit of {max} reached")]
    TooManySubscriptions {
        /// The limit.
        max: usize,
    },
}

/// Counters every endpoint keeps: what it dropped and why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Counters {
    /// Application messages discarded under [`HwmPolicy::Drop`].
    pub dropped_outbound: u64,
    /// Messages from the network discarded because an inbound queue was full.
    pub dropped_inbound: u64,
    /// Messages from the network that were duplicates, stale or for nothing
    /// pending (late replies, repeated pushes, unsubscribed topics).
    pub ignored: u64,
    /// Messages of a kind this endpoint does not handle.
    pub unexpected: u64,
}

#[cfg(test)]
mod sim_tests;
