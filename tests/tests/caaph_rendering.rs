//! What konnector writes reaches the chart as written: konnector's values (rendered by the executor's
//! `values.rs`, whose engine konnector-gotemplate holds to Go's `text/template` in its own differential test) go
//! into `spec.valuesTemplate`, and CAAPH's second rendering (the Go reference program's `-caaph` mode, in
//! `gotemplate/tests/go/render`: Go `text/template` plus Sprig's text functions, against a Cluster) must give back
//! the values konnector rendered, byte for byte, whatever `{{` they hold. On the way it checks the executor's
//! template data (`TemplateValues`) against the reference program's struct: the same bytes for the same inputs.

use std::path::Path;

use konnector_executor::values::{
    BUILTIN_VALUES_TEMPLATE, TemplateValues, caaph_values_template, render_checked, render_values,
};
use serde_json::{Value, json};

#[path = "../../gotemplate/tests/support/go_reference.rs"]
mod go_reference;

use go_reference::{build_go_renderer, go_render, go_render_mode};

/// CAREN's shipped values template, byte for byte.
const CAREN_TEMPLATE: &str = include_str!("../go/testdata/caren-values-template.yaml");

/// Varied inputs: CAREN's reference example, a trust bundle with categories, no endpoint, the longest name, a
/// numeric name, IPv6, non-ASCII categories, an empty category list with insecure Prism Central.
fn inputs() -> Vec<TemplateValues> {
    let base = TemplateValues {
        agent_name: "konnector-agent".into(),
        prism_central_host: "pc.example.com".into(),
        prism_central_port: 9440,
        prism_central_insecure: true,
        prism_central_additional_trust_bundle: String::new(),
        create_additional_trust_bundle_config_map: false,
        additional_trust_bundle_config_map_name: String::new(),
        cluster_name: "my-cluster".into(),
        category_mappings: String::new(),
        prism_credentials_secret_name: "konnector-agent".into(),
        enable_kubeconfig_upload: true,
        control_plane_endpoint: "https://10.0.0.10:6443".into(),
    };
    vec![
        base.clone(),
        TemplateValues {
            prism_central_insecure: false,
            prism_central_additional_trust_bundle: "QlVORExF".into(),
            create_additional_trust_bundle_config_map: true,
            additional_trust_bundle_config_map_name: "ntnx-additional-trust-bundle-konnector-agent".into(),
            category_mappings: "Environment=Production,Department=Engineering".into(),
            ..base.clone()
        },
        TemplateValues {
            enable_kubeconfig_upload: false,
            control_plane_endpoint: String::new(),
            prism_central_port: 443,
            ..base.clone()
        },
        TemplateValues {
            cluster_name: "a".repeat(40),
            ..base.clone()
        },
        TemplateValues {
            cluster_name: "1234".into(),
            prism_central_port: 1,
            ..base.clone()
        },
        TemplateValues {
            prism_central_host: "fd00::1".into(),
            control_plane_endpoint: "https://fd00::2:6443".into(),
            ..base.clone()
        },
        TemplateValues {
            category_mappings: "Région=Île (1),App-Tier=web/front end".into(),
            cluster_name: "z".into(),
            prism_central_port: 65535,
            ..base
        },
    ]
}

fn values_json(v: &TemplateValues) -> Value {
    json!({
        "AgentName": v.agent_name,
        "PrismCentralHost": v.prism_central_host,
        "PrismCentralPort": v.prism_central_port,
        "PrismCentralInsecure": v.prism_central_insecure,
        "PrismCentralAdditionalTrustBundle": v.prism_central_additional_trust_bundle,
        "CreateAdditionalTrustBundleConfigMap": v.create_additional_trust_bundle_config_map,
        "AdditionalTrustBundleConfigMapName": v.additional_trust_bundle_config_map_name,
        "ClusterName": v.cluster_name,
        "CategoryMappings": v.category_mappings,
        "PrismCredentialsSecretName": v.prism_credentials_secret_name,
        "EnableKubeconfigUpload": v.enable_kubeconfig_upload,
        "ControlPlaneEndpoint": v.control_plane_endpoint,
    })
}

/// The Cluster CAAPH renders `spec.valuesTemplate` against, with values a template lookup would reveal, so that any
/// text CAAPH executed instead of copying shows in its output.
fn caaph_cluster() -> Value {
    json!({
        "metadata": {
            "name": "LOOKED-UP-NAME",
            "namespace": "LOOKED-UP-NAMESPACE",
            "annotations": {"x": "LOOKED-UP-ANNOTATION"},
        },
        "Name": "LOOKED-UP-NAME",
        "spec": {"controlPlaneEndpoint": {"host": "LOOKED-UP-HOST", "port": 6443}},
    })
}

/// Text a Cluster, an operator's template or a category could carry, each of which CAAPH would execute, refuse
/// or change if it reached CAAPH's template unescaped.
const HOSTILE: [&str; 14] = [
    "{{ env \"HOME\" }}",
    "{{ expandenv \"$HOME\" }}",
    "{{ getHostByName \"localhost\" }}",
    "{{ .Cluster.metadata.name }}",
    "{{ .Cluster.metadata.annotations.x }}",
    "{{ upper \"x\" }}",
    "{{ b64dec \"aGk=\" }}",
    "{{ fail \"boom\" }}",
    "{{",
    "a {{ b",
    "{{{ x }}}",
    "}}{{- .Cluster.Name -}}{{",
    "{{/* c */}}",
    "{{ \"{{\" }}",
];

