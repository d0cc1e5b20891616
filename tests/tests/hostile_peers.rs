//! Hostile peers against the real binaries (issue 25, items 2, 3, 4 and part of 9): slow uploads, idle admin
//! connections by the thousand, JSON built to amplify, and a SIGTERM in the middle of a hook. Each test starts the
//! real `konnector-gateway` and `konnector-executor` processes ([`RealPair`]; binaries from
//! `KONNECTOR_STATIC_BIN_DIR`, else hack/build-static.sh) on real API servers, asserts behaviour, and prints what
//! it measured (`--nocapture` shows it). No assertion is a wall-clock bound.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use konnector_executor::ExecutorConfig;
use konnector_tests::{
    capi_stand_in::{CapiShape, Hook, HookAnswer, hook_path, hook_request},
    executor_fixture::{ExecutorEnv, TEST_CLUSTER, TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, executor_env},
    h2_raw::{client_preface, frame, post_header_block, read_frame},
    real_binaries::{RealPair, http_get_status, memory_kib, open_fds},
    scenario::cluster_spec,
    workload::{ClusterOptions, cluster_resource},
};
use kube::{Api, core::DynamicObject};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const UPGRADE: fn() -> Hook = || Hook::BeforeClusterUpgrade {
    from: "v1.32.4".into(),
    to: "v1.33.0".into(),
};

/// The BeforeClusterUpgrade path the gateway advertises, and the body CAPI 1.14 sends for the live Cluster.
async fn upgrade_call(env: &ExecutorEnv, pair: &RealPair) -> (String, Value) {
    let handlers = pair.hooks.discover().await.unwrap();
    let upgrade = UPGRADE();
    let path = hook_path(&upgrade, &handlers[upgrade.name()].name);
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &cluster_resource("v1beta2"));
    let stored = serde_json::to_value(clusters.get(TEST_CLUSTER).await.unwrap()).unwrap();
    (
        path,
        hook_request(&upgrade, CapiShape::V1_14, &stored, &BTreeMap::new()),
    )
}

/// A Cluster env whose Cluster configures the addon (the spec CAPI would have), with `extra_variables` added.
async fn env_with(name: &str, extra_variables: Vec<Value>) -> ExecutorEnv {
    let mut spec = cluster_spec(TEST_CLUSTER, 6443, TEST_CREDENTIALS_SECRET);
    let variables = spec["topology"]["variables"].as_array_mut().unwrap();
    variables.extend(extra_variables);
    executor_env(
        name,
        ExecutorConfig::default(),
        ClusterOptions {
            spec: Some(spec),
            ..ClusterOptions::initialized()
        },
    )
    .await
    .unwrap()
}

