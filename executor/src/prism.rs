//! Talking to Prism Central from the management cluster: the ApplyAgent preflight (does the endpoint resolve, accept
//! TLS, and accept the credentials?) and the registration lookup GetAgentStatus reports.
//!
//! The client is deliberately small: one resolved address, one TCP connection, one TLS handshake, one HTTP/1.1
//! request, each step under the same deadline. Doing the steps by hand (rather than through a general HTTP client)
//! is what lets every failure be named for the step that failed, and it makes redirects impossible to follow: the
//! answer is only ever read, so the credentials go to the configured endpoint and nowhere else.
//!
//! The credentials' values live in [`Credentials`], whose `Debug` prints no value, and they only ever leave it as
//! the request's `Authorization` header. No message built here contains them, nor the username.
//!
//! **Trust** is the agent's, which is a Go program using `crypto/x509`: unless the Cluster says `insecure: true`,
//! the server's certificate must verify against the system's roots plus `additionalTrustBundle` (either may be
//! empty), for the URL's host. As in Go, a certificate of the bundle that the server presents as its own is
//! trusted as itself, whatever its CA flag: a self-signed certificate given as the bundle is enough. The request,
//! and so the credentials, is only written after the handshake verified; a server that fails verification gets
//! nothing but a TLS alert.
//!
//! **The authenticated read** is `GET /api/nutanix/v3/users/me`: it answers the caller's own user, so it needs no
//! permission beyond being authenticated (any role can read itself), it reads one small object, it has no side
//! effect, and the v3 API is served by every Prism Central release the agent supports. A 401 or 403 there means the
//! credentials are refused, whatever the account may do elsewhere.
//!
//! **Registration** is the lookup CAREN makes before it uninstalls:
//! `GET /karbon/v1-alpha.1/k8s/cluster-registrations/<uid of the workload cluster's kube-system Namespace>`; 200 is
//! registered, 404 is not.

use std::{
    fmt,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine;
use http_body_util::Empty;
use hyper::body::Bytes;
use k8s_openapi::{ByteString, api::core::v1::Secret, jiff::Timestamp};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tokio::{net::TcpStream, time::Instant};
use tracing::Instrument;

use crate::{
    domain::{ClusterKey, PrismCentral, Trigger},
    executor::humanize,
};

/// The authenticated read the preflight makes (see the module documentation for why this one).
pub const AUTH_CHECK_PATH: &str = "/api/nutanix/v3/users/me";
/// The registration lookup, followed by the kube-system Namespace's uid.
pub const REGISTRATION_PATH_PREFIX: &str = "/karbon/v1-alpha.1/k8s/cluster-registrations/";
/// The User-Agent of every request to Prism Central.
const USER_AGENT: &str = concat!("konnector-executor/", env!("CARGO_PKG_VERSION"));
/// At most this many Clusters' last preflight are remembered; the oldest is forgotten first. Far above any real
/// management cluster, it only bounds memory if Clusters come and go without an uninstall ever completing.
pub const MAX_REMEMBERED_PREFLIGHTS: usize = 4096;

/// What ApplyAgent does with the preflight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PreflightMode {
    /// Do not contact Prism Central at all (no preflight, no registration lookup).
    Off,
    /// Check, and report a failure as a note in the answer and a Warning Event on the Cluster; apply anyway.
    #[default]
    Warn,
    /// Check, and refuse to apply when the check fails.
    Block,
}

/// Prism Central credentials, read from the credentials Secret. `Debug` shows the kind only.
#[derive(Clone)]
pub enum Credentials {
    /// `username` and `password`: HTTP basic authentication.
    Basic {
        /// The username.
        username: String,
        /// The password.
        password: String,
    },
    /// `apiKey`: Prism Central's API-key header.
    ApiKey(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Basic { .. } => "Credentials::Basic(<redacted>)",
            Self::ApiKey(_) => "Credentials::ApiKey(<redacted>)",
        })
    }
}

