//! konnector-bench: side-by-side latency ratios of a re-apply through the gateway, through the executor's gRPC
//! API, and as the minimal sequence of Kubernetes API calls. See `konnector_tests::bench`.

use clap::Parser;

/// Measures the three paths in interleaved rounds against real API servers and prints medians and ratios.
#[derive(Parser, Debug)]
#[command(name = "konnector-bench", version)]
struct Args {
    /// Rounds to measure, after one warm-up round.
    #[arg(long, env = "KONNECTOR_BENCH_ROUNDS", default_value_t = 60)]
    rounds: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter("error,kube_client::client::builder=off")
        .with_writer(std::io::stderr)
        .init();
    let report = konnector_tests::bench::run(args.rounds).await?;
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
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
