//! RemoveAgent and GetAgentStatus against real API servers, with the CAAPH stand-in playing CAAPH.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use konnector_executor::{ExecutorConfig, UninstallTimeoutPolicy};
use konnector_proto::v1::{
    ApplyAgentRequest, ClusterContext, ClusterRef, GetAgentStatusRequest, GetAgentStatusResponse,
    RemoveAgentRequest, RemoveAgentResponse, UninstallPhase,
};
use konnector_tests::{
    caaph_stand_in::{CaaphOptions, CaaphStandIn, Uninstall, hcp_resource, hrp_resource},
    executor_fixture::{
        ExecutorEnv, TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, cluster_context, cluster_events, executor_env,
    },
    workload::{self, ClusterOptions},
};
use kube::{Api, api::DynamicObject};

/// A hang guard for polling loops, not a performance threshold.
const HANG_GUARD: Duration = Duration::from_secs(20);

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

async fn remove(env: &ExecutorEnv, ctx: ClusterContext) -> RemoveAgentResponse {
    let mut client = env.executor.client().await.unwrap();
    client
        .remove_agent(RemoveAgentRequest { cluster: Some(ctx) })
        .await
        .unwrap()
        .into_inner()
}

async fn status(env: &ExecutorEnv) -> GetAgentStatusResponse {
    let mut client = env.executor.client().await.unwrap();
    client
        .get_agent_status(GetAgentStatusRequest {
            cluster: Some(ClusterRef {
                namespace: TEST_NAMESPACE.into(),
                name: "c1".into(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
}

fn phase(p: i32) -> UninstallPhase {
    UninstallPhase::try_from(p).unwrap()
}

/// Applies the agent and waits until the stand-in reports the release installed.
async fn install(env: &ExecutorEnv) {
    let mut client = env.executor.client().await.unwrap();
    client
        .apply_agent(ApplyAgentRequest {
            cluster: Some(env.context()),
            trigger: 1,
        })
        .await
        .unwrap();
    tokio::time::timeout(HANG_GUARD, async {
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
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            let r = remove(env, env.context()).await;
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

    let mut ctx = env.context();
    ctx.konnector_agent = None;
    let r = remove(&env, ctx).await;
    assert_eq!((r.done, phase(r.phase)), (true, UninstallPhase::NotNeeded));

    // The Cluster object is gone.
    let mut ctx = env.context();
    ctx.name = "ghost".into();
    let r = remove(&env, ctx).await;
    assert_eq!((r.done, phase(r.phase)), (true, UninstallPhase::NotNeeded));
    assert_eq!(r.message, "the Cluster no longer exists; nothing to uninstall");

    // The control plane never initialised.
    let young = workload::create_workload_cluster(
        &env.admin,
        &env.workload,
        TEST_NAMESPACE,
        "young",
        ClusterOptions::default(),
    )
    .await
    .unwrap();
    let r = remove(&env, cluster_context(&young, TEST_CREDENTIALS_SECRET)).await;
    assert_eq!((r.done, phase(r.phase)), (true, UninstallPhase::NotNeeded));
    assert!(r.message.contains("never initialised"), "{}", r.message);

    // Initialised, but nothing was ever installed.
    let r = remove(&env, env.context()).await;
    assert_eq!(
        (r.done, r.retry_after_seconds, phase(r.phase)),
        (true, 0, UninstallPhase::NotNeeded)
    );
    assert_eq!(
        phase(status(&env).await.uninstall_phase),
        UninstallPhase::NotNeeded
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

    let first = remove(&env, env.context()).await;
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
    let again = remove(&env, env.context()).await;
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
    let repeat = remove(&env, env.context()).await;
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
    let first = remove(&env, env.context()).await;
    assert_eq!(phase(first.phase), UninstallPhase::InProgress);
    assert_eq!(first.retry_after_seconds, 3);
    let timed_out = remove_until(&env, UninstallPhase::TimedOut).await;
    assert_eq!(
        phase(status(&env).await.uninstall_phase),
        UninstallPhase::TimedOut
    );
    let again = remove(&env, env.context()).await;
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