impl Credentials {
    /// The credentials a Secret holds; `None` when it holds no usable kind (the caller has validated it already and
    /// reports that itself). The username and password are used exactly as stored, since that is what reaches the
    /// agent: a stray newline from `--from-file` makes the check fail as the agent would. The API key is trimmed,
    /// as CAREN trims it.
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        let raw = |key: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|ByteString(v)| String::from_utf8_lossy(v).into_owned())
                .filter(|v| !v.trim().is_empty())
        };
        match (raw("username"), raw("password"), raw("apiKey")) {
            (Some(username), Some(password), None) => Some(Self::Basic { username, password }),
            (None, None, Some(key)) => Some(Self::ApiKey(key.trim().to_owned())),
            _ => None,
        }
    }

    fn header(&self) -> (&'static str, String) {
        match self {
            Self::Basic { username, password } => (
                "authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
                ),
            ),
            Self::ApiKey(key) => ("x-ntnx-api-key", key.clone()),
        }
    }
}

/// What was unexpected about an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unexpected {
    /// This HTTP status.
    Status(u16),
    /// HTTP 200, but not JSON: a web server that is not Prism Central's API.
    NotJson,
    /// The connection closed without an HTTP answer.
    NoAnswer,
}

/// The step a check was at when it failed or ran out of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Resolving the host name.
    Resolve,
    /// Opening the TCP connection.
    Connect,
    /// The TLS handshake.
    Tls,
    /// Sending the request and waiting for the answer.
    Request,
    /// Waiting for the shared check of this Prism Central (`prism_shared`), which did not answer within the
    /// bound. Only reached if a probe's own bound failed.
    Shared,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Resolve => "resolving its name",
            Self::Connect => "connecting",
            Self::Tls => "the TLS handshake",
            Self::Request => "waiting for its answer",
            Self::Shared => "waiting for the check already under way",
        })
    }
}

/// Why a check of Prism Central failed. Each variant is one thing a person fixes differently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PreflightFailure {
    /// `additionalTrustBundle` is not base64-encoded PEM certificates.
    TrustBundle,
    /// The host name does not resolve.
    Dns,
    /// Nothing accepted the TCP connection.
    Connect,
    /// The TLS handshake failed; the reason is a fixed phrase.
    Tls {
        /// E.g. "its certificate is not signed by a trusted CA".
        reason: &'static str,
    },
    /// Prism Central refused the credentials.
    Unauthorized {
        /// 401 or 403.
        status: u16,
    },
    /// Prism Central answered something else than the check expects.
    UnexpectedAnswer(Unexpected),
    /// The check did not finish within its bound.
    Timeout {
        /// The bound.
        after: Duration,
        /// Where it was.
        step: Step,
    },
    /// The host is not in the executor's `--prism-central-allowed-hosts`; nothing was sent to it.
    NotAllowed,
}

