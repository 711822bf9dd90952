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
/// Stored as two parallel vectors, actors sorted ascending and their nonzero
/// counters, so the common case of two clocks over the same actors compares and
/// merges with one `memcmp` and a branch-free, vectorizable pass over the
/// counters. Actors absent from the clock have counter 0; the clock never
/// stores a zero, so equal histories are equal values (`Eq`, `Hash`).
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
    actors: Vec<A>,
    counters: Vec<u64>,
}

impl<A> Default for VectorClock<A> {
    fn default() -> Self {
        Self {
            actors: Vec::new(),
            counters: Vec::new(),
        }
    }
}

impl<A> VectorClock<A> {
    /// The empty clock (every counter 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty clock with room for `actors` entries.
    pub fn with_capacity(actors: usize) -> Self {
        Self {
            actors: Vec::with_capacity(actors),
            counters: Vec::with_capacity(actors),
        }
    }

    /// Number of actors with a nonzero counter.
    pub fn len(&self) -> usize {
        self.actors.len()
    }

    /// True if every counter is 0.
    pub fn is_empty(&self) -> bool {
        self.actors.is_empty()
    }

    /// The actors with a nonzero counter, ascending.
    pub fn actors(&self) -> &[A] {
        &self.actors
    }

    /// The counters, in the order of [`VectorClock::actors`].
    pub fn counters(&self) -> &[u64] {
        &self.counters
    }

    /// `(actor, counter)` entries in ascending actor order.
    pub fn iter(&self) -> Iter<'_, A> {
        Iter {
            actors: self.actors.iter(),
            counters: self.counters.iter(),
        }
    }

    /// Keeps only the entries for which `keep(actor, counter)` is true.
    ///
    /// This is how retired actors are pruned. It is only safe once every
    /// replica agrees the actor is retired and every clock that will ever be
    /// compared has seen all of its events: prune the same actors everywhere,
    /// or comparisons between pruned and unpruned clocks go wrong.
    pub fn retain(&mut self, mut keep: impl FnMut(&A, u64) -> bool) {
        let mut write = 0;
        for read in 0..self.actors.len() {
            if keep(&self.actors[read], self.counters[read]) {
                self.actors.swap(write, read);
                self.counters.swap(write, read);
                write += 1;
            }
        }
        self.actors.truncate(write);
        self.counters.truncate(write);
    }

    /// How `self` relates to `other` causally.
    pub fn compare(&self, other: &Self) -> Causality
    where
        A: Ord,
    {
        if self.actors == other.actors {
            let (ahead, behind) = compare_dense(&self.counters, &other.counters);
            return Causality::from_flags(ahead, behind);
        }
        let (ahead, behind) = self.scan_sparse(other, true);
        Causality::from_flags(ahead, behind)
    }

    /// True if `self` has seen every event `other` has (`self >= other`).
    pub fn descends(&self, other: &Self) -> bool
    where
        A: Ord,
    {
        if other.len() > self.len() {
            return false;
        }
        if self.actors == other.actors {
            return !compare_dense(&self.counters, &other.counters).1;
        }
        !self.scan_sparse(other, false).1
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

    /// Walks two clocks with different actor sets; returns whether `self` has
    /// an entry above `other` and whether `other` has one above `self`.
    /// Stops at the first "behind" if `want_ahead` is false.
    fn scan_sparse(&self, other: &Self, want_ahead: bool) -> (bool, bool)
    where
        A: Ord,
    {
        let (mut ahead, mut behind) = (false, false);
        let (mut i, mut j) = (0, 0);
        while i < self.actors.len() && j < other.actors.len() {
            match self.actors[i].cmp(&other.actors[j]) {
                Ordering::Less => {
                    ahead = true;
                    i += 1;
                }
                Ordering::Greater => {
                    behind = true;
                    j += 1;
                }
                Ordering::Equal => {
                    ahead |= self.counters[i] > other.counters[j];
                    behind |= self.counters[i] < other.counters[j];
                    i += 1;
                    j += 1;
                }
            }
            if behind && (ahead || !want_ahead) {
                return (ahead, behind);
            }
        }
        ahead |= i < self.actors.len();
        behind |= j < other.actors.len();
        (ahead, behind)
    }
}

