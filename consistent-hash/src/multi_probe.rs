//! Multi-probe consistent hashing (Appleton & O'Reilly, 2015).
//!
//! One point per node (`hash(node, 0)`, as in a [`Ring`] with one virtual
//! node) and `k` probes per key: probe 0 is `h = hash(key, 0)` and probe
//! `i > 0` is `splitmix64(h + i * 0x9e3779b97f4a7c15)`, the `i`-th output of
//! a SplitMix64 generator seeded with `h`. The key goes to the node whose
//! point follows its nearest probe most closely (the first probe wins ties).
//! Memory stays at one point per node instead of hundreds of virtual nodes.
//!
//! The paper's balance is a peak-to-mean load of about `1 + 1/(k - 1)` for
//! `k` probes (1.05 at [`DEFAULT_PROBES`]), an average over where the node
//! points fall: its model, applied to the points of nodes `0..100` (`u32`),
//! gives 1.056 at 21 probes. A sampled max/mean adds the noise of the key
//! count: 1.079 with 1,000,000 keys, 1.065 with 10,000,000 (see
//! `benches/RESULTS.md`). Independent probes follow the model; double
//! hashing (`h1 + i * h2`, as in the reference Go implementation) does not
//! (`tests/placement.rs`).

use crate::Error;
use crate::hash::{GOLDEN_GAMMA, KeyHasher, StableKey, Xxh3, splitmix64};
use crate::ring::Ring;

/// The paper's probe count for a peak-to-mean ratio of about 1.05.
pub const DEFAULT_PROBES: u32 = 21;

/// Multi-probe consistent hashing over nodes `N`.
///
/// ```
/// use quorate_consistent_hash::MultiProbe;
///
/// let mut mp = MultiProbe::new(21)?;
/// mp.add("a")?;
/// mp.add("b")?;
/// assert!(mp.get("key").is_some());
/// # Ok::<(), quorate_consistent_hash::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MultiProbe<N, H = Xxh3> {
    probes: u32,
    ring: Ring<N, H>,
}

impl<N: StableKey + Ord> MultiProbe<N, Xxh3> {
    /// No nodes yet, `probes` probes per key, hashing with [`Xxh3`].
    pub fn new(probes: u32) -> Result<Self, Error> {
        Self::with_hasher(probes, Xxh3)
    }
}

impl<N: StableKey + Ord, H: KeyHasher> MultiProbe<N, H> {
    /// No nodes yet, `probes` probes per key, hashing with `hasher`.
    pub fn with_hasher(probes: u32, hasher: H) -> Result<Self, Error> {
        if probes == 0 {
            return Err(Error::ZeroProbes);
        }
        Ok(Self {
            probes,
            ring: Ring::with_hasher(1, hasher)?,
        })
    }

    /// What adding `nodes` one by one to [`with_hasher`](Self::with_hasher)
    /// builds, in one sort (for deserializing: see `Ring::from_weighted`).
    #[cfg(feature = "serde")]
    pub(crate) fn from_nodes(
        probes: u32,
        hasher: H,
        nodes: alloc::vec::Vec<N>,
    ) -> Result<Self, Error> {
        if probes == 0 {
            return Err(Error::ZeroProbes);
        }
        let nodes = nodes.into_iter().map(|node| (node, 1)).collect();
        Ok(Self {
            probes,
            ring: Ring::from_weighted(1, hasher, nodes)?,
        })
    }

    /// Probes per key.
    pub fn probes(&self) -> u32 {
        self.probes
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// The nodes, in insertion order.
    pub fn nodes(&self) -> impl Iterator<Item = &N> + '_ {
        self.ring.nodes().map(|(node, _)| node)
    }

    /// Adds `node` (one point on the circle).
    pub fn add(&mut self, node: N) -> Result<(), Error> {
        self.ring.add(node)
    }

    /// Removes `node`, returning it.
    pub fn remove(&mut self, node: &N) -> Result<N, Error> {
        self.ring.remove(node)
    }

    /// The node for `key`, or `None` with no nodes.
    pub fn get<K: StableKey + ?Sized>(&self, key: &K) -> Option<&N> {
        let first = self.ring.hash_key(key);
        let mut best: Option<(u64, usize)> = None;
        for i in 0..self.probes {
            // The i-th output of SplitMix64 seeded with the key's hash.
            let probe = match i {
                0 => first,
                _ => splitmix64(first.wrapping_add(u64::from(i).wrapping_mul(GOLDEN_GAMMA))),
            };
            let (point, position) = self.ring.successor(probe)?;
            let distance = point.wrapping_sub(probe);
            if best.is_none_or(|(closest, _)| distance < closest) {
                best = Some((distance, position));
            }
        }
        self.ring.owner_at(best?.1)
    }
}
