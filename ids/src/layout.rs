//! Bit layouts: how an ID's 64 bits split into time, sequence and worker.

use crate::error::{Field, IdError, LayoutError};
use crate::id::{Id, Parts, WorkerId};
use crate::time::{TimeUnit, UnixMillis};

/// Where the worker field sits relative to the sequence field. Time is always on
/// top, so IDs sort by time first whichever order is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum FieldOrder {
    /// `time | sequence | worker` (the course layout, Sonyflake): within a tick IDs
    /// sort by sequence, interleaving workers.
    #[default]
    // Serialized as `SequenceThenNode` before the field was renamed.
    #[cfg_attr(feature = "serde", serde(alias = "SequenceThenNode"))]
    SequenceThenWorker,
    /// `time | worker | sequence` (Twitter, Discord, Instagram): within a tick IDs
    /// sort by worker, then sequence.
    #[cfg_attr(feature = "serde", serde(alias = "NodeThenSequence"))]
    WorkerThenSequence,
}

/// How an ID's bits split into time, sequence and worker, with the time unit and
/// the custom epoch the time counts from.
///
/// Built with the `const fn` [`Layout::new`], so a fixed layout is a constant.
/// The presets are the constants [`Layout::SEED`], [`Layout::TWITTER`],
/// [`Layout::SONYFLAKE`], [`Layout::DISCORD`] and [`Layout::INSTAGRAM`]: the
/// one way to name them. A generator takes a `Layout` value, or a
/// [`ConstLayout`] marker type of your own that fixes it at compile time.
///
/// ```
/// use quorate_ids::{FieldOrder, Layout, TimeUnit, UnixMillis};
///
/// // 41 bits of 1 ms, 12 bits of worker, 10 bits of sequence from 2025-01-01.
/// const MINE: Layout = match Layout::new(41, 10, 12, UnixMillis::from_millis(1_735_689_600_000)) {
///     Ok(layout) => layout.with_order(FieldOrder::WorkerThenSequence),
///     Err(_) => panic!("invalid layout"), // a compile-time error, never a run-time panic
/// };
/// assert_eq!(MINE.ids_per_tick(), 1024);
/// assert!(Layout::new(40, 14, 11, UnixMillis::UNIX_EPOCH).is_err()); // 65 bits
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    time_bits: u8,
    sequence_bits: u8,
    worker_bits: u8,
    order: FieldOrder,
    unit: TimeUnit,
    epoch: UnixMillis,
    // The low bits of the worker field that name a process (Discord: 5), the
    // rest a host; 0 when the worker field is not split.
    process_bits: u8,
    // Derived from the above by `with_order`; kept so `compose` is three shifts.
    sequence_shift: u8,
    worker_shift: u8,
    // Derived from `time_bits`: read on every ID, so not recomputed.
    max_tick: u64,
}

/// A mask of the low `bits` bits (`bits <= 64`).
const fn low_mask(bits: u8) -> u64 {
    if bits == 0 {
        0
    } else {
        u64::MAX >> (64 - bits as u32)
    }
}

/// A layout for constant contexts: `Layout::new` whose errors are compile errors.
const fn known_good(layout: Result<Layout, LayoutError>) -> Layout {
    match layout {
        Ok(layout) => layout,
        Err(_) => panic!("preset layout is invalid"),
    }
}

impl Layout {
    /// The course layout (the default): 40 bits of 1 ms ticks since
    /// 2024-01-01T00:00:00Z (good until 2058), 14 bits of sequence (16,384 IDs
    /// per ms), 10 bits of worker (1,024 workers); `time | sequence | worker`, 64 bits.
    pub const SEED: Self = known_good(Self::new(
        40,
        14,
        10,
        UnixMillis::from_millis(1_704_067_200_000),
    ));

