//! Inclusion, multi-leaf and consistency proofs, their verifiers and their
//! compact binary encoding.
//!
//! Proofs carry hashes only. Every verifier takes the leaf indices, the tree
//! size and the [`Root`] from the caller (who trusts them, e.g. from a
//! [`SignedRoot`](crate::SignedRoot)) and derives the shape of the proof from
//! those, never from the proof itself.

use crate::{
    Error, Hash, MerkleHasher, Root, TreeHead,
    codec::{self, Reader},
    tree::split,
};
use alloc::vec::Vec;

/// RFC 9162 `PATH(m, D[lo:hi])` as subtree ranges, bottom-up.
pub(crate) fn path_ranges(m: u64, lo: u64, hi: u64, out: &mut Vec<(u64, u64)>) {
    if hi - lo <= 1 {
        return;
    }
    let mid = lo + split(hi - lo);
    if m < mid {
        path_ranges(m, lo, mid, out);
        out.push((mid, hi));
    } else {
        path_ranges(m, mid, hi, out);
        out.push((lo, mid));
    }
}

/// Length of RFC 9162 `PATH(m, D[0:n])`, without building it: one hash per
/// split on the way down to leaf `m`.
pub(crate) fn path_len(m: u64, n: u64) -> usize {
    let (mut lo, mut hi, mut len) = (0, n, 0);
    while hi - lo > 1 {
        let mid = lo + split(hi - lo);
        if m < mid {
            hi = mid;
        } else {
            lo = mid;
        }
        len += 1;
    }
    len
}

/// Subtrees a multi-leaf proof carries: every maximal subtree with none of
/// `leaves` in it, in left-to-right order. `leaves` is sorted, within `[lo, hi)`.
pub(crate) fn multi_ranges(leaves: &[u64], lo: u64, hi: u64, out: &mut Vec<(u64, u64)>) {
    if leaves.is_empty() {
        out.push((lo, hi));
        return;
    }
    if hi - lo <= 1 {
        return;
    }
    let mid = lo + split(hi - lo);
    let (left, right) = leaves.split_at(leaves.partition_point(|&l| l < mid));
    multi_ranges(left, lo, mid, out);
    multi_ranges(right, mid, hi, out);
}

/// RFC 9162 `PROOF(m, D[n])` (section 2.1.4.1) as subtree ranges, in the
/// RFC's order: `SUBPROOF(m, D[n], true)`, which leaves out `MTH(D[0:m])`
/// when the old tree is a complete subtree of the new one (the verifier holds
/// that hash already).
pub(crate) fn consistency_ranges(m: u64, n: u64, out: &mut Vec<(u64, u64)>) {
    fn sub(m: u64, lo: u64, hi: u64, complete: bool, out: &mut Vec<(u64, u64)>) {
        if m == hi {
            if !complete {
                out.push((lo, hi));
            }
            return;
        }
        let mid = lo + split(hi - lo);
        if m <= mid {
            sub(m, lo, mid, complete, out);
            out.push((mid, hi));
        } else {
            sub(m, mid, hi, false, out);
            out.push((lo, mid));
        }
    }
    if m == 0 || m >= n {
        return;
    }
    sub(m, 0, n, true, out);
}

/// Length of [`consistency_ranges`], without building them.
pub(crate) fn consistency_len(m: u64, n: u64) -> usize {
    if m == 0 || m >= n {
        return 0;
    }
    let (mut lo, mut hi, mut complete, mut len) = (0, n, true, 0);
    while m != hi {
        let mid = lo + split(hi - lo);
        if m > mid {
            lo = mid;
            complete = false;
        } else {
            hi = mid;
        }
        len += 1;
    }
    len + usize::from(!complete)
}

/// Checks multi-proof leaf indices: non-empty, strictly increasing, in range.
pub(crate) fn check_leaf_indices(
    leaves: impl IntoIterator<Item = u64>,
    size: u64,
) -> Result<(), Error> {
    let mut previous: Option<u64> = None;
    for index in leaves {
        if index >= size {
            return Err(Error::LeafOutOfRange { index, size });
        }
        if let Some(previous) = previous.filter(|&p| p >= index) {
            return Err(Error::UnsortedLeaves { previous, index });
        }
        previous = Some(index);
    }
    if previous.is_none() {
        return Err(Error::NoLeaves);
    }
    Ok(())
}

