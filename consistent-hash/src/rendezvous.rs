//! Rendezvous (highest random weight) hashing, weighted by the logarithmic method.
//!
//! Every node scores every key; the highest score wins. A node's score for
//! a key is `weight / -ln(u)` where `u` in `(0, 1)` comes from
//! `splitmix64(key_hash ^ node_hash)` ([`crate::splitmix64`]; `key_hash` as in
//! [`crate::Ring::hash_key`], `node_hash = hasher.hash(node.stable_bytes(), 0)`):
//! the top 52 bits `t` give `u = (t + 0.5) / 2^52`. With this score a node wins
//! a key with probability exactly `weight / total weight` (Schindelhauer &
//! Schomaker), and a change of one node's membership or weight moves only keys
//! to or from that node. `ln` is `libm::log`, pure Rust, identical on every
//! platform. Ties (never seen in practice) go to the smaller node.

use alloc::vec::Vec;
use core::cmp::Ordering;

use crate::Error;
use crate::hash::{KeyHasher, StableKey, Xxh3, splitmix64};

#[derive(Debug, Clone)]
struct Member<N> {
    node: N,
    weight: f64,
    seed: u64,
}

/// Weighted rendezvous hashing over nodes `N`.
///
/// ```
/// use quorate_consistent_hash::Rendezvous;
///
/// let mut hrw = Rendezvous::new();
/// hrw.add_weighted("big", 2.0)?;
/// hrw.add("small")?;
/// let owner = hrw.get("key").copied();
/// assert_eq!(hrw.top_k("key", 2).first().copied().copied(), owner);
/// # Ok::<(), quorate_consistent_hash::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Rendezvous<N, H = Xxh3> {
    hasher: H,
    members: Vec<Member<N>>,
    /// Whether every weight is the same (cached: lookups then skip `ln`).
    uniform: bool,
}

impl<N: StableKey + Ord> Default for Rendezvous<N, Xxh3> {
    fn default() -> Self {
        Self::new()
    }
}

impl<N: StableKey + Ord> Rendezvous<N, Xxh3> {
    /// No nodes yet, hashing with [`Xxh3`].
    pub fn new() -> Self {
        Self::with_hasher(Xxh3)
    }
}

