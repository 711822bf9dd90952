//! serde support: an [`Id`] is a number by default and accepts a decimal
//! string too; [`serde_as_string`](crate::serde_as_string) writes it as a string.

use core::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use crate::id::Id;
use crate::layout::{FieldOrder, Layout};
use crate::time::{TimeUnit, UnixMillis};

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.to_u64())
    }
}

impl<'de> Deserialize<'de> for Id {
    /// From a number, or from a decimal string in human-readable formats (what
    /// JavaScript clients send back).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_number_or_string(deserializer)
    }
}

/// A layout's serialized form; deserializing goes through [`Layout::new`] so
/// a configuration file cannot smuggle in an invalid layout.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Layout", deny_unknown_fields)]
struct LayoutFields {
    time_bits: u8,
    sequence_bits: u8,
    // `node_bits` before the field was renamed; still read.
    #[serde(alias = "node_bits")]
    worker_bits: u8,
    #[serde(default)]
    order: FieldOrder,
    #[serde(default)]
    time_unit: TimeUnit,
    epoch: UnixMillis,
    #[serde(default, skip_serializing_if = "is_zero")]
    process_bits: u8,
}

/// An unsplit worker field is left out, so such layouts serialize as before.
fn is_zero(bits: &u8) -> bool {
    *bits == 0
}

impl Serialize for Layout {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        LayoutFields {
            time_bits: self.time_bits(),
            sequence_bits: self.sequence_bits(),
            worker_bits: self.worker_bits(),
            order: self.order(),
            time_unit: self.time_unit(),
            epoch: self.epoch(),
            process_bits: self.process_bits(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Layout {
    /// Validated as [`Layout::new`] does; an invalid layout is an error.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fields = LayoutFields::deserialize(deserializer)?;
        Layout::new(
            fields.time_bits,
            fields.sequence_bits,
            fields.worker_bits,
            fields.epoch,
        )
        .and_then(|layout| {
            layout
                .with_order(fields.order)
                .with_time_unit(fields.time_unit)
                .with_process_bits(fields.process_bits)
        })
        .map_err(de::Error::custom)
    }
}

struct IdVisitor;

impl Visitor<'_> for IdVisitor {
    type Value = Id;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a 64-bit id as an unsigned integer or a decimal string")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
        Ok(Id::from_u64(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
        u64::try_from(v)
            .map(Id::from_u64)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
        v.parse().map_err(E::custom)
    }
}

fn deserialize_number_or_string<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Id, D::Error> {
    // Binary formats are not self-describing: ask for exactly a u64.
    if deserializer.is_human_readable() {
        deserializer.deserialize_any(IdVisitor)
    } else {
        deserializer.deserialize_u64(IdVisitor)
    }
}

/// `#[serde(with = "quorate_ids::serde_as_string")]`: an [`Id`] as a decimal
/// string, for JSON read by JavaScript, whose numbers are exact only up to 2^53.
/// Deserializing accepts a string, or in human-readable formats also a number.
///
/// ```
/// # #[cfg(feature = "serde")] {
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Order {
///     #[serde(with = "quorate_ids::serde_as_string")]
///     id: quorate_ids::Id,
/// }
/// # }
/// ```
pub mod serde_as_string {
    use serde::{Deserializer, Serializer};

    use crate::id::Id;

    /// Writes `id` as a decimal string.
    ///
    /// # Errors
    /// Those of the serializer.
    pub fn serialize<S: Serializer>(id: &Id, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(id)
    }

    /// Reads an id from a decimal string (or a number, in human-readable formats).
    ///
    /// # Errors
    /// When the input is neither, or does not fit in 64 bits.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Id, D::Error> {
        if deserializer.is_human_readable() {
            deserializer.deserialize_any(super::IdVisitor)
        } else {
            deserializer.deserialize_str(super::IdVisitor)
        }
    }
}
