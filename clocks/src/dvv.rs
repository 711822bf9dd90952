//! Dotted version vectors (Preguiça, Baquero, Almeida, Fonte, Gonçalves,
//! "Dotted Version Vectors: Logical Clocks for Optimistic Replication", 2010)
//! and the dotted version vector set a Dynamo-style store keeps per key.
//!
//! A plain version vector per value cannot tell two writes that went through
//! the same server apart, so Dynamo-style stores either lose concurrent writes
//! or grow one vector entry per client. A dotted version vector names each
//! write by its own dot on the server that took it, plus the context the
//! client had read: concurrent writes stay siblings, superseded ones go, with
//! one entry per server.

use alloc::vec::Vec;

use crate::dot::Dot;
use crate::encoding::{self, Codec, DecodeError, Kind};
use crate::vector::{Causality, VectorClock};

/// The version of one value: the event that wrote it (`dot`) and the causal
/// history the writer had seen (`past`). From Preguiça, Baquero, Almeida,
/// Fonte and Gonçalves, "Dotted Version Vectors: Logical Clocks for
/// Optimistic Replication" (2010).
///
/// Comparing two of them looks up one dot in one vector: `x` is before `y`
/// exactly when `y` has seen `x`'s dot.
///
/// ```
/// use quorate_clocks::{Causality, Dot, DottedVersionVector, VectorClock};
///
/// let first = DottedVersionVector::new(Dot::new("s1", 1), VectorClock::new());
/// let past: VectorClock<_> = [("s1", 1)].into_iter().collect();
/// let second = DottedVersionVector::new(Dot::new("s1", 2), past);
/// let sibling = DottedVersionVector::new(Dot::new("s1", 3), VectorClock::new());
/// assert_eq!(first.compare(&second), Causality::Before);
/// assert_eq!(second.compare(&sibling), Causality::Concurrent); // a conflict
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(bound(deserialize = "A: serde::Deserialize<'de> + Ord"))
)]
pub struct DottedVersionVector<A> {
    dot: Dot<A>,
    past: VectorClock<A>,
}

impl<A: Ord> DottedVersionVector<A> {
    /// The version written by event `dot` on top of history `past`.
    pub fn new(dot: Dot<A>, past: VectorClock<A>) -> Self {
        Self { dot, past }
    }

    /// The event that wrote this version.
    pub fn dot(&self) -> &Dot<A> {
        &self.dot
    }

    /// The history the writer had seen.
    pub fn past(&self) -> &VectorClock<A> {
        &self.past
    }

    /// True if event `dot` is in this version's history (its own dot included).
    pub fn contains(&self, dot: &Dot<A>) -> bool {
        self.dot == *dot || self.past.contains(dot)
    }

    /// True if this version has seen `other` (`self >= other`).
    pub fn descends(&self, other: &Self) -> bool {
        self.contains(&other.dot)
    }

    /// How this version relates to `other`. `Concurrent` means the two values
    /// are siblings in conflict.
    ///
    /// Two versions that each claim to have seen the other cannot come from
    /// one execution; they are reported as `Concurrent` so nothing is dropped.
    pub fn compare(&self, other: &Self) -> Causality {
        if self.dot == other.dot {
            return Causality::Equal;
        }
        match (self.contains(&other.dot), other.contains(&self.dot)) {
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            _ => Causality::Concurrent,
        }
    }
}

impl<A: Codec + Ord> DottedVersionVector<A> {
    /// The compact binary encoding (see [`encoding`](crate::encoding)).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = encoding::begin(Kind::DottedVersionVector);
        self.dot.encode_body(&mut out);
        self.past.encode_body(&mut out);
        out
    }

    /// Decodes [`DottedVersionVector::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        encoding::decode_exact(bytes, Kind::DottedVersionVector, |reader| {
            let dot = Dot::decode_body(reader)?;
            let past = VectorClock::decode_body(reader)?;
            Ok(Self { dot, past })
        })
    }
}

/// The values of one key in a Dynamo-style store and their causality: a
/// dotted version vector set.
///
/// Holds the key's causal context (every write this replica has seen) and the
/// sibling values still live, each named by the dot of the write that made it.
/// Siblings are by construction pairwise concurrent; more than one means a
/// conflict for the client to resolve.
///
/// The operations follow the names of Riak's `dvvset`:
/// - [`join`](DvvSet::join): the context a client gets on read;
/// - [`event`](DvvSet::event): a write that carries the context the client read,
///   replacing exactly the values that context covers;
/// - [`sync`](DvvSet::sync): anti-entropy between replicas of the key.
///
/// ```
/// use quorate_clocks::{DvvSet, VectorClock};
///
/// let mut key = DvvSet::new();
/// // Two clients write without reading: both values survive as siblings.
/// key.event(&VectorClock::new(), "s1", "red");
/// key.event(&VectorClock::new(), "s1", "blue");
/// assert!(key.is_conflict());
/// // A client reads both and writes a resolution with the context it read.
/// let read = key.join().clone();
/// key.event(&read, "s1", "purple");
/// assert_eq!(key.values().collect::<Vec<_>>(), [&"purple"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DvvSet<A, V> {
    context: VectorClock<A>,
    /// Sorted by dot; every dot is in `context`.
    siblings: Vec<(Dot<A>, V)>,
}

