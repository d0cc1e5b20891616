//! The gateway's Prometheus metrics, served at `/metrics` on the admin port.

use konnector_runtime::metrics::Metrics;
use prometheus_client::metrics::{
    counter::Counter,
    family::Family,
    gauge::Gauge,
    histogram::{Histogram, exponential_buckets},
};

use crate::catalog::Hook;

type Labels = Vec<(&'static str, String)>;

/// `konnector_gateway_hook_requests_total{hook,status}`, `konnector_gateway_hook_duration_seconds{hook}`,
/// `konnector_gateway_executor_up` and `konnector_gateway_connections`.
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    /// 1 while the executor answers its gRPC health check, else 0.
    pub executor_up: Gauge,
    /// Open HTTPS connections (TLS handshake included).
    pub connections: Gauge,
}

fn duration_histogram() -> Histogram {
    // 5 ms to about 82 s: a hook is bounded by CAPI's timeout (at most 30 s) plus the backstop.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

impl GatewayMetrics {
    /// Creates the metrics and registers them in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            executor_up: Gauge::default(),
            connections: Gauge::default(),
        };
        metrics.register(|r| {
            let r = r.sub_registry_with_prefix("konnector_gateway");
            r.register(
                "hook_requests",
                "Lifecycle hook requests answered, by hook and answer status (Success or Failure)",
                m.requests.clone(),
            );
            r.register(
                "hook_duration_seconds",
                "Time to answer a lifecycle hook request, by hook",
                m.duration.clone(),
            );
            r.register(
                "executor_up",
                "1 while the executor answers its gRPC health check, else 0",
                m.executor_up.clone(),
            );
            r.register(
                "connections",
                "Open HTTPS connections, TLS handshakes included",
                m.connections.clone(),
            );
        });
        m
    }

    /// Counts one answered hook request.
    pub fn observe(&self, hook: Hook, status: &'static str, seconds: f64) {
        self.requests
            .get_or_create(&vec![
                ("hook", hook.name().to_owned()),
                ("status", status.to_owned()),
            ])
            .inc();
        self.duration
            .get_or_create(&vec![("hook", hook.name().to_owned())])
            .observe(seconds);
    }
}
