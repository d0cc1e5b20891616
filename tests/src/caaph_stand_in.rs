//! A **stand-in** for CAAPH (Cluster API Add-on Provider for Helm), for tests and the sandbox only.
//!
//! It is not CAAPH and runs no Helm. It models the parts of CAAPH's HelmChartProxy / HelmReleaseProxy lifecycle
//! that konnector depends on, as described in `shared/reference/runtime-sdk.md` §5.4–§5.6, by polling the
//! management API server:
//!
//! * every HelmChartProxy gets the finalizer `helmchartproxy.addons.cluster.x-k8s.io`;
//! * for each Cluster in the HCP's namespace matching `spec.clusterSelector.matchLabels` (matchExpressions are
//!   not modelled) it creates one HelmReleaseProxy: `generateName: <chartName>-<cluster>-`, labels
//!   `cluster.x-k8s.io/cluster-name` and `helmreleaseproxy.addons.cluster.x-k8s.io/helmchartproxy-name`, a
//!   controller ownerReference to the HCP, the finalizer `helmreleaseproxy.addons.cluster.x-k8s.io`, and
//!   `spec.clusterRef`/chart fields/`values` (the HCP's `valuesTemplate`, taken as already rendered);
//! * "installing" a release writes the ConfigMap `<release namespace>/<release name>-release` on the workload
//!   cluster (reached through the `<cluster>-kubeconfig` Secret), holding the values; it stands for the objects
//!   a Helm release owns. Ready conditions are then set on the HRP and the HCP;
//! * with [`CaaphOptions::upgrades`], a changed `version` or values is an in-place upgrade of the same HRP
//!   (`status.revision` + 1), as CAAPH upgrades; without it (the default) a deployed HRP is never touched again;
//! * when an HCP is being deleted, it deletes the HCP's HRPs, and removes the HCP finalizer once they are gone;
//! * when an HRP is being deleted, it "uninstalls" after [`Uninstall::After`] (deletes that ConfigMap, then the
//!   HRP finalizer), or never with [`Uninstall::Never`], to model a stuck uninstall.
//!
//! Note what it deliberately does **not** touch: Secret `ntnx-system/konnector-agent` is written by konnector,
//! not by the Helm release, so a real `helm uninstall` would leave it too.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Client,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
        PostParams,
    },
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::{Value, json};

use crate::workload::{CLUSTER_NAME_LABEL, cluster_resource};

/// CAAPH's HelmChartProxy finalizer.
pub const HCP_FINALIZER: &str = "helmchartproxy.addons.cluster.x-k8s.io";
/// CAAPH's HelmReleaseProxy finalizer.
pub const HRP_FINALIZER: &str = "helmreleaseproxy.addons.cluster.x-k8s.io";
/// CAAPH's label naming an HRP's HelmChartProxy.
pub const HCP_NAME_LABEL: &str = "helmreleaseproxy.addons.cluster.x-k8s.io/helmchartproxy-name";
const MANAGER: &str = "caaph-stand-in";

/// When a deleted HelmReleaseProxy's "helm uninstall" finishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uninstall {
    /// This long after the stand-in first sees the HRP being deleted.
    After(Duration),
    /// Never: the HRP, and so the HCP, stay terminating (a stuck uninstall).
    Never,
}

/// Options for [`CaaphStandIn::start`].
#[derive(Clone, Debug)]
pub struct CaaphOptions {
    /// How often the stand-in reconciles everything.
    pub poll_interval: Duration,
    /// Uninstall behaviour.
    pub uninstall: Uninstall,
    /// Model CAAPH's upgrades (off by default, as before): when a HelmChartProxy's `version` or values (compared
    /// as YAML, as CAAPH's `shouldUpgradeHelmRelease` compares rendered values) change, its HelmReleaseProxy's spec
    /// is updated in place, and the release is upgraded: `status.revision` + 1 on the same HelmReleaseProxy, the
    /// release ConfigMap rewritten. Any other change leaves the release alone.
    pub upgrades: bool,
}

impl Default for CaaphOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(200),
            uninstall: Uninstall::After(Duration::from_millis(500)),
            upgrades: false,
        }
    }
}

