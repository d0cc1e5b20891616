//! ApplyAgent and PlanAgent: from the live Cluster to the objects on both clusters.
//!
//! Order matters for safety. The Cluster is read and checked first (it exists, has the uid the caller named, is
//! not being deleted, is selectable); only then is any other object in its namespace read; every read and check
//! happens before the first write, so a bad configuration changes nothing; and after the HelmChartProxy is
//! written the Cluster is read again, so that an apply racing a deletion takes its write back.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::{
    Api,
    api::{DeleteParams, DynamicObject, Patch, PatchParams},
    runtime::events::EventType,
};
use serde_json::Value;
use tracing::Instrument;

mod plan;

use crate::{
    config::UpgradeConfigPolicy,
    domain::{AgentRequest, ClusterRef, LiveCluster, Trigger, agent_request},
    error::{Error, KubeFailure, Side, absent_ok},
    events::apply_failure_reason,
    executor::Executor,
    memory::Applied,
    names::{
        FIELD_MANAGER, HELM_ADDONS_KEY, RELEASE_NAMESPACE, REMOTE_SECRET_NAME, VALUES_TEMPLATE_KEY,
        hcp_resource,
    },
    objects::{self, ChartCoordinates, HelmChartProxyInput},
    ownership,
    remote::on_workload,
    values::{BUILTIN_VALUES_TEMPLATE, render_checked, template_values},
};

/// What ApplyAgent did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// False when the addon is not configured and nothing was done.
    pub applied: bool,
    /// The HelmChartProxy's name, when applied.
    pub hcp_name: String,
    /// One deterministic, secret-free sentence.
    pub message: String,
    /// Things a person should know.
    pub notes: Vec<String>,
}

/// What ApplyAgent would write; every Secret value redacted.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanOutcome {
    /// The Namespace on the workload cluster; `None` when the addon is not configured.
    pub namespace: Option<Value>,
    /// The Secret on the workload cluster, values redacted.
    pub secret: Option<Value>,
    /// The HelmChartProxy on the management cluster.
    pub hcp: Option<Value>,
    /// Things a person should know.
    pub notes: Vec<String>,
}

/// What ApplyAgent would write, computed without writing. The reconciler (`reconcile.rs`) compares it with what is
/// there and writes it through [`Executor::write_plan`], so hooks and reconciler write the same bytes.
pub(crate) struct Plan {
    /// What the Cluster asks for that the configured chart version ignores (also in `notes`).
    pub(crate) ignored: Vec<String>,
    pub(crate) hcp_name: String,
    /// The resourceVersion at which `hcp_name` was found owned by this Cluster (`ownership.rs`); the write carries
    /// it, so a proxy that changed hands since is never force-written. `None`: it did not exist.
    pub(crate) hcp_resource_version: Option<String>,
    /// The credentials Secret's resourceVersion on the management cluster, read with it: part of what the
    /// per-process memory of the last apply is keyed by.
    pub(crate) source_resource_version: String,
    pub(crate) namespace: Value,
    pub(crate) secret: Secret,
    pub(crate) hcp: Value,
    pub(crate) chart: ChartCoordinates,
    pub(crate) notes: Vec<String>,
    /// What resolving the HelmChartProxy's name noted (also in `notes`).
    pub(crate) hcp_notes: Vec<String>,
    /// The HelmChartProxy is already exactly `hcp`: this process wrote that body, and the hooks' watch holds the proxy
    /// at the version that write produced, so no write (and no ownership check) is needed.
    pub(crate) hcp_unchanged: bool,
}

/// How many times an ownership-checked HelmChartProxy write is tried when the object changed between the check and
/// the write (409). Bounded: a proxy rewritten faster than that by someone else is an answer worth surfacing.
const HCP_CONFLICT_ATTEMPTS: u32 = 3;

/// Whether [`Executor::write_plan`] writes the workload Namespace and Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WorkloadWrite {
    /// Only when what they should hold differs from what this process last wrote (hooks: an unchanged re-apply
    /// costs no workload connection).
    WhenChanged,
    /// Always (the reconciler: it has just read the workload cluster and found them missing or different).
    Always,
}

/// Whether an ApplyAgent failure is a problem with the Cluster's configuration (its variables, its credentials
/// Secret, the values they render to), as opposed to an API server or the network.
fn is_configuration_problem(error: &Error) -> bool {
    matches!(
        error,
        Error::InvalidConfig(_)
            | Error::ValidateCredentialsSecret { .. }
            | Error::RenderValues { .. }
            | Error::ReadCredentialsSecret {
                failure: KubeFailure::NotFound,
                ..
            }
    )
}

