//! An OTLP trace receiver for tests, standing in for an OpenTelemetry collector: it keeps every span it is sent,
//! with its resource's attributes. Plain OTLP/gRPC or plain OTLP/HTTP on loopback, or in its TLS mode OTLP/gRPC
//! or OTLP/HTTP over `https://` with a serving certificate from a throwaway CA. Its OTLP/HTTP face takes
//! protobuf bodies, gzip-compressed or not, on any path, and records each request's path and encodings
//! ([`HttpRequests`]), so a test can check where and how an exporter sent.

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

/// One OTLP/HTTP export request, as it arrived.
#[derive(Clone, Debug)]
pub struct HttpExport {
    /// The request path, e.g. `/v1/traces`.
    pub path: String,
    /// `Content-Encoding`, when sent (`gzip`).
    pub content_encoding: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// The body's size on the wire.
    pub wire_bytes: usize,
    /// The `service.name` of the resources in it.
    pub services: Vec<String>,
    /// How many spans it carried.
    pub spans: usize,
}

/// Every OTLP/HTTP request a receiver was sent, in order.
pub type HttpRequests = Arc<Mutex<Vec<HttpExport>>>;

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
            let app = http_app(received.clone(), HttpRequests::default());
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

/// Serves plain OTLP/HTTP (protobuf) on a loopback port, on the current runtime, taking exports on any path.
/// Returns the base URL (`http://127.0.0.1:<port>`), the spans it receives and the requests that brought them.
pub async fn serve_http() -> anyhow::Result<(String, Received, HttpRequests)> {
    let received: Received = Arc::default();
    let requests = HttpRequests::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let app = http_app(received.clone(), requests.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((endpoint, received, requests))
}

/// The OTLP/HTTP face: every POST, whatever its path, is decoded as an `ExportTraceServiceRequest` (gunzipped
/// first when `Content-Encoding: gzip`), recorded in `requests`, and its spans kept in `received`. A body that
/// does not decode is answered 400, as a collector would, and still recorded.
fn http_app(received: Received, requests: HttpRequests) -> axum::Router {
    axum::Router::new().fallback(axum::routing::post(
        move |uri: http::Uri, headers: http::HeaderMap, body: axum::body::Bytes| {
            let (received, requests) = (received.clone(), requests.clone());
            async move {
                let header = |name: http::header::HeaderName| {
                    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
                };
                let content_encoding = header(http::header::CONTENT_ENCODING);
                let decoded = match content_encoding.as_deref() {
                    Some("gzip") => {
                        let mut plain = Vec::new();
                        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain)
                            .ok()
                            .map(|_| plain)
                    }
                    None | Some("identity") => Some(body.to_vec()),
                    Some(_) => None,
                };
                let request = decoded
                    .and_then(|bytes| <ExportTraceServiceRequest as prost::Message>::decode(&bytes[..]).ok());
                let (services, spans) = request.as_ref().map_or((Vec::new(), 0), |r| {
                    (
                        r.resource_spans
                            .iter()
                            .map(|rs| {
                                service_name(
                                    &rs.resource
                                        .as_ref()
                                        .map(|r| r.attributes.clone())
                                        .unwrap_or_default(),
                                )
                            })
                            .collect(),
                        r.resource_spans
                            .iter()
                            .flat_map(|rs| &rs.scope_spans)
                            .map(|ss| ss.spans.len())
                            .sum(),
                    )
                });
                requests.lock().unwrap().push(HttpExport {
                    path: uri.path().to_owned(),
                    content_encoding,
                    content_type: header(http::header::CONTENT_TYPE),
                    wire_bytes: body.len(),
                    services,
                    spans,
                });
                let Some(request) = request else {
                    return Err(http::StatusCode::BAD_REQUEST);
                };
                keep(request, &received);
                let answer = ExportTraceServiceResponse {
                    partial_success: None,
                };
                Ok((
                    [(http::header::CONTENT_TYPE, "application/x-protobuf")],
                    prost::Message::encode_to_vec(&answer),
                ))
            }
        },
    ))
}
