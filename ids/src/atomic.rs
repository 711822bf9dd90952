//! A lock-free generator shareable across threads.

#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};

#[cfg(not(loom))]
use core::sync::atomic::{AtomicU64, Ordering};

use crate::error::IdError;
use crate::generator::{ClockPolicy, Minter, minter_accessors};
use crate::id::{Id, WorkerId};
use crate::layout::{Layout, LayoutSpec};
use crate::time::UnixMillis;

/// A [`Generator`](crate::Generator) that threads share by `&self`: its whole
/// state is one `AtomicU64` holding the packed (tick, sequence) after the last
/// issued ID, advanced by compare-and-swap. Same policies, same errors, same
/// guarantees: no ID twice, and each thread sees its own IDs increase.
///
/// Threads may pass slightly different `now`s; a thread whose `now` is behind
/// another's last ID is treated as a clock step back under the policy, so
/// [`ClockPolicy::Tolerate`] with a small bound suits threads reading one clock.
///
/// ```
/// use quorate_ids::{AtomicGenerator, ClockPolicy, Layout, WorkerId, UnixMillis};
///
/// let ids = AtomicGenerator::new(Layout::SEED, WorkerId::new(1), ClockPolicy::WaitUntil)?;
/// let now = UnixMillis::from_millis(1_750_000_000_000);
/// std::thread::scope(|s| {
///     let a = s.spawn(|| ids.next(now));
///     let b = s.spawn(|| ids.next(now));
///     assert_ne!(a.join().unwrap()?, b.join().unwrap()?);
///     Ok::<(), quorate_ids::IdError>(())
/// })?;
/// # Ok::<(), quorate_ids::IdError>(())
/// ```
#[derive(Debug)]
pub struct AtomicGenerator<L: LayoutSpec = Layout> {
    minter: Minter<L>,
    next_free: AtomicU64,
}

impl<L: LayoutSpec> AtomicGenerator<L> {
    /// A generator minting IDs for `worker` under `layout`.
    ///
    /// # Errors
    /// [`IdError::FieldOutOfRange`] if `worker` does not fit the layout's worker field.
    pub fn new(layout: L, worker: WorkerId, policy: ClockPolicy) -> Result<Self, IdError> {
        Ok(Self {
            minter: Minter::new(layout, worker, policy)?,
            next_free: AtomicU64::new(0),
        })
    }

    /// Mints the next ID at time `now`; see [`Generator::next`](crate::Generator::next)
    /// for the errors. Lock-free: a thread retries only when another thread
    /// minted an ID between its load and its compare-and-swap.
    ///
    /// # Errors
    /// As [`Generator::next`](crate::Generator::next).
    #[inline]
    #[allow(clippy::should_implement_trait)] // takes `&self` and `now`; no Iterator
    pub fn next(&self, now: UnixMillis) -> Result<Id, IdError> {
        // Relaxed suffices: uniqueness and per-thread order come from all
        // read-modify-writes of one atomic being totally ordered, and an ID
        // publishes no other memory.
        let mut current = self.next_free.load(Ordering::Relaxed);
        loop {
            let issued = self.minter.decide(current, now)?;
            match self.next_free.compare_exchange_weak(
                current,
                issued + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(self.minter.id(issued)),
                Err(actual) => current = actual,
            }
        }
    }

