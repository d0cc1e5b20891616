//! Command-line flags (each also settable from the environment) and their translation into [`GatewayConfig`].
//!
//! The executor's flags (`konnector_executor::args`) follow the same rules: the same thing has the same name in
//! both binaries (`--listen`, `--admin-listen`, `--tls-*`, `--client-ca`, `--log-*`); every duration is one
//! `humantime` value (`20s`, `1m30s`, `500ms`); names are spelled out. A renamed flag keeps its old name, hidden,
//! for one release: it still works, and the binary logs a deprecation warning at start-up
//! ([`Args::deprecations`]).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use konnector_runtime::telemetry::LogArgs;

use crate::capi::FailurePolicy;
use crate::catalog::CapiVersion;
use crate::config::{ExecutorEndpoint, ExecutorTransport, GatewayConfig, HookPolicies, HookPolicy};
use crate::server::TlsFiles;

/// konnector gateway: serves the CAPI Runtime SDK hooks over HTTPS and forwards them to the executor.
#[derive(Parser, Debug, Clone)]
#[command(name = "konnector-gateway", version = konnector_runtime::VERSION)]
pub struct Args {
    /// Address of the HTTPS hook listener. `[::]` accepts IPv4 too; a host without IPv6 falls back to 0.0.0.0.
    #[arg(long, env = "KONNECTOR_LISTEN", default_value = "[::]:9443")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP admin listener (/livez, /readyz, /metrics); `[::]` as for --listen.
    #[arg(long, env = "KONNECTOR_ADMIN_LISTEN", default_value = "[::]:8081")]
    pub admin_listen: SocketAddr,
    /// PEM serving certificate; re-read when it changes on disk.
    #[arg(
        long,
        env = "KONNECTOR_TLS_CERT",
        default_value = "/etc/konnector/tls/tls.crt"
    )]
    pub tls_cert: PathBuf,
    /// PEM serving key; re-read when it changes on disk.
    #[arg(long, env = "KONNECTOR_TLS_KEY", default_value = "/etc/konnector/tls/tls.key")]
    pub tls_key: PathBuf,
    /// PEM CA bundle for client certificates; when set, CAPI must present one (mTLS).
    #[arg(long, env = "KONNECTOR_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// How often the certificate files are checked for changes (e.g. 5s).
    #[arg(long, env = "KONNECTOR_CERT_RELOAD_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub cert_reload_interval: Duration,
    /// Deprecated (one release): --cert-reload-interval in whole seconds.
    #[arg(
        long,
        env = "KONNECTOR_CERT_RELOAD_SECONDS",
        hide = true,
        conflicts_with = "cert_reload_interval"
    )]
    pub cert_reload_seconds: Option<u64>,
    /// Path prefix in front of /hooks.runtime.cluster.x-k8s.io/… (the path of the ExtensionConfig's URL or service).
    #[arg(long, env = "KONNECTOR_PATH_PREFIX", default_value = "")]
    pub path_prefix: String,
    /// The CAPI release being served (v1.<minor>); Discovery advertises only hooks that release knows. The default
    /// is the newest release tested (the chart's too); the three hooks konnector serves exist since v1.10.
    #[arg(long, env = "KONNECTOR_CAPI_VERSION", default_value = "v1.14")]
    pub capi_version: CapiVersion,
    /// timeoutSeconds advertised for AfterControlPlaneInitialized: whole seconds, 1s to 30s.
    #[arg(long, env = "KONNECTOR_AFTER_CONTROL_PLANE_INITIALIZED_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub after_control_plane_initialized_timeout: Duration,
    /// failurePolicy advertised for AfterControlPlaneInitialized.
    #[arg(long, env = "KONNECTOR_AFTER_CONTROL_PLANE_INITIALIZED_FAILURE_POLICY", value_enum, default_value_t = FailurePolicy::Fail)]
    pub after_control_plane_initialized_failure_policy: FailurePolicy,
    /// timeoutSeconds advertised for BeforeClusterUpgrade: whole seconds, 1s to 30s.
    #[arg(long, env = "KONNECTOR_BEFORE_CLUSTER_UPGRADE_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub before_cluster_upgrade_timeout: Duration,
    /// failurePolicy advertised for BeforeClusterUpgrade.
    #[arg(long, env = "KONNECTOR_BEFORE_CLUSTER_UPGRADE_FAILURE_POLICY", value_enum, default_value_t = FailurePolicy::Fail)]
    pub before_cluster_upgrade_failure_policy: FailurePolicy,
    /// timeoutSeconds advertised for BeforeClusterDelete: whole seconds, 1s to 30s.
    #[arg(long, env = "KONNECTOR_BEFORE_CLUSTER_DELETE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub before_cluster_delete_timeout: Duration,
    /// failurePolicy advertised for BeforeClusterDelete.
    #[arg(long, env = "KONNECTOR_BEFORE_CLUSTER_DELETE_FAILURE_POLICY", value_enum, default_value_t = FailurePolicy::Fail)]
    pub before_cluster_delete_failure_policy: FailurePolicy,
    /// Deprecated (one release): the per-hook flags under their old abbreviations (acpi, bcu, bcd).
    #[command(flatten)]
    pub deprecated_hooks: DeprecatedHookFlags,
    /// Largest accepted request body, in bytes (see GatewayConfig::body_limit_bytes for why 2 MiB).
    #[arg(long, env = "KONNECTOR_BODY_LIMIT_BYTES", default_value_t = crate::config::DEFAULT_BODY_LIMIT_BYTES)]
    pub body_limit_bytes: usize,
    /// Hook requests handled at once; more wait, inside their hook's deadline, for a turn.
    #[arg(long, env = "KONNECTOR_MAX_CONCURRENT_REQUESTS", default_value_t = 16)]
    pub max_concurrent_requests: usize,
    /// Of those, how many one connection may hold at once, so one client cannot take every turn.
    #[arg(long, env = "KONNECTOR_MAX_REQUESTS_PER_CONNECTION", default_value_t = 8)]
    pub max_requests_per_connection: usize,
    /// Request bodies held in memory at once, all connections together, in bytes; a body waits for room as it
    /// arrives.
    #[arg(long, env = "KONNECTOR_MAX_BUFFERED_BODY_BYTES", default_value_t = crate::config::DEFAULT_MAX_BUFFERED_BODY_BYTES)]
    pub max_buffered_body_bytes: usize,
    /// How long a client may take to send a request body once its headers arrived (e.g. 10s).
    #[arg(long, env = "KONNECTOR_BODY_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub body_read_timeout: Duration,
    /// Open HTTPS connections; further connections wait in the listen backlog.
    #[arg(long, env = "KONNECTOR_MAX_CONNECTIONS", default_value_t = 128)]
    pub max_connections: usize,
    /// HTTP/2 streams a client may open at once on one connection.
    #[arg(long, env = "KONNECTOR_MAX_CONCURRENT_STREAMS", default_value_t = 32)]
    pub max_concurrent_streams: u32,
    /// Largest request header block, in bytes (HTTP/2 header list size and HTTP/1.1 header buffer).
    #[arg(long, env = "KONNECTOR_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: u32,
    /// How long a connection may stay open with no request in flight before it is closed (e.g. 60s).
    #[arg(long, env = "KONNECTOR_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// How long a client may take for the TLS handshake and for sending request headers (e.g. 10s).
    #[arg(long, env = "KONNECTOR_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
    /// Deprecated (one release): --header-read-timeout in whole seconds.
    #[arg(
        long,
        env = "KONNECTOR_HEADER_READ_TIMEOUT_SECONDS",
        hide = true,
        conflicts_with = "header_read_timeout"
    )]
    pub header_read_timeout_seconds: Option<u64>,
    /// Kept back from each hook's timeout when calling the executor, to leave time to answer (e.g. 2s).
    #[arg(long, env = "KONNECTOR_DEADLINE_MARGIN", default_value = "2s", value_parser = humantime::parse_duration)]
    pub deadline_margin: Duration,
    /// Deprecated (one release): --deadline-margin in milliseconds.
    #[arg(
        long,
        env = "KONNECTOR_DEADLINE_MARGIN_MS",
        hide = true,
        conflicts_with = "deadline_margin"
    )]
    pub deadline_margin_ms: Option<u64>,
    /// How long in-flight requests may run after SIGTERM (e.g. 25s).
    #[arg(long, env = "KONNECTOR_SHUTDOWN_GRACE", default_value = "25s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Deprecated (one release): --shutdown-grace in whole seconds.
    #[arg(
        long,
        env = "KONNECTOR_SHUTDOWN_GRACE_SECONDS",
        hide = true,
        conflicts_with = "shutdown_grace"
    )]
    pub shutdown_grace_seconds: Option<u64>,
    /// The executor's gRPC URL, e.g. https://konnector-executor.konnector-system.svc:8090.
    #[arg(long, env = "KONNECTOR_EXECUTOR_URL")]
    pub executor_url: String,
    /// PEM CA bundle the executor's certificate must chain to (required unless plaintext loopback).
    #[arg(long, env = "KONNECTOR_EXECUTOR_CA")]
    pub executor_ca: Option<PathBuf>,
    /// PEM client certificate presented to the executor (mTLS); needs --executor-client-key.
    #[arg(
        long,
        env = "KONNECTOR_EXECUTOR_CLIENT_CERT",
        requires = "executor_client_key"
    )]
    pub executor_client_cert: Option<PathBuf>,
    /// PEM client key for --executor-client-cert.
    #[arg(
        long,
        env = "KONNECTOR_EXECUTOR_CLIENT_KEY",
        requires = "executor_client_cert"
    )]
    pub executor_client_key: Option<PathBuf>,
    /// Name to verify the executor's certificate against, when it differs from the URL host.
    #[arg(long, env = "KONNECTOR_EXECUTOR_SERVER_NAME")]
    pub executor_server_name: Option<String>,
    /// Talk plaintext gRPC to an executor on loopback (http://127.0.0.1:…). Refused for any other host.
    #[arg(long, env = "KONNECTOR_EXECUTOR_PLAINTEXT_LOOPBACK", default_value_t = false)]
    pub executor_plaintext_loopback: bool,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// The per-hook flags under the names of the previous release, hidden, kept for one release. They took integer
