//! A hostile workload API server against the real executor binary (issue 25, item 1).
//!
//! A tenant who can write a Cluster's `<cluster>-kubeconfig` Secret points it at a server of their own whose
//! certificate chains to the CA data in that Secret. That server answers every request with an endless body (1 GiB
//! here), with a Status whose `reason` is a MiB of text and terminal escapes, or with a MiB of junk that is not JSON.
//! The executor binary (`KONNECTOR_STATIC_BIN_DIR`, as in hostile_load.rs; any build directory works, e.g.
//! `target/debug`) meets it through a real BeforeClusterUpgrade hook (through an in-process gateway), through direct
//! ApplyAgent and GetAgentStatus calls, and through its reconciler, which reaches the server every second with no
//! hook at all. It must stay alive, answer each call with a short, clear error, keep its resident memory far below
//! the chart's 256 MiB limit, and never write the server's text into its logs. `--nocapture` prints the numbers.

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::Duration,
};

use base64::Engine;
use konnector_gateway::{ExecutorEndpoint, ExecutorTransport};
use konnector_proto::v1::{
    ApplyAgentRequest, ClusterRef, GetAgentStatusRequest, Trigger, agent_service_client::AgentServiceClient,
};
use konnector_tests::{
    capi_stand_in::{CapiShape, ExtensionClient, Hook, hook_path, hook_request},
    executor_fixture::{TEST_PASSWORD, addon_cluster_config},
    gateway_fixture::start_gateway,
    pki::{MtlsPki, TestCa},
    real_binaries::{Proc, free_port, live_memory_kib},
    tools, workload,
};
use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAMESPACE: &str = "tenants";
const CLUSTER: &str = "hostile";
const CREDENTIALS: &str = "hostile-pc-creds";
/// What the endless body is made of: must never appear in the executor's logs or answers.
const BODY_MARKER: &str = "HOSTILE-BODY-";
/// The Status message the server sends with its long reason: never kept either.
const MESSAGE_MARKER: &str = "HOSTILE-MESSAGE-ECHO";
/// The body the endless mode sends at most: 1 GiB.
const ENDLESS_BYTES: u64 = 1 << 30;
/// The chart's memory limit for the executor, and the bound asserted here, far below it.
const CHART_LIMIT_KIB: u64 = 256 * 1024;
const BOUND_KIB: u64 = 200 * 1024;

/// How the hostile server answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Mode {
    /// 200 with an endless chunked body (stops at 1 GiB).
    Endless = 0,
    /// 422 with a Status whose reason is a MiB of text, control characters included.
    HugeReason = 1,
    /// 200 with a MiB (under the limit) of text that is not JSON.
    Junk = 2,
}

