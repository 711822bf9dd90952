//! Mutual TLS for the TCP transport (feature `tls`): nodes prove their
//! [`PeerId`] with a certificate from the cluster's CA.
//!
//! [`Tls`] is a [`StreamWrapper`] on rustls (TLS 1.3, the `ring` crypto
//! provider, set in each config rather than as a process-wide default).
//! Plug it into [`TcpTransport::bind_with`](crate::tcp::TcpTransport::bind_with)
//! or [`client_with`](crate::tcp::TcpTransport::client_with).
//!
//! **Identity scheme.** A node's certificate names it with the DNS subject
//! alternative name `node-<id>.quorate.invalid` ([`node_name`]), `<id>` in
//! decimal without leading zeros. (`.invalid` is reserved, RFC 6761, so the
//! name can never be a real host.) A certificate proves a node id only if
//! it chains to the cluster CA and carries exactly one such name. The CA
//! must sign nothing else it does not mean as a node: in particular no
//! wildcard names, which a dialer would accept for every node.
//!
//! - **Accepting** (server side), the client certificate is verified
//!   against the CA when one is presented, and a connection without one is
//!   still admitted, so CLI clients can connect. [`Tls::peer_identity`]
//!   gives the id a verified client certificate proves, `None` without one;
//!   [`authenticates`](StreamWrapper::authenticates) is true, so the
//!   transport believes a hello only as far as that identity goes. A
//!   certificate from another CA, or expired, fails the handshake.
//! - **Dialing** peer X (client side), the server's certificate must chain
//!   to the CA and name node X, so no node can answer in another's place.
//!   A [`Tls::new`] wrapper presents its own certificate; a
//!   [`Tls::client_only`] wrapper (CLIs) has only the CA and presents none.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use quorate_transport::tcp::{PeerId, StreamWrapper};
//! use tokio::net::TcpStream;
//! use quorate_transport::tls::{Tls, node_name};
//! use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
//!
//! // A cluster CA and a certificate for node 2 (kv-cluster's `certs`
//! // command writes these as PEM files; `Tls::from_pem_files` reads them).
//! let ca_key = rcgen::KeyPair::generate()?;
//! let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
//! ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
//! let ca = ca_params.self_signed(&ca_key)?;
//! let issuer = rcgen::Issuer::new(ca_params, ca_key);
//! let node_key = rcgen::KeyPair::generate()?;
//! let node = rcgen::CertificateParams::new(vec![node_name(PeerId(2))])?.signed_by(&node_key, &issuer)?;
//! let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(node_key.serialize_der()));
//!
//! let node2 = Tls::new(vec![ca.der().clone()], vec![node.der().clone()], key)?;
//! let cli = Tls::client_only(vec![ca.der().clone()])?;
//! assert_eq!(node2.own_identity(), Some(PeerId(2)));
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let accept = async { node2.server(listener.accept().await?.0).await };
//! let dial = async { cli.client(TcpStream::connect(addr).await?, PeerId(2)).await };
//! let (accepted, dialed) = tokio::try_join!(accept, dial)?;
//! assert_eq!(Tls::peer_identity(&accepted), None); // the CLI proved nothing
//! assert_eq!(Tls::peer_identity(&dialed), Some(PeerId(2))); // but knows it reached node 2
//! # Ok::<_, Box<dyn std::error::Error>>(()) })?;
//! # Ok(()) }
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use core::fmt;
use core::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use crate::tcp::{PeerId, StreamWrapper};

/// The DNS name suffix of node names (`node-<id>.quorate.invalid`).
pub const NODE_NAME_SUFFIX: &str = ".quorate.invalid";
const NODE_NAME_PREFIX: &str = "node-";

/// The DNS subject alternative name that names node `id` in its
/// certificate: `node-<id>.quorate.invalid`.
pub fn node_name(id: PeerId) -> String {
    format!("{NODE_NAME_PREFIX}{}{NODE_NAME_SUFFIX}", id.0)
}

/// The node id a DNS name names, if it is a node name in the canonical
/// form [`node_name`] writes (ASCII case aside).
pub fn parse_node_name(name: &str) -> Option<PeerId> {
    let lower = name.to_ascii_lowercase();
    let digits = lower
        .strip_prefix(NODE_NAME_PREFIX)?
        .strip_suffix(NODE_NAME_SUFFIX)?;
    let id: u64 = digits.parse().ok()?;
    // One spelling per id: no "+2" or "02".
    (id.to_string() == digits).then_some(PeerId(id))
}

