//! The Kubernetes objects the executor reads and writes, built from domain types by small, pure functions.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::ClusterKey;
use crate::names::{
    CAAPH_API_VERSION, CLUSTER_NAME_LABEL, HELM_ADDONS_KEY, HELM_REPOSITORY_TLS_SECRET, PSA_ENFORCE_LABEL,
    RELEASE_NAME, RELEASE_NAMESPACE, REMOTE_SECRET_NAME, is_dns1123_label,
};

/// Value of the placeholder that replaces every Secret value in a plan.
pub const REDACTED: &str = "<redacted>";

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

/// The namespace of the `helm-repository-tls` Secret, read from a repository URL whose host is the in-cluster
/// mirror's Service, `helm-repository.<namespace>.svc[.cluster.local]`: the Secret lives beside the Service
/// (CAREN's namespace when pointing at CAREN's mirror), not in konnector's namespace.
pub fn helm_repository_namespace(repository_url: &str) -> Option<&str> {
    let rest = repository_url
        .split_once("://")
        .map_or(repository_url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host.split(':').next().unwrap_or_default();
    let mut parts = host.split('.');
    let (Some("helm-repository"), Some(ns), Some("svc")) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let tail: Vec<&str> = parts.collect();
    (matches!(tail.as_slice(), [] | ["cluster", "local"]) && is_dns1123_label(ns)).then_some(ns)
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

/// The keys the agent chart reads from the copied Secret.
pub const CREDENTIAL_KEYS: [&str; 2] = ["username", "password"];

/// The credentials Secret as copied to the workload cluster: the source's type and its `username` and `password`,
/// nothing else. No labels, annotations or owner references travel, and neither do other keys: the Secret is named
/// by the Cluster, which its owners control, so any other key it holds stays on the management cluster.
pub fn remote_secret(source: &Secret) -> Secret {
    let data = source
        .data
        .iter()
        .flatten()
        .filter(|(k, _)| CREDENTIAL_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(REMOTE_SECRET_NAME.to_owned()),
            namespace: Some(RELEASE_NAMESPACE.to_owned()),
            ..Default::default()
        },
        type_: source.type_.clone(),
        data: Some(data),
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

/// Checks that the Secret holds `username` and `password`, the keys every published konnector-agent chart mounts
/// at `/certs`. Values that are empty or whitespace count as absent. An `apiKey` alone is refused: no published
/// chart konnector installs reads it, so the agent could never authenticate. Beside username and password it is
/// accepted, as CAREN accepts it (refusing it failed upgrades CAREN let through): it is not copied, the agent uses
/// basic auth, and [`api_key_note`] says so. The error names keys, never values.
pub fn validate_credentials(secret: &Secret) -> Result<(), String> {
    let present = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .is_some_and(|ByteString(v)| !v.iter().all(u8::is_ascii_whitespace))
    };
    let (user, pass, key) = (present("username"), present("password"), present("apiKey"));
    match (user, pass, key) {
        (_, _, true) if !user && !pass => Err(
            "it holds only key apiKey, which no published konnector-agent chart reads (the agent authenticates with username and password); add keys username and password and remove apiKey".to_owned(),
        ),
        (true, true, true) => Ok(()),
        (_, _, true) => Err(
            "it holds apiKey but not both username and password; the agent authenticates with username and password, so add both".to_owned(),
        ),
        (false, false, false) => Err(
            "it holds neither key username nor key password; add both".to_owned(),
        ),
        (true, false, false) => Err("key \"password\" is missing or empty".to_owned()),
        (false, true, false) => Err("key \"username\" is missing or empty".to_owned()),
        (true, true, false) => Ok(()),
    }
}

/// A note for a Secret that holds an `apiKey` beside username and password (accepted by [`validate_credentials`]).
pub fn api_key_note(secret: &Secret, secret_ref: &str) -> Option<String> {
    let has_key = secret
        .data
        .as_ref()
        .and_then(|d| d.get("apiKey"))
        .is_some_and(|ByteString(v)| !v.iter().all(u8::is_ascii_whitespace));
    has_key.then(|| {
        format!(
            "Secret {secret_ref} holds apiKey beside username and password; only username and password are copied, and the agent authenticates with them"
        )
    })
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
    /// The `spec.valuesTemplate` text: the rendered values, escaped for CAAPH's second rendering
    /// ([`crate::values::caaph_values_template`]).
    pub values: &'a str,
    /// Namespace of the `helm-repository-tls` Secret when the repository URL does not name it (see
    /// [`helm_repository_namespace`]); the executor passes its own namespace.
    pub helm_repository_ca_namespace: &'a str,
}

/// The HelmChartProxy `name` (from [`crate::names::helm_chart_proxy_name_for`]) to server-side apply in the
/// Cluster's namespace.
///
/// `options.install.createNamespace` is set explicitly (CAAPH's CRD default is also true) so the object says
/// what it does. `tlsConfig` is set only when the repository URL names the in-cluster `helm-repository` mirror;
/// its CA Secret is looked up in the mirror's namespace when the URL's host names it.
pub fn helm_chart_proxy(input: &HelmChartProxyInput<'_>, name: &str) -> Value {
    let mut hcp = json!({
        "apiVersion": CAAPH_API_VERSION,
        "kind": "HelmChartProxy",
        "metadata": {
            "name": name,
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
        let namespace = helm_repository_namespace(&input.chart.repository_url)
            .unwrap_or(input.helm_repository_ca_namespace);
        hcp["spec"]["tlsConfig"] = json!({
            "caSecret": {"name": HELM_REPOSITORY_TLS_SECRET, "namespace": namespace},
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
            Ok(())
        );
        let only_key = validate_credentials(&secret(&[("apiKey", "s3cr3t-key")])).unwrap_err();
        assert!(only_key.contains("only key apiKey"), "{only_key}");
        assert!(!only_key.contains("s3cr3t"), "names keys only");
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
        // Beside basic auth, as CAREN lets it through: accepted, not copied, and noted.
        let both = secret(&[("username", "u"), ("password", "p"), ("apiKey", "k")]);
        assert_eq!(validate_credentials(&both), Ok(()));
        assert!(api_key_note(&both, "ns/creds").unwrap().contains("apiKey"));
        assert!(!remote_secret(&both).data.unwrap().contains_key("apiKey"));
        assert!(validate_credentials(&secret(&[("username", "u"), ("apiKey", "k")])).is_err());
        assert!(
            validate_credentials(&secret(&[("other", "x")]))
                .unwrap_err()
                .contains("neither")
        );
        assert!(validate_credentials(&secret(&[("username", "u"), ("password", " \n")])).is_err());
        // A whitespace-only apiKey counts as absent.
        assert_eq!(
            validate_credentials(&secret(&[("username", "u"), ("password", "p"), ("apiKey", " ")])),
            Ok(())
        );
    }

    #[test]
    fn remote_secret_copies_type_and_credentials_only() {
        let s = remote_secret(&secret(&[
            ("username", "u"),
            ("password", "p"),
            ("unrelated", "x"),
        ]));
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
    fn repository_namespace() {
        assert_eq!(
            helm_repository_namespace("oci://helm-repository.caren.svc/charts"),
            Some("caren")
        );
        assert_eq!(
            helm_repository_namespace("oci://helm-repository.caren-system.svc.cluster.local:5000/charts"),
            Some("caren-system")
        );
        assert_eq!(
            helm_repository_namespace("https://mesosphere.github.io/charts/stable/"),
            None
        );
        assert_eq!(helm_repository_namespace("oci://helm-repository/charts"), None);
        assert_eq!(
            helm_repository_namespace("oci://helm-repository.a.b.svc/charts"),
            None
        );
        assert_eq!(
            helm_repository_namespace("oci://helm-repository.caren.svc.evil.example/x"),
            None
        );
        assert_eq!(
            helm_repository_namespace("oci://helm-repository.Bad_NS.svc/x"),
            None
        );
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
        let hcp = helm_chart_proxy(&input, "konnector-agent-c1");
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
        let hcp = helm_chart_proxy(
            &HelmChartProxyInput {
                chart: &mirror,
                ..input
            },
            "konnector-agent-c1",
        );
        // The CA Secret sits beside the mirror the URL names, not in konnector's namespace.
        assert_eq!(
            hcp["spec"]["tlsConfig"],
            json!({"caSecret": {"name": "helm-repository-tls", "namespace": "caren"}})
        );
        let unnamed = ChartCoordinates {
            repository_url: "oci://helm-repository/charts".into(),
            ..chart.clone()
        };
        let hcp = helm_chart_proxy(
            &HelmChartProxyInput {
                chart: &unnamed,
                ..input
            },
            "konnector-agent-x",
        );
        assert_eq!(hcp["metadata"]["name"], "konnector-agent-x");
        assert_eq!(
            hcp["spec"]["tlsConfig"]["caSecret"]["namespace"],
            "konnector-system"
        );
    }
}
