//! Hash values, the [`MerkleHasher`] trait and its SHA-256 and BLAKE3
//! implementations.
//!
//! Leaves and parents are hashed with different one-byte prefixes (RFC 6962 /
//! RFC 9162 section 2.1.1: `0x00` for leaves, `0x01` for parents), so a leaf
//! can never be passed off as an interior node (the second-preimage attack on
//! plain Merkle trees). The tree hash is then bound to the leaf count with a
//! third prefix, `0x02`, giving the [`Root`] that proofs are checked against.

use core::fmt;

/// Length in bytes of every hash in this crate.
pub const HASH_LEN: usize = 32;

/// A 32-byte hash of a leaf, a node or a whole tree.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Hash(pub [u8; HASH_LEN]);

impl Hash {
    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }
}

impl AsRef<[u8]> for Hash {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<[u8; HASH_LEN]> for Hash {
    fn from(bytes: [u8; HASH_LEN]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The root of a tree: its RFC 9162 tree hash bound to its leaf count.
///
/// Two trees of different sizes never share a `Root`, so a verifier that
/// holds a trusted `Root` also pins the size a proof must be made for.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Root(pub Hash);

/// A tree size and its RFC 9162 tree hash: the `tree_size` and `root_hash`
/// of an RFC 9162 tree head, what a transparency-log client keeps and checks
/// consistency proofs against.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TreeHead {
    /// Number of leaves.
    pub size: u64,
    /// RFC 9162 Merkle Tree Hash of those leaves.
    pub tree_hash: Hash,
}

impl TreeHead {
    /// The size-bound [`Root`] of this tree head.
    pub fn root<H: MerkleHasher>(&self) -> Root {
        H::bind_root(self.size, &self.tree_hash)
    }
}

/// Domain prefix of leaf hashes (RFC 6962).
pub const LEAF_PREFIX: u8 = 0x00;
/// Domain prefix of parent hashes (RFC 6962).
pub const NODE_PREFIX: u8 = 0x01;
/// Domain prefix binding a tree hash to its size (this crate).
pub const ROOT_PREFIX: u8 = 0x02;

/// A hash function used to build Merkle trees.
///
/// Implementors provide [`hash_parts`](Self::hash_parts), the hash of the
/// concatenation of byte strings; the domain-separated leaf, node and root
/// hashes are derived from it. Implementations may override those for speed
/// but must keep their exact definitions.
pub trait MerkleHasher {
    /// Hash of the concatenation of `parts`.
    fn hash_parts(parts: &[&[u8]]) -> Hash;

    /// `H(0x00 || data)`: the hash of a leaf.
    fn hash_leaf(data: &[u8]) -> Hash {
        Self::hash_parts(&[&[LEAF_PREFIX], data])
    }

    /// `H(0x01 || left || right)`: the hash of a parent.
    fn hash_node(left: &Hash, right: &Hash) -> Hash {
        Self::hash_parts(&[&[NODE_PREFIX], &left.0, &right.0])
    }

    /// `H("")`: the tree hash of the empty tree (RFC 9162).
    fn hash_empty() -> Hash {
        Self::hash_parts(&[])
    }

    /// `H(0x02 || size as u64 big-endian || tree_hash)`: the [`Root`].
    fn bind_root(size: u64, tree_hash: &Hash) -> Root {
        Root(Self::hash_parts(&[
            &[ROOT_PREFIX],
            &size.to_be_bytes(),
            &tree_hash.0,
        ]))
    }
}

/// `0x01 || left || right` in one contiguous buffer: hashing it in one call
/// is faster than three buffered updates.
#[cfg(any(feature = "sha2", feature = "blake3"))]
fn node_message(left: &Hash, right: &Hash) -> [u8; 1 + 2 * HASH_LEN] {
    let mut buf = [0u8; 1 + 2 * HASH_LEN];
    buf[0] = NODE_PREFIX;
    buf[1..1 + HASH_LEN].copy_from_slice(&left.0);
    buf[1 + HASH_LEN..].copy_from_slice(&right.0);
    buf
}

/// RFC 9162 tree hash from the full roots' hashes (left to right): they fold
/// right to left, as the RFC's recursive split does.
pub(crate) fn fold_full_roots<H: MerkleHasher>(
    roots: impl DoubleEndedIterator<Item = Hash>,
) -> Hash {
    roots
        .rev()
        .reduce(|right, left| H::hash_node(&left, &right))
        .unwrap_or_else(H::hash_empty)
}

/// SHA-256, the hash of RFC 6962 and Certificate Transparency.
#[cfg(feature = "sha2")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Sha256;

#[cfg(feature = "sha2")]
impl MerkleHasher for Sha256 {
    fn hash_parts(parts: &[&[u8]]) -> Hash {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for p in parts {
            h.update(p);
        }
        Hash(h.finalize().into())
    }

    fn hash_leaf(data: &[u8]) -> Hash {
        use sha2::Digest;
        Hash(
            sha2::Sha256::new()
                .chain_update([LEAF_PREFIX])
                .chain_update(data)
                .finalize()
                .into(),
        )
    }

    fn hash_node(left: &Hash, right: &Hash) -> Hash {
        use sha2::Digest;
        Hash(sha2::Sha256::digest(node_message(left, right)).into())
    }
}

/// BLAKE3 (used as a plain hash; its own tree mode is not involved).
#[cfg(feature = "blake3")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Blake3;

#[cfg(feature = "blake3")]
impl MerkleHasher for Blake3 {
    fn hash_parts(parts: &[&[u8]]) -> Hash {
        let mut h = blake3::Hasher::new();
        for p in parts {
            h.update(p);
        }
        Hash(*h.finalize().as_bytes())
    }

    fn hash_node(left: &Hash, right: &Hash) -> Hash {
        Hash(*blake3::hash(&node_message(left, right)).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    #[allow(unused_imports)]
    use super::*;

    /// Hex decoding for known answers written as in their sources.
    #[allow(dead_code)]
    pub(crate) fn hex(s: &str) -> Hash {
        let mut out = [0u8; HASH_LEN];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        Hash(out)
    }

    #[cfg(feature = "sha2")]
    #[test]
    fn sha256_known_answers() {
        // FIPS 180-2 / NIST: SHA-256("") and SHA-256("abc").
        assert_eq!(
            Sha256::hash_empty(),
            hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(
            Sha256::hash_parts(&[b"a", b"bc"]),
            hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        // RFC 6962 leaf hash of the empty leaf, SHA-256(0x00), as used in the
        // Certificate Transparency test data.
        assert_eq!(
            Sha256::hash_leaf(b""),
            hex("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
        );
        // The fast path of hash_node is the generic definition.
        let (a, b) = (Sha256::hash_leaf(b"a"), Sha256::hash_leaf(b"b"));
        assert_eq!(
            Sha256::hash_node(&a, &b),
            Sha256::hash_parts(&[&[1], &a.0, &b.0])
        );
    }

    #[cfg(feature = "blake3")]
    #[test]
    fn blake3_known_answers() {
        // BLAKE3 reference: hash of the empty input.
        assert_eq!(
            Blake3::hash_empty(),
            hex("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262")
        );
        let (a, b) = (Blake3::hash_leaf(b"a"), Blake3::hash_leaf(b"b"));
        assert_eq!(
            Blake3::hash_node(&a, &b),
            Blake3::hash_parts(&[&[1], &a.0, &b.0])
        );
        assert_ne!(Blake3::hash_leaf(b""), Blake3::hash_empty());
    }
}
