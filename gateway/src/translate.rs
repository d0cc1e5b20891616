//! The crossing from a hook body's Cluster to what the gateway tells the executor: which Cluster, and nothing more.
//!
//! A hook body is a trigger, not a source of truth: the executor reads everything it acts on (clusterConfig,
//! categories, endpoint, labels) from the live Cluster. The gateway only names the Cluster, with the uid the body
//! carries so that a stale body is refused, and decides from the body whether the Cluster uses the addon at all,
//! which only ever lets it answer Success without calling the executor for a Cluster that does not.

use konnector_proto::capi::{Cluster, DecodeError};
use konnector_proto::v1::ClusterRef;

/// Why a hook's Cluster could not be named. Messages are deterministic and name fields, never values.
pub type TranslateError = DecodeError;

/// The hook body's Cluster → the executor's `ClusterRef` (namespace, name, uid, resourceVersion). The
/// resourceVersion only tells the executor which version the caller saw: it uses its own copy of the Cluster when its
/// watch holds that same version, and reads the live Cluster otherwise, so a forged one costs a read, nothing more.
pub fn cluster_ref(cluster: &Cluster) -> Result<ClusterRef, TranslateError> {
    Ok(ClusterRef {
        namespace: cluster.namespace()?.to_owned(),
        name: cluster.name()?.to_owned(),
        uid: cluster.uid().to_owned(),
        resource_version: cluster.resource_version().to_owned(),
    })
}

/// Whether the body says the Cluster configures the addon (`clusterConfig.addons.konnectorAgent` present). A
/// malformed `clusterConfig` counts as configured, so that the executor, which reads the live Cluster, decides.
pub fn addon_configured(cluster: &Cluster) -> bool {
    !matches!(cluster.konnector_agent(), Ok(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_ref_carries_what_the_body_names_and_the_version_it_saw() {
        let body = serde_json::json!({
            "metadata": {"namespace": "ns", "name": "c1", "uid": "u-1", "resourceVersion": "4711",
                "labels": {"a": "b"}},
            "spec": {"topology": {"variables": [{"name": "clusterConfig", "value": {"addons": {}}}]}},
        });
        let r = cluster_ref(&Cluster::from_json(body).unwrap()).unwrap();
        assert_eq!(
            r,
            ClusterRef {
                namespace: "ns".into(),
                name: "c1".into(),
                uid: "u-1".into(),
                resource_version: "4711".into(),
            }
        );
        // A body without one (a hand-written request) names the Cluster all the same: the executor reads it live.
        let bare = serde_json::json!({"metadata": {"namespace": "ns", "name": "c1"}});
        let r = cluster_ref(&Cluster::from_json(bare).unwrap()).unwrap();
        assert_eq!((r.uid.as_str(), r.resource_version.as_str()), ("", ""));
        assert!(
            cluster_ref(&Cluster::from_json(serde_json::json!({"metadata": {"name": "c1"}})).unwrap())
                .is_err()
        );
    }
}
