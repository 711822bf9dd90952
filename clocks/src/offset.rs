//! How far a peer's clock is from ours: NTP-style offset estimation from
//! request/response exchanges (Mills, RFC 5905 §8 on-wire protocol and §10
//! clock filter), as plain values.
//!
//! One exchange gives four timestamps, in nanoseconds since the Unix epoch:
//! `t1` the client sends a request (client clock), `t2` the server receives
//! it and `t3` the server sends its reply (server clock), `t4` the client
//! receives the reply (client clock). A [`Sample`] holds them and computes
//!
//! - the offset `θ = ((t2 − t1) + (t3 − t4)) / 2`, server clock minus client
//!   clock, and
//! - the round-trip delay `δ = (t4 − t1) − (t3 − t2)`, the time spent on the
//!   wire.
//!
//! **Why `θ ± δ/2` brackets the truth.** Write `θ*` for the true offset and
//! `d→`, `d←` for the one-way delays. Then `t2 − t1 = d→ + θ*` and
//! `t3 − t4 = θ* − d←`: since neither delay is negative, the true offset lies
//! in `[t3 − t4, t2 − t1]`, whose midpoint is `θ` and whose width is `δ`,
//! whatever the asymmetry of the path. The bracket is exact integers; only the
//! midpoint can have a half nanosecond, which [`Estimate::offset_ns`] rounds
//! down.
//!
//! **Drift.** Clocks run at slightly different rates, so a bracket measured
//! at `t1` widens by `ρ × age` on each side, where `ρ` is a bound on the rate
//! at which the two clocks move apart ([`DriftRate`], in parts per million)
//! and the age is local time since `t1`. That is NTP's dispersion, grown at
//! `PHI` per second.
//!
//! **The clock filter.** An [`OffsetEstimator`] keeps the most recent
//! samples of one peer (a window of 8 by default, as NTP's clock filter) and
//! trusts the one whose bracket is narrowest at the asked-for time: the
//! lowest-delay sample, once age is counted (RFC 5905 §10's synchronization
//! distance `λ = δ/2 + ε`). Queuing only ever adds delay, so the
//! lowest-delay sample is the one least disturbed by it.
//!
//! **Time.** Every timestamp and every `now` is `u64` nanoseconds since the
//! Unix epoch, read by the caller from its wall clock (not a monotonic one:
//! `t1` and `t4` must be on the same scale as the peer's `t2` and `t3`). The
//! estimator never reads a clock. If your clock reads are coarse, the
//! resolution is not in the bound: add it yourself.
//!
//! **Using an estimate.**
//! - *Hybrid logical clocks.* [`Hlc::update`](crate::Hlc::update) refuses a
//!   remote stamp more than its [`MaxDrift`] ahead of local physical time.
//!   [`Estimate::max_drift`] is how far ahead this peer's wall clock can be,
//!   in milliseconds rounded up: the smallest `Hlc` bound that accepts every
//!   stamp read from that clock. A peer's HLC stamps can also run ahead of
//!   its own wall clock by whatever it heard from others, so size the `Hlc`'s
//!   bound from the largest [`Estimate::max_drift`] over all peers plus a
//!   margin. When a stamp is refused, [`Estimate::is_plausible`] says
//!   whether it could have come from the peer's wall clock (then the `Hlc`'s
//!   bound is too small) or not (it ran ahead, pushed by another node, or
//!   was forged).
//! - *Lease reads.* A leader lease timed on local monotonic clocks needs only
//!   a bound on the drift *rate*; a lease whose expiry travels between nodes
//!   as a wall-clock time also needs the clocks within a known distance of
//!   each other. [`Estimate::is_within`] says whether a peer's clock is
//!   proven within a margin of ours now; a node that cannot prove it for the
//!   peers its lease rests on should stop serving lease reads (fall back to
//!   ReadIndex) and say why.
//!
//! ```
//! use quorate_clocks::offset::{DriftRate, OffsetEstimator, Sample};
//!
//! const MS: u64 = 1_000_000; // nanoseconds
//! // The server's clock is 5 ms ahead; 1 ms to it, 3 ms back, 1 ms inside.
//! let t1 = 1_700_000_000_000 * MS;
//! let (t2, t3) = (t1 + 5 * MS + MS, t1 + 5 * MS + 2 * MS);
//! let t4 = t1 + 5 * MS;
//! let sample = Sample::new(t1, t2, t3, t4)?;
//! assert_eq!(sample.offset_ns(), 4 * MS as i64); // 1 ms off: the path is asymmetric
//! assert_eq!(sample.delay_ns(), 4 * MS); // but the bound covers it
//!
//! let mut peer = OffsetEstimator::new().with_drift_rate(DriftRate::ppm(100));
//! peer.add(sample);
//! let estimate = peer.estimate(t4).expect("a fresh sample");
//! assert!(estimate.contains_offset(5 * MS as i64));
//! // δ/2, plus 100 ppm of the 5 ms since t1.
//! assert_eq!(estimate.error_bound_ns(), 2 * MS + 500);
//! // 1 s after t1: plus 100 ppm of 1 s.
//! let later = peer.estimate(t1 + 1_000 * MS).expect("still fresh");
//! assert_eq!(later.error_bound_ns(), 2 * MS + 100_000);
//! # Ok::<(), quorate_clocks::offset::OffsetError>(())
//! ```

