//! Command-line flags (each also settable from the environment) and their translation into [`ExecutorConfig`].
//!
//! They follow the gateway's rules (`konnector_gateway::args`): the same names for the same things (`--listen`,
//! `--admin-listen`, `--tls-*`, `--client-ca`, `--log-*`), one `humantime` syntax for every duration, and a
//! renamed flag keeps its old name, hidden, for one release, with a warning at start-up ([`Args::deprecations`]).

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Parser;
use konnector_runtime::{telemetry::LogArgs, tls};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::{
    config::{ExecutorConfig, ReconcileConfig, ServerOptions, UninstallTimeoutPolicy, UpgradeConfigPolicy},
    leader::LeaseConfig,
    names,
    prism::PreflightMode,
};

/// konnector executor: does the Konnector Agent addon's work for one cluster per gRPC call.
#[derive(Debug, Clone, Parser)]
#[command(name = "konnector-executor", version = konnector_runtime::VERSION)]
pub struct Args {
    /// Address of the gRPC listener. `[::]` accepts IPv4 too; a host without IPv6 falls back to 0.0.0.0.
    #[arg(long, env = "KONNECTOR_LISTEN", default_value = "[::]:8090")]
    pub listen: SocketAddr,
    /// Deprecated (one release): --listen.
    #[arg(long, env = "KONNECTOR_GRPC_ADDR", hide = true, conflicts_with = "listen")]
    pub grpc_addr: Option<SocketAddr>,
    /// Address of the plain-HTTP admin listener (/livez, /readyz, /metrics); `[::]` as for --listen.
    #[arg(long, env = "KONNECTOR_ADMIN_LISTEN", default_value = "[::]:8091")]
    pub admin_listen: SocketAddr,
    /// Deprecated (one release): --admin-listen.
    #[arg(
        long,
        env = "KONNECTOR_ADMIN_ADDR",
        hide = true,
        conflicts_with = "admin_listen"
    )]
    pub admin_addr: Option<SocketAddr>,
    /// PEM certificate chain of the gRPC server. With --tls-key, the server speaks TLS only.
    #[arg(long, env = "KONNECTOR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the gRPC server.
    #[arg(long, env = "KONNECTOR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle that client certificates must chain to (mutual TLS). Requires --tls-cert.
    #[arg(long, env = "KONNECTOR_CLIENT_CA", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// With --client-ca: the DNS names (comma-separated) of which a client certificate must carry one as a
    /// subjectAltName to call every RPC. The client CA may sign other identities than the gateway's: a name in
    /// --client-read-only-names may only read, any other is refused at the handshake. Empty: any certificate the
    /// client CA signed. The chart issues the gateway's client certificate with its name.
    #[arg(
        long,
        env = "KONNECTOR_CLIENT_ALLOWED_NAMES",
        value_delimiter = ',',
        default_value = "konnector-gateway"
    )]
    pub client_allowed_names: Vec<String>,
    /// With --client-ca: the DNS names (comma-separated) of read-only clients. A client certificate that carries
    /// one of them (and none of --client-allowed-names) may call GetAgentStatus, PlanAgent, health and reflection
    /// only, and is answered PERMISSION_DENIED for anything else. The chart issues the konnector CLI's certificate
    /// (`<release>-cli`) with its name and passes it here. Empty: no read-only identity.
    #[arg(long, env = "KONNECTOR_CLIENT_READ_ONLY_NAMES", value_delimiter = ',')]
    pub client_read_only_names: Vec<String>,
    /// Serve gRPC server reflection (v1 and v1alpha), which grpcurl uses to list and call the services without the
    /// proto files (the examples in docs/reference.md and the sandbox's). `--reflection=false` turns it off.
    #[arg(long, env = "KONNECTOR_REFLECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub reflection: bool,
    /// How often the certificate, key and client CA files are checked for changes; rotations are picked up
    /// without a restart (e.g. 5s).
    #[arg(long, env = "KONNECTOR_CERT_RELOAD_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub cert_reload_interval: Duration,
    /// Time allowed for a client's TLS handshake (e.g. 10s).
    #[arg(long, env = "KONNECTOR_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub tls_handshake_timeout: Duration,
    /// Open gRPC connections at most; further ones wait in the listen backlog.
    #[arg(long, env = "KONNECTOR_MAX_CONNECTIONS", default_value_t = 64)]
    pub max_connections: usize,
    /// Requests served at once per connection.
    #[arg(long, env = "KONNECTOR_MAX_CONCURRENT_REQUESTS", default_value_t = 64)]
    pub max_concurrent_requests: usize,
    /// Bound on each gRPC request, whatever deadline the caller sent (e.g. 60s).
    #[arg(long, env = "KONNECTOR_REQUEST_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Connections are closed gracefully after this age, so clients re-handshake with rotated certificates (e.g.
    /// 30m).
    #[arg(long, env = "KONNECTOR_MAX_CONNECTION_AGE", default_value = "30m", value_parser = humantime::parse_duration)]
    pub max_connection_age: Duration,
    /// Bound on connecting to, and on each read and write of, the management API server (e.g. 10s).
    #[arg(long, env = "KONNECTOR_MANAGEMENT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub management_timeout: Duration,
    /// Allow plaintext gRPC on a non-loopback address. Only for a network you trust completely.
    #[arg(long, env = "KONNECTOR_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
    /// Kubeconfig of the management cluster. Default: in-cluster config, then $KUBECONFIG / ~/.kube/config.
    #[arg(long, env = "KONNECTOR_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the helm-addons and values-template ConfigMaps.
    #[arg(long, env = "KONNECTOR_DEFAULTS_NAMESPACE", default_value = "default")]
    pub defaults_namespace: String,
    /// ConfigMap holding the chart coordinates under key `konnector-agent`.
    #[arg(
        long,
        env = "KONNECTOR_HELM_ADDONS_CONFIGMAP",
        default_value = names::DEFAULT_HELM_ADDONS_CONFIGMAP
    )]
    pub helm_addons_configmap: String,
    /// ConfigMap holding the values template under key `values.yaml`.
    #[arg(
        long,
        env = "KONNECTOR_VALUES_TEMPLATE_CONFIGMAP",
        default_value = names::DEFAULT_VALUES_TEMPLATE_CONFIGMAP
    )]
    pub values_template_configmap: String,
    /// Chart name when the helm-addons ConfigMap is absent.
    #[arg(long, env = "KONNECTOR_DEFAULT_CHART_NAME", default_value = names::DEFAULT_CHART_NAME)]
    pub default_chart_name: String,
    /// Chart version when the helm-addons ConfigMap is absent.
    #[arg(long, env = "KONNECTOR_DEFAULT_CHART_VERSION", default_value = "1.3.0-rc.1")]
    pub default_chart_version: String,
    /// Chart repository when the helm-addons ConfigMap is absent.
    #[arg(
        long,
        env = "KONNECTOR_DEFAULT_REPOSITORY_URL",
        default_value = "https://mesosphere.github.io/charts/stable/"
    )]
    pub default_repository_url: String,
    /// The executor's own namespace: where the `helm-repository-tls` Secret of the in-cluster chart mirror lives.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub pod_namespace: String,
    /// How long the uninstall may take, from the HelmChartProxy's deletion (e.g. 5m, 90s).
    #[arg(long, env = "KONNECTOR_UNINSTALL_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub uninstall_timeout: Duration,
    /// What RemoveAgent answers after the uninstall timeout: let deletion proceed, or keep blocking it.
    #[arg(long, env = "KONNECTOR_UNINSTALL_TIMEOUT_POLICY", value_enum, default_value_t = UninstallTimeoutPolicy::Proceed)]
    pub uninstall_timeout_policy: UninstallTimeoutPolicy,
    /// What ApplyAgent answers at BeforeClusterUpgrade for a configuration problem: `warn` (Success, nothing
    /// written, a Warning Event; the upgrade proceeds) or `block` (Failure; the upgrade waits).
    #[arg(long, env = "KONNECTOR_UPGRADE_CONFIG_POLICY", value_enum, default_value_t = UpgradeConfigPolicy::Warn)]
    pub upgrade_config_policy: UpgradeConfigPolicy,
    /// How long a caller should wait before asking RemoveAgent again while the uninstall runs: whole seconds
    /// (it becomes the hook answer's retryAfterSeconds).
    #[arg(long, env = "KONNECTOR_RETRY_AFTER", default_value = "10s", value_parser = humantime::parse_duration)]
    pub retry_after: Duration,
    /// Deprecated (one release): --retry-after in whole seconds.
    #[arg(
        long,
        env = "KONNECTOR_RETRY_AFTER_SECONDS",
        hide = true,
        conflicts_with = "retry_after"
    )]
    pub retry_after_seconds: Option<u32>,
    /// Bound on connecting to, and on each call to, a workload cluster's API server (e.g. 5s).
    #[arg(long, env = "KONNECTOR_REMOTE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub remote_timeout: Duration,
    /// Most workload-cluster clients kept at once; the least recently used is dropped beyond it (each holds a
    /// connection pool, tens of KiB).
    #[arg(long, env = "KONNECTOR_WORKLOAD_CLIENT_CACHE_SIZE", default_value_t = 256)]
    pub workload_client_cache_size: usize,
    /// A workload-cluster client unused for this long is dropped (e.g. 10m).
    #[arg(long, env = "KONNECTOR_WORKLOAD_CLIENT_IDLE_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub workload_client_idle_timeout: Duration,
    /// Check Prism Central before ApplyAgent applies (resolves, TLS, credentials): off, warn (a note and a Warning
    /// Event, then apply anyway) or block (refuse to apply). Also turns the registration lookup of GetAgentStatus
    /// on or off.
    #[arg(long, env = "KONNECTOR_PRISM_CENTRAL_CHECKS", value_enum, default_value_t = PreflightMode::Warn)]
    pub prism_central_checks: PreflightMode,
    /// Bound on one whole check of Prism Central: resolve, connect, TLS and one request (e.g. 5s).
    #[arg(long, env = "KONNECTOR_PRISM_CENTRAL_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub prism_central_timeout: Duration,
    /// How long a passed Prism Central check is reused by every hook for the same endpoint, trust settings and
    /// credentials, instead of checking again (e.g. 2m). Rotated credentials are checked at once. 0s: only hooks
    /// that arrive while a check is under way share it.
    #[arg(long, env = "KONNECTOR_PRISM_CENTRAL_CHECK_TTL", default_value = "2m", value_parser = humantime::parse_duration)]
    pub prism_central_check_ttl: Duration,
    /// How long a failed Prism Central check is reused (e.g. 15s): shorter than a success, since a failure is
    /// usually being fixed, and with --prism-central-checks=block it refuses applies.
    #[arg(long, env = "KONNECTOR_PRISM_CENTRAL_CHECK_FAILURE_TTL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub prism_central_check_failure_ttl: Duration,
    /// With --prism-central-checks=warn, a Cluster's Warning Event about one failed check (the same Prism Central
    /// endpoint, the same kind of failure) is written at most once per this interval, not on every hook (e.g.
    /// 10m); another failure, or the same one after a passed check, is written at once. 0s: on every hook.
    #[arg(long, env = "KONNECTOR_PRISM_CENTRAL_WARNING_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub prism_central_warning_interval: Duration,
    /// Largest response body, in bytes, taken from a workload cluster's API server (for a watch: each event).
    /// Anyone who can write a Cluster's kubeconfig Secret chooses that server; a larger answer fails the call.
    #[arg(long, env = "KONNECTOR_WORKLOAD_RESPONSE_LIMIT_BYTES", default_value_t = crate::limits::DEFAULT_WORKLOAD_RESPONSE_LIMIT_BYTES, value_parser = clap::value_parser!(u64).range(1024..))]
    pub workload_response_limit_bytes: u64,
    /// Largest response body, in bytes, taken from the management cluster's API server (for a watch: each
    /// event).
    #[arg(long, env = "KONNECTOR_MANAGEMENT_RESPONSE_LIMIT_BYTES", default_value_t = crate::limits::DEFAULT_MANAGEMENT_RESPONSE_LIMIT_BYTES, value_parser = clap::value_parser!(u64).range(1024..))]
    pub management_response_limit_bytes: u64,
    /// The namespaces whose Clusters konnector serves (comma-separated; the chart's executor.clusterNamespaces,
    /// where its rights are confined). A hook for a Cluster elsewhere is answered without reading it: nothing to
    /// do, nothing to uninstall. Empty: every namespace.
    #[arg(long, env = "KONNECTOR_CLUSTER_NAMESPACES", value_delimiter = ',')]
    pub cluster_namespaces: Vec<String>,
    /// Prism Central hosts the executor may contact, comma-separated: host names or addresses, or `*.domain` for
    /// any name under a domain. A Cluster naming another host fails its preflight (NOT_ALLOWED) and nothing is
    /// sent to it. Empty (the default) allows any host.
    #[arg(long, env = "KONNECTOR_PRISM_CENTRAL_ALLOWED_HOSTS", value_delimiter = ',')]
    pub prism_central_allowed_hosts: Vec<String>,
    /// Budget, in bytes of JSON, for the copies of Clusters a hook uses instead of reading the Cluster when a
    /// metadata-only watch proves them current (the hook body's resourceVersion is the watch's and the copy's).
    /// 0: no watch, no copies, every hook reads its Cluster.
    #[arg(long, env = "KONNECTOR_HOOK_CLUSTER_CACHE_BYTES", default_value_t = crate::limits::DEFAULT_HOOK_CLUSTER_CACHE_BYTES)]
    pub hook_cluster_cache_bytes: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub log: LogArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub reconcile: ReconcileArgs,
}

