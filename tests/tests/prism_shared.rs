//! The Prism Central check, bounded and shared (issue 26 item 4), attacked through the real executor on real API
//! servers, with the Prism Central stand-in as the fault injector:
//!
//! - many Clusters on one Prism Central, applied concurrently, make one probe, and a rotated credentials Secret
//!   makes the next hook probe again;
//! - a Prism Central that accepts the connection and never answers (a blackhole) holds no hook: every hook
//!   answers what the rules say while the stand-in still holds the one connection it was given, and there was only
//!   ever one probe, not one per hook;
//! - the passwords appear in no answer, log line, span or metric;
//! - during an outage, the `PrismCentralPreflightFailed` Warning Event is written once per Cluster and failure, not
//!   once per hook (counted as Event objects through the API): another Cluster, another kind of failure, a failure
//!   after a recovery, or the same failure after `--prism-central-warning-interval` is written again; also with the
//!   release executor started with the chart's flags.
//!
//! Its own test binary, because it captures the process's logs.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::events::v1::Event;
use konnector_executor::{ExecutorConfig, prism::PreflightMode};
use konnector_proto::v1::{ClusterRef, GetAgentStatusRequest, PreflightOutcome, Trigger};
use konnector_tests::{
    capi_stand_in::{CapiShape, Hook, hook_path, hook_request},
    executor_fixture::{
        ExecutorEnv, RunningExecutor, TEST_CLUSTER, TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, TEST_PASSWORD,
        cluster_events, cluster_ref, executor_env, start_executor,
    },
    prism_central_stand_in::{Behaviour, PrismCentralStandIn, USERS_ME_PATH},
    real_binaries::RealPair,
    support::{self, LogCapture, assert_no_secret},
    workload::{self, ClusterOptions, cluster_resource},
};
use kube::{Api, core::DynamicObject};
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

/// The `PrismCentralPreflightFailed` Events on the Cluster `name`, oldest first.
async fn preflight_warnings(env: &ExecutorEnv, name: &str) -> Vec<Event> {
    cluster_events(&env.admin, TEST_NAMESPACE, name)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("PrismCentralPreflightFailed"))
        .collect()
}

/// One hook for `cluster` with Prism Central failing: applied anyway, with the preflight note, which is returned.
async fn hook_warned(executor: &RunningExecutor, cluster: &ClusterRef, texts: &mut Vec<String>) -> String {
    let answer = support::apply_agent(executor, cluster.clone(), Trigger::BeforeClusterUpgrade)
        .await
        .unwrap();
    texts.push(format!("{answer:?}"));
    assert!(answer.applied, "{answer:?}");
    answer
        .notes
        .iter()
        .find(|n| n.starts_with("Prism Central preflight failed (applied anyway): "))
        .unwrap_or_else(|| panic!("no preflight note in {answer:?}"))
        .clone()
}

