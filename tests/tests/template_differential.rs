//! Templates that work in CAREN work in konnector, and what konnector writes reaches the chart as written:
//! - konnector's values renderer against Go's own `text/template` (tests/go/render, built here with the machine's Go,
//!   which must be at least Go 1.26: CAREN and CAAPH are built with Go 1.25+), over a corpus that uses every
//!   template feature a values template can reach plus CAREN's shipped template and konnector's built-in one, each
//!   with varied inputs. A pair matches when both render the same bytes or both fail (error texts may differ);
//! - what konnector writes into `spec.valuesTemplate` through CAAPH's second rendering (the same program's
//!   `-caaph` mode: Go `text/template` plus Sprig's text functions, against a Cluster), which must give back the
//!   values konnector rendered, byte for byte, whatever `{{` they hold.
//!
//! Where konnector's engine still differs from Go, the difference is listed in `KNOWN_GAPS` and asserted: the
//! test fails if a listed gap closes (update the list and the README) or if any unlisted case differs.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use konnector_executor::values::{
    BUILTIN_VALUES_TEMPLATE, TemplateValues, caaph_values_template, render_checked, render_values,
};
use serde_json::{Value, json};

/// CAREN's shipped values template, byte for byte.
const CAREN_TEMPLATE: &str = include_str!("../go/testdata/caren-values-template.yaml");

