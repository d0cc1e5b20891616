//! ApplyAgent failures: each returns the right gRPC code and a message that names the problem, promptly.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use konnector_executor::{ExecutorConfig, names::EVENT_REPORTER};
use konnector_proto::v1::{ApplyAgentResponse, ClusterRef, Trigger};
use konnector_tests::{
    executor_fixture::{
        ExecutorEnv, TEST_CLUSTER, TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, TEST_PASSWORD,
        addon_cluster_config, cluster_event_reasons, cluster_events, cluster_ref, executor_env,
    },
    support,
    workload::{self, ClusterOptions},
};
use kube::{Api, api::DeleteParams};
use tonic::{Code, Status};

async fn env(name: &str) -> ExecutorEnv {
    konnector_tests::init_test_logging();
    executor_env(
        name,
        ExecutorConfig {
            remote_timeout: Duration::from_secs(3),
            ..ExecutorConfig::default()
        },
        ClusterOptions::initialized(),
    )
    .await
    .unwrap()
}

/// Sets the live Cluster's clusterConfig (the executor's only source) and returns the request's reference to it.
async fn configured(env: &ExecutorEnv, cluster_config: serde_json::Value) -> ClusterRef {
    env.set_cluster_config(cluster_config).await.unwrap();
    env.cluster_ref()
}

async fn apply(env: &ExecutorEnv, ctx: ClusterRef) -> Result<ApplyAgentResponse, Status> {
    support::apply_agent(&env.executor, ctx, Trigger::Unspecified).await
}

async fn expect_error(env: &ExecutorEnv, ctx: ClusterRef, code: Code, needles: &[&str]) {
    let err = apply(env, ctx).await.unwrap_err();
    assert_eq!(err.code(), code, "{err:?}");
    for needle in needles {
        assert!(
            err.message().contains(needle),
            "{:?} does not mention {needle:?}",
            err.message()
        );
    }
    support::assert_no_secret("the error", err.message(), TEST_PASSWORD);
}

#[tokio::test]
async fn configuration_errors_are_invalid_argument() {
    let env = env("badconfig").await;

    let base = || addon_cluster_config(TEST_CREDENTIALS_SECRET);
    let ctx = configured(&env, serde_json::json!({"nutanix": base()["nutanix"]})).await;
    let resp = apply(&env, ctx).await.unwrap();
    assert!(!resp.applied);
    assert_eq!(
        resp.message,
        "Konnector Agent addon is not configured for this cluster; nothing to do"
    );

    let mut cc = base();
    cc["addons"]["konnectorAgent"]["strategy"] = "bogus".into();
    let ctx = configured(&env, cc).await;
    expect_error(&env, ctx, Code::InvalidArgument, &["\"bogus\"", "HelmAddon"]).await;

    let mut cc = base();
    cc["addons"]["konnectorAgent"]["credentials"]["secretRef"]["name"] = "".into();
    let ctx = configured(&env, cc).await;
    expect_error(&env, ctx, Code::InvalidArgument, &["credentials.secretRef.name"]).await;

    let mut cc = base();
    cc.as_object_mut().unwrap().remove("nutanix");
    let ctx = configured(&env, cc).await;
    expect_error(
        &env,
        ctx,
        Code::InvalidArgument,
        &["no nutanix.prismCentralEndpoint"],
    )
    .await;

    for (url, why) in [
        ("http://pc.example.com", "https"),
        ("https://", "no host"),
        ("pc.example.com", "absolute https URL"),
        ("https://pc.example.com:99999", "port"),
    ] {
        let mut cc = base();
        cc["nutanix"]["prismCentralEndpoint"]["url"] = url.into();
        let ctx = configured(&env, cc).await;
        expect_error(
            &env,
            ctx,
            Code::InvalidArgument,
            &["prismCentralEndpoint.url", why],
        )
        .await;
    }
}

