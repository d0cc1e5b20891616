//! The reconciler's configuration: flags, their parsing, and which namespaces' Clusters it may act on.

use super::*;

/// How the reconciler behaves.
#[derive(Clone, Debug)]
pub struct ReconcileConfig {
    /// The period of the workload-side drift check, spread evenly over the Clusters (see `Schedule`).
    pub resync: Duration,
    /// Let chart version and values follow the ConfigMaps, instead of changing at BeforeClusterUpgrade only.
    pub follow_defaults: bool,
    /// Uninstall the agent when `konnectorAgent` is removed from a running Cluster.
    pub uninstall_removed: bool,
    /// The Lease that chooses the replica that reconciles.
    pub lease: LeaseConfig,
    /// Clusters reconciled at once (per watched namespace). Bounds the connections and memory a pass over every
    /// Cluster takes: unbounded, the first pass over 1000 Clusters opened 1000 workload connections at once.
    pub concurrency: u16,
    /// Namespaces whose Clusters are watched, one watch each; empty: all namespaces, one cluster-wide watch.
    /// Set it when the executor's rights are confined to some namespaces (the chart's
    /// `executor.clusterNamespaces`), where a cluster-wide list is forbidden.
    pub namespaces: Vec<String>,
    /// Objects per page when the watches list Clusters and HelmChartProxies (metadata only): bounds what one
    /// list response may cost.
    pub page_size: u32,
    /// The ExtensionConfig's `namespaceSelector`: Clusters in namespaces it does not select get no hooks from
    /// CAPI, so the reconciler leaves them alone too. `None` (or an empty selector): every namespace.
    pub namespace_selector: Option<LabelSelector>,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(300),
            follow_defaults: false,
            uninstall_removed: false,
            lease: LeaseConfig::default(),
            concurrency: 8,
            namespaces: Vec::new(),
            page_size: 50,
            namespace_selector: None,
        }
    }
}

/// The reconciler's flags. The Lease lives in the executor's namespace (`--pod-namespace`).
#[derive(Clone, Debug, clap::Args)]
pub struct ReconcileArgs {
    /// Do not run the reconciler in this replica (hooks only).
    #[arg(long, env = "KONNECTOR_NO_RECONCILE")]
    pub no_reconcile: bool,
    /// The period of the workload-side drift check: each Cluster's workload Namespace and Secret are read once per
    /// period, at a slot of its own spread evenly over the period, so this bounds how long a workload-side drift
    /// lasts (e.g. 5m). Management-side changes (Clusters, HelmChartProxies, credentials Secrets) are seen by watches
    /// and repaired at once, whatever this is.
    #[arg(long, env = "KONNECTOR_RECONCILE_RESYNC", default_value = "5m", value_parser = humantime::parse_duration)]
    pub reconcile_resync: Duration,
    /// Let the reconciler move chart version and values to what the ConfigMaps say now, not only at
    /// BeforeClusterUpgrade.
    #[arg(long, env = "KONNECTOR_RECONCILE_FOLLOW_DEFAULTS")]
    pub reconcile_follow_defaults: bool,
    /// Let the reconciler uninstall the agent when `konnectorAgent` is removed from a running Cluster. Off by
    /// default: a bad ClusterClass patch must not wipe agents fleet-wide.
    #[arg(long, env = "KONNECTOR_RECONCILE_UNINSTALL_REMOVED")]
    pub reconcile_uninstall_removed: bool,
    /// Clusters reconciled at once: bounds the connections and memory of a pass over many Clusters.
    #[arg(long, env = "KONNECTOR_RECONCILE_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub reconcile_concurrency: u16,
    /// Watch Clusters and HelmChartProxies in these namespaces only (comma-separated), one watch each. Needed when
    /// the executor may act only in some namespaces; empty: all namespaces.
    #[arg(long, env = "KONNECTOR_RECONCILE_NAMESPACES", value_delimiter = ',')]
    pub reconcile_namespaces: Vec<String>,
    /// Objects per page when the reconciler lists Clusters and HelmChartProxies (metadata only).
    #[arg(long, env = "KONNECTOR_RECONCILE_PAGE_SIZE", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub reconcile_page_size: u32,
    /// The ExtensionConfig's namespaceSelector, as JSON (a LabelSelector; the chart renders it from the same value
    /// as the ExtensionConfig): the reconciler acts only on Clusters in namespaces it selects. Empty or `{}`: all.
    #[arg(long, env = "KONNECTOR_RECONCILE_NAMESPACE_SELECTOR", value_parser = parse_label_selector)]
    pub reconcile_namespace_selector: Option<LabelSelector>,
    /// This replica's identity in the reconciler Lease. Default: $HOSTNAME (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// How long the reconciler Lease outlives a leader that stopped renewing it (e.g. 15s).
    #[arg(long, env = "KONNECTOR_LEADER_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub leader_lease_duration: Duration,
    /// How often the leader renews the Lease and the others try to take it (e.g. 5s).
    #[arg(long, env = "KONNECTOR_LEADER_RETRY_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub leader_retry_interval: Duration,
}

