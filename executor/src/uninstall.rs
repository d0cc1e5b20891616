//! RemoveAgent: the uninstall of a Cluster that is being deleted.
//!
//! It acts only while the live Cluster has a deletionTimestamp; a request for any other Cluster is refused and
//! deletes nothing. What it answers is decided by [`decide`], a pure function of what remains, so that every
//! phase and timeout rule is tested by a table.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api,
    api::{DeleteParams, DynamicObject, ListParams},
    runtime::events::EventType,
};
use tracing::Instrument;

use crate::{
    config::UninstallTimeoutPolicy,
    domain::{ClusterKey, ClusterRef, LiveCluster},
    error::{Error, Side, absent_ok},
    executor::Executor,
    limits::humanize,
    names::{
        CLUSTER_NAME_LABEL, HCP_NAME_LABEL, candidate_helm_chart_proxy_names, hcp_resource, hrp_resource,
        is_label_value,
    },
};

/// Where the uninstall stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UninstallPhase {
    /// Nothing was ever installed, or the Cluster is gone.
    NotNeeded,
    /// The HelmChartProxy exists and is not being deleted.
    NotStarted,
    /// CAAPH is uninstalling.
    InProgress,
    /// The HelmChartProxy and its HelmReleaseProxies are gone after an uninstall this process saw.
    Completed,
    /// The uninstall ran past its timeout.
    TimedOut,
}

/// What RemoveAgent answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoveOutcome {
    /// Whether the Cluster's deletion may proceed.
    pub done: bool,
    /// When not done: ask again after this many seconds.
    pub retry_after_seconds: u32,
    /// One deterministic, secret-free sentence.
    pub message: String,
    /// The phase.
    pub phase: UninstallPhase,
}

/// What is left of an install on the management cluster: the HelmChartProxies konnector may have written for the
/// Cluster, and their HelmReleaseProxies.
#[derive(Clone, Debug, Default)]
pub(crate) struct Remains {
    pub(crate) hcps: Vec<DynamicObject>,
    pub(crate) hrps: Vec<DynamicObject>,
}

/// The facts [`decide`] needs, taken from [`Remains`] and the live Cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// `namespace/name` of the HelmChartProxy, for messages.
    pub hcp_ref: String,
    /// `None` when no HelmChartProxy remains; otherwise its deletionTimestamp, if any.
    pub hcp: Option<Option<Timestamp>>,
    /// The deletionTimestamp (if any) of each remaining HelmReleaseProxy.
    pub hrps: Vec<Option<Timestamp>>,
    /// The Cluster's deletionTimestamp: the clock for HelmReleaseProxies that linger without one of their own.
    pub cluster_deleting_since: Option<Timestamp>,
    /// Whether this process saw the uninstall under way before.
    pub seen_before: bool,
}

/// The uninstall's timeout rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// How long an uninstall may run.
    pub timeout: Duration,
    /// What to answer after it.
    pub on_timeout: UninstallTimeoutPolicy,
    /// `retry_after_seconds` while waiting.
    pub retry_after_seconds: u32,
}