impl PreflightFailure {
    /// A stable, machine-readable name: what the status report and metrics carry.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TrustBundle => "TRUST_BUNDLE",
            Self::Dns => "DNS",
            Self::Connect => "CONNECT",
            Self::Tls { .. } => "TLS",
            Self::Unauthorized { .. } => "UNAUTHORIZED",
            Self::UnexpectedAnswer { .. } => "UNEXPECTED_ANSWER",
            Self::Timeout { .. } => "TIMEOUT",
            Self::NotAllowed => "NOT_ALLOWED",
        }
    }

    /// Whether retrying later may help without anyone changing anything (the network, not the configuration).
    pub fn transient(&self) -> bool {
        matches!(self, Self::Connect | Self::Timeout { .. })
    }

    /// One deterministic, secret-free sentence about `endpoint` (`host:port`).
    pub fn describe(&self, endpoint: &str) -> String {
        match self {
            Self::TrustBundle => format!(
                "cannot check Prism Central {endpoint}: nutanix.prismCentralEndpoint.additionalTrustBundle is not base64-encoded PEM certificates"
            ),
            Self::Dns => format!(
                "Prism Central {endpoint} is not reachable: its host name does not resolve; check nutanix.prismCentralEndpoint.url and the management cluster's DNS"
            ),
            Self::Connect => format!(
                "Prism Central {endpoint} is not reachable: the connection was refused or failed; check the URL's port and the network between the management cluster and Prism Central"
            ),
            Self::Tls { reason } => format!(
                "Prism Central {endpoint} failed TLS verification: {reason}; the credentials were not sent; check nutanix.prismCentralEndpoint.additionalTrustBundle (or insecure)"
            ),
            Self::Unauthorized { status } => format!(
                "Prism Central {endpoint} refused the credentials (HTTP {status} to GET {AUTH_CHECK_PATH}); check the username and password in the credentials Secret"
            ),
            Self::UnexpectedAnswer(what) => {
                let answer = match what {
                    Unexpected::Status(status @ 300..=399) => {
                        format!("HTTP {status}, a redirect, which is not followed")
                    }
                    Unexpected::Status(status) => format!("HTTP {status}"),
                    Unexpected::NotJson => "HTTP 200 but not JSON".to_owned(),
                    Unexpected::NoAnswer => "the connection closed without an HTTP answer".to_owned(),
                };
                format!(
                    "Prism Central {endpoint} gave an unexpected answer to GET {AUTH_CHECK_PATH} ({answer}); is the URL Prism Central's?"
                )
            }
            Self::Timeout { after, step } => format!(
                "Prism Central {endpoint} did not answer within {} (while {step})",
                humanize_short(*after)
            ),
            Self::NotAllowed => format!(
                "Prism Central {endpoint} is not among the executor's allowed Prism Central hosts (--prism-central-allowed-hosts); nothing was sent to it; check nutanix.prismCentralEndpoint.url or the executor's allow-list"
            ),
        }
    }
}

/// `5s`, or `1500ms` for bounds under a minute that are not whole seconds (tests use short bounds).
fn humanize_short(d: Duration) -> String {
    if d.subsec_millis() != 0 && d < Duration::from_secs(60) {
        format!("{}ms", d.as_millis())
    } else {
        humanize(d)
    }
}

/// `host:port`, an IPv6 host in brackets: how every message names Prism Central.
pub fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Which Prism Central hosts the executor may contact (`--prism-central-allowed-hosts`): empty allows every host.
/// An entry is a host name or address, compared without case, or `*.domain` for any name under `domain`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    /// The allow-list of `entries` (blank ones ignored); empty allows every host.
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(entries: I) -> Self {
        Self(
            entries
                .into_iter()
                .map(|e| e.as_ref().trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|e| !e.is_empty())
                .collect(),
        )
    }

    /// Whether `host` (as the Cluster's URL names it) may be contacted.
    pub fn allows(&self, host: &str) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.0.iter().any(|entry| match entry.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|label| label.len() > 1 && label.ends_with('.')),
            None => *entry == host,
        })
    }
}

/// Where and how to reach Prism Central, derived from the Cluster's `prismCentralEndpoint`.
#[derive(Clone, Debug)]
pub struct Target {
    host: String,
    port: u16,
    /// Verify with this; `None` is the Cluster's `insecure: true`.
    verifier: Option<Arc<AgentVerifier>>,
}

impl Target {
    /// Applies the agent's rule: `insecure: true` verifies nothing; otherwise the certificate must verify against
    /// the system's roots plus `additionalTrustBundle` (see the module documentation).
    pub fn new(pc: &PrismCentral) -> Result<Self, PreflightFailure> {
        let verifier = if pc.insecure {
            None
        } else {
            let bundle = if pc.trust_bundle.trim().is_empty() {
                Vec::new()
            } else {
                certs_from_bundle(&pc.trust_bundle)?
            };
            Some(Arc::new(AgentVerifier::new(bundle)?))
        };
        Ok(Self {
            host: pc.host.clone(),
            port: pc.port,
            verifier,
        })
    }

    /// `host:port`, IPv6 in brackets: how messages name the endpoint.
    pub fn endpoint(&self) -> String {
        endpoint(&self.host, self.port)
    }

