//! Hybrid logical clocks (Kulkarni, Demirbas, Madappa, Avva, Leone, "Logical
//! Physical Clocks", OPODIS 2014): timestamps close to physical time that
//! still respect happened-before.

use alloc::vec::Vec;
use core::fmt;

use crate::encoding::{self, DecodeError, Kind};

const LOGICAL_BITS: u32 = 16;

/// Why a hybrid logical clock refused an input. The clock is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HlcError {
    /// A remote stamp is further ahead of local physical time than the
    /// configured maximum drift: a peer's clock is wrong, or the stamp forged.
    #[error(
        "remote stamp at {remote_ms} ms is more than {max_drift_ms} ms ahead of local time {physical_ms} ms"
    )]
    DriftExceeded {
        /// Physical part of the refused remote stamp.
        remote_ms: u64,
        /// Local physical time given with the update.
        physical_ms: u64,
        /// The configured bound.
        max_drift_ms: u64,
    },
    /// Physical time does not fit in 48 bits of milliseconds.
    #[error("physical time {physical_ms} ms is above the largest a stamp holds, {max_ms} ms")]
    PhysicalTimeOutOfRange {
        /// The refused physical time.
        physical_ms: u64,
        /// The largest physical time a stamp holds ([`HlcTimestamp::MAX_PHYSICAL_MS`]).
        max_ms: u64,
    },
    /// The clock already issued the largest possible stamp.
    #[error(
        "the clock has issued the largest representable stamp, {}",
        HlcTimestamp::MAX
    )]
    Exhausted,
}

/// A hybrid logical clock timestamp: 48 bits of milliseconds, 16 bits of
/// logical counter.
///
/// # Layout
///
/// One `u64`: the high 48 bits hold physical time in milliseconds since the
/// Unix epoch (enough until the year 10889), the low 16 bits a logical
/// counter (65 536 events per millisecond). Comparing the `u64`s compares
/// `(physical, logical)` lexicographically, which is the HLC order, and makes
/// the paper's update rules one `max` and one `+ 1`:
///
/// - `now(pt)` = `max(last + 1, pt << 16)`
/// - `update(m, pt)` = `max(last + 1, m + 1, pt << 16)`
///
/// When the counter is full, `+ 1` carries into the physical part: the clock
/// borrows one millisecond from the future instead of wrapping the counter,
/// so stamps stay strictly increasing.
///
/// To order stamps from different nodes totally, pair them with a node id:
/// `(HlcTimestamp, NodeId)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct HlcTimestamp(u64);

impl HlcTimestamp {
    /// The largest physical time, in milliseconds, a stamp can hold.
    pub const MAX_PHYSICAL_MS: u64 = (1 << (64 - LOGICAL_BITS)) - 1;
    /// The smallest stamp.
    pub const ZERO: Self = Self(0);
    /// The largest stamp.
    pub const MAX: Self = Self(u64::MAX);

    /// The stamp for `physical_ms` and `logical`.
    pub fn new(physical_ms: u64, logical: u16) -> Result<Self, HlcError> {
        Ok(Self(wall(physical_ms)? | u64::from(logical)))
    }

    /// The stamp whose packed form is `raw` (every `u64` is a valid stamp).
    pub const fn from_u64(raw: u64) -> Self {
        Self(raw)
    }

    /// The packed form, ordered like the stamps.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The physical part, in milliseconds since the Unix epoch.
    pub const fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical counter.
    pub const fn logical(self) -> u16 {
        // Truncation keeps exactly the low 16 bits, the counter.
        self.0 as u16
    }

    /// The compact binary encoding (see [`encoding`](crate::encoding)).
    pub fn to_bytes(self) -> Vec<u8> {
        let mut out = encoding::begin(Kind::HlcTimestamp);
        out.extend_from_slice(&self.0.to_be_bytes());
        out
    }

    /// Decodes [`HlcTimestamp::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        encoding::decode_exact(bytes, Kind::HlcTimestamp, |reader| {
            Ok(Self(u64::from_be_bytes(reader.read_array()?)))
        })
    }
}

impl fmt::Debug for HlcTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HlcTimestamp({self})")
    }
}

impl fmt::Display for HlcTimestamp {
    /// Formats as `physical_ms.logical`, e.g. `1700000000000.3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.physical_ms(), self.logical())
    }
}

/// Physical time shifted into the stamp's high bits.
pub(crate) fn wall(physical_ms: u64) -> Result<u64, HlcError> {
    if physical_ms > HlcTimestamp::MAX_PHYSICAL_MS {
        return Err(HlcError::PhysicalTimeOutOfRange {
            physical_ms,
            max_ms: HlcTimestamp::MAX_PHYSICAL_MS,
        });
    }
    Ok(physical_ms << LOGICAL_BITS)
}

