//! Dots: the name of one event, an actor and its counter.

use alloc::vec::Vec;
use core::fmt;

use crate::encoding::{self, Codec, DecodeError, Kind, Reader};

/// One event: the `counter`-th event of `actor`.
///
/// Ordered by actor, then counter (a storage order, not a causal one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Dot<A> {
    /// The actor whose event this is.
    pub actor: A,
    /// The actor's event counter, starting at 1.
    pub counter: u64,
}

impl<A> Dot<A> {
    /// The `counter`-th event of `actor`.
    pub const fn new(actor: A, counter: u64) -> Self {
        Self { actor, counter }
    }
}

impl<A: fmt::Display> fmt::Display for Dot<A> {
    /// Formats as `actor:counter`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.actor, self.counter)
    }
}

impl<A: Codec> Dot<A> {
    /// The compact binary encoding (see [`encoding`](crate::encoding)).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = encoding::begin(Kind::Dot);
        self.encode_body(&mut out);
        out
    }

    /// Decodes [`Dot::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        encoding::decode_exact(bytes, Kind::Dot, Self::decode_body)
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        self.actor.encode(out);
        encoding::write_varint(out, self.counter.into());
    }

    /// Reads an actor and a nonzero counter (dots name events, which start at 1).
    pub(crate) fn decode_body(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let actor = A::decode(reader)?;
        let counter = reader.read_counter()?;
        if counter == 0 {
            return Err(DecodeError::ZeroCounter { index: 0 });
        }
        Ok(Self { actor, counter })
    }
}