const NOT_CONFIGURED: &str = "Konnector Agent addon is not configured for this cluster; nothing to do";

impl Executor {
    /// Installs or re-applies the agent for the Cluster `cluster` names, from what the live Cluster says.
    #[tracing::instrument(skip_all, fields(konnector.cluster.namespace = %cluster.key.namespace, konnector.cluster.name = %cluster.key.name))]
    pub async fn apply(&self, cluster: &ClusterRef, trigger: Trigger) -> Result<ApplyOutcome, Error> {
        tracing::debug!(?trigger, "ApplyAgent");
        if !self.config().serves(&cluster.key.namespace) {
            return Ok(ApplyOutcome {
                applied: false,
                hcp_name: String::new(),
                message: self.config().not_served(&cluster.key.namespace, "nothing to do"),
                notes: Vec::new(),
            });
        }
        // Apply and Remove for one Cluster never interleave in this process (see `ClusterLocks`).
        let _guard = self.memory().locks.lock(&cluster.key).await;
        // The live Cluster, or this process's copy of it when the watch proves it current (`hook_cache`).
        let live = self.clusters().for_hook(cluster).await?;
        let result = self.apply_live(&live, trigger).await;
        if let Err(error) = &result
            && let Some(reason) = apply_failure_reason(error)
        {
            self.events()
                .record(&live, EventType::Warning, reason, "ApplyAgent", error.to_string())
                .await;
        }
        match result {
            Err(error)
                if trigger == Trigger::BeforeClusterUpgrade
                    && self.config().upgrade_config_policy == UpgradeConfigPolicy::Warn
                    && is_configuration_problem(&error) =>
            {
                // Every check ran before the first write, so nothing was written: the installed agent stays as it
                // is, the Warning Event above says why, and the Kubernetes upgrade is not held up by it.
                tracing::warn!(error = %error, "configuration problem at BeforeClusterUpgrade; the upgrade proceeds (policy warn)");
                Ok(ApplyOutcome {
                    applied: false,
                    hcp_name: String::new(),
                    message: format!(
                        "Konnector Agent not re-applied, the upgrade proceeds (configuration problem policy: warn): {error}"
                    ),
                    notes: vec![
                        "the installed agent was left as it is; fix the configuration, the next BeforeClusterUpgrade or reconcile pass applies it".to_owned(),
                    ],
                })
            }
            other => other,
        }
    }

    async fn apply_live(&self, live: &LiveCluster, trigger: Trigger) -> Result<ApplyOutcome, Error> {
        if live.deleting() {
            return Err(Error::ClusterDeleting {
                cluster: live.key.to_string(),
            });
        }
        let Some(req) = agent_request(live)? else {
            return Ok(ApplyOutcome {
                applied: false,
                hcp_name: String::new(),
                message: NOT_CONFIGURED.to_owned(),
                notes: vec![],
            });
        };
        let mut plan = self.plan_with(live, &req, true).await?;
        // Prism Central preflight (preflight.rs): after every read and check, before the first write, so that a
        // blocking failure changes nothing.
        if let Some(note) = self.prism_preflight(live, &req, &plan.secret, trigger).await? {
            plan.notes.push(note);
        }
        self.write_plan(live, plan, WorkloadWrite::WhenChanged).await
    }