/// Decides the phase and the answer from what remains. The uninstall's clock starts at the HelmChartProxy's
/// deletionTimestamp; when the HelmChartProxy is gone, at the earliest HelmReleaseProxy deletionTimestamp; and when
/// HelmReleaseProxies linger without one (CAAPH never started deleting them), at the Cluster's deletionTimestamp,
/// so that the timeout fires in that case too.
pub fn decide(observed: &Observed, now: Timestamp, policy: &Policy) -> RemoveOutcome {
    let hcp_ref = &observed.hcp_ref;
    let n = observed.hrps.len();
    let phase = match &observed.hcp {
        None if n == 0 => {
            if observed.seen_before {
                UninstallPhase::Completed
            } else {
                UninstallPhase::NotNeeded
            }
        }
        Some(None) => UninstallPhase::NotStarted,
        hcp => {
            let since = match hcp {
                Some(Some(t)) => Some(*t),
                _ => observed
                    .hrps
                    .iter()
                    .flatten()
                    .min()
                    .copied()
                    .or(observed.cluster_deleting_since),
            };
            let elapsed = since.map(|t| now.as_second().saturating_sub(t.as_second()));
            match elapsed {
                Some(e) if u64::try_from(e).unwrap_or(0) > policy.timeout.as_secs() => {
                    UninstallPhase::TimedOut
                }
                _ => UninstallPhase::InProgress,
            }
        }
    };
    let what = match (&observed.hcp, n) {
        (Some(_), 0) => format!("HelmChartProxy {hcp_ref} is being deleted"),
        (Some(_), n) => {
            format!("HelmChartProxy {hcp_ref} is being deleted and {n} HelmReleaseProxy object(s) remain")
        }
        (None, n) => format!("HelmChartProxy {hcp_ref} is gone but {n} HelmReleaseProxy object(s) remain"),
    };
    let timeout = humanize(policy.timeout);
    let (done, message) = match phase {
        UninstallPhase::NotNeeded => (
            true,
            format!(
                "no HelmChartProxy {hcp_ref} and no HelmReleaseProxy for this cluster; nothing to uninstall"
            ),
        ),
        UninstallPhase::Completed => (
            true,
            format!(
                "Konnector Agent uninstalled: HelmChartProxy {hcp_ref} and its HelmReleaseProxies are gone"
            ),
        ),
        UninstallPhase::TimedOut => match policy.on_timeout {
            UninstallTimeoutPolicy::Proceed => (
                true,
                format!(
                    "the Konnector Agent uninstall did not finish within {timeout} ({what}); cluster deletion proceeds, and the agent may remain registered in Prism Central"
                ),
            ),
            UninstallTimeoutPolicy::Block => (
                false,
                format!(
                    "the Konnector Agent uninstall did not finish within {timeout} ({what}); manual intervention required: check the HelmReleaseProxy status, fix the uninstall or remove the finalizers; cluster deletion stays blocked until then"
                ),
            ),
        },
        // NOT_STARTED is only seen when a delete has just been sent and not yet observed; it is waiting too.
        UninstallPhase::InProgress | UninstallPhase::NotStarted => (
            false,
            format!("waiting for CAAPH to uninstall the Konnector Agent: {what}"),
        ),
    };
    RemoveOutcome {
        done,
        retry_after_seconds: if done { 0 } else { policy.retry_after_seconds },
        message,
        phase,
    }
}

/// Every HelmChartProxy name konnector (or CAREN) may have used for a Cluster: RemoveAgent removes whichever exist.
pub(crate) fn candidate_names(live: &LiveCluster) -> Vec<String> {
    candidate_helm_chart_proxy_names(&live.key.name, &live.annotations())
}

impl Executor {
    pub(crate) fn policy(&self) -> Policy {
        let c = &self.inner.config;
        Policy {
            timeout: c.uninstall_timeout,
            on_timeout: c.uninstall_timeout_policy,
            retry_after_seconds: c.retry_after_seconds,
        }
    }

