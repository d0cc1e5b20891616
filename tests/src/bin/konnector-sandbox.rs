//! konnector-sandbox: the whole konnector lifecycle, for real, on one machine. See `konnector_tests::sandbox`.

use std::{io::Write, path::PathBuf, sync::Arc};

use tracing_subscriber::{Layer, layer::SubscriberExt, util::SubscriberInitExt};

use clap::Parser;
use konnector_runtime::telemetry;
use konnector_tests::{
    capi_stand_in::CapiShape,
    sandbox::{Sandbox, SandboxOptions},
    sandbox_real::{RealOptions, RealSandbox},
    scenario::StepReport,
};

const SERVICE_NAME: &str = "konnector-sandbox";

/// Runs real Kubernetes control planes on loopback, konnector's executor and two gateways, and plays each
/// cluster's life through the gateways exactly as CAPI calls them.
#[derive(Parser, Debug)]
#[command(name = "konnector-sandbox", version = konnector_runtime::VERSION)]
struct Args {
    /// Leave the first cluster installed and healthy (its lifecycle stops after BeforeClusterUpgrade), keep
    /// serving, and print commands that work against it: kubectl, grpcurl and a real hook call. Ctrl-C stops
    /// everything. Without it, every cluster plays its whole life and the sandbox exits.
    #[arg(long, env = "KONNECTOR_SANDBOX_KEEP")]
    keep: bool,
    /// Print the machine-readable summary (JSON) on stdout at the end. It is always written to
    /// STATE_DIR/summary.json.
    #[arg(long, env = "KONNECTOR_SANDBOX_JSON")]
    json: bool,
    /// Deprecated: playing the scenario once and exiting is what the sandbox does without --keep.
    #[arg(long, env = "KONNECTOR_SANDBOX_ONCE", hide = true, conflicts_with = "keep")]
    once: bool,
    /// How many workload clusters, played in parallel.
    #[arg(long, env = "KONNECTOR_SANDBOX_CLUSTERS", default_value_t = 2)]
    clusters: usize,
    /// Which CAPI request shape to emulate: 1.10, 1.12 or 1.14.
    #[arg(long, env = "KONNECTOR_SANDBOX_CAPI_VERSION", default_value = "1.14")]
    capi_version: CapiShape,
    /// Let CAPI's own core manager (v1.14.2 or v1.13.6, built from its Go module by hack/ensure-capi.sh) drive
    /// every cluster's life instead of the sandbox's CAPI stand-in; prints each hook as CAPI called it.
    /// --capi-version, --rotate-credentials and --bad-pc-password belong to the stand-in and do not apply.
    #[arg(long, env = "KONNECTOR_SANDBOX_REAL_CAPI", value_parser = ["v1.14.2", "v1.13.6"])]
    real_capi: Option<String>,
    /// Write DIR/sandbox.json (gateway URLs and CA, executor address, kubeconfigs) as soon as everything is up,
    /// and DIR/summary.json at the end. A temporary directory, removed on exit, when unset.
    #[arg(long, env = "KONNECTOR_SANDBOX_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Change the Prism Central password between AfterControlPlaneInitialized and BeforeClusterUpgrade.
    #[arg(long, env = "KONNECTOR_SANDBOX_ROTATE_CREDENTIALS")]
    rotate_credentials: bool,
    /// Make the Prism Central stand-in refuse the clusters' password, to see a failed preflight.
    #[arg(long, env = "KONNECTOR_SANDBOX_BAD_PC_PASSWORD")]
    bad_pc_password: bool,
    /// Log filter for konnector's own logs (they go to stderr).
    #[arg(
        long,
        env = "RUST_LOG",
        default_value = "warn,kube_client::client::builder=off"
    )]
    log_level: String,
    /// Export the spans of the in-process gateways and executor over OTLP to this collector (e.g.
    /// http://127.0.0.1:4317; OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf for OTLP/HTTP), as service
    /// konnector-sandbox. Without it, no spans are exported.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

