//! Mutual TLS over real loopback TCP: who can prove which node id.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::path::PathBuf;

use bytes::Bytes;
use core::time::Duration;
use quorate_transport::framing::{ChannelId, Frame};
use quorate_transport::tcp::{PeerId, StreamWrapper, TcpConfig, TcpTransport, Trust};
use quorate_transport::tls::{
    Origin, Tls, TlsError, certificate_identity, node_name, parse_node_name,
};
use quorate_transport::{Event, Transport};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(10);

/// A certificate authority for tests.
struct Ca {
    cert: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Self {
        Self::named("test cluster CA")
    }

    fn named(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate and key with these DNS names, for client and server use.
    fn issue(&self, names: &[String]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let (cert, key) = self.issue_pem(names);
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    fn issue_pem(&self, names: &[String]) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.to_vec()).unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        (params.signed_by(&key, &self.issuer).unwrap(), key)
    }

    /// A node's wrapper trusting this CA, its certificate naming `id`.
    fn node(&self, id: u64) -> Tls {
        self.node_with_names(&[node_name(PeerId(id))])
    }

    fn node_with_names(&self, names: &[String]) -> Tls {
        let (cert, key) = self.issue(names);
        Tls::new(vec![self.cert.clone()], vec![cert], key).unwrap()
    }

    fn client_only(&self) -> Tls {
        Tls::client_only(vec![self.cert.clone()]).unwrap()
    }
}

type Stream = <Tls as StreamWrapper>::Stream;

/// One handshake over loopback: `dialer` dials `server` as peer `dial_as`.
/// Both sides' results, each bounded.
async fn handshake(
    server: &Tls,
    dialer: &Tls,
    dial_as: PeerId,
) -> (io::Result<Stream>, io::Result<Stream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = async {
        let (tcp, _) = listener.accept().await?;
        server.server(tcp).await
    };
    let dial = async {
        let tcp = TcpStream::connect(addr).await?;
        dialer.client(tcp, dial_as).await
    };
    let (accepted, dialed) = tokio::time::timeout(BOUND, async { tokio::join!(accept, dial) })
        .await
        .expect("handshake hung");
    (accepted, dialed)
}

fn frame(s: &'static str) -> Frame {
    Frame::new(ChannelId(1), Bytes::from_static(s.as_bytes()))
}

/// The next message, skipping connection events, bounded.
async fn next_message(t: &mut TcpTransport<Tls>) -> (PeerId, Frame) {
    tokio::time::timeout(BOUND, async {
        loop {
            if let Event::Message { from, msg } = t.recv().await.unwrap() {
                return (from, msg);
            }
        }
    })
    .await
    .expect("no message arrived")
}

#[tokio::test]
async fn two_nodes_exchange_frames_and_the_acceptor_learns_the_dialers_id() {
    let ca = Ca::new();
    let (one, two) = (ca.node(1), ca.node(2));
    assert_eq!(
        (one.own_identity(), two.own_identity()),
        (Some(PeerId(1)), Some(PeerId(2)))
    );

    // Wrapper level: each side learns who the other is.
    let (accepted, dialed) = handshake(&one, &two, PeerId(1)).await;
    assert_eq!(Tls::peer_identity(&accepted.unwrap()), Some(PeerId(2)));
    assert_eq!(Tls::peer_identity(&dialed.unwrap()), Some(PeerId(1)));

    // Transport level: frames both ways over TLS.
    let mut a = TcpTransport::bind_with(PeerId(1), "127.0.0.1:0", TcpConfig::default(), one)
        .await
        .unwrap();
    let mut b = TcpTransport::bind_with(PeerId(2), "127.0.0.1:0", TcpConfig::default(), two)
        .await
        .unwrap();
    b.add_peer(PeerId(1), a.local_addr().unwrap());
    b.send(PeerId(1), frame("from two")).await.unwrap();
    let (from, msg) = next_message(&mut a).await;
    assert_eq!((from, &msg.payload[..]), (PeerId(2), &b"from two"[..]));
    a.send(PeerId(2), frame("from one")).await.unwrap();
    let (from, msg) = next_message(&mut b).await;
    assert_eq!((from, &msg.payload[..]), (PeerId(1), &b"from one"[..]));
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test]
async fn a_certificate_for_node_3_proves_3_not_the_2_it_claims() {
    let ca = Ca::new();
    let (one, three) = (ca.node(1), ca.node(3));
    let (accepted, dialed) = handshake(&one, &three, PeerId(1)).await;
    dialed.unwrap();
    // The handshake succeeds (node 3 is a member), but what it proves is 3.
    // End to end, a TcpTransport running as PeerId(2) with this wrapper
    // says hello as 2; the transport's authenticating policy then refuses
    // the hello (2 is a known peer whose identity was not proved) or
    // treats it as a client connection, never as peer 2.
    assert_eq!(Tls::peer_identity(&accepted.unwrap()), Some(PeerId(3)));
}

