//! konnector's operator CLI: `konnector status|plan|doctor <namespace>/<cluster>`, `fleet` and `migrate`, also run
//! by kubectl as the plugin `kubectl konnector …`.
//!
//! It is a read-only gRPC client of the executor: GetAgentStatus, PlanAgent (a dry run) and the standard health
//! check; only `migrate --apply` calls ApplyAgent, with an identity the executor lets write ([`migrate`]). [`connect`] reaches the executor directly or through the kubeconfig; [`status`], [`plan`] and [`doctor`]
//! turn the answers into text or JSON. Errors reach the terminal in one place, [`run`], as one line and an exit
//! code ([`ExitCode`]).
#![deny(missing_docs)]

pub mod args;
pub mod capi;
pub mod connect;
pub mod doctor;
pub mod fleet;
pub mod migrate;
pub mod plan;
pub mod status;
pub mod table;

use std::io::Write;

use clap::{CommandFactory, FromArgMatches};
use konnector_proto::v1::{
    ClusterRef, GetAgentStatusRequest, PlanAgentRequest, agent_service_server::SERVICE_NAME,
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::args::{Args, ClusterName, Command, Output};
use crate::connect::ExecutorConn;

/// The documented exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Success; for doctor, no check failed.
    Ok = 0,
    /// doctor or fleet: at least one check failed; migrate: a row is blocked or its apply failed.
    CheckFailed = 1,
    /// Bad usage (clap's own code).
    Usage = 2,
    /// The executor could not be reached: kubeconfig, pod, Secret, TLS, network, or no answer in time.
    Unreachable = 3,
    /// The executor answered with an error; the message is its own.
    Refused = 4,
}

/// Why a command did not succeed.
#[derive(Debug)]
enum Failure {
    Unreachable(anyhow::Error),
    Refused {
        rpc: &'static str,
        status: tonic::Status,
    },
    Output(anyhow::Error),
    /// The command line contradicts itself in a way clap cannot see (exit 2, as clap's usage errors).
    Usage(String),
    /// A write was asked for with an identity the executor serves read-only (exit 4, as a refusal); the text
    /// says which identity to use.
    Identity(String),
}

impl Failure {
    fn exit_code(&self) -> ExitCode {
        match self {
            Self::Unreachable(_) | Self::Output(_) => ExitCode::Unreachable,
            Self::Refused { .. } | Self::Identity(_) => ExitCode::Refused,
            Self::Usage(_) => ExitCode::Usage,
        }
    }

    /// One line: the executor's message is deterministic and secret-free by contract; the others are built here
    /// from file names, object names and library errors, none of which quote certificate or key material.
    fn line(&self) -> String {
        let text = match self {
            Self::Unreachable(e) => connect::chain(e.as_ref()),
            Self::Refused { rpc, status } => refusal(rpc, status),
            Self::Output(e) => format!("cannot write the output: {}", connect::chain(e.as_ref())),
            Self::Usage(why) | Self::Identity(why) => why.clone(),
        };
        text.replace(['\n', '\r'], " ")
    }
}

fn refusal(rpc: &str, status: &tonic::Status) -> String {
    format!(
        "the executor refused {rpc}: {} {}",
        konnector_runtime::grpc::code_name(status.code()),
        status.message()
    )
}

/// A status tonic made up locally from a transport error (it carries that error as its source) rather than one the
/// executor sent: the executor was not reached, e.g. plaintext spoken to its TLS port.
fn rpc_failure(rpc: &'static str, status: tonic::Status) -> Failure {
    match std::error::Error::source(&status) {
        Some(cause) => Failure::Unreachable(anyhow::anyhow!(
            "{rpc} did not reach the executor: {} (is --executor-url's scheme right? the chart's executor speaks TLS)",
            connect::chain(cause)
        )),
        None => Failure::Refused { rpc, status },
    }
}

/// Parses the command line (as `kubectl konnector` when run under that name), runs, prints, and returns the exit
/// code. The whole of `main`.
pub fn main() -> std::process::ExitCode {
    let invoked_as = std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let bin_name = if invoked_as.starts_with("kubectl-konnector") {
        "kubectl konnector"
    } else {
        "konnector"
    };
    let matches = Args::command().bin_name(bin_name).get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{bin_name}: cannot start: {e}");
            return std::process::ExitCode::from(ExitCode::Unreachable as u8);
        }
    };
    let code = runtime.block_on(run(&args, &mut std::io::stdout().lock()));
    let code = match code {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("{bin_name}: error: {}", failure.line());
            failure.exit_code()
        }
    };
    std::process::ExitCode::from(code as u8)
}

