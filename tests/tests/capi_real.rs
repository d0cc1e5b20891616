//! Real CAPI calls konnector (issue 23): every hook here comes from CAPI's own core manager (built from the
//! `sigs.k8s.io/cluster-api` Go module by hack/ensure-capi.sh), which discovered the gateway through the chart's
//! ExtensionConfig. The tests only change the Cluster, as a user would; the recording proxy in front of the
//! gateway says what CAPI sent and what it got back.

use konnector_tests::{
    ControlPlane,
    caaph_stand_in::hcp_resource,
    capi_env::{EXTENSION_CONFIG, EnvOptions, RealCapiEnv, VERSIONS},
    capi_manager::CapiOptions,
    hook_recorder::RecordedCall,
    init_test_logging,
    pki::TestCa,
    scenario::AGENT_NAMESPACE,
    support::assert_no_secret,
    workload,
};
use kube::{
    Api,
    api::{DeleteParams, DynamicObject},
};

const NS: &str = "tenants";
const PASSWORD: &str = "pc-password-real-capi-7f3a";

fn initialized(c: Option<&DynamicObject>) -> bool {
    c.is_some_and(|c| c.data["status"]["initialization"]["controlPlaneInitialized"] == true)
}

fn pending_hooks(c: &DynamicObject) -> String {
    c.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("runtime.cluster.x-k8s.io/pending-hooks"))
        .cloned()
        .unwrap_or_default()
}

async fn hcp_exists(env: &RealCapiEnv, name: &str) -> bool {
    Api::<DynamicObject>::namespaced_with(env.mgmt_client.clone(), NS, &hcp_resource())
        .get_opt(&format!("konnector-agent-{name}"))
        .await
        .ok()
        .flatten()
        .is_some()
}

async fn wait_for<F, Fut>(env: &RealCapiEnv, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + konnector_tests::capi_env::GUARD;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not happen; hooks CAPI called: {:#?}\nCAPI's log:\n{}",
            env.recorder.summary(),
            env.capi.log_tail(40)
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

fn assert_discovered(ec: &DynamicObject) {
    let names: Vec<&str> = ec.data["status"]["handlers"]
        .as_array()
        .expect("status.handlers")
        .iter()
        .filter_map(|h| h["name"].as_str())
        .collect();
    // CAPI qualifies each handler with the ExtensionConfig's name.
    for short in ["konnector-acpi", "konnector-bcu", "konnector-bcd"] {
        let qualified = format!("{short}.{EXTENSION_CONFIG}");
        assert!(
            names.contains(&qualified.as_str()),
            "{qualified} not in {names:?}"
        );
    }
    // CAPI injected the CA from the Secret the chart's annotation names; the tests gave it none.
    assert!(
        ec.data["spec"]["clientConfig"]["caBundle"]
            .as_str()
            .is_some_and(|b| !b.is_empty()),
        "no caBundle injected: {}",
        ec.data["spec"]["clientConfig"]
    );
}

/// The whole life of a Cluster with the addon, driven by CAPI v1.14.2 (the newest served release).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capi_1_14_drives_create_upgrade_delete() {
    lifecycle("v1.14.2").await;
}

/// The same life driven by CAPI v1.13.6, the previous release line (CAPI 1.10 and 1.12 are not served by the
/// module proxy; their request shapes stay with the CAPI stand-in's tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capi_1_13_drives_create_upgrade_delete() {
    lifecycle("v1.13.6").await;
}

