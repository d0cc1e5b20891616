//! Unit tests of the values rendering and its checks.

use serde_yaml_ng::Value as Yaml;

use super::structure::{parse_yaml, shape};
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
const CAREN_TEMPLATE: &str = include_str!("../../../tests/go/testdata/caren-values-template.yaml");

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