/// The hostile API server: TLS with a certificate from `ca`, HTTP/1.1, one answer per connection as `mode` says.
/// Returns its port; counts the bytes it managed to send in `sent` and the requests in `requests`.
async fn hostile_server(
    ca: &TestCa,
    mode: Arc<AtomicU8>,
    sent: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
) -> u16 {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let serving = ca.serving_cert("hostile-apiserver").unwrap();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, mode, sent, requests) =
                (acceptor.clone(), mode.clone(), sent.clone(), requests.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // Read the request head; the body (if any) is left unread.
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                    if head.len() > 64 * 1024 {
                        return;
                    }
                }
                requests.fetch_add(1, Ordering::Relaxed);
                match mode.load(Ordering::Relaxed) {
                    0 => {
                        let start = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
                        if tls.write_all(start.as_bytes()).await.is_err() {
                            return;
                        }
                        let chunk: Vec<u8> = BODY_MARKER.bytes().cycle().take(64 * 1024).collect();
                        let framed = [
                            format!("{:x}\r\n", chunk.len()).into_bytes(),
                            chunk,
                            b"\r\n".to_vec(),
                        ]
                        .concat();
                        let mut total = 0u64;
                        while total < ENDLESS_BYTES {
                            if tls.write_all(&framed).await.is_err() {
                                return;
                            }
                            total += 64 * 1024;
                            sent.fetch_add(64 * 1024, Ordering::Relaxed);
                        }
                        let _ = tls.write_all(b"0\r\n\r\n").await;
                    }
                    1 => {
                        let reason = format!("Bad\n\x1b[2J\u{202e}{}", "R".repeat(1 << 20));
                        let body = serde_json::json!({
                            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 422,
                            "reason": reason, "message": format!("{MESSAGE_MARKER} {TEST_PASSWORD}"),
                        })
                        .to_string();
                        let answer = format!(
                            "HTTP/1.1 422 Unprocessable Entity\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = tls.write_all(answer.as_bytes()).await;
                        sent.fetch_add(body.len() as u64, Ordering::Relaxed);
                    }
                    _ => {
                        let body: String = BODY_MARKER.chars().cycle().take(1 << 20).collect();
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = tls.write_all(answer.as_bytes()).await;
                        sent.fetch_add(body.len() as u64, Ordering::Relaxed);
                    }
                }
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

/// A kubeconfig the executor accepts (inline CA data and token, https) for the server at `port`.
fn kubeconfig(port: u16, ca_pem: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: hostile\ncontexts:\n- name: hostile\n  context: {{cluster: hostile, user: hostile}}\n\
         clusters:\n- name: hostile\n  cluster: {{server: 'https://127.0.0.1:{port}', certificate-authority-data: {ca}}}\n\
         users:\n- name: hostile\n  user: {{token: hostile-token}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_workload_api_server_cannot_exhaust_the_executor() {
    konnector_runtime::tls::install_crypto_provider();
    let bin = tools::static_bin_dir().unwrap();
    let (mgmt, admin) = konnector_tests::management_plane("hostilewl").await.unwrap();

    // The tenant's server and the Cluster that points at it, as CAPI would leave them.
    let ca = TestCa::new("hostile-ca").unwrap();
    let mode = Arc::new(AtomicU8::new(Mode::Endless as u8));
    let (sent, requests) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let port = hostile_server(&ca, mode.clone(), sent.clone(), requests.clone()).await;
    konnector_tests::control_plane::ensure_namespace(&admin, NAMESPACE)
        .await
        .unwrap();
    let version = workload::served_cluster_version(&admin).await.unwrap();
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), NAMESPACE, &workload::cluster_resource(version));
    let cluster = serde_json::json!({
        "apiVersion": format!("cluster.x-k8s.io/{version}"), "kind": "Cluster",
        "metadata": {"name": CLUSTER, "namespace": NAMESPACE, "labels": {workload::CLUSTER_NAME_LABEL: CLUSTER}},
        "spec": {
            "controlPlaneEndpoint": {"host": "127.0.0.1", "port": port},
            "topology": {"classRef": {"name": "konnector-test"}, "version": "v1.33.0",
                "variables": [{"name": "clusterConfig", "value": addon_cluster_config(CREDENTIALS)}]},
        },
    });
    clusters
        .patch(
            CLUSTER,
            &PatchParams::apply("hostile-test").force(),
            &Patch::Apply(&cluster),
        )
        .await
        .unwrap();
    workload::set_control_plane_initialized(&admin, NAMESPACE, CLUSTER)
        .await
        .unwrap();
    workload::put_kubeconfig_secret(&admin, NAMESPACE, CLUSTER, &kubeconfig(port, ca.cert_pem()))
        .await
        .unwrap();
    workload::put_credentials_secret(
        &admin,
        NAMESPACE,
        CREDENTIALS,
        &[("username", "admin"), ("password", TEST_PASSWORD)],
    )
    .await
    .unwrap();
    let stored = clusters.get(CLUSTER).await.unwrap();
    let uid = stored.metadata.uid.clone().unwrap();

    // The executor binary, as the chart runs it (its flags' defaults), reconciling every second; its logs at
    // debug, kube's client included, to show that no level lets the server's text through.
    let dir = tempfile::tempdir().unwrap();
    let pki = MtlsPki::create(&dir.path().join("mtls")).unwrap();
    let (grpc, admin_port) = (free_port(), free_port());
    let p = |p: std::path::PathBuf| p.display().to_string();
    let log_path = dir.path().join("executor.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let executor = Proc(
        Command::new(bin.join("konnector-executor"))
            .args(["--listen", &format!("127.0.0.1:{grpc}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .args(["--tls-cert", &p(pki.server_dir().join("tls.crt"))])
            .args(["--tls-key", &p(pki.server_dir().join("tls.key"))])
            .args(["--client-ca", &p(pki.server_dir().join("ca.crt"))])
            .args(["--kubeconfig", &p(mgmt.kubeconfig_path())])
            .args(["--prism-central-checks", "off"])
            .args(["--reconcile-resync", "1s"])
            .args(["--leader-retry-interval", "500ms"])
            .args(["--leader-lease-duration", "3s"])
            .env(
                "RUST_LOG",
                "info,konnector_executor=debug,kube_client=debug,kube_runtime=debug",
            )
            // Logs go to stdout; both streams are kept.
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap(),
    );
    let pid = executor.0.id();
    let client_dir = pki.client_dir();
    let endpoint = ExecutorEndpoint {
        url: format!("https://127.0.0.1:{grpc}"),
        transport: ExecutorTransport::Tls {
            ca: client_dir.join("ca.crt"),
            client_identity: Some((client_dir.join("tls.crt"), client_dir.join("tls.key"))),
            server_name: None,
        },
    };
    let channel = konnector_gateway::client::channel(&endpoint, Duration::from_secs(5)).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !konnector_gateway::client::is_serving(channel.clone(), Duration::from_secs(2)).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the executor never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut grpc_client = AgentServiceClient::new(channel.clone());
    let cluster_ref = ClusterRef {
        namespace: NAMESPACE.into(),
        name: CLUSTER.into(),
        uid: uid.clone(),
        resource_version: String::new(),
    };
    // Idle: up and serving, before the server is reached (the reconciler reaches it within a second, so this
    // is taken at once).
    let (idle_rss, _) = live_memory_kib(pid).unwrap();

    // 1. The endless body, through a real hook: BeforeClusterUpgrade via an in-process gateway.
    let gateway = start_gateway(&endpoint, "v1.14").await.unwrap();
    let hooks = ExtensionClient::new(&gateway.url(), &gateway.ca_pem).unwrap();
    let bcu = Hook::BeforeClusterUpgrade {
        from: "v1.33.0".into(),
        to: "v1.34.0".into(),
    };
    let body = hook_request(
        &bcu,
        CapiShape::V1_14,
        &serde_json::to_value(&stored).unwrap(),
        &Default::default(),
    );
    let mut hook_answers = Vec::new();
    for _ in 0..3 {
        let answer = hooks
            .post(&hook_path(&bcu, "konnector-bcu"), &body, 20)
            .await
            .unwrap();
        hook_answers.push(answer);
    }
    for answer in &hook_answers {
        assert_eq!(answer.status, "Failure", "{answer:?}");
        assert!(
            answer.message.contains("exceeded the 4 MiB limit"),
            "the hook answer does not say what happened: {answer:?}"
        );
        assert!(answer.message.len() < 2048, "{answer:?}");
    }
    // 2. The same, straight to the executor, sixteen at once.
    let mut calls = Vec::new();
    for _ in 0..16 {
        let mut client = grpc_client.clone();
        let cluster = cluster_ref.clone();
        calls.push(tokio::spawn(async move {
            client
                .apply_agent(ApplyAgentRequest {
                    cluster: Some(cluster),
                    trigger: Trigger::BeforeClusterUpgrade as i32,
                })
                .await
        }));
    }
    for call in futures::future::join_all(calls).await {
        let err = call.unwrap().unwrap_err();
        assert!(
            err.message()
                .contains("the response exceeded the 4 MiB limit and was cut off"),
            "{err:?}"
        );
    }
    // 3. The reconciler meets it every second with no hook; give it a few passes, then read what it kept.
    let passes_from = requests.load(Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = grpc_client
            .get_agent_status(GetAgentStatusRequest {
                cluster: Some(cluster_ref.clone()),
            })
            .await
            .unwrap()
            .into_inner();
        if requests.load(Ordering::Relaxed) >= passes_from + 5 && !status.last_reconcile_result.is_empty() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reconciler never reached the hostile server: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        status.last_reconcile_result.contains("exceeded the 4 MiB limit"),
        "{status:?}"
    );
    assert!(
        status.credentials_error.contains("exceeded the 4 MiB limit"),
        "{status:?}"
    );
    let (after_endless_rss, after_endless_peak) = live_memory_kib(pid).expect("the executor died");
    let endless_sent = sent.swap(0, Ordering::Relaxed);
    let endless_requests = requests.load(Ordering::Relaxed);

    // 4. A Status whose reason is a MiB of text and escapes: the answer keeps a short, clean reason only.
    mode.store(Mode::HugeReason as u8, Ordering::Relaxed);
    let err = grpc_client
        .apply_agent(ApplyAgentRequest {
            cluster: Some(cluster_ref.clone()),
            trigger: Trigger::BeforeClusterUpgrade as i32,
        })
        .await
        .unwrap_err();
    let message = err.message();
    assert!(message.contains("answered 422 Bad"), "{message}");
    assert!(message.len() < 512, "{} bytes: {message:.200}", message.len());
    assert!(
        !message.contains(MESSAGE_MARKER)
            && !message.chars().any(char::is_control)
            && !message.contains('\u{202e}'),
        "{message:?}"
    );
    support_no_secret(message);

    // 5. Junk under the limit: kube logs such a body whole at WARN; the executor's filter keeps it out.
    mode.store(Mode::Junk as u8, Ordering::Relaxed);
    let err = grpc_client
        .apply_agent(ApplyAgentRequest {
            cluster: Some(cluster_ref.clone()),
            trigger: Trigger::BeforeClusterUpgrade as i32,
        })
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("the API server's answer could not be used"),
        "{err:?}"
    );
    // Let a few reconciler passes meet the junk and the long reason too.
    let from = requests.load(Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while requests.load(Ordering::Relaxed) < from + 3 {
        assert!(tokio::time::Instant::now() < deadline, "no reconciler pass");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    mode.store(Mode::HugeReason as u8, Ordering::Relaxed);
    let from = requests.load(Ordering::Relaxed);
    while requests.load(Ordering::Relaxed) < from + 3 {
        assert!(tokio::time::Instant::now() < deadline, "no reconciler pass");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = grpc_client
        .get_agent_status(GetAgentStatusRequest {
            cluster: Some(cluster_ref.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.last_reconcile_result.len() < 2048 && !status.last_reconcile_result.contains(MESSAGE_MARKER),
        "{:.300}",
        status.last_reconcile_result
    );

    // Still alive and serving, its peak far below the chart's limit.
    let (final_rss, peak) = live_memory_kib(pid).expect("the executor died");
    assert!(
        konnector_gateway::client::is_serving(channel, Duration::from_secs(10)).await,
        "the executor stopped serving"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    // The logs are there (the executor logs each failed request at WARN), and hold none of the server's text.
    assert!(log.contains("request failed"), "no executor log captured");
    assert!(
        !log.contains(BODY_MARKER) && !log.contains(MESSAGE_MARKER) && !log.contains(&"R".repeat(4096)),
        "the executor logged the hostile server's text ({} bytes of log)",
        log.len()
    );
    support_no_secret(&log);
    let report = serde_json::json!({
        "executor": {
            "idle_rss_kib": idle_rss,
            "rss_after_endless_bodies_kib": after_endless_rss,
            "peak_rss_after_endless_bodies_kib": after_endless_peak,
            "final_rss_kib": final_rss,
            "peak_rss_kib": peak,
            "chart_limit_kib": CHART_LIMIT_KIB,
        },
        "hostile_server": {
            "requests": requests.load(Ordering::Relaxed),
            "requests_during_endless_phase": endless_requests,
            "endless_body_bytes_sent": endless_sent,
            "endless_body_offered_per_request": ENDLESS_BYTES,
        },
        "log_bytes": log.len(),
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert!(
        peak < BOUND_KIB,
        "executor peak {peak} KiB is not far below the chart's 256 MiB limit"
    );
    drop(executor);
}

fn support_no_secret(text: &str) {
    konnector_tests::support::assert_no_secret("the executor's answer or log", text, TEST_PASSWORD);
}