/// One client uploading a hook body a byte at a time.
struct Trickler {
    /// Body bytes sent so far.
    sent: Arc<AtomicUsize>,
    /// Set when the server answered, reset or closed: the trickler is no longer connected and waiting.
    ended: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Trickler {
    /// Connects (HTTP/2 when `h2`, else HTTP/1.1), sends the headers of a POST to `path` announcing `body`, and
    /// then its bytes one every `pace`.
    async fn start(pair: &RealPair, path: &str, body: Vec<u8>, h2: bool, pace: Duration) -> Self {
        let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
        let tls = pair.connect_hooks(alpn).await.expect("a trickler connects");
        let (mut rd, mut wr) = tokio::io::split(tls);
        let (sent, ended, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let target = format!("{path}?timeout=20s");
        let head = if h2 {
            let mut out = client_preface();
            let length = body.len().to_string();
            let block = post_header_block(&target, &[("content-length", length.as_str())]);
            out.extend(frame(1, 0x4, 1, &block));
            out
        } else {
            format!(
                "POST {target} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes()
        };
        wr.write_all(&head).await.expect("a trickler sends its headers");
        let reader = {
            let ended = ended.clone();
            tokio::spawn(async move {
                if h2 {
                    // Settings, window updates and pings are the connection's life; an answer, a reset or a
                    // GOAWAY ends the upload.
                    while let Ok((kind, _, _, _)) = read_frame(&mut rd).await {
                        if matches!(kind, 1 | 3 | 7) {
                            break;
                        }
                    }
                } else {
                    let mut byte = [0u8; 1];
                    let _ = rd.read(&mut byte).await;
                }
                ended.store(true, Ordering::SeqCst);
            })
        };
        let task = {
            let (sent, ended, stop) = (sent.clone(), ended.clone(), stop.clone());
            tokio::spawn(async move {
                for byte in body {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let chunk = if h2 { frame(0, 0, 1, &[byte]) } else { vec![byte] };
                    if wr.write_all(&chunk).await.is_err() || wr.flush().await.is_err() {
                        ended.store(true, Ordering::SeqCst);
                        break;
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(pace).await;
                }
                reader.abort();
            })
        };
        Self {
            sent,
            ended,
            stop,
            task,
        }
    }
}

/// Item 3: 32 clients trickle hook bodies (16 over HTTP/1.1, 16 over HTTP/2, one connection each), twice the
/// gateway's 16 request permits; a real BeforeClusterUpgrade, through the real executor, must answer Success while
/// every trickler is still connected and uploading. Before the fix the tricklers held every permit while their
/// bodies arrived, and the hook waited out its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_bodies_do_not_starve_a_real_hook() {
    konnector_tests::init_test_logging();
    let env = env_with("trickle", vec![]).await;
    // The body read timeout is raised so that only the hook deadline (18 s) could end an upload here: the test is
    // about permits, not about that bound, and must not depend on how fast this machine is.
    let pair = RealPair::start_with_env(
        &env.mgmt.kubeconfig_path(),
        &[],
        &[],
        &[("KONNECTOR_BODY_READ_TIMEOUT", "60s")],
    )
    .await
    .unwrap();
    let (path, body) = upgrade_call(&env, &pair).await;
    let warm = pair.hooks.post(&path, &body, 20).await.unwrap();
    assert!(warm.is_done(), "the first upgrade hook did not succeed: {warm:?}");

    let bytes = serde_json::to_vec(&body).unwrap();
    let mut tricklers = Vec::new();
    for i in 0..32 {
        tricklers.push(
            Trickler::start(
                &pair,
                &path,
                bytes.clone(),
                i % 2 == 1,
                Duration::from_millis(100),
            )
            .await,
        );
    }
    // Every trickler is past its headers and into its body (the gateway is reading all 32 bodies).
    let wait = Instant::now();
    while tricklers.iter().any(|t| t.sent.load(Ordering::SeqCst) < 3) {
        assert!(
            wait.elapsed() < Duration::from_secs(60),
            "the tricklers never got going"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        tricklers.iter().all(|t| !t.ended.load(Ordering::SeqCst)),
        "a trickler was cut off before the hook was sent"
    );

    let started = Instant::now();
    let answer = pair.hooks.post(&path, &body, 20).await.unwrap();
    let latency = started.elapsed();
    let ended_at_answer = tricklers
        .iter()
        .filter(|t| t.ended.load(Ordering::SeqCst))
        .count();
    let sent_at_answer: Vec<usize> = tricklers.iter().map(|t| t.sent.load(Ordering::SeqCst)).collect();
    assert!(
        answer.is_done(),
        "BeforeClusterUpgrade did not answer Success under 32 trickled uploads: {answer:?}"
    );
    assert_eq!(
        ended_at_answer, 0,
        "{ended_at_answer} trickler(s) were no longer connected when the hook answered"
    );
    // And they are still uploading afterwards: the gateway kept reading them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still_uploading = tricklers
        .iter()
        .zip(&sent_at_answer)
        .filter(|(t, before)| !t.ended.load(Ordering::SeqCst) && t.sent.load(Ordering::SeqCst) > **before)
        .count();
    assert_eq!(still_uploading, 32, "tricklers stopped being read");
    for t in &tricklers {
        t.stop.store(true, Ordering::SeqCst);
    }
    for t in tricklers {
        let _ = t.task.await;
    }
    let (gw_rss, gw_peak) = memory_kib(pair.gateway.pid());
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "trickled_uploads": 32,
            "before_cluster_upgrade_latency_ms": latency.as_millis(),
            "answer": answer.message,
            "gateway": {"rss_kib": gw_rss, "peak_rss_kib": gw_peak},
        }))
        .unwrap()
    );
}