    /// Twitter Snowflake: 41 bits of 1 ms since 2010-11-04T01:42:54.657Z, 10 bits
    /// of worker, 12 bits of sequence; `time | worker | sequence`, 63 bits.
    pub const TWITTER: Self = known_good(Self::new(
        41,
        12,
        10,
        UnixMillis::from_millis(1_288_834_974_657),
    ))
    .with_order(FieldOrder::WorkerThenSequence);

    /// Sonyflake: 39 bits of 10 ms since 2014-09-01T00:00:00Z, 8 bits of sequence,
    /// 16 bits of machine id; `time | sequence | worker`, 63 bits.
    pub const SONYFLAKE: Self = known_good(Self::new(
        39,
        8,
        16,
        UnixMillis::from_millis(1_409_529_600_000),
    ))
    .with_time_unit(TimeUnit::TEN_MILLISECONDS);

    /// Discord: 42 bits of 1 ms since 2015-01-01T00:00:00Z, 10 bits of worker
    /// split into 5 bits of host (Discord's "internal worker id") above 5 bits
    /// of process (see [`Layout::worker_id`]), 12 bits of increment; `time | worker | sequence`, 64 bits.
    pub const DISCORD: Self = known_good(
        known_good(Self::new(
            42,
            12,
            10,
            UnixMillis::from_millis(1_420_070_400_000),
        ))
        .with_order(FieldOrder::WorkerThenSequence)
        .with_process_bits(5),
    );

    /// Instagram: 41 bits of 1 ms since Instagram's epoch (1314220021721), 13 bits
    /// of logical shard, 10 bits of sequence; `time | worker | sequence`, 64 bits.
    pub const INSTAGRAM: Self = known_good(Self::new(
        41,
        10,
        13,
        UnixMillis::from_millis(1_314_220_021_721),
    ))
    .with_order(FieldOrder::WorkerThenSequence);

    /// Every preset, for listing or testing them all.
    pub const PRESETS: [Self; 5] = [
        Self::SEED,
        Self::TWITTER,
        Self::SONYFLAKE,
        Self::DISCORD,
        Self::INSTAGRAM,
    ];

    /// A layout of `time_bits` of time since `epoch`, `sequence_bits` of
    /// per-tick sequence and `worker_bits` of worker, `time | sequence | worker` with
    /// 1 ms ticks (change those with [`Layout::with_order`] and
    /// [`Layout::with_time_unit`]).
    ///
    /// # Errors
    /// The widths must add up to 63 or 64, time needs a bit, and time plus
    /// sequence must fit in 63 bits. Whether the epoch is in the past can only
    /// be known given the current time: see [`Layout::check_epoch`].
    pub const fn new(
        time_bits: u8,
        sequence_bits: u8,
        worker_bits: u8,
        epoch: UnixMillis,
    ) -> Result<Self, LayoutError> {
        let sum = time_bits as u16 + sequence_bits as u16 + worker_bits as u16;
        if sum != 63 && sum != 64 {
            return Err(LayoutError::WidthsDoNotFill {
                time: time_bits,
                sequence: sequence_bits,
                worker: worker_bits,
                sum,
            });
        }
        if time_bits == 0 {
            return Err(LayoutError::NoTimeBits);
        }
        if time_bits as u16 + sequence_bits as u16 > 63 {
            return Err(LayoutError::TimeAndSequenceTooWide {
                time: time_bits,
                sequence: sequence_bits,
            });
        }
        let layout = Self {
            time_bits,
            sequence_bits,
            worker_bits,
            order: FieldOrder::SequenceThenWorker,
            unit: TimeUnit::MILLISECOND,
            epoch,
            process_bits: 0,
            sequence_shift: 0,
            worker_shift: 0,
            max_tick: low_mask(time_bits),
        };
        Ok(layout.with_order(FieldOrder::SequenceThenWorker))
    }

