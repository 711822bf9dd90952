//! Jump consistent hash (Lamping & Veach, 2014) for numbered buckets.
//!
//! No memory and no tables: a key's bucket is computed by a short loop that
//! "jumps" forward, and growing from `n` to `n + 1` buckets moves exactly the
//! keys that now land in bucket `n`, about `1/(n+1)` of them.
//!
//! **Limit**: buckets are numbers `0..n`, and only the last one can be added or
//! removed. Removing bucket `k < n - 1` is not possible without remapping
//! (renumber through an indirection table, or use [`crate::Ring`],
//! [`crate::Rendezvous`] or [`crate::Maglev`] for arbitrary membership).

use core::num::NonZeroU32;

use crate::Error;
use crate::hash::{KeyHasher, StableKey, Xxh3};

/// A bucket number in `0..buckets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Bucket(pub u32);

/// Jump consistent hash over `buckets` numbered buckets.
///
/// ```
/// use quorate_consistent_hash::{Bucket, JumpHash};
///
/// let mut jump = JumpHash::new(10)?;
/// let before = jump.bucket("key");
/// jump.push_bucket()?;
/// let after = jump.bucket("key");
/// // A key either stays or moves to the new, last bucket.
/// assert!(after == before || after == Bucket(10));
/// # Ok::<(), quorate_consistent_hash::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct JumpHash<H = Xxh3> {
    hasher: H,
    buckets: u32,
}

impl JumpHash<Xxh3> {
    /// `buckets` buckets (at least 1), keys hashed with [`Xxh3`] seed 0.
    pub fn new(buckets: u32) -> Result<Self, Error> {
        Self::with_hasher(buckets, Xxh3)
    }
}

impl<H: KeyHasher> JumpHash<H> {
    /// `buckets` buckets (at least 1), keys hashed with `hasher` seed 0.
    pub fn with_hasher(buckets: u32, hasher: H) -> Result<Self, Error> {
        if buckets == 0 {
            return Err(Error::NoBuckets);
        }
        Ok(Self { hasher, buckets })
    }

    /// Number of buckets.
    pub fn buckets(&self) -> u32 {
        self.buckets
    }

    /// Adds bucket number `buckets()`, returning it.
    pub fn push_bucket(&mut self) -> Result<Bucket, Error> {
        let added = self.buckets;
        self.buckets = self.buckets.checked_add(1).ok_or(Error::TooManyBuckets {
            buckets: self.buckets,
        })?;
        Ok(Bucket(added))
    }

    /// Removes the last bucket, returning it; the only removal jump hash allows.
    pub fn pop_bucket(&mut self) -> Result<Bucket, Error> {
        if self.buckets == 1 {
            return Err(Error::NoBuckets);
        }
        self.buckets -= 1;
        Ok(Bucket(self.buckets))
    }

    /// The bucket of `key`.
    #[inline]
    pub fn bucket<K: StableKey + ?Sized>(&self, key: &K) -> Bucket {
        Bucket(jump_in(self.hasher.hash_key(key, 0), self.buckets))
    }

    /// The bucket of an already hashed key.
    #[inline]
    pub fn bucket_for_hash(&self, hash: u64) -> Bucket {
        Bucket(jump_in(hash, self.buckets))
    }
}

/// The paper's algorithm, verbatim: a 64-bit LCG drives jumps forward until
/// the next jump would pass `buckets`. Zero buckets cannot be asked for:
/// there is no bucket to return (the type refuses it, as
/// [`JumpHash::new`] refuses it with [`Error::NoBuckets`]).
///
/// ```
/// use core::num::NonZeroU32;
/// use quorate_consistent_hash::jump;
///
/// let ten = NonZeroU32::new(10).unwrap();
/// assert!(jump(42, ten) < 10);
/// assert!(NonZeroU32::new(0).is_none());
/// ```
#[inline]
pub fn jump(key: u64, buckets: NonZeroU32) -> u32 {
    jump_in(key, buckets.get())
}

/// [`jump`] for a bucket count the caller keeps at least 1.
#[inline]
fn jump_in(mut key: u64, buckets: u32) -> u32 {
    let buckets = i64::from(buckets);
    let (mut bucket, mut next) = (-1i64, 0i64);
    while next < buckets {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        next = ((bucket + 1) as f64 * ((1i64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    bucket.max(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    // From an independent Python transcription of the paper's C++ listing.
    #[test]
    fn matches_the_papers_reference_code() {
        assert_eq!(jump(0, nz(1)), 0);
        assert_eq!(jump(1, nz(10)), 6);
        assert_eq!(jump(0xdead_beef, nz(1000)), 285);
        assert_eq!(jump(u64::MAX, nz(100)), 92);
        assert_eq!(jump(123_456_789, nz(1 << 16)), 42_483);
    }

    #[test]
    fn only_the_last_bucket_comes_and_goes() {
        let mut jump = JumpHash::new(1).unwrap();
        assert_eq!(jump.pop_bucket(), Err(Error::NoBuckets));
        assert_eq!(JumpHash::new(0), Err(Error::NoBuckets));
        assert_eq!(jump.push_bucket(), Ok(Bucket(1)));
        assert_eq!(jump.pop_bucket(), Ok(Bucket(1)));
        assert_eq!(jump.buckets(), 1);
        let mut full = JumpHash::new(u32::MAX).unwrap();
        assert_eq!(
            full.push_bucket(),
            Err(Error::TooManyBuckets { buckets: u32::MAX })
        );
        assert_eq!(full.buckets(), u32::MAX);
    }
}
