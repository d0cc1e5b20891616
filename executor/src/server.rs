//! Serving the executor over gRPC, with health and reflection beside it: TLS through our own acceptor (so the
//! serving pair and the client CA are re-read from disk when they change), bounded connections, handshakes,
//! concurrency and request time, and HTTP/2 keepalive.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use konnector_proto::v1::agent_service_server::AgentServiceServer;
use konnector_runtime::tls::HandshakeFailure;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Server, server::Connected};

use crate::{
    access::{Access, AccessLayer, ClientNames, Peer},
    config::ServerOptions,
    executor::Executor,
};

/// Serves `executor` on `listener` until `shutdown` is cancelled: the AgentService, gRPC health (AgentService
/// reported SERVING) and, unless turned off, server reflection (v1 and v1alpha). The server's own metrics (build info, connections,
/// TLS) join the executor's registry here, so every way of serving it exports the same set.
pub async fn serve(
    executor: Executor,
    listener: TcpListener,
    options: ServerOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let registry = executor.metrics().registry();
    konnector_runtime::metrics::register_build_info(registry, "executor");
    konnector_runtime::process::register_process_metrics(registry);
    registry.register(|r| {
        r.register(
            "grpc_connections_accepted",
            "gRPC connections accepted (after the TLS handshake, with TLS)",
            options.connections_accepted.clone(),
        );
        options.tls_metrics.register(r);
    });
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AgentServiceServer<Executor>>()
        .await;
    let (reflection_v1, reflection_v1alpha) = if options.reflection {
        let v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(konnector_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(konnector_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        (Some(v1), Some(v1alpha))
    } else {
        (None, None)
    };
    let names = ClientNames::new(&options.allowed_client_names, &options.read_only_client_names)?;
    let access = AccessLayer::new(executor.metrics().clone());
    let addr = listener.local_addr()?;
    tracing::info!(%addr, tls = options.tls.is_some(), reflection = options.reflection, "executor gRPC server listening");
    let (incoming, accept_task) = incoming(listener, &options, names, shutdown.clone());
    Server::builder()
        .concurrency_limit_per_connection(options.max_concurrent_requests)
        .max_concurrent_streams(u32::try_from(options.max_concurrent_requests).unwrap_or(u32::MAX))
        .timeout(options.request_timeout)
        .http2_keepalive_interval(Some(options.keepalive_interval))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_connection_age(options.max_connection_age)
        .http2_max_header_list_size(64 * 1024)
        // In front of every service, so an RPC added later is refused to read-only clients until it is listed.
        .layer(access)
        .add_service(executor.into_service())
        .add_service(health_service)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
        .await?;
    accept_task.abort();
    health_reporter
        .set_not_serving::<AgentServiceServer<Executor>>()
        .await;
    Ok(())
}

type Incoming = tokio_stream::wrappers::ReceiverStream<std::io::Result<Limited>>;

/// Accepts connections (at most `max_connections` open), sets TCP_NODELAY, runs each TLS handshake in its own task
/// under `handshake_timeout`, and hands the finished connections to tonic.
fn incoming(
    listener: TcpListener,
    options: &ServerOptions,
    names: ClientNames,
    shutdown: CancellationToken,
) -> (Incoming, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(16);
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let acceptor = options.tls.clone().map(TlsAcceptor::from);
    let handshake_timeout = options.handshake_timeout;
    let accepted = options.connections_accepted.clone();
    let tls_metrics = options.tls_metrics.clone();
    let names = Arc::new(names);
    let task = tokio::spawn(async move {
        loop {
            // TCP_NODELAY is set by the accept: tonic applies its default only to sockets it binds itself.
            let Some((tcp, peer, permit)) =
                konnector_runtime::net::accept_under_permit(&listener, &slots, &shutdown).await
            else {
                return;
            };
            let Some(acceptor) = acceptor.clone() else {
                accepted.inc();
                if tx
                    .send(Ok(Limited::plain(tcp, Access::Full, permit)))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            };
            let tx = tx.clone();
            let accepted = accepted.clone();
            let tls_metrics = tls_metrics.clone();
            let names = names.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => match client_access(&tls, &names) {
                        None => {
                            // The certificate verified, but names neither the gateway's nor a read-only identity:
                            // the connection is dropped before a single request is read.
                            tls_metrics.handshake_failed(HandshakeFailure::BadClientCertificate);
                            tracing::debug!(%peer, "client certificate names no allowed identity; connection refused");
                        }
                        Some(access) => {
                            accepted.inc();
                            let _ = tx.send(Ok(Limited::tls(tls, access, permit))).await;
                        }
                    },
                    Ok(Err(error)) => {
                        tls_metrics.handshake_failed(HandshakeFailure::of(&error));
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                    }
                    Err(_) => {
                        tls_metrics.handshake_failed(HandshakeFailure::Timeout);
                        tracing::debug!(%peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    (tokio_stream::wrappers::ReceiverStream::new(rx), task)
}

/// What the client may call, from the DNS subjectAltNames of its certificate (see [`ClientNames::access`]);
/// `None`: refused. Without client authentication (no certificate was asked for) every client has full access.
fn client_access(tls: &tokio_rustls::server::TlsStream<TcpStream>, names: &ClientNames) -> Option<Access> {
    let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
        // mTLS requires a certificate, so none means the server does not authenticate clients at all.
        return Some(Access::Full);
    };
    names.access(&konnector_runtime::tls::dns_names(leaf.as_ref()))
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// A served connection holding its connection slot until it closes, and what its client may call (decided once,
/// at the handshake).
struct Limited {
    stream: Stream,
    access: Access,
    _permit: OwnedSemaphorePermit,
}

impl Limited {
    fn plain(tcp: TcpStream, access: Access, permit: OwnedSemaphorePermit) -> Self {
        Self {
            stream: Stream::Plain(tcp),
            access,
            _permit: permit,
        }
    }

    fn tls(
        tls: tokio_rustls::server::TlsStream<TcpStream>,
        access: Access,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            stream: Stream::Tls(Box::new(tls)),
            access,
            _permit: permit,
        }
    }
}

impl Connected for Limited {
    // Tonic puts it into every request's extensions, where `AccessLayer` reads it.
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Self::ConnectInfo {
        let tcp = match &self.stream {
            Stream::Plain(tcp) => tcp.connect_info(),
            Stream::Tls(tls) => tls.get_ref().0.connect_info(),
        };
        Peer {
            tcp,
            access: self.access.clone(),
        }
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}
