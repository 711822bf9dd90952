//! Ed25519 key files: `KEY` holds the 32-byte secret, `KEY.pub` the 32-byte
//! public key, each as 64 hex digits and a newline. The secret is drawn
//! from the OS and written with mode 0600.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use quorate_merkle::signed::{Ed25519Signer, Ed25519Verifier};

use super::wire::{Error, hex};

/// The public key file next to `key`: `key` with `.pub` appended.
pub fn public_path(key: &Path) -> PathBuf {
    let mut name = key.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Draws a key from the OS and writes `key` (0600, never overwriting) and
/// `key.pub`; returns the public key.
pub fn generate(key: &Path) -> Result<Ed25519Verifier, Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| Error::Invalid(format!("no randomness from the OS: {e}")))?;
    let signer = Ed25519Signer::from_secret_bytes(&secret);
    let public = signer.verifier();
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key)
        .map_err(Error::io(format!("create {}", key.display())))?;
    f.write_all(format!("{}\n", hex(&secret)).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(Error::io(format!("write {}", key.display())))?;
    let pub_path = public_path(key);
    fs::write(&pub_path, format!("{}\n", hex(&public.to_bytes())))
        .map_err(Error::io(format!("write {}", pub_path.display())))?;
    Ok(public)
}

/// 32 bytes from a file of 64 hex digits (surrounding whitespace ignored).
fn read_32(path: &Path) -> Result<[u8; 32], Error> {
    let text = fs::read_to_string(path).map_err(Error::io(format!("read {}", path.display())))?;
    let text = text.trim();
    let bad = || Error::Invalid(format!("{}: not 64 hex digits", path.display()));
    if text.len() != 64 || !text.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// The signing key in `path`.
pub fn load_signer(path: &Path) -> Result<Ed25519Signer, Error> {
    Ok(Ed25519Signer::from_secret_bytes(&read_32(path)?))
}

/// The public key in `path`.
pub fn load_verifier(path: &Path) -> Result<Ed25519Verifier, Error> {
    Ok(Ed25519Verifier::from_public_bytes(&read_32(path)?)?)
}
