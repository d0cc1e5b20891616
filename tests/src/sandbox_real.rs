//! The default sandbox (`./hack/sandbox.sh`, `konnector-sandbox`): every cluster's life is driven by CAPI's own
//! core manager ([`crate::capi_env`], built from its Go module by hack/ensure-capi.sh), which discovered konnector
//! through the chart's ExtensionConfig. The sandbox does what a user does and prints each hook as CAPI called it
//! ([`crate::sandbox_real_life`]). With `keep`, the first cluster stays installed and the sandbox prints commands
//! that work against it.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{
    capi_env::{EXTENSION_CONFIG, EnvOptions, RealCapiEnv},
    capi_manager::{BUILT_RELEASES, CapiOptions},
    control_plane::ControlPlane,
    sandbox::SandboxState,
    sandbox_commands::{
        CLI_IDENTITY, KonnectorCommands, TryCommand, cli_flags, serve_admins, shell_quote,
        write_cli_identity, write_try_script,
    },
    sandbox_real_life::{Life, LifeReport, Player},
    scenario::AGENT_NAMESPACE,
};

pub use crate::sandbox_real_life::NAMESPACE;

/// The Cluster without the addon, and the one whose credentials Secret is missing at first. They share one
/// workload API server: the first writes nothing on it.
pub const NO_ADDON: &str = "no-addon";
/// See [`NO_ADDON`].
pub const NO_CREDS: &str = "no-creds";

/// What to run.
#[derive(Clone, Debug)]
pub struct RealOptions {
    /// The CAPI release (one of [`BUILT_RELEASES`]).
    pub version: String,
    /// How many clusters with the addon play create, upgrade and delete, in parallel (beside [`NO_ADDON`] and
    /// [`NO_CREDS`]).
    pub clusters: usize,
    /// Leave the first cluster installed and upgraded (not deleted).
    pub keep: bool,
    /// Where to write `sandbox.json`, `summary.json` and `try.sh`. A temporary directory when unset.
    pub state_dir: Option<PathBuf>,
}

impl Default for RealOptions {
    fn default() -> Self {
        Self {
            version: BUILT_RELEASES[0].to_owned(),
            clusters: 2,
            keep: false,
            state_dir: None,
        }
    }
}

/// The machine-readable summary: every Cluster's steps and the hook calls CAPI made for it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RealSummary {
    /// Whether every Cluster's life went as expected.
    pub ok: bool,
    /// `real`: CAPI's own core manager called the hooks.
    pub capi: String,
    /// Its release.
    pub capi_version: String,
    /// Wall time of the lives, in milliseconds.
    pub millis: u128,
    /// One report per Cluster.
    pub clusters: Vec<LifeReport>,
}

/// A running real-CAPI sandbox; [`RealSandbox::stop`] (or dropping it) stops everything.
pub struct RealSandbox {
    options: RealOptions,
    /// Everything CAPI-side, konnector and the management cluster.
    pub env: RealCapiEnv,
    /// The workload control planes of the clusters with the addon, by cluster name.
    pub workloads: Vec<(String, ControlPlane)>,
    /// The workload control plane of [`NO_ADDON`] and [`NO_CREDS`].
    shared: ControlPlane,
    state_dir: PathBuf,
    _temp_state: Option<tempfile::TempDir>,
    admin: Vec<(String, SocketAddr)>,
    admin_stop: CancellationToken,
}

