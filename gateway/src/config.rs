//! The gateway's validated configuration.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use crate::capi::FailurePolicy;
use crate::catalog::{CapiVersion, Hook};

/// The default request body limit: 2 MiB.
///
/// A hook request carries one Cluster object (plus, for BeforeClusterUpgrade, a few version strings). The API
/// server stores no object larger than etcd's default request limit of 1.5 MiB, so a real hook body is always
/// smaller than 2 MiB, while 20 MiB bodies times a few dozen concurrent requests would exceed the gateway's
/// 128 MiB memory limit.
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 2 * 1024 * 1024;

/// The default bound on request bodies held at once, all connections together: 32 MiB, sixteen bodies at the limit
/// (a quarter of the chart's 128 MiB memory limit).
pub const DEFAULT_MAX_BUFFERED_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Timeout and failure policy advertised for one handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HookPolicy {
    /// `timeoutSeconds`, 1–30. The executor call's deadline fits inside it.
    pub timeout_seconds: u32,
    /// `failurePolicy`.
    pub failure_policy: FailurePolicy,
}

/// The per-hook policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HookPolicies {
    /// AfterControlPlaneInitialized.
    pub after_control_plane_initialized: HookPolicy,
    /// BeforeClusterUpgrade.
    pub before_cluster_upgrade: HookPolicy,
    /// BeforeClusterDelete.
    pub before_cluster_delete: HookPolicy,
}

impl HookPolicies {
    /// The policy for `hook`.
    pub fn get(&self, hook: Hook) -> HookPolicy {
        match hook {
            Hook::AfterControlPlaneInitialized => self.after_control_plane_initialized,
            Hook::BeforeClusterUpgrade => self.before_cluster_upgrade,
            Hook::BeforeClusterDelete => self.before_cluster_delete,
        }
    }
}

impl Default for HookPolicies {
    fn default() -> Self {
        let fail = |timeout_seconds| HookPolicy {
            timeout_seconds,
            failure_policy: FailurePolicy::Fail,
        };
        Self {
            after_control_plane_initialized: fail(20),
            before_cluster_upgrade: fail(20),
            before_cluster_delete: fail(10),
        }
    }
}

/// How the gateway reaches the executor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecutorTransport {
    /// gRPC over TLS, verifying the executor against `ca`, optionally presenting a client certificate (mTLS).
    Tls {
        /// PEM CA bundle the executor's certificate must chain to.
        ca: PathBuf,
        /// Client certificate and key, for mTLS.
        client_identity: Option<(PathBuf, PathBuf)>,
        /// Name to verify the executor's certificate against, when it differs from the URL host.
        server_name: Option<String>,
    },
    /// Plaintext gRPC. Accepted only when the URL host is a loopback address or `localhost`.
    PlaintextLoopback,
}

/// The executor's address and transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutorEndpoint {
    /// `https://host:port` (TLS) or `http://127.0.0.1:port` (plaintext loopback).
    pub url: String,
    /// Transport security.
    pub transport: ExecutorTransport,
}

/// Everything the gateway needs besides its listener and serving certificate.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Path prefix in front of `/hooks.runtime.cluster.x-k8s.io/...`: empty, or `/`-led without a trailing `/`.
    pub path_prefix: String,
    /// The CAPI release the gateway serves; Discovery advertises only hooks it knows.
    pub capi_version: CapiVersion,
    /// Per-hook timeouts and failure policies.
    pub hooks: HookPolicies,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// Hook requests handled at once (decoded and calling the executor); further ones wait, within their deadline,
    /// for a turn. A turn is taken only once the body has been read, so slow uploads never hold one. CAPI calls
    /// hooks from its controllers' workers, 10 per controller by default.
    pub max_concurrent_requests: usize,
    /// Turns (of `max_concurrent_requests`) one connection may hold at once: CAPI multiplexes its calls over few
    /// HTTP/2 connections, and one client must not take every turn.
    pub max_requests_per_connection: usize,
    /// Bytes of request bodies held at once, all requests together. A body takes room as its bytes arrive and
    /// waits (within its read timeout) when there is none, so bodies cost at most this much memory whatever the
    /// number of connections and streams.
    pub max_buffered_body_bytes: usize,
    /// How long a request body may take to arrive, from the moment its headers did (and never beyond the hook's
    /// deadline).
    pub body_read_timeout: Duration,
    /// Open connections; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub max_concurrent_streams: u32,
    /// Largest header block: HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`, and the HTTP/1.1 read buffer.
    pub max_header_bytes: u32,
    /// How long a client may take to send request headers (HTTP/1.1) and to finish the TLS handshake; also how
    /// long a new connection may stay silent before its first request.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight (HTTP/1.1 keep-alive or an idle HTTP/2
    /// connection) before it is closed.
    pub idle_timeout: Duration,
    /// Subtracted from a hook's timeout to get the executor call's deadline, leaving time to answer.
    pub deadline_margin: Duration,
    /// How long in-flight requests may run after shutdown is requested.
    pub shutdown_grace: Duration,
    /// How often the serving certificate files are checked for changes.
    pub cert_reload_interval: Duration,
    /// The executor.
    pub executor: ExecutorEndpoint,
}

