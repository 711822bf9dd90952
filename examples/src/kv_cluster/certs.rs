//! Certificates for an authenticated cluster: a cluster CA and one
//! certificate per node, as PEM files in one directory, and the
//! [`Tls`] wrappers built from them.
//!
//! The directory holds `ca.pem` and `ca.key` (the CA; keep `ca.key` off
//! the nodes once they have their certificates), and `node-<id>.pem` and
//! `node-<id>.key` for each node, whose certificate names it
//! `node-<id>.quorate.invalid` ([`quorate_transport::tls::node_name`]).
//! A node needs `ca.pem` and its own pair; a client needs only `ca.pem`.
//!
//! ```no_run
//! use std::path::Path;
//! use quorate_examples::kv_cluster::certs;
//!
//! # fn main() -> Result<(), certs::CertsError> {
//! let dir = Path::new("cluster-certs");
//! certs::generate(dir, &[1, 2, 3])?; // kv-cluster certs --dir cluster-certs --nodes 1,2,3
//! let node = certs::node_tls(dir, 2)?; // what `node --id 2 --tls-dir cluster-certs` uses
//! let cli = certs::client_tls(dir)?; // what `put`/`get --tls-dir cluster-certs` use
//! # let _ = (node, cli);
//! # Ok(()) }
//! ```

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use quorate_transport::tcp::PeerId;
use quorate_transport::tls::{Tls, TlsError, node_name};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// The CA certificate's file name.
pub const CA_CERT: &str = "ca.pem";
/// The CA private key's file name.
pub const CA_KEY: &str = "ca.key";
/// The CA's subject name; also how a later [`generate`] recognises it.
const CA_NAME: &str = "quorate kv-cluster CA";
/// How long certificates are valid.
pub const VALIDITY: time::Duration = time::Duration::days(3650);

/// The certificate file name of node `id`: `node-<id>.pem`.
pub fn node_cert_file(id: u64) -> String {
    format!("node-{id}.pem")
}

/// The private key file name of node `id`: `node-<id>.key`.
pub fn node_key_file(id: u64) -> String {
    format!("node-{id}.key")
}

/// What went wrong making or loading cluster certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// The directory could not be created.
    #[error("cannot create {path}: {source}", path = path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file to be written exists already; nothing is overwritten.
    #[error("{path} exists; not overwriting it", path = path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Only one of `ca.pem` and `ca.key` exists.
    #[error("{present} exists but {missing} does not", present = present.display(), missing = missing.display())]
    HalfCa {
        /// The one there.
        present: PathBuf,
        /// The one missing.
        missing: PathBuf,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}", path = path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The CA key file is not a usable PEM private key.
    #[error("{path}: not a CA key: {source}", path = path.display())]
    CaKey {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rcgen::Error,
    },
    /// Generating or signing a certificate failed.
    #[error("generating {what}: {source}")]
    Generate {
        /// Which certificate.
        what: String,
        /// Why.
        source: rcgen::Error,
    },
    /// Loading the TLS files failed (the error names the file).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A node certificate names another node (or none).
    #[error("{path} is not a certificate for node {expected} (it names {found:?})", path = path.display())]
    WrongNode {
        /// The certificate file.
        path: PathBuf,
        /// The node it was loaded for.
        expected: u64,
        /// The node it names, if any.
        found: Option<u64>,
    },
}

