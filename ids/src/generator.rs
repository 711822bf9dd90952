//! The Sans-IO generator, and the decision both generators share.

use core::time::Duration;

use crate::error::{BlockCause, Field, IdError};
use crate::id::{Id, WorkerId};
use crate::layout::{Layout, LayoutSpec};
use crate::time::UnixMillis;

/// What a generator does when `now` is behind the last ID it issued (the
/// wall clock stepped back, or the caller passed an older time).
///
/// Whatever the policy, a generator never issues an ID twice and never issues
/// an ID whose time is later than both `now` and its last issued ID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum ClockPolicy {
    /// Fail with [`IdError::ClockMovedBackwards`], however small the step.
    Reject,
    /// Fail with [`IdError::WouldBlock`] carrying the time at which the clock
    /// will have caught up; the caller waits and retries. The default.
    #[default]
    WaitUntil,
    /// Keep minting from the last issued tick while `now` is behind it by at
    /// most this much (rounded down to whole ticks); beyond it, as `Reject`.
    /// Small NTP slews then cost nothing, at the price of IDs whose time is
    /// up to the bound later than the clock said.
    Tolerate(Duration),
}

/// The accessors both generators share, reading their `minter` field.
macro_rules! minter_accessors {
    () => {
        /// The layout IDs are minted under.
        #[must_use]
        pub fn layout(&self) -> $crate::Layout {
            self.minter.layout()
        }

        /// The worker this generator mints for.
        #[must_use]
        pub fn worker(&self) -> $crate::WorkerId {
            self.minter.worker()
        }

        /// The clock-backwards policy.
        #[must_use]
        pub fn policy(&self) -> $crate::ClockPolicy {
            self.minter.policy()
        }

        /// The last ID issued (or passed to `resume_after`), with this
        /// generator's worker, if any.
        #[must_use]
        pub fn last_issued(&self) -> Option<$crate::Id> {
            self.minter.last_issued(self.counter())
        }
    };
}
pub(crate) use minter_accessors;

/// The state both generators share besides the counter: layout, worker, policy.
///
/// The counter, `next_free`, packs (tick, sequence) as `tick << sequence_bits |
/// sequence` and holds one past the last issued pair (0 before the first ID).
/// Adding one moves to the next sequence number and carries into the next
/// tick, so "the next ID" is one integer, which is what lets
/// [`AtomicGenerator`](crate::AtomicGenerator) keep its state in one `AtomicU64`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Minter<L> {
    layout: L,
    worker: u64,
    // The worker's bits in place in an ID, so minting is one OR.
    worker_in_place: u64,
    policy: ClockPolicy,
    tolerated_ticks: u64,
}

impl<L: LayoutSpec> Minter<L> {
    pub(crate) fn new(layout: L, worker: WorkerId, policy: ClockPolicy) -> Result<Self, IdError> {
        let fixed = layout.layout();
        if worker.get() > fixed.max_worker() {
            return Err(IdError::FieldOutOfRange {
                field: Field::Worker,
                value: worker.get(),
                max: fixed.max_worker(),
            });
        }
        let tolerated_ticks = match policy {
            ClockPolicy::Tolerate(bound) => {
                u64::try_from(bound.as_millis()).unwrap_or(u64::MAX) / fixed.time_unit().as_millis()
            }
            ClockPolicy::Reject | ClockPolicy::WaitUntil => 0,
        };
        Ok(Self {
            layout,
            worker: worker.get(),
            worker_in_place: fixed.worker_in_place(worker.get()),
            policy,
            tolerated_ticks,
        })
    }

    pub(crate) fn layout(&self) -> Layout {
        self.layout.layout()
    }

    #[inline]
    fn layout_ref(&self) -> Layout {
        self.layout.layout()
    }

    pub(crate) fn worker(&self) -> WorkerId {
        WorkerId::new(self.worker)
    }

    pub(crate) fn policy(&self) -> ClockPolicy {
        self.policy
    }

