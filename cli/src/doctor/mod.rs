//! `konnector doctor`: a list of checks, each ok, warn, fail or skip, with a one-line next step when it is not ok.
//!
//! The checks only read: the executor's health, GetAgentStatus and PlanAgent (a dry run), and on the CAPI side
//! (through the kubeconfig, [`crate::capi`]) the ExtensionConfig, the caBundle CAPI injected, the gateway Service's
//! endpoints and the gateway's NetworkPolicy. Each verdict is decided here from those answers, so the same answers
//! always give the same report.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use rustls::pki_types::{CertificateDer, pem::PemObject};
use serde::Serialize;

use crate::capi::{CapiController, CapiFindings, GatewayView, Lookup, selects};
use crate::plan::PlanView;
use crate::status::{StatusView, WORKLOAD_SECRET, ready_text};

mod capi_side;

use capi_side::capi_checks;

/// A check's verdict.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Fine.
    Ok,
    /// Could not be checked (e.g. nothing to check yet).
    Skip,
    /// Worth a look; not broken.
    Warn,
    /// Broken: doctor exits non-zero.
    Fail,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Skip => "skip",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One check's result.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// The verdict.
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// What to do next, when the verdict is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_step: Option<String>,
}

fn check(name: &'static str, verdict: Verdict, detail: impl Into<String>, next: Option<String>) -> Check {
    Check {
        name,
        verdict,
        detail: detail.into(),
        next_step: next,
    }
}

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    check(name, Verdict::Ok, detail, None)
}

fn not_ok(name: &'static str, verdict: Verdict, detail: impl Into<String>, next: impl Into<String>) -> Check {
    check(name, verdict, detail, Some(next.into()))
}

/// The whole report.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `<namespace>/<name>`.
    pub cluster: String,
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
    /// True when no check failed.
    pub healthy: bool,
}

/// Names of the checks, shared by the report and docs/cli.md.
pub mod names {
    /// The executor answers the gRPC health check.
    pub const EXECUTOR: &str = "executor reachable";
    /// GetAgentStatus found the Cluster.
    pub const CLUSTER: &str = "Cluster found";
    /// The Cluster configures the addon.
    pub const ADDON: &str = "addon configured";
    /// PlanAgent succeeds: the next apply has what it needs.
    pub const PLAN: &str = "next apply (dry run)";
    /// The workload Secret exists.
    pub const CREDENTIALS: &str = "credentials copied";
    /// The HelmChartProxy exists, matches the plan, and is Ready.
    pub const HCP: &str = "HelmChartProxy";
    /// The HelmReleaseProxies are Ready.
    pub const RELEASES: &str = "releases ready";
    /// The last Prism Central preflight.
    pub const PREFLIGHT: &str = "Prism Central preflight";
    /// Prism Central's registration of the cluster.
    pub const REGISTRATION: &str = "Prism Central registration";
    /// Deletion and uninstall.
    pub const DELETION: &str = "deletion and uninstall";
    /// The CAPI side as a whole, when it could not be read (no kubeconfig).
    pub const CAPI_SIDE: &str = "CAPI side";
    /// CAPI discovered the gateway's handlers (the ExtensionConfig's Discovered condition).
    pub const EXTENSION_CONFIG: &str = "ExtensionConfig discovered";
    /// The caBundle CAPI verifies the gateway with holds the gateway's serving CA.
    pub const CA_BUNDLE: &str = "caBundle injected";
    /// The gateway Service CAPI calls has ready endpoints.
    pub const ENDPOINTS: &str = "gateway endpoints";
    /// The gateway's NetworkPolicy lets CAPI's controller in.
    pub const NETWORK_POLICY: &str = "NetworkPolicy admits CAPI";
}

/// What the executor said, as doctor needs it.
#[derive(Debug)]
pub struct Findings {
    /// The Cluster.
    pub cluster: String,
    /// How the executor was reached, or why it could not be.
    pub executor: Result<String, String>,
    /// GetAgentStatus, or the executor's refusal (one line).
    pub status: Option<Result<StatusView, String>>,
    /// PlanAgent, or the executor's refusal (one line).
    pub plan: Option<Result<PlanView, String>>,
    /// The CAPI side, or why it was not read; None: not asked for.
    pub capi: Option<Result<CapiFindings, String>>,
}

