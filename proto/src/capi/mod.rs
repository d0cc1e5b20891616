//! The CAPI `Cluster` vocabulary: one serde model of the Cluster fields konnector reads, and the named decoders for
//! CAREN's `clusterConfig` topology variable. The gateway decodes hook bodies with it and the executor decodes the
//! live Cluster with it, so both read a Cluster the same way.
//!
//! A Cluster arrives in three shapes: v1beta1 with full status (CAPI ≤ 1.10), v1beta1 without apiVersion/kind and
//! with a zeroed status (hook bodies of CAPI 1.11–1.12), and v1beta2 (1.13+). Only fields with the same path and
//! meaning in all of them are modelled, every field is optional, and unknown fields are ignored, so a new CAPI
//! field never breaks decoding. Decoding errors name a variable and a path, never a value: values are whatever a
//! user typed, and konnector never repeats them.
//!
//! Decoding costs about the size of what konnector reads, never a multiple of the object's size: a Cluster's
//! variables may hold anything a ClusterClass allows, and a hook body is written by whoever can reach the gateway.
//! Only the variables konnector reads are kept, as raw JSON text, and only the paths konnector reads inside them
//! are ever parsed; other variables, machineDeployments without them, and every unknown field are skipped while
//! the JSON is scanned, without building a tree. Labels, annotations and the status are kept raw too, and parsed
//! when asked for.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// CAPI's API group.
pub const GROUP: &str = "cluster.x-k8s.io";
/// The topology variable konnector reads.
pub const CLUSTER_CONFIG: &str = "clusterConfig";
/// CAREN's per-worker variable, read only for categories.
pub const WORKER_CONFIG: &str = "workerConfig";
/// The variables a decoded Cluster keeps; every other variable is skipped unparsed.
pub const READ_VARIABLES: [&str; 2] = [CLUSTER_CONFIG, WORKER_CONFIG];

/// Raw JSON text, as kept for the parts of a Cluster konnector parses only on demand.
pub type Raw = Box<RawValue>;

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
    /// The status, kept raw because its shape differs between v1beta1 and v1beta2; see
    /// [`Cluster::control_plane_initialized`].
    pub status: Option<Raw>,
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
    /// The resourceVersion: which version of the object this is (opaque; compared for equality only).
    pub resource_version: Option<String>,
    /// Labels, raw (checked to be a map of strings); see [`Cluster::labels`].
    #[serde(default, deserialize_with = "string_map_raw")]
    pub labels: Option<Raw>,
    /// Annotations, raw (checked to be a map of strings); see [`Cluster::annotations`].
    #[serde(default, deserialize_with = "string_map_raw")]
    pub annotations: Option<Raw>,
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
    /// Cluster-level variables: only those in [`READ_VARIABLES`], in their order.
    #[serde(default, deserialize_with = "read_variables")]
    pub variables: Option<Vec<ClusterVariable>>,
    /// Worker topology.
    pub workers: Option<Workers>,
}

/// One `{name, value}` topology variable. v1beta1's `definitionFrom` is ignored. When decoded inside a Cluster,
/// the value of a variable konnector does not read is skipped unparsed (when `name` comes first, as the API server
/// writes it) or dropped.
#[derive(Clone, Debug, Default)]
pub struct ClusterVariable {
    /// Variable name.
    pub name: Option<String>,
    /// Variable value, raw JSON; `None` when absent or `null`.
    pub value: Option<Raw>,
}

/// `spec.topology.workers`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workers {
    /// MachineDeployment topologies, in order: only those overriding a variable in [`READ_VARIABLES`].
    #[serde(default, deserialize_with = "read_machine_deployments")]
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
    /// Variables that override the cluster-level ones for this MachineDeployment: only those in
    /// [`READ_VARIABLES`].
    #[serde(default, deserialize_with = "read_variables")]
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
    /// Decodes a Cluster from a JSON tree (tests, and callers that already hold one).
    pub fn from_json(value: serde_json::Value) -> Result<Self, DecodeError> {
        serde_json::from_value(value).map_err(|_| DecodeError::NotACluster)
    }

    /// Decodes a Cluster from JSON text (a live object as the API server sends it), without building a tree.
    pub fn from_slice(json: &[u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(json).map_err(|_| DecodeError::NotACluster)
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

    /// `metadata.resourceVersion`, empty when absent.
    pub fn resource_version(&self) -> &str {
        self.meta()
            .and_then(|m| m.resource_version.as_deref())
            .unwrap_or_default()
    }

    /// `metadata.labels`; empty when absent or not a map of strings.
    pub fn labels(&self) -> BTreeMap<String, String> {
        string_map(self.meta().and_then(|m| m.labels.as_deref()))
    }

    /// `metadata.annotations`; empty when absent or not a map of strings.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        string_map(self.meta().and_then(|m| m.annotations.as_deref()))
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

    /// The `clusterConfig` variable's value, raw, if any.
    pub fn cluster_config(&self) -> Option<&RawValue> {
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
        let Some(agent) =
            field(addons, "konnectorAgent").map_err(|()| malformed(CLUSTER_CONFIG, &["addons"]))?
        else {
            // `addons` is null, or has no konnectorAgent.
            return Ok(None);
        };
        let agent: KonnectorAgentJson = if is_null(agent) {
            KonnectorAgentJson::default()
        } else {
            serde_json::from_str(agent.get())
                .map_err(|_| malformed(CLUSTER_CONFIG, &["addons", "konnectorAgent"]))?
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
        let Some(status) = self.status.as_deref() else {
            return false;
        };
        let at = |path: &[&str]| path_of(status, path).ok().flatten();
        let is_true = |path: &[&str]| at(path).is_some_and(|v| v.get() == "true");
        is_true(&["initialization", "controlPlaneInitialized"])
            || is_true(&["controlPlaneReady"])
            || at(&["conditions"]).is_some_and(control_plane_initialized_condition)
            || at(&["v1beta2", "conditions"]).is_some_and(control_plane_initialized_condition)
    }
}

/// The first variable called `name`, if any. A `null` value counts as absent.
pub fn variable<'a>(variables: &'a [ClusterVariable], name: &str) -> Option<&'a RawValue> {
    variables
        .iter()
        .find(|v| v.name.as_deref() == Some(name))
        .and_then(|v| v.value.as_deref())
        .filter(|v| !is_null(v))
}

mod decode;
mod scan;
#[cfg(test)]
mod tests;
mod variables;

use decode::*;
use scan::*;
use variables::*;
