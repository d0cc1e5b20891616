//! The gRPC face of the executor: request → domain → [`Executor`] → response, and errors to status codes
//! through `From<Error> for Status` only.

use konnector_proto::v1::{
    ApplyAgentRequest, ApplyAgentResponse, GetAgentStatusRequest, GetAgentStatusResponse, PlanAgentRequest,
    PlanAgentResponse, RemoveAgentRequest, RemoveAgentResponse, Trigger,
    agent_service_server::{AgentService, AgentServiceServer},
};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::{domain::ClusterKey, error::Error, executor::Executor};

impl Executor {
    /// Wraps the executor as a tonic service.
    pub fn into_service(self) -> AgentServiceServer<Executor> {
        AgentServiceServer::new(self)
    }
}

fn missing_cluster() -> Error {
    Error::InvalidRequest("the request has no cluster".to_owned())
}

/// Logs the outcome of an RPC: failures at warn with the (secret-free) message, successes at info.
fn finish<T>(rpc: &'static str, result: Result<T, Error>) -> Result<Response<T>, Status> {
    match result {
        Ok(v) => Ok(Response::new(v)),
        Err(e) => {
            tracing::warn!(rpc, code = ?e.code(), error = %e, "request failed");
            Err(e.into())
        }
    }
}

#[tonic::async_trait]
impl AgentService for Executor {
    async fn apply_agent(
        &self,
        request: Request<ApplyAgentRequest>,
    ) -> Result<Response<ApplyAgentResponse>, Status> {
        let req = request.into_inner();
        let trigger = Trigger::try_from(req.trigger).unwrap_or(Trigger::Unspecified);
        let span = tracing::info_span!("ApplyAgent", trigger = trigger.as_str_name());
        let result = async {
            let cluster = req.cluster.ok_or_else(missing_cluster)?;
            self.apply(&cluster).await
        }
        .instrument(span)
        .await;
        finish("ApplyAgent", result)
    }

    async fn remove_agent(
        &self,
        request: Request<RemoveAgentRequest>,
    ) -> Result<Response<RemoveAgentResponse>, Status> {
        let req = request.into_inner();
        let result = async {
            let cluster = req.cluster.ok_or_else(missing_cluster)?;
            self.remove(&cluster).await
        }
        .instrument(tracing::info_span!("RemoveAgent"))
        .await;
        finish("RemoveAgent", result)
    }

    async fn get_agent_status(
        &self,
        request: Request<GetAgentStatusRequest>,
    ) -> Result<Response<GetAgentStatusResponse>, Status> {
        let req = request.into_inner();
        let result = async {
            let cluster = req.cluster.ok_or_else(missing_cluster)?;
            let key = ClusterKey::new(&cluster.namespace, &cluster.name)?;
            self.status(&key).await
        }
        .instrument(tracing::info_span!("GetAgentStatus"))
        .await;
        finish("GetAgentStatus", result)
    }

    async fn plan_agent(
        &self,
        request: Request<PlanAgentRequest>,
    ) -> Result<Response<PlanAgentResponse>, Status> {
        let req = request.into_inner();
        let result = async {
            let cluster = req.cluster.ok_or_else(missing_cluster)?;
            self.plan(&cluster).await
        }
        .instrument(tracing::info_span!("PlanAgent"))
        .await;
        finish("PlanAgent", result)
    }
}