    /// The packed (tick, sequence) to issue at `now` given the counter, or why
    /// there is none. Pure: the caller stores `issued + 1`.
    #[inline]
    pub(crate) fn decide(&self, next_free: u64, now: UnixMillis) -> Result<u64, IdError> {
        let layout = self.layout.layout();
        let tick = layout.tick_at(now)?;
        let fresh = tick << layout.sequence_bits();
        // A new tick: start its sequence at zero.
        if fresh >= next_free {
            return Ok(fresh);
        }
        // Same tick as the last ID and sequence numbers left.
        if next_free >> layout.sequence_bits() == tick {
            return Ok(next_free);
        }
        self.decide_behind(next_free, tick, now)
    }

    /// `now`'s tick is behind the counter: either this tick's sequence is
    /// used up, or the clock is behind the last issued tick.
    #[cold]
    fn decide_behind(&self, next_free: u64, tick: u64, now: UnixMillis) -> Result<u64, IdError> {
        let layout = self.layout.layout();
        let sequence_bits = layout.sequence_bits();
        // next_free > fresh >= 0 here, so an ID has been issued.
        let last_tick = (next_free - 1) >> sequence_bits;
        let free_tick = next_free >> sequence_bits;
        let exhausted = free_tick != last_tick;
        if exhausted && free_tick > layout.max_tick() {
            // The last tick of the layout is used up: time itself has run out.
            return Err(IdError::TimeOutOfRange {
                now,
                last: layout.last_time(),
            });
        }
        let retry_at = layout.tick_start(free_tick);
        let blocked = |cause| Err(IdError::WouldBlock { retry_at, cause });
        if tick == last_tick {
            return blocked(BlockCause::SequenceExhausted);
        }
        let backwards = Err(IdError::ClockMovedBackwards {
            now,
            last: layout.tick_start(last_tick),
        });
        match self.policy {
            ClockPolicy::Reject => backwards,
            ClockPolicy::WaitUntil => blocked(BlockCause::ClockBehind),
            ClockPolicy::Tolerate(_) if last_tick - tick > self.tolerated_ticks => backwards,
            ClockPolicy::Tolerate(_) if exhausted => blocked(BlockCause::SequenceExhausted),
            ClockPolicy::Tolerate(_) => Ok(next_free),
        }
    }

    /// One past the last of up to `want` packed values from `first` on that
    /// stay in `first`'s tick: a batch never borrows the next tick.
    #[inline]
    pub(crate) fn batch_end(&self, first: u64, want: u64) -> u64 {
        let tick_end = (first | self.layout.layout().max_sequence()) + 1;
        first.saturating_add(want).min(tick_end)
    }

    /// The ID for a packed (tick, sequence) that `decide` returned.
    #[inline]
    pub(crate) fn id(&self, issued: u64) -> Id {
        Id::from_u64(
            self.layout
                .layout()
                .compose_packed(issued, self.worker_in_place),
        )
    }

    /// The last issued ID given the counter.
    pub(crate) fn last_issued(&self, next_free: u64) -> Option<Id> {
        next_free.checked_sub(1).map(|issued| self.id(issued))
    }

    /// The counter value that makes `id` count as already issued.
    pub(crate) fn counter_after(&self, id: Id) -> Result<u64, IdError> {
        let layout = self.layout.layout();
        let parts = layout.check(id)?;
        Ok(((parts.ticks << layout.sequence_bits()) | parts.sequence) + 1)
    }
}

/// The Sans-IO ID generator: the caller passes the current time to
/// [`Generator::next`] and handles [`IdError::WouldBlock`] by retrying at
/// `retry_at`.
///
/// `L` is a [`Layout`] value (the default), or a
/// [`ConstLayout`](crate::ConstLayout) marker type that fixes the layout at
/// compile time.
///
/// ```
/// use quorate_ids::{ClockPolicy, Generator, IdError, Layout, WorkerId, UnixMillis};
///
/// let layout = Layout::SEED;
/// let mut ids = Generator::new(layout, WorkerId::new(7), ClockPolicy::WaitUntil)?;
/// let now = UnixMillis::from_millis(1_750_000_000_000);
/// let a = ids.next(now)?;
/// let b = ids.next(now)?;
/// assert!(a < b);
/// assert_eq!(b.decompose(layout).sequence, 1);
/// assert_eq!(b.decompose(layout).worker, WorkerId::new(7));
/// assert_eq!(b.timestamp(layout), now);
///
/// // The clock steps back 3 ms: wait until it is back at the last tick.
/// let earlier = UnixMillis::from_millis(now.as_millis() - 3);
/// assert_eq!(ids.next(earlier).unwrap_err().retry_at(), Some(now));
/// # Ok::<(), IdError>(())
/// ```
// Not `Clone`: a copy would mint the same IDs as the original.
#[derive(Debug)]
pub struct Generator<L: LayoutSpec = Layout> {
    minter: Minter<L>,
    next_free: u64,
    // The tick of the last ID, cached so that another ID in it costs two
    // compares and two adds: its first millisecond, one past its last packed
    // value (0: no cached tick), and the ID `next_free` stands for.
    window_start: u64,
    window_limit: u64,
    next_id: u64,
}

