//! Observability end to end: hooks sent over HTTPS through the real gateway into the real executor (under its RBAC,
//! against real API servers), with the spans exported over OTLP/gRPC to an in-process receiver, the logs captured
//! at trace level (in konnector's own line format, which adds the trace id), and both binaries' admin routers
//! scraped. The span attributes are checked against the `opentelemetry-semantic-conventions` crate, and the same
//! receiver, in its TLS mode, takes spans over `https://`, by OTLP/gRPC and by OTLP/HTTP.
//!
//! This file is its own test binary because it owns the process-wide tracing subscriber and tracer provider.

use std::{collections::HashMap, sync::OnceLock, time::Duration};

use http_body_util::BodyExt;
use k8s_openapi::api::events::v1::Event;
use konnector_executor::ExecutorConfig;
use konnector_gateway::catalog::Hook;
use konnector_runtime::{
    admin,
    telemetry::{OtlpExport, OtlpProtocol, WithTraceId, attr},
};
use konnector_tests::{
    executor_fixture::{
        ExecutorEnv, TEST_CLUSTER, TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, TEST_PASSWORD,
        addon_cluster_config, cluster_event_reasons, executor_env,
    },
    gateway_fixture, otlp, support,
    workload::{self, ClusterOptions},
};
use kube::Api;
use opentelemetry_proto::tonic::{
    common::v1::any_value::Value as AnyValue,
    trace::v1::{Span, span::SpanKind},
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_semantic_conventions::attribute as semconv;
use serde_json::Value;
use tower::ServiceExt;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// Everything this binary's tests observe, process-wide: the spans the OTLP receiver was sent (this process's and,
/// from the sandbox binary, others'), and the log output.
struct Observed {
    received: otlp::Received,
    endpoint: String,
    logs: support::LogCapture,
    provider: SdkTracerProvider,
}

/// The service.name this process exports as; spans under other names came from other processes.
const SERVICE_NAME: &str = "konnector-tests";

/// Starts the receiver and the exporter on a runtime of their own (each test has its own runtime, and both must
/// outlive every test), then installs the subscriber: konnector's and kube's logs at trace level, in konnector's
/// own line format (which adds the trace id), and the OpenTelemetry layer built by konnector-runtime, exporting to
/// the receiver.
fn observed() -> &'static Observed {
    static OBSERVED: OnceLock<Observed> = OnceLock::new();
    OBSERVED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let (endpoint, received) = otlp::serve_plain().await.unwrap();
                let provider =
                    konnector_runtime::telemetry::otlp_provider_to(SERVICE_NAME, Some(&endpoint)).unwrap();
                tx.send((provider, endpoint, received)).unwrap();
                std::future::pending::<()>().await
            });
        });
        let (provider, endpoint, received) = rx.recv().unwrap();
        let logs = support::LogCapture::default();
        tracing_subscriber::registry()
            .with(EnvFilter::new(
                "trace,h2=info,hyper=info,hyper_util=info,tower=info,tonic=info,rustls=info,\
                 opentelemetry=info,opentelemetry_sdk=info,opentelemetry_otlp=info",
            ))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(logs.clone())
                    .with_ansi(false)
                    .event_format(WithTraceId::plain()),
            )
            .with(konnector_runtime::telemetry::tracing_layer(
                &provider,
                SERVICE_NAME,
            ))
            .init();
        Observed {
            received,
            endpoint,
            logs,
            provider,
        }
    })
}

/// The spans this process exported so far.
fn own_spans() -> Vec<Span> {
    observed()
        .received
        .lock()
        .unwrap()
        .iter()
        .filter(|(resource, _)| otlp::service_name(resource) == SERVICE_NAME)
        .map(|(_, span)| span.clone())
        .collect()
}

/// The spans other processes exported to this binary's receiver, with their service.name.
fn foreign_spans() -> Vec<(String, Span)> {
    observed()
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|(resource, span)| (otlp::service_name(resource), span.clone()))
        .filter(|(service, _)| service != SERVICE_NAME)
        .collect()
}