impl ReconcileArgs {
    /// The reconciler configuration, or `None` when it is off. `namespace` is the executor's own.
    pub fn config(&self, namespace: &str) -> Option<ReconcileConfig> {
        if self.no_reconcile {
            return None;
        }
        let identity = self
            .pod_name
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("konnector-executor-{}", std::process::id()));
        Some(ReconcileConfig {
            resync: self.reconcile_resync,
            follow_defaults: self.reconcile_follow_defaults,
            uninstall_removed: self.reconcile_uninstall_removed,
            concurrency: self.reconcile_concurrency,
            namespaces: self.reconcile_namespaces.clone(),
            page_size: self.reconcile_page_size,
            namespace_selector: self
                .reconcile_namespace_selector
                .clone()
                .filter(|s| !selects_everything(s)),
            lease: LeaseConfig {
                namespace: namespace.to_owned(),
                identity,
                lease_duration: self.leader_lease_duration,
                retry_interval: self.leader_retry_interval,
                ..LeaseConfig::default()
            },
        })
    }
}

/// A LabelSelector from its JSON (what `toJson` renders in the chart); an empty string is no selector.
pub(super) fn parse_label_selector(text: &str) -> Result<LabelSelector, String> {
    if text.trim().is_empty() {
        return Ok(LabelSelector::default());
    }
    let selector: LabelSelector =
        serde_json::from_str(text).map_err(|e| format!("not a LabelSelector in JSON: {e}"))?;
    // Refused at start, not at the first pass: an operator value that the API server would reject.
    kube::core::Selector::try_from(selector.clone())
        .map_err(|e| format!("not a valid LabelSelector: {e}"))?;
    Ok(selector)
}

pub(super) fn selects_everything(s: &LabelSelector) -> bool {
    s.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
}

/// The namespaces the ExtensionConfig's `namespaceSelector` selects, from a label-selected, metadata-only watch on
/// Namespaces: the API server filters, so the process holds only the selected namespaces' metadata.
#[derive(Clone)]
pub(super) struct SelectedNamespaces {
    pub(super) store: reflector::Store<PartialObjectMeta<Namespace>>,
}

impl SelectedNamespaces {
    /// Starts the watch; it runs until `stop`.
    pub(super) fn start(
        client: kube::Client,
        selector: &LabelSelector,
        stop: CancellationToken,
    ) -> Option<Self> {
        let selector = match kube::core::Selector::try_from(selector.clone()) {
            Ok(s) => s,
            Err(e) => {
                // Checked when parsed; a selector that fails here selects nothing rather than everything.
                tracing::warn!(error = %e, "invalid namespaceSelector; the reconciler acts on no Cluster");
                return None;
            }
        };
        let (store, writer) = reflector::store();
        let api: Api<PartialObjectMeta<Namespace>> = Api::all(client);
        let events = reflector::reflector(
            writer,
            watcher::watcher(api, watcher::Config::default().labels_from(&selector))
                .modify(|m| m.managed_fields_mut().clear())
                .default_backoff(),
        );
        tokio::spawn(async move {
            let drain = events.for_each(|e| async move {
                if let Err(e) = e {
                    tracing::warn!(error = %crate::limits::brief(&e), "cannot watch the selected namespaces");
                }
            });
            tokio::select! {
                () = stop.cancelled() => {}
                () = drain => {}
            }
        });
        Some(Self { store })
    }

    /// Whether `namespace` is selected; `false` until the watch has listed (fail closed: a Cluster the hooks may
    /// not reach is never touched on a guess).
    pub(super) fn selects(&self, namespace: &str) -> bool {
        self.store.get(&reflector::ObjectRef::new(namespace)).is_some()
    }
}