fn check_len(expected: usize, actual: usize) -> Result<(), Error> {
    if expected != actual {
        return Err(Error::ProofLength { expected, actual });
    }
    Ok(())
}

fn check_root<H: MerkleHasher>(size: u64, tree_hash: &Hash, root: &Root) -> Result<(), Error> {
    if H::bind_root(size, tree_hash) != *root {
        return Err(Error::RootMismatch);
    }
    Ok(())
}

/// The index walk shared by RFC 9162's inclusion (2.1.3.2) and consistency
/// (2.1.4.2) verifiers: `f` follows the proven node, `s` the last node of
/// the tree, level by level.
struct Walk {
    f: u64,
    s: u64,
}

impl Walk {
    const fn new(f: u64, s: u64) -> Self {
        Self { f, s }
    }

    fn shift(&mut self) {
        self.f >>= 1;
        self.s >>= 1;
    }

    /// Consistency step 4: skip the levels where the old tree is complete.
    fn skip_complete_levels(&mut self) {
        while self.f & 1 == 1 {
            self.shift();
        }
    }

    /// Whether the next proof hash joins from the left; fails once the walk
    /// has reached the root (the proof is too long).
    fn step(&mut self) -> Result<bool, Error> {
        if self.s == 0 {
            return Err(Error::RootMismatch);
        }
        let left = self.f & 1 == 1 || self.f == self.s;
        if left {
            while self.f & 1 == 0 && self.f != 0 {
                self.shift();
            }
        }
        self.shift();
        Ok(left)
    }

    /// The proof must end exactly at the root.
    fn finish(&self) -> Result<(), Error> {
        if self.s == 0 {
            Ok(())
        } else {
            Err(Error::RootMismatch)
        }
    }
}

const INCLUSION_TAG: u8 = 0x01;
const MULTI_TAG: u8 = 0x02;
const CONSISTENCY_TAG: u8 = 0x03;
/// No tree of up to `2^64` leaves needs longer audit or consistency paths.
const MAX_PATH: u64 = 66;

fn encode(tag: u8, hashes: &[Hash]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + hashes.len() * 32);
    out.push(tag);
    codec::put_hashes(&mut out, hashes);
    out
}

fn decode(bytes: &[u8], what: &'static str, tag: u8, max: u64) -> Result<Vec<Hash>, Error> {
    let mut r = Reader::new(bytes);
    let found = r.u8()?;
    if found != tag {
        return Err(Error::UnknownTag { what, tag: found });
    }
    let hashes = r.hashes(max)?;
    r.finish()?;
    Ok(hashes)
}

macro_rules! proof_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $tag:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        pub struct $name {
            hashes: Vec<Hash>,
        }

        impl $name {
            /// A proof made of these hashes, in the order the verifier reads them.
            pub fn new(hashes: Vec<Hash>) -> Self {
                Self { hashes }
            }

            /// The hashes, in the order the verifier reads them.
            pub fn hashes(&self) -> &[Hash] {
                &self.hashes
            }

            /// Compact encoding: a tag byte, a LEB128 count, the raw hashes.
            pub fn to_bytes(&self) -> Vec<u8> {
                encode($tag, &self.hashes)
            }

            /// Decodes [`to_bytes`](Self::to_bytes) output. Never panics; a
            /// wrong tag, count, length or trailing byte is an [`Error`].
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
                decode(bytes, $what, $tag, $max).map(Self::new)
            }
        }
    };
}

proof_type!(
    /// Proof that one leaf is in a tree: the RFC 9162 audit path, bottom-up.
    InclusionProof, "inclusion proof", INCLUSION_TAG, MAX_PATH
);
proof_type!(
    /// Proof that several leaves are in a tree. It carries every maximal
    /// subtree that holds none of the proven leaves, left to right, so nodes
    /// shared by several audit paths are sent once and nodes the verifier can
    /// compute are not sent at all.
    MultiProof, "multi-leaf proof", MULTI_TAG, u64::MAX
);
proof_type!(
    /// Proof that an older tree is a prefix of a newer one: exactly RFC 9162
    /// section 2.1.4's `PROOF(m, D[n])`, so proofs from and for other RFC 9162
    /// logs are byte-for-byte the same hashes. When the old size is a power of
    /// two the old tree hash is not in the proof: the verifier supplies it.
    ConsistencyProof, "consistency proof", CONSISTENCY_TAG, MAX_PATH
);

