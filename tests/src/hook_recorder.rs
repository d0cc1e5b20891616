//! A recording HTTPS proxy between CAPI and the gateway: CAPI's ExtensionConfig points here, and every call CAPI
//! makes (Discovery and the hooks) is kept with its path and query, headers, body, the gateway's answer and when
//! it came, then forwarded unchanged. It is how the tests know what the real CAPI sent, and what docs/testing.md
//! reports of it ("What the real CAPI does (observed)").
//!
//! With no upstream ([`HookRecorder::set_upstream`] `None`), calls are recorded and answered 503, as a gateway
//! that is down (Service without endpoints) would leave CAPI failing.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Bytes, service::service_fn};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::capi_stand_in::ExtensionClient;

/// One call CAPI made.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedCall {
    /// Milliseconds since the recorder started.
    pub at_millis: u128,
    /// The HTTP method.
    pub method: String,
    /// The path, e.g. `/hooks.runtime.cluster.x-k8s.io/v1alpha1/beforeclusterdelete/konnector-bcd`.
    pub path: String,
    /// The query string, e.g. `timeout=20s`.
    pub query: String,
    /// The negotiated HTTP version, e.g. `HTTP/2.0`.
    pub version: String,
    /// Header names CAPI sent (values are not kept).
    pub headers: Vec<String>,
    /// The request body (JSON).
    pub request: Value,
    /// The HTTP status the gateway answered (503 when it was down).
    pub status: u16,
    /// The answer's body (JSON), Null when there was none.
    pub response: Value,
}

impl RecordedCall {
    /// The last path segment (the handler name; `discovery` for Discovery).
    pub fn handler(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or_default()
    }

    /// The hook segment of the path, e.g. `beforeclusterdelete`, or `discovery`.
    pub fn hook(&self) -> &str {
        let mut segments = self.path.trim_start_matches('/').split('/');
        segments.nth(2).unwrap_or_default()
    }

    /// The Cluster the request names (`namespace/name`), when it names one.
    pub fn cluster(&self) -> Option<String> {
        let meta = &self.request["cluster"]["metadata"];
        Some(format!(
            "{}/{}",
            meta["namespace"].as_str()?,
            meta["name"].as_str()?
        ))
    }

    /// One line for logs: handler, answer status, retryAfterSeconds.
    pub fn line(&self) -> String {
        format!(
            "{} {} -> {} {} retryAfterSeconds={}",
            self.hook(),
            self.cluster().unwrap_or_default(),
            self.status,
            self.response["status"].as_str().unwrap_or("-"),
            self.response["retryAfterSeconds"]
        )
    }
}

struct State {
    started: Instant,
    upstream: Mutex<Option<ExtensionClient>>,
    ca_pem: String,
    calls: Mutex<Vec<RecordedCall>>,
}

/// The running proxy. Dropping it stops it.
pub struct HookRecorder {
    addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
}

impl HookRecorder {
    /// Serves HTTPS with `cert_dir`'s `tls.crt`/`tls.key` (the gateway's own pair, so the CA CAPI injects for
    /// the gateway also trusts the proxy), forwarding to `upstream`, which chains to `ca_pem`.
    pub async fn start(upstream: &str, ca_pem: &str, cert_dir: &Path) -> anyhow::Result<Self> {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(cert_dir.join("tls.crt"))?.collect::<Result<_, _>>()?;
        let key = PrivateKeyDer::from_pem_file(cert_dir.join("tls.key")).context("recorder key")?;
        let mut tls =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(certs, key)?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            started: Instant::now(),
            upstream: Mutex::new(Some(ExtensionClient::new(upstream, ca_pem)?)),
            ca_pem: ca_pem.to_owned(),
            calls: Mutex::default(),
        });
        let stop = CancellationToken::new();
        let (st, token) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    () = token.cancelled() => return,
                    accepted = listener.accept() => match accepted { Ok((tcp, _)) => tcp, Err(_) => continue },
                };
                let (acceptor, st, token) = (acceptor.clone(), st.clone(), token.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, std::convert::Infallible>(forward(&st, req).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                    tokio::select! {
                        () = token.cancelled() => {}
                        _ = conn => {}
                    }
                });
            }
        });
        Ok(Self { addr, state, stop })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Forwards to `upstream` from now on, or answers 503 with `None`.
    pub fn set_upstream(&self, upstream: Option<String>) {
        let client = upstream.and_then(|u| ExtensionClient::new(&u, &self.state.ca_pem).ok());
        *self.state.upstream.lock().unwrap() = client;
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.state.calls.lock().unwrap().clone()
    }

    /// The calls for hook segment `hook` (e.g. `beforeclusterdelete`) about Cluster `namespace/name`.
    pub fn calls_for(&self, hook: &str, cluster: &str) -> Vec<RecordedCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.hook() == hook && c.cluster().as_deref() == Some(cluster))
            .collect()
    }

    /// One line per call, for failure messages.
    pub fn summary(&self) -> Vec<String> {
        self.calls().iter().map(RecordedCall::line).collect()
    }
}

impl Drop for HookRecorder {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn forward(state: &State, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let version = format!("{:?}", req.version());
    let headers = req.headers().keys().map(|k| k.as_str().to_owned()).collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    // The timeout CAPI asked for bounds the forwarded call too.
    let timeout = query
        .strip_prefix("timeout=")
        .and_then(|t| humantime::parse_duration(t).ok())
        .unwrap_or(Duration::from_secs(10));
    let upstream = state.upstream.lock().unwrap().clone();
    let (status, answer) = match upstream {
        Some(client) => match client
            .post_raw(&path, body.to_vec(), timeout.as_secs().max(1), &[])
            .await
        {
            Ok(raw) => (raw.status, raw.body),
            Err(_) => (502, Vec::new()),
        },
        None => (503, Vec::new()),
    };
    state.calls.lock().unwrap().push(RecordedCall {
        at_millis: state.started.elapsed().as_millis(),
        method,
        path,
        query,
        version,
        headers,
        request: serde_json::from_slice(&body).unwrap_or(Value::Null),
        status,
        response: serde_json::from_slice(&answer).unwrap_or(Value::Null),
    });
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(answer)))
        .unwrap_or_default()
}