impl RealSandbox {
    /// Starts the control planes, CAPI and konnector, waits until CAPI has discovered konnector, and writes
    /// `sandbox.json`; `say` hears what is happening.
    pub async fn start(options: RealOptions, say: &(dyn Fn(&str) + Sync)) -> anyhow::Result<Self> {
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
        let started = Instant::now();
        say(&format!(
            "starting {} workload API server(s), the management API server, and CAPI {}'s core manager with the \
             ClusterTopology and RuntimeSDK feature gates…",
            options.clusters + 1,
            options.version
        ));
        let names: Vec<String> = (1..=options.clusters).map(|i| format!("wl-{i}")).collect();
        let workloads = futures::future::try_join_all(
            names
                .iter()
                .map(String::as_str)
                .chain(["wl-shared"])
                .map(ControlPlane::start),
        );
        // The CLI's certificate is served read-only, as the chart configures the executor.
        let env = RealCapiEnv::start(
            NAMESPACE,
            EnvOptions {
                capi: CapiOptions {
                    version: options.version.clone(),
                    ..Default::default()
                },
                executor_flags: vec![format!("--client-read-only-names={CLI_IDENTITY}")],
                ..Default::default()
            },
        );
        let (workloads, env) = futures::future::join(workloads, env).await;
        let (mut workloads, env) = (workloads?, env?);
        let shared = workloads.pop().context("no shared workload API server")?;
        let ec = env.extension_config().await?;
        let handlers: Vec<&str> = ec.data["status"]["handlers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h["name"].as_str())
            .collect();
        say(&format!(
            "CAPI up; it discovered the chart's ExtensionConfig {EXTENSION_CONFIG} (CA injected from the gateway's \
             Secret): {} ({:.1}s)",
            handlers.join(", "),
            started.elapsed().as_secs_f64()
        ));

        let executor = env.executor.as_ref().context("no executor")?;
        let gateway = env.gateway.as_ref().context("no gateway")?;
        write_cli_identity(executor, &state_dir.join("certs/cli"))?;
        std::fs::create_dir_all(state_dir.join("certs"))?;
        std::fs::write(state_dir.join("certs/ca.crt"), env.gateway_ca_pem())?;
        let admin_stop = CancellationToken::new();
        let admin = serve_admins(executor, &[("gateway-1".to_owned(), gateway)], &admin_stop).await?;
        say(&format!(
            "executor at {}, gateway at {}; CAPI calls it through a recording proxy at {}",
            executor.addr,
            gateway.url(),
            env.recorder.url()
        ));

        let sandbox = Self {
            options,
            env,
            workloads: names.into_iter().zip(workloads).collect(),
            shared,
            state_dir,
            _temp_state: temp_state,
            admin,
            admin_stop,
        };
        for (name, cp) in &sandbox.workloads {
            std::fs::copy(
                cp.kubeconfig_path(),
                sandbox.state_dir.join(format!("{name}.kubeconfig")),
            )?;
        }
        std::fs::copy(
            sandbox.shared.kubeconfig_path(),
            sandbox.state_dir.join("wl-shared.kubeconfig"),
        )?;
        std::fs::copy(
            sandbox.env.mgmt.kubeconfig_path(),
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
        let executor = self.env.executor.as_ref();
        SandboxState {
            gateway_urls: self.env.gateway.iter().map(|g| g.url()).collect(),
            gateway_ca_file: self.state_dir.join("certs/ca.crt"),
            executor_address: executor.map(|e| e.addr.to_string()).unwrap_or_default(),
            executor_grpcurl_flags: executor.map(|e| e.grpcurl_tls_flags()).unwrap_or_default(),
            management_kubeconfig: self.state_dir.join("management.kubeconfig"),
            workload_kubeconfigs: self
                .workloads
                .iter()
                .map(|(n, _)| n.as_str())
                .chain([NO_ADDON, NO_CREDS])
                .map(|n| (n.to_owned(), self.workload_kubeconfig(n)))
                .collect(),
            capi: "real".to_owned(),
            capi_version: self.options.version.clone(),
            kept_cluster: self.kept_cluster().map(|n| format!("{NAMESPACE}/{n}")),
            metrics_urls: self
                .admin
                .iter()
                .map(|(name, addr)| (name.clone(), format!("http://{addr}/metrics")))
                .collect(),
            cli_flags: cli_flags(
                &executor.map(|e| e.url()).unwrap_or_default(),
                &self.state_dir.join("certs/cli"),
            ),
        }
    }

    fn workload_kubeconfig(&self, name: &str) -> PathBuf {
        let file = if [NO_ADDON, NO_CREDS].contains(&name) {
            "wl-shared".to_owned()
        } else {
            name.to_owned()
        };
        self.state_dir.join(format!("{file}.kubeconfig"))
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

    /// Whether the state directory is a temporary one, removed when the sandbox stops.
    pub fn state_dir_is_temporary(&self) -> bool {
        self._temp_state.is_some()
    }

    /// The Clusters, in the order they are played, with their lives.
    pub fn lives(&self) -> Vec<(String, Life)> {
        self.workloads
            .iter()
            .map(|(n, _)| {
                let keep = self.kept_cluster() == Some(n.as_str());
                (n.clone(), Life::Full { keep })
            })
            .chain([
                (NO_ADDON.to_owned(), Life::NoAddon),
                (NO_CREDS.to_owned(), Life::MissingCredentials),
            ])
            .collect()
    }

    /// Plays every Cluster's life in parallel; `say` hears each step and each hook call as CAPI made it. Writes
    /// `summary.json`.
    pub async fn play(&self, say: &(dyn Fn(&str) + Sync)) -> anyhow::Result<RealSummary> {
        let started = Instant::now();
        let lives = self.lives();
        let runs = lives.iter().map(|(name, life)| {
            let workload = self
                .workloads
                .iter()
                .find(|(n, _)| n == name)
                .map_or(&self.shared, |(_, cp)| cp);
            Player::play(&self.env, name, workload, *life, say)
        });
        let clusters = futures::future::join_all(runs).await;
        let summary = RealSummary {
            ok: clusters.iter().all(|c| c.ok),
            capi: "real".to_owned(),
            capi_version: self.options.version.clone(),
            millis: started.elapsed().as_millis(),
            clusters,
        };
        std::fs::write(
            self.state_dir.join("summary.json"),
            serde_json::to_string_pretty(&summary)?,
        )?;
        Ok(summary)
    }

    /// Commands that work against the kept cluster while the sandbox runs, with every address and path filled
    /// in: kubectl on both clusters (the ExtensionConfig's handlers as CAPI discovered them, the Cluster and its
    /// HelmChartProxy), grpcurl on the executor, the konnector CLI (doctor with the management kubeconfig, so it
    /// reads the CAPI side too), `/metrics`, Discovery, and BeforeClusterUpgrade with the very body CAPI sent at
    /// the upgrade, written to the state directory. Also writes them to `try.sh` there. Empty without `keep`.
    pub fn try_commands(&self) -> anyhow::Result<Vec<TryCommand>> {
        let Some(name) = self.kept_cluster() else {
            return Ok(Vec::new());
        };
        let state = self.state();
        let mgmt = shell_quote(&state.management_kubeconfig.display().to_string());
        let workload = shell_quote(&state.workload_kubeconfigs[name].display().to_string());
        let upgrade = self
            .env
            .recorder
            .calls_for("beforeclusterupgrade", &format!("{NAMESPACE}/{name}"))
            .pop()
            .context("CAPI made no BeforeClusterUpgrade call for the kept cluster")?;
        let body = serde_json::to_vec_pretty(&upgrade.request)?;
        let body_file = self.state_dir.join(format!("{name}.beforeclusterupgrade.json"));
        std::fs::write(&body_file, &body)?;
        let call = format!("beforeclusterupgrade/{}?{}", upgrade.handler(), upgrade.query);

        let mut commands = vec![
            TryCommand::new(
                "konnector's handlers, as CAPI discovered them (status of the chart's ExtensionConfig)",
                format!(
                    "kubectl --kubeconfig {mgmt} get extensionconfig {EXTENSION_CONFIG} -o \
                     jsonpath='{{.status.handlers[*].name}}{{\"\\n\"}}'"
                ),
            ),
            TryCommand::new(
                format!(
                    "the HelmChartProxy konnector applied for {NAMESPACE}/{name}, on the management cluster"
                ),
                format!("kubectl --kubeconfig {mgmt} get hcp -A"),
            ),
            TryCommand::new(
                "the Clusters CAPI manages, and CAAPH's HelmReleaseProxies (written by the CAAPH stand-in)",
                format!("kubectl --kubeconfig {mgmt} get clusters,hrp -A"),
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
                namespace: NAMESPACE,
                name,
                grpcurl_flags: &state.executor_grpcurl_flags,
                executor_address: &state.executor_address,
                cli_flags: &state.cli_flags,
                doctor_kubeconfig: Some(&state.management_kubeconfig),
                metrics_urls: &state.metrics_urls,
                gateway_url: &state.gateway_urls[0],
                gateway_ca_file: &state.gateway_ca_file,
                upgrade_body: &body,
                upgrade_body_file: &body_file,
                upgrade_call: &call,
                upgrade_body_is: "the body CAPI sent at the upgrade",
            }
            .commands()?,
        );
        write_try_script(&self.state_dir, &commands)?;
        Ok(commands)
    }

    /// Stops everything: the admin servers and the CAAPH stand-in first (so nothing watches an API server that is
    /// going away), then the gateway, the executor, CAPI and the API servers.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.admin_stop.cancel();
        drop(self.env.caaph.take());
        self.env.stop_gateway().await?;
        self.env.stop_executor().await?;
        drop(self.env);
        for (_, mut cp) in self.workloads.drain(..) {
            cp.stop();
        }
        self.shared.stop();
        Ok(())
    }
}
