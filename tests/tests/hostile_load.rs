//! Peak memory of the release binaries the images ship, under a hostile load, against their idle memory.
//!
//! hack/test.sh builds the static release binaries before `cargo test` and passes their directory in
//! `KONNECTOR_STATIC_BIN_DIR` (any release build's directory works, e.g. `target/release`); run on its own, the test
//! builds them with hack/build-static.sh. `--nocapture` shows the numbers.
//!
//! The load, all at once: on the gateway, 200 TLS connections that send nothing, 8 HTTP/2 connections each opening
//! 100 hook streams whose bodies never come, and 64 hook requests with bodies at and over the 2 MiB limit (padded
//! with an array of zeros in a topology variable); on the executor, 300 TCP connections that never start TLS and 512
//! concurrent mTLS status calls. It prints VmRSS idle and VmHWM (peak) for both, and fails if a peak exceeds the
//! chart's memory limit for that pod.

use std::{
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use konnector_proto::v1::{ClusterRef, GetAgentStatusRequest, agent_service_client::AgentServiceClient};
use konnector_tests::{
    capi_stand_in::ExtensionClient,
    gateway_fixture::write_gateway_certs,
    h2_raw::{client_preface, frame, post_header_block},
    pki::MtlsPki,
    real_binaries::{Proc, free_port, memory_kib},
    tools,
};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn release_bin_dir() -> std::path::PathBuf {
    tools::static_bin_dir().unwrap()
}

fn tls_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::needless_update)]
async fn peak_memory_under_hostile_load() {
    konnector_runtime::tls::install_crypto_provider();
    let release = release_bin_dir();
    let (mgmt, _admin) = konnector_tests::management_plane("rss").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = MtlsPki::create(&dir.path().join("mtls")).unwrap();
    let (gateway_ca, serving) = write_gateway_certs(&dir.path().join("serving")).unwrap();
    let (grpc, exec_admin, https, gw_admin) = (free_port(), free_port(), free_port(), free_port());
    let server = pki.server_dir();
    let client = pki.client_dir();
    let p = |p: std::path::PathBuf| p.display().to_string();

    let executor = Proc(
        Command::new(release.join("konnector-executor"))
            .args(["--listen", &format!("127.0.0.1:{grpc}")])
            .args(["--admin-listen", &format!("127.0.0.1:{exec_admin}")])
            .args([
                "--tls-cert",
                &p(server.join("tls.crt")),
                "--tls-key",
                &p(server.join("tls.key")),
            ])
            .args(["--client-ca", &p(server.join("ca.crt"))])
            .args(["--kubeconfig", &p(mgmt.kubeconfig_path())])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let gateway = Proc(
        Command::new(release.join("konnector-gateway"))
            .args(["--listen", &format!("127.0.0.1:{https}")])
            .args(["--admin-listen", &format!("127.0.0.1:{gw_admin}")])
            .args([
                "--tls-cert",
                &p(serving.cert.clone()),
                "--tls-key",
                &p(serving.key.clone()),
            ])
            .args(["--executor-url", &format!("https://127.0.0.1:{grpc}")])
            .args(["--executor-ca", &p(client.join("ca.crt"))])
            .args(["--executor-client-cert", &p(client.join("tls.crt"))])
            .args(["--executor-client-key", &p(client.join("tls.key"))])
            .args(["--capi-version", "v1.14"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let gw_addr: std::net::SocketAddr = format!("127.0.0.1:{https}").parse().unwrap();
    let exec_addr: std::net::SocketAddr = format!("127.0.0.1:{grpc}").parse().unwrap();
    let exec_addr_admin: std::net::SocketAddr = format!("127.0.0.1:{exec_admin}").parse().unwrap();
    let hooks = ExtensionClient::new(&format!("https://127.0.0.1:{https}"), &gateway_ca).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while hooks.discover().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Discovery needs no executor; the hooks below do.
    konnector_tests::real_binaries::until_ready(exec_addr_admin, "the executor", Duration::from_secs(60))
        .await;
    // One real call each way, then let both settle.
    let acpi = "/hooks.runtime.cluster.x-k8s.io/v1alpha1/aftercontrolplaneinitialized/konnector-acpi";
    let unconfigured = serde_json::json!({
        "apiVersion": "hooks.runtime.cluster.x-k8s.io/v1alpha1", "kind": "AfterControlPlaneInitializedRequest",
        "cluster": {"metadata": {"name": "c", "namespace": "n"}},
    });
    assert!(hooks.post(acpi, &unconfigured, 10).await.unwrap().is_done());
    let endpoint = konnector_gateway::ExecutorEndpoint {
        url: format!("https://127.0.0.1:{grpc}"),
        transport: konnector_gateway::ExecutorTransport::Tls {
            ca: client.join("ca.crt"),
            client_identity: Some((client.join("tls.crt"), client.join("tls.key"))),
            server_name: None,
        },
    };
    let channel = konnector_gateway::client::channel(&endpoint, Duration::from_secs(5)).unwrap();
    let status = |channel: tonic::transport::Channel| async move {
        AgentServiceClient::new(channel)
            .get_agent_status(GetAgentStatusRequest {
                cluster: Some(ClusterRef {
                    namespace: "clusters".into(),
                    name: "absent".into(),
                    ..Default::default()
                }),
            })
            .await
    };
    let _ = status(channel.clone()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (gw_idle, _) = memory_kib(gateway.0.id());
    let (exec_idle, _) = memory_kib(executor.0.id());

    // --- The load. ---
    let config = tls_config(&gateway_ca);
    let mut held = Vec::new();
    for _ in 0..200 {
        if let Ok(tls) = tls_connect(gw_addr, config.clone()).await {
            held.push(tls);
        }
    }
    let idle_connections = held.len();
    let mut floods = Vec::new();
    for _ in 0..8 {
        let config = config.clone();
        floods.push(tokio::spawn(async move {
            let Ok(mut tls) = tls_connect(gw_addr, config).await else {
                return 0;
            };
            let mut out = client_preface();
            let block = post_header_block(acpi, &[]);
            for i in 0..100u32 {
                out.extend(frame(1, 0x4, 2 * i + 1, &block));
            }
            let _ = tls.write_all(&out).await;
            let mut sink = vec![0u8; 65536];
            let mut read = 0;
            while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(3), tls.read(&mut sink)).await {
                if n == 0 {
                    break;
                }
                read += n;
            }
            read
        }));
    }
    let limit = 2 * 1024 * 1024;
    let mut bodies = Vec::new();
    // The padding is a real topology variable, an array of zeros: what a decoder that builds a tree of every
    // variable pays for most (a field serde skips would cost nothing to decode).
    let mut padded = unconfigured.clone();
    padded["cluster"]["spec"] =
        serde_json::json!({"topology": {"variables": [{"name": "padding", "value": []}]}});
    let base = serde_json::to_string(&padded).unwrap();
    for i in 0..64usize {
        let hooks = hooks.clone();
        // Half just under the limit (valid, answered), half just over (refused after the limit).
        let size = if i % 2 == 0 { limit - 1 } else { limit + 1 };
        // "[]" becomes "[0,0,…,0]" (n zeros add 2n - 1 bytes), then spaces make up the exact size.
        let zeros = (size - base.len()).div_ceil(2);
        let mut body = base.replacen("[]", &format!("[{}0]", "0,".repeat(zeros - 1)), 1);
        body.insert_str(body.len() - 1, &" ".repeat(size - body.len()));
        assert_eq!(body.len(), size);
        bodies.push(tokio::spawn(async move {
            hooks
                .post_raw(acpi, body.into_bytes(), 10, &[])
                .await
                .map(|a| a.status)
        }));
    }
    let mut silent = Vec::new();
    for _ in 0..300 {
        if let Ok(tcp) = tokio::net::TcpStream::connect(exec_addr).await {
            silent.push(tcp);
        }
    }
    let mut calls = Vec::new();
    for i in 0..512 {
        let channel = if i % 2 == 0 {
            channel.clone()
        } else {
            konnector_gateway::client::channel(&endpoint, Duration::from_secs(5)).unwrap()
        };
        calls.push(tokio::spawn(status(channel)));
    }
    let answered = futures::future::join_all(bodies)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(Ok(200))))
        .count();
    // Uploads waiting for a request permit must not stall the ones holding one (HTTP/2 flow control).
    assert_eq!(answered, 64, "big-body requests went unanswered");
    let flood_bytes: usize = futures::future::join_all(floods)
        .await
        .into_iter()
        .map(|r| r.unwrap_or(0))
        .sum();
    let calls_done = futures::future::join_all(calls).await.len();
    let (gw_now, gw_peak) = memory_kib(gateway.0.id());
    let (exec_now, exec_peak) = memory_kib(executor.0.id());
    drop(held);
    drop(silent);
    // Both still serve.
    assert!(hooks.post(acpi, &unconfigured, 10).await.unwrap().is_done());
    assert!(
        konnector_gateway::client::is_serving(channel, Duration::from_secs(10)).await,
        "the executor stopped serving"
    );

    let report = serde_json::json!({
        "gateway": {"idle_rss_kib": gw_idle, "rss_after_load_kib": gw_now, "peak_rss_kib": gw_peak},
        "executor": {"idle_rss_kib": exec_idle, "rss_after_load_kib": exec_now, "peak_rss_kib": exec_peak},
        "load": {"gateway_idle_tls_connections": idle_connections, "flood_bytes_read": flood_bytes,
                 "big_bodies_answered_200": answered, "executor_silent_tcp": 300, "executor_calls": calls_done},
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert!(
        gw_peak < 128 * 1024,
        "gateway peak {gw_peak} KiB exceeds its 128 MiB limit"
    );
    assert!(
        exec_peak < 256 * 1024,
        "executor peak {exec_peak} KiB exceeds its 256 MiB limit"
    );
}
