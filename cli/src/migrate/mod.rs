//! `konnector migrate`: taking over a fleet CAREN manages, Cluster by Cluster, without uninstalling an agent.
//!
//! For each Cluster, one row: the HelmChartProxy that drives its agent now (read through the kubeconfig, with its
//! field managers), the name konnector would write (PlanAgent's, which is the existing one when the Cluster owns
//! it), what changes field by field ([`compare`]), whether that is a new Helm revision, and a verdict. `--apply`
//! ([`run`]) then calls ApplyAgent for the rows that are not blocked. Nothing here deletes or renames a proxy:
//! ApplyAgent never does, and a row that would make CAAPH uninstall (a reinstall, a second proxy for the release,
//! a proxy of another Cluster) is blocked before any call.
//!
//! The judgement ([`judge`]) is a pure function of what was read, so its rules are unit-tested here; [`run`] reads
//! and writes.

pub mod compare;
pub mod run;

use std::collections::BTreeMap;

use kube::api::DynamicObject;
use serde::Serialize;
use serde_json::Value;

use crate::{plan::PlanView, status::StatusView};
use compare::{Change, Effect};

/// The field manager of CAREN's server-side applies (the executor's `names::CAREN_FIELD_MANAGER`).
pub const CAREN_FIELD_MANAGER: &str = "cluster-api-runtime-extensions-nutanix";
/// konnector's field manager (the executor's `names::FIELD_MANAGER`).
pub const KONNECTOR_FIELD_MANAGER: &str = "konnector";
/// The annotation CAREN names its HelmChartProxy after (`konnector-agent-<uuid>`).
pub const CAREN_UUID_ANNOTATION: &str = "caren.nutanix.com/cluster-uuid";
/// CAPI's cluster-name label, which the proxies' selectors name.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";

/// What a row says will happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// konnector writes into the existing proxy; the release does not change.
    NoChange,
    /// konnector writes into the existing proxy; CAAPH upgrades the release once (revision history kept).
    Upgrade,
    /// No proxy drives the Cluster's release: konnector creates one (as AfterControlPlaneInitialized would).
    Install,
    /// No proxy yet, and the control plane has not initialized: AfterControlPlaneInitialized installs it.
    Waiting,
    /// The addon is not configured on the Cluster: nothing to take over.
    NotEnabled,
    /// Taking over would uninstall, fight another Cluster's proxy, or cannot be judged; `reason` says which.
    Blocked,
}

impl Verdict {
    /// Whether `--apply` calls ApplyAgent for it.
    pub fn applies(self) -> bool {
        matches!(self, Self::NoChange | Self::Upgrade | Self::Install)
    }
}

/// The proxy there now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Existing {
    /// Its name.
    pub name: String,
    /// CAREN's field manager has fields in it.
    pub caren: bool,
    /// konnector's field manager has fields in it.
    pub konnector: bool,
    /// Every other manager (CAAPH's finalizer writes, kubectl, …), by name.
    pub other_managers: Vec<String>,
}

impl Existing {
    /// `CAREN, konnector, kubectl` or `none`.
    pub fn managers(&self) -> String {
        let mut all: Vec<String> = Vec::new();
        if self.caren {
            all.push("CAREN".into());
        }
        if self.konnector {
            all.push("konnector".into());
        }
        all.extend(self.other_managers.iter().cloned());
        if all.is_empty() {
            "none".into()
        } else {
            all.join(", ")
        }
    }
}

/// What `--apply` did for a row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome", content = "message")]
pub enum Applied {
    /// ApplyAgent answered; its (secret-free) message.
    Applied(String),
    /// Not attempted: the row is blocked or not enabled, or changed since the plan.
    Skipped(String),
    /// ApplyAgent failed; the executor's message.
    Failed(String),
    /// Not attempted because an earlier row failed.
    NotAttempted(String),
}