impl<N: StableKey + Ord, H: KeyHasher> Rendezvous<N, H> {
    /// No nodes yet, hashing with `hasher`.
    pub fn with_hasher(hasher: H) -> Self {
        Self {
            hasher,
            members: Vec::new(),
            uniform: true,
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The nodes and their weights, in insertion order.
    pub fn nodes(&self) -> impl Iterator<Item = (&N, f64)> + '_ {
        self.members
            .iter()
            .map(|member| (&member.node, member.weight))
    }

    /// The hash that places `key`: `hasher.hash(key.stable_bytes(), 0)`.
    pub fn hash_key<K: StableKey + ?Sized>(&self, key: &K) -> u64 {
        self.hasher.hash_key(key, 0)
    }

    /// Adds `node` with weight 1.
    pub fn add(&mut self, node: N) -> Result<(), Error> {
        self.add_weighted(node, 1.0)
    }

    /// Adds `node` with `weight` (finite, > 0): it wins about `weight / total` of keys.
    pub fn add_weighted(&mut self, node: N, weight: f64) -> Result<(), Error> {
        if !(weight.is_finite() && weight > 0.0) {
            return Err(Error::InvalidWeight { weight });
        }
        if self.members.iter().any(|member| member.node == node) {
            return Err(Error::DuplicateNode);
        }
        let seed = self.hasher.hash_key(&node, 0);
        self.members.push(Member { node, weight, seed });
        self.uniform = weights_equal(&self.members);
        Ok(())
    }

    /// What adding `nodes` one by one with
    /// [`add_weighted`](Self::add_weighted) builds, with the same errors, in
    /// O(n log n) (for deserializing: adding one at a time compares each
    /// new node with every member).
    #[cfg(feature = "serde")]
    pub(crate) fn from_weighted(hasher: H, nodes: Vec<(N, f64)>) -> Result<Self, Error> {
        let mut seen = alloc::collections::BTreeSet::new();
        for (node, weight) in &nodes {
            if !(weight.is_finite() && *weight > 0.0) {
                return Err(Error::InvalidWeight { weight: *weight });
            }
            if !seen.insert(node) {
                return Err(Error::DuplicateNode);
            }
        }
        drop(seen);
        let members: Vec<Member<N>> = nodes
            .into_iter()
            .map(|(node, weight)| {
                let seed = hasher.hash_key(&node, 0);
                Member { node, weight, seed }
            })
            .collect();
        Ok(Self {
            uniform: weights_equal(&members),
            hasher,
            members,
        })
    }

    /// Removes `node`, returning it.
    pub fn remove(&mut self, node: &N) -> Result<N, Error> {
        let index = self
            .members
            .iter()
            .position(|member| member.node == *node)
            .ok_or(Error::UnknownNode)?;
        let removed = self.members.remove(index).node;
        self.uniform = weights_equal(&self.members);
        Ok(removed)
    }

    /// The node with the highest score for `key`.
    #[inline]
    pub fn get<K: StableKey + ?Sized>(&self, key: &K) -> Option<&N> {
        self.get_by_hash(self.hash_key(key))
    }

    /// The node with the highest score for a key hash.
    pub fn get_by_hash(&self, key_hash: u64) -> Option<&N> {
        if !self.uniform() {
            let mut best: Option<(Score, &N)> = None;
            for member in &self.members {
                let score = self.score(key_hash, member, false);
                if best
                    .as_ref()
                    .is_none_or(|(top, node)| beats(&score, &member.node, top, node))
                {
                    best = Some((score, &member.node));
                }
            }
            return best.map(|(_, node)| node);
        }
        // Equal weights: compare raw draws, no `ln` and no float (same order as `beats`).
        let mut best: Option<(u64, &N)> = None;
        for member in &self.members {
            let draw = splitmix64(key_hash ^ member.seed) >> 12;
            if best.is_none_or(|(top, node)| draw > top || (draw == top && member.node < *node)) {
                best = Some((draw, &member.node));
            }
        }
        best.map(|(_, node)| node)
    }

    /// The `k` highest-scoring nodes for `key`, best first (fewer if there are fewer nodes).
    pub fn top_k<K: StableKey + ?Sized>(&self, key: &K, k: usize) -> Vec<&N> {
        let mut ranked = self.ranked(self.hash_key(key));
        ranked.truncate(k);
        ranked
    }

    /// Every node ranked by its score for a key hash, best first.
    pub fn ranked(&self, key_hash: u64) -> Vec<&N> {
        let uniform = self.uniform();
        let mut scored: Vec<(Score, &N)> = self
            .members
            .iter()
            .map(|member| (self.score(key_hash, member, uniform), &member.node))
            .collect();
        scored.sort_by(|(a, x), (b, y)| {
            if beats(a, x, b, y) {
                Ordering::Less
            } else if beats(b, y, a, x) {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        });
        scored.into_iter().map(|(_, node)| node).collect()
    }

    fn uniform(&self) -> bool {
        self.uniform
    }

    #[inline]
    fn score(&self, key_hash: u64, member: &Member<N>, uniform: bool) -> Score {
        let draw = splitmix64(key_hash ^ member.seed) >> 12;
        // Equal weights: the score is monotone in the draw, so skip `ln`.
        if uniform {
            Score::Draw(draw)
        } else {
            Score::Weighted(score(draw, member.weight))
        }
    }
}

fn weights_equal<N>(members: &[Member<N>]) -> bool {
    members
        .first()
        .is_none_or(|first| members.iter().all(|member| member.weight == first.weight))
}

#[derive(Debug, Clone, Copy)]
enum Score {
    Draw(u64),
    Weighted(f64),
}

/// Whether `(score, node)` beats the current best; ties go to the smaller node.
fn beats<N: Ord>(score: &Score, node: &N, top: &Score, top_node: &N) -> bool {
    let order = match (score, top) {
        (Score::Draw(a), Score::Draw(b)) => a.cmp(b),
        (Score::Weighted(a), Score::Weighted(b)) => a.total_cmp(b),
        _ => Ordering::Equal,
    };
    order == Ordering::Greater || (order == Ordering::Equal && node < top_node)
}

/// `weight / -ln(u)` with `u = (draw + 0.5) / 2^52`, `draw < 2^52` (exact in an `f64`).
fn score(draw: u64, weight: f64) -> f64 {
    let unit = (draw as f64 + 0.5) * (1.0 / 4_503_599_627_370_496.0);
    weight / -libm::log(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_weights_and_duplicates() {
        let mut hrw = Rendezvous::new();
        assert_eq!(
            hrw.add_weighted("a", 0.0),
            Err(Error::InvalidWeight { weight: 0.0 })
        );
        assert!(matches!(
            hrw.add_weighted("a", f64::NAN),
            Err(Error::InvalidWeight { .. })
        ));
        assert_eq!(hrw.add("a"), Ok(()));
        assert_eq!(hrw.add("a"), Err(Error::DuplicateNode));
        assert_eq!(hrw.remove(&"b"), Err(Error::UnknownNode));
        assert_eq!(hrw.len(), 1);
    }

    #[test]
    fn score_is_monotone_in_the_draw() {
        assert!(score(1, 1.0) < score(2, 1.0));
        assert!(score((1 << 52) - 2, 1.0) < score((1 << 52) - 1, 1.0));
        assert!(score(5, 1.0) < score(5, 2.0));
    }
}
