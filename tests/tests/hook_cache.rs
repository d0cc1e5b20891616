//! Hooks that trust the watch only when it is provably current (issue 26 item 3), attacked against a real API
//! server: the executor uses its own copy of a Cluster only when the hook's resourceVersion is the one its Cluster
//! watch holds and the copy's. A stale body, an edit between two hooks that carry the same old version, and a watch
//! that never lists all read the live Cluster, and what is applied is what the live Cluster says. Costs are
//! counted with the executor's own `kube_requests` metric, as apply_cost.rs does; no wall-clock thresholds.

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use konnector_executor::{ExecutorConfig, observe::ExecutorMetrics};
use konnector_proto::v1::{ClusterRef, Trigger};
use konnector_tests::{
    caaph_stand_in::hcp_resource,
    executor_fixture::{
        EXECUTOR_CLUSTER_ROLE_YAML, EXECUTOR_DEFAULTS_ROLE_YAML, ExecutorEnv, RunningExecutor, TEST_CLUSTER,
        TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, executor_env, serve_executor,
    },
    support,
    workload::{ClusterOptions, cluster_resource, served_cluster_version},
};
use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams},
};
use serde_json::json;

/// The Cluster's resourceVersion now, as CAPI would put it in a hook body.
async fn live_rv(env: &ExecutorEnv) -> String {
    let version = served_cluster_version(&env.admin).await.unwrap();
    Api::<DynamicObject>::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &cluster_resource(version))
        .get(TEST_CLUSTER)
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap()
}

fn at(env: &ExecutorEnv, rv: &str) -> ClusterRef {
    ClusterRef {
        resource_version: rv.to_owned(),
        ..env.cluster_ref()
    }
}

/// (cache, live) reads of the Cluster by ApplyAgent so far.
fn reads(m: &ExecutorMetrics) -> (u64, u64) {
    (m.hook_cluster_reads("cache"), m.hook_cluster_reads("live"))
}

/// One ApplyAgent; returns the management API calls it made and which source it read the Cluster from.
async fn apply(executor: &RunningExecutor, cluster: ClusterRef, trigger: Trigger) -> (u64, &'static str) {
    let m = &executor.metrics;
    let (calls, before) = (m.kube_request_count("management", None), reads(m));
    let answer = support::apply_agent(executor, cluster, trigger).await.unwrap();
    assert!(answer.applied, "{answer:?}");
    let after = reads(m);
    let source = match (after.0 - before.0, after.1 - before.1) {
        (1, 0) => "cache",
        (0, 1) => "live",
        other => panic!("one ApplyAgent read its Cluster {other:?} times (cache, live)"),
    };
    (m.kube_request_count("management", None) - calls, source)
}

async fn hcp_values(env: &ExecutorEnv) -> String {
    Api::<DynamicObject>::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource())
        .get("konnector-agent-c1")
        .await
        .unwrap()
        .data["spec"]["valuesTemplate"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until the executor's watches are established: the Cluster watch (hooks' copies) and the two defaults
/// ConfigMap watches. A watch is counted when its response headers arrive, after its list was taken in.
async fn watches_established(m: &ExecutorMetrics) {
    support::eventually(
        "the Cluster and defaults ConfigMap watches are established",
        || async {
            m.kube_request_count_by_verb("management", Some("watch"), Some("clusters")) >= 1
                && m.kube_request_count_by_verb("management", Some("watch"), Some("helmchartproxies")) >= 1
                && m.kube_request_count_by_verb("management", Some("watch"), Some("configmaps")) >= 2
        },
    )
    .await;
}

/// Waits until the hooks' proxy watch holds the one HelmChartProxy as the first apply wrote it: three events
/// whichever came first, the list (start, the proxy, done) or the write (start, done, the proxy).
async fn proxy_watched(m: &ExecutorMetrics) {
    support::eventually("the proxy watch holds the written proxy", || async {
        m.hook_watch_events("helmchartproxies") >= 3
    })
    .await;
}