    /// This layout with the worker and sequence fields in `order`.
    #[must_use]
    pub const fn with_order(mut self, order: FieldOrder) -> Self {
        self.order = order;
        match order {
            FieldOrder::SequenceThenWorker => {
                self.worker_shift = 0;
                self.sequence_shift = self.worker_bits;
            }
            FieldOrder::WorkerThenSequence => {
                self.sequence_shift = 0;
                self.worker_shift = self.sequence_bits;
            }
        }
        self
    }

    /// This layout with the worker field split into a host part above a
    /// process part of `process_bits` (Discord: 5 and 5), read and built with
    /// [`Layout::host_and_process`] and [`Layout::worker_id`]. The split only
    /// names the bits; IDs are the same.
    ///
    /// # Errors
    /// [`LayoutError::ProcessWiderThanWorker`] if `process_bits` exceeds the
    /// worker width.
    pub const fn with_process_bits(mut self, process_bits: u8) -> Result<Self, LayoutError> {
        if process_bits > self.worker_bits {
            return Err(LayoutError::ProcessWiderThanWorker {
                process: process_bits,
                worker: self.worker_bits,
            });
        }
        self.process_bits = process_bits;
        Ok(self)
    }

    /// Width of the process part of the worker field (0 if the field is not split).
    #[must_use]
    pub const fn process_bits(&self) -> u8 {
        self.process_bits
    }

    /// Width of the host part of the worker field (all of it if not split).
    #[must_use]
    pub const fn host_bits(&self) -> u8 {
        self.worker_bits - self.process_bits
    }

    /// The worker id of `host` and `process` under this layout's split.
    ///
    /// # Errors
    /// [`IdError::FieldOutOfRange`] naming [`Field::Host`] or
    /// [`Field::Process`] when either does not fit its width.
    pub const fn worker_id(&self, host: u64, process: u64) -> Result<WorkerId, IdError> {
        let max_host = low_mask(self.host_bits());
        let max_process = low_mask(self.process_bits);
        if host > max_host {
            return Err(IdError::FieldOutOfRange {
                field: Field::Host,
                value: host,
                max: max_host,
            });
        }
        if process > max_process {
            return Err(IdError::FieldOutOfRange {
                field: Field::Process,
                value: process,
                max: max_process,
            });
        }
        Ok(WorkerId::new((host << self.process_bits) | process))
    }

    /// `worker` split into `(host, process)` under this layout's split.
    #[must_use]
    pub const fn host_and_process(&self, worker: WorkerId) -> (u64, u64) {
        let worker = worker.get() & self.max_worker();
        (
            worker >> self.process_bits,
            worker & low_mask(self.process_bits),
        )
    }

    /// This layout counting time in ticks of `unit`.
    #[must_use]
    pub const fn with_time_unit(mut self, unit: TimeUnit) -> Self {
        self.unit = unit;
        self
    }

    /// This layout counting time from `epoch`.
    #[must_use]
    pub const fn with_epoch(mut self, epoch: UnixMillis) -> Self {
        self.epoch = epoch;
        self
    }

    /// Checks that the epoch is not after `now`, the caller's current time.
    ///
    /// # Errors
    /// [`LayoutError::EpochInFuture`] if it is.
    pub const fn check_epoch(&self, now: UnixMillis) -> Result<(), LayoutError> {
        if self.epoch.as_millis() > now.as_millis() {
            return Err(LayoutError::EpochInFuture {
                epoch: self.epoch,
                now,
            });
        }
        Ok(())
    }

    /// Width of the time field in bits.
    #[must_use]
    pub const fn time_bits(&self) -> u8 {
        self.time_bits
    }

    /// Width of the sequence field in bits.
    #[must_use]
    pub const fn sequence_bits(&self) -> u8 {
        self.sequence_bits
    }

    /// Width of the worker field in bits.
    #[must_use]
    pub const fn worker_bits(&self) -> u8 {
        self.worker_bits
    }

    /// Total width: 63 (the ID is also a non-negative `i64`) or 64.
    #[must_use]
    pub const fn total_bits(&self) -> u8 {
        self.time_bits + self.sequence_bits + self.worker_bits
    }

