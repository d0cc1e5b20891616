//! What one hook costs the API servers, counted with the executor's own `kube_requests` metric (the numbers an
//! operator's Prometheus sees). A steady-state re-apply (BeforeClusterUpgrade with nothing changed) must stay within
//! 4 Kubernetes API calls, none of them on the workload cluster; a rotation must still reach the workload cluster.
//! Counts only: nothing here depends on how fast the machine is.

use konnector_executor::{ExecutorConfig, observe::ExecutorMetrics};
use konnector_proto::v1::Trigger;
use konnector_tests::{
    executor_fixture::{ExecutorEnv, TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, executor_env},
    support,
    workload::{ClusterOptions, put_credentials_secret},
};

/// Requests per cluster side so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Calls {
    management: u64,
    workload: u64,
}

fn calls(m: &ExecutorMetrics) -> Calls {
    Calls {
        management: m.kube_request_count("management", None),
        workload: m.kube_request_count("workload", None),
    }
}

fn since(before: Calls, m: &ExecutorMetrics) -> Calls {
    let now = calls(m);
    Calls {
        management: now.management - before.management,
        workload: now.workload - before.workload,
    }
}

/// One ApplyAgent through the executor's gRPC service, as the gateway sends it; returns what it cost.
async fn apply(env: &ExecutorEnv, trigger: Trigger) -> Calls {
    let before = calls(&env.executor.metrics);
    let answer = support::apply_agent(&env.executor, env.cluster_ref(), trigger)
        .await
        .unwrap();
    assert!(answer.applied, "{answer:?}");
    since(before, &env.executor.metrics)
}

#[tokio::test]
async fn a_steady_state_re_apply_costs_at_most_four_api_calls() {
    konnector_tests::init_test_logging();
    // The library default has the Prism Central checks off; they make no Kubernetes calls either way.
    let env = executor_env(
        "apply-cost",
        ExecutorConfig::default(),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();

    let first = apply(&env, Trigger::AfterControlPlaneInitialized).await;
    eprintln!("first apply: {first:?}");
    assert!(
        first.workload > 0,
        "the first apply writes the workload Namespace and Secret: {first:?}"
    );

    // The defaults ConfigMaps come from two watches the first apply started. Their own LIST and WATCH requests go
    // through the same management client, so the steady state begins once both watches are established (a watch
    // is counted when its response headers arrive).
    support::eventually("the defaults ConfigMap watches are established", || async {
        env.executor
            .metrics
            .kube_request_count_by_verb("management", Some("watch"), Some("configmaps"))
            >= 2
    })
    .await;

    for round in 0..3 {
        let again = apply(&env, Trigger::BeforeClusterUpgrade).await;
        eprintln!("steady-state re-apply {round}: {again:?}");
        assert_eq!(
            again.workload, 0,
            "an unchanged re-apply does not touch the workload cluster: {again:?}"
        );
        assert!(
            again.management + again.workload <= 4,
            "a steady-state re-apply needs at most 4 API calls, made {again:?}"
        );
        assert!(
            again.management >= 3,
            "it still reads the live Cluster and the credentials Secret and applies the HelmChartProxy: {again:?}"
        );
    }

    // A rotated password changes what the workload Secret must hold: the next re-apply writes it again.
    put_credentials_secret(
        &env.admin,
        TEST_NAMESPACE,
        TEST_CREDENTIALS_SECRET,
        &[("username", "admin"), ("password", "rotated-PA55-apply-cost")],
    )
    .await
    .unwrap();
    let rotated = apply(&env, Trigger::BeforeClusterUpgrade).await;
    eprintln!("re-apply after rotation: {rotated:?}");
    assert!(
        rotated.workload > 0,
        "rotated credentials reach the workload cluster: {rotated:?}"
    );
    let wl = env.workload.client().await.unwrap();
    let copied = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(wl, "ntnx-system")
        .get("konnector-agent")
        .await
        .unwrap();
    let bytes: Vec<u8> = copied
        .data
        .unwrap_or_default()
        .values()
        .flat_map(|v| v.0.clone())
        .collect();
    assert!(
        String::from_utf8_lossy(&bytes).contains("rotated-PA55-apply-cost"),
        "the workload Secret holds the rotated password"
    );
}