#[tokio::test]
async fn a_hook_uses_the_copy_only_at_the_watched_version_and_never_applies_an_edited_clusters_old_values() {
    konnector_tests::init_test_logging();
    let env = executor_env(
        "hook-cache",
        ExecutorConfig::default(),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    let ex = &env.executor;
    let rv0 = live_rv(&env).await;

    // The first hook starts the watch and reads live (nothing is copied yet).
    let (_, source) = apply(ex, at(&env, &rv0), Trigger::AfterControlPlaneInitialized).await;
    assert_eq!(source, "live");
    watches_established(&ex.metrics).await;
    proxy_watched(&ex.metrics).await;

    // Steady state: the body's version is the watch's and the copy's, so the copy is used, one GET fewer than the
    // same re-apply without a version.
    let (with_copy, source) = apply(ex, at(&env, &rv0), Trigger::BeforeClusterUpgrade).await;
    assert_eq!(source, "cache");
    let (without, source) = apply(ex, env.cluster_ref(), Trigger::BeforeClusterUpgrade).await;
    assert_eq!(source, "live", "a request without a version reads live");
    eprintln!("steady-state re-apply: {with_copy} management calls with the copy, {without} without");
    assert_eq!(with_copy + 1, without, "the copy saves exactly the Cluster GET");
    // Nobody touched the HelmChartProxy since the first apply wrote it (no CAAPH here), and the body is the same:
    // no ownership check, no write. The credentials Secret is the one read left.
    assert_eq!(with_copy, 1, "a no-op re-apply reads the credentials Secret only");
    assert!(ex.metrics.helm_chart_proxy_writes("skipped") >= 2);
    // A body older or newer than the watch, or a forged one: live.
    for other in ["1", "999999999", "not-a-version", ""] {
        let (_, source) = apply(ex, at(&env, other), Trigger::BeforeClusterUpgrade).await;
        assert_eq!(source, "live", "body version {other:?}");
    }

    // The Cluster is edited (Prism Central moves) after CAPI built its hook bodies: the next hooks still carry rv0.
    let moved = "https://pc-moved.example.com:9440";
    let mut cc = konnector_tests::executor_fixture::addon_cluster_config(TEST_CREDENTIALS_SECRET);
    cc["nutanix"]["prismCentralEndpoint"]["url"] = moved.into();
    env.set_cluster_config(cc).await.unwrap();
    let rv1 = live_rv(&env).await;
    assert_ne!(rv0, rv1);
    // Once the watch has the edit (a hook at rv1 can be served from a copy only then), a hook with the old
    // version reads live and applies the live values.
    support::eventually("the watch holds the edited Cluster", || async {
        apply(ex, at(&env, &rv1), Trigger::BeforeClusterUpgrade).await.1 == "cache"
    })
    .await;
    // Put the old values back on the HelmChartProxy, as a stale apply would have left them, so the next
    // assertion can only pass if the stale-body hook writes the live values itself.
    let old_values = hcp_values(&env)
        .await
        .replace("pc-moved.example.com", "pc.example.com");
    let hcp_events = ex.metrics.hook_watch_events("helmchartproxies");
    Api::<DynamicObject>::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource())
        .patch(
            "konnector-agent-c1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"valuesTemplate": old_values}})),
        )
        .await
        .unwrap();
    assert!(!hcp_values(&env).await.contains("pc-moved.example.com"));
    // The hooks' proxy watch has seen that edit (until it has, a hook relies on what this executor last wrote: the
    // reconciler's pass repairs an edit in that moment).
    support::eventually("the proxy watch saw the edit", || async {
        ex.metrics.hook_watch_events("helmchartproxies") > hcp_events
    })
    .await;
    let (_, source) = apply(ex, at(&env, &rv0), Trigger::BeforeClusterUpgrade).await;
    assert_eq!(source, "live", "a body older than the watch reads live");
    let values = hcp_values(&env).await;
    assert!(
        values.contains("pc-moved.example.com") && !values.contains("pc.example.com"),
        "the stale-body hook applied the live Cluster's values: {values}"
    );
    // The live read left a copy at rv1: a hook at rv1 uses it again.
    let (_, source) = apply(ex, at(&env, &rv1), Trigger::BeforeClusterUpgrade).await;
    assert_eq!(source, "cache");

    // The proxy deleted between two hooks at the same Cluster version: once the watch has seen it go, the next hook
    // checks and writes again, and the proxy is back.
    let hcp_events = ex.metrics.hook_watch_events("helmchartproxies");
    Api::<DynamicObject>::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource())
        .delete("konnector-agent-c1", &Default::default())
        .await
        .unwrap();
    support::eventually("the proxy watch saw the deletion", || async {
        ex.metrics.hook_watch_events("helmchartproxies") > hcp_events
    })
    .await;
    let written = ex.metrics.helm_chart_proxy_writes("written");
    let (_, source) = apply(ex, at(&env, &rv1), Trigger::BeforeClusterUpgrade).await;
    assert_eq!(source, "cache");
    assert_eq!(ex.metrics.helm_chart_proxy_writes("written"), written + 1);
    assert!(hcp_values(&env).await.contains("pc-moved.example.com"));
}