impl Args {
    /// One warning per deprecated flag (or environment variable) that was used, naming its replacement. The
    /// binary logs these at start-up, through the configured log format.
    pub fn deprecations(&self) -> Vec<String> {
        [
            (self.grpc_addr.is_some(), "grpc-addr", "listen"),
            (self.admin_addr.is_some(), "admin-addr", "admin-listen"),
            (
                self.retry_after_seconds.is_some(),
                "retry-after-seconds",
                "retry-after",
            ),
        ]
        .into_iter()
        .filter(|(used, _, _)| *used)
        .map(|(_, old, new)| konnector_runtime::telemetry::deprecation(old, new))
        .collect()
    }

    /// The gRPC listener's address.
    pub fn listen_addr(&self) -> SocketAddr {
        self.grpc_addr.unwrap_or(self.listen)
    }

    /// The admin listener's address.
    pub fn admin_listen_addr(&self) -> SocketAddr {
        self.admin_addr.unwrap_or(self.admin_listen)
    }

    /// The executor configuration these flags describe.
    pub fn executor_config(&self) -> anyhow::Result<ExecutorConfig> {
        let retry_after_seconds = match self.retry_after_seconds {
            Some(seconds) => seconds,
            None => {
                anyhow::ensure!(
                    self.retry_after.subsec_nanos() == 0 && self.retry_after.as_secs() > 0,
                    "--retry-after must be whole seconds, at least 1s (it becomes retryAfterSeconds), got {}",
                    humantime::format_duration(self.retry_after)
                );
                u32::try_from(self.retry_after.as_secs()).context("--retry-after is too large")?
            }
        };
        Ok(ExecutorConfig {
            defaults_namespace: self.defaults_namespace.clone(),
            helm_addons_configmap: self.helm_addons_configmap.clone(),
            values_template_configmap: self.values_template_configmap.clone(),
            default_chart_name: self.default_chart_name.clone(),
            default_chart_version: self.default_chart_version.clone(),
            default_repository_url: self.default_repository_url.clone(),
            helm_repository_ca_namespace: self.pod_namespace.clone(),
            uninstall_timeout: self.uninstall_timeout,
            uninstall_timeout_policy: self.uninstall_timeout_policy,
            upgrade_config_policy: self.upgrade_config_policy,
            retry_after_seconds,
            remote_timeout: self.remote_timeout,
            workload_client_cache_size: self.workload_client_cache_size,
            workload_client_idle_timeout: self.workload_client_idle_timeout,
            prism_central_checks: self.prism_central_checks,
            prism_central_timeout: self.prism_central_timeout,
            prism_central_check_ttl: self.prism_central_check_ttl,
            prism_central_check_failure_ttl: self.prism_central_check_failure_ttl,
            prism_central_warning_interval: self.prism_central_warning_interval,
            workload_response_limit_bytes: self.workload_response_limit_bytes,
            management_response_limit_bytes: self.management_response_limit_bytes,
            cluster_namespaces: self
                .cluster_namespaces
                .iter()
                .filter(|n| !n.is_empty())
                .cloned()
                .collect(),
            prism_central_allowed_hosts: crate::prism::AllowedHosts::new(&self.prism_central_allowed_hosts),
            hook_cluster_cache_bytes: self.hook_cluster_cache_bytes,
        })
    }