/// Item 4: sixteen 2 MiB hook bodies at once, each carrying one array of zeros in a topology variable, for a
/// live Cluster that itself carries a 1 MiB array of zeros in a variable (so every executor read of it is large
/// too). Every body must be decoded and reach the executor, and the gateway's peak memory must stay well under its
/// 128 Mi limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_arrays_in_variables_do_not_amplify() {
    konnector_tests::init_test_logging();
    let zeros = |n: usize| Value::Array(vec![json!(0); n]);
    // 512 Ki zeros: about 1 MiB of JSON in the stored Cluster (etcd takes up to 1.5 MiB).
    let env = env_with(
        "amplify",
        vec![json!({"name": "padding", "value": zeros(512 * 1024)})],
    )
    .await;
    let pair = RealPair::start(&env.mgmt.kubeconfig_path(), &[], &[])
        .await
        .unwrap();
    let (path, mut body) = upgrade_call(&env, &pair).await;
    // Grow the body's padding variable to just under the gateway's 2 MiB body limit.
    let limit = 2 * 1024 * 1024;
    let base = serde_json::to_vec(&body).unwrap().len();
    let variables = body["cluster"]["spec"]["topology"]["variables"]
        .as_array_mut()
        .unwrap();
    let padding = variables.iter_mut().find(|v| v["name"] == "padding").unwrap();
    let now = serde_json::to_vec(&padding["value"]).unwrap().len();
    padding["value"] = zeros((limit - 4096 - base + now) / 2);
    let bytes = serde_json::to_vec(&body).unwrap();
    assert!(
        bytes.len() < limit && bytes.len() > limit - 8192,
        "body is {} bytes",
        bytes.len()
    );
    let warm = pair.hooks.post(&path, &body, 20).await.unwrap();
    assert!(warm.is_done(), "one 2 MiB upgrade hook did not succeed: {warm:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (gw_idle, _) = memory_kib(pair.gateway.pid());
    let (ex_idle, _) = memory_kib(pair.executor.pid());
    // From here VmHWM is the peak under the load alone (writing 5 to clear_refs resets it).
    for pid in [pair.gateway.pid(), pair.executor.pid()] {
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    }

    let calls: Vec<_> = (0..16)
        .map(|_| {
            let (hooks, path, bytes) = (pair.hooks.clone(), path.clone(), bytes.clone());
            tokio::spawn(async move {
                let raw = hooks.post_raw(&path, bytes, 20, &[]).await.unwrap();
                HookAnswer::parse(raw.status, &raw.body).unwrap()
            })
        })
        .collect();
    let answers: Vec<HookAnswer> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let (gw_after, gw_peak) = memory_kib(pair.gateway.pid());
    let (ex_after, ex_peak) = memory_kib(pair.executor.pid());
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "bodies": 16, "body_bytes": bytes.len(), "stored_cluster_padding_zeros": 512 * 1024,
            "gateway": {"idle_rss_kib": gw_idle, "peak_rss_kib": gw_peak, "rss_after_kib": gw_after,
                        "limit_kib": 128 * 1024},
            "executor": {"idle_rss_kib": ex_idle, "peak_rss_kib": ex_peak, "rss_after_kib": ex_after,
                         "limit_kib": 256 * 1024},
        }))
        .unwrap()
    );
    // Every body was decoded and the executor reached: no answer is about the body. (The sixteen applies for one
    // Cluster are serialised in the executor; on a loaded machine the last may run out of hook deadline, which
    // says nothing about memory, so Success is required of the first call above and counted here.)
    let about_the_body: Vec<_> = answers
        .iter()
        .filter(|a| a.message.contains("request body") || a.message.contains("shape"))
        .collect();
    assert!(
        about_the_body.is_empty(),
        "bodies were refused: {about_the_body:?}"
    );
    let succeeded = answers.iter().filter(|a| a.is_done()).count();
    println!("{succeeded} of 16 answered Success");
    assert!(succeeded > 0, "no hook succeeded: {answers:?}");
    // The bodies themselves are 16 × 2 MiB (the gateway's body budget is 32 MiB); decoding must add little to
    // that. Before, the variables' trees grew the gateway by about 90 MiB under this load.
    let growth = gw_peak.saturating_sub(gw_idle);
    assert!(
        growth < 48 * 1024,
        "gateway grew {growth} KiB (idle {gw_idle}, peak {gw_peak}) under sixteen 2 MiB array bodies; the bound is 48 MiB"
    );
    assert!(
        gw_peak < 96 * 1024,
        "gateway peak {gw_peak} KiB is near its 128 MiB limit"
    );
    let growth = ex_peak.saturating_sub(ex_idle);
    assert!(
        growth < 64 * 1024,
        "executor grew {growth} KiB (idle {ex_idle}, peak {ex_peak}) reading a Cluster with a 1 MiB array; the \
         bound is 64 MiB"
    );
}

