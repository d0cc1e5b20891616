//! The sandbox's `--bad-pc-password`: its Clusters point at the Prism Central stand-in, which refuses their
//! password, so the hook that installs the agent answers with the preflight's finding and nothing is installed.

use std::sync::Arc;

use konnector_tests::{
    capi_stand_in::CapiShape,
    sandbox::{Sandbox, SandboxOptions},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pc_password_shows_a_failed_preflight() {
    konnector_tests::init_test_logging();
    let sandbox = Sandbox::start(SandboxOptions {
        clusters: 1,
        shape: CapiShape::V1_14,
        bad_pc_password: true,
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let summary = sandbox.play(Arc::new(|_: &str, _: &_| {})).await.unwrap();
    sandbox.stop().await.unwrap();
    let json = serde_json::to_string_pretty(&summary).unwrap();
    assert!(!summary.ok, "{json}");
    let last = summary.clusters[0].steps.last().unwrap();
    assert_eq!(last.step, "AfterControlPlaneInitialized", "{json}");
    let answer = last.answer.as_ref().unwrap();
    assert_eq!(answer.status, "Failure");
    assert!(
        answer
            .message
            .contains("refused the credentials (HTTP 401 to GET /api/nutanix/v3/users/me)")
            && answer.message.contains("nothing was applied"),
        "{json}"
    );
}