/// Each Event is its own write (a create), not a repeat folded into an earlier one (a PATCH of its series), and
/// holds its failure's note; their text is kept for the leak check.
fn assert_single_writes(events: &[Event], texts: &mut Vec<String>) {
    for e in events {
        assert_eq!(e.type_.as_deref(), Some("Warning"), "{e:?}");
        assert!(e.series.is_none(), "an Event was written again: {e:?}");
        texts.push(serde_json::to_string(e).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_written_once_per_cluster_and_failure() {
    logs();
    let pc = PrismCentralStandIn::start(USER, TEST_PASSWORD, Behaviour::Status(503))
        .await
        .unwrap();
    // No shared answer: every hook checks Prism Central itself, so the next hook sees what the stand-in does
    // next, and only the warning rule keeps the Events apart.
    let config = ExecutorConfig {
        prism_central_check_ttl: Duration::ZERO,
        prism_central_check_failure_ttl: Duration::ZERO,
        prism_central_warning_interval: TTL,
        ..config(PreflightMode::Warn, Duration::from_secs(30))
    };
    let env = executor_env(
        "pc-warn-once",
        config,
        ClusterOptions {
            cluster_config: Some(pc.cluster_config(TEST_CREDENTIALS_SECRET)),
            ..ClusterOptions::initialized()
        },
    )
    .await
    .unwrap();
    let clusters = clusters_on(&env, &pc, 2).await;
    let (first, second) = (&clusters[0], &clusters[1]);
    let mut texts = Vec::new();

    // Ten hooks on one Cluster at once, all failing the same way: ten notes, ten checks counted, one Event.
    let answers = futures::future::join_all(
        (0..10).map(|_| support::apply_agent(&env.executor, first.clone(), Trigger::BeforeClusterUpgrade)),
    )
    .await;
    for answer in answers {
        let answer = answer.unwrap();
        assert!(answer.applied, "{answer:?}");
        assert!(
            answer.notes.iter().any(
                |n| n.starts_with("Prism Central preflight failed (applied anyway): ")
                    && n.contains("HTTP 503")
            ),
            "{answer:?}"
        );
        texts.push(format!("{answer:?}"));
    }
    let m = &env.executor.metrics;
    let checks = || {
        ["probe", "in_flight", "cached"]
            .iter()
            .map(|s| m.prism_central_checks(s))
            .sum::<u64>()
    };
    assert_eq!(checks(), 10);
    let warned = preflight_warnings(&env, &first.name).await;
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert!(
        warned[0].note.as_deref().unwrap_or_default().contains("HTTP 503"),
        "{warned:?}"
    );

    // Another Cluster, the same failure: its own Event; the first Cluster's stays alone.
    hook_warned(&env.executor, second, &mut texts).await;
    assert_eq!(preflight_warnings(&env, &second.name).await.len(), 1);
    assert_eq!(preflight_warnings(&env, &first.name).await.len(), 1);

    // Another kind of failure: a new Event with the new failure's note (kube's Recorder would have folded it into
    // the first one, under the first note), then no more for it.
    pc.set_behaviour(Behaviour::Status(401));
    for _ in 0..3 {
        let note = hook_warned(&env.executor, first, &mut texts).await;
        assert!(note.contains("refused the credentials"), "{note}");
    }
    let warned = preflight_warnings(&env, &first.name).await;
    assert_eq!(warned.len(), 2, "{warned:#?}");
    assert!(
        warned[1]
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("refused the credentials"),
        "{warned:?}"
    );

    // Prism Central recovers, and the same failure comes back: a new outage, a new Event.
    pc.set_behaviour(Behaviour::Normal);
    let passed = support::apply_agent(&env.executor, first.clone(), Trigger::BeforeClusterUpgrade)
        .await
        .unwrap();
    assert!(
        passed.applied && !passed.notes.iter().any(|n| n.contains("Prism Central preflight")),
        "{passed:?}"
    );
    texts.push(format!("{passed:?}"));
    assert_eq!(preflight_warnings(&env, &first.name).await.len(), 2);
    pc.set_behaviour(Behaviour::Status(401));
    hook_warned(&env.executor, first, &mut texts).await;
    hook_warned(&env.executor, first, &mut texts).await;
    let warned = preflight_warnings(&env, &first.name).await;
    assert_eq!(warned.len(), 3, "{warned:#?}");
    // Every check was still counted, one per hook.
    assert_eq!(checks(), 10 + 1 + 3 + 1 + 2);

    assert_single_writes(&warned, &mut texts);
    assert_single_writes(&preflight_warnings(&env, &second.name).await, &mut texts);
    assert_nothing_leaked(&env.executor, &texts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuing_outage_is_written_again_after_the_warning_interval() {
    logs();
    let pc = PrismCentralStandIn::start(USER, TEST_PASSWORD, Behaviour::Status(503))
        .await
        .unwrap();
    // One shared failure for the whole test (its TTL is long): a second Event can only come from the interval.
    let every_second = ExecutorConfig {
        prism_central_warning_interval: Duration::from_secs(1),
        ..config(PreflightMode::Warn, Duration::from_secs(30))
    };
    let env = executor_env(
        "pc-warn-again",
        every_second,
        ClusterOptions {
            cluster_config: Some(pc.cluster_config(TEST_CREDENTIALS_SECRET)),
            ..ClusterOptions::initialized()
        },
    )
    .await
    .unwrap();
    let cluster = env.cluster_ref();
    let mut texts = Vec::new();
    // Hooks until the interval has passed and a hook wrote the warning again (a guard, not a threshold).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut hooks = 0;
    while preflight_warnings(&env, TEST_CLUSTER).await.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the warning was never written again"
        );
        hook_warned(&env.executor, &cluster, &mut texts).await;
        hooks += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(hooks >= 2, "{hooks}");
    assert_eq!(probes_seen(&pc), 1, "{:?}", pc.seen());
    assert_eq!(preflight_warnings(&env, TEST_CLUSTER).await.len(), 2);

    // An interval of zero writes on every hook, as before this rule.
    let every = start_executor(
        &env.mgmt,
        ExecutorConfig {
            prism_central_warning_interval: Duration::ZERO,
            ..config(PreflightMode::Warn, Duration::from_secs(30))
        },
    )
    .await
    .unwrap();
    for _ in 0..3 {
        hook_warned(&every, &cluster, &mut texts).await;
    }
    let warned = preflight_warnings(&env, TEST_CLUSTER).await;
    assert_eq!(warned.len(), 5, "{warned:#?}");
    assert_single_writes(&warned, &mut texts);
    assert_nothing_leaked(&env.executor, &texts);
    assert_nothing_leaked(&every, &[]);
}

/// The release executor, started with the chart's Prism Central flags (its defaults), behind the release gateway:
/// BeforeClusterUpgrade hooks during an outage answer Success and write one Warning Event between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_release_executor_with_the_charts_flags_warns_once_per_outage() {
    logs();
    let pc = PrismCentralStandIn::start(USER, TEST_PASSWORD, Behaviour::Status(503))
        .await
        .unwrap();
    let env = env_on("pc-warn-binary", &pc, Duration::from_secs(5)).await;
    let pair = RealPair::start(
        &env.mgmt.kubeconfig_path(),
        // As deploy/chart/konnector/templates/executor.yaml passes them, with the chart's default values.
        &[
            "--prism-central-checks=warn",
            "--prism-central-timeout=5s",
            "--prism-central-check-ttl=2m",
            "--prism-central-check-failure-ttl=15s",
            "--prism-central-warning-interval=10m",
        ],
        &[],
    )
    .await
    .unwrap();
    let handlers = pair.hooks.discover().await.unwrap();
    let upgrade = Hook::BeforeClusterUpgrade {
        from: "v1.32.4".into(),
        to: "v1.33.0".into(),
    };
    let path = hook_path(&upgrade, &handlers[upgrade.name()].name);
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &cluster_resource("v1beta2"));
    let stored = serde_json::to_value(clusters.get(TEST_CLUSTER).await.unwrap()).unwrap();
    let body = hook_request(&upgrade, CapiShape::V1_14, &stored, &Default::default());
    let mut texts = Vec::new();
    for _ in 0..5 {
        let answer = pair.hooks.post(&path, &body, 20).await.unwrap();
        assert!(answer.is_done(), "{answer:?}");
        texts.push(format!("{answer:?}"));
    }
    // The in-process executor of the fixture took no hook here; the Event is the release binary's.
    assert_eq!(env.executor.metrics.prism_central_checks("probe"), 0);
    assert!(pc.seen().iter().any(|r| r.path == USERS_ME_PATH));
    let warned = preflight_warnings(&env, TEST_CLUSTER).await;
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert!(
        warned[0].note.as_deref().unwrap_or_default().contains("HTTP 503"),
        "{warned:?}"
    );
    assert_single_writes(&warned, &mut texts);
    for text in &texts {
        assert_no_secret("an answer or Event", text, TEST_PASSWORD);
    }
}
