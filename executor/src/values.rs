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

use std::collections::BTreeMap;

use serde_yaml_ng::Value as Yaml;

use konnector_gotemplate::Value;

use crate::domain::{AgentRequest, MAX_CLUSTER_NAME_LEN};
use crate::names::{AGENT_NAME, REMOTE_SECRET_NAME, TRUST_BUNDLE_CONFIGMAP_NAME, truncate_on_char_boundary};

/// The values template used when the values-template ConfigMap is absent. It is CAREN's shipped template with its
/// string scalars double-quoted (CAREN leaves `k8sClusterName`, `pc.endpoint`, `categoryMappings` and
/// `additionalTrustBundle` bare, so a Cluster named `1234` renders an integer that the chart refuses); everything
/// else, including the blank line after the `pc:` block and no trailing newline, is byte-for-byte CAREN's.
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

/// Validates each input on its own, by what it is. Messages name the input and the rule, never the value.
pub fn validate_inputs(v: &TemplateValues) -> Result<(), RenderError> {
    for (name, value) in [
        ("AgentName", &v.agent_name),
        ("PrismCredentialsSecretName", &v.prism_credentials_secret_name),
        ("ClusterName", &v.cluster_name),
    ] {
        if value.is_empty() || !is_name_prefix(value) {
            return Err(invalid(
                name,
                "it must be a Kubernetes object name (lowercase letters, digits, '-' and '.')",
            ));
        }
    }
    if !v.additional_trust_bundle_config_map_name.is_empty()
        && !is_name_prefix(&v.additional_trust_bundle_config_map_name)
    {
        return Err(invalid(
            "AdditionalTrustBundleConfigMapName",
            "it must be a Kubernetes object name",
        ));
    }
    // '_' is no DNS host name character, but resolvers and CAREN accept it and Prism Central deployments use it;
    // it has no meaning in YAML, so only the template's quoting (checked after rendering) matters.
    if !is_host_with(&v.prism_central_host, b"-_") {
        return Err(invalid(
            "PrismCentralHost",
            "it must be a DNS name or an IP address (letters, digits, '-', '_', '.', and ':' for IPv6)",
        ));
    }
    if !v.control_plane_endpoint.is_empty() {
        let host_port = v
            .control_plane_endpoint
            .strip_prefix("https://")
            .and_then(|rest| rest.rsplit_once(':'))
            .filter(|(host, port)| {
                // An IPv6 address only in brackets: unbracketed, its colons would read as a port.
                let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                    Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
                    None => !host.contains(':') && is_host(host),
                };
                host_ok && !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
            });
        if host_port.is_none() {
            return Err(invalid(
                "ControlPlaneEndpoint",
                "it must be https://<DNS name or IP address>:<port>, with an IPv6 address in brackets",
            ));
        }
    }
    if !is_base64(&v.prism_central_additional_trust_bundle) {
        return Err(invalid(
            "PrismCentralAdditionalTrustBundle",
            "it must be standard base64 (A-Z, a-z, 0-9, '+', '/', with '=' only as trailing padding) on one line",
        ));
    }
    validate_category_mappings(&v.category_mappings)
}