    /// The gRPC TLS configuration, or `None` for plaintext. Refuses plaintext on a non-loopback address
    /// unless --insecure-plaintext is given. The files are loaded now (a bad file fails here, with its path) and
    /// re-read every --cert-reload-interval when they change.
    pub fn tls_config(&self) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
        self.tls_config_observed(&tls::TlsMetrics::default())
    }

    /// [`Args::tls_config`], keeping the expiry of the serving certificate and the client CA in `metrics`.
    fn tls_config_observed(
        &self,
        metrics: &tls::TlsMetrics,
    ) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            anyhow::ensure!(
                self.listen_addr().ip().is_loopback() || self.insecure_plaintext,
                "refusing to serve plaintext gRPC on non-loopback address {}: set --tls-cert and --tls-key, or pass --insecure-plaintext",
                self.listen_addr()
            );
            return Ok(None);
        };
        let interval = self.cert_reload_interval;
        let resolver =
            tls::ReloadingCertResolver::new(cert, key, interval)?.observed(metrics, tls::CertRole::Server);
        // gRPC runs over HTTP/2 only.
        let config = tls::server_config_observed(
            Arc::new(resolver),
            self.client_ca.as_deref(),
            interval,
            &[b"h2"],
            Some(metrics),
        )?;
        Ok(Some(Arc::new(config)))
    }

    /// The gRPC server's options: TLS and the resource bounds.
    pub fn server_options(&self) -> anyhow::Result<ServerOptions> {
        anyhow::ensure!(
            self.max_connections > 0 && self.max_concurrent_requests > 0,
            "--max-connections and --max-concurrent-requests must be positive"
        );
        // Refused here, with the flags' names, rather than when serving starts.
        crate::access::ClientNames::new(&self.client_allowed_names, &self.client_read_only_names)?;
        let tls_metrics = tls::TlsMetrics::default();
        Ok(ServerOptions {
            tls: self.tls_config_observed(&tls_metrics)?,
            tls_metrics,
            handshake_timeout: self.tls_handshake_timeout,
            max_connections: self.max_connections,
            max_concurrent_requests: self.max_concurrent_requests,
            request_timeout: self.request_timeout,
            max_connection_age: self.max_connection_age,
            allowed_client_names: self.client_allowed_names.clone(),
            read_only_client_names: self.client_read_only_names.clone(),
            reflection: self.reflection,
            ..ServerOptions::default()
        })
    }

    /// The management cluster client: the kubeconfig given, else in-cluster, else the default kubeconfig; every
    /// connection, read and write bounded by --management-timeout, so a silent API server cannot hold a call (and
    /// the hook waiting on it) forever.
    pub async fn management_client(&self) -> anyhow::Result<kube::Client> {
        let mut config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .with_context(|| format!("cannot use kubeconfig {}", path.display()))?
            }
            None => kube::Config::infer()
                .await
                .context("cannot configure a management cluster client (in-cluster or default kubeconfig)")?,
        };
        config.connect_timeout = Some(self.management_timeout);
        config.read_timeout = Some(self.management_timeout);
        config.write_timeout = Some(self.management_timeout);
        Ok(kube::Client::try_from(config)?)
    }
}

