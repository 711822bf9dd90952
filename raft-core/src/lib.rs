//! The Raft consensus protocol as a pure state machine: the application feeds
//! it ticks, messages and proposals, and drives persistence, sending and
//! applying from what it hands back. A deterministic simulator and a
//! linearizability checker (feature `sim`) test it, and your state machine on
//! top of it, under loss, reordering, partitions and crashes.
#![cfg_attr(docsrs, feature(doc_cfg))]
