//! The gRPC face of the executor: proto request → domain → [`Executor`] → domain outcome → proto response. This is
//! the only module that knows both vocabularies; each crossing is one named conversion below, and errors reach the
//! wire through `From<Error> for Status` only.

use konnector_proto::v1 as pb;
use konnector_proto::v1::{
    ApplyAgentRequest, ApplyAgentResponse, GetAgentStatusRequest, GetAgentStatusResponse, PlanAgentRequest,
    PlanAgentResponse, RemoveAgentRequest, RemoveAgentResponse,
    agent_service_server::{AgentService, AgentServiceServer, SERVICE_NAME},
};
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tracing::{Instrument, Span, field::Empty};

use konnector_runtime::{grpc::code_name, telemetry::attr};

use crate::{
    apply::{ApplyOutcome, PlanOutcome},
    domain::{ClusterKey, ClusterRef, RequestError, Trigger},
    error::Error,
    executor::Executor,
    prism::{PreflightFailure, PreflightRecord, PreflightVerdict, Registration},
    status::{ConditionView, HcpView, HrpView, StatusReport},
    uninstall::{RemoveOutcome, UninstallPhase},
};

impl Executor {
    /// Wraps the executor as a tonic service.
    pub fn into_service(self) -> AgentServiceServer<Executor> {
        AgentServiceServer::new(self)
    }
}

/// The longest resourceVersion a request may carry; the API server's are decimal numbers of at most 20 digits.
const MAX_RESOURCE_VERSION_LEN: usize = 64;

/// proto `ClusterRef` → domain [`ClusterRef`]: both names must be valid Kubernetes names; an empty uid means
/// "any". A resourceVersion only chooses between a copy and a live read, so one that cannot be the API server's
/// (too long, not plain ASCII letters and digits) is dropped rather than refused: the Cluster is then read live.
pub fn cluster_ref(cluster: Option<&pb::ClusterRef>) -> Result<ClusterRef, RequestError> {
    let c = cluster.ok_or(RequestError::MissingCluster)?;
    let rv = &c.resource_version;
    let plausible = !rv.is_empty()
        && rv.len() <= MAX_RESOURCE_VERSION_LEN
        && rv.bytes().all(|b| b.is_ascii_alphanumeric());
    Ok(ClusterRef {
        key: ClusterKey::new(&c.namespace, &c.name)?,
        uid: (!c.uid.is_empty()).then(|| c.uid.clone()),
        resource_version: plausible.then(|| rv.clone()),
    })
}

/// proto `Trigger` (an open enum on the wire) → domain [`Trigger`]; unknown numbers are "unspecified".
pub fn trigger(value: i32) -> Trigger {
    match pb::Trigger::try_from(value) {
        Ok(pb::Trigger::AfterControlPlaneInitialized) => Trigger::AfterControlPlaneInitialized,
        Ok(pb::Trigger::BeforeClusterUpgrade) => Trigger::BeforeClusterUpgrade,
        _ => Trigger::Unspecified,
    }
}

fn trigger_name(t: Trigger) -> &'static str {
    trigger_proto(t).as_str_name()
}

/// Domain [`Trigger`] → proto `Trigger`.
fn trigger_proto(t: Trigger) -> pb::Trigger {
    match t {
        Trigger::Unspecified => pb::Trigger::Unspecified,
        Trigger::AfterControlPlaneInitialized => pb::Trigger::AfterControlPlaneInitialized,
        Trigger::BeforeClusterUpgrade => pb::Trigger::BeforeClusterUpgrade,
    }
}

/// Domain [`UninstallPhase`] → proto `UninstallPhase`.
pub fn uninstall_phase(p: UninstallPhase) -> pb::UninstallPhase {
    match p {
        UninstallPhase::NotNeeded => pb::UninstallPhase::NotNeeded,
        UninstallPhase::NotStarted => pb::UninstallPhase::NotStarted,
        UninstallPhase::InProgress => pb::UninstallPhase::InProgress,
        UninstallPhase::Completed => pb::UninstallPhase::Completed,
        UninstallPhase::TimedOut => pb::UninstallPhase::TimedOut,
    }
}

/// Domain [`ApplyOutcome`] → proto `ApplyAgentResponse`.
pub fn apply_response(o: ApplyOutcome) -> ApplyAgentResponse {
    ApplyAgentResponse {
        message: o.message,
        applied: o.applied,
        helm_chart_proxy_name: o.hcp_name,
        notes: o.notes,
    }
}

