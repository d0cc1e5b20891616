//! konnector beside CAREN, whose konnector handler cannot be switched off, and konnector taking over Clusters
//! CAREN created. CAREN cannot run here, so a clearly named emulation applies what CAREN applies (its field
//! manager, its HelmChartProxy name and content, force), following the reference's description of CAREN's
//! applier; the values it carries are rendered from CAREN's shipped template, which the differential test proves
//! konnector renders byte for byte as Go does.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Secret},
};
use konnector_executor::{ExecutorConfig, names::CREDENTIALS_ROTATED_ANNOTATION};
use konnector_proto::v1::{ApplyAgentRequest, RemoveAgentRequest, Trigger, UninstallPhase};
use konnector_tests::{
    caaph_stand_in::hcp_resource,
    executor_fixture::{
        ExecutorEnv, RunningExecutor, TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, executor_env, fast_reconcile,
        start_reconciling_executor,
    },
    support,
    workload::{self, ClusterOptions},
};
use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

/// CAREN's field manager.
const CAREN_MANAGER: &str = "cluster-api-runtime-extensions-nutanix";
/// CAREN's namespace, holding its defaults ConfigMaps, which konnector is pointed at with --defaults-namespace.
const CAREN_NAMESPACE: &str = "caren-system";
const UUID: &str = "019d87f4-a01e-7aeb-8e4c-146dd9fcbf05";
const CAREN_TEMPLATE: &str = include_str!("../go/testdata/caren-values-template.yaml");

/// An environment set up for coexistence: CAREN's two ConfigMaps in CAREN's namespace, and konnector reading them.
async fn env(name: &str) -> ExecutorEnv {
    konnector_tests::init_test_logging();
    let env = executor_env(
        name,
        ExecutorConfig {
            defaults_namespace: CAREN_NAMESPACE.to_owned(),
            ..ExecutorConfig::default()
        },
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(env.admin.clone(), CAREN_NAMESPACE);
    for (name, key, value) in [
        (
            "default-helm-addons-config",
            "konnector-agent",
            "ChartName: konnector-agent\nChartVersion: 1.4.0\nRepositoryURL: oci://helm-repository.caren-system.svc/charts\n",
        ),
        (
            "default-konnector-agent-helm-values-template",
            "values.yaml",
            CAREN_TEMPLATE,
        ),
    ] {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": CAREN_NAMESPACE},
            "data": {key: value},
        }))
        .unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    env
}

async fn annotate_with_caren_uuid(env: &ExecutorEnv) {
    let clusters: Api<DynamicObject> = Api::namespaced_with(
        env.admin.clone(),
        TEST_NAMESPACE,
        &workload::cluster_resource("v1beta2"),
    );
    clusters
        .patch(
            &env.cluster.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"caren.nutanix.com/cluster-uuid": UUID}}})),
        )
        .await
        .unwrap();
}

fn hcps(env: &ExecutorEnv) -> Api<DynamicObject> {
    Api::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource())
}

