//! CAPI's own core manager (the cluster-api-controller binary), built from the `sigs.k8s.io/cluster-api` Go module
//! by hack/ensure-capi.sh, run as a process against a management [`ControlPlane`].
//!
//! The harness does what cert-manager and kustomize do in a real installation: it issues the serving certificate
//! of the manager's webhook server, points every webhook configuration and every multi-version CRD's conversion
//! at that server (`https://127.0.0.1:<port>`, since there is no Service) with the CA as `caBundle`, and turns on
//! the `ClusterTopology` and `RuntimeSDK` feature gates, without which CAPI calls no lifecycle hook.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use base64::Engine;
use serde_json::{Value, json};

use crate::{
    control_plane::ControlPlane,
    crds::{self, HARNESS_MANAGER},
    pki::TestCa,
};

/// The CAPI releases hack/ensure-capi.sh builds (the module proxy here serves no 1.10 and no 1.12).
pub const BUILT_RELEASES: [&str; 2] = ["v1.14.2", "v1.13.6"];

/// How long the manager may take to serve its webhooks and report ready. Generous: a shared 2-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Which release to run, and how.
#[derive(Clone, Debug)]
pub struct CapiOptions {
    /// One of [`BUILT_RELEASES`].
    pub version: String,
    /// CAPI's client certificate for runtime extensions (`--runtime-extension-client-cert-file` and `-key-file`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl Default for CapiOptions {
    fn default() -> Self {
        Self {
            version: BUILT_RELEASES[0].to_owned(),
            client_cert: None,
        }
    }
}

