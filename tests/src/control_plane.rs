//! One real Kubernetes control plane (etcd + kube-apiserver) on loopback.
//!
//! Each [`ControlPlane`] has its own CA, serving certificate, service-account key and admin token, its own free
//! ports and its own scratch directory. Dropping it kills both processes and removes the directory, also when the
//! test that owns it panics. Both processes are additionally started with `PR_SET_PDEATHSIG`, so that even a
//! test process killed with SIGKILL takes its control planes with it.

use std::{
    fs,
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use base64::Engine;
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};
use rcgen::KeyPair;

use crate::{assets::Assets, pki::TestCa};

/// How long a control plane may take to become ready. Generous, because CI machines are shared; a healthy
/// start takes about 3 seconds.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// A running etcd + kube-apiserver pair.
pub struct ControlPlane {
    name: String,
    dir: tempfile::TempDir,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    port: u16,
    etcd_ports: [u16; 2],
    token: String,
    ca_pem: String,
    kubeconfig: String,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never print it.
        f.debug_struct("ControlPlane")
            .field("name", &self.name)
            .field("url", &self.url())
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Starts a control plane named `name` (used in logs and in the kubeconfig) and waits until `/readyz` answers.
    ///
    /// Ports are picked free and released before etcd and kube-apiserver bind them, so another process (a test
    /// binding an ephemeral port meanwhile) can take one first; such a start is retried on new ports.
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::start_once(name).await {
                Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => {
                    tracing::warn!(
                        name,
                        attempt,
                        "a control plane port was taken meanwhile; starting again"
                    );
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_once(name: &str) -> anyhow::Result<Self> {
        let assets = Assets::get()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("konnector-cp-{name}-"))
            .tempdir()
            .context("cannot create a scratch directory")?;
        let [port, etcd_client, etcd_peer] = free_ports()?;
        let pki = Pki::generate()?;
        let token = random_token();

        let certs = dir.path().join("certs");
        fs::create_dir_all(&certs)?;
        fs::write(certs.join("ca.crt"), &pki.ca_pem)?;
        fs::write(certs.join("apiserver.crt"), &pki.serving_cert_pem)?;
        fs::write(certs.join("apiserver.key"), &pki.serving_key_pem)?;
        fs::write(certs.join("sa.key"), &pki.sa_key_pem)?;
        fs::write(certs.join("sa.pub"), &pki.sa_pub_pem)?;
        fs::write(
            dir.path().join("tokens.csv"),
            format!("{token},admin,admin,\"system:masters\"\n"),
        )?;

        let kubeconfig = render_kubeconfig(name, port, &pki.ca_pem, &token);
        fs::write(dir.path().join("kubeconfig"), &kubeconfig)?;

        let mut cp = Self {
            name: name.to_owned(),
            etcd: None,
            apiserver: None,
            port,
            etcd_ports: [etcd_client, etcd_peer],
            token,
            ca_pem: pki.ca_pem,
            kubeconfig,
            dir,
        };

        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let etcd = spawn(
            Command::new(assets.etcd())
                .args(["--name", "local"])
                .arg("--data-dir")
                .arg(cp.dir.path().join("etcd"))
                .args([
                    "--listen-client-urls",
                    &etcd_url,
                    "--advertise-client-urls",
                    &etcd_url,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                ])
                .args(["--initial-cluster", &format!("local={peer_url}")])
                // Test data only: durability buys nothing and fsync costs seconds on shared disks.
                .arg("--unsafe-no-fsync"),
            &cp.dir.path().join("etcd.log"),
        )?;
        cp.etcd = Some(etcd);

        let d = cp.dir.path();
        let apiserver = spawn(
            Command::new(assets.kube_apiserver())
                .args(["--etcd-servers", &etcd_url])
                .args(["--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1"])
                // Since 1.29 the endpoint reconciler refuses a loopback advertise address; nothing in these
                // clusters reaches the API server through the `kubernetes` Service, so it need not exist.
                .args(["--endpoint-reconciler-type", "none"])
                .args(["--secure-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(d.join("certs/apiserver.crt"))
                .arg("--tls-private-key-file")
                .arg(d.join("certs/apiserver.key"))
                .arg("--client-ca-file")
                .arg(d.join("certs/ca.crt"))
                .arg("--token-auth-file")
                .arg(d.join("tokens.csv"))
                .args(["--authorization-mode", "RBAC"])
                .args(["--service-account-issuer", "https://kubernetes.default.svc"])
                .arg("--service-account-key-file")
                .arg(d.join("certs/sa.pub"))
                .arg("--service-account-signing-key-file")
                .arg(d.join("certs/sa.key"))
                .args(["--service-cluster-ip-range", "10.0.0.0/24"])
                .arg("--cert-dir")
                .arg(d.join("certs"))
                .args(["--profiling=false", "--enable-priority-and-fairness=false"]),
            &d.join("kube-apiserver.log"),
        )?;
        cp.apiserver = Some(apiserver);

        cp.wait_ready()
            .await
            .with_context(|| format!("control plane {name:?} did not become ready"))?;
        tracing::info!(name, url = %cp.url(), "control plane ready");
        Ok(cp)
    }

    /// The control plane's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The API server's URL, e.g. `https://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The API server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every loopback port this control plane listens on (API server, etcd client, etcd peer).
    pub fn ports(&self) -> [u16; 3] {
        [self.port, self.etcd_ports[0], self.etcd_ports[1]]
    }

    /// Process ids of etcd and kube-apiserver.
    pub fn pids(&self) -> Vec<u32> {
        [&self.etcd, &self.apiserver]
            .into_iter()
            .flatten()
            .map(Child::id)
            .collect()
    }

    /// The CA certificate (PEM) the API server's serving certificate chains to.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A self-contained admin kubeconfig (CA and token inline), as YAML. This is what goes into a CAPI
    /// `<cluster>-kubeconfig` Secret.
    pub fn kubeconfig_yaml(&self) -> &str {
        &self.kubeconfig
    }

    /// Path of the admin kubeconfig file, for kubectl.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The scratch directory, holding certificates, logs and etcd data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The admin bearer token. A test credential for a throwaway server; never log it.
    pub fn admin_token(&self) -> &str {
        &self.token
    }

    /// A client with cluster-admin rights (`system:masters`).
    pub async fn client(&self) -> anyhow::Result<Client> {
        Client::try_from(self.config().await?).context("cannot build a kube client")
    }

    /// A client that impersonates `user` in `groups`: RBAC then applies exactly as it would to that identity. Use
    /// `system:serviceaccount:<ns>:<name>` with groups `system:serviceaccounts` and
    /// `system:serviceaccounts:<ns>` to act as a ServiceAccount.
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> anyhow::Result<Client> {
        let mut config = self.config().await?;
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups = Some(groups.iter().map(|g| (*g).to_owned()).collect());
        Client::try_from(config).context("cannot build an impersonating kube client")
    }

    /// A client that authenticates as ServiceAccount `namespace/name` with a real token from the TokenRequest API
    /// (the ServiceAccount, and `namespace`, are created when missing). RBAC applies exactly as it would to a pod
    /// running as that ServiceAccount.
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> anyhow::Result<Client> {
        use k8s_openapi::api::{
            authentication::v1::{TokenRequest, TokenRequestSpec},
            core::v1::ServiceAccount,
        };
        use kube::api::{Api, ObjectMeta, PostParams};

        let admin = self.client().await?;
        ensure_namespace(&admin, namespace).await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(admin, namespace);
        if accounts.get_opt(name).await?.is_none() {
            let sa = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    ..Default::default()
                },
                ..Default::default()
            };
            accounts.create(&PostParams::default(), &sa).await?;
        }
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec!["https://kubernetes.default.svc".to_owned()],
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let token = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("cannot get a token for ServiceAccount {namespace}/{name}"))?
            .status
            .context("TokenRequest without status")?
            .token;
        let mut config = self.config().await?;
        config.auth_info = kube::config::AuthInfo {
            token: Some(token.into()),
            ..Default::default()
        };
        Client::try_from(config).context("cannot build a ServiceAccount kube client")
    }

