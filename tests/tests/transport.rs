//! The gateway → executor transport, end to end with the real binaries' code and real API servers: mTLS with the
//! chart's flags, every certificate and then the CA rotated on disk under hook traffic with no restart, and a
//! gateway that keeps answering Clusters without the addon while the executor is down.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use konnector_executor::ExecutorConfig;
use konnector_tests::{
    capi_stand_in::{CapiShape, ExtensionClient, Hook, hook_path, hook_request},
    executor_fixture::{
        CERT_RELOAD_SECONDS, TEST_CLUSTER, TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, executor_env,
        executor_mgmt_client, serve_executor_with_flags,
    },
    gateway_fixture::{serve_gateway, start_gateway},
    pki::{MtlsPki, ServingCert, TestCa},
    scenario::cluster_spec,
    workload::{ClusterOptions, cluster_resource},
};
use kube::{Api, core::DynamicObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Handshakes with the executor as a fresh client trusting `trust_pem` and presenting `client`, and waits for the
/// server's first HTTP/2 frame (which a server that refused the client certificate never sends). Returns the
/// leaf certificate the executor served.
async fn probe(addr: std::net::SocketAddr, trust_pem: &str, client: &ServingCert) -> anyhow::Result<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(trust_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            CertificateDer::pem_slice_iter(client.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?,
            PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes())?,
        )?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap_or_default()[0].to_vec();
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await?;
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(30), tls.read_exact(&mut head)).await??;
    anyhow::ensure!(head[3] == 4, "expected the server's SETTINGS frame");
    Ok(leaf)
}

