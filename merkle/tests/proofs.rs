//! Property tests of proofs: they verify exactly for what they were made for,
//! every single-bit change is caught, multi-proofs are the union of single
//! proofs, consistency proofs hold exactly for prefixes, and decoding random
//! bytes never panics.
#![cfg(feature = "sha2")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use quorate_merkle::{
    ConsistencyProof, Error, Hash, InclusionProof, MerkleHasher, MerkleTree, MultiProof, Root,
    Sha256, SignedRoot, sync::Message,
};
use std::collections::BTreeSet;

/// Distinct leaves, so no two positions can stand in for each other.
fn leaves(n: u64, salt: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| [&i.to_le_bytes()[..], &[salt]].concat())
        .collect()
}

fn tree(n: u64) -> MerkleTree<Sha256> {
    MerkleTree::from_leaves(leaves(n, 0))
}

fn flip(bytes: &mut [u8], bit: usize) {
    bytes[bit / 8] ^= 1 << (bit % 8);
}

fn flip_root(root: &Root, bit: usize) -> Root {
    let mut r = *root;
    flip(&mut r.0.0, bit % 256);
    r
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn inclusion_verifies_iff_made_for_that_leaf_size_and_root(n in 1u64..200, i in any::<prop::sample::Index>(),
            j in any::<prop::sample::Index>(), m in any::<prop::sample::Index>()) {
        let t = tree(n);
        let data = leaves(n, 0);
        let (i, j, m) = (i.index(n as usize) as u64, j.index(n as usize) as u64, m.index(n as usize) as u64 + 1);
        let root = t.root();
        let proof = t.inclusion_proof(i).unwrap();
        prop_assert!(proof.verify::<Sha256>(i, &data[i as usize], n, &root).is_ok());
        // Another index, size or root: rejected.
        if j != i {
            prop_assert!(proof.verify::<Sha256>(j, &data[i as usize], n, &root).is_err());
            prop_assert!(proof.verify::<Sha256>(i, &data[j as usize], n, &root).is_err());
        }
        if m != n && i < m {
            prop_assert!(proof.verify::<Sha256>(i, &data[i as usize], m, &t.root_at(m).unwrap()).is_err());
            // The tree hash of the prefix with the full size is no root either.
            prop_assert!(proof.verify::<Sha256>(i, &data[i as usize], m, &root).is_err());
        }
        prop_assert!(proof.verify::<Sha256>(i, &data[i as usize], n + 1, &root).is_err());
        let other = MerkleTree::<Sha256>::from_leaves(leaves(n, 1)).root();
        prop_assert!(proof.verify::<Sha256>(i, &data[i as usize], n, &other).is_err());
        // The proof made for a prefix verifies against the prefix's root.
        if i < m {
            let p = t.inclusion_proof_at(i, m).unwrap();
            prop_assert!(p.verify::<Sha256>(i, &data[i as usize], m, &t.root_at(m).unwrap()).is_ok());
        }
    }

    #[test]
    fn any_single_bit_flip_is_rejected(n in 1u64..200, i in any::<prop::sample::Index>(), bit in any::<prop::sample::Index>()) {
        let t = tree(n);
        let data = leaves(n, 0);
        let i = i.index(n as usize) as u64;
        let root = t.root();
        let proof = t.inclusion_proof(i).unwrap();
        // In the encoded proof (tag, count or a hash).
        let mut bytes = proof.to_bytes();
        let b = bit.index(bytes.len() * 8);
        flip(&mut bytes, b);
        if let Ok(p) = InclusionProof::from_bytes(&bytes) {
            prop_assert!(p.verify::<Sha256>(i, &data[i as usize], n, &root).is_err());
        }
        // Two hashes swapped (reordered proof).
        let h = proof.hashes();
        if h.len() >= 2 {
            let (a, b) = (bit.index(h.len()), (bit.index(h.len()) + 1) % h.len());
            let mut swapped = h.to_vec();
            swapped.swap(a, b);
            let swapped = InclusionProof::new(swapped);
            prop_assert!(swapped.verify::<Sha256>(i, &data[i as usize], n, &root).is_err());
        }
        // In the leaf.
        let mut leaf = data[i as usize].clone();
        let b = bit.index(leaf.len() * 8);
        flip(&mut leaf, b);
        prop_assert!(proof.verify::<Sha256>(i, &leaf, n, &root).is_err());
        // In the root.
        prop_assert!(proof.verify::<Sha256>(i, &data[i as usize], n, &flip_root(&root, bit.index(256))).is_err());
    }

    #[test]
    fn multi_proof_is_union_of_single_proofs(n in 1u64..300, picks in prop::collection::btree_set(any::<u64>(), 1..20)) {
        let t = tree(n);
        let data = leaves(n, 0);
        let idx: Vec<u64> = picks.iter().map(|p| p % n).collect::<BTreeSet<_>>().into_iter().collect();
        let multi = t.multi_proof(&idx).unwrap();
        let root = t.root();
        let with_data: Vec<(u64, &[u8])> = idx.iter().map(|&i| (i, data[i as usize].as_slice())).collect();
        prop_assert!(multi.verify::<Sha256, _>(&with_data, n, &root).is_ok());
        // Every multi-proof hash is in some single proof, and none repeats:
        // shared nodes are sent once.
        let singles: BTreeSet<Hash> = idx.iter().flat_map(|&i| t.inclusion_proof(i).unwrap().hashes().to_vec()).collect();
        let hashes: BTreeSet<Hash> = multi.hashes().iter().copied().collect();
        prop_assert_eq!(hashes.len(), multi.hashes().len());
        prop_assert!(hashes.is_subset(&singles));
        // Each single proof is covered: its hashes are in the multi-proof or
        // computable from the proven leaves (the multi verifies with exactly
        // those), and never larger than their sum.
        let total: usize = idx.iter().map(|&i| t.inclusion_proof(i).unwrap().hashes().len()).sum();
        prop_assert!(multi.hashes().len() <= total);
        // One leaf: the multi-proof is the single proof's node set.
        let one = t.multi_proof(&idx[..1]).unwrap();
        let single: BTreeSet<Hash> = t.inclusion_proof(idx[0]).unwrap().hashes().iter().copied().collect();
        prop_assert_eq!(one.hashes().iter().copied().collect::<BTreeSet<_>>(), single);
        // A changed leaf, a missing leaf, a flipped hash: rejected.
        let mut bad = with_data.clone();
        let wrong = b"not a leaf".to_vec();
        bad[0].1 = &wrong;
        prop_assert!(multi.verify::<Sha256, _>(&bad, n, &root).is_err());
        if with_data.len() > 1 {
            prop_assert!(multi.verify::<Sha256, _>(&with_data[1..], n, &root).is_err());
        }
        if !multi.hashes().is_empty() {
            let mut bytes = multi.to_bytes();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            let p = MultiProof::from_bytes(&bytes).unwrap();
            prop_assert!(p.verify::<Sha256, _>(&with_data, n, &root).is_err());
        }
    }

    #[test]
    fn consistency_holds_exactly_for_prefixes(n in 0u64..150, m in any::<prop::sample::Index>(),
            change in any::<prop::sample::Index>(), bit in any::<prop::sample::Index>()) {
        let t = tree(n);
        let m = m.index(n as usize + 1) as u64;
        let proof = t.consistency_proof(m, n).unwrap();
        let old_head = t.tree_head_at(m).unwrap();
        prop_assert!(proof.verify::<Sha256>(&old_head, &t.tree_head()).is_ok());
        // The same proof through its encoding.
        let decoded = ConsistencyProof::from_bytes(&proof.to_bytes()).unwrap();
        prop_assert_eq!(&decoded, &proof);
        if m > 0 && m < n {
            // An old tree that is not a prefix: one leaf changed.
            let mut old = leaves(m, 0);
            let c = change.index(m as usize);
            old[c].push(0xff);
            let other = MerkleTree::<Sha256>::from_leaves(old).tree_head();
            prop_assert!(proof.verify::<Sha256>(&other, &t.tree_head()).is_err());
            // A flipped bit anywhere in the proof.
            let mut bytes = proof.to_bytes();
            let b = bit.index(bytes.len() * 8);
            flip(&mut bytes, b);
            if let Ok(p) = ConsistencyProof::from_bytes(&bytes) {
                prop_assert!(p.verify::<Sha256>(&old_head, &t.tree_head()).is_err());
            }
            // Wrong sizes.
            prop_assert!(proof.verify::<Sha256>(&t.tree_head_at(m - 1).unwrap(), &t.tree_head()).is_err());
            prop_assert!(proof.verify::<Sha256>(&old_head, &t.tree_head_at(n - 1).unwrap()).is_err());
            // Tree heads swapped.
            prop_assert!(proof.verify::<Sha256>(&t.tree_head(), &old_head).is_err());
        }
    }

    #[test]
    fn decoding_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = InclusionProof::from_bytes(&bytes);
        let _ = MultiProof::from_bytes(&bytes);
        let _ = ConsistencyProof::from_bytes(&bytes);
        let _ = SignedRoot::from_bytes(&bytes);
        let _ = Message::from_bytes(&bytes);
        // Also behind every valid tag.
        for tag in 0..8u8 {
            let mut tagged = vec![tag];
            tagged.extend_from_slice(&bytes);
            let _ = InclusionProof::from_bytes(&tagged);
            let _ = MultiProof::from_bytes(&tagged);
            let _ = Message::from_bytes(&tagged);
        }
    }

    #[test]
    fn append_equals_bulk_build(n in 0u64..300, extra in 0u64..50) {
        let data = leaves(n + extra, 0);
        let bulk = MerkleTree::<Sha256>::from_leaves(&data);
        let mut grown = MerkleTree::<Sha256>::from_leaves(&data[..n as usize]);
        for d in &data[n as usize..] {
            grown.push(d);
        }
        prop_assert_eq!(grown.root(), bulk.root());
        for k in 0..2 * (n + extra) {
            prop_assert_eq!(grown.node(k), bulk.node(k));
        }
        // Rebuilding in a cleared tree gives the same tree again.
        grown.clear();
        prop_assert!(grown.is_empty());
        prop_assert_eq!(grown.root(), MerkleTree::<Sha256>::new().root());
        grown.extend(&data);
        prop_assert_eq!(grown.root(), bulk.root());
        // Incomplete nodes are never handed out.
        prop_assert_eq!(bulk.node(2 * (n + extra)), None);
        if !(n + extra).is_power_of_two() && n + extra > 1 {
            let top = quorate_merkle::flat::parent(bulk.full_roots().next().unwrap());
            prop_assert_eq!(bulk.node(top), None);
        }
    }
}

