//! Finds the `etcd` and `kube-apiserver` binaries.
//!
//! `KUBEBUILDER_ASSETS` wins when it names a directory holding both, the same convention as controller-runtime's
//! envtest. Otherwise `hack/ensure-control-plane.sh` installs etcd from Debian and builds kube-apiserver from
//! Debian's `kubernetes` source package into a per-user cache keyed by version. The script publishes the cache
//! entry with a single rename, so an interrupted build never leaves a broken binary behind.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use anyhow::{Context, bail};

/// The directory holding `etcd` and `kube-apiserver`.
#[derive(Clone, Debug)]
pub struct Assets {
    dir: PathBuf,
}

impl Assets {
    /// The `etcd` binary.
    pub fn etcd(&self) -> PathBuf {
        self.dir.join("etcd")
    }

    /// The `kube-apiserver` binary.
    pub fn kube_apiserver(&self) -> PathBuf {
        self.dir.join("kube-apiserver")
    }

    /// The Kubernetes version the kube-apiserver binary reports (`v1.37.2`), so that what the tests render for
    /// "the harness's API server" follows whichever binaries `KUBEBUILDER_ASSETS` names.
    pub fn kube_version(&self) -> anyhow::Result<String> {
        use anyhow::Context;
        let out = std::process::Command::new(self.kube_apiserver())
            .arg("--version")
            .output()
            .context("cannot run kube-apiserver --version")?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .find(|w| w.starts_with('v'))
            .map(str::to_owned)
            .with_context(|| format!("kube-apiserver --version printed no version: {text:?}"))
    }

    /// Locates the binaries, installing or building them on first use. The answer is computed once per process.
    pub fn get() -> anyhow::Result<Self> {
        static ASSETS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        let found = ASSETS.get_or_init(|| locate().map_err(|e| format!("{e:#}")));
        match found {
            Ok(dir) => Ok(Self { dir: dir.clone() }),
            Err(e) => bail!("cannot provide etcd and kube-apiserver for the test control planes: {e}"),
        }
    }
}

fn holds_both(dir: &Path) -> bool {
    dir.join("etcd").is_file() && dir.join("kube-apiserver").is_file()
}

fn locate() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from) {
        if holds_both(&dir) {
            return Ok(dir);
        }
        tracing::warn!(dir = %dir.display(), "KUBEBUILDER_ASSETS lacks etcd or kube-apiserver; falling back");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/ensure-control-plane.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env_remove("KUBEBUILDER_ASSETS")
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed with {}", script.display(), out.status);
    }
    let stdout = String::from_utf8(out.stdout).context("ensure-control-plane.sh printed non-UTF-8")?;
    let dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    if !holds_both(&dir) {
        bail!(
            "{} reported {:?}, which lacks etcd or kube-apiserver",
            script.display(),
            dir
        );
    }
    Ok(dir)
}