/// seconds, which is why they are separate flags rather than aliases of the duration flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DeprecatedHookFlags {
    /// Deprecated: --after-control-plane-initialized-timeout.
    #[arg(
        long,
        env = "KONNECTOR_ACPI_TIMEOUT_SECONDS",
        hide = true,
        conflicts_with = "after_control_plane_initialized_timeout"
    )]
    pub acpi_timeout_seconds: Option<u32>,
    /// Deprecated: --after-control-plane-initialized-failure-policy.
    #[arg(
        long,
        env = "KONNECTOR_ACPI_FAILURE_POLICY",
        hide = true,
        value_enum,
        conflicts_with = "after_control_plane_initialized_failure_policy"
    )]
    pub acpi_failure_policy: Option<FailurePolicy>,
    /// Deprecated: --before-cluster-upgrade-timeout.
    #[arg(
        long,
        env = "KONNECTOR_BCU_TIMEOUT_SECONDS",
        hide = true,
        conflicts_with = "before_cluster_upgrade_timeout"
    )]
    pub bcu_timeout_seconds: Option<u32>,
    /// Deprecated: --before-cluster-upgrade-failure-policy.
    #[arg(
        long,
        env = "KONNECTOR_BCU_FAILURE_POLICY",
        hide = true,
        value_enum,
        conflicts_with = "before_cluster_upgrade_failure_policy"
    )]
    pub bcu_failure_policy: Option<FailurePolicy>,
    /// Deprecated: --before-cluster-delete-timeout.
    #[arg(
        long,
        env = "KONNECTOR_BCD_TIMEOUT_SECONDS",
        hide = true,
        conflicts_with = "before_cluster_delete_timeout"
    )]
    pub bcd_timeout_seconds: Option<u32>,
    /// Deprecated: --before-cluster-delete-failure-policy.
    #[arg(
        long,
        env = "KONNECTOR_BCD_FAILURE_POLICY",
        hide = true,
        value_enum,
        conflicts_with = "before_cluster_delete_failure_policy"
    )]
    pub bcd_failure_policy: Option<FailurePolicy>,
}

