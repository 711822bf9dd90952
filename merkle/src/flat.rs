//! In-order flat-tree index arithmetic.
//!
//! A binary tree over `n` leaves is stored in one array: leaf `k` sits at
//! index `2k`, and every parent sits between its two children. The number of
//! trailing 1 bits of an index is its depth (leaves have depth 0), so every
//! relation (parent, sibling, children, covered leaves) is a few bit
//! operations. The same layout is used by hypercore and Dat.
//!
//! ```text
//! depth 2:          3
//! depth 1:    1           5
//! depth 0: 0     2     4     6
//! ```
//!
//! All functions are total `const fn`s over `u64`. They are exact for indices
//! below `2^62`, which covers any tree that fits in memory; above that the
//! results are unspecified but never panic.

/// `2^exp`, or 0 when `exp >= 64` (keeps every function total).
const fn pow2(exp: u32) -> u64 {
    match 1u64.checked_shl(exp) {
        Some(v) => v,
        None => 0,
    }
}

/// Depth of a node: the number of trailing 1 bits of its index (leaves are 0).
pub const fn depth(index: u64) -> u32 {
    index.trailing_ones()
}

/// Position of a node among the nodes of its depth, counted from the left.
pub const fn offset(index: u64) -> u64 {
    match index.checked_shr(depth(index) + 1) {
        Some(v) => v,
        None => 0,
    }
}

/// Flat index of the node at `depth` and `offset`.
pub const fn index(depth: u32, offset: u64) -> u64 {
    let shifted = match offset.checked_shl(depth + 1) {
        Some(v) => v,
        None => 0,
    };
    shifted | pow2(depth).wrapping_sub(1)
}

/// Flat index of leaf number `leaf`.
pub const fn leaf_index(leaf: u64) -> u64 {
    leaf.wrapping_mul(2)
}

/// Parent of a node.
pub const fn parent(index: u64) -> u64 {
    let d = depth(index);
    self::index(d + 1, offset(index) >> 1)
}

/// The other child of this node's parent.
pub const fn sibling(index: u64) -> u64 {
    let d = depth(index);
    self::index(d, offset(index) ^ 1)
}

/// Whether the node is the left child of its parent.
pub const fn is_left(index: u64) -> bool {
    offset(index) & 1 == 0
}

/// The two children of a node, or `None` for a leaf.
pub const fn children(index: u64) -> Option<(u64, u64)> {
    let d = depth(index);
    if d == 0 {
        return None;
    }
    let half = pow2(d - 1);
    Some((index.wrapping_sub(half), index.wrapping_add(half)))
}

/// Left child of a node, or `None` for a leaf.
pub const fn left_child(index: u64) -> Option<u64> {
    match children(index) {
        Some((l, _)) => Some(l),
        None => None,
    }
}

/// Right child of a node, or `None` for a leaf.
pub const fn right_child(index: u64) -> Option<u64> {
    match children(index) {
        Some((_, r)) => Some(r),
        None => None,
    }
}

/// Flat index of the leftmost leaf under a node.
pub const fn left_span(index: u64) -> u64 {
    index.wrapping_sub(pow2(depth(index)).wrapping_sub(1))
}

/// Flat index of the rightmost leaf under a node.
pub const fn right_span(index: u64) -> u64 {
    index.wrapping_add(pow2(depth(index)).wrapping_sub(1))
}

/// Flat indices of the leftmost and rightmost leaves under a node.
pub const fn span(index: u64) -> (u64, u64) {
    (left_span(index), right_span(index))
}

/// Number of leaves under a node: `2^depth`.
pub const fn leaf_count(index: u64) -> u64 {
    pow2(depth(index))
}

/// Leaf numbers `[first, end)` covered by a node.
pub const fn leaf_range(index: u64) -> (u64, u64) {
    let first = left_span(index) / 2;
    (first, first.wrapping_add(leaf_count(index)))
}

/// Whether the node is complete (all leaves under it exist) in a tree of
/// `leaves` leaves.
pub const fn is_complete(index: u64, leaves: u64) -> bool {
    leaves > 0 && right_span(index) <= leaf_index(leaves - 1)
}

/// Number of full roots (maximal perfect subtrees) of a tree of `leaves` leaves.
pub const fn full_root_count(leaves: u64) -> u32 {
    leaves.count_ones()
}

/// Iterator over the flat indices of the full roots of a tree, left to right.
///
/// A tree of `n` leaves is a forest of perfect subtrees, one per 1 bit of `n`,
/// largest first. RFC 6962 folds them right to left into the tree hash.
#[derive(Debug, Clone)]
pub struct FullRoots {
    next_leaf: u64,
    remaining: u64,
}

impl FullRoots {
    /// Full roots of a tree of `leaves` leaves.
    pub const fn new(leaves: u64) -> Self {
        Self {
            next_leaf: 0,
            remaining: leaves,
        }
    }

    /// Next full root, as a `const fn` step.
    pub const fn next_root(&mut self) -> Option<u64> {
        if self.remaining == 0 {
            return None;
        }
        let size = pow2(63 - self.remaining.leading_zeros());
        let root = leaf_index(self.next_leaf).wrapping_add(size - 1);
        self.next_leaf += size;
        self.remaining -= size;
        Some(root)
    }
}

impl Iterator for FullRoots {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        self.next_root()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining.count_ones() as usize;
        (n, Some(n))
    }
}

