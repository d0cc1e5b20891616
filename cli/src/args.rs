//! Command-line flags, each also settable from the environment.
//!
//! The executor flags carry the gateway's names for the same thing (`KONNECTOR_EXECUTOR_URL`,
//! `KONNECTOR_EXECUTOR_CA`, `KONNECTOR_EXECUTOR_CLIENT_CERT`, `KONNECTOR_EXECUTOR_CLIENT_KEY`,
//! `KONNECTOR_EXECUTOR_SERVER_NAME`, `KONNECTOR_EXECUTOR_PLAINTEXT_LOOPBACK`), so a shell that has the gateway's
//! environment reaches the executor the way the gateway does. Without `--executor-url` the CLI goes through the
//! kubeconfig instead (see [`crate::connect`]).

use std::{path::PathBuf, time::Duration};

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};

/// Status, plan and doctor for one CAPI Cluster, from konnector's executor.
///
/// Reaches the executor directly (--executor-url with --ca, --cert, --key), or, by default, through your kubeconfig:
/// it finds a ready executor pod, port-forwards to it and borrows the gateway's client certificate.
///
/// Exit codes: 0 success; 1 doctor found a failing check; 2 bad usage; 3 the executor could not be reached
/// (kubeconfig, pod, Secret, TLS, network); 4 the executor refused the request (the message says why).
#[derive(Parser, Debug, Clone)]
#[command(name = "konnector", version = konnector_runtime::VERSION)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// How to reach the executor.
    #[command(flatten)]
    pub connection: Connection,
    /// Output: a human table, or JSON for scripts.
    #[arg(short, long, env = "KONNECTOR_OUTPUT", value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// Bound on the whole command, connection included (e.g. 30s).
    #[arg(long, env = "KONNECTOR_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub timeout: Duration,
}

/// The commands; each names one Cluster as `<namespace>/<name>`.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// What konnector sees for the Cluster (GetAgentStatus): credentials, HelmChartProxy, releases, uninstall,
    /// Prism Central.
    Status {
        /// The Cluster, as <namespace>/<name>.
        cluster: ClusterName,
    },
    /// The objects ApplyAgent would write for the Cluster (PlanAgent), Secret values redacted; writes nothing.
    Plan {
        /// The Cluster, as <namespace>/<name>.
        cluster: ClusterName,
    },
    /// Checks the executor and the Cluster's install, one line per check with a next step; exits 1 when one fails.
    Doctor {
        /// The Cluster, as <namespace>/<name>.
        cluster: ClusterName,
    },
}

impl Command {
    /// The Cluster the command is about.
    pub fn cluster(&self) -> &ClusterName {
        match self {
            Self::Status { cluster } | Self::Plan { cluster } | Self::Doctor { cluster } => cluster,
        }
    }
}

/// A Cluster's `<namespace>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterName {
    /// The namespace on the management cluster.
    pub namespace: String,
    /// The Cluster's name.
    pub name: String,
}

impl std::str::FromStr for ClusterName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!("expected <namespace>/<name>, got {s:?}")),
        }
    }
}

impl std::fmt::Display for ClusterName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Human table or JSON.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Aligned text for people.
    Table,
    /// One JSON document on stdout.
    Json,
}

/// How to reach the executor: directly when `--executor-url` is set, otherwise through the kubeconfig.
#[derive(ClapArgs, Debug, Clone)]
pub struct Connection {
    /// The executor's gRPC URL, e.g. https://konnector-executor.konnector-system.svc:8090. When set, the executor is
    /// called directly and the kubeconfig is not used.
    #[arg(long, env = "KONNECTOR_EXECUTOR_URL", global = true)]
    pub executor_url: Option<String>,
    /// PEM CA bundle the executor's certificate must chain to (direct https:// only; required there).
    #[arg(long, env = "KONNECTOR_EXECUTOR_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// PEM client certificate presented to the executor (mTLS), e.g. the gateway's tls.crt; needs --key.
    #[arg(long, env = "KONNECTOR_EXECUTOR_CLIENT_CERT", requires = "key", global = true)]
    pub cert: Option<PathBuf>,
    /// PEM client key for --cert.
    #[arg(long, env = "KONNECTOR_EXECUTOR_CLIENT_KEY", requires = "cert", global = true)]
    pub key: Option<PathBuf>,
    /// Name to verify the executor's certificate against, when it differs from the URL host (e.g.
    /// konnector-executor.konnector-system.svc behind a local port-forward).
    #[arg(long, env = "KONNECTOR_EXECUTOR_SERVER_NAME", global = true)]
    pub server_name: Option<String>,
    /// Plaintext gRPC to an executor on loopback (http://127.0.0.1:…), as the gateway allows. Refused for any other host.
    #[arg(
        long,
        env = "KONNECTOR_EXECUTOR_PLAINTEXT_LOOPBACK",
        default_value_t = false,
        global = true
    )]
    pub plaintext_loopback: bool,
    /// Kubeconfig file (when --executor-url is not set). Default: $KUBECONFIG, then ~/.kube/config, as kubectl.
    #[arg(long, env = "KONNECTOR_KUBECONFIG", global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context. Default: the current context.
    #[arg(long, env = "KONNECTOR_CONTEXT", global = true)]
    pub context: Option<String>,
    /// Namespace konnector is installed in (its executor pods and the gateway's client Secret).
    #[arg(
        short = 'n',
        long,
        env = "KONNECTOR_NAMESPACE",
        default_value = "konnector-system",
        global = true
    )]
    pub namespace: String,
    /// Helm release name of the konnector install; the chart names its objects after it
    /// (<release>-executor, <release>-gateway-client).
    #[arg(long, env = "KONNECTOR_RELEASE", default_value = "konnector", global = true)]
    pub release: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names() {
        let c: ClusterName = "tenants/wl-1".parse().unwrap();
        assert_eq!((c.namespace.as_str(), c.name.as_str()), ("tenants", "wl-1"));
        for bad in ["wl-1", "/wl-1", "tenants/", "a/b/c", ""] {
            assert!(bad.parse::<ClusterName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_parse_and_default() {
        let args = Args::try_parse_from(["konnector", "doctor", "ns/c", "-o", "json"]).unwrap();
        assert_eq!(args.output, Output::Json);
        assert_eq!(args.connection.namespace, "konnector-system");
        assert_eq!(args.connection.release, "konnector");
        assert!(args.connection.executor_url.is_none());
        assert_eq!(args.timeout, Duration::from_secs(30));
        // A client certificate without its key is a usage error.
        assert!(Args::try_parse_from(["konnector", "status", "ns/c", "--cert", "x"]).is_err());
        assert!(Args::try_parse_from(["konnector", "status", "nope"]).is_err());
    }
}
