//! The transport that carries the messages quorate's state machines emit:
//! length-prefixed multiplexed framing (Sans-IO), request/reply, push/pull,
//! publish/subscribe and dealer/router patterns over one connection per peer,
//! a seeded fault-injecting simulated network, and (feature `tokio`) TCP.
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
pub mod sim;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tcp;
mod transport;

pub use transport::{Event, Transport, Typed, TypedError};