/// Compares two counter vectors entry by entry; returns whether some entry of
/// `mine` is above `theirs`, and whether some entry is below.
fn compare_dense(mine: &[u64], theirs: &[u64]) -> (bool, bool) {
    // For counters below 2^63, `theirs - mine` (wrapping) has its top bit set
    // exactly when `mine > theirs`. Subtraction and OR are the only
    // operations, so the loop vectorizes even on baseline x86-64 SSE2, which
    // has no unsigned 64-bit compare. Counters at or above 2^63 (never
    // accepted from outside, see MAX_COUNTER) take the plain loop.
    // Equal lengths let the indexed loop drop its bounds checks.
    let len = mine.len().min(theirs.len());
    let (mine, theirs) = (&mine[..len], &theirs[..len]);
    let (mut ahead, mut behind, mut high) = (0u64, 0u64, 0u64);
    for i in 0..len {
        let (a, b) = (mine[i], theirs[i]);
        ahead |= b.wrapping_sub(a);
        behind |= a.wrapping_sub(b);
        high |= a | b;
    }
    if high >> 63 == 0 {
        return (ahead >> 63 != 0, behind >> 63 != 0);
    }
    let ahead = mine.iter().zip(theirs).any(|(a, b)| a > b);
    let behind = mine.iter().zip(theirs).any(|(a, b)| a < b);
    (ahead, behind)
}

/// Raises every counter of `mine` to the matching one of `theirs`.
fn merge_dense(mine: &mut [u64], theirs: &[u64]) {
    // Same trick as `compare_dense`: below 2^63 the top bit of `theirs - mine`
    // says which is larger, and a mask built from it selects with SSE2 ops
    // only (baseline x86-64 has no unsigned 64-bit max).
    let len = mine.len().min(theirs.len());
    let (mine, theirs) = (&mut mine[..len], &theirs[..len]);
    let mut high = 0u64;
    for i in 0..len {
        high |= mine[i] | theirs[i];
    }
    if high >> 63 != 0 {
        for (a, &b) in mine.iter_mut().zip(theirs) {
            *a = (*a).max(b);
        }
        return;
    }
    for i in 0..len {
        let (a, b) = (mine[i], theirs[i]);
        let keep_mine = 0u64.wrapping_sub(b.wrapping_sub(a) >> 63);
        mine[i] = (a & keep_mine) | (b & !keep_mine);
    }
}

impl<A: Ord> VectorClock<A> {
    fn position(&self, actor: &A) -> Result<usize, usize> {
        // Linear search beats binary search on the short vectors clocks
        // usually are, and keeps the same answer.
        if self.actors.len() <= 16 {
            for (index, candidate) in self.actors.iter().enumerate() {
                match candidate.cmp(actor) {
                    Ordering::Less => continue,
                    Ordering::Equal => return Ok(index),
                    Ordering::Greater => return Err(index),
                }
            }
            return Err(self.actors.len());
        }
        self.actors.binary_search(actor)
    }

    /// The counter of `actor` (0 if absent).
    pub fn get(&self, actor: &A) -> u64 {
        match self.position(actor) {
            Ok(index) => self.counters[index],
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
            Ok(index) => {
                let counter = &mut self.counters[index];
                *counter = counter.saturating_add(1);
                *counter
            }
            Err(index) => {
                self.actors.insert(index, actor);
                self.counters.insert(index, 1);
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
                let current = &mut self.counters[index];
                *current = (*current).max(counter);
            }
            Err(index) => {
                self.actors.insert(index, actor);
                self.counters.insert(index, counter);
            }
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
        self.actors.remove(index);
        Some(self.counters.remove(index))
    }

    /// Merges `other` into `self` (the join, entrywise max): afterwards `self`
    /// descends both inputs and nothing else.
    pub fn merge(&mut self, other: &Self)
    where
        A: Clone,
    {
        if self.actors == other.actors {
            merge_dense(&mut self.counters, &other.counters);
            return;
        }
        if self.merge_subset(other) {
            return;
        }
        self.merge_union(other);
    }

    /// Merges in place when `other`'s actors are a subset of `self`'s; returns
    /// false (having raised only shared entries, which is harmless) otherwise.
    fn merge_subset(&mut self, other: &Self) -> bool {
        if other.len() > self.len() {
            return false;
        }
        let mut i = 0;
        for (actor, &theirs) in other.actors.iter().zip(&other.counters) {
            while i < self.actors.len() && self.actors[i] < *actor {
                i += 1;
            }
            match self.actors.get(i) {
                Some(mine) if mine == actor => {
                    self.counters[i] = self.counters[i].max(theirs);
                    i += 1;
                }
                _ => return false,
            }
        }
        true
    }

    fn merge_union(&mut self, other: &Self)
    where
        A: Clone,
    {
        let capacity = self.len() + other.len();
        let mut actors = Vec::with_capacity(capacity);
        let mut counters = Vec::with_capacity(capacity);
        let mine = core::mem::take(&mut self.actors)
            .into_iter()
            .zip(core::mem::take(&mut self.counters));
        let mut mine = mine.peekable();
        let mut theirs = other.iter().peekable();
        loop {
            let take_mine = match (mine.peek(), theirs.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((a, _)), Some((b, _))) => a.cmp(*b),
            };
            match take_mine {
                Ordering::Less => {
                    if let Some((actor, counter)) = mine.next() {
                        actors.push(actor);
                        counters.push(counter);
                    }
                }
                Ordering::Greater => {
                    if let Some((actor, counter)) = theirs.next() {
                        actors.push(actor.clone());
                        counters.push(counter);
                    }
                }
                Ordering::Equal => {
                    if let (Some((actor, a)), Some((_, b))) = (mine.next(), theirs.next()) {
                        actors.push(actor);
                        counters.push(a.max(b));
                    }
                }
            }
        }
        self.actors = actors;
        self.counters = counters;
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
        self.retain_with_counter(|actor, counter| {
            while j < other.actors.len() && other.actors[j] < *actor {
                j += 1;
            }
            match other.actors.get(j) {
                Some(theirs) if theirs == actor => (*counter).min(other.counters[j]),
                _ => 0,
            }
        });
    }

