//! A management cluster driven by the real CAPI core manager: konnector's executor and gateway registered through
//! the chart's ExtensionConfig, the test provider ([`crate::capi_provider`]), a ClusterClass whose `clusterConfig`
//! variable is shaped as CAREN's Nutanix ClusterClass defines it, the CAAPH stand-in, and a recording proxy in
//! front of the gateway that keeps every hook call CAPI makes ([`crate::hook_recorder`]).
//!
//! Nothing here calls a hook: CAPI does, when the Cluster's state says so.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Secret;
use konnector_executor::{ExecutorConfig, prism::PreflightMode};
use kube::{
    Api, Client,
    api::{DynamicObject, ObjectMeta, Patch, PatchParams},
};
use serde_json::{Value, json};

use crate::{
    caaph_stand_in::{CaaphOptions, CaaphStandIn, Uninstall},
    capi_manager::{CapiManager, CapiOptions},
    capi_provider::{self, CONTROL_PLANE_API_VERSION, INFRA_API_VERSION, Target, TestProvider},
    control_plane::ControlPlane,
    crds::{self, HARNESS_MANAGER},
    executor_fixture::{RunningExecutor, executor_mgmt_client, serve_executor_with_flags},
    gateway_fixture::{RunningGateway, serve_gateway, write_gateway_certs},
    hook_recorder::HookRecorder,
    management_plane,
    prism_central_stand_in::{Behaviour, PrismCentralStandIn},
    tools, workload,
};

/// The namespace konnector runs in (the defaults ConfigMaps and the gateway's serving Secret live here).
pub const KONNECTOR_NAMESPACE: &str = "konnector-system";
/// The ClusterClass every test Cluster uses.
pub const CLUSTER_CLASS: &str = "konnector-quick-start";
/// The ExtensionConfig's name (the chart's default): CAPI qualifies handler names with it.
pub const EXTENSION_CONFIG: &str = "konnector";
/// The Kubernetes version Clusters are created at, and the one an upgrade moves to (one minor up, as CAPI's
/// default upgrade plan allows).
pub const VERSIONS: (&str, &str) = ("v1.33.0", "v1.34.0");

/// How long CAPI may take to do what a test waits for. A hang guard on a shared machine, not a measurement.
pub const GUARD: Duration = Duration::from_secs(180);

/// Options for [`RealCapiEnv::start`].
#[derive(Clone, Debug, Default)]
pub struct EnvOptions {
    /// Which CAPI release, and its flags.
    pub capi: CapiOptions,
    /// Serve the gateway with client-certificate verification against this CA file (the chart's
    /// `requireClientCert`).
    pub gateway_client_ca: Option<std::path::PathBuf>,
    /// The chart's `--set` values for the ExtensionConfig, beyond `capiVersion`.
    pub chart_sets: Vec<String>,
    /// More executor flags, e.g. the sandbox's `--client-read-only-names=konnector-cli`; a restarted executor
    /// gets them too.
    pub executor_flags: Vec<String>,
}

/// Everything, running.
pub struct RealCapiEnv {
    /// The management cluster's admin client.
    pub mgmt_client: Client,
    /// The CAPI core manager.
    pub capi: CapiManager,
    /// The test infrastructure and control-plane provider.
    pub provider: TestProvider,
    /// The executor (no reconciler: every agent change in these tests comes from a hook CAPI called).
    pub executor: Option<RunningExecutor>,
    /// The gateway.
    pub gateway: Option<RunningGateway>,
    /// The recording proxy CAPI calls; it forwards to the gateway.
    pub recorder: HookRecorder,
    /// The CAAPH stand-in.
    pub caaph: Option<CaaphStandIn>,
    /// The Prism Central stand-in the Clusters point at.
    pub prism_central: PrismCentralStandIn,
    gateway_tls: (String, konnector_gateway::TlsFiles),
    executor_flags: Vec<String>,
    _certs: tempfile::TempDir,
    // Last: the API server outlives every client above.
    /// The management control plane.
    pub mgmt: ControlPlane,
}