use alloc::vec::Vec;
use core::cmp::Reverse;
use core::ops::RangeInclusive;

use crate::hlc::MaxDrift;

/// Why a sample or an estimator setting was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OffsetError {
    /// The client received the reply before it sent the request (`t4 < t1`).
    #[error("client received at {client_receive_ns} ns, before it sent at {client_send_ns} ns")]
    ClientClockReversed {
        /// `t1`.
        client_send_ns: u64,
        /// `t4`.
        client_receive_ns: u64,
    },
    /// The server replied before it received the request (`t3 < t2`).
    #[error("server sent at {server_send_ns} ns, before it received at {server_receive_ns} ns")]
    ServerClockReversed {
        /// `t2`.
        server_receive_ns: u64,
        /// `t3`.
        server_send_ns: u64,
    },
    /// The server held the request longer than the whole round trip took
    /// (`t3 − t2 > t4 − t1`): the delay would be negative. Besides a bad
    /// timestamp, only a server clock running fast over a hold longer than
    /// the wire delay can cause it; either way, drop the sample.
    #[error(
        "server held the request {server_hold_ns} ns, longer than the {round_trip_ns} ns round trip"
    )]
    NegativeDelay {
        /// `t4 − t1`.
        round_trip_ns: u64,
        /// `t3 − t2`.
        server_hold_ns: u64,
    },
    /// The clocks are further apart than an `i64` of nanoseconds (292 years).
    #[error("clock difference {difference_ns} ns does not fit in an i64 of nanoseconds")]
    OffsetOutOfRange {
        /// `t2 − t1` or `t3 − t4`, whichever does not fit.
        difference_ns: i128,
    },
    /// A filter window of zero samples, or above [`OffsetEstimator::MAX_WINDOW`].
    #[error("window of {window} samples is outside 1..={max}")]
    WindowOutOfRange {
        /// The refused window.
        window: usize,
        /// [`OffsetEstimator::MAX_WINDOW`].
        max: usize,
    },
}

/// A bound on how fast two clocks drift apart, in parts per million
/// (nanoseconds of divergence per millisecond of elapsed time).
///
/// The default is 500 ppm (0.5 ms per second). It is a rate between *two*
/// clocks, so it is the sum of their frequency errors: NTP's `PHI` of 15 ppm
/// is the tolerance of one disciplined clock; a free-running quartz
/// oscillator is typically within 100 ppm; and 500 ppm is the largest
/// frequency correction NTP (and the Linux kernel) will slew a clock by, so
/// it also covers one clock being slewed while the other keeps good time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct DriftRate(u32);

impl DriftRate {
    /// The default bound, 500 ppm.
    pub const DEFAULT: Self = Self(500);

    /// A bound of `ppm` parts per million.
    pub const fn ppm(ppm: u32) -> Self {
        Self(ppm)
    }

    /// The bound in parts per million.
    pub const fn as_ppm(self) -> u32 {
        self.0
    }

    /// How far two clocks may drift apart in `elapsed_ns`, rounded up.
    pub const fn over(self, elapsed_ns: u64) -> u64 {
        // At most 2^64 × 2^32: no overflow in u128.
        let drift = (elapsed_ns as u128 * self.0 as u128).div_ceil(1_000_000);
        if drift > u64::MAX as u128 {
            u64::MAX
        } else {
            drift as u64
        }
    }
}