impl InclusionProof {
    /// Verifies that `leaf` is leaf number `index` of the tree with `root`
    /// and `size` leaves.
    pub fn verify<H: MerkleHasher>(
        &self,
        index: u64,
        leaf: &[u8],
        size: u64,
        root: &Root,
    ) -> Result<(), Error> {
        self.verify_hash::<H>(index, &H::hash_leaf(leaf), size, root)
    }

    /// [`verify`](Self::verify) for an already hashed leaf.
    pub fn verify_hash<H: MerkleHasher>(
        &self,
        index: u64,
        leaf: &Hash,
        size: u64,
        root: &Root,
    ) -> Result<(), Error> {
        let tree_hash = self.tree_hash::<H>(index, leaf, size)?;
        check_root::<H>(size, &tree_hash, root)
    }

    /// RFC 9162 section 2.1.3.2 on raw hashes: verifies that `leaf_hash` is
    /// leaf number `index` of the tree with `size` leaves and tree hash
    /// `tree_hash`, what a certificate-transparency client holds from a
    /// signed tree head.
    pub fn verify_tree_hash<H: MerkleHasher>(
        &self,
        index: u64,
        leaf_hash: &Hash,
        size: u64,
        tree_hash: &Hash,
    ) -> Result<(), Error> {
        if self.tree_hash::<H>(index, leaf_hash, size)? == *tree_hash {
            Ok(())
        } else {
            Err(Error::RootMismatch)
        }
    }

    /// The RFC 9162 tree hash this proof leads to (RFC 9162 section 2.1.3.2),
    /// for checking against a raw tree hash from another RFC 9162 system.
    pub fn tree_hash<H: MerkleHasher>(
        &self,
        index: u64,
        leaf: &Hash,
        size: u64,
    ) -> Result<Hash, Error> {
        if index >= size {
            return Err(Error::LeafOutOfRange { index, size });
        }
        check_len(path_len(index, size), self.hashes.len())?;
        let mut walk = Walk::new(index, size - 1);
        let mut r = *leaf;
        for p in &self.hashes {
            r = if walk.step()? {
                H::hash_node(p, &r)
            } else {
                H::hash_node(&r, p)
            };
        }
        walk.finish()?;
        Ok(r)
    }
}

impl MultiProof {
    /// Verifies that each `(index, data)` is that leaf of the tree with `root`
    /// and `size` leaves. Indices must be strictly increasing.
    pub fn verify<H: MerkleHasher, D: AsRef<[u8]>>(
        &self,
        leaves: &[(u64, D)],
        size: u64,
        root: &Root,
    ) -> Result<(), Error> {
        let hashed: Vec<(u64, Hash)> = leaves
            .iter()
            .map(|(i, d)| (*i, H::hash_leaf(d.as_ref())))
            .collect();
        self.verify_hashes::<H>(&hashed, size, root)
    }

    /// [`verify`](Self::verify) for already hashed leaves.
    pub fn verify_hashes<H: MerkleHasher>(
        &self,
        leaves: &[(u64, Hash)],
        size: u64,
        root: &Root,
    ) -> Result<(), Error> {
        check_leaf_indices(leaves.iter().map(|l| l.0), size)?;
        let indices: Vec<u64> = leaves.iter().map(|l| l.0).collect();
        let mut ranges = Vec::new();
        multi_ranges(&indices, 0, size, &mut ranges);
        check_len(ranges.len(), self.hashes.len())?;
        let mut proof = self.hashes.iter();
        let tree_hash = fold::<H>(leaves, 0, size, &mut proof)?;
        check_root::<H>(size, &tree_hash, root)
    }
}

/// Recomputes `MTH(D[lo:hi])` from the proven leaves in the range and the
/// proof hashes, consumed in [`multi_ranges`] order.
fn fold<'p, H: MerkleHasher>(
    leaves: &[(u64, Hash)],
    lo: u64,
    hi: u64,
    proof: &mut impl Iterator<Item = &'p Hash>,
) -> Result<Hash, Error> {
    match leaves {
        [] => proof.next().copied().ok_or(Error::RootMismatch),
        [(_, h)] if hi - lo == 1 => Ok(*h),
        _ => {
            let mid = lo + split(hi - lo);
            let (left, right) = leaves.split_at(leaves.partition_point(|l| l.0 < mid));
            let l = fold::<H>(left, lo, mid, proof)?;
            let r = fold::<H>(right, mid, hi, proof)?;
            Ok(H::hash_node(&l, &r))
        }
    }
}