impl RealCapiEnv {
    /// Starts the management cluster and CAPI, konnector and its ExtensionConfig (waiting until CAPI has
    /// discovered it), the provider and the ClusterClass in `namespace`.
    pub async fn start(namespace: &str, options: EnvOptions) -> anyhow::Result<Self> {
        konnector_runtime::tls::install_crypto_provider();
        let (mgmt, mgmt_client) = management_plane("management").await?;
        let capi = CapiManager::start(&mgmt, options.capi.clone()).await?;
        crds::install(&mgmt_client, &capi_provider::crd_manifests()).await?;
        let provider = TestProvider::start(mgmt_client.clone());
        crate::control_plane::ensure_namespace(&mgmt_client, KONNECTOR_NAMESPACE).await?;
        crate::control_plane::ensure_namespace(&mgmt_client, namespace).await?;

        let prism_central = PrismCentralStandIn::start_any_password("admin", Behaviour::Normal).await?;
        let executor = start_executor_with(&mgmt, &options.executor_flags).await?;
        let certs = tempfile::Builder::new().prefix("konnector-capi-gw-").tempdir()?;
        let (ca_pem, mut files) = write_gateway_certs(certs.path())?;
        files.client_ca = options.gateway_client_ca.clone();
        let gateway = serve_gateway(&executor.endpoint(), "1.14", files.clone(), ca_pem.clone()).await?;
        let recorder = HookRecorder::start(&gateway.url(), &ca_pem, certs.path()).await?;
        let caaph = CaaphStandIn::start(
            mgmt_client.clone(),
            CaaphOptions {
                uninstall: Uninstall::After(Duration::from_millis(1500)),
                ..Default::default()
            },
        );
        let env = Self {
            mgmt_client,
            capi,
            provider,
            executor: Some(executor),
            gateway: Some(gateway),
            recorder,
            caaph: Some(caaph),
            prism_central,
            gateway_tls: (ca_pem, files),
            executor_flags: options.executor_flags.clone(),
            _certs: certs,
            mgmt,
        };
        // With client certificates, CAPI must reach the gateway itself: the proxy would present its own.
        env.register_extension(&options.chart_sets, options.gateway_client_ca.is_some())
            .await?;
        env.install_cluster_class(namespace).await?;
        Ok(env)
    }

    /// The chart's ExtensionConfig and default ConfigMaps, rendered by helm, applied as the chart would be: the
    /// ExtensionConfig keeps its `inject-ca-from-secret` annotation and gets no caBundle from us; CAPI copies
    /// `ca.crt` from that Secret itself. It points at the recording proxy by URL (there is no Service), or with `direct` at the gateway.
    async fn register_extension(&self, sets: &[String], direct: bool) -> anyhow::Result<()> {
        let mut all_sets = vec!["capiVersion=1.14".to_owned()];
        all_sets.extend(sets.iter().cloned());
        let set_refs: Vec<&str> = all_sets.iter().map(String::as_str).collect();
        let docs = tools::render_chart(
            KONNECTOR_NAMESPACE,
            &set_refs,
            &["templates/configmaps.yaml", "templates/extensionconfig.yaml"],
        )?;
        for mut doc in docs {
            if doc["kind"] == "ExtensionConfig" {
                let inject = doc["metadata"]["annotations"]["runtime.cluster.x-k8s.io/inject-ca-from-secret"]
                    .as_str()
                    .context("the chart's ExtensionConfig has no inject-ca-from-secret annotation")?
                    .to_owned();
                let (ns, name) = inject
                    .split_once('/')
                    .context("annotation is not namespace/name")?;
                self.put_serving_secret(ns, name).await?;
                let url = match (&self.gateway, direct) {
                    (Some(g), true) => g.url(),
                    _ => self.recorder.url(),
                };
                doc["spec"]["clientConfig"] = json!({ "url": url });
            }
            tools::apply_manifest(
                &self.mgmt_client,
                &doc,
                KONNECTOR_NAMESPACE,
                &PatchParams::apply(HARNESS_MANAGER).force(),
            )
            .await?;
        }
        self.wait_discovered().await
    }

