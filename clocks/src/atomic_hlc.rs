//! A lock-free hybrid logical clock that many threads of one node can share.

#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};

#[cfg(not(loom))]
use core::sync::atomic::{AtomicU64, Ordering};

use crate::hlc::{Hlc, HlcError, HlcTimestamp, MaxDrift, advance, wall, wall_for_remote};

/// A hybrid logical clock shared by reference between threads, without locks:
/// the thread-safe counterpart of [`Hlc`], where uhlc uses a mutex.
///
/// The whole state is one `u64` (the last stamp, see [`HlcTimestamp`]), so
/// each call is one compare-and-swap loop running the same step as [`Hlc`]:
/// stamps are unique across threads, increase in happens-before order, and a
/// refused input leaves the clock unchanged.
///
/// ```
/// use quorate_clocks::{AtomicHlc, HlcTimestamp, MaxDrift};
///
/// let clock = AtomicHlc::with_max_drift(MaxDrift::millis(500));
/// let a = clock.now(1_000).unwrap();
/// let b = clock.update(HlcTimestamp::new(1_000, 9).unwrap(), 1_000).unwrap();
/// assert!(a < b && b.logical() == 10);
/// ```
#[derive(Debug)]
pub struct AtomicHlc {
    last: AtomicU64,
    max_drift: MaxDrift,
}

impl AtomicHlc {
    /// A fresh clock refusing remote stamps more than `max_drift` ahead of
    /// local physical time.
    pub fn with_max_drift(max_drift: MaxDrift) -> Self {
        Hlc::with_max_drift(max_drift).into()
    }

    /// The last stamp issued by any thread.
    pub fn last(&self) -> HlcTimestamp {
        HlcTimestamp::from_u64(self.last.load(Ordering::Relaxed))
    }

    /// The configured maximum drift.
    pub fn max_drift(&self) -> MaxDrift {
        self.max_drift
    }

    /// A stamp for a local or send event at `physical_ms` (see [`Hlc::now`]).
    #[inline]
    pub fn now(&self, physical_ms: u64) -> Result<HlcTimestamp, HlcError> {
        let wall = wall(physical_ms)?;
        self.step(HlcTimestamp::ZERO, wall)
    }

    /// A stamp for receiving `remote` at `physical_ms` (see [`Hlc::update`]).
    #[inline]
    pub fn update(&self, remote: HlcTimestamp, physical_ms: u64) -> Result<HlcTimestamp, HlcError> {
        let wall = wall_for_remote(remote, physical_ms, self.max_drift.as_millis())?;
        self.step(remote, wall)
    }

    /// A plain copy of the clock's current state.
    pub fn snapshot(&self) -> Hlc {
        Hlc::restore(self.last(), self.max_drift)
    }

    fn step(&self, remote: HlcTimestamp, wall: u64) -> Result<HlcTimestamp, HlcError> {
        // Relaxed is enough: uniqueness and monotonicity come from the
        // modification order of this one atomic, which every RMW respects.
        let step = |last: u64| advance(HlcTimestamp::from_u64(last), remote, wall).ok();
        match self
            .last
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                step(last).map(HlcTimestamp::as_u64)
            }) {
            Ok(previous) => step(previous).ok_or(HlcError::Exhausted),
            Err(_) => Err(HlcError::Exhausted),
        }
    }
}

impl Default for AtomicHlc {
    /// A clock with the 500 ms maximum drift of [`Hlc::default`].
    fn default() -> Self {
        Hlc::default().into()
    }
}

impl From<Hlc> for AtomicHlc {
    fn from(clock: Hlc) -> Self {
        Self {
            last: AtomicU64::new(clock.last().as_u64()),
            max_drift: clock.max_drift(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_rules_as_hlc() {
        let shared = AtomicHlc::with_max_drift(MaxDrift::millis(100));
        let mut plain = Hlc::with_max_drift(MaxDrift::millis(100));
        for (remote, physical) in [
            (None, 10),
            (None, 10),
            (Some((50, 4)), 11),
            (None, 5),
            (Some((3, 1)), 60),
        ] {
            let (a, b) = match remote {
                None => (shared.now(physical), plain.now(physical)),
                Some((ms, logical)) => {
                    let remote = HlcTimestamp::new(ms, logical).unwrap();
                    (
                        shared.update(remote, physical),
                        plain.update(remote, physical),
                    )
                }
            };
            assert_eq!(a, b);
        }
        assert_eq!(shared.snapshot(), plain);
        let ahead = HlcTimestamp::new(1_000, 0).unwrap();
        assert!(matches!(
            shared.update(ahead, 60),
            Err(HlcError::DriftExceeded { .. })
        ));
        assert_eq!(shared.snapshot(), plain);
        let full = AtomicHlc::from(Hlc::restore(HlcTimestamp::MAX, MaxDrift::millis(0)));
        assert_eq!(full.now(0), Err(HlcError::Exhausted));
        assert_eq!(full.last(), HlcTimestamp::MAX);
    }
}