/// The leaf the gateway serves to a fresh client.
async fn gateway_leaf(addr: std::net::SocketAddr, ca_pem: &str) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// The executor's current serving leaf, as written on disk.
fn leaf_on_disk(pki: &MtlsPki) -> Vec<u8> {
    let pem = std::fs::read(pki.server_dir().join("tls.crt")).unwrap();
    CertificateDer::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaves_and_then_the_ca_rotate_under_hook_traffic_without_a_restart() {
    konnector_tests::init_test_logging();
    konnector_runtime::tls::install_crypto_provider();
    let env = executor_env(
        "rotation",
        ExecutorConfig::default(),
        ClusterOptions {
            spec: Some(cluster_spec(TEST_CLUSTER, 6443, TEST_CREDENTIALS_SECRET)),
            ..ClusterOptions::initialized()
        },
    )
    .await
    .unwrap();
    // A second executor on the same management plane that rolls its connections every second, so the gateway
    // reconnects (and so handshakes with whatever is on disk) many times while the files change.
    let mut executor = serve_executor_with_flags(
        executor_mgmt_client(&env.mgmt, "default").await.unwrap(),
        ExecutorConfig::default(),
        &["--max-connection-age=1s"],
    )
    .await
    .unwrap();
    // The gateway's serving pair comes from a CA the test keeps, so it can renew the gateway's leaf too.
    let gateway_ca = TestCa::new("gateway-serving-ca").unwrap();
    let serving_dir = tempfile::tempdir().unwrap();
    let write_serving = || {
        let pair = gateway_ca.serving_cert("konnector-gateway").unwrap();
        std::fs::write(serving_dir.path().join("tls.crt"), &pair.cert_pem).unwrap();
        std::fs::write(serving_dir.path().join("tls.key"), &pair.key_pem).unwrap();
        CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    };
    let first_serving = write_serving();
    let files = konnector_gateway::TlsFiles {
        cert: serving_dir.path().join("tls.crt"),
        key: serving_dir.path().join("tls.key"),
        client_ca: None,
    };
    let gateway = serve_gateway(
        &executor.endpoint(),
        "1.14",
        files,
        gateway_ca.cert_pem().to_owned(),
    )
    .await
    .unwrap();
    let hooks = ExtensionClient::new(&gateway.url(), &gateway.ca_pem).unwrap();
    let handlers = hooks.discover().await.unwrap();
    let upgrade = Hook::BeforeClusterUpgrade {
        from: "v1.32.4".into(),
        to: "v1.33.0".into(),
    };
    let handler = handlers[upgrade.name()].clone();
    let path = hook_path(&upgrade, &handler.name);
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &cluster_resource("v1beta2"));
    let stored = serde_json::to_value(clusters.get(TEST_CLUSTER).await.unwrap()).unwrap();
    let body: Value = hook_request(&upgrade, CapiShape::V1_14, &stored, &BTreeMap::new());
    let first = hooks.post(&path, &body, handler.timeout_seconds).await.unwrap();
    assert!(first.is_done(), "{first:?}");

    // Hook traffic for the whole test: every answer must be Success.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn({
        let (hooks, path, body, stop) = (hooks.clone(), path.clone(), body.clone(), stop.clone());
        async move {
            let (mut ok, mut failed) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match hooks.post(&path, &body, handler.timeout_seconds).await {
                    Ok(a) if a.is_done() => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        }
    });

    let reload = Duration::from_millis(CERT_RELOAD_SECONDS * 1000 + 200);
    let old_client = executor.pki.client_pair("old-ca-client").unwrap();
    // After each change: wait out the reload interval (from then on every new handshake on either side uses the
    // files), check the executor serves what is on disk, then wait for the gateway to have reconnected twice.
    async fn settle(
        executor: &konnector_tests::executor_fixture::RunningExecutor,
        reload: Duration,
        step: &str,
    ) {
        tokio::time::sleep(reload).await;
        let client = executor.pki.client_pair("probe").unwrap();
        let served = probe(executor.addr, &executor.pki.trust_pem(), &client)
            .await
            .unwrap_or_else(|e| panic!("{step}: a fresh client with the current files is refused: {e:#}"));
        assert_eq!(
            served,
            leaf_on_disk(&executor.pki),
            "{step}: the executor serves a stale certificate"
        );
        let seen = executor.connections_accepted.get();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while executor.connections_accepted.get() < seen + 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{step}: the gateway never reconnected"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // 1. cert-manager renews every leaf with new keys (same CA): the executor's, the gateway's client pair, and the
    // gateway's serving pair, which CAPI's client (the traffic above, on its open connection, and fresh ones)
    // keeps reaching.
    executor.pki.reissue_leaves().unwrap();
    let second_serving = write_serving();
    assert_ne!(first_serving, second_serving);
    settle(&executor, reload, "leaf renewal").await;
    let served = gateway_leaf(gateway.addr, gateway_ca.cert_pem()).await;
    assert!(served == second_serving, "the gateway serves a stale certificate");
    let fresh = ExtensionClient::new(&gateway.url(), &gateway.ca_pem).unwrap();
    assert!(
        fresh
            .post(&path, &body, handler.timeout_seconds)
            .await
            .unwrap()
            .is_done()
    );
    // 2. A new CA: both sides trust old and new.
    executor.pki.begin_ca_rotation().unwrap();
    settle(&executor, reload, "CA bundle").await;
    // 3. Leaves re-issued by the new CA.
    executor.pki.reissue_leaves().unwrap();
    settle(&executor, reload, "leaves from the new CA").await;
    // 4. The old CA is dropped everywhere.
    executor.pki.finish_ca_rotation().unwrap();
    settle(&executor, reload, "old CA dropped").await;

    // The executor now refuses a client of the old CA: its client CA was reloaded, not just its serving pair.
    let refused = probe(executor.addr, &executor.pki.trust_pem(), &old_client).await;
    assert!(
        refused.is_err(),
        "a client certificate of the dropped CA is still accepted"
    );

    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = traffic.await.unwrap();
    assert!(failed.is_empty(), "hooks failed during rotation: {failed:?}");
    assert!(ok >= 4, "too little traffic to say anything: {ok} answers");
    let last = hooks.post(&path, &body, handler.timeout_seconds).await.unwrap();
    assert!(last.is_done(), "{last:?}");
    drop(gateway);
    let _ = executor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_executor_down_clusters_without_the_addon_still_get_success() {
    konnector_tests::init_test_logging();
    let env = executor_env(
        "exec-down",
        ExecutorConfig::default(),
        ClusterOptions {
            spec: Some(cluster_spec(TEST_CLUSTER, 6443, TEST_CREDENTIALS_SECRET)),
            ..ClusterOptions::initialized()
        },
    )
    .await
    .unwrap();
    let gateway = start_gateway(&env.executor.endpoint(), "1.14").await.unwrap();
    let hooks = ExtensionClient::new(&gateway.url(), &gateway.ca_pem).unwrap();
    let handlers = hooks.discover().await.unwrap();
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &cluster_resource("v1beta2"));
    let configured = serde_json::to_value(clusters.get(TEST_CLUSTER).await.unwrap()).unwrap();
    let mut unconfigured = configured.clone();
    unconfigured["spec"]["topology"]["variables"] = serde_json::json!([]);

    env.executor.stop().await.unwrap();
    assert!(
        gateway.readiness.get(),
        "the gateway stays ready without the executor"
    );
    let upgrade = Hook::BeforeClusterUpgrade {
        from: "v1.32.4".into(),
        to: "v1.33.0".into(),
    };
    for hook in [Hook::AfterControlPlaneInitialized, upgrade] {
        let handler = &handlers[hook.name()];
        let path = hook_path(&hook, &handler.name);
        let body = hook_request(&hook, CapiShape::V1_14, &unconfigured, &BTreeMap::new());
        let answer = hooks.post(&path, &body, handler.timeout_seconds).await.unwrap();
        assert!(answer.is_done(), "{}: {answer:?}", hook.name());
        let body = hook_request(&hook, CapiShape::V1_14, &configured, &BTreeMap::new());
        let answer = hooks.post(&path, &body, handler.timeout_seconds).await.unwrap();
        assert_eq!(answer.status, "Failure", "{}: {answer:?}", hook.name());
        assert!(answer.message.contains("unreachable"), "{answer:?}");
    }
    // BeforeClusterDelete is never skipped on the body's word: it needs the executor.
    let hook = Hook::BeforeClusterDelete;
    let handler = &handlers[hook.name()];
    let body = hook_request(&hook, CapiShape::V1_14, &unconfigured, &BTreeMap::new());
    let answer = hooks
        .post(&hook_path(&hook, &handler.name), &body, handler.timeout_seconds)
        .await
        .unwrap();
    assert_eq!(answer.status, "Failure", "{answer:?}");
    let metrics = gateway.metrics.encode();
    assert!(metrics.contains("konnector_gateway_executor_up"), "{metrics}");
}