/// The directory hack/ensure-capi.sh fills for `version` (building the manager on the first call; cached).
pub fn built_release(version: &str) -> anyhow::Result<PathBuf> {
    let out = Command::new("bash")
        .arg(crate::tools::repo_root().join("hack/ensure-capi.sh"))
        .arg(version)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run hack/ensure-capi.sh")?;
    if !out.status.success() {
        bail!("hack/ensure-capi.sh {version} failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(PathBuf::from(stdout.lines().last().unwrap_or_default().trim()))
}

/// A running CAPI core manager. Dropping it kills the process.
pub struct CapiManager {
    child: Option<Child>,
    dir: tempfile::TempDir,
    version: String,
    webhook_port: u16,
    health_port: u16,
}

impl std::fmt::Debug for CapiManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapiManager")
            .field("version", &self.version)
            .field("webhook_port", &self.webhook_port)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl CapiManager {
    /// Installs the release's CRDs (conversion pointed at the manager) on `mgmt`, starts the manager, waits until
    /// it is ready, then installs its webhook configurations.
    pub async fn start(mgmt: &ControlPlane, options: CapiOptions) -> anyhow::Result<Self> {
        let release = built_release(&options.version)?;
        let dir = tempfile::Builder::new().prefix("konnector-capi-").tempdir()?;
        let ca = TestCa::new("konnector-test-capi-webhook-ca")?;
        let serving = ca.serving_cert("capi-webhook-service")?;
        let certs = dir.path().join("certs");
        std::fs::create_dir_all(&certs)?;
        std::fs::write(certs.join("tls.crt"), &serving.cert_pem)?;
        std::fs::write(certs.join("tls.key"), &serving.key_pem)?;
        let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca.cert_pem());
        let [webhook_port, health_port, diagnostics_port] = free_ports()?;
        let webhook_base = format!("https://127.0.0.1:{webhook_port}");

        let client = mgmt.client().await?;
        let manifests = release_crds(&release, &webhook_base, &ca_bundle)?;
        let refs: Vec<&str> = manifests.iter().map(String::as_str).collect();
        crds::install(&client, &refs).await?;

        let mut cmd = Command::new(release.join("bin/manager"));
        cmd.arg("--kubeconfig")
            .arg(mgmt.kubeconfig_path())
            .arg("--leader-elect=false")
            .arg("--feature-gates=ClusterTopology=true,RuntimeSDK=true")
            .arg(format!("--webhook-port={webhook_port}"))
            .arg("--webhook-cert-dir")
            .arg(&certs)
            .arg(format!("--health-addr=127.0.0.1:{health_port}"))
            .arg(format!("--diagnostics-address=127.0.0.1:{diagnostics_port}"))
            .arg("--insecure-diagnostics")
            .arg("--v=4");
        if let Some((cert, key)) = &options.client_cert {
            cmd.arg("--runtime-extension-client-cert-file")
                .arg(cert)
                .arg("--runtime-extension-client-key-file")
                .arg(key);
        }
        let child = spawn(&mut cmd, &dir.path().join("capi.log"))?;
        let mut manager = Self {
            child: Some(child),
            dir,
            version: options.version.clone(),
            webhook_port,
            health_port,
        };
        manager
            .wait_ready()
            .await
            .with_context(|| format!("CAPI {} did not become ready", manager.version))?;
        for doc in webhook_configurations(&release, &webhook_base, &ca_bundle)? {
            crate::tools::apply_manifest(
                &client,
                &doc,
                "default",
                &kube::api::PatchParams::apply(HARNESS_MANAGER).force(),
            )
            .await?;
        }
        tracing::info!(version = %manager.version, webhook_port, "CAPI core manager ready");
        Ok(manager)
    }

    /// The release running (e.g. `v1.14.2`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The manager's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Path of the manager's log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("capi.log")
    }

    /// The manager's whole log (its lines are the evidence of what CAPI did: hooks called, answers, retries).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `lines` lines of the manager's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{}/readyz", self.health_port);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!(
                    "the manager exited with {status}; last lines of its log:\n{}",
                    self.log_tail(40)
                );
            }
            if let Ok(resp) = http.get(&url).send().await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{url} did not answer 200 within {READY_TIMEOUT:?}; last lines of its log:\n{}",
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the manager (SIGKILL) and waits for it. Idempotent; also runs on drop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for CapiManager {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The release's CRDs, each with more than one version converted by the manager's webhook, as the release's
/// kustomize patches and cert-manager's CA injection leave them.
fn release_crds(release: &Path, webhook_base: &str, ca_bundle: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(release.join("crd"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path)?;
        let mut crd: Value =
            serde_yaml_ng::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))?;
        let versions = crd["spec"]["versions"].as_array().map_or(0, Vec::len);
        if versions > 1 {
            crd["spec"]["conversion"] = json!({
                "strategy": "Webhook",
                "webhook": {
                    "conversionReviewVersions": ["v1", "v1beta1"],
                    "clientConfig": {"url": format!("{webhook_base}/convert"), "caBundle": ca_bundle},
                },
            });
        }
        out.push(serde_json::to_string(&crd)?);
    }
    Ok(out)
}

/// The release's Validating/MutatingWebhookConfigurations, each webhook called at `webhook_base` + its path.
fn webhook_configurations(release: &Path, webhook_base: &str, ca_bundle: &str) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(release.join("webhook/manifests.yaml"))?;
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let mut v = <Value as serde::Deserialize>::deserialize(doc)?;
        if v.is_null() {
            continue;
        }
        let name = v["metadata"]["name"].as_str().unwrap_or("webhook-configuration");
        // kustomize's namePrefix in CAPI's config/default.
        v["metadata"]["name"] = json!(format!("capi-{name}"));
        for webhook in v["webhooks"].as_array_mut().into_iter().flatten() {
            let path = webhook["clientConfig"]["service"]["path"]
                .as_str()
                .context("webhook without a service path")?
                .to_owned();
            webhook["clientConfig"] = json!({"url": format!("{webhook_base}{path}"), "caBundle": ca_bundle});
        }
        docs.push(v);
    }
    Ok(docs)
}

fn free_ports() -> anyhow::Result<[u16; 3]> {
    let listeners = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    Ok([ports[0], ports[1], ports[2]])
}

fn spawn(cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and the closure touches no memory shared with the parent.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                // The manager dies with the test process, even one killed with SIGKILL.
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
