//! HTTPS serving: rustls (TLS 1.2+, ALPN h2 and http/1.1, optional client-certificate verification, certificates
//! and client CA reloaded from disk) in front of hyper's auto HTTP/1.1 + HTTP/2 connection handling, with bounded
//! connections, streams, headers and idle time, and graceful shutdown.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use konnector_runtime::tls::{
    CertRole, HandshakeFailure, ReloadingCertResolver, TlsMetrics, server_config_observed,
};
use prometheus_client::metrics::gauge::Gauge;
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::Service;

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

/// Knobs of the HTTPS server itself.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Time allowed for the TLS handshake, for reading HTTP/1.1 request headers, and for the first request to
    /// start after the handshake.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// How long in-flight connections may drain after shutdown.
    pub shutdown_grace: Duration,
    /// Open connections at most (handshakes included); further ones wait in the listen backlog.
    pub max_connections: usize,
    /// HTTP/2 streams a client may have open at once per connection.
    pub max_concurrent_streams: u32,
    /// Largest request header block.
    pub max_header_bytes: u32,
    /// Set to the number of open connections.
    pub connections: Gauge,
    /// Counts failed TLS handshakes.
    pub tls_metrics: TlsMetrics,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(25),
            max_connections: 128,
            max_concurrent_streams: 32,
            max_header_bytes: 16 * 1024,
            connections: Gauge::default(),
            tls_metrics: TlsMetrics::default(),
        }
    }
}

impl ServerOptions {
    /// The server knobs of `config`.
    pub fn from_config(config: &GatewayConfig, connections: Gauge, tls_metrics: TlsMetrics) -> Self {
        Self {
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            shutdown_grace: config.shutdown_grace,
            max_connections: config.max_connections,
            max_concurrent_streams: config.max_concurrent_streams,
            max_header_bytes: config.max_header_bytes,
            connections,
            tls_metrics,
        }
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

/// HTTP/2 receive window per stream. A hook body of 2 MiB then takes 128 window updates, a few milliseconds inside a
/// cluster.
const STREAM_WINDOW: u32 = 16 * 1024;

/// Requests in flight on one connection, and whether it has had any.
#[derive(Clone, Copy, Default)]
struct Activity {
    in_flight: usize,
    seen: bool,
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
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(options.max_header_bytes.max(8192) as usize);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(options.max_concurrent_streams)
        .max_header_list_size(options.max_header_bytes)
        // Flow-control windows sized so a connection never holds more than streams × 16 KiB of unread body, and so
        // streams waiting for a request permit (their bodies unread) can never use up the connection's window and
        // stall the streams that hold one: hyper's 1 MiB defaults let 64 waiting uploads deadlock a connection.
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(
            options
                .max_concurrent_streams
                .saturating_mul(STREAM_WINDOW)
                .max(65_535),
        )
        // Pings find peers that vanished without closing; idle but live peers are handled by the idle timeout.
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let connections = Arc::new(Semaphore::new(options.max_connections));
    let tracker = TaskTracker::new();
    let addr = listener.local_addr().context("listener has no local address")?;
    tracing::info!(%addr, "gateway listening (HTTPS)");

    loop {
        // Take a connection slot before accepting: at the limit, new connections wait in the kernel's backlog
        // instead of costing memory here.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = connections.clone().acquire_owned() => permit.expect("the connection semaphore is never closed"),
        };
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
        let router = router.clone();
        let shutdown = shutdown.clone();
        let options = options.clone();
        tracker.spawn(async move {
            let _permit = permit;
            options.connections.inc();
            let _gauge = scopeguard(options.connections.clone());
            let tls = match tokio::time::timeout(options.header_read_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    options.tls_metrics.handshake_failed(HandshakeFailure::of(&error));
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    options.tls_metrics.handshake_failed(HandshakeFailure::Timeout);
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let (activity, mut watch) = watch::channel(Activity::default());
            let activity = Arc::new(activity);
            let service = hyper::service::service_fn(move |request| {
                activity.send_modify(|a| {
                    a.in_flight += 1;
                    a.seen = true;
                });
                let done = InFlight(activity.clone());
                let response = router.clone().call(request);
                async move {
                    let _done = done;
                    response.await
                }
            });
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(conn);
            let close = tokio::select! {
                result = conn.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                    return;
                }
                _ = shutdown.cancelled() => options.shutdown_grace,
                _ = idle(&mut watch, options.header_read_timeout, options.idle_timeout) => {
                    tracing::debug!(%peer, "closing an idle connection");
                    options.header_read_timeout
                }
            };
            // GOAWAY on HTTP/2, close after the current response on HTTP/1.1; a peer that does not let the
            // connection finish is dropped after `close`.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(close, conn).await;
        });
    }

    drop(listener);
    tracker.close();
    tokio::select! {
        _ = tracker.wait() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(options.shutdown_grace) => tracing::warn!("shutdown grace elapsed; closing remaining connections"),
    }
    Ok(())
}

/// Resolves once the connection has had no request in flight for `idle_timeout` (or, before its first request,
/// for `first_request_timeout`: a client that completes TLS and then sends nothing is not kept for long).
async fn idle(
    watch: &mut watch::Receiver<Activity>,
    first_request_timeout: Duration,
    idle_timeout: Duration,
) {
    loop {
        let now = *watch.borrow_and_update();
        if now.in_flight > 0 {
            if watch.changed().await.is_err() {
                return std::future::pending().await;
            }
            continue;
        }
        let limit = if now.seen {
            idle_timeout
        } else {
            first_request_timeout
        };
        match tokio::time::timeout(limit, watch.changed()).await {
            Err(_) => return,
            Ok(Err(_)) => return std::future::pending().await,
            Ok(Ok(())) => {}
        }
    }
}

/// Marks one request finished when dropped (answered, or abandoned by the client).
struct InFlight(Arc<watch::Sender<Activity>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|a| a.in_flight -= 1);
    }
}

/// Decrements the connections gauge when the connection task ends, however it ends.
struct GaugeGuard(Gauge);

fn scopeguard(gauge: Gauge) -> GaugeGuard {
    GaugeGuard(gauge)
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