/// The node id a certificate proves, given that it has been verified
/// against the CA: its one node name, or `None` for none, several, or a
/// certificate webpki cannot parse.
pub fn certificate_identity(cert: &CertificateDer<'_>) -> Option<PeerId> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    let mut ids = ee.valid_dns_names().filter_map(parse_node_name);
    let id = ids.next()?;
    if ids.any(|other| other != id) {
        return None;
    }
    // Let webpki's own name matching confirm what we read.
    let name = ServerName::try_from(node_name(id)).ok()?;
    ee.verify_is_valid_for_subject_name(&name).ok()?;
    Some(id)
}

/// Where a certificate or key came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A PEM file.
    File(PathBuf),
    /// DER handed over in memory.
    Memory,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Memory => f.write_str("in-memory DER"),
        }
    }
}

/// What went wrong setting up TLS. Each names the file (or in-memory
/// input) it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}", path = path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file is not PEM, or holds no item of the kind wanted.
    #[error("{path}: no valid PEM {what}: {source}", path = path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was looked for ("certificate", "private key").
        what: &'static str,
        /// Why.
        source: rustls_pki_types::pem::Error,
    },
    /// No certificate was given.
    #[error("{origin}: no certificate")]
    NoCertificate {
        /// Where it should have been.
        origin: Origin,
    },
    /// A CA certificate cannot serve as a trust anchor.
    #[error("{origin}: unusable CA certificate: {source}")]
    BadCa {
        /// Where it came from.
        origin: Origin,
        /// Why.
        source: rustls::Error,
    },
    /// The node certificate and key cannot be used together (the key does
    /// not match, or is of an unsupported kind).
    #[error("certificate {cert} with key {key}: {source}")]
    CertificateKey {
        /// Where the certificate came from.
        cert: Origin,
        /// Where the key came from.
        key: Origin,
        /// Why.
        source: rustls::Error,
    },
    /// The certificate verifiers could not be built from the CA.
    #[error("{origin}: cannot verify with this CA: {source}")]
    Verifier {
        /// Where the CA came from.
        origin: Origin,
        /// Why.
        source: rustls::server::VerifierBuilderError,
    },
    /// The TLS protocol versions or cipher suites are not supported by
    /// the crypto provider (a build problem, not an input problem).
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

/// This node's certificate chain and key, with where they came from.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    chain_origin: Origin,
    key: PrivateKeyDer<'static>,
    key_origin: Origin,
}