/// Writes certificates for `nodes` into `dir` (created if missing) and
/// returns the files written. If `dir` already has `ca.pem` and `ca.key`
/// from an earlier run, that CA signs the new nodes, so nodes can be added
/// later; otherwise a new CA is made first. Existing node files are never
/// overwritten: that is an error, before anything is written.
pub fn generate(dir: &Path, nodes: &[u64]) -> Result<Vec<PathBuf>, CertsError> {
    fs::create_dir_all(dir).map_err(|source| CertsError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let (ca_cert, ca_key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    let node_files: Vec<(u64, PathBuf, PathBuf)> = nodes
        .iter()
        .map(|&id| {
            (
                id,
                dir.join(node_cert_file(id)),
                dir.join(node_key_file(id)),
            )
        })
        .collect();
    for (_, cert, key) in &node_files {
        for path in [cert, key] {
            if path.exists() {
                return Err(CertsError::Exists { path: path.clone() });
            }
        }
    }
    let now = time::OffsetDateTime::now_utc();
    let mut written = Vec::new();
    let issuer = match (ca_cert.exists(), ca_key.exists()) {
        (true, true) => {
            let pem = read(&ca_key)?;
            let key = KeyPair::from_pem(&pem).map_err(|source| CertsError::CaKey {
                path: ca_key.clone(),
                source,
            })?;
            // Same name and key as the CA in ca.pem, so what it signs
            // chains to that certificate.
            Issuer::new(ca_params(now), key)
        }
        (false, false) => {
            let generate = |source| CertsError::Generate {
                what: "the CA".into(),
                source,
            };
            let key = KeyPair::generate().map_err(generate)?;
            let params = ca_params(now);
            let cert = params.self_signed(&key).map_err(generate)?;
            write_new(&ca_cert, cert.pem().as_bytes(), false)?;
            write_new(&ca_key, key.serialize_pem().as_bytes(), true)?;
            written.extend([ca_cert, ca_key]);
            Issuer::new(params, key)
        }
        (true, false) => {
            return Err(CertsError::HalfCa {
                present: ca_cert,
                missing: ca_key,
            });
        }
        (false, true) => {
            return Err(CertsError::HalfCa {
                present: ca_key,
                missing: ca_cert,
            });
        }
    };
    for (id, cert_path, key_path) in node_files {
        let generate = |source| CertsError::Generate {
            what: format!("node {id}'s certificate"),
            source,
        };
        let key = KeyPair::generate().map_err(generate)?;
        let mut params = CertificateParams::new(vec![node_name(PeerId(id))]).map_err(generate)?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("kv-cluster node {id}"));
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + VALIDITY;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Nodes both dial (client) and accept (server).
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &issuer).map_err(generate)?;
        write_new(&cert_path, cert.pem().as_bytes(), false)?;
        write_new(&key_path, key.serialize_pem().as_bytes(), true)?;
        written.extend([cert_path, key_path]);
    }
    Ok(written)
}

/// The CA's parameters: a name fixed so a later run can sign as it.
fn ca_params(now: time::OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    // Signs node certificates only, no intermediate CAs.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + VALIDITY;
    params
}

/// Node `id`'s TLS wrapper from `dir` (`ca.pem`, `node-<id>.pem`,
/// `node-<id>.key`), checked to name node `id`.
pub fn node_tls(dir: &Path, id: u64) -> Result<Tls, CertsError> {
    let cert = dir.join(node_cert_file(id));
    let tls = Tls::from_pem_files(dir.join(CA_CERT), &cert, dir.join(node_key_file(id)))?;
    match tls.own_identity() {
        Some(PeerId(found)) if found == id => Ok(tls),
        found => Err(CertsError::WrongNode {
            path: cert,
            expected: id,
            found: found.map(|p| p.0),
        }),
    }
}

/// A client's TLS wrapper from `dir` (only `ca.pem`): verifies the nodes,
/// presents no certificate.
pub fn client_tls(dir: &Path) -> Result<Tls, CertsError> {
    Ok(Tls::client_only_from_pem_file(dir.join(CA_CERT))?)
}

