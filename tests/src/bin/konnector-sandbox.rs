//! konnector-sandbox: the whole konnector lifecycle, for real, on one machine. See `konnector_tests::sandbox`.

use std::{io::Write, path::PathBuf, sync::Arc};

use tracing_subscriber::{Layer, layer::SubscriberExt, util::SubscriberInitExt};

use clap::Parser;
use konnector_runtime::telemetry;
use konnector_tests::{
    capi::CapiShape,
    sandbox::{Sandbox, SandboxOptions},
    scenario::StepReport,
};

const SERVICE_NAME: &str = "konnector-sandbox";

/// Runs real Kubernetes control planes on loopback, konnector's executor and two gateways, and plays each
/// cluster's life through the gateways exactly as CAPI calls them.
#[derive(Parser, Debug)]
#[command(name = "konnector-sandbox", version)]
struct Args {
    /// Play the scenario and exit. Without it, keep serving afterwards and print how to call everything.
    #[arg(long, env = "KONNECTOR_SANDBOX_ONCE")]
    once: bool,
    /// How many workload clusters, played in parallel.
    #[arg(long, env = "KONNECTOR_SANDBOX_CLUSTERS", default_value_t = 2)]
    clusters: usize,
    /// Which CAPI request shape to emulate: 1.10, 1.12 or 1.14.
    #[arg(long, env = "KONNECTOR_SANDBOX_CAPI_VERSION", default_value = "1.14")]
    capi_version: CapiShape,
    /// Write DIR/sandbox.json (gateway URLs and CA, executor address, kubeconfigs) as soon as everything is up.
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
    /// Export the spans of the in-process gateways and executor over OTLP/gRPC to this collector
    /// (e.g. http://127.0.0.1:4317), as service konnector-sandbox. Without it, no spans are exported.
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
                .with_filter(tracing_subscriber::EnvFilter::try_new(&args.log_level)?),
        )
        .with(provider.as_ref().map(|p| {
            telemetry::tracing_layer(p, SERVICE_NAME).with_filter(tracing_subscriber::EnvFilter::new("info"))
        }))
        .init();
    let _telemetry = telemetry::Telemetry::from_provider(provider);

    println!(
        "starting {} workload control plane(s), a management control plane, the executor and 2 gateways…",
        args.clusters
    );
    let sandbox = Sandbox::start(SandboxOptions {
        clusters: args.clusters,
        shape: args.capi_version,
        rotate_credentials: args.rotate_credentials,
        state_dir: args.state_dir.clone(),
        bad_pc_password: args.bad_pc_password,
    })
    .await?;
    let state = sandbox.state();
    println!(
        "up: state in {}",
        sandbox.state_dir().join("sandbox.json").display()
    );
    println!(
        "playing each cluster's lifecycle as CAPI {} would call it:",
        args.capi_version
    );

    let summary = sandbox.play(Arc::new(print_step)).await;
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            sandbox.stop().await?;
            return Err(e);
        }
    };
    println!("{}", serde_json::to_string_pretty(&summary)?);

    if !args.once {
        let gw = &state.gateway_urls[0];
        let ca = state.gateway_ca_file.display();
        println!("\nkonnector keeps serving. Try:");
        println!(
            "  curl --cacert {ca} -X POST {gw}/hooks.runtime.cluster.x-k8s.io/v1alpha1/discovery \\\n    -d '{{\"apiVersion\":\"hooks.runtime.cluster.x-k8s.io/v1alpha1\",\"kind\":\"DiscoveryRequest\"}}'"
        );
        println!(
            "  curl --cacert {ca} -X POST '{gw}/hooks.runtime.cluster.x-k8s.io/v1alpha1/beforeclusterdelete/konnector-bcd?timeout=10s' \\\n    --data-binary @tests/golden/v1.14/beforeclusterdelete.json"
        );
        println!("  grpcurl -plaintext {} list", state.executor_address);
        println!(
            "  kubectl --kubeconfig {} get hcp,hrp -A",
            state.management_kubeconfig.display()
        );
        println!("press Ctrl-C to stop everything");
        tokio::signal::ctrl_c().await?;
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
