//! Wall-clock time as the generators take it: milliseconds since the Unix epoch.
//!
//! The crate never reads a clock (except [`SystemClockGenerator`](crate::SystemClockGenerator),
//! see its docs); callers pass the current time in as a [`UnixMillis`].

use core::fmt;
use core::num::NonZeroU32;
use core::time::Duration;

/// A point in wall-clock time: milliseconds since 1970-01-01T00:00:00Z.
///
/// IDs embed wall-clock time so that IDs minted on different workers sort
/// roughly by creation time; a monotonic clock would not be comparable across
/// machines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct UnixMillis(u64);

impl UnixMillis {
    /// The Unix epoch itself.
    pub const UNIX_EPOCH: Self = Self(0);

    /// A time `millis` milliseconds after the Unix epoch.
    #[must_use]
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis)
    }

    /// A time given as the duration since the Unix epoch (for example
    /// `SystemTime::now().duration_since(UNIX_EPOCH)`), truncated to whole
    /// milliseconds and saturating at `u64::MAX` milliseconds.
    #[must_use]
    pub const fn from_duration_since_epoch(since_epoch: Duration) -> Self {
        let secs = since_epoch.as_secs();
        let millis = secs
            .saturating_mul(1_000)
            .saturating_add(since_epoch.subsec_millis() as u64);
        Self(millis)
    }

    /// A `SystemTime` the caller read, or `None` if it is before 1970.
    /// (Converting a given time; the crate still reads no clock here.)
    #[cfg(feature = "std")]
    #[must_use]
    pub fn from_system_time(time: std::time::SystemTime) -> Option<Self> {
        time.duration_since(std::time::SystemTime::UNIX_EPOCH)
            .ok()
            .map(Self::from_duration_since_epoch)
    }

    /// Milliseconds since the Unix epoch.
    #[must_use]
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This time moved `millis` later, saturating at the end of `u64`.
    #[must_use]
    pub const fn saturating_add_millis(self, millis: u64) -> Self {
        Self(self.0.saturating_add(millis))
    }

    /// Milliseconds from `earlier` to `self`, or `None` if `earlier` is later.
    #[must_use]
    pub const fn checked_millis_since(self, earlier: Self) -> Option<u64> {
        self.0.checked_sub(earlier.0)
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// The length of one tick of an ID's time field, in whole milliseconds.
///
/// Twitter-style layouts count 1 ms ticks; Sonyflake counts 10 ms ticks, trading
/// resolution for a longer lifetime (174 years in 39 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct TimeUnit(NonZeroU32);

impl TimeUnit {
    /// One millisecond per tick (Twitter, Discord, Instagram, the course layout).
    pub const MILLISECOND: Self = Self(NonZeroU32::MIN);
    /// Ten milliseconds per tick (Sonyflake).
    pub const TEN_MILLISECONDS: Self = match NonZeroU32::new(10) {
        Some(ten) => Self(ten),
        None => Self::MILLISECOND,
    };

    /// A tick of `millis` milliseconds; `None` for zero.
    #[must_use]
    pub const fn from_millis(millis: u32) -> Option<Self> {
        match NonZeroU32::new(millis) {
            Some(millis) => Some(Self(millis)),
            None => None,
        }
    }

    /// Milliseconds per tick (at least 1).
    #[must_use]
    pub const fn as_millis(self) -> u64 {
        self.0.get() as u64
    }
}

impl Default for TimeUnit {
    fn default() -> Self {
        Self::MILLISECOND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_truncates_to_whole_millis() {
        let d = Duration::new(1_700_000_000, 999_999_999);
        assert_eq!(
            UnixMillis::from_duration_since_epoch(d).as_millis(),
            1_700_000_000_999
        );
        assert_eq!(
            UnixMillis::from_duration_since_epoch(Duration::MAX).as_millis(),
            u64::MAX
        );
    }

    #[cfg(feature = "std")]
    #[test]
    fn system_times_before_1970_are_refused() {
        use std::time::{SystemTime, UNIX_EPOCH};
        let t = UNIX_EPOCH + Duration::from_millis(1_234);
        assert_eq!(
            UnixMillis::from_system_time(t),
            Some(UnixMillis::from_millis(1_234))
        );
        let before = UNIX_EPOCH.checked_sub(Duration::from_secs(1));
        assert_eq!(before.and_then(UnixMillis::from_system_time), None);
        assert!(UnixMillis::from_system_time(SystemTime::now()).is_some());
    }

    #[test]
    fn time_unit_rejects_zero() {
        assert_eq!(TimeUnit::from_millis(0), None);
        assert_eq!(TimeUnit::TEN_MILLISECONDS.as_millis(), 10);
        assert_eq!(TimeUnit::default().as_millis(), 1);
    }
}
