//! Known answers from independent sources: the Certificate Transparency /
//! transparency-dev test data for RFC 6962 trees (`testonly/constants.go`
//! and `proof/verify_test.go` of github.com/transparency-dev/merkle), and
//! RFC 8032 section 7.1 for Ed25519.
#![cfg(feature = "sha2")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use quorate_merkle::{
    ConsistencyProof, Hash, InclusionProof, MerkleHasher, MerkleTree, Sha256, flat,
};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn h(s: &str) -> Hash {
    Hash(hex(s).try_into().unwrap())
}

const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// Tree hashes for sizes 0..=8.
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// Every complete node of the 8-leaf tree, by level then position.
const NODES: [&[&str]; 4] = [
    &[
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    &[
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    &[
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
];

fn tree(size: usize) -> MerkleTree<Sha256> {
    MerkleTree::from_leaves(LEAVES[..size].iter().map(|l| hex(l)))
}

#[test]
fn tree_hashes_match_ct_for_every_size() {
    for (size, root) in ROOTS.iter().enumerate() {
        let t = tree(size);
        assert_eq!(t.tree_hash(), h(root), "size {size}");
        assert_eq!(
            tree(8).tree_hash_at(size as u64).unwrap(),
            h(root),
            "prefix {size}"
        );
        // The size-bound root is our own construction over the RFC hash.
        assert_eq!(t.root(), Sha256::bind_root(size as u64, &h(root)));
    }
}

#[test]
fn every_flat_node_matches_ct() {
    let t = tree(8);
    for (level, nodes) in NODES.iter().enumerate() {
        for (offset, node) in nodes.iter().enumerate() {
            let index = flat::index(level as u32, offset as u64);
            assert_eq!(
                t.node(index),
                Some(h(node)),
                "level {level} offset {offset}"
            );
        }
    }
}

/// (0-based leaf, size, audit path) from transparency-dev's verify_test.go
/// (which lists leaves 1-based).
fn inclusion_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (0, 1, vec![]),
        (
            0,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            5,
            8,
            vec![
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            2,
            3,
            vec![h(
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            )],
        ),
        (
            1,
            5,
            vec![
                h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
    ]
}

/// What, leaf index, tree size, path, tree hash, leaf hash.
type InclusionProbe = (&'static str, u64, u64, Vec<Hash>, Hash, Hash);
/// What, old size, new size, old tree hash, new tree hash, path.
type ConsistencyProbe = (&'static str, u64, u64, Hash, Hash, Vec<Hash>);

/// Mutations of a good inclusion probe that must all fail, after
/// transparency-dev's `corruptInclusionProof`.
fn tampered_inclusions(
    leaf: u64,
    size: u64,
    path: &[Hash],
    tree_hash: Hash,
    leaf_hash: Hash,
) -> Vec<InclusionProbe> {
    let some = h("abacaba000000000000000000000000000000000000000000060061e00123456");
    let empty = h(ROOTS[0]);
    let p = path.to_vec();
    let mut out = vec![
        (
            "index - 1",
            leaf.wrapping_sub(1),
            size,
            p.clone(),
            tree_hash,
            leaf_hash,
        ),
        ("index + 1", leaf + 1, size, p.clone(), tree_hash, leaf_hash),
        ("index ^ 2", leaf ^ 2, size, p.clone(), tree_hash, leaf_hash),
        ("size * 2", leaf, size * 2, p.clone(), tree_hash, leaf_hash),
        ("size / 2", leaf, size / 2, p.clone(), tree_hash, leaf_hash),
        (
            "wrong leaf",
            leaf,
            size,
            p.clone(),
            tree_hash,
            Sha256::hash_leaf(b"WrongLeaf"),
        ),
        ("empty root", leaf, size, p.clone(), empty, leaf_hash),
        ("random root", leaf, size, p.clone(), some, leaf_hash),
        (
            "trailing root",
            leaf,
            size,
            [&p[..], &[tree_hash]].concat(),
            tree_hash,
            leaf_hash,
        ),
        (
            "preceding root",
            leaf,
            size,
            [&[tree_hash], &p[..]].concat(),
            tree_hash,
            leaf_hash,
        ),
    ];
    for i in 0..p.len() {
        let mut q = p.clone();
        q[i].0[0] ^= 8;
        out.push(("flipped bit", leaf, size, q, tree_hash, leaf_hash));
    }
    if !p.is_empty() {
        out.push((
            "removed component",
            leaf,
            size,
            p[..p.len() - 1].to_vec(),
            tree_hash,
            leaf_hash,
        ));
    }
    if p.len() > 1 {
        let q = [&[p[0], some], &p[1..]].concat();
        out.push(("inserted component", leaf, size, q, tree_hash, leaf_hash));
    }
    out
}

#[test]
fn inclusion_proofs_match_ct_both_ways() {
    let t = tree(8);
    for (leaf, size, path) in inclusion_vectors() {
        // We produce theirs exactly.
        let proof = t.inclusion_proof_at(leaf, size).unwrap();
        assert_eq!(proof.hashes(), &path[..], "leaf {leaf} size {size}");
        assert_eq!(
            InclusionProof::from_bytes(&proof.to_bytes()).unwrap(),
            proof
        );
        // We verify theirs, on raw hashes and on our size-bound root.
        let vector = InclusionProof::new(path.clone());
        let data = hex(LEAVES[leaf as usize]);
        let leaf_hash = Sha256::hash_leaf(&data);
        let tree_hash = h(ROOTS[size as usize]);
        assert_eq!(
            vector.tree_hash::<Sha256>(leaf, &leaf_hash, size).unwrap(),
            tree_hash
        );
        vector
            .verify_tree_hash::<Sha256>(leaf, &leaf_hash, size, &tree_hash)
            .unwrap();
        vector
            .verify::<Sha256>(leaf, &data, size, &t.root_at(size).unwrap())
            .unwrap();
        // We reject every tampered variant.
        for (what, l, s, p, th, lh) in tampered_inclusions(leaf, size, &path, tree_hash, leaf_hash)
        {
            assert!(
                InclusionProof::new(p)
                    .verify_tree_hash::<Sha256>(l, &lh, s, &th)
                    .is_err(),
                "{what}: leaf {leaf} size {size}"
            );
        }
    }
}

#[test]
fn inclusion_edge_cases_are_refused() {
    let some = h("abacaba000000000000000000000000000000000000000000060061e00123456");
    let empty = h(ROOTS[0]);
    for (index, size) in [(0, 0), (1, 0), (2, 1), (1, 1)] {
        for (leaf, root) in [(some, empty), (empty, some), (some, some)] {
            assert!(
                InclusionProof::new(vec![])
                    .verify_tree_hash::<Sha256>(index, &leaf, size, &root)
                    .is_err(),
                "index {index} size {size}"
            );
        }
    }
    // A one-leaf tree: the leaf hash is the tree hash, the path is empty.
    let leaf = Sha256::hash_leaf(b"data");
    InclusionProof::new(vec![])
        .verify_tree_hash::<Sha256>(0, &leaf, 1, &leaf)
        .unwrap();
}

/// (old size, new size, RFC 9162 consistency path) from verify_test.go.
fn consistency_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (1, 1, vec![]),
        (
            1,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            6,
            8,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            2,
            5,
            vec![
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
        (
            6,
            7,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
    ]
}

/// Mutations of a good consistency probe that must all fail, after
/// transparency-dev's `corruptConsistencyProof`.
fn tampered_consistencies(
    old: u64,
    new: u64,
    old_hash: Hash,
    new_hash: Hash,
    path: &[Hash],
) -> Vec<ConsistencyProbe> {
    let wrong = Sha256::hash_leaf(b"WrongRoot");
    let p = path.to_vec();
    let mut out = vec![
        ("old - 1", old - 1, new, old_hash, new_hash, p.clone()),
        ("old + 1", old + 1, new, old_hash, new_hash, p.clone()),
        ("old ^ 2", old ^ 2, new, old_hash, new_hash, p.clone()),
        ("new * 2", old, new * 2, old_hash, new_hash, p.clone()),
        ("new / 2", old, new / 2, old_hash, new_hash, p.clone()),
        ("wrong old hash", old, new, wrong, new_hash, p.clone()),
        ("wrong new hash", old, new, old_hash, wrong, p.clone()),
        ("swapped hashes", old, new, new_hash, old_hash, p.clone()),
        ("empty proof", old, new, old_hash, new_hash, vec![]),
        (
            "trailing old hash",
            old,
            new,
            old_hash,
            new_hash,
            [&p[..], &[old_hash]].concat(),
        ),
        (
            "trailing new hash",
            old,
            new,
            old_hash,
            new_hash,
            [&p[..], &[new_hash]].concat(),
        ),
        (
            "preceding old hash",
            old,
            new,
            old_hash,
            new_hash,
            [&[old_hash], &p[..]].concat(),
        ),
        (
            "preceding new hash",
            old,
            new,
            old_hash,
            new_hash,
            [&[new_hash], &p[..]].concat(),
        ),
        (
            "preceding proof[0]",
            old,
            new,
            old_hash,
            new_hash,
            [&[p[0]], &p[..]].concat(),
        ),
        (
            "truncated",
            old,
            new,
            old_hash,
            new_hash,
            p[..p.len() - 1].to_vec(),
        ),
    ];
    for i in 0..p.len() {
        let mut q = p.clone();
        q[i].0[0] ^= 16;
        out.push(("flipped bit", old, new, old_hash, new_hash, q));
    }
    out
}

#[test]
fn consistency_proofs_match_ct_both_ways() {
    let t8 = tree(8);
    for (old, new, path) in consistency_vectors() {
        // We produce theirs exactly, from the tree of `new` leaves and from
        // the larger tree (a proof between two earlier sizes).
        let t = tree(new as usize);
        assert_eq!(
            t.consistency_proof(old, new).unwrap().hashes(),
            &path[..],
            "{old} -> {new}"
        );
        assert_eq!(
            t8.consistency_proof(old, new).unwrap().hashes(),
            &path[..],
            "{old} -> {new} in 8"
        );
        // We verify theirs, on raw hashes and on tree heads.
        let (old_hash, new_hash) = (h(ROOTS[old as usize]), h(ROOTS[new as usize]));
        let vector = ConsistencyProof::new(path.clone());
        vector
            .verify_tree_hashes::<Sha256>(old, &old_hash, new, &new_hash)
            .unwrap();
        vector
            .verify::<Sha256>(
                &t8.tree_head_at(old).unwrap(),
                &t8.tree_head_at(new).unwrap(),
            )
            .unwrap();
        if path.is_empty() {
            continue;
        }
        // We reject every tampered variant.
        for (what, o, n, oh, nh, p) in tampered_consistencies(old, new, old_hash, new_hash, &path) {
            assert!(
                ConsistencyProof::new(p)
                    .verify_tree_hashes::<Sha256>(o, &oh, n, &nh)
                    .is_err(),
                "{what}: {old} -> {new}"
            );
        }
    }
}

#[test]
fn consistency_edge_cases_follow_ct() {
    let (a, b) = (
        Sha256::hash_leaf(b"don't care 1"),
        Sha256::hash_leaf(b"don't care 2"),
    );
    let empty = h(ROOTS[0]);
    let none = ConsistencyProof::new(vec![]);
    let one = ConsistencyProof::new(vec![empty]);
    let check = |p: &ConsistencyProof, o, n, oh: &Hash, nh: &Hash| {
        p.verify_tree_hashes::<Sha256>(o, oh, n, nh).is_ok()
    };
    // Equal sizes need equal hashes; the empty tree is a prefix of every tree.
    assert!(!check(&none, 0, 0, &a, &b));
    assert!(!check(&none, 1, 1, &a, &b));
    assert!(check(&none, 0, 0, &a, &a));
    assert!(check(&none, 0, 1, &a, &b));
    assert!(check(&none, 1, 1, &b, &b));
    // Time travel, an empty proof for a real extension, a proof where none is due.
    assert!(!check(&none, 1, 0, &a, &b));
    assert!(!check(&none, 2, 1, &a, &b));
    assert!(!check(&none, 1, 2, &a, &b));
    assert!(!check(&one, 0, 0, &empty, &empty));
    assert!(!check(&one, 0, 1, &empty, &empty));
    assert!(!check(&one, 1, 1, &empty, &empty));
}

#[cfg(feature = "ed25519")]
#[test]
fn ed25519_rfc8032_test_1() {
    use quorate_merkle::{Signer, Verifier, signed::Ed25519Signer};
    let secret: [u8; 32] = hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
        .try_into()
        .unwrap();
    let signer = Ed25519Signer::from_secret_bytes(&secret);
    let verifier = signer.verifier();
    assert_eq!(
        verifier.to_bytes().to_vec(),
        hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    );
    let sig = signer.sign(b"");
    assert_eq!(
        sig,
        hex(
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        )
    );
    assert!(verifier.verify(b"", &sig));
    assert!(!verifier.verify(b"x", &sig));
    assert!(!verifier.verify(b"", &sig[..63]));
}
