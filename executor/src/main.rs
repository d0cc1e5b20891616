//! The konnector executor binary: flags in, [`konnector_executor::cli::run`] out.

use clap::Parser;
use konnector_executor::cli::{Args, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    konnector_runtime::tls::install_crypto_provider();
    let args = Args::parse();
    let telemetry = args.log.init_with_tracing("konnector-executor")?;
    let result = run(args).await;
    drop(telemetry);
    result
}