/// A hook timeout as CAPI's `timeoutSeconds`: whole seconds (the range is checked with the rest of the config).
fn whole_seconds(flag: &str, d: Duration) -> anyhow::Result<u32> {
    anyhow::ensure!(
        d.subsec_nanos() == 0,
        "--{flag} must be whole seconds (CAPI's timeoutSeconds), got {}",
        humantime::format_duration(d)
    );
    u32::try_from(d.as_secs()).map_err(|_| anyhow::anyhow!("--{flag} is too large"))
}

impl Args {
    /// One warning per deprecated flag (or environment variable) that was used, naming its replacement. The
    /// binaries log these at start-up, through the configured log format.
    pub fn deprecations(&self) -> Vec<String> {
        let d = &self.deprecated_hooks;
        [
            (
                self.cert_reload_seconds.is_some(),
                "cert-reload-seconds",
                "cert-reload-interval",
            ),
            (
                d.acpi_timeout_seconds.is_some(),
                "acpi-timeout-seconds",
                "after-control-plane-initialized-timeout",
            ),
            (
                d.acpi_failure_policy.is_some(),
                "acpi-failure-policy",
                "after-control-plane-initialized-failure-policy",
            ),
            (
                d.bcu_timeout_seconds.is_some(),
                "bcu-timeout-seconds",
                "before-cluster-upgrade-timeout",
            ),
            (
                d.bcu_failure_policy.is_some(),
                "bcu-failure-policy",
                "before-cluster-upgrade-failure-policy",
            ),
            (
                d.bcd_timeout_seconds.is_some(),
                "bcd-timeout-seconds",
                "before-cluster-delete-timeout",
            ),
            (
                d.bcd_failure_policy.is_some(),
                "bcd-failure-policy",
                "before-cluster-delete-failure-policy",
            ),
            (
                self.header_read_timeout_seconds.is_some(),
                "header-read-timeout-seconds",
                "header-read-timeout",
            ),
            (
                self.deadline_margin_ms.is_some(),
                "deadline-margin-ms",
                "deadline-margin",
            ),
            (
                self.shutdown_grace_seconds.is_some(),
                "shutdown-grace-seconds",
                "shutdown-grace",
            ),
        ]
        .into_iter()
        .filter(|(used, _, _)| *used)
        .map(|(_, old, new)| konnector_runtime::telemetry::deprecation(old, new))
        .collect()
    }

