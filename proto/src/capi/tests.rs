use serde_json::{Value, json};

use super::*;

fn cluster(value: Value) -> Cluster {
    Cluster::from_json(value).unwrap()
}

fn with_config(cc: Value) -> Cluster {
    cluster(json!({
        "metadata": {"name": "c", "namespace": "ns"},
        "spec": {"topology": {"variables": [{"name": "clusterConfig", "value": cc}]}}
    }))
}

#[test]
fn metadata() {
    let c = cluster(json!({"metadata": {"name": "c", "namespace": "ns", "uid": "u",
        "deletionTimestamp": "2026-01-01T00:00:00Z"}}));
    assert_eq!(c.name().unwrap(), "c");
    assert_eq!(c.namespace().unwrap(), "ns");
    assert_eq!(c.uid(), "u");
    assert!(c.is_deleting());
    let empty = cluster(json!({"metadata": {"name": ""}}));
    assert_eq!(empty.name(), Err(DecodeError::MissingMetadata("name")));
    assert_eq!(empty.namespace(), Err(DecodeError::MissingMetadata("namespace")));
    assert!(!empty.is_deleting());
    assert!(Cluster::from_json(json!([])).is_err());
}

#[test]
fn konnector_agent_shapes() {
    assert_eq!(with_config(json!({})).konnector_agent().unwrap(), None);
    assert_eq!(
        with_config(json!({"addons": null})).konnector_agent().unwrap(),
        None
    );
    assert_eq!(
        with_config(json!({"addons": {"konnectorAgent": null}}))
            .konnector_agent()
            .unwrap(),
        Some(KonnectorAgent::default())
    );
    let agent = with_config(json!({"addons": {"konnectorAgent": {
        "strategy": "HelmAddon", "credentials": {"secretRef": {"name": "creds"}},
        "enableKubeconfigUpload": false}}}))
    .konnector_agent()
    .unwrap()
    .unwrap();
    assert_eq!(agent.credentials_secret_name, "creds");
    assert_eq!(agent.enable_kubeconfig_upload, Some(false));
    let e = with_config(json!({"addons": 3})).konnector_agent().unwrap_err();
    assert_eq!(
        e.to_string(),
        "variable clusterConfig: addons does not have the expected shape"
    );
    let e = with_config(json!({"addons": {"konnectorAgent": {"strategy": 1}}}))
        .konnector_agent()
        .unwrap_err();
    assert!(e.to_string().contains("addons.konnectorAgent"), "{e}");
}

#[test]
fn prism_central_and_endpoint() {
    let c = with_config(
        json!({"nutanix": {"prismCentralEndpoint": {"url": "https://pc:9440", "insecure": true}}}),
    );
    let pc = c.prism_central().unwrap().unwrap();
    assert_eq!(pc.url, "https://pc:9440");
    assert!(pc.insecure);
    assert_eq!(with_config(json!({})).prism_central().unwrap(), None);
    assert!(
        with_config(json!({"nutanix": {"prismCentralEndpoint": "x"}}))
            .prism_central()
            .is_err()
    );
    let e = cluster(json!({"spec": {"controlPlaneEndpoint": {"host": "", "port": 0}}}));
    assert_eq!(e.control_plane_endpoint(), None);
    let e = cluster(json!({"spec": {"controlPlaneEndpoint": {"host": "h", "port": 6443}}}));
    assert_eq!(e.control_plane_endpoint(), Some(("h".into(), 6443)));
}

#[test]
fn categories_in_order() {
    let c = cluster(json!({
        "spec": {"topology": {
            "variables": [
                {"name": "clusterConfig", "value": {
                    "controlPlane": {"nutanix": {"machineDetails": {"additionalCategories": [{"key": "a", "value": "1"}]}}},
                    "workerConfig": {"nutanix": {"machineDetails": {"additionalCategories": [{"key": "b", "value": "2"}, {"key": "", "value": "x"}]}}}}},
                {"name": "workerConfig", "value": {"nutanix": {"machineDetails": {"additionalCategories": [{"key": "c", "value": "3"}]}}}}],
            "workers": {"machineDeployments": [{"name": "md", "variables": {"overrides": [
                {"name": "workerConfig", "value": {"nutanix": {"machineDetails": {"additionalCategories": [{"key": "d", "value": "4"}]}}}}]}}]}}}
    }));
    let got: Vec<_> = c.categories().unwrap().into_iter().map(|c| c.key).collect();
    assert_eq!(got, ["a", "b", "c", "d"]);
}