/// Flushes the exporter (blocking, so off the async threads).
async fn flush() {
    let provider = observed().provider.clone();
    tokio::task::spawn_blocking(move || provider.force_flush())
        .await
        .unwrap()
        .unwrap();
}

async fn start_gateway(executor: konnector_gateway::ExecutorEndpoint) -> gateway_fixture::RunningGateway {
    gateway_fixture::start_gateway(&executor, "v1.14").await.unwrap()
}

/// POSTs like CAPI over HTTPS, with `traceparent` when given. Returns the answer, which must come with HTTP 200.
async fn post(
    gateway: &gateway_fixture::RunningGateway,
    path: &str,
    body: &Value,
    traceparent: Option<&str>,
) -> Value {
    let headers: Vec<(&str, &str)> = traceparent.map(|tp| ("traceparent", tp)).into_iter().collect();
    let raw = gateway
        .client()
        .unwrap()
        .post_raw(path, serde_json::to_vec(body).unwrap(), 10, &headers)
        .await
        .unwrap();
    assert_eq!(raw.status, 200);
    serde_json::from_slice(&raw.body).unwrap()
}

/// Points the live Cluster's clusterConfig at the credentials Secret `secret` (the executor reads it from there)
/// and returns the v1.14 golden body of `hook` retargeted at the Cluster.
async fn hook_body(hook: Hook, env: &ExecutorEnv, secret: &str) -> Value {
    env.set_cluster_config(addon_cluster_config(secret))
        .await
        .unwrap();
    support::retarget(support::golden_body("v1.14", hook), &env.cluster, secret)
}

async fn get(router: &axum::Router, path: &str) -> (u16, String) {
    let resp = router
        .clone()
        .oneshot(http::Request::get(path).body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            AnyValue::IntValue(i) => Some(i.to_string()),
            AnyValue::BoolValue(b) => Some(b.to_string()),
            AnyValue::DoubleValue(d) => Some(d.to_string()),
            _ => None,
        }
    })
}

