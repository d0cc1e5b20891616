//! The gateway → executor transport, end to end with the real binaries' code and real API servers: a gateway that
//! keeps answering Clusters without the addon while the executor is down. (Certificate renewals under traffic are
//! tests/tests/ca_renewal.rs's, against the real binaries.)

use std::collections::BTreeMap;

use konnector_executor::ExecutorConfig;
use konnector_tests::{
    capi_stand_in::{CapiShape, ExtensionClient, Hook, hook_path, hook_request},
    executor_fixture::{TEST_CLUSTER, TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, executor_env},
    gateway_fixture::start_gateway,
    scenario::cluster_spec,
    workload::{ClusterOptions, cluster_resource},
};
use kube::{Api, core::DynamicObject};

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
