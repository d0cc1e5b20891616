//! Templates that work in CAREN work in konnector: konnector's values renderer against Go's own `text/template`
//! (tests/go/render, built here with Debian's golang-go), byte for byte, over a corpus that uses every template
//! feature plus CAREN's shipped template and konnector's built-in one, each with varied inputs.
//!
//! Where konnector's engine still differs from Go, the difference is listed in `KNOWN_GAPS` and asserted: the
//! test fails if a listed gap closes (update the list and the README) or if any unlisted case differs.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use konnector_executor::values::{BUILTIN_VALUES_TEMPLATE, TemplateValues, render_values};
use serde_json::{Value, json};

/// CAREN's shipped values template, byte for byte.
const CAREN_TEMPLATE: &str = include_str!("../go/testdata/caren-values-template.yaml");

/// Cases where konnector and Go disagree today, by corpus name, with the reason. Each is asserted to still
/// differ, and only as a refusal on konnector's side, never as different bytes.
const KNOWN_GAPS: &[(&str, &str)] = &[(
    "slice-utf8",
    "slicing a string inside a UTF-8 character: Go writes invalid UTF-8, konnector refuses the template",
)];

/// The template corpus: (name, template). Each feature of Go's text/template that a values template can reach
/// with CAREN's variables.
fn corpus() -> Vec<(&'static str, String)> {
    let mut c: Vec<(&'static str, String)> = vec![
        ("caren", CAREN_TEMPLATE.to_owned()),
        ("builtin", BUILTIN_VALUES_TEMPLATE.to_owned()),
        ("text", "plain text\nwith lines\n".into()),
        ("fields", "{{ .AgentName }}/{{ .PrismCentralHost }}:{{ .PrismCentralPort }} {{ .PrismCentralInsecure }} {{ .EnableKubeconfigUpload }}".into()),
        ("trim", "a  \n  {{- .ClusterName -}}  \n  b {{- \" c \" }} {{ \"d\" -}} e".into()),
        ("comment", "a{{/* a comment */}}b{{- /* trimmed */ -}} c".into()),
        ("if-else", "{{ if .CategoryMappings }}cats{{ else if .PrismCentralAdditionalTrustBundle }}bundle{{ else }}none{{ end }}".into()),
        ("with", "{{ with .ControlPlaneEndpoint }}ep={{ . }} root={{ $.AgentName }}{{ else }}no endpoint{{ end }}".into()),
        ("with-var", "{{ with $e := .ControlPlaneEndpoint }}{{ $e }}{{ end }}".into()),
        ("variables", "{{ $n := .ClusterName }}{{ $p := .PrismCentralPort }}{{ $n }}-{{ $p }}-{{ $.AgentName }}".into()),
        ("define-template", "{{ define \"T\" }}[{{ . }}]{{ end }}{{ template \"T\" .ClusterName }}{{ template \"T\" .PrismCentralPort }}".into()),
        ("block", "{{ block \"B\" . }}{{ .AgentName }}{{ end }}!".into()),
        ("and-or-not", "{{ and .EnableKubeconfigUpload .ControlPlaneEndpoint }}|{{ or .CategoryMappings \"none\" }}|{{ not .PrismCentralInsecure }}|{{ and \"\" 1 }}|{{ or 0 \"\" }}".into()),
        ("compare-strings", "{{ eq .ClusterName \"my-cluster\" }} {{ ne .AgentName \"x\" }} {{ lt .ClusterName \"m\" }} {{ ge .ClusterName \"a\" }} {{ eq .ClusterName \"a\" \"my-cluster\" }}".into()),
        ("compare-numbers", "{{ eq .PrismCentralPort 9440 }} {{ gt .PrismCentralPort 1000 }} {{ le .PrismCentralPort 9440 }} {{ lt 1 2 }} {{ eq 1 1 }}".into()),
        ("compare-bools", "{{ eq .PrismCentralInsecure true }} {{ ne .EnableKubeconfigUpload false }}".into()),
        ("len", "{{ len .ClusterName }} {{ len .CategoryMappings }} {{ le (len .ClusterName) 40 }}".into()),
        ("slice", "{{ slice .ClusterName 0 2 }}|{{ slice .ClusterName 1 }}|{{ slice .AgentName }}".into()),
        ("slice-out-of-range", "{{ slice .ClusterName 0 99 }}".into()),
        ("print", "{{ print .ClusterName 1 2 \"x\" true }}|{{ print 1 2 }}|{{ println \"a\" 3 }}".into()),
        ("printf", "{{ printf \"%s:%d %v %t %q\" .PrismCentralHost .PrismCentralPort .ClusterName .PrismCentralInsecure .AgentName }}".into()),
        ("printf-widths", "{{ printf \"[%6d][%-6d][%06d][%x][%X][%o]\" .PrismCentralPort .PrismCentralPort .PrismCentralPort .PrismCentralPort .PrismCentralPort .PrismCentralPort }}".into()),
        ("printf-strings", "{{ printf \"[%10s][%-10s][%.3s][%x]\" .AgentName .AgentName .AgentName \"hi\" }}".into()),
        ("pipeline", "{{ .ClusterName | printf \"%q\" }} {{ .ClusterName | len | printf \"%03d\" }} {{ \"a\" | printf \"%s-%s\" \"b\" }}".into()),
        ("parens", "{{ (printf \"%s\" .AgentName) }} {{ printf \"%d\" (len .AgentName) }}".into()),
        ("constants", "{{ 42 }} {{ -7 }} {{ 0x1F }} {{ true }} {{ \"s\" }} {{ `raw\\n` }} {{ 'a' }}".into()),
        ("escape-delims", "{{ \"{{\" }} not a template".into()),
        ("html-js-urlquery", "{{ html \"<a href='x'>&\\\"\" }}|{{ js \"it's <b>=&\\\\\" }}|{{ urlquery \"a b&c=d/é\" }}|{{ html .ClusterName }}".into()),
        ("joinQuoted-unused", "{{ if false }}{{ joinQuoted .Nothing }}{{ end }}ok".into()),
        ("joinQuoted-nil", "[{{ joinQuoted nil }}]".into()),
        ("joinQuoted-string", "{{ joinQuoted .ClusterName }}".into()),
        ("index-struct", "{{ index . \"ClusterName\" }}".into()),
        ("missing-field", "{{ .NonExistentField }}".into()),
        ("field-of-string", "{{ .ClusterName.Foo }}".into()),
        ("undefined-function", "{{ nosuchfunc }}".into()),
        ("parse-error", "{{ if }}".into()),
        ("unclosed", "{{ if .ClusterName }}x".into()),
        ("call-non-function", "{{ call .ClusterName }}".into()),
        ("quoted-yaml", "k8sClusterName: {{ .ClusterName | printf \"%q\" }}\ncategoryMappings: {{ printf \"%q\" .CategoryMappings }}".into()),
        ("break", "{{ if false }}{{ range .Nothing }}{{ break }}{{ end }}{{ end }}ok".into()),
        ("continue", "{{ if false }}{{ range .Nothing }}{{ continue }}{{ end }}{{ end }}ok".into()),
        ("reassign", "{{ $x := .AgentName }}{{ if .EnableKubeconfigUpload }}{{ $x = .ClusterName }}{{ end }}{{ $x }}".into()),
        // Edges of printing, numbers, strings and scoping.
        ("print-struct", "{{ . }}".into()),
        ("template-no-dot", "{{ define \"T\" }}[{{ . }}]{{ end }}{{ template \"T\" }}".into()),
        ("template-missing", "{{ template \"nope\" }}".into()),
        ("define-twice", "{{ define \"T\" }}a{{ end }}{{ define \"T\" }}b{{ end }}".into()),
        ("define-empty-keeps", "{{ define \"T\" }}a{{ end }}{{ define \"T\" }} {{ end }}{{ template \"T\" }}".into()),
        ("define-nested", "{{ if true }}{{ define \"T\" }}a{{ end }}{{ end }}".into()),
        ("printf-flags", "{{ printf \"%+d|% d|%#x|%#o|%08.3f|%-8.2f|%5.1f|%e|%E|%.2s|%5t|%c|%U|%T|%T|%T\" .PrismCentralPort .PrismCentralPort .PrismCentralPort .PrismCentralPort 3.14159 -2.5 2.25 1234.5678 0.000123 .ClusterName .PrismCentralInsecure 'x' 'é' .PrismCentralPort .ClusterName 1.5 }}".into()),
        ("printf-bad", "{{ printf \"%d|%s|%t|%x\" .ClusterName .PrismCentralPort .ClusterName .PrismCentralInsecure }}".into()),
        ("printf-missing-extra", "{{ printf \"%s %s\" .AgentName }}|{{ printf \"%s\" .AgentName .ClusterName 3 }}|{{ printf \"100%%\" }}|{{ printf \"%\" }}".into()),
        ("printf-nil", "{{ printf \"%v|%d\" nil nil }}|{{ print nil 1 }}".into()),
        ("numbers", "{{ 1_000 }} {{ 0o17 }} {{ 017 }} {{ 0b101 }} {{ 1.0 }} {{ 1e21 }} {{ 1e-5 }} {{ 123456789.0 }} {{ 0.5 }} {{ +3 }} {{ 1e6 }} {{ 100000.0 }}".into()),
        ("bad-number", "{{ 1x }}".into()),
        ("string-escapes", "{{ \"\\x41\\u00e9\\101\\t|\" }}{{ 'x' }}{{ '\\n' }}{{ '\\'' }}".into()),
        ("bad-escape", "{{ \"\\'\" }}".into()),
        ("comment-trim", "a {{- /* c */}} b {{/* c */ -}} c".into()),
        ("comment-spaced", "{{ /* c */ }}".into()),
        ("else-if-with", "{{ with .CategoryMappings }}c{{ else if .ControlPlaneEndpoint }}e{{ else }}n{{ end }}".into()),
        ("range-nil", "{{ range $i, $e := nil }}x{{ else }}empty{{ end }}".into()),
        ("range-string", "{{ range .ClusterName }}x{{ end }}".into()),
        ("scoping", "{{ $x := 1 }}{{ if true }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}{{ with $y := .AgentName }}{{ $y }}{{ end }}".into()),
        ("scope-leak", "{{ if true }}{{ $z := 1 }}{{ end }}{{ $z }}".into()),
        ("root-in-template", "{{ define \"T\" }}{{ $.ClusterName }}{{ end }}{{ template \"T\" . }}".into()),
        ("pipe-into-and-or", "{{ .ClusterName | and true }}|{{ \"\" | or .CategoryMappings }}|{{ 0 | not }}".into()),
        ("compare-errors", "{{ eq 1 1.0 }}".into()),
        ("compare-bool-order", "{{ lt true false }}".into()),
        ("compare-mixed-sign", "{{ ne .PrismCentralPort -1 }} {{ gt .PrismCentralPort -1 }} {{ eq -1 .PrismCentralPort }}".into()),
        ("index-string", "{{ index \"abc\" 1 }} {{ index .ClusterName 0 }} {{ index .ClusterName }}".into()),
        ("index-out-of-range", "{{ index .ClusterName 99 }}".into()),
        ("len-bytes", "{{ len \"é\" }} {{ len .CategoryMappings }}".into()),
        ("slice-utf8", "{{ slice \"héllo\" 1 2 }}".into()),
        ("slice-3", "{{ slice .ClusterName 0 1 2 }}".into()),
        ("empty-print", "[{{ print }}][{{ println }}]".into()),
        ("no-value", "{{ with $x := .ClusterName }}{{ end }}{{ template \"T\" }}{{ define \"T\" }}{{ . }}{{ end }}".into()),
        ("field-on-var", "{{ $v := . }}{{ $v.ClusterName }} {{ (print .AgentName) }}".into()),
        ("field-on-paren", "{{ (.).ClusterName }}".into()),
        ("literal-field", "{{ \"a\".Foo }}".into()),
        ("nil-in-dead-branch", "{{ if false }}{{ nil }}{{ end }}ok".into()),
        ("nil-command", "{{ nil }}".into()),
        ("empty-action", "{{ }}".into()),
        ("unclosed-action", "{{ .ClusterName ".into()),
        ("newline-in-action", "{{ printf \"%s\"\n .ClusterName }}".into()),
        ("unicode-text", "héllo ✓ {{ .ClusterName }} ✓".into()),
    ];
    c.sort_by_key(|(name, _)| *name);
    c
}

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

