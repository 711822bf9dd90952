//! What the sync test files share: a test signing key and the seed count.
#![allow(dead_code, unreachable_pub)]

use quorate_merkle::{MerkleHasher, Sha256, Signer, Verifier};

/// A keyed-hash "signature" for tests that do not need public keys.
#[derive(Debug, Clone)]
pub struct TestKey(pub u8);

impl Signer for TestKey {
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        Sha256::hash_parts(&[&[self.0], message]).0.to_vec()
    }
}

impl Verifier for TestKey {
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.sign(message) == signature
    }
}

/// Seeds per simulation: `QUORATE_SIM_SEEDS`, or 48.
pub fn seeds() -> u64 {
    std::env::var("QUORATE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(48)
}