    /// Replaces every counter by `update(actor, counter)`, dropping zeros.
    fn retain_with_counter(&mut self, mut update: impl FnMut(&A, &u64) -> u64) {
        for (actor, counter) in self.actors.iter().zip(self.counters.iter_mut()) {
            *counter = update(actor, counter);
        }
        self.retain(|_, counter| counter != 0);
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
    actors: core::slice::Iter<'a, A>,
    counters: core::slice::Iter<'a, u64>,
}

impl<'a, A> Iterator for Iter<'a, A> {
    type Item = (&'a A, u64);

    fn next(&mut self) -> Option<Self::Item> {
        Some((self.actors.next()?, *self.counters.next()?))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.actors.size_hint()
    }
}

impl<A> DoubleEndedIterator for Iter<'_, A> {
    fn next_back(&mut self) -> Option<Self::Item> {
        Some((self.actors.next_back()?, *self.counters.next_back()?))
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
    inner: core::iter::Zip<alloc::vec::IntoIter<A>, alloc::vec::IntoIter<u64>>,
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
            inner: self.actors.into_iter().zip(self.counters),
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
        let mut clock = Self::with_capacity(len);
        for index in 0..len {
            let actor = A::decode(reader)?;
            let counter = reader.read_counter()?;
            if counter == 0 {
                return Err(DecodeError::ZeroCounter { index });
            }
            if clock.actors.last().is_some_and(|last| *last >= actor) {
                return Err(DecodeError::NotCanonical { index });
            }
            clock.actors.push(actor);
            clock.counters.push(counter);
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
        assert_eq!(compare_dense(&[1, 1 << 63], &[2, 0]), (true, true));
        assert_eq!(compare_dense(&[5, 7], &[5, 7]), (false, false));
        let mut merged = a.clone();
        merged.merge(&b);
        assert_eq!(merged, a);
        let mut counters = [1, u64::MAX, 7];
        merge_dense(&mut counters, &[2, 3, 7]);
        assert_eq!(counters, [2, u64::MAX, 7]);
        let mut small = [1, 9, 7];
        merge_dense(&mut small, &[2, 3, 7]);
        assert_eq!(small, [2, 9, 7]);
    }

    #[test]
    fn merge_by_hand() {
        let mut a = clock(&[(1, 2), (3, 1)]);
        a.merge(&clock(&[(2, 5), (3, 4)]));
        assert_eq!(a, clock(&[(1, 2), (2, 5), (3, 4)]));
        // Subset path: other's actors are all in self.
        a.merge(&clock(&[(2, 7)]));
        assert_eq!(a, clock(&[(1, 2), (2, 7), (3, 4)]));
        assert_eq!(a.actors(), &[1, 2, 3]);
        assert_eq!(a.counters(), &[2, 7, 4]);
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
        assert!(a.actors().windows(2).all(|w| w[0] < w[1]));
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