/// Builds tests/go/render with the system's Go toolchain (golang-go; hack/test.sh installs it).
fn build_go_renderer(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("go/render");
    let bin = dir.join("render");
    let out = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        // No network: the program uses the standard library only.
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .output()
        .expect("running `go build` (install Debian's golang-go; hack/test.sh does)");
    assert!(
        out.status.success(),
        "go build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

fn go_render(bin: &Path, requests: &Value) -> Vec<Result<String, String>> {
    let mut child = Command::new(bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(requests.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    results
        .into_iter()
        .map(|r| {
            let text = r["out"].as_str().unwrap().to_owned();
            if r["ok"].as_bool().unwrap() {
                Ok(text)
            } else {
                Err(text)
            }
        })
        .collect()
}

#[test]
fn konnector_renders_what_go_text_template_renders() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build_go_renderer(dir.path());
    let corpus = corpus();
    let inputs = inputs();
    let mut cases = Vec::new();
    for (name, template) in &corpus {
        for (i, v) in inputs.iter().enumerate() {
            cases.push((*name, i, template.as_str(), v));
        }
    }
    let requests = Value::Array(
        cases
            .iter()
            .map(|(_, _, t, v)| json!({"template": t, "values": values_json(v)}))
            .collect(),
    );
    let go = go_render(&bin, &requests);
    assert_eq!(go.len(), cases.len());

    let mut differing = BTreeSet::new();
    let mut report = String::new();
    let mut go_ok = 0;
    for ((name, i, template, v), go) in cases.iter().zip(&go) {
        let ours = render_values(template, v);
        go_ok += usize::from(go.is_ok());
        let same = match (&ours, go) {
            (Ok(a), Ok(b)) => a == b,
            (Err(_), Err(_)) => true,
            // konnector refuses any output holding "{{" (CAAPH would render it again); Go's output is compared
            // with that rule applied.
            (Err(konnector_executor::values::RenderError::ContainsTemplateDelimiter), Ok(b)) => {
                b.contains("{{")
            }
            _ => false,
        };
        if !same {
            differing.insert(*name);
            report.push_str(&format!(
                "\n--- {name} (input {i})\n konnector: {ours:?}\n go:        {go:?}"
            ));
        }
    }
    // The corpus must exercise real rendering, not only errors.
    assert!(
        go_ok * 2 > cases.len(),
        "most cases must render in Go ({go_ok} of {})",
        cases.len()
    );

    let known: BTreeSet<&str> = KNOWN_GAPS.iter().map(|(name, _)| *name).collect();
    let unexpected: Vec<_> = differing.difference(&known).collect();
    let closed: Vec<_> = known.difference(&differing).collect();
    assert!(
        unexpected.is_empty() && closed.is_empty(),
        "konnector and Go text/template differ beyond the known gaps.\nunexpected: {unexpected:?}\nknown gaps that no longer differ: {closed:?}{report}"
    );
    // Each known gap is a refusal on konnector's side, never different bytes.
    for ((name, _, template, v), go) in cases.iter().zip(&go) {
        if known.contains(name) {
            assert!(render_values(template, v).is_err() && go.is_ok(), "{name}");
        }
    }
    eprintln!(
        "{} cases ({} templates x {} inputs), {} rendered by Go, known gaps: {:?}",
        cases.len(),
        corpus.len(),
        inputs.len(),
        go_ok,
        known
    );
}
