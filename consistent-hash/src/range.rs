//! Arcs of the hash circle and the hand-over of arcs between nodes.

/// The arc `(start, end]` of the 64-bit hash circle, wrapping past `u64::MAX`.
///
/// A key whose hash `h` is in the arc belongs to it. `start == end` is the
/// whole circle (a ring with one point owns everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct KeyRange {
    /// Exclusive lower end (the previous point on the circle).
    pub start: u64,
    /// Inclusive upper end (the owning point).
    pub end: u64,
}

impl KeyRange {
    /// Whether a key hashed to `hash` falls in this arc.
    pub fn contains(&self, hash: u64) -> bool {
        match self.start.cmp(&self.end) {
            core::cmp::Ordering::Equal => true,
            core::cmp::Ordering::Less => self.start < hash && hash <= self.end,
            core::cmp::Ordering::Greater => hash > self.start || hash <= self.end,
        }
    }

    /// How many hash values the arc holds (2^64 for the whole circle).
    pub fn len(&self) -> u128 {
        match self.end.wrapping_sub(self.start) {
            0 => 1u128 << 64,
            len => u128::from(len),
        }
    }

    /// Never true: an arc holds at least one hash value.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The arc's share of the circle, in `(0, 1]`.
    pub fn fraction(&self) -> f64 {
        self.len() as f64 / 18_446_744_073_709_551_616.0
    }
}

/// Keys whose hashes lie in `range` must move from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Transfer<N> {
    /// The arc that changes owner.
    pub range: KeyRange,
    /// Its owner before the change.
    pub from: N,
    /// Its owner after the change.
    pub to: N,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arcs_wrap_around_the_circle() {
        let plain = KeyRange { start: 10, end: 20 };
        assert!(
            !plain.contains(10) && plain.contains(11) && plain.contains(20) && !plain.contains(21)
        );
        assert_eq!(plain.len(), 10);
        let wrapping = KeyRange {
            start: u64::MAX - 1,
            end: 1,
        };
        assert!(wrapping.contains(u64::MAX) && wrapping.contains(0) && wrapping.contains(1));
        assert!(!wrapping.contains(2) && !wrapping.contains(u64::MAX - 1));
        assert_eq!(wrapping.len(), 3);
        let whole = KeyRange { start: 5, end: 5 };
        assert!(whole.contains(0) && whole.contains(5) && whole.contains(u64::MAX));
        assert_eq!(whole.len(), 1 << 64);
        assert!((whole.fraction() - 1.0).abs() < 1e-12);
    }
}
