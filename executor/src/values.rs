//! Rendering the chart values: the variables a values template sees, the built-in template, and Go
//! `text/template` evaluation through gtmpl.

use std::collections::HashMap;

use gtmpl::Value;

use crate::domain::{
    AGENT_NAME, AgentRequest, MAX_CLUSTER_NAME_LEN, REMOTE_SECRET_NAME, TRUST_BUNDLE_CONFIGMAP_NAME,
};

/// The values template used when the values-template ConfigMap is absent. It renders the same bytes as the
/// template CAREN ships (including the blank line after the `pc:` block, and no trailing newline).
/// It is the same file the chart installs as the default values-template ConfigMap, so the two cannot drift.
pub const BUILTIN_VALUES_TEMPLATE: &str =
    include_str!("../../deploy/chart/konnector/files/konnector-agent-values-template.yaml");

/// The variables a values template can use. Names match CAREN's, so operator-written templates keep working.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateValues {
    /// `AgentName`.
    pub agent_name: String,
    /// `PrismCentralHost`.
    pub prism_central_host: String,
    /// `PrismCentralPort`.
    pub prism_central_port: u16,
    /// `PrismCentralInsecure`: insecure requested, or no trust bundle to verify with.
    pub prism_central_insecure: bool,
    /// `PrismCentralAdditionalTrustBundle`: the bundle when verifying, else empty.
    pub prism_central_additional_trust_bundle: String,
    /// `CreateAdditionalTrustBundleConfigMap`.
    pub create_additional_trust_bundle_config_map: bool,
    /// `AdditionalTrustBundleConfigMapName`.
    pub additional_trust_bundle_config_map_name: String,
    /// `ClusterName`: at most 40 bytes.
    pub cluster_name: String,
    /// `CategoryMappings`: `key=value` pairs joined by commas.
    pub category_mappings: String,
    /// `PrismCredentialsSecretName`.
    pub prism_credentials_secret_name: String,
    /// `EnableKubeconfigUpload`.
    pub enable_kubeconfig_upload: bool,
    /// `ControlPlaneEndpoint`: `https://host:port`, or empty.
    pub control_plane_endpoint: String,
}

/// Converts the domain request into template variables.
pub fn template_values(req: &AgentRequest) -> TemplateValues {
    let pc = &req.prism_central;
    let secure = !pc.insecure && !pc.trust_bundle.is_empty();
    TemplateValues {
        agent_name: AGENT_NAME.to_owned(),
        prism_central_host: pc.host.clone(),
        prism_central_port: pc.port,
        prism_central_insecure: !secure,
        prism_central_additional_trust_bundle: if secure {
            pc.trust_bundle.clone()
        } else {
            String::new()
        },
        create_additional_trust_bundle_config_map: secure,
        additional_trust_bundle_config_map_name: if secure {
            TRUST_BUNDLE_CONFIGMAP_NAME.to_owned()
        } else {
            String::new()
        },
        cluster_name: truncate_on_char_boundary(&req.cluster.name, MAX_CLUSTER_NAME_LEN).to_owned(),
        category_mappings: category_mappings(&req.categories),
        prism_credentials_secret_name: REMOTE_SECRET_NAME.to_owned(),
        enable_kubeconfig_upload: req.enable_kubeconfig_upload,
        control_plane_endpoint: match &req.control_plane_endpoint {
            Some((host, port)) if !host.is_empty() && *port > 0 => format!("https://{host}:{port}"),
            _ => String::new(),
        },
    }
}