/// Cases where konnector and Go disagree today, by corpus name, with the reason. Each is asserted to still
/// differ, and only as a refusal on konnector's side, never as different bytes.
const KNOWN_GAPS: &[(&str, &str)] = &[
    (
        "slice-utf8",
        "slicing a string inside a UTF-8 character: Go writes invalid UTF-8, konnector refuses the template",
    ),
    (
        "printf-sharp-v",
        "printf's %#v (Go syntax) is not implemented: konnector refuses the template",
    ),
    (
        "printf-q-unassigned",
        "%q of a code point Rust's standard library cannot classify (U+0378 is unassigned): Go escapes it, konnector refuses",
    ),
    (
        "range-huge",
        "more than a million range iterations in one rendering: Go runs them, konnector refuses the template",
    ),
];

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
        // Go 1.22-1.26: {{else with}}, range over integers, break/continue, assignment.
        ("else-with", "{{ with .CategoryMappings }}c={{ . }}{{ else with .ControlPlaneEndpoint }}e={{ . }}{{ else }}none{{ end }}".into()),
        ("else-with-chain", "{{ with .PrismCentralAdditionalTrustBundle }}b{{ else with .CategoryMappings }}c{{ else with $x := .AgentName }}{{ $x }}{{ end }}".into()),
        ("else-with-var", "{{ with $a := .CategoryMappings }}{{ $a }}{{ else with $b := .AgentName }}{{ $b }}/{{ $a }}{{ end }}".into()),
        ("else-with-in-if", "{{ if .AgentName }}a{{ else with .ClusterName }}b{{ end }}".into()),
        ("else-if-in-range", "{{ range 0 }}{{ else if true }}x{{ end }}".into()),
        ("else-with-in-range", "{{ range 0 }}{{ else with 1 }}x{{ end }}".into()),
        ("range-int", "{{ range 3 }}[{{ . }}]{{ end }}|{{ range $i := 4 }}{{ $i }}{{ end }}|{{ range 0 }}x{{ else }}none{{ end }}|{{ range -2 }}x{{ else }}neg{{ end }}".into()),
        ("range-port", "{{ range $p := .PrismCentralPort }}{{ if lt $p 3 }}{{ $p }},{{ else }}{{ break }}{{ end }}{{ end }}|{{ range .PrismCentralPort }}{{ printf \"%T\" . }}{{ break }}{{ end }}".into()),
        ("range-len", "{{ range len .ClusterName }}{{ . }}{{ end }}|{{ range $i := len .CategoryMappings }}{{ $i }}{{ else }}no categories{{ end }}".into()),
        ("range-int-two-vars", "{{ range $i, $e := 3 }}{{ $i }}{{ end }}".into()),
        ("range-int-two-vars-zero", "{{ range $i, $e := 0 }}x{{ else }}e{{ end }}".into()),
        ("range-else-sees-var", "{{ range $x := 0 }}x{{ else }}[{{ $x }}]{{ end }}{{ range $y := -3 }}{{ else }}[{{ $y }}]{{ end }}".into()),
        ("range-assign", "{{ $x := \"s\" }}{{ range $x = 3 }}{{ end }}{{ $x }}|{{ $y := 9 }}{{ range $y = 0 }}{{ end }}{{ $y }}".into()),
        ("range-comma-then-command", "{{ $e := 3 }}{{ range $i, $e }}{{ $i }}{{ . }}{{ end }}".into()),
        ("range-paren-decl", "{{ range $x := ($n := 2) }}{{ $x }}{{ $n }}{{ end }}".into()),
        ("range-break-continue", "{{ range $i := 10 }}{{ if eq $i 2 }}{{ continue }}{{ end }}{{ if gt $i 5 }}{{ break }}{{ end }}{{ $i }}{{ end }}".into()),
        ("range-nested-break", "{{ range $i := 3 }}{{ range $j := 3 }}{{ if eq $j 1 }}{{ break }}{{ end }}{{ $i }}{{ $j }};{{ end }}{{ continue }}x{{ end }}".into()),
        ("range-break-in-with", "{{ range $i := 5 }}{{ with $i }}{{ if eq . 3 }}{{ break }}{{ end }}{{ . }}{{ end }}{{ end }}".into()),
        ("range-break-trim", "{{ range 3 -}} x {{- break -}} y {{ end }}z".into()),
        ("range-dot-root", "{{ range 2 }}{{ $.AgentName }}{{ . }}{{ end }}".into()),
        ("range-bool", "{{ range true }}x{{ end }}".into()),
        ("range-float", "{{ range 1.5 }}x{{ end }}".into()),
        ("range-struct", "{{ range . }}x{{ end }}".into()),
        ("range-function-result", "{{ range joinQuoted nil }}x{{ else }}e{{ end }}".into()),
        ("range-call", "{{ range call .AgentName }}x{{ end }}".into()),
        ("range-scope", "{{ range $i := 2 }}{{ $v := $i }}{{ end }}{{ $v }}".into()),
        ("break-outside", "{{ break }}".into()),
        ("continue-outside", "{{ if true }}{{ continue }}{{ end }}".into()),
        ("break-in-define-in-range", "{{ define \"T\" }}{{ break }}{{ end }}{{ range 1 }}{{ template \"T\" }}{{ end }}".into()),
        ("reassign-in-range", "{{ $last := -1 }}{{ range $i := 5 }}{{ $last = $i }}{{ end }}{{ $last }}".into()),
        ("reassign-types", "{{ $x := 1 }}{{ $x = \"s\" }}{{ $x }}{{ $x = .PrismCentralPort }}{{ printf \"%T\" $x }}".into()),
        ("reassign-scoped", "{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ $x := 3 }}{{ $x = 4 }}{{ $x }}{{ end }}{{ $x }}".into()),
        ("assign-undefined", "{{ $x = 1 }}".into()),
        ("assign-undefined-dead", "{{ if false }}{{ $x = 1 }}{{ end }}ok".into()),
        ("declare-self-dead", "{{ if false }}{{ $x := $x }}{{ end }}ok".into()),
        ("declare-self", "{{ $x := $x }}".into()),
        ("paren-decl", "{{ ($x := 1) }}{{ $x }}".into()),
        ("too-many-decls", "{{ $a, $b := 1 }}".into()),
        // and/or: short-circuit, what they return, and what reaching an error does.
        ("and-or-short-circuit", "{{ and 0 .Nope }}|{{ or 1 .Nope }}|{{ and 1 0 .Nope }}|{{ or \"\" \"x\" .Nope }}".into()),
        ("and-reaches-error", "{{ and 1 .Nope }}".into()),
        ("or-reaches-error", "{{ or 0 .Nope }}".into()),
        ("and-returns-operand", "{{ and .AgentName .PrismCentralPort }}|{{ or .CategoryMappings .PrismCentralPort }}|{{ printf \"%T\" (and 1 .PrismCentralPort) }}".into()),
        ("and-nil", "{{ and nil 1 }}".into()),
        ("or-nil-late", "{{ or 1 nil }}".into()),
        ("and-empty", "{{ and }}".into()),
        ("and-pipe-nil-dead", "{{ define \"T\" }}{{ . | and 0 }}{{ end }}{{ template \"T\" }}".into()),
        ("and-pipe-nil-reached", "{{ define \"T\" }}{{ . | and 1 }}{{ end }}{{ template \"T\" }}".into()),
        ("or-pipe-only", "{{ .AgentName | or }}|{{ \"\" | and }}".into()),
        // A missing value (nil dot) where Go's builtin takes a reflect.Value is an error; where it takes any, not.
        ("nil-dot-not", "{{ define \"T\" }}{{ not . }}{{ end }}{{ template \"T\" }}".into()),
        ("nil-dot-len", "{{ define \"T\" }}{{ len . }}{{ end }}{{ template \"T\" }}".into()),
        ("nil-dot-index", "{{ define \"T\" }}{{ index . }}{{ end }}{{ template \"T\" }}".into()),
        ("nil-dot-slice", "{{ define \"T\" }}{{ slice . }}{{ end }}{{ template \"T\" }}".into()),
        ("nil-dot-eq", "{{ define \"T\" }}{{ eq . 1 }}{{ end }}{{ template \"T\" }}".into()),
        ("nil-dot-eq-self", "{{ define \"T\" }}{{ eq . . }}{{ end }}{{ template \"T\" }}".into()),
        ("nil-dot-lt", "{{ define \"T\" }}{{ lt . 1 }}{{ end }}{{ template \"T\" }}".into()),
        ("nil-dot-call", "{{ define \"T\" }}{{ call . }}{{ end }}{{ template \"T\" }}".into()),
        ("nil-dot-range-if-with", "{{ define \"T\" }}{{ range . }}x{{ else }}r{{ end }}{{ if . }}x{{ else }}i{{ end }}{{ with . }}x{{ else }}w{{ end }}{{ end }}{{ template \"T\" }}".into()),
        ("nil-dot-any", "{{ define \"T\" }}{{ print . }}|{{ printf \"%v\" . }}|{{ html . }}|{{ js . }}|{{ urlquery . }}|{{ joinQuoted . }}|{{ println . }}{{ end }}{{ template \"T\" }}".into()),
        ("nil-dot-printf-format", "{{ define \"T\" }}{{ printf . }}{{ end }}{{ template \"T\" }}".into()),
        // index and slice bounds and types.
        ("index-negative", "{{ index .ClusterName -1 }}".into()),
        ("index-at-len", "{{ index .ClusterName (len .ClusterName) }}".into()),
        ("index-last", "{{ index .ClusterName (len (slice .ClusterName 1)) }}".into()),
        ("index-float", "{{ index .ClusterName 1.0 }}".into()),
        ("index-string-key", "{{ index .ClusterName \"0\" }}".into()),
        ("index-nil-key", "{{ index .ClusterName nil }}".into()),
        ("index-nil", "{{ index nil 0 }}".into()),
        ("index-number", "{{ index .PrismCentralPort 0 }}".into()),
        ("index-by-port", "{{ index .ClusterName .PrismCentralPort }}".into()),
        ("index-twice", "{{ index .ClusterName 0 0 }}".into()),
        ("index-bool", "{{ index .ClusterName true }}".into()),
        ("slice-reversed", "{{ slice .ClusterName 2 1 }}".into()),
        ("slice-negative", "{{ slice .ClusterName -1 }}".into()),
        ("slice-four", "{{ slice .ClusterName 0 1 2 3 }}".into()),
        ("slice-number", "{{ slice .PrismCentralPort }}".into()),
        ("slice-nil", "{{ slice nil }}".into()),
        ("slice-at-len", "[{{ slice .ClusterName (len .ClusterName) }}][{{ slice .ClusterName 0 0 }}]".into()),
        ("slice-by-port", "{{ slice .ClusterName 0 .PrismCentralPort }}".into()),
        ("slice-float", "{{ slice .ClusterName 0.0 }}".into()),
        // Comparisons.
        ("eq-multi", "{{ eq .ClusterName \"a\" \"b\" .ClusterName }} {{ eq .PrismCentralPort 1 443 9440 }} {{ eq 1 2 3 }}".into()),
        ("eq-error-after-match", "{{ eq 1 1 \"x\" }}".into()),
        ("eq-error-before-match", "{{ eq 1 \"x\" 1 }}".into()),
        ("eq-struct", "{{ eq . . }} {{ eq . $ }} {{ ne . . }} {{ $v := . }}{{ eq $v . }}".into()),
        ("eq-struct-int", "{{ eq . 1 }}".into()),
        ("lt-struct", "{{ lt . . }}".into()),
        ("compare-uint-int", "{{ eq 9440 .PrismCentralPort }} {{ lt -1 .PrismCentralPort }} {{ lt .PrismCentralPort -1 }} {{ ge .PrismCentralPort 0 }} {{ gt 100000 .PrismCentralPort }} {{ le .PrismCentralPort 443 }}".into()),
        ("compare-byte-port", "{{ eq (index .ClusterName 0) .PrismCentralPort }} {{ lt (index .ClusterName 0) .PrismCentralPort }}".into()),
        ("compare-float", "{{ lt 1.5 2.5 }} {{ eq 1.5 1.5 }} {{ le 2.0 2.0 }} {{ gt 1e3 999.0 }} {{ ne 0.5 0.25 }}".into()),
        ("compare-float-int", "{{ lt 1 1.5 }}".into()),
        ("compare-string-order", "{{ lt \"a\" \"b\" }} {{ gt \"b\" \"a\" }} {{ le \"a\" \"a\" }} {{ ge \"a\" \"b\" }} {{ lt \"Z\" \"a\" }} {{ lt \"é\" \"z\" }}".into()),
        ("compare-bools-eq", "{{ ne true false }} {{ eq false false }} {{ eq .PrismCentralInsecure .EnableKubeconfigUpload }}".into()),
        ("compare-bool-ge", "{{ ge true true }}".into()),
        ("compare-bool-le", "{{ le false true }}".into()),
        ("compare-string-int", "{{ ne \"1\" 1 }}".into()),
        ("eq-one-arg", "{{ eq 1 }}".into()),
        ("ne-three", "{{ ne 1 2 3 }}".into()),
        ("lt-one", "{{ lt 1 }}".into()),
        ("lt-nil", "{{ lt nil 1 }}".into()),
        ("eq-nil", "{{ eq nil nil }}".into()),
        // The other builtins' argument rules.
        ("len-number", "{{ len 3 }}".into()),
        ("len-struct", "{{ len . }}".into()),
        ("len-nil", "{{ len nil }}".into()),
        ("len-two", "{{ len \"a\" \"b\" }}".into()),
        ("not-values", "{{ not 0 }} {{ not \"\" }} {{ not . }} {{ not \"x\" }} {{ not 0.0 }} {{ not .PrismCentralPort }}".into()),
        ("not-two", "{{ not 1 2 }}".into()),
        ("not-none", "{{ not }}".into()),
        ("print-variants", "{{ print \"a\" \"b\" 1 2 \"c\" }}|{{ print nil nil }}|{{ println nil \"x\" 1 }}|{{ print 1.5 true }}".into()),
        ("printf-number-format", "{{ printf 1 }}".into()),
        ("printf-port-format", "{{ printf .PrismCentralPort }}".into()),
        ("printf-none", "{{ printf }}".into()),
        ("escapers-multi", "{{ html \"a\" 1 \"<\" }}|{{ js 1 2 }}|{{ urlquery nil }}|[{{ html }}]|{{ js .PrismCentralPort }}|{{ urlquery \"a\" \"b c\" }}".into()),
        ("call-none", "{{ call }}".into()),
        ("call-nil", "{{ call nil }}".into()),
        ("call-function-name", "{{ call joinQuoted }}".into()),
        ("call-number", "{{ call 1 2 }}".into()),
        ("joinQuoted-two", "{{ joinQuoted nil nil }}".into()),
        ("joinQuoted-none", "{{ joinQuoted }}".into()),
        ("eq-nil-mixed", "{{ eq . nil }} {{ eq nil . }} {{ eq 1 nil }} {{ eq nil \"\" }} {{ ne nil nil }} {{ eq nil 1 nil }}".into()),
        ("range-nested-vars", "{{ range $i := 2 }}{{ range $j := 2 }}{{ $i }}{{ $j }} {{ end }}{{ end }}".into()),
        ("range-var-shadow", "{{ $i := \"outer\" }}{{ range $i := 2 }}{{ $i }}{{ end }}{{ $i }}".into()),
        ("range-assign-two", "{{ $a := 0 }}{{ $b := 0 }}{{ range $a, $b = 2 }}{{ end }}".into()),
        ("range-continue-in-else", "{{ range 0 }}{{ else }}{{ range 1 }}{{ continue }}{{ end }}e{{ end }}".into()),
        ("range-break-in-else-of-inner", "{{ range $i := 3 }}{{ range 0 }}{{ else }}{{ if eq $i 1 }}{{ break }}{{ end }}{{ end }}{{ $i }}{{ end }}".into()),
        ("range-continue-in-else-of-inner", "{{ range $i := 3 }}{{ range 0 }}{{ else }}{{ if eq $i 1 }}{{ continue }}{{ end }}{{ end }}{{ $i }}{{ end }}".into()),
        ("else-with-range", "{{ with 0 }}{{ else with 3 }}{{ range . }}{{ . }}{{ end }}{{ end }}".into()),
        ("block-range", "{{ block \"B\" 3 }}{{ range . }}{{ . }}{{ end }}{{ end }}".into()),
        ("template-range-port", "{{ define \"T\" }}{{ range . }}{{ if ge . 5 }}{{ break }}{{ end }}{{ . }}{{ end }}{{ end }}{{ template \"T\" .PrismCentralPort }}".into()),
        ("printf-struct-verbs", "{{ printf \"%d|%s|%q|%x|%5v|%t|%-3d|%X\" . . . . . . . . }}".into()),
        ("printf-struct-plus-v", "{{ printf \"%+v|%+d|%+5v\" . . . }}".into()),
        ("printf-sharp-v", "{{ printf \"%#v\" . }}".into()),
        ("printf-q-known-code-points", "{{ printf \"%q %q %q %q %q %q\" 880 65535 57344 8364 9733 \"a\\u00ad✓€\" }}|{{ js \"✓\\u200b\" }}".into()),
        ("printf-q-unassigned", "{{ printf \"%q\" 888 }}".into()),
        ("printf-sharp-x-string", "{{ printf \"[%#x][%#X][%#8x][%-#8x][%#.1x][%#x]\" .ClusterName \"ab\" \"a\" \"a\" \"ab\" .CategoryMappings }}".into()),
        ("printf-bad-verb-width", "{{ printf \"[%5d][%-4t][%.2d][%6x]\" .AgentName .PrismCentralPort .ClusterName .PrismCentralInsecure }}".into()),
        ("range-huge", "{{ range 1000001 }}{{ end }}ok".into()),
        ("range-at-limit", "{{ range 999 }}{{ range 1000 }}{{ end }}{{ end }}ok".into()),
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

