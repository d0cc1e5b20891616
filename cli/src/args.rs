//! Command-line flags, each also settable from the environment.
//!
//! The executor flags carry the gateway's names for the same thing (`KONNECTOR_EXECUTOR_URL`,
//! `KONNECTOR_EXECUTOR_CA`, `KONNECTOR_EXECUTOR_CLIENT_CERT`, `KONNECTOR_EXECUTOR_CLIENT_KEY`,
//! `KONNECTOR_EXECUTOR_SERVER_NAME`, `KONNECTOR_EXECUTOR_PLAINTEXT_LOOPBACK`), so a shell that has the gateway's
//! environment reaches the executor the way the gateway does. Without `--executor-url` the CLI goes through the
//! kubeconfig instead (see [`crate::connect`]).

use std::{path::PathBuf, time::Duration};

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};

/// Shown after `--help`, as kubectl plugins do.
const EXAMPLES: &str = "Examples:
  # What konnector sees for Cluster wl-1 in namespace tenants (also: konnector status tenants/wl-1)
  kubectl konnector status wl-1 -n tenants
  # The objects the next apply would write, as YAML
  kubectl konnector plan wl-1 -n tenants -o yaml
  # Check the install end to end, the CAPI side included, through another context, as another user
  kubectl konnector doctor wl-1 -n tenants --context prod --as alice
  # Which Clusters have a broken agent, worst first
  kubectl konnector fleet
  # Taking over from CAREN: what would change per Cluster (writes nothing), then apply it with a writing identity
  kubectl konnector migrate -n tenants
  konnector migrate --apply --executor-url https://127.0.0.1:8090 --server-name konnector-executor.konnector-system.svc \
    --ca ca.crt --cert gateway.crt --key gateway.key
  # konnector installed in another namespace, under another release name
  kubectl konnector status wl-1 -n tenants --konnector-namespace platform --release konnector-prod
  # Shell completion
  source <(konnector completion bash)";

/// Status, plan and doctor for one CAPI Cluster, from konnector's executor.
///
/// Reaches the executor directly (--executor-url with --ca, --cert, --key), or, by default, through your kubeconfig:
/// it finds a ready executor pod, port-forwards to it and presents the CLI's own read-only client certificate
/// (Secret <release>-cli).
///
/// Exit codes: 0 success; 1 doctor or fleet found a failing check, or a migrate row is blocked or failed; 2 bad usage; 3 the executor could not be reached
/// (kubeconfig, pod, Secret, TLS, network); 4 the executor refused the request (the message says why), or migrate
/// --apply was given a read-only identity.
#[derive(Parser, Debug, Clone)]
#[command(name = "konnector", version = konnector_runtime::VERSION, after_help = EXAMPLES)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// The Cluster's namespace, as kubectl's -n (`status wl-1 -n tenants`). Default: the kubeconfig context's
    /// namespace, else "default". A <namespace>/<name> argument names it instead.
    #[arg(
        short = 'n',
        long = "namespace",
        env = "KONNECTOR_CLUSTER_NAMESPACE",
        global = true
    )]
    pub cluster_namespace: Option<String>,
    /// How to reach the executor.
    #[command(flatten)]
    pub connection: Connection,
    /// Output: a human table, or JSON or YAML for scripts.
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
    /// Checks the executor and the Cluster's install, then the CAPI side (ExtensionConfig discovery, injected
    /// caBundle, gateway endpoints, NetworkPolicy), one line per check with a next step; exits 1 when one fails.
    Doctor {
        /// The Cluster, as <namespace>/<name>.
        cluster: ClusterName,
        /// The ExtensionConfig CAPI discovers konnector through (the chart's extensionConfig.name).
        #[arg(long, env = "KONNECTOR_EXTENSION_CONFIG", default_value = "konnector")]
        extension_config: String,
    },
    /// Every Cluster (in -n's namespace, else in all), one line each, worst first: which have a broken agent.
    /// Lists the Clusters through the kubeconfig; exits 1 when one has a failing check.
    Fleet,
    /// Taking over a fleet CAREN manages: per Cluster (one, -n's, else all), the HelmChartProxy there now, the one
    /// konnector would write, what changes and whether that means a new Helm revision. Writes nothing unless
    /// --apply. Exits 1 when a row is blocked or an apply failed.
    Migrate {
        /// One Cluster, as <namespace>/<name> (or <name> with -n). Default: every Cluster in -n's namespace, else
        /// in all.
        cluster: Option<ClusterName>,
        /// Show the plan and write nothing (the default).
        #[arg(long, conflicts_with = "apply")]
        plan: bool,
        /// Apply the rows the plan does not block, one ApplyAgent each, stopping at the first failure. Needs a
        /// writing client identity (--executor-url with --cert/--key); the CLI's own identity is read-only.
        #[arg(long)]
        apply: bool,
        /// ApplyAgent calls in flight at once with --apply (1 to 8).
        #[arg(long, env = "KONNECTOR_MIGRATE_CONCURRENCY", default_value_t = 1,
              value_parser = clap::value_parser!(u8).range(1..=8))]
        concurrency: u8,
        /// With --apply, go on after a failed row instead of stopping (a refused identity still stops at once).
        #[arg(long, requires = "apply")]
        continue_on_error: bool,
    },
    /// Prints a shell completion script: `source <(konnector completion bash)`, or for the kubectl plugin, a
    /// `kubectl_complete-konnector` script (kubectl >= 1.26) that runs it.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

