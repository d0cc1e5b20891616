//! Command-line flags (each also settable from the environment) and their translation into [`GatewayConfig`].

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use konnector_runtime::telemetry::LogArgs;

use crate::capi::FailurePolicy;
use crate::catalog::CapiVersion;
use crate::config::{ExecutorEndpoint, ExecutorTransport, GatewayConfig, HookPolicies, HookPolicy};
use crate::server::TlsFiles;

/// konnector gateway: serves the CAPI Runtime SDK hooks over HTTPS and forwards them to the executor.
#[derive(Parser, Debug, Clone)]
#[command(name = "konnector-gateway", version)]
pub struct Args {
    /// Address of the HTTPS hook listener.
    #[arg(long, env = "KONNECTOR_LISTEN", default_value = "0.0.0.0:9443")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP admin listener (/livez, /readyz, /metrics).
    #[arg(long, env = "KONNECTOR_ADMIN_LISTEN", default_value = "0.0.0.0:8081")]
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
    /// Seconds between checks of the certificate files for changes.
    #[arg(long, env = "KONNECTOR_CERT_RELOAD_SECONDS", default_value_t = 5)]
    pub cert_reload_seconds: u64,
    /// Path prefix in front of /hooks.runtime.cluster.x-k8s.io/… (the path of the ExtensionConfig's URL or service).
    #[arg(long, env = "KONNECTOR_PATH_PREFIX", default_value = "")]
    pub path_prefix: String,
    /// The CAPI release being served (v1.<minor>); Discovery advertises only hooks that release knows.
    #[arg(long, env = "KONNECTOR_CAPI_VERSION", default_value = "v1.10")]
    pub capi_version: CapiVersion,
    /// timeoutSeconds advertised for AfterControlPlaneInitialized (1–30).
    #[arg(long, env = "KONNECTOR_ACPI_TIMEOUT_SECONDS", default_value_t = 20)]
    pub acpi_timeout_seconds: u32,
    /// failurePolicy advertised for AfterControlPlaneInitialized.
    #[arg(long, env = "KONNECTOR_ACPI_FAILURE_POLICY", value_enum, default_value_t = FailurePolicy::Fail)]
    pub acpi_failure_policy: FailurePolicy,
    /// timeoutSeconds advertised for BeforeClusterUpgrade (1–30).
    #[arg(long, env = "KONNECTOR_BCU_TIMEOUT_SECONDS", default_value_t = 20)]
    pub bcu_timeout_seconds: u32,
    /// failurePolicy advertised for BeforeClusterUpgrade.
    #[arg(long, env = "KONNECTOR_BCU_FAILURE_POLICY", value_enum, default_value_t = FailurePolicy::Fail)]
    pub bcu_failure_policy: FailurePolicy,
    /// timeoutSeconds advertised for BeforeClusterDelete (1–30).
    #[arg(long, env = "KONNECTOR_BCD_TIMEOUT_SECONDS", default_value_t = 10)]
    pub bcd_timeout_seconds: u32,
    /// failurePolicy advertised for BeforeClusterDelete.
    #[arg(long, env = "KONNECTOR_BCD_FAILURE_POLICY", value_enum, default_value_t = FailurePolicy::Fail)]
    pub bcd_failure_policy: FailurePolicy,
    /// Largest accepted request body, in bytes (see GatewayConfig::body_limit_bytes for why 2 MiB).
    #[arg(long, env = "KONNECTOR_BODY_LIMIT_BYTES", default_value_t = crate::config::DEFAULT_BODY_LIMIT_BYTES)]
    pub body_limit_bytes: usize,
    /// Hook requests handled at once; more wait, inside their hook's deadline, for a turn.
    #[arg(long, env = "KONNECTOR_MAX_CONCURRENT_REQUESTS", default_value_t = 16)]
    pub max_concurrent_requests: usize,
    /// Open HTTPS connections; further connections wait in the listen backlog.
    #[arg(long, env = "KONNECTOR_MAX_CONNECTIONS", default_value_t = 128)]
    pub max_connections: usize,
    /// HTTP/2 streams a client may open at once on one connection.
    #[arg(long, env = "KONNECTOR_MAX_CONCURRENT_STREAMS", default_value_t = 32)]
    pub max_concurrent_streams: u32,
    /// Largest request header block, in bytes (HTTP/2 header list size and HTTP/1.1 header buffer).
    #[arg(long, env = "KONNECTOR_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: u32,
    /// Seconds a connection may stay open with no request in flight before it is closed.
    #[arg(long, env = "KONNECTOR_IDLE_TIMEOUT_SECONDS", default_value_t = 60)]
    pub idle_timeout_seconds: u64,
    /// Seconds a client may take for the TLS handshake and for sending request headers.
    #[arg(long, env = "KONNECTOR_HEADER_READ_TIMEOUT_SECONDS", default_value_t = 10)]
    pub header_read_timeout_seconds: u64,
    /// Milliseconds kept back from each hook's timeout when calling the executor, to leave time to answer.
    #[arg(long, env = "KONNECTOR_DEADLINE_MARGIN_MS", default_value_t = 2000)]
    pub deadline_margin_ms: u64,
    /// Seconds in-flight requests may run after SIGTERM.
    #[arg(long, env = "KONNECTOR_SHUTDOWN_GRACE_SECONDS", default_value_t = 25)]
    pub shutdown_grace_seconds: u64,
    /// The executor's gRPC URL, e.g. https://konnector-executor.konnector-system.svc:9090.
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

impl Args {
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
        let policy = |timeout_seconds, failure_policy| HookPolicy {
            timeout_seconds,
            failure_policy,
        };
        let mut config = GatewayConfig::new(ExecutorEndpoint {
            url: self.executor_url.clone(),
            transport,
        });
        config.path_prefix = self.path_prefix.clone();
        config.capi_version = self.capi_version;
        config.hooks = HookPolicies {
            after_control_plane_initialized: policy(self.acpi_timeout_seconds, self.acpi_failure_policy),
            before_cluster_upgrade: policy(self.bcu_timeout_seconds, self.bcu_failure_policy),
            before_cluster_delete: policy(self.bcd_timeout_seconds, self.bcd_failure_policy),
        };
        config.body_limit_bytes = self.body_limit_bytes;
        config.header_read_timeout = Duration::from_secs(self.header_read_timeout_seconds);
        config.max_concurrent_requests = self.max_concurrent_requests;
        config.max_connections = self.max_connections;
        config.max_concurrent_streams = self.max_concurrent_streams;
        config.max_header_bytes = self.max_header_bytes;
        config.idle_timeout = Duration::from_secs(self.idle_timeout_seconds);
        config.deadline_margin = Duration::from_millis(self.deadline_margin_ms);
        config.shutdown_grace = Duration::from_secs(self.shutdown_grace_seconds);
        config.cert_reload_interval = Duration::from_secs(self.cert_reload_seconds);
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
            "--executor-url=http://127.0.0.1:9090",
            "--executor-plaintext-loopback",
            "--capi-version=v1.12",
            "--bcd-failure-policy=Ignore",
            "--path-prefix=/capi/",
        ])
        .unwrap();
        let config = args.gateway_config().unwrap();
        assert_eq!(config.path_prefix, "/capi");
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
            "--executor-url=http://127.0.0.1:9090",
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
            Args::try_parse_from(["konnector-gateway", "--executor-url=https://executor:9090"]).unwrap();
        assert!(
            args.gateway_config()
                .unwrap_err()
                .to_string()
                .contains("--executor-ca")
        );
        let args = Args::try_parse_from([
            "konnector-gateway",
            "--executor-url=http://127.0.0.1:9090",
            "--executor-plaintext-loopback",
            "--acpi-timeout-seconds=31",
        ])
        .unwrap();
        assert!(args.gateway_config().is_err());
        assert!(
            Args::try_parse_from([
                "konnector-gateway",
                "--executor-url=x",
                "--acpi-failure-policy=Maybe"
            ])
            .is_err()
        );
    }
}
