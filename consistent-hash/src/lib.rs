//! Placement of keys on nodes that stays stable as nodes come and go:
//! consistent-hash rings with virtual nodes, jump hash, rendezvous hashing,
//! Maglev tables, bounded loads, multi-probe hashing and a Sans-IO Chord node.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
