//! Prometheus's own tools on konnector's real outputs: `promtool check metrics` on what both binaries serve at
//! `/metrics` after real hook traffic (in-process gateway and executor against real API servers), the naming and
//! bucket conventions on the same output, and `promtool check rules` / `promtool test rules` on the chart's rendered
//! PrometheusRule with the unit tests in tests/prometheus/rules_test.yaml.
//!
//! promtool comes from Debian's `prometheus` package, which hack/test.sh installs when it is missing.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use http_body_util::BodyExt;
use konnector_executor::ExecutorConfig;
use konnector_runtime::metrics::{LATENCY_BUCKETS, Metrics};
use konnector_tests::{
    capi_stand_in::{CapiShape, ExtensionClient, Hook, hook_path, hook_request},
    executor_fixture::{
        TEST_CLUSTER, TEST_NAMESPACE, executor_env, fast_reconcile, start_reconciling_executor,
    },
    gateway_fixture::start_gateway,
    tools,
    workload::{ClusterOptions, cluster_resource},
};
use kube::{Api, core::DynamicObject};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tower::ServiceExt;

const NS: &str = "konnector-system";
use konnector_tests::support::HANG_GUARD;
/// What Prometheus 2.x sends.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

fn promtool() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "command -v promtool"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool is missing: install Debian's prometheus package (hack/test.sh does)"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Runs promtool with `args` (and `stdin`), and fails the test with its output unless it exits 0.
fn run_promtool(args: &[&str], dir: &Path, stdin: Option<&str>) -> String {
    let mut cmd = Command::new(promtool());
    cmd.args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// GETs `/metrics` from `metrics`' router as a scraper sending `accept` would.
async fn scrape(metrics: &Metrics, accept: &str) -> (String, String) {
    let resp = metrics
        .router()
        .oneshot(
            http::Request::get("/metrics")
                .header(http::header::ACCEPT, accept)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()[http::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (content_type, String::from_utf8(body.to_vec()).unwrap())
}

/// The metric families of a classic-text exposition: name → type.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|rest| {
            let (name, kind) = rest.split_once(' ').unwrap();
            (name.to_owned(), kind.to_owned())
        })
        .collect()
}

/// The sample lines (`name{labels} value`), comments left out.
fn samples(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The value of the one sample whose line starts with `prefix`.
fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

/// The label names of a sample line.
fn label_names(sample: &str) -> Vec<String> {
    let Some((_, rest)) = sample.split_once('{') else {
        return Vec::new();
    };
    let labels = &rest[..rest.rfind('}').unwrap()];
    let mut names = Vec::new();
    let mut in_value = false;
    let mut escaped = false;
    let mut current = String::new();
    for c in labels.chars() {
        if in_value {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_value = false,
                _ => {}
            }
        } else if c == '=' {
            names.push(std::mem::take(&mut current));
        } else if c == '"' {
            in_value = true;
        } else if c != ',' {
            current.push(c);
        }
    }
    names
}

