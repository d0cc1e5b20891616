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

/// The hook body's Cluster → the executor's `ClusterRef` (namespace, name, uid).
pub fn cluster_ref(cluster: &Cluster) -> Result<ClusterRef, TranslateError> {
    Ok(ClusterRef {
        namespace: cluster.namespace()?.to_owned(),
        name: cluster.name()?.to_owned(),
        uid: cluster.uid().to_owned(),
    })
}

/// Whether the body says the Cluster configures the addon (`clusterConfig.addons.konnectorAgent` present). A
/// malformed `clusterConfig` counts as configured, so that the executor, which reads the live Cluster, decides.
pub fn addon_configured(cluster: &Cluster) -> bool {
    !matches!(cluster.konnector_agent(), Ok(None))
}