/// Item 2: 1000 connections on each admin port (half silent, half idle after one request) do not cost either
/// process a file descriptor each, and while they are held the probes, the hook port and the gRPC port all
/// answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_ports_bound_a_thousand_idle_connections() {
    konnector_tests::init_test_logging();
    let (mgmt, _admin) = konnector_tests::management_plane("admin-idle").await.unwrap();
    let pair = RealPair::start(&mgmt.kubeconfig_path(), &[], &[]).await.unwrap();
    let acpi = "/hooks.runtime.cluster.x-k8s.io/v1alpha1/aftercontrolplaneinitialized/konnector-acpi";
    let unconfigured = json!({
        "apiVersion": "hooks.runtime.cluster.x-k8s.io/v1alpha1", "kind": "AfterControlPlaneInitializedRequest",
        "cluster": {"metadata": {"name": "c", "namespace": "n"}},
    });
    assert!(pair.hooks.post(acpi, &unconfigured, 10).await.unwrap().is_done());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (gw_pid, ex_pid) = (pair.gateway.pid(), pair.executor.pid());
    let idle = json!({
        "gateway": {"fds": open_fds(gw_pid), "rss_kib": memory_kib(gw_pid).0},
        "executor": {"fds": open_fds(ex_pid), "rss_kib": memory_kib(ex_pid).0},
    });

    let mut held = Vec::new();
    for admin in [pair.gateway_admin, pair.executor_admin] {
        for i in 0..1000 {
            let Ok(mut tcp) = tokio::net::TcpStream::connect(admin).await else {
                continue;
            };
            if i % 2 == 1 {
                // One request, then silence with the connection kept alive.
                let _ = tcp
                    .write_all(b"GET /livez HTTP/1.1\r\nHost: attacker\r\n\r\n")
                    .await;
            }
            held.push(tcp);
        }
    }
    let connected = held.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let probe = Duration::from_secs(10);
    let gw_livez = http_get_status(pair.gateway_admin, "/livez", probe).await;
    let gw_readyz = http_get_status(pair.gateway_admin, "/readyz", probe).await;
    let ex_livez = http_get_status(pair.executor_admin, "/livez", probe).await;
    let ex_readyz = http_get_status(pair.executor_admin, "/readyz", probe).await;
    let discovery = pair.hooks.discover().await.is_ok();
    let hook = pair
        .hooks
        .post(acpi, &unconfigured, 10)
        .await
        .map(|a| a.is_done());
    let grpc = pair.executor_serving().await;
    let (gw_fds, ex_fds) = (open_fds(gw_pid), open_fds(ex_pid));
    let report = json!({
        "held_connections": connected,
        "idle": idle,
        "under_attack": {
            "gateway": {"fds": gw_fds, "rss_kib": memory_kib(gw_pid).0, "peak_rss_kib": memory_kib(gw_pid).1},
            "executor": {"fds": ex_fds, "rss_kib": memory_kib(ex_pid).0, "peak_rss_kib": memory_kib(ex_pid).1},
        },
        "answers": {"gateway_livez": gw_livez, "gateway_readyz": gw_readyz, "executor_livez": ex_livez,
                    "executor_readyz": ex_readyz, "discovery": discovery, "hook_success": hook.as_ref().ok(),
                    "grpc_serving": grpc},
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    drop(held);
    assert_eq!(connected, 2000, "the test could not open its connections");
    assert_eq!((gw_livez, gw_readyz), (Some(200), Some(200)), "{report}");
    assert_eq!((ex_livez, ex_readyz), (Some(200), Some(200)), "{report}");
    assert!(discovery, "the hook port stopped answering Discovery: {report}");
    assert!(
        matches!(hook, Ok(true)),
        "the hook port stopped answering hooks: {report}"
    );
    assert!(grpc, "the executor's gRPC port stopped serving: {report}");
    // Each admin port keeps at most its 32 connections (plus the probe being served); before the fix every held
    // connection was an open descriptor.
    let bound = |before: &Value| before["fds"].as_u64().unwrap() as usize + 64;
    assert!(
        gw_fds < bound(&idle["gateway"]),
        "gateway holds {gw_fds} fds: {report}"
    );
    assert!(
        ex_fds < bound(&idle["executor"]),
        "executor holds {ex_fds} fds: {report}"
    );
}

/// Item 9: SIGTERM while a BeforeClusterUpgrade is in flight (its body half sent). The gateway stops accepting at
/// once (new connections are refused) and reports not ready, but the in-flight hook completes with Success through
/// the real executor, and the process then exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_in_flight_hook() {
    konnector_tests::init_test_logging();
    let env = env_with("drain", vec![]).await;
    let pair = RealPair::start(&env.mgmt.kubeconfig_path(), &[], &[])
        .await
        .unwrap();
    let (path, body) = upgrade_call(&env, &pair).await;
    assert!(pair.hooks.post(&path, &body, 20).await.unwrap().is_done());
    assert_eq!(
        http_get_status(pair.gateway_admin, "/readyz", Duration::from_secs(10)).await,
        Some(200)
    );

    let bytes = serde_json::to_vec(&body).unwrap();
    let (first, rest) = bytes.split_at(bytes.len() / 2);
    let mut tls = pair.connect_hooks(b"http/1.1").await.unwrap();
    tls.write_all(
        format!(
            "POST {path}?timeout=20s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            bytes.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tls.write_all(first).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    pair.gateway.terminate();
    // New connections are refused once the gateway has stopped accepting.
    let refused = loop {
        match tokio::net::TcpStream::connect(pair.hooks_addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break true,
            _ if signalled.elapsed() > Duration::from_secs(30) => break false,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let refused_after = signalled.elapsed();
    // Readiness is false while it drains (the admin port outlives the hook port).
    let readyz = http_get_status(pair.gateway_admin, "/readyz", Duration::from_secs(5)).await;

    tls.write_all(rest).await.unwrap();
    tls.flush().await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), tls.read_to_end(&mut raw))
        .await
        .expect("the in-flight hook was never answered")
        .ok();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, answer) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let answered = HookAnswer::parse(status, answer.as_bytes());
    let answered_after = signalled.elapsed();
    let mut gateway = pair.gateway;
    let exit = gateway.exit_by(signalled + Duration::from_secs(60)).await;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "refused_new_connections_after_ms": refused_after.as_millis(),
            "readyz_while_draining": readyz,
            "in_flight_answered_after_ms": answered_after.as_millis(),
            "exit": exit.map(|s| format!("{s}")),
        }))
        .unwrap()
    );
    assert!(
        refused,
        "the gateway kept accepting new connections after SIGTERM"
    );
    assert_eq!(readyz, Some(503), "readiness while draining");
    let answered = answered.unwrap_or_else(|e| panic!("no hook answer ({e}): {text}"));
    assert!(
        answered.is_done(),
        "the in-flight hook did not complete with Success: {answered:?}"
    );
    assert!(
        exit.is_some_and(|s| s.success()),
        "the gateway did not exit cleanly after draining: {exit:?}"
    );
}