impl GatewayConfig {
    /// A configuration with the documented defaults and the given executor.
    pub fn new(executor: ExecutorEndpoint) -> Self {
        Self {
            path_prefix: String::new(),
            capi_version: CapiVersion::new(1, 14),
            hooks: HookPolicies::default(),
            body_limit_bytes: DEFAULT_BODY_LIMIT_BYTES,
            max_concurrent_requests: 16,
            max_requests_per_connection: 8,
            max_buffered_body_bytes: DEFAULT_MAX_BUFFERED_BODY_BYTES,
            body_read_timeout: Duration::from_secs(10),
            max_connections: 128,
            max_concurrent_streams: 32,
            max_header_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            deadline_margin: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(25),
            cert_reload_interval: Duration::from_secs(5),
            executor,
        }
    }

    /// Checks every field and normalises the path prefix. Every error names the flag-level problem.
    pub fn validate(mut self) -> anyhow::Result<Self> {
        self.path_prefix = normalize_prefix(&self.path_prefix)?;
        for hook in Hook::ALL {
            let t = self.hooks.get(hook).timeout_seconds;
            anyhow::ensure!(
                (1..=30).contains(&t),
                "timeout for {hook} must be between 1 and 30 seconds (CAPI rejects anything else), got {t}"
            );
        }
        anyhow::ensure!(
            self.body_limit_bytes > 0,
            "the request body limit must be positive"
        );
        anyhow::ensure!(
            !self.header_read_timeout.is_zero()
                && !self.idle_timeout.is_zero()
                && !self.body_read_timeout.is_zero(),
            "the header read, body read and idle timeouts must be positive"
        );
        anyhow::ensure!(
            self.max_concurrent_requests > 0
                && self.max_requests_per_connection > 0
                && self.max_connections > 0
                && self.max_concurrent_streams > 0,
            "the request, per-connection request, connection and stream limits must be positive"
        );
        anyhow::ensure!(
            self.max_buffered_body_bytes >= self.body_limit_bytes,
            "the buffered body bytes ({}) must be at least the body limit ({}), or a body at the limit never fits",
            self.max_buffered_body_bytes,
            self.body_limit_bytes
        );
        anyhow::ensure!(
            self.max_header_bytes >= 8192,
            "the header limit must be at least 8192 bytes (HTTP/1.1's smallest read buffer)"
        );
        validate_executor(&self.executor)?;
        Ok(self)
    }

    /// The executor deadline for `hook`, also capped by CAPI's `?timeout=` when it is smaller.
    pub fn executor_deadline(&self, hook: Hook, caller_timeout: Option<Duration>) -> Duration {
        let advertised = Duration::from_secs(u64::from(self.hooks.get(hook).timeout_seconds));
        let budget = caller_timeout.map_or(advertised, |c| c.min(advertised));
        // Keep at least half the budget even when the margin is larger than the budget.
        budget.saturating_sub(self.deadline_margin).max(budget / 2)
    }
}

fn normalize_prefix(prefix: &str) -> anyhow::Result<String> {
    let trimmed = prefix.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    anyhow::ensure!(
        trimmed.starts_with('/'),
        "path prefix {prefix:?} must start with '/'"
    );
    anyhow::ensure!(
        !trimmed.contains(['?', '#', ' ', '{', '}', '*']) && !trimmed.contains("//"),
        "path prefix {prefix:?} must be a plain path (no query, fragment, wildcard or empty segment)"
    );
    Ok(trimmed.to_owned())
}