/// Runs one command against the executor, writing its output to `out`. A command that does not finish within
/// `--timeout` is unreachable.
async fn run(args: &Args, out: &mut impl Write) -> Result<ExitCode, Failure> {
    match tokio::time::timeout(args.timeout, run_unbounded(args, out)).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Unreachable(anyhow::anyhow!(
            "no answer from the executor within {} (--timeout)",
            humantime::format_duration(args.timeout)
        ))),
    }
}

async fn run_unbounded(args: &Args, out: &mut impl Write) -> Result<ExitCode, Failure> {
    if let Command::Completion { shell } = &args.command {
        clap_complete::generate(*shell, &mut Args::command(), "konnector", out);
        return Ok(ExitCode::Ok);
    }
    if let Command::Fleet = &args.command {
        return fleet(args, out).await;
    }
    if let Command::Migrate {
        apply,
        concurrency,
        continue_on_error,
        ..
    } = &args.command
    {
        return migrate::run::migrate(args, *apply, usize::from(*concurrency), *continue_on_error, out).await;
    }
    let cluster = &args
        .cluster(connect::context_namespace(&args.connection).as_deref())
        .map_err(Failure::Usage)?;
    match &args.command {
        Command::Status { .. } => {
            let executor = connect::connect(&args.connection)
                .await
                .map_err(Failure::Unreachable)?;
            let view = status::StatusView::new(cluster.to_string(), get_status(&executor, cluster).await?);
            emit(out, args.output, &view, || Ok(view.table()))?;
            Ok(ExitCode::Ok)
        }
        Command::Plan { .. } => {
            let executor = connect::connect(&args.connection)
                .await
                .map_err(Failure::Unreachable)?;
            let view = plan::PlanView::new(cluster.to_string(), get_plan(&executor, cluster).await?);
            emit(out, args.output, &view, || view.text())?;
            Ok(ExitCode::Ok)
        }
        Command::Doctor { extension_config, .. } => {
            let mut findings = gather(args, cluster).await;
            findings.capi = Some(gather_capi(args, extension_config).await);
            let report = doctor::diagnose(&findings);
            emit(out, args.output, &report, || Ok(report.text()))?;
            Ok(if report.healthy {
                ExitCode::Ok
            } else {
                ExitCode::CheckFailed
            })
        }
        Command::Completion { .. } | Command::Fleet | Command::Migrate { .. } => Ok(ExitCode::Ok),
    }
}

/// How many GetAgentStatus calls `fleet` keeps in flight: enough to cover 300 Clusters within the default
/// --timeout, few enough not to load the executor (each call reads one workload cluster).
const FLEET_CONCURRENCY: usize = 8;

async fn fleet(args: &Args, out: &mut impl Write) -> Result<ExitCode, Failure> {
    let client = connect::kube_client(&args.connection)
        .await
        .map_err(Failure::Unreachable)?;
    let clusters = capi::list_clusters(&client, args.cluster_namespace.as_deref())
        .await
        .map_err(Failure::Unreachable)?;
    let executor = connect::connect(&args.connection)
        .await
        .map_err(Failure::Unreachable)?;
    let mut rows = Vec::with_capacity(clusters.len());
    let mut pending = clusters.into_iter();
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < FLEET_CONCURRENCY {
            let Some(cluster) = pending.next() else { break };
            let executor = executor.clone();
            running.spawn(async move {
                let status = get_status(&executor, &cluster)
                    .await
                    .map(|s| status::StatusView::new(cluster.to_string(), s))
                    .map_err(|f| f.line());
                fleet::row(cluster.to_string(), status)
            });
        }
        match running.join_next().await {
            Some(Ok(row)) => rows.push(row),
            Some(Err(e)) => return Err(Failure::Unreachable(anyhow::anyhow!("a status call failed: {e}"))),
            None => break,
        }
    }
    let view = fleet::FleetView::new(rows);
    emit(out, args.output, &view, || Ok(view.table()))?;
    Ok(if view.broken == 0 {
        ExitCode::Ok
    } else {
        ExitCode::CheckFailed
    })
}

