//! Shared test helpers: an in-process fake executor, request builders, certificate generation and an HTTPS client.
#![allow(dead_code, unreachable_pub)]

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::body::Body;
use http::{Request, Response};
use konnector_gateway::{
    ExecutorEndpoint, ExecutorTransport, GatewayConfig, GatewayState, capi::HookResponse, catalog::Hook,
};
use konnector_proto::v1::{
    ApplyAgentRequest, ApplyAgentResponse, GetAgentStatusRequest, GetAgentStatusResponse, PlanAgentRequest,
    PlanAgentResponse, RemoveAgentRequest, RemoveAgentResponse,
    agent_service_server::{AgentService, AgentServiceServer},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::{Status, transport::Channel};
use tower::ServiceExt;

/// What the fake executor answers next, and what it was asked.
#[derive(Default)]
pub struct FakeState {
    pub apply: Option<Result<ApplyAgentResponse, Status>>,
    pub remove: Option<Result<RemoveAgentResponse, Status>>,
    pub applied: Vec<ApplyAgentRequest>,
    pub removed: Vec<RemoveAgentRequest>,
    pub deadlines: Vec<Option<String>>,
    pub delay: Option<Duration>,
    pub in_flight: usize,
    pub max_in_flight: usize,
}

#[derive(Clone, Default)]
pub struct FakeExecutor(pub Arc<Mutex<FakeState>>);

impl FakeExecutor {
    pub fn answer_apply(&self, r: Result<ApplyAgentResponse, Status>) {
        self.0.lock().unwrap().apply = Some(r);
    }
    pub fn answer_remove(&self, r: Result<RemoveAgentResponse, Status>) {
        self.0.lock().unwrap().remove = Some(r);
    }
    fn clone_status(s: &Status) -> Status {
        Status::new(s.code(), s.message().to_owned())
    }
}

#[tonic::async_trait]
impl AgentService for FakeExecutor {
    async fn apply_agent(
        &self,
        request: tonic::Request<ApplyAgentRequest>,
    ) -> Result<tonic::Response<ApplyAgentResponse>, Status> {
        let delay = {
            let mut s = self.0.lock().unwrap();
            s.deadlines.push(
                request
                    .metadata()
                    .get("grpc-timeout")
                    .map(|v| v.to_str().unwrap().to_owned()),
            );
            s.applied.push(request.into_inner());
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
            s.delay
        };
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let mut s = self.0.lock().unwrap();
        s.in_flight -= 1;
        match &s.apply {
            Some(Ok(r)) => Ok(tonic::Response::new(r.clone())),
            Some(Err(e)) => Err(Self::clone_status(e)),
            None => Ok(tonic::Response::new(ApplyAgentResponse {
                message: "Konnector Agent applied".into(),
                applied: true,
                ..Default::default()
            })),
        }
    }

    async fn remove_agent(
        &self,
        request: tonic::Request<RemoveAgentRequest>,
    ) -> Result<tonic::Response<RemoveAgentResponse>, Status> {
        let mut s = self.0.lock().unwrap();
        s.deadlines.push(
            request
                .metadata()
                .get("grpc-timeout")
                .map(|v| v.to_str().unwrap().to_owned()),
        );
        s.removed.push(request.into_inner());
        match &s.remove {
            Some(Ok(r)) => Ok(tonic::Response::new(r.clone())),
            Some(Err(e)) => Err(Self::clone_status(e)),
            None => Ok(tonic::Response::new(RemoveAgentResponse {
                done: true,
                ..Default::default()
            })),
        }
    }

    async fn get_agent_status(
        &self,
        _: tonic::Request<GetAgentStatusRequest>,
    ) -> Result<tonic::Response<GetAgentStatusResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn plan_agent(
        &self,
        _: tonic::Request<PlanAgentRequest>,
    ) -> Result<tonic::Response<PlanAgentResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// Serves `fake` (plus a SERVING grpc.health.v1) on a loopback port until `stop` is cancelled.
pub async fn spawn_fake(fake: FakeExecutor, stop: CancellationToken) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(AgentServiceServer::new(fake))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.cancelled_owned(),
            )
            .await
            .unwrap();
    });
    addr
}

pub fn plaintext_config(addr: SocketAddr) -> GatewayConfig {
    GatewayConfig::new(ExecutorEndpoint {
        url: format!("http://{addr}"),
        transport: ExecutorTransport::PlaintextLoopback,
    })
}

/// A loopback address nothing listens on.
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Router state for `config`, with a lazily connecting plaintext channel.
pub fn state(config: GatewayConfig) -> GatewayState {
    let config = config.validate().unwrap();
    let channel = konnector_gateway::client::channel(&config.executor, config.cert_reload_interval).unwrap();
    GatewayState::new(config, channel)
}

pub fn lazy_channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

pub async fn call(router: &axum::Router, req: Request<Body>) -> Response<Body> {
    router.clone().oneshot(req).await.unwrap()
}

pub fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path).body(body.into()).unwrap()
}

pub async fn body_bytes(resp: Response<Body>) -> Vec<u8> {
    axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec()
}

/// Posts and decodes a hook answer, asserting HTTP 200.
pub async fn hook(router: &axum::Router, path: &str, body: impl Into<Body>) -> HookResponse {
    let resp = call(router, post(path, body)).await;
    assert_eq!(resp.status(), 200);
    let bytes = body_bytes(resp).await;
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not a hook response ({e}): {bytes:?}"))
}

pub fn path(hook: Hook) -> String {
    hook.path()
}

/// A v1beta2 Cluster with the konnector addon configured.
pub fn cluster() -> Value {
    json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "Cluster",
        "metadata": {"name": "wl-1", "namespace": "tenants", "uid": "6f1c2b7e-0000-4000-8000-000000000001",
                     "labels": {"env": "test"}},
        "spec": {
            "controlPlaneEndpoint": {"host": "10.0.0.10", "port": 6443},
            "topology": {
                "classRef": {"name": "nutanix-quick-start"},
                "version": "v1.33.0",
                "variables": [{"name": "clusterConfig", "value": {
                    "addons": {"konnectorAgent": {"credentials": {"secretRef": {"name": "pc-creds"}}}},
                    "nutanix": {"prismCentralEndpoint": {"url": "https://pc.example.com:9440", "insecure": true}}
                }}]
            }
        }
    })
}

pub fn request(hook: Hook, cluster: Value) -> String {
    json!({
        "apiVersion": "hooks.runtime.cluster.x-k8s.io/v1alpha1",
        "kind": hook.request_kind(),
        "cluster": cluster,
    })
    .to_string()
}
