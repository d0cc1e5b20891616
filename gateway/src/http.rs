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
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::post,
};
use konnector_runtime::grpc::code_name;
use konnector_runtime::http_server::ConnectionPermits;
use konnector_runtime::metrics::Metrics;
use konnector_runtime::telemetry::attr;
use tokio::sync::Semaphore;
use tonic::transport::Channel;
use tower_http::timeout::TimeoutLayer;
use tracing::{Instrument, field::Empty};

use crate::answer::{context, hook_answer};
use crate::capi::{HookResponse, Status};
use crate::catalog::{HOOKS_API_VERSION, Hook, capi_knows};
use crate::client::ExecutorClient;
use crate::config::GatewayConfig;
use crate::decode::{decode, query_timeout, read_body};
use crate::metrics::GatewayMetrics;
use crate::translate::{addon_configured, cluster_ref};

pub use crate::discovery::discovery;

/// Shared state of the router: configuration, the executor client and the pre-rendered Discovery answer.
#[derive(Clone)]
pub struct GatewayState {
    inner: Arc<Inner>,
}

struct Inner {
    config: GatewayConfig,
    client: ExecutorClient,
    discovery: Bytes,
    metrics: GatewayMetrics,
    /// One permit per hook request being handled (decoded, calling the executor): bounds the gateway's work
    /// whatever the number of connections and streams. Taken only once the body is in, so slow uploads hold none.
    permits: Semaphore,
    /// The body budget: one permit per byte of request body held (see [`read_body`]).
    body_room: Arc<Semaphore>,
}

impl GatewayState {
    /// Builds the state around an existing channel to the executor. `config` should already be validated.
    pub fn new(config: GatewayConfig, channel: Channel) -> Self {
        Self::with_metrics(config, channel, &GatewayMetrics::register(&Metrics::default()))
    }

