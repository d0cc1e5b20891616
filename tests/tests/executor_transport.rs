//! The executor's gRPC server under misbehaving clients and a silent management API server: TLS handshake
//! timeout, connection limit, mTLS refusal, the per-request timeout, and the management client's timeouts.

use std::{sync::Arc, time::Duration};

use clap::Parser;
use konnector_executor::ExecutorConfig;
use konnector_proto::v1::{ClusterRef, GetAgentStatusRequest};
use konnector_tests::executor_fixture::{RunningExecutor, serve_executor_with_flags};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TCP server that accepts connections and never answers: an API server that hangs.
async fn silent_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// A kubeconfig for `server` (plain HTTP, no credentials).
fn kubeconfig(dir: &std::path::Path, server: std::net::SocketAddr) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'http://{server}'}}\n\
             users:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\n\
             current-context: x\n"
        ),
    )
    .unwrap();
    path
}

/// An executor whose management API server never answers (the client itself has no timeouts).
async fn executor_with(flags: &[&str]) -> RunningExecutor {
    konnector_runtime::tls::install_crypto_provider();
    let silent = silent_server().await;
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{silent}").parse().unwrap())).unwrap();
    serve_executor_with_flags(client, ExecutorConfig::default(), flags)
        .await
        .unwrap()
}

fn tls_client(executor: &RunningExecutor, with_cert: bool) -> Arc<rustls::ClientConfig> {
    let pair = with_cert.then(|| executor.pki.client_pair("test-client").unwrap());
    tls_client_with(executor, pair)
}

/// A client presenting `pair` (none: no certificate).
fn tls_client_with(
    executor: &RunningExecutor,
    pair: Option<konnector_tests::pki::ServingCert>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(executor.pki.trust_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = if let Some(pair) = pair {
        builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).unwrap(),
            )
            .unwrap()
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn handshake(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// Sends the HTTP/2 preface and waits for the server's SETTINGS: what a served connection does.
async fn served(tls: &mut Tls) -> bool {
    if tls
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 9];
    matches!(
        tokio::time::timeout(Duration::from_secs(30), tls.read_exact(&mut head)).await,
        Ok(Ok(_)) if head[3] == 4
    )
}

#[tokio::test]
async fn a_client_that_never_finishes_the_tls_handshake_is_dropped() {
    let executor = executor_with(&["--tls-handshake-timeout=1s"]).await;
    let mut tcp = tokio::net::TcpStream::connect(executor.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "silent TCP client kept open: {read:?}"
    );
}

#[tokio::test]
async fn clients_without_a_certificate_are_refused() {
    let executor = executor_with(&[]).await;
    let mut good = handshake(executor.addr, tls_client(&executor, true))
        .await
        .unwrap();
    assert!(served(&mut good).await);
    let refused = match handshake(executor.addr, tls_client(&executor, false)).await {
        Err(_) => true,
        Ok(mut tls) => !served(&mut tls).await,
    };
    assert!(refused, "a client without a certificate was served");
    let mut plain = tokio::net::TcpStream::connect(executor.addr).await.unwrap();
    plain
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut head = [0u8; 9];
    let read = tokio::time::timeout(Duration::from_secs(30), plain.read_exact(&mut head)).await;
    assert!(
        !matches!(read, Ok(Ok(_)) if head[3] == 4),
        "plaintext HTTP/2 was served"
    );
}

/// The client CA may sign other identities than the gateway's (cert-manager issues every konnector leaf from one
/// CA, and an operator's issuer signs much more). Only a certificate that carries an allowed DNS name is served;
/// another one from the same CA, with another name (or the gateway's name as common name only), is dropped.
#[tokio::test]
async fn client_certificates_of_another_identity_are_refused() {
    let executor = executor_with(&[]).await;
    let refused = |executor: &RunningExecutor, names: &'static [&'static str], cn: &'static str| {
        let pair = executor.pki.client_pair_with_names(cn, names).unwrap();
        let config = tls_client_with(executor, Some(pair));
        let addr = executor.addr;
        async move {
            match handshake(addr, config).await {
                Err(_) => true,
                Ok(mut tls) => !served(&mut tls).await,
            }
        }
    };
    // The gateway's identity, as the chart issues it: served.
    let gateway = executor
        .pki
        .client_pair_with_names("anything", &[konnector_tests::pki::GATEWAY_CLIENT_NAME])
        .unwrap();
    let mut good = handshake(executor.addr, tls_client_with(&executor, Some(gateway)))
        .await
        .unwrap();
    assert!(served(&mut good).await);
    assert!(
        refused(&executor, &["konnector-intruder"], "konnector-intruder").await,
        "a certificate with another subjectAltName was served"
    );
    assert!(
        refused(&executor, &[], "konnector-gateway").await,
        "the gateway's name as a common name alone was accepted"
    );
    assert!(
        refused(&executor, &["konnector-gateway.evil"], "x").await,
        "a name that only starts like the gateway's was accepted"
    );
    // Through gRPC as the gateway connects: the other identity gets no answer (not even health), the gateway's
    // does.
    let dir = tempfile::tempdir().unwrap();
    let other = grpc_channel(&executor, dir.path(), &["konnector-intruder"]);
    assert!(!konnector_gateway::client::is_serving(other, Duration::from_secs(10)).await);
    let gateway = grpc_channel(
        &executor,
        dir.path(),
        &[konnector_tests::pki::GATEWAY_CLIENT_NAME],
    );
    assert!(konnector_gateway::client::is_serving(gateway, Duration::from_secs(10)).await);

    // The allow-list is a flag: other names, several at once, or off (empty: any certificate of the CA).
    let executor = executor_with(&["--client-allowed-names=ops-console,konnector-gateway"]).await;
    assert!(!refused(&executor, &["ops-console"], "ops").await);
    assert!(refused(&executor, &["konnector-intruder"], "x").await);
    let executor = executor_with(&["--client-allowed-names="]).await;
    assert!(!refused(&executor, &["konnector-intruder"], "x").await);
}

