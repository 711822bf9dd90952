//! The crate's error type.

/// Everything that can be wrong with an input to this crate.
///
/// A method that returns an error leaves its receiver unchanged.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A ring was asked for zero virtual nodes per unit of weight.
    #[error("virtual nodes per unit of weight must be at least 1, got 0")]
    ZeroVnodes,
    /// A node was given weight zero; remove it instead.
    #[error("node weight must be at least 1, got 0")]
    ZeroWeight,
    /// A node weight times the virtual nodes per unit does not fit the ring.
    #[error(
        "{vnodes} virtual nodes x weight {weight} would take the ring past its limit of 2^32 - 2 points"
    )]
    TooManyPoints {
        /// Virtual nodes per unit of weight.
        vnodes: u32,
        /// The requested weight.
        weight: u32,
    },
    /// A deserialized structure describes more than the caps on untrusted
    /// input allow (`MAX_RING_POINTS` points of a ring, `MAX_MAGLEV_TABLE`
    /// entries of a Maglev table, `MAX_PROBES` probes of a multi-probe
    /// hash; feature `serde`): refused before anything is allocated for it.
    #[error("deserialized {what} of {requested} exceeds the cap of {max}")]
    DeserializeTooLarge {
        /// What was too large.
        what: &'static str,
        /// How large the input asked for.
        requested: u64,
        /// The cap.
        max: u64,
    },
    /// A weighted rendezvous node was given a weight that is not finite and positive.
    #[error("rendezvous weight must be finite and > 0, got {weight}")]
    InvalidWeight {
        /// The rejected weight.
        weight: f64,
    },
    /// The node is already a member.
    #[error("node is already a member")]
    DuplicateNode,
    /// The node is not a member.
    #[error("node is not a member")]
    UnknownNode,
    /// There are no nodes (or buckets) to place a key on.
    #[error("no nodes to place keys on")]
    NoNodes,
    /// A jump hash cannot have zero buckets (asked for 0, or to pop the last one).
    #[error("jump hash needs at least 1 bucket, it would have 0")]
    NoBuckets,
    /// A jump hash already has `u32::MAX` buckets and cannot grow.
    #[error("jump hash has {buckets} buckets, the most a u32 bucket number allows")]
    TooManyBuckets {
        /// The current bucket count.
        buckets: u32,
    },
    /// A Maglev table size must be prime for the permutations to cover the table.
    #[error("Maglev table size {size} is not prime")]
    TableSizeNotPrime {
        /// The rejected size.
        size: u64,
    },
    /// A Maglev table must have more entries than nodes.
    #[error("Maglev table size {size} is not larger than the {nodes} nodes")]
    TableTooSmall {
        /// The table size.
        size: u64,
        /// The number of nodes.
        nodes: usize,
    },
    /// Multi-probe hashing needs at least one probe.
    #[error("multi-probe hashing needs at least one probe, got 0")]
    ZeroProbes,
    /// Bounded loads need a finite, non-negative epsilon.
    #[error("bounded-load epsilon must be finite and >= 0, got {epsilon}")]
    InvalidEpsilon {
        /// The rejected epsilon.
        epsilon: f64,
    },
    /// Every node is at its bounded-load capacity (only when epsilon leaves no room).
    #[error("every node is at capacity {capacity}")]
    AllNodesFull {
        /// The capacity that every node reached.
        capacity: u64,
    },
    /// A bounded-load release named a node that holds no keys.
    #[error("node holds no keys to release")]
    NothingToRelease,
    /// A Chord identifier circle must have between 1 and 64 bits.
    #[error("Chord identifier bits must be in 1..=64, got {bits}")]
    InvalidIdBits {
        /// The rejected number of bits.
        bits: u32,
    },
    /// A Chord identifier does not fit the node's identifier circle.
    #[error("identifier {id} does not fit in {bits} bits")]
    IdOutOfRange {
        /// The rejected identifier.
        id: u64,
        /// The circle's size in bits.
        bits: u32,
    },
    /// A Chord message carried a list longer than the protocol allows.
    #[error("message list of {len} ids is longer than the maximum {max}")]
    ListTooLong {
        /// The list's length.
        len: usize,
        /// The most allowed.
        max: usize,
    },
    /// A Chord successor list must hold at least one entry.
    #[error("Chord successor list length must be at least 1, got 0")]
    ZeroSuccessors,
}
