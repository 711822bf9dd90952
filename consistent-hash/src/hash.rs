//! Stable, specified hashing of keys and nodes.
//!
//! Placement must be identical in every process, on every platform and in
//! every release, so nothing here uses `std`'s randomly seeded
//! `DefaultHasher`. The default [`Xxh3`] is XXH3-64 as specified by the
//! xxHash project (version 0.8), computed by `xxhash_rust::xxh3::xxh3_64_with_seed`
//! over the bytes a key gives through [`StableKey`].

use alloc::string::String;
use alloc::vec::Vec;

/// A seeded 64-bit hash over bytes, used for every placement decision.
///
/// Implementations must be pure functions of `(bytes, seed)`: the same
/// inputs give the same output everywhere, forever.
pub trait KeyHasher {
    /// Hashes `bytes` with `seed`.
    fn hash(&self, bytes: &[u8], seed: u64) -> u64;

    /// Hashes a key's stable bytes with `seed`.
    fn hash_key<K: StableKey + ?Sized>(&self, key: &K, seed: u64) -> u64
    where
        Self: Sized,
    {
        self.hash(key.stable_bytes().as_ref(), seed)
    }
}

/// XXH3-64 with a seed: `xxh3_64_with_seed(bytes, seed)`.
///
/// With seed 0 this is plain `XXH3_64bits(bytes)`; for instance the empty
/// input hashes to `0x2d06800538d394c2`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Xxh3;

impl KeyHasher for Xxh3 {
    #[inline]
    fn hash(&self, bytes: &[u8], seed: u64) -> u64 {
        // 4 to 8 bytes (u32 and u64 keys) inline here: `xxhash_rust`'s entry
        // point is not `#[inline]`, and the call and length dispatch cost
        // about as much as the hash itself. Same function, checked below.
        match bytes.len() {
            4..=8 => xxh3_64_4to8(bytes, seed),
            _ => xxhash_rust::xxh3::xxh3_64_with_seed(bytes, seed),
        }
    }
}

/// XXH3-64 of 4 to 8 bytes, as in the xxHash specification (0.8): the
/// first and last 4 bytes keyed with bytes 8..24 of the default secret.
#[inline]
fn xxh3_64_4to8(bytes: &[u8], seed: u64) -> u64 {
    // Bytes 8..16 and 16..24 of XXH3's default secret.
    const SECRET_8: u64 = u64::from_le_bytes([0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c]);
    const SECRET_16: u64 = u64::from_le_bytes([0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb]);
    let len = bytes.len();
    let word = |at: usize| -> u64 {
        let mut four = [0u8; 4];
        if let Some(src) = bytes.get(at..at + 4) {
            four.copy_from_slice(src);
        }
        u64::from(u32::from_le_bytes(four))
    };
    let seed = seed ^ (u64::from((seed as u32).swap_bytes()) << 32);
    let flip = (SECRET_8 ^ SECRET_16).wrapping_sub(seed);
    let input = word(len.saturating_sub(4)).wrapping_add(word(0) << 32);
    let mut value = input ^ flip;
    // The "strong avalanche" (rrmxmx) finalizer.
    value ^= value.rotate_left(49) ^ value.rotate_left(24);
    value = value.wrapping_mul(0x9fb2_1c65_1e98_df25);
    value ^= (value >> 35).wrapping_add(len as u64);
    value = value.wrapping_mul(0x9fb2_1c65_1e98_df25);
    value ^ (value >> 28)
}

/// A key or node whose identity is a fixed byte string.
///
/// Unlike [`core::hash::Hash`], whose output may change between Rust
/// releases and platforms (`usize` width, `str` terminators), these bytes are
/// part of the placement contract: integers are little-endian, strings are
/// their UTF-8 bytes, byte strings are themselves.
pub trait StableKey {
    /// The bytes that identify `self`.
    fn stable_bytes(&self) -> impl AsRef<[u8]> + '_;
}

impl StableKey for [u8] {
    fn stable_bytes(&self) -> impl AsRef<[u8]> + '_ {
        self
    }
}

impl<const LEN: usize> StableKey for [u8; LEN] {
    fn stable_bytes(&self) -> impl AsRef<[u8]> + '_ {
        self.as_slice()
    }
}

impl StableKey for Vec<u8> {
    fn stable_bytes(&self) -> impl AsRef<[u8]> + '_ {
        self.as_slice()
    }
}

impl StableKey for str {
    fn stable_bytes(&self) -> impl AsRef<[u8]> + '_ {
        self.as_bytes()
    }
}

impl StableKey for String {
    fn stable_bytes(&self) -> impl AsRef<[u8]> + '_ {
        self.as_bytes()
    }
}

impl<T: StableKey + ?Sized> StableKey for &T {
    fn stable_bytes(&self) -> impl AsRef<[u8]> + '_ {
        (**self).stable_bytes()
    }
}

macro_rules! little_endian_key {
    ($($int:ty),*) => {$(
        impl StableKey for $int {
            fn stable_bytes(&self) -> impl AsRef<[u8]> + '_ {
                self.to_le_bytes()
            }
        }
    )*};
}
little_endian_key!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128);

/// The SplitMix64 output function (Steele, Lea & Flood, 2014): a fixed,
/// fast bijection that spreads every input bit over the whole output.
///
/// Used where a hash is derived from other hashes (probes, pair scores),
/// where re-running the byte hasher would cost far more.
#[inline]
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The SplitMix64 generator's increment (the 64-bit golden ratio).
pub(crate) const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// Maps a 64-bit hash onto `0..len` without division (Lemire's multiply-shift).
///
/// Exactly `(hash as u128 * len as u128) >> 64`; uniform when `hash` is.
#[inline]
pub(crate) fn reduce(hash: u64, len: u64) -> u64 {
    ((u128::from(hash) * u128::from(len)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values from the C xxHash library (via python-xxhash 3.x/4.x,
    // `xxhash.xxh3_64_intdigest(data, seed)`), not from this crate.
    #[test]
    fn xxh3_matches_reference_implementation() {
        assert_eq!(Xxh3.hash(b"", 0), 0x2d06_8005_38d3_94c2);
        assert_eq!(Xxh3.hash_key("", 0), 0x2d06_8005_38d3_94c2);
    }

    proptest::proptest! {
        // The inline 4-to-8-byte path is the library's function exactly.
        #[test]
        fn short_inputs_match_xxhash_rust(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20), seed in proptest::prelude::any::<u64>()) {
            proptest::prop_assert_eq!(Xxh3.hash(&bytes, seed), xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, seed));
            proptest::prop_assert_eq!(Xxh3.hash(&bytes, 0), xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, 0));
        }
    }

    #[test]
    fn integers_hash_as_little_endian_bytes() {
        assert_eq!(
            Xxh3.hash_key(&0x0102_0304u32, 7),
            Xxh3.hash(&[4, 3, 2, 1], 7)
        );
        assert_eq!(Xxh3.hash_key("ab", 0), Xxh3.hash_key(b"ab", 0));
    }

    // SplitMix64 seeded with 0 yields 0xe220a8397b1dcdaf first (reference
    // sequence of Vigna's splitmix64.c): the output function of 0 + gamma.
    #[test]
    fn splitmix64_matches_reference_sequence() {
        assert_eq!(splitmix64(GOLDEN_GAMMA), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn reduce_stays_in_range() {
        assert_eq!(reduce(0, 10), 0);
        assert_eq!(reduce(u64::MAX, 10), 9);
        assert_eq!(reduce(1 << 63, 10), 5);
    }
}
