//! A lock-free Lamport clock that many threads of one node can share.

#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};

#[cfg(not(loom))]
use core::sync::atomic::{AtomicU64, Ordering};

use alloc::vec::Vec;

use crate::encoding::{Codec, DecodeError};
use crate::lamport::{LamportClock, LamportError, LamportTimestamp, check_time};

/// A Lamport clock shared by reference between threads, without locks.
///
/// Every stamp comes from one `fetch_add` on a single atomic, so no two
/// stamps are equal and a stamp taken after another (in happens-before order)
/// is greater. `receive` raises the time with `fetch_max`, so it never moves
/// time backwards. All operations are wait-free.
///
/// ```
/// use quorate_clocks::{AtomicLamportClock, LamportTimestamp};
///
/// let clock = AtomicLamportClock::new(7u64);
/// let a = clock.send();
/// let b = clock.receive(&LamportTimestamp::new(10, 3u64)).unwrap();
/// assert!(a < b && b.time == 11);
/// ```
#[derive(Debug)]
pub struct AtomicLamportClock<N> {
    node: N,
    time: AtomicU64,
}

impl<N> AtomicLamportClock<N> {
    /// A clock for `node` at time 0.
    pub fn new(node: N) -> Self {
        Self {
            node,
            time: AtomicU64::new(0),
        }
    }

    /// The node this clock stamps events for.
    pub fn node(&self) -> &N {
        &self.node
    }

    /// The time of the latest event recorded by any thread.
    pub fn time(&self) -> u64 {
        // Relaxed is enough everywhere: uniqueness and monotonicity come from
        // the modification order of this one atomic, which all RMWs respect.
        self.time.load(Ordering::Relaxed)
    }
}

impl<N: Clone> AtomicLamportClock<N> {
    /// Records a local event and returns its stamp, unique across threads.
    pub fn tick(&self) -> LamportTimestamp<N> {
        // Cannot wrap: the time only ever starts at most MAX_COUNTER.
        let time = self.time.fetch_add(1, Ordering::Relaxed) + 1;
        LamportTimestamp::new(time, self.node.clone())
    }

    /// Records a send event and returns the stamp to attach to the message.
    pub fn send(&self) -> LamportTimestamp<N> {
        self.tick()
    }

    /// Records the receipt of a message stamped `remote` and returns the
    /// receive event's stamp: unique, and greater than `remote` and than every
    /// stamp this clock issued before.
    pub fn receive(
        &self,
        remote: &LamportTimestamp<N>,
    ) -> Result<LamportTimestamp<N>, LamportError> {
        check_time(remote.time)?;
        self.time.fetch_max(remote.time, Ordering::Relaxed);
        Ok(self.tick())
    }

    /// A plain copy of the clock's current state.
    pub fn snapshot(&self) -> LamportClock<N> {
        LamportClock::from_parts(self.node.clone(), self.time())
    }
}

impl<N: Codec + Clone> AtomicLamportClock<N> {
    /// The encoding of [`snapshot`](Self::snapshot): the same bytes as
    /// [`LamportClock::to_bytes`].
    pub fn to_bytes(&self) -> Vec<u8> {
        self.snapshot().to_bytes()
    }

    /// Decodes [`LamportClock::to_bytes`] output into a shared clock.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        LamportClock::from_bytes(bytes).map(Self::from)
    }
}

#[cfg(feature = "serde")]
impl<N: serde::Serialize + Clone> serde::Serialize for AtomicLamportClock<N> {
    /// Serialized as its [`snapshot`](Self::snapshot), a [`LamportClock`].
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.snapshot().serialize(serializer)
    }
}

#[cfg(feature = "serde")]
impl<'de, N: serde::Deserialize<'de>> serde::Deserialize<'de> for AtomicLamportClock<N> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        LamportClock::deserialize(deserializer).map(Self::from)
    }
}

impl<N> From<LamportClock<N>> for AtomicLamportClock<N> {
    fn from(clock: LamportClock<N>) -> Self {
        let time = clock.time();
        Self {
            node: clock.into_node(),
            time: AtomicU64::new(time),
        }
    }
}
