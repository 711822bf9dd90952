//! What `merkle-sync serve` and `merkle-sync fetch` say to each other, the
//! transport settings both use, and the error type of the directory sync.
//!
//! Every request and reply is one request/reply message on [`CHANNEL`]; its
//! first byte says what it is: [`TAG_MANIFEST`] (the manifest with the
//! signed root and the manifest's inclusion proof as leaf 0) or
//! [`TAG_SYNC`] (a [`quorate_merkle::sync::Message`]).

use std::time::Duration;

use quorate_merkle::{InclusionProof, SignedRoot};
use quorate_transport::framing::{ChannelId, FrameCodec};
use quorate_transport::tcp::{PeerId, TcpConfig, TcpError, Trust};

/// The channel both commands talk on.
pub const CHANNEL: ChannelId = ChannelId(1);
/// The transport id every `serve` process answers to (a fetcher dials each
/// source on a transport of its own).
pub const SERVER_ID: PeerId = PeerId(1);
/// The transport id a fetcher says hello with (a server gives each
/// connection a client id of its own anyway).
pub const FETCHER_ID: PeerId = PeerId(2);
/// Request/reply tag: the manifest.
pub const TAG_MANIFEST: u8 = 0;
/// Request/reply tag: a sync message.
pub const TAG_SYNC: u8 = 1;
/// Largest frame either side accepts from the other: a batch of
/// [`quorate_merkle::sync::MAX_BLOCKS_PER_REQUEST`] blocks of the largest
/// block size with their proofs, or the largest manifest.
pub const MAX_FRAME: usize = 24 << 20;
/// Longest encoded signed root accepted.
const MAX_SIGNED_LEN: usize = 2048;
/// Longest encoded inclusion proof accepted.
const MAX_PROOF_LEN: usize = 8192;

/// Why serving or fetching a directory failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file system or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The transport refused a frame.
    #[error("transport: {0}")]
    Transport(#[from] TcpError),
    /// A request/reply queue was full.
    #[error("request/reply: {0}")]
    Pattern(#[from] quorate_transport::patterns::Error),
    /// The Merkle layer refused something.
    #[error("merkle: {0}")]
    Merkle(#[from] quorate_merkle::Error),
    /// A manifest, a key or a message broke the format or a limit.
    #[error("{0}")]
    Invalid(String),
    /// The served tree is larger than a limit.
    #[error("{what} is {got}, over the limit of {limit}")]
    TooLarge {
        /// What was measured.
        what: &'static str,
        /// Its size.
        got: u64,
        /// The limit.
        limit: u64,
    },
    /// No source gave a valid manifest, or every one was refused.
    #[error("no usable source: {0}")]
    NoSource(String),
    /// The fetch did not complete in time.
    #[error("fetch did not complete within {0:?}")]
    Deadline(Duration),
}

impl Error {
    /// An [`Error::Io`] that says what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// The manifest reply, decoded but not yet verified.
#[derive(Debug, Clone)]
pub struct ManifestReply {
    /// The signed root of the whole tree.
    pub signed: SignedRoot,
    /// Inclusion proof of the manifest as leaf 0.
    pub proof: InclusionProof,
    /// The manifest's bytes.
    pub manifest: Vec<u8>,
}

impl ManifestReply {
    /// Tag, signed root and proof (each with a 4-byte big-endian length),
    /// then the manifest.
    pub fn encode(signed: &SignedRoot, proof: &InclusionProof, manifest: &[u8]) -> Vec<u8> {
        let signed = signed.to_bytes();
        let proof = proof.to_bytes();
        let mut out = Vec::with_capacity(9 + signed.len() + proof.len() + manifest.len());
        out.push(TAG_MANIFEST);
        for part in [&signed, &proof] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
        out.extend_from_slice(manifest);
        out
    }

    /// Decodes [`encode`](Self::encode) output, refusing a manifest longer
    /// than `max_manifest`; never panics.
    pub fn decode(body: &[u8], max_manifest: u64) -> Result<Self, Error> {
        let bad = |what: &str| Error::Invalid(format!("manifest reply: {what}"));
        let Some((&TAG_MANIFEST, mut rest)) = body.split_first() else {
            return Err(bad("not a manifest reply"));
        };
        let mut part = |limit: usize, what: &str| -> Result<&[u8], Error> {
            let (len, tail) = rest.split_at_checked(4).ok_or_else(|| bad(what))?;
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            if len > limit {
                return Err(bad(what));
            }
            let (bytes, tail) = tail.split_at_checked(len).ok_or_else(|| bad(what))?;
            rest = tail;
            Ok(bytes)
        };
        let signed = SignedRoot::from_bytes(part(MAX_SIGNED_LEN, "signed root")?)?;
        let proof = InclusionProof::from_bytes(part(MAX_PROOF_LEN, "proof")?)?;
        if rest.len() as u64 > max_manifest {
            return Err(Error::TooLarge {
                what: "manifest (bytes)",
                got: rest.len() as u64,
                limit: max_manifest,
            });
        }
        Ok(Self {
            signed,
            proof,
            manifest: rest.to_vec(),
        })
    }
}

/// Transport settings of `serve`: every connection is a client with an id
/// of its own ([`Trust::KnownPeers`] with no peers), capped in number, with
/// hello and idle timeouts, like the kv-cluster node.
pub fn serve_tcp_config(max_connections: usize, idle_timeout: Duration) -> TcpConfig {
    TcpConfig {
        framing: FrameCodec::with_max_frame_size(MAX_FRAME),
        trust: Trust::KnownPeers,
        max_connections,
        idle_timeout,
        // Requests are small: block lists and `have` node lists.
        client_max_frame: 1 << 20,
        ..TcpConfig::default()
    }
}

/// Transport settings of `fetch`: frames up to [`MAX_FRAME`] from sources.
pub fn fetch_tcp_config() -> TcpConfig {
    TcpConfig {
        framing: FrameCodec::with_max_frame_size(MAX_FRAME),
        backoff_max: Duration::from_millis(500),
        ..TcpConfig::default()
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