#[tokio::test]
async fn certificates_from_another_ca_fail_the_handshake() {
    let ours = Ca::new();
    let node = ours.node(1);
    // Another CA under another name, and one that copies our CA's name
    // (found as the issuer by name, then its signature does not check).
    for (theirs, why) in [
        (Ca::named("someone else's CA"), "UnknownIssuer"),
        (Ca::new(), "BadSignature"),
    ] {
        // A stranger who trusts our CA (its certificate is no secret) but
        // holds a certificate from theirs: the acceptor refuses it.
        let (cert, key) = theirs.issue(&[node_name(PeerId(2))]);
        let stranger = Tls::new(vec![ours.cert.clone()], vec![cert], key).unwrap();
        let (accepted, _) = handshake(&node, &stranger, PeerId(1)).await;
        let err = accepted.expect_err("a foreign client certificate was accepted");
        assert!(err.to_string().contains(why), "unexpected error: {err}");
        // A stranger answering our dial: we refuse it.
        let (_, dialed) = handshake(&theirs.node(2), &node, PeerId(2)).await;
        let err = dialed.expect_err("a foreign server certificate was accepted");
        assert!(err.to_string().contains(why), "unexpected error: {err}");
    }
}

#[tokio::test]
async fn an_expired_node_certificate_fails_the_handshake() {
    let ca = Ca::new();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![node_name(PeerId(2))]).unwrap();
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let expired = Tls::new(vec![ca.cert.clone()], vec![cert.der().clone()], key).unwrap();
    let (accepted, _) = handshake(&ca.node(1), &expired, PeerId(1)).await;
    let err = accepted.expect_err("an expired client certificate was accepted");
    assert!(
        err.to_string().contains("certificate expired"),
        "unexpected error: {err}"
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_connects_and_proves_nothing() {
    let ca = Ca::new();
    let (node, cli) = (ca.node(1), ca.client_only());
    assert_eq!(cli.own_identity(), None);
    let (accepted, dialed) = handshake(&node, &cli, PeerId(1)).await;
    assert_eq!(Tls::peer_identity(&accepted.unwrap()), None);
    assert_eq!(Tls::peer_identity(&dialed.unwrap()), Some(PeerId(1)));

    // And over the transport: a node that admits clients (`KnownPeers`)
    // files the CLI under a client id and answers it on its own connection.
    let config = TcpConfig {
        trust: Trust::KnownPeers,
        ..TcpConfig::default()
    };
    let mut server = TcpTransport::bind_with(PeerId(1), "127.0.0.1:0", config, node)
        .await
        .unwrap();
    let mut client = TcpTransport::client_with(PeerId(900), TcpConfig::default(), cli);
    client.add_peer(PeerId(1), server.local_addr().unwrap());
    client.send(PeerId(1), frame("get k")).await.unwrap();
    let (from, msg) = next_message(&mut server).await;
    assert_eq!(&msg.payload[..], b"get k");
    assert!(from.is_client(), "{from:?}");
    server.send(from, frame("v")).await.unwrap();
    let (from, msg) = next_message(&mut client).await;
    assert_eq!((from, &msg.payload[..]), (PeerId(1), &b"v"[..]));
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_only_wrapper_cannot_accept() {
    let ca = Ca::new();
    let (cli, node) = (ca.client_only(), ca.node(2));
    let (accepted, _) = handshake(&cli, &node, PeerId(1)).await;
    assert_eq!(accepted.unwrap_err().kind(), io::ErrorKind::Unsupported);
}

#[tokio::test]
async fn a_dialer_refuses_a_server_that_names_another_node() {
    let ca = Ca::new();
    let (three, two) = (ca.node(3), ca.node(2));
    // Dialing node 1 but node 3 answers, with a valid certificate of its own.
    let (_, dialed) = handshake(&three, &two, PeerId(1)).await;
    let err = dialed.unwrap_err();
    assert!(
        err.to_string()
            .contains("not valid for name \"node-1.quorate.invalid\""),
        "unexpected error: {err}"
    );
    // The same server is fine for whoever dials node 3.
    let (_, dialed) = handshake(&three, &two, PeerId(3)).await;
    assert_eq!(Tls::peer_identity(&dialed.unwrap()), Some(PeerId(3)));
}

#[tokio::test]
async fn a_stalled_handshake_times_out() {
    let ca = Ca::new();
    let node = ca
        .node(1)
        .with_handshake_timeout(Duration::from_millis(200));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    // Connects and says nothing.
    let _silent = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(BOUND, node.server(tcp))
        .await
        .expect("the handshake timeout did not fire")
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[test]
fn node_names_have_one_spelling() {
    assert_eq!(node_name(PeerId(2)), "node-2.quorate.invalid");
    assert_eq!(parse_node_name("node-2.quorate.invalid"), Some(PeerId(2)));
    assert_eq!(parse_node_name("NODE-2.Quorate.Invalid"), Some(PeerId(2)));
    assert_eq!(
        parse_node_name("node-18446744073709551615.quorate.invalid"),
        Some(PeerId(u64::MAX))
    );
    for bad in [
        "node-02.quorate.invalid",
        "node-+2.quorate.invalid",
        "node-.quorate.invalid",
        "node-2.quorate.invalid.",
        "node-2.example.com",
        "xnode-2.quorate.invalid",
        "node-18446744073709551616.quorate.invalid",
        "*.quorate.invalid",
    ] {
        assert_eq!(parse_node_name(bad), None, "{bad}");
    }
}

#[test]
fn a_certificate_proves_its_one_node_name_only() {
    let ca = Ca::new();
    let id_of = |names: &[&str]| {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        certificate_identity(&ca.issue(&names).0)
    };
    assert_eq!(id_of(&["node-7.quorate.invalid"]), Some(PeerId(7)));
    assert_eq!(
        id_of(&["db.example.com", "node-7.quorate.invalid"]),
        Some(PeerId(7))
    );
    assert_eq!(
        id_of(&["node-7.quorate.invalid", "node-8.quorate.invalid"]),
        None
    );
    assert_eq!(id_of(&["db.example.com"]), None);
    assert_eq!(id_of(&["*.quorate.invalid"]), None);
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "quorate-tls-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn pem_files_load_and_errors_name_the_file() {
    let ca = Ca::new();
    let dir = TempDir::new("pem");
    let (cert, key) = ca.issue_pem(&[node_name(PeerId(4))]);
    let ca_path = dir.0.join("ca.pem");
    let cert_path = dir.0.join("node-4.pem");
    let key_path = dir.0.join("node-4.key");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let node = Tls::from_pem_files(&ca_path, &cert_path, &key_path).unwrap();
    assert_eq!(node.own_identity(), Some(PeerId(4)));
    let cli = Tls::client_only_from_pem_file(&ca_path).unwrap();
    let (accepted, _) = handshake(&node, &ca.node(5), PeerId(4)).await;
    assert_eq!(Tls::peer_identity(&accepted.unwrap()), Some(PeerId(5)));
    let (_, dialed) = handshake(&node, &cli, PeerId(4)).await;
    assert_eq!(Tls::peer_identity(&dialed.unwrap()), Some(PeerId(4)));

    // A missing file.
    let missing = dir.0.join("missing.pem");
    match Tls::client_only_from_pem_file(&missing) {
        Err(TlsError::Read { path, source }) => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    // A file with no certificate in it (here: the key).
    let err = Tls::client_only_from_pem_file(&key_path).unwrap_err();
    assert!(
        matches!(&err, TlsError::NoCertificate { origin: Origin::File(p) } if *p == key_path),
        "{err:?}"
    );
    assert!(err.to_string().contains("node-4.key"), "{err}");
    // A key file with no key in it (here: the certificate).
    let err = Tls::from_pem_files(&ca_path, &cert_path, &cert_path).unwrap_err();
    assert!(
        matches!(&err, TlsError::Pem { path, .. } if *path == cert_path),
        "{err:?}"
    );
    // A key that is not the certificate's.
    let other_key = dir.0.join("other.key");
    std::fs::write(&other_key, ca.issue_pem(&[]).1.serialize_pem()).unwrap();
    let err = Tls::from_pem_files(&ca_path, &cert_path, &other_key).unwrap_err();
    match &err {
        TlsError::CertificateKey { cert, key, .. } => {
            assert_eq!(cert, &Origin::File(cert_path.clone()));
            assert_eq!(key, &Origin::File(other_key.clone()));
        }
        other => panic!("{other:?}"),
    }
    // Garbage where the CA should be.
    let garbage = dir.0.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = Tls::client_only_from_pem_file(&garbage).unwrap_err();
    assert!(
        matches!(&err, TlsError::Pem { path, .. } if *path == garbage),
        "{err:?}"
    );
}

#[test]
fn no_ca_is_an_error() {
    assert!(matches!(
        Tls::client_only(Vec::new()),
        Err(TlsError::NoCertificate {
            origin: Origin::Memory
        })
    ));
}

/// End to end: a node whose certificate names 3 says hello as 2 (a known
/// peer) and is refused; its frames never reach the application. Node 3
/// under its own name gets through.
#[tokio::test]
async fn a_hello_claiming_a_peer_without_its_certificate_is_refused() {
    let ca = Ca::new();
    let config = TcpConfig {
        trust: Trust::KnownPeers,
        ..TcpConfig::default()
    };
    let mut server = TcpTransport::bind_with(PeerId(1), "127.0.0.1:0", config, ca.node(1))
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    server.add_peer(PeerId(2), "127.0.0.1:9".parse().unwrap());
    server.add_peer(PeerId(3), "127.0.0.1:9".parse().unwrap());
    let liar = TcpTransport::client_with(PeerId(2), TcpConfig::default(), ca.node(3));
    liar.add_peer(PeerId(1), addr);
    let _ = liar.try_send(PeerId(1), frame("as 2"));
    let deadline = tokio::time::Instant::now() + BOUND;
    while server.stats().refused_hellos == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never refused");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let honest = TcpTransport::client_with(PeerId(3), TcpConfig::default(), ca.node(3));
    honest.add_peer(PeerId(1), addr);
    honest.send(PeerId(1), frame("as 3")).await.unwrap();
    let (from, msg) = next_message(&mut server).await;
    assert_eq!((from, &msg.payload[..]), (PeerId(3), &b"as 3"[..]));
    liar.shutdown().await;
    honest.shutdown().await;
    server.shutdown().await;
}