/// Decides every check from `findings`: the executor's side, then the CAPI side. A check whose input is missing
/// because an earlier one failed is left out: the earlier failure is the thing to fix.
pub fn diagnose(f: &Findings) -> Report {
    let mut report = diagnose_executor(f);
    match &f.capi {
        None => {}
        Some(Err(why)) => report
            .checks
            .push(check(names::CAPI_SIDE, Verdict::Skip, why.clone(), None)),
        Some(Ok(capi)) => report.checks.extend(capi_checks(capi)),
    }
    report.healthy = report.checks.iter().all(|c| c.verdict != Verdict::Fail);
    report
}

fn diagnose_executor(f: &Findings) -> Report {
    let mut checks = Vec::new();
    let finish = |checks: Vec<Check>| Report {
        cluster: f.cluster.clone(),
        healthy: checks.iter().all(|c| c.verdict != Verdict::Fail),
        checks,
    };
    match &f.executor {
        Ok(via) => checks.push(ok(names::EXECUTOR, format!("serving, via {via}"))),
        Err(why) => {
            checks.push(not_ok(
                names::EXECUTOR,
                Verdict::Fail,
                why.clone(),
                "check the executor pods (kubectl -n konnector-system get pods,events), or the --executor-url/--ca \
                 flags; the gateways answer every hook with Failure while it is down",
            ));
            return finish(checks);
        }
    }
    let status = match &f.status {
        Some(Ok(s)) => s,
        Some(Err(why)) => {
            checks.push(not_ok(
                names::CLUSTER,
                Verdict::Fail,
                why.clone(),
                format!(
                    "check the name: kubectl get cluster -n {}",
                    namespace_of(&f.cluster)
                ),
            ));
            return finish(checks);
        }
        None => return finish(checks),
    };
    checks.push(ok(names::CLUSTER, format!("uid {}", status.cluster_uid)));
    if !status.addon_configured {
        checks.push(not_ok(
            names::ADDON,
            Verdict::Fail,
            "the Cluster's clusterConfig has no addons.konnectorAgent, so konnector does nothing for it",
            "set addons.konnectorAgent (credentials.secretRef.name) in the Cluster's clusterConfig topology variable",
        ));
        checks.push(deletion(status));
        return finish(checks);
    }
    checks.push(ok(names::ADDON, "clusterConfig has addons.konnectorAgent"));

    let plan = match &f.plan {
        Some(Ok(plan)) => {
            checks.push(ok(
                names::PLAN,
                match plan.hcp_name() {
                    Some(name) => format!("ApplyAgent would apply HelmChartProxy {name}"),
                    None => "ApplyAgent would apply nothing".to_owned(),
                },
            ));
            Some(plan)
        }
        Some(Err(why)) => {
            checks.push(not_ok(
                names::PLAN,
                Verdict::Fail,
                why.clone(),
                "fix what the message names; the next AfterControlPlaneInitialized or BeforeClusterUpgrade hook \
                 applies again (kubectl describe cluster shows konnector's Events)",
            ));
            None
        }
        None => None,
    };

    let installed = status.helm_chart_proxy.is_some() || !status.helm_release_proxies.is_empty();
    checks.push(match (&status.credentials_error, status.credentials_copied) {
        (Some(error), _) => not_ok(
            names::CREDENTIALS,
            Verdict::Fail,
            format!("cannot tell: {error}"),
            format!(
                "check that the workload cluster's API server answers from the management cluster (Secret {}-kubeconfig)",
                name_of(&f.cluster)
            ),
        ),
        (None, true) => ok(names::CREDENTIALS, format!("Secret {WORKLOAD_SECRET} is on the workload cluster")),
        (None, false) if !installed && !status.cluster_deleting => not_ok(
            names::CREDENTIALS,
            Verdict::Warn,
            format!("Secret {WORKLOAD_SECRET} is not on the workload cluster: not installed yet"),
            "CAPI calls AfterControlPlaneInitialized once the control plane is up; see the Cluster's \
             TopologyReconciled condition",
        ),
        (None, false) if status.cluster_deleting => ok(
            names::CREDENTIALS,
            format!("Secret {WORKLOAD_SECRET} is not on the workload cluster (the Cluster is being deleted)"),
        ),
        (None, false) => not_ok(
            names::CREDENTIALS,
            Verdict::Fail,
            format!("Secret {WORKLOAD_SECRET} is missing on the workload cluster, so the agent cannot log in to Prism Central"),
            "ApplyAgent writes it: the next BeforeClusterUpgrade hook restores it",
        ),
    });

    checks.push(hcp(status, plan));
    checks.push(releases(status));
    checks.push(preflight(status));
    checks.push(registration(status));
    checks.push(deletion(status));
    finish(checks)
}

