//! The one place the crate reads the system clock and waits, for callers who
//! just want IDs.
//!
//! The rest of the crate is Sans-IO. This type is the documented exception
//! the issue asks for: it exists only with the `std` feature, reads
//! `SystemTime::now()`, and waits (sleeping for long waits, spinning for the
//! sub-millisecond wait at a tick boundary) instead of returning
//! [`IdError::WouldBlock`]. Tests and simulations should use
//! [`Generator`](crate::Generator) or [`AtomicGenerator`] with their own time.

use std::time::{Duration, SystemTime};

use crate::atomic::AtomicGenerator;
use crate::error::IdError;
use crate::generator::ClockPolicy;
use crate::id::{Id, WorkerId};
use crate::layout::{Layout, LayoutSpec};
use crate::time::UnixMillis;

/// Waits this long and longer are slept (less one millisecond of margin);
/// shorter ones are spun, because sleeping overshoots by far more than the
/// fraction of a millisecond left at a tick boundary.
const SLEEP_ABOVE: u64 = 2;

/// An ID generator on the system clock that waits out sequence exhaustion
/// and, under [`ClockPolicy::WaitUntil`], clock steps back. `&self` and
/// lock-free (an [`AtomicGenerator`] inside), so one instance can serve a
/// whole process.
///
/// Under `WaitUntil` a large step back of the clock means a long wait; pick
/// [`ClockPolicy::Reject`] or [`ClockPolicy::Tolerate`] to fail instead.
///
/// ```
/// use quorate_ids::{ClockPolicy, Layout, WorkerId, SystemClockGenerator};
///
/// let ids = SystemClockGenerator::new(Layout::SEED, WorkerId::new(1), ClockPolicy::WaitUntil)?;
/// let a = ids.next()?;
/// let b = ids.next()?;
/// assert!(a < b);
/// # Ok::<(), quorate_ids::IdError>(())
/// ```
#[derive(Debug)]
pub struct SystemClockGenerator<L: LayoutSpec = Layout> {
    inner: AtomicGenerator<L>,
}

impl<L: LayoutSpec> SystemClockGenerator<L> {
    /// A generator minting IDs for `worker` under `layout`.
    ///
    /// # Errors
    /// [`IdError::FieldOutOfRange`] if `worker` does not fit the layout's worker field.
    pub fn new(layout: L, worker: WorkerId, policy: ClockPolicy) -> Result<Self, IdError> {
        Ok(Self {
            inner: AtomicGenerator::new(layout, worker, policy)?,
        })
    }

    /// Mints the next ID at the current system time, waiting when the
    /// generator would block.
    ///
    /// # Errors
    /// [`IdError::ClockMovedBackwards`] per the policy, and
    /// [`IdError::BeforeEpoch`]/[`IdError::TimeOutOfRange`] when the system
    /// clock is outside the layout's range.
    #[allow(clippy::should_implement_trait)] // fallible and `&self`; no Iterator
    pub fn next(&self) -> Result<Id, IdError> {
        loop {
            let now = system_now();
            match self.inner.next(now) {
                Err(IdError::WouldBlock { retry_at, .. }) => wait_until(now, retry_at),
                minted => return minted,
            }
        }
    }

    /// Fills `ids` with fresh IDs, reading the clock once per tick instead of
    /// once per ID and taking each tick's IDs with one compare-and-swap
    /// ([`AtomicGenerator::next_batch`]): the way to reach the layout's cap,
    /// since a clock read costs several times more than minting (tens of
    /// nanoseconds against a few).
    /// IDs minted from one reading carry its tick, as if minted in one instant.
    ///
    /// # Errors
    /// As [`SystemClockGenerator::next`]; the IDs before the failing one are
    /// already minted and written.
    pub fn fill(&self, ids: &mut [Id]) -> Result<(), IdError> {
        let mut now = system_now();
        let mut rest = ids;
        while !rest.is_empty() {
            match self.inner.next_batch(now, rest) {
                Ok(minted) => rest = rest.get_mut(minted..).unwrap_or_default(),
                Err(IdError::WouldBlock { retry_at, .. }) => {
                    wait_until(now, retry_at);
                    now = system_now();
                }
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    /// The lock-free generator inside, for [`AtomicGenerator::resume_after`]
    /// and friends.
    #[must_use]
    pub fn inner(&self) -> &AtomicGenerator<L> {
        &self.inner
    }
}

/// The system clock; a clock before 1970 reads as the Unix epoch, which every
/// layout treats as before its epoch.
fn system_now() -> UnixMillis {
    UnixMillis::from_system_time(SystemTime::now()).unwrap_or(UnixMillis::UNIX_EPOCH)
}

fn wait_until(now: UnixMillis, retry_at: UnixMillis) {
    let wait = retry_at.checked_millis_since(now).unwrap_or(0);
    if wait > SLEEP_ABOVE {
        std::thread::sleep(Duration::from_millis(wait - 1));
    } else {
        std::hint::spin_loop();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn mints_past_sequence_exhaustion_by_waiting() {
        // Sonyflake layout: 256 IDs per 10 ms tick, so 600 IDs must wait twice.
        let ids =
            SystemClockGenerator::new(Layout::SONYFLAKE, WorkerId::new(4), ClockPolicy::WaitUntil)
                .unwrap();
        let mut last = None;
        let mut ticks = std::collections::BTreeSet::new();
        for _ in 0..600 {
            let id = ids.next().unwrap();
            assert!(Some(id) > last);
            last = Some(id);
            ticks.insert(Layout::SONYFLAKE.decompose(id).ticks);
        }
        assert!(ticks.len() >= 3, "600 IDs need at least 3 ticks of 256");
    }

    #[test]
    fn fill_mints_distinct_increasing_ids_across_ticks() {
        let ids =
            SystemClockGenerator::new(Layout::SONYFLAKE, WorkerId::new(4), ClockPolicy::Reject)
                .unwrap();
        let mut batch = [Id::from_u64(0); 600];
        ids.fill(&mut batch).unwrap();
        assert!(batch.windows(2).all(|w| w[0] < w[1]));
        let ticks: std::collections::BTreeSet<_> = batch
            .iter()
            .map(|id| Layout::SONYFLAKE.decompose(*id).ticks)
            .collect();
        assert!(ticks.len() >= 3, "600 IDs need at least 3 ticks of 256");
        assert!(ids.next().unwrap() > batch[599]);
    }

    #[test]
    fn system_time_is_after_every_preset_epoch() {
        let now = system_now();
        for layout in Layout::PRESETS {
            assert_eq!(layout.check_epoch(now), Ok(()));
        }
    }
}
