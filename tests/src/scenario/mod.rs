//! The cluster lifecycle the sandbox plays and the end-to-end test drives: what CAPI does to a cluster and the
//! hooks it calls, step by step, with the objects each step changed and a check of what should have happened.
//!
//! The driver acts as a CAPI stand-in: it creates the Cluster, its kubeconfig Secret and the user's Prism Central
//! credentials, marks the control plane initialised, deletes the Cluster, and removes CAPI's finalizer once
//! BeforeClusterDelete lets go. It calls the gateways over HTTPS exactly as CAPI would, spreading calls across
//! them.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams},
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    caaph_stand_in::{hcp_resource, hrp_resource},
    capi_stand_in::{CapiShape, ExtensionClient, Handler, Hook, HookAnswer, hook_path, hook_request},
    control_plane::ControlPlane,
    workload::{self, CLUSTER_NAME_LABEL, ClusterOptions},
};

/// Where the Konnector Agent's objects live on a workload cluster.
mod world;

pub const AGENT_NAMESPACE: &str = "ntnx-system";
/// The credentials Secret konnector writes on a workload cluster.
pub const AGENT_SECRET: &str = "konnector-agent";
/// What the CAAPH stand-in writes on the workload cluster when it "installs" the agent's release.
const RELEASE_MARKER: &str = "konnector-agent-release";
/// The finalizer CAPI keeps on a Cluster until it may be deleted.
const CAPI_CLUSTER_FINALIZER: &str = "cluster.cluster.x-k8s.io";
/// Upper bound on how long BeforeClusterDelete may keep asking to wait before the step counts as failed.
const DELETE_BUDGET: Duration = Duration::from_secs(120);

/// Sees each step as it finishes, with the cluster's name; the sandbox prints them.
pub type StepObserver = std::sync::Arc<dyn Fn(&str, &StepReport) + Send + Sync>;

/// One gateway as the driver sees it.
#[derive(Clone, Debug)]
pub struct Gateway {
    /// A short name for output, e.g. `gateway-1`.
    pub name: String,
    /// The HTTPS client.
    pub client: ExtensionClient,
}

/// What one cluster's lifecycle needs.
pub struct ClusterRun<'a> {
    /// The management cluster (admin).
    pub mgmt: &'a Client,
    /// The cluster's workload control plane.
    pub workload: &'a ControlPlane,
    /// The Cluster's namespace.
    pub namespace: String,
    /// The Cluster's name.
    pub name: String,
    /// The CAPI request shape to emulate.
    pub shape: CapiShape,
    /// The gateways, used in turn.
    pub gateways: &'a [Gateway],
    /// Handlers by hook name, from Discovery.
    pub handlers: &'a BTreeMap<String, Handler>,
    /// Change the Prism Central password between AfterControlPlaneInitialized and BeforeClusterUpgrade.
    pub rotate_credentials: bool,
    /// Stop after BeforeClusterUpgrade, leaving the cluster and its agent installed (the sandbox's `--keep`).
    pub keep_installed: bool,
    /// `prismCentralEndpoint.url` and `additionalTrustBundle` of the Cluster (the sandbox's Prism Central
    /// stand-in); `None` keeps an unresolvable, insecure endpoint.
    pub prism_central: Option<(String, String)>,
    /// Called with each finished step, for live output.
    pub on_step: &'a (dyn Fn(&str, &StepReport) + Send + Sync),
}

/// The record of one step.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepReport {
    /// What happened, e.g. `AfterControlPlaneInitialized` or `create cluster`.
    pub step: String,
    /// The gateway called, for hook steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The last hook answer, for hook steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<HookAnswer>,
    /// How many times the hook was called (BeforeClusterDelete repeats while told to wait).
    pub calls: u32,
    /// The distinct "wait" answers seen before the last one, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waits: Vec<HookAnswer>,
    /// Objects that changed, e.g. `created HelmChartProxy tenants/konnector-agent-wl-1`.
    pub changes: Vec<String>,
    /// Whether the step behaved as expected.
    pub ok: bool,
    /// Why not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Wall time of the step in milliseconds.
    pub millis: u128,
}

/// The record of one cluster's lifecycle.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    /// `namespace/name`.
    pub cluster: String,
    /// Every step, in order; the first failing step is the last.
    pub steps: Vec<StepReport>,
    /// Whether every step behaved as expected.
    pub ok: bool,
}