    /// What remains of the Cluster's install: the HelmChartProxies among `names`, and the HelmReleaseProxies of
    /// the Cluster that belong to one of them. HelmReleaseProxies are listed by a selector that is valid for every
    /// Cluster name (see [`hrp_selector`]) and filtered here.
    ///
    /// Only objects this Cluster owns count (`ownership.rs`): a proxy under a candidate name that another Cluster
    /// owns (a copied uuid annotation) is that Cluster's install, never removed or waited for here.
    pub(crate) async fn remains(&self, live: &LiveCluster, names: &[String]) -> Result<Remains, Error> {
        let key = &live.key;
        let hcps = self.owned_hcps(live, names).await?;
        let Some(selector) = hrp_selector(&key.name, names) else {
            // No name CAAPH could have put in a label: no HelmReleaseProxy can belong to these HelmChartProxies.
            return Ok(Remains {
                hcps,
                hrps: Vec::new(),
            });
        };
        let hrps = Api::<DynamicObject>::namespaced_with(self.mgmt(), &key.namespace, &hrp_resource())
            .list(&ListParams::default().labels(&selector))
            .instrument(tracing::debug_span!("list_helm_release_proxies"))
            .await
            .map_err(|e| {
                Error::kube(
                    format!("list HelmReleaseProxies in {}", key.namespace),
                    Side::Management,
                    &e,
                )
            })?
            .items
            .into_iter()
            .filter(|h| {
                h.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(HCP_NAME_LABEL))
                    .is_some_and(|n| names.contains(n))
                    // Selected by the proxy's name alone (a Cluster name too long for a label), a HelmReleaseProxy
                    // of another Cluster under a shared name must not count: its clusterRef says whose it is.
                    && h.data["spec"]["clusterRef"]["name"].as_str() == Some(key.name.as_str())
            })
            .collect();
        Ok(Remains { hcps, hrps })
    }

    /// The HelmChartProxies among `names` that this Cluster owns (`ownership::owned_by_cluster`), in `names`'
    /// order: the hooks' rule, shared by RemoveAgent and the reconciler's uninstall-on-removal.
    pub(crate) async fn owned_hcps(
        &self,
        live: &LiveCluster,
        names: &[String],
    ) -> Result<Vec<DynamicObject>, Error> {
        let key = &live.key;
        let hcp_api = Api::<DynamicObject>::namespaced_with(self.mgmt(), &key.namespace, &hcp_resource());
        let mut hcps = Vec::new();
        for name in names {
            let found = hcp_api
                .get_opt(name)
                .instrument(tracing::debug_span!("read_helm_chart_proxy"))
                .await
                .map_err(|e| {
                    Error::kube(
                        format!("read HelmChartProxy {}/{name}", key.namespace),
                        Side::Management,
                        &e,
                    )
                })?;
            hcps.extend(found.filter(|h| crate::ownership::owned_by_cluster(h, &live.uid, &key.name)));
        }
        Ok(hcps)
    }

    pub(crate) fn observed(
        &self,
        key: &ClusterKey,
        names: &[String],
        remains: &Remains,
        cluster_since: Option<Timestamp>,
    ) -> Observed {
        let hcp_name = remains
            .hcps
            .first()
            .and_then(|h| h.metadata.name.clone())
            .unwrap_or_else(|| names.first().cloned().unwrap_or_default());
        let hcp = if remains.hcps.is_empty() {
            None
        } else {
            // Several candidates at once (an old name beside a new one) are one uninstall: it is started when every
            // one is being deleted, from the earliest.
            Some(
                remains
                    .hcps
                    .iter()
                    .map(|h| h.metadata.deletion_timestamp.as_ref().map(|t| t.0))
                    .collect::<Option<Vec<_>>>()
                    .and_then(|ts| ts.into_iter().min()),
            )
        };
        let mid_uninstall = hcp.is_some() || !remains.hrps.is_empty();
        Observed {
            hcp_ref: format!("{}/{hcp_name}", key.namespace),
            hcp,
            hrps: remains
                .hrps
                .iter()
                .map(|h| h.metadata.deletion_timestamp.as_ref().map(|t| t.0))
                .collect(),
            cluster_deleting_since: cluster_since,
            seen_before: self.memory().uninstall_seen(key, mid_uninstall),
        }
    }

    /// Starts or continues the uninstall for a Cluster that is being deleted.
    #[tracing::instrument(skip_all, fields(konnector.cluster.namespace = %cluster.key.namespace, konnector.cluster.name = %cluster.key.name))]
    pub async fn remove(&self, cluster: &ClusterRef) -> Result<RemoveOutcome, Error> {
        // Outside konnector's namespaces it installed nothing and may read nothing: the deletion goes on.
        if !self.config().serves(&cluster.key.namespace) {
            return Ok(RemoveOutcome {
                done: true,
                retry_after_seconds: 0,
                message: self
                    .config()
                    .not_served(&cluster.key.namespace, "nothing to uninstall"),
                phase: UninstallPhase::NotNeeded,
            });
        }
        let _guard = self.memory().locks.lock(&cluster.key).await;
        let Some(live) = self.clusters().live(cluster).await? else {
            // The Cluster is gone: nothing more to remember about it.
            self.forget_cluster(&cluster.key);
            return Ok(RemoveOutcome {
                done: true,
                retry_after_seconds: 0,
                message: "the Cluster no longer exists; nothing to uninstall".to_owned(),
                phase: UninstallPhase::NotNeeded,
            });
        };
        if !live.deleting() {
            return Err(Error::ClusterNotDeleting {
                cluster: live.key.to_string(),
            });
        }
        let key = &live.key;
        self.memory().forget_applied(key);
        let names = candidate_names(&live);
        let mut remains = self.remains(&live, &names).await?;
        let hcp_api = Api::<DynamicObject>::namespaced_with(self.mgmt(), &key.namespace, &hcp_resource());
        let mut deleted = false;
        for hcp in remains
            .hcps
            .iter()
            .filter(|h| h.metadata.deletion_timestamp.is_none())
        {
            let name = hcp.metadata.name.clone().unwrap_or_default();
            let result = hcp_api
                .delete(&name, &DeleteParams::default())
                .instrument(tracing::debug_span!("delete_helm_chart_proxy"))
                .await;
            absent_ok(result).map_err(|e| {
                Error::kube(
                    format!("delete HelmChartProxy {}/{name}", key.namespace),
                    Side::Management,
                    &e,
                )
            })?;
            tracing::info!(hcp.name = %name, "HelmChartProxy deleted; CAAPH uninstalls the release");
            deleted = true;
        }
        if deleted {
            self.memory().uninstall_seen(key, true);
            remains = self.remains(&live, &names).await?;
        }
        let observed = self.observed(key, &names, &remains, live.deletion_timestamp);
        let outcome = decide(&observed, Timestamp::now(), &self.policy());
        if outcome.phase == UninstallPhase::TimedOut {
            let reason = if outcome.done {
                "UninstallTimedOutDeletionProceeds"
            } else {
                "UninstallTimedOutDeletionBlocked"
            };
            self.events()
                .record(
                    &live,
                    EventType::Warning,
                    reason,
                    "RemoveAgent",
                    outcome.message.clone(),
                )
                .await;
        }
        if outcome.done {
            self.workloads().forget(key);
            self.memory().forget_prism(key);
        }
        Ok(outcome)
    }
}

