//! RemoveAgent and GetAgentStatus against real API servers, with the CAAPH stand-in playing CAAPH.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use konnector_executor::{ExecutorConfig, UninstallTimeoutPolicy};
use konnector_proto::v1::{
    ApplyAgentRequest, ClusterRef, GetAgentStatusResponse, RemoveAgentRequest, RemoveAgentResponse, Trigger,
    UninstallPhase,
};
use konnector_tests::{
    caaph_stand_in::{CaaphOptions, CaaphStandIn, Uninstall, hcp_resource, hrp_resource},
    executor_fixture::{ExecutorEnv, TEST_NAMESPACE, cluster_events, executor_env},
    support,
    workload::ClusterOptions,
};
use kube::{Api, api::DynamicObject};
use tonic::Code;

async fn env(name: &str, config: ExecutorConfig, uninstall: Uninstall) -> (ExecutorEnv, CaaphStandIn) {
    konnector_tests::init_test_logging();
    let env = executor_env(name, config, ClusterOptions::initialized())
        .await
        .unwrap();
    let caaph = CaaphStandIn::start(
        env.admin.clone(),
        CaaphOptions {
            uninstall,
            ..Default::default()
        },
    );
    (env, caaph)
}

async fn try_remove(env: &ExecutorEnv, ctx: ClusterRef) -> Result<RemoveAgentResponse, tonic::Status> {
    let mut client = env.executor.client().await.unwrap();
    client
        .remove_agent(RemoveAgentRequest { cluster: Some(ctx) })
        .await
        .map(tonic::Response::into_inner)
}

async fn remove(env: &ExecutorEnv, ctx: ClusterRef) -> RemoveAgentResponse {
    try_remove(env, ctx).await.unwrap()
}

async fn status(env: &ExecutorEnv) -> GetAgentStatusResponse {
    support::agent_status(&env.executor, env.cluster_ref_without_uid()).await
}

fn phase(p: i32) -> UninstallPhase {
    UninstallPhase::try_from(p).unwrap()
}

