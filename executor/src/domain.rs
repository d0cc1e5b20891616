//! The executor's domain: what a request names, what the live Cluster says, and the validated Konnector Agent
//! configuration derived from it. The cores work on these types only; `service.rs` converts the proto to and from
//! them, and `cluster.rs` builds a [`LiveCluster`] from the management cluster. Nothing here depends on the
//! executor's error type, so the domain sits below every other module.

use std::{collections::BTreeMap, fmt};

use k8s_openapi::jiff::Timestamp;
use konnector_proto::capi;

use crate::names::{CLUSTER_NAME_LABEL, ClusterVersion, is_dns1123_label, is_dns1123_subdomain};

/// The chart's limit on `k8sClusterName`, in bytes.
pub const MAX_CLUSTER_NAME_LEN: usize = 40;
/// Prism Central's port when the URL names none.
pub const DEFAULT_PRISM_CENTRAL_PORT: u16 = 9440;
/// The only deployment strategy.
pub const STRATEGY_HELM_ADDON: &str = "HelmAddon";

/// Why a request cannot be served as sent. Messages name fields, never values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The request names no cluster.
    #[error("the request has no cluster")]
    MissingCluster,
    /// A name is empty or not a valid Kubernetes name.
    #[error("cluster.{field} must be a valid Kubernetes {kind}")]
    InvalidName {
        /// `namespace` or `name`.
        field: &'static str,
        /// What it must be.
        kind: &'static str,
    },
}

/// The Cluster's Konnector Agent configuration is unusable. The message names the field, never its value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A Cluster's namespace and name on the management cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterKey {
    /// The Cluster's namespace.
    pub namespace: String,
    /// The Cluster's name.
    pub name: String,
}

impl ClusterKey {
    /// Builds a key. Both parts reach API paths, so both must be valid Kubernetes names: a namespace is a DNS-1123
    /// label, a Cluster name a DNS-1123 subdomain. Anything else (empty, `..`, `/`, `%`) is refused here.
    pub fn new(namespace: &str, name: &str) -> Result<Self, RequestError> {
        if !is_dns1123_label(namespace) {
            return Err(RequestError::InvalidName {
                field: "namespace",
                kind: "namespace name (DNS-1123 label)",
            });
        }
        if !is_dns1123_subdomain(name) {
            return Err(RequestError::InvalidName {
                field: "name",
                kind: "object name (DNS-1123 subdomain)",
            });
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a request says about a Cluster: which one, and optionally the uid the caller saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterRef {
    /// Which Cluster.
    pub key: ClusterKey,
    /// The uid the caller saw; when set, the live Cluster must have the same one.
    pub uid: Option<String>,
    /// The resourceVersion the caller saw (a hook body's): ApplyAgent may use its own copy of the Cluster at this
    /// version when its watch holds the same one (see `hook_cache`). Never a source of values.
    pub resource_version: Option<String>,
}

/// The lifecycle moment an ApplyAgent call serves. It labels logs and traces; it changes nothing that is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Not said (e.g. a person calling with grpcurl).
    Unspecified,
    /// AfterControlPlaneInitialized.
    AfterControlPlaneInitialized,
    /// BeforeClusterUpgrade.
    BeforeClusterUpgrade,
}

/// The Cluster as the management cluster has it now.
#[derive(Clone, Debug)]
pub struct LiveCluster {
    /// Which Cluster.
    pub key: ClusterKey,
    /// `metadata.uid`.
    pub uid: String,
    /// The API version it was read in; the ownerReference and Events use the same.
    pub version: ClusterVersion,
    /// `metadata.deletionTimestamp`, when deletion has been requested.
    pub deletion_timestamp: Option<Timestamp>,
    /// The decoded object.
    pub cluster: capi::Cluster,
}

impl LiveCluster {
    /// Whether deletion has been requested.
    pub fn deleting(&self) -> bool {
        self.deletion_timestamp.is_some() || self.cluster.is_deleting()
    }

    /// `metadata.labels`.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.cluster.labels()
    }

    /// `metadata.annotations`.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.cluster.annotations()
    }

    /// Whether the Cluster carries `cluster.x-k8s.io/cluster-name=<its name>`, which the HelmChartProxy selects on.
    pub fn selectable(&self) -> bool {
        self.cluster
            .labels()
            .get(CLUSTER_NAME_LABEL)
            .is_some_and(|v| *v == self.key.name)
    }
}

/// Prism Central as the agent will reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrismCentral {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port, 9440 unless the URL names one.
    pub port: u16,
    /// Skip TLS verification, as requested.
    pub insecure: bool,
    /// Base64-encoded PEM bundle, possibly empty.
    pub trust_bundle: String,
}

