//! konnector-sandbox: the whole konnector lifecycle, for real, on one machine, driven by CAPI's own core manager
//! (`konnector_tests::sandbox_real`), or by the CAPI stand-in for the request shapes no served CAPI produces
//! (`konnector_tests::sandbox`).

use std::{path::PathBuf, sync::Arc};

use tracing_subscriber::{Layer, layer::SubscriberExt, util::SubscriberInitExt};

use clap::Parser;
use konnector_runtime::telemetry;
use konnector_tests::{
    capi_manager::BUILT_RELEASES,
    capi_stand_in::CapiShape,
    sandbox::{Sandbox, SandboxOptions},
    sandbox_output::{metrics_list, print_outcome, print_step, print_try},
    sandbox_real::{NO_ADDON, NO_CREDS, RealOptions, RealSandbox},
};

const SERVICE_NAME: &str = "konnector-sandbox";

/// Runs real Kubernetes control planes on loopback, CAPI's own core manager, konnector's executor and gateway,
/// and plays each cluster's life: CAPI calls the hooks when the Cluster's state says so.
#[derive(Parser, Debug)]
#[command(name = "konnector-sandbox", version = konnector_runtime::VERSION)]
struct Args {
    /// Leave the first cluster installed and healthy (its life stops after BeforeClusterUpgrade), keep serving,
    /// and print commands that work against it: kubectl, grpcurl, the konnector CLI and real hook calls. Ctrl-C
    /// stops everything. Without it, every cluster plays its whole life and the sandbox exits.
    #[arg(long, env = "KONNECTOR_SANDBOX_KEEP")]
    keep: bool,
    /// Print the machine-readable summary (JSON) on stdout at the end. It is always written to
    /// STATE_DIR/summary.json.
    #[arg(long, env = "KONNECTOR_SANDBOX_JSON")]
    json: bool,
    /// Deprecated: playing the scenario once and exiting is what the sandbox does without --keep.
    #[arg(long, env = "KONNECTOR_SANDBOX_ONCE", hide = true, conflicts_with = "keep")]
    once: bool,
    /// How many clusters with the addon, played in parallel. With real CAPI two more play beside them: one
    /// without the addon, and one whose credentials Secret is missing until CAPI has shown the failed hook.
    #[arg(long, env = "KONNECTOR_SANDBOX_CLUSTERS", default_value_t = 2)]
    clusters: usize,
    /// Who calls the hooks: `real`, CAPI's own core manager (built from its Go module by hack/ensure-capi.sh), or
    /// `stand-in`, the sandbox's CAPI stand-in. The stand-in is only for the request shapes of CAPI 1.10 and
    /// 1.12, which no CAPI release served here produces.
    #[arg(long, env = "KONNECTOR_SANDBOX_CAPI", default_value = "real", value_parser = ["real", "stand-in"])]
    capi: String,
    /// With real CAPI, the release to run: v1.14.2 (default) or v1.13.6, the ones hack/ensure-capi.sh builds.
    /// With --capi stand-in, the request shape to emulate: 1.10 or 1.12 (default).
    #[arg(long, env = "KONNECTOR_SANDBOX_CAPI_VERSION")]
    capi_version: Option<String>,
    /// Write DIR/sandbox.json (gateway URLs and CA, executor address, kubeconfigs) as soon as everything is up,
    /// and DIR/summary.json at the end. A temporary directory, removed on exit, when unset.
    #[arg(long, env = "KONNECTOR_SANDBOX_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// With --capi stand-in: change the Prism Central password between AfterControlPlaneInitialized and
    /// BeforeClusterUpgrade.
    #[arg(long, env = "KONNECTOR_SANDBOX_ROTATE_CREDENTIALS")]
    rotate_credentials: bool,
    /// With --capi stand-in: make the Prism Central stand-in refuse the clusters' password, to see a failed
    /// preflight.
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

/// Who calls the hooks, as the flags chose it.
enum Mode {
    Real(String),
    StandIn(CapiShape),
}

impl Args {
    fn mode(&self) -> anyhow::Result<Mode> {
        let version = self.capi_version.as_deref();
        if self.capi == "real" {
            if self.rotate_credentials || self.bad_pc_password {
                anyhow::bail!("--rotate-credentials and --bad-pc-password apply to --capi stand-in only");
            }
            let version = version.unwrap_or(BUILT_RELEASES[0]);
            if !BUILT_RELEASES.contains(&version) {
                anyhow::bail!(
                    "--capi-version {version}: real CAPI runs one of the releases hack/ensure-capi.sh builds ({}); \
                     the request shapes of CAPI 1.10 and 1.12 are --capi stand-in's",
                    BUILT_RELEASES.join(", ")
                );
            }
            return Ok(Mode::Real(version.to_owned()));
        }
        let shape: CapiShape = version.unwrap_or("1.12").parse().map_err(anyhow::Error::msg)?;
        if shape == CapiShape::V1_14 {
            anyhow::bail!(
                "--capi stand-in --capi-version {}: CAPI 1.14 runs for real (the default); the stand-in stays only \
                 for the request shapes no served CAPI produces, 1.10 and 1.12",
                version.unwrap_or_default()
            );
        }
        Ok(Mode::StandIn(shape))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mode = args.mode()?;
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
    match mode {
        Mode::Real(version) => real_capi(version, &args).await,
        Mode::StandIn(shape) => stand_in(shape, &args).await,
    }
}

/// The default: CAPI's own manager drives the clusters (`konnector_tests::sandbox_real`).
async fn real_capi(version: String, args: &Args) -> anyhow::Result<()> {
    konnector_runtime::tls::install_crypto_provider();
    let say = |line: &str| println!("{line}");
    let sandbox = RealSandbox::start(
        RealOptions {
            version: version.clone(),
            clusters: args.clusters,
            keep: args.keep,
            state_dir: args.state_dir.clone(),
        },
        &say,
    )
    .await?;
    println!(
        "up: addresses in {}",
        sandbox.state_dir().join("sandbox.json").display()
    );
    let lives = sandbox.lives();
    println!(
        "playing {} Clusters' lives in parallel, driven by CAPI {version}{}:",
        lives.len(),
        match sandbox.kept_cluster() {
            Some(kept) => format!(" ({kept} stops once installed and upgraded, and stays)"),
            None => String::new(),
        }
    );
    let with_addon: Vec<&str> = sandbox.workloads.iter().map(|(n, _)| n.as_str()).collect();
    println!(
        "  {}: create, upgrade, delete; {NO_ADDON}: a Cluster without the addon; {NO_CREDS}: its credentials \
         Secret is created only after CAPI has shown the failed hook",
        with_addon.join(", ")
    );
    println!(
        "  (a `hook` line is one call CAPI made, as a recording proxy in front of the gateway saw it: handler, \
         attempt, answer, retryAfterSeconds)"
    );
    let summary = match sandbox.play(&say).await {
        Ok(s) => s,
        Err(e) => {
            sandbox.stop().await?;
            return Err(e);
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    print_outcome(
        summary.ok,
        summary.millis,
        sandbox.state_dir(),
        sandbox.state_dir_is_temporary(),
    );
    if args.keep && summary.ok {
        let commands = match sandbox.try_commands() {
            Ok(c) => c,
            Err(e) => {
                sandbox.stop().await?;
                return Err(e);
            }
        };
        let state = sandbox.state();
        print_try(
            &commands,
            &state,
            sandbox.state_dir(),
            &format!(
                "(the executor and the gateway run inside this process: their logs are its stderr, filtered by \
                 --log-level or RUST_LOG, e.g. RUST_LOG=info; each serves /metrics as on its admin port: {}. CAPI's \
                 core manager is a process of its own, logging to {})",
                metrics_list(&state),
                sandbox.env.capi.log_path().display()
            ),
        );
        tokio::signal::ctrl_c().await?;
        println!("stopping…");
    }
    sandbox.stop().await?;
    if !summary.ok {
        let failed: Vec<String> = summary
            .clusters
            .iter()
            .filter_map(|c| {
                c.steps
                    .iter()
                    .find(|s| !s.ok)
                    .map(|s| format!("{}: {}", c.cluster, s.error.as_deref().unwrap_or(&s.step)))
            })
            .collect();
        anyhow::bail!(
            "a cluster's life under CAPI {version} did not go as expected: {}",
            failed.join("; ")
        );
    }
    Ok(())
}

/// `--capi stand-in`: the sandbox's CAPI stand-in calls the hooks (`konnector_tests::sandbox`).
async fn stand_in(shape: CapiShape, args: &Args) -> anyhow::Result<()> {
    let sandbox = Sandbox::start_reporting(
        SandboxOptions {
            clusters: args.clusters,
            shape,
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
        "playing each cluster's lifecycle as CAPI {shape} would call it (CAPI stand-in), {} cluster(s) in \
         parallel{}:",
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
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    print_outcome(
        summary.ok,
        summary.millis,
        sandbox.state_dir(),
        sandbox.state_dir_is_temporary(),
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
        let state = sandbox.state();
        print_try(
            &commands,
            &state,
            sandbox.state_dir(),
            &format!(
                "(the executor and both gateways run inside this process: their logs are its stderr, filtered by \
                 --log-level or RUST_LOG, e.g. RUST_LOG=info; each serves /metrics as on its admin port: {})",
                metrics_list(&state)
            ),
        );
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
