//! The ID itself, its parts, and its text forms.

use core::fmt;
use core::str::FromStr;

use crate::base32::Base32;
use crate::error::ParseIdError;
use crate::layout::Layout;
use crate::time::UnixMillis;

/// A 64-bit unique ID: time on top, then sequence and worker in the order the
/// [`Layout`] says.
///
/// IDs order like their numbers, which is by time first (to the tick).
/// `Display`/`FromStr` use decimal; [`Id::to_base32`] gives a 13-character form
/// that sorts as text like the number does. With the `serde` feature an `Id`
/// serializes as a number; use `serde_as_string` for
/// JavaScript clients, whose numbers lose precision past 2^53.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(u64);

impl Id {
    /// An ID from its raw bits (for example read back from a database).
    #[must_use]
    pub const fn from_u64(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw bits.
    #[must_use]
    pub const fn to_u64(self) -> u64 {
        self.0
    }

    /// Splits the ID into time, sequence and worker under `layout`.
    #[must_use]
    pub const fn decompose(self, layout: Layout) -> Parts {
        layout.decompose(self)
    }

    /// The wall-clock time at the start of the tick the ID was minted in.
    #[must_use]
    pub const fn timestamp(self, layout: Layout) -> UnixMillis {
        layout.timestamp(self)
    }

    /// The 13-character Crockford base32 form, fixed width, so text order is
    /// number order.
    #[must_use]
    pub const fn to_base32(self) -> Base32 {
        Base32::encode(self.0)
    }

    /// Parses the base32 form (13 characters; case-insensitive; `I`/`L` read as
    /// `1` and `O` as `0`, as Crockford's alphabet specifies).
    ///
    /// # Errors
    /// A [`ParseIdError`] saying what was wrong; never panics.
    pub fn from_base32(text: &str) -> Result<Self, ParseIdError> {
        Base32::decode(text).map(Self)
    }
}

impl From<Id> for u64 {
    fn from(id: Id) -> Self {
        id.0
    }
}

impl fmt::Display for Id {
    /// Decimal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for Id {
    type Err = ParseIdError;

    /// Decimal digits only (no sign, no spaces).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(ParseIdError::Empty);
        }
        let mut value: u64 = 0;
        for (index, character) in text.char_indices() {
            let Some(digit) = character.to_digit(10) else {
                return Err(ParseIdError::InvalidCharacter { character, index });
            };
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(digit)))
                .ok_or(ParseIdError::Overflow)?;
        }
        Ok(Self(value))
    }
}

/// The id of the worker minting IDs; unique among the workers sharing a layout and
/// epoch. How a cluster assigns them is described in the crate docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct WorkerId(u64);

impl WorkerId {
    /// A worker id; checked against a layout when a generator is built.
    #[must_use]
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    /// The raw value.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// An ID's fields, as [`Layout::decompose`] splits them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Parts {
    /// The time field: ticks of the layout's [`TimeUnit`](crate::TimeUnit)
    /// since its epoch, not milliseconds (a Sonyflake tick is 10 ms). Turn it
    /// into wall-clock time with [`Layout::tick_start`].
    pub ticks: u64,
    /// Position within the tick on the minting worker.
    pub sequence: u64,
    /// The minting worker (serialized as `worker`; `node`, its old name, is
    /// still read).
    #[cfg_attr(feature = "serde", serde(alias = "node"))]
    pub worker: WorkerId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_round_trips_and_rejects_junk() {
        let id = Id::from_u64(175_928_847_299_117_063);
        assert_eq!(id.to_string(), "175928847299117063");
        assert_eq!("175928847299117063".parse::<Id>(), Ok(id));
        assert_eq!(
            "18446744073709551615".parse::<Id>(),
            Ok(Id::from_u64(u64::MAX))
        );
        assert_eq!(
            "18446744073709551616".parse::<Id>(),
            Err(ParseIdError::Overflow)
        );
        assert_eq!("".parse::<Id>(), Err(ParseIdError::Empty));
        assert_eq!(
            "+1".parse::<Id>(),
            Err(ParseIdError::InvalidCharacter {
                character: '+',
                index: 0
            })
        );
        assert_eq!(
            "12é".parse::<Id>(),
            Err(ParseIdError::InvalidCharacter {
                character: 'é',
                index: 2
            })
        );
        // Non-ASCII digits are not decimal digits here.
        assert!("١٢".parse::<Id>().is_err());
    }

    extern crate std;
    use std::string::ToString;
}
