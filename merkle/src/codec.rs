//! The compact binary encoding shared by proofs, signed roots and sync
//! messages: LEB128 lengths, raw 32-byte hashes, big-endian fixed integers.
//! Decoding never allocates more than the input could possibly hold.

use crate::{Error, Hash, hash::HASH_LEN};
use alloc::vec::Vec;

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
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
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
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
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            // The tenth byte may only carry the top bit of a u64.
            if i == 9 && bits > 1 {
                return Err(Error::BadVarint);
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Error::BadVarint)
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

        #[test]
        fn varint_never_panics(bytes: Vec<u8>) {
            let _ = Reader::new(&bytes).varint();
        }
    }

    #[test]
    fn varint_rejects_overflow() {
        // 2^64 in LEB128: nine 0xff-ish bytes then 0x02.
        let bytes = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02];
        assert_eq!(Reader::new(&bytes).varint(), Err(Error::BadVarint));
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(Reader::new(&max).varint(), Ok(u64::MAX));
        assert_eq!(Reader::new(&[0x80; 11]).varint(), Err(Error::BadVarint));
    }
}
