//! Reaching the executor: directly over the network with the gateway's TLS options, or through the user's
//! kubeconfig, by a port-forward to a ready executor pod with the CLI's own client certificate from its Secret.
//!
//! The kubeconfig path exists because the chart's executor is deliberately hard to reach: its NetworkPolicy admits
//! only the gateway, and it requires a client certificate. A port-forward enters the pod's network namespace
//! through the kubelet, so the NetworkPolicy does not apply, and the user's own RBAC decides whether they may do it
//! (`pods/portforward` `create`, `secrets` `get` on the CLI's Secret `<release>-cli`, `pods` `list`). That
//! certificate is read-only: the executor serves it status, plan and health, never ApplyAgent or RemoveAgent, so
//! the CLI's users need no access to the gateway's key.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::{Pod, Secret};
use konnector_proto::v1::agent_service_client::AgentServiceClient;
use konnector_runtime::grpc::{self, TcpDial, TlsConnector};
use kube::{
    Api, Client, Config,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::health_client::HealthClient;

use crate::args::Connection;

/// How long connecting (TCP or port-forward, then TLS) may take, within the command's own bound.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The executor's gRPC port when its pod does not name one `grpc` (the chart's containerPort).
const DEFAULT_GRPC_PORT: u16 = 8090;
/// The chart's labels on executor pods, after `app.kubernetes.io/instance=<release>`.
const EXECUTOR_LABELS: &str = "app.kubernetes.io/name=konnector,app.kubernetes.io/component=executor";

/// A connected executor.
#[derive(Clone, Debug)]
pub struct ExecutorConn {
    /// The AgentService.
    pub agent: AgentServiceClient<Channel>,
    /// The standard gRPC health service, for "is it serving".
    pub health: HealthClient<Channel>,
    /// How it was reached, for people: a URL, or the pod port-forwarded to.
    pub via: String,
}

/// Connects as `connection` says: directly when `--executor-url` is set, through the kubeconfig otherwise. Errors
/// are one sentence each (with their causes) and never carry certificate or key material.
pub async fn connect(connection: &Connection) -> anyhow::Result<ExecutorConn> {
    konnector_runtime::tls::install_crypto_provider();
    match &connection.executor_url {
        Some(url) => direct(connection, url).await,
        None => {
            ensure!(
                connection.ca.is_none()
                    && connection.cert.is_none()
                    && connection.server_name.is_none()
                    && !connection.plaintext_loopback,
                "--ca, --cert, --key, --server-name and --plaintext-loopback apply to --executor-url only \
                 (without it the CLI goes through the kubeconfig)"
            );
            through_kubeconfig(connection).await
        }
    }
}

fn conn(channel: Channel, via: String) -> ExecutorConn {
    ExecutorConn {
        agent: AgentServiceClient::new(channel.clone()),
        health: HealthClient::new(channel),
        via,
    }
}

/// The gateway's rules for its executor client: https:// needs a CA and verifies the executor's certificate against
/// it (the client pair is optional, as the executor may not require one); plaintext only on loopback, asked for
/// explicitly.
async fn direct(c: &Connection, url: &str) -> anyhow::Result<ExecutorConn> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("executor URL {url:?} does not parse"))?;
    let host = uri
        .host()
        .with_context(|| format!("executor URL {url:?} has no host"))?
        .trim_matches(['[', ']'])
        .to_owned();
    match (uri.scheme_str(), c.plaintext_loopback) {
        (Some("http"), true) => {
            ensure!(
                c.ca.is_none() && c.cert.is_none() && c.server_name.is_none(),
                "--plaintext-loopback cannot be combined with --ca, --cert or --server-name"
            );
            ensure!(
                is_loopback(&host),
                "plaintext to the executor is allowed only on loopback, but {host:?} is not a loopback address"
            );
            let channel = Endpoint::from_shared(url.to_owned())?
                .connect_timeout(CONNECT_TIMEOUT)
                .connect()
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect to the executor at {url}: {}", chain(&e)))?;
            Ok(conn(channel, url.to_owned()))
        }
        (Some("http"), false) => bail!(
            "executor URL {url:?} is plaintext http: use https with --ca, or, for an executor on this host only, \
             pass --plaintext-loopback"
        ),
        (Some("https"), true) => bail!("--plaintext-loopback needs an http:// executor URL, got {url:?}"),
        (Some("https"), false) => {
            let ca = c.ca.as_deref().context(
                "--ca is required with an https:// executor URL: the CLI verifies the executor's certificate",
            )?;
            // The runtime's client configuration, as the gateway builds it: TLS 1.2/1.3, ring, webpki verification.
            let config = konnector_runtime::tls::client_config(
                ca,
                c.cert.as_deref().zip(c.key.as_deref()),
                // A CLI lives seconds: the files are read once.
                Duration::from_secs(3600),
                &[b"h2"],
            )?;
            let name = c.server_name.clone().unwrap_or_else(|| host.clone());
            let port = uri.port_u16().unwrap_or(443);
            let dial = Dial::Tcp(TcpDial { host, port });
            let channel = tls_channel(config, &name, dial, url).await?;
            Ok(conn(channel, url.to_owned()))
        }
        _ => bail!("executor URL {url:?} must use https (or http on loopback)"),
    }
}

