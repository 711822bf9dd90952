//! Vector clocks: one counter per actor, capturing happened-before exactly.

use alloc::vec::Vec;
use core::cmp::Ordering;
use core::fmt;
use core::iter::FusedIterator;

use crate::dot::Dot;
use crate::encoding::{self, Codec, DecodeError, Kind};

/// How two causal histories relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Causality {
    /// The left history happened before the right one (strictly contained in it).
    Before,
    /// The left history happened after the right one (strictly contains it).
    After,
    /// Both histories are the same.
    Equal,
    /// Neither contains the other: the histories are concurrent and, for
    /// versions of one value, in conflict.
    Concurrent,
}

impl Causality {
    /// The same relation seen from the other side.
    pub const fn reverse(self) -> Self {
        match self {
            Causality::Before => Causality::After,
            Causality::After => Causality::Before,
            other => other,
        }
    }

    /// The relation as a partial order (`None` for concurrent).
    pub const fn to_ordering(self) -> Option<Ordering> {
        match self {
            Causality::Before => Some(Ordering::Less),
            Causality::After => Some(Ordering::Greater),
            Causality::Equal => Some(Ordering::Equal),
            Causality::Concurrent => None,
        }
    }

    /// Builds the relation from "left has something right lacks" and the reverse.
    const fn from_flags(left_ahead: bool, right_ahead: bool) -> Self {
        match (left_ahead, right_ahead) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (true, true) => Causality::Concurrent,
        }
    }
}

/// A vector clock over actors of type `A`.
///
/// Stored as one vector of `(actor, counter)` entries sorted by actor, so a
/// clone is one allocation and one copy. Two clocks over the same actors (the
/// common case) compare in one pass over blocks of entries, branch-free inside a
/// block, that stops at the first block proving the clocks concurrent, and
/// merge in place in one pass. Actors absent from the clock have counter 0; the
/// clock never stores a zero, so equal histories are equal values (`Eq`,
/// `Hash`).
///
/// ```
/// use quorate_clocks::{Causality, VectorClock};
///
/// let mut a = VectorClock::new();
/// let mut b = VectorClock::new();
/// a.increment("a");
/// b.increment("b");
/// assert_eq!(a.compare(&b), Causality::Concurrent);
/// b.merge(&a);
/// b.increment("b");
/// assert_eq!(a.compare(&b), Causality::Before);
/// assert!(b.dominates(&a));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VectorClock<A> {
    entries: Vec<(A, u64)>,
}

impl<A> Default for VectorClock<A> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

/// Entries compared or merged per branch-free step: large enough to
/// vectorize, small enough that an early answer comes early.
const BLOCK: usize = 8;

impl<A> VectorClock<A> {
    /// The empty clock (every counter 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty clock with room for `actors` entries.
    pub fn with_capacity(actors: usize) -> Self {
        Self {
            entries: Vec::with_capacity(actors),
        }
    }

    /// Number of actors with a nonzero counter.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if every counter is 0.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The actors with a nonzero counter, ascending.
    pub fn actors(&self) -> impl ExactSizeIterator<Item = &A> + DoubleEndedIterator + '_ {
        self.entries.iter().map(|(actor, _)| actor)
    }

    /// The counters, in the order of [`VectorClock::actors`].
    pub fn counters(&self) -> impl ExactSizeIterator<Item = u64> + DoubleEndedIterator + '_ {
        self.entries.iter().map(|&(_, counter)| counter)
    }

    /// `(actor, counter)` entries in ascending actor order.
    pub fn iter(&self) -> Iter<'_, A> {
        Iter {
            entries: self.entries.iter(),
        }
    }

    /// Keeps only the entries for which `keep(actor, counter)` is true.
    ///
    /// This is how retired actors are pruned. It is only safe once every
    /// replica agrees the actor is retired and every clock that will ever be
    /// compared has seen all of its events: prune the same actors everywhere,
    /// or comparisons between pruned and unpruned clocks go wrong.
    pub fn retain(&mut self, mut keep: impl FnMut(&A, u64) -> bool) {
        self.entries
            .retain(|(actor, counter)| keep(actor, *counter));
    }

    /// How `self` relates to `other` causally. Stops as soon as the answer
    /// is known: two clocks proven concurrent in their first entries cost a
    /// few entries, not the whole clock.
    pub fn compare(&self, other: &Self) -> Causality
    where
        A: Ord,
    {
        let (ahead, behind) = scan(&self.entries, &other.entries, true);
        Causality::from_flags(ahead, behind)
    }

    /// True if `self` has seen every event `other` has (`self >= other`).
    /// Stops at the first entry of `other` that `self` lacks.
    pub fn descends(&self, other: &Self) -> bool
    where
        A: Ord,
    {
        if other.len() > self.len() {
            return false;
        }
        !scan(&self.entries, &other.entries, false).1
    }

    /// True if `self` descends `other` and has seen more (`self > other`).
    pub fn dominates(&self, other: &Self) -> bool
    where
        A: Ord,
    {
        self.compare(other) == Causality::After
    }

    /// True if neither clock descends the other.
    pub fn concurrent(&self, other: &Self) -> bool
    where
        A: Ord,
    {
        self.compare(other) == Causality::Concurrent
    }
}