/// One Cluster's row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// `<namespace>/<name>`.
    pub cluster: String,
    /// The live Cluster's uid (ApplyAgent is called with it, so a Cluster re-created since is refused).
    pub cluster_uid: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Why it is blocked (empty otherwise).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The proxy that drives the Cluster's release now, under the name konnector would write.
    pub existing: Option<Existing>,
    /// The name konnector would write (PlanAgent's).
    pub planned_name: Option<String>,
    /// The spec fields that would change.
    pub changes: Vec<Change>,
    /// Whether CAAPH would make a new Helm revision.
    pub new_revision: bool,
    /// The release's current revisions, as CAAPH reports them (HelmReleaseProxy status).
    pub revisions: Vec<i64>,
    /// Other proxies that drive the same release (left in place, never deleted).
    pub siblings: Vec<String>,
    /// The executor's notes on the plan.
    pub notes: Vec<String>,
    /// With `--apply`: what happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<Applied>,
}

impl Row {
    /// The verdict in words.
    pub fn verdict_text(&self) -> String {
        match self.verdict {
            Verdict::NoChange => "takes over, no change".into(),
            Verdict::Upgrade => "takes over, upgrade (new revision)".into(),
            Verdict::Install => "installs (new HelmChartProxy)".into(),
            Verdict::Waiting => {
                "waits for its control plane (AfterControlPlaneInitialized installs the agent)".into()
            }
            Verdict::NotEnabled => "not enabled".into(),
            Verdict::Blocked => format!("blocked: {}", self.reason),
        }
    }
}

/// What was read about one Cluster.
pub struct Inputs<'a> {
    /// `<namespace>/<name>`.
    pub cluster: String,
    /// The Cluster's name.
    pub name: &'a str,
    /// The Cluster's labels and annotations as listed through the kubeconfig (for the proxies' selectors and
    /// CAREN's name).
    pub labels: &'a BTreeMap<String, String>,
    /// Its annotations.
    pub annotations: &'a BTreeMap<String, String>,
    /// Whether CAPI says its control plane has initialized ([`crate::capi::control_plane_initialized`]).
    pub initialized: bool,
    /// GetAgentStatus, or why not.
    pub status: Result<&'a StatusView, String>,
    /// PlanAgent (asked only for a configured Cluster that is not being deleted), or why not.
    pub plan: Option<Result<&'a PlanView, String>>,
    /// The HelmChartProxies in the Cluster's namespace, or why they could not be read.
    pub proxies: Result<&'a [DynamicObject], String>,
}

fn blocked(row: Row, reason: impl Into<String>) -> Row {
    Row {
        verdict: Verdict::Blocked,
        reason: reason.into(),
        ..row
    }
}

/// Whether `hcp` is owned by the Cluster: an ownerReference to its uid and a selector naming it (the executor's
/// `ownership::owned_by_cluster`).
fn owned_by(hcp: &DynamicObject, uid: &str, name: &str) -> bool {
    let owner = hcp
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.kind == "Cluster" && r.uid == uid);
    owner && selected_name(hcp) == Some(name)
}

fn selected_name(hcp: &DynamicObject) -> Option<&str> {
    hcp.data["spec"]["clusterSelector"]["matchLabels"][CLUSTER_NAME_LABEL].as_str()
}

/// Whether the proxy installs the agent's release on a Cluster with `labels`: its selector selects them, and it
/// names the release (or chart) konnector writes.
fn drives_release(hcp: &DynamicObject, labels: &BTreeMap<String, String>, planned: &Value) -> bool {
    let selector = serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>(
        hcp.data["spec"]["clusterSelector"].clone(),
    );
    let spec = &hcp.data["spec"];
    let same_release =
        spec["releaseName"] == planned["releaseName"] || spec["chartName"] == planned["chartName"];
    same_release && selector.is_ok_and(|s| crate::capi::selects(&s, labels))
}

fn existing(hcp: &DynamicObject) -> Existing {
    let mut out = Existing {
        name: hcp.metadata.name.clone().unwrap_or_default(),
        ..Existing::default()
    };
    for entry in hcp.metadata.managed_fields.iter().flatten() {
        // The status subresource is CAAPH reporting, not a say in the spec.
        if entry.subresource.as_deref() == Some("status") {
            continue;
        }
        match entry.manager.as_deref() {
            Some(CAREN_FIELD_MANAGER) => out.caren = true,
            Some(KONNECTOR_FIELD_MANAGER) => out.konnector = true,
            Some(other) => out.other_managers.push(bounded(other, 128)),
            None => {}
        }
    }
    out.other_managers.sort();
    out.other_managers.dedup();
    out
}

