//! The admin HTTP server: `/livez` and `/readyz`, on a port separate from the traffic port so that probes never
//! compete with hooks and never need TLS.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, http::StatusCode, routing::get};
use tokio_util::sync::CancellationToken;

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
pub async fn serve(addr: SocketAddr, router: Router, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = crate::net::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "admin server listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
