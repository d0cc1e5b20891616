//! The executor's configuration, independent of how it was given (flags, environment, tests).

use std::{sync::Arc, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use konnector_runtime::tls::TlsMetrics;
use prometheus_client::metrics::counter::Counter;

use crate::leader::LeaseConfig;

/// What RemoveAgent answers once the uninstall has run past its timeout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum UninstallTimeoutPolicy {
    /// Let the cluster's deletion proceed (`done=true`, phase TIMED_OUT). The agent may stay registered in
    /// Prism Central.
    #[default]
    Proceed,
    /// Keep blocking the deletion (`done=false`, phase TIMED_OUT) until a person resolves it.
    Block,
}

/// What ApplyAgent answers at BeforeClusterUpgrade when the Cluster's Konnector Agent configuration has a problem
/// (bad values, a credentials Secret that cannot be used). A Failure there blocks the Kubernetes upgrade, which CAREN
/// let through for the same configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum UpgradeConfigPolicy {
    /// Answer Success with nothing written (the installed agent stays as it is) and record a Warning Event.
    #[default]
    Warn,
    /// Answer Failure: the upgrade waits until the configuration is fixed.
    Block,
}

/// Everything the executor's behaviour depends on, besides the management cluster client.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// Namespace holding the helm-addons and values-template ConfigMaps.
    pub defaults_namespace: String,
    /// ConfigMap with the chart coordinates under key `konnector-agent`.
    pub helm_addons_configmap: String,
    /// ConfigMap with the values template under key `values.yaml`.
    pub values_template_configmap: String,
    /// Chart name used when the helm-addons ConfigMap gives none.
    pub default_chart_name: String,
    /// Chart version used when the helm-addons ConfigMap gives none.
    pub default_chart_version: String,
    /// Chart repository used when the helm-addons ConfigMap gives none.
    pub default_repository_url: String,
    /// Namespace of the `helm-repository-tls` Secret referenced when the repository is the in-cluster mirror:
    /// the executor's own namespace.
    pub helm_repository_ca_namespace: String,
    /// How long the uninstall may run, measured from the HelmChartProxy's deletionTimestamp.
    pub uninstall_timeout: Duration,
    /// What to answer after `uninstall_timeout`.
    pub uninstall_timeout_policy: UninstallTimeoutPolicy,
    /// What a configuration problem found at BeforeClusterUpgrade answers.
    pub upgrade_config_policy: UpgradeConfigPolicy,
    /// `retry_after_seconds` of a RemoveAgent answer that is not done.
    pub retry_after_seconds: u32,
    /// Bound on connecting to, and on each call to, a workload cluster's API server.
    pub remote_timeout: Duration,
    /// Most workload-cluster clients cached at once (least recently used dropped first); at least 1.
    pub workload_client_cache_size: usize,
    /// A cached workload-cluster client unused for this long is dropped.
    pub workload_client_idle_timeout: Duration,
    /// Whether ApplyAgent checks Prism Central first, and whether a failed check blocks it. `Off` in
    /// [`Default`] (an embedding that says nothing makes no calls to Prism Central); the binary's flag defaults
    /// to `Warn`.
    pub prism_central_checks: crate::prism::PreflightMode,
    /// Bound on one whole check of Prism Central (resolve, connect, TLS, one request): well inside the 10 s CAPI
    /// gives a hook, so a hook that checks and then applies still answers in time.
    pub prism_central_timeout: Duration,
    /// How long a passed Prism Central check is shared by every hook for the same endpoint, trust settings and
    /// credentials (see `prism_shared`).
    pub prism_central_check_ttl: Duration,
    /// How long a failed one is shared: shorter, since a failure is usually being fixed (see `prism_shared`).
    pub prism_central_check_failure_ttl: Duration,
    /// A Cluster's Warning Event about one failed check is written at most once per this interval (see
    /// `prism_warnings`); zero writes it on every hook.
    pub prism_central_warning_interval: Duration,
    /// Largest response body taken from a workload cluster's API server (each event, for a watch); a larger one
    /// is cut off and the call fails. Anyone who can write a Cluster's kubeconfig Secret picks that server.
    pub workload_response_limit_bytes: u64,
    /// Largest response body taken from the management cluster's API server (each event, for a watch).
    pub management_response_limit_bytes: u64,
    /// The namespaces whose Clusters konnector serves; empty: all. With the chart's executor.clusterNamespaces the
    /// executor may read nothing elsewhere, so a hook for a Cluster outside them is answered without reading it
    /// (see [`ExecutorConfig::serves`]) rather than failing with a permission error that blocks its deletion.
    pub cluster_namespaces: Vec<String>,
    /// The Prism Central hosts the checks may contact; empty allows any.
    pub prism_central_allowed_hosts: crate::prism::AllowedHosts,
    /// Budget, in bytes of JSON, for the copies of Clusters that hooks use when a watch proves them current
    /// (`hook_cache`); 0 turns the copies and their watch off, and every hook reads its Cluster live.
    pub hook_cluster_cache_bytes: u64,
}

impl ExecutorConfig {
    /// Whether Clusters in `namespace` are konnector's to serve.
    pub fn serves(&self, namespace: &str) -> bool {
        self.cluster_namespaces.is_empty() || self.cluster_namespaces.iter().any(|n| n == namespace)
    }

