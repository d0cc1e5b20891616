//! The CAPI `Cluster` vocabulary: one serde model of the Cluster fields konnector reads, and the named decoders for
//! CAREN's `clusterConfig` topology variable. The gateway decodes hook bodies with it and the executor decodes the
//! live Cluster with it, so both read a Cluster the same way.
//!
//! A Cluster arrives in three shapes: v1beta1 with full status (CAPI ≤ 1.10), v1beta1 without apiVersion/kind and
//! with a zeroed status (hook bodies of CAPI 1.11–1.12), and v1beta2 (1.13+). Only fields with the same path and
//! meaning in all of them are modelled, every field is optional, and unknown fields are ignored, so a new CAPI
//! field never breaks decoding. Decoding errors name a variable and a path, never a value: values are whatever a
//! user typed, and konnector never repeats them.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// CAPI's API group.
pub const GROUP: &str = "cluster.x-k8s.io";
/// The topology variable konnector reads.
pub const CLUSTER_CONFIG: &str = "clusterConfig";
/// CAREN's per-worker variable, read only for categories.
pub const WORKER_CONFIG: &str = "workerConfig";

/// A CAPI `Cluster`, as much of it as konnector reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// `cluster.x-k8s.io/v1beta1` or `/v1beta2`; absent in CAPI 1.11–1.12 hook bodies.
    pub api_version: Option<String>,
    /// `Cluster`; absent in CAPI 1.11–1.12 hook bodies.
    pub kind: Option<String>,
    /// Object metadata.
    pub metadata: Option<ObjectMeta>,
    /// The spec.
    pub spec: Option<ClusterSpec>,
    /// The status, kept as JSON because its shape differs between v1beta1 and v1beta2.
    pub status: Option<Value>,
}

/// The metadata fields konnector reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Name.
    pub name: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// UID.
    pub uid: Option<String>,
    /// Labels.
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations.
    pub annotations: Option<BTreeMap<String, String>>,
    /// Set once deletion has been requested.
    pub deletion_timestamp: Option<String>,
}

/// The spec fields konnector reads; same paths in v1beta1 and v1beta2.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// `spec.controlPlaneEndpoint`.
    pub control_plane_endpoint: Option<ApiEndpoint>,
    /// `spec.topology`.
    pub topology: Option<Topology>,
}

/// `spec.controlPlaneEndpoint`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ApiEndpoint {
    /// Host name or IP; empty while unknown.
    pub host: Option<String>,
    /// Port; 0 while unknown.
    pub port: Option<i32>,
}

/// `spec.topology`, reduced to its variables.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Topology {
    /// Cluster-level variables.
    pub variables: Option<Vec<ClusterVariable>>,
    /// Worker topology.
    pub workers: Option<Workers>,
}

/// One `{name, value}` topology variable. v1beta1's `definitionFrom` is ignored.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ClusterVariable {
    /// Variable name.
    pub name: Option<String>,
    /// Variable value, any JSON.
    pub value: Option<Value>,
}

/// `spec.topology.workers`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workers {
    /// MachineDeployment topologies, in order.
    pub machine_deployments: Option<Vec<MachineDeploymentTopology>>,
}

/// One `spec.topology.workers.machineDeployments[]` entry.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct MachineDeploymentTopology {
    /// The MachineDeployment topology name.
    pub name: Option<String>,
    /// Per-MachineDeployment variables.
    pub variables: Option<MachineDeploymentVariables>,
}

/// `machineDeployments[].variables`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct MachineDeploymentVariables {
    /// Variables that override the cluster-level ones for this MachineDeployment.
    pub overrides: Option<Vec<ClusterVariable>>,
}

/// `clusterConfig.addons.konnectorAgent`, as written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KonnectorAgent {
    /// The deployment strategy; empty means HelmAddon.
    pub strategy: String,
    /// `credentials.secretRef.name`; empty when not set.
    pub credentials_secret_name: String,
    /// `enableKubeconfigUpload`; `None` when not set.
    pub enable_kubeconfig_upload: Option<bool>,
}

