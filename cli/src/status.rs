//! `konnector status`: GetAgentStatus as a table a person reads at a glance, or as JSON.

use konnector_proto::v1::{
    Condition, GetAgentStatusResponse, PreflightOutcome, PrismCentralRegistration, Trigger, UninstallPhase,
};
use serde::Serialize;

use crate::table::{Rows, yes_no};

/// Secret konnector copies onto the workload cluster (the executor's `names::RELEASE_NAMESPACE` and
/// `REMOTE_SECRET_NAME`), as the status talks about it.
pub const WORKLOAD_SECRET: &str = "ntnx-system/konnector-agent";

/// What GetAgentStatus said, with enum values as their names: the JSON output, and what the table shows.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    /// `<namespace>/<name>`.
    pub cluster: String,
    /// The live Cluster's uid.
    pub cluster_uid: String,
    /// The Cluster configures `addons.konnectorAgent`.
    pub addon_configured: bool,
    /// The Cluster has a deletionTimestamp.
    pub cluster_deleting: bool,
    /// Secret ntnx-system/konnector-agent exists on the workload cluster.
    pub credentials_copied: bool,
    /// Why that could not be determined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_error: Option<String>,
    /// The HelmChartProxy, when present.
    pub helm_chart_proxy: Option<HcpView>,
    /// The Cluster's konnector HelmReleaseProxies.
    pub helm_release_proxies: Vec<HrpView>,
    /// e.g. `NOT_STARTED`.
    pub uninstall_phase: String,
    /// e.g. `REGISTERED`.
    pub prism_central_registration: String,
    /// Why the registration is `UNKNOWN`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prism_central_registration_message: Option<String>,
    /// The last Prism Central preflight since the executor started.
    pub last_preflight: Option<PreflightView>,
    /// The reconciler's last pass over the Cluster (RFC 3339), as known to the replica that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reconcile_time: Option<String>,
    /// What that pass did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reconcile_result: Option<String>,
}

/// A HelmChartProxy as reported.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HcpView {
    /// Name (in the Cluster's namespace).
    pub name: String,
    /// Has a deletionTimestamp.
    pub deleting: bool,
    /// Its Ready condition.
    pub ready: Option<ConditionView>,
    /// Its finalizers.
    pub finalizers: Vec<String>,
}

/// A HelmReleaseProxy as reported.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HrpView {
    /// Name.
    pub name: String,
    /// Has a deletionTimestamp.
    pub deleting: bool,
    /// Its Ready condition.
    pub ready: Option<ConditionView>,
    /// Helm release status, e.g. `deployed`.
    pub release_status: String,
    /// Helm revision.
    pub revision: i64,
}

/// A Ready condition.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ConditionView {
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Human message.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One Prism Central preflight.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PreflightView {
    /// RFC 3339, UTC.
    pub checked_at: Option<String>,
    /// e.g. `AFTER_CONTROL_PLANE_INITIALIZED`.
    pub trigger: String,
    /// e.g. `PASSED`.
    pub outcome: String,
    /// The executor's sentence.
    pub message: String,
}

/// An enum's proto name without its type prefix (`UNINSTALL_PHASE_NOT_STARTED` → `NOT_STARTED`); `UNSPECIFIED`
/// for a value this CLI does not know (a newer executor).
fn short(name: Option<&'static str>, prefix: &str) -> String {
    name.map_or("UNSPECIFIED", |n| n.strip_prefix(prefix).unwrap_or(n))
        .to_owned()
}

/// `UninstallPhase` by name.
pub fn phase_name(value: i32) -> String {
    short(
        UninstallPhase::try_from(value).ok().map(|p| p.as_str_name()),
        "UNINSTALL_PHASE_",
    )
}

/// `PreflightOutcome` by name.
pub fn outcome_name(value: i32) -> String {
    short(
        PreflightOutcome::try_from(value).ok().map(|p| p.as_str_name()),
        "PREFLIGHT_OUTCOME_",
    )
}

fn condition(c: Option<Condition>) -> Option<ConditionView> {
    c.map(|c| ConditionView {
        status: c.status,
        reason: c.reason,
        message: c.message,
    })
}

fn timestamp(t: &prost_types::Timestamp) -> Option<String> {
    k8s_openapi::jiff::Timestamp::new(t.seconds, t.nanos)
        .ok()
        .map(|t| t.round(k8s_openapi::jiff::Unit::Second).unwrap_or(t).to_string())
}

