//! Reading the live Cluster: the only source of what konnector does for it. A request names a Cluster; everything
//! else comes from here.

use k8s_openapi::jiff::Timestamp;
use konnector_proto::capi;
use kube::{
    Resource,
    api::{DynamicObject, GetParams},
};
use tracing::Instrument;

use crate::{
    domain::{ClusterKey, ClusterRef, LiveCluster},
    error::{Error, KubeFailure, Side},
    executor::Executor,
    names::ClusterVersion,
};

impl Executor {
    /// The version of CAPI's Cluster API to read, discovered once from the management cluster's API group list
    /// (which every authenticated client may read). A failed discovery is not cached, so it is retried next time.
    pub(crate) async fn cluster_version(&self) -> Result<ClusterVersion, Error> {
        self.inner
            .cluster_version
            .get_or_try_init(|| async {
                let groups = self
                    .mgmt()
                    .list_api_groups()
                    .instrument(tracing::debug_span!("discover_cluster_api_version"))
                    .await
                    .map_err(|e| Error::kube("discover the served API groups", Side::Management, &e))?;
                let served = groups
                    .groups
                    .iter()
                    .find(|g| g.name == capi::GROUP)
                    .map(|g| g.versions.iter().map(|v| v.version.clone()).collect::<Vec<_>>())
                    .unwrap_or_default();
                ClusterVersion::choose(served.iter().map(String::as_str)).ok_or(Error::CapiNotServed)
            })
            .await
            .copied()
    }

    /// Reads the Cluster `key`; `Ok(None)` when it does not exist.
    ///
    /// The object is decoded once, from the API server's JSON text straight into the Cluster model
    /// ([`capi::Cluster::from_slice`]), which keeps only what konnector reads: no `DynamicObject` tree, no second
    /// tree to convert it, whatever the Cluster's variables hold. Hooks and every reconcile pass read Clusters.
    pub(crate) async fn read_cluster(&self, key: &ClusterKey) -> Result<Option<LiveCluster>, Error> {
        let version = self.cluster_version().await?;
        let failed = |failure| Error::ReadCluster {
            cluster: key.to_string(),
            failure,
        };
        let path = DynamicObject::url_path(&version.resource(), Some(&key.namespace));
        let request = kube::core::Request::new(path)
            .get(&key.name, &GetParams::default())
            .map_err(|_| failed(KubeFailure::Other))?;
        let text = match self
            .mgmt()
            .request_text(request)
            .instrument(tracing::debug_span!("read_cluster"))
            .await
        {
            Ok(text) => text,
            Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(None),
            Err(e) => return Err(failed(KubeFailure::from_kube(&e))),
        };
        let cluster = capi::Cluster::from_slice(text.as_bytes()).map_err(|_| failed(KubeFailure::Other))?;
        let bytes = text.len();
        drop(text);
        let uid = cluster.uid().to_owned();
        let deletion_timestamp = match cluster.deletion_timestamp() {
            Some(t) => Some(t.parse::<Timestamp>().map_err(|_| failed(KubeFailure::Other))?),
            None => None,
        };
        let live = LiveCluster {
            key: key.clone(),
            uid,
            version,
            deletion_timestamp,
            cluster,
        };
        // Whoever read it, this is the Cluster now: the copy a later hook may use (see `hook_cache`).
        self.remember_cluster(&live, bytes);
        Ok(Some(live))
    }

    /// Reads the Cluster a request names and checks that it is the one the caller meant: `Ok(None)` when it does
    /// not exist, [`Error::StaleRequest`] when the request names another uid.
    pub(crate) async fn live_cluster(&self, cluster: &ClusterRef) -> Result<Option<LiveCluster>, Error> {
        let Some(live) = self.read_cluster(&cluster.key).await? else {
            return Ok(None);
        };
        same_uid(cluster, live).map(Some)
    }

    /// Like [`Executor::live_cluster`], but a missing Cluster is an error.
    pub(crate) async fn existing_cluster(&self, cluster: &ClusterRef) -> Result<LiveCluster, Error> {
        self.live_cluster(cluster)
            .await?
            .ok_or_else(|| Error::ReadCluster {
                cluster: cluster.key.to_string(),
                failure: KubeFailure::NotFound,
            })
    }
}

/// `live`, when it is the Cluster the request means: [`Error::StaleRequest`] when the request names another uid.
pub(crate) fn same_uid(cluster: &ClusterRef, live: LiveCluster) -> Result<LiveCluster, Error> {
    match &cluster.uid {
        Some(uid) if *uid != live.uid => Err(Error::StaleRequest {
            cluster: cluster.key.to_string(),
        }),
        _ => Ok(live),
    }
}
