//! konnector-bench: konnector's benchmarks against real API servers.
//!
//! - Without `--clusters`: side-by-side latency ratios of one re-apply through the gateway, through the executor's
//!   gRPC API, and as the minimal sequence of Kubernetes API calls (`konnector_tests::bench`).
//! - With `--clusters N`: the scale benchmark (`konnector_tests::scale`): N Clusters, hooks at `--concurrency`
//!   through the release binaries, beside the minimal and CAREN-like paths, with memory, CPU and API calls.

use std::time::Duration;

use clap::Parser;

/// Measures konnector against real API servers and prints a table and JSON with ratios.
#[derive(Parser, Debug)]
#[command(name = "konnector-bench", version)]
struct Args {
    /// Latency benchmark: rounds to measure, after one warm-up round.
    #[arg(long, env = "KONNECTOR_BENCH_ROUNDS", default_value_t = 60)]
    rounds: usize,
    /// Scale benchmark: this many Clusters (one shared workload API server).
    #[arg(long, env = "KONNECTOR_BENCH_CLUSTERS")]
    clusters: Option<usize>,
    /// Scale benchmark: hooks in flight at once.
    #[arg(long, env = "KONNECTOR_BENCH_CONCURRENCY", default_value_t = 64)]
    concurrency: usize,
    /// Scale benchmark: how long to watch the idle executor for the reconciler's steady-state cost (e.g. 60s).
    #[arg(long, env = "KONNECTOR_BENCH_IDLE", default_value = "60s", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// Scale benchmark: the hook-phase executor's `--prism-central-checks` (`off`, `warn`: the chart's default,
    /// `block`). The Clusters name a Prism Central that does not exist, so `warn` measures an unreachable one.
    #[arg(long, env = "KONNECTOR_BENCH_PRISM_CENTRAL_CHECKS", default_value = "off", value_parser = ["off", "warn", "block"])]
    prism_central_checks: String,
    /// Scale benchmark: the reconciling executor's `--reconcile-resync` (e.g. 20s), which is also how long its first
    /// pass over every Cluster takes before the idle phase; without it, the executor's default (5m).
    #[arg(long, env = "KONNECTOR_BENCH_RECONCILE_RESYNC", value_parser = humantime::parse_duration)]
    reconcile_resync: Option<Duration>,
    /// Print only the JSON report.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter("error,kube_client::client::builder=off")
        .with_writer(std::io::stderr)
        .init();
    if let Some(clusters) = args.clusters {
        let report = konnector_tests::scale::run(konnector_tests::scale::ScaleOptions {
            clusters,
            concurrency: args.concurrency,
            idle: args.idle,
            bin_dir: konnector_tests::tools::static_bin_dir()?,
            reconcile_resync: args.reconcile_resync,
            prism_central_checks: args.prism_central_checks,
        })
        .await?;
        if !args.json {
            print!("{}", konnector_tests::scale::table(&report));
        }
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let report = konnector_tests::bench::run(args.rounds).await?;
    if !args.json {
        println!(
            "{:<10} {:>10} {:>10} {:>10}",
            "path", "p50 (µs)", "p90 (µs)", "min (µs)"
        );
        for (name, s) in &report.paths {
            println!("{name:<10} {:>10} {:>10} {:>10}", s.p50_us, s.p90_us, s.min_us);
        }
        for (name, r) in &report.ratios {
            println!("{name:<16} {r:.2}x");
        }
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