    /// The gateway's serving Secret as cert-manager writes it (`ca.crt`, `tls.crt`, `tls.key`).
    async fn put_serving_secret(&self, namespace: &str, name: &str) -> anyhow::Result<()> {
        let (ca_pem, files) = &self.gateway_tls;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".to_owned()),
            data: Some(
                [
                    ("ca.crt", ca_pem.clone().into_bytes()),
                    ("tls.crt", std::fs::read(&files.cert)?),
                    ("tls.key", std::fs::read(&files.key)?),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), k8s_openapi::ByteString(v)))
                .collect(),
            ),
            ..Default::default()
        };
        Api::<Secret>::namespaced(self.mgmt_client.clone(), namespace)
            .patch(
                name,
                &PatchParams::apply(HARNESS_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await?;
        Ok(())
    }

    /// The CA (PEM) the gateway's serving certificate chains to: what CAPI verifies it with.
    pub fn gateway_ca_pem(&self) -> &str {
        &self.gateway_tls.0
    }

    /// The ExtensionConfig as CAPI left it.
    pub async fn extension_config(&self) -> anyhow::Result<DynamicObject> {
        let ar = kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("runtime.cluster.x-k8s.io", "v1beta2", "ExtensionConfig"),
            "extensionconfigs",
        );
        Ok(Api::<DynamicObject>::all_with(self.mgmt_client.clone(), &ar)
            .get(EXTENSION_CONFIG)
            .await?)
    }

    /// Waits until CAPI's ExtensionConfig controller has discovered the gateway: `status.handlers` lists
    /// konnector's three handlers.
    pub async fn wait_discovered(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + GUARD;
        loop {
            let ec = self.extension_config().await?;
            if ec.data["status"]["handlers"].as_array().map_or(0, Vec::len) == 3 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "CAPI did not discover the ExtensionConfig; its status: {}\nCAPI's log:\n{}",
                    ec.data["status"],
                    self.capi.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The provider's templates and the ClusterClass in `namespace`; waits until CAPI has reconciled the class
    /// (its variables are in its status), which its Cluster webhook needs.
    async fn install_cluster_class(&self, namespace: &str) -> anyhow::Result<()> {
        let pp = PatchParams::apply(HARNESS_MANAGER).force();
        for (api_version, kind) in [
            (INFRA_API_VERSION, "KonnectorTestClusterTemplate"),
            (CONTROL_PLANE_API_VERSION, "KonnectorTestControlPlaneTemplate"),
        ] {
            let doc = json!({
                "apiVersion": api_version, "kind": kind,
                "metadata": {"name": CLUSTER_CLASS, "namespace": namespace},
                "spec": {"template": {"spec": {}}},
            });
            tools::apply_manifest(&self.mgmt_client, &doc, namespace, &pp).await?;
        }
        tools::apply_manifest(&self.mgmt_client, &cluster_class(namespace), namespace, &pp).await?;
        let ar = kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", "ClusterClass"),
            "clusterclasses",
        );
        let api: Api<DynamicObject> = Api::namespaced_with(self.mgmt_client.clone(), namespace, &ar);
        let deadline = Instant::now() + GUARD;
        loop {
            let cc = api.get(CLUSTER_CLASS).await?;
            if cc.data["status"]["variables"]
                .as_array()
                .is_some_and(|v| !v.is_empty())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "CAPI did not reconcile ClusterClass {namespace}/{CLUSTER_CLASS}: {}\nCAPI's log:\n{}",
                    cc.data["status"],
                    self.capi.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Creates the topology Cluster `namespace/name` (served by `workload`) and, with `addon`, the credentials
    /// Secret its `clusterConfig` names; the test provider and CAPI do the rest.
    pub async fn create_cluster(
        &self,
        namespace: &str,
        name: &str,
        workload: &ControlPlane,
        addon: Option<&str>,
    ) -> anyhow::Result<()> {
        self.provider.add_target(namespace, name, Target::of(workload));
        let mut cluster_config = json!({
            "nutanix": {"prismCentralEndpoint": {
                "url": self.prism_central.url(),
                "insecure": false,
                "additionalTrustBundle": self.prism_central.trust_bundle(),
                "credentials": {"secretRef": {"name": format!("{name}-pc-creds")}},
            }},
            "controlPlane": {"nutanix": {"machineDetails": {
                "additionalCategories": [{"key": "Environment", "value": "RealCapi"}]}}},
        });
        if let Some(secret) = addon {
            cluster_config["addons"] = json!({"konnectorAgent": {
                "strategy": "HelmAddon",
                "credentials": {"secretRef": {"name": secret}},
            }});
        }
        let cluster = json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2",
            "kind": "Cluster",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"topology": {
                "classRef": {"name": CLUSTER_CLASS},
                "version": VERSIONS.0,
                "variables": [{"name": "clusterConfig", "value": cluster_config}],
            }},
        });
        tools::apply_manifest(
            &self.mgmt_client,
            &cluster,
            namespace,
            &PatchParams::apply(HARNESS_MANAGER).force(),
        )
        .await
    }

    /// The Cluster (v1beta2), if it exists.
    pub async fn cluster(&self, namespace: &str, name: &str) -> anyhow::Result<Option<DynamicObject>> {
        Ok(self.clusters(namespace).get_opt(name).await?)
    }

    /// The v1beta2 Cluster API in `namespace`.
    pub fn clusters(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.mgmt_client.clone(),
            namespace,
            &workload::cluster_resource("v1beta2"),
        )
    }

    /// Waits until `check` holds for the Cluster (or its absence), saying what it waited for when it does not.
    pub async fn wait_cluster(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        check: impl Fn(Option<&DynamicObject>) -> bool,
    ) -> anyhow::Result<Option<DynamicObject>> {
        let deadline = Instant::now() + GUARD;
        loop {
            let cluster = self.cluster(namespace, name).await?;
            if check(cluster.as_ref()) {
                return Ok(cluster);
            }
            if Instant::now() > deadline {
                bail!(
                    "Cluster {namespace}/{name}: {what} did not happen; the Cluster: {}\nhooks CAPI called: {:?}\n\
                     CAPI's log:\n{}",
                    cluster.map(|c| c.data).unwrap_or(Value::Null),
                    self.recorder.summary(),
                    self.capi.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Sets the Cluster's `spec.topology.version`: CAPI calls BeforeClusterUpgrade before it rolls it out.
    pub async fn bump_version(&self, namespace: &str, name: &str, to: &str) -> anyhow::Result<()> {
        self.clusters(namespace)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"topology": {"version": to}}})),
            )
            .await?;
        Ok(())
    }

    /// The control plane's `(spec.version, status.version)`, as the test provider reports them.
    pub async fn control_plane_versions(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<(Value, Value)> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.mgmt_client.clone(),
            namespace,
            &capi_provider::resource("KonnectorTestControlPlane"),
        );
        let list = api
            .list(
                &kube::api::ListParams::default().labels(&format!("{}={name}", workload::CLUSTER_NAME_LABEL)),
            )
            .await?;
        let cp = list.items.first().context("no control plane yet")?;
        Ok((
            cp.data["spec"]["version"].clone(),
            cp.data["status"]["version"].clone(),
        ))
    }

    /// Stops the gateway (CAPI's calls then fail at the proxy: connection refused behind it).
    pub async fn stop_gateway(&mut self) -> anyhow::Result<()> {
        if let Some(g) = self.gateway.take() {
            g.stop().await?;
        }
        self.recorder.set_upstream(None);
        Ok(())
    }

    /// Starts a new gateway with the same certificates and points the proxy at it.
    pub async fn restart_gateway(&mut self) -> anyhow::Result<()> {
        let executor = self.executor.as_ref().context("no executor")?;
        let (ca_pem, files) = self.gateway_tls.clone();
        let g = serve_gateway(&executor.endpoint(), "1.14", files, ca_pem).await?;
        self.recorder.set_upstream(Some(g.url()));
        self.gateway = Some(g);
        Ok(())
    }

    /// Stops the executor (gracefully: its connections close, so the gateway cannot reach it any more).
    pub async fn stop_executor(&mut self) -> anyhow::Result<()> {
        if let Some(e) = self.executor.take() {
            e.stop().await?;
        }
        Ok(())
    }

    /// Starts a new executor (new address and certificates, as a rescheduled pod with re-issued certificates)
    /// and a new gateway in front of it.
    pub async fn restart_executor(&mut self) -> anyhow::Result<()> {
        self.executor = Some(start_executor_with(&self.mgmt, &self.executor_flags).await?);
        self.stop_gateway().await?;
        self.restart_gateway().await
    }
}

