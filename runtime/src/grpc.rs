//! gRPC helpers shared by the gateway and the CLI (clients) and the executor (server).

use std::{future::Future, io, pin::Pin, sync::Arc};

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::Code;

/// The gRPC code's canonical name (`FAILED_PRECONDITION`), stable across tonic versions (tonic's `Display` is a
/// sentence). Used in hook answers, metric labels and span attributes.
pub const fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Where a [`TlsConnector`] gets the byte stream TLS runs over: a TCP connection ([`TcpDial`]), or anything else
/// (the CLI's port-forward through the API server).
pub trait Dial: Clone + Send + Sync + 'static {
    /// The stream TLS runs over.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Opens one stream; its error says what could not be reached.
    fn dial(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

/// A TCP connection to `host:port`, without Nagle's algorithm (gRPC writes small frames).
#[derive(Clone, Debug)]
pub struct TcpDial {
    /// A DNS name or an IP address; the brackets of a URI's IPv6 literal are tolerated.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl Dial for TcpDial {
    type Io = tokio::net::TcpStream;

    fn dial(&self) -> impl Future<Output = io::Result<Self::Io>> + Send {
        let (host, port) = (self.host.trim_matches(['[', ']']).to_owned(), self.port);
        async move {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            Ok(tcp)
        }
    }
}

/// A TLS stream as tonic's connector returns it.
pub type TlsIo<Io> = TokioIo<tokio_rustls::client::TlsStream<Io>>;

/// The connector for tonic's `Endpoint::connect_with_connector`: dials with `D`, then runs TLS with the client
/// configuration given (so a reloading configuration is read on every new connection). tonic does TLS itself
/// only over its own TCP connections and only for an `https://` URI; with this connector the endpoint's URI is
/// `http://` and only a label, and the TLS (server name included) is this connector's.
#[derive(Clone)]
pub struct TlsConnector<D> {
    tls: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
    dial: D,
    peer: &'static str,
}

impl<D: Dial> TlsConnector<D> {
    /// Connects with `config` to `server_name` over what `dial` opens; `peer` names the server in the handshake
    /// error (e.g. `the executor`).
    pub fn new(
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
        dial: D,
        peer: &'static str,
    ) -> Self {
        Self {
            tls: tokio_rustls::TlsConnector::from(config),
            server_name,
            dial,
            peer,
        }
    }
}

impl<D: Dial> tower::Service<Uri> for TlsConnector<D> {
    type Response = TlsIo<D::Io>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsIo<D::Io>>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let io = this.dial.dial().await?;
            let tls = this
                .tls
                .connect(this.server_name.clone(), io)
                .await
                .map_err(|error| {
                    let peer = this.peer;
                    tracing::warn!(%error, "TLS handshake with {peer} failed");
                    io::Error::new(error.kind(), format!("TLS handshake with {peer} failed: {error}"))
                })?;
            Ok(TokioIo::new(tls))
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tower::Service;

    use super::*;

    fn connector(port: u16) -> TlsConnector<TcpDial> {
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
        let dial = TcpDial {
            host: "[127.0.0.1]".into(),
            port,
        };
        TlsConnector::new(
            Arc::new(config),
            ServerName::try_from("executor").unwrap(),
            dial,
            "the executor",
        )
    }

    #[tokio::test]
    async fn a_failed_handshake_names_the_peer_and_a_failed_dial_passes_through() {
        // A peer that answers the ClientHello with bytes that are no TLS record.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await.unwrap();
        });
        let Err(error) = connector(port).call(Uri::from_static("http://executor")).await else {
            panic!("a handshake with a peer that speaks no TLS succeeded");
        };
        assert!(
            error
                .to_string()
                .starts_with("TLS handshake with the executor failed: "),
            "{error}"
        );
        server.await.unwrap();

        // Nothing listens any more: the dial's own error, not a handshake error.
        let Err(error) = connector(port).call(Uri::from_static("http://executor")).await else {
            panic!("connected to a closed port");
        };
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused, "{error}");
    }
}
