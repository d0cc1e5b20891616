//! The executor's metrics, and the layer that turns every Kubernetes API call into a client span and a metric.
//!
//! Labels stay low-cardinality: RPC method and gRPC code, API verb, resource and status code, uninstall phase.
//! No cluster name, object name or value ever becomes a label or a span attribute beyond the namespace.

use std::{
    future::Future,
    pin::Pin,
    sync::atomic::AtomicI64,
    task::{Context, Poll},
};

use http::{Method, Request, Response, Uri};
use konnector_runtime::metrics::{Metrics, latency_histogram};
use konnector_runtime::telemetry::attr;
use kube::{Client, client::Body};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram};
use tracing::{Instrument, field::Empty};

use crate::{
    error::Side,
    limits::{Bound, Capped},
};

type Labels = Vec<(&'static str, String)>;

/// The executor's metrics, registered in their own registry (served at `/metrics` on the admin port).
#[derive(Clone, Debug)]
pub struct ExecutorMetrics {
    registry: Metrics,
    rpcs: Family<Labels, Counter>,
    kube_requests: Family<Labels, Counter>,
    remote_clients: Gauge<i64, AtomicI64>,
    uninstall_phases: Family<Labels, Counter>,
    reconciles: Family<Labels, Counter>,
    leader: Gauge<i64, AtomicI64>,
    rpc_duration: Family<Labels, Histogram, fn() -> Histogram>,
    kube_duration: Family<Labels, Histogram, fn() -> Histogram>,
    preflights: Family<Labels, Counter>,
    prism_checks: Family<Labels, Counter>,
    prism_probes_in_flight: Gauge<i64, AtomicI64>,
    hook_cluster_reads: Family<Labels, Counter>,
    hook_watch_events: Family<Labels, Counter>,
    helm_chart_proxy_writes: Family<Labels, Counter>,
}

impl Default for ExecutorMetrics {
    fn default() -> Self {
        let m = Self {
            registry: Metrics::with_prefix("konnector_executor"),
            rpcs: Family::default(),
            kube_requests: Family::default(),
            remote_clients: Gauge::default(),
            uninstall_phases: Family::default(),
            reconciles: Family::default(),
            leader: Gauge::default(),
            rpc_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            kube_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            preflights: Family::default(),
            prism_checks: Family::default(),
            prism_probes_in_flight: Gauge::default(),
            hook_cluster_reads: Family::default(),
            hook_watch_events: Family::default(),
            helm_chart_proxy_writes: Family::default(),
        };
        m.registry.register(|r| {
            r.register(
                "rpc_requests",
                "AgentService RPCs answered, by method and gRPC code",
                m.rpcs.clone(),
            );
            r.register(
                "kube_requests",
                "Kubernetes API requests, by kube_cluster (management or workload), verb, resource and outcome (HTTP status code, or error)",
                m.kube_requests.clone(),
            );
            r.register(
                "remote_clients",
                "Workload cluster clients held in the cache",
                m.remote_clients.clone(),
            );
            r.register(
                "uninstall_phases",
                "RemoveAgent answers, by the uninstall phase answered",
                m.uninstall_phases.clone(),
            );
            r.register(
                "reconciles",
                "Reconciler passes over one Cluster, by result (in_sync, repaired, rotated, installed, uninstalled, skipped, error)",
                m.reconciles.clone(),
            );
            r.register(
                "hook_cluster_reads",
                "ApplyAgent's reads of the Cluster, by source: cache (the hook's resourceVersion is the one the Cluster watch holds and this process's copy has) or live (a GET)",
                m.hook_cluster_reads.clone(),
            );
            r.register(
                "hook_watch_events",
                "Events received by the hooks' metadata-only watches, by resource (clusters, helmchartproxies): one per object listed or changed, and per failure",
                m.hook_watch_events.clone(),
            );
            r.register(
                "helm_chart_proxy_writes",
                "HelmChartProxy writes by ApplyAgent and the reconciler, by outcome: written (ownership checked, then applied) or skipped (ApplyAgent: the body this process last wrote, onto the proxy the hooks' watch holds at the version that write produced)",
                m.helm_chart_proxy_writes.clone(),
            );
            r.register(
                "reconciler_leader",
                "1 while this replica holds the reconciler Lease and runs the reconciler, else 0",
                m.leader.clone(),
            );
        });
        m.registry.register(|r| {
            r.register(
                "rpc_duration_seconds",
                "Time to answer an AgentService RPC, by method",
                m.rpc_duration.clone(),
            );
            r.register(
                "kube_request_duration_seconds",
                "Time for a Kubernetes API request to answer (headers received), by kube_cluster (management or workload) and verb",
                m.kube_duration.clone(),
            );
            r.register(
                "prism_central_preflights",
                "Prism Central preflights answered before applying, one per hook, by outcome (PASSED, PASSED_WITHOUT_AUTHENTICATION, or the failure kind); prism_central_checks says which were probed and which shared an answer",
                m.preflights.clone(),
            );
            r.register(
                "prism_central_checks",
                "Prism Central preflights answered, by result (as prism_central_preflights) and source: probe (this hook probed), in_flight (it waited for a probe under way), cached (a probe's answer within its TTL), none (refused by the allow-list, nothing contacted)",
                m.prism_checks.clone(),
            );
            r.register(
                "prism_central_probes_in_flight",
                "Prism Central probes under way: at most one per endpoint, trust settings and credentials",
                m.prism_probes_in_flight.clone(),
            );
        });
        m
    }
}

impl ExecutorMetrics {
    /// The registry, to serve at `/metrics`.
    pub fn registry(&self) -> &Metrics {
        &self.registry
    }

    pub(crate) fn rpc(&self, method: &'static str, code: &'static str) {
        self.rpcs
            .get_or_create(&vec![("method", method.to_owned()), ("code", code.to_owned())])
            .inc();
    }

    pub(crate) fn remote_clients(&self, n: usize) {
        self.remote_clients.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn reconciled(&self, result: &'static str) {
        self.reconciles
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
    }

    pub(crate) fn hook_cluster_read(&self, source: &'static str) {
        self.hook_cluster_reads
            .get_or_create(&vec![("source", source.to_owned())])
            .inc();
    }

    /// ApplyAgent's reads of the Cluster so far from `source` (`cache` or `live`), for tests and measurements.
    pub fn hook_cluster_reads(&self, source: &str) -> u64 {
        self.hook_cluster_reads
            .get_or_create(&vec![("source", source.to_owned())])
            .get()
    }

    pub(crate) fn hook_watch_event(&self, resource: &'static str) {
        self.hook_watch_events
            .get_or_create(&vec![("resource", resource.to_owned())])
            .inc();
    }

    /// Events the hooks' watch on `resource` (`clusters`, `helmchartproxies`) has received so far, for tests.
    pub fn hook_watch_events(&self, resource: &str) -> u64 {
        self.hook_watch_events
            .get_or_create(&vec![("resource", resource.to_owned())])
            .get()
    }

    pub(crate) fn helm_chart_proxy_write(&self, outcome: &'static str) {
        self.helm_chart_proxy_writes
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
    }

    /// HelmChartProxy writes so far by `outcome` (`skipped`, `written`), for tests and measurements.
    pub fn helm_chart_proxy_writes(&self, outcome: &str) -> u64 {
        self.helm_chart_proxy_writes
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .get()
    }

    pub(crate) fn leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Reconciles counted so far with `result` (for tests and the sandbox).
    pub fn reconciles(&self, result: &str) -> u64 {
        self.reconciles
            .get_or_create(&vec![("result", result.to_owned())])
            .get()
    }

    /// Kubernetes API requests counted so far on `side` (`management` or `workload`), all verbs and outcomes;
    /// only those on `resource` when given (e.g. `leases`). For tests and measurements.
    pub fn kube_request_count(&self, side: &str, resource: Option<&str>) -> u64 {
        self.kube_request_count_by_verb(side, None, resource)
    }

    /// [`Self::kube_request_count`], only for `verb` when given (e.g. `watch`, counted once a watch is
    /// established).
    pub fn kube_request_count_by_verb(&self, side: &str, verb: Option<&str>, resource: Option<&str>) -> u64 {
        // prometheus-client offers no iteration over a family; encode it and sum the matching samples instead.
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("k", "", self.kube_requests.clone());
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            return 0;
        }
        let side = format!("kube_cluster=\"{side}\"");
        let verb = verb.map(|v| format!("verb=\"{v}\""));
        let resource = resource.map(|r| format!("resource=\"{r}\""));
        text.lines()
            .filter(|l| l.starts_with("k_total{") && l.contains(&side))
            .filter(|l| verb.as_ref().is_none_or(|v| l.contains(v.as_str())))
            .filter(|l| resource.as_ref().is_none_or(|r| l.contains(r.as_str())))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    pub(crate) fn uninstall_phase(&self, phase: &str) {
        self.uninstall_phases
            .get_or_create(&vec![("phase", phase.to_owned())])
            .inc();
    }

    pub(crate) fn rpc_duration(&self, method: &'static str, seconds: f64) {
        self.rpc_duration
            .get_or_create(&vec![("method", method.to_owned())])
            .observe(seconds);
    }

    pub(crate) fn prism_check(&self, result: &'static str, source: &'static str) {
        self.prism_checks
            .get_or_create(&vec![
                ("result", result.to_owned()),
                ("source", source.to_owned()),
            ])
            .inc();
    }

    pub(crate) fn prism_probes_in_flight_gauge(&self) -> Gauge<i64, AtomicI64> {
        self.prism_probes_in_flight.clone()
    }

    /// Prism Central preflights answered so far from `source` (`probe`, `in_flight`, `cached`, `none`), every
    /// result (for tests and measurements).
    pub fn prism_central_checks(&self, source: &str) -> u64 {
        // As `kube_request_count_by_verb`: encode the family and sum the matching samples, creating no series.
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("c", "", self.prism_checks.clone());
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            return 0;
        }
        let source = format!("source=\"{source}\"");
        text.lines()
            .filter(|l| l.starts_with("c_total{") && l.contains(&source))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Prism Central probes under way now (for tests).
    pub fn prism_central_probes_in_flight(&self) -> i64 {
        self.prism_probes_in_flight.get()
    }

    pub(crate) fn preflight(&self, outcome: &'static str) {
        self.preflights
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
    }
}

/// Wraps `client` so that every request it sends is a `client` span (child of the current span) and is counted in
/// `konnector_executor_kube_requests_total`, and every response body is bounded by `response_limit` bytes (each
/// event of a watch, the whole body otherwise; see `limits`). Every client the executor uses goes through here.
pub(crate) fn observed_client(
    client: Client,
    side: Side,
    metrics: &ExecutorMetrics,
    response_limit: u64,
) -> Client {
    let namespace = client.default_namespace().to_owned();
    Client::new(
        Observed {
            inner: client,
            side,
            requests: metrics.kube_requests.clone(),
            durations: metrics.kube_duration.clone(),
            response_limit,
        },
        namespace,
    )
}

#[derive(Clone)]
struct Observed {
    inner: Client,
    side: Side,
    requests: Family<Labels, Counter>,
    durations: Family<Labels, Histogram, fn() -> Histogram>,
    response_limit: u64,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower::Service<Request<Body>> for Observed {
    type Response = Response<Capped<Body>>;
    type Error = kube::Error;
    type Future = BoxFuture<Result<Response<Capped<Body>>, kube::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let call = ApiCall::of(req.method(), req.uri());
        let side = side_name(self.side);
        let span = tracing::info_span!(
            "kube_request",
            otel.name = %format!("{} {}", call.verb, call.resource),
            otel.kind = "client",
            otel.status_code = Empty,
            { attr::HTTP_REQUEST_METHOD } = %req.method(),
            { attr::HTTP_RESPONSE_STATUS_CODE } = Empty,
            { attr::KONNECTOR_KUBE_CLUSTER } = side,
            { attr::KONNECTOR_KUBE_VERB } = call.verb,
            { attr::KONNECTOR_KUBE_RESOURCE } = %call.resource,
            { attr::KONNECTOR_KUBE_NAMESPACE } = call.namespace.as_deref().unwrap_or(""),
            { attr::ERROR_TYPE } = Empty,
        );
        let bound = if call.verb == "watch" {
            Bound::PerLine
        } else {
            Bound::Whole
        };
        let limit = self.response_limit;
        let inner = self.inner.clone();
        let requests = self.requests.clone();
        let durations = self.durations.clone();
        Box::pin(
            async move {
                let started = std::time::Instant::now();
                let result = inner.send(req).await;
                durations
                    .get_or_create(&vec![
                        ("kube_cluster", side.to_owned()),
                        ("verb", call.verb.to_owned()),
                    ])
                    .observe(started.elapsed().as_secs_f64());
                let outcome = match &result {
                    Ok(resp) => {
                        let code = resp.status().as_u16();
                        tracing::Span::current().record(attr::HTTP_RESPONSE_STATUS_CODE, code);
                        if code >= 400 {
                            // The HTTP client convention: the status code is the error's class.
                            tracing::Span::current().record("otel.status_code", "ERROR");
                            tracing::Span::current().record(attr::ERROR_TYPE, code.to_string());
                        }
                        code.to_string()
                    }
                    Err(error) => {
                        tracing::Span::current().record("otel.status_code", "ERROR");
                        tracing::Span::current().record(attr::ERROR_TYPE, kube_error_type(error));
                        "error".to_owned()
                    }
                };
                requests
                    .get_or_create(&vec![
                        ("kube_cluster", side.to_owned()),
                        ("verb", call.verb.to_owned()),
                        ("resource", call.resource),
                        ("outcome", outcome),
                    ])
                    .inc();
                result.map(|resp| resp.map(|body| Capped::new(body, limit, bound)))
            }
            .instrument(span),
        )
    }
}

/// `error.type` of an API request that got no HTTP answer: a small fixed set, so the attribute stays
/// low-cardinality (the error's text goes to the logs, never here).
fn kube_error_type(error: &kube::Error) -> &'static str {
    let timed_out = std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |e| e.source())
        .any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        });
    match error {
        _ if timed_out => "timeout",
        kube::Error::HyperError(_) | kube::Error::Service(_) => "transport",
        kube::Error::RustlsTls(_) | kube::Error::TlsRequired => "tls",
        kube::Error::Auth(_) => "auth",
        // OpenTelemetry's value for a class outside the known set.
        _ => "_OTHER",
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Management => "management",
        Side::Workload => "workload",
    }
}

