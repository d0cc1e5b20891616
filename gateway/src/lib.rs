//! konnector's gateway: the CAPI Runtime SDK over HTTPS, translated into executor gRPC calls.
//!
//! The gateway holds no Kubernetes credentials. It answers Discovery itself ([`discovery`]), decodes each lifecycle
//! hook's JSON ([`decode`]), names the Cluster with a `ClusterRef` ([`translate`]; the executor reads everything
//! else from the live Cluster), answers Success at once for a Cluster whose body shows no addon (except
//! BeforeClusterDelete), calls the executor's `ApplyAgent` or `RemoveAgent` ([`client`]), and maps the outcome to
//! the hook answer in one place ([`answer::hook_answer`]).
//!
//! Library-first: [`router`] is a plain axum `Router` (testable with `tower::ServiceExt::oneshot`), [`serve`] runs
//! it over HTTPS, and the binary only parses flags ([`args::Args`]) and calls [`serve`].

pub mod answer;
pub mod args;
pub mod capi;
pub mod catalog;
pub mod client;
pub mod config;
pub mod decode;
pub mod discovery;
pub mod http;
pub mod metrics;
pub mod server;
pub mod translate;

pub use config::{ExecutorEndpoint, ExecutorTransport, GatewayConfig, HookPolicies, HookPolicy};
pub use http::{GatewayState, router};
pub use server::TlsFiles;

use konnector_runtime::{admin::Readiness, metrics::Metrics};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Validates `config`, connects (lazily) to the executor, reports the executor's health in the
/// `konnector_gateway_executor_up` gauge, and serves the hooks over HTTPS on `listener` until `shutdown` is cancelled.
/// `readiness` is set once the gateway serves and cleared when it starts to drain: it is about the gateway itself,
/// never about the executor.
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

/// [`serve`], registering the gateway's metrics in `metrics` (to serve at `/metrics` on the admin port).
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
    konnector_runtime::metrics::register_build_info(metrics, "gateway");
    konnector_runtime::process::register_process_metrics(metrics);
    let metrics = metrics::GatewayMetrics::register(metrics);
    let tls_config = server::rustls_config_observed(&tls, config.cert_reload_interval, &metrics.tls)?;
    let channel =
        client::channel_observed(&config.executor, config.cert_reload_interval, Some(&metrics.tls))?;
    let options = server::server_options(&config, metrics.connections.clone(), metrics.tls.clone());
    let probe = tokio::spawn(client::watch_health(
        channel.clone(),
        metrics.executor_up.clone(),
        client::HEALTH_INTERVAL,
        shutdown.clone(),
    ));
    let app = router(GatewayState::with_metrics(config, channel, &metrics));
    readiness.set(true);
    // Draining, in order: not ready first (so the Service stops sending new connections here), then the listener
    // closes (new connections are refused), then in-flight requests finish within `shutdown_grace`.
    let serving = CancellationToken::new();
    let drain = {
        let (shutdown, readiness, serving) = (shutdown.clone(), readiness.clone(), serving.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            readiness.set(false);
            tracing::info!("draining: not ready, no longer accepting connections, finishing in-flight hooks");
            serving.cancel();
        })
    };
    let result = server::serve_https(app, listener, tls_config, options, serving.clone()).await;
    shutdown.cancel();
    let _ = probe.await;
    let _ = drain.await;
    readiness.set(false);
    result
}
