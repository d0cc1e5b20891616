//! Reading the live Cluster: the only source of what konnector does for it. A request names a Cluster; everything
//! else comes from here.

use k8s_openapi::jiff::Timestamp;
use konnector_proto::capi;
use kube::{
    Client, Resource,
    api::{DynamicObject, GetParams},
};
use tracing::Instrument;

use crate::{
    domain::{ClusterKey, ClusterRef, LiveCluster},
    error::{Error, KubeFailure, Side},
    hook_cache::HookCache,
    names::ClusterVersion,
    observe::ExecutorMetrics,
};

/// Reads of CAPI Clusters on the management cluster, in the Cluster API version it serves, and the hooks' copies of
/// them (see `hook_cache`).
pub(crate) struct Clusters {
    mgmt: Client,
    /// The Cluster API version the management cluster serves, discovered on first use.
    version: tokio::sync::OnceCell<ClusterVersion>,
    hooks: HookCache,
    metrics: ExecutorMetrics,
}

impl Clusters {
    pub(crate) fn new(mgmt: Client, hooks: HookCache, metrics: ExecutorMetrics) -> Self {
        Self {
            mgmt,
            version: tokio::sync::OnceCell::new(),
            hooks,
            metrics,
        }
    }

    /// The hooks' watch and Cluster copies.
    pub(crate) fn hooks(&self) -> &HookCache {
        &self.hooks
    }

    /// The version of CAPI's Cluster API to read, discovered once from the management cluster's API group list
    /// (which every authenticated client may read). A failed discovery is not cached, so it is retried next time.
    pub(crate) async fn version(&self) -> Result<ClusterVersion, Error> {
        self.version
            .get_or_try_init(|| async {
                let groups = self
                    .mgmt
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
    pub(crate) async fn read(&self, key: &ClusterKey) -> Result<Option<LiveCluster>, Error> {
        let version = self.version().await?;
        let failed = |failure| Error::ReadCluster {
            cluster: key.to_string(),
            failure,
        };
        let path = DynamicObject::url_path(&version.resource(), Some(&key.namespace));
        let request = kube::core::Request::new(path)
            .get(&key.name, &GetParams::default())
            .map_err(|_| failed(KubeFailure::Other))?;
        let text = match self
            .mgmt
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
        self.hooks.remember(&live, bytes);
        Ok(Some(live))
    }

    /// Reads the Cluster a request names and checks that it is the one the caller meant: `Ok(None)` when it does
    /// not exist, [`Error::StaleRequest`] when the request names another uid.
    pub(crate) async fn live(&self, cluster: &ClusterRef) -> Result<Option<LiveCluster>, Error> {
        let Some(live) = self.read(&cluster.key).await? else {
            return Ok(None);
        };
        same_uid(cluster, live).map(Some)
    }

    /// Like [`Clusters::live`], but a missing Cluster is an error.
    pub(crate) async fn existing(&self, cluster: &ClusterRef) -> Result<LiveCluster, Error> {
        self.live(cluster).await?.ok_or_else(|| Error::ReadCluster {
            cluster: cluster.key.to_string(),
            failure: KubeFailure::NotFound,
        })
    }

    /// The Cluster a hook names, checked as [`Clusters::existing`] checks it: the hooks' copy when the request's
    /// resourceVersion is the one the watch holds and the copy's, else the live Cluster. The watch starts with the
    /// first hook that carries a version, once the Cluster API version is known (a failed discovery is said by the
    /// live read that follows).
    pub(crate) async fn for_hook(&self, cluster: &ClusterRef) -> Result<LiveCluster, Error> {
        if let Some(rv) = &cluster.resource_version
            && self.hooks.enabled()
            && let Ok(version) = self.version().await
            && let Some(copy) = self.hooks.current(version, &cluster.key, rv).await
        {
            self.metrics.hook_cluster_read("cache");
            return same_uid(cluster, copy);
        }
        self.metrics.hook_cluster_read("live");
        self.existing(cluster).await
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