    /// Whether the server certificate is verified.
    pub fn verifies(&self) -> bool {
        self.verifier.is_some()
    }
}

/// The certificates of a base64-encoded PEM bundle; at least one.
fn certs_from_bundle(bundle: &str) -> Result<Vec<CertificateDer<'static>>, PreflightFailure> {
    let compact: String = bundle.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| PreflightFailure::TrustBundle)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| PreflightFailure::TrustBundle)?;
    if certs.is_empty() {
        return Err(PreflightFailure::TrustBundle);
    }
    Ok(certs)
}

/// The system's trust anchors, read once: what Go's `crypto/x509` reads on Linux (the distribution's bundle, or
/// `SSL_CERT_FILE`/`SSL_CERT_DIR`). Unreadable or unparsable entries are skipped, as Go skips them.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            tracing::debug!(
                errors = found.errors.len(),
                "no system CA certificates found; Prism Central is verified against additionalTrustBundle only"
            );
        }
        found.certs
    })
}

/// The agent's verification (Go's `crypto/x509`, as the module documentation describes), for rustls.
#[derive(Debug)]
struct AgentVerifier {
    /// Chains to the system's roots or a certificate of the bundle.
    chains: Arc<dyn ServerCertVerifier>,
    /// The bundle's certificates, each trusted as itself when the server presents it.
    bundle: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl AgentVerifier {
    fn new(bundle: Vec<CertificateDer<'static>>) -> Result<Self, PreflightFailure> {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(system_roots().iter().cloned());
        for cert in &bundle {
            roots
                .add(cert.clone())
                .map_err(|_| PreflightFailure::TrustBundle)?;
        }
        let provider = provider();
        let chains: Arc<dyn ServerCertVerifier> = if roots.is_empty() {
            // No anchor at all (no bundle, and a system without CA certificates): nothing can verify.
            Arc::new(Untrusted)
        } else {
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|_| PreflightFailure::TrustBundle)?
        };
        Ok(Self {
            chains,
            bundle,
            provider,
        })
    }

    /// Go's rule for a leaf that is itself a root: a chain of one, with its validity period, its extended key
    /// usage (server authentication, when it restricts any) and its names still checked.
    fn verify_pinned(
        &self,
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError;
        use x509_parser::prelude::{FromDer, X509Certificate};
        let bad = |e: CertificateError| rustls::Error::InvalidCertificate(e);
        let (_, cert) =
            X509Certificate::from_der(end_entity.as_ref()).map_err(|_| bad(CertificateError::BadEncoding))?;
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        if now < cert.validity().not_before.timestamp() {
            return Err(bad(CertificateError::NotValidYet));
        }
        if now > cert.validity().not_after.timestamp() {
            return Err(bad(CertificateError::Expired));
        }
        if let Ok(Some(eku)) = cert.extended_key_usage()
            && !eku.value.any
            && !eku.value.server_auth
        {
            return Err(bad(CertificateError::InvalidPurpose));
        }
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_name(&parsed, server_name)?;
        Ok(ServerCertVerified::assertion())
    }
}

impl ServerCertVerifier for AgentVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.bundle.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            return self.verify_pinned(end_entity, server_name, now);
        }
        self.chains
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Refuses every chain: verification with no trust anchor at all.
#[derive(Debug)]
struct Untrusted;