    /// Writes a plan: the workload Namespace and Secret, then the HelmChartProxy, then checks the Cluster was not
    /// deleted meanwhile. The caller holds the Cluster's lock and has checked it is not being deleted.
    pub(crate) async fn write_plan(
        &self,
        live: &LiveCluster,
        plan: Plan,
        workload_write: WorkloadWrite,
    ) -> Result<ApplyOutcome, Error> {
        let key = &live.key;
        let mut notes = plan.notes.clone();
        // What this process remembers counts only for the same Cluster object (uid: not one re-created under the
        // same name), the same source Secret (resourceVersion: not rotated, here or through another replica) and the
        // same HelmChartProxy name.
        let last = self.memory().last_applied(key).filter(|a| {
            a.cluster_uid == live.uid
                && a.source_resource_version == plan.source_resource_version
                && a.hcp_name == plan.hcp_name
        });
        let workload = workload_digest(&plan.namespace, &plan.secret);
        // The workload objects are written when what they should hold changed since this process last wrote them
        // (first apply, rotated credentials). An unchanged re-apply skips both writes, and with them the kubeconfig
        // read and the workload connection; drift on the workload cluster is the reconciler's to repair.
        let workload_written =
            workload_write == WorkloadWrite::Always || last.as_ref().is_none_or(|a| a.workload != workload);
        if workload_written {
            self.apply_workload(key, &plan).await?;
        }
        let hcp_ref = format!("{}/{}", key.namespace, plan.hcp_name);
        let hcps: Api<DynamicObject> = Api::namespaced_with(self.mgmt(), &key.namespace, &hcp_resource());
        let hcp_resource_version = if plan.hcp_unchanged {
            // Nobody changed the proxy since this process wrote this same body (`plan_with`): a write would change
            // nothing, and the version is the one the watch holds.
            self.metrics().helm_chart_proxy_write("skipped");
            plan.hcp_resource_version.clone().unwrap_or_default()
        } else {
            self.metrics().helm_chart_proxy_write("written");
            self.write_hcp(live, &plan, &hcps, &hcp_ref).await?
        };
        // When the apply changed nothing (same resourceVersion as this process last saw), it created no install that
        // a concurrent deletion could miss, and the other names were already cleaned up.
        let unchanged = last
            .as_ref()
            .is_some_and(|a| a.hcp_resource_version == hcp_resource_version);
        if !unchanged {
            if let Err(e) = self.take_back_if_deleted(live, &hcps, &plan.hcp_name).await {
                self.memory().forget_applied(key);
                return Err(e);
            }
            let siblings = ownership::report_siblings(self.mgmt(), live, &plan.hcp_name).await?;
            if !siblings.is_empty() {
                let note = format!(
                    "HelmChartProxy {} also drives this Cluster's release and was left in place: deleting it would make CAAPH uninstall the agent (see docs/operating.md, \"Beside CAREN\")",
                    siblings.join(", ")
                );
                self.events()
                    .record(
                        live,
                        EventType::Warning,
                        "DuplicateHelmChartProxy",
                        "ApplyAgent",
                        note.clone(),
                    )
                    .await;
                notes.push(note);
            }
        }
        self.memory().remember_applied(
            key,
            Applied {
                cluster_uid: live.uid.clone(),
                source_resource_version: plan.source_resource_version.clone(),
                hcp_name: plan.hcp_name.clone(),
                workload,
                hcp_resource_version,
                hcp_digest: value_digest(&plan.hcp),
                hcp_notes: plan.hcp_notes.clone(),
            },
        );
        tracing::info!(hcp.name = %plan.hcp_name, "Konnector Agent applied");
        if !plan.ignored.is_empty() && !unchanged {
            // Normal, not Warning: the defaults alone (kubeconfig upload on, chart 1.3.x) produce it. Only when the
            // HelmChartProxy changed: an unchanged re-apply repeats what the Event already says (the answer's notes
            // still do), and the Event write would be a fourth API call on every steady-state hook.
            self.events()
                .record(
                    live,
                    EventType::Normal,
                    "ChartVersionIgnoresSettings",
                    "ApplyAgent",
                    plan.ignored.join("; "),
                )
                .await;
        }
        // Only a write that happened is claimed: a skipped one says what it relied on.
        let credentials = if workload_written {
            format!(
                "credentials copied to Secret {RELEASE_NAMESPACE}/{REMOTE_SECRET_NAME} on the workload cluster"
            )
        } else {
            format!(
                "Secret {RELEASE_NAMESPACE}/{REMOTE_SECRET_NAME} on the workload cluster not re-written (this executor copied these credentials for this Cluster before; the reconciler repairs drift)"
            )
        };
        Ok(ApplyOutcome {
            applied: true,
            message: format!(
                "Konnector Agent applied: {credentials} and HelmChartProxy {hcp_ref} applied (chart {} {})",
                plan.chart.chart_name, plan.chart.chart_version
            ),
            hcp_name: plan.hcp_name,
            notes,
        })
    }