    /// The answer's sentence for a Cluster in `namespace`, which konnector does not serve.
    pub fn not_served(&self, namespace: &str, what: &str) -> String {
        format!(
            "namespace {namespace} is not one konnector serves ({}); {what}",
            self.cluster_namespaces.join(", ")
        )
    }
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            defaults_namespace: "default".to_owned(),
            helm_addons_configmap: crate::names::DEFAULT_HELM_ADDONS_CONFIGMAP.to_owned(),
            values_template_configmap: crate::names::DEFAULT_VALUES_TEMPLATE_CONFIGMAP.to_owned(),
            default_chart_name: crate::names::DEFAULT_CHART_NAME.to_owned(),
            default_chart_version: "1.3.0-rc.1".to_owned(),
            default_repository_url: "https://mesosphere.github.io/charts/stable/".to_owned(),
            helm_repository_ca_namespace: "default".to_owned(),
            uninstall_timeout: Duration::from_secs(300),
            uninstall_timeout_policy: UninstallTimeoutPolicy::Proceed,
            upgrade_config_policy: UpgradeConfigPolicy::Warn,
            retry_after_seconds: 10,
            remote_timeout: Duration::from_secs(5),
            workload_client_cache_size: 256,
            workload_client_idle_timeout: Duration::from_secs(600),
            prism_central_checks: crate::prism::PreflightMode::Off,
            prism_central_timeout: Duration::from_secs(5),
            prism_central_check_ttl: Duration::from_secs(120),
            prism_central_check_failure_ttl: Duration::from_secs(15),
            prism_central_warning_interval: Duration::from_secs(600),
            workload_response_limit_bytes: crate::limits::DEFAULT_WORKLOAD_RESPONSE_LIMIT_BYTES,
            management_response_limit_bytes: crate::limits::DEFAULT_MANAGEMENT_RESPONSE_LIMIT_BYTES,
            cluster_namespaces: Vec::new(),
            prism_central_allowed_hosts: crate::prism::AllowedHosts::default(),
            hook_cluster_cache_bytes: crate::limits::DEFAULT_HOOK_CLUSTER_CACHE_BYTES,
        }
    }
}

/// How the gRPC server runs.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// TLS (mTLS when the configuration verifies clients); `None` is plaintext.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Open connections at most; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Requests served at once on one connection (the gateway multiplexes all its calls over one).
    pub max_concurrent_requests: usize,
    /// Bound on each request, whatever deadline the caller sent.
    pub request_timeout: Duration,
    /// HTTP/2 ping interval: a connection whose peer stops answering pings is closed.
    pub keepalive_interval: Duration,
    /// Connections are closed gracefully after this age, so every client re-handshakes, and so meets rotated
    /// certificates and CAs, at least this often.
    pub max_connection_age: Duration,
    /// Counts connections handed to gRPC (after the TLS handshake, with TLS): each is a client that connected, and
    /// so presented the certificates it had at that moment.
    pub connections_accepted: Counter,
    /// Failed handshakes, and the expiry of the certificates `tls` was built with (see `Args::server_options`).
    pub tls_metrics: TlsMetrics,
    /// With mTLS, the DNS names a client certificate must carry (one of them, as a subjectAltName): the client CA
    /// may sign other identities than the gateway's, and none of them may call the executor. Empty: any
    /// certificate the client CA verifies.
    pub allowed_client_names: Vec<String>,
    /// With mTLS, the DNS names of read-only clients (the `konnector` CLI's certificate): a certificate that carries
    /// one of them, and none of `allowed_client_names`, is served the read RPCs only (`access::READ_ONLY_METHODS`)
    /// and answered `PERMISSION_DENIED` for everything else.
    pub read_only_client_names: Vec<String>,
    /// Serve gRPC server reflection (v1 and v1alpha), so grpcurl can list and call the services without the
    /// proto files.
    pub reflection: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            tls: None,
            handshake_timeout: Duration::from_secs(10),
            max_connections: 64,
            max_concurrent_requests: 64,
            request_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(30),
            max_connection_age: Duration::from_secs(30 * 60),
            connections_accepted: Counter::default(),
            tls_metrics: TlsMetrics::default(),
            allowed_client_names: Vec::new(),
            read_only_client_names: Vec::new(),
            reflection: true,
        }
    }
}

/// How the reconciler behaves.
#[derive(Clone, Debug)]
pub struct ReconcileConfig {
    /// The period of the workload-side drift check, spread evenly over the Clusters (see `Schedule`).
    pub resync: Duration,
    /// Let chart version and values follow the ConfigMaps, instead of changing at BeforeClusterUpgrade only.
    pub follow_defaults: bool,
    /// Uninstall the agent when `konnectorAgent` is removed from a running Cluster.
    pub uninstall_removed: bool,
    /// The Lease that chooses the replica that reconciles.
    pub lease: LeaseConfig,
    /// Clusters reconciled at once (per watched namespace). Bounds the connections and memory a pass over every
    /// Cluster takes: unbounded, the first pass over 1000 Clusters opened 1000 workload connections at once.
    pub concurrency: u16,
    /// Namespaces whose Clusters are watched, one watch each; empty: all namespaces, one cluster-wide watch.
    /// Set it when the executor's rights are confined to some namespaces (the chart's
    /// `executor.clusterNamespaces`), where a cluster-wide list is forbidden.
    pub namespaces: Vec<String>,
    /// Objects per page when the watches list Clusters and HelmChartProxies (metadata only): bounds what one
    /// list response may cost.
    pub page_size: u32,
    /// The ExtensionConfig's `namespaceSelector`: Clusters in namespaces it does not select get no hooks from
    /// CAPI, so the reconciler leaves them alone too. `None` (or an empty selector): every namespace.
    pub namespace_selector: Option<LabelSelector>,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(300),
            follow_defaults: false,
            uninstall_removed: false,
            lease: LeaseConfig::default(),
            concurrency: 8,
            namespaces: Vec::new(),
            page_size: 50,
            namespace_selector: None,
        }
    }
}
