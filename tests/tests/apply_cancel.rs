//! An ApplyAgent whose caller goes away (the gateway's deadline, a dropped connection) still runs to its end:
//! stopped between its HelmChartProxy write and its take-back check it could leave an install behind for a Cluster
//! whose deletion another replica had already let proceed (docs/design.md, known gaps; issue 25).

use std::time::Duration;

use konnector_executor::ExecutorConfig;
use konnector_proto::v1::{ApplyAgentRequest, Trigger};
use konnector_tests::{
    caaph_stand_in::hcp_resource,
    executor_fixture::{TEST_NAMESPACE, executor_env},
    workload::ClusterOptions,
};
use kube::{Api, api::DynamicObject};

#[tokio::test]
async fn an_apply_cancelled_by_its_caller_still_finishes_its_writes() {
    konnector_tests::init_test_logging();
    let env = executor_env(
        "apply-cancel",
        ExecutorConfig::default(),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    let hcps = Api::<DynamicObject>::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource());
    let mut client = env.executor.client().await.unwrap();
    let call = client.apply_agent(ApplyAgentRequest {
        cluster: Some(env.cluster_ref()),
        trigger: Trigger::AfterControlPlaneInitialized as i32,
    });
    // The caller gives up once the apply is among its workload writes (the Namespace written), which come before
    // the HelmChartProxy: dropping the call resets its HTTP/2 stream, and the server drops the handler it ran.
    let workload_namespace_written = "konnector_executor_kube_requests_total{kube_cluster=\"workload\",verb=\"patch\",resource=\"namespaces\"";
    let registry = env.executor.metrics.registry().clone();
    let midway = async {
        loop {
            if registry.encode().contains(workload_namespace_written) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::select! {
        answer = call => panic!("the apply answered before the caller gave up: {answer:?}"),
        () = midway => {}
    }
    // What it had still to do is done all the same: the HelmChartProxy is written, and it stays (the Cluster is
    // not being deleted, so the take-back check keeps it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while hcps.get_opt("konnector-agent-c1").await.unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cancelled apply stopped before writing its HelmChartProxy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
