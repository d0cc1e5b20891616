//! The crossing from CAPI hook JSON to the executor's `ClusterContext`.
//!
//! Each piece is a named conversion with its own error, so a Failure message says which field was wrong without
//! echoing its value (values may be anything a user typed, and konnector never repeats them).

use konnector_proto::v1::{Category, ClusterContext, Endpoint, KonnectorAgentConfig, PrismCentralEndpoint};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::capi::{ApiEndpoint, ClusterVariable, HookCluster};

/// The topology variable konnector reads.
pub const CLUSTER_CONFIG: &str = "clusterConfig";
/// CAREN's per-worker variable, read only for categories.
pub const WORKER_CONFIG: &str = "workerConfig";

/// Why a hook's Cluster could not be turned into a `ClusterContext`. Messages are deterministic and name fields,
/// never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// `cluster.metadata.name` or `.namespace` is missing or empty.
    #[error("the request's cluster has no metadata.{0}")]
    MissingMetadata(&'static str),
    /// A variable exists but a part konnector reads does not have the documented shape.
    #[error("variable {variable}: {path} does not have the expected shape")]
    Malformed {
        /// The variable name, e.g. `clusterConfig`.
        variable: String,
        /// The dotted path inside the variable value.
        path: String,
    },
}

/// Turns the hook's Cluster into the executor's view of it.
///
/// When `clusterConfig.addons.konnectorAgent` is absent the addon is not configured for this Cluster: the other
/// optional parts are still read, but a malformed one is then dropped rather than failing the hook, because a
/// Cluster that does not use konnector must never be blocked by it.
pub fn cluster_context(cluster: &HookCluster) -> Result<ClusterContext, TranslateError> {
    let meta = cluster.metadata.as_ref();
    let name = non_empty(meta.and_then(|m| m.name.clone())).ok_or(TranslateError::MissingMetadata("name"))?;
    let namespace = non_empty(meta.and_then(|m| m.namespace.clone()))
        .ok_or(TranslateError::MissingMetadata("namespace"))?;
    let spec = cluster.spec.as_ref();
    let topology = spec.and_then(|s| s.topology.as_ref());
    let variables: &[ClusterVariable] = topology.and_then(|t| t.variables.as_deref()).unwrap_or_default();
    let cluster_config = variable(variables, CLUSTER_CONFIG);

    let konnector_agent = konnector_agent(cluster_config)?;
    let configured = konnector_agent.is_some();
    let prism_central = tolerate(prism_central(cluster_config), configured)?;
    let categories = tolerate(categories(cluster), configured)?;

    Ok(ClusterContext {
        namespace,
        name,
        uid: meta.and_then(|m| m.uid.clone()).unwrap_or_default(),
        labels: meta
            .and_then(|m| m.labels.clone())
            .unwrap_or_default()
            .into_iter()
            .collect(),
        annotations: meta
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default()
            .into_iter()
            .collect(),
        control_plane_endpoint: spec
            .and_then(|s| s.control_plane_endpoint.as_ref())
            .and_then(endpoint),
        konnector_agent,
        prism_central,
        categories,
    })
}

/// Whether the Cluster's `clusterConfig.addons.konnectorAgent` is present, i.e. the Cluster uses the addon. An error
/// means the addon configuration is malformed (the hook then fails, naming the field).
pub fn uses_addon(cluster: &HookCluster) -> Result<bool, TranslateError> {
    let variables: &[ClusterVariable] = cluster
        .spec
        .as_ref()
        .and_then(|s| s.topology.as_ref())
        .and_then(|t| t.variables.as_deref())
        .unwrap_or_default();
    Ok(konnector_agent(variable(variables, CLUSTER_CONFIG))?.is_some())
}

