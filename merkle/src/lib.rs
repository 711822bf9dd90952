//! Merkle trees stored as one flat, in-order, binary-addressable array:
//! inclusion, multi-leaf and consistency proofs, signed roots, tree diff and a
//! Sans-IO block-sync protocol between a sender and a receiver.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
