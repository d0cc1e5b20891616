//! The local sandbox: real control planes, the real executor and two real gateways, the chart's ExtensionConfig
//! and default ConfigMaps, a CAAPH stand-in, and the scripted cluster lifecycle of [`crate::scenario`].
//!
//! `konnector-sandbox` (the README's first command) and the end-to-end test `tests/sandbox_lifecycle.rs` both
//! drive this module, so the test exercises exactly what a person runs.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use konnector_executor::ExecutorConfig;
use kube::{Client, api::PatchParams};
use serde::Serialize;
use serde_json::json;

use crate::{
    caaph_stand_in::{CaaphOptions, CaaphStandIn, Uninstall},
    capi::{CapiShape, ExtensionClient, Handler},
    control_plane::ControlPlane,
    executor_fixture::{RunningExecutor, fast_reconcile, start_reconciling_executor},
    gateway_fixture::{RunningGateway, serve_gateway, write_gateway_certs},
    management_plane_for,
    scenario::{ClusterReport, ClusterRun, Gateway, StepObserver},
    tools, workload,
};

/// The namespace konnector runs in on the sandbox's management cluster; the default ConfigMaps live here.
pub const KONNECTOR_NAMESPACE: &str = "konnector-system";
/// The namespace the sandbox's Clusters live in.
pub const CLUSTERS_NAMESPACE: &str = "tenants";
/// The field manager the sandbox applies deploy/ manifests with.
const SANDBOX_MANAGER: &str = "konnector-sandbox";

/// What to start and play.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    /// How many workload clusters; their lifecycles run in parallel.
    pub clusters: usize,
    /// Which CAPI release's request shape to emulate.
    pub shape: CapiShape,
    /// Change the Prism Central password between AfterControlPlaneInitialized and BeforeClusterUpgrade.
    pub rotate_credentials: bool,
    /// Where to write `sandbox.json` (and the gateway's certificates). A temporary directory when unset.
    pub state_dir: Option<PathBuf>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            clusters: 1,
            shape: CapiShape::V1_14,
            rotate_credentials: false,
            state_dir: None,
        }
    }
}

/// How to reach everything, as written to `sandbox.json`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxState {
    /// The gateways' base URLs.
    pub gateway_urls: Vec<String>,
    /// The CA that signed the gateways' serving certificate (curl --cacert).
    pub gateway_ca_file: PathBuf,
    /// The executor's gRPC address (plaintext, loopback).
    pub executor_address: String,
    /// The management cluster's kubeconfig.
    pub management_kubeconfig: PathBuf,
    /// Each workload cluster's kubeconfig, by cluster name.
    pub workload_kubeconfigs: BTreeMap<String, PathBuf>,
    /// The CAPI request shape being emulated.
    pub capi_version: String,
}

/// The machine-readable summary printed at the end.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Whether every cluster's lifecycle behaved as expected.
    pub ok: bool,
    /// The CAPI request shape emulated.
    pub capi_version: String,
    /// Wall time of the whole scenario, in milliseconds.
    pub millis: u128,
    /// One report per cluster.
    pub clusters: Vec<ClusterReport>,
}

/// A running sandbox. [`Sandbox::stop`] (or dropping it) stops everything and leaves no process behind.
pub struct Sandbox {
    options: SandboxOptions,
    mgmt: ControlPlane,
    mgmt_client: Client,
    workloads: Vec<(String, ControlPlane)>,
    executor: Option<RunningExecutor>,
    gateways: Vec<(String, RunningGateway)>,
    ca_pem: String,
    state_dir: PathBuf,
    _temp_state: Option<tempfile::TempDir>,
    _caaph: CaaphStandIn,
}

impl Sandbox {
    /// Starts the control planes, the executor, two gateways and the CAAPH stand-in, and applies the chart's
    /// ExtensionConfig and default ConfigMaps. Writes `sandbox.json` as soon as everything is up.
    pub async fn start(options: SandboxOptions) -> anyhow::Result<Self> {
        konnector_runtime::tls::install_crypto_provider();
        let (temp_state, state_dir) = match &options.state_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                (None, dir.canonicalize()?)
            }
            None => {
                let t = tempfile::Builder::new().prefix("konnector-sandbox-").tempdir()?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };

        let names: Vec<String> = (1..=options.clusters).map(|i| format!("wl-{i}")).collect();
        let workloads = futures::future::try_join_all(names.iter().map(|n| ControlPlane::start(n))).await?;
        // The Cluster CRD is served as the emulated CAPI serves it: v1beta1 only for 1.10.
        let (mgmt, mgmt_client) = management_plane_for(
            "management",
            crate::crds::ClusterApi::for_capi(options.shape.version()),
        )
        .await?;
        let workloads: Vec<(String, ControlPlane)> = names.into_iter().zip(workloads).collect();

        workload::ensure_namespace(&mgmt_client, KONNECTOR_NAMESPACE).await?;
        workload::ensure_namespace(&mgmt_client, CLUSTERS_NAMESPACE).await?;

        // The reconciler runs beside the hooks, so a rotated password arrives without one.
        let executor = start_reconciling_executor(
            &mgmt,
            ExecutorConfig {
                defaults_namespace: KONNECTOR_NAMESPACE.into(),
                helm_repository_ca_namespace: KONNECTOR_NAMESPACE.into(),
                // CAPI waits retryAfterSeconds between calls; the sandbox's uninstalls take about a second.
                retry_after_seconds: 1,
                ..Default::default()
            },
            fast_reconcile("sandbox-executor"),
        )
        .await?;

