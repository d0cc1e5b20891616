//! The reconciler: keeps every Cluster that uses the addon converged between hooks, in the one replica that holds
//! the reconciler Lease (see `leader`).
//!
//! It is a kube-runtime `Controller` over CAPI Clusters that also watches HelmChartProxies (through their
//! ownerReference to the Cluster), so a Cluster edit or a deleted/edited HelmChartProxy is reconciled at once, and
//! every Cluster is requeued every `resync` for what no watch on the management cluster can see: a rotated
//! credentials Secret, and drift on the workload cluster.
//!
//! Secrets are never watched or listed: each pass GETs the one credentials Secret the Cluster references (in
//! `plan_for`, the hooks' own path), so the process holds no Secret it is not about to copy. The watch caches
//! hold Clusters and HelmChartProxies only.
//!
//! A pass reads what is there, compares it with the plan the hooks would write, and writes through the hooks'
//! own `write_plan` (same bytes, same field manager, same per-Cluster lock) only when something differs. By
//! default it keeps CAREN's semantics for the chart: the chart coordinates and values of an existing
//! HelmChartProxy are kept (they change at BeforeClusterUpgrade), and a deleted one is restored with the chart
//! last seen on it; `follow_defaults` makes them follow the ConfigMaps instead.
//!
//! When the credentials change, the agent is rolled by stamping the time of the rotation on its Deployment's pod
//! template (`konnector.nutanix.com/credentials-rotated-at`). Not a checksum in the chart values: a values change
//! would upgrade the Helm release on every rotation (against CAREN's semantics), and a digest of a short password
//! in a HelmChartProxy that many can read is an offline-guessing oracle. A timestamp reveals nothing.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Namespace, Secret},
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, DynamicObject, Patch, PatchParams},
    core::PartialObjectMeta,
    runtime::{
        Controller, WatchStreamExt, controller, controller::Action, events::EventType, reflector, watcher,
    },
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{
    domain::{ClusterKey, LiveCluster, agent_request},
    error::{Error, Side},
    executor::{Executor, on_workload},
    leader::{LeaderElector, LeaseConfig},
    names::{AGENT_NAME, FIELD_MANAGER, RELEASE_NAMESPACE, REMOTE_SECRET_NAME, hcp_resource},
    objects::helm_chart_proxy_name_for,
};

/// The pod-template annotation that rolls the agent when its credentials change.
pub const CREDENTIALS_ROTATED_ANNOTATION: &str = "konnector.nutanix.com/credentials-rotated-at";
/// The HelmChartProxy spec fields that carry the chart and its values: kept as they are unless
/// `follow_defaults`.
/// CAREN's field manager, on the HelmChartProxy and the workload Secret it applies (see `co_managed_by_caren`).
const CAREN_FIELD_MANAGER: &str = "cluster-api-runtime-extensions-nutanix";
const CHART_FIELDS: [&str; 5] = ["repoURL", "chartName", "version", "valuesTemplate", "tlsConfig"];