/// Judges one Cluster (see the module documentation).
pub fn judge(inputs: &Inputs<'_>) -> Row {
    let mut row = Row {
        cluster: inputs.cluster.clone(),
        cluster_uid: String::new(),
        verdict: Verdict::Blocked,
        reason: String::new(),
        existing: None,
        planned_name: None,
        changes: Vec::new(),
        new_revision: false,
        revisions: Vec::new(),
        siblings: Vec::new(),
        notes: Vec::new(),
        applied: None,
    };
    let status = match &inputs.status {
        Ok(s) => *s,
        Err(why) => return blocked(row, format!("no status from the executor: {why}")),
    };
    row.cluster_uid = status.cluster_uid.clone();
    row.revisions = status.helm_release_proxies.iter().map(|h| h.revision).collect();
    if !status.addon_configured {
        return Row {
            verdict: Verdict::NotEnabled,
            ..row
        };
    }
    if status.cluster_deleting {
        return blocked(row, "the Cluster is being deleted");
    }
    let plan = match &inputs.plan {
        Some(Ok(p)) => *p,
        Some(Err(why)) => return blocked(row, why.clone()),
        None => return blocked(row, "no plan from the executor"),
    };
    row.notes = plan.notes.clone();
    let (Some(planned), Some(planned_name)) = (&plan.helm_chart_proxy, plan.hcp_name()) else {
        return Row {
            verdict: Verdict::NotEnabled,
            ..row
        };
    };
    row.planned_name = Some(planned_name.to_owned());
    let proxies = match &inputs.proxies {
        Ok(p) => *p,
        Err(why) => return blocked(row, format!("cannot read the HelmChartProxies: {why}")),
    };
    let planned_spec = &planned["spec"];
    let uid = status.cluster_uid.as_str();
    let name_of = |h: &DynamicObject| h.metadata.name.clone().unwrap_or_default();
    let live = proxies.iter().find(|h| name_of(h) == planned_name);
    if let Some(live) = live {
        row.existing = Some(existing(live));
        if live.metadata.deletion_timestamp.is_some() {
            return blocked(row, format!("HelmChartProxy {planned_name} is being deleted"));
        }
        if !owned_by(live, uid, inputs.name) {
            return blocked(
                row,
                format!(
                    "HelmChartProxy {planned_name} is not owned by this Cluster (ownerReference and selector)"
                ),
            );
        }
    }
    // CAREN's name for this Cluster, held by another Cluster: a copied uuid annotation. CAREN then trades that
    // proxy between both Clusters on every hook; fix the annotation before taking either over.
    if let Some(uuid) = inputs.annotations.get(CAREN_UUID_ANNOTATION) {
        let caren_name = format!("konnector-agent-{uuid}");
        if let Some(other) = proxies.iter().find(|h| name_of(h) == caren_name)
            && caren_name != planned_name
            && !owned_by(other, uid, inputs.name)
        {
            let selects = bounded(selected_name(other).unwrap_or("?"), 253);
            return blocked(
                row,
                format!(
                    "HelmChartProxy {} (CAREN's name for this Cluster) belongs to Cluster {selects:?}: is the {CAREN_UUID_ANNOTATION} annotation copied from it?",
                    bounded(&caren_name, 253)
                ),
            );
        }
    }
    row.siblings = proxies
        .iter()
        .filter(|h| name_of(h) != planned_name && h.metadata.deletion_timestamp.is_none())
        .filter(|h| drives_release(h, inputs.labels, planned_spec))
        .map(|h| bounded(&name_of(h), 253))
        .collect();
    let Some(live) = live else {
        if !row.siblings.is_empty() {
            let others = row.siblings.join(", ");
            return blocked(
                row,
                format!(
                    "HelmChartProxy {others} already drives this Cluster's release and konnector would create {planned_name} beside it (two proxies, one release); see docs/operating.md, \"Taking over from CAREN\""
                ),
            );
        }
        return Row {
            verdict: if inputs.initialized {
                Verdict::Install
            } else {
                Verdict::Waiting
            },
            ..row
        };
    };
    row.changes = compare::changes(&live.data["spec"], planned_spec);
    let blocking: Vec<String> = row
        .changes
        .iter()
        .filter(|c| c.effect.blocks())
        .map(Change::text)
        .collect();
    if !blocking.is_empty() {
        let why = format!(
            "{} would change, and CAAPH uninstalls the release for that (a reinstall or an unselected Cluster); make konnector's chart settings match the live proxy first",
            blocking.join("; ")
        );
        return blocked(row, why);
    }
    row.new_revision = row.changes.iter().any(|c| c.effect == Effect::NewRevision);
    row.verdict = if row.new_revision {
        Verdict::Upgrade
    } else {
        Verdict::NoChange
    };
    row
}

