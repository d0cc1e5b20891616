//! The sandbox's scenario as an end-to-end test: several clusters in parallel, through two real gateways and the
//! real executor, against real API servers, for every CAPI request shape.

use std::sync::Arc;

use konnector_tests::{
    capi::CapiShape,
    sandbox::{Sandbox, SandboxOptions},
};

async fn play(shape: CapiShape, clusters: usize, rotate_credentials: bool) {
    konnector_tests::init_test_logging();
    let sandbox = Sandbox::start(SandboxOptions {
        clusters,
        shape,
        rotate_credentials,
        state_dir: None,
        bad_pc_password: false,
    })
    .await
    .unwrap();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sandbox.state_dir().join("sandbox.json")).unwrap()).unwrap();
    assert_eq!(state["gatewayUrls"].as_array().unwrap().len(), 2);
    assert_eq!(state["workloadKubeconfigs"].as_object().unwrap().len(), clusters);

    let summary = sandbox.play(Arc::new(|_: &str, _: &_| {})).await.unwrap();
    let json = serde_json::to_string_pretty(&summary).unwrap();
    assert!(summary.ok, "the lifecycle failed:\n{json}");
    assert_eq!(summary.clusters.len(), clusters);
    for cluster in &summary.clusters {
        let steps: Vec<&str> = cluster.steps.iter().map(|s| s.step.as_str()).collect();
        assert!(steps.contains(&"AfterControlPlaneInitialized"), "{steps:?}");
        assert!(steps.contains(&"BeforeClusterUpgrade"), "{steps:?}");
        let delete = cluster
            .steps
            .iter()
            .find(|s| s.step == "BeforeClusterDelete")
            .unwrap();
        assert!(
            delete.calls > 1,
            "BeforeClusterDelete waited for the uninstall: {json}"
        );
        let gateways: std::collections::BTreeSet<_> =
            cluster.steps.iter().filter_map(|s| s.gateway.clone()).collect();
        assert_eq!(gateways.len(), 2, "calls were spread over both gateways: {json}");
    }
    sandbox.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_capi_1_10_shape() {
    play(CapiShape::V1_10, 2, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_capi_1_12_shape_with_credential_rotation() {
    play(CapiShape::V1_12, 2, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_capi_1_14_shape() {
    play(CapiShape::V1_14, 3, false).await;
}
