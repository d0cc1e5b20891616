//! The rendered values checked against what the configured konnector-agent chart version requires.

use serde_yaml_ng::Value as Yaml;

use super::{RenderError, TemplateValues, structure::shape_kind};

/// The konnector-agent chart versions konnector knows, by what their values can honour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChartGeneration {
    /// 1.3.x and older: no `pc.additionalTrustBundle`, `prismCredentialsSecretName` or `kubeconfigUpload`; the
    /// credentials Secret mounted is the one named `agent.name`.
    Before1_4,
    /// 1.4.0 and later (including 1.4.0 release candidates).
    From1_4,
}

/// Which generation a chart version belongs to; `None` when the version is not `[v]MAJOR.MINOR[.PATCH][-pre]`.
pub fn chart_generation(version: &str) -> Option<ChartGeneration> {
    let core = version.strip_prefix('v').unwrap_or(version);
    let core = core.split(['-', '+']).next().unwrap_or_default();
    let mut parts = core.split('.').map(str::parse::<u64>);
    let major = parts.next()?.ok()?;
    let minor = parts.next()?.ok()?;
    if let Some(patch) = parts.next() {
        patch.ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(if (major, minor) < (1, 4) {
        ChartGeneration::Before1_4
    } else {
        ChartGeneration::From1_4
    })
}

/// Pattern the chart's schema gives `k8sDistribution`.
const DISTRIBUTIONS: [&str; 5] = ["CAPX", "OCP", "NKE", "EKSA", "NKP"];

/// Checks parsed values against what the chart's `values.schema.json` and templates require, for the chart
/// generation of `chart_version`, and lists what the Cluster asks for that this chart version ignores.
pub fn check_contract(
    values_yaml: &Yaml,
    inputs: &TemplateValues,
    chart_version: &str,
) -> Result<Vec<String>, RenderError> {
    let mut notes = Vec::new();
    let generation = chart_generation(chart_version).unwrap_or_else(|| {
        notes.push(format!(
            "chart version {chart_version:?} is not a MAJOR.MINOR.PATCH version; the values were checked against the 1.4 contract"
        ));
        ChartGeneration::From1_4
    });
    let fail = |problem: String| RenderError::Contract {
        chart_version: chart_version.to_owned(),
        problem,
    };
    let get = |path: &[&str]| path.iter().try_fold(values_yaml, |node, key| node.get(*key));
    let kind = |path: &[&str]| get(path).map(shape_kind);
    let dotted = |path: &[&str]| path.join(".");
    // (value key, required kind, whether required, the input it comes from)
    let typed: [(&[&str], &str, bool, &str); 5] = [
        (&["k8sClusterName"], "string", true, "ClusterName"),
        (&["pc", "endpoint"], "string", true, "PrismCentralHost"),
        (&["pc", "port"], "integer", false, "PrismCentralPort"),
        (&["pc", "insecure"], "boolean", false, "PrismCentralInsecure"),
        (&["categoryMappings"], "string", false, "CategoryMappings"),
    ];
    for (path, want, required, input) in typed {
        match kind(path) {
            None if required => {
                return Err(fail(format!(
                    "{} is missing; the chart requires it (template variable {input})",
                    dotted(path)
                )));
            }
            Some(k) if k != want => {
                return Err(fail(format!(
                    "{} must be of type {want} but renders as {k} (template variable {input}; quote it in the values template)",
                    dotted(path)
                )));
            }
            _ => {}
        }
    }
    if let Some(read) = get(&["categoryMappings"]).and_then(Yaml::as_str)
        && read != inputs.category_mappings
    {
        return Err(fail(
            "categoryMappings does not read back as the Cluster's categories (the template leaves characters with a meaning in YAML unquoted; quote it in the values template)".to_owned(),
        ));
    }
    if get(&["k8sClusterName"]).and_then(Yaml::as_str) == Some("") {
        return Err(fail(
            "k8sClusterName is empty (template variable ClusterName)".to_owned(),
        ));
    }
    if get(&["pc", "endpoint"]).and_then(Yaml::as_str) == Some("") {
        return Err(fail(
            "pc.endpoint is empty (template variable PrismCentralHost)".to_owned(),
        ));
    }
    if let Some(d) = get(&["k8sDistribution"])
        && !d.as_str().is_some_and(|d| DISTRIBUTIONS.contains(&d))
    {
        return Err(fail(format!(
            "k8sDistribution must be one of {}",
            DISTRIBUTIONS.join(", ")
        )));
    }
    match generation {
        ChartGeneration::From1_4 => {
            let upload = get(&["kubeconfigUpload", "enabled"]);
            if let Some(u) = upload
                && !u.is_bool()
            {
                return Err(fail(
                    "kubeconfigUpload.enabled must be a boolean (template variable EnableKubeconfigUpload)"
                        .to_owned(),
                ));
            }
            if upload.and_then(Yaml::as_bool) == Some(true)
                && get(&["kubeconfigUpload", "controlPlaneEndpoint"])
                    .and_then(Yaml::as_str)
                    .is_none_or(str::is_empty)
            {
                return Err(fail(
                    "kubeconfigUpload.enabled is true but kubeconfigUpload.controlPlaneEndpoint is missing; the Cluster has no spec.controlPlaneEndpoint (template variable ControlPlaneEndpoint): set it, or set konnectorAgent.enableKubeconfigUpload to false".to_owned(),
                ));
            }
        }
        ChartGeneration::Before1_4 => {
            // 1.3.x mounts the Secret named agent.name; konnector copies the credentials under its own name.
            let agent_name = get(&["agent", "name"]).and_then(Yaml::as_str);
            if agent_name != Some(inputs.prism_credentials_secret_name.as_str()) {
                return Err(fail(format!(
                    "charts before 1.4.0 mount the credentials Secret named by agent.name, so agent.name must be {:?}, the Secret konnector copies (template variable PrismCredentialsSecretName)",
                    inputs.prism_credentials_secret_name
                )));
            }
            if !inputs.prism_central_additional_trust_bundle.is_empty() {
                notes.push(format!(
                    "chart {chart_version} ignores the Prism Central trust bundle (pc.additionalTrustBundle needs chart 1.4.0 or later): the agent will verify Prism Central against its system roots only"
                ));
            }
            if inputs.enable_kubeconfig_upload {
                notes.push(format!(
                    "chart {chart_version} ignores enableKubeconfigUpload (kubeconfigUpload needs chart 1.4.0 or later)"
                ));
            }
        }
    }
    Ok(notes)
}