/// How long a TLS handshake may take by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Mutual TLS as a [`StreamWrapper`]. See the [module docs](self).
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    /// `None` for a client-only wrapper, which has no certificate to serve.
    acceptor: Option<TlsAcceptor>,
    own: Option<PeerId>,
    handshake_timeout: Duration,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("own_identity", &self.own)
            .field("serves", &self.acceptor.is_some())
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// A node's wrapper: trusts the cluster CA certificates `ca`, and
    /// presents `chain` (its certificate first, then any intermediates)
    /// with `key` both when dialing and when accepting.
    pub fn new(
        ca: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let identity = Identity {
            chain,
            chain_origin: Origin::Memory,
            key,
            key_origin: Origin::Memory,
        };
        Self::build(ca, Origin::Memory, Some(identity))
    }

    /// [`new`](Self::new) from PEM files: the CA certificate(s), this
    /// node's certificate chain and its private key (PKCS#8, PKCS#1 or
    /// SEC1).
    pub fn from_pem_files(
        ca: impl AsRef<Path>,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let (ca, cert, key) = (ca.as_ref(), cert.as_ref(), key.as_ref());
        let identity = Identity {
            chain: read_certs(cert)?,
            chain_origin: Origin::File(cert.to_path_buf()),
            key: read_key(key)?,
            key_origin: Origin::File(key.to_path_buf()),
        };
        Self::build(
            read_certs(ca)?,
            Origin::File(ca.to_path_buf()),
            Some(identity),
        )
    }

    /// A wrapper that only dials and presents no certificate (for CLI
    /// clients): it verifies servers against the CA and proves nothing
    /// about itself. Its [`server`](StreamWrapper::server) always fails.
    pub fn client_only(ca: Vec<CertificateDer<'static>>) -> Result<Self, TlsError> {
        Self::build(ca, Origin::Memory, None)
    }

    /// [`client_only`](Self::client_only) from a PEM file of CA
    /// certificates.
    pub fn client_only_from_pem_file(ca: impl AsRef<Path>) -> Result<Self, TlsError> {
        let ca = ca.as_ref();
        Self::build(read_certs(ca)?, Origin::File(ca.to_path_buf()), None)
    }

    /// Bounds each TLS handshake (default [`DEFAULT_HANDSHAKE_TIMEOUT`]),
    /// so a peer that connects and stalls does not hold a task forever.
    #[must_use]
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The node id this wrapper's own certificate names, if any: a node
    /// can check it against the id it was told to run as.
    pub fn own_identity(&self) -> Option<PeerId> {
        self.own
    }

    fn build(
        ca: Vec<CertificateDer<'static>>,
        ca_origin: Origin,
        identity: Option<Identity>,
    ) -> Result<Self, TlsError> {
        if ca.is_empty() {
            return Err(TlsError::NoCertificate { origin: ca_origin });
        }
        let mut roots = RootCertStore::empty();
        for cert in ca {
            roots.add(cert).map_err(|source| TlsError::BadCa {
                origin: ca_origin.clone(),
                source,
            })?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions = &[&rustls::version::TLS13];

        let client = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .map_err(TlsError::Config)?
            // Verifies with the builder's provider, `ring`.
            .with_root_certificates(Arc::clone(&roots));

        let Some(id) = identity else {
            return Ok(Tls {
                connector: TlsConnector::from(Arc::new(client.with_no_client_auth())),
                acceptor: None,
                own: None,
                handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            });
        };
        let Some(leaf) = id.chain.first() else {
            return Err(TlsError::NoCertificate {
                origin: id.chain_origin,
            });
        };
        let own = certificate_identity(leaf);
        let pair_error = |source| TlsError::CertificateKey {
            cert: id.chain_origin.clone(),
            key: id.key_origin.clone(),
            source,
        };
        let client = client
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .map_err(pair_error)?;

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider))
                .allow_unauthenticated()
                .build()
                .map_err(|source| TlsError::Verifier {
                    origin: ca_origin.clone(),
                    source,
                })?;
        let server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(TlsError::Config)?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(id.chain, id.key)
            .map_err(pair_error)?;

        Ok(Tls {
            connector: TlsConnector::from(Arc::new(client)),
            acceptor: Some(TlsAcceptor::from(Arc::new(server))),
            own,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        })
    }

    async fn bounded<T>(
        &self,
        handshake: impl core::future::Future<Output = io::Result<T>>,
    ) -> io::Result<T> {
        tokio::time::timeout(self.handshake_timeout, handshake)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_path_buf(),
            what: "certificate",
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            origin: Origin::File(path.to_path_buf()),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| TlsError::Pem {
        path: path.to_path_buf(),
        what: "private key",
        source,
    })
}

#[async_trait::async_trait]
impl StreamWrapper for Tls {
    type Stream = TlsStream<TcpStream>;

    /// Runs the handshake as a client, requiring a certificate for node
    /// `peer` from the CA.
    async fn client(&self, stream: TcpStream, peer: PeerId) -> io::Result<Self::Stream> {
        let name = ServerName::try_from(node_name(peer))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = self.bounded(self.connector.connect(name, stream)).await?;
        Ok(TlsStream::Client(tls))
    }

    /// Runs the handshake as a server, verifying a client certificate if
    /// one is presented.
    async fn server(&self, stream: TcpStream) -> io::Result<Self::Stream> {
        let Some(acceptor) = &self.acceptor else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a client-only TLS wrapper has no certificate to accept with",
            ));
        };
        let tls = self.bounded(acceptor.accept(stream)).await?;
        Ok(TlsStream::Server(tls))
    }

    fn authenticates(&self) -> bool {
        true
    }

    /// The node id the other end's certificate proves: the client's on an
    /// accepted stream (`None` if it presented none), the server's on a
    /// dialed one.
    fn peer_identity(stream: &Self::Stream) -> Option<PeerId> {
        let (_, state) = stream.get_ref();
        certificate_identity(state.peer_certificates()?.first()?)
    }

    // tokio-rustls streams do not split into lock-free halves (both
    // directions share one TLS session), so the default split stays.
}