/// `clusterConfig.nutanix.prismCentralEndpoint`, as written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrismCentralEndpoint {
    /// The URL, unparsed.
    pub url: String,
    /// Skip TLS verification.
    pub insecure: bool,
    /// Base64-encoded PEM bundle; empty when not set.
    pub additional_trust_bundle: String,
}

/// One Nutanix category.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Category {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// Why a Cluster could not be decoded. Names fields, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// `metadata.name` or `.namespace` is missing or empty.
    #[error("the cluster has no metadata.{0}")]
    MissingMetadata(&'static str),
    /// A variable exists but a part konnector reads does not have the documented shape.
    #[error("variable {variable}: {path} does not have the expected shape")]
    Malformed {
        /// The variable name, e.g. `clusterConfig`.
        variable: String,
        /// The dotted path inside the variable value.
        path: String,
    },
    /// The JSON is not a Cluster at all.
    #[error("the object is not a CAPI Cluster")]
    NotACluster,
}

impl Cluster {
    /// Decodes a Cluster from JSON (a live object or a hook body's `cluster`).
    pub fn from_json(value: Value) -> Result<Self, DecodeError> {
        serde_json::from_value(value).map_err(|_| DecodeError::NotACluster)
    }

    fn meta(&self) -> Option<&ObjectMeta> {
        self.metadata.as_ref()
    }

    /// `metadata.namespace`, required.
    pub fn namespace(&self) -> Result<&str, DecodeError> {
        self.meta()
            .and_then(|m| m.namespace.as_deref())
            .filter(|s| !s.is_empty())
            .ok_or(DecodeError::MissingMetadata("namespace"))
    }

    /// `metadata.name`, required.
    pub fn name(&self) -> Result<&str, DecodeError> {
        self.meta()
            .and_then(|m| m.name.as_deref())
            .filter(|s| !s.is_empty())
            .ok_or(DecodeError::MissingMetadata("name"))
    }

    /// `metadata.uid`, empty when absent.
    pub fn uid(&self) -> &str {
        self.meta().and_then(|m| m.uid.as_deref()).unwrap_or_default()
    }

