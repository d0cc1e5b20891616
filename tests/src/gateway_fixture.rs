//! The real gateway, served in-process over HTTPS on loopback in front of an executor, for the tests, the sandbox
//! and the benchmark.

use std::{net::SocketAddr, path::Path};

use konnector_gateway::{ExecutorEndpoint, GatewayConfig, TlsFiles};
use konnector_runtime::{admin::Readiness, metrics::Metrics};
use tokio_util::sync::CancellationToken;

use crate::{capi_stand_in::ExtensionClient, pki::TestCa};

/// A running gateway. Dropping it stops it.
pub struct RunningGateway {
    /// Where it serves HTTPS.
    pub addr: SocketAddr,
    /// The CA its serving certificate (for `localhost` and `127.0.0.1`) chains to.
    pub ca_pem: String,
    /// Its metrics registry, as its admin server would serve it.
    pub metrics: Metrics,
    /// Its readiness, as its admin server would report it.
    pub readiness: Readiness,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _certs: Option<tempfile::TempDir>,
}

impl RunningGateway {
    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A CAPI-style client for this gateway, trusting its CA.
    pub fn client(&self) -> anyhow::Result<ExtensionClient> {
        ExtensionClient::new(&self.url(), &self.ca_pem)
    }

    /// Stops the gateway and waits for it to finish draining.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Writes a CA and a serving certificate for `localhost`/`127.0.0.1` into `dir` (`ca.crt`, `tls.crt`, `tls.key`).
/// Returns the CA (PEM) and the files for the gateway.
pub fn write_gateway_certs(dir: &Path) -> anyhow::Result<(String, TlsFiles)> {
    std::fs::create_dir_all(dir)?;
    let ca = TestCa::new("konnector-test-gateway-ca")?;
    let serving = ca.serving_cert("konnector-gateway")?;
    std::fs::write(dir.join("ca.crt"), ca.cert_pem())?;
    std::fs::write(dir.join("tls.crt"), &serving.cert_pem)?;
    std::fs::write(dir.join("tls.key"), &serving.key_pem)?;
    let files = TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        client_ca: None,
    };
    Ok((ca.cert_pem().to_owned(), files))
}

/// Serves a gateway for CAPI `capi_version` in front of `executor` (`RunningExecutor::endpoint`: mTLS with the
/// chart's settings), with a fresh CA and serving certificate of its own.
pub async fn start_gateway(
    executor: &ExecutorEndpoint,
    capi_version: &str,
) -> anyhow::Result<RunningGateway> {
    let dir = tempfile::tempdir()?;
    let (ca_pem, files) = write_gateway_certs(dir.path())?;
    let mut gateway = serve_gateway(executor, capi_version, files, ca_pem).await?;
    gateway._certs = Some(dir);
    Ok(gateway)
}

/// Like [`start_gateway`], with certificate files (signed by `ca_pem`) the caller provides, e.g. one pair shared
/// by several gateways.
pub async fn serve_gateway(
    executor: &ExecutorEndpoint,
    capi_version: &str,
    files: TlsFiles,
    ca_pem: String,
) -> anyhow::Result<RunningGateway> {
    let mut config = GatewayConfig::new(executor.clone());
    config.capi_version = capi_version.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    config.cert_reload_interval =
        std::time::Duration::from_secs(crate::executor_fixture::CERT_RELOAD_SECONDS);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let metrics = Metrics::default();
    let readiness = Readiness::default();
    let task = tokio::spawn({
        let (stop, readiness, metrics) = (stop.clone(), readiness.clone(), metrics.clone());
        async move {
            konnector_gateway::serve_with_metrics(config, listener, files, stop, readiness, &metrics).await
        }
    });
    Ok(RunningGateway {
        addr,
        ca_pem,
        metrics,
        readiness,
        stop,
        task: Some(task),
        _certs: None,
    })
}