/// The wall time for an update, after refusing a `remote` stamp more than
/// `max_drift_ms` ahead of `physical_ms`.
pub(crate) fn wall_for_remote(
    remote: HlcTimestamp,
    physical_ms: u64,
    max_drift_ms: u64,
) -> Result<u64, HlcError> {
    let wall = wall(physical_ms)?;
    if remote.physical_ms() > physical_ms.saturating_add(max_drift_ms) {
        return Err(HlcError::DriftExceeded {
            remote_ms: remote.physical_ms(),
            physical_ms,
            max_drift_ms,
        });
    }
    Ok(wall)
}

/// The HLC step: the stamp after `last` that also follows `remote`
/// ([`HlcTimestamp::ZERO`] for a local event) and is at least `wall`.
#[inline]
pub(crate) fn advance(
    last: HlcTimestamp,
    remote: HlcTimestamp,
    wall: u64,
) -> Result<HlcTimestamp, HlcError> {
    let next = last
        .0
        .max(remote.0)
        .checked_add(1)
        .ok_or(HlcError::Exhausted)?;
    Ok(HlcTimestamp(next.max(wall)))
}

/// How far ahead of local physical time a remote stamp may be before
/// [`Hlc::update`] refuses it as drift or forgery: a bound on clock skew, not
/// a time. The default is 500 ms, as in uhlc.
///
/// ```
/// use quorate_clocks::{Hlc, MaxDrift};
///
/// let clock = Hlc::with_max_drift(MaxDrift::millis(250));
/// assert_eq!(clock.max_drift().as_millis(), 250);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct MaxDrift(u64);

impl MaxDrift {
    /// The default bound, 500 ms.
    pub const DEFAULT: Self = Self(500);

    /// A bound of `ms` milliseconds.
    pub const fn millis(ms: u64) -> Self {
        Self(ms)
    }

    /// The bound in milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.0
    }
}

