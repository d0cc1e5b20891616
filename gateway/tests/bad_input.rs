//! Bad input never panics, never hangs, and always gets HTTP 200 with a `status` (a Failure with a clear message).

mod common;

use common::*;
use konnector_gateway::{capi::Status, catalog::Hook, router};
use proptest::prelude::*;
use serde_json::json;

fn failure_for(hook: Hook, body: impl Into<axum::body::Body>, needle: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = router(state(plaintext_config(dead_addr())));
        let a = common::hook(&r, &hook.path(), body).await;
        assert_eq!(a.status, Status::Failure, "{a:?}");
        assert!(a.message.contains(needle), "{needle:?} not in {:?}", a.message);
        assert_eq!(a.retry_after_seconds, hook.is_blocking().then_some(0));
    });
}

#[test]
fn malformed_json() {
    failure_for(Hook::AfterControlPlaneInitialized, "{not json", "not valid JSON");
    failure_for(Hook::BeforeClusterDelete, "", "ends before the JSON is complete");
    failure_for(
        Hook::BeforeClusterUpgrade,
        "[1,2]",
        "does not have the shape of a hook request",
    );
    failure_for(
        Hook::BeforeClusterUpgrade,
        r#"{"cluster": {"metadata": {"labels": 3}}}"#,
        "shape",
    );
}

#[test]
fn kind_that_does_not_match_the_path() {
    let body = request(Hook::BeforeClusterDelete, cluster());
    failure_for(
        Hook::AfterControlPlaneInitialized,
        body,
        "kind does not match this handler",
    );
    let body =
        json!({"apiVersion": "v1", "kind": "AfterControlPlaneInitializedRequest", "cluster": cluster()});
    failure_for(Hook::AfterControlPlaneInitialized, body.to_string(), "apiVersion");
}

#[test]
fn missing_cluster_and_metadata() {
    let bare = json!({"apiVersion": "hooks.runtime.cluster.x-k8s.io/v1alpha1", "kind": "BeforeClusterDeleteRequest"});
    failure_for(Hook::BeforeClusterDelete, bare.to_string(), "has no cluster");
    let mut c = cluster();
    c["metadata"].as_object_mut().unwrap().remove("name");
    failure_for(
        Hook::BeforeClusterDelete,
        request(Hook::BeforeClusterDelete, c),
        "metadata.name",
    );
    let mut c = cluster();
    c["metadata"]["namespace"] = json!("");
    failure_for(
        Hook::BeforeClusterUpgrade,
        request(Hook::BeforeClusterUpgrade, c),
        "metadata.namespace",
    );
    failure_for(
        Hook::BeforeClusterUpgrade,
        request(Hook::BeforeClusterUpgrade, json!({})),
        "metadata.name",
    );
}

#[test]
fn malformed_konnector_config_in_the_body_is_judged_by_the_executor() {
    // The body is only a trigger: the executor reads and judges the live Cluster's configuration, so the gateway
    // forwards (here to an executor that is down) instead of trusting or rejecting what the body says.
    let mut c = cluster();
    c["spec"]["topology"]["variables"][0]["value"]["addons"]["konnectorAgent"]["credentials"] = json!("oops");
    failure_for(
        Hook::AfterControlPlaneInitialized,
        request(Hook::AfterControlPlaneInitialized, c),
        "konnector executor is unreachable",
    );
}

#[test]
fn body_over_the_limit() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut config = plaintext_config(dead_addr());
        config.body_limit_bytes = 1024;
        let r = router(state(config));
        let big = request(
            Hook::BeforeClusterDelete,
            json!({"metadata": {"name": "x".repeat(4096), "namespace": "n"}}),
        );
        let a = common::hook(&r, &Hook::BeforeClusterDelete.path(), big).await;
        assert_eq!(a.status, Status::Failure);
        assert_eq!(
            a.message,
            "request body exceeds the gateway's limit of 1024 bytes"
        );
        // A streamed body without Content-Length is cut off the same way.
        let chunks = futures_chunks(8, 512);
        let a = common::hook(&r, &Hook::BeforeClusterDelete.path(), chunks).await;
        assert_eq!(
            a.message,
            "request body exceeds the gateway's limit of 1024 bytes"
        );
    });
}

fn futures_chunks(n: usize, size: usize) -> axum::body::Body {
    let stream = tokio_stream::iter((0..n).map(move |_| Ok::<_, std::io::Error>(vec![b' '; size])));
    axum::body::Body::from_stream(stream)
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "[a-zA-Z0-9./-]{0,12}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("cluster"),
            Just("metadata"),
            Just("name"),
            Just("namespace"),
            Just("spec"),
            Just("topology"),
            Just("variables"),
            Just("clusterConfig"),
            Just("value"),
            Just("addons"),
            Just("konnectorAgent"),
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        let key = prop_oneof![
            Just("apiVersion".to_owned()),
            Just("kind".to_owned()),
            Just("cluster".to_owned()),
            Just("metadata".to_owned()),
            Just("name".to_owned()),
            Just("namespace".to_owned()),
            Just("spec".to_owned()),
            Just("topology".to_owned()),
            Just("variables".to_owned()),
            Just("value".to_owned()),
            Just("addons".to_owned()),
            Just("konnectorAgent".to_owned()),
            Just("nutanix".to_owned()),
            Just("prismCentralEndpoint".to_owned()),
            Just("workers".to_owned()),
            Just("machineDeployments".to_owned()),
            Just("overrides".to_owned()),
            Just("controlPlaneEndpoint".to_owned()),
            Just("port".to_owned()),
            "[a-z]{1,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(key, inner, 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn assert_answers(body: Vec<u8>, hook: Hook) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = router(state(plaintext_config(dead_addr())));
        let resp = call(&r, post(&hook.path(), body)).await;
        prop_assert_eq!(resp.status(), 200);
        let bytes = body_bytes(resp).await;
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        prop_assert!(matches!(v["status"].as_str(), Some("Success" | "Failure")));
        prop_assert_eq!(v["kind"].as_str(), Some(hook.response_kind()));
        prop_assert_eq!(v.get("retryAfterSeconds").is_some(), hook.is_blocking());
        Ok(())
    })
}

fn arb_hook() -> impl Strategy<Value = Hook> {
    prop::sample::select(Hook::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_always_get_an_answer(body in prop::collection::vec(any::<u8>(), 0..512), hook in arb_hook()) {
        assert_answers(body, hook)?;
    }

    #[test]
    fn arbitrary_json_always_gets_an_answer(v in arb_json(), hook in arb_hook()) {
        assert_answers(serde_json::to_vec(&v).unwrap(), hook)?;
    }

    #[test]
    fn arbitrary_cluster_json_always_gets_an_answer(c in arb_json(), hook in arb_hook()) {
        let body = serde_json::json!({"apiVersion": "hooks.runtime.cluster.x-k8s.io/v1alpha1", "kind": hook.request_kind(), "cluster": c});
        assert_answers(serde_json::to_vec(&body).unwrap(), hook)?;
    }
}
