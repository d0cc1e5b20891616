//! Golden end-to-end: every body in tests/golden/<capi>/<hook>.json, replayed over HTTPS through the real gateway
//! into the real executor (under its RBAC) against real API servers, with the CAAPH stand-in playing CAAPH.
//!
//! The bodies are rewritten only where they must point at the harness: Cluster name, namespace, uid, cluster-name
//! label, control-plane endpoint and the credentials Secret name. Everything else is replayed as composed.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use konnector_executor::ExecutorConfig;
use konnector_gateway::catalog::Hook;
use konnector_tests::{
    caaph_stand_in::{CaaphOptions, CaaphStandIn, hcp_resource, hrp_resource},
    executor_fixture::{ExecutorEnv, TEST_CREDENTIALS_SECRET, TEST_PASSWORD, executor_env},
    gateway_fixture, support,
    workload::{self, ClusterOptions},
};
use kube::{
    Api,
    api::{DynamicObject, ListParams},
};
use serde_json::Value;

async fn start_gateway(executor: konnector_gateway::ExecutorEndpoint) -> gateway_fixture::RunningGateway {
    gateway_fixture::start_gateway(&executor, "v1.14").await.unwrap()
}

/// POSTs like CAPI (no Content-Type, `?timeout=`, HTTPS trusting only the gateway's CA) and checks that HTTP/2 was
/// negotiated, as it is with CAPI's client. Returns the status and the raw body.
async fn post(gateway: &gateway_fixture::RunningGateway, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let raw = gateway
        .client()
        .unwrap()
        .post_raw(path, body, 10, &[])
        .await
        .unwrap();
    assert_eq!(raw.version, http::Version::HTTP_2, "the gateway negotiates h2");
    (raw.status, raw.body)
}

/// The golden body's clusterConfig, with the credentials Secret the environment has: what the live Cluster
/// carries, because the executor reads it from there.
fn golden_cluster_config(capi: &str) -> Value {
    let mut body = support::golden_body(capi, Hook::AfterControlPlaneInitialized);
    let vars = body["cluster"]["spec"]["topology"]["variables"].take();
    let mut cc = vars
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "clusterConfig")
        .unwrap()["value"]
        .clone();
    cc["addons"]["konnectorAgent"]["credentials"]["secretRef"]["name"] = TEST_CREDENTIALS_SECRET.into();
    cc
}

async fn hcps(env: &ExecutorEnv) -> Vec<DynamicObject> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(env.admin.clone(), &env.cluster.namespace, &hcp_resource());
    api.list(&ListParams::default()).await.unwrap().items
}