/// Whether `mine` has an entry above `theirs` and whether `theirs` has one
/// above `mine`. Returns as soon as both are known, or, when `want_ahead` is
/// false, as soon as the second is.
fn scan<A: Ord>(mine: &[(A, u64)], theirs: &[(A, u64)], want_ahead: bool) -> (bool, bool) {
    let (mut ahead, mut behind) = (false, false);
    // Blocks over the same actors: one branch per block.
    let mut start = 0;
    for (a, b) in mine.chunks_exact(BLOCK).zip(theirs.chunks_exact(BLOCK)) {
        if !same_actors(a, b) {
            break;
        }
        let (up, down) = compare_block(a, b);
        ahead |= up;
        behind |= down;
        start += BLOCK;
        if behind && (ahead || !want_ahead) {
            return (ahead, behind);
        }
    }
    let (mut i, mut j) = (start, start);
    while let (Some((x, cx)), Some((y, cy))) = (mine.get(i), theirs.get(j)) {
        match x.cmp(y) {
            Ordering::Less => {
                ahead = true;
                i += 1;
            }
            Ordering::Greater => {
                behind = true;
                j += 1;
            }
            Ordering::Equal => {
                ahead |= cx > cy;
                behind |= cx < cy;
                i += 1;
                j += 1;
            }
        }
        if behind && (ahead || !want_ahead) {
            return (ahead, behind);
        }
    }
    ahead |= i < mine.len();
    behind |= j < theirs.len();
    (ahead, behind)
}

/// True if two blocks hold the same actors, without a branch per entry.
#[inline]
fn same_actors<A: Eq>(a: &[(A, u64)], b: &[(A, u64)]) -> bool {
    a.iter()
        .zip(b)
        .fold(true, |same, (x, y)| same & (x.0 == y.0))
}

/// Whether some counter of `mine` is above the matching one of `theirs`, and
/// whether some is below (same actors assumed).
#[inline]
fn compare_block<A>(mine: &[(A, u64)], theirs: &[(A, u64)]) -> (bool, bool) {
    // For counters below 2^63, `theirs - mine` (wrapping) has its top bit set
    // exactly when `mine > theirs`. Subtraction and OR are the only
    // operations, so the block vectorizes even on baseline x86-64 SSE2, which
    // has no unsigned 64-bit compare. Counters at or above 2^63 (never
    // accepted from outside, see MAX_COUNTER) take the plain comparison.
    let (mut up, mut down, mut high) = (0u64, 0u64, 0u64);
    for ((_, a), (_, b)) in mine.iter().zip(theirs) {
        up |= b.wrapping_sub(*a);
        down |= a.wrapping_sub(*b);
        high |= a | b;
    }
    if high >> 63 == 0 {
        return (up >> 63 != 0, down >> 63 != 0);
    }
    let pairs = || mine.iter().zip(theirs);
    (
        pairs().any(|((_, a), (_, b))| a > b),
        pairs().any(|((_, a), (_, b))| a < b),
    )
}

impl<A: Ord> VectorClock<A> {
    fn position(&self, actor: &A) -> Result<usize, usize> {
        // Linear search beats binary search on the short vectors clocks
        // usually are, and keeps the same answer.
        if self.entries.len() <= 16 {
            for (index, (candidate, _)) in self.entries.iter().enumerate() {
                match candidate.cmp(actor) {
                    Ordering::Less => continue,
                    Ordering::Equal => return Ok(index),
                    Ordering::Greater => return Err(index),
                }
            }
            return Err(self.entries.len());
        }
        self.entries
            .binary_search_by(|(candidate, _)| candidate.cmp(actor))
    }

