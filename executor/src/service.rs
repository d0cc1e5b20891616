//! The gRPC face of the executor: request → domain → [`Executor`] → response, and errors to status codes
//! through `From<Error> for Status` only.

use konnector_proto::v1::{
    ApplyAgentRequest, ApplyAgentResponse, GetAgentStatusRequest, GetAgentStatusResponse, PlanAgentRequest,
    PlanAgentResponse, RemoveAgentRequest, RemoveAgentResponse, Trigger,
    agent_service_server::{AgentService, AgentServiceServer},
};
use konnector_proto::v1::{ClusterContext, UninstallPhase};
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tracing::{Instrument, Span, field::Empty};

use konnector_runtime::{grpc::code_name, telemetry::attr};

use crate::{domain::ClusterKey, error::Error, executor::Executor};

const SERVICE: &str = "konnector.executor.v1.AgentService";

impl Executor {
    /// Wraps the executor as a tonic service.
    pub fn into_service(self) -> AgentServiceServer<Executor> {
        AgentServiceServer::new(self)
    }
}

fn missing_cluster() -> Error {
    Error::InvalidRequest("the request has no cluster".to_owned())
}

/// The server span of one RPC, continuing the caller's trace when the metadata carries a `traceparent`.
fn server_span(method: &'static str, metadata: &MetadataMap) -> Span {
    let span = tracing::info_span!(
        "grpc_server",
        otel.name = %format!("{SERVICE}/{method}"),
        otel.kind = "server",
        otel.status_code = Empty,
        { attr::RPC_SYSTEM_NAME } = attr::RPC_SYSTEM_NAME_GRPC,
        { attr::RPC_METHOD } = %format!("{SERVICE}/{method}"),
        { attr::RPC_RESPONSE_STATUS_CODE } = Empty,
        { attr::KONNECTOR_CLUSTER_NAMESPACE } = Empty,
        { attr::KONNECTOR_CLUSTER_NAME } = Empty,
        { attr::KONNECTOR_OUTCOME } = Empty,
        { attr::KONNECTOR_UNINSTALL_PHASE } = Empty,
        { attr::KONNECTOR_TRIGGER } = Empty,
    );
    konnector_runtime::propagation::set_parent_from_metadata(&span, metadata);
    span
}

fn record_cluster(span: &Span, cluster: Option<&ClusterContext>) {
    if let Some(c) = cluster {
        record_cluster_key(span, &c.namespace, &c.name);
    }
}

fn record_cluster_key(span: &Span, namespace: &str, name: &str) {
    span.record(attr::KONNECTOR_CLUSTER_NAMESPACE, namespace);
    span.record(attr::KONNECTOR_CLUSTER_NAME, name);
}

impl Executor {
    /// Counts and records the outcome of an RPC on its span, and logs failures at warn with the (secret-free)
    /// message.
    fn finish<T>(
        &self,
        span: &Span,
        rpc: &'static str,
        result: Result<T, Error>,
    ) -> Result<Response<T>, Status> {
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
                span.record("otel.status_code", "ERROR");
                span.in_scope(|| tracing::warn!(rpc, code = ?e.code(), error = %e, "request failed"));
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
        let span = server_span("ApplyAgent", request.metadata());
        let req = request.into_inner();
        let trigger = Trigger::try_from(req.trigger).unwrap_or(Trigger::Unspecified);
        record_cluster(&span, req.cluster.as_ref());
        span.record(attr::KONNECTOR_TRIGGER, trigger.as_str_name());
        let result = async {
            let cluster = req.cluster.ok_or_else(missing_cluster)?;
            self.apply(&cluster).await
        }
        .instrument(span.clone())
        .await;
        self.finish(&span, "ApplyAgent", result)
    }

    async fn remove_agent(
        &self,
        request: Request<RemoveAgentRequest>,
    ) -> Result<Response<RemoveAgentResponse>, Status> {
        let span = server_span("RemoveAgent", request.metadata());
        let req = request.into_inner();
        record_cluster(&span, req.cluster.as_ref());
        let result = async {
            let cluster = req.cluster.ok_or_else(missing_cluster)?;
            self.remove(&cluster).await
        }
        .instrument(span.clone())
        .await;
        if let Ok(answer) = &result {
            let phase = UninstallPhase::try_from(answer.phase).unwrap_or(UninstallPhase::Unspecified);
            self.metrics().uninstall_phase(phase.as_str_name());
            span.record(attr::KONNECTOR_UNINSTALL_PHASE, phase.as_str_name());
        }
        self.finish(&span, "RemoveAgent", result)
    }

    async fn get_agent_status(
        &self,
        request: Request<GetAgentStatusRequest>,
    ) -> Result<Response<GetAgentStatusResponse>, Status> {
        let span = server_span("GetAgentStatus", request.metadata());
        let req = request.into_inner();
        if let Some(c) = &req.cluster {
            record_cluster_key(&span, &c.namespace, &c.name);
        }
        let result = async {
            let cluster = req.cluster.ok_or_else(missing_cluster)?;
            let key = ClusterKey::new(&cluster.namespace, &cluster.name)?;
            self.status(&key).await
        }
        .instrument(span.clone())
        .await;
        self.finish(&span, "GetAgentStatus", result)
    }

    async fn plan_agent(
        &self,
        request: Request<PlanAgentRequest>,
    ) -> Result<Response<PlanAgentResponse>, Status> {
        let span = server_span("PlanAgent", request.metadata());
        let req = request.into_inner();
        record_cluster(&span, req.cluster.as_ref());
        let result = async {
            let cluster = req.cluster.ok_or_else(missing_cluster)?;
            self.plan(&cluster).await
        }
        .instrument(span.clone())
        .await;
        self.finish(&span, "PlanAgent", result)
    }
}