/// Full roots of a tree of `leaves` leaves, left to right.
pub const fn full_roots(leaves: u64) -> FullRoots {
    FullRoots::new(leaves)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    /// Naive reference: build the tree level by level as explicit nodes.
    /// Each node is (depth, first_leaf, leaf_count) at a flat index found by
    /// in-order numbering of a perfect tree of height `h`.
    fn naive(h: u32) -> Vec<(u32, u64, u64)> {
        // In-order traversal of a perfect tree with 2^h leaves.
        fn walk(d: u32, first: u64, out: &mut Vec<(u32, u64, u64)>) {
            if d == 0 {
                out.push((0, first, 1));
                return;
            }
            let half = 1u64 << (d - 1);
            walk(d - 1, first, out);
            out.push((d, first, 1 << d));
            walk(d - 1, first + half, out);
        }
        let mut out = Vec::new();
        walk(h, 0, &mut out);
        out
    }

    #[test]
    fn matches_naive_in_order_numbering() {
        let h = 8;
        let nodes = naive(h);
        for (i, &(d, first, count)) in nodes.iter().enumerate() {
            let i = i as u64;
            assert_eq!(depth(i), d, "depth of {i}");
            assert_eq!(leaf_range(i), (first, first + count), "range of {i}");
            assert_eq!(leaf_count(i), count);
            assert_eq!(index(depth(i), offset(i)), i);
            if d < h {
                // The parent is the node of depth d+1 whose range contains ours.
                let p = parent(i);
                let (pd, pf, pc) = nodes[p as usize];
                assert_eq!(pd, d + 1);
                assert!(pf <= first && first + count <= pf + pc);
                let s = sibling(i);
                assert_ne!(s, i);
                assert_eq!(parent(s), p);
                let (l, r) = children(p).unwrap();
                assert!(l == i || r == i);
                assert_eq!(is_left(i), l == i);
            }
            match children(i) {
                None => assert_eq!(d, 0),
                Some((l, r)) => {
                    assert_eq!(nodes[l as usize].1, first);
                    assert_eq!(nodes[r as usize].1 + nodes[r as usize].2, first + count);
                    assert_eq!(left_child(i), Some(l));
                    assert_eq!(right_child(i), Some(r));
                }
            }
        }
    }

    #[test]
    fn hand_checked_examples() {
        // From the layout diagram in the module docs.
        assert_eq!(depth(3), 2);
        assert_eq!(parent(0), 1);
        assert_eq!(parent(2), 1);
        assert_eq!(parent(1), 3);
        assert_eq!(parent(5), 3);
        assert_eq!(sibling(1), 5);
        assert_eq!(children(3), Some((1, 5)));
        assert_eq!(span(3), (0, 6));
        assert_eq!(full_roots(5).collect::<Vec<_>>(), [3, 8]);
        assert_eq!(full_roots(7).collect::<Vec<_>>(), [3, 9, 12]);
        assert_eq!(full_roots(0).count(), 0);
        assert!(is_complete(3, 4));
        assert!(!is_complete(3, 3));
        assert!(!is_complete(0, 0));
    }

    #[test]
    fn total_at_the_edges() {
        for i in [u64::MAX, u64::MAX - 1, 1 << 63, (1 << 63) - 1] {
            let _ = (
                parent(i),
                sibling(i),
                children(i),
                span(i),
                offset(i),
                leaf_range(i),
            );
        }
        assert_eq!(full_roots(u64::MAX).count(), 64);
    }

    /// Naive full roots: greedy largest power of two that fits.
    fn naive_full_roots(n: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut rest = n;
        while rest > 0 {
            let mut size = 1;
            while size * 2 <= rest {
                size *= 2;
            }
            // The node covering leaves [start, start+size) is the one whose
            // span is flat [2start, 2(start+size-1)]; its index is the midpoint.
            out.push((2 * start + 2 * (start + size - 1)) / 2);
            start += size;
            rest -= size;
        }
        out
    }

    proptest! {
        #[test]
        fn relations_are_consistent(i in 0u64..(1 << 40)) {
            let p = parent(i);
            let (l, r) = children(p).unwrap();
            prop_assert!(l == i || r == i);
            prop_assert_eq!(sibling(i), if l == i { r } else { l });
            prop_assert_eq!(depth(p), depth(i) + 1);
            prop_assert_eq!(left_span(i) % 2, 0);
            prop_assert_eq!(right_span(i) - left_span(i), 2 * (leaf_count(i) - 1));
            prop_assert!(left_span(p) <= left_span(i) && right_span(i) <= right_span(p));
            prop_assert_eq!((left_span(i) + right_span(i)) / 2, i);
        }

        #[test]
        fn full_roots_match_naive(n in 0u64..(1 << 40)) {
            let roots: Vec<u64> = full_roots(n).collect();
            prop_assert_eq!(&roots, &naive_full_roots(n));
            prop_assert_eq!(roots.len() as u32, full_root_count(n));
            // Full roots tile the leaves exactly.
            let mut next = 0;
            for r in roots {
                let (first, end) = leaf_range(r);
                prop_assert_eq!(first, next);
                prop_assert!(is_complete(r, n));
                prop_assert!(!is_complete(parent(r), n));
                next = end;
            }
            prop_assert_eq!(next, n);
        }
    }
}
