//! Maglev hashing (Eisenbud et al., NSDI 2016): a prime-sized lookup table.
//!
//! Each node walks its own permutation of the table slots, `offset + j * skip
//! (mod M)` with `offset = hash(node, 1) mod M` and `skip = hash(node, 2) mod
//! (M - 1) + 1`; nodes take turns (in `N: Ord` order) claiming their next free
//! slot until the table is full. Every node gets `floor(M/n)` or `ceil(M/n)`
//! slots, and a membership change rewrites few slots besides the changed
//! node's. A key hashed to `h` (seed 0) reads slot `(h * M) >> 64`.

use alloc::vec;
use alloc::vec::Vec;

use crate::Error;
use crate::hash::{KeyHasher, StableKey, Xxh3, reduce};

/// The table size recommended by the paper for up to a few hundred nodes.
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;

const OFFSET_SEED: u64 = 1;
const SKIP_SEED: u64 = 2;
const EMPTY: u32 = u32::MAX;

/// A Maglev lookup table over nodes `N`.
///
/// ```
/// use quorate_consistent_hash::Maglev;
///
/// let mut maglev = Maglev::new(["a", "b", "c"])?;
/// maglev.add("d")?;
/// // Every node holds a quarter of the 65,537 slots, give or take one.
/// for node in 0..4u32 {
///     let slots = maglev.table().iter().filter(|&&owner| owner == node).count();
///     assert!((16_384..=16_385).contains(&slots));
/// }
/// assert!(maglev.get("flow-7").is_some());
/// # Ok::<(), quorate_consistent_hash::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Maglev<N, H = Xxh3> {
    hasher: H,
    size: u32,
    nodes: Vec<N>,
    table: Vec<u32>,
}

impl<N: StableKey + Ord> Maglev<N, Xxh3> {
    /// A table of [`DEFAULT_TABLE_SIZE`] slots over `nodes`, hashing with [`Xxh3`].
    pub fn new(nodes: impl IntoIterator<Item = N>) -> Result<Self, Error> {
        Self::with_table_size(nodes, DEFAULT_TABLE_SIZE, Xxh3)
    }
}

impl<N: StableKey + Ord, H: KeyHasher> Maglev<N, H> {
    /// A table of `size` slots (a prime larger than the node count) over `nodes`.
    pub fn with_table_size(
        nodes: impl IntoIterator<Item = N>,
        size: u32,
        hasher: H,
    ) -> Result<Self, Error> {
        if !is_prime(size) {
            return Err(Error::TableSizeNotPrime {
                size: u64::from(size),
            });
        }
        let mut nodes: Vec<N> = nodes.into_iter().collect();
        nodes.sort_unstable();
        if nodes.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err(Error::DuplicateNode);
        }
        if nodes.len() >= size as usize {
            return Err(Error::TableTooSmall {
                size: u64::from(size),
                nodes: nodes.len(),
            });
        }
        let mut maglev = Self {
            hasher,
            size,
            nodes,
            table: Vec::new(),
        };
        maglev.populate();
        Ok(maglev)
    }

    /// Number of slots.
    pub fn table_size(&self) -> u32 {
        self.size
    }

    /// The nodes, in `Ord` order.
    pub fn nodes(&self) -> &[N] {
        &self.nodes
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Adds `node` and rebuilds the table.
    pub fn add(&mut self, node: N) -> Result<(), Error> {
        let at = match self.nodes.binary_search(&node) {
            Ok(_) => return Err(Error::DuplicateNode),
            Err(at) => at,
        };
        if self.nodes.len() + 1 >= self.size as usize {
            return Err(Error::TableTooSmall {
                size: u64::from(self.size),
                nodes: self.nodes.len() + 1,
            });
        }
        self.nodes.insert(at, node);
        self.populate();
        Ok(())
    }

    /// Removes `node`, returning it, and rebuilds the table.
    pub fn remove(&mut self, node: &N) -> Result<N, Error> {
        let at = self
            .nodes
            .binary_search(node)
            .map_err(|_| Error::UnknownNode)?;
        let removed = self.nodes.remove(at);
        self.populate();
        Ok(removed)
    }

    /// The hash that places `key`: `hasher.hash(key.stable_bytes(), 0)`.
    #[inline]
    pub fn hash_key<K: StableKey + ?Sized>(&self, key: &K) -> u64 {
        self.hasher.hash_key(key, 0)
    }

    /// The node for `key`, or `None` with no nodes.
    #[inline]
    pub fn get<K: StableKey + ?Sized>(&self, key: &K) -> Option<&N> {
        self.get_by_hash(self.hash_key(key))
    }

    /// The node for a key hash.
    #[inline]
    pub fn get_by_hash(&self, hash: u64) -> Option<&N> {
        let slot = reduce(hash, u64::from(self.size)) as usize;
        self.nodes.get(*self.table.get(slot)? as usize)
    }

    /// The node owning each slot, as indices into [`Maglev::nodes`].
    pub fn table(&self) -> &[u32] {
        &self.table
    }

    fn populate(&mut self) {
        let size = u64::from(self.size);
        self.table = vec![EMPTY; self.size as usize];
        if self.nodes.is_empty() {
            return;
        }
        let mut cursors: Vec<(u64, u64)> = self
            .nodes
            .iter()
            .map(|node| {
                let offset = self.hasher.hash_key(node, OFFSET_SEED) % size;
                let skip = self.hasher.hash_key(node, SKIP_SEED) % (size - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut filled = 0u64;
        'fill: loop {
            for (owner, (next, skip)) in cursors.iter_mut().enumerate() {
                // The permutation visits every slot (size is prime), so this ends.
                while self.table[*next as usize] != EMPTY {
                    *next = (*next + *skip) % size;
                }
                self.table[*next as usize] = owner as u32;
                *next = (*next + *skip) % size;
                filled += 1;
                if filled == size {
                    break 'fill;
                }
            }
        }
    }
}

/// Deterministic trial division; table sizes are at most 2^32.
fn is_prime(n: u32) -> bool {
    let n = u64::from(n);
    if n < 2 {
        return false;
    }
    let mut divisor = 2u64;
    while divisor * divisor <= n {
        if n % divisor == 0 {
            return false;
        }
        divisor += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes_by_hand() {
        let primes: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65_537));
        assert!(!is_prime(65_536));
    }

    #[test]
    fn rejects_bad_tables() {
        assert_eq!(
            Maglev::<&str>::with_table_size([], 10, Xxh3).err(),
            Some(Error::TableSizeNotPrime { size: 10 })
        );
        assert_eq!(
            Maglev::with_table_size(["a", "b", "c"], 3, Xxh3).err(),
            Some(Error::TableTooSmall { size: 3, nodes: 3 })
        );
        assert_eq!(Maglev::new(["a", "a"]).err(), Some(Error::DuplicateNode));
        let mut maglev = Maglev::new(["a"]).unwrap();
        assert_eq!(maglev.add("a"), Err(Error::DuplicateNode));
        assert_eq!(maglev.remove(&"b"), Err(Error::UnknownNode));
        assert_eq!(maglev.len(), 1);
    }

    #[test]
    fn empty_table_places_nothing() {
        let maglev = Maglev::<&str>::new([]).unwrap();
        assert_eq!(maglev.get("x"), None);
    }
}
