//! cert-manager's renewals of the chart's PKI, against the real gateway and executor under hook traffic.
//!
//! cert-manager renews the CA and each leaf on its own schedule and writes one Secret at a time; a leaf's `ca.crt`
//! is the CA certificate current when that leaf was issued, and no Secret ever holds two CAs. The chart's CA keeps
//! its key across renewals (`rotationPolicy: Never`), so every `ca.crt` any peer holds, old or new, verifies every
//! leaf: the first test renews the CA and then every leaf in turn, with hooks flowing all along, and no hook may
//! fail. The second shows why the key must stay: a CA renewed with a new key (cert-manager's default since 1.18)
//! breaks the gateway → executor link as soon as one side's leaf is renewed, until the other side's is too.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use konnector_executor::ExecutorConfig;
use konnector_tests::{
    capi_stand_in::{CapiShape, ExtensionClient, Hook, hook_path, hook_request},
    executor_fixture::{TEST_CLUSTER, TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, executor_env},
    pki::{CertManagerPki, Leaf},
    real_binaries::{Proc, free_port, memory_kib, until_ready},
    scenario::cluster_spec,
    tools,
    workload::{ClusterOptions, cluster_resource},
};
use kube::{Api, core::DynamicObject};
use serde_json::Value;

/// Both real binaries, wired as the chart wires them: each reads the files of its own Secrets.
struct Running {
    gateway: Proc,
    executor: Proc,
    hooks_url: String,
    gateway_admin: SocketAddr,
    executor_admin: SocketAddr,
}

