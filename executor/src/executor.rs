//! The [`Executor`]: the management cluster client, the configuration, and the parts the workflows share. Each
//! part owns its state and its methods: reading Clusters (`cluster`, with the hooks' copies of `hook_cache`),
//! workload clients (`remote`), the defaults ConfigMaps (`defaults`), Events (`events`), the shared Prism Central
//! checks (`prism_shared`), and the per-Cluster memories (`memory`: locks, what was applied, uninstalls seen, the
//! reconciler's, the last preflight and Prism Central warning). The workflows live beside it: `apply` (ApplyAgent
//! and PlanAgent), `uninstall` (RemoveAgent), `status` (GetAgentStatus), `preflight`, and `reconcile`.

use std::sync::Arc;

use kube::Client;

use crate::{
    cluster::Clusters,
    config::ExecutorConfig,
    defaults::Defaults,
    domain::ClusterKey,
    error::Side,
    events::Events,
    hook_cache::HookCache,
    memory::Memory,
    observe::{ExecutorMetrics, observed_client},
    prism_shared::SharedChecks,
    remote::Workloads,
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
    pub(crate) metrics: ExecutorMetrics,
    /// Cluster reads, in the served API version, and the hooks' copies.
    pub(crate) clusters: Clusters,
    /// Workload cluster clients.
    pub(crate) workloads: Workloads,
    /// Watches on the two defaults ConfigMaps, started on first use.
    pub(crate) defaults: Defaults,
    /// Events on Clusters.
    pub(crate) events: Events,
    /// Everything remembered per Cluster (see `memory`).
    pub(crate) memory: Memory,
    /// The Prism Central checks, shared per endpoint, trust settings and credentials (see `prism_shared`).
    pub(crate) prism_checks: SharedChecks,
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
        let hooks = HookCache::new(
            mgmt.clone(),
            config.cluster_namespaces.clone(),
            config.hook_cluster_cache_bytes,
            metrics.clone(),
        );
        let prism_checks = SharedChecks::new(
            config.prism_central_check_ttl,
            config.prism_central_check_failure_ttl,
            crate::prism_shared::MAX_SHARED_CHECKS,
            metrics.prism_probes_in_flight_gauge(),
        );
        Self {
            inner: Arc::new(Inner {
                clusters: Clusters::new(mgmt.clone(), hooks, metrics.clone()),
                workloads: Workloads::new(mgmt.clone(), &config, metrics.clone()),
                defaults: Defaults::new(mgmt.clone(), &config),
                events: Events::new(mgmt.clone()),
                memory: Memory::new(config.prism_central_warning_interval),
                prism_checks,
                mgmt,
                config,
                metrics,
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

    /// Reads of CAPI Clusters.
    pub(crate) fn clusters(&self) -> &Clusters {
        &self.inner.clusters
    }

    /// Workload cluster clients.
    pub(crate) fn workloads(&self) -> &Workloads {
        &self.inner.workloads
    }

    /// The defaults ConfigMaps.
    pub(crate) fn defaults(&self) -> &Defaults {
        &self.inner.defaults
    }

    /// Events on Clusters.
    pub(crate) fn events(&self) -> &Events {
        &self.inner.events
    }

    /// The per-Cluster memories.
    pub(crate) fn memory(&self) -> &Memory {
        &self.inner.memory
    }

    /// Drops every per-Cluster memory of a Cluster that no longer exists, so those maps stay as large as the set of
    /// live Clusters.
    pub(crate) fn forget_cluster(&self, key: &ClusterKey) {
        self.inner.memory.forget(key);
        // The adapters' caches: the workload client, and the hooks' copy of the Cluster.
        self.inner.workloads.forget(key);
        self.inner.clusters.hooks().forget(key);
    }
}
