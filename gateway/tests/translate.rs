//! The three CAPI cluster shapes (and their edge cases) through the shared Cluster vocabulary
//! (`konnector_proto::capi`), and the gateway's crossing to the executor's `ClusterRef`.

use std::path::PathBuf;

use konnector_gateway::{
    capi::HookRequest,
    catalog::Hook,
    decode::decode,
    translate::{addon_configured, cluster_ref},
};
use konnector_proto::capi::{Category, Cluster};
use serde_json::{Value, json};

fn golden(capi: &str, hook: Hook) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden")
        .join(capi)
        .join(format!("{}.json", hook.path_segment()));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn cluster(v: Value) -> Cluster {
    Cluster::from_json(v).unwrap()
}

fn cat(k: &str, v: &str) -> Category {
    Category {
        key: k.into(),
        value: v.into(),
    }
}

#[test]
fn every_golden_shape_decodes_to_the_same_cluster() {
    let mut seen = Vec::new();
    for capi in ["v1.10", "v1.12", "v1.14"] {
        for hook in Hook::ALL {
            let req: HookRequest =
                decode(hook, &golden(capi, hook)).unwrap_or_else(|e| panic!("{capi} {hook}: {e}"));
            let c = req.cluster.unwrap();
            let r = cluster_ref(&c).unwrap();
            assert_eq!(
                (r.namespace.as_str(), r.name.as_str(), r.uid.as_str()),
                ("golden", "wl-golden", "8d3f0a52-3c1e-4b7a-9f65-2a1d7c0e4b19"),
                "{capi} {hook}"
            );
            assert!(addon_configured(&c));
            assert_eq!(
                c.labels()
                    .get("cluster.x-k8s.io/cluster-name")
                    .map(String::as_str),
                Some("wl-golden")
            );
            assert_eq!(
                c.annotations()
                    .get("caren.nutanix.com/cluster-uuid")
                    .map(String::as_str),
                Some("019d87f4-a01e-7aeb-8e4c-146dd9fcbf05")
            );
            assert_eq!(c.control_plane_endpoint(), Some(("10.20.0.10".to_owned(), 6443)));
            let agent = c.konnector_agent().unwrap().unwrap();
            assert_eq!(agent.credentials_secret_name, "wl-golden-pc-creds");
            assert_eq!(agent.enable_kubeconfig_upload, Some(true));
            assert_eq!(agent.strategy, "");
            let pc = c.prism_central().unwrap().unwrap();
            assert_eq!(pc.url, "https://pc.golden.example:9440");
            assert!(!pc.insecure);
            assert!(pc.additional_trust_bundle.starts_with("LS0t"));
            let categories = c.categories().unwrap();
            assert_eq!(
                categories,
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
            seen.push((r, agent, pc, categories));
        }
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn v1_12_cluster_without_type_meta_and_zeroed_status() {
    let c = cluster(json!({
        "metadata": {"name": "a", "namespace": "b"},
        "spec": {"topology": {"class": "c", "version": "v1.31.0"}},
        "status": {"infrastructureReady": false, "controlPlaneReady": false}
    }));
    assert_eq!(cluster_ref(&c).unwrap().name, "a");
    assert!(!addon_configured(&c));
    assert!(c.prism_central().unwrap().is_none() && c.control_plane_endpoint().is_none());
    assert!(!c.control_plane_initialized());
}

#[test]
fn a_cluster_without_name_or_namespace_cannot_be_named() {
    for meta in [
        json!({"namespace": "b"}),
        json!({"name": "a"}),
        json!({"name": "", "namespace": "b"}),
    ] {
        let e = cluster_ref(&cluster(json!({ "metadata": meta }))).unwrap_err();
        assert!(e.to_string().starts_with("the cluster has no metadata."), "{e}");
    }
}

#[test]
fn addon_configured_only_when_konnector_agent_is_present_or_unreadable() {
    let with = |cc: Value| {
        cluster(json!({"metadata": {"name": "a", "namespace": "b"},
            "spec": {"topology": {"variables": [{"name": "clusterConfig", "value": cc}]}}}))
    };
    assert!(!addon_configured(&with(json!({}))));
    assert!(!addon_configured(&with(json!({"addons": {}}))));
    assert!(!addon_configured(&with(json!({"addons": null}))));
    assert!(addon_configured(&with(json!({"addons": {"konnectorAgent": {}}}))));
    assert!(addon_configured(&with(
        json!({"addons": {"konnectorAgent": null}})
    )));
    // Unreadable: the executor, which reads the live Cluster, decides.
    assert!(addon_configured(&with(json!({"addons": 7}))));
}

#[test]
fn unknown_fields_everywhere_are_ignored() {
    let c = cluster(json!({
        "apiVersion": "cluster.x-k8s.io/v1beta3", "kind": "Cluster", "future": {"x": 1},
        "metadata": {"name": "a", "namespace": "b", "newField": true},
        "spec": {"newSpec": 1, "topology": {"newTopo": [], "variables": [
            {"name": "clusterConfig", "value": {"newThing": 1, "addons": {"konnectorAgent": {"newAgent": 2,
                "credentials": {"secretRef": {"name": "s", "newRef": 3}}}}}}]}},
        "status": {"anything": "goes"}
    }));
    assert_eq!(c.konnector_agent().unwrap().unwrap().credentials_secret_name, "s");
}
