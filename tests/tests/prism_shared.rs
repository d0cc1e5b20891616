//! The Prism Central check, bounded and shared (issue 26 item 4), attacked through the real executor on real API
//! servers, with the Prism Central stand-in as the fault injector:
//!
//! - many Clusters on one Prism Central, applied concurrently, make one probe, and a rotated credentials Secret
//!   makes the next hook probe again;
//! - a Prism Central that accepts the connection and never answers (a blackhole) holds no hook: every hook
//!   answers what the rules say while the stand-in still holds the one connection it was given, and there was only
//!   ever one probe, not one per hook;
//! - the passwords appear in no answer, log line, span or metric.
//!
//! Its own test binary, because it captures the process's logs.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use konnector_executor::{ExecutorConfig, prism::PreflightMode};
use konnector_proto::v1::{ClusterRef, GetAgentStatusRequest, PreflightOutcome, Trigger};
use konnector_tests::{
    executor_fixture::{
        ExecutorEnv, RunningExecutor, TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, TEST_PASSWORD, cluster_ref,
        executor_env, start_executor,
    },
    prism_central_stand_in::{Behaviour, PrismCentralStandIn, USERS_ME_PATH},
    support::{self, LogCapture, assert_no_secret},
    workload::{self, ClusterOptions},
};
use tonic::Code;

const USER: &str = "admin";
/// The password the credentials Secret is rotated to: distinctive, so a leak is found.
const ROTATED_PASSWORD: &str = "r0tated-PA55-shared-check";
/// Both TTLs far longer than any test: what is shared is decided by the key alone, not by timing.
const TTL: Duration = Duration::from_secs(600);

fn logs() -> &'static LogCapture {
    static LOGS: OnceLock<LogCapture> = OnceLock::new();
    // Every span is written when it closes, with its fields, so spans are checked as well as events.
    LOGS.get_or_init(|| {
        LogCapture::install(
            "debug,h2=info,hyper=info,hyper_util=info,tower=info,rustls=info",
            true,
        )
    })
}

fn config(mode: PreflightMode, bound: Duration) -> ExecutorConfig {
    ExecutorConfig {
        prism_central_checks: mode,
        prism_central_timeout: bound,
        prism_central_check_ttl: TTL,
        prism_central_check_failure_ttl: TTL,
        ..ExecutorConfig::default()
    }
}

/// The fixture's executor, warning on failed checks bounded by `bound`, with its Cluster configured for `pc`.
async fn env_on(name: &str, pc: &PrismCentralStandIn, bound: Duration) -> ExecutorEnv {
    executor_env(
        name,
        config(PreflightMode::Warn, bound),
        ClusterOptions {
            cluster_config: Some(pc.cluster_config(TEST_CREDENTIALS_SECRET)),
            ..ClusterOptions::initialized()
        },
    )
    .await
    .unwrap()
}

/// `n - 1` more Clusters beside the fixture's, each with its own credentials Secret holding the same
/// credentials, all configured for `pc`; returns every Cluster's reference, the fixture's first.
async fn clusters_on(env: &ExecutorEnv, pc: &PrismCentralStandIn, n: usize) -> Vec<ClusterRef> {
    let mut refs = vec![env.cluster_ref()];
    for i in 1..n {
        let secret = format!("shared-{i}-pc-creds");
        workload::put_credentials_secret(
            &env.admin,
            TEST_NAMESPACE,
            &secret,
            &[("username", USER), ("password", TEST_PASSWORD)],
        )
        .await
        .unwrap();
        let cluster = workload::create_workload_cluster(
            &env.admin,
            &env.workload,
            TEST_NAMESPACE,
            &format!("shared-{i}"),
            ClusterOptions {
                cluster_config: Some(pc.cluster_config(&secret)),
                ..ClusterOptions::initialized()
            },
        )
        .await
        .unwrap();
        refs.push(cluster_ref(&cluster));
    }
    refs
}

