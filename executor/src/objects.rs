//! The Kubernetes objects the executor reads and writes, built from domain types by small, pure functions.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::ClusterKey;
use crate::names::{
    CAREN_CLUSTER_UUID_ANNOTATION, CLUSTER_NAME_LABEL, PSA_ENFORCE_LABEL, RELEASE_NAME, RELEASE_NAMESPACE,
    REMOTE_SECRET_NAME, is_dns1123_label, is_dns1123_subdomain,
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

/// Longest label value. CAAPH copies the HelmChartProxy's name into a label on each HelmReleaseProxy and selects
/// by it, so the name must fit here, not merely in an object name.
pub const MAX_LABEL_VALUE_LEN: usize = 63;
/// Length of the hash suffix of a shortened name, in hex digits (64 bits).
const NAME_HASH_HEX_LEN: usize = 16;

/// The HelmChartProxy's name for a cluster; deterministic and always a valid DNS-1123 subdomain and label value.
///
/// - With a well-formed `caren.nutanix.com/cluster-uuid` annotation: `konnector-agent-<uuid>`, CAREN's name, so
///   konnector and CAREN converge on one object instead of installing the release twice.
/// - Otherwise `konnector-agent-<cluster name>` when that is at most 62 characters and a valid name.
/// - Otherwise a shortened form of exactly 63 characters: the name's first characters and a 64-bit hash of the
///   full name. Full names stop at 62 so the two forms never collide: no cluster can be named so that its plain
///   name equals another cluster's shortened one.
///
/// A malformed uuid annotation is ignored rather than trusted: it could otherwise make an invalid name.
pub fn helm_chart_proxy_name_for(cluster_name: &str, annotations: &BTreeMap<String, String>) -> String {
    if let Some(uuid) = caren_cluster_uuid(annotations) {
        return format!("{HCP_NAME_PREFIX}{uuid}");
    }
    name_based_hcp_name(cluster_name)
}

/// Every name konnector may have given the cluster's HelmChartProxy, current rule first, for RemoveAgent to find
/// whichever exists: CAREN's uuid name, the name-based rule, and the rule before names were fitted to 63
/// characters (`konnector-agent-<cluster>`, hashed beyond 253). Only valid object names are listed, no duplicates.
pub fn candidate_helm_chart_proxy_names(
    cluster_name: &str,
    annotations: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut names = vec![helm_chart_proxy_name_for(cluster_name, annotations)];
    for name in [name_based_hcp_name(cluster_name), legacy_hcp_name(cluster_name)] {
        if is_dns1123_subdomain(&name) && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The uuid in CAREN's annotation, when it is a canonical lowercase UUID (CAREN writes UUIDv7 strings). Anything
/// else is treated as absent.
pub fn caren_cluster_uuid(annotations: &BTreeMap<String, String>) -> Option<&str> {
    let uuid = annotations.get(CAREN_CLUSTER_UUID_ANNOTATION)?;
    let canonical = uuid.len() == 36
        && uuid.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        });
    canonical.then_some(uuid.as_str())
}

/// The name-based rule alone (no uuid): `konnector-agent-<cluster>`, or its hashed 63-character form. Also the
/// deterministic fallback when CAREN's uuid name is held by another Cluster.
pub fn name_based_hcp_name(cluster_name: &str) -> String {
    let full = format!("{HCP_NAME_PREFIX}{cluster_name}");
    if full.len() < MAX_LABEL_VALUE_LEN && is_dns1123_subdomain(&full) {
        return full;
    }
    // Keep what can be kept of the name for humans: lowercase, other characters as '-', then no trailing '-' or
    // '.' (a subdomain segment must end alphanumeric). The hash, of the *whole* original name, makes it unique;
    // the hash is widened, never the name, so the result is always exactly 63 characters.
    let room = MAX_LABEL_VALUE_LEN - HCP_NAME_PREFIX.len() - 1 - NAME_HASH_HEX_LEN;
    let kept: String = cluster_name
        .chars()
        .take(room)
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    // A subdomain segment may be neither empty nor start or end with '-' ("a..b", "a.-b", "a-.b").
    let mut kept = kept;
    while kept.contains("..") || kept.contains(".-") || kept.contains("-.") {
        kept = kept.replace("..", ".").replace(".-", "-").replace("-.", "-");
    }
    let kept = kept.trim_start_matches('.').trim_end_matches(['-', '.']);
    let hash = format!("{:016x}", fnv1a64(cluster_name.as_bytes()));
    let pad = room - kept.len();
    // Fill the room the name did not use with more hash, from a second, independent hash.
    let extra = format!(
        "{:016x}{:016x}",
        fnv1a64(hash.as_bytes()),
        fnv1a64(cluster_name.as_bytes()).rotate_left(32)
    );
    if kept.is_empty() {
        format!("{HCP_NAME_PREFIX}{hash}{}", &extra[..pad + 1])
    } else {
        format!("{HCP_NAME_PREFIX}{kept}-{hash}{}", &extra[..pad])
    }
}

/// The name konnector gave HelmChartProxies before names were fitted to label values: `konnector-agent-<cluster>`,
/// cut at 253 bytes with a hash suffix. Kept only so RemoveAgent finds objects an older version created.
fn legacy_hcp_name(cluster: &str) -> String {
    let full = format!("{HCP_NAME_PREFIX}{cluster}");
    if full.len() <= MAX_NAME_LEN {
        return full;
    }
    let suffix = format!("-{:016x}", fnv1a64(cluster.as_bytes()));
    let head = truncate_on_char_boundary(&full, MAX_NAME_LEN - suffix.len());
    format!("{}{suffix}", head.trim_end_matches(['-', '.']))
}

/// Whether `s` is a valid label value: at most 63 characters, alphanumerics, '-', '_' and '.', starting and
/// ending alphanumeric (or empty).
pub fn is_label_value(s: &str) -> bool {
    s.len() <= MAX_LABEL_VALUE_LEN
        && (s.is_empty()
            || (s.starts_with(|c: char| c.is_ascii_alphanumeric())
                && s.ends_with(|c: char| c.is_ascii_alphanumeric())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))))
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
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