/// What an API request does, read from its method and path.
#[derive(Debug, PartialEq, Eq)]
struct ApiCall {
    verb: &'static str,
    resource: String,
    namespace: Option<String>,
}

impl ApiCall {
    fn of(method: &Method, uri: &Uri) -> Self {
        let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
        // /api/<version>/... or /apis/<group>/<version>/...; anything else (/version, /openapi) is named by its
        // first segment.
        let rest = match segments.as_slice() {
            ["api", _, rest @ ..] => rest,
            ["apis", _, _, rest @ ..] => rest,
            [first, ..] => {
                return Self {
                    verb: verb(method, true, uri),
                    resource: (*first).to_owned(),
                    namespace: None,
                };
            }
            [] => &[][..],
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
            _ => (None, rest),
        };
        let (resource, named) = match rest {
            [] => (String::new(), false),
            [resource] => ((*resource).to_owned(), false),
            [resource, _name] => ((*resource).to_owned(), true),
            [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
        };
        Self {
            verb: verb(method, named, uri),
            resource,
            namespace,
        }
    }
}

fn verb(method: &Method, named: bool, uri: &Uri) -> &'static str {
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: Method, path: &str) -> (&'static str, String, Option<String>) {
        let c = ApiCall::of(&method, &path.parse().unwrap());
        (c.verb, c.resource, c.namespace)
    }

    #[test]
    fn classifies_api_paths() {
        assert_eq!(
            call(Method::GET, "/api/v1/namespaces/clusters/secrets/c1-kubeconfig"),
            ("get", "secrets".to_owned(), Some("clusters".to_owned()))
        );
        assert_eq!(
            call(
                Method::GET,
                "/apis/addons.cluster.x-k8s.io/v1alpha1/namespaces/clusters/helmreleaseproxies?labelSelector=a%3Db"
            ),
            (
                "list",
                "helmreleaseproxies".to_owned(),
                Some("clusters".to_owned())
            )
        );
        assert_eq!(
            call(Method::PATCH, "/api/v1/namespaces/ntnx-system"),
            ("patch", "namespaces".to_owned(), None)
        );
        assert_eq!(
            call(Method::POST, "/apis/events.k8s.io/v1/namespaces/clusters/events"),
            ("create", "events".to_owned(), Some("clusters".to_owned()))
        );
        assert_eq!(
            call(Method::GET, "/api/v1/namespaces/a/pods/p/log"),
            ("get", "pods/log".to_owned(), Some("a".to_owned()))
        );
        assert_eq!(call(Method::GET, "/version"), ("get", "version".to_owned(), None));
        assert_eq!(
            call(Method::GET, "/api/v1/namespaces/a/pods?watch=true").0,
            "watch"
        );
    }
}