    /// The order of the worker and sequence fields.
    #[must_use]
    pub const fn order(&self) -> FieldOrder {
        self.order
    }

    /// The length of one tick.
    #[must_use]
    pub const fn time_unit(&self) -> TimeUnit {
        self.unit
    }

    /// The time tick zero starts at.
    #[must_use]
    pub const fn epoch(&self) -> UnixMillis {
        self.epoch
    }

    /// The largest time field value (ticks since the epoch).
    #[must_use]
    pub const fn max_tick(&self) -> u64 {
        self.max_tick
    }

    /// The largest sequence number.
    #[must_use]
    pub const fn max_sequence(&self) -> u64 {
        low_mask(self.sequence_bits)
    }

    /// The largest worker id.
    #[must_use]
    pub const fn max_worker(&self) -> u64 {
        low_mask(self.worker_bits)
    }

    /// How many IDs one worker can mint per tick: the throughput cap.
    #[must_use]
    pub const fn ids_per_tick(&self) -> u64 {
        1 << self.sequence_bits
    }

    /// The last millisecond the time field can represent (saturating).
    #[must_use]
    pub const fn last_time(&self) -> UnixMillis {
        self.tick_start(self.max_tick())
            .saturating_add_millis(self.unit.as_millis() - 1)
    }

    /// The tick `now` falls in.
    ///
    /// # Errors
    /// [`IdError::BeforeEpoch`] or [`IdError::TimeOutOfRange`] when `now` is
    /// outside what the time field can hold.
    #[inline]
    pub const fn tick_at(&self, now: UnixMillis) -> Result<u64, IdError> {
        let Some(since) = now.checked_millis_since(self.epoch) else {
            return Err(IdError::BeforeEpoch {
                now,
                epoch: self.epoch,
            });
        };
        // Most layouts tick in milliseconds: skip the division for them.
        let unit = self.unit.as_millis();
        let tick = if unit == 1 { since } else { since / unit };
        if tick > self.max_tick() {
            return Err(IdError::TimeOutOfRange {
                now,
                last: self.last_time(),
            });
        }
        Ok(tick)
    }

    /// The first millisecond of `tick` (saturating).
    #[must_use]
    pub const fn tick_start(&self, tick: u64) -> UnixMillis {
        self.epoch
            .saturating_add_millis(tick.saturating_mul(self.unit.as_millis()))
    }

    /// Puts the three fields together.
    ///
    /// # Errors
    /// [`IdError::FieldOutOfRange`] when a field does not fit its width.
    pub const fn compose(&self, parts: Parts) -> Result<Id, IdError> {
        let checks = [
            (Field::Time, parts.ticks, self.max_tick()),
            (Field::Sequence, parts.sequence, self.max_sequence()),
            (Field::Worker, parts.worker.get(), self.max_worker()),
        ];
        let mut i = 0;
        while i < checks.len() {
            let (field, value, max) = checks[i];
            if value > max {
                return Err(IdError::FieldOutOfRange { field, value, max });
            }
            i += 1;
        }
        Ok(Id::from_u64(self.compose_unchecked(
            parts.ticks,
            parts.sequence,
            parts.worker.get(),
        )))
    }

    /// Fields assumed in range.
    #[inline]
    pub(crate) const fn compose_unchecked(&self, tick: u64, sequence: u64, worker: u64) -> u64 {
        (tick << self.time_shift())
            | (sequence << self.sequence_shift)
            | (worker << self.worker_shift)
    }

    /// What adding one to the sequence adds to an ID.
    #[inline]
    pub(crate) const fn sequence_step(&self) -> u64 {
        1 << self.sequence_shift
    }

    /// `worker` moved to its place in an ID (fields assumed in range).
    #[inline]
    pub(crate) const fn worker_in_place(&self, worker: u64) -> u64 {
        worker << self.worker_shift
    }