        let (ca_pem, tls) = write_gateway_certs(&state_dir.join("certs"))?;
        let mut gateways = Vec::new();
        for i in 1..=2 {
            let gateway = serve_gateway(
                &executor.endpoint(),
                options.shape.version(),
                tls.clone(),
                ca_pem.clone(),
            )
            .await?;
            gateways.push((format!("gateway-{i}"), gateway));
        }

        let caaph = CaaphStandIn::start(
            mgmt_client.clone(),
            CaaphOptions {
                uninstall: Uninstall::After(Duration::from_millis(1500)),
                ..Default::default()
            },
        );

        let sandbox = Self {
            options,
            mgmt,
            mgmt_client,
            workloads,
            executor: Some(executor),
            gateways,
            ca_pem,
            state_dir,
            _temp_state: temp_state,
            _caaph: caaph,
        };
        sandbox.apply_deploy_manifests().await?;
        for (name, cp) in &sandbox.workloads {
            std::fs::copy(
                cp.kubeconfig_path(),
                sandbox.state_dir.join(format!("{name}.kubeconfig")),
            )?;
        }
        std::fs::copy(
            sandbox.mgmt.kubeconfig_path(),
            sandbox.state_dir.join("management.kubeconfig"),
        )?;
        std::fs::write(
            sandbox.state_dir.join("sandbox.json"),
            serde_json::to_string_pretty(&sandbox.state())?,
        )?;
        Ok(sandbox)
    }

    /// How to reach everything.
    pub fn state(&self) -> SandboxState {
        SandboxState {
            gateway_urls: self.gateway_urls(),
            gateway_ca_file: self.state_dir.join("certs/ca.crt"),
            executor_address: self
                .executor
                .as_ref()
                .map(|e| e.addr.to_string())
                .unwrap_or_default(),
            management_kubeconfig: self.state_dir.join("management.kubeconfig"),
            workload_kubeconfigs: self
                .workloads
                .iter()
                .map(|(n, _)| (n.clone(), self.state_dir.join(format!("{n}.kubeconfig"))))
                .collect(),
            capi_version: self.options.shape.version().to_owned(),
        }
    }

    /// The directory holding `sandbox.json`.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The management cluster's admin client.
    pub fn mgmt_client(&self) -> &Client {
        &self.mgmt_client
    }

    fn gateway_urls(&self) -> Vec<String> {
        self.gateways.iter().map(|(_, gateway)| gateway.url()).collect()
    }

    /// The chart's ExtensionConfig and default ConfigMaps, rendered by helm from deploy/ and applied. The
    /// ExtensionConfig points at the first gateway by URL, with the sandbox CA as its caBundle, because the
    /// sandbox has no Services.
    async fn apply_deploy_manifests(&self) -> anyhow::Result<()> {
        let docs = tools::render_chart(
            KONNECTOR_NAMESPACE,
            &[&format!("capiVersion={}", self.options.shape.version())],
            &["templates/configmaps.yaml", "templates/extensionconfig.yaml"],
        )?;
        use base64::Engine;
        let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        for mut doc in docs {
            if doc["kind"] == "ExtensionConfig" {
                doc["spec"]["clientConfig"] = json!({"url": self.gateway_urls()[0], "caBundle": ca_bundle});
            }
            tools::apply_manifest(
                &self.mgmt_client,
                &doc,
                KONNECTOR_NAMESPACE,
                &PatchParams::apply(SANDBOX_MANAGER).force(),
            )
            .await?;
        }
        Ok(())
    }

    /// Plays every cluster's lifecycle in parallel. `on_step` sees each step as it finishes.
    pub async fn play(&self, on_step: StepObserver) -> anyhow::Result<Summary> {
        let started = Instant::now();
        let gateways: Vec<Gateway> = self
            .gateway_urls()
            .iter()
            .zip(&self.gateways)
            .map(|(url, (name, _))| {
                Ok(Gateway {
                    name: name.clone(),
                    client: ExtensionClient::new(url, &self.ca_pem)?,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let handlers: BTreeMap<String, Handler> = discover_when_ready(&gateways[0].client).await?;
        let runs = self.workloads.iter().map(|(name, cp)| {
            let run = ClusterRun {
                mgmt: &self.mgmt_client,
                workload: cp,
                namespace: CLUSTERS_NAMESPACE.to_owned(),
                name: name.clone(),
                shape: self.options.shape,
                gateways: &gateways,
                handlers: &handlers,
                rotate_credentials: self.options.rotate_credentials,
                on_step: on_step.as_ref(),
            };
            async move { run.play().await }
        });
        let clusters = futures::future::join_all(runs).await;
        Ok(Summary {
            ok: clusters.iter().all(|c| c.ok),
            capi_version: self.options.shape.version().to_owned(),
            millis: started.elapsed().as_millis(),
            clusters,
        })
    }

    /// Stops the gateways, the executor and every control plane, and waits for them.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for (name, gateway) in self.gateways.drain(..) {
            match tokio::time::timeout(Duration::from_secs(30), gateway.stop()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(gateway = name, error = %e, "gateway stopped with an error"),
                Err(_) => tracing::warn!(gateway = name, "gateway did not stop within 30s"),
            }
        }
        if let Some(executor) = self.executor.take() {
            executor.stop().await?;
        }
        for (_, mut cp) in self.workloads.drain(..) {
            cp.stop();
        }
        self.mgmt.stop();
        Ok(())
    }
}

/// Calls Discovery until the gateway answers (it starts serving a moment after `serve` is spawned).
async fn discover_when_ready(client: &ExtensionClient) -> anyhow::Result<BTreeMap<String, Handler>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.discover().await {
            Ok(h) => return Ok(h),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context("the gateway never answered Discovery"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