    /// The counter of `actor` (0 if absent).
    pub fn get(&self, actor: &A) -> u64 {
        match self.position(actor) {
            Ok(index) => self.entries.get(index).map_or(0, |(_, counter)| *counter),
            Err(_) => 0,
        }
    }

    /// Records a new event by `actor` and returns its counter.
    ///
    /// Counters from outside are capped at
    /// [`MAX_COUNTER`](crate::encoding::MAX_COUNTER) when decoded, so this
    /// cannot overflow; an in-memory counter of `u64::MAX` saturates.
    pub fn increment(&mut self, actor: A) -> u64 {
        match self.position(&actor) {
            Ok(index) => match self.entries.get_mut(index) {
                Some((_, counter)) => {
                    *counter = counter.saturating_add(1);
                    *counter
                }
                None => 0,
            },
            Err(index) => {
                self.entries.insert(index, (actor, 1));
                1
            }
        }
    }

    /// Raises `actor`'s counter to at least `counter` (a no-op if already there).
    pub fn observe(&mut self, actor: A, counter: u64) {
        if counter == 0 {
            return;
        }
        match self.position(&actor) {
            Ok(index) => {
                if let Some((_, current)) = self.entries.get_mut(index) {
                    *current = (*current).max(counter);
                }
            }
            Err(index) => self.entries.insert(index, (actor, counter)),
        }
    }

    /// Raises the clock to include `dot`.
    pub fn apply(&mut self, dot: Dot<A>) {
        self.observe(dot.actor, dot.counter);
    }

    /// True if the event `dot` is part of this history.
    pub fn contains(&self, dot: &Dot<A>) -> bool {
        dot.counter <= self.get(&dot.actor)
    }

    /// The latest event of `actor` in this history, as a dot.
    pub fn dot(&self, actor: A) -> Dot<A> {
        let counter = self.get(&actor);
        Dot::new(actor, counter)
    }

    /// Removes `actor` (a retired replica) and returns its counter.
    /// See [`VectorClock::retain`] for when pruning is safe.
    pub fn remove(&mut self, actor: &A) -> Option<u64> {
        let index = self.position(actor).ok()?;
        Some(self.entries.remove(index).1)
    }

    /// Merges `other` into `self` (the join, entrywise max): afterwards `self`
    /// descends both inputs and nothing else.
    ///
    /// In place when `other`'s actors are among `self`'s (no allocation);
    /// otherwise the merged entries are written once into a vector of the
    /// final size, which becomes `self`'s.
    pub fn merge(&mut self, other: &Self)
    where
        A: Clone,
    {
        let missing = self.merge_shared(other);
        if missing != 0 {
            self.merge_union(other, missing);
        }
    }

    /// Raises the counters of the actors both clocks have and returns how
    /// many of `other`'s actors `self` lacks.
    fn merge_shared(&mut self, other: &Self) -> usize {
        // Same actors, entry by entry: one predictable branch and a `max`.
        let mut start = 0;
        for ((mine, counter), (theirs, their_counter)) in
            self.entries.iter_mut().zip(&other.entries)
        {
            if mine != theirs {
                break;
            }
            *counter = (*counter).max(*their_counter);
            start += 1;
        }
        let (mut i, mut j, mut missing) = (start, start, 0);
        while let (Some((mine, counter)), Some((theirs, their_counter))) =
            (self.entries.get_mut(i), other.entries.get(j))
        {
            match (*mine).cmp(theirs) {
                Ordering::Less => i += 1,
                Ordering::Greater => {
                    missing += 1;
                    j += 1;
                }
                Ordering::Equal => {
                    *counter = (*counter).max(*their_counter);
                    i += 1;
                    j += 1;
                }
            }
        }
        missing + other.len().saturating_sub(j)
    }

