//! The simulated clock.

use core::fmt;
use core::ops::{Add, AddAssign, Sub};
use core::time::Duration;

/// A point on the simulated clock: nanoseconds since the simulation began.
///
/// The simulation never reads a real clock; the driver passes `now` into
/// every call. Arithmetic saturates instead of overflowing (`u64`
/// nanoseconds cover about 584 years of simulated time).
///
/// ```
/// use core::time::Duration;
/// use quorate_transport::sim::SimTime;
///
/// let t = SimTime::from_millis(5) + Duration::from_micros(250);
/// assert_eq!(t.as_nanos(), 5_250_000);
/// assert_eq!(t - SimTime::from_millis(5), Duration::from_micros(250));
/// assert_eq!(SimTime::ZERO - t, Duration::ZERO); // saturates
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SimTime(u64);

impl SimTime {
    /// The start of the simulation.
    pub const ZERO: SimTime = SimTime(0);
    /// The end of simulated time; nothing is ever scheduled after it.
    pub const MAX: SimTime = SimTime(u64::MAX);

    /// The instant `nanos` nanoseconds after the start.
    pub const fn from_nanos(nanos: u64) -> Self {
        SimTime(nanos)
    }

    /// The instant `micros` microseconds after the start (saturating).
    pub const fn from_micros(micros: u64) -> Self {
        SimTime(micros.saturating_mul(1_000))
    }

    /// The instant `millis` milliseconds after the start (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        SimTime(millis.saturating_mul(1_000_000))
    }

    /// The instant `secs` seconds after the start (saturating).
    pub const fn from_secs(secs: u64) -> Self {
        SimTime(secs.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds since the start.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time since the start as a [`Duration`].
    pub const fn since_start(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// `self + d`, clamped at [`SimTime::MAX`].
    pub fn saturating_add(self, d: Duration) -> Self {
        SimTime(self.0.saturating_add(duration_nanos(d)))
    }

    /// `self + d`, or `None` past [`SimTime::MAX`].
    pub fn checked_add(self, d: Duration) -> Option<Self> {
        let nanos = u64::try_from(d.as_nanos()).ok()?;
        self.0.checked_add(nanos).map(SimTime)
    }

    /// How long after `earlier` this instant is; zero if it is not later.
    pub fn saturating_duration_since(self, earlier: SimTime) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// A duration in nanoseconds, clamped to `u64`.
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Add<Duration> for SimTime {
    type Output = SimTime;
    fn add(self, d: Duration) -> SimTime {
        self.saturating_add(d)
    }
}

impl AddAssign<Duration> for SimTime {
    fn add_assign(&mut self, d: Duration) {
        *self = self.saturating_add(d);
    }
}

impl Sub for SimTime {
    type Output = Duration;
    fn sub(self, earlier: SimTime) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl From<Duration> for SimTime {
    /// The instant `d` after the start (saturating).
    fn from(d: Duration) -> Self {
        SimTime(duration_nanos(d))
    }
}

impl fmt::Display for SimTime {
    /// Seconds with nanosecond precision, e.g. `1.000250000s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09}s",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_agree() {
        assert_eq!(SimTime::from_secs(2), SimTime::from_millis(2_000));
        assert_eq!(SimTime::from_millis(3), SimTime::from_micros(3_000));
        assert_eq!(SimTime::from_micros(7), SimTime::from_nanos(7_000));
        assert_eq!(
            SimTime::from(Duration::from_millis(9)),
            SimTime::from_millis(9)
        );
        assert_eq!(
            SimTime::from_millis(9).since_start(),
            Duration::from_millis(9)
        );
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(SimTime::MAX + Duration::from_secs(1), SimTime::MAX);
        assert_eq!(SimTime::from_secs(u64::MAX), SimTime::MAX);
        assert_eq!(SimTime::MAX.checked_add(Duration::from_nanos(1)), None);
        assert_eq!(
            SimTime::ZERO.checked_add(Duration::from_nanos(1)),
            Some(SimTime::from_nanos(1))
        );
        assert_eq!(
            SimTime::from_millis(1) - SimTime::from_millis(2),
            Duration::ZERO
        );
    }

    #[test]
    fn displays_as_seconds() {
        assert_eq!(
            SimTime::from_nanos(1_000_250_000).to_string(),
            "1.000250000s"
        );
    }
}
