//! The lives the default sandbox plays on CAPI's own core manager ([`crate::sandbox_real`]). The sandbox only does
//! what a user does (create a Cluster, bump its version, delete it, create a Secret that was missing); CAPI decides
//! when to call which hook. Each hook is printed as CAPI called it, read from the recording proxy in front of the
//! gateway: handler, attempt, answer, retryAfterSeconds.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{DeleteParams, DynamicObject},
};
use serde::Serialize;

use crate::{
    caaph_stand_in::hcp_resource,
    capi_env::{EXTENSION_CONFIG, GUARD, RealCapiEnv, VERSIONS},
    control_plane::ControlPlane,
    hook_recorder::RecordedCall,
    scenario::AGENT_NAMESPACE,
    workload,
};

/// The namespace of the sandbox's Clusters.
pub const NAMESPACE: &str = "tenants";
/// What the CAAPH stand-in writes on the workload cluster when it "installs" the agent's release.
const RELEASE_MARKER: &str = "konnector-agent-release";
/// The hooks, by the path segment CAPI calls them under.
const ACPI: &str = "aftercontrolplaneinitialized";
const BCU: &str = "beforeclusterupgrade";
const BCD: &str = "beforeclusterdelete";

/// Which life a Cluster plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Life {
    /// With the addon: install, upgrade, delete (or, kept, install and upgrade only).
    Full {
        /// Stop once installed and upgraded (`--keep`).
        keep: bool,
    },
    /// Without `addons.konnectorAgent`: every hook answers Success and konnector writes nothing.
    NoAddon,
    /// The addon names a credentials Secret that does not exist until CAPI has shown the failed hook.
    MissingCredentials,
}

/// One hook call as CAPI made it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookCall {
    /// The handler CAPI called, qualified as its ExtensionConfig lists it (`konnector-acpi.konnector`).
    pub handler: String,
    /// 1 for CAPI's first call of this hook for this Cluster.
    pub attempt: usize,
    /// The HTTP status CAPI got.
    pub http_status: u16,
    /// The answer's `status` (`Success`, `Failure`), when there was a body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The answer's `retryAfterSeconds`, for the hooks that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
    /// The answer's message.
    pub message: String,
}

impl HookCall {
    fn from_recorded(attempt: usize, call: &RecordedCall) -> Self {
        Self {
            handler: format!("{}.{EXTENSION_CONFIG}", call.handler()),
            attempt,
            http_status: call.status,
            status: call.response["status"].as_str().map(str::to_owned),
            retry_after_seconds: call.response["retryAfterSeconds"].as_u64(),
            message: call.response["message"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// `hook [wl-1] konnector-bcd.konnector attempt 2 -> Success retryAfterSeconds=1 "message"`.
    pub fn line(&self, cluster: &str) -> String {
        let mut line = format!("hook [{cluster}] {} attempt {} -> ", self.handler, self.attempt);
        match &self.status {
            Some(status) => line.push_str(status),
            None => line.push_str(&format!("HTTP {}", self.http_status)),
        }
        if let Some(r) = self.retry_after_seconds {
            line.push_str(&format!(" retryAfterSeconds={r}"));
        }
        if !self.message.is_empty() {
            line.push_str(&format!(" \"{}\"", self.message));
        }
        line
    }
}

/// One thing the sandbox did or waited for.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// What, e.g. `created Cluster tenants/wl-1 (topology v1.33.0)`.
    pub step: String,
    /// Whether it happened as expected.
    pub ok: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Milliseconds since the previous step.
    pub millis: u128,
}

/// One Cluster's life: its steps and every hook call CAPI made for it, in order.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LifeReport {
    /// `namespace/name`.
    pub cluster: String,
    /// Which life it played.
    pub life: Life,
    /// Whether every step happened as expected.
    pub ok: bool,
    /// The steps; a failed one is the last.
    pub steps: Vec<Step>,
    /// Every hook call CAPI made for the Cluster, as printed.
    pub hooks: Vec<HookCall>,
}

/// One Cluster's life being played: what it printed so far.
pub struct Player<'a> {
    env: &'a RealCapiEnv,
    name: &'a str,
    say: &'a (dyn Fn(&str) + Sync),
    report: LifeReport,
    since: Instant,
    /// How many calls of each hook were printed.
    printed: std::collections::BTreeMap<&'static str, usize>,
}