fn print_step(cluster: &str, step: &StepReport) {
    let mark = if step.ok { "ok  " } else { "FAIL" };
    let mut line = format!("{mark} [{cluster}] {}", step.step);
    if let Some(gw) = &step.gateway {
        line.push_str(&format!(" via {gw}"));
    }
    if let Some(a) = &step.answer {
        line.push_str(&format!(" -> {}", a.status));
        if let Some(r) = a.retry_after_seconds {
            line.push_str(&format!(" retryAfterSeconds={r}"));
        }
        if step.calls > 1 {
            line.push_str(&format!(" after {} calls", step.calls));
        }
        if !a.message.is_empty() {
            line.push_str(&format!(" \"{}\"", a.message));
        }
    }
    line.push_str(&format!(" ({} ms)", step.millis));
    let mut out = std::io::stdout().lock();
    for wait in &step.waits {
        let _ = writeln!(
            out,
            "wait [{cluster}] {} -> {} retryAfterSeconds={} \"{}\"",
            step.step,
            wait.status,
            wait.retry_after_seconds.unwrap_or_default(),
            wait.message
        );
    }
    let _ = writeln!(out, "{line}");
    for change in &step.changes {
        let _ = writeln!(out, "       {change}");
    }
    if let Some(e) = &step.error {
        let _ = writeln!(out, "       error: {e}");
    }
}

/// The repository's `hack/` directory as the person reading the output would type it: relative when the sandbox runs
/// from the repository root (as hack/sandbox.sh runs it), absolute otherwise. An absolute path from the machine
/// that ran it has no place in output people copy from.
fn hack_dir() -> PathBuf {
    let root = konnector_tests::tools::repo_root();
    let root = root.canonicalize().unwrap_or(root);
    let here = std::env::current_dir().and_then(|d| d.canonicalize());
    if here.is_ok_and(|d| d == root) {
        PathBuf::from("hack")
    } else {
        root.join("hack")
    }
}