impl<L: LayoutSpec> Generator<L> {
    /// A generator minting IDs for `worker` under `layout`.
    ///
    /// # Errors
    /// [`IdError::FieldOutOfRange`] if `worker` does not fit the layout's worker field.
    pub fn new(layout: L, worker: WorkerId, policy: ClockPolicy) -> Result<Self, IdError> {
        Ok(Self {
            minter: Minter::new(layout, worker, policy)?,
            next_free: 0,
            window_start: 0,
            window_limit: 0,
            next_id: 0,
        })
    }

    /// Mints the next ID at time `now`.
    ///
    /// # Errors
    /// - [`IdError::WouldBlock`]: this tick's sequence is used up, or the clock is
    ///   behind under [`ClockPolicy::WaitUntil`]; retry at `retry_at`.
    /// - [`IdError::ClockMovedBackwards`]: the clock is behind beyond what the
    ///   policy accepts.
    /// - [`IdError::BeforeEpoch`], [`IdError::TimeOutOfRange`]: `now` is outside
    ///   the layout's time range.
    ///
    /// On error the generator is unchanged.
    #[inline]
    #[allow(clippy::should_implement_trait)] // `now` makes this no Iterator
    pub fn next(&mut self, now: UnixMillis) -> Result<Id, IdError> {
        let layout = self.minter.layout_ref();
        // `now` in the tick of the last ID with sequence left: `decide` would
        // answer `next_free` (same tick), so skip it.
        if now.as_millis().wrapping_sub(self.window_start) < layout.time_unit().as_millis()
            && self.next_free < self.window_limit
        {
            let id = self.next_id;
            self.next_free += 1;
            self.next_id = self.next_id.wrapping_add(layout.sequence_step());
            return Ok(Id::from_u64(id));
        }
        self.next_slow(now)
    }

    #[cold]
    fn next_slow(&mut self, now: UnixMillis) -> Result<Id, IdError> {
        let issued = self.minter.decide(self.next_free, now)?;
        let layout = self.minter.layout_ref();
        let tick = issued >> layout.sequence_bits();
        let id = self.minter.id(issued);
        self.next_free = issued + 1;
        self.window_start = layout.tick_start(tick).as_millis();
        self.window_limit = (tick + 1) << layout.sequence_bits();
        self.next_id = id.to_u64().wrapping_add(layout.sequence_step());
        Ok(id)
    }

    /// Treats every ID up to and including `id` (any worker) as issued, so that a
    /// restarted worker whose clock went back while it was down cannot mint them
    /// again. Persist [`Generator::last_issued`] (or a time ahead of it) and
    /// feed it back here on start. Never moves the generator backwards.
    ///
    /// # Errors
    /// [`IdError::NotInLayout`] if `id` has bits above the layout's width.
    pub fn resume_after(&mut self, id: Id) -> Result<(), IdError> {
        self.next_free = self.next_free.max(self.minter.counter_after(id)?);
        self.window_limit = 0;
        Ok(())
    }

    fn counter(&self) -> u64 {
        self.next_free
    }

    minter_accessors!();
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: u64 = 1_704_067_200_000;

    fn at(ms_after_epoch: u64) -> UnixMillis {
        UnixMillis::from_millis(EPOCH + ms_after_epoch)
    }

    fn generator(policy: ClockPolicy) -> Generator {
        Generator::new(Layout::SEED, WorkerId::new(5), policy).unwrap()
    }

