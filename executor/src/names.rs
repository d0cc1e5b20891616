//! Every Kubernetes name the executor uses, in one place: API groups and kinds, labels and annotations, field
//! managers, the names of the objects it reads and writes and the keys in them, and the rule that names a
//! Cluster's HelmChartProxy.

use std::collections::BTreeMap;

use kube::api::{ApiResource, GroupVersionKind};

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
/// CAPI's cluster-name label, on the Cluster and on each HelmReleaseProxy.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// CAAPH's label naming the HelmChartProxy a HelmReleaseProxy belongs to.
pub const HCP_NAME_LABEL: &str = "helmreleaseproxy.addons.cluster.x-k8s.io/helmchartproxy-name";
/// Pod Security admission label the agent's namespace needs.
pub const PSA_ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";
/// CAREN's annotation holding the cluster UUID it names its HelmChartProxy after.
pub const CAREN_CLUSTER_UUID_ANNOTATION: &str = "caren.nutanix.com/cluster-uuid";
/// Kind of CAPI's Cluster.
pub const CLUSTER_KIND: &str = "Cluster";
/// Group/version of CAAPH's kinds.
pub const CAAPH_API_VERSION: &str = "addons.cluster.x-k8s.io/v1alpha1";
/// Prefix of the HelmChartProxy's name.
pub const HCP_NAME_PREFIX: &str = "konnector-agent-";
/// CAREN's field manager, on the HelmChartProxy and the workload Secret it applies.
pub const CAREN_FIELD_MANAGER: &str = "cluster-api-runtime-extensions-nutanix";
/// The pod-template annotation that rolls the agent when its credentials change.
pub const CREDENTIALS_ROTATED_ANNOTATION: &str = "konnector.nutanix.com/credentials-rotated-at";
/// The controller name on the Events the executor records.
pub const EVENT_REPORTER: &str = "konnector-executor";
/// Key of the kubeconfig in CAPI's `<cluster>-kubeconfig` Secret.
pub const KUBECONFIG_KEY: &str = "value";
/// Secret holding the CA of the in-cluster chart mirror, used when the repository URL names it.
pub const HELM_REPOSITORY_TLS_SECRET: &str = "helm-repository-tls";
/// The helm-addons ConfigMap CAREN's defaults install (`--helm-addons-configmap`'s default).
pub const DEFAULT_HELM_ADDONS_CONFIGMAP: &str = "default-helm-addons-config";
/// Key in the helm-addons ConfigMap holding the Konnector Agent's chart coordinates.
pub const HELM_ADDONS_KEY: &str = "konnector-agent";
/// The values-template ConfigMap (`--values-template-configmap`'s default).
pub const DEFAULT_VALUES_TEMPLATE_CONFIGMAP: &str = "default-konnector-agent-helm-values-template";
/// Key in the values-template ConfigMap holding the template.
pub const VALUES_TEMPLATE_KEY: &str = "values.yaml";
/// The chart's name when the helm-addons ConfigMap is absent (`--default-chart-name`'s default).
pub const DEFAULT_CHART_NAME: &str = "konnector-agent";
/// Longest Kubernetes object name.
const MAX_NAME_LEN: usize = 253;

/// The `<cluster>-kubeconfig` Secret CAPI writes for each workload cluster.
pub fn kubeconfig_secret_name(cluster: &str) -> String {
    format!("{cluster}-kubeconfig")
}

/// CAAPH's `HelmChartProxy`.
pub fn hcp_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("addons.cluster.x-k8s.io", "v1alpha1", "HelmChartProxy"),
        "helmchartproxies",
    )
}

/// CAAPH's `HelmReleaseProxy`.
pub fn hrp_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("addons.cluster.x-k8s.io", "v1alpha1", "HelmReleaseProxy"),
        "helmreleaseproxies",
    )
}

/// The version of CAPI's Cluster API that the management cluster serves and the executor reads: v1beta2 on CAPI
/// 1.11 and later, v1beta1 on CAPI 1.10, where v1beta2 does not exist. The ownerReference and Events name the same
/// version, so that they resolve on that management cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterVersion {
    /// `cluster.x-k8s.io/v1beta1` (CAPI 1.10).
    V1Beta1,
    /// `cluster.x-k8s.io/v1beta2` (CAPI 1.11+).
    V1Beta2,
}

impl ClusterVersion {
    /// `v1beta1` or `v1beta2`.
    pub fn version(self) -> &'static str {
        match self {
            Self::V1Beta1 => "v1beta1",
            Self::V1Beta2 => "v1beta2",
        }
    }

    /// `cluster.x-k8s.io/<version>`.
    pub fn api_version(self) -> String {
        format!("{}/{}", konnector_proto::capi::GROUP, self.version())
    }

    /// The `ApiResource` for Clusters at this version.
    pub fn resource(self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(konnector_proto::capi::GROUP, self.version(), CLUSTER_KIND),
            "clusters",
        )
    }

    /// Picks the version to read from the versions the API group serves: v1beta2 when served, else v1beta1.
    /// `None` when neither is served, i.e. CAPI is not installed or is older than konnector supports.
    pub fn choose<'a>(served: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let served: Vec<&str> = served.into_iter().collect();
        if served.contains(&"v1beta2") {
            Some(Self::V1Beta2)
        } else if served.contains(&"v1beta1") {
            Some(Self::V1Beta1)
        } else {
            None
        }
    }
}

/// Whether `s` is a DNS-1123 label (namespace names): at most 63 lower-case alphanumerics or '-', starting and
/// ending with an alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is a DNS-1123 subdomain (most object names), as Kubernetes validates it: at most 253 bytes of
/// dot-separated segments of lower-case alphanumerics and '-', each starting and ending alphanumeric. Unlike a
/// label, a segment has no length limit of its own.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|seg| {
            !seg.is_empty()
                && !seg.starts_with('-')
                && !seg.ends_with('-')
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
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

/// The longest prefix of `s` that is at most `max` bytes and ends on a character boundary.
pub fn truncate_on_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_choice() {
        assert_eq!(
            ClusterVersion::choose(["v1beta1", "v1beta2"]),
            Some(ClusterVersion::V1Beta2)
        );
        assert_eq!(ClusterVersion::choose(["v1beta1"]), Some(ClusterVersion::V1Beta1));
        assert_eq!(ClusterVersion::choose(["v1alpha4"]), None);
        assert_eq!(ClusterVersion::V1Beta1.api_version(), "cluster.x-k8s.io/v1beta1");
    }

    #[test]
    fn dns_names() {
        for ok in ["a", "c1", "my-cluster", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "../x", "a/b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(
            is_dns1123_subdomain(&"a".repeat(100)),
            "segments have no limit of their own"
        );
        for bad in ["a..b", ".a", "a/b", "..", "a%2fb", &"a".repeat(254)] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
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
}