impl Default for DriftRate {
    /// [`DriftRate::DEFAULT`].
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One request/response exchange: the four timestamps `t1` (client send),
/// `t2` (server receive), `t3` (server send), `t4` (client receive), in
/// nanoseconds since the Unix epoch, `t1` and `t4` on the client's clock,
/// `t2` and `t3` on the server's. See the [module docs](self) for the
/// formulas.
///
/// Ordered by `t1` first (then `t2`, `t3`, `t4`): later means newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "[u64; 4]", into = "[u64; 4]"))]
pub struct Sample {
    t1: u64,
    t2: u64,
    t3: u64,
    t4: u64,
}

impl Sample {
    /// The sample of one exchange, after checking that it is possible: each
    /// side's clock did not run backwards and the server did not hold the
    /// request longer than the round trip took.
    pub fn new(t1: u64, t2: u64, t3: u64, t4: u64) -> Result<Self, OffsetError> {
        let round_trip_ns = t4.checked_sub(t1).ok_or(OffsetError::ClientClockReversed {
            client_send_ns: t1,
            client_receive_ns: t4,
        })?;
        let server_hold_ns = t3.checked_sub(t2).ok_or(OffsetError::ServerClockReversed {
            server_receive_ns: t2,
            server_send_ns: t3,
        })?;
        if server_hold_ns > round_trip_ns {
            return Err(OffsetError::NegativeDelay {
                round_trip_ns,
                server_hold_ns,
            });
        }
        for difference in [
            i128::from(t2) - i128::from(t1),
            i128::from(t3) - i128::from(t4),
        ] {
            if i64::try_from(difference).is_err() {
                return Err(OffsetError::OffsetOutOfRange {
                    difference_ns: difference,
                });
            }
        }
        Ok(Self { t1, t2, t3, t4 })
    }

    /// The four timestamps, `[t1, t2, t3, t4]`.
    pub const fn timestamps(&self) -> [u64; 4] {
        [self.t1, self.t2, self.t3, self.t4]
    }

    /// Lowest possible offset, `t3 − t4`: the reply took no time.
    pub const fn low_ns(&self) -> i64 {
        // Checked to fit in `new`.
        (self.t3 as i128 - self.t4 as i128) as i64
    }

    /// Highest possible offset, `t2 − t1`: the request took no time.
    pub const fn high_ns(&self) -> i64 {
        // Checked to fit in `new`.
        (self.t2 as i128 - self.t1 as i128) as i64
    }

    /// The offset `θ = ((t2 − t1) + (t3 − t4)) / 2` (server clock minus
    /// client clock), rounded down to a whole nanosecond.
    pub const fn offset_ns(&self) -> i64 {
        midpoint(self.low_ns(), self.high_ns())
    }

    /// The round-trip delay `δ = (t4 − t1) − (t3 − t2)`, never negative.
    pub const fn delay_ns(&self) -> u64 {
        // high − low = δ ≥ 0, at most 2^64 − 1.
        (self.high_ns() as i128 - self.low_ns() as i128) as u64
    }