    /// Adds `other`'s actors that `self` lacks (`missing` of them); shared
    /// counters are already raised.
    fn merge_union(&mut self, other: &Self, missing: usize)
    where
        A: Clone,
    {
        let mut merged = Vec::with_capacity(self.len() + missing);
        let mut mine = core::mem::take(&mut self.entries).into_iter().peekable();
        let mut theirs = other.entries.iter().peekable();
        loop {
            let order = match (mine.peek(), theirs.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((a, _)), Some((b, _))) => a.cmp(b),
            };
            match order {
                Ordering::Less => merged.extend(mine.next()),
                Ordering::Greater => merged.extend(theirs.next().cloned()),
                Ordering::Equal => {
                    merged.extend(mine.next());
                    theirs.next();
                }
            }
        }
        self.entries = merged;
    }

    /// The join of two clocks as a new clock.
    pub fn merged(&self, other: &Self) -> Self
    where
        A: Clone,
    {
        let mut out = self.clone();
        out.merge(other);
        out
    }

    /// Lowers `self` to the meet (entrywise min) with `other`: the history
    /// both have seen. Useful for finding causally stable events.
    pub fn meet(&mut self, other: &Self) {
        let mut j = 0;
        for (actor, counter) in &mut self.entries {
            while other
                .entries
                .get(j)
                .is_some_and(|(theirs, _)| theirs < actor)
            {
                j += 1;
            }
            *counter = match other.entries.get(j) {
                Some((theirs, their_counter)) if theirs == actor => (*counter).min(*their_counter),
                _ => 0,
            };
        }
        self.entries.retain(|(_, counter)| *counter != 0);
    }
}

impl<A: Ord> PartialOrd for VectorClock<A> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.compare(other).to_ordering()
    }
}

impl<A: fmt::Debug> fmt::Debug for VectorClock<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<A: fmt::Display> fmt::Display for VectorClock<A> {
    /// Formats as `{a:1, b:2}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (index, (actor, counter)) in self.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{actor}:{counter}")?;
        }
        f.write_str("}")
    }
}

impl<A: Ord> FromIterator<(A, u64)> for VectorClock<A> {
    /// Builds the smallest clock containing every `(actor, counter)` given.
    fn from_iter<I: IntoIterator<Item = (A, u64)>>(entries: I) -> Self {
        let mut clock = Self::new();
        clock.extend(entries);
        clock
    }
}

impl<A: Ord> Extend<(A, u64)> for VectorClock<A> {
    fn extend<I: IntoIterator<Item = (A, u64)>>(&mut self, entries: I) {
        for (actor, counter) in entries {
            self.observe(actor, counter);
        }
    }
}

impl<A: Ord> FromIterator<Dot<A>> for VectorClock<A> {
    fn from_iter<I: IntoIterator<Item = Dot<A>>>(dots: I) -> Self {
        dots.into_iter()
            .map(|dot| (dot.actor, dot.counter))
            .collect()
    }
}

/// Borrowing iterator over `(actor, counter)` entries, ascending by actor.
#[derive(Debug, Clone)]
pub struct Iter<'a, A> {
    entries: core::slice::Iter<'a, (A, u64)>,
}

impl<'a, A> Iterator for Iter<'a, A> {
    type Item = (&'a A, u64);

    fn next(&mut self) -> Option<Self::Item> {
        self.entries
            .next()
            .map(|(actor, counter)| (actor, *counter))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl<A> DoubleEndedIterator for Iter<'_, A> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.entries
            .next_back()
            .map(|(actor, counter)| (actor, *counter))
    }
}

impl<A> ExactSizeIterator for Iter<'_, A> {}
impl<A> FusedIterator for Iter<'_, A> {}

impl<'a, A> IntoIterator for &'a VectorClock<A> {
    type Item = (&'a A, u64);
    type IntoIter = Iter<'a, A>;
    fn into_iter(self) -> Iter<'a, A> {
        self.iter()
    }
}

/// Owning iterator over `(actor, counter)` entries, ascending by actor.
#[derive(Debug)]
pub struct IntoIter<A> {
    inner: alloc::vec::IntoIter<(A, u64)>,
}

impl<A> Iterator for IntoIter<A> {
    type Item = (A, u64);
    fn next(&mut self) -> Option<(A, u64)> {
        self.inner.next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<A> ExactSizeIterator for IntoIter<A> {}
impl<A> FusedIterator for IntoIter<A> {}

impl<A> IntoIterator for VectorClock<A> {
    type Item = (A, u64);
    type IntoIter = IntoIter<A>;
    fn into_iter(self) -> IntoIter<A> {
        IntoIter {
            inner: self.entries.into_iter(),
        }
    }
}

impl<A: Codec + Ord> VectorClock<A> {
    /// The compact binary encoding (see [`encoding`](crate::encoding)).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = encoding::begin(Kind::VectorClock);
        self.encode_body(&mut out);
        out
    }

    /// Decodes [`VectorClock::to_bytes`] output, refusing anything that is not
    /// the canonical encoding of a clock.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        encoding::decode_exact(bytes, Kind::VectorClock, Self::decode_body)
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        encoding::write_varint(out, self.len() as u128);
        for (actor, counter) in self.iter() {
            actor.encode(out);
            encoding::write_varint(out, counter.into());
        }
    }

