//! konnector-sandbox: starts a management control plane and one workload control plane per cluster on loopback,
//! and prints how to reach them.

use clap::Parser;
use konnector_tests::{ControlPlane, management_plane};

/// Local sandbox with real Kubernetes control planes.
#[derive(Parser, Debug)]
#[command(name = "konnector-sandbox", version)]
struct Args {
    /// How many workload clusters to start.
    #[arg(long, env = "KONNECTOR_SANDBOX_CLUSTERS", default_value_t = 1)]
    clusters: usize,
    /// Start everything, print how to reach it, and exit.
    #[arg(long)]
    once: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt().with_env_filter("info").init();
    let (mgmt, _client) = management_plane("management").await?;
    let mut workloads = Vec::new();
    for i in 0..args.clusters {
        workloads.push(ControlPlane::start(&format!("workload-{i}")).await?);
    }
    println!(
        "management API server: {} (kubeconfig: {})",
        mgmt.url(),
        mgmt.kubeconfig_path().display()
    );
    for w in &workloads {
        println!(
            "{} API server: {} (kubeconfig: {})",
            w.name(),
            w.url(),
            w.kubeconfig_path().display()
        );
    }
    println!(
        "try: kubectl --kubeconfig {} get crds",
        mgmt.kubeconfig_path().display()
    );
    if !args.once {
        println!("press Ctrl-C to stop and remove everything");
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}
