//! GetAgentStatus: what konnector sees for a Cluster, read-only.

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::Api;
use serde_json::Value;

use crate::{
    domain::{ClusterKey, ClusterRef, agent_request},
    error::{Error, absent_ok},
    executor::Executor,
    limits::{MAX_MESSAGE_CHARS, MAX_REASON_CHARS, sanitize},
    names::{RELEASE_NAMESPACE, REMOTE_SECRET_NAME},
    prism::{PreflightRecord, Registration},
    remote::on_workload,
    uninstall::{UninstallPhase, candidate_names, decide},
};

/// A status condition, as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConditionView {
    /// Type.
    pub type_: String,
    /// Status.
    pub status: String,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
}

/// The HelmChartProxy, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HcpView {
    /// Name.
    pub name: String,
    /// Has a deletionTimestamp.
    pub deleting: bool,
    /// The Ready condition, when CAAPH wrote one.
    pub ready: Option<ConditionView>,
    /// Finalizers.
    pub finalizers: Vec<String>,
}

/// A HelmReleaseProxy, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HrpView {
    /// Name.
    pub name: String,
    /// Has a deletionTimestamp.
    pub deleting: bool,
    /// The Ready condition.
    pub ready: Option<ConditionView>,
    /// Helm release status, e.g. `deployed`.
    pub release_status: String,
    /// Helm revision.
    pub revision: i64,
}

/// Everything GetAgentStatus reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusReport {
    /// The live Cluster's uid.
    pub cluster_uid: String,
    /// The live Cluster has a deletionTimestamp.
    pub cluster_deleting: bool,
    /// The live Cluster configures the addon.
    pub addon_configured: bool,
    /// The workload Secret exists.
    pub credentials_copied: bool,
    /// Why `credentials_copied` could not be determined; empty otherwise.
    pub credentials_error: String,
    /// The HelmChartProxy, when present.
    pub hcp: Option<HcpView>,
    /// The HelmReleaseProxies.
    pub hrps: Vec<HrpView>,
    /// The uninstall phase.
    pub phase: UninstallPhase,
    /// Whether Prism Central lists the cluster as registered.
    pub registration: Registration,
    /// The last Prism Central preflight this executor ran for the Cluster (since it started).
    pub last_preflight: Option<PreflightRecord>,
    /// The reconciler's last pass over this Cluster in this process, if any.
    pub last_reconcile: Option<crate::reconcile::LastReconcile>,
}

impl Executor {
    /// Reports, read-only, what konnector sees for a Cluster.
    #[tracing::instrument(skip_all, fields(konnector.cluster.namespace = %cluster.key.namespace, konnector.cluster.name = %cluster.key.name))]
    pub async fn status(&self, cluster: &ClusterRef) -> Result<StatusReport, Error> {
        let live = self.clusters().existing(cluster).await?;
        let key = &live.key;
        let names = candidate_names(&live);
        let remains = self.remains(&live, &names).await?;
        let (credentials_copied, credentials_error) = match self.remote_secret_exists(key).await {
            Ok(b) => (b, String::new()),
            Err(e) => (false, crate::limits::brief(&e)),
        };
        let observed = self.observed(key, &names, &remains, live.deletion_timestamp);
        let phase = decide(&observed, Timestamp::now(), &self.policy()).phase;
        let (registration, last_preflight) = self.prism_status(&live).await;
        Ok(StatusReport {
            cluster_uid: live.uid.clone(),
            cluster_deleting: live.deleting(),
            addon_configured: matches!(agent_request(&live), Ok(Some(_)) | Err(_)),
            credentials_copied,
            credentials_error,
            hcp: remains.hcps.first().map(|h| HcpView {
                name: h.metadata.name.clone().unwrap_or_default(),
                deleting: h.metadata.deletion_timestamp.is_some(),
                ready: ready_condition(&h.data),
                finalizers: h.metadata.finalizers.clone().unwrap_or_default(),
            }),
            hrps: remains
                .hrps
                .iter()
                .map(|h| HrpView {
                    name: h.metadata.name.clone().unwrap_or_default(),
                    deleting: h.metadata.deletion_timestamp.is_some(),
                    ready: ready_condition(&h.data),
                    release_status: h.data["status"]["status"].as_str().unwrap_or_default().to_owned(),
                    revision: h.data["status"]["revision"].as_i64().unwrap_or_default(),
                })
                .collect(),
            phase,
            registration,
            last_preflight,
            last_reconcile: self.memory().reconciler.last(key),
        })
    }

    async fn remote_secret_exists(&self, key: &ClusterKey) -> Result<bool, Error> {
        let remote = self.workloads().client(key).await?;
        let secrets: Api<Secret> = Api::namespaced(remote, RELEASE_NAMESPACE);
        // Only metadata is needed; a metadata GET keeps the credentials out of this process.
        on_workload(
            self.inner.config.remote_timeout,
            format!("read Secret {RELEASE_NAMESPACE}/{REMOTE_SECRET_NAME}"),
            async { absent_ok(secrets.get_metadata(REMOTE_SECRET_NAME).await).map(|found| found.is_some()) },
        )
        .await
    }
}

fn ready_condition(obj: &Value) -> Option<ConditionView> {
    obj["status"]["conditions"].as_array()?.iter().find_map(|c| {
        (c["type"] == "Ready").then(|| ConditionView {
            type_: "Ready".to_owned(),
            status: c["status"].as_str().unwrap_or_default().to_owned(),
            // Written by CAAPH from what helm said: bounded before it is answered.
            reason: sanitize(c["reason"].as_str().unwrap_or_default(), MAX_REASON_CHARS),
            message: sanitize(c["message"].as_str().unwrap_or_default(), MAX_MESSAGE_CHARS),
        })
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ready() {
        let c = ready_condition(&json!({"status": {"conditions": [
            {"type": "Other", "status": "False"},
            {"type": "Ready", "status": "True", "reason": "Ready", "message": ""}]}}))
        .unwrap();
        assert_eq!(c.status, "True");
        assert!(ready_condition(&json!({})).is_none());
    }
}
