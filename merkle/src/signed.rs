//! Signed roots: a publisher vouches for `(tree_size, root)` with a signature
//! scheme of its choice, through the [`Signer`] / [`Verifier`] pair.

use crate::{
    Error, Root,
    codec::{self, Reader},
};
use alloc::vec::Vec;

/// Signs messages. Implement it for your scheme (HSM, KMS, Ed25519, ...).
pub trait Signer {
    /// The signature over `message`, in the scheme's byte encoding.
    fn sign(&self, message: &[u8]) -> Vec<u8>;
}

/// Checks signatures made by the matching [`Signer`].
pub trait Verifier {
    /// Whether `signature` is a valid signature over `message`.
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool;
}

/// Domain separation: a signature over a root can't be replayed as a
/// signature over anything else the same key signs.
const CONTEXT: &[u8] = b"quorate-merkle signed root v1\0";
/// Signatures longer than this are refused when decoding.
pub const MAX_SIGNATURE_LEN: u64 = 1024;

/// A root vouched for by its publisher: the tree size, the root and a
/// signature over both.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SignedRoot {
    /// Number of leaves of the signed tree.
    pub tree_size: u64,
    /// The size-bound root of the signed tree.
    pub root: Root,
    /// Signature over [`SignedRoot::message`].
    pub signature: Vec<u8>,
}

impl SignedRoot {
    /// The exact bytes that are signed: a context string, the tree size
    /// (big-endian) and the root.
    pub fn message(tree_size: u64, root: &Root) -> Vec<u8> {
        let mut m = Vec::with_capacity(CONTEXT.len() + 8 + 32);
        m.extend_from_slice(CONTEXT);
        m.extend_from_slice(&tree_size.to_be_bytes());
        m.extend_from_slice(&root.0.0);
        m
    }

    /// Signs `root` of a tree of `tree_size` leaves.
    pub fn sign(tree_size: u64, root: Root, signer: &impl Signer) -> Self {
        let signature = signer.sign(&Self::message(tree_size, &root));
        Self {
            tree_size,
            root,
            signature,
        }
    }

    /// Checks the signature.
    pub fn verify(&self, verifier: &impl Verifier) -> Result<(), Error> {
        if verifier.verify(&Self::message(self.tree_size, &self.root), &self.signature) {
            Ok(())
        } else {
            Err(Error::BadSignature {
                tree_size: self.tree_size,
            })
        }
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.tree_size.to_be_bytes());
        out.extend_from_slice(&self.root.0.0);
        codec::put_bytes(out, &self.signature);
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Self, Error> {
        let tree_size = r.u64_be()?;
        let root = Root(r.hash()?);
        let signature = r.bytes("signature", MAX_SIGNATURE_LEN)?.to_vec();
        Ok(Self {
            tree_size,
            root,
            signature,
        })
    }

    /// Compact encoding: size (8 bytes, big-endian), root (32 bytes),
    /// LEB128 signature length, signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 32 + 2 + self.signature.len());
        self.encode_into(&mut out);
        out
    }

    /// Decodes [`to_bytes`](Self::to_bytes) output; never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        let s = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(s)
    }
}

#[cfg(feature = "ed25519")]
pub use ed25519::{Ed25519Signer, Ed25519Verifier};

#[cfg(feature = "ed25519")]
mod ed25519 {
    use super::{Signer, Verifier};
    use crate::Error;
    use alloc::vec::Vec;
    use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

    /// Ed25519 (RFC 8032) signing key.
    #[derive(Debug, Clone)]
    pub struct Ed25519Signer(SigningKey);

    impl Ed25519Signer {
        /// A signer from a 32-byte secret key. Generating the key (from OS
        /// randomness) is the caller's business: this crate draws none.
        pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
            Self(SigningKey::from_bytes(secret))
        }

        /// The matching verifier (public key).
        pub fn verifier(&self) -> Ed25519Verifier {
            Ed25519Verifier(self.0.verifying_key())
        }
    }

    impl Signer for Ed25519Signer {
        fn sign(&self, message: &[u8]) -> Vec<u8> {
            use ed25519_dalek::Signer as _;
            self.0.sign(message).to_bytes().to_vec()
        }
    }

    /// Ed25519 public key; verification is strict (rejects small-order keys
    /// and non-canonical signatures).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Ed25519Verifier(VerifyingKey);

    impl Ed25519Verifier {
        /// A verifier from a 32-byte public key.
        pub fn from_public_bytes(public: &[u8; 32]) -> Result<Self, Error> {
            VerifyingKey::from_bytes(public)
                .map(Self)
                .map_err(|_| Error::MalformedKey {
                    what: "ed25519 public key",
                    len: public.len(),
                })
        }

        /// The 32-byte public key.
        pub fn to_bytes(&self) -> [u8; 32] {
            self.0.to_bytes()
        }
    }

    impl Verifier for Ed25519Verifier {
        fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
            let Ok(sig) = Signature::from_slice(signature) else {
                return false;
            };
            self.0.verify_strict(message, &sig).is_ok()
        }
    }
}
