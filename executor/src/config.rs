//! The executor's configuration, independent of how it was given (flags, environment, tests).

use std::time::Duration;

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
            hook_cluster_cache_bytes: crate::hook_cache::DEFAULT_HOOK_CLUSTER_CACHE_BYTES,
        }
    }
}
