//! The HTTP surface: exact Runtime SDK paths, Discovery, and the three hook handlers.
//!
//! Every handled path answers HTTP 200 with a typed body, errors included, as CAPI expects; only unknown paths get
//! 404 and wrong methods 405. Nothing redirects, the query string is ignored except for CAPI's informational
//! `timeout`, and no Content-Type is required.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::post,
};
use konnector_proto::v1::{
    ApplyAgentRequest, RemoveAgentRequest, Trigger, agent_service_client::AgentServiceClient,
};
use konnector_runtime::metrics::Metrics;
use konnector_runtime::telemetry::attr;
use prometheus_client::metrics::{counter::Counter, family::Family, histogram::Histogram};
use tonic::transport::Channel;
use tower_http::timeout::TimeoutLayer;
use tracing::{Instrument, field::Empty};

use crate::answer::{ExecutorReply, context, hook_answer};
use crate::capi::{DiscoveredHandler, DiscoveryResponse, HookRequest, HookResponse, RequestHook, Status};
use crate::catalog::{HOOKS_API_VERSION, Hook, capi_knows};
use crate::config::GatewayConfig;
use crate::translate::cluster_ref;

/// Shared state of the router: configuration, the executor client and the pre-rendered Discovery answer.
#[derive(Clone)]
pub struct GatewayState {
    inner: Arc<Inner>,
}

struct Inner {
    config: GatewayConfig,
    client: AgentServiceClient<Channel>,
    discovery: Bytes,
    metrics: HookMetrics,
}

type Labels = Vec<(&'static str, String)>;

/// `konnector_gateway_hook_requests_total{hook,status}` and `konnector_gateway_hook_duration_seconds{hook}`.
struct HookMetrics {
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
}

fn duration_histogram() -> Histogram {
    // 5 ms to about 82 s: a hook is bounded by CAPI's timeout (at most 30 s) plus the backstop.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 15,
    ))
}

impl HookMetrics {
    fn register(metrics: &Metrics) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
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
        });
        m
    }
}

impl GatewayState {
    /// Builds the state around an existing channel to the executor. `config` should already be validated.
    pub fn new(config: GatewayConfig, channel: Channel) -> Self {
        Self::with_metrics(config, channel, &Metrics::default())
    }

