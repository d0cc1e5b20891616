//! The gRPC client side: the channel to the executor (TLS files re-read on every new connection), the mapping from
//! a hook to its RPC, and the health watch that feeds `konnector_gateway_executor_up`.

use std::time::Duration;

use anyhow::Context;
// SERVICE_NAME: the service's full name as the generated code has it, for span names and `rpc.method`.
use konnector_proto::v1::{
    ApplyAgentRequest, ClusterRef, RemoveAgentRequest, Trigger, agent_service_client::AgentServiceClient,
    agent_service_server::SERVICE_NAME,
};
use konnector_runtime::{
    grpc::{TcpDial, TlsConnector},
    telemetry::attr,
    tls::TlsMetrics,
};
use prometheus_client::metrics::gauge::Gauge;
use rustls::pki_types::ServerName;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tracing::{Instrument, field::Empty};

use crate::answer::ExecutorReply;
use crate::catalog::Hook;
use crate::config::{ExecutorEndpoint, ExecutorTransport};

/// How long a connection attempt to the executor (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the executor's health is re-checked for the `executor_up` gauge and the logs.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// Builds a lazily connecting channel: the gateway starts, and answers hooks with a deterministic Failure, while the
/// executor is down; the channel reconnects by itself when the executor returns.
///
/// With TLS, the channel connects through [`TlsConnector`]: the CA bundle and the client pair are re-read (at most
/// every `reload_interval`) whenever a connection is made, so rotated certificates are used from the next
/// connection on without a restart. tonic's own TLS settings are fixed at build time, hence the custom connector.
pub fn channel(executor: &ExecutorEndpoint, reload_interval: Duration) -> anyhow::Result<Channel> {
    channel_observed(executor, reload_interval, None)
}

/// [`channel`], keeping the expiry of the CA bundle and the client certificate in `tls_metrics`.
pub fn channel_observed(
    executor: &ExecutorEndpoint,
    reload_interval: Duration,
    tls_metrics: Option<&TlsMetrics>,
) -> anyhow::Result<Channel> {
    let uri: Uri = executor
        .url
        .parse()
        .with_context(|| format!("invalid executor URL {:?}", executor.url))?;
    let configure = |endpoint: Endpoint| {
        endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
    };
    match &executor.transport {
        ExecutorTransport::PlaintextLoopback => {
            let endpoint = Endpoint::from_shared(executor.url.clone())
                .with_context(|| format!("invalid executor URL {:?}", executor.url))?;
            Ok(configure(endpoint).connect_lazy())
        }
        ExecutorTransport::Tls {
            ca,
            client_identity,
            server_name,
        } => {
            let host = uri.host().context("executor URL has no host")?.to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let name = server_name
                .clone()
                .unwrap_or_else(|| host.trim_matches(['[', ']']).to_owned());
            let server_name = ServerName::try_from(name.clone())
                .with_context(|| format!("{name:?} is not a valid TLS server name"))?;
            let config = konnector_runtime::tls::client_config_observed(
                ca,
                client_identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
                reload_interval,
                &[b"h2"],
                tls_metrics,
            )?;
            // TCP without Nagle, then TLS with the current files.
            let connector = TlsConnector::new(
                std::sync::Arc::new(config),
                server_name,
                TcpDial { host, port },
                "the executor",
            );
            // tonic insists on doing TLS itself for an https:// URI; the connector does it, so tonic sees http://.
            let authority = uri.authority().context("executor URL has no authority")?;
            let endpoint =
                Endpoint::from_shared(format!("http://{authority}")).context("invalid executor authority")?;
            Ok(configure(endpoint).connect_with_connector_lazy(connector))
        }
    }
}

/// The executor's AgentService, as the hooks use it.
#[derive(Clone, Debug)]
pub struct ExecutorClient {
    agent: AgentServiceClient<Channel>,
    /// The executor's URL, for the client span's `server.address` and `server.port`.
    url: String,
}

impl ExecutorClient {
    /// A client over `channel` to the executor at `url`.
    pub fn new(channel: Channel, url: &str) -> Self {
        Self {
            agent: AgentServiceClient::new(channel),
            url: url.to_owned(),
        }
    }

