//! HTTPS serving: rustls (TLS 1.2+, ALPN h2 and http/1.1, optional client-certificate verification, certificate
//! reload from disk) in front of hyper's auto HTTP/1.1 + HTTP/2 connection handling, with graceful shutdown.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use konnector_runtime::tls::{ReloadingCertResolver, server_config};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The serving certificate, its key and, for mTLS, the CA that client certificates must chain to.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM certificate chain (leaf first), e.g. `tls.crt` from a cert-manager Secret.
    pub cert: PathBuf,
    /// PEM private key, e.g. `tls.key`.
    pub key: PathBuf,
    /// PEM CA bundle; when set, every client must present a certificate that chains to it.
    pub client_ca: Option<PathBuf>,
}

/// Knobs of the HTTPS server itself.
#[derive(Clone, Copy, Debug)]
pub struct ServerOptions {
    /// Time allowed for the TLS handshake and, on HTTP/1.1, for reading request headers.
    pub header_read_timeout: Duration,
    /// How long in-flight connections may drain after shutdown.
    pub shutdown_grace: Duration,
}

/// Builds the rustls configuration for `tls`. Fails if the files do not load now.
pub fn rustls_config(tls: &TlsFiles, reload_interval: Duration) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let resolver = ReloadingCertResolver::new(&tls.cert, &tls.key, reload_interval)?;
    let config = server_config(
        Arc::new(resolver),
        tls.client_ca.as_deref(),
        &[b"h2", b"http/1.1"],
    )?;
    Ok(Arc::new(config))
}

/// Serves `router` over HTTPS on `listener` until `shutdown` is cancelled, then stops accepting and lets open
/// connections finish for up to `shutdown_grace`.
pub async fn serve_https(
    router: Router,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    options: ServerOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let addr = listener.local_addr().context("listener has no local address")?;
    tracing::info!(%addr, "gateway listening (HTTPS)");

    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Usually EMFILE; back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        let handshake_timeout = options.header_read_timeout;
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .into_owned();
            if let Err(error) = watcher.watch(conn).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }

    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(options.shutdown_grace) => tracing::warn!("shutdown grace elapsed; closing remaining connections"),
    }
    Ok(())
}