async fn konnector_apply(env: &ExecutorEnv) {
    let mut client = env.executor.client().await.unwrap();
    let answer = client
        .apply_agent(ApplyAgentRequest {
            cluster: Some(env.cluster_ref()),
            trigger: Trigger::BeforeClusterUpgrade as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.applied, "{answer:?}");
}

/// An emulation of CAREN's applier: the HelmChartProxy CAREN builds for konnector (name from the uuid annotation,
/// an ownerReference without controller flags, empty install/upgrade options), server-side applied with force
/// under CAREN's field manager. `values` is CAREN's rendering of its template for this Cluster.
async fn caren_like_apply(env: &ExecutorEnv, values: &str) {
    caren_like_apply_at(env, values, "1.4.0").await;
}

/// [`caren_like_apply`] with the chart version CAREN's own ConfigMap names.
async fn caren_like_apply_at(env: &ExecutorEnv, values: &str, version: &str) {
    let name = format!("konnector-agent-{UUID}");
    let hcp = json!({
        "apiVersion": "addons.cluster.x-k8s.io/v1alpha1",
        "kind": "HelmChartProxy",
        "metadata": {
            "name": name,
            "namespace": TEST_NAMESPACE,
            "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                "name": env.cluster.name, "uid": env.cluster.uid}],
        },
        "spec": {
            "clusterSelector": {"matchLabels": {"cluster.x-k8s.io/cluster-name": env.cluster.name}},
            "repoURL": "oci://helm-repository.caren-system.svc/charts",
            "chartName": "konnector-agent",
            "version": version,
            "releaseName": "konnector-agent",
            "namespace": "ntnx-system",
            "valuesTemplate": values,
            "tlsConfig": {"caSecret": {"name": "helm-repository-tls", "namespace": CAREN_NAMESPACE}},
            "options": {"install": {}, "upgrade": {}},
        },
    });
    hcps(env)
        .patch(
            &name,
            &PatchParams::apply(CAREN_MANAGER).force(),
            &Patch::Apply(&hcp),
        )
        .await
        .unwrap();
}

/// CAREN's values for the environment's Cluster: what konnector renders from CAREN's own template (proven equal to
/// Go's rendering by gotemplate/tests/template_differential.rs and tests/tests/caaph_rendering.rs).
async fn caren_values(env: &ExecutorEnv) -> String {
    let mut client = env.executor.client().await.unwrap();
    let plan = client
        .plan_agent(konnector_proto::v1::PlanAgentRequest {
            cluster: Some(env.cluster_ref()),
        })
        .await
        .unwrap()
        .into_inner();
    let hcp = konnector_proto::struct_to_json(plan.helm_chart_proxy.as_ref().unwrap());
    hcp["spec"]["valuesTemplate"].as_str().unwrap().to_owned()
}

fn names(list: &[DynamicObject]) -> Vec<String> {
    list.iter().filter_map(|h| h.metadata.name.clone()).collect()
}

#[tokio::test]
async fn konnector_and_caren_converge_on_one_object_and_stop_writing() {
    let env = env("caren-converge").await;
    annotate_with_caren_uuid(&env).await;
    let values = caren_values(&env).await;
    assert!(
        values.starts_with("agent:\n  name: konnector-agent\n"),
        "CAREN's own template: {values}"
    );

    // Either may come first; then both keep re-applying, as their hooks fire.
    caren_like_apply(&env, &values).await;
    konnector_apply(&env).await;
    let name = format!("konnector-agent-{UUID}");
    let settled = hcps(&env).get(&name).await.unwrap();
    let mut versions = BTreeMap::new();
    for round in 0..4 {
        konnector_apply(&env).await;
        caren_like_apply(&env, &values).await;
        let rv = hcps(&env)
            .get(&name)
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        versions.insert(round, rv);
    }
    assert!(
        versions
            .values()
            .all(|rv| Some(rv) == settled.metadata.resource_version.as_ref()),
        "once they agree, neither changes the object: {versions:?} vs {:?}",
        settled.metadata.resource_version
    );
    let all = hcps(&env).list(&Default::default()).await.unwrap().items;
    assert_eq!(
        names(&all),
        std::slice::from_ref(&name),
        "one HelmChartProxy for the release"
    );
    // Both managers own the shared fields; neither took the other's.
    let managers: Vec<String> = settled
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&CAREN_MANAGER.to_owned()) && managers.contains(&"konnector".to_owned()),
        "{managers:?}"
    );
}

