//! The consistent-hash ring of Karger et al., with virtual nodes and weights.
//!
//! A node of weight `w` is hashed onto the circle at `vnodes * w` points:
//! point `i` of node `n` is `hasher.hash(n.stable_bytes(), i)`. A key hashed
//! to `h = hasher.hash(key.stable_bytes(), 0)` belongs to the owner of the
//! first point `>= h`, wrapping past `u64::MAX`. Two nodes on the same point
//! are ordered by `N: Ord`, so placement never depends on insertion order.

use alloc::vec::Vec;

use crate::Error;
use crate::hash::{KeyHasher, StableKey, Xxh3};
use crate::points::Points;
use crate::range::{KeyRange, Transfer};

#[derive(Debug, Clone)]
struct Member<N> {
    node: N,
    weight: u32,
}

/// A consistent-hash ring of nodes `N` with virtual nodes and weights.
///
/// ```
/// use quorate_consistent_hash::Ring;
///
/// let mut ring = Ring::new(100)?;
/// for node in ["a", "b", "c"] {
///     ring.add(node)?;
/// }
/// let owner = ring.get("user:42").copied();
/// assert!(owner.is_some());
/// // Three replicas on three different physical nodes, in ring order.
/// assert_eq!(ring.replicas("user:42", 3).len(), 3);
/// assert_eq!(ring.replicas("user:42", 3).first().copied(), ring.get("user:42"));
/// # Ok::<(), quorate_consistent_hash::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Ring<N, H = Xxh3> {
    hasher: H,
    vnodes: u32,
    members: Vec<Member<N>>,
    points: Points,
    /// `owners[i]` indexes `members` for the point at position `i`.
    owners: Vec<u32>,
}

impl<N: StableKey + Ord> Ring<N, Xxh3> {
    /// An empty ring hashing with [`Xxh3`], `vnodes` points per unit of weight.
    pub fn new(vnodes: u32) -> Result<Self, Error> {
        Self::with_hasher(vnodes, Xxh3)
    }
}

impl<N: StableKey + Ord, H: KeyHasher> Ring<N, H> {
    /// An empty ring hashing with `hasher`, `vnodes` points per unit of weight.
    pub fn with_hasher(vnodes: u32, hasher: H) -> Result<Self, Error> {
        if vnodes == 0 {
            return Err(Error::ZeroVnodes);
        }
        Ok(Self {
            hasher,
            vnodes,
            members: Vec::new(),
            points: Points::default(),
            owners: Vec::new(),
        })
    }

    /// Virtual nodes per unit of weight.
    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    /// Number of physical nodes.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the ring has no nodes.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Number of points (virtual nodes) on the circle.
    pub fn point_count(&self) -> usize {
        self.points.len()
    }