    /// Like [`GatewayState::new`], counting the hooks in `metrics`.
    pub fn with_metrics(config: GatewayConfig, channel: Channel, metrics: &GatewayMetrics) -> Self {
        let discovery = Bytes::from(serde_json::to_vec(&discovery(&config)).expect("discovery serialises"));
        let permits = Semaphore::new(config.max_concurrent_requests);
        let body_room = Arc::new(Semaphore::new(config.max_buffered_body_bytes));
        let client = ExecutorClient::new(channel, &config.executor.url);
        Self {
            inner: Arc::new(Inner {
                config,
                client,
                discovery,
                metrics: metrics.clone(),
                permits,
                body_room,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }
}

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
            post(move |State(state): State<GatewayState>, request: Request| {
                let (parts, body) = request.into_parts();
                // Set by the bounded server (one per connection); absent when the router is called directly.
                let connection = parts.extensions.get::<ConnectionPermits>().cloned();
                hook_handler(
                    state,
                    hook,
                    route.clone(),
                    parts.uri,
                    parts.headers,
                    body,
                    connection,
                )
            }),
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
    connection: Option<ConnectionPermits>,
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
        // The router is only ever served over TLS (server.rs), so the scheme is a constant.
        { attr::URL_SCHEME } = "https",
        { attr::URL_PATH } = uri.path(),
        { attr::ERROR_TYPE } = Empty,
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
    let work = handle(&state, hook, body, connection, deadline, &mut cluster);
    let answer = match tokio::time::timeout(deadline, work)
        .instrument(span.clone())
        .await
    {
        Ok(answer) => answer,
        // Waiting for a permit or reading a slow body used up the budget; the executor was not (or not fully)
        // asked.
        Err(_) => {
            span.record(attr::ERROR_TYPE, code_name(tonic::Code::DeadlineExceeded));
            hook_answer(hook, Err(tonic::Status::deadline_exceeded("")))
        }
    };
    let elapsed = started.elapsed();
    let status = match answer.status {
        Status::Success => "Success",
        Status::Failure => "Failure",
    };
    state.inner.metrics.observe(hook, status, elapsed.as_secs_f64());
    span.record(attr::KONNECTOR_OUTCOME, status);
    if let Some(retry) = answer.retry_after_seconds {
        span.record(attr::KONNECTOR_HOOK_RETRY_AFTER_SECONDS, retry);
    }
    if answer.status == Status::Failure {
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

/// The answer to AfterControlPlaneInitialized and BeforeClusterUpgrade for a Cluster without the addon.
pub const NOT_CONFIGURED: &str =
    "the Konnector Agent addon is not configured for this Cluster; nothing to do";

/// Reads, decodes, translates and forwards one hook request; returns the answer to send.
/// `cluster` is set to the Cluster's namespace and name as soon as they are known, for the summary log line.
///
/// The order bounds what a slow or hostile client can hold: the body is read first, under its own time bound
/// and the shared body budget, without a request permit; it is decoded to a `ClusterRef` and dropped before any
/// wait; only then are a permit of the connection and one of the gateway taken, for the executor call alone.
async fn handle(
    state: &GatewayState,
    hook: Hook,
    body: Body,
    connection: Option<ConnectionPermits>,
    deadline: Duration,
    cluster: &mut Option<(String, String)>,
) -> HookResponse {
    let config = state.config();
    let read = read_body(body, config.body_limit_bytes, &state.inner.body_room);
    let body = match tokio::time::timeout(config.body_read_timeout, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(message)) => return failed(hook, ERROR_INVALID_REQUEST, message),
        Err(_) => {
            return failed(
                hook,
                ERROR_INVALID_REQUEST,
                format!(
                    "request body did not arrive within the gateway's {}s body read timeout",
                    config.body_read_timeout.as_secs_f64()
                ),
            );
        }
    };
    let (ctx, configured) = {
        let request = match decode(hook, &body.bytes) {
            Ok(r) => r,
            Err(message) => return failed(hook, ERROR_INVALID_REQUEST, message),
        };
        drop(body);
        let Some(capi_cluster) = request.cluster.as_ref() else {
            return failed(hook, ERROR_INVALID_REQUEST, "the request has no cluster");
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
            Err(e) => return failed(hook, ERROR_INVALID_REQUEST, format!("{}: {e}", context(hook))),
        };
        (ctx, addon_configured(capi_cluster))
    };
    // A Cluster that does not use the addon is never blocked by konnector, even with the executor down. Never for
    // BeforeClusterDelete: an uninstall must not be skipped because of what a request body says (the addon may have
    // been removed from the topology after the agent was installed).
    if hook != Hook::BeforeClusterDelete && !configured {
        return HookResponse::success(hook, NOT_CONFIGURED);
    }
    // The connection's turn first, then the gateway's: a connection at its cap waits without holding a turn
    // another connection could use.
    let _connection_permit = match &connection {
        Some(ConnectionPermits(permits)) => match permits.acquire().await {
            Ok(permit) => Some(permit),
            Err(_) => return failed(hook, ERROR_SHUTTING_DOWN, "the gateway is shutting down"),
        },
        None => None,
    };
    let Ok(_permit) = state.inner.permits.acquire().await else {
        return failed(hook, ERROR_SHUTTING_DOWN, "the gateway is shutting down");
    };
    tracing::debug!(hook = hook.name(), namespace = %ctx.namespace, cluster = %ctx.name, "calling executor");
    let started = Instant::now();
    let reply = state.inner.client.call(hook, ctx, deadline).await;
    state
        .inner
        .metrics
        .executor_call(hook, reply.as_ref().err(), started.elapsed().as_secs_f64());
    if let Err(status) = &reply {
        // The executor's gRPC code is the class of a failure it caused: low-cardinality, and the same name its
        // own span and the hook metrics use.
        tracing::Span::current().record(attr::ERROR_TYPE, code_name(status.code()));
    }
    hook_answer(hook, reply)
}

/// `error.type` of a hook the gateway itself refused (a body it cannot read, decode or use).
const ERROR_INVALID_REQUEST: &str = "invalid_request";
/// `error.type` of a hook that arrived while the gateway drains.
const ERROR_SHUTTING_DOWN: &str = "shutting_down";

/// A Failure answer the gateway gives on its own, with `error_type` on the hook span.
fn failed(hook: Hook, error_type: &'static str, message: impl Into<String>) -> HookResponse {
    tracing::Span::current().record(attr::ERROR_TYPE, error_type);
    HookResponse::failure(hook, message)
}
