//! The reconciler against real API servers: every repair happens without a hook, through the executor's shipped
//! RBAC (ClusterRole and the Lease Role). Polling loops have a generous hang guard; nothing asserts on speed.

use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{Namespace, Secret},
    },
};
use konnector_executor::{ExecutorConfig, names::CREDENTIALS_ROTATED_ANNOTATION};
use konnector_proto::v1::GetAgentStatusRequest;
use konnector_tests::{
    caaph_stand_in::hcp_resource,
    executor_fixture::{
        EXECUTOR_SERVICE_ACCOUNT, ExecutorEnv, RunningExecutor, TEST_CLUSTER, TEST_CREDENTIALS_SECRET,
        TEST_NAMESPACE, TEST_PASSWORD, TEST_PC_URL, addon_cluster_config, cluster_event_reasons,
        executor_env, fast_reconcile, start_reconciling_executor,
    },
    workload::{ClusterOptions, put_credentials_secret},
};
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
};
use serde_json::json;
// The tests' reconciler resyncs every second (the default is 30 s), far inside the shared hang guard.
use konnector_tests::support::eventually;

const PSA_LABEL: &str = "pod-security.kubernetes.io/enforce";
const ROTATED_PASSWORD: &str = "r0tat3d-PA55-konnector";

/// Waits until `executor` has finished at least `n` more reconciles with `result` than `before`: proof that the
/// reconciler looked, for the tests that assert it changed nothing.
async fn passes(executor: &RunningExecutor, result: &str, before: u64, n: u64) {
    eventually(&format!("{n} more '{result}' reconciles"), || async {
        executor.metrics.reconciles(result) >= before + n
    })
    .await;
}

fn not_configured() -> serde_json::Value {
    json!({"nutanix": {"prismCentralEndpoint": {"url": TEST_PC_URL, "insecure": true}}})
}

async fn env(name: &str, options: ClusterOptions) -> ExecutorEnv {
    konnector_tests::init_test_logging();
    executor_env(name, ExecutorConfig::default(), options)
        .await
        .unwrap()
}

async fn workload_secret(wl: &Client) -> Option<Secret> {
    Api::<Secret>::namespaced(wl.clone(), "ntnx-system")
        .get_opt("konnector-agent")
        .await
        .unwrap()
}

async fn workload_password(wl: &Client) -> Option<Vec<u8>> {
    workload_secret(wl)
        .await
        .and_then(|s| s.data)
        .and_then(|d| d.get("password").map(|b| b.0.clone()))
}

async fn hcp(admin: &Client) -> Option<DynamicObject> {
    Api::<DynamicObject>::namespaced_with(admin.clone(), TEST_NAMESPACE, &hcp_resource())
        .get_opt("konnector-agent-c1")
        .await
        .unwrap()
}

async fn events(env: &ExecutorEnv) -> Vec<String> {
    cluster_event_reasons(&env.admin, TEST_NAMESPACE, TEST_CLUSTER)
        .await
        .unwrap()
}

