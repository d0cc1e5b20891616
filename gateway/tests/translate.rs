//! Translation of the three CAPI cluster shapes (and their edge cases) into the executor's ClusterContext.

use std::path::PathBuf;

use konnector_gateway::{
    capi::{HookCluster, HookRequest},
    catalog::Hook,
    decode::decode,
    translate::{TranslateError, cluster_context},
};
use konnector_proto::v1::{Category, ClusterContext};
use serde_json::{Value, json};

fn golden(capi: &str, hook: Hook) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden")
        .join(capi)
        .join(format!("{}.json", hook.path_segment()));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn ctx_of(cluster: Value) -> Result<ClusterContext, TranslateError> {
    let c: HookCluster = serde_json::from_value(cluster).unwrap();
    cluster_context(&c)
}

fn cat(k: &str, v: &str) -> Category {
    Category {
        key: k.into(),
        value: v.into(),
    }
}

#[test]
fn every_golden_shape_translates_to_the_same_context() {
    let mut contexts = Vec::new();
    for capi in ["v1.10", "v1.12", "v1.14"] {
        for hook in Hook::ALL {
            let req: HookRequest =
                decode(hook, &golden(capi, hook)).unwrap_or_else(|e| panic!("{capi} {hook}: {e}"));
            let ctx = cluster_context(req.cluster.as_ref().unwrap()).unwrap();
            assert_eq!(
                (ctx.namespace.as_str(), ctx.name.as_str()),
                ("golden", "wl-golden"),
                "{capi} {hook}"
            );
            assert_eq!(ctx.uid, "8d3f0a52-3c1e-4b7a-9f65-2a1d7c0e4b19");
            assert_eq!(
                ctx.labels
                    .get("cluster.x-k8s.io/cluster-name")
                    .map(String::as_str),
                Some("wl-golden")
            );
            assert_eq!(
                ctx.annotations
                    .get("caren.nutanix.com/cluster-uuid")
                    .map(String::as_str),
                Some("019d87f4-a01e-7aeb-8e4c-146dd9fcbf05")
            );
            let ep = ctx.control_plane_endpoint.clone().unwrap();
            assert_eq!((ep.host.as_str(), ep.port), ("10.20.0.10", 6443));
            let agent = ctx.konnector_agent.clone().unwrap();
            assert_eq!(agent.credentials_secret_name, "wl-golden-pc-creds");
            assert_eq!(agent.enable_kubeconfig_upload, Some(true));
            assert_eq!(agent.strategy, "");
            let pc = ctx.prism_central.clone().unwrap();
            assert_eq!(pc.url, "https://pc.golden.example:9440");
            assert!(!pc.insecure);
            assert!(pc.additional_trust_bundle.starts_with("LS0t"));
            assert_eq!(
                ctx.categories,
                vec![
                    cat("Environment", "Golden"),
                    cat("Tier", "ControlPlane"),
                    cat("Tier", "Worker"),
                    cat("Pool", "md-0"),
                    cat("Environment", "Golden"),
                    cat("Pool", "md-1-cp"),
                ],
                "{capi} {hook}"
            );
            // Annotations differ per hook (pending-hooks, last-applied); everything else must be identical.
            let mut ctx = ctx;
            ctx.annotations.clear();
            contexts.push(ctx);
        }
    }
    assert!(contexts.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn v1_12_cluster_without_type_meta_and_zeroed_status() {
    let ctx = ctx_of(json!({
        "metadata": {"name": "a", "namespace": "b"},
        "spec": {"topology": {"class": "c", "version": "v1.31.0"}},
        "status": {"infrastructureReady": false, "controlPlaneReady": false}
    }))
    .unwrap();
    assert_eq!(ctx.name, "a");
    assert!(
        ctx.konnector_agent.is_none() && ctx.prism_central.is_none() && ctx.control_plane_endpoint.is_none()
    );
}

#[test]
fn konnector_agent_absent_empty_and_null() {
    let with = |addons: Value| {
        ctx_of(json!({"metadata": {"name": "a", "namespace": "b"},
            "spec": {"topology": {"variables": [{"name": "clusterConfig", "value": {"addons": addons}}]}}}))
        .unwrap()
    };
    assert!(
        with(json!({})).konnector_agent.is_none(),
        "absent = not configured"
    );
    assert!(with(json!(null)).konnector_agent.is_none());
    let empty = with(json!({"konnectorAgent": {}})).konnector_agent.unwrap();
    assert_eq!(
        (
            empty.credentials_secret_name.as_str(),
            empty.enable_kubeconfig_upload
        ),
        ("", None)
    );
    let null = with(json!({"konnectorAgent": null})).konnector_agent.unwrap();
    assert_eq!(null, empty, "null counts as present, like {{}}");
    let full = with(
        json!({"konnectorAgent": {"strategy": "HelmAddon", "enableKubeconfigUpload": false,
        "credentials": {"secretRef": {"name": "s"}}, "someFutureField": 1}}),
    )
    .konnector_agent
    .unwrap();
    assert_eq!(
        (
            full.strategy.as_str(),
            full.credentials_secret_name.as_str(),
            full.enable_kubeconfig_upload
        ),
        ("HelmAddon", "s", Some(false))
    );
    // No clusterConfig variable at all, or no topology: not configured.
    assert!(
        ctx_of(json!({"metadata": {"name": "a", "namespace": "b"}}))
            .unwrap()
            .konnector_agent
            .is_none()
    );
}

#[test]
fn missing_nutanix_config_leaves_prism_central_unset() {
    let ctx = ctx_of(json!({"metadata": {"name": "a", "namespace": "b"},
        "spec": {"topology": {"variables": [{"name": "clusterConfig",
            "value": {"addons": {"konnectorAgent": {"credentials": {"secretRef": {"name": "s"}}}}}}]}}}))
    .unwrap();
    assert!(ctx.konnector_agent.is_some());
    assert!(ctx.prism_central.is_none());
}

#[test]
fn categories_follow_cluster_then_machine_deployment_order_and_keep_duplicates() {
    let cats = |list: &[(&str, &str)]| {
        json!({"nutanix": {"machineDetails": {"additionalCategories":
            list.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>()}}})
    };
    let ctx = ctx_of(json!({"metadata": {"name": "a", "namespace": "b"}, "spec": {"topology": {
        "variables": [
            {"name": "workerConfig", "value": cats(&[("W", "1")])},
            {"name": "clusterConfig", "value": {
                "workerConfig": cats(&[("CW", "1")]),
                "controlPlane": cats(&[("CP", "1"), ("", "dropped"), ("dropped", "")]),
            }},
        ],
        "workers": {"machineDeployments": [
            {"name": "md-0", "variables": {"overrides": [
                {"name": "workerConfig", "value": cats(&[("MD0W", "1"), ("CP", "1")])},
                {"name": "clusterConfig", "value": {"controlPlane": cats(&[("MD0CP", "1")]),
                                                    "workerConfig": cats(&[("MD0CW", "1")])}},
            ]}},
            {"name": "md-1"},
            {"name": "md-2", "variables": {"overrides": [{"name": "workerConfig", "value": cats(&[("MD2W", "1")])}]}},
        ]}
    }}}))
    .unwrap();
    let keys: Vec<_> = ctx.categories.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["CP", "CW", "W", "MD0CP", "MD0CW", "MD0W", "CP", "MD2W"]);
}

#[test]
fn malformed_config_fails_only_when_the_addon_is_configured() {
    let cluster = |agent: Value| {
        json!({"metadata": {"name": "a", "namespace": "b"}, "spec": {"topology": {"variables": [
            {"name": "clusterConfig", "value": {"addons": agent,
                "nutanix": {"prismCentralEndpoint": "not-an-object"},
                "controlPlane": {"nutanix": {"machineDetails": {"additionalCategories": "nope"}}}}}]}}})
    };
    let err = ctx_of(cluster(json!({"konnectorAgent": {}}))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "variable clusterConfig: nutanix.prismCentralEndpoint does not have the expected shape"
    );
    let ctx = ctx_of(cluster(json!({}))).unwrap();
    assert!(ctx.prism_central.is_none() && ctx.categories.is_empty());
    let err = ctx_of(
        json!({"metadata": {"name": "a", "namespace": "b"}, "spec": {"topology": {"variables": [
        {"name": "clusterConfig", "value": {"addons": "x"}}]}}}),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "variable clusterConfig: addons does not have the expected shape"
    );
}

#[test]
fn unknown_fields_everywhere_are_ignored() {
    let ctx = ctx_of(
        json!({"metadata": {"name": "a", "namespace": "b", "new": {"x": 1}},
        "spec": {"future": [1, 2], "controlPlaneEndpoint": {"host": "h", "port": 1, "extra": true},
                 "topology": {"variables": [{"name": "other", "value": 5}], "extra": null}},
        "status": {"anything": "goes"}}),
    )
    .unwrap();
    assert_eq!(ctx.control_plane_endpoint.unwrap().host, "h");
}