fn hcp(status: &StatusView, plan: Option<&PlanView>) -> Check {
    let Some(h) = &status.helm_chart_proxy else {
        return if status.cluster_deleting {
            ok(names::HCP, "none (the Cluster is being deleted)")
        } else {
            not_ok(
                names::HCP,
                Verdict::Warn,
                "none: the agent is not installed yet",
                "ApplyAgent writes it on AfterControlPlaneInitialized; see the Cluster's TopologyReconciled condition",
            )
        };
    };
    if let Some(expected) = plan.and_then(PlanView::hcp_name)
        && expected != h.name
    {
        return not_ok(
            names::HCP,
            Verdict::Fail,
            format!("found {}, but ApplyAgent would write {expected}", h.name),
            "the HelmChartProxy name changed; the next hook re-applies it",
        );
    }
    if h.deleting && !status.cluster_deleting {
        return not_ok(
            names::HCP,
            Verdict::Fail,
            format!("{} is being deleted while the Cluster is not", h.name),
            "something else deleted it; the next BeforeClusterUpgrade hook applies it again",
        );
    }
    match &h.ready {
        Some(c) if c.status == "True" => {
            ok(names::HCP, format!("{} {}", h.name, ready_text(h.ready.as_ref())))
        }
        Some(_) => not_ok(
            names::HCP,
            Verdict::Fail,
            format!("{} {}", h.name, ready_text(h.ready.as_ref())),
            "see CAAPH's logs and kubectl describe helmchartproxy",
        ),
        None => not_ok(
            names::HCP,
            Verdict::Warn,
            format!("{} has no Ready condition yet", h.name),
            "check that CAAPH runs (it writes the condition)",
        ),
    }
}

fn releases(status: &StatusView) -> Check {
    if status.helm_release_proxies.is_empty() {
        return match &status.helm_chart_proxy {
            None => check(
                names::RELEASES,
                Verdict::Skip,
                "no HelmChartProxy, so no releases",
                None,
            ),
            Some(_) if status.cluster_deleting => ok(names::RELEASES, "none left"),
            Some(h) => not_ok(
                names::RELEASES,
                Verdict::Warn,
                format!("CAAPH has created no HelmReleaseProxy for {}", h.name),
                "check that CAAPH runs and that the HelmChartProxy's clusterSelector matches the Cluster's labels",
            ),
        };
    }
    let not_ready: Vec<String> = status
        .helm_release_proxies
        .iter()
        .filter(|h| h.ready.as_ref().is_none_or(|c| c.status != "True"))
        .map(|h| format!("{} {}", h.name, ready_text(h.ready.as_ref())))
        .collect();
    if not_ready.is_empty() {
        let what = status
            .helm_release_proxies
            .iter()
            .map(|h| match h.release_status.as_str() {
                "" => h.name.clone(),
                s => format!("{} ({s}, revision {})", h.name, h.revision),
            })
            .collect::<Vec<_>>()
            .join(", ");
        ok(names::RELEASES, what)
    } else if status.cluster_deleting {
        ok(names::RELEASES, format!("uninstalling: {}", not_ready.join("; ")))
    } else {
        not_ok(
            names::RELEASES,
            Verdict::Fail,
            not_ready.join("; "),
            format!(
                "kubectl -n {} describe helmreleaseproxy shows CAAPH's reason; the agent runs in ntnx-system on the \
                 workload cluster",
                namespace_of(&status.cluster)
            ),
        )
    }
}

