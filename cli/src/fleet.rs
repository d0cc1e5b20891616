//! `konnector fleet`: every Cluster konnector could serve, one line each, worst first, so "which of 300 Clusters
//! have a broken agent" is one command. Each line is doctor's verdict on that Cluster's GetAgentStatus (the
//! executor-side checks that need no dry run), and its first failing (else warning) check.

use serde::Serialize;

use crate::doctor::{Findings, Verdict, diagnose};
use crate::status::StatusView;

/// One Cluster's line.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// `<namespace>/<name>`.
    pub cluster: String,
    /// The worst verdict of its checks.
    pub verdict: Verdict,
    /// The check that gave it, and what it found ("" when all is well).
    pub problem: String,
}

/// The whole fleet.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FleetView {
    /// Worst first, then by name.
    pub clusters: Vec<Row>,
    /// How many have a failing check.
    pub broken: usize,
}

/// Judges one Cluster from its GetAgentStatus answer, or the executor's refusal.
pub fn row(cluster: String, status: Result<StatusView, String>) -> Row {
    let report = diagnose(&Findings {
        cluster: cluster.clone(),
        executor: Ok(String::new()),
        status: Some(status),
        plan: None,
        capi: None,
    });
    let worst = report
        .checks
        .iter()
        .map(|c| c.verdict)
        .max()
        .unwrap_or(Verdict::Ok);
    // A Cluster without the addon is not konnector's to fix: it shows as skip, not as broken.
    let unconfigured = report
        .checks
        .iter()
        .any(|c| c.name == crate::doctor::names::ADDON && c.verdict != Verdict::Ok);
    let (verdict, problem) = if unconfigured {
        (Verdict::Skip, "addon not configured".to_owned())
    } else {
        match report
            .checks
            .iter()
            .find(|c| c.verdict == worst && worst > Verdict::Skip)
        {
            Some(c) => (worst, format!("{}: {}", c.name, c.detail)),
            None => (Verdict::Ok, String::new()),
        }
    };
    Row {
        cluster,
        verdict,
        problem,
    }
}

impl FleetView {
    /// Sorts the rows, worst first.
    pub fn new(mut clusters: Vec<Row>) -> Self {
        clusters.sort_by(|a, b| b.verdict.cmp(&a.verdict).then_with(|| a.cluster.cmp(&b.cluster)));
        let broken = clusters.iter().filter(|r| r.verdict == Verdict::Fail).count();
        Self { clusters, broken }
    }

    /// `VERDICT  CLUSTER  PROBLEM`, then a count.
    pub fn table(&self) -> String {
        let width = self
            .clusters
            .iter()
            .map(|r| r.cluster.len())
            .max()
            .unwrap_or(0)
            .max("CLUSTER".len());
        let mut out = format!("{:<4}  {:<width$}  PROBLEM\n", "", "CLUSTER");
        for r in &self.clusters {
            let word = serde_json::to_value(r.verdict)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            out.push_str(format!("{word:<4}  {:<width$}  {}", r.cluster, r.problem).trim_end());
            out.push('\n');
        }
        out.push_str(&format!(
            "{} Cluster(s), {} with a failing check\n",
            self.clusters.len(),
            self.broken
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_first_and_counted() {
        let r = |c: &str, v| Row {
            cluster: c.into(),
            verdict: v,
            problem: String::new(),
        };
        let view = FleetView::new(vec![
            r("a/ok", Verdict::Ok),
            r("b/fail", Verdict::Fail),
            r("a/warn", Verdict::Warn),
        ]);
        let order: Vec<&str> = view.clusters.iter().map(|r| r.cluster.as_str()).collect();
        assert_eq!(order, ["b/fail", "a/warn", "a/ok"]);
        assert_eq!(view.broken, 1);
        assert!(view.table().ends_with("3 Cluster(s), 1 with a failing check\n"));
    }

    #[test]
    fn a_refusal_is_a_failing_line() {
        let row = row(
            "ns/gone".into(),
            Err("the executor refused GetAgentStatus: NOT_FOUND".into()),
        );
        assert_eq!(row.verdict, Verdict::Fail);
        assert_eq!(
            row.problem,
            "Cluster found: the executor refused GetAgentStatus: NOT_FOUND"
        );
    }
}