    /// What this sample alone says at local time `now_ns`: its bracket
    /// widened by `drift` over the time since `t1` (zero if `now_ns` is
    /// before `t1`, which only a local clock stepped back can do).
    pub const fn estimate(&self, now_ns: u64, drift: DriftRate) -> Estimate {
        let age_ns = now_ns.saturating_sub(self.t1);
        let widen = drift.over(age_ns) as i128;
        Estimate {
            low_ns: saturate(self.low_ns() as i128 - widen),
            high_ns: saturate(self.high_ns() as i128 + widen),
            delay_ns: self.delay_ns(),
            age_ns,
        }
    }
}

impl TryFrom<[u64; 4]> for Sample {
    type Error = OffsetError;
    /// [`Sample::new`] on `[t1, t2, t3, t4]`.
    fn try_from([t1, t2, t3, t4]: [u64; 4]) -> Result<Self, OffsetError> {
        Self::new(t1, t2, t3, t4)
    }
}

impl From<Sample> for [u64; 4] {
    /// [`Sample::timestamps`].
    fn from(sample: Sample) -> Self {
        sample.timestamps()
    }
}

/// The floor of `(a + b) / 2`, exact.
const fn midpoint(a: i64, b: i64) -> i64 {
    // The mean of two i64s is an i64.
    (a as i128 + b as i128).div_euclid(2) as i64
}

/// `v` clamped into `i64`: an interval clamped this way only grows.
const fn saturate(v: i128) -> i64 {
    if v > i64::MAX as i128 {
        i64::MAX
    } else if v < i64::MIN as i128 {
        i64::MIN
    } else {
        v as i64
    }
}

/// What is known about a peer's clock at one local time: its offset (peer
/// clock minus local clock) lies in `[low_ns, high_ns]`, provided the path
/// delays were not negative and the clocks drifted apart no faster than the
/// configured [`DriftRate`].
///
/// `offset_ns ± error_bound_ns` covers the bracket (it is at most one
/// nanosecond wider, when the midpoint has a half nanosecond).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(try_from = "EstimateRepr", into = "EstimateRepr")
)]
pub struct Estimate {
    low_ns: i64,
    high_ns: i64,
    delay_ns: u64,
    age_ns: u64,
}

impl Estimate {
    /// The lowest possible offset, in nanoseconds.
    pub const fn low_ns(&self) -> i64 {
        self.low_ns
    }

    /// The highest possible offset, in nanoseconds.
    pub const fn high_ns(&self) -> i64 {
        self.high_ns
    }

    /// The offset: the bracket's midpoint, rounded down.
    pub const fn offset_ns(&self) -> i64 {
        midpoint(self.low_ns, self.high_ns)
    }

    /// Half the bracket's width, rounded up: the chosen sample's `δ/2` plus
    /// the drift since it was taken.
    pub const fn error_bound_ns(&self) -> u64 {
        // low ≤ high, so the width is in 0..2^64.
        (self.high_ns as i128 - self.low_ns as i128 + 1).div_euclid(2) as u64
    }

    /// The round-trip delay of the sample the estimate rests on.
    pub const fn delay_ns(&self) -> u64 {
        self.delay_ns
    }

    /// How old that sample was (local time since its `t1`).
    pub const fn age_ns(&self) -> u64 {
        self.age_ns
    }

    /// Whether `offset_ns` is a possible offset: `low_ns ≤ offset_ns ≤ high_ns`.
    pub const fn contains_offset(&self, offset_ns: i64) -> bool {
        self.low_ns <= offset_ns && offset_ns <= self.high_ns
    }

    /// Where the peer's clock can read at local time `now_ns`:
    /// `now_ns + low_ns ..= now_ns + high_ns`, clamped to `u64`.
    pub fn peer_clock_at(&self, now_ns: u64) -> RangeInclusive<u64> {
        let at = |offset: i64| {
            let t = i128::from(now_ns) + i128::from(offset);
            u64::try_from(t.max(0)).unwrap_or(u64::MAX)
        };
        at(self.low_ns)..=at(self.high_ns)
    }

    /// Whether `remote_ns`, a time the peer read from its clock no later than
    /// local time `now_ns` (for instance the send time of a message received
    /// at `now_ns`), is possible: at most `now_ns + high_ns`. There is no
    /// lower limit, since a message can be delayed for any time.
    pub fn is_plausible(&self, remote_ns: u64, now_ns: u64) -> bool {
        remote_ns <= *self.peer_clock_at(now_ns).end()
    }

    /// Whether the two clocks are proven within `margin_ns` of each other:
    /// the whole bracket lies in `[-margin_ns, margin_ns]`. The check a
    /// lease read needs before trusting its clock assumption.
    pub const fn is_within(&self, margin_ns: u64) -> bool {
        let margin = margin_ns as i128;
        -margin <= self.low_ns as i128 && self.high_ns as i128 <= margin
    }

    /// How far ahead of the local clock the peer's can be, in milliseconds
    /// rounded up (zero if it is surely behind): the smallest
    /// [`Hlc`](crate::Hlc) maximum drift that accepts a stamp read from the
    /// peer's wall clock as it is sent.
    pub const fn max_drift(&self) -> MaxDrift {
        let ahead = if self.high_ns > 0 {
            self.high_ns as u64
        } else {
            0
        };
        MaxDrift::millis(ahead.div_ceil(1_000_000))
    }
}