impl<A, V> Default for DvvSet<A, V> {
    fn default() -> Self {
        Self {
            context: VectorClock::new(),
            siblings: Vec::new(),
        }
    }
}

impl<A: Ord + Clone, V> DvvSet<A, V> {
    /// A key nobody has written.
    pub fn new() -> Self {
        Self::default()
    }

    /// The causal context of the key: hand it to a client with the values it
    /// reads, and take it back with the client's next write.
    pub fn join(&self) -> &VectorClock<A> {
        &self.context
    }

    /// The live values, in dot order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &V> {
        self.siblings.iter().map(|(_, value)| value)
    }

    /// The live values with the dots of the writes that made them.
    pub fn siblings(&self) -> impl ExactSizeIterator<Item = (&Dot<A>, &V)> {
        self.siblings.iter().map(|(dot, value)| (dot, value))
    }

    /// Number of live values.
    pub fn len(&self) -> usize {
        self.siblings.len()
    }

    /// True if no value is live (never written).
    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty()
    }

    /// True if concurrent writes left more than one value.
    pub fn is_conflict(&self) -> bool {
        self.siblings.len() > 1
    }

    /// A write of `value` coordinated by replica `actor`, by a client that
    /// had read `context` (empty for a blind write).
    ///
    /// Drops the siblings `context` covers, keeps the rest as concurrent, and
    /// returns the new value's version.
    pub fn event(
        &mut self,
        context: &VectorClock<A>,
        actor: A,
        value: V,
    ) -> DottedVersionVector<A> {
        self.siblings.retain(|(dot, _)| !context.contains(dot));
        self.context.merge(context);
        let counter = self.context.increment(actor.clone());
        let dot = Dot::new(actor, counter);
        // The new dot is the largest of its actor, but other actors sort after it.
        let at = self
            .siblings
            .partition_point(|(existing, _)| *existing < dot);
        self.siblings.insert(at, (dot.clone(), value));
        DottedVersionVector::new(dot, context.clone())
    }

    /// Replaces all siblings by `resolve(values)`, written by `actor` with
    /// the full context: the client-side conflict resolution, in one step.
    pub fn reconcile(
        &mut self,
        actor: A,
        resolve: impl FnOnce(Vec<V>) -> V,
    ) -> DottedVersionVector<A> {
        let context = self.context.clone();
        let values = core::mem::take(&mut self.siblings)
            .into_iter()
            .map(|(_, value)| value)
            .collect();
        self.event(&context, actor, resolve(values))
    }

    /// Merges another replica's state of the same key into this one.
    ///
    /// A sibling survives if both sides hold it, or if the side lacking it has
    /// never seen its write. Commutative, associative and idempotent.
    pub fn sync(&mut self, other: &Self)
    where
        V: Clone,
    {
        let mine = core::mem::take(&mut self.siblings);
        let mut merged = Vec::with_capacity(mine.len() + other.siblings.len());
        let mut theirs = other.siblings.iter().peekable();
        for (dot, value) in mine {
            while let Some((their_dot, their_value)) = theirs.next_if(|(d, _)| *d < dot) {
                if !self.context.contains(their_dot) {
                    merged.push((their_dot.clone(), their_value.clone()));
                }
            }
            let shared = theirs.next_if(|(d, _)| *d == dot).is_some();
            if shared || !other.context.contains(&dot) {
                merged.push((dot, value));
            }
        }
        for (their_dot, their_value) in theirs {
            if !self.context.contains(their_dot) {
                merged.push((their_dot.clone(), their_value.clone()));
            }
        }
        self.siblings = merged;
        self.context.merge(&other.context);
    }

    /// True if this replica has seen everything `other` has, so
    /// `self.sync(other)` would change nothing.
    pub fn descends(&self, other: &Self) -> bool {
        self.context.descends(&other.context)
            && self.siblings.iter().all(|(dot, _)| {
                !other.context.contains(dot)
                    || other.siblings.binary_search_by(|(d, _)| d.cmp(dot)).is_ok()
            })
    }

    /// How this replica's state of the key relates to `other`'s.
    pub fn compare(&self, other: &Self) -> Causality {
        match (self.descends(other), other.descends(self)) {
            (true, true) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (false, false) => Causality::Concurrent,
        }
    }
}

