//! Serving the executor over gRPC, with health and reflection beside it.

use konnector_proto::v1::agent_service_server::AgentServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Server, ServerTlsConfig, server::TcpIncoming};

use crate::executor::Executor;

/// Serves `executor` on `listener` until `shutdown` is cancelled: the AgentService, gRPC health (AgentService
/// reported SERVING) and server reflection (v1 and v1alpha). With `tls`, every connection is TLS (mTLS when the
/// config names a client CA).
pub async fn serve(
    executor: Executor,
    listener: TcpListener,
    tls: Option<ServerTlsConfig>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AgentServiceServer<Executor>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(konnector_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(konnector_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let addr = listener.local_addr()?;
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    tracing::info!(%addr, "executor gRPC server listening");
    builder
        .add_service(executor.into_service())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        // tonic applies its TCP_NODELAY default only to sockets it binds itself. Without it, a response written as
        // several small frames waits on the client's delayed ACK: about 40 ms added to most calls.
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), async move {
            shutdown.cancelled().await
        })
        .await?;
    health_reporter
        .set_not_serving::<AgentServiceServer<Executor>>()
        .await;
    Ok(())
}