/// Item 6: confined mode (`--cluster-namespaces`, the chart's executor.clusterNamespaces, with rights only there).
/// A Cluster elsewhere whose deletion started gets BeforeClusterDelete Success, nothing to uninstall, through the
/// gateway, from an executor that may read nothing there; the same executor without the flag answers Failure (the
/// permission error that blocked every such deletion before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confined_mode_lets_clusters_elsewhere_be_deleted() {
    use konnector_tests::{
        control_plane::ensure_namespace,
        executor_fixture::{EXECUTOR_SERVICE_ACCOUNT, serve_executor},
        gateway_fixture::start_gateway,
        workload::start_cluster_deletion,
    };
    konnector_tests::init_test_logging();
    let (mgmt, admin) = konnector_tests::management_plane("confined").await.unwrap();
    ensure_namespace(&admin, "elsewhere").await.unwrap();
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), "elsewhere", &cluster_resource("v1beta2"));
    let cluster = json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": "c9", "namespace": "elsewhere"},
        "spec": {"topology": {"classRef": {"name": "konnector-test"}, "version": "v1.33.0", "variables": [
            {"name": "clusterConfig", "value": {"addons": {"konnectorAgent": {}}}}]}},
    });
    clusters
        .patch(
            "c9",
            &kube::api::PatchParams::apply("konnector-test").force(),
            &kube::api::Patch::Apply(&cluster),
        )
        .await
        .unwrap();
    start_cluster_deletion(&admin, "elsewhere", "c9").await.unwrap();
    let stored = serde_json::to_value(clusters.get("c9").await.unwrap()).unwrap();
    let body = hook_request(
        &Hook::BeforeClusterDelete,
        CapiShape::V1_14,
        &stored,
        &BTreeMap::new(),
    );
    let path = "/hooks.runtime.cluster.x-k8s.io/v1alpha1/beforeclusterdelete/konnector-bcd";
    // The executor's ServiceAccount with no binding at all: in confined mode it has none outside its namespaces.
    let (namespace, name) = EXECUTOR_SERVICE_ACCOUNT;
    let no_rights = mgmt.service_account_client(namespace, name).await.unwrap();

    let confined = ExecutorConfig {
        cluster_namespaces: vec!["tenants".to_owned(), "team-b".to_owned()],
        ..ExecutorConfig::default()
    };
    let executor = serve_executor(no_rights.clone(), confined).await.unwrap();
    let gateway = start_gateway(&executor.endpoint(), "1.14").await.unwrap();
    let answer = gateway.client().unwrap().post(path, &body, 10).await.unwrap();
    println!("confined: {answer:?}");
    assert!(
        answer.is_done(),
        "BeforeClusterDelete did not let the deletion go on: {answer:?}"
    );
    assert!(
        answer.message.contains("nothing to uninstall") && answer.message.contains("elsewhere"),
        "{answer:?}"
    );
    drop(gateway);
    drop(executor);

    let everywhere = serve_executor(no_rights, ExecutorConfig::default())
        .await
        .unwrap();
    let gateway = start_gateway(&everywhere.endpoint(), "1.14").await.unwrap();
    let before = gateway.client().unwrap().post(path, &body, 10).await.unwrap();
    println!("not confined, same rights: {before:?}");
    assert!(
        !before.is_done(),
        "without --cluster-namespaces the executor cannot read the Cluster, and must not say done: {before:?}"
    );
}