/// The reconciler's flags. The Lease lives in the executor's namespace (`--pod-namespace`).
#[derive(Clone, Debug, clap::Args)]
pub struct ReconcileArgs {
    /// Do not run the reconciler in this replica (hooks only).
    #[arg(long, env = "KONNECTOR_NO_RECONCILE")]
    pub no_reconcile: bool,
    /// The period of the workload-side drift check: each Cluster's workload Namespace and Secret are read once per
    /// period, at a slot of its own spread evenly over the period, so this bounds how long a workload-side drift
    /// lasts (e.g. 5m). Management-side changes (Clusters, HelmChartProxies, credentials Secrets) are seen by watches
    /// and repaired at once, whatever this is.
    #[arg(long, env = "KONNECTOR_RECONCILE_RESYNC", default_value = "5m", value_parser = humantime::parse_duration)]
    pub reconcile_resync: Duration,
    /// Let the reconciler move chart version and values to what the ConfigMaps say now, not only at
    /// BeforeClusterUpgrade.
    #[arg(long, env = "KONNECTOR_RECONCILE_FOLLOW_DEFAULTS")]
    pub reconcile_follow_defaults: bool,
    /// Let the reconciler uninstall the agent when `konnectorAgent` is removed from a running Cluster. Off by
    /// default: a bad ClusterClass patch must not wipe agents fleet-wide.
    #[arg(long, env = "KONNECTOR_RECONCILE_UNINSTALL_REMOVED")]
    pub reconcile_uninstall_removed: bool,
    /// Clusters reconciled at once: bounds the connections and memory of a pass over many Clusters.
    #[arg(long, env = "KONNECTOR_RECONCILE_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub reconcile_concurrency: u16,
    /// Watch Clusters and HelmChartProxies in these namespaces only (comma-separated), one watch each. Needed when
    /// the executor may act only in some namespaces; empty: all namespaces.
    #[arg(long, env = "KONNECTOR_RECONCILE_NAMESPACES", value_delimiter = ',')]
    pub reconcile_namespaces: Vec<String>,
    /// Objects per page when the reconciler lists Clusters and HelmChartProxies (metadata only).
    #[arg(long, env = "KONNECTOR_RECONCILE_PAGE_SIZE", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub reconcile_page_size: u32,
    /// The ExtensionConfig's namespaceSelector, as JSON (a LabelSelector; the chart renders it from the same value
    /// as the ExtensionConfig): the reconciler acts only on Clusters in namespaces it selects. Empty or `{}`: all.
    #[arg(long, env = "KONNECTOR_RECONCILE_NAMESPACE_SELECTOR", value_parser = parse_label_selector)]
    pub reconcile_namespace_selector: Option<LabelSelector>,
    /// This replica's identity in the reconciler Lease. Default: $HOSTNAME (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// How long the reconciler Lease outlives a leader that stopped renewing it (e.g. 15s).
    #[arg(long, env = "KONNECTOR_LEADER_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub leader_lease_duration: Duration,
    /// How often the leader renews the Lease and the others try to take it (e.g. 5s).
    #[arg(long, env = "KONNECTOR_LEADER_RETRY_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub leader_retry_interval: Duration,
}