/// Applies the agent and waits until the stand-in reports the release installed.
async fn install(env: &ExecutorEnv) {
    let mut client = env.executor.client().await.unwrap();
    client
        .apply_agent(ApplyAgentRequest {
            cluster: Some(env.cluster_ref()),
            trigger: Trigger::AfterControlPlaneInitialized as i32,
        })
        .await
        .unwrap();
    tokio::time::timeout(support::HANG_GUARD, async {
        loop {
            let s = status(env).await;
            let ready = s.helm_release_proxies.len() == 1
                && s.helm_release_proxies[0].release_status == "deployed"
                && s.helm_chart_proxy
                    .as_ref()
                    .and_then(|h| h.ready.as_ref())
                    .is_some_and(|r| r.status == "True");
            if ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the CAAPH stand-in never installed the release");
}

/// Calls RemoveAgent until it answers `phase`, returning that answer; every earlier answer must be IN_PROGRESS.
async fn remove_until(env: &ExecutorEnv, want: UninstallPhase) -> RemoveAgentResponse {
    tokio::time::timeout(support::HANG_GUARD, async {
        loop {
            let r = remove(env, env.cluster_ref()).await;
            if phase(r.phase) == want {
                return r;
            }
            assert_eq!(phase(r.phase), UninstallPhase::InProgress, "{r:?}");
            assert!(!r.done);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("RemoveAgent never reached {want:?}"))
}

#[tokio::test]
async fn not_needed_cases() {
    let (env, _caaph) = env(
        "notneeded",
        ExecutorConfig::default(),
        Uninstall::After(Duration::ZERO),
    )
    .await;

    // The Cluster object is gone.
    let mut ctx = env.cluster_ref();
    ctx.name = "ghost".into();
    let r = remove(&env, ctx).await;
    assert_eq!((r.done, phase(r.phase)), (true, UninstallPhase::NotNeeded));
    assert_eq!(r.message, "the Cluster no longer exists; nothing to uninstall");

    // Being deleted, but nothing was ever installed.
    env.start_deletion().await.unwrap();
    let r = remove(&env, env.cluster_ref()).await;
    assert_eq!(
        (r.done, r.retry_after_seconds, phase(r.phase)),
        (true, 0, UninstallPhase::NotNeeded)
    );
    assert_eq!(
        phase(status(&env).await.uninstall_phase),
        UninstallPhase::NotNeeded
    );

    // Not configured for the addon, being deleted: nothing to find either.
    env.set_cluster_config(serde_json::json!({})).await.unwrap();
    let r = remove(&env, env.cluster_ref()).await;
    assert_eq!((r.done, phase(r.phase)), (true, UninstallPhase::NotNeeded));
}

/// The attack: a BeforeClusterDelete for a live Cluster that is not being deleted. It is refused, and nothing
/// is deleted (the HelmChartProxy keeps its resourceVersion, the release stays installed).
#[tokio::test]
async fn remove_refuses_a_cluster_that_is_not_being_deleted() {
    let (env, _caaph) = env(
        "notdeleting",
        ExecutorConfig::default(),
        Uninstall::After(Duration::ZERO),
    )
    .await;
    install(&env).await;
    let hcps = Api::<DynamicObject>::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource());
    let before = hcps.get("konnector-agent-c1").await.unwrap();
    let err = try_remove(&env, env.cluster_ref()).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("is not being deleted") && err.message().contains("nothing was deleted"),
        "{}",
        err.message()
    );
    let after = hcps.get("konnector-agent-c1").await.unwrap();
    assert_eq!(after.metadata.resource_version, before.metadata.resource_version);
    assert!(after.metadata.deletion_timestamp.is_none());
    let s = status(&env).await;
    assert_eq!(phase(s.uninstall_phase), UninstallPhase::NotStarted);
    assert!(!s.cluster_deleting && s.addon_configured);

    // A stale request (another uid) is refused too, even once the Cluster is being deleted.
    env.start_deletion().await.unwrap();
    let mut stale = env.cluster_ref();
    stale.uid = "00000000-0000-0000-0000-000000000000".into();
    let err = try_remove(&env, stale).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("stale"), "{}", err.message());
    assert!(
        hcps.get("konnector-agent-c1")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );
}

#[tokio::test]
async fn uninstall_runs_to_completion() {
    let (env, _caaph) = env(
        "complete",
        ExecutorConfig::default(),
        Uninstall::After(Duration::from_millis(800)),
    )
    .await;
    install(&env).await;
    let s = status(&env).await;
    assert!(s.credentials_copied, "{s:?}");
    assert_eq!(phase(s.uninstall_phase), UninstallPhase::NotStarted);
    let hcp = s.helm_chart_proxy.unwrap();
    assert!(!hcp.deleting);
    assert_eq!(hcp.finalizers, ["helmchartproxy.addons.cluster.x-k8s.io"]);
    let wl = env.workload.client().await.unwrap();
    let releases: Api<ConfigMap> = Api::namespaced(wl, "ntnx-system");
    assert!(
        releases
            .get_opt("konnector-agent-release")
            .await
            .unwrap()
            .is_some()
    );

    env.start_deletion().await.unwrap();
    let first = remove(&env, env.cluster_ref()).await;
    assert_eq!(phase(first.phase), UninstallPhase::InProgress, "{first:?}");
    assert!(!first.done);
    assert_eq!(first.retry_after_seconds, 10);
    assert!(
        first
            .message
            .starts_with("waiting for CAAPH to uninstall the Konnector Agent"),
        "{}",
        first.message
    );
    let again = remove(&env, env.cluster_ref()).await;
    if phase(again.phase) == UninstallPhase::InProgress {
        assert_eq!(again.message, first.message, "messages are deterministic");
    }
    let s = status(&env).await;
    if let Some(hcp) = &s.helm_chart_proxy {
        assert!(hcp.deleting);
    }

    let done = remove_until(&env, UninstallPhase::Completed).await;
    assert!(done.done);
    assert_eq!(done.retry_after_seconds, 0);
    assert_eq!(
        done.message,
        "Konnector Agent uninstalled: HelmChartProxy clusters/konnector-agent-c1 and its HelmReleaseProxies are gone"
    );
    // Asking again gives the same answer.
    let repeat = remove(&env, env.cluster_ref()).await;
    assert_eq!(
        (repeat.done, repeat.phase, repeat.message),
        (true, done.phase, done.message)
    );

    let hcps = Api::<DynamicObject>::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource());
    assert!(hcps.get_opt("konnector-agent-c1").await.unwrap().is_none());
    let hrps = Api::<DynamicObject>::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hrp_resource());
    assert!(hrps.list(&Default::default()).await.unwrap().items.is_empty());
    assert!(
        releases
            .get_opt("konnector-agent-release")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        phase(status(&env).await.uninstall_phase),
        UninstallPhase::Completed
    );
}

