//! Logical clocks for replicated systems: Lamport clocks, vector clocks,
//! dotted version vectors, hybrid logical clocks and a causal-delivery buffer.
//!
//! Use a [`LamportClock`] (or the lock-free [`AtomicLamportClock`]) for a
//! cheap total order consistent with happened-before; a [`VectorClock`] to
//! tell whether two events are ordered or concurrent; a [`DvvSet`] to keep the
//! concurrent versions of a key in a Dynamo-style store; an [`Hlc`] for
//! timestamps close to wall-clock time that still respect causality (or the
//! lock-free [`AtomicHlc`] to share one between threads); and a
//! [`CausalBuffer`] to deliver broadcasts in causal order. To know how far a
//! peer's clock is from ours, feed an [`offset::OffsetEstimator`] the four
//! timestamps of each request/response exchange (NTP's clock filter). Every type is a
//! plain value (Sans-IO): physical time, when a clock needs it, is an
//! argument, never read from the system. Every clock has a compact, versioned
//! binary encoding (`to_bytes`/`from_bytes`, see [`encoding`]) and, with the
//! `serde` feature, serde support. The crate is `no_std` + `alloc`.
//!
//! **Time.** Only the hybrid logical clocks use physical time, and only in
//! the calls that act on it (`now`, `update`): the caller passes
//! `physical_ms: u64`, wall-clock milliseconds since the Unix epoch, read
//! from its own clock or a simulator's. It need not be monotonic: a stamp
//! never goes back whatever the physical time does. The crate never reads a
//! clock. Lamport, vector and dotted-version-vector clocks are purely
//! logical and take no time at all. The [`offset`] estimator takes
//! nanoseconds since the Unix epoch (`u64`) instead, since offsets between
//! nearby machines are well below a millisecond: its timestamps and `now`
//! come from the caller's wall clock too.
//!
//! **Ids.** Actors and nodes are the caller's own id type (`A`, any `Ord`
//! type: a `u64`, raft-core's `NodeId` or the transport's `PeerId`, which are
//! the same `u64`, a string); the crate defines none.
//!
//! ```
//! use quorate_clocks::{Causality, Hlc, LamportClock, MaxDrift, VectorClock};
//!
//! // Lamport: a receive is stamped after the send it answers.
//! let (mut p, mut q) = (LamportClock::new(1u32), LamportClock::new(2u32));
//! let sent = p.send();
//! assert!(q.receive(&sent)? > sent);
//!
//! // Vector clocks: two independent events are concurrent.
//! let (mut a, mut b) = (VectorClock::new(), VectorClock::new());
//! a.increment(1u32);
//! b.increment(2u32);
//! assert_eq!(a.compare(&b), Causality::Concurrent);
//! a.merge(&b);
//! assert_eq!(a.compare(&b), Causality::After);
//!
//! // Hybrid logical clock: physical time (ms) comes in as an argument;
//! // remote stamps more than 500 ms ahead of it are refused.
//! let mut hlc = Hlc::with_max_drift(MaxDrift::millis(500));
//! let t1 = hlc.now(1_700_000_000_000)?;
//! let t2 = hlc.now(1_699_999_999_999)?; // wall clock stepped back: still later
//! assert!(t2 > t1);
//!
//! // Compact binary encoding, checked on the way back in.
//! assert_eq!(VectorClock::from_bytes(&a.to_bytes())?, a);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

#[cfg(target_has_atomic = "64")]
mod atomic_hlc;
#[cfg(target_has_atomic = "64")]
mod atomic_lamport;
mod causal;
mod dot;
mod dvv;
pub mod encoding;
mod hlc;
mod lamport;
pub mod offset;
mod vector;

#[cfg(target_has_atomic = "64")]
pub use atomic_hlc::AtomicHlc;
#[cfg(target_has_atomic = "64")]
pub use atomic_lamport::AtomicLamportClock;
pub use causal::{Admission, CausalBuffer, CausalError, Delivery};
pub use dot::Dot;
pub use dvv::{DottedVersionVector, DvvSet};
pub use encoding::{Codec, DecodeError, MAX_COUNTER};
pub use hlc::{Hlc, HlcError, HlcTimestamp, MaxDrift};
pub use lamport::{LamportClock, LamportError, LamportTimestamp};
pub use vector::{Causality, IntoIter, Iter, VectorClock};

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