#[tokio::test]
async fn without_a_watch_that_lists_every_hook_reads_live() {
    konnector_tests::init_test_logging();
    let env = executor_env(
        "hook-nowatch",
        ExecutorConfig::default(),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    // An executor whose rights are the chart's, except that it may not list or watch Clusters: its watch never
    // lists, so it never holds a version.
    let user = "konnector-executor-without-cluster-watch";
    let pp = PatchParams::apply("hook-cache-test").force();
    let mut role: ClusterRole = serde_yaml_ng::from_str(EXECUTOR_CLUSTER_ROLE_YAML).unwrap();
    role.metadata.name = Some(user.to_owned());
    for rule in role.rules.iter_mut().flatten() {
        if rule.resources.iter().flatten().any(|r| r == "clusters") {
            rule.verbs = vec!["get".to_owned()];
        }
    }
    Api::<ClusterRole>::all(env.admin.clone())
        .patch(user, &pp, &Patch::Apply(&role))
        .await
        .unwrap();
    let subjects = json!([{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]);
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": subjects,
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(env.admin.clone())
        .patch(user, &pp, &Patch::Apply(&binding))
        .await
        .unwrap();
    let defaults: Role = serde_yaml_ng::from_str(EXECUTOR_DEFAULTS_ROLE_YAML).unwrap();
    let defaults_binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": user, "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": defaults.metadata.name},
        "subjects": subjects,
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(env.admin.clone(), "default")
        .patch(user, &pp, &Patch::Apply(&defaults_binding))
        .await
        .unwrap();
    let client = env.mgmt.client_as(user, &["system:authenticated"]).await.unwrap();
    let version = served_cluster_version(&env.admin).await.unwrap();
    let clusters =
        Api::<DynamicObject>::namespaced_with(client.clone(), TEST_NAMESPACE, &cluster_resource(version));
    support::eventually("the restricted identity may read the Cluster", || async {
        clusters.get_opt(TEST_CLUSTER).await.is_ok_and(|c| c.is_some())
    })
    .await;
    assert!(
        clusters.list(&Default::default()).await.is_err(),
        "the identity may not list Clusters"
    );
    let ex = serve_executor(client, ExecutorConfig::default()).await.unwrap();

    let rv = live_rv(&env).await;
    let (_, source) = apply(&ex, at(&env, &rv), Trigger::AfterControlPlaneInitialized).await;
    assert_eq!(source, "live");
    // The watch has tried (and been refused) by the time it has made a request; hooks keep working, live.
    support::eventually("the Cluster watch has tried to list", || async {
        ex.metrics
            .kube_request_count_by_verb("management", Some("list"), Some("clusters"))
            >= 1
    })
    .await;
    for _ in 0..3 {
        let (_, source) = apply(&ex, at(&env, &rv), Trigger::BeforeClusterUpgrade).await;
        assert_eq!(source, "live", "an unsynced watch is never trusted");
    }

    // And with the copies turned off (--hook-cluster-cache-bytes=0), nothing is watched at all.
    let off = serve_executor(
        konnector_tests::executor_fixture::executor_mgmt_client(&env.mgmt, "default")
            .await
            .unwrap(),
        ExecutorConfig {
            hook_cluster_cache_bytes: 0,
            ..ExecutorConfig::default()
        },
    )
    .await
    .unwrap();
    for trigger in [
        Trigger::AfterControlPlaneInitialized,
        Trigger::BeforeClusterUpgrade,
        Trigger::BeforeClusterUpgrade,
    ] {
        let (_, source) = apply(&off, at(&env, &rv), trigger).await;
        assert_eq!(source, "live");
    }
    for verb in ["list", "watch"] {
        assert_eq!(
            off.metrics
                .kube_request_count_by_verb("management", Some(verb), Some("clusters")),
            0,
            "no Cluster {verb} with the copies off"
        );
    }
}
