//! An independent reference: RFC 9162 section 2.1's recursive definitions
//! (`MTH`, `PATH`, `PROOF`/`SUBPROOF`) transcribed straight from the text over
//! plain SHA-256, with none of the crate's flat layout or index walks, and
//! compared with the crate over random sizes.
#![cfg(feature = "sha2")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use quorate_merkle::{ConsistencyProof, Hash, InclusionProof, MerkleTree, Sha256};
use sha2::Digest;

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
    }
    Hash(h.finalize().into())
}

/// "the largest power of two smaller than n (i.e., k < n <= 2k)".
fn k(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// `MTH(D[n])`, section 2.1.1.
fn mth(d: &[Vec<u8>]) -> Hash {
    match d.len() {
        0 => sha256(&[]),
        1 => sha256(&[&[0x00], &d[0]]),
        n => {
            let k = k(n);
            sha256(&[&[0x01], &mth(&d[..k]).0, &mth(&d[k..]).0])
        }
    }
}

/// `PATH(m, D[n])`, section 2.1.3.1.
fn path(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
    let n = d.len();
    if n == 1 {
        return vec![];
    }
    let k = k(n);
    if m < k {
        let mut p = path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

/// `PROOF(m, D[n])` = `SUBPROOF(m, D[n], true)`, section 2.1.4.1.
fn proof(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
    if m == 0 || m == d.len() {
        return vec![];
    }
    subproof(m, d, true)
}

fn subproof(m: usize, d: &[Vec<u8>], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![mth(d)] };
    }
    let k = k(n);
    if m <= k {
        let mut p = subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

/// Distinct leaves of varied lengths.
fn data(n: usize, salt: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| [&vec![salt; i % 7][..], &(i as u32).to_be_bytes()].concat())
        .collect()
}

#[test]
fn reference_agrees_with_rfc_example_shapes() {
    // Section 2.1.5's seven-leaf example: PROOF(3, D[7]) = [c, d, g, l] (four
    // hashes), PROOF(4, D[7]) = [l] (one: the old tree is a complete subtree),
    // PROOF(6, D[7]) = [i, j, k] (three).
    let d = data(7, 0);
    assert_eq!(proof(3, &d).len(), 4);
    assert_eq!(proof(4, &d), vec![mth(&d[4..])]);
    assert_eq!(proof(6, &d).len(), 3);
    // PATH(0, D[7]) = [b, h, l].
    assert_eq!(
        path(0, &d),
        vec![mth(&d[1..2]), mth(&d[2..4]), mth(&d[4..])]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn crate_matches_reference(n in 1usize..300, extra in 0usize..40,
            m in any::<prop::sample::Index>(), leaf in any::<prop::sample::Index>()) {
        let all = data(n + extra, 3);
        let d = &all[..n];
        let t = MerkleTree::<Sha256>::from_leaves(&all);
        let (m, leaf) = (m.index(n + 1), leaf.index(n));
        let size = n as u64;

        prop_assert_eq!(t.tree_hash_at(size).unwrap(), mth(d));
        prop_assert_eq!(MerkleTree::<Sha256>::from_leaves(d).tree_hash(), mth(d));

        let reference_path = path(leaf, d);
        let ours = t.inclusion_proof_at(leaf as u64, size).unwrap();
        prop_assert_eq!(ours.hashes(), &reference_path[..]);
        InclusionProof::new(reference_path)
            .verify_tree_hash::<Sha256>(leaf as u64, &t.leaf_hash(leaf as u64).unwrap(), size, &mth(d))
            .unwrap();

        let reference_proof = proof(m, d);
        let ours = t.consistency_proof(m as u64, size).unwrap();
        prop_assert_eq!(ours.hashes(), &reference_proof[..]);
        ConsistencyProof::new(reference_proof)
            .verify_tree_hashes::<Sha256>(m as u64, &mth(&d[..m]), size, &mth(d))
            .unwrap();
    }

    /// A consistency proof verifies only for a real prefix: an old tree with
    /// one leaf changed is refused, whatever the sizes.
    #[test]
    fn reference_proofs_refuse_a_changed_prefix(n in 2usize..200, m in any::<prop::sample::Index>(),
            c in any::<prop::sample::Index>()) {
        let d = data(n, 5);
        let m = 1 + m.index(n - 1);
        let mut old = d[..m].to_vec();
        old[c.index(m)].push(0xaa);
        let p = ConsistencyProof::new(proof(m, &d));
        prop_assert!(p.verify_tree_hashes::<Sha256>(m as u64, &mth(&old), n as u64, &mth(&d)).is_err());
    }
}
