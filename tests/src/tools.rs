//! Developer tools the tests and the sandbox run: helm, from the npm-pinned set in hack/tools.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use anyhow::{Context, bail};
use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The chart in deploy/.
pub fn chart_dir() -> PathBuf {
    repo_root().join("deploy/chart/konnector")
}

/// The `helm` binary, installed by hack/ensure-tools.sh on first use.
pub fn helm() -> anyhow::Result<PathBuf> {
    static HELM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    HELM.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_root().join("hack/ensure-tools.sh"))
            .output()
            .map_err(|e| format!("cannot run hack/ensure-tools.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "hack/ensure-tools.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("helm");
        if bin.exists() {
            Ok(bin)
        } else {
            Err(format!("helm not installed at {}", bin.display()))
        }
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// Renders the chart with `helm template` for the harness's API server (its version, as the binary reports it), in
/// `namespace`,
/// with `--set` overrides and, when given, only the named templates. Returns the documents as JSON.
pub fn render_chart(namespace: &str, sets: &[&str], show_only: &[&str]) -> anyhow::Result<Vec<Value>> {
    let version = crate::assets::Assets::get()?.kube_version()?;
    render_chart_for(&version, namespace, sets, show_only)
}

/// [`render_chart`] for an API server of `kube_version` (e.g. `v1.30.0`), for what the chart renders only there.
pub fn render_chart_for(
    kube_version: &str,
    namespace: &str,
    sets: &[&str],
    show_only: &[&str],
) -> anyhow::Result<Vec<Value>> {
    let mut cmd = Command::new(helm()?);
    cmd.args(["template", "konnector"]).arg(chart_dir()).args([
        "--namespace",
        namespace,
        "--kube-version",
        kube_version,
    ]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    for t in show_only {
        cmd.args(["--show-only", t]);
    }
    let out = cmd.output().context("cannot run helm")?;
    if !out.status.success() {
        bail!("helm template failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout)?;
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = <Value as serde::Deserialize>::deserialize(doc)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// Server-side applies one rendered manifest, whatever its kind, resolving the kind through API discovery.
/// Namespaced objects go to their own `metadata.namespace`, or to `default_namespace` when they name none. Use
/// `PatchParams::dry_run` to have the API server validate without writing.
pub async fn apply_manifest(
    client: &kube::Client,
    doc: &Value,
    default_namespace: &str,
    pp: &kube::api::PatchParams,
) -> anyhow::Result<()> {
    use kube::{
        Api,
        api::{DynamicObject, GroupVersionKind, Patch},
        discovery,
    };
    let api_version = doc["apiVersion"]
        .as_str()
        .context("manifest without apiVersion")?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = doc["kind"].as_str().context("manifest without kind")?;
    let name = doc["metadata"]["name"]
        .as_str()
        .context("manifest without name")?;
    let (ar, caps) = discovery::pinned_kind(client, &GroupVersionKind::gvk(group, version, kind))
        .await
        .with_context(|| format!("the API server does not serve {api_version} {kind}"))?;
    let api: Api<DynamicObject> = match caps.scope {
        discovery::Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            doc["metadata"]["namespace"].as_str().unwrap_or(default_namespace),
            &ar,
        ),
        discovery::Scope::Cluster => Api::all_with(client.clone(), &ar),
    };
    api.patch(name, pp, &Patch::Apply(doc))
        .await
        .with_context(|| format!("cannot apply {kind} {name}"))?;
    Ok(())
}

/// The directory holding the release binaries: `KONNECTOR_STATIC_BIN_DIR`, or hack/build-static.sh's output.
pub fn static_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KONNECTOR_STATIC_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let script = repo_root().join("hack/build-static.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "{} failed", script.display());
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// The object of `kind` named `name` among rendered manifests; panics naming what is missing.
pub fn find_object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered chart"))
}