/// One cluster's validated Konnector Agent configuration, derived from the live Cluster only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentRequest {
    /// Which Cluster.
    pub cluster: ClusterKey,
    /// The live Cluster's uid.
    pub uid: String,
    /// The live Cluster's labels.
    pub labels: BTreeMap<String, String>,
    /// Name of the credentials Secret in the Cluster's namespace.
    pub credentials_secret: String,
    /// Whether the agent uploads a kubeconfig to Prism Central.
    pub enable_kubeconfig_upload: bool,
    /// Prism Central.
    pub prism_central: PrismCentral,
    /// `spec.controlPlaneEndpoint`, when the Cluster has one.
    pub control_plane_endpoint: Option<(String, i32)>,
    /// Categories in Cluster order, duplicates included.
    pub categories: Vec<(String, String)>,
}

/// Derives the Konnector Agent configuration from the live Cluster. `Ok(None)` means the addon is not configured
/// for it. Every error names the field that is wrong.
pub fn agent_request(live: &LiveCluster) -> Result<Option<AgentRequest>, ConfigError> {
    let decode = |e: capi::DecodeError| ConfigError(e.to_string());
    let Some(agent) = live.cluster.konnector_agent().map_err(decode)? else {
        return Ok(None);
    };
    if !agent.strategy.is_empty() && agent.strategy != STRATEGY_HELM_ADDON {
        // The strategy is an enum in CAREN's schema, so naming the unsupported value cannot leak anything, and it
        // is what a person needs to fix it.
        let shown: String = agent
            .strategy
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(64)
            .collect();
        return Err(ConfigError(format!(
            "konnectorAgent.strategy {shown:?} is not supported; the supported values are \"HelmAddon\" and empty (which means HelmAddon)"
        )));
    }
    if agent.credentials_secret_name.is_empty() {
        return Err(ConfigError(
            "konnectorAgent.credentials.secretRef.name must be set: name the Secret holding the Prism Central credentials".to_owned(),
        ));
    }
    if !is_dns1123_subdomain(&agent.credentials_secret_name) {
        return Err(ConfigError(
            "konnectorAgent.credentials.secretRef.name is not a valid Secret name".to_owned(),
        ));
    }
    let Some(pc) = live.cluster.prism_central().map_err(decode)? else {
        return Err(ConfigError(
            "the cluster has konnectorAgent configured but no nutanix.prismCentralEndpoint".to_owned(),
        ));
    };
    let (host, port) = parse_prism_central_url(&pc.url)
        .map_err(|why| ConfigError(format!("nutanix.prismCentralEndpoint.url is not usable: {why}")))?;
    let categories = live
        .cluster
        .categories()
        .map_err(decode)?
        .into_iter()
        .map(|c| (c.key, c.value))
        .collect();
    Ok(Some(AgentRequest {
        cluster: live.key.clone(),
        uid: live.uid.clone(),
        labels: live.labels(),
        credentials_secret: agent.credentials_secret_name,
        enable_kubeconfig_upload: agent.enable_kubeconfig_upload.unwrap_or(true),
        prism_central: PrismCentral {
            host,
            port,
            insecure: pc.insecure,
            trust_bundle: pc.additional_trust_bundle,
        },
        control_plane_endpoint: live.cluster.control_plane_endpoint(),
        categories,
    }))
}