/// Domain [`PlanOutcome`] → proto `PlanAgentResponse`.
pub fn plan_response(o: PlanOutcome) -> PlanAgentResponse {
    PlanAgentResponse {
        namespace: o.namespace.map(konnector_proto::json_to_struct),
        secret: o.secret.map(konnector_proto::json_to_struct),
        helm_chart_proxy: o.hcp.map(konnector_proto::json_to_struct),
        notes: o.notes,
    }
}

/// Domain [`RemoveOutcome`] → proto `RemoveAgentResponse`.
pub fn remove_response(o: RemoveOutcome) -> RemoveAgentResponse {
    RemoveAgentResponse {
        done: o.done,
        retry_after_seconds: o.retry_after_seconds,
        message: o.message,
        phase: uninstall_phase(o.phase) as i32,
    }
}

fn condition(c: ConditionView) -> pb::Condition {
    pb::Condition {
        r#type: c.type_,
        status: c.status,
        reason: c.reason,
        message: c.message,
    }
}

/// Domain [`StatusReport`] → proto `GetAgentStatusResponse`.
pub fn status_response(r: StatusReport) -> GetAgentStatusResponse {
    GetAgentStatusResponse {
        credentials_copied: r.credentials_copied,
        credentials_error: r.credentials_error,
        helm_chart_proxy: r.hcp.map(|h: HcpView| pb::HelmChartProxyStatus {
            name: h.name,
            deleting: h.deleting,
            ready: h.ready.map(condition),
            finalizers: h.finalizers,
        }),
        helm_release_proxies: r
            .hrps
            .into_iter()
            .map(|h: HrpView| pb::HelmReleaseProxyStatus {
                name: h.name,
                deleting: h.deleting,
                ready: h.ready.map(condition),
                release_status: h.release_status,
                revision: h.revision,
            })
            .collect(),
        uninstall_phase: uninstall_phase(r.phase) as i32,
        addon_configured: r.addon_configured,
        cluster_deleting: r.cluster_deleting,
        cluster_uid: r.cluster_uid,
        prism_central_registration: prism_registration(&r.registration) as i32,
        // Both may carry what a Prism Central or an API server answered: bounded before they are answered.
        prism_central_registration_message: match r.registration {
            Registration::Unknown(why) => crate::limits::sanitize(&why, crate::limits::MAX_MESSAGE_CHARS),
            _ => String::new(),
        },
        last_preflight: r.last_preflight.map(preflight),
        last_reconcile_time: r
            .last_reconcile
            .as_ref()
            .map(|l| l.at.to_string())
            .unwrap_or_default(),
        last_reconcile_result: r.last_reconcile.map(|l| l.result).unwrap_or_default(),
    }
}

/// Domain [`Registration`] → proto `PrismCentralRegistration`.
pub fn prism_registration(r: &Registration) -> pb::PrismCentralRegistration {
    match r {
        Registration::Registered => pb::PrismCentralRegistration::Registered,
        Registration::NotRegistered => pb::PrismCentralRegistration::NotRegistered,
        Registration::Unknown(_) => pb::PrismCentralRegistration::Unknown,
    }
}

/// Domain [`PreflightVerdict`] → proto `PreflightOutcome`.
pub fn preflight_outcome(v: &PreflightVerdict) -> pb::PreflightOutcome {
    match v {
        PreflightVerdict::Passed => pb::PreflightOutcome::Passed,
        PreflightVerdict::PassedWithoutAuthentication => pb::PreflightOutcome::PassedWithoutAuthentication,
        PreflightVerdict::Failed(f) => match f {
            PreflightFailure::TrustBundle => pb::PreflightOutcome::TrustBundle,
            PreflightFailure::Dns => pb::PreflightOutcome::Dns,
            PreflightFailure::Connect => pb::PreflightOutcome::Connect,
            PreflightFailure::Tls { .. } => pb::PreflightOutcome::Tls,
            PreflightFailure::Unauthorized { .. } => pb::PreflightOutcome::Unauthorized,
            PreflightFailure::UnexpectedAnswer(_) => pb::PreflightOutcome::UnexpectedAnswer,
            PreflightFailure::Timeout { .. } => pb::PreflightOutcome::Timeout,
            PreflightFailure::NotAllowed => pb::PreflightOutcome::NotAllowed,
        },
    }
}