/// Addon enabled late, rotation, Secret deleted and edited, PSA label removed, HelmChartProxy deleted and edited:
/// each repaired by the reconciler alone, with an Event, a status line and a metric.
#[tokio::test]
async fn reconciler_installs_late_and_repairs_every_drift() {
    let env = env(
        "rec-drift",
        ClusterOptions {
            cluster_config: Some(not_configured()),
            ..ClusterOptions::initialized()
        },
    )
    .await;
    let wl = env.workload.client().await.unwrap();
    let reconciler =
        start_reconciling_executor(&env.mgmt, ExecutorConfig::default(), fast_reconcile("rec-a"))
            .await
            .unwrap();
    // Not configured: the reconciler looks and does nothing.
    passes(&reconciler, "skipped", 0, 2).await;
    assert!(hcp(&env.admin).await.is_none());

    // Enabling the addon on the running Cluster installs without a hook.
    env.set_cluster_config(addon_cluster_config(TEST_CREDENTIALS_SECRET))
        .await
        .unwrap();
    eventually("late install", || async {
        hcp(&env.admin).await.is_some() && workload_password(&wl).await.is_some()
    })
    .await;
    assert_eq!(workload_password(&wl).await.unwrap(), TEST_PASSWORD.as_bytes());
    eventually("AgentInstalled event", || async {
        events(&env).await.contains(&"AgentInstalled".to_owned())
    })
    .await;

    // Rotation: the new password reaches the workload cluster, and the agent's Deployment is rolled.
    let deployments: Api<Deployment> = Api::namespaced(wl.clone(), "ntnx-system");
    deployments
        .create(
            &Default::default(),
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
    put_credentials_secret(
        &env.admin,
        TEST_NAMESPACE,
        TEST_CREDENTIALS_SECRET,
        &[("username", "admin"), ("password", ROTATED_PASSWORD)],
    )
    .await
    .unwrap();
    eventually("rotated password on the workload cluster", || async {
        workload_password(&wl).await.as_deref() == Some(ROTATED_PASSWORD.as_bytes())
    })
    .await;
    eventually("agent rolled", || async {
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
    eventually("CredentialsRotated event", || async {
        events(&env).await.contains(&"CredentialsRotated".to_owned())
    })
    .await;
    // A pass counts itself last, after its Event and the agent restart: wait for the count.
    passes(&reconciler, "rotated", 0, 1).await;

    // The workload Secret deleted: restored.
    let secrets: Api<Secret> = Api::namespaced(wl.clone(), "ntnx-system");
    secrets
        .delete("konnector-agent", &Default::default())
        .await
        .unwrap();
    eventually("Secret restored", || async {
        workload_password(&wl).await.as_deref() == Some(ROTATED_PASSWORD.as_bytes())
    })
    .await;

    // The workload Secret edited by someone else: restored, and reported as drift, not rotation.
    let rotated_before = reconciler.metrics.reconciles("rotated");
    secrets
        .patch(
            "konnector-agent",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Secret",
                "data": {"password": ByteString(b"tampered".to_vec())}
            })),
        )
        .await
        .unwrap();
    eventually("edited Secret restored", || async {
        workload_password(&wl).await.as_deref() == Some(ROTATED_PASSWORD.as_bytes())
    })
    .await;
    assert_eq!(reconciler.metrics.reconciles("rotated"), rotated_before);

    // The PSA label removed: restored.
    let namespaces: Api<Namespace> = Api::all(wl.clone());
    namespaces
        .patch(
            "ntnx-system",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {PSA_LABEL: null}}})),
        )
        .await
        .unwrap();
    eventually("PSA label restored", || async {
        namespaces
            .get("ntnx-system")
            .await
            .unwrap()
            .metadata
            .labels
            .is_some_and(|l| l.get(PSA_LABEL).map(String::as_str) == Some("privileged"))
    })
    .await;

    // The HelmChartProxy deleted after the chart version in the ConfigMap moved on: restored with the version it
    // had (CAREN semantics: the chart moves at BeforeClusterUpgrade only).
    let before = hcp(&env.admin).await.unwrap();
    let version = before.data["spec"]["version"].clone();
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(env.admin.clone(), "default")
        .patch(
            "default-helm-addons-config",
            &PatchParams::apply("test").force(),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "default-helm-addons-config", "namespace": "default"},
                "data": {"konnector-agent": "ChartName: konnector-agent\nChartVersion: 9.9.9\nRepositoryURL: https://example.invalid/charts\n"}
            })),
        )
        .await
        .unwrap();
    let hcps: Api<DynamicObject> = Api::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource());
    hcps.delete("konnector-agent-c1", &Default::default())
        .await
        .unwrap();
    eventually("HelmChartProxy restored", || async {
        hcp(&env.admin)
            .await
            .is_some_and(|h| h.metadata.uid != before.metadata.uid)
    })
    .await;
    assert_eq!(hcp(&env.admin).await.unwrap().data["spec"]["version"], version);

    // The HelmChartProxy edited outside an uninstall: restored.
    hcps.patch(
        "konnector-agent-c1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"releaseName": "hijacked"}})),
    )
    .await
    .unwrap();
    eventually("HelmChartProxy edit reverted", || async {
        hcp(&env.admin).await.unwrap().data["spec"]["releaseName"] == "konnector-agent"
    })
    .await;
    // Its chart version edited by hand: reverted to the version a hook applied, not to the ConfigMap's.
    hcps.patch(
        "konnector-agent-c1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"version": "0.0.1-hand-edit"}})),
    )
    .await
    .unwrap();
    eventually("chart version edit reverted", || async {
        hcp(&env.admin).await.unwrap().data["spec"]["version"] == version
    })
    .await;
    eventually("DriftRepaired event", || async {
        events(&env).await.contains(&"DriftRepaired".to_owned())
    })
    .await;
    passes(&reconciler, "repaired", 0, 4).await;

    // GetAgentStatus reports the last reconcile, from the replica that reconciles.
    let mut client = reconciler.client().await.unwrap();
    let status = client
        .get_agent_status(GetAgentStatusRequest {
            cluster: Some(env.cluster_ref()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!status.last_reconcile_time.is_empty());
    assert!(!status.last_reconcile_result.is_empty());
    // No credential anywhere it could be read back.
    let all = format!(
        "{status:?} {:?}",
        cluster_event_reasons(&env.admin, TEST_NAMESPACE, TEST_CLUSTER).await
    );
    for secret in [TEST_PASSWORD, ROTATED_PASSWORD] {
        assert!(!all.contains(secret));
    }
    let notes = konnector_tests::executor_fixture::cluster_events(&env.admin, TEST_NAMESPACE, TEST_CLUSTER)
        .await
        .unwrap();
    for e in notes {
        let note = e.note.unwrap_or_default();
        for password in [TEST_PASSWORD, ROTATED_PASSWORD] {
            konnector_tests::support::assert_no_secret("an Event", &note, password);
        }
    }
    reconciler.stop().await.unwrap();
}

/// Removing `konnectorAgent` uninstalls only behind the opt-in flag; a Cluster being deleted is left alone.
#[tokio::test]
async fn removal_needs_the_flag_and_deleting_clusters_are_left_alone() {
    let env = env("rec-remove", ClusterOptions::initialized()).await;
    let wl = env.workload.client().await.unwrap();
    let reconciler =
        start_reconciling_executor(&env.mgmt, ExecutorConfig::default(), fast_reconcile("rec-b"))
            .await
            .unwrap();
    eventually("install", || async { hcp(&env.admin).await.is_some() }).await;

    // Without the flag: the agent stays.
    env.set_cluster_config(not_configured()).await.unwrap();
    let skipped = reconciler.metrics.reconciles("skipped");
    passes(&reconciler, "skipped", skipped, 3).await;
    assert!(hcp(&env.admin).await.is_some());
    assert!(workload_secret(&wl).await.is_some());
    reconciler.stop().await.unwrap();

    // With the flag: uninstalled.
    let mut config = fast_reconcile("rec-b");
    config.uninstall_removed = true;
    // Watched per namespace, as a confined executor (chart `executor.clusterNamespaces`) watches: the Cluster's
    // namespace and one without Clusters.
    config.namespaces = vec![TEST_NAMESPACE.to_owned(), "no-clusters-here".to_owned()];
    let reconciler = start_reconciling_executor(&env.mgmt, ExecutorConfig::default(), config)
        .await
        .unwrap();
    eventually("uninstall", || async {
        hcp(&env.admin).await.is_none() && workload_secret(&wl).await.is_none()
    })
    .await;
    passes(&reconciler, "uninstalled", 0, 1).await;

    // Configured again, installed again; then deletion starts and drift is no longer repaired.
    env.set_cluster_config(addon_cluster_config(TEST_CREDENTIALS_SECRET))
        .await
        .unwrap();
    eventually("reinstall", || async {
        hcp(&env.admin).await.is_some() && workload_secret(&wl).await.is_some()
    })
    .await;
    env.start_deletion().await.unwrap();
    // A pass already under way when deletion began may still write (as a hook would, and then takes its
    // HelmChartProxy back); drift made after the reconciler has seen the deletion must stay.
    let skipped = reconciler.metrics.reconciles("skipped");
    passes(&reconciler, "skipped", skipped, 1).await;
    let hcp_present = hcp(&env.admin).await.is_some();
    Api::<Secret>::namespaced(wl.clone(), "ntnx-system")
        .delete("konnector-agent", &Default::default())
        .await
        .unwrap();
    let skipped = reconciler.metrics.reconciles("skipped");
    passes(&reconciler, "skipped", skipped, 3).await;
    assert!(
        workload_secret(&wl).await.is_none(),
        "a deleting Cluster was touched"
    );
    assert!(
        hcp(&env.admin).await.is_some() == hcp_present,
        "the reconciler must not uninstall; RemoveAgent does"
    );
    reconciler.stop().await.unwrap();
}

async fn lease_holder(admin: &Client) -> Option<String> {
    Api::<Lease>::namespaced(admin.clone(), EXECUTOR_SERVICE_ACCOUNT.0)
        .get_opt("konnector-executor-reconciler")
        .await
        .unwrap()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

/// Two executors share one management cluster: one reconciles; kill it, and the other takes over.
#[tokio::test]
async fn the_other_replica_takes_over_when_the_leader_dies() {
    let env = env("rec-ha", ClusterOptions::initialized()).await;
    let wl = env.workload.client().await.unwrap();
    let a = start_reconciling_executor(&env.mgmt, ExecutorConfig::default(), fast_reconcile("replica-a"))
        .await
        .unwrap();
    eventually("a leader", || async { lease_holder(&env.admin).await.is_some() }).await;
    let b = start_reconciling_executor(&env.mgmt, ExecutorConfig::default(), fast_reconcile("replica-b"))
        .await
        .unwrap();
    eventually("install", || async { workload_secret(&wl).await.is_some() }).await;
    let leader = lease_holder(&env.admin).await.unwrap();
    let (leader, follower, follower_name) = if leader == "replica-a" {
        (a, b, "replica-b")
    } else {
        (b, a, "replica-a")
    };
    // Only the leader reconciles.
    let follower_before: u64 = ["in_sync", "checked", "installed", "repaired", "skipped", "error"]
        .iter()
        .map(|r| follower.metrics.reconciles(r))
        .sum();
    passes(&leader, "checked", leader.metrics.reconciles("checked"), 3).await;
    assert_eq!(follower_before, 0, "the follower reconciled");

    leader.kill();
    // A killed leader does not give the Lease up: the follower takes it once it has gone unrenewed. Waiting for
    // that first means the repair below can only be the follower's (a pass the dying leader had in flight could
    // otherwise restore the Secret before the takeover).
    eventually("the follower takes the Lease over", || async {
        lease_holder(&env.admin).await.as_deref() == Some(follower_name)
    })
    .await;
    let repaired_before = follower.metrics.reconciles("repaired");
    Api::<Secret>::namespaced(wl.clone(), "ntnx-system")
        .delete("konnector-agent", &Default::default())
        .await
        .unwrap();
    eventually("the follower restores the Secret", || async {
        workload_secret(&wl).await.is_some()
    })
    .await;
    passes(&follower, "repaired", repaired_before, 1).await;
    follower.stop().await.unwrap();
}

/// The watches list metadata only (PartialObjectMetadata), a bounded page at a time: a tenant's large Clusters
/// never cross the wire in a list. Six of these seven Clusters weigh about 150 KiB each (a large topology
/// variable); the executor here takes at most 256 KiB from the management API server in one response, which one
/// whole Cluster fits in (a pass GETs it) but no page of three whole Clusters does, and it lists 3 Clusters a page.
/// Every Cluster is reconciled, so every list page fit: only metadata was listed.
#[tokio::test]
async fn the_watches_list_metadata_only_in_bounded_pages() {
    use konnector_tests::workload::create_workload_cluster;
    let env = env("meta-pages", ClusterOptions::initialized()).await;
    let padding = "x".repeat(150 * 1024);
    for i in 0..6 {
        create_workload_cluster(
            &env.admin,
            &env.workload,
            TEST_NAMESPACE,
            &format!("big-{i}"),
            ClusterOptions {
                spec: Some(json!({
                    "controlPlaneEndpoint": {"host": "127.0.0.1", "port": env.workload.port()},
                    "topology": {"classRef": {"name": "konnector-test"}, "version": "v1.33.0", "variables": [
                        {"name": "clusterConfig", "value": addon_cluster_config(TEST_CREDENTIALS_SECRET)},
                        {"name": "padding", "value": padding},
                    ]},
                })),
                ..ClusterOptions::initialized()
            },
        )
        .await
        .unwrap();
    }
    // As stored, a whole Cluster does carry its padding: three of them are over the limit below.
    let version = konnector_tests::workload::served_cluster_version(&env.admin)
        .await
        .unwrap();
    let stored: Api<DynamicObject> = Api::namespaced_with(
        env.admin.clone(),
        TEST_NAMESPACE,
        &konnector_tests::workload::cluster_resource(version),
    );
    let whole = serde_json::to_vec(&stored.get("big-0").await.unwrap())
        .unwrap()
        .len();
    assert!(3 * whole > 256 * 1024 && whole < 200 * 1024, "{whole} bytes");
    let mut reconcile = fast_reconcile("meta-pages");
    reconcile.page_size = 3;
    let executor = start_reconciling_executor(
        &env.mgmt,
        ExecutorConfig {
            management_response_limit_bytes: 256 * 1024,
            ..ExecutorConfig::default()
        },
        reconcile,
    )
    .await
    .unwrap();
    let m = executor.metrics.clone();
    // Pages of whole Clusters would not fit the limit; the reconciler sees and installs all seven.
    eventually("every Cluster installed by the reconciler", || async {
        m.reconciles("installed") + m.reconciles("in_sync") >= 7
    })
    .await;
    // The count above may hold two passes of one Cluster (an install, then the pass its own proxy's event
    // triggers), so wait for this Cluster's own pass rather than read its status at once.
    let big5 = || async {
        executor
            .client()
            .await
            .unwrap()
            .get_agent_status(GetAgentStatusRequest {
                cluster: Some(konnector_proto::v1::ClusterRef {
                    namespace: TEST_NAMESPACE.into(),
                    name: "big-5".into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
    };
    eventually("big-5 reconciled", || async {
        !big5().await.last_reconcile_result.is_empty()
    })
    .await;
    let status = big5().await;
    assert!(
        !status.last_reconcile_result.is_empty() && !status.last_reconcile_result.starts_with("error"),
        "{status:?}"
    );
    // Seven Clusters at three a page: at least three list requests for the first list.
    let lists = m.kube_request_count_by_verb("management", Some("list"), Some("clusters"));
    assert!(lists >= 3, "{lists} list request(s) for 7 Clusters at 3 a page");
}

/// Issue 24 item 5: CAPI sends hooks only for Clusters in namespaces the ExtensionConfig's namespaceSelector selects,
/// so the reconciler acts on those only. Here the Cluster's namespace is not selected at first: the reconciler looks
/// (counted as `not_selected`) and installs nothing; once the namespace gains the label, it installs.
#[tokio::test]
async fn the_reconciler_honours_the_namespace_selector() {
    let env = env("rec-nssel", ClusterOptions::initialized()).await;
    let wl = env.workload.client().await.unwrap();
    let mut config = fast_reconcile("rec-nssel");
    config.namespace_selector = Some(
        serde_json::from_value(json!({"matchExpressions": [
            {"key": "konnector.example/hooks", "operator": "In", "values": ["on"]}
        ]}))
        .unwrap(),
    );
    let reconciler = start_reconciling_executor(&env.mgmt, ExecutorConfig::default(), config)
        .await
        .unwrap();
    passes(&reconciler, "not_selected", 0, 3).await;
    assert!(
        hcp(&env.admin).await.is_none(),
        "acted on a Cluster CAPI sends no hooks for"
    );
    assert!(workload_secret(&wl).await.is_none());
    assert_eq!(reconciler.metrics.reconciles("installed"), 0);

    Api::<Namespace>::all(env.admin.clone())
        .patch(
            TEST_NAMESPACE,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"konnector.example/hooks": "on"}}})),
        )
        .await
        .unwrap();
    eventually("install once the namespace is selected", || async {
        hcp(&env.admin).await.is_some() && workload_secret(&wl).await.is_some()
    })
    .await;
    reconciler.stop().await.unwrap();
}

/// Issue 26 item 1: management-side changes are seen by watches and repaired at once. The drift-check period here is
/// an hour, so no periodic pass can be what repairs them: a rotated credentials Secret, a deleted and an edited
/// HelmChartProxy are each repaired by an event-triggered pass, and between them the reconciler makes no pass at all.
#[tokio::test]
async fn management_changes_are_repaired_by_watch_events_without_polling() {
    let env = env("rec-events", ClusterOptions::initialized()).await;
    let wl = env.workload.client().await.unwrap();
    let mut config = fast_reconcile("rec-events");
    config.resync = std::time::Duration::from_secs(3600);
    // Installed by the hook, before the reconciler starts: its first full pass would only come at its slot.
    let mut client = env.executor.client().await.unwrap();
    client
        .apply_agent(konnector_proto::v1::ApplyAgentRequest {
            cluster: Some(env.cluster_ref()),
            trigger: konnector_proto::v1::Trigger::AfterControlPlaneInitialized as i32,
        })
        .await
        .unwrap();
    let reconciler = start_reconciling_executor(&env.mgmt, ExecutorConfig::default(), config)
        .await
        .unwrap();
    // Leading is not enough: a change made before a watch's first list is no event, only the Cluster's full pass
    // in its slot (an hour away here) would see it. A watch request follows each completed list, so wait for one on
    // each watched resource (CI once deleted the proxy between the Lease and the list).
    eventually("the reconciler leads and its watches have listed", || async {
        lease_holder(&env.admin).await.as_deref() == Some("rec-events")
            && ["clusters", "helmchartproxies", "secrets"].iter().all(|r| {
                reconciler
                    .metrics
                    .kube_request_count_by_verb("management", Some("watch"), Some(r))
                    >= 1
            })
    })
    .await;

    // The HelmChartProxy deleted: an event on it triggers its Cluster's pass.
    let hcps: Api<DynamicObject> = Api::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource());
    let before = hcp(&env.admin).await.unwrap();
    hcps.delete("konnector-agent-c1", &Default::default())
        .await
        .unwrap();
    eventually("HelmChartProxy restored", || async {
        hcp(&env.admin)
            .await
            .is_some_and(|h| h.metadata.uid != before.metadata.uid)
    })
    .await;

    // Edited: reverted.
    hcps.patch(
        "konnector-agent-c1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"releaseName": "hijacked"}})),
    )
    .await
    .unwrap();
    eventually("HelmChartProxy edit reverted", || async {
        hcp(&env.admin).await.unwrap().data["spec"]["releaseName"] == "konnector-agent"
    })
    .await;

    // Credentials rotated: the metadata watch on Secrets triggers the pass that copies them.
    put_credentials_secret(
        &env.admin,
        TEST_NAMESPACE,
        TEST_CREDENTIALS_SECRET,
        &[("username", "admin"), ("password", ROTATED_PASSWORD)],
    )
    .await
    .unwrap();
    eventually("rotated password on the workload cluster", || async {
        workload_password(&wl).await.as_deref() == Some(ROTATED_PASSWORD.as_bytes())
    })
    .await;
    // A pass counts itself last, after its Event and the agent restart: wait for the count.
    passes(&reconciler, "rotated", 0, 1).await;
    // No periodic check ran in an hour's period that started seconds ago... unless this Cluster's slot fell in
    // these seconds; either way no more than one.
    assert!(reconciler.metrics.reconciles("checked") <= 1);
    reconciler.stop().await.unwrap();
}