impl Command {
    /// The Cluster the command is about, as given (its namespace may still be empty); None for completion.
    pub fn cluster(&self) -> Option<&ClusterName> {
        match self {
            Self::Status { cluster } | Self::Plan { cluster } | Self::Doctor { cluster, .. } => Some(cluster),
            Self::Migrate { cluster, .. } => cluster.as_ref(),
            Self::Completion { .. } | Self::Fleet => None,
        }
    }
}

impl Args {
    /// The Cluster with its namespace: from `<namespace>/<name>`, else `-n`, else `context_namespace` (the
    /// kubeconfig context's), else "default", as kubectl. Naming two different namespaces is a usage error.
    pub fn cluster(&self, context_namespace: Option<&str>) -> Result<ClusterName, String> {
        let given = self.command.cluster().ok_or("this command names no Cluster")?;
        match (given.namespace.as_str(), self.cluster_namespace.as_deref()) {
            ("", ns) => Ok(ClusterName {
                namespace: ns.or(context_namespace).unwrap_or("default").to_owned(),
                name: given.name.clone(),
            }),
            (from_arg, Some(flag)) if from_arg != flag => Err(format!(
                "the Cluster {given} is in namespace {from_arg}, but -n says {flag}: name it once"
            )),
            _ => Ok(given.clone()),
        }
    }
}

/// A Cluster's `<namespace>/<name>`, or `<name>` alone (the namespace then comes from `-n`).
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
            None if !s.is_empty() => Ok(Self {
                namespace: String::new(),
                name: s.to_owned(),
            }),
            _ => Err(format!(
                "expected <name> (with -n <namespace>) or <namespace>/<name>, got {s:?}"
            )),
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
    /// The same document as YAML.
    Yaml,
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
    /// PEM client certificate presented to the executor (mTLS), e.g. tls.crt of the CLI's Secret <release>-cli;
    /// needs --key.
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
    /// User to impersonate for the Kubernetes API (kubectl's --as).
    #[arg(long = "as", env = "KONNECTOR_AS", global = true)]
    pub as_user: Option<String>,
    /// Group to impersonate (kubectl's --as-group); repeatable.
    #[arg(long = "as-group", env = "KONNECTOR_AS_GROUP", global = true)]
    pub as_groups: Vec<String>,
    /// Bound on each Kubernetes API request (kubectl's --request-timeout: 30s, 1m, a number of seconds; 0: none).
    #[arg(long, env = "KONNECTOR_REQUEST_TIMEOUT", value_parser = parse_request_timeout, global = true)]
    pub request_timeout: Option<RequestTimeout>,
    /// Namespace konnector is installed in (its executor pods and the CLI's client Secret). Not -n: that is
    /// the Cluster's namespace, as in kubectl.
    #[arg(
        long = "konnector-namespace",
        env = "KONNECTOR_NAMESPACE",
        default_value = "konnector-system",
        global = true
    )]
    pub namespace: String,
    /// Helm release name of the konnector install; the chart names its objects after it
    /// (<release>-executor, <release>-cli).
    #[arg(long, env = "KONNECTOR_RELEASE", default_value = "konnector", global = true)]
    pub release: String,
}

/// `--request-timeout`: a bound, or none (`0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTimeout(
    /// The bound; None: no bound.
    pub Option<Duration>,
);

