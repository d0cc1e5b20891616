//! Serde models of the CAPI Runtime SDK JSON konnector reads and writes.
//!
//! The embedded `cluster` arrives in three shapes (v1beta1 with full status from CAPI ≤ v1.10; v1beta1 without
//! apiVersion/kind and with a zeroed status from v1.11–v1.12; v1beta2 from v1.13). Only fields that exist, with the
//! same meaning, in all three are modelled; everything else, including `status`, is ignored. Every field is
//! optional and no struct denies unknown fields, so a new CAPI field never breaks decoding.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::{HOOKS_API_VERSION, Hook};

/// The fields of any lifecycle hook request that konnector reads. `settings`, the upgrade plan arrays and
/// `from/toKubernetesVersion` are accepted and ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookRequest {
    /// `hooks.runtime.cluster.x-k8s.io/v1alpha1` when present.
    pub api_version: Option<String>,
    /// `<Hook>Request` when present.
    pub kind: Option<String>,
    /// ExtensionConfig settings; accepted, unused.
    pub settings: Option<BTreeMap<String, String>>,
    /// The Cluster the hook is about.
    pub cluster: Option<HookCluster>,
}

/// The embedded Cluster, in any of the three shapes.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookCluster {
    /// `cluster.x-k8s.io/v1beta1` or `/v1beta2`; absent on CAPI v1.11–v1.12.
    pub api_version: Option<String>,
    /// `Cluster`; absent on CAPI v1.11–v1.12.
    pub kind: Option<String>,
    /// Object metadata.
    pub metadata: Option<ObjectMeta>,
    /// The Cluster spec.
    pub spec: Option<ClusterSpec>,
}

/// The metadata fields konnector reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// The Cluster's name.
    pub name: Option<String>,
    /// The Cluster's namespace.
    pub namespace: Option<String>,
    /// The Cluster's UID.
    pub uid: Option<String>,
    /// Labels.
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations.
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The spec fields konnector reads. They have the same paths in v1beta1 and v1beta2.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// `spec.controlPlaneEndpoint`.
    pub control_plane_endpoint: Option<ApiEndpoint>,
    /// `spec.topology`.
    pub topology: Option<Topology>,
}

/// `spec.controlPlaneEndpoint`.
#[derive(Debug, Default, Deserialize)]
pub struct ApiEndpoint {
    /// Host name or IP; empty when not yet known.
    pub host: Option<String>,
    /// Port; 0 when not yet known.
    pub port: Option<i32>,
}

/// `spec.topology`, reduced to the variables.
#[derive(Debug, Default, Deserialize)]
pub struct Topology {
    /// Cluster-level variables.
    pub variables: Option<Vec<ClusterVariable>>,
    /// Worker topology.
    pub workers: Option<Workers>,
}

/// One `{name, value}` topology variable. v1beta1's `definitionFrom` is ignored.
#[derive(Debug, Default, Deserialize)]
pub struct ClusterVariable {
    /// Variable name.
    pub name: Option<String>,
    /// Variable value, any JSON.
    pub value: Option<Value>,
}

/// `spec.topology.workers`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workers {
    /// MachineDeployment topologies, in order.
    pub machine_deployments: Option<Vec<MachineDeploymentTopology>>,
}

/// One `spec.topology.workers.machineDeployments[]` entry.
#[derive(Debug, Default, Deserialize)]
pub struct MachineDeploymentTopology {
    /// The MachineDeployment topology name.
    pub name: Option<String>,
    /// Per-MachineDeployment variables.
    pub variables: Option<MachineDeploymentVariables>,
}

/// `machineDeployments[].variables`.
#[derive(Debug, Default, Deserialize)]
pub struct MachineDeploymentVariables {
    /// Variables that override the cluster-level ones for this MachineDeployment.
    pub overrides: Option<Vec<ClusterVariable>>,
}

/// A hook answer's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// The hook passed (possibly asking to be called again via `retryAfterSeconds`).
    Success,
    /// The hook failed; CAPI never ignores this.
    Failure,
}

/// The answer to any lifecycle hook. `retryAfterSeconds` is present exactly when the hook's response type has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookResponse {
    /// Always `hooks.runtime.cluster.x-k8s.io/v1alpha1`.
    pub api_version: String,
    /// `<Hook>Response`.
    pub kind: String,
    /// Success or Failure.
    pub status: Status,
    /// Deterministic, secret-free explanation; omitted when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Blocking hooks only: 0 = go ahead, > 0 = ask again in about that many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<i32>,
}

impl HookResponse {
    /// A Success that does not block.
    pub fn success(hook: Hook, message: impl Into<String>) -> Self {
        Self::new(hook, Status::Success, message.into(), 0)
    }

    /// A Success that asks CAPI to call again after `retry_after_seconds` (clamped to ≥ 1).
    pub fn wait(hook: Hook, message: impl Into<String>, retry_after_seconds: u32) -> Self {
        let secs = i32::try_from(retry_after_seconds.max(1)).unwrap_or(i32::MAX);
        Self::new(hook, Status::Success, message.into(), secs)
    }

    /// A Failure.
    pub fn failure(hook: Hook, message: impl Into<String>) -> Self {
        Self::new(hook, Status::Failure, message.into(), 0)
    }

    fn new(hook: Hook, status: Status, message: String, retry: i32) -> Self {
        Self {
            api_version: HOOKS_API_VERSION.to_owned(),
            kind: hook.response_kind().to_owned(),
            status,
            message,
            retry_after_seconds: hook.is_blocking().then_some(retry),
        }
    }
}

/// `failurePolicy` of a handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum FailurePolicy {
    /// A transport error or non-200 fails the reconcile.
    #[value(name = "Fail", alias = "fail")]
    Fail,
    /// A transport error or non-200 counts as a non-blocking Success. A `Failure` answer is never ignored.
    #[value(name = "Ignore", alias = "ignore")]
    Ignore,
}

/// `DiscoveryResponse`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryResponse {
    /// Always `hooks.runtime.cluster.x-k8s.io/v1alpha1`.
    pub api_version: String,
    /// `DiscoveryResponse`.
    pub kind: String,
    /// Always Success.
    pub status: Status,
    /// One entry per advertised handler.
    pub handlers: Vec<DiscoveredHandler>,
}

/// One `handlers[]` entry of Discovery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveredHandler {
    /// DNS-1123 label.
    pub name: String,
    /// The hook this handler serves.
    pub request_hook: RequestHook,
    /// 1–30, always explicit.
    pub timeout_seconds: i32,
    /// Always explicit.
    pub failure_policy: FailurePolicy,
}

/// `handlers[].requestHook`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestHook {
    /// `hooks.runtime.cluster.x-k8s.io/v1alpha1`.
    pub api_version: String,
    /// The hook name, e.g. `BeforeClusterDelete`.
    pub hook: String,
}