/// Every way `text` breaks konnector's naming conventions (Prometheus's, plus: one `konnector_` prefix, or the
/// standard `process_` collector's names, latencies in seconds, no label that names a cluster, an object or a peer,
/// and no `cluster` label, which a multi-cluster Prometheus (federation, Thanos, remote write) adds itself).
fn convention_violations(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let snake = |s: &str| {
        !s.is_empty()
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    for (name, kind) in families(text) {
        if !(name.starts_with("konnector_") || name.starts_with("process_")) || !snake(&name) {
            problems.push(format!("{name}: not a snake_case konnector_ name"));
        }
        match kind.as_str() {
            "counter" if !name.ends_with("_total") => problems.push(format!("counter {name} lacks _total")),
            "counter" => {}
            _ if name.ends_with("_total") => problems.push(format!("{kind} {name} ends in _total")),
            "histogram" if !name.ends_with("_seconds") => {
                problems.push(format!("histogram {name} is not in seconds"))
            }
            "gauge" | "histogram" => {}
            other => problems.push(format!("{name} has type {other}")),
        }
        for unit in [
            "_ms",
            "_millis",
            "_milliseconds",
            "_minutes",
            "_hours",
            "_days",
            "_kb",
            "_mb",
        ] {
            if name.contains(unit) {
                problems.push(format!("{name}: not in base units ({unit})"));
            }
        }
        if name.contains("timestamp") && !name.ends_with("_timestamp_seconds") {
            problems.push(format!("{name}: a timestamp is in unix seconds"));
        }
    }
    for sample in samples(text) {
        for label in label_names(&sample) {
            if !snake(&label) && label != "le" {
                problems.push(format!("label {label} in {sample}"));
            }
            if label == "cluster" {
                problems.push(format!(
                    "label cluster collides with the multi-cluster label: {sample}"
                ));
            }
            if [
                "name",
                "cluster_name",
                "namespace",
                "path",
                "file",
                "peer",
                "address",
                "subject",
            ]
            .contains(&label.as_str())
            {
                problems.push(format!("label {label} would name an object or a peer: {sample}"));
            }
        }
    }
    problems
}

/// The `le` bounds of every histogram series in `text`, by `name{other labels}`.
fn bucket_bounds(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut bounds: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains("_bucket{")) {
        let (series, _) = line.rsplit_once(' ').unwrap();
        let start = series.find("le=\"").unwrap();
        let end = start + 4 + series[start + 4..].find('"').unwrap();
        let le = series[start + 4..end].to_owned();
        let key = format!("{}{}", &series[..start], &series[end + 1..]);
        bounds.entry(key).or_default().push(le);
    }
    bounds
}

fn assert_buckets_fit_hook_latencies(text: &str, who: &str) {
    let expected: Vec<String> = LATENCY_BUCKETS
        .iter()
        .map(|b| {
            let s = format!("{b}");
            if s.contains('.') { s } else { format!("{s}.0") }
        })
        .chain(["+Inf".to_owned()])
        .collect();
    let bounds = bucket_bounds(text);
    assert!(!bounds.is_empty(), "{who} exports no histogram series:\n{text}");
    for (series, les) in bounds {
        assert_eq!(les, expected, "{who}: buckets of {series}");
    }
}

#[test]
fn latency_buckets_fit_hook_latencies() {
    // From a cached answer to CAPI's longest hook timeout (30 s), with a bucket above it for overruns, sorted.
    assert!(
        LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]),
        "{LATENCY_BUCKETS:?}"
    );
    assert!(LATENCY_BUCKETS[0] <= 0.005, "{LATENCY_BUCKETS:?}");
    assert!(LATENCY_BUCKETS.contains(&30.0), "{LATENCY_BUCKETS:?}");
    let last = *LATENCY_BUCKETS.last().unwrap();
    assert!(
        (30.0..=120.0).contains(&last) && last > 30.0,
        "{LATENCY_BUCKETS:?}"
    );
    // Enough resolution where hooks usually land (10 ms .. 10 s): no gap wider than a factor of 2.5.
    assert!(
        LATENCY_BUCKETS
            .windows(2)
            .filter(|w| w[0] >= 0.01 && w[1] <= 10.0)
            .all(|w| w[1] / w[0] <= 2.5 + f64::EPSILON),
        "{LATENCY_BUCKETS:?}"
    );
}