/// Issue 26 item 1, the ConfigMap part: with `follow_defaults`, a change to the defaults ConfigMap's chart version
/// moves a following Cluster's proxy, with a one-hour drift-check period so only the ConfigMap event can do it.
#[tokio::test]
async fn a_defaults_change_moves_the_clusters_that_follow_them() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let env = env("rec-defaults", ClusterOptions::initialized()).await;
    let cms = Api::<ConfigMap>::namespaced(env.admin.clone(), "default");
    let chart = |version: &str| {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "default-helm-addons-config", "namespace": "default"},
            "data": {"konnector-agent": format!(
                "ChartName: konnector-agent\nChartVersion: {version}\nRepositoryURL: oci://helm-repository.caren-system.svc/charts\n"
            )},
        })
    };
    let put = |version: &str| {
        let body = chart(version);
        let cms = cms.clone();
        async move {
            cms.patch(
                "default-helm-addons-config",
                &PatchParams::apply("test").force(),
                &Patch::Apply(&body),
            )
            .await
            .unwrap();
        }
    };
    put("1.4.0").await;
    // Installed by a hook, as CAPI does: the reconciler's first pass would wait for the Cluster's slot.
    konnector_tests::support::apply_agent(
        &env.executor,
        env.cluster_ref(),
        konnector_proto::v1::Trigger::AfterControlPlaneInitialized,
    )
    .await
    .unwrap();
    assert_eq!(hcp(&env.admin).await.unwrap().data["spec"]["version"], "1.4.0");

    let mut config = fast_reconcile("rec-defaults");
    config.resync = std::time::Duration::from_secs(3600);
    config.follow_defaults = true;
    let reconciler = start_reconciling_executor(&env.mgmt, ExecutorConfig::default(), config)
        .await
        .unwrap();
    // The reconciler leads and its ConfigMap watches have listed (a watch request follows each list).
    eventually("the reconciler watches the defaults", || async {
        lease_holder(&env.admin).await.as_deref() == Some("rec-defaults")
            && reconciler
                .metrics
                .kube_request_count_by_verb("management", Some("watch"), Some("configmaps"))
                >= 2
    })
    .await;
    let before = reconciler.metrics.reconciles("repaired");
    put("1.5.0").await;
    eventually("the proxy follows the new chart version", || async {
        hcp(&env.admin).await.unwrap().data["spec"]["version"] == "1.5.0"
    })
    .await;
    // The pass counts itself after its DriftRepaired Event is written, which is after the proxy changed: wait for
    // the count rather than read it the moment the proxy moved.
    eventually("the pass that moved the proxy is counted as a repair", || async {
        reconciler.metrics.reconciles("repaired") > before
    })
    .await;
    reconciler.stop().await.unwrap();
}
