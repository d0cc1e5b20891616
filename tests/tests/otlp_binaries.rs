//! The real `konnector-gateway` and `konnector-executor` binaries, started as separate processes with the
//! OpenTelemetry environment the chart renders for `otel.protocol: http/protobuf`, export a hook's trace over
//! OTLP/HTTP to the project's receiver (tests/src/otlp.rs).
//!
//! What is attacked: the start-up crash (the OTLP/HTTP client was built before the rustls provider existed), the
//! endpoint rule (the generic `OTEL_EXPORTER_OTLP_ENDPOINT` is a base that gets `/v1/traces` even with a path of
//! its own; `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is used as it is), `OTEL_EXPORTER_OTLP_COMPRESSION=gzip` (honoured;
//! a value the exporter cannot do stops the binary), the span attributes (`url.path`, `url.scheme`, `error.type`),
//! trace ids in the logs with export off, and plain logs without colour codes in a pipe.
//!
//! The binaries are [`tools::static_bin_dir`]'s (`KONNECTOR_STATIC_BIN_DIR`, e.g. `target/debug` after
//! `cargo build -p konnector-gateway -p konnector-executor`, or hack/build-static.sh's release build).

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use konnector_gateway::catalog::Hook;
use konnector_tests::{
    capi_stand_in::ExtensionClient,
    control_plane::ControlPlane,
    executor_fixture::{
        TEST_CLUSTER, TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, TEST_PASSWORD, addon_cluster_config,
    },
    gateway_fixture::write_gateway_certs,
    otlp, support, tools,
    workload::{self, ClusterOptions, WorkloadCluster},
};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use opentelemetry_semantic_conventions::attribute as semconv;
use serde_json::Value;