#[tokio::test]
async fn before_cluster_delete_uninstalls_what_caren_installed() {
    let env = env("caren-delete").await;
    annotate_with_caren_uuid(&env).await;
    let values = caren_values(&env).await;
    // Only CAREN ever applied: konnector takes over at deletion.
    caren_like_apply(&env, &values).await;
    env.start_deletion().await.unwrap();
    let mut client = env.executor.client().await.unwrap();
    let first = client
        .remove_agent(RemoveAgentRequest {
            cluster: Some(env.cluster_ref()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        UninstallPhase::try_from(first.phase).unwrap(),
        UninstallPhase::NotNeeded,
        "CAREN's HelmChartProxy is an install to remove: {first:?}"
    );
    let last = support::remove_until_done(&env.executor, env.cluster_ref())
        .await
        .pop()
        .unwrap();
    assert_eq!(
        UninstallPhase::try_from(last.phase).unwrap(),
        UninstallPhase::Completed,
        "{last:?}"
    );
    assert!(
        hcps(&env)
            .get_opt(&format!("konnector-agent-{UUID}"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn an_upgrade_leaves_exactly_one_helm_chart_proxy() {
    let env = env("caren-upgrade").await;
    // konnector installed the Cluster before CAREN annotated it: konnector-agent-<name>.
    konnector_apply(&env).await;
    assert_eq!(
        names(&hcps(&env).list(&Default::default()).await.unwrap().items),
        ["konnector-agent-c1"]
    );
    // Then CAREN's webhook annotated the Cluster. BeforeClusterUpgrade: konnector keeps the proxy that drives the
    // release (adopts it under its name) instead of creating CAREN's name and deleting it, which made CAAPH
    // uninstall the agent.
    annotate_with_caren_uuid(&env).await;
    konnector_apply(&env).await;
    assert_eq!(
        names(&hcps(&env).list(&Default::default()).await.unwrap().items),
        ["konnector-agent-c1"]
    );
    // CAREN's own BeforeClusterUpgrade then writes its proxy beside it: two proxies, CAREN's doing. konnector
    // deletes neither (either deletion uninstalls the release); it reports the pair (tests/tests/caren_names.rs).
    let values: Value = caren_values(&env).await.into();
    caren_like_apply(&env, values.as_str().unwrap()).await;
    konnector_apply(&env).await;
    assert_eq!(
        names(&hcps(&env).list(&Default::default()).await.unwrap().items),
        [format!("konnector-agent-{UUID}"), "konnector-agent-c1".to_owned()]
    );
    assert_eq!(
        env.executor.metrics.kube_request_count_by_verb(
            "management",
            Some("delete"),
            Some("helmchartproxies")
        ),
        0,
        "konnector deleted no HelmChartProxy"
    );
}

/// Sets the chart version in the helm-addons ConfigMap konnector and the CAREN emulation both read.
async fn set_chart_version(env: &ExecutorEnv, version: &str) {
    Api::<ConfigMap>::namespaced(env.admin.clone(), CAREN_NAMESPACE)
        .patch(
            "default-helm-addons-config",
            &PatchParams::apply("test").force(),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "default-helm-addons-config", "namespace": CAREN_NAMESPACE},
                "data": {"konnector-agent": format!("ChartName: konnector-agent\nChartVersion: {version}\nRepositoryURL: oci://helm-repository.caren-system.svc/charts\n")},
            })),
        )
        .await
        .unwrap();
}

/// A reconciler beside the hooks' executor, reading CAREN's ConfigMaps as the hooks' one does.
async fn reconciler(env: &ExecutorEnv, identity: &str) -> RunningExecutor {
    start_reconciling_executor(
        &env.mgmt,
        ExecutorConfig {
            defaults_namespace: CAREN_NAMESPACE.to_owned(),
            ..ExecutorConfig::default()
        },
        fast_reconcile(identity),
    )
    .await
    .unwrap()
}

/// Every reconcile the executor has finished, whatever its result.
fn all_passes(executor: &RunningExecutor) -> u64 {
    [
        "in_sync",
        "checked",
        "installed",
        "repaired",
        "rotated",
        "skipped",
        "error",
        "uninstalled",
    ]
    .iter()
    .map(|r| executor.metrics.reconciles(r))
    .sum()
}

/// Waits until the reconciler has finished `n` more passes: proof that it looked.
async fn passes(executor: &RunningExecutor, n: u64) {
    let before = all_passes(executor);
    support::eventually(&format!("{n} more reconciles"), || async {
        all_passes(executor) >= before + n
    })
    .await;
}

async fn proxy_version(env: &ExecutorEnv) -> Value {
    hcps(env)
        .get(&format!("konnector-agent-{UUID}"))
        .await
        .unwrap()
        .data["spec"]["version"]
        .clone()
}

/// Issue 24 item 1. CAREN runs its agents at a newer chart than konnector's ConfigMaps name: the reconciler, started
/// beside it, must not push the ConfigMaps' chart (a fleet downgrade). And a BeforeClusterUpgrade that moves the
/// chart, followed by CAREN's own hook, must not be reverted to the chart the reconciler saw before.
#[tokio::test]
async fn the_reconciler_leaves_the_chart_of_a_proxy_caren_co_manages_to_the_hooks() {
    let env = env("caren-pin").await;
    annotate_with_caren_uuid(&env).await;
    let values = caren_values(&env).await;
    // CAREN's agents run 1.5.0; konnector's ConfigMap (here the one both read) says 1.4.0.
    caren_like_apply_at(&env, &values, "1.5.0").await;
    let reconciler = reconciler(&env, "caren-pin").await;
    passes(&reconciler, 3).await;
    assert_eq!(
        proxy_version(&env).await,
        "1.5.0",
        "the reconciler changed CAREN's chart"
    );

    // BeforeClusterUpgrade: both hooks apply the new chart, konnector's first.
    set_chart_version(&env, "1.6.0").await;
    konnector_apply(&env).await;
    caren_like_apply_at(&env, &values, "1.6.0").await;
    passes(&reconciler, 3).await;
    assert_eq!(
        proxy_version(&env).await,
        "1.6.0",
        "the reconciler reverted an upgrade"
    );
    // Between hooks the ConfigMap moves on; the chart does not.
    set_chart_version(&env, "1.7.0").await;
    passes(&reconciler, 3).await;
    assert_eq!(
        proxy_version(&env).await,
        "1.6.0",
        "the reconciler moved the chart outside a hook"
    );
    reconciler.stop().await.unwrap();
}

/// What CAREN copies to the workload cluster: the source Secret's data verbatim, every key, under CAREN's field
/// manager with force.
async fn caren_like_copy(env: &ExecutorEnv) {
    let source = Api::<Secret>::namespaced(env.admin.clone(), TEST_NAMESPACE)
        .get(TEST_CREDENTIALS_SECRET)
        .await
        .unwrap();
    let wl = env.workload.client().await.unwrap();
    Api::<Secret>::namespaced(wl, "ntnx-system")
        .patch(
            "konnector-agent",
            &PatchParams::apply(CAREN_MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "konnector-agent", "namespace": "ntnx-system"},
                "type": source.type_,
                "data": source.data,
            })),
        )
        .await
        .unwrap();
}