    fn parts(id: Id) -> (u64, u64, u64) {
        let p = Layout::SEED.decompose(id);
        (p.ticks, p.sequence, p.worker.get())
    }

    #[test]
    fn first_id_of_a_tick_has_sequence_zero() {
        let mut ids = generator(ClockPolicy::Reject);
        assert_eq!(ids.last_issued(), None);
        let id = ids.next(at(10)).unwrap();
        assert_eq!(parts(id), (10, 0, 5));
        assert_eq!(id.to_u64(), (10 << 24) | 5);
        assert_eq!(parts(ids.next(at(10)).unwrap()), (10, 1, 5));
        assert_eq!(parts(ids.next(at(11)).unwrap()), (11, 0, 5));
        assert_eq!(ids.last_issued().map(parts), Some((11, 0, 5)));
    }

    #[test]
    fn worker_must_fit_the_layout() {
        assert_eq!(
            Generator::new(Layout::SEED, WorkerId::new(1024), ClockPolicy::Reject).unwrap_err(),
            IdError::FieldOutOfRange {
                field: Field::Worker,
                value: 1024,
                max: 1023
            }
        );
    }

    #[test]
    fn exhausted_sequence_would_block_until_the_next_tick() {
        for policy in [
            ClockPolicy::Reject,
            ClockPolicy::WaitUntil,
            ClockPolicy::Tolerate(Duration::from_millis(50)),
        ] {
            let mut ids = generator(policy);
            for sequence in 0..16_384 {
                assert_eq!(parts(ids.next(at(7)).unwrap()), (7, sequence, 5));
            }
            let before = ids.next_free;
            assert_eq!(
                ids.next(at(7)),
                Err(IdError::WouldBlock {
                    retry_at: at(8),
                    cause: BlockCause::SequenceExhausted
                }),
                "{policy:?}"
            );
            assert_eq!(ids.next_free, before, "a failed call changes nothing");
            assert_eq!(parts(ids.next(at(8)).unwrap()), (8, 0, 5));
        }
    }

    #[test]
    fn reject_fails_on_any_step_back_and_recovers_when_the_clock_does() {
        let mut ids = generator(ClockPolicy::Reject);
        let last = ids.next(at(100)).unwrap();
        assert_eq!(
            ids.next(at(99)),
            Err(IdError::ClockMovedBackwards {
                now: at(99),
                last: at(100)
            })
        );
        let next = ids.next(at(100)).unwrap();
        assert!(next > last);
        assert_eq!(parts(next), (100, 1, 5));
    }

    #[test]
    fn wait_until_reports_when_the_clock_catches_up() {
        let mut ids = generator(ClockPolicy::WaitUntil);
        ids.next(at(100)).unwrap();
        assert_eq!(
            ids.next(at(60)),
            Err(IdError::WouldBlock {
                retry_at: at(100),
                cause: BlockCause::ClockBehind
            })
        );
        assert_eq!(parts(ids.next(at(100)).unwrap()), (100, 1, 5));
    }

    #[test]
    fn wait_until_behind_an_exhausted_tick_waits_for_the_tick_after() {
        let mut ids = generator(ClockPolicy::WaitUntil);
        for _ in 0..16_384 {
            ids.next(at(100)).unwrap();
        }
        assert_eq!(
            ids.next(at(90)),
            Err(IdError::WouldBlock {
                retry_at: at(101),
                cause: BlockCause::ClockBehind
            })
        );
    }

    #[test]
    fn tolerate_continues_from_the_last_tick_within_the_bound() {
        let mut ids = generator(ClockPolicy::Tolerate(Duration::from_millis(5)));
        ids.next(at(100)).unwrap();
        // 5 ms behind: tolerated, the ID keeps the last tick.
        assert_eq!(parts(ids.next(at(95)).unwrap()), (100, 1, 5));
        // 6 ms behind: beyond the bound.
        assert_eq!(
            ids.next(at(94)),
            Err(IdError::ClockMovedBackwards {
                now: at(94),
                last: at(100)
            })
        );
        assert_eq!(parts(ids.next(at(97)).unwrap()), (100, 2, 5));
        assert_eq!(parts(ids.next(at(101)).unwrap()), (101, 0, 5));
    }

