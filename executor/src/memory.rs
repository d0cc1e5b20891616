//! What this process remembers per Cluster between calls: the per-Cluster locks, what it last applied, which
//! uninstalls it saw under way, the reconciler's memories, the last Prism Central preflight and warning. All of it is lost on restart, by design: the live
//! management cluster is the truth, and each memory only saves work or words, never decides an outcome alone.
//!
//! The workflows (`apply`, `uninstall`, `reconcile`, `status`) read and write it; `Executor::forget_cluster` drops a
//! Cluster from all of it (and from the adapters' caches) once the Cluster is gone.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use tokio::sync::OwnedMutexGuard;

use crate::{
    domain::ClusterKey,
    drift::WorkloadExpect,
    prism::PreflightMemory,
    prism_warnings::{MAX_WARNED_CLUSTERS, PrismWarnings},
};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a single insert, read or removal, so a poisoned lock holds consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The per-Cluster memories of this process.
pub(crate) struct Memory {
    /// One async lock per Cluster, held by every workflow that writes.
    pub(crate) locks: ClusterLocks,
    /// What this process last applied per Cluster, so a re-apply skips writes that cannot change anything.
    applied: Mutex<HashMap<ClusterKey, Applied>>,
    /// Clusters whose uninstall this process has seen under way, so that "nothing left" can be reported as
    /// COMPLETED rather than NOT_NEEDED. Lost on restart; `done` is the same either way.
    uninstalls_seen: Mutex<HashSet<ClusterKey>>,
    /// The reconciler's state: last result per Cluster, last applied chart per Cluster (see `reconcile`).
    pub(crate) reconciler: ReconcilerState,
    /// Each Cluster's last Prism Central preflight, for GetAgentStatus (bounded, see `prism`).
    pub(crate) preflights: PreflightMemory,
    /// Which Cluster was warned about which failed check, so the Warning Event is not repeated on every hook
    /// (bounded, see `prism_warnings`).
    pub(crate) prism_warnings: PrismWarnings,
}

impl Memory {
    /// `warning_interval`: how often the same failed Prism Central check is written as a Warning Event per
    /// Cluster (`--prism-central-warning-interval`).
    pub(crate) fn new(warning_interval: std::time::Duration) -> Self {
        Self {
            locks: ClusterLocks::default(),
            applied: Mutex::default(),
            uninstalls_seen: Mutex::default(),
            reconciler: ReconcilerState::default(),
            preflights: PreflightMemory::default(),
            prism_warnings: PrismWarnings::new(warning_interval, MAX_WARNED_CLUSTERS),
        }
    }

    /// Drops everything remembered of a Cluster that no longer exists (the locks go by themselves once nobody
    /// holds them).
    pub(crate) fn forget(&self, key: &ClusterKey) {
        lock(&self.uninstalls_seen).remove(key);
        self.forget_applied(key);
        self.reconciler.forget(key);
        self.forget_prism(key);
    }

    /// Drops a Cluster's last preflight and Prism Central warning, once its uninstall is done.
    pub(crate) fn forget_prism(&self, key: &ClusterKey) {
        self.preflights.forget(key);
        self.prism_warnings.forget(key);
    }

    /// What this process last applied for a Cluster, if anything.
    pub(crate) fn last_applied(&self, key: &ClusterKey) -> Option<Applied> {
        lock(&self.applied).get(key).cloned()
    }

    pub(crate) fn remember_applied(&self, key: &ClusterKey, applied: Applied) {
        lock(&self.applied).insert(key.clone(), applied);
    }

    /// Forgets what was applied for a Cluster, so the next apply writes everything again.
    pub(crate) fn forget_applied(&self, key: &ClusterKey) {
        lock(&self.applied).remove(key);
    }

    /// Whether this process has seen the Cluster's uninstall under way; `mark` records that it is now.
    pub(crate) fn uninstall_seen(&self, key: &ClusterKey, mark: bool) -> bool {
        let mut seen = lock(&self.uninstalls_seen);
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
        let cluster_lock = {
            let mut locks = lock(&self.locks);
            // Forget the locks nobody holds or waits for: only this map refers to them.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(key.clone()).or_default().clone()
        };
        cluster_lock.lock_owned().await
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.locks).len()
    }
}

/// The reconciler's last pass over one Cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastReconcile {
    /// When it finished.
    pub at: Timestamp,
    /// What it did, in one deterministic, secret-free phrase.
    pub result: String,
}

/// What the reconciler remembers, per process.
#[derive(Default)]
pub(crate) struct ReconcilerState {
    pub(crate) last: Mutex<HashMap<ClusterKey, LastReconcile>>,
    /// The chart fields last seen on each Cluster's HelmChartProxy, to restore a deleted one without changing its
    /// chart. Lost on failover: the new leader then restores from the ConfigMaps (see docs/design.md, known gaps).
    pub(crate) applied_chart: Mutex<HashMap<ClusterKey, Value>>,
    /// What the workload objects held at each Cluster's last full pass, for the cheap periodic check. Cleared when
    /// this replica starts leading: what changed while it did not lead is only found by a full pass.
    pub(crate) expect: Mutex<HashMap<ClusterKey, WorkloadExpect>>,
    /// The credentials Secret each Cluster referenced at its last full pass: a watch event on that Secret is a
    /// rotation to copy now.
    pub(crate) credentials: Mutex<HashMap<ClusterKey, String>>,
}

impl ReconcilerState {
    pub(crate) fn last(&self, key: &ClusterKey) -> Option<LastReconcile> {
        lock(&self.last).get(key).cloned()
    }

    /// Drops the reconciler's memories of a Cluster.
    pub(crate) fn forget(&self, key: &ClusterKey) {
        lock(&self.last).remove(key);
        lock(&self.applied_chart).remove(key);
        lock(&self.expect).remove(key);
        lock(&self.credentials).remove(key);
    }

    /// The Clusters whose last full pass read the credentials Secret `namespace/name`.
    pub(crate) fn clusters_using_secret(&self, namespace: &str, name: &str) -> Vec<ClusterKey> {
        lock(&self.credentials)
            .iter()
            .filter(|(k, s)| k.namespace == namespace && s.as_str() == name)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
