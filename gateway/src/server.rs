//! HTTPS serving: rustls (TLS 1.2+, ALPN h2 and http/1.1, optional client-certificate verification, certificates
//! and client CA reloaded from disk) in front of the runtime's bounded server
//! ([`konnector_runtime::http_server`]: hyper's auto HTTP/1.1 + HTTP/2 with bounded connections, streams, headers,
//! idle time and requests per connection, and graceful shutdown), which also serves the admin ports.

use std::{path::PathBuf, sync::Arc, time::Duration};

use axum::Router;
use konnector_runtime::tls::{CertRole, ReloadingCertResolver, TlsMetrics, server_config_observed};
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;

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

/// Knobs of the HTTPS server: the runtime's bounded server, shared with the admin ports.
pub use konnector_runtime::http_server::{ConnectionPermits, ServerOptions};

/// The server knobs of `config`.
pub fn server_options(config: &GatewayConfig, connections: Gauge, tls_metrics: TlsMetrics) -> ServerOptions {
    ServerOptions {
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
        shutdown_grace: config.shutdown_grace,
        max_connections: config.max_connections,
        // CAPI opens a connection when it has a hook to call; a full hook port makes it wait (in the backlog)
        // rather than cutting a connection CAPI may be about to use.
        evict_idle_when_full: false,
        max_concurrent_streams: config.max_concurrent_streams,
        max_requests_per_connection: Some(config.max_requests_per_connection),
        max_header_bytes: config.max_header_bytes,
        connections,
        tls_metrics,
    }
}

/// Builds the rustls configuration for `tls`. Fails if the files do not load now; later changes are picked up
/// every `reload_interval`.
pub fn rustls_config(tls: &TlsFiles, reload_interval: Duration) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    rustls_config_observed(tls, reload_interval, &TlsMetrics::default())
}

/// [`rustls_config`], keeping the expiry of the serving certificate and the client CA in `tls_metrics`.
pub fn rustls_config_observed(
    tls: &TlsFiles,
    reload_interval: Duration,
    tls_metrics: &TlsMetrics,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let resolver = ReloadingCertResolver::new(&tls.cert, &tls.key, reload_interval)?
        .observed(tls_metrics, CertRole::Server);
    let config = server_config_observed(
        Arc::new(resolver),
        tls.client_ca.as_deref(),
        reload_interval,
        &[b"h2", b"http/1.1"],
        Some(tls_metrics),
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
    konnector_runtime::http_server::serve(router, listener, Some(tls), options, shutdown).await
}
