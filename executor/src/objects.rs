//! The Kubernetes objects the executor reads and writes, built from domain types by small, pure functions.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::{
    CLUSTER_NAME_LABEL, ClusterKey, PSA_ENFORCE_LABEL, RELEASE_NAME, RELEASE_NAMESPACE, REMOTE_SECRET_NAME,
};
use crate::values::truncate_on_char_boundary;

/// Group/version of CAAPH's kinds.
pub const CAAPH_API_VERSION: &str = "addons.cluster.x-k8s.io/v1alpha1";
/// Prefix of the HelmChartProxy's name.
pub const HCP_NAME_PREFIX: &str = "konnector-agent-";
/// Secret holding the CA of the in-cluster chart mirror, used when the repository URL names it.
pub const HELM_REPOSITORY_TLS_SECRET: &str = "helm-repository-tls";
/// Key in the helm-addons ConfigMap holding the Konnector Agent's chart coordinates.
pub const HELM_ADDONS_KEY: &str = "konnector-agent";
/// Key in the values-template ConfigMap holding the template.
pub const VALUES_TEMPLATE_KEY: &str = "values.yaml";
/// Value of the placeholder that replaces every Secret value in a plan.
pub const REDACTED: &str = "<redacted>";
/// Longest Kubernetes object name.
const MAX_NAME_LEN: usize = 253;

/// Where the chart comes from.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ChartCoordinates {
    /// Chart name.
    #[serde(rename = "ChartName")]
    pub chart_name: String,
    /// Chart version.
    #[serde(rename = "ChartVersion")]
    pub chart_version: String,
    /// Repository URL (`https://` or `oci://`).
    #[serde(rename = "RepositoryURL")]
    pub repository_url: String,
}

/// Parses the YAML stored under `konnector-agent` in the helm-addons ConfigMap. The error says what is wrong
/// without repeating the content.
pub fn parse_chart_coordinates(yaml: &str) -> Result<ChartCoordinates, String> {
    let c: ChartCoordinates = serde_yaml_ng::from_str(yaml).map_err(|_| {
        format!(
            "key {HELM_ADDONS_KEY:?} is not YAML with string fields ChartName, ChartVersion and RepositoryURL"
        )
    })?;
    for (field, value) in [
        ("ChartName", &c.chart_name),
        ("ChartVersion", &c.chart_version),
        ("RepositoryURL", &c.repository_url),
    ] {
        if value.trim().is_empty() {
            return Err(format!("key {HELM_ADDONS_KEY:?} has an empty {field}"));
        }
    }
    Ok(c)
}

/// The HelmChartProxy's name for a cluster: `konnector-agent-<cluster>`, deterministic. A name that would pass
/// 253 bytes is cut and suffixed with a hash of the full cluster name, so that distinct clusters keep distinct
/// names.
pub fn helm_chart_proxy_name(cluster: &str) -> String {
    let full = format!("{HCP_NAME_PREFIX}{cluster}");
    if full.len() <= MAX_NAME_LEN {
        return full;
    }
    let suffix = format!("-{:016x}", fnv1a64(cluster.as_bytes()));
    let head = truncate_on_char_boundary(&full, MAX_NAME_LEN - suffix.len());
    format!("{}{suffix}", head.trim_end_matches(['-', '.']))
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Namespace `ntnx-system` with the Pod Security label the agent needs, in one object (CAREN applies the
/// namespace twice, with and without the label).
pub fn namespace_object() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": RELEASE_NAMESPACE,
            "labels": {PSA_ENFORCE_LABEL: "privileged"},
        },
    })
}

/// The credentials Secret as copied to the workload cluster: the source's type and data, nothing else (no
/// labels, annotations or owner references travel).
pub fn remote_secret(source: &Secret) -> Secret {
    Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(REMOTE_SECRET_NAME.to_owned()),
            namespace: Some(RELEASE_NAMESPACE.to_owned()),
            ..Default::default()
        },
        type_: source.type_.clone(),
        data: Some(source.data.clone().unwrap_or_default()),
        ..Default::default()
    }
}

/// The remote Secret as JSON with every value replaced by [`REDACTED`]: the shape a plan shows.
pub fn redacted_secret(secret: &Secret) -> Value {
    let data: BTreeMap<String, &str> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, _)| (k.clone(), REDACTED))
        .collect();
    let mut obj = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret.metadata.name, "namespace": secret.metadata.namespace},
        "data": data,
    });
    if let Some(t) = &secret.type_ {
        obj["type"] = json!(t);
    }
    obj
}