/// The oldest Go whose `text/template` the reference may be: CAREN and CAAPH are built with Go 1.25 or later, and
/// this machine kind has Go 1.26. An older Go would silently compare against older semantics (Go 1.19 refuses
/// `{{else with}}` and `range` over an integer), so it fails the test instead.
const MIN_GO: (u32, u32) = (1, 26);

/// `go1.26.8` -> (1, 26).
fn go_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version
        .trim()
        .strip_prefix("go")?
        .split(['.', 'r', 'b', '-', ' ']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Builds tests/go/render with the machine's Go, after checking that it is at least [`MIN_GO`]. The program
/// depends on Sprig (pinned in go.mod/go.sum), fetched through the Go module proxy into the shared module cache
/// on a first run.
fn build_go_renderer(dir: &Path) -> PathBuf {
    let version = Command::new("go")
        .args(["env", "GOVERSION"])
        .output()
        .expect("running `go` (Go 1.26 or later must be on PATH; hack/upstream/go-env.sh provides it)");
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    eprintln!("reference Go: {version}");
    let minor = go_minor(&version).unwrap_or_else(|| panic!("unrecognised `go env GOVERSION`: {version:?}"));
    assert!(
        minor >= MIN_GO,
        "the reference Go is {version}, older than go{}.{}: put Go 1.26 or later on PATH (hack/upstream/go-env.sh)",
        MIN_GO.0,
        MIN_GO.1
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("go/render");
    let bin = dir.join("render");
    let out = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        // go.sum pins every module; the build may download them but never changes go.mod. GOTOOLCHAIN=local: the
        // version checked above is the one that builds, never a toolchain the go command would fetch.
        .env("GOFLAGS", "-mod=readonly -buildvcs=false")
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("running `go build`");
    assert!(
        out.status.success(),
        "go build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The binary says which Go it was built with: the one checked, not another on a different PATH entry.
    let built = Command::new(&bin).arg("-version").output().unwrap();
    let built = String::from_utf8_lossy(&built.stdout).trim().to_owned();
    assert_eq!(go_minor(&built), Some(minor), "reference built with {built}");
    bin
}

fn go_render(bin: &Path, requests: &Value) -> Vec<Result<String, String>> {
    go_render_mode(bin, &[], requests)
}

/// Runs the reference program with `args` (`-caaph` for CAAPH's rendering) over `requests`.
fn go_render_mode(bin: &Path, args: &[&str], requests: &Value) -> Vec<Result<String, String>> {
    let mut child = Command::new(bin)
        .args(args)
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
        // Both render the same bytes, or both fail; a failure never matches a success.
        let same = match (&ours, go) {
            (Ok(a), Ok(b)) => a == b,
            (Err(_), Err(_)) => true,
            (Ok(_), Err(_)) | (Err(_), Ok(_)) => false,
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

/// A small deterministic generator (xorshift64*), so the generated corpus is the same on every run.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// An operand: a constant of each kind, a field (rarely one that does not exist), dot, the root, a variable,
    /// or a parenthesized call.
    fn term(&mut self, depth: usize) -> String {
        if depth > 0 && self.below(4) == 0 {
            return format!("({})", self.call(depth - 1));
        }
        if self.below(40) == 0 {
            return ".Nope".to_owned();
        }
        self.pick(&[
            "0",
            "1",
            "-1",
            "3",
            "1.5",
            "0.0",
            "\"a\"",
            "\"\"",
            "\"my-cluster\"",
            "true",
            "false",
            "nil",
            "'x'",
            "0x10",
            ".ClusterName",
            ".PrismCentralPort",
            ".PrismCentralInsecure",
            ".CategoryMappings",
            ".AgentName",
            ".",
            "$",
            "$x",
        ])
        .to_owned()
    }

    /// An operand of one kind, so that most generated calls are well typed and render.
    fn typed(&mut self, kind: usize) -> String {
        let items: &[&str] = match kind {
            0 => &[
                "\"abc\"",
                "\"\"",
                ".ClusterName",
                ".CategoryMappings",
                ".AgentName",
                "(print 1)",
            ],
            1 => &["0", "1", "2", "3", "-1", "(len .AgentName)", "'a'"],
            2 => &[".PrismCentralPort", "(index .ClusterName 0)"],
            3 => &["1.5", "0.0", "2.5"],
            _ => &[
                "true",
                "false",
                ".PrismCentralInsecure",
                ".EnableKubeconfigUpload",
            ],
        };
        self.pick(items).to_owned()
    }

    /// A builtin call, usually with a count and kinds of operands the builtin takes, sometimes not (so argument
    /// counts and kind errors are exercised too).
    fn call(&mut self, depth: usize) -> String {
        let name = self.pick(&[
            "and",
            "or",
            "not",
            "len",
            "index",
            "slice",
            "eq",
            "ne",
            "lt",
            "le",
            "gt",
            "ge",
            "print",
            "println",
            "html",
            "js",
            "urlquery",
            "call",
            "joinQuoted",
            "printf",
        ]);
        let mut args: Vec<String> = Vec::new();
        if self.below(8) == 0 {
            for _ in 0..self.below(4) {
                args.push(self.term(depth));
            }
        } else {
            match name {
                "len" => args.push(self.typed(0)),
                "index" | "slice" => {
                    args.push(self.typed(0));
                    for _ in 0..self.below(3) {
                        let small = self.pick(&["0", "1", "2", ".PrismCentralPort"]);
                        args.push(small.to_owned());
                    }
                }
                "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
                    let kind = self.below(5);
                    let n = if name == "eq" { 2 + self.below(2) } else { 2 };
                    for _ in 0..n {
                        // Mixed signed/unsigned integers compare; other kinds mostly match.
                        let k = if kind == 1 && self.below(3) == 0 { 2 } else { kind };
                        args.push(self.typed(k));
                    }
                }
                "not" | "call" | "joinQuoted" => args.push(self.term(depth)),
                "printf" => {
                    let format = self.pick(&[
                        "\"%v\"",
                        "\"%d\"",
                        "\"%s\"",
                        "\"%q\"",
                        "\"%t\"",
                        "\"%v|%v\"",
                        "\"%5v\"",
                        "\"%-4s|\"",
                        "\"%05d\"",
                        "\"%x\"",
                        "\"%X\"",
                        "\"%o\"",
                        "\"%c\"",
                        "\"%U\"",
                        "\"%e\"",
                        "\"%.2f\"",
                        "\"%8.3f\"",
                        "\"%+d\"",
                        "\"% d\"",
                        "\"%#x\"",
                        "\"%T\"",
                        "\"%.1s\"",
                        "\"%6.2v\"",
                        "\"%g\"",
                        "\"%b\"",
                        "\"%%%v\"",
                    ]);
                    args.push(format.to_owned());
                    for _ in 0..self.below(3) {
                        args.push(self.term(depth));
                    }
                }
                _ => {
                    for _ in 0..1 + self.below(3) {
                        args.push(self.term(depth));
                    }
                }
            }
        }
        std::iter::once(name.to_owned())
            .chain(args)
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn pipeline(&mut self, depth: usize) -> String {
        let mut p = if self.below(6) == 0 {
            self.term(depth).replace("nil", "\"n\"")
        } else {
            self.call(depth)
        };
        if self.below(5) == 0 {
            // A later stage gets the value as its last operand, so it takes one operand fewer.
            p.push_str(" | ");
            p.push_str(self.pick(&[
                "print",
                "printf \"%v\"",
                "and 1",
                "or 0",
                "html",
                "len",
                "not",
                "eq 1",
                "urlquery",
                "index \"abc\"",
            ]));
        }
        p
    }

    /// What a range may iterate over: small integers (so nested loops stay small), nil, and things Go refuses.
    fn range_operand(&mut self) -> String {
        self.pick(&[
            "0",
            "1",
            "2",
            "3",
            "-1",
            "nil",
            "2",
            "3",
            "1",
            "(len .AgentName)",
            "(len .CategoryMappings)",
            "$x",
            "\"a\"",
            "true",
            "1.5",
            ".",
        ])
        .to_owned()
    }

    fn block(&mut self, depth: usize, in_range: bool) -> String {
        (0..1 + self.below(2))
            .map(|_| self.stmt(depth, in_range))
            .collect()
    }

    fn stmt(&mut self, depth: usize, in_range: bool) -> String {
        let choice = if depth == 0 { self.below(4) } else { self.below(10) };
        match choice {
            0 => self.pick(&["a", " ", "\n", "-"]).to_owned(),
            1 | 2 => format!("{{{{ {} }}}}", self.pipeline(depth)),
            3 => format!("{{{{ $x = {} }}}}", self.pipeline(depth)),
            4 => {
                let mut s = format!(
                    "{{{{ if {} }}}}{}",
                    self.pipeline(depth),
                    self.block(depth - 1, in_range)
                );
                if self.below(2) == 0 {
                    s.push_str(&format!(
                        "{{{{ else if {} }}}}{}",
                        self.pipeline(depth),
                        self.block(depth - 1, in_range)
                    ));
                }
                if self.below(2) == 0 {
                    s.push_str(&format!("{{{{ else }}}}{}", self.block(depth - 1, in_range)));
                }
                s + "{{ end }}"
            }
            5 => {
                let mut s = format!(
                    "{{{{ with {} }}}}{}",
                    self.pipeline(depth),
                    self.block(depth - 1, in_range)
                );
                if self.below(2) == 0 {
                    s.push_str(&format!(
                        "{{{{ else with {} }}}}{}",
                        self.pipeline(depth),
                        self.block(depth - 1, in_range)
                    ));
                }
                if self.below(2) == 0 {
                    s.push_str(&format!("{{{{ else }}}}{}", self.block(depth - 1, in_range)));
                }
                s + "{{ end }}"
            }
            6 | 7 => {
                let decl = self.pick(&["", "$i := ", "", "$i := ", "$i, $e := ", "$x = "]);
                let mut s = format!(
                    "{{{{ range {decl}{} }}}}{}",
                    self.range_operand(),
                    self.block(depth - 1, true)
                );
                if self.below(2) == 0 {
                    s.push_str(&format!("{{{{ else }}}}{}", self.block(depth - 1, in_range)));
                }
                s + "{{ end }}"
            }
            _ if in_range => {
                let word = self.pick(&["break", "continue"]);
                format!("{{{{ if {} }}}}{{{{ {word} }}}}{{{{ end }}}}", self.pipeline(0))
            }
            _ => format!("{{{{ {} }}}}", self.call(depth)),
        }
    }
}

/// Thousands of generated templates that combine the control structures and builtins at random, each rendered by
/// konnector and by Go: the corpus above names the cases people think of, this finds the combinations they do not.
/// Every pair must match (same bytes, or both fail), except where konnector refuses a `printf` verb/operand pair it
/// does not implement, which the engine documents as a refusal, never a guess.
#[test]
fn generated_templates_render_as_go_renders_them() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build_go_renderer(dir.path());
    let mut generator = Gen(0x5EED_0FC0_FFEE);
    let templates: Vec<String> = (0..4000)
        .map(|_| {
            let x = generator.term(1).replace("nil", "\"n\"");
            format!("{{{{ $x := {x} }}}}{}", generator.block(3, false))
        })
        .collect();
    let all = inputs();
    let chosen = [&all[0], &all[4]];
    let mut cases = Vec::new();
    for t in &templates {
        for v in chosen {
            cases.push((t.as_str(), v));
        }
    }
    let go = go_render(
        &bin,
        &Value::Array(
            cases
                .iter()
                .map(|(t, v)| json!({"template": t, "values": values_json(v)}))
                .collect(),
        ),
    );
    let (mut go_ok, mut refused, mut wrong) = (0, 0, Vec::new());
    for ((template, v), go) in cases.iter().zip(&go) {
        let ours = render_values(template, v);
        go_ok += usize::from(go.is_ok());
        match (&ours, go) {
            (Ok(a), Ok(b)) if a == b => {}
            (Err(_), Err(_)) => {}
            (Err(e), Ok(_)) if e.to_string().contains("is not supported") => refused += 1,
            _ => wrong.push(format!("{template:?}\n konnector: {ours:?}\n go:        {go:?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} generated cases differ:\n{}",
        wrong.len(),
        cases.len(),
        wrong.iter().take(15).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(
        go_ok * 3 > cases.len(),
        "only {go_ok} of {} rendered in Go",
        cases.len()
    );
    eprintln!(
        "{} generated cases, {go_ok} rendered by Go, {refused} refused by konnector as not supported",
        cases.len()
    );
}

/// Template text assembled from the lexer's and parser's tokens at random (delimiters, trim markers, comments,
/// quotes, keywords, operators): parse errors and their absence must match Go's, and so must the output.
#[test]
fn token_soup_parses_and_renders_as_go_does() {
    let dir = tempfile::tempdir().unwrap();
    let bin = build_go_renderer(dir.path());
    let tokens = [
        "{{",
        "}}",
        "{{- ",
        " -}}",
        "-",
        " ",
        "\n",
        "/*",
        "*/",
        "\"",
        "`",
        "'",
        ".",
        ".ClusterName",
        "$",
        "$x",
        ":=",
        "=",
        "(",
        ")",
        "|",
        ",",
        "1",
        "x",
        "if",
        "else",
        "end",
        "range",
        "with",
        "break",
        "continue",
        "define",
        "template",
        "block",
        "\"T\"",
        "nil",
        "true",
        "print",
        "and",
        "not",
        "\\",
    ];
    let mut generator = Gen(0x70C3_5009);
    let texts: Vec<String> = (0..6000)
        .map(|_| {
            (0..1 + generator.below(10))
                .map(|_| generator.pick(&tokens))
                .collect::<String>()
        })
        .collect();
    let v = inputs().remove(0);
    let go = go_render(
        &bin,
        &Value::Array(
            texts
                .iter()
                .map(|t| json!({"template": t, "values": values_json(&v)}))
                .collect(),
        ),
    );
    let (mut go_ok, mut wrong) = (0, Vec::new());
    for (text, go) in texts.iter().zip(&go) {
        let ours = render_values(text, &v);
        go_ok += usize::from(go.is_ok());
        let same = match (&ours, go) {
            (Ok(a), Ok(b)) => a == b,
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if !same {
            wrong.push(format!("{text:?}\n konnector: {ours:?}\n go:        {go:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} differ:\n{}",
        wrong.len(),
        texts.len(),
        wrong.iter().take(15).cloned().collect::<Vec<_>>().join("\n")
    );
    eprintln!("{} token soups, {go_ok} rendered by Go", texts.len());
}
