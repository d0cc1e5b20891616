//! The executor's work: one method per RPC, on domain types, returning the proto response or an [`Error`].

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use konnector_proto::v1::{
    ApplyAgentResponse, ClusterContext, Condition, GetAgentStatusResponse, HelmChartProxyStatus,
    HelmReleaseProxyStatus, PlanAgentResponse, RemoveAgentResponse, UninstallPhase,
};
use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use serde_json::Value;
use tracing::Instrument;

use crate::{
    config::{ExecutorConfig, UninstallTimeoutPolicy},
    domain::{
        AgentRequest, CLUSTER_NAME_LABEL, ClusterKey, FIELD_MANAGER, HCP_NAME_LABEL, RELEASE_NAMESPACE,
        REMOTE_SECRET_NAME, agent_request,
    },
    error::{Error, KubeFailure, Side},
    objects::{
        self, ChartCoordinates, HELM_ADDONS_KEY, HelmChartProxyInput, VALUES_TEMPLATE_KEY,
        helm_chart_proxy_name,
    },
    observe::{ExecutorMetrics, observed_client},
    values::{BUILTIN_VALUES_TEMPLATE, render_values, template_values},
};

/// The controller name on the Events the executor records.
pub const EVENT_REPORTER: &str = "konnector-executor";
/// Bound on recording one Event; recording never holds up an answer for longer.
const EVENT_TIMEOUT: Duration = Duration::from_secs(3);

/// The executor: the management cluster client, the configuration, and a cache of workload cluster clients.
/// Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

struct Inner {
    mgmt: Client,
    config: ExecutorConfig,
    /// Workload clients by cluster, with the resourceVersion of the kubeconfig Secret they were built from.
    remotes: Mutex<HashMap<ClusterKey, (String, Client)>>,
    /// Clusters whose uninstall this process has seen under way, so that "nothing left" can be reported as
    /// COMPLETED rather than NOT_NEEDED. Lost on restart; `done` is the same either way.
    uninstalls_seen: Mutex<HashSet<ClusterKey>>,
    metrics: ExecutorMetrics,
    recorder: Recorder,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// What ApplyAgent would write, computed without writing.
struct Plan {
    key: ClusterKey,
    hcp_name: String,
    namespace: Value,
    secret: Secret,
    hcp: Value,
    chart: ChartCoordinates,
    notes: Vec<String>,
}

/// What is left of an install on the management cluster.
struct Remains {
    hcp: Option<DynamicObject>,
    hrps: Vec<DynamicObject>,
}

fn hcp_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("addons.cluster.x-k8s.io", "v1alpha1", "HelmChartProxy"),
        "helmchartproxies",
    )
}

fn hrp_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("addons.cluster.x-k8s.io", "v1alpha1", "HelmReleaseProxy"),
        "helmreleaseproxies",
    )
}

fn cluster_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", "Cluster"),
        "clusters",
    )
}

impl Executor {
    /// Creates an executor that works with `mgmt`, the management cluster client. Every call it makes through
    /// that client (and through the workload clients it builds) is traced and counted.
    pub fn new(mgmt: Client, config: ExecutorConfig) -> Self {
        let metrics = ExecutorMetrics::default();
        let mgmt = observed_client(mgmt, Side::Management, &metrics);
        let recorder = Recorder::new(
            mgmt.clone(),
            Reporter {
                controller: EVENT_REPORTER.to_owned(),
                instance: None,
            },
        );
        Self {
            inner: Arc::new(Inner {
                mgmt,
                config,
                remotes: Mutex::default(),
                uninstalls_seen: Mutex::default(),
                metrics,
                recorder,
            }),
        }
    }

    /// The executor's metrics.
    pub fn metrics(&self) -> &ExecutorMetrics {
        &self.inner.metrics
    }

    /// Records an Event on the Cluster `key` (management cluster). A failure to record is logged, never returned:
    /// the Event explains the answer, it is not part of it.
    async fn record_event(
        &self,
        key: &ClusterKey,
        uid: &str,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let reference = ObjectReference {
            api_version: Some("cluster.x-k8s.io/v1beta2".to_owned()),
            kind: Some("Cluster".to_owned()),
            namespace: Some(key.namespace.clone()),
            name: Some(key.name.clone()),
            uid: (!uid.is_empty()).then(|| uid.to_owned()),
            ..Default::default()
        };
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        match tokio::time::timeout(EVENT_TIMEOUT, self.inner.recorder.publish(&event, &reference)).await {
            Ok(Ok(())) => tracing::debug!(reason, "Event recorded on the Cluster"),
            Ok(Err(e)) => {
                tracing::warn!(reason, failure = %KubeFailure::from_kube(&e), "cannot record an Event on the Cluster")
            }
            Err(_) => tracing::warn!(reason, "recording an Event on the Cluster timed out"),
        }
    }