fn read(path: &Path) -> Result<String, CertsError> {
    fs::read_to_string(path).map_err(|source| CertsError::File {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a file that must not exist yet; a private key readable by its
/// owner only (on Unix).
fn write_new(path: &Path, contents: &[u8], private: bool) -> Result<(), CertsError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let error = |source: io::Error| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            CertsError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            CertsError::File {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    let mut file = options.open(path).map_err(error)?;
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use quorate_transport::tcp::StreamWrapper;
    use tokio::net::{TcpListener, TcpStream};

    struct TempDir(PathBuf);
    impl TempDir {
        /// `tag` is unique per test; the process id keeps runs apart.
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("quorate-certs-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// `dialer` dials `server` as node `to`: what each side's handshake proved.
    async fn identities(server: &Tls, dialer: &Tls, to: u64) -> (Option<PeerId>, Option<PeerId>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = async { server.server(listener.accept().await?.0).await };
        let dial = async {
            dialer
                .client(TcpStream::connect(addr).await?, PeerId(to))
                .await
        };
        let bound = core::time::Duration::from_secs(10);
        let (a, d) = tokio::time::timeout(bound, async { tokio::try_join!(accept, dial) })
            .await
            .expect("handshake hung")
            .unwrap();
        (Tls::peer_identity(&a), Tls::peer_identity(&d))
    }

    #[tokio::test]
    async fn generated_certificates_authenticate_nodes_and_admit_clients() {
        let dir = TempDir::new("authenticate");
        let written = generate(&dir.0, &[1, 2]).unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "ca.pem",
                "ca.key",
                "node-1.pem",
                "node-1.key",
                "node-2.pem",
                "node-2.key"
            ]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.0.join("node-1.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
        }
        let (one, two, cli) = (
            node_tls(&dir.0, 1).unwrap(),
            node_tls(&dir.0, 2).unwrap(),
            client_tls(&dir.0).unwrap(),
        );
        assert_eq!(
            identities(&one, &two, 1).await,
            (Some(PeerId(2)), Some(PeerId(1)))
        );
        assert_eq!(identities(&two, &cli, 2).await, (None, Some(PeerId(2))));

        // A later run adds node 3 under the same CA.
        let written = generate(&dir.0, &[3]).unwrap();
        assert_eq!(
            written,
            [dir.0.join("node-3.pem"), dir.0.join("node-3.key")]
        );
        let three = node_tls(&dir.0, 3).unwrap();
        assert_eq!(
            identities(&one, &three, 1).await,
            (Some(PeerId(3)), Some(PeerId(1)))
        );
        assert_eq!(identities(&three, &cli, 3).await, (None, Some(PeerId(3))));
    }

    #[test]
    fn nothing_is_overwritten_and_errors_name_the_file() {
        let dir = TempDir::new("overwrite");
        generate(&dir.0, &[1]).unwrap();
        let before = fs::read(dir.0.join("node-1.key")).unwrap();
        match generate(&dir.0, &[4, 1]) {
            Err(CertsError::Exists { path }) => assert_eq!(path, dir.0.join("node-1.pem")),
            other => panic!("{other:?}"),
        }
        assert_eq!(fs::read(dir.0.join("node-1.key")).unwrap(), before);
        assert!(!dir.0.join("node-4.pem").exists(), "wrote before refusing");

        let err = node_tls(&dir.0, 9).unwrap_err();
        assert!(err.to_string().contains("node-9.pem"), "{err}");

        // Node 1's files under node 5's names.
        fs::copy(dir.0.join("node-1.pem"), dir.0.join("node-5.pem")).unwrap();
        fs::copy(dir.0.join("node-1.key"), dir.0.join("node-5.key")).unwrap();
        match node_tls(&dir.0, 5) {
            Err(CertsError::WrongNode {
                path,
                expected: 5,
                found: Some(1),
            }) => assert_eq!(path, dir.0.join("node-5.pem")),
            other => panic!("{other:?}"),
        }

        fs::remove_file(dir.0.join(CA_KEY)).unwrap();
        match generate(&dir.0, &[6]) {
            Err(CertsError::HalfCa { present, missing }) => {
                assert_eq!(
                    (present, missing),
                    (dir.0.join(CA_CERT), dir.0.join(CA_KEY))
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
