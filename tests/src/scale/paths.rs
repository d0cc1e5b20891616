//! The comparison paths' clients and objects: the minimal client and the CAREN-like emulation.

use super::*;

/// One Cluster's objects for the comparison paths.
pub(super) struct Item {
    pub(super) cluster: String,
    pub(super) hcp_name: String,
    pub(super) hcp: Value,
}

/// The comparison paths' shared state: clients built once, and the objects konnector applied.
pub(super) struct Minimal {
    pub(super) base: MinimalApply,
    pub(super) items: Vec<Item>,
}

impl Minimal {
    pub(super) async fn new(mgmt: &Client, wl: &ControlPlane, names: &[String]) -> anyhow::Result<Self> {
        let hcps: Api<DynamicObject> = Api::namespaced_with(mgmt.clone(), NAMESPACE, &hcp_resource());
        let mut items = Vec::new();
        for name in names {
            let hcp_name = format!("konnector-agent-{name}");
            let live = hcps.get(&hcp_name).await?;
            let hcp = json!({
                "apiVersion": "addons.cluster.x-k8s.io/v1alpha1", "kind": "HelmChartProxy",
                "metadata": {"name": hcp_name, "namespace": NAMESPACE,
                    "ownerReferences": live.metadata.owner_references},
                "spec": live.data["spec"],
            });
            items.push(Item {
                cluster: name.clone(),
                hcp_name,
                hcp,
            });
        }
        let source = Api::<Secret>::namespaced(mgmt.clone(), NAMESPACE)
            .get(CREDENTIALS)
            .await?;
        let base = MinimalApply {
            mgmt: mgmt.clone(),
            workload: wl.client().await?,
            namespace: NAMESPACE.to_owned(),
            credentials: CREDENTIALS.to_owned(),
            agent_namespace: json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "ntnx-system", "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}),
            agent_secret: json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "konnector-agent", "namespace": "ntnx-system"},
                "type": source.type_, "data": source.data}),
        };
        Ok(Self { base, items })
    }

    /// The 8-call minimal re-apply ([`MinimalApply`]).
    pub(super) async fn run(&self, item: &Item) -> anyhow::Result<()> {
        self.base.run(&item.cluster, &item.hcp).await
    }

    /// An emulation of CAREN's apply: ~12 calls, and a fresh workload client built from the kubeconfig Secret three
    /// times, as its handler does.
    pub(super) async fn caren_like(&self, item: &Item) -> anyhow::Result<()> {
        let secrets = Api::<Secret>::namespaced(self.base.mgmt.clone(), NAMESPACE);
        // Owner reference on the credentials Secret: read, update, read again.
        let mut source = secrets.get(CREDENTIALS).await?;
        source.metadata.managed_fields = None;
        secrets
            .replace(CREDENTIALS, &PostParams::default(), &source)
            .await?;
        secrets.get(CREDENTIALS).await?;
        let remote = || async {
            let kubeconfig = secrets.get(&format!("{}-kubeconfig", item.cluster)).await?;
            let text = kubeconfig
                .data
                .and_then(|d| d.get("value").map(|v| String::from_utf8_lossy(&v.0).into_owned()))
                .context("no kubeconfig")?;
            let config = kube::Config::from_custom_kubeconfig(
                Kubeconfig::from_yaml(&text)?,
                &KubeConfigOptions::default(),
            )
            .await?;
            anyhow::Ok(Client::try_from(config)?)
        };
        let pp = PatchParams::apply(CAREN_MANAGER);
        let wl = remote().await?;
        let unlabelled =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ntnx-system"}});
        Api::<Namespace>::all(wl.clone())
            .patch("ntnx-system", &pp, &Patch::Apply(&unlabelled))
            .await?;
        Api::<Secret>::namespaced(wl, "ntnx-system")
            .patch(
                "konnector-agent",
                &pp.clone().force(),
                &Patch::Apply(&self.base.agent_secret),
            )
            .await?;
        let wl = remote().await?;
        Api::<Namespace>::all(wl)
            .patch("ntnx-system", &pp, &Patch::Apply(&self.base.agent_namespace))
            .await?;
        let _third = remote().await?;
        let cms = Api::<ConfigMap>::namespaced(self.base.mgmt.clone(), "default");
        cms.get_opt("default-helm-addons-config").await?;
        cms.get_opt("default-konnector-agent-helm-values-template")
            .await?;
        Api::<DynamicObject>::namespaced_with(self.base.mgmt.clone(), NAMESPACE, &hcp_resource())
            .patch(&item.hcp_name, &pp.force(), &Patch::Apply(&item.hcp))
            .await?;
        Ok(())
    }
}
