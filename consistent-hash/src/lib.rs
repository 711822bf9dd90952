//! Placement of keys on nodes that stays put as nodes come and go.
//!
//! Modulo placement (`hash(key) % n`) moves almost every key when `n`
//! changes; the schemes here move only about `1/n` of them. [`Ring`] is the
//! classic consistent-hash ring with virtual nodes, weights, replica sets and
//! the key ranges that change hands; [`JumpHash`] needs no memory for numbered
//! buckets; [`Rendezvous`] ranks nodes per key, weighted; [`Maglev`] answers
//! from a prime-sized table in one read; [`MultiProbe`] balances with one
//! point per node; [`BoundedLoads`] caps any node at `(1 + epsilon)` times
//! the average; and [`chord`] is a Sans-IO Chord node that finds a key's owner
//! in `O(log n)` hops without global membership. All hashing is specified
//! ([`Xxh3`], XXH3-64 over [`StableKey`] bytes) so every process, platform
//! and release places keys identically.
//!
//! **Ids.** Keys are any [`StableKey`] (byte strings, `str`, integers as
//! little-endian bytes); nodes of a [`Ring`], [`Rendezvous`], [`Maglev`],
//! [`MultiProbe`] or [`BoundedLoads`] are the caller's own type
//! `N: StableKey + Ord` (an address, a name, a raft-core `NodeId` or the
//! transport's `PeerId`, the same `u64`), returned by reference from
//! lookups; the crate defines no node id. [`JumpHash`] names its buckets
//! [`Bucket`]`(u32)`, `0..n`. A [`chord::Point`] is a position on Chord's
//! `2^bits` identifier circle, where a node sits or a key falls, not a node
//! name: derive it from yours with [`chord::IdSpace::point_from_hash`].
//! [`chord::LookupId`] and [`chord::RequestId`] correlate lookups and replies.
//!
//! **Time.** Nothing in this crate touches a network, a file or a clock, or
//! draws random numbers: placement is a pure function of the membership and
//! takes no time. The Chord node's only time is the logical [`chord::Tick`],
//! monotonic, in whatever unit the driver counts, passed in by the caller as
//! `now` to the methods that act on time (`join`, `lookup`,
//! `handle_message`, `handle_timeout`); [`chord::Node::poll_timeout`] says
//! when it next needs one.
//!
//! ```
//! use quorate_consistent_hash::{JumpHash, Ring};
//!
//! let mut ring = Ring::new(160)?;
//! for node in ["cache-a", "cache-b", "cache-c"] {
//!     ring.add(node)?;
//! }
//! let owner = *ring.get("session:17").ok_or(quorate_consistent_hash::Error::NoNodes)?;
//!
//! // Adding a node only moves keys to it.
//! let moves = ring.transfers_on_add("cache-d", 1)?;
//! assert!(moves.iter().all(|t| t.to == "cache-d"));
//! ring.add("cache-d")?;
//! let now = *ring.get("session:17").ok_or(quorate_consistent_hash::Error::NoNodes)?;
//! assert!(now == owner || now == "cache-d");
//!
//! let shards = JumpHash::new(16)?;
//! assert!(shards.bucket("session:17").0 < 16);
//! # Ok::<(), quorate_consistent_hash::Error>(())
//! ```
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod bounded;
pub mod chord;
mod error;
mod hash;
mod jump;
mod maglev;
mod multi_probe;
#[cfg(feature = "serde")]
mod persist;
#[cfg(feature = "serde")]
pub use persist::{MAX_MAGLEV_TABLE, MAX_PROBES, MAX_RING_POINTS};
mod points;
mod range;
mod rendezvous;
mod ring;

pub use bounded::BoundedLoads;
pub use error::Error;
pub use hash::{KeyHasher, StableKey, Xxh3, splitmix64};
pub use jump::{Bucket, JumpHash, jump};
pub use maglev::{DEFAULT_TABLE_SIZE, Maglev};
pub use multi_probe::{DEFAULT_PROBES, MultiProbe};
pub use range::{KeyRange, Transfer};
pub use rendezvous::Rendezvous;
pub use ring::{Ring, Walk};

/// Compiles and runs the README's examples.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