/// The spans of trace `trace_id`, once the executor's server span and the gateway's span (which ends last) are in.
async fn trace_spans(trace_id: &[u8]) -> Vec<Span> {
    tokio::time::timeout(support::HANG_GUARD, async {
        loop {
            flush().await;
            let spans: Vec<Span> = own_spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            let server_spans = spans.iter().filter(|s| s.kind == SpanKind::Server as i32).count();
            if server_spans >= 2 {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the hook's spans never reached the OTLP receiver")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hook_is_one_trace_from_the_hook_to_the_kubernetes_api() {
    observed();
    let env = executor_env(
        "otel-trace",
        ExecutorConfig::default(),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    let gateway = start_gateway(env.executor.endpoint()).await;

    // CAPI's side of the trace: a traceparent the gateway must continue.
    let trace_id: [u8; 16] = rand_bytes();
    let caller_span: [u8; 8] = rand_bytes()[..8].try_into().unwrap();
    let traceparent = format!("00-{}-{}-01", hex(&trace_id), hex(&caller_span));
    let hook = Hook::AfterControlPlaneInitialized;
    let answer = post(
        &gateway,
        &hook.path(),
        &hook_body(hook, &env, TEST_CREDENTIALS_SECRET).await,
        Some(&traceparent),
    )
    .await;
    assert_eq!(answer["status"], "Success", "{answer}");

    let spans = trace_spans(&trace_id).await;
    let trace = assert_one_tree(&spans, hook, &caller_span);
    assert_the_apply_span(&trace.kube);
    assert_cluster_attributes(trace.gateway, trace.server);
    check_semantic_conventions(trace.gateway, trace.client, trace.server, &trace.kube);
    eprintln!(
        "one AfterControlPlaneInitialized hook: {} spans in its trace, {} of them Kubernetes API calls",
        spans.len(),
        trace.kube.len()
    );
    assert_logs_carry_the_trace_id(&observed().logs.text(), &trace_id);
    assert_admin_routers_count_the_hook(&gateway, &env).await;
}

/// The spans of one hook's trace, by role.
struct HookTrace<'a> {
    /// The gateway's span for the hook request.
    gateway: &'a Span,
    /// The gateway's gRPC client span for ApplyAgent.
    client: &'a Span,
    /// The executor's gRPC server span for ApplyAgent.
    server: &'a Span,
    /// The Kubernetes API call spans.
    kube: Vec<&'a Span>,
}

/// One trace, one tree: the gateway continues the caller's span, the gRPC client span is under it, the executor's
/// server span under that (across the process boundary), and every Kubernetes API call span, on both clusters,
/// under the executor's.
fn assert_one_tree<'a>(spans: &'a [Span], hook: Hook, caller_span: &[u8]) -> HookTrace<'a> {
    let by_id: HashMap<&[u8], &Span> = spans.iter().map(|s| (s.span_id.as_slice(), s)).collect();
    let named = |name: &str, kind: SpanKind| {
        spans
            .iter()
            .find(|s| s.name == name && s.kind == kind as i32)
            .unwrap_or_else(|| {
                panic!(
                    "no {kind:?} span {name}; got {:#?}",
                    spans.iter().map(|s| (&s.name, s.kind)).collect::<Vec<_>>()
                )
            })
    };
    let route = format!("POST {}", hook.path());
    let gw = named(&route, SpanKind::Server);
    let client = named("konnector.executor.v1.AgentService/ApplyAgent", SpanKind::Client);
    let server = named("konnector.executor.v1.AgentService/ApplyAgent", SpanKind::Server);
    assert_eq!(
        gw.parent_span_id, caller_span,
        "the gateway continues the caller's trace"
    );
    assert_eq!(
        client.parent_span_id, gw.span_id,
        "gRPC client span under the hook span"
    );
    assert_eq!(
        server.parent_span_id, client.span_id,
        "executor server span under the gRPC client span, across the process boundary"
    );
    let under_server = |s: &Span| {
        let mut parent = s.parent_span_id.as_slice();
        loop {
            if parent == server.span_id.as_slice() {
                return true;
            }
            match by_id.get(parent) {
                Some(p) => parent = p.parent_span_id.as_slice(),
                None => return false,
            }
        }
    };
    let kube: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32 && attr(s, attr::KONNECTOR_KUBE_VERB).is_some())
        .collect();
    assert!(
        kube.iter().all(|s| under_server(s)),
        "every API call span is under the executor's span"
    );
    for side in ["management", "workload"] {
        assert!(
            kube.iter()
                .any(|s| attr(s, attr::KONNECTOR_KUBE_CLUSTER).as_deref() == Some(side)),
            "an API call span on the {side} cluster: {kube:#?}"
        );
    }
    HookTrace {
        gateway: gw,
        client,
        server,
        kube,
    }
}

/// The HelmChartProxy's server-side apply is a span of its own, with its status code and namespace.
fn assert_the_apply_span(kube: &[&Span]) {
    let applied = kube
        .iter()
        .find(|s| s.name == "patch helmchartproxies")
        .expect("a span for the HelmChartProxy apply");
    // Server-side apply answers 201 when it creates the object, as this first apply does.
    assert_eq!(
        attr(applied, semconv::HTTP_RESPONSE_STATUS_CODE).as_deref(),
        Some("201")
    );
    assert_eq!(
        attr(applied, attr::KONNECTOR_KUBE_NAMESPACE).as_deref(),
        Some(TEST_NAMESPACE)
    );
}

/// Both binaries' request spans name the Cluster; the gateway's names the hook and its outcome, the executor's its
/// outcome and trigger.
fn assert_cluster_attributes(gw: &Span, server: &Span) {
    for (span, what) in [(gw, "gateway"), (server, "executor")] {
        assert_eq!(
            attr(span, "konnector.cluster.namespace").as_deref(),
            Some(TEST_NAMESPACE),
            "{what}"
        );
        assert_eq!(
            attr(span, "konnector.cluster.name").as_deref(),
            Some(TEST_CLUSTER),
            "{what}"
        );
    }
    assert_eq!(
        attr(gw, "konnector.hook").as_deref(),
        Some("AfterControlPlaneInitialized")
    );
    assert_eq!(attr(gw, "konnector.outcome").as_deref(), Some("Success"));
    assert_eq!(attr(server, "konnector.outcome").as_deref(), Some("ok"));
    assert_eq!(
        attr(server, "konnector.trigger").as_deref(),
        Some("TRIGGER_AFTER_CONTROL_PLANE_INITIALIZED")
    );
}

/// The one summary line of the hook carries the trace id, and so does every line either binary writes inside a
/// request span: konnector's line format adds it.
fn assert_logs_carry_the_trace_id(logs: &str, trace_id: &[u8]) {
    // The one summary line of the hook carries the trace id, and so does every line either binary writes inside
    // the hook's trace: konnector's line format adds it.
    let trace_suffix = format!(" trace_id={}", hex(trace_id));
    let summary = logs
        .lines()
        .find(|l| l.contains("hook answered") && l.ends_with(&trace_suffix))
        .expect("a 'hook answered' line ending with the trace id");
    for span in ["hook{", "grpc_server{"] {
        let traced = logs
            .lines()
            .filter(|l| l.contains(span) && l.ends_with(&trace_suffix))
            .count();
        assert!(
            traced > 0,
            "no line inside a {span}…}} span carries the hook's trace id"
        );
    }
    // Every line written inside any gateway or executor request span carries some trace id (other tests' hooks
    // run in this process too, each in its own trace).
    for line in logs
        .lines()
        .filter(|l| l.starts_with("20") && (l.contains(" hook{") || l.contains(" grpc_server{")))
    {
        let id = line.rsplit_once(" trace_id=").map(|(_, id)| id);
        assert!(
            id.is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())),
            "a line inside a request span without its trace id: {line}"
        );
    }
    for needle in [
        "namespace=clusters",
        "cluster=c1",
        "hook=\"AfterControlPlaneInitialized\"",
        "status=\"Success\"",
        "duration_ms=",
    ] {
        assert!(summary.contains(needle), "{needle} in {summary}");
    }
}

