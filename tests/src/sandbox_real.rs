//! The sandbox's real-CAPI mode (`konnector-sandbox --real-capi v1.14.2`): the clusters' lives are driven by
//! CAPI's own core manager ([`crate::capi_env`]), not by the sandbox. The sandbox only does what a user does
//! (create a Cluster, bump its version, delete it) and prints each hook as CAPI called it, read from the
//! recording proxy: handler, attempt, answer, retryAfterSeconds.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, api::DeleteParams};

use crate::{
    capi_env::{EXTENSION_CONFIG, EnvOptions, GUARD, RealCapiEnv, VERSIONS},
    capi_manager::CapiOptions,
    control_plane::ControlPlane,
    hook_recorder::RecordedCall,
    scenario::AGENT_NAMESPACE,
    workload,
};

/// The namespace of the sandbox's Clusters.
pub const NAMESPACE: &str = "tenants";

/// What to run.
#[derive(Clone, Debug)]
pub struct RealOptions {
    /// The CAPI release (one of [`crate::capi_manager::BUILT_RELEASES`]).
    pub version: String,
    /// How many clusters, played in parallel.
    pub clusters: usize,
    /// Leave the first cluster installed and upgraded (not deleted).
    pub keep: bool,
}

/// A running real-CAPI sandbox; dropping it stops everything.
pub struct RealSandbox {
    /// Everything CAPI-side.
    pub env: RealCapiEnv,
    /// The workload control planes, by cluster name.
    pub workloads: Vec<(String, ControlPlane)>,
}