    /// Like [`GatewayState::new`], registering the hook metrics in `metrics`.
    pub fn with_metrics(config: GatewayConfig, channel: Channel, metrics: &Metrics) -> Self {
        let discovery = Bytes::from(serde_json::to_vec(&discovery(&config)).expect("discovery serialises"));
        Self {
            inner: Arc::new(Inner {
                config,
                client: AgentServiceClient::new(channel),
                discovery,
                metrics: HookMetrics::register(metrics),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }
}

/// The Discovery answer for `config`: one handler per hook konnector serves that the configured CAPI release knows,
/// each with explicit `timeoutSeconds` and `failurePolicy`. Deterministic: same config, same bytes.
pub fn discovery(config: &GatewayConfig) -> DiscoveryResponse {
    DiscoveryResponse {
        api_version: HOOKS_API_VERSION.to_owned(),
        kind: "DiscoveryResponse".to_owned(),
        status: Status::Success,
        handlers: Hook::ALL
            .into_iter()
            .filter(|hook| capi_knows(hook.name(), config.capi_version))
            .map(|hook| {
                let policy = config.hooks.get(hook);
                DiscoveredHandler {
                    name: hook.handler_name().to_owned(),
                    request_hook: RequestHook {
                        api_version: HOOKS_API_VERSION.to_owned(),
                        hook: hook.name().to_owned(),
                    },
                    timeout_seconds: i32::try_from(policy.timeout_seconds).unwrap_or(30),
                    failure_policy: policy.failure_policy,
                }
            })
            .collect(),
    }
}

/// The executor's gRPC service, as named in span names and `rpc.method` (`<service>/<method>`).
const AGENT_SERVICE: &str = "konnector.executor.v1.AgentService";

/// Backstop for any request, longer than the longest hook timeout CAPI allows: nothing hangs forever.
pub const REQUEST_BACKSTOP: Duration = Duration::from_secs(60);

/// The gateway's router: `POST <prefix>/hooks.runtime.cluster.x-k8s.io/v1alpha1/discovery` and, for each hook the
/// configured CAPI release knows, `POST <prefix>/hooks.runtime.cluster.x-k8s.io/v1alpha1/<hook>/<handler>`.
pub fn router(state: GatewayState) -> Router {
    let prefix = state.config().path_prefix.clone();
    let mut router = Router::new().route(
        &format!("{prefix}/{HOOKS_API_VERSION}/discovery"),
        post(discovery_handler),
    );
    for hook in Hook::ALL {
        if !capi_knows(hook.name(), state.config().capi_version) {
            continue;
        }
        let route: Arc<str> = format!("{prefix}{}", hook.path()).into();
        router = router.route(
            &route.clone(),
            post(
                move |State(state): State<GatewayState>, uri: Uri, headers: HeaderMap, body: Body| {
                    hook_handler(state, hook, route.clone(), uri, headers, body)
                },
            ),
        );
    }
    router
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_BACKSTOP,
        ))
        .with_state(state)
}

async fn discovery_handler(State(state): State<GatewayState>) -> Response {
    json(state.inner.discovery.clone())
}

fn json(bytes: Bytes) -> Response {
    let mut resp = (StatusCode::OK, bytes).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn respond(answer: &HookResponse) -> Response {
    json(Bytes::from(
        serde_json::to_vec(answer).expect("hook responses serialise"),
    ))
}

async fn hook_handler(
    state: GatewayState,
    hook: Hook,
    route: Arc<str>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let span = tracing::info_span!(
        "hook",
        otel.name = %format!("POST {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        { attr::HTTP_REQUEST_METHOD } = "POST",
        { attr::HTTP_ROUTE } = %route,
        { attr::HTTP_RESPONSE_STATUS_CODE } = 200,
        { attr::KONNECTOR_HOOK } = hook.name(),
        { attr::KONNECTOR_CLUSTER_NAMESPACE } = Empty,
        { attr::KONNECTOR_CLUSTER_NAME } = Empty,
        { attr::KONNECTOR_HOOK_RETRY_AFTER_SECONDS } = Empty,
        { attr::KONNECTOR_OUTCOME } = Empty,
    );
    konnector_runtime::propagation::set_parent_from_headers(&span, &headers);
    let caller_timeout = uri.query().and_then(query_timeout);
    let deadline = state.config().executor_deadline(hook, caller_timeout);
    let mut cluster = None;
    let answer = match tokio::time::timeout(deadline, handle(&state, hook, body, deadline, &mut cluster))
        .instrument(span.clone())
        .await
    {
        Ok(answer) => answer,
        // Reading a slow body used up the budget; the executor was not (or not fully) asked.
        Err(_) => hook_answer(hook, Err(tonic::Status::deadline_exceeded(""))),
    };
    let elapsed = started.elapsed();
    let status = match answer.status {
        crate::capi::Status::Success => "Success",
        crate::capi::Status::Failure => "Failure",
    };
    let m = &state.inner.metrics;
    m.requests
        .get_or_create(&vec![
            ("hook", hook.name().to_owned()),
            ("status", status.to_owned()),
        ])
        .inc();
    m.duration
        .get_or_create(&vec![("hook", hook.name().to_owned())])
        .observe(elapsed.as_secs_f64());
    span.record(attr::KONNECTOR_OUTCOME, status);
    if let Some(retry) = answer.retry_after_seconds {
        span.record(attr::KONNECTOR_HOOK_RETRY_AFTER_SECONDS, retry);
    }
    if answer.status == crate::capi::Status::Failure {
        span.record("otel.status_code", "ERROR");
    }
    let (namespace, name) = cluster.unwrap_or_default();
    span.in_scope(|| {
        tracing::info!(
            namespace = %namespace,
            cluster = %name,
            hook = hook.name(),
            status,
            retry_after_seconds = answer.retry_after_seconds,
            duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            answer = %answer.message,
            "hook answered"
        )
    });
    respond(&answer)
}

/// Decodes, translates and forwards one hook request; returns the answer to send.
/// `cluster` is set to the Cluster's namespace and name as soon as they are known, for the summary log line.
async fn handle(
    state: &GatewayState,
    hook: Hook,
    body: Body,
    deadline: Duration,
    cluster: &mut Option<(String, String)>,
) -> HookResponse {
    let limit = state.config().body_limit_bytes;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            let too_large =
                std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return HookResponse::failure(
                hook,
                if too_large {
                    format!("request body exceeds the gateway's limit of {limit} bytes")
                } else {
                    "request body could not be read".to_owned()
                },
            );
        }
    };
    let request = match decode(hook, &bytes) {
        Ok(r) => r,
        Err(message) => return HookResponse::failure(hook, message),
    };
    let Some(capi_cluster) = request.cluster.as_ref() else {
        return HookResponse::failure(hook, "the request has no cluster");
    };
    if let Some(meta) = &capi_cluster.metadata {
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        tracing::Span::current().record(attr::KONNECTOR_CLUSTER_NAMESPACE, namespace.as_str());
        tracing::Span::current().record(attr::KONNECTOR_CLUSTER_NAME, name.as_str());
        *cluster = Some((namespace, name));
    }
    let ctx = match cluster_ref(capi_cluster) {
        Ok(ctx) => ctx,
        Err(e) => return HookResponse::failure(hook, format!("{}: {e}", context(hook))),
    };
    tracing::debug!(hook = hook.name(), namespace = %ctx.namespace, cluster = %ctx.name, "calling executor");
    let mut client = state.inner.client.clone();
    let method = match hook {
        Hook::AfterControlPlaneInitialized | Hook::BeforeClusterUpgrade => "ApplyAgent",
        Hook::BeforeClusterDelete => "RemoveAgent",
    };
    let executor: Option<Uri> = state.config().executor.url.parse().ok();
    let span = tracing::info_span!(
        "grpc_client",
        otel.name = %format!("{AGENT_SERVICE}/{method}"),
        otel.kind = "client",
        otel.status_code = Empty,
        { attr::RPC_SYSTEM_NAME } = attr::RPC_SYSTEM_NAME_GRPC,
        { attr::RPC_METHOD } = %format!("{AGENT_SERVICE}/{method}"),
        { attr::RPC_RESPONSE_STATUS_CODE } = Empty,
        { attr::SERVER_ADDRESS } = executor.as_ref().and_then(Uri::host),
        { attr::SERVER_PORT } = executor.as_ref().and_then(Uri::port_u16),
    );
    let outcome = async {
        match hook {
            Hook::AfterControlPlaneInitialized | Hook::BeforeClusterUpgrade => {
                let trigger = if hook == Hook::AfterControlPlaneInitialized {
                    Trigger::AfterControlPlaneInitialized
                } else {
                    Trigger::BeforeClusterUpgrade
                };
                let mut req = tonic::Request::new(ApplyAgentRequest {
                    cluster: Some(ctx),
                    trigger: trigger as i32,
                });
                req.set_timeout(deadline);
                konnector_runtime::propagation::inject_current(req.metadata_mut());
                client
                    .apply_agent(req)
                    .await
                    .map(|r| ExecutorReply::Applied(r.into_inner()))
            }
            Hook::BeforeClusterDelete => {
                let mut req = tonic::Request::new(RemoveAgentRequest { cluster: Some(ctx) });
                req.set_timeout(deadline);
                konnector_runtime::propagation::inject_current(req.metadata_mut());
                client
                    .remove_agent(req)
                    .await
                    .map(|r| ExecutorReply::Removed(r.into_inner()))
            }
        }
    }
    .instrument(span.clone())
    .await;
    let code = match &outcome {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    span.record(
        attr::RPC_RESPONSE_STATUS_CODE,
        konnector_runtime::grpc::code_name(code),
    );
    if code != tonic::Code::Ok {
        span.record("otel.status_code", "ERROR");
    }
    if let Err(status) = &outcome {
        tracing::warn!(hook = hook.name(), code = ?status.code(), "executor call failed");
    }
    hook_answer(hook, outcome)
}

/// Decodes a hook request body and checks its TypeMeta against the path. The error is the Failure message: it says
/// where decoding stopped but never quotes the body.
pub fn decode(hook: Hook, bytes: &[u8]) -> Result<HookRequest, String> {
    let request: HookRequest = serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Io => "could not be read",
            serde_json::error::Category::Syntax => "is not valid JSON",
            serde_json::error::Category::Data => "does not have the shape of a hook request",
            serde_json::error::Category::Eof => "ends before the JSON is complete",
        };
        format!("request body {what} (line {}, column {})", e.line(), e.column())
    })?;
    if let Some(api_version) = request.api_version.as_deref()
        && api_version != HOOKS_API_VERSION
    {
        return Err(format!("request apiVersion is not {HOOKS_API_VERSION}"));
    }
    if let Some(kind) = request.kind.as_deref()
        && kind != hook.request_kind()
    {
        return Err(format!(
            "request kind does not match this handler, which serves {}",
            hook.request_kind()
        ));
    }
    Ok(request)
}