/// Both admin routers answer health and /metrics, and the metrics counted this one hook on both sides.
async fn assert_admin_routers_count_the_hook(gateway: &gateway_fixture::RunningGateway, env: &ExecutorEnv) {
    // Both admin routers: health and /metrics, side by side.
    let gw_admin = admin::router(gateway.readiness.clone(), gateway.metrics.router());
    let ex_admin = admin::router(
        admin::Readiness::default(),
        env.executor.metrics.registry().router(),
    );
    assert_eq!(get(&gw_admin, "/livez").await.0, 200);
    tokio::time::timeout(support::HANG_GUARD, async {
        while get(&gw_admin, "/readyz").await.0 != 200 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the gateway turns ready once the executor is serving");
    let (status, text) = get(&gw_admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        text.contains(
            "konnector_gateway_hook_requests_total{hook=\"AfterControlPlaneInitialized\",status=\"Success\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "konnector_gateway_hook_duration_seconds_count{hook=\"AfterControlPlaneInitialized\",status=\"Success\"} 1"
        ),
        "{text}"
    );
    let (status, text) = get(&ex_admin, "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "konnector_executor_rpc_requests_total{method=\"ApplyAgent\",code=\"OK\"} 1",
        "konnector_executor_kube_requests_total{kube_cluster=\"management\",verb=\"get\",resource=\"secrets\",outcome=\"200\"}",
        "konnector_executor_kube_requests_total{kube_cluster=\"management\",verb=\"patch\",resource=\"helmchartproxies\",outcome=\"201\"} 1",
        "konnector_executor_kube_requests_total{kube_cluster=\"workload\",verb=\"patch\",resource=\"secrets\",outcome=\"201\"} 1",
        "konnector_executor_remote_clients 1",
    ] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
    assert_eq!(get(&ex_admin, "/livez").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_is_in_no_log_span_metric_or_event() {
    observed();
    let env = executor_env(
        "otel-secret",
        ExecutorConfig::default(),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    let gateway = start_gateway(env.executor.endpoint()).await;
    let hook = Hook::AfterControlPlaneInitialized;

    // Success: the password is read, validated and copied to the workload cluster.
    let answer = post(
        &gateway,
        &hook.path(),
        &hook_body(hook, &env, TEST_CREDENTIALS_SECRET).await,
        None,
    )
    .await;
    assert_eq!(answer["status"], "Success", "{answer}");
    // A Secret holding the password but missing the username key: a Failure that records an Event.
    workload::put_credentials_secret(
        &env.admin,
        TEST_NAMESPACE,
        "password-only",
        &[("password", TEST_PASSWORD)],
    )
    .await
    .unwrap();
    let answer = post(
        &gateway,
        &hook.path(),
        &hook_body(hook, &env, "password-only").await,
        None,
    )
    .await;
    assert_eq!(answer["status"], "Failure", "{answer}");
    // A Secret that does not exist at all.
    let answer = post(
        &gateway,
        &hook.path(),
        &hook_body(hook, &env, "no-such-secret").await,
        None,
    )
    .await;
    assert_eq!(answer["status"], "Failure", "{answer}");
    let reasons = cluster_event_reasons(&env.admin, TEST_NAMESPACE, TEST_CLUSTER)
        .await
        .unwrap();
    for reason in ["CredentialsSecretInvalid", "CredentialsSecretMissing"] {
        assert!(reasons.contains(&reason.to_owned()), "{reason} in {reasons:?}");
    }
    // And an uninstall, whose answer walks the HelmChartProxy and its release proxies.
    env.start_deletion().await.unwrap();
    let bcd = Hook::BeforeClusterDelete;
    let answer = post(
        &gateway,
        &bcd.path(),
        &hook_body(bcd, &env, TEST_CREDENTIALS_SECRET).await,
        None,
    )
    .await;
    assert_eq!(answer["status"], "Success", "{answer}");
    flush().await;

    let leaks = |what: &str, text: &str| support::assert_no_secret(what, text, TEST_PASSWORD);

    let logs = observed().logs.text();
    assert!(
        logs.contains("TRACE") && logs.contains("kube_request"),
        "logs were captured at trace level"
    );
    leaks("the logs", &logs);

    let spans = own_spans();
    assert!(
        spans.iter().any(|s| s.name == "get secrets"),
        "the Secret reads were traced"
    );
    for span in &spans {
        leaks("a span", &format!("{span:?}"));
    }

    let (_, gw_metrics) = get(&gateway.metrics.router(), "/metrics").await;
    let (_, ex_metrics) = get(&env.executor.metrics.registry().router(), "/metrics").await;
    assert!(
        ex_metrics.contains("code=\"FAILED_PRECONDITION\""),
        "{ex_metrics}"
    );
    leaks("the gateway's metrics", &gw_metrics);
    leaks("the executor's metrics", &ex_metrics);

    let events = Api::<Event>::namespaced(env.admin.clone(), TEST_NAMESPACE)
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    assert!(!events.is_empty());
    leaks("an Event", &serde_json::to_string(&events).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_exports_its_hooks_to_a_collector() {
    let endpoint = observed().endpoint.clone();
    let state = tempfile::tempdir().unwrap();
    let status = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_konnector-sandbox"))
            .args(["--clusters", "1", "--otlp-endpoint", &endpoint, "--state-dir"])
            .arg(state.path())
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .status(),
    )
    .await
    .expect("the sandbox finished")
    .unwrap();
    assert!(status.success(), "the sandbox's lifecycle passed");

    // The sandbox flushes its spans on exit, so they are all in.
    let spans = foreign_spans();
    assert!(spans.iter().all(|(service, _)| service == "konnector-sandbox"));
    let spans: Vec<Span> = spans.into_iter().map(|(_, s)| s).collect();
    // Real CAPI calls AfterControlPlaneInitialized for every Cluster, and the gateway answers a Cluster without the
    // addon itself, with no executor call: take a hook whose trace went on into the executor, and require one.
    let acpi: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32 && s.name.contains("aftercontrolplaneinitialized"))
        .collect();
    assert!(!acpi.is_empty(), "the sandbox's gateway exported its hook spans");
    let in_trace = |trace_id: &[u8], name: &str, kind: SpanKind| {
        spans
            .iter()
            .any(|s| s.trace_id == trace_id && s.name == name && s.kind == kind as i32)
    };
    let server_spans: Vec<&str> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .map(|s| s.name.as_str())
        .collect();
    let hook = acpi
        .iter()
        .find(|h| in_trace(&h.trace_id, "konnector.executor.v1.AgentService/ApplyAgent", SpanKind::Server))
        .unwrap_or_else(|| {
            panic!("no AfterControlPlaneInitialized trace reaches the executor's ApplyAgent; server spans: {server_spans:?}")
        });
    // The executor's API calls are in the hook's trace. The credentials Secret is read on every apply; the
    // HelmChartProxy write is skipped when the sandbox's reconciler (the same process) wrote the same proxy first and
    // the hook watch proves nobody changed it since, so the Secret read is the call every ApplyAgent makes.
    assert!(in_trace(&hook.trace_id, "get secrets", SpanKind::Client));
}

/// The span attributes konnector emits, checked against the semantic-conventions crate (semconv 1.42.0 in
/// opentelemetry-semantic-conventions 0.33): the current RPC attributes (`rpc.system.name`, the fully-qualified
/// `rpc.method`, the gRPC code as a string in `rpc.response.status_code`) and none of the ones they replaced, the
/// stable HTTP ones, and everything else under `konnector.`, nothing under OpenTelemetry's reserved `k8s.`.
fn check_semantic_conventions(gateway: &Span, client: &Span, server: &Span, kube: &[&Span]) {
    #[allow(deprecated)]
    let replaced = [
        semconv::RPC_SYSTEM,
        semconv::RPC_SERVICE,
        semconv::RPC_GRPC_STATUS_CODE,
    ];
    // What the tracing-opentelemetry layer adds to every span on its own (source location, thread, timings).
    let from_the_layer = |key: &str| {
        key.starts_with("code.")
            || key.starts_with("thread.")
            || ["busy_ns", "idle_ns", "target"].contains(&key)
    };
    let known = [
        semconv::HTTP_REQUEST_METHOD,
        semconv::HTTP_ROUTE,
        semconv::HTTP_RESPONSE_STATUS_CODE,
        semconv::RPC_SYSTEM_NAME,
        semconv::RPC_METHOD,
        semconv::RPC_RESPONSE_STATUS_CODE,
        semconv::SERVER_ADDRESS,
        semconv::SERVER_PORT,
        semconv::URL_PATH,
        semconv::URL_SCHEME,
        semconv::ERROR_TYPE,
    ];
    for span in [gateway, client, server].into_iter().chain(kube.iter().copied()) {
        for kv in &span.attributes {
            let key = kv.key.as_str();
            assert!(
                !replaced.contains(&key),
                "{}: {key} is replaced in current semconv",
                span.name
            );
            assert!(
                !key.starts_with("k8s."),
                "{}: {key} is in OpenTelemetry's reserved k8s namespace",
                span.name
            );
            assert!(
                known.contains(&key) || key.starts_with("konnector.") || from_the_layer(key),
                "{}: attribute {key} is neither a semantic convention nor konnector's own",
                span.name
            );
        }
    }
    let string = |span: &Span, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{}: no string attribute {key}", span.name))
    };
    for span in [client, server] {
        assert_eq!(string(span, semconv::RPC_SYSTEM_NAME), "grpc");
        assert_eq!(
            string(span, semconv::RPC_METHOD),
            "konnector.executor.v1.AgentService/ApplyAgent",
            "rpc.method is fully qualified and names the span"
        );
        assert_eq!(string(span, semconv::RPC_METHOD), span.name);
        assert_eq!(
            string(span, semconv::RPC_RESPONSE_STATUS_CODE),
            "OK",
            "the gRPC code as a string"
        );
    }
    // The client span names the executor it called.
    assert_eq!(string(client, semconv::SERVER_ADDRESS), "127.0.0.1");
    assert!(attr(client, semconv::SERVER_PORT).is_some_and(|p| p.parse::<u16>().is_ok()));
    assert_eq!(string(gateway, semconv::HTTP_REQUEST_METHOD), "POST");
    assert_eq!(string(gateway, semconv::URL_SCHEME), "https");
    assert!(
        string(gateway, semconv::URL_PATH).starts_with("/hooks.runtime.cluster.x-k8s.io/v1alpha1/"),
        "url.path is the request's path"
    );
    for span in [gateway, client, server].into_iter().chain(kube.iter().copied()) {
        if span.status.as_ref().is_none_or(|s| s.code != 2) {
            assert!(
                attr(span, semconv::ERROR_TYPE).is_none(),
                "{}: error.type on a span that did not fail",
                span.name
            );
        }
    }
    assert_eq!(
        format!("POST {}", string(gateway, semconv::HTTP_ROUTE)),
        gateway.name
    );
    assert_eq!(
        attr(gateway, semconv::HTTP_RESPONSE_STATUS_CODE).as_deref(),
        Some("200")
    );
    for span in kube {
        assert!(
            attr(span, semconv::HTTP_REQUEST_METHOD).is_some(),
            "{}",
            span.name
        );
        assert!(
            attr(span, semconv::HTTP_RESPONSE_STATUS_CODE).is_some(),
            "{}",
            span.name
        );
    }
}

/// Exports one span through konnector's exporter setup to an `https://` receiver and checks what arrived: the span,
/// its attribute, and the resource's service name and version.
async fn export_over_tls(protocol: OtlpProtocol) {
    konnector_runtime::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, ca_file, received) = otlp::serve_tls(protocol, dir.path()).await.unwrap();
    let export = OtlpExport {
        endpoint: Some(endpoint),
        protocol,
        ca: Some(ca_file),
        ..OtlpExport::default()
    };
    let provider = export.provider("konnector-tls-export").unwrap();
    let subscriber = tracing_subscriber::registry().with(konnector_runtime::telemetry::tracing_layer(
        &provider,
        "konnector-tls-export",
    ));
    tracing::subscriber::with_default(subscriber, || {
        tracing::info_span!(
            "exported",
            { attr::KONNECTOR_HOOK } = "AfterControlPlaneInitialized"
        )
        .in_scope(|| {});
    });
    let flusher = provider.clone();
    tokio::task::spawn_blocking(move || flusher.force_flush())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{protocol:?} export over https failed: {e}"));
    let received = received.lock().unwrap().clone();
    let (resource, span) = received
        .iter()
        .find(|(_, s)| s.name == "exported")
        .unwrap_or_else(|| panic!("the receiver got no span over {protocol:?}: {received:?}"));
    assert_eq!(
        attr(span, attr::KONNECTOR_HOOK).as_deref(),
        Some("AfterControlPlaneInitialized")
    );
    let resource_attr = |key: &str| otlp::attribute(resource, key);
    assert_eq!(
        resource_attr(opentelemetry_semantic_conventions::resource::SERVICE_NAME).as_deref(),
        Some("konnector-tls-export")
    );
    assert_eq!(
        resource_attr(opentelemetry_semantic_conventions::resource::SERVICE_VERSION).as_deref(),
        Some(konnector_runtime::VERSION)
    );
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_https_collector_over_otlp_grpc() {
    export_over_tls(OtlpProtocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_https_collector_over_otlp_http_protobuf() {
    export_over_tls(OtlpProtocol::HttpProtobuf).await;
}

/// 16 random-enough bytes for ids, without a random-number dependency.
fn rand_bytes() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let mut out = [0u8; 16];
    for chunk in out.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        chunk.copy_from_slice(&h.finish().to_be_bytes());
    }
    out
}