    /// The Event a person must see for an ApplyAgent failure, if the failure is one they have to fix.
    async fn record_apply_failure(&self, ctx: &ClusterContext, error: &Error) {
        let reason = match error {
            Error::ReadCredentialsSecret {
                failure: KubeFailure::NotFound,
                ..
            } => "CredentialsSecretMissing",
            Error::ValidateCredentialsSecret { .. } => "CredentialsSecretInvalid",
            Error::ClusterNotSelectable { .. } => "ClusterNotSelectable",
            _ => return,
        };
        let Ok(key) = ClusterKey::new(&ctx.namespace, &ctx.name) else {
            return;
        };
        self.record_event(
            &key,
            &ctx.uid,
            EventType::Warning,
            reason,
            "ApplyAgent",
            error.to_string(),
        )
        .await;
    }

    /// The configuration.
    pub fn config(&self) -> &ExecutorConfig {
        &self.inner.config
    }

    fn mgmt(&self) -> Client {
        self.inner.mgmt.clone()
    }

    /// Installs or re-applies the agent for one cluster. See the proto for the contract.
    #[tracing::instrument(skip_all, fields(cluster.namespace = %ctx.namespace, cluster.name = %ctx.name))]
    pub async fn apply(&self, ctx: &ClusterContext) -> Result<ApplyAgentResponse, Error> {
        let result = self.apply_inner(ctx).await;
        if let Err(error) = &result {
            self.record_apply_failure(ctx, error).await;
        }
        result
    }

