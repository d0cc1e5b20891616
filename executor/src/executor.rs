//! The [`Executor`]: the management cluster client, the configuration, and the per-process state the workflows
//! share (workload clients, per-cluster locks, the Cluster API version). The workflows live beside it: `apply`
//! (ApplyAgent and PlanAgent), `uninstall` (RemoveAgent), `status` (GetAgentStatus).

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::{Client, runtime::events::Recorder};
use tokio::sync::OwnedMutexGuard;
use tracing::Instrument;

use crate::{
    config::ExecutorConfig,
    domain::ClusterKey,
    error::{Error, KubeFailure, Side},
    names::ClusterVersion,
    observe::{ExecutorMetrics, observed_client},
    remote::RemoteClients,
};

/// The executor: the management cluster client, the configuration, and a cache of workload cluster clients.
/// Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) mgmt: Client,
    pub(crate) config: ExecutorConfig,
    pub(crate) remotes: RemoteClients,
    /// Clusters whose uninstall this process has seen under way, so that "nothing left" can be reported as
    /// COMPLETED rather than NOT_NEEDED. Lost on restart; `done` is the same either way.
    pub(crate) uninstalls_seen: Mutex<HashSet<ClusterKey>>,
    pub(crate) locks: ClusterLocks,
    /// The Cluster API version the management cluster serves, discovered on first use.
    pub(crate) cluster_version: tokio::sync::OnceCell<ClusterVersion>,
    /// Watches on the two defaults ConfigMaps, started on first use.
    pub(crate) defaults: tokio::sync::OnceCell<crate::defaults::WatchedConfigMaps>,
    /// What this process last applied per Cluster, so a re-apply skips writes that cannot change anything.
    pub(crate) applied: Mutex<HashMap<ClusterKey, Applied>>,
    pub(crate) metrics: ExecutorMetrics,
    pub(crate) recorder: Recorder,
    /// Each Cluster's last Prism Central preflight, for GetAgentStatus.
    pub(crate) preflights: crate::prism::PreflightMemory,
    /// The Prism Central checks, shared per endpoint, trust settings and credentials (see `prism_shared`).
    pub(crate) prism_checks: crate::prism_shared::SharedChecks,
    /// Which Cluster was warned about which failed check, so the Warning Event is not repeated on every hook.
    pub(crate) prism_warnings: crate::prism_warnings::PrismWarnings,
    /// The reconciler's state: last result per Cluster, last applied chart per Cluster (see `reconcile`).
    pub(crate) reconciler: crate::reconcile::ReconcilerState,
    /// The hooks' Cluster watch and copies, started by the first hook that carries a resourceVersion (see
    /// `hook_cache`).
    pub(crate) hook_clusters: tokio::sync::OnceCell<crate::hook_cache::HookClusters>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// Creates an executor that works with `mgmt`, the management cluster client. Every call it makes through
    /// that client (and through the workload clients it builds) is traced and counted.
    pub fn new(mgmt: Client, config: ExecutorConfig) -> Self {
        let metrics = ExecutorMetrics::default();
        let mgmt = observed_client(
            mgmt,
            Side::Management,
            &metrics,
            config.management_response_limit_bytes,
        );
        let recorder = crate::events::recorder(&mgmt);
        let prism_checks = crate::prism_shared::SharedChecks::new(
            config.prism_central_check_ttl,
            config.prism_central_check_failure_ttl,
            crate::prism_shared::MAX_SHARED_CHECKS,
            metrics.prism_probes_in_flight_gauge(),
        );
        let prism_warnings = crate::prism_warnings::PrismWarnings::new(
            config.prism_central_warning_interval,
            crate::prism_warnings::MAX_WARNED_CLUSTERS,
        );
        Self {
            inner: Arc::new(Inner {
                mgmt,
                remotes: RemoteClients::new(
                    config.workload_client_cache_size,
                    config.workload_client_idle_timeout,
                ),
                config,
                uninstalls_seen: Mutex::default(),
                locks: ClusterLocks::default(),
                cluster_version: tokio::sync::OnceCell::new(),
                defaults: tokio::sync::OnceCell::new(),
                applied: Mutex::default(),
                metrics,
                recorder,
                preflights: Default::default(),
                prism_checks,
                prism_warnings,
                reconciler: Default::default(),
                hook_clusters: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// The executor's metrics.
    pub fn metrics(&self) -> &ExecutorMetrics {
        &self.inner.metrics
    }

    /// The configuration.
    pub fn config(&self) -> &ExecutorConfig {
        &self.inner.config
    }

    pub(crate) fn mgmt(&self) -> Client {
        self.inner.mgmt.clone()
    }

    /// The management cluster client as the executor uses it (traced, counted, responses bounded), for the
    /// binary's own calls such as the readiness check.
    pub fn management_client(&self) -> Client {
        self.mgmt()
    }

    /// Drops every per-Cluster memory of a Cluster that no longer exists, so those maps stay as large as the set of
    /// live Clusters.
    pub(crate) fn forget_cluster(&self, key: &ClusterKey) {
        self.inner
            .uninstalls_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        self.forget_applied(key);
        self.forget_remote(key);
        self.inner.preflights.forget(key);
        self.inner.prism_warnings.forget(key);
        self.forget_reconciled(key);
        self.forget_cluster_copy(key);
    }

    /// What this process last applied for a Cluster, if anything.
    pub(crate) fn last_applied(&self, key: &ClusterKey) -> Option<Applied> {
        self.inner
            .applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    pub(crate) fn remember_applied(&self, key: &ClusterKey, applied: Applied) {
        self.inner
            .applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), applied);
    }

    /// Forgets what was applied for a Cluster, so the next apply writes everything again.
    pub(crate) fn forget_applied(&self, key: &ClusterKey) {
        self.inner
            .applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    pub(crate) fn uninstall_seen(&self, key: &ClusterKey, mark: bool) -> bool {
        // A panic while holding this lock cannot leave the set inconsistent, so poisoning is ignored.
        let mut seen = self
            .inner
            .uninstalls_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if mark {
            seen.insert(key.clone());
        }
        seen.contains(key)
    }
}

/// What this process last applied for a Cluster. Kept in memory only: another replica, or this one after a
/// restart, simply writes everything once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Applied {
    /// The Cluster's uid: a Cluster re-created under the same name is another Cluster, with nothing applied yet.
    pub(crate) cluster_uid: String,
    /// The credentials Secret's resourceVersion the copy was made from.
    pub(crate) source_resource_version: String,
    /// The HelmChartProxy name written.
    pub(crate) hcp_name: String,
    /// Digest of the workload Namespace and Secret as applied (never logged; it only compares).
    pub(crate) workload: u64,
    /// The HelmChartProxy's resourceVersion after the apply.
    pub(crate) hcp_resource_version: String,
    /// Digest of the HelmChartProxy body written (in memory only): a hook that would write the same body onto the
    /// proxy still at `hcp_resource_version` skips the write (`hook_cache`).
    pub(crate) hcp_digest: u64,
    /// What resolving the HelmChartProxy's name noted then, repeated when the write is skipped.
    pub(crate) hcp_notes: Vec<String>,
}

/// One async lock per Cluster, so that ApplyAgent and RemoveAgent for the same Cluster never interleave inside
/// this process: several gateways share one executor, and an apply that read "not being deleted" must not write
/// after a concurrent remove found nothing left. Entries are dropped when nobody holds or waits for them, so the
/// map stays as small as the number of Clusters being worked on right now.
#[derive(Default)]
pub(crate) struct ClusterLocks {
    locks: Mutex<HashMap<ClusterKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl ClusterLocks {
    pub(crate) async fn lock(&self, key: &ClusterKey) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            // Forget the locks nobody holds or waits for: only this map refers to them.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(key.clone()).or_default().clone()
        };
        lock.lock_owned().await
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Runs one workload-cluster call with a bound, mapping every failure to an [`Error::Kube`].
pub(crate) async fn on_workload<T>(
    timeout: Duration,
    action: String,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, Error> {
    let span = tracing::debug_span!("workload_call", action = %action);
    match tokio::time::timeout(timeout, call).instrument(span).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::kube(action, Side::Workload, &e)),
        Err(_) => Err(Error::Kube {
            action,
            side: Side::Workload,
            failure: KubeFailure::Unreachable,
        }),
    }
}

/// `5m`, `90s`, `1h30m`: a fixed rendering of a configured duration, for messages.
pub(crate) fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(humanize(Duration::from_secs(300)), "5m");
        assert_eq!(humanize(Duration::from_secs(2)), "2s");
        assert_eq!(humanize(Duration::from_secs(90)), "1m30s");
        assert_eq!(humanize(Duration::from_secs(3600)), "1h");
    }

    #[tokio::test]
    async fn cluster_locks_serialise_one_cluster_and_forget_idle_ones() {
        let locks = Arc::new(ClusterLocks::default());
        let a = ClusterKey::new("ns", "a").unwrap();
        let b = ClusterKey::new("ns", "b").unwrap();
        let held = locks.lock(&a).await;
        // Another Cluster is not held up.
        let other = locks.lock(&b).await;
        drop(other);
        // The same Cluster waits until the holder lets go.
        let waiter = {
            let locks = locks.clone();
            let a = a.clone();
            tokio::spawn(async move {
                let _g = locks.lock(&a).await;
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        waiter.await.unwrap();
        // Taking any lock prunes the idle ones.
        drop(locks.lock(&b).await);
        let _g = locks.lock(&b).await;
        assert_eq!(locks.len(), 1);
    }
}
