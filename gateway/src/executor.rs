//! The gRPC connection to the executor and the readiness probe that watches it.

use std::time::Duration;

use anyhow::Context;
use konnector_runtime::admin::Readiness;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::config::{ExecutorEndpoint, ExecutorTransport};

/// How long a connection attempt to the executor may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often readiness re-checks the executor's health.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// Builds a lazily connecting channel: the gateway starts, and answers hooks with a deterministic Failure, while the
/// executor is down; the channel reconnects by itself when the executor returns.
pub fn channel(executor: &ExecutorEndpoint) -> anyhow::Result<Channel> {
    let mut endpoint = Endpoint::from_shared(executor.url.clone())
        .with_context(|| format!("invalid executor URL {:?}", executor.url))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    if let ExecutorTransport::Tls {
        ca,
        client_identity,
        server_name,
    } = &executor.transport
    {
        let ca_pem =
            std::fs::read(ca).with_context(|| format!("cannot read executor CA {}", ca.display()))?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
        if let Some((cert, key)) = client_identity {
            let cert_pem = std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
            let key_pem = std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
            tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
        }
        if let Some(name) = server_name {
            tls = tls.domain_name(name.clone());
        }
        endpoint = endpoint
            .tls_config(tls)
            .context("cannot configure TLS to the executor")?;
    }
    Ok(endpoint.connect_lazy())
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

/// Keeps `readiness` equal to "the executor answers its health check", re-checking every `interval`, until
/// `shutdown` is cancelled (then readiness is cleared).
pub async fn watch_readiness(
    channel: Channel,
    readiness: Readiness,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let ok = is_serving(channel.clone(), interval.min(Duration::from_secs(2))).await;
        if ok != readiness.get() {
            if ok {
                tracing::info!("executor is serving; gateway ready");
            } else {
                tracing::warn!("executor is not serving; gateway not ready");
            }
        }
        readiness.set(ok);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    readiness.set(false);
}