    /// `metadata.labels`.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.meta().and_then(|m| m.labels.clone()).unwrap_or_default()
    }

    /// `metadata.annotations`.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.meta()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default()
    }

    /// Whether deletion has been requested (`metadata.deletionTimestamp` is set).
    pub fn is_deleting(&self) -> bool {
        self.meta().is_some_and(|m| m.deletion_timestamp.is_some())
    }

    /// `metadata.deletionTimestamp` as written (RFC 3339), when set.
    pub fn deletion_timestamp(&self) -> Option<&str> {
        self.meta().and_then(|m| m.deletion_timestamp.as_deref())
    }

    /// `spec.controlPlaneEndpoint`; `None` while CAPI does not know it (empty host and zero port).
    pub fn control_plane_endpoint(&self) -> Option<(String, i32)> {
        let e = self.spec.as_ref()?.control_plane_endpoint.as_ref()?;
        let host = e.host.clone().unwrap_or_default();
        let port = e.port.unwrap_or_default();
        (!host.is_empty() || port != 0).then_some((host, port))
    }

    fn variables(&self) -> &[ClusterVariable] {
        self.spec
            .as_ref()
            .and_then(|s| s.topology.as_ref())
            .and_then(|t| t.variables.as_deref())
            .unwrap_or_default()
    }

    /// The `clusterConfig` variable's value, if any.
    pub fn cluster_config(&self) -> Option<&Value> {
        variable(self.variables(), CLUSTER_CONFIG)
    }

    /// `clusterConfig.addons.konnectorAgent`. `None` means the addon is not configured; `{}` or `null` give
    /// `Some` with everything empty, which the executor reports as missing credentials.
    pub fn konnector_agent(&self) -> Result<Option<KonnectorAgent>, DecodeError> {
        let Some(cc) = self.cluster_config() else {
            return Ok(None);
        };
        let Some(addons) = lookup(CLUSTER_CONFIG, cc, &["addons"])? else {
            return Ok(None);
        };
        let addons = match addons {
            Value::Null => return Ok(None),
            Value::Object(map) => map,
            _ => return Err(malformed(CLUSTER_CONFIG, &["addons"])),
        };
        let Some(agent) = addons.get("konnectorAgent") else {
            return Ok(None);
        };
        let agent: KonnectorAgentJson = match agent {
            Value::Null => KonnectorAgentJson::default(),
            v => KonnectorAgentJson::deserialize(v)
                .map_err(|_| malformed(CLUSTER_CONFIG, &["addons", "konnectorAgent"]))?,
        };
        Ok(Some(KonnectorAgent {
            strategy: agent.strategy.unwrap_or_default(),
            credentials_secret_name: agent
                .credentials
                .and_then(|c| c.secret_ref)
                .and_then(|r| r.name)
                .unwrap_or_default(),
            enable_kubeconfig_upload: agent.enable_kubeconfig_upload,
        }))
    }

    /// `clusterConfig.nutanix.prismCentralEndpoint`; `None` when there is no Nutanix config.
    pub fn prism_central(&self) -> Result<Option<PrismCentralEndpoint>, DecodeError> {
        let Some(cc) = self.cluster_config() else {
            return Ok(None);
        };
        let pc: Option<PrismCentralJson> =
            decode_at(CLUSTER_CONFIG, cc, &["nutanix", "prismCentralEndpoint"])?;
        Ok(pc.map(|pc| PrismCentralEndpoint {
            url: pc.url.unwrap_or_default(),
            insecure: pc.insecure.unwrap_or_default(),
            additional_trust_bundle: pc.additional_trust_bundle.unwrap_or_default(),
        }))
    }

    /// Every Nutanix category konnector maps, in this order, duplicates kept:
    ///
    /// 1. cluster level: `clusterConfig.controlPlane.nutanix.machineDetails.additionalCategories`,
    ///    `clusterConfig.workerConfig.nutanix.machineDetails.additionalCategories`, then the `workerConfig`
    ///    variable's `nutanix.machineDetails.additionalCategories`;
    /// 2. for each `spec.topology.workers.machineDeployments[]` in order, the same three lookups on its
    ///    `variables.overrides`.
    ///
    /// Entries with an empty key or value are dropped, as the agent cannot use them.
    pub fn categories(&self) -> Result<Vec<Category>, DecodeError> {
        let topology = self.spec.as_ref().and_then(|s| s.topology.as_ref());
        let mut out = Vec::new();
        collect_categories(self.variables(), &mut out)?;
        let mds = topology
            .and_then(|t| t.workers.as_ref())
            .and_then(|w| w.machine_deployments.as_deref())
            .unwrap_or_default();
        for md in mds {
            let overrides: &[ClusterVariable] = md
                .variables
                .as_ref()
                .and_then(|v| v.overrides.as_deref())
                .unwrap_or_default();
            collect_categories(overrides, &mut out)?;
        }
        Ok(out)
    }

    /// Whether the control plane has initialised, from either status shape: v1beta2's
    /// `status.initialization.controlPlaneInitialized`, v1beta1's `status.controlPlaneReady`, or a
    /// `ControlPlaneInitialized=True` condition in `status.conditions` or `status.v1beta2.conditions`.
    pub fn control_plane_initialized(&self) -> bool {
        let Some(status) = &self.status else {
            return false;
        };
        let condition_true = |conditions: &Value| {
            conditions.as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "ControlPlaneInitialized" && c["status"] == "True")
            })
        };
        status["initialization"]["controlPlaneInitialized"] == true
            || status["controlPlaneReady"] == true
            || condition_true(&status["conditions"])
            || condition_true(&status["v1beta2"]["conditions"])
    }
}

