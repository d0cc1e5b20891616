//! The konnector gateway binary: flags in, [`konnector_gateway::serve`] out.

use clap::Parser;
use konnector_gateway::args::Args;
use konnector_runtime::{
    admin::{self, Readiness},
    metrics::Metrics,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = args.log.init_with_tracing("konnector-gateway")?;
    konnector_runtime::tls::install_crypto_provider();
    let config = args.gateway_config()?;
    let shutdown = konnector_runtime::shutdown::on_signal();
    let readiness = Readiness::default();
    let metrics = Metrics::default();
    let admin = tokio::spawn(admin::serve(
        args.admin_listen,
        admin::router(readiness.clone(), metrics.router()),
        shutdown.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let served = konnector_gateway::serve_with_metrics(
        config,
        listener,
        args.tls_files(),
        shutdown.clone(),
        readiness,
        &metrics,
    )
    .await;
    shutdown.cancel();
    admin.await??;
    drop(telemetry);
    served
}
