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
    limits::humanize,
};

mod trust;
mod wire;

use trust::{AgentVerifier, certs_from_bundle, client_config};
use wire::{Answer, get};

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
        crate::limits::make_room(
            &mut records,
            key,
            MAX_REMEMBERED_PREFLIGHTS,
            |_| false,
            |r| r.checked_at,
        );
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
mod tests;