    async fn apply_inner(&self, ctx: &ClusterContext) -> Result<ApplyAgentResponse, Error> {
        let Some(req) = agent_request(ctx)? else {
            return Ok(ApplyAgentResponse {
                message: "Konnector Agent addon is not configured for this cluster; nothing to do".to_owned(),
                applied: false,
                helm_chart_proxy_name: String::new(),
                notes: vec![],
            });
        };
        // Every read and check happens before the first write, so a bad configuration changes nothing.
        let plan = self.plan_for(&req).await?;
        let remote = self.remote_client(&plan.key).await?;
        let timeout = self.inner.config.remote_timeout;
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(remote.clone());
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
        let hcps: Api<DynamicObject> =
            Api::namespaced_with(self.mgmt(), &plan.key.namespace, &hcp_resource());
        hcps.patch(
            &plan.hcp_name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&plan.hcp),
        )
        .instrument(tracing::debug_span!("apply_helm_chart_proxy", hcp.name = %plan.hcp_name))
        .await
        .map_err(|e| {
            Error::kube(
                format!("apply HelmChartProxy {}/{}", plan.key.namespace, plan.hcp_name),
                Side::Management,
                &e,
            )
        })?;
        tracing::info!(hcp.name = %plan.hcp_name, "Konnector Agent applied");
        Ok(ApplyAgentResponse {
            message: format!(
                "Konnector Agent applied: credentials copied to Secret {RELEASE_NAMESPACE}/{REMOTE_SECRET_NAME} on the workload cluster and HelmChartProxy {}/{} applied (chart {} {})",
                plan.key.namespace, plan.hcp_name, plan.chart.chart_name, plan.chart.chart_version
            ),
            applied: true,
            helm_chart_proxy_name: plan.hcp_name,
            notes: plan.notes,
        })
    }

    /// Renders what [`Executor::apply`] would write, and writes nothing.
    #[tracing::instrument(skip_all, fields(cluster.namespace = %ctx.namespace, cluster.name = %ctx.name))]
    pub async fn plan(&self, ctx: &ClusterContext) -> Result<PlanAgentResponse, Error> {
        let Some(req) = agent_request(ctx)? else {
            return Ok(PlanAgentResponse {
                namespace: None,
                secret: None,
                helm_chart_proxy: None,
                notes: vec![
                    "Konnector Agent addon is not configured for this cluster; nothing would be applied"
                        .to_owned(),
                ],
            });
        };
        let plan = self.plan_for(&req).await?;
        Ok(PlanAgentResponse {
            namespace: Some(konnector_proto::json_to_struct(plan.namespace)),
            secret: Some(konnector_proto::json_to_struct(objects::redacted_secret(
                &plan.secret,
            ))),
            helm_chart_proxy: Some(konnector_proto::json_to_struct(plan.hcp)),
            notes: plan.notes,
        })
    }

    async fn plan_for(&self, req: &AgentRequest) -> Result<Plan, Error> {
        let key = req.cluster.clone();
        let mut notes = Vec::new();

        // Credentials: read and validate; the values stay in the Secret object and go nowhere else.
        let secret_ref = format!("{}/{}", key.namespace, req.credentials_secret);
        let source = Api::<Secret>::namespaced(self.mgmt(), &key.namespace)
            .get(&req.credentials_secret)
            .instrument(tracing::debug_span!("read_credentials_secret"))
            .await
            .map_err(|e| Error::ReadCredentialsSecret {
                secret: secret_ref.clone(),
                failure: KubeFailure::from_kube(&e),
            })?;
        objects::validate_credentials(&source).map_err(|problem| Error::ValidateCredentialsSecret {
            secret: secret_ref,
            problem,
        })?;

        // The live Cluster: its uid for the ownerReference, and its labels, because the HelmChartProxy selects
        // it by label and the request's copy may be stale.
        let cluster = self.live_cluster(&key).await?.ok_or_else(|| Error::ReadCluster {
            cluster: key.to_string(),
            failure: KubeFailure::NotFound,
        })?;
        let selectable = cluster
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(CLUSTER_NAME_LABEL))
            .is_some_and(|v| *v == key.name);
        if !selectable {
            return Err(Error::ClusterNotSelectable {
                cluster: key.to_string(),
                name: key.name.clone(),
            });
        }
        let uid = cluster.metadata.uid.clone().unwrap_or_default();
        if !req.uid.is_empty() && req.uid != uid {
            notes.push(
                "the request's Cluster uid differs from the live Cluster's; the live uid is used for the HelmChartProxy's ownerReference"
                    .to_owned(),
            );
        }

        let chart = self.chart_coordinates(&mut notes).await?;
        let (template, template_source) = self.values_template(&mut notes).await?;
        let values =
            render_values(&template, &template_values(req)).map_err(|error| Error::RenderValues {
                source_name: template_source,
                error,
            })?;
        let hcp = objects::helm_chart_proxy(&HelmChartProxyInput {
            cluster: &key,
            cluster_uid: &uid,
            chart: &chart,
            values: &values,
            helm_repository_ca_namespace: &self.inner.config.helm_repository_ca_namespace,
        });
        Ok(Plan {
            hcp_name: helm_chart_proxy_name(&key.name),
            key,
            namespace: objects::namespace_object(),
            secret: objects::remote_secret(&source),
            hcp,
            chart,
            notes,
        })
    }

    async fn read_configmap(&self, name: &str) -> Result<Option<ConfigMap>, Error> {
        let ns = &self.inner.config.defaults_namespace;
        Api::<ConfigMap>::namespaced(self.mgmt(), ns)
            .get_opt(name)
            .instrument(tracing::debug_span!("read_configmap", configmap.name = name))
            .await
            .map_err(|e| Error::ReadDefaults {
                configmap: format!("{ns}/{name}"),
                problem: "reading it failed".to_owned(),
                failure: Some(KubeFailure::from_kube(&e)),
            })
    }

    async fn chart_coordinates(&self, notes: &mut Vec<String>) -> Result<ChartCoordinates, Error> {
        let c = &self.inner.config;
        let cm_ref = format!("{}/{}", c.defaults_namespace, c.helm_addons_configmap);
        let builtin = ChartCoordinates {
            chart_name: c.default_chart_name.clone(),
            chart_version: c.default_chart_version.clone(),
            repository_url: c.default_repository_url.clone(),
        };
        let Some(cm) = self.read_configmap(&c.helm_addons_configmap).await? else {
            notes.push(format!(
                "ConfigMap {cm_ref} not found; using the built-in chart {} {} from {}",
                builtin.chart_name, builtin.chart_version, builtin.repository_url
            ));
            return Ok(builtin);
        };
        let Some(yaml) = cm.data.as_ref().and_then(|d| d.get(HELM_ADDONS_KEY)) else {
            notes.push(format!(
                "ConfigMap {cm_ref} has no key {HELM_ADDONS_KEY:?}; using the built-in chart {} {} from {}",
                builtin.chart_name, builtin.chart_version, builtin.repository_url
            ));
            return Ok(builtin);
        };
        objects::parse_chart_coordinates(yaml).map_err(|problem| Error::ReadDefaults {
            configmap: cm_ref,
            problem,
            failure: None,
        })
    }

    async fn values_template(&self, notes: &mut Vec<String>) -> Result<(String, String), Error> {
        let c = &self.inner.config;
        let cm_ref = format!("{}/{}", c.defaults_namespace, c.values_template_configmap);
        let Some(cm) = self.read_configmap(&c.values_template_configmap).await? else {
            notes.push(format!(
                "ConfigMap {cm_ref} not found; using the built-in values template"
            ));
            return Ok((
                BUILTIN_VALUES_TEMPLATE.to_owned(),
                "the built-in values template".to_owned(),
            ));
        };
        match cm.data.as_ref().and_then(|d| d.get(VALUES_TEMPLATE_KEY)) {
            Some(t) => Ok((t.clone(), format!("ConfigMap {cm_ref} key {VALUES_TEMPLATE_KEY}"))),
            None => {
                notes.push(format!(
                    "ConfigMap {cm_ref} has no key {VALUES_TEMPLATE_KEY:?}; using the built-in values template"
                ));
                Ok((
                    BUILTIN_VALUES_TEMPLATE.to_owned(),
                    "the built-in values template".to_owned(),
                ))
            }
        }
    }

    async fn live_cluster(&self, key: &ClusterKey) -> Result<Option<DynamicObject>, Error> {
        Api::<DynamicObject>::namespaced_with(self.mgmt(), &key.namespace, &cluster_resource())
            .get_opt(&key.name)
            .instrument(tracing::debug_span!("read_cluster"))
            .await
            .map_err(|e| Error::ReadCluster {
                cluster: key.to_string(),
                failure: KubeFailure::from_kube(&e),
            })
    }

    /// A client for the workload cluster, from its CAPI kubeconfig Secret; cached until the Secret changes.
    async fn remote_client(&self, key: &ClusterKey) -> Result<Client, Error> {
        let secret_name = format!("{}-kubeconfig", key.name);
        let secret_ref = format!("{}/{secret_name}", key.namespace);
        let secret = Api::<Secret>::namespaced(self.mgmt(), &key.namespace)
            .get(&secret_name)
            .instrument(tracing::debug_span!("read_kubeconfig_secret"))
            .await
            .map_err(|e| Error::ReadKubeconfig {
                secret: secret_ref.clone(),
                failure: KubeFailure::from_kube(&e),
            })?;
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        if let Some((v, client)) = self.lock_remotes().get(key)
            && *v == version
        {
            return Ok(client.clone());
        }
        let unusable = |problem: &str| Error::ParseKubeconfig {
            secret: secret_ref.clone(),
            problem: problem.to_owned(),
        };
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get("value"))
            .ok_or_else(|| unusable("key \"value\" is missing"))?;
        let text = std::str::from_utf8(&bytes.0).map_err(|_| unusable("key \"value\" is not UTF-8 text"))?;
        let kubeconfig =
            Kubeconfig::from_yaml(text).map_err(|_| unusable("key \"value\" does not hold a kubeconfig"))?;
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|_| unusable("its kubeconfig has no usable context, cluster or user"))?;
        let timeout = self.inner.config.remote_timeout;
        config.connect_timeout = Some(timeout);
        config.read_timeout = Some(timeout);
        config.write_timeout = Some(timeout);
        let client =
            Client::try_from(config).map_err(|_| unusable("no client can be built from its kubeconfig"))?;
        let client = observed_client(client, Side::Workload, &self.inner.metrics);
        let cached = {
            let mut remotes = self.lock_remotes();
            remotes.insert(key.clone(), (version, client.clone()));
            remotes.len()
        };
        self.inner.metrics.remote_clients(cached);
        Ok(client)
    }

    fn lock_remotes(&self) -> std::sync::MutexGuard<'_, HashMap<ClusterKey, (String, Client)>> {
        // A panic while holding this lock cannot leave the map inconsistent, so poisoning is ignored.
        self.inner.remotes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn uninstall_seen(&self, key: &ClusterKey, mark: bool) -> bool {
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

    async fn remains(&self, key: &ClusterKey, hcp_name: &str) -> Result<Remains, Error> {
        let hcp = Api::<DynamicObject>::namespaced_with(self.mgmt(), &key.namespace, &hcp_resource())
            .get_opt(hcp_name)
            .instrument(tracing::debug_span!("read_helm_chart_proxy"))
            .await
            .map_err(|e| {
                Error::kube(
                    format!("read HelmChartProxy {}/{hcp_name}", key.namespace),
                    Side::Management,
                    &e,
                )
            })?;
        let selector = format!("{CLUSTER_NAME_LABEL}={},{HCP_NAME_LABEL}={hcp_name}", key.name);
        let hrps = Api::<DynamicObject>::namespaced_with(self.mgmt(), &key.namespace, &hrp_resource())
            .list(&ListParams::default().labels(&selector))
            .instrument(tracing::debug_span!("list_helm_release_proxies"))
            .await
            .map_err(|e| {
                Error::kube(
                    format!("list HelmReleaseProxies in {}", key.namespace),
                    Side::Management,
                    &e,
                )
            })?
            .items;
        Ok(Remains { hcp, hrps })
    }

    /// Starts or continues the uninstall for a cluster being deleted. See the proto for the contract.
    #[tracing::instrument(skip_all, fields(cluster.namespace = %ctx.namespace, cluster.name = %ctx.name))]
    pub async fn remove(&self, ctx: &ClusterContext) -> Result<RemoveAgentResponse, Error> {
        let key = ClusterKey::new(&ctx.namespace, &ctx.name)?;
        let done = |phase: UninstallPhase, message: String| RemoveAgentResponse {
            done: true,
            retry_after_seconds: 0,
            message,
            phase: phase as i32,
        };
        if ctx.konnector_agent.is_none() {
            return Ok(done(
                UninstallPhase::NotNeeded,
                "Konnector Agent addon is not configured for this cluster; nothing to uninstall".to_owned(),
            ));
        }
        match self.live_cluster(&key).await? {
            None => {
                return Ok(done(
                    UninstallPhase::NotNeeded,
                    "the Cluster no longer exists; nothing to uninstall".to_owned(),
                ));
            }
            Some(cluster) if !control_plane_initialized(&cluster.data) => {
                return Ok(done(
                    UninstallPhase::NotNeeded,
                    "the Cluster's control plane never initialised, so the agent was never installed; nothing to uninstall".to_owned(),
                ));
            }
            Some(_) => {}
        }
        let hcp_name = helm_chart_proxy_name(&key.name);
        let mut remains = self.remains(&key, &hcp_name).await?;
        if let Some(hcp) = &remains.hcp
            && hcp.metadata.deletion_timestamp.is_none()
        {
            Api::<DynamicObject>::namespaced_with(self.mgmt(), &key.namespace, &hcp_resource())
                .delete(&hcp_name, &DeleteParams::default())
                .instrument(tracing::debug_span!("delete_helm_chart_proxy"))
                .await
                .map_err(|e| {
                    Error::kube(
                        format!("delete HelmChartProxy {}/{hcp_name}", key.namespace),
                        Side::Management,
                        &e,
                    )
                })?;
            tracing::info!(hcp.name = %hcp_name, "HelmChartProxy deleted; CAAPH uninstalls the release");
            self.uninstall_seen(&key, true);
            remains = self.remains(&key, &hcp_name).await?;
        }
        let answer = self.remove_answer(&key, &hcp_name, &remains);
        if answer.phase == UninstallPhase::TimedOut as i32 {
            let reason = if answer.done {
                "UninstallTimedOutDeletionProceeds"
            } else {
                "UninstallTimedOutDeletionBlocked"
            };
            self.record_event(
                &key,
                &ctx.uid,
                EventType::Warning,
                reason,
                "RemoveAgent",
                answer.message.clone(),
            )
            .await;
        }
        Ok(answer)
    }

    fn remove_answer(&self, key: &ClusterKey, hcp_name: &str, remains: &Remains) -> RemoveAgentResponse {
        let c = &self.inner.config;
        let phase = self.phase(key, remains);
        let hcp_ref = format!("{}/{hcp_name}", key.namespace);
        let hrps = remains.hrps.len();
        let what = match (&remains.hcp, hrps) {
            (Some(_), 0) => format!("HelmChartProxy {hcp_ref} is being deleted"),
            (Some(_), n) => {
                format!("HelmChartProxy {hcp_ref} is being deleted and {n} HelmReleaseProxy object(s) remain")
            }
            (None, n) => {
                format!("HelmChartProxy {hcp_ref} is gone but {n} HelmReleaseProxy object(s) remain")
            }
        };
        let timeout = humanize(c.uninstall_timeout);
        let (done, message) = match phase {
            UninstallPhase::NotNeeded => (
                true,
                format!(
                    "no HelmChartProxy {hcp_ref} and no HelmReleaseProxy for this cluster; nothing to uninstall"
                ),
            ),
            UninstallPhase::Completed => (
                true,
                format!(
                    "Konnector Agent uninstalled: HelmChartProxy {hcp_ref} and its HelmReleaseProxies are gone"
                ),
            ),
            UninstallPhase::TimedOut => match c.uninstall_timeout_policy {
                UninstallTimeoutPolicy::Proceed => (
                    true,
                    format!(
                        "the Konnector Agent uninstall did not finish within {timeout} ({what}); cluster deletion proceeds, and the agent may remain registered in Prism Central"
                    ),
                ),
                UninstallTimeoutPolicy::Block => (
                    false,
                    format!(
                        "the Konnector Agent uninstall did not finish within {timeout} ({what}); manual intervention required: check the HelmReleaseProxy status, fix the uninstall or remove the finalizers; cluster deletion stays blocked until then"
                    ),
                ),
            },
            // NOT_STARTED cannot happen after remove() deleted the HelmChartProxy; treat it as in progress.
            _ => (
                false,
                format!("waiting for CAAPH to uninstall the Konnector Agent: {what}"),
            ),
        };
        RemoveAgentResponse {
            done,
            retry_after_seconds: if done { 0 } else { c.retry_after_seconds },
            message,
            phase: phase as i32,
        }
    }

    /// Where the uninstall stands, from what remains.
    fn phase(&self, key: &ClusterKey, remains: &Remains) -> UninstallPhase {
        if remains.hcp.is_none() && remains.hrps.is_empty() {
            return if self.uninstall_seen(key, false) {
                UninstallPhase::Completed
            } else {
                UninstallPhase::NotNeeded
            };
        }
        let since = match &remains.hcp {
            Some(hcp) => match &hcp.metadata.deletion_timestamp {
                None => return UninstallPhase::NotStarted,
                Some(t) => Some(t.0),
            },
            None => remains
                .hrps
                .iter()
                .filter_map(|h| h.metadata.deletion_timestamp.as_ref().map(|t| t.0))
                .min(),
        };
        self.uninstall_seen(key, true);
        let elapsed = since.map(|t| {
            let secs = k8s_openapi::jiff::Timestamp::now().as_second() - t.as_second();
            Duration::from_secs(u64::try_from(secs).unwrap_or(0))
        });
        match elapsed {
            Some(e) if e > self.inner.config.uninstall_timeout => UninstallPhase::TimedOut,
            _ => UninstallPhase::InProgress,
        }
    }

    /// Reports, read-only, what konnector sees for a cluster.
    #[tracing::instrument(skip_all, fields(cluster.namespace = %key.namespace, cluster.name = %key.name))]
    pub async fn status(&self, key: &ClusterKey) -> Result<GetAgentStatusResponse, Error> {
        let hcp_name = helm_chart_proxy_name(&key.name);
        let remains = self.remains(key, &hcp_name).await?;
        let (credentials_copied, credentials_error) = match self.remote_secret_exists(key).await {
            Ok(b) => (b, String::new()),
            Err(e) => (false, e.to_string()),
        };
        let phase = self.phase(key, &remains);
        Ok(GetAgentStatusResponse {
            credentials_copied,
            credentials_error,
            helm_chart_proxy: remains.hcp.as_ref().map(|h| HelmChartProxyStatus {
                name: hcp_name.clone(),
                deleting: h.metadata.deletion_timestamp.is_some(),
                ready: ready_condition(&h.data),
                finalizers: h.metadata.finalizers.clone().unwrap_or_default(),
            }),
            helm_release_proxies: remains
                .hrps
                .iter()
                .map(|h| HelmReleaseProxyStatus {
                    name: h.metadata.name.clone().unwrap_or_default(),
                    deleting: h.metadata.deletion_timestamp.is_some(),
                    ready: ready_condition(&h.data),
                    release_status: h.data["status"]["status"].as_str().unwrap_or_default().to_owned(),
                    revision: h.data["status"]["revision"].as_i64().unwrap_or_default(),
                })
                .collect(),
            uninstall_phase: phase as i32,
        })
    }

    async fn remote_secret_exists(&self, key: &ClusterKey) -> Result<bool, Error> {
        let remote = self.remote_client(key).await?;
        let secrets: Api<Secret> = Api::namespaced(remote, RELEASE_NAMESPACE);
        // Only metadata is needed; a metadata GET keeps the credentials out of this process.
        let found = on_workload(
            self.inner.config.remote_timeout,
            format!("read Secret {RELEASE_NAMESPACE}/{REMOTE_SECRET_NAME}"),
            async {
                match secrets.get_metadata(REMOTE_SECRET_NAME).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
                    Err(e) => Err(e),
                }
            },
        )
        .await?;
        Ok(found)
    }
}

