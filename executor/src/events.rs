//! Events on the Cluster: what a person must see or act on. Recording is best effort and bounded; an Event
//! explains an answer, it is never part of it.

use std::time::Duration;

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event as KubeEvent},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::PostParams,
    runtime::events::{Event, EventType, Recorder, Reporter},
};

use crate::{
    domain::LiveCluster,
    error::{Error, KubeFailure},
    names::{CLUSTER_KIND, EVENT_REPORTER},
};

/// Bound on recording one Event; recording never holds up an answer for longer.
const EVENT_TIMEOUT: Duration = Duration::from_secs(3);

/// The reason of the Warning Event a failed preflight records on the Cluster (a refusal in blocking mode, once per
/// failure in warning mode).
pub(crate) const PREFLIGHT_FAILED_REASON: &str = "PrismCentralPreflightFailed";

/// The Event reason for an ApplyAgent failure a person has to fix, if it is one.
pub(crate) fn apply_failure_reason(error: &Error) -> Option<&'static str> {
    Some(match error {
        Error::ReadCredentialsSecret {
            failure: KubeFailure::NotFound,
            ..
        } => "CredentialsSecretMissing",
        Error::ValidateCredentialsSecret { .. } => "CredentialsSecretInvalid",
        Error::ClusterNotSelectable { .. } => "ClusterNotSelectable",
        Error::InvalidConfig(_) => "ConfigurationInvalid",
        Error::ParseKubeconfig { .. } => "KubeconfigRefused",
        Error::RenderValues { .. } => "ValuesRefused",
        Error::HelmChartProxyNameTaken { .. } => "HelmChartProxyNameTaken",
        Error::PrismCentralPreflight { .. } => PREFLIGHT_FAILED_REASON,
        _ => return None,
    })
}

/// Writes Events on Clusters, as [`EVENT_REPORTER`].
pub(crate) struct Events {
    mgmt: Client,
    recorder: Recorder,
}

impl Events {
    pub(crate) fn new(mgmt: Client) -> Self {
        let recorder = Recorder::new(
            mgmt.clone(),
            Reporter {
                controller: EVENT_REPORTER.to_owned(),
                instance: None,
            },
        );
        Self { mgmt, recorder }
    }

    /// Records an Event on the live Cluster, naming it in the API version it was read in. A failure to record is
    /// logged, never returned.
    pub(crate) async fn record(
        &self,
        cluster: &LiveCluster,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let reference = reference(cluster);
        let event = Event {
            type_,
            reason: reason.to_owned(),
            // The API server refuses a note over 1 kB; a sanitised, bounded note is always recorded.
            note: Some(crate::limits::sanitize(&note, 1000)),
            action: action.to_owned(),
            secondary: None,
        };
        bounded_write(reason, self.recorder.publish(&event, &reference)).await;
    }

    /// Creates a new Event on the live Cluster, without the Recorder's folding of repeats (which PATCHes on every
    /// repeat, and keeps the first note for a reason): for a caller that decides itself when an Event is due (see
    /// `prism_warnings`). Returns whether it was written; a failure is logged, never returned.
    pub(crate) async fn create(
        &self,
        cluster: &LiveCluster,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) -> bool {
        let now = Timestamp::now();
        // As the Recorder names Events (`<object>.<nanoseconds in hex>`), with the Cluster's name cut so that the
        // whole name stays within the 253 characters an object name may have.
        let prefix = cluster.key.name.chars().take(200).collect::<String>();
        let prefix = prefix.trim_end_matches(['-', '.']);
        let event = KubeEvent {
            metadata: ObjectMeta {
                name: Some(format!("{prefix}.{:x}", now.as_nanosecond())),
                namespace: Some(cluster.key.namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(action.to_owned()),
            reason: Some(reason.to_owned()),
            note: Some(crate::limits::sanitize(&note, 1000)),
            regarding: Some(reference(cluster)),
            reporting_controller: Some(EVENT_REPORTER.to_owned()),
            reporting_instance: Some(EVENT_REPORTER.to_owned()),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            ..Default::default()
        };
        let events: Api<KubeEvent> = Api::namespaced(self.mgmt.clone(), &cluster.key.namespace);
        bounded_write(reason, events.create(&PostParams::default(), &event)).await
    }
}

/// Runs one Event write under [`EVENT_TIMEOUT`] and logs its outcome; whether it was written. Both ways of writing
/// an Event (the Recorder and a direct create) report the same lines, so a failure reads the same whichever wrote it.
async fn bounded_write<T>(reason: &str, write: impl Future<Output = Result<T, kube::Error>>) -> bool {
    match tokio::time::timeout(EVENT_TIMEOUT, write).await {
        Ok(Ok(_)) => {
            tracing::debug!(reason, "Event recorded on the Cluster");
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(reason, failure = %KubeFailure::from_kube(&e), "cannot record an Event on the Cluster");
            false
        }
        Err(_) => {
            tracing::warn!(reason, "recording an Event on the Cluster timed out");
            false
        }
    }
}

/// The live Cluster, named in the API version it was read in.
fn reference(cluster: &LiveCluster) -> ObjectReference {
    ObjectReference {
        api_version: Some(cluster.version.api_version()),
        kind: Some(CLUSTER_KIND.to_owned()),
        namespace: Some(cluster.key.namespace.clone()),
        name: Some(cluster.key.name.clone()),
        uid: (!cluster.uid.is_empty()).then(|| cluster.uid.clone()),
        ..Default::default()
    }
}
