//! The executor's client identities, on the real binaries wired as the chart wires them
//! (`--client-allowed-names=konnector-gateway`, `--client-read-only-names=konnector-cli`): the CLI's read-only
//! certificate gets health, status and plan, and PERMISSION_DENIED for ApplyAgent and RemoveAgent with nothing
//! changed in the API server; the gateway's certificate still applies and removes; a certificate of the same CA with
//! neither name is dropped at the handshake. The refusals are counted on the executor's `/metrics`.
//!
//! The binaries come from `KONNECTOR_STATIC_BIN_DIR` (hack/build-static.sh's output, or any build's directory).

use std::time::Duration;

use konnector_executor::ExecutorConfig;
use konnector_gateway::{ExecutorEndpoint, ExecutorTransport};
use konnector_proto::v1::{
    ApplyAgentRequest, GetAgentStatusRequest, PlanAgentRequest, RemoveAgentRequest, Trigger,
    agent_service_client::AgentServiceClient,
};
use konnector_tests::{
    caaph_stand_in::hcp_resource,
    executor_fixture::{TEST_NAMESPACE, TEST_PASSWORD, executor_env},
    real_binaries::RealPair,
    workload::ClusterOptions,
};
use kube::{Api, api::DynamicObject};
use tonic::{Code, transport::Channel};

/// The name the chart gives the CLI's certificate with release `konnector`.
const CLI_NAME: &str = "konnector-cli";

/// A channel to the pair's executor presenting a certificate of its CA that carries `names`, written under `dir`.
fn channel_as(pair: &RealPair, dir: &std::path::Path, names: &[&str]) -> Channel {
    let cert = pair.pki.client_pair_with_names("test", names).unwrap();
    let stem = if names.is_empty() {
        "none".to_owned()
    } else {
        names.join("_")
    };
    let (crt, key) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
    std::fs::write(&crt, &cert.cert_pem).unwrap();
    std::fs::write(&key, &cert.key_pem).unwrap();
    let ExecutorTransport::Tls { ca, .. } = &pair.executor_endpoint.transport else {
        unreachable!("the pair speaks mTLS")
    };
    let endpoint = ExecutorEndpoint {
        url: pair.executor_endpoint.url.clone(),
        transport: ExecutorTransport::Tls {
            ca: ca.clone(),
            client_identity: Some((crt, key)),
            server_name: None,
        },
    };
    konnector_gateway::client::channel(&endpoint, Duration::from_secs(5)).unwrap()
}

async fn metrics(pair: &RealPair) -> String {
    reqwest::get(format!("http://{}/metrics", pair.executor_admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn assert_refused(status: &tonic::Status, method: &str) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        format!(
            "client identity {CLI_NAME} is read-only: it may call GetAgentStatus, PlanAgent, health and reflection, not {method}; nothing was done"
        )
    );
    // The executor's own answer (the gateway tells it from "unreachable" by this), as every refusal it sends.
    assert!(
        status
            .metadata()
            .get(konnector_proto::EXECUTOR_ANSWER_METADATA)
            .is_some(),
        "{status:?}"
    );
}

#[tokio::test]
async fn the_read_only_identity_reads_and_cannot_apply_or_remove() {
    konnector_tests::init_test_logging();
    let env = executor_env(
        "identity",
        ExecutorConfig::default(),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    let pair = RealPair::start(
        &env.mgmt.kubeconfig_path(),
        &[
            "--client-allowed-names=konnector-gateway",
            &format!("--client-read-only-names={CLI_NAME}"),
        ],
        &[],
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hcps: Api<DynamicObject> = Api::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource());
    let cluster = Some(env.cluster_ref());

    // The CLI's identity: health, status and plan are served.
    let cli_channel = channel_as(&pair, dir.path(), &[CLI_NAME]);
    assert!(konnector_gateway::client::is_serving(cli_channel.clone(), Duration::from_secs(10)).await);
    let mut cli = AgentServiceClient::new(cli_channel);
    let status = cli
        .get_agent_status(GetAgentStatusRequest {
            cluster: cluster.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.addon_configured && status.helm_chart_proxy.is_none(),
        "{status:?}"
    );
    let plan = cli
        .plan_agent(PlanAgentRequest {
            cluster: cluster.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(plan.helm_chart_proxy.is_some(), "{plan:?}");
    assert!(!format!("{plan:?}").contains(TEST_PASSWORD));

    // ApplyAgent: refused, and nothing was written.
    let refused = cli
        .apply_agent(ApplyAgentRequest {
            cluster: cluster.clone(),
            trigger: Trigger::AfterControlPlaneInitialized as i32,
        })
        .await
        .unwrap_err();
    assert_refused(&refused, "ApplyAgent");
    assert!(hcps.list(&Default::default()).await.unwrap().items.is_empty());

    // The gateway's identity applies, through the same executor: the refusal above was the identity's.
    let mut gateway = AgentServiceClient::new(channel_as(&pair, dir.path(), &["konnector-gateway"]));
    let applied = gateway
        .apply_agent(ApplyAgentRequest {
            cluster: cluster.clone(),
            trigger: Trigger::AfterControlPlaneInitialized as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(applied.applied, "{applied:?}");
    let applied_hcp = hcps.get(&applied.helm_chart_proxy_name).await.unwrap();

    // RemoveAgent for the Cluster being deleted: refused, and the HelmChartProxy is untouched.
    env.start_deletion().await.unwrap();
    let refused = cli
        .remove_agent(RemoveAgentRequest {
            cluster: cluster.clone(),
        })
        .await
        .unwrap_err();
    assert_refused(&refused, "RemoveAgent");
    let after = hcps.get(&applied.helm_chart_proxy_name).await.unwrap();
    assert!(after.metadata.deletion_timestamp.is_none());
    assert_eq!(
        after.metadata.resource_version,
        applied_hcp.metadata.resource_version
    );
    // The gateway's identity removes it.
    let removed = gateway
        .remove_agent(RemoveAgentRequest {
            cluster: cluster.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        hcps.get_opt(&applied.helm_chart_proxy_name)
            .await
            .unwrap()
            .is_none_or(|h| h.metadata.deletion_timestamp.is_some()),
        "{removed:?}"
    );

    // A certificate of the same CA with neither name, or none: dropped at the handshake, not even health.
    for names in [&["konnector-intruder"][..], &[]] {
        let other = channel_as(&pair, dir.path(), names);
        assert!(
            !konnector_gateway::client::is_serving(other, Duration::from_secs(10)).await,
            "{names:?} was served"
        );
    }

    // Each refusal is counted, by method, on the executor's own /metrics.
    let text = metrics(&pair).await;
    for method in ["ApplyAgent", "RemoveAgent"] {
        let line = format!(
            "konnector_executor_rpc_requests_total{{method=\"{method}\",code=\"PERMISSION_DENIED\"}} 1"
        );
        assert!(text.contains(&line), "{line} not in\n{text}");
    }
}
