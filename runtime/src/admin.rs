//! The admin HTTP server: `/livez` and `/readyz`, on a port separate from the traffic port so that probes never
//! compete with hooks and never need TLS.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, http::StatusCode, routing::get};
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use crate::http_server::{self, ServerOptions};

/// Bound on one admin request (a `/metrics` scrape is the slowest); nothing on the admin port runs longer.
pub const ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Readiness flag shared between the admin server and whatever decides readiness. Starts not ready.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the process ready or not ready.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether the process is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Builds the admin router. `extra` is merged in, so a binary can add `/metrics`.
pub fn router(readiness: Readiness, extra: Router) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    if readiness.get() {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
        .merge(extra)
}

/// Serves the admin router on `addr` until `shutdown` is cancelled (IPv4 only, with a warning, when `addr` is
/// `[::]` on a host without IPv6: [`crate::net::bind`]).
///
/// Every pod may reach the admin port, so it is served by the same bounded server as the hooks
/// ([`http_server::serve`] with [`ServerOptions::admin`]): a few connections at most, the oldest idle one closed
/// to make room for a new one, a short wait for the first byte, and [`ADMIN_REQUEST_TIMEOUT`] per request. Idle
/// connections by the thousand cost neither file descriptors nor memory, and a probe still gets through.
pub async fn serve(addr: SocketAddr, router: Router, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = crate::net::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "admin server listening");
    serve_on(listener, router, shutdown).await
}

/// [`serve`] on a bound listener.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let router = router.layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        ADMIN_REQUEST_TIMEOUT,
    ));
    http_server::serve(router, listener, None, ServerOptions::admin(), shutdown).await
}