    /// The ID for a generator's packed `tick << sequence_bits | sequence`,
    /// given [`Layout::worker_in_place`] of its worker.
    #[inline]
    pub(crate) const fn compose_packed(&self, packed: u64, worker_in_place: u64) -> u64 {
        match self.order {
            // time and sequence are already adjacent and in place above the worker.
            FieldOrder::SequenceThenWorker => (packed << self.worker_bits) | worker_in_place,
            // time moves up past the worker; the sequence stays at the bottom.
            FieldOrder::WorkerThenSequence => {
                let sequence = self.max_sequence();
                ((packed & !sequence) << self.worker_bits) | (packed & sequence) | worker_in_place
            }
        }
    }

    const fn time_shift(&self) -> u8 {
        self.sequence_bits + self.worker_bits
    }

    /// Splits `id` into its fields. Bits above the layout's width are ignored;
    /// use [`Layout::check`] to reject them.
    #[must_use]
    pub const fn decompose(&self, id: Id) -> Parts {
        let raw = id.to_u64();
        Parts {
            ticks: (raw >> self.time_shift()) & self.max_tick(),
            sequence: (raw >> self.sequence_shift) & self.max_sequence(),
            worker: WorkerId::new((raw >> self.worker_shift) & self.max_worker()),
        }
    }

    /// Splits `id` into its fields, rejecting bits above the layout's width
    /// (an ID from untrusted input that this layout never mints).
    ///
    /// # Errors
    /// [`IdError::NotInLayout`] when such bits are set.
    pub const fn check(&self, id: Id) -> Result<Parts, IdError> {
        let bits = self.total_bits();
        if id.to_u64() & !low_mask(bits) != 0 {
            return Err(IdError::NotInLayout {
                id: id.to_u64(),
                bits,
            });
        }
        Ok(self.decompose(id))
    }

    /// The wall-clock time at the start of `id`'s tick.
    #[must_use]
    pub const fn timestamp(&self, id: Id) -> UnixMillis {
        self.tick_start(self.decompose(id).ticks)
    }

    /// The smallest ID any worker can mint at `time`: the lower bound of a range
    /// scan "IDs created at or after `time`".
    ///
    /// # Errors
    /// As [`Layout::tick_at`].
    pub const fn first_id_at(&self, time: UnixMillis) -> Result<Id, IdError> {
        match self.tick_at(time) {
            Ok(tick) => Ok(Id::from_u64(self.compose_unchecked(tick, 0, 0))),
            Err(e) => Err(e),
        }
    }

    /// The largest ID any worker can mint in the tick of `time`: the inclusive
    /// upper bound of a range scan "IDs created up to `time`".
    ///
    /// # Errors
    /// As [`Layout::tick_at`].
    pub const fn last_id_at(&self, time: UnixMillis) -> Result<Id, IdError> {
        match self.tick_at(time) {
            Ok(tick) => Ok(Id::from_u64(self.compose_unchecked(
                tick,
                self.max_sequence(),
                self.max_worker(),
            ))),
            Err(e) => Err(e),
        }
    }
}

impl Default for Layout {
    /// [`Layout::SEED`].
    fn default() -> Self {
        Self::SEED
    }
}

/// Anything a generator can read its layout from: a run-time [`Layout`] value,
/// or a zero-sized [`ConstLayout`] marker whose layout is a constant.
///
/// An implementation must return the same layout on every call; generators
/// read it on every ID.
pub trait LayoutSpec {
    /// The layout.
    fn layout(&self) -> Layout;
}

impl LayoutSpec for Layout {
    #[inline]
    fn layout(&self) -> Layout {
        *self
    }
}