/// How the reconciler behaves.
#[derive(Clone, Debug)]
pub struct ReconcileConfig {
    /// Every Cluster is looked at again after this long (credentials rotation, workload drift).
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
            resync: Duration::from_secs(30),
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
    /// How often every Cluster is reconciled even when nothing on the management cluster changed: the bound on
    /// how long a rotated credential or a workload-side drift takes to be repaired (e.g. 30s).
    #[arg(long, env = "KONNECTOR_RECONCILE_RESYNC", default_value = "30s", value_parser = humantime::parse_duration)]
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
fn parse_label_selector(text: &str) -> Result<LabelSelector, String> {
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

fn selects_everything(s: &LabelSelector) -> bool {
    s.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
}

/// The namespaces the ExtensionConfig's `namespaceSelector` selects, from a label-selected, metadata-only watch on
/// Namespaces: the API server filters, so the process holds only the selected namespaces' metadata.
#[derive(Clone)]
struct SelectedNamespaces {
    store: reflector::Store<PartialObjectMeta<Namespace>>,
}

impl SelectedNamespaces {
    /// Starts the watch; it runs until `stop`.
    fn start(client: kube::Client, selector: &LabelSelector, stop: CancellationToken) -> Option<Self> {
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
    fn selects(&self, namespace: &str) -> bool {
        self.store.get(&reflector::ObjectRef::new(namespace)).is_some()
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
    last: Mutex<HashMap<ClusterKey, LastReconcile>>,
    /// The chart fields last seen on each Cluster's HelmChartProxy, to restore a deleted one without changing its
    /// chart. Lost on failover: the new leader then restores from the ConfigMaps (see README, known gaps).
    applied_chart: Mutex<HashMap<ClusterKey, Value>>,
}

/// What one pass did.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    InSync,
    Repaired { rotated: bool, what: Vec<String> },
    Installed,
    Uninstalled,
    Skipped(&'static str),
}

impl Outcome {
    fn metric(&self) -> &'static str {
        match self {
            Self::InSync => "in_sync",
            Self::Repaired { rotated: true, .. } => "rotated",
            Self::Repaired { .. } => "repaired",
            Self::Installed => "installed",
            Self::Uninstalled => "uninstalled",
            Self::Skipped(_) => "skipped",
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::InSync => "in sync".to_owned(),
            Self::Repaired { what, .. } => format!("repaired: {}", what.join("; ")),
            Self::Installed => "installed".to_owned(),
            Self::Uninstalled => "uninstalled: konnectorAgent was removed from the Cluster".to_owned(),
            Self::Skipped(why) => format!("skipped: {why}"),
        }
    }
}

/// Why a pass over a Cluster that no longer exists did nothing.
const GONE: &str = "the Cluster is gone";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a single insert or read, so a poisoned lock holds consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Executor {
    pub(crate) fn last_reconcile(&self, key: &ClusterKey) -> Option<LastReconcile> {
        lock(&self.inner.reconciler.last).get(key).cloned()
    }

    /// Drops the reconciler's memories of a Cluster (see `Executor::forget_cluster`).
    pub(crate) fn forget_reconciled(&self, key: &ClusterKey) {
        lock(&self.inner.reconciler.last).remove(key);
        lock(&self.inner.reconciler.applied_chart).remove(key);
    }

    /// One pass over one Cluster, recorded for GetAgentStatus and counted.
    async fn reconcile_and_record(&self, key: &ClusterKey, config: &ReconcileConfig) {
        let result = self.reconcile_cluster(key, config).await;
        let (metric, text) = match &result {
            Ok(o) => (o.metric(), o.describe()),
            Err(e) => ("error", format!("error: {e}")),
        };
        if let Err(e) = &result {
            tracing::warn!(error = %crate::limits::brief(e), "reconcile failed");
        } else {
            tracing::debug!(result = %text, "reconciled");
        }
        self.metrics().reconciled(metric);
        if matches!(result, Ok(Outcome::Skipped(GONE))) {
            // Nothing to report for a Cluster that no longer exists: its memories went with it (forget_cluster).
            return;
        }
        lock(&self.inner.reconciler.last).insert(
            key.clone(),
            LastReconcile {
                at: Timestamp::now(),
                // Kept for as long as the Cluster lives and answered by GetAgentStatus: bounded whatever it holds.
                result: crate::limits::sanitize(&text, crate::limits::MAX_MESSAGE_CHARS),
            },
        );
    }

    #[tracing::instrument(skip_all, fields(cluster.namespace = %key.namespace, cluster.name = %key.name))]
    async fn reconcile_cluster(&self, key: &ClusterKey, config: &ReconcileConfig) -> Result<Outcome, Error> {
        // The hooks' lock: a pass never interleaves with ApplyAgent or RemoveAgent for this Cluster in this
        // process. Across replicas, the same re-read after writing (`write_plan`) that protects the hooks applies.
        let _guard = self.inner.locks.lock(key).await;
        let Some(live) = self.read_cluster(key).await? else {
            // Every per-Cluster map stays as large as the set of live Clusters.
            self.forget_cluster(key);
            return Ok(Outcome::Skipped(GONE));
        };
        if live.deleting() {
            return Ok(Outcome::Skipped(
                "the Cluster is being deleted; RemoveAgent owns it",
            ));
        }
        if !live.cluster.control_plane_initialized() {
            return Ok(Outcome::Skipped(
                "the control plane is not initialised; AfterControlPlaneInitialized installs",
            ));
        }
        match agent_request(&live)? {
            Some(req) => self.converge(&live, &req, config).await,
            None if config.uninstall_removed => self.uninstall_removed(&live).await,
            None => Ok(Outcome::Skipped("the addon is not configured")),
        }
    }

    async fn converge(
        &self,
        live: &LiveCluster,
        req: &crate::domain::AgentRequest,
        config: &ReconcileConfig,
    ) -> Result<Outcome, Error> {
        let key = &live.key;
        let mut plan = self.plan_for(live, req).await?;
        let hcp_ref = format!("{}/{}", key.namespace, plan.hcp_name);
        let hcps: Api<DynamicObject> = Api::namespaced_with(self.mgmt(), &key.namespace, &hcp_resource());
        let current = hcps
            .get_opt(&plan.hcp_name)
            .await
            .map_err(|e| Error::kube(format!("read HelmChartProxy {hcp_ref}"), Side::Management, &e))?;
        if current
            .as_ref()
            .is_some_and(|h| h.metadata.deletion_timestamp.is_some())
        {
            return Ok(Outcome::Skipped("the HelmChartProxy is being deleted"));
        }
        if let Some(caren) = current.as_ref().filter(|h| co_managed_by_caren(h)) {
            // CAREN force-applies its whole HelmChartProxy at every one of its hooks, so its field manager always
            // co-owns the chart fields: that is CAREN's hook, not a hand edit. The chart there is whatever the last
            // hook (CAREN's or konnector's) set, and only a hook may change it: reverting it would undo a
            // BeforeClusterUpgrade, and following the ConfigMaps (even with `follow_defaults`) would downgrade a
            // fleet CAREN runs at a newer chart, and then flap with CAREN's next hook.
            pin_chart(&mut plan.hcp["spec"], &chart_fields(&caren.data["spec"]));
        } else if !config.follow_defaults {
            // The chart on the HelmChartProxy is what a hook applied, unless another manager wrote it: then it is
            // an edit to revert, to the chart last seen applied (or, lacking one, the ConfigMaps').
            let remembered = lock(&self.inner.reconciler.applied_chart).get(key).cloned();
            let applied = current
                .as_ref()
                .filter(|h| !chart_edited_by_others(h))
                .map(|h| chart_fields(&h.data["spec"]));
            if let Some(pinned) = applied.or(remembered) {
                pin_chart(&mut plan.hcp["spec"], &pinned);
            }
        }
        lock(&self.inner.reconciler.applied_chart).insert(key.clone(), chart_fields(&plan.hcp["spec"]));

        let mut what = Vec::new();
        let mut rotated = false;
        let remote = self.remote_client(key).await?;
        let timeout = self.inner.config.remote_timeout;
        let namespace = on_workload(timeout, format!("read Namespace {RELEASE_NAMESPACE}"), async {
            Api::<Namespace>::all(remote.clone())
                .get_opt(RELEASE_NAMESPACE)
                .await
        })
        .await?;
        let wanted_labels = plan.namespace["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let labels = namespace
            .as_ref()
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        if namespace.is_none() {
            what.push(format!("Namespace {RELEASE_NAMESPACE} missing"));
        } else if wanted_labels
            .iter()
            .any(|(k, v)| labels.get(k).map(String::as_str) != v.as_str())
        {
            what.push(format!("Namespace {RELEASE_NAMESPACE} labels changed"));
        }
        let secret = on_workload(
            timeout,
            format!("read Secret {RELEASE_NAMESPACE}/{REMOTE_SECRET_NAME}"),
            async {
                Api::<Secret>::namespaced(remote.clone(), RELEASE_NAMESPACE)
                    .get_opt(REMOTE_SECRET_NAME)
                    .await
            },
        )
        .await?;
        match &secret {
            None => what.push(format!("Secret {RELEASE_NAMESPACE}/{REMOTE_SECRET_NAME} missing")),
            Some(s) if !copied_keys_match(s, &plan.secret) || secret_type(s) != secret_type(&plan.secret) => {
                if copied_keys_edited_by_others(s, &plan.secret) {
                    what.push(format!("Secret {RELEASE_NAMESPACE}/{REMOTE_SECRET_NAME} edited"));
                } else {
                    // Only the two copiers (konnector, CAREN) wrote the keys konnector copies, and both copy the
                    // source verbatim, so a difference is the source's: a rotation, whoever copied last.
                    rotated = true;
                    what.push("credentials rotated".to_owned());
                }
            }
            Some(_) => {}
        }
        match &current {
            None => what.push(format!("HelmChartProxy {hcp_ref} missing")),
            Some(h) if !contains(&h.data["spec"], &plan.hcp["spec"]) || !owned_by(h, &live.uid) => {
                what.push(format!("HelmChartProxy {hcp_ref} edited"));
            }
            Some(_) => {}
        }
        if what.is_empty() {
            return Ok(Outcome::InSync);
        }
        let fresh = current.is_none() && secret.is_none();
        self.write_plan(live, plan, crate::apply::WorkloadWrite::Always)
            .await?;
        if rotated {
            self.roll_agent(key).await;
            self.record_event(
                live,
                EventType::Normal,
                "CredentialsRotated",
                "Reconcile",
                format!(
                    "rotated credentials copied to Secret {RELEASE_NAMESPACE}/{REMOTE_SECRET_NAME} on the workload cluster; the agent was restarted"
                ),
            )
            .await;
        }
        let drift: Vec<&String> = what.iter().filter(|w| *w != "credentials rotated").collect();
        if fresh {
            self.record_event(
                live,
                EventType::Normal,
                "AgentInstalled",
                "Reconcile",
                "Konnector Agent installed by the reconciler: the addon was enabled on a running Cluster"
                    .to_owned(),
            )
            .await;
            return Ok(Outcome::Installed);
        }
        if !drift.is_empty() {
            self.record_event(
                live,
                EventType::Normal,
                "DriftRepaired",
                "Reconcile",
                format!(
                    "repaired: {}",
                    drift.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("; ")
                ),
            )
            .await;
        }
        Ok(Outcome::Repaired { rotated, what })
    }

    /// Restarts the agent so it reads the new credentials: stamps the rotation time on its pod template. Best
    /// effort; an agent not deployed yet will read the new Secret when it starts.
    async fn roll_agent(&self, key: &ClusterKey) {
        let Ok(remote) = self.remote_client(key).await else {
            return;
        };
        let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
            CREDENTIALS_ROTATED_ANNOTATION: Timestamp::now().to_string(),
        }}}}});
        let deployments: Api<Deployment> = Api::namespaced(remote, RELEASE_NAMESPACE);
        let result = on_workload(
            self.inner.config.remote_timeout,
            format!("restart Deployment {RELEASE_NAMESPACE}/{AGENT_NAME}"),
            async {
                match deployments
                    .patch(
                        AGENT_NAME,
                        &PatchParams::apply(FIELD_MANAGER),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
                    Err(e) => Err(e),
                }
            },
        )
        .await;
        match result {
            Ok(true) => tracing::info!("agent restarted for rotated credentials"),
            Ok(false) => tracing::debug!("no agent Deployment to restart yet"),
            Err(e) => tracing::warn!(error = %e, "cannot restart the agent"),
        }
    }

    /// `konnectorAgent` was removed from a running Cluster and the operator opted in: deletes the HelmChartProxy
    /// konnector made for it (CAAPH uninstalls the release) and the credentials copy on the workload cluster.
    async fn uninstall_removed(&self, live: &LiveCluster) -> Result<Outcome, Error> {
        let key = &live.key;
        let name = helm_chart_proxy_name_for(&key.name, &live.annotations());
        let hcp_ref = format!("{}/{name}", key.namespace);
        let hcps: Api<DynamicObject> = Api::namespaced_with(self.mgmt(), &key.namespace, &hcp_resource());
        let current = hcps
            .get_opt(&name)
            .await
            .map_err(|e| Error::kube(format!("read HelmChartProxy {hcp_ref}"), Side::Management, &e))?;
        // Only an object this Cluster owns is konnector's to delete.
        let Some(current) = current.filter(|h| owned_by(h, &live.uid)) else {
            return Ok(Outcome::Skipped("the addon is not configured"));
        };
        if current.metadata.deletion_timestamp.is_none() {
            match hcps.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    return Err(Error::kube(
                        format!("delete HelmChartProxy {hcp_ref}"),
                        Side::Management,
                        &e,
                    ));
                }
            }
        }
        lock(&self.inner.reconciler.applied_chart).remove(key);
        // What the hooks remember writing is gone now; a later re-enable must write again.
        self.forget_applied(key);
        let remote = self.remote_client(key).await?;
        on_workload(
            self.inner.config.remote_timeout,
            format!("delete Secret {RELEASE_NAMESPACE}/{REMOTE_SECRET_NAME}"),
            async {
                match Api::<Secret>::namespaced(remote, RELEASE_NAMESPACE)
                    .delete(REMOTE_SECRET_NAME, &DeleteParams::default())
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                    Err(e) => Err(e),
                }
            },
        )
        .await?;
        self.record_event(
            live,
            EventType::Normal,
            "AgentUninstalled",
            "Reconcile",
            format!("konnectorAgent was removed from the Cluster: HelmChartProxy {hcp_ref} deleted"),
        )
        .await;
        Ok(Outcome::Uninstalled)
    }
}