/// The serde shape of an [`Estimate`], validated on the way in.
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct EstimateRepr {
    low_ns: i64,
    high_ns: i64,
    delay_ns: u64,
    age_ns: u64,
}

/// Why a serialized [`Estimate`] was refused.
#[cfg(feature = "serde")]
#[derive(Debug, thiserror::Error)]
#[error("estimate bracket [{low_ns}, {high_ns}] is empty")]
struct EmptyBracket {
    low_ns: i64,
    high_ns: i64,
}

#[cfg(feature = "serde")]
impl TryFrom<EstimateRepr> for Estimate {
    type Error = EmptyBracket;
    fn try_from(repr: EstimateRepr) -> Result<Self, EmptyBracket> {
        if repr.low_ns > repr.high_ns {
            return Err(EmptyBracket {
                low_ns: repr.low_ns,
                high_ns: repr.high_ns,
            });
        }
        Ok(Self {
            low_ns: repr.low_ns,
            high_ns: repr.high_ns,
            delay_ns: repr.delay_ns,
            age_ns: repr.age_ns,
        })
    }
}

#[cfg(feature = "serde")]
impl From<Estimate> for EstimateRepr {
    fn from(e: Estimate) -> Self {
        Self {
            low_ns: e.low_ns,
            high_ns: e.high_ns,
            delay_ns: e.delay_ns,
            age_ns: e.age_ns,
        }
    }
}

/// The clock filter for one peer: a bounded window of its most recent
/// [`Sample`]s, and the [`Estimate`] of the one narrowest at a given time.
///
/// - **Window.** At most [`window`](Self::window) samples (8 by default) are
///   kept: the newest by `t1`, whatever order they were added in.
/// - **Choice.** [`estimate`](Self::estimate) trusts the sample whose bracket,
///   widened by drift since its `t1`, is narrowest (ties go to the newer):
///   among samples of the same age, the lowest-delay one.
/// - **Age.** Samples whose `t1` is more than [`max_age_ns`](Self::max_age_ns)
///   (60 s by default) before `now` are ignored, and dropped by
///   [`prune`](Self::prune).
///
/// ```
/// use quorate_clocks::offset::{DriftRate, OffsetEstimator, Sample};
///
/// let mut peer = OffsetEstimator::new().with_window(4)?.with_drift_rate(DriftRate::ppm(0));
/// // Peer 100 ns ahead; the second exchange was queued 40 ns on the way out.
/// peer.add(Sample::new(1_000, 1_110, 1_120, 1_030)?); // δ = 20 ns
/// peer.add(Sample::new(2_000, 2_150, 2_160, 2_070)?); // δ = 60 ns
/// let estimate = peer.estimate(3_000).expect("fresh samples");
/// assert_eq!((estimate.offset_ns(), estimate.error_bound_ns()), (100, 10));
/// # Ok::<(), quorate_clocks::offset::OffsetError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(try_from = "EstimatorRepr", into = "EstimatorRepr")
)]
pub struct OffsetEstimator {
    // Sorted ascending: the oldest first.
    samples: Vec<Sample>,
    window: usize,
    max_age_ns: u64,
    drift: DriftRate,
}

impl Default for OffsetEstimator {
    /// [`OffsetEstimator::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl OffsetEstimator {
    /// The default window, 8 samples, as NTP's clock filter.
    pub const DEFAULT_WINDOW: usize = 8;
    /// The largest window, 1024 samples.
    pub const MAX_WINDOW: usize = 1024;
    /// The default maximum sample age, 60 s.
    pub const DEFAULT_MAX_AGE_NS: u64 = 60_000_000_000;

    /// An empty filter: a window of 8, samples trusted for 60 s, clocks
    /// drifting apart at most 500 ppm.
    pub const fn new() -> Self {
        Self {
            samples: Vec::new(),
            window: Self::DEFAULT_WINDOW,
            max_age_ns: Self::DEFAULT_MAX_AGE_NS,
            drift: DriftRate::DEFAULT,
        }
    }