    /// Calls the RPC for `hook` (`ApplyAgent` with its Trigger for AfterControlPlaneInitialized and
    /// BeforeClusterUpgrade, `RemoveAgent` for BeforeClusterDelete) with `deadline`, in a client span.
    ///
    /// A call that fails in the transport (the connection was closed under it, e.g. after the executor restarted
    /// or rolled its connections) is sent once more: every RPC is idempotent, and the deadline still holds.
    pub async fn call(
        &self,
        hook: Hook,
        cluster: ClusterRef,
        deadline: Duration,
    ) -> Result<ExecutorReply, tonic::Status> {
        let method = rpc_method(hook);
        let executor: Option<http::Uri> = self.url.parse().ok();
        let span = tracing::info_span!(
            "grpc_client",
            otel.name = %format!("{SERVICE_NAME}/{method}"),
            otel.kind = "client",
            otel.status_code = Empty,
            { attr::RPC_SYSTEM_NAME } = attr::RPC_SYSTEM_NAME_GRPC,
            { attr::RPC_METHOD } = %format!("{SERVICE_NAME}/{method}"),
            { attr::RPC_RESPONSE_STATUS_CODE } = Empty,
            { attr::SERVER_ADDRESS } = executor.as_ref().and_then(http::Uri::host),
            { attr::SERVER_PORT } = executor.as_ref().and_then(http::Uri::port_u16),
            { attr::ERROR_TYPE } = Empty,
        );
        let started = tokio::time::Instant::now();
        let outcome = async {
            let first = self.call_once(hook, cluster.clone(), deadline).await;
            match first {
                Err(status) if is_transport_failure(&status) => {
                    let left = deadline.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        return Err(status);
                    }
                    tracing::debug!("executor connection failed; calling once more on a new connection");
                    self.call_once(hook, cluster, left).await
                }
                other => other,
            }
        }
        .instrument(span.clone())
        .await;
        let code = match &outcome {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        span.record(
            attr::RPC_RESPONSE_STATUS_CODE,
            konnector_runtime::grpc::code_name(code),
        );
        if code != tonic::Code::Ok {
            span.record("otel.status_code", "ERROR");
            span.record(attr::ERROR_TYPE, konnector_runtime::grpc::code_name(code));
        }
        if let Err(status) = &outcome {
            tracing::warn!(hook = hook.name(), code = ?status.code(), "executor call failed");
        }
        outcome
    }

    async fn call_once(
        &self,
        hook: Hook,
        cluster: ClusterRef,
        deadline: Duration,
    ) -> Result<ExecutorReply, tonic::Status> {
        let mut client = self.agent.clone();
        match hook {
            Hook::AfterControlPlaneInitialized | Hook::BeforeClusterUpgrade => {
                let trigger = if hook == Hook::AfterControlPlaneInitialized {
                    Trigger::AfterControlPlaneInitialized
                } else {
                    Trigger::BeforeClusterUpgrade
                };
                let mut req = tonic::Request::new(ApplyAgentRequest {
                    cluster: Some(cluster),
                    trigger: trigger as i32,
                });
                req.set_timeout(deadline);
                konnector_runtime::propagation::inject_current(req.metadata_mut());
                client
                    .apply_agent(req)
                    .await
                    .map(|r| ExecutorReply::Applied(r.into_inner()))
            }
            Hook::BeforeClusterDelete => {
                let mut req = tonic::Request::new(RemoveAgentRequest {
                    cluster: Some(cluster),
                });
                req.set_timeout(deadline);
                konnector_runtime::propagation::inject_current(req.metadata_mut());
                client
                    .remove_agent(req)
                    .await
                    .map(|r| ExecutorReply::Removed(r.into_inner()))
            }
        }
    }
}

/// The AgentService method a hook calls.
pub fn rpc_method(hook: Hook) -> &'static str {
    match hook {
        Hook::AfterControlPlaneInitialized | Hook::BeforeClusterUpgrade => "ApplyAgent",
        Hook::BeforeClusterDelete => "RemoveAgent",
    }
}

/// A failure raised by the client's own transport, which carries the transport error as its source: the connection
/// could not be made (`Unavailable`), or was closed under the call or before it was sent (`Unavailable`,
/// `Cancelled`, or `Internal` for a stream cut by the executor's GOAWAY when it rolls a connection at its maximum
/// age). Statuses the executor sent are decoded from its response and carry no source: they are its answer and are
/// not retried. Neither is the call's own deadline expiring.
fn is_transport_failure(status: &tonic::Status) -> bool {
    let Some(source) = std::error::Error::source(status) else {
        return false;
    };
    let deadline = source.downcast_ref::<tonic::TimeoutExpired>().is_some()
        || status.message().contains("Timeout expired");
    !deadline
}

/// Asks the executor's `grpc.health.v1` service once whether the server (service name "") is serving.
pub async fn is_serving(channel: Channel, timeout: Duration) -> bool {
    let mut client = HealthClient::new(channel);
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.set_timeout(timeout);
    match tokio::time::timeout(timeout, client.check(request)).await {
        Ok(Ok(resp)) => resp.into_inner().status == ServingStatus::Serving as i32,
        Ok(Err(status)) => {
            tracing::debug!(code = ?status.code(), "executor health check failed");
            false
        }
        Err(_) => false,
    }
}

/// Keeps `executor_up` at 1 while the executor answers its health check and 0 otherwise, re-checking every
/// `interval` and logging each change, until `shutdown` is cancelled.
///
/// This is deliberately not the gateway's readiness: a gateway without endpoints fails CAPI's Discovery, and CAPI's
/// controller then refuses to start, while a reachable gateway still answers every Cluster that does not use the
/// addon and tells the others, deterministically, that the executor is unreachable.
pub async fn watch_health(
    channel: Channel,
    executor_up: Gauge,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut last = None;
    loop {
        let ok = is_serving(channel.clone(), interval.min(Duration::from_secs(2))).await;
        if last != Some(ok) {
            if ok {
                tracing::info!("executor is serving");
            } else {
                tracing::warn!(
                    "executor is not serving; hooks of Clusters that use the addon answer Failure"
                );
            }
            last = Some(ok);
        }
        executor_up.set(i64::from(ok));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
