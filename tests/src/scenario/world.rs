//! What the scenario does to the management cluster as CAPI would (the Cluster, its Secrets, its deletion) and
//! the checks of what konnector did in return.

use super::*;

impl ClusterRun<'_> {
    pub(super) async fn check_applied(
        &self,
        hook: &Hook,
        answer: &HookAnswer,
        password: &str,
        expect_no_writes: bool,
        changes: &[String],
    ) -> anyhow::Result<()> {
        ensure!(answer.http_status == 200, "HTTP {}", answer.http_status);
        ensure!(
            answer.status == "Success",
            "{} answered Failure: {}",
            hook.name(),
            answer.message
        );
        if hook.is_blocking() {
            ensure!(
                answer.retry_after_seconds == Some(0),
                "{} asked to wait: {answer:?}",
                hook.name()
            );
        } else {
            ensure!(
                answer.retry_after_seconds.is_none(),
                "AfterControlPlaneInitialized carries retryAfterSeconds"
            );
        }
        ensure!(
            !answer.message.contains(password),
            "the hook answer contains the password"
        );

        let remote = self.workload.client().await?;
        let ns = Api::<Namespace>::all(remote.clone()).get(AGENT_NAMESPACE).await?;
        let labels = ns.metadata.labels.unwrap_or_default();
        ensure!(
            labels
                .get("pod-security.kubernetes.io/enforce")
                .map(String::as_str)
                == Some("privileged"),
            "namespace {AGENT_NAMESPACE} lacks the privileged pod-security label"
        );
        let secret = Api::<Secret>::namespaced(remote, AGENT_NAMESPACE)
            .get(AGENT_SECRET)
            .await?;
        let data = secret.data.unwrap_or_default();
        ensure!(
            data.get("password").map(|b| b.0.as_slice()) == Some(password.as_bytes()),
            "Secret {AGENT_NAMESPACE}/{AGENT_SECRET} does not hold the current Prism Central password"
        );
        let hcps = self.helm_chart_proxies().await?;
        ensure!(
            hcps.len() == 1,
            "expected one HelmChartProxy selecting the cluster, found {}",
            hcps.len()
        );
        if expect_no_writes {
            // HelmReleaseProxies belong to the CAAPH stand-in, which updates them on its own schedule.
            let ours: Vec<&String> = changes
                .iter()
                .filter(|c| !c.contains("HelmReleaseProxy"))
                .collect();
            ensure!(
                ours.is_empty(),
                "a re-apply with nothing new changed objects: {ours:?}"
            );
        }
        Ok(())
    }

    pub(super) async fn check_removed(&self) -> anyhow::Result<()> {
        ensure!(
            self.helm_chart_proxies().await?.is_empty(),
            "the HelmChartProxy still exists"
        );
        let hrps = Api::<DynamicObject>::namespaced_with(self.mgmt.clone(), &self.namespace, &hrp_resource())
            .list(&ListParams::default().labels(&format!("{CLUSTER_NAME_LABEL}={}", self.name)))
            .await?;
        ensure!(
            hrps.items.is_empty(),
            "HelmReleaseProxies remain: {}",
            hrps.items.len()
        );
        Ok(())
    }

    pub(super) fn cluster_api(&self) -> Api<DynamicObject> {
        // CAPI 1.10 serves v1beta1 only (the management plane is started that way for this shape).
        let version = match crate::crds::ClusterApi::for_capi(self.shape.version()) {
            crate::crds::ClusterApi::V1Beta1Only => "v1beta1",
            crate::crds::ClusterApi::V1Beta2 => "v1beta2",
        };
        Api::namespaced_with(
            self.mgmt.clone(),
            &self.namespace,
            &workload::cluster_resource(version),
        )
    }

    pub(super) async fn create_cluster(&self, password: &str) -> anyhow::Result<()> {
        self.write_credentials(password).await?;
        workload::create_workload_cluster(
            self.mgmt,
            self.workload,
            &self.namespace,
            &self.name,
            ClusterOptions {
                spec: Some({
                    let mut spec = cluster_spec(&self.name, self.workload.port(), &self.credentials_secret());
                    if let Some((url, bundle)) = &self.prism_central {
                        let pc =
                            &mut spec["topology"]["variables"][0]["value"]["nutanix"]["prismCentralEndpoint"];
                        pc["url"] = json!(url);
                        pc["insecure"] = json!(false);
                        pc["additionalTrustBundle"] = json!(bundle);
                    }
                    spec
                }),
                ..ClusterOptions::initialized()
            },
        )
        .await?;
        // CAPI keeps its finalizer on the Cluster until deletion is allowed.
        let finalizer = json!({"metadata": {"finalizers": [CAPI_CLUSTER_FINALIZER]}});
        self.cluster_api()
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&finalizer))
            .await?;
        Ok(())
    }

    pub(super) async fn write_credentials(&self, password: &str) -> anyhow::Result<()> {
        workload::put_credentials_secret(
            self.mgmt,
            &self.namespace,
            &self.credentials_secret(),
            &[("username", "admin"), ("password", password)],
        )
        .await
    }

    /// Waits until the workload Secret holds `password`, which only the reconciler can have written.
    pub(super) async fn wait_password_delivered(&self, password: &str) -> anyhow::Result<()> {
        // A hang guard well above the reconciler's resync, not a performance threshold.
        let deadline = Instant::now() + Duration::from_secs(120);
        let secrets = Api::<Secret>::namespaced(self.workload.client().await?, AGENT_NAMESPACE);
        loop {
            let delivered = secrets
                .get_opt(AGENT_SECRET)
                .await?
                .and_then(|s| s.data)
                .and_then(|d| d.get("password").map(|b| b.0 == password.as_bytes()))
                .unwrap_or(false);
            if delivered {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the rotated password never reached Secret {AGENT_NAMESPACE}/{AGENT_SECRET}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub(super) async fn wait_release_installed(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let hrps = Api::<DynamicObject>::namespaced_with(self.mgmt.clone(), &self.namespace, &hrp_resource());
        let remote = Api::<ConfigMap>::namespaced(self.workload.client().await?, AGENT_NAMESPACE);
        loop {
            let listed = hrps
                .list(&ListParams::default().labels(&format!("{CLUSTER_NAME_LABEL}={}", self.name)))
                .await?;
            let ready = !listed.items.is_empty()
                && listed.items.iter().all(|h| {
                    h.data["status"]["conditions"]
                        .as_array()
                        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
                });
            if ready && remote.get_opt(RELEASE_MARKER).await?.is_some() {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "CAAPH did not install the agent release within 60s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(super) async fn start_delete(&self) -> anyhow::Result<()> {
        self.cluster_api()
            .delete(&self.name, &DeleteParams::default())
            .await?;
        let c = self.cluster_api().get(&self.name).await?;
        ensure!(
            c.metadata.deletion_timestamp.is_some(),
            "the Cluster has no deletionTimestamp"
        );
        Ok(())
    }

    pub(super) async fn finish_delete(&self) -> anyhow::Result<()> {
        let none = json!({"metadata": {"finalizers": null}});
        self.cluster_api()
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&none))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.cluster_api().get_opt(&self.name).await?.is_some() {
            if Instant::now() > deadline {
                bail!("the Cluster still exists after its finalizer was removed");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    pub(super) async fn helm_chart_proxies(&self) -> anyhow::Result<Vec<DynamicObject>> {
        let all = Api::<DynamicObject>::namespaced_with(self.mgmt.clone(), &self.namespace, &hcp_resource())
            .list(&ListParams::default())
            .await?;
        Ok(all
            .items
            .into_iter()
            .filter(|h| {
                h.data["spec"]["clusterSelector"]["matchLabels"][CLUSTER_NAME_LABEL] == self.name.as_str()
            })
            .collect())
    }

    /// resourceVersions of every object konnector or CAAPH writes for this cluster, keyed by a printable name.
    pub(super) async fn snapshot(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let mut objects = BTreeMap::new();
        for hcp in self.helm_chart_proxies().await? {
            objects.insert(
                format!(
                    "HelmChartProxy {}/{}",
                    self.namespace,
                    hcp.metadata.name.unwrap_or_default()
                ),
                hcp.metadata.resource_version.unwrap_or_default(),
            );
        }
        let hrps = Api::<DynamicObject>::namespaced_with(self.mgmt.clone(), &self.namespace, &hrp_resource())
            .list(&ListParams::default().labels(&format!("{CLUSTER_NAME_LABEL}={}", self.name)))
            .await?;
        for hrp in hrps.items {
            objects.insert(
                format!(
                    "HelmReleaseProxy {}/{}",
                    self.namespace,
                    hrp.metadata.name.unwrap_or_default()
                ),
                hrp.metadata.resource_version.unwrap_or_default(),
            );
        }
        let remote = self.workload.client().await?;
        if let Some(ns) = Api::<Namespace>::all(remote.clone())
            .get_opt(AGENT_NAMESPACE)
            .await?
        {
            objects.insert(
                format!("workload Namespace {AGENT_NAMESPACE}"),
                ns.metadata.resource_version.unwrap_or_default(),
            );
        }
        if let Some(cm) = Api::<ConfigMap>::namespaced(remote.clone(), AGENT_NAMESPACE)
            .get_opt(RELEASE_MARKER)
            .await?
        {
            objects.insert(
                format!("workload release {AGENT_NAMESPACE}/{AGENT_SECRET} (CAAPH stand-in)"),
                cm.metadata.resource_version.unwrap_or_default(),
            );
        }
        if let Some(s) = Api::<Secret>::namespaced(remote, AGENT_NAMESPACE)
            .get_opt(AGENT_SECRET)
            .await?
        {
            objects.insert(
                format!("workload Secret {AGENT_NAMESPACE}/{AGENT_SECRET}"),
                s.metadata.resource_version.unwrap_or_default(),
            );
        }
        Ok(objects)
    }
}