    /// The nodes and their weights, in insertion order.
    pub fn nodes(&self) -> impl Iterator<Item = (&N, u32)> + '_ {
        self.members
            .iter()
            .map(|member| (&member.node, member.weight))
    }

    /// Whether `node` is a member.
    pub fn contains(&self, node: &N) -> bool {
        self.index_of(node).is_some()
    }

    /// The hash that places `key`: `hasher.hash(key.stable_bytes(), 0)`.
    #[inline]
    pub fn hash_key<K: StableKey + ?Sized>(&self, key: &K) -> u64 {
        self.hasher.hash_key(key, 0)
    }

    /// Adds `node` with weight 1.
    pub fn add(&mut self, node: N) -> Result<(), Error> {
        self.add_weighted(node, 1)
    }

    /// Adds `node` with `weight`: it gets `vnodes * weight` points.
    pub fn add_weighted(&mut self, node: N, weight: u32) -> Result<(), Error> {
        let new_points = self.check_new(&node, weight)?;
        let mut node_points: Vec<u64> = (0..new_points)
            .map(|vnode| self.hasher.hash_key(&node, u64::from(vnode)))
            .collect();
        node_points.sort_unstable();
        let new_owner = self.members.len() as u32;
        let old = self.points.as_slice();
        let mut points = Points::buffer(old.len() + node_points.len());
        let mut owners = Vec::with_capacity(old.len() + node_points.len());
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < node_points.len() {
            let take_old = match (old.get(i), node_points.get(j)) {
                (Some(&a), Some(&b)) => {
                    a < b || (a == b && self.members[self.owners[i] as usize].node < node)
                }
                (Some(_), None) => true,
                _ => false,
            };
            if take_old {
                points.push(old[i]);
                owners.push(self.owners[i]);
                i += 1;
            } else {
                points.push(node_points[j]);
                owners.push(new_owner);
                j += 1;
            }
        }
        self.members.push(Member { node, weight });
        self.points = Points::new(points);
        self.owners = owners;
        Ok(())
    }

    /// The ring that adding `nodes` one by one with
    /// [`add_weighted`](Self::add_weighted) builds, with the same errors,
    /// built in one sort: for input from outside (deserializing), where
    /// adding one node at a time would rebuild the circle per node
    /// (quadratic time and allocation in the number of nodes).
    #[cfg(feature = "serde")]
    pub(crate) fn from_weighted(
        vnodes: u32,
        hasher: H,
        nodes: Vec<(N, u32)>,
    ) -> Result<Self, Error> {
        let mut ring = Self::with_hasher(vnodes, hasher)?;
        let mut seen = alloc::collections::BTreeSet::new();
        let mut total = 0u64;
        for (node, weight) in &nodes {
            if *weight == 0 {
                return Err(Error::ZeroWeight);
            }
            if !seen.insert(node) {
                return Err(Error::DuplicateNode);
            }
            let too_many = Error::TooManyPoints {
                vnodes,
                weight: *weight,
            };
            total += u64::from(vnodes.checked_mul(*weight).ok_or(too_many)?);
            if total >= u64::from(u32::MAX) {
                return Err(too_many);
            }
        }
        drop(seen);
        let mut placed: Vec<(u64, u32)> = Vec::with_capacity(total as usize);
        for (owner, (node, weight)) in nodes.iter().enumerate() {
            placed.extend(
                (0..vnodes * weight)
                    .map(|vnode| (ring.hasher.hash_key(node, u64::from(vnode)), owner as u32)),
            );
        }
        // Ties on a point go to the smaller node, as `add_weighted` orders them.
        placed.sort_unstable_by(|(a, a_owner), (b, b_owner)| {
            a.cmp(b)
                .then_with(|| nodes[*a_owner as usize].0.cmp(&nodes[*b_owner as usize].0))
        });
        let mut points = Points::buffer(placed.len());
        points.extend(placed.iter().map(|(point, _)| *point));
        ring.owners = placed.iter().map(|(_, owner)| *owner).collect();
        drop(placed);
        ring.points = Points::new(points);
        ring.members = nodes
            .into_iter()
            .map(|(node, weight)| Member { node, weight })
            .collect();
        Ok(ring)
    }

    /// Removes `node`, returning it; its arcs go to the next points clockwise.
    pub fn remove(&mut self, node: &N) -> Result<N, Error> {
        let gone = self.index_of(node).ok_or(Error::UnknownNode)? as u32;
        let mut points = Points::buffer(self.points.len());
        let mut owners = Vec::with_capacity(self.points.len());
        for (&point, &owner) in self.points.as_slice().iter().zip(&self.owners) {
            if owner != gone {
                points.push(point);
                owners.push(if owner > gone { owner - 1 } else { owner });
            }
        }
        self.points = Points::new(points);
        self.owners = owners;
        Ok(self.members.remove(gone as usize).node)
    }

    /// Changes `node`'s weight. Point `i` of a node is the same at every
    /// weight, so growing only adds points (keys move only to `node`) and
    /// shrinking only removes them (keys move only away from it).
    pub fn set_weight(&mut self, node: &N, weight: u32) -> Result<(), Error>
    where
        N: Clone,
    {
        let index = self.index_of(node).ok_or(Error::UnknownNode)?;
        if weight == 0 {
            return Err(Error::ZeroWeight);
        }
        let too_many = Error::TooManyPoints {
            vnodes: self.vnodes,
            weight,
        };
        let count = self.vnodes.checked_mul(weight).ok_or(too_many)?;
        let old = u64::from(self.vnodes) * u64::from(self.members[index].weight);
        if self.points.len() as u64 - old + u64::from(count) >= u64::from(u32::MAX) {
            return Err(too_many);
        }
        let node = self.remove(node)?;
        self.add_weighted(node, weight)
    }

    /// The node that owns `key`, or `None` on an empty ring.
    #[inline]
    pub fn get<K: StableKey + ?Sized>(&self, key: &K) -> Option<&N> {
        self.get_by_hash(self.hash_key(key))
    }

    /// The node that owns the key hash `hash` (see [`Ring::hash_key`]).
    #[inline]
    pub fn get_by_hash(&self, hash: u64) -> Option<&N> {
        let position = self.points.successor(hash)?;
        self.owner_at(position)
    }

    /// Up to `r` distinct physical nodes for `key`, in ring order from its owner.
    ///
    /// Fewer than `r` only when the ring has fewer than `r` nodes.
    pub fn replicas<K: StableKey + ?Sized>(&self, key: &K, r: usize) -> Vec<&N> {
        self.walk(self.hash_key(key)).take(r).collect()
    }

    /// Every distinct physical node in ring order starting at the owner of `hash`.
    pub fn walk(&self, hash: u64) -> Walk<'_, N, H> {
        Walk {
            ring: self,
            next: self.points.successor(hash).unwrap_or(0),
            steps_left: self.points.len(),
            seen: alloc::vec![false; self.members.len()],
            found: 0,
        }
    }

    /// The arcs of the circle that `node` owns, merged where adjacent.
    pub fn ranges(&self, node: &N) -> Result<Vec<KeyRange>, Error> {
        let wanted = self.index_of(node).ok_or(Error::UnknownNode)? as u32;
        let points = self.points.as_slice();
        let (Some(&first), Some(&last)) = (points.first(), points.last()) else {
            return Ok(Vec::new());
        };
        if first == last {
            // One distinct point: whoever sorts first there owns the circle.
            let whole = KeyRange {
                start: first,
                end: first,
            };
            return Ok(if self.owners.first() == Some(&wanted) {
                alloc::vec![whole]
            } else {
                Vec::new()
            });
        }
        let mut ranges: Vec<KeyRange> = Vec::new();
        let mut previous = last;
        for (&point, &owner) in points.iter().zip(&self.owners) {
            if owner == wanted && point != previous {
                match ranges.last_mut() {
                    Some(range) if range.end == previous => range.end = point,
                    _ => ranges.push(KeyRange {
                        start: previous,
                        end: point,
                    }),
                }
            }
            previous = point;
        }
        Ok(ranges)
    }

    /// Where keys move when this ring becomes `next`: every arc whose owner differs.
    ///
    /// Both rings must hash keys the same way (same hasher). Empty if either ring is empty.
    pub fn transfers_to(&self, next: &Ring<N, H>) -> Vec<Transfer<N>>
    where
        N: Clone,
    {
        let (a, b) = (self.points.as_slice(), next.points.as_slice());
        let mut transfers: Vec<Transfer<N>> = Vec::new();
        let (Some(&a_last), Some(&b_last)) = (a.last(), b.last()) else {
            return transfers;
        };
        let mut previous = a_last.max(b_last);
        let (mut i, mut j) = (0, 0);
        let single = a.iter().chain(b).all(|&point| point == previous);
        while i < a.len() || j < b.len() {
            let point = match (a.get(i), b.get(j)) {
                (Some(&x), Some(&y)) => x.min(y),
                (Some(&x), None) => x,
                (None, Some(&y)) => y,
                (None, None) => break,
            };
            // Positions of the first points >= `point` in each ring (wrapping).
            let from = self.owner_at(if i < a.len() { i } else { 0 });
            let to = next.owner_at(if j < b.len() { j } else { 0 });
            while a.get(i) == Some(&point) {
                i += 1;
            }
            while b.get(j) == Some(&point) {
                j += 1;
            }
            if let (Some(from), Some(to)) = (from, to)
                && from != to
                && (point != previous || single)
            {
                match transfers.last_mut() {
                    Some(last)
                        if last.range.end == previous && last.from == *from && last.to == *to =>
                    {
                        last.range.end = point;
                    }
                    _ => transfers.push(Transfer {
                        range: KeyRange {
                            start: previous,
                            end: point,
                        },
                        from: from.clone(),
                        to: to.clone(),
                    }),
                }
            }
            previous = point;
        }
        transfers
    }

    /// The arcs that would move to `node` if it joined with `weight`.
    pub fn transfers_on_add(&self, node: N, weight: u32) -> Result<Vec<Transfer<N>>, Error>
    where
        N: Clone,
        H: Clone,
    {
        let mut next = self.clone();
        next.add_weighted(node, weight)?;
        Ok(self.transfers_to(&next))
    }

    /// The arcs that would leave `node` if it were removed.
    pub fn transfers_on_remove(&self, node: &N) -> Result<Vec<Transfer<N>>, Error>
    where
        N: Clone,
        H: Clone,
    {
        let mut next = self.clone();
        next.remove(node)?;
        Ok(self.transfers_to(&next))
    }

    fn index_of(&self, node: &N) -> Option<usize> {
        self.members.iter().position(|member| member.node == *node)
    }

    /// The hasher that places keys and points.
    pub fn hasher(&self) -> &H {
        &self.hasher
    }

    /// The first point `>= hash` (wrapping) and its position.
    #[inline]
    pub(crate) fn successor(&self, hash: u64) -> Option<(u64, usize)> {
        let position = self.points.successor(hash)?;
        Some((*self.points.as_slice().get(position)?, position))
    }

    #[inline]
    pub(crate) fn owner_at(&self, position: usize) -> Option<&N> {
        let owner = *self.owners.get(position)?;
        self.members.get(owner as usize).map(|member| &member.node)
    }

    /// Validates a join and returns the new node's point count.
    fn check_new(&self, node: &N, weight: u32) -> Result<u32, Error> {
        if weight == 0 {
            return Err(Error::ZeroWeight);
        }
        if self.contains(node) {
            return Err(Error::DuplicateNode);
        }
        let too_many = Error::TooManyPoints {
            vnodes: self.vnodes,
            weight,
        };
        let count = self.vnodes.checked_mul(weight).ok_or(too_many)?;
        let total = (self.points.len() as u64) + u64::from(count);
        if total >= u64::from(u32::MAX) {
            return Err(too_many);
        }
        Ok(count)
    }
}

/// Distinct physical nodes in ring order; see [`Ring::walk`].
#[derive(Debug, Clone)]
pub struct Walk<'a, N, H> {
    ring: &'a Ring<N, H>,
    next: usize,
    steps_left: usize,
    seen: Vec<bool>,
    found: usize,
}

impl<'a, N, H> Iterator for Walk<'a, N, H> {
    type Item = &'a N;

    fn next(&mut self) -> Option<&'a N> {
        while self.steps_left > 0 && self.found < self.seen.len() {
            let owner = *self.ring.owners.get(self.next)? as usize;
            self.next = if self.next + 1 == self.ring.owners.len() {
                0
            } else {
                self.next + 1
            };
            self.steps_left -= 1;
            let seen = self.seen.get_mut(owner)?;
            if !*seen {
                *seen = true;
                self.found += 1;
                return self.ring.members.get(owner).map(|member| &member.node);
            }
        }
        None
    }
}