/// Whether `host` is `localhost` or a loopback IP.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The kubeconfig path: a ready executor pod, the CLI's client Secret, and a port-forward carrying TLS.
async fn through_kubeconfig(c: &Connection) -> anyhow::Result<ExecutorConn> {
    let client = kube_client(c).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &c.namespace);
    let (pod, port) = find_executor_pod(&pods, &c.namespace, &c.release).await?;
    let config = cli_identity(&client, &c.namespace, &c.release).await?;
    // The chart's executor certificate names its Service, not the pod or loopback.
    let name = format!("{}-executor.{}.svc", c.release, c.namespace);
    let via = format!("pod {}/{pod} port {port} (port-forward)", c.namespace);
    let channel = tls_channel(
        config,
        &name,
        Dial::PortForward {
            pods: Box::new(pods),
            pod,
            port,
        },
        &via,
    )
    .await?;
    Ok(conn(channel, via))
}

/// A client from `--kubeconfig`/`--context`, or, with neither, as kubectl and in-cluster pods find theirs.
pub async fn kube_client(c: &Connection) -> anyhow::Result<Client> {
    konnector_runtime::tls::install_crypto_provider();
    let options = KubeConfigOptions {
        context: c.context.clone(),
        ..KubeConfigOptions::default()
    };
    const HINT: &str = "cannot load a kubeconfig (set --kubeconfig or KUBECONFIG, or use --executor-url)";
    let config = match (&c.kubeconfig, &c.context) {
        (Some(path), _) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .context(HINT)?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options).await.context(HINT)?,
        // As kubectl: $KUBECONFIG, ~/.kube/config, and inside a pod its ServiceAccount.
        (None, None) => Config::infer().await.context(HINT)?,
    };
    let mut config = config;
    // kubectl's generic flags: impersonation and the per-request bound.
    if let Some(user) = &c.as_user {
        config.auth_info.impersonate = Some(user.clone());
    }
    if !c.as_groups.is_empty() {
        config.auth_info.impersonate_groups = Some(c.as_groups.clone());
    }
    if let Some(crate::args::RequestTimeout(bound)) = c.request_timeout {
        config.read_timeout = bound;
        config.write_timeout = bound;
        config.connect_timeout = bound;
    }
    Client::try_from(config).context("cannot build a Kubernetes client from the kubeconfig")
}

/// The namespace of the kubeconfig context in use (`--context`, else the current one), as kubectl defaults `-n` to
/// it; None when there is no kubeconfig or the context names none.
pub fn context_namespace(c: &Connection) -> Option<String> {
    let kubeconfig = match &c.kubeconfig {
        Some(path) => Kubeconfig::read_from(path).ok()?,
        None => Kubeconfig::read().ok()?,
    };
    let name = c.context.clone().or(kubeconfig.current_context.clone())?;
    kubeconfig
        .contexts
        .iter()
        .find(|ctx| ctx.name == name)
        .and_then(|ctx| ctx.context.as_ref())
        .and_then(|ctx| ctx.namespace.clone())
}

