//! HTTPS transport: certificate rotation on disk, mTLS, ALPN (h2 and http/1.1), header/handshake timeouts, and the
//! full `serve()` entry point with readiness.

mod common;

#[path = "../../tests/shared/h2_raw.rs"]
mod h2_raw;

use h2_raw::{frame, literal, read_frame};
use std::{path::Path, sync::Arc, time::Duration};

use axum::body::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use konnector_gateway::{
    TlsFiles,
    catalog::Hook,
    router,
    server::{ServerOptions, rustls_config, serve_https},
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

const DISCOVERY: &str = "/hooks.runtime.cluster.x-k8s.io/v1alpha1/discovery";

struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ca(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    /// A leaf for `names`: (cert PEM, key PEM, cert DER).
    fn leaf(&self, names: &[&str]) -> (String, String, Vec<u8>) {
        let params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.0).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn pem(&self) -> String {
        self.0.pem()
    }
}

fn write_pair(dir: &Path, cert: &str, key: &str) {
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
}

fn roots(ca_pem: &str) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

fn client_config(ca_pem: &str, identity: Option<(&str, &str)>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    konnector_runtime::tls::install_crypto_provider();
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots(ca_pem));
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

struct Served {
    addr: std::net::SocketAddr,
    stop: CancellationToken,
    dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(ca: &Ca, client_ca: Option<&Ca>, header_timeout: Duration) -> (Served, Vec<u8>) {
    let options = ServerOptions {
        header_read_timeout: header_timeout,
        shutdown_grace: Duration::from_secs(1),
        ..ServerOptions::default()
    };
    start_with(ca, client_ca, options, plaintext_config(dead_addr())).await
}

async fn start_with(
    ca: &Ca,
    client_ca: Option<&Ca>,
    options: ServerOptions,
    config: konnector_gateway::GatewayConfig,
) -> (Served, Vec<u8>) {
    konnector_runtime::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = ca.leaf(&["localhost"]);
    write_pair(dir.path(), &cert, &key);
    let client_ca_path = client_ca.map(|c| {
        let p = dir.path().join("client-ca.crt");
        std::fs::write(&p, c.pem()).unwrap();
        p
    });
    let files = TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        client_ca: client_ca_path,
    };
    let tls = rustls_config(&files, Duration::ZERO).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let app = router(state(config));
    tokio::spawn(serve_https(app, listener, tls, options, stop.clone()));
    (Served { addr, stop, dir }, der)
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

fn peer_der(tls: &Tls) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// POSTs to Discovery over `tls`, using h2 if ALPN chose it, and returns the status and body.
async fn discovery_over(tls: Tls) -> anyhow::Result<(u16, Bytes)> {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let req = http::Request::post(format!("https://localhost{DISCOVERY}?timeout=10s"))
        .body(Full::new(Bytes::from_static(br#"{"kind":"DiscoveryRequest"}"#)))?;
    let resp = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        sender.send_request(req).await?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        sender.send_request(req).await?
    };
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

#[tokio::test]
async fn rotated_certificate_is_served_without_restart() {
    let ca = Ca::new("serving-ca");
    let (served, first) = start(&ca, None, Duration::from_secs(5)).await;
    // A fresh client config per connection: a shared one would resume the TLS session, and a resumed session
    // reports the certificate of the session it resumes, not what the server now serves.
    let client = || client_config(&ca.pem(), None, &[b"h2", b"http/1.1"]);
    let tls = connect(served.addr, client()).await.unwrap();
    assert_eq!(peer_der(&tls), first);
    assert_eq!(discovery_over(tls).await.unwrap().0, 200);

    let (cert, key, second) = ca.leaf(&["localhost"]);
    assert_ne!(first, second);
    write_pair(served.dir.path(), &cert, &key);
    let tls = connect(served.addr, client()).await.unwrap();
    assert_eq!(peer_der(&tls), second, "the rotated certificate is served");
    assert_eq!(discovery_over(tls).await.unwrap().0, 200);

    // A half-finished rotation (garbage key) keeps the last good pair in service.
    std::fs::write(served.dir.path().join("tls.key"), "not a key").unwrap();
    let tls = connect(served.addr, client()).await.unwrap();
    assert_eq!(peer_der(&tls), second);
}

#[tokio::test]
async fn h2_and_http11_both_negotiate() {
    let ca = Ca::new("serving-ca");
    let (served, _) = start(&ca, None, Duration::from_secs(5)).await;
    for (offer, want) in [
        (&[b"h2".as_slice(), b"http/1.1"][..], Some(&b"h2"[..])),
        (&[b"http/1.1".as_slice()][..], Some(&b"http/1.1"[..])),
        (&[][..], None),
    ] {
        let tls = connect(served.addr, client_config(&ca.pem(), None, offer))
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), want);
        let (status, body) = discovery_over(tls).await.unwrap();
        assert_eq!(status, 200);
        assert!(std::str::from_utf8(&body).unwrap().contains("konnector-bcd"));
    }
    // TLS 1.2 is accepted too.
    let mut v12 = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
        .with_root_certificates(roots(&ca.pem()))
        .with_no_client_auth();
    v12.alpn_protocols = vec![b"h2".to_vec()];
    let tls = connect(served.addr, Arc::new(v12)).await.unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(discovery_over(tls).await.unwrap().0, 200);
}

#[tokio::test]
async fn mtls_refuses_clients_without_a_trusted_certificate() {
    let serving = Ca::new("serving-ca");
    let clients = Ca::new("capi-client-ca");
    let stranger = Ca::new("stranger-ca");
    let (served, _) = start(&serving, Some(&clients), Duration::from_secs(5)).await;

    let (cert, key, _) = clients.leaf(&["capi-controller-manager"]);
    let good = client_config(&serving.pem(), Some((&cert, &key)), &[b"h2", b"http/1.1"]);
    let tls = connect(served.addr, good).await.unwrap();
    assert_eq!(discovery_over(tls).await.unwrap().0, 200);

    let none = client_config(&serving.pem(), None, &[b"http/1.1"]);
    let refused = match connect(served.addr, none).await {
        Err(_) => true,
        Ok(tls) => discovery_over(tls).await.is_err(),
    };
    assert!(refused, "a client without a certificate must be refused");

    let (cert, key, _) = stranger.leaf(&["intruder"]);
    let wrong = client_config(&serving.pem(), Some((&cert, &key)), &[b"h2"]);
    let refused = match connect(served.addr, wrong).await {
        Err(_) => true,
        Ok(tls) => discovery_over(tls).await.is_err(),
    };
    assert!(refused, "a client certificate from another CA must be refused");
}

#[tokio::test]
async fn slow_handshakes_and_slow_headers_are_cut_off() {
    let ca = Ca::new("serving-ca");
    let (served, _) = start(&ca, None, Duration::from_millis(500)).await;
    // A TCP client that never starts TLS.
    let mut tcp = tokio::net::TcpStream::connect(served.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "silent TCP client must be disconnected: {read:?}"
    );
    // A TLS client that sends half a request header.
    let mut tls = connect(served.addr, client_config(&ca.pem(), None, &[b"http/1.1"]))
        .await
        .unwrap();
    tls.write_all(b"POST /hooks.runtime.cluster.x-k8s.io/v1alpha1/discovery HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), tls.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "slow header client must be disconnected");
}

/// POSTs `body` to `path` over `tls` (h2) and decodes the hook answer.
async fn hook_over(tls: Tls, path: &str, body: String) -> konnector_gateway::capi::HookResponse {
    let req = http::Request::post(format!("https://localhost{path}"))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

fn executor_up(metrics: &konnector_runtime::metrics::Metrics) -> Option<i64> {
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix("konnector_gateway_executor_up "))
        .map(|v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn gateway_is_ready_without_the_executor_and_reports_its_health_in_a_metric() {
    let ca = Ca::new("serving-ca");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = ca.leaf(&["localhost"]);
    write_pair(dir.path(), &cert, &key);
    let files = TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        client_ca: None,
    };

    // The executor is down: the gateway still starts, is ready, serves Discovery, answers Success for a Cluster
    // that does not use the addon, and a deterministic Failure for one that does; the gauge says the executor is
    // down.
    let exec_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let exec_addr = exec_listener.local_addr().unwrap();
    drop(exec_listener);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let readiness = konnector_runtime::admin::Readiness::default();
    let metrics = konnector_runtime::metrics::Metrics::default();
    let server = tokio::spawn({
        let (files, stop, readiness, metrics) =
            (files.clone(), stop.clone(), readiness.clone(), metrics.clone());
        async move {
            konnector_gateway::serve_with_metrics(
                plaintext_config(exec_addr),
                listener,
                files,
                stop,
                readiness,
                &metrics,
            )
            .await
        }
    });
    let config = client_config(&ca.pem(), None, &[b"h2"]);
    let tls = connect(addr, config.clone()).await.unwrap();
    assert_eq!(discovery_over(tls).await.unwrap().0, 200);
    assert!(
        readiness.get(),
        "readiness is about the gateway, not the executor"
    );
    while executor_up(&metrics).is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(executor_up(&metrics), Some(0));

    let mut unconfigured = cluster();
    unconfigured["spec"]["topology"]["variables"] = serde_json::json!([]);
    for hook in [Hook::AfterControlPlaneInitialized, Hook::BeforeClusterUpgrade] {
        let tls = connect(addr, config.clone()).await.unwrap();
        let answer = hook_over(tls, &hook.path(), request(hook, unconfigured.clone())).await;
        assert_eq!(
            answer.status,
            konnector_gateway::capi::Status::Success,
            "{answer:?}"
        );
        assert!(answer.message.contains("not configured"), "{answer:?}");
        let tls = connect(addr, config.clone()).await.unwrap();
        let answer = hook_over(tls, &hook.path(), request(hook, cluster())).await;
        assert_eq!(
            answer.status,
            konnector_gateway::capi::Status::Failure,
            "{answer:?}"
        );
    }
    // BeforeClusterDelete always asks the executor: an uninstall is never skipped on the body's word.
    let tls = connect(addr, config.clone()).await.unwrap();
    let hook = Hook::BeforeClusterDelete;
    let answer = hook_over(tls, &hook.path(), request(hook, unconfigured.clone())).await;
    assert_eq!(
        answer.status,
        konnector_gateway::capi::Status::Failure,
        "{answer:?}"
    );

    // The executor comes up on that address: the gauge follows within one probe interval.
    let fake_stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(exec_addr).await.unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let fs = fake_stop.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(
                konnector_proto::v1::agent_service_server::AgentServiceServer::new(FakeExecutor::default()),
            )
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                fs.cancelled_owned(),
            )
            .await
            .unwrap();
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while executor_up(&metrics) != Some(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "executor_up never became 1"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(readiness.get());

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!readiness.get(), "not ready after shutdown");
    fake_stop.cancel();
}

#[tokio::test]
async fn serve_refuses_bad_configuration_at_startup() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = plaintext_config(dead_addr());
    config.executor.url = "http://10.1.2.3:8090".into();
    let files = TlsFiles {
        cert: "/nonexistent/tls.crt".into(),
        key: "/nonexistent/tls.key".into(),
        client_ca: None,
    };
    let err = konnector_gateway::serve(
        config,
        listener,
        files,
        CancellationToken::new(),
        konnector_runtime::admin::Readiness::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
}

// --- Hostile clients: every resource a client can hold is bounded. ---

fn hostile_options() -> ServerOptions {
    ServerOptions {
        header_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(1),
        max_connections: 2,
        max_concurrent_streams: 4,
        max_header_bytes: 16 * 1024,
        ..ServerOptions::default()
    }
}

/// Reads until the server closes the connection; the outer timeout only guards against a hang.
async fn closed_by_server(tls: &mut Tls) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut sink))
        .await
        .is_ok()
}

#[tokio::test]
async fn a_connection_that_sends_nothing_after_tls_is_closed() {
    let ca = Ca::new("serving-ca");
    let (served, _) = start_with(&ca, None, hostile_options(), plaintext_config(dead_addr())).await;
    for alpn in [&b"h2"[..], b"http/1.1"] {
        let mut tls = connect(served.addr, client_config(&ca.pem(), None, &[alpn]))
            .await
            .unwrap();
        assert!(
            closed_by_server(&mut tls).await,
            "silent {alpn:?} connection kept open"
        );
    }
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_its_last_request() {
    let ca = Ca::new("serving-ca");
    let (served, _) = start_with(&ca, None, hostile_options(), plaintext_config(dead_addr())).await;
    let tls = connect(served.addr, client_config(&ca.pem(), None, &[b"h2"]))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::post(format!("https://localhost{DISCOVERY}"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
    // The server sends GOAWAY once the connection has been idle; the client connection then ends.
    let ended = tokio::time::timeout(Duration::from_secs(30), conn).await;
    assert!(ended.is_ok(), "idle HTTP/2 connection kept open");
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let ca = Ca::new("serving-ca");
    let mut options = hostile_options();
    // Long enough that the two held connections are not closed as idle during the test.
    options.header_read_timeout = Duration::from_secs(60);
    options.idle_timeout = Duration::from_secs(60);
    let gauge = options.connections.clone();
    let (served, _) = start_with(&ca, None, options, plaintext_config(dead_addr())).await;
    let config = client_config(&ca.pem(), None, &[b"h2"]);
    let first = connect(served.addr, config.clone()).await.unwrap();
    let _second = connect(served.addr, config.clone()).await.unwrap();
    assert_eq!(gauge.get(), 2);
    let third = tokio::spawn(connect(served.addr, config.clone()));
    // While both slots are held the third handshake cannot complete (it waits in the backlog)...
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served beyond the limit of 2"
    );
    // ...and it is served as soon as one is released.
    drop(first);
    let third = tokio::time::timeout(Duration::from_secs(30), third)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(discovery_over(third).await.unwrap().0, 200);
}

#[tokio::test]
async fn an_http2_stream_flood_is_refused_beyond_the_stream_limit() {
    let ca = Ca::new("serving-ca");
    let mut options = hostile_options();
    options.idle_timeout = Duration::from_secs(60);
    options.header_read_timeout = Duration::from_secs(60);
    let (served, _) = start_with(&ca, None, options, plaintext_config(dead_addr())).await;
    let mut tls = connect(served.addr, client_config(&ca.pem(), None, &[b"h2"]))
        .await
        .unwrap();
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    tls.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    // Wait for the server's SETTINGS, check its stream limit, and acknowledge it (it applies from the ACK on).
    let max_streams = loop {
        let (kind, flags, _, payload) = read_frame(&mut tls).await.unwrap();
        if kind == 4 && flags & 1 == 0 {
            break payload
                .chunks(6)
                .find(|s| u16::from_be_bytes([s[0], s[1]]) == 3)
                .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
        }
    };
    assert_eq!(max_streams, Some(4));
    tls.write_all(&frame(4, 1, 0, &[])).await.unwrap();

    // 100 hook requests whose bodies never come: each holds its stream open.
    let path = Hook::BeforeClusterDelete.path();
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "localhost"),
        (":path", path.as_str()),
    ] {
        block.extend(literal(name, value));
    }
    let flood = 100u32;
    let mut out = Vec::new();
    for i in 0..flood {
        out.extend(frame(1, 0x4, 2 * i + 1, &block));
    }
    tls.write_all(&out).await.unwrap();

    // Every stream beyond the fourth is refused (RST_STREAM REFUSED_STREAM); the four admitted ones wait for
    // their bodies.
    let mut refused = 0;
    while refused < flood - 4 {
        let (kind, _, stream, payload) = tokio::time::timeout(Duration::from_secs(30), read_frame(&mut tls))
            .await
            .expect("the server stopped answering the flood")
            .unwrap();
        assert_ne!(
            kind, 7,
            "the server gave up the connection (GOAWAY) instead of refusing streams"
        );
        if kind == 3 {
            assert_eq!(
                u32::from_be_bytes(payload[..4].try_into().unwrap()),
                7,
                "REFUSED_STREAM"
            );
            assert!(stream > 7, "an admitted stream (1, 3, 5, 7) was reset");
            refused += 1;
        }
    }
    // The gateway still serves everyone else.
    let tls = connect(served.addr, client_config(&ca.pem(), None, &[b"h2"]))
        .await
        .unwrap();
    assert_eq!(discovery_over(tls).await.unwrap().0, 200);
}

#[tokio::test]
async fn oversized_bodies_and_headers_are_refused() {
    let ca = Ca::new("serving-ca");
    let config = plaintext_config(dead_addr());
    let limit = config.body_limit_bytes;
    assert!(
        limit <= 2 * 1024 * 1024,
        "the default body limit is at most 2 MiB"
    );
    let (served, _) = start_with(&ca, None, ServerOptions::default(), config).await;

    // A body one byte over the limit: a Failure naming the limit, and the executor is not asked.
    let tls = connect(served.addr, client_config(&ca.pem(), None, &[b"h2"]))
        .await
        .unwrap();
    let hook = Hook::AfterControlPlaneInitialized;
    let mut body = request(hook, cluster());
    body.push_str(&" ".repeat(limit + 1 - body.len()));
    let answer = hook_over(tls, &hook.path(), body).await;
    assert_eq!(answer.status, konnector_gateway::capi::Status::Failure);
    assert!(
        answer.message.contains(&format!("limit of {limit} bytes")),
        "{answer:?}"
    );

    // A header block over the limit: 431 on HTTP/1.1, a refused request on HTTP/2.
    let big = "x".repeat(32 * 1024);
    let mut tls = connect(served.addr, client_config(&ca.pem(), None, &[b"http/1.1"]))
        .await
        .unwrap();
    tls.write_all(format!("POST {DISCOVERY} HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    let tls = connect(served.addr, client_config(&ca.pem(), None, &[b"h2"]))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("https://localhost{DISCOVERY}"))
        .header("x-big", big)
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let refused = match sender.send_request(req).await {
        Err(_) => true,
        Ok(resp) => resp.status() == 431,
    };
    assert!(refused, "an oversized HTTP/2 header block was served");
}

/// One HTTP/2 connection holds at most `max_requests_per_connection` of the gateway's request permits: with twelve
/// slow hooks on it, four reach the executor at a time, and a hook on a second connection still gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_holds_at_most_its_share_of_the_request_permits() {
    let ca = Ca::new("serving-ca");
    let fake = FakeExecutor::default();
    fake.0.lock().unwrap().delay = Some(Duration::from_secs(2));
    let stop = CancellationToken::new();
    let executor = spawn_fake(fake.clone(), stop.clone()).await;
    let options = ServerOptions {
        max_requests_per_connection: Some(4),
        shutdown_grace: Duration::from_secs(1),
        ..ServerOptions::default()
    };
    let (served, _) = start_with(&ca, None, options, plaintext_config(executor)).await;
    let sender = |served_addr| {
        let config = client_config(&ca.pem(), None, &[b"h2"]);
        async move {
            let tls = connect(served_addr, config).await.unwrap();
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender
        }
    };
    let body = request(Hook::AfterControlPlaneInitialized, cluster());
    let send = |mut sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>, body: String| async move {
        let req = http::Request::post(format!(
            "https://localhost{}",
            path(Hook::AfterControlPlaneInitialized)
        ))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        resp.into_body().collect().await.unwrap().to_bytes()
    };
    let first = sender(served.addr).await;
    let calls: Vec<_> = (0..12)
        .map(|_| tokio::spawn(send(first.clone(), body.clone())))
        .collect();
    let in_flight = || fake.0.lock().unwrap().in_flight;
    let waited = std::time::Instant::now();
    while in_flight() < 4 {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the hooks never reached the executor"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The first connection is at its cap; a second connection's hook is let through beside it.
    let second = tokio::spawn(send(sender(served.addr).await, body.clone()));
    while in_flight() < 5 {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "a second connection's hook never reached the executor"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for call in calls {
        call.await.unwrap();
    }
    second.await.unwrap();
    let max = fake.0.lock().unwrap().max_in_flight;
    // Four from the first connection and one from the second at most, however the calls interleaved.
    assert_eq!(max, 5, "executor calls in flight at once");
    stop.cancel();
}