/// The Secret object to apply, as JSON (with `apiVersion`/`kind`, which server-side apply needs).
pub fn secret_apply_body(secret: &Secret) -> Value {
    let mut obj = serde_json::to_value(secret).unwrap_or_default();
    obj["apiVersion"] = json!("v1");
    obj["kind"] = json!("Secret");
    obj
}

/// Which kind of Prism Central credentials a Secret holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    /// `username` and `password`.
    Basic,
    /// `apiKey`.
    ApiKey,
}

/// Checks that the Secret holds `username`+`password` or `apiKey`, not both kinds and not neither. Values that
/// are empty or whitespace count as absent. The error names keys, never values.
pub fn validate_credentials(secret: &Secret) -> Result<CredentialKind, String> {
    let present = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .is_some_and(|ByteString(v)| !v.iter().all(u8::is_ascii_whitespace))
    };
    let (user, pass, key) = (present("username"), present("password"), present("apiKey"));
    match (user || pass, key) {
        (true, true) => Err(
            "it holds both basic-auth keys (username/password) and apiKey; keep only one kind".to_owned(),
        ),
        (false, false) => Err(
            "it holds neither keys username and password nor key apiKey; add username and password, or apiKey"
                .to_owned(),
        ),
        (false, true) => Ok(CredentialKind::ApiKey),
        (true, false) if !user => Err("key \"username\" is missing or empty".to_owned()),
        (true, false) if !pass => Err("key \"password\" is missing or empty".to_owned()),
        (true, false) => Ok(CredentialKind::Basic),
    }
}

/// Everything the HelmChartProxy depends on.
#[derive(Clone, Debug)]
pub struct HelmChartProxyInput<'a> {
    /// The Cluster.
    pub cluster: &'a ClusterKey,
    /// The live Cluster's uid, for the ownerReference.
    pub cluster_uid: &'a str,
    /// The API version the live Cluster was read in (`cluster.x-k8s.io/v1beta2` or `/v1beta1`), for the
    /// ownerReference, so that it resolves on this management cluster.
    pub cluster_api_version: &'a str,
    /// The chart.
    pub chart: &'a ChartCoordinates,
    /// Rendered values.
    pub values: &'a str,
    /// Namespace of the `helm-repository-tls` Secret (the executor's own namespace).
    pub helm_repository_ca_namespace: &'a str,
}