    /// The admin client configuration.
    pub async fn config(&self) -> anyhow::Result<Config> {
        let kc = Kubeconfig::from_yaml(&self.kubeconfig).context("cannot parse the generated kubeconfig")?;
        Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .context("cannot load the generated kubeconfig")
    }

    /// The last `lines` lines of the API server's log, for error messages.
    pub fn apiserver_log_tail(&self, lines: usize) -> String {
        log_tail(&self.dir.path().join("kube-apiserver.log"), lines)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = self.client().await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            for (what, child, log) in [
                ("etcd", &mut self.etcd, "etcd.log"),
                ("kube-apiserver", &mut self.apiserver, "kube-apiserver.log"),
            ] {
                if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    bail!(
                        "{what} exited with {status}; last lines of its log:\n{}",
                        log_tail(&self.dir.path().join(log), 30)
                    );
                }
            }
            let req = http::Request::get("/readyz").body(Vec::new())?;
            let last_error = match client.request_text(req).await {
                // /readyz can pass before the bootstrap controller has created the default namespaces, which
                // every test expects to exist.
                Ok(body) if body.trim() == "ok" => match default_namespaces_exist(&client).await {
                    Ok(true) => return Ok(()),
                    Ok(false) => "namespaces default and kube-system not created yet".to_owned(),
                    Err(e) => e.to_string(),
                },
                Ok(body) => body,
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                bail!(
                    "/readyz did not answer ok within {READY_TIMEOUT:?} (last: {last_error}); last lines of the \
                     kube-apiserver log:\n{}",
                    self.apiserver_log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops both processes and waits for them to exit. Idempotent; also runs on drop.
    pub fn stop(&mut self) {
        // The API server first, so it does not log a burst of etcd connection errors.
        for child in [self.apiserver.take(), self.etcd.take()].into_iter().flatten() {
            kill_and_reap(child);
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn default_namespaces_exist(client: &Client) -> Result<bool, kube::Error> {
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    Ok(api.get_opt("default").await?.is_some() && api.get_opt("kube-system").await?.is_some())
}

fn kill_and_reap(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn spawn(cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let out = fs::File::create(log)?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and the closure touches no memory shared with the parent.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Reserves three distinct free loopback ports. The listeners are closed before the ports are used, so another
/// process could in principle take one in between; the readiness check then fails loudly rather than silently.
fn free_ports() -> anyhow::Result<[u16; 3]> {
    let listeners = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot reserve loopback ports")?;
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    Ok([ports[0], ports[1], ports[2]])
}

/// Whether anything accepts connections on `127.0.0.1:port`.
pub fn port_is_listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

fn random_token() -> String {
    let mut bytes = [0u8; 24];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .expect("/dev/urandom is readable");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn render_kubeconfig(name: &str, port: u16, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority-data: {ca}
users:
- name: {name}-admin
  user:
    token: {token}
contexts:
- name: {name}
  context:
    cluster: {name}
    user: {name}-admin
    namespace: default
current-context: {name}
"
    )
}

/// The certificates and keys of one control plane.
struct Pki {
    ca_pem: String,
    serving_cert_pem: String,
    serving_key_pem: String,
    sa_key_pem: String,
    sa_pub_pem: String,
}

impl Pki {
    fn generate() -> anyhow::Result<Self> {
        let ca = TestCa::new("konnector-test-ca")?;
        let serving = ca.serving_cert("kube-apiserver")?;
        let sa_key = KeyPair::generate()?;
        Ok(Self {
            ca_pem: ca.cert_pem().to_owned(),
            serving_cert_pem: serving.cert_pem,
            serving_key_pem: serving.key_pem,
            sa_key_pem: sa_key.serialize_pem(),
            sa_pub_pem: sa_key.public_key_pem(),
        })
    }
}

/// Ensures `namespace` exists on `client`'s cluster.
pub async fn ensure_namespace(client: &kube::Client, namespace: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{ObjectMeta, Patch, PatchParams};

    let api: kube::Api<Namespace> = kube::Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(namespace.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.patch(
        namespace,
        &PatchParams::apply(crate::crds::HARNESS_MANAGER),
        &Patch::Apply(&ns),
    )
    .await
    .with_context(|| format!("cannot ensure namespace {namespace}"))?;
    Ok(())
}
