//! The gateway's Prometheus metrics, served at `/metrics` on the admin port.

use konnector_runtime::{
    metrics::{Metrics, latency_histogram},
    tls::TlsMetrics,
};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram};

use crate::{catalog::Hook, client::rpc_method};

type Labels = Vec<(&'static str, String)>;

/// `konnector_gateway_hook_requests_total{hook,status}`, `konnector_gateway_hook_duration_seconds{hook,status}`,
/// `konnector_gateway_executor_requests_total{method,code}`, `konnector_gateway_executor_request_duration_seconds
/// {method}`, `konnector_gateway_executor_up`, `konnector_gateway_connections`, and the TLS metrics
/// (`konnector_gateway_tls_handshake_failures_total{reason}`,
/// `konnector_gateway_certificate_expiry_timestamp_seconds{role}`).
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    /// 1 while the executor answers its gRPC health check, else 0.
    pub executor_up: Gauge,
    /// Open HTTPS connections (TLS handshake included).
    pub connections: Gauge,
    /// Failed handshakes on the HTTPS server, and the expiry of its certificates and of those towards the executor.
    pub tls: TlsMetrics,
    executor_requests: Family<Labels, Counter>,
    executor_duration: Family<Labels, Histogram, fn() -> Histogram>,
}

impl GatewayMetrics {
    /// Creates the metrics and registers them in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            executor_up: Gauge::default(),
            connections: Gauge::default(),
            tls: TlsMetrics::default(),
            executor_requests: Family::default(),
            executor_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
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
                "Time to answer a lifecycle hook request, by hook and answer status",
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
            r.register(
                "executor_requests",
                "AgentService calls to the executor, by method, gRPC code, and who answered (executor, or other: not reached, a proxy, the deadline)",
                m.executor_requests.clone(),
            );
            r.register(
                "executor_request_duration_seconds",
                "Time for the executor to answer an AgentService call (one retry on a new connection included), by method",
                m.executor_duration.clone(),
            );
            m.tls.register(r);
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
        // By status too: a Failure that comes back at once (bad request, executor down) and one that waited out
        // the deadline are different problems.
        self.duration
            .get_or_create(&vec![
                ("hook", hook.name().to_owned()),
                ("status", status.to_owned()),
            ])
            .observe(seconds);
    }

    /// Counts one call to the executor for `hook`: `error` is `None` when it answered OK.
    pub fn executor_call(&self, hook: Hook, error: Option<&tonic::Status>, seconds: f64) {
        let method = rpc_method(hook);
        let code = error.map_or(tonic::Code::Ok, tonic::Status::code);
        // Who produced the code: the executor (an answer, or its own error, marked), or something on the way (the
        // connection, a proxy, our own deadline). Without it, UNAVAILABLE from a healthy executor that could not
        // reach a workload cluster looks like an executor outage.
        let answered_by = if error.is_none_or(crate::answer::answered_by_executor) {
            "executor"
        } else {
            "other"
        };
        self.executor_requests
            .get_or_create(&vec![
                ("method", method.to_owned()),
                ("code", konnector_runtime::grpc::code_name(code).to_owned()),
                ("answered_by", answered_by.to_owned()),
            ])
            .inc();
        self.executor_duration
            .get_or_create(&vec![("method", method.to_owned())])
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The executor's own UNAVAILABLE (marked) and one from the connection (unmarked) are two series, so an alert on
    /// "executor not reached" does not fire for a workload API server the executor could not reach.
    #[test]
    fn executor_calls_say_who_answered() {
        let metrics = konnector_runtime::metrics::Metrics::default();
        let m = GatewayMetrics::register(&metrics);
        let mut own = tonic::Status::unavailable("cannot reach the workload API server");
        own.metadata_mut().insert(
            konnector_proto::EXECUTOR_ANSWER_METADATA,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        m.executor_call(Hook::AfterControlPlaneInitialized, None, 0.1);
        m.executor_call(Hook::AfterControlPlaneInitialized, Some(&own), 0.1);
        m.executor_call(
            Hook::AfterControlPlaneInitialized,
            Some(&tonic::Status::unavailable("connection refused")),
            0.1,
        );
        let text = metrics.encode_text();
        for line in [
            r#"code="OK",answered_by="executor"} 1"#,
            r#"code="UNAVAILABLE",answered_by="executor"} 1"#,
            r#"code="UNAVAILABLE",answered_by="other"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