#[test]
fn the_convention_check_catches_what_it_is_for() {
    let bad = "\
# TYPE konnector_hooks counter
konnector_hooks 1
# TYPE konnector_hook_latency_ms histogram
konnector_hook_latency_ms_bucket{le=\"+Inf\"} 1
# TYPE konnector_seen_total gauge
konnector_seen_total{name=\"c1\"} 1
# TYPE other_thing gauge
other_thing{clusterName=\"x\"} 1
# TYPE konnector_cert_expiry_timestamp gauge
konnector_cert_expiry_timestamp 1
# TYPE konnector_requests_total counter
konnector_requests_total{cluster=\"management\"} 1
";
    let problems = convention_violations(bad);
    for expected in [
        "counter konnector_hooks lacks _total",
        "histogram konnector_hook_latency_ms is not in seconds",
        "gauge konnector_seen_total ends in _total",
        "label name would name an object",
        "other_thing: not a snake_case konnector_ name",
        "label clusterName",
        "konnector_cert_expiry_timestamp: a timestamp is in unix seconds",
        "label cluster collides with the multi-cluster label",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{expected} in {problems:#?}"
        );
    }
    assert!(
        convention_violations("# TYPE konnector_ok_total counter\nkonnector_ok_total{code=\"OK\"} 1\n")
            .is_empty()
    );
}

/// The metric names a PromQL expression reads: string literals, label matchers, ranges and grouping label lists
/// dropped, function names (followed by `(`), keywords, numbers, durations and `$variables` skipped.
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    // Strings first (they may hold any character), then `{…}` and `[…]`.
    let mut plain = String::new();
    let mut chars = expr.chars().peekable();
    let mut depth = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let quote = c;
                while let Some(d) = chars.next() {
                    if d == '\\' && quote != '`' {
                        chars.next();
                    } else if d == quote {
                        break;
                    }
                }
                plain.push(' ');
            }
            '{' | '[' => depth += 1,
            '}' | ']' => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            _ => plain.push(c),
        }
    }
    let tokens: Vec<(String, char)> = {
        let mut out = Vec::new();
        let mut current = String::new();
        let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '$' || c == '.';
        let chars: Vec<char> = plain.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            if is_ident(c) {
                current.push(c);
                continue;
            }
            if !current.is_empty() {
                let next = chars[i..]
                    .iter()
                    .copied()
                    .find(|c| !c.is_whitespace())
                    .unwrap_or(' ');
                out.push((std::mem::take(&mut current), next));
            }
        }
        if !current.is_empty() {
            out.push((current, ' '));
        }
        out
    };
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "inf",
        "nan",
        "atan2",
    ];
    // Aggregation operators take their grouping before or after the parenthesis: `sum by (x) (…)`.
    const AGGREGATORS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "limitk",
        "limit_ratio",
    ];
    const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
    let mut names = BTreeSet::new();
    let mut skip_group = false;
    let mut in_group = false;
    for (token, next) in tokens {
        if in_group {
            // Label names inside `by (…)`; the list ends at the first token followed by `)`.
            if next == ')' {
                in_group = false;
            }
            continue;
        }
        if skip_group {
            skip_group = false;
            if next == ')' {
                continue;
            }
        }
        if GROUPING.contains(&token.as_str()) {
            if next == '(' {
                in_group = true;
            }
            continue;
        }
        let first = token.chars().next().unwrap();
        if first == '$'
            || first.is_ascii_digit()
            || first == '.'
            || KEYWORDS.contains(&token.as_str())
            || AGGREGATORS.contains(&token.as_str())
        {
            continue;
        }
        if next == '(' {
            // A function call; `sum by (…) (…)` puts the grouping after the name, handled above.
            continue;
        }
        names.insert(token);
    }
    names
}

#[test]
fn promql_names_are_read_from_expressions() {
    let names = promql_metric_names(
        "histogram_quantile(0.95, sum by (hook, le) (rate(a_seconds_bucket{namespace=~\"$namespace\",x=\"by (z)\"}[$__rate_interval])))\n\
         / on (pod) group_left (version) b_info or sum without (le) (c_total unless c_total offset 1h) - time() > 0.5 * 86400",
    );
    assert_eq!(
        names,
        ["a_seconds_bucket", "b_info", "c_total"]
            .into_iter()
            .map(str::to_owned)
            .collect(),
    );
    assert_eq!(
        promql_metric_names("label_values(konnector_build_info, namespace)"),
        ["konnector_build_info", "namespace"]
            .into_iter()
            .map(str::to_owned)
            .collect(),
        "label_values() is Grafana's, not PromQL: its arguments are read as names (the caller takes the first)"
    );
}

/// Every PromQL expression in a Grafana dashboard: each `expr`, and the metric of each `label_values(…)` variable.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", Value::String(e)) => out.push(e.clone()),
                        ("definition", Value::String(d)) => {
                            if let Some(rest) = d.strip_prefix("label_values(") {
                                let metric = rest.split([',', ')']).next().unwrap_or("").trim();
                                out.push(metric.to_owned());
                            }
                        }
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(dashboard, &mut out);
    out
}

