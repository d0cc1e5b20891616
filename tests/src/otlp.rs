//! An OTLP trace receiver for tests, standing in for an OpenTelemetry collector: it keeps every span it is sent,
//! with its resource's attributes. Plain OTLP/gRPC on loopback, or in its TLS mode OTLP/gRPC or OTLP/HTTP
//! (protobuf, `POST /v1/traces`) over `https://` with a serving certificate from a throwaway CA.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use konnector_runtime::telemetry::OtlpProtocol;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{KeyValue, any_value::Value as AnyValue},
    trace::v1::Span,
};

/// What a receiver was sent: each span with its resource's attributes.
pub type Received = Arc<Mutex<Vec<(Vec<KeyValue>, Span)>>>;

/// The string (or number, or boolean) value of attribute `key` in `attributes`.
pub fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            AnyValue::IntValue(i) => Some(i.to_string()),
            AnyValue::BoolValue(b) => Some(b.to_string()),
            AnyValue::DoubleValue(d) => Some(d.to_string()),
            _ => None,
        })
}

/// The `service.name` a span's resource carries.
pub fn service_name(resource: &[KeyValue]) -> String {
    attribute(resource, "service.name").unwrap_or_default()
}

fn keep(request: ExportTraceServiceRequest, received: &Received) {
    for resource in request.resource_spans {
        let attributes = resource.resource.map(|r| r.attributes).unwrap_or_default();
        for scope in resource.scope_spans {
            let mut received = received.lock().unwrap();
            received.extend(scope.spans.into_iter().map(|s| (attributes.clone(), s)));
        }
    }
}

/// The receiver's gRPC face.
struct GrpcReceiver(Received);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        keep(request.into_inner(), &self.0);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves plain OTLP/gRPC on a loopback port, on the current runtime. Returns the endpoint (`http://…`) and what
/// it receives.
pub async fn serve_plain() -> anyhow::Result<(String, Received)> {
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(GrpcReceiver(received.clone())))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Ok((endpoint, received))
}

/// Serves OTLP over `https://` on a loopback port, by `protocol`, with a serving certificate for `localhost` from
/// a throwaway CA written to `dir`. Returns the endpoint, the CA file an exporter must trust, and what it
/// receives.
pub async fn serve_tls(protocol: OtlpProtocol, dir: &Path) -> anyhow::Result<(String, PathBuf, Received)> {
    let ca = crate::pki::TestCa::new("otlp-receiver-ca")?;
    let serving = ca.serving_cert("otlp-receiver")?;
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, ca.cert_pem())?;
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("https://localhost:{}", listener.local_addr()?.port());
    match protocol {
        OtlpProtocol::Grpc => {
            let tls = tonic::transport::ServerTlsConfig::new().identity(
                tonic::transport::Identity::from_pem(&serving.cert_pem, &serving.key_pem),
            );
            let server = tonic::transport::Server::builder()
                .tls_config(tls)?
                .add_service(TraceServiceServer::new(GrpcReceiver(received.clone())));
            tokio::spawn(
                server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
            );
        }
        OtlpProtocol::HttpProtobuf => {
            let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
            std::fs::write(&cert, &serving.cert_pem)?;
            std::fs::write(&key, &serving.key_pem)?;
            let config = rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(
                    konnector_runtime::tls::load_certs(&cert)?,
                    konnector_runtime::tls::load_key(&key)?,
                )?;
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let sink = received.clone();
            let app = axum::Router::new().route(
                "/v1/traces",
                axum::routing::post(move |body: axum::body::Bytes| {
                    let sink = sink.clone();
                    async move {
                        let Ok(request) = <ExportTraceServiceRequest as prost::Message>::decode(body) else {
                            return Err(http::StatusCode::BAD_REQUEST);
                        };
                        keep(request, &sink);
                        let answer = ExportTraceServiceResponse {
                            partial_success: None,
                        };
                        Ok((
                            [(http::header::CONTENT_TYPE, "application/x-protobuf")],
                            prost::Message::encode_to_vec(&answer),
                        ))
                    }
                }),
            );
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    let (acceptor, app) = (acceptor.clone(), app.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let _ = hyper_util::server::conn::auto::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(
                            hyper_util::rt::TokioIo::new(tls),
                            hyper_util::service::TowerToHyperService::new(app),
                        )
                        .await;
                    });
                }
            });
        }
    }
    Ok((endpoint, ca_file, received))
}
