//! The sandbox on the **CAPI stand-in** (`konnector-sandbox --capi stand-in`): real control planes, the real
//! executor and two real gateways, the chart's ExtensionConfig and default ConfigMaps, a CAAPH stand-in, and the
//! scripted cluster lifecycle of [`crate::scenario`], whose hook calls are built the way CAPI 1.10 and 1.12 build
//! them. No served CAPI release produces those request shapes (the module proxy serves neither), which is the only
//! reason this mode stays; the default sandbox runs CAPI's own manager ([`crate::sandbox_real`]).
//!
//! `konnector-sandbox` and the end-to-end test `tests/sandbox_lifecycle.rs` both drive this module, so the test
//! exercises exactly what a person runs.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context;
use konnector_executor::{ExecutorConfig, prism::PreflightMode};
use kube::{
    Api, Client,
    api::{DynamicObject, PatchParams},
};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{
    caaph_stand_in::{CaaphOptions, CaaphStandIn, Uninstall},
    capi_stand_in::{CapiShape, ExtensionClient, Handler, Hook, hook_request},
    control_plane::ControlPlane,
    executor_fixture::{RunningExecutor, fast_reconcile, start_reconciling_executor_with_flags},
    gateway_fixture::{RunningGateway, serve_gateway, write_gateway_certs},
    management_plane_for,
    prism_central_stand_in::{Behaviour, PrismCentralStandIn},
    sandbox_commands::{
        CLI_IDENTITY, KonnectorCommands, serve_admins, shell_quote, write_cli_identity, write_try_script,
    },
    scenario::{AGENT_NAMESPACE, ClusterReport, ClusterRun, Gateway, StepObserver},
    tools, workload,
};

/// The namespace konnector runs in on the sandbox's management cluster; the default ConfigMaps live here.
pub const KONNECTOR_NAMESPACE: &str = "konnector-system";
/// The namespace the sandbox's Clusters live in.
pub const CLUSTERS_NAMESPACE: &str = "tenants";
/// The field manager the sandbox applies deploy/ manifests with.
const SANDBOX_MANAGER: &str = "konnector-sandbox";

pub use crate::sandbox_commands::{TryCommand, cli_flags, cli_program};

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
    /// Leave the first cluster installed: its lifecycle stops after BeforeClusterUpgrade, so there is a live
    /// Cluster, HelmChartProxy and agent Secret to look at ([`Sandbox::try_commands`]).
    pub keep: bool,
    /// Make the Prism Central stand-in refuse every password, and the executor block on its preflight, so the
    /// failed preflight shows in the AfterControlPlaneInitialized answer.
    pub bad_pc_password: bool,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            clusters: 1,
            shape: CapiShape::V1_14,
            rotate_credentials: false,
            state_dir: None,
            keep: false,
            bad_pc_password: false,
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
    /// The executor's gRPC address (mTLS, loopback).
    pub executor_address: String,
    /// grpcurl's mTLS flags for the executor (`-cacert … -cert … -key …`).
    pub executor_grpcurl_flags: String,
    /// The management cluster's kubeconfig.
    pub management_kubeconfig: PathBuf,
    /// Each workload cluster's kubeconfig, by cluster name.
    pub workload_kubeconfigs: BTreeMap<String, PathBuf>,
    /// What calls the hooks: `real` (CAPI's own core manager) or `stand-in` (the CAPI stand-in).
    pub capi: String,
    /// The CAPI release running (`v1.14.2`), or the request shape the stand-in emulates (`1.12`).
    pub capi_version: String,
    /// The cluster `--keep` leaves installed, as `namespace/name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_cluster: Option<String>,
    /// `/metrics` of the executor and of each gateway, by name: what each binary serves on its admin port.
    pub metrics_urls: BTreeMap<String, String>,
    /// The `konnector` CLI's flags for the executor with the CLI's own read-only client certificate
    /// (`--executor-url … --ca … --cert … --key …`).
    pub cli_flags: String,
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
    /// Held for its watch task; dropped first on stop, so it never sees the API servers go away.
    caaph: Option<CaaphStandIn>,
    prism_central: PrismCentralStandIn,
    /// The admin servers (`/livez`, `/readyz`, `/metrics`) the binaries serve on their admin ports, by name.
    admin: Vec<(String, SocketAddr)>,
    admin_stop: CancellationToken,
}

impl Sandbox {
    /// Starts the control planes, the executor, two gateways and the CAAPH stand-in, and applies the chart's
    /// ExtensionConfig and default ConfigMaps. Writes `sandbox.json` as soon as everything is up.
    pub async fn start(options: SandboxOptions) -> anyhow::Result<Self> {
        Self::start_reporting(options, &|_| {}).await
    }