impl TemplateValues {
    fn to_gtmpl(&self) -> Value {
        let fields: HashMap<String, Value> = [
            ("AgentName", Value::from(self.agent_name.as_str())),
            ("PrismCentralHost", Value::from(self.prism_central_host.as_str())),
            (
                "PrismCentralPort",
                Value::from(u64::from(self.prism_central_port)),
            ),
            ("PrismCentralInsecure", Value::from(self.prism_central_insecure)),
            (
                "PrismCentralAdditionalTrustBundle",
                Value::from(self.prism_central_additional_trust_bundle.as_str()),
            ),
            (
                "CreateAdditionalTrustBundleConfigMap",
                Value::from(self.create_additional_trust_bundle_config_map),
            ),
            (
                "AdditionalTrustBundleConfigMapName",
                Value::from(self.additional_trust_bundle_config_map_name.as_str()),
            ),
            ("ClusterName", Value::from(self.cluster_name.as_str())),
            ("CategoryMappings", Value::from(self.category_mappings.as_str())),
            (
                "PrismCredentialsSecretName",
                Value::from(self.prism_credentials_secret_name.as_str()),
            ),
            (
                "EnableKubeconfigUpload",
                Value::from(self.enable_kubeconfig_upload),
            ),
            (
                "ControlPlaneEndpoint",
                Value::from(self.control_plane_endpoint.as_str()),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        // An Object (not a Map), so that an unknown field is an error, as with a Go struct.
        Value::Object(fields)
    }
}

/// Why a values template could not be rendered. Messages carry gtmpl's explanation, which names template
/// positions and fields, never values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// The template does not parse.
    #[error("failed to parse the Helm values template: {0}")]
    Parse(String),
    /// The template parsed but could not be executed, e.g. it names an unknown variable.
    #[error("failed to execute the Helm values template: {0}")]
    Execute(String),
    /// The output still contains `{{`, which CAAPH would try to render a second time.
    #[error(
        "the rendered Helm values contain \"{{{{\", which CAAPH would render again as a template; escape it in the values template"
    )]
    ContainsTemplateDelimiter,
}

/// Renders `template` with `values`.
pub fn render_values(template: &str, values: &TemplateValues) -> Result<String, RenderError> {
    let mut tmpl = gtmpl::Template::default();
    tmpl.parse(template)
        .map_err(|e| RenderError::Parse(e.to_string()))?;
    let out = tmpl
        .render(&gtmpl::Context::from(values.to_gtmpl()))
        .map_err(|e| RenderError::Execute(e.to_string()))?;
    if out.contains("{{") {
        return Err(RenderError::ContainsTemplateDelimiter);
    }
    Ok(out)
}