/// `text` on one line (no control characters) and at most `max` characters: names and managers come from objects
/// anyone with write access to a namespace may have written.
pub fn bounded(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match one_line.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    }
}

/// Every row, and the counts.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrateView {
    /// `plan` or `apply`.
    pub mode: &'static str,
    /// One per Cluster, by namespace and name.
    pub clusters: Vec<Row>,
    /// How many rows each verdict has.
    pub counts: BTreeMap<String, usize>,
    /// Rows blocked, plus rows whose apply failed or was not attempted after a failure.
    pub problems: usize,
}

impl MigrateView {
    /// Sorts and counts.
    pub fn new(mode: &'static str, mut clusters: Vec<Row>) -> Self {
        clusters.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        let mut counts = BTreeMap::new();
        for r in &clusters {
            let key = serde_json::to_value(r.verdict)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            *counts.entry(key).or_insert(0) += 1;
        }
        let problems = clusters
            .iter()
            .filter(|r| {
                r.verdict == Verdict::Blocked
                    || matches!(r.applied, Some(Applied::Failed(_) | Applied::NotAttempted(_)))
            })
            .count();
        Self {
            mode,
            clusters,
            counts,
            problems,
        }
    }

    /// One block per Cluster, then the counts.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for r in &self.clusters {
            out.push_str(&format!("{}: {}\n", r.cluster, r.verdict_text()));
            let mut rows = crate::table::Rows::default();
            if let Some(e) = &r.existing {
                rows.row(
                    "  HelmChartProxy",
                    format!("{} (managers: {})", e.name, e.managers()),
                );
            } else if r.planned_name.is_some() {
                rows.row("  HelmChartProxy", "none under the planned name");
            }
            if let Some(name) = &r.planned_name {
                let same = r.existing.as_ref().is_some_and(|e| &e.name == name);
                rows.row(
                    "  konnector writes",
                    if same {
                        format!("{name} (the same object: nothing deleted or renamed)")
                    } else {
                        name.clone()
                    },
                );
            }
            if r.existing.is_some() {
                let changes: Vec<String> = r.changes.iter().map(Change::text).collect();
                rows.row(
                    "  changes",
                    if changes.is_empty() {
                        "none".to_owned()
                    } else {
                        changes.join("; ")
                    },
                );
            }
            if !r.revisions.is_empty() {
                let now: Vec<String> = r.revisions.iter().map(i64::to_string).collect();
                let next = match (r.verdict, r.new_revision) {
                    (Verdict::Blocked, _) => "",
                    (_, true) => "; a new revision",
                    (_, false) => "; no new revision",
                };
                rows.row("  Helm revision", format!("{} now{next}", now.join(", ")));
            }
            for s in &r.siblings {
                rows.row("  also drives it", format!("{s} (left in place)"));
            }
            match &r.applied {
                Some(Applied::Applied(m)) => rows.row("  applied", m.clone()),
                Some(Applied::Skipped(m)) => rows.row("  skipped", m.clone()),
                Some(Applied::Failed(m)) => rows.row("  FAILED", m.clone()),
                Some(Applied::NotAttempted(m)) => rows.row("  not attempted", m.clone()),
                None => {}
            }
            out.push_str(&rows.render());
        }
        let counts: Vec<String> = self.counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        out.push_str(&format!(
            "{} Cluster(s): {}{}\n",
            self.clusters.len(),
            if counts.is_empty() {
                "none".to_owned()
            } else {
                counts.join(", ")
            },
            if self.mode == "plan" {
                " (a plan: nothing was written)"
            } else {
                ""
            }
        ));
        out
    }
}

#[cfg(test)]
mod tests;