fn chart_fields(spec: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for field in CHART_FIELDS {
        if let Some(v) = spec.get(field) {
            out.insert(field.to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

fn pin_chart(spec: &mut Value, pinned: &Value) {
    let Some(spec) = spec.as_object_mut() else { return };
    for field in CHART_FIELDS {
        match pinned.get(field) {
            Some(v) => spec.insert(field.to_owned(), v.clone()),
            None => spec.remove(field),
        };
    }
}

/// Whether every field of `wanted` is in `have` with the same value (extra fields in `have`, e.g. API server
/// defaults, are fine).
fn contains(have: &Value, wanted: &Value) -> bool {
    match (have, wanted) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| contains(hv, wv))),
        _ => have == wanted,
    }
}

fn owned_by(hcp: &DynamicObject, uid: &str) -> bool {
    hcp.metadata
        .owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|r| r.uid == uid))
}

/// Whether a manager other than konnector owns one of the HelmChartProxy's chart fields.
fn chart_edited_by_others(hcp: &DynamicObject) -> bool {
    hcp.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() != Some(FIELD_MANAGER)
            && m.fields_v1.as_ref().is_some_and(|f| {
                CHART_FIELDS
                    .iter()
                    .any(|field| f.0["f:spec"].get(format!("f:{field}")).is_some())
            })
    })
}

