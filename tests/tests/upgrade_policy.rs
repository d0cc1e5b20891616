//! Issue 24 item 7: a configuration problem found at BeforeClusterUpgrade follows a policy. A Failure there blocks
//! the Kubernetes upgrade, which CAREN let through for the same configuration, so the default is `warn`: Success,
//! nothing written, a Warning Event. `block` keeps the Failure. AfterControlPlaneInitialized always fails: there is
//! no installed agent to leave in place.

use konnector_executor::{ExecutorConfig, UpgradeConfigPolicy};
use konnector_proto::v1::Trigger;
use konnector_tests::{
    caaph_stand_in::hcp_resource,
    executor_fixture::{
        TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, TEST_PASSWORD, cluster_event_reasons, executor_env,
        start_executor,
    },
    support,
    workload::{ClusterOptions, put_credentials_secret},
};
use kube::{Api, api::DynamicObject};

#[tokio::test]
async fn a_configuration_problem_at_upgrade_warns_by_default_and_blocks_when_asked() {
    konnector_tests::init_test_logging();
    let env = executor_env(
        "upgrade-policy",
        ExecutorConfig::default(),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    let installed = support::apply_agent(
        &env.executor,
        env.cluster_ref(),
        Trigger::AfterControlPlaneInitialized,
    )
    .await
    .unwrap();
    assert!(installed.applied);
    let hcps: Api<DynamicObject> = Api::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource());
    let before = hcps
        .get(&installed.helm_chart_proxy_name)
        .await
        .unwrap()
        .metadata
        .resource_version;

    // The credentials Secret loses its password: a configuration problem.
    put_credentials_secret(
        &env.admin,
        TEST_NAMESPACE,
        TEST_CREDENTIALS_SECRET,
        &[("username", "admin")],
    )
    .await
    .unwrap();
    let warned = support::apply_agent(&env.executor, env.cluster_ref(), Trigger::BeforeClusterUpgrade)
        .await
        .expect("warn: the upgrade is not blocked");
    assert!(!warned.applied, "{warned:?}");
    assert!(
        warned.message.contains("policy: warn") && warned.message.contains("\"password\""),
        "{}",
        warned.message
    );
    support::assert_no_secret("the answer", &warned.message, TEST_PASSWORD);
    assert_eq!(
        hcps.get(&installed.helm_chart_proxy_name)
            .await
            .unwrap()
            .metadata
            .resource_version,
        before,
        "nothing was written"
    );
    assert!(
        cluster_event_reasons(&env.admin, TEST_NAMESPACE, "c1")
            .await
            .unwrap()
            .contains(&"CredentialsSecretInvalid".to_owned()),
        "a Warning Event says why"
    );

    // AfterControlPlaneInitialized has no agent to leave in place: it fails.
    let acpi = support::apply_agent(
        &env.executor,
        env.cluster_ref(),
        Trigger::AfterControlPlaneInitialized,
    )
    .await
    .unwrap_err();
    assert_eq!(acpi.code(), tonic::Code::FailedPrecondition, "{acpi:?}");

    // block: the upgrade waits.
    let blocking = start_executor(
        &env.mgmt,
        ExecutorConfig {
            upgrade_config_policy: UpgradeConfigPolicy::Block,
            ..ExecutorConfig::default()
        },
    )
    .await
    .unwrap();
    let blocked = support::apply_agent(&blocking, env.cluster_ref(), Trigger::BeforeClusterUpgrade)
        .await
        .unwrap_err();
    assert_eq!(blocked.code(), tonic::Code::FailedPrecondition, "{blocked:?}");

    // An API server failure is no configuration problem: warn does not turn it into Success.
    let gone = konnector_proto::v1::ClusterRef {
        name: "does-not-exist".into(),
        uid: String::new(),
        ..env.cluster_ref()
    };
    assert!(
        support::apply_agent(&env.executor, gone, Trigger::BeforeClusterUpgrade)
            .await
            .is_err()
    );
}