    #[test]
    fn tolerate_never_borrows_a_future_tick() {
        let mut ids = generator(ClockPolicy::Tolerate(Duration::from_secs(1)));
        for _ in 0..16_384 {
            ids.next(at(100)).unwrap();
        }
        assert_eq!(
            ids.next(at(99)),
            Err(IdError::WouldBlock {
                retry_at: at(101),
                cause: BlockCause::SequenceExhausted
            })
        );
    }

    #[test]
    fn tolerate_bound_is_counted_in_whole_ticks() {
        // Sonyflake ticks are 10 ms: a 15 ms bound tolerates one tick.
        let mut ids = Generator::new(
            Layout::SONYFLAKE,
            WorkerId::new(1),
            ClockPolicy::Tolerate(Duration::from_millis(15)),
        )
        .unwrap();
        let epoch = Layout::SONYFLAKE.epoch().as_millis();
        let t = |ms| UnixMillis::from_millis(epoch + ms);
        ids.next(t(100)).unwrap();
        assert!(ids.next(t(90)).is_ok());
        assert!(matches!(
            ids.next(t(89)),
            Err(IdError::ClockMovedBackwards { .. })
        ));
    }

    #[test]
    fn time_outside_the_layout_is_an_error_not_a_wraparound() {
        let mut ids = generator(ClockPolicy::Reject);
        let before = UnixMillis::from_millis(EPOCH - 1);
        assert_eq!(
            ids.next(before),
            Err(IdError::BeforeEpoch {
                now: before,
                epoch: UnixMillis::from_millis(EPOCH)
            })
        );
        let last = Layout::SEED.last_time();
        let past = last.saturating_add_millis(1);
        assert_eq!(
            ids.next(past),
            Err(IdError::TimeOutOfRange { now: past, last })
        );
        // The very last tick can be used up, then time has run out for good.
        for _ in 0..16_384 {
            ids.next(last).unwrap();
        }
        assert_eq!(
            ids.next(last),
            Err(IdError::TimeOutOfRange { now: last, last })
        );
    }

    #[test]
    fn resume_after_skips_ids_issued_before_a_restart() {
        let mut before_restart = generator(ClockPolicy::WaitUntil);
        let mut last = before_restart.next(at(500)).unwrap();
        last = before_restart.next(at(500)).unwrap().max(last);
        // Restarted with the clock 200 ms behind.
        let mut after = generator(ClockPolicy::WaitUntil);
        after.resume_after(last).unwrap();
        assert_eq!(after.next(at(300)).unwrap_err().retry_at(), Some(at(500)));
        let next = after.next(at(500)).unwrap();
        assert!(next > last);
        // Never moves backwards.
        after.resume_after(Id::from_u64(0)).unwrap();
        assert!(after.next(at(500)).unwrap() > next);
        assert!(matches!(
            Generator::new(Layout::TWITTER, WorkerId::new(0), ClockPolicy::Reject)
                .unwrap()
                .resume_after(Id::from_u64(u64::MAX)),
            Err(IdError::NotInLayout { .. })
        ));
    }

    #[test]
    fn runtime_and_const_layouts_mint_the_same_ids() {
        let mut dynamic =
            Generator::new(Layout::SEED, WorkerId::new(5), ClockPolicy::Reject).unwrap();
        let mut fixed = generator(ClockPolicy::Reject);
        for ms in [0, 0, 1, 1, 1, 30, 31, 31] {
            assert_eq!(dynamic.next(at(ms)), fixed.next(at(ms)));
        }
    }

    #[test]
    fn twitter_order_puts_the_worker_above_the_sequence() {
        let mut ids =
            Generator::new(Layout::TWITTER, WorkerId::new(3), ClockPolicy::Reject).unwrap();
        let epoch = Layout::TWITTER.epoch().as_millis();
        ids.next(UnixMillis::from_millis(epoch + 2)).unwrap();
        let id = ids.next(UnixMillis::from_millis(epoch + 2)).unwrap();
        // Hand-laid: tick 2 above 22 bits, worker 3 above 12 bits, sequence 1.
        assert_eq!(id.to_u64(), (2 << 22) | (3 << 12) | 1);
    }
}
