//! PlanAgent, and the plan ApplyAgent writes: every read and check, nothing written.

use super::*;

impl Executor {
    /// Renders what [`Executor::apply`] would write, and writes nothing.
    #[tracing::instrument(skip_all, fields(konnector.cluster.namespace = %cluster.key.namespace, konnector.cluster.name = %cluster.key.name))]
    pub async fn plan(&self, cluster: &ClusterRef) -> Result<PlanOutcome, Error> {
        let live = self.clusters().existing(cluster).await?;
        let Some(req) = agent_request(&live)? else {
            return Ok(PlanOutcome {
                namespace: None,
                secret: None,
                hcp: None,
                notes: vec![
                    "Konnector Agent addon is not configured for this cluster; nothing would be applied"
                        .to_owned(),
                ],
            });
        };
        let mut plan = self.plan_for(&live, &req).await?;
        if live.deleting() {
            plan.notes
                .push("the Cluster is being deleted, so ApplyAgent would refuse to apply this".to_owned());
        }
        Ok(PlanOutcome {
            namespace: Some(plan.namespace),
            secret: Some(objects::redacted_secret(&plan.secret)),
            hcp: Some(plan.hcp),
            notes: plan.notes,
        })
    }

    pub(crate) async fn plan_for(&self, live: &LiveCluster, req: &AgentRequest) -> Result<Plan, Error> {
        self.plan_with(live, req, false).await
    }

    /// [`Executor::plan_for`]; with `trust_watch`, a HelmChartProxy that the hooks' watch proves to be exactly what
    /// this plan would write is neither checked nor written (`Plan::hcp_unchanged`).
    pub(crate) async fn plan_with(
        &self,
        live: &LiveCluster,
        req: &AgentRequest,
        trust_watch: bool,
    ) -> Result<Plan, Error> {
        let key = &live.key;
        if !live.selectable() {
            return Err(Error::ClusterNotSelectable {
                cluster: key.to_string(),
                name: key.name.clone(),
            });
        }
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
            secret: secret_ref.clone(),
            problem,
        })?;
        notes.extend(objects::api_key_note(&source, &secret_ref));

        let chart = self.chart_coordinates(&mut notes).await?;
        let (template, template_source) = self.values_template(&mut notes).await?;
        // Every input is validated, and the rendered values are checked for structure and against the agent
        // chart's contract for this chart version, before anything is written.
        let rendered =
            render_checked(&template, &template_values(req), &chart.chart_version).map_err(|error| {
                Error::RenderValues {
                    source_name: template_source,
                    error,
                }
            })?;
        let ignored = rendered.notes.clone();
        notes.extend(rendered.notes);
        let cluster_api_version = live.version.api_version();
        let source_resource_version = source.metadata.resource_version.clone().unwrap_or_default();
        let build = |name: &str| {
            objects::helm_chart_proxy(
                &HelmChartProxyInput {
                    cluster: key,
                    cluster_uid: &live.uid,
                    cluster_api_version: &cluster_api_version,
                    chart: &chart,
                    values: &rendered.values_template,
                    helm_repository_ca_namespace: &self.inner.config.helm_repository_ca_namespace,
                },
                name,
            )
        };
        // The proxy this process last wrote for this Cluster, from these credentials, still at the version that
        // write produced (the watch says so), and the same body again: its name and ownership were checked then,
        // nobody changed it since, and a write would change nothing.
        let skip = trust_watch
            .then(|| self.memory().last_applied(key))
            .flatten()
            .filter(|a| a.cluster_uid == live.uid && a.source_resource_version == source_resource_version)
            .filter(|a| {
                self.clusters()
                    .hooks()
                    .hcp_version(&key.namespace, &a.hcp_name)
                    .is_some_and(|rv| !rv.is_empty() && rv == a.hcp_resource_version)
            })
            .map(|a| (build(&a.hcp_name), a))
            .filter(|(hcp, a)| value_digest(hcp) == a.hcp_digest);
        let (resolved, hcp, hcp_unchanged) = match skip {
            Some((hcp, a)) => (
                ownership::Resolved {
                    name: a.hcp_name,
                    resource_version: Some(a.hcp_resource_version),
                    notes: a.hcp_notes,
                },
                hcp,
                true,
            ),
            None => {
                let resolved = ownership::resolve_hcp_name(self.mgmt(), live).await?;
                let hcp = build(&resolved.name);
                (resolved, hcp, false)
            }
        };
        notes.extend(resolved.notes.iter().cloned());
        let hcp_name = resolved.name;
        Ok(Plan {
            ignored,
            hcp_name,
            hcp_resource_version: resolved.resource_version,
            source_resource_version,
            namespace: objects::namespace_object(),
            secret: objects::remote_secret(&source),
            hcp,
            chart,
            notes,
            hcp_notes: resolved.notes,
            hcp_unchanged,
        })
    }

    async fn read_configmap(&self, name: &str) -> Result<Option<ConfigMap>, Error> {
        let c = &self.inner.config;
        let ns = &c.defaults_namespace;
        let watched = self.defaults().watched().await;
        if let Some(known) = watched.get(name) {
            return Ok(known);
        }
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
        let builtin = || {
            (
                BUILTIN_VALUES_TEMPLATE.to_owned(),
                "the built-in values template".to_owned(),
            )
        };
        let Some(cm) = self.read_configmap(&c.values_template_configmap).await? else {
            notes.push(format!(
                "ConfigMap {cm_ref} not found; using the built-in values template"
            ));
            return Ok(builtin());
        };
        match cm.data.as_ref().and_then(|d| d.get(VALUES_TEMPLATE_KEY)) {
            Some(t) => Ok((t.clone(), format!("ConfigMap {cm_ref} key {VALUES_TEMPLATE_KEY}"))),
            None => {
                notes.push(format!(
                    "ConfigMap {cm_ref} has no key {VALUES_TEMPLATE_KEY:?}; using the built-in values template"
                ));
                Ok(builtin())
            }
        }
    }
}
