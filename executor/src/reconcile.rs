//! The reconciler: keeps every Cluster that uses the addon converged between hooks, in the one replica that holds
//! the reconciler Lease (see `leader`).
//!
//! It is a kube-runtime `Controller` over CAPI Clusters, driven by watches (issue 26): a Cluster edit, a deleted or
//! edited HelmChartProxy (through its ownerReference) or an event on the credentials Secret a Cluster's last pass
//! read triggers a full pass at once. Nothing the watches cover is polled. What no management watch can see, drift
//! on the workload cluster, is found by a cheap check (two workload GETs, compared with a digest of what the last
//! full pass saw) once per `resync` period per Cluster, at a slot of its own spread evenly over the period from the
//! moment this replica started leading: no burst after a start or a Lease takeover. A Cluster's first pass after
//! that is a full one, at its slot.
//!
//! Secrets are watched for metadata only (see `secret_watch_config`); their data is read by name, in `plan_for`,
//! the hooks' own path, so the process holds no Secret data it is not about to copy. The watch caches hold
//! metadata only.
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
    error::{Error, Side, absent_ok},
    executor::{Executor, on_workload},
    leader::{LeaderElector, LeaseConfig},
    names::{
        AGENT_NAME, CAREN_FIELD_MANAGER, CREDENTIALS_ROTATED_ANNOTATION, FIELD_MANAGER, RELEASE_NAMESPACE,
        REMOTE_SECRET_NAME, hcp_resource,
    },
};

/// The HelmChartProxy spec fields that carry the chart and its values: kept as they are unless
/// `follow_defaults`.
const CHART_FIELDS: [&str; 5] = ["repoURL", "chartName", "version", "valuesTemplate", "tlsConfig"];

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
    /// chart. Lost on failover: the new leader then restores from the ConfigMaps (see docs/design.md, known gaps).
    applied_chart: Mutex<HashMap<ClusterKey, Value>>,
    /// What the workload objects held at each Cluster's last full pass, for the cheap periodic check. Cleared when
    /// this replica starts leading: what changed while it did not lead is only found by a full pass.
    expect: Mutex<HashMap<ClusterKey, WorkloadExpect>>,
    /// The credentials Secret each Cluster referenced at its last full pass: a watch event on that Secret is a
    /// rotation to copy now.
    credentials: Mutex<HashMap<ClusterKey, String>>,
}

/// What the cheap periodic check expects on the workload cluster. A digest of the copied keys, never their values,
/// and never logged: it only compares.
#[derive(Clone, Debug, PartialEq, Eq)]
struct WorkloadExpect {
    labels: serde_json::Map<String, Value>,
    secret_type: String,
    keys: Vec<String>,
    digest: u64,
}

impl WorkloadExpect {
    fn of(labels: &serde_json::Map<String, Value>, wanted: &Secret) -> Self {
        let keys: Vec<String> = wanted.data.iter().flatten().map(|(k, _)| k.clone()).collect();
        Self {
            labels: labels.clone(),
            secret_type: secret_type(wanted).to_owned(),
            digest: keys_digest(wanted, &keys),
            keys,
        }
    }

    /// Whether the workload objects as read still hold what the last full pass saw.
    fn holds(&self, namespace: Option<&Namespace>, secret: Option<&Secret>) -> bool {
        let (Some(namespace), Some(secret)) = (namespace, secret) else {
            return false;
        };
        let labels = namespace.metadata.labels.clone().unwrap_or_default();
        self.labels
            .iter()
            .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
            && secret_type(secret) == self.secret_type
            && keys_digest(secret, &self.keys) == self.digest
    }
}

