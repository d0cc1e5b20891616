//! `konnector plan`: the objects ApplyAgent would write, as the executor renders them. The executor has already
//! replaced every Secret value with `<redacted>`; the CLI shows what it got and adds nothing.

use konnector_proto::v1::PlanAgentResponse;
use serde::Serialize;
use serde_json::Value;

/// PlanAgent's answer as JSON objects.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanView {
    /// `<namespace>/<name>` of the Cluster.
    pub cluster: String,
    /// Namespace ntnx-system on the workload cluster.
    pub namespace: Option<Value>,
    /// Secret ntnx-system/konnector-agent on the workload cluster, values redacted.
    pub secret: Option<Value>,
    /// The HelmChartProxy on the management cluster.
    pub helm_chart_proxy: Option<Value>,
    /// The executor's notes (defaults used, and the like).
    pub notes: Vec<String>,
}

impl PlanView {
    /// The view of `plan` for `cluster`.
    pub fn new(cluster: String, plan: PlanAgentResponse) -> Self {
        Self {
            cluster,
            namespace: plan.namespace.as_ref().map(konnector_proto::struct_to_json),
            secret: plan.secret.as_ref().map(konnector_proto::struct_to_json),
            helm_chart_proxy: plan
                .helm_chart_proxy
                .as_ref()
                .map(konnector_proto::struct_to_json),
            notes: plan.notes,
        }
    }

    /// The HelmChartProxy's name, when the plan has one.
    pub fn hcp_name(&self) -> Option<&str> {
        self.helm_chart_proxy.as_ref()?["metadata"]["name"].as_str()
    }

    /// Each object under a `#` line saying what it is and where it goes, then the notes.
    pub fn text(&self) -> anyhow::Result<String> {
        let mut out = format!(
            "# What ApplyAgent would write for Cluster {} (a dry run: nothing was written)\n",
            self.cluster
        );
        let objects = [
            (&self.namespace, "on the workload cluster"),
            (
                &self.secret,
                "on the workload cluster; values redacted by the executor",
            ),
            (&self.helm_chart_proxy, "on the management cluster"),
        ];
        let mut any = false;
        for (object, place) in objects {
            let Some(object) = object else { continue };
            any = true;
            let kind = object["kind"].as_str().unwrap_or("object");
            let name = match (
                object["metadata"]["namespace"].as_str(),
                object["metadata"]["name"].as_str(),
            ) {
                (Some(ns), Some(name)) => format!("{ns}/{name}"),
                (None, Some(name)) => name.to_owned(),
                _ => String::new(),
            };
            out.push_str(&format!("\n# {kind} {name}, {place}\n"));
            out.push_str(&serde_json::to_string_pretty(object)?);
            out.push('\n');
        }
        if !any {
            out.push_str("\nnothing: the Cluster does not configure the addon\n");
        }
        if !self.notes.is_empty() {
            out.push_str("\nNotes:\n");
            for note in &self.notes {
                out.push_str(&format!("- {note}\n"));
            }
        }
        Ok(out)
    }
}