/// A layout fixed at compile time. Generators over a `ConstLayout` marker type
/// compile every shift, mask and tick division down to constants.
///
/// ```
/// use quorate_ids::{ConstLayout, Generator, ClockPolicy, Layout, WorkerId, UnixMillis};
///
/// #[derive(Clone, Copy, Debug, Default)]
/// struct Tenths;
/// impl ConstLayout for Tenths {
///     const LAYOUT: Layout = Layout::SONYFLAKE.with_epoch(UnixMillis::from_millis(1_700_000_000_000));
/// }
/// let mut ids = Generator::new(Tenths, WorkerId::new(3), ClockPolicy::Reject).unwrap();
/// let id = ids.next(UnixMillis::from_millis(1_700_000_000_025)).unwrap();
/// assert_eq!(Tenths::LAYOUT.decompose(id).ticks, 2); // 25 ms = tick 2 of 10 ms
/// ```
pub trait ConstLayout {
    /// The layout.
    const LAYOUT: Layout;
}

impl<T: ConstLayout> LayoutSpec for T {
    #[inline]
    fn layout(&self) -> Layout {
        T::LAYOUT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: UnixMillis = UnixMillis::from_millis(1_000);

    #[test]
    fn widths_must_fill_63_or_64_bits() {
        assert!(Layout::new(40, 14, 10, EPOCH).is_ok());
        assert!(Layout::new(41, 12, 10, EPOCH).is_ok());
        assert_eq!(
            Layout::new(40, 14, 8, EPOCH),
            Err(LayoutError::WidthsDoNotFill {
                time: 40,
                sequence: 14,
                worker: 8,
                sum: 62
            })
        );
        assert!(matches!(
            Layout::new(200, 200, 200, EPOCH),
            Err(LayoutError::WidthsDoNotFill { sum: 600, .. })
        ));
        assert_eq!(Layout::new(0, 54, 10, EPOCH), Err(LayoutError::NoTimeBits));
        assert_eq!(
            Layout::new(40, 24, 0, EPOCH),
            Err(LayoutError::TimeAndSequenceTooWide {
                time: 40,
                sequence: 24
            })
        );
        assert!(Layout::new(40, 23, 0, EPOCH).is_ok());
    }

    #[test]
    fn epoch_may_not_be_in_the_future() {
        let layout = Layout::SEED;
        let epoch = layout.epoch();
        assert_eq!(layout.check_epoch(epoch), Ok(()));
        let before = UnixMillis::from_millis(epoch.as_millis() - 1);
        assert_eq!(
            layout.check_epoch(before),
            Err(LayoutError::EpochInFuture { epoch, now: before })
        );
    }

    #[test]
    fn presets_have_the_documented_widths() {
        let widths = |l: Layout| {
            (
                l.time_bits(),
                l.sequence_bits(),
                l.worker_bits(),
                l.total_bits(),
            )
        };
        assert_eq!(widths(Layout::SEED), (40, 14, 10, 64));
        assert_eq!(widths(Layout::TWITTER), (41, 12, 10, 63));
        assert_eq!(widths(Layout::SONYFLAKE), (39, 8, 16, 63));
        assert_eq!(widths(Layout::DISCORD), (42, 12, 10, 64));
        assert_eq!(widths(Layout::INSTAGRAM), (41, 10, 13, 64));
        assert_eq!(Layout::SONYFLAKE.time_unit().as_millis(), 10);
        assert_eq!(Layout::SEED.ids_per_tick(), 16_384);
        assert_eq!(Layout::default(), Layout::SEED);
    }

    #[test]
    fn seed_layout_lasts_until_2058() {
        // 2^40 ms is 34.8 years: 2024-01-01 + 2^40 - 1 ms, computed by hand.
        assert_eq!(
            Layout::SEED.last_time().as_millis(),
            1_704_067_200_000 + (1 << 40) - 1
        );
    }

    #[test]
    fn ticks_outside_the_layout_are_errors() {
        let layout = Layout::SONYFLAKE.with_epoch(EPOCH);
        assert_eq!(layout.tick_at(UnixMillis::from_millis(1_019)), Ok(1));
        assert_eq!(
            layout.tick_at(UnixMillis::from_millis(999)),
            Err(IdError::BeforeEpoch {
                now: UnixMillis::from_millis(999),
                epoch: EPOCH
            })
        );
        let last = layout.last_time();
        assert_eq!(last.as_millis(), 1_000 + ((1 << 39) * 10) - 1);
        assert_eq!(layout.tick_at(last), Ok(layout.max_tick()));
        let past = last.saturating_add_millis(1);
        assert_eq!(
            layout.tick_at(past),
            Err(IdError::TimeOutOfRange { now: past, last })
        );
    }

    #[test]
    fn compose_places_fields_by_order() {
        let seq_then_worker = Layout::new(40, 14, 10, EPOCH).unwrap();
        let parts = Parts {
            ticks: 3,
            sequence: 2,
            worker: WorkerId::new(1),
        };
        assert_eq!(
            seq_then_worker.compose(parts).unwrap().to_u64(),
            (3 << 24) | (2 << 10) | 1
        );
        let worker_then_seq = seq_then_worker.with_order(FieldOrder::WorkerThenSequence);
        assert_eq!(
            worker_then_seq.compose(parts).unwrap().to_u64(),
            (3 << 24) | (1 << 14) | 2
        );
        assert_eq!(
            worker_then_seq.decompose(worker_then_seq.compose(parts).unwrap()),
            parts
        );
        assert_eq!(
            seq_then_worker.compose(Parts {
                worker: WorkerId::new(1024),
                ..parts
            }),
            Err(IdError::FieldOutOfRange {
                field: Field::Worker,
                value: 1024,
                max: 1023
            })
        );
    }

    #[test]
    fn split_worker_fields_are_checked_and_round_trip() {
        let discord = Layout::DISCORD;
        assert_eq!((discord.host_bits(), discord.process_bits()), (5, 5));
        assert_eq!(discord.worker_id(1, 0), Ok(WorkerId::new(32)));
        assert_eq!(discord.worker_id(31, 31), Ok(WorkerId::new(1023)));
        assert_eq!(discord.host_and_process(WorkerId::new(32 * 3 + 4)), (3, 4));
        assert_eq!(
            discord.worker_id(32, 0),
            Err(IdError::FieldOutOfRange {
                field: Field::Host,
                value: 32,
                max: 31
            })
        );
        assert_eq!(
            discord.worker_id(0, 32),
            Err(IdError::FieldOutOfRange {
                field: Field::Process,
                value: 32,
                max: 31
            })
        );
        // Unsplit: the whole worker field is the host.
        assert_eq!(Layout::SEED.worker_id(1023, 0), Ok(WorkerId::new(1023)));
        assert_eq!(Layout::SEED.host_and_process(WorkerId::new(7)), (7, 0));
        assert_eq!(
            Layout::SEED.with_process_bits(11),
            Err(LayoutError::ProcessWiderThanWorker {
                process: 11,
                worker: 10
            })
        );
    }

    #[test]
    fn check_rejects_the_sign_bit_in_63_bit_layouts() {
        let id = Id::from_u64(1 << 63);
        assert_eq!(
            Layout::TWITTER.check(id),
            Err(IdError::NotInLayout {
                id: 1 << 63,
                bits: 63
            })
        );
        assert!(Layout::DISCORD.check(id).is_ok());
    }

    #[test]
    fn range_scan_bounds_cover_exactly_one_tick() {
        let layout = Layout::SEED;
        let t = UnixMillis::from_millis(layout.epoch().as_millis() + 5);
        let first = layout.first_id_at(t).unwrap();
        let last = layout.last_id_at(t).unwrap();
        assert_eq!(layout.decompose(first).ticks, 5);
        assert_eq!(layout.decompose(last).ticks, 5);
        assert_eq!(last.to_u64() - first.to_u64(), (1 << 24) - 1);
        assert_eq!(layout.timestamp(last), t);
    }
}
