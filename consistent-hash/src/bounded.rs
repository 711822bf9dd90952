//! Consistent hashing with bounded loads (Mirrokni, Thorup & Zadimoghaddam, 2018).
//!
//! Keys are placed one at a time. With `m` keys placed after this one and
//! `n` nodes, the capacity is `ceil((1 + epsilon) * m / n)`; a key goes to
//! the first node in its preference order (ring order for a [`Ring`], score
//! order for a [`Rendezvous`]) whose load is below the capacity. Since the
//! capacity never drops while keys are only added, after every placement no
//! node holds more than `ceil((1 + epsilon) * average)`; some node always has
//! room because `n * capacity >= m`.
//!
//! [`BoundedLoads::release`] never moves keys, so after releases a node can
//! sit above the (now smaller) capacity until it is drained;
//! [`BoundedLoads::overloaded`] names such nodes.

use alloc::collections::BTreeMap;

use crate::Error;
use crate::hash::{KeyHasher, StableKey};
use crate::rendezvous::Rendezvous;
use crate::ring::Ring;

/// Load accounting for bounded-load placement over nodes `N`.
///
/// ```
/// use quorate_consistent_hash::{BoundedLoads, Ring};
///
/// let mut ring = Ring::new(100)?;
/// for node in ["a", "b", "c"] {
///     ring.add(node)?;
/// }
/// let mut loads = BoundedLoads::new(0.25)?;
/// for key in 0u32..300 {
///     loads.place_on_ring(&ring, &key)?;
/// }
/// // ceil(1.25 * 300 / 3) = 125
/// assert!(ring.nodes().all(|(node, _)| loads.load(node) <= 125));
/// # Ok::<(), quorate_consistent_hash::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct BoundedLoads<N> {
    epsilon: f64,
    loads: BTreeMap<N, u64>,
    total: u64,
}

impl<N: Ord + Clone> BoundedLoads<N> {
    /// Empty loads with slack `epsilon` (finite, >= 0) above the average.
    pub fn new(epsilon: f64) -> Result<Self, Error> {
        if !(epsilon.is_finite() && epsilon >= 0.0) {
            return Err(Error::InvalidEpsilon { epsilon });
        }
        Ok(Self {
            epsilon,
            loads: BTreeMap::new(),
            total: 0,
        })
    }

    /// The slack above the average load.
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// Keys currently placed.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Keys currently on `node`.
    pub fn load(&self, node: &N) -> u64 {
        self.loads.get(node).copied().unwrap_or(0)
    }

    /// `ceil((1 + epsilon) * keys / nodes)`: the most any node may hold.
    pub fn capacity_for(&self, keys: u64, nodes: usize) -> u64 {
        if nodes == 0 {
            return 0;
        }
        libm::ceil((1.0 + self.epsilon) * keys as f64 / nodes as f64) as u64
    }

    /// Places one key on the first of `preference` (which must list each of
    /// the `nodes` nodes once) that is below capacity, and returns that node.
    pub fn place<'a>(
        &mut self,
        preference: impl IntoIterator<Item = &'a N>,
        nodes: usize,
    ) -> Result<N, Error>
    where
        N: 'a,
    {
        if nodes == 0 {
            return Err(Error::NoNodes);
        }
        let capacity = self.capacity_for(self.total + 1, nodes);
        let chosen = preference
            .into_iter()
            .find(|node| self.load(node) < capacity);
        let node = chosen.ok_or(Error::AllNodesFull { capacity })?.clone();
        *self.loads.entry(node.clone()).or_insert(0) += 1;
        self.total += 1;
        Ok(node)
    }

    /// Places `key` on `ring`, walking distinct nodes clockwise from its owner.
    pub fn place_on_ring<K, H>(&mut self, ring: &Ring<N, H>, key: &K) -> Result<N, Error>
    where
        K: StableKey + ?Sized,
        N: StableKey,
        H: KeyHasher,
    {
        self.place(ring.walk(ring.hash_key(key)), ring.len())
    }

    /// Places `key` on `rendezvous`, trying nodes in descending score order.
    pub fn place_on_rendezvous<K, H>(
        &mut self,
        rendezvous: &Rendezvous<N, H>,
        key: &K,
    ) -> Result<N, Error>
    where
        K: StableKey + ?Sized,
        N: StableKey,
        H: KeyHasher,
    {
        self.place(
            rendezvous.ranked(rendezvous.hash_key(key)),
            rendezvous.len(),
        )
    }

    /// Forgets one key placed on `node`.
    pub fn release(&mut self, node: &N) -> Result<(), Error> {
        let load = self.loads.get_mut(node).ok_or(Error::NothingToRelease)?;
        *load -= 1;
        if *load == 0 {
            self.loads.remove(node);
        }
        self.total -= 1;
        Ok(())
    }

    /// Nodes above `ceil((1 + epsilon) * total / nodes)` (only possible after releases).
    pub fn overloaded(&self, nodes: usize) -> impl Iterator<Item = (&N, u64)> + '_ {
        let capacity = self.capacity_for(self.total, nodes);
        self.loads
            .iter()
            .filter(move |&(_, &load)| load > capacity)
            .map(|(node, &load)| (node, load))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            BoundedLoads::<u32>::new(-0.1).err(),
            Some(Error::InvalidEpsilon { epsilon: -0.1 })
        );
        assert!(BoundedLoads::<u32>::new(f64::INFINITY).is_err());
        let mut loads = BoundedLoads::<u32>::new(0.0).unwrap();
        assert_eq!(loads.release(&1), Err(Error::NothingToRelease));
        assert_eq!(loads.place([].iter(), 0), Err(Error::NoNodes));
        assert_eq!(
            loads.place([].iter(), 1),
            Err(Error::AllNodesFull { capacity: 1 })
        );
        assert_eq!(loads.total(), 0);
    }

    #[test]
    fn releases_can_leave_a_node_over_the_shrunken_cap() {
        let mut loads = BoundedLoads::new(0.0).unwrap();
        let nodes = [1u32, 2];
        for _ in 0..4 {
            loads.place(nodes.iter(), 2).unwrap();
        }
        assert_eq!([loads.load(&1), loads.load(&2)], [2, 2]);
        loads.release(&2).unwrap();
        loads.release(&2).unwrap();
        // 2 keys over 2 nodes: cap 1, and node 1 still holds 2.
        assert_eq!(
            loads.overloaded(2).collect::<alloc::vec::Vec<_>>(),
            [(&1, 2)]
        );
        assert_eq!(loads.release(&2), Err(Error::NothingToRelease));
        assert_eq!(loads.total(), 2);
    }

    #[test]
    fn zero_epsilon_is_perfect_balance() {
        let mut loads = BoundedLoads::new(0.0).unwrap();
        let nodes = [1u32, 2, 3];
        for _ in 0..9 {
            // Everyone prefers node 1; the cap forces spreading.
            loads.place(nodes.iter(), 3).unwrap();
        }
        assert_eq!([loads.load(&1), loads.load(&2), loads.load(&3)], [3, 3, 3]);
    }
}