/// Every string of up to four characters over the template-relevant characters: all the ways braces, trim
/// markers, comment markers and quotes can sit next to each other.
fn brace_soup() -> Vec<String> {
    let alphabet = ['{', '}', '-', ' ', '/', '*', '"'];
    let mut all = vec![String::new()];
    let mut layer = vec![String::new()];
    for _ in 0..4 {
        layer = layer
            .iter()
            .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
            .collect();
        all.extend(layer.iter().cloned());
    }
    all
}

/// Renders each text through CAAPH's second rendering (real Go text/template plus Sprig).
fn through_caaph(bin: &Path, texts: &[String]) -> Vec<Result<String, String>> {
    let requests = Value::Array(
        texts
            .iter()
            .map(|t| json!({"template": t, "cluster": caaph_cluster()}))
            .collect(),
    );
    let out = go_render_mode(bin, &["-caaph"], &requests);
    assert_eq!(out.len(), texts.len());
    out
}

#[test]
fn caaphs_second_rendering_gives_back_exactly_what_konnector_rendered() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build_go_renderer(dir.path());

    // 1. Rendered values holding hostile text, however it got there: from an input (render_values, which does not
    //    validate, so the escaping is proven for any value) through CAREN's template and the built-in one, and
    //    from the operator's template printing it.
    let base = inputs().remove(0);
    let mut cases: Vec<(String, TemplateValues)> = Vec::new();
    for hostile in HOSTILE {
        let v = TemplateValues {
            cluster_name: hostile.into(),
            category_mappings: format!("Env={hostile}"),
            prism_central_additional_trust_bundle: hostile.into(),
            prism_central_host: hostile.into(),
            ..base.clone()
        };
        for template in [CAREN_TEMPLATE, BUILTIN_VALUES_TEMPLATE] {
            cases.push((template.to_owned(), v.clone()));
        }
        let quoted = serde_json::to_string(hostile).unwrap();
        for template in [
            format!("k: {{{{ {quoted} }}}}"),
            format!("k: {{{{ printf \"%q\" {quoted} }}}}"),
            format!("{{{{ $x := {quoted} }}}}{{{{ range 2 }}}}{{{{ $x }}}}{{{{ end }}}}"),
        ] {
            cases.push((template, base.clone()));
        }
    }
    let rendered: Vec<String> = cases.iter().map(|(t, v)| render_values(t, v).unwrap()).collect();
    // Stage one, the same through Go's text/template: konnector's rendering is Go's.
    let stage_one = go_render(
        &bin,
        &Value::Array(
            cases
                .iter()
                .map(|(t, v)| json!({"template": t, "values": values_json(v)}))
                .collect(),
        ),
    );
    for (((template, _), ours), go) in cases.iter().zip(&rendered).zip(&stage_one) {
        assert_eq!(Ok(ours), go.as_ref(), "stage one differs for {template:?}");
    }

    // 2. Stage two: what konnector writes into spec.valuesTemplate comes out of CAAPH as the rendered values.
    let mut literals: Vec<String> = rendered;
    literals.extend(HOSTILE.iter().map(|h| h.to_string()));
    literals.extend(brace_soup());
    let escaped: Vec<String> = literals.iter().map(|l| caaph_values_template(l)).collect();
    let caaph = through_caaph(&bin, &escaped);
    let mut wrong = Vec::new();
    for ((literal, written), out) in literals.iter().zip(&escaped).zip(&caaph) {
        if out.as_ref() != Ok(literal) {
            wrong.push(format!("{literal:?} written as {written:?} came out as {out:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {}:\n{}",
        wrong.len(),
        literals.len(),
        wrong.join("\n")
    );

    // The stage has teeth: unescaped, every hostile text is executed, refused or changed by CAAPH.
    let raw: Vec<String> = HOSTILE.iter().map(|h| h.to_string()).collect();
    for (hostile, out) in HOSTILE.iter().zip(through_caaph(&bin, &raw)) {
        assert_ne!(out.as_deref(), Ok(*hostile), "CAAPH copied {hostile:?} unescaped");
    }

    // 3. The checked path the executor takes: literal braces the operator's template prints reach the chart as
    //    written, and plain values go out unchanged.
    let template = format!(
        "{BUILTIN_VALUES_TEMPLATE}\nextra: {{{{ printf \"%q\" \"{{{{ .Cluster.metadata.name }}}} {{{{ env \\\"HOME\\\" }}}} {{{{\" }}}}\n"
    );
    let mut checked = Vec::new();
    for v in inputs() {
        for t in [template.as_str(), BUILTIN_VALUES_TEMPLATE, CAREN_TEMPLATE] {
            if let Ok(r) = render_checked(t, &v, "1.4.0") {
                checked.push(r);
            }
        }
    }
    assert!(checked.len() >= 2 * inputs().len(), "{}", checked.len());
    let written: Vec<String> = checked.iter().map(|r| r.values_template.clone()).collect();
    for (r, out) in checked.iter().zip(through_caaph(&bin, &written)) {
        assert_eq!(out.as_ref(), Ok(&r.yaml), "written as {:?}", r.values_template);
    }
    assert!(
        checked.iter().any(|r| r
            .yaml
            .contains("extra: \"{{ .Cluster.metadata.name }} {{ env \\\"HOME\\\" }} {{\"")),
        "the template's literal braces reached the values"
    );
    eprintln!(
        "CAAPH stage: {} literals (of which {} brace combinations) and {} checked renderings came back byte for byte",
        literals.len(),
        brace_soup().len(),
        checked.len()
    );
}