    pub(crate) fn decode_body(reader: &mut encoding::Reader<'_>) -> Result<Self, DecodeError> {
        // Each entry takes at least its counter's byte.
        let len = reader.read_len(1)?;
        let mut clock =
            Self::with_capacity(encoding::capacity_for::<(A, u64)>(len, reader.remaining()));
        for index in 0..len {
            let actor = A::decode(reader)?;
            let counter = reader.read_counter()?;
            if counter == 0 {
                return Err(DecodeError::ZeroCounter { index });
            }
            if clock.entries.last().is_some_and(|(last, _)| *last >= actor) {
                return Err(DecodeError::NotCanonical { index });
            }
            clock.entries.push((actor, counter));
        }
        Ok(clock)
    }
}

#[cfg(feature = "serde")]
mod serde_impl {
    use super::VectorClock;
    use crate::encoding::MAX_COUNTER;
    use alloc::vec::Vec;
    use serde::de::Error as _;
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Serialized as a sequence of `(actor, counter)` pairs in actor order.
    impl<A: Serialize> Serialize for VectorClock<A> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut seq = serializer.serialize_seq(Some(self.len()))?;
            for entry in self.iter() {
                seq.serialize_element(&entry)?;
            }
            seq.end()
        }
    }

    /// Accepts pairs in any order; refuses duplicate actors and counters
    /// above [`MAX_COUNTER`]; drops zero counters.
    impl<'de, A: Deserialize<'de> + Ord> Deserialize<'de> for VectorClock<A> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let mut entries = Vec::<(A, u64)>::deserialize(deserializer)?;
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            if entries.windows(2).any(|pair| pair[0].0 == pair[1].0) {
                return Err(D::Error::custom("duplicate actor in vector clock"));
            }
            if let Some((_, counter)) = entries.iter().find(|(_, c)| *c > MAX_COUNTER) {
                return Err(D::Error::custom(format_args!(
                    "counter {counter} above the accepted maximum {MAX_COUNTER}"
                )));
            }
            Ok(entries.into_iter().filter(|(_, c)| *c != 0).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn clock(entries: &[(u64, u64)]) -> VectorClock<u64> {
        entries.iter().copied().collect()
    }

    #[test]
    fn compare_by_hand() {
        let a = clock(&[(1, 2), (2, 1)]);
        let b = clock(&[(1, 2), (2, 3)]);
        let c = clock(&[(1, 3)]);
        assert_eq!(a.compare(&b), Causality::Before);
        assert_eq!(b.compare(&a), Causality::After);
        assert_eq!(a.compare(&a.clone()), Causality::Equal);
        // c has more of actor 1, less of actor 2.
        assert_eq!(a.compare(&c), Causality::Concurrent);
        assert_eq!(VectorClock::new().compare(&a), Causality::Before);
        assert!(b.dominates(&a) && b.descends(&a) && a.descends(&a));
        assert!(!a.dominates(&a) && !a.descends(&b) && a.concurrent(&c));
        assert_eq!(a.partial_cmp(&b), Some(Ordering::Less));
        assert_eq!(a.partial_cmp(&c), None);
    }

    #[test]
    fn dense_compare_handles_counters_above_two_to_the_63() {
        let big = u64::MAX - 1;
        let a = clock(&[(1, big), (2, 1)]);
        let b = clock(&[(1, 3), (2, 1)]);
        assert_eq!(a.compare(&b), Causality::After);
        assert_eq!(b.compare(&a), Causality::Before);
        assert!(a.descends(&b) && !b.descends(&a));
        let pairs = |counters: &[u64]| -> Vec<(u8, u64)> {
            counters
                .iter()
                .enumerate()
                .map(|(i, c)| (i as u8, *c))
                .collect()
        };
        assert_eq!(
            compare_block(&pairs(&[1, 1 << 63]), &pairs(&[2, 0])),
            (true, true)
        );
        assert_eq!(
            compare_block(&pairs(&[5, 7]), &pairs(&[5, 7])),
            (false, false)
        );
        let mut merged = a.clone();
        merged.merge(&b);
        assert_eq!(merged, a);
        let mut merged = clock(&[(1, 1), (2, u64::MAX), (3, 7)]);
        merged.merge(&clock(&[(1, 2), (2, 3), (3, 7)]));
        assert_eq!(merged, clock(&[(1, 2), (2, u64::MAX), (3, 7)]));
    }

    #[test]
    fn merge_by_hand() {
        let mut a = clock(&[(1, 2), (3, 1)]);
        a.merge(&clock(&[(2, 5), (3, 4)]));
        assert_eq!(a, clock(&[(1, 2), (2, 5), (3, 4)]));
        // Subset path: other's actors are all in self.
        a.merge(&clock(&[(2, 7)]));
        assert_eq!(a, clock(&[(1, 2), (2, 7), (3, 4)]));
        assert_eq!(a.actors().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(a.counters().collect::<Vec<_>>(), [2, 7, 4]);
    }

    #[test]
    fn increment_observe_get() {
        let mut a = VectorClock::new();
        assert_eq!(a.increment(5u64), 1);
        assert_eq!(a.increment(5), 2);
        assert_eq!(a.increment(1), 1);
        a.observe(9, 0);
        assert_eq!(a.len(), 2);
        a.observe(5, 1);
        assert_eq!(a.get(&5), 2);
        assert_eq!(a.get(&7), 0);
        assert!(a.contains(&Dot::new(5, 2)) && !a.contains(&Dot::new(5, 3)));
        let entries: Vec<(&u64, u64)> = a.iter().collect();
        assert_eq!(entries, vec![(&1, 1), (&5, 2)]);
        assert_eq!(a.iter().next_back(), Some((&5, 2)));
    }

    #[test]
    fn many_actors_use_binary_search_consistently() {
        let mut a = VectorClock::new();
        for actor in (0..100u64).rev() {
            a.observe(actor * 2, actor + 1);
        }
        assert_eq!(a.len(), 100);
        let actors: Vec<u64> = a.actors().copied().collect();
        assert!(actors.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a.get(&198), 100);
        assert_eq!(a.get(&3), 0);
    }

    #[test]
    fn prune_and_meet() {
        let mut a = clock(&[(1, 2), (2, 5), (3, 1)]);
        assert_eq!(a.remove(&2), Some(5));
        assert_eq!(a.remove(&2), None);
        a.retain(|actor, _| *actor != 3);
        assert_eq!(a, clock(&[(1, 2)]));
        let mut m = clock(&[(1, 4), (2, 5), (3, 1)]);
        m.meet(&clock(&[(1, 2), (3, 7), (4, 1)]));
        assert_eq!(m, clock(&[(1, 2), (3, 1)]));
    }

    #[test]
    fn display() {
        let a: VectorClock<&str> = [("a", 1), ("b", 2)].into_iter().collect();
        assert_eq!(alloc::format!("{a}"), "{a:1, b:2}");
        assert_eq!(alloc::format!("{a:?}"), r#"{"a": 1, "b": 2}"#);
    }

    #[test]
    fn bytes_known_answer_and_canonical_checks() {
        let a = clock(&[(1, 2), (300, 1)]);
        // header 0x13 (version 1, kind 3), 2 entries, 1 -> 2, 300 (0xac 0x02) -> 1.
        assert_eq!(a.to_bytes(), vec![0x13, 2, 1, 2, 0xac, 0x02, 1]);
        assert_eq!(VectorClock::from_bytes(&a.to_bytes()), Ok(a));
        assert_eq!(
            VectorClock::<u64>::from_bytes(&[0x13, 2, 5, 1, 1, 1]),
            Err(DecodeError::NotCanonical { index: 1 })
        );
        assert_eq!(
            VectorClock::<u64>::from_bytes(&[0x13, 1, 5, 0]),
            Err(DecodeError::ZeroCounter { index: 0 })
        );
        assert_eq!(
            VectorClock::<u64>::from_bytes(&[0x13, 0, 0]),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
        assert_eq!(
            VectorClock::<u64>::from_bytes(&[0x23, 0]),
            Err(DecodeError::UnsupportedVersion { found: 2 })
        );
    }
}