impl ServerCertVerifier for Untrusted {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

/// The parts of an HTTP answer the checks look at.
#[derive(Clone, Copy, Debug)]
struct Answer {
    status: u16,
    json: bool,
}

/// One GET to Prism Central; the body is not read.
async fn get(
    target: &Target,
    credentials: &Credentials,
    path: &str,
    bound: Duration,
) -> Result<Answer, PreflightFailure> {
    let deadline = Instant::now() + bound;
    let timeout = |step| PreflightFailure::Timeout { after: bound, step };
    let addrs: Vec<SocketAddr> = tokio::time::timeout_at(
        deadline,
        tokio::net::lookup_host((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| timeout(Step::Resolve))?
    .map_err(|_| PreflightFailure::Dns)?
    .collect();
    if addrs.is_empty() {
        return Err(PreflightFailure::Dns);
    }
    // Every address is tried in turn within the one deadline; the last failure is the one reported.
    let mut tcp = None;
    for addr in &addrs {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => return Err(timeout(Step::Connect)),
            Ok(Ok(s)) => {
                tcp = Some(s);
                break;
            }
            Ok(Err(_)) => {}
        }
    }
    let tcp = tcp.ok_or(PreflightFailure::Connect)?;

    let server_name = ServerName::try_from(target.host.clone()).map_err(|_| PreflightFailure::Dns)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(target)));
    let tls = match tokio::time::timeout_at(deadline, connector.connect(server_name, tcp)).await {
        Err(_) => return Err(timeout(Step::Tls)),
        Ok(Err(e)) => {
            return Err(PreflightFailure::Tls {
                reason: tls_reason(&e),
            });
        }
        Ok(Ok(s)) => s,
    };

    let (name, value) = credentials.header();
    let request = http::Request::get(path)
        .header(http::header::HOST, target.endpoint())
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, USER_AGENT)
        .header(name, value)
        .body(Empty::<Bytes>::new())
        // Only a header value that is not valid (e.g. a control character in the API key) fails here.
        .map_err(|_| PreflightFailure::UnexpectedAnswer(Unexpected::NoAnswer))?;
    let exchange = async {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        // The connection task ends when the answer is read and `sender` is dropped, or with the deadline below.
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let answer = sender.send_request(request).await;
        driver.abort();
        answer
    };
    match tokio::time::timeout_at(deadline, exchange).await {
        Err(_) => Err(timeout(Step::Request)),
        // The server closed or broke the connection instead of answering.
        Ok(Err(_)) => Err(PreflightFailure::UnexpectedAnswer(Unexpected::NoAnswer)),
        Ok(Ok(answer)) => Ok(Answer {
            status: answer.status().as_u16(),
            json: answer
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().contains("json")),
        }),
    }
}

/// A fixed phrase for a failed handshake, from the rustls error inside the I/O error.
fn tls_reason(error: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error as TlsError};
    match error.get_ref().and_then(|e| e.downcast_ref::<TlsError>()) {
        Some(TlsError::InvalidCertificate(c)) => match c {
            CertificateError::UnknownIssuer => {
                "its certificate is not signed by a CA in additionalTrustBundle or the system's roots"
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "its certificate does not name the URL's host"
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "its certificate has expired"
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "its certificate is not valid yet"
            }
            _ => "its certificate was refused",
        },
        Some(TlsError::AlertReceived(_)) => "it ended the handshake with an alert",
        Some(_) => "the handshake failed",
        None => "the connection closed during the handshake (is it a TLS endpoint?)",
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(target: &Target) -> ClientConfig {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    match &target.verifier {
        Some(verifier) => builder
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth(),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth(),
    }
}

/// The agent's `insecure` mode: any certificate is accepted (signatures over the handshake are still checked).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What the preflight found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PreflightVerdict {
    /// Reachable, TLS as configured, and the credentials authenticate.
    Passed,
    /// Reachable and TLS as configured; API-key credentials are not checked (see [`preflight`]).
    PassedWithoutAuthentication,
    /// A check failed.
    Failed(PreflightFailure),
}

