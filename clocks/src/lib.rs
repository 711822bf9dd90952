//! Logical clocks for replicated systems: Lamport clocks, vector clocks,
//! dotted version vectors, hybrid logical clocks and a causal-delivery buffer.
//!
//! Every type is a pure value: physical time, when a clock needs it, is an
//! argument, never read from the system.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