/// A Secret's type as the API server reads it: unset means Opaque.
fn secret_type(s: &Secret) -> &str {
    s.type_.as_deref().unwrap_or("Opaque")
}

/// Whether the workload Secret holds every key konnector copies with the value it copies. Other keys are not
/// konnector's: CAREN copies the source Secret whole, so a key konnector leaves out (an `apiKey`, say) may sit
/// there, owned by CAREN, and comparing it would find a difference no write of konnector's can remove.
fn copied_keys_match(have: &Secret, wanted: &Secret) -> bool {
    let have = have.data.as_ref();
    wanted
        .data
        .iter()
        .flatten()
        .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
}

/// Whether a manager other than the two copiers (konnector, and CAREN, which also copies the source verbatim) owns
/// one of the keys konnector copies: then a difference there is an edit, not a rotation. Keys konnector does not
/// copy are not looked at.
fn copied_keys_edited_by_others(secret: &Secret, wanted: &Secret) -> bool {
    let keys: Vec<&String> = wanted.data.iter().flatten().map(|(k, _)| k).collect();
    secret.metadata.managed_fields.iter().flatten().any(|m| {
        !matches!(m.manager.as_deref(), Some(FIELD_MANAGER | CAREN_FIELD_MANAGER))
            && m.fields_v1.as_ref().is_some_and(|f| {
                ["f:data", "f:stringData"].iter().any(|section| {
                    f.0.get(section)
                        .and_then(Value::as_object)
                        .is_some_and(|o| keys.iter().any(|k| o.contains_key(&format!("f:{k}"))))
                })
            })
    })
}

