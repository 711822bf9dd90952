//! The compact binary encoding shared by proofs, signed roots and sync
//! messages: LEB128 lengths, raw 32-byte hashes, big-endian fixed integers.
//! Decoding never allocates more than the input could possibly hold.
//!
//! Varints are the family's canonical LEB128 (the block below is the same
//! code as in quorate-clocks' `encoding.rs`): only the shortest encoding of a
//! `u64` decodes, so two different byte strings never decode to the same
//! proof or message.

use crate::{Error, Hash, hash::HASH_LEN};
use alloc::vec::Vec;

// The family's canonical LEB128 varint. This block is byte-for-byte the same
// in quorate-merkle `merkle/src/codec.rs` and quorate-clocks
// `clocks/src/encoding.rs` (the crates share no source file): change both
// or neither.

/// Why a canonical LEB128 varint was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintError {
    /// The input ended inside the varint.
    Truncated,
    /// A shorter encoding of the same value exists (a final `0x00` byte).
    Overlong,
    /// The value does not fit in 64 bits.
    Overflow,
}

/// Appends `value` as unsigned LEB128, in its one shortest form.
pub(crate) fn encode_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads one unsigned LEB128 varint from the start of `bytes`: its value and
/// the number of bytes it took. Only the shortest encoding of a `u64` is
/// accepted, so every value has exactly one encoding that decodes.
pub(crate) fn decode_varint(bytes: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut value: u64 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        let payload = u64::from(byte & 0x7f);
        // The tenth byte can only carry bit 63.
        if i == 9 && payload > 1 {
            return Err(VarintError::Overflow);
        }
        value |= payload << (7 * i);
        if byte & 0x80 == 0 {
            return if byte == 0 && i > 0 {
                Err(VarintError::Overlong)
            } else {
                Ok((value, i + 1))
            };
        }
    }
    if bytes.len() >= 10 {
        Err(VarintError::Overflow)
    } else {
        Err(VarintError::Truncated)
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, v: u64) {
    encode_varint(out, v);
}

pub(crate) fn put_hashes(out: &mut Vec<u8>, hashes: &[Hash]) {
    put_varint(out, hashes.len() as u64);
    for h in hashes {
        out.extend_from_slice(&h.0);
    }
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A cursor over untrusted bytes; every read is checked.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    len: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self {
            rest: bytes,
            len: bytes.len(),
        }
    }

    /// Offset of the next unread byte.
    fn offset(&self) -> usize {
        self.len - self.rest.len()
    }

    pub(crate) fn take(&mut self, n: u64) -> Result<&'a [u8], Error> {
        let available = self.rest.len();
        let n_usize = usize::try_from(n).map_err(|_| Error::Truncated {
            needed: n,
            available,
        })?;
        if n_usize > available {
            return Err(Error::Truncated {
                needed: n,
                available,
            });
        }
        let (head, tail) = self.rest.split_at(n_usize);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }

    pub(crate) fn u64_be(&mut self) -> Result<u64, Error> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    pub(crate) fn varint(&mut self) -> Result<u64, Error> {
        let offset = self.offset();
        match decode_varint(self.rest) {
            Ok((value, used)) => {
                self.take(used as u64)?;
                Ok(value)
            }
            Err(VarintError::Truncated) => Err(Error::Truncated {
                needed: self.rest.len() as u64 + 1,
                available: self.rest.len(),
            }),
            Err(VarintError::Overlong) => Err(Error::BadVarint { offset }),
            Err(VarintError::Overflow) => Err(Error::VarintOverflow { offset }),
        }
    }

    pub(crate) fn hash(&mut self) -> Result<Hash, Error> {
        let mut h = [0u8; HASH_LEN];
        h.copy_from_slice(self.take(HASH_LEN as u64)?);
        Ok(Hash(h))
    }

    /// A length-prefixed list of at most `max` items of at least
    /// `min_item_len` bytes each, read by `item`.
    pub(crate) fn list<T>(
        &mut self,
        what: &'static str,
        max: u64,
        min_item_len: u64,
        mut item: impl FnMut(&mut Self) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        let n = self.len_field(what, max)?;
        self.check_room(n, min_item_len)?;
        (0..n).map(|_| item(self)).collect()
    }

    /// A length-prefixed list of hashes, at most `max` long.
    pub(crate) fn hashes(&mut self, max: u64) -> Result<Vec<Hash>, Error> {
        self.list("hash list", max, HASH_LEN as u64, Self::hash)
    }

    /// A length-prefixed byte string, at most `max` long.
    pub(crate) fn bytes(&mut self, what: &'static str, max: u64) -> Result<&'a [u8], Error> {
        let n = self.len_field(what, max)?;
        self.take(n)
    }

    /// A count or length field, at most `max`.
    pub(crate) fn len_field(&mut self, what: &'static str, max: u64) -> Result<u64, Error> {
        let n = self.varint()?;
        if n > max {
            return Err(Error::TooLong { what, len: n, max });
        }
        Ok(n)
    }

    /// Fails early if `count` items of at least `each` bytes cannot fit,
    /// so a forged count never drives a large allocation.
    pub(crate) fn check_room(&self, count: u64, each: u64) -> Result<(), Error> {
        let needed = count.saturating_mul(each);
        if needed > self.rest.len() as u64 {
            return Err(Error::Truncated {
                needed,
                available: self.rest.len(),
            });
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> Result<(), Error> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Error::TrailingBytes {
                extra: self.rest.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_round_trips(v: u64) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.varint().unwrap(), v);
            r.finish().unwrap();
        }

        /// Every encoding has exactly one decoding: whatever decodes from
        /// random bytes re-encodes to exactly the bytes it was read from.
        #[test]
        fn a_decoded_varint_re_encodes_to_its_bytes(bytes in prop::collection::vec(any::<u8>(), 0..12),
                high in prop::collection::vec(0x80u8..=0xff, 0..11), last: u8) {
            // Random bytes, and runs of continuation bytes with a random end
            // (most random bytes end a varint after one byte).
            for input in [bytes.clone(), [&high[..], &[last]].concat()] {
                let mut r = Reader::new(&input);
                if let Ok(v) = r.varint() {
                    let used = r.offset();
                    let mut again = Vec::new();
                    put_varint(&mut again, v);
                    prop_assert_eq!(&again[..], &input[..used]);
                }
            }
        }
    }

    #[test]
    fn varint_rejects_overflow_and_padding() {
        // 2^64 in LEB128: nine 0x80 bytes then 0x02.
        let bytes = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02];
        assert_eq!(
            Reader::new(&bytes).varint(),
            Err(Error::VarintOverflow { offset: 0 })
        );
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(Reader::new(&max).varint(), Ok(u64::MAX));
        assert_eq!(
            Reader::new(&[0x80; 11]).varint(),
            Err(Error::VarintOverflow { offset: 0 })
        );
        // Padded encodings of 0 and 1: a shorter form exists.
        assert_eq!(
            Reader::new(&[0x80, 0x00]).varint(),
            Err(Error::BadVarint { offset: 0 })
        );
        assert_eq!(
            Reader::new(&[0x81, 0x80, 0x00]).varint(),
            Err(Error::BadVarint { offset: 0 })
        );
        assert_eq!(Reader::new(&[0x00]).varint(), Ok(0));
        // The offset is where the varint starts.
        let mut r = Reader::new(&[0x05, 0x80, 0x00]);
        assert_eq!(r.varint(), Ok(5));
        assert_eq!(r.varint(), Err(Error::BadVarint { offset: 1 }));
        assert!(matches!(
            Reader::new(&[0x80]).varint(),
            Err(Error::Truncated { .. })
        ));
    }
}