impl Default for MaxDrift {
    /// [`MaxDrift::DEFAULT`].
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A hybrid logical clock for one node (Kulkarni, Demirbas, Madappa, Avva,
/// Leone, "Logical Physical Clocks", OPODIS 2014). Physical time is an
/// argument of every call (milliseconds since the Unix epoch), never read by
/// the clock. See [`HlcTimestamp`] for the stamp layout.
///
/// ```
/// use quorate_clocks::{Hlc, HlcError, HlcTimestamp};
///
/// use quorate_clocks::MaxDrift;
///
/// let mut clock = Hlc::with_max_drift(MaxDrift::millis(500)); // refuse remote stamps > 500 ms ahead
/// let a = clock.now(1_000).unwrap();
/// let b = clock.now(1_000).unwrap(); // same millisecond: logical + 1
/// assert_eq!((b.physical_ms(), b.logical()), (1_000, 1));
/// let remote = HlcTimestamp::new(1_200, 7).unwrap();
/// let c = clock.update(remote, 1_001).unwrap();
/// assert!(a < b && remote < c);
/// let forged = HlcTimestamp::new(9_999, 0).unwrap();
/// assert!(matches!(clock.update(forged, 1_002), Err(HlcError::DriftExceeded { .. })));
/// assert_eq!(clock.last(), c); // unchanged
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Hlc {
    last: HlcTimestamp,
    // The serialized name of the field, in milliseconds.
    max_drift_ms: MaxDrift,
}

impl Default for Hlc {
    /// A clock with the 500 ms maximum drift uhlc also defaults to.
    fn default() -> Self {
        Self::with_max_drift(MaxDrift::DEFAULT)
    }
}

impl Hlc {
    /// A fresh clock refusing remote stamps more than `max_drift` ahead of
    /// local physical time.
    pub const fn with_max_drift(max_drift: MaxDrift) -> Self {
        Self {
            last: HlcTimestamp::ZERO,
            max_drift_ms: max_drift,
        }
    }

    /// A clock restored after a restart: it will never issue a stamp at or
    /// below `last`, even if physical time went backwards meanwhile.
    pub const fn restore(last: HlcTimestamp, max_drift: MaxDrift) -> Self {
        Self {
            last,
            max_drift_ms: max_drift,
        }
    }

    /// The last stamp issued (or [`HlcTimestamp::ZERO`]).
    pub const fn last(&self) -> HlcTimestamp {
        self.last
    }

    /// The configured maximum drift.
    pub const fn max_drift(&self) -> MaxDrift {
        self.max_drift_ms
    }

    /// A stamp for a local or send event at physical time `physical_ms`:
    /// greater than every stamp issued before, and at least `physical_ms`.
    #[inline]
    pub fn now(&mut self, physical_ms: u64) -> Result<HlcTimestamp, HlcError> {
        let wall = wall(physical_ms)?;
        self.last = advance(self.last, HlcTimestamp::ZERO, wall)?;
        Ok(self.last)
    }

    /// A stamp for receiving a message stamped `remote` at physical time
    /// `physical_ms`: greater than `remote` and than every stamp issued before.
    ///
    /// A `remote` more than the maximum drift ahead of `physical_ms` is
    /// refused with [`HlcError::DriftExceeded`] and the clock is unchanged.
    #[inline]
    pub fn update(
        &mut self,
        remote: HlcTimestamp,
        physical_ms: u64,
    ) -> Result<HlcTimestamp, HlcError> {
        let wall = wall_for_remote(remote, physical_ms, self.max_drift_ms.as_millis())?;
        self.last = advance(self.last, remote, wall)?;
        Ok(self.last)
    }

    /// The compact binary encoding (see [`encoding`](crate::encoding)).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = encoding::begin(Kind::Hlc);
        out.extend_from_slice(&self.last.0.to_be_bytes());
        encoding::write_varint(&mut out, self.max_drift_ms.as_millis().into());
        out
    }

    /// Decodes [`Hlc::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        encoding::decode_exact(bytes, Kind::Hlc, |reader| {
            let last = HlcTimestamp(u64::from_be_bytes(reader.read_array()?));
            let max_drift_ms = MaxDrift::millis(reader.read_u64()?);
            Ok(Self { last, max_drift_ms })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_48_16() {
        let stamp = HlcTimestamp::new(1, 2).unwrap();
        assert_eq!(stamp.as_u64(), (1 << 16) | 2);
        assert_eq!(HlcTimestamp::MAX_PHYSICAL_MS, 0xffff_ffff_ffff);
        assert_eq!(
            HlcTimestamp::MAX.physical_ms(),
            HlcTimestamp::MAX_PHYSICAL_MS
        );
        assert_eq!(HlcTimestamp::MAX.logical(), u16::MAX);
        assert_eq!(alloc::format!("{stamp}"), "1.2");
    }

    #[test]
    fn paper_rules_by_hand() {
        let mut clock = Hlc::with_max_drift(MaxDrift::millis(100));
        // Physical time ahead: take it, counter 0.
        assert_eq!(clock.now(10).unwrap(), HlcTimestamp::new(10, 0).unwrap());
        // Physical time stalled or behind: counter + 1.
        assert_eq!(clock.now(10).unwrap(), HlcTimestamp::new(10, 1).unwrap());
        assert_eq!(clock.now(5).unwrap(), HlcTimestamp::new(10, 2).unwrap());
        // Remote ahead (within drift): remote counter + 1.
        let remote = HlcTimestamp::new(50, 4).unwrap();
        assert_eq!(
            clock.update(remote, 11).unwrap(),
            HlcTimestamp::new(50, 5).unwrap()
        );
        // Remote behind, physical ahead of both: physical, counter 0.
        assert_eq!(
            clock.update(HlcTimestamp::new(3, 9).unwrap(), 60).unwrap(),
            HlcTimestamp::new(60, 0).unwrap()
        );
        // Same millisecond everywhere: max counter + 1.
        assert_eq!(
            clock.update(HlcTimestamp::new(60, 8).unwrap(), 60).unwrap(),
            HlcTimestamp::new(60, 9).unwrap()
        );
    }

    #[test]
    fn counter_overflow_carries_instead_of_wrapping() {
        let mut clock = Hlc::restore(HlcTimestamp::new(7, u16::MAX).unwrap(), MaxDrift::millis(0));
        let next = clock.now(7).unwrap();
        assert_eq!((next.physical_ms(), next.logical()), (8, 0));
        let mut full = Hlc::restore(HlcTimestamp::MAX, MaxDrift::millis(0));
        assert_eq!(full.now(0), Err(HlcError::Exhausted));
        assert_eq!(full.last(), HlcTimestamp::MAX);
    }

    #[test]
    fn refusals_leave_the_clock_unchanged() {
        let mut clock = Hlc::with_max_drift(MaxDrift::millis(10));
        let before = clock.now(100).unwrap();
        let ahead = HlcTimestamp::new(111, 0).unwrap();
        assert_eq!(
            clock.update(ahead, 100),
            Err(HlcError::DriftExceeded {
                remote_ms: 111,
                physical_ms: 100,
                max_drift_ms: 10
            })
        );
        assert_eq!(
            clock.now(1 << 48),
            Err(HlcError::PhysicalTimeOutOfRange {
                physical_ms: 1 << 48,
                max_ms: (1 << 48) - 1
            })
        );
        assert_eq!(clock.last(), before);
        // Exactly at the bound is accepted.
        let edge = HlcTimestamp::new(110, 0).unwrap();
        assert!(clock.update(edge, 100).unwrap() > edge);
    }

    #[test]
    fn bytes_round_trip() {
        let mut clock = Hlc::with_max_drift(MaxDrift::millis(250));
        clock.now(1_700_000_000_000).unwrap();
        assert_eq!(Hlc::from_bytes(&clock.to_bytes()), Ok(clock.clone()));
        let stamp = clock.last();
        let bytes = stamp.to_bytes();
        assert_eq!(bytes.len(), 9);
        assert_eq!(HlcTimestamp::from_bytes(&bytes), Ok(stamp));
    }
}