/// Whether CAREN's field manager co-owns one of the HelmChartProxy's chart fields: CAREN applied it.
fn co_managed_by_caren(hcp: &DynamicObject) -> bool {
    hcp.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(CAREN_FIELD_MANAGER)
            && m.fields_v1.as_ref().is_some_and(|f| {
                CHART_FIELDS
                    .iter()
                    .any(|field| f.0["f:spec"].get(format!("f:{field}")).is_some())
            })
    })
}

/// Runs the reconciler until `shutdown`: competes for the Lease, and while this replica holds it, runs the
/// Controller. Returns when `shutdown` is cancelled, giving the Lease up.
pub async fn run(executor: Executor, config: ReconcileConfig, shutdown: CancellationToken) {
    let mut elector = LeaderElector::new(executor.mgmt(), config.lease.clone());
    tracing::info!(identity = %config.lease.identity, lease = %config.lease.name, "reconciler competing for the Lease");
    loop {
        let leading = match elector.try_acquire_or_renew().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %crate::limits::brief(&e), "cannot read or take the reconciler Lease");
                false
            }
        };
        if leading {
            tracing::info!("this replica leads the reconciler");
            executor.metrics().leader(true);
            let lost = CancellationToken::new();
            // Aborted when dropped, so the Controller never outlives this loop (not even when the task running it
            // is aborted): a replica that no longer leads must not reconcile.
            let controller = AbortOnDrop(tokio::spawn(run_controller(
                executor.clone(),
                config.clone(),
                lost.clone(),
            )));
            // Renew until the Lease is lost or we shut down.
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(config.lease.retry_interval) => {}
                }
                match elector.try_acquire_or_renew().await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!("the reconciler Lease was taken by another replica");
                        break;
                    }
                    Err(e) => {
                        // Stepping down on the first failed renewal is conservative: two leaders are worse than a
                        // few seconds without one.
                        tracing::warn!(error = %crate::limits::brief(&e), "cannot renew the reconciler Lease; stepping down");
                        break;
                    }
                }
            }
            lost.cancel();
            drop(controller);
            executor.metrics().leader(false);
        }
        if shutdown.is_cancelled() {
            if leading {
                elector.release().await;
            }
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(if leading { Duration::ZERO } else { config.lease.retry_interval }) => {}
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Context {
    executor: Executor,
    config: ReconcileConfig,
    /// `Some` when the reconciler is confined by a `namespaceSelector`; `Some(None)` for a selector that failed.
    selected: Option<Option<SelectedNamespaces>>,
}

async fn run_controller(executor: Executor, config: ReconcileConfig, stop: CancellationToken) {
    let version = loop {
        match executor.cluster_version().await {
            Ok(v) => break v,
            Err(e) => {
                tracing::warn!(error = %e, "reconciler cannot discover the Cluster API version");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(config.lease.retry_interval) => {}
                }
            }
        }
    };
    let selected = config
        .namespace_selector
        .as_ref()
        .map(|s| SelectedNamespaces::start(executor.mgmt(), s, stop.clone()));
    let context = Arc::new(Context {
        executor,
        config,
        selected,
    });
    // One Controller per watched namespace (or one for all): a confined executor may not list cluster-wide.
    let scopes: Vec<Option<String>> = if context.config.namespaces.is_empty() {
        vec![None]
    } else {
        context.config.namespaces.iter().cloned().map(Some).collect()
    };
    let controllers = scopes.into_iter().map(|scope| {
        let mgmt = context.executor.mgmt();
        let (clusters, hcps): (Api<ClusterMeta>, Api<ClusterMeta>) = match &scope {
            None => (
                Api::all_with(mgmt.clone(), &version.resource()),
                Api::all_with(mgmt, &hcp_resource()),
            ),
            Some(ns) => (
                Api::namespaced_with(mgmt.clone(), ns, &version.resource()),
                Api::namespaced_with(mgmt, ns, &hcp_resource()),
            ),
        };
        // Metadata only, without managedFields: a pass re-reads the live Cluster anyway, so the cache needs no
        // more than the keys and owner references, and 1000 whole Clusters (status, managedFields) cost the
        // process about a hundred MiB. An `Api` of `PartialObjectMeta` asks the API server for metadata only
        // (PartialObjectMetadata; kube's `metadata_watcher` is this since kube 3.1), so a tenant's large Clusters
        // never cross the wire here, and a list page holds at most `page_size` of them (kube's default is 500).
        // HelmChartProxies are not cached at all, only mapped to their owner.
        let watch_config = watcher::Config::default().page_size(context.config.page_size);
        let writer = reflector::store::Writer::<ClusterMeta>::new(version.resource());
        let reader = writer.as_reader();
        let cluster_events = reflector::reflector(
            writer,
            watcher::watcher(clusters, watch_config.clone())
                .modify(|m| m.managed_fields_mut().clear())
                .default_backoff(),
        )
        .touched_objects();
        let hcp_events = watcher::watcher(hcps, watch_config)
            .default_backoff()
            .touched_objects();
        Controller::for_stream_with(cluster_events, reader, version.resource())
            .owns_stream_with(hcp_events, hcp_resource())
            .with_config(controller::Config::default().concurrency(context.config.concurrency))
            .run(reconcile, error_policy, context.clone())
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(error = %crate::limits::brief(&e), "reconciler controller event");
                }
            })
    });
    let controller = futures::future::join_all(controllers);
    tokio::select! {
        () = stop.cancelled() => {}
        _ = controller => {}
    }
}