/// Passes errors through when the addon is configured; otherwise logs them and uses the empty value.
fn tolerate<T: Default>(result: Result<T, TranslateError>, configured: bool) -> Result<T, TranslateError> {
    match result {
        Err(error) if !configured => {
            tracing::debug!(%error, "ignoring malformed config on a Cluster without the konnector addon");
            Ok(T::default())
        }
        other => other,
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// `spec.controlPlaneEndpoint` → `Endpoint`; unset when both host and port are empty/zero (CAPI's "not known yet").
pub fn endpoint(e: &ApiEndpoint) -> Option<Endpoint> {
    let host = e.host.clone().unwrap_or_default();
    let port = e.port.unwrap_or_default();
    (!host.is_empty() || port != 0).then_some(Endpoint { host, port })
}

/// The first variable called `name`, if any. A `null` value counts as absent.
pub fn variable<'a>(variables: &'a [ClusterVariable], name: &str) -> Option<&'a Value> {
    variables
        .iter()
        .find(|v| v.name.as_deref() == Some(name))
        .and_then(|v| v.value.as_ref())
        .filter(|v| !v.is_null())
}

/// Looks up `path` inside a variable value. `Ok(None)` when any step is absent or null; an error when a step
/// exists but is not an object, because then the variable does not have the shape konnector reads.
fn lookup<'a>(variable: &str, value: &'a Value, path: &[&str]) -> Result<Option<&'a Value>, TranslateError> {
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

fn malformed(variable: &str, path: &[&str]) -> TranslateError {
    TranslateError::Malformed {
        variable: variable.to_owned(),
        path: if path.is_empty() {
            "the value".to_owned()
        } else {
            path.join(".")
        },
    }
}

/// Decodes the value at `path`, if present and not null.
fn decode_at<T: DeserializeOwned>(
    variable: &str,
    value: &Value,
    path: &[&str],
) -> Result<Option<T>, TranslateError> {
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

/// `clusterConfig.addons.konnectorAgent` → `KonnectorAgentConfig`. Absent → `None` (addon not configured);
/// present as `{}` or `null` → `Some` with everything empty, which the executor reports as missing credentials.
pub fn konnector_agent(
    cluster_config: Option<&Value>,
) -> Result<Option<KonnectorAgentConfig>, TranslateError> {
    let Some(cc) = cluster_config else { return Ok(None) };
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
    Ok(Some(KonnectorAgentConfig {
        strategy: agent.strategy.unwrap_or_default(),
        credentials_secret_name: agent
            .credentials
            .and_then(|c| c.secret_ref)
            .and_then(|r| r.name)
            .unwrap_or_default(),
        enable_kubeconfig_upload: agent.enable_kubeconfig_upload,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrismCentralJson {
    url: Option<String>,
    insecure: Option<bool>,
    additional_trust_bundle: Option<String>,
}

/// `clusterConfig.nutanix.prismCentralEndpoint` → `PrismCentralEndpoint`; `None` when there is no Nutanix config.
pub fn prism_central(cluster_config: Option<&Value>) -> Result<Option<PrismCentralEndpoint>, TranslateError> {
    let Some(cc) = cluster_config else { return Ok(None) };
    let pc: Option<PrismCentralJson> = decode_at(CLUSTER_CONFIG, cc, &["nutanix", "prismCentralEndpoint"])?;
    Ok(pc.map(|pc| PrismCentralEndpoint {
        url: pc.url.unwrap_or_default(),
        insecure: pc.insecure.unwrap_or_default(),
        additional_trust_bundle: pc.additional_trust_bundle.unwrap_or_default(),
    }))
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

/// Every Nutanix category konnector maps, in this order, duplicates kept (the executor de-duplicates):
///
/// 1. cluster level: `clusterConfig.controlPlane.nutanix.machineDetails.additionalCategories`,
///    `clusterConfig.workerConfig.nutanix.machineDetails.additionalCategories`, then the `workerConfig` variable's
///    `nutanix.machineDetails.additionalCategories`;
/// 2. for each `spec.topology.workers.machineDeployments[]` in order, the same three lookups on its
///    `variables.overrides` (the `clusterConfig` override's two paths, then the `workerConfig` override's).
///
/// Entries with an empty key or value are dropped, as the agent cannot use them.
pub fn categories(cluster: &HookCluster) -> Result<Vec<Category>, TranslateError> {
    let topology = cluster.spec.as_ref().and_then(|s| s.topology.as_ref());
    let mut out = Vec::new();
    let cluster_vars: &[ClusterVariable] = topology.and_then(|t| t.variables.as_deref()).unwrap_or_default();
    collect_categories(cluster_vars, &mut out)?;
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

fn collect_categories(vars: &[ClusterVariable], out: &mut Vec<Category>) -> Result<(), TranslateError> {
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