/// Parses CAPI's `timeout` query parameter, a Go duration such as `10s`, `1m30s` or `500ms`. Anything else is
/// ignored (`None`): the parameter is informational.
pub fn query_timeout(query: &str) -> Option<Duration> {
    let value = query.split('&').find_map(|kv| kv.strip_prefix("timeout="))?;
    parse_go_duration(value).filter(|d| !d.is_zero())
}

/// A small Go `time.Duration` string parser: a sequence of decimal numbers with units ns, us, µs, ms, s, m, h.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        for bad in ["", "10", "s", "10x", "-1s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
        assert_eq!(query_timeout("a=b&timeout=20s"), Some(Duration::from_secs(20)));
        assert_eq!(query_timeout("timeout=0s"), None);
    }

    #[test]
    fn decode_checks_type_meta() {
        let ok = br#"{"apiVersion":"hooks.runtime.cluster.x-k8s.io/v1alpha1","kind":"BeforeClusterDeleteRequest"}"#;
        assert!(decode(Hook::BeforeClusterDelete, ok).is_ok());
        let err = decode(Hook::AfterControlPlaneInitialized, ok).unwrap_err();
        assert!(err.contains("kind does not match"), "{err}");
        let err = decode(Hook::BeforeClusterDelete, br#"{"apiVersion":"v1"}"#).unwrap_err();
        assert!(err.contains("apiVersion"), "{err}");
        let err = decode(Hook::BeforeClusterDelete, br#"{"cluster": "hunter2"}"#).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