async fn stuck_uninstall(policy: UninstallTimeoutPolicy) -> RemoveAgentResponse {
    let config = ExecutorConfig {
        uninstall_timeout: Duration::from_secs(2),
        uninstall_timeout_policy: policy,
        retry_after_seconds: 3,
        ..ExecutorConfig::default()
    };
    let (env, _caaph) = env(
        &format!("stuck-{policy:?}").to_lowercase(),
        config,
        Uninstall::Never,
    )
    .await;
    install(&env).await;
    env.start_deletion().await.unwrap();
    let first = remove(&env, env.cluster_ref()).await;
    assert_eq!(phase(first.phase), UninstallPhase::InProgress);
    assert_eq!(first.retry_after_seconds, 3);
    let timed_out = remove_until(&env, UninstallPhase::TimedOut).await;
    assert_eq!(
        phase(status(&env).await.uninstall_phase),
        UninstallPhase::TimedOut
    );
    let again = remove(&env, env.cluster_ref()).await;
    assert_eq!(again, timed_out, "a timed-out answer is stable");
    let reason = match policy {
        UninstallTimeoutPolicy::Proceed => "UninstallTimedOutDeletionProceeds",
        UninstallTimeoutPolicy::Block => "UninstallTimedOutDeletionBlocked",
    };
    let events = cluster_events(&env.admin, TEST_NAMESPACE, "c1").await.unwrap();
    let event = events
        .iter()
        .find(|e| e.reason.as_deref() == Some(reason))
        .unwrap_or_else(|| panic!("a {reason} Event on the Cluster: {events:#?}"));
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.note.as_deref(), Some(timed_out.message.as_str()));
    assert_eq!(
        event.series.as_ref().map(|s| s.count),
        Some(2),
        "the repeated answer counts on the same Event instead of adding one"
    );
    timed_out
}

#[tokio::test]
async fn stuck_uninstall_proceeds_after_timeout() {
    let r = stuck_uninstall(UninstallTimeoutPolicy::Proceed).await;
    assert!(r.done);
    assert_eq!(r.retry_after_seconds, 0);
    assert!(r.message.contains("did not finish within 2s"), "{}", r.message);
    assert!(r.message.contains("cluster deletion proceeds"), "{}", r.message);
}

#[tokio::test]
async fn stuck_uninstall_blocks_after_timeout_when_asked() {
    let r = stuck_uninstall(UninstallTimeoutPolicy::Block).await;
    assert!(!r.done);
    assert_eq!(r.retry_after_seconds, 3);
    assert!(
        r.message.contains("manual intervention required"),
        "{}",
        r.message
    );
}

