//! Secret hygiene: the Prism Central password appears in no gRPC answer, no status message and no log line of
//! the executor, across every RPC and the main error paths. Its own test binary, because it installs the
//! process-wide tracing subscriber that captures the executor's logs.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine;
use konnector_executor::ExecutorConfig;
use konnector_proto::v1::{
    ApplyAgentRequest, ClusterRef, GetAgentStatusRequest, PlanAgentRequest, RemoveAgentRequest,
};
use konnector_tests::{
    caaph_stand_in::{CaaphOptions, CaaphStandIn},
    executor_fixture::{TEST_NAMESPACE, TEST_PASSWORD, addon_cluster_config, executor_env},
    workload::{self, ClusterOptions},
};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn password_never_leaves_the_secret() {
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .with_env_filter("trace,h2=info,hyper=info,hyper_util=info,tower=info,rustls=info")
        .with_writer(logs.clone())
        .with_ansi(false)
        .init();

    let env = executor_env(
        "hygiene",
        ExecutorConfig::default(),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    let _caaph = CaaphStandIn::start(env.admin.clone(), CaaphOptions::default());
    let mut client = env.executor.client().await.unwrap();
    let mut seen = Vec::<String>::new();

    let applied = client
        .apply_agent(ApplyAgentRequest {
            cluster: Some(env.cluster_ref()),
            trigger: 1,
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
    let status = client
        .get_agent_status(GetAgentStatusRequest {
            cluster: Some(ClusterRef {
                namespace: TEST_NAMESPACE.into(),
                name: "c1".into(),
                uid: String::new(),
            }),
        })
        .await
        .unwrap();
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
        &[
            ("username", "admin"),
            ("password", TEST_PASSWORD),
            ("apiKey", TEST_PASSWORD),
        ],
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
                        trigger: 2,
                    })
                    .await
                    .unwrap_err()
            };
            seen.push(format!("{err:?}"));
        }
    }

    // The uninstall, to completion.
    env.start_deletion().await.unwrap();
    let removed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let r = client
                .remove_agent(RemoveAgentRequest {
                    cluster: Some(env.cluster_ref()),
                })
                .await
                .unwrap()
                .into_inner();
            seen.push(format!("{r:?}"));
            if r.done {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap();
    assert!(removed.done);

    let b64 = base64::engine::general_purpose::STANDARD.encode(TEST_PASSWORD);
    for answer in &seen {
        assert!(!answer.contains(TEST_PASSWORD), "password in an answer: {answer}");
        assert!(!answer.contains(&b64), "base64 password in an answer: {answer}");
    }
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("konnector_executor"),
        "the executor's logs were not captured"
    );
    assert!(!logs.contains(TEST_PASSWORD), "password in the logs");
    assert!(!logs.contains(&b64), "base64 password in the logs");
}