/// The preflight: resolve, connect, TLS as the agent will, then the authenticated read, all within `bound`.
///
/// API-key credentials are sent as Prism Central's `X-ntnx-api-key` header only to check reachability and TLS: this
/// executor has no Prism Central release at hand that documents which v3 reads accept API keys, so a refusal would
/// not prove the key wrong. For them, any HTTP answer passes the reachability check, and the result says the
/// credentials were not checked.
pub async fn preflight(pc: &PrismCentral, credentials: &Credentials, bound: Duration) -> PreflightVerdict {
    let target = match Target::new(pc) {
        Ok(t) => t,
        Err(f) => return PreflightVerdict::Failed(f),
    };
    let span = tracing::debug_span!("prism_central_preflight", endpoint = %target.endpoint(), verify_tls = target.verifies());
    let answer = get(&target, credentials, AUTH_CHECK_PATH, bound)
        .instrument(span)
        .await;
    let failed = PreflightVerdict::Failed;
    match (answer, credentials) {
        (Err(f), _) => failed(f),
        (Ok(_), Credentials::ApiKey(_)) => PreflightVerdict::PassedWithoutAuthentication,
        (
            Ok(Answer {
                status: 200,
                json: true,
            }),
            _,
        ) => PreflightVerdict::Passed,
        (Ok(Answer { status: 200, .. }), _) => {
            failed(PreflightFailure::UnexpectedAnswer(Unexpected::NotJson))
        }
        (
            Ok(Answer {
                status: status @ (401 | 403),
                ..
            }),
            _,
        ) => failed(PreflightFailure::Unauthorized { status }),
        (Ok(Answer { status, .. }), _) => {
            failed(PreflightFailure::UnexpectedAnswer(Unexpected::Status(status)))
        }
    }
}

/// Whether Prism Central lists a cluster as registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Registration {
    /// Listed.
    Registered,
    /// Not listed (404).
    NotRegistered,
    /// Could not be determined; the reason is a deterministic, secret-free sentence.
    Unknown(String),
}

/// Asks Prism Central whether the cluster whose kube-system Namespace has uid `cluster_uuid` is registered.
pub async fn registration(
    pc: &PrismCentral,
    credentials: &Credentials,
    cluster_uuid: &str,
    bound: Duration,
) -> Registration {
    let target = match Target::new(pc) {
        Ok(t) => t,
        Err(f) => return Registration::Unknown(f.describe(&endpoint(&pc.host, pc.port))),
    };
    let endpoint = target.endpoint();
    // The uid comes from the workload cluster's API server; only a UUID's characters may reach the path.
    if cluster_uuid.is_empty() || !cluster_uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Registration::Unknown(
            "the workload cluster's kube-system Namespace has no usable uid".to_owned(),
        );
    }
    let path = format!("{REGISTRATION_PATH_PREFIX}{cluster_uuid}");
    let span = tracing::debug_span!("prism_central_registration", endpoint = %endpoint);
    match get(&target, credentials, &path, bound)
        .instrument(span)
        .await
        .map(|a| a.status)
    {
        Ok(200) => Registration::Registered,
        Ok(404) => Registration::NotRegistered,
        Ok(status @ (401 | 403)) => Registration::Unknown(format!(
            "Prism Central {endpoint} refused the credentials (HTTP {status} to the registration lookup)"
        )),
        Ok(status) => Registration::Unknown(format!(
            "Prism Central {endpoint} answered HTTP {status} to the registration lookup"
        )),
        Err(f) => Registration::Unknown(f.describe(&endpoint)),
    }
}

/// The last preflight of one Cluster, as GetAgentStatus reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreflightRecord {
    /// The uid of the Cluster it ran for; a re-created Cluster does not inherit it.
    pub cluster_uid: String,
    /// When it finished.
    pub checked_at: Timestamp,
    /// The hook it ran for.
    pub trigger: Trigger,
    /// What it found.
    pub verdict: PreflightVerdict,
    /// One deterministic, secret-free sentence.
    pub message: String,
}

/// The last preflight per Cluster, bounded by [`MAX_REMEMBERED_PREFLIGHTS`], forgotten when a Cluster's uninstall
/// completes.
#[derive(Default)]
pub(crate) struct PreflightMemory {
    records: Mutex<std::collections::HashMap<ClusterKey, PreflightRecord>>,
}