/// The CAPI side, through the kubeconfig: always when the executor is reached through it, and with
/// `--executor-url` only when a kubeconfig is named (flag, context or KUBECONFIG), so a direct call never reads a
/// cluster the user did not point at.
async fn gather_capi(args: &Args, extension_config: &str) -> Result<capi::CapiFindings, String> {
    let c = &args.connection;
    if c.executor_url.is_some()
        && c.kubeconfig.is_none()
        && c.context.is_none()
        && std::env::var_os("KUBECONFIG").is_none()
    {
        return Err(
            "not read: --executor-url without --kubeconfig (the CAPI side is read through a kubeconfig)"
                .into(),
        );
    }
    let client = connect::kube_client(c)
        .await
        .map_err(|e| connect::chain(e.as_ref()))?;
    Ok(capi::gather(&client, extension_config).await)
}

/// Doctor reports a failure to connect or an RPC refusal as a failed check rather than as an error.
async fn gather(args: &Args, cluster: &ClusterName) -> doctor::Findings {
    let mut findings = doctor::Findings {
        cluster: cluster.to_string(),
        executor: Err(String::new()),
        status: None,
        plan: None,
        capi: None,
    };
    let executor = match connect::connect(&args.connection).await {
        Ok(e) => e,
        Err(e) => {
            findings.executor = Err(connect::chain(e.as_ref()));
            return findings;
        }
    };
    let mut health = executor.health.clone();
    findings.executor = match health
        .check(HealthCheckRequest {
            // The service the executor registers with tonic-health, named as the generated code names it.
            service: SERVICE_NAME.to_owned(),
        })
        .await
    {
        Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => Ok(executor.via.clone()),
        Ok(r) => Err(format!(
            "{} answers its health check with {:?}",
            executor.via,
            ServingStatus::try_from(r.get_ref().status).unwrap_or(ServingStatus::Unknown)
        )),
        Err(status) => Err(format!(
            "{} does not answer its health check: {}",
            executor.via,
            rpc_failure("Health/Check", status).line()
        )),
    };
    if findings.executor.is_err() {
        return findings;
    }
    let status = get_status(&executor, cluster).await;
    let configured = matches!(&status, Ok(s) if s.addon_configured);
    findings.status = Some(
        status
            .map(|s| status::StatusView::new(cluster.to_string(), s))
            .map_err(|f| f.line()),
    );
    if configured {
        findings.plan = Some(
            get_plan(&executor, cluster)
                .await
                .map(|p| plan::PlanView::new(cluster.to_string(), p))
                .map_err(|f| f.line()),
        );
    }
    findings
}

fn cluster_ref(cluster: &ClusterName) -> Option<ClusterRef> {
    Some(ClusterRef {
        namespace: cluster.namespace.clone(),
        name: cluster.name.clone(),
        uid: String::new(),
        resource_version: String::new(),
    })
}

async fn get_status(
    executor: &ExecutorConn,
    cluster: &ClusterName,
) -> Result<konnector_proto::v1::GetAgentStatusResponse, Failure> {
    executor
        .agent
        .clone()
        .get_agent_status(GetAgentStatusRequest {
            cluster: cluster_ref(cluster),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| rpc_failure("GetAgentStatus", status))
}

async fn get_plan(
    executor: &ExecutorConn,
    cluster: &ClusterName,
) -> Result<konnector_proto::v1::PlanAgentResponse, Failure> {
    executor
        .agent
        .clone()
        .plan_agent(PlanAgentRequest {
            cluster: cluster_ref(cluster),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| rpc_failure("PlanAgent", status))
}

/// Writes `value` as pretty JSON, or the text `human` renders.
fn emit<T: serde::Serialize>(
    out: &mut impl Write,
    output: Output,
    value: &T,
    human: impl FnOnce() -> anyhow::Result<String>,
) -> Result<(), Failure> {
    let text = match output {
        Output::Json => serde_json::to_string_pretty(value)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| Failure::Output(e.into()))?,
        Output::Yaml => serde_yaml_ng::to_string(value).map_err(|e| Failure::Output(e.into()))?,
        Output::Table => human().map_err(Failure::Output)?,
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Output(e.into()))
}