    /// The ownership-checked, forced write of the HelmChartProxy; returns the resourceVersion it produced.
    async fn write_hcp(
        &self,
        live: &LiveCluster,
        plan: &Plan,
        hcps: &Api<DynamicObject>,
        hcp_ref: &str,
    ) -> Result<String, Error> {
        let key = &live.key;
        let mut body = plan.hcp.clone();
        let mut checked_version = plan.hcp_resource_version.clone();
        let mut attempt = 1;
        let written = loop {
            if let Some(rv) = &checked_version {
                // Forced, but only onto the object whose ownership was checked (409 if it changed since).
                body["metadata"]["resourceVersion"] = Value::from(rv.as_str());
            }
            let result = hcps
                .patch(
                    &plan.hcp_name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .instrument(tracing::debug_span!("apply_helm_chart_proxy", hcp.name = %plan.hcp_name))
                .await;
            match result {
                // Any write bumps the resourceVersion, and CAAPH writes the proxy's status and finalizers often, so
                // a 409 usually means "CAAPH was here", not "the proxy changed hands". Check ownership again and
                // retry onto the version just checked; a name that is no longer this Cluster's is refused below.
                Err(kube::Error::Api(s))
                    if s.code == 409 && checked_version.is_some() && attempt < HCP_CONFLICT_ATTEMPTS =>
                {
                    attempt += 1;
                    let again = ownership::resolve_hcp_name(self.mgmt(), live).await?;
                    if again.name != plan.hcp_name || again.resource_version.is_none() {
                        return Err(Error::kube(
                            format!("apply HelmChartProxy {hcp_ref}"),
                            Side::Management,
                            &kube::Error::Api(s),
                        ));
                    }
                    checked_version = again.resource_version;
                }
                other => {
                    break other.map_err(|e| {
                        Error::kube(format!("apply HelmChartProxy {hcp_ref}"), Side::Management, &e)
                    })?;
                }
            }
        };
        if written.metadata.deletion_timestamp.is_some() {
            // An uninstall owns this object now; writing into it changes nothing that lasts.
            self.memory().forget_applied(key);
            return Err(Error::HelmChartProxyDeleting {
                hcp: hcp_ref.to_owned(),
            });
        }
        Ok(written.metadata.resource_version.clone().unwrap_or_default())
    }

    /// Writes the Namespace (with its PSA label) and the credentials Secret on the workload cluster.
    async fn apply_workload(&self, key: &crate::domain::ClusterKey, plan: &Plan) -> Result<(), Error> {
        let remote = self.workloads().client(key).await?;
        let timeout = self.inner.config.remote_timeout;
        let namespaces: Api<Namespace> = Api::all(remote.clone());
        on_workload(timeout, format!("apply Namespace {RELEASE_NAMESPACE}"), async {
            namespaces
                .patch(
                    RELEASE_NAMESPACE,
                    &PatchParams::apply(FIELD_MANAGER),
                    &Patch::Apply(&plan.namespace),
                )
                .await
        })
        .await?;
        let secrets: Api<Secret> = Api::namespaced(remote, RELEASE_NAMESPACE);
        on_workload(
            timeout,
            format!("apply Secret {RELEASE_NAMESPACE}/{REMOTE_SECRET_NAME}"),
            async {
                secrets
                    .patch(
                        REMOTE_SECRET_NAME,
                        &PatchParams::apply(FIELD_MANAGER).force(),
                        &Patch::Apply(&objects::secret_apply_body(&plan.secret)),
                    )
                    .await
            },
        )
        .await?;
        Ok(())
    }

    /// Reads the Cluster again after the HelmChartProxy was written. If its deletion began meanwhile (or it was
    /// replaced), an uninstall on another executor may already have found nothing to remove and let the deletion
    /// proceed, so this apply deletes what it wrote and reports the Cluster as being deleted.
    async fn take_back_if_deleted(
        &self,
        live: &LiveCluster,
        hcps: &Api<DynamicObject>,
        hcp_name: &str,
    ) -> Result<(), Error> {
        let now = self.clusters().read(&live.key).await?;
        if now.as_ref().is_some_and(|c| !c.deleting() && c.uid == live.uid) {
            return Ok(());
        }
        tracing::warn!(hcp.name = %hcp_name, "the Cluster's deletion began during ApplyAgent; deleting the HelmChartProxy it wrote");
        let result = hcps
            .delete(hcp_name, &DeleteParams::default())
            .instrument(tracing::debug_span!("delete_helm_chart_proxy"))
            .await;
        absent_ok(result).map_err(|e| {
            Error::kube(
                format!("delete HelmChartProxy {}/{hcp_name}", live.key.namespace),
                Side::Management,
                &e,
            )
        })?;
        Err(Error::ClusterDeleting {
            cluster: live.key.to_string(),
        })
    }
}

/// A digest of a JSON object as built here (same construction, same text), to tell whether a re-apply would write
/// the same body. In memory only.
fn value_digest(value: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.to_string().hash(&mut h);
    h.finish()
}

/// A digest of the workload objects' content, to tell whether a re-apply would change them. In memory only.
fn workload_digest(namespace: &Value, secret: &Secret) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    namespace.to_string().hash(&mut h);
    secret.type_.hash(&mut h);
    for (k, v) in secret.data.iter().flatten() {
        k.hash(&mut h);
        v.0.hash(&mut h);
    }
    h.finish()
}