/// Each category key and value is non-empty, has no leading or trailing space, and holds no `,` or `=` (which join
/// them), no control character (newlines), no `"` and no `\`. Other characters, YAML's included (`:`, `#`, `&`,
/// `'`...), are as CAREN let them through: whether they are safe depends on the template's quoting, so
/// [`check_contract`] requires the rendered `categoryMappings` to read back exactly as given, which refuses them
/// where the template leaves them unquoted. `{{` is escaped for CAAPH like every other value.
fn validate_category_mappings(mappings: &str) -> Result<(), RenderError> {
    if mappings.is_empty() {
        return Ok(());
    }
    for (i, pair) in mappings.split(',').enumerate() {
        let position = i + 1;
        let Some((key, value)) = pair.split_once('=') else {
            return Err(invalid(
                "CategoryMappings",
                format!("category {position} has no key=value form (a key or value holds ',' or '=')"),
            ));
        };
        for (part, text) in [("key", key), ("value", value)] {
            let allowed = |c: char| !c.is_control() && !matches!(c, '"' | '\\' | '=' | ',');
            if text.is_empty() || !text.chars().all(allowed) || text.starts_with(' ') || text.ends_with(' ') {
                return Err(invalid(
                    "CategoryMappings",
                    format!(
                        "the {part} of category {position} must be non-empty, without leading or trailing spaces, control characters, '\"' or '\\'"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A Kubernetes name or a prefix of one (the cluster name may have been cut at 40 bytes).
fn is_name_prefix(s: &str) -> bool {
    s.len() <= 253
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// A DNS name (letters, digits, '-', '.'), an IPv4 address, or an IPv6 address without brackets.
fn is_host(s: &str) -> bool {
    is_host_with(s, b"-")
}

/// [`is_host`], with `inner` the characters a label may hold besides letters and digits (never first or last).
fn is_host_with(s: &str, inner: &[u8]) -> bool {
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    if s.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    s.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.starts_with(|c: char| c.is_ascii_alphanumeric())
            && label.ends_with(|c: char| c.is_ascii_alphanumeric())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || inner.contains(&b))
    })
}

/// Standard base64 on one line; empty is allowed (no bundle).
fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The shape of a YAML document: every key path with the kind of node found there.
type Shape = BTreeMap<String, &'static str>;

fn shape(yaml: &Yaml) -> Shape {
    fn walk(node: &Yaml, path: String, out: &mut Shape) {
        let kind = match node {
            Yaml::Null => "null",
            Yaml::Bool(_) => "boolean",
            Yaml::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Yaml::Number(_) => "float",
            Yaml::String(_) => "string",
            Yaml::Sequence(_) => "sequence",
            Yaml::Mapping(_) => "mapping",
            Yaml::Tagged(_) => "tagged value",
        };
        match node {
            Yaml::Mapping(m) => {
                for (k, v) in m {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        // A non-string key is structure too; its kind is recorded, not its text.
                        other => format!("<{} key>", shape_kind(other)),
                    };
                    walk(v, format!("{path}.{key}"), out);
                }
            }
            Yaml::Sequence(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
        out.insert(if path.is_empty() { ".".to_owned() } else { path }, kind);
    }
    let mut out = Shape::new();
    walk(yaml, String::new(), &mut out);
    out
}

fn shape_kind(y: &Yaml) -> &'static str {
    shape(y).get(".").copied().unwrap_or("node")
}

fn parse_yaml(yaml: &str) -> Result<Yaml, String> {
    // Position only: the parser's message can quote the text around the error, which may be an input.
    serde_yaml_ng::from_str::<Yaml>(yaml).map_err(|e| match e.location() {
        Some(l) => format!("invalid YAML at line {} column {}", l.line(), l.column()),
        None => "invalid YAML".to_owned(),
    })
}

/// Renders the template again with inert placeholders for every string input and requires the real rendering
/// to have the same key paths with the same kinds of node. When it does not, the inputs are put back one at a
/// time to name the one responsible. Returns the parsed real values.
pub fn check_structure(template: &str, values: &TemplateValues, yaml: &str) -> Result<Yaml, RenderError> {
    let inert =
        render_values(template, &values.placeholders(None)).map_err(|_| RenderError::StructureChanged {
            input: "(undetermined)".to_owned(),
            detail: "the template renders with the real inputs but not with placeholders of the same length"
                .to_owned(),
        })?;
    let inert_shape = shape(&parse_yaml(&inert).map_err(|e| {
        RenderError::NotYaml(format!(
            "{e} (even with placeholder inputs: the template itself is not YAML)"
        ))
    })?);
    let real = parse_yaml(yaml);
    let difference = |candidate: &Result<Yaml, String>| -> Option<String> {
        match candidate {
            Err(e) => Some(e.clone()),
            Ok(y) => first_difference(&inert_shape, &shape(y)),
        }
    };
    let Some(detail) = difference(&real) else {
        // Helm reads values as YAML 1.1, where a plain `no`, `on`, `yes`, `off`, `y` or `n` is a boolean; the
        // parser here is YAML 1.2, where they are strings. For an input holding one of those words, render again
        // with `true` (a boolean in both) in its place: if the shape changes, the template leaves it unquoted, and
        // Helm would read the real value as a boolean too.
        for (name, field) in values.fields() {
            let Field::Str(text) = field else { continue };
            if !is_yaml11_only_boolean(text) {
                continue;
            }
            let probe = values.placeholders(None).with_string(name, "true");
            if let Ok(one) = render_values(template, &probe)
                && let Some(d) = difference(&parse_yaml(&one))
            {
                return Err(RenderError::StructureChanged {
                    input: input_label(name).to_owned(),
                    detail: format!(
                        "Helm reads values as YAML 1.1, which takes this unquoted input as a boolean ({d}); quote it in the values template"
                    ),
                });
            }
        }
        return Ok(real.unwrap_or(Yaml::Null));
    };
    // Name the culprit: the first input that, alone among placeholders, changes the shape.
    let culprit = values.fields().into_iter().find_map(|(name, field)| {
        let Field::Str(_) = field else { return None };
        let one = render_values(template, &values.placeholders(Some(name))).ok()?;
        difference(&parse_yaml(&one)).map(|d| (name, d))
    });
    Err(match culprit {
        Some((name, detail)) => RenderError::StructureChanged {
            input: input_label(name).to_owned(),
            detail,
        },
        None => RenderError::StructureChanged {
            input: "a combination of inputs".to_owned(),
            detail,
        },
    })
}

fn first_difference(expected: &Shape, actual: &Shape) -> Option<String> {
    for (path, kind) in expected {
        match actual.get(path) {
            None => return Some(format!("key {path} disappears")),
            Some(k) if k != kind => {
                return Some(format!("key {path} changes from {kind} to {k}"));
            }
            Some(_) => {}
        }
    }
    actual
        .keys()
        .find(|p| !expected.contains_key(*p))
        .map(|_| "a key is added".to_owned())
}

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

    /// CAREN's shipped template, byte for byte (the built-in one before its scalars were quoted).
    const CAREN_TEMPLATE: &str = include_str!("../../tests/go/testdata/caren-values-template.yaml");

    /// [`REFERENCE_EXAMPLE`] as the built-in template renders it: the same bytes with the string scalars quoted.
    fn quoted(caren: &str) -> String {
        caren
            .replace("  name: konnector-agent\n", "  name: \"konnector-agent\"\n")
            .replace("  endpoint: pc.example.com\n", "  endpoint: \"pc.example.com\"\n")
            .replace("k8sClusterName: my-cluster\n", "k8sClusterName: \"my-cluster\"\n")
            .replace(
                "additionalTrustBundle: QlVORExF\n",
                "additionalTrustBundle: \"QlVORExF\"\n",
            )
            .replace(
                "categoryMappings: Environment=Production,Department=Engineering\n",
                "categoryMappings: \"Environment=Production,Department=Engineering\"\n",
            )
    }

    #[test]
    fn caren_template_reproduces_the_reference_example() {
        let out = render_values(CAREN_TEMPLATE, &template_values(&request("my-cluster"))).unwrap();
        assert_eq!(out, REFERENCE_EXAMPLE);
    }

    #[test]
    fn builtin_template_is_carens_with_quoted_scalars() {
        let unquoted = [
            "AgentName",
            "PrismCentralHost",
            "PrismCentralAdditionalTrustBundle",
            "ClusterName",
            "CategoryMappings",
        ]
        .iter()
        .fold(BUILTIN_VALUES_TEMPLATE.to_owned(), |t, v| {
            t.replace(&format!("\"{{{{ .{v} }}}}\""), &format!("{{{{ .{v} }}}}"))
        });
        assert_eq!(unquoted, CAREN_TEMPLATE);
        let out = render_values(BUILTIN_VALUES_TEMPLATE, &template_values(&request("my-cluster"))).unwrap();
        assert_eq!(out, quoted(REFERENCE_EXAMPLE));
    }

    #[test]
    fn ipv6_control_plane_endpoints_are_bracketed() {
        let mut r = request("my-cluster");
        for (host, want) in [
            ("fd00::2", "https://[fd00::2]:6443"),
            ("[fd00::2]", "https://[fd00::2]:6443"),
            ("10.0.0.10", "https://10.0.0.10:6443"),
            ("cp.example.com", "https://cp.example.com:6443"),
        ] {
            r.control_plane_endpoint = Some((host.into(), 6443));
            let v = template_values(&r);
            assert_eq!(v.control_plane_endpoint, want);
            // The rendered values pass the same checks as every other endpoint.
            validate_inputs(&v).unwrap();
            let out = render_values(BUILTIN_VALUES_TEMPLATE, &v).unwrap();
            assert!(
                out.contains(&format!("controlPlaneEndpoint: \"{want}\"")),
                "{out}"
            );
        }
        // Unbracketed IPv6 text in the endpoint is no URL and stays refused.
        let mut v = template_values(&r);
        v.control_plane_endpoint = "https://fd00::2:6443".into();
        assert!(validate_inputs(&v).is_err());
        v.control_plane_endpoint = "https://[not-v6]:6443".into();
        assert!(validate_inputs(&v).is_err());
    }

    #[test]
    fn bundle_and_categories() {
        let mut r = request("my-cluster");
        r.prism_central.trust_bundle = "QlVORExF".into();
        r.categories = pairs(&[("Environment", "Production"), ("Department", "Engineering")]);
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
        let out = render_values(CAREN_TEMPLATE, &template_values(&r)).unwrap();
        assert_eq!(out, expected);
        assert!(out.contains("\ncategoryMappings: Environment=Production,Department=Engineering"));
        let out = render_checked(BUILTIN_VALUES_TEMPLATE, &template_values(&r), "1.4.0").unwrap();
        assert_eq!(out.yaml, quoted(&expected));
        assert!(out.notes.is_empty());
    }

    #[test]
    fn what_caren_let_through_is_accepted_where_the_template_keeps_it_safe() {
        // '_' in a Prism Central host name.
        let mut r = request("c");
        r.prism_central.host = "pc_1.example.com".into();
        render_checked(BUILTIN_VALUES_TEMPLATE, &template_values(&r), "1.4.0").unwrap();
        render_checked(CAREN_TEMPLATE, &template_values(&r), "1.4.0").unwrap();
        for bad in ["_pc.example.com", "pc_.example.com", "pc example.com", "pc:x"] {
            r.prism_central.host = bad.into();
            assert!(validate_inputs(&template_values(&r)).is_err(), "{bad}");
        }

        // Category characters the built-in template quotes: accepted and read back exactly.
        let mut r = request("c");
        r.categories = pairs(&[("Team", "a: b #1"), ("Cost&Center", "*x!")]);
        let out = render_checked(BUILTIN_VALUES_TEMPLATE, &template_values(&r), "1.4.0").unwrap();
        assert!(
            out.yaml
                .contains("categoryMappings: \"Team=a: b #1,Cost&Center=*x!\""),
            "{}",
            out.yaml
        );
        // CAREN's template leaves them unquoted: refused, by what the YAML reads back, not by an alphabet.
        assert!(render_checked(CAREN_TEMPLATE, &template_values(&r), "1.4.0").is_err());
        r.categories = pairs(&[("Team", "x #1")]);
        let err = render_checked(CAREN_TEMPLATE, &template_values(&r), "1.4.0").unwrap_err();
        assert!(err.to_string().contains("read back"), "{err}");
        // Quotes, backslashes and control characters stay refused whatever the template.
        for bad in ["a\"b", "a\\b", "a\nb"] {
            r.categories = pairs(&[("Team", bad)]);
            assert!(validate_inputs(&template_values(&r)).is_err(), "{bad:?}");
        }

        // YAML 1.1 booleans: Helm reads a plain `no` as false. Quoted by the built-in template: fine.
        for name in ["no", "on", "off", "yes", "y", "n"] {
            let v = template_values(&request(name));
            render_checked(BUILTIN_VALUES_TEMPLATE, &v, "1.4.0").unwrap();
            let err = render_checked(CAREN_TEMPLATE, &v, "1.4.0")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("YAML 1.1") && err.contains("ClusterName"),
                "{name}: {err}"
            );
        }
        // Words YAML 1.1 does not take as booleans are left alone.
        render_checked(CAREN_TEMPLATE, &template_values(&request("nope")), "1.4.0").unwrap();
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
        let out = render_checked(BUILTIN_VALUES_TEMPLATE, &template_values(&r), "1.4.0")
            .unwrap()
            .yaml;
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

    /// The conversion into the engine's data: CAREN's variable names in CAREN's order, with CAREN's Go types (the
    /// port a `uint16`, so `printf "%T"` and comparisons behave as in CAREN), in the reference program's struct type.
    #[test]
    fn template_data_is_carens_struct() {
        let mut v = template_values(&request("my-cluster"));
        v.category_mappings = "a=b".into();
        let s = |x: &str| Value::Str(x.into());
        let expected = Value::Struct(
            vec![
                ("AgentName".into(), s("konnector-agent")),
                ("PrismCentralHost".into(), s(&v.prism_central_host)),
                (
                    "PrismCentralPort".into(),
                    Value::Uint(u64::from(v.prism_central_port), "uint16"),
                ),
                (
                    "PrismCentralInsecure".into(),
                    Value::Bool(v.prism_central_insecure),
                ),
                (
                    "PrismCentralAdditionalTrustBundle".into(),
                    s(&v.prism_central_additional_trust_bundle),
                ),
                (
                    "CreateAdditionalTrustBundleConfigMap".into(),
                    Value::Bool(v.create_additional_trust_bundle_config_map),
                ),
                (
                    "AdditionalTrustBundleConfigMapName".into(),
                    s(&v.additional_trust_bundle_config_map_name),
                ),
                ("ClusterName".into(), s("my-cluster")),
                ("CategoryMappings".into(), s("a=b")),
                (
                    "PrismCredentialsSecretName".into(),
                    s(&v.prism_credentials_secret_name),
                ),
                (
                    "EnableKubeconfigUpload".into(),
                    Value::Bool(v.enable_kubeconfig_upload),
                ),
                ("ControlPlaneEndpoint".into(), s(&v.control_plane_endpoint)),
            ],
            "main.values",
        );
        assert_eq!(v.to_template_data(), expected);
        assert_eq!(
            render_values("{{ printf \"%T %T\" . .PrismCentralPort }}", &v).unwrap(),
            "main.values uint16"
        );
    }

    #[test]
    fn template_errors() {
        let v = template_values(&request("c"));
        assert!(matches!(render_values("{{ if }", &v), Err(RenderError::Parse(_))));
        assert!(matches!(
            render_values("{{ .NonExistentField }}", &v),
            Err(RenderError::Execute(_))
        ));
        // `{{` in the output is the operator's literal text; it is escaped for CAAPH, not refused.
        assert_eq!(render_values("x: {{ \"{{\" }}", &v).unwrap(), "x: {{");
        assert_eq!(
            render_values(
                "{{ if and .EnableKubeconfigUpload (eq .PrismCentralPort 9440) }}yes{{ end }}",
                &v
            )
            .unwrap(),
            "yes"
        );
    }

    /// Text that CAAPH would execute if it reached `spec.valuesTemplate` as is: Sprig and Cluster lookups,
    /// functions CAAPH removes, comments, trim markers, and unbalanced or runs of braces.
    const HOSTILE_BRACES: [&str; 12] = [
        "{{ env \"HOME\" }}",
        "{{ .Cluster.metadata.name }}",
        "{{ .Cluster.metadata.annotations }}",
        "{{ b64dec \"aGk=\" }}",
        "{{",
        "x {{ unbalanced",
        "{{{",
        "{{{{}}}}",
        "}} {{- trim -}} {{",
        "{{/* c */}}",
        "{{ \"{{\" }}",
        "{{ define \"T\" }}x{{ end }}{{ template \"T\" }}",
    ];

    #[test]
    fn caaph_escaping_renders_back_to_the_literal() {
        let v = template_values(&request("c"));
        for hostile in HOSTILE_BRACES {
            let escaped = caaph_values_template(hostile);
            // Every `{{` left is the start of the escaping action itself.
            assert_eq!(
                escaped.matches("{{").count(),
                escaped.matches(CAAPH_LEFT_DELIM).count() * 2,
                "{escaped}"
            );
            // A Go text/template rendering (this engine, which the differential test holds to Go's) gives the
            // literal back; tests/tests/caaph_rendering.rs does the same through real Go and Sprig.
            assert_eq!(render_values(&escaped, &v).unwrap(), hostile, "{escaped}");
        }
        // Text without `{{` is written as is, so templates that never print braces keep their exact bytes.
        let plain = render_values(BUILTIN_VALUES_TEMPLATE, &v).unwrap();
        assert_eq!(caaph_values_template(&plain), plain);
    }

    #[test]
    fn literal_braces_from_the_template_reach_the_chart_escaped_for_caaph() {
        let v = template_values(&request("c1"));
        let template = format!(
            "{BUILTIN_VALUES_TEMPLATE}\nextra: {{{{ printf \"%q\" \"{{{{ .Cluster.metadata.name }}}}\" }}}}\n"
        );
        let out = render_checked(&template, &v, "1.4.0").unwrap();
        assert!(
            out.yaml.ends_with("\nextra: \"{{ .Cluster.metadata.name }}\"\n"),
            "{}",
            out.yaml
        );
        assert!(
            out.values_template
                .ends_with("\nextra: \"{{ \"{{\" }} .Cluster.metadata.name }}\"\n"),
            "{}",
            out.values_template
        );
        assert_eq!(render_values(&out.values_template, &v).unwrap(), out.yaml);
        // Values without braces go out unchanged.
        let plain = checked(&v).unwrap();
        assert_eq!(plain.values_template, plain.yaml);
    }

    fn checked(v: &TemplateValues) -> Result<Rendered, RenderError> {
        render_checked(BUILTIN_VALUES_TEMPLATE, v, "1.4.0")
    }

    /// Asserts that `v` is refused, with a message naming `input` and not containing `secret`.
    fn refused(template: &str, v: &TemplateValues, input: &str, secret: &str) {
        let err = render_checked(template, v, "1.4.0")
            .expect_err("must be refused")
            .to_string();
        assert!(err.contains(input), "{err:?} should name {input}");
        assert!(!err.contains(secret), "{err:?} echoes the value");
    }

    const INJECTION: &str = "x\nagent:\n  image:\n    repository: evil.example/agent";

    #[test]
    fn injected_values_are_refused_naming_the_input() {
        let base = template_values(&request("c1"));
        // Category values, through the built-in template and through CAREN's unquoted one.
        let mut r = request("c1");
        for (value, secret) in [
            (INJECTION, "evil.example"),
            ("a: {b: c}", "{b: c}"),
            ("&anchor x", "&anchor"),
            ("*alias", "*alias"),
            ("!!binary eA==", "!!binary"),
            ("{{ .AgentName }}", "{{"),
            ("say \"hi\"", "\"hi\""),
            ("it's", "it's"),
            ("x # comment", "# comment"),
            ("[a, b]", "[a, b]"),
            ("| block", "| block"),
        ] {
            // Refused, naming the input; or, where the template quotes it (or YAML reads it plainly), accepted only
            // when it reads back exactly as given, as one string: nothing injected, nothing lost.
            let refused_or_exact = |t: &str, v: &TemplateValues| match render_checked(t, v, "1.4.0") {
                Err(e) => {
                    let e = e.to_string();
                    assert!(
                        e.contains("CategoryMappings") || e.contains("categoryMappings"),
                        "{e}"
                    );
                    assert!(!e.contains(secret), "{e:?} echoes the value");
                }
                Ok(out) => {
                    let yaml: Yaml = serde_yaml_ng::from_str(&out.yaml).unwrap();
                    assert_eq!(
                        yaml["categoryMappings"].as_str(),
                        Some(v.category_mappings.as_str()),
                        "{value:?}"
                    );
                    assert!(
                        yaml.get("agent")
                            .and_then(|a| a.get("image"))
                            .is_some_and(|i| i["repository"] == "quay.io/karbon")
                    );
                }
            };
            r.categories = pairs(&[("Environment", value)]);
            for t in [BUILTIN_VALUES_TEMPLATE, CAREN_TEMPLATE] {
                refused_or_exact(t, &template_values(&r));
            }
            r.categories = pairs(&[(value, "v")]);
            refused_or_exact(BUILTIN_VALUES_TEMPLATE, &template_values(&r));
            // A newline or a double quote is refused whatever the template.
            if value.contains(['\n', '"']) {
                refused(
                    BUILTIN_VALUES_TEMPLATE,
                    &template_values(&r),
                    "CategoryMappings",
                    secret,
                );
            }
        }
        // What CAREN's unquoted template cannot carry is refused there, by what the YAML reads back.
        for value in ["a: {b: c}", "x # comment", "[a, b]"] {
            r.categories = pairs(&[("Environment", value)]);
            refused(CAREN_TEMPLATE, &template_values(&r), "ategoryMappings", value);
        }
        // Hosts.
        for host in [
            "pc.example.com\nagent: x",
            "pc.example.com # x",
            "pc\"x",
            "pc: x",
            "{{x}}",
            "",
        ] {
            let v = TemplateValues {
                prism_central_host: host.into(),
                ..base.clone()
            };
            refused(
                BUILTIN_VALUES_TEMPLATE,
                &v,
                "PrismCentralHost",
                if host.is_empty() { "\u{0}" } else { host },
            );
        }
        for endpoint in [
            "https://10.0.0.1:6443\nagent: x",
            "https://h#x:6443",
            "http://h:6443",
            "https://h:x",
        ] {
            let v = TemplateValues {
                control_plane_endpoint: endpoint.into(),
                ..base.clone()
            };
            refused(BUILTIN_VALUES_TEMPLATE, &v, "ControlPlaneEndpoint", endpoint);
        }
        // Trust bundle: only the base64 alphabet.
        for bundle in [
            "QlVO\nRExF",
            "QlVORExF\nagent: x",
            "QlVO RExF",
            "QlVO\"",
            "QlVORExF===",
            "=QlVO",
        ] {
            let v = TemplateValues {
                prism_central_additional_trust_bundle: bundle.into(),
                ..base.clone()
            };
            refused(
                BUILTIN_VALUES_TEMPLATE,
                &v,
                "PrismCentralAdditionalTrustBundle",
                bundle,
            );
        }
        // Cluster names.
        for name in ["c1\nagent: x", "C1", "c1 #", "c1\"", "-c1", "{{c}}"] {
            let v = TemplateValues {
                cluster_name: name.into(),
                ..base.clone()
            };
            refused(BUILTIN_VALUES_TEMPLATE, &v, "ClusterName", name);
        }
    }

    #[test]
    fn valid_inputs_pass() {
        let mut r = request("c1.example-2");
        r.categories = pairs(&[("App-Tier", "web/front end"), ("Région", "Île (1)"), ("k", "a=b")]);
        // `a=b` as a value: the first '=' separates, so the value holds '='; that is refused as ambiguous.
        assert!(checked(&template_values(&r)).is_err());
        r.categories.pop();
        r.prism_central.host = "fd00::1".into();
        r.prism_central.trust_bundle = "QlVORExF+/9=".into();
        r.control_plane_endpoint = Some(("fd00::2".into(), 6443));
        let out = checked(&template_values(&r)).unwrap();
        assert!(
            out.yaml
                .contains("categoryMappings: \"App-Tier=web/front end,Région=Île (1)\""),
            "{}",
            out.yaml
        );
        assert!(
            out.yaml
                .contains("controlPlaneEndpoint: \"https://[fd00::2]:6443\"")
        );
    }

    #[test]
    fn structure_check_catches_what_validation_cannot() {
        let v = template_values(&request("c1"));
        // A template that puts an input where it becomes a key: the key path depends on the input.
        refused(
            "agent:\n  {{ .ClusterName }}: x\nk8sClusterName: \"a\"\npc:\n  endpoint: h",
            &v,
            "ClusterName",
            "c1:",
        );
        // A numeric cluster name through CAREN's unquoted template: an integer where the template has a string.
        let numeric = template_values(&request("1234"));
        let err = render_checked(CAREN_TEMPLATE, &numeric, "1.4.0")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ClusterName") && err.contains("k8sClusterName"),
            "{err}"
        );
        assert!(!err.contains("1234"), "{err}");
        // The same through the quoted built-in template is a string, and fine.
        let out = checked(&numeric).unwrap();
        assert!(out.yaml.contains("k8sClusterName: \"1234\""));
        // Names YAML would read as other types, unquoted.
        for name in ["true", "null", "1e3", "0x1f", "123.4"] {
            let err = render_checked(CAREN_TEMPLATE, &template_values(&request(name)), "1.4.0");
            assert!(err.is_err(), "{name}");
            assert!(checked(&template_values(&request(name))).is_ok(), "{name}");
        }
        // A template whose own text is not YAML is reported as such, not blamed on an input.
        let err = render_checked("a: [\nk8sClusterName: {{ .ClusterName }}", &v, "1.4.0").unwrap_err();
        assert!(matches!(err, RenderError::NotYaml(_)), "{err}");
    }

    #[test]
    fn engine_errors_do_not_echo_inputs() {
        let mut v = template_values(&request("c1"));
        v.prism_central_host = "secret-host.example".into();
        let err = render_checked("{{ index .PrismCentralHost 99 }}", &v, "1.4.0")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret-host"), "{err}");
    }

    #[test]
    fn chart_contract() {
        let v = template_values(&request("c1"));
        // kubeconfigUpload.enabled without an endpoint: the chart refuses, so konnector refuses first.
        let mut r = request("c1");
        r.control_plane_endpoint = None;
        let err = checked(&template_values(&r)).unwrap_err().to_string();
        assert!(
            err.contains("controlPlaneEndpoint") && err.contains("ControlPlaneEndpoint"),
            "{err}"
        );
        // Types and enums, through operator templates.
        let base = "k8sClusterName: \"c\"\npc:\n  endpoint: \"h\"\n";
        for (extra, key) in [
            ("  port: \"9440\"\n", "pc.port"),
            ("  insecure: \"true\"\n", "pc.insecure"),
            ("k8sDistribution: Kind\n", "k8sDistribution"),
            ("categoryMappings: [a]\n", "categoryMappings"),
            (
                "kubeconfigUpload:\n  enabled: \"yes\"\n",
                "kubeconfigUpload.enabled",
            ),
        ] {
            let t = if extra.starts_with("  ") {
                base.replace("pc:\n", &format!("pc:\n{extra}"))
            } else {
                format!("{base}{extra}")
            };
            let err = render_checked(&t, &v, "1.4.0").unwrap_err().to_string();
            assert!(err.contains(key), "{t}: {err}");
        }
        let err = render_checked("pc:\n  endpoint: h", &v, "1.4.0")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("k8sClusterName is missing") && err.contains("ClusterName"),
            "{err}"
        );
        assert!(render_checked(base, &v, "1.4.0").is_ok());
    }

    #[test]
    fn chart_versions() {
        assert_eq!(chart_generation("1.3.0-rc.1"), Some(ChartGeneration::Before1_4));
        assert_eq!(chart_generation("1.3.2"), Some(ChartGeneration::Before1_4));
        assert_eq!(chart_generation("0.9"), Some(ChartGeneration::Before1_4));
        assert_eq!(chart_generation("1.4.0-rc.1"), Some(ChartGeneration::From1_4));
        assert_eq!(chart_generation("v1.4.1"), Some(ChartGeneration::From1_4));
        assert_eq!(chart_generation("2.0.0+build"), Some(ChartGeneration::From1_4));
        assert_eq!(chart_generation("latest"), None);
        assert_eq!(chart_generation("1.x"), None);

        // On 1.3.x a trust bundle and kubeconfig upload are ignored: said in notes, not refused.
        let mut r = request("c1");
        r.prism_central.trust_bundle = "QlVORExF".into();
        let out = render_checked(BUILTIN_VALUES_TEMPLATE, &template_values(&r), "1.3.0-rc.1").unwrap();
        assert_eq!(out.notes.len(), 2, "{:?}", out.notes);
        assert!(out.notes[0].contains("trust bundle") && out.notes[0].contains("1.3.0-rc.1"));
        assert!(out.notes[1].contains("enableKubeconfigUpload"));
        // And 1.3.x does not need the control-plane endpoint, which it cannot use.
        r.control_plane_endpoint = None;
        r.enable_kubeconfig_upload = false;
        let out = render_checked(BUILTIN_VALUES_TEMPLATE, &template_values(&r), "1.3.2").unwrap();
        assert_eq!(out.notes.len(), 1);
        // 1.3.x mounts the Secret named agent.name: it must be the Secret konnector copies.
        let t = BUILTIN_VALUES_TEMPLATE.replace("name: \"{{ .AgentName }}\"", "name: other");
        let err = render_checked(&t, &template_values(&r), "1.3.2")
            .unwrap_err()
            .to_string();
        assert!(err.contains("agent.name"), "{err}");
        assert!(render_checked(&t, &template_values(&r), "1.4.0").is_ok());
        // An unparseable version is checked as 1.4 and said so.
        let out = render_checked(BUILTIN_VALUES_TEMPLATE, &template_values(&request("c1")), "main").unwrap();
        assert_eq!(out.notes.len(), 1);
    }

    mod properties {
        use std::sync::atomic::{AtomicUsize, Ordering};

        use super::*;
        use proptest::prelude::*;

        const NAME: &str = "[a-z0-9]([-a-z0-9.]{0,20}[a-z0-9])?";
        const CATEGORY: &str = "[A-Za-z0-9]([A-Za-z0-9 _./+()-]{0,10}[A-Za-z0-9])?";
        const BASE64: &str = "[A-Za-z0-9+/]{0,12}={0,2}";

        /// Mostly strings matching `valid` (so a good share of cases is accepted and checked), otherwise strings
        /// rich in YAML and template syntax, newlines and non-ASCII.
        fn hostile(valid: &'static str) -> impl Strategy<Value = String> {
            prop_oneof![
                6 => valid,
                1 => "[ -~]{0,30}",
                1 => "[a-z:#{}\\[\\]&*!|>'\"%@`,=\\- \n\t.]{0,30}",
                1 => ".{0,20}",
            ]
        }

        proptest! {
            /// Whatever text the rendered values hold, braces and template syntax included, a Go text/template
            /// rendering of what konnector writes for CAAPH gives it back exactly.
            #[test]
            fn caaph_escaping_round_trips_any_text(
                text in prop_oneof![
                    "[{}\\-/* \"`.$a-z|()\n]{0,40}",
                    ".{0,40}",
                ],
            ) {
                let v = template_values(&request("c1"));
                let written = caaph_values_template(&text);
                prop_assert_eq!(render_values(&written, &v).unwrap(), text);
            }
        }

        /// How many renderings the property accepted, so the test can show it checked some.
        static ACCEPTED: AtomicUsize = AtomicUsize::new(0);

        #[test]
        fn the_property_checks_accepted_values_too() {
            inputs_are_refused_or_land_verbatim_in_their_own_key();
            assert!(
                ACCEPTED.load(Ordering::Relaxed) > 50,
                "{}",
                ACCEPTED.load(Ordering::Relaxed)
            );
        }

        proptest! {
            /// Whatever the inputs, through CAREN's unquoted template or the quoted built-in one, values are either
            /// refused or parse to exactly the inputs, each in its own key, with the reference set of keys.
            #[test]
            fn inputs_are_refused_or_land_verbatim_in_their_own_key(
                name in hostile(NAME),
                host in hostile(NAME),
                key in hostile(CATEGORY),
                value in hostile(CATEGORY),
                bundle in hostile(BASE64),
            ) {
                let mut r = request("c1");
                r.cluster.name = name;
                r.prism_central.host = host;
                r.prism_central.trust_bundle = bundle;
                r.categories = vec![(key, value)];
                let v = template_values(&r);
                let inert = render_values(BUILTIN_VALUES_TEMPLATE, &v.placeholders(None)).unwrap();
                let reference = shape(&parse_yaml(&inert).unwrap());
                for template in [BUILTIN_VALUES_TEMPLATE, CAREN_TEMPLATE] {
                    let Ok(out) = render_checked(template, &v, "1.4.0") else { continue };
                    ACCEPTED.fetch_add(1, Ordering::Relaxed);
                    let yaml = parse_yaml(&out.yaml).unwrap();
                    prop_assert_eq!(yaml["k8sClusterName"].as_str(), Some(v.cluster_name.as_str()));
                    prop_assert_eq!(yaml["pc"]["endpoint"].as_str(), Some(v.prism_central_host.as_str()));
                    if !v.category_mappings.is_empty() {
                        prop_assert_eq!(yaml["categoryMappings"].as_str(), Some(v.category_mappings.as_str()));
                    }
                    if !v.prism_central_additional_trust_bundle.is_empty() {
                        prop_assert_eq!(
                            yaml["pc"]["additionalTrustBundle"].as_str(),
                            Some(v.prism_central_additional_trust_bundle.as_str())
                        );
                    }
                    let got = shape(&yaml);
                    prop_assert_eq!(got.keys().collect::<Vec<_>>(), reference.keys().collect::<Vec<_>>());
                }
            }
        }
    }
}
