//! Every Kubernetes name the executor uses, in one place: API groups and kinds, labels and annotations, and the
//! names of the objects it reads and writes.

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
}