#[test]
fn only_the_variables_konnector_reads_are_kept() {
    let json = serde_json::to_vec(&json!({
        "metadata": {"name": "c", "namespace": "ns", "labels": {"a": "b"}},
        "spec": {"topology": {
            "variables": [
                {"name": "padding", "value": [0, 0, 0, {"deep": [1, 2]}]},
                {"value": {"addons": {"konnectorAgent": {}}}, "name": "clusterConfig"},
                {"value": [0, 0], "name": "other"},
                {"name": "workerConfig", "value": null}],
            "workers": {"machineDeployments": [
                {"name": "plain", "variables": {"overrides": [{"name": "padding", "value": [0]}]}},
                {"name": "md", "variables": {"overrides": [{"name": "workerConfig", "value": {}}]}}]}}}
    }))
    .unwrap();
    let c = Cluster::from_slice(&json).unwrap();
    let topology = c.spec.as_ref().unwrap().topology.as_ref().unwrap();
    let names: Vec<_> = topology
        .variables
        .iter()
        .flatten()
        .map(|v| v.name.as_deref().unwrap())
        .collect();
    assert_eq!(names, ["clusterConfig", "workerConfig"]);
    let mds = topology
        .workers
        .as_ref()
        .unwrap()
        .machine_deployments
        .as_ref()
        .unwrap();
    assert_eq!(
        mds.len(),
        1,
        "a MachineDeployment without a variable konnector reads is dropped"
    );
    // The value came before the name and is still read.
    assert_eq!(c.konnector_agent().unwrap(), Some(KonnectorAgent::default()));
    assert_eq!(c.labels().get("a").map(String::as_str), Some("b"));
    // The same from a tree.
    let tree: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(
        Cluster::from_json(tree).unwrap().konnector_agent().unwrap(),
        Some(KonnectorAgent::default())
    );
}

#[test]
fn labels_must_be_strings_and_objects_must_be_objects() {
    assert!(Cluster::from_json(json!({"metadata": {"labels": 3}})).is_err());
    assert!(Cluster::from_json(json!({"metadata": {"annotations": {"a": 1}}})).is_err());
    assert!(Cluster::from_json(json!({"metadata": {"labels": null}})).is_ok());
    // A repeated key counts as its last occurrence, as in any JSON map.
    let c = Cluster::from_slice(
        br#"{"spec":{"topology":{"variables":[{"name":"clusterConfig","value":{"addons":3,"addons":null}}]}}}"#,
    )
    .unwrap();
    assert_eq!(c.konnector_agent().unwrap(), None);
}

#[test]
fn control_plane_initialised_shapes() {
    let with_status = |s: Value| cluster(json!({"status": s}));
    assert!(!cluster(json!({})).control_plane_initialized());
    assert!(
        with_status(json!({"initialization": {"controlPlaneInitialized": true}})).control_plane_initialized()
    );
    assert!(with_status(json!({"controlPlaneReady": true})).control_plane_initialized());
    assert!(
        with_status(json!({"conditions": [{"type": "ControlPlaneInitialized", "status": "True"}]}))
            .control_plane_initialized()
    );
    assert!(
        !with_status(json!({"conditions": [{"type": "ControlPlaneInitialized", "status": "False"}]}))
            .control_plane_initialized()
    );
    assert!(
        with_status(
            json!({"v1beta2": {"conditions": [{"type": "ControlPlaneInitialized", "status": "True"}]}})
        )
        .control_plane_initialized()
    );
}