/// A reference tree hash straight from RFC 9162 section 2.1.1's recursion.
fn rfc_mth(leaves: &[Vec<u8>]) -> Hash {
    match leaves.len() {
        0 => Sha256::hash_empty(),
        1 => Sha256::hash_leaf(&leaves[0]),
        n => {
            let k = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
            Sha256::hash_node(&rfc_mth(&leaves[..k]), &rfc_mth(&leaves[k..]))
        }
    }
}

#[test]
fn tree_hash_matches_rfc_recursion_for_every_size_to_130() {
    let data = leaves(130, 7);
    for n in 0..=130 {
        let t = MerkleTree::<Sha256>::from_leaves(&data[..n]);
        assert_eq!(t.tree_hash(), rfc_mth(&data[..n]), "size {n}");
        assert_eq!(t.len(), n as u64);
    }
}

#[test]
fn typed_errors_for_bad_input() {
    let t = tree(10);
    let root = t.root();
    let d = leaves(10, 0);
    assert_eq!(
        t.inclusion_proof(10).unwrap_err(),
        Error::LeafOutOfRange {
            index: 10,
            size: 10
        }
    );
    assert_eq!(
        t.consistency_proof(3, 11).unwrap_err(),
        Error::SizeOutOfRange {
            size: 11,
            limit: 10
        }
    );
    assert_eq!(
        t.consistency_proof(5, 3).unwrap_err(),
        Error::SizeOutOfRange { size: 5, limit: 3 }
    );
    assert_eq!(t.multi_proof(&[]).unwrap_err(), Error::NoLeaves);
    assert_eq!(
        t.multi_proof(&[3, 3]).unwrap_err(),
        Error::UnsortedLeaves {
            previous: 3,
            index: 3
        }
    );
    let p = t.inclusion_proof(3).unwrap();
    let short = InclusionProof::new(p.hashes()[1..].to_vec());
    assert!(matches!(
        short.verify::<Sha256>(3, &d[3], 10, &root),
        Err(Error::ProofLength { .. })
    ));
    assert_eq!(
        p.verify::<Sha256>(3, &d[3], 10, &Root::default()),
        Err(Error::RootMismatch)
    );
    assert!(matches!(
        InclusionProof::from_bytes(&[2, 0]),
        Err(Error::UnknownTag { .. })
    ));
    assert!(matches!(
        InclusionProof::from_bytes(&[1, 1]),
        Err(Error::Truncated { .. })
    ));
    assert!(matches!(
        InclusionProof::from_bytes(&[1, 0, 0]),
        Err(Error::TrailingBytes { extra: 1 })
    ));
    assert!(matches!(
        InclusionProof::from_bytes(&[1, 100]),
        Err(Error::TooLong { .. })
    ));
    // A huge count never allocates: it fails on the missing bytes.
    assert!(matches!(
        MultiProof::from_bytes(&[2, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        Err(Error::Truncated { .. })
    ));
}

#[cfg(feature = "blake3")]
#[test]
fn blake3_trees_prove_too() {
    use quorate_merkle::Blake3;
    let data = leaves(77, 0);
    let t = MerkleTree::<Blake3>::from_leaves(&data);
    for i in [0, 31, 64, 76] {
        let p = t.inclusion_proof(i).unwrap();
        p.verify::<Blake3>(i, &data[i as usize], 77, &t.root())
            .unwrap();
        assert!(
            p.verify::<Sha256>(i, &data[i as usize], 77, &t.root())
                .is_err()
        );
    }
    t.consistency_proof(40, 77)
        .unwrap()
        .verify::<Blake3>(&t.tree_head_at(40).unwrap(), &t.tree_head())
        .unwrap();
}