impl ClusterRun<'_> {
    fn credentials_secret(&self) -> String {
        format!("{}-pc-creds-for-konnector-agent", self.name)
    }

    fn gateway(&self, turn: usize) -> &Gateway {
        &self.gateways[turn % self.gateways.len()]
    }

    /// Plays the whole lifecycle. Stops at the first step that does not behave as expected.
    pub async fn play(&self) -> ClusterReport {
        let mut steps = Vec::new();
        let mut password = random_password();
        let mut turn = self.name.bytes().map(usize::from).sum::<usize>();

        // Each step starts from the previous step's closing snapshot, so a change made in between (CAAPH works
        // asynchronously) is attributed to the next step instead of being lost.
        let mut snapshot = self.snapshot().await.unwrap_or_default();
        macro_rules! step {
            ($report:expr) => {{
                let (report, after): (StepReport, BTreeMap<String, String>) = $report;
                snapshot = after;
                (self.on_step)(&self.name, &report);
                let ok = report.ok;
                steps.push(report);
                if !ok {
                    return ClusterReport {
                        cluster: format!("{}/{}", self.namespace, self.name),
                        steps,
                        ok: false,
                    };
                }
            }};
        }

        step!(
            self.timed("create cluster (CAPI stand-in)", &snapshot, |s| s
                .create_cluster(&password))
                .await
        );

        turn += 1;
        step!(
            self.hook_step(
                Hook::AfterControlPlaneInitialized,
                turn,
                &password,
                false,
                &snapshot
            )
            .await
        );

        // CAAPH works asynchronously: the agent exists only once it has turned the HelmChartProxy into a release.
        step!(
            self.timed("CAAPH installs the agent release (stand-in)", &snapshot, |s| s
                .wait_release_installed())
                .await
        );

        if self.rotate_credentials {
            password = random_password();
            step!(
                self.timed("rotate Prism Central password", &snapshot, |s| s
                    .write_credentials(&password))
                    .await
            );
            // No hook runs here: the executor's reconciler notices the rotation on its own.
            step!(
                self.timed(
                    "reconciler copies the new password to the workload cluster (no hook)",
                    &snapshot,
                    |s| s.wait_password_delivered(&password)
                )
                .await
            );
        }

        turn += 1;
        let upgrade = Hook::BeforeClusterUpgrade {
            from: "v1.32.4".into(),
            to: "v1.33.0".into(),
        };
        step!(
            self.hook_step(upgrade, turn, &password, !self.rotate_credentials, &snapshot)
                .await
        );
        if self.keep_installed {
            return ClusterReport {
                cluster: format!("{}/{}", self.namespace, self.name),
                steps,
                ok: true,
            };
        }

        step!(
            self.timed("delete cluster (CAPI stand-in)", &snapshot, |s| s.start_delete())
                .await
        );

        turn += 1;
        step!(self.delete_step(turn, &snapshot).await);

        step!(
            self.timed("remove CAPI finalizer (CAPI stand-in)", &snapshot, |s| s
                .finish_delete())
                .await
        );
        // The last step's closing snapshot has no next step to open.
        drop(snapshot);

        ClusterReport {
            cluster: format!("{}/{}", self.namespace, self.name),
            steps,
            ok: true,
        }
    }

    async fn timed<'s, F, Fut>(
        &'s self,
        step: &str,
        before: &BTreeMap<String, String>,
        f: F,
    ) -> (StepReport, BTreeMap<String, String>)
    where
        F: FnOnce(&'s Self) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let started = Instant::now();
        let result = f(self).await;
        let after = self.snapshot().await.unwrap_or_default();
        let report = StepReport {
            step: step.to_owned(),
            gateway: None,
            answer: None,
            calls: 0,
            waits: Vec::new(),
            changes: diff(before, &after),
            ok: result.is_ok(),
            error: result.err().map(|e| format!("{e:#}")),
            millis: started.elapsed().as_millis(),
        };
        (report, after)
    }

    /// Calls AfterControlPlaneInitialized or BeforeClusterUpgrade once and checks the result.
    async fn hook_step(
        &self,
        hook: Hook,
        turn: usize,
        password: &str,
        expect_no_writes: bool,
        before: &BTreeMap<String, String>,
    ) -> (StepReport, BTreeMap<String, String>) {
        let gateway = self.gateway(turn);
        let started = Instant::now();
        let outcome = self.call(&hook, gateway).await;
        let after = self.snapshot().await.unwrap_or_default();
        let changes = diff(before, &after);
        let check = match &outcome {
            Ok(answer) => {
                self.check_applied(&hook, answer, password, expect_no_writes, &changes)
                    .await
            }
            Err(e) => Err(anyhow::anyhow!("{e:#}")),
        };
        let report = StepReport {
            step: hook.name().to_owned(),
            gateway: Some(gateway.name.clone()),
            answer: outcome.ok(),
            calls: 1,
            waits: Vec::new(),
            changes,
            ok: check.is_ok(),
            error: check.err().map(|e| format!("{e:#}")),
            millis: started.elapsed().as_millis(),
        };
        (report, after)
    }

    /// Calls BeforeClusterDelete, alternating gateways, for as long as it answers "wait".
    async fn delete_step(
        &self,
        mut turn: usize,
        before: &BTreeMap<String, String>,
    ) -> (StepReport, BTreeMap<String, String>) {
        let started = Instant::now();
        let mut calls = 0;
        let mut waits: Vec<HookAnswer> = Vec::new();
        let mut last: Option<(String, HookAnswer)> = None;
        let result: anyhow::Result<()> = async {
            loop {
                let gateway = self.gateway(turn);
                turn += 1;
                calls += 1;
                let answer = self.call(&Hook::BeforeClusterDelete, gateway).await?;
                last = Some((gateway.name.clone(), answer.clone()));
                ensure!(
                    answer.status == "Success",
                    "BeforeClusterDelete answered {answer:?}"
                );
                let retry = answer
                    .retry_after_seconds
                    .context("BeforeClusterDelete answer lacks retryAfterSeconds")?;
                ensure!(retry >= 0, "negative retryAfterSeconds {retry}");
                if retry == 0 {
                    break;
                }
                if waits.last() != Some(&answer) {
                    waits.push(answer.clone());
                }
                ensure!(
                    started.elapsed() < DELETE_BUDGET,
                    "still told to wait after {DELETE_BUDGET:?}"
                );
                tokio::time::sleep(Duration::from_secs(retry as u64)).await;
            }
            ensure!(
                !waits.is_empty(),
                "BeforeClusterDelete let deletion proceed without waiting for the uninstall"
            );
            self.check_removed().await
        }
        .await;
        let after = self.snapshot().await.unwrap_or_default();
        let (gateway, answer) = last.map_or((None, None), |(g, a)| (Some(g), Some(a)));
        let report = StepReport {
            step: "BeforeClusterDelete".into(),
            gateway,
            answer,
            calls,
            waits,
            changes: diff(before, &after),
            ok: result.is_ok(),
            error: result.err().map(|e| format!("{e:#}")),
            millis: started.elapsed().as_millis(),
        };
        (report, after)
    }

    async fn call(&self, hook: &Hook, gateway: &Gateway) -> anyhow::Result<HookAnswer> {
        let handler = self
            .handlers
            .get(hook.name())
            .with_context(|| format!("the gateway did not advertise {}", hook.name()))?;
        let stored = self
            .cluster_api()
            .get(&self.name)
            .await
            .context("cannot read the Cluster")?;
        let body = hook_request(
            hook,
            self.shape,
            &serde_json::to_value(&stored)?,
            &BTreeMap::new(),
        );
        gateway
            .client
            .post(&hook_path(hook, &handler.name), &body, handler.timeout_seconds)
            .await
    }
}