impl<'a> Player<'a> {
    /// Plays `life` for Cluster `tenants/name`, served by `workload`.
    pub async fn play(
        env: &'a RealCapiEnv,
        name: &'a str,
        workload: &'a ControlPlane,
        life: Life,
        say: &'a (dyn Fn(&str) + Sync),
    ) -> LifeReport {
        let mut player = Self {
            env,
            name,
            say,
            report: LifeReport {
                cluster: format!("{NAMESPACE}/{name}"),
                life,
                ok: true,
                steps: Vec::new(),
                hooks: Vec::new(),
            },
            since: Instant::now(),
            printed: Default::default(),
        };
        let result = match life {
            Life::Full { keep } => player.full(workload, keep).await,
            Life::NoAddon => player.no_addon(workload).await,
            Life::MissingCredentials => player.missing_credentials(workload).await,
        };
        if let Err(e) = result {
            // The calls that did come are part of why.
            for hook in [ACPI, BCU, BCD] {
                player.hooks(hook);
            }
            player.step_done(false, "FAIL", Some(format!("{e:#}")));
        }
        player.report
    }

    fn ok(&mut self, what: impl Into<String>) {
        self.step_done(true, what, None);
    }

    fn step_done(&mut self, ok: bool, what: impl Into<String>, error: Option<String>) {
        let step = Step {
            step: what.into(),
            ok,
            error,
            millis: self.since.elapsed().as_millis(),
        };
        self.since = Instant::now();
        let line = match &step.error {
            None => format!("ok   [{}] {} ({} ms)", self.name, step.step, step.millis),
            Some(e) => format!("FAIL [{}] {e}", self.name),
        };
        (self.say)(&line);
        self.report.ok &= ok;
        self.report.steps.push(step);
    }

    /// Prints the calls of `hook` CAPI made for this Cluster since the last time.
    fn hooks(&mut self, hook: &'static str) {
        let calls = self.calls(hook);
        let printed = self.printed.entry(hook).or_default();
        let from = *printed;
        *printed = calls.len();
        for (i, call) in calls.iter().enumerate().skip(from) {
            let call = HookCall::from_recorded(i + 1, call);
            (self.say)(&call.line(self.name));
            self.report.hooks.push(call);
        }
    }

    fn calls(&self, hook: &str) -> Vec<RecordedCall> {
        self.env.recorder.calls_for(hook, &self.report.cluster)
    }

    async fn create(&mut self, workload: &ControlPlane, secret: Option<&str>) -> anyhow::Result<()> {
        self.env
            .create_cluster(NAMESPACE, self.name, workload, secret)
            .await?;
        self.ok(format!(
            "created Cluster {NAMESPACE}/{} (topology {}, {})",
            self.name,
            VERSIONS.0,
            match secret {
                Some(s) => format!("addon with credentials Secret {s}"),
                None => "no addon".to_owned(),
            }
        ));
        Ok(())
    }

    /// Waits until CAPI has initialised the control plane and cleared AfterControlPlaneInitialized from the
    /// pending hooks (it does so on Success only), then prints its calls.
    async fn acpi_done(&mut self) -> anyhow::Result<()> {
        self.env
            .wait_cluster(NAMESPACE, self.name, "AfterControlPlaneInitialized done", |c| {
                c.is_some_and(|c| {
                    c.data["status"]["initialization"]["controlPlaneInitialized"] == true
                        && !pending_hooks(c).contains("AfterControlPlaneInitialized")
                })
            })
            .await?;
        self.hooks(ACPI);
        Ok(())
    }

    async fn installed(&mut self, workload: &ControlPlane) -> anyhow::Result<Api<ConfigMap>> {
        let markers: Api<ConfigMap> = Api::namespaced(workload.client().await?, AGENT_NAMESPACE);
        wait(GUARD, "the CAAPH stand-in installs the agent release", || async {
            markers.get_opt(RELEASE_MARKER).await.ok().flatten().is_some()
        })
        .await?;
        self.ok(format!(
            "CAAPH (stand-in) installed the agent release of HelmChartProxy {NAMESPACE}/konnector-agent-{}",
            self.name
        ));
        Ok(markers)
    }

    /// Deletes the Cluster, waits until it is gone, and prints the BeforeClusterDelete calls CAPI made.
    async fn delete(&mut self) -> anyhow::Result<()> {
        self.env
            .clusters(NAMESPACE)
            .delete(self.name, &DeleteParams::default())
            .await?;
        self.ok(format!("deleted Cluster {NAMESPACE}/{}", self.name));
        self.env
            .wait_cluster(NAMESPACE, self.name, "Cluster gone", |c| c.is_none())
            .await?;
        self.hooks(BCD);
        let last = self
            .calls(BCD)
            .last()
            .cloned()
            .context("CAPI deleted the Cluster without BeforeClusterDelete")?;
        ensure!(
            last.response["retryAfterSeconds"] == 0,
            "CAPI let the Cluster go after an answer that asked it to wait: {}",
            last.line()
        );
        Ok(())
    }