fn preflight(r: PreflightRecord) -> pb::PrismCentralPreflight {
    pb::PrismCentralPreflight {
        checked_at: Some(prost_types::Timestamp {
            seconds: r.checked_at.as_second(),
            nanos: r.checked_at.subsec_nanosecond(),
        }),
        trigger: trigger_proto(r.trigger) as i32,
        outcome: preflight_outcome(&r.verdict) as i32,
        message: crate::limits::sanitize(&r.message, crate::limits::MAX_MESSAGE_CHARS),
    }
}

/// The server span of one RPC, continuing the caller's trace when the metadata carries a `traceparent`.
fn server_span(method: &'static str, metadata: &MetadataMap) -> Span {
    let span = tracing::info_span!(
        "grpc_server",
        otel.name = %format!("{SERVICE_NAME}/{method}"),
        otel.kind = "server",
        otel.status_code = Empty,
        { attr::RPC_SYSTEM_NAME } = attr::RPC_SYSTEM_NAME_GRPC,
        { attr::RPC_METHOD } = %format!("{SERVICE_NAME}/{method}"),
        { attr::RPC_RESPONSE_STATUS_CODE } = Empty,
        { attr::KONNECTOR_CLUSTER_NAMESPACE } = Empty,
        { attr::KONNECTOR_CLUSTER_NAME } = Empty,
        { attr::KONNECTOR_OUTCOME } = Empty,
        { attr::KONNECTOR_UNINSTALL_PHASE } = Empty,
        { attr::KONNECTOR_TRIGGER } = Empty,
        { attr::ERROR_TYPE } = Empty,
    );
    konnector_runtime::propagation::set_parent_from_metadata(&span, metadata);
    span
}

fn record_cluster(span: &Span, cluster: Option<&pb::ClusterRef>) {
    if let Some(c) = cluster {
        span.record(attr::KONNECTOR_CLUSTER_NAMESPACE, c.namespace.as_str());
        span.record(attr::KONNECTOR_CLUSTER_NAME, c.name.as_str());
    }
}

impl Executor {
    /// Counts and records the outcome of an RPC on its span, and logs failures at warn with the (secret-free)
    /// message.
    fn finish<T>(
        &self,
        span: &Span,
        rpc: &'static str,
        started: std::time::Instant,
        result: Result<T, Error>,
    ) -> Result<Response<T>, Status> {
        self.metrics().rpc_duration(rpc, started.elapsed().as_secs_f64());
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(e) => e.code(),
        };
        span.record(attr::RPC_RESPONSE_STATUS_CODE, code_name(code));
        self.metrics().rpc(rpc, code_name(code));
        match result {
            Ok(v) => {
                span.record(attr::KONNECTOR_OUTCOME, "ok");
                Ok(Response::new(v))
            }
            Err(e) => {
                span.record(attr::KONNECTOR_OUTCOME, code_name(code));
                span.record(attr::ERROR_TYPE, code_name(code));
                span.record("otel.status_code", "ERROR");
                span.in_scope(|| tracing::warn!(rpc, code = ?e.code(), error = %crate::limits::brief(&e), "request failed"));
                Err(e.into())
            }
        }
    }
}

#[tonic::async_trait]
impl AgentService for Executor {
    async fn apply_agent(
        &self,
        request: Request<ApplyAgentRequest>,
    ) -> Result<Response<ApplyAgentResponse>, Status> {
        let started = std::time::Instant::now();
        let span = server_span("ApplyAgent", request.metadata());
        let req = request.into_inner();
        let trigger = trigger(req.trigger);
        record_cluster(&span, req.cluster.as_ref());
        span.record(attr::KONNECTOR_TRIGGER, trigger_name(trigger));
        let result = async {
            let cluster = cluster_ref(req.cluster.as_ref())?;
            // A task of its own, which the caller going away (the gateway's deadline, a reset stream) does not
            // cancel: cancelled between its HelmChartProxy write and its take-back check (apply.rs), an apply
            // could leave an install behind for a Cluster whose deletion another replica has let proceed. Its own
            // bounds (the management and workload timeouts) still end it.
            let executor = self.clone();
            tokio::spawn(async move { executor.apply(&cluster, trigger).await }.in_current_span())
                .await
                .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
                .map(apply_response)
        }
        .instrument(span.clone())
        .await;
        self.finish(&span, "ApplyAgent", started, result)
    }