impl PreflightMemory {
    pub(crate) fn remember(&self, key: &ClusterKey, record: PreflightRecord) {
        // A panic while holding this lock cannot leave the map inconsistent, so poisoning is ignored.
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() >= MAX_REMEMBERED_PREFLIGHTS
            && !records.contains_key(key)
            && let Some(oldest) = records
                .iter()
                .min_by_key(|(_, r)| r.checked_at)
                .map(|(k, _)| k.clone())
        {
            records.remove(&oldest);
        }
        records.insert(key.clone(), record);
    }

    pub(crate) fn last(&self, key: &ClusterKey, cluster_uid: &str) -> Option<PreflightRecord> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.get(key).filter(|r| r.cluster_uid == cluster_uid).cloned()
    }

    pub(crate) fn forget(&self, key: &ClusterKey) {
        self.records.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.records.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(uid: &str, at: i64) -> PreflightRecord {
        PreflightRecord {
            cluster_uid: uid.into(),
            checked_at: Timestamp::from_second(at).unwrap(),
            trigger: Trigger::Unspecified,
            verdict: PreflightVerdict::Passed,
            message: String::new(),
        }
    }

    #[test]
    fn memory_is_bounded_and_forgets() {
        let m = PreflightMemory::default();
        for i in 0..=MAX_REMEMBERED_PREFLIGHTS {
            let key = ClusterKey::new("ns", &format!("c{i}")).unwrap();
            m.remember(&key, record("u", i as i64 + 1));
        }
        assert_eq!(m.len(), MAX_REMEMBERED_PREFLIGHTS);
        // The oldest went first.
        assert!(m.last(&ClusterKey::new("ns", "c0").unwrap(), "u").is_none());
        let last = ClusterKey::new("ns", &format!("c{MAX_REMEMBERED_PREFLIGHTS}")).unwrap();
        assert!(m.last(&last, "u").is_some());
        // Another uid (the Cluster was re-created) sees nothing.
        assert!(m.last(&last, "other").is_none());
        m.forget(&last);
        assert!(m.last(&last, "u").is_none());
    }

    #[test]
    fn credentials_never_print() {
        let c = Credentials::Basic {
            username: "admin".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{c:?}").contains("admin"));
        assert!(!format!("{:?}", Credentials::ApiKey("k3y".into())).contains("k3y"));
    }

    #[test]
    fn messages_are_fixed_and_name_the_endpoint_only() {
        let e = "pc.example.com:9440";
        for f in [
            PreflightFailure::TrustBundle,
            PreflightFailure::Dns,
            PreflightFailure::Connect,
            PreflightFailure::Tls { reason: "x" },
            PreflightFailure::Unauthorized { status: 401 },
            PreflightFailure::UnexpectedAnswer(Unexpected::Status(500)),
            PreflightFailure::UnexpectedAnswer(Unexpected::NotJson),
            PreflightFailure::UnexpectedAnswer(Unexpected::NoAnswer),
            PreflightFailure::Timeout {
                after: Duration::from_secs(5),
                step: Step::Tls,
            },
        ] {
            let m = f.describe(e);
            assert!(m.contains(e), "{m}");
            assert_eq!(m, f.describe(e));
        }
        assert!(
            PreflightFailure::Timeout {
                after: Duration::from_millis(1500),
                step: Step::Request
            }
            .describe(e)
            .ends_with("within 1500ms (while waiting for its answer)")
        );
    }

    #[test]
    fn bundles() {
        let pc = |insecure: bool, bundle: &str| PrismCentral {
            host: "h".into(),
            port: 9440,
            insecure,
            trust_bundle: bundle.into(),
        };
        // Only the Cluster's insecure: true turns verification off; without a bundle the system's roots verify.
        assert!(Target::new(&pc(false, "")).unwrap().verifies());
        assert!(!Target::new(&pc(true, "bm90IGEgYnVuZGxl")).unwrap().verifies());
        assert_eq!(
            Target::new(&pc(false, "%%%")).unwrap_err(),
            PreflightFailure::TrustBundle
        );
        // Base64 of text without a certificate.
        assert_eq!(
            Target::new(&pc(false, "bm90IGEgYnVuZGxl")).unwrap_err(),
            PreflightFailure::TrustBundle
        );
    }
}