impl ReconcileArgs {
    /// The reconciler configuration, or `None` when it is off. `namespace` is the executor's own.
    pub fn config(&self, namespace: &str) -> Option<ReconcileConfig> {
        if self.no_reconcile {
            return None;
        }
        let identity = self
            .pod_name
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("konnector-executor-{}", std::process::id()));
        Some(ReconcileConfig {
            resync: self.reconcile_resync,
            follow_defaults: self.reconcile_follow_defaults,
            uninstall_removed: self.reconcile_uninstall_removed,
            concurrency: self.reconcile_concurrency,
            namespaces: self.reconcile_namespaces.clone(),
            page_size: self.reconcile_page_size,
            namespace_selector: self
                .reconcile_namespace_selector
                .clone()
                .filter(|s| !selects_everything(s)),
            lease: LeaseConfig {
                namespace: namespace.to_owned(),
                identity,
                lease_duration: self.leader_lease_duration,
                retry_interval: self.leader_retry_interval,
                ..LeaseConfig::default()
            },
        })
    }
}

/// A LabelSelector from its JSON (what `toJson` renders in the chart); an empty string is no selector.
pub(crate) fn parse_label_selector(text: &str) -> Result<LabelSelector, String> {
    if text.trim().is_empty() {
        return Ok(LabelSelector::default());
    }
    let selector: LabelSelector =
        serde_json::from_str(text).map_err(|e| format!("not a LabelSelector in JSON: {e}"))?;
    // Refused at start, not at the first pass: an operator value that the API server would reject.
    kube::core::Selector::try_from(selector.clone())
        .map_err(|e| format!("not a valid LabelSelector: {e}"))?;
    Ok(selector)
}