/// A started binary: killed on drop; its stdout collected by a thread.
struct Proc {
    child: Child,
    stdout: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start the binary");
        let stdout = Arc::new(Mutex::new(String::new()));
        let (mut pipe, sink) = (child.stdout.take().unwrap(), stdout.clone());
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            child,
            stdout,
            reader: Some(reader),
        }
    }

    fn logs(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything the process wrote, once it has exited (the reader thread has seen the pipe close).
    fn all_logs(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.logs()
    }

    /// SIGTERM, as Kubernetes stops a pod, then waits for the exit; the exporter flushes on the way out.
    async fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = tokio::time::Instant::now() + support::HANG_GUARD;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Its last lines too: the reader ends when the pipe closes.
                self.all_logs();
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the binary did not stop on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn bin(name: &str) -> PathBuf {
    let path = tools::static_bin_dir().unwrap().join(name);
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// The literal environment (`value`, not `valueFrom`) of the chart's `deployment` container, rendered with `sets`.
fn chart_env(sets: &[&str], deployment: &str) -> Vec<(String, String)> {
    let docs = tools::render_chart("konnector-system", sets, &[]).unwrap();
    let object = tools::find_object(&docs, "Deployment", deployment);
    object["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e["value"].as_str()?.to_owned())))
        .collect()
}

/// A management plane with the Cluster `clusters/c1` (addon configured), its credentials Secret, and a workload
/// plane; the admin kubeconfig written to `dir`.
struct Planes {
    _mgmt: ControlPlane,
    _workload: ControlPlane,
    kubeconfig: PathBuf,
    cluster: WorkloadCluster,
}

async fn planes(name: &str, dir: &Path) -> Planes {
    konnector_runtime::tls::install_crypto_provider();
    let (mgmt_name, wl_name) = (format!("{name}-mgmt"), format!("{name}-wl"));
    let ((mgmt, admin), wl) = tokio::try_join!(
        konnector_tests::management_plane(&mgmt_name),
        ControlPlane::start(&wl_name),
    )
    .unwrap();
    let cluster = workload::create_workload_cluster(
        &admin,
        &wl,
        TEST_NAMESPACE,
        TEST_CLUSTER,
        ClusterOptions {
            cluster_config: Some(addon_cluster_config(TEST_CREDENTIALS_SECRET)),
            ..ClusterOptions::initialized()
        },
    )
    .await
    .unwrap();
    workload::put_credentials_secret(
        &admin,
        TEST_NAMESPACE,
        TEST_CREDENTIALS_SECRET,
        &[("username", "admin"), ("password", TEST_PASSWORD)],
    )
    .await
    .unwrap();
    let kubeconfig = dir.join("management.kubeconfig");
    std::fs::write(&kubeconfig, mgmt.kubeconfig_yaml()).unwrap();
    Planes {
        _mgmt: mgmt,
        _workload: wl,
        kubeconfig,
        cluster,
    }
}

/// The two binaries, wired as deployed (the gateway calls the executor; plaintext on loopback here), each with
/// only `env` in its environment.
struct Pair {
    executor: Proc,
    gateway: Proc,
    hooks: ExtensionClient,
}

async fn start_pair(
    planes: &Planes,
    dir: &Path,
    executor_env: &[(String, String)],
    gateway_env: &[(String, String)],
) -> Pair {
    let (grpc, exec_admin, https, gw_admin) = (free_port(), free_port(), free_port(), free_port());
    let (ca_pem, tls) = write_gateway_certs(&dir.join("serving")).unwrap();
    let mut executor = Command::new(bin("konnector-executor"));
    executor
        .env_clear()
        .envs(executor_env.iter().cloned())
        .args(["--listen", &format!("127.0.0.1:{grpc}")])
        .args(["--admin-listen", &format!("127.0.0.1:{exec_admin}")])
        .arg("--kubeconfig")
        .arg(&planes.kubeconfig)
        // The Cluster's Prism Central (pc.example.com) is not reachable here, and the reconciler's passes would
        // add spans of their own to the receiver.
        .args(["--prism-central-checks", "off", "--no-reconcile"]);
    let executor = Proc::spawn(executor);
    let mut gateway = Command::new(bin("konnector-gateway"));
    gateway
        .env_clear()
        .envs(gateway_env.iter().cloned())
        .args(["--listen", &format!("127.0.0.1:{https}")])
        .args(["--admin-listen", &format!("127.0.0.1:{gw_admin}")])
        .arg("--tls-cert")
        .arg(&tls.cert)
        .arg("--tls-key")
        .arg(&tls.key)
        .args(["--capi-version", "v1.14"])
        .args([
            "--executor-url",
            &format!("http://127.0.0.1:{grpc}"),
            "--executor-plaintext-loopback",
        ]);
    let mut gateway = Proc::spawn(gateway);
    let hooks = ExtensionClient::new(&format!("https://127.0.0.1:{https}"), &ca_pem).unwrap();
    let deadline = tokio::time::Instant::now() + support::HANG_GUARD;
    while hooks.discover().await.is_err() {
        if let Some(status) = gateway.child.try_wait().unwrap() {
            panic!(
                "the gateway exited ({status}) before serving:\n{}",
                gateway.logs()
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The gateway serves discovery without the executor; a hook sent before the executor listens answers
    // "executor unreachable" (seen once in a full run). The executor is ready once its /readyz says so.
    let executor_admin: std::net::SocketAddr = format!("127.0.0.1:{exec_admin}").parse().unwrap();
    while konnector_tests::real_binaries::http_get_status(executor_admin, "/readyz", Duration::from_secs(2))
        .await
        != Some(200)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the executor never became ready:\n{}",
            executor.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Pair {
        executor,
        gateway,
        hooks,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends `hook` for `cluster` (its v1.14 golden body) with a traceparent naming `trace_id`; returns the answer.
async fn hook(pair: &Pair, hook: Hook, cluster: &WorkloadCluster, trace_id: &str) -> Value {
    let body = support::retarget(
        support::golden_body("v1.14", hook),
        cluster,
        TEST_CREDENTIALS_SECRET,
    );
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let raw = support::within_guard(
        "the hook",
        pair.hooks.post_raw(
            &hook.path(),
            serde_json::to_vec(&body).unwrap(),
            10,
            &[("traceparent", &traceparent)],
        ),
    )
    .await
    .unwrap();
    assert_eq!(raw.status, 200);
    serde_json::from_slice(&raw.body).unwrap()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    otlp::attribute(&span.attributes, key)
}

/// The spans `service` exported in trace `trace_id`.
fn spans_of(received: &otlp::Received, service: &str, trace_id: &str) -> Vec<Span> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|(resource, span)| otlp::service_name(resource) == service && hex(&span.trace_id) == trace_id)
        .map(|(_, span)| span.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_binaries_export_a_hook_over_otlp_http_with_the_charts_environment() {
    let dir = tempfile::tempdir().unwrap();
    let (base, received, requests) = otlp::serve_http().await.unwrap();
    // The chart's environment for an OTLP/HTTP collector behind a path prefix, with gzip, and plain logs (the
    // chart's default is JSON; plain is the format that could carry colour codes).
    let endpoint = format!("{base}/otlp");
    let sets = [
        format!("otel.endpoint={endpoint}"),
        "otel.protocol=http/protobuf".to_owned(),
        "otel.compression=gzip".to_owned(),
        "gateway.logFormat=plain".to_owned(),
        "executor.logFormat=plain".to_owned(),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let gateway_env = chart_env(&sets, "konnector-gateway");
    let mut executor_env = chart_env(&sets, "konnector-executor");
    for (name, value) in [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ("OTEL_SERVICE_NAME", "konnector-gateway"),
        ("KONNECTOR_LOG_FORMAT", "plain"),
    ] {
        assert!(
            gateway_env.iter().any(|(n, v)| n == name && v == value),
            "the chart sets {name}={value}: {gateway_env:?}"
        );
    }
    // The executor gets the chart's environment plus the traces-specific variable, which must be used as it is
    // (no /v1/traces appended) and win over the generic one.
    let executor_url = format!("{base}/custom/executor-spans");
    executor_env.push(("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into(), executor_url));

    let planes = planes("otlp-http", dir.path()).await;
    let mut pair = start_pair(&planes, dir.path(), &executor_env, &gateway_env).await;

    // One hook that succeeds, one that fails in the executor (a Cluster that does not exist).
    let ok_trace = hex(&[0x4b; 16]);
    let answer = hook(
        &pair,
        Hook::AfterControlPlaneInitialized,
        &planes.cluster,
        &ok_trace,
    )
    .await;
    assert_eq!(answer["status"], "Success", "{answer}");
    let failed_trace = hex(&[0x5c; 16]);
    let absent = WorkloadCluster {
        name: "absent".into(),
        uid: "00000000-0000-0000-0000-000000000000".into(),
        ..planes.cluster.clone()
    };
    let answer = hook(&pair, Hook::AfterControlPlaneInitialized, &absent, &failed_trace).await;
    assert_eq!(answer["status"], "Failure", "{answer}");

    // SIGTERM flushes the batch exporters; both exit cleanly.
    let executor_status = pair.executor.terminate().await;
    let gateway_status = pair.gateway.terminate().await;
    assert!(
        gateway_status.success(),
        "gateway: {gateway_status}\n{}",
        pair.gateway.logs()
    );
    assert!(
        executor_status.success(),
        "executor: {executor_status}\n{}",
        pair.executor.logs()
    );

    // Where and how they sent.
    let requests = requests.lock().unwrap().clone();
    assert!(!requests.is_empty(), "no OTLP/HTTP request arrived");
    for request in &requests {
        let expected = match request.services.first().map(String::as_str) {
            Some("konnector-gateway") => "/otlp/v1/traces",
            Some("konnector-executor") => "/custom/executor-spans",
            other => panic!("a request from an unknown service {other:?}: {request:?}"),
        };
        assert_eq!(request.path, expected, "{request:?}");
        assert_eq!(request.content_encoding.as_deref(), Some("gzip"), "{request:?}");
        assert_eq!(
            request.content_type.as_deref(),
            Some("application/x-protobuf"),
            "{request:?}"
        );
        assert!(request.spans > 0, "{request:?}");
    }
    let wire: usize = requests.iter().map(|r| r.wire_bytes).sum();
    eprintln!(
        "OTLP/HTTP: {} requests, {} spans, {wire} bytes gzipped on the wire",
        requests.len(),
        requests.iter().map(|r| r.spans).sum::<usize>()
    );

    // The successful hook: one trace across both processes, the gateway's server span with url.*, no error.type.
    let gateway_spans = spans_of(&received, "konnector-gateway", &ok_trace);
    let executor_spans = spans_of(&received, "konnector-executor", &ok_trace);
    let server = gateway_spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("the gateway's hook span");
    assert_eq!(attr(server, semconv::URL_SCHEME).as_deref(), Some("https"));
    assert_eq!(
        attr(server, semconv::URL_PATH),
        Some(Hook::AfterControlPlaneInitialized.path())
    );
    assert_eq!(attr(server, semconv::ERROR_TYPE), None);
    let apply = executor_spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32 && s.name.ends_with("/ApplyAgent"))
        .expect("the executor's ApplyAgent span, in the caller's trace");
    assert_eq!(attr(apply, semconv::ERROR_TYPE), None);
    assert!(
        executor_spans.iter().any(|s| s.name == "patch helmchartproxies"),
        "the executor's Kubernetes calls are in the trace"
    );

    // The failed hook: error.type on the gateway's server and client spans and on the executor's server span.
    let gateway_spans = spans_of(&received, "konnector-gateway", &failed_trace);
    let executor_spans = spans_of(&received, "konnector-executor", &failed_trace);
    let server = gateway_spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("the gateway's failed hook span");
    let client = gateway_spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .expect("the gateway's gRPC client span");
    let apply = executor_spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("the executor's failed ApplyAgent span");
    let code = attr(apply, semconv::RPC_RESPONSE_STATUS_CODE).unwrap();
    assert_ne!(code, "OK");
    for span in [server, client, apply] {
        assert_eq!(
            attr(span, semconv::ERROR_TYPE).as_deref(),
            Some(code.as_str()),
            "{}",
            span.name
        );
    }

    // Plain logs into a pipe: no escape codes, and the trace id on the lines written inside the hook.
    for (name, logs) in [
        ("gateway", pair.gateway.logs()),
        ("executor", pair.executor.logs()),
    ] {
        assert!(
            !logs.contains('\u{1b}'),
            "the {name}'s plain logs carry ANSI escape codes:\n{logs}"
        );
        support::assert_no_secret(&format!("the {name}'s logs"), &logs, TEST_PASSWORD);
    }
    let gateway_logs = pair.gateway.logs();
    assert!(
        gateway_logs
            .lines()
            .any(|l| l.contains("hook answered") && l.ends_with(&format!("trace_id={ok_trace}"))),
        "{gateway_logs}"
    );
    for (_, span) in received.lock().unwrap().iter() {
        for kv in &span.attributes {
            support::assert_no_secret("a span attribute", &format!("{kv:?}"), TEST_PASSWORD);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_the_trace_id_with_export_off() {
    let dir = tempfile::tempdir().unwrap();
    let planes = planes("otlp-off", dir.path()).await;
    // No OTEL_* at all: nothing is exported, and the lines still carry the caller's trace id, in both binaries.
    let env = [
        ("KONNECTOR_LOG_FORMAT".to_owned(), "plain".to_owned()),
        ("RUST_LOG".to_owned(), "info,konnector_executor=debug".to_owned()),
    ];
    let mut pair = start_pair(&planes, dir.path(), &env, &env).await;
    let trace = hex(&[0x6d; 16]);
    let answer = hook(&pair, Hook::AfterControlPlaneInitialized, &planes.cluster, &trace).await;
    assert_eq!(answer["status"], "Success", "{answer}");
    pair.executor.terminate().await;
    pair.gateway.terminate().await;
    let suffix = format!("trace_id={trace}");
    let gateway_logs = pair.gateway.logs();
    assert!(
        gateway_logs
            .lines()
            .any(|l| l.contains("hook answered") && l.ends_with(&suffix)),
        "the gateway's hook line carries the caller's trace id:\n{gateway_logs}"
    );
    let executor_logs = pair.executor.logs();
    let traced = executor_logs.lines().filter(|l| l.ends_with(&suffix)).count();
    assert!(
        traced > 0,
        "the executor's lines in the hook carry the same trace id:\n{executor_logs}"
    );
    eprintln!("export off: {traced} executor lines carry the hook's trace id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compression_the_exporter_cannot_do_stops_the_binary_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let (_, tls) = write_gateway_certs(dir.path()).unwrap();
    let (https, admin) = (free_port(), free_port());
    let mut gateway = Command::new(bin("konnector-gateway"));
    gateway
        .env_clear()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9/otlp")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")
        .env("KONNECTOR_LOG_FORMAT", "json")
        .args(["--listen", &format!("127.0.0.1:{https}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .arg("--tls-cert")
        .arg(&tls.cert)
        .arg("--tls-key")
        .arg(&tls.key)
        .args([
            "--executor-url",
            "http://127.0.0.1:9",
            "--executor-plaintext-loopback",
        ]);
    let mut gateway = Proc::spawn(gateway);
    let deadline = tokio::time::Instant::now() + support::HANG_GUARD;
    let status = loop {
        if let Some(status) = gateway.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway kept running with zstd"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let logs = gateway.all_logs();
    assert_eq!(status.code(), Some(1), "{logs}");
    let line: Value = serde_json::from_str(logs.lines().last().expect("a fatal line")).unwrap();
    assert!(
        line["error"]
            .as_str()
            .unwrap_or_default()
            .contains("OTEL_EXPORTER_OTLP_COMPRESSION=\"zstd\" is not supported"),
        "{logs}"
    );
}