fn preflight(status: &StatusView) -> Check {
    match &status.last_preflight {
        None => check(
            names::PREFLIGHT,
            Verdict::Skip,
            "none since the executor started (it runs before each apply, unless --prism-central-checks=off)",
            None,
        ),
        Some(p) if p.outcome == "PASSED" || p.outcome == "PASSED_WITHOUT_AUTHENTICATION" => {
            ok(names::PREFLIGHT, format!("{} ({})", p.outcome, p.message))
        }
        Some(p) => not_ok(
            names::PREFLIGHT,
            Verdict::Fail,
            format!("{}: {}", p.outcome, p.message),
            "fix what the message names (docs/operating.md, Troubleshooting); the next hook checks again",
        ),
    }
}

fn registration(status: &StatusView) -> Check {
    match status.prism_central_registration.as_str() {
        "REGISTERED" => ok(names::REGISTRATION, "Prism Central lists the cluster"),
        "NOT_REGISTERED" if status.cluster_deleting => {
            ok(names::REGISTRATION, "Prism Central does not list the cluster")
        }
        "NOT_REGISTERED" => not_ok(
            names::REGISTRATION,
            Verdict::Warn,
            "Prism Central does not list the cluster (yet)",
            "the agent registers it from its init container: on the workload cluster, kubectl -n ntnx-system logs \
             deploy/konnector-agent -c onboarding-container",
        ),
        "UNKNOWN" => not_ok(
            names::REGISTRATION,
            Verdict::Warn,
            status
                .prism_central_registration_message
                .clone()
                .unwrap_or_else(|| "unknown".to_owned()),
            "fix what the message names; the lookup runs again on every status",
        ),
        other => check(
            names::REGISTRATION,
            Verdict::Skip,
            format!("not reported ({other})"),
            None,
        ),
    }
}

fn deletion(status: &StatusView) -> Check {
    if !status.cluster_deleting {
        return ok(names::DELETION, "the Cluster is not being deleted");
    }
    let phase = status.uninstall_phase.as_str();
    match phase {
        "COMPLETED" | "NOT_NEEDED" => ok(
            names::DELETION,
            format!("being deleted; uninstall {phase}: deletion may proceed"),
        ),
        "TIMED_OUT" => not_ok(
            names::DELETION,
            Verdict::Fail,
            "being deleted; the agent's uninstall timed out",
            "see the Cluster's UninstallTimedOut* Event, CAAPH's logs and kubectl describe helmreleaseproxy",
        ),
        _ => not_ok(
            names::DELETION,
            Verdict::Warn,
            format!("being deleted; uninstall {phase}"),
            "CAPI calls BeforeClusterDelete until the uninstall is done; the HelmReleaseProxies above show what is left",
        ),
    }
}

/// A read that did not give an answer, as a check: skipped when the user may not read it or it failed, so the
/// report never passes what it did not see.
fn unread<T>(name: &'static str, lookup: &Lookup<T>) -> Option<Check> {
    match lookup {
        Lookup::Found(_) | Lookup::Missing(_) => None,
        Lookup::Forbidden(what) => Some(not_ok(
            name,
            Verdict::Skip,
            what.clone(),
            "grant the CLI's read-only ClusterRole (docs/cli.md, \"doctor's checks\"), or run with a \
             kubeconfig that may read it",
        )),
        Lookup::Error(what) => Some(not_ok(
            name,
            Verdict::Skip,
            what.clone(),
            "retry; check the API server",
        )),
    }
}

fn namespace_of(cluster: &str) -> &str {
    cluster.split_once('/').map_or(cluster, |(ns, _)| ns)
}

fn name_of(cluster: &str) -> &str {
    cluster.split_once('/').map_or(cluster, |(_, n)| n)
}