/// A Cluster name over 63 characters is a valid object name but never a label value. Selecting its
/// HelmReleaseProxies by the cluster-name label made the API server refuse the list, so RemoveAgent failed on every
/// call and the Cluster could never be deleted. Here one such Cluster, with the HelmChartProxy konnector names for
/// it and a HelmReleaseProxy CAAPH labels with that name, goes through deletion: waiting while the release remains,
/// done once it is gone.
#[tokio::test]
async fn a_cluster_name_over_63_characters_can_be_deleted() {
    use konnector_executor::names::helm_chart_proxy_name_for;
    use konnector_tests::{executor_fixture::addon_cluster_config, workload};
    use kube::api::{DeleteParams, PostParams};

    let (env, _caaph) = env(
        "longname",
        ExecutorConfig::default(),
        Uninstall::After(Duration::ZERO),
    )
    .await;
    let long = format!("long-{}", "n".repeat(70));
    assert!(long.len() > 63);
    // CAPI cannot put the cluster-name label on it either (the value would be invalid).
    let cluster = workload::create_workload_cluster(
        &env.admin,
        &env.workload,
        TEST_NAMESPACE,
        &long,
        ClusterOptions {
            without_name_label: true,
            cluster_config: Some(addon_cluster_config(
                konnector_tests::executor_fixture::TEST_CREDENTIALS_SECRET,
            )),
            ..ClusterOptions::initialized()
        },
    )
    .await
    .unwrap();
    let hcp_name = helm_chart_proxy_name_for(&long, &Default::default());
    assert!(hcp_name.len() <= 63, "{hcp_name}");
    let hcps = Api::<DynamicObject>::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource());
    let hcp: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "addons.cluster.x-k8s.io/v1alpha1", "kind": "HelmChartProxy",
        // Owned by the Cluster as konnector writes it (ownerReference and selector): RemoveAgent deletes only what the
        // Cluster owns.
        "metadata": {"name": hcp_name, "namespace": TEST_NAMESPACE, "ownerReferences": [{
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": long, "uid": cluster.uid}]},
        "spec": {"clusterSelector": {"matchLabels": {"cluster.x-k8s.io/cluster-name": long}}, "chartName": "konnector-agent", "repoURL": "https://example.com"},
    }))
    .unwrap();
    hcps.create(&PostParams::default(), &hcp).await.unwrap();
    let hrps = Api::<DynamicObject>::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hrp_resource());
    let hrp: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "addons.cluster.x-k8s.io/v1alpha1", "kind": "HelmReleaseProxy",
        "metadata": {"name": "long-release", "namespace": TEST_NAMESPACE, "labels": {
            "helmreleaseproxy.addons.cluster.x-k8s.io/helmchartproxy-name": hcp_name,
        }},
        "spec": {"clusterRef": {"name": long}, "chartName": "konnector-agent", "repoURL": "https://example.com"},
    }))
    .unwrap();
    hrps.create(&PostParams::default(), &hrp).await.unwrap();
    // Another Cluster's release, with another HelmChartProxy name, is not this Cluster's.
    let mut other = hrp.clone();
    other.metadata.name = Some("other-release".into());
    other.metadata.labels = Some(
        [(
            "helmreleaseproxy.addons.cluster.x-k8s.io/helmchartproxy-name".to_owned(),
            "konnector-agent-c1".to_owned(),
        )]
        .into(),
    );
    hrps.create(&PostParams::default(), &other).await.unwrap();

    workload::start_cluster_deletion(&env.admin, TEST_NAMESPACE, &long)
        .await
        .unwrap();
    let ctx = konnector_tests::executor_fixture::cluster_ref(&cluster);
    let waiting = try_remove(&env, ctx.clone()).await.unwrap();
    assert!(!waiting.done, "{waiting:?}");
    assert_eq!(phase(waiting.phase), UninstallPhase::InProgress, "{waiting:?}");
    assert!(
        waiting.message.contains("1 HelmReleaseProxy object(s) remain"),
        "{}",
        waiting.message
    );
    // Deleted: gone, or held by the CAAPH stand-in's finalizer until the releases are gone (it now selects this
    // proxy, which carries the Cluster's selector as konnector writes it).
    assert!(
        hcps.get_opt(&hcp_name)
            .await
            .unwrap()
            .is_none_or(|h| h.metadata.deletion_timestamp.is_some())
    );

    // CAAPH finishes: the release goes (the stand-in may have deleted it already, and then drops its finalizer).
    match hrps.delete("long-release", &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => panic!("{e}"),
    }
    // The stand-in's finalizer goes a moment after the release.
    let done = tokio::time::timeout(support::HANG_GUARD, async {
        loop {
            let r = try_remove(&env, ctx.clone()).await.unwrap();
            if r.done {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("RemoveAgent is done once the release is gone");
    assert_eq!(phase(done.phase), UninstallPhase::Completed, "{done:?}");
    assert!(hrps.get_opt("other-release").await.unwrap().is_some());
    // GetAgentStatus lists the same way and answers too.
    let s = support::agent_status(
        &env.executor,
        ClusterRef {
            uid: String::new(),
            ..ctx
        },
    )
    .await;
    assert!(s.helm_release_proxies.is_empty(), "{s:?}");
}