    /// Mints up to `ids.len()` IDs at time `now` with one compare-and-swap,
    /// writes them to the front of `ids` and returns how many: all of them,
    /// or what is left of the current tick's sequence (at least one). The
    /// IDs are consecutive and increase; another thread's IDs never fall
    /// between them. This is the cheap way to mint many IDs from shared
    /// state: one atomic read-modify-write costs several times a whole
    /// single-threaded [`Generator::next`](crate::Generator::next).
    ///
    /// # Errors
    /// As [`Generator::next`](crate::Generator::next); nothing is written.
    pub fn next_batch(&self, now: UnixMillis, ids: &mut [Id]) -> Result<usize, IdError> {
        let want = u64::try_from(ids.len()).unwrap_or(u64::MAX);
        if want == 0 {
            return Ok(0);
        }
        let mut current = self.next_free.load(Ordering::Relaxed);
        loop {
            let first = self.minter.decide(current, now)?;
            let end = self.minter.batch_end(first, want);
            match self.next_free.compare_exchange_weak(
                current,
                end,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    let mut written = 0;
                    for (slot, issued) in ids.iter_mut().zip(first..end) {
                        *slot = self.minter.id(issued);
                        written += 1;
                    }
                    return Ok(written);
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// As [`Generator::resume_after`](crate::Generator::resume_after).
    ///
    /// # Errors
    /// [`IdError::NotInLayout`] if `id` has bits above the layout's width.
    pub fn resume_after(&self, id: Id) -> Result<(), IdError> {
        let after = self.minter.counter_after(id)?;
        self.next_free.fetch_max(after, Ordering::Relaxed);
        Ok(())
    }

    fn counter(&self) -> u64 {
        self.next_free.load(Ordering::Relaxed)
    }

    minter_accessors!();
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::Generator;
    use core::time::Duration;

    extern crate std;
    use std::collections::BTreeSet;
    use std::vec::Vec;

    #[test]
    fn matches_the_single_threaded_generator_call_for_call() {
        let policy = ClockPolicy::Tolerate(Duration::from_millis(2));
        let atomic = AtomicGenerator::new(Layout::TWITTER, WorkerId::new(9), policy).unwrap();
        let mut plain = Generator::new(Layout::TWITTER, WorkerId::new(9), policy).unwrap();
        let epoch = Layout::TWITTER.epoch().as_millis();
        for ms in [5, 5, 4, 3, 2, 6, 6, 1, 7, 7, 7] {
            let now = UnixMillis::from_millis(epoch + ms);
            assert_eq!(atomic.next(now), plain.next(now), "at +{ms} ms");
        }
        assert_eq!(atomic.last_issued(), plain.last_issued());
    }

    #[test]
    fn threads_never_share_an_id() {
        let ids =
            AtomicGenerator::new(Layout::SEED, WorkerId::new(2), ClockPolicy::WaitUntil).unwrap();
        let epoch = Layout::SEED.epoch().as_millis();
        let minted: Vec<Vec<Id>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = Vec::new();
                        let mut ms = 0;
                        while mine.len() < 20_000 {
                            match ids.next(UnixMillis::from_millis(epoch + ms)) {
                                Ok(id) => mine.push(id),
                                Err(e) => ms = e.retry_at().unwrap().as_millis() - epoch,
                            }
                        }
                        mine
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let mut all = BTreeSet::new();
        for mine in &minted {
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "per-thread order");
            all.extend(mine.iter().copied());
        }
        assert_eq!(all.len(), 80_000);
    }

    #[test]
    fn batches_stay_in_one_tick_and_match_single_ids() {
        let layout = Layout::SONYFLAKE; // 256 IDs per 10 ms tick
        let batched = AtomicGenerator::new(layout, WorkerId::new(3), ClockPolicy::Reject).unwrap();
        let single = AtomicGenerator::new(layout, WorkerId::new(3), ClockPolicy::Reject).unwrap();
        let now = UnixMillis::from_millis(layout.epoch().as_millis() + 1_000);
        let mut ids = [Id::from_u64(0); 100];
        let mut minted = Vec::new();
        // 100 + 100 + the 56 left of the tick, then the tick is used up.
        for expected in [100, 100, 56] {
            assert_eq!(batched.next_batch(now, &mut ids), Ok(expected));
            minted.extend_from_slice(&ids[..expected]);
        }
        assert!(matches!(
            batched.next_batch(now, &mut ids),
            Err(IdError::WouldBlock { .. })
        ));
        assert_eq!(batched.next_batch(now, &mut []), Ok(0));
        let one_by_one: Vec<Id> = (0..256).map(|_| single.next(now).unwrap()).collect();
        assert_eq!(minted, one_by_one);
        assert_eq!(batched.last_issued(), single.last_issued());
    }

    #[test]
    fn resume_after_raises_the_counter() {
        let ids =
            AtomicGenerator::new(Layout::SEED, WorkerId::new(2), ClockPolicy::Reject).unwrap();
        let at = |ms| UnixMillis::from_millis(Layout::SEED.epoch().as_millis() + ms);
        let seen = Layout::SEED
            .compose(crate::Parts {
                ticks: 50,
                sequence: 3,
                worker: WorkerId::new(1),
            })
            .unwrap();
        ids.resume_after(seen).unwrap();
        assert!(matches!(
            ids.next(at(49)),
            Err(IdError::ClockMovedBackwards { .. })
        ));
        assert_eq!(
            Layout::SEED.decompose(ids.next(at(50)).unwrap()).sequence,
            4
        );
    }
}