    /// [`Sandbox::start`], telling `progress` what it is doing and how long each part took, for the minute or so a
    /// cold start takes.
    pub async fn start_reporting(
        options: SandboxOptions,
        progress: &(dyn Fn(&str) + Sync),
    ) -> anyhow::Result<Self> {
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
        let started = Instant::now();
        progress(&format!(
            "starting {} workload API server(s) and the management API server (etcd + kube-apiserver each)…",
            names.len()
        ));
        // The Cluster CRD is served as the emulated CAPI serves it: v1beta1 only for 1.10.
        let (workloads, management) = futures::future::join(
            futures::future::try_join_all(names.iter().map(|n| ControlPlane::start(n))),
            management_plane_for(
                "management",
                crate::crds::ClusterApi::for_capi(options.shape.version()),
            ),
        )
        .await;
        let (workloads, (mgmt, mgmt_client)) = (workloads?, management?);
        let workloads: Vec<(String, ControlPlane)> = names.into_iter().zip(workloads).collect();
        progress(&format!(
            "API servers up, CAPI and CAAPH CRDs installed ({:.1}s)",
            started.elapsed().as_secs_f64()
        ));

        crate::control_plane::ensure_namespace(&mgmt_client, KONNECTOR_NAMESPACE).await?;
        crate::control_plane::ensure_namespace(&mgmt_client, CLUSTERS_NAMESPACE).await?;

        // The Clusters point at a Prism Central stand-in; it accepts the scenario's (rotating) passwords unless
        // asked to refuse them all.
        let prism_central = if options.bad_pc_password {
            PrismCentralStandIn::start("admin", "a-password-no-cluster-has", Behaviour::Normal).await?
        } else {
            PrismCentralStandIn::start_any_password("admin", Behaviour::Normal).await?
        };

        let started = Instant::now();
        progress("starting the executor (under the chart's RBAC role) and two gateways…");
        // The reconciler runs beside the hooks, so a rotated password arrives without one. The CLI's certificate
        // is served read-only, as the chart configures the executor.
        let executor = start_reconciling_executor_with_flags(
            &mgmt,
            ExecutorConfig {
                prism_central_checks: if options.bad_pc_password {
                    PreflightMode::Block
                } else {
                    PreflightMode::Warn
                },
                defaults_namespace: KONNECTOR_NAMESPACE.into(),
                helm_repository_ca_namespace: KONNECTOR_NAMESPACE.into(),
                // CAPI waits retryAfterSeconds between calls; the sandbox's uninstalls take about a second.
                retry_after_seconds: 1,
                ..Default::default()
            },
            fast_reconcile("sandbox-executor"),
            &[&format!("--client-read-only-names={CLI_IDENTITY}")],
        )
        .await?;
        write_cli_identity(&executor, &state_dir.join("certs/cli"))?;

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

        progress(&format!(
            "executor at {}, gateways at {} ({:.1}s)",
            executor.addr,
            gateways
                .iter()
                .map(|(_, g)| g.url())
                .collect::<Vec<_>>()
                .join(" and "),
            started.elapsed().as_secs_f64()
        ));
        // The admin ports the binaries would serve, so `/metrics` can be read as from a deployed one.
        let admin_stop = CancellationToken::new();
        let named: Vec<(String, &RunningGateway)> = gateways.iter().map(|(n, g)| (n.clone(), g)).collect();
        let admin = serve_admins(&executor, &named, &admin_stop).await?;
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
            caaph: Some(caaph),
            prism_central,
            admin,
            admin_stop,
        };
        progress("rendering deploy/chart with helm; applying its ExtensionConfig and default ConfigMaps…");
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
            executor_grpcurl_flags: self
                .executor
                .as_ref()
                .map(|e| e.grpcurl_tls_flags())
                .unwrap_or_default(),
            management_kubeconfig: self.state_dir.join("management.kubeconfig"),
            workload_kubeconfigs: self
                .workloads
                .iter()
                .map(|(n, _)| (n.clone(), self.state_dir.join(format!("{n}.kubeconfig"))))
                .collect(),
            capi: "stand-in".to_owned(),
            capi_version: self.options.shape.version().to_owned(),
            kept_cluster: self.kept_cluster().map(|n| format!("{CLUSTERS_NAMESPACE}/{n}")),
            metrics_urls: self
                .admin
                .iter()
                .map(|(name, addr)| (name.clone(), format!("http://{addr}/metrics")))
                .collect(),
            cli_flags: cli_flags(
                &self.executor.as_ref().map(|e| e.url()).unwrap_or_default(),
                &self.state_dir.join("certs/cli"),
            ),
        }
    }

    /// The cluster `keep` leaves installed: the first one.
    pub fn kept_cluster(&self) -> Option<&str> {
        self.options
            .keep
            .then(|| self.workloads.first().map(|(n, _)| n.as_str()))
            .flatten()
    }

    /// The directory holding `sandbox.json`.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Whether the state directory is a temporary one, removed when the sandbox stops (no `state_dir` given).
    pub fn state_dir_is_temporary(&self) -> bool {
        self._temp_state.is_some()
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
                keep_installed: self.kept_cluster() == Some(name.as_str()),
                prism_central: Some((self.prism_central.url(), self.prism_central.trust_bundle())),
                on_step: on_step.as_ref(),
            };
            async move { run.play().await }
        });
        let clusters = futures::future::join_all(runs).await;
        let summary = Summary {
            ok: clusters.iter().all(|c| c.ok),
            capi_version: self.options.shape.version().to_owned(),
            millis: started.elapsed().as_millis(),
            clusters,
        };
        std::fs::write(
            self.state_dir.join("summary.json"),
            serde_json::to_string_pretty(&summary)?,
        )?;
        Ok(summary)
    }

    /// Commands that work against the kept cluster (see [`SandboxOptions::keep`]) while the sandbox runs, with
    /// every address and path filled in: kubectl on both clusters, the executor's GetAgentStatus and PlanAgent
    /// over grpcurl, and a real BeforeClusterUpgrade hook call whose body (built from the live Cluster, as CAPI
    /// would send it) is written to the state directory. Also writes them all to `try.sh` there. Empty without
    /// `keep`.
    pub async fn try_commands(&self) -> anyhow::Result<Vec<TryCommand>> {
        let Some(name) = self.kept_cluster() else {
            return Ok(Vec::new());
        };
        let state = self.state();
        let mgmt = shell_quote(&state.management_kubeconfig.display().to_string());
        let workload = shell_quote(&state.workload_kubeconfigs[name].display().to_string());

        let hook = Hook::BeforeClusterUpgrade {
            from: "v1.32.4".into(),
            to: "v1.33.0".into(),
        };
        // Read the Cluster at the version the management cluster serves, as the scenario does: CAPI 1.10
        // serves v1beta1 only, so asking for v1beta2 there is a 404.
        let served = workload::served_cluster_version(&self.mgmt_client).await?;
        let stored = Api::<DynamicObject>::namespaced_with(
            self.mgmt_client.clone(),
            CLUSTERS_NAMESPACE,
            &workload::cluster_resource(served),
        )
        .get(name)
        .await
        .with_context(|| format!("cannot read the kept Cluster {CLUSTERS_NAMESPACE}/{name} at {served}"))?;
        let body = serde_json::to_vec_pretty(&hook_request(
            &hook,
            self.options.shape,
            &serde_json::to_value(&stored)?,
            &BTreeMap::new(),
        ))?;
        let body_file = self.state_dir.join(format!("{name}.beforeclusterupgrade.json"));
        std::fs::write(&body_file, &body)?;

        let mut commands = vec![
            TryCommand::new(
                format!(
                    "the HelmChartProxy konnector applied for {CLUSTERS_NAMESPACE}/{name}, on the management cluster"
                ),
                format!("kubectl --kubeconfig {mgmt} get hcp -A"),
            ),
            TryCommand::new(
                "CAAPH's HelmReleaseProxies (written by the CAAPH stand-in) and the Clusters",
                format!("kubectl --kubeconfig {mgmt} get hrp,clusters -A"),
            ),
            TryCommand::new(
                format!(
                    "the credentials Secret konnector copied onto {name}, and the stand-in's release marker"
                ),
                format!("kubectl --kubeconfig {workload} -n {AGENT_NAMESPACE} get secrets,configmaps"),
            ),
        ];
        commands.extend(
            KonnectorCommands {
                namespace: CLUSTERS_NAMESPACE,
                name,
                grpcurl_flags: &state.executor_grpcurl_flags,
                executor_address: &state.executor_address,
                cli_flags: &state.cli_flags,
                doctor_kubeconfig: None,
                metrics_urls: &state.metrics_urls,
                gateway_url: &state.gateway_urls[0],
                gateway_ca_file: &state.gateway_ca_file,
                upgrade_body: &body,
                upgrade_body_file: &body_file,
                upgrade_call: "beforeclusterupgrade/konnector-bcu?timeout=20s",
                upgrade_body_is: "the body CAPI would send",
            }
            .commands()?,
        );
        write_try_script(&self.state_dir, &commands)?;
        Ok(commands)
    }

    /// Stops the gateways, the executor and every control plane, and waits for them.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        // Everything that watches the API servers stops before they do (a watch that sees its server vanish
        // logs a warning the user would take for a fault).
        drop(self.caaph.take());
        self.admin_stop.cancel();
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
