//! The compact, versioned binary encoding shared by every clock.
//!
//! Every encoded clock starts with one header byte: the format version in the
//! high nibble and the kind of value in the low nibble, so a stamp can never be
//! decoded as a vector clock by mistake and a future format can be told apart.
//! Integers are unsigned LEB128 varints (HLC stamps are 8 bytes big-endian,
//! because their high bits are always set). The encoding is canonical:
//! entries are sorted, zero counters and over-long varints are refused, and
//! trailing bytes are an error, so `from_bytes(b)` succeeding implies
//! `to_bytes()` gives back exactly `b`.
//!
//! Actor ids and stored values are written through the [`Codec`] trait, which
//! is implemented for the unsigned integers, `String`, `Vec<u8>` and byte
//! arrays; implement it for your own id newtypes.

use alloc::string::String;
use alloc::vec::Vec;

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// The largest counter or Lamport time accepted from outside (decoding,
/// `receive`).
///
/// Local increments start at most here, which leaves 2^63 increments of
/// headroom (292 years at a billion events a second), so a forged counter near
/// `u64::MAX` can never make a clock wrap around or stop advancing.
pub const MAX_COUNTER: u64 = (1 << 63) - 1;

/// Why bytes could not be decoded into a clock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the value was complete.
    #[error("input ended early at byte {offset}")]
    UnexpectedEnd {
        /// Offset at which more bytes were needed.
        offset: usize,
    },
    /// The header names a format version this build does not read.
    #[error("unsupported encoding version {found}, this build reads version {FORMAT_VERSION}")]
    UnsupportedVersion {
        /// The version found in the header.
        found: u8,
    },
    /// The header names a different kind of clock than the one asked for.
    #[error("expected an encoded {expected}, found kind tag {found}")]
    WrongKind {
        /// What the caller asked to decode.
        expected: &'static str,
        /// The kind tag found in the header.
        found: u8,
    },
    /// A varint was longer than needed or did not fit in 128 bits.
    #[error("malformed varint at byte {offset}")]
    BadVarint {
        /// Offset of the varint's first byte.
        offset: usize,
    },
    /// A number does not fit the type or range it is decoded into.
    #[error("value {value} out of range for {target} (max {max})")]
    OutOfRange {
        /// The decoded number.
        value: u128,
        /// What it was meant to be.
        target: &'static str,
        /// The largest value `target` accepts.
        max: u128,
    },
    /// A length prefix claims more bytes than remain.
    #[error("length {length} exceeds the {remaining} bytes left")]
    LengthTooLarge {
        /// The claimed length.
        length: u128,
        /// Bytes actually left.
        remaining: usize,
    },
    /// Bytes remained after a complete value.
    #[error("{count} trailing bytes after the encoded value")]
    TrailingBytes {
        /// How many bytes were left over.
        count: usize,
    },
    /// Entries were not in strictly increasing order (unsorted or duplicated).
    #[error("entry {index} is out of order or duplicated")]
    NotCanonical {
        /// Index of the offending entry.
        index: usize,
    },
    /// An entry carried a zero counter, which the canonical form omits.
    #[error("entry {index} has a zero counter")]
    ZeroCounter {
        /// Index of the offending entry.
        index: usize,
    },
    /// A stored sibling's dot is not inside the stored causal context.
    #[error("sibling {index} has a dot outside the causal context")]
    DotOutsideContext {
        /// Index of the offending sibling.
        index: usize,
    },
    /// A string was not valid UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// A boolean byte was neither 0 nor 1.
    #[error("byte {found} is not a boolean")]
    InvalidBool {
        /// The byte found.
        found: u8,
    },
}

