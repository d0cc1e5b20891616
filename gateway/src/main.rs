//! The konnector gateway binary: flags in ([`konnector_gateway::args::Args`]),
//! [`konnector_gateway::serve_with_metrics`] out. It has the executor binary's shape: parse (a flag error is logged
//! as JSON when JSON logs are asked for), then [`LogArgs::run_main`] installs logging, logs deprecated flags, and
//! logs a fatal error through the configured format.

use std::process::ExitCode;

use anyhow::Context;
use konnector_gateway::args::Args;
use konnector_runtime::{
    admin::{self, Readiness},
    metrics::Metrics,
    telemetry::LogArgs,
};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = konnector_runtime::telemetry::parse_flags();
    let log: LogArgs = args.log.clone();
    let warnings = args.deprecations();
    log.run_main("konnector-gateway", warnings, run(args)).await
}

/// Serves the hooks over HTTPS and the admin endpoints until a shutdown signal, then drains.
async fn run(args: Args) -> anyhow::Result<()> {
    konnector_runtime::tls::install_crypto_provider();
    let config = args.gateway_config()?;
    let shutdown = konnector_runtime::shutdown::on_signal();
    let readiness = Readiness::default();
    let metrics = Metrics::default();
    // The admin port outlives the hook port: while hooks drain, probes see "not ready" rather than a refusal.
    let admin_stop = tokio_util::sync::CancellationToken::new();
    let admin = tokio::spawn(admin::serve(
        args.admin_listen,
        admin::router(readiness.clone(), metrics.router()),
        admin_stop.clone(),
    ));
    let listener = konnector_runtime::net::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
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
    admin_stop.cancel();
    admin.await??;
    served
}