/// Runs one workload-cluster call with a bound, mapping every failure to an [`Error::Kube`].
async fn on_workload<T>(
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

/// Whether the Cluster's control plane has initialised, from either CAPI status shape.
pub fn control_plane_initialized(cluster: &Value) -> bool {
    let status = &cluster["status"];
    let condition_true = |conditions: &Value| {
        conditions.as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "ControlPlaneInitialized" && c["status"] == "True")
        })
    };
    status["initialization"]["controlPlaneInitialized"] == true
        || status["controlPlaneReady"] == true
        || condition_true(&status["conditions"])
        || condition_true(&status["v1beta2"]["conditions"])
}

fn ready_condition(obj: &Value) -> Option<Condition> {
    obj["status"]["conditions"].as_array()?.iter().find_map(|c| {
        (c["type"] == "Ready").then(|| Condition {
            r#type: "Ready".to_owned(),
            status: c["status"].as_str().unwrap_or_default().to_owned(),
            reason: c["reason"].as_str().unwrap_or_default().to_owned(),
            message: c["message"].as_str().unwrap_or_default().to_owned(),
        })
    })
}

/// `5m`, `90s`, `1h30m`: a fixed rendering of a configured duration, for messages.
fn humanize(d: Duration) -> String {
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
    use serde_json::json;

    use super::*;

    #[test]
    fn control_plane_initialised_shapes() {
        assert!(!control_plane_initialized(&json!({})));
        assert!(control_plane_initialized(
            &json!({"status": {"initialization": {"controlPlaneInitialized": true}}})
        ));
        assert!(control_plane_initialized(
            &json!({"status": {"controlPlaneReady": true}})
        ));
        assert!(control_plane_initialized(
            &json!({"status": {"conditions": [{"type": "ControlPlaneInitialized", "status": "True"}]}})
        ));
        assert!(!control_plane_initialized(
            &json!({"status": {"conditions": [{"type": "ControlPlaneInitialized", "status": "False"}]}})
        ));
        assert!(control_plane_initialized(
            &json!({"status": {"v1beta2": {"conditions": [
            {"type": "ControlPlaneInitialized", "status": "True"}]}}})
        ));
    }

    #[test]
    fn durations() {
        assert_eq!(humanize(Duration::from_secs(300)), "5m");
        assert_eq!(humanize(Duration::from_secs(2)), "2s");
        assert_eq!(humanize(Duration::from_secs(90)), "1m30s");
        assert_eq!(humanize(Duration::from_secs(3600)), "1h");
    }

    #[test]
    fn ready() {
        let c = ready_condition(&json!({"status": {"conditions": [
            {"type": "Other", "status": "False"},
            {"type": "Ready", "status": "True", "reason": "Ready", "message": ""}]}}))
        .unwrap();
        assert_eq!(c.status, "True");
        assert!(ready_condition(&json!({})).is_none());
    }
}
