//! The crate's error type.

/// Everything that can go wrong when building, proving, verifying, decoding
/// or syncing. Every variant names the offending value where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A leaf index at or past the tree size.
    #[error("leaf index {index} is out of range for a tree of {size} leaves")]
    LeafOutOfRange {
        /// The leaf index asked for.
        index: u64,
        /// The tree size it was checked against.
        size: u64,
    },
    /// A flat node index that is not a complete node of the tree.
    #[error("node {index} is not a complete node of a tree of {size} leaves")]
    NodeOutOfRange {
        /// The flat index asked for.
        index: u64,
        /// The tree size it was checked against.
        size: u64,
    },
    /// A tree size larger than the tree, or an old size larger than a new one.
    #[error("tree size {size} is larger than {limit}")]
    SizeOutOfRange {
        /// The size asked for.
        size: u64,
        /// The largest size allowed here.
        limit: u64,
    },
    /// A proof with the wrong number of hashes for the trusted tree size.
    #[error("proof has {actual} hashes, {expected} expected")]
    ProofLength {
        /// Hashes the tree size and leaf indices call for.
        expected: usize,
        /// Hashes the proof carried.
        actual: usize,
    },
    /// The proof is well formed but does not lead to the trusted root.
    #[error("proof does not lead to the trusted root")]
    RootMismatch,
    /// Leaf indices of a multi-leaf proof must be strictly increasing.
    #[error("leaf indices must be strictly increasing: {index} follows {previous}")]
    UnsortedLeaves {
        /// The earlier index.
        previous: u64,
        /// The index that is not larger than it.
        index: u64,
    },
    /// A multi-leaf proof for no leaves at all.
    #[error("a multi-leaf proof needs at least one leaf")]
    NoLeaves,
    /// Input ended early.
    #[error("input ended: {needed} more bytes needed, {available} available")]
    Truncated {
        /// Bytes the next field needs.
        needed: u64,
        /// Bytes that were left.
        available: usize,
    },
    /// Bytes left over after a complete value.
    #[error("{extra} bytes left over after decoding")]
    TrailingBytes {
        /// Number of unread bytes.
        extra: usize,
    },
    /// An unknown type or version tag.
    #[error("unknown tag {tag:#04x} for {what}")]
    UnknownTag {
        /// What was being decoded.
        what: &'static str,
        /// The tag byte found.
        tag: u8,
    },
    /// A LEB128 integer that is not in its shortest form (padded with a
    /// final zero byte): every value has exactly one accepted encoding.
    #[error("varint at byte {offset} is not in its shortest form")]
    BadVarint {
        /// Offset of the varint's first byte.
        offset: usize,
    },
    /// A LEB128 integer larger than the limit, `u64::MAX`.
    #[error("varint at byte {offset} exceeds the limit u64::MAX")]
    VarintOverflow {
        /// Offset of the varint's first byte.
        offset: usize,
    },
    /// A length field above its limit.
    #[error("{what} length {len} exceeds the limit {max}")]
    TooLong {
        /// What the length is of.
        what: &'static str,
        /// The length found.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A signature over a root that does not verify.
    #[error("signature over the root of tree size {tree_size} does not verify")]
    BadSignature {
        /// Tree size of the signed root.
        tree_size: u64,
    },
    /// A signed root that is not the root of the blocks it is meant to
    /// vouch for (a publisher signed another version, or the blocks changed).
    #[error(
        "signed root is for a tree of {signed_size} leaves and does not match the blocks' tree of {size} leaves"
    )]
    SignedRootMismatch {
        /// Tree size in the signed root.
        signed_size: u64,
        /// Size of the tree built from the blocks.
        size: u64,
    },
    /// A signature or key in the wrong format for the scheme.
    #[error("malformed {what}: {len} bytes")]
    MalformedKey {
        /// Signature or key.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// The remote side sent a node or block that contradicts the trusted root.
    #[error("peer sent {what} at index {index} that contradicts the trusted root")]
    Forged {
        /// Node or block.
        what: &'static str,
        /// Its flat node index or leaf index.
        index: u64,
    },
    /// The remote side answered something that was not asked.
    #[error("peer sent an unexpected {what} ({id})")]
    Unexpected {
        /// Kind of message.
        what: &'static str,
        /// Its request id or index.
        id: u64,
    },
}