/// The running stand-in. Dropping it stops it.
#[derive(Debug)]
pub struct CaaphStandIn {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CaaphStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `ApiResource` of CAAPH's HelmChartProxy.
pub fn hcp_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("addons.cluster.x-k8s.io", "v1alpha1", "HelmChartProxy"),
        "helmchartproxies",
    )
}

/// The `ApiResource` of CAAPH's HelmReleaseProxy.
pub fn hrp_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("addons.cluster.x-k8s.io", "v1alpha1", "HelmReleaseProxy"),
        "helmreleaseproxies",
    )
}

impl CaaphStandIn {
    /// Starts reconciling on `mgmt` (a client with rights over HCPs, HRPs, Clusters and Secrets).
    pub fn start(mgmt: Client, options: CaaphOptions) -> Self {
        let task = tokio::spawn(async move {
            let mut state = State {
                mgmt,
                options,
                deleting_since: HashMap::new(),
            };
            loop {
                if let Err(error) = state.reconcile().await {
                    tracing::debug!(%error, "CAAPH stand-in reconcile failed; retrying");
                }
                tokio::time::sleep(state.options.poll_interval).await;
            }
        });
        Self { task }
    }
}

struct State {
    mgmt: Client,
    options: CaaphOptions,
    /// When each deleting HRP (by uid) was first seen deleting.
    deleting_since: HashMap<String, Instant>,
}

fn has_finalizer(obj: &DynamicObject, f: &str) -> bool {
    obj.metadata.finalizers.iter().flatten().any(|x| x == f)
}

fn ready_condition() -> Value {
    json!([{"type": "Ready", "status": "True", "reason": "Ready", "message": "stand-in release deployed",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}])
}

impl State {
    async fn reconcile(&mut self) -> anyhow::Result<()> {
        let hcps: Api<DynamicObject> = Api::all_with(self.mgmt.clone(), &hcp_resource());
        for hcp in hcps.list(&ListParams::default()).await?.items {
            self.reconcile_hcp(&hcp).await?;
        }
        let hrps: Api<DynamicObject> = Api::all_with(self.mgmt.clone(), &hrp_resource());
        for hrp in hrps.list(&ListParams::default()).await?.items {
            self.reconcile_hrp(&hrp).await?;
        }
        Ok(())
    }