fn validate_executor(executor: &ExecutorEndpoint) -> anyhow::Result<()> {
    let uri: http::Uri = executor
        .url
        .parse()
        .map_err(|e| anyhow::anyhow!("executor URL {:?} does not parse: {e}", executor.url))?;
    let host = uri
        .host()
        .ok_or_else(|| anyhow::anyhow!("executor URL {:?} has no host", executor.url))?;
    match (uri.scheme_str(), &executor.transport) {
        (Some("https"), ExecutorTransport::Tls { .. }) => Ok(()),
        (Some("http"), ExecutorTransport::PlaintextLoopback) => {
            anyhow::ensure!(
                is_loopback_host(host),
                "plaintext to the executor is allowed only on loopback, but {host:?} is not a loopback address"
            );
            Ok(())
        }
        (Some("http"), ExecutorTransport::Tls { .. }) => anyhow::bail!(
            "executor URL {:?} is plaintext http: use https with --executor-ca, or, for an executor on this host \
             only, pass --executor-plaintext-loopback",
            executor.url
        ),
        (Some("https"), ExecutorTransport::PlaintextLoopback) => anyhow::bail!(
            "--executor-plaintext-loopback needs an http:// executor URL, got {:?}",
            executor.url
        ),
        _ => anyhow::bail!(
            "executor URL {:?} must use https (or http on loopback)",
            executor.url
        ),
    }
}

/// Whether `host` (as in a URL, IPv6 possibly bracketed) is `localhost` or a loopback IP.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plaintext(url: &str) -> ExecutorEndpoint {
        ExecutorEndpoint {
            url: url.into(),
            transport: ExecutorTransport::PlaintextLoopback,
        }
    }

    fn tls(url: &str) -> ExecutorEndpoint {
        ExecutorEndpoint {
            url: url.into(),
            transport: ExecutorTransport::Tls {
                ca: "ca.crt".into(),
                client_identity: None,
                server_name: None,
            },
        }
    }

    #[test]
    fn plaintext_only_on_loopback_with_the_flag() {
        assert!(
            GatewayConfig::new(plaintext("http://127.0.0.1:9000"))
                .validate()
                .is_ok()
        );
        assert!(
            GatewayConfig::new(plaintext("http://[::1]:9000"))
                .validate()
                .is_ok()
        );
        assert!(
            GatewayConfig::new(plaintext("http://localhost:9000"))
                .validate()
                .is_ok()
        );
        let err = GatewayConfig::new(plaintext("http://10.0.0.1:9000"))
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        let err = GatewayConfig::new(tls("http://127.0.0.1:9000"))
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("--executor-plaintext-loopback"), "{err}");
        assert!(
            GatewayConfig::new(tls("https://executor.konnector.svc:9000"))
                .validate()
                .is_ok()
        );
        assert!(
            GatewayConfig::new(plaintext("https://127.0.0.1:9000"))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn timeouts_are_range_checked() {
        for bad in [0, 31] {
            let mut c = GatewayConfig::new(plaintext("http://127.0.0.1:1"));
            c.hooks.before_cluster_delete.timeout_seconds = bad;
            assert!(c.validate().is_err());
        }
    }

    #[test]
    fn prefixes_normalise() {
        assert_eq!(normalize_prefix("").unwrap(), "");
        assert_eq!(normalize_prefix("/").unwrap(), "");
        assert_eq!(normalize_prefix("/capi/").unwrap(), "/capi");
        assert!(normalize_prefix("capi").is_err());
        assert!(normalize_prefix("/a?b").is_err());
    }

    #[test]
    fn deadline_fits_inside_the_timeout() {
        let c = GatewayConfig::new(plaintext("http://127.0.0.1:1"));
        assert_eq!(
            c.executor_deadline(Hook::BeforeClusterDelete, None),
            Duration::from_secs(8)
        );
        assert_eq!(
            c.executor_deadline(Hook::BeforeClusterDelete, Some(Duration::from_secs(5))),
            Duration::from_secs(3)
        );
        assert_eq!(
            c.executor_deadline(Hook::BeforeClusterDelete, Some(Duration::from_secs(1))),
            Duration::from_millis(500)
        );
    }
}
