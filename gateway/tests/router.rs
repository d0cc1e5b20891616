//! Router-level tests: the real router, in process, against a fake executor served over loopback gRPC.

mod common;

use std::time::Duration;

use common::*;
use konnector_gateway::{
    answer::{UNREACHABLE, code_name, context},
    capi::{DiscoveryResponse, FailurePolicy, Status},
    catalog::{CapiVersion, Hook, is_dns1123_label},
    router,
};
use konnector_proto::v1::{RemoveAgentResponse, Trigger};
use tokio_util::sync::CancellationToken;
use tonic::Code;

const DISCOVERY: &str = "/hooks.runtime.cluster.x-k8s.io/v1alpha1/discovery";

async fn with_fake() -> (FakeExecutor, axum::Router, CancellationToken) {
    let fake = FakeExecutor::default();
    let stop = CancellationToken::new();
    let addr = spawn_fake(fake.clone(), stop.clone()).await;
    (fake, router(state(plaintext_config(addr))), stop)
}

async fn discovery_of(config: konnector_gateway::GatewayConfig) -> (DiscoveryResponse, Vec<u8>) {
    let r = router(state(config));
    let resp = call(
        &r,
        post(
            DISCOVERY,
            r#"{"apiVersion":"hooks.runtime.cluster.x-k8s.io/v1alpha1","kind":"DiscoveryRequest"}"#,
        ),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let bytes = body_bytes(resp).await;
    (serde_json::from_slice(&bytes).unwrap(), bytes)
}

#[tokio::test]
async fn discovery_advertises_dns1123_handlers_with_explicit_timeout_and_policy() {
    let mut config = plaintext_config(dead_addr());
    config.hooks.before_cluster_delete.failure_policy = FailurePolicy::Ignore;
    config.hooks.before_cluster_delete.timeout_seconds = 7;
    for minor in 10..=14 {
        config.capi_version = CapiVersion::new(1, minor);
        let (d, bytes) = discovery_of(config.clone()).await;
        assert_eq!(d.status, Status::Success);
        assert_eq!(d.handlers.len(), 3, "v1.{minor}");
        let raw: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let mut names = std::collections::BTreeSet::new();
        for (h, raw) in d.handlers.iter().zip(raw["handlers"].as_array().unwrap()) {
            assert!(is_dns1123_label(&h.name), "{}", h.name);
            assert!(names.insert(h.name.clone()), "duplicate {}", h.name);
            assert_eq!(
                h.request_hook.api_version,
                "hooks.runtime.cluster.x-k8s.io/v1alpha1"
            );
            assert!(raw.get("timeoutSeconds").is_some() && raw.get("failurePolicy").is_some());
            assert!((1..=30).contains(&h.timeout_seconds));
        }
        let bcd = d
            .handlers
            .iter()
            .find(|h| h.request_hook.hook == "BeforeClusterDelete")
            .unwrap();
        assert_eq!(
            (bcd.timeout_seconds, bcd.failure_policy),
            (7, FailurePolicy::Ignore)
        );
        // Deterministic: the same bytes every time.
        assert_eq!(discovery_of(config.clone()).await.1, bytes);
    }
}

#[tokio::test]
async fn discovery_and_routes_follow_the_capi_catalogue() {
    // A (hypothetical) CAPI older than every hook konnector serves gets none of them, and their paths 404.
    let mut config = plaintext_config(dead_addr());
    config.capi_version = CapiVersion::new(1, 1);
    let (d, _) = discovery_of(config.clone()).await;
    assert!(d.handlers.is_empty());
    let r = router(state(config));
    let resp = call(&r, post(&Hook::BeforeClusterDelete.path(), "{}")).await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn paths_prefix_query_trailing_slash_and_methods() {
    let (_fake, r, _stop) = with_fake().await;
    // Unknown paths, unknown handler names and a trailing slash all 404, never redirect.
    for p in [
        "/",
        "/hooks.runtime.cluster.x-k8s.io/v1alpha1/discovery/",
        "/hooks.runtime.cluster.x-k8s.io/v1alpha1/beforeclusterdelete/other",
        "/hooks.runtime.cluster.x-k8s.io/v1alpha1/beforeclusterdelete/konnector-bcd/",
        "/hooks.runtime.cluster.x-k8s.io/v1alpha1/BeforeClusterDelete/konnector-bcd",
        "/hooks.runtime.cluster.x-k8s.io/v1alpha2/discovery",
    ] {
        let resp = call(&r, post(p, "{}")).await;
        assert_eq!(resp.status(), 404, "{p}");
        assert!(resp.headers().get("location").is_none(), "{p}");
    }
    let get = http::Request::get(DISCOVERY)
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(call(&r, get).await.status(), 405);
    // Query string ignored; no Content-Type needed (none is set by `post`).
    let resp = call(&r, post(&format!("{DISCOVERY}?timeout=10s"), "")).await;
    assert_eq!(resp.status(), 200);
    let a = hook(
        &r,
        &format!("{}?timeout=10s", Hook::BeforeClusterDelete.path()),
        request(Hook::BeforeClusterDelete, cluster()),
    )
    .await;
    assert_eq!((a.status, a.retry_after_seconds), (Status::Success, Some(0)));

    // With a prefix, only prefixed paths answer.
    let stop = CancellationToken::new();
    let addr = spawn_fake(FakeExecutor::default(), stop.clone()).await;
    let mut config = plaintext_config(addr);
    config.path_prefix = "/capi/hooks/".into();
    let r = router(state(config));
    assert_eq!(
        call(&r, post(&format!("/capi/hooks{DISCOVERY}"), ""))
            .await
            .status(),
        200
    );
    assert_eq!(call(&r, post(DISCOVERY, "")).await.status(), 404);
    let a = hook(
        &r,
        &format!("/capi/hooks{}", Hook::AfterControlPlaneInitialized.path()),
        request(Hook::AfterControlPlaneInitialized, cluster()),
    )
    .await;
    assert_eq!(a.status, Status::Success);
    assert_eq!(a.retry_after_seconds, None);
}

#[tokio::test]
async fn success_answers_and_what_the_executor_is_sent() {
    let (fake, r, _stop) = with_fake().await;
    let a = hook(
        &r,
        &Hook::AfterControlPlaneInitialized.path(),
        request(Hook::AfterControlPlaneInitialized, cluster()),
    )
    .await;
    assert_eq!(a.kind, "AfterControlPlaneInitializedResponse");
    assert_eq!(a.api_version, "hooks.runtime.cluster.x-k8s.io/v1alpha1");
    assert_eq!(
        (a.status, a.retry_after_seconds, a.message.as_str()),
        (Status::Success, None, "Konnector Agent applied")
    );
    let a = hook(
        &r,
        &Hook::BeforeClusterUpgrade.path(),
        request(Hook::BeforeClusterUpgrade, cluster()),
    )
    .await;
    assert_eq!((a.status, a.retry_after_seconds), (Status::Success, Some(0)));
    {
        let s = fake.0.lock().unwrap();
        assert_eq!(s.applied.len(), 2);
        assert_eq!(s.applied[0].trigger, Trigger::AfterControlPlaneInitialized as i32);
        assert_eq!(s.applied[1].trigger, Trigger::BeforeClusterUpgrade as i32);
        let ctx = s.applied[0].cluster.as_ref().unwrap();
        // The executor is told which Cluster, and nothing else: it reads the rest from the live Cluster.
        assert_eq!((ctx.namespace.as_str(), ctx.name.as_str()), ("tenants", "wl-1"));
        // Every call carries a gRPC deadline inside the hook's timeout (20 s default, minus the 2 s margin).
        for d in &s.deadlines {
            assert!(grpc_timeout(d) <= Duration::from_secs(18), "{d:?}");
        }
    }
    // RemoveAgent: done → 0; waiting → max(1, n), always Success.
    for (done, n, want) in [(true, 0, 0), (true, 9, 0), (false, 0, 1), (false, 7, 7)] {
        fake.answer_remove(Ok(RemoveAgentResponse {
            done,
            retry_after_seconds: n,
            message: "m".into(),
            phase: 0,
        }));
        let a = hook(
            &r,
            &Hook::BeforeClusterDelete.path(),
            request(Hook::BeforeClusterDelete, cluster()),
        )
        .await;
        assert_eq!(
            (a.status, a.retry_after_seconds),
            (Status::Success, Some(want)),
            "done={done} n={n}"
        );
        assert_eq!(a.kind, "BeforeClusterDeleteResponse");
    }
}

const ALL_ERROR_CODES: [Code; 16] = [
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

#[tokio::test]
async fn every_grpc_code_maps_to_a_deterministic_failure_per_hook() {
    let (fake, r, _stop) = with_fake().await;
    for hook_kind in Hook::ALL {
        for code in ALL_ERROR_CODES {
            let status = tonic::Status::new(code, "credentials Secret tenants/pc-creds not found");
            match hook_kind {
                Hook::BeforeClusterDelete => fake.answer_remove(Err(status)),
                _ => fake.answer_apply(Err(status)),
            }
            let a = hook(&r, &hook_kind.path(), request(hook_kind, cluster())).await;
            assert_eq!(a.status, Status::Failure, "{hook_kind} {code:?}");
            assert_eq!(a.kind, hook_kind.response_kind());
            let want_retry = hook_kind.is_blocking().then_some(0);
            assert_eq!(a.retry_after_seconds, want_retry, "{hook_kind} {code:?}");
            let want = match code {
                Code::InvalidArgument | Code::FailedPrecondition => {
                    format!(
                        "{}: credentials Secret tenants/pc-creds not found",
                        context(hook_kind)
                    )
                }
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => UNREACHABLE.to_owned(),
                // INTERNAL and ABORTED (a lost race) carry the executor's own message through.
                Code::Internal | Code::Aborted => format!(
                    "{}: the executor reported {}: credentials Secret tenants/pc-creds not found",
                    context(hook_kind),
                    code_name(code)
                ),
                other => format!(
                    "{}: the executor reported {}",
                    context(hook_kind),
                    code_name(other)
                ),
            };
            assert_eq!(a.message, want, "{hook_kind} {code:?}");
        }
    }
}

#[tokio::test]
async fn unreachable_executor_is_a_deterministic_failure() {
    let r = router(state(plaintext_config(dead_addr())));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..3 {
        for h in Hook::ALL {
            let a = hook(&r, &h.path(), request(h, cluster())).await;
            assert_eq!((a.status, a.message.as_str()), (Status::Failure, UNREACHABLE));
            seen.insert(serde_json::to_string(&a).unwrap());
        }
    }
    assert_eq!(
        seen.len(),
        3,
        "one distinct answer per hook, identical across calls"
    );
}

#[tokio::test]
async fn slow_executor_is_cut_off_inside_the_hook_timeout() {
    let fake = FakeExecutor::default();
    fake.0.lock().unwrap().delay = Some(std::time::Duration::from_secs(30));
    let stop = CancellationToken::new();
    let addr = spawn_fake(fake.clone(), stop.clone()).await;
    let mut config = plaintext_config(addr);
    config.hooks.after_control_plane_initialized.timeout_seconds = 2;
    let r = router(state(config));
    let a = hook(
        &r,
        &Hook::AfterControlPlaneInitialized.path(),
        request(Hook::AfterControlPlaneInitialized, cluster()),
    )
    .await;
    // The executor would answer Success after 30 s; a Failure naming it unreachable means the gateway gave up
    // first. How early is read from the deadline it gave the call, not from a clock: the hook's 2 s.
    assert_eq!((a.status, a.message.as_str()), (Status::Failure, UNREACHABLE));
    let deadline = grpc_timeout(&fake.0.lock().unwrap().deadlines[0]);
    assert!(deadline <= Duration::from_secs(2), "{deadline:?}");
    // CAPI's own ?timeout= is honoured when it is smaller than the handler's (20 s by default).
    let r2 = router(state(plaintext_config(addr)));
    let a = hook(
        &r2,
        &format!("{}?timeout=1s", Hook::AfterControlPlaneInitialized.path()),
        request(Hook::AfterControlPlaneInitialized, cluster()),
    )
    .await;
    assert_eq!((a.status, a.message.as_str()), (Status::Failure, UNREACHABLE));
    let deadline = grpc_timeout(&fake.0.lock().unwrap().deadlines[1]);
    assert!(deadline <= Duration::from_secs(1), "{deadline:?}");
}

/// The deadline a gRPC call carried, from its `grpc-timeout` header (an integer and a unit, per the gRPC HTTP/2
/// protocol: H, M, S, m, u or n).
fn grpc_timeout(header: &Option<String>) -> Duration {
    let h = header.as_deref().expect("the call carried a grpc-timeout");
    let (value, unit) = h.split_at(h.len() - 1);
    let value: u64 = value.parse().unwrap();
    match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        other => panic!("grpc-timeout unit {other:?} in {h}"),
    }
}

#[tokio::test]
async fn hook_requests_beyond_the_concurrency_limit_wait_their_turn() {
    let fake = FakeExecutor::default();
    fake.0.lock().unwrap().delay = Some(std::time::Duration::from_millis(200));
    let stop = CancellationToken::new();
    let addr = spawn_fake(fake.clone(), stop.clone()).await;
    let mut config = plaintext_config(addr);
    config.max_concurrent_requests = 2;
    let r = router(state(config));
    let hook = Hook::AfterControlPlaneInitialized;
    let answers = futures_join(
        (0..6)
            .map(|_| {
                let r = r.clone();
                async move { common::hook(&r, &path(hook), request(hook, cluster())).await }
            })
            .collect(),
    )
    .await;
    assert!(answers.iter().all(|a| a.status == Status::Success), "{answers:?}");
    let s = fake.0.lock().unwrap();
    assert_eq!(s.applied.len(), 6);
    assert!(
        s.max_in_flight <= 2,
        "{} executor calls at once with a limit of 2",
        s.max_in_flight
    );
    stop.cancel();
}

async fn futures_join<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