    async fn full(&mut self, workload: &ControlPlane, keep: bool) -> anyhow::Result<()> {
        let secret = format!("{}-konnector", self.name);
        workload::put_credentials_secret(
            &self.env.mgmt_client,
            NAMESPACE,
            &secret,
            &[("username", "admin"), ("password", &random_password())],
        )
        .await?;
        self.create(workload, Some(&secret)).await?;
        self.acpi_done().await?;
        let markers = self.installed(workload).await?;

        self.env.bump_version(NAMESPACE, self.name, VERSIONS.1).await?;
        self.ok(format!("topology version {} -> {}", VERSIONS.0, VERSIONS.1));
        wait(GUARD, "the control plane at the new version", || async {
            self.env
                .control_plane_versions(NAMESPACE, self.name)
                .await
                .is_ok_and(|(spec, status)| spec == VERSIONS.1 && status == VERSIONS.1)
        })
        .await?;
        self.hooks(BCU);
        ensure!(
            !self.calls(BCU).is_empty(),
            "CAPI upgraded without BeforeClusterUpgrade"
        );
        self.ok(format!(
            "control plane at {} after BeforeClusterUpgrade",
            VERSIONS.1
        ));
        if keep {
            self.ok("stays installed and upgraded");
            return Ok(());
        }

        self.delete().await?;
        if markers.get_opt(RELEASE_MARKER).await?.is_some() {
            bail!("the agent release outlived the Cluster");
        }
        self.ok("Cluster gone, after the agent's release");
        Ok(())
    }

    async fn no_addon(&mut self, workload: &ControlPlane) -> anyhow::Result<()> {
        self.create(workload, None).await?;
        self.acpi_done().await?;
        ensure!(
            !self.hcp_exists().await?,
            "konnector applied a HelmChartProxy for a Cluster without the addon"
        );
        self.ok("no HelmChartProxy: konnector wrote nothing for it");
        self.delete().await?;
        self.ok("Cluster gone");
        Ok(())
    }

    async fn missing_credentials(&mut self, workload: &ControlPlane) -> anyhow::Result<()> {
        let secret = format!("{}-konnector", self.name);
        self.create(workload, Some(&secret)).await?;
        let cluster = self
            .env
            .wait_cluster(
                NAMESPACE,
                self.name,
                "the failed hook shown on the Cluster",
                |c| c.is_some_and(|c| failed_hook_condition(c).is_some()),
            )
            .await?
            .context("the Cluster vanished")?;
        self.hooks(ACPI);
        ensure!(
            pending_hooks(&cluster).contains("AfterControlPlaneInitialized"),
            "CAPI cleared AfterControlPlaneInitialized although it failed"
        );
        let reason = failed_hook_condition(&cluster).unwrap_or_default();
        self.ok(format!(
            "CAPI keeps AfterControlPlaneInitialized pending; condition TopologyReconciled=False ({reason}) \
             carries konnector's message"
        ));
        workload::put_credentials_secret(
            &self.env.mgmt_client,
            NAMESPACE,
            &secret,
            &[("username", "admin"), ("password", &random_password())],
        )
        .await?;
        self.ok(format!(
            "created the missing Secret {NAMESPACE}/{secret}; CAPI retries on its own"
        ));
        self.acpi_done().await?;
        let markers = self.installed(workload).await?;
        self.delete().await?;
        if markers.get_opt(RELEASE_MARKER).await?.is_some() {
            bail!("the agent release outlived the Cluster");
        }
        self.ok("Cluster gone, after the agent's release");
        Ok(())
    }

    async fn hcp_exists(&self) -> anyhow::Result<bool> {
        Ok(
            Api::<DynamicObject>::namespaced_with(self.env.mgmt_client.clone(), NAMESPACE, &hcp_resource())
                .get_opt(&format!("konnector-agent-{}", self.name))
                .await?
                .is_some(),
        )
    }
}

fn pending_hooks(c: &DynamicObject) -> String {
    c.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("runtime.cluster.x-k8s.io/pending-hooks"))
        .cloned()
        .unwrap_or_default()
}

/// The reason of the Cluster's `TopologyReconciled=False` condition when its message names konnector's
/// AfterControlPlaneInitialized handler: how CAPI shows a hook that answered Failure.
fn failed_hook_condition(c: &DynamicObject) -> Option<String> {
    c.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|cond| {
            cond["type"] == "TopologyReconciled"
                && cond["status"] == "False"
                && cond["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&format!("konnector-acpi.{EXTENSION_CONFIG}")))
        })
        .map(|cond| cond["reason"].as_str().unwrap_or_default().to_owned())
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
