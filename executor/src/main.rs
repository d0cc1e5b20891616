//! The konnector executor binary: flags in ([`konnector_executor::args::Args`]), [`konnector_executor::serve`]
//! out. It has the gateway binary's shape: parse (a flag error is logged as JSON when JSON logs are asked for),
//! then [`LogArgs::run_main`] installs logging, logs deprecated flags, and logs a fatal error through the
//! configured format.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use konnector_executor::{Executor, args::Args};
use konnector_runtime::{admin, telemetry::LogArgs};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Args = konnector_runtime::telemetry::parse_flags();
    let mut log: LogArgs = args.log.clone();
    log.log_level = konnector_executor::limits::log_filter(&log.log_level);
    let warnings = args.deprecations();
    log.run_main("konnector-executor", warnings, run(args)).await
}

/// Connects to the management cluster, serves gRPC and the admin endpoints until a shutdown signal, and turns
/// ready once the management API server answers.
async fn run(args: Args) -> anyhow::Result<()> {
    konnector_runtime::tls::install_crypto_provider();
    let config = args.executor_config()?;
    let options = args.server_options()?;
    let client = args.management_client().await?;
    let shutdown = konnector_runtime::shutdown::on_signal();
    let readiness = admin::Readiness::default();
    // `serve` registers the server's metrics (build info, connections, TLS) beside the executor's.
    let executor = Executor::new(client, config);
    // Through the executor's client stack, so even /version answers are bounded.
    tokio::spawn(watch_readiness(
        executor.management_client(),
        readiness.clone(),
        shutdown.clone(),
    ));
    let reconciler = args.reconcile.config(&args.pod_namespace).map(|config| {
        tokio::spawn(konnector_executor::reconcile::run(
            executor.clone(),
            config,
            shutdown.clone(),
        ))
    });
    // The admin port outlives the gRPC port: while calls drain, probes see "not ready" rather than a refusal.
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(
        args.admin_listen_addr(),
        admin::router(readiness, executor.metrics().registry().router()),
        admin_stop.clone(),
    ));
    let listener = konnector_runtime::net::bind(args.listen_addr())
        .await
        .with_context(|| format!("cannot listen on {}", args.listen_addr()))?;
    let served = konnector_executor::serve(executor, listener, options, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(reconciler) = reconciler {
        // Gives the Lease up, so another replica takes over at once.
        let _ = reconciler.await;
    }
    admin_stop.cancel();
    admin_task.await??;
    served
}

/// Marks the executor ready while the management API server answers, re-checking every 10 seconds.
async fn watch_readiness(client: kube::Client, readiness: admin::Readiness, shutdown: CancellationToken) {
    loop {
        let check = tokio::time::timeout(Duration::from_secs(5), client.apiserver_version());
        let ok = tokio::select! {
            // Draining: not ready from now on (even mid-check), so the Service sends no new connections here.
            () = shutdown.cancelled() => break,
            result = check => result.is_ok_and(|r| r.is_ok()),
        };
        if ok != readiness.get() {
            tracing::info!(ready = ok, "management API server readiness changed");
        }
        readiness.set(ok);
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(Duration::from_secs(if ok { 10 } else { 2 })) => {}
        }
    }
    readiness.set(false);
}
