//! Rendering the chart values: the variables a values template sees, the built-in template, and the one checked
//! entry point, [`render_checked`], which refuses values that an input could have bent.
//!
//! A values template is operator-written Go `text/template` text and its inputs come from the Cluster, which
//! tenants write. So rendering is surrounded by three checks, each before anything is written:
//! 1. every input is validated on its own ([`validate_inputs`]): hosts are hosts, the trust bundle is base64, the
//!    cluster name is a Kubernetes name, categories hold no YAML syntax;
//! 2. the rendered YAML must have the structure the template gives it with inert placeholders of the same types
//!    ([`check_structure`]), so whatever the template is, no input can add, remove or retype a key;
//! 3. the rendered values must satisfy the contract of the configured chart version ([`check_contract`]).

use konnector_gotemplate::Value;

use crate::domain::{AgentRequest, MAX_CLUSTER_NAME_LEN};
use crate::names::{AGENT_NAME, REMOTE_SECRET_NAME, TRUST_BUNDLE_CONFIGMAP_NAME, truncate_on_char_boundary};

mod contract;
mod inputs;
mod structure;

pub use contract::{ChartGeneration, chart_generation, check_contract};
pub use inputs::{category_mappings, validate_inputs};
pub use structure::check_structure;

/// The values template used when the values-template ConfigMap is absent. It is CAREN's shipped template with its
/// string scalars double-quoted (CAREN leaves `k8sClusterName`, `pc.endpoint`, `categoryMappings` and
/// `additionalTrustBundle` bare, so a Cluster named `1234` renders an integer that the chart refuses); everything
/// else, including the blank line after the `pc:` block and no trailing newline, is byte-for-byte CAREN's.
/// It is the same file the chart installs as the default values-template ConfigMap, so the two cannot drift.
pub const BUILTIN_VALUES_TEMPLATE: &str =
    include_str!("../../../deploy/chart/konnector/files/konnector-agent-values-template.yaml");

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
            Some((host, port)) if !host.is_empty() && *port > 0 => endpoint_url(host, *port),
            _ => String::new(),
        },
    }
}

/// `https://host:port`, with an IPv6 address in brackets (`https://[fd00::2]:6443`): without them the port cannot
/// be told from the address and the text is no URL. A host that already carries brackets keeps one pair.
fn endpoint_url(host: &str, port: i32) -> String {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.contains(':') {
        format!("https://[{bare}]:{port}")
    } else {
        format!("https://{bare}:{port}")
    }
}

/// The Go type name the template data has (what `{{ printf "%T" . }}` prints and field errors name): the type the
/// Go reference program declares for CAREN's variables (konnector-gotemplate's tests/go/render), so that the
/// differential test compares like with like.
const TEMPLATE_DATA_TYPE: &str = "main.values";

impl TemplateValues {
    /// The variables as the template sees them: a struct with CAREN's field names and Go types.
    fn to_template_data(&self) -> Value {
        Value::Struct(
            self.fields()
                .into_iter()
                .map(|(name, field)| {
                    let value = match field {
                        Field::Str(s) => Value::Str(s.to_owned()),
                        Field::Port(p) => Value::Uint(u64::from(p), "uint16"),
                        Field::Bool(b) => Value::Bool(b),
                    };
                    (name.to_owned(), value)
                })
                .collect(),
            TEMPLATE_DATA_TYPE,
        )
    }

    /// Every variable with its template name, in declaration order.
    fn fields(&self) -> Vec<(&'static str, Field<'_>)> {
        vec![
            ("AgentName", Field::Str(&self.agent_name)),
            ("PrismCentralHost", Field::Str(&self.prism_central_host)),
            ("PrismCentralPort", Field::Port(self.prism_central_port)),
            ("PrismCentralInsecure", Field::Bool(self.prism_central_insecure)),
            (
                "PrismCentralAdditionalTrustBundle",
                Field::Str(&self.prism_central_additional_trust_bundle),
            ),
            (
                "CreateAdditionalTrustBundleConfigMap",
                Field::Bool(self.create_additional_trust_bundle_config_map),
            ),
            (
                "AdditionalTrustBundleConfigMapName",
                Field::Str(&self.additional_trust_bundle_config_map_name),
            ),
            ("ClusterName", Field::Str(&self.cluster_name)),
            ("CategoryMappings", Field::Str(&self.category_mappings)),
            (
                "PrismCredentialsSecretName",
                Field::Str(&self.prism_credentials_secret_name),
            ),
            (
                "EnableKubeconfigUpload",
                Field::Bool(self.enable_kubeconfig_upload),
            ),
            ("ControlPlaneEndpoint", Field::Str(&self.control_plane_endpoint)),
        ]
    }