    async fn remove_agent(
        &self,
        request: Request<RemoveAgentRequest>,
    ) -> Result<Response<RemoveAgentResponse>, Status> {
        let started = std::time::Instant::now();
        let span = server_span("RemoveAgent", request.metadata());
        let req = request.into_inner();
        record_cluster(&span, req.cluster.as_ref());
        let result = async {
            let cluster = cluster_ref(req.cluster.as_ref())?;
            self.remove(&cluster).await.map(remove_response)
        }
        .instrument(span.clone())
        .await;
        if let Ok(answer) = &result {
            let phase = pb::UninstallPhase::try_from(answer.phase).unwrap_or(pb::UninstallPhase::Unspecified);
            self.metrics().uninstall_phase(phase.as_str_name());
            span.record(attr::KONNECTOR_UNINSTALL_PHASE, phase.as_str_name());
        }
        self.finish(&span, "RemoveAgent", started, result)
    }

    async fn get_agent_status(
        &self,
        request: Request<GetAgentStatusRequest>,
    ) -> Result<Response<GetAgentStatusResponse>, Status> {
        let started = std::time::Instant::now();
        let span = server_span("GetAgentStatus", request.metadata());
        let req = request.into_inner();
        record_cluster(&span, req.cluster.as_ref());
        let result = async {
            let cluster = cluster_ref(req.cluster.as_ref())?;
            self.status(&cluster).await.map(status_response)
        }
        .instrument(span.clone())
        .await;
        self.finish(&span, "GetAgentStatus", started, result)
    }

    async fn plan_agent(
        &self,
        request: Request<PlanAgentRequest>,
    ) -> Result<Response<PlanAgentResponse>, Status> {
        let started = std::time::Instant::now();
        let span = server_span("PlanAgent", request.metadata());
        let req = request.into_inner();
        record_cluster(&span, req.cluster.as_ref());
        let result = async {
            let cluster = cluster_ref(req.cluster.as_ref())?;
            self.plan(&cluster).await.map(plan_response)
        }
        .instrument(span.clone())
        .await;
        self.finish(&span, "PlanAgent", started, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_refs() {
        assert_eq!(cluster_ref(None), Err(RequestError::MissingCluster));
        let r = cluster_ref(Some(&pb::ClusterRef {
            namespace: "ns".into(),
            name: "c".into(),
            uid: String::new(),
            resource_version: String::new(),
        }))
        .unwrap();
        assert_eq!((r.key.to_string(), r.uid), ("ns/c".to_owned(), None));
        let r = cluster_ref(Some(&pb::ClusterRef {
            namespace: "ns".into(),
            name: "c".into(),
            uid: "u".into(),
            resource_version: "4711".into(),
        }))
        .unwrap();
        assert_eq!(r.uid.as_deref(), Some("u"));
        assert_eq!(r.resource_version.as_deref(), Some("4711"));
        // A resourceVersion the API server cannot have written is dropped (the Cluster is read live), not refused.
        for forged in ["", "1 2", "../1", "1\n", &"9".repeat(65)] {
            let r = cluster_ref(Some(&pb::ClusterRef {
                namespace: "ns".into(),
                name: "c".into(),
                resource_version: forged.to_owned(),
                ..Default::default()
            }))
            .unwrap();
            assert_eq!(r.resource_version, None, "{forged:?}");
        }
        assert!(
            cluster_ref(Some(&pb::ClusterRef {
                namespace: "ns".into(),
                name: "../../secrets".into(),
                ..Default::default()
            }))
            .is_err()
        );
    }

    #[test]
    fn triggers_and_phases() {
        assert_eq!(trigger(1), Trigger::AfterControlPlaneInitialized);
        assert_eq!(trigger(2), Trigger::BeforeClusterUpgrade);
        assert_eq!(trigger(0), Trigger::Unspecified);
        assert_eq!(trigger(99), Trigger::Unspecified);
        for (d, p) in [
            (UninstallPhase::NotNeeded, pb::UninstallPhase::NotNeeded),
            (UninstallPhase::NotStarted, pb::UninstallPhase::NotStarted),
            (UninstallPhase::InProgress, pb::UninstallPhase::InProgress),
            (UninstallPhase::Completed, pb::UninstallPhase::Completed),
            (UninstallPhase::TimedOut, pb::UninstallPhase::TimedOut),
        ] {
            assert_eq!(uninstall_phase(d), p);
        }
    }
}