/// Issue 24 item 4. CAREN copies every key of the source Secret; konnector copies username and password. The key
/// konnector leaves out must not read as drift forever; and a rotation right after CAREN's copy is a rotation: the
/// agent is restarted.
#[tokio::test]
async fn extra_keys_caren_copied_are_not_drift_and_a_rotation_after_carens_copy_restarts_the_agent() {
    let env = env("caren-keys").await;
    annotate_with_caren_uuid(&env).await;
    let wl = env.workload.client().await.unwrap();
    // The source carries a key konnector does not copy.
    workload::put_credentials_secret(
        &env.admin,
        TEST_NAMESPACE,
        TEST_CREDENTIALS_SECRET,
        &[
            ("username", "admin"),
            ("password", "first-PA55"),
            ("region", "emea"),
        ],
    )
    .await
    .unwrap();
    konnector_apply(&env).await;
    caren_like_copy(&env).await;
    let deployments: Api<Deployment> = Api::namespaced(wl.clone(), "ntnx-system");
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "konnector-agent"},
                "spec": {
                    "selector": {"matchLabels": {"app": "konnector-agent"}},
                    "template": {
                        "metadata": {"labels": {"app": "konnector-agent"}},
                        "spec": {"containers": [{"name": "agent", "image": "example.invalid/agent:1"}]}
                    }
                }
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let reconciler = reconciler(&env, "caren-keys").await;
    // In sync, again and again: the extra key is CAREN's, not a difference konnector could ever repair. (A full
    // pass may repair once, e.g. the PSA label CAREN's Namespace apply leaves out; then never again.)
    support::eventually("a full pass in sync with CAREN's extra key", || async {
        reconciler.metrics.reconciles("in_sync") >= 1
    })
    .await;
    let repaired = reconciler.metrics.reconciles("repaired");
    passes(&reconciler, 3).await;
    assert_eq!(
        reconciler.metrics.reconciles("repaired"),
        repaired,
        "repaired again and again"
    );
    let secret = Api::<Secret>::namespaced(wl.clone(), "ntnx-system")
        .get("konnector-agent")
        .await
        .unwrap();
    assert!(
        secret.data.unwrap().contains_key("region"),
        "CAREN's key is left alone"
    );

    // Rotation right after CAREN's copy (CAREN owns the copied keys now): the agent is restarted.
    let rotated = reconciler.metrics.reconciles("rotated");
    workload::put_credentials_secret(
        &env.admin,
        TEST_NAMESPACE,
        TEST_CREDENTIALS_SECRET,
        &[
            ("username", "admin"),
            ("password", "second-PA55"),
            ("region", "emea"),
        ],
    )
    .await
    .unwrap();
    support::eventually("agent restarted for the rotation", || async {
        deployments
            .get("konnector-agent")
            .await
            .unwrap()
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .is_some_and(|a| a.contains_key(CREDENTIALS_ROTATED_ANNOTATION))
    })
    .await;
    // The pass counts itself after the restart and its Event: wait for the count.
    support::eventually("the rotation pass is counted", || async {
        reconciler.metrics.reconciles("rotated") > rotated
    })
    .await;
    let password = Api::<Secret>::namespaced(wl.clone(), "ntnx-system")
        .get("konnector-agent")
        .await
        .unwrap()
        .data
        .unwrap()["password"]
        .0
        .clone();
    assert_eq!(password, b"second-PA55");
    reconciler.stop().await.unwrap();
}