/// The first variable called `name`, if any. A `null` value counts as absent.
pub fn variable<'a>(variables: &'a [ClusterVariable], name: &str) -> Option<&'a Value> {
    variables
        .iter()
        .find(|v| v.name.as_deref() == Some(name))
        .and_then(|v| v.value.as_ref())
        .filter(|v| !v.is_null())
}

/// Looks up `path` inside a variable value. `Ok(None)` when a step is absent or null; an error when a step exists
/// but is not an object, because then the variable does not have the shape konnector reads.
fn lookup<'a>(variable: &str, value: &'a Value, path: &[&str]) -> Result<Option<&'a Value>, DecodeError> {
    let mut cur = value;
    for (i, key) in path.iter().enumerate() {
        match cur {
            Value::Null => return Ok(None),
            Value::Object(map) => match map.get(*key) {
                Some(next) => cur = next,
                None => return Ok(None),
            },
            _ => return Err(malformed(variable, &path[..i])),
        }
    }
    Ok(Some(cur))
}

fn malformed(variable: &str, path: &[&str]) -> DecodeError {
    DecodeError::Malformed {
        variable: variable.to_owned(),
        path: if path.is_empty() {
            "the value".to_owned()
        } else {
            path.join(".")
        },
    }
}

fn decode_at<T: DeserializeOwned>(
    variable: &str,
    value: &Value,
    path: &[&str],
) -> Result<Option<T>, DecodeError> {
    match lookup(variable, value, path)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => T::deserialize(v).map(Some).map_err(|_| malformed(variable, path)),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct KonnectorAgentJson {
    strategy: Option<String>,
    credentials: Option<CredentialsJson>,
    enable_kubeconfig_upload: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct CredentialsJson {
    secret_ref: Option<SecretRefJson>,
}

#[derive(Deserialize, Default)]
struct SecretRefJson {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrismCentralJson {
    url: Option<String>,
    insecure: Option<bool>,
    additional_trust_bundle: Option<String>,
}

#[derive(Deserialize)]
struct CategoryJson {
    key: Option<String>,
    value: Option<String>,
}

const CP_CATEGORIES: &[&str] = &[
    "controlPlane",
    "nutanix",
    "machineDetails",
    "additionalCategories",
];
const WORKER_IN_CLUSTER_CONFIG: &[&str] = &[
    "workerConfig",
    "nutanix",
    "machineDetails",
    "additionalCategories",
];
const WORKER_CATEGORIES: &[&str] = &["nutanix", "machineDetails", "additionalCategories"];

fn collect_categories(vars: &[ClusterVariable], out: &mut Vec<Category>) -> Result<(), DecodeError> {
    let lookups: [(&str, &[&str]); 3] = [
        (CLUSTER_CONFIG, CP_CATEGORIES),
        (CLUSTER_CONFIG, WORKER_IN_CLUSTER_CONFIG),
        (WORKER_CONFIG, WORKER_CATEGORIES),
    ];
    for (name, path) in lookups {
        let Some(value) = variable(vars, name) else {
            continue;
        };
        let list: Option<Vec<CategoryJson>> = decode_at(name, value, path)?;
        out.extend(list.unwrap_or_default().into_iter().filter_map(|c| {
            let key = c.key.filter(|k| !k.is_empty())?;
            let value = c.value.filter(|v| !v.is_empty())?;
            Some(Category { key, value })
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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
    fn control_plane_initialised_shapes() {
        let with_status = |s: Value| cluster(json!({"status": s}));
        assert!(!cluster(json!({})).control_plane_initialized());
        assert!(
            with_status(json!({"initialization": {"controlPlaneInitialized": true}}))
                .control_plane_initialized()
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
}
