//! [`MerkleTree`]: an append-only Merkle tree stored as one flat in-order
//! array of node hashes.

use crate::{
    Error, Hash, MerkleHasher, Root, TreeHead, flat,
    proof::{self, ConsistencyProof, InclusionProof, MultiProof},
};
use alloc::vec::Vec;
use core::{fmt, marker::PhantomData};

/// An append-only Merkle tree over any number of leaves.
///
/// Node hashes live in one `Vec` in flat in-order layout (see [`flat`]): leaf
/// `k` at index `2k`, parents in between. Only complete nodes (perfect
/// subtrees) are stored; the RFC 9162 tree hash of a tree whose size is not a
/// power of two folds the full roots right to left, as RFC 9162's recursive
/// definition does. Building is one pass that hashes each leaf and then every
/// parent it completes, so the buffer is written front to back with no
/// per-node allocation.
pub struct MerkleTree<H> {
    nodes: Vec<Hash>,
    leaves: u64,
    hasher: PhantomData<fn() -> H>,
}

impl<H> fmt::Debug for MerkleTree<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerkleTree")
            .field("leaves", &self.leaves)
            .finish_non_exhaustive()
    }
}

impl<H> Clone for MerkleTree<H> {
    fn clone(&self) -> Self {
        Self {
            nodes: self.nodes.clone(),
            leaves: self.leaves,
            hasher: PhantomData,
        }
    }
}

impl<H: MerkleHasher> Default for MerkleTree<H> {
    fn default() -> Self {
        Self::new()
    }
}

/// Largest power of two strictly smaller than `n` (`n >= 2`): RFC 9162's `k`.
pub(crate) const fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

impl<H: MerkleHasher> MerkleTree<H> {
    /// An empty tree.
    pub const fn new() -> Self {
        Self {
            nodes: Vec::new(),
            leaves: 0,
            hasher: PhantomData,
        }
    }

    /// Builds a tree from leaf data, hashing each leaf with
    /// [`MerkleHasher::hash_leaf`].
    pub fn from_leaves<I>(leaves: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let iter = leaves.into_iter();
        let mut tree = Self::with_capacity(iter.size_hint().0);
        tree.extend(iter);
        tree
    }

    /// Builds a tree from already hashed leaves.
    pub fn from_leaf_hashes<I: IntoIterator<Item = Hash>>(hashes: I) -> Self {
        let iter = hashes.into_iter();
        let mut tree = Self::with_capacity(iter.size_hint().0);
        for h in iter {
            tree.push_leaf_hash(h);
        }
        tree
    }

    /// An empty tree with room for `leaves` leaves without reallocating.
    pub fn with_capacity(leaves: usize) -> Self {
        Self {
            nodes: Vec::with_capacity(leaves.saturating_mul(2).saturating_sub(1)),
            leaves: 0,
            hasher: PhantomData,
        }
    }

    /// Removes every leaf but keeps the allocation, so rebuilding a tree of
    /// similar size touches no fresh memory.
    pub fn clear(&mut self) {
        self.nodes.clear();
        self.leaves = 0;
    }