impl StatusView {
    /// The view of `status` for `cluster`.
    pub fn new(cluster: String, status: GetAgentStatusResponse) -> Self {
        Self {
            cluster,
            cluster_uid: status.cluster_uid,
            addon_configured: status.addon_configured,
            cluster_deleting: status.cluster_deleting,
            credentials_copied: status.credentials_copied,
            credentials_error: Some(status.credentials_error).filter(|e| !e.is_empty()),
            helm_chart_proxy: status.helm_chart_proxy.map(|h| HcpView {
                name: h.name,
                deleting: h.deleting,
                ready: condition(h.ready),
                finalizers: h.finalizers,
            }),
            helm_release_proxies: status
                .helm_release_proxies
                .into_iter()
                .map(|h| HrpView {
                    name: h.name,
                    deleting: h.deleting,
                    ready: condition(h.ready),
                    release_status: h.release_status,
                    revision: h.revision,
                })
                .collect(),
            uninstall_phase: phase_name(status.uninstall_phase),
            prism_central_registration: short(
                PrismCentralRegistration::try_from(status.prism_central_registration)
                    .ok()
                    .map(|r| r.as_str_name()),
                "PRISM_CENTRAL_REGISTRATION_",
            ),
            prism_central_registration_message: Some(status.prism_central_registration_message)
                .filter(|m| !m.is_empty()),
            last_preflight: status.last_preflight.map(|p| PreflightView {
                checked_at: p.checked_at.as_ref().and_then(timestamp),
                trigger: short(
                    Trigger::try_from(p.trigger).ok().map(|t| t.as_str_name()),
                    "TRIGGER_",
                ),
                outcome: outcome_name(p.outcome),
                message: p.message,
            }),
            last_reconcile_time: Some(status.last_reconcile_time).filter(|t| !t.is_empty()),
            last_reconcile_result: Some(status.last_reconcile_result).filter(|r| !r.is_empty()),
        }
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut rows = Rows::default();
        rows.row("Cluster", &self.cluster);
        rows.row("Cluster uid", &self.cluster_uid);
        rows.row("Addon configured", yes_no(self.addon_configured));
        rows.row("Cluster deleting", yes_no(self.cluster_deleting));
        let credentials = match (&self.credentials_error, self.credentials_copied) {
            (Some(error), _) => format!("unknown: {error}"),
            (None, true) => format!("yes (Secret {WORKLOAD_SECRET} on the workload cluster)"),
            (None, false) => format!("no (Secret {WORKLOAD_SECRET} is not on the workload cluster)"),
        };
        rows.row("Credentials copied", credentials);
        match &self.helm_chart_proxy {
            None => rows.row("HelmChartProxy", "none"),
            Some(h) => {
                let mut text = format!("{} {}", h.name, ready_text(h.ready.as_ref()));
                if h.deleting {
                    text.push_str(", being deleted");
                }
                rows.row("HelmChartProxy", text);
                if !h.finalizers.is_empty() {
                    rows.row("  finalizers", h.finalizers.join(", "));
                }
            }
        }
        if self.helm_release_proxies.is_empty() {
            rows.row("HelmReleaseProxies", "none");
        }
        for (i, h) in self.helm_release_proxies.iter().enumerate() {
            let mut text = format!("{} {}", h.name, ready_text(h.ready.as_ref()));
            if !h.release_status.is_empty() {
                text.push_str(&format!(", release {} revision {}", h.release_status, h.revision));
            }
            if h.deleting {
                text.push_str(", being deleted");
            }
            rows.row(if i == 0 { "HelmReleaseProxies" } else { "" }, text);
        }
        rows.row("Uninstall phase", &self.uninstall_phase);
        let registration = match &self.prism_central_registration_message {
            Some(why) => format!("{}: {why}", self.prism_central_registration),
            None => self.prism_central_registration.clone(),
        };
        rows.row("Prism Central registration", registration);
        match &self.last_preflight {
            None => rows.row("Prism Central preflight", "none since the executor started"),
            Some(p) => {
                rows.row(
                    "Prism Central preflight",
                    format!(
                        "{} ({}, at {})",
                        p.outcome,
                        p.trigger,
                        p.checked_at.as_deref().unwrap_or("an unknown time")
                    ),
                );
                rows.row("", &p.message);
            }
        }
        match (&self.last_reconcile_time, &self.last_reconcile_result) {
            (Some(at), Some(result)) => rows.row("Last reconcile", format!("{result} (at {at})")),
            // Only the replica holding the reconciler Lease knows; another one answers empty.
            _ => rows.row("Last reconcile", "none known to this executor replica"),
        }
        rows.render()
    }
}

/// `Ready=True`, `Ready=False (Reason: message)`, or `Ready not reported`.
pub fn ready_text(ready: Option<&ConditionView>) -> String {
    match ready {
        None => "(Ready not reported)".to_owned(),
        Some(c) => {
            let detail = [c.reason.as_str(), c.message.as_str()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(": ");
            if detail.is_empty() || c.status == "True" {
                format!("(Ready={})", c.status)
            } else {
                format!("(Ready={}, {detail})", c.status)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_lose_their_prefix() {
        assert_eq!(phase_name(UninstallPhase::NotStarted as i32), "NOT_STARTED");
        assert_eq!(phase_name(99), "UNSPECIFIED");
        assert_eq!(
            outcome_name(PreflightOutcome::Unauthorized as i32),
            "UNAUTHORIZED"
        );
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 500_000_000,
        };
        assert_eq!(timestamp(&t).unwrap(), "2023-11-14T22:13:21Z");
    }
}