fn start(pki: &CertManagerPki, kubeconfig: &Path) -> Running {
    let bin = tools::static_bin_dir().unwrap();
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let (grpc, executor_admin, hooks, gateway_admin) = (
        addr(free_port()),
        addr(free_port()),
        addr(free_port()),
        addr(free_port()),
    );
    let file = |leaf: Leaf, name: &str| pki.dir(leaf).join(name).display().to_string();
    let executor = Proc(
        Command::new(bin.join("konnector-executor"))
            .args(["--listen", &grpc.to_string()])
            .args(["--admin-listen", &executor_admin.to_string()])
            .args(["--tls-cert", &file(Leaf::ExecutorServer, "tls.crt")])
            .args(["--tls-key", &file(Leaf::ExecutorServer, "tls.key")])
            .args(["--client-ca", &file(Leaf::ExecutorServer, "ca.crt")])
            .args(["--kubeconfig", &kubeconfig.display().to_string()])
            // Hooks only: the fixture's own executor reconciles.
            .args(["--prism-central-checks", "off", "--no-reconcile"])
            // Short, so that each renewal is picked up and the gateway re-handshakes many times meanwhile.
            .args(["--cert-reload-interval", "1s", "--max-connection-age", "1s"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let gateway = Proc(
        Command::new(bin.join("konnector-gateway"))
            .args(["--listen", &hooks.to_string()])
            .args(["--admin-listen", &gateway_admin.to_string()])
            .args(["--tls-cert", &file(Leaf::GatewayServing, "tls.crt")])
            .args(["--tls-key", &file(Leaf::GatewayServing, "tls.key")])
            .args(["--executor-url", &format!("https://{grpc}")])
            .args(["--executor-ca", &file(Leaf::GatewayClient, "ca.crt")])
            .args(["--executor-client-cert", &file(Leaf::GatewayClient, "tls.crt")])
            .args(["--executor-client-key", &file(Leaf::GatewayClient, "tls.key")])
            .args(["--capi-version", "v1.14", "--cert-reload-interval", "1s"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    Running {
        gateway,
        executor,
        hooks_url: format!("https://{hooks}"),
        gateway_admin,
        executor_admin,
    }
}

/// The value of the sample `series` (name and labels, as exposed) on the admin port `addr`.
async fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits until `series` on `addr` reads `value`: the process has loaded the renewed files.
#[allow(clippy::cast_precision_loss)]
async fn until_loaded(addr: SocketAddr, series: &str, value: i64, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if metric(addr, series).await == Some(value as f64) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {series} never showed the renewed certificate ({:?}, want {value})",
            metric(addr, series).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Which process loads `leaf`, and the gauge that shows it.
fn gauge_of(running: &Running, leaf: Leaf) -> (SocketAddr, &'static str) {
    match leaf {
        Leaf::ExecutorServer => (
            running.executor_admin,
            "konnector_executor_certificate_expiry_timestamp_seconds{role=\"server\"}",
        ),
        Leaf::GatewayClient => (
            running.gateway_admin,
            "konnector_gateway_certificate_expiry_timestamp_seconds{role=\"client\"}",
        ),
        Leaf::GatewayServing => (
            running.gateway_admin,
            "konnector_gateway_certificate_expiry_timestamp_seconds{role=\"server\"}",
        ),
    }
}

/// A hook call that reaches the executor (the Cluster has the addon): the path and body of BeforeClusterUpgrade.
async fn upgrade_call(admin: &kube::Client, hooks: &ExtensionClient) -> (String, Value, u64) {
    let handlers = hooks.discover().await.unwrap();
    let upgrade = Hook::BeforeClusterUpgrade {
        from: "v1.32.4".into(),
        to: "v1.33.0".into(),
    };
    let handler = handlers[upgrade.name()].clone();
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), TEST_NAMESPACE, &cluster_resource("v1beta2"));
    let stored = serde_json::to_value(clusters.get(TEST_CLUSTER).await.unwrap()).unwrap();
    (
        hook_path(&upgrade, &handler.name),
        hook_request(&upgrade, CapiShape::V1_14, &stored, &BTreeMap::new()),
        handler.timeout_seconds,
    )
}

/// The chart's memory limit of `component`, in KiB.
fn chart_limit_kib(component: &str) -> u64 {
    let docs = tools::render_chart("konnector-system", &[], &[]).unwrap();
    let limit = tools::find_object(&docs, "Deployment", &format!("konnector-{component}"))["spec"]["template"]
        ["spec"]["containers"][0]["resources"]["limits"]["memory"]
        .as_str()
        .unwrap()
        .to_owned();
    limit.strip_suffix("Mi").unwrap().parse::<u64>().unwrap() * 1024
}

async fn env(name: &str) -> konnector_tests::executor_fixture::ExecutorEnv {
    konnector_tests::init_test_logging();
    konnector_runtime::tls::install_crypto_provider();
    executor_env(
        name,
        ExecutorConfig::default(),
        ClusterOptions {
            spec: Some(cluster_spec(TEST_CLUSTER, 6443, TEST_CREDENTIALS_SECRET)),
            ..ClusterOptions::initialized()
        },
    )
    .await
    .unwrap()
}

async fn until_discovered(url: &str, ca_pem: &str) {
    let hooks = ExtensionClient::new(url, ca_pem).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while hooks.discover().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the real gateway never answered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_renewed_with_its_key_then_every_leaf_in_turn_fails_no_hook() {
    let env = env("ca-renewal").await;
    let dir = tempfile::tempdir().unwrap();
    let mut pki = CertManagerPki::create(dir.path()).unwrap();
    let running = start(&pki, &env.mgmt.kubeconfig_path());
    // CAPI holds the caBundle it was given at install (the serving Secret's ca.crt then) on a long-lived client.
    let installed_bundle = std::fs::read_to_string(pki.dir(Leaf::GatewayServing).join("ca.crt")).unwrap();
    until_discovered(&running.hooks_url, &installed_bundle).await;
    until_ready(running.executor_admin, "the executor", Duration::from_secs(120)).await;
    let capi = ExtensionClient::new(&running.hooks_url, &installed_bundle).unwrap();
    let (path, body, timeout) = upgrade_call(&env.admin, &capi).await;
    let first = capi.post(&path, &body, timeout).await.unwrap();
    assert!(first.is_done(), "{first:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (gateway_pid, executor_pid) = (running.gateway.pid(), running.executor.pid());
    let (gateway_idle, _) = memory_kib(gateway_pid);
    let (executor_idle, _) = memory_kib(executor_pid);

    // Hooks all along, half on CAPI's long-lived client, half on a fresh client trusting the serving Secret's
    // ca.crt as it is now (CAPI re-injects it into the caBundle when the Secret changes): every answer a Success.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let serving_ca = pki.dir(Leaf::GatewayServing).join("ca.crt");
    let traffic = tokio::spawn({
        let (capi, path, body, stop, answered, url) = (
            capi.clone(),
            path.clone(),
            body.clone(),
            stop.clone(),
            answered.clone(),
            running.hooks_url.clone(),
        );
        async move {
            let mut failed = Vec::new();
            let mut fresh = false;
            while !stop.load(Ordering::Relaxed) {
                let client = if fresh {
                    let bundle = std::fs::read_to_string(&serving_ca).unwrap();
                    ExtensionClient::new(&url, &bundle).unwrap()
                } else {
                    capi.clone()
                };
                fresh = !fresh;
                match client.post(&path, &body, timeout).await {
                    Ok(a) if a.is_done() => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failed.push(format!("{other:?}")),
                }
            }
            failed
        }
    });
    // Peak memory, sampled all along (VmHWM at the end covers what the sampling misses).
    let sampler = tokio::spawn({
        let stop = stop.clone();
        async move {
            let (mut gateway, mut executor) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                gateway = gateway.max(memory_kib(gateway_pid).0);
                executor = executor.max(memory_kib(executor_pid).0);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (gateway, executor)
        }
    });
    // After each change: the process has loaded it, and the gateway has re-handshaken with the executor since
    // (it closes connections at 1 s) while answers kept coming.
    let settle = |answered: Arc<AtomicUsize>| async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let seen = answered.load(Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while answered.load(Ordering::Relaxed) < seen + 4 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "hooks stopped being answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };

    // 1. cert-manager renews the CA (same key); no leaf Secret changes, so nothing on disk does.
    pki.renew_ca(false).unwrap();
    let renewed_ca = pki.ca_not_after();
    // 2. Each leaf in turn, from the renewed CA: its Secret now carries the renewed CA as ca.crt, the others
    // still the old one.
    for leaf in Leaf::ALL {
        let not_after = pki.renew(leaf).unwrap();
        let (addr, series) = gauge_of(&running, leaf);
        until_loaded(addr, series, not_after, &format!("{leaf:?}")).await;
        settle(answered.clone()).await;
    }
    // Both processes trust the renewed CA certificate now (their ca.crt files were rewritten with their leaves).
    until_loaded(
        running.executor_admin,
        "konnector_executor_certificate_expiry_timestamp_seconds{role=\"client_ca\"}",
        renewed_ca,
        "executor client CA",
    )
    .await;
    until_loaded(
        running.gateway_admin,
        "konnector_gateway_certificate_expiry_timestamp_seconds{role=\"server_ca\"}",
        renewed_ca,
        "gateway executor CA",
    )
    .await;
    // 3. And the next CA renewal, with leaves renewed in the other order.
    pki.renew_ca(false).unwrap();
    for leaf in Leaf::ALL.into_iter().rev() {
        let not_after = pki.renew(leaf).unwrap();
        let (addr, series) = gauge_of(&running, leaf);
        until_loaded(addr, series, not_after, &format!("{leaf:?}, second round")).await;
        settle(answered.clone()).await;
    }

    stop.store(true, Ordering::Relaxed);
    let failed = traffic.await.unwrap();
    let (gateway_sampled, executor_sampled) = sampler.await.unwrap();
    let (_, gateway_hwm) = memory_kib(gateway_pid);
    let (_, executor_hwm) = memory_kib(executor_pid);
    let answered = answered.load(Ordering::Relaxed);
    eprintln!(
        "ca renewal: {answered} hooks answered, {} failed; RSS KiB gateway idle {gateway_idle} peak {} (limit {}), \
         executor idle {executor_idle} peak {} (limit {})",
        failed.len(),
        gateway_hwm.max(gateway_sampled),
        chart_limit_kib("gateway"),
        executor_hwm.max(executor_sampled),
        chart_limit_kib("executor"),
    );
    assert!(failed.is_empty(), "hooks failed during the renewals: {failed:?}");
    assert!(
        answered >= 24,
        "too little traffic to say anything: {answered} answers"
    );
    assert!(gateway_hwm.max(gateway_sampled) < chart_limit_kib("gateway"));
    assert!(executor_hwm.max(executor_sampled) < chart_limit_kib("executor"));
    // CAPI's caBundle from install still verifies the gateway, whose serving leaf was renewed twice since.
    let last = capi.post(&path, &body, timeout).await.unwrap();
    assert!(last.is_done(), "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_renewed_with_a_new_key_breaks_mtls_until_both_leaves_are_renewed() {
    let env = env("ca-rekey").await;
    let dir = tempfile::tempdir().unwrap();
    let mut pki = CertManagerPki::create(dir.path()).unwrap();
    let running = start(&pki, &env.mgmt.kubeconfig_path());
    let bundle = pki.ca_pem().to_owned();
    until_discovered(&running.hooks_url, &bundle).await;
    until_ready(running.executor_admin, "the executor", Duration::from_secs(120)).await;
    let capi = ExtensionClient::new(&running.hooks_url, &bundle).unwrap();
    let (path, body, timeout) = upgrade_call(&env.admin, &capi).await;
    assert!(capi.post(&path, &body, timeout).await.unwrap().is_done());

    // What cert-manager >= 1.18 does to a CA without rotationPolicy: a new key. Then the executor's leaf is
    // renewed first: the gateway still trusts only the old CA (its client Secret's ca.crt).
    pki.renew_ca(true).unwrap();
    let not_after = pki.renew(Leaf::ExecutorServer).unwrap();
    let (addr, series) = gauge_of(&running, Leaf::ExecutorServer);
    until_loaded(addr, series, not_after, "executor leaf from the new key").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        // The executor closes connections at 1 s; the gateway's next handshake fails.
        let answer = capi.post(&path, &body, timeout).await.unwrap();
        if answer.status == "Failure" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway kept reaching an executor whose CA it does not trust"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Once the gateway's client leaf is renewed too (its Secret then carries the new CA), the link is back,
    // without a restart.
    let not_after = pki.renew(Leaf::GatewayClient).unwrap();
    let (addr, series) = gauge_of(&running, Leaf::GatewayClient);
    until_loaded(addr, series, not_after, "gateway client leaf from the new key").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !capi.post(&path, &body, timeout).await.unwrap().is_done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the link never came back after both leaves were renewed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(running);
}