    /// Appends leaves, reserving room for all of them first.
    pub fn extend<I>(&mut self, leaves: I)
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let iter = leaves.into_iter();
        self.reserve_leaves(iter.size_hint().0);
        for leaf in iter {
            self.push(leaf.as_ref());
        }
    }

    /// Room for `more` leaves: exactly the nodes they add, so a tree made
    /// with [`with_capacity`](Self::with_capacity) never reallocates.
    fn reserve_leaves(&mut self, more: usize) {
        let nodes = more.saturating_mul(2);
        self.nodes.reserve(if self.leaves == 0 {
            nodes.saturating_sub(1)
        } else {
            nodes
        });
    }

    /// Appends a leaf.
    pub fn push(&mut self, data: &[u8]) {
        self.push_leaf_hash(H::hash_leaf(data));
    }

    /// Appends an already hashed leaf and hashes every parent it completes.
    pub fn push_leaf_hash(&mut self, leaf: Hash) {
        if self.leaves > 0 {
            // Slot of the parent joining the old last leaf's subtree to the
            // new one; filled once that parent is complete.
            self.nodes.push(Hash::default());
        }
        self.nodes.push(leaf);
        let mut i = flat::leaf_index(self.leaves);
        self.leaves += 1;
        // A right child completes its parent; both sit before it in the array.
        while !flat::is_left(i) {
            let parent = flat::parent(i);
            let node = H::hash_node(
                &self.nodes[flat::sibling(i) as usize],
                &self.nodes[i as usize],
            );
            self.nodes[parent as usize] = node;
            i = parent;
        }
    }

    /// Number of leaves.
    pub const fn len(&self) -> u64 {
        self.leaves
    }

    /// Whether the tree has no leaves.
    pub const fn is_empty(&self) -> bool {
        self.leaves == 0
    }

    /// Hash of complete node `index` (flat index), or `None` if that node is
    /// not complete in this tree.
    pub fn node(&self, index: u64) -> Option<Hash> {
        if flat::is_complete(index, self.leaves) {
            self.nodes.get(index as usize).copied()
        } else {
            None
        }
    }

    /// Hash of leaf `leaf`.
    pub fn leaf_hash(&self, leaf: u64) -> Option<Hash> {
        if leaf < self.leaves {
            self.node(flat::leaf_index(leaf))
        } else {
            None
        }
    }

    /// The flat indices of this tree's full roots, left to right.
    pub const fn full_roots(&self) -> flat::FullRoots {
        flat::full_roots(self.leaves)
    }

    /// RFC 9162 Merkle Tree Hash (`MTH`) of the whole tree.
    pub fn tree_hash(&self) -> Hash {
        self.range_hash_or_empty(self.leaves)
    }

    /// The tree hash bound to the leaf count: what proofs are verified against.
    pub fn root(&self) -> Root {
        H::bind_root(self.leaves, &self.tree_hash())
    }

    /// RFC 9162 tree hash of the prefix of `size` leaves (an earlier version
    /// of this append-only tree).
    pub fn tree_hash_at(&self, size: u64) -> Result<Hash, Error> {
        self.check_size(size)?;
        Ok(self.range_hash_or_empty(size))
    }

    /// The tree head (size and tree hash) of the whole tree.
    pub fn tree_head(&self) -> TreeHead {
        TreeHead {
            size: self.leaves,
            tree_hash: self.tree_hash(),
        }
    }

    /// The tree head of the prefix of `size` leaves.
    pub fn tree_head_at(&self, size: u64) -> Result<TreeHead, Error> {
        Ok(TreeHead {
            size,
            tree_hash: self.tree_hash_at(size)?,
        })
    }

    /// [`Root`] of the prefix of `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Root, Error> {
        Ok(H::bind_root(size, &self.tree_hash_at(size)?))
    }

    fn check_size(&self, size: u64) -> Result<(), Error> {
        if size > self.leaves {
            return Err(Error::SizeOutOfRange {
                size,
                limit: self.leaves,
            });
        }
        Ok(())
    }

    fn range_hash_or_empty(&self, size: u64) -> Hash {
        if size == 0 {
            H::hash_empty()
        } else {
            self.range_hash(0, size)
        }
    }

    /// RFC 9162 `MTH(D[lo:hi])`, for `lo < hi <= len`. Perfect aligned ranges
    /// are stored nodes; others are split the RFC's way.
    pub(crate) fn range_hash(&self, lo: u64, hi: u64) -> Hash {
        let n = hi - lo;
        if n.is_power_of_two() && lo & (n - 1) == 0 {
            return self.nodes[(2 * lo + n - 1) as usize];
        }
        let mid = lo + split(n);
        H::hash_node(&self.range_hash(lo, mid), &self.range_hash(mid, hi))
    }

    fn hashes_of(&self, ranges: &[(u64, u64)]) -> Vec<Hash> {
        ranges
            .iter()
            .map(|&(lo, hi)| self.range_hash(lo, hi))
            .collect()
    }

    /// Inclusion proof of leaf `leaf` in the current tree (RFC 9162 audit path).
    pub fn inclusion_proof(&self, leaf: u64) -> Result<InclusionProof, Error> {
        self.inclusion_proof_at(leaf, self.leaves)
    }

    /// Inclusion proof of leaf `leaf` in the prefix tree of `size` leaves.
    pub fn inclusion_proof_at(&self, leaf: u64, size: u64) -> Result<InclusionProof, Error> {
        self.check_size(size)?;
        if leaf >= size {
            return Err(Error::LeafOutOfRange { index: leaf, size });
        }
        let mut ranges = Vec::new();
        proof::path_ranges(leaf, 0, size, &mut ranges);
        Ok(InclusionProof::new(self.hashes_of(&ranges)))
    }

    /// One proof for several leaves, each needed node sent once. `leaves`
    /// must be strictly increasing.
    pub fn multi_proof(&self, leaves: &[u64]) -> Result<MultiProof, Error> {
        proof::check_leaf_indices(leaves.iter().copied(), self.leaves)?;
        let mut ranges = Vec::new();
        proof::multi_ranges(leaves, 0, self.leaves, &mut ranges);
        Ok(MultiProof::new(self.hashes_of(&ranges)))
    }

    /// RFC 9162 consistency proof `PROOF(old_size, D[new_size])` that the
    /// tree of `old_size` leaves is a prefix of the tree of `new_size` leaves
    /// (section 2.1.4.1), between any two sizes up to [`len`](Self::len).
    pub fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<ConsistencyProof, Error> {
        self.check_size(new_size)?;
        if old_size > new_size {
            return Err(Error::SizeOutOfRange {
                size: old_size,
                limit: new_size,
            });
        }
        let mut ranges = Vec::new();
        proof::consistency_ranges(old_size, new_size, &mut ranges);
        Ok(ConsistencyProof::new(self.hashes_of(&ranges)))
    }
}
