//! The compact, versioned binary encoding shared by every clock.
//!
//! Every encoded clock starts with one header byte: the format version in the
//! high nibble and the kind of value in the low nibble, so a stamp can never be
//! decoded as a vector clock by mistake and a future format can be told apart.
//! Integers up to 64 bits are the family's canonical unsigned LEB128 varint
//! (the varint block below is the same code as in quorate-merkle's
//! `codec.rs`): only the shortest encoding of a `u64` decodes, and values
//! above `u64::MAX` are refused. HLC stamps are 8 bytes big-endian, because
//! their high bits are always set, and `u128` values 16 bytes big-endian.
//! The encoding is canonical:
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
    /// A varint was longer than needed (padded with a final zero byte):
    /// every value has exactly one accepted encoding.
    #[error("varint at byte {offset} is not in its shortest form")]
    BadVarint {
        /// Offset of the varint's first byte.
        offset: usize,
    },
    /// A varint above the limit, `u64::MAX`.
    #[error("varint at byte {offset} exceeds the limit u64::MAX")]
    VarintOverflow {
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

    /// Reads a canonical unsigned LEB128 varint (shortest form, at most
    /// `u64::MAX`).
    pub fn read_varint(&mut self) -> Result<u64, DecodeError> {
        let start = self.offset;
        match decode_varint(self.bytes.get(start..).unwrap_or_default()) {
            Ok((value, used)) => {
                self.offset += used;
                Ok(value)
            }
            Err(VarintError::Truncated) => Err(DecodeError::UnexpectedEnd {
                offset: self.bytes.len(),
            }),
            Err(VarintError::Overlong) => Err(DecodeError::BadVarint { offset: start }),
            Err(VarintError::Overflow) => Err(DecodeError::VarintOverflow { offset: start }),
        }
    }

    /// Reads a varint that must fit in a `u64`: the same as
    /// [`read_varint`](Self::read_varint).
    pub fn read_u64(&mut self) -> Result<u64, DecodeError> {
        self.read_varint()
    }

    /// Reads a counter: a varint of at most [`MAX_COUNTER`].
    pub fn read_counter(&mut self) -> Result<u64, DecodeError> {
        let value = self.read_varint()?;
        if value > MAX_COUNTER {
            return Err(DecodeError::OutOfRange {
                value: value.into(),
                target: "counter",
                max: MAX_COUNTER.into(),
            });
        }
        Ok(value)
    }

    /// Reads a length prefix and checks that at least `min_item_size * length`
    /// bytes remain, so a forged length can never trigger a huge allocation.
    pub fn read_len(&mut self, min_item_size: usize) -> Result<usize, DecodeError> {
        let length = self.read_varint()?;
        let remaining = self.remaining();
        usize::try_from(length)
            .ok()
            .filter(|&len| len.saturating_mul(min_item_size.max(1)) <= remaining)
            .ok_or(DecodeError::LengthTooLarge {
                length: length.into(),
                remaining,
            })
    }
}

/// Room for how many of `len` decoded items of type `T` to reserve before
/// any is read: at most 8 bytes of memory per input byte left. A length
/// only has to fit the input at one byte per item ([`Reader::read_len`]),
/// but an item can take far more memory than that (a `[u8; 512]` actor),
/// so reserving `len` of them would let a forged length allocate hundreds
/// of times the input; past this, the vector grows as items are decoded.
pub(crate) fn capacity_for<T>(len: usize, remaining: usize) -> usize {
    len.min(remaining.saturating_mul(8) / core::mem::size_of::<T>().max(1))
}