async fn start_executor_with(mgmt: &ControlPlane, flags: &[String]) -> anyhow::Result<RunningExecutor> {
    let config = executor_config();
    let client = executor_mgmt_client(mgmt, &config.defaults_namespace).await?;
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    serve_executor_with_flags(client, config, &flags).await
}

fn executor_config() -> ExecutorConfig {
    ExecutorConfig {
        prism_central_checks: PreflightMode::Warn,
        defaults_namespace: KONNECTOR_NAMESPACE.into(),
        helm_repository_ca_namespace: KONNECTOR_NAMESPACE.into(),
        // CAPI waits retryAfterSeconds between BeforeClusterDelete calls; uninstalls here take ~1.5 s.
        retry_after_seconds: 1,
        ..Default::default()
    }
}

/// The ClusterClass: the test provider's templates, and the `clusterConfig` variable with the shape of CAREN's
/// Nutanix ClusterClass for the parts konnector reads (addons.konnectorAgent, nutanix.prismCentralEndpoint,
/// controlPlane.nutanix.machineDetails.additionalCategories); other addons are left open.
pub fn cluster_class(namespace: &str) -> Value {
    let secret_ref = json!({"type": "object", "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 1}}});
    let categories = json!({"type": "array", "items": {"type": "object", "required": ["key", "value"],
        "properties": {"key": {"type": "string"}, "value": {"type": "string"}}}});
    let schema = json!({
        "type": "object",
        "properties": {
            "addons": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": {"konnectorAgent": {
                    "type": "object",
                    "properties": {
                        "strategy": {"type": "string", "enum": ["HelmAddon"]},
                        "credentials": {"type": "object", "required": ["secretRef"],
                            "properties": {"secretRef": secret_ref}},
                    },
                }},
            },
            "nutanix": {"type": "object", "properties": {
                "controlPlaneEndpoint": {"type": "object", "properties": {
                    "host": {"type": "string"}, "port": {"type": "integer"}}},
                "prismCentralEndpoint": {"type": "object", "required": ["url", "credentials"], "properties": {
                    "url": {"type": "string", "format": "uri"},
                    "insecure": {"type": "boolean"},
                    "additionalTrustBundle": {"type": "string"},
                    "credentials": {"type": "object", "required": ["secretRef"],
                        "properties": {"secretRef": secret_ref}},
                }},
            }},
            "controlPlane": {"type": "object", "properties": {"nutanix": {"type": "object", "properties": {
                "machineDetails": {"type": "object", "properties": {"additionalCategories": categories}}}}}},
        },
    });
    json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "ClusterClass",
        "metadata": {"name": CLUSTER_CLASS, "namespace": namespace},
        "spec": {
            "infrastructure": {"templateRef": {
                "apiVersion": INFRA_API_VERSION, "kind": "KonnectorTestClusterTemplate", "name": CLUSTER_CLASS}},
            "controlPlane": {"templateRef": {
                "apiVersion": CONTROL_PLANE_API_VERSION, "kind": "KonnectorTestControlPlaneTemplate",
                "name": CLUSTER_CLASS}},
            "variables": [{"name": "clusterConfig", "required": true,
                "schema": {"openAPIV3Schema": schema}}],
        },
    })
}
