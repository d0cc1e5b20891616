//! The executor's domain: a validated picture of one cluster's Konnector Agent configuration, converted from the
//! proto `ClusterContext` by [`agent_request`]. Everything downstream works on these types, never on the proto.

use std::fmt;

use konnector_proto::v1::ClusterContext;

use crate::error::Error;

/// Field manager for every server-side apply the executor makes, on both clusters.
pub const FIELD_MANAGER: &str = "konnector";
/// Agent name passed to the chart (`agent.name`).
pub const AGENT_NAME: &str = "konnector-agent";
/// Helm release name of the agent.
pub const RELEASE_NAME: &str = "konnector-agent";
/// Namespace of the release, the copied Secret and the PSA label, on the workload cluster.
pub const RELEASE_NAMESPACE: &str = "ntnx-system";
/// Name of the copied credentials Secret on the workload cluster.
pub const REMOTE_SECRET_NAME: &str = "konnector-agent";
/// Name of the trust-bundle ConfigMap the chart creates when Prism Central is verified with a bundle.
pub const TRUST_BUNDLE_CONFIGMAP_NAME: &str = "ntnx-additional-trust-bundle-konnector-agent";
/// The chart's limit on `k8sClusterName`, in bytes.
pub const MAX_CLUSTER_NAME_LEN: usize = 40;
/// Prism Central's port when the URL names none.
pub const DEFAULT_PRISM_CENTRAL_PORT: u16 = 9440;
/// The only deployment strategy.
pub const STRATEGY_HELM_ADDON: &str = "HelmAddon";
/// CAPI's cluster-name label, on the Cluster and on each HelmReleaseProxy.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// CAAPH's label naming the HelmChartProxy a HelmReleaseProxy belongs to.
pub const HCP_NAME_LABEL: &str = "helmreleaseproxy.addons.cluster.x-k8s.io/helmchartproxy-name";
/// Pod Security admission label the agent's namespace needs.
pub const PSA_ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// A Cluster's namespace and name on the management cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterKey {
    /// The Cluster's namespace.
    pub namespace: String,
    /// The Cluster's name.
    pub name: String,
}

impl ClusterKey {
    /// Builds a key, rejecting an empty namespace or name.
    pub fn new(namespace: &str, name: &str) -> Result<Self, Error> {
        if namespace.is_empty() || name.is_empty() {
            return Err(Error::InvalidRequest(
                "cluster.namespace and cluster.name must both be set".to_owned(),
            ));
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

/// One cluster's validated Konnector Agent configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentRequest {
    /// Which Cluster.
    pub cluster: ClusterKey,
    /// The Cluster's uid as the request saw it (the live Cluster's uid wins when they differ).
    pub uid: String,
    /// The Cluster's labels as the request saw them.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Name of the credentials Secret in the Cluster's namespace.
    pub credentials_secret: String,
    /// Whether the agent uploads a kubeconfig to Prism Central.
    pub enable_kubeconfig_upload: bool,
    /// Prism Central.
    pub prism_central: PrismCentral,
    /// `spec.controlPlaneEndpoint`, when the Cluster has one.
    pub control_plane_endpoint: Option<(String, i32)>,
    /// Categories in request order, duplicates included.
    pub categories: Vec<(String, String)>,
}

/// Converts a proto `ClusterContext` into an [`AgentRequest`]. `Ok(None)` means the addon is not configured for
/// the cluster. Every configuration error is an [`Error::InvalidConfig`] whose message names the field.
pub fn agent_request(ctx: &ClusterContext) -> Result<Option<AgentRequest>, Error> {
    let cluster = ClusterKey::new(&ctx.namespace, &ctx.name)?;
    let Some(agent) = &ctx.konnector_agent else {
        return Ok(None);
    };
    if !agent.strategy.is_empty() && agent.strategy != STRATEGY_HELM_ADDON {
        return Err(Error::InvalidConfig(format!(
            "konnectorAgent.strategy {:?} is not supported; the supported values are \"HelmAddon\" and empty (which means HelmAddon)",
            agent.strategy
        )));
    }
    if agent.credentials_secret_name.is_empty() {
        return Err(Error::InvalidConfig(
            "konnectorAgent.credentials.secretRef.name must be set: name the Secret holding the Prism Central credentials".to_owned(),
        ));
    }
    let Some(pc) = &ctx.prism_central else {
        return Err(Error::InvalidConfig(
            "the cluster has konnectorAgent configured but no nutanix.prismCentralEndpoint".to_owned(),
        ));
    };
    let (host, port) = parse_prism_central_url(&pc.url).map_err(|why| {
        Error::InvalidConfig(format!("nutanix.prismCentralEndpoint.url is not usable: {why}"))
    })?;
    let control_plane_endpoint = ctx
        .control_plane_endpoint
        .as_ref()
        .map(|e| (e.host.clone(), e.port));
    Ok(Some(AgentRequest {
        cluster,
        uid: ctx.uid.clone(),
        labels: ctx.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        credentials_secret: agent.credentials_secret_name.clone(),
        enable_kubeconfig_upload: agent.enable_kubeconfig_upload.unwrap_or(true),
        prism_central: PrismCentral {
            host,
            port,
            insecure: pc.insecure,
            trust_bundle: pc.additional_trust_bundle.clone(),
        },
        control_plane_endpoint,
        categories: ctx
            .categories
            .iter()
            .map(|c| (c.key.clone(), c.value.clone()))
            .collect(),
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
    use konnector_proto::v1::{KonnectorAgentConfig, PrismCentralEndpoint};

    use super::*;

    fn ctx() -> ClusterContext {
        ClusterContext {
            namespace: "ns".into(),
            name: "c1".into(),
            uid: "u".into(),
            konnector_agent: Some(KonnectorAgentConfig {
                strategy: String::new(),
                credentials_secret_name: "creds".into(),
                enable_kubeconfig_upload: None,
            }),
            prism_central: Some(PrismCentralEndpoint {
                url: "https://pc.example.com".into(),
                insecure: false,
                additional_trust_bundle: String::new(),
            }),
            ..Default::default()
        }
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
    fn unset_addon_is_not_configured() {
        let mut c = ctx();
        c.konnector_agent = None;
        assert_eq!(agent_request(&c).unwrap(), None);
    }

    #[test]
    fn defaults_and_validation() {
        let r = agent_request(&ctx()).unwrap().unwrap();
        assert!(r.enable_kubeconfig_upload);
        assert_eq!(r.prism_central.port, 9440);

        let mut c = ctx();
        c.konnector_agent.as_mut().unwrap().strategy = "ClusterResourceSet".into();
        let e = agent_request(&c).unwrap_err().to_string();
        assert!(e.contains("HelmAddon") && e.contains("ClusterResourceSet"), "{e}");

        let mut c = ctx();
        c.konnector_agent.as_mut().unwrap().strategy = "HelmAddon".into();
        assert!(agent_request(&c).is_ok());

        let mut c = ctx();
        c.konnector_agent.as_mut().unwrap().credentials_secret_name = String::new();
        assert!(matches!(agent_request(&c), Err(Error::InvalidConfig(_))));

        let mut c = ctx();
        c.prism_central = None;
        let e = agent_request(&c).unwrap_err().to_string();
        assert!(e.contains("prismCentralEndpoint"), "{e}");

        let mut c = ctx();
        c.name = String::new();
        assert!(matches!(agent_request(&c), Err(Error::InvalidRequest(_))));
    }
}