/// Kind tags, the low nibble of the header byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    LamportTimestamp = 1,
    LamportClock = 2,
    VectorClock = 3,
    Dot = 4,
    DottedVersionVector = 5,
    DvvSet = 6,
    HlcTimestamp = 7,
    Hlc = 8,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::LamportTimestamp => "LamportTimestamp",
            Kind::LamportClock => "LamportClock",
            Kind::VectorClock => "VectorClock",
            Kind::Dot => "Dot",
            Kind::DottedVersionVector => "DottedVersionVector",
            Kind::DvvSet => "DvvSet",
            Kind::HlcTimestamp => "HlcTimestamp",
            Kind::Hlc => "Hlc",
        }
    }

    const fn header(self) -> u8 {
        (FORMAT_VERSION << 4) | self as u8
    }
}

/// Starts an encoding of `kind` with its header byte.
pub(crate) fn begin(kind: Kind) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.push(kind.header());
    out
}

/// Decodes a whole `kind` value from `bytes`: checks the header, runs `body`,
/// and refuses trailing bytes.
pub(crate) fn decode_exact<T>(
    bytes: &[u8],
    kind: Kind,
    body: impl FnOnce(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let mut reader = Reader::new(bytes);
    let header = reader.read_u8()?;
    let version = header >> 4;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: version });
    }
    let found = header & 0x0f;
    if found != kind as u8 {
        return Err(DecodeError::WrongKind {
            expected: kind.name(),
            found,
        });
    }
    let value = body(&mut reader)?;
    match reader.remaining() {
        0 => Ok(value),
        count => Err(DecodeError::TrailingBytes { count }),
    }
}

/// A cursor over bytes being decoded; every read is bounds-checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, offset: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    /// Reads one byte.
    pub fn read_u8(&mut self) -> Result<u8, DecodeError> {
        let [byte] = self.read_array::<1>()?;
        Ok(byte)
    }

    /// Reads exactly `N` bytes.
    pub fn read_array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.read_bytes(N)?);
        Ok(out)
    }

    /// Reads exactly `len` bytes.
    pub fn read_bytes(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .offset
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(DecodeError::UnexpectedEnd {
                offset: self.bytes.len(),
            })?;
        let slice = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(slice)
    }

    /// Reads a minimal unsigned LEB128 varint of at most 128 bits.
    pub fn read_varint(&mut self) -> Result<u128, DecodeError> {
        let start = self.offset;
        let mut value: u128 = 0;
        let mut shift = 0u32;
        loop {
            let byte = self.read_u8()?;
            let payload = u128::from(byte & 0x7f);
            if shift >= 128 || (payload << shift) >> shift != payload {
                return Err(DecodeError::BadVarint { offset: start });
            }
            value |= payload << shift;
            if byte & 0x80 == 0 {
                // A final zero byte after others is a non-minimal encoding.
                if byte == 0 && shift > 0 {
                    return Err(DecodeError::BadVarint { offset: start });
                }
                return Ok(value);
            }
            shift += 7;
        }
    }

    /// Reads a varint that must fit in a `u64`.
    pub fn read_u64(&mut self) -> Result<u64, DecodeError> {
        let value = self.read_varint()?;
        u64::try_from(value).map_err(|_| DecodeError::OutOfRange {
            value,
            target: "u64",
            max: u64::MAX.into(),
        })
    }

    /// Reads a counter: a varint of at most [`MAX_COUNTER`].
    pub fn read_counter(&mut self) -> Result<u64, DecodeError> {
        let value = self.read_varint()?;
        u64::try_from(value)
            .ok()
            .filter(|&counter| counter <= MAX_COUNTER)
            .ok_or(DecodeError::OutOfRange {
                value,
                target: "counter",
                max: MAX_COUNTER.into(),
            })
    }

    /// Reads a length prefix and checks that at least `min_item_size * length`
    /// bytes remain, so a forged length can never trigger a huge allocation.
    pub fn read_len(&mut self, min_item_size: usize) -> Result<usize, DecodeError> {
        let length = self.read_varint()?;
        let remaining = self.remaining();
        usize::try_from(length)
            .ok()
            .filter(|&len| len.saturating_mul(min_item_size.max(1)) <= remaining)
            .ok_or(DecodeError::LengthTooLarge { length, remaining })
    }
}