    /// The same filter keeping at most `window` samples (1 to
    /// [`MAX_WINDOW`](Self::MAX_WINDOW)); the oldest are dropped if it holds
    /// more.
    pub fn with_window(mut self, window: usize) -> Result<Self, OffsetError> {
        if window == 0 || window > Self::MAX_WINDOW {
            return Err(OffsetError::WindowOutOfRange {
                window,
                max: Self::MAX_WINDOW,
            });
        }
        self.window = window;
        let excess = self.samples.len().saturating_sub(window);
        self.samples.drain(..excess);
        Ok(self)
    }

    /// The same filter ignoring samples taken more than `max_age_ns` ago.
    pub const fn with_max_age_ns(mut self, max_age_ns: u64) -> Self {
        self.max_age_ns = max_age_ns;
        self
    }

    /// The same filter assuming the clocks drift apart at most at `drift`.
    pub const fn with_drift_rate(mut self, drift: DriftRate) -> Self {
        self.drift = drift;
        self
    }

    /// The most samples kept.
    pub const fn window(&self) -> usize {
        self.window
    }

    /// The largest sample age trusted.
    pub const fn max_age_ns(&self) -> u64 {
        self.max_age_ns
    }

    /// The assumed drift rate.
    pub const fn drift_rate(&self) -> DriftRate {
        self.drift
    }

    /// The samples kept, oldest first.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Adds `sample`, dropping the oldest kept one if the window is full (or
    /// `sample` itself, if it is older than all of them).
    pub fn add(&mut self, sample: Sample) {
        let at = self.samples.partition_point(|kept| *kept <= sample);
        self.samples.insert(at, sample);
        if self.samples.len() > self.window {
            self.samples.remove(0);
        }
    }

    /// Drops the samples too old to be trusted at local time `now_ns`.
    pub fn prune(&mut self, now_ns: u64) {
        let max_age_ns = self.max_age_ns;
        self.samples
            .retain(|s| now_ns.saturating_sub(s.t1) <= max_age_ns);
    }

    /// Forgets every sample (after a peer restarts, say).
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// What is known about the peer's clock at local time `now_ns`, from the
    /// sample whose bracket is narrowest then; `None` if no sample is fresh.
    pub fn estimate(&self, now_ns: u64) -> Option<Estimate> {
        self.samples
            .iter()
            .filter(|s| now_ns.saturating_sub(s.t1) <= self.max_age_ns)
            .map(|s| (s.estimate(now_ns, self.drift), s))
            .min_by_key(|(estimate, sample)| {
                (
                    i128::from(estimate.high_ns) - i128::from(estimate.low_ns),
                    Reverse(**sample),
                )
            })
            .map(|(estimate, _)| estimate)
    }
}

/// The serde shape of an [`OffsetEstimator`], validated on the way in.
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct EstimatorRepr {
    window: usize,
    max_age_ns: u64,
    drift_ppm: DriftRate,
    samples: Vec<Sample>,
}

#[cfg(feature = "serde")]
impl TryFrom<EstimatorRepr> for OffsetEstimator {
    type Error = OffsetError;
    fn try_from(repr: EstimatorRepr) -> Result<Self, OffsetError> {
        let mut estimator = Self::new()
            .with_window(repr.window)?
            .with_max_age_ns(repr.max_age_ns)
            .with_drift_rate(repr.drift_ppm);
        if repr.samples.len() > repr.window {
            return Err(OffsetError::WindowOutOfRange {
                window: repr.samples.len(),
                max: repr.window,
            });
        }
        for sample in repr.samples {
            estimator.add(sample);
        }
        Ok(estimator)
    }
}