/// The first ready executor pod by name (deterministic), and its gRPC port.
pub async fn find_executor_pod(
    pods: &Api<Pod>,
    namespace: &str,
    release: &str,
) -> anyhow::Result<(String, u16)> {
    let selector = format!("app.kubernetes.io/instance={release},{EXECUTOR_LABELS}");
    let mut found = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| kube_error(e, &format!("list pods in namespace {namespace}")))?
        .items;
    found.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    if let Some(pod) = found.iter().find(|p| is_ready(p)) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        return Ok((name, grpc_port(pod)));
    }
    if found.is_empty() {
        bail!(
            "no executor pod in namespace {namespace} (selector {selector}): is konnector installed there with \
             release name {release}? (see --konnector-namespace, --release)"
        );
    }
    let seen = found
        .iter()
        .map(|p| {
            let phase = p
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .unwrap_or("Unknown");
            format!(
                "{} ({phase}, not ready)",
                p.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    bail!("no ready executor pod in namespace {namespace}: {seen}; see `kubectl -n {namespace} describe pod`")
}

fn is_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else { return false };
    pod.metadata.deletion_timestamp.is_none()
        && status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn grpc_port(pod: &Pod) -> u16 {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("grpc"))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(DEFAULT_GRPC_PORT)
}

/// The CLI's own read-only client identity, from Secret `<release>-cli` (cert-manager's `tls.crt`, `tls.key` and
/// `ca.crt`; the chart's `executor.cliClientCert`), as a TLS client configuration. The key stays in memory: it is
/// never written to disk or printed.
pub async fn cli_identity(client: &Client, namespace: &str, release: &str) -> anyhow::Result<ClientConfig> {
    let name = format!("{release}-cli");
    let what = format!("get Secret {namespace}/{name} (the CLI's read-only client certificate)");
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(&name)
        .await
        .map_err(|e| match &e {
            // A chart from before the CLI had its own identity issues none: say what to do about it.
            kube::Error::Api(s) if s.code == 404 => anyhow::anyhow!(
                "cannot {what}: not found; install or upgrade konnector with a chart that issues it (this CLI's \
                 release, executor.cliClientCert.enabled=true, the default), or pass --executor-url with --ca, \
                 --cert and --key"
            ),
            _ => kube_error(e, &what),
        })?;
    let data = secret.data.unwrap_or_default();
    let field = |key: &str| {
        data.get(key)
            .map(|v| v.0.as_slice())
            .with_context(|| format!("Secret {namespace}/{name} has no {key}; has cert-manager issued it?"))
    };
    client_config_from_pem(field("ca.crt")?, field("tls.crt")?, field("tls.key")?)
        .with_context(|| format!("Secret {namespace}/{name} does not hold a usable certificate"))
}

/// A TLS client configuration from PEM in memory, with the runtime's choices (ring, TLS 1.2/1.3, webpki
/// verification, ALPN h2). The runtime's own helper reads files; these bytes come from a Secret and should not be
/// written anywhere. No error here quotes the PEM.
fn client_config_from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> anyhow::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca) {
        roots
            .add(c.context("ca.crt is not PEM")?)
            .context("ca.crt holds an invalid CA certificate")?;
    }
    ensure!(!roots.is_empty(), "ca.crt holds no certificate");
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .context("tls.crt is not PEM")?;
    ensure!(!chain.is_empty(), "tls.crt holds no certificate");
    let key = PrivateKeyDer::from_pem_slice(key).context("tls.key is not a PEM private key")?;
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("cannot configure TLS versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("tls.key does not fit tls.crt")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A kube error as one sentence, with the RBAC hint where it applies.
fn kube_error(error: kube::Error, what: &str) -> anyhow::Error {
    match &error {
        kube::Error::Api(s) if s.code == 403 => anyhow::anyhow!(
            "not allowed to {what}: {}; docs/cli.md (\"Reaching the executor\") lists the RBAC the CLI needs",
            s.message
        ),
        kube::Error::Api(s) if s.code == 404 => {
            anyhow::anyhow!(
                "cannot {what}: not found; is konnector installed there? (see --konnector-namespace, --release)"
            )
        }
        _ => anyhow::anyhow!("cannot {what}: {}", kube_message(&error)),
    }
}

/// The API server's own message for an API error (kube's Display adds the whole Status in Debug form), the cause
/// chain otherwise.
fn kube_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(s) => format!("{} (HTTP {} {})", s.message, s.code, s.reason),
        other => chain(other),
    }
}

