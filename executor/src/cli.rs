//! The executor binary's flags and its `run` loop. Every flag can also be set from the environment.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use konnector_runtime::{admin, telemetry::LogArgs, tls};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::{ExecutorConfig, UninstallTimeoutPolicy, executor::Executor};

/// konnector executor: does the Konnector Agent addon's work for one cluster per gRPC call.
#[derive(Debug, Clone, Parser)]
#[command(name = "konnector-executor", version)]
pub struct Args {
    /// Address of the gRPC server.
    #[arg(long, env = "KONNECTOR_GRPC_ADDR", default_value = "0.0.0.0:8090")]
    pub grpc_addr: SocketAddr,
    /// Address of the admin server (/livez, /readyz, /metrics).
    #[arg(long, env = "KONNECTOR_ADMIN_ADDR", default_value = "0.0.0.0:8091")]
    pub admin_addr: SocketAddr,
    /// PEM certificate chain of the gRPC server. With --tls-key, the server speaks TLS only.
    #[arg(long, env = "KONNECTOR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the gRPC server.
    #[arg(long, env = "KONNECTOR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle that client certificates must chain to (mutual TLS). Requires --tls-cert.
    #[arg(long, env = "KONNECTOR_CLIENT_CA", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
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
        default_value = "default-helm-addons-config"
    )]
    pub helm_addons_configmap: String,
    /// ConfigMap holding the values template under key `values.yaml`.
    #[arg(
        long,
        env = "KONNECTOR_VALUES_TEMPLATE_CONFIGMAP",
        default_value = "default-konnector-agent-helm-values-template"
    )]
    pub values_template_configmap: String,
    /// Chart name when the helm-addons ConfigMap is absent.
    #[arg(long, env = "KONNECTOR_DEFAULT_CHART_NAME", default_value = "konnector-agent")]
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
    #[arg(long, env = "KONNECTOR_UNINSTALL_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub uninstall_timeout: Duration,
    /// What RemoveAgent answers after the uninstall timeout: let deletion proceed, or keep blocking it.
    #[arg(long, env = "KONNECTOR_UNINSTALL_TIMEOUT_POLICY", value_enum, default_value_t = UninstallTimeoutPolicy::Proceed)]
    pub uninstall_timeout_policy: UninstallTimeoutPolicy,
    /// Seconds after which a caller should ask RemoveAgent again while the uninstall runs.
    #[arg(long, env = "KONNECTOR_RETRY_AFTER_SECONDS", default_value_t = 10)]
    pub retry_after_seconds: u32,
    /// Bound on connecting to, and on each call to, a workload cluster's API server (e.g. 5s).
    #[arg(long, env = "KONNECTOR_REMOTE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub remote_timeout: Duration,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub log: LogArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub reconcile: crate::reconcile::ReconcileArgs,
}

impl Args {
    /// The executor configuration these flags describe.
    pub fn executor_config(&self) -> ExecutorConfig {
        ExecutorConfig {
            defaults_namespace: self.defaults_namespace.clone(),
            helm_addons_configmap: self.helm_addons_configmap.clone(),
            values_template_configmap: self.values_template_configmap.clone(),
            default_chart_name: self.default_chart_name.clone(),
            default_chart_version: self.default_chart_version.clone(),
            default_repository_url: self.default_repository_url.clone(),
            helm_repository_ca_namespace: self.pod_namespace.clone(),
            uninstall_timeout: self.uninstall_timeout,
            uninstall_timeout_policy: self.uninstall_timeout_policy,
            retry_after_seconds: self.retry_after_seconds,
            remote_timeout: self.remote_timeout,
        }
    }

    /// The gRPC TLS configuration, or `None` for plaintext. Refuses plaintext on a non-loopback address
    /// unless --insecure-plaintext is given.
    pub fn tls_config(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            anyhow::ensure!(
                self.grpc_addr.ip().is_loopback() || self.insecure_plaintext,
                "refusing to serve plaintext gRPC on non-loopback address {}: set --tls-cert and --tls-key, or pass --insecure-plaintext",
                self.grpc_addr
            );
            return Ok(None);
        };
        let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        // Parse first, so a bad file fails here with its path rather than at the first handshake.
        tls::load_certs(cert)?;
        tls::load_key(key)?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
        if let Some(ca) = &self.client_ca {
            tls::load_certs(ca)?;
            config = config.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        Ok(Some(config))
    }
}

/// Parses `300`, `300s`, `5m`, `1h`, `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| format!("invalid duration {s:?}"))?;
        number.clear();
        total += n * match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => {
                return Err(format!(
                    "invalid duration {s:?}: use h, m and s units, e.g. 5m or 90s"
                ));
            }
        };
    }
    if !number.is_empty() || s.is_empty() {
        return Err(format!(
            "invalid duration {s:?}: use h, m and s units, e.g. 5m or 90s"
        ));
    }
    Ok(Duration::from_secs(total))
}

/// Runs the executor until a shutdown signal: connects to the management cluster, serves gRPC and the admin
/// endpoints, and turns ready once the management API server answers.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let tls = args.tls_config()?;
    let client = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("cannot use kubeconfig {}", path.display()))?;
            kube::Client::try_from(config)?
        }
        None => kube::Client::try_default()
            .await
            .context("cannot configure a management cluster client (in-cluster or default kubeconfig)")?,
    };
    let shutdown = konnector_runtime::shutdown::on_signal();
    let readiness = admin::Readiness::default();
    tokio::spawn(watch_readiness(
        client.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));
    let executor = Executor::new(client, args.executor_config());
    let reconciler = args
        .reconcile
        .config(&args.pod_namespace)
        .map(|config| tokio::spawn(crate::reconcile::run(executor.clone(), config, shutdown.clone())));
    let admin_task = tokio::spawn(admin::serve(
        args.admin_addr,
        admin::router(readiness, executor.metrics().registry().router()),
        shutdown.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.grpc_addr))?;
    let served = crate::serve(executor, listener, tls, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(reconciler) = reconciler {
        // Gives the Lease up, so another replica takes over at once.
        let _ = reconciler.await;
    }
    admin_task.await??;
    served
}

/// Marks the executor ready while the management API server answers, re-checking every 10 seconds.
async fn watch_readiness(client: kube::Client, readiness: admin::Readiness, shutdown: CancellationToken) {
    loop {
        let ok = tokio::time::timeout(Duration::from_secs(5), client.apiserver_version())
            .await
            .is_ok_and(|r| r.is_ok());
        if ok != readiness.get() {
            tracing::info!(ready = ok, "management API server readiness changed");
        }
        readiness.set(ok);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(if ok { 10 } else { 2 })) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5m3").is_err());
    }

    #[test]
    fn defaults_match_executor_config() {
        let args = Args::try_parse_from(["konnector-executor"]).unwrap();
        let from_flags = args.executor_config();
        let default = ExecutorConfig::default();
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
        let args = Args::try_parse_from(["konnector-executor", "--grpc-addr", "127.0.0.1:8090"]).unwrap();
        assert!(args.tls_config().unwrap().is_none());
        let args = Args::try_parse_from(["konnector-executor", "--insecure-plaintext"]).unwrap();
        assert!(args.tls_config().unwrap().is_none());
        assert!(Args::try_parse_from(["konnector-executor", "--tls-cert", "x"]).is_err());
    }
}