    /// The gateway configuration these flags describe, validated.
    pub fn gateway_config(&self) -> anyhow::Result<GatewayConfig> {
        let transport = if self.executor_plaintext_loopback {
            anyhow::ensure!(
                self.executor_ca.is_none() && self.executor_client_cert.is_none(),
                "--executor-plaintext-loopback cannot be combined with --executor-ca or --executor-client-cert"
            );
            ExecutorTransport::PlaintextLoopback
        } else {
            let ca = self.executor_ca.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "--executor-ca is required: the gateway verifies the executor's certificate \
                     (or pass --executor-plaintext-loopback for an executor on this host)"
                )
            })?;
            ExecutorTransport::Tls {
                ca,
                client_identity: self
                    .executor_client_cert
                    .clone()
                    .zip(self.executor_client_key.clone()),
                server_name: self.executor_server_name.clone(),
            }
        };
        let d = &self.deprecated_hooks;
        let policy = |flag: &str,
                      timeout,
                      old_timeout: Option<u32>,
                      failure_policy,
                      old_policy: Option<FailurePolicy>| {
            anyhow::Ok(HookPolicy {
                timeout_seconds: match old_timeout {
                    Some(seconds) => seconds,
                    None => whole_seconds(flag, timeout)?,
                },
                failure_policy: old_policy.unwrap_or(failure_policy),
            })
        };
        let mut config = GatewayConfig::new(ExecutorEndpoint {
            url: self.executor_url.clone(),
            transport,
        });
        config.path_prefix = self.path_prefix.clone();
        config.capi_version = self.capi_version;
        config.hooks = HookPolicies {
            after_control_plane_initialized: policy(
                "after-control-plane-initialized-timeout",
                self.after_control_plane_initialized_timeout,
                d.acpi_timeout_seconds,
                self.after_control_plane_initialized_failure_policy,
                d.acpi_failure_policy,
            )?,
            before_cluster_upgrade: policy(
                "before-cluster-upgrade-timeout",
                self.before_cluster_upgrade_timeout,
                d.bcu_timeout_seconds,
                self.before_cluster_upgrade_failure_policy,
                d.bcu_failure_policy,
            )?,
            before_cluster_delete: policy(
                "before-cluster-delete-timeout",
                self.before_cluster_delete_timeout,
                d.bcd_timeout_seconds,
                self.before_cluster_delete_failure_policy,
                d.bcd_failure_policy,
            )?,
        };
        config.body_limit_bytes = self.body_limit_bytes;
        config.header_read_timeout = self
            .header_read_timeout_seconds
            .map_or(self.header_read_timeout, Duration::from_secs);
        config.deadline_margin = self
            .deadline_margin_ms
            .map_or(self.deadline_margin, Duration::from_millis);
        config.shutdown_grace = self
            .shutdown_grace_seconds
            .map_or(self.shutdown_grace, Duration::from_secs);
        config.cert_reload_interval = self
            .cert_reload_seconds
            .map_or(self.cert_reload_interval, Duration::from_secs);
        config.max_concurrent_requests = self.max_concurrent_requests;
        config.max_requests_per_connection = self.max_requests_per_connection;
        config.max_buffered_body_bytes = self.max_buffered_body_bytes;
        config.body_read_timeout = self.body_read_timeout;
        config.max_connections = self.max_connections;
        config.max_concurrent_streams = self.max_concurrent_streams;
        config.max_header_bytes = self.max_header_bytes;
        config.idle_timeout = self.idle_timeout;
        config.validate()
    }

    /// The serving certificate files.
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            client_ca: self.client_ca.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_build_a_config() {
        let args = Args::try_parse_from([
            "konnector-gateway",
            "--executor-url=http://127.0.0.1:8090",
            "--executor-plaintext-loopback",
            "--capi-version=v1.12",
            "--before-cluster-delete-failure-policy=Ignore",
            "--before-cluster-upgrade-timeout=30s",
            "--deadline-margin=1500ms",
            "--path-prefix=/capi/",
        ])
        .unwrap();
        assert!(args.deprecations().is_empty());
        let config = args.gateway_config().unwrap();
        assert_eq!(config.path_prefix, "/capi");
        assert_eq!(config.hooks.before_cluster_upgrade.timeout_seconds, 30);
        assert_eq!(config.deadline_margin, Duration::from_millis(1500));
        assert_eq!(config.capi_version, CapiVersion::new(1, 12));
        assert_eq!(
            config.hooks.before_cluster_delete.failure_policy,
            FailurePolicy::Ignore
        );
    }

    #[test]
    fn defaults_match_the_config_defaults() {
        let args = Args::try_parse_from([
            "konnector-gateway",
            "--executor-url=http://127.0.0.1:8090",
            "--executor-plaintext-loopback",
        ])
        .unwrap();
        let from_flags = args.gateway_config().unwrap();
        let default = GatewayConfig::new(from_flags.executor.clone())
            .validate()
            .unwrap();
        assert_eq!(format!("{from_flags:?}"), format!("{default:?}"));
        assert!(from_flags.body_limit_bytes <= 2 * 1024 * 1024);
    }

    #[test]
    fn tls_needs_a_ca_and_timeouts_are_checked() {
        let args =
            Args::try_parse_from(["konnector-gateway", "--executor-url=https://executor:8090"]).unwrap();
        assert!(
            args.gateway_config()
                .unwrap_err()
                .to_string()
                .contains("--executor-ca")
        );
        let args = Args::try_parse_from([
            "konnector-gateway",
            "--executor-url=http://127.0.0.1:8090",
            "--executor-plaintext-loopback",
            "--after-control-plane-initialized-timeout=31s",
        ])
        .unwrap();
        assert!(args.gateway_config().is_err());
        let args = Args::try_parse_from([
            "konnector-gateway",
            "--executor-url=http://127.0.0.1:8090",
            "--executor-plaintext-loopback",
            "--before-cluster-delete-timeout=2500ms",
        ])
        .unwrap();
        let error = args.gateway_config().unwrap_err().to_string();
        assert!(error.contains("whole seconds"), "{error}");
        assert!(
            Args::try_parse_from([
                "konnector-gateway",
                "--executor-url=x",
                "--after-control-plane-initialized-failure-policy=Maybe"
            ])
            .is_err()
        );
        // Durations have one syntax: a bare number has no unit and is refused.
        assert!(
            Args::try_parse_from(["konnector-gateway", "--executor-url=x", "--shutdown-grace=25"]).is_err()
        );
    }

    #[test]
    fn old_names_still_work_for_one_release_and_say_so() {
        let args = Args::try_parse_from([
            "konnector-gateway",
            "--executor-url=http://127.0.0.1:8090",
            "--executor-plaintext-loopback",
            "--acpi-timeout-seconds=7",
            "--bcd-failure-policy=Ignore",
            "--deadline-margin-ms=900",
            "--cert-reload-seconds=3",
        ])
        .unwrap();
        let warnings = args.deprecations();
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(
            warnings.iter().any(|w| w.contains("--acpi-timeout-seconds")
                && w.contains("--after-control-plane-initialized-timeout")),
            "{warnings:?}"
        );
        let config = args.gateway_config().unwrap();
        assert_eq!(config.hooks.after_control_plane_initialized.timeout_seconds, 7);
        assert_eq!(
            config.hooks.before_cluster_delete.failure_policy,
            FailurePolicy::Ignore
        );
        assert_eq!(config.deadline_margin, Duration::from_millis(900));
        assert_eq!(config.cert_reload_interval, Duration::from_secs(3));
        // Old and new name together is a mistake, not a silent choice.
        assert!(
            Args::try_parse_from([
                "konnector-gateway",
                "--executor-url=x",
                "--acpi-timeout-seconds=7",
                "--after-control-plane-initialized-timeout=8s",
            ])
            .is_err()
        );
    }

    #[test]
    fn version_names_the_git_revision() {
        let err = Args::try_parse_from(["konnector-gateway", "--version"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayVersion);
        let text = err.to_string();
        assert!(text.contains(konnector_runtime::GIT_REVISION), "{text}");
        assert!(text.contains(konnector_runtime::VERSION), "{text}");
    }
}
