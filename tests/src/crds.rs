//! The CRDs konnector touches on a management cluster, installed into a test control plane.
//!
//! These are test fixtures written from the field lists in `shared/reference/runtime-sdk.md`, not CAPI's or
//! CAAPH's own manifests, which cannot be downloaded here.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};

/// The field manager the harness uses for everything it applies.
pub const HARNESS_MANAGER: &str = "konnector-test-harness";

/// CAPI `Cluster`, v1beta1 and v1beta2 served.
pub const CLUSTER: &str = include_str!("../crds/cluster.x-k8s.io_clusters.yaml");
/// CAAPH `HelmChartProxy`.
pub const HELM_CHART_PROXY: &str = include_str!("../crds/addons.cluster.x-k8s.io_helmchartproxies.yaml");
/// CAAPH `HelmReleaseProxy`.
pub const HELM_RELEASE_PROXY: &str = include_str!("../crds/addons.cluster.x-k8s.io_helmreleaseproxies.yaml");
/// CAPI `ExtensionConfig`.
pub const EXTENSION_CONFIG: &str = include_str!("../crds/runtime.cluster.x-k8s.io_extensionconfigs.yaml");

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

/// Every CRD a konnector management cluster needs.
pub const MANAGEMENT_CRDS: &[&str] = &[CLUSTER, HELM_CHART_PROXY, HELM_RELEASE_PROXY, EXTENSION_CONFIG];

/// Which versions of CAPI's Cluster the management cluster serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClusterApi {
    /// v1beta1 and v1beta2, v1beta2 stored: CAPI 1.11 and later.
    #[default]
    V1Beta2,
    /// v1beta1 only: CAPI 1.10, where v1beta2 does not exist.
    V1Beta1Only,
}

impl ClusterApi {
    /// The Cluster CRD as this CAPI serves it.
    pub fn cluster_crd(self) -> anyhow::Result<CustomResourceDefinition> {
        let mut crd = parse(CLUSTER)?;
        if self == Self::V1Beta1Only {
            crd.spec.versions.retain(|v| v.name == "v1beta1");
            for v in &mut crd.spec.versions {
                v.storage = true;
            }
        }
        Ok(crd)
    }

    /// The API mode a CAPI minor version has (`1.10` → v1beta1 only).
    pub fn for_capi(version: &str) -> Self {
        if version.trim_start_matches('v').starts_with("1.10") {
            Self::V1Beta1Only
        } else {
            Self::V1Beta2
        }
    }
}

/// Installs every CRD a konnector management cluster needs, with the Cluster CRD as `api` serves it.
pub async fn install_management(client: &Client, api: ClusterApi) -> anyhow::Result<()> {
    let cluster = serde_yaml_ng::to_string(&api.cluster_crd()?)?;
    install(
        client,
        &[&cluster, HELM_CHART_PROXY, HELM_RELEASE_PROXY, EXTENSION_CONFIG],
    )
    .await
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
