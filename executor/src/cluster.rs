//! Reading the live Cluster: the only source of what konnector does for it. A request names a Cluster; everything
//! else comes from here.

use konnector_proto::capi;
use kube::{Api, api::DynamicObject};
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
    pub(crate) async fn read_cluster(&self, key: &ClusterKey) -> Result<Option<LiveCluster>, Error> {
        let version = self.cluster_version().await?;
        let object = Api::<DynamicObject>::namespaced_with(self.mgmt(), &key.namespace, &version.resource())
            .get_opt(&key.name)
            .instrument(tracing::debug_span!("read_cluster"))
            .await
            .map_err(|e| Error::ReadCluster {
                cluster: key.to_string(),
                failure: KubeFailure::from_kube(&e),
            })?;
        let Some(object) = object else {
            return Ok(None);
        };
        let uid = object.metadata.uid.clone().unwrap_or_default();
        let deletion_timestamp = object.metadata.deletion_timestamp.as_ref().map(|t| t.0);
        let json = serde_json::to_value(&object).map_err(|_| Error::ReadCluster {
            cluster: key.to_string(),
            failure: KubeFailure::Other,
        })?;
        let cluster = capi::Cluster::from_json(json).map_err(|_| Error::ReadCluster {
            cluster: key.to_string(),
            failure: KubeFailure::Other,
        })?;
        Ok(Some(LiveCluster {
            key: key.clone(),
            uid,
            version,
            deletion_timestamp,
            cluster,
        }))
    }

    /// Reads the Cluster a request names and checks that it is the one the caller meant: `Ok(None)` when it does
    /// not exist, [`Error::StaleRequest`] when the request names another uid.
    pub(crate) async fn live_cluster(&self, cluster: &ClusterRef) -> Result<Option<LiveCluster>, Error> {
        let Some(live) = self.read_cluster(&cluster.key).await? else {
            return Ok(None);
        };
        if let Some(uid) = &cluster.uid
            && *uid != live.uid
        {
            return Err(Error::StaleRequest {
                cluster: cluster.key.to_string(),
            });
        }
        Ok(Some(live))
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