impl Report {
    /// One line per check (`ok  name  detail`), a `next:` line under each that is not ok, and a closing count.
    pub fn text(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = format!("Cluster {}\n", self.cluster);
        for c in &self.checks {
            out.push_str(&format!(
                "{:<4}  {:<width$}  {}\n",
                c.verdict.word(),
                c.name,
                c.detail
            ));
            if let Some(next) = &c.next_step {
                out.push_str(&format!("{:<4}  {:<width$}  next: {next}\n", "", ""));
            }
        }
        let count = |v: Verdict| self.checks.iter().filter(|c| c.verdict == v).count();
        out.push_str(&format!(
            "{} ok, {} warn, {} fail, {} skip\n",
            count(Verdict::Ok),
            count(Verdict::Warn),
            count(Verdict::Fail),
            count(Verdict::Skip)
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{ConditionView, HcpView, HrpView, PreflightView};

    fn ready() -> Option<ConditionView> {
        Some(ConditionView {
            status: "True".into(),
            reason: String::new(),
            message: String::new(),
        })
    }

    fn healthy() -> StatusView {
        StatusView {
            cluster: "ns/c".into(),
            cluster_uid: "u".into(),
            addon_configured: true,
            cluster_deleting: false,
            credentials_copied: true,
            credentials_error: None,
            helm_chart_proxy: Some(HcpView {
                name: "konnector-agent-c".into(),
                deleting: false,
                ready: ready(),
                finalizers: vec![],
            }),
            helm_release_proxies: vec![HrpView {
                name: "konnector-agent-c-x".into(),
                deleting: false,
                ready: ready(),
                release_status: "deployed".into(),
                revision: 1,
            }],
            uninstall_phase: "NOT_STARTED".into(),
            prism_central_registration: "REGISTERED".into(),
            prism_central_registration_message: None,
            last_preflight: Some(PreflightView {
                checked_at: None,
                trigger: "AFTER_CONTROL_PLANE_INITIALIZED".into(),
                outcome: "PASSED".into(),
                message: "fine".into(),
            }),
            last_reconcile_time: None,
            last_reconcile_result: None,
        }
    }

    fn findings(status: StatusView) -> Findings {
        Findings {
            cluster: "ns/c".into(),
            executor: Ok("x".into()),
            status: Some(Ok(status)),
            plan: None,
            capi: None,
        }
    }

    fn verdict_of(report: &Report, name: &str) -> Verdict {
        report.checks.iter().find(|c| c.name == name).unwrap().verdict
    }

    #[test]
    fn healthy_is_all_ok() {
        let report = diagnose(&findings(healthy()));
        assert!(report.healthy);
        assert!(
            report.checks.iter().all(|c| c.verdict == Verdict::Ok),
            "{report:?}"
        );
    }

    #[test]
    fn each_problem_is_named() {
        let mut s = healthy();
        s.credentials_copied = false;
        let report = diagnose(&findings(s));
        assert!(!report.healthy);
        assert_eq!(verdict_of(&report, names::CREDENTIALS), Verdict::Fail);

        let mut s = healthy();
        s.helm_release_proxies[0].ready = Some(ConditionView {
            status: "False".into(),
            reason: "HelmInstallOrUpgradeFailed".into(),
            message: "chart not found".into(),
        });
        let report = diagnose(&findings(s));
        let releases = report.checks.iter().find(|c| c.name == names::RELEASES).unwrap();
        assert_eq!(releases.verdict, Verdict::Fail);
        assert!(releases.detail.contains("chart not found"), "{releases:?}");

        let mut s = healthy();
        s.cluster_deleting = true;
        s.uninstall_phase = "TIMED_OUT".into();
        assert_eq!(
            verdict_of(&diagnose(&findings(s)), names::DELETION),
            Verdict::Fail
        );

        let mut s = healthy();
        s.addon_configured = false;
        let report = diagnose(&findings(s));
        assert!(!report.healthy);
        assert_eq!(verdict_of(&report, names::ADDON), Verdict::Fail);

        let unreachable = Findings {
            cluster: "ns/c".into(),
            executor: Err("refused".into()),
            status: None,
            plan: None,
            capi: None,
        };
        let report = diagnose(&unreachable);
        assert_eq!(report.checks.len(), 1);
        assert!(!report.healthy);
    }

    #[test]
    fn not_installed_yet_warns_and_does_not_fail() {
        let mut s = healthy();
        s.credentials_copied = false;
        s.helm_chart_proxy = None;
        s.helm_release_proxies.clear();
        s.last_preflight = None;
        let report = diagnose(&findings(s));
        assert!(report.healthy, "{report:?}");
        assert_eq!(verdict_of(&report, names::CREDENTIALS), Verdict::Warn);
    }
}
