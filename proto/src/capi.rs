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

fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

/// The value at `key` of a raw JSON object, borrowed from it: `Ok(None)` when the object is `null` or has no such
/// key, `Err` when it is not an object. Other keys are skipped without being parsed. A repeated key counts as its
/// last occurrence, as in any JSON map.
fn field<'a>(raw: &'a RawValue, key: &str) -> Result<Option<&'a RawValue>, ()> {
    struct Field<'k>(&'k str);

    impl<'de> Visitor<'de> for Field<'_> {
        type Value = Option<&'de RawValue>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object or null")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(wanted) = map.next_key_seed(KeyIs(self.0))? {
                if wanted {
                    found = Some(map.next_value::<&'de RawValue>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }

    let mut de = serde_json::Deserializer::from_str(raw.get());
    de.deserialize_any(Field(key)).map_err(|_| ())
}

/// A map key, compared with the one wanted without being kept.
struct KeyIs<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// Follows `path` through raw objects: `Ok(None)` when a step is absent or null, `Err(i)` when step `i` is not
/// an object.
fn path_of<'a>(raw: &'a RawValue, path: &[&str]) -> Result<Option<&'a RawValue>, usize> {
    let mut cur = raw;
    for (i, key) in path.iter().enumerate() {
        match field(cur, key) {
            Ok(Some(next)) => cur = next,
            Ok(None) => return Ok(None),
            Err(()) => return Err(i),
        }
    }
    Ok(Some(cur))
}

/// Looks up `path` inside a variable value. `Ok(None)` when a step is absent or null; an error when a step exists
/// but is not an object, because then the variable does not have the shape konnector reads.
fn lookup<'a>(
    variable: &str,
    value: &'a RawValue,
    path: &[&str],
) -> Result<Option<&'a RawValue>, DecodeError> {
    path_of(value, path).map_err(|i| malformed(variable, &path[..i]))
}

/// Whether a raw `conditions` list has `ControlPlaneInitialized=True`, scanning it one condition at a time (and
/// only their `type` and `status`). Anything but a list of objects has none.
fn control_plane_initialized_condition(conditions: &RawValue) -> bool {
    #[derive(Deserialize)]
    struct Condition {
        #[serde(rename = "type")]
        kind: Option<String>,
        status: Option<String>,
    }

    struct Any;

    impl<'de> Visitor<'de> for Any {
        type Value = bool;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of conditions")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            let mut found = false;
            while let Some(c) = seq.next_element::<Condition>()? {
                found |= c.kind.as_deref() == Some("ControlPlaneInitialized")
                    && c.status.as_deref() == Some("True");
            }
            Ok(found)
        }
    }

    let mut de = serde_json::Deserializer::from_str(conditions.get());
    de.deserialize_any(Any).unwrap_or(false)
}

/// A map of strings kept raw: checked while decoding (so a Cluster whose labels are not strings is not a Cluster,
/// as before), without keeping a single entry.
fn string_map_raw<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Raw>, D::Error> {
    struct Strings;

    impl<'de> Visitor<'de> for Strings {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of strings")
        }

        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Ok(())
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while map.next_key_seed(AnyStr)?.is_some() {
                map.next_value_seed(AnyStr)?;
            }
            Ok(())
        }
    }

    /// A string, looked at and not kept.
    struct AnyStr;

    impl<'de> DeserializeSeed<'de> for AnyStr {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
            deserializer.deserialize_str(self)
        }
    }

    impl Visitor<'_> for AnyStr {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
    }

    let raw = Option::<Raw>::deserialize(deserializer)?;
    if let Some(raw) = &raw {
        let mut de = serde_json::Deserializer::from_str(raw.get());
        de.deserialize_any(Strings)
            .map_err(|_| de::Error::custom("not a map of strings"))?;
    }
    Ok(raw)
}

/// A raw map of strings (labels, annotations); empty when absent or of another shape.
fn string_map(raw: Option<&RawValue>) -> BTreeMap<String, String> {
    raw.and_then(|raw| serde_json::from_str::<Option<BTreeMap<String, String>>>(raw.get()).ok())
        .flatten()
        .unwrap_or_default()
}

impl<'de> Deserialize<'de> for ClusterVariable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(VariableVisitor)
    }
}

struct VariableVisitor;

impl<'de> Visitor<'de> for VariableVisitor {
    type Value = ClusterVariable;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a {name, value} variable")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ClusterVariable, A::Error> {
        let mut name: Option<String> = None;
        let mut value: Option<Raw> = None;
        while let Some(key) = map.next_key::<VariableKey>()? {
            match key {
                VariableKey::Name => name = map.next_value()?,
                // The name came first and konnector does not read this variable: skip the value unparsed.
                VariableKey::Value if name.as_deref().is_some_and(|n| !READ_VARIABLES.contains(&n)) => {
                    map.next_value::<IgnoredAny>()?;
                    value = None;
                }
                VariableKey::Value => value = map.next_value()?,
                VariableKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(ClusterVariable { name, value })
    }
}

enum VariableKey {
    Name,
    Value,
    Other,
}

impl<'de> Deserialize<'de> for VariableKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;

        impl Visitor<'_> for V {
            type Value = VariableKey;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_str<E: de::Error>(self, key: &str) -> Result<VariableKey, E> {
                Ok(match key {
                    "name" => VariableKey::Name,
                    "value" => VariableKey::Value,
                    _ => VariableKey::Other,
                })
            }
        }

        deserializer.deserialize_str(V)
    }
}

/// A list of `T`, keeping only the elements `keep` accepts as they are decoded one by one (`null` is `None`).
struct Kept<T> {
    keep: fn(&T) -> bool,
    _t: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Kept<T> {
    type Value = Option<Vec<T>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut kept = Vec::new();
        while let Some(item) = seq.next_element::<T>()? {
            if (self.keep)(&item) {
                kept.push(item);
            }
        }
        Ok(Some(kept))
    }
}

fn kept<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
    keep: fn(&T) -> bool,
) -> Result<Option<Vec<T>>, D::Error> {
    deserializer.deserialize_option(Kept {
        keep,
        _t: PhantomData,
    })
}

fn read_variables<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<ClusterVariable>>, D::Error> {
    kept(deserializer, |v: &ClusterVariable| {
        v.name.as_deref().is_some_and(|n| READ_VARIABLES.contains(&n))
    })
}

fn read_machine_deployments<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<MachineDeploymentTopology>>, D::Error> {
    kept(deserializer, |md: &MachineDeploymentTopology| {
        md.variables
            .as_ref()
            .and_then(|v| v.overrides.as_ref())
            .is_some_and(|o| !o.is_empty())
    })
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
    value: &RawValue,
    path: &[&str],
) -> Result<Option<T>, DecodeError> {
    match lookup(variable, value, path)? {
        None => Ok(None),
        Some(v) if is_null(v) => Ok(None),
        Some(v) => serde_json::from_str(v.get())
            .map(Some)
            .map_err(|_| malformed(variable, path)),
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
