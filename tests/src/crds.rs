//! The CRDs konnector touches on a management cluster, installed into a test control plane.
//!
//! CAPI's CRDs (Cluster, ClusterClass, ExtensionConfig) are CAPI's own, taken from the `sigs.k8s.io/cluster-api`
//! Go module at the versions hack/ensure-crds.sh pins, so their validation (CEL rules included) judges every object
//! the tests and konnector write. CAAPH's module is not served by the module proxy here at any version, so its two
//! CRDs, and the cert-manager and Prometheus Operator CRDs the chart's dry runs need, are fixtures in tests/crds
//! written from the field lists in `shared/reference/runtime-sdk.md`.

use std::{
    path::PathBuf,
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};

/// The field manager the harness uses for everything it applies.
pub const HARNESS_MANAGER: &str = "konnector-test-harness";

/// CAAPH `HelmChartProxy` (fixture: CAAPH's module is not served here).
pub const HELM_CHART_PROXY: &str = include_str!("../crds/addons.cluster.x-k8s.io_helmchartproxies.yaml");
/// CAAPH `HelmReleaseProxy` (fixture: CAAPH's module is not served here).
pub const HELM_RELEASE_PROXY: &str = include_str!("../crds/addons.cluster.x-k8s.io_helmreleaseproxies.yaml");

/// cert-manager `Issuer` (open spec), for dry-running konnector's chart.
pub const CERT_MANAGER_ISSUER: &str = include_str!("../crds/cert-manager.io_issuers.yaml");
/// cert-manager `Certificate` (open spec), for dry-running konnector's chart.
pub const CERT_MANAGER_CERTIFICATE: &str = include_str!("../crds/cert-manager.io_certificates.yaml");

/// Prometheus Operator `ServiceMonitor` (open spec), for dry-running konnector's chart with
/// `metrics.serviceMonitor.enabled`.
pub const PROMETHEUS_SERVICE_MONITOR: &str =
    include_str!("../crds/monitoring.coreos.com_servicemonitors.yaml");
/// Prometheus Operator `PrometheusRule` (open spec), for dry-running konnector's chart with
/// `metrics.prometheusRule.enabled`.
pub const PROMETHEUS_RULE: &str = include_str!("../crds/monitoring.coreos.com_prometheusrules.yaml");

/// The directory hack/ensure-crds.sh fills with CAPI's CRDs from their Go modules (once; cached per version).
pub fn upstream_dir() -> anyhow::Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new("bash")
            .arg(crate::tools::repo_root().join("hack/ensure-crds.sh"))
            .output()
            .map_err(|e| format!("cannot run hack/ensure-crds.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "hack/ensure-crds.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        Ok(PathBuf::from(stdout.lines().last().unwrap_or_default().trim()))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// Which versions of CAPI's Cluster the management cluster serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClusterApi {
    /// v1beta1 and v1beta2, v1beta2 stored: CAPI 1.11 and later (CAPI's CRDs at the pinned current release).
    #[default]
    V1Beta2,
    /// v1beta1 only: CAPI 1.10, where v1beta2 does not exist (CAPI's CRDs at the nearest served release that
    /// stores v1beta1; hack/ensure-crds.sh says which).
    V1Beta1Only,
}

impl ClusterApi {
    /// The API mode a CAPI minor version has (`1.10` → v1beta1 only).
    pub fn for_capi(version: &str) -> Self {
        if version.trim_start_matches('v').starts_with("1.10") {
            Self::V1Beta1Only
        } else {
            Self::V1Beta2
        }
    }

    fn subdir(self) -> &'static str {
        match self {
            Self::V1Beta2 => "capi",
            Self::V1Beta1Only => "capi-v1beta1",
        }
    }

    /// One of CAPI's CRD manifests, by file stem (e.g. `cluster.x-k8s.io_clusters`), as this CAPI installs it.
    pub fn manifest(self, stem: &str) -> anyhow::Result<String> {
        let path = upstream_dir()?.join(self.subdir()).join(format!("{stem}.yaml"));
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    }

    /// The Cluster CRD as this CAPI serves it.
    pub fn cluster_crd(self) -> anyhow::Result<CustomResourceDefinition> {
        parse(&self.manifest("cluster.x-k8s.io_clusters")?)
    }

    /// Every CRD a konnector management cluster needs, as manifests: CAPI's Cluster, ClusterClass and
    /// ExtensionConfig as this CAPI installs them, and CAAPH's two.
    pub fn management_crds(self) -> anyhow::Result<Vec<String>> {
        let mut crds = Vec::new();
        for stem in [
            "cluster.x-k8s.io_clusters",
            "cluster.x-k8s.io_clusterclasses",
            "runtime.cluster.x-k8s.io_extensionconfigs",
        ] {
            crds.push(self.manifest(stem)?);
        }
        crds.push(HELM_CHART_PROXY.to_owned());
        crds.push(HELM_RELEASE_PROXY.to_owned());
        Ok(crds)
    }
}

/// Installs every CRD a konnector management cluster needs, as `api`'s CAPI installs them.
pub async fn install_management(client: &Client, api: ClusterApi) -> anyhow::Result<()> {
    let crds = api.management_crds()?;
    let refs: Vec<&str> = crds.iter().map(String::as_str).collect();
    install(client, &refs).await
}

/// Parses a CRD manifest.
pub fn parse(yaml: &str) -> anyhow::Result<CustomResourceDefinition> {
    serde_yaml_ng::from_str(yaml).context("cannot parse CRD manifest")
}

/// Server-side applies `manifests` and waits until every CRD is Established.
pub async fn install(client: &Client, manifests: &[&str]) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for yaml in manifests {
        let crd = parse(yaml)?;
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        api.patch(
            &name,
            &PatchParams::apply(HARNESS_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("cannot apply CRD {name}"))?;
        names.push(name);
    }
    for name in names {
        wait_established(&api, &name).await?;
    }
    Ok(())
}

async fn wait_established(api: &Api<CustomResourceDefinition>, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let crd = api.get(name).await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("CRD {name} was not Established within 60s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
