//! The transport that carries the messages quorate's state machines emit:
//! length-prefixed multiplexed framing (Sans-IO, [`framing`]), request/reply,
//! push/pull, publish/subscribe and dealer/router as Sans-IO state machines
//! sharing one connection per peer ([`patterns`]), a seeded fault-injecting
//! simulated network for deterministic tests ([`sim`]), the small
//! [`Transport`] and [`codec::Codec`] traits with an in-process
//! implementation ([`mem`]), the Sans-IO rule that settles two peers dialing
//! each other at once ([`simultaneous_open`]), and (feature `tokio`) TCP.
//! Without `tokio` the crate does no I/O at all.
//!
//! **Time.** The Sans-IO parts never read a clock. Pattern endpoints and the
//! [`patterns::mux::Mux`] take `now: Duration`, monotonic time since an
//! origin the driver picks, passed in by the caller (as quorate-merkle's sync
//! does), and only in the calls that act on time (`request`, `connect`,
//! `handle_timeout`, a pusher's `handle`); `poll_timeout` says when they next
//! need one. The simulated network runs on [`sim::SimTime`], nanoseconds since
//! the simulation began, which the test passes in. Only the TCP transport
//! (feature `tokio`) reads a clock, tokio's, for its timeouts and backoff.
//!
//! **Ids.** A node is a [`PeerId`]`(u64)`, the same number as
//! quorate-raft-core's `NodeId(u64)`: convert with [`PeerId::try_from`] and
//! `u64::try_from` (or, with quorate-raft-core's `codec` feature, straight
//! between `NodeId` and `PeerId`), which refuse the top-bit range the transport keeps for
//! client connections ([`ClientRangeError`]). The in-memory and simulated
//! transports take any peer type of yours. [`patterns::RequestId`] matches a
//! reply to its request, as merkle sync's and Chord's `RequestId`s do, and
//! [`sim::MessageId`] names one simulated message. quorate-ids'
//! `WorkerId` is unrelated unless you map a node to one.
//!
//! ```
//! use quorate_transport::sim::{Network, SimTime};
//!
//! let mut net: Network<u8, &str> = Network::new(7);
//! net.send(SimTime::ZERO, 1, 2, "hello");
//! let d = net.poll_delivery(SimTime::from_secs(1)).unwrap();
//! assert_eq!((d.from, d.to, d.msg), (1, 2, "hello"));
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate alloc;

pub mod codec;
pub mod framing;
pub mod mem;
pub mod patterns;
mod peer;
pub mod sim;
pub mod simultaneous_open;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tcp;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;
mod transport;

pub use peer::{ClientRangeError, PeerId};
pub use transport::{Event, Transport, Typed, TypedError};

// The README's examples are compiled and run as doctests.
#[cfg(all(doctest, feature = "tokio"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