/// Appends `value` as an unsigned LEB128 varint.
pub fn write_varint(out: &mut Vec<u8>, mut value: u128) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A value with a place in the compact binary encoding: actor ids and the
/// values a [`DvvSet`](crate::DvvSet) stores.
///
/// `decode` must accept exactly what `encode` writes and fail with a
/// [`DecodeError`] (never panic) on anything else.
pub trait Codec: Sized {
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one value written by [`Codec::encode`].
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

macro_rules! codec_for_uint {
    ($($ty:ty),*) => {$(
        impl Codec for $ty {
            fn encode(&self, out: &mut Vec<u8>) {
                write_varint(out, u128::from(*self));
            }
            fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
                let value = reader.read_varint()?;
                <$ty>::try_from(value).map_err(|_| DecodeError::OutOfRange {
                    value,
                    target: stringify!($ty),
                    max: <$ty>::MAX.into(),
                })
            }
        }
    )*};
}
codec_for_uint!(u8, u16, u32, u64, u128);

impl Codec for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match reader.read_u8()? {
            0 => Ok(false),
            1 => Ok(true),
            found => Err(DecodeError::InvalidBool { found }),
        }
    }
}

impl Codec for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        write_varint(out, self.len() as u128);
        out.extend_from_slice(self);
    }
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = reader.read_len(1)?;
        Ok(reader.read_bytes(len)?.to_vec())
    }
}

impl Codec for String {
    fn encode(&self, out: &mut Vec<u8>) {
        write_varint(out, self.len() as u128);
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = reader.read_len(1)?;
        let bytes = reader.read_bytes(len)?;
        core::str::from_utf8(bytes)
            .map(String::from)
            .map_err(|_| DecodeError::InvalidUtf8)
    }
}

impl<const N: usize> Codec for [u8; N] {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        reader.read_array::<N>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn varint_known_answers() {
        // LEB128 examples from the DWARF 5 specification, section 7.6.
        for (value, bytes) in [
            (2u128, vec![2u8]),
            (127, vec![127]),
            (128, vec![0x80, 1]),
            (129, vec![0x81, 1]),
            (130, vec![0x82, 1]),
            (12857, vec![0xb9, 0x64]),
        ] {
            let mut out = Vec::new();
            write_varint(&mut out, value);
            assert_eq!(out, bytes);
            assert_eq!(Reader::new(&bytes).read_varint(), Ok(value));
        }
    }

    #[test]
    fn varint_rejects_overlong_and_oversized() {
        // 0x80 0x00 encodes 0 in two bytes: not minimal.
        assert_eq!(
            Reader::new(&[0x80, 0x00]).read_varint(),
            Err(DecodeError::BadVarint { offset: 0 })
        );
        // 19 continuation bytes would need more than 128 bits.
        let too_long = [0xffu8; 19];
        assert!(matches!(
            Reader::new(&too_long).read_varint(),
            Err(DecodeError::BadVarint { .. } | DecodeError::UnexpectedEnd { .. })
        ));
        let mut max = Vec::new();
        write_varint(&mut max, u128::MAX);
        assert_eq!(max.len(), 19);
        assert_eq!(Reader::new(&max).read_varint(), Ok(u128::MAX));
        assert_eq!(
            Reader::new(&[0x80]).read_varint(),
            Err(DecodeError::UnexpectedEnd { offset: 1 })
        );
    }

    #[test]
    fn forged_length_is_refused_before_allocating() {
        let mut bytes = Vec::new();
        write_varint(&mut bytes, u64::MAX.into());
        assert!(matches!(
            Vec::<u8>::decode(&mut Reader::new(&bytes)),
            Err(DecodeError::LengthTooLarge { .. })
        ));
    }

    #[test]
    fn counters_above_the_bound_are_refused() {
        let mut bytes = Vec::new();
        write_varint(&mut bytes, u128::from(MAX_COUNTER) + 1);
        assert!(matches!(
            Reader::new(&bytes).read_counter(),
            Err(DecodeError::OutOfRange { .. })
        ));
    }
}