/// Where the bytes go before TLS: a TCP connection, or a port-forward to a pod through the API server.
#[derive(Clone)]
enum Dial {
    Tcp(TcpDial),
    PortForward {
        pods: Box<Api<Pod>>,
        pod: String,
        port: u16,
    },
}

/// Anything TLS can run over.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

impl grpc::Dial for Dial {
    type Io = Box<dyn Transport>;

    fn dial(&self) -> impl Future<Output = std::io::Result<Self::Io>> + Send {
        let this = self.clone();
        async move {
            Ok(match this {
                Self::Tcp(tcp) => Box::new(tcp.dial().await?) as Box<dyn Transport>,
                Self::PortForward { pods, pod, port } => {
                    let mut forwarder = pods.portforward(&pod, &[port]).await.map_err(|e| {
                        std::io::Error::other(format!(
                            "cannot port-forward to pod {pod} port {port}: {}",
                            kube_message(&e)
                        ))
                    })?;
                    // The forwarding task keeps running for the stream after the forwarder is dropped.
                    Box::new(forwarder.take_stream(port).ok_or_else(|| {
                        std::io::Error::other(format!(
                            "the port-forward to pod {pod} gave no stream for port {port}"
                        ))
                    })?)
                }
            })
        }
    }
}

/// Connects (eagerly, so a failure is reported here with its cause) through [`TlsConnector`].
async fn tls_channel(config: ClientConfig, name: &str, dial: Dial, via: &str) -> anyhow::Result<Channel> {
    let server_name = ServerName::try_from(name.to_owned())
        .with_context(|| format!("{name:?} is not a valid TLS server name"))?;
    let connector = TlsConnector::new(Arc::new(config), server_name, dial, "the executor");
    // tonic wants an http:// URI when the connector does TLS; the authority is only a label here.
    Endpoint::from_static("http://konnector-executor")
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_with_connector(connector)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the executor at {via}: {}", chain(&e)))
}

/// An error and its causes in one line, each cause once (tonic and hyper repeat theirs).
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) && text != "transport error" {
            parts.push(text);
        }
        next = e.source();
    }
    if parts.is_empty() {
        error.to_string()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("127.0.0.1") && is_loopback("::1") && is_loopback("LOCALHOST"));
        assert!(!is_loopback("10.0.0.1") && !is_loopback("executor.svc"));
    }

    #[test]
    fn chain_says_each_cause_once() {
        let inner = std::io::Error::other("Connection refused");
        let outer = anyhow::Error::new(inner).context("cannot connect to the executor at https://x:1");
        assert_eq!(
            chain(outer.as_ref()),
            "cannot connect to the executor at https://x:1: Connection refused"
        );
    }

    #[test]
    fn readiness_and_port_come_from_the_pod() {
        let pod = |phase: &str, ready: &str, ports: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "executor", "ports": ports}]},
                "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]},
            }))
            .unwrap()
        };
        let named = serde_json::json!([{"name": "admin", "containerPort": 8091}, {"name": "grpc", "containerPort": 9000}]);
        assert!(is_ready(&pod("Running", "True", named.clone())));
        assert!(!is_ready(&pod("Running", "False", named.clone())));
        assert!(!is_ready(&pod("Pending", "True", named.clone())));
        assert_eq!(grpc_port(&pod("Running", "True", named)), 9000);
        assert_eq!(
            grpc_port(&pod("Running", "True", serde_json::json!([]))),
            DEFAULT_GRPC_PORT
        );
    }

    #[test]
    fn pem_errors_name_the_key_and_never_quote_it() {
        let secret_looking =
            b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
        let error = client_config_from_pem(b"not pem", b"", secret_looking).unwrap_err();
        let text = format!("{error:#}");
        assert!(text.contains("ca.crt"), "{text}");
        assert!(!text.contains("c2VjcmV0"), "{text}");
    }
}