/// The HelmChartProxy `name` (from [`helm_chart_proxy_name_for`]) to server-side apply in the Cluster's namespace.
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

    fn annotations(uuid: &str) -> BTreeMap<String, String> {
        [(CAREN_CLUSTER_UUID_ANNOTATION.to_owned(), uuid.to_owned())].into()
    }

    const UUID: &str = "019d87f4-a01e-7aeb-8e4c-146dd9fcbf05";

    #[test]
    fn hcp_names() {
        let none = BTreeMap::new();
        assert_eq!(helm_chart_proxy_name_for("c1", &none), "konnector-agent-c1");
        // CAREN's name when CAREN's annotation is there, whatever the cluster is called.
        assert_eq!(
            helm_chart_proxy_name_for("c1", &annotations(UUID)),
            format!("konnector-agent-{UUID}")
        );
        // The longest plain name (46-character cluster name) and the first shortened one.
        let n46 = "a".repeat(46);
        assert_eq!(
            helm_chart_proxy_name_for(&n46, &none),
            format!("konnector-agent-{n46}")
        );
        let n47 = "a".repeat(47);
        let short = helm_chart_proxy_name_for(&n47, &none);
        assert_eq!(short.len(), 63);
        assert!(
            short.starts_with(&format!("konnector-agent-{}-", "a".repeat(30))),
            "{short}"
        );
        // Malformed uuids are ignored, never copied into a name.
        for bad in [
            "",
            "not-a-uuid",
            "019D87F4-A01E-7AEB-8E4C-146DD9FCBF05",
            "019d87f4-a01e-7aeb-8e4c-146dd9fcbf05\n",
            "019d87f4-a01e-7aeb-8e4c-146dd9fcbf0/",
            "019d87f4a01e-7aeb-8e4c-146dd9fcbf05-",
        ] {
            assert_eq!(
                helm_chart_proxy_name_for("c1", &annotations(bad)),
                "konnector-agent-c1",
                "{bad:?}"
            );
        }
        // Names that are no valid subdomain (never served by the API server, but the function is total).
        for odd in ["UPPER", "a..b", "a.-b", ".x", "x.", "-", "é", "a_b", ""] {
            let name = helm_chart_proxy_name_for(odd, &none);
            assert!(
                is_dns1123_subdomain(&name) && is_label_value(&name),
                "{odd:?} -> {name}"
            );
        }
    }

    #[test]
    fn hcp_candidates() {
        let none = BTreeMap::new();
        assert_eq!(
            candidate_helm_chart_proxy_names("c1", &none),
            ["konnector-agent-c1"]
        );
        assert_eq!(
            candidate_helm_chart_proxy_names("c1", &annotations(UUID)),
            [format!("konnector-agent-{UUID}"), "konnector-agent-c1".to_owned()]
        );
        // A 60-character name: the shortened current name, then the plain name an older konnector used.
        let n60 = "b".repeat(60);
        let c = candidate_helm_chart_proxy_names(&n60, &none);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].len(), 63);
        assert_eq!(c[1], format!("konnector-agent-{n60}"));
        // Beyond 253 the old rule hashed too; that name is still listed.
        let n300 = "x".repeat(300);
        let c = candidate_helm_chart_proxy_names(&n300, &none);
        assert_eq!(c.len(), 2);
        assert!(c[1].len() <= 253 && is_dns1123_subdomain(&c[1]));
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

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn name_strategy() -> impl Strategy<Value = String> {
            // Valid Cluster names (DNS-1123 subdomains) of every length that matters, plus arbitrary strings.
            prop_oneof![
                "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?){0,3}",
                ".{0,80}",
            ]
        }

        proptest! {
            #[test]
            fn always_a_valid_label_value_and_subdomain(name in name_strategy(), uuid in ".{0,40}") {
                for ann in [BTreeMap::new(), annotations(&uuid)] {
                    let n = helm_chart_proxy_name_for(&name, &ann);
                    prop_assert!(is_label_value(&n), "{n}");
                    prop_assert!(is_dns1123_subdomain(&n), "{n}");
                    prop_assert_eq!(&n, &helm_chart_proxy_name_for(&name, &ann));
                    prop_assert!(candidate_helm_chart_proxy_names(&name, &ann).iter().all(|c| is_dns1123_subdomain(c)));
                }
            }

            #[test]
            fn distinct_clusters_get_distinct_names(a in name_strategy(), b in name_strategy()) {
                prop_assume!(a != b);
                let none = BTreeMap::new();
                prop_assert_ne!(helm_chart_proxy_name_for(&a, &none), helm_chart_proxy_name_for(&b, &none));
            }

            #[test]
            fn a_plain_name_never_equals_a_shortened_one(a in "[a-z0-9]{47,80}", b in "[a-z0-9]([-a-z0-9]{0,44}[a-z0-9])?") {
                let none = BTreeMap::new();
                prop_assert_ne!(helm_chart_proxy_name_for(&a, &none), helm_chart_proxy_name_for(&b, &none));
            }
        }
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