#[cfg(feature = "serde")]
impl From<OffsetEstimator> for EstimatorRepr {
    fn from(e: OffsetEstimator) -> Self {
        Self {
            window: e.window,
            max_age_ns: e.max_age_ns,
            drift_ppm: e.drift,
            samples: e.samples,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_by_hand() {
        // Server 1000 ns ahead, 30 ns out, 70 ns back, 5 ns inside.
        // t2 = t1 + 30 + 1000, t3 = t2 + 5, t4 = t1 + 30 + 5 + 70.
        let s = Sample::new(10_000, 11_030, 11_035, 10_105).unwrap();
        // θ = ((11030 − 10000) + (11035 − 10105)) / 2 = (1030 + 930) / 2.
        assert_eq!(s.offset_ns(), 980);
        // δ = (10105 − 10000) − (11035 − 11030) = 105 − 5.
        assert_eq!(s.delay_ns(), 100);
        assert_eq!((s.low_ns(), s.high_ns()), (930, 1030));
        // Symmetric path: exact.
        let s = Sample::new(0, 1_050, 1_050, 100).unwrap();
        assert_eq!((s.offset_ns(), s.delay_ns()), (1_000, 100));
        // Server behind: negative offset.
        let s = Sample::new(5_000, 4_010, 4_020, 5_030).unwrap();
        assert_eq!((s.offset_ns(), s.delay_ns()), (-1_000, 20));
    }

    #[test]
    fn half_nanoseconds_round_down_and_the_bound_up() {
        // low = 3 − 4 = −1, high = 1 − 0 = 1... make it odd: high = 2.
        let s = Sample::new(0, 2, 3, 4).unwrap();
        assert_eq!((s.low_ns(), s.high_ns()), (-1, 2));
        assert_eq!(s.offset_ns(), 0); // 0.5 rounded down
        let e = s.estimate(0, DriftRate::ppm(0));
        assert_eq!(e.error_bound_ns(), 2); // 1.5 rounded up
        let (o, b) = (i128::from(e.offset_ns()), i128::from(e.error_bound_ns()));
        assert!(o - b <= -1 && 2 <= o + b);
        // Negative odd sums round towards −∞.
        let s = Sample::new(10, 9, 10, 12).unwrap();
        assert_eq!((s.low_ns(), s.high_ns(), s.offset_ns()), (-2, -1, -2));
    }

    #[test]
    fn impossible_exchanges_are_refused() {
        assert_eq!(
            Sample::new(10, 0, 0, 9),
            Err(OffsetError::ClientClockReversed {
                client_send_ns: 10,
                client_receive_ns: 9
            })
        );
        assert_eq!(
            Sample::new(0, 5, 4, 10),
            Err(OffsetError::ServerClockReversed {
                server_receive_ns: 5,
                server_send_ns: 4
            })
        );
        assert_eq!(
            Sample::new(0, 100, 111, 10),
            Err(OffsetError::NegativeDelay {
                round_trip_ns: 10,
                server_hold_ns: 11
            })
        );
        assert_eq!(
            Sample::new(0, u64::MAX, u64::MAX, 0),
            Err(OffsetError::OffsetOutOfRange {
                difference_ns: i128::from(u64::MAX)
            })
        );
        // Zero delay and zero hold are possible.
        assert!(Sample::new(7, 7, 7, 7).is_ok());
        assert_eq!(
            OffsetEstimator::new().with_window(0),
            Err(OffsetError::WindowOutOfRange {
                window: 0,
                max: 1024
            })
        );
        assert!(OffsetEstimator::new().with_window(1025).is_err());
    }

    #[test]
    fn extremes_do_not_overflow() {
        let max = i64::MAX as u64;
        let s = Sample::new(0, max, max, max).unwrap();
        assert_eq!((s.low_ns(), s.high_ns()), (0, i64::MAX));
        assert_eq!(s.delay_ns(), max);
        let s = Sample::new(max, 0, 0, max).unwrap();
        assert_eq!((s.low_ns(), s.high_ns()), (-i64::MAX, -i64::MAX));
        let e = s.estimate(u64::MAX, DriftRate::ppm(u32::MAX));
        // Saturated: only wider.
        assert_eq!((e.low_ns(), e.high_ns()), (i64::MIN, i64::MAX));
        assert_eq!(e.error_bound_ns(), u64::MAX / 2 + 1);
        assert_eq!(DriftRate::ppm(u32::MAX).over(u64::MAX), u64::MAX);
        // The peer's clock range is clamped to u64.
        assert_eq!(e.peer_clock_at(0), 0..=i64::MAX as u64);
        assert_eq!(e.peer_clock_at(u64::MAX), u64::MAX - (1 << 63)..=u64::MAX);
    }

    #[test]
    fn drift_widens_by_ppm_of_the_age() {
        let s = Sample::new(1_000_000, 1_000_500, 1_000_500, 1_000_000).unwrap();
        assert_eq!((s.low_ns(), s.high_ns()), (500, 500));
        // 2 ms after t1 at 250 ppm: 2_000_000 × 250 / 10^6 = 500 ns each side.
        let e = s.estimate(3_000_000, DriftRate::ppm(250));
        assert_eq!((e.low_ns(), e.high_ns(), e.age_ns()), (0, 1_000, 2_000_000));
        assert_eq!(e.error_bound_ns(), 500);
        // Rounded up: 1 ns at 1 ppm is 10^-6 ns, counted as 1.
        assert_eq!(DriftRate::ppm(1).over(1), 1);
        assert_eq!(DriftRate::ppm(1).over(0), 0);
        // Before t1 (a local clock stepped back): no drift.
        assert_eq!(s.estimate(0, DriftRate::ppm(250)).error_bound_ns(), 0);
    }

    #[test]
    fn estimate_helpers() {
        // Offset in [−2 ms, +3 ms].
        let e = Estimate {
            low_ns: -2_000_000,
            high_ns: 3_000_001,
            delay_ns: 0,
            age_ns: 0,
        };
        assert!(e.contains_offset(-2_000_000) && e.contains_offset(3_000_001));
        assert!(!e.contains_offset(-2_000_001) && !e.contains_offset(3_000_002));
        assert_eq!(e.peer_clock_at(10_000_000), 8_000_000..=13_000_001);
        assert!(e.is_plausible(13_000_001, 10_000_000));
        assert!(!e.is_plausible(13_000_002, 10_000_000));
        assert!(e.is_plausible(0, 10_000_000)); // old messages are fine
        assert!(e.is_within(3_000_001) && !e.is_within(3_000_000));
        assert_eq!(e.max_drift(), MaxDrift::millis(4)); // 3.000001 ms, rounded up
        let behind = Estimate {
            low_ns: -5,
            high_ns: -1,
            delay_ns: 0,
            age_ns: 0,
        };
        assert_eq!(behind.max_drift(), MaxDrift::millis(0));
        assert!(!behind.is_within(4) && behind.is_within(5));
    }

    #[test]
    fn window_keeps_the_newest_and_age_expires() {
        let mut f = OffsetEstimator::new()
            .with_window(2)
            .unwrap()
            .with_max_age_ns(100)
            .with_drift_rate(DriftRate::ppm(0));
        let at = |t1: u64, delay: u64| Sample::new(t1, t1 + delay, t1 + delay, t1 + delay).unwrap();
        f.add(at(30, 1));
        f.add(at(10, 2));
        f.add(at(20, 3));
        f.add(at(5, 4)); // older than both kept: dropped at once
        let kept: Vec<u64> = f.samples().iter().map(|s| s.timestamps()[0]).collect();
        assert_eq!(kept, [20, 30]);
        assert_eq!(f.estimate(40).unwrap().delay_ns(), 1);
        // At 125 only t1 = 30 is fresh (age 95); at 131 none is.
        assert_eq!(f.estimate(125).unwrap().age_ns(), 95);
        assert_eq!(f.estimate(131), None);
        f.prune(125);
        assert_eq!(f.samples().len(), 1);
        f = f.with_window(1).unwrap();
        f.clear();
        assert_eq!(f.estimate(0), None);
    }

    #[test]
    fn equal_widths_go_to_the_newer_sample() {
        let mut f = OffsetEstimator::new().with_drift_rate(DriftRate::ppm(0));
        let newer = Sample::new(100, 130, 130, 120).unwrap(); // [10, 30]
        let older = Sample::new(0, 20, 20, 20).unwrap(); // [0, 20]
        f.add(newer);
        f.add(older);
        let e = f.estimate(200).unwrap();
        assert_eq!((e.low_ns(), e.high_ns(), e.age_ns()), (10, 30, 100));
    }

    #[test]
    fn an_old_low_delay_sample_loses_to_a_fresh_one() {
        // 1000 ppm: 1 ns per µs of age.
        let mut f = OffsetEstimator::new().with_drift_rate(DriftRate::ppm(1_000));
        f.add(Sample::new(0, 5, 5, 10).unwrap()); // δ = 10
        f.add(Sample::new(100_000, 100_020, 100_020, 100_040).unwrap()); // δ = 40
        // At 100 µs: the old one is 10 + 2 × 100, the new 40 + 0 wide.
        assert_eq!(f.estimate(100_000).unwrap().delay_ns(), 40);
        // Before either has aged much the low-delay one wins.
        assert_eq!(f.estimate(10).unwrap().delay_ns(), 10);
    }
}