/// Appends `value` as the canonical unsigned LEB128 varint.
///
/// Readers accept at most `u64::MAX`; a larger `value` is written in the
/// same LEB128 form but every reader refuses it as
/// [`DecodeError::VarintOverflow`]. (The parameter is `u128` so that
/// existing callers keep compiling; pass 64-bit counts and counters.)
pub fn write_varint(out: &mut Vec<u8>, value: u128) {
    match u64::try_from(value) {
        Ok(value) => encode_varint(out, value),
        Err(_) => {
            let mut value = value;
            while value >= 0x80 {
                out.push((value as u8 & 0x7f) | 0x80);
                value >>= 7;
            }
            out.push(value as u8);
        }
    }
}

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
                encode_varint(out, u64::from(*self));
            }
            fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
                let value = reader.read_varint()?;
                <$ty>::try_from(value).map_err(|_| DecodeError::OutOfRange {
                    value: value.into(),
                    target: stringify!($ty),
                    max: <$ty>::MAX.into(),
                })
            }
        }
    )*};
}
codec_for_uint!(u8, u16, u32);

impl Codec for u64 {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_varint(out, *self);
    }
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        reader.read_varint()
    }
}

/// `u128` values (UUID-like actor ids) are 16 bytes big-endian: the varint
/// carries at most 64 bits.
impl Codec for u128 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        reader.read_array::<16>().map(u128::from_be_bytes)
    }
}

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
            (2u64, vec![2u8]),
            (127, vec![127]),
            (128, vec![0x80, 1]),
            (129, vec![0x81, 1]),
            (130, vec![0x82, 1]),
            (12857, vec![0xb9, 0x64]),
        ] {
            let mut out = Vec::new();
            write_varint(&mut out, value.into());
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
        // The offset names where the padded varint starts.
        let mut r = Reader::new(&[7, 0xff, 0x80, 0x00]);
        assert_eq!(r.read_varint(), Ok(7));
        assert_eq!(r.read_varint(), Err(DecodeError::BadVarint { offset: 1 }));
        // u64::MAX is the largest value; 2^64 and anything longer overflow.
        let mut max = Vec::new();
        write_varint(&mut max, u64::MAX.into());
        assert_eq!(max.len(), 10);
        assert_eq!(Reader::new(&max).read_varint(), Ok(u64::MAX));
        let mut over = Vec::new();
        write_varint(&mut over, u128::from(u64::MAX) + 1);
        assert_eq!(
            Reader::new(&over).read_varint(),
            Err(DecodeError::VarintOverflow { offset: 0 })
        );
        assert_eq!(
            Reader::new(&[0xffu8; 19]).read_varint(),
            Err(DecodeError::VarintOverflow { offset: 0 })
        );
        assert_eq!(
            Reader::new(&[0x80]).read_varint(),
            Err(DecodeError::UnexpectedEnd { offset: 1 })
        );
    }

    #[test]
    fn u128_values_round_trip_in_sixteen_bytes() {
        for value in [0u128, 1, u128::from(u64::MAX) + 1, u128::MAX] {
            let mut out = Vec::new();
            value.encode(&mut out);
            assert_eq!(out, value.to_be_bytes());
            assert_eq!(u128::decode(&mut Reader::new(&out)), Ok(value));
        }
    }

    proptest::proptest! {
        #[test]
        fn varint_round_trips(v: u64) {
            let mut out = Vec::new();
            write_varint(&mut out, v.into());
            let mut r = Reader::new(&out);
            proptest::prop_assert_eq!(r.read_varint(), Ok(v));
            proptest::prop_assert_eq!(r.remaining(), 0);
        }

        /// Every encoding has exactly one decoding: whatever decodes from
        /// random bytes re-encodes to exactly the bytes it was read from.
        #[test]
        fn a_decoded_varint_re_encodes_to_its_bytes(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
            high in proptest::collection::vec(0x80u8..=0xff, 0..11),
            last: u8,
        ) {
            // Random bytes, and runs of continuation bytes with a random end
            // (most random bytes end a varint after one byte).
            for input in [bytes.clone(), [&high[..], &[last]].concat()] {
                let mut r = Reader::new(&input);
                if let Ok(v) = r.read_varint() {
                    let used = input.len() - r.remaining();
                    let mut again = Vec::new();
                    write_varint(&mut again, v.into());
                    proptest::prop_assert_eq!(&again[..], &input[..used]);
                }
            }
        }
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
