//! Snowflake-style 64-bit unique IDs for replicated systems: a validated bit
//! [`Layout`] of time, per-tick sequence and worker; a Sans-IO [`Generator`] that
//! takes the current time as an input and says when to retry instead of
//! spinning; a lock-free [`AtomicGenerator`] whose whole state is one
//! `AtomicU64`; and, with `std`, a [`SystemClockGenerator`] for callers who just
//! want IDs. IDs sort by time, never repeat for a worker id whatever the clock does,
//! print as decimal or as order-preserving base32, and never wrap around when a
//! layout runs out of time.
//!
//! **Time.** Every call that acts on time takes `now: UnixMillis`, wall-clock
//! milliseconds since the Unix epoch (IDs embed wall time), passed in by the
//! caller (its clock, or a test's); the layout turns it into ticks of its own
//! unit. It need not be monotonic: a clock that steps back is handled by the
//! [`ClockPolicy`] (see "Clocks" below). The Sans-IO generators never read a
//! clock; only [`SystemClockGenerator`] (with `std`) reads the system clock.
//!
//! **Ids.** The minting generator is named by a [`WorkerId`], the value of an
//! ID's worker field (Twitter's worker id, Sonyflake's machine id,
//! Instagram's shard id; split into host and process for Discord, see
//! [`Layout::worker_id`]). It is unrelated to the cluster's node ids (Raft's
//! `NodeId`, the transport's `PeerId`, both `u64`) unless you map one to the
//! other: they are usually wider than the worker field, so assign worker ids
//! (see "Assigning worker ids" below) rather than truncating node ids. An
//! [`Id`] is the minted value itself.
//!
//! ```
//! use quorate_ids::{ClockPolicy, Generator, Id, IdError, Layout, WorkerId, UnixMillis};
//!
//! // The course layout: 40 bits of ms since 2024, 14 bits of sequence, 10 of worker.
//! let mut ids = Generator::new(Layout::SEED, WorkerId::new(42), ClockPolicy::WaitUntil)?;
//! let now = UnixMillis::from_millis(1_750_000_000_000); // the caller's clock
//! let id = ids.next(now)?;
//!
//! let parts = id.decompose(Layout::SEED);
//! assert_eq!((parts.sequence, parts.worker), (0, WorkerId::new(42)));
//! assert_eq!(id.timestamp(Layout::SEED), now);
//!
//! // Text forms: decimal, and 13 characters of base32 that sort like the number.
//! assert_eq!(id.to_string().parse::<Id>(), Ok(id));
//! assert_eq!(Id::from_base32(&id.to_base32()), Ok(id));
//!
//! // 16,384 IDs per millisecond, then the generator says when to come back.
//! let err = (0..20_000).find_map(|_| ids.next(now).err()).unwrap();
//! assert_eq!(err.retry_at(), Some(UnixMillis::from_millis(1_750_000_000_001)));
//! # Ok::<(), IdError>(())
//! ```
//!
//! # Clocks
//!
//! The generators never read a clock: `now` is an input, so tests and
//! simulations drive time themselves. When `now` falls behind the last issued
//! ID the [`ClockPolicy`] decides: [`Reject`](ClockPolicy::Reject) it,
//! [`WaitUntil`](ClockPolicy::WaitUntil) the clock catches up (reported as
//! [`IdError::WouldBlock`]), or [`Tolerate`](ClockPolicy::Tolerate) a bounded
//! step by continuing from the last tick. No policy issues an ID twice or an
//! ID with a time ahead of both `now` and the last ID.
//! [`SystemClockGenerator`] is the single exception to the Sans-IO rule: it
//! reads `SystemTime` and waits, and exists only with the `std` feature.
//!
//! # Assigning worker ids
//!
//! Uniqueness across a cluster rests on no two live generators sharing a
//! [`WorkerId`] under the same layout and epoch. The crate does not allocate them;
//! a cluster should:
//!
//! - allocate worker ids through its consensus log (as the quorate Raft example
//!   does): a node proposes "claim the lowest free worker id for member M", and
//!   the committed entry is the assignment, so two nodes can never both win;
//! - never reuse a released worker id before the clock has passed the last tick
//!   its former holder could have issued in (wait out the holder's lease, or
//!   have the new holder [`Generator::resume_after`] the old holder's last ID);
//! - persist the last issued ID (or a time ahead of it) across restarts of
//!   one node and feed it to `resume_after`, so a clock that stepped back while
//!   the node was down cannot make it mint an ID again;
//! - without consensus, derive ids from something already unique and small (a
//!   StatefulSet ordinal, a shard number), not from hashing hostnames or IP
//!   addresses: a 10-bit hash collides among 38 workers with even odds.
//!
//! # Features
//!
//! - `std` (default): [`SystemClockGenerator`] and `std::error::Error` for the
//!   errors. Without it the crate is `no_std` and needs no allocator.
//! - `serde`: an [`Id`] serializes as a number and deserializes from a number or
//!   a decimal string; `serde_as_string` writes it as a string. A [`Layout`]
//!   read from a configuration file is validated like [`Layout::new`].
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "std")]
extern crate std;

#[cfg(target_has_atomic = "64")]
mod atomic;
mod base32;
mod error;
mod generator;
mod id;
mod layout;
#[cfg(feature = "serde")]
mod serde_impls;
#[cfg(all(feature = "std", target_has_atomic = "64"))]
mod system;
mod time;

#[cfg(target_has_atomic = "64")]
pub use atomic::AtomicGenerator;
pub use base32::Base32;
pub use error::{BlockCause, Field, IdError, LayoutError, ParseIdError};
pub use generator::{ClockPolicy, Generator};
pub use id::{Id, Parts, WorkerId};
pub use layout::{ConstLayout, FieldOrder, Layout, LayoutSpec};
#[cfg(feature = "serde")]
pub use serde_impls::serde_as_string;
#[cfg(all(feature = "std", target_has_atomic = "64"))]
pub use system::SystemClockGenerator;
pub use time::{TimeUnit, UnixMillis};

// The README's snippets are compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