/// Joins categories as `key=value` with commas: entries with an empty key or value are dropped, and exact
/// duplicate pairs are dropped after their first occurrence (the same key with another value is kept).
pub fn category_mappings(categories: &[(String, String)]) -> String {
    let mut seen = std::collections::HashSet::new();
    categories
        .iter()
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .filter(|pair| seen.insert(*pair))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The longest prefix of `s` that is at most `max` bytes and ends on a character boundary.
pub fn truncate_on_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClusterKey, PrismCentral};

    fn request(name: &str) -> AgentRequest {
        AgentRequest {
            cluster: ClusterKey {
                namespace: "ns".into(),
                name: name.into(),
            },
            uid: "uid".into(),
            labels: Default::default(),
            credentials_secret: "creds".into(),
            enable_kubeconfig_upload: true,
            prism_central: PrismCentral {
                host: "pc.example.com".into(),
                port: 9440,
                insecure: false,
                trust_bundle: String::new(),
            },
            control_plane_endpoint: Some(("10.0.0.10".into(), 6443)),
            categories: vec![],
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    const REFERENCE_EXAMPLE: &str = "agent:
  name: konnector-agent
  image:
    privateRegistry: false
    repository: quay.io/karbon
    name: k8s-agent
    tag: \"1.4.0-rc.2\"
pc:
  port: 9440
  insecure: true
  endpoint: pc.example.com

k8sClusterName: my-cluster
k8sDistribution: NKP
createSecret: false
prismCredentialsSecretName: \"konnector-agent\"
kubeconfigUpload:
  enabled: true
  controlPlaneEndpoint: \"https://10.0.0.10:6443\"";

    #[test]
    fn builtin_template_reproduces_the_reference_example() {
        let out = render_values(BUILTIN_VALUES_TEMPLATE, &template_values(&request("my-cluster"))).unwrap();
        assert_eq!(out, REFERENCE_EXAMPLE);
    }

    #[test]
    fn bundle_and_categories() {
        let mut r = request("my-cluster");
        r.prism_central.trust_bundle = "QlVORExF".into();
        r.categories = pairs(&[("Environment", "Production"), ("Department", "Engineering")]);
        let out = render_values(BUILTIN_VALUES_TEMPLATE, &template_values(&r)).unwrap();
        let expected = REFERENCE_EXAMPLE
            .replace("  insecure: true\n", "  insecure: false\n")
            .replace(
                "  endpoint: pc.example.com\n",
                "  endpoint: pc.example.com\n  additionalTrustBundle: QlVORExF\n",
            )
            .replace(
                "prismCredentialsSecretName: \"konnector-agent\"\n",
                "prismCredentialsSecretName: \"konnector-agent\"\ncategoryMappings: Environment=Production,Department=Engineering\ncreateAdditionalTrustBundleConfigMap: true\nadditionalTrustBundleConfigMapName: \"ntnx-additional-trust-bundle-konnector-agent\"\n",
            );
        assert_eq!(out, expected);
        assert!(out.contains("\ncategoryMappings: Environment=Production,Department=Engineering"));
    }

    #[test]
    fn trust_bundle_rules() {
        // insecure + bundle: the bundle is ignored.
        let mut r = request("c");
        r.prism_central.insecure = true;
        r.prism_central.trust_bundle = "QlVORExF".into();
        let v = template_values(&r);
        assert!(v.prism_central_insecure);
        assert!(v.prism_central_additional_trust_bundle.is_empty());
        assert!(!v.create_additional_trust_bundle_config_map);
        assert!(v.additional_trust_bundle_config_map_name.is_empty());
        // secure without bundle falls back to insecure.
        let v = template_values(&request("c"));
        assert!(v.prism_central_insecure);
    }

    #[test]
    fn kubeconfig_upload_and_endpoint() {
        let mut r = request("c");
        r.enable_kubeconfig_upload = false;
        r.control_plane_endpoint = None;
        let out = render_values(BUILTIN_VALUES_TEMPLATE, &template_values(&r)).unwrap();
        assert!(out.ends_with("kubeconfigUpload:\n  enabled: false"), "{out}");
        r.control_plane_endpoint = Some(("".into(), 6443));
        assert_eq!(template_values(&r).control_plane_endpoint, "");
        r.control_plane_endpoint = Some(("h".into(), 0));
        assert_eq!(template_values(&r).control_plane_endpoint, "");
    }

    #[test]
    fn categories() {
        assert_eq!(category_mappings(&[]), "");
        assert_eq!(
            category_mappings(&pairs(&[
                ("Environment", "Production"),
                ("Region", "US-East"),
                ("Environment", "Staging"),
                ("Environment", "Production"),
                ("Department", "Engineering"),
            ])),
            "Environment=Production,Region=US-East,Environment=Staging,Department=Engineering"
        );
        assert_eq!(
            category_mappings(&pairs(&[("", "x"), ("k", ""), ("a", "b"), ("a", "b")])),
            "a=b"
        );
        assert_eq!(category_mappings(&pairs(&[("", ""), ("k", "")])), "");
        assert_eq!(
            category_mappings(&pairs(&[("App-Tier", "web/front end")])),
            "App-Tier=web/front end"
        );
    }

    #[test]
    fn cluster_name_truncation() {
        let name63 = "a".repeat(63);
        assert_eq!(template_values(&request(&name63)).cluster_name, "a".repeat(40));
        // Multi-byte characters are never split.
        let s = format!("{}é", "a".repeat(39));
        assert_eq!(truncate_on_char_boundary(&s, 40), "a".repeat(39));
        assert_eq!(truncate_on_char_boundary("short", 40), "short");
    }

    #[test]
    fn template_errors() {
        let v = template_values(&request("c"));
        assert!(matches!(render_values("{{ if }", &v), Err(RenderError::Parse(_))));
        assert!(matches!(
            render_values("{{ .NonExistentField }}", &v),
            Err(RenderError::Execute(_))
        ));
        assert_eq!(
            render_values("x: {{ \"{{\" }}", &v),
            Err(RenderError::ContainsTemplateDelimiter)
        );
        assert_eq!(
            render_values(
                "{{ if and .EnableKubeconfigUpload (eq .PrismCentralPort 9440) }}yes{{ end }}",
                &v
            )
            .unwrap(),
            "yes"
        );
    }
}
