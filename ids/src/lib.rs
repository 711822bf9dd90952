//! Snowflake-style 64-bit unique IDs: a validated bit layout of time,
//! sequence and node, a Sans-IO generator that takes the current time as an
//! input, and a lock-free generator shareable across threads.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