/// A Cluster (or a HelmChartProxy) as the reconciler watches it: metadata only.
type ClusterMeta = PartialObjectMeta<DynamicObject>;

async fn reconcile(
    cluster: Arc<ClusterMeta>,
    context: Arc<Context>,
) -> Result<Action, std::convert::Infallible> {
    let (Some(namespace), Some(name)) = (
        cluster.metadata.namespace.as_deref(),
        cluster.metadata.name.as_deref(),
    ) else {
        return Ok(Action::await_change());
    };
    let Ok(key) = ClusterKey::new(namespace, name) else {
        return Ok(Action::await_change());
    };
    if let Some(selected) = &context.selected
        && !selected.as_ref().is_some_and(|s| s.selects(namespace))
    {
        // CAPI sends this Cluster no hooks (the ExtensionConfig's namespaceSelector), so konnector does not act on
        // it either. No API call: looked at again in case the namespace's labels change.
        context.executor.metrics().reconciled("not_selected");
        return Ok(Action::requeue(context.config.resync));
    }
    context.executor.reconcile_and_record(&key, &context.config).await;
    Ok(Action::requeue(context.config.resync))
}

fn error_policy(_: Arc<ClusterMeta>, error: &std::convert::Infallible, _: Arc<Context>) -> Action {
    match *error {}
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use serde_json::json;

    use super::*;

    #[test]
    fn flags_default_to_a_reconciler_within_the_issue_bounds() {
        use clap::Parser;
        let args = crate::args::Args::try_parse_from(["konnector-executor", "--pod-name", "p-1"]).unwrap();
        let config = args.reconcile.config("konnector-system").unwrap();
        // Rotation and drift repaired within 60 s; failover within 30 s.
        assert_eq!(config.resync, Duration::from_secs(30));
        assert!(config.lease.lease_duration + config.lease.retry_interval <= Duration::from_secs(30));
        assert!(!config.follow_defaults && !config.uninstall_removed);
        assert_eq!(config.lease.identity, "p-1");
        assert_eq!(config.lease.namespace, "konnector-system");
        let off = crate::args::Args::try_parse_from(["konnector-executor", "--no-reconcile"]).unwrap();
        assert!(off.reconcile.config("x").is_none());
    }

    fn secret(data: &[(&str, &str)], managers: Value) -> Secret {
        serde_json::from_value(json!({
            "metadata": {"name": "konnector-agent", "managedFields": managers},
            "data": data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect::<std::collections::BTreeMap<_, _>>(),
        }))
        .unwrap()
    }

    fn manager(name: &str, keys: &[&str]) -> Value {
        let data: serde_json::Map<String, Value> =
            keys.iter().map(|k| (format!("f:{k}"), json!({}))).collect();
        json!({"manager": name, "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": data}})
    }

    #[test]
    fn only_the_copied_keys_are_compared_and_judged() {
        let wanted = secret(&[("username", "u"), ("password", "p")], json!([]));
        // CAREN copied the source whole: an extra key it owns is not a difference.
        let caren_copy = secret(
            &[("username", "u"), ("password", "p"), ("apiKey", "k")],
            json!([manager(CAREN_FIELD_MANAGER, &["username", "password", "apiKey"])]),
        );
        assert!(copied_keys_match(&caren_copy, &wanted));
        // A copied key missing or different is.
        assert!(!copied_keys_match(
            &secret(&[("username", "u")], json!([])),
            &wanted
        ));
        // Written by the copiers only: a difference is a rotation, even right after CAREN's copy.
        assert!(!copied_keys_edited_by_others(&caren_copy, &wanted));
        // Someone else owning a copied key: an edit. Owning a key konnector does not copy: not konnector's business.
        let edited = secret(&[("password", "x")], json!([manager("kubectl", &["password"])]));
        assert!(copied_keys_edited_by_others(&edited, &wanted));
        let extra = secret(&[("note", "x")], json!([manager("kubectl", &["note"])]));
        assert!(!copied_keys_edited_by_others(&extra, &wanted));
    }

    #[test]
    fn a_proxy_caren_applied_is_co_managed_by_caren() {
        let hcp = |manager: &str| -> DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": "addons.cluster.x-k8s.io/v1alpha1", "kind": "HelmChartProxy",
                "metadata": {"name": "p", "managedFields": [{"manager": manager, "operation": "Apply",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:version": {}}}}]},
                "spec": {"version": "1.4.0"},
            }))
            .unwrap()
        };
        assert!(co_managed_by_caren(&hcp(CAREN_FIELD_MANAGER)));
        assert!(!co_managed_by_caren(&hcp("kubectl")));
        assert!(!co_managed_by_caren(&hcp(FIELD_MANAGER)));
    }

    #[test]
    fn contains_ignores_extra_fields() {
        let have = json!({"a": 1, "b": {"c": 2, "d": 3}});
        assert!(contains(&have, &json!({"b": {"c": 2}})));
        assert!(!contains(&have, &json!({"b": {"c": 3}})));
        assert!(!contains(&have, &json!({"e": 1})));
    }

    #[test]
    fn pinning_keeps_the_chart_and_restores_the_rest() {
        let mut spec = json!({"version": "2", "valuesTemplate": "new", "releaseName": "r"});
        pin_chart(&mut spec, &json!({"version": "1", "valuesTemplate": "old"}));
        assert_eq!(
            spec,
            json!({"version": "1", "valuesTemplate": "old", "releaseName": "r"})
        );
    }

    #[test]
    fn outcomes_are_secret_free_phrases() {
        let o = Outcome::Repaired {
            rotated: true,
            what: vec!["credentials rotated".to_owned()],
        };
        assert_eq!(o.metric(), "rotated");
        assert_eq!(o.describe(), "repaired: credentials rotated");
    }
}