impl<A: Codec + Ord + Clone, V: Codec> DvvSet<A, V> {
    /// The compact binary encoding (see [`encoding`](crate::encoding)).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = encoding::begin(Kind::DvvSet);
        self.context.encode_body(&mut out);
        encoding::write_varint(&mut out, self.siblings.len() as u128);
        for (dot, value) in &self.siblings {
            dot.encode_body(&mut out);
            value.encode(&mut out);
        }
        out
    }

    /// Decodes [`DvvSet::to_bytes`] output, checking that siblings are sorted,
    /// distinct, and inside the context.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        encoding::decode_exact(bytes, Kind::DvvSet, |reader| {
            let context = VectorClock::decode_body(reader)?;
            let len = reader.read_len(1)?;
            let room = encoding::capacity_for::<(Dot<A>, V)>(len, reader.remaining());
            let mut siblings: Vec<(Dot<A>, V)> = Vec::with_capacity(room);
            for index in 0..len {
                let dot = Dot::decode_body(reader)?;
                if siblings.last().is_some_and(|(last, _)| *last >= dot) {
                    return Err(DecodeError::NotCanonical { index });
                }
                if !context.contains(&dot) {
                    return Err(DecodeError::DotOutsideContext { index });
                }
                siblings.push((dot, V::decode(reader)?));
            }
            Ok(Self { context, siblings })
        })
    }
}

#[cfg(feature = "serde")]
mod serde_impl {
    use super::{Dot, DvvSet, VectorClock};
    use alloc::vec::Vec;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(bound(deserialize = "A: Deserialize<'de> + Ord, V: Deserialize<'de>"))]
    struct Repr<A, V> {
        context: VectorClock<A>,
        siblings: Vec<(Dot<A>, V)>,
    }

    impl<A: Serialize + Clone, V: Serialize + Clone> Serialize for DvvSet<A, V> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            Repr {
                context: self.context.clone(),
                siblings: self.siblings.clone(),
            }
            .serialize(serializer)
        }
    }

    /// Refuses siblings out of order, duplicated, or outside the context.
    impl<'de, A, V> Deserialize<'de> for DvvSet<A, V>
    where
        A: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
    {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let Repr { context, siblings } = Repr::<A, V>::deserialize(deserializer)?;
            if siblings.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
                return Err(D::Error::custom("DvvSet siblings not strictly sorted"));
            }
            if siblings.iter().any(|(dot, _)| !context.contains(dot)) {
                return Err(D::Error::custom("DvvSet sibling outside its context"));
            }
            Ok(Self { context, siblings })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn ctx(entries: &[(&'static str, u64)]) -> VectorClock<&'static str> {
        entries.iter().copied().collect()
    }

    #[test]
    fn paper_example_two_clients_one_server() {
        // Figure 1 of the DVV paper, with a single server "a": two clients
        // write concurrently through the same server; a plain version vector
        // per server would lose one of the writes.
        let mut key = DvvSet::new();
        let v1 = key.event(&ctx(&[]), "a", "v1"); // client 1, blind write
        let v2 = key.event(&ctx(&[]), "a", "v2"); // client 2, blind write
        assert_eq!(v1.dot(), &Dot::new("a", 1));
        assert_eq!(v2.dot(), &Dot::new("a", 2));
        assert_eq!(v1.compare(&v2), Causality::Concurrent);
        assert_eq!(key.values().copied().collect::<Vec<_>>(), ["v1", "v2"]);
        // Client 1 read only v1 (context a:1) and overwrites it: v2 survives.
        let v3 = key.event(&ctx(&[("a", 1)]), "a", "v3");
        assert_eq!(v1.compare(&v3), Causality::Before);
        assert_eq!(v2.compare(&v3), Causality::Concurrent);
        assert_eq!(key.values().copied().collect::<Vec<_>>(), ["v2", "v3"]);
        assert!(key.is_conflict());
        let resolved = key.reconcile("a", |values| &*values.join("+").leak());
        assert_eq!(key.values().copied().collect::<Vec<_>>(), ["v2+v3"]);
        assert_eq!(v3.compare(&resolved), Causality::Before);
        assert_eq!(key.join(), &ctx(&[("a", 4)]));
    }

    #[test]
    fn sync_between_replicas() {
        let mut a = DvvSet::new();
        let mut b = DvvSet::new();
        a.event(&ctx(&[]), "a", 1u32);
        b.event(&ctx(&[]), "b", 2u32);
        assert_eq!(a.compare(&b), Causality::Concurrent);
        let mut ab = a.clone();
        ab.sync(&b);
        assert_eq!(ab.values().copied().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(ab.compare(&a), Causality::After);
        // b's client read both and overwrote them; a learns it by sync.
        let read = ab.join().clone();
        b.event(&read, "b", 3);
        a.sync(&b);
        assert_eq!(a.values().copied().collect::<Vec<_>>(), [3]);
        assert_eq!(a.compare(&b), Causality::Equal);
    }

    #[test]
    fn bytes_round_trip_and_validation() {
        let mut key: DvvSet<u64, alloc::string::String> = DvvSet::new();
        key.event(&VectorClock::new(), 1, "x".into());
        key.event(&VectorClock::new(), 2, "y".into());
        let bytes = key.to_bytes();
        assert_eq!(DvvSet::from_bytes(&bytes), Ok(key));
        // context {1:1}, one sibling at dot 1:2, outside the context.
        let forged = vec![0x16, 1, 1, 1, 1, 1, 2, 0];
        assert_eq!(
            DvvSet::<u64, Vec<u8>>::from_bytes(&forged),
            Err(DecodeError::DotOutsideContext { index: 0 })
        );
    }
}