/// create → AfterControlPlaneInitialized → the CAAPH stand-in installs → bump the topology version →
/// BeforeClusterUpgrade before the control plane moves → delete → BeforeClusterDelete until retryAfterSeconds is
/// 0 → the Cluster is gone, after the release.
async fn lifecycle(version: &str) {
    init_test_logging();
    let workload_cp = ControlPlane::start("wl-1").await.unwrap();
    let options = EnvOptions {
        capi: CapiOptions {
            version: version.to_owned(),
            ..Default::default()
        },
        ..Default::default()
    };
    let env = RealCapiEnv::start(NS, options).await.unwrap();
    assert_discovered(&env.extension_config().await.unwrap());

    workload::put_credentials_secret(
        &env.mgmt_client,
        NS,
        "wl-1-konnector",
        &[("username", "admin"), ("password", PASSWORD)],
    )
    .await
    .unwrap();
    env.create_cluster(NS, "wl-1", &workload_cp, Some("wl-1-konnector"))
        .await
        .unwrap();

    // CAPI marks AfterControlPlaneInitialized pending at creation, calls it once the provider has initialised the
    // control plane, and clears it on Success.
    wait_acpi_done(&env, "wl-1").await;
    let acpi = env
        .recorder
        .calls_for("aftercontrolplaneinitialized", "tenants/wl-1");
    assert!(!acpi.is_empty(), "CAPI never called AfterControlPlaneInitialized");
    let last = acpi.last().unwrap();
    assert_eq!(last.response["status"], "Success", "{last:#?}");
    assert_eq!(
        last.handler(),
        "konnector-acpi",
        "CAPI calls the short handler name"
    );
    assert!(hcp_exists(&env, "wl-1").await, "no HelmChartProxy after ACPI");
    // What CAPI 1.13 and 1.14 embed: a v1beta2 Cluster with TypeMeta and no status.
    assert_eq!(last.request["cluster"]["apiVersion"], "cluster.x-k8s.io/v1beta2");
    assert!(last.request["cluster"].get("status").is_none());

    // The CAAPH stand-in installs the release on the workload cluster; konnector's Secret is there.
    let wl = workload_cp.client().await.unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(wl.clone(), AGENT_NAMESPACE);
    wait_for(&env, "the agent Secret on the workload cluster", || async {
        secrets.get_opt("konnector-agent").await.ok().flatten().is_some()
    })
    .await;
    let markers: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(wl.clone(), AGENT_NAMESPACE);
    wait_for(&env, "CAAPH stand-in's release", || async {
        markers
            .get_opt("konnector-agent-release")
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;

    // Upgrade: CAPI calls BeforeClusterUpgrade before it changes the control plane's version.
    env.bump_version(NS, "wl-1", VERSIONS.1).await.unwrap();
    wait_for(&env, "control plane at the new version", || async {
        env.control_plane_versions(NS, "wl-1")
            .await
            .is_ok_and(|(spec, status)| spec == VERSIONS.1 && status == VERSIONS.1)
    })
    .await;
    let bcu = env.recorder.calls_for("beforeclusterupgrade", "tenants/wl-1");
    assert!(!bcu.is_empty(), "CAPI upgraded without BeforeClusterUpgrade");
    let first = &bcu[0];
    assert_eq!(first.request["fromKubernetesVersion"], VERSIONS.0);
    assert_eq!(first.request["toKubernetesVersion"], VERSIONS.1);
    assert_eq!(bcu.last().unwrap().response["status"], "Success");
    assert_eq!(bcu.last().unwrap().response["retryAfterSeconds"], 0);

    // Delete: CAPI calls BeforeClusterDelete until it answers 0, then deletes the Cluster.
    env.clusters(NS)
        .delete("wl-1", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_cluster(NS, "wl-1", "Cluster gone", |c| c.is_none())
        .await
        .unwrap();
    let bcd = env.recorder.calls_for("beforeclusterdelete", "tenants/wl-1");
    assert!(bcd.len() >= 2, "BeforeClusterDelete: {bcd:#?}");
    assert!(
        bcd.iter()
            .any(|c| c.response["retryAfterSeconds"].as_u64() > Some(0)),
        "konnector never asked CAPI to wait while CAAPH uninstalled"
    );
    assert_eq!(bcd.last().unwrap().response["retryAfterSeconds"], 0);
    assert!(!hcp_exists(&env, "wl-1").await, "HelmChartProxy left behind");
    assert!(
        markers
            .get_opt("konnector-agent-release")
            .await
            .unwrap()
            .is_none(),
        "the release outlived the Cluster"
    );

    // Whatever CAPI sent and got, the password never crossed the wire (the executor reads it itself).
    let wire = serde_json::to_string(&env.recorder.calls()).unwrap();
    assert_no_secret("hook traffic", &wire, PASSWORD);
    assert_no_secret("CAPI's log", &env.capi.log(), PASSWORD);
    println!("CAPI {version}:");
    print_calls(&env.recorder.calls());
}

async fn wait_acpi_done(env: &RealCapiEnv, name: &str) {
    env.wait_cluster(NS, name, "control plane initialised", initialized)
        .await
        .unwrap();
    env.wait_cluster(NS, name, "AfterControlPlaneInitialized done", |c| {
        c.is_some_and(|c| !pending_hooks(c).contains("AfterControlPlaneInitialized"))
    })
    .await
    .unwrap();
}

/// A Cluster without the addon: CAPI still calls every hook (konnector's ExtensionConfig selects all
/// namespaces), konnector answers Success without writing anything, and BeforeClusterDelete lets go at once.
/// A Cluster whose credentials Secret is missing: ACPI answers Failure, CAPI shows it on the Cluster and retries;
/// once the Secret exists, the retry succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capi_without_addon_and_with_missing_credentials() {
    init_test_logging();
    let workload_cp = ControlPlane::start("wl-shared").await.unwrap();
    let env = RealCapiEnv::start(NS, EnvOptions::default()).await.unwrap();

    env.create_cluster(NS, "plain", &workload_cp, None).await.unwrap();
    wait_acpi_done(&env, "plain").await;
    let acpi = env
        .recorder
        .calls_for("aftercontrolplaneinitialized", "tenants/plain");
    assert_eq!(
        acpi.last().map(|c| c.response["status"].clone()),
        Some("Success".into())
    );
    assert!(
        !hcp_exists(&env, "plain").await,
        "a HelmChartProxy for a Cluster without the addon"
    );
    env.clusters(NS)
        .delete("plain", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_cluster(NS, "plain", "Cluster gone", |c| c.is_none())
        .await
        .unwrap();
    let bcd = env.recorder.calls_for("beforeclusterdelete", "tenants/plain");
    assert_eq!(bcd.len(), 1, "{bcd:#?}");
    assert_eq!(bcd[0].response["retryAfterSeconds"], 0);

    // The addon names a Secret nobody created.
    env.create_cluster(NS, "nocreds", &workload_cp, Some("nocreds-konnector"))
        .await
        .unwrap();
    wait_for(&env, "two failed ACPI calls", || async {
        env.recorder
            .calls_for("aftercontrolplaneinitialized", "tenants/nocreds")
            .iter()
            .filter(|c| c.response["status"] == "Failure")
            .count()
            >= 2
    })
    .await;
    let failure = env
        .recorder
        .calls_for("aftercontrolplaneinitialized", "tenants/nocreds")[0]
        .clone();
    let message = failure.response["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("nocreds-konnector"), "{message}");
    // CAPI keeps the hook pending, and says why on the Cluster.
    let cluster = env
        .wait_cluster(NS, "nocreds", "the failed hook shown in a condition", |c| {
            c.is_some_and(|c| condition_mentions(c, "AfterControlPlaneInitialized"))
        })
        .await
        .unwrap()
        .unwrap();
    assert!(pending_hooks(&cluster).contains("AfterControlPlaneInitialized"));
    println!(
        "conditions while failing: {}",
        cluster.data["status"]["conditions"]
    );
    assert!(!hcp_exists(&env, "nocreds").await);

    workload::put_credentials_secret(
        &env.mgmt_client,
        NS,
        "nocreds-konnector",
        &[("username", "admin"), ("password", PASSWORD)],
    )
    .await
    .unwrap();
    wait_acpi_done(&env, "nocreds").await;
    assert!(
        hcp_exists(&env, "nocreds").await,
        "no HelmChartProxy after the retry"
    );
    print_calls(&env.recorder.calls());
}

fn condition_mentions(c: &DynamicObject, text: &str) -> bool {
    c.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|cond| cond["status"] == "False" && cond["message"].as_str().is_some_and(|m| m.contains(text)))
}

/// The gateway down while a Cluster comes up: CAPI's calls fail, it retries, and once the gateway is back the
/// Cluster converges. Then the executor down during the deletion: BeforeClusterDelete fails, CAPI keeps the
/// Cluster and retries, and the deletion completes once an executor answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capi_rides_out_gateway_and_executor_outages() {
    init_test_logging();
    let workload_cp = ControlPlane::start("wl-outage").await.unwrap();
    let mut env = RealCapiEnv::start(NS, EnvOptions::default()).await.unwrap();
    workload::put_credentials_secret(
        &env.mgmt_client,
        NS,
        "wl-konnector",
        &[("username", "admin"), ("password", PASSWORD)],
    )
    .await
    .unwrap();

    env.stop_gateway().await.unwrap();
    env.create_cluster(NS, "wl", &workload_cp, Some("wl-konnector"))
        .await
        .unwrap();
    wait_for(&env, "two ACPI calls failing at the gateway", || async {
        env.recorder
            .calls_for("aftercontrolplaneinitialized", "tenants/wl")
            .iter()
            .filter(|c| c.status == 503)
            .count()
            >= 2
    })
    .await;
    let pending = env.cluster(NS, "wl").await.unwrap().unwrap();
    assert!(pending_hooks(&pending).contains("AfterControlPlaneInitialized"));
    env.restart_gateway().await.unwrap();
    wait_acpi_done(&env, "wl").await;
    assert!(hcp_exists(&env, "wl").await);

    env.stop_executor().await.unwrap();
    env.clusters(NS)
        .delete("wl", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(&env, "two BCD calls failing without an executor", || async {
        env.recorder
            .calls_for("beforeclusterdelete", "tenants/wl")
            .iter()
            .filter(|c| c.response["status"] == "Failure")
            .count()
            >= 2
    })
    .await;
    assert!(
        env.cluster(NS, "wl").await.unwrap().is_some(),
        "CAPI deleted the Cluster although BeforeClusterDelete failed"
    );
    assert!(hcp_exists(&env, "wl").await);
    env.restart_executor().await.unwrap();
    env.wait_cluster(NS, "wl", "Cluster gone", |c| c.is_none())
        .await
        .unwrap();
    assert!(!hcp_exists(&env, "wl").await, "HelmChartProxy left behind");
    print_calls(&env.recorder.calls());
}

/// The chart's `requireClientCert`: the gateway verifies client certificates, CAPI presents the one given with
/// `--runtime-extension-client-cert-file`/`--runtime-extension-client-key-file`, and discovers and calls it;
/// a client without a certificate is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capi_presents_its_client_certificate() {
    init_test_logging();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("capi-client-ca").unwrap();
    let pair = ca.client_cert("capi-controller-manager").unwrap();
    std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
    std::fs::write(dir.path().join("tls.crt"), &pair.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &pair.key_pem).unwrap();
    let workload_cp = ControlPlane::start("wl-mtls").await.unwrap();
    let options = EnvOptions {
        capi: CapiOptions {
            client_cert: Some((dir.path().join("tls.crt"), dir.path().join("tls.key"))),
            ..Default::default()
        },
        gateway_client_ca: Some(dir.path().join("ca.crt")),
        chart_sets: vec!["gateway.requireClientCert=true".to_owned()],
        ..Default::default()
    };
    let env = RealCapiEnv::start(NS, options).await.unwrap();
    assert_discovered(&env.extension_config().await.unwrap());

    let gateway = env.gateway.as_ref().unwrap();
    let anonymous = gateway.client().unwrap();
    assert!(
        anonymous.discover().await.is_err(),
        "the gateway answered a client without a certificate"
    );

    env.create_cluster(NS, "wl", &workload_cp, None).await.unwrap();
    wait_acpi_done(&env, "wl").await;
    env.clusters(NS)
        .delete("wl", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_cluster(NS, "wl", "Cluster gone", |c| c.is_none())
        .await
        .unwrap();
    // CAPI called the gateway directly (the proxy would present its own certificate), so it recorded nothing.
    assert!(env.recorder.calls().is_empty());
}

fn print_calls(calls: &[RecordedCall]) {
    for c in calls {
        println!(
            "{:>7} ms {} {}?{} {}",
            c.at_millis,
            c.version,
            c.path,
            c.query,
            c.line()
        );
        let keys = |v: &serde_json::Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
        println!(
            "           headers {:?}; request keys {:?}; cluster keys {:?}; annotations {:?}",
            c.headers,
            keys(&c.request),
            keys(&c.request["cluster"]),
            keys(&c.request["cluster"]["metadata"]["annotations"])
        );
    }
}