impl RealSandbox {
    /// Starts the control planes, CAPI and konnector; `say` hears what is happening.
    pub async fn start(options: &RealOptions, say: &(dyn Fn(&str) + Sync)) -> anyhow::Result<Self> {
        let started = Instant::now();
        say(&format!(
            "starting {} workload API server(s), the management API server and CAPI {} (built from its Go module)…",
            options.clusters, options.version
        ));
        let names: Vec<String> = (1..=options.clusters).map(|i| format!("wl-{i}")).collect();
        let workloads = futures::future::try_join_all(names.iter().map(|n| ControlPlane::start(n))).await?;
        let env = RealCapiEnv::start(
            NAMESPACE,
            EnvOptions {
                capi: CapiOptions {
                    version: options.version.clone(),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
        let ec = env.extension_config().await?;
        let handlers: Vec<&str> = ec.data["status"]["handlers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h["name"].as_str())
            .collect();
        say(&format!(
            "CAPI discovered ExtensionConfig {EXTENSION_CONFIG}: {} ({:.1}s)",
            handlers.join(", "),
            started.elapsed().as_secs_f64()
        ));
        Ok(Self {
            env,
            workloads: names.into_iter().zip(workloads).collect(),
        })
    }

    /// Plays every cluster's life in parallel; each line is one hook call as CAPI made it, or one step.
    /// Returns whether every cluster went through its life.
    pub async fn play(&self, options: &RealOptions, say: &(dyn Fn(&str) + Sync)) -> bool {
        let runs = self
            .workloads
            .iter()
            .enumerate()
            .map(|(i, (name, cp))| async move {
                let keep = options.keep && i == 0;
                match self.life(name, cp, keep, say).await {
                    Ok(()) => true,
                    Err(e) => {
                        say(&format!("FAIL [{name}] {e:#}"));
                        false
                    }
                }
            });
        futures::future::join_all(runs).await.into_iter().all(|ok| ok)
    }

    async fn life(
        &self,
        name: &str,
        workload_cp: &ControlPlane,
        keep: bool,
        say: &(dyn Fn(&str) + Sync),
    ) -> anyhow::Result<()> {
        let env = &self.env;
        let secret = format!("{name}-konnector");
        workload::put_credentials_secret(
            &env.mgmt_client,
            NAMESPACE,
            &secret,
            &[("username", "admin"), ("password", &random_password())],
        )
        .await?;
        env.create_cluster(NAMESPACE, name, workload_cp, Some(&secret))
            .await?;
        say(&format!(
            "ok   [{name}] created Cluster {NAMESPACE}/{name} (topology {})",
            VERSIONS.0
        ));
        env.wait_cluster(NAMESPACE, name, "AfterControlPlaneInitialized done", |c| {
            c.is_some_and(|c| {
                c.data["status"]["initialization"]["controlPlaneInitialized"] == true
                    && !c
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("runtime.cluster.x-k8s.io/pending-hooks"))
                        .is_some_and(|p| p.contains("AfterControlPlaneInitialized"))
            })
        })
        .await?;
        self.say_calls(name, "aftercontrolplaneinitialized", say);

        let markers: Api<ConfigMap> = Api::namespaced(workload_cp.client().await?, AGENT_NAMESPACE);
        wait(GUARD, "CAAPH stand-in installs the agent release", || async {
            markers
                .get_opt("konnector-agent-release")
                .await
                .ok()
                .flatten()
                .is_some()
        })
        .await?;
        say(&format!(
            "ok   [{name}] CAAPH (stand-in) installed the agent release"
        ));

        env.bump_version(NAMESPACE, name, VERSIONS.1).await?;
        say(&format!(
            "ok   [{name}] topology version {} -> {}",
            VERSIONS.0, VERSIONS.1
        ));
        wait(GUARD, "control plane at the new version", || async {
            env.control_plane_versions(NAMESPACE, name)
                .await
                .is_ok_and(|(spec, status)| spec == VERSIONS.1 && status == VERSIONS.1)
        })
        .await?;
        self.say_calls(name, "beforeclusterupgrade", say);
        if keep {
            say(&format!("ok   [{name}] stays installed and upgraded"));
            return Ok(());
        }

        env.clusters(NAMESPACE)
            .delete(name, &DeleteParams::default())
            .await?;
        say(&format!("ok   [{name}] deleted Cluster {NAMESPACE}/{name}"));
        env.wait_cluster(NAMESPACE, name, "Cluster gone", |c| c.is_none())
            .await?;
        self.say_calls(name, "beforeclusterdelete", say);
        if markers.get_opt("konnector-agent-release").await?.is_some() {
            bail!("the agent release outlived the Cluster");
        }
        say(&format!("ok   [{name}] Cluster gone, after the agent's release"));
        Ok(())
    }

    fn say_calls(&self, name: &str, hook: &str, say: &(dyn Fn(&str) + Sync)) {
        let cluster = format!("{NAMESPACE}/{name}");
        for (i, call) in self.env.recorder.calls_for(hook, &cluster).iter().enumerate() {
            say(&hook_line(name, i + 1, call));
        }
    }

    /// The first cluster's workload kubeconfig path and the management one, for `--keep`.
    pub fn kubeconfigs(&self) -> anyhow::Result<(String, String)> {
        let (_, cp) = self.workloads.first().context("no cluster")?;
        Ok((
            self.env.mgmt.kubeconfig_path().display().to_string(),
            cp.kubeconfig_path().display().to_string(),
        ))
    }
}

/// One hook call as CAPI made it: `hook [wl-1] konnector-bcd.konnector attempt 2 -> Success retryAfterSeconds=1
/// "message"`.
pub fn hook_line(cluster: &str, attempt: usize, call: &RecordedCall) -> String {
    let mut line = format!(
        "hook [{cluster}] {}.{EXTENSION_CONFIG} attempt {attempt} -> ",
        call.handler()
    );
    match call.response["status"].as_str() {
        Some(status) => line.push_str(status),
        None => line.push_str(&format!("HTTP {}", call.status)),
    }
    if let Some(r) = call.response["retryAfterSeconds"].as_u64() {
        line.push_str(&format!(" retryAfterSeconds={r}"));
    }
    if let Some(m) = call.response["message"].as_str().filter(|m| !m.is_empty()) {
        line.push_str(&format!(" \"{m}\""));
    }
    line
}

async fn wait<F, Fut>(guard: Duration, what: &str, check: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + guard;
    while !check().await {
        if Instant::now() > deadline {
            bail!("{what} did not happen");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

fn random_password() -> String {
    let mut bytes = [0u8; 12];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    format!(
        "pc-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}