/// A digest of `keys` of the Secret's data (absent keys count), in memory only.
fn keys_digest(secret: &Secret, keys: &[String]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for k in keys {
        k.hash(&mut h);
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|v| &v.0)
            .hash(&mut h);
    }
    h.finish()
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
        lock(&self.inner.reconciler.expect).remove(key);
        lock(&self.inner.reconciler.credentials).remove(key);
    }

    /// The cheap periodic check: reads the two workload objects (no management read) and compares them with what
    /// the last full pass saw. `Some(true)`: nothing drifted. `None`: no full pass to compare with yet.
    async fn workload_unchanged(&self, key: &ClusterKey) -> Option<bool> {
        let expect = lock(&self.inner.reconciler.expect).get(key).cloned()?;
        let Ok(remote) = self.cached_remote_client(key).await else {
            return Some(false);
        };
        let timeout = self.inner.config.remote_timeout;
        let namespace = on_workload(timeout, format!("read Namespace {RELEASE_NAMESPACE}"), async {
            Api::<Namespace>::all(remote.clone())
                .get_opt(RELEASE_NAMESPACE)
                .await
        });
        let secret = on_workload(
            timeout,
            format!("read Secret {RELEASE_NAMESPACE}/{REMOTE_SECRET_NAME}"),
            async {
                Api::<Secret>::namespaced(remote.clone(), RELEASE_NAMESPACE)
                    .get_opt(REMOTE_SECRET_NAME)
                    .await
            },
        );
        let (Ok(namespace), Ok(secret)) = tokio::join!(namespace, secret) else {
            return Some(false);
        };
        Some(expect.holds(namespace.as_ref(), secret.as_ref()))
    }

    /// The Clusters whose last full pass read the credentials Secret `namespace/name`.
    fn clusters_using_secret(&self, namespace: &str, name: &str) -> Vec<ClusterKey> {
        lock(&self.inner.reconciler.credentials)
            .iter()
            .filter(|(k, s)| k.namespace == namespace && s.as_str() == name)
            .map(|(k, _)| k.clone())
            .collect()
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
        if !matches!(
            result,
            Ok(Outcome::InSync | Outcome::Repaired { .. } | Outcome::Installed)
        ) {
            // Nothing the cheap check could compare with: the next slot makes a full pass again.
            lock(&self.inner.reconciler.expect).remove(key);
        }
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
        // What the cheap periodic check compares the workload objects with, and which Secret's events mean a
        // rotation for this Cluster: remembered whether or not this pass writes (a failed write drops it below).
        let expect = WorkloadExpect::of(&wanted_labels, &plan.secret);
        lock(&self.inner.reconciler.credentials).insert(key.clone(), req.credentials_secret.clone());
        if what.is_empty() {
            lock(&self.inner.reconciler.expect).insert(key.clone(), expect);
            return Ok(Outcome::InSync);
        }
        let fresh = current.is_none() && secret.is_none();
        lock(&self.inner.reconciler.expect).remove(key);
        self.write_plan(live, plan, crate::apply::WorkloadWrite::Always)
            .await?;
        lock(&self.inner.reconciler.expect).insert(key.clone(), expect);
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
                let restart = deployments
                    .patch(
                        AGENT_NAME,
                        &PatchParams::apply(FIELD_MANAGER),
                        &Patch::Merge(&patch),
                    )
                    .await;
                absent_ok(restart).map(|found| found.is_some())
            },
        )
        .await;
        match result {
            Ok(true) => tracing::info!("agent restarted for rotated credentials"),
            Ok(false) => tracing::debug!("no agent Deployment to restart yet"),
            Err(e) => tracing::warn!(error = %e, "cannot restart the agent"),
        }
    }

    /// `konnectorAgent` was removed from a running Cluster and the operator opted in: deletes the HelmChartProxies
    /// this Cluster owns (CAAPH uninstalls the release) and the credentials copy on the workload cluster.
    ///
    /// Found as RemoveAgent finds them: every candidate name, kept only when owned by the hooks' rule
    /// (`ownership::owned_by_cluster`). The current rule's name alone missed a proxy ApplyAgent adopted (an older
    /// rule's name, a uuid annotation gained later) and left the agent installed; a proxy another Cluster owns under
    /// a candidate name (a copied uuid) is never touched. Each delete carries the uid and resourceVersion that were
    /// checked, so a proxy that changed hands meanwhile fails the delete (409) instead of being removed.
    async fn uninstall_removed(&self, live: &LiveCluster) -> Result<Outcome, Error> {
        let key = &live.key;
        let names = crate::uninstall::candidate_names(live);
        let owned = self.owned_hcps(live, &names).await?;
        if owned.is_empty() {
            return Ok(Outcome::Skipped("the addon is not configured"));
        }
        let hcps: Api<DynamicObject> = Api::namespaced_with(self.mgmt(), &key.namespace, &hcp_resource());
        let mut deleted = Vec::new();
        for hcp in &owned {
            let name = hcp.metadata.name.clone().unwrap_or_default();
            let hcp_ref = format!("{}/{name}", key.namespace);
            deleted.push(hcp_ref.clone());
            if hcp.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let checked = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: hcp.metadata.uid.clone(),
                    resource_version: hcp.metadata.resource_version.clone(),
                }),
                ..DeleteParams::default()
            };
            absent_ok(hcps.delete(&name, &checked).await)
                .map_err(|e| Error::kube(format!("delete HelmChartProxy {hcp_ref}"), Side::Management, &e))?;
        }
        lock(&self.inner.reconciler.applied_chart).remove(key);
        // What the hooks remember writing is gone now; a later re-enable must write again.
        self.forget_applied(key);
        let remote = self.remote_client(key).await?;
        on_workload(
            self.inner.config.remote_timeout,
            format!("delete Secret {RELEASE_NAMESPACE}/{REMOTE_SECRET_NAME}"),
            async {
                let secrets = Api::<Secret>::namespaced(remote, RELEASE_NAMESPACE);
                absent_ok(secrets.delete(REMOTE_SECRET_NAME, &DeleteParams::default()).await).map(|_| ())
            },
        )
        .await?;
        self.record_event(
            live,
            EventType::Normal,
            "AgentUninstalled",
            "Reconcile",
            format!(
                "konnectorAgent was removed from the Cluster: HelmChartProxy {} deleted",
                deleted.join(", ")
            ),
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
    schedule: Schedule,
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
    // With `follow_defaults`, a change to the defaults ConfigMaps is a change to every following Cluster's plan
    // (issue 26 item 1): the executor's own ConfigMap watches say when, after recording the new content, so the
    // pass it triggers reads the new chart. Without it the chart changes at hooks only, so no pass is owed.
    let defaults_changes = if config.follow_defaults {
        Some(executor.watched_defaults().await.subscribe())
    } else {
        None
    };
    // A new leader remembers nothing it could trust: each Cluster's first pass is a full one, in its slot.
    lock(&executor.inner.reconciler.expect).clear();
    let schedule = Schedule::new(config.resync);
    let context = Arc::new(Context {
        executor,
        config,
        schedule,
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
        let ctx = context.clone();
        let cluster_events = reflector::reflector(
            writer,
            watcher::watcher(clusters, watch_config.clone())
                .modify(|m| m.managed_fields_mut().clear())
                .default_backoff()
                .inspect(move |e| {
                    if let Ok(e) = e {
                        ctx.schedule
                            .observe("Cluster", e, |m| cluster_key(m).into_iter().collect());
                    }
                }),
        )
        .touched_objects();
        let ctx = context.clone();
        let hcp_events = watcher::watcher(hcps, watch_config.clone())
            .default_backoff()
            .inspect(move |e| {
                if let Ok(e) = e {
                    ctx.schedule.observe("HelmChartProxy", e, owner_clusters);
                }
            })
            .touched_objects();
        // Rotation: a metadata-only watch on the Secrets in the Clusters' namespaces (see `secret_watch`). An event
        // on a Secret some Cluster's last pass read triggers that Cluster now.
        let secrets: Api<PartialObjectMeta<Secret>> = match &scope {
            None => Api::all(context.executor.mgmt()),
            Some(ns) => Api::namespaced(context.executor.mgmt(), ns),
        };
        let ctx = context.clone();
        let resource = version.resource();
        let secret_triggers = watcher::watcher(secrets, secret_watch_config(&watch_config))
            .modify(|m| m.managed_fields_mut().clear())
            .default_backoff()
            .filter_map(move |e| {
                let refs = match e {
                    Ok(e) => {
                        let executor = ctx.executor.clone();
                        ctx.schedule.observe("Secret", &e, |m| {
                            executor.clusters_using_secret(
                                m.metadata.namespace.as_deref().unwrap_or_default(),
                                m.metadata.name.as_deref().unwrap_or_default(),
                            )
                        })
                    }
                    Err(_) => Vec::new(),
                };
                let resource = resource.clone();
                async move {
                    (!refs.is_empty()).then(|| {
                        futures::stream::iter(refs.into_iter().map(move |k| {
                            reflector::ObjectRef::new_with(&k.name, resource.clone()).within(&k.namespace)
                        }))
                    })
                }
            })
            .flatten();
        // Every Cluster this scope watches, marked changed so its pass is a full one. They queue behind the
        // Controller's `concurrency`, which bounds what a fleet-wide change costs at once; a proxy CAREN co-manages
        // keeps its chart (`converge` pins it), so the pass changes nothing there.
        let ctx = context.clone();
        let store = reader.clone();
        let resource = version.resource();
        let defaults_triggers =
            futures::stream::unfold(defaults_changes.clone(), |rx| async move {
                let mut rx = rx?;
                rx.changed().await.ok()?;
                Some(((), Some(rx)))
            })
            .flat_map(move |()| {
                let keys: Vec<ClusterKey> = store.state().iter().filter_map(|m| cluster_key(m)).collect();
                tracing::info!(
                    clusters = keys.len(),
                    "defaults ConfigMaps changed; reconciling the Clusters that follow them"
                );
                lock(&ctx.schedule.state).dirty.extend(keys.iter().cloned());
                let resource = resource.clone();
                futures::stream::iter(keys.into_iter().map(move |k| {
                    reflector::ObjectRef::new_with(&k.name, resource.clone()).within(&k.namespace)
                }))
            });
        Controller::for_stream_with(cluster_events, reader, version.resource())
            .owns_stream_with(hcp_events, hcp_resource())
            .reconcile_on(secret_triggers)
            .reconcile_on(defaults_triggers)
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
    let now = tokio::time::Instant::now();
    let (dirty, due) = context.schedule.take(&key, now);
    if !dirty && now < due {
        // Neither a change nor this Cluster's slot (the first list after start or takeover, or a duplicate
        // trigger): nothing to do until the slot. This is what spreads the checks evenly, with no burst.
        return Ok(Action::requeue(due - now));
    }
    let unchanged = if dirty {
        None
    } else {
        context.executor.workload_unchanged(&key).await
    };
    if unchanged == Some(true) {
        context.executor.metrics().reconciled("checked");
    } else {
        // A change seen by a watch, drift found by the check, or no full pass yet: the full pass.
        context.executor.reconcile_and_record(&key, &context.config).await;
    }
    let now = tokio::time::Instant::now();
    let next = context.schedule.passed(&key, now);
    Ok(Action::requeue(next.saturating_duration_since(now)))
}

/// The Secrets the reconciler watches, metadata only: every type but those CAPI, Kubernetes and Helm write by the
/// hundred (kubeconfigs and certificates, service-account tokens, Helm releases), which are never credentials.
///
/// Why a watch, and why this one: a rotation must be copied within seconds, and polling the referenced Secret of
/// every Cluster is the cost issue 26 removes. RBAC cannot confine a watch to metadata, so list and watch on
/// Secrets give the executor's ServiceAccount no more than its `get` on every Secret in those namespaces already
/// does, except their names; the process itself asks for metadata only (PartialObjectMetadata, managedFields
/// dropped), so it never holds a Secret's data it is not about to copy. A label-selected watch would need konnector to
/// label its users' Secrets (a write right on them); a field selector on the name allows one Secret per watch.
fn secret_watch_config(base: &watcher::Config) -> watcher::Config {
    base.clone().fields(
        "type!=cluster.x-k8s.io/secret,type!=kubernetes.io/service-account-token,type!=helm.sh/release.v1",
    )
}

fn cluster_key(m: &PartialObjectMeta<DynamicObject>) -> Option<ClusterKey> {
    ClusterKey::new(m.metadata.namespace.as_deref()?, m.metadata.name.as_deref()?).ok()
}

/// The Clusters that own a HelmChartProxy.
fn owner_clusters(m: &PartialObjectMeta<DynamicObject>) -> Vec<ClusterKey> {
    let Some(ns) = m.metadata.namespace.as_deref() else {
        return Vec::new();
    };
    m.metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.kind == crate::names::CLUSTER_KIND)
        .filter_map(|o| ClusterKey::new(ns, &o.name).ok())
        .collect()
}

/// When each Cluster is looked at: a slot per Cluster, at a fixed phase of the period derived from its name, so the
/// periodic checks of N Clusters are spread evenly over the period from the moment a replica starts leading (no
/// burst after a start or a takeover, no herd); and whether a watch saw a change since the last pass.
struct Schedule {
    period: Duration,
    epoch: tokio::time::Instant,
    state: Mutex<ScheduleState>,
}

#[derive(Default)]
struct ScheduleState {
    dirty: std::collections::HashSet<ClusterKey>,
    /// When each Cluster's next check is due (dropped when the Cluster is deleted).
    due: HashMap<ClusterKey, tokio::time::Instant>,
    /// The resourceVersion each watched object was last seen at, so that a re-list after a watch failure marks
    /// only what changed meanwhile (and the first list after start marks nothing).
    seen: HashMap<(&'static str, String, String), String>,
}

impl Schedule {
    fn new(period: Duration) -> Self {
        Self {
            period: period.max(Duration::from_millis(100)),
            epoch: tokio::time::Instant::now(),
            state: Mutex::default(),
        }
    }

    /// This Cluster's phase in the period.
    fn phase(&self, key: &ClusterKey) -> Duration {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let period = self.period.as_millis().max(1) as u64;
        Duration::from_millis(h.finish() % period)
    }

    /// The first slot of this Cluster after `now`.
    fn next_slot(&self, key: &ClusterKey, now: tokio::time::Instant) -> tokio::time::Instant {
        let first = self.epoch + self.phase(key);
        if now < first {
            return first;
        }
        let period = self.period.as_nanos();
        let periods = (now - first).as_nanos() / period + 1;
        first + Duration::from_nanos(u64::try_from(periods * period).unwrap_or(u64::MAX))
    }

    /// Whether a change was seen since the last pass (clearing it), and when the Cluster's check is due. A Cluster
    /// seen for the first time is due at its first slot after this replica started leading.
    fn take(&self, key: &ClusterKey, now: tokio::time::Instant) -> (bool, tokio::time::Instant) {
        let mut state = lock(&self.state);
        let dirty = state.dirty.remove(key);
        let due = *state
            .due
            .entry(key.clone())
            .or_insert_with(|| self.next_slot(key, now));
        (dirty, due)
    }

    /// After a pass at `now`: the next check is the Cluster's next slot once the due one has been served (however
    /// late the queue ran it), else the due one still stands (a pass a change triggered between slots).
    fn passed(&self, key: &ClusterKey, now: tokio::time::Instant) -> tokio::time::Instant {
        let mut state = lock(&self.state);
        let next = self.next_slot(key, now);
        let due = state.due.entry(key.clone()).or_insert(next);
        if *due <= now {
            *due = next;
        }
        *due
    }

    /// Records a watch event, marking the Clusters `clusters` maps it to as changed. The first sight of an object
    /// (the first list) marks nothing; a re-list marks only objects whose resourceVersion moved.
    fn observe<K: kube::Resource>(
        &self,
        kind: &'static str,
        event: &watcher::Event<K>,
        clusters: impl Fn(&K) -> Vec<ClusterKey>,
    ) -> Vec<ClusterKey> {
        let (obj, initial, deleted) = match event {
            watcher::Event::Apply(o) => (o, false, false),
            watcher::Event::Delete(o) => (o, false, true),
            watcher::Event::InitApply(o) => (o, true, false),
            watcher::Event::Init | watcher::Event::InitDone => return Vec::new(),
        };
        let meta = obj.meta();
        let id = (
            kind,
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        let rv = meta.resource_version.clone().unwrap_or_default();
        let mut state = lock(&self.state);
        let before = if deleted {
            state.seen.remove(&id)
        } else {
            state.seen.insert(id, rv.clone())
        };
        let changed = if initial {
            before.is_some_and(|b| b != rv)
        } else {
            before.is_none_or(|b| b != rv) || deleted
        };
        if !changed {
            return Vec::new();
        }
        let keys = clusters(obj);
        if deleted && kind == "Cluster" {
            for k in &keys {
                state.due.remove(k);
            }
        }
        state.dirty.extend(keys.iter().cloned());
        keys
    }
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
        // Workload drift repaired within 5 minutes (management changes at once, by watches); failover within 30 s.
        assert_eq!(config.resync, Duration::from_secs(300));
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
    fn the_namespace_selector_flag_takes_the_charts_json() {
        use clap::Parser;
        let parse = |json: &str| {
            crate::args::Args::try_parse_from([
                "konnector-executor",
                "--pod-name",
                "p",
                &format!("--reconcile-namespace-selector={json}"),
            ])
            .map(|a| a.reconcile.config("ns").unwrap().namespace_selector)
        };
        let selector = parse(r#"{"matchLabels":{"team":"a"}}"#).unwrap().unwrap();
        assert_eq!(selector.match_labels.unwrap()["team"], "a");
        // Empty selects every namespace, as in the ExtensionConfig.
        assert!(parse("{}").unwrap().is_none());
        assert!(parse("").unwrap().is_none());
        // What the API server would refuse is refused at start.
        assert!(parse(r#"{"matchExpressions":[{"key":"a","operator":"Near"}]}"#).is_err());
        assert!(parse("team=a").is_err());
    }

    #[test]
    fn checks_are_spread_over_the_period_and_never_burst() {
        let schedule = Schedule::new(Duration::from_secs(300));
        let keys: Vec<ClusterKey> = (0..1000)
            .map(|i| ClusterKey::new("ns", &format!("c-{i}")).unwrap())
            .collect();
        // Slots of 1000 Clusters over 5 minutes: about 33 per 10 s window, none near 1000 (no burst at start).
        let mut windows = [0u32; 30];
        for k in &keys {
            let slot = schedule.next_slot(k, schedule.epoch) - schedule.epoch;
            assert!(slot < Duration::from_secs(300));
            windows[(slot.as_secs() / 10) as usize] += 1;
        }
        assert!(windows.iter().all(|n| (10..=70).contains(n)), "{windows:?}");
        // A Cluster's next slot is one period after the last.
        let k = &keys[0];
        let first = schedule.next_slot(k, schedule.epoch);
        assert_eq!(schedule.next_slot(k, first), first + Duration::from_secs(300));
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