/// The names a query may use for the families in `texts` (classic text format): the family name, and for a
/// histogram its `_bucket`, `_sum` and `_count` series.
fn exported_names(texts: &[&str]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for text in texts {
        for (name, kind) in families(text) {
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            names.insert(name);
        }
    }
    names
}

/// Fails unless every metric `queries` read is in `exported`.
fn assert_queries_use_exported_metrics(what: &str, queries: &[String], exported: &BTreeSet<String>) {
    assert!(!queries.is_empty(), "{what} has no queries");
    let mut unknown = Vec::new();
    for query in queries {
        for name in promql_metric_names(query) {
            if !exported.contains(&name) {
                unknown.push(format!("{name} in {query}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "{what} reads metrics the binaries do not export: {unknown:#?}\nexported: {exported:#?}"
    );
}

/// Sends `bytes` on a plain TCP connection to `addr` and waits for the peer to close it: a failed TLS handshake.
async fn not_tls(addr: std::net::SocketAddr, bytes: &[u8]) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(
        HANG_GUARD,
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut sink),
    )
    .await;
}

/// Completes a TLS handshake with the executor at `addr` trusting `ca_pem` but presenting no client certificate,
/// and reads until the executor, which requires one, ends the connection.
async fn without_client_certificate(addr: std::net::SocketAddr, ca_pem: &[u8]) {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    // With TLS 1.3 the client finishes its side before the server refuses; the refusal shows on the first read.
    if let Ok(mut tls) = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
    {
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(
            HANG_GUARD,
            tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut sink),
        )
        .await;
    }
}

/// Waits until `metrics` serves a sample line starting with `prefix`, and returns the classic text then.
async fn wait_for(metrics: &Metrics, prefix: &str) -> String {
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            let (_, text) = scrape(metrics, "text/plain").await;
            if text.lines().any(|l| l.starts_with(prefix)) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {prefix} sample appeared"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_metrics_pass_promtool_and_follow_the_conventions() {
    konnector_tests::init_test_logging();
    // Preflights on, against the fixtures' Prism Central name, which does not resolve here: a failed preflight is
    // counted, and the hook still succeeds (warn mode).
    let config = ExecutorConfig {
        prism_central_checks: konnector_executor::prism::PreflightMode::Warn,
        prism_central_timeout: Duration::from_secs(2),
        ..ExecutorConfig::default()
    };
    let env = executor_env("prom-metrics", config, ClusterOptions::initialized())
        .await
        .unwrap();
    let gateway = start_gateway(&env.executor.endpoint(), "1.14").await.unwrap();
    let executor_metrics = env.executor.metrics.registry().clone();

    // Traffic: Discovery and one AfterControlPlaneInitialized through the gateway, a Failure for a Cluster that does
    // not exist, and a plain-HTTP request on each TLS port.
    let hooks = ExtensionClient::new(&gateway.url(), &gateway.ca_pem).unwrap();
    let handlers = hooks.discover().await.unwrap();
    let acpi = Hook::AfterControlPlaneInitialized;
    let handler = handlers[acpi.name()].clone();
    let path = hook_path(&acpi, &handler.name);
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &cluster_resource("v1beta2"));
    let stored = serde_json::to_value(clusters.get(TEST_CLUSTER).await.unwrap()).unwrap();
    let body: Value = hook_request(&acpi, CapiShape::V1_14, &stored, &BTreeMap::new());
    let answer = hooks.post(&path, &body, handler.timeout_seconds).await.unwrap();
    assert!(answer.is_done(), "{answer:?}");
    let mut missing = body.clone();
    missing["cluster"]["metadata"]["name"] = "no-such-cluster".into();
    hooks
        .post(&path, &missing, handler.timeout_seconds)
        .await
        .unwrap();
    // And the Cluster's deletion, so that RemoveAgent answers an uninstall phase.
    env.start_deletion().await.unwrap();
    let bcd = Hook::BeforeClusterDelete;
    let bcd_handler = handlers[bcd.name()].clone();
    let bcd_body = hook_request(&bcd, CapiShape::V1_14, &stored, &BTreeMap::new());
    hooks
        .post(
            &hook_path(&bcd, &bcd_handler.name),
            &bcd_body,
            bcd_handler.timeout_seconds,
        )
        .await
        .unwrap();
    not_tls(gateway.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    not_tls(env.executor.addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let executor_ca = std::fs::read(env.executor.pki.client_dir().join("ca.crt")).unwrap();
    without_client_certificate(env.executor.addr, &executor_ca).await;

    let gateway_text = wait_for(
        &gateway.metrics,
        "konnector_gateway_tls_handshake_failures_total{",
    )
    .await;
    wait_for(&gateway.metrics, "konnector_gateway_executor_up 1").await;
    // The real rustls error, as tokio-rustls wraps it, is classified (not just a unit-test stand-in).
    let executor_text = wait_for(
        &executor_metrics,
        "konnector_executor_tls_handshake_failures_total{reason=\"no_client_certificate\"} 1",
    )
    .await;
    // The reconciler's metrics appear once it has made a pass: a reconciling executor beside the first one (the
    // Cluster is being deleted by now, so its pass is a skip, which is counted like any other).
    let reconciling = start_reconciling_executor(
        &env.mgmt,
        ExecutorConfig::default(),
        fast_reconcile("prom-reconciler"),
    )
    .await
    .unwrap();
    let reconciler_text = wait_for(
        reconciling.metrics.registry(),
        "konnector_executor_reconciles_total{",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let lint = run_promtool(&["check", "metrics"], dir.path(), Some(&reconciler_text));
    assert!(
        lint.trim().is_empty(),
        "promtool check metrics on the reconciling executor:\n{lint}\n{reconciler_text}"
    );
    assert!(reconciler_text.contains("konnector_executor_reconciler_leader 1"));

    let gateway_text = {
        let _ = gateway_text;
        scrape(&gateway.metrics, "text/plain;version=0.0.4").await.1
    };

    for (who, text) in [("gateway", &gateway_text), ("executor", &executor_text)] {
        let dir = tempfile::tempdir().unwrap();
        let lint = run_promtool(&["check", "metrics"], dir.path(), Some(text));
        assert!(
            lint.trim().is_empty(),
            "promtool check metrics on the {who}:\n{lint}\n{text}"
        );
        let problems = convention_violations(text);
        assert!(problems.is_empty(), "{who}: {problems:#?}\n{text}");
        assert_buckets_fit_hook_latencies(text, who);
        // Both formats carry the same samples (OpenMetrics adds nothing but its own comments).
        let (content_type, openmetrics) = scrape(
            if who == "gateway" {
                &gateway.metrics
            } else {
                &executor_metrics
            },
            PROMETHEUS_ACCEPT,
        )
        .await;
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
        let om = samples(&openmetrics);
        let classic = samples(text);
        // Counters may have moved between the two scrapes; compare the series, not the values.
        let series = |s: &BTreeSet<String>| -> BTreeSet<String> {
            s.iter()
                .filter_map(|l| l.rsplit_once(' ').map(|(k, _)| k.to_owned()))
                .filter(|k| !k.contains("executor_up") && !k.contains("connections"))
                .collect()
        };
        assert_eq!(series(&om), series(&classic), "{who}: the two formats disagree");
    }

    // The dashboard and the alert rules read only what the binaries export.
    let exported = exported_names(&[&gateway_text, &executor_text, &reconciler_text]);
    let dashboard: Value = serde_json::from_slice(
        &std::fs::read(tools::chart_dir().join("files/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "{queries:#?}");
    assert_queries_use_exported_metrics("the chart's files/grafana-dashboard.json", &queries, &exported);
    let (rule, _) = rendered_rule_groups(&["metrics.prometheusRule.enabled=true"]);
    let rule_exprs: Vec<String> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["expr"].as_str().unwrap().to_owned())
        .collect();
    assert_queries_use_exported_metrics("the PrometheusRule", &rule_exprs, &exported);

    // What an operator alerts on is there, with its labels.
    for needle in [
        "konnector_build_info{component=\"gateway\",version=\"",
        "konnector_gateway_hook_requests_total{hook=\"AfterControlPlaneInitialized\",status=\"Success\"} 1",
        "konnector_gateway_hook_requests_total{hook=\"AfterControlPlaneInitialized\",status=\"Failure\"} 1",
        "konnector_gateway_executor_requests_total{method=\"ApplyAgent\",code=\"OK\",answered_by=\"executor\"} 1",
        "konnector_gateway_executor_requests_total{method=\"ApplyAgent\",code=\"FAILED_PRECONDITION\",answered_by=\"executor\"} 1",
        "konnector_gateway_executor_request_duration_seconds_count{method=\"ApplyAgent\"} 2",
        "konnector_gateway_executor_requests_total{method=\"RemoveAgent\",code=\"OK\",answered_by=\"executor\"} 1",
        "konnector_gateway_executor_up 1",
        "konnector_gateway_tls_handshake_failures_total{reason=\"protocol\"} 1",
    ] {
        assert!(gateway_text.contains(needle), "{needle} in\n{gateway_text}");
    }
    // The standard process collector, in both binaries, as every Prometheus client library names it.
    for text in [&gateway_text, &executor_text] {
        for family in [
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_open_fds gauge",
            "# TYPE process_max_fds gauge",
            "# TYPE process_start_time_seconds gauge",
        ] {
            assert!(text.contains(family), "{family} in\n{text}");
        }
        assert!(
            value(text, "process_resident_memory_bytes ").is_some_and(|v| v > 0.0),
            "{text}"
        );
    }
    for needle in [
        "konnector_build_info{component=\"executor\",version=\"",
        "konnector_executor_rpc_duration_seconds_count{method=\"ApplyAgent\"} 2",
        "konnector_executor_kube_request_duration_seconds_count{kube_cluster=\"management\",verb=\"get\"}",
        "konnector_executor_kube_request_duration_seconds_count{kube_cluster=\"workload\",verb=\"patch\"}",
        "konnector_executor_prism_central_preflights_total{outcome=\"",
        // One hook checked Prism Central, with its own probe; none is under way any more.
        "konnector_executor_prism_central_checks_total{result=\"",
        "konnector_executor_prism_central_probes_in_flight 0",
        "konnector_executor_tls_handshake_failures_total{reason=\"protocol\"} 1",
        "konnector_executor_grpc_connections_accepted_total ",
        "konnector_executor_uninstall_phases_total{phase=\"UNINSTALL_PHASE_",
        "konnector_executor_rpc_duration_seconds_count{method=\"RemoveAgent\"} 1",
    ] {
        assert!(executor_text.contains(needle), "{needle} in\n{executor_text}");
    }
    // The preflight failed (the name does not resolve here), and says how, not where.
    assert!(
        value(
            &executor_text,
            "konnector_executor_prism_central_preflights_total{outcome=\"PASSED"
        )
        .is_none(),
        "{executor_text}"
    );
    // Every certificate in use has an expiry in the future.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for (text, family, roles) in [
        (
            &gateway_text,
            "konnector_gateway_certificate_expiry_timestamp_seconds",
            &["server", "client", "server_ca"][..],
        ),
        (
            &executor_text,
            "konnector_executor_certificate_expiry_timestamp_seconds",
            &["server", "client_ca"][..],
        ),
    ] {
        for role in roles {
            let expiry = value(text, &format!("{family}{{role=\"{role}\"}} "))
                .unwrap_or_else(|| panic!("no {family} for role {role}:\n{text}"));
            assert!(expiry > now, "{family}{{role={role}}} = {expiry}, now {now}");
        }
    }
}

/// The chart's PrometheusRule, rendered with `sets`, as the `groups:` document promtool reads.
fn rendered_rule_groups(sets: &[&str]) -> (Value, String) {
    let docs = tools::render_chart(NS, sets, &["templates/prometheusrule.yaml"]).unwrap();
    let rule = docs
        .into_iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("no PrometheusRule rendered");
    let groups = serde_json::json!({"groups": rule["spec"]["groups"]});
    (rule, serde_yaml_ng::to_string(&groups).unwrap())
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let (rule, groups) = rendered_rule_groups(&["metrics.prometheusRule.enabled=true"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), &groups).unwrap();
    let tests_file = tools::repo_root().join("tests/prometheus/rules_test.yaml");
    let unit_tests = std::fs::read_to_string(&tests_file).unwrap();
    std::fs::write(dir.path().join("rules_test.yaml"), &unit_tests).unwrap();

    let checked = run_promtool(&["check", "rules", "rules.yaml"], dir.path(), None);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run_promtool(&["test", "rules", "rules_test.yaml"], dir.path(), None);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Every alert is unit-tested both ways (fires; stays quiet) and has a runbook line in docs/observability.md.
    let doc = std::fs::read_to_string(tools::repo_root().join("docs/observability.md")).unwrap();
    let runbook = &doc[doc
        .find("## Alerts and dashboards")
        .expect("docs/observability.md has no Alerts section")..];
    let alerts: Vec<&str> = rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert!(alerts.len() >= 7, "{alerts:?}");
    for alert in &alerts {
        let cases: Vec<&str> = unit_tests
            .split("alertname: ")
            .skip(1)
            .filter(|c| c.starts_with(&format!("{alert}\n")))
            .collect();
        assert!(
            cases.iter().any(|c| c.contains("exp_labels")),
            "no unit test where {alert} fires"
        );
        assert!(
            cases.iter().any(|c| c.contains("exp_alerts: []")),
            "no unit test where {alert} stays quiet"
        );
        assert!(
            runbook.contains(&format!("**{alert}**")),
            "no runbook line for {alert} in docs/observability.md"
        );
    }

    // By default every alert links to its runbook line in docs/observability.md, through an anchor it has.
    let base = "https://github.com/mesosphere/konnector/blob/main/docs/observability.md";
    for r in rule["spec"]["groups"][0]["rules"].as_array().unwrap() {
        let alert = r["alert"].as_str().unwrap();
        let anchor = alert.to_lowercase();
        assert_eq!(r["annotations"]["runbook_url"], format!("{base}#{anchor}"), "{r}");
        assert!(
            runbook.contains(&format!("<a id=\"{anchor}\"></a>**{alert}**")),
            "no anchor {anchor} on the runbook line of {alert} in docs/observability.md"
        );
    }
    // The new alerts are there; the Lease alert only with the reconciler.
    for alert in [
        "KonnectorGatewayAbsent",
        "KonnectorTLSHandshakeFailures",
        "KonnectorReconcilerLeaseUnheld",
    ] {
        assert!(alerts.contains(&alert), "{alert} in {alerts:?}");
    }
    let (no_reconciler, _) = rendered_rule_groups(&[
        "metrics.prometheusRule.enabled=true",
        "executor.reconcile.enabled=false",
    ]);
    assert!(
        !no_reconciler["spec"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["alert"] == "KonnectorReconcilerLeaseUnheld"),
        "the Lease alert would fire forever without a reconciler"
    );
    let (unlinked, _) = rendered_rule_groups(&[
        "metrics.prometheusRule.enabled=true",
        "metrics.prometheusRule.runbookURL=",
    ]);
    assert!(
        unlinked["spec"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["annotations"].get("runbook_url").is_none())
    );

    // runbookURL gives every alert a link to its runbook line.
    let (linked, _) = rendered_rule_groups(&[
        "metrics.prometheusRule.enabled=true",
        "metrics.prometheusRule.runbookURL=https://example.com/konnector/README.md",
    ]);
    for r in linked["spec"]["groups"][0]["rules"].as_array().unwrap() {
        let alert = r["alert"].as_str().unwrap();
        assert_eq!(
            r["annotations"]["runbook_url"],
            format!("https://example.com/konnector/README.md#{}", alert.to_lowercase()),
            "{r}"
        );
    }
}