    async fn set_finalizers(
        &self,
        ar: &ApiResource,
        obj: &DynamicObject,
        finalizers: Vec<String>,
    ) -> anyhow::Result<()> {
        let ns = obj.metadata.namespace.clone().unwrap_or_default();
        let name = obj.metadata.name.clone().unwrap_or_default();
        let api: Api<DynamicObject> = Api::namespaced_with(self.mgmt.clone(), &ns, ar);
        // Optimistic concurrency, as a controller would: a conflict is retried on the next poll.
        let patch = json!({"metadata": {"finalizers": finalizers,
                                        "resourceVersion": obj.metadata.resource_version}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    async fn reconcile_hcp(&mut self, hcp: &DynamicObject) -> anyhow::Result<()> {
        let ns = hcp.metadata.namespace.clone().unwrap_or_default();
        let name = hcp.metadata.name.clone().unwrap_or_default();
        let hrps: Api<DynamicObject> = Api::namespaced_with(self.mgmt.clone(), &ns, &hrp_resource());
        let mine = hrps
            .list(&ListParams::default().labels(&format!("{HCP_NAME_LABEL}={name}")))
            .await?
            .items;

        if hcp.metadata.deletion_timestamp.is_some() {
            for hrp in mine.iter().filter(|h| h.metadata.deletion_timestamp.is_none()) {
                let hrp_name = hrp.metadata.name.clone().unwrap_or_default();
                hrps.delete(&hrp_name, &DeleteParams::default()).await?;
            }
            if mine.is_empty() && has_finalizer(hcp, HCP_FINALIZER) {
                let rest = hcp
                    .metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .filter(|f| *f != HCP_FINALIZER)
                    .cloned()
                    .collect();
                self.set_finalizers(&hcp_resource(), hcp, rest).await?;
            }
            return Ok(());
        }

        if !has_finalizer(hcp, HCP_FINALIZER) {
            let mut all: Vec<String> = hcp.metadata.finalizers.clone().unwrap_or_default();
            all.push(HCP_FINALIZER.to_owned());
            self.set_finalizers(&hcp_resource(), hcp, all).await?;
        }

        let selector: BTreeMap<String, String> =
            serde_json::from_value(hcp.data["spec"]["clusterSelector"]["matchLabels"].clone())
                .unwrap_or_default();
        // Clusters in whichever version the management cluster serves (v1beta1 only on CAPI 1.10).
        let version = crate::workload::served_cluster_version(&self.mgmt).await?;
        let cluster_api_version = format!("cluster.x-k8s.io/{version}");
        let clusters: Api<DynamicObject> =
            Api::namespaced_with(self.mgmt.clone(), &ns, &cluster_resource(version));
        let matching: Vec<DynamicObject> = clusters
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|c| {
                let labels = c.metadata.labels.clone().unwrap_or_default();
                selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect();
        let spec = &hcp.data["spec"];
        for cluster in &matching {
            let cluster_name = cluster.metadata.name.clone().unwrap_or_default();
            if cluster.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if let Some(existing) = mine.iter().find(|h| {
                h.metadata.labels.as_ref().and_then(|l| l.get(CLUSTER_NAME_LABEL)) == Some(&cluster_name)
            }) {
                if self.options.upgrades && existing.metadata.deletion_timestamp.is_none() {
                    self.update_hrp(existing, spec).await?;
                }
                continue;
            }
            let chart = spec["chartName"].as_str().unwrap_or_default();
            let hrp = json!({
                "apiVersion": "addons.cluster.x-k8s.io/v1alpha1",
                "kind": "HelmReleaseProxy",
                "metadata": {
                    "generateName": format!("{chart}-{cluster_name}-"),
                    "namespace": ns,
                    "labels": {CLUSTER_NAME_LABEL: cluster_name, HCP_NAME_LABEL: name},
                    "finalizers": [HRP_FINALIZER],
                    "ownerReferences": [{
                        "apiVersion": "addons.cluster.x-k8s.io/v1alpha1", "kind": "HelmChartProxy",
                        "name": name, "uid": hcp.metadata.uid, "controller": true, "blockOwnerDeletion": true,
                    }],
                },
                "spec": {
                    "clusterRef": {"apiVersion": cluster_api_version, "kind": "Cluster",
                                   "name": cluster_name, "namespace": ns},
                    "chartName": chart,
                    "repoURL": spec["repoURL"],
                    "releaseName": spec["releaseName"],
                    "namespace": spec["namespace"],
                    "version": spec["version"],
                    "values": spec["valuesTemplate"],
                    "options": spec["options"],
                },
            });
            let hrp: DynamicObject = serde_json::from_value(hrp)?;
            hrps.create(&PostParams::default(), &hrp).await?;
        }
        let status = json!({"status": {
            "conditions": ready_condition(),
            "matchingClusters": matching.iter().map(|c| json!({
                "apiVersion": cluster_api_version, "kind": "Cluster",
                "name": c.metadata.name, "namespace": ns})).collect::<Vec<_>>(),
        }});
        Api::<DynamicObject>::namespaced_with(self.mgmt.clone(), &ns, &hcp_resource())
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        Ok(())
    }

    /// With [`CaaphOptions::upgrades`]: carries a changed `version` or values into the HelmReleaseProxy.
    async fn update_hrp(&self, hrp: &DynamicObject, hcp_spec: &Value) -> anyhow::Result<()> {
        let have = &hrp.data["spec"];
        let yaml = |v: &Value| serde_yaml_ng::from_str::<Value>(v.as_str().unwrap_or_default()).ok();
        let same_values = match (yaml(&have["values"]), yaml(&hcp_spec["valuesTemplate"])) {
            (Some(a), Some(b)) => a == b,
            _ => have["values"] == hcp_spec["valuesTemplate"],
        };
        if have["version"] == hcp_spec["version"] && same_values {
            return Ok(());
        }
        let ns = hrp.metadata.namespace.clone().unwrap_or_default();
        let patch = json!({"spec": {"version": hcp_spec["version"], "values": hcp_spec["valuesTemplate"]}});
        Api::<DynamicObject>::namespaced_with(self.mgmt.clone(), &ns, &hrp_resource())
            .patch(
                hrp.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        Ok(())
    }

    async fn reconcile_hrp(&mut self, hrp: &DynamicObject) -> anyhow::Result<()> {
        let ns = hrp.metadata.namespace.clone().unwrap_or_default();
        let name = hrp.metadata.name.clone().unwrap_or_default();
        let uid = hrp.metadata.uid.clone().unwrap_or_default();
        if hrp.metadata.deletion_timestamp.is_some() {
            if !has_finalizer(hrp, HRP_FINALIZER) {
                return Ok(());
            }
            let since = *self.deleting_since.entry(uid).or_insert_with(Instant::now);
            let finished = match self.options.uninstall {
                Uninstall::After(d) => since.elapsed() >= d,
                Uninstall::Never => false,
            };
            if finished {
                // Best effort, as `helm uninstall` on a gone cluster: a workload error does not keep the HRP.
                if let Err(error) = self.release_configmap(hrp, None).await {
                    tracing::debug!(%error, hrp = %name, "stand-in uninstall could not reach the workload cluster");
                }
                let rest = hrp
                    .metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .filter(|f| *f != HRP_FINALIZER)
                    .cloned()
                    .collect();
                self.set_finalizers(&hrp_resource(), hrp, rest).await?;
            }
            return Ok(());
        }
        let generation = hrp.metadata.generation.unwrap_or_default();
        let revision = hrp.data["status"]["revision"].as_i64().unwrap_or_default();
        let deployed = hrp.data["status"]["status"] == "deployed";
        // An upgrade: the spec changed since the revision that is deployed (update_hrp changed it).
        let upgrade = self.options.upgrades
            && deployed
            && hrp.data["status"]["observedGeneration"]
                .as_i64()
                .unwrap_or(generation)
                < generation;
        if deployed && !upgrade {
            return Ok(());
        }
        let values = hrp.data["spec"]["values"].as_str().unwrap_or_default().to_owned();
        let status = match self.release_configmap(hrp, Some(values)).await {
            Ok(()) if self.options.upgrades => json!({"status": {"conditions": ready_condition(),
                "status": "deployed", "revision": revision + 1, "observedGeneration": generation}}),
            Ok(()) => {
                json!({"status": {"conditions": ready_condition(), "status": "deployed", "revision": 1}})
            }
            Err(error) => json!({"status": {"conditions": [{
                "type": "Ready", "status": "False", "reason": "HelmInstallOrUpgradeFailed",
                "message": format!("stand-in install failed: {error}"),
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}),
        };
        Api::<DynamicObject>::namespaced_with(self.mgmt.clone(), &ns, &hrp_resource())
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        Ok(())
    }

    /// Writes (`Some(values)`) or deletes (`None`) the ConfigMap standing for the release's objects.
    async fn release_configmap(&self, hrp: &DynamicObject, values: Option<String>) -> anyhow::Result<()> {
        let ns = hrp.metadata.namespace.clone().unwrap_or_default();
        let cluster = hrp.data["spec"]["clusterRef"]["name"]
            .as_str()
            .unwrap_or_default();
        let release_ns = hrp.data["spec"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let cm_name = format!(
            "{}-release",
            hrp.data["spec"]["releaseName"].as_str().unwrap_or("release")
        );
        let secret = Api::<Secret>::namespaced(self.mgmt.clone(), &ns)
            .get(&format!("{cluster}-kubeconfig"))
            .await?;
        let bytes = secret
            .data
            .and_then(|mut d| d.remove("value"))
            .ok_or_else(|| anyhow::anyhow!("kubeconfig Secret without key value"))?;
        let kubeconfig = Kubeconfig::from_yaml(std::str::from_utf8(&bytes.0)?)?;
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        config.connect_timeout = Some(Duration::from_secs(2));
        config.read_timeout = Some(Duration::from_secs(5));
        let remote = Client::try_from(config)?;
        let api: Api<ConfigMap> = Api::namespaced(remote, &release_ns);
        match values {
            Some(values) => {
                let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": cm_name, "namespace": release_ns},
                                "data": {"values.yaml": values}});
                api.patch(&cm_name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&cm))
                    .await?;
            }
            None => match api.delete(&cm_name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            },
        }
        Ok(())
    }
}
