//! The konnector gateway binary: flags in, [`konnector_gateway::serve`] out.

use clap::Parser;
use konnector_gateway::args::Args;
use konnector_runtime::admin::{self, Readiness};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init()?;
    konnector_runtime::tls::install_crypto_provider();
    let config = args.gateway_config()?;
    let shutdown = konnector_runtime::shutdown::on_signal();
    let readiness = Readiness::default();
    let admin = tokio::spawn(admin::serve(
        args.admin_listen,
        admin::router(readiness.clone(), axum::Router::new()),
        shutdown.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let served =
        konnector_gateway::serve(config, listener, args.tls_files(), shutdown.clone(), readiness).await;
    shutdown.cancel();
    admin.await??;
    served
}
