//! A Prometheus registry served at `/metrics` on the admin port.

use std::sync::{Arc, Mutex};

use axum::{Router, http::header, response::IntoResponse, routing::get};
use prometheus_client::{encoding::text::encode, registry::Registry};

/// A shared registry. Register metrics once at start-up; the admin server encodes them on each scrape.
#[derive(Clone, Default)]
pub struct Metrics(Arc<Mutex<Registry>>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A registry whose metric names are prefixed with `prefix_`.
    pub fn with_prefix(prefix: &str) -> Self {
        Self(Arc::new(Mutex::new(Registry::with_prefix(prefix))))
    }

    /// Runs `f` with the registry, to register metrics.
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }

    /// A router serving `/metrics`, to merge into the admin router.
    pub fn router(&self) -> Router {
        let metrics = self.clone();
        Router::new().route(
            "/metrics",
            get(move || {
                let body = metrics.encode();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response()
                }
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn encodes_registered_metrics() {
        let metrics = Metrics::with_prefix("konnector");
        let c = Counter::<u64>::default();
        metrics.register(|r| r.register("hooks", "Hook requests", c.clone()));
        c.inc();
        let text = metrics.encode();
        assert!(text.contains("konnector_hooks_total 1"), "{text}");
    }
}
