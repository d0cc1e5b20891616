//! The real `konnector-executor` and `konnector-gateway` binaries as processes, wired as the chart wires them
//! (mTLS between them, the gateway serving HTTPS), for tests that attack a port, send signals or read a process's
//! memory and file descriptors.
//!
//! The binaries come from [`crate::tools::static_bin_dir`]: `KONNECTOR_STATIC_BIN_DIR` (any build's directory,
//! e.g. `target/release`), or hack/build-static.sh's output.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use konnector_gateway::{ExecutorEndpoint, ExecutorTransport};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

use crate::{capi_stand_in::ExtensionClient, gateway_fixture::write_gateway_certs, pki::MtlsPki};

/// A child process, killed and reaped when dropped.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Proc {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Sends SIGTERM, as the kubelet does when a pod is deleted (through kill(1): the workspace has no unsafe code).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -TERM {} failed", self.0.id());
    }
}

impl Proc {
    /// Waits for the process to exit, polling until `deadline`; `None` if it is still running then.
    pub async fn exit_by(&mut self, deadline: std::time::Instant) -> Option<std::process::ExitStatus> {
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait on a child") {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (VmRSS, VmHWM) of `pid`, in KiB; zeros once the process is gone.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    live_memory_kib(pid).unwrap_or((0, 0))
}

/// (VmRSS, VmHWM) of `pid`, in KiB; `None` once the process is gone, for tests that assert it survived.
pub fn live_memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some((field("VmRSS:"), field("VmHWM:")))
}

/// Open file descriptors of `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The executor and a gateway in front of it, both real processes.
pub struct RealPair {
    /// The executor process.
    pub executor: Proc,
    /// The gateway process.
    pub gateway: Proc,
    /// The gateway's hook port (HTTPS).
    pub hooks_addr: SocketAddr,
    /// The gateway's admin port.
    pub gateway_admin: SocketAddr,
    /// The executor's gRPC port (mTLS).
    pub grpc_addr: SocketAddr,
    /// The executor's admin port.
    pub executor_admin: SocketAddr,
    /// The CA the gateway's serving certificate chains to.
    pub gateway_ca: String,
    /// How a client reaches the executor: the gateway's client pair.
    pub executor_endpoint: ExecutorEndpoint,
    /// A CAPI-style client of the gateway.
    pub hooks: ExtensionClient,
    /// The mTLS files both processes use; it signs further client identities for the executor.
    pub pki: MtlsPki,
    _dir: tempfile::TempDir,
}

impl RealPair {
    /// Starts the executor on `kubeconfig` (a management cluster) and a gateway for CAPI 1.14 in front of it, each
    /// with `RUST_LOG=warn` and the extra flags given, and waits until the gateway answers Discovery and the
    /// executor reports SERVING.
    pub async fn start(
        kubeconfig: &Path,
        executor_flags: &[&str],
        gateway_flags: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_with_env(kubeconfig, executor_flags, gateway_flags, &[]).await
    }