/// The HelmChartProxy to server-side apply in the Cluster's namespace.
///
/// `options.install.createNamespace` is set explicitly (CAAPH's CRD default is also true) so the object says
/// what it does. `tlsConfig` is set only when the repository URL names the in-cluster `helm-repository` mirror.
pub fn helm_chart_proxy(input: &HelmChartProxyInput<'_>) -> Value {
    let mut hcp = json!({
        "apiVersion": CAAPH_API_VERSION,
        "kind": "HelmChartProxy",
        "metadata": {
            "name": helm_chart_proxy_name(&input.cluster.name),
            "namespace": input.cluster.namespace,
            "ownerReferences": [{
                "apiVersion": input.cluster_api_version,
                "kind": "Cluster",
                "name": input.cluster.name,
                "uid": input.cluster_uid,
            }],
        },
        "spec": {
            "clusterSelector": {"matchLabels": {CLUSTER_NAME_LABEL: input.cluster.name}},
            "repoURL": input.chart.repository_url,
            "chartName": input.chart.chart_name,
            "version": input.chart.chart_version,
            "releaseName": RELEASE_NAME,
            "namespace": RELEASE_NAMESPACE,
            "valuesTemplate": input.values,
            "options": {"install": {"createNamespace": true}},
        },
    });
    if input.chart.repository_url.contains("helm-repository") {
        hcp["spec"]["tlsConfig"] = json!({
            "caSecret": {"name": HELM_REPOSITORY_TLS_SECRET, "namespace": input.helm_repository_ca_namespace},
        });
    }
    hcp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(entries: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("creds".into()),
                namespace: Some("ns".into()),
                labels: Some([("a".to_owned(), "b".to_owned())].into()),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(
                entries
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn credentials() {
        assert_eq!(
            validate_credentials(&secret(&[("username", "u"), ("password", "p")])),
            Ok(CredentialKind::Basic)
        );
        assert_eq!(
            validate_credentials(&secret(&[("apiKey", "k")])),
            Ok(CredentialKind::ApiKey)
        );
        assert!(
            validate_credentials(&secret(&[("username", "u")]))
                .unwrap_err()
                .contains("\"password\"")
        );
        assert!(
            validate_credentials(&secret(&[("password", "p")]))
                .unwrap_err()
                .contains("\"username\"")
        );
        assert!(
            validate_credentials(&secret(&[("username", "u"), ("password", "p"), ("apiKey", "k")]))
                .unwrap_err()
                .contains("both")
        );
        assert!(
            validate_credentials(&secret(&[("other", "x")]))
                .unwrap_err()
                .contains("neither")
        );
        assert!(validate_credentials(&secret(&[("username", "u"), ("password", " \n")])).is_err());
    }

    #[test]
    fn remote_secret_copies_type_and_data_only() {
        let s = remote_secret(&secret(&[("username", "u"), ("password", "p")]));
        assert_eq!(s.metadata.name.as_deref(), Some("konnector-agent"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("ntnx-system"));
        assert_eq!(s.metadata.labels, None);
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert_eq!(s.data.as_ref().unwrap().len(), 2);
        let body = secret_apply_body(&s);
        assert_eq!(body["kind"], "Secret");
        assert_eq!(body["data"]["username"], "dQ==");
    }

    #[test]
    fn redaction_keeps_keys_only() {
        let r = redacted_secret(&remote_secret(&secret(&[
            ("username", "admin"),
            ("password", "pw"),
        ])));
        assert_eq!(
            r["data"],
            json!({"password": "<redacted>", "username": "<redacted>"})
        );
        assert!(!r.to_string().contains("admin"));
        assert_eq!(r["type"], "Opaque");
    }

    #[test]
    fn namespace_has_psa_label() {
        assert_eq!(
            namespace_object()["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
            "privileged"
        );
    }

    #[test]
    fn hcp_names() {
        assert_eq!(helm_chart_proxy_name("c1"), "konnector-agent-c1");
        let long = "x".repeat(300);
        let other = format!("{}y", "x".repeat(299));
        let (a, b) = (helm_chart_proxy_name(&long), helm_chart_proxy_name(&other));
        assert!(a.len() <= 253 && b.len() <= 253);
        assert_ne!(a, b);
        assert_eq!(a, helm_chart_proxy_name(&long), "deterministic");
    }

    #[test]
    fn chart_coordinates() {
        let c = parse_chart_coordinates(
            "ChartName: konnector-agent\nChartVersion: 1.4.0\nRepositoryURL: 'https://mesosphere.github.io/charts/stable/'\n",
        )
        .unwrap();
        assert_eq!(c.chart_version, "1.4.0");
        assert!(parse_chart_coordinates("ChartName: x").is_err());
        assert!(parse_chart_coordinates("ChartName: x\nChartVersion: ''\nRepositoryURL: y").is_err());
        assert!(parse_chart_coordinates(": : :").is_err());
    }

    #[test]
    fn hcp_shape() {
        let cluster = ClusterKey {
            namespace: "ns".into(),
            name: "c1".into(),
        };
        let chart = ChartCoordinates {
            chart_name: "konnector-agent".into(),
            chart_version: "1.3.0-rc.1".into(),
            repository_url: "https://mesosphere.github.io/charts/stable/".into(),
        };
        let input = HelmChartProxyInput {
            cluster: &cluster,
            cluster_uid: "uid-1",
            cluster_api_version: "cluster.x-k8s.io/v1beta2",
            chart: &chart,
            values: "a: b",
            helm_repository_ca_namespace: "konnector-system",
        };
        let hcp = helm_chart_proxy(&input);
        assert_eq!(hcp["metadata"]["name"], "konnector-agent-c1");
        assert_eq!(
            hcp["metadata"]["ownerReferences"],
            json!([{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "c1", "uid": "uid-1"}])
        );
        assert_eq!(
            hcp["spec"]["clusterSelector"],
            json!({"matchLabels": {"cluster.x-k8s.io/cluster-name": "c1"}})
        );
        assert_eq!(hcp["spec"]["releaseName"], "konnector-agent");
        assert_eq!(hcp["spec"]["namespace"], "ntnx-system");
        assert!(hcp["spec"].get("tlsConfig").is_none());
        let mirror = ChartCoordinates {
            repository_url: "oci://helm-repository.caren.svc/charts".into(),
            ..chart.clone()
        };
        let hcp = helm_chart_proxy(&HelmChartProxyInput {
            chart: &mirror,
            ..input
        });
        assert_eq!(
            hcp["spec"]["tlsConfig"],
            json!({"caSecret": {"name": "helm-repository-tls", "namespace": "konnector-system"}})
        );
    }
}