/// The executables the printed commands need, and whether each is on PATH.
fn missing_tools() -> Vec<&'static str> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["kubectl", "grpcurl", "curl"]
        .into_iter()
        .filter(|tool| !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let provider = args
        .otlp_endpoint
        .as_deref()
        .filter(|e| !e.trim().is_empty())
        .map(|endpoint| telemetry::otlp_provider_to(SERVICE_NAME, Some(endpoint)))
        .transpose()?;
    // The log filter keeps the sandbox's own output quiet; spans are exported at info whatever it says.
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .event_format(telemetry::WithTraceId::plain())
                .with_filter(tracing_subscriber::EnvFilter::try_new(&args.log_level)?),
        )
        .with(provider.as_ref().map(|p| {
            telemetry::tracing_layer(p, SERVICE_NAME).with_filter(tracing_subscriber::EnvFilter::new("info"))
        }))
        .init();
    let _telemetry = telemetry::Telemetry::from_provider(provider);
    if args.once {
        tracing::warn!("--once is deprecated: it is what the sandbox does without --keep");
    }

    if let Some(version) = &args.real_capi {
        return real_capi(version, &args).await;
    }

    let sandbox = Sandbox::start_reporting(
        SandboxOptions {
            clusters: args.clusters,
            shape: args.capi_version,
            rotate_credentials: args.rotate_credentials,
            state_dir: args.state_dir.clone(),
            keep: args.keep,
            bad_pc_password: args.bad_pc_password,
        },
        &|line| println!("{line}"),
    )
    .await?;
    println!(
        "up: addresses in {}",
        sandbox.state_dir().join("sandbox.json").display()
    );
    println!(
        "playing each cluster's lifecycle as CAPI {} would call it, {} cluster(s) in parallel{}:",
        args.capi_version,
        args.clusters,
        match sandbox.kept_cluster() {
            Some(kept) => format!(" ({kept} stops once installed and upgraded, and stays)"),
            None => String::new(),
        }
    );

    let summary = match sandbox.play(Arc::new(print_step)).await {
        Ok(s) => s,
        Err(e) => {
            sandbox.stop().await?;
            return Err(e);
        }
    };
    let summary_file = sandbox.state_dir().join("summary.json");
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    println!(
        "{} in {:.1}s; the summary is in {}{}",
        if summary.ok {
            "every step behaved as expected"
        } else {
            "a step misbehaved"
        },
        summary.millis as f64 / 1000.0,
        summary_file.display(),
        if sandbox.state_dir_is_temporary() {
            " (removed on exit; --state-dir DIR keeps it)"
        } else {
            ""
        }
    );

    if args.keep && summary.ok {
        // Stop everything before reporting a failure here too, so the error is not buried under the warnings
        // of watches and Lease renewals whose API servers vanish as the process exits.
        let commands = match sandbox.try_commands().await {
            Ok(c) => c,
            Err(e) => {
                sandbox.stop().await?;
                return Err(e);
            }
        };
        let tools = hack_dir();
        println!(
            "\nkonnector keeps serving, with {} installed. Try these (also in {}):",
            sandbox.state().kept_cluster.unwrap_or_default(),
            sandbox.state_dir().join("try.sh").display()
        );
        // hack/sandbox.sh put the tools on this process's PATH, not on the caller's shell's: say how.
        println!(
            "(they use kubectl, grpcurl, curl and the konnector CLI: `. {}/env.sh` puts grpcurl on your shell's PATH)",
            tools.display()
        );
        // The executor and the gateways are libraries here, not processes: say where their logs and metrics are.
        let state = sandbox.state();
        println!(
            "(the executor and both gateways run inside this process: their logs are its stderr, filtered by \
             --log-level or RUST_LOG, e.g. RUST_LOG=info; each serves /metrics as on its admin port: {})",
            state
                .metrics_urls
                .iter()
                .map(|(name, url)| format!("{name} {url}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let cli = konnector_tests::sandbox::cli_program();
        if !std::path::Path::new(&cli).is_file() {
            println!("({cli} not found: `cargo build -p konnector-cli` builds the konnector CLI)");
        }
        let missing = missing_tools();
        if !missing.is_empty() {
            println!(
                "({} not found: `bash {}/ensure-tools.sh grpcurl kubectl` installs them)",
                missing.join(", "),
                tools.display()
            );
        }
        for c in &commands {
            println!("\n# {}\n$ {}", c.what, c.command);
        }
        println!("\nNext, on a real management cluster: docs/operating.md.");
        println!("press Ctrl-C to stop everything");
        tokio::signal::ctrl_c().await?;
        println!("stopping…");
    }
    let ok = summary.ok;
    sandbox.stop().await?;
    if !ok {
        let failed: Vec<String> = summary
            .clusters
            .iter()
            .filter_map(|c| {
                c.steps
                    .iter()
                    .find(|s| !s.ok)
                    .map(|s| format!("{}: {}", c.cluster, s.step))
            })
            .collect();
        anyhow::bail!(
            "the lifecycle did not behave as expected at: {}",
            failed.join("; ")
        );
    }
    Ok(())
}

/// `--real-capi`: CAPI's own manager drives the clusters (`konnector_tests::sandbox_real`).
async fn real_capi(version: &str, args: &Args) -> anyhow::Result<()> {
    let options = RealOptions {
        version: version.to_owned(),
        clusters: args.clusters,
        keep: args.keep,
    };
    let say = |line: &str| println!("{line}");
    let sandbox = RealSandbox::start(&options, &say).await?;
    println!(
        "every hook below is one call CAPI {version} made, as the recording proxy in front of the gateway saw it:"
    );
    let ok = sandbox.play(&options, &say).await;
    if args.keep && ok {
        let (mgmt, workload) = sandbox.kubeconfigs()?;
        println!("\nCAPI keeps running, with tenants/wl-1 installed. Try these:");
        println!(
            "\n# konnector's handlers, as CAPI discovered them\n$ kubectl --kubeconfig {mgmt} get extensionconfig konnector -o jsonpath='{{.status.handlers[*].name}}'"
        );
        println!("\n# the Cluster and its HelmChartProxy\n$ kubectl --kubeconfig {mgmt} get clusters,hcp -A");
        println!(
            "\n# the credentials Secret konnector copied onto wl-1\n$ kubectl --kubeconfig {workload} -n ntnx-system get secrets,configmaps"
        );
        println!("press Ctrl-C to stop everything");
        tokio::signal::ctrl_c().await?;
        println!("stopping…");
    }
    drop(sandbox);
    if !ok {
        anyhow::bail!("a cluster's life did not go as expected under real CAPI");
    }
    Ok(())
}
