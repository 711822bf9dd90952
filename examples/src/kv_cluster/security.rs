//! Plain TCP or mutual TLS, chosen at run time: one transport type for
//! both, so the node and the client take `--tls-dir` without being generic.

use std::io;

use quorate_transport::tcp::{PeerId, Plain, StreamReader, StreamWrapper, StreamWriter};
use quorate_transport::tls::Tls;
use tokio::net::TcpStream;
use tokio_util::either::Either;

/// How a node or client secures its connections.
#[derive(Debug, Default)]
pub enum Security {
    /// Plain TCP: every hello is believed, so only for loopback (or with
    /// `--insecure`).
    #[default]
    Plain,
    /// TLS with the cluster CA: nodes prove their id with a certificate,
    /// clients verify the nodes'.
    Tls(Box<Tls>),
}

type TlsStream = <Tls as StreamWrapper>::Stream;

#[async_trait::async_trait]
impl StreamWrapper for Security {
    type Stream = Either<TcpStream, TlsStream>;

    async fn client(&self, stream: TcpStream, peer: PeerId) -> io::Result<Self::Stream> {
        match self {
            Security::Plain => Ok(Either::Left(stream)),
            Security::Tls(tls) => tls.client(stream, peer).await.map(Either::Right),
        }
    }

    async fn server(&self, stream: TcpStream) -> io::Result<Self::Stream> {
        match self {
            Security::Plain => Ok(Either::Left(stream)),
            Security::Tls(tls) => tls.server(stream).await.map(Either::Right),
        }
    }

    fn authenticates(&self) -> bool {
        match self {
            Security::Plain => Plain.authenticates(),
            Security::Tls(tls) => tls.authenticates(),
        }
    }

    fn peer_identity(stream: &Self::Stream) -> Option<PeerId> {
        match stream {
            Either::Left(tcp) => Plain::peer_identity(tcp),
            Either::Right(tls) => Tls::peer_identity(tls),
        }
    }

    fn split(stream: Self::Stream) -> (StreamReader, StreamWriter) {
        match stream {
            Either::Left(tcp) => Plain::split(tcp),
            Either::Right(tls) => Tls::split(tls),
        }
    }
}