#[tokio::test]
async fn golden_bodies_through_the_real_gateway_and_executor() {
    let logs = support::LogCapture::install("debug,kube=info,hyper=info,h2=info,tower=info", false);
    let env = executor_env(
        "gw-golden",
        ExecutorConfig::default(),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    let _caaph = CaaphStandIn::start(env.admin.clone(), CaaphOptions::default());
    let gateway = start_gateway(env.executor.endpoint()).await;
    let workload = env.workload.client().await.unwrap();
    let mut answers = Vec::new();

    // Discovery first, as CAPI does.
    let (status, body) = post(
        &gateway,
        "/hooks.runtime.cluster.x-k8s.io/v1alpha1/discovery",
        br#"{"apiVersion":"hooks.runtime.cluster.x-k8s.io/v1alpha1","kind":"DiscoveryRequest"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    let discovery: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(discovery["handlers"].as_array().unwrap().len(), 3);

    for capi in ["v1.10", "v1.12", "v1.14"] {
        // One Cluster per shape, since each ends deleted; it carries the golden clusterConfig, which is what the
        // executor reads (the body only names the Cluster).
        let name = format!("golden-{}", capi.replace('.', "-"));
        let cluster = workload::create_workload_cluster(
            &env.admin,
            &env.workload,
            &env.cluster.namespace,
            &name,
            ClusterOptions {
                cluster_config: Some(golden_cluster_config(capi)),
                ..ClusterOptions::initialized()
            },
        )
        .await
        .unwrap();
        // AfterControlPlaneInitialized: HCP on the management cluster, Namespace + Secret on the workload cluster.
        let hook = Hook::AfterControlPlaneInitialized;
        let body = serde_json::to_vec(&support::retarget(
            support::golden_body(capi, hook),
            &cluster,
            TEST_CREDENTIALS_SECRET,
        ))
        .unwrap();
        let (status, raw) = post(&gateway, &hook.path(), body).await;
        let answer: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(
            (status, answer["status"].as_str()),
            (200, Some("Success")),
            "{capi} {hook}: {answer}"
        );
        assert!(
            answer.get("retryAfterSeconds").is_none(),
            "{capi}: ACPI has no retryAfterSeconds"
        );
        answers.push(String::from_utf8(raw).unwrap());
        assert_eq!(hcps(&env).await.len(), 1, "{capi}: one HelmChartProxy after ACPI");
        Api::<Namespace>::all(workload.clone())
            .get("ntnx-system")
            .await
            .unwrap();
        let secret = Api::<Secret>::namespaced(workload.clone(), "ntnx-system")
            .get("konnector-agent")
            .await
            .unwrap();
        let password = secret.data.unwrap().remove("password").unwrap();
        assert_eq!(
            password.0,
            TEST_PASSWORD.as_bytes(),
            "{capi}: credentials copied verbatim"
        );

        // BeforeClusterUpgrade: a re-apply; never blocks.
        let hook = Hook::BeforeClusterUpgrade;
        let body = serde_json::to_vec(&support::retarget(
            support::golden_body(capi, hook),
            &cluster,
            TEST_CREDENTIALS_SECRET,
        ))
        .unwrap();
        let (status, raw) = post(&gateway, &hook.path(), body).await;
        let answer: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(
            (
                status,
                answer["status"].as_str(),
                answer["retryAfterSeconds"].as_i64()
            ),
            (200, Some("Success"), Some(0)),
            "{capi} {hook}: {answer}"
        );
        answers.push(String::from_utf8(raw).unwrap());
        assert_eq!(hcps(&env).await.len(), 1);

        // Let the CAAPH stand-in install the release, so there is an uninstall to wait for.
        tokio::time::timeout(support::HANG_GUARD, async {
            loop {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(env.admin.clone(), &env.cluster.namespace, &hrp_resource());
                let hrps = api.list(&ListParams::default()).await.unwrap().items;
                if hrps.iter().any(|h| h.data["status"]["status"] == "deployed") {
                    break;
                }
                if std::env::var("GW_DEBUG").is_ok() {
                    eprintln!(
                        "HRPs: {:?}",
                        hrps.iter().map(|h| h.data["status"].clone()).collect::<Vec<_>>()
                    );
                    eprintln!(
                        "HCPs: {:?}",
                        hcps(&env)
                            .await
                            .iter()
                            .map(|h| (h.metadata.name.clone(), h.data["status"].clone()))
                            .collect::<Vec<_>>()
                    );
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            let captured = logs.text();
            let stand_in: Vec<&str> = captured.lines().filter(|l| l.contains("stand-in")).collect();
            panic!("{capi}: the CAAPH stand-in never installed the release; its log: {stand_in:#?}")
        });

        // BeforeClusterDelete: Success + retryAfterSeconds > 0 while CAAPH uninstalls, then Success + 0, HCP gone.
        // CAPI calls it once the Cluster's deletion has begun.
        workload::start_cluster_deletion(&env.admin, &cluster.namespace, &name)
            .await
            .unwrap();
        let hook = Hook::BeforeClusterDelete;
        let body = serde_json::to_vec(&support::retarget(
            support::golden_body(capi, hook),
            &cluster,
            TEST_CREDENTIALS_SECRET,
        ))
        .unwrap();
        let mut waited = 0;
        tokio::time::timeout(support::HANG_GUARD, async {
            loop {
                let (status, raw) = post(&gateway, &hook.path(), body.clone()).await;
                let answer: Value = serde_json::from_slice(&raw).unwrap();
                answers.push(String::from_utf8(raw).unwrap());
                assert_eq!(
                    (status, answer["status"].as_str()),
                    (200, Some("Success")),
                    "{capi}: {answer}"
                );
                match answer["retryAfterSeconds"].as_i64() {
                    Some(0) => break,
                    Some(n) if n > 0 => waited += 1,
                    other => panic!("{capi}: BCD must always carry retryAfterSeconds >= 0, got {other:?}"),
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{capi}: BeforeClusterDelete never let go"));
        assert!(
            waited > 0,
            "{capi}: the uninstall should have been waited for at least once"
        );
        assert!(
            hcps(&env).await.is_empty(),
            "{capi}: HelmChartProxy gone after BCD"
        );
        workload::finish_cluster_deletion(&env.admin, &cluster.namespace, &name)
            .await
            .unwrap();
    }

    // Secret hygiene: the Prism Central password is in no answer and in no log line.
    for a in &answers {
        support::assert_no_secret("a hook answer", a, TEST_PASSWORD);
    }
    let captured = logs.text();
    assert!(captured.contains("hook answered"), "gateway logs were captured");
    support::assert_no_secret("the logs", &captured, TEST_PASSWORD);
}