/// ApplyAgent for every Cluster at once; the answers (or refusals), as text, in order.
async fn apply_all(
    executor: &RunningExecutor,
    clusters: &[ClusterRef],
) -> Vec<Result<konnector_proto::v1::ApplyAgentResponse, tonic::Status>> {
    futures::future::join_all(
        clusters
            .iter()
            .map(|c| support::apply_agent(executor, c.clone(), Trigger::AfterControlPlaneInitialized)),
    )
    .await
}

fn probes_seen(pc: &PrismCentralStandIn) -> usize {
    pc.seen().iter().filter(|r| r.path == USERS_ME_PATH).count()
}

/// The largest number of probes the executor reported under way, sampled until `done`.
fn sample_in_flight(
    executor: &RunningExecutor,
    done: Arc<AtomicBool>,
) -> (Arc<AtomicI64>, tokio::task::JoinHandle<()>) {
    let max = Arc::new(AtomicI64::new(0));
    let (m, metrics) = (max.clone(), executor.metrics.clone());
    let task = tokio::spawn(async move {
        while !done.load(Ordering::SeqCst) {
            m.fetch_max(metrics.prism_central_probes_in_flight(), Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (max, task)
}

fn assert_nothing_leaked(executor: &RunningExecutor, answers: &[String]) {
    let metrics = executor.metrics.registry().encode_text();
    let logs = logs().text();
    for secret in [TEST_PASSWORD, ROTATED_PASSWORD] {
        for answer in answers {
            assert_no_secret("an answer", answer, secret);
        }
        assert_no_secret("the metrics", &metrics, secret);
        assert_no_secret("the logs", &logs, secret);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clusters_on_one_prism_central_share_one_probe_until_the_credentials_rotate() {
    logs();
    // Any non-empty password for USER passes, so the rotated one does too: what changes is only the question.
    let pc = PrismCentralStandIn::start_any_password(USER, Behaviour::Normal)
        .await
        .unwrap();
    // A generous bound: nothing here is meant to time out.
    let env = env_on("pc-shared", &pc, Duration::from_secs(60)).await;
    let clusters = clusters_on(&env, &pc, 20).await;
    let mut texts = Vec::new();

    let done = Arc::new(AtomicBool::new(false));
    let (max_in_flight, sampler) = sample_in_flight(&env.executor, done.clone());
    let answers = apply_all(&env.executor, &clusters).await;
    done.store(true, Ordering::SeqCst);
    sampler.await.unwrap();
    for answer in answers {
        let answer = answer.unwrap();
        assert!(answer.applied, "{answer:?}");
        // Passed: no note about the preflight.
        assert!(
            !answer
                .notes
                .iter()
                .any(|n| n.contains("Prism Central preflight") || n.contains("API-key")),
            "{answer:?}"
        );
        texts.push(format!("{answer:?}"));
    }
    // Twenty hooks, one probe: one connection, one authenticated read.
    assert_eq!(probes_seen(&pc), 1, "{:?}", pc.seen());
    assert_eq!(pc.connections(), 1);
    assert!(pc.seen()[0].authenticated);
    let m = &env.executor.metrics;
    assert_eq!(m.prism_central_checks("probe"), 1);
    assert_eq!(
        m.prism_central_checks("in_flight") + m.prism_central_checks("cached"),
        19
    );
    assert!(max_in_flight.load(Ordering::SeqCst) <= 1);
    assert_eq!(m.prism_central_probes_in_flight(), 0);

    // A Cluster that was answered from the shared result reports it as its last preflight.
    let status = env
        .executor
        .client()
        .await
        .unwrap()
        .get_agent_status(GetAgentStatusRequest {
            cluster: Some(clusters[7].clone()),
        })
        .await
        .unwrap()
        .into_inner();
    let last = status.last_preflight.clone().expect("the last preflight");
    assert_eq!(last.outcome, PreflightOutcome::Passed as i32);
    texts.push(format!("{status:?}"));

    // The fixture Cluster's Secret is rotated: its next hook is another question, so it probes, with the new
    // password; the other Clusters keep the shared answer.
    workload::put_credentials_secret(
        &env.admin,
        TEST_NAMESPACE,
        TEST_CREDENTIALS_SECRET,
        &[("username", USER), ("password", ROTATED_PASSWORD)],
    )
    .await
    .unwrap();
    let rotated = support::apply_agent(&env.executor, clusters[0].clone(), Trigger::BeforeClusterUpgrade)
        .await
        .unwrap();
    assert!(rotated.applied, "{rotated:?}");
    texts.push(format!("{rotated:?}"));
    assert_eq!(probes_seen(&pc), 2, "{:?}", pc.seen());
    assert!(pc.seen().iter().all(|r| r.authenticated));
    assert_eq!(m.prism_central_checks("probe"), 2);
    let unchanged = support::apply_agent(&env.executor, clusters[1].clone(), Trigger::BeforeClusterUpgrade)
        .await
        .unwrap();
    texts.push(format!("{unchanged:?}"));
    assert_eq!(probes_seen(&pc), 2, "{:?}", pc.seen());

    assert_nothing_leaked(&env.executor, &texts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_prism_central_holds_no_hook_past_the_bound() {
    logs();
    let pc = PrismCentralStandIn::start(USER, TEST_PASSWORD, Behaviour::Blackhole)
        .await
        .unwrap();
    let bound = Duration::from_secs(2);
    let env = env_on("pc-blackhole", &pc, bound).await;
    let clusters = clusters_on(&env, &pc, 8).await;
    let endpoint = format!("127.0.0.1:{}", pc.addr().port());
    let mut texts = Vec::new();

    // Warn (the default): every hook applies, with the note and the Warning Event the rules give for a
    // Prism Central that did not answer.
    let done = Arc::new(AtomicBool::new(false));
    let (max_in_flight, sampler) = sample_in_flight(&env.executor, done.clone());
    let answers = apply_all(&env.executor, &clusters).await;
    done.store(true, Ordering::SeqCst);
    sampler.await.unwrap();
    // The proof of the bound, without a clock: every hook has answered, and the stand-in still holds, unanswered,
    // the one connection it was given. No hook waited for Prism Central to answer.
    assert_eq!(pc.held(), 1, "the stand-in no longer holds the connection");
    for answer in answers {
        let answer = answer.unwrap();
        assert!(answer.applied, "{answer:?}");
        let note = answer
            .notes
            .iter()
            .find(|n| n.starts_with("Prism Central preflight failed (applied anyway): "))
            .unwrap_or_else(|| panic!("no preflight note in {answer:?}"));
        assert!(
            note.contains(&format!("Prism Central {endpoint} did not answer within 2s")),
            "{note}"
        );
        texts.push(format!("{answer:?}"));
    }
    // One probe for eight hooks, never more than one under way.
    assert_eq!(pc.connections(), 1);
    let m = &env.executor.metrics;
    assert_eq!(m.prism_central_checks("probe"), 1);
    assert_eq!(
        m.prism_central_checks("in_flight") + m.prism_central_checks("cached"),
        7
    );
    assert!(max_in_flight.load(Ordering::SeqCst) <= 1);
    assert_eq!(m.prism_central_probes_in_flight(), 0);
    let reasons = konnector_tests::executor_fixture::cluster_event_reasons(
        &env.admin,
        TEST_NAMESPACE,
        &clusters[3].name,
    )
    .await
    .unwrap();
    assert!(
        reasons.iter().any(|r| r == "PrismCentralPreflightFailed"),
        "{reasons:?}"
    );

    // Blocking: refused as UNAVAILABLE (the network may come back by itself), still while the stand-in holds the
    // new executor's connection too.
    let blocking = start_executor(&env.mgmt, config(PreflightMode::Block, bound))
        .await
        .unwrap();
    let refused = support::apply_agent(
        &blocking,
        clusters[0].clone(),
        Trigger::AfterControlPlaneInitialized,
    )
    .await
    .unwrap_err();
    assert_eq!(pc.held(), 2);
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("did not answer within 2s"),
        "{}",
        refused.message()
    );
    texts.push(format!("{refused:?}"));
    assert_eq!(pc.connections(), 2);
    pc.release();

    assert_nothing_leaked(&env.executor, &texts);
    assert_nothing_leaked(&blocking, &[]);
}