/// Parses Prism Central's URL into host and port. The URL must be `https` with a host; the port defaults to
/// 9440; IPv6 hosts lose their brackets. The error never repeats the URL, which could hold user info.
pub fn parse_prism_central_url(url: &str) -> Result<(String, u16), &'static str> {
    if url.is_empty() {
        return Err("it is empty");
    }
    if let Some((_, rest)) = url.split_once("://")
        && (rest.is_empty() || rest.starts_with(['/', '?', '#']))
    {
        return Err("it has no host");
    }
    let uri: http::Uri = url.parse().map_err(|_| "it does not parse as a URL")?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => {}
        Some(_) => return Err("the scheme must be https"),
        None => return Err("it must be an absolute https URL"),
    }
    let authority = uri.authority().ok_or("it has no host")?;
    if authority.as_str().contains('@') {
        return Err("it must not contain user information");
    }
    // `Authority::host()` keeps IPv6 brackets; whatever follows the host is the optional `:port`.
    let bracketed = authority.host();
    let rest = authority.as_str().strip_prefix(bracketed).unwrap_or("");
    let host = bracketed
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(bracketed);
    if host.is_empty() {
        return Err("it has no host");
    }
    let port = match rest.strip_prefix(':') {
        None | Some("") => DEFAULT_PRISM_CENTRAL_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err("its port is not a number between 1 and 65535"),
        },
    };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn live(cluster_config: Value) -> LiveCluster {
        let cluster = capi::Cluster::from_json(json!({
            "metadata": {"name": "c1", "namespace": "ns", "uid": "u"},
            "spec": {"topology": {"variables": [{"name": "clusterConfig", "value": cluster_config}]}}
        }))
        .unwrap();
        LiveCluster {
            key: ClusterKey::new("ns", "c1").unwrap(),
            uid: "u".into(),
            version: ClusterVersion::V1Beta2,
            deletion_timestamp: None,
            cluster,
        }
    }

    fn configured() -> Value {
        json!({
            "addons": {"konnectorAgent": {"credentials": {"secretRef": {"name": "creds"}}}},
            "nutanix": {"prismCentralEndpoint": {"url": "https://pc.example.com"}}
        })
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_prism_central_url("https://pc.example.com").unwrap(),
            ("pc.example.com".into(), 9440)
        );
        assert_eq!(
            parse_prism_central_url("https://pc.example.com:1234/api?x=1").unwrap(),
            ("pc.example.com".into(), 1234)
        );
        assert_eq!(
            parse_prism_central_url("HTTPS://10.0.0.1/").unwrap(),
            ("10.0.0.1".into(), 9440)
        );
        assert_eq!(
            parse_prism_central_url("https://[fd00::1]:9441").unwrap(),
            ("fd00::1".into(), 9441)
        );
        assert_eq!(
            parse_prism_central_url("https://[fd00::1]").unwrap(),
            ("fd00::1".into(), 9440)
        );
        for bad in [
            "",
            "http://pc.example.com",
            "pc.example.com",
            "invalid-url",
            "https://",
            "https://:9440",
            "https://pc:0",
            "https://pc:99999",
            "https://user:pw@pc.example.com",
        ] {
            assert!(
                parse_prism_central_url(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        let err = parse_prism_central_url("https://user:hunter2@pc").unwrap_err();
        assert!(!err.contains("hunter2"));
    }

    #[test]
    fn keys_are_kubernetes_names() {
        assert!(ClusterKey::new("ns", "c1").is_ok());
        assert!(ClusterKey::new("ns", "c1.a-b").is_ok());
        for (ns, name) in [
            ("", "c"),
            ("ns", ""),
            ("NS", "c"),
            ("ns", "../secrets/x"),
            ("ns", "a/b"),
            ("a.b", "c"),
        ] {
            assert!(ClusterKey::new(ns, name).is_err(), "{ns}/{name}");
        }
    }

    #[test]
    fn unset_addon_is_not_configured() {
        assert_eq!(agent_request(&live(json!({}))).unwrap(), None);
    }

    #[test]
    fn defaults_and_validation() {
        let r = agent_request(&live(configured())).unwrap().unwrap();
        assert!(r.enable_kubeconfig_upload);
        assert_eq!(r.prism_central.port, 9440);
        assert_eq!(r.uid, "u");

        let mut c = configured();
        c["addons"]["konnectorAgent"]["strategy"] = json!("ClusterResourceSet");
        let e = agent_request(&live(c)).unwrap_err().to_string();
        assert!(e.contains("HelmAddon") && e.contains("ClusterResourceSet"), "{e}");

        let mut c = configured();
        c["addons"]["konnectorAgent"]["strategy"] = json!("HelmAddon");
        assert!(agent_request(&live(c)).is_ok());

        let mut c = configured();
        c["addons"]["konnectorAgent"]["credentials"]["secretRef"]["name"] = json!("");
        assert!(agent_request(&live(c)).is_err());

        let mut c = configured();
        c["addons"]["konnectorAgent"]["credentials"]["secretRef"]["name"] = json!("../kube-system/x");
        let e = agent_request(&live(c)).unwrap_err().to_string();
        assert!(e.contains("secretRef.name") && !e.contains("kube-system"), "{e}");

        let mut c = configured();
        c.as_object_mut().unwrap().remove("nutanix");
        let e = agent_request(&live(c)).unwrap_err().to_string();
        assert!(e.contains("prismCentralEndpoint"), "{e}");

        let mut c = configured();
        c["nutanix"]["prismCentralEndpoint"]["url"] = json!("https://attacker.example:9440");
        let r = agent_request(&live(c)).unwrap().unwrap();
        assert_eq!(
            r.prism_central.host, "attacker.example",
            "the live Cluster is the source, whatever it says"
        );
    }
}