    /// The same variables with every string replaced by an inert placeholder of the same byte length (so `len`,
    /// `slice` and emptiness tests behave alike), keeping only the strings named in `keep`. Numbers and booleans
    /// are kept: they cannot carry syntax.
    /// The same variables with the string variable `name` set to `value`.
    fn with_string(mut self, name: &str, value: &str) -> Self {
        let slot = match name {
            "AgentName" => &mut self.agent_name,
            "PrismCentralHost" => &mut self.prism_central_host,
            "PrismCentralAdditionalTrustBundle" => &mut self.prism_central_additional_trust_bundle,
            "AdditionalTrustBundleConfigMapName" => &mut self.additional_trust_bundle_config_map_name,
            "ClusterName" => &mut self.cluster_name,
            "CategoryMappings" => &mut self.category_mappings,
            "PrismCredentialsSecretName" => &mut self.prism_credentials_secret_name,
            "ControlPlaneEndpoint" => &mut self.control_plane_endpoint,
            _ => return self,
        };
        *slot = value.to_owned();
        self
    }

    fn placeholders(&self, keep: Option<&str>) -> Self {
        let inert = |name: &str, s: &str| {
            if keep == Some(name) {
                s.to_owned()
            } else {
                "a".repeat(s.len())
            }
        };
        Self {
            agent_name: inert("AgentName", &self.agent_name),
            prism_central_host: inert("PrismCentralHost", &self.prism_central_host),
            prism_central_additional_trust_bundle: inert(
                "PrismCentralAdditionalTrustBundle",
                &self.prism_central_additional_trust_bundle,
            ),
            additional_trust_bundle_config_map_name: inert(
                "AdditionalTrustBundleConfigMapName",
                &self.additional_trust_bundle_config_map_name,
            ),
            cluster_name: inert("ClusterName", &self.cluster_name),
            category_mappings: inert("CategoryMappings", &self.category_mappings),
            prism_credentials_secret_name: inert(
                "PrismCredentialsSecretName",
                &self.prism_credentials_secret_name,
            ),
            control_plane_endpoint: inert("ControlPlaneEndpoint", &self.control_plane_endpoint),
            ..self.clone()
        }
    }
}

/// Whether YAML 1.1 (Helm's reading) takes `s`, written plain, as a boolean while YAML 1.2 takes it as a string.
fn is_yaml11_only_boolean(s: &str) -> bool {
    matches!(
        s,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "on"
            | "On"
            | "ON"
            | "off"
            | "Off"
            | "OFF"
    )
}

/// One template variable's value.
#[derive(Clone, Copy)]
enum Field<'a> {
    Str(&'a str),
    Port(u16),
    Bool(bool),
}

/// Why values could not be rendered, or were refused. Messages name inputs (template variables) and value keys;
/// engine messages that could quote an input are scrubbed by [`render_checked`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// The template does not parse.
    #[error("failed to parse the Helm values template: {0}")]
    Parse(String),
    /// The template parsed but could not be executed, e.g. it names an unknown variable.
    #[error("failed to execute the Helm values template: {0}")]
    Execute(String),
    /// An input is not of the form its kind allows.
    #[error("input {input} is refused: {problem}")]
    InvalidInput {
        /// The template variable, and where it comes from.
        input: &'static str,
        /// What is wrong, without the value.
        problem: String,
    },
    /// The rendered values are not a YAML mapping.
    #[error("the rendered Helm values are not one YAML mapping: {0}")]
    NotYaml(String),
    /// An input changed the structure the template gives the values.
    #[error(
        "input {input} changes the structure of the rendered Helm values ({detail}); the values template must place it as a single scalar"
    )]
    StructureChanged {
        /// The template variable that does it, or a description when no single one does.
        input: String,
        /// Which key path changed, without values.
        detail: String,
    },
    /// The rendered values break the contract of the configured chart version.
    #[error("the rendered Helm values do not fit konnector-agent chart {chart_version}: {problem}")]
    Contract {
        /// The chart version checked against.
        chart_version: String,
        /// What is wrong, naming the value key and the input.
        problem: String,
    },
}