/// A gRPC channel to `executor`, as the gateway connects, presenting a certificate (from its CA) with `names`; the
/// pair is written under `dir`.
fn grpc_channel(
    executor: &RunningExecutor,
    dir: &std::path::Path,
    names: &[&str],
) -> tonic::transport::Channel {
    let pair = executor.pki.client_pair_with_names("test", names).unwrap();
    let (cert, key) = (
        dir.join(format!("{}.crt", names.join("_"))),
        dir.join(format!("{}.key", names.join("_"))),
    );
    std::fs::write(&cert, &pair.cert_pem).unwrap();
    std::fs::write(&key, &pair.key_pem).unwrap();
    let endpoint = konnector_gateway::ExecutorEndpoint {
        url: executor.url(),
        transport: konnector_gateway::ExecutorTransport::Tls {
            ca: executor.pki.client_dir().join("ca.crt"),
            client_identity: Some((cert, key)),
            server_name: None,
        },
    };
    konnector_gateway::client::channel(&endpoint, Duration::from_secs(1)).unwrap()
}

/// Server reflection (grpcurl's `list`) is on by default, as the examples in docs/reference.md need, and off with
/// `--reflection=false`: then the reflection services are not served at all.
#[tokio::test]
async fn reflection_is_on_by_default_and_can_be_turned_off() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    async fn list(executor: &RunningExecutor) -> Result<Vec<String>, tonic::Status> {
        let channel =
            konnector_gateway::client::channel(&executor.endpoint(), Duration::from_secs(1)).unwrap();
        let mut client = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = client
            .server_reflection_info(futures::stream::iter([request]))
            .await?
            .into_inner();
        let answer = answers.message().await?.expect("one answer");
        match answer.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                Ok(list.service.into_iter().map(|s| s.name).collect())
            }
            other => panic!("{other:?}"),
        }
    }
    let on = executor_with(&[]).await;
    let services = list(&on).await.unwrap();
    assert!(
        services.iter().any(|s| s == "konnector.executor.v1.AgentService"),
        "{services:?}"
    );
    let off = executor_with(&["--reflection=false"]).await;
    let err = list(&off).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    // The services themselves are still served.
    let channel = konnector_gateway::client::channel(&off.endpoint(), Duration::from_secs(1)).unwrap();
    assert!(konnector_gateway::client::is_serving(channel, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let executor = executor_with(&["--max-connections=2"]).await;
    let mut first = handshake(executor.addr, tls_client(&executor, true))
        .await
        .unwrap();
    let mut second = handshake(executor.addr, tls_client(&executor, true))
        .await
        .unwrap();
    assert!(served(&mut first).await && served(&mut second).await);
    let third = tokio::spawn(handshake(executor.addr, tls_client(&executor, true)));
    // While both slots are held the third handshake cannot complete (it waits in the backlog)...
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served beyond the limit of 2"
    );
    // ...and it is served as soon as one is released.
    drop(first);
    let mut third = tokio::time::timeout(Duration::from_secs(30), third)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(served(&mut third).await);
    assert_eq!(executor.connections_accepted.get(), 3);
}

#[tokio::test]
#[allow(clippy::needless_update)]
async fn a_request_stuck_on_a_silent_api_server_ends_at_the_request_timeout() {
    let executor = executor_with(&["--request-timeout=1s"]).await;
    let mut client = executor.client().await.unwrap();
    // No grpc-timeout from the caller: only the server's own bound can end this call.
    let status = tokio::time::timeout(
        Duration::from_secs(30),
        client.get_agent_status(GetAgentStatusRequest {
            cluster: Some(ClusterRef {
                namespace: "clusters".into(),
                name: "c1".into(),
                // The contract is gaining fields (the Cluster's uid); unset is fine here.
                ..Default::default()
            }),
        }),
    )
    .await
    .expect("the executor held the request past its request timeout")
    .unwrap_err();
    // tonic's server-side timeout answers CANCELLED "Timeout expired"; the executor's own errors never say that.
    assert_eq!(status.code(), tonic::Code::Cancelled, "{status:?}");
    assert!(status.message().contains("Timeout expired"), "{status:?}");
}

#[tokio::test]
async fn management_api_calls_are_bounded_by_the_management_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let silent = silent_server().await;
    let path = kubeconfig(dir.path(), silent);
    let args = konnector_executor::args::Args::try_parse_from([
        "konnector-executor",
        "--kubeconfig",
        path.to_str().unwrap(),
        "--management-timeout=1s",
    ])
    .unwrap();
    let client = args.management_client().await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(30), client.apiserver_version()).await;
    assert!(
        matches!(outcome, Ok(Err(_))),
        "a silent management API server held the call: {outcome:?}"
    );
}