/// Item 9, the executor: SIGTERM while an ApplyAgent is in flight (held up by a slow Prism Central). The executor
/// turns not ready and refuses new gRPC connections at once, the in-flight call completes (the hook answers
/// Success), and the process exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_executor_finish_an_in_flight_call() {
    use konnector_tests::{
        executor_fixture::TEST_PASSWORD,
        prism_central_stand_in::{Behaviour, PrismCentralStandIn},
    };
    konnector_tests::init_test_logging();
    let pc = PrismCentralStandIn::start("admin", TEST_PASSWORD, Behaviour::Normal)
        .await
        .unwrap();
    let env = executor_env(
        "exec-drain",
        ExecutorConfig::default(),
        ClusterOptions {
            cluster_config: Some(pc.cluster_config(TEST_CREDENTIALS_SECRET)),
            ..ClusterOptions::initialized()
        },
    )
    .await
    .unwrap();
    let pair = RealPair::start(
        &env.mgmt.kubeconfig_path(),
        // No shared answer past the check itself: the second call must check Prism Central again, and wait on it.
        &[
            "--prism-central-checks=warn",
            "--prism-central-timeout=15s",
            "--prism-central-check-ttl=0s",
        ],
        &[],
    )
    .await
    .unwrap();
    let (path, body) = upgrade_call(&env, &pair).await;
    let warm = pair.hooks.post(&path, &body, 20).await.unwrap();
    assert!(warm.is_done(), "{warm:?}");
    pc.set_behaviour(Behaviour::Slow(Duration::from_secs(3)));
    let asked = pc.seen().len();
    let call = tokio::spawn({
        let (hooks, path, body) = (pair.hooks.clone(), path.clone(), body.clone());
        async move { hooks.post(&path, &body, 20).await }
    });
    let waited = Instant::now();
    while pc.seen().len() == asked {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the executor never checked Prism Central"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The ApplyAgent call is now waiting on Prism Central.
    let signalled = Instant::now();
    pair.executor.terminate();
    let refused = loop {
        match tokio::net::TcpStream::connect(pair.grpc_addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break true,
            _ if signalled.elapsed() > Duration::from_secs(30) => break false,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let readyz = http_get_status(pair.executor_admin, "/readyz", Duration::from_secs(5)).await;
    let answer = call.await.unwrap().unwrap();
    let answered_after = signalled.elapsed();
    let mut executor = pair.executor;
    let exit = executor.exit_by(signalled + Duration::from_secs(60)).await;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "executor_readyz_while_draining": readyz,
            "in_flight_answered_after_ms": answered_after.as_millis(),
            "exit": exit.map(|s| format!("{s}")),
        }))
        .unwrap()
    );
    assert!(
        refused,
        "the executor kept accepting gRPC connections after SIGTERM"
    );
    assert_eq!(readyz, Some(503), "executor readiness while draining");
    assert!(
        answer.is_done(),
        "the in-flight call did not complete with Success: {answer:?}"
    );
    assert!(
        exit.is_some_and(|s| s.success()),
        "the executor did not exit cleanly after draining: {exit:?}"
    );
}
