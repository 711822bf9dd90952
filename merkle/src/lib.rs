//! Merkle trees stored as one flat, in-order, binary-addressable array:
//! inclusion, multi-leaf and consistency proofs, signed roots, tree diff and a
//! Sans-IO block-sync protocol between a sender and a receiver.
//!
//! A [`MerkleTree`] hashes leaves and parents the RFC 9162 (Certificate
//! Transparency) way, so its tree hashes and audit paths interoperate with
//! transparency logs, and binds the leaf count into its [`Root`]. Proof
//! verifiers take the trusted root and size from the caller, never from the
//! proof. [`SignedRoot`] lets a publisher vouch for a root with any signature
//! scheme (Ed25519 built in behind the `ed25519` feature). [`diff`] finds the
//! leaves where two trees differ, and [`sync`] moves the missing blocks from a
//! [`sync::Sender`] to a [`sync::Receiver`], verifying each one, with no I/O of
//! its own: you carry the messages.
//!
//! ```
//! # #[cfg(feature = "sha2")] {
//! use quorate_merkle::{MerkleTree, Sha256};
//!
//! let blocks: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 32]).collect();
//! let tree = MerkleTree::<Sha256>::from_leaves(&blocks);
//! let root = tree.root(); // what a publisher signs, together with tree.len()
//!
//! let proof = tree.inclusion_proof(3).unwrap();
//! let bytes = proof.to_bytes(); // compact: tag, count, raw hashes
//! let proof = quorate_merkle::InclusionProof::from_bytes(&bytes).unwrap();
//! assert!(proof.verify::<Sha256>(3, &blocks[3], 5, &root).is_ok());
//! assert!(proof.verify::<Sha256>(2, &blocks[3], 5, &root).is_err());
//! # }
//! ```
//!
//! # Terms, hashes, time and ids
//! - **Tree hash** is RFC 9162's Merkle Tree Hash `MTH` (the `root_hash` of
//!   an RFC 9162 tree head): [`MerkleTree::tree_hash`], and the raw
//!   verifiers [`InclusionProof::verify_tree_hash`] and
//!   [`ConsistencyProof::verify_tree_hashes`]. A [`TreeHead`] is a size with
//!   its tree hash. **Root** ([`Root`], [`MerkleTree::root`]) always means
//!   this crate's size-bound digest `H(0x02 || size || tree hash)`, never the
//!   raw RFC hash. Proofs are the RFC's exact audit paths and consistency
//!   proofs, so they interoperate with certificate-transparency logs.
//! - **Hashes**: any [`MerkleHasher`]; [`Sha256`] (feature `sha2`, the RFC's
//!   hash) and `Blake3` (feature `blake3`) are built in. Every hash is a
//!   32-byte [`struct@Hash`].
//! - **Time**: the crate never reads a clock. The only state machine that
//!   acts on time, [`sync::Receiver`], takes `now: Duration`, monotonic time
//!   since an origin of your choosing, passed in by the caller where it uses
//!   it ([`sync::Receiver::poll_transmit_to`], [`sync::Receiver::handle_timeout`]);
//!   nothing else takes a time. quorate-transport's endpoints take `now` the
//!   same way.
//! - **Ids**: leaves and nodes are addressed by `u64` positions (leaf index,
//!   flat node index, see [`flat`]); sync peers by a key type `P` of yours
//!   (e.g. the transport's `PeerId`, the same `u64` as raft-core's
//!   `NodeId`), requests by [`sync::RequestId`], which matches a reply to its
//!   request as the transport's and Chord's `RequestId`s do.
//! - **Encoding**: counts and ids on the wire are the family's canonical
//!   LEB128 varint (shortest form only, at most `u64::MAX`, the same code as
//!   quorate-clocks'), so every value has exactly one encoding.
//!
//! # Features
//! - `std` (default): implements `std::error::Error` for [`Error`].
//! - `sha2` (default): the [`Sha256`] hasher.
//! - `blake3`: the `Blake3` hasher.
//! - `ed25519`: `signed::Ed25519Signer` and `signed::Ed25519Verifier`.
//! - `serde`: `Serialize`/`Deserialize` for hashes, roots, proofs and messages.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate alloc;

mod codec;
pub mod diff;
mod error;
pub mod flat;
mod hash;
mod proof;
pub mod signed;
pub mod sync;
mod tree;

pub use error::Error;
#[cfg(feature = "blake3")]
pub use hash::Blake3;
#[cfg(feature = "sha2")]
pub use hash::Sha256;
pub use hash::{
    HASH_LEN, Hash, LEAF_PREFIX, MerkleHasher, NODE_PREFIX, ROOT_PREFIX, Root, TreeHead,
};
pub use proof::{ConsistencyProof, InclusionProof, MultiProof};
pub use signed::{SignedRoot, Signer, Verifier};
pub use tree::MerkleTree;

/// The README's examples, compiled and run as doctests.
#[cfg(all(doctest, feature = "sha2"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