impl ConsistencyProof {
    /// Verifies that the tree head `old` is a prefix of the tree head `new`
    /// (RFC 9162 section 2.1.4.2).
    pub fn verify<H: MerkleHasher>(&self, old: &TreeHead, new: &TreeHead) -> Result<(), Error> {
        self.verify_tree_hashes::<H>(old.size, &old.tree_hash, new.size, &new.tree_hash)
    }

    /// RFC 9162 section 2.1.4.2 on raw values: verifies that the tree of
    /// `old_size` leaves with tree hash `old_tree_hash` is a prefix of the
    /// tree of `new_size` leaves with tree hash `new_tree_hash`, the two
    /// signed tree heads a certificate-transparency client holds.
    pub fn verify_tree_hashes<H: MerkleHasher>(
        &self,
        old_size: u64,
        old_tree_hash: &Hash,
        new_size: u64,
        new_tree_hash: &Hash,
    ) -> Result<(), Error> {
        if old_size > new_size {
            return Err(Error::SizeOutOfRange {
                size: old_size,
                limit: new_size,
            });
        }
        check_len(consistency_len(old_size, new_size), self.hashes.len())?;
        if old_size == new_size {
            return if old_tree_hash == new_tree_hash {
                Ok(())
            } else {
                Err(Error::RootMismatch)
            };
        }
        if old_size == 0 {
            // Every tree extends the empty tree.
            return Ok(());
        }
        // Step 2: the old tree hash is the first node when the old tree is a
        // complete subtree, and the proof does not carry it.
        let (first, rest) = if old_size.is_power_of_two() {
            (old_tree_hash, &self.hashes[..])
        } else {
            self.hashes.split_first().ok_or(Error::RootMismatch)?
        };
        let mut walk = Walk::new(old_size - 1, new_size - 1);
        walk.skip_complete_levels();
        let (mut fr, mut sr) = (*first, *first);
        for c in rest {
            if walk.step()? {
                fr = H::hash_node(c, &fr);
                sr = H::hash_node(c, &sr);
            } else {
                sr = H::hash_node(&sr, c);
            }
        }
        walk.finish()?;
        if fr == *old_tree_hash && sr == *new_tree_hash {
            Ok(())
        } else {
            Err(Error::RootMismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;
    use proptest::prelude::*;

    fn single(m: u64, n: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        path_ranges(m, 0, n, &mut out);
        out
    }

    proptest! {
        /// The multi-proof carries exactly the union of the single audit
        /// paths, minus the subtrees a proven leaf lets the verifier compute,
        /// each once.
        #[test]
        fn multi_ranges_are_union_of_single_paths(n in 1u64..5000, picks in prop::collection::vec(any::<u64>(), 1..40)) {
            let leaves: Vec<u64> = picks.iter().map(|p| p % n).collect::<BTreeSet<_>>().into_iter().collect();
            let mut multi = Vec::new();
            multi_ranges(&leaves, 0, n, &mut multi);
            let union: BTreeSet<(u64, u64)> = leaves
                .iter()
                .flat_map(|&m| single(m, n))
                .filter(|&(lo, hi)| !leaves.iter().any(|&l| lo <= l && l < hi))
                .collect();
            let set: BTreeSet<(u64, u64)> = multi.iter().copied().collect();
            prop_assert_eq!(set.len(), multi.len(), "a subtree sent twice");
            prop_assert_eq!(set, union);
        }

        /// The length the verifier expects is the length the prover builds.
        #[test]
        fn consistency_lengths(n in 0u64..1 << 40, m in any::<u64>()) {
            let m = m % (n + 1);
            let mut out = Vec::new();
            consistency_ranges(m, n, &mut out);
            prop_assert_eq!(consistency_len(m, n), out.len());
        }

        /// Audit paths have RFC 9162's length: one hash per level where the
        /// leaf's subtree has a sibling.
        #[test]
        fn path_lengths(n in 1u64..1 << 40, m in any::<u64>()) {
            let m = m % n;
            let len = single(m, n).len() as u32;
            prop_assert_eq!(path_len(m, n), len as usize);
            // Bounded by the height, exact for powers of two.
            prop_assert!(len <= 64 - (n - 1).leading_zeros());
            if n.is_power_of_two() {
                prop_assert_eq!(len, n.trailing_zeros());
            }
        }
    }
}