fn parse_request_timeout(s: &str) -> Result<RequestTimeout, String> {
    if s == "0" {
        return Ok(RequestTimeout(None));
    }
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (e.g. 30s, 1m, 0 for none)"))?
        }
    };
    Ok(RequestTimeout(Some(d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names() {
        let c: ClusterName = "tenants/wl-1".parse().unwrap();
        assert_eq!((c.namespace.as_str(), c.name.as_str()), ("tenants", "wl-1"));
        let c: ClusterName = "wl-1".parse().unwrap();
        assert_eq!((c.namespace.as_str(), c.name.as_str()), ("", "wl-1"));
        for bad in ["/wl-1", "tenants/", "a/b/c", ""] {
            assert!(bad.parse::<ClusterName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn dash_n_is_the_clusters_namespace_as_in_kubectl() {
        let parse = |argv: &[&str]| Args::try_parse_from(argv).unwrap();
        let cluster = |argv: &[&str], ctx: Option<&str>| parse(argv).cluster(ctx).map(|c| c.to_string());
        assert_eq!(
            cluster(&["konnector", "status", "wl-1", "-n", "tenants"], None).unwrap(),
            "tenants/wl-1"
        );
        assert_eq!(
            cluster(&["konnector", "-n", "tenants", "doctor", "wl-1"], Some("ctx")).unwrap(),
            "tenants/wl-1"
        );
        assert_eq!(
            cluster(&["konnector", "status", "wl-1"], Some("ctx")).unwrap(),
            "ctx/wl-1"
        );
        assert_eq!(
            cluster(&["konnector", "status", "wl-1"], None).unwrap(),
            "default/wl-1"
        );
        assert_eq!(
            cluster(&["konnector", "status", "tenants/wl-1", "-n", "tenants"], None).unwrap(),
            "tenants/wl-1"
        );
        assert!(cluster(&["konnector", "status", "tenants/wl-1", "-n", "other"], None).is_err());
        // konnector's own namespace has its own flag.
        let args = parse(&[
            "konnector",
            "status",
            "wl-1",
            "-n",
            "tenants",
            "--konnector-namespace",
            "platform",
        ]);
        assert_eq!(args.connection.namespace, "platform");
        assert!(
            Args::try_parse_from(["konnector", "completion", "bash"])
                .unwrap()
                .command
                .cluster()
                .is_none()
        );
    }

    #[test]
    fn kubectl_generic_flags() {
        let args = Args::try_parse_from([
            "konnector",
            "status",
            "wl-1",
            "--as",
            "alice",
            "--as-group",
            "ops",
            "--as-group",
            "sre",
            "--request-timeout",
            "5s",
            "--context",
            "prod",
            "--kubeconfig",
            "/k",
            "-o",
            "yaml",
        ])
        .unwrap();
        let c = &args.connection;
        assert_eq!(c.as_user.as_deref(), Some("alice"));
        assert_eq!(c.as_groups, ["ops", "sre"]);
        assert_eq!(
            c.request_timeout,
            Some(RequestTimeout(Some(Duration::from_secs(5))))
        );
        assert_eq!(c.context.as_deref(), Some("prod"));
        assert_eq!(args.output, Output::Yaml);
        assert_eq!(parse_request_timeout("0"), Ok(RequestTimeout(None)));
        assert_eq!(
            parse_request_timeout("30"),
            Ok(RequestTimeout(Some(Duration::from_secs(30))))
        );
        assert!(parse_request_timeout("soon").is_err());
        <Args as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn migrate_flags() {
        let parse = |argv: &[&str]| Args::try_parse_from(argv);
        let Command::Migrate {
            cluster,
            apply,
            concurrency,
            ..
        } = parse(&["konnector", "migrate"]).unwrap().command
        else {
            panic!("migrate")
        };
        assert_eq!((cluster, apply, concurrency), (None, false, 1));
        let args = parse(&[
            "konnector",
            "migrate",
            "wl-1",
            "-n",
            "tenants",
            "--apply",
            "--concurrency",
            "4",
        ])
        .unwrap();
        assert_eq!(args.cluster(None).unwrap().to_string(), "tenants/wl-1");
        assert!(matches!(
            args.command,
            Command::Migrate {
                apply: true,
                concurrency: 4,
                ..
            }
        ));
        for bad in [
            &["konnector", "migrate", "--plan", "--apply"][..],
            &["konnector", "migrate", "--apply", "--concurrency", "9"],
            &["konnector", "migrate", "--apply", "--concurrency", "0"],
            &["konnector", "migrate", "--continue-on-error"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
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
        assert!(Args::try_parse_from(["konnector", "status", "a/b/c"]).is_err());
    }
}