/// Describes how `after` differs from `before`: created, updated and deleted objects.
pub fn diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut changes = Vec::new();
    for (name, rv) in after {
        match before.get(name) {
            None => changes.push(format!("created {name}")),
            Some(old) if old != rv => changes.push(format!("updated {name}")),
            Some(_) => {}
        }
    }
    for name in before.keys().filter(|n| !after.contains_key(*n)) {
        changes.push(format!("deleted {name}"));
    }
    changes
}

/// A Cluster spec (v1beta2) with konnector's addon configured: Prism Central with a trust bundle, Nutanix
/// categories on the control plane and in a MachineDeployment override.
pub fn cluster_spec(name: &str, workload_port: u16, credentials_secret: &str) -> Value {
    json!({
        "controlPlaneEndpoint": {"host": "127.0.0.1", "port": workload_port},
        "topology": {
            "classRef": {"name": "nutanix-quick-start"},
            "version": "v1.32.4",
            "controlPlane": {"replicas": 1},
            "workers": {"machineDeployments": [{
                "class": "default-worker", "name": "md-0", "replicas": 1,
                "variables": {"overrides": [{"name": "workerConfig", "value": {"nutanix": {"machineDetails": {
                    "additionalCategories": [{"key": "Department", "value": "Engineering"}]}}}}]}
            }]},
            "variables": [{"name": "clusterConfig", "value": {
                "nutanix": {"prismCentralEndpoint": {
                    "url": "https://prism-central.sandbox.invalid:9440",
                    "insecure": true,
                    "credentials": {"secretRef": {"name": format!("{name}-pc-creds")}}
                }},
                "controlPlane": {"nutanix": {"machineDetails": {
                    "additionalCategories": [{"key": "Environment", "value": "Sandbox"}]}}},
                "addons": {"konnectorAgent": {
                    "strategy": "HelmAddon",
                    "credentials": {"secretRef": {"name": credentials_secret}}
                }}
            }}]
        }
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_created_updated_and_deleted() {
        let before: BTreeMap<String, String> = [("a".into(), "1".into()), ("b".into(), "1".into())].into();
        let after: BTreeMap<String, String> = [("b".into(), "2".into()), ("c".into(), "1".into())].into();
        assert_eq!(diff(&before, &after), vec!["updated b", "created c", "deleted a"]);
        assert!(diff(&after, &after).is_empty());
    }
}