/// The label selector that finds a Cluster's HelmReleaseProxies: CAPI's cluster-name label when the Cluster's name
/// fits in a label value, else CAAPH's HelmChartProxy-name label over the candidate names that fit. A Cluster name
/// over 63 characters is a valid object name but never a label value: selecting on it made the API server refuse
/// the list, so RemoveAgent failed, and the Cluster's deletion waited, forever. `None` when no candidate fits.
pub fn hrp_selector(cluster_name: &str, hcp_names: &[String]) -> Option<String> {
    if is_label_value(cluster_name) {
        return Some(format!("{CLUSTER_NAME_LABEL}={cluster_name}"));
    }
    let fitting: Vec<&str> = hcp_names
        .iter()
        .map(String::as_str)
        .filter(|n| !n.is_empty() && is_label_value(n))
        .collect();
    (!fitting.is_empty()).then(|| format!("{HCP_NAME_LABEL} in ({})", fitting.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_selector_is_valid_for_every_cluster_name() {
        let none = std::collections::BTreeMap::new();
        let short = candidate_helm_chart_proxy_names("c1", &none);
        assert_eq!(
            hrp_selector("c1", &short).unwrap(),
            "cluster.x-k8s.io/cluster-name=c1"
        );
        for len in [64, 100, 253] {
            let name = "a".repeat(len);
            let names = candidate_helm_chart_proxy_names(&name, &none);
            let selector = hrp_selector(&name, &names).unwrap();
            // Every value in the selector is a label value; the >63 cluster name and the legacy name are not in it.
            let values = selector
                .strip_prefix(&format!("{HCP_NAME_LABEL} in ("))
                .and_then(|s| s.strip_suffix(')'))
                .unwrap();
            assert!(!values.is_empty());
            for v in values.split(',') {
                assert!(is_label_value(v) && names.contains(&v.to_owned()), "{v}");
            }
            assert!(!selector.contains(&name), "{selector}");
        }
        assert_eq!(hrp_selector(&"a".repeat(64), &[]), None);
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn policy(on_timeout: UninstallTimeoutPolicy) -> Policy {
        Policy {
            timeout: Duration::from_secs(300),
            on_timeout,
            retry_after_seconds: 7,
        }
    }

    fn observed(
        hcp: Option<Option<i64>>,
        hrps: &[Option<i64>],
        cluster: Option<i64>,
        seen: bool,
    ) -> Observed {
        Observed {
            hcp_ref: "ns/konnector-agent-c".into(),
            hcp: hcp.map(|h| h.map(t)),
            hrps: hrps.iter().map(|h| h.map(t)).collect(),
            cluster_deleting_since: cluster.map(t),
            seen_before: seen,
        }
    }

    #[test]
    fn decision_table() {
        use UninstallPhase::*;
        use UninstallTimeoutPolicy::{Block, Proceed};
        let now = 10_000;
        // (hcp, hrps, cluster deleting since, seen before, policy) → (phase, done, retry)
        #[allow(clippy::type_complexity)]
        let table: &[(
            Option<Option<i64>>,
            &[Option<i64>],
            Option<i64>,
            bool,
            UninstallTimeoutPolicy,
            UninstallPhase,
            bool,
        )] = &[
            // Nothing left.
            (None, &[], Some(now), false, Proceed, NotNeeded, true),
            (None, &[], Some(now), true, Proceed, Completed, true),
            // A HelmChartProxy not yet being deleted: waiting.
            (Some(None), &[], Some(now), false, Proceed, NotStarted, false),
            // Deleting, within the timeout.
            (
                Some(Some(now - 10)),
                &[None],
                Some(now - 10),
                true,
                Proceed,
                InProgress,
                false,
            ),
            (
                Some(Some(now - 300)),
                &[],
                Some(now - 300),
                true,
                Block,
                InProgress,
                false,
            ),
            // Deleting, past the timeout: the policy decides.
            (
                Some(Some(now - 301)),
                &[None],
                Some(now - 301),
                true,
                Proceed,
                TimedOut,
                true,
            ),
            (
                Some(Some(now - 301)),
                &[None],
                Some(now - 301),
                true,
                Block,
                TimedOut,
                false,
            ),
            // HelmChartProxy gone, HelmReleaseProxies being deleted: their clock.
            (
                None,
                &[Some(now - 10), Some(now - 400)],
                Some(now - 400),
                true,
                Proceed,
                TimedOut,
                true,
            ),
            (
                None,
                &[Some(now - 10)],
                Some(now - 400),
                true,
                Proceed,
                InProgress,
                false,
            ),
            // HelmChartProxy gone, HelmReleaseProxies lingering without a deletionTimestamp: the Cluster's clock,
            // so the timeout still fires.
            (None, &[None], Some(now - 10), true, Proceed, InProgress, false),
            (None, &[None], Some(now - 400), true, Proceed, TimedOut, true),
            (None, &[None], Some(now - 400), true, Block, TimedOut, false),
            // No clock at all: keep waiting rather than guess.
            (None, &[None], None, true, Proceed, InProgress, false),
        ];
        for (i, (hcp, hrps, cluster, seen, on_timeout, phase, done)) in table.iter().enumerate() {
            let o = observed(*hcp, hrps, *cluster, *seen);
            let out = decide(&o, t(now), &policy(*on_timeout));
            assert_eq!((out.phase, out.done), (*phase, *done), "row {i}: {}", out.message);
            assert_eq!(out.retry_after_seconds, if *done { 0 } else { 7 }, "row {i}");
            assert!(
                out.message.contains("ns/konnector-agent-c"),
                "row {i}: {}",
                out.message
            );
            // Deterministic: no timestamps or elapsed times in the message.
            assert!(
                !out.message.contains("10000") && !out.message.contains("400"),
                "row {i}"
            );
        }
    }
}