pub(crate) fn selects_everything(s: &LabelSelector) -> bool {
    s.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_one_syntax() {
        let parse = |flag: &str| Args::try_parse_from(["konnector-executor", flag]);
        let args = parse("--uninstall-timeout=1m30s").unwrap();
        assert_eq!(args.uninstall_timeout, Duration::from_secs(90));
        let args = parse("--remote-timeout=2500ms").unwrap();
        assert_eq!(args.remote_timeout, Duration::from_millis(2500));
        let args = parse("--retry-after=2h").unwrap();
        assert_eq!(args.executor_config().unwrap().retry_after_seconds, 7200);
        assert!(parse("--retry-after=1500ms").unwrap().executor_config().is_err());
        // A bare number has no unit and is refused, in every duration flag.
        assert!(parse("--uninstall-timeout=300").is_err());
        assert!(parse("--remote-timeout=5x").is_err());
    }

    #[test]
    fn old_names_still_work_for_one_release_and_say_so() {
        let args = Args::try_parse_from([
            "konnector-executor",
            "--grpc-addr=127.0.0.1:9000",
            "--admin-addr=127.0.0.1:9001",
            "--retry-after-seconds=3",
        ])
        .unwrap();
        assert_eq!(args.listen_addr().port(), 9000);
        assert_eq!(args.admin_listen_addr().port(), 9001);
        assert_eq!(args.executor_config().unwrap().retry_after_seconds, 3);
        let warnings = args.deprecations();
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(
            warnings[0].contains("--grpc-addr") && warnings[0].contains("--listen"),
            "{warnings:?}"
        );
        assert!(
            Args::try_parse_from([
                "konnector-executor",
                "--grpc-addr=127.0.0.1:1",
                "--listen=127.0.0.1:2"
            ])
            .is_err()
        );
        let args = Args::try_parse_from(["konnector-executor", "--listen=127.0.0.1:9000"]).unwrap();
        assert!(args.deprecations().is_empty());
    }

    #[test]
    fn version_names_the_git_revision() {
        let err = Args::try_parse_from(["konnector-executor", "--version"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayVersion);
        assert!(err.to_string().contains(konnector_runtime::VERSION), "{err}");
    }

    #[test]
    fn defaults_match_executor_config() {
        let args = Args::try_parse_from(["konnector-executor"]).unwrap();
        let from_flags = args.executor_config().unwrap();
        // The one intended difference: the binary checks Prism Central unless told not to; the library default
        // makes no outbound calls.
        let default = ExecutorConfig {
            prism_central_checks: PreflightMode::Warn,
            ..ExecutorConfig::default()
        };
        assert_eq!(format!("{from_flags:?}"), format!("{default:?}"));
    }

    #[test]
    fn plaintext_only_on_loopback_unless_insecure() {
        let args = Args::try_parse_from(["konnector-executor"]).unwrap();
        assert!(
            args.tls_config()
                .unwrap_err()
                .to_string()
                .contains("--insecure-plaintext")
        );
        let args = Args::try_parse_from(["konnector-executor", "--listen", "127.0.0.1:8090"]).unwrap();
        assert!(args.tls_config().unwrap().is_none());
        let args = Args::try_parse_from(["konnector-executor", "--insecure-plaintext"]).unwrap();
        assert!(args.tls_config().unwrap().is_none());
        assert!(Args::try_parse_from(["konnector-executor", "--tls-cert", "x"]).is_err());
    }

    #[test]
    fn a_client_name_is_either_full_or_read_only() {
        let parse = |flags: &[&str]| {
            Args::try_parse_from(
                ["konnector-executor", "--listen=127.0.0.1:0"]
                    .iter()
                    .chain(flags)
                    .copied(),
            )
            .unwrap()
        };
        let args = parse(&["--client-read-only-names=konnector-cli,ops"]);
        assert_eq!(args.client_read_only_names, ["konnector-cli", "ops"]);
        assert_eq!(args.server_options().unwrap().read_only_client_names.len(), 2);
        assert!(parse(&[]).client_read_only_names.is_empty());
        let both = parse(&["--client-read-only-names=konnector-gateway"]);
        let error = both.server_options().unwrap_err().to_string();
        assert!(error.contains("--client-read-only-names"), "{error}");
    }

    #[test]
    fn flags_default_to_a_reconciler_within_the_issue_bounds() {
        let args = Args::try_parse_from(["konnector-executor", "--pod-name", "p-1"]).unwrap();
        let config = args.reconcile.config("konnector-system").unwrap();
        // Workload drift repaired within 5 minutes (management changes at once, by watches); failover within 30 s.
        assert_eq!(config.resync, Duration::from_secs(300));
        assert!(config.lease.lease_duration + config.lease.retry_interval <= Duration::from_secs(30));
        assert!(!config.follow_defaults && !config.uninstall_removed);
        assert_eq!(config.lease.identity, "p-1");
        assert_eq!(config.lease.namespace, "konnector-system");
        let off = Args::try_parse_from(["konnector-executor", "--no-reconcile"]).unwrap();
        assert!(off.reconcile.config("x").is_none());
    }

    #[test]
    fn the_namespace_selector_flag_takes_the_charts_json() {
        let parse = |json: &str| {
            Args::try_parse_from([
                "konnector-executor",
                "--pod-name",
                "p",
                &format!("--reconcile-namespace-selector={json}"),
            ])
            .map(|a| a.reconcile.config("ns").unwrap().namespace_selector)
        };
        let selector = parse(r#"{"matchLabels":{"team":"a"}}"#).unwrap().unwrap();
        assert_eq!(selector.match_labels.unwrap()["team"], "a");
        // Empty selects every namespace, as in the ExtensionConfig.
        assert!(parse("{}").unwrap().is_none());
        assert!(parse("").unwrap().is_none());
        // What the API server would refuse is refused at start.
        assert!(parse(r#"{"matchExpressions":[{"key":"a","operator":"Near"}]}"#).is_err());
        assert!(parse("team=a").is_err());
    }
}