/// Renders `template` with `values`, with no checks. Use [`render_checked`] before writing anything.
pub fn render_values(template: &str, values: &TemplateValues) -> Result<String, RenderError> {
    konnector_gotemplate::render(template, values.to_template_data()).map_err(RenderError::from)
}

/// The engine's two failures are this module's first two; the messages are kept as the engine wrote them (and
/// scrubbed of inputs by [`render_checked`]).
impl From<konnector_gotemplate::Error> for RenderError {
    fn from(error: konnector_gotemplate::Error) -> Self {
        match error {
            konnector_gotemplate::Error::Parse(m) => Self::Parse(m),
            konnector_gotemplate::Error::Execute(m) => Self::Execute(m),
        }
    }
}

/// What CAAPH renders back to exactly `{{`: an action printing the two braces as a string constant.
const CAAPH_LEFT_DELIM: &str = "{{ \"{{\" }}";

/// Turns rendered values into a `spec.valuesTemplate` that CAAPH's second rendering (Go `text/template` plus
/// Sprig, against the Cluster) turns back into exactly `values`.
///
/// Go's template lexer treats only the left delimiter `{{` in text as special (a lone `}}` is text), so replacing
/// each `{{` with an action that prints `{{` is enough: no text the operator or an input put in the values is ever
/// executed by CAAPH (no `{{ .Cluster... }}` lookup, no Sprig function, no parse error from an unbalanced `{{`).
/// Matches are taken left to right without overlap, so `{{{` becomes the action followed by a literal `{`, and the
/// action's own closing `}}` cannot join a following `{` into a new delimiter.
pub fn caaph_values_template(values: &str) -> String {
    values.replace("{{", CAAPH_LEFT_DELIM)
}

/// Values that passed every check, and what the caller should tell the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The rendered values, as the chart must receive them.
    pub yaml: String,
    /// `yaml` escaped for CAAPH's second rendering ([`caaph_values_template`]): what goes into
    /// `spec.valuesTemplate`.
    pub values_template: String,
    /// Things the Cluster asks for that the configured chart version ignores; for the answer and an Event.
    pub notes: Vec<String>,
}

/// The one checked way to values: validates every input, renders, checks that no input changed the template's
/// structure, and checks the result against the contract of `chart_version`. Nothing here echoes an input.
pub fn render_checked(
    template: &str,
    values: &TemplateValues,
    chart_version: &str,
) -> Result<Rendered, RenderError> {
    validate_inputs(values)?;
    let yaml = render_values(template, values).map_err(|e| scrub(e, values))?;
    let parsed = check_structure(template, values, &yaml)?;
    let notes = check_contract(&parsed, values, chart_version)?;
    Ok(Rendered {
        values_template: caaph_values_template(&yaml),
        yaml,
        notes,
    })
}

/// Engine errors can quote the value a function choked on; replace any input value they contain.
fn scrub(error: RenderError, values: &TemplateValues) -> RenderError {
    let clean = |mut msg: String| {
        for (_, field) in values.fields() {
            if let Field::Str(s) = field
                && s.len() >= 3
            {
                msg = msg.replace(s, "<input>");
            }
        }
        msg
    };
    match error {
        RenderError::Parse(m) => RenderError::Parse(clean(m)),
        RenderError::Execute(m) => RenderError::Execute(clean(m)),
        other => other,
    }
}

/// Where each input comes from, for messages.
fn input_label(name: &str) -> &'static str {
    match name {
        "PrismCentralHost" => "PrismCentralHost (the host of clusterConfig.nutanix.prismCentralEndpoint.url)",
        "PrismCentralAdditionalTrustBundle" => {
            "PrismCentralAdditionalTrustBundle (clusterConfig.nutanix.prismCentralEndpoint.additionalTrustBundle)"
        }
        "ClusterName" => "ClusterName (the Cluster's name)",
        "CategoryMappings" => "CategoryMappings (the Cluster's additionalCategories)",
        "ControlPlaneEndpoint" => "ControlPlaneEndpoint (the Cluster's spec.controlPlaneEndpoint)",
        "AgentName" => "AgentName",
        "AdditionalTrustBundleConfigMapName" => "AdditionalTrustBundleConfigMapName",
        "PrismCredentialsSecretName" => "PrismCredentialsSecretName",
        _ => "a template variable",
    }
}

fn invalid(name: &str, problem: impl Into<String>) -> RenderError {
    RenderError::InvalidInput {
        input: input_label(name),
        problem: problem.into(),
    }
}

#[cfg(test)]
mod tests;