    /// [`RealPair::start`] with extra environment variables for the gateway (settings a binary that lacks the
    /// flag ignores, e.g. to run a test against an older build).
    pub async fn start_with_env(
        kubeconfig: &Path,
        executor_flags: &[&str],
        gateway_flags: &[&str],
        gateway_env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        konnector_runtime::tls::install_crypto_provider();
        let bin = crate::tools::static_bin_dir()?;
        let dir = tempfile::tempdir()?;
        let pki = MtlsPki::create(&dir.path().join("mtls"))?;
        let (gateway_ca, serving) = write_gateway_certs(&dir.path().join("serving"))?;
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let (grpc_addr, executor_admin, hooks_addr, gateway_admin) = (
            addr(free_port()),
            addr(free_port()),
            addr(free_port()),
            addr(free_port()),
        );
        let server = pki.server_dir();
        let client = pki.client_dir();
        let p = |p: PathBuf| p.display().to_string();
        let executor = Proc(
            Command::new(bin.join("konnector-executor"))
                .args(["--listen", &grpc_addr.to_string()])
                .args(["--admin-listen", &executor_admin.to_string()])
                .args(["--tls-cert", &p(server.join("tls.crt"))])
                .args(["--tls-key", &p(server.join("tls.key"))])
                .args(["--client-ca", &p(server.join("ca.crt"))])
                .args(["--kubeconfig", &p(kubeconfig.to_owned())])
                // No Prism Central checks unless a test asks for them.
                .args(
                    (!executor_flags
                        .iter()
                        .any(|f| f.starts_with("--prism-central-checks")))
                    .then_some(["--prism-central-checks", "off"])
                    .into_iter()
                    .flatten(),
                )
                .args(executor_flags)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .context("cannot start konnector-executor")?,
        );
        let gateway = Proc(
            Command::new(bin.join("konnector-gateway"))
                .args(["--listen", &hooks_addr.to_string()])
                .args(["--admin-listen", &gateway_admin.to_string()])
                .args(["--tls-cert", &p(serving.cert.clone())])
                .args(["--tls-key", &p(serving.key.clone())])
                .args(["--executor-url", &format!("https://{grpc_addr}")])
                .args(["--executor-ca", &p(client.join("ca.crt"))])
                .args(["--executor-client-cert", &p(client.join("tls.crt"))])
                .args(["--executor-client-key", &p(client.join("tls.key"))])
                .args(["--capi-version", "v1.14"])
                .args(gateway_flags)
                .envs(gateway_env.iter().copied())
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .context("cannot start konnector-gateway")?,
        );
        let executor_endpoint = ExecutorEndpoint {
            url: format!("https://{grpc_addr}"),
            transport: ExecutorTransport::Tls {
                ca: client.join("ca.crt"),
                client_identity: Some((client.join("tls.crt"), client.join("tls.key"))),
                server_name: None,
            },
        };
        let hooks = ExtensionClient::new(&format!("https://{hooks_addr}"), &gateway_ca)?;
        let pair = Self {
            executor,
            gateway,
            hooks_addr,
            gateway_admin,
            grpc_addr,
            executor_admin,
            gateway_ca,
            executor_endpoint,
            hooks,
            pki,
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while pair.hooks.discover().await.is_err() || !pair.executor_serving().await {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the real gateway and executor never both served"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(pair)
    }

    /// Whether the executor answers gRPC health with SERVING, over mTLS as the gateway connects.
    pub async fn executor_serving(&self) -> bool {
        match konnector_gateway::client::channel(&self.executor_endpoint, Duration::from_secs(5)) {
            Ok(channel) => konnector_gateway::client::is_serving(channel, Duration::from_secs(10)).await,
            Err(_) => false,
        }
    }

    /// A rustls client configuration trusting the gateway's CA, offering `alpn`.
    pub fn gateway_tls(&self, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.gateway_ca.as_bytes()).flatten() {
            let _ = roots.add(cert);
        }
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(config)
    }

    /// A TLS connection to the hook port offering `alpn` (`h2` or `http/1.1`).
    pub async fn connect_hooks(
        &self,
        alpn: &[u8],
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(self.hooks_addr).await?;
        tokio_rustls::TlsConnector::from(self.gateway_tls(alpn))
            .connect(ServerName::try_from("localhost").expect("a valid name"), tcp)
            .await
    }
}

/// Waits until the admin port `addr` answers `/readyz` with 200, panicking after `within`. The gateway serves
/// discovery before its executor is up, so a test that sends a hook as soon as discovery answers can get "executor
/// unreachable": wait for the executor's readiness too.
pub async fn until_ready(addr: SocketAddr, what: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while http_get_status(addr, "/readyz", Duration::from_secs(2)).await != Some(200) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never became ready on {addr} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET path` over plain HTTP/1.1 on a fresh connection; the status code, or `None` when the request fails or no
/// answer comes within `timeout`.
pub async fn http_get_status(addr: SocketAddr, path: &str, timeout: Duration) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.ok()?;
        let line = String::from_utf8_lossy(&answer);
        line.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(timeout, exchange).await.ok().flatten()
}
