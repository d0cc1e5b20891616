//! The minimal client konnector's benchmarks compare with: the least a hand-written client must do to re-apply the
//! Konnector Agent for one Cluster (8 API calls, with clients already built). It reads the credentials Secret, the
//! kubeconfig Secret, the Cluster and the two defaults ConfigMaps, and server-side applies the agent's Namespace
//! and Secret on the workload cluster and the HelmChartProxy on the management cluster. `bench` measures the
//! latency of one re-apply against it, `scale` the throughput over many Clusters.

use anyhow::Context;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
};
use serde_json::Value;

use crate::{
    caaph_stand_in::hcp_resource,
    scenario::{AGENT_NAMESPACE, AGENT_SECRET},
    workload::cluster_resource,
};

/// The minimal re-apply, with its clients and the objects it writes built once.
pub struct MinimalApply {
    /// The management cluster.
    pub mgmt: Client,
    /// The workload cluster.
    pub workload: Client,
    /// The Clusters' namespace on the management cluster.
    pub namespace: String,
    /// The Prism Central credentials Secret in that namespace.
    pub credentials: String,
    /// The agent's Namespace, as applied on the workload cluster.
    pub agent_namespace: Value,
    /// The agent's Secret, as applied on the workload cluster.
    pub agent_secret: Value,
}

impl MinimalApply {
    /// The 8 calls for `cluster`, whose HelmChartProxy `hcp` is applied as given.
    pub async fn run(&self, cluster: &str, hcp: &Value) -> anyhow::Result<()> {
        let secrets = Api::<Secret>::namespaced(self.mgmt.clone(), &self.namespace);
        secrets.get(&self.credentials).await?;
        secrets.get(&format!("{cluster}-kubeconfig")).await?;
        Api::<DynamicObject>::namespaced_with(
            self.mgmt.clone(),
            &self.namespace,
            &cluster_resource("v1beta2"),
        )
        .get(cluster)
        .await?;
        let cms = Api::<ConfigMap>::namespaced(self.mgmt.clone(), "default");
        cms.get_opt("default-helm-addons-config").await?;
        cms.get_opt("default-konnector-agent-helm-values-template")
            .await?;
        let pp = PatchParams::apply("konnector");
        Api::<Namespace>::all(self.workload.clone())
            .patch(AGENT_NAMESPACE, &pp, &Patch::Apply(&self.agent_namespace))
            .await?;
        Api::<Secret>::namespaced(self.workload.clone(), AGENT_NAMESPACE)
            .patch(
                AGENT_SECRET,
                &pp.clone().force(),
                &Patch::Apply(&self.agent_secret),
            )
            .await?;
        let name = hcp["metadata"]["name"]
            .as_str()
            .context("HelmChartProxy without a name")?;
        Api::<DynamicObject>::namespaced_with(self.mgmt.clone(), &self.namespace, &hcp_resource())
            .patch(name, &pp.force(), &Patch::Apply(hcp))
            .await?;
        Ok(())
    }
}
