//! Secret hygiene: the Prism Central password appears in no gRPC answer, no status message, no Event and no log
//! line of the executor, across every RPC and the main error paths, the Prism Central checks included (passed,
//! refused, blocking, redirected). Its own test binary, because it installs the
//! process-wide tracing subscriber that captures the executor's logs.

use std::time::Duration;

use konnector_executor::{ExecutorConfig, prism::PreflightMode};
use konnector_proto::v1::{ApplyAgentRequest, GetAgentStatusRequest, PlanAgentRequest, Trigger};
use konnector_tests::{
    caaph_stand_in::{CaaphOptions, CaaphStandIn},
    executor_fixture::{
        TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, TEST_PASSWORD, addon_cluster_config, executor_env,
        start_executor,
    },
    prism_central_stand_in::{Behaviour, PrismCentralStandIn},
    support,
    workload::{self, ClusterOptions},
};

#[tokio::test]
async fn password_never_leaves_the_secret() {
    // Every span is written when it closes, with its fields, so spans are checked as well as events.
    let logs = support::LogCapture::install(
        "trace,h2=info,hyper=info,hyper_util=info,tower=info,rustls=info",
        true,
    );

    let checks = |mode| ExecutorConfig {
        prism_central_checks: mode,
        prism_central_timeout: Duration::from_secs(2),
        ..ExecutorConfig::default()
    };
    let env = executor_env(
        "hygiene",
        checks(PreflightMode::Warn),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    let _caaph = CaaphStandIn::start(env.admin.clone(), CaaphOptions::default());
    let mut client = env.executor.client().await.unwrap();
    let mut seen = Vec::<String>::new();

    // The Prism Central checks, on every path they have: refused (warned, then blocking), redirected, passed.
    let refusing = PrismCentralStandIn::start("admin", "another-password", Behaviour::Normal)
        .await
        .unwrap();
    let pc = PrismCentralStandIn::start("admin", TEST_PASSWORD, Behaviour::Normal)
        .await
        .unwrap();
    let redirecting = PrismCentralStandIn::start(
        "admin",
        TEST_PASSWORD,
        Behaviour::RedirectTo(format!("{}/api/nutanix/v3/users/me", pc.url())),
    )
    .await
    .unwrap();
    let blocking = start_executor(&env.mgmt, checks(PreflightMode::Block))
        .await
        .unwrap();
    let mut blocking_client = blocking.client().await.unwrap();
    for stand_in in [&refusing, &redirecting] {
        env.set_cluster_config(stand_in.cluster_config(TEST_CREDENTIALS_SECRET))
            .await
            .unwrap();
        let request = || ApplyAgentRequest {
            cluster: Some(env.cluster_ref()),
            trigger: Trigger::AfterControlPlaneInitialized as i32,
        };
        seen.push(format!("{:?}", client.apply_agent(request()).await.unwrap()));
        seen.push(format!(
            "{:?}",
            blocking_client.apply_agent(request()).await.unwrap_err()
        ));
        seen.push(format!(
            "{:?}",
            client
                .get_agent_status(GetAgentStatusRequest {
                    cluster: Some(env.cluster_ref()),
                })
                .await
                .unwrap()
        ));
    }
    assert!(
        pc.seen().is_empty(),
        "the redirect was followed with the credentials"
    );
    blocking.stop().await.unwrap();
    env.set_cluster_config(pc.cluster_config(TEST_CREDENTIALS_SECRET))
        .await
        .unwrap();

    let applied = client
        .apply_agent(ApplyAgentRequest {
            cluster: Some(env.cluster_ref()),
            trigger: Trigger::AfterControlPlaneInitialized as i32,
        })
        .await
        .unwrap();
    seen.push(format!("{applied:?}"));
    let plan = client
        .plan_agent(PlanAgentRequest {
            cluster: Some(env.cluster_ref()),
        })
        .await
        .unwrap();
    seen.push(format!("{plan:?}"));
    let status = support::agent_status(&env.executor, env.cluster_ref_without_uid()).await;
    assert!(
        status.last_preflight.is_some(),
        "the preflight of the apply above is reported"
    );
    seen.push(format!("{status:?}"));

    // Error paths that read the Secret: a wrong key set, and a Secret with both kinds.
    workload::put_credentials_secret(
        &env.admin,
        TEST_NAMESPACE,
        "pw-only",
        &[("password", TEST_PASSWORD)],
    )
    .await
    .unwrap();
    workload::put_credentials_secret(
        &env.admin,
        TEST_NAMESPACE,
        "both",
        // apiKey beside username and password is accepted (as CAREN accepts it); beside a password alone it is not.
        &[("password", TEST_PASSWORD), ("apiKey", TEST_PASSWORD)],
    )
    .await
    .unwrap();
    for secret in ["pw-only", "both"] {
        for plan in [false, true] {
            env.set_cluster_config(addon_cluster_config(secret))
                .await
                .unwrap();
            let ctx = env.cluster_ref();
            let err = if plan {
                client
                    .plan_agent(PlanAgentRequest { cluster: Some(ctx) })
                    .await
                    .unwrap_err()
            } else {
                client
                    .apply_agent(ApplyAgentRequest {
                        cluster: Some(ctx),
                        // At BeforeClusterUpgrade a configuration problem answers Success under the default
                        // policy (warn); AfterControlPlaneInitialized still fails with it.
                        trigger: Trigger::AfterControlPlaneInitialized as i32,
                    })
                    .await
                    .unwrap_err()
            };
            seen.push(format!("{err:?}"));
        }
    }

    // The uninstall, to completion.
    env.start_deletion().await.unwrap();
    let answers = support::remove_until_done(&env.executor, env.cluster_ref()).await;
    seen.extend(answers.iter().map(|r| format!("{r:?}")));
    let removed = answers.last().unwrap();
    assert!(removed.done);
    // The uninstall completed, so the executor forgot the Cluster's last preflight.
    let after = client
        .get_agent_status(GetAgentStatusRequest {
            cluster: Some(env.cluster_ref()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(after.last_preflight.is_none(), "{after:?}");
    seen.push(format!("{after:?}"));
    // Prism Central was asked with the credentials, and answered.
    assert!(pc.seen().iter().any(|r| r.authenticated));

    // Every Event on the management cluster, the preflight's Warnings included.
    let events = kube::Api::<k8s_openapi::api::events::v1::Event>::all(env.admin.clone())
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("PrismCentralPreflightFailed")),
        "the preflight recorded no Event"
    );
    seen.push(format!("{events:?}"));

    // assert_no_secret also finds the base64 forms: a Secret's data, the Basic credential the preflight sends.
    for answer in &seen {
        support::assert_no_secret("an answer", answer, TEST_PASSWORD);
    }
    let logs = logs.text();
    assert!(
        logs.contains("konnector_executor"),
        "the executor's logs were not captured"
    );
    support::assert_no_secret("the logs", &logs, TEST_PASSWORD);
    assert!(
        logs.contains("Prism Central preflight"),
        "the preflight's logs were not captured"
    );
    assert!(
        logs.contains("prism_central_preflight") && logs.contains("prism_central_registration"),
        "the Prism Central spans were not captured"
    );
}
