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
use tokio_util::sync::CancellationToken;

use crate::{
    domain::{ClusterKey, LiveCluster, agent_request},
    error::{Error, Side, absent_ok},
    executor::Executor,
    leader::LeaderElector,
    names::{
        AGENT_NAME, CREDENTIALS_ROTATED_ANNOTATION, FIELD_MANAGER, RELEASE_NAMESPACE, REMOTE_SECRET_NAME,
        hcp_resource,
    },
    remote::on_workload,
};

mod namespaces;
mod schedule;
mod watches;

use crate::drift::{
    WorkloadExpect, chart_edited_by_others, chart_fields, co_managed_by_caren, contains,
    copied_keys_edited_by_others, copied_keys_match, owned_by, pin_chart, secret_type,
};
pub use crate::{args::ReconcileArgs, config::ReconcileConfig, memory::LastReconcile};
use namespaces::SelectedNamespaces;
use schedule::Schedule;
pub use watches::run;

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
    /// The cheap periodic check: reads the two workload objects (no management read) and compares them with what
    /// the last full pass saw. `Some(true)`: nothing drifted. `None`: no full pass to compare with yet.
    async fn workload_unchanged(&self, key: &ClusterKey) -> Option<bool> {
        let expect = lock(&self.memory().reconciler.expect).get(key).cloned()?;
        let Ok(remote) = self.workloads().cached_client(key).await else {
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
            lock(&self.memory().reconciler.expect).remove(key);
        }
        if matches!(result, Ok(Outcome::Skipped(GONE))) {
            // Nothing to report for a Cluster that no longer exists: its memories went with it (forget_cluster).
            return;
        }
        lock(&self.memory().reconciler.last).insert(
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
        let _guard = self.memory().locks.lock(key).await;
        let Some(live) = self.clusters().read(key).await? else {
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
            let remembered = lock(&self.memory().reconciler.applied_chart).get(key).cloned();
            let applied = current
                .as_ref()
                .filter(|h| !chart_edited_by_others(h))
                .map(|h| chart_fields(&h.data["spec"]));
            if let Some(pinned) = applied.or(remembered) {
                pin_chart(&mut plan.hcp["spec"], &pinned);
            }
        }
        lock(&self.memory().reconciler.applied_chart).insert(key.clone(), chart_fields(&plan.hcp["spec"]));

        let mut what = Vec::new();
        let mut rotated = false;
        let remote = self.workloads().client(key).await?;
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
        lock(&self.memory().reconciler.credentials).insert(key.clone(), req.credentials_secret.clone());
        if what.is_empty() {
            lock(&self.memory().reconciler.expect).insert(key.clone(), expect);
            return Ok(Outcome::InSync);
        }
        let fresh = current.is_none() && secret.is_none();
        lock(&self.memory().reconciler.expect).remove(key);
        self.write_plan(live, plan, crate::apply::WorkloadWrite::Always)
            .await?;
        lock(&self.memory().reconciler.expect).insert(key.clone(), expect);
        if rotated {
            self.roll_agent(key).await;
            self.events().record(
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
            self.events()
                .record(
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
            self.events()
                .record(
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
        let Ok(remote) = self.workloads().client(key).await else {
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
        lock(&self.memory().reconciler.applied_chart).remove(key);
        // What the hooks remember writing is gone now; a later re-enable must write again.
        self.memory().forget_applied(key);
        let remote = self.workloads().client(key).await?;
        on_workload(
            self.inner.config.remote_timeout,
            format!("delete Secret {RELEASE_NAMESPACE}/{REMOTE_SECRET_NAME}"),
            async {
                let secrets = Api::<Secret>::namespaced(remote, RELEASE_NAMESPACE);
                absent_ok(secrets.delete(REMOTE_SECRET_NAME, &DeleteParams::default()).await).map(|_| ())
            },
        )
        .await?;
        self.events()
            .record(
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

#[cfg(test)]
mod tests;
