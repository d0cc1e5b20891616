//! konnector's gateway: the CAPI Runtime SDK over HTTPS, translated into executor gRPC calls.
//!
//! The gateway holds no Kubernetes credentials. It answers Discovery itself, turns each lifecycle hook's JSON into
//! a `ClusterRef` naming the Cluster ([`translate`]; the executor reads the rest from the live Cluster), calls the executor's `ApplyAgent` or `RemoveAgent`, and maps the outcome to
//! the hook answer in one place ([`answer::hook_answer`]).
//!
//! Library-first: [`router`] is a plain axum `Router` (testable with `tower::ServiceExt::oneshot`), [`serve`] runs
//! it over HTTPS, and the binary only parses flags ([`args::Args`]) and calls [`serve`].
#![deny(missing_docs)]

pub mod answer;
pub mod args;
pub mod capi;
pub mod catalog;
pub mod config;
pub mod executor;
pub mod http;
pub mod server;
pub mod translate;

pub use config::{ExecutorEndpoint, ExecutorTransport, GatewayConfig, HookPolicies, HookPolicy};
pub use http::{GatewayState, router};
pub use server::TlsFiles;

use konnector_runtime::{admin::Readiness, metrics::Metrics};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Validates `config`, connects (lazily) to the executor, keeps `readiness` in step with the executor's health,
/// and serves the hooks over HTTPS on `listener` until `shutdown` is cancelled.
///
/// Errors are startup errors (bad configuration, unreadable certificate files); once serving, the gateway runs
/// until shutdown.
pub async fn serve(
    config: GatewayConfig,
    listener: TcpListener,
    tls: TlsFiles,
    shutdown: CancellationToken,
    readiness: Readiness,
) -> anyhow::Result<()> {
    serve_with_metrics(config, listener, tls, shutdown, readiness, &Metrics::default()).await
}

/// [`serve`], registering the hook metrics in `metrics` (to serve at `/metrics` on the admin port).
pub async fn serve_with_metrics(
    config: GatewayConfig,
    listener: TcpListener,
    tls: TlsFiles,
    shutdown: CancellationToken,
    readiness: Readiness,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    konnector_runtime::tls::install_crypto_provider();
    let config = config.validate()?;
    let tls_config = server::rustls_config(&tls, config.cert_reload_interval)?;
    let channel = executor::channel(&config.executor)?;
    let options = server::ServerOptions {
        header_read_timeout: config.header_read_timeout,
        shutdown_grace: config.shutdown_grace,
    };
    let probe = tokio::spawn(executor::watch_readiness(
        channel.clone(),
        readiness,
        executor::HEALTH_INTERVAL,
        shutdown.clone(),
    ));
    let app = router(GatewayState::with_metrics(config, channel, metrics));
    let result = server::serve_https(app, listener, tls_config, options, shutdown.clone()).await;
    shutdown.cancel();
    let _ = probe.await;
    result
}