#[tokio::test]
async fn missing_objects_are_failed_precondition() {
    let env = env("missing").await;

    // No credentials Secret.
    let ctx = configured(&env, addon_cluster_config("no-such-secret")).await;
    expect_error(
        &env,
        ctx,
        Code::FailedPrecondition,
        &["clusters/no-such-secret", "not found"],
    )
    .await;
    let events = cluster_events(&env.admin, TEST_NAMESPACE, TEST_CLUSTER)
        .await
        .unwrap();
    let missing = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("CredentialsSecretMissing"))
        .unwrap_or_else(|| panic!("a CredentialsSecretMissing Event on the Cluster: {events:#?}"));
    assert_eq!(missing.type_.as_deref(), Some("Warning"));
    assert_eq!(missing.reporting_controller.as_deref(), Some(EVENT_REPORTER));
    assert!(
        missing
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("clusters/no-such-secret"),
        "{missing:?}"
    );

    // A Secret without the password key, and one with both kinds of credentials.
    workload::put_credentials_secret(&env.admin, TEST_NAMESPACE, "only-user", &[("username", "admin")])
        .await
        .unwrap();
    expect_error(
        &env,
        configured(&env, addon_cluster_config("only-user")).await,
        Code::FailedPrecondition,
        &["clusters/only-user", "\"password\""],
    )
    .await;
    assert!(
        cluster_event_reasons(&env.admin, TEST_NAMESPACE, TEST_CLUSTER)
            .await
            .unwrap()
            .contains(&"CredentialsSecretInvalid".to_owned())
    );
    workload::put_credentials_secret(
        &env.admin,
        TEST_NAMESPACE,
        "both",
        &[
            ("username", "admin"),
            ("password", TEST_PASSWORD),
            ("apiKey", "k"),
        ],
    )
    .await
    .unwrap();
    // apiKey beside username and password: accepted, as CAREN accepts it (refusing it failed upgrades CAREN let
    // through); only username and password are copied, and the answer says so.
    let both = apply(&env, configured(&env, addon_cluster_config("both")).await)
        .await
        .unwrap();
    assert!(both.applied, "{both:?}");
    assert!(
        both.notes
            .iter()
            .any(|n| n.contains("clusters/both") && n.contains("apiKey")),
        "{:?}",
        both.notes
    );

    // An apiKey alone is refused: no published konnector-agent chart reads it.
    workload::put_credentials_secret(&env.admin, TEST_NAMESPACE, "api-key", &[("apiKey", "k")])
        .await
        .unwrap();
    expect_error(
        &env,
        configured(&env, addon_cluster_config("api-key")).await,
        Code::FailedPrecondition,
        &["clusters/api-key", "only key apiKey"],
    )
    .await;
    // Back to the good Secret for what follows.
    configured(&env, addon_cluster_config(TEST_CREDENTIALS_SECRET)).await;

    // A Cluster without the cluster-name label: the HelmChartProxy would select nothing.
    let unlabelled = workload::create_workload_cluster(
        &env.admin,
        &env.workload,
        TEST_NAMESPACE,
        "unlabelled",
        ClusterOptions {
            without_name_label: true,
            cluster_config: Some(addon_cluster_config(TEST_CREDENTIALS_SECRET)),
            ..ClusterOptions::initialized()
        },
    )
    .await
    .unwrap();
    let ctx = cluster_ref(&unlabelled);
    expect_error(
        &env,
        ctx,
        Code::FailedPrecondition,
        &["cluster.x-k8s.io/cluster-name=unlabelled", "add the label"],
    )
    .await;
    assert_eq!(
        cluster_event_reasons(&env.admin, TEST_NAMESPACE, "unlabelled")
            .await
            .unwrap(),
        ["ClusterNotSelectable"]
    );

    // No kubeconfig Secret.
    Api::<Secret>::namespaced(env.admin.clone(), TEST_NAMESPACE)
        .delete("c1-kubeconfig", &DeleteParams::default())
        .await
        .unwrap();
    expect_error(
        &env,
        env.cluster_ref(),
        Code::FailedPrecondition,
        &["clusters/c1-kubeconfig", "not found"],
    )
    .await;

    // A kubeconfig Secret without the value key.
    workload::put_credentials_secret(&env.admin, TEST_NAMESPACE, "c1-kubeconfig", &[("other", "x")])
        .await
        .unwrap();
    expect_error(
        &env,
        env.cluster_ref(),
        Code::FailedPrecondition,
        &["clusters/c1-kubeconfig", "\"value\""],
    )
    .await;
}

#[tokio::test]
async fn unreachable_workload_is_unavailable_and_bounded() {
    let mut env = env("unreachable").await;
    apply(&env, env.cluster_ref()).await.unwrap();
    env.workload.stop();
    // An unchanged re-apply does not contact the workload cluster at all; rotated credentials must.
    apply(&env, env.cluster_ref()).await.unwrap();
    workload::put_credentials_secret(
        &env.admin,
        TEST_NAMESPACE,
        TEST_CREDENTIALS_SECRET,
        &[("username", "admin"), ("password", "rotated-password")],
    )
    .await
    .unwrap();

    let started = Instant::now();
    let err = apply(&env, env.cluster_ref()).await.unwrap_err();
    let elapsed = started.elapsed();
    eprintln!("ApplyAgent against a stopped workload API server answered in {elapsed:?}");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(
        err.message(),
        "cannot apply Namespace ntnx-system on the workload cluster: the API server is unreachable or did not answer in time"
    );
    // The status says it is the executor's own answer, so the gateway's answer to CAPI names the workload API
    // server; before the marker, a person was told the (healthy) executor was unreachable.
    assert_eq!(
        err.metadata()
            .get(konnector_proto::EXECUTOR_ANSWER_METADATA)
            .map(|v| v.to_str().unwrap().to_owned())
            .as_deref(),
        Some("1")
    );
    let hook = konnector_gateway::catalog::Hook::BeforeClusterUpgrade;
    let answer = konnector_gateway::answer::hook_answer(hook, Err(err.clone()));
    assert_eq!(
        answer.message,
        format!("{}: {}", konnector_gateway::answer::context(hook), err.message())
    );

    // GetAgentStatus reports the same problem as data, not as an error.
    let status = support::agent_status(&env.executor, env.cluster_ref_without_uid()).await;
    assert!(!status.credentials_copied);
    assert!(
        status.credentials_error.contains("unreachable"),
        "{}",
        status.credentials_error
    );
    assert!(status.helm_chart_proxy.is_some());

    // An API server that accepts connections and never answers: the remote timeout (3s here) bounds the call.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blackhole.local_addr().unwrap().port();
    let kubeconfig = env.workload.kubeconfig_yaml().replace(
        &format!("127.0.0.1:{}", env.workload.port()),
        &format!("127.0.0.1:{port}"),
    );
    workload::put_kubeconfig_secret(&env.admin, TEST_NAMESPACE, "c1", &kubeconfig)
        .await
        .unwrap();
    let started = Instant::now();
    let err = apply(&env, env.cluster_ref()).await.unwrap_err();
    eprintln!(
        "ApplyAgent against a silent workload API server answered in {:?}",
        started.elapsed()
    );
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    drop(blackhole);
}
